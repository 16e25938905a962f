// How a riscv-tests program ends under vmkit's environments: print a verdict
// on the ns16550a UART and stop the board through the SiFive test finisher.
//
//   pass:  "PASS"                      finisher <- 0x5555
//   fail:  "FAIL: test N ..."          finisher <- (N << 16) | 0x3333
//
// N is the riscv-tests test number (TESTNUM, the gp register; RVTEST_FAIL
// leaves (N << 1) | 1 in it).  A code of 0 would read as success under QEMU,
// so 0 and anything above 255 (the process exit status keeps 8 bits) become
// 255; the console line always has the full value.
//
// Everything here runs in M-mode with translation off and never returns, so
// it may clobber any register.  The trap vectors in p/riscv_test.h and
// v/riscv_test.h jump here:
//
//   rvt_report_ecall   an ECALL reached M-mode: RVTEST_PASS (gp == 1) or
//                      RVTEST_FAIL (gp odd); anything else is a stray ECALL
//   rvt_report_trap    an M-mode trap the test did not expect
//   rvt_report_strap   an S-mode trap the v environment's kernel did not expect
//                      (it forwarded it here with an ECALL)

#include "encoding.h"

#define TESTNUM gp

        .section .text.rvt, "ax", @progbits
        .option norvc
        .align 2

        .globl rvt_report_ecall
rvt_report_ecall:
        li t0, MSTATUS_MPRV             // our loads and stores are physical
        csrc mstatus, t0
        li t0, 1
        beq TESTNUM, t0, rvt_pass
        andi t0, TESTNUM, 1
        beqz t0, rvt_stray_ecall
        srli s0, TESTNUM, 1
        la a0, rvt_str_fail_test
        jal rvt_puts
        mv a0, s0
        jal rvt_putdec
        la a0, rvt_str_newline
        jal rvt_puts
        mv a0, s0
        j rvt_exit_fail

rvt_pass:
        la a0, rvt_str_pass
        jal rvt_puts
        li t0, RVT_TEST_FINISHER
        li t1, RVT_FINISHER_PASS
        sw t1, 0(t0)
1:      j 1b

rvt_stray_ecall:
        csrr s1, mcause
        csrr s2, mepc
        la a0, rvt_str_stray
        jal rvt_puts
        mv a0, s1
        jal rvt_puthex
        la a0, rvt_str_mepc
        jal rvt_puts
        mv a0, s2
        jal rvt_puthex
        j rvt_fail_in_test

        .globl rvt_report_trap
rvt_report_trap:
        li t0, MSTATUS_MPRV
        csrc mstatus, t0
        csrr s1, mcause
        csrr s2, mepc
        csrr s3, mtval
        la a0, rvt_str_trap
        jal rvt_puts
        j rvt_trap_csrs

        .globl rvt_report_strap
rvt_report_strap:
        li t0, MSTATUS_MPRV
        csrc mstatus, t0
        csrr s1, scause
        csrr s2, sepc
        csrr s3, stval
        la a0, rvt_str_strap
        jal rvt_puts

rvt_trap_csrs:                          // s1 = cause, s2 = epc, s3 = tval
        mv a0, s1
        jal rvt_puthex
        la a0, rvt_str_epc
        jal rvt_puts
        mv a0, s2
        jal rvt_puthex
        la a0, rvt_str_tval
        jal rvt_puts
        mv a0, s3
        jal rvt_puthex

rvt_fail_in_test:                       // " in test N\n", exit with N = gp
        la a0, rvt_str_in_test
        jal rvt_puts
        mv a0, TESTNUM
        jal rvt_putdec
        la a0, rvt_str_newline
        jal rvt_puts
        mv a0, TESTNUM

// a0 = failure code
rvt_exit_fail:
        li t0, 255
        beqz a0, 1f
        bleu a0, t0, 2f
1:      mv a0, t0
2:      slli a0, a0, 16
        li t1, RVT_FINISHER_FAIL
        or a0, a0, t1
        li t0, RVT_TEST_FINISHER
        sw a0, 0(t0)
3:      j 3b

// putc(a0): busy-wait for the transmitter, then send.  Uses t0, t1.
rvt_putc:
        li t0, RVT_UART0
1:      lbu t1, 5(t0)                   // LSR
        andi t1, t1, 0x20               // THRE
        beqz t1, 1b
        sb a0, 0(t0)                    // THR
        ret

// puts(a0 = NUL-terminated string).  Uses t0-t2, t6.
rvt_puts:
        mv t6, ra
        mv t2, a0
1:      lbu a0, 0(t2)
        beqz a0, 2f
        jal rvt_putc
        addi t2, t2, 1
        j 1b
2:      jr t6

// puthex(a0): "0x" and 16 hex digits.  Uses t0-t3, t6.
rvt_puthex:
        mv t6, ra
        mv t2, a0
        li a0, '0'
        jal rvt_putc
        li a0, 'x'
        jal rvt_putc
        li t3, 60
1:      srl a0, t2, t3
        andi a0, a0, 0xf
        li t0, 10
        bltu a0, t0, 2f
        addi a0, a0, 'a' - '0' - 10
2:      addi a0, a0, '0'
        jal rvt_putc
        addi t3, t3, -4
        bgez t3, 1b
        jr t6

// putdec(a0): unsigned decimal.  Uses t0-t4, t6.
rvt_putdec:
        mv t6, ra
        mv t2, a0
        li t3, 1                        // largest power of ten <= value
        li t4, 10
        divu t0, t2, t4
1:      bgtu t3, t0, 2f
        mul t3, t3, t4
        j 1b
2:      divu a0, t2, t3
        remu t2, t2, t3
        addi a0, a0, '0'
        jal rvt_putc
        li t4, 10
        divu t3, t3, t4
        bnez t3, 2b
        jr t6

        .section .rodata.rvt, "a", @progbits
rvt_str_pass:       .asciz "PASS\n"
rvt_str_fail_test:  .asciz "FAIL: test "
rvt_str_stray:      .asciz "FAIL: ECALL without RVTEST_PASS/RVTEST_FAIL: mcause="
rvt_str_mepc:       .asciz " mepc="
rvt_str_trap:       .asciz "FAIL: unexpected trap: mcause="
rvt_str_strap:      .asciz "FAIL: unexpected trap in the v environment's S-mode kernel: scause="
rvt_str_epc:        .asciz " epc="
rvt_str_tval:       .asciz " tval="
rvt_str_in_test:    .asciz " in test "
rvt_str_newline:    .asciz "\n"
