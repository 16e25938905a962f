"""Trap entry and interrupt selection.

RISC-V Privileged ISA 1.12: 3.1.6.1 (privilege and global interrupt-enable
stack), 3.1.7 (mtvec modes), 3.1.8 (medeleg/mideleg), 3.1.9 (interrupt
priority MEI > MSI > MTI > SEI > SSI > STI), 3.3.2 (mret/sret), 4.1.1.
"""

from vmkit.cpu import csrs as C
from vmkit.cpu import state as S
from vmkit.cpu.csr import mip_value
from vmkit.cpu.jit import njit
from vmkit.cpu.mmu import update_tlb_ctx

# Interrupts in priority order (3.1.9).
IRQ_PRIORITY = (C.IRQ_MEI, C.IRQ_MSI, C.IRQ_MTI, C.IRQ_SEI, C.IRQ_SSI, C.IRQ_STI)


@njit
def set_priv(csr, st, priv):
    st[S.PRIV] = priv
    update_tlb_ctx(csr, st)


@njit
def take_trap(csr, st, pc, cause, tval, interrupt):
    """Enter the trap handler for `cause`; returns the new pc."""
    priv = st[S.PRIV]
    if interrupt:
        st[S.STAT_INTERRUPTS] += 1
    else:
        st[S.STAT_EXCEPTIONS] += 1
    bit = 1 << cause
    deleg = csr[C.MIDELEG] if interrupt else csr[C.MEDELEG]
    mcause = cause | C.INTERRUPT_BIT if interrupt else cause
    st[S.RESERVATION] = -1
    st[S.WFI] = 0
    ms = csr[C.MSTATUS]
    if priv <= C.PRV_S and (deleg & bit):
        csr[C.SCAUSE] = mcause
        csr[C.SEPC] = pc
        csr[C.STVAL] = tval
        ms &= ~(C.MSTATUS_SPIE | C.MSTATUS_SPP)
        if ms & C.MSTATUS_SIE:
            ms |= C.MSTATUS_SPIE
        if priv == C.PRV_S:
            ms |= C.MSTATUS_SPP
        ms &= ~C.MSTATUS_SIE
        csr[C.MSTATUS] = ms
        set_priv(csr, st, C.PRV_S)
        vec = csr[C.STVEC]
    else:
        csr[C.MCAUSE] = mcause
        csr[C.MEPC] = pc
        csr[C.MTVAL] = tval
        ms &= ~(C.MSTATUS_MPIE | C.MSTATUS_MPP)
        if ms & C.MSTATUS_MIE:
            ms |= C.MSTATUS_MPIE
        ms |= priv << C.MSTATUS_MPP_SHIFT
        ms &= ~C.MSTATUS_MIE
        csr[C.MSTATUS] = ms
        set_priv(csr, st, C.PRV_M)  # also refreshes the MPP part of the context
        vec = csr[C.MTVEC]
    base = vec & ~3
    if interrupt and (vec & 3) == 1:
        return base + 4 * cause
    return base


@njit
def pending_interrupt(csr, st):
    """The interrupt to take now, or -1 (3.1.9)."""
    pending = mip_value(csr, st) & csr[C.MIE]
    if pending == 0:
        return -1
    priv = st[S.PRIV]
    ms = csr[C.MSTATUS]
    deleg = csr[C.MIDELEG]
    m_enabled = priv < C.PRV_M or (ms & C.MSTATUS_MIE) != 0
    s_enabled = priv < C.PRV_S or (priv == C.PRV_S and (ms & C.MSTATUS_SIE) != 0)
    m_pending = pending & ~deleg if m_enabled else 0
    s_pending = pending & deleg if s_enabled else 0
    if m_pending:
        for irq in IRQ_PRIORITY:
            if m_pending & (1 << irq):
                return irq
    if s_pending:
        for irq in IRQ_PRIORITY:
            if s_pending & (1 << irq):
                return irq
    return -1


@njit
def mret(csr, st):
    ms = csr[C.MSTATUS]
    mpp = (ms >> C.MSTATUS_MPP_SHIFT) & 3
    ms &= ~C.MSTATUS_MIE
    if ms & C.MSTATUS_MPIE:
        ms |= C.MSTATUS_MIE
    ms |= C.MSTATUS_MPIE
    ms &= ~C.MSTATUS_MPP
    if mpp != C.PRV_M:
        ms &= ~C.MSTATUS_MPRV
    csr[C.MSTATUS] = ms
    set_priv(csr, st, mpp)
    st[S.RESERVATION] = -1
    return csr[C.MEPC]


@njit
def sret(csr, st):
    ms = csr[C.MSTATUS]
    spp = C.PRV_S if ms & C.MSTATUS_SPP else C.PRV_U
    ms &= ~C.MSTATUS_SIE
    if ms & C.MSTATUS_SPIE:
        ms |= C.MSTATUS_SIE
    ms |= C.MSTATUS_SPIE
    ms &= ~C.MSTATUS_SPP
    ms &= ~C.MSTATUS_MPRV
    csr[C.MSTATUS] = ms
    set_priv(csr, st, spp)
    st[S.RESERVATION] = -1
    return csr[C.SEPC]
