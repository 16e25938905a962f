"""Calling translated code from the numba interpreter, by address.

numba can call a function pointer only through an @intrinsic that emits the
LLVM call itself (measured in shared/design/JIT.md B3: 1.4 ns a call, no NRT,
usable under nogil/_nrt=False).  Two signatures, one per tier:

    i64 region(x*, f*, csr*, st*, ram*, tlb_tag*, tlb_off*, i64 limit)   ir.py
    i64 trace(x*, st*, ram*, tlb_tag*, tlb_off*, i64 rem)                stencils.py

A region returns (retired << 2) | flags, a trace (rem << 2) + K: its exit's
instructions not retired and flags (stencils.py).
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def _indirect_call(n_arrays: int):
    """codegen for an intrinsic (fn, n_arrays arrays..., i64): call fn with
    the arrays' data pointers and the i64, as i64 fn(ptr, ..., ptr, i64)."""
    def codegen(context, builder, signature, args):
        ptr = ir.PointerType(ir.IntType(8))
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(i64, [ptr] * n_arrays + [i64])
        data = []
        for ty, val in zip(signature.args[1:n_arrays + 1], args[1:n_arrays + 1]):
            ary = context.make_array(ty)(context, builder, val)
            data.append(builder.bitcast(ary.data, ptr))
        target = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(target, data + [args[n_arrays + 1]])
    return codegen


@intrinsic
def call_translation(typingctx, fn, x, f, csr, st, ram8, tlb_tag, tlb_off, limit):
    """i64 region(x*, f*, csr*, st*, ram*, tlb_tag*, tlb_off*, i64 limit): an
    optimized translation (ir.py); returns (retired << 2) | flags."""
    return types.int64(fn, x, f, csr, st, ram8, tlb_tag, tlb_off, limit), _indirect_call(7)


@intrinsic
def call_stencils(typingctx, fn, x, st, ram8, tlb_tag, tlb_off, rem):
    """i64 trace(x*, st*, ram*, tlb_tag*, tlb_off*, i64 rem): a baseline
    translation (stencils.py); returns (rem << 2) + K of the exit taken."""
    return types.int64(fn, x, st, ram8, tlb_tag, tlb_off, rem), _indirect_call(5)
