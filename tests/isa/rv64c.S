/* RV64C compressed instructions (Unprivileged ISA 20191213, ch. 16).
 *
 * Every RV64C instruction through explicit c.* mnemonics (16.3-16.7),
 * including the RV64-only forms (c.ld/c.sd/c.ldsp/c.sdsp, c.addiw, c.addw,
 * c.subw, shift amounts >= 32), c.jalr's link = pc + 2, 32-bit
 * instructions at 2-byte aligned addresses, HINT encodings that must
 * execute as no-ops (16.7, table 16.8), and reserved encodings that raise
 * illegal instruction.
 *
 * QEMU 7.2 reports mtval = the 16 instruction bits (zero-extended) for an
 * illegal compressed instruction (Privileged 3.1.16 allows 0 or the bits).
 */
#include "test.h"

        .option rvc

/* Reserved encoding -> illegal instruction, mtval = the bits. */
.macro ILLEGAL16 bits, line
        TRAP_ARM
1:      .hword  \bits
        CHECK_TRAP_IMPL CAUSE_ILLEGAL, \line
        LOAD_TRAP t5, trap_tval
        CHECK_IMPL t5, \bits, \line
        LOAD_TRAP t5, trap_epc
        la      t4, 1b
        CHECK_REG_IMPL t5, t4, \line
.endm
#define TEST_ILLEGAL16(bits) ILLEGAL16 bits, __LINE__

        .data
        .align  4
cdat:   .dword  0x0000000080000000, 0xfedcba9876543210
        .dword  0, 0
        .fill   32, 8, 0
cfp:    .dword  0x400921fb54442d18      /* pi */

        .text
        .globl  main
main:
        c.addi16sp sp, -256             /* frame for the sp-relative forms */
        c.sdsp  ra, 248(sp)

        /* ---- 16.3 stack-pointer-based loads and stores */
        li      a0, 0x1122334455667788
        c.sdsp  a0, 0(sp)
        c.ldsp  a1, 0(sp)
        CHECK(a1, 0x1122334455667788)
        li      a0, 0x87654321
        c.swsp  a0, 8(sp)
        c.lwsp  a1, 8(sp)                       /* sign-extends */
        CHECK(a1, 0xffffffff87654321)
        c.sdsp  zero, 16(sp)
        c.swsp  a0, 16(sp)                      /* upper word not written */
        c.ldsp  a1, 16(sp)
        CHECK(a1, 0x87654321)
        c.sdsp  a0, 240(sp)                     /* largest offset used here */
        c.ldsp  a1, 240(sp)
        CHECK(a1, 0x87654321)
        c.swsp  a0, 244(sp)
        c.lwsp  a1, 244(sp)
        CHECK(a1, 0xffffffff87654321)
        la      a0, cfp
        fld     ft0, 0(a0)
        c.fsdsp ft0, 24(sp)
        c.fldsp fa1, 24(sp)
        fmv.x.d a1, fa1
        CHECK(a1, 0x400921fb54442d18)

        /* ---- 16.4 register-based loads and stores (x8-x15, f8-f15) */
        la      s0, cdat
        c.lw    a0, 0(s0)
        CHECK(a0, 0xffffffff80000000)
        c.ld    a1, 8(s0)
        CHECK(a1, 0xfedcba9876543210)
        c.lw    a2, 12(s0)
        CHECK(a2, 0xfffffffffedcba98)
        mv      s1, s0
        li      a5, 0x0badf00d
        c.sw    a5, 16(s1)
        li      a5, 0x0123456789abcdef
        c.sd    a5, 24(s1)
        c.ld    a4, 16(s1)
        CHECK(a4, 0x0badf00d)
        c.ld    a4, 24(s1)
        CHECK(a4, 0x0123456789abcdef)
        c.sd    a5, 248(s1)
        c.ld    a3, 248(s1)
        CHECK(a3, 0x0123456789abcdef)
        c.sw    a5, 124(s1)
        c.lw    a3, 124(s1)
        CHECK(a3, 0xffffffff89abcdef)
        fmv.d   fs0, ft0
        c.fsd   fs0, 40(s1)
        c.fld   fa5, 40(s1)
        fmv.x.d a1, fa5
        CHECK(a1, 0x400921fb54442d18)

        /* ---- 16.5 control transfer */
        c.j     1f
        j       cfail
1:      li      s1, 0
        c.beqz  s1, 1f                          /* taken */
        j       cfail
1:      c.bnez  s1, cfail                       /* not taken */
        li      s1, -1
        c.bnez  s1, 1f                          /* taken */
        j       cfail
1:      c.beqz  s1, cfail                       /* not taken */
        li      a0, 3                           /* backward c.bnez loop */
        li      a1, 0
2:      c.addi  a1, 1
        c.addi  a0, -1
        c.bnez  a0, 2b
        CHECK(a1, 3)
        la      a0, 1f
        c.jr    a0
        j       cfail
1:      la      a0, 1f
        c.jalr  a0                              /* ra = pc + 2 */
2:      j       cfail
1:      la      a1, 2b
        CHECK_REG(ra, a1)
        la      a0, 1f
        c.jalr  a0
2:      .option norvc                           /* 32-bit insn at a 2-byte boundary */
        j       cfail
        .option rvc
1:      la      a1, 2b
        CHECK_REG(ra, a1)

        /* ---- 16.5 integer constant generation */
        c.li    a0, -32
        CHECK(a0, -32)
        c.li    a0, 31
        CHECK(a0, 31)
        c.lui   a0, 0x1f
        CHECK(a0, 0x1f000)
        c.lui   a0, 0xfffff
        CHECK(a0, 0xfffffffffffff000)
        c.lui   a0, 0xfffe0
        CHECK(a0, 0xfffffffffffe0000)

        /* ---- 16.5 register-immediate */
        li      a0, 10
        c.addi  a0, -32
        CHECK(a0, -22)
        c.addi  a0, 31
        CHECK(a0, 9)
        li      a0, 0x7fffffff
        c.addiw a0, 1
        CHECK(a0, 0xffffffff80000000)
        li      a0, 0x1234567887654321
        c.addiw a0, 0                           /* sext.w */
        CHECK(a0, 0xffffffff87654321)
        mv      a2, sp
        c.addi16sp sp, 496
        c.addi16sp sp, -512
        c.addi16sp sp, 16
        CHECK_REG(sp, a2)
        c.addi4spn a0, sp, 4
        sub     a0, a0, sp
        CHECK(a0, 4)
        c.addi4spn a0, sp, 1020
        sub     a0, a0, sp
        CHECK(a0, 1020)
        li      a0, 1
        c.slli  a0, 63
        CHECK(a0, 0x8000000000000000)
        li      a0, 0x12345
        c.slli  a0, 32
        CHECK(a0, 0x0001234500000000)
        li      a0, 3
        c.slli  a0, 1
        CHECK(a0, 6)
        li      s1, 0x8000000000000000
        c.srli  s1, 63
        CHECK(s1, 1)
        li      s1, 0x8000000000000000
        c.srli  s1, 32
        CHECK(s1, 0x80000000)
        li      s1, 0x8000000000000000
        c.srai  s1, 32
        CHECK(s1, 0xffffffff80000000)
        li      s1, 0x8000000000000000
        c.srai  s1, 63
        CHECK(s1, -1)
        li      s1, 0x4000000000000000
        c.srai  s1, 1
        CHECK(s1, 0x2000000000000000)
        li      s1, 0x123456789abcdef0
        c.andi  s1, -32
        CHECK(s1, 0x123456789abcdee0)
        li      s1, 0x123456789abcdef0
        c.andi  s1, 0x1f
        CHECK(s1, 0x10)

        /* ---- 16.5 register-register */
        li      a0, 5
        c.mv    a1, a0
        CHECK(a1, 5)
        c.add   a1, a0
        CHECK(a1, 10)
        li      s0, 0xff00ff00ff00ff00
        li      s1, 0x0ff00ff00ff00ff0
        mv      a0, s0
        c.and   a0, s1
        CHECK(a0, 0x0f000f000f000f00)
        mv      a0, s0
        c.or    a0, s1
        CHECK(a0, 0xfff0fff0fff0fff0)
        mv      a0, s0
        c.xor   a0, s1
        CHECK(a0, 0xf0f0f0f0f0f0f0f0)
        li      a0, 3
        li      a1, 7
        c.sub   a0, a1
        CHECK(a0, -4)
        li      a0, 0x7fffffff
        li      a1, 1
        c.addw  a0, a1
        CHECK(a0, 0xffffffff80000000)
        li      a0, 0x180000000
        li      a1, 1
        c.subw  a0, a1
        CHECK(a0, 0x7fffffff)
        li      a0, 0
        c.subw  a0, a1
        CHECK(a0, -1)

        /* ---- c.nop and HINTs (16.7): execute, change nothing */
        li      a0, 0x55
        c.nop
        .hword  0x0005                  /* c.nop with nzimm = 1 */
        .hword  0x0501                  /* c.addi a0, 0 */
        .hword  0x4005                  /* c.li x0, 1 */
        .hword  0x6005                  /* c.lui x0, 1 */
        .hword  0x802a                  /* c.mv x0, a0 */
        .hword  0x902a                  /* c.add x0, a0 */
        .hword  0x0006                  /* c.slli x0, 1 */
        .hword  0x0502                  /* c.slli a0, 0 (shamt 0 is a HINT in RV64C) */
        CHECK(a0, 0x55)
        CHECK(zero, 0)

        /* ---- c.ebreak */
        TRAP_ARM
1:      c.ebreak
        CHECK_TRAP(CAUSE_BREAKPOINT)
        LOAD_TRAP a0, trap_epc
        la      a1, 1b
        CHECK_REG(a0, a1)

        /* ---- reserved / illegal encodings (table 16.5-16.7) */
        TEST_ILLEGAL16(0x0000)          /* all zeros: defined illegal */
        TEST_ILLEGAL16(0x0004)          /* c.addi4spn, nzuimm = 0 */
        TEST_ILLEGAL16(0x4002)          /* c.lwsp rd = 0 */
        TEST_ILLEGAL16(0x6002)          /* c.ldsp rd = 0 */
        TEST_ILLEGAL16(0x8002)          /* c.jr rs1 = 0 */
        TEST_ILLEGAL16(0x6101)          /* c.addi16sp, nzimm = 0 */
        TEST_ILLEGAL16(0x6081)          /* c.lui ra, nzimm = 0 */
        TEST_ILLEGAL16(0x9c41)          /* reserved CA-format funct */
        TEST_ILLEGAL16(0x9c61)          /* reserved CA-format funct */

        c.ldsp  ra, 248(sp)
        c.addi16sp sp, 256
        li      a0, 0
        ret

cfail:
        li      a0, 0
        li      a1, 0
        li      a2, 1
        j       check_fail_asm
