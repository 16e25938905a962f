"""Floating-point unit: the F and D standard extensions.

RISC-V Unprivileged ISA 20191213, chapter 11 ("F", version 2.2) and chapter 12
("D", version 2.2), with IEEE 754-2019 arithmetic.  Covers the OP-FP major
opcode and the fused multiply-add opcodes for fmt S and D; loads and stores
(flw/fld/fsw/fsd) belong to the core.  Results are bit-exact with QEMU
(softfloat configured for RISC-V: default NaN, tininess after rounding).

Why integers: host floats give neither directed rounding, exact inexact and
underflow detection nor a fused multiply-add, so every operation works on
integer significands and ends in the one rounding routine, `round_pack`.
A finite value is unpacked to (sign, exp, sig) with value = sig * 2^exp.
Intermediate sums and products wider than 62 bits are "wide" numbers: two
non-negative int64 limbs, value = hi * 2^62 + lo.  Everything stays a
non-negative int64 below 2^63 (signs travel separately) and no shift
count leaves 0..63, so numba's wrapping int64 and pure Python's unbounded
ints (NUMBA_DISABLE_JIT=1) give the same bits; negative int64s appear only
as register bit patterns (bit 63 of a double, NaN boxes, integer results).

Interface: `fp_execute(insn, x, f, frm)` returns -1 for an illegal
instruction, otherwise the exception flags it raised (fflags bits, 11.2)
OR'd with WROTE_F when it wrote an f register.
"""

from vmkit.cpu.csrs import FFLAG_DZ, FFLAG_NV, FFLAG_NX, FFLAG_OF, FFLAG_UF
from vmkit.cpu.decode import INT64_MIN, funct3, rd, rs1, rs2, rs3, sext32, srl
from vmkit.cpu.jit import njit

# --- encodings (ISA 11.6-11.9, 12.3-12.6; opcode map in chapter 24) --------------------
OPCODE_MADD = 0x43
OPCODE_MSUB = 0x47
OPCODE_NMSUB = 0x4B
OPCODE_NMADD = 0x4F
OPCODE_OP_FP = 0x53

# funct5 = insn[31:27] of OP-FP; insn[26:25] is fmt.
FUNCT5_FADD = 0x00
FUNCT5_FSUB = 0x01
FUNCT5_FMUL = 0x02
FUNCT5_FDIV = 0x03
FUNCT5_FSGNJ = 0x04       # funct3: 0 fsgnj, 1 fsgnjn, 2 fsgnjx
FUNCT5_FMINMAX = 0x05     # funct3: 0 fmin, 1 fmax
FUNCT5_FCVT_FMT = 0x08    # fcvt.s.d (fmt S, rs2 1), fcvt.d.s (fmt D, rs2 0)
FUNCT5_FSQRT = 0x0B
FUNCT5_FCMP = 0x14        # funct3: 0 fle, 1 flt, 2 feq
FUNCT5_FCVT_TO_INT = 0x18     # rs2: 0 w, 1 wu, 2 l, 3 lu
FUNCT5_FCVT_FROM_INT = 0x1A   # rs2: 0 w, 1 wu, 2 l, 3 lu
FUNCT5_FMV_X_FCLASS = 0x1C    # funct3: 0 fmv.x.w/fmv.x.d, 1 fclass
FUNCT5_FMV_FROM_X = 0x1E      # fmv.w.x / fmv.d.x

FMT_S = 0
FMT_D = 1

# Rounding modes (table 11.1).  5 and 6 are reserved; 7 selects fcsr.frm.
RM_RNE = 0
RM_RTZ = 1
RM_RDN = 2
RM_RUP = 3
RM_RMM = 4
RM_DYN = 7

ILLEGAL = -1
WROTE_F = 32   # flag in fp_execute's result: an f register was written

# Operand classes produced by `unpack`.
CLS_ZERO = 0
CLS_FINITE = 1    # normal or subnormal
CLS_INF = 2
CLS_QNAN = 3
CLS_SNAN = 4

NANBOX = -(1 << 32)             # upper 32 bits all ones (12.2)
CANONICAL_NAN_S = 0x7FC00000    # 11.3
CANONICAL_NAN_D = 0x7FF8000000000000
MASK32 = 0xFFFFFFFF
MASK31 = (1 << 31) - 1
MASK62 = (1 << 62) - 1
WIDE_BITS = 122   # wide operands are normalised to this many bits before adding


# --- formats -------------------------------------------------------------------


@njit
def fmt_params(fmt):
    """(precision p, exponent bias) of binary32 / binary64 (IEEE 754-2019 3.6)."""
    if fmt == FMT_S:
        return 24, 127
    return 53, 1023


@njit
def pack(fmt, sign, biased_exp, frac):
    p, bias = fmt_params(fmt)
    bits = (biased_exp << (p - 1)) | frac
    if sign != 0:
        if fmt == FMT_S:
            bits |= 1 << 31
        else:
            bits |= INT64_MIN
    return bits


@njit
def pack_inf(fmt, sign):
    p, bias = fmt_params(fmt)
    return pack(fmt, sign, 2 * bias + 1, 0)


@njit
def canonical_nan(fmt):
    if fmt == FMT_S:
        return CANONICAL_NAN_S
    return CANONICAL_NAN_D


@njit
def unpack(fmt, bits):
    """(class, sign, exp, sig); a CLS_FINITE value is (-1)^sign * sig * 2^exp.

    Subnormals keep their unnormalised significand; operations that need a
    fixed width normalise it themselves.
    """
    p, bias = fmt_params(fmt)
    if fmt == FMT_S:
        sign = (bits >> 31) & 1
        biased = (bits >> 23) & 0xFF
    else:
        sign = (bits >> 63) & 1
        biased = (bits >> 52) & 0x7FF
    frac = bits & ((1 << (p - 1)) - 1)
    if biased == 2 * bias + 1:
        if frac == 0:
            return CLS_INF, sign, 0, 0
        if (frac >> (p - 2)) & 1:
            return CLS_QNAN, sign, 0, 0
        return CLS_SNAN, sign, 0, 0
    if biased == 0:
        if frac == 0:
            return CLS_ZERO, sign, 0, 0
        return CLS_FINITE, sign, 1 - bias - (p - 1), frac
    return CLS_FINITE, sign, biased - bias - (p - 1), frac | (1 << (p - 1))


@njit
def is_nan(cls):
    return cls >= CLS_QNAN


@njit
def invalid_if_snan(ca, cb, cc):
    """NV when any operand is a signalling NaN (11.3: NaN operands never
    propagate, the result is the canonical NaN, sNaN inputs signal)."""
    if ca == CLS_SNAN or cb == CLS_SNAN or cc == CLS_SNAN:
        return FFLAG_NV
    return 0


@njit
def order_key(fmt, bits):
    """An integer ordered like the (non-NaN) value, with -0 == +0."""
    if fmt == FMT_S:
        mag = bits & 0x7FFFFFFF
        neg = (bits >> 31) & 1
    else:
        mag = bits & ~INT64_MIN
        neg = (bits >> 63) & 1
    if neg:
        return -mag
    return mag


# --- integer helpers -------------------------------------------------------------


@njit
def bit_length(v):
    """Number of significant bits of v >= 0."""
    n = 0
    if v >= (1 << 32):
        v >>= 32
        n += 32
    if v >= (1 << 16):
        v >>= 16
        n += 16
    if v >= (1 << 8):
        v >>= 8
        n += 8
    if v >= (1 << 4):
        v >>= 4
        n += 4
    if v >= (1 << 2):
        v >>= 2
        n += 2
    if v >= 2:
        v >>= 1
        n += 1
    return n + v


@njit
def normalize(sig, exp, bits):
    """Shift sig (0 < sig < 2^bits) left until it has exactly `bits` bits."""
    s = bits - bit_length(sig)
    return sig << s, exp - s


# --- wide (two-limb) numbers: value = hi * 2^62 + lo, 0 <= lo < 2^62 ----------------------


@njit
def wide_bit_length(hi, lo):
    if hi != 0:
        return 62 + bit_length(hi)
    return bit_length(lo)


@njit
def wide_mul(a, b):
    """Exact product of 0 <= a, b < 2^62, from 31-bit halves (numba has no
    128-bit ints, and every partial product must stay below 2^63)."""
    a0 = a & MASK31
    a1 = a >> 31
    b0 = b & MASK31
    b1 = b >> 31
    mid = a0 * b1 + a1 * b0
    low = a0 * b0 + ((mid & MASK31) << 31)
    return a1 * b1 + (mid >> 31) + (low >> 62), low & MASK62


@njit
def wide_shift_left(hi, lo, s):
    """(hi, lo) << s; the caller guarantees the result fits in 124 bits."""
    if s == 0:
        return hi, lo
    if s >= 62:
        return lo << (s - 62), 0
    return (hi << s) | (lo >> (62 - s)), (lo & ((1 << (62 - s)) - 1)) << s


@njit
def wide_shift_right_jam(hi, lo, s):
    """(hi, lo) >> s with every shifted-out one OR'd into bit 0 ("sticky").

    As long as bit 0 lies at least two places below the final rounding
    position, the jammed value rounds exactly like the true one."""
    if s <= 0:
        return hi, lo
    if s >= 124:
        return 0, (1 if (hi | lo) != 0 else 0)
    if s >= 62:
        sticky = lo | (hi & ((1 << (s - 62)) - 1))
        lo = hi >> (s - 62)
        hi = 0
    else:
        sticky = lo & ((1 << s) - 1)
        lo = (lo >> s) | ((hi & ((1 << s) - 1)) << (62 - s))
        hi >>= s
    if sticky != 0:
        lo |= 1
    return hi, lo


@njit
def wide_to_jammed(exp, hi, lo):
    """Narrow (hi, lo) * 2^exp to (exp', sig) with sig < 2^62, jamming the
    dropped bits; sig keeps >= 61 bits, far more than the 55 rounding needs."""
    n = wide_bit_length(hi, lo)
    if n <= 62:
        return exp, lo
    hi, lo = wide_shift_right_jam(hi, lo, n - 62)
    return exp + n - 62, lo


@njit
def wide_normalize(exp, hi, lo):
    s = WIDE_BITS - wide_bit_length(hi, lo)
    hi, lo = wide_shift_left(hi, lo, s)
    return exp - s, hi, lo


@njit
def wide_less(ahi, alo, bhi, blo):
    return ahi < bhi or (ahi == bhi and alo < blo)


@njit
def add_wide(sa, ea, ahi, alo, sb, eb, bhi, blo, rm):
    """Exact signed sum of two wide values, narrowed for `round_pack`.

    Returns (sign, exp, sig); sig == 0 means an exact zero, whose sign
    follows IEEE 754-2019 6.3: x + x keeps the sign of x, an exact zero from
    operands of opposite sign is +0 except -0 when rounding down.  Shared by
    fadd/fsub (one-limb operands) and the fused multiply-adds.
    """
    a_zero = ahi == 0 and alo == 0
    b_zero = bhi == 0 and blo == 0
    if a_zero and b_zero:
        if sa == sb:
            return sa, 0, 0
        return (1 if rm == RM_RDN else 0), 0, 0
    if b_zero:
        e, sig = wide_to_jammed(ea, ahi, alo)
        return sa, e, sig
    if a_zero:
        e, sig = wide_to_jammed(eb, bhi, blo)
        return sb, e, sig
    # Both normalised to WIDE_BITS bits: the sum fits in 123 bits, and the
    # significands (<= 106 bits) leave >= 16 zero bits below, so an alignment
    # shift only loses bits when the exponents differ enough that the
    # difference still has >= 121 bits -- the jammed bit stays far below the
    # rounding position even after cancellation.
    ea, ahi, alo = wide_normalize(ea, ahi, alo)
    eb, bhi, blo = wide_normalize(eb, bhi, blo)
    if ea < eb or (ea == eb and wide_less(ahi, alo, bhi, blo)):
        sa, ea, ahi, alo, sb, eb, bhi, blo = sb, eb, bhi, blo, sa, ea, ahi, alo
    bhi, blo = wide_shift_right_jam(bhi, blo, ea - eb)
    if sa == sb:
        lo = alo + blo
        hi = ahi + bhi + (lo >> 62)
        lo &= MASK62
    else:
        lo = alo - blo
        hi = ahi - bhi
        if lo < 0:
            lo += 1 << 62
            hi -= 1
        if hi == 0 and lo == 0:
            return (1 if rm == RM_RDN else 0), 0, 0
    e, sig = wide_to_jammed(ea, hi, lo)
    return sa, e, sig


# --- rounding (IEEE 754-2019 4.3, 7.4, 7.5) ------------------------------------------


@njit
def resolve_rm(rm_field, frm):
    """The rounding mode for an rm field (11.2): 7 takes fcsr.frm; -1 when
    the field or frm holds a reserved value (illegal instruction)."""
    rm = rm_field
    if rm == RM_DYN:
        rm = frm
    if rm > RM_RMM or rm < 0:
        return -1
    return rm


@njit
def round_increment(rm, sign, lsb, guard, sticky):
    """1 when the truncated magnitude must be incremented (all args 0/1)."""
    if rm == RM_RNE:
        return guard & (sticky | lsb)
    if rm == RM_RMM:
        return guard
    if rm == RM_RDN:
        return (guard | sticky) & sign
    if rm == RM_RUP:
        return (guard | sticky) & (sign ^ 1)
    return 0  # RTZ


@njit
def shift_right_round(sig, s, sign, rm):
    """Round sig / 2^s (s >= 1, 0 <= sig < 2^63) to an integer magnitude.

    Returns (rounded, inexact)."""
    if s >= 64:
        q = 0
        guard = 0
        sticky = 1 if sig != 0 else 0
    else:
        q = sig >> s
        guard = (sig >> (s - 1)) & 1
        sticky = 1 if sig & ((1 << (s - 1)) - 1) != 0 else 0
    return q + round_increment(rm, sign, q & 1, guard, sticky), guard | sticky


@njit
def overflow_result(fmt, sign, rm):
    """Infinity or the largest finite value, by rounding direction (7.4)."""
    if (rm == RM_RNE or rm == RM_RMM or (rm == RM_RUP and sign == 0)
            or (rm == RM_RDN and sign == 1)):
        return pack_inf(fmt, sign)
    p, bias = fmt_params(fmt)
    return pack(fmt, sign, 2 * bias, (1 << (p - 1)) - 1)


@njit
def round_pack(fmt, sign, exp, sig, rm):
    """Round (-1)^sign * sig * 2^exp to fmt; returns (bits, flags).

    0 < sig < 2^63.  If sig carries a jammed sticky bit it must have at
    least p + 2 bits.  This is the only place results are rounded.
    """
    p, bias = fmt_params(fmt)
    emin = 1 - bias
    top = exp + bit_length(sig) - 1       # exponent of the leading bit
    lsb = top - (p - 1)                   # exponent of the result's last bit
    if top < emin:
        lsb = emin - (p - 1)              # subnormal: precision shrinks
    s = lsb - exp
    flags = 0
    if s <= 0:
        r = sig << (-s)
    else:
        r, inexact = shift_right_round(sig, s, sign, rm)
        if inexact:
            flags = FFLAG_NX
            # RISC-V detects tininess after rounding (11.4, IEEE 7.5): a
            # value just below 2^emin is not tiny if rounding it to full
            # precision with unbounded exponent reaches 2^emin.  Underflow
            # is signalled only for tiny *and* inexact results.
            tiny = top < emin
            if top == emin - 1 and s >= 2:
                r2, unused = shift_right_round(sig, s - 1, sign, rm)
                if r2 >= (1 << p):
                    tiny = False
            if tiny:
                flags |= FFLAG_UF
    if r >= (1 << p):                     # rounding carried into a new bit
        r >>= 1
        lsb += 1
    if r >= (1 << (p - 1)):
        biased = lsb + (p - 1) + bias
        if biased > 2 * bias:
            return overflow_result(fmt, sign, rm), FFLAG_OF | FFLAG_NX
        return pack(fmt, sign, biased, r - (1 << (p - 1))), flags
    return pack(fmt, sign, 0, r), flags   # subnormal or zero


# --- arithmetic (11.6) ---------------------------------------------------------------


@njit
def fp_add(fmt, a, b, negate_b, rm):
    ca, sa, ea, ma = unpack(fmt, a)
    cb, sb, eb, mb = unpack(fmt, b)
    sb ^= negate_b
    if is_nan(ca) or is_nan(cb):
        return canonical_nan(fmt), invalid_if_snan(ca, cb, CLS_ZERO)
    if ca == CLS_INF:
        if cb == CLS_INF and sa != sb:
            return canonical_nan(fmt), FFLAG_NV      # inf - inf
        return pack_inf(fmt, sa), 0
    if cb == CLS_INF:
        return pack_inf(fmt, sb), 0
    sign, e, sig = add_wide(sa, ea, 0, ma, sb, eb, 0, mb, rm)
    if sig == 0:
        return pack(fmt, sign, 0, 0), 0
    return round_pack(fmt, sign, e, sig, rm)


@njit
def fp_mul(fmt, a, b, rm):
    ca, sa, ea, ma = unpack(fmt, a)
    cb, sb, eb, mb = unpack(fmt, b)
    sign = sa ^ sb
    if is_nan(ca) or is_nan(cb):
        return canonical_nan(fmt), invalid_if_snan(ca, cb, CLS_ZERO)
    if ca == CLS_INF or cb == CLS_INF:
        if ca == CLS_ZERO or cb == CLS_ZERO:
            return canonical_nan(fmt), FFLAG_NV      # inf * 0
        return pack_inf(fmt, sign), 0
    if ca == CLS_ZERO or cb == CLS_ZERO:
        return pack(fmt, sign, 0, 0), 0
    hi, lo = wide_mul(ma, mb)
    e, sig = wide_to_jammed(ea + eb, hi, lo)
    return round_pack(fmt, sign, e, sig, rm)


@njit
def divide_jam(num, den, k):
    """floor(num * 2^k / den) with a nonzero remainder jammed into bit 0.

    den < 2^53 and num < 2 * den; long division 8 quotient bits at a time
    keeps the partial remainder below 2^62."""
    q = num // den
    r = num % den
    while k > 0:
        c = 8 if k > 8 else k
        r <<= c
        q = (q << c) | (r // den)
        r %= den
        k -= c
    if r != 0:
        q |= 1
    return q


@njit
def fp_div(fmt, a, b, rm):
    ca, sa, ea, ma = unpack(fmt, a)
    cb, sb, eb, mb = unpack(fmt, b)
    sign = sa ^ sb
    if is_nan(ca) or is_nan(cb):
        return canonical_nan(fmt), invalid_if_snan(ca, cb, CLS_ZERO)
    if ca == CLS_INF:
        if cb == CLS_INF:
            return canonical_nan(fmt), FFLAG_NV      # inf / inf
        return pack_inf(fmt, sign), 0
    if cb == CLS_INF:
        return pack(fmt, sign, 0, 0), 0
    if cb == CLS_ZERO:
        if ca == CLS_ZERO:
            return canonical_nan(fmt), FFLAG_NV      # 0 / 0
        return pack_inf(fmt, sign), FFLAG_DZ
    if ca == CLS_ZERO:
        return pack(fmt, sign, 0, 0), 0
    p, bias = fmt_params(fmt)
    ma, ea = normalize(ma, ea, p)
    mb, eb = normalize(mb, eb, p)
    # ma / mb lies in (1/2, 2): p + 2 extra quotient bits give >= p + 2 bits.
    q = divide_jam(ma, mb, p + 2)
    return round_pack(fmt, sign, ea - eb - (p + 2), q, rm)


@njit
def fp_sqrt(fmt, a, rm):
    ca, sa, ea, ma = unpack(fmt, a)
    if is_nan(ca):
        return canonical_nan(fmt), invalid_if_snan(ca, CLS_ZERO, CLS_ZERO)
    if ca == CLS_ZERO:
        return a, 0                                  # sqrt(-0) = -0
    if sa == 1:
        return canonical_nan(fmt), FFLAG_NV          # negative, incl. -inf
    if ca == CLS_INF:
        return a, 0
    p, bias = fmt_params(fmt)
    m, e = normalize(ma, ea, p)
    if e & 1:
        m <<= 1
        e -= 1
    # Root of m * 2^(2k), digit by digit (two radicand bits per root bit);
    # k makes the root p + 2 bits long.  The remainder stays <= 2 * root.
    k = (p + 5) // 2
    pairs = (bit_length(m) + 1) // 2
    root = 0
    rem = 0
    for i in range(pairs + k - 1, -1, -1):
        rem <<= 2
        if i >= k:
            rem |= (m >> (2 * (i - k))) & 3
        trial = (root << 2) | 1
        root <<= 1
        if rem >= trial:
            rem -= trial
            root |= 1
    if rem != 0:
        root |= 1
    return round_pack(fmt, 0, (e - 2 * k) // 2, root, rm)


@njit
def fp_fma(fmt, a, b, c, negate_product, negate_c, rm):
    """(+/-)(a * b) (+/-) c with a single rounding (11.6)."""
    ca, sa, ea, ma = unpack(fmt, a)
    cb, sb, eb, mb = unpack(fmt, b)
    cc, sc, ec, mc = unpack(fmt, c)
    sp = sa ^ sb ^ negate_product
    sc ^= negate_c
    inf_times_zero = ((ca == CLS_INF and cb == CLS_ZERO)
                      or (ca == CLS_ZERO and cb == CLS_INF))
    if is_nan(ca) or is_nan(cb) or is_nan(cc):
        # 11.6: inf * 0 is invalid even when the addend is a quiet NaN.
        flags = invalid_if_snan(ca, cb, cc)
        if inf_times_zero:
            flags = FFLAG_NV
        return canonical_nan(fmt), flags
    if inf_times_zero:
        return canonical_nan(fmt), FFLAG_NV
    if ca == CLS_INF or cb == CLS_INF:
        if cc == CLS_INF and sc != sp:
            return canonical_nan(fmt), FFLAG_NV      # inf - inf
        return pack_inf(fmt, sp), 0
    if cc == CLS_INF:
        return pack_inf(fmt, sc), 0
    hi, lo = wide_mul(ma, mb)                         # 0 when a or b is zero
    sign, e, sig = add_wide(sp, ea + eb, hi, lo, sc, ec, 0, mc, rm)
    if sig == 0:
        return pack(fmt, sign, 0, 0), 0
    return round_pack(fmt, sign, e, sig, rm)


# --- sign injection, min/max, compare, classify (11.6, 11.8, 11.9) ---------------


@njit
def fp_sign_inject(fmt, a, b, op):
    """fsgnj (op 0), fsgnjn (1), fsgnjx (2): magnitude of a, sign from b."""
    if fmt == FMT_S:
        sign_bit = 1 << 31
    else:
        sign_bit = INT64_MIN
    if op == 0:
        s = b & sign_bit
    elif op == 1:
        s = (b ^ sign_bit) & sign_bit
    else:
        s = (a ^ b) & sign_bit
    return (a & ~sign_bit) | s


@njit
def fp_minmax(fmt, a, b, want_max):
    """IEEE 754-2019 minimumNumber / maximumNumber (F 2.2, 11.6): a NaN
    operand loses to a number, sNaN signals, -0 < +0."""
    ca, sa, ea, ma = unpack(fmt, a)
    cb, sb, eb, mb = unpack(fmt, b)
    flags = invalid_if_snan(ca, cb, CLS_ZERO)
    if is_nan(ca):
        if is_nan(cb):
            return canonical_nan(fmt), flags
        return b, flags
    if is_nan(cb):
        return a, flags
    ka = order_key(fmt, a)
    kb = order_key(fmt, b)
    a_less = ka < kb or (ka == kb and sa > sb)
    if a_less != want_max:
        return a, 0
    return b, 0


@njit
def fp_compare(fmt, a, b, op):
    """fle (op 0), flt (1), feq (2) -> (0/1, flags).  feq is quiet (NV only
    for sNaN); flt/fle signal on any NaN (11.8)."""
    ca, sa, ea, ma = unpack(fmt, a)
    cb, sb, eb, mb = unpack(fmt, b)
    if is_nan(ca) or is_nan(cb):
        if op == 2:
            return 0, invalid_if_snan(ca, cb, CLS_ZERO)
        return 0, FFLAG_NV
    ka = order_key(fmt, a)
    kb = order_key(fmt, b)
    if op == 0:
        r = ka <= kb
    elif op == 1:
        r = ka < kb
    else:
        r = ka == kb
    return (1 if r else 0), 0


@njit
def fp_classify(fmt, a):
    """fclass result: one bit set, 0 = -inf ... 9 = quiet NaN (11.9)."""
    cls, sign, exp, sig = unpack(fmt, a)
    if cls == CLS_SNAN:
        return 1 << 8
    if cls == CLS_QNAN:
        return 1 << 9
    p, bias = fmt_params(fmt)
    if cls == CLS_INF:
        i = 0
    elif cls == CLS_ZERO:
        i = 3
    elif sig < (1 << (p - 1)):
        i = 2       # subnormal
    else:
        i = 1
    if sign == 0:
        i = 7 - i
    return 1 << i


# --- conversions (11.7, 12.5) ---------------------------------------------------


@njit
def fp_to_int(fmt, a, kind, rm):
    """fcvt.{w,wu,l,lu}.fmt -> (x register value, flags).

    Out-of-range inputs saturate (11.7, float-to-integer domain table): NaN and +inf give the
    largest value, -inf the smallest; NV is then the only flag (QEMU does
    not add NX).  32-bit results are sign-extended, wu too (11.7)."""
    cls, sign, exp, sig = unpack(fmt, a)
    wide = kind >= 2
    unsigned = kind & 1
    # Saturation values as register contents (32-bit ones sign-extended).
    if unsigned:
        sat_low = 0
        sat_high = -1
    else:
        sat_low = INT64_MIN if wide else -(1 << 31)
        sat_high = ~sat_low
    if is_nan(cls):
        return sat_high, FFLAG_NV
    if cls == CLS_ZERO:
        return 0, 0
    saturated = sat_low if sign else sat_high
    if cls == CLS_INF:
        return saturated, FFLAG_NV
    flags = 0
    if exp >= 0:
        n = bit_length(sig) + exp       # integer: exact, n bits
        if n > 64 or (n == 64 and not wide):
            return saturated, FFLAG_NV
        if n == 64:
            # magnitude in [2^63, 2^64): fits lu, and l only as -2^63
            top = 1 << (n - exp - 1)
            if unsigned and sign == 0:
                return ((sig - top) << exp) | INT64_MIN, 0
            if not unsigned and sign == 1 and sig == top:
                return INT64_MIN, 0
            return saturated, FFLAG_NV
        mag = sig << exp                # < 2^63
    else:
        mag, inexact = shift_right_round(sig, -exp, sign, rm)   # < 2^54
        if inexact:
            flags = FFLAG_NX
    if sign:
        if mag == 0:
            return 0, flags             # e.g. -0.3 -> 0 is only inexact
        if unsigned or (not wide and mag > (1 << 31)):
            return saturated, FFLAG_NV
        return -mag, flags
    if wide:
        return mag, flags
    if mag > (MASK32 if unsigned else MASK31):
        return saturated, FFLAG_NV
    return sext32(mag), flags


@njit
def int_to_fp(fmt, v, kind, rm):
    """fcvt.fmt.{w,wu,l,lu}: x register value -> (bits, flags)."""
    sign = 0
    exp = 0
    if kind == 0:
        mag = sext32(v)
        if mag < 0:
            sign = 1
            mag = -mag
    elif kind == 1:
        mag = v & MASK32
    elif v >= 0 or (kind == 2 and v != INT64_MIN):
        mag = v
        if mag < 0:
            sign = 1
            mag = -mag
    else:
        # A 64-bit magnitude (lu >= 2^63, or l of -2^63) does not fit a
        # non-negative int64: narrow it with a jammed bit (62 bits remain,
        # at least p + 2 as round_pack requires).
        if kind == 2:
            sign = 1
        mag = srl(v, 2)
        if v & 3:
            mag |= 1
        exp = 2
    if mag == 0:
        return pack(fmt, 0, 0, 0), 0
    return round_pack(fmt, sign, exp, mag, rm)


@njit
def fp_convert(fmt, a, src_fmt, rm):
    """fcvt.s.d / fcvt.d.s: a (in src_fmt) -> fmt."""
    cls, sign, exp, sig = unpack(src_fmt, a)
    if is_nan(cls):
        return canonical_nan(fmt), invalid_if_snan(cls, CLS_ZERO, CLS_ZERO)
    if cls == CLS_INF:
        return pack_inf(fmt, sign), 0
    if cls == CLS_ZERO:
        return pack(fmt, sign, 0, 0), 0
    return round_pack(fmt, sign, exp, sig, rm)


# --- register access ---------------------------------------------------------------


@njit
def read_f(f, r, fmt):
    """An operand's bits.  A single that is not NaN-boxed reads as the
    canonical NaN (12.2)."""
    v = int(f[r])
    if fmt == FMT_S:
        if (v >> 32) != -1:
            return CANONICAL_NAN_S
        return v & MASK32
    return v


@njit
def write_f(f, r, fmt, bits):
    if fmt == FMT_S:
        bits = (bits & MASK32) | NANBOX
    f[r] = bits


@njit
def write_x(x, r, v):
    if r != 0:
        x[r] = v


# --- instruction groups --------------------------------------------------------------


@njit
def execute_arith(insn, fmt, funct5, f, frm):
    """Rounded OP-FP instructions with an f-register result."""
    rm = resolve_rm(funct3(insn), frm)
    if rm < 0:
        return ILLEGAL
    if funct5 == FUNCT5_FSQRT:
        if rs2(insn) != 0:
            return ILLEGAL
        r, flags = fp_sqrt(fmt, read_f(f, rs1(insn), fmt), rm)
    elif funct5 == FUNCT5_FCVT_FMT:
        src_fmt = rs2(insn)     # fcvt.s.d: fmt S, rs2 1; fcvt.d.s: fmt D, rs2 0
        if src_fmt > FMT_D or src_fmt == fmt:
            return ILLEGAL
        r, flags = fp_convert(fmt, read_f(f, rs1(insn), src_fmt), src_fmt, rm)
    else:
        a = read_f(f, rs1(insn), fmt)
        b = read_f(f, rs2(insn), fmt)
        if funct5 == FUNCT5_FADD:
            r, flags = fp_add(fmt, a, b, 0, rm)
        elif funct5 == FUNCT5_FSUB:
            r, flags = fp_add(fmt, a, b, 1, rm)
        elif funct5 == FUNCT5_FMUL:
            r, flags = fp_mul(fmt, a, b, rm)
        else:
            r, flags = fp_div(fmt, a, b, rm)
    write_f(f, rd(insn), fmt, r)
    return flags | WROTE_F


@njit
def execute_convert_int(insn, fmt, funct5, x, f, frm):
    """fcvt between f and x registers (11.7)."""
    rm = resolve_rm(funct3(insn), frm)
    kind = rs2(insn)
    if rm < 0 or kind > 3:
        return ILLEGAL
    if funct5 == FUNCT5_FCVT_TO_INT:
        v, flags = fp_to_int(fmt, read_f(f, rs1(insn), fmt), kind, rm)
        write_x(x, rd(insn), v)
        return flags
    r, flags = int_to_fp(fmt, int(x[rs1(insn)]), kind, rm)
    write_f(f, rd(insn), fmt, r)
    return flags | WROTE_F


@njit
def execute_misc(insn, fmt, funct5, x, f):
    """Unrounded OP-FP instructions: funct3 selects the operation."""
    op = funct3(insn)
    if funct5 == FUNCT5_FSGNJ or funct5 == FUNCT5_FMINMAX:
        a = read_f(f, rs1(insn), fmt)
        b = read_f(f, rs2(insn), fmt)
        if funct5 == FUNCT5_FSGNJ:
            if op > 2:
                return ILLEGAL
            r, flags = fp_sign_inject(fmt, a, b, op), 0
        else:
            if op > 1:
                return ILLEGAL
            r, flags = fp_minmax(fmt, a, b, op == 1)
        write_f(f, rd(insn), fmt, r)
        return flags | WROTE_F
    if funct5 == FUNCT5_FCMP:
        if op > 2:
            return ILLEGAL
        v, flags = fp_compare(fmt, read_f(f, rs1(insn), fmt), read_f(f, rs2(insn), fmt), op)
        write_x(x, rd(insn), v)
        return flags
    if rs2(insn) != 0:
        return ILLEGAL
    if funct5 == FUNCT5_FMV_X_FCLASS:
        if op == 0:
            # fmv.x.w moves the raw low 32 bits, boxed or not (11.7).
            v = int(f[rs1(insn)])
            if fmt == FMT_S:
                v = sext32(v)
        elif op == 1:
            v = fp_classify(fmt, read_f(f, rs1(insn), fmt))
        else:
            return ILLEGAL
        write_x(x, rd(insn), v)
        return 0
    if funct5 == FUNCT5_FMV_FROM_X and op == 0:
        write_f(f, rd(insn), fmt, int(x[rs1(insn)]))
        return WROTE_F
    return ILLEGAL


@njit
def execute_op_fp(insn, fmt, x, f, frm):
    funct5 = (insn >> 27) & 0x1F
    if (funct5 <= FUNCT5_FDIV or funct5 == FUNCT5_FSQRT
            or funct5 == FUNCT5_FCVT_FMT):
        return execute_arith(insn, fmt, funct5, f, frm)
    if funct5 == FUNCT5_FCVT_TO_INT or funct5 == FUNCT5_FCVT_FROM_INT:
        return execute_convert_int(insn, fmt, funct5, x, f, frm)
    return execute_misc(insn, fmt, funct5, x, f)


@njit
def execute_fma(insn, fmt, opcode, f, frm):
    rm = resolve_rm(funct3(insn), frm)
    if rm < 0:
        return ILLEGAL
    negate_product = 1 if opcode == OPCODE_NMSUB or opcode == OPCODE_NMADD else 0
    negate_c = 1 if opcode == OPCODE_MSUB or opcode == OPCODE_NMADD else 0
    r, flags = fp_fma(fmt, read_f(f, rs1(insn), fmt), read_f(f, rs2(insn), fmt),
                      read_f(f, rs3(insn), fmt), negate_product, negate_c, rm)
    write_f(f, rd(insn), fmt, r)
    return flags | WROTE_F


@njit
def fp_execute(insn, x, f, frm):
    """Execute one OP-FP or fused multiply-add instruction.

    insn: the 32-bit encoding; x, f: int64[32] register files (f holds raw
    bits, singles NaN-boxed); frm: fcsr.frm.  Returns -1 for an illegal
    instruction, otherwise the raised fflags | WROTE_F if an f register
    was written.  The caller accrues the flags into fcsr and sets
    mstatus.FS to Dirty.
    """
    insn = int(insn)
    frm = int(frm)
    fmt = (insn >> 25) & 3
    if fmt > FMT_D:
        return ILLEGAL          # H and Q formats are not implemented
    opcode = insn & 0x7F
    if opcode == OPCODE_OP_FP:
        return execute_op_fp(insn, fmt, x, f, frm)
    if (opcode == OPCODE_MADD or opcode == OPCODE_MSUB or opcode == OPCODE_NMSUB
            or opcode == OPCODE_NMADD):
        return execute_fma(insn, fmt, opcode, f, frm)
    return ILLEGAL
