"""Address translation: Sv39/Sv48 page walks, PMP checks and the TLBs.

RISC-V Privileged ISA 1.12: 4.3.2 (virtual address translation process),
4.4/4.5 (Sv39, Sv48), 3.7 (physical memory protection).

The TLBs (one each for fetch, load and store; TinyEMU's design) cache only
pages that are in RAM, mapping a virtual page number to the RAM offset of the
page.  An entry is filled only after the walk has checked every permission
for the current effective privilege and status bits, so a hit needs no
further checks.  Tags are (vpn << TLB_CTX_BITS) | ctx, where ctx encodes
privilege, SUM, MXR, MPRV and MPP (update_tlb_ctx): a syscall or a SUM toggle
selects other entries instead of flushing.  satp writes, sfence.vma and PMP
changes flush all three TLBs.
Store entries are filled only once the PTE's D bit is set, so the first store
to a clean page always walks and sets D, as QEMU does.
"""

from vmkit.cpu import csrs as C
from vmkit.cpu import state as S
from vmkit.cpu.codepages import code_write
from vmkit.cpu.decode import srl, ult
from vmkit.cpu.jit import njit

ACCESS_FETCH = 0
ACCESS_LOAD = 1
ACCESS_STORE = 2

PTE_V = 1
PTE_R = 2
PTE_W = 4
PTE_X = 8
PTE_U = 16
PTE_G = 32
PTE_A = 64
PTE_D = 128
PTE_PPN_MASK = (1 << 44) - 1
# Svpbmt (bits 62:61) and Svnapot (bit 63) are not implemented: a PTE that
# uses them is a page fault (4.3.1); bits 60:54 are reserved.
PTE_RESERVED = -(1 << 54)

PMP_R = 1
PMP_W = 2
PMP_X = 4
PMP_A_SHIFT = 3
PMP_L = 0x80
PMP_ENTRIES = 16


@njit
def tlb_flush(tlb_tag):
    """Invalidate every entry of the three TLBs (only the logged ones are valid)."""
    n = tlb_tag[S.TLB_LOG, 0]
    if n < 0:
        for kind in range(3):
            tlb_tag[kind, :] = S.TLB_INVALID
    else:
        for i in range(1, n + 1):
            e = tlb_tag[S.TLB_LOG, i]
            tlb_tag[e // S.TLB_SIZE, e % S.TLB_SIZE] = S.TLB_INVALID
    tlb_tag[S.TLB_LOG, 0] = 0


@njit
def tlb_log_fill(tlb_tag, kind, idx):
    n = tlb_tag[S.TLB_LOG, 0]
    if 0 <= n < S.TLB_SIZE - 1:
        n += 1
        tlb_tag[S.TLB_LOG, n] = kind * S.TLB_SIZE + idx
        tlb_tag[S.TLB_LOG, 0] = n
    else:
        tlb_tag[S.TLB_LOG, 0] = -1  # too many to list: the next flush clears all


@njit
def tlb_flush_page(tlb_tag, vaddr):
    """Drop every entry for the page of vaddr, whatever its context (sfence.vma rs1)."""
    vpn = vaddr >> 12
    idx = vpn & (S.TLB_SIZE - 1)
    for kind in range(3):
        if (tlb_tag[kind, idx] >> S.TLB_CTX_BITS) == vpn:
            tlb_tag[kind, idx] = S.TLB_INVALID


@njit
def page_fault_cause(access):
    if access == ACCESS_FETCH:
        return C.CAUSE_FETCH_PAGE_FAULT
    if access == ACCESS_LOAD:
        return C.CAUSE_LOAD_PAGE_FAULT
    return C.CAUSE_STORE_PAGE_FAULT


@njit
def access_fault_cause(access):
    if access == ACCESS_FETCH:
        return C.CAUSE_FETCH_ACCESS
    if access == ACCESS_LOAD:
        return C.CAUSE_LOAD_ACCESS
    return C.CAUSE_STORE_ACCESS


@njit
def effective_priv(csr, st, access):
    """Privilege used for an access: MPRV makes M-mode loads/stores use MPP (3.1.6.3)."""
    priv = st[S.PRIV]
    if access != ACCESS_FETCH and priv == C.PRV_M:
        ms = csr[C.MSTATUS]
        if ms & C.MSTATUS_MPRV:
            return (ms >> C.MSTATUS_MPP_SHIFT) & 3
    return priv


@njit
def pmp_range(csr, i):
    """(lo, hi) byte range of PMP entry i from its registers, hi exclusive (3.7.1)."""
    cfg = (csr[C.PMPCFG0 + (i // 8) * 2] >> ((i % 8) * 8)) & 0xFF
    mode = (cfg >> PMP_A_SHIFT) & 3
    addr = csr[C.PMPADDR0 + i] & ((1 << 54) - 1)
    if mode == 0:
        return 0, 0
    if mode == 1:  # TOR
        lo = 0 if i == 0 else (csr[C.PMPADDR0 + i - 1] & ((1 << 54) - 1)) << 2
        return lo, addr << 2
    if mode == 2:  # NA4
        return addr << 2, (addr << 2) + 4
    # NAPOT: trailing ones of pmpaddr encode the size
    ones = 0
    while ones < 54 and (addr >> ones) & 1:
        ones += 1
    size = 1 << (ones + 3)
    base = (addr << 2) & ~(size - 1)
    return base, base + size


@njit
def pmp_decode(csr):
    """Recompute the decoded PMP table after a pmpcfg/pmpaddr write."""
    active = 0
    locked = 0
    for i in range(PMP_ENTRIES):
        cfg = (csr[C.PMPCFG0 + (i // 8) * 2] >> ((i % 8) * 8)) & 0xFF
        lo, hi = pmp_range(csr, i)
        csr[C.PMP_LO + i] = lo
        csr[C.PMP_HI + i] = hi
        csr[C.PMP_CFG + i] = cfg
        if (cfg >> PMP_A_SHIFT) & 3:
            active = i + 1
            if cfg & PMP_L:
                locked = 1
    csr[C.PMP_ACTIVE] = active
    csr[C.PMP_LOCKED] = locked


@njit
def pmp_check(csr, paddr, size, access, priv):
    """True when a `size`-byte access at paddr is allowed by PMP (3.7.1).

    The lowest-numbered entry that matches any byte decides; it must cover
    every byte.  With no match, M-mode is allowed and S/U are denied once
    any entry is configured.
    """
    active = csr[C.PMP_ACTIVE]
    if active == 0 or (priv == C.PRV_M and csr[C.PMP_LOCKED] == 0):
        return True
    end = paddr + size
    for i in range(active):
        cfg = csr[C.PMP_CFG + i]
        if (cfg >> PMP_A_SHIFT) & 3 == 0:
            continue
        lo = csr[C.PMP_LO + i]
        hi = csr[C.PMP_HI + i]
        if not (ult(paddr, hi) and ult(lo, end)):
            continue
        if ult(paddr, lo) or ult(hi, end):
            return False  # partial match
        if priv == C.PRV_M and not (cfg & PMP_L):
            return True
        if access == ACCESS_FETCH:
            return (cfg & PMP_X) != 0
        if access == ACCESS_LOAD:
            return (cfg & PMP_R) != 0
        return (cfg & PMP_W) != 0
    return priv == C.PRV_M


@njit
def update_tlb_ctx(csr, st):
    """Recompute the translation context after a privilege or mstatus change."""
    ms = csr[C.MSTATUS]
    ctx = st[S.PRIV]
    if ms & C.MSTATUS_SUM:
        ctx |= 4
    if ms & C.MSTATUS_MXR:
        ctx |= 8
    if ms & C.MSTATUS_MPRV:
        ctx |= 16 | (((ms >> C.MSTATUS_MPP_SHIFT) & 3) << 5)
    st[S.TLB_CTX] = ctx


@njit
def in_ram(st, paddr, size):
    off = paddr - st[S.RAM_BASE]
    return off >= 0 and off + size <= st[S.RAM_SIZE] and paddr >= 0


@njit
def translate(csr, st, pages, ram64, vaddr, access):
    """Virtual -> physical for one access.  Returns (paddr, cause); cause -1 = ok.

    Sets the A and D bits of the leaf PTE in RAM as QEMU does (4.3.2 step 7,
    hardware A/D update).
    """
    priv = effective_priv(csr, st, access)
    satp = csr[C.SATP]
    mode = srl(satp, 60)
    if priv == C.PRV_M or mode == C.SATP_MODE_BARE:
        return vaddr, -1
    levels = 3 if mode == C.SATP_MODE_SV39 else 4
    va_bits = 12 + 9 * levels
    # The address must be sign-extended from bit va_bits-1 (4.4.1).
    if (vaddr >> (va_bits - 1)) != 0 and (vaddr >> (va_bits - 1)) != -1:
        return 0, page_fault_cause(access)
    ms = csr[C.MSTATUS]
    table = (satp & PTE_PPN_MASK) << 12
    for level in range(levels - 1, -1, -1):
        idx = (vaddr >> (12 + 9 * level)) & 0x1FF
        pte_addr = table + idx * 8
        if not in_ram(st, pte_addr, 8) or not pmp_check(csr, pte_addr, 8, ACCESS_LOAD, C.PRV_S):
            return 0, access_fault_cause(access)
        slot = (pte_addr - st[S.RAM_BASE]) >> 3
        pte = ram64[slot]
        if (pte & PTE_V) == 0 or ((pte & PTE_R) == 0 and (pte & PTE_W) != 0):
            return 0, page_fault_cause(access)
        if pte & PTE_RESERVED:
            return 0, page_fault_cause(access)
        ppn = srl(pte, 10) & PTE_PPN_MASK
        if (pte & (PTE_R | PTE_X)) == 0:
            if level == 0:
                return 0, page_fault_cause(access)
            table = ppn << 12
            continue
        # Leaf PTE: permission checks (4.3.1, 4.3.2 step 5).
        if priv == C.PRV_U:
            if (pte & PTE_U) == 0:
                return 0, page_fault_cause(access)
        elif pte & PTE_U:
            if access == ACCESS_FETCH or (ms & C.MSTATUS_SUM) == 0:
                return 0, page_fault_cause(access)
        if access == ACCESS_FETCH:
            if (pte & PTE_X) == 0:
                return 0, page_fault_cause(access)
        elif access == ACCESS_LOAD:
            if (pte & PTE_R) == 0 and not ((ms & C.MSTATUS_MXR) and (pte & PTE_X)):
                return 0, page_fault_cause(access)
        elif (pte & PTE_W) == 0:
            return 0, page_fault_cause(access)
        # A misaligned superpage is a page fault (4.3.2 step 6).
        low_mask = (1 << (9 * level)) - 1
        if ppn & low_mask:
            return 0, page_fault_cause(access)
        new_pte = pte | PTE_A
        if access == ACCESS_STORE:
            new_pte |= PTE_D
        if new_pte != pte:
            code_write(pages, slot << 3, 8)
            ram64[slot] = new_pte
        page_off_mask = (1 << (12 + 9 * level)) - 1
        paddr = ((ppn << 12) & ~page_off_mask) | (vaddr & page_off_mask)
        return paddr, -1
    return 0, page_fault_cause(access)


@njit
def translate_cached(csr, st, tlb_tag, tlb_off, pages, ram64, vaddr, access):
    """translate() through the TLB: a hit costs no walk.  Returns (paddr, cause)."""
    vpn = vaddr >> 12
    idx = vpn & (S.TLB_SIZE - 1)
    if tlb_tag[access, idx] == (vpn << S.TLB_CTX_BITS) | st[S.TLB_CTX]:
        return st[S.RAM_BASE] + tlb_off[access, idx] + (vaddr & 0xFFF), -1
    return tlb_fill(csr, st, tlb_tag, tlb_off, pages, ram64, vaddr, access)


@njit
def tlb_fill(csr, st, tlb_tag, tlb_off, pages, ram64, vaddr, access):
    """Translate vaddr, check PMP, and cache the page when it is in RAM.

    Returns (paddr, cause); cause -1 = ok.  An access fault for a PMP denial
    is reported here; a non-RAM paddr is returned for the caller to route
    (CLINT or an MMIO exit).  A page holding translated code gets no store
    entry, so stores into it take the slow path (codepages.py).
    """
    st[S.STAT_TLB_MISSES] += 1
    paddr, cause = translate(csr, st, pages, ram64, vaddr, access)
    if cause >= 0:
        return paddr, cause
    priv = effective_priv(csr, st, access)
    page = paddr & ~0xFFF
    if in_ram(st, page, 4096):
        code = access == ACCESS_STORE and pages[(page - st[S.RAM_BASE]) >> 12, S.P_CODE] != 0
        if not code and pmp_check(csr, page, 4096, access, priv):
            vpn = vaddr >> 12
            idx = vpn & (S.TLB_SIZE - 1)
            tlb_tag[access, idx] = (vpn << S.TLB_CTX_BITS) | st[S.TLB_CTX]
            tlb_log_fill(tlb_tag, access, idx)
            tlb_off[access, idx] = page - st[S.RAM_BASE]
            return paddr, -1
    if not pmp_check(csr, paddr, 1, access, priv):
        return paddr, access_fault_cause(access)
    return paddr, -1
