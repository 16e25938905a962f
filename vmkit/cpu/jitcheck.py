"""`--jit check`: each translated run compared with the interpreter in lockstep.

When the interpreter is about to enter a translation it returns
EXIT_JIT_CALL instead (state.JIT_CHECK).  `run_checked` then

1. saves the hart state and every RAM page the translation could write
   (translations store only through the store TLB, so its pages suffice);
2. runs the translation and keeps what it produced;
3. puts the saved state back and runs the interpreter for exactly the
   number of instructions the translation retired, ending before the
   interrupt check there (state.STOP_AT_BUDGET), as the translated path
   would;
4. compares registers, CSRs, pc, the LR/SC reservation and those pages,
   and raises JitError with the region's disassembly and both states on
   the first difference.

The interpreter's result is what the guest keeps: the oracle wins.
"""

import numpy as np

from vmkit.cpu import state as S
from vmkit.cpu.disasm import FREG, XREG, disassemble
from vmkit.cpu.jitconfig import JitError

ST_COMPARED = (S.PC, S.RESERVATION, S.PRIV, S.TLB_CTX, S.MSIP, S.MTIMECMP)


def _store_pages(hart) -> list[int]:
    row = hart.tlb_tag[S.TLB_STORE]
    offs = hart.tlb_off[S.TLB_STORE][row != S.TLB_INVALID]
    return sorted({int(o) for o in offs})


def run_checked(tr, hart) -> int:
    st = hart.st
    slot = int(st[S.JIT_CALL_SLOT])
    limit = int(st[S.JIT_CALL_LIMIT])
    resume = int(st[S.RESUME_CHECK])
    pages = _store_pages(hart)
    pre = [a.copy() for a in (hart.x, hart.f, hart.csr, hart.st)]
    pre_ram = {p: hart.ram[p:p + 4096].copy() for p in pages}

    r = tr.call(hart, slot, limit)
    retired, flag = r >> 2, r & 1
    if not 0 <= retired <= limit:
        raise JitError(f"translation at {int(tr.jtab[slot, S.J_VPC]):#x} retired {retired} "
                       f"instructions with a limit of {limit}")
    post = [a.copy() for a in (hart.x, hart.f, hart.csr, hart.st)]
    post_ram = {p: hart.ram[p:p + 4096].copy() for p in pages}

    for a, saved in zip((hart.x, hart.f, hart.csr, hart.st), pre):
        a[:] = saved
    for p, saved in pre_ram.items():
        hart.ram[p:p + 4096] = saved
    if retired:
        threshold = int(st[S.JIT_THRESHOLD])
        st[S.JIT_THRESHOLD] = 0
        st[S.STOP_AT_BUDGET] = 1
        st[S.RESUME_CHECK] = retired + 1
        st[S.RESUME_LOOKUP] = 0
        try:
            code = hart.core_run(retired)
        finally:
            st[S.JIT_THRESHOLD] = threshold
            st[S.STOP_AT_BUDGET] = 0
        diffs = _differences(hart, post, post_ram, pages)
        if code != S.EXIT_BUDGET:
            diffs.insert(0, f"the interpreter stopped early (exit {code}) where the translation ran on")
        if diffs:
            raise JitError(report(tr, slot, limit, retired, pre, diffs))
    st[S.STAT_JIT_INSNS] += retired
    st[S.RESUME_CHECK] = resume - retired
    st[S.RESUME_LOOKUP] = 2 if flag else 0
    return retired


def _differences(hart, post, post_ram, pages) -> list[str]:
    out = []
    x, f, csr, st = post
    for i in range(1, 32):
        if hart.x[i] != x[i]:
            out.append(f"x{i} ({XREG[i]}): interpreter {_hex(hart.x[i])}, translation {_hex(x[i])}")
    for i in range(32):
        if hart.f[i] != f[i]:
            out.append(f"f{i} ({FREG[i]}): interpreter {_hex(hart.f[i])}, translation {_hex(f[i])}")
    for i in np.flatnonzero(hart.csr != csr):
        out.append(f"csr {int(i):#x}: interpreter {_hex(hart.csr[i])}, translation {_hex(csr[i])}")
    for i in ST_COMPARED:
        if hart.st[i] != st[i]:
            out.append(f"st[{i}]: interpreter {_hex(hart.st[i])}, translation {_hex(st[i])}")
    for p in pages:
        now = hart.ram[p:p + 4096]
        bad = np.flatnonzero(now != post_ram[p])
        if len(bad):
            off = p + int(bad[0])
            out.append(f"RAM at {hart.ram_base + off:#x} ({len(bad)} bytes differ in the page): "
                       f"interpreter {int(now[bad[0]]):#04x}, translation {int(post_ram[p][bad[0]]):#04x}")
    return out


def _hex(v) -> str:
    return f"{int(v) & (2**64 - 1):#x}"


def report(tr, slot, limit, retired, pre, diffs) -> str:
    """The first difference, the region's guest code and the state it started from."""
    vpc = int(tr.jtab[slot, S.J_VPC])
    lines = [f"--jit check: translation entered at {vpc:#x} differs from the interpreter "
             f"after {retired} instructions (limit {limit}):"]
    lines += ["  " + d for d in diffs]
    lines.append("guest code of the translation:")
    roff = int(tr.jtab[slot, S.J_KEY])
    from vmkit.cpu.region import find_region
    region = find_region(tr.ram[roff & ~0xFFF:(roff & ~0xFFF) + 4096].tobytes(), vpc, tr.rvc)
    for block in (region.blocks.values() if region else ()):
        for i in block.insns:
            lines.append(f"  {i.pc & (2**64 - 1):016x}: {disassemble(i.raw, i.pc)}")
        lines.append("  --")
    x = pre[0]
    lines.append("state at entry: " + " ".join(f"{XREG[i]}={_hex(x[i])}" for i in range(1, 32)))
    return "\n".join(lines)
