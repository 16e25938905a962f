"""Instruction field extractors and integer bit helpers.

RISC-V Unprivileged ISA 20191213, 2.2-2.3 (base formats and immediate
encodings).  Names follow Spike (`imm_i`, `imm_s`, ...).  All values are
int64; `insn` is the 32-bit encoding (compressed instructions are expanded to
their 32-bit form before decode, see compressed.py).
"""

import numpy as np

from vmkit.cpu.jit import njit

INT64_MIN = -(1 << 63)


@njit
def rd(insn):
    return (insn >> 7) & 0x1F


@njit
def rs1(insn):
    return (insn >> 15) & 0x1F


@njit
def rs2(insn):
    return (insn >> 20) & 0x1F


@njit
def rs3(insn):
    return (insn >> 27) & 0x1F


@njit
def funct3(insn):
    return (insn >> 12) & 0x7


@njit
def funct7(insn):
    return (insn >> 25) & 0x7F


@njit
def sext32(v):
    """Sign-extend the low 32 bits of v to 64 bits."""
    return ((v & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


@njit
def sext(v, bits):
    """Sign-extend the low `bits` bits of v."""
    m = 1 << (bits - 1)
    return ((v & ((m << 1) - 1)) ^ m) - m


@njit
def imm_i(insn):
    return sext32(insn) >> 20


@njit
def imm_s(insn):
    return ((sext32(insn) >> 20) & ~0x1F) | ((insn >> 7) & 0x1F)


@njit
def imm_b(insn):
    return (((sext32(insn) >> 19) & ~0xFFF)        # imm[12] from bit 31
            | ((insn << 4) & 0x800)                 # imm[11] from bit 7
            | ((insn >> 20) & 0x7E0)                # imm[10:5] from bits 30:25
            | ((insn >> 7) & 0x1E))                 # imm[4:1] from bits 11:8


@njit
def imm_u(insn):
    return sext32(insn & 0xFFFFF000)


@njit
def imm_j(insn):
    return (((sext32(insn) >> 11) & ~0xFFFFF)      # imm[20] from bit 31
            | (insn & 0xFF000)                      # imm[19:12]
            | ((insn >> 9) & 0x800)                 # imm[11] from bit 20
            | ((insn >> 20) & 0x7FE))               # imm[10:1] from bits 30:21


@njit
def ult(a, b):
    """Unsigned a < b on int64 bit patterns."""
    return (a ^ INT64_MIN) < (b ^ INT64_MIN)


@njit
def srl(a, sh):
    """Logical right shift of an int64 bit pattern (0 <= sh < 64)."""
    if sh == 0:
        return a
    return (a >> sh) & ((1 << (64 - sh)) - 1)
