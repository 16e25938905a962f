/*
 * fpref: reference results for RISC-V F/D instructions, one per input line.
 *
 * Built with riscv64-linux-gnu-gcc -static -march=rv64gc and run under
 * qemu-riscv64 (or on real hardware) by tests/cpu/test_fpu.py.
 *
 * Input lines:  <insn hex> <frm> <a hex> <b hex> <c hex>
 *   insn is a full 32-bit encoding that must use rs1 = 10, rs2 = 11,
 *   rs3 = 12 and rd = 13.  Before it runs, f10/f11/f12 and x10/x11/x12 hold
 *   the raw 64-bit a, b, c (so improperly NaN-boxed singles can be tested),
 *   f13 and x13 hold SENTINEL, frm = <frm> and fflags = 0.
 * Output lines: <f13 hex> <x13 hex> <fflags hex>, or "ILL" when the
 *   instruction raised SIGILL (illegal instruction).
 *
 * The instruction is executed for real: each distinct encoding is written
 * once into an executable page, followed by "jalr x0, 0(t0)", and called
 * with "jalr t0".  SIGILL returns through siglongjmp.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define SENTINEL 0x5a5a5a5a5a5a5a5aull
#define SLOTS 8192                 /* 8 bytes each: insn, return jump */
#define JALR_X0_T0 0x00028067u

static sigjmp_buf on_ill;
static uint32_t *code;
static uint32_t slot_insn[SLOTS];
static int slot_used[SLOTS];

static void handle_sigill(int sig)
{
    (void)sig;
    siglongjmp(on_ill, 1);
}

/* Address of code that executes insn and returns through t0.  A direct-
 * mapped cache of encodings: rewriting code makes QEMU retranslate, so each
 * encoding is written once unless another one evicts it. */
static uint32_t *slot_for(uint32_t insn)
{
    unsigned h = (insn * 2654435761u) % SLOTS;
    if (!slot_used[h] || slot_insn[h] != insn) {
        slot_used[h] = 1;
        slot_insn[h] = insn;
        code[2 * h] = insn;
        code[2 * h + 1] = JALR_X0_T0;
        __asm__ volatile("fence.i" ::: "memory");
    }
    return &code[2 * h];
}

int main(void)
{
    static char outbuf[1 << 16];
    unsigned insn, frm;
    unsigned long long a, b, c;
    struct sigaction sa;

    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    code = mmap(NULL, SLOTS * 8, PROT_READ | PROT_WRITE | PROT_EXEC,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handle_sigill;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGILL, &sa, NULL);

    while (scanf("%x %u %llx %llx %llx", &insn, &frm, &a, &b, &c) == 5) {
        uint32_t *fn = slot_for(insn);
        unsigned long long fout, xout, flags;
        if (sigsetjmp(on_ill, 1)) {
            printf("ILL\n");
            continue;
        }
        __asm__ volatile(
            "fmv.d.x f10, %[a]\n\t"
            "fmv.d.x f11, %[b]\n\t"
            "fmv.d.x f12, %[c]\n\t"
            "fmv.d.x f13, %[s]\n\t"
            "mv a0, %[a]\n\t"
            "mv a1, %[b]\n\t"
            "mv a2, %[c]\n\t"
            "mv a3, %[s]\n\t"
            "csrw frm, %[frm]\n\t"
            "csrw fflags, zero\n\t"
            "jalr t0, 0(%[fn])\n\t"
            "csrr %[fl], fflags\n\t"
            "fmv.x.d %[fo], f13\n\t"
            "mv %[xo], a3\n\t"
            : [fo] "=&r"(fout), [xo] "=&r"(xout), [fl] "=&r"(flags)
            : [a] "r"(a), [b] "r"(b), [c] "r"(c), [s] "r"(SENTINEL),
              [frm] "r"((unsigned long long)frm), [fn] "r"(fn)
            : "t0", "a0", "a1", "a2", "a3", "f10", "f11", "f12", "f13",
              "memory");
        printf("%016llx %016llx %llx\n", fout, xout, flags);
    }
    fflush(stdout);
    return 0;
}
