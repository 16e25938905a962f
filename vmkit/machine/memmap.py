"""The physical memory map of QEMU's riscv64 `virt` board (QEMU 7.2 hw/riscv/virt.c).

One place for each fact: every base address, size, interrupt number and clock
of the board lives here; the bus, the device tree and the boot code import it.

::

    0x0000_0000 +----------------------------+
                | (unmapped)                 |
    0x0000_1000 +----------------------------+
                | boot ROM (reset vector,    |  BOOT_ROM_*
                |  fw_dynamic_info)          |
    0x0001_0000 +----------------------------+
                | (unmapped)                 |
    0x0010_0000 +----------------------------+
                | test finisher (sifive,test)|  TEST_*
    0x0010_1000 +----------------------------+
                | goldfish RTC        irq 11 |  RTC_*
    0x0010_2000 +----------------------------+
                | (unmapped)                 |
    0x0200_0000 +----------------------------+
                | CLINT (msip, mtimecmp,     |  CLINT_*  (inside the CPU core)
                |  mtime)                    |
    0x0201_0000 +----------------------------+
                | (unmapped)                 |
    0x0c00_0000 +----------------------------+
                | PLIC (96 sources)          |  PLIC_*
    0x0c60_0000 +----------------------------+
                | (unmapped)                 |
    0x1000_0000 +----------------------------+
                | UART0 ns16550a      irq 10 |  UART0_*
    0x1000_0100 +----------------------------+
                | (unmapped)                 |
    0x1000_1000 +----------------------------+
                | virtio-mmio slot 0   irq 1 |  virtio_mmio_base(i),
                | ...  (0x1000 each)         |  virtio_mmio_irq(i)
                | virtio-mmio slot 7   irq 8 |
    0x1000_9000 +----------------------------+
                | (unmapped)                 |
    0x8000_0000 +----------------------------+
                | RAM (-m bytes)             |  RAM_BASE
                +----------------------------+

QEMU also maps fw_cfg (0x1010_0000), two pflash banks (0x2000_0000), the
platform bus (0x0400_0000) and a PCIe host (0x3000_0000); vmkit has none of
them (see machine/devicetree.py for why each is left out).
"""

from typing import NamedTuple

# --- boot ROM: QEMU's MROM, holding the reset vector and fw_dynamic_info ----------
BOOT_ROM_BASE = 0x0000_1000
BOOT_ROM_SIZE = 0x0000_F000

# --- test finisher (SiFive test device: poweroff, reset, exit code) ---------------
TEST_BASE = 0x0010_0000
TEST_SIZE = 0x0000_1000

# --- goldfish real-time clock ---------------------------------------------------
RTC_BASE = 0x0010_1000
RTC_SIZE = 0x0000_1000
RTC_IRQ = 11

# --- CLINT: implemented by the CPU core (vmkit/cpu), listed here for the map ------
CLINT_BASE = 0x0200_0000
CLINT_SIZE = 0x0001_0000

# --- PLIC -----------------------------------------------------------------------
PLIC_BASE = 0x0C00_0000
# QEMU sizes the window for its maximum of 512 harts x 2 contexts:
# 0x20_0000 + 1024 * 0x1000 = 0x60_0000 (VIRT_PLIC_SIZE).
PLIC_SIZE = 0x0060_0000
# Sources 0..95; 0 means "no interrupt", so 1..95 are usable (VIRT_IRQCHIP_NUM_SOURCES).
PLIC_NUM_SOURCES = 96
# Priorities 1..7 (0 = never interrupt) (VIRT_IRQCHIP_NUM_PRIO).
PLIC_NUM_PRIORITIES = 7

# --- UART0 (ns16550a) -------------------------------------------------------------
UART0_BASE = 0x1000_0000
UART0_SIZE = 0x0000_0100
UART0_IRQ = 10
# The input clock QEMU advertises in the device tree (a 1.8432 MHz crystal x 2).
UART0_CLOCK_FREQUENCY = 3_686_400

# --- virtio-mmio transports: slot i at VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE ---
VIRTIO_MMIO_BASE = 0x1000_1000
VIRTIO_MMIO_SIZE = 0x0000_1000
VIRTIO_MMIO_COUNT = 8
VIRTIO_MMIO_IRQ_BASE = 1

# --- RAM --------------------------------------------------------------------------
RAM_BASE = 0x8000_0000

# --- clocks -------------------------------------------------------------------------
# mtime ticks per second; the device tree's /cpus/timebase-frequency.
TIMEBASE_FREQUENCY = 10_000_000


def virtio_mmio_base(slot: int) -> int:
    """Guest-physical base of virtio-mmio transport `slot` (0..7)."""
    _check_slot(slot)
    return VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SIZE


def virtio_mmio_irq(slot: int) -> int:
    """PLIC source number of virtio-mmio transport `slot` (0..7)."""
    _check_slot(slot)
    return VIRTIO_MMIO_IRQ_BASE + slot


def _check_slot(slot: int) -> None:
    if not 0 <= slot < VIRTIO_MMIO_COUNT:
        raise ValueError(f"virtio-mmio slot {slot} out of range 0..{VIRTIO_MMIO_COUNT - 1}")


class Region(NamedTuple):
    """One fixed MMIO window of the board."""

    name: str
    base: int
    size: int
    irq: int | None = None

    @property
    def end(self) -> int:
        """First address past the region."""
        return self.base + self.size


# Every fixed MMIO window, in address order (RAM is sized at run time).
MMIO_REGIONS: tuple[Region, ...] = (
    Region("boot-rom", BOOT_ROM_BASE, BOOT_ROM_SIZE),
    Region("test", TEST_BASE, TEST_SIZE),
    Region("rtc", RTC_BASE, RTC_SIZE, RTC_IRQ),
    Region("clint", CLINT_BASE, CLINT_SIZE),
    Region("plic", PLIC_BASE, PLIC_SIZE),
    Region("uart0", UART0_BASE, UART0_SIZE, UART0_IRQ),
    *(
        Region(f"virtio-mmio{i}", virtio_mmio_base(i), VIRTIO_MMIO_SIZE, virtio_mmio_irq(i))
        for i in range(VIRTIO_MMIO_COUNT)
    ),
)
