/* A virtual code page remapped to other physical pages (Sv39, SFENCE.VMA).
 *
 * Three physical pages hold three different functions at offset 0:
 *   code_p0: a0 + 100,  code_p1: 2 * a0 + 7,  code_p2: a0 ^ 0x5a5.
 * In S-mode, VA_C and VA_D each run one of them hot; then their leaf PTEs
 * are pointed at other pages (SFENCE.VMA, global or for the address, in
 * turn) and the functions are called again through the same virtual
 * addresses: the new page's code must run.  A tier that found its
 * translations by virtual address would run the old page's code.  Every
 * few rounds code_p2 is also rewritten while unmapped (SW + FENCE.I), so
 * the page VA_C comes back to is not the page it left.
 *
 * Privileged ISA 1.12, 4.2.1 (SFENCE.VMA) and 4.3 (Sv39).
 */
#include "smc.h"
#include "sv39.h"

#define ROUNDS 300
#define VA_C 0x40000000ull
#define VA_D 0x40005000ull

uint64_t code_p0(uint64_t), code_p1(uint64_t), code_p2(uint64_t);

asm(
"       .pushsection .text.smc_remap_pages, \"ax\", @progbits\n"
"       .option push\n"
"       .option norvc\n"
"       .balign 4096\n"
"       .globl  code_p0\n"
"code_p0:\n"
"       addi    a0, a0, 100\n"
"       ret\n"
"       .balign 4096\n"
"       .globl  code_p1\n"
"code_p1:\n"
"       slli    a0, a0, 1\n"
"       addi    a0, a0, 7\n"
"       ret\n"
"       .balign 4096\n"
"       .globl  code_p2\n"
"code_p2:\n"
"       xori    a0, a0, 0x5a5\n"
"       ret\n"
"       .option pop\n"
"       .balign 4096\n"
"       .popsection\n");

static volatile uint64_t *pte_c, *pte_d;
static uint64_t page_pa[3];
static int64_t p2_imm = 0x5a5;

static uint64_t expect(int page, uint64_t x)
{
        switch (page) {
        case 0: return x + 100;
        case 1: return 2 * x + 7;
        default: return x ^ (uint64_t)p2_imm;
        }
}

static void map_code(volatile uint64_t *pte, uint64_t va, int page, uint64_t round)
{
        *pte = pte_leaf(page_pa[page], PTE_R | PTE_X | PTE_A);
        if (round & 1)
                asm volatile ("sfence.vma %0, zero" :: "r"(va) : "memory");
        else
                asm volatile ("sfence.vma" ::: "memory");
}

static uint64_t s_remap(uint64_t unused)
{
        smc_fn c = fn_at(VA_C), d = fn_at(VA_D);

        smc_start();

        /* Hot, and translated, before the first remap: VA_C -> code_p0, VA_D -> code_p1. */
        warm("VA_C initial", 0, c, 1, expect(0, 1));
        warm("VA_D initial", 0, d, 1, expect(1, 1));
        settle(SETTLE_EXITS);

        for (uint64_t r = 1; r <= ROUNDS; r++) {
                smc_checkpoint();
                int pc_ = (int)(r % 3), pd = (int)((r + 1) % 3);
                if (r % 7 == 0) {
                        /* rewrite code_p2's immediate while it may be unmapped */
                        p2_imm = sext(r * 37, 12);
                        patch32(CODE(code_p2), enc_xori(REG_A0, REG_A0, p2_imm));
                }
                map_code(pte_c, VA_C, pc_, r);
                map_code(pte_d, VA_D, pd, r + 1);
                if (r % 100 == 50) {  /* translated through the new mappings */
                        warm("VA_C", r, c, r, expect(pc_, r));
                        warm("VA_D", r, d, r, expect(pd, r));
                        settle(SETTLE_EXITS);
                }
                smc_run("VA_C", r, c, r, expect(pc_, r), 8);
                smc_run("VA_D", r, d, r, expect(pd, r), 8);
        }
        return 0;
}

int main(void)
{
        page_pa[0] = (uint64_t)code_p0;
        page_pa[1] = (uint64_t)code_p1;
        page_pa[2] = (uint64_t)code_p2;
        for (int i = 0; i < 3; i++)
                CHECK(page_pa[i] & 0xfff, 0);
        uint64_t *root = sv39_space();
        pte_c = sv39_map_4k(root, VA_C, page_pa[0], PTE_R | PTE_X | PTE_A);
        pte_d = sv39_map_4k(root, VA_D, page_pa[1], PTE_R | PTE_X | PTE_A);
        sv39_enable(root);
        CHECK(run_in_mode(PRV_S, s_remap, 0), 0);
        csr_write(satp, 0);
        print_str(TEST_NAME ": ");
        print_dec(ROUNDS);
        print_str(" remaps of two hot code pages seen\n");
        return 0;
}
