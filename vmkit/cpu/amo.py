"""The A extension: LR/SC and AMOs (ISA vol. I, 8).

Atomics need their address aligned to the access size; a misaligned LR
raises load-address-misaligned and a misaligned AMO store/AMO-address-
misaligned (QEMU behaviour, 8.4 allows either this or emulation).  An AMO
translates with store permission and reports store/AMO faults.  AMOs and
LR/SC on MMIO are access faults: devices are not atomic memory.
SC follows QEMU: with no matching reservation it fails (rd = 1) without
touching memory, so it cannot fault.
"""

from vmkit.cpu import csrs as C
from vmkit.cpu import state as S
from vmkit.cpu.decode import funct3, rd, rs1, rs2, sext32, ult
from vmkit.cpu.codepages import code_write
from vmkit.cpu.jit import njit
from vmkit.cpu.memory import raise_exception, ram_read, ram_write
from vmkit.cpu.mmu import ACCESS_LOAD, ACCESS_STORE, in_ram, translate_cached


@njit
def amo_translate(csr, st, tlb_tag, tlb_off, pages, ram64, vaddr, size, access):
    """Physical RAM offset for an atomic access, or -1 with the trap raised."""
    if vaddr & (size - 1):
        cause = C.CAUSE_MISALIGNED_LOAD if access == ACCESS_LOAD else C.CAUSE_MISALIGNED_STORE
        raise_exception(st, cause, vaddr)
        return -1
    paddr, cause = translate_cached(csr, st, tlb_tag, tlb_off, pages, ram64, vaddr, access)
    if cause >= 0:
        raise_exception(st, cause, vaddr)
        return -1
    if not in_ram(st, paddr, size):
        cause = C.CAUSE_LOAD_ACCESS if access == ACCESS_LOAD else C.CAUSE_STORE_ACCESS
        raise_exception(st, cause, vaddr)
        return -1
    return paddr - st[S.RAM_BASE]


@njit
def amo_op_valid(op):
    """funct5 values of the read-modify-write AMOs (not LR/SC)."""
    return (op == 0x00 or op == 0x01 or op == 0x04 or op == 0x08 or op == 0x0C
            or op == 0x10 or op == 0x14 or op == 0x18 or op == 0x1C)


@njit
def amo_compute(op, a, b, word):
    """funct5 of the AMO on loaded value a and register value b."""
    if op == 0x01:  # amoswap
        return b
    if op == 0x00:  # amoadd
        return a + b
    if op == 0x04:  # amoxor
        return a ^ b
    if op == 0x0C:  # amoand
        return a & b
    if op == 0x08:  # amoor
        return a | b
    if word:
        b = sext32(b)
    if op == 0x10:  # amomin
        return a if a < b else b
    if op == 0x14:  # amomax
        return a if a > b else b
    if word:
        au = a & 0xFFFFFFFF
        bu = b & 0xFFFFFFFF
        if op == 0x18:  # amominu
            return a if au < bu else b
        return a if au > bu else b
    if op == 0x18:
        return a if ult(a, b) else b
    return b if ult(a, b) else a  # amomaxu


@njit
def exec_amo(insn, x, csr, st, tlb_tag, tlb_off, pages, ram8, ram64):
    """Execute one AMO-opcode instruction.  Returns False if illegal."""
    f3 = funct3(insn)
    if f3 != 2 and f3 != 3:
        return False
    word = f3 == 2
    size = 4 if word else 8
    op = (insn >> 27) & 0x1F
    addr = x[rs1(insn)]
    dest = rd(insn)
    if op == 0x02:  # lr
        if rs2(insn) != 0:
            return False
        off = amo_translate(csr, st, tlb_tag, tlb_off, pages, ram64, addr, size, ACCESS_LOAD)
        if off < 0:
            return True
        v = ram_read(ram8, off, size)
        if word:
            v = sext32(v)
        st[S.RESERVATION] = addr
        if dest:
            x[dest] = v
        return True
    if op == 0x03:  # sc
        value = x[rs2(insn)]
        if st[S.RESERVATION] != addr:
            st[S.RESERVATION] = -1
            if dest:
                x[dest] = 1
            return True
        st[S.RESERVATION] = -1
        off = amo_translate(csr, st, tlb_tag, tlb_off, pages, ram64, addr, size, ACCESS_STORE)
        if off < 0:
            return True
        code_write(pages, off, size)
        ram_write(ram8, off, size, value)
        if dest:
            x[dest] = 0
        return True
    if not amo_op_valid(op):
        return False
    value = x[rs2(insn)]
    off = amo_translate(csr, st, tlb_tag, tlb_off, pages, ram64, addr, size, ACCESS_STORE)
    if off < 0:
        return True
    old = ram_read(ram8, off, size)
    if word:
        old = sext32(old)
    code_write(pages, off, size)
    ram_write(ram8, off, size, amo_compute(op, old, value, word))
    if dest:
        x[dest] = old
    return True
