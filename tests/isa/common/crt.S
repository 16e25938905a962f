/* Bare-metal runtime for the ISA test programs: entry, trap entry/exit for
 * M and S mode, and run_in_mode() to call a function at a lower privilege.
 *
 * RISC-V Privileged ISA 1.12: 3.1.7 (mtvec), 3.3.2 (mret), 3.7 (PMP),
 * 4.1.2 (stvec), 4.3.2 (sret).
 */
#include "test.h"

#define FRAME_SIZE (TF_WORDS * 8)

        .section .text.init, "ax"
        .globl _start
_start:
        csrr    t0, mhartid
        bnez    t0, park                /* only hart 0 runs tests */
        la      sp, __stack_top
        la      t0, __mtrap_stack_top
        csrw    mscratch, t0
        la      t0, __strap_stack_top
        csrw    sscratch, t0
        la      t0, mtrap_entry
        csrw    mtvec, t0
        la      t0, strap_entry
        csrw    stvec, t0
        /* 3.7.1: with PMP implemented, S/U accesses that match no entry
         * fail.  Entry 0 = NAPOT over the whole address space, RWX, like
         * OpenSBI does for the payload. */
        li      t0, -1
        csrw    pmpaddr0, t0
        li      t0, 0x1f                /* A=NAPOT, X, W, R */
        csrw    pmpcfg0, t0
        /* FS = Initial so that FP code (and the runtime) may run. */
        li      t0, MSTATUS_FS
        csrc    mstatus, t0
        li      t0, MSTATUS_FS_INITIAL
        csrs    mstatus, t0
        /* zero .bss */
        la      t0, __bss_start
        la      t1, __bss_end
1:      bgeu    t0, t1, 2f
        sd      zero, 0(t0)
        addi    t0, t0, 8
        j       1b
2:      call    main
        call    test_exit               /* a0 = main's return value */
park:   wfi
        j       park

/* Trap entry: swap sp with the scratch register (which holds the top of
 * this mode's trap stack), save every integer register and the trap CSRs
 * into a struct trap_frame, call the C handler, then restore.  The handler
 * may change tf->epc, tf->status and any saved register except sp. */
.macro TRAP_ENTRY mode, handler
        .align  4
        .globl  \mode\()trap_entry
\mode\()trap_entry:
        csrrw   sp, \mode\()scratch, sp
        addi    sp, sp, -FRAME_SIZE
        .irp    r, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        sd      x\r, (\r * 8)(sp)
        .endr
        csrr    t0, \mode\()scratch     /* interrupted sp */
        sd      t0, (2 * 8)(sp)
        csrr    t0, \mode\()epc
        sd      t0, (TF_EPC * 8)(sp)
        csrr    t0, \mode\()status
        sd      t0, (TF_STATUS * 8)(sp)
        csrr    t0, \mode\()cause
        sd      t0, (TF_CAUSE * 8)(sp)
        csrr    t0, \mode\()tval
        sd      t0, (TF_TVAL * 8)(sp)
        mv      a0, sp
        call    \handler
        ld      t0, (TF_EPC * 8)(sp)
        csrw    \mode\()epc, t0
        ld      t0, (TF_STATUS * 8)(sp)
        csrw    \mode\()status, t0
        .irp    r, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        ld      x\r, (\r * 8)(sp)
        .endr
        addi    sp, sp, FRAME_SIZE
        csrrw   sp, \mode\()scratch, sp
        \mode\()ret
.endm

        .text
        TRAP_ENTRY m, handle_mtrap
        TRAP_ENTRY s, handle_strap

/* uint64_t run_in_mode(int priv, uint64_t (*fn)(uint64_t), uint64_t arg)
 *
 * Calls fn(arg) in privilege `priv` (PRV_U or PRV_S) by mret, on the current
 * stack.  When fn returns it lands on lower_return, whose EBREAK the M trap
 * handler recognises by its address (lower_return_trap) and answers by
 * resuming at run_in_mode_resume in M-mode with fn's a0.  If breakpoints are
 * delegated the S handler forwards it from strap_forward_trap.  Must be
 * called from M-mode. */
        .globl  run_in_mode
run_in_mode:
        addi    sp, sp, -128
        sd      ra, 0(sp)
        sd      s0, 8(sp)
        sd      s1, 16(sp)
        sd      s2, 24(sp)
        sd      s3, 32(sp)
        sd      s4, 40(sp)
        sd      s5, 48(sp)
        sd      s6, 56(sp)
        sd      s7, 64(sp)
        sd      s8, 72(sp)
        sd      s9, 80(sp)
        sd      s10, 88(sp)
        sd      s11, 96(sp)
        sd      gp, 104(sp)
        csrr    t0, mstatus
        sd      t0, 112(sp)
        la      t0, run_in_mode_sp
        sd      sp, 0(t0)
        csrw    mepc, a1
        li      t0, MSTATUS_MPP
        csrc    mstatus, t0
        slli    a0, a0, MSTATUS_MPP_SHIFT
        csrs    mstatus, a0
        mv      a0, a2
        la      ra, lower_return
        mret
        .globl  lower_return
lower_return:
        .globl  lower_return_trap
lower_return_trap:
        ebreak
        .globl  run_in_mode_resume
run_in_mode_resume:
        la      t0, run_in_mode_sp
        ld      sp, 0(t0)
        ld      ra, 0(sp)
        ld      s0, 8(sp)
        ld      s1, 16(sp)
        ld      s2, 24(sp)
        ld      s3, 32(sp)
        ld      s4, 40(sp)
        ld      s5, 48(sp)
        ld      s6, 56(sp)
        ld      s7, 64(sp)
        ld      s8, 72(sp)
        ld      s9, 80(sp)
        ld      s10, 88(sp)
        ld      s11, 96(sp)
        ld      gp, 104(sp)
        /* the caller's mstatus.MIE, whatever the traps in between did */
        li      t1, MSTATUS_MIE
        csrc    mstatus, t1
        ld      t0, 112(sp)
        and     t0, t0, t1
        csrs    mstatus, t0
        addi    sp, sp, 128
        ret

/* void strap_forward(uint64_t a0): called by the S trap handler to pass
 * a delegated lower_return on to M. */
        .globl  strap_forward
strap_forward:
        .globl  strap_forward_trap
strap_forward_trap:
        ebreak

        .bss
        .align  3
run_in_mode_sp:
        .dword  0
