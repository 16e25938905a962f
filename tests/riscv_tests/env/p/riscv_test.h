// vmkit's "p" environment for riscv-tests: physical memory, one hart, the QEMU
// virt board (RAM at 0x80000000, SiFive test finisher at 0x100000, ns16550a at
// 0x10000000).  Written for vmkit from the macro contract the riscv-tests
// sources expect (RVTEST_CODE_BEGIN ... RVTEST_DATA_END, TESTNUM, pass/fail
// through ECALL, optional mtvec_handler / stvec_handler); the verdict goes
// to the test finisher instead of HTIF tohost (see ../report.S).
//
// Contract kept from the standard environment, because the tests rely on it:
// - entry at _start in M-mode; x1-x31 zero; satp 0; PMP entry 0 grants
//   everything; no delegation, no interrupts enabled;
// - mtvec points at trap_vector, which ends the test on any ECALL (gp == 1 is a
//   pass, gp == (N << 1) | 1 a failure of test N), else jumps to the test's
//   mtvec_handler if it has one; the handler may use t5 and t6 as scratch;
// - if the test defines stvec_handler, stvec points at it and page faults,
//   misaligned fetches, ECALL from U and breakpoints are delegated to S;
// - the test body starts after an MRET into the mode its RVTEST_RV64* line
//   asks for: U for RVTEST_RV64U/UF, S for RVTEST_RV64S (with SSIP and STIP
//   delegated), M for RVTEST_RV64M;
// - the tests #define sscratch, sepc, sret ... to their M-mode names after
//   RVTEST_CODE_BEGIN, so the macros expanded later (RVTEST_PASS, RVTEST_FAIL,
//   RVTEST_CODE_END, RVTEST_DATA_*) name no CSR; they use no numeric local
//   labels either, which could capture a test's "1f".

#ifndef VMKIT_RVT_ENV_P_H
#define VMKIT_RVT_ENV_P_H

#include "encoding.h"

//-----------------------------------------------------------------------
// RVTEST_RV64* select the `init` the environment runs before the test
//-----------------------------------------------------------------------

#define RVTEST_RV64U                                                    \
  .macro init;                                                          \
  .endm

#define RVTEST_RV64UF                                                   \
  .macro init;                                                          \
  RVTEST_FP_ENABLE;                                                     \
  .endm

#define RVTEST_RV64M                                                    \
  .macro init;                                                          \
  RVTEST_ENABLE_MACHINE;                                                \
  .endm

#define RVTEST_RV64S                                                    \
  .macro init;                                                          \
  RVTEST_ENABLE_SUPERVISOR;                                             \
  .endm

// init runs in M-mode just before the MRET into the test, with mstatus 0.
#define RVTEST_ENABLE_MACHINE                                           \
  li a0, MSTATUS_MPP;                                                   \
  csrs mstatus, a0

#define RVTEST_ENABLE_SUPERVISOR                                        \
  li a0, MSTATUS_MPP & (MSTATUS_MPP >> 1);                              \
  csrs mstatus, a0;                                                     \
  li a0, SIP_SSIP | SIP_STIP;                                           \
  csrs mideleg, a0

#define RVTEST_FP_ENABLE                                                \
  li a0, MSTATUS_FS & (MSTATUS_FS >> 1);                                \
  csrs mstatus, a0;                                                     \
  csrwi fcsr, 0

#define TESTNUM gp

//-----------------------------------------------------------------------
// Pieces of the reset code shared with the v environment
//-----------------------------------------------------------------------

#define RVT_INIT_XREG                                                   \
  li x1, 0;  li x2, 0;  li x3, 0;  li x4, 0;  li x5, 0;  li x6, 0;      \
  li x7, 0;  li x8, 0;  li x9, 0;  li x10, 0; li x11, 0; li x12, 0;     \
  li x13, 0; li x14, 0; li x15, 0; li x16, 0; li x17, 0; li x18, 0;     \
  li x19, 0; li x20, 0; li x21, 0; li x22, 0; li x23, 0; li x24, 0;     \
  li x25, 0; li x26, 0; li x27, 0; li x28, 0; li x29, 0; li x30, 0;     \
  li x31, 0

// satp and the PMP may be absent: a trap while setting them lands on the
// next step (mtvec points there), as in the standard environment.
#define RVT_INIT_SATP_PMP                                               \
  la t0, rvt_init_pmp;                                                  \
  csrw mtvec, t0;                                                       \
  csrwi satp, 0;                                                        \
  .align 2;                                                             \
rvt_init_pmp:                                                           \
  la t0, rvt_init_deleg;                                                \
  csrw mtvec, t0;                                                       \
  li t0, (1 << 53) - 1;           /* NAPOT: all of the address space */ \
  csrw pmpaddr0, t0;                                                    \
  li t0, PMP_NAPOT | PMP_R | PMP_W | PMP_X;                             \
  csrw pmpcfg0, t0;                                                     \
  .align 2;                                                             \
rvt_init_deleg:                                                         \
  csrwi mie, 0;                                                         \
  csrwi medeleg, 0;                                                     \
  csrwi mideleg, 0

//-----------------------------------------------------------------------
// Code begin: _start, the M-mode trap vector, reset, MRET into the test
//-----------------------------------------------------------------------

#define RVTEST_CODE_BEGIN                                               \
        .section .text.init, "ax", @progbits;                           \
        .option push;                                                   \
        .option norvc;                                                  \
        .align 6;                                                       \
        .weak stvec_handler;                                            \
        .weak mtvec_handler;                                            \
        .globl _start;                                                  \
_start:                                                                 \
        j rvt_reset;                                                    \
                                                                        \
        .align 2;                                                       \
trap_vector:                                                            \
        csrr t5, mcause;                                                \
        li t6, CAUSE_USER_ECALL;                                        \
        beq t5, t6, rvt_ecall;                                          \
        li t6, CAUSE_SUPERVISOR_ECALL;                                  \
        beq t5, t6, rvt_ecall;                                          \
        li t6, CAUSE_MACHINE_ECALL;                                     \
        beq t5, t6, rvt_ecall;                                          \
        la t5, mtvec_handler;                                           \
        beqz t5, rvt_trap;                                              \
        jr t5;                                                          \
rvt_ecall:                                                              \
        j rvt_report_ecall;                                             \
rvt_trap:                                                               \
        j rvt_report_trap;                                              \
                                                                        \
rvt_reset:                                                              \
        RVT_INIT_XREG;                                                  \
        RVT_INIT_SATP_PMP;                                              \
        li TESTNUM, 0;                                                  \
        la t0, trap_vector;                                             \
        csrw mtvec, t0;                                                 \
        la t0, stvec_handler;                                           \
        beqz t0, rvt_no_stvec;                                          \
        csrw stvec, t0;                                                 \
        li t0, (1 << CAUSE_LOAD_PAGE_FAULT) |                           \
               (1 << CAUSE_STORE_PAGE_FAULT) |                          \
               (1 << CAUSE_FETCH_PAGE_FAULT) |                          \
               (1 << CAUSE_MISALIGNED_FETCH) |                          \
               (1 << CAUSE_USER_ECALL) |                                \
               (1 << CAUSE_BREAKPOINT);                                 \
        csrw medeleg, t0;                                               \
rvt_no_stvec:                                                           \
        csrwi mstatus, 0;                                               \
        init;                                                           \
        la t0, rvt_test_begin;                                          \
        csrw mepc, t0;                                                  \
        csrr a0, mhartid;                                               \
        mret;                                                           \
        .option pop;                                                    \
                                                                        \
        .section .text, "ax", @progbits;                                \
rvt_test_begin:

#define RVTEST_CODE_END                                                 \
        unimp

//-----------------------------------------------------------------------
// Pass / fail: an ECALL with the verdict in TESTNUM; trap_vector ends the
// test (a test's stvec_handler may catch it first and pass it on with its
// own RVTEST_PASS from S-mode).
//-----------------------------------------------------------------------

#define RVTEST_PASS                                                     \
        fence;                                                          \
        li TESTNUM, 1;                                                  \
        li a7, 93;                                                      \
        li a0, 0;                                                       \
        ecall

// Test number 0 means no test ran yet: hang (beqz to itself), as upstream.
#define RVTEST_FAIL                                                     \
        fence;                                                          \
        beqz TESTNUM, .;                                                \
        sll TESTNUM, TESTNUM, 1;                                        \
        or TESTNUM, TESTNUM, 1;                                         \
        li a7, 93;                                                      \
        addi a0, TESTNUM, 0;                                            \
        ecall

//-----------------------------------------------------------------------
// Data section
//-----------------------------------------------------------------------

#define RVTEST_DATA_BEGIN                                               \
        .align 4; .global begin_signature; begin_signature:

#define RVTEST_DATA_END                                                 \
        .align 4; .global end_signature; end_signature:

#endif
