"""Copy-and-patch stencils: the baseline tier's machine code, built by LLVM once.

A stencil is the x86-64 code of one guest operation (`add`, `lw`, `bne`,
a block's budget check, an exit...) with holes where the guest operands
go.  They are written here as LLVM IR functions, compiled together by
llvmlite into one object at the first start (and cached on disk beside the
numba cache), and cut apart by their symbols; emit.py then builds a
translation by copying stencils one after another and patching their holes,
a few hundred nanoseconds per guest instruction, with no LLVM at run time
(Xu and Kjolstad, "Copy-and-Patch Compilation", OOPSLA 2021; CPython 3.13's
JIT; shared/design/JIT.md B4).

The holes are references to external symbols, found from the object's
relocations (System V ABI AMD64 supplement 4.4.1):

- `@RD`, `@RS1`, `@RS2`: byte offsets of guest registers in x[] (r * 8);
- `@IMM`: an immediate, biased by 2**31 so the symbol's value is never
  negative (the small code model's assumption); the IR subtracts the bias,
  which LLVM folds into the relocation's addend;
- `@PCOFF`: a guest pc as an offset from the page base (st[JIT_PAGE_BASE],
  which the interpreter sets at entry: a translation never leaves its
  page), biased by 2**21;
- `@K`: an exit's return value before the remaining budget is added;
- `@N`: the instruction count a block's budget check subtracts;
- `@SITE`: the address of a chaining jump (below);
- `@CONT` and `@TAKEN`: the code that runs next (a tail call: `jmp`, or
  `jcc` for a branch).  A stencil that ends in `jmp CONT` loses those five
  bytes and falls through into the next one.

Every stencil has the one signature

    i64 stencil(x*, st*, ram*, tlb_tag*, tlb_off*, i64 rem)

(all six in registers), where `rem` is the budget left: instructions the
translation may still retire before the interpreter's next check point.
An exit returns (rem << 2) + K with st[PC] set, K = (not-retired << 2) |
flag, so the interpreter learns how many instructions ran.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vmkit.cpu import state as S
from vmkit.cpu.alu import alu_legal
from vmkit.cpu.amo import amo_op_valid
from vmkit.cpu.ir import (BRANCH_CMP, _Fn, alu_value, amo_rmw, host_pointer, load_value,
                          store_value, tlb_check)
from vmkit.cpu.jit import njit
from vmkit.cpu.jitconfig import JitError

IMM_BIAS = 1 << 31
PCOFF_BIAS = 1 << 21
# Hole kinds (column H_KIND of the holes table).
HOLE_NAMES = ("RD", "RS1", "RS2", "IMM", "PCOFF", "K", "N", "SITE", "CONT", "TAKEN")
H_RD, H_RS1, H_RS2, H_IMM, H_PCOFF, H_K, H_N, H_SITE, H_CONT, H_TAKEN = range(len(HOLE_NAMES))
BIAS = {H_IMM: IMM_BIAS, H_PCOFF: PCOFF_BIAS}

# x86-64 relocation types a stencil may use (System V AMD64 ABI, table 4.10).
R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32 = 1, 2, 4
R_X86_64_32, R_X86_64_32S, R_X86_64_16, R_X86_64_8 = 10, 11, 12, 14
RELOC_TYPES = (R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_32, R_X86_64_32S,
               R_X86_64_16, R_X86_64_8)

# The stencil table's columns (sinfo) and the holes table's (sholes).
SI_START, SI_LEN, SI_HOLE0, SI_HOLES, SI_DROP, SI_COLUMNS = range(6)
SH_OFF, SH_TYPE, SH_KIND, SH_ADDEND, SH_COLUMNS = range(5)

# Instruction classes -> stencil ids (smap): opcode bits [6:2], funct3, and a
# variant: funct7 0, 0x20 or 1 (OP, OP-32), bit 30 (OP-IMM shifts), else 0.
@njit
def class_key(opc: int, f3: int, variant: int) -> int:
    return (((opc >> 2) & 31) << 5) | (f3 << 2) | variant


@njit
def amo_key(aop: int, word: bool) -> int:
    """AMOs (funct5 aop, .w or .d) after the class keys."""
    return 1024 + (aop << 1) + (1 if word else 0)


SMAP_SIZE = 1 << 11
ARGS = "ptr %x, ptr %st, ptr %ram, ptr %tag, ptr %off, i64 %rem"
SIG = "(ptr, ptr, ptr, ptr, ptr, i64)"


def _hole(name: str) -> str:
    return f"ptrtoint (ptr @{name} to i64)"


def _biased(name: str, bias: int) -> str:
    return f"sub (i64 {_hole(name)}, i64 {bias})"


IMM = _biased("IMM", IMM_BIAS)
PCOFF = _biased("PCOFF", PCOFF_BIAS)


class _Stencil:
    """One stencil function's IR, built line by line."""

    def __init__(self, name: str):
        self.name = name
        self.fn = _Fn()

    def reg(self, hole: str) -> str:
        return self.fn.v(f"getelementptr inbounds i8, ptr %x, i64 {_hole(hole)}")

    def get(self, hole: str) -> str:
        return self.fn.v(f"load i64, ptr {self.reg(hole)}, align 8")

    def set(self, hole: str, value: str) -> None:
        self.fn.emit(f"store i64 {value}, ptr {self.reg(hole)}, align 8")

    def page_pc(self, offset: str) -> str:
        """page base + offset: a guest pc inside (or near) the translation's page."""
        bp = self.fn.v(f"getelementptr inbounds i64, ptr %st, i64 {S.JIT_PAGE_BASE}")
        return self.fn.v(f"add i64 {self.fn.v(f'load i64, ptr {bp}, align 8')}, {offset}")

    def leave(self, pc: str, k: str, rem: str = "%rem") -> None:
        """st[PC] = pc; return (rem << 2) + k."""
        fn = self.fn
        pp = fn.v(f"getelementptr inbounds i64, ptr %st, i64 {S.PC}")
        fn.emit(f"store i64 {pc}, ptr {pp}, align 8")
        shifted = fn.v(f"shl i64 {rem}, 2")
        fn.emit(f"ret i64 {fn.v(f'add i64 {shifted}, {k}')}")

    def go(self, target: str = "CONT", rem: str = "%rem") -> None:
        r = self.fn.v(f"musttail call i64 @{target}(ptr %x, ptr %st, ptr %ram, ptr %tag, "
                      f"ptr %off, i64 {rem})")
        self.fn.emit(f"ret i64 {r}")

    def side_exit(self, ok: str) -> None:
        """Continue when ok, else leave before this instruction (pc PCOFF, K)."""
        self.fn.emit(f"br i1 {ok}, label %go, label %out, !prof !0")
        self.fn.label("out")
        self.leave(self.page_pc(PCOFF), _hole("K"))
        self.fn.label("go")

    def text(self) -> str:
        return "\n".join([f"define i64 @{self.name}({ARGS}) #0 {{"] + self.fn.lines + ["}"])


def _alu_stencils():
    """(stencil, class key) of every legal OP-IMM, OP-IMM-32, OP and OP-32
    operation, as the interpreter's decoders (alu.py) define legal."""
    for opc in (0x13, 0x1B, 0x33, 0x3B):
        for f3 in range(8):
            for v in range(3):
                f7 = (0, 0x20, 1)[v]
                if opc in (0x13, 0x1B) and (f7 == 1 or f7 and f3 not in (1, 5)):
                    continue            # bit 30 is part of the immediate but in srai[w]
                if not alu_legal(opc | (f3 << 12) | (f7 << 25)):
                    continue
                s = _Stencil(f"alu_{opc:x}_{f3}_{v}")
                a = s.get("RS1")
                c = s.get("RS2") if opc in (0x33, 0x3B) else ""
                sh = s.fn.v(f"and i64 {IMM}, 63")
                sh32 = s.fn.v(f"and i64 {IMM}, 31")
                s.set("RD", alu_value(s.fn, opc, f3, f7, a, c, IMM, sh, sh32))
                s.go()
                yield s, class_key(opc, f3, v)


def _memory_stencils():
    for f3 in (0, 1, 2, 3, 4, 5, 6):
        s = _Stencil(f"load_{f3}")
        fn = s.fn
        addr = fn.v(f"add i64 {s.get('RS1')}, {IMM}")
        ctx = fn.v(f"load i64, ptr {fn.v(f'getelementptr inbounds i64, ptr %st, i64 {S.TLB_CTX}')}")
        ok, slot = tlb_check(fn, addr, S.TLB_LOAD, 1 << (f3 & 3), ctx)
        s.side_exit(ok)
        s.set("RD", load_value(fn, host_pointer(fn, addr, slot), f3))
        s.go()
        yield s, class_key(0x03, f3, 0)
    for f3 in (0, 1, 2, 3):
        s = _Stencil(f"store_{f3}")
        fn = s.fn
        addr = fn.v(f"add i64 {s.get('RS1')}, {IMM}")
        value = s.get("RS2")
        ctx = fn.v(f"load i64, ptr {fn.v(f'getelementptr inbounds i64, ptr %st, i64 {S.TLB_CTX}')}")
        ok, slot = tlb_check(fn, addr, S.TLB_STORE, 1 << f3, ctx)
        s.side_exit(ok)
        store_value(fn, host_pointer(fn, addr, slot), f3, value)
        s.go()
        yield s, class_key(0x23, f3, 0)


def _amo_stencils():
    """Read-modify-write AMOs, aligned and hitting the store TLB (interp.py's
    fast path; LR/SC stay with the interpreter, which owns the reservation)."""
    for aop in range(32):
        for word in (True, False) if amo_op_valid(aop) else ():
            size = 4 if word else 8
            s = _Stencil(f"amo_{aop:x}_{size}")
            fn = s.fn
            addr = s.get("RS1")
            src = s.get("RS2")
            ctx = fn.v(f"load i64, ptr {fn.v(f'getelementptr inbounds i64, ptr %st, i64 {S.TLB_CTX}')}")
            ok, slot = tlb_check(fn, addr, S.TLB_STORE, size, ctx)
            aligned = fn.v(f"icmp eq i64 {fn.v(f'and i64 {addr}, {size - 1}')}, 0")
            s.side_exit(fn.v(f"and i1 {ok}, {aligned}"))
            s.set("RD", amo_rmw(fn, aop, word, host_pointer(fn, addr, slot), src))
            s.go()
            yield s, amo_key(aop, word)


def _flow_stencils():
    for f3, cmp in BRANCH_CMP.items():
        s = _Stencil(f"branch_{f3}")
        taken = s.fn.v(f"icmp {cmp} i64 {s.get('RS1')}, {s.get('RS2')}")
        s.fn.emit(f"br i1 {taken}, label %t, label %n")
        s.fn.label("t")
        s.go("TAKEN")
        s.fn.label("n")
        s.go()
        yield s, class_key(0x63, f3, 0)
    s = _Stencil("lui")
    s.set("RD", IMM)
    s.go()
    yield s, class_key(0x37, 0, 0)
    s = _Stencil("auipc")                 # also jal's link: page base + offset
    s.set("RD", s.page_pc(IMM))
    s.go()
    yield s, class_key(0x17, 0, 0)


def _control_stencils():
    """The stencils that are not one guest instruction (emit.py uses them by name)."""
    s = _Stencil("check")                 # a block's start: enough budget for N instructions?
    left = s.fn.v(f"sub i64 %rem, {_hole('N')}")
    ok = s.fn.v(f"icmp sge i64 {left}, 0")
    s.fn.emit(f"br i1 {ok}, label %go, label %out, !prof !0")
    s.fn.label("out")
    s.leave(s.page_pc(PCOFF), _hole("K"))
    s.fn.label("go")
    s.go(rem=left)
    yield s
    s = _Stencil("zero_x0")               # after a load or AMO whose rd is x0
    s.fn.emit("store i64 0, ptr %x, align 8")
    s.go()
    yield s
    s = _Stencil("exit")                  # leave at PCOFF
    s.leave(s.page_pc(PCOFF), _hole("K"))
    yield s
    s = _Stencil("jump")                  # jal's transfer: to TAKEN
    s.go("TAKEN")
    yield s
    # An exit stub that may be chained: emit.py puts a `jump` to the next
    # instruction before it, whose rel32 field (SITE) interp.run repoints at
    # the target's translation once there is one in the same page.
    s = _Stencil("exit_chain")
    sp = s.fn.v(f"getelementptr inbounds i64, ptr %st, i64 {S.JIT_CHAIN_SITE}")
    s.fn.emit(f"store i64 {_hole('SITE')}, ptr {sp}, align 8")
    s.leave(s.page_pc(PCOFF), _hole("K"))
    yield s
    for link in (False, True):            # jalr: rd = pc + length (PCOFF), leave at x[rs1] + imm
        s = _Stencil("jalr_link" if link else "jalr")
        target = s.fn.v(f"add i64 {s.get('RS1')}, {IMM}")
        t = s.fn.v(f"and i64 {target}, -2")
        if link:
            s.set("RD", s.page_pc(PCOFF))
        s.leave(t, _hole("K"))
        yield s


CONTROL = ("check", "zero_x0", "exit", "jump", "exit_chain", "jalr", "jalr_link")


def stencil_ir() -> tuple[str, list[str], dict[str, int]]:
    """The module text, the stencil names in id order, and class key -> id."""
    names, keys, bodies = [], {}, []
    for s in _control_stencils():
        names.append(s.name)
        bodies.append(s.text())
    for gen in (_alu_stencils(), _memory_stencils(), _amo_stencils(), _flow_stencils()):
        for s, key in gen:
            keys[key] = len(names)
            names.append(s.name)
            bodies.append(s.text())
    head = [f"@{h} = external dso_local global i8" for h in HOLE_NAMES[:H_CONT]]
    head += [f"declare i64 @CONT{SIG}", f"declare i64 @TAKEN{SIG}"]
    tail = ['attributes #0 = { nounwind "frame-pointer"="none" "no-jump-tables"="true" }',
            '!0 = !{!"branch_weights", i32 1000, i32 1}']
    return "\n".join(head + bodies + tail) + "\n", names, keys


@dataclass
class StencilSet:
    """The tables emit.py works from (numpy, for numba)."""
    sbytes: np.ndarray          # uint8: every stencil's code, one after another
    sinfo: np.ndarray           # int64 [stencil, SI_*]
    sholes: np.ndarray          # int64 [hole, SH_*]
    smap: np.ndarray            # int64 [class key] -> stencil id, -1: none
    names: list

    def id(self, name: str) -> int:
        return self.names.index(name)


def build_stencils(ir: tuple | None = None) -> StencilSet:
    """Compile the stencils (`stencil_ir()`'s result) with LLVM -O2 and cut
    the object apart."""
    import llvmlite.binding as llvm
    from vmkit.cpu.codecache import SHF_ALLOC, CodeCacheError, elf_tables
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    text, names, keys = ir or stencil_ir()
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                      features=llvm.get_host_cpu_features().flatten(),
                                      opt=2, reloc="static", codemodel="small")
    mod = llvm.parse_assembly(text)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    try:
        sections, symbols, relocations = elf_tables(tm.emit_object(mod))
    except CodeCacheError as e:
        raise JitError(f"building the stencils: {e}") from None
    text_sec = next(i for i, sec in enumerate(sections) if sec[0] == ".text")
    code = sections[text_sec][4]
    funcs = {name: (value, size) for name, shndx, value, size, is_func in symbols
             if shndx == text_sec and is_func}
    others = [sec[0] for i, sec in enumerate(sections) if sec[2] & SHF_ALLOC and sec[5] and i != text_sec]
    if others:
        raise JitError(f"the stencils need sections {others}: not supported")
    sbytes = bytearray()
    sinfo = np.zeros((len(names), SI_COLUMNS), np.int64)
    holes = []
    for sid, name in enumerate(names):
        start, size = funcs[name]
        body = code[start:start + size]
        mine = sorted((off - start, rtype, symbols[sym][0], addend)
                      for sec, off, rtype, sym, addend in relocations
                      if sec == text_sec and start <= off < start + size)
        sinfo[sid, SI_START] = len(sbytes)
        sinfo[sid, SI_LEN] = size
        sinfo[sid, SI_HOLE0] = len(holes)
        for off, rtype, sym, addend in mine:
            if sym not in HOLE_NAMES or rtype not in RELOC_TYPES:
                raise JitError(f"stencil {name}: relocation {rtype} against {sym!r}")
            holes.append((off, rtype, HOLE_NAMES.index(sym), addend))
        sinfo[sid, SI_HOLES] = len(holes) - sinfo[sid, SI_HOLE0]
        last = mine[-1] if mine else None
        # `jmp CONT` as the last instruction: the next stencil follows instead.
        if (last and last[2] == "CONT" and last[0] == size - 4 and size >= 5
                and body[size - 5] == 0xE9):
            sinfo[sid, SI_DROP] = 1
        sbytes += body
    smap = np.full(SMAP_SIZE, -1, np.int64)
    for key, sid in keys.items():
        smap[key] = sid
    return StencilSet(np.frombuffer(bytes(sbytes), np.uint8).copy(), sinfo,
                      np.array(holes, np.int64).reshape(-1, SH_COLUMNS), smap, names)


def _cache_file(text: str) -> Path:
    from vmkit.cpu.jit import CACHE_DIR
    import llvmlite.binding as llvm
    h = hashlib.sha256(text.encode())
    h.update(llvm.get_host_cpu_name().encode())
    h.update(llvm.get_host_cpu_features().flatten().encode())
    return CACHE_DIR / f"stencils-{h.hexdigest()[:16]}.npz"


def load_stencils() -> StencilSet:
    """The stencil set, from the on-disk cache when it is there (else built and saved)."""
    ir = stencil_ir()
    path = _cache_file(ir[0])
    names = ir[1]
    try:
        with np.load(path) as z:
            return StencilSet(z["sbytes"], z["sinfo"], z["sholes"], z["smap"], names)
    except (OSError, KeyError, ValueError):
        pass
    st = build_stencils(ir)
    try:
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, sbytes=st.sbytes, sinfo=st.sinfo, sholes=st.sholes, smap=st.smap)
        os.replace(tmp, path)
    except OSError:
        pass                    # read-only cache: built again next time (about 0.3 s)
    return st

