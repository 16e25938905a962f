"""Platform-Level Interrupt Controller, as QEMU's virt board has it (sifive_plic).

RISC-V PLIC Specification 1.0.0: "Memory Map", "Interrupt Gateways",
"Interrupt Priorities", "Interrupt Pending Bits", "Interrupt Enables",
"Priority Thresholds", "Interrupt Claim Process", "Interrupt Completion".

Sources 1..95 (source 0 means "none").  Two contexts per hart: context 2*h
is hart h's M-mode (drives MEIP), context 2*h+1 its S-mode (drives SEIP).

Sources are level-triggered.  The gateway holds a claimed source back until
its completion; after that, a line still high pends it again.  As in QEMU,
a source's pending bit follows its line while the source is not claimed, so
a line that drops before the claim withdraws the request; pending is thus
derived (`lines & ~claimed`) rather than stored, and the pending registers
are read-only.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vmkit.cpu.csrs import IRQ_MEI, IRQ_SEI
from vmkit.devices.device import guest_error, state_int, state_ints
from vmkit.machine.fdt import FdtNode
from vmkit.machine.memmap import PLIC_BASE, PLIC_NUM_PRIORITIES, PLIC_NUM_SOURCES, PLIC_SIZE

log = logging.getLogger(__name__)

# Register layout ("Memory Map")
PRIORITY_BASE = 0x000000    # + 4 * source
PENDING_BASE = 0x001000     # + 4 * word, 32 sources per word
ENABLE_BASE = 0x002000      # + ENABLE_STRIDE * context + 4 * word
ENABLE_STRIDE = 0x80
CONTEXT_BASE = 0x200000     # + CONTEXT_STRIDE * context
CONTEXT_STRIDE = 0x1000
CONTEXT_THRESHOLD = 0x0     # within a context's block
CONTEXT_CLAIM = 0x4         # read: claim; write: complete

# Priorities and thresholds are WARL fields holding 0..PLIC_NUM_PRIORITIES.
PRIORITY_MASK = 0x7
assert PLIC_NUM_PRIORITIES <= PRIORITY_MASK

CONTEXTS_PER_HART = 2       # M-mode, S-mode

_WORD_MASK = 0xFFFF_FFFF


class Plic:
    """`set_mip(context, level)` is called whenever a context's interrupt
    output changes level."""

    def __init__(self, set_mip: Callable[[int, bool], None], *, num_harts: int = 1,
                 num_sources: int = PLIC_NUM_SOURCES) -> None:
        if num_harts < 1 or not 2 <= num_sources <= 1024:
            raise ValueError(f"PLIC needs >= 1 hart and 2..1024 sources, got {num_harts}, {num_sources}")
        self._set_mip = set_mip
        self.num_sources = num_sources
        self.num_contexts = CONTEXTS_PER_HART * num_harts
        self._words = (num_sources + 31) // 32
        # Bits for sources 1..num_sources-1: source 0 never pends or enables.
        self._source_mask = ((1 << num_sources) - 1) & ~1
        self._lines = 0  # input levels: wires, not registers, so reset keeps them
        self._outputs = [False] * self.num_contexts
        self._reset_registers()

    # --- device side ------------------------------------------------------------------
    def set_line(self, source: int, level: bool) -> None:
        """Drive interrupt source `source` (1..num_sources-1) to `level`."""
        if not 1 <= source < self.num_sources:
            raise ValueError(f"PLIC source {source} out of range 1..{self.num_sources - 1}")
        if level:
            self._lines |= 1 << source
        else:
            self._lines &= ~(1 << source)
        self._update()

    # --- bus side ----------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size != 4 or offset % 4:
            guest_error(log, "plic: %d-byte read at %#x (registers are aligned words)", size, offset)
            return 0
        match self._decode(offset):
            case ("priority", source):
                return self.priority[source]
            case ("pending", word):
                return (self._pending() >> (32 * word)) & _WORD_MASK
            case ("enable", context, word):
                return (self.enable[context] >> (32 * word)) & _WORD_MASK
            case ("threshold", context):
                return self.threshold[context]
            case ("claim", context):
                return self._claim(context)
            case _:
                guest_error(log, "plic: read of reserved offset %#x", offset)
                return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset % 4:
            guest_error(log, "plic: %d-byte write at %#x (registers are aligned words)", size, offset)
            return
        value &= _WORD_MASK
        match self._decode(offset):
            case ("priority", source) if source != 0:
                self.priority[source] = value & PRIORITY_MASK
            case ("enable", context, word):
                shift = 32 * word
                bits = (self.enable[context] & ~(_WORD_MASK << shift)) | (value << shift)
                self.enable[context] = bits & self._source_mask
            case ("threshold", context):
                self.threshold[context] = value & PRIORITY_MASK
            case ("claim", context):
                self._complete(context, value)
            case _:
                # Includes source 0's priority and the read-only pending bits.
                guest_error(log, "plic: write %#x to read-only or reserved offset %#x", value, offset)
                return
        self._update()

    def reset(self) -> None:
        self._reset_registers()
        self._update()

    def save(self) -> dict[str, Any]:
        return {
            "priority": list(self.priority),
            "enable": list(self.enable),
            "threshold": list(self.threshold),
            "lines": self._lines,
            "claimed": self._claimed,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a `save()` dict (checked first: DeviceStateError leaves the
        PLIC unchanged), then drive every context output to its level."""
        mask = self._source_mask
        priority = state_ints(state, "priority", self.num_sources, 0, PRIORITY_MASK)
        priority[0] = 0
        enable = state_ints(state, "enable", self.num_contexts, 0, mask)
        threshold = state_ints(state, "threshold", self.num_contexts, 0, PRIORITY_MASK)
        lines = state_int(state, "lines", 0, mask)
        claimed = state_int(state, "claimed", 0, mask)
        self.priority, self.enable, self.threshold = priority, enable, threshold
        self._lines, self._claimed = lines & mask, claimed & mask
        self._update(force=True)

    def dt_node(self, parent: FdtNode, cpu_intcs: Sequence[FdtNode], *,
                base: int = PLIC_BASE) -> FdtNode:
        """The node QEMU's virt writes (create_fdt_socket_plic); `cpu_intcs`
        are the harts' riscv,cpu-intc nodes, in hart order."""
        if len(cpu_intcs) * CONTEXTS_PER_HART != self.num_contexts:
            raise ValueError(f"PLIC has {self.num_contexts} contexts, "
                             f"got {len(cpu_intcs)} harts' interrupt controllers")
        node = parent.child(f"plic@{base:x}")
        node.prop_u32("#interrupt-cells", 1)
        node.prop_u32("#address-cells", 0)
        node.prop_strlist("compatible", "sifive,plic-1.0.0", "riscv,plic0")
        node.prop_empty("interrupt-controller")
        cells: list[int] = []
        for intc in cpu_intcs:  # context order: M-mode then S-mode, per hart
            cells += [intc.phandle(), IRQ_MEI, intc.phandle(), IRQ_SEI]
        node.prop_u32("interrupts-extended", *cells)
        node.prop_reg((base, PLIC_SIZE))
        # riscv,ndev counts the usable sources 1..ndev (QEMU 7.2 wrote
        # num_sources here, one too many; QEMU 8.0 and later write this).
        node.prop_u32("riscv,ndev", self.num_sources - 1)
        node.phandle()
        return node

    # --- internals -------------------------------------------------------------------
    def _reset_registers(self) -> None:
        self.priority = [0] * self.num_sources
        self.enable = [0] * self.num_contexts      # one bitmask per context
        self.threshold = [0] * self.num_contexts
        self._claimed = 0                          # sources held at the gateway

    def _decode(self, offset: int) -> tuple | None:
        """Map a register offset to (kind, index...) or None if reserved."""
        if PRIORITY_BASE <= offset < PRIORITY_BASE + 4 * self.num_sources:
            return ("priority", (offset - PRIORITY_BASE) // 4)
        if PENDING_BASE <= offset < PENDING_BASE + 4 * self._words:
            return ("pending", (offset - PENDING_BASE) // 4)
        if ENABLE_BASE <= offset < ENABLE_BASE + ENABLE_STRIDE * self.num_contexts:
            context, rel = divmod(offset - ENABLE_BASE, ENABLE_STRIDE)
            return ("enable", context, rel // 4) if rel < 4 * self._words else None
        if CONTEXT_BASE <= offset < CONTEXT_BASE + CONTEXT_STRIDE * self.num_contexts:
            context, rel = divmod(offset - CONTEXT_BASE, CONTEXT_STRIDE)
            if rel == CONTEXT_THRESHOLD:
                return ("threshold", context)
            if rel == CONTEXT_CLAIM:
                return ("claim", context)
        return None

    def _pending(self) -> int:
        return self._lines & ~self._claimed

    def _best(self, context: int) -> int:
        """"Interrupt Claim Process": the pending, enabled source of highest
        priority above the threshold; ties go to the lowest id; 0 if none."""
        candidates = self._pending() & self.enable[context]
        best, best_priority = 0, self.threshold[context]
        while candidates:
            low = candidates & -candidates
            source = low.bit_length() - 1
            if self.priority[source] > best_priority:
                best, best_priority = source, self.priority[source]
            candidates ^= low
        return best

    def _claim(self, context: int) -> int:
        source = self._best(context)
        if source:
            self._claimed |= 1 << source
            self._update()
        return source

    def _complete(self, context: int, source: int) -> None:
        # Like QEMU, any valid source id completes; the spec would also
        # ignore an id not enabled for this context (Linux never relies
        # on either: it enables a source around a completion if needed).
        if 1 <= source < self.num_sources:
            self._claimed &= ~(1 << source)
        else:
            guest_error(log, "plic: context %d completed invalid source %d", context, source)

    def _update(self, force: bool = False) -> None:
        for context in range(self.num_contexts):
            level = self._best(context) != 0
            if force or level != self._outputs[context]:
                self._outputs[context] = level
                self._set_mip(context, level)
