"""vmkit/devices/virtio/block.py: virtio-blk (virtio 1.2, 5.2) on a raw temp
file and on fakes that fail, driven like Linux's virtio_blk."""

import errno
import os
import struct

import pytest
from virtio_harness import Driver, RawFile

from vmkit.devices.virtio.block import (
    F_BLK_SIZE,
    F_DISCARD,
    F_FLUSH,
    F_RO,
    F_SEG_MAX,
    F_SIZE_MAX,
    F_WRITE_ZEROES,
    MAX_DISCARD_SECTORS,
    SEG_MAX,
    SIZE_MAX,
    Req,
    VirtioBlock,
)
from vmkit.devices.virtio.device import STATUS_DEVICE_NEEDS_RESET

OK, IOERR, UNSUPP = 0, 1, 2
SECTORS = 64
SIZE = SECTORS * 512


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(SIZE))
    return path


def blk(image, **kw):
    drv = Driver(VirtioBlock(image, **kw), ram_size=2 << 20)
    drv.start()
    return drv


def request_buffers(drv, rtype, sector=0, out=b"", in_len=0, split_header=False):
    """The buffers of one request in guest RAM: (descriptor list, data address or None, status address)."""
    hdr = drv.ram.buf(struct.pack("<IIQ", rtype, 0, sector))
    bufs = [(hdr, 8, False), (hdr + 8, 8, False)] if split_header else [(hdr, 16, False)]
    if out:
        bufs.append((drv.ram.buf(out), len(out), False))
    data = drv.ram.buf(size=in_len) if in_len else None
    if in_len:
        bufs.append((data, in_len, True))
    status = drv.ram.buf(b"\xEE")
    bufs.append((status, 1, True))
    return bufs, data, status


def request(drv, rtype, sector=0, out=b"", in_len=0, split_header=False, indirect=False):
    """Post one request; returns (status, data read, used len)."""
    q = drv.queues[0]
    bufs, data, status = request_buffers(drv, rtype, sector, out, in_len, split_header)
    (q.add_indirect if indirect else q.add)(bufs)
    drv.kick()
    used = q.collect()
    assert len(used) == 1, used
    return drv.ram.read(status, 1)[0], drv.ram.read(data, in_len) if in_len else b"", used[0][1]


def segment(sector, count, flags=0):
    return struct.pack("<QII", sector, count, flags)


# --- configuration ------------------------------------------------------------------------------------
def test_features_and_config(disk):
    drv = blk(RawFile(disk))
    feats = drv.device_features()
    for bit in (F_SIZE_MAX, F_SEG_MAX, F_BLK_SIZE, F_FLUSH, F_DISCARD, F_WRITE_ZEROES):
        assert feats & bit
    assert not feats & F_RO
    assert drv.config(0, 8) == SECTORS
    assert drv.config(0, 4) == SECTORS and drv.config(4, 4) == 0      # Linux reads u64 as two u32
    assert drv.config(8, 4) == SIZE_MAX and drv.config(12, 4) == SEG_MAX
    assert drv.config(20, 4) == 512
    assert drv.config(36, 4) == MAX_DISCARD_SECTORS and drv.config(40, 4) == 1 and drv.config(44, 4) == 1
    assert drv.config(48, 4) == MAX_DISCARD_SECTORS and drv.config(52, 4) == 1
    assert drv.config(56, 1) == 1
    assert drv.config(18, 1) == 0 and drv.config(16, 2) == 0          # geometry not offered


def test_capacity_rounds_down(tmp_path):
    path = tmp_path / "odd.img"
    path.write_bytes(bytes(1000))
    drv = blk(RawFile(path))
    assert drv.config(0, 8) == 1
    assert request(drv, Req.IN, 1, in_len=512)[0] == IOERR


def test_serial_too_long(disk):
    with pytest.raises(ValueError):
        VirtioBlock(RawFile(disk), serial="x" * 21)


# --- data path -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("indirect", [False, True])
@pytest.mark.parametrize("split", [False, True])
def test_read(disk, indirect, split):
    drv = blk(RawFile(disk))
    status, data, used = request(drv, Req.IN, 3, in_len=2048, split_header=split, indirect=indirect)
    assert status == OK and used == 2049
    assert data == disk.read_bytes()[3 * 512:3 * 512 + 2048]


def test_read_scattered_over_many_buffers(disk):
    drv = blk(RawFile(disk))
    q = drv.queues[0]
    hdr = drv.ram.buf(struct.pack("<IIQ", Req.IN, 0, 1))
    sizes = [1, 511, 100, 412, 512]            # 1536 bytes, cut anyhow (2.6.4)
    parts = [drv.ram.buf(size=n) for n in sizes]
    status = drv.ram.buf(size=1)
    q.add([(hdr, 16, False)] + [(p, n, True) for p, n in zip(parts, sizes)] + [(status, 1, True)])
    drv.kick()
    assert q.collect() == [(0, 1537)]
    assert b"".join(drv.ram.read(p, n) for p, n in zip(parts, sizes)) == disk.read_bytes()[512:2048]
    assert drv.ram.read(status, 1) == b"\0"


def test_status_byte_shares_a_buffer_with_data(disk):
    drv = blk(RawFile(disk))
    q = drv.queues[0]
    hdr = drv.ram.buf(struct.pack("<IIQ", Req.IN, 0, 0))
    buf = drv.ram.buf(size=513)
    q.add([(hdr, 16, False), (buf, 513, True)])
    drv.kick()
    assert q.collect() == [(0, 513)]
    assert drv.ram.read(buf, 512) == disk.read_bytes()[:512] and drv.ram.read(buf + 512, 1) == b"\0"


def test_write_then_read_back(disk):
    drv = blk(RawFile(disk))
    payload = os.urandom(1024)
    status, _, used = request(drv, Req.OUT, 10, out=payload)
    assert status == OK and used == 1
    assert disk.read_bytes()[10 * 512:11 * 512 + 512] == payload
    assert request(drv, Req.IN, 10, in_len=1024)[1] == payload


def test_write_last_sector_and_zero_length(disk):
    drv = blk(RawFile(disk))
    assert request(drv, Req.OUT, SECTORS - 1, out=b"z" * 512)[0] == OK
    assert disk.read_bytes()[-512:] == b"z" * 512
    assert request(drv, Req.IN, SECTORS, in_len=0)[0] == OK      # nothing, at the very end


def test_flush(disk):
    image = RawFile(disk)
    drv = blk(image)
    assert request(drv, Req.FLUSH) == (OK, b"", 1)
    assert image.flushes == 1


def test_get_id(disk):
    drv = blk(RawFile(disk), serial="vmkit-disk-0")
    status, data, used = request(drv, Req.GET_ID, in_len=20)
    assert status == OK and data == b"vmkit-disk-0".ljust(20, b"\0") and used == 21
    drv2 = blk(RawFile(disk), serial=b"A" * 20)
    assert request(drv2, Req.GET_ID, in_len=20)[1] == b"A" * 20     # no NUL when it is full
    assert request(drv2, Req.GET_ID, in_len=8)[1] == b"A" * 8


def test_discard_and_write_zeroes_fallbacks_on_raw_file(disk):
    drv = blk(RawFile(disk))
    before = disk.read_bytes()
    assert request(drv, Req.DISCARD, out=segment(4, 2))[0] == OK     # a hint: may do nothing
    assert disk.read_bytes() == before
    assert request(drv, Req.WRITE_ZEROES, out=segment(4, 2))[0] == OK
    after = disk.read_bytes()
    assert after[4 * 512:6 * 512] == bytes(1024)
    assert after[:4 * 512] == before[:4 * 512] and after[6 * 512:] == before[6 * 512:]
    assert request(drv, Req.WRITE_ZEROES, out=segment(8, 1, 1))[0] == OK   # unmap allowed


class FakeImage:
    """An in-memory image with every method, each of which can fail."""

    def __init__(self, size=SIZE, readonly=False):
        self.data = bytearray(size)
        self.virtual_size = size
        self.readonly = readonly
        self.fail = {}            # method name -> exception to raise
        self.calls = []

    def _enter(self, name, *args):
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]

    def read_into(self, offset, buf):
        self._enter("read_into", offset, len(buf))
        buf[:] = self.data[offset:offset + len(buf)]

    def write_from(self, offset, buf):
        self._enter("write_from", offset, len(buf))
        self.data[offset:offset + len(buf)] = buf

    def flush(self):
        self._enter("flush")

    def discard(self, offset, length):
        self._enter("discard", offset, length)

    def write_zeroes(self, offset, length, may_unmap):
        self._enter("write_zeroes", offset, length, may_unmap)
        self.data[offset:offset + length] = bytes(length)


def test_discard_and_write_zeroes_reach_the_image():
    image = FakeImage()
    drv = blk(image)
    assert request(drv, Req.DISCARD, out=segment(2, 3))[0] == OK
    assert request(drv, Req.WRITE_ZEROES, out=segment(5, 1, 1))[0] == OK
    assert ("discard", 1024, 1536) in image.calls
    assert ("write_zeroes", 2560, 512, True) in image.calls


@pytest.mark.parametrize("rtype, out, expect", [
    (Req.DISCARD, segment(0, 1, 1), UNSUPP),                 # unmap flag on a discard
    (Req.WRITE_ZEROES, segment(0, 1, 2), UNSUPP),            # unknown flag
    (Req.DISCARD, segment(0, 1) * 2, UNSUPP),                # more segments than max_discard_seg
    (Req.DISCARD, segment(SECTORS - 1, 2), IOERR),           # past the end
    (Req.WRITE_ZEROES, segment(1 << 62, 1), IOERR),
    (Req.DISCARD, segment(0, MAX_DISCARD_SECTORS + 1), IOERR),
    (Req.DISCARD, b"\0" * 15, IOERR),                        # not a whole segment
    (Req.DISCARD, b"", IOERR),
])
def test_discard_write_zeroes_errors(rtype, out, expect):
    image = FakeImage()
    drv = blk(image)
    if out:
        assert request(drv, rtype, out=out)[0] == expect
    else:
        assert request(drv, rtype)[0] == expect
    assert not [c for c in image.calls if c[0] in ("discard", "write_zeroes", "write_from")]


# --- requests that must fail without touching anything -------------------------------------------------
@pytest.mark.parametrize("sector, length", [
    (SECTORS, 512), (SECTORS - 1, 1024), (1 << 63, 512), ((1 << 64) - 1, 512), (0, SIZE + 512),
])
def test_out_of_range(disk, sector, length):
    drv = blk(RawFile(disk))
    before = disk.read_bytes()
    status, data, used = request(drv, Req.IN, sector, in_len=length)
    assert status == IOERR and data == bytes(length) and used == 1
    assert request(drv, Req.OUT, sector, out=b"q" * length)[0] == IOERR
    assert disk.read_bytes() == before


@pytest.mark.parametrize("length", [1, 511, 513, 1000])
def test_length_not_a_multiple_of_512(disk, length):
    drv = blk(RawFile(disk))
    before = disk.read_bytes()
    status, data, _ = request(drv, Req.IN, 0, in_len=length)
    assert status == IOERR and data == bytes(length)
    assert request(drv, Req.OUT, 0, out=b"q" * length)[0] == IOERR
    assert disk.read_bytes() == before


def test_read_only(disk):
    image = RawFile(disk, readonly=True)
    drv = blk(image)
    assert drv.device_features() & F_RO
    before = disk.read_bytes()
    assert request(drv, Req.OUT, 0, out=b"w" * 512)[0] == IOERR
    assert request(drv, Req.WRITE_ZEROES, out=segment(0, 1))[0] == IOERR
    assert request(drv, Req.DISCARD, out=segment(0, 1))[0] == IOERR
    assert disk.read_bytes() == before
    assert request(drv, Req.IN, 0, in_len=512)[:2] == (OK, before[:512])
    assert drv.device.errors == 3


def test_read_only_forced_by_the_board(disk):
    drv = blk(RawFile(disk), readonly=True)
    before = disk.read_bytes()
    assert request(drv, Req.OUT, 0, out=b"w" * 512)[0] == IOERR
    assert disk.read_bytes() == before


@pytest.mark.parametrize("rtype", [2, 3, 5, 10, 14, 0xFFFFFFFF])
def test_unknown_type(disk, rtype):
    drv = blk(RawFile(disk))
    assert request(drv, rtype, in_len=512)[0] == UNSUPP


def test_wrong_directions(disk):
    drv = blk(RawFile(disk))
    before = disk.read_bytes()
    # A write with a device-writable data buffer: there is nothing to write from.
    assert request(drv, Req.OUT, 0, in_len=512)[0] == IOERR
    # Flush and get-id with data in the wrong place.
    assert request(drv, Req.FLUSH, out=b"x" * 512)[0] == IOERR
    assert request(drv, Req.FLUSH, in_len=512)[0] == IOERR
    assert request(drv, Req.GET_ID, out=b"x" * 20, in_len=20)[0] == IOERR
    assert disk.read_bytes() == before


@pytest.mark.parametrize("bufs", [
    "no_status",       # header only
    "short_header",    # 8-byte header and a status
    "all_writable",
])
def test_unanswerable_request_needs_reset(disk, bufs):
    drv = blk(RawFile(disk))
    q = drv.queues[0]
    hdr = drv.ram.buf(struct.pack("<IIQ", Req.IN, 0, 0))
    status = drv.ram.buf(size=1)
    match bufs:
        case "no_status":
            q.add([(hdr, 16, False)])
        case "short_header":
            q.add([(hdr, 8, False), (status, 1, True)])
        case "all_writable":
            q.add([(hdr, 16, True), (status, 1, True)])
    drv.kick()
    # No place for a status byte, or no header ("all_writable": the header is
    # device-writable, so there is none): the request cannot be answered.
    assert drv.status & STATUS_DEVICE_NEEDS_RESET
    assert drv.ram.read(status, 1) == b"\0" and q.used_idx() == 0


# --- host errors: never a false success -----------------------------------------------------------------------
@pytest.mark.parametrize("exc", [
    OSError(errno.EIO, "I/O error"), OSError(errno.ENOSPC, "No space left"),
    ValueError("qcow2: L2 entry points past the end of the image"), RuntimeError("image bug"),
])
@pytest.mark.parametrize("method, rtype, kw", [
    ("read_into", Req.IN, {"in_len": 512}),
    ("write_from", Req.OUT, {"out": b"d" * 512}),
    ("flush", Req.FLUSH, {}),
    ("discard", Req.DISCARD, {"out": segment(0, 1)}),
    ("write_zeroes", Req.WRITE_ZEROES, {"out": segment(0, 1)}),
])
def test_image_errors_become_ioerr(exc, method, rtype, kw):
    image = FakeImage()
    image.fail[method] = exc
    drv = blk(image)
    assert request(drv, rtype, **kw)[0] == IOERR
    assert not drv.status & STATUS_DEVICE_NEEDS_RESET
    del image.fail[method]
    assert request(drv, Req.IN, 0, in_len=512)[0] == OK


def test_failed_flush_fails_every_later_flush():
    image = FakeImage()
    drv = blk(image)
    assert request(drv, Req.FLUSH)[0] == OK
    image.fail["flush"] = OSError(errno.EIO, "fsync failed")
    assert request(drv, Req.FLUSH)[0] == IOERR
    del image.fail["flush"]
    for _ in range(3):
        assert request(drv, Req.FLUSH)[0] == IOERR
    # Even across a device reset and a save/restore.
    drv.start()
    assert request(drv, Req.FLUSH)[0] == IOERR
    assert drv.mmio.save()["device"] == {"flush_failed": True}


def test_many_requests_in_one_kick(disk):
    drv = blk(RawFile(disk))
    q = drv.queues[0]
    statuses = []
    for s in range(16):
        hdr = drv.ram.buf(struct.pack("<IIQ", Req.IN, 0, s))
        data = drv.ram.buf(size=512)
        st = drv.ram.buf(b"\xEE")
        q.add([(hdr, 16, False), (data, 512, True), (st, 1, True)])
        statuses.append((st, data, s))
    drv.kick()
    assert len(q.collect()) == 16
    raw = disk.read_bytes()
    for st, data, s in statuses:
        assert drv.ram.read(st, 1) == b"\0" and drv.ram.read(data, 512) == raw[s * 512:(s + 1) * 512]
    assert drv.irq_level
