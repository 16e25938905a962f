/* Self-modifying code through two Sv39 aliases of one physical page.
 *
 * alias_page (`addi a0, zero, K; ret`, and `addi a0, a0, K2; ret` half a
 * page on) is mapped at VA_A and at VA_B, both RWX, and is also reachable
 * through the identity gigapage.  In S-mode the code runs hot through one
 * alias, is patched by a store through the other (SW + FENCE.I), then runs
 * through both, and now and then through the identity mapping: each alias
 * must see every patch, whichever alias was written and whichever was
 * translated.  A tier keyed by virtual address, or one that forgets the
 * alias it did not write through, returns the old K.
 *
 * Privileged ISA 1.12, 4.3 (Sv39); Unprivileged ISA 20191213, 3 (Zifencei).
 */
#include "smc.h"
#include "sv39.h"

#define ROUNDS 200
#define VA_A 0x40000000ull
#define VA_B 0x40003000ull
#define FN2  0x800              /* page offset of the second function */

uint64_t alias_page(uint64_t);

asm(
"       .pushsection .text.smc_alias_page, \"ax\", @progbits\n"
"       .balign 4096\n"
"       .option push\n"
"       .option norvc\n"
"       .globl  alias_page\n"
"alias_page:\n"
"       addi    a0, zero, 1\n"
"       ret\n"
"       .balign 2048\n"
"       addi    a0, a0, 2\n"
"       ret\n"
"       .option pop\n"
"       .balign 4096\n"
"       .popsection\n");

static int64_t k_of(uint64_t round)
{
        return sext((round * 1237 + 2040) & 0xfff, 12);
}

static uint64_t s_alias(uint64_t unused)
{
        smc_fn a = fn_at(VA_A), b = fn_at(VA_B), phys = alias_page;
        smc_fn a2 = fn_at(VA_A + FN2), b2 = fn_at(VA_B + FN2);

        smc_start();

        /* Hot, and translated, through alias A first, then B. */
        warm("via A initial", 0, a, 0, 1);
        warm("second fn via A initial", 0, a2, 10, 12);
        warm("via B initial", 0, b, 0, 1);
        settle(SETTLE_EXITS);

        int64_t k2 = 2;
        for (uint64_t r = 1; r <= ROUNDS; r++) {
                smc_checkpoint();
                /* odd rounds: hot via A, written via B; even: the reverse */
                char *write = (char *)(r & 1 ? VA_B : VA_A);
                smc_fn hot = r & 1 ? a : b, other = r & 1 ? b : a;
                int64_t k = k_of(r);
                patch32(write, enc_addi(REG_A0, REG_ZERO, k));
                if (r % 5 == 0) {
                        k2 = k_of(r * 3) / 4;
                        patch32(write + FN2, enc_addi(REG_A0, REG_A0, k2));
                }
                if (r % 80 == 40) {  /* translated again from the patched bytes */
                        warm("via the hot alias", r, hot, 0, (uint64_t)k);
                        warm("second fn via A", r, a2, r, r + k2);
                        settle(SETTLE_EXITS);
                }
                smc_run("via the hot alias", r, hot, 0, (uint64_t)k, 8);
                smc_run("second fn via A", r, a2, r, r + k2, 4);
                smc_run("via the other alias", r, other, 0, (uint64_t)k, 4);
                smc_run("second fn via B", r, b2, r, r + k2, 2);
                if (r % 10 == 0)
                        smc_run("via the identity map", r, phys, 0, (uint64_t)k, 2);
        }
        return 0;
}

int main(void)
{
        CHECK((uint64_t)alias_page & 0xfff, 0);
        uint64_t *root = sv39_space();
        sv39_map_4k(root, VA_A, (uint64_t)alias_page, PTE_RWX | PTE_A | PTE_D);
        sv39_map_4k(root, VA_B, (uint64_t)alias_page, PTE_RWX | PTE_A | PTE_D);
        sv39_enable(root);
        CHECK(run_in_mode(PRV_S, s_alias, 0), 0);
        csr_write(satp, 0);
        print_str(TEST_NAME ": ");
        print_dec(ROUNDS);
        print_str(" patches through one alias seen through the other\n");
        return 0;
}
