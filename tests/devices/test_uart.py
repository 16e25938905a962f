"""vmkit/devices/uart.py: ns16550a registers by offset, interrupt identification
and priorities (PC16550D table 4), the THRE interrupt as Linux's 8250 driver
probes it, the RX FIFO and backlog, loopback, bad accesses, save/restore."""

import logging
import random

import pytest

from vmkit.devices.device import DeviceStateError
from vmkit.devices.uart import INPUT_BACKLOG_LIMIT, Uart16550

RBR = THR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR, MCR, LSR, MSR, SCR = 3, 4, 5, 6, 7


class Harness:
    def __init__(self):
        self.out = bytearray()
        self.levels: list[bool] = []
        self.uart = Uart16550(self.out.extend, self.levels.append)

    @property
    def irq(self) -> bool:
        return self.levels[-1] if self.levels else False

    def rd(self, off):
        return self.uart.read(off, 1)

    def wr(self, off, value):
        self.uart.write(off, 1, value)


@pytest.fixture
def h():
    return Harness()


def test_reset_values(h):
    assert h.rd(IIR) == 0x01          # no interrupt pending
    assert h.rd(LSR) == 0x60          # THRE | TEMT
    assert h.rd(MSR) == 0xB0          # DCD | DSR | CTS
    assert [h.rd(r) for r in (IER, LCR, MCR, SCR)] == [0, 0, 0, 0]
    assert h.levels == []


def test_transmit_is_immediate(h):
    for b in b"hi\n":
        h.wr(THR, b)
    assert bytes(h.out) == b"hi\n"
    assert h.rd(LSR) & 0x60 == 0x60


def test_divisor_latch_and_scratch(h):
    h.wr(LCR, 0x83)                   # DLAB, 8N1
    h.wr(DLL, 0x01)
    h.wr(DLM, 0x02)
    assert (h.rd(DLL), h.rd(DLM)) == (1, 2)
    assert h.out == b""               # DLL write is not a transmission
    h.wr(LCR, 0x03)
    assert h.rd(IER) == 0 and h.rd(LCR) == 0x03
    h.wr(SCR, 0x5A)
    assert h.rd(SCR) == 0x5A


def test_thre_interrupt_like_linux_8250_startup(h):
    """serial8250_do_startup: set IER.THRI, read IIR, clear IER, set IER.THRI
    again, read IIR: a real 16550 reports THRE both times."""
    h.wr(IER, 0x02)
    assert h.irq
    iir1 = h.rd(IIR)
    assert iir1 == 0x02
    assert not h.irq                  # reading IIR (THRE identified) clears it
    assert h.rd(IIR) == 0x01
    h.wr(IER, 0x00)
    h.wr(IER, 0x02)
    assert h.irq and h.rd(IIR) == 0x02


def test_thre_rearmed_by_thr_write(h):
    h.wr(IER, 0x02)
    h.rd(IIR)
    assert not h.irq
    h.wr(THR, ord("x"))
    assert h.irq and h.rd(IIR) == 0x02


def test_thre_not_raised_while_disabled(h):
    h.wr(THR, ord("x"))
    assert not h.irq and h.rd(IIR) == 0x01


def test_receive_without_fifo(h):
    h.wr(IER, 0x01)
    h.uart.push_input(b"ab")
    assert h.irq
    assert h.rd(IIR) == 0x04 and h.rd(LSR) & 0x01
    assert h.rd(RBR) == ord("a")
    assert h.irq                      # 'b' moved in from the backlog
    assert h.rd(RBR) == ord("b")
    assert not h.irq and h.rd(IIR) == 0x01 and not h.rd(LSR) & 0x01
    assert h.rd(RBR) == 0             # empty read is harmless


def test_fifo_trigger_and_timeout(h):
    h.wr(FCR, 0xC7)                   # enable, clear both, trigger 14
    h.wr(IER, 0x01)
    h.uart.push_input(b"abc")
    assert h.rd(IIR) == 0xCC          # below trigger: character timeout
    h.uart.push_input(bytes(20))
    assert h.rd(IIR) == 0xC4          # at/above trigger: data available
    h.wr(FCR, 0x01)                   # trigger 1
    assert h.rd(IIR) == 0xC4


def test_backlog_delivers_everything_in_order(h):
    h.wr(FCR, 0x01)
    data = bytes(range(256)) * 40
    h.uart.push_input(data)
    got = bytearray()
    while h.rd(LSR) & 0x01:
        got.append(h.rd(RBR))
    assert bytes(got) == data and h.uart.dropped_input == 0


def test_backlog_cap_reports_overrun(h):
    h.wr(FCR, 0x01)
    h.wr(IER, 0x04)                   # line status interrupt
    h.uart.push_input(bytes(INPUT_BACKLOG_LIMIT + 100))
    assert h.uart.dropped_input == 100
    assert h.irq and h.rd(IIR) == 0xC6
    assert h.rd(LSR) & 0x02           # OE, cleared by the read
    assert not h.rd(LSR) & 0x02
    assert not h.irq


def test_interrupt_priority(h):
    h.wr(IER, 0x0F)
    h.uart.push_input(b"x")
    assert h.rd(IIR) == 0x04          # received data beats THRE
    h.rd(RBR)
    assert h.rd(IIR) == 0x02
    assert h.rd(IIR) == 0x01


def test_fcr_clear_rx_refills_from_backlog(h):
    h.wr(FCR, 0x01)
    h.uart.push_input(b"A" * 16 + b"B")
    h.wr(FCR, 0x03)                   # clear RX: the 16 A's are gone
    assert h.rd(RBR) == ord("B")


def test_loopback(h):
    h.wr(MCR, 0x10 | 0x0A)            # LOOP | OUT2 | RTS (Linux's autoconfig probe)
    assert h.rd(MSR) & 0xF0 == 0x90   # DCD | CTS
    h.uart.push_input(b"z")           # the line is disconnected in loopback
    h.wr(THR, ord("q"))
    assert h.out == b""
    assert h.rd(RBR) == ord("q")
    h.wr(MCR, 0x00)
    assert h.rd(RBR) == ord("z")


def test_modem_status_interrupt(h):
    h.wr(IER, 0x08)
    h.wr(MCR, 0x10)                   # loopback: CTS/DSR/DCD drop
    assert h.irq and h.rd(IIR) == 0x00
    assert h.rd(MSR) == 0x0B          # DCTS | DDSR | DDCD, lines low
    assert not h.irq and h.rd(MSR) == 0x00


def test_bad_accesses_are_ignored(h, caplog):
    caplog.set_level(logging.DEBUG)
    assert h.uart.read(LSR, 4) == 0
    h.uart.write(THR, 2, ord("x"))
    assert h.uart.read(0x80, 1) == 0
    h.uart.write(0xFF, 1, 1)
    h.wr(LSR, 0)                      # read-only in normal operation
    assert h.out == b"" and h.rd(LSR) == 0x60
    assert "guest error" in caplog.text


def test_reset_lowers_irq_and_keeps_backlog(h):
    h.wr(IER, 0x01)
    h.uart.push_input(b"ab")
    assert h.irq
    h.uart.reset()
    assert not h.irq and h.rd(IER) == 0
    # 'a' was inside the chip and is lost; 'b' was still on the wire (backlog).
    assert h.rd(RBR) == ord("b")


def test_break_is_a_nul_flagged_in_lsr(h):
    """PC16550D 8.4: a break loads one NUL into the FIFO; LSR.BI (and, FIFOs
    on, LSR bit 7) shows when it reaches the top, raises the receiver line
    status interrupt, and clears on the LSR read: Linux's 8250 driver reads
    LSR, sees BI, reads the NUL, and takes the next key as a SysRq."""
    h.wr(FCR, 0x01)
    h.wr(IER, 0x05)                   # ERBFI | ELSI
    h.uart.push_input(b"a")
    h.uart.push_break()
    h.uart.push_input(b"s")
    assert h.rd(IIR) & 0x0F == 0x04   # 'a' on top: data (trigger level 1), no error yet
    assert h.rd(LSR) == 0xE1          # DR, THRE, TEMT, and a break somewhere in the FIFO
    assert h.rd(RBR) == ord("a")
    assert h.irq and h.rd(IIR) & 0x0F == 0x06   # the break's NUL on top
    assert h.rd(LSR) == 0xF1          # DR | BI | FIFO error
    assert h.rd(IIR) & 0x0F == 0x04   # the read cleared BI and its interrupt
    assert h.rd(LSR) == 0x61
    assert h.rd(RBR) == 0
    assert h.rd(RBR) == ord("s")
    assert h.rd(LSR) == 0x60 and not h.irq


def test_break_waits_in_the_backlog_and_survives_save_restore(h):
    h.uart.push_input(b"xy")          # FIFOs off: one character at a time
    h.uart.push_break()
    state = h.uart.save()
    other = Harness()
    other.uart.restore(state)
    assert other.uart.save() == state
    got = []
    while (lsr := other.rd(LSR)) & 0x01:
        got.append((other.rd(RBR), bool(lsr & 0x10)))
    assert got == [(ord("x"), False), (ord("y"), False), (0, True)]
    state["rx_break"] = b"\x02"
    with pytest.raises(DeviceStateError):
        h.uart.restore(state)


def test_save_restore(h):
    h.wr(FCR, 0x41)
    h.wr(IER, 0x03)
    h.wr(SCR, 7)
    h.uart.push_input(b"x" * 40)
    state = h.uart.save()
    other = Harness()
    other.uart.restore(state)
    assert other.irq
    assert other.uart.save() == state
    got = bytearray()
    while other.rd(LSR) & 1:
        got.append(other.rd(RBR))
    assert got == b"x" * 40


@pytest.mark.parametrize("field,value", [
    ("ier", 0x10), ("rx_trigger", 3), ("rx_fifo", b"x" * 17), ("lcr", -1), ("mcr", "1"),
])
def test_restore_refuses_corrupt_state(h, field, value):
    state = h.uart.save()
    state[field] = value
    before = h.uart.save()
    with pytest.raises(DeviceStateError):
        h.uart.restore(state)
    assert h.uart.save() == before


def test_random_accesses_never_raise():
    h = Harness()
    rng = random.Random(7)
    for _ in range(20000):
        off, size = rng.randrange(0x100), rng.choice((1, 1, 1, 2, 4, 8))
        if rng.random() < 0.5:
            h.uart.read(off, size)
        else:
            h.uart.write(off, size, rng.getrandbits(64))
        if rng.random() < 0.01:
            h.uart.push_input(rng.randbytes(rng.randrange(64)))
    # The line level always agrees with IIR.
    assert h.irq == (h.uart._interrupt_id() != 0x01)
