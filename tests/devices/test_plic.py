"""vmkit/devices/plic.py: priorities, pending, enables, thresholds, claim and
complete with level-triggered gateways, per-context outputs, bad accesses."""

import logging
import random

import pytest

from vmkit.devices.device import DeviceStateError
from vmkit.devices.plic import Plic

PENDING = 0x1000


def enable_off(ctx, word=0):
    return 0x2000 + 0x80 * ctx + 4 * word


def threshold_off(ctx):
    return 0x200000 + 0x1000 * ctx


def claim_off(ctx):
    return 0x200004 + 0x1000 * ctx


class Harness:
    def __init__(self, num_harts=1):
        self.mip: dict[int, bool] = {}
        self.calls: list[tuple[int, bool]] = []
        self.plic = Plic(self._set_mip, num_harts=num_harts)

    def _set_mip(self, ctx, level):
        self.mip[ctx] = level
        self.calls.append((ctx, level))

    def rd(self, off):
        return self.plic.read(off, 4)

    def wr(self, off, value):
        self.plic.write(off, 4, value)

    def setup(self, ctx, sources, priority=1):
        for s in sources:
            self.wr(4 * s, priority)
        bits = sum(1 << s for s in sources)
        for word in range(3):
            self.wr(enable_off(ctx, word), (bits >> (32 * word)) & 0xFFFFFFFF)


@pytest.fixture
def h():
    return Harness()


def test_claim_complete_cycle(h):
    h.setup(1, [10])
    h.plic.set_line(10, True)
    assert h.mip == {1: True}                     # S-mode context of hart 0
    assert h.rd(PENDING) == 1 << 10
    assert h.rd(claim_off(1)) == 10
    assert h.mip[1] is False and h.rd(PENDING) == 0
    assert h.rd(claim_off(1)) == 0                # nothing left to claim
    h.plic.set_line(10, False)
    h.wr(claim_off(1), 10)
    assert h.mip[1] is False


def test_gateway_repends_after_complete_while_line_high(h):
    h.setup(0, [5])
    h.plic.set_line(5, True)
    assert h.rd(claim_off(0)) == 5
    assert not h.mip[0]                           # held at the gateway until complete
    h.wr(claim_off(0), 5)
    assert h.mip[0] and h.rd(PENDING) == 1 << 5   # line still high: pending again
    assert h.rd(claim_off(0)) == 5


def test_line_drop_before_claim_withdraws_request(h):
    h.setup(0, [3])
    h.plic.set_line(3, True)
    h.plic.set_line(3, False)
    assert not h.mip[0] and h.rd(PENDING) == 0 and h.rd(claim_off(0)) == 0


def test_priority_order_and_ties(h):
    h.setup(1, [7, 9, 4, 12])
    h.wr(4 * 9, 5)
    h.wr(4 * 12, 5)
    for s in (7, 9, 4, 12):
        h.plic.set_line(s, True)
    # highest priority first, ties to the lowest id
    assert [h.rd(claim_off(1)) for _ in range(5)] == [9, 12, 4, 7, 0]


def test_threshold_masks_priorities_at_or_below(h):
    h.setup(1, [2], priority=3)
    h.wr(threshold_off(1), 3)
    h.plic.set_line(2, True)
    assert not h.mip.get(1) and h.rd(claim_off(1)) == 0
    h.wr(threshold_off(1), 2)
    assert h.mip[1] and h.rd(claim_off(1)) == 2


def test_priority_zero_never_interrupts(h):
    h.setup(0, [6], priority=0)
    h.plic.set_line(6, True)
    assert not h.mip.get(0) and h.rd(claim_off(0)) == 0
    assert h.rd(PENDING) == 1 << 6                 # pending all the same


def test_enables_are_per_context(h):
    h.setup(0, [1])
    h.plic.set_line(1, True)
    assert h.mip == {0: True}
    assert h.rd(claim_off(1)) == 0                 # not enabled for S-mode


def test_last_source_and_register_widths(h):
    h.setup(0, [95])
    h.wr(4 * 95, 0xFFFFFFFF)
    assert h.rd(4 * 95) == 7                        # WARL: 3 priority bits
    h.plic.set_line(95, True)
    assert h.rd(PENDING + 8) == 1 << 31
    assert h.rd(claim_off(0)) == 95
    h.wr(enable_off(0, 0), 0xFFFFFFFF)
    assert h.rd(enable_off(0, 0)) == 0xFFFFFFFE    # source 0 cannot be enabled
    h.wr(threshold_off(0), 0xFF)
    assert h.rd(threshold_off(0)) == 7


def test_source_zero_and_reserved_offsets(h, caplog):
    caplog.set_level(logging.DEBUG)
    h.wr(0, 5)
    assert h.rd(0) == 0
    h.wr(PENDING, 0xFFFFFFFF)                       # pending bits are read-only
    assert h.rd(PENDING) == 0
    for off in (0x180, 0x100C, enable_off(0, 3), enable_off(2), threshold_off(2), 0x200008, 0x5FFFFC):
        assert h.rd(off) == 0
        h.wr(off, 0xFFFFFFFF)
    assert h.mip == {}
    assert "guest error" in caplog.text


def test_bad_widths_ignored(h):
    h.setup(0, [1])
    h.plic.set_line(1, True)
    assert h.plic.read(claim_off(0), 1) == 0
    assert h.plic.read(claim_off(0) + 2, 4) == 0
    h.plic.write(4, 2, 0)
    assert h.rd(4) == 1 and h.mip[0]               # nothing claimed, nothing changed


def test_complete_of_invalid_source_ignored(h):
    h.setup(0, [1])
    h.plic.set_line(1, True)
    assert h.rd(claim_off(0)) == 1
    h.wr(claim_off(0), 0)
    h.wr(claim_off(0), 96)
    h.wr(claim_off(0), 0xFFFFFFFF)
    assert not h.mip[0]                             # still claimed


def test_two_harts_contexts():
    h = Harness(num_harts=2)
    h.setup(3, [8])                                 # hart 1, S-mode
    h.plic.set_line(8, True)
    assert h.mip == {3: True}
    assert h.rd(claim_off(3)) == 8
    assert h.mip[3] is False


def test_set_line_rejects_bad_source(h):
    for bad in (0, 96, -1):
        with pytest.raises(ValueError):
            h.plic.set_line(bad, True)


def test_reset_keeps_lines_clears_registers(h):
    h.setup(0, [4])
    h.plic.set_line(4, True)
    h.rd(claim_off(0))
    h.plic.reset()
    assert h.rd(4 * 4) == 0 and h.rd(enable_off(0)) == 0
    assert h.rd(PENDING) == 1 << 4                  # line still high, claim forgotten


def test_save_restore(h):
    h.setup(1, [10, 11], priority=2)
    h.plic.set_line(10, True)
    h.plic.set_line(11, True)
    h.rd(claim_off(1))
    state = h.plic.save()
    other = Harness()
    other.plic.restore(state)
    assert other.mip == {0: False, 1: True}         # outputs re-driven
    assert other.plic.save() == state
    assert other.rd(claim_off(1)) == 11


@pytest.mark.parametrize("field,value", [
    ("priority", [0] * 95), ("priority", [8] * 96), ("enable", [1 << 96, 0]),
    ("threshold", [0]), ("lines", -1), ("claimed", "x"),
])
def test_restore_refuses_corrupt_state(h, field, value):
    state = h.plic.save()
    state[field] = value
    with pytest.raises(DeviceStateError):
        h.plic.restore(state)
    assert h.plic.save() != state


def test_random_accesses_never_raise():
    h = Harness()
    rng = random.Random(3)
    offsets = [4 * s for s in range(100)] + [PENDING + 4 * w for w in range(4)] + \
              [enable_off(c, w) for c in range(3) for w in range(4)] + \
              [threshold_off(c) + d for c in range(3) for d in (0, 4, 8)]
    for _ in range(20000):
        off = rng.choice(offsets) + rng.choice((0, 0, 0, 1, 2))
        size = rng.choice((4, 4, 4, 1, 2, 8))
        if rng.random() < 0.5:
            h.plic.read(off, size)
        else:
            h.plic.write(off, size, rng.getrandbits(rng.choice((3, 8, 32, 64))))
        if rng.random() < 0.2:
            h.plic.set_line(rng.randrange(1, 96), rng.random() < 0.5)
