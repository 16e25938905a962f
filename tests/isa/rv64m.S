/* RV64M multiply and divide (Unprivileged ISA 20191213, ch. 7).
 *
 * All of MUL/MULH/MULHSU/MULHU/MULW and DIV/DIVU/REM/REMU and their *W
 * forms, with the special cases of the table in 7.2: division by zero
 * (quotient all ones, remainder = dividend) and signed overflow
 * (-2^(L-1) / -1 = -2^(L-1), remainder 0), for both XLEN and 32-bit forms.
 */
#include "test.h"

        .option norvc

.macro RR op, result, v1, v2, line
        li      a0, \v1
        li      a1, \v2
        \op     a2, a0, a1
        CHECK_IMPL a2, \result, \line
        \op     a0, a0, a1              /* rd == rs1 */
        CHECK_IMPL a0, \result, \line
.endm
#define TEST_RR(op, result, v1, v2) RR op, result, v1, v2, __LINE__

#define MIN64 0x8000000000000000
#define MAX64 0x7fffffffffffffff

        .text
        .globl  main
main:
        /* ---- 7.1 multiplication */
        TEST_RR(mul, 21, 3, 7)
        TEST_RR(mul, 1, -1, -1)
        TEST_RR(mul, -21, -3, 7)
        TEST_RR(mul, 0xfffffffffffffffe, MAX64, 2)
        TEST_RR(mul, 0, 0x100000000, 0x100000000)
        TEST_RR(mul, MIN64, MIN64, -1)
        TEST_RR(mulh, 0, -1, -1)
        TEST_RR(mulh, 0x4000000000000000, MIN64, MIN64)
        TEST_RR(mulh, -1, MIN64, 1)
        TEST_RR(mulh, 0x3fffffffffffffff, MAX64, MAX64)
        TEST_RR(mulh, -1, -1, 1)
        TEST_RR(mulh, 0, 2, 0x4000000000000000)
        TEST_RR(mulh, 0, 3, 7)
        TEST_RR(mulhu, 0xfffffffffffffffe, -1, -1)
        TEST_RR(mulhu, 1, MIN64, 2)
        TEST_RR(mulhu, 0, 3, 7)
        TEST_RR(mulhu, 0x3fffffffffffffff, MAX64, MAX64)
        TEST_RR(mulhsu, -1, -1, -1)             /* -1 * (2^64 - 1) */
        TEST_RR(mulhsu, 0, 1, -1)
        TEST_RR(mulhsu, MIN64, MIN64, -1)
        TEST_RR(mulhsu, -1, -2, 3)
        TEST_RR(mulhsu, 0x7ffffffffffffffe, MAX64, -1)
        TEST_RR(mulw, -2, 0x7fffffff, 2)
        TEST_RR(mulw, 3, 0x100000001, 3)        /* upper halves ignored */
        TEST_RR(mulw, 0, 0x10000, 0x10000)
        TEST_RR(mulw, 1, -1, -1)
        TEST_RR(mulw, 0xffffffff80000000, 0x80000000, 1)

        /* ---- 7.2 division: signed rounds toward zero */
        TEST_RR(div, 3, 20, 6)
        TEST_RR(div, -3, -20, 6)
        TEST_RR(div, -3, 20, -6)
        TEST_RR(div, 3, -20, -6)
        TEST_RR(div, 0, 0, 5)
        TEST_RR(div, -1, 20, 0)                 /* by zero: all ones */
        TEST_RR(div, -1, MIN64, 0)
        TEST_RR(div, MIN64, MIN64, -1)          /* overflow */
        TEST_RR(divu, 3, 20, 6)
        TEST_RR(divu, 0x2aaaaaaaaaaaaaa7, -20, 6)
        TEST_RR(divu, -1, 20, 0)                /* by zero: 2^64 - 1 */
        TEST_RR(divu, 0, MIN64, -1)
        TEST_RR(divu, 1, -1, -1)
        TEST_RR(rem, 2, 20, 6)
        TEST_RR(rem, -2, -20, 6)                /* sign of the dividend */
        TEST_RR(rem, 2, 20, -6)
        TEST_RR(rem, -2, -20, -6)
        TEST_RR(rem, 20, 20, 0)                 /* by zero: dividend */
        TEST_RR(rem, MIN64, MIN64, 0)
        TEST_RR(rem, 0, MIN64, -1)              /* overflow */
        TEST_RR(remu, 2, 20, 6)
        TEST_RR(remu, 2, -20, 6)
        TEST_RR(remu, -20, -20, 0)              /* by zero: dividend */
        TEST_RR(remu, MIN64, MIN64, -1)

        /* ---- 7.2 *W forms: 32-bit operands, sign-extended results */
        TEST_RR(divw, 3, 20, 6)
        TEST_RR(divw, -3, -20, 6)
        TEST_RR(divw, 3, 0x100000014, 6)        /* upper half of rs1 ignored */
        TEST_RR(divw, -1, 20, 0)
        TEST_RR(divw, -1, 20, 0x100000000)      /* rs2[31:0] == 0 is "by zero" */
        TEST_RR(divw, 0xffffffff80000000, 0x80000000, -1)     /* overflow */
        TEST_RR(divuw, 0x2aaaaaa7, -20, 6)
        TEST_RR(divuw, -1, 20, 0)               /* 0xffffffff sign-extended */
        TEST_RR(divuw, 0xffffffff80000000, 0x80000000, 1)
        TEST_RR(divuw, 0, 0x80000000, -1)
        TEST_RR(remw, 2, 20, 6)
        TEST_RR(remw, -2, -20, 6)
        TEST_RR(remw, 0, 0x80000000, -1)        /* overflow */
        TEST_RR(remw, 0xffffffff9abcdef0, 0x123456789abcdef0, 0)  /* by zero: sext(rs1[31:0]) */
        TEST_RR(remw, 0x1abcdef0, 0x123456781abcdef0, 0)
        TEST_RR(remuw, 2, -20, 6)
        TEST_RR(remuw, 0xffffffff9abcdef0, 0x123456789abcdef0, 0)
        TEST_RR(remuw, 0xffffffff80000000, 0x80000000, -1)

        li      a0, 0
        ret
