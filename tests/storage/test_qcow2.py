"""qcow2 behaviour one feature at a time (vmkit/storage/qcow2.py and helpers)."""

from __future__ import annotations

import errno
import os
import struct

import numpy as np
import pytest

from vmkit.storage import ImageFormatError, create_image, open_image
from vmkit.storage.check import check_image
from vmkit.storage.qcow2 import Qcow2Image
from vmkit.storage.qcow2_create import create_qcow2
from vmkit.storage.qcow2_header import OFLAG_ZERO

from .conftest import qemu_check, read_all

CS = 65536
MiB = 1 << 20


def incompatible(path) -> int:
    with open(path, "rb") as f:
        f.seek(72)
        return struct.unpack(">Q", f.read(8))[0]


def test_read_write_across_l2_tables_into_numpy(tmp_path):
    p = tmp_path / "x.qcow2"
    create_qcow2(str(p), 8 * MiB, cluster_size=4096)     # an L2 table maps 2 MiB
    ram = np.arange(3 * MiB, dtype=np.uint32).view(np.uint8)[:3 * MiB]
    with open_image(p, "qcow2") as img:
        img.write_from(MiB + 17, memoryview(ram)[:3 * MiB - 17])
        out = np.zeros(3 * MiB, dtype=np.uint8)
        img.read_into(MiB + 17, memoryview(out)[:3 * MiB - 17])
        assert (out[:3 * MiB - 17] == ram[:3 * MiB - 17]).all()
        first = bytearray(MiB + 17)
        img.read_into(0, first)
        assert first == bytes(MiB + 17)


def test_lazy_refcounts_dirty_bit_and_rebuild(tmp_path):
    p = tmp_path / "lazy.qcow2"
    create_qcow2(str(p), 16 * MiB, lazy_refcounts=True)
    img = open_image(p, "qcow2")
    assert incompatible(p) == 0                 # not dirty until the first allocation
    img.write_from(0, b"a" * 5000)
    assert incompatible(p) & 1                  # dirty before any cluster was handed out
    img.write_from(5 * MiB, b"b" * 5000)
    img.flush()
    # A crash now: refcounts on disk lag behind the tables.
    img.file.close()
    img.closed = True
    assert incompatible(p) & 1
    assert check_image(str(p), "qcow2").exit_code == 2   # stale refcounts, as qemu-img says too
    with open_image(p, "qcow2") as img:         # opening read-write rebuilds them
        assert incompatible(p) & 1 == 0
        buf = bytearray(5000)
        img.read_into(5 * MiB, buf)
        assert buf == b"b" * 5000
    assert check_image(str(p), "qcow2").exit_code == 0
    assert incompatible(p) == 0


def test_clean_close_clears_dirty_bit(tmp_path):
    p = tmp_path / "lazy.qcow2"
    create_qcow2(str(p), 16 * MiB, lazy_refcounts=True)
    with open_image(p, "qcow2") as img:
        img.write_from(0, b"a" * 5000)
    assert incompatible(p) == 0
    assert check_image(str(p), "qcow2").exit_code == 0


def test_zero_writes_and_discards(tmp_path):
    p = tmp_path / "z.qcow2"
    create_qcow2(str(p), 8 * MiB)
    with Qcow2Image(str(p)) as img:
        img.write_from(0, os.urandom(4 * MiB))
        img.flush()
        blocks = p.stat().st_blocks
        img.write_zeroes(0, MiB, may_unmap=False)          # keeps the clusters, zero flag set
        l2 = img.l2cache.get(img.l1[0] & 0x00FFFFFFFFFFFE00)
        assert all(e & OFLAG_ZERO and e & 0x00FFFFFFFFFFFE00 for e in l2[:16])
        img.write_zeroes(MiB, MiB, may_unmap=True)          # frees them
        img.discard(2 * MiB + 100, MiB)                     # whole clusters inside the range
        img.write_from(10, b"after")                        # in a zero-flagged cluster
        img.flush()
        img.flush()
        assert p.stat().st_blocks < blocks
        buf = bytearray(4 * MiB)
        img.read_into(0, buf)
        assert buf[:10] == bytes(10) and buf[10:15] == b"after" and buf[15:2 * MiB] == bytes(2 * MiB - 15)
        assert buf[2 * MiB + CS:3 * MiB] == bytes(MiB - CS)
        assert img.block_status(MiB, MiB) == (MiB, True)
        assert img.block_status(0, MiB) == (CS, False)
    assert check_image(str(p), "qcow2").exit_code == 0


def test_zero_flag_hides_the_backing_file(tmp_path):
    base = tmp_path / "base.raw"
    base.write_bytes(b"B" * (4 * MiB))
    ov = tmp_path / "ov.qcow2"
    create_qcow2(str(ov), None, backing="base.raw", backing_format="raw")
    with open_image(ov, "qcow2") as img:
        assert img.block_status(0, 4 * MiB) == (4 * MiB, False)
        img.discard(MiB, MiB)
        img.write_zeroes(3 * MiB, 100)
        buf = bytearray(4 * MiB)
        img.read_into(0, buf)
    assert buf[:MiB] == b"B" * MiB and buf[MiB:2 * MiB] == bytes(MiB)
    assert buf[3 * MiB:3 * MiB + 100] == bytes(100) and buf[3 * MiB + 100:] == b"B" * (MiB - 100)


def test_version_2_images(tmp_path):
    p = tmp_path / "v2.qcow2"
    create_qcow2(str(p), 4 * MiB, compat="0.10")
    with open_image(p, "qcow2") as img:
        assert img.h.version == 2
        img.write_from(CS - 10, b"x" * 20)
        img.write_zeroes(0, 2 * CS, may_unmap=True)     # no zero flag in v2: real zeros / unmap
        img.snapshot_create("v2snap")
    assert read_all(p) == bytes(4 * MiB)
    assert check_image(str(p), "qcow2").exit_code == 0


def test_cache_sizes():
    from vmkit.storage.qcow2 import L2_CACHE_BYTES, REFCOUNT_CACHE_BYTES
    assert L2_CACHE_BYTES <= 8 * MiB and REFCOUNT_CACHE_BYTES <= 8 * MiB


def test_caches_stay_bounded(tmp_path):
    p = tmp_path / "big.qcow2"
    create_qcow2(str(p), 2 << 30, cluster_size=4096)    # 1024 L2 tables of 4 KiB
    with Qcow2Image(str(p), cache="unsafe") as img:
        img.l2cache.capacity = 256                      # 1 MiB: evictions sooner
        for i in range(1024):
            img.write_from(i * 2 * MiB, b"x")
        assert len(img.l2cache._tables) <= img.l2cache.capacity
        assert len(img.refs.blocks._tables) <= img.refs.blocks.capacity
        buf = bytearray(1)
        for i in range(0, 1024, 37):
            img.read_into(i * 2 * MiB, buf)
            assert buf == b"x"
    assert check_image(str(p), "qcow2").exit_code == 0


def test_io_error_on_data_write_leaks_nothing(tmp_path, monkeypatch):
    p = tmp_path / "e.qcow2"
    create_qcow2(str(p), 4 * MiB)
    with open_image(p, "qcow2") as img:
        img.write_from(0, b"ok" * 100)
        real = os.pwritev

        def failing(fd, bufs, off):
            if off >= 5 * CS:     # data clusters after the first
                raise OSError(errno.EIO, "Input/output error")
            return real(fd, bufs, off)
        monkeypatch.setattr(os, "pwritev", failing)
        with pytest.raises(ImageFormatError, match="Input/output error"):
            img.write_from(MiB, b"lost" * 100)
        monkeypatch.setattr(os, "pwritev", real)
        buf = bytearray(400)
        img.read_into(MiB, buf)
        assert buf == bytes(400)          # the failed write is not visible as a success
    assert check_image(str(p), "qcow2").exit_code == 0


def test_failed_fsync_fails_every_later_flush(tmp_path, monkeypatch):
    p = tmp_path / "f.qcow2"
    create_qcow2(str(p), 4 * MiB)
    img = open_image(p, "qcow2")
    img.write_from(0, b"x" * 512)
    real = os.fdatasync

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "fdatasync", eio)
    with pytest.raises(ImageFormatError):
        img.flush()
    monkeypatch.setattr(os, "fdatasync", real)
    for _ in range(2):
        with pytest.raises(ImageFormatError):
            img.flush()
    with pytest.raises(ImageFormatError):
        img.write_from(0, b"y" * 512)
    img.close()


def test_backing_files_are_locked_shared(tmp_path):
    base = tmp_path / "base.qcow2"
    create_qcow2(str(base), 4 * MiB)
    ov = tmp_path / "ov.qcow2"
    create_qcow2(str(ov), None, backing="base.qcow2", backing_format="qcow2")
    with open_image(ov, "qcow2"):
        with pytest.raises(ImageFormatError, match="in use"):
            open_image(base, "qcow2")                   # nobody writes under an overlay
        with pytest.raises(ImageFormatError, match="in use"):
            open_image(ov, "qcow2")
        open_image(base, "qcow2", readonly=True).close()
    open_image(base, "qcow2").close()


def test_snapshot_refcount_overflow_changes_nothing(tmp_path):
    p = tmp_path / "o.qcow2"
    create_qcow2(str(p), MiB, refcount_bits=2)          # counts up to 3
    with Qcow2Image(str(p)) as img:
        img.write_from(0, b"d" * 1000)
        img.snapshot_create("a")
        img.snapshot_create("b")
        with pytest.raises(ImageFormatError, match="shared too often"):
            img.snapshot_create("c")
        assert [s.name for s in img.snapshots] == ["a", "b"]
    assert check_image(str(p), "qcow2").exit_code == 0


def test_snapshot_names(tmp_path):
    p = tmp_path / "n.qcow2"
    create_image(p, "qcow2", MiB)
    with Qcow2Image(str(p)) as img:
        img.snapshot_create("x")
        with pytest.raises(ImageFormatError, match="already exists"):
            img.snapshot_create("x")
        with pytest.raises(ImageFormatError, match="no snapshot"):
            img.snapshot_apply("y")
        img.snapshot_delete("x")
        assert img.snapshots == []
    with open(p, "rb") as f:
        f.seek(60)
        assert struct.unpack(">IQ", f.read(12)) == (0, 0)


def test_qemu_reads_what_vmkit_discarded(tmp_path, qemu_img):
    p = tmp_path / "q.qcow2"
    create_qcow2(str(p), 4 * MiB)
    with open_image(p, "qcow2") as img:
        img.write_from(0, b"\xcc" * (4 * MiB))
        img.discard(0, 2 * MiB)
    assert qemu_check(p)[0] == 0
    from .conftest import qemu_raw
    assert qemu_raw(p, tmp_path) == bytes(2 * MiB) + b"\xcc" * (2 * MiB)
