/* Macros shared by the generated differential-test programs (gen.py) and
 * runtime.S.  State table layout, in 8-byte words:
 *   0..31   x0..x31 (x0 ignored)
 *   32..63  f0..f31 (raw bits)
 *   64      fcsr
 */
#define STATE_F    256
#define STATE_FCSR 512
#define STATE_SIZE 520
#define DATA_SIZE  4096

/* Load every register and fcsr from a state table; x31 last. */
.macro LOAD_STATE table
        la      x31, \table
        .irp    r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        fld     f\r, (STATE_F + \r * 8)(x31)
        .endr
        ld      x30, STATE_FCSR(x31)
        fscsr   x30
        .irp    r, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30
        ld      x\r, (\r * 8)(x31)
        .endr
        ld      x31, (31 * 8)(x31)
.endm

/* Store every register and fcsr into regsave (mscratch is the spare). */
.macro SAVE_STATE
        csrw    mscratch, x31
        la      x31, regsave
        .irp    r, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30
        sd      x\r, (\r * 8)(x31)
        .endr
        csrr    x30, mscratch
        sd      x30, (31 * 8)(x31)
        .irp    r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        fsd     f\r, (STATE_F + \r * 8)(x31)
        .endr
        frcsr   x30
        sd      x30, STATE_FCSR(x31)
.endm
