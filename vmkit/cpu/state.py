"""Hart state as flat numpy arrays, and the exit protocol of `run`.

A hart is a handful of arrays that the numba core reads and writes directly
(mini-rv32ima's flat struct, KVM's `kvm_run`):

- ``x``   int64[32]   integer registers (x[0] is kept at 0)
- ``f``   int64[32]   floating-point registers, raw IEEE bits (singles NaN-boxed)
- ``csr`` int64[4096] CSR storage indexed by CSR number (see csrs.py); only
          the implemented ones are meaningful, access checks live in csr.py
- ``st``  int64[ST_SIZE] everything else: pc, privilege, timer, exit record

All values are signed int64 because numba promotes mixed int64/uint64
arithmetic to float; the core casts to uint64 only for unsigned operations.
"""

import numpy as np

# --- indices into st ---------------------------------------------------------------
PC = 0
PRIV = 1              # current privilege level (csrs.PRV_*)
MTIME = 2             # CLINT mtime (ticks of the 10 MHz timebase)
MTIMECMP = 3          # CLINT mtimecmp for hart 0
MSIP = 4              # CLINT msip for hart 0 (0 or 1)
RESERVATION = 5       # LR/SC reservation address, -1 when none
INSTRET = 6           # instructions retired (drives minstret/mcycle)
WFI = 7               # 1 while the hart sits in WFI
EXTERNAL_IRQ = 8      # mip bits driven by the PLIC from Python (MEIP, SEIP)
# Deterministic clock: mtime advances by one tick every TICK_INSTRUCTIONS
# retired instructions.  Host clock: Python sets MTIME at each exit and the
# core interpolates with the same ratio in between.
TICK_INSTRUCTIONS = 9
TICK_REMAINDER = 10   # instructions retired since the last tick
# Exit record, filled by the core when run() returns EXIT_MMIO.
MMIO_ADDR = 11        # physical address
MMIO_SIZE = 12        # 1, 2, 4 or 8 bytes
MMIO_IS_STORE = 13    # 1 for a store, 0 for a load
MMIO_VALUE = 14       # value to store / value loaded (written by Python)
MMIO_RD = 15          # destination register of a load
MMIO_SIGNED = 16      # 1 when the load sign-extends
MMIO_FP = 17          # 1 when rd is a floating-point register (flw/fld)
MMIO_NEXT_PC = 18     # pc of the instruction after the access
HALT_CODE = 19        # finisher value for EXIT_HALT
RAM_BASE = 20         # guest-physical base of RAM (0x8000_0000 on virt)
RAM_SIZE = 21
TRAP_PENDING = 22     # internal: an exception was raised by the current instruction
TRAP_CAUSE = 23
TRAP_TVAL = 24
TRACE_COUNT = 25      # tracing: instructions left to trace (0 = off)
BREAK_PC = 26         # EXIT_BREAK when pc reaches this (-1 = none)
LAST_INSN = 27        # raw bits of the instruction being executed
TLB_FLUSH = 28        # internal: set by CSR writes that invalidate the TLBs
MMIO_VADDR = 29       # virtual address of the MMIO access (for a fault's tval)
# Translation context: everything besides satp that decides how an address
# translates (privilege, SUM, MXR, MPRV, MPP).  TLB tags carry it, so a trap
# or a SUM toggle needs no flush (see mmu.py).
TLB_CTX = 30
# Statistics, incremented on slow paths only (shown by `vmkit run --stats`).
STAT_TLB_MISSES = 32
STAT_EXCEPTIONS = 33
STAT_INTERRUPTS = 34
STAT_SLOW_ACCESSES = 35  # loads/stores that missed the inline fast path
STAT_MISALIGNED = 36
# When nonzero, run() resumes the check-point schedule of the call that
# returned EXIT_JIT: the next check is RESUME_CHECK - 1 instructions away
# (so a run split by translation requests checks interrupts exactly where
# an unsplit run would).
RESUME_CHECK = 37
# The translating tier (translator.py): a block start reached JIT_THRESHOLD
# times is queued for translation (0 = tier off).  With JIT_SYNC set, run()
# returns EXIT_JIT at once so the caller translates before going on.
JIT_THRESHOLD = 38
JIT_SYNC = 39
STAT_JIT_INSNS = 40      # instructions retired by translated code
STAT_JIT_CALLS = 41      # entries into translated code
# `--jit check`: instead of calling a translation, run() returns EXIT_JIT_CALL
# with its jtab slot and limit; Hart.run has translator.py run it beside the
# interpreter.  RESUME_LOOKUP then says whether the resumed run starts by
# looking up its pc (2) or not (0); STOP_AT_BUDGET makes a run end exactly at
# its budget, before the interrupt check there (the reference run).
JIT_CHECK = 42
JIT_CALL_SLOT = 43
JIT_CALL_LIMIT = 44
RESUME_LOOKUP = 45
STOP_AT_BUDGET = 46
JIT_TIER2_INSNS = 47     # a baseline translation that ran this many instructions is optimized
# The virtual base of the page a baseline (copy-and-patch) translation runs
# in, set by run() at entry: its stencils address guest pcs relative to it.
JIT_PAGE_BASE = 48
# Where a baseline translation's exit stub keeps the jump that can chain it
# to the translation of its target (emit.py), set by the stub as it leaves.
JIT_CHAIN_SITE = 49
ST_SIZE = 50

# --- exit reasons -----------------------------------------------------------------
EXIT_BUDGET = 0       # instruction budget spent
EXIT_MMIO = 1         # load/store to a non-RAM, non-CLINT physical address
EXIT_WFI = 2          # hart idle: nothing pending and enabled
EXIT_HALT = 3         # power-off/reboot request (HALT_CODE)
EXIT_BREAK = 4        # pc reached BREAK_PC
EXIT_TRACE = 5        # one instruction executed in trace mode
EXIT_JIT = 6          # internal to Hart.run: translation requests wait (JIT_SYNC)
EXIT_JIT_CALL = 7     # internal to Hart.run: a translation to run in lockstep (JIT_CHECK)

# --- TLBs ---------------------------------------------------------------------------
TLB_SIZE = 4096       # direct-mapped entries per TLB
TLB_INVALID = 1 << 62  # no tag (vpn << TLB_CTX_BITS | ctx) is this large
TLB_CTX_BITS = 7
# Row TLB_LOG of tlb_tag logs which entries were filled since the last
# flush ([0] = count, -1 after an overflow; then kind * TLB_SIZE + index), so
# a flush (sfence.vma, satp write: frequent in Linux) touches only those.
TLB_LOG = 3
TLB_FETCH = 0
TLB_LOAD = 1
TLB_STORE = 2


# --- the translating tier's tables (one set per VM, see translator.py) -----------
# jtab: a direct-mapped table indexed by code_hash(RAM offset of a block start).
JTAB_SIZE = 1 << 16
J_KEY = 0             # RAM offset of the translated entry (-1: none)
J_VPC = 1             # the virtual pc it was translated for (auipc/jal see it)
J_FN = 2              # host address of the translation
J_VER = 3             # pages[page, P_VER] when it was translated
J_HOT_KEY = 4         # hotness counter: RAM offset counted ...
J_HOT = 5             # ... how often it was reached (once translated: instructions it ran)
J_TIER = 6            # 1: baseline translation, 2: optimized (see backend.py)
J_COLUMNS = 7
# pages: per 4 KiB RAM page.
P_CODE = 0            # bit i: bytes [64i, 64i+64) of the page are translated
P_VER = 1             # bumped whenever the page's translations become stale
P_COLUMNS = 2
# jreq: translation requests from the interpreter; [0, 0] is the count.
JREQ_SIZE = 64
JREQ_COLUMNS = 3      # RAM offset, virtual pc, tier wanted


def new_jit_tables(ram_size: int):
    """Allocate the tier's tables for a RAM of ram_size bytes: (jtab, pages, jreq)."""
    jtab = np.full((JTAB_SIZE, J_COLUMNS), -1, dtype=np.int64)
    jtab[:, J_HOT] = 0
    pages = np.zeros((max(1, ram_size >> 12), P_COLUMNS), dtype=np.int64)
    jreq = np.zeros((JREQ_SIZE + 1, JREQ_COLUMNS), dtype=np.int64)
    return jtab, pages, jreq


def new_state(ram_size: int, ram_base: int = 0x8000_0000):
    """Allocate the arrays of one hart; returns (x, f, csr, st, tlb_tag, tlb_off)."""
    x = np.zeros(32, dtype=np.int64)
    f = np.zeros(32, dtype=np.int64)
    csr = np.zeros(4096, dtype=np.int64)
    st = np.zeros(ST_SIZE, dtype=np.int64)
    st[RAM_BASE] = ram_base
    st[RAM_SIZE] = ram_size
    st[RESERVATION] = -1
    st[BREAK_PC] = -1
    st[TICK_INSTRUCTIONS] = 100
    # tlb_tag[kind, i] = virtual page number; tlb_off[kind, i] = RAM offset of the page
    tlb_tag = np.full((4, TLB_SIZE), TLB_INVALID, dtype=np.int64)
    tlb_tag[TLB_LOG, 0] = 0
    tlb_off = np.zeros((3, TLB_SIZE), dtype=np.int64)
    return x, f, csr, st, tlb_tag, tlb_off
