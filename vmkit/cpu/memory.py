"""Guest loads and stores: the slow paths behind the TLB, CLINT, MMIO exits.

The interpreter handles aligned RAM accesses that hit in the TLB itself;
everything else comes here: TLB misses (page walk + fill), misaligned
accesses (done byte by byte, as QEMU allows for ordinary loads/stores), the
CLINT (kept inside the core so timer interrupts never leave numba; SiFive
CLINT layout: msip at +0x0, mtimecmp at +0x4000, mtime at +0xbff8), and
accesses to other physical addresses, which become an MMIO exit to Python.

Status codes returned with each value: MEM_OK, MEM_TRAP (st[TRAP_*] set),
MEM_MMIO (st[MMIO_*] filled; the interpreter returns EXIT_MMIO).
RAM offsets are always range-checked: nothing outside the RAM array is
ever indexed (shared/design/RELIABILITY.md).
"""

import numpy as np

from vmkit.cpu import state as S
from vmkit.cpu.codepages import code_write
from vmkit.cpu.jit import njit
from vmkit.cpu.mmu import ACCESS_LOAD, ACCESS_STORE, access_fault_cause, in_ram, translate_cached

MEM_OK = 0
MEM_TRAP = 1
MEM_MMIO = 2

CLINT_BASE = 0x0200_0000
CLINT_SIZE = 0x1_0000
CLINT_MSIP = 0x0
CLINT_MTIMECMP = 0x4000
CLINT_MTIME = 0xBFF8


@njit
def raise_exception(st, cause, tval):
    st[S.TRAP_PENDING] = 1
    st[S.TRAP_CAUSE] = cause
    st[S.TRAP_TVAL] = tval


@njit
def ram_read(ram8, off, size):
    v = 0
    for i in range(size):
        v |= np.int64(ram8[off + i]) << (8 * i)
    return v


@njit
def ram_write(ram8, off, size, value):
    for i in range(size):
        ram8[off + i] = (value >> (8 * i)) & 0xFF


@njit
def merge_field(old, shift, size, value):
    """Replace `size` bytes at byte `shift` of a 64-bit register."""
    if size == 8:
        return value
    mask = ((1 << (8 * size)) - 1) << (8 * shift)
    return (old & ~mask) | ((value << (8 * shift)) & mask)


@njit
def clint_load(st, off, size):
    if off < CLINT_MSIP + 4:
        return st[S.MSIP] >> (8 * (off & 3)) if size <= 4 else st[S.MSIP]
    if CLINT_MTIMECMP <= off < CLINT_MTIMECMP + 8:
        return st[S.MTIMECMP] >> (8 * (off - CLINT_MTIMECMP))
    if CLINT_MTIME <= off < CLINT_MTIME + 8:
        return st[S.MTIME] >> (8 * (off - CLINT_MTIME))
    return 0


@njit
def clint_store(st, off, size, value):
    if off < CLINT_MSIP + 4:
        if (off & 3) == 0:
            st[S.MSIP] = value & 1
    elif CLINT_MTIMECMP <= off < CLINT_MTIMECMP + 8:
        st[S.MTIMECMP] = merge_field(st[S.MTIMECMP], off - CLINT_MTIMECMP, size, value)
    elif CLINT_MTIME <= off < CLINT_MTIME + 8:
        st[S.MTIME] = merge_field(st[S.MTIME], off - CLINT_MTIME, size, value)


@njit
def size_mask(v, size):
    if size == 8:
        return v
    return v & ((1 << (8 * size)) - 1)


@njit
def mmio_exit(st, paddr, vaddr, size, is_store, value):
    st[S.MMIO_ADDR] = paddr
    st[S.MMIO_VADDR] = vaddr
    st[S.MMIO_SIZE] = size
    st[S.MMIO_IS_STORE] = is_store
    st[S.MMIO_VALUE] = value


@njit
def load_slow(csr, st, tlb_tag, tlb_off, pages, ram8, ram64, vaddr, size):
    """Load `size` bytes (zero-extended).  Returns (status, value)."""
    st[S.STAT_SLOW_ACCESSES] += 1
    if vaddr & (size - 1):
        st[S.STAT_MISALIGNED] += 1
    paddr, cause = translate_cached(csr, st, tlb_tag, tlb_off, pages, ram64, vaddr, ACCESS_LOAD)
    if cause >= 0:
        raise_exception(st, cause, vaddr)
        return MEM_TRAP, 0
    first = 4096 - (vaddr & 0xFFF)
    if in_ram(st, paddr, min(size, first)):
        if size <= first:
            return MEM_OK, ram_read(ram8, paddr - st[S.RAM_BASE], size)
        # Crosses into the next virtual page: translate it too.
        vaddr2 = vaddr + first
        paddr2, cause = translate_cached(csr, st, tlb_tag, tlb_off, pages, ram64, vaddr2, ACCESS_LOAD)
        if cause >= 0:
            raise_exception(st, cause, vaddr2)
            return MEM_TRAP, 0
        if not in_ram(st, paddr2, size - first):
            raise_exception(st, access_fault_cause(ACCESS_LOAD), vaddr2)
            return MEM_TRAP, 0
        lo = ram_read(ram8, paddr - st[S.RAM_BASE], first)
        hi = ram_read(ram8, paddr2 - st[S.RAM_BASE], size - first)
        return MEM_OK, lo | (hi << (8 * first))
    if CLINT_BASE <= paddr < CLINT_BASE + CLINT_SIZE:
        return MEM_OK, size_mask(clint_load(st, paddr - CLINT_BASE, size), size)
    mmio_exit(st, paddr, vaddr, size, 0, 0)
    return MEM_MMIO, 0


@njit
def store_slow(csr, st, tlb_tag, tlb_off, pages, ram8, ram64, vaddr, size, value):
    """Store the low `size` bytes of value.  Returns a status."""
    st[S.STAT_SLOW_ACCESSES] += 1
    if vaddr & (size - 1):
        st[S.STAT_MISALIGNED] += 1
    paddr, cause = translate_cached(csr, st, tlb_tag, tlb_off, pages, ram64, vaddr, ACCESS_STORE)
    if cause >= 0:
        raise_exception(st, cause, vaddr)
        return MEM_TRAP
    first = 4096 - (vaddr & 0xFFF)
    if in_ram(st, paddr, min(size, first)):
        if size <= first:
            code_write(pages, paddr - st[S.RAM_BASE], size)
            ram_write(ram8, paddr - st[S.RAM_BASE], size, value)
            return MEM_OK
        vaddr2 = vaddr + first
        paddr2, cause = translate_cached(csr, st, tlb_tag, tlb_off, pages, ram64, vaddr2, ACCESS_STORE)
        if cause >= 0:
            raise_exception(st, cause, vaddr2)
            return MEM_TRAP
        if not in_ram(st, paddr2, size - first):
            raise_exception(st, access_fault_cause(ACCESS_STORE), vaddr2)
            return MEM_TRAP
        code_write(pages, paddr - st[S.RAM_BASE], first)
        code_write(pages, paddr2 - st[S.RAM_BASE], size - first)
        ram_write(ram8, paddr - st[S.RAM_BASE], first, value)
        ram_write(ram8, paddr2 - st[S.RAM_BASE], size - first, value >> (8 * first))
        return MEM_OK
    if CLINT_BASE <= paddr < CLINT_BASE + CLINT_SIZE:
        clint_store(st, paddr - CLINT_BASE, size, size_mask(value, size))
        return MEM_OK
    mmio_exit(st, paddr, vaddr, size, 1, size_mask(value, size))
    return MEM_MMIO
