"""The boot ROM at 0x1000: QEMU's reset vector and the fw_dynamic_info record.

QEMU's `virt` puts five instructions at 0x1000 that load a0 = mhartid,
a1 = device-tree address, a2 = &fw_dynamic_info and jump to the firmware at
0x8000_0000, followed by the two addresses and the fw_dynamic_info struct
(OpenSBI include/sbi/fw_dynamic.h: magic "OSBI", version 2, next_addr,
next_mode, options, boot_hart).  The ROM here holds the same bytes; the
board performs the reset vector's register set-up itself and starts the hart
at the firmware entry (our core fetches only from RAM), which leaves the
guest in exactly the state the ROM code would have produced.
"""

import struct

from vmkit.machine.memmap import BOOT_ROM_BASE, BOOT_ROM_SIZE

FW_DYNAMIC_INFO_MAGIC = 0x4942534F  # "OSBI"
FW_DYNAMIC_INFO_VERSION = 2
FW_DYNAMIC_INFO_NEXT_MODE_S = 1
# Offsets inside the ROM (QEMU: the vector is 8 words, the info follows).
RESET_VECTOR_WORDS = (
    0x00000297,  # auipc t0, 0
    0x02828613,  # addi  a2, t0, 40      (&fw_dynamic_info)
    0xF1402573,  # csrr  a0, mhartid
    0x0202B583,  # ld    a1, 32(t0)      (fdt address)
    0x0182B283,  # ld    t0, 24(t0)      (start address)
    0x00028067,  # jr    t0
)
START_ADDR_OFFSET = 24
FDT_ADDR_OFFSET = 32
FW_DYNAMIC_INFO_OFFSET = 40


class BootRom:
    """Read-only memory at BOOT_ROM_BASE; writes are ignored."""

    def __init__(self, start_addr: int, fdt_addr: int, next_addr: int | None) -> None:
        rom = bytearray(BOOT_ROM_SIZE)
        for i, word in enumerate(RESET_VECTOR_WORDS):
            struct.pack_into("<I", rom, 4 * i, word)
        struct.pack_into("<QQ", rom, START_ADDR_OFFSET, start_addr, fdt_addr)
        if next_addr is not None:
            struct.pack_into("<QQQQQQ", rom, FW_DYNAMIC_INFO_OFFSET, FW_DYNAMIC_INFO_MAGIC,
                             FW_DYNAMIC_INFO_VERSION, next_addr, FW_DYNAMIC_INFO_NEXT_MODE_S, 0, 0)
        self.data = bytes(rom)

    @property
    def fw_dynamic_info_addr(self) -> int:
        return BOOT_ROM_BASE + FW_DYNAMIC_INFO_OFFSET

    def read(self, offset: int, size: int) -> int:
        if offset + size > len(self.data):
            return 0
        return int.from_bytes(self.data[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        pass  # ROM

    def reset(self) -> None:
        pass
