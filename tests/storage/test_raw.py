"""Raw images and the shared BlockImage request checks (vmkit/storage/raw.py, image.py)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from vmkit.storage import ImageFormatError, create_image, open_image
from vmkit.storage.image import parse_size


def test_create_is_sparse_and_reads_zeros(tmp_path):
    p = tmp_path / "d.raw"
    create_image(p, "raw", 1 << 30)
    assert p.stat().st_size == 1 << 30
    assert p.stat().st_blocks == 0
    with open_image(p, "raw", readonly=True) as img:
        assert img.virtual_size == 1 << 30
        buf = bytearray(b"\xff" * 8192)
        img.read_into((1 << 30) - 8192, buf)
        assert buf == bytes(8192)


def test_write_read_into_numpy_ram_view(tmp_path):
    """Guest RAM is a numpy uint8 array; reads land in a slice of it without copies."""
    p = tmp_path / "d.raw"
    create_image(p, "raw", 1 << 20)
    ram = np.zeros(1 << 16, dtype=np.uint8)
    ram[100:612] = 7
    with open_image(p, "raw") as img:
        img.write_from(4096, memoryview(ram)[100:612])
        img.flush()
        img.read_into(0, memoryview(ram)[1000:1000 + 8192])
    assert (ram[1000:1000 + 4096] == 0).all()
    assert (ram[1000 + 4096:1000 + 4096 + 512] == 7).all()


def test_requests_past_capacity_are_refused(tmp_path):
    p = tmp_path / "d.raw"
    create_image(p, "raw", 4096)
    with open_image(p, "raw") as img:
        for off, n in ((4096, 1), (0, 4097), (-512, 512), (4095, 2)):
            with pytest.raises(ImageFormatError, match="past the end|bad offset"):
                img.write_from(off, bytes(max(n, 0)))
            with pytest.raises(ImageFormatError):
                img.read_into(off, bytearray(max(n, 0)))
        with pytest.raises(ImageFormatError):
            img.discard(4000, 200)
        img.read_into(4096, bytearray(0))    # empty at the end is fine
    assert p.stat().st_size == 4096          # nothing outside the image touched


def test_readonly_refuses_writes_and_keeps_data(tmp_path):
    p = tmp_path / "d.raw"
    p.write_bytes(b"a" * 4096)
    with open_image(p, "raw", readonly=True) as img:
        with pytest.raises(ImageFormatError, match="read-only"):
            img.write_from(0, b"b" * 512)
        with pytest.raises(ImageFormatError, match="read-only"):
            img.write_zeroes(0, 512)
    assert p.read_bytes() == b"a" * 4096


def test_discard_punches_holes_and_zeroes(tmp_path):
    p = tmp_path / "d.raw"
    create_image(p, "raw", 8 << 20)
    with open_image(p, "raw") as img:
        img.write_from(0, os.urandom(8 << 20))
        img.flush()
        before = p.stat().st_blocks
        img.discard(1 << 20, 4 << 20)
        img.write_zeroes(6 << 20, 1000, may_unmap=True)
        img.flush()
        assert p.stat().st_blocks < before
        buf = bytearray(4 << 20)
        img.read_into(1 << 20, buf)
        assert buf == bytes(4 << 20)
        small = bytearray(1000)
        img.read_into(6 << 20, small)
        assert small == bytes(1000)
        assert img.block_status(1 << 20, 4 << 20) == (4 << 20, True)


def test_raw_with_a_qcow2_header_stays_raw(tmp_path):
    """A guest that writes a qcow2 header (with a backing file name) into its raw
    disk must not make the host open another file: the format comes from the caller."""
    from vmkit.storage.qcow2_create import create_qcow2
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"host data")
    evil = tmp_path / "evil.qcow2"
    create_qcow2(str(evil), 1 << 20, backing=str(secret), backing_format="raw")
    disk = tmp_path / "guest.raw"
    create_image(disk, "raw", 1 << 20)
    with open_image(disk, "raw") as img:
        img.write_from(0, evil.read_bytes()[:65536])
    with open_image(disk, "raw") as img:
        assert img.format == "raw"
        assert img.virtual_size == 1 << 20
        buf = bytearray(4)
        img.read_into(0, buf)
        assert buf == b"QFI\xfb"
        assert not hasattr(img, "backing")


def test_failed_fsync_fails_every_later_flush(tmp_path, monkeypatch):
    p = tmp_path / "d.raw"
    create_image(p, "raw", 1 << 20)
    img = open_image(p, "raw")
    img.write_from(0, b"x" * 512)
    real = os.fdatasync

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "fdatasync", eio)
    with pytest.raises(ImageFormatError, match="Input/output error"):
        img.flush()
    monkeypatch.setattr(os, "fdatasync", real)
    with pytest.raises(ImageFormatError, match="earlier flush"):
        img.flush()
    with pytest.raises(ImageFormatError):
        img.flush()
    img.file.close()
    img.closed = True


def test_enospc_on_write_is_an_error_not_a_success(tmp_path, monkeypatch):
    p = tmp_path / "d.raw"
    create_image(p, "raw", 1 << 20)
    with open_image(p, "raw") as img:
        def full(fd, bufs, off):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(os, "pwritev", full)
        with pytest.raises(ImageFormatError, match="disk is full"):
            img.write_from(0, b"x" * 512)
        monkeypatch.undo()


def test_cache_modes(tmp_path, monkeypatch):
    p = tmp_path / "d.raw"
    create_image(p, "raw", 1 << 20)
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
    with open_image(p, "raw", cache="unsafe") as img:
        img.write_from(0, b"x" * 512)
        img.flush()
    assert calls == []
    with open_image(p, "raw", cache="none") as img:
        img.write_from(0, b"y" * 512)         # write-through: synced before returning
        assert calls
    with pytest.raises(ImageFormatError, match="cache mode"):
        open_image(p, "raw", cache="directsync")
    with pytest.raises(ImageFormatError, match="image format"):
        open_image(p, "vmdk")


def test_second_writer_is_refused(tmp_path):
    p = tmp_path / "d.raw"
    create_image(p, "raw", 1 << 20)
    with open_image(p, "raw"):
        with pytest.raises(ImageFormatError, match="in use"):
            open_image(p, "raw")
        with open_image(p, "raw", readonly=True):
            pass


def test_parse_size():
    assert parse_size("4096") == 4096
    assert parse_size("10G") == 10 << 30
    assert parse_size("1.5M") == 3 << 19
    assert parse_size("2t") == 2 << 40
    assert parse_size("64KiB") == 64 << 10
    for bad in ("", "G", "-1G", "1X", "1.2.3"):
        with pytest.raises(ImageFormatError):
            parse_size(bad)
