"""The interpreter loop: run(hart arrays, ram, budget) -> exit reason.

The KVM_RUN-like contract of shared/design/ARCHITECTURE.md: execute guest
instructions until an exit (MMIO, WFI, budget, break) and return its code.
The loop keeps pc and the instruction count in locals; the hot integer,
branch and aligned-RAM load/store cases are handled inline, everything else
(SYSTEM, AMO, FP, TLB misses, MMIO) in per-group functions, which keeps each
jitted function small enough to compile quickly.

Interrupts and the clock are looked at every CHECK_INTERVAL instructions, and
immediately after anything that can change them (CSR writes, traps, stores
through the slow path such as CLINT writes); so that timer interrupts arrive
at the same instruction on every deterministic run, the check points depend
only on the instruction count.
"""

import numpy as np

from vmkit.cpu import csrs as C
from vmkit.cpu import state as S
from vmkit.cpu.alu import op, op32, op_imm, op_imm32
from vmkit.cpu.callcode import call_stencils, call_translation
from vmkit.cpu.codepages import code_hash
from vmkit.cpu.amo import amo_compute, amo_op_valid, exec_amo
from vmkit.cpu.csr import fs_dirty
from vmkit.cpu.emit import patch_jump, translate
from vmkit.cpu.decode import funct3, imm_b, imm_i, imm_j, imm_s, imm_u, rd, rs1, rs2, sext, sext32, ult
from vmkit.cpu.fpu import fp_execute
from vmkit.cpu.jit import njit
from vmkit.cpu.memory import MEM_MMIO, MEM_TRAP, load_slow, raise_exception, ram_read, ram_write, store_slow
from vmkit.cpu.mmu import ACCESS_FETCH, in_ram, tlb_fill, tlb_flush
from vmkit.cpu.system import SYS_JUMP, SYS_TRAP, SYS_WFI, exec_system, needs_recheck
from vmkit.cpu.trap import pending_interrupt, take_trap

CHECK_INTERVAL = 4096
FETCH_FAULT = -1
# Hotness given to a block start the baseline tier could not translate (its
# first instruction is the interpreter's): it is tried again after this many
# more arrivals, in case the page then holds other code.
COOL_DOWN = -(1 << 16)


@njit
def advance_clock(st, executed):
    """Deterministic/interpolated time: one mtime tick per TICK_INSTRUCTIONS."""
    rem = st[S.TICK_REMAINDER] + executed
    per_tick = st[S.TICK_INSTRUCTIONS]
    if rem >= per_tick:
        ticks = rem // per_tick
        st[S.MTIME] += ticks
        rem -= ticks * per_tick
    st[S.TICK_REMAINDER] = rem


@njit
def fetch_half(csr, st, tlb_tag, tlb_off, pages, ram16, ram64, vaddr):
    """Fetch 16 instruction bits through the fetch TLB; -1 after raising a fault."""
    vpn = vaddr >> 12
    idx = vpn & (S.TLB_SIZE - 1)
    tag = (vpn << S.TLB_CTX_BITS) | st[S.TLB_CTX]
    if tlb_tag[ACCESS_FETCH, idx] != tag:
        paddr, cause = tlb_fill(csr, st, tlb_tag, tlb_off, pages, ram64, vaddr, ACCESS_FETCH)
        if cause >= 0:
            raise_exception(st, cause, vaddr)
            return FETCH_FAULT
        if tlb_tag[ACCESS_FETCH, idx] != tag:
            # Not cacheable: execute from RAM through a PMP-partial page, or fault.
            if not in_ram(st, paddr, 2):
                raise_exception(st, C.CAUSE_FETCH_ACCESS, vaddr)
                return FETCH_FAULT
            return np.int64(ram16[(paddr - st[S.RAM_BASE]) >> 1])
    return np.int64(ram16[(tlb_off[ACCESS_FETCH, idx] + (vaddr & 0xFFF)) >> 1])


@njit
def fetch_slow(csr, st, tlb_tag, tlb_off, pages, ram16, ram64, pc):
    """Fetch the instruction at pc (16 or 32 bits, maybe across pages)."""
    lo = fetch_half(csr, st, tlb_tag, tlb_off, pages, ram16, ram64, pc)
    if lo < 0 or (lo & 3) != 3:
        return lo
    hi = fetch_half(csr, st, tlb_tag, tlb_off, pages, ram16, ram64, pc + 2)
    if hi < 0:
        return FETCH_FAULT
    return lo | (hi << 16)


@njit
def take_raised_trap(csr, st, pc):
    """Enter the handler for the exception a helper raised (st[TRAP_*])."""
    st[S.TRAP_PENDING] = 0
    return take_trap(csr, st, pc, st[S.TRAP_CAUSE], st[S.TRAP_TVAL], False)


@njit
def mmio_load_exit(st, dest, signed, fp, next_pc):
    """Complete the exit record of an MMIO load (memory.mmio_exit did the rest)."""
    st[S.MMIO_RD] = dest
    st[S.MMIO_SIGNED] = signed
    st[S.MMIO_FP] = fp
    st[S.MMIO_NEXT_PC] = next_pc


@njit
def load_extend(v, f3):
    if f3 == 0:
        return sext(v, 8)
    if f3 == 1:
        return sext(v, 16)
    if f3 == 2:
        return sext32(v)
    return v


@njit
def exec_fp_memory(insn, x, f, csr, st, tlb_tag, tlb_off, pages, ram8, ram64, is_store):
    """flw/fld/fsw/fsd (always through the slow path: rare in kernels).

    Returns the memory status, or -1 for an illegal instruction.
    """
    f3 = funct3(insn)
    if (f3 != 2 and f3 != 3) or (csr[C.MSTATUS] & C.MSTATUS_FS) == 0:
        return -1
    size = 4 if f3 == 2 else 8
    if is_store:
        addr = x[rs1(insn)] + imm_s(insn)
        return store_slow(csr, st, tlb_tag, tlb_off, pages, ram8, ram64, addr, size, f[rs2(insn)])
    addr = x[rs1(insn)] + imm_i(insn)
    status, v = load_slow(csr, st, tlb_tag, tlb_off, pages, ram8, ram64, addr, size)
    if status == 0:
        if size == 4:
            v = v | (-1 << 32)  # NaN-box (ISA vol. I, 12.2)
        f[rd(insn)] = v
        fs_dirty(csr)
    return status


@njit
def exec_fp_op(insn, x, f, csr):
    """OP-FP and the fused multiply-adds; False when illegal."""
    if (csr[C.MSTATUS] & C.MSTATUS_FS) == 0:
        return False
    r = fp_execute(insn, x, f, (csr[C.FCSR] >> 5) & 7)
    if r < 0:
        return False
    if r & 0x1F:
        csr[C.FCSR] |= r & 0x1F
        fs_dirty(csr)
    if r & 0x20:
        fs_dirty(csr)
    return True


@njit
def queue_translation(jreq, roff, pc, tier):
    """Ask translator.py for a translation; False when the queue is full
    (the caller restarts the block's count, so it asks again later)."""
    k = jreq[0, 0]
    if k >= S.JREQ_SIZE:
        return False
    jreq[k + 1, 0] = roff
    jreq[k + 1, 1] = pc
    jreq[k + 1, 2] = tier
    jreq[0, 0] = k + 1
    return True


@njit
def run(x, f, csr, st, tlb_tag, tlb_off, ram8, ram16, ram32, ram64, rvc, jtab, pages, jreq, cp, budget):
    """Run until an exit; returns the exit code (state.EXIT_*).

    With the translating tier on (st[JIT_THRESHOLD] > 0), every block start
    (the target of a taken branch or jump, a trap handler, the entry) is
    looked up in jtab by its RAM offset; a translation made for this pc from
    the page's current contents runs with a limit of the instructions left
    to the next check point, so interrupts are taken at the same instruction
    count as without it.  Other block starts are counted and, once hot,
    translated on the spot by the baseline tier (emit.py, with the code
    cache and stencil tables in `cp`); a baseline translation entered often
    is queued in jreq for the optimizing tier (translator.py).
    """
    pc = st[S.PC]
    n = 0
    counted = 0
    check_at = 0
    lookup = 2
    if st[S.RESUME_CHECK]:  # continuing a run split by EXIT_JIT/EXIT_JIT_CALL
        check_at = st[S.RESUME_CHECK] - 1
        lookup = st[S.RESUME_LOOKUP]
        st[S.RESUME_CHECK] = 0
    base_instret = st[S.INSTRET]
    break_pc = st[S.BREAK_PC]
    if st[S.TRAP_PENDING]:  # a fault injected by Python (unclaimed MMIO)
        pc = take_raised_trap(csr, st, pc)
    exit_code = S.EXIT_BUDGET
    ctx = st[S.TLB_CTX]
    # The page being executed: (virtual page, its RAM halfword index), so
    # straight-line code skips the TLB lookup.
    fetch_vpn = S.TLB_INVALID
    fetch_base = 0
    threshold = st[S.JIT_THRESHOLD] if break_pc == -1 else 0
    # The chaining jump of the last baseline translation's exit (emit.py), its
    # target pc and the page it is in; 0 when there is nothing to chain.
    chain_site = 0
    chain_pc = 0
    chain_page = -1
    while True:
        if n >= check_at:
            chain_site = 0
            if n >= budget and st[S.STOP_AT_BUDGET]:
                break
            advance_clock(st, n - counted)
            counted = n
            if st[S.TLB_FLUSH]:
                st[S.TLB_FLUSH] = 0
                tlb_flush(tlb_tag)
            irq = pending_interrupt(csr, st)
            if irq >= 0:
                pc = take_trap(csr, st, pc, irq, 0, True)
                lookup = 2
            if lookup == 0:  # often where a translation stopped for this check
                lookup = 1
            ctx = st[S.TLB_CTX]  # every path that changes it forces this check
            fetch_vpn = S.TLB_INVALID  # ...and so does every TLB flush
            if n >= budget:
                break
            if break_pc != -1:  # debugging: look at every instruction
                if pc == break_pc:
                    exit_code = S.EXIT_BREAK
                    break
                check_at = n + 1
            else:
                check_at = min(n + CHECK_INTERVAL, budget)

        # ---- fetch ------------------------------------------------------------
        vpn = pc >> 12
        if vpn != fetch_vpn:
            idx = vpn & (S.TLB_SIZE - 1)
            if tlb_tag[0, idx] == (vpn << S.TLB_CTX_BITS) | ctx:
                fetch_vpn = vpn
                fetch_base = tlb_off[0, idx] >> 1
        if lookup:
            count = lookup == 2  # a real block start, not just a check point
            lookup = 0
            if threshold > 0 and vpn == fetch_vpn:
                roff = (fetch_base << 1) + (pc & 0xFFF)
                h = code_hash(roff)
                if (jtab[h, S.J_KEY] == roff and jtab[h, S.J_VPC] == pc
                        and jtab[h, S.J_VER] == pages[roff >> 12, S.P_VER]):
                    if st[S.JIT_CHECK]:
                        st[S.JIT_CALL_SLOT] = h
                        st[S.JIT_CALL_LIMIT] = check_at - n
                        st[S.RESUME_CHECK] = check_at - n + 1
                        exit_code = S.EXIT_JIT_CALL
                        break
                    limit = check_at - n
                    if jtab[h, S.J_TIER] == 1:
                        if chain_site != 0 and pc == chain_pc and (roff >> 12) == chain_page:
                            # The last translation left for this one, in the same page:
                            # its exit jump goes straight here from now on.
                            patch_jump(cp[0], cp[1], chain_site, jtab[h, S.J_FN])
                        st[S.JIT_PAGE_BASE] = pc & ~0xFFF
                        st[S.JIT_CHAIN_SITE] = 0
                        r = call_stencils(jtab[h, S.J_FN], x, st, ram8, tlb_tag, tlb_off, limit)
                        retired = limit - (r >> 2)
                        chain_site = st[S.JIT_CHAIN_SITE]
                        chain_pc = st[S.PC]
                        chain_page = roff >> 12
                    else:
                        r = call_translation(jtab[h, S.J_FN], x, f, csr, st, ram8, tlb_tag, tlb_off,
                                             limit)
                        retired = r >> 2
                    ran = jtab[h, S.J_HOT]        # instructions it has run so far
                    jtab[h, S.J_HOT] = ran + retired
                    n += retired
                    st[S.STAT_JIT_INSNS] += retired
                    st[S.STAT_JIT_CALLS] += 1
                    pc = st[S.PC]
                    lookup = 2 if (r & 1) != 0 else 0
                    t2 = st[S.JIT_TIER2_INSNS]
                    if ran < t2 <= ran + retired and jtab[h, S.J_TIER] == 1:
                        if not queue_translation(jreq, roff, jtab[h, S.J_VPC], 2):
                            jtab[h, S.J_HOT] = 0
                        elif st[S.JIT_SYNC]:
                            st[S.RESUME_CHECK] = check_at - n + 1
                            st[S.RESUME_LOOKUP] = lookup
                            exit_code = S.EXIT_JIT
                            break
                    continue
                if count:
                    if jtab[h, S.J_HOT_KEY] != roff:
                        jtab[h, S.J_HOT_KEY] = roff
                        hot = 1
                    elif jtab[h, S.J_KEY] == roff and jtab[h, S.J_HOT] >= threshold:
                        hot = 1  # its translation went stale: warm up again
                    else:
                        hot = jtab[h, S.J_HOT] + 1
                    jtab[h, S.J_HOT] = hot
                    if hot == threshold:
                        got = translate(ram16, roff, pc, rvc, pages, jtab, tlb_tag, tlb_off,
                                        cp[0], cp[1], cp[2], cp[3], cp[4], cp[5], cp[6], cp[7])
                        if got > 0:
                            lookup = 1      # enter it now
                            continue
                        if got < 0:         # the code cache is full: translator.py flushes it
                            jtab[h, S.J_HOT] = 0
                            st[S.RESUME_CHECK] = check_at - n + 1
                            st[S.RESUME_LOOKUP] = 2
                            exit_code = S.EXIT_JIT
                            break
                        # Its first instruction is one the baseline tier leaves to the
                        # interpreter (FP, say): the optimizing tier may take it.
                        jtab[h, S.J_HOT] = COOL_DOWN
                        if st[S.JIT_TIER2_INSNS] > 0 and queue_translation(jreq, roff, pc, 2):
                            if st[S.JIT_SYNC]:
                                st[S.RESUME_CHECK] = check_at - n + 1
                                st[S.RESUME_LOOKUP] = 2
                                exit_code = S.EXIT_JIT
                                break
        n += 1
        raw = -1
        if vpn == fetch_vpn and (pc & 0xFFF) != 0xFFE:
            half = fetch_base + ((pc & 0xFFF) >> 1)
            raw = np.int64(ram16[half])
            if (raw & 3) == 3:
                raw |= np.int64(ram16[half + 1]) << 16
        else:
            raw = fetch_slow(csr, st, tlb_tag, tlb_off, pages, ram16, ram64, pc)
            if raw < 0:
                pc = take_raised_trap(csr, st, pc)
                lookup = 2
                check_at = n
                continue
        if (raw & 3) == 3:
            insn = raw
            npc = pc + 4
        else:
            insn = np.int64(rvc[raw])
            npc = pc + 2
        opcode = insn & 0x7F
        trap = False

        # ---- execute ------------------------------------------------------------
        if opcode == 0x13:  # OP-IMM
            ok, v = op_imm(insn, x[rs1(insn)])
            if not ok:
                trap = True
            elif rd(insn):
                x[rd(insn)] = v
        elif opcode == 0x03:  # LOAD
            f3 = funct3(insn)
            addr = x[rs1(insn)] + imm_i(insn)
            size = 1 << (f3 & 3)
            lvpn = addr >> 12
            lidx = lvpn & (S.TLB_SIZE - 1)
            if f3 == 7:
                trap = True
            elif tlb_tag[1, lidx] == (lvpn << S.TLB_CTX_BITS) | ctx and (addr & 0xFFF) <= 4096 - size:
                loff = tlb_off[1, lidx] + (addr & 0xFFF)
                if addr & (size - 1):  # misaligned inside one page (QEMU allows it)
                    v = load_extend(ram_read(ram8, loff, size), f3)
                elif f3 == 3:
                    v = ram64[loff >> 3]
                elif f3 == 2:
                    v = sext32(np.int64(ram32[loff >> 2]))
                elif f3 == 6:
                    v = np.int64(ram32[loff >> 2])
                elif f3 == 1:
                    v = sext(np.int64(ram16[loff >> 1]), 16)
                elif f3 == 5:
                    v = np.int64(ram16[loff >> 1])
                elif f3 == 0:
                    v = sext(np.int64(ram8[loff]), 8)
                else:
                    v = np.int64(ram8[loff])
                if rd(insn):
                    x[rd(insn)] = v
            else:
                status, v = load_slow(csr, st, tlb_tag, tlb_off, pages, ram8, ram64, addr, size)
                check_at = n
                if status == MEM_TRAP:
                    pc = take_raised_trap(csr, st, pc)
                    lookup = 2
                    continue
                if status == MEM_MMIO:
                    mmio_load_exit(st, rd(insn), 1 if f3 < 3 else 0, 0, npc)
                    n -= 1
                    exit_code = S.EXIT_MMIO
                    break
                if rd(insn):
                    x[rd(insn)] = load_extend(v, f3)
        elif opcode == 0x23:  # STORE
            f3 = funct3(insn)
            addr = x[rs1(insn)] + imm_s(insn)
            v = x[rs2(insn)]
            size = 1 << (f3 & 3)
            svpn = addr >> 12
            sidx = svpn & (S.TLB_SIZE - 1)
            if f3 > 3:
                trap = True
            elif tlb_tag[2, sidx] == (svpn << S.TLB_CTX_BITS) | ctx and (addr & 0xFFF) <= 4096 - size:
                soff = tlb_off[2, sidx] + (addr & 0xFFF)
                if addr & (size - 1):
                    ram_write(ram8, soff, size, v)
                elif f3 == 3:
                    ram64[soff >> 3] = v
                elif f3 == 2:
                    ram32[soff >> 2] = np.uint32(v & 0xFFFFFFFF)
                elif f3 == 1:
                    ram16[soff >> 1] = np.uint16(v & 0xFFFF)
                else:
                    ram8[soff] = np.uint8(v & 0xFF)
            else:
                status = store_slow(csr, st, tlb_tag, tlb_off, pages, ram8, ram64, addr, size, v)
                check_at = n
                if status == MEM_TRAP:
                    pc = take_raised_trap(csr, st, pc)
                    lookup = 2
                    continue
                if status == MEM_MMIO:
                    st[S.MMIO_NEXT_PC] = npc
                    n -= 1
                    exit_code = S.EXIT_MMIO
                    break
        elif opcode == 0x33:  # OP
            ok, v = op(insn, x[rs1(insn)], x[rs2(insn)])
            if not ok:
                trap = True
            elif rd(insn):
                x[rd(insn)] = v
        elif opcode == 0x63:  # BRANCH
            a = x[rs1(insn)]
            b = x[rs2(insn)]
            f3 = funct3(insn)
            if f3 == 0:
                taken = a == b
            elif f3 == 1:
                taken = a != b
            elif f3 == 4:
                taken = a < b
            elif f3 == 5:
                taken = a >= b
            elif f3 == 6:
                taken = ult(a, b)
            elif f3 == 7:
                taken = not ult(a, b)
            else:
                taken = False
                trap = True
            if taken:
                npc = pc + imm_b(insn)
                lookup = 2
        elif opcode == 0x1B:  # OP-IMM-32
            ok, v = op_imm32(insn, x[rs1(insn)])
            if not ok:
                trap = True
            elif rd(insn):
                x[rd(insn)] = v
        elif opcode == 0x3B:  # OP-32
            ok, v = op32(insn, x[rs1(insn)], x[rs2(insn)])
            if not ok:
                trap = True
            elif rd(insn):
                x[rd(insn)] = v
        elif opcode == 0x37:  # LUI
            if rd(insn):
                x[rd(insn)] = imm_u(insn)
        elif opcode == 0x17:  # AUIPC
            if rd(insn):
                x[rd(insn)] = pc + imm_u(insn)
        elif opcode == 0x6F:  # JAL
            if rd(insn):
                x[rd(insn)] = npc
            npc = pc + imm_j(insn)
            lookup = 2
        elif opcode == 0x67:  # JALR
            if funct3(insn) != 0:
                trap = True
            else:
                target = (x[rs1(insn)] + imm_i(insn)) & ~1
                if rd(insn):
                    x[rd(insn)] = npc
                npc = target
                lookup = 2
        elif opcode == 0x73:  # SYSTEM
            st[S.PC] = pc
            st[S.LAST_INSN] = raw
            st[S.INSTRET] = base_instret + n
            outcome, target = exec_system(insn, x, csr, st, tlb_tag)
            if needs_recheck(insn):
                check_at = n
            if outcome == SYS_JUMP:
                npc = target
                lookup = 2
            elif outcome == SYS_TRAP:
                pc = take_raised_trap(csr, st, pc)
                lookup = 2
                continue
            elif outcome == SYS_WFI:
                pc = npc
                exit_code = S.EXIT_WFI
                break
        elif opcode == 0x0F:  # MISC-MEM: fence, fence.i (no decoded-instruction cache)
            if funct3(insn) > 1:
                trap = True
        elif opcode == 0x2F:  # AMO
            # Fast path: an aligned AMO (not LR/SC) whose page is in the store
            # TLB.  Everything else (LR/SC, faults, misalignment) goes to amo.py.
            f3 = funct3(insn)
            aop = (insn >> 27) & 0x1F
            addr = x[rs1(insn)]
            asize = 4 if f3 == 2 else 8
            avpn = addr >> 12
            aidx = avpn & (S.TLB_SIZE - 1)
            if ((f3 == 2 or f3 == 3) and aop != 0x02 and aop != 0x03 and amo_op_valid(aop)
                    and (addr & (asize - 1)) == 0
                    and tlb_tag[2, aidx] == (avpn << S.TLB_CTX_BITS) | ctx):
                aoff = tlb_off[2, aidx] + (addr & 0xFFF)
                if f3 == 3:
                    old = ram64[aoff >> 3]
                    ram64[aoff >> 3] = amo_compute(aop, old, x[rs2(insn)], False)
                else:
                    old = sext32(np.int64(ram32[aoff >> 2]))
                    ram32[aoff >> 2] = np.uint32(amo_compute(aop, old, x[rs2(insn)], True) & 0xFFFFFFFF)
                if rd(insn):
                    x[rd(insn)] = old
                pc = npc
                continue
            st[S.LAST_INSN] = raw
            if not exec_amo(insn, x, csr, st, tlb_tag, tlb_off, pages, ram8, ram64):
                trap = True
            elif st[S.TRAP_PENDING]:
                pc = take_raised_trap(csr, st, pc)
                lookup = 2
                check_at = n
                continue
        elif opcode == 0x07 or opcode == 0x27:  # LOAD-FP / STORE-FP
            status = exec_fp_memory(insn, x, f, csr, st, tlb_tag, tlb_off, pages, ram8, ram64, opcode == 0x27)
            check_at = n
            if status < 0:
                trap = True
            elif status == MEM_TRAP:
                pc = take_raised_trap(csr, st, pc)
                lookup = 2
                continue
            elif status == MEM_MMIO:
                mmio_load_exit(st, rd(insn), 0, 1, npc)
                n -= 1
                exit_code = S.EXIT_MMIO
                break
        elif opcode == 0x53 or opcode == 0x43 or opcode == 0x47 or opcode == 0x4B or opcode == 0x4F:
            if not exec_fp_op(insn, x, f, csr):
                trap = True
        else:
            trap = True

        if trap:  # illegal instruction: tval is the raw instruction bits (as QEMU)
            pc = take_trap(csr, st, pc, C.CAUSE_ILLEGAL_INSTRUCTION,
                           raw if (raw & 3) == 3 else raw & 0xFFFF, False)
            check_at = n
            lookup = 2
            continue
        pc = npc

    st[S.PC] = pc
    st[S.INSTRET] = base_instret + n
    advance_clock(st, n - counted)
    return exit_code
