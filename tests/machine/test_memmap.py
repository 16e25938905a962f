"""vmkit/machine/memmap.py: the virt memory map is consistent and matches QEMU."""

import pytest

from vmkit.machine import memmap


def test_regions_are_sorted_and_disjoint():
    regions = memmap.MMIO_REGIONS
    for a, b in zip(regions, regions[1:]):
        assert a.end <= b.base, f"{a.name} overlaps {b.name}"
    assert regions[-1].end <= memmap.RAM_BASE


def test_irqs_are_unique_plic_sources():
    irqs = [r.irq for r in memmap.MMIO_REGIONS if r.irq is not None]
    assert len(irqs) == len(set(irqs))
    assert all(1 <= irq < memmap.PLIC_NUM_SOURCES for irq in irqs)


def test_virt_board_values():
    # ARCHITECTURE.md's table, which is QEMU 7.2's virt_memmap.
    assert (memmap.TEST_BASE, memmap.RTC_BASE, memmap.RTC_IRQ) == (0x100000, 0x101000, 11)
    assert (memmap.CLINT_BASE, memmap.CLINT_SIZE) == (0x2000000, 0x10000)
    assert (memmap.PLIC_BASE, memmap.PLIC_SIZE) == (0xC000000, 0x600000)
    assert (memmap.UART0_BASE, memmap.UART0_SIZE, memmap.UART0_IRQ) == (0x10000000, 0x100, 10)
    assert memmap.RAM_BASE == 0x80000000
    assert memmap.TIMEBASE_FREQUENCY == 10_000_000


def test_virtio_slots():
    assert [memmap.virtio_mmio_base(i) for i in (0, 7)] == [0x10001000, 0x10008000]
    assert [memmap.virtio_mmio_irq(i) for i in (0, 7)] == [1, 8]
    for bad in (-1, memmap.VIRTIO_MMIO_COUNT):
        with pytest.raises(ValueError):
            memmap.virtio_mmio_base(bad)
