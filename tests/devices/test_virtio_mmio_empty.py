"""vmkit/devices/virtio_mmio_empty.py: an empty slot reads as QEMU's does."""

from vmkit.devices.virtio_mmio_empty import VirtioMmioEmpty


def test_identification_registers():
    dev = VirtioMmioEmpty()
    assert dev.read(0x000, 4) == 0x74726976     # "virt"
    assert dev.read(0x004, 4) == 2
    assert dev.read(0x008, 4) == 0              # no device: drivers skip the slot
    assert dev.read(0x00C, 4) == 0x554D4551     # "QEMU"


def test_everything_else_reads_zero_and_writes_are_ignored():
    dev = VirtioMmioEmpty()
    for off in range(0x010, 0x100, 4):
        dev.write(off, 4, 0xFFFFFFFF)
        assert dev.read(off, 4) == 0
    assert dev.read(0x100, 1) == 0 and dev.read(0x1FC, 8) == 0   # config space
    assert dev.read(0x000, 2) == 0 and dev.read(0x002, 4) == 0   # bad width/alignment
    assert dev.read(0x004, 4) == 2                                # unchanged by writes
