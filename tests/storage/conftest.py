"""Shared helpers for the disk-image tests: qemu-img as the reference, a model of
the guest-visible disk, and a random workload that drives both."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vmkit.storage import open_image


def need_qemu_img() -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")


@pytest.fixture
def qemu_img():
    need_qemu_img()
    return "qemu-img"


def qemu(*args, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True)
    if check and r.returncode:
        raise AssertionError(f"qemu-img {' '.join(map(str, args))}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def qemu_io(path, *cmds: str, fmt: str = "qcow2") -> None:
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args + [str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and "error" not in r.stdout.lower(), r.stdout + r.stderr


def qemu_check(path) -> tuple[int, str]:
    r = qemu("check", path, check=False)
    return r.returncode, r.stdout + r.stderr


def qemu_raw(path, tmp: Path) -> bytes:
    """The guest-visible content as qemu-img sees it."""
    out = tmp / "qemu-view.raw"
    qemu("convert", "-O", "raw", path, out)
    return out.read_bytes()


def read_all(path, fmt: str = "qcow2") -> bytes:
    with open_image(path, fmt, readonly=True) as img:
        buf = bytearray(img.virtual_size)
        img.read_into(0, buf)
        return bytes(buf)


def assert_same(actual: bytes, expected: bytes, what: str = "") -> None:
    if actual == expected:
        return
    assert len(actual) == len(expected), f"{what}: size {len(actual)} != {len(expected)}"
    first = next(i for i in range(len(actual)) if actual[i] != expected[i])
    raise AssertionError(f"{what}: first difference at byte {first} ({first:#x})")


def random_workload(img, ref: bytearray, rnd: random.Random, ops: int, cluster: int,
                    discards_zero: bool = True, max_len: int | None = None) -> None:
    """Random writes, discards, zero writes and flushes on img, mirrored into ref."""
    size = len(ref)
    max_len = max_len or 3 * cluster + 100
    for _ in range(ops):
        r = rnd.random()
        off = rnd.randrange(0, size - 1)
        n = rnd.randrange(1, min(max_len, size - off) + 1)
        if r < 0.65:
            data = rnd.randbytes(n)
            img.write_from(off, data)
            ref[off:off + n] = data
        elif r < 0.75:
            img.discard(off, n)
            if discards_zero:
                a, b = -(-off // cluster) * cluster, (off + n) // cluster * cluster
                if b > a:
                    ref[a:b] = bytes(b - a)
        elif r < 0.9:
            img.write_zeroes(off, n, may_unmap=rnd.random() < 0.5)
            ref[off:off + n] = bytes(n)
        else:
            img.flush()


def header_field(path, offset: int, fmt: str, value) -> None:
    """Overwrite one big-endian header field in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))
