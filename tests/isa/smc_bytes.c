/* Self-modifying code by byte and halfword stores (SB, SH + FENCE.I).
 *
 * One code page holds four hot functions, each patched a piece at a time:
 * - b_fn  `addi a0, zero, K; ret`: SB into byte 3 (imm[11:4]) and, every
 *   other round, into byte 2 (imm[3:0] above rs1's high bits);
 * - h_fn  `addi a0, a0, 3; <slot>; ret`, 32-bit instructions at offsets
 *   2 mod 4: the slot `addi/xori a0, a0, K` starts two bytes before a
 *   64-byte boundary, so SH into its high half (the immediate) writes only
 *   the second chunk; every other round an SH into its low half flips the
 *   funct3 between ADDI and XORI;
 * - c_fn  `c.li a0, K; c.jr ra`: SH over the compressed instruction, which
 *   becomes c.li or c.addi alternately;
 * - c2_fn `c.li a0, K; c.jr ra`: SB into the low byte (imm[4:0]).
 * Every function runs hot before the first patch, and after each round of
 * patches every result is checked (unprivileged ISA 20191213, 3 and 16).
 */
#include "smc.h"

#define ROUNDS 128

uint64_t b_fn(uint64_t), h_fn(uint64_t), h_slot(uint64_t), c_fn(uint64_t), c2_fn(uint64_t);

asm(
"       .pushsection .text.smc_bytes_page, \"ax\", @progbits\n"
"       .balign 4096\n"
"       .option push\n"
"       .option norvc\n"
"       .globl  b_fn\n"
"b_fn:\n"
"       addi    a0, zero, 5\n"
"       ret\n"
"\n"
"       .balign 256\n"
"       .skip   58, 0\n"
"       .globl  h_fn, h_slot\n"
"h_fn:                           /* page offset 0x13a */\n"
"       addi    a0, a0, 3\n"
"h_slot:                         /* 0x13e..0x141: across a 64-byte chunk boundary */\n"
"       addi    a0, a0, 0\n"
"       ret\n"
"\n"
"       .option rvc\n"
"       .balign 256\n"
"       .globl  c_fn\n"
"c_fn:\n"
"       c.li    a0, 7\n"
"       c.jr    ra\n"
"\n"
"       .balign 256\n"
"       .globl  c2_fn\n"
"c2_fn:\n"
"       c.li    a0, -20\n"
"       c.jr    ra\n"
"       .option pop\n"
"       .balign 4096\n"
"       .popsection\n");

/* c.addi rd, imm6 (imm != 0), Unprivileged ISA 16.5. */
static uint16_t enc_c_addi(int rd, int64_t imm)
{
        return (uint16_t)(0x0001 | (((imm >> 5) & 1) << 12) | (rd << 7) | ((imm & 0x1f) << 2));
}

static void poke8(char *at, uint8_t v)
{
        *(volatile uint8_t *)at = v;
        fence_i();
}

int main(void)
{
        smc_fn b = b_fn, h = h_fn, c = c_fn, c2 = c2_fn;
        CHECK((uint64_t)CODE(h_slot) & 63, 62);
        CHECK((uint64_t)CODE(h_slot) & 3, 2);

        smc_start();

        /* Hot, and translated, before the first patch. */
        warm("b_fn initial", 0, b, 0, 5);
        warm("h_fn initial", 0, h, 100, 103);
        warm("c_fn initial", 0, c, 0, 7);
        warm("c2_fn initial", 0, c2, 0, (uint64_t)-20);
        settle(SETTLE_EXITS);

        uint64_t low4 = 5, xori = 0;
        for (uint64_t r = 1; r <= ROUNDS; r++) {
                smc_checkpoint();
                /* b_fn: imm[11:4] in byte 3, imm[3:0] in byte 2's high nibble */
                uint64_t hi8 = (r * 37 + 11) & 0xff;
                poke8(CODE(b_fn) + 3, (uint8_t)hi8);
                if (r % 2 == 0) {
                        low4 = (r * 5) & 0xf;
                        poke8(CODE(b_fn) + 2, (uint8_t)(low4 << 4));   /* rs1 = zero */
                }
                uint64_t b_want = (uint64_t)sext((hi8 << 4) | low4, 12);

                /* h_fn: the slot's high half is imm << 4 | rs1 >> 1 (a0 = x10) */
                int64_t k = sext((r * 1237 + 2040) & 0xfff, 12);
                patch16(CODE(h_slot) + 2, (uint16_t)(((k & 0xfff) << 4) | (REG_A0 >> 1)));
                if (r % 2 == 1) {
                        xori = !xori;
                        patch16(CODE(h_slot), (uint16_t)enc_i(0x13, xori ? 4 : 0, REG_A0, REG_A0, 0));
                }
                uint64_t h_arg = r * 3, h_want = xori ? (h_arg + 3) ^ (uint64_t)k
                                                       : h_arg + 3 + (uint64_t)k;

                /* c_fn: a whole compressed instruction, c.li or c.addi */
                int64_t k6 = sext(r * 7 + 1, 6);
                if (k6 == 0)
                        k6 = 1;         /* c.addi with imm 0 is a hint */
                uint16_t c_insn = r % 2 ? enc_c_addi(REG_A0, k6) : enc_c_li(REG_A0, k6);
                patch16(CODE(c_fn), c_insn);
                uint64_t c_arg = r * 100, c_want = r % 2 ? c_arg + (uint64_t)k6 : (uint64_t)k6;

                /* c2_fn: c.li's low byte holds imm[4:0] << 2 | op (rd = a0: bit 7 = 0) */
                uint64_t imm4_0 = (r * 11) & 0x1f;
                poke8(CODE(c2_fn), (uint8_t)((imm4_0 << 2) | 1));
                uint64_t c2_want = (uint64_t)sext(0x20 | imm4_0, 6);

                if (r % 64 == 32) {  /* translated again from the patched bytes */
                        warm("b_fn", r, b, 0, b_want);
                        warm("h_fn", r, h, h_arg, h_want);
                        warm("c_fn", r, c, c_arg, c_want);
                        warm("c2_fn", r, c2, 0, c2_want);
                        settle(SETTLE_EXITS);
                }
                smc_run("b_fn", r, b, 0, b_want, 8);
                smc_run("h_fn", r, h, h_arg, h_want, 8);
                smc_run("c_fn", r, c, c_arg, c_want, 8);
                smc_run("c2_fn", r, c2, 0, c2_want, 8);
        }
        print_str(TEST_NAME ": ");
        print_dec(ROUNDS);
        print_str(" rounds of sb/sh patches into 32-bit and compressed code seen\n");
        return 0;
}
