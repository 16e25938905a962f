"""Instruction tracing for `vmkit run --trace`: pc, raw bits, disassembly, register written.

Steps the hart one instruction at a time through the normal exit protocol
(budget 1), so what is traced is exactly what the fast loop executes.
"""

import sys

import numpy as np

from vmkit.cpu import state as S
from vmkit.cpu.disasm import disassemble
from vmkit.cpu.mmu import ACCESS_FETCH, in_ram, translate

ABI = ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3",
       "a4", "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
       "t3", "t4", "t5", "t6"]


def fetch_raw(hart, pc: int) -> int | None:
    """The instruction bits at virtual pc, without side effects beyond A bits."""
    words = []
    for addr in (pc, pc + 2):
        addr &= 2**64 - 1
        signed = addr - 2**64 if addr >= 2**63 else addr  # kernel addresses are "negative"
        paddr, cause = translate(hart.csr, hart.st, hart.pages, hart.ram64, np.int64(signed), ACCESS_FETCH)
        if cause >= 0 or not in_ram(hart.st, paddr, 2):
            return None
        words.append(int(hart.ram16[(int(paddr) - hart.ram_base) >> 1]))
        if words[0] & 3 != 3:
            return words[0]
    return words[0] | (words[1] << 16)


def trace(machine, count: int, out=None) -> str | None:
    """Execute and print `count` instructions; returns a halt reason or None."""
    out = out or sys.stderr
    hart = machine.hart
    for _ in range(count):
        pc = hart.pc & (2**64 - 1)
        raw = fetch_raw(hart, pc)
        before_x = hart.x.copy()
        before_f = hart.f.copy()
        priv = int(hart.st[S.PRIV])
        code = hart.run(1)
        if code == S.EXIT_MMIO:
            machine._service_mmio()
        text = disassemble(raw, pc) if raw is not None else "<fetch fault>"
        rawtxt = f"{raw:08x}" if raw is not None and raw & 3 == 3 else (f"    {raw:04x}" if raw is not None else "????????")
        changed = ""
        for i in range(1, 32):
            if hart.x[i] != before_x[i]:
                changed = f"{ABI[i]}={int(hart.x[i]) & (2**64 - 1):#x}"
                break
        else:
            for i in range(32):
                if hart.f[i] != before_f[i]:
                    changed = f"f{i}={int(hart.f[i]) & (2**64 - 1):#x}"
                    break
        new_pc = hart.pc & (2**64 - 1)
        trapped = "" if new_pc in (pc + 2, pc + 4) or raw is None else ""
        print(f"{'USHM'[priv]} {pc:016x}: {rawtxt}  {text:<32} {changed}{trapped}", file=out)
        if machine._halt is not None:
            return machine._halt[0]
    return None
