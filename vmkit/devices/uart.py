"""ns16550a UART, enough of it for OpenSBI, U-Boot and Linux's 8250 driver.

Register set and behaviour from the National Semiconductor PC16550D data
sheet (June 1995): table 2 (register summary), 8.4 (LSR), 8.5 (FCR),
8.6 (IIR, table 4: interrupt priorities and reset conditions), 8.10 (IER),
8.7/8.8 (MCR, MSR and loopback).  One byte-wide register per offset
(reg-shift 0, reg-io-width 1, as QEMU's virt board describes it).

Simplifications, each invisible to a driver:
- Transmission is instantaneous: a THR write goes straight to `output`, so
  LSR.THRE and LSR.TEMT are always set and THR is empty again at once.
- Received bytes wait in a host-side backlog (up to INPUT_BACKLOG_LIMIT) and
  move into the 16-byte RX FIFO as it drains, the way a flow-controlled line
  would deliver them; only bytes beyond the backlog limit are lost (counted in
  `dropped_input`, reported to the guest as an overrun, LSR.OE).
- No baud-rate timing: the character-timeout interrupt (IIR 0x0C) is reported
  as soon as the FIFO holds data below the trigger level, because with the
  backlog refilling at once that only happens when no more data is coming.
- Of the receive errors only overrun (LSR.OE) and break (LSR.BI, `push_break`)
  happen: there is no line to garble, so no parity or framing errors.

Not thread-safe: call `push_input` from the thread that runs the machine.
"""

import logging
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any

from vmkit.devices.device import DeviceStateError, guest_error, state_bytes, state_int
from vmkit.machine.fdt import FdtNode
from vmkit.machine.memmap import UART0_BASE, UART0_CLOCK_FREQUENCY, UART0_IRQ, UART0_SIZE

log = logging.getLogger(__name__)


class Reg(IntEnum):
    """Register offsets (data sheet table 2).  Several share an offset: the
    access direction and LCR.DLAB select which one."""

    RBR = 0  # receiver buffer (read, DLAB=0)
    THR = 0  # transmitter holding (write, DLAB=0)
    DLL = 0  # divisor latch LSB (DLAB=1)
    IER = 1  # interrupt enable (DLAB=0)
    DLM = 1  # divisor latch MSB (DLAB=1)
    IIR = 2  # interrupt identification (read)
    FCR = 2  # FIFO control (write)
    LCR = 3  # line control
    MCR = 4  # modem control
    LSR = 5  # line status
    MSR = 6  # modem status
    SCR = 7  # scratch


# IER (8.10)
IER_ERBFI = 0x01  # received data available
IER_ETBEI = 0x02  # transmitter holding register empty
IER_ELSI = 0x04   # receiver line status
IER_EDSSI = 0x08  # modem status
IER_MASK = 0x0F

# IIR (8.6, table 4), highest priority first
IIR_NO_INT = 0x01
IIR_RLSI = 0x06   # receiver line status: overrun/parity/framing/break
IIR_RDI = 0x04    # received data at or above the FIFO trigger level
IIR_CTI = 0x0C    # character timeout: data below the trigger level
IIR_THRI = 0x02   # THR empty
IIR_MSI = 0x00    # modem status changed
IIR_FIFOS_ENABLED = 0xC0

# FCR (8.5)
FCR_ENABLE = 0x01
FCR_CLEAR_RX = 0x02
FCR_CLEAR_TX = 0x04
FCR_TRIGGER_SHIFT = 6
RX_TRIGGER_LEVELS = (1, 4, 8, 14)

# LCR (8.3)
LCR_DLAB = 0x80

# MCR (8.7)
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
MCR_MASK = 0x1F

# LSR (8.4)
LSR_DR = 0x01    # data ready
LSR_OE = 0x02    # overrun error
LSR_BI = 0x10    # break interrupt: the character at the top of the FIFO came with a break
LSR_THRE = 0x20  # THR empty
LSR_TEMT = 0x40  # transmitter empty
LSR_FIFO_ERROR = 0x80  # FIFO mode: some character in the FIFO has an error (here: a break)

# MSR (8.8)
MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
# With no real modem attached the lines read as a connected, ready peer
# (carrier, data set ready, clear to send), as QEMU reports them.
MSR_LINES_IDLE = MSR_DCD | MSR_DSR | MSR_CTS

RX_FIFO_SIZE = 16
INPUT_BACKLOG_LIMIT = 64 * 1024


class Uart16550:
    """ns16550a.  `output(data)` receives transmitted bytes; `irq(level)` is
    called whenever the interrupt line changes level."""

    def __init__(self, output: Callable[[bytes], None], irq: Callable[[bool], None]) -> None:
        self._output = output
        self._irq = irq
        self._irq_level = False
        self._backlog = bytearray()  # host input not yet in the RX FIFO
        self._backlog_break = bytearray()  # per backlog byte: 1 if it is a break's NUL
        self.dropped_input = 0       # bytes lost because the backlog was full
        self._reset_registers()

    # --- host side -------------------------------------------------------------------
    def push_input(self, data: bytes) -> None:
        """Queue keyboard input; it reaches the guest as the RX FIFO drains."""
        self._receive(data, brk=False)

    def push_break(self) -> None:
        """A break on the line: the receiver gets one NUL character flagged
        with LSR.BI (8.4: "only one zero character is loaded into the FIFO").
        Linux's 8250 driver takes a break on its console followed by a key
        within 5 s as a Magic SysRq (CONFIG_MAGIC_SYSRQ_SERIAL)."""
        self._receive(b"\0", brk=True)

    def _receive(self, data: bytes, brk: bool) -> None:
        room = INPUT_BACKLOG_LIMIT - len(self._backlog)
        accepted = data[:room]
        self._backlog += accepted
        self._backlog_break += bytes((brk,)) * len(accepted)
        if len(data) > room:
            self.dropped_input += len(data) - room
            self._overrun = True
        self._fill_rx()
        self._update_irq()

    # --- bus side --------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size != 1:
            guest_error(log, "uart: %d-byte read at %#x (registers are bytes)", size, offset)
            return 0
        dlab = bool(self.lcr & LCR_DLAB)
        match offset:
            case Reg.DLL if dlab:
                return self.dll
            case Reg.RBR:
                return self._read_rbr()
            case Reg.DLM if dlab:
                return self.dlm
            case Reg.IER:
                return self.ier
            case Reg.IIR:
                return self._read_iir()
            case Reg.LCR:
                return self.lcr
            case Reg.MCR:
                return self.mcr
            case Reg.LSR:
                return self._read_lsr()
            case Reg.MSR:
                return self._read_msr()
            case Reg.SCR:
                return self.scr
            case _:
                guest_error(log, "uart: read of unknown register %#x", offset)
                return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 1:
            guest_error(log, "uart: %d-byte write at %#x (registers are bytes)", size, offset)
            return
        value &= 0xFF
        dlab = bool(self.lcr & LCR_DLAB)
        match offset:
            case Reg.DLL if dlab:
                self.dll = value
            case Reg.THR:
                self._write_thr(value)
            case Reg.DLM if dlab:
                self.dlm = value
            case Reg.IER:
                self._write_ier(value)
            case Reg.FCR:
                self._write_fcr(value)
            case Reg.LCR:
                self.lcr = value
            case Reg.MCR:
                self._write_mcr(value)
            case Reg.LSR | Reg.MSR:
                pass  # writable only in the chip's factory test mode; ignored
            case Reg.SCR:
                self.scr = value
            case _:
                guest_error(log, "uart: write of unknown register %#x", offset)

    def reset(self) -> None:
        """Power-on state (data sheet table 5).  Host input still waiting in
        the backlog survives: it is "on the line", not inside the chip."""
        self._reset_registers()
        self._fill_rx()
        self._update_irq()

    def save(self) -> dict[str, Any]:
        return {
            "ier": self.ier, "lcr": self.lcr, "mcr": self.mcr, "scr": self.scr,
            "dll": self.dll, "dlm": self.dlm,
            "fifo_enabled": self.fifo_enabled, "rx_trigger": self.rx_trigger,
            "rx_fifo": bytes(self._rx), "backlog": bytes(self._backlog),
            "rx_break": bytes(self._rx_break), "backlog_break": bytes(self._backlog_break),
            "thre_pending": self._thre_pending, "overrun": self._overrun,
            "msr_delta": self._msr_delta,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a `save()` dict (checked first: DeviceStateError leaves the
        UART unchanged), then drive the interrupt line to the restored level."""
        regs = {k: state_int(state, k, 0, 0xFF) for k in ("lcr", "scr", "dll", "dlm")}
        ier = state_int(state, "ier", 0, IER_MASK)
        mcr = state_int(state, "mcr", 0, MCR_MASK)
        fifo_enabled = bool(state_int(state, "fifo_enabled", 0, 1))
        rx_trigger = state_int(state, "rx_trigger", 1, RX_FIFO_SIZE)
        if rx_trigger not in RX_TRIGGER_LEVELS:
            raise DeviceStateError(f"saved uart rx_trigger {rx_trigger} is not one of {RX_TRIGGER_LEVELS}")
        rx = state_bytes(state, "rx_fifo", RX_FIFO_SIZE if fifo_enabled else 1)
        backlog = state_bytes(state, "backlog", INPUT_BACKLOG_LIMIT)
        rx_break = state_bytes(state, "rx_break", len(rx))
        backlog_break = state_bytes(state, "backlog_break", len(backlog))
        if len(rx_break) != len(rx) or len(backlog_break) != len(backlog) \
                or any(b > 1 for b in rx_break + backlog_break):
            raise DeviceStateError("saved uart break flags do not match its received bytes")
        thre_pending = bool(state_int(state, "thre_pending", 0, 1))
        overrun = bool(state_int(state, "overrun", 0, 1))
        msr_delta = state_int(state, "msr_delta", 0, MSR_DCTS | MSR_DDSR | MSR_TERI | MSR_DDCD)
        self.lcr, self.scr, self.dll, self.dlm = regs["lcr"], regs["scr"], regs["dll"], regs["dlm"]
        self.ier, self.mcr = ier, mcr
        self.fifo_enabled, self.rx_trigger = fifo_enabled, rx_trigger
        self._rx, self._backlog = bytearray(rx), bytearray(backlog)
        self._rx_break, self._backlog_break = bytearray(rx_break), bytearray(backlog_break)
        self._thre_pending, self._overrun, self._msr_delta = thre_pending, overrun, msr_delta
        self._irq_level = self._interrupt_id() != IIR_NO_INT
        self._irq(self._irq_level)

    def dt_node(self, parent: FdtNode, plic: FdtNode, *, base: int = UART0_BASE,
                irq: int = UART0_IRQ) -> FdtNode:
        """The node QEMU's virt writes (create_fdt_uart)."""
        node = parent.child(f"serial@{base:x}")
        node.prop_str("compatible", "ns16550a")
        node.prop_reg((base, UART0_SIZE))
        node.prop_u32("clock-frequency", UART0_CLOCK_FREQUENCY)
        node.prop_u32("interrupt-parent", plic.phandle())
        node.prop_u32("interrupts", irq)
        return node

    # --- registers ------------------------------------------------------------------
    def _reset_registers(self) -> None:
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.scr = 0
        self.dll = 0
        self.dlm = 0
        self.fifo_enabled = False
        self.rx_trigger = RX_TRIGGER_LEVELS[0]
        self._rx = bytearray()
        self._rx_break = bytearray()  # per FIFO byte: 1 while its break is not yet reported in LSR.BI
        self._thre_pending = False  # THRE interrupt armed (IIR table 4, priority 3)
        self._overrun = False       # LSR.OE, cleared by reading LSR
        self._msr_delta = 0         # MSR bits 0..3, cleared by reading MSR

    def _rx_capacity(self) -> int:
        # With FIFOs disabled the receiver holds a single character (RBR).
        return RX_FIFO_SIZE if self.fifo_enabled else 1

    def _fill_rx(self) -> None:
        # In loopback the receiver is connected to the transmitter only (8.7).
        if self.mcr & MCR_LOOP:
            return
        take = self._rx_capacity() - len(self._rx)
        if take > 0 and self._backlog:
            self._rx += self._backlog[:take]
            self._rx_break += self._backlog_break[:take]
            del self._backlog[:take]
            del self._backlog_break[:take]

    def _clear_rx(self) -> None:
        self._rx.clear()
        self._rx_break.clear()

    def _break_at_top(self) -> bool:
        """LSR.BI: in FIFO mode a character's error shows when it reaches the top (8.4)."""
        return bool(self._rx_break) and self._rx_break[0] == 1

    def _interrupt_id(self) -> int:
        """The highest-priority pending, enabled interrupt (table 4)."""
        if self.ier & IER_ELSI and (self._overrun or self._break_at_top()):
            return IIR_RLSI
        if self.ier & IER_ERBFI and self._rx:
            if not self.fifo_enabled or len(self._rx) >= self.rx_trigger:
                return IIR_RDI
            return IIR_CTI
        if self.ier & IER_ETBEI and self._thre_pending:
            return IIR_THRI
        if self.ier & IER_EDSSI and self._msr_delta:
            return IIR_MSI
        return IIR_NO_INT

    def _update_irq(self) -> None:
        level = self._interrupt_id() != IIR_NO_INT
        if level != self._irq_level:
            self._irq_level = level
            self._irq(level)

    def _read_rbr(self) -> int:
        if not self._rx:
            return 0
        value = self._rx.pop(0)
        self._rx_break.pop(0)
        self._fill_rx()
        self._update_irq()
        return value

    def _read_iir(self) -> int:
        iid = self._interrupt_id()
        # Table 4: reading IIR (when THRE is the source identified) resets
        # the THRE interrupt.
        if iid == IIR_THRI:
            self._thre_pending = False
            self._update_irq()
        return iid | (IIR_FIFOS_ENABLED if self.fifo_enabled else 0)

    def _read_lsr(self) -> int:
        value = LSR_THRE | LSR_TEMT
        if self._rx:
            value |= LSR_DR
        if self.fifo_enabled and any(self._rx_break):
            value |= LSR_FIFO_ERROR
        if self._break_at_top():
            value |= LSR_BI
            self._rx_break[0] = 0  # 8.4: error bits clear when LSR is read
        if self._overrun:
            value |= LSR_OE
            self._overrun = False
        if value & (LSR_BI | LSR_OE):
            self._update_irq()
        return value

    def _read_msr(self) -> int:
        value = self._modem_lines() | self._msr_delta
        if self._msr_delta:
            self._msr_delta = 0
            self._update_irq()
        return value

    def _modem_lines(self) -> int:
        """MSR bits 4..7.  In loopback the outputs feed the inputs (8.7):
        RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD."""
        if not self.mcr & MCR_LOOP:
            return MSR_LINES_IDLE
        lines = 0
        if self.mcr & MCR_RTS:
            lines |= MSR_CTS
        if self.mcr & MCR_DTR:
            lines |= MSR_DSR
        if self.mcr & MCR_OUT1:
            lines |= MSR_RI
        if self.mcr & MCR_OUT2:
            lines |= MSR_DCD
        return lines

    def _write_thr(self, value: int) -> None:
        if self.mcr & MCR_LOOP:
            if len(self._rx) < self._rx_capacity():
                self._rx.append(value)
                self._rx_break.append(0)
            else:
                self._overrun = True
        else:
            self._output(bytes((value,)))
        # The byte has left THR (instantly): THR is empty again, which
        # re-arms the THRE interrupt (table 4, "THR empty" set condition).
        self._thre_pending = True
        self._update_irq()

    def _write_ier(self, value: int) -> None:
        old = self.ier
        self.ier = value & IER_MASK
        if self.ier & IER_ETBEI and not old & IER_ETBEI:
            # Enabling ETBEI while THR is empty raises THRE at once, as a
            # real 16550 does; Linux's 8250 startup test toggles IER.ETBEI
            # and expects this (otherwise it sets UART_BUG_THRE and polls).
            self._thre_pending = True
        elif not self.ier & IER_ETBEI:
            self._thre_pending = False
        self._update_irq()

    def _write_fcr(self, value: int) -> None:
        enable = bool(value & FCR_ENABLE)
        if enable != self.fifo_enabled:
            # Changing FCR0 resets both FIFOs (8.5).
            self.fifo_enabled = enable
            self._clear_rx()
        if enable:
            # The other FCR bits are written only together with FCR0 = 1.
            if value & FCR_CLEAR_RX:
                self._clear_rx()
            self.rx_trigger = RX_TRIGGER_LEVELS[value >> FCR_TRIGGER_SHIFT & 3]
        self._fill_rx()
        self._update_irq()

    def _write_mcr(self, value: int) -> None:
        old_lines = self._modem_lines()
        self.mcr = value & MCR_MASK
        new_lines = self._modem_lines()
        changed = old_lines ^ new_lines
        if changed & MSR_CTS:
            self._msr_delta |= MSR_DCTS
        if changed & MSR_DSR:
            self._msr_delta |= MSR_DDSR
        if changed & MSR_DCD:
            self._msr_delta |= MSR_DDCD
        if old_lines & MSR_RI and not new_lines & MSR_RI:
            self._msr_delta |= MSR_TERI  # trailing edge of RI
        self._fill_rx()  # leaving loopback reconnects the line
        self._update_irq()
