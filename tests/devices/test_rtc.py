"""vmkit/devices/rtc.py: goldfish RTC time latch, setting the time, the alarm
and its interrupt, bad accesses, save/restore; driven by a fake clock."""

import pytest

from vmkit.devices.device import DeviceStateError
from vmkit.devices.rtc import GoldfishRtc

TIME_LOW, TIME_HIGH, ALARM_LOW, ALARM_HIGH = 0x00, 0x04, 0x08, 0x0C
IRQ_ENABLED, CLEAR_ALARM, ALARM_STATUS, CLEAR_INTERRUPT = 0x10, 0x14, 0x18, 0x1C


class Harness:
    def __init__(self, now=0x1_2345_6789_ABCD):
        self.now = now
        self.levels: list[bool] = []
        self.rtc = GoldfishRtc(self.levels.append, clock=lambda: self.now)

    @property
    def irq(self):
        return self.levels[-1] if self.levels else False

    def rd(self, off):
        return self.rtc.read(off, 4)

    def wr(self, off, value):
        self.rtc.write(off, 4, value)

    def time(self):
        low = self.rd(TIME_LOW)
        return (self.rd(TIME_HIGH) << 32) | low


@pytest.fixture
def h():
    return Harness()


def test_reads_host_clock(h):
    assert h.time() == h.now


def test_time_low_read_latches_high(h):
    h.now = 0x5_FFFF_FFFF
    assert h.rd(TIME_LOW) == 0xFFFF_FFFF
    h.now += 1                                    # the high word ticks over...
    assert h.rd(TIME_HIGH) == 5                   # ...but the latched value holds


def test_guest_sets_time(h):
    target = 0x1700_0000_0000_0000
    h.wr(TIME_HIGH, target >> 32)
    h.wr(TIME_LOW, target & 0xFFFF_FFFF)
    assert h.time() == target
    h.now += 1000
    assert h.time() == target + 1000              # and it keeps running


def test_alarm_fires_at_its_time(h):
    alarm = h.now + 5_000
    h.wr(IRQ_ENABLED, 1)
    h.wr(ALARM_HIGH, alarm >> 32)
    h.wr(ALARM_LOW, alarm & 0xFFFF_FFFF)
    assert h.rd(ALARM_STATUS) == 1
    assert h.rtc.next_deadline_ns() == alarm
    h.rtc.poll(h.now + 4_999)
    assert not h.irq
    h.now += 5_000
    h.rtc.poll()
    assert h.irq and h.rd(ALARM_STATUS) == 0 and h.rtc.next_deadline_ns() is None
    h.wr(CLEAR_INTERRUPT, 1)
    assert not h.irq


def test_alarm_in_the_past_fires_at_once(h):
    h.wr(IRQ_ENABLED, 1)
    h.wr(ALARM_HIGH, 0)
    h.wr(ALARM_LOW, 1)
    assert h.irq


def test_interrupt_gated_by_irq_enabled(h):
    h.wr(ALARM_LOW, 0)                            # fires, but not enabled
    assert not h.irq
    h.wr(IRQ_ENABLED, 1)
    assert h.irq and h.rd(IRQ_ENABLED) == 1
    h.wr(IRQ_ENABLED, 0)
    assert not h.irq


def test_clear_alarm_disarms(h):
    h.wr(IRQ_ENABLED, 1)
    h.wr(ALARM_HIGH, 0xFFFF_FFFF)
    h.wr(ALARM_LOW, 0)
    h.wr(CLEAR_ALARM, 1)
    h.rtc.poll(1 << 63)
    assert not h.irq and h.rd(ALARM_STATUS) == 0


def test_alarm_registers_read_back(h):
    h.wr(ALARM_HIGH, 0x12)
    h.wr(ALARM_LOW, 0x34)
    assert (h.rd(ALARM_HIGH), h.rd(ALARM_LOW)) == (0x12, 0x34)


def test_bad_accesses_ignored(h):
    assert h.rtc.read(TIME_LOW, 8) == 0
    assert h.rtc.read(TIME_LOW + 2, 4) == 0
    assert h.rtc.read(0x20, 4) == 0 and h.rd(CLEAR_INTERRUPT) == 0
    h.rtc.write(IRQ_ENABLED, 1, 1)
    h.wr(ALARM_STATUS, 1)
    h.wr(0xFFC, 1)
    assert h.rd(IRQ_ENABLED) == 0 and h.rd(ALARM_STATUS) == 0


def test_reset_keeps_time_clears_alarm(h):
    h.wr(TIME_HIGH, 0x100)
    h.wr(IRQ_ENABLED, 1)
    h.wr(ALARM_LOW, 0)
    assert h.irq
    h.rtc.reset()
    assert not h.irq and h.rd(IRQ_ENABLED) == 0
    assert h.rd(TIME_LOW) and h.rd(TIME_HIGH) == 0x100   # battery-backed


def test_save_restore(h):
    h.wr(TIME_HIGH, 0x42)
    h.wr(IRQ_ENABLED, 1)
    h.wr(ALARM_HIGH, 0x43)
    h.wr(ALARM_LOW, 0)
    state = h.rtc.save()
    other = Harness(now=h.now)
    other.rtc.restore(state)
    assert other.rtc.save() == state and other.time() == h.time()
    assert other.levels == [False]
    other.now += 1 << 32
    other.rtc.poll()
    assert other.irq


def test_restore_refuses_corrupt_state(h):
    for field, value in (("alarm_next", 1 << 64), ("irq_enabled", 2), ("offset", None)):
        state = h.rtc.save()
        state[field] = value
        with pytest.raises(DeviceStateError):
            h.rtc.restore(state)
