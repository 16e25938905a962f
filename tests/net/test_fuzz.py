"""Fuzzing UserNet.from_guest: a seeded random mutation run (always) and
the atheris target fuzz_frames.py for a short while (when atheris imports).

A failure is an exception out of from_guest or poll, more than one drop
counted for a frame, or a malformed frame sent to the guest.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.net.fuzzing import Harness, mutate, run_atheris, seed_frames

TARGET = Path(__file__).with_name("fuzz_frames.py")


@pytest.mark.parametrize("seed", range(4))
def test_random_mutated_frames(seed):
    rng = random.Random(seed)
    h = Harness(max_udp_flows=8)
    try:
        seeds = seed_frames(h.sink_port)
        for s in seeds:
            h.feed(s)
        assert not h.net.counters, dict(h.net.counters)      # every seed is handled, none dropped
        for _ in range(5000):
            r = rng.random()
            if r < 0.1:
                frame = rng.randbytes(rng.randrange(1600))
            else:
                frame = mutate(rng, rng.choice(seeds), seeds)
            h.feed(frame)
        assert h.net.counters["malformed"] > 0
        assert h.net.udp_flow_count <= 8
    finally:
        h.close()


@pytest.mark.slow
def test_atheris_frames(tmp_path):
    pytest.importorskip("atheris")
    run_atheris(TARGET, tmp_path, int(os.environ.get("VMKIT_FUZZ_SECONDS", "10")))
