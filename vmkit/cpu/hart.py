"""The friendly Python face of one hart: arrays, reset, run, MMIO completion.

Pairs the raw jitted `run` (arrays in, exit code out) with a thin wrapper
that owns the arrays and checks what Python hands to the core (PySDM's
kernel-plus-wrapper pattern).  The board (vmkit.machine) drives a Hart: it
calls `run(budget)`, services EXIT_MMIO through its bus, sleeps or skips
time on EXIT_WFI, and sets the external interrupt lines from the PLIC.

A Hart may have a Translator (translator.py, the translating tier); its
`run` then also services translation requests between core runs and, with
`--jit check`, runs translations beside the interpreter.  Neither shows in
the exits the board sees.
"""

import sys
import warnings

import numpy as np

from vmkit.cpu import csrs as C
from vmkit.cpu import jit as _jit
from vmkit.cpu import state as S

_rvc_table = None


def rvc_table() -> np.ndarray:
    global _rvc_table
    if _rvc_table is None:
        from vmkit.cpu.compressed import build_rvc_table
        # uint32 halves the table (256 KiB) so more of it stays in cache.
        _rvc_table = np.ascontiguousarray(build_rvc_table(), dtype=np.uint32)
    return _rvc_table


def ensure_compiled(quiet: bool = False) -> None:
    """Compile (or load from the cache) the core, telling the user the first time."""
    if _jit.JIT_DISABLED:
        return
    first = not _jit.is_compiled()
    if first and not quiet:
        print("compiling the CPU core (first run only)...", file=sys.stderr, flush=True)
    from vmkit.cpu.interp import run
    h = Hart(np.zeros(4096, dtype=np.uint8), compile_check=False)
    run(*h._arrays(), 0)
    from vmkit.cpu import helpers  # noqa: F401  (the translator's FP helper)
    if first:
        _jit.mark_compiled()


class Hart:
    """One RV64GC hart with its RAM.  `ram` is a uint8 array (guest RAM)."""

    def __init__(self, ram: np.ndarray, ram_base: int = 0x8000_0000, hartid: int = 0,
                 compile_check: bool = True, jit=None):
        if ram.dtype != np.uint8 or ram.ndim != 1 or len(ram) % 4096:
            raise ValueError("RAM must be a 1-D uint8 array whose size is a multiple of 4 KiB")
        self.ram = ram
        self.ram_base = ram_base
        self.hartid = hartid
        (self.x, self.f, self.csr, self.st, self.tlb_tag, self.tlb_off) = S.new_state(len(ram), ram_base)
        self.ram16 = ram.view(np.uint16)
        self.ram32 = ram.view(np.uint32)
        self.ram64 = ram.view(np.int64)
        self.rvc = rvc_table()
        if compile_check:
            ensure_compiled()
        from vmkit.cpu.interp import run
        self._run = run
        self.translator = None
        if jit is not None and jit.enabled and not _jit.JIT_DISABLED:
            from vmkit.cpu.translator import Translator
            self.translator = Translator(ram, jit, self.rvc)
            self.jtab, self.pages, self.jreq = (self.translator.jtab, self.translator.pages,
                                                self.translator.jreq)
            self.cp = self.translator.cp
        else:  # the interpreter alone still reads the (empty) code-page marks
            self.jtab, self.pages, self.jreq = S.new_jit_tables(len(ram))
            from vmkit.cpu.emit import idle_tables
            self.cp = idle_tables()
        self.reset(ram_base)
        if self.translator is not None:
            self.translator.attach(self)

    def _arrays(self):
        return (self.x, self.f, self.csr, self.st, self.tlb_tag, self.tlb_off,
                self.ram, self.ram16, self.ram32, self.ram64, self.rvc,
                self.jtab, self.pages, self.jreq, self.cp)

    def reset(self, pc: int) -> None:
        """Power-on state (Privileged ISA 3.4): M-mode, mstatus.MIE = 0, pc = reset vector."""
        self.x[:] = 0
        self.f[:] = 0
        self.csr[:] = 0
        tick = self.st[S.TICK_INSTRUCTIONS]
        self.st[:] = 0
        self.st[S.TICK_INSTRUCTIONS] = tick
        self.st[S.RAM_BASE] = self.ram_base
        self.st[S.RAM_SIZE] = len(self.ram)
        self.st[S.RESERVATION] = -1
        self.st[S.BREAK_PC] = -1
        self.st[S.MTIMECMP] = -1  # no timer interrupt until software sets one
        self.st[S.PRIV] = C.PRV_M
        self.st[S.TLB_CTX] = C.PRV_M
        self.st[S.PC] = pc
        self.csr[C.MISA] = C.MISA_RV64GC
        self.csr[C.MSTATUS] = C.MSTATUS_XLEN64
        self.csr[C.MHARTID] = self.hartid
        self.tlb_tag[:, :] = S.TLB_INVALID
        self.tlb_tag[S.TLB_LOG, 0] = 0
        if getattr(self, "translator", None) is not None:
            self.translator.configure(self)
            self.translator.flush()  # a reset reloads RAM

    # --- running ------------------------------------------------------------------
    def run(self, budget: int) -> int:
        """Execute up to `budget` instructions; returns state.EXIT_*."""
        tr = self.translator
        while True:
            start = self.instret
            code = self.core_run(budget)
            if tr is None:
                return code
            if code == S.EXIT_JIT_CALL:
                tr.check_call(self)
            tr.service()
            if code != S.EXIT_JIT and code != S.EXIT_JIT_CALL:
                return code
            budget -= self.instret - start

    def core_run(self, budget: int) -> int:
        """One call of the numba core (interp.run)."""
        if _jit.JIT_DISABLED:
            with warnings.catch_warnings(), np.errstate(over="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                return int(self._run(*self._arrays(), budget))
        return int(self._run(*self._arrays(), budget))

    def jit_stats(self) -> list[str]:
        """Lines about the translating tier for `--stats` (empty when it is off)."""
        if self.translator is None:
            return []
        return self.translator.describe(self.instret, int(self.st[S.STAT_JIT_INSNS]),
                                        int(self.st[S.STAT_JIT_CALLS]))

    def hold_translation(self, held: bool) -> None:
        """Pause (True) or resume background translation: the caller holds the VM."""
        if self.translator is not None:
            self.translator.hold(held)

    def close(self) -> None:
        if self.translator is not None:
            self.translator.close()

    @property
    def pc(self) -> int:
        return int(self.st[S.PC])

    @pc.setter
    def pc(self, value: int) -> None:
        self.st[S.PC] = _as_int64(value)

    @property
    def instret(self) -> int:
        return int(self.st[S.INSTRET])

    # --- MMIO exits -----------------------------------------------------------------
    @property
    def mmio_request(self):
        """(physical address, size, is_store, store value) of the pending EXIT_MMIO."""
        st = self.st
        return (int(st[S.MMIO_ADDR]) & (2**64 - 1), int(st[S.MMIO_SIZE]),
                bool(st[S.MMIO_IS_STORE]), int(st[S.MMIO_VALUE]) & (2**64 - 1))

    def complete_mmio(self, value: int = 0) -> None:
        """Finish the pending MMIO access: write a load's result, step past it."""
        st = self.st
        if not st[S.MMIO_IS_STORE]:
            size = int(st[S.MMIO_SIZE])
            value &= (1 << (8 * size)) - 1
            if st[S.MMIO_FP]:
                if size == 4:
                    value |= 0xFFFFFFFF_00000000  # NaN-box
                self.f[int(st[S.MMIO_RD])] = _as_int64(value)
                self.csr[C.MSTATUS] |= C.MSTATUS_FS | C.MSTATUS_SD
            else:
                if st[S.MMIO_SIGNED] and value >> (8 * size - 1):
                    value -= 1 << (8 * size)
                rd = int(st[S.MMIO_RD])
                if rd:
                    self.x[rd] = _as_int64(value)
        st[S.PC] = st[S.MMIO_NEXT_PC]
        st[S.INSTRET] += 1

    def fault_mmio(self) -> None:
        """Nothing claims the address: raise an access fault in the guest."""
        st = self.st
        cause = C.CAUSE_STORE_ACCESS if st[S.MMIO_IS_STORE] else C.CAUSE_LOAD_ACCESS
        st[S.TRAP_PENDING] = 1
        st[S.TRAP_CAUSE] = cause
        st[S.TRAP_TVAL] = st[S.MMIO_VADDR]

    # --- interrupts and time -------------------------------------------------------
    def set_irq_line(self, mip_bit: int, level: bool) -> None:
        """Raise or lower a platform interrupt line (MEIP/SEIP from the PLIC)."""
        if level:
            self.st[S.EXTERNAL_IRQ] |= mip_bit
        else:
            self.st[S.EXTERNAL_IRQ] &= ~mip_bit

    @property
    def mtime(self) -> int:
        return int(self.st[S.MTIME])

    @mtime.setter
    def mtime(self, value: int) -> None:
        self.st[S.MTIME] = value

    def next_timer_deadline(self):
        """The smallest mtime at which a timer interrupt could fire, or None."""
        deadlines = []
        cmp_m = int(self.st[S.MTIMECMP]) & (2**64 - 1)
        if cmp_m != 2**64 - 1:
            deadlines.append(cmp_m)
        if self.csr[C.MENVCFG] & (-(1 << 63)):
            cmp_s = int(self.csr[C.STIMECMP]) & (2**64 - 1)
            if cmp_s != 2**64 - 1:
                deadlines.append(cmp_s)
        return min(deadlines) if deadlines else None

    def interrupt_pending(self) -> bool:
        """True when an enabled interrupt is pending (wakes the hart from WFI)."""
        from vmkit.cpu.csr import mip_value
        return bool(mip_value(self.csr, self.st) & self.csr[C.MIE])


def _as_int64(value: int) -> int:
    value &= 2**64 - 1
    return value - 2**64 if value >= 2**63 else value
