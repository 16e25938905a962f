"""Writer process for the crash tests: random allocating writes with periodic
flushes, until killed.

    python crash_writer.py IMAGE JOURNAL SEED LIFE FLUSH_EVERY MODE

MODE: "plain" (writes), "mixed" (also zero writes and discards), "snap"
(also internal snapshots created and deleted).

After opening the image it appends "ready" to JOURNAL; after every flush
that returned it appends the number of operations done, so the test knows
which writes the guest saw as durable. The operations are a pure function of
(seed, life, index): the test regenerates them with `operation()`.
"""

from __future__ import annotations

import os
import random
import sys


def operation(seed: int, life: int, index: int, size: int, cluster: int, mode: str):
    """("write", offset, bytes) | ("zero", offset, length) | ("discard", offset, length)
    | ("snapshot", name, 0) | ("delete snapshot", "", 0): snapshots leave the disk content alone."""
    rnd = random.Random(f"{seed}-{life}-{index}")
    off = rnd.randrange(0, size - 1)
    n = rnd.randrange(1, min(3 * cluster + 1000, size - off) + 1)
    r = rnd.random()
    if mode == "mixed" and r < 0.1:
        return ("zero", off, n)
    if mode == "mixed" and r < 0.2:
        return ("discard", off, n)
    if mode == "snap" and r < 0.04:
        return ("snapshot", f"s{life}-{index}", 0)
    if mode == "snap" and r < 0.07:
        return ("delete snapshot", "", 0)
    return ("write", off, rnd.randbytes(n))


def perform(img, op, index: int) -> None:
    kind, a, b = op
    if kind == "write":
        img.write_from(a, b)
    elif kind == "zero":
        img.write_zeroes(a, b, may_unmap=index % 2 == 0)
    elif kind == "discard":
        img.discard(a, b)
    elif kind == "snapshot":
        img.snapshot_create(a)
    elif img.snapshots:
        img.snapshot_delete(img.snapshots[0].id)


def main() -> None:
    image, journal, seed, life, flush_every, mode = sys.argv[1:7]
    seed, life, flush_every = int(seed), int(life), int(flush_every)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from vmkit.storage import open_image
    img = open_image(image, "qcow2", cache="writeback")
    cluster = img.cs
    j = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(j, b"ready\n")
    i = 0
    while True:
        perform(img, operation(seed, life, i, img.virtual_size, cluster, mode), i)
        i += 1
        if i % flush_every == 0:
            img.flush()
            os.write(j, f"{i}\n".encode())


if __name__ == "__main__":
    main()
