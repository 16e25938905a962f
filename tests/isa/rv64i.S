/* RV64I base integer instructions (Unprivileged ISA 20191213, ch. 2 and 5).
 *
 * Every RV64I instruction, including the *W forms (5.2), shifts by
 * 0/31/32/63 and by amounts whose high bits must be ignored, LUI/AUIPC sign
 * extension, every branch taken and not taken, JAL/JALR link values and
 * JALR clearing bit 0 of the target, loads with sign/zero extension, stores
 * of each width, and ECALL/EBREAK causes.
 *
 * QEMU 7.2 choices encoded here (the spec permits either):
 *  - misaligned LD/LW/SD in M-mode are performed, not trapped (2.6);
 *  - EBREAK and ECALL write mtval = 0 (Privileged 3.1.16).
 */
#include "test.h"

        .option norvc                   /* 32-bit encodings only */

.macro RR op, result, v1, v2, line      /* rd != rs1 != rs2 */
        li      a0, \v1
        li      a1, \v2
        \op     a2, a0, a1
        CHECK_IMPL a2, \result, \line
.endm
#define TEST_RR(op, result, v1, v2) RR op, result, v1, v2, __LINE__

.macro RI op, result, v1, imm, line
        li      a0, \v1
        \op     a2, a0, \imm
        CHECK_IMPL a2, \result, \line
.endm
#define TEST_RI(op, result, v1, imm) RI op, result, v1, imm, __LINE__

.macro RR_SAME op, result, v1, line     /* rd == rs1 == rs2 */
        li      a0, \v1
        \op     a0, a0, a0
        CHECK_IMPL a0, \result, \line
.endm
#define TEST_RR_SAME(op, result, v1) RR_SAME op, result, v1, __LINE__

.macro BR_TAKEN op, v1, v2, line
        li      a0, \v1
        li      a1, \v2
        \op     a0, a1, .Ltaken\@
        li      a1, 0                   /* got: not taken */
        li      a2, 1                   /* expected: taken */
        li      a0, \line
        j       check_fail_asm
.Ltaken\@:
.endm
#define TEST_BR_TAKEN(op, v1, v2) BR_TAKEN op, v1, v2, __LINE__

.macro BR_NOT_TAKEN op, v1, v2, line
        li      a0, \v1
        li      a1, \v2
        \op     a0, a1, .Lbad\@
        j       .Lok\@
.Lbad\@:
        li      a1, 1
        li      a2, 0
        li      a0, \line
        j       check_fail_asm
.Lok\@:
.endm
#define TEST_BR_NOT_TAKEN(op, v1, v2) BR_NOT_TAKEN op, v1, v2, __LINE__

.macro LOAD op, result, sym, off, line
        la      a0, \sym
        \op     a2, \off(a0)
        CHECK_IMPL a2, \result, \line
.endm
#define TEST_LOAD(op, result, sym, off) LOAD op, result, sym, off, __LINE__

        .data
        .align  4
tdat:   .dword  0xf00ff00f8f7e6d5c      /* bytes 5c 6d 7e 8f 0f f0 0f f0 */
        .dword  0x0123456789abcdef
sdat:   .dword  0, 0, 0, 0

        .text
        .globl  main
main:
        addi    sp, sp, -16
        sd      ra, 0(sp)

        /* ---- 2.4.1 LUI / AUIPC: 20-bit immediate << 12, sign-extended */
        lui     a0, 0x12345
        CHECK(a0, 0x12345000)
        lui     a0, 0x7ffff
        CHECK(a0, 0x7ffff000)
        lui     a0, 0x80000
        CHECK(a0, 0xffffffff80000000)
        lui     a0, 0xfffff
        CHECK(a0, 0xfffffffffffff000)
1:      auipc   a0, 0
        la      a1, 1b
        CHECK_REG(a0, a1)
1:      auipc   a0, 0x80000             /* pc - 2^31 */
        la      a1, 1b
        li      a2, 0xffffffff80000000
        add     a1, a1, a2
        CHECK_REG(a0, a1)
1:      auipc   a0, 0x7ffff
        la      a1, 1b
        li      a2, 0x7ffff000
        add     a1, a1, a2
        CHECK_REG(a0, a1)

        /* ---- 2.4.1 register-immediate */
        TEST_RI(addi, 0, 0, 0)
        TEST_RI(addi, 10, 3, 7)
        TEST_RI(addi, 0xfffffffffffff800, 0, -2048)
        TEST_RI(addi, 0xffe, 0x7ff, 2047)
        TEST_RI(addi, 0x8000000000000000, 0x7fffffffffffffff, 1)
        TEST_RI(addi, 0, -1, 1)
        TEST_RI(addi, 0x7fffffff, 0x80000000, -1)     /* no 32-bit wrap */
        TEST_RI(slti, 0, 0, 0)
        TEST_RI(slti, 1, 1, 2)
        TEST_RI(slti, 1, -1, 0)
        TEST_RI(slti, 0, 0x7fffffffffffffff, -1)
        TEST_RI(slti, 1, 0x8000000000000000, 0)
        TEST_RI(slti, 1, -2049, -2048)
        TEST_RI(slti, 0, -2048, -2048)
        TEST_RI(sltiu, 1, 0x8000000000000000, -1)     /* imm sign-extends, compares unsigned */
        TEST_RI(sltiu, 0, -1, -1)
        TEST_RI(sltiu, 1, 0, 1)
        TEST_RI(sltiu, 0, 5, 1)
        TEST_RI(sltiu, 0, -1, 0)
        TEST_RI(xori, 0xff00f80f, 0xff00ff00, 0x70f)
        TEST_RI(xori, 0xf0f0f0f0f0f0f0f0, 0x0f0f0f0f0f0f0f0f, -1)
        TEST_RI(xori, 0x00ff00ff00ff000f, 0xff00ff00ff00f80f, -2048)
        TEST_RI(ori, 0xfffffffffffffff0, 0xff00ff00, -16)
        TEST_RI(ori, 0x0ff00fff, 0x0ff00ff0, 0x70f)
        TEST_RI(andi, 0x700, 0xff00ff00, 0x70f)
        TEST_RI(andi, 0xff00ff00, 0xff00ff00, -1)
        TEST_RI(andi, 0x123456789abcde00, 0x123456789abcdef0, -256)
        TEST_RI(slli, 1, 1, 0)
        TEST_RI(slli, 0x80000000, 1, 31)
        TEST_RI(slli, 0x100000000, 1, 32)
        TEST_RI(slli, 0x8000000000000000, 1, 63)
        TEST_RI(slli, 0x8000000000000000, -1, 63)
        TEST_RI(slli, 0x2121212100000000, 0x21212121, 32)
        TEST_RI(srli, 0x8000000000000000, 0x8000000000000000, 0)
        TEST_RI(srli, 0x100000000, 0x8000000000000000, 31)
        TEST_RI(srli, 0x80000000, 0x8000000000000000, 32)
        TEST_RI(srli, 1, 0x8000000000000000, 63)
        TEST_RI(srli, 0x7fffffffffffffff, -1, 1)
        TEST_RI(srli, 0xffffffff, -1, 32)
        TEST_RI(srai, 0x8000000000000000, 0x8000000000000000, 0)
        TEST_RI(srai, 0xffffffff00000000, 0x8000000000000000, 31)
        TEST_RI(srai, 0xffffffff80000000, 0x8000000000000000, 32)
        TEST_RI(srai, -1, 0x8000000000000000, 63)
        TEST_RI(srai, 0, 0x7fffffffffffffff, 63)
        TEST_RI(srai, 0x40c0c0c0, 0x81818181, 1)

        /* ---- 2.4.2 register-register */
        TEST_RR(add, 2, 1, 1)
        TEST_RR(add, 0x8000000000000000, 0x7fffffffffffffff, 1)
        TEST_RR(add, -2, -1, -1)
        TEST_RR(add, 0x100000000, 0xffffffff, 1)
        TEST_RR(sub, -1, 0, 1)
        TEST_RR(sub, 0x7fffffffffffffff, 0x8000000000000000, 1)
        TEST_RR(sub, -4, 3, 7)
        TEST_RR(sll, 1, 1, 0)
        TEST_RR(sll, 0x80000000, 1, 31)
        TEST_RR(sll, 0x100000000, 1, 32)
        TEST_RR(sll, 0x8000000000000000, 1, 63)
        TEST_RR(sll, 1, 1, 64)                          /* only rs2[5:0] used */
        TEST_RR(sll, 2, 1, 65)
        TEST_RR(sll, 0x8000000000000000, 1, -1)
        TEST_RR(slt, 1, -1, 0)
        TEST_RR(slt, 0, 0, -1)
        TEST_RR(slt, 1, 0x8000000000000000, 0x7fffffffffffffff)
        TEST_RR(slt, 0, 5, 5)
        TEST_RR(sltu, 0, -1, 0)
        TEST_RR(sltu, 1, 0, -1)
        TEST_RR(sltu, 1, 0x7fffffffffffffff, 0x8000000000000000)
        TEST_RR(sltu, 0, 5, 5)
        TEST_RR(xor, 0xf0f0f0f0f0f0f0f0, 0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0)
        TEST_RR(or,  0xfff0fff0fff0fff0, 0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0)
        TEST_RR(and, 0x0f000f000f000f00, 0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0)
        TEST_RR(srl, 0x8000000000000000, 0x8000000000000000, 0)
        TEST_RR(srl, 0x100000000, 0x8000000000000000, 31)
        TEST_RR(srl, 0x80000000, 0x8000000000000000, 32)
        TEST_RR(srl, 1, 0x8000000000000000, 63)
        TEST_RR(srl, 0x8000000000000000, 0x8000000000000000, 64)
        TEST_RR(srl, 0x7fffffffffffffff, -1, 65)
        TEST_RR(sra, 0x8000000000000000, 0x8000000000000000, 0)
        TEST_RR(sra, 0xffffffff00000000, 0x8000000000000000, 31)
        TEST_RR(sra, 0xffffffff80000000, 0x8000000000000000, 32)
        TEST_RR(sra, -1, 0x8000000000000000, 63)
        TEST_RR(sra, 0x8000000000000000, 0x8000000000000000, 64)
        TEST_RR(sra, 0xc000000000000000, 0x8000000000000000, 65)
        TEST_RR(sra, 0, 0x7fffffffffffffff, 63)
        TEST_RR_SAME(add, 0x2468, 0x1234)
        TEST_RR_SAME(sub, 0, 0x1234)
        TEST_RR_SAME(sll, 0x4200000000, 0x21)            /* 0x21 << (0x21 & 63) */

        /* ---- 5.2 RV64I *W instructions: operate on 32 bits, sign-extend */
        TEST_RI(addiw, 0xffffffff80000000, 0x7fffffff, 1)
        TEST_RI(addiw, 0, 0xffffffff, 1)
        TEST_RI(addiw, 0x23456789, 0x123456789, 0)
        TEST_RI(addiw, 0xffffffff80000000, 0x80000000, 0)
        TEST_RI(addiw, -1, 0x100000000, -1)
        TEST_RI(slliw, 1, 1, 0)
        TEST_RI(slliw, 0xffffffff80000000, 1, 31)
        TEST_RI(slliw, 2, 0xffffffff00000001, 1)
        TEST_RI(slliw, 0x23456780, 0x12345678, 4)
        TEST_RI(srliw, 0xffffffff80000000, 0xffffffff80000000, 0)
        TEST_RI(srliw, 1, 0xffffffff80000000, 31)
        TEST_RI(srliw, 0x40000000, 0x80000000, 1)
        TEST_RI(srliw, 1, -1, 31)
        TEST_RI(srliw, -1, -1, 0)
        TEST_RI(srliw, 0x02345678, 0x123456780, 4)
        TEST_RI(sraiw, 0xffffffff80000000, 0x80000000, 0)
        TEST_RI(sraiw, -1, 0x80000000, 31)
        TEST_RI(sraiw, 0xffffffffc0000000, 0x80000000, 1)
        TEST_RI(sraiw, 0, 0x7fffffff, 31)
        TEST_RI(sraiw, 0x07ffffff, 0xaaaaaaaa7fffffff, 4)
        TEST_RR(addw, 0xffffffff80000000, 0x7fffffff, 1)
        TEST_RR(addw, -2, 0xffffffff, 0xffffffff)
        TEST_RR(addw, 0, 0x100000000, 0)
        TEST_RR(subw, -1, 0, 1)
        TEST_RR(subw, 0x7fffffff, 0x80000000, 1)
        TEST_RR(subw, 0x7fffffff, 0xffffffff80000000, 1)
        TEST_RR(sllw, 0xffffffff80000000, 1, 31)
        TEST_RR(sllw, 1, 1, 32)                         /* only rs2[4:0] used */
        TEST_RR(sllw, 2, 1, 33)
        TEST_RR(sllw, 0xffffffff80000000, 3, 31)
        TEST_RR(srlw, 1, 0x80000000, 31)
        TEST_RR(srlw, 0xffffffff80000000, 0xffffffff80000000, 0)
        TEST_RR(srlw, 0xffffffff80000000, 0xffffffff80000000, 32)
        TEST_RR(srlw, 0x40000000, 0x80000000, 1)
        TEST_RR(srlw, 0x7fffffff, -1, 33)
        TEST_RR(sraw, -1, 0x80000000, 31)
        TEST_RR(sraw, 0xffffffffc0000000, 0x80000000, 1)
        TEST_RR(sraw, 0xffffffff80000000, 0x80000000, 32)
        TEST_RR(sraw, 0, 0x7fffffff, 63)

        /* ---- x0 is hardwired to zero */
        addi    zero, zero, 5
        lui     zero, 0x12345
        CHECK(zero, 0)

        /* ---- 2.6 / 5.3 loads: sign and zero extension, negative offsets */
        TEST_LOAD(lb, 0x5c, tdat, 0)
        TEST_LOAD(lb, 0xffffffffffffff8f, tdat, 3)
        TEST_LOAD(lbu, 0x8f, tdat, 3)
        TEST_LOAD(lh, 0x6d5c, tdat, 0)
        TEST_LOAD(lh, 0xffffffffffff8f7e, tdat, 2)
        TEST_LOAD(lhu, 0x8f7e, tdat, 2)
        TEST_LOAD(lw, 0xffffffff8f7e6d5c, tdat, 0)
        TEST_LOAD(lwu, 0x8f7e6d5c, tdat, 0)
        TEST_LOAD(lw, 0xfffffffff00ff00f, tdat, 4)
        TEST_LOAD(lwu, 0xf00ff00f, tdat, 4)
        TEST_LOAD(ld, 0xf00ff00f8f7e6d5c, tdat, 0)
        TEST_LOAD(ld, 0x0123456789abcdef, tdat, 8)
        TEST_LOAD(ld, 0xf00ff00f8f7e6d5c, tdat + 8, -8)
        TEST_LOAD(lbu, 0xef, tdat + 16, -8)
        /* QEMU 7.2 performs misaligned loads in M-mode (no trap) */
        TEST_LOAD(ld, 0xeff00ff00f8f7e6d, tdat, 1)
        TEST_LOAD(lw, 0x0ff00f8f, tdat, 3)

        /* ---- stores of each width */
        la      a0, sdat
        li      a1, 0x1122334455667788
        sd      a1, 0(a0)
        li      a1, 0xaa
        sb      a1, 1(a0)
        ld      a2, 0(a0)
        CHECK(a2, 0x112233445566aa88)
        li      a1, 0x1234bbcc                  /* only the low 16 bits stored */
        sh      a1, 2(a0)
        ld      a2, 0(a0)
        CHECK(a2, 0x11223344bbccaa88)
        li      a1, 0x77777777ddeeff00
        sw      a1, 4(a0)
        ld      a2, 0(a0)
        CHECK(a2, 0xddeeff00bbccaa88)
        ld      a2, 8(a0)                       /* neighbour untouched */
        CHECK(a2, 0)
        addi    a3, a0, 16
        li      a1, -2
        sd      a1, -8(a3)
        ld      a2, 8(a0)
        CHECK(a2, -2)
        /* QEMU 7.2 performs misaligned stores in M-mode (no trap) */
        li      a1, 0x0102030405060708
        sd      a1, 17(a0)
        ld      a2, 16(a0)
        CHECK(a2, 0x0203040506070800)
        lbu     a2, 24(a0)
        CHECK(a2, 0x01)

        /* ---- 2.5 conditional branches, taken and not taken */
        TEST_BR_TAKEN(beq, 5, 5)
        TEST_BR_NOT_TAKEN(beq, 5, 6)
        TEST_BR_TAKEN(bne, 5, 6)
        TEST_BR_NOT_TAKEN(bne, -1, -1)
        TEST_BR_TAKEN(blt, -1, 0)
        TEST_BR_NOT_TAKEN(blt, 0, -1)
        TEST_BR_NOT_TAKEN(blt, 3, 3)
        TEST_BR_TAKEN(blt, 0x8000000000000000, 0x7fffffffffffffff)
        TEST_BR_TAKEN(bge, 0, -1)
        TEST_BR_TAKEN(bge, 3, 3)
        TEST_BR_NOT_TAKEN(bge, -1, 0)
        TEST_BR_TAKEN(bltu, 0, -1)
        TEST_BR_NOT_TAKEN(bltu, -1, 0)
        TEST_BR_NOT_TAKEN(bltu, 3, 3)
        TEST_BR_TAKEN(bltu, 0x7fffffffffffffff, 0x8000000000000000)
        TEST_BR_TAKEN(bgeu, -1, 0)
        TEST_BR_TAKEN(bgeu, 3, 3)
        TEST_BR_NOT_TAKEN(bgeu, 0, -1)
        /* backward branch */
        li      a0, 5
        li      a1, 0
1:      addi    a1, a1, 1
        addi    a0, a0, -1
        bnez    a0, 1b
        CHECK(a1, 5)

        /* ---- 2.5 JAL / JALR */
        jal     a3, 1f                          /* link = pc + 4 */
2:      j       jump_fail
1:      la      a4, 2b
        CHECK_REG(a3, a4)
        jal     zero, 1f                        /* j: x0 not written */
        j       jump_fail
1:      CHECK(zero, 0)
        la      a0, 1f
        jalr    a3, 0(a0)
2:      j       jump_fail
1:      la      a4, 2b
        CHECK_REG(a3, a4)
        la      a0, 1f + 1                      /* odd target: bit 0 cleared */
        jalr    a3, 0(a0)
2:      j       jump_fail
1:      la      a4, 2b
        CHECK_REG(a3, a4)
        la      a0, 1f
        jalr    a3, 1(a0)                       /* rs1 + 1: bit 0 cleared */
        j       jump_fail
1:      la      a0, 1f + 16
        jalr    a3, -16(a0)                     /* negative offset */
        j       jump_fail
1:      la      a0, 1f
        jalr    a0, 0(a0)                       /* rd == rs1: target uses old rs1 */
2:      j       jump_fail
1:      la      a4, 2b
        CHECK_REG(a0, a4)
        la      a0, 1f
        jalr    zero, 0(a0)
        j       jump_fail
1:

        /* ---- 2.7 fences execute as no-ops here */
        fence
        fence   rw, rw
        fence.i
        .word   0x0100000f                      /* PAUSE hint: fence w, 0 */

        /* ---- 2.8 ECALL / EBREAK from M-mode (Privileged 3.1.15) */
        TRAP_ARM
1:      ecall
        CHECK_TRAP(CAUSE_ECALL_M)
        LOAD_TRAP a0, trap_epc
        la      a1, 1b
        CHECK_REG(a0, a1)
        LOAD_TRAP a0, trap_tval
        CHECK(a0, 0)
        TRAP_ARM
1:      ebreak
        CHECK_TRAP(CAUSE_BREAKPOINT)
        LOAD_TRAP a0, trap_epc
        la      a1, 1b
        CHECK_REG(a0, a1)
        LOAD_TRAP a0, trap_tval                 /* QEMU writes 0, not the pc */
        CHECK(a0, 0)

        ld      ra, 0(sp)
        addi    sp, sp, 16
        li      a0, 0
        ret

jump_fail:
        li      a0, __LINE__
        li      a1, 0
        li      a2, 0
        j       check_fail_asm
