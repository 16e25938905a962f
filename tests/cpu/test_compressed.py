"""RVC expansion (vmkit/cpu/compressed.py) checked against GNU objdump.

For every one of the 49152 16-bit encodings, objdump's reading of the
compressed instruction (rewritten from its c.* form into the base
instruction the spec says it expands to) must equal objdump's reading of our
32-bit expansion, and the encodings objdump rejects must be illegal for us.

Deliberate differences from binutils 2.40, each allowed by name below:
- 0x6101 "c.addi16sp sp,0": objdump accepts it, but nzimm=0 is reserved
  (ISA 20191213, 16.5 C.ADDI16SP "nzimm != 0"; Table 16.5 marks it RES).
- 0x0000 "c.unimp": objdump names it, but it is the defined illegal
  instruction (16.5), so illegal for us as well: not a difference really.
"""

import time

import numpy as np
import pytest

from vmkit.cpu.compressed import build_rvc_table, expand_rvc

# objdump rejects these, the spec defines them (see module docstring).
RESERVED_BUT_OBJDUMP_ACCEPTS = {0x6101: "c.addi16sp with nzimm=0 is reserved (16.5)"}


def _offset(target, addr):
    """A branch target printed by objdump, as a signed offset from addr."""
    off = (int(target, 16) - addr) & ((1 << 64) - 1)
    return str(off - (1 << 64) if off >> 63 else off)


# c.* mnemonic -> base mnemonic, by how the operands map (16.3-16.5).
_SAME_OPERANDS = {
    "c.addi4spn": "addi", "c.lui": "lui",
    "c.fld": "fld", "c.lw": "lw", "c.ld": "ld", "c.fsd": "fsd", "c.sw": "sw", "c.sd": "sd",
    "c.fldsp": "fld", "c.lwsp": "lw", "c.ldsp": "ld",
    "c.fsdsp": "fsd", "c.swsp": "sw", "c.sdsp": "sd",
}
_RD_IS_RS1 = {
    "c.addi": "addi", "c.addiw": "addiw", "c.addi16sp": "addi",
    "c.slli": "slli", "c.srli": "srli", "c.srai": "srai", "c.andi": "andi",
    "c.sub": "sub", "c.xor": "xor", "c.or": "or", "c.and": "and",
    "c.subw": "subw", "c.addw": "addw", "c.add": "add",
}
_SHIFT64 = {"c.slli64": "slli", "c.srli64": "srli", "c.srai64": "srai"}


def base_form(text, addr):
    """objdump's c.* text rewritten as the base instruction it expands to."""
    mn, _, rest = text.partition(" ")
    ops = rest.split(",") if rest else []
    if mn in _SAME_OPERANDS:
        return _SAME_OPERANDS[mn], ops
    if mn in _RD_IS_RS1:
        return _RD_IS_RS1[mn], [ops[0], ops[0], ops[1]]
    if mn in _SHIFT64:  # shamt=0 HINTs (Table 16.3)
        return _SHIFT64[mn], [ops[0], ops[0], "0x0"]
    if mn == "c.li":
        return "addi", [ops[0], "zero", ops[1]]
    if mn == "c.mv":
        return "add", [ops[0], "zero", ops[1]]
    if mn == "c.j":
        return "jal", ["zero", _offset(ops[0], addr)]
    if mn in ("c.beqz", "c.bnez"):
        return mn[2:5], [ops[0], "zero", _offset(ops[1], addr)]
    if mn == "c.jr":
        return "jalr", ["zero", f"0({ops[0]})"]
    if mn == "c.jalr":
        return "jalr", ["ra", f"0({ops[0]})"]
    if mn == "c.ebreak":
        return "ebreak", []
    raise AssertionError(f"unexpected compressed mnemonic {text!r}")


def plain_form(text, addr):
    """objdump's text of a 32-bit instruction, branch targets made relative."""
    mn, _, rest = text.partition(" ")
    ops = rest.split(",") if rest else []
    if mn in ("jal", "beq", "bne"):
        ops[-1] = _offset(ops[-1], addr)
    return mn, ops


def test_table_shape_and_speed():
    t0 = time.perf_counter()
    table = build_rvc_table()
    assert time.perf_counter() - t0 < 1.0
    assert table.shape == (65536,) and table.dtype == np.int64
    idx = np.arange(65536)
    assert not table[(idx & 3) == 3].any()
    assert ((table == 0) | ((table & 3) == 3)).all()  # expansions are 32-bit
    assert table.max() <= 0xFFFFFFFF and table.min() >= 0


@pytest.mark.parametrize("c, expected", [
    (0x1141, 0xFF010113),   # c.addi sp, -16      -> addi sp, sp, -16
    (0x8082, 0x00008067),   # c.jr ra             -> jalr zero, 0(ra)
    (0x9002, 0x00100073),   # c.ebreak            -> ebreak
    (0x0001, 0x00000013),   # c.nop               -> addi zero, zero, 0
    (0x4501, 0x00000513),   # c.li a0, 0          -> addi a0, zero, 0
    (0x852E, 0x00B00533),   # c.mv a0, a1         -> add a0, zero, a1
    (0x2501, 0x0005051B),   # c.addiw a0, 0       -> addiw a0, a0, 0 (sext.w)
    (0xA001, 0x0000006F),   # c.j .               -> jal zero, 0
    (0x0000, 0),            # defined illegal instruction (16.5)
    (0x6101, 0),            # c.addi16sp sp, 0: reserved
    (0x6001, 0),            # c.lui zero, 0: reserved
    (0x3001, 0),            # c.addiw zero, 0: reserved (c.jal on RV32)
    (0x4002, 0),            # c.lwsp zero, 0(sp): reserved
    (0x8002, 0),            # c.jr zero: reserved
    (0x8000, 0),            # quadrant 0 funct3=100: reserved
    (0x9C41, 0),            # CA funct=10 with bit 12 set: reserved
])
def test_known_expansions(c, expected):
    assert expand_rvc(c) == expected


def test_every_encoding_matches_objdump(objdump):
    table = build_rvc_table()
    encodings = [c for c in range(65536) if c & 3 != 3]
    compressed = objdump(encodings, 2)
    legal = [c for c in encodings if table[c]]
    expanded = objdump([int(table[c]) for c in legal], 4)
    ours = {c: (expanded[4 * i], 4 * i) for i, c in enumerate(legal)}

    mismatches = []
    for i, c in enumerate(encodings):
        theirs = compressed[2 * i]
        objdump_illegal = theirs.startswith(".2byte") or theirs == "c.unimp"
        if c in RESERVED_BUT_OBJDUMP_ACCEPTS:
            assert not objdump_illegal and table[c] == 0
            continue
        if objdump_illegal or table[c] == 0:
            if not (objdump_illegal and table[c] == 0):
                got = ours[c][0] if c in ours else "illegal"
                mismatches.append(f"{c:04x}: objdump {theirs!r}, ours {got!r}")
            continue
        want = base_form(theirs, 2 * i)
        got = plain_form(*ours[c])
        if want != got:
            mismatches.append(f"{c:04x}: objdump {theirs!r} = {want}, ours {got}")
    assert not mismatches, "\n".join(mismatches[:40])
