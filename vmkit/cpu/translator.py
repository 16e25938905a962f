"""The translating tier: one Translator per VM, beside the interpreter.

How a translation comes to be (shared/design/JIT.md; docs/cpu-core.md):

0. interp.run counts arrivals at each block start (by RAM offset); one that
   reaches the threshold is translated there and then by the baseline tier
   (emit.py: copy-and-patch stencils, microseconds a block).  This object
   owns what that needs: the code cache, the stencil tables, scratch space
   (`cp`), and flushes the cache when the baseline tier finds it full.
1. A baseline translation that has run `optimize_after` instructions is queued in
   `jreq` for the optimizing tier.
2. `service` (called by Hart.run between core runs) takes the requests:
   it snapshots the 4 KiB page, finds the region (region.py), marks the
   page's chunks as code so that stores to them take the slow path from
   now on, and hands the region to the compile thread (or compiles it at
   once in synchronous mode).
3. The compile thread turns it into IR (ir.py) and an object (backend.py),
   with llvmlite releasing the GIL while LLVM works.
4. `service` links finished objects into the W^X code cache
   (codecache.py) and publishes them in `jtab`, unless the page changed
   since the snapshot (its version moved): then the work is dropped.

All state is in this object and its arrays, none in globals: a second hart
would share the tables (translations are keyed by physical address) and
call `invalidate_range`/`flush` as the one way to drop code.
"""

from __future__ import annotations

import ctypes
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from vmkit.cpu import state as S
from vmkit.cpu.backend import Backend, BackendError
from vmkit.cpu.codecache import (CUR_FULL, CUR_INSNS, CUR_TRACES, CacheFull, CodeCache, CodeCacheError,
                                 LinkableObject, parse_object)
from vmkit.cpu.emit import new_work_tables, patch_jump
from vmkit.cpu.stencils import SI_LEN, load_stencils
from vmkit.cpu.codepages import code_hash, code_write_page
from vmkit.cpu.ir import region_ir
from vmkit.cpu.jitconfig import JitConfig
from vmkit.cpu.region import Region, find_region

SWITCH_INTERVAL = 0.0005
COMPILE_NICE = 10
NEVER = -(1 << 40)        # hotness of a block start that cannot be translated
_CALL = ctypes.CFUNCTYPE(ctypes.c_int64, *([ctypes.c_void_p] * 7), ctypes.c_int64)
_CALL_STENCILS = ctypes.CFUNCTYPE(ctypes.c_int64, *([ctypes.c_void_p] * 5), ctypes.c_int64)


@dataclass
class Job:
    roff: int
    vpc: int
    tier: int
    version: int
    region: Region
    name: str
    obj: LinkableObject | None = None
    error: str = ""
    seconds: float = 0.0


@dataclass
class JitStats:
    regions: int = 0           # translations installed
    blocks: int = 0
    guest_insns: int = 0       # instructions covered by installed translations
    untranslatable: int = 0    # block starts whose first instruction needs the interpreter
    stale: int = 0             # compiled, but the page changed meanwhile
    failed: int = 0
    compile_seconds: float = 0.0
    link_seconds: float = 0.0
    checked: int = 0           # lockstep comparisons made (--jit check)
    errors: list = field(default_factory=list)


class Translator:
    def __init__(self, ram: np.ndarray, config: JitConfig, rvc: np.ndarray):
        self.ram = ram
        self.config = config
        self.rvc = rvc
        self.jtab, self.pages, self.jreq = S.new_jit_tables(len(ram))
        self.cache = CodeCache(config.cache_size)
        st = load_stencils()
        self._exit_len = int(st.sinfo[st.id("exit"), SI_LEN])   # never dropped: exits return
        # What interp.run passes to emit.translate (one tuple: numba's signature stays short).
        self.cp = (self.cache.rw, self.cache.cursor, st.sbytes, st.sinfo, st.sholes, st.smap,
                   *new_work_tables())
        from vmkit.cpu.helpers import fp_op_address
        self.fp_helper = fp_op_address()
        self.stats = JitStats()
        self.harts = []
        self._serial = 0
        self._pending: dict[tuple[int, int], Job] = {}
        # Newest first: when the compile thread falls behind (a boot), the code
        # that just got hot is likelier to still be running than older requests.
        self._jobs: queue.LifoQueue = queue.LifoQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._backend = None
        # Cleared while the VM is held (paused, or throttled by the hypervisor's
        # CPU pacer): compiling is the VM's CPU use too, so it waits as well.
        self._may_compile = threading.Event()
        self._may_compile.set()

    # --- wiring ----------------------------------------------------------------------
    def attach(self, hart) -> None:
        """Make `hart` use this tier (its st[] settings and tables)."""
        self.harts.append(hart)
        self.configure(hart)
        if not self.config.sync:
            self._start_thread()  # LLVM's set-up then overlaps the boot

    def configure(self, hart) -> None:
        st = hart.st
        st[S.JIT_THRESHOLD] = self.config.threshold if self.config.enabled else 0
        st[S.JIT_SYNC] = 1 if self.config.sync else 0
        st[S.JIT_CHECK] = 1 if self.config.mode == "check" else 0
        st[S.JIT_TIER2_INSNS] = self.config.optimize_after or -1

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._may_compile.set()
            self._thread.join(timeout=5)
            self._thread = None
        self.cache.close()

    # --- requests and results ----------------------------------------------------------
    def service(self) -> None:
        """Take the interpreter's requests and install finished translations."""
        if self.cache.cursor[CUR_FULL]:
            self.flush()
        n = int(self.jreq[0, 0])
        if n:
            reqs = [tuple(int(v) for v in self.jreq[i]) for i in range(1, n + 1)]
            self.jreq[0, 0] = 0
            for roff, vpc, tier in reqs:
                self.request(roff, vpc, tier)
        while self._pending and not self._done.empty():
            self._install(self._done.get())

    def request(self, roff: int, vpc: int, tier: int = 1) -> None:
        """Translate the block start at RAM offset roff, virtual pc vpc."""
        if (roff, vpc, tier) in self._pending:
            return
        if tier == 2 and self._installed(roff, vpc) == 2:
            return  # optimized already
        page = roff >> 12
        code = self.ram[page << 12:(page << 12) + 4096].tobytes()
        region = find_region(code, vpc, self.rvc, loops_only=tier == 2)
        if region is None:
            self.stats.untranslatable += 1
            self._cool(roff, NEVER)
            return
        # From now on every store into these chunks invalidates the page
        # (even before the translation is installed: the snapshot is taken).
        self._mark_code(page, region.chunks)
        self._serial += 1
        job = Job(roff, vpc, tier, int(self.pages[page, S.P_VER]), region, f"t{self._serial}")
        self._pending[(roff, vpc, tier)] = job
        if self.config.sync:
            self._compile(job)
            self._install(job)
        else:
            self._start_thread()
            self._jobs.put(job)

    def _start_thread(self) -> None:
        if self._thread is None:
            # The compile thread holds the GIL while it builds IR; the VM
            # thread needs it at every exit (MMIO, the console).  Python's
            # default 5 ms switch interval would stall those exits for up to
            # that long each; 0.5 ms keeps them short.
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
            self._thread = threading.Thread(target=self._compile_loop, name="vmkit-translator",
                                            daemon=True)
            self._thread.start()

    def hold(self, held: bool) -> None:
        """Stop (True) or let go on (False) background compiling."""
        if held:
            self._may_compile.clear()
        else:
            self._may_compile.set()

    def _compile_loop(self) -> None:
        # Compiling is an optimization: it must not take CPU that a VM thread
        # (this VM's or another's) wants.  nice 10 gets about a tenth of a
        # core against a busy one, and all of an idle one.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COMPILE_NICE)
        except OSError:
            pass
        self._backend = Backend()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._may_compile.wait()
            self._compile(job)
            self._done.put(job)

    def _compile(self, job: Job) -> None:
        t0 = time.perf_counter()
        try:
            if self._backend is None:
                self._backend = Backend()
            ir = region_ir(job.region, job.name, self.fp_helper)
            job.obj = parse_object(self._backend.compile(ir), job.name)
        except (BackendError, CodeCacheError) as e:
            job.error = str(e)
        job.seconds = time.perf_counter() - t0

    def _install(self, job: Job) -> None:
        self._pending.pop((job.roff, job.vpc, job.tier), None)
        self.stats.compile_seconds += job.seconds
        if job.obj is None:
            self.stats.failed += 1
            if len(self.stats.errors) < 10:
                self.stats.errors.append(f"{job.vpc:#x}: {job.error}")
            self._cool(job.roff, NEVER)
            return
        page = job.roff >> 12
        if int(self.pages[page, S.P_VER]) != job.version:
            self.stats.stale += 1
            self._cool(job.roff, 0)
            return
        t0 = time.perf_counter()
        try:
            try:
                addr = self.cache.install(job.obj)
            except CacheFull:
                self.flush()
                self._mark_code(page, job.region.chunks)
                job.version = int(self.pages[page, S.P_VER])
                addr = self.cache.install(job.obj)
        except (CodeCacheError, CacheFull) as e:
            self.stats.failed += 1
            if len(self.stats.errors) < 10:
                self.stats.errors.append(f"{job.vpc:#x}: {e or 'larger than the code cache'}")
            self._cool(job.roff, NEVER)
            return
        self.stats.link_seconds += time.perf_counter() - t0
        h = code_hash(job.roff)
        row = self.jtab[h]
        if self._installed(job.roff, job.vpc) == 1:
            self._retire_baseline(int(row[S.J_FN]))
        row[S.J_KEY] = job.roff
        row[S.J_VPC] = job.vpc
        row[S.J_FN] = addr
        row[S.J_VER] = job.version
        row[S.J_TIER] = job.tier
        row[S.J_HOT_KEY] = job.roff
        row[S.J_HOT] = 0  # from now on: how often it is entered
        self.stats.regions += 1
        self.stats.blocks += len(job.region.blocks)
        self.stats.guest_insns += job.region.insn_count

    def _retire_baseline(self, fn: int) -> None:
        """The baseline translation at exec address fn is superseded: make its
        entry jump to the exit emit.translate put just before it (a lookup of
        the same pc), so that chained jumps into it reach the new translation."""
        self.cache.rw[fn - self.cache.rx_base] = 0xE9          # jmp rel32 ...
        patch_jump(self.cache.rw, self.cache.cursor, fn + 1, fn - self._exit_len)   # ... to the exit

    def _mark_code(self, page: int, chunks: int) -> None:
        """Make stores into these chunks of the page take the slow path."""
        self.pages[page, S.P_CODE] |= chunks
        for hart in self.harts:
            _drop_store_entries(hart, page << 12)

    def _installed(self, roff: int, vpc: int) -> int:
        """Tier of the valid translation for (roff, vpc), or 0."""
        row = self.jtab[code_hash(roff)]
        if (row[S.J_KEY] == roff and row[S.J_VPC] == vpc
                and row[S.J_VER] == self.pages[roff >> 12, S.P_VER]):
            return int(row[S.J_TIER])
        return 0

    def _cool(self, roff: int, hot: int) -> None:
        h = code_hash(roff)
        if self.jtab[h, S.J_HOT_KEY] == roff:
            self.jtab[h, S.J_HOT] = hot

    # --- invalidation -------------------------------------------------------------------
    def invalidate_range(self, roff: int, length: int) -> None:
        """RAM bytes [roff, roff+length) were written from outside the hart
        (device DMA, image loading): drop translations made from them."""
        if length <= 0:
            return
        first, last = roff >> 12, (roff + length - 1) >> 12
        marked = np.flatnonzero(self.pages[first:last + 1, S.P_CODE])
        for i in marked:
            p = first + int(i)
            lo = roff - (p << 12) if p == first else 0
            hi = (roff + length - 1) - (p << 12) if p == last else 4095
            code_write_page(self.pages, p, lo, hi)

    def flush(self) -> None:
        """Drop every translation (a full cache, a reboot that reloads RAM)."""
        self.jtab[:, S.J_KEY] = -1
        self.jtab[:, S.J_HOT] = 0
        self.pages[:, S.P_CODE] = 0
        self.pages[:, S.P_VER] += 1
        self.cache.flush()

    # --- --jit check ----------------------------------------------------------------------
    def check_call(self, hart) -> None:
        """Run the translation the interpreter stopped at, then the interpreter
        over the same instructions from the same state; JitError on any
        difference (the interpreter is the oracle)."""
        from vmkit.cpu.jitcheck import run_checked
        slot = int(hart.st[S.JIT_CALL_SLOT])
        retired = run_checked(self, hart)
        self.stats.checked += 1
        row = self.jtab[slot]
        before = int(row[S.J_HOT])
        row[S.J_HOT] = before + retired
        if before < self.config.optimize_after <= before + retired and row[S.J_TIER] == 1:
            self.request(int(row[S.J_KEY]), int(row[S.J_VPC]), 2)

    def call(self, hart, slot: int, limit: int) -> int:
        """Call translation `slot` directly (ctypes) on the hart's arrays, as
        interp.run does; returns (retired << 2) | flags."""
        row = self.jtab[slot]
        if row[S.J_TIER] == 1:
            hart.st[S.JIT_PAGE_BASE] = int(row[S.J_VPC]) & ~0xFFF
            fn = _CALL_STENCILS(int(row[S.J_FN]))
            r = fn(*(a.ctypes.data for a in (hart.x, hart.st, hart.ram, hart.tlb_tag, hart.tlb_off)),
                   limit)
            return ((limit - (r >> 2)) << 2) | (r & 3)
        fn = _CALL(int(row[S.J_FN]))
        return fn(*(a.ctypes.data for a in (hart.x, hart.f, hart.csr, hart.st, hart.ram,
                                            hart.tlb_tag, hart.tlb_off)), limit)

    # --- reporting --------------------------------------------------------------------------
    def memory_overhead(self) -> int:
        """Host bytes the tier holds for this VM: tables plus code written."""
        return self.jtab.nbytes + self.pages.nbytes + self.jreq.nbytes + self.cache.used

    def describe(self, instret: int, jit_insns: int, entries: int) -> list[str]:
        s = self.stats
        share = 100.0 * jit_insns / instret if instret else 0.0
        cursor = self.cache.cursor
        lines = [
            f"jit: baseline: {int(cursor[CUR_TRACES])} traces ({int(cursor[CUR_INSNS])} guest "
            f"instructions) copied from stencils",
            f"jit: optimizing: {s.regions} regions ({s.blocks} blocks, {s.guest_insns} guest "
            f"instructions) compiled by LLVM; {s.untranslatable} block starts left to the interpreter",
            f"jit: {share:.1f}% of instructions ran translated, in {entries} entries; compile "
            f"{s.compile_seconds:.2f} s, link {s.link_seconds:.3f} s; {s.stale} stale, {s.failed} failed",
            f"jit: code cache {self.cache.used / 2**20:.1f} of {self.cache.size / 2**20:.0f} MiB, "
            f"{self.cache.flushes} flushes; tier memory {self.memory_overhead() / 2**20:.1f} MiB",
        ]
        if s.checked:
            lines.append(f"jit: {s.checked} translated runs checked against the interpreter")
        lines += [f"jit: failed: {e}" for e in s.errors[:3]]
        return lines


def _drop_store_entries(hart, page_off: int) -> None:
    """Remove store-TLB entries for a RAM page that now holds translated code."""
    row = hart.tlb_tag[S.TLB_STORE]
    hit = (hart.tlb_off[S.TLB_STORE] == page_off) & (row != S.TLB_INVALID)
    if hit.any():
        row[hit] = S.TLB_INVALID
