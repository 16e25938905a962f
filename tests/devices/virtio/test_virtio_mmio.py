"""vmkit/devices/virtio/mmio.py: the virtio-mmio transport (virtio 1.2, 4.2),
driven the way Linux's virtio_mmio driver drives it."""

import struct

import pytest
from virtio_harness import RAM_BASE, RING_FEATURES, Driver

from vmkit.devices.device import DeviceStateError
from vmkit.devices.virtio.device import (
    F_VERSION_1,
    STATUS_ACKNOWLEDGE,
    STATUS_DEVICE_NEEDS_RESET,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FAILED,
    STATUS_FEATURES_OK,
    VirtioDevice,
)
from vmkit.devices.virtio.mmio import INT_CONFIG_CHANGE, INT_USED_BUFFER, Reg, VirtioMmio
from vmkit.devices.virtio.rng import VirtioRng
from vmkit.machine.fdt import FdtNode

ACK, DRV, FOK, DOK = STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK, STATUS_DRIVER_OK


class Echo(VirtioDevice):
    """A test device: two queues; copies each chain's readable bytes into its
    writable ones.  `boom` makes the next handler call raise."""

    device_id = 42
    queue_sizes = (16, 4)
    features = 1 << 3

    def __init__(self):
        super().__init__()
        self.boom = None
        self.seen = []
        self.config = bytearray(b"\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc")

    def _maybe_boom(self, where):
        if self.boom == where:
            self.boom = None
            raise RuntimeError(f"boom in {where}")

    def config_bytes(self):
        self._maybe_boom("config")
        return bytes(self.config)

    def config_write(self, offset, data):
        self._maybe_boom("config_write")
        self.config[offset:offset + len(data)] = data

    def activate(self, features, queues):
        self._maybe_boom("activate")
        super().activate(features, queues)

    def notify(self, index):
        self._maybe_boom("notify")
        q = self.queues[index]
        while (chain := q.pop()) is not None:
            data = b"".join(bytes(v) for v in chain.readable)
            self.seen.append(data)
            n = 0
            for v in chain.writable:
                part = data[n:n + len(v)]
                v[:len(part)] = part
                n += len(part)
            q.push(chain, n)

    def reset(self):
        super().reset()
        self._maybe_boom("reset")


def echo_request(drv, q, payload=b"ping", qi=0):
    src = drv.ram.buf(payload)
    dst = drv.ram.buf(size=len(payload))
    q.add([(src, len(payload), False), (dst, len(payload), True)])
    drv.kick(qi)
    return dst


# --- identification and the empty slot --------------------------------------------------------
def test_identification():
    drv = Driver(Echo())
    assert drv.r32(Reg.MAGIC_VALUE) == 0x74726976
    assert drv.r32(Reg.VERSION) == 2
    assert drv.r32(Reg.DEVICE_ID) == 42
    assert drv.r32(Reg.VENDOR_ID) == 0x554D4551


def test_empty_slot_identification():
    dev = VirtioMmio(None)
    assert dev.read(0x000, 4) == 0x74726976     # "virt"
    assert dev.read(0x004, 4) == 2
    assert dev.read(0x008, 4) == 0              # no device: drivers skip the slot
    assert dev.read(0x00C, 4) == 0x554D4551     # "QEMU"


def test_empty_slot_reads_like_qemu_and_ignores_writes():
    dev = VirtioMmio(None)
    ident = {Reg.MAGIC_VALUE: 0x74726976, Reg.VERSION: 2, Reg.DEVICE_ID: 0, Reg.VENDOR_ID: 0x554D4551}
    for off in range(0, 0x200, 4):              # registers and configuration space
        dev.write(off, 4, 0xFFFFFFFF)
        assert dev.read(off, 4) == ident.get(off, 0), hex(off)
    for off, value in ident.items():            # unchanged by the writes
        assert dev.read(off, 4) == value, hex(off)
    assert dev.read(0x100, 1) == 0 and dev.read(0x1FC, 8) == 0   # config space
    assert dev.read(0x000, 2) == 0 and dev.read(0x002, 4) == 0   # bad width/alignment
    assert dev.save() == {} and dev.restore({}) is None
    dev.reset()


def test_a_device_needs_ram_and_irq():
    with pytest.raises(ValueError):
        VirtioMmio(Echo())


def test_dt_node():
    root = FdtNode("")
    plic = root.child("plic")
    node = Driver(Echo()).mmio.dt_node(root, plic, base=0x10008000, irq=8)
    assert node.name == "virtio_mmio@10008000"


# --- features ---------------------------------------------------------------------------------------
def test_offered_features_banked():
    drv = Driver(Echo())
    assert drv.device_features() == RING_FEATURES | (1 << 3)
    drv.w32(Reg.DEVICE_FEATURES_SEL, 2)
    assert drv.r32(Reg.DEVICE_FEATURES) == 0


@pytest.mark.parametrize("accept", [
    1 << 3,                                   # no VERSION_1: a legacy driver
    RING_FEATURES | (1 << 4),                 # a bit that was never offered
    RING_FEATURES | (1 << 40),
])
def test_features_ok_refused(accept):
    drv = Driver(Echo())
    assert not drv.negotiate(accept)
    assert drv.status == ACK | DRV
    # 3.1.1: the driver then gives up and must not go on to DRIVER_OK.
    drv.w32(Reg.STATUS, ACK | DRV | FOK | DOK)
    assert not drv.status & DOK


def test_features_beyond_bit_63_refused():
    drv = Driver(Echo())
    drv.w32(Reg.STATUS, ACK)
    drv.w32(Reg.STATUS, ACK | DRV)
    drv.w32(Reg.DRIVER_FEATURES_SEL, 1)
    drv.w32(Reg.DRIVER_FEATURES, F_VERSION_1 >> 32)
    drv.w32(Reg.DRIVER_FEATURES_SEL, 2)
    drv.w32(Reg.DRIVER_FEATURES, 1)
    drv.w32(Reg.STATUS, ACK | DRV | FOK)
    assert not drv.status & FOK


def test_features_fixed_after_features_ok():
    drv = Driver(Echo())
    assert drv.negotiate(F_VERSION_1)
    drv.w32(Reg.DRIVER_FEATURES_SEL, 0)
    drv.w32(Reg.DRIVER_FEATURES, 1 << 3)
    assert drv.mmio.driver_features == F_VERSION_1


def test_minimal_features_work_without_ring_extensions():
    drv = Driver(Echo())
    drv.start(F_VERSION_1)
    dst = echo_request(drv, drv.queues[0])
    assert drv.ram.read(dst, 4) == b"ping"
    assert drv.queues[0].collect() == [(0, 4)]


# --- status state machine -------------------------------------------------------------------------
@pytest.mark.parametrize("sequence, expected", [
    ([DRV], 0),                               # DRIVER before ACKNOWLEDGE
    ([ACK, ACK | FOK], ACK),                  # FEATURES_OK before DRIVER
    ([ACK, ACK | DRV, ACK | DRV | DOK], ACK | DRV),   # DRIVER_OK before FEATURES_OK
    ([ACK, ACK | DRV, ACK], ACK | DRV),       # clearing a bit
    ([ACK, ACK | DRV, DRV], ACK | DRV),
    ([ACK, ACK | 0x10], ACK),                 # a reserved bit
    ([ACK, ACK | STATUS_DEVICE_NEEDS_RESET], ACK),   # the device's bit
    ([ACK, ACK | DRV, ACK | DRV | STATUS_FAILED], ACK | DRV | STATUS_FAILED),
])
def test_status_order(sequence, expected):
    drv = Driver(Echo())
    for value in sequence:
        drv.w32(Reg.STATUS, value)
    assert drv.status == expected


def test_status_all_at_once_in_order_is_accepted():
    drv = Driver(Echo())
    drv.w32(Reg.DRIVER_FEATURES_SEL, 1)
    drv.w32(Reg.DRIVER_FEATURES, 1)
    drv.w32(Reg.STATUS, ACK | DRV | FOK | DOK)
    assert drv.status == ACK | DRV | FOK | DOK
    assert drv.device.active


def test_writing_zero_resets():
    drv = Driver(Echo())
    drv.start()
    echo_request(drv, drv.queues[0])
    assert drv.irq_level
    drv.w32(Reg.STATUS, 0)
    assert drv.status == 0 and not drv.irq_level and not drv.device.active
    assert drv.r32(Reg.INTERRUPT_STATUS) == 0
    for i in range(2):
        drv.w32(Reg.QUEUE_SEL, i)
        assert drv.r32(Reg.QUEUE_READY) == 0
    assert drv.mmio.queues[0].desc_addr == 0


def test_failed_stops_the_device():
    drv = Driver(Echo())
    drv.start()
    drv.w32(Reg.STATUS, drv.status | STATUS_FAILED)
    dst = echo_request(drv, drv.queues[0])
    assert drv.ram.read(dst, 4) == bytes(4)


def test_notify_before_driver_ok_is_ignored_then_served_at_driver_ok():
    drv = Driver(Echo())
    assert drv.negotiate()
    q = drv.setup_queue(0)
    dst = echo_request(drv, q)
    assert drv.ram.read(dst, 4) == bytes(4) and drv.device.seen == []
    drv.w32(Reg.STATUS, drv.status | DOK)
    assert drv.ram.read(dst, 4) == b"ping"
    assert q.collect() == [(0, 4)]


# --- queue registers --------------------------------------------------------------------------------
def test_queue_num_max_and_missing_queues():
    drv = Driver(Echo())
    drv.w32(Reg.QUEUE_SEL, 0)
    assert drv.r32(Reg.QUEUE_NUM_MAX) == 16
    drv.w32(Reg.QUEUE_SEL, 1)
    assert drv.r32(Reg.QUEUE_NUM_MAX) == 4
    drv.w32(Reg.QUEUE_SEL, 2)
    assert drv.r32(Reg.QUEUE_NUM_MAX) == 0       # 4.2.2: no such queue
    drv.w32(Reg.QUEUE_NUM, 4)
    drv.w32(Reg.QUEUE_READY, 1)
    assert drv.r32(Reg.QUEUE_READY) == 0
    drv.w32(Reg.QUEUE_NOTIFY, 2)
    drv.w32(Reg.QUEUE_NOTIFY, 0xFFFF)


def _try_queue(drv, num=8, desc=None, avail=None, used=None, index=0):
    drv.w32(Reg.QUEUE_SEL, index)
    drv.w32(Reg.QUEUE_NUM, num)
    base = RAM_BASE + 0x10000
    for reg, addr in ((Reg.QUEUE_DESC_LOW, desc if desc is not None else base),
                      (Reg.QUEUE_DRIVER_LOW, avail if avail is not None else base + 0x1000),
                      (Reg.QUEUE_DEVICE_LOW, used if used is not None else base + 0x2000)):
        drv.w32(reg, addr & 0xFFFFFFFF)
        drv.w32(reg + 4, addr >> 32)
    drv.w32(Reg.QUEUE_READY, 1)
    return drv.r32(Reg.QUEUE_READY)


@pytest.mark.parametrize("kwargs", [
    {"num": 0}, {"num": 3}, {"num": 12}, {"num": 32},          # size 0, not 2^n, > max (16)
    {"desc": RAM_BASE + 0x10008},                               # misaligned descriptor table
    {"avail": RAM_BASE + 0x11001},                              # misaligned available ring
    {"used": RAM_BASE + 0x12002},                               # misaligned used ring
    {"desc": 0x10001000},                                       # in MMIO space
    {"used": RAM_BASE + (1 << 20) - 8},                         # runs past the end of RAM
    {"avail": 0xFFFF_FFFF_FFFF_FFF0},                           # wraps 2^64
    {"desc": RAM_BASE - 16},
])
def test_queue_activation_refused(kwargs):
    drv = Driver(Echo())
    assert drv.negotiate()
    assert _try_queue(drv, **kwargs) == 0
    assert not drv.mmio.queues[0].ready


def test_queue_activation_accepted_with_good_registers():
    drv = Driver(Echo())
    assert drv.negotiate()
    assert _try_queue(drv, num=16) == 1


def test_queue_registers_ignored_while_ready():
    drv = Driver(Echo())
    drv.start()
    q = drv.mmio.queues[0]
    before = (q.num, q.desc_addr, q.driver_addr, q.device_addr)
    drv.w32(Reg.QUEUE_SEL, 0)
    drv.w32(Reg.QUEUE_NUM, 2)
    for reg in (Reg.QUEUE_DESC_LOW, Reg.QUEUE_DESC_HIGH, Reg.QUEUE_DRIVER_LOW, Reg.QUEUE_DRIVER_HIGH,
                Reg.QUEUE_DEVICE_LOW, Reg.QUEUE_DEVICE_HIGH):
        drv.w32(reg, 0x1234)
    assert (q.num, q.desc_addr, q.driver_addr, q.device_addr) == before
    dst = echo_request(drv, drv.queues[0])
    assert drv.ram.read(dst, 4) == b"ping"


def test_queue_ready_zero_disables_and_allows_setup_again():
    drv = Driver(Echo())
    drv.start()
    drv.w32(Reg.QUEUE_SEL, 0)
    drv.w32(Reg.QUEUE_READY, 0)
    assert drv.r32(Reg.QUEUE_READY) == 0         # Linux's vm_del_vq checks this
    q = drv.setup_queue(0, 8)
    dst = echo_request(drv, q)
    assert drv.ram.read(dst, 4) == b"ping"


# --- register access widths -------------------------------------------------------------------------
@pytest.mark.parametrize("size, offset", [(1, Reg.STATUS), (2, Reg.STATUS), (8, Reg.STATUS),
                                          (4, Reg.STATUS + 1), (4, Reg.STATUS + 2), (2, Reg.MAGIC_VALUE)])
def test_odd_width_access_ignored(size, offset):
    drv = Driver(Echo())
    drv.w32(Reg.STATUS, ACK)
    assert drv.mmio.read(offset, size) == 0
    drv.mmio.write(offset, size, 0)
    drv.mmio.write(offset, size, ACK | DRV)
    assert drv.status == ACK


def test_write_only_and_unknown_registers():
    drv = Driver(Echo())
    for off in (Reg.QUEUE_NUM, Reg.QUEUE_DESC_LOW, Reg.QUEUE_NOTIFY, Reg.INTERRUPT_ACK, 0x028, 0x040, 0x0F0):
        assert drv.r32(off) == 0
    for off in (Reg.MAGIC_VALUE, Reg.VERSION, Reg.DEVICE_ID, Reg.QUEUE_NUM_MAX, Reg.INTERRUPT_STATUS,
                0x028, 0x040, 0x0F0, Reg.QUEUE_RESET, Reg.CONFIG_GENERATION):
        drv.w32(off, 0xFFFFFFFF)
    assert drv.r32(Reg.MAGIC_VALUE) == 0x74726976 and drv.r32(Reg.DEVICE_ID) == 42


def test_shared_memory_regions_absent():
    drv = Driver(Echo())
    drv.w32(Reg.SHM_SEL, 0)
    assert drv.r32(Reg.SHM_LEN_LOW) == 0xFFFFFFFF and drv.r32(Reg.SHM_LEN_HIGH) == 0xFFFFFFFF
    assert drv.r32(Reg.SHM_BASE_LOW) == 0 and drv.r32(Reg.SHM_BASE_HIGH) == 0


# --- configuration space ----------------------------------------------------------------------------
def test_config_space_widths():
    drv = Driver(Echo())
    assert drv.config(0, 1) == 0x11 and drv.config(1, 1) == 0x22
    assert drv.config(2, 2) == 0x4433
    assert drv.config(4, 4) == 0x88776655
    assert drv.config(0, 8) == 0x8877665544332211
    assert drv.config(1, 2) == 0 and drv.config(2, 4) == 0      # misaligned
    assert drv.config(12, 1) == 0 and drv.config(8, 8) == 0     # past the structure
    assert drv.config(0, 3) == 0
    drv.mmio.write(Reg.CONFIG + 4, 2, 0xBEEF)
    assert drv.config(4, 2) == 0xBEEF
    drv.mmio.write(Reg.CONFIG + 11, 2, 0xFFFF)                  # past the end: ignored
    assert drv.config(8, 4) == 0xCCBBAA99


def test_config_change_bumps_generation_and_interrupts():
    drv = Driver(Echo())
    drv.start()
    gen = drv.r32(Reg.CONFIG_GENERATION)
    drv.device.config_changed()
    assert drv.r32(Reg.CONFIG_GENERATION) == gen + 1
    assert drv.irq_level and drv.ack_interrupt() == INT_CONFIG_CHANGE
    assert not drv.irq_level


# --- interrupts -------------------------------------------------------------------------------------------
def test_interrupt_is_level_triggered():
    drv = Driver(Echo())
    drv.start(F_VERSION_1)
    echo_request(drv, drv.queues[0])
    assert drv.irq_level and drv.r32(Reg.INTERRUPT_STATUS) == INT_USED_BUFFER
    drv.w32(Reg.INTERRUPT_ACK, INT_CONFIG_CHANGE)                # acking another bit: still high
    assert drv.irq_level
    drv.w32(Reg.INTERRUPT_ACK, INT_USED_BUFFER)
    assert not drv.irq_level and drv.r32(Reg.INTERRUPT_STATUS) == 0


# --- device exceptions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["notify", "config", "config_write"])
def test_device_exception_sets_needs_reset_and_transport_survives(where, caplog):
    drv = Driver(Echo())
    drv.start()
    drv.device.boom = where
    if where == "notify":
        echo_request(drv, drv.queues[0])
    elif where == "config":
        assert drv.config(0, 4) == 0
    else:
        drv.mmio.write(Reg.CONFIG, 4, 1)
    assert drv.status & STATUS_DEVICE_NEEDS_RESET
    assert drv.mmio.device_errors == 1
    assert drv.irq_level and drv.r32(Reg.INTERRUPT_STATUS) & INT_CONFIG_CHANGE
    assert "boom" in caplog.text
    # Needs-reset: the queues are left alone until the driver resets.
    dst = echo_request(drv, drv.queues[0], b"more")
    assert drv.ram.read(dst, 4) == bytes(4)
    # Linux writes back what it read: NEEDS_RESET must not confuse the state machine.
    drv.w32(Reg.STATUS, drv.status)
    assert drv.status & STATUS_DEVICE_NEEDS_RESET
    # A reset brings it back.
    drv.start()
    assert not drv.status & STATUS_DEVICE_NEEDS_RESET
    dst = echo_request(drv, drv.queues[0], b"back")
    assert drv.ram.read(dst, 4) == b"back"


def test_exception_in_activate_and_reset():
    drv = Driver(Echo())
    drv.device.boom = "activate"
    assert drv.negotiate()
    drv.setup_queue(0)
    drv.w32(Reg.STATUS, drv.status | DOK)
    assert drv.status & STATUS_DEVICE_NEEDS_RESET
    drv.device.boom = "reset"
    drv.w32(Reg.STATUS, 0)
    assert drv.status == 0       # a driver waiting for 0 after a reset gets it
    drv.start()
    assert drv.ram.read(echo_request(drv, drv.queues[0]), 4) == b"ping"


def test_one_broken_device_leaves_another_working():
    a, b = Driver(Echo()), Driver(Echo())
    a.start()
    b.start()
    a.device.boom = "notify"
    echo_request(a, a.queues[0])
    assert a.status & STATUS_DEVICE_NEEDS_RESET
    assert b.ram.read(echo_request(b, b.queues[0]), 4) == b"ping"


# --- reset in the middle of I/O ---------------------------------------------------------------------------
def test_reset_in_the_middle_of_io_1000_times():
    drv = Driver(VirtioRng(source=lambda n: b"\xAB" * n), ram_size=4 << 20)
    for i in range(1000):
        drv.ram.next = RAM_BASE + 0x1000 + (i % 7) * 0x4000    # rings move about
        drv.start(num=8 if i % 2 else 4)
        q = drv.queues[0]
        bufs = [drv.ram.buf(size=16) for _ in range(3)]
        for b in bufs:
            q.add([(b, 16, True)])
        if i % 3:
            drv.kick()
        # Reset with requests still in the ring (and interrupts pending).
        drv.w32(Reg.STATUS, 0)
        mq = drv.mmio.queues[0]
        assert (mq.ready, mq.desc_addr, mq.driver_addr, mq.device_addr) == (False, 0, 0, 0)
        assert (mq.last_avail_idx, mq.used_idx, mq.in_flight) == (0, 0, 0)
        assert not drv.irq_level and drv.status == 0
    # After all that, a fresh setup works from index 0.
    drv.ram.array[:] = 0
    drv.ram.next = RAM_BASE + 0x1000
    drv.start()
    buf = drv.ram.buf(size=8)
    drv.queues[0].add([(buf, 8, True)])
    drv.kick()
    assert drv.queues[0].collect() == [(0, 8)] and drv.ram.read(buf, 8) == b"\xAB" * 8


# --- saved state ----------------------------------------------------------------------------------------------
def test_save_restore_round_trip():
    drv = Driver(Echo())
    drv.start()
    q = drv.queues[0]
    echo_request(drv, q, b"one")
    state = drv.mmio.save()
    # A second transport over the same RAM picks up where the first stopped.
    other = VirtioMmio(Echo(), drv.ram.array, RAM_BASE, lambda level: None)
    other.restore(state)
    assert other.save() == state and other.device.active
    drv.mmio = other
    dst = echo_request(drv, q, b"two")
    assert drv.ram.read(dst, 3) == b"two"
    assert [n for _, n in q.collect()] == [3, 3]


@pytest.mark.parametrize("mutate", [
    lambda s: s.update(status=0x10),
    lambda s: s.update(status="x"),
    lambda s: s.update(queues=[]),
    lambda s: s["queues"][0].update(num=3, ready=True),
    lambda s: s["queues"][0].update(desc=0x1000),
    lambda s: s["queues"][0].update(last_avail=1 << 16),
    lambda s: s.update(driver_features=1 << 50),
    lambda s: s.pop("device"),
    lambda s: s.update(interrupt_status=4),
])
def test_restore_refuses_corrupt_state(mutate):
    drv = Driver(Echo())
    drv.start()
    before = drv.mmio.save()
    state = drv.mmio.save()
    mutate(state)
    with pytest.raises(DeviceStateError):
        drv.mmio.restore(state)
    assert drv.mmio.save() == before


def test_restore_drives_the_irq_line():
    drv = Driver(Echo())
    drv.start()
    echo_request(drv, drv.queues[0])
    state = drv.mmio.save()
    levels = []
    other = VirtioMmio(Echo(), drv.ram.array, RAM_BASE, levels.append)
    other.restore(state)
    assert levels[-1] is True


def test_config_write_struct_roundtrip():
    # The config write path passes exactly `size` little-endian bytes.
    drv = Driver(Echo())
    drv.mmio.write(Reg.CONFIG, 8, 0x0102030405060708)
    assert bytes(drv.device.config[:8]) == struct.pack("<Q", 0x0102030405060708)
