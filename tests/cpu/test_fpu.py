"""Differential tests of vmkit/cpu/fpu.py against QEMU (F and D extensions).

A small RISC-V program (fpu_vectors/fpref.c) executes each test vector with
the real instruction under qemu-riscv64 and prints the result registers and
fflags; fp_execute must give the same bits, the same flags and the same
illegal-instruction verdicts.

VMKIT_FPU_VECTORS sets the number of random vectors per instruction
(default 3000); VMKIT_FPU_SEED changes the random seed (default 1).
"""

import math
import os
import platform
import random
import shutil
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

VECTORS = int(os.environ.get("VMKIT_FPU_VECTORS", "3000"))
SEED = int(os.environ.get("VMKIT_FPU_SEED", "1"))
PURE_PYTHON_VECTORS = 200         # per instruction, in the NUMBA_DISABLE_JIT run

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FPREF_C = HERE / "fpu_vectors" / "fpref.c"
CROSS_CC = "riscv64-linux-gnu-gcc"

# Register convention shared with fpref.c.
RS1, RS2, RS3, RD = 10, 11, 12, 13
SENTINEL = 0x5A5A5A5A5A5A5A5A
MASK64 = (1 << 64) - 1
BOX = 0xFFFFFFFF00000000

OP_FP = 0x53
FMA_OPCODES = {"fmadd": 0x43, "fmsub": 0x47, "fnmsub": 0x4B, "fnmadd": 0x4F}


# --- the instruction list ---------------------------------------------------------


class Insn:
    """One instruction: how to encode it and what operands it takes.

    srcs: "f" / "ff" / "fff" for f-register operands (in src_fmt), "x" for
    an x-register operand; rs2 None means rs2 is a register; funct3 None
    means funct3 is the rm field.
    """

    def __init__(self, name, opcode, funct5, fmt, srcs, rs2=None, funct3=None,
                 src_fmt=None, gen=None):
        self.name = name
        self.opcode = opcode
        self.funct5 = funct5
        self.fmt = fmt
        self.srcs = srcs
        self.rs2 = rs2
        self.funct3 = funct3
        self.src_fmt = fmt if src_fmt is None else src_fmt
        self.gen = gen or srcs

    def encode(self, rm):
        f3 = rm if self.funct3 is None else self.funct3
        if self.opcode != OP_FP:
            return ((RS3 << 27) | (self.fmt << 25) | (RS2 << 20) | (RS1 << 15)
                    | (f3 << 12) | (RD << 7) | self.opcode)
        rs2 = RS2 if self.rs2 is None else self.rs2
        return ((self.funct5 << 27) | (self.fmt << 25) | (rs2 << 20) | (RS1 << 15)
                | (f3 << 12) | (RD << 7) | OP_FP)


def build_insns():
    out = []
    for fmt, sx in ((0, "s"), (1, "d")):
        for name, f5 in (("fadd", 0x00), ("fsub", 0x01)):
            out.append(Insn(f"{name}.{sx}", OP_FP, f5, fmt, "ff", gen="add"))
        for name, f5 in (("fmul", 0x02), ("fdiv", 0x03)):
            out.append(Insn(f"{name}.{sx}", OP_FP, f5, fmt, "ff", gen=name[1:]))
        out.append(Insn(f"fsqrt.{sx}", OP_FP, 0x0B, fmt, "f", rs2=0))
        for f3, name in enumerate(("fsgnj", "fsgnjn", "fsgnjx")):
            out.append(Insn(f"{name}.{sx}", OP_FP, 0x04, fmt, "ff", funct3=f3, gen="cmp"))
        for f3, name in enumerate(("fmin", "fmax")):
            out.append(Insn(f"{name}.{sx}", OP_FP, 0x05, fmt, "ff", funct3=f3, gen="cmp"))
        for f3, name in enumerate(("fle", "flt", "feq")):
            out.append(Insn(f"{name}.{sx}", OP_FP, 0x14, fmt, "ff", funct3=f3, gen="cmp"))
        for k, it in enumerate(("w", "wu", "l", "lu")):
            out.append(Insn(f"fcvt.{it}.{sx}", OP_FP, 0x18, fmt, "f", rs2=k, gen="toint"))
            out.append(Insn(f"fcvt.{sx}.{it}", OP_FP, 0x1A, fmt, "x", rs2=k))
        mv = "w" if fmt == 0 else "d"
        out.append(Insn(f"fmv.x.{mv}", OP_FP, 0x1C, fmt, "f", rs2=0, funct3=0))
        out.append(Insn(f"fclass.{sx}", OP_FP, 0x1C, fmt, "f", rs2=0, funct3=1))
        out.append(Insn(f"fmv.{mv}.x", OP_FP, 0x1E, fmt, "x", rs2=0, funct3=0))
        for name, opcode in FMA_OPCODES.items():
            out.append(Insn(f"{name}.{sx}", opcode, None, fmt, "fff"))
    out.append(Insn("fcvt.s.d", OP_FP, 0x08, 0, "f", rs2=1, src_fmt=1))
    out.append(Insn("fcvt.d.s", OP_FP, 0x08, 1, "f", rs2=0, src_fmt=0))
    return out


INSNS = build_insns()

# --- operand generation --------------------------------------------------------------

FMTS = {0: (32, 24, 127), 1: (64, 53, 1023)}    # width, precision, bias


def pack(fmt, sign, biased, frac):
    width, p, bias = FMTS[fmt]
    return (sign << (width - 1)) | (biased << (p - 1)) | frac


def from_float(fmt, v):
    if fmt == 0:
        return struct.unpack("<I", struct.pack("<f", v))[0]
    return struct.unpack("<Q", struct.pack("<d", v))[0]


def to_float(fmt, bits):
    if fmt == 0:
        return float(struct.unpack("<f", struct.pack("<I", bits))[0])
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def specials(fmt):
    width, p, bias = FMTS[fmt]
    top = 2 * bias + 1
    fmax = (1 << (p - 1)) - 1
    quiet = 1 << (p - 2)
    vals = [
        pack(fmt, 0, 0, 0), pack(fmt, 0, top, 0),                    # 0, inf
        pack(fmt, 0, top, quiet), pack(fmt, 0, top, quiet | 1),      # qNaNs
        pack(fmt, 0, top, fmax), pack(fmt, 0, top, 1),               # qNaN, sNaN
        pack(fmt, 0, top, quiet - 1), pack(fmt, 0, top, quiet >> 1),  # sNaNs
        pack(fmt, 0, 0, 1), pack(fmt, 0, 0, fmax),                   # subnormals
        pack(fmt, 0, 0, quiet), pack(fmt, 0, 1, 0), pack(fmt, 0, 1, 1),
        pack(fmt, 0, 2 * bias, fmax), pack(fmt, 0, 2 * bias, fmax - 1),
        pack(fmt, 0, bias, 0), pack(fmt, 0, bias, 1), pack(fmt, 0, bias - 1, fmax),
    ]
    for v in (2.0, 0.5, 1.5, 2.5, 3.0, 0.1, 0.25, 0.75, 1e-3, 3.5,
              2.0 ** 31, 2.0 ** 31 - 1, 2.0 ** 31 - 0.5, 2.0 ** 31 + 1, 2.0 ** 32,
              2.0 ** 32 - 1, 2.0 ** 63, 2.0 ** 64, 2.0 ** 62, 2.0 ** p, 2.0 ** p + 2,
              2.0 ** (p - 1) + 0.5):
        vals.append(from_float(fmt, v))
    vals += [v | (1 << (width - 1)) for v in vals]
    return vals


def gen_frac(rng, p):
    n = p - 1
    r = rng.random()
    if r < 0.5:
        return rng.getrandbits(n)
    if r < 0.58:
        return 0
    if r < 0.66:
        return (1 << n) - 1
    k = rng.randrange(n + 1)
    if r < 0.76:
        return (((1 << n) - 1) >> k) << k            # ones then zeros
    if r < 0.86:
        return (1 << k) - 1                          # zeros then ones
    if r < 0.93:                                     # a tie-like pattern
        return (rng.getrandbits(n) & ~((1 << k) - 1)) | (1 << k >> 1)
    return (1 << rng.randrange(n)) | rng.getrandbits(2)


def gen_float(rng, fmt, biased=None):
    """A float, biased towards the interesting parts of the number line."""
    width, p, bias = FMTS[fmt]
    r = rng.random()
    if biased is None:
        if r < 0.08:
            return rng.choice(specials(fmt))
        if r < 0.2:
            return rng.getrandbits(width)
        r = rng.random()
        if r < 0.4:
            biased = bias + rng.randint(-40, 40)
        elif r < 0.6:
            biased = rng.randint(0, p + 3)                   # subnormal / tiny
        elif r < 0.7:
            biased = rng.randint(2 * bias - 3, 2 * bias)     # huge
        else:
            biased = rng.randint(0, 2 * bias)
    biased = max(0, min(2 * bias, biased))
    return pack(fmt, rng.getrandbits(1), biased, gen_frac(rng, p))


def biased_exp(fmt, bits):
    width, p, bias = FMTS[fmt]
    return (bits >> (p - 1)) & (2 * bias + 1)


def finite_value(fmt, bits):
    """The exact value of a finite float, as a Fraction (None for inf/NaN)."""
    v = to_float(fmt, bits)
    return Fraction(v) if math.isfinite(v) else None


def nearest(fmt, q):
    """q rounded to fmt by the host (test inputs only), None on overflow."""
    try:
        v = float(q)
    except OverflowError:
        return None
    if fmt == 0:
        with np.errstate(all="ignore"):
            v = float(np.float32(v))
    return from_float(fmt, v) if math.isfinite(v) else None


def gen_short(rng, fmt, bits, biased):
    """A float whose significand has exactly `bits` significant bits, the
    last one set: products and sums of these land exactly on ties."""
    width, p, bias = FMTS[fmt]
    bits = max(1, min(p, bits))
    sig = (1 << (bits - 1)) | rng.getrandbits(bits - 1) | 1
    biased = max(1, min(2 * bias, biased))
    return pack(fmt, rng.getrandbits(1), biased, (sig << (p - bits)) & ((1 << (p - 1)) - 1))


def gen_target(rng, fmt):
    """A result value on a rounding boundary: just below 2^emin (tininess is
    detected after rounding), a subnormal or normal tie, the overflow edge."""
    width, p, bias = FMTS[fmt]
    emin = 1 - bias
    two = Fraction(2)
    r = rng.random()
    if r < 0.4:
        t = two ** emin * (1 - Fraction(1, 2 ** rng.randint(p - 2, p + 3)))
    elif r < 0.55:
        t = (rng.getrandbits(p - 1) + Fraction(1, 2)) * two ** (emin - p + 1)
    elif r < 0.7:
        t = (2 - Fraction(1, 2 ** rng.randint(p - 1, p + 2))) * two ** bias
    else:
        e = rng.randint(emin, bias)
        t = ((1 << (p - 1)) + rng.getrandbits(p - 1) + Fraction(1, 2)) * two ** (e - p + 1)
    return -t if rng.getrandbits(1) else t


def gen_mid(rng, fmt):
    width, p, bias = FMTS[fmt]
    return gen_float(rng, fmt, bias + rng.randint(-bias // 3, bias // 3))


def gen_toward(rng, fmt, kind):
    """(a, b) with a * b or a / b within about an ulp of a boundary value."""
    t = gen_target(rng, fmt)
    a = gen_mid(rng, fmt)
    va = finite_value(fmt, a)
    if not va:
        return a, gen_float(rng, fmt)
    b = nearest(fmt, t / va if kind == "mul" else va / t)
    return a, (gen_float(rng, fmt) if b is None else b)


def gen_exact_tie(rng, fmt, kind):
    """(a, b) whose exact sum or product has p + 1 or p + 2 significant bits
    ending in a one, i.e. a tie or close to one, anywhere from subnormal up."""
    width, p, bias = FMTS[fmt]
    ea = bias + rng.randint(-30, 30)
    if kind == "add":
        a = gen_short(rng, fmt, p, ea)
        return a, gen_short(rng, fmt, rng.randint(1, 4), ea - p + rng.randint(-1, 1))
    k = rng.randint(1, p)
    eb = rng.choice((rng.randint(-p, 2) - ea + 2 * bias, bias + rng.randint(-30, 30)))
    return (gen_short(rng, fmt, k, ea),
            gen_short(rng, fmt, p + rng.choice((1, 2)) - k, eb))


def gen_pair(rng, fmt, kind):
    width, p, bias = FMTS[fmt]
    a = gen_float(rng, fmt)
    ea = biased_exp(fmt, a)
    r = rng.random()
    if r < 0.3:
        return a, gen_float(rng, fmt)
    if r < 0.45 and kind in ("cmp", "add"):
        # equal, negated, neighbouring
        sign = 1 << (width - 1)
        return a, rng.choice((a, a ^ sign, (a + 1) & (MASK64 >> (64 - width)), a - 1 if a else 1))
    if r < 0.6 and kind in ("mul", "add"):
        return gen_exact_tie(rng, fmt, kind)
    if r < 0.8 and kind in ("mul", "div"):
        return gen_toward(rng, fmt, kind)
    if kind in ("mul", "div"):
        # aim the result exponent near the subnormal range or overflow
        target = rng.choice((rng.randint(-p - 3, 3), rng.randint(2 * bias - 3, 2 * bias + 3),
                             rng.randint(1, 2 * bias)))
        eb = target - ea + bias if kind == "mul" else ea - target + bias
        return a, gen_float(rng, fmt, eb)
    return a, gen_float(rng, fmt, ea + rng.randint(-p - 3, p + 3))


def gen_triple(rng, fmt):
    width, p, bias = FMTS[fmt]
    a, b = gen_pair(rng, fmt, rng.choice(("mul", "mul", "add", "any")))
    va, vb = finite_value(fmt, a), finite_value(fmt, b)
    r = rng.random()
    if r < 0.25 or va is None or vb is None:
        c = gen_float(rng, fmt)
    elif r < 0.4:
        # (nearly) cancel the product: exact zeros and massive cancellation
        c = nearest(fmt, -va * vb) or gen_float(rng, fmt)
    elif r < 0.55:
        c = rng.choice((0, 1 << (width - 1), 1, pack(fmt, 0, 0, rng.getrandbits(p - 1))))
    elif r < 0.7:
        # the product is near a boundary value t; c pulls it onto t
        t = gen_target(rng, fmt)
        c = nearest(fmt, t - va * vb) or gen_float(rng, fmt)
    else:
        ep = biased_exp(fmt, a) + biased_exp(fmt, b) - bias
        c = gen_float(rng, fmt, ep + rng.randint(-2 * p - 4, p + 4))
    return a, b, c


def gen_unary(rng, fmt, insn):
    width, p, bias = FMTS[fmt]
    r = rng.random()
    if insn.name.startswith("fsqrt"):
        if r < 0.25:      # exact squares (no NX)
            root = gen_short(rng, fmt, rng.randint(1, (p + 1) // 2), bias + rng.randint(-60, 60))
            return nearest(fmt, finite_value(fmt, root) ** 2) or 0
        a = gen_float(rng, fmt)
        return a & ~(1 << (width - 1)) if r < 0.7 else a
    if insn.name == "fcvt.s.d" and r < 0.4:
        return nearest(1, gen_target(rng, 0)) or 0     # boundaries of binary32
    return gen_float(rng, fmt)


def gen_toint(rng, fmt):
    """Floats around the integer limits and around halves."""
    width, p, bias = FMTS[fmt]
    r = rng.random()
    if r < 0.3:
        return gen_float(rng, fmt)
    if r < 0.6:
        n = rng.choice((31, 32, 63, 64, 0, 1, 2))
        v = float(2 ** n) + rng.choice((0, 1, -1, 0.5, -0.5))
        bits = from_float(fmt, v * rng.choice((1, -1)))
        return (bits + rng.randint(-3, 3)) & (MASK64 >> (64 - width))
    n = rng.randint(0, 66)
    v = rng.getrandbits(n) + rng.choice((0.0, 0.5, 0.25, 0.75, rng.random()))
    try:
        return from_float(fmt, -v if rng.getrandbits(1) else v)
    except OverflowError:
        return gen_float(rng, fmt)


def gen_int(rng):
    r = rng.random()
    if r < 0.3:
        return rng.getrandbits(64)
    if r < 0.6:
        v = rng.getrandbits(rng.randint(0, 64))
    elif r < 0.75:
        v = (1 << rng.choice((24, 25, 31, 32, 53, 54, 63, 64))) + rng.randint(-3, 3)
    elif r < 0.9:   # p + 1 or p + 2 significant bits ending in one: ties
        n = rng.choice((24, 53)) + rng.randint(1, 2)
        v = ((1 << (n - 1)) | rng.getrandbits(n - 1) | 1) << rng.randint(0, 64 - n)
    else:
        v = rng.getrandbits(rng.randint(20, 60)) << rng.randint(0, 30)   # rounding patterns
    if rng.getrandbits(1):
        v = -v
    if rng.random() < 0.5:  # random upper half for the 32-bit forms
        v = (rng.getrandbits(32) << 32) | (v & 0xFFFFFFFF)
    return v & MASK64


def as_register(rng, fmt, bits):
    """f-register contents: singles NaN-boxed, a few deliberately not."""
    if fmt == 1:
        return bits
    if rng.random() < 0.03:
        return (rng.choice((0, rng.getrandbits(32), 0xFFFFFFFE)) << 32) | bits
    return BOX | bits


def gen_rm(rng, insn):
    """(rm field, frm); about 10% of the rounded ones are illegal."""
    if insn.funct3 is not None:
        return 0, rng.randrange(8)
    r = rng.random()
    if r < 0.45:
        return rng.randrange(5), rng.randrange(8)
    if r < 0.9:
        return 7, rng.randrange(5)
    if r < 0.95:
        return rng.choice((5, 6)), rng.randrange(8)
    return 7, rng.choice((5, 6, 7))


def gen_vectors(insn, count, seed):
    """[(insn bits, frm, a, b, c)] with unsigned 64-bit register values."""
    rng = random.Random(f"{seed}:{insn.name}")
    fmt = insn.src_fmt
    out = []
    for _ in range(count):
        if insn.srcs == "x":
            ops = (gen_int(rng), gen_int(rng), gen_int(rng))
        else:
            if insn.gen == "fff":
                vals = gen_triple(rng, fmt)
            elif insn.gen == "toint":
                vals = (gen_toint(rng, fmt), gen_float(rng, fmt), 0)
            elif insn.srcs == "f":
                vals = (gen_unary(rng, fmt, insn), gen_float(rng, fmt), 0)
            else:
                vals = gen_pair(rng, fmt, insn.gen) + (gen_float(rng, fmt),)
            ops = tuple(as_register(rng, fmt, v) for v in vals)
        rm, frm = gen_rm(rng, insn)
        out.append((insn.encode(rm), frm) + ops)
    return out


# --- running both sides ---------------------------------------------------------------


def signed(v):
    return v - (1 << 64) if v >> 63 else v


def format_result(f_out, x_out, flags):
    return f"{f_out & MASK64:016x} {x_out & MASK64:016x} {flags:x}"


def run_vmkit(vectors):
    """fp_execute on each vector, formatted like fpref's output."""
    from vmkit.cpu.fpu import fp_execute

    out = []
    for insn, frm, a, b, c in vectors:
        x = np.zeros(32, np.int64)
        f = np.zeros(32, np.int64)
        for r, v in ((RS1, a), (RS2, b), (RS3, c), (RD, SENTINEL)):
            x[r] = signed(v)
            f[r] = signed(v)
        x_before = x.copy()
        f_before = f.copy()
        ret = int(fp_execute(insn, x, f, frm))
        if ret == -1:
            out.append("ILL")
            continue
        x_before[RD] = x[RD]
        f_before[RD] = f[RD]
        if (ret & 32 != 0) != (int(f[RD]) != signed(SENTINEL)):
            out.append(f"ERR: return value {ret} disagrees with the f register write")
        elif not (np.array_equal(x, x_before) and np.array_equal(f, f_before)):
            out.append("ERR: wrote a register other than rd")
        else:
            out.append(format_result(int(f[RD]), int(x[RD]), ret & 31))
    return out


def vector_lines(vectors):
    return "".join(f"{i:08x} {frm} {a:016x} {b:016x} {c:016x}\n"
                   for i, frm, a, b, c in vectors)


def run_reference(fpref, vectors):
    cmd = [str(fpref)]
    if platform.machine() != "riscv64":
        cmd.insert(0, "qemu-riscv64")
    res = subprocess.run(cmd, input=vector_lines(vectors), capture_output=True,
                         text=True, check=True, timeout=600)
    lines = res.stdout.splitlines()
    assert len(lines) == len(vectors), res.stderr
    return lines


def describe(vector, want, got):
    insn, frm, a, b, c = vector
    return (f"insn={insn:08x} rm={(insn >> 12) & 7} frm={frm} "
            f"a={a:016x} b={b:016x} c={c:016x}: qemu {want!r}, vmkit {got!r}")


def compare(vectors, want, got):
    bad = [describe(v, w, g) for v, w, g in zip(vectors, want, got) if w != g]
    assert not bad, f"{len(bad)}/{len(vectors)} mismatches, first ones:\n" + "\n".join(bad[:15])


# --- fixtures and tests ---------------------------------------------------------------


@pytest.fixture(scope="session")
def fpref(tmp_path_factory):
    """The reference program, built with the riscv64 cross compiler."""
    if shutil.which(CROSS_CC) is None:
        pytest.skip(f"{CROSS_CC} not found: install gcc-riscv64-linux-gnu to run "
                    "the QEMU differential FPU tests")
    if platform.machine() != "riscv64" and shutil.which("qemu-riscv64") is None:
        pytest.skip("qemu-riscv64 not found: install qemu-user to run the QEMU "
                    "differential FPU tests")
    exe = tmp_path_factory.mktemp("fpref") / "fpref"
    subprocess.run([CROSS_CC, "-static", "-O1", "-march=rv64gc", "-o", str(exe),
                    str(FPREF_C)], check=True, capture_output=True)
    return exe


@pytest.fixture(scope="session")
def vectors_and_reference(fpref):
    """All random vectors, run through QEMU in one go."""
    vectors = {insn.name: gen_vectors(insn, VECTORS, SEED) for insn in INSNS}
    flat = [v for insn in INSNS for v in vectors[insn.name]]
    lines = iter(run_reference(fpref, flat))
    return {insn.name: (vectors[insn.name], [next(lines) for _ in vectors[insn.name]])
            for insn in INSNS}


@pytest.mark.parametrize("name", [insn.name for insn in INSNS])
def test_matches_qemu(vectors_and_reference, name):
    vectors, want = vectors_and_reference[name]
    compare(vectors, want, run_vmkit(vectors))


def test_special_operand_grid(fpref):
    """Every pair of special values through every two-operand instruction,
    the fused multiply-adds over a smaller set of specials, each vector with
    a rounding mode drawn at random."""
    rng = random.Random(SEED)
    vectors = []
    for insn in INSNS:
        fmt = insn.src_fmt
        sp = specials(fmt)
        if insn.srcs == "ff":
            operands = [(a, b, 0) for a in sp for b in sp]
        elif insn.srcs == "fff":
            # 0 inf qNaN sNaN, subnormals, min/max normal, 1, 1+ulp, 2, 1.5
            few = [sp[i] for i in (0, 1, 2, 5, 8, 9, 11, 13, 15, 16, 18, 20)]
            few += [v | (1 << (FMTS[fmt][0] - 1)) for v in few]
            operands = [(a, b, c) for a in few for b in few for c in few]
        elif insn.srcs == "f":
            operands = [(a, 0, 0) for a in sp]
        else:
            operands = [(v & MASK64, 0, 0) for v in (
                0, 1, -1, 2 ** 31, -2 ** 31, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 63, 2 ** 63 - 1,
                2 ** 64 - 1, 2 ** 24 + 1, 2 ** 53 + 1, -(2 ** 53 + 1), 2 ** 63 + 2 ** 40 + 1)]
        for a, b, c in operands:
            rm = rng.randrange(5) if insn.funct3 is None else insn.funct3
            regs = (a, b, c) if insn.srcs == "x" else tuple(
                v if fmt == 1 else BOX | v for v in (a, b, c))
            vectors.append((insn.encode(rm), 0) + regs)
    compare(vectors, run_reference(fpref, vectors), run_vmkit(vectors))


def test_illegal_encodings_match_qemu(fpref):
    """Legal/illegal verdicts for every funct5/fmt/rs2/funct3 of OP-FP and
    every fmt/rm of the fused multiply-adds (results are not compared: rs2
    may name an uninitialised register)."""
    vectors = []
    for funct5 in range(32):
        for fmt in range(4):
            for rs2 in range(32):
                for f3 in range(8):
                    insn = ((funct5 << 27) | (fmt << 25) | (rs2 << 20) | (RS1 << 15)
                            | (f3 << 12) | (RD << 7) | OP_FP)
                    vectors.append((insn, 0, BOX | 0x3F800000, BOX | 0x40000000, 0))
    for opcode in FMA_OPCODES.values():
        for fmt in range(4):
            for rm in range(8):
                for frm in range(8):
                    insn = ((RS3 << 27) | (fmt << 25) | (RS2 << 20) | (RS1 << 15)
                            | (rm << 12) | (RD << 7) | opcode)
                    vectors.append((insn, frm, 0, 0, 0))
    want = [w == "ILL" for w in run_reference(fpref, vectors)]
    got = [g == "ILL" for g in run_vmkit(vectors)]
    bad = [f"insn={v[0]:08x} frm={v[1]}: qemu illegal={w}, vmkit illegal={g}"
           for v, w, g in zip(vectors, want, got) if w != g]
    assert not bad, f"{len(bad)} verdicts differ:\n" + "\n".join(bad[:20])


def test_rd_zero_discards_integer_results():
    from vmkit.cpu.fpu import fp_execute

    x = np.zeros(32, np.int64)
    f = np.zeros(32, np.int64)
    f[1] = signed(BOX | 0xBF800000)              # -1.0f
    for insn in (0xC0008053,                      # fcvt.w.s x0, f1
                 0xE0008053,                      # fmv.x.w x0, f1
                 0xE0009053,                      # fclass.s x0, f1
                 0xA0109053):                     # flt.s x0, f1, f1
        assert fp_execute(insn, x, f, 0) >= 0
        assert x[0] == 0


def test_pure_python_mode_matches_qemu(fpref):
    """A subset of the vectors with NUMBA_DISABLE_JIT=1: the interpreted core
    must give the same bits as the compiled one (and QEMU)."""
    vectors = [v for insn in INSNS
               for v in gen_vectors(insn, PURE_PYTHON_VECTORS, SEED + 1000)]
    env = dict(os.environ, NUMBA_DISABLE_JIT="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, __file__], input=vector_lines(vectors),
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    got = res.stdout.splitlines()
    assert len(got) == len(vectors), res.stderr
    compare(vectors, run_reference(fpref, vectors), got)


if __name__ == "__main__":
    # Used by test_pure_python_mode_matches_qemu: vectors in fpref's input
    # format on stdin, fp_execute's results in fpref's output format out.
    vecs = [tuple(int(t, 16) if i != 1 else int(t) for i, t in enumerate(line.split()))
            for line in sys.stdin if line.strip()]
    print("\n".join(run_vmkit(vecs)))
