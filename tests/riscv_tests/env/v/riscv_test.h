// vmkit's "v" environment for riscv-tests: the user-level tests (rv64u*) run
// in U-mode under Sv39 paging, at virtual address = physical - DRAM_BASE, as
// in the standard environment (which maps the pages on demand from a C page
// fault handler; this one maps them all up front).  Written for vmkit; the
// macros the tests see are those of ../p/riscv_test.h except RVTEST_CODE_BEGIN.
//
// Address space (Sv39, three levels):
//
//   VA 0x0000_1000 .. 2 MiB   user: 4 KiB pages, U|R|W|X with A and D clear
//                             (the hart sets them), mapping the test's
//                             .text/.data/.bss (rvt_user_begin .. _end);
//                             page 0 (this code) is not mapped
//   VA 0x8000_0000 .. +1 GiB  kernel: one gigapage, identity, not U
//
// Traps: ECALL from U and page faults are delegated to a tiny S-mode kernel
// (rvt_s_trap), which passes a U ECALL (RVTEST_PASS/RVTEST_FAIL: the verdict
// is in TESTNUM) on to M-mode with an ECALL of its own, and forwards anything
// else from rvt_s_unexpected so that M-mode reports it.  Every other trap goes
// straight to M-mode and is reported as unexpected (../report.S).

#ifndef VMKIT_RVT_ENV_V_H
#define VMKIT_RVT_ENV_V_H

#include "../p/riscv_test.h"

#define RVT_PTE_TABLE(pa_reg, out_reg)                                  \
        srli out_reg, pa_reg, RISCV_PGSHIFT;                            \
        slli out_reg, out_reg, PTE_PPN_SHIFT;                           \
        ori out_reg, out_reg, PTE_V

#undef RVTEST_CODE_BEGIN
#define RVTEST_CODE_BEGIN                                               \
        .pushsection .rvt.pt, "aw", @progbits;                          \
        .align 12;                                                      \
rvt_pt_root: .zero 4096;       /* VPN[2] */                             \
rvt_pt_mid:  .zero 4096;       /* VPN[1] for VA 0 .. 1 GiB */           \
rvt_pt_leaf: .zero 4096;       /* VPN[0] for VA 0 .. 2 MiB */           \
        .popsection;                                                    \
                                                                        \
        .section .text.init, "ax", @progbits;                           \
        .option push;                                                   \
        .option norvc;                                                  \
        .align 6;                                                       \
        .globl _start;                                                  \
_start:                                                                 \
        j rvt_reset;                                                    \
                                                                        \
        /* M-mode trap vector */                                        \
        .align 2;                                                       \
trap_vector:                                                            \
        csrr t5, mcause;                                                \
        li t6, CAUSE_SUPERVISOR_ECALL;                                  \
        bne t5, t6, rvt_m_other;                                        \
        csrr t5, mepc;                                                  \
        la t6, rvt_s_unexpected;                                        \
        beq t5, t6, rvt_strap;                                          \
        j rvt_report_ecall;                                             \
rvt_m_other:                                                            \
        li t6, CAUSE_USER_ECALL;                                        \
        beq t5, t6, rvt_ecall;                                          \
        li t6, CAUSE_MACHINE_ECALL;                                     \
        beq t5, t6, rvt_ecall;                                          \
        j rvt_report_trap;                                              \
rvt_ecall:                                                              \
        j rvt_report_ecall;                                             \
rvt_strap:                                                              \
        j rvt_report_strap;                                             \
                                                                        \
        /* S-mode kernel: stvec */                                      \
        .align 2;                                                       \
rvt_s_trap:                                                             \
        csrr t5, scause;                                                \
        li t6, CAUSE_USER_ECALL;                                        \
        bne t5, t6, rvt_s_unexpected;                                   \
        ecall;                         /* the verdict, to M-mode */     \
rvt_s_unexpected:                                                       \
        ecall;                         /* M-mode reports scause */      \
                                                                        \
rvt_reset:                                                              \
        RVT_INIT_XREG;                                                  \
        RVT_INIT_SATP_PMP;                                              \
        li TESTNUM, 0;                                                  \
        la t0, trap_vector;                                             \
        csrw mtvec, t0;                                                 \
                                                                        \
        /* kernel: root[2] = gigapage at DRAM_BASE, identity */         \
        la a0, rvt_pt_root;                                             \
        li t0, (DRAM_BASE >> RISCV_PGSHIFT << PTE_PPN_SHIFT) |          \
               PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D;           \
        sd t0, 2*8(a0);                                                 \
        /* user: root[0] -> mid, mid[0] -> leaf */                      \
        la a1, rvt_pt_mid;                                              \
        RVT_PTE_TABLE(a1, t0);                                          \
        sd t0, 0(a0);                                                   \
        la a2, rvt_pt_leaf;                                             \
        RVT_PTE_TABLE(a2, t0);                                          \
        sd t0, 0(a1);                                                   \
        /* leaf[(pa - DRAM_BASE) >> 12] = pa, U|R|W|X */                \
        la t0, rvt_user_begin;                                          \
        la t1, rvt_user_end;                                            \
        li t3, DRAM_BASE;                                               \
rvt_map_page:                                                           \
        sub t2, t0, t3;                                                 \
        srli t2, t2, RISCV_PGSHIFT;                                     \
        slli t2, t2, 3;                                                 \
        add t2, t2, a2;                                                 \
        srli t4, t0, RISCV_PGSHIFT;                                     \
        slli t4, t4, PTE_PPN_SHIFT;                                     \
        ori t4, t4, PTE_V | PTE_R | PTE_W | PTE_X | PTE_U;              \
        sd t4, 0(t2);                                                   \
        li t2, RISCV_PGSIZE;                                            \
        add t0, t0, t2;                                                 \
        bltu t0, t1, rvt_map_page;                                      \
                                                                        \
        srli t0, a0, RISCV_PGSHIFT;                                     \
        li t1, (SATP_MODE & ~(SATP_MODE << 1)) * SATP_MODE_SV39;        \
        or t0, t0, t1;                                                  \
        csrw satp, t0;                                                  \
        sfence.vma;                                                     \
                                                                        \
        la t0, rvt_s_trap;                                              \
        csrw stvec, t0;                                                 \
        li t0, (1 << CAUSE_USER_ECALL) |                                \
               (1 << CAUSE_FETCH_PAGE_FAULT) |                          \
               (1 << CAUSE_LOAD_PAGE_FAULT) |                           \
               (1 << CAUSE_STORE_PAGE_FAULT);                           \
        csrw medeleg, t0;                                               \
        csrwi mstatus, 0;              /* MPP = U */                    \
        init;                                                           \
        la t0, rvt_test_begin;                                          \
        sub t0, t0, t3;                                                 \
        csrw mepc, t0;                                                  \
        li a0, 0; li a1, 0; li a2, 0;                                   \
        li t0, 0; li t1, 0; li t2, 0; li t3, 0; li t4, 0;               \
        mret;                                                           \
        .option pop;                                                    \
                                                                        \
        .section .text, "ax", @progbits;                                \
rvt_test_begin:

#endif
