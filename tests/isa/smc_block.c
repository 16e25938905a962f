/* Self-modifying code inside one basic block: a store patches a later
 * instruction of the same straight-line run (no branch between the store
 * and the patched instruction), FENCE.I, then the patched instruction runs.
 *
 * - sp_fn(insn, arg) stores insn over sp_slot, three instructions on, and
 *   falls into it; sp_run(arg) enters at sp_slot, so the patched
 *   instruction also runs hot from a block of its own (translated there,
 *   a tier that kept the translation would return the old immediate).
 * - flow_fn(insn, arg) does the same with a control-flow change: the slot
 *   is `addi a0, a0, K` (fall through) or `jal zero, flow_far` (skip).
 * - loop_fn(n, base) is a loop whose body patches `addi t3, zero, base+i`
 *   into itself each iteration and then runs it twice, the second time
 *   entering at the patched instruction by a backward branch: the sum
 *   tells whether every run saw the iteration's own immediate.
 * Everything runs hot before the rounds, the patching functions included:
 * a tier whose translated store into code did not leave the translation
 * would go on to run the old slot inside sp_fn and flow_fn themselves.
 *
 * Unprivileged ISA 20191213, 3 (Zifencei).
 */
#include "smc.h"

#define ROUNDS 100

uint64_t sp_fn(uint64_t, uint64_t), flow_fn(uint64_t, uint64_t), loop_fn(uint64_t, uint64_t);
uint64_t sp_slot(uint64_t), flow_slot(uint64_t), flow_far(uint64_t);

asm(
"       .pushsection .text.smc_block_page, \"ax\", @progbits\n"
"       .balign 4096\n"
"       .option push\n"
"       .option norvc\n"
"       .globl  sp_fn, sp_slot\n"
"sp_fn:                          /* a0 = insn, a1 = arg */\n"
"       lla     t0, sp_slot\n"
"       sw      a0, 0(t0)\n"
"       fence.i\n"
"       mv      a0, a1\n"
"sp_slot:\n"
"       addi    a0, a0, 1\n"
"       ret\n"
"\n"
"       .balign 256\n"
"       .globl  flow_fn, flow_slot, flow_far\n"
"flow_fn:                        /* a0 = insn, a1 = arg */\n"
"       lla     t0, flow_slot\n"
"       sw      a0, 0(t0)\n"
"       fence.i\n"
"       mv      a0, a1\n"
"flow_slot:\n"
"       addi    a0, a0, 0\n"
"       addi    a0, a0, 10\n"
"       ret\n"
"flow_far:\n"
"       addi    a0, a0, 20\n"
"       ret\n"
"\n"
"       .balign 256\n"
"       .globl  loop_fn\n"
"loop_fn:                        /* a0 = n, a1 = base; returns the sum */\n"
"       li      t1, 0            /* sum */\n"
"       li      t2, 0            /* i */\n"
"       lla     t0, 2f\n"
"       li      t5, 0xe13        /* addi t3, zero, 0 */\n"
"1:     add     t4, t2, a1\n"
"       slli    t4, t4, 20\n"
"       or      t4, t4, t5\n"
"       sw      t4, 0(t0)\n"
"       fence.i\n"
"       li      t6, 2\n"
"2:     addi    t3, zero, 0      /* patched every iteration */\n"
"       add     t1, t1, t3\n"
"       addi    t6, t6, -1\n"
"       bnez    t6, 2b           /* once more, entering at the patched insn */\n"
"       addi    t2, t2, 1\n"
"       bltu    t2, a0, 1b\n"
"       mv      a0, t1\n"
"       ret\n"
"       .option pop\n"
"       .balign 4096\n"
"       .popsection\n");

typedef uint64_t (*patch_fn)(uint64_t insn, uint64_t arg);

/* jal rd, off (Unprivileged ISA 2.5.1). */
static uint32_t enc_jal(int rd, int64_t off)
{
        uint32_t imm = (uint32_t)off;
        return (((imm >> 20) & 1) << 31) | (((imm >> 1) & 0x3ff) << 21)
                | (((imm >> 11) & 1) << 20) | (((imm >> 12) & 0xff) << 12)
                | ((uint32_t)rd << 7) | 0x6f;
}

static int64_t k_of(uint64_t round)
{
        return sext((round * 1237 + 2040) & 0xfff, 12);
}

int main(void)
{
        patch_fn sp = sp_fn, flow = flow_fn;
        smc_fn sp_run = sp_slot, flow_run = flow_slot;
        patch_fn loop = loop_fn;
        uint32_t jal_far = enc_jal(REG_ZERO, CODE(flow_far) - CODE(flow_slot));

        smc_start();

        /* Hot, and translated, before the first patch. */
        warm("sp_run initial", 0, sp_run, 5, 6);
        warm("flow_run initial", 0, flow_run, 5, 15);
        for (uint64_t i = 0; i < 4; i++)        /* 2b: entered 4 * 20 times */
                smc_expect("loop_fn initial", i, loop(20, 100 * i), 20 * 19 + 2 * 20 * 100 * i);
        for (uint64_t i = 0; i < WARM_CALLS; i++) {     /* the patching functions too */
                smc_expect("sp_fn initial", i, sp(enc_addi(REG_A0, REG_A0, i), 7), 7 + i);
                smc_expect("flow_fn initial", i, flow(enc_addi(REG_A0, REG_A0, i), 7), 17 + i);
        }
        settle(SETTLE_EXITS);

        uint64_t loop_patches = 0;
        for (uint64_t r = 1; r <= ROUNDS; r++) {
                smc_checkpoint();
                int64_t k = k_of(r);
                /* patch and run in one block, then enter at the patched insn */
                smc_expect("sp_fn", r, sp(enc_addi(REG_A0, REG_A0, k), r), r + k);
                if (r % 40 == 20)
                        warm("sp_run", r, sp_run, r + 1, r + 1 + k);
                smc_run("sp_run", r, sp_run, r + 1, r + 1 + k, 8);

                /* fall through or jump away, alternately */
                uint64_t via_far = r & 1;
                uint32_t insn = via_far ? jal_far : enc_addi(REG_A0, REG_A0, k);
                uint64_t want = via_far ? r + 20 : r + k + 10;
                smc_expect("flow_fn", r, flow(insn, r), want);
                want = via_far ? 2 * r + 20 : 2 * r + k + 10;
                if (r % 40 == 20) {
                        warm("flow_run", r, flow_run, 2 * r, want);
                        settle(SETTLE_EXITS);
                }
                smc_run("flow_run", r, flow_run, 2 * r, want, 8);

                /* a loop that patches its own body every iteration */
                if (r % 4 == 0) {
                        uint64_t n = 16 + r % 8, base = (r * 13) % 1000;
                        smc_expect("loop_fn", r, loop(n, base), n * (n - 1) + 2 * n * base);
                        loop_patches += n;
                }
        }
        print_str(TEST_NAME ": ");
        print_dec(ROUNDS);
        print_str(" same-block patches of sp_fn and flow_fn, ");
        print_dec(loop_patches);
        print_str(" by loop_fn, all seen\n");
        return 0;
}
