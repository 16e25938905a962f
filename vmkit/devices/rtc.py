"""Goldfish real-time clock: nanoseconds since the Unix epoch, and one alarm.

The register layout is the one Linux's drivers/rtc/rtc-goldfish.c and QEMU's
hw/rtc/goldfish_rtc.c agree on (the Android emulator's goldfish virtual
hardware, extended with IRQ_ENABLED/CLEAR_ALARM/ALARM_STATUS).  All registers
are 32 bits wide.

Guest time is `clock() + offset`, wrapped to 64 bits: `clock` is the host
wall clock in nanoseconds by default, or whatever the machine passes in
deterministic mode; a guest that sets the time only changes `offset`.
The alarm fires when guest time reaches it; the machine calls `poll()` (or
sleeps until `next_deadline_ns()`) to let it fire between guest instructions.
"""

import logging
import time
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any

from vmkit.devices.device import guest_error, state_int
from vmkit.machine.fdt import FdtNode
from vmkit.machine.memmap import RTC_BASE, RTC_IRQ, RTC_SIZE

log = logging.getLogger(__name__)


class Reg(IntEnum):
    TIME_LOW = 0x00         # R: latch the time, return bits 0..31; W: set bits 0..31
    TIME_HIGH = 0x04        # R: bits 32..63 latched by the last TIME_LOW read; W: set them
    ALARM_LOW = 0x08        # W: set alarm bits 0..31 and arm the alarm
    ALARM_HIGH = 0x0C       # W: set alarm bits 32..63 (write before ALARM_LOW)
    IRQ_ENABLED = 0x10      # bit 0: the alarm may raise the interrupt line
    CLEAR_ALARM = 0x14      # W: disarm the alarm
    ALARM_STATUS = 0x18     # R: 1 while the alarm is armed
    CLEAR_INTERRUPT = 0x1C  # W: acknowledge (lower) the interrupt


_MASK32 = 0xFFFF_FFFF
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF


class GoldfishRtc:
    """`irq(level)` is called when the interrupt line changes level; `clock()`
    returns the current time in nanoseconds."""

    def __init__(self, irq: Callable[[bool], None],
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._irq = irq
        self._clock = clock
        self._irq_level = False
        self._offset = 0  # guest time minus clock(), survives reset like a battery
        self._reset_registers()

    # --- host side -------------------------------------------------------------------
    def poll(self, now_ns: int | None = None) -> None:
        """Fire the alarm if the guest time at clock value `now_ns` (default:
        `clock()` now) has reached it."""
        if now_ns is None:
            now_ns = self._clock()
        if self._alarm_running and (now_ns + self._offset) & _MASK64 >= self._alarm_next:
            self._alarm_running = False
            self._irq_pending = True
            self._update_irq()

    def next_deadline_ns(self) -> int | None:
        """The clock value at which the armed alarm fires, or None."""
        if not self._alarm_running:
            return None
        return self._alarm_next - self._offset

    # --- bus side ------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size != 4 or offset % 4:
            guest_error(log, "rtc: %d-byte read at %#x (registers are aligned words)", size, offset)
            return 0
        match offset:
            case Reg.TIME_LOW:
                now = self._guest_time()
                self._time_high = now >> 32  # a following TIME_HIGH read sees the same instant
                return now & _MASK32
            case Reg.TIME_HIGH:
                return self._time_high
            case Reg.ALARM_LOW:
                return self._alarm_next & _MASK32
            case Reg.ALARM_HIGH:
                return self._alarm_next >> 32
            case Reg.IRQ_ENABLED:
                return int(self._irq_enabled)
            case Reg.ALARM_STATUS:
                return int(self._alarm_running)
            case _:
                guest_error(log, "rtc: read of unknown or write-only register %#x", offset)
                return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset % 4:
            guest_error(log, "rtc: %d-byte write at %#x (registers are aligned words)", size, offset)
            return
        value &= _MASK32
        match offset:
            case Reg.TIME_LOW:
                self._set_guest_time(lambda now: (now & ~_MASK32) | value)
            case Reg.TIME_HIGH:
                self._set_guest_time(lambda now: (value << 32) | (now & _MASK32))
            case Reg.ALARM_LOW:
                self._alarm_next = (self._alarm_next & ~_MASK32) | value
                self._alarm_running = True
                self.poll()  # an alarm in the past fires at once
            case Reg.ALARM_HIGH:
                self._alarm_next = (value << 32) | (self._alarm_next & _MASK32)
            case Reg.IRQ_ENABLED:
                self._irq_enabled = bool(value & 1)
                self._update_irq()
            case Reg.CLEAR_ALARM:
                self._alarm_running = False
            case Reg.CLEAR_INTERRUPT:
                self._irq_pending = False
                self._update_irq()
            case _:
                guest_error(log, "rtc: write %#x to unknown or read-only register %#x", value, offset)

    def reset(self) -> None:
        self._reset_registers()
        self._update_irq()

    def save(self) -> dict[str, Any]:
        return {
            "offset": self._offset, "time_high": self._time_high,
            "alarm_next": self._alarm_next, "alarm_running": self._alarm_running,
            "irq_pending": self._irq_pending, "irq_enabled": self._irq_enabled,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a `save()` dict (checked first: DeviceStateError leaves the
        RTC unchanged), then drive the interrupt line to the restored level."""
        offset = state_int(state, "offset", -_MASK64, _MASK64)
        time_high = state_int(state, "time_high", 0, _MASK32)
        alarm_next = state_int(state, "alarm_next", 0, _MASK64)
        alarm_running = bool(state_int(state, "alarm_running", 0, 1))
        irq_pending = bool(state_int(state, "irq_pending", 0, 1))
        irq_enabled = bool(state_int(state, "irq_enabled", 0, 1))
        self._offset, self._time_high, self._alarm_next = offset, time_high, alarm_next
        self._alarm_running, self._irq_pending, self._irq_enabled = alarm_running, irq_pending, irq_enabled
        self._irq_level = self._irq_pending and self._irq_enabled
        self._irq(self._irq_level)

    def dt_node(self, parent: FdtNode, plic: FdtNode, *, base: int = RTC_BASE,
                irq: int = RTC_IRQ) -> FdtNode:
        """The node QEMU's virt writes (create_fdt_rtc)."""
        node = parent.child(f"rtc@{base:x}")
        node.prop_str("compatible", "google,goldfish-rtc")
        node.prop_reg((base, RTC_SIZE))
        node.prop_u32("interrupt-parent", plic.phandle())
        node.prop_u32("interrupts", irq)
        return node

    # --- internals -------------------------------------------------------------------
    def _reset_registers(self) -> None:
        self._time_high = 0
        self._alarm_next = 0
        self._alarm_running = False
        self._irq_pending = False
        self._irq_enabled = False

    def _guest_time(self) -> int:
        return (self._clock() + self._offset) & _MASK64

    def _set_guest_time(self, change: Callable[[int], int]) -> None:
        """Set guest time to change(current guest time), reading the clock once."""
        clock = self._clock()
        self._offset = change((clock + self._offset) & _MASK64) - clock

    def _update_irq(self) -> None:
        level = self._irq_pending and self._irq_enabled
        if level != self._irq_level:
            self._irq_level = level
            self._irq(level)
