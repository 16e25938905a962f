"""LLVM IR for one region (region.py): guest RV64 code as a host function.

The function works on the hart's own arrays, with the signature callcode.py
calls:

    i64 region(x*, f*, csr*, st*, ram*, tlb_tag*, tlb_off*, i64 limit)

- Guest integer registers live in allocas that LLVM promotes to host
  registers; they are loaded at entry and stored back at the one exit.
  f registers and CSRs stay in memory (FP is rarer and goes through
  helpers.py, which works on the arrays).
- Every block first checks that `limit` still covers all its instructions,
  so translated code never passes the interpreter's next interrupt check
  point (shared/design/JIT.md C4, QEMU's icount rule); otherwise it leaves
  at the block's start.
- Loads and stores check vmkit's TLB inline, exactly as interp.py does:
  tag `(vpn << TLB_CTX_BITS) | ctx`, the access inside one page.  A miss
  (page walk, MMIO, CLINT, a code page's store, a fault) leaves *before*
  the access with st[PC] at that instruction, which the interpreter then
  executes: every exit is precise, and nothing needs unwinding.
- The return value is (retired << 2) | RET_LOOKUP when the region ended at
  a block boundary the interpreter should look up (a jump out), else
  (retired << 2).
"""

from vmkit.cpu import csrs as C
from vmkit.cpu import state as S
from vmkit.cpu.decode import funct3, imm_i, imm_s, imm_u, rd, rs1, rs2, rs3
from vmkit.cpu.region import FLOW_BRANCH, FLOW_JAL, FLOW_JALR, OPCODES_FP_OP, Region

RET_LOOKUP = 1
TLB_ROW = S.TLB_SIZE       # tlb_tag/tlb_off are [kind, index] row-major
INT64_MIN = -(1 << 63)

# The OP-FP instructions whose destination is an integer register
# (funct5: compares, fcvt to integer, fmv.x / fclass).
FP_WRITES_X = (0x14, 0x18, 0x1C)


def fp_writes_x(bits: int) -> bool:
    return (bits & 0x7F) == 0x53 and (bits >> 27) in FP_WRITES_X


def fast_fp_op(bits: int) -> str | None:
    """What ir.py does inline for an FP instruction: "sgnj" (double sign
    injection), an LLVM op or "fma" (double arithmetic, with the helper as
    fallback), or None (the helper only).  Static rounding modes other than
    RNE and dynamic ones go through the same run-time check."""
    opc = bits & 0x7F
    rm = funct3(bits)
    if opc in (0x43, 0x47, 0x4B, 0x4F):
        return "fma" if (bits >> 25) & 3 == 1 and rm in (0, 7) else None
    if opc != 0x53:
        return None
    f7 = bits >> 25
    if f7 == 0x11 and rm <= 2:
        return "sgnj"
    if rs2(bits) == 0 and rm == 0 and f7 in (0x71, 0x79):
        return "fmv"            # fmv.x.d / fmv.d.x: bits moved, no flags
    if f7 == 0x69 and rs2(bits) <= 1 and rm <= 4:
        return "fcvt"           # fcvt.d.w[u]: every int32 is a double, exactly
    ops = {0x01: "fadd", 0x05: "fsub", 0x09: "fmul", 0x0D: "fdiv"}
    return ops.get(f7) if rm in (0, 7) else None


def fp_reads_x(bits: int) -> bool:
    """fcvt from integer, fmv.w.x / fmv.d.x read x[rs1]."""
    return (bits & 0x7F) == 0x53 and (bits >> 27) in (0x1A, 0x1E)


class _Fn:
    """Line-by-line IR text with fresh value names."""

    def __init__(self):
        self.lines: list[str] = []
        self.n = 0

    def v(self, text: str) -> str:
        self.n += 1
        name = f"%v{self.n}"
        self.lines.append(f"  {name} = {text}")
        return name

    def emit(self, text: str) -> None:
        self.lines.append(f"  {text}")

    def label(self, name: str) -> None:
        self.lines.append(f"{name}:")
        self.block = name


def _i64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


class RegionIR:
    """Builds the IR of a region; `text()` returns the module."""

    def __init__(self, region: Region, name: str, fp_helper: int):
        self.region = region
        self.name = name
        self.fp_helper = fp_helper
        self.fn = _Fn()
        self.used = set()
        self.written = set()
        self.stubs = 0
        self.exits = []

    # --- registers ---------------------------------------------------------------
    def get(self, r: int) -> str:
        if r == 0:
            return "0"
        self.used.add(r)
        return self.fn.v(f"load i64, ptr %r{r}")

    def set(self, r: int, value: str) -> None:
        if r:
            self.used.add(r)
            self.written.add(r)
            self.fn.emit(f"store i64 {value}, ptr %r{r}")

    def st_ptr(self, index: int) -> str:
        return self.fn.v(f"getelementptr inbounds i64, ptr %st, i64 {index}")

    # --- exits ---------------------------------------------------------------------
    def leave(self, pc: int | str, adj: int, flag: int) -> None:
        """Store st[PC] = pc and go to the one exit; `adj` instructions of the
        current block's budget were not retired.  The exit block's phi takes
        (adj << 2) - flag from each leaving block.  The store keeps each
        leaving block a block of its own: with it folded into the phi,
        LLVM materialized every exit's constants on the hot path."""
        self.fn.emit(f"store i64 {pc}, ptr %stpc")
        self.exits.append((self.fn.block, pc, (adj << 2) - flag))
        self.fn.emit("br label %exit")

    def stub(self, pc: int, adj: int, flag: int) -> str:
        """A label that leaves with these values (branch targets outside the region)."""
        self.stubs += 1
        name = f"s{self.stubs}"
        self._pending.append((name, pc, adj, flag))
        return name

    def goto(self, pc: int, flag: int) -> str:
        """Label for continuing at pc: its block if in the region, else an exit."""
        if pc in self.region.blocks:
            return f"b{pc & 0xFFF:x}"
        return self.stub(pc, 0, flag)

    # --- the function ----------------------------------------------------------------
    def text(self) -> str:
        fn = self.fn
        self._pending = []
        for block in self.region.blocks.values():
            self.block(block)
        for name, pc, adj, flag in self._pending:
            fn.label(name)
            self.leave(pc, adj, flag)
        body = fn.lines
        fn.lines = []
        fn.label("exit")
        xk = fn.v("phi i64 " + ", ".join(f"[ {k}, %{b} ]" for b, _, k in self.exits))
        for r in sorted(self.written):
            p = fn.v(f"getelementptr inbounds i64, ptr %x, i64 {r}")
            val = fn.v(f"load i64, ptr %r{r}")
            fn.emit(f"store i64 {val}, ptr {p}")
        rem = fn.v("load i64, ptr %rem")
        done = fn.v(f"sub i64 %limit, {rem}")
        shifted = fn.v(f"shl i64 {done}, 2")
        ret = fn.v(f"sub i64 {shifted}, {xk}")   # (retired << 2) | flag
        fn.emit(f"ret i64 {ret}")
        exit_lines = fn.lines
        fn.lines = []
        fn.label("entry")
        fn.emit("%rem = alloca i64")
        for r in sorted(self.used):
            fn.emit(f"%r{r} = alloca i64")
        fn.emit("store i64 %limit, ptr %rem")
        for r in sorted(self.used):
            p = fn.v(f"getelementptr inbounds i64, ptr %x, i64 {r}")
            val = fn.v(f"load i64, ptr {p}")
            fn.emit(f"store i64 {val}, ptr %r{r}")
        ctxp = self.st_ptr(S.TLB_CTX)
        fn.emit(f"%ctx = load i64, ptr {ctxp}")
        fn.emit(f"%stpc = getelementptr inbounds i64, ptr %st, i64 {S.PC}")
        fn.emit(f"br label %b{self.region.entry & 0xFFF:x}")
        entry_lines = fn.lines
        args = ", ".join(f"ptr noalias nocapture %{a}" for a in
                         ("x", "f", "csr", "st", "ram", "tag", "off"))
        head = [f"define i64 @{self.name}({args}, i64 %limit) #0 {{"]
        tail = ["}", "",
                "declare double @llvm.fabs.f64(double)",
                "declare double @llvm.fma.f64(double, double, double)",
                'attributes #0 = { nounwind "no-jump-tables"="true" "frame-pointer"="none" }']
        return "\n".join(head + entry_lines + body + exit_lines + tail) + "\n"

    def block(self, block) -> None:
        fn = self.fn
        n = len(block.insns)
        fn.label(f"b{block.pc & 0xFFF:x}")
        rem = fn.v("load i64, ptr %rem")
        ok = fn.v(f"icmp sge i64 {rem}, {n}")
        go = f"g{block.pc & 0xFFF:x}"
        fn.emit(f"br i1 {ok}, label %{go}, label %{self.stub(block.pc, 0, 0)}")
        fn.label(go)
        left = fn.v(f"sub i64 {rem}, {n}")
        fn.emit(f"store i64 {left}, ptr %rem")
        for k, insn in enumerate(block.insns):
            self.adj = n - k        # not retired if we leave before this instruction
            if self.insn(insn):
                return              # the instruction ended the block itself
        end = block.end_pc
        if end in self.region.blocks:
            fn.emit(f"br label %{self.goto(end, 0)}")
        else:  # an instruction the interpreter must run, or the next page
            same_page = (end >> 12) == (block.pc >> 12)
            self.leave(end, 0, 0 if same_page else RET_LOOKUP)

    # --- memory ----------------------------------------------------------------------
    def host_address(self, addr: str, kind: int, size: int, insn) -> str:
        """Pointer into RAM for a TLB-hit access of `size` bytes at guest addr;
        otherwise leave before the instruction."""
        ok, slot = tlb_check(self.fn, addr, kind, size, "%ctx")
        self._check(ok, insn)
        return host_pointer(self.fn, addr, slot)

    def _check(self, ok: str, insn) -> None:
        """Continue when ok, else leave before insn."""
        fn = self.fn
        self.stubs += 1
        cont = f"c{self.stubs}"
        fn.emit(f"br i1 {ok}, label %{cont}, label %{self.stub(insn.pc, self.adj, 0)}")
        fn.label(cont)

    def load(self, insn) -> None:
        b = insn.bits
        f3 = funct3(b)
        addr = self.fn.v(f"add i64 {self.get(rs1(b))}, {imm_i(b)}")
        p = self.host_address(addr, S.TLB_LOAD, 1 << (f3 & 3), insn)
        self.set(rd(b), load_value(self.fn, p, f3))

    def store(self, insn) -> None:
        b = insn.bits
        f3 = funct3(b)
        addr = self.fn.v(f"add i64 {self.get(rs1(b))}, {imm_s(b)}")
        value = self.get(rs2(b))
        p = self.host_address(addr, S.TLB_STORE, 1 << (f3 & 3), insn)
        store_value(self.fn, p, f3, value)

    def amo(self, insn) -> None:
        """Read-modify-write AMOs that hit the store TLB, aligned (interp.py's fast path)."""
        fn = self.fn
        b = insn.bits
        word = funct3(b) == 2
        size = 4 if word else 8
        addr = self.get(rs1(b))
        src = self.get(rs2(b))
        low = fn.v(f"and i64 {addr}, {size - 1}")
        aligned = fn.v(f"icmp eq i64 {low}, 0")
        self._check(aligned, insn)
        p = self.host_address(addr, S.TLB_STORE, size, insn)
        self.set(rd(b), amo_rmw(fn, (b >> 27) & 0x1F, word, p, src))

    def set_f(self, r: int, value: str, msp: str, ms: str | None = None) -> None:
        """f[r] = value, and mstatus.FS Dirty (`ms`: mstatus as already loaded)."""
        fn = self.fn
        p = fn.v(f"getelementptr inbounds i64, ptr %f, i64 {r}")
        fn.emit(f"store i64 {value}, ptr {p}")
        ms = ms or fn.v(f"load i64, ptr {msp}")
        fn.emit(f"store i64 {fn.v(f'or i64 {ms}, {C.MSTATUS_FS | C.MSTATUS_SD}')}, ptr {msp}")

    def fs_check(self, insn) -> str:
        """mstatus pointer; leaves before insn when FS is Off (the interpreter traps)."""
        fn = self.fn
        msp = fn.v(f"getelementptr inbounds i64, ptr %csr, i64 {C.MSTATUS}")
        ms = fn.v(f"load i64, ptr {msp}")
        fs = fn.v(f"and i64 {ms}, {C.MSTATUS_FS}")
        on = fn.v(f"icmp ne i64 {fs}, 0")
        self._check(on, insn)
        return msp

    def fp_memory(self, insn) -> None:
        fn = self.fn
        b = insn.bits
        size = 4 if funct3(b) == 2 else 8
        msp = self.fs_check(insn)
        if (b & 0x7F) == 0x07:
            addr = fn.v(f"add i64 {self.get(rs1(b))}, {imm_i(b)}")
            p = self.host_address(addr, S.TLB_LOAD, size, insn)
            if size == 4:
                w = fn.v(f"load i32, ptr {p}, align 1")
                z = fn.v(f"zext i32 {w} to i64")
                v = fn.v(f"or i64 {z}, {-1 << 32}")  # NaN-box (ISA vol. I, 12.2)
            else:
                v = fn.v(f"load i64, ptr {p}, align 1")
            self.set_f(rd(b), v, msp)
        else:
            addr = fn.v(f"add i64 {self.get(rs1(b))}, {imm_s(b)}")
            p = self.host_address(addr, S.TLB_STORE, size, insn)
            fp = fn.v(f"getelementptr inbounds i64, ptr %f, i64 {rs2(b)}")
            v = fn.v(f"load i64, ptr {fp}")
            if size == 4:
                v = fn.v(f"trunc i64 {v} to i32")
            fn.emit(f"store i{8 * size} {v}, ptr {p}, align 1")

    def fp_op(self, insn) -> None:
        """OP-FP and FMA: sign injection inline; double-precision arithmetic on
        the host FPU when that gives vmkit's result bit for bit, else (and
        for everything else) helpers.fp_op on the arrays (vmkit's exact FP)."""
        b = insn.bits
        op = fast_fp_op(b)
        if op == "sgnj":
            self.fp_sign_injection(insn)
            return
        if op in ("fmv", "fcvt"):
            self.fp_move(insn)
            return
        if op is None:
            self.fp_helper_call(insn)
            return
        fn = self.fn
        self.stubs += 1
        fast, slow, done = f"ff{self.stubs}", f"fs{self.stubs}", f"fd{self.stubs}"
        fcsrp = fn.v(f"getelementptr inbounds i64, ptr %csr, i64 {C.FCSR}")
        fcsr = fn.v(f"load i64, ptr {fcsrp}")
        msp = fn.v(f"getelementptr inbounds i64, ptr %csr, i64 {C.MSTATUS}")
        ms = fn.v(f"load i64, ptr {msp}")
        # Preconditions: FS on; round to nearest even (static, or dynamic with
        # frm = RNE); NX already set, so inexactness need not be computed.
        cond = fn.v(f"icmp ne i64 {fn.v(f'and i64 {ms}, {C.MSTATUS_FS}')}, 0")
        nx = fn.v(f"icmp ne i64 {fn.v(f'and i64 {fcsr}, 1')}, 0")
        cond = fn.v(f"and i1 {cond}, {nx}")
        if funct3(b) == 7:
            frm = fn.v(f"and i64 {fn.v(f'lshr i64 {fcsr}, 5')}, 7")
            cond = fn.v(f"and i1 {cond}, {fn.v(f'icmp eq i64 {frm}, 0')}")
        operands = [rs1(b), rs2(b)] + ([rs3(b)] if (b & 0x7F) != 0x53 else [])
        values = []
        for r in operands:
            p = fn.v(f"getelementptr inbounds i64, ptr %f, i64 {r}")
            v = fn.v(f"bitcast i64 {fn.v(f'load i64, ptr {p}')} to double")
            values.append(v)
            cond = fn.v(f"and i1 {cond}, {self._finite(v)}")
        a, c = values[0], values[1]
        if op == "fma":
            opc = b & 0x7F
            if opc in (0x4B, 0x4F):          # fnmsub, fnmadd: -(a*b) ...
                a = fn.v(f"fneg double {a}")
            addend = values[2]
            if opc in (0x47, 0x4F):          # fmsub, fnmadd: ... - c
                addend = fn.v(f"fneg double {addend}")
            r = fn.v(f"call double @llvm.fma.f64(double {a}, double {c}, double {addend})")
        else:
            r = fn.v(f"{op} double {a}, {c}")
        # ... and a normal result: no overflow, underflow, invalid or x/0 to flag.
        mag = fn.v(f"call double @llvm.fabs.f64(double {r})")
        normal = fn.v(f"fcmp oge double {mag}, 0x0010000000000000")
        finite = fn.v(f"fcmp olt double {mag}, 0x7FF0000000000000")
        cond = fn.v(f"and i1 {cond}, {fn.v(f'and i1 {normal}, {finite}')}")
        fn.emit(f"br i1 {cond}, label %{fast}, label %{slow}")
        fn.label(fast)
        self.set_f(rd(b), fn.v(f"bitcast double {r} to i64"), msp, ms)
        fn.emit(f"br label %{done}")
        fn.label(slow)
        self.fp_helper_call(insn)
        fn.emit(f"br label %{done}")
        fn.label(done)

    def _finite(self, v: str) -> str:
        mag = self.fn.v(f"call double @llvm.fabs.f64(double {v})")
        return self.fn.v(f"fcmp olt double {mag}, 0x7FF0000000000000")

    def fp_sign_injection(self, insn) -> None:
        """fsgnj.d / fsgnjn.d / fsgnjx.d: bit operations, no flags (ISA vol. I 12.7)."""
        fn = self.fn
        b = insn.bits
        msp = self.fs_check(insn)
        vals = []
        for r in (rs1(b), rs2(b)):
            p = fn.v(f"getelementptr inbounds i64, ptr %f, i64 {r}")
            vals.append(fn.v(f"load i64, ptr {p}"))
        sign = -(1 << 63)
        if funct3(b) == 0:
            s = fn.v(f"and i64 {vals[1]}, {sign}")
        elif funct3(b) == 1:
            s = fn.v(f"and i64 {fn.v(f'xor i64 {vals[1]}, -1')}, {sign}")
        else:
            s = fn.v(f"and i64 {fn.v(f'xor i64 {vals[0]}, {vals[1]}')}, {sign}")
        mag = fn.v(f"and i64 {vals[0]}, {(1 << 63) - 1}")
        out = fn.v(f"or i64 {mag}, {s}")
        self.set_f(rd(b), out, msp)

    def fp_move(self, insn) -> None:
        """fmv.x.d, fmv.d.x and fcvt.d.w[u]: exact, so no flags (ISA vol. I 12.5, 13.5)."""
        fn = self.fn
        b = insn.bits
        msp = self.fs_check(insn)
        if b >> 25 == 0x71:     # fmv.x.d: f -> x, mstatus.FS unchanged
            p = fn.v(f"getelementptr inbounds i64, ptr %f, i64 {rs1(b)}")
            self.set(rd(b), fn.v(f"load i64, ptr {p}"))
            return
        if b >> 25 == 0x79:     # fmv.d.x
            out = self.get(rs1(b))
        else:
            w = fn.v(f"trunc i64 {self.get(rs1(b))} to i32")
            d = fn.v(f"{'uitofp' if rs2(b) else 'sitofp'} i32 {w} to double")
            out = fn.v(f"bitcast double {d} to i64")
        self.set_f(rd(b), out, msp)

    def fp_helper_call(self, insn) -> None:
        fn = self.fn
        b = insn.bits
        if fp_reads_x(b) and rs1(b):
            p = fn.v(f"getelementptr inbounds i64, ptr %x, i64 {rs1(b)}")
            fn.emit(f"store i64 {self.get(rs1(b))}, ptr {p}")
        target = fn.v(f"inttoptr i64 {self.fp_helper} to ptr")
        ok = fn.v(f"call i64 {target}(i64 {b}, ptr %x, ptr %f, ptr %csr)")
        good = fn.v(f"icmp ne i64 {ok}, 0")
        self._check(good, insn)
        if fp_writes_x(b) and rd(b):
            p = fn.v(f"getelementptr inbounds i64, ptr %x, i64 {rd(b)}")
            self.set(rd(b), fn.v(f"load i64, ptr {p}"))

    # --- integer ---------------------------------------------------------------------
    def alu(self, opc: int, b: int) -> str:
        a = self.get(rs1(b))
        c = self.get(rs2(b)) if opc in (0x33, 0x3B) else ""
        imm = imm_i(b)
        return alu_value(self.fn, opc, funct3(b), b >> 25, a, c, str(imm), str(imm & 63), str(imm & 31))

    # --- one instruction -------------------------------------------------------------
    def insn(self, insn) -> bool:
        """Emit one instruction; True when it ended the block."""
        fn = self.fn
        b = insn.bits
        opc = b & 0x7F
        nxt = _i64(insn.pc + insn.length)
        if opc in (0x13, 0x1B, 0x33, 0x3B):
            self.set(rd(b), self.alu(opc, b)) if rd(b) else None
        elif opc == 0x37:
            self.set(rd(b), str(imm_u(b)))
        elif opc == 0x17:
            self.set(rd(b), str(_i64(insn.pc + imm_u(b))))
        elif opc == 0x03:
            self.load(insn)
        elif opc == 0x23:
            self.store(insn)
        elif opc == 0x0F:
            pass                            # fence, fence.i: see codepages.py
        elif opc == 0x2F:
            self.amo(insn)
        elif opc in (0x07, 0x27):
            self.fp_memory(insn)
        elif opc in OPCODES_FP_OP:
            self.fp_op(insn)
        elif insn.flow == FLOW_JAL:
            self.set(rd(b), str(nxt))
            fn.emit(f"br label %{self.goto(insn.target, RET_LOOKUP)}")
            return True
        elif insn.flow == FLOW_JALR:
            t = fn.v(f"add i64 {self.get(rs1(b))}, {imm_i(b)}")
            t = fn.v(f"and i64 {t}, -2")
            self.set(rd(b), str(nxt))
            self.leave(t, 0, RET_LOOKUP)
            return True
        elif insn.flow == FLOW_BRANCH:
            x1, x2 = self.get(rs1(b)), self.get(rs2(b))
            taken = fn.v(f"icmp {BRANCH_CMP[funct3(b)]} i64 {x1}, {x2}")
            fn.emit(f"br i1 {taken}, label %{self.goto(insn.target, RET_LOOKUP)}, "
                    f"label %{self.goto(nxt, RET_LOOKUP)}")
            return True
        else:
            raise AssertionError(f"untranslatable instruction {b:#x} reached ir.py")
        return False


# --- integer semantics, shared with stencils.py ----------------------------------------
def alu_value(fn: _Fn, opc: int, f3: int, f7: int, a: str, c: str, imm: str, sh: str, sh32: str) -> str:
    """x[rd] of an OP-IMM, OP-IMM-32, OP or OP-32 instruction (ISA vol. I
    2.4, 4.2, 7): `a` is x[rs1], `c` x[rs2] (OP, OP-32); `imm`, `sh` and
    `sh32` are the I-immediate and the shift amounts as IR operands.
    The operation depends only on opc, funct3 and funct7, so the same text
    serves a region (constants) and a stencil (holes)."""
    if opc == 0x13:
        if f3 == 0:
            return fn.v(f"add i64 {a}, {imm}")
        if f3 == 1:
            return fn.v(f"shl i64 {a}, {sh}")
        if f3 in (2, 3):
            return fn.v(f"zext i1 {fn.v(f'icmp {SLT[f3]} i64 {a}, {imm}')} to i64")
        if f3 == 5:
            return fn.v(f"{'ashr' if (f7 >> 5) & 1 else 'lshr'} i64 {a}, {sh}")
        return fn.v(f"{LOGIC[f3]} i64 {a}, {imm}")
    if opc == 0x1B:
        a32 = fn.v(f"trunc i64 {a} to i32")
        if f3 == 0:
            r = fn.v(f"add i32 {a32}, {fn.v(f'trunc i64 {imm} to i32')}")
        else:
            amt = fn.v(f"trunc i64 {sh32} to i32")
            r = fn.v(f"{'shl' if f3 == 1 else ('ashr' if (f7 >> 5) & 1 else 'lshr')} i32 {a32}, {amt}")
        return fn.v(f"sext i32 {r} to i64")
    if opc == 0x33:
        if f7 == 1:
            return m64(fn, f3, a, c)
        if f7 == 0x20:
            if f3 == 0:
                return fn.v(f"sub i64 {a}, {c}")
            return fn.v(f"ashr i64 {a}, {fn.v(f'and i64 {c}, 63')}")
        if f3 in (1, 5):
            amt = fn.v(f"and i64 {c}, 63")
            return fn.v(f"{'shl' if f3 == 1 else 'lshr'} i64 {a}, {amt}")
        if f3 in (2, 3):
            return fn.v(f"zext i1 {fn.v(f'icmp {SLT[f3]} i64 {a}, {c}')} to i64")
        return fn.v(f"{LOGIC[f3]} i64 {a}, {c}")
    # OP-32
    a32 = fn.v(f"trunc i64 {a} to i32")
    c32 = fn.v(f"trunc i64 {c} to i32")
    if f7 == 1:
        r = m32(fn, f3, a32, c32)
    elif f3 == 0:
        r = fn.v(f"{'sub' if f7 == 0x20 else 'add'} i32 {a32}, {c32}")
    else:
        amt = fn.v(f"and i32 {c32}, 31")
        kind = "shl" if f3 == 1 else ("ashr" if f7 == 0x20 else "lshr")
        r = fn.v(f"{kind} i32 {a32}, {amt}")
    return fn.v(f"sext i32 {r} to i64")


SLT = {2: "slt", 3: "ult"}
LOGIC = {0: "add", 4: "xor", 6: "or", 7: "and"}
BRANCH_CMP = {0: "eq", 1: "ne", 4: "slt", 5: "sge", 6: "ult", 7: "uge"}


def m64(fn: _Fn, f3: int, a: str, c: str) -> str:
    """M extension (ISA vol. I 7.1-7.2; table 7.1 for x/0 and overflow)."""
    if f3 == 0:
        return fn.v(f"mul i64 {a}, {c}")
    if f3 <= 3:
        ea = fn.v(f"{'zext' if f3 == 3 else 'sext'} i64 {a} to i128")
        ec = fn.v(f"{'sext' if f3 == 1 else 'zext'} i64 {c} to i128")
        p = fn.v(f"mul i128 {ea}, {ec}")
        return fn.v(f"trunc i128 {fn.v(f'lshr i128 {p}, 64')} to i64")
    return divide(fn, f3, a, c, "i64", INT64_MIN)


def m32(fn: _Fn, f3: int, a: str, c: str) -> str:
    if f3 == 0:
        return fn.v(f"mul i32 {a}, {c}")
    return divide(fn, f3, a, c, "i32", -(1 << 31))


def divide(fn: _Fn, f3: int, a: str, c: str, ty: str, min_value: int) -> str:
    zero = fn.v(f"icmp eq {ty} {c}, 0")
    signed = f3 in (4, 6)
    if signed:
        is_min = fn.v(f"icmp eq {ty} {a}, {min_value}")
        is_m1 = fn.v(f"icmp eq {ty} {c}, -1")
        ovf = fn.v(f"and i1 {is_min}, {is_m1}")
        bad = fn.v(f"or i1 {zero}, {ovf}")
    else:
        bad = zero
    safe = fn.v(f"select i1 {bad}, {ty} 1, {ty} {c}")
    name = {4: "sdiv", 5: "udiv", 6: "srem", 7: "urem"}[f3]
    r = fn.v(f"{name} {ty} {a}, {safe}")
    if f3 in (4, 5):        # x/0 = all ones; MIN/-1 = MIN
        if signed:
            r = fn.v(f"select i1 {ovf}, {ty} {a}, {ty} {r}")
        return fn.v(f"select i1 {zero}, {ty} -1, {ty} {r}")
    if signed:              # x%0 = x; MIN%-1 = 0
        r = fn.v(f"select i1 {ovf}, {ty} 0, {ty} {r}")
    return fn.v(f"select i1 {zero}, {ty} {a}, {ty} {r}")


AMO_OPS = {0x00: "add", 0x04: "xor", 0x0C: "and", 0x08: "or"}
AMO_KEEP = {0x10: "slt", 0x14: "sgt", 0x18: "ult", 0x1C: "ugt"}


def amo_rmw(fn: _Fn, aop: int, word: bool, p: str, src: str) -> str:
    """The read-modify-write of AMO `aop` (ISA vol. I 8.4) at host pointer p
    with x[rs2] = src; returns what x[rd] gets (the old value)."""
    size = 4 if word else 8
    ty = "i32" if word else "i64"
    old = fn.v(f"load {ty}, ptr {p}, align {size}")
    val = fn.v(f"trunc i64 {src} to i32") if word else src
    if aop == 0x01:
        new = val
    elif aop in AMO_OPS:
        new = fn.v(f"{AMO_OPS[aop]} {ty} {old}, {val}")
    else:
        keep = fn.v(f"icmp {AMO_KEEP[aop]} {ty} {old}, {val}")
        new = fn.v(f"select i1 {keep}, {ty} {old}, {ty} {val}")
    fn.emit(f"store {ty} {new}, ptr {p}, align {size}")
    return fn.v(f"sext i32 {old} to i64") if word else old


def tlb_check(fn: _Fn, addr: str, kind: int, size: int, ctx: str) -> tuple[str, str]:
    """(hit, slot) for an access of `size` bytes at guest addr through TLB
    row `kind`, as interp.py tests it: the entry of addr's page holds tag
    (vpn << TLB_CTX_BITS) | ctx, and the access stays inside that page.
    Both in one compare: the tag wanted is that of the access's *last*
    byte, which differs from the entry's exactly when the access crosses
    into the next page (QEMU's softmmu does the same with the page mask)."""
    vpn = fn.v(f"ashr i64 {addr}, 12")
    idx = fn.v(f"and i64 {vpn}, {S.TLB_SIZE - 1}")
    slot = fn.v(f"add i64 {idx}, {kind * TLB_ROW}")
    last = fn.v(f"add i64 {addr}, {size - 1}") if size > 1 else addr
    shifted = fn.v(f"shl i64 {fn.v(f'ashr i64 {last}, 12')}, {S.TLB_CTX_BITS}")
    want = fn.v(f"or i64 {shifted}, {ctx}")
    tp = fn.v(f"getelementptr inbounds i64, ptr %tag, i64 {slot}")
    tag = fn.v(f"load i64, ptr {tp}")
    return fn.v(f"icmp eq i64 {tag}, {want}"), slot


def host_pointer(fn: _Fn, addr: str, slot: str) -> str:
    """Pointer into RAM for a TLB hit at guest addr (tlb_check's slot)."""
    op = fn.v(f"getelementptr inbounds i64, ptr %off, i64 {slot}")
    base = fn.v(f"load i64, ptr {op}")
    pgoff = fn.v(f"and i64 {addr}, 4095")
    hoff = fn.v(f"add i64 {base}, {pgoff}")
    return fn.v(f"getelementptr inbounds i8, ptr %ram, i64 {hoff}")


def load_value(fn: _Fn, p: str, f3: int) -> str:
    """The loaded value of LB/LH/LW/LD/LBU/LHU/LWU, as x[rd] gets it."""
    size = 1 << (f3 & 3)
    ty = f"i{8 * size}"
    v = fn.v(f"load {ty}, ptr {p}, align 1")
    if size < 8:
        v = fn.v(f"{'zext' if f3 & 4 else 'sext'} {ty} {v} to i64")
    return v


def store_value(fn: _Fn, p: str, f3: int, value: str) -> None:
    size = 1 << (f3 & 3)
    ty = f"i{8 * size}"
    if size < 8:
        value = fn.v(f"trunc i64 {value} to {ty}")
    fn.emit(f"store {ty} {value}, ptr {p}, align 1")


def region_ir(region: Region, name: str, fp_helper: int) -> str:
    """The LLVM module text for `region`, defining the function `name`;
    guest registers live in allocas for LLVM to promote to host registers."""
    return RegionIR(region, name, fp_helper).text()
