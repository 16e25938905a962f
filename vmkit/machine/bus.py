"""The MMIO bus: physical address ranges -> devices (Firecracker's BusDevice).

Devices see offsets, never absolute addresses.  Ranges may not overlap.  A
device handler that raises is a device bug or a hostile guest poking at it:
the exception is logged and the access completes as a read of 0 / an ignored
write, so one device can never take the VM down (RELIABILITY.md).
"""

import bisect
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class BusError(ValueError):
    """A device could not be attached (overlap, bad range)."""


@dataclass(order=True)
class Mapping:
    base: int
    size: int
    name: str = field(compare=False)
    device: Any = field(compare=False)


class Bus:
    def __init__(self) -> None:
        self._maps: list[Mapping] = []
        self._bases: list[int] = []
        self.errors = 0  # device handler exceptions caught

    def attach(self, base: int, size: int, device: Any, name: str) -> None:
        if size <= 0 or base < 0:
            raise BusError(f"{name}: bad range base={base:#x} size={size:#x}")
        for m in self._maps:
            if base < m.base + m.size and m.base < base + size:
                raise BusError(f"{name} at {base:#x}+{size:#x} overlaps {m.name} at {m.base:#x}+{m.size:#x}")
        bisect.insort(self._maps, Mapping(base, size, name, device))
        self._bases = [m.base for m in self._maps]

    def find(self, addr: int):
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            m = self._maps[i]
            if addr < m.base + m.size:
                return m
        return None

    def read(self, addr: int, size: int):
        """Value read, or None when no device claims the address."""
        m = self.find(addr)
        if m is None:
            return None
        try:
            return int(m.device.read(addr - m.base, size)) & ((1 << (8 * size)) - 1)
        except Exception:
            self.errors += 1
            log.exception("%s: read at offset %#x size %d failed", m.name, addr - m.base, size)
            return 0

    def write(self, addr: int, size: int, value: int) -> bool:
        """False when no device claims the address."""
        m = self.find(addr)
        if m is None:
            return False
        try:
            m.device.write(addr - m.base, size, value)
        except Exception:
            self.errors += 1
            log.exception("%s: write at offset %#x size %d failed", m.name, addr - m.base, size)
        return True

    def devices(self):
        return [(m.base, m.size, m.name, m.device) for m in self._maps]
