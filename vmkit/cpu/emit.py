"""The baseline tier: guest code to machine code by copy-and-patch, in numba.

`translate` turns the code at one block start into a translation in a few
microseconds, inside interp.run itself: no Python, no LLVM, no thread.  It
decodes a trace (a superblock: straight on through conditional branches,
up to MAX_TRACE instructions, ending at a jump, an instruction this tier
leaves to the interpreter, or the page's end), then copies one stencil per
instruction (stencils.py) into the code cache through its writable view and
patches the holes.

- A block (the entry, the instruction after a branch, and every branch or
  jump target inside the trace) starts with the budget check: with fewer
  than its N instructions left before the interpreter's next check point,
  it leaves at its first instruction, as ir.py's regions do.  Loops whose
  back edges stay inside the trace run without leaving it.
- A branch or jump to a pc outside the trace leaves through an exit stub
  that asks the interpreter to look that pc up.
- Loads and stores check the TLB inline and leave before the access on a
  miss (stencils.py), so every exit is precise.
- Guest registers stay in x[] (no register allocation: that is what the
  optimizing tier, ir.py, is for).

Translations are published in jtab exactly like the optimizing tier's
(tier 1), keyed by RAM offset, virtual pc and page version.
"""

import numpy as np

from vmkit.cpu import state as S
from vmkit.cpu.alu import alu_legal
from vmkit.cpu.codecache import CUR_CAPACITY, CUR_FULL, CUR_INSNS, CUR_RX, CUR_TRACES, CUR_USED
from vmkit.cpu.codepages import chunk_bits, code_hash
from vmkit.cpu.decode import funct3, imm_b, imm_i, imm_j, imm_s, imm_u, rd, rs1, rs2
from vmkit.cpu.jit import njit
from vmkit.cpu.stencils import (H_CONT, H_IMM, H_K, H_PCOFF, H_RD, H_RS1, H_RS2, H_SITE, H_TAKEN,
                                IMM_BIAS, PCOFF_BIAS, R_X86_64_16, R_X86_64_32, R_X86_64_32S,
                                R_X86_64_64, R_X86_64_8, SH_ADDEND, SH_KIND, SH_OFF, SH_TYPE,
                                SH_COLUMNS, SI_COLUMNS, SI_DROP, SI_HOLE0, SI_HOLES, SI_LEN, SI_START,
                                SMAP_SIZE, amo_key, class_key)

MAX_TRACE = 64
RET_LOOKUP = 1
# Room a trace may need, at most: every instruction's stencil, a budget
# check before each and an exit stub for each (the largest stencil is
# below 160 bytes).
TRACE_ROOM = MAX_TRACE * 3 * 160 + 512

# The stencils that are not one instruction: their ids (stencils.CONTROL order).
ST_CHECK, ST_ZERO_X0, ST_EXIT, ST_JUMP, ST_EXIT_CHAIN, ST_JALR, ST_JALR_LINK = range(7)

# Instruction kinds of a decoded trace.
K_NOP, K_ALU, K_LUI, K_AUIPC, K_LOAD, K_STORE, K_BRANCH, K_JAL, K_JALR, K_AMO = range(10)
# Columns of the scratch table `work` [MAX_TRACE + 1, W_COLUMNS].
W_OFF, W_BITS, W_LEN, W_KIND, W_SID, W_TARGET, W_LEADER, W_CODE, W_NEXT = range(9)
W_COLUMNS = 12
# Fix-ups of TAKEN holes: rows of `fix` [MAX_TRACE * 2, 3].
F_FIELD, F_ADDEND, F_TARGET = range(3)


def new_work_tables():
    """Scratch space for `translate` (numba code cannot allocate here)."""
    return (np.zeros((MAX_TRACE + 1, W_COLUMNS), np.int64),
            np.zeros((MAX_TRACE * 2 + 2, 3), np.int64))


def idle_tables():
    """interp.run's `cp` argument for a hart without the translating tier:
    the same types (one compiled core), never used (threshold 0)."""
    from vmkit.cpu.codecache import CUR_SIZE
    return (np.zeros(16, np.uint8), np.zeros(CUR_SIZE, np.int64), np.zeros(16, np.uint8),
            np.zeros((1, SI_COLUMNS), np.int64), np.zeros((1, SH_COLUMNS), np.int64),
            np.full(SMAP_SIZE, -1, np.int64), *new_work_tables())


@njit
def _classify(bits, smap):
    """(kind, stencil id) of one instruction, or kind -1: leave it to the interpreter."""
    opc = bits & 0x7F
    f3 = funct3(bits)
    if opc == 0x13 or opc == 0x1B or opc == 0x33 or opc == 0x3B:
        if not alu_legal(bits):
            return -1, -1
        if rd(bits) == 0:
            return K_NOP, -1
        if opc == 0x33 or opc == 0x3B:
            f7 = bits >> 25
            variant = 0 if f7 == 0 else (1 if f7 == 0x20 else 2)
        else:
            variant = (bits >> 30) & 1 if (f3 == 1 or f3 == 5) else 0
        return K_ALU, smap[class_key(opc, f3, variant)]
    if opc == 0x37 or opc == 0x17:
        if rd(bits) == 0:
            return K_NOP, -1
        return (K_LUI if opc == 0x37 else K_AUIPC), smap[class_key(opc, 0, 0)]
    if opc == 0x03:
        if f3 == 7:
            return -1, -1
        return K_LOAD, smap[class_key(opc, f3, 0)]
    if opc == 0x2F:
        if f3 != 2 and f3 != 3:
            return -1, -1
        sid = smap[amo_key((bits >> 27) & 0x1F, f3 == 2)]
        return (K_AMO, sid) if sid >= 0 else (-1, -1)     # LR/SC: the interpreter's
    if opc == 0x23:
        if f3 > 3:
            return -1, -1
        return K_STORE, smap[class_key(opc, f3, 0)]
    if opc == 0x0F:
        return (K_NOP, -1) if f3 <= 1 else (-1, -1)   # fence, fence.i: see codepages.py
    if opc == 0x63:
        if f3 == 2 or f3 == 3:
            return -1, -1
        return K_BRANCH, smap[class_key(opc, f3, 0)]
    if opc == 0x6F:
        return K_JAL, -1
    if opc == 0x67:
        return (K_JALR, -1) if f3 == 0 else (-1, -1)
    return -1, -1


@njit
def _fits(rtype, v):
    if rtype == R_X86_64_64:
        return True
    if rtype == R_X86_64_32S:
        return -(1 << 31) <= v < (1 << 31)
    if rtype == R_X86_64_32:
        return 0 <= v < (1 << 32)
    if rtype == R_X86_64_16:
        return 0 <= v < (1 << 16)
    if rtype == R_X86_64_8:
        return 0 <= v < (1 << 8)
    return -(1 << 31) <= v < (1 << 31)    # PC32, PLT32: value - field address


@njit
def _field_bytes(rtype):
    """Width of an absolute relocation's field; 0 for the PC-relative ones."""
    if rtype == R_X86_64_64:
        return 8
    if rtype == R_X86_64_32 or rtype == R_X86_64_32S:
        return 4
    if rtype == R_X86_64_16:
        return 2
    if rtype == R_X86_64_8:
        return 1
    return 0


@njit
def _put(code, at, v, nbytes):
    for i in range(nbytes):
        code[at + i] = (v >> (8 * i)) & 0xFF


@njit
def _emit(code, pos, rx, sid, r_d, r_s1, r_s2, imm, pcoff, k, n, sbytes, sinfo, sholes, fix, nfix, target):
    """Copy stencil `sid` to code[pos:] and fill its holes; returns (new pos,
    new fix-up count), pos -1 when a value does not fit its field.  A TAKEN
    hole is recorded in `fix` for `target` (a trace index, or -1 - stub)."""
    start = sinfo[sid, SI_START]
    length = sinfo[sid, SI_LEN]
    keep = length - 5 if sinfo[sid, SI_DROP] else length
    for i in range(keep):
        code[pos + i] = sbytes[start + i]
    h0 = sinfo[sid, SI_HOLE0]
    for j in range(h0, h0 + sinfo[sid, SI_HOLES]):
        off = sholes[j, SH_OFF]
        if off >= keep:
            continue                      # the dropped `jmp CONT`
        rtype = sholes[j, SH_TYPE]
        kind = sholes[j, SH_KIND]
        addend = sholes[j, SH_ADDEND]
        field = pos + off
        if kind == H_TAKEN:
            fix[nfix, F_FIELD] = field
            fix[nfix, F_ADDEND] = addend
            fix[nfix, F_TARGET] = target
            nfix += 1
            continue
        if kind == H_CONT:
            sym = rx + pos + keep         # the code right after this stencil
        elif kind == H_RD:
            sym = r_d * 8
        elif kind == H_RS1:
            sym = r_s1 * 8
        elif kind == H_RS2:
            sym = r_s2 * 8
        elif kind == H_IMM:
            sym = imm + IMM_BIAS
        elif kind == H_PCOFF:
            sym = pcoff + PCOFF_BIAS
        elif kind == H_K:
            sym = k
        elif kind == H_SITE:
            sym = target                  # the chaining jump's field (exec address)
        else:                             # H_N
            sym = n
        v = sym + addend
        nbytes = _field_bytes(rtype)
        if nbytes == 0:                   # PC-relative
            v -= rx + field
            nbytes = 4
        if not _fits(rtype, v):
            return -1, nfix
        _put(code, field, v, nbytes)
    return pos + keep, nfix


@njit
def _exit_to(code, pos, rx, chain, pcoff, flag, sbytes, sinfo, sholes, fix, nfix):
    """Leave at page offset pcoff with flag; returns the new pos (-1: no fit).
    With `chain`, a lookup exit to the same page goes through a jump that
    interp.run later points straight at the target's translation (QEMU's
    goto_tb chaining); until then it jumps to the exit right after it."""
    if chain and flag == RET_LOOKUP and 0 <= pcoff < 4096:
        pos, nfix = _emit(code, pos, rx, ST_JUMP, 0, 0, 0, 0, 0, 0, 0,
                          sbytes, sinfo, sholes, fix, nfix, 0)
        if pos < 0:
            return -1
        field = fix[nfix - 1, F_FIELD]
        _put(code, field, pos + fix[nfix - 1, F_ADDEND] - field, 4)
        pos, _ = _emit(code, pos, rx, ST_EXIT_CHAIN, 0, 0, 0, 0, pcoff, flag, 0,
                       sbytes, sinfo, sholes, fix, nfix - 1, rx + field)
        return pos
    pos, _ = _emit(code, pos, rx, ST_EXIT, 0, 0, 0, 0, pcoff, flag, 0, sbytes, sinfo, sholes, fix, nfix, 0)
    return pos


@njit
def _decode(ram16, page_roff, off, rvc, smap, work):
    """Pass 1: the trace's instructions from page offset `off`, into work.
    Returns (count, end offset, end flag): after the last instruction (if
    it is not a jump) the trace leaves at the end offset with that flag.
    It is always a lookup: where this tier stops (an FP instruction, say),
    the optimizing tier may have a translation, or the interpreter counts
    the pc towards one."""
    n = 0
    while n < MAX_TRACE:
        if off > 4094:
            return n, off, RET_LOOKUP     # the next page: look it up
        half = np.int64(ram16[(page_roff + off) >> 1])
        if (half & 3) == 3:
            if off > 4092:
                return n, off, RET_LOOKUP  # crosses the page: the interpreter fetches it
            bits = half | (np.int64(ram16[((page_roff + off) >> 1) + 1]) << 16)
            length = 4
        else:
            bits = np.int64(rvc[half])
            length = 2
            if bits == 0:
                return n, off, RET_LOOKUP
        kind, sid = _classify(bits, smap)
        if kind < 0:
            return n, off, RET_LOOKUP     # the interpreter runs it
        if kind == K_AUIPC and not -(1 << 31) <= off + imm_u(bits) < (1 << 31):
            return n, off, RET_LOOKUP
        w = work[n]
        w[W_OFF] = off
        w[W_BITS] = bits
        w[W_LEN] = length
        w[W_KIND] = kind
        w[W_SID] = sid
        w[W_LEADER] = 1 if n == 0 else 0
        w[W_TARGET] = 0
        if kind == K_BRANCH:
            w[W_TARGET] = off + imm_b(bits)
        elif kind == K_JAL:
            w[W_TARGET] = off + imm_j(bits)
        n += 1
        off += length
        if kind == K_JAL or kind == K_JALR:
            return n, off, RET_LOOKUP
    return n, off, RET_LOOKUP


@njit
def _index_of(work, n, off):
    """The trace index of the instruction at page offset off, or -1."""
    lo = 0
    hi = n - 1
    while lo <= hi:
        mid = (lo + hi) >> 1
        v = work[mid, W_OFF]
        if v == off:
            return mid
        if v < off:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


@njit
def translate(ram16, roff, vpc, rvc, pages, jtab, tlb_tag, tlb_off, code, cursor,
              sbytes, sinfo, sholes, smap, work, fix):
    """Translate the code at RAM offset roff (virtual pc vpc) and publish it
    in jtab.  Returns the instructions covered, 0 when the first one is left
    to the interpreter (or a value did not fit), -1 when the cache is full
    (cursor[CUR_FULL] is then set: translator.py flushes it)."""
    page = roff >> 12
    page_roff = page << 12
    n, end_off, end_flag = _decode(ram16, page_roff, roff & 0xFFF, rvc, smap, work)
    if n == 0:
        return 0
    used = cursor[CUR_USED]
    pos = (used + 15) & ~15
    if pos + TRACE_ROOM > cursor[CUR_CAPACITY]:
        cursor[CUR_FULL] = 1
        return -1
    rx = cursor[CUR_RX]
    # Chaining stubs keep their own address in a 32-bit field: only in a
    # cache mapped in the low 2 GiB (codecache.py: MAP_32BIT).
    chain = rx + cursor[CUR_CAPACITY] < (1 << 31)
    # Leaders: after each branch, and every target inside the trace.
    for i in range(n):
        work[i, W_NEXT] = -1
        kind = work[i, W_KIND]
        if kind == K_BRANCH and i + 1 < n:
            work[i + 1, W_LEADER] = 1
        if kind == K_BRANCH or kind == K_JAL:
            t = _index_of(work, n, work[i, W_TARGET])
            work[i, W_NEXT] = t
            if t >= 0:
                work[t, W_LEADER] = 1
    # Before the entry: an exit that looks the entry up.  When the optimizing
    # tier replaces this translation, translator.py points the entry's first
    # bytes at it, so chains into this trace reach the new code too.
    pos, _ = _emit(code, pos, rx, ST_EXIT, 0, 0, 0, 0, roff & 0xFFF, RET_LOOKUP, 0,
                   sbytes, sinfo, sholes, fix, 0, 0)
    if pos < 0:
        return 0
    base = pos
    nfix = 0
    block_n = 0
    block_start = 0
    for i in range(n):
        w = work[i]
        bits = w[W_BITS]
        off = w[W_OFF]
        if w[W_LEADER]:
            block_start = i
            j = i + 1
            while j < n and work[j, W_LEADER] == 0:
                j += 1
            block_n = j - i
            w[W_CODE] = pos
            pos, nfix = _emit(code, pos, rx, ST_CHECK, 0, 0, 0, 0, off, 0, block_n,
                              sbytes, sinfo, sholes, fix, nfix, 0)
            if pos < 0:
                return 0
        adj = block_n - (i - block_start)     # not retired when leaving before this one
        kind = w[W_KIND]
        sid = w[W_SID]
        r_d = rd(bits)
        if kind == K_ALU:
            pos, nfix = _emit(code, pos, rx, sid, r_d, rs1(bits), rs2(bits), imm_i(bits), 0, 0, 0,
                              sbytes, sinfo, sholes, fix, nfix, 0)
        elif kind == K_LUI:
            pos, nfix = _emit(code, pos, rx, sid, r_d, 0, 0, imm_u(bits), 0, 0, 0,
                              sbytes, sinfo, sholes, fix, nfix, 0)
        elif kind == K_AUIPC:
            pos, nfix = _emit(code, pos, rx, sid, r_d, 0, 0, off + imm_u(bits), 0, 0, 0,
                              sbytes, sinfo, sholes, fix, nfix, 0)
        elif kind == K_LOAD or kind == K_AMO:
            imm = imm_i(bits) if kind == K_LOAD else 0
            pos, nfix = _emit(code, pos, rx, sid, r_d, rs1(bits), rs2(bits), imm, off, adj << 2, 0,
                              sbytes, sinfo, sholes, fix, nfix, 0)
            if r_d == 0 and pos >= 0:       # x0 stays zero
                pos, nfix = _emit(code, pos, rx, ST_ZERO_X0, 0, 0, 0, 0, 0, 0, 0,
                                  sbytes, sinfo, sholes, fix, nfix, 0)
        elif kind == K_STORE:
            pos, nfix = _emit(code, pos, rx, sid, 0, rs1(bits), rs2(bits), imm_s(bits), off, adj << 2,
                              0, sbytes, sinfo, sholes, fix, nfix, 0)
        elif kind == K_BRANCH:
            t = w[W_NEXT]
            pos, nfix = _emit(code, pos, rx, sid, 0, rs1(bits), rs2(bits), 0, 0, 0, 0,
                              sbytes, sinfo, sholes, fix, nfix, t if t >= 0 else -1 - i)
        elif kind == K_JAL:
            if r_d != 0:                      # the link: page base + offset, as auipc
                pos, nfix = _emit(code, pos, rx, smap[class_key(0x17, 0, 0)], r_d, 0, 0,
                                  off + w[W_LEN], 0, 0, 0, sbytes, sinfo, sholes, fix, nfix, 0)
                if pos < 0:
                    return 0
            t = w[W_NEXT]
            pos, nfix = _emit(code, pos, rx, ST_JUMP, 0, 0, 0, 0, 0, 0, 0,
                              sbytes, sinfo, sholes, fix, nfix, t if t >= 0 else -1 - i)
        elif kind == K_JALR:
            pos, nfix = _emit(code, pos, rx, ST_JALR_LINK if r_d != 0 else ST_JALR, r_d, rs1(bits), 0,
                              imm_i(bits), off + w[W_LEN], RET_LOOKUP, 0,
                              sbytes, sinfo, sholes, fix, nfix, 0)
        if pos < 0:
            return 0
    last = work[n - 1, W_KIND]
    if last != K_JAL and last != K_JALR:
        pos = _exit_to(code, pos, rx, chain, end_off, end_flag, sbytes, sinfo, sholes, fix, nfix)
        if pos < 0:
            return 0
    # Branch and jump targets: inside the trace, its block's check; outside,
    # an exit stub that asks for a lookup there.
    for j in range(nfix):
        t = fix[j, F_TARGET]
        if t >= 0:
            dest = work[t, W_CODE]
        else:
            dest = pos
            pos = _exit_to(code, pos, rx, chain, work[-1 - t, W_TARGET], RET_LOOKUP,
                           sbytes, sinfo, sholes, fix, nfix)
            if pos < 0:
                return 0
        field = fix[j, F_FIELD]
        _put(code, field, dest + fix[j, F_ADDEND] - field, 4)   # both in the cache: fits
    cursor[CUR_USED] = pos
    cursor[CUR_TRACES] += 1
    cursor[CUR_INSNS] += n
    # From now on every store into these chunks invalidates the page.
    first = roff & 0xFFF
    had_code = pages[page, S.P_CODE] != 0
    pages[page, S.P_CODE] |= chunk_bits(first, min(end_off, 4096) - 1)
    if not had_code:                      # no store-TLB entry may point at a code page
        for idx in range(S.TLB_SIZE):
            if tlb_off[S.TLB_STORE, idx] == page_roff:
                tlb_tag[S.TLB_STORE, idx] = S.TLB_INVALID
    h = code_hash(roff)
    jtab[h, S.J_KEY] = roff
    jtab[h, S.J_VPC] = vpc
    jtab[h, S.J_FN] = rx + base
    jtab[h, S.J_VER] = pages[page, S.P_VER]
    jtab[h, S.J_TIER] = 1
    jtab[h, S.J_HOT_KEY] = roff
    jtab[h, S.J_HOT] = 0
    return n


@njit
def patch_jump(code, cursor, site, target):
    """Point the rel32 jump field at exec address `site` at exec address
    `target` (a chaining jump, emit._exit_to), through the writable view."""
    _put(code, site - cursor[CUR_RX], target - (site + 4), 4)
