"""Integer computation: RV64I register/immediate ops and the M extension.

RISC-V Unprivileged ISA 20191213: 2.4 (integer computational), 5.2-5.3
(RV64I *W forms), 7 (M: multiply/divide; division by zero and overflow
results from table 7.1).  Each function returns (legal, value); the
interpreter raises illegal-instruction when legal is False.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from vmkit.cpu.decode import INT64_MIN, funct3, funct7, imm_i, sext32, srl, ult
from vmkit.cpu.jit import JIT_DISABLED, njit

MASK32 = 0xFFFFFFFF


def _mulh_generic(a, b, a_signed, b_signed):
    """High 64 bits of the 128-bit product, with Python's big integers.

    The reference for the LLVM version below, and what runs with
    NUMBA_DISABLE_JIT=1 (intrinsics exist only in compiled code).
    """
    a, b = int(a), int(b)
    if not a_signed:
        a &= (1 << 64) - 1
    if not b_signed:
        b &= (1 << 64) - 1
    h = ((a * b) >> 64) & ((1 << 64) - 1)
    return h - (1 << 64) if h >> 63 else h


if JIT_DISABLED:
    def mulh(a, b):
        return _mulh_generic(a, b, True, True)

    def mulhsu(a, b):
        return _mulh_generic(a, b, True, False)

    def mulhu(a, b):
        return _mulh_generic(a, b, False, False)
else:
    def _mul_high(a_signed, b_signed):
        """An intrinsic doing the multiply in LLVM's i128: one host multiply."""
        @intrinsic
        def high(typingctx, a, b):
            def codegen(context, builder, signature, args):
                wide = ir.IntType(128)
                ea = builder.sext(args[0], wide) if a_signed else builder.zext(args[0], wide)
                eb = builder.sext(args[1], wide) if b_signed else builder.zext(args[1], wide)
                p = builder.mul(ea, eb)
                return builder.trunc(builder.lshr(p, ir.Constant(wide, 64)), ir.IntType(64))
            return types.int64(types.int64, types.int64), codegen
        return high

    _mulh = _mul_high(True, True)
    _mulhsu = _mul_high(True, False)
    _mulhu = _mul_high(False, False)

    @njit
    def mulh(a, b):
        return _mulh(a, b)

    @njit
    def mulhsu(a, b):
        return _mulhsu(a, b)

    @njit
    def mulhu(a, b):
        return _mulhu(a, b)


@njit
def div_trunc(a, b):
    """Signed division rounding toward zero (b != 0, not MIN/-1)."""
    q = a // b
    if q < 0 and q * b != a:
        q += 1
    return q


@njit
def divu(a, b):
    """Unsigned 64-bit division of bit patterns (b != 0)."""
    if a >= 0 and b > 0:
        return a // b
    if b < 0:  # divisor >= 2^63: quotient is 0 or 1
        return 1 if not ult(a, b) else 0
    # a >= 2^63, 0 < b < 2^63: divide (a >> 1) then fix up the last bit
    q = (srl(a, 1) // b) << 1
    r = a - q * b
    if not ult(r, b):
        q += 1
    return q


@njit
def m_op(f3, a, b):
    """M extension, 64-bit forms (funct7 = 1 in OP)."""
    if f3 == 0:  # mul
        return a * b
    if f3 == 1:
        return mulh(a, b)
    if f3 == 2:
        return mulhsu(a, b)
    if f3 == 3:
        return mulhu(a, b)
    if f3 == 4:  # div
        if b == 0:
            return -1
        if a == INT64_MIN and b == -1:
            return a
        return div_trunc(a, b)
    if f3 == 5:  # divu
        if b == 0:
            return -1
        return divu(a, b)
    if f3 == 6:  # rem
        if b == 0:
            return a
        if a == INT64_MIN and b == -1:
            return 0
        return a - div_trunc(a, b) * b
    # remu
    if b == 0:
        return a
    return a - divu(a, b) * b


@njit
def m_op32(f3, a, b):
    """M extension, *W forms (funct7 = 1 in OP-32)."""
    a32 = sext32(a)
    b32 = sext32(b)
    if f3 == 0:  # mulw
        return sext32(a32 * b32)
    if f3 == 4:  # divw
        if b32 == 0:
            return -1
        if a32 == -(1 << 31) and b32 == -1:
            return a32
        return sext32(div_trunc(a32, b32))
    if f3 == 5:  # divuw
        au = a & MASK32
        bu = b & MASK32
        if bu == 0:
            return -1
        return sext32(au // bu)
    if f3 == 6:  # remw
        if b32 == 0:
            return a32
        if a32 == -(1 << 31) and b32 == -1:
            return 0
        return sext32(a32 - div_trunc(a32, b32) * b32)
    # remuw (f3 == 7)
    au = a & MASK32
    bu = b & MASK32
    if bu == 0:
        return a32
    return sext32(au % bu)


@njit
def op_imm(insn, a):
    """OP-IMM (opcode 0x13)."""
    f3 = funct3(insn)
    imm = imm_i(insn)
    if f3 == 0:
        return True, a + imm
    if f3 == 1:  # slli: imm[11:6] must be 0
        if (insn >> 26) != 0:
            return False, 0
        return True, a << (imm & 63)
    if f3 == 2:
        return True, 1 if a < imm else 0
    if f3 == 3:
        return True, 1 if ult(a, imm) else 0
    if f3 == 4:
        return True, a ^ imm
    if f3 == 5:
        top = (insn >> 26) & 0x3F
        if top == 0:
            return True, srl(a, imm & 63)
        if top == 0x10:
            return True, a >> (imm & 63)
        return False, 0
    if f3 == 6:
        return True, a | imm
    return True, a & imm


@njit
def op_imm32(insn, a):
    """OP-IMM-32 (opcode 0x1b): addiw, slliw, srliw, sraiw."""
    f3 = funct3(insn)
    f7 = funct7(insn)
    sh = (insn >> 20) & 31
    if f3 == 0:
        return True, sext32(a + imm_i(insn))
    if f3 == 1 and f7 == 0:
        return True, sext32(a << sh)
    if f3 == 5:
        if f7 == 0:
            return True, sext32((a & MASK32) >> sh)
        if f7 == 0x20:
            return True, sext32(a) >> sh
    return False, 0


@njit
def op(insn, a, b):
    """OP (opcode 0x33): register-register ALU and M."""
    f3 = funct3(insn)
    f7 = funct7(insn)
    if f7 == 0:
        if f3 == 0:
            return True, a + b
        if f3 == 1:
            return True, a << (b & 63)
        if f3 == 2:
            return True, 1 if a < b else 0
        if f3 == 3:
            return True, 1 if ult(a, b) else 0
        if f3 == 4:
            return True, a ^ b
        if f3 == 5:
            return True, srl(a, b & 63)
        if f3 == 6:
            return True, a | b
        return True, a & b
    if f7 == 0x20:
        if f3 == 0:
            return True, a - b
        if f3 == 5:
            return True, a >> (b & 63)
        return False, 0
    if f7 == 1:
        return True, m_op(f3, a, b)
    return False, 0


@njit
def op32(insn, a, b):
    """OP-32 (opcode 0x3b): addw, subw, sllw, srlw, sraw and M *W."""
    f3 = funct3(insn)
    f7 = funct7(insn)
    if f7 == 0:
        if f3 == 0:
            return True, sext32(a + b)
        if f3 == 1:
            return True, sext32(a << (b & 31))
        if f3 == 5:
            return True, sext32((a & MASK32) >> (b & 31))
        return False, 0
    if f7 == 0x20:
        if f3 == 0:
            return True, sext32(a - b)
        if f3 == 5:
            return True, sext32(a) >> (b & 31)
        return False, 0
    if f7 == 1 and (f3 == 0 or f3 >= 4):
        return True, m_op32(f3, a, b)
    return False, 0


@njit
def alu_legal(insn):
    """Whether an OP-IMM, OP-IMM-32, OP or OP-32 encoding executes (the
    decoders' own test, for the translating tier to agree with)."""
    opc = insn & 0x7F
    if opc == 0x13:
        return op_imm(insn, 0)[0]
    if opc == 0x1B:
        return op_imm32(insn, 0)[0]
    if opc == 0x33:
        return op(insn, 0, 1)[0]
    return op32(insn, 0, 1)[0]
