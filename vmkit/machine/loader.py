"""Loading firmware, kernels and initrds into guest RAM, as QEMU's virt does.

ELF files are loaded by their program headers (physical addresses); anything
else is a raw image copied to a fixed address (a Linux `Image` at
0x8020_0000, OpenSBI's fw_dynamic.bin at 0x8000_0000).  Every failure is a
`LoadError` whose message names the file and what is wrong with it.
"""

import struct
from pathlib import Path

import numpy as np

ELF_MAGIC = b"\x7fELF"
EM_RISCV = 243
PT_LOAD = 1
# RISC-V Linux Image header (Documentation/arch/riscv/boot-image-header.rst):
# magic2 "RSC\x05" at offset 0x38.
IMAGE_MAGIC2_OFFSET = 0x38
IMAGE_MAGIC2 = b"RSC\x05"


class LoadError(Exception):
    """A guest image could not be loaded."""


class GuestMemory:
    """Guest RAM as seen by loaders: bounds-checked copies into the array."""

    def __init__(self, ram: np.ndarray, base: int) -> None:
        self.ram = ram
        self.base = base
        self.size = len(ram)

    @property
    def end(self) -> int:
        return self.base + self.size

    def write(self, addr: int, data: bytes, what: str) -> None:
        off = addr - self.base
        if off < 0 or off + len(data) > self.size:
            raise LoadError(
                f"{what} does not fit in guest RAM: needs {addr:#x}-{addr + len(data):#x}, "
                f"RAM is {self.base:#x}-{self.end:#x} (use a larger -m)")
        self.ram[off:off + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def read(self, addr: int, size: int) -> bytes:
        off = addr - self.base
        if off < 0 or off + size > self.size:
            raise LoadError(f"read outside RAM at {addr:#x}")
        return self.ram[off:off + size].tobytes()


def read_file(path: str | Path, what: str) -> bytes:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise LoadError(f"{what} {p}: no such file") from None
    except IsADirectoryError:
        raise LoadError(f"{what} {p}: is a directory") from None
    except OSError as e:
        raise LoadError(f"{what} {p}: {e.strerror}") from None
    if not data:
        raise LoadError(f"{what} {p}: file is empty")
    return data


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def load_elf(data: bytes, mem: GuestMemory, what: str) -> tuple[int, int]:
    """Load an ELF64 RISC-V image's PT_LOAD segments; returns (entry, highest address)."""
    if len(data) < 64:
        raise LoadError(f"{what}: truncated ELF header")
    if data[4] != 2:
        raise LoadError(f"{what}: not a 64-bit ELF (RV64 needs ELFCLASS64)")
    if data[5] != 1:
        raise LoadError(f"{what}: not a little-endian ELF")
    (e_machine,) = struct.unpack_from("<H", data, 18)
    if e_machine != EM_RISCV:
        raise LoadError(f"{what}: ELF is for machine {e_machine}, not RISC-V ({EM_RISCV})")
    entry, phoff = struct.unpack_from("<QQ", data, 24)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    if phentsize < 56 or phnum == 0 or phoff + phnum * phentsize > len(data):
        raise LoadError(f"{what}: corrupt ELF program headers")
    top = 0
    loaded = 0
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > len(data):
            raise LoadError(f"{what}: corrupt ELF segment {i} (extends past the end of the file)")
        if p_memsz > mem.size:
            raise LoadError(f"{what}: ELF segment {i} is larger than guest RAM (use a larger -m)")
        seg = data[p_offset:p_offset + p_filesz] + bytes(p_memsz - p_filesz)
        mem.write(p_paddr, seg, f"{what} segment {i}")
        top = max(top, p_paddr + p_memsz)
        loaded += 1
    if not loaded:
        raise LoadError(f"{what}: ELF has no loadable segments")
    return entry, top


def load_image(path: str | Path, mem: GuestMemory, default_addr: int, what: str) -> tuple[int, int]:
    """Load an ELF or raw image; returns (entry, end address)."""
    data = read_file(path, what)
    if is_elf(data):
        return load_elf(data, mem, f"{what} {path}")
    if data[:4] == b"\x7fELF"[:4]:
        raise LoadError(f"{what} {path}: corrupt ELF")
    mem.write(default_addr, data, f"{what} {path}")
    return default_addr, default_addr + len(data)


def check_kernel_image(data: bytes, path) -> None:
    """A raw kernel must carry the RISC-V Image header (or be U-Boot/flat code we trust)."""
    if len(data) >= 0x40 and data[IMAGE_MAGIC2_OFFSET:IMAGE_MAGIC2_OFFSET + 4] == IMAGE_MAGIC2:
        return
    if data[:2] == b"\x1f\x8b":
        raise LoadError(f"kernel {path}: gzip-compressed; decompress it to a raw Image first")
