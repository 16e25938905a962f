"""Functions translated code calls by address (QEMU's helpers).

Translations do floating point through vmkit's exact FP code rather than
host FP instructions, so results and fflags are the interpreter's bit for
bit (shared/design/JIT.md C9).  A numba cfunc gives the function a C
address; the arrays are rebuilt from raw pointers with numba.carray.
"""

from numba import carray, cfunc, types

from vmkit.cpu.interp import exec_fp_op

_FP_SIG = types.int64(types.int64, types.CPointer(types.int64), types.CPointer(types.int64),
                      types.CPointer(types.int64))


@cfunc(_FP_SIG, cache=True, nopython=True)
def fp_op(insn, xp, fp, csrp):
    """One OP-FP/FMA instruction on the hart's arrays: 1, or 0 when illegal
    (then nothing changed and the interpreter raises the trap)."""
    x = carray(xp, 32)
    f = carray(fp, 32)
    csr = carray(csrp, 4096)
    return 1 if exec_fp_op(insn, x, f, csr) else 0


def fp_op_address() -> int:
    return fp_op.address
