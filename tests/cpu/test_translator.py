"""The translating tier (vmkit/cpu/translator.py and friends): the code
cache's W^X mapping and linker, invalidation, the lockstep check, cache
flushes, and that translation changes neither results nor instruction counts."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vmkit.cpu import jit as corejit
from vmkit.cpu import state as S
from vmkit.cpu.codecache import CodeCache, CodeCacheError, parse_object
from vmkit.cpu.jitconfig import JitConfig, JitError

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(corejit.JIT_DISABLED, reason="the tier needs compiled numba code")


def _maps_of(name: str) -> list[str]:
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if name in line]


def test_code_cache_is_mapped_write_xor_execute():
    cache = CodeCache(1 << 20)
    try:
        maps = _maps_of("vmkit-code-cache")
        perms = sorted(line.split()[1] for line in maps)
        assert perms == ["r-xs", "rw-s"], maps
    finally:
        cache.close()
    assert not _maps_of("vmkit-code-cache")


def _object(ir: str) -> bytes:
    from vmkit.cpu.backend import Backend
    return Backend().compile(ir)


def test_code_cache_links_and_runs_an_object():
    import ctypes
    obj = _object("define i64 @f(i64 %a) {\n  %b = mul i64 %a, 3\n  ret i64 %b\n}\n")
    cache = CodeCache(1 << 20)
    try:
        addr = cache.install(parse_object(obj, "f"))
        assert ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(addr)(14) == 42
    finally:
        cache.close()


def test_code_cache_refuses_code_that_reaches_outside_itself():
    obj = _object("declare i64 @getpid()\ndefine i64 @f() {\n  %p = call i64 @getpid()\n  ret i64 %p\n}\n")
    with pytest.raises(CodeCacheError, match="getpid outside itself"):
        parse_object(obj, "f")
    with pytest.raises(CodeCacheError, match="malformed|not a little-endian"):
        parse_object(obj[:100], "f")


def test_jit_config_rejects_bad_settings():
    with pytest.raises(JitError, match="--jit must be one of"):
        JitConfig("fast")
    with pytest.raises(JitError, match="at least 1"):
        JitConfig(threshold=0)
    with pytest.raises(JitError, match="at least 1 MiB"):
        JitConfig(cache_size=4096)


def _translator(ram_size=1 << 20):
    from vmkit.cpu.hart import rvc_table
    from vmkit.cpu.translator import Translator
    return Translator(np.zeros(ram_size, dtype=np.uint8), JitConfig(), rvc_table())


def test_invalidate_range_drops_only_pages_whose_code_it_touches():
    tr = _translator()
    try:
        tr.pages[1, S.P_CODE] = 1 << 2          # bytes 128..191 of page 1 translated
        tr.pages[3, S.P_CODE] = -1
        before = tr.pages[:, S.P_VER].copy()
        tr.invalidate_range(4096 + 192, 4096)    # page 1 from byte 192 on, page 2: no code
        assert (tr.pages[:, S.P_VER] == before).all()
        tr.invalidate_range(4096 + 100, 40)      # reaches byte 139 of page 1
        assert tr.pages[1, S.P_VER] == before[1] + 1 and tr.pages[1, S.P_CODE] == 0
        tr.invalidate_range(3 * 4096 + 4095, 1)
        assert tr.pages[3, S.P_VER] == before[3] + 1
    finally:
        tr.close()


# --- whole programs -----------------------------------------------------------------------
LOOPS = """
    .section .text.start
    .globl _start
_start:
    li      s0, 0
    li      s1, 0
    la      s2, table
{loops}
    # print s0 as 16 hex digits, then exit through the finisher
    li      t0, 0x10000000
    li      t1, 60
1:  srl     t2, s0, t1
    andi    t2, t2, 15
    addi    t3, t2, 48
    li      t4, 10
    blt     t2, t4, 2f
    addi    t3, t2, 87
2:  sb      t3, 0(t0)
    addi    t1, t1, -4
    bgez    t1, 1b
    li      t3, 10
    sb      t3, 0(t0)
    li      t0, 0x100000
    li      t1, 0x5555
    sw      t1, 0(t0)
3:  j       3b
    .data
table: .space 4096
"""

ONE_LOOP = """
    li      t0, {n}
1:  addi    s0, s0, {k}
    mul     t1, s0, t0
    xor     s0, s0, t1
    srli    t2, s0, 7
    andi    t2, t2, 1016
    add     t2, t2, s2
    ld      t3, 0(t2)
    add     t3, t3, s0
    sd      t3, 0(t2)
    addi    t0, t0, -1
    bnez    t0, 1b
"""


def _run(elf: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os
    full = {k: v for k, v in os.environ.items() if not k.startswith("VMKIT_JIT")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "vmkit", "run", "--bios", "none", "--kernel", str(elf),
                           "-m", "64M", "--clock", "deterministic", "--timeout", "120", "--stats", *args],
                          capture_output=True, text=True, cwd=REPO, env=full, timeout=300)


def _instructions(p: subprocess.CompletedProcess) -> int:
    m = re.search(r"(\d+) instructions in", p.stderr)
    assert m, p.stderr
    return int(m.group(1))


def _translated_share(p: subprocess.CompletedProcess) -> float:
    m = re.search(r"([\d.]+)% of instructions ran translated", p.stderr)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def loops_elf(riscv_asm):
    loops = "".join(ONE_LOOP.format(n=200, k=k) for k in range(1, 150))
    return riscv_asm(LOOPS.format(loops=loops), "jit_loops")


def test_same_output_and_instruction_count_with_every_tier(loops_elf):
    runs = {mode: _run(loops_elf, "--jit", mode) for mode in ("off", "on")}
    runs["first"] = _run(loops_elf, "--jit-threshold", "1")
    runs["check"] = _run(loops_elf, "--jit", "check", "--jit-threshold", "1")
    for mode, p in runs.items():
        assert p.returncode == 0, f"{mode}: {p.stderr}"
    assert len({p.stdout for p in runs.values()}) == 1, {m: p.stdout for m, p in runs.items()}
    counts = {mode: _instructions(p) for mode, p in runs.items()}
    assert len(set(counts.values())) == 1, counts
    assert _translated_share(runs["first"]) > 80, runs["first"].stderr
    assert "translated runs checked against the interpreter" in runs["check"].stderr


@pytest.fixture(scope="module")
def many_loops_elf(riscv_asm):
    """More distinct code than a 1 MiB code cache holds."""
    loops = "".join(ONE_LOOP.format(n=20, k=k) for k in range(1, 1500))
    return riscv_asm(LOOPS.format(loops=loops), "jit_many_loops")


def test_a_full_code_cache_is_flushed_and_the_guest_goes_on(many_loops_elf):
    reference = _run(many_loops_elf, "--jit", "off")
    small = _run(many_loops_elf, "--jit-threshold", "1", "--jit-cache", "1M")
    assert small.returncode == 0, small.stderr
    assert small.stdout == reference.stdout
    m = re.search(r"code cache [\d.]+ of 1 MiB, (\d+) flushes", small.stderr)
    assert m and int(m.group(1)) > 2, small.stderr   # two come from the reset at boot


def test_stats_report_the_tiers_memory_and_work(loops_elf):
    p = _run(loops_elf)
    assert p.returncode == 0, p.stderr
    assert re.search(r"jit: baseline: \d+ traces", p.stderr), p.stderr
    assert re.search(r"jit: optimizing: \d+ regions", p.stderr), p.stderr
    assert re.search(r"tier memory [\d.]+ MiB", p.stderr), p.stderr
    assert re.search(r"compile [\d.]+ s", p.stderr), p.stderr


@pytest.mark.parametrize("tier", ["baseline", "optimizing"])
def test_check_mode_reports_a_translation_that_differs(loops_elf, tier):
    """Break one tier's translations of OP instructions on purpose (x[rd] one
    too large): the lockstep check must catch it, print the guest code and
    stop the guest with exit status 3."""
    if tier == "baseline":   # the stencils' IR (and with it their cache file) changes
        patch = ("from vmkit.cpu import stencils\n"
                 "orig = stencils.alu_value\n"
                 "def wrong(fn, opc, *args):\n"
                 "    v = orig(fn, opc, *args)\n"
                 "    return fn.v(f'add i64 {v}, 1') if opc == 0x33 else v\n"
                 "stencils.alu_value = wrong\n")
        optimize = []
    else:
        patch = ("from vmkit.cpu import ir\n"
                 "orig = ir.RegionIR.alu\n"
                 "def wrong(self, opc, b):\n"
                 "    v = orig(self, opc, b)\n"
                 "    return self.fn.v(f'add i64 {v}, 1') if opc == 0x33 else v\n"
                 "ir.RegionIR.alu = wrong\n")
        optimize = ["VMKIT_JIT_OPTIMIZE_AFTER=1"]
    script = (
        "import sys\n" + patch +
        "from vmkit.cli import main\n"
        "sys.argv = ['vmkit'] + sys.argv[1:]\n"
        "main()\n")
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMKIT_JIT")}
    env.update(v.split("=") for v in optimize)
    p = subprocess.run([sys.executable, "-c", script, "run", "--bios", "none", "--kernel", str(loops_elf),
                        "-m", "64M", "--clock", "deterministic", "--timeout", "120",
                        "--jit", "check", "--jit-threshold", "1"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert p.returncode == 3, p.stderr
    assert "differs from the interpreter" in p.stderr, p.stderr
    assert re.search(r"x9 \(s1\)|x8 \(s0\)|x6 \(t1\)", p.stderr), p.stderr
    assert "mul" in p.stderr, p.stderr        # the region's disassembly
