/* RV64F/D basics (Unprivileged ISA 20191213, ch. 11-12; Privileged 3.1.6.6).
 *
 * Loads/stores, NaN-boxing of singles (12.2: transfer ops don't check it,
 * everything else treats an unboxed single as the canonical NaN), FMV,
 * FSGNJ*, FCLASS, a few arithmetic operations with their exception flags,
 * rounding modes (static and dynamic), FMIN/FMAX and compares on NaNs and
 * signed zeros, fcsr field masks, a reserved dynamic rounding mode, and
 * mstatus.FS: Off makes every FP instruction and fcsr access illegal
 * (mtval = instruction bits), any FP state change makes it Dirty.
 */
#include "test.h"

#define NV 0x10
#define DZ 0x08
#define OF 0x04
#define UF 0x02
#define NX 0x01

#define D_ONE   0x3ff0000000000000
#define D_TWO   0x4000000000000000
#define D_THREE 0x4008000000000000
#define D_INF   0x7ff0000000000000
#define D_QNAN  0x7ff8000000000000      /* canonical NaN */
#define D_SNAN  0x7ff0000000000001
#define D_MAX   0x7fefffffffffffff
#define BOX     0xffffffff00000000
#define S_ONE   0x3f800000
#define S_TWO   0x40000000
#define S_THREE 0x40400000
#define S_QNAN  0x7fc00000               /* canonical NaN */
#define S_SNAN  0x7f800001

/* result of a double op: raw bits and fflags */
.macro DOP op, res, a, b, flags, line
        li      t0, \a
        fmv.d.x fa0, t0
        li      t0, \b
        fmv.d.x fa1, t0
        fsflags zero
        \op     fa2, fa0, fa1
        fmv.x.d a0, fa2
        CHECK_IMPL a0, \res, \line
        frflags a0
        CHECK_IMPL a0, \flags, \line
.endm
#define TEST_DOP(op, res, a, b, flags) DOP op, res, a, b, flags, __LINE__

/* single op: operands NaN-boxed by fmv.w.x, result checked with its box */
.macro SOP op, res, a, b, flags, line
        li      t0, \a
        fmv.w.x fa0, t0
        li      t0, \b
        fmv.w.x fa1, t0
        fsflags zero
        \op     fa2, fa0, fa1
        fmv.x.d a0, fa2
        CHECK_IMPL a0, \res, \line
        frflags a0
        CHECK_IMPL a0, \flags, \line
.endm
#define TEST_SOP(op, res, a, b, flags) SOP op, res, a, b, flags, __LINE__

/* FP -> integer result of a compare/convert/classify: rd is an x register */
.macro DTOX op, res, a, b, flags, line
        li      t0, \a
        fmv.d.x fa0, t0
        li      t0, \b
        fmv.d.x fa1, t0
        fsflags zero
        \op     a0, fa0, fa1
        CHECK_IMPL a0, \res, \line
        frflags a0
        CHECK_IMPL a0, \flags, \line
.endm
#define TEST_DTOX(op, res, a, b, flags) DTOX op, res, a, b, flags, __LINE__

.macro CVT_D_TO_INT op, res, a, rm, flags, line
        li      t0, \a
        fmv.d.x fa0, t0
        fsflags zero
        \op     a0, fa0, \rm
        CHECK_IMPL a0, \res, \line
        frflags a0
        CHECK_IMPL a0, \flags, \line
.endm
#define TEST_CVT(op, res, a, rm, flags) CVT_D_TO_INT op, res, a, rm, flags, __LINE__

.macro FCLASSD res, a, line
        li      t0, \a
        fmv.d.x fa0, t0
        fclass.d a0, fa0
        CHECK_IMPL a0, \res, \line
.endm
#define TEST_FCLASS(res, a) FCLASSD res, a, __LINE__

/* mstatus.FS = Off: the instruction at label \lbl traps as illegal with
 * mtval = its bits (read from memory, 16 or 32 bits). */
.macro CHECK_ILLEGAL_AT lbl, line
        CHECK_TRAP_IMPL CAUSE_ILLEGAL, \line
        la      t0, \lbl
        lhu     t1, 0(t0)
        andi    t2, t1, 3
        li      t3, 3
        bne     t2, t3, .Lshort\@
        lhu     t2, 2(t0)
        slli    t2, t2, 16
        or      t1, t1, t2
.Lshort\@:
        LOAD_TRAP t2, trap_tval
        CHECK_REG_IMPL t2, t1, \line
.endm
#define CHECK_ILLEGAL_AT(lbl) CHECK_ILLEGAL_AT lbl, __LINE__

        .data
        .align  4
fdat:   .dword  0x400921fb54442d18      /* pi */
        .word   0xc0490fdb, 0x12345678  /* -pi (single), filler */
        .dword  0, 0

        .text
        .globl  main
main:
        addi    sp, sp, -16
        sd      ra, 0(sp)

        /* ---- 11.5/12.3 loads and stores; FLW NaN-boxes */
        la      a3, fdat
        fld     fa0, 0(a3)
        fmv.x.d a0, fa0
        CHECK(a0, 0x400921fb54442d18)
        flw     fa1, 8(a3)
        fmv.x.d a0, fa1
        CHECK(a0, 0xffffffffc0490fdb)
        fsd     fa0, 16(a3)
        ld      a0, 16(a3)
        CHECK(a0, 0x400921fb54442d18)
        fsw     fa1, 24(a3)                     /* writes 32 bits only */
        ld      a0, 24(a3)
        CHECK(a0, 0xc0490fdb)
        fsw     fa0, 28(a3)                     /* FSW of an unboxed value: low bits */
        ld      a0, 24(a3)
        CHECK(a0, 0x54442d18c0490fdb)

        /* ---- 11.7/12.5 moves: FMV.X.W sign-extends, FMV.W.X boxes */
        li      a0, 0xbf800000
        fmv.w.x fa0, a0
        fmv.x.d a1, fa0
        CHECK(a1, 0xffffffffbf800000)
        fmv.x.w a1, fa0
        CHECK(a1, 0xffffffffbf800000)
        li      a0, 0x123456783f800000
        fmv.w.x fa0, a0                         /* upper bits of rs1 ignored */
        fmv.x.d a1, fa0
        CHECK(a1, 0xffffffff3f800000)
        li      a0, 0x0123456789abcdef
        fmv.d.x fa0, a0
        fmv.x.d a1, fa0
        CHECK_REG(a1, a0)
        fmv.x.w a1, fa0                         /* transfer: no NaN-box check */
        CHECK(a1, 0xffffffff89abcdef)

        /* ---- 12.2 NaN-boxing: unboxed singles read as the canonical NaN */
        li      a0, S_ONE                       /* upper 32 bits zero: unboxed */
        fmv.d.x fa0, a0
        li      a0, S_ONE
        fmv.w.x fa1, a0
        fsflags zero
        fadd.s  fa2, fa0, fa1
        fmv.x.d a1, fa2
        CHECK(a1, BOX | S_QNAN)
        frflags a1
        CHECK(a1, 0)                            /* canonical NaN is quiet */
        fsgnj.s fa2, fa0, fa1                   /* FSGNJ is not a transfer op */
        fmv.x.d a1, fa2
        CHECK(a1, BOX | S_QNAN)
        fmv.s   fa2, fa0
        fmv.x.d a1, fa2
        CHECK(a1, BOX | S_QNAN)
        fclass.s a1, fa0
        CHECK(a1, 1 << 9)                       /* quiet NaN */
        fcvt.d.s fa2, fa0
        fmv.x.d a1, fa2
        CHECK(a1, D_QNAN)
        li      a0, 0xfffffffe3f800000          /* one bit short of a box */
        fmv.d.x fa0, a0
        fclass.s a1, fa0
        CHECK(a1, 1 << 9)

        /* ---- 11.6/12.4 sign injection */
        TEST_DOP(fsgnj.d,  0xbff0000000000000, D_ONE, 0x8000000000000000, 0)
        TEST_DOP(fsgnj.d,  D_ONE, 0xbff0000000000000, 0, 0)
        TEST_DOP(fsgnjn.d, D_ONE, D_ONE, 0x8000000000000000, 0)
        TEST_DOP(fsgnjn.d, 0xbff0000000000000, D_ONE, D_ONE, 0)
        TEST_DOP(fsgnjx.d, 0xbff0000000000000, 0xbff0000000000000, D_ONE, 0)
        TEST_DOP(fsgnjx.d, D_ONE, 0xbff0000000000000, 0xbff0000000000000, 0)
        TEST_DOP(fsgnj.d,  0xfff0000000000001, D_SNAN, 0x8000000000000000, 0)  /* no NaN handling */
        TEST_SOP(fsgnj.s,  BOX | 0xbf800000, S_ONE, 0x80000000, 0)
        TEST_SOP(fsgnjn.s, BOX | 0xbf800000, S_ONE, S_ONE, 0)
        TEST_SOP(fsgnjx.s, BOX | 0x3f800000, 0xbf800000, 0xbf800000, 0)

        /* ---- arithmetic with exception flags (11.2 fflags) */
        TEST_DOP(fadd.d, D_THREE, D_ONE, D_TWO, 0)
        TEST_DOP(fadd.d, D_ONE, D_ONE, 0x3c30000000000000, NX)    /* 1 + 2^-60 */
        TEST_DOP(fsub.d, 0, D_ONE, D_ONE, 0)                       /* +0 in RNE */
        TEST_DOP(fmul.d, D_INF, D_MAX, D_TWO, OF | NX)
        TEST_DOP(fmul.d, 0, 0x0170000000000000, 0x0170000000000000, UF | NX)
        TEST_DOP(fdiv.d, D_INF, D_ONE, 0, DZ)
        TEST_DOP(fdiv.d, D_QNAN, 0, 0, NV)
        TEST_DOP(fadd.d, D_QNAN, D_INF, 0xfff0000000000000, NV)
        TEST_DOP(fadd.d, D_QNAN, D_SNAN, D_ONE, NV)                /* result is canonical */
        TEST_DOP(fadd.d, D_QNAN, 0x7ff8000000000123, D_ONE, 0)     /* payload not propagated */
        TEST_SOP(fadd.s, BOX | S_THREE, S_ONE, S_TWO, 0)
        TEST_SOP(fmul.s, BOX | S_QNAN, S_SNAN, S_ONE, NV)
        TEST_SOP(fdiv.s, BOX | 0x7f800000, S_ONE, 0, DZ)
        li      t0, 0xbff0000000000000
        fmv.d.x fa0, t0
        fsflags zero
        fsqrt.d fa1, fa0
        fmv.x.d a0, fa1
        CHECK(a0, D_QNAN)
        frflags a0
        CHECK(a0, NV)
        li      t0, 0x4010000000000000          /* sqrt(4) = 2 exactly */
        fmv.d.x fa0, t0
        fsqrt.d fa1, fa0
        fmv.x.d a0, fa1
        CHECK(a0, D_TWO)
        /* fused multiply-add: 2 * 3 + 1, and the four sign variants */
        li      t0, D_TWO
        fmv.d.x fa0, t0
        li      t0, D_THREE
        fmv.d.x fa1, t0
        li      t0, D_ONE
        fmv.d.x fa2, t0
        fmadd.d fa3, fa0, fa1, fa2
        fmv.x.d a0, fa3
        CHECK(a0, 0x401c000000000000)           /* 7 */
        fmsub.d fa3, fa0, fa1, fa2
        fmv.x.d a0, fa3
        CHECK(a0, 0x4014000000000000)           /* 5 */
        fnmsub.d fa3, fa0, fa1, fa2
        fmv.x.d a0, fa3
        CHECK(a0, 0xc014000000000000)           /* -5 */
        fnmadd.d fa3, fa0, fa1, fa2
        fmv.x.d a0, fa3
        CHECK(a0, 0xc01c000000000000)           /* -7 */
        /* 11.6: inf * 0 + qNaN must raise NV */
        li      t0, D_INF
        fmv.d.x fa0, t0
        fmv.d.x fa1, zero
        li      t0, D_QNAN
        fmv.d.x fa2, t0
        fsflags zero
        fmadd.d fa3, fa0, fa1, fa2
        fmv.x.d a0, fa3
        CHECK(a0, D_QNAN)
        frflags a0
        CHECK(a0, NV)

        /* ---- min/max (11.6, IEEE 754-2019 minimumNumber) and compares */
        TEST_DOP(fmin.d, D_ONE, D_QNAN, D_ONE, 0)
        TEST_DOP(fmax.d, D_ONE, D_SNAN, D_ONE, NV)
        TEST_DOP(fmin.d, D_QNAN, D_QNAN, D_SNAN, NV)
        TEST_DOP(fmin.d, 0x8000000000000000, 0, 0x8000000000000000, 0)
        TEST_DOP(fmax.d, 0, 0x8000000000000000, 0, 0)
        TEST_SOP(fmin.s, BOX | S_ONE, S_QNAN, S_ONE, 0)
        TEST_SOP(fmax.s, BOX | S_QNAN, S_QNAN, S_QNAN, 0)
        TEST_DTOX(feq.d, 1, D_ONE, D_ONE, 0)
        TEST_DTOX(feq.d, 1, 0, 0x8000000000000000, 0)
        TEST_DTOX(feq.d, 0, D_QNAN, D_QNAN, 0)   /* quiet compare */
        TEST_DTOX(feq.d, 0, D_SNAN, D_ONE, NV)
        TEST_DTOX(flt.d, 0, D_QNAN, D_ONE, NV)   /* signaling compare */
        TEST_DTOX(fle.d, 0, D_ONE, D_QNAN, NV)
        TEST_DTOX(flt.d, 1, 0xbff0000000000000, D_ONE, 0)
        TEST_DTOX(fle.d, 1, D_ONE, D_ONE, 0)
        TEST_DTOX(flt.d, 0, D_ONE, D_ONE, 0)

        /* ---- fclass (11.9) */
        TEST_FCLASS(1 << 0, 0xfff0000000000000)      /* -inf */
        TEST_FCLASS(1 << 1, 0xbff0000000000000)      /* -normal */
        TEST_FCLASS(1 << 2, 0x800fffffffffffff)      /* -subnormal */
        TEST_FCLASS(1 << 3, 0x8000000000000000)      /* -0 */
        TEST_FCLASS(1 << 4, 0)                       /* +0 */
        TEST_FCLASS(1 << 5, 0x0000000000000001)      /* +subnormal */
        TEST_FCLASS(1 << 6, D_ONE)                   /* +normal */
        TEST_FCLASS(1 << 7, D_INF)                   /* +inf */
        TEST_FCLASS(1 << 8, D_SNAN)                  /* sNaN */
        TEST_FCLASS(1 << 9, D_QNAN)                  /* qNaN */

        /* ---- conversions and rounding modes (11.1 frm) */
        TEST_CVT(fcvt.w.d, 2, 0x4004000000000000, rne, NX)         /* 2.5 */
        TEST_CVT(fcvt.w.d, 2, 0x4004000000000000, rtz, NX)
        TEST_CVT(fcvt.w.d, 2, 0x4004000000000000, rdn, NX)
        TEST_CVT(fcvt.w.d, 3, 0x4004000000000000, rup, NX)
        TEST_CVT(fcvt.w.d, 3, 0x4004000000000000, rmm, NX)
        TEST_CVT(fcvt.w.d, -2, 0xc004000000000000, rne, NX)        /* -2.5 */
        TEST_CVT(fcvt.w.d, -2, 0xc004000000000000, rtz, NX)
        TEST_CVT(fcvt.w.d, -3, 0xc004000000000000, rdn, NX)
        TEST_CVT(fcvt.w.d, -2, 0xc004000000000000, rup, NX)
        TEST_CVT(fcvt.w.d, -3, 0xc004000000000000, rmm, NX)
        TEST_CVT(fcvt.w.d, 3, D_THREE, rne, 0)
        TEST_CVT(fcvt.w.d, 0x7fffffff, D_QNAN, rne, NV)            /* NaN -> max */
        TEST_CVT(fcvt.w.d, 0x7fffffff, D_INF, rne, NV)
        TEST_CVT(fcvt.w.d, 0xffffffff80000000, 0xfff0000000000000, rne, NV)
        TEST_CVT(fcvt.w.d, 0xffffffff80000000, 0xc1e0000000000000, rne, 0)  /* -2^31 exact */
        TEST_CVT(fcvt.wu.d, 0, 0xbff0000000000000, rne, NV)        /* -1 -> 0 */
        TEST_CVT(fcvt.wu.d, 0, 0xbfe0000000000000, rtz, NX)        /* -0.5 rounds to 0: no NV */
        TEST_CVT(fcvt.wu.d, -1, D_QNAN, rne, NV)                   /* 0xffffffff sign-extended */
        TEST_CVT(fcvt.wu.d, 0xffffffff80000000, 0x41e0000000000000, rne, 0)  /* 2^31 */
        TEST_CVT(fcvt.l.d, 0x7fffffffffffffff, 0x46293e5939a08cea, rne, NV)  /* 1e30 */
        TEST_CVT(fcvt.l.d, 0x8000000000000000, 0xc3e0000000000000, rne, 0)  /* -2^63 */
        TEST_CVT(fcvt.lu.d, -1, D_INF, rne, NV)
        TEST_CVT(fcvt.lu.d, 0x8000000000000000, 0x43e0000000000000, rne, 0) /* 2^63 */
        /* dynamic rounding mode from frm */
        fsrmi   2                               /* RDN */
        frrm    a0
        CHECK(a0, 2)
        TEST_CVT(fcvt.w.d, -3, 0xc004000000000000, dyn, NX)
        fsrmi   0
        li      t0, -3
        fcvt.d.l fa0, t0
        li      t0, D_ONE
        fmv.d.x fa1, t0
        fsrmi   1                               /* RTZ: -1/3 */
        fdiv.d  fa2, fa1, fa0
        fmv.x.d a0, fa2
        CHECK(a0, 0xbfd5555555555555)
        fsrmi   2                               /* RDN */
        fdiv.d  fa2, fa1, fa0
        fmv.x.d a0, fa2
        CHECK(a0, 0xbfd5555555555556)
        fdiv.d  fa2, fa1, fa0, rup              /* static overrides frm */
        fmv.x.d a0, fa2
        CHECK(a0, 0xbfd5555555555555)
        fsrmi   0
        li      t0, 0x4000000000000001          /* double -> single rounding */
        fmv.d.x fa0, t0
        fcvt.s.d fa1, fa0, rup
        fmv.x.d a0, fa1
        CHECK(a0, BOX | 0x40000001)
        fcvt.s.d fa1, fa0, rne
        fmv.x.d a0, fa1
        CHECK(a0, BOX | 0x40000000)
        li      t0, 0xffffffff
        fcvt.s.wu fa1, t0                       /* 2^32 - 1 rounds to 2^32 */
        fmv.x.d a0, fa1
        CHECK(a0, BOX | 0x4f800000)
        fcvt.d.w fa1, t0                        /* only the low 32 bits, signed: -1 */
        fmv.x.d a0, fa1
        CHECK(a0, 0xbff0000000000000)

        /* ---- fcsr layout (11.2): fflags 4:0, frm 7:5, rest reads zero */
        li      a0, -1
        fscsr   a1, a0
        frcsr   a0
        CHECK(a0, 0xff)
        frflags a0
        CHECK(a0, 0x1f)
        frrm    a0
        CHECK(a0, 7)
        fsflagsi 0x3
        frcsr   a0
        CHECK(a0, 0xe3)
        /* a reserved frm (5..7) makes dynamic-rounding instructions illegal */
        fsrmi   5
        TRAP_ARM
1:      fadd.d  fa0, fa0, fa0, dyn
        CHECK_ILLEGAL_AT(1b)
        fadd.d  fa0, fa0, fa0, rne              /* static mode still fine */
        fscsr   zero

        /* ---- mstatus.FS (Privileged 3.1.6.6) */
        li      t0, MSTATUS_FS
        csrc    mstatus, t0
        li      t0, MSTATUS_FS_CLEAN
        csrs    mstatus, t0
        fmv.d.x fa0, zero                       /* writes f state: Dirty */
        csrr    a0, mstatus
        srli    a1, a0, MSTATUS_FS_SHIFT
        andi    a1, a1, 3
        CHECK(a1, 3)
        srli    a1, a0, 63                      /* SD summarises FS = Dirty */
        CHECK(a1, 1)
        li      t0, MSTATUS_FS
        csrc    mstatus, t0
        li      t0, MSTATUS_FS_CLEAN
        csrs    mstatus, t0
        fsflagsi 1                              /* fcsr writes dirty it too */
        csrr    a0, mstatus
        srli    a1, a0, MSTATUS_FS_SHIFT
        andi    a1, a1, 3
        CHECK(a1, 3)
        /* FS = Off: every FP instruction and fcsr access is illegal */
        li      t0, MSTATUS_FS
        csrc    mstatus, t0
        TRAP_ARM
1:      fadd.d  fa0, fa1, fa2
        CHECK_ILLEGAL_AT(1b)
        TRAP_ARM
1:      fld     fa0, 0(sp)
        CHECK_ILLEGAL_AT(1b)
        TRAP_ARM
1:      fmv.x.d a0, fa0
        CHECK_ILLEGAL_AT(1b)
        TRAP_ARM
1:      frcsr   a0
        CHECK_ILLEGAL_AT(1b)
        TRAP_ARM
1:      csrw    fflags, zero
        CHECK_ILLEGAL_AT(1b)
        TRAP_ARM
1:      c.fldsp fa0, 0(sp)
        CHECK_ILLEGAL_AT(1b)
        TRAP_ARM
1:      fmadd.s fa0, fa1, fa2, fa3
        CHECK_ILLEGAL_AT(1b)
        csrr    a0, mstatus
        srli    a1, a0, MSTATUS_FS_SHIFT
        andi    a1, a1, 3
        CHECK(a1, 0)                            /* still Off */
        li      t0, MSTATUS_FS_INITIAL
        csrs    mstatus, t0

        ld      ra, 0(sp)
        addi    sp, sp, 16
        li      a0, 0
        ret
