/* Helpers for the self-modifying-code programs (tests/isa/smc_*.c and
 * tests/isa/virtio/smc_virtio_blk.c): instruction encoders, patching with
 * FENCE.I (Unprivileged ISA 20191213, 3 "Zifencei"), result checks that say
 * which round failed, and warm() and settle() for the translating tier.
 *
 * Why warm() and settle(): vmkit translates hot code on a compile thread
 * and installs translations only when the hart stops (an MMIO access, a
 * budget exit).  A program that patched code right after running it 100
 * times would, with the default threshold, often patch it before its
 * translation is even installed, and so never test stale code.  So the
 * programs start with smc_start(), then warm() every function (100 calls:
 * hot), then settle(): UART register reads, each an MMIO exit where
 * finished translations are installed, taking tens of milliseconds of
 * host time in all; the next calls run the translations.  Each round of
 * patches begins with smc_checkpoint(), a few more exits, so that
 * translations finished later are installed without waiting for the next
 * settle().  None of them prints anything, so QEMU and vmkit still print
 * the same.  How long is long enough depends on the host: the values here
 * caught a tier that keeps stale code at the first patch in tests on a
 * 2-CPU machine, with room to spare.
 */
#ifndef SMC_H
#define SMC_H

#include "test.h"

#define REG_ZERO 0
#define REG_A0   10

/* RV32I base formats (Unprivileged ISA 2.2). */
static inline uint32_t enc_i(uint32_t opcode, uint32_t f3, int rd, int rs1, int64_t imm)
{
        return ((uint32_t)(imm & 0xfff) << 20) | ((uint32_t)rs1 << 15) | (f3 << 12)
                | ((uint32_t)rd << 7) | opcode;
}
static inline uint32_t enc_addi(int rd, int rs1, int64_t imm) { return enc_i(0x13, 0, rd, rs1, imm); }
static inline uint32_t enc_xori(int rd, int rs1, int64_t imm) { return enc_i(0x13, 4, rd, rs1, imm); }

/* RVC (Unprivileged ISA 16.5): c.li rd, imm6. */
static inline uint16_t enc_c_li(int rd, int64_t imm)
{
        return (uint16_t)(0x4001 | (((imm >> 5) & 1) << 12) | (rd << 7) | ((imm & 0x1f) << 2));
}

/* Sign-extend the low `bits` bits. */
static inline int64_t sext(uint64_t v, int bits)
{
        return (int64_t)(v << (64 - bits)) >> (64 - bits);
}

static inline void fence_i(void)
{
        asm volatile ("fence.i" ::: "memory");
}

static inline void patch32(volatile void *at, uint32_t insn)
{
        *(volatile uint32_t *)at = insn;
        fence_i();
}

static inline void patch16(volatile void *at, uint16_t insn)
{
        *(volatile uint16_t *)at = insn;
        fence_i();
}

typedef uint64_t (*smc_fn)(uint64_t);

/* Code from top-level asm is declared as functions, never as char arrays:
 * GCC treats a call through a pointer to a data object as unreachable and
 * drops the code around it.  CODE() gives the bytes to patch. */
#define CODE(fn) ((char *)(uintptr_t)(fn))

/* The function at a virtual address.  The empty asm hides the constant:
 * GCC turns an inlined call through a constant that is not a function's
 * address into __builtin_unreachable(). */
static inline smc_fn fn_at(uint64_t va)
{
        asm ("" : "+r"(va));
        return (smc_fn)va;
}

/* Fail unless got == expected, naming the check and the round. */
static inline void smc_expect(const char *what, uint64_t round, uint64_t got, uint64_t expected)
{
        if (got == expected)
                return;
        print_str(TEST_NAME ": ");
        print_str(what);
        print_str(" round ");
        print_dec(round);
        print_str(": got ");
        print_hex(got);
        print_str(", expected ");
        print_hex(expected);
        print_str(" (stale code?)\n");
        test_exit(EXIT_CHECK);
}

/* Call fn(arg) `calls` times, checking each result.  noipa: one copy of
 * this loop serves every call site, so smc_start() gets it translated. */
static __attribute__((noipa, unused)) void smc_run(const char *what, uint64_t round, smc_fn fn,
                                                   uint64_t arg, uint64_t expected, int calls)
{
        for (int i = 0; i < calls; i++)
                smc_expect(what, round, fn(arg), expected);
}

#define WARM_CALLS   100        /* more than the default threshold, 64 */
#ifndef SETTLE_FIRST
#define SETTLE_FIRST 12000      /* MMIO exits (~10-20 us of host time each) */
#endif
#ifndef SETTLE_EXITS
#define SETTLE_EXITS 3000
#endif

/* Call fn WARM_CALLS times, checking each result: hot enough to be translated. */
static inline void warm(const char *what, uint64_t round, smc_fn fn, uint64_t arg,
                        uint64_t expected)
{
        smc_run(what, round, fn, arg, expected, WARM_CALLS);
}

/* `exits` MMIO exits (rounded up to 4) and nothing else: time for the
 * compile thread (see top).  Each load is followed by a CSR read, which
 * vmkit leaves to the interpreter, and the loop starts with one: so no
 * translation is entered here, and --jit check (which compares every
 * translated run with the interpreter, ~0.3 ms each) stays cheap.
 * sscratch is readable in M and S mode. */
static __attribute__((noipa, unused)) void settle(int exits)
{
        uint64_t n = (uint64_t)(exits + 3) / 4, t;
        if (n == 0)
                return;
        asm volatile ("1:     csrr    %1, sscratch\n"
                      "       lbu     %1, 0(%2)\n"
                      "       csrr    %1, sscratch\n"
                      "       lbu     %1, 0(%2)\n"
                      "       csrr    %1, sscratch\n"
                      "       lbu     %1, 0(%2)\n"
                      "       csrr    %1, sscratch\n"
                      "       lbu     %1, 0(%2)\n"
                      "       csrr    %1, sscratch\n"
                      "       addi    %0, %0, -1\n"
                      "       bnez    %0, 1b\n"
                      : "+r"(n), "=&r"(t) : "r"(UART0 + UART_LSR) : "memory");
}

/* A few MMIO exits, once a round: vmkit installs the translations finished
 * meanwhile there, rather than at the next settle(). */
static inline void smc_checkpoint(void)
{
        settle(4);
}

static __attribute__((noipa, unused)) uint64_t smc_warmup_fn(uint64_t x)
{
        return x + 1;
}

/* First of all: get the tier going (the compile thread started, smc_run's
 * loop translated), so that the settle() after warming the code under test
 * need only wait for that code's own translations. */
static inline void smc_start(void)
{
        warm("warm-up", 0, smc_warmup_fn, 1, 2);
        settle(SETTLE_FIRST);
}

#endif /* SMC_H */
