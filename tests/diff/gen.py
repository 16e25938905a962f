"""Seeded random instruction sequences for differential testing vmkit vs QEMU.

A sequence starts from a random but reproducible machine state (x1..x31,
f0..f31, fcsr.frm/fflags, a 4 KiB data region), runs `length` random RV64GC
instructions, then dumps every register, fcsr and hashes of the data region
over the UART (see runtime.S for the format).  Several sequences go into one
program so that process start-up is paid once per batch.

Nothing generated may trap, so that both machines reach every dump:
loads/stores/AMOs are naturally aligned and inside the data region, frm
is always a valid rounding mode (0..4, RISC-V Unprivileged ISA 11.2), control
flow only jumps forward over short blocks, compressed forms respect their
encoding constraints (ch. 16), and no CSR other than fflags/frm/fcsr is used.

Reserved registers (never written by random instructions):
  sp (x2)   = data_region + 1024, base of c.*sp loads/stores and c.addi4spn
  s0 (x8)   = data_region + 2048, base of loads/stores (offsets -2048..2047)
  t5 (x30)  = scratch for jalr targets
  t6 (x31)  = scratch for AMO and LR/SC addresses

    python -m tests.diff.gen --seed 7 --length 200 -o seq.S   # one sequence
"""

import argparse
import random
import struct
from dataclasses import dataclass, field

DATA_SIZE = 4096
SP_OFFSET = 1024
S0_OFFSET = 2048

RESERVED = {0, 2, 8, 30, 31}
X_WRITABLE = [r for r in range(32) if r not in RESERVED]
X_READABLE = list(range(32))
C_WRITABLE = [r for r in range(9, 16)]          # rd' (x8..x15) minus s0
C_READABLE = list(range(8, 16))
F_ALL = list(range(32))
F_COMPRESSED = list(range(8, 16))

ROUNDING = ["rne", "rtz", "rdn", "rup", "rmm", "dyn"]

# --- special values (IEEE 754 binary64 / binary32 bit patterns) ----------------
D_SPECIAL = [
    0x0000000000000000, 0x8000000000000000,      # +-0
    0x7ff0000000000000, 0xfff0000000000000,      # +-inf
    0x7ff8000000000000, 0xfff8000000000000,      # canonical qNaN, negative qNaN
    0x7ff8000000000123, 0x7ff0000000000001,      # qNaN payload, sNaN
    0x7ff4000000000000, 0xfff0000000000bad,      # sNaNs
    0x0000000000000001, 0x800fffffffffffff,      # subnormals
    0x0010000000000000, 0x8010000000000000,      # min normal
    0x7fefffffffffffff, 0xffefffffffffffff,      # max
    0x3ff0000000000000, 0xbff0000000000000,      # +-1
    0x3fe0000000000000, 0x4004000000000000,      # 0.5, 2.5
    0xc004000000000000, 0x3ff8000000000000,      # -2.5, 1.5
    0x41dfffffffc00000, 0x41e0000000000000,      # 2^31 - 1, 2^31
    0xc1e0000000000000, 0xc1e0000000200000,      # -2^31, -2^31 - 1
    0x41efffffffe00000, 0x41f0000000000000,      # 2^32 - 1, 2^32
    0x43e0000000000000, 0xc3e0000000000000,      # 2^63, -2^63
    0x43f0000000000000, 0x43dfffffffffffff,      # 2^64, < 2^63
    0x3c30000000000000, 0x3ca0000000000000,      # tiny relative to 1
]
S_SPECIAL = [
    0x00000000, 0x80000000, 0x7f800000, 0xff800000,
    0x7fc00000, 0xffc00000, 0x7fc00123, 0x7f800001, 0x7fa00000,
    0x00000001, 0x807fffff, 0x00800000, 0x80800000,
    0x7f7fffff, 0xff7fffff, 0x3f800000, 0xbf800000,
    0x3f000000, 0x40200000, 0xc0200000, 0x3fc00000,
    0x4effffff, 0x4f000000, 0xcf000000, 0x4f800000,
    0x5f000000, 0xdf000000, 0x5f800000, 0x33800000,
]
X_SPECIAL = [
    0, 1, 2, 0xffffffffffffffff, 0xfffffffffffffffe,
    0x8000000000000000, 0x7fffffffffffffff,
    0x0000000080000000, 0xffffffff80000000, 0x000000007fffffff,
    0x00000000ffffffff, 0xffffffff00000000, 0x0000000100000000,
    31, 32, 33, 63, 64, 65, 0x1f, 0x3f,
]


def _u64(v: int) -> int:
    return v & 0xFFFF_FFFF_FFFF_FFFF


class _Gen:
    """Random choices for one sequence; every method returns asm lines."""

    def __init__(self, seed: int, tag: str):
        self.rng = random.Random(seed)
        self.tag = tag
        self.labels = 0

    # ---- operand helpers ----------------------------------------------------
    def xw(self) -> str:
        return f"x{self.rng.choice(X_WRITABLE)}"

    def xr(self) -> str:
        return f"x{self.rng.choice(X_READABLE)}"

    def fr(self) -> str:
        return f"f{self.rng.choice(F_ALL)}"

    def rm(self) -> str:
        return self.rng.choice(ROUNDING)

    def label(self) -> str:
        self.labels += 1
        return f".L{self.tag}_{self.labels}"

    def mem_offset(self, size: int) -> int:
        """Aligned offset from s0 (data + 2048) inside the data region."""
        return self.rng.randrange(-S0_OFFSET, DATA_SIZE - S0_OFFSET - size + 1, size)

    # ---- initial state ------------------------------------------------------
    def x_value(self) -> int:
        r = self.rng.random()
        if r < 0.35:
            return _u64(self.rng.choice(X_SPECIAL))
        if r < 0.55:
            return _u64(self.rng.randint(-2048, 2047))
        if r < 0.7:                             # sign-extended 32-bit value
            return _u64(self.rng.randint(-(1 << 31), (1 << 31) - 1))
        return self.rng.getrandbits(64)

    def f_value(self) -> int:
        r = self.rng.random()
        if r < 0.3:
            return self.rng.choice(D_SPECIAL)
        if r < 0.6:                             # properly NaN-boxed single
            return 0xFFFF_FFFF_0000_0000 | self.rng.choice(S_SPECIAL)
        if r < 0.75:
            return 0xFFFF_FFFF_0000_0000 | self.rng.getrandbits(32)
        if r < 0.8:                             # unboxed single
            return self.rng.choice(S_SPECIAL)
        if r < 0.9:                             # "ordinary" double
            return struct.unpack("<Q", struct.pack("<d", self.rng.uniform(-1e6, 1e6)))[0]
        return self.rng.getrandbits(64)

    def data_image(self) -> bytes:
        out = bytearray()
        for _ in range(DATA_SIZE // 8):
            r = self.rng.random()
            if r < 0.15:
                v = self.rng.choice(D_SPECIAL)
            elif r < 0.3:
                v = (self.rng.choice(S_SPECIAL) << 32) | self.rng.choice(S_SPECIAL)
            elif r < 0.4:
                v = _u64(self.rng.choice(X_SPECIAL))
            else:
                v = self.rng.getrandbits(64)
            out += struct.pack("<Q", v)
        return bytes(out)

    # ---- instruction classes ---------------------------------------------
    def alu_rr(self) -> list[str]:
        op = self.rng.choice([
            "add", "sub", "sll", "slt", "sltu", "xor", "srl", "sra", "or", "and",
            "addw", "subw", "sllw", "srlw", "sraw",
            "mul", "mulh", "mulhsu", "mulhu", "mulw",
            "div", "divu", "rem", "remu", "divw", "divuw", "remw", "remuw"])
        return [f"{op} {self.xw()}, {self.xr()}, {self.xr()}"]

    def alu_ri(self) -> list[str]:
        op = self.rng.choice(["addi", "slti", "sltiu", "xori", "ori", "andi",
                              "slli", "srli", "srai", "addiw", "slliw", "srliw", "sraiw"])
        if op in ("slli", "srli", "srai"):
            imm = self.rng.choice([0, 1, 31, 32, 63, self.rng.randrange(64)])
        elif op in ("slliw", "srliw", "sraiw"):
            imm = self.rng.choice([0, 1, 31, self.rng.randrange(32)])
        else:
            imm = self.rng.choice([0, -1, 1, 2047, -2048, self.rng.randint(-2048, 2047)])
        return [f"{op} {self.xw()}, {self.xr()}, {imm}"]

    def upper(self) -> list[str]:
        op = self.rng.choice(["lui", "auipc"])
        imm = self.rng.choice([0, 0x80000, 0xFFFFF, 0x7FFFF, self.rng.randrange(1 << 20)])
        return [f"{op} {self.xw()}, {imm:#x}"]

    def load(self) -> list[str]:
        op, size = self.rng.choice([("lb", 1), ("lbu", 1), ("lh", 2), ("lhu", 2),
                                    ("lw", 4), ("lwu", 4), ("ld", 8)])
        if self.rng.random() < 0.2:             # via sp = data + 1024
            off = self.rng.randrange(-SP_OFFSET, 2048 - size + 1, size)
            return [f"{op} {self.xw()}, {off}(sp)"]
        return [f"{op} {self.xw()}, {self.mem_offset(size)}(s0)"]

    def store(self) -> list[str]:
        op, size = self.rng.choice([("sb", 1), ("sh", 2), ("sw", 4), ("sd", 8)])
        return [f"{op} {self.xr()}, {self.mem_offset(size)}(s0)"]

    def amo(self) -> list[str]:
        width = self.rng.choice(["w", "d"])
        size = 4 if width == "w" else 8
        op = self.rng.choice(["amoswap", "amoadd", "amoxor", "amoand", "amoor",
                              "amomin", "amomax", "amominu", "amomaxu"])
        order = self.rng.choice(["", "", ".aq", ".rl", ".aqrl"])
        rd = self.rng.choice([self.xw(), "x0"])
        return [f"addi x31, s0, {self.mem_offset(size)}",
                f"{op}.{width}{order} {rd}, {self.xr()}, (x31)"]

    def lr_sc(self) -> list[str]:
        """LR then SC of the same width and address (succeeds), a lone SC (no
        reservation: fails) or an SC far from the LR's address (fails: outside
        any reservation set, Unprivileged ISA 8.2).  Nothing between the two
        touches memory, and widths never mix: QEMU 7.2 implements SC as a
        compare-and-swap against the value LR loaded."""
        width = self.rng.choice(["w", "d"])
        size = 4 if width == "w" else 8
        kind = self.rng.random()
        first = self.mem_offset(size)
        if kind < 0.15:
            return [f"addi x31, s0, {first}",
                    f"sc.{width} {self.xw()}, {self.xr()}, (x31)"]
        lines = [f"addi x31, s0, {first}",
                 f"lr.{width} {self.xw()}, (x31)"]
        for _ in range(self.rng.randrange(3)):
            lines += self.alu_rr()
        if kind < 0.3:
            other = first
            while abs(other - first) < 128:
                other = self.mem_offset(size)
            lines.append(f"addi x31, s0, {other}")
        lines.append(f"sc.{width} {self.xw()}, {self.xr()}, (x31)")
        return lines

    def compressed(self) -> list[str]:
        g = self.rng

        def cw() -> str:                        # rd' (x9..x15)
            return f"x{g.choice(C_WRITABLE)}"

        def cr() -> str:                        # rs' (x8..x15)
            return f"x{g.choice(C_READABLE)}"

        nz = self.xw                            # never x0 or sp
        kind = g.randrange(20)
        if kind == 0:
            return [f"c.addi {nz()}, {g.choice([-32, -1, 1, 31, g.randint(1, 31)])}"]
        if kind == 1:
            return [f"c.addiw {nz()}, {g.randint(-32, 31)}"]
        if kind == 2:
            return [f"c.li {nz()}, {g.randint(-32, 31)}"]
        if kind == 3:
            imm = g.choice([g.randint(1, 31), g.randint(0xFFFE0, 0xFFFFF)])
            return [f"c.lui {nz()}, {imm:#x}"]
        if kind == 4:
            return [f"c.slli {nz()}, {g.choice([1, 31, 32, 63, g.randint(1, 63)])}"]
        if kind == 5:
            return [f"c.{g.choice(['srli', 'srai'])} {cw()}, {g.choice([1, 31, 32, 63, g.randint(1, 63)])}"]
        if kind == 6:
            return [f"c.andi {cw()}, {g.randint(-32, 31)}"]
        if kind == 7:
            return [f"c.mv {nz()}, x{g.choice(range(1, 32))}"]
        if kind == 8:
            return [f"c.add {nz()}, x{g.choice(range(1, 32))}"]
        if kind == 9:
            op = g.choice(["and", "or", "xor", "sub", "addw", "subw"])
            return [f"c.{op} {cw()}, {cr()}"]
        if kind == 10:
            return [f"c.ld {cw()}, {g.randrange(0, 256, 8)}(s0)"]
        if kind == 11:
            return [f"c.lw {cw()}, {g.randrange(0, 128, 4)}(s0)"]
        if kind == 12:
            return [f"c.sd {cr()}, {g.randrange(0, 256, 8)}(s0)"]
        if kind == 13:
            return [f"c.sw {cr()}, {g.randrange(0, 128, 4)}(s0)"]
        if kind == 14:
            op, step, top = g.choice([("c.ldsp", 8, 512), ("c.lwsp", 4, 256)])
            return [f"{op} {nz()}, {g.randrange(0, top, step)}(sp)"]
        if kind == 15:
            op, step, top = g.choice([("c.sdsp", 8, 512), ("c.swsp", 4, 256)])
            return [f"{op} {self.xr()}, {g.randrange(0, top, step)}(sp)"]
        if kind == 16:
            return [f"c.addi4spn {cw()}, sp, {g.randrange(4, 1024, 4)}"]
        if kind == 17:
            f = f"f{g.choice(F_COMPRESSED)}"
            return [g.choice([f"c.fld {f}, {g.randrange(0, 256, 8)}(s0)",
                              f"c.fsd {f}, {g.randrange(0, 256, 8)}(s0)"])]
        if kind == 18:
            f = self.fr()
            return [g.choice([f"c.fldsp {f}, {g.randrange(0, 512, 8)}(sp)",
                              f"c.fsdsp {f}, {g.randrange(0, 512, 8)}(sp)"])]
        return ["c.nop"]

    def fp_arith(self) -> list[str]:
        g = self.rng
        t = g.choice(["s", "d"])
        kind = g.randrange(8)
        if kind < 3:
            op = g.choice(["fadd", "fsub", "fmul", "fdiv"])
            return [f"{op}.{t} {self.fr()}, {self.fr()}, {self.fr()}, {self.rm()}"]
        if kind == 3:
            return [f"fsqrt.{t} {self.fr()}, {self.fr()}, {self.rm()}"]
        if kind == 4:
            op = g.choice(["fmadd", "fmsub", "fnmsub", "fnmadd"])
            return [f"{op}.{t} {self.fr()}, {self.fr()}, {self.fr()}, {self.fr()}, {self.rm()}"]
        if kind == 5:
            op = g.choice(["fmin", "fmax", "fsgnj", "fsgnjn", "fsgnjx"])
            return [f"{op}.{t} {self.fr()}, {self.fr()}, {self.fr()}"]
        if kind == 6:
            op = g.choice(["feq", "flt", "fle"])
            return [f"{op}.{t} {self.xw()}, {self.fr()}, {self.fr()}"]
        return [f"fclass.{t} {self.xw()}, {self.fr()}"]

    def fp_convert(self) -> list[str]:
        g = self.rng
        kind = g.randrange(6)
        if kind < 2:                            # float -> integer
            t = g.choice(["s", "d"])
            i = g.choice(["w", "wu", "l", "lu"])
            return [f"fcvt.{i}.{t} {self.xw()}, {self.fr()}, {self.rm()}"]
        if kind < 4:                            # integer -> float
            t = g.choice(["s", "d"])
            i = g.choice(["w", "wu", "l", "lu"])
            if t == "d" and i in ("w", "wu"):   # exact: no rounding operand
                return [f"fcvt.d.{i} {self.fr()}, {self.xr()}"]
            return [f"fcvt.{t}.{i} {self.fr()}, {self.xr()}, {self.rm()}"]
        if kind == 4:
            return [f"fcvt.s.d {self.fr()}, {self.fr()}, {self.rm()}"]
        return [f"fcvt.d.s {self.fr()}, {self.fr()}"]

    def fp_move(self) -> list[str]:
        g = self.rng
        return [g.choice([
            f"fmv.x.w {self.xw()}, {self.fr()}",
            f"fmv.w.x {self.fr()}, {self.xr()}",
            f"fmv.x.d {self.xw()}, {self.fr()}",
            f"fmv.d.x {self.fr()}, {self.xr()}",
        ])]

    def fp_mem(self) -> list[str]:
        g = self.rng
        op, size = g.choice([("flw", 4), ("fsw", 4), ("fld", 8), ("fsd", 8)])
        return [f"{op} {self.fr()}, {self.mem_offset(size)}(s0)"]

    def fp_csr(self) -> list[str]:
        g = self.rng
        return [g.choice([
            f"fsrmi {g.randrange(5)}",          # frm 5..7 would make dyn illegal
            f"fsflagsi {g.randrange(32)}",
            f"frflags {self.xw()}",
            f"frrm {self.xw()}",
            f"frcsr {self.xw()}",
            f"fsflags {self.xw()}, {self.xr()}",
            "fsflags x0",
        ])]

    SIMPLE = [("alu_rr", 14), ("alu_ri", 12), ("upper", 2), ("load", 6),
              ("store", 5), ("amo", 3), ("lr_sc", 2), ("compressed", 10),
              ("fp_arith", 12), ("fp_convert", 6), ("fp_move", 3), ("fp_mem", 3),
              ("fp_csr", 2)]

    def simple(self) -> list[str]:
        names, weights = zip(*self.SIMPLE)
        return getattr(self, self.rng.choices(names, weights)[0])()

    def control(self) -> list[str]:
        """A forward jump or branch over 1-4 simple units."""
        g = self.rng
        target = self.label()
        body = [line for _ in range(g.randint(1, 4)) for line in self.simple()]
        kind = g.randrange(7)
        if kind < 3:
            op = g.choice(["beq", "bne", "blt", "bge", "bltu", "bgeu"])
            head = [f"{op} {self.xr()}, {self.xr()}, {target}"]
        elif kind == 3:
            head = [f"c.{g.choice(['beqz', 'bnez'])} x{g.choice(C_READABLE)}, {target}"]
        elif kind == 4:
            head = [g.choice([f"jal {self.xw()}, {target}", f"c.j {target}", f"j {target}"])]
        elif kind == 5:                         # jalr; bit 0 of the sum is dropped
            bias, off = g.choice([0, 1]), g.choice([0, 4, -4, 1, -1])
            head = [f"la x30, {target} + {bias} - ({off})",
                    f"jalr {g.choice([self.xw(), 'x0'])}, {off}(x30)"]
        else:
            head = [f"la x30, {target}", g.choice(["c.jr x30", "c.jalr x30"])]
        return head + body + [f"{target}:"]

    def instructions(self, length: int) -> list[str]:
        """About `length` instructions (units are not split)."""
        out: list[str] = []
        count = 0
        while count < length:
            unit = self.control() if self.rng.random() < 0.08 else self.simple()
            out += unit
            count += sum(1 for line in unit if not line.endswith(":"))
        return out


@dataclass
class Sequence:
    seed: int
    length: int
    x: list[int] = field(default_factory=list)     # x0..x31 (pointers filled in asm)
    f: list[int] = field(default_factory=list)
    fcsr: int = 0
    data: bytes = b""
    body: list[str] = field(default_factory=list)


def generate_sequence(seed: int, length: int) -> Sequence:
    g = _Gen(seed, f"s{seed}")
    seq = Sequence(seed=seed, length=length)
    seq.x = [0] + [g.x_value() for _ in range(31)]
    seq.f = [g.f_value() for _ in range(32)]
    seq.fcsr = (g.rng.randrange(5) << 5) | g.rng.randrange(32)
    seq.data = g.data_image()
    seq.body = g.instructions(length)
    return seq


def _state_table(name: str, seq: Sequence) -> list[str]:
    xs = []
    for r, v in enumerate(seq.x):
        if r == 2:
            xs.append(f"data_region + {SP_OFFSET}")
        elif r == 8:
            xs.append(f"data_region + {S0_OFFSET}")
        else:
            xs.append(f"{v:#x}")
    lines = [f"{name}_state:"]
    lines += [f"        .dword  {v}" for v in xs]
    lines += [f"        .dword  {v:#x}" for v in seq.f]
    lines += [f"        .dword  {seq.fcsr:#x}"]
    lines += [f"{name}_data:"]
    words = struct.unpack(f"<{DATA_SIZE // 8}Q", seq.data)
    for i in range(0, len(words), 4):
        lines.append("        .dword  " + ", ".join(f"{w:#x}" for w in words[i:i + 4]))
    return lines


def generate_program(seqs: list[Sequence]) -> str:
    """Assembly text of a program running `seqs` in order, dumping after each."""
    text = [
        "/* generated by tests/diff/gen.py, do not edit */",
        '#include "runtime.h"',
        "        .option rvc",
        "        .text",
        "        .globl  run_sequences",
        "run_sequences:",
    ]
    data = ["        .section .rodata", "        .balign 8"]
    for n, seq in enumerate(seqs):
        name = f"seq{n}"
        text += [
            f"/* ---- sequence {n}: seed {seq.seed}, {seq.length} instructions */",
            f"        la      a0, {name}_data",
            "        call    copy_data",
            f"        LOAD_STATE {name}_state",
        ]
        text += [line if line.endswith(":") else f"        {line}" for line in seq.body]
        text += [
            "        SAVE_STATE",
            f"        li      a0, {n}",
            "        call    dump_state",
        ]
        data += _state_table(name, seq)
    text += ["        j       diff_pass", ""]
    return "\n".join(text + data) + "\n"


# ---- dump parsing ---------------------------------------------------------------
REG_NAMES = ([f"x{i}" for i in range(1, 32)] + [f"f{i}" for i in range(32)]
             + ["fcsr"] + [f"mem[{i * 256:#05x}:{(i + 1) * 256:#05x}]" for i in range(16)])


class DumpError(Exception):
    """The console output is not a well-formed sequence of dumps."""


def parse_dumps(console: bytes) -> list[dict[str, int]]:
    """Split console output into one {register name: value} dict per sequence,
    in order.  A truncated last dump is dropped (the caller compares counts)."""
    lines = console.decode("ascii", "replace").splitlines()
    dumps: list[dict[str, int]] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("seq "):
            i += 1
            continue
        block = lines[i + 1:i + 1 + len(REG_NAMES) + 1]
        if len(block) < len(REG_NAMES) + 1 or block[-1] != "end":
            break
        try:
            values = [int(v, 16) for v in block[:-1]]
        except ValueError as e:
            raise DumpError(f"bad dump line near sequence {len(dumps)}: {e}") from None
        dumps.append(dict(zip(REG_NAMES, values)))
        i += len(REG_NAMES) + 2
    return dumps


def first_difference(a: dict[str, int], b: dict[str, int]) -> str | None:
    for name in REG_NAMES:
        if a.get(name) != b.get(name):
            return name
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--length", "-n", type=int, default=200)
    ap.add_argument("--count", type=int, default=1, help="sequences, seeds seed..seed+count-1")
    ap.add_argument("-o", "--output", default="-")
    args = ap.parse_args()
    seqs = [generate_sequence(args.seed + i, args.length) for i in range(args.count)]
    text = generate_program(seqs)
    if args.output == "-":
        print(text, end="")
    else:
        with open(args.output, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
