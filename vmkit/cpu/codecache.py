"""The code cache: where translations live, mapped W^X, with a size limit.

One memfd is mapped twice: a read-write view that only this module writes
through, and a read-execute view that the hart runs.  No page is ever both
writable and executable, and nothing outside the cache is ever made
executable (shared/design/RELIABILITY.md, the translating tier).  memfd,
mmap and ftruncate are allowed by the worker's seccomp filter.

Translations arrive as relocatable ELF objects (llvmlite's emit_object);
`install` is a small static linker for them: it copies the allocated
sections (.text, constant pools) into the cache and applies the x86-64
relocations between them (System V ABI AMD64 supplement, 4.4).  An object
that refers to anything outside itself is refused, so translated code can
only call what its IR names by absolute address (helpers.py).

Allocation is a bump pointer; when the cache is full the caller flushes it
whole (QEMU's and RVVM's policy), which is safe because translations never
link to each other: every exit returns to the interpreter.
"""

import ctypes
import io
import mmap
import os
import struct

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from vmkit.cpu.jitconfig import JitError

ALIGN = 64

R_X86_64_64 = 1
R_X86_64_PC32 = 2
R_X86_64_PLT32 = 4
R_X86_64_32S = 11
R_X86_64_PC64 = 24

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value


class CodeCacheError(JitError):
    """The cache could not be mapped, or an object cannot be linked into it."""


class CacheFull(Exception):
    """No room left: flush the cache and try again."""


def _map(fd: int, size: int, prot: int) -> int:
    addr = _libc.mmap(None, size, prot, mmap.MAP_SHARED, fd, 0)
    if addr in (None, MAP_FAILED):
        raise CodeCacheError(f"mmap of the code cache failed: {os.strerror(ctypes.get_errno())}")
    return addr


class CodeCache:
    """A bounded W^X code buffer of `size` bytes."""

    def __init__(self, size: int):
        if size < 1 << 16:
            raise CodeCacheError(f"code cache of {size} bytes is too small (at least 64 KiB)")
        self.size = size
        try:
            self._fd = os.memfd_create("vmkit-code-cache", os.MFD_CLOEXEC)
            os.ftruncate(self._fd, size)
        except OSError as e:
            raise CodeCacheError(f"cannot create the code cache: {e.strerror}") from None
        self._rw = _map(self._fd, size, mmap.PROT_READ | mmap.PROT_WRITE)
        self._rx = _map(self._fd, size, mmap.PROT_READ | mmap.PROT_EXEC)
        self.used = 0
        self.flushes = 0

    def close(self) -> None:
        if self._fd >= 0:
            _libc.munmap(self._rw, self.size)
            _libc.munmap(self._rx, self.size)
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()

    def flush(self) -> None:
        """Forget every translation (the caller drops all references first)."""
        self.used = 0
        self.flushes += 1

    def install(self, obj: bytes, symbol: str) -> int:
        """Link the ELF object into the cache; returns the executable address of `symbol`."""
        elf = ELFFile(io.BytesIO(obj))
        if elf["e_machine"] != "EM_X86_64":
            raise CodeCacheError(f"object for {elf['e_machine']}, not x86-64")
        placed = {}      # section index -> offset in the cache
        images = {}
        start = self.used
        pos = start
        for i, sec in enumerate(elf.iter_sections()):
            if not sec["sh_flags"] & 0x2 or sec["sh_type"] != "SHT_PROGBITS":  # SHF_ALLOC
                if sec["sh_flags"] & 0x2 and sec["sh_type"] == "SHT_NOBITS" and sec["sh_size"]:
                    raise CodeCacheError(f"translation has a writable section {sec.name}")
                continue
            if sec["sh_flags"] & 0x1:  # SHF_WRITE: translations keep no data of their own
                raise CodeCacheError(f"translation has a writable section {sec.name}")
            align = max(ALIGN, sec["sh_addralign"] or 1)
            pos = (pos + align - 1) & ~(align - 1)
            placed[i] = pos
            images[i] = bytearray(sec.data())
            pos += sec["sh_size"]
        if pos > self.size:
            raise CacheFull
        symtab = elf.get_section_by_name(".symtab")
        entry = None
        for sym in symtab.iter_symbols():
            if sym.name == symbol:
                entry = self._rx + placed[sym["st_shndx"]] + sym["st_value"]
        if entry is None:
            raise CodeCacheError(f"object has no symbol {symbol}")
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection):
                continue
            target = sec["sh_info"]
            if target not in placed:
                continue
            for rel in sec.iter_relocations():
                sym = symtab.get_symbol(rel["r_info_sym"])
                shndx = sym["st_shndx"]
                if not isinstance(shndx, int) or shndx not in placed:
                    raise CodeCacheError(f"translation refers to {sym.name or shndx!r} outside itself")
                s = self._rx + placed[shndx] + sym["st_value"]
                p = self._rx + placed[target] + rel["r_offset"]
                a = rel["r_addend"]
                kind = rel["r_info_type"]
                where = rel["r_offset"]
                if kind == R_X86_64_64:
                    struct.pack_into("<Q", images[target], where, (s + a) & (2**64 - 1))
                elif kind == R_X86_64_PC64:
                    struct.pack_into("<q", images[target], where, s + a - p)
                elif kind in (R_X86_64_PC32, R_X86_64_PLT32):
                    struct.pack_into("<i", images[target], where, s + a - p)
                else:
                    raise CodeCacheError(f"relocation type {kind} in a translation")
        for i, off in placed.items():
            ctypes.memmove(self._rw + off, bytes(images[i]), len(images[i]))
        self.used = pos
        return entry
