"""Calling translated code from the numba interpreter, by address.

Two signatures: the optimizing tier's regions (ir.py) and the baseline
tier's stencil code (stencils.py, emit.py).

numba can call a function pointer only through an @intrinsic that emits the
LLVM call itself (measured in shared/design/JIT.md B3: 1.4 ns a call, no NRT,
usable under nogil/_nrt=False).  Every translation has the one signature
that translator.py generates:

    i64 region(x*, f*, csr*, st*, ram*, tlb_tag*, tlb_off*, i64 limit)

and returns (retired << 2) | flags (translator.RET_*).
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def call_translation(typingctx, fn, x, f, csr, st, ram8, tlb_tag, tlb_off, limit):
    sig = types.int64(fn, x, f, csr, st, ram8, tlb_tag, tlb_off, limit)

    def codegen(context, builder, signature, args):
        ptr = ir.PointerType(ir.IntType(8))
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(i64, [ptr] * 7 + [i64])
        data = []
        for ty, val in zip(signature.args[1:8], args[1:8]):
            ary = context.make_array(ty)(context, builder, val)
            data.append(builder.bitcast(ary.data, ptr))
        target = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(target, data + [args[8]])

    return sig, codegen


@intrinsic
def call_stencils(typingctx, fn, x, st, ram8, tlb_tag, tlb_off, rem):
    """i64 trace(x*, st*, ram*, tlb_tag*, tlb_off*, i64 rem): a baseline
    translation (stencils.py); returns (rem << 2) + K of the exit taken."""
    sig = types.int64(fn, x, st, ram8, tlb_tag, tlb_off, rem)

    def codegen(context, builder, signature, args):
        ptr = ir.PointerType(ir.IntType(8))
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(i64, [ptr] * 5 + [i64])
        data = []
        for ty, val in zip(signature.args[1:6], args[1:6]):
            ary = context.make_array(ty)(context, builder, val)
            data.append(builder.bitcast(ary.data, ptr))
        target = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(target, data + [args[6]])

    return sig, codegen
