"""Region discovery: which guest instructions one translation covers.

A region is the code reachable from one entry pc by direct branches and
fall-through *inside the entry's 4 KiB page* (QEMU's same-page rule: a
translation never depends on another page's mapping or contents), split
into basic blocks at every branch target.  Loops stay inside one region,
so a hot loop runs without returning to the interpreter.

Each instruction is classified once here (legal and translatable, or where
a block must end); ir.py turns the blocks into LLVM IR.  Legality comes from
the interpreter's own decoders (alu.py), so the two tiers cannot disagree
about which encodings trap.
"""

from dataclasses import dataclass, field

from vmkit.cpu.alu import alu_legal
from vmkit.cpu.amo import amo_op_valid
from vmkit.cpu.decode import funct3, imm_b, imm_j

MAX_BLOCK_INSNS = 64      # longer straight-line runs are split (budget granularity)
MAX_REGION_INSNS = 96
MAX_LOOP_INSNS = 48       # where the optimizing tier looks for the loops around a hot entry
MAX_REGION_BLOCKS = 64

# What an instruction does to control flow.
FLOW_NEXT = 0     # falls through
FLOW_BRANCH = 1   # conditional branch: target or fall-through
FLOW_JAL = 2      # direct jump
FLOW_JALR = 3     # indirect jump: leaves the region
FLOW_STOP = 4     # not translatable (SYSTEM, CSR, illegal, page end...): the block ends before it

OPCODES_FP_OP = (0x53, 0x43, 0x47, 0x4B, 0x4F)


@dataclass
class Insn:
    pc: int          # virtual pc
    bits: int        # 32-bit encoding (compressed ones expanded)
    length: int      # 2 or 4 bytes in memory
    raw: int         # the bits as fetched (for disassembly)
    flow: int
    target: int = 0  # FLOW_BRANCH / FLOW_JAL target pc


@dataclass
class Block:
    pc: int
    insns: list = field(default_factory=list)

    @property
    def end_pc(self) -> int:
        last = self.insns[-1]
        return last.pc + last.length


@dataclass
class Region:
    entry: int                 # virtual pc of the entry
    blocks: dict               # pc -> Block, entry first
    chunks: int                # P_CODE bits of the page this region was made from

    @property
    def insn_count(self) -> int:
        return sum(len(b.insns) for b in self.blocks.values())


def _legal(bits: int) -> bool:
    """True when the interpreter would execute `bits` without an illegal-instruction trap
    and the translator can emit it inline (or through a helper)."""
    opc = bits & 0x7F
    f3 = funct3(bits)
    if opc in (0x13, 0x1B, 0x33, 0x3B):
        return alu_legal(bits)
    if opc in (0x37, 0x17, 0x6F):
        return True
    if opc == 0x67:
        return f3 == 0
    if opc == 0x63:
        return f3 not in (2, 3)
    if opc == 0x03:
        return f3 != 7
    if opc == 0x23:
        return f3 <= 3
    if opc == 0x0F:
        return f3 <= 1          # fence, fence.i: no-ops (stores invalidate code)
    if opc == 0x2F:
        aop = (bits >> 27) & 0x1F
        return f3 in (2, 3) and aop not in (0x02, 0x03) and amo_op_valid(aop)
    if opc in (0x07, 0x27):
        return f3 in (2, 3)     # flw/fld/fsw/fsd; FS is checked at run time
    if opc in OPCODES_FP_OP:
        return True             # the helper reports illegal ones: a side exit
    return False                # SYSTEM, LR/SC and everything else end the block


def decode_at(code: bytes, page_vbase: int, pc: int, rvc) -> Insn:
    """Decode the instruction at virtual pc from the page's bytes."""
    off = pc - page_vbase
    if off > 4094:
        return Insn(pc, 0, 2, 0, FLOW_STOP)
    half = code[off] | (code[off + 1] << 8)
    if half & 3 == 3:
        if off > 4092:          # crosses into the next page: the interpreter fetches it
            return Insn(pc, 0, 4, half, FLOW_STOP)
        bits = half | (code[off + 2] << 16) | (code[off + 3] << 24)
        raw, length = bits, 4
    else:
        bits = int(rvc[half])
        raw, length = half, 2
        if bits == 0:
            return Insn(pc, 0, 2, raw, FLOW_STOP)
    if not _legal(bits):
        return Insn(pc, bits, length, raw, FLOW_STOP)
    opc = bits & 0x7F
    if opc == 0x63:
        return Insn(pc, bits, length, raw, FLOW_BRANCH, _wrap(pc + imm_b(bits)))
    if opc == 0x6F:
        return Insn(pc, bits, length, raw, FLOW_JAL, _wrap(pc + imm_j(bits)))
    if opc == 0x67:
        return Insn(pc, bits, length, raw, FLOW_JALR)
    return Insn(pc, bits, length, raw, FLOW_NEXT)


def _wrap(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def find_region(code: bytes, entry: int, rvc, loops_only: bool = False) -> Region | None:
    """The region entered at virtual pc `entry` of the page whose bytes are `code`.

    With loops_only (the optimizing tier's regions), just the loops through
    the entry, looked for among the nearest MAX_LOOP_INSNS instructions,
    when it is in one.  None when the entry instruction itself cannot be
    translated.
    """
    limit = MAX_LOOP_INSNS if loops_only else MAX_REGION_INSNS
    page_vbase = entry & ~0xFFF

    def in_page(pc):
        return page_vbase <= pc < page_vbase + 4096

    decoded: dict[int, Insn] = {}

    def insn(pc):
        if pc not in decoded:
            decoded[pc] = decode_at(code, page_vbase, pc, rvc)
        return decoded[pc]

    if insn(entry).flow == FLOW_STOP:
        return None
    # Pass 1: every reachable instruction and every leader (block start).
    leaders = {entry}
    work = [entry]
    seen = set()
    total = 0
    while work and total < limit and len(leaders) < MAX_REGION_BLOCKS:
        pc = work.pop(0)  # breadth first: the code nearest the entry
        if pc in seen:
            continue
        while total < limit:
            seen.add(pc)
            i = insn(pc)
            total += 1
            if i.flow == FLOW_STOP or i.flow == FLOW_JALR:
                break
            nxt = pc + i.length
            if i.flow in (FLOW_BRANCH, FLOW_JAL) and in_page(i.target) and i.target % 2 == 0:
                if i.target not in leaders:
                    leaders.add(i.target)
                    work.append(i.target)
            if i.flow == FLOW_JAL:
                break
            if i.flow == FLOW_BRANCH:
                if in_page(nxt) and nxt not in leaders:
                    leaders.add(nxt)
                    work.append(nxt)
                break
            if not in_page(nxt) or insn(nxt).flow == FLOW_STOP:
                break
            if nxt in leaders or nxt in seen:
                leaders.add(nxt)
                break
            pc = nxt
    # Pass 2: blocks from the final leader set.
    blocks: dict[int, Block] = {}
    order = [entry] + sorted(leaders - {entry})
    for start in order:  # grows while long runs are split
        if start in blocks or insn(start).flow == FLOW_STOP:
            continue
        b = Block(start)
        pc = start
        while True:
            i = insn(pc)
            if i.flow == FLOW_STOP:
                break
            b.insns.append(i)
            nxt = pc + i.length
            if i.flow != FLOW_NEXT or not in_page(nxt) or nxt in leaders:
                break
            if len(b.insns) >= MAX_BLOCK_INSNS:
                leaders.add(nxt)
                order.append(nxt)
                break
            pc = nxt
        blocks[start] = b
    if loops_only:
        blocks = _loops_through(entry, blocks)
    chunks = 0
    for b in blocks.values():
        for i in b.insns:
            first = i.pc - page_vbase
            last = min(first + i.length, 4096) - 1
            for c in range(first >> 6, (last >> 6) + 1):
                chunks |= 1 << c
    if chunks >> 63:
        chunks -= 1 << 64
    return Region(entry, blocks, chunks)


def _successors(block: Block, blocks: dict) -> list[int]:
    last = block.insns[-1]
    out = []
    if last.flow in (FLOW_BRANCH, FLOW_JAL):
        out.append(last.target)
    if last.flow in (FLOW_BRANCH, FLOW_NEXT):
        out.append(block.end_pc)
    return [pc for pc in out if pc in blocks]


def _loops_through(entry: int, blocks: dict) -> dict:
    """The blocks on some cycle through the entry (its strongly connected
    component), when there is one: the loops an optimized region is for.
    Code before and after them only costs compile time and registers."""
    preds: dict[int, list[int]] = {pc: [] for pc in blocks}
    for pc, b in blocks.items():
        for s in _successors(b, blocks):
            preds[s].append(pc)
    back = set()
    work = list(preds[entry])
    while work:  # everything that reaches the entry (all of it is reached from it)
        pc = work.pop()
        if pc not in back:
            back.add(pc)
            work.extend(preds[pc])
    if entry not in back:
        return blocks
    return {pc: b for pc, b in blocks.items() if pc in back}
