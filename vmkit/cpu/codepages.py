"""Which RAM holds translated code, and the write check that keeps it fresh.

The translating tier (translator.py) keys translations by RAM offset.  A
page that holds translations is marked in `pages[page, P_CODE]`, one bit per
64-byte chunk that some translation was made from.  Such a page never gets
a store-TLB entry (mmu.tlb_fill; QEMU's TLB_NOTDIRTY), so every store into
it, by the interpreter or by translated code, takes the slow path, which
calls `code_write` before the bytes change.  A write that touches a marked
chunk bumps the page's version: every translation made from the page is
stale from then on (the lookup compares versions), which makes invalidation
one O(1) operation whoever writes, and fence.i needs no flush at all.
Device DMA and image loading reach the same operation from Python
(Translator.invalidate_range).
"""

import numpy as np

from vmkit.cpu import state as S
from vmkit.cpu.jit import njit


@njit
def code_hash(roff):
    """Slot in jtab of the block that starts at RAM offset roff."""
    return ((roff >> 1) ^ (roff >> 17)) & (S.JTAB_SIZE - 1)


@njit
def chunk_bits(first, last):
    """Mask of the 64-byte chunks holding page offsets first..last (inclusive)."""
    lo = first >> 6
    hi = last >> 6
    if hi - lo >= 63:
        return np.int64(-1)
    return ((np.int64(1) << (hi - lo + 1)) - 1) << lo


@njit
def invalidate_page(pages, page):
    pages[page, S.P_VER] += 1
    pages[page, S.P_CODE] = 0


@njit
def code_write_page(pages, page, first, last):
    m = pages[page, S.P_CODE]
    if m != 0 and (m & chunk_bits(first, last)) != 0:
        invalidate_page(pages, page)


@njit
def code_write(pages, roff, size):
    """RAM bytes [roff, roff+size) are about to change (size <= 4096)."""
    end = roff + size - 1
    if (end >> 12) != (roff >> 12):  # crosses into the next page
        code_write_page(pages, roff >> 12, roff & 0xFFF, 0xFFF)
        code_write_page(pages, end >> 12, 0, end & 0xFFF)
    else:
        code_write_page(pages, roff >> 12, roff & 0xFFF, end & 0xFFF)
