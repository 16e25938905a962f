"""atheris fuzz target: fragments.Reassembler on arbitrary fragment sequences.

    python tests/net/fuzz_fragments.py [-max_total_time=60] [-rss_limit_mb=512] [CORPUS_DIR ...]

An input is a sequence of fragments (of up to four datagrams) and clock
steps, decoded by fuzzing.feed_fragment_ops. A failure is any exception
out of the reassembler, byte accounting that is off or over its cap, a
datagram out of it that does not parse, memory still held after
expire(inf), a hang (libFuzzer's -timeout) or memory over -rss_limit_mb.
Seeds (a datagram in order, out of order with a duplicate, one with an
overlap, one left to time out) are written to CORPUS_DIR/seed-* when the
directory is empty. Each crash found becomes a case in test_fragments.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from vmkit.net import fragments, packets  # noqa: F401 -- instrumented for coverage
    from tests.net.fuzzing import feed_fragment_ops, fragment_seeds


def test_one_input(data: bytes) -> None:
    feed_fragment_ops(data)


def write_seeds(corpus: str) -> None:
    os.makedirs(corpus, exist_ok=True)
    if os.listdir(corpus):
        return
    for i, seed in enumerate(fragment_seeds()):
        with open(os.path.join(corpus, f"seed-{i}"), "wb") as f:
            f.write(seed)


def main() -> None:
    for c in (a for a in sys.argv[1:] if not a.startswith("-")):
        write_seeds(c)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
