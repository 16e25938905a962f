"""Disassembler for --trace: RV64GC plus Zicsr, Zifencei and the privileged
instructions (RISC-V Unprivileged ISA 20191213: RV32I ch. 2, RV64I ch. 5,
Zifencei ch. 3, M ch. 7, A ch. 8, Zicsr ch. 9, F ch. 11, D ch. 12, C ch. 16,
encodings in the listings of ch. 24; Privileged ISA 1.12: 3.3.2 MRET/SRET,
3.3.3 WFI, 4.2.1 SFENCE.VMA).

The text follows GNU objdump with ``-M no-aliases`` (base mnemonics, ABI
register names, branch targets as absolute addresses, rounding mode as a last
operand when it is not ``dyn``, shift amounts and U-immediates in hex) with
", " between operands, so that a trace can be compared with objdump by eye or
by tests/cpu/test_disasm.py.  Compressed instructions keep their c.* names
and objdump's short operand lists ("c.addi sp, -16"); they are decoded by
expanding them with `expand_rvc`.

Where binutils 2.40 is stricter than the spec we follow the spec, because a
trace should show what the core executes:
- FENCE ignores rs1/rd and treats reserved fm values as fm=0000, and FENCE.I
  ignores imm/rs1/rd (2.7, 3.1: "base implementations shall ignore these
  fields"); objdump prints such words as unknown.
- FCVT.D.S, FCVT.D.W and FCVT.D.WU are exact but still have an rm field that
  may hold any valid rounding mode (11.7, 12.5); objdump 2.40 only accepts
  rm=000.  We print the rounding mode unless it is rne (what assemblers emit)
  or dyn.

Pure Python: it runs only when tracing.
"""

from vmkit.cpu import csrs
from vmkit.cpu.compressed import expand_rvc

# ABI register names (Unprivileged ISA, ch. 25 "RISC-V Assembly Programmer's
# Handbook", Table 25.1).
XREG = ("zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2",
        "s0", "s1", "a0", "a1", "a2", "a3", "a4", "a5",
        "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7",
        "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6")
FREG = ("ft0", "ft1", "ft2", "ft3", "ft4", "ft5", "ft6", "ft7",
        "fs0", "fs1", "fa0", "fa1", "fa2", "fa3", "fa4", "fa5",
        "fa6", "fa7", "fs2", "fs3", "fs4", "fs5", "fs6", "fs7",
        "fs8", "fs9", "fs10", "fs11", "ft8", "ft9", "ft10", "ft11")

# Rounding modes (11.2, Table 11.1); 101 and 110 are reserved, and objdump
# calls them "unknown".
ROUNDING_MODES = ("rne", "rtz", "rdn", "rup", "rmm", "unknown", "unknown", "dyn")
RM_DYN = 7

MASK64 = (1 << 64) - 1


def _csr_names():
    """{number: name} for the CSRs named in csrs.py.

    csrs.py names CSRs with plain upper-case words (MSTATUS) and everything
    else with an underscore (MSTATUS_SIE, CAUSE_...), so the CSRs are the
    underscore-free integer constants below 0x1000.  Numbered families given
    by their ends (HPMCOUNTER3 .. HPMCOUNTER31) are filled in between.
    """
    names = {}
    for name, value in vars(csrs).items():
        if name.isupper() and "_" not in name and isinstance(value, int) \
                and 0 <= value < 0x1000:
            names[value] = name.lower()
    families = {}
    for number, name in names.items():
        stem = name.rstrip("0123456789")
        if stem != name:
            families.setdefault(stem, []).append((int(name[len(stem):]), number))
    for stem, members in families.items():
        (lo, lo_number), (hi, hi_number) = min(members), max(members)
        if hi_number - lo_number == hi - lo:
            for i in range(lo, hi + 1):
                names.setdefault(lo_number + i - lo, f"{stem}{i}")
    return names


CSR_NAMES = _csr_names()

# --- the encoding table ---------------------------------------------------------
# One line per instruction: mnemonic, operand kinds, fixed fields (field=value).
# Field positions are those of the spec's instruction formats (2.2, 8.2, 11.6).
_FIELDS = {
    "opcode": (6, 0), "rd": (11, 7), "funct3": (14, 12), "rs1": (19, 15),
    "rs2": (24, 20), "funct7": (31, 25), "funct6": (31, 26), "funct5": (31, 27),
    "fmt": (26, 25), "fm": (31, 28), "pred": (27, 24), "succ": (23, 20),
    "insn": (31, 0),
}

_ENCODINGS = """
# RV32I and RV64I (2.4-2.8, 5.2-5.3)
lui        rd,uimm20         opcode=0x37
auipc      rd,uimm20         opcode=0x17
jal        rd,jtarget        opcode=0x6f
jalr       rd,mem            opcode=0x67 funct3=0
beq        rs1,rs2,btarget   opcode=0x63 funct3=0
bne        rs1,rs2,btarget   opcode=0x63 funct3=1
blt        rs1,rs2,btarget   opcode=0x63 funct3=4
bge        rs1,rs2,btarget   opcode=0x63 funct3=5
bltu       rs1,rs2,btarget   opcode=0x63 funct3=6
bgeu       rs1,rs2,btarget   opcode=0x63 funct3=7
lb         rd,mem            opcode=0x03 funct3=0
lh         rd,mem            opcode=0x03 funct3=1
lw         rd,mem            opcode=0x03 funct3=2
ld         rd,mem            opcode=0x03 funct3=3
lbu        rd,mem            opcode=0x03 funct3=4
lhu        rd,mem            opcode=0x03 funct3=5
lwu        rd,mem            opcode=0x03 funct3=6
sb         rs2,smem          opcode=0x23 funct3=0
sh         rs2,smem          opcode=0x23 funct3=1
sw         rs2,smem          opcode=0x23 funct3=2
sd         rs2,smem          opcode=0x23 funct3=3
addi       rd,rs1,imm        opcode=0x13 funct3=0
slti       rd,rs1,imm        opcode=0x13 funct3=2
sltiu      rd,rs1,imm        opcode=0x13 funct3=3
xori       rd,rs1,imm        opcode=0x13 funct3=4
ori        rd,rs1,imm        opcode=0x13 funct3=6
andi       rd,rs1,imm        opcode=0x13 funct3=7
slli       rd,rs1,shamt      opcode=0x13 funct3=1 funct6=0x00
srli       rd,rs1,shamt      opcode=0x13 funct3=5 funct6=0x00
srai       rd,rs1,shamt      opcode=0x13 funct3=5 funct6=0x10
add        rd,rs1,rs2        opcode=0x33 funct3=0 funct7=0x00
sub        rd,rs1,rs2        opcode=0x33 funct3=0 funct7=0x20
sll        rd,rs1,rs2        opcode=0x33 funct3=1 funct7=0x00
slt        rd,rs1,rs2        opcode=0x33 funct3=2 funct7=0x00
sltu       rd,rs1,rs2        opcode=0x33 funct3=3 funct7=0x00
xor        rd,rs1,rs2        opcode=0x33 funct3=4 funct7=0x00
srl        rd,rs1,rs2        opcode=0x33 funct3=5 funct7=0x00
sra        rd,rs1,rs2        opcode=0x33 funct3=5 funct7=0x20
or         rd,rs1,rs2        opcode=0x33 funct3=6 funct7=0x00
and        rd,rs1,rs2        opcode=0x33 funct3=7 funct7=0x00
addiw      rd,rs1,imm        opcode=0x1b funct3=0
slliw      rd,rs1,shamtw     opcode=0x1b funct3=1 funct7=0x00
srliw      rd,rs1,shamtw     opcode=0x1b funct3=5 funct7=0x00
sraiw      rd,rs1,shamtw     opcode=0x1b funct3=5 funct7=0x20
addw       rd,rs1,rs2        opcode=0x3b funct3=0 funct7=0x00
subw       rd,rs1,rs2        opcode=0x3b funct3=0 funct7=0x20
sllw       rd,rs1,rs2        opcode=0x3b funct3=1 funct7=0x00
srlw       rd,rs1,rs2        opcode=0x3b funct3=5 funct7=0x00
sraw       rd,rs1,rs2        opcode=0x3b funct3=5 funct7=0x20
# FENCE.TSO before FENCE, which matches it too (2.7, Table 2.2)
fence.tso  -                 opcode=0x0f funct3=0 fm=0x8 pred=0x3 succ=0x3
fence      pred,succ         opcode=0x0f funct3=0
ecall      -                 insn=0x00000073
ebreak     -                 insn=0x00100073
# Zifencei (3.1)
fence.i    -                 opcode=0x0f funct3=1
# Zicsr (9.1)
csrrw      rd,csr,rs1        opcode=0x73 funct3=1
csrrs      rd,csr,rs1        opcode=0x73 funct3=2
csrrc      rd,csr,rs1        opcode=0x73 funct3=3
csrrwi     rd,csr,zimm       opcode=0x73 funct3=5
csrrsi     rd,csr,zimm       opcode=0x73 funct3=6
csrrci     rd,csr,zimm       opcode=0x73 funct3=7
# Privileged (Privileged ISA 1.12, 3.3.2, 3.3.3, 4.2.1)
sret       -                 insn=0x10200073
mret       -                 insn=0x30200073
wfi        -                 insn=0x10500073
sfence.vma rs1,rs2           opcode=0x73 funct3=0 funct7=0x09 rd=0
# M (7.1, 7.2)
mul        rd,rs1,rs2        opcode=0x33 funct3=0 funct7=0x01
mulh       rd,rs1,rs2        opcode=0x33 funct3=1 funct7=0x01
mulhsu     rd,rs1,rs2        opcode=0x33 funct3=2 funct7=0x01
mulhu      rd,rs1,rs2        opcode=0x33 funct3=3 funct7=0x01
div        rd,rs1,rs2        opcode=0x33 funct3=4 funct7=0x01
divu       rd,rs1,rs2        opcode=0x33 funct3=5 funct7=0x01
rem        rd,rs1,rs2        opcode=0x33 funct3=6 funct7=0x01
remu       rd,rs1,rs2        opcode=0x33 funct3=7 funct7=0x01
mulw       rd,rs1,rs2        opcode=0x3b funct3=0 funct7=0x01
divw       rd,rs1,rs2        opcode=0x3b funct3=4 funct7=0x01
divuw      rd,rs1,rs2        opcode=0x3b funct3=5 funct7=0x01
remw       rd,rs1,rs2        opcode=0x3b funct3=6 funct7=0x01
remuw      rd,rs1,rs2        opcode=0x3b funct3=7 funct7=0x01
# A (8.2, 8.4); aq/rl become a mnemonic suffix
lr.w       aqrl,rd,addr      opcode=0x2f funct3=2 funct5=0x02 rs2=0
sc.w       aqrl,rd,rs2,addr  opcode=0x2f funct3=2 funct5=0x03
amoswap.w  aqrl,rd,rs2,addr  opcode=0x2f funct3=2 funct5=0x01
amoadd.w   aqrl,rd,rs2,addr  opcode=0x2f funct3=2 funct5=0x00
amoxor.w   aqrl,rd,rs2,addr  opcode=0x2f funct3=2 funct5=0x04
amoand.w   aqrl,rd,rs2,addr  opcode=0x2f funct3=2 funct5=0x0c
amoor.w    aqrl,rd,rs2,addr  opcode=0x2f funct3=2 funct5=0x08
amomin.w   aqrl,rd,rs2,addr  opcode=0x2f funct3=2 funct5=0x10
amomax.w   aqrl,rd,rs2,addr  opcode=0x2f funct3=2 funct5=0x14
amominu.w  aqrl,rd,rs2,addr  opcode=0x2f funct3=2 funct5=0x18
amomaxu.w  aqrl,rd,rs2,addr  opcode=0x2f funct3=2 funct5=0x1c
lr.d       aqrl,rd,addr      opcode=0x2f funct3=3 funct5=0x02 rs2=0
sc.d       aqrl,rd,rs2,addr  opcode=0x2f funct3=3 funct5=0x03
amoswap.d  aqrl,rd,rs2,addr  opcode=0x2f funct3=3 funct5=0x01
amoadd.d   aqrl,rd,rs2,addr  opcode=0x2f funct3=3 funct5=0x00
amoxor.d   aqrl,rd,rs2,addr  opcode=0x2f funct3=3 funct5=0x04
amoand.d   aqrl,rd,rs2,addr  opcode=0x2f funct3=3 funct5=0x0c
amoor.d    aqrl,rd,rs2,addr  opcode=0x2f funct3=3 funct5=0x08
amomin.d   aqrl,rd,rs2,addr  opcode=0x2f funct3=3 funct5=0x10
amomax.d   aqrl,rd,rs2,addr  opcode=0x2f funct3=3 funct5=0x14
amominu.d  aqrl,rd,rs2,addr  opcode=0x2f funct3=3 funct5=0x18
amomaxu.d  aqrl,rd,rs2,addr  opcode=0x2f funct3=3 funct5=0x1c
# F (11.5-11.9)
flw        fd,mem            opcode=0x07 funct3=2
fsw        fs2,smem          opcode=0x27 funct3=2
fmadd.s    fd,fs1,fs2,fs3,rm opcode=0x43 fmt=0
fmsub.s    fd,fs1,fs2,fs3,rm opcode=0x47 fmt=0
fnmsub.s   fd,fs1,fs2,fs3,rm opcode=0x4b fmt=0
fnmadd.s   fd,fs1,fs2,fs3,rm opcode=0x4f fmt=0
fadd.s     fd,fs1,fs2,rm     opcode=0x53 funct7=0x00
fsub.s     fd,fs1,fs2,rm     opcode=0x53 funct7=0x04
fmul.s     fd,fs1,fs2,rm     opcode=0x53 funct7=0x08
fdiv.s     fd,fs1,fs2,rm     opcode=0x53 funct7=0x0c
fsqrt.s    fd,fs1,rm         opcode=0x53 funct7=0x2c rs2=0
fsgnj.s    fd,fs1,fs2        opcode=0x53 funct7=0x10 funct3=0
fsgnjn.s   fd,fs1,fs2        opcode=0x53 funct7=0x10 funct3=1
fsgnjx.s   fd,fs1,fs2        opcode=0x53 funct7=0x10 funct3=2
fmin.s     fd,fs1,fs2        opcode=0x53 funct7=0x14 funct3=0
fmax.s     fd,fs1,fs2        opcode=0x53 funct7=0x14 funct3=1
fcvt.w.s   rd,fs1,rm         opcode=0x53 funct7=0x60 rs2=0
fcvt.wu.s  rd,fs1,rm         opcode=0x53 funct7=0x60 rs2=1
fcvt.l.s   rd,fs1,rm         opcode=0x53 funct7=0x60 rs2=2
fcvt.lu.s  rd,fs1,rm         opcode=0x53 funct7=0x60 rs2=3
fmv.x.w    rd,fs1            opcode=0x53 funct7=0x70 rs2=0 funct3=0
fclass.s   rd,fs1            opcode=0x53 funct7=0x70 rs2=0 funct3=1
feq.s      rd,fs1,fs2        opcode=0x53 funct7=0x50 funct3=2
flt.s      rd,fs1,fs2        opcode=0x53 funct7=0x50 funct3=1
fle.s      rd,fs1,fs2        opcode=0x53 funct7=0x50 funct3=0
fcvt.s.w   fd,rs1,rm         opcode=0x53 funct7=0x68 rs2=0
fcvt.s.wu  fd,rs1,rm         opcode=0x53 funct7=0x68 rs2=1
fcvt.s.l   fd,rs1,rm         opcode=0x53 funct7=0x68 rs2=2
fcvt.s.lu  fd,rs1,rm         opcode=0x53 funct7=0x68 rs2=3
fmv.w.x    fd,rs1            opcode=0x53 funct7=0x78 rs2=0 funct3=0
# D (12.3-12.6)
fld        fd,mem            opcode=0x07 funct3=3
fsd        fs2,smem          opcode=0x27 funct3=3
fmadd.d    fd,fs1,fs2,fs3,rm opcode=0x43 fmt=1
fmsub.d    fd,fs1,fs2,fs3,rm opcode=0x47 fmt=1
fnmsub.d   fd,fs1,fs2,fs3,rm opcode=0x4b fmt=1
fnmadd.d   fd,fs1,fs2,fs3,rm opcode=0x4f fmt=1
fadd.d     fd,fs1,fs2,rm     opcode=0x53 funct7=0x01
fsub.d     fd,fs1,fs2,rm     opcode=0x53 funct7=0x05
fmul.d     fd,fs1,fs2,rm     opcode=0x53 funct7=0x09
fdiv.d     fd,fs1,fs2,rm     opcode=0x53 funct7=0x0d
fsqrt.d    fd,fs1,rm         opcode=0x53 funct7=0x2d rs2=0
fsgnj.d    fd,fs1,fs2        opcode=0x53 funct7=0x11 funct3=0
fsgnjn.d   fd,fs1,fs2        opcode=0x53 funct7=0x11 funct3=1
fsgnjx.d   fd,fs1,fs2        opcode=0x53 funct7=0x11 funct3=2
fmin.d     fd,fs1,fs2        opcode=0x53 funct7=0x15 funct3=0
fmax.d     fd,fs1,fs2        opcode=0x53 funct7=0x15 funct3=1
fcvt.s.d   fd,fs1,rm         opcode=0x53 funct7=0x20 rs2=1
fcvt.d.s   fd,fs1,rmx        opcode=0x53 funct7=0x21 rs2=0
feq.d      rd,fs1,fs2        opcode=0x53 funct7=0x51 funct3=2
flt.d      rd,fs1,fs2        opcode=0x53 funct7=0x51 funct3=1
fle.d      rd,fs1,fs2        opcode=0x53 funct7=0x51 funct3=0
fclass.d   rd,fs1            opcode=0x53 funct7=0x71 rs2=0 funct3=1
fcvt.w.d   rd,fs1,rm         opcode=0x53 funct7=0x61 rs2=0
fcvt.wu.d  rd,fs1,rm         opcode=0x53 funct7=0x61 rs2=1
fcvt.l.d   rd,fs1,rm         opcode=0x53 funct7=0x61 rs2=2
fcvt.lu.d  rd,fs1,rm         opcode=0x53 funct7=0x61 rs2=3
fcvt.d.w   fd,rs1,rmx        opcode=0x53 funct7=0x69 rs2=0
fcvt.d.wu  fd,rs1,rmx        opcode=0x53 funct7=0x69 rs2=1
fcvt.d.l   fd,rs1,rm         opcode=0x53 funct7=0x69 rs2=2
fcvt.d.lu  fd,rs1,rm         opcode=0x53 funct7=0x69 rs2=3
fmv.x.d    rd,fs1            opcode=0x53 funct7=0x71 rs2=0 funct3=0
fmv.d.x    fd,rs1            opcode=0x53 funct7=0x79 rs2=0 funct3=0
"""


def _parse_encodings(text):
    """[(mnemonic, operand kinds, match, mask)] from the table above."""
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, operands, *fixed = line.split()
        match = mask = 0
        for item in fixed:
            field, value = item.split("=")
            hi, lo = _FIELDS[field]
            width_mask = ((1 << (hi - lo + 1)) - 1) << lo
            match |= (int(value, 0) << lo) & width_mask
            mask |= width_mask
        kinds = () if operands == "-" else tuple(operands.split(","))
        entries.append((name, kinds, match, mask))
    return entries


ENCODINGS = _parse_encodings(_ENCODINGS)


def _group_by_opcode(entries):
    """Entries by major opcode, in table order (the first match wins)."""
    groups = {}
    for entry in entries:
        groups.setdefault(entry[2] & 0x7F, []).append(entry)
    return groups


_BY_OPCODE = _group_by_opcode(ENCODINGS)


# --- operand fields -----------------------------------------------------------------
# XXX: decode.py has jitted twins of these extractors; they are repeated here
# in plain Python so that disassembling never triggers a numba compile.  Once
# decode.py is settled, use its functions' `.py_func` instead.

def _sext(value, bits):
    sign = 1 << (bits - 1)
    return (value & (sign - 1)) - (value & sign)


def imm_i(insn):
    return _sext(insn >> 20, 12)


def imm_s(insn):
    return _sext(((insn >> 25) << 5) | ((insn >> 7) & 0x1F), 12)


def imm_b(insn):
    return _sext((((insn >> 31) & 1) << 12) | (((insn >> 7) & 1) << 11)
                 | (((insn >> 25) & 0x3F) << 5) | (((insn >> 8) & 0xF) << 1), 13)


def imm_j(insn):
    return _sext((((insn >> 31) & 1) << 20) | (((insn >> 12) & 0xFF) << 12)
                 | (((insn >> 20) & 1) << 11) | (((insn >> 21) & 0x3FF) << 1), 21)


def _fence_set(bits):
    """A FENCE predecessor/successor set as objdump spells it (2.7)."""
    text = "".join(ch for ch, bit in zip("iorw", (8, 4, 2, 1)) if bits & bit)
    return text or "unknown"


def _operand(kind, insn, pc):
    """The text of one operand, or None when it is omitted (rm = dyn)."""
    rd = (insn >> 7) & 0x1F
    rs1 = (insn >> 15) & 0x1F
    rs2 = (insn >> 20) & 0x1F
    rm = (insn >> 12) & 7
    match kind:
        case "rd":
            return XREG[rd]
        case "rs1":
            return XREG[rs1]
        case "rs2":
            return XREG[rs2]
        case "fd":
            return FREG[rd]
        case "fs1":
            return FREG[rs1]
        case "fs2":
            return FREG[rs2]
        case "fs3":
            return FREG[insn >> 27]
        case "imm":
            return str(imm_i(insn))
        case "mem":
            return f"{imm_i(insn)}({XREG[rs1]})"
        case "smem":
            return f"{imm_s(insn)}({XREG[rs1]})"
        case "addr":
            return f"({XREG[rs1]})"
        case "uimm20":
            return f"0x{insn >> 12:x}"
        case "jtarget":
            return f"0x{(pc + imm_j(insn)) & MASK64:x}"
        case "btarget":
            return f"0x{(pc + imm_b(insn)) & MASK64:x}"
        case "shamt":
            return f"0x{(insn >> 20) & 0x3F:x}"
        case "shamtw":
            return f"0x{rs2:x}"
        case "csr":
            number = insn >> 20
            return CSR_NAMES.get(number, f"0x{number:x}")
        case "zimm":
            return str(rs1)
        case "pred":
            return _fence_set((insn >> 24) & 0xF)
        case "succ":
            return _fence_set((insn >> 20) & 0xF)
        case "rm":
            return None if rm == RM_DYN else ROUNDING_MODES[rm]
        case "rmx":
            # Exact conversions: rne is what assemblers emit, so leave it out.
            return None if rm in (0, RM_DYN) else ROUNDING_MODES[rm]
    raise ValueError(f"unknown operand kind {kind!r}")


def find_encoding(insn):
    """The table entry (mnemonic, kinds, match, mask) of a 32-bit insn, or None."""
    for entry in _BY_OPCODE.get(insn & 0x7F, ()):
        if insn & entry[3] == entry[2]:
            return entry
    return None


def _operands(insn, pc):
    """(mnemonic, [operand text]) of a 32-bit instruction, or None."""
    entry = find_encoding(insn)
    if entry is None:
        return None
    name, kinds, _, _ = entry
    ops = []
    for kind in kinds:
        if kind == "aqrl":  # 8.2: aq = bit 26, rl = bit 25
            name += ("", ".rl", ".aq", ".aqrl")[(insn >> 25) & 3]
            continue
        text = _operand(kind, insn, pc)
        if text is not None:
            ops.append(text)
    return name, ops


# --- compressed ---------------------------------------------------------------------
# (quadrant, funct3) -> (c.* name, which operands of the expansion to show);
# None means "decided from the expansion" (16.8, Tables 16.5-16.7).
_RVC_FORMS = {
    (0, 0): ("c.addi4spn", (0, 1, 2)),
    (0, 1): ("c.fld", (0, 1)), (0, 2): ("c.lw", (0, 1)), (0, 3): ("c.ld", (0, 1)),
    (0, 5): ("c.fsd", (0, 1)), (0, 6): ("c.sw", (0, 1)), (0, 7): ("c.sd", (0, 1)),
    (1, 0): ("c.addi", (0, 2)), (1, 1): ("c.addiw", (0, 2)), (1, 2): ("c.li", (0, 2)),
    (1, 3): None, (1, 4): None,
    (1, 5): ("c.j", (1,)), (1, 6): ("c.beqz", (0, 2)), (1, 7): ("c.bnez", (0, 2)),
    (2, 0): None,
    (2, 1): ("c.fldsp", (0, 1)), (2, 2): ("c.lwsp", (0, 1)), (2, 3): ("c.ldsp", (0, 1)),
    (2, 4): None,
    (2, 5): ("c.fsdsp", (0, 1)), (2, 6): ("c.swsp", (0, 1)), (2, 7): ("c.sdsp", (0, 1)),
}


def _rvc_form(c, name, ops):
    """c.* name and operand positions for the slots shared by several instructions."""
    if name == "lui":
        return "c.lui", (0, 1)
    if name == "addi":  # quadrant 1, funct3 011 with rd = sp
        return "c.addi16sp", (0, 2)
    if name in ("slli", "srli", "srai"):
        if ops[2] == "0x0":  # shamt=0: the C.SLLI64/C.SRLI64/C.SRAI64 HINTs (Table 16.3)
            return f"c.{name}64", (0,)
        return f"c.{name}", (0, 2)
    if name == "jalr":  # shown as just rs1
        return ("c.jr" if ops[0] == "zero" else "c.jalr"), ()
    if name == "ebreak":
        return "c.ebreak", ()
    if name == "add":  # both expand to add; C.ADD has c[12] set (Table 16.7)
        return ("c.add" if c >> 12 & 1 else "c.mv"), (0, 2)
    return f"c.{name}", (0, 2)  # c.andi and the CA-format c.sub ... c.addw


def _disassemble_rvc(c, pc):
    insn = expand_rvc(c)
    if insn == 0:
        return f"unknown 0x{c:04x}"
    name, ops = _operands(insn, pc)
    cname, picks = _RVC_FORMS[(c & 3, c >> 13)] or _rvc_form(c, name, ops)
    shown = [ops[i] for i in picks]
    if name == "jalr":
        shown = [XREG[(insn >> 15) & 0x1F]]
    return _join(cname, shown)


def _join(name, ops):
    return f"{name} {', '.join(ops)}" if ops else name


def disassemble(insn: int, pc: int = 0) -> str:
    """One instruction as text; `insn` is compressed when its low bits are not 0b11.

    Accepts numpy integers from the hart state (converted, since their
    fixed-width arithmetic would overflow on 64-bit addresses).
    """
    insn, pc = int(insn), int(pc)
    if insn & 3 != 3:
        return _disassemble_rvc(insn & 0xFFFF, pc)
    insn &= 0xFFFFFFFF
    decoded = _operands(insn, pc)
    if decoded is None:
        return f"unknown 0x{insn:08x}"
    return _join(*decoded)
