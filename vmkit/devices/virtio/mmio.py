"""The virtio-mmio transport, version 2 (virtio 1.2, 4.2 "Virtio Over MMIO").

One class for every slot of the board: `VirtioMmio(device, ram, ram_base, irq)`
puts a `VirtioDevice` (block, entropy, console, ...) behind the registers of
4.2.2, and `VirtioMmio(None)` is an empty slot that answers like QEMU's
(magic, version 2, DeviceID 0, vendor "QEMU"; everything else reads 0 and
writes are ignored), which a driver must skip (4.2.3.1.1).  Only the
non-legacy interface is offered: Version reads 2, and the driver must accept
VIRTIO_F_VERSION_1.

The transport owns the guest-facing protocol and checks it:
- the device status state machine (2.1, 3.1.1): bits are only ever added,
  in order (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK), FEATURES_OK sticks
  only when the accepted features are a subset of the offered ones and
  include VERSION_1, writing 0 resets the device; FAILED may be set at any
  time; DEVICE_NEEDS_RESET is the device's to set, never the driver's;
- the queue registers (4.2.2): only while the selected queue is not ready
  (4.2.3.2); QueueReady := 1 is refused for a size that is 0, not a power
  of two or above QueueNumMax, or rings that are misaligned or not in RAM;
- register accesses: 32-bit and aligned below 0x100 (4.2.2.2); the
  configuration space at 0x100 takes 8-, 16-, 32- and 64-bit naturally
  aligned accesses inside the device's structure.
A bad access is logged as a guest error and ignored (reads give 0).

The interrupt line is level-triggered: high while InterruptStatus != 0
(bit 0: used buffer notification, bit 1: configuration change; 4.2.2).
Anything a device raises while handling a notification, an activation, a
configuration access or host-side work is caught here: logged, the device
is marked DEVICE_NEEDS_RESET and, if DRIVER_OK was set, a configuration
change interrupt is sent (2.1.2).  The device then ignores its queues until
the driver resets it; the VM and the other devices keep running.

Registers of the shared memory regions (SHMSel and friends) describe no
region: SHMLen reads as -1, "no such region" (4.2.2), as QEMU does.
"""

import logging
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any

import numpy as np

from vmkit.devices.device import DeviceStateError, guest_error, state_int
from vmkit.devices.virtio.device import (
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    F_VERSION_1,
    STATUS_ACKNOWLEDGE,
    STATUS_DEVICE_NEEDS_RESET,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FAILED,
    STATUS_FEATURES_OK,
    VirtioDevice,
    VirtioRequestError,
)
from vmkit.devices.virtio.queue import GuestRam, Virtqueue, VirtqueueError, check_sizes
from vmkit.machine.fdt import FdtNode
from vmkit.machine.memmap import RAM_BASE, VIRTIO_MMIO_SIZE

log = logging.getLogger(__name__)


class Reg(IntEnum):
    """Register offsets (4.2.2, table "MMIO Device Register Layout")."""

    MAGIC_VALUE = 0x000
    VERSION = 0x004
    DEVICE_ID = 0x008
    VENDOR_ID = 0x00C
    DEVICE_FEATURES = 0x010
    DEVICE_FEATURES_SEL = 0x014
    DRIVER_FEATURES = 0x020
    DRIVER_FEATURES_SEL = 0x024
    QUEUE_SEL = 0x030
    QUEUE_NUM_MAX = 0x034
    QUEUE_NUM = 0x038
    QUEUE_READY = 0x044
    QUEUE_NOTIFY = 0x050
    INTERRUPT_STATUS = 0x060
    INTERRUPT_ACK = 0x064
    STATUS = 0x070
    QUEUE_DESC_LOW = 0x080
    QUEUE_DESC_HIGH = 0x084
    QUEUE_DRIVER_LOW = 0x090
    QUEUE_DRIVER_HIGH = 0x094
    QUEUE_DEVICE_LOW = 0x0A0
    QUEUE_DEVICE_HIGH = 0x0A4
    SHM_SEL = 0x0AC
    SHM_LEN_LOW = 0x0B0
    SHM_LEN_HIGH = 0x0B4
    SHM_BASE_LOW = 0x0B8
    SHM_BASE_HIGH = 0x0BC
    QUEUE_RESET = 0x0C0
    CONFIG_GENERATION = 0x0FC
    CONFIG = 0x100  # device-specific configuration space starts here


VIRTIO_MMIO_MAGIC = 0x7472_6976   # "virt", little-endian
VIRTIO_MMIO_VERSION = 2           # the non-legacy interface
VIRTIO_VENDOR_QEMU = 0x554D_4551  # "QEMU", what QEMU reports

# InterruptStatus bits (4.2.2)
INT_USED_BUFFER = 1
INT_CONFIG_CHANGE = 2

# What the transport and the ring implementation add to every device's offer.
TRANSPORT_FEATURES = F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX

_DRIVER_STATUS_BITS = (STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
                       | STATUS_FAILED)
# Each status bit and the one the driver must have set before it (3.1.1).
_STATUS_ORDER = ((STATUS_DRIVER, STATUS_ACKNOWLEDGE), (STATUS_FEATURES_OK, STATUS_DRIVER),
                 (STATUS_DRIVER_OK, STATUS_FEATURES_OK))
_QUEUE_ADDR_REGS = {
    Reg.QUEUE_DESC_LOW: ("desc_addr", 0), Reg.QUEUE_DESC_HIGH: ("desc_addr", 32),
    Reg.QUEUE_DRIVER_LOW: ("driver_addr", 0), Reg.QUEUE_DRIVER_HIGH: ("driver_addr", 32),
    Reg.QUEUE_DEVICE_LOW: ("device_addr", 0), Reg.QUEUE_DEVICE_HIGH: ("device_addr", 32),
}
# Full tracebacks logged per transport for device bugs; later ones are counted.
_TRACEBACK_LIMIT = 8
_MASK32 = 0xFFFF_FFFF


class VirtioMmio:
    """A virtio-mmio slot.  `device` None is an empty slot (then `ram` and
    `irq` are not needed); otherwise `ram` is guest RAM (a uint8 array at
    guest-physical `ram_base`) and `irq(level)` drives the slot's PLIC line."""

    def __init__(self, device: VirtioDevice | None, ram: np.ndarray | None = None,
                 ram_base: int = RAM_BASE, irq: Callable[[bool], None] | None = None,
                 on_write: Callable[[int, int], None] | None = None) -> None:
        self.device = device
        self.queues: list[Virtqueue] = []
        self.device_errors = 0      # exceptions raised by the device (needs-reset events)
        self._irq = irq or (lambda level: None)
        self._irq_level = False
        self.config_generation = 0
        if device is not None:
            if ram is None or irq is None:
                raise ValueError("a virtio-mmio transport with a device needs guest RAM and an irq line")
            check_sizes(device.queue_sizes)
            self._ram = GuestRam(ram, ram_base, on_write)
            self.queues = [Virtqueue(self._ram, i, n) for i, n in enumerate(device.queue_sizes)]
            self.device_features = (device.features | TRANSPORT_FEATURES) & ((1 << 64) - 1)
            device.bind(self.run_guarded, self._config_changed)
        else:
            self.device_features = 0
        self._reset_registers()

    # --- bus side ---------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset >= Reg.CONFIG:
            return self._config_read(offset - Reg.CONFIG, size)
        if size != 4 or offset % 4:
            # 4.2.2.2: registers take 32-bit aligned accesses only.
            guest_error(log, "virtio-mmio: %d-byte read at %#x", size, offset)
            return 0
        if self.device is None:
            match offset:
                case Reg.MAGIC_VALUE:
                    return VIRTIO_MMIO_MAGIC
                case Reg.VERSION:
                    return VIRTIO_MMIO_VERSION
                case Reg.VENDOR_ID:
                    return VIRTIO_VENDOR_QEMU
                case _:
                    return 0  # DeviceID 0: no device, the driver stops here
        match offset:
            case Reg.MAGIC_VALUE:
                return VIRTIO_MMIO_MAGIC
            case Reg.VERSION:
                return VIRTIO_MMIO_VERSION
            case Reg.DEVICE_ID:
                return self.device.device_id
            case Reg.VENDOR_ID:
                return VIRTIO_VENDOR_QEMU
            case Reg.DEVICE_FEATURES:
                sel = self.device_features_sel
                return (self.device_features >> (32 * sel)) & _MASK32 if sel < 2 else 0
            case Reg.QUEUE_NUM_MAX:
                q = self._selected_queue()
                return q.num_max if q is not None else 0   # 0: no such queue
            case Reg.QUEUE_READY:
                q = self._selected_queue()
                return int(q is not None and q.ready)
            case Reg.INTERRUPT_STATUS:
                return self.interrupt_status
            case Reg.STATUS:
                return self.status
            case Reg.SHM_LEN_LOW | Reg.SHM_LEN_HIGH:
                return _MASK32  # length -1: no shared memory region with this id
            case Reg.SHM_BASE_LOW | Reg.SHM_BASE_HIGH:
                return 0
            case Reg.CONFIG_GENERATION:
                return self.config_generation & _MASK32
            case _:
                guest_error(log, "virtio-mmio: read of write-only or unknown register %#x", offset)
                return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if self.device is None:
            guest_error(log, "virtio-mmio (empty): write %#x at %#x ignored", value, offset)
            return
        if offset >= Reg.CONFIG:
            self._config_write(offset - Reg.CONFIG, size, value)
            return
        if size != 4 or offset % 4:
            guest_error(log, "virtio-mmio: %d-byte write of %#x at %#x ignored", size, value, offset)
            return
        value &= _MASK32
        match offset:
            case Reg.DEVICE_FEATURES_SEL:
                self.device_features_sel = value
            case Reg.DRIVER_FEATURES:
                self._write_driver_features(value)
            case Reg.DRIVER_FEATURES_SEL:
                self.driver_features_sel = value
            case Reg.QUEUE_SEL:
                self.queue_sel = value
            case Reg.QUEUE_NUM:
                q = self._queue_for_setup("QueueNum")
                if q is not None:
                    q.num = value  # checked when the queue is made ready
            case Reg.QUEUE_READY:
                self._write_queue_ready(value)
            case Reg.QUEUE_NOTIFY:
                self._queue_notify(value)
            case Reg.INTERRUPT_ACK:
                self.interrupt_status &= ~value
                self._update_irq()
            case Reg.STATUS:
                self._write_status(value)
            case offset if offset in _QUEUE_ADDR_REGS:
                q = self._queue_for_setup(Reg(offset).name)
                if q is not None:
                    name, shift = _QUEUE_ADDR_REGS[offset]
                    old = getattr(q, name)
                    setattr(q, name, (old & ~(_MASK32 << shift)) | (value << shift))
            case Reg.SHM_SEL:
                pass  # no shared memory regions: every id reads back as absent
            case _:
                guest_error(log, "virtio-mmio: write %#x to read-only or unknown register %#x",
                            value, offset)

    # --- features -----------------------------------------------------------------------------
    def _write_driver_features(self, value: int) -> None:
        if self.status & STATUS_FEATURES_OK:
            # 3.1.1: features are fixed once FEATURES_OK is set.
            guest_error(log, "virtio-mmio: DriverFeatures written after FEATURES_OK, ignored")
            return
        sel = self.driver_features_sel
        if sel < 2:
            shift = 32 * sel
            self.driver_features = (self.driver_features & ~(_MASK32 << shift)) | (value << shift)
        elif value:
            # Bits beyond 63 are never offered, so accepting one fails FEATURES_OK.
            self._driver_features_high = True

    def _features_acceptable(self) -> str | None:
        accepted = self.driver_features
        if self._driver_features_high or accepted & ~self.device_features:
            return f"driver accepted features {accepted:#x} that were not offered ({self.device_features:#x})"
        if not accepted & F_VERSION_1:
            return "driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)"
        try:
            reason = self.device.features_error(accepted)
        except Exception as exc:  # noqa: BLE001
            self._device_failed(exc)
            return "device failed to check the features"
        return reason

    # --- status (2.1, 3.1.1) ----------------------------------------------------------------------
    def _write_status(self, value: int) -> None:
        value &= 0xFF
        if value == 0:
            self.reset()
            return
        old = self.status
        new = value & _DRIVER_STATUS_BITS
        if value & ~(_DRIVER_STATUS_BITS | STATUS_DEVICE_NEEDS_RESET):
            guest_error(log, "virtio-mmio: status %#x sets reserved bits, ignored", value)
            return
        if old & _DRIVER_STATUS_BITS & ~new:
            # 2.1.1: the driver must not clear a status bit (only a reset does).
            guest_error(log, "virtio-mmio: status %#x clears bits of %#x, ignored", value, old)
            return
        for bit, needs in _STATUS_ORDER:
            if new & bit and not new & needs:
                guest_error(log, "virtio-mmio: status %#x sets bits out of order, ignored", value)
                return
        added = new & ~old
        if added & STATUS_FEATURES_OK:
            reason = self._features_acceptable()
            if reason is not None:
                # 3.1.1 step 6: the driver re-reads Status and sees FEATURES_OK unset.
                guest_error(log, "virtio-mmio: FEATURES_OK refused: %s", reason)
                new &= ~(STATUS_FEATURES_OK | STATUS_DRIVER_OK)
                added &= new
        self.status = new | (old & STATUS_DEVICE_NEEDS_RESET)
        if added & STATUS_DRIVER_OK and not self.status & (STATUS_DEVICE_NEEDS_RESET | STATUS_FAILED):
            self._activate()

    def _activate(self) -> None:
        features = self.driver_features
        for q in self.queues:
            q.set_features(features, F_INDIRECT_DESC, F_EVENT_IDX)
        self.run_guarded(lambda: self.device.activate(features, list(self.queues)))
        # Buffers made available before DRIVER_OK were not consumed (2.1.2):
        # look at every ready queue once now.
        for q in self.queues:
            if q.ready and self._live():
                self.run_guarded(lambda i=q.index: self.device.notify(i))

    def _live(self) -> bool:
        """The device may consume buffers and send notifications (2.1.2)."""
        return (self.status & (STATUS_DRIVER_OK | STATUS_DEVICE_NEEDS_RESET | STATUS_FAILED)
                == STATUS_DRIVER_OK)

    def reset(self) -> None:
        """Device reset: writing 0 to Status, or a board reset (2.1.2, 4.2.3.1)."""
        for q in self.queues:
            q.reset()
        if self.device is not None:
            try:
                self.device.reset()
            except Exception as exc:  # noqa: BLE001
                # Not needs-reset: the driver is waiting for Status to read 0.
                self._log_device_exception(exc)
        self._reset_registers()

    def _reset_registers(self) -> None:
        self.status = 0
        self.device_features_sel = 0
        self.driver_features = 0
        self.driver_features_sel = 0
        self._driver_features_high = False
        self.queue_sel = 0
        self.interrupt_status = 0
        self._update_irq()

    # --- queues -------------------------------------------------------------------------------------
    def _selected_queue(self) -> Virtqueue | None:
        return self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None

    def _queue_for_setup(self, reg: str) -> Virtqueue | None:
        q = self._selected_queue()
        if q is None:
            guest_error(log, "virtio-mmio: %s for queue %d, which does not exist", reg, self.queue_sel)
            return None
        if q.ready:
            # 4.2.3.2: a queue is configured only while QueueReady reads 0.
            guest_error(log, "virtio-mmio: %s written while queue %d is ready, ignored", reg, q.index)
            return None
        return q

    def _write_queue_ready(self, value: int) -> None:
        q = self._selected_queue()
        if q is None:
            guest_error(log, "virtio-mmio: QueueReady for queue %d, which does not exist", self.queue_sel)
            return
        if value == 0:
            q.disable()
            return
        if value != 1:
            guest_error(log, "virtio-mmio: QueueReady := %#x (only 0 or 1), ignored", value)
            return
        if q.ready:
            return
        err = q.enable()
        if err is not None:
            guest_error(log, "virtio-mmio: queue %d not activated: %s", q.index, err)
            return
        q.set_features(self.driver_features, F_INDIRECT_DESC, F_EVENT_IDX)

    def _queue_notify(self, value: int) -> None:
        index = value & 0xFFFF
        if index >= len(self.queues):
            guest_error(log, "virtio-mmio: notify for queue %d, which does not exist", index)
            return
        if not self._live():
            guest_error(log, "virtio-mmio: notify for queue %d while status is %#x, ignored",
                        index, self.status)
            return
        if not self.queues[index].ready:
            guest_error(log, "virtio-mmio: notify for queue %d, which is not ready", index)
            return
        self.run_guarded(lambda: self.device.notify(index))

    # --- device calls and errors ----------------------------------------------------------------------
    def run_guarded(self, fn: Callable[[], None]) -> None:
        """Run device work: an exception sets DEVICE_NEEDS_RESET instead of
        escaping; then send the used-buffer interrupts the queues ask for."""
        try:
            if not self.status & (STATUS_DEVICE_NEEDS_RESET | STATUS_FAILED):
                fn()
        except Exception as exc:  # noqa: BLE001 - a device must never take the VM down
            self._device_failed(exc)
        for q in self.queues:
            if q.should_interrupt():
                self.interrupt_status |= INT_USED_BUFFER
        self._update_irq()

    def _device_failed(self, exc: BaseException) -> None:
        self.device_errors += 1
        if isinstance(exc, (VirtqueueError, VirtioRequestError)):
            guest_error(log, "virtio-mmio: device %d needs reset: %s", self.device.device_id, exc)
        else:
            self._log_device_exception(exc)
        self.set_needs_reset()

    def _log_device_exception(self, exc: BaseException) -> None:
        if self.device_errors <= _TRACEBACK_LIMIT:
            log.error("virtio-mmio: device %d raised %s: %s; it needs a reset",
                      self.device.device_id, type(exc).__name__, exc, exc_info=exc)
        else:
            log.debug("virtio-mmio: device %d raised %s: %s", self.device.device_id, type(exc).__name__, exc)

    def set_needs_reset(self) -> None:
        """2.1.2: enter DEVICE_NEEDS_RESET; tell a live driver with a
        configuration change notification."""
        if self.status & STATUS_DEVICE_NEEDS_RESET:
            return
        self.status |= STATUS_DEVICE_NEEDS_RESET
        if self.status & STATUS_DRIVER_OK:
            self.interrupt_status |= INT_CONFIG_CHANGE
            self._update_irq()

    def _config_changed(self) -> None:
        self.config_generation = (self.config_generation + 1) & _MASK32
        if self.status & STATUS_DRIVER_OK:
            self.interrupt_status |= INT_CONFIG_CHANGE
            self._update_irq()

    def _update_irq(self) -> None:
        level = self.interrupt_status != 0
        if level != self._irq_level:
            self._irq_level = level
            self._irq(level)

    # --- configuration space -------------------------------------------------------------------------
    def _config_access_ok(self, offset: int, size: int, length: int, what: str) -> bool:
        if size not in (1, 2, 4, 8) or offset % size or offset + size > length:
            guest_error(log, "virtio-mmio: config %s of %d bytes at %#x (structure is %d bytes)",
                        what, size, offset, length)
            return False
        return True

    def _config_bytes(self) -> bytes:
        try:
            return bytes(self.device.config_bytes())
        except Exception as exc:  # noqa: BLE001
            self._device_failed(exc)
            return b""

    def _config_read(self, offset: int, size: int) -> int:
        if self.device is None:
            return 0
        data = self._config_bytes()
        if not self._config_access_ok(offset, size, len(data), "read"):
            return 0
        return int.from_bytes(data[offset:offset + size], "little")

    def _config_write(self, offset: int, size: int, value: int) -> None:
        if not self._config_access_ok(offset, size, len(self._config_bytes()), "write"):
            return
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        self.run_guarded(lambda: self.device.config_write(offset, data))

    # --- saved state -------------------------------------------------------------------------------------
    def save(self) -> dict[str, Any]:
        if self.device is None:
            return {}
        return {
            "status": self.status, "device_features_sel": self.device_features_sel,
            "driver_features": self.driver_features, "driver_features_sel": self.driver_features_sel,
            "driver_features_high": self._driver_features_high, "queue_sel": self.queue_sel,
            "interrupt_status": self.interrupt_status, "config_generation": self.config_generation,
            "queues": [q.save() for q in self.queues],
            "device": self.device.save(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a `save()` dict.  Everything is checked first: a corrupt state
        raises DeviceStateError and leaves the slot unchanged."""
        if self.device is None:
            return
        status = state_int(state, "status", 0, 0xFF)
        if status & ~(_DRIVER_STATUS_BITS | STATUS_DEVICE_NEEDS_RESET):
            raise DeviceStateError(f"saved virtio status {status:#x} has reserved bits set")
        dev_sel = state_int(state, "device_features_sel", 0, _MASK32)
        drv_features = state_int(state, "driver_features", 0, (1 << 64) - 1)
        drv_sel = state_int(state, "driver_features_sel", 0, _MASK32)
        drv_high = bool(state_int(state, "driver_features_high", 0, 1))
        queue_sel = state_int(state, "queue_sel", 0, _MASK32)
        int_status = state_int(state, "interrupt_status", 0, INT_USED_BUFFER | INT_CONFIG_CHANGE)
        generation = state_int(state, "config_generation", 0, _MASK32)
        if status & STATUS_FEATURES_OK and (drv_high or drv_features & ~self.device_features):
            raise DeviceStateError("saved virtio driver features were never offered by this device")
        saved_queues = state.get("queues")
        if not isinstance(saved_queues, (list, tuple)) or len(saved_queues) != len(self.queues):
            raise DeviceStateError(f"saved virtio state needs {len(self.queues)} queues")
        queues = [Virtqueue.check_state(s, self._ram, q.index, q.num_max)
                  for s, q in zip(saved_queues, self.queues, strict=True)]
        device_state = state.get("device")
        if not isinstance(device_state, Mapping):
            raise DeviceStateError("saved virtio state has no device state")
        self.device.restore(device_state)   # checks first; raises with the device unchanged
        for q, new in zip(self.queues, queues, strict=True):
            q.load(new)
            q.set_features(drv_features, F_INDIRECT_DESC, F_EVENT_IDX)
        self.status, self.device_features_sel = status, dev_sel
        self.driver_features, self.driver_features_sel = drv_features, drv_sel
        self._driver_features_high, self.queue_sel = drv_high, queue_sel
        self.interrupt_status, self.config_generation = int_status, generation
        if self._live():
            self.run_guarded(lambda: self.device.activate(drv_features, list(self.queues)))
        else:
            self.device.active, self.device.queues = False, []
        self._irq_level = self.interrupt_status != 0
        self._irq(self._irq_level)

    def dt_node(self, parent: FdtNode, plic: FdtNode, *, base: int, irq: int) -> FdtNode:
        """The node QEMU's virt writes for every slot (create_fdt_virtio)."""
        return virtio_mmio_dt_node(parent, plic, base=base, irq=irq)


def virtio_mmio_dt_node(parent: FdtNode, plic: FdtNode, *, base: int, irq: int) -> FdtNode:
    """A "virtio,mmio" transport node; the same whatever device sits behind."""
    node = parent.child(f"virtio_mmio@{base:x}")
    node.prop_str("compatible", "virtio,mmio")
    node.prop_reg((base, VIRTIO_MMIO_SIZE))
    node.prop_u32("interrupt-parent", plic.phandle())
    node.prop_u32("interrupts", irq)
    return node
