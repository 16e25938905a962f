"""The code cache: where translations live, mapped W^X, with a size limit.

One memfd is mapped twice: a read-write view that only this module writes
through, and a read-execute view that the hart runs.  No page is ever both
writable and executable, and nothing outside the cache is ever made
executable (shared/design/RELIABILITY.md, the translating tier).  memfd,
mmap and ftruncate are allowed by the worker's seccomp filter.

Translations arrive as relocatable ELF objects (llvmlite's emit_object).
`parse_object` (in the compile thread) reads their allocated sections
(.text, constant pools) and the x86-64 relocations between them (System V
ABI AMD64 supplement 4.4); `install` (in the VM thread) places them and
applies the relocations: a small static linker.  An object that refers to
anything outside itself is refused, so translated code can only call what
its IR names by absolute address (helpers.py).

Allocation is a bump pointer; when the cache is full the caller flushes it
whole (QEMU's and RVVM's policy), which is safe because translations never
link to each other: every exit returns to the interpreter.
"""

import ctypes
import mmap
import os
import struct

import numpy as np

from vmkit.cpu.jitconfig import JitError

ALIGN = 64
# The cursor array's slots.
CUR_USED, CUR_CAPACITY, CUR_RX, CUR_FULL, CUR_TRACES, CUR_INSNS, CUR_SIZE = 0, 1, 2, 3, 4, 5, 8

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


MAP_32BIT = 0x40       # x86-64 Linux: map in the low 2 GiB


def _map(fd: int, size: int, prot: int, flags: int = 0) -> int:
    addr = _libc.mmap(None, size, prot, mmap.MAP_SHARED | flags, fd, 0)
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
        # The executable view in the low 2 GiB: the stencils (stencils.py) are
        # small-code-model code, whose holes may be RIP-relative 32-bit fields.
        try:
            self._rx = _map(self._fd, size, mmap.PROT_READ | mmap.PROT_EXEC, MAP_32BIT)
        except CodeCacheError:
            self._rx = _map(self._fd, size, mmap.PROT_READ | mmap.PROT_EXEC)
        # cursor[CUR_USED] is the bump pointer, shared with emit.py (numba),
        # which writes through `rw`, a numpy view of the writable mapping.
        self.cursor = np.zeros(CUR_SIZE, np.int64)
        self.cursor[CUR_CAPACITY] = size
        self.cursor[CUR_RX] = self._rx
        self.rw = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(self._rw))
        self.flushes = 0

    @property
    def rx_base(self) -> int:
        return self._rx

    @property
    def used(self) -> int:
        return int(self.cursor[CUR_USED])

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
        self.cursor[CUR_USED] = 0
        self.cursor[CUR_FULL] = 0
        self.flushes += 1

    def install(self, obj: "LinkableObject") -> int:
        """Place a parsed object in the cache; returns the executable address of its entry."""
        start = self.used
        placed = []
        pos = start
        for align, data in obj.sections:
            pos = (pos + align - 1) & ~(align - 1)
            placed.append(pos)
            pos += len(data)
        if pos > self.size:
            raise CacheFull
        images = [bytearray(data) for _, data in obj.sections]
        for target, where, kind, sym_sec, sym_value, addend in obj.relocations:
            s = self._rx + placed[sym_sec] + sym_value
            p = self._rx + placed[target] + where
            if kind == R_X86_64_64:
                struct.pack_into("<Q", images[target], where, (s + addend) & (2**64 - 1))
            elif kind == R_X86_64_PC64:
                struct.pack_into("<q", images[target], where, s + addend - p)
            else:  # PC32 / PLT32: checked by parse_object
                delta = s + addend - p
                if not -2**31 <= delta < 2**31:
                    raise CodeCacheError("a relocation does not fit in 32 bits")
                struct.pack_into("<i", images[target], where, delta)
        for off, image in zip(placed, images):
            ctypes.memmove(self._rw + off, bytes(image), len(image))
        self.cursor[CUR_USED] = pos
        return self._rx + placed[obj.entry[0]] + obj.entry[1]


class LinkableObject:
    """The allocated sections of an ELF object and the relocations between
    them, checked and ready to place (`parse_object`)."""

    def __init__(self, sections, relocations, entry):
        self.sections = sections          # [(alignment, bytes)]
        self.relocations = relocations    # [(section, offset, type, symbol's section, value, addend)]
        self.entry = entry                # (section, offset) of the symbol asked for

    @property
    def size(self) -> int:
        return sum(len(d) for _, d in self.sections)


# ELF64 (System V gABI 4.1): header fields, section headers, symbols, relocations.
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
SHT_PROGBITS, SHT_SYMTAB, SHT_RELA, SHT_NOBITS = 1, 2, 4, 8
SHF_WRITE, SHF_ALLOC = 1, 2
EM_X86_64 = 62
SHN_UNDEF = 0
STT_FUNC = 2
RELOCATIONS = (R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_PC64)


def parse_object(obj: bytes, symbol: str) -> LinkableObject:
    """Read an x86-64 relocatable object: every allocated section, the
    relocations between them, and where `symbol` is.  Refuses (CodeCacheError)
    writable data, unknown relocation types and any reference to a symbol
    outside the object.  Runs in the compile thread: no cache access."""
    sections, symbols, relocations = elf_tables(obj)
    index = {}                            # ELF section index -> our section number
    placed = []
    for i, (_name, kind, flags, align, data, size) in enumerate(sections):
        if not flags & SHF_ALLOC or size == 0:
            continue
        if flags & SHF_WRITE or kind == SHT_NOBITS:
            raise CodeCacheError("translation has writable data")
        if kind != SHT_PROGBITS:
            continue
        index[i] = len(placed)
        placed.append((max(ALIGN, align or 1), data))
    entry = None
    for name, shndx, value, _size, _is_func in symbols:
        if shndx in index and name == symbol:
            entry = (index[shndx], value)
    if entry is None:
        raise CodeCacheError(f"object has no symbol {symbol}")
    out = []
    for target, where, rtype, sym, addend in relocations:
        if target not in index:
            continue
        name, shndx, value = symbols[sym][0], symbols[sym][1], symbols[sym][2]
        if shndx == SHN_UNDEF or shndx not in index:
            raise CodeCacheError(f"translation refers to {name or f'section {shndx}'} outside itself")
        if rtype not in RELOCATIONS:
            raise CodeCacheError(f"relocation type {rtype} in a translation")
        out.append((index[target], where, rtype, index[shndx], value, addend))
    return LinkableObject(placed, out, entry)


def elf_tables(obj: bytes):
    """The sections, symbols and relocations of an ELF64 x86-64 object:
    sections [(name, type, flags, alignment, bytes, size)] by ELF index, symbols
    [(name, section index, value, size, is_function)] by symbol index, and
    relocations [(section index, offset, type, symbol index, addend)]."""
    try:
        return _elf_tables(obj)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:
        raise CodeCacheError(f"malformed object: {e}") from None


def _elf_tables(obj: bytes):
    (ident, _type, machine, _v, _entry, _phoff, shoff, _flags, _ehsize, _phentsize, _phnum,
     shentsize, shnum, shstrndx) = _EHDR.unpack_from(obj, 0)
    if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1 or machine != EM_X86_64:
        raise CodeCacheError("not a little-endian x86-64 ELF64 object")
    shdrs = [_SHDR.unpack_from(obj, shoff + i * shentsize) for i in range(shnum)]

    def name_in(table, at):
        return table[at:table.index(b"\0", at)].decode()

    shstr = shdrs[shstrndx]
    shnames = obj[shstr[4]:shstr[4] + shstr[5]]
    sections = []
    for (name, kind, flags, _addr, off, size, _link, _info, align, _es) in shdrs:
        data = b"" if kind == SHT_NOBITS else obj[off:off + size]
        sections.append((name_in(shnames, name), kind, flags, align, data, size))
    symtab = next((h for h in shdrs if h[1] == SHT_SYMTAB), None)
    if symtab is None:
        raise CodeCacheError("object has no symbol table")
    strtab = shdrs[symtab[6]]
    names = obj[strtab[4]:strtab[4] + strtab[5]]
    symbols = []
    for k in range(symtab[5] // _SYM.size):
        st_name, info, _other, shndx, value, size = _SYM.unpack_from(obj, symtab[4] + k * _SYM.size)
        symbols.append((name_in(names, st_name), shndx, value, size, info & 0xF == STT_FUNC))
    relocations = []
    for (_name, kind, _flags, _addr, off, size, _link, info, _align, _es) in shdrs:
        if kind != SHT_RELA:
            continue
        for k in range(size // _RELA.size):
            where, rinfo, addend = _RELA.unpack_from(obj, off + k * _RELA.size)
            relocations.append((info, where, rinfo & 0xFFFFFFFF, rinfo >> 32, addend))
    return sections, symbols, relocations
