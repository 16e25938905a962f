"""CSR access: privilege and read-only checks, WARL masks, side effects.

RISC-V Privileged ISA 1.12: 2.1 (CSR address map conventions: bits 11:10
read-only when 0b11, bits 9:8 lowest privilege), 3.1 (machine CSRs), 4.1
(supervisor CSRs), Sstc 1.0 (stimecmp, menvcfg.STCE), and ISA vol. I 11.2
(fcsr) and 10 (Zicntr).  Every value lives in csr[number]; a few registers
are views (sstatus, sie, sip) or are computed (mip, time, cycle, instret).
"""

from vmkit.cpu import csrs as C
from vmkit.cpu import state as S
from vmkit.cpu.decode import srl, ult
from vmkit.cpu.jit import njit
from vmkit.cpu.mmu import pmp_decode, update_tlb_ctx

MENVCFG_STCE = -(1 << 63)
MENVCFG_FIOM = 1
MENVCFG_WRITABLE = MENVCFG_STCE | MENVCFG_FIOM
COUNTEREN_TM = 2
# Exceptions M-mode may delegate (QEMU 7.2: everything but M-ecall and the
# hypervisor-only causes).
MEDELEG_WRITABLE = ((1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5)
                    | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 12)
                    | (1 << 13) | (1 << 15))
# mstatus bits whose change alters how addresses translate: flush the TLBs.
MSTATUS_TRANSLATION = C.MSTATUS_MPRV | C.MSTATUS_MPP | C.MSTATUS_SUM | C.MSTATUS_MXR


@njit
def timer_pending(csr, st):
    """MTIP and (with Sstc enabled) STIP from the CLINT and stimecmp."""
    bits = 0
    t = st[S.MTIME]
    if not ult(t, st[S.MTIMECMP]):
        bits |= C.MIP_MTIP
    if (csr[C.MENVCFG] & MENVCFG_STCE) and not ult(t, csr[C.STIMECMP]):
        bits |= C.MIP_STIP
    return bits


@njit
def mip_value(csr, st):
    """The mip register as software sees it: writable bits | platform lines."""
    v = csr[C.MIP] | timer_pending(csr, st) | st[S.EXTERNAL_IRQ]
    if st[S.MSIP]:
        v |= C.MIP_MSIP
    return v


@njit
def fs_dirty(csr):
    csr[C.MSTATUS] |= C.MSTATUS_FS | C.MSTATUS_SD


@njit
def counter_allowed(csr, st, num):
    """Zicntr/Zihpm access gate through mcounteren/scounteren (3.1.11, 4.1.5)."""
    bit = 1 << (num - C.CYCLE)
    priv = st[S.PRIV]
    if priv == C.PRV_M:
        return True
    if (csr[C.MCOUNTEREN] & bit) == 0:
        return False
    if priv == C.PRV_U and (csr[C.SCOUNTEREN] & bit) == 0:
        return False
    return True


@njit
def csr_read(csr, st, num):
    """Returns (legal, value).  Privilege is checked by the caller."""
    if num == C.FFLAGS:
        return True, csr[C.FCSR] & 0x1F
    if num == C.FRM:
        return True, (csr[C.FCSR] >> 5) & 7
    if num == C.FCSR:
        return True, csr[C.FCSR] & 0xFF
    if C.CYCLE <= num <= C.HPMCOUNTER31:
        if not counter_allowed(csr, st, num):
            return False, 0
        if num == C.CYCLE:
            return True, st[S.INSTRET] + csr[C.MCYCLE]
        if num == C.TIME:
            return True, st[S.MTIME]
        if num == C.INSTRET:
            return True, st[S.INSTRET] + csr[C.MINSTRET]
        return True, 0
    if num == C.SSTATUS:
        return True, csr[C.MSTATUS] & C.SSTATUS_MASK
    if num == C.SIE:
        return True, csr[C.MIE] & csr[C.MIDELEG]
    if num == C.SIP:
        return True, mip_value(csr, st) & csr[C.MIDELEG]
    if num == C.MIP:
        return True, mip_value(csr, st)
    if num == C.STIMECMP:
        if st[S.PRIV] != C.PRV_M and ((csr[C.MCOUNTEREN] & COUNTEREN_TM) == 0
                                      or (csr[C.MENVCFG] & MENVCFG_STCE) == 0):
            return False, 0
        return True, csr[num]
    if num == C.SATP:
        if st[S.PRIV] == C.PRV_S and (csr[C.MSTATUS] & C.MSTATUS_TVM):
            return False, 0
        return True, csr[num]
    if num == C.MCYCLE:
        return True, st[S.INSTRET] + csr[C.MCYCLE]
    if num == C.MINSTRET:
        return True, st[S.INSTRET] + csr[C.MINSTRET]
    if C.MHPMCOUNTER3 <= num <= C.MHPMCOUNTER31 or C.MHPMEVENT3 <= num <= C.MHPMEVENT31:
        return True, 0
    if C.PMPCFG0 <= num <= C.PMPCFG15:
        if num & 1:  # odd pmpcfg registers do not exist on RV64
            return False, 0
        return True, csr[num] if num <= C.PMPCFG0 + 2 else 0
    if C.PMPADDR0 <= num <= C.PMPADDR63:
        return True, csr[num] if num < C.PMPADDR0 + 16 else 0
    if (num == C.STVEC or num == C.SCOUNTEREN or num == C.SENVCFG or num == C.SSCRATCH
            or num == C.SEPC or num == C.SCAUSE or num == C.STVAL
            or num == C.MVENDORID or num == C.MARCHID or num == C.MIMPID
            or num == C.MHARTID or num == C.MCONFIGPTR or num == C.MSTATUS
            or num == C.MISA or num == C.MEDELEG or num == C.MIDELEG or num == C.MIE
            or num == C.MTVEC or num == C.MCOUNTEREN or num == C.MENVCFG
            or num == C.MCOUNTINHIBIT or num == C.MSCRATCH or num == C.MEPC
            or num == C.MCAUSE or num == C.MTVAL):
        return True, csr[num]
    return False, 0


@njit
def write_mstatus(csr, st, value, mask):
    old = csr[C.MSTATUS]
    new = (old & ~mask) | (value & mask)
    if ((new >> C.MSTATUS_MPP_SHIFT) & 3) == 2:  # MPP is WARL: no H-mode
        new = (new & ~C.MSTATUS_MPP) | (old & C.MSTATUS_MPP)
    new &= ~C.MSTATUS_SD
    if (new & C.MSTATUS_FS) == C.MSTATUS_FS:
        new |= C.MSTATUS_SD
    new = (new & ~(C.MSTATUS_UXL | C.MSTATUS_SXL)) | C.MSTATUS_XLEN64
    csr[C.MSTATUS] = new
    if (old ^ new) & MSTATUS_TRANSLATION:
        update_tlb_ctx(csr, st)


@njit
def csr_write(csr, st, num, value):
    """Write a CSR after the caller's checks; returns False for illegal."""
    if num == C.FFLAGS:
        csr[C.FCSR] = (csr[C.FCSR] & ~0x1F) | (value & 0x1F)
        fs_dirty(csr)
    elif num == C.FRM:
        csr[C.FCSR] = (csr[C.FCSR] & 0x1F) | ((value & 7) << 5)
        fs_dirty(csr)
    elif num == C.FCSR:
        csr[C.FCSR] = value & 0xFF
        fs_dirty(csr)
    elif num == C.MSTATUS:
        write_mstatus(csr, st, value, C.MSTATUS_WRITABLE)
    elif num == C.SSTATUS:
        write_mstatus(csr, st, value, C.SSTATUS_WRITABLE)
    elif num == C.MISA:
        pass  # WARL: extensions cannot be switched off
    elif num == C.MEDELEG:
        csr[num] = value & MEDELEG_WRITABLE
    elif num == C.MIDELEG:
        csr[num] = value & C.S_INTERRUPTS
    elif num == C.MIE:
        csr[num] = value & C.ALL_INTERRUPTS
    elif num == C.SIE:
        m = csr[C.MIDELEG]
        csr[C.MIE] = (csr[C.MIE] & ~m) | (value & m)
    elif num == C.MIP:
        m = C.MIP_WRITABLE
        if csr[C.MENVCFG] & MENVCFG_STCE:
            m &= ~C.MIP_STIP
        csr[C.MIP] = (csr[C.MIP] & ~m) | (value & m)
    elif num == C.SIP:
        m = C.MIP_SSIP & csr[C.MIDELEG]
        csr[C.MIP] = (csr[C.MIP] & ~m) | (value & m)
    elif num == C.MTVEC or num == C.STVEC:
        if (value & 3) < 2:  # modes 2 and 3 are reserved: keep the old value
            csr[num] = value
    elif num == C.MEPC or num == C.SEPC:
        csr[num] = value & ~1
    elif num == C.MCOUNTEREN or num == C.SCOUNTEREN:
        csr[num] = value & 0xFFFFFFFF
    elif num == C.MENVCFG:
        csr[num] = value & MENVCFG_WRITABLE
    elif num == C.SENVCFG:
        csr[num] = value & MENVCFG_FIOM
    elif num == C.SATP:
        mode = srl(value, 60)
        if mode == C.SATP_MODE_BARE or mode == C.SATP_MODE_SV39 or mode == C.SATP_MODE_SV48:
            if mode == C.SATP_MODE_BARE:
                value = 0
            csr[num] = value  # MODE, a full 16-bit ASID and a 44-bit PPN: no WARL bits left
            st[S.TLB_FLUSH] = 1
        # any other mode (Sv57...): the write is ignored (4.1.11 WARL)
    elif num == C.STIMECMP:
        csr[num] = value
    elif num == C.MCYCLE or num == C.MINSTRET:
        # st[INSTRET] already counts this instruction; its retirement must
        # not show on top of the written value (ISA vol. I, Zicsr 7.1: the
        # next instruction reads the value written).
        csr[num] = value - st[S.INSTRET] - 1
    elif C.PMPCFG0 <= num <= C.PMPCFG15:
        if num <= C.PMPCFG0 + 2:
            # Locked entries keep their configuration (3.7.1).
            old = csr[num]
            new = 0
            for b in range(8):
                oc = (old >> (8 * b)) & 0xFF
                nc = (value >> (8 * b)) & 0xFF
                if oc & 0x80:
                    nc = oc
                elif (nc & 3) == 2:  # R=0 W=1 is reserved
                    nc &= ~3
                new |= nc << (8 * b)
            csr[num] = new
            pmp_decode(csr)
            st[S.TLB_FLUSH] = 1
    elif C.PMPADDR0 <= num <= C.PMPADDR63:
        i = num - C.PMPADDR0
        if i < 16:
            cfg = (csr[C.PMPCFG0 + (i // 8) * 2] >> ((i % 8) * 8)) & 0xFF
            if (cfg & 0x80) == 0:
                csr[num] = value & ((1 << 54) - 1)
                pmp_decode(csr)
                st[S.TLB_FLUSH] = 1
    elif (num == C.MSCRATCH or num == C.SSCRATCH or num == C.MCAUSE or num == C.SCAUSE
          or num == C.MTVAL or num == C.STVAL):
        csr[num] = value
    elif num == C.MCOUNTINHIBIT:
        csr[num] = value & 0xFFFFFFFD
    elif C.MHPMCOUNTER3 <= num <= C.MHPMCOUNTER31 or C.MHPMEVENT3 <= num <= C.MHPMEVENT31:
        pass  # no events implemented: read as zero
    else:
        return False
    return True


@njit
def csr_access(csr, st, num, f3, operand, write):
    """One Zicsr instruction (funct3 1..3 = rw/rs/rc, 5..7 the immediate forms).

    Returns (legal, old value).  `write` is False for csrrs/csrrc with
    rs1 = x0 (or uimm = 0): a pure read, so read-only registers do not trap
    (2.1).
    """
    priv = st[S.PRIV]
    if priv < ((num >> 8) & 3):
        return False, 0
    if (num == C.FFLAGS or num == C.FRM or num == C.FCSR) and (csr[C.MSTATUS] & C.MSTATUS_FS) == 0:
        return False, 0
    ok, old = csr_read(csr, st, num)
    if not ok:
        return False, 0
    if write:
        if (num >> 10) == 3:
            return False, 0
        kind = f3 & 3
        if kind == 1:
            new = operand
        elif kind == 2:
            new = old | operand
        else:
            new = old & ~operand
        if not csr_write(csr, st, num, new):
            return False, 0
    return True, old
