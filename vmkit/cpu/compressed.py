"""RVC: expansion of 16-bit compressed instructions to their 32-bit equivalents.

RISC-V Unprivileged ISA 20191213, chapter 16 ("C" Standard Extension for
Compressed Instructions, Version 2.0): formats in 16.2 (Tables 16.1, 16.2),
encodings in 16.8 (Table 16.4, the RVC opcode map, and Tables 16.5-16.7 for
quadrants 0-2).  Every RVC instruction expands to exactly one base instruction
(16.1), so the core never executes a compressed instruction directly: it looks
the 16 bits up in a 65536-entry table built here once and then decodes the
32-bit result like any other instruction.  An entry of 0 means "illegal
instruction" (an all-zero instruction is never legal, 1.5), which covers the
reserved encodings, the RV32-only ones (C.JAL, C.FLW, C.FSW, C.FLWSP, C.FSWSP)
and the RV128 ones (C.LQ, C.SQ, ...) that share slots with RV64 instructions.

HINTs (16.7, Table 16.3 "RVC HINT instructions") are legal: they expand to the
base instruction with the same operands, which is what the spec prescribes
(e.g. C.LI with rd=x0 is ``addi x0, x0, imm``), so they execute as no-ops.

Only the table is used at run time; `expand_rvc` is plain Python so that it
can be read against the spec, and is also used by the disassembler.
"""

import numpy as np

# Major opcodes (Table 24.1, "RISC-V base opcode map") of the expansions.
OP_LOAD = 0x03
OP_LOAD_FP = 0x07
OP_IMM = 0x13
OP_IMM_32 = 0x1B
OP_STORE = 0x23
OP_STORE_FP = 0x27
OP = 0x33
OP_LUI = 0x37
OP_32 = 0x3B
OP_BRANCH = 0x63
OP_JALR = 0x67
OP_JAL = 0x6F
OP_SYSTEM = 0x73

EBREAK = 0x00100073  # 2.8: imm=1, rs1=rd=0, funct3=0, SYSTEM

SP = 2
RA = 1


# --- base-format encoders (2.2, 2.3) -----------------------------------------------

def _r(opcode, funct3, funct7, rd, rs1, rs2):
    return (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _i(opcode, funct3, rd, rs1, imm):
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _s(opcode, funct3, rs1, rs2, imm):
    return (((imm >> 5) & 0x7F) << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) \
        | ((imm & 0x1F) << 7) | opcode


def _b(funct3, rs1, rs2, imm):
    return (((imm >> 12) & 1) << 31) | (((imm >> 5) & 0x3F) << 25) | (rs2 << 20) \
        | (rs1 << 15) | (funct3 << 12) | (((imm >> 1) & 0xF) << 8) \
        | (((imm >> 11) & 1) << 7) | OP_BRANCH


def _u(opcode, rd, imm20):
    return ((imm20 & 0xFFFFF) << 12) | (rd << 7) | opcode


def _j(rd, imm):
    return (((imm >> 20) & 1) << 31) | (((imm >> 1) & 0x3FF) << 21) \
        | (((imm >> 11) & 1) << 20) | (((imm >> 12) & 0xFF) << 12) | (rd << 7) | OP_JAL


# --- RVC field extractors (16.2, Tables 16.1-16.2) --------------------------------

def _bit(c, i):
    return (c >> i) & 1


def _bits(c, hi, lo):
    return (c >> lo) & ((1 << (hi - lo + 1)) - 1)


def _sext(value, bits):
    sign = 1 << (bits - 1)
    return (value & (sign - 1)) - (value & sign)


def _imm6(c):
    """The CI-format signed immediate imm[5] = c[12], imm[4:0] = c[6:2]."""
    return _sext((_bit(c, 12) << 5) | _bits(c, 6, 2), 6)


def _shamt6(c):
    """The CI/CB-format 6-bit shift amount, shamt[5] = c[12], shamt[4:0] = c[6:2]."""
    return (_bit(c, 12) << 5) | _bits(c, 6, 2)


def _uimm_w(c):
    """CL/CS word offset: uimm[5:3] = c[12:10], uimm[2] = c[6], uimm[6] = c[5]."""
    return (_bits(c, 12, 10) << 3) | (_bit(c, 6) << 2) | (_bit(c, 5) << 6)


def _uimm_d(c):
    """CL/CS doubleword offset: uimm[5:3] = c[12:10], uimm[7:6] = c[6:5]."""
    return (_bits(c, 12, 10) << 3) | (_bits(c, 6, 5) << 6)


def _j_offset(c):
    """CJ offset[11|4|9:8|10|6|7|3:1|5] = c[12:2] (16.4, C.J)."""
    off = (_bit(c, 12) << 11) | (_bit(c, 11) << 4) | (_bits(c, 10, 9) << 8) \
        | (_bit(c, 8) << 10) | (_bit(c, 7) << 6) | (_bit(c, 6) << 7) \
        | (_bits(c, 5, 3) << 1) | (_bit(c, 2) << 5)
    return _sext(off, 12)


def _b_offset(c):
    """CB offset[8|4:3] = c[12:10], offset[7:6|2:1|5] = c[6:2] (16.4, C.BEQZ)."""
    off = (_bit(c, 12) << 8) | (_bits(c, 11, 10) << 3) | (_bits(c, 6, 5) << 6) \
        | (_bits(c, 4, 3) << 1) | (_bit(c, 2) << 5)
    return _sext(off, 9)


def expand_rvc(c: int) -> int:
    """The 32-bit RV64 instruction equivalent to the compressed instruction `c`.

    Returns 0 for encodings that are reserved or not part of RV64GC; the
    core raises an illegal-instruction exception for them.  `c` must be a 16-bit value with c[1:0] != 0b11.
    """
    quadrant = c & 3
    funct3 = c >> 13
    rd = _bits(c, 11, 7)            # rd/rs1 of CR/CI formats
    rs2 = _bits(c, 6, 2)            # rs2 of CR/CSS formats
    rdp = 8 + _bits(c, 4, 2)        # rd'/rs2' of CIW/CL/CS/CA (x8..x15)
    rs1p = 8 + _bits(c, 9, 7)       # rs1'/rd' of CL/CS/CA/CB

    if quadrant == 0:
        if funct3 == 0:
            # C.ADDI4SPN (16.5): nzuimm[5:4|9:6|2|3] = c[12:5]; nzuimm=0 is
            # reserved, which also makes the all-zero halfword illegal (16.5,
            # "Defined Illegal Instruction").
            nzuimm = (_bits(c, 12, 11) << 4) | (_bits(c, 10, 7) << 6) \
                | (_bit(c, 6) << 2) | (_bit(c, 5) << 3)
            if nzuimm == 0:
                return 0
            return _i(OP_IMM, 0, rdp, SP, nzuimm)
        if funct3 == 1:  # C.FLD (16.3); C.LQ on RV128
            return _i(OP_LOAD_FP, 3, rdp, rs1p, _uimm_d(c))
        if funct3 == 2:  # C.LW
            return _i(OP_LOAD, 2, rdp, rs1p, _uimm_w(c))
        if funct3 == 3:  # C.LD (RV64); C.FLW on RV32
            return _i(OP_LOAD, 3, rdp, rs1p, _uimm_d(c))
        if funct3 == 4:  # reserved (Table 16.4)
            return 0
        if funct3 == 5:  # C.FSD; C.SQ on RV128
            return _s(OP_STORE_FP, 3, rs1p, rdp, _uimm_d(c))
        if funct3 == 6:  # C.SW
            return _s(OP_STORE, 2, rs1p, rdp, _uimm_w(c))
        # C.SD (RV64); C.FSW on RV32
        return _s(OP_STORE, 3, rs1p, rdp, _uimm_d(c))

    if quadrant == 1:
        if funct3 == 0:
            # C.ADDI (16.5); rd=0 is C.NOP (nzimm=0) or a HINT, nzimm=0 with
            # rd!=0 is a HINT: all expand to addi rd, rd, imm.
            return _i(OP_IMM, 0, rd, rd, _imm6(c))
        if funct3 == 1:
            # C.ADDIW (RV64; C.JAL on RV32); rd=0 is reserved.
            if rd == 0:
                return 0
            return _i(OP_IMM_32, 0, rd, rd, _imm6(c))
        if funct3 == 2:
            # C.LI; rd=0 is a HINT.
            return _i(OP_IMM, 0, rd, 0, _imm6(c))
        if funct3 == 3:
            if rd == SP:
                # C.ADDI16SP: nzimm[9] = c[12], nzimm[4|6|8:7|5] = c[6:2];
                # nzimm=0 is reserved.
                nzimm = (_bit(c, 12) << 9) | (_bit(c, 6) << 4) | (_bit(c, 5) << 6) \
                    | (_bits(c, 4, 3) << 7) | (_bit(c, 2) << 5)
                if nzimm == 0:
                    return 0
                return _i(OP_IMM, 0, SP, SP, _sext(nzimm, 10))
            # C.LUI: nzimm[17] = c[12], nzimm[16:12] = c[6:2], sign-extended
            # into lui's 20-bit field; nzimm=0 is reserved, rd=0 a HINT.
            imm6 = _imm6(c)
            if imm6 == 0:
                return 0
            return _u(OP_LUI, rd, imm6)
        if funct3 == 4:
            funct2 = _bits(c, 11, 10)
            if funct2 == 0:
                # C.SRLI; shamt=0 is the C.SRLI64 HINT on RV64 (Table 16.3).
                return _i(OP_IMM, 5, rs1p, rs1p, _shamt6(c))
            if funct2 == 1:
                # C.SRAI (srai has imm[11:6] = 010000); shamt=0 is C.SRAI64.
                return _i(OP_IMM, 5, rs1p, rs1p, 0x400 | _shamt6(c))
            if funct2 == 2:  # C.ANDI
                return _i(OP_IMM, 7, rs1p, rs1p, _imm6(c))
            # CA format (16.5 "Integer Register-Register Operations").
            op2 = _bits(c, 6, 5)
            rs2p = rdp
            if _bit(c, 12) == 0:
                if op2 == 0:  # C.SUB
                    return _r(OP, 0, 0x20, rs1p, rs1p, rs2p)
                if op2 == 1:  # C.XOR
                    return _r(OP, 4, 0, rs1p, rs1p, rs2p)
                if op2 == 2:  # C.OR
                    return _r(OP, 6, 0, rs1p, rs1p, rs2p)
                return _r(OP, 7, 0, rs1p, rs1p, rs2p)  # C.AND
            if op2 == 0:  # C.SUBW
                return _r(OP_32, 0, 0x20, rs1p, rs1p, rs2p)
            if op2 == 1:  # C.ADDW
                return _r(OP_32, 0, 0, rs1p, rs1p, rs2p)
            return 0  # reserved (Table 16.5)
        if funct3 == 5:  # C.J
            return _j(0, _j_offset(c))
        if funct3 == 6:  # C.BEQZ
            return _b(0, rs1p, 0, _b_offset(c))
        return _b(1, rs1p, 0, _b_offset(c))  # C.BNEZ

    # quadrant 2
    if funct3 == 0:
        # C.SLLI; rd=0 and/or shamt=0 (C.SLLI64) are HINTs on RV64
        # (Table 16.3).
        return _i(OP_IMM, 1, rd, rd, _shamt6(c))
    if funct3 == 1:
        # C.FLDSP: uimm[5] = c[12], uimm[4:3] = c[6:5], uimm[8:6] = c[4:2].
        uimm = (_bit(c, 12) << 5) | (_bits(c, 6, 5) << 3) | (_bits(c, 4, 2) << 6)
        return _i(OP_LOAD_FP, 3, rd, SP, uimm)
    if funct3 == 2:
        # C.LWSP: uimm[5] = c[12], uimm[4:2] = c[6:4], uimm[7:6] = c[3:2];
        # rd=0 is reserved.
        if rd == 0:
            return 0
        uimm = (_bit(c, 12) << 5) | (_bits(c, 6, 4) << 2) | (_bits(c, 3, 2) << 6)
        return _i(OP_LOAD, 2, rd, SP, uimm)
    if funct3 == 3:
        # C.LDSP (RV64; C.FLWSP on RV32); rd=0 is reserved.
        if rd == 0:
            return 0
        uimm = (_bit(c, 12) << 5) | (_bits(c, 6, 5) << 3) | (_bits(c, 4, 2) << 6)
        return _i(OP_LOAD, 3, rd, SP, uimm)
    if funct3 == 4:
        if _bit(c, 12) == 0:
            if rs2 == 0:
                # C.JR; rs1=0 is reserved.
                if rd == 0:
                    return 0
                return _i(OP_JALR, 0, 0, rd, 0)
            # C.MV; rd=0 is a HINT.
            return _r(OP, 0, 0, rd, 0, rs2)
        if rs2 == 0:
            if rd == 0:  # C.EBREAK
                return EBREAK
            return _i(OP_JALR, 0, RA, rd, 0)  # C.JALR
        # C.ADD; rd=0 is a HINT.
        return _r(OP, 0, 0, rd, rd, rs2)
    if funct3 == 5:
        # C.FSDSP: uimm[5:3] = c[12:10], uimm[8:6] = c[9:7].
        uimm = (_bits(c, 12, 10) << 3) | (_bits(c, 9, 7) << 6)
        return _s(OP_STORE_FP, 3, SP, rs2, uimm)
    if funct3 == 6:
        # C.SWSP: uimm[5:2] = c[12:9], uimm[7:6] = c[8:7].
        uimm = (_bits(c, 12, 9) << 2) | (_bits(c, 8, 7) << 6)
        return _s(OP_STORE, 2, SP, rs2, uimm)
    # C.SDSP (RV64; C.FSWSP on RV32)
    uimm = (_bits(c, 12, 10) << 3) | (_bits(c, 9, 7) << 6)
    return _s(OP_STORE, 3, SP, rs2, uimm)


def build_rvc_table() -> np.ndarray:
    """int64[65536]: entry c is expand_rvc(c), 0 where c[1:0] == 0b11 or illegal.

    int64 like every value the core handles (see state.py), so lookups never
    mix signedness.  Building it takes about 0.1 s, which is cheaper than
    caching it on disk.
    """
    table = np.zeros(1 << 16, dtype=np.int64)
    for c in range(1 << 16):
        if c & 3 != 3:
            table[c] = expand_rvc(c)
    return table
