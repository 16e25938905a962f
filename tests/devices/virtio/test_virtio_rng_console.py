"""vmkit/devices/virtio/rng.py (virtio 1.2, 5.4) and console.py (5.3)."""

import pytest
from virtio_harness import Driver

from vmkit.devices.device import DeviceStateError
from vmkit.devices.virtio.console import (
    F_EMERG_WRITE,
    F_MULTIPORT,
    INPUT_BACKLOG_LIMIT,
    MAX_TX_REQUEST,
    RECEIVEQ,
    TRANSMITQ,
    VirtioConsole,
)
from vmkit.devices.virtio.device import STATUS_DEVICE_NEEDS_RESET
from vmkit.devices.virtio.mmio import Reg
from vmkit.devices.virtio.rng import MAX_REQUEST, VirtioRng


# --- entropy ------------------------------------------------------------------------------------------
def test_rng_fills_writable_buffers():
    drv = Driver(VirtioRng())
    assert drv.r32(Reg.DEVICE_ID) == 4
    drv.start()
    q = drv.queues[0]
    a, b = drv.ram.buf(size=32), drv.ram.buf(size=32)
    q.add([(a, 32, True), (b, 32, True)])
    drv.kick()
    assert q.collect() == [(0, 64)]
    assert drv.ram.read(a, 32) != bytes(32) and drv.ram.read(a, 32) != drv.ram.read(b, 32)
    assert drv.irq_level


def test_rng_caps_each_request():
    drv = Driver(VirtioRng(source=lambda n: b"\x5A" * n), ram_size=1 << 20)
    drv.start()
    q = drv.queues[0]
    big = drv.ram.buf(size=MAX_REQUEST + 4096)
    q.add([(big, MAX_REQUEST + 4096, True)])
    drv.kick()
    assert q.collect() == [(0, MAX_REQUEST)]
    assert drv.ram.read(big + MAX_REQUEST, 4096) == bytes(4096)


def test_rng_ignores_readable_buffers_and_serves_empty_requests():
    drv = Driver(VirtioRng(source=lambda n: b"\x5A" * n))
    drv.start()
    q = drv.queues[0]
    r = drv.ram.buf(b"input")
    q.add([(r, 5, False)])
    drv.kick()
    assert q.collect() == [(0, 0)] and drv.ram.read(r, 5) == b"input"


def test_rng_source_failure_needs_reset():
    def broken(n):
        raise OSError("no entropy")
    drv = Driver(VirtioRng(source=broken))
    drv.start()
    q = drv.queues[0]
    buf = drv.ram.buf(size=8)
    q.add([(buf, 8, True)])
    drv.kick()
    assert drv.status & STATUS_DEVICE_NEEDS_RESET


# --- console ---------------------------------------------------------------------------------------------
def console():
    out = []
    drv = Driver(VirtioConsole(out.append))
    drv.start()
    return drv, out


def post_rx(drv, sizes):
    q = drv.queues[RECEIVEQ]
    bufs = [drv.ram.buf(size=n) for n in sizes]
    for b, n in zip(bufs, sizes):
        q.add([(b, n, True)])
    drv.kick(RECEIVEQ)
    return bufs


def test_console_identity_and_features():
    drv, _ = console()
    assert drv.r32(Reg.DEVICE_ID) == 3
    feats = drv.device_features()
    assert feats & F_EMERG_WRITE and not feats & F_MULTIPORT
    assert drv.config(4, 4) == 1          # max_nr_ports
    drv.w32(Reg.QUEUE_SEL, 2)
    assert drv.r32(Reg.QUEUE_NUM_MAX) == 0  # only receiveq0 and transmitq0


def test_console_output():
    drv, out = console()
    q = drv.queues[TRANSMITQ]
    a, b = drv.ram.buf(b"Hello, "), drv.ram.buf(b"world\n")
    q.add([(a, 7, False), (b, 6, False)])
    drv.kick(TRANSMITQ)
    assert b"".join(out) == b"Hello, world\n"
    assert q.collect() == [(0, 0)]


def test_console_output_is_capped_per_request():
    out = []
    big = Driver(VirtioConsole(out.append), ram_size=4 << 20)
    big.start()
    q = big.queues[TRANSMITQ]
    buf = big.ram.buf(size=MAX_TX_REQUEST + 4096)
    q.add([(buf, MAX_TX_REQUEST + 4096, False)])
    big.kick(TRANSMITQ)
    assert sum(map(len, out)) == MAX_TX_REQUEST and max(map(len, out)) <= 64 * 1024
    assert big.device.dropped_output == 4096


def test_console_input_waits_for_buffers():
    drv, _ = console()
    drv.device.push_input(b"ls -l\n")
    assert drv.device.pending_input == 6
    bufs = post_rx(drv, [4, 4])
    q = drv.queues[RECEIVEQ]
    assert q.collect() == [(0, 4), (1, 2)]
    assert drv.ram.read(bufs[0], 4) == b"ls -" and drv.ram.read(bufs[1], 2) == b"l\n"
    assert drv.device.pending_input == 0


def test_console_input_goes_straight_into_posted_buffers():
    drv, _ = console()
    bufs = post_rx(drv, [16])
    q = drv.queues[RECEIVEQ]
    assert q.collect() == []            # nothing to say yet: the buffer stays with the device
    drv.ack_interrupt()
    drv.device.push_input(b"y")
    assert q.collect() == [(0, 1)] and drv.ram.read(bufs[0], 1) == b"y"
    assert drv.irq_level


def test_console_input_before_driver_ok_arrives_later():
    out = []
    drv = Driver(VirtioConsole(out.append))
    drv.device.push_input(b"early")
    drv.start()
    post_rx(drv, [16])
    assert drv.queues[RECEIVEQ].collect() == [(0, 5)]


def test_console_input_backlog_bounded():
    drv, _ = console()
    drv.device.push_input(b"a" * (INPUT_BACKLOG_LIMIT + 10))
    assert drv.device.pending_input == INPUT_BACKLOG_LIMIT and drv.device.dropped_input == 10
    drv.device.push_input(b"b")
    assert drv.device.dropped_input == 11


def test_console_emergency_write():
    drv, out = console()
    drv.mmio.write(Reg.CONFIG + 8, 4, ord("!"))
    assert out == [b"!"]


def test_console_output_exception_needs_reset():
    def broken(data):
        raise BrokenPipeError("console closed")
    drv = Driver(VirtioConsole(broken))
    drv.start()
    q = drv.queues[TRANSMITQ]
    a = drv.ram.buf(b"x")
    q.add([(a, 1, False)])
    drv.kick(TRANSMITQ)
    assert drv.status & STATUS_DEVICE_NEEDS_RESET
    # Host input to a device that needs a reset is kept, not lost or crashing.
    drv.device.push_input(b"k")
    assert drv.device.pending_input == 1


def test_console_save_restore():
    drv, _ = console()
    drv.device.push_input(b"abc")
    state = drv.mmio.save()
    other = VirtioConsole(lambda d: None)
    other.restore(state["device"])
    assert other.pending_input == 3
    with pytest.raises(DeviceStateError):
        other.restore({"pending": b"x" * (INPUT_BACKLOG_LIMIT + 1), "dropped_input": 0, "dropped_output": 0})
    assert other.pending_input == 3
