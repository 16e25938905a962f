/* Console, finisher, CHECK failure reporting and the C side of trap
 * handling for the ISA test programs.
 *
 * Trap policy (handle_mtrap / handle_strap):
 *  1. a test-installed hook (mtrap_hook / strap_hook) gets the trap first;
 *  2. the EBREAK at lower_return (or strap_forward) ends a run_in_mode() call;
 *  3. while trap_expect > 0 the trap is recorded (trap_cause, trap_epc,
 *     trap_tval, trap_from = privilege it came from, trap_handled_in) and
 *     execution resumes at trap_resume if set, at the caller (ra) for
 *     instruction-fetch faults, else after the faulting instruction;
 *  4. anything else is reported and the test fails with EXIT_TRAP.
 */
#include "test.h"

#ifndef TEST_NAME
#define TEST_NAME "test"
#endif

volatile uint64_t trap_expect, trap_count, trap_cause, trap_epc, trap_tval,
        trap_from, trap_handled_in, trap_resume;
volatile trap_hook_fn mtrap_hook, strap_hook;
static volatile int mtrap_depth, strap_depth;

void uart_putc(char c)
{
        volatile uint8_t *uart = (volatile uint8_t *)UART0;
        while (!(uart[UART_LSR] & UART_LSR_THRE))
                ;
        uart[UART_THR] = (uint8_t)c;
}

void print_str(const char *s)
{
        while (*s)
                uart_putc(*s++);
}

void print_hex(uint64_t v)
{
        print_str("0x");
        for (int i = 60; i >= 0; i -= 4)
                uart_putc("0123456789abcdef"[(v >> i) & 0xf]);
}

void print_dec(uint64_t v)
{
        char buf[24];
        int n = 0;
        do {
                buf[n++] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        while (n)
                uart_putc(buf[--n]);
}

void test_exit(uint64_t code)
{
        print_str(TEST_NAME);
        if (code == 0) {
                print_str(": PASS\n");
                mmio_write32(FINISHER, FINISHER_PASS);
        } else {
                print_str(": FAIL (exit ");
                print_dec(code);
                print_str(")\n");
                mmio_write32(FINISHER, (uint32_t)(code << 16) | FINISHER_FAIL);
        }
        for (;;)
                asm volatile ("wfi");
}

void check_fail(const char *file, int line, const char *what,
                uint64_t got, uint64_t expected)
{
        print_str("CHECK failed at ");
        print_str(file);
        print_str(":");
        print_dec(line);
        print_str(": ");
        print_str(what);
        print_str(" = ");
        print_hex(got);
        print_str(", expected ");
        print_hex(expected);
        print_str("\n");
        test_exit(EXIT_CHECK);
}

/* Called from the assembly CHECK macro. */
void check_fail_asm(uint64_t line, uint64_t got, uint64_t expected)
{
        check_fail(TEST_NAME ".S", (int)line, "register", got, expected);
}

void trap_arm_n(uint64_t n)
{
        trap_count = 0;
        trap_cause = trap_epc = trap_tval = trap_from = trap_handled_in = -1;
        trap_resume = 0;
        trap_expect = n;
}

void trap_arm(void)
{
        trap_arm_n(1);
}

static int is_fetch_fault(uint64_t cause)
{
        return cause == CAUSE_MISALIGNED_FETCH || cause == CAUSE_FETCH_ACCESS
                || cause == CAUSE_FETCH_PAGE_FAULT;
}

/* Record an expected trap and choose where to resume. */
static void record_trap(struct trap_frame *tf, uint64_t from, uint64_t in)
{
        trap_expect--;
        trap_count++;
        trap_cause = tf->cause;
        trap_epc = tf->epc;
        trap_tval = tf->tval;
        trap_from = from;
        trap_handled_in = in;
        if (trap_resume) {
                tf->epc = trap_resume;
                trap_resume = 0;
        } else if (is_fetch_fault(tf->cause)) {
                tf->epc = tf->x[1];
        } else if (!(tf->cause >> 63)) {
                /* 16-bit parcel ending in 0b11 starts a 32-bit instruction */
                uint16_t parcel = *(volatile uint16_t *)tf->epc;
                tf->epc += (parcel & 3) == 3 ? 4 : 2;
        }
}

static void __attribute__((noreturn)) report_trap(const char *mode,
                struct trap_frame *tf)
{
        print_str("unexpected trap in ");
        print_str(mode);
        print_str(": cause ");
        print_hex(tf->cause);
        print_str(" epc ");
        print_hex(tf->epc);
        print_str(" tval ");
        print_hex(tf->tval);
        print_str("\n");
        test_exit(EXIT_TRAP);
}

extern char run_in_mode_resume[], lower_return_trap[], strap_forward_trap[];
extern char __strap_stack_top[];
void __attribute__((noreturn)) strap_forward(uint64_t a0);

void handle_mtrap(struct trap_frame *tf)
{
        if (mtrap_depth++) {
                print_str("nested M-mode trap\n");
                test_exit(EXIT_NESTED);
        }
        uint64_t from = (tf->status & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT;
        if (mtrap_hook && mtrap_hook(tf)) {
                /* handled by the test */
        } else if (tf->cause == CAUSE_BREAKPOINT
                   && (tf->epc == (uint64_t)lower_return_trap
                       || tf->epc == (uint64_t)strap_forward_trap)) {
                tf->epc = (uint64_t)run_in_mode_resume;
                tf->status |= MSTATUS_MPP;              /* back to M */
                strap_depth = 0;   /* an S handler may have been abandoned */
                csr_write(sscratch, (uint64_t)__strap_stack_top);
        } else if (trap_expect) {
                record_trap(tf, from, PRV_M);
        } else {
                report_trap("M-mode", tf);
        }
        mtrap_depth--;
}

void handle_strap(struct trap_frame *tf)
{
        if (strap_depth++) {
                print_str("nested S-mode trap\n");
                test_exit(EXIT_NESTED);
        }
        uint64_t from = (tf->status & MSTATUS_SPP) ? PRV_S : PRV_U;
        if (strap_hook && strap_hook(tf)) {
                /* handled by the test */
        } else if (tf->cause == CAUSE_BREAKPOINT
                   && tf->epc == (uint64_t)lower_return_trap) {
                strap_forward(tf->x[10]);       /* M abandons this handler */
        } else if (trap_expect) {
                record_trap(tf, from, PRV_S);
        } else {
                report_trap("S-mode", tf);
        }
        strap_depth--;
}
