"""An empty virtio-mmio slot: the transport with no device behind it.

QEMU's virt board always creates its eight virtio-mmio transports; a slot
with nothing plugged in answers with the magic value, the version and
DeviceID 0, and ignores writes (hw/virtio/virtio-mmio.c, "no backend").
Virtio 1.2, 4.2.3.1.1: a driver that reads DeviceID 0 must stop there, so
Linux probes the slot and skips it.  Register offsets are from 4.2.2, table
"MMIO Device Register Layout".

XXX: fold into the virtio-mmio transport as "no device attached" once that
transport exists, so the register table lives in one place.
"""

import logging
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

from vmkit.devices.device import guest_error
from vmkit.machine.fdt import FdtNode
from vmkit.machine.memmap import VIRTIO_MMIO_SIZE

log = logging.getLogger(__name__)


class Reg(IntEnum):
    MAGIC_VALUE = 0x000
    VERSION = 0x004
    DEVICE_ID = 0x008
    VENDOR_ID = 0x00C
    CONFIG = 0x100  # device-specific configuration space starts here


VIRTIO_MMIO_MAGIC = 0x7472_6976   # "virt", little-endian
VIRTIO_MMIO_VERSION = 2           # the non-legacy interface
VIRTIO_ID_NONE = 0                # no device: the driver must ignore the slot
VIRTIO_VENDOR_QEMU = 0x554D_4551  # "QEMU", what QEMU reports


class VirtioMmioEmpty:
    """A virtio-mmio slot with no device."""

    def read(self, offset: int, size: int) -> int:
        if offset >= Reg.CONFIG:
            return 0  # configuration space: any width, and empty
        if size != 4 or offset % 4:
            # 4.2.2.2: the driver MUST use 32-bit aligned accesses here.
            guest_error(log, "virtio-mmio (empty): %d-byte read at %#x", size, offset)
            return 0
        match offset:
            case Reg.MAGIC_VALUE:
                return VIRTIO_MMIO_MAGIC
            case Reg.VERSION:
                return VIRTIO_MMIO_VERSION
            case Reg.DEVICE_ID:
                return VIRTIO_ID_NONE
            case Reg.VENDOR_ID:
                return VIRTIO_VENDOR_QEMU
            case _:
                return 0

    def write(self, offset: int, size: int, value: int) -> None:
        # No backend: every register is write-ignored.
        guest_error(log, "virtio-mmio (empty): write %#x at %#x ignored", value, offset)

    def reset(self) -> None:
        pass

    def save(self) -> dict[str, Any]:
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        pass

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
