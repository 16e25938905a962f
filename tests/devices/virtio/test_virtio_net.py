"""vmkit/devices/virtio/net.py (virtio 1.2, 5.1), driven like Linux's virtio_net."""

import struct

import pytest
from virtio_harness import RING_FEATURES, Driver

from vmkit.devices.device import DeviceStateError
from vmkit.devices.virtio.device import F_EVENT_IDX, F_VERSION_1, STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK
from vmkit.devices.virtio.mmio import Reg
from vmkit.devices.virtio.net import (
    F_MAC,
    F_STATUS,
    HDR,
    HDR_F_DATA_VALID,
    HDR_F_NEEDS_CSUM,
    MAX_RX_FRAME,
    MAX_TX_FRAME,
    RECEIVEQ,
    RX_BACKLOG_FRAMES,
    S_LINK_UP,
    TRANSMITQ,
    VirtioNet,
)
from vmkit.devices.virtio.queue import AVAIL_F_NO_INTERRUPT

MAC = bytes.fromhex("525400123456")
RX_BUF = 1526          # what Linux posts without mergeable buffers: GOOD_PACKET_LEN + header
TX_HDR = bytes(HDR.size)


class FakeBackend:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)


def frame(n: int = 60, tag: int = 0) -> bytes:
    """An Ethernet frame of n bytes: broadcast destination, our source, IPv4."""
    body = bytes((tag + i) & 0xFF for i in range(n - 14))
    return b"\xff" * 6 + MAC + b"\x08\x00" + body


def net(features: int | None = None, ram_size: int = 1 << 20, **kw):
    backend = FakeBackend()
    drv = Driver(VirtioNet(backend, MAC, **kw), ram_size=ram_size)
    drv.start(features)
    return drv, backend


def post_rx(drv, count: int = 1, size: int = RX_BUF) -> list[int]:
    """Linux's add_recvbuf_small: header and data in one device-writable buffer."""
    q = drv.queues[RECEIVEQ]
    bufs = [drv.ram.buf(size=size) for _ in range(count)]
    for b in bufs:
        q.add([(b, size, True)])
    drv.kick(RECEIVEQ)
    return bufs


def send(drv, data: bytes, hdr: bytes = TX_HDR, *, split: bool = True, indirect: bool = False) -> None:
    """Linux's xmit_skb: the header in its own descriptor (or in front of the data)."""
    q = drv.queues[TRANSMITQ]
    if split:
        bufs = [(drv.ram.buf(hdr), len(hdr), False), (drv.ram.buf(data), len(data), False)]
    else:
        bufs = [(drv.ram.buf(hdr + data), len(hdr) + len(data), False)]
    (q.add_indirect if indirect else q.add)(bufs)
    drv.kick(TRANSMITQ)


def rx_header(drv, addr: int) -> tuple[int, ...]:
    return HDR.unpack(drv.ram.read(addr, HDR.size))


# --- identity and configuration -----------------------------------------------------------------------
def test_identity_features_and_queues():
    drv, _ = net()
    assert drv.r32(Reg.DEVICE_ID) == 1
    assert drv.device_features() == F_MAC | F_STATUS | RING_FEATURES
    for index in (RECEIVEQ, TRANSMITQ):
        drv.w32(Reg.QUEUE_SEL, index)
        assert drv.r32(Reg.QUEUE_NUM_MAX) == 256
    drv.w32(Reg.QUEUE_SEL, 2)
    assert drv.r32(Reg.QUEUE_NUM_MAX) == 0       # no control queue, no second pair


def test_config_space_mac_and_status():
    drv, _ = net()
    assert bytes(drv.config(i, 1) for i in range(6)) == MAC
    assert drv.config(6, 2) == S_LINK_UP
    assert drv.config(0, 4) == int.from_bytes(MAC[:4], "little")
    assert drv.config(4, 4) == int.from_bytes(MAC[4:] + b"\x01\x00", "little")
    drv.mmio.write(Reg.CONFIG, 1, 0x00)          # read-only: ignored
    assert drv.config(0, 1) == MAC[0]


@pytest.mark.parametrize("mac", [b"\x52\x54\x00", bytes(6), bytes.fromhex("015400123456")])
def test_bad_mac_refused(mac):
    with pytest.raises(ValueError):
        VirtioNet(FakeBackend(), mac)


def test_works_with_only_version_1():
    drv, backend = net(features=F_VERSION_1)
    send(drv, frame())
    assert backend.sent == [frame()]


# --- transmit -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("split,indirect", [(True, False), (False, False), (True, True)])
def test_transmit_strips_header(split, indirect):
    drv, backend = net()
    send(drv, frame(), split=split, indirect=indirect)
    assert backend.sent == [frame()]
    assert drv.queues[TRANSMITQ].collect() == [(0, 0)]
    assert drv.irq_level and drv.ack_interrupt() == 1
    assert drv.device.counters["tx_frames"] == 1


def test_transmit_largest_frame():
    drv, backend = net(ram_size=1 << 20)
    send(drv, frame(MAX_TX_FRAME))
    assert backend.sent == [frame(MAX_TX_FRAME)]


def _writable_in_tx(drv):
    q = drv.queues[TRANSMITQ]
    q.add([(drv.ram.buf(TX_HDR + frame()), HDR.size + 60, False), (drv.ram.buf(size=16), 16, True)])
    drv.kick(TRANSMITQ)


MALFORMED_TX = {
    "no frame": lambda drv: send(drv, b""),
    "short header": lambda drv: send(drv, b"", hdr=bytes(5)),
    "runt": lambda drv: send(drv, frame()[:13]),
    "oversized": lambda drv: send(drv, frame(MAX_TX_FRAME + 1)),
    "needs_csum": lambda drv: send(drv, frame(), hdr=HDR.pack(HDR_F_NEEDS_CSUM, 0, 0, 0, 14, 16, 0)),
    "data_valid": lambda drv: send(drv, frame(), hdr=HDR.pack(HDR_F_DATA_VALID, 0, 0, 0, 0, 0, 0)),
    "unknown flag": lambda drv: send(drv, frame(), hdr=HDR.pack(0x80, 0, 0, 0, 0, 0, 0)),
    "gso tcpv4": lambda drv: send(drv, frame(), hdr=HDR.pack(0, 1, 54, 1448, 0, 0, 0)),
    "gso ecn": lambda drv: send(drv, frame(), hdr=HDR.pack(0, 0x80, 0, 0, 0, 0, 0)),
    "device-writable buffer": _writable_in_tx,
}


@pytest.mark.parametrize("case", MALFORMED_TX)
def test_malformed_transmit_dropped_and_counted(case):
    drv, backend = net()
    MALFORMED_TX[case](drv)
    assert backend.sent == []
    assert drv.device.counters["tx_dropped_malformed"] == 1
    assert drv.queues[TRANSMITQ].collect() == [(0, 0)]      # the chain still comes back
    assert not drv.status & STATUS_DEVICE_NEEDS_RESET
    send(drv, frame(tag=7))                                 # and the device keeps working
    assert backend.sent == [frame(tag=7)] and drv.device.counters["tx_frames"] == 1


def test_header_fields_ignored_without_offloads():
    # hdr_len, gso_size, csum_* and num_buffers mean nothing with flags 0 and GSO_NONE.
    drv, backend = net()
    send(drv, frame(), hdr=HDR.pack(0, 0, 99, 99, 99, 99, 99))
    assert backend.sent == [frame()]


def test_ring_order_violation_needs_reset_then_recovers():
    drv, backend = net()
    q = drv.queues[TRANSMITQ]
    q.add([(drv.ram.buf(size=12), 12, True), (drv.ram.buf(frame()), 60, False)])   # writable first
    drv.kick(TRANSMITQ)                                     # no exception escapes
    assert drv.status & STATUS_DEVICE_NEEDS_RESET and backend.sent == []
    drv.start()
    post_rx(drv)
    send(drv, frame())
    assert backend.sent == [frame()] and not drv.status & STATUS_DEVICE_NEEDS_RESET


def test_backend_failure_drops_frame_not_device():
    class Broken(FakeBackend):
        def send(self, data):
            if not self.sent and data == frame(tag=1):
                self.sent.append(b"")
                raise ConnectionResetError("backend gone")
            super().send(data)

    backend = Broken()
    drv = Driver(VirtioNet(backend, MAC))
    drv.start()
    send(drv, frame(tag=1))
    send(drv, frame(tag=2))
    assert backend.sent == [b"", frame(tag=2)]
    assert drv.device.counters["tx_dropped_backend"] == 1 and drv.device.counters["tx_frames"] == 1
    assert not drv.status & STATUS_DEVICE_NEEDS_RESET


# --- receive ------------------------------------------------------------------------------------------
def test_receive_writes_header_and_frame():
    drv, _ = net()
    (buf,) = post_rx(drv)
    q = drv.queues[RECEIVEQ]
    assert q.collect() == [] and not drv.irq_level
    assert drv.device.deliver(frame(100)) is True
    drv.device.poll()
    assert q.collect() == [(0, HDR.size + 100)]
    assert rx_header(drv, buf) == (0, 0, 0, 0, 0, 0, 1)    # no flags, GSO_NONE, num_buffers 1
    assert drv.ram.read(buf + HDR.size, 100) == frame(100)
    assert drv.irq_level and drv.ack_interrupt() == 1
    assert drv.device.counters["rx_frames"] == 1 and drv.device.rx_pending == 0


def test_receive_into_split_and_indirect_chains():
    drv, _ = net()
    q = drv.queues[RECEIVEQ]
    hdr, data = drv.ram.buf(size=12), drv.ram.buf(size=1514)
    q.add([(hdr, 12, True), (data, 1514, True)])
    ihdr, idata = drv.ram.buf(size=12), drv.ram.buf(size=1514)
    q.add_indirect([(ihdr, 12, True), (idata, 1514, True)])
    drv.device.deliver(frame(1514, tag=1))
    drv.device.deliver(frame(64, tag=2))
    drv.device.poll()
    assert q.collect() == [(0, 12 + 1514), (2, 12 + 64)]
    assert drv.ram.read(data, 1514) == frame(1514, tag=1) and drv.ram.read(idata, 64) == frame(64, tag=2)
    assert rx_header(drv, hdr)[-1] == 1 and rx_header(drv, ihdr)[-1] == 1


def test_frames_before_buffers_are_kept():
    drv, _ = net()
    dev, q = drv.device, drv.queues[RECEIVEQ]
    for tag in range(3):
        assert dev.deliver(frame(tag=tag))
    dev.poll()
    assert dev.rx_pending == 3 and q.collect() == []
    assert q.avail_event() == 0                              # "kick me when you add a buffer"
    bufs = post_rx(drv, 2)                                  # the notify delivers
    assert [n for _, n in q.collect()] == [72, 72] and dev.rx_pending == 1
    assert [drv.ram.read(b + 12, 60) for b in bufs] == [frame(tag=0), frame(tag=1)]
    (last,) = post_rx(drv, 1)
    assert drv.ram.read(last + 12, 60) == frame(tag=2) and dev.rx_pending == 0


def test_frames_before_driver_ok_are_kept():
    drv = Driver(VirtioNet(FakeBackend(), MAC))
    assert drv.negotiate()                       # this resets the device first, as Linux does
    for index in (RECEIVEQ, TRANSMITQ):
        drv.setup_queue(index)
    assert drv.device.deliver(frame(tag=9))
    drv.device.poll()                             # not DRIVER_OK yet: the frame waits
    assert drv.device.rx_pending == 1
    drv.w32(Reg.STATUS, drv.status | STATUS_DRIVER_OK)
    (buf,) = post_rx(drv)
    assert drv.ram.read(buf + 12, 60) == frame(tag=9)


def test_backlog_bounded_in_frames():
    drv, _ = net()
    dev = drv.device
    assert all(dev.deliver(frame(tag=i)) for i in range(RX_BACKLOG_FRAMES))
    assert dev.deliver(frame()) is False and dev.deliver(frame()) is False
    assert dev.counters["rx_dropped_full"] == 2 and dev.rx_pending == RX_BACKLOG_FRAMES
    bufs = post_rx(drv, 256)
    assert dev.rx_pending == 0 and dev.counters["rx_frames"] == 256
    assert drv.ram.read(bufs[255] + 12, 60) == frame(tag=255)
    assert dev.deliver(frame())                              # room again


def test_backlog_bounded_in_bytes():
    drv, _ = net(rx_backlog_frames=100, rx_backlog_bytes=2 * MAX_RX_FRAME + 100)
    dev = drv.device
    assert dev.deliver(frame(MAX_RX_FRAME)) and dev.deliver(frame(MAX_RX_FRAME))
    assert dev.deliver(frame(MAX_RX_FRAME)) is False
    assert dev.deliver(frame(100))                          # a small one still fits
    assert dev.counters["rx_dropped_full"] == 1 and dev.rx_pending == 3


def test_bad_backlog_limits_refused():
    with pytest.raises(ValueError):
        VirtioNet(FakeBackend(), MAC, rx_backlog_frames=0)
    with pytest.raises(ValueError):
        VirtioNet(FakeBackend(), MAC, rx_backlog_bytes=100)


@pytest.mark.parametrize("n", [0, 13, MAX_RX_FRAME + 1])
def test_deliver_refuses_malformed_frames(n):
    drv, _ = net()
    assert drv.device.deliver(b"\0" * n) is False
    assert drv.device.counters["rx_dropped_malformed"] == 1 and drv.device.rx_pending == 0


def test_frame_larger_than_buffer_dropped():
    drv, _ = net()
    q = drv.queues[RECEIVEQ]
    small = post_rx(drv, 1, size=40)[0]
    (good,) = post_rx(drv, 1)
    drv.device.deliver(frame(100, tag=1))
    drv.device.deliver(frame(100, tag=2))
    drv.device.poll()
    assert q.collect() == [(0, 0), (1, 112)]
    assert drv.ram.read(small, 40) == bytes(40)
    assert drv.ram.read(good + 12, 100) == frame(100, tag=2)
    assert drv.device.counters["rx_dropped_small_buffer"] == 1
    assert not drv.status & STATUS_DEVICE_NEEDS_RESET


def test_readable_buffers_in_receive_chain_are_skipped():
    drv, _ = net()
    q = drv.queues[RECEIVEQ]
    ro, rw = drv.ram.buf(b"\xaa" * 16), drv.ram.buf(size=RX_BUF)
    q.add([(ro, 16, False), (rw, RX_BUF, True)])
    drv.kick(RECEIVEQ)
    drv.device.deliver(frame())
    drv.device.poll()
    assert q.collect() == [(0, 72)]
    assert drv.ram.read(ro, 16) == b"\xaa" * 16 and drv.ram.read(rw + 12, 60) == frame()


# --- interrupts ---------------------------------------------------------------------------------------
def test_receive_interrupt_follows_used_event():
    drv, _ = net()
    q, dev = drv.queues[RECEIVEQ], drv.device
    post_rx(drv, 4)
    dev.deliver(frame())
    dev.poll()
    assert drv.ack_interrupt() == 1 and q.collect() == [(0, 72)]
    q.set_used_event(2)                 # Linux's virtqueue_enable_cb_delayed: not before entry 2
    dev.deliver(frame())
    dev.poll()
    assert not drv.irq_level
    dev.deliver(frame())
    dev.poll()
    assert drv.irq_level


def test_one_interrupt_per_batch():
    drv, _ = net()
    post_rx(drv, 8)
    changes = drv.irq_changes
    for tag in range(8):
        drv.device.deliver(frame(tag=tag))
    drv.device.poll()
    assert drv.irq_changes == changes + 1 and len(drv.queues[RECEIVEQ].collect()) == 8


def test_no_interrupt_flag_without_event_idx():
    drv, _ = net(features=RING_FEATURES & ~F_EVENT_IDX | F_MAC)
    q = drv.queues[RECEIVEQ]
    q.set_avail_flags(AVAIL_F_NO_INTERRUPT)    # NAPI polling: interrupts off
    post_rx(drv, 2)
    drv.device.deliver(frame())
    drv.device.poll()
    assert not drv.irq_level and q.collect() == [(0, 72)]
    q.set_avail_flags(0)
    drv.device.deliver(frame())
    drv.device.poll()
    assert drv.irq_level


# --- reset and saved state ----------------------------------------------------------------------------
def test_reset_mid_traffic():
    drv, backend = net()
    dev = drv.device
    post_rx(drv, 1)
    for tag in range(4):
        dev.deliver(frame(tag=tag))
    dev.poll()                                   # one frame in guest RAM, three waiting
    drv.queues[TRANSMITQ].add([(drv.ram.buf(TX_HDR + frame()), 72, False)])   # posted, not kicked
    drv.w32(Reg.STATUS, 0)
    assert drv.status == 0 and dev.rx_pending == 0 and dev.counters["rx_dropped_reset"] == 3
    dev.poll()                                    # no driver: nothing happens
    drv.start()
    assert dev.deliver(frame(tag=8))
    (buf,) = post_rx(drv)
    assert drv.ram.read(buf + 12, 60) == frame(tag=8)
    send(drv, frame(tag=9))
    assert backend.sent == [frame(tag=9)]         # the stale chain died with the old rings


def test_save_restore_keeps_backlog_and_counters():
    drv, backend = net()
    send(drv, frame())
    drv.device.deliver(frame(tag=1))
    drv.device.deliver(frame(tag=2))
    state = drv.mmio.save()

    other = Driver(VirtioNet(FakeBackend(), MAC))
    other.ram.array[:] = drv.ram.array
    other.ram.next = drv.ram.next
    other.mmio.restore(state)
    assert other.device.active and other.device.rx_pending == 2
    assert other.device.counters["tx_frames"] == 1
    for index, q in drv.queues.items():
        q.ram = other.ram
        other.queues[index] = q
    bufs = post_rx(other, 2)
    assert [other.ram.read(b + 12, 60) for b in bufs] == [frame(tag=1), frame(tag=2)]


@pytest.mark.parametrize("bad", [
    {"counters": {}},
    {"backlog": [b"short"]},
    {"backlog": "x"},
    {"backlog": [frame()] * (RX_BACKLOG_FRAMES + 1)},
    {"backlog": [frame(MAX_RX_FRAME)] * 4},
    {"counters": {"rx_frames": -1}},
])
def test_restore_refuses_corrupt_state(bad):
    dev = VirtioNet(FakeBackend(), MAC, rx_backlog_bytes=3 * MAX_RX_FRAME)
    dev.deliver(frame(tag=5))
    good = dev.save()
    state = {**good, **bad}
    if "counters" in bad and bad["counters"]:
        state["counters"] = {**good["counters"], **bad["counters"]}
    with pytest.raises(DeviceStateError):
        dev.restore(state)
    assert dev.save() == good
