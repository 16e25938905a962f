"""SiFive test finisher ("sifive,test0"): how a guest powers off, resets, or
exits with a failure code.

One register at offset 0 (QEMU hw/misc/sifive_test.c; Linux and OpenSBI reach
it through the syscon-poweroff/syscon-reboot nodes).  A write's low 16 bits
select the action, the high 16 bits carry the exit code of a failure:

    0x5555              power off (pass)
    0x7777              reset
    (code << 16)|0x3333 fail with exit code `code`

QEMU accepts 16- and 32-bit writes; reads return 0.
"""

import logging
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any

from vmkit.devices.device import guest_error
from vmkit.machine.fdt import FdtNode
from vmkit.machine.memmap import TEST_BASE, TEST_SIZE

log = logging.getLogger(__name__)


class Reg(IntEnum):
    FINISHER = 0x0


class Command(IntEnum):
    """The low 16 bits of a FINISHER write."""

    FAIL = 0x3333
    PASS = 0x5555
    RESET = 0x7777

# What on_halt receives as `kind`.
HALT_POWEROFF = "poweroff"
HALT_RESET = "reset"
HALT_FAIL = "fail"


class TestFinisher:
    """`on_halt(kind, code)` is called with kind "poweroff", "reset" or "fail"."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, on_halt: Callable[[str, int], None]) -> None:
        self._on_halt = on_halt

    def read(self, offset: int, size: int) -> int:
        if size not in (2, 4) or offset % size:
            guest_error(log, "test finisher: %d-byte read at %#x", size, offset)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size not in (2, 4) or offset % size:
            guest_error(log, "test finisher: %d-byte write at %#x", size, offset)
            return
        match offset:
            case Reg.FINISHER:
                self._finish(value & 0xFFFF_FFFF)
            case _:
                guest_error(log, "test finisher: write %#x to unknown offset %#x", value, offset)

    def reset(self) -> None:
        pass  # no state

    def save(self) -> dict[str, Any]:
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        pass

    def dt_node(self, parent: FdtNode, *, base: int = TEST_BASE) -> FdtNode:
        """The node QEMU's virt writes (create_fdt_reset): the device is also
        a syscon, the regmap of the /poweroff and /reboot nodes."""
        node = parent.child(f"test@{base:x}")
        node.prop_strlist("compatible", "sifive,test1", "sifive,test0", "syscon")
        node.prop_reg((base, TEST_SIZE))
        node.phandle()
        return node

    def _finish(self, value: int) -> None:
        status, code = value & 0xFFFF, value >> 16
        match status:
            case Command.PASS:
                self._on_halt(HALT_POWEROFF, 0)
            case Command.RESET:
                self._on_halt(HALT_RESET, 0)
            case Command.FAIL:
                self._on_halt(HALT_FAIL, code)
            case _:
                guest_error(log, "test finisher: unknown command %#x", value)
