"""vmkit/devices/virtio/queue.py: the split virtqueue (virtio 1.2, 2.7) against
every malformed ring in RELIABILITY.md ("Virtqueues and the virtio-mmio
transport").  A malformed chain must end in DEVICE_NEEDS_RESET plus a
configuration change interrupt, with nothing read or written, no hang, and
the VM (here: the test) going on."""

import gc
import struct
import time
import tracemalloc

import numpy as np
import pytest
from virtio_harness import RAM_BASE, Driver

from vmkit.devices.virtio.block import VirtioBlock
from vmkit.devices.virtio.console import INPUT_BACKLOG_LIMIT, VirtioConsole
from vmkit.devices.virtio.device import F_EVENT_IDX, F_VERSION_1, STATUS_DEVICE_NEEDS_RESET, VirtioDevice
from vmkit.devices.virtio.mmio import INT_CONFIG_CHANGE, INT_USED_BUFFER, Reg
from vmkit.devices.virtio.queue import (
    AVAIL_F_NO_INTERRUPT,
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    MAX_INDIRECT,
    GuestRam,
    Virtqueue,
    VirtqueueError,
    gather,
    scatter,
    sub_views,
)
from vmkit.devices.virtio.rng import MAX_REQUEST, VirtioRng

FILL = 0xAB


def rng_driver(features=None, num=None, ram_size=1 << 20):
    drv = Driver(VirtioRng(source=lambda n: bytes([FILL]) * n), ram_size=ram_size)
    drv.start(features, num=num)
    return drv, drv.queues[0]


def assert_needs_reset(drv):
    assert drv.status & STATUS_DEVICE_NEEDS_RESET
    assert drv.irq_level and drv.r32(Reg.INTERRUPT_STATUS) & INT_CONFIG_CHANGE
    assert drv.mmio.device_errors >= 1


def assert_untouched(drv, addr, n):
    assert drv.ram.read(addr, n) == bytes(n)


def assert_device_recovers(drv):
    """After a reset the same device works again."""
    drv.start()
    q = drv.queues[0]
    buf = drv.ram.buf(size=8)
    q.add([(buf, 8, True)])
    drv.kick()
    assert q.collect() == [(0, 8)]
    assert drv.ram.read(buf, 8) == bytes([FILL]) * 8


# --- the good paths first ---------------------------------------------------------------------------
def test_direct_and_indirect_chains():
    drv, q = rng_driver()
    a, b = drv.ram.buf(size=5), drv.ram.buf(size=7)
    q.add([(a, 5, True), (b, 7, True)])
    c, d = drv.ram.buf(size=3), drv.ram.buf(size=9)
    q.add_indirect([(c, 3, True), (d, 9, True)])
    drv.kick()
    assert q.collect() == [(0, 12), (2, 12)]
    for addr, n in ((a, 5), (b, 7), (c, 3), (d, 9)):
        assert drv.ram.read(addr, n) == bytes([FILL]) * n


def test_normal_descriptors_then_one_indirect():
    # 2.7.5.3.2: the device MUST handle normal descriptors followed by one indirect.
    drv, q = rng_driver()
    a, b = drv.ram.buf(size=4), drv.ram.buf(size=4)
    table = drv.ram.alloc(16)
    q.write_desc(0, b, 4, DESC_F_WRITE, table=table)
    q.write_desc(0, a, 4, DESC_F_WRITE | DESC_F_NEXT, 1)
    q.write_desc(1, table, 16, DESC_F_INDIRECT | DESC_F_WRITE)   # WRITE on it is ignored
    q.post_head(0)
    drv.kick()
    assert q.collect()[0][1] == 8 and drv.ram.read(b, 4) == bytes([FILL]) * 4


def test_avail_ring_wraps_past_65535():
    drv, q = rng_driver(num=4)
    buf = drv.ram.buf(size=1)
    mq = drv.mmio.queues[0]
    mq.last_avail_idx = mq.used_idx = 65534
    q.avail_idx = q.last_used = 65534
    drv.ram.set_u16(q.used + 2, 65534)
    for _ in range(4):
        q.add([(buf, 1, True)])
        drv.kick()
        assert len(q.collect()) == 1
    assert mq.last_avail_idx == 2 and q.used_idx() == 2


# --- malformed chains -> needs-reset ---------------------------------------------------------------------
def post_raw(drv, q, descs, head=0, table=None):
    for i, d in enumerate(descs):
        if d is not None:
            q.write_desc(i, *d, table=table)
    q.post_head(head)
    drv.kick()


def test_descriptor_loop_direct():
    drv, q = rng_driver(num=8)
    buf = drv.ram.buf(size=4)
    post_raw(drv, q, [(buf, 4, DESC_F_WRITE | DESC_F_NEXT, 1), (buf, 4, DESC_F_WRITE | DESC_F_NEXT, 0)])
    assert_needs_reset(drv)
    assert_untouched(drv, buf, 4)
    assert q.used_idx() == 0
    assert_device_recovers(drv)


def test_descriptor_self_loop():
    drv, q = rng_driver(num=8)
    buf = drv.ram.buf(size=4)
    post_raw(drv, q, [(buf, 4, DESC_F_WRITE | DESC_F_NEXT, 0)])
    assert_needs_reset(drv)
    assert_untouched(drv, buf, 4)


def test_chain_longer_than_the_queue():
    drv, q = rng_driver(num=4)
    buf = drv.ram.buf(size=1)
    # 0 -> 1 -> 2 -> 3 -> 0 -> ...: five descriptors in a queue of four.
    post_raw(drv, q, [(buf, 1, DESC_F_WRITE | DESC_F_NEXT, (i + 1) % 4) for i in range(4)])
    assert_needs_reset(drv)
    assert_untouched(drv, buf, 1)


def test_chain_exactly_the_queue_size_is_fine():
    drv, q = rng_driver(num=4)
    bufs = [drv.ram.buf(size=2) for _ in range(4)]
    q.add([(b, 2, True) for b in bufs])
    drv.kick()
    assert q.collect() == [(0, 8)]


def test_loop_inside_indirect_table():
    drv, q = rng_driver()
    buf = drv.ram.buf(size=4)
    table = drv.ram.alloc(48)
    for i in range(3):
        q.write_desc(i, buf, 4, DESC_F_WRITE | DESC_F_NEXT, (i + 1) % 3, table=table)
    post_raw(drv, q, [(table, 48, DESC_F_INDIRECT, 0)])
    assert_needs_reset(drv)
    assert_untouched(drv, buf, 4)


def test_indirect_table_too_large():
    drv, q = rng_driver(ram_size=1 << 21)
    n = MAX_INDIRECT + 1
    table = drv.ram.alloc(16 * n)
    post_raw(drv, q, [(table, 16 * n, DESC_F_INDIRECT, 0)])
    assert_needs_reset(drv)


@pytest.mark.parametrize("case", ["next", "head", "indirect_next"])
def test_index_out_of_range(case):
    drv, q = rng_driver(num=8)
    buf = drv.ram.buf(size=4)
    if case == "next":
        post_raw(drv, q, [(buf, 4, DESC_F_WRITE | DESC_F_NEXT, 8)])
    elif case == "head":
        post_raw(drv, q, [(buf, 4, DESC_F_WRITE, 0)], head=8)
    else:
        table = drv.ram.alloc(32)
        q.write_desc(0, buf, 4, DESC_F_WRITE | DESC_F_NEXT, 2, table=table)  # table has 2 entries
        post_raw(drv, q, [(table, 32, DESC_F_INDIRECT, 0)])
    assert_needs_reset(drv)
    assert_untouched(drv, buf, 4)


def test_avail_index_too_far_ahead():
    drv, q = rng_driver(num=8)
    buf = drv.ram.buf(size=4)
    for i in range(8):
        q.write_desc(i, buf, 4, DESC_F_WRITE)
    drv.ram.set_u16(q.avail + 2, 9)       # 9 new entries in a ring of 8
    drv.kick()
    assert_needs_reset(drv)
    assert_untouched(drv, buf, 4)


def test_avail_index_exactly_a_queue_ahead_is_fine():
    drv, q = rng_driver(num=8)
    bufs = [drv.ram.buf(size=1) for _ in range(8)]
    for b in bufs:
        q.add([(b, 1, True)])
    drv.kick()
    assert len(q.collect()) == 8


@pytest.mark.parametrize("length", [0, 8, 24, 17])
def test_indirect_table_length(length):
    drv, q = rng_driver()
    table = drv.ram.alloc(32)
    buf = drv.ram.buf(size=4)
    q.write_desc(0, buf, 4, DESC_F_WRITE, table=table)
    post_raw(drv, q, [(table, length, DESC_F_INDIRECT, 0)])
    assert_needs_reset(drv)
    assert_untouched(drv, buf, 4)


def test_nested_indirect():
    drv, q = rng_driver()
    buf = drv.ram.buf(size=4)
    inner = drv.ram.alloc(16)
    q.write_desc(0, buf, 4, DESC_F_WRITE, table=inner)
    outer = drv.ram.alloc(16)
    q.write_desc(0, inner, 16, DESC_F_INDIRECT, table=outer)
    post_raw(drv, q, [(outer, 16, DESC_F_INDIRECT, 0)])
    assert_needs_reset(drv)
    assert_untouched(drv, buf, 4)


def test_indirect_with_next():
    drv, q = rng_driver()
    buf = drv.ram.buf(size=4)
    table = drv.ram.alloc(16)
    q.write_desc(0, buf, 4, DESC_F_WRITE, table=table)
    post_raw(drv, q, [(table, 16, DESC_F_INDIRECT | DESC_F_NEXT, 1), (buf, 4, DESC_F_WRITE, 0)])
    assert_needs_reset(drv)
    assert_untouched(drv, buf, 4)


def test_indirect_not_negotiated():
    drv, q = rng_driver(features=F_VERSION_1)
    buf = drv.ram.buf(size=4)
    table = drv.ram.alloc(16)
    q.write_desc(0, buf, 4, DESC_F_WRITE, table=table)
    post_raw(drv, q, [(table, 16, DESC_F_INDIRECT, 0)])
    assert_needs_reset(drv)
    assert_untouched(drv, buf, 4)


END = RAM_BASE + (1 << 20)


@pytest.mark.parametrize("addr, length", [
    (RAM_BASE - 16, 16),                    # below RAM
    (END, 1),                               # just past the end
    (END - 8, 16),                          # straddling the end
    (0xFFFF_FFFF_FFFF_FFF0, 0x20),          # wrapping past 2^64
    (0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF),
    (0x1000_1000, 0x100),                   # landing on a virtio-mmio slot
    (0x0C00_0000, 4),                       # on the PLIC
    (RAM_BASE + 0x1000, 0xFFFF_FFFF),       # a huge length from a good address
])
def test_buffer_outside_ram(addr, length):
    drv, q = rng_driver()
    good = drv.ram.buf(size=4)
    # A good buffer first: nothing of the chain may be written, not even that.
    post_raw(drv, q, [(good, 4, DESC_F_WRITE | DESC_F_NEXT, 1), (addr, length, DESC_F_WRITE, 0)])
    assert_needs_reset(drv)
    assert_untouched(drv, good, 4)


@pytest.mark.parametrize("addr", [END - 8, 0xFFFF_FFFF_FFFF_FFF0, 0x1000_1000])
def test_indirect_table_outside_ram(addr):
    drv, q = rng_driver()
    post_raw(drv, q, [(addr, 32, DESC_F_INDIRECT, 0)])
    assert_needs_reset(drv)


def test_guest_ram_range_checks():
    ram = GuestRam(np.zeros(4096, dtype=np.uint8), RAM_BASE)
    assert ram.offset(RAM_BASE, 4096) == 0 and ram.offset(RAM_BASE + 4095, 1) == 4095
    for addr, n in ((RAM_BASE - 1, 1), (RAM_BASE + 4096, 0 + 1), (RAM_BASE, 4097), (1 << 64, 0), (-1, 2)):
        with pytest.raises(VirtqueueError):
            ram.offset(addr, n)
    with pytest.raises(TypeError):
        GuestRam(np.zeros(16, dtype=np.uint32), RAM_BASE)


# --- zero-length descriptors and direction ------------------------------------------------------------------
def test_zero_length_descriptors_make_progress():
    drv, q = rng_driver(num=8)
    buf = drv.ram.buf(size=4)
    # Zero-length buffers anywhere, even at addresses that are not RAM.
    q.add([(0, 0, True), (buf, 4, True), (0xFFFF_FFFF_FFFF_FFFF, 0, True)])
    q.add([(0, 0, True)])
    q.add_indirect([(0x1000, 0, True)] * 5)
    t0 = time.monotonic()
    drv.kick()
    assert time.monotonic() - t0 < 1
    assert q.collect() == [(0, 4), (3, 0), (4, 0)]
    assert not drv.status & STATUS_DEVICE_NEEDS_RESET


def test_zero_length_only_requests_repeatedly_do_not_spin():
    drv, q = rng_driver(num=4)
    t0 = time.monotonic()
    for _ in range(2000):
        q.add([(0, 0, True)])
        drv.kick()
        assert q.collect()[0][1] == 0
    assert time.monotonic() - t0 < 10


def test_writable_before_readable():
    # 2.7.4.2: device-readable descriptors must come first.  Such a chain is
    # malformed: needs-reset (as QEMU: "Incorrect order for descriptors"),
    # nothing written.
    drv, q = rng_driver()
    w, r = drv.ram.buf(size=4), drv.ram.buf(b"abcd")
    q.add([(w, 4, True), (r, 4, False)])
    drv.kick()
    assert_needs_reset(drv)
    assert_untouched(drv, w, 4)


def test_writable_before_readable_in_indirect_table():
    drv, q = rng_driver()
    w, r = drv.ram.buf(size=4), drv.ram.buf(b"abcd")
    q.add_indirect([(w, 4, True), (r, 4, False)])
    drv.kick()
    assert_needs_reset(drv)
    assert_untouched(drv, w, 4)


def test_zero_length_writable_before_readable_is_still_out_of_order():
    drv, q = rng_driver()
    r = drv.ram.buf(b"abcd")
    q.add([(0, 0, True), (r, 4, False)])
    drv.kick()
    assert_needs_reset(drv)


def test_device_readable_buffers_are_read_only_views():
    ram = np.zeros(4096, dtype=np.uint8)
    gram = GuestRam(ram, RAM_BASE)
    vq = Virtqueue(gram, 0, 4)
    vq.num, vq.desc_addr, vq.driver_addr, vq.device_addr = 4, RAM_BASE, RAM_BASE + 0x100, RAM_BASE + 0x200
    assert vq.enable() is None
    struct.pack_into("<QIHH", ram, 0, RAM_BASE + 0x400, 8, DESC_F_NEXT, 1)
    struct.pack_into("<QIHH", ram, 16, RAM_BASE + 0x500, 8, DESC_F_WRITE, 0)
    struct.pack_into("<HHH", ram, 0x100, 0, 1, 0)
    chain = vq.pop()
    assert chain.readable[0].readonly and not chain.writable[0].readonly
    with pytest.raises(TypeError):
        chain.readable[0][0] = 1
    # Zero-copy: the views are RAM.
    chain.writable[0][0] = 0x5A
    assert ram[0x500] == 0x5A
    assert chain.buffers == [(chain.readable[0], False), (chain.writable[0], True)]


def test_reading_into_a_device_readable_buffer_is_a_request_error(tmp_path):
    # A block read whose data buffer the driver marked device-readable: the
    # device must not write it; the request fails with IOERR.
    from virtio_harness import RawFile

    path = tmp_path / "disk.img"
    path.write_bytes(b"\x77" * 4096)
    drv = Driver(VirtioBlock(RawFile(path)))
    drv.start()
    q = drv.queues[0]
    hdr = drv.ram.buf(struct.pack("<IIQ", 0, 0, 0))
    data = drv.ram.buf(size=512)
    status = drv.ram.buf(b"\xff")
    q.add([(hdr, 16, False), (data, 512, False), (status, 1, True)])
    drv.kick()
    assert q.collect() == [(0, 1)]
    assert drv.ram.read(status, 1) == b"\x01"        # VIRTIO_BLK_S_IOERR
    assert_untouched(drv, data, 512)
    assert not drv.status & STATUS_DEVICE_NEEDS_RESET


# --- read each descriptor once ----------------------------------------------------------------------------------
class Racer(VirtioDevice):
    """Pops a chain, then lets "another hart" rewrite the descriptor table
    before touching the buffers."""

    device_id = 99
    queue_sizes = (8,)

    def __init__(self, rewrite):
        super().__init__()
        self.rewrite = rewrite

    def notify(self, index):
        q = self.queues[index]
        while (chain := q.pop()) is not None:
            self.rewrite()
            for v in chain.writable:
                v[:] = b"\x11" * len(v)
            q.push(chain, chain.writable_len)


def test_each_descriptor_is_read_once():
    holder = {}
    drv = Driver(Racer(lambda: holder["rewrite"]()))
    drv.start()
    q = drv.queues[0]
    buf = drv.ram.buf(size=8)
    # After validation the descriptor is pointed at MMIO with a huge length.
    holder["rewrite"] = lambda: q.write_desc(0, 0x1000_1000, 0xFFFF_FFFF, DESC_F_WRITE)
    q.add([(buf, 8, True)])
    drv.kick()
    assert q.collect() == [(0, 8)] and drv.ram.read(buf, 8) == b"\x11" * 8
    assert not drv.status & STATUS_DEVICE_NEEDS_RESET


# --- notification suppression (2.7.7, 2.7.10) -----------------------------------------------------------------------
def test_no_interrupt_flag_without_event_idx():
    drv, q = rng_driver(features=F_VERSION_1)
    q.set_avail_flags(AVAIL_F_NO_INTERRUPT)
    buf = drv.ram.buf(size=1)
    q.add([(buf, 1, True)])
    drv.kick()
    assert q.collect() == [(0, 1)] and not drv.irq_level
    q.set_avail_flags(0)
    q.add([(buf, 1, True)])
    drv.kick()
    assert drv.irq_level and drv.ack_interrupt() == INT_USED_BUFFER


def test_event_idx_used_event():
    drv, q = rng_driver()
    buf = drv.ram.buf(size=1)
    # First completion always interrupts.
    q.add([(buf, 1, True)])
    drv.kick()
    assert drv.irq_level
    drv.ack_interrupt()
    # "Interrupt me when used idx passes 3": completions 2 and 3 stay quiet.
    q.set_used_event(3)
    for expect in (False, False, True):
        q.add([(buf, 1, True)])
        drv.kick()
        q.collect()
        assert drv.irq_level is expect


def test_event_idx_avail_event_follows_consumption():
    drv, q = rng_driver()
    buf = drv.ram.buf(size=1)
    for n in range(1, 4):
        q.add([(buf, 1, True)])
        drv.kick()
        assert q.avail_event() == n
    assert drv.mmio.driver_features & F_EVENT_IDX


# --- bounded host memory ---------------------------------------------------------------------------------------------
def test_guest_never_collecting_completions_keeps_host_memory_bounded():
    drv, q = rng_driver(num=8, ram_size=4 << 20)
    big = drv.ram.buf(size=1 << 20)
    mq = drv.mmio.queues[0]
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(3000):
            # Reuse descriptor i % 8 forever and never read the used ring.
            d = i % 8
            q.write_desc(d, big, 1 << 20, DESC_F_WRITE)
            q.post_head(d)
            drv.kick()
            assert mq.in_flight == 0
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One request's entropy (MAX_REQUEST) at a time, never the guest's megabyte.
    assert peak < 4 * MAX_REQUEST + (256 << 10), peak
    assert drv.mmio.device_errors == 0


def test_device_never_holds_more_than_num_chains():
    ram = np.zeros(1 << 16, dtype=np.uint8)
    vq = Virtqueue(GuestRam(ram, RAM_BASE), 0, 4)
    vq.desc_addr, vq.driver_addr, vq.device_addr = RAM_BASE, RAM_BASE + 0x100, RAM_BASE + 0x200
    assert vq.enable() is None
    held = []
    for i in range(8):
        # The driver keeps making buffers available; the device keeps them all.
        struct.pack_into("<QIHH", ram, 16 * (i % 4), RAM_BASE + 0x1000, 8, DESC_F_WRITE, 0)
        struct.pack_into("<H", ram, 0x104 + 2 * (i % 4), i % 4)
        struct.pack_into("<H", ram, 0x102, i + 1)
        c = vq.pop()
        if c is not None:
            held.append(c)
    assert len(held) == 4 and vq.in_flight == 4
    vq.push(held.pop(), 8)
    assert vq.in_flight == 3


def test_console_input_bounded_when_guest_posts_no_buffers():
    out = []
    drv = Driver(VirtioConsole(out.append))
    drv.start()
    for _ in range(200):
        drv.device.push_input(b"x" * 4096)
    assert drv.device.pending_input == INPUT_BACKLOG_LIMIT
    assert drv.device.dropped_input == 200 * 4096 - INPUT_BACKLOG_LIMIT


# --- scatter/gather helpers -----------------------------------------------------------------------------------------
def test_scatter_gather_helpers():
    a, b, c = bytearray(3), bytearray(0), bytearray(5)
    views = [memoryview(a), memoryview(b), memoryview(c)]
    assert scatter(views, 1, b"1234567") == 7
    assert bytes(a + c) == b"\x001234567"
    assert gather(views, 2, 4) == b"2345"
    assert gather(views, 6, 10) == b"67"
    assert [bytes(v) for v in sub_views(views, 2, 5)] == [b"2", b"34"]
    assert scatter(views, 7, b"abc") == 1
