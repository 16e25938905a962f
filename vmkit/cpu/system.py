"""SYSTEM opcode: Zicsr instructions, ecall/ebreak, mret/sret, wfi, sfence.vma.

RISC-V Privileged ISA 1.12: 3.3 (environment calls, trap return, wfi and the
TW/TSR bits of 3.1.6.5), 4.2.1 (sfence.vma and TVM); Zicsr in ISA vol. I, 9.
"""

from vmkit.cpu import csrs as C
from vmkit.cpu import state as S
from vmkit.cpu.csr import csr_access, mip_value
from vmkit.cpu.decode import funct3, rd, rs1, funct7
from vmkit.cpu.jit import njit
from vmkit.cpu.memory import raise_exception
from vmkit.cpu.mmu import tlb_flush, tlb_flush_page
from vmkit.cpu.trap import mret, sret

# Outcomes of exec_system.
SYS_NEXT = 0      # continue with the next instruction
SYS_JUMP = 1      # continue at the returned pc (mret/sret)
SYS_TRAP = 2      # an exception was raised (st[TRAP_*])
SYS_WFI = 3       # idle: leave the run loop until an interrupt


@njit
def needs_recheck(insn):
    """Could this SYSTEM instruction change interrupts, privilege or translation?

    The interpreter re-examines pending interrupts and the TLB context after
    those only; plain CSR reads and writes of scratch/epc/cause registers
    (every trap entry and exit in Linux) skip that work.
    """
    f3 = funct3(insn)
    if f3 == 0 or f3 == 4:
        return True
    if (f3 & 3) != 1 and rs1(insn) == 0:
        return False  # csrrs/csrrc with x0: a pure read
    num = (insn >> 20) & 0xFFF
    return (num == C.MSTATUS or num == C.SSTATUS or num == C.MIE or num == C.SIE
            or num == C.MIP or num == C.SIP or num == C.SATP or num == C.STIMECMP
            or num == C.MENVCFG or num == C.MIDELEG or C.PMPCFG0 <= num <= C.PMPADDR63)


@njit
def illegal(st):
    raise_exception(st, C.CAUSE_ILLEGAL_INSTRUCTION, st[S.LAST_INSN])
    return SYS_TRAP, 0


@njit
def exec_system(insn, x, csr, st, tlb_tag):
    """Returns (outcome, pc for SYS_JUMP)."""
    f3 = funct3(insn)
    priv = st[S.PRIV]
    if f3 == 0:
        if rd(insn) != 0:
            return illegal(st)
        f7 = funct7(insn)
        if f7 == 0x09:  # sfence.vma
            if priv == C.PRV_U or (priv == C.PRV_S and (csr[C.MSTATUS] & C.MSTATUS_TVM)):
                return illegal(st)
            # With rs1 = x0 every page; otherwise only the page of x[rs1]
            # (4.2.1; the ASID in rs2 is ignored: entries of other address
            # spaces are dropped too, which is always safe).
            if rs1(insn) == 0:
                tlb_flush(tlb_tag)
            else:
                tlb_flush_page(tlb_tag, x[rs1(insn)])
            return SYS_NEXT, 0
        if rs1(insn) != 0:
            return illegal(st)
        imm = insn >> 20
        if imm == 0x000:  # ecall
            raise_exception(st, C.CAUSE_USER_ECALL + priv, 0)
            return SYS_TRAP, 0
        if imm == 0x001:  # ebreak
            raise_exception(st, C.CAUSE_BREAKPOINT, 0)  # QEMU 7.2 reports tval 0
            return SYS_TRAP, 0
        if imm == 0x302:  # mret
            if priv != C.PRV_M:
                return illegal(st)
            return SYS_JUMP, mret(csr, st)
        if imm == 0x102:  # sret
            if priv == C.PRV_U or (priv == C.PRV_S and (csr[C.MSTATUS] & C.MSTATUS_TSR)):
                return illegal(st)
            return SYS_JUMP, sret(csr, st)
        if imm == 0x105:  # wfi
            if priv == C.PRV_U or (priv == C.PRV_S and (csr[C.MSTATUS] & C.MSTATUS_TW)):
                return illegal(st)
            if mip_value(csr, st) & csr[C.MIE]:
                return SYS_NEXT, 0  # an interrupt is pending: wfi is a nop
            return SYS_WFI, 0
        return illegal(st)
    if f3 == 4:
        return illegal(st)
    num = (insn >> 20) & 0xFFF
    src = rs1(insn)
    operand = src if f3 >= 5 else x[src]
    write = (f3 & 3) == 1 or src != 0
    ok, old = csr_access(csr, st, num, f3, operand, write)
    if not ok:
        return illegal(st)
    dest = rd(insn)
    if dest:
        x[dest] = old
    return SYS_NEXT, 0
