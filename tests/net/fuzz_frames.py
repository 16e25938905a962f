"""atheris fuzz target: UserNet.from_guest on arbitrary frames.

    python tests/net/fuzz_frames.py [-max_total_time=60] [-rss_limit_mb=512] [CORPUS_DIR ...]

An input is one flags byte and then frames, each as a 2-byte big-endian
length and that many bytes. Flags bit 0 repairs the IPv4/ICMP/TCP checksums
of every frame (and zeroes UDP's) so the fuzzer gets past them.

A failure is any exception out of from_guest or poll, more than one drop
counted for one frame, a malformed frame sent to the guest (fuzzing.Harness),
a hang (libFuzzer's -timeout) or memory over -rss_limit_mb (RELIABILITY.md,
"Continuous checks"). The stack relays only to a sink socket of the harness
on 127.0.0.1 and resolves names with a fake: nothing leaves the machine.
Seeds (valid ARP, ICMP, DHCP, DNS, UDP and TCP frames, among them a whole
TCP connection to the harness's echo sink) are written to
CORPUS_DIR/seed-* when the directory is empty. Each crash found becomes a
case in test_stack.py or test_packets.py.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from vmkit.net import dhcp, dns, packets, stack, tcp  # noqa: F401 -- instrumented for coverage
    from tests.net.fuzzing import Harness, fix_checksums, seed_frames

_HARNESS = Harness(max_udp_flows=16)


def split_frames(data: bytes) -> tuple[int, list[bytes]]:
    if not data:
        return 0, []
    flags, frames, i = data[0], [], 1
    while i + 2 <= len(data) and len(frames) < 8:
        (n,) = struct.unpack_from("!H", data, i)
        frames.append(data[i + 2:i + 2 + n])
        i += 2 + n
    return flags, frames


def test_one_input(data: bytes) -> None:
    flags, frames = split_frames(data)
    for frame in frames:
        _HARNESS.feed(fix_checksums(frame) if flags & 1 else frame)


def write_seeds(corpus: str) -> None:
    os.makedirs(corpus, exist_ok=True)
    if os.listdir(corpus):
        return
    for i, frame in enumerate(seed_frames(_HARNESS.sink_port)):
        with open(os.path.join(corpus, f"seed-{i}"), "wb") as f:
            f.write(b"\x01" + struct.pack("!H", len(frame)) + frame)


def main() -> None:
    for c in (a for a in sys.argv[1:] if not a.startswith("-")):
        write_seeds(c)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
