"""Hostile and damaged qcow2 files (RELIABILITY.md, "Disk images (qcow2)"): every
malformed field refused with its reason, tables pointing into metadata or past
the end of the file turned into I/O errors plus the corrupt bit, bounded time
and memory, and backing-file names that cannot reach anything but plain files."""

from __future__ import annotations

import re
import struct
import time
import tracemalloc
import zlib

import pytest

from vmkit.storage import ImageFormatError, create_image, open_image
from vmkit.storage.check import check_image
from vmkit.storage.qcow2 import Qcow2Image
from vmkit.storage.qcow2_create import create_qcow2
from vmkit.storage.qcow2_header import OFLAG_COMPRESSED, OFLAG_COPIED

from .conftest import header_field, need_qemu_img, qemu_check

CS = 65536


@pytest.fixture
def image(tmp_path):
    """A small valid image with data in guest cluster 0 (so it has an L2 table)."""
    p = tmp_path / "t.qcow2"
    create_qcow2(str(p), 1 << 20)
    with open_image(p, "qcow2") as img:
        img.write_from(0, b"\xab" * CS)
    return p


def bounded_open(path, readonly=True, seconds=2.0, mib=64):
    """Open and read a little, in bounded time and memory; return the error message."""
    tracemalloc.start()
    t = time.monotonic()
    try:
        with Qcow2Image(str(path), readonly=readonly) as img:
            buf = bytearray(4096)
            img.read_into(0, buf)
            img.read_into(img.virtual_size - 4096, buf)
        msg = None
    except ImageFormatError as e:
        msg = str(e)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.monotonic() - t < seconds
    assert peak < mib << 20, f"peak {peak >> 20} MiB"
    return msg


HEADER_CASES = [
    ("magic", 0, "4s", b"QFI\xfc", "bad magic"),
    ("version 1", 4, ">I", 1, "unsupported version 1"),
    ("version 4", 4, ">I", 4, "unsupported version 4"),
    ("cluster_bits 8", 20, ">I", 8, "cluster_bits 8"),
    ("cluster_bits 22", 20, ">I", 22, "cluster_bits 22"),
    ("cluster_bits huge", 20, ">I", 0xFFFFFFFF, "cluster_bits"),
    ("virtual size 1 PiB", 24, ">Q", 1 << 50, "L1 table has 1 entries, too few"),
    ("virtual size 2^63", 24, ">Q", 1 << 63, "too large"),
    ("encryption", 32, ">I", 1, "encrypted"),
    ("l1_size absurd", 36, ">I", 0xFFFFFFFF, "L1 table of .* larger than the limit"),
    ("l1_size too small", 36, ">I", 0, "too few"),
    ("l1 offset unaligned", 40, ">Q", 3 * CS + 8, "not aligned"),
    ("l1 offset past EOF", 40, ">Q", 1 << 40, "past the end of the file"),
    ("l1 offset 0", 40, ">Q", 0, "overlap the header"),
    ("l1 over refcount table", 40, ">Q", CS, "overlap"),
    ("refcount table unaligned", 48, ">Q", CS + 512, "not aligned"),
    ("refcount table past EOF", 48, ">Q", 1 << 50, "past the end"),
    ("refcount table clusters 0", 56, ">I", 0, "refcount_table_clusters is 0"),
    ("refcount table absurd", 56, ">I", 0xFFFFFFFF, "larger than the limit"),
    ("nb_snapshots absurd", 60, ">I", 1 << 20, "nb_snapshots"),
    ("snapshots past EOF", 60, ">I", 3, "snapshot table"),
    ("unknown incompatible bit", 72, ">Q", 1 << 5, "unknown incompatible feature"),
    ("incompatible bit 63", 72, ">Q", 1 << 63, "unknown incompatible feature"),
    ("external data file", 72, ">Q", 1 << 2, "external data file"),
    ("zstd", 72, ">Q", 1 << 3, "zstd"),
    ("extended L2", 72, ">Q", 1 << 4, "extended L2"),
    ("refcount_order 7", 96, ">I", 7, "refcount_order 7"),
    ("header_length 100", 100, ">I", 96, "header_length"),
    ("header_length odd", 100, ">I", 105, "header_length"),
    ("header_length huge", 100, ">I", 1 << 20, "header_length"),
    ("backing offset outside cluster", 8, ">Q", CS - 4, "backing file name"),
    ("compression type", 104, ">B", 1, "compression_type"),
]


@pytest.mark.parametrize("name,offset,fmt,value,message", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_malformed_header_refused(image, name, offset, fmt, value, message):
    if name == "snapshots past EOF":
        header_field(image, 64, ">Q", 1 << 40)
    if name == "backing offset outside cluster":
        header_field(image, 16, ">I", 100)
    header_field(image, offset, fmt, value)
    for readonly in (True, False):
        msg = bounded_open(image, readonly)
        assert msg is not None, f"{name}: opened"
        assert "t.qcow2" in msg
        import re
        assert re.search(message, msg), msg


@pytest.mark.parametrize("length", [0, 50, 71, 100])
def test_truncated_file_refused(tmp_path, image, length):
    p = tmp_path / "short.qcow2"
    p.write_bytes(image.read_bytes()[:length])
    msg = bounded_open(p)
    assert msg and ("smaller than" in msg or "cut off" in msg or "run past" in msg), msg


def test_extension_running_past_the_cluster(image):
    with open(image, "r+b") as f:
        f.seek(112)
        f.write(struct.pack(">II", 0x12345678, CS))
    assert "runs past" in bounded_open(image)


def test_feature_name_table_names_unknown_bits(image):
    with open(image, "r+b") as f:
        f.seek(112)
        ext = struct.pack(">BB46s", 0, 9, b"time travel")
        f.write(struct.pack(">II", 0x6803F857, len(ext)) + ext + struct.pack(">II", 0, 0))
    header_field(image, 72, ">Q", 1 << 9)
    assert "time travel" in bounded_open(image)


def test_tiny_file_claiming_a_petabyte(tmp_path):
    """A 64 KiB file whose header says 1 PiB with a matching L1 size: refused
    because the L1 table cannot be in the file; no 16 MiB allocation."""
    p = tmp_path / "pb.qcow2"
    create_qcow2(str(p), 1 << 20)
    data = bytearray(p.read_bytes()[:CS])
    struct.pack_into(">Q", data, 24, 1 << 50)
    struct.pack_into(">I", data, 36, (1 << 50) // (CS * CS // 8))
    p.write_bytes(data)
    msg = bounded_open(p, mib=4)
    assert "past the end of the file" in msg


def test_real_petabyte_image_opens_in_bounded_time(tmp_path, qemu_img):
    from .conftest import qemu
    p = tmp_path / "pb.qcow2"
    qemu("create", "-f", "qcow2", p, "1P")
    t = time.monotonic()
    with open_image(p, "qcow2") as img:
        assert img.virtual_size == 1 << 50
        img.write_from((1 << 50) - 4096, b"end!" * 1024)
        assert img.block_status(0, 1 << 50) == ((1 << 50) - CS * CS // 8, True)
    assert bounded_open(p, seconds=5, mib=96) is None
    assert check_image(str(p), "qcow2").exit_code == 0
    assert time.monotonic() - t < 15


# ---------------------------------------------------------------- table entries

def _l2_offset(path) -> int:
    with open(path, "rb") as f:
        f.seek(40)
        l1 = struct.unpack(">Q", f.read(8))[0]
        f.seek(l1)
        return struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00


def _set_l2_entry(path, index: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(_l2_offset(path) + 8 * index)
        f.write(struct.pack(">Q", value))


@pytest.mark.parametrize("entry,message", [
    (CS | OFLAG_COPIED, "points into the refcount table"),
    (2 * CS | OFLAG_COPIED, "points into the refcount block"),
    (3 * CS | OFLAG_COPIED, "points into the active L1 table"),
    ((1 << 40) | OFLAG_COPIED, "past the end of the file"),
    (5 * CS + 512 | OFLAG_COPIED, "unaligned"),
    (5 * CS | OFLAG_COPIED | 0x02, "reserved bits"),
    (OFLAG_COMPRESSED | (1 << 40), "past the end of the file"),
])
def test_bad_l2_entry_sets_corrupt_and_read_only(image, entry, message):
    rt_before = image.read_bytes()[CS:3 * CS]
    _set_l2_entry(image, 0, entry)
    img = Qcow2Image(str(image))
    with pytest.raises(ImageFormatError, match=message):
        img.read_into(0, bytearray(512))
    assert img.readonly
    with pytest.raises(ImageFormatError, match="corrupt"):
        img.write_from(0, b"x" * 512)
    with pytest.raises(ImageFormatError, match="corrupt"):
        img.flush()
    img.close()
    assert image.read_bytes()[CS:3 * CS] == rt_before      # no write landed on metadata
    assert image.read_bytes()[72:80] == struct.pack(">Q", 2)  # the corrupt bit
    with pytest.raises(ImageFormatError, match="marked corrupt"):
        open_image(image, "qcow2")
    with open_image(image, "qcow2", readonly=True) as img:   # read-only still works
        buf = bytearray(512)
        img.read_into(CS, buf)
    assert check_image(str(image), "qcow2").exit_code == 2


def test_write_never_lands_on_metadata(image):
    """An L2 entry aimed at the refcount block: the write fails, the block is unchanged."""
    _set_l2_entry(image, 1, 2 * CS | OFLAG_COPIED)
    before = image.read_bytes()[2 * CS:3 * CS]
    with open_image(image, "qcow2") as img:
        with pytest.raises(ImageFormatError, match="refcount block"):
            img.write_from(CS, b"\xee" * CS)
    assert image.read_bytes()[2 * CS:3 * CS] == before


def test_l1_entry_with_reserved_bits(image):
    with open(image, "r+b") as f:
        f.seek(3 * CS)
        e = struct.unpack(">Q", f.read(8))[0]
        f.seek(3 * CS)
        f.write(struct.pack(">Q", e | 0x100))
    with open_image(image, "qcow2") as img:
        with pytest.raises(ImageFormatError, match="L1 entry 0 .* reserved bits"):
            img.read_into(0, bytearray(512))


def test_damaged_refcount_table_refuses_read_write(image):
    with open(image, "r+b") as f:
        f.seek(CS)
        f.write(struct.pack(">Q", 2 * CS | 0x1))
    with pytest.raises(ImageFormatError, match="refcount structure is damaged"):
        open_image(image, "qcow2")
    with open_image(image, "qcow2", readonly=True) as img:
        buf = bytearray(CS)
        img.read_into(0, buf)
        assert buf == b"\xab" * CS


def _compressed_image(path, payload: bytes, csize_sectors: int = 1) -> None:
    """Guest cluster 0 -> a compressed cluster holding payload at cluster 5."""
    create_qcow2(str(path), 1 << 20)
    with open_image(path, "qcow2") as img:
        img.write_from(CS, b"\x01" * 512)      # L2 table at cluster 4, data at 5
    with open(path, "r+b") as f:
        f.seek(5 * CS)
        f.write(payload)
    shift = 62 - (16 - 8)
    _set_l2_entry(path, 0, OFLAG_COMPRESSED | ((csize_sectors - 1) << shift) | (5 * CS))


def test_compressed_cluster_reads(tmp_path):
    p = tmp_path / "c.qcow2"
    c = zlib.compressobj(9, zlib.DEFLATED, -12)
    payload = c.compress(b"hello" * 13107 + b"h") + c.flush()
    _compressed_image(p, payload, -(-len(payload) // 512) + 1)
    with open_image(p, "qcow2", readonly=True) as img:
        buf = bytearray(CS)
        img.read_into(0, buf)
        assert buf == b"hello" * 13107 + b"h"


def test_decompression_bomb_is_bounded(tmp_path):
    """A deflate stream that would expand to 128 MiB yields one cluster, no more."""
    p = tmp_path / "bomb.qcow2"
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = bytes(1 << 20)
    bomb = b"".join(c.compress(mib) for _ in range(128)) + c.flush()
    assert len(bomb) > CS
    # Only what the descriptor covers is read: at most two clusters.
    _compressed_image(p, bomb[:2 * CS], 2 * CS // 512 - 1)
    tracemalloc.start()
    with open_image(p, "qcow2", readonly=True) as img:
        buf = bytearray(CS)
        img.read_into(0, buf)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert buf == bytes(CS)
    assert peak < 8 << 20


def test_garbage_compressed_cluster_is_an_io_error(tmp_path):
    p = tmp_path / "junk.qcow2"
    _compressed_image(p, b"\xff" * 512)
    with open_image(p, "qcow2", readonly=True) as img:
        with pytest.raises(ImageFormatError, match="compressed cluster"):
            img.read_into(0, bytearray(512))


def test_snapshot_table_garbage(image):
    header_field(image, 60, ">I", 2)
    header_field(image, 64, ">Q", 5 * CS)
    with open(image, "r+b") as f:
        f.seek(5 * CS)
        f.write(struct.pack(">QIHHIIQII", 1 << 50, 1, 0, 0, 0, 0, 0, 0, 0))
    msg = bounded_open(image)
    assert "snapshot table" in msg


# ---------------------------------------------------------------- backing files

def _set_backing_name(path, name: str) -> None:
    with open(path, "r+b") as f:
        f.seek(8)
        off = struct.unpack(">Q", f.read(8))[0]
        f.seek(off)
        f.write(name.encode())
        f.seek(16)
        f.write(struct.pack(">I", len(name.encode())))


def _overlay(tmp_path, name: str, backing: str) -> str:
    p = tmp_path / name
    create_qcow2(str(p), 1 << 20, backing=backing, backing_format="qcow2")
    return str(p)


def test_backing_loop_refused(tmp_path):
    create_qcow2(str(tmp_path / "b.qcow2"), 1 << 20)
    a = _overlay(tmp_path, "a.qcow2", "b.qcow2")
    _overlay(tmp_path, "b.qcow2", "a.qcow2")
    t = time.monotonic()
    with pytest.raises(ImageFormatError, match="backing chain loops"):
        open_image(a, "qcow2")
    with pytest.raises(ImageFormatError, match="loops"):
        open_image(a, "qcow2", readonly=True)
    _set_backing_name(a, "a.qcow2")
    with pytest.raises(ImageFormatError, match="loops"):
        open_image(a, "qcow2")
    assert time.monotonic() - t < 2


def test_backing_depth_limit(tmp_path):
    create_qcow2(str(tmp_path / "l0.qcow2"), 1 << 20)
    for i in range(1, 18):
        _overlay(tmp_path, f"l{i}.qcow2", f"l{i - 1}.qcow2") if i < 16 else None
    with open_image(tmp_path / "l15.qcow2", "qcow2"):
        pass                                   # 15 backing files: fine
    # Two more levels, written without opening the chain.
    for i in (16, 17):
        create_qcow2(str(tmp_path / f"l{i}.qcow2"), 1 << 20, backing="l0.qcow2", backing_format="qcow2")
        _set_backing_name(tmp_path / f"l{i}.qcow2", f"l{i - 1}.qcow2")
    with open_image(tmp_path / "l16.qcow2", "qcow2"):
        pass                                   # 16 backing files: the limit
    with pytest.raises(ImageFormatError, match="more than 16 backing files"):
        open_image(tmp_path / "l17.qcow2", "qcow2")


@pytest.mark.parametrize("name", ['json:{"file":{"driver":"file","filename":"b.qcow2"}}',
                                  "nbd:unix:/nonexistent.sock", "file:b.qcow2", "ssh:/etc/passwd"])
def test_protocol_backing_names_refused(tmp_path, name):
    create_qcow2(str(tmp_path / "b.qcow2"), 1 << 20)
    a = _overlay(tmp_path, "a.qcow2", "b.qcow2")
    _set_backing_name(a, name)
    with pytest.raises(ImageFormatError, match="protocol or json"):
        open_image(a, "qcow2", readonly=True)
    with pytest.raises(ImageFormatError, match="protocol or json"):
        create_image(tmp_path / "c.qcow2", "qcow2", 1 << 20, backing=name, backing_format="qcow2")


def test_backing_without_recorded_format_refused(tmp_path):
    create_qcow2(str(tmp_path / "b.qcow2"), 1 << 20)
    a = _overlay(tmp_path, "a.qcow2", "b.qcow2")
    with open(a, "r+b") as f:           # turn the backing-format extension into an unknown one
        f.seek(112)
        assert struct.unpack(">I", f.read(4))[0] == 0xE2792ACA
        f.seek(112)
        f.write(struct.pack(">I", 0x0BADF00D))
    with pytest.raises(ImageFormatError, match="no recorded format.*qemu-img rebase"):
        open_image(a, "qcow2")


def test_backing_names_resolve_against_the_overlay(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    base = tmp_path / "base.raw"
    base.write_bytes(b"B" * (1 << 20))
    create_qcow2(str(tmp_path / "d" / "rel.qcow2"), None, backing="../base.raw", backing_format="raw")
    create_qcow2(str(tmp_path / "d" / "abs.qcow2"), None, backing=str(base), backing_format="raw")
    monkeypatch.chdir("/")
    for name in ("rel.qcow2", "abs.qcow2"):
        with open_image(tmp_path / "d" / name, "qcow2", readonly=True) as img:
            buf = bytearray(4)
            img.read_into(1000, buf)
            assert buf == b"BBBB"
    missing = tmp_path / "gone.qcow2"
    create_qcow2(str(missing), 1 << 20, backing="base.raw", backing_format="raw")
    base.unlink()
    with pytest.raises(ImageFormatError, match="base.raw"):
        open_image(missing, "qcow2")


def test_qemu_agrees_these_are_corrupt(image):
    need_qemu_img()
    _set_l2_entry(image, 0, CS | OFLAG_COPIED)
    assert qemu_check(image)[0] == 2
    assert check_image(str(image), "qcow2").exit_code == 2
