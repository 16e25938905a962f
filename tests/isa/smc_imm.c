/* Self-modifying code: an immediate patched with SW + FENCE.I, 500 times.
 *
 * Two functions share one code page of their own: imm_fn is
 * `addi a0, zero, K; ret`, add_fn is `addi a0, a0, K2; ret`.  Each is run
 * hot first (so that a translating tier has compiled it), then round after
 * round K (and every third round K2) is rewritten and both are called
 * again, every result checked: a tier that kept running a translation made
 * before a patch returns the old K.  Rounds 100 and 300 run the functions
 * long enough to be translated again from the patched bytes.
 *
 * Unprivileged ISA 20191213, 3 (Zifencei): after FENCE.I the hart's
 * fetches see its own earlier stores.
 */
#include "smc.h"

#define ROUNDS 500

uint64_t imm_fn(uint64_t), add_fn(uint64_t);

asm(
"       .pushsection .text.smc_imm_page, \"ax\", @progbits\n"
"       .balign 4096\n"
"       .option push\n"
"       .option norvc\n"
"       .globl  imm_fn\n"
"imm_fn:\n"
"       addi    a0, zero, 1\n"
"       ret\n"
"       .balign 2048\n"
"       .globl  add_fn\n"
"add_fn:\n"
"       addi    a0, a0, 2\n"
"       ret\n"
"       .option pop\n"
"       .balign 4096\n"
"       .popsection\n");

/* A different 12-bit immediate for every round, both signs, both ends. */
static int64_t k_of(uint64_t round)
{
        return sext((round * 1237 + 2040) & 0xfff, 12);
}

int main(void)
{
        smc_fn imm = imm_fn, add = add_fn;
        CHECK((uint64_t)imm_fn & 0xfff, 0);

        smc_start();

        /* Hot, and translated, before the first patch. */
        warm("imm_fn initial", 0, imm, 0, 1);
        warm("add_fn initial", 0, add, 100, 102);
        settle(SETTLE_EXITS);

        int64_t k2 = 2;
        for (uint64_t r = 1; r <= ROUNDS; r++) {
                smc_checkpoint();
                int64_t k = k_of(r);
                patch32(CODE(imm_fn), enc_addi(REG_A0, REG_ZERO, k));
                if (r % 3 == 0) {
                        k2 = -k_of(r * 7) / 2;
                        patch32(CODE(add_fn), enc_addi(REG_A0, REG_A0, k2));
                }
                if (r % 200 == 100) {  /* translated again from the patched bytes */
                        warm("imm_fn", r, imm, 0, (uint64_t)k);
                        warm("add_fn", r, add, r, r + k2);
                        settle(SETTLE_EXITS);
                }
                smc_run("imm_fn", r, imm, 0, (uint64_t)k, 4);
                smc_run("add_fn", r, add, r, r + k2, 4);
        }
        print_str(TEST_NAME ": ");
        print_dec(ROUNDS);
        print_str(" patches of a hot immediate seen\n");
        return 0;
}
