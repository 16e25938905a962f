/* Shared definitions for the bare-metal ISA test programs (C and assembly).
 *
 * Contract (QEMU virt, -bios none): the program starts in M-mode at
 * 0x80000000; it prints on the ns16550a at UART0 and reports its result
 * through the SiFive test finisher: 0x5555 = pass (exit status 0),
 * (code << 16) | 0x3333 = fail with exit status `code`.
 *
 * Exit codes used by the runtime:
 *   1  a CHECK failed (console says where, what was read, what was expected)
 *   2  an unexpected trap (console shows the cause/epc/tval)
 *   3  a trap inside a trap handler
 *   other nonzero: returned by main()
 */
#ifndef ISA_TEST_H
#define ISA_TEST_H

#define UART0           0x10000000
#define UART_THR        0
#define UART_LSR        5
#define UART_LSR_THRE   0x20
#define FINISHER        0x100000
#define FINISHER_PASS   0x5555
#define FINISHER_FAIL   0x3333
#define CLINT           0x2000000
#define CLINT_MSIP      (CLINT + 0x0)
#define CLINT_MTIMECMP  (CLINT + 0x4000)
#define CLINT_MTIME     (CLINT + 0xbff8)
#define PLIC            0xc000000

#define EXIT_CHECK      1
#define EXIT_TRAP       2
#define EXIT_NESTED     3

/* Privilege levels (Privileged ISA 1.12, 1.2). */
#define PRV_U 0
#define PRV_S 1
#define PRV_M 3

/* mstatus fields (3.1.6). */
#define MSTATUS_SIE        (1 << 1)
#define MSTATUS_MIE        (1 << 3)
#define MSTATUS_SPIE       (1 << 5)
#define MSTATUS_MPIE       (1 << 7)
#define MSTATUS_SPP        (1 << 8)
#define MSTATUS_MPP_SHIFT  11
#define MSTATUS_MPP        (3 << 11)
#define MSTATUS_FS_SHIFT   13
#define MSTATUS_FS         (3 << 13)
#define MSTATUS_FS_INITIAL (1 << 13)
#define MSTATUS_FS_CLEAN   (2 << 13)
#define MSTATUS_FS_DIRTY   (3 << 13)
#define MSTATUS_MPRV       (1 << 17)
#define MSTATUS_SUM        (1 << 18)
#define MSTATUS_MXR        (1 << 19)
#define MSTATUS_TVM        (1 << 20)
#define MSTATUS_TW         (1 << 21)
#define MSTATUS_TSR        (1 << 22)

/* Exception causes (3.1.15). */
#define CAUSE_MISALIGNED_FETCH   0
#define CAUSE_FETCH_ACCESS       1
#define CAUSE_ILLEGAL            2
#define CAUSE_BREAKPOINT         3
#define CAUSE_MISALIGNED_LOAD    4
#define CAUSE_LOAD_ACCESS        5
#define CAUSE_MISALIGNED_STORE   6
#define CAUSE_STORE_ACCESS       7
#define CAUSE_ECALL_U            8
#define CAUSE_ECALL_S            9
#define CAUSE_ECALL_M            11
#define CAUSE_FETCH_PAGE_FAULT   12
#define CAUSE_LOAD_PAGE_FAULT    13
#define CAUSE_STORE_PAGE_FAULT   15

/* Interrupt numbers (3.1.9); mcause = (1 << 63) | number. */
#define IRQ_S_SOFT   1
#define IRQ_M_SOFT   3
#define IRQ_S_TIMER  5
#define IRQ_M_TIMER  7
#define IRQ_S_EXT    9
#define IRQ_M_EXT    11

/* struct trap_frame layout, in 8-byte words: x0..x31 then these. */
#define TF_EPC     32
#define TF_STATUS  33
#define TF_CAUSE   34
#define TF_TVAL    35
#define TF_WORDS   36

#ifdef __ASSEMBLER__

/* CHECK(reg, expected): fail with the source line unless reg == expected.
 * Clobbers t6 (so reg must not be t6); on failure jumps to check_fail_asm. */
.macro CHECK_IMPL reg, expected, line
        li      t6, \expected
        beq     \reg, t6, .Lcheck_ok\@
        mv      a1, \reg
        mv      a2, t6
        li      a0, \line
        j       check_fail_asm
.Lcheck_ok\@:
.endm
#define CHECK(reg, expected) CHECK_IMPL reg, expected, __LINE__

/* CHECK_REG(reg, reg2): fail unless the two registers are equal (t6 clobbered). */
.macro CHECK_REG_IMPL reg, reg2, line
        beq     \reg, \reg2, .Lcheck_ok\@
        mv      t6, \reg2
        mv      a1, \reg
        mv      a2, t6
        li      a0, \line
        j       check_fail_asm
.Lcheck_ok\@:
.endm
#define CHECK_REG(reg, reg2) CHECK_REG_IMPL reg, reg2, __LINE__

/* TRAP_ARM: expect exactly one trap from the next instruction(s); the
 * handler records cause/epc/tval and skips the faulting instruction.
 * TRAP_ARM and CHECK_TRAP clobber t5 and t6 only.
 * CHECK_TRAP(cause): exactly one trap happened, with that mcause.
 * LOAD_TRAP(reg, var): reg = trap_tval / trap_epc / ... */
.macro TRAP_ARM
        la      t6, trap_expect
        li      t5, 1
        sd      t5, 0(t6)
        la      t6, trap_count
        sd      zero, 0(t6)
        la      t6, trap_resume
        sd      zero, 0(t6)
.endm
.macro LOAD_TRAP reg, var
        la      \reg, \var
        ld      \reg, 0(\reg)
.endm
.macro CHECK_TRAP_IMPL cause, line
        LOAD_TRAP t5, trap_count
        CHECK_IMPL t5, 1, \line
        LOAD_TRAP t5, trap_cause
        CHECK_IMPL t5, \cause, \line
.endm
#define CHECK_TRAP(cause) CHECK_TRAP_IMPL cause, __LINE__

#else  /* C */

#include <stdint.h>

#define STR_(x) #x
#define STR(x) STR_(x)

#define csr_read(csr) ({ uint64_t v_; \
        asm volatile ("csrr %0, " STR(csr) : "=r"(v_) :: "memory"); v_; })
#define csr_write(csr, val) \
        asm volatile ("csrw " STR(csr) ", %0" :: "rK"((uint64_t)(val)) : "memory")
#define csr_set(csr, val) \
        asm volatile ("csrs " STR(csr) ", %0" :: "rK"((uint64_t)(val)) : "memory")
#define csr_clear(csr, val) \
        asm volatile ("csrc " STR(csr) ", %0" :: "rK"((uint64_t)(val)) : "memory")
#define csr_swap(csr, val) ({ uint64_t v_; \
        asm volatile ("csrrw %0, " STR(csr) ", %1" : "=r"(v_) : "rK"((uint64_t)(val)) : "memory"); v_; })

#define mmio_read32(a)      (*(volatile uint32_t *)(uintptr_t)(a))
#define mmio_write32(a, v)  (*(volatile uint32_t *)(uintptr_t)(a) = (v))
#define mmio_read64(a)      (*(volatile uint64_t *)(uintptr_t)(a))
#define mmio_write64(a, v)  (*(volatile uint64_t *)(uintptr_t)(a) = (v))

struct trap_frame {
        uint64_t x[32];          /* x[2] is the interrupted sp (read-only) */
        uint64_t epc, status, cause, tval;
};
typedef int (*trap_hook_fn)(struct trap_frame *tf);

/* Trap bookkeeping, see lib.c. */
extern volatile uint64_t trap_expect, trap_count, trap_cause, trap_epc,
        trap_tval, trap_from, trap_handled_in, trap_resume;
extern volatile trap_hook_fn mtrap_hook, strap_hook;
void trap_arm(void);
void trap_arm_n(uint64_t n);

void uart_putc(char c);
void print_str(const char *s);
void print_hex(uint64_t v);
void print_dec(uint64_t v);
void __attribute__((noreturn)) test_exit(uint64_t code);
void __attribute__((noreturn)) check_fail(const char *file, int line,
        const char *what, uint64_t got, uint64_t expected);
uint64_t run_in_mode(int priv, uint64_t (*fn)(uint64_t), uint64_t arg);
void lower_return(void);
void mtrap_entry(void);
void strap_entry(void);

#define CHECK(value, expected) do { \
        uint64_t got_ = (uint64_t)(value), exp_ = (uint64_t)(expected); \
        if (got_ != exp_) check_fail(__FILE_NAME__, __LINE__, #value, got_, exp_); \
} while (0)
/* Exactly one trap with this cause since trap_arm(). */
#define CHECK_TRAP(cause) do { CHECK(trap_count, 1); CHECK(trap_cause, cause); } while (0)

/* The instruction bits at a code address (16 or 32 bits), as mtval holds them. */
static inline uint64_t insn_at(uint64_t addr)
{
        uint64_t lo = *(volatile uint16_t *)addr;
        if ((lo & 3) != 3)
                return lo;
        return lo | ((uint64_t)*(volatile uint16_t *)(addr + 2) << 16);
}

/* Run `insn`, which must trap as an illegal instruction with tval = its bits. */
#define CHECK_ILLEGAL(insn) do { \
        uint64_t pc_; \
        trap_arm(); \
        asm volatile ("lla %0, 1f\n1: " insn : "=&r"(pc_) :: "memory"); \
        CHECK_TRAP(CAUSE_ILLEGAL); \
        CHECK(trap_epc, pc_); \
        CHECK(trap_tval, insn_at(pc_)); \
} while (0)

/* Run `insn`, which must not trap. */
#define CHECK_NO_TRAP(insn) do { \
        trap_arm(); \
        asm volatile (insn ::: "memory"); \
        CHECK(trap_count, 0); \
        trap_expect = 0; \
} while (0)

#endif /* __ASSEMBLER__ */
#endif /* ISA_TEST_H */
