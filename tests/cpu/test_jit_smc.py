"""Self-modifying code under every mode of the translating tier.

Translations are keyed by RAM offset and kept fresh by the store slow path
(codepages.py) and by device DMA (Translator.invalidate_range): these tests
run guests that change code after it has run hot, and must see the new
code.  Programs:

- tests/isa/smc_*.c (built like the ISA programs; tests/isa/test_isa.py
  leaves them to this file):
  patched immediates (smc_imm), patches inside the running basic block
  (smc_block), byte and halfword stores into 32-bit and compressed code
  (smc_bytes), one code page through two Sv39 aliases (smc_alias), a
  virtual code page remapped to other physical pages (smc_remap);
- tests/isa/virtio/smc_virtio_blk.c: a virtio-blk read DMAs new code over
  a hot function (the disk image is built here: disk_image()).

Each runs under QEMU (the reference: exit status 0) and under vmkit in
every mode of tests/diff/harness.py's JIT_MODES: exit status 0 and the same
console.  In the modes that translate, `--stats` must show that a real
share of the instructions ran translated, or the test would not have
exercised the tier.  The shares stay well below 100% by design: the
programs wait for the compile thread in loops that vmkit interprets
(tests/isa/common/smc.h: settle()), and code just patched runs interpreted
until it is hot again.  With the default threshold translations arrive
asynchronously, so "on" gets a lower bar, and whether a stale translation
would be caught at the first patch depends on the compile thread's timing
there; the other modes translate synchronously and are deterministic.

Each program was checked to fail on deliberately broken copies of the tier:
one that never invalidates (no version bump on a store or DMA into code),
one where only DMA does not invalidate (smc_virtio_blk), one that finds
translations by virtual pc (smc_remap), one whose translated stores into
code stay inside the translation (smc_block).
"""

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # for `tests.*`

from tests.diff.harness import (  # noqa: E402
    JIT_MODES, REPO, STARTUP_SLACK, RunResult, qemu_available, qemu_command, vmkit_command)
from tests.isa.build import ISA_DIR, build_program, compiler_available, program_sources  # noqa: E402

# Seconds of wall clock per run (a run takes 2-10 s; threshold 1 compiles
# every block at once, and a patched page's blocks again after each patch).
TIMEOUT = 300

# Least share of instructions run translated, per mode.  These modes translate
# every block at its first run.  "on" translates in the background, so its
# share depends on how busy the host is (3.9-40% seen, 3.9% on a loaded CI
# host): it has no floor, and interp runs none.
MIN_TRANSLATED_PERCENT = {"first": 20.0, "first-opt": 20.0, "check": 20.0}
_SHARE = re.compile(rb"jit:\s*([0-9]+(?:\.[0-9]*)?)\s*%\s*of instructions ran translated")

VIRTIO = "smc_virtio_blk"
VIRTIO_SRC = ISA_DIR / "virtio" / f"{VIRTIO}.c"
DISK_SECTORS = 32       # smc_virtio_blk.c: DISK_SECTORS
PROGRAMS = sorted(n for n in program_sources() if n.startswith("smc_")) + [VIRTIO]

pytestmark = [
    pytest.mark.vmkit,
    pytest.mark.skipif(not compiler_available(), reason="riscv64-linux-gnu-gcc not installed "
                       "(apt-get install gcc-riscv64-linux-gnu)"),
    pytest.mark.skipif(not qemu_available(), reason="qemu-system-riscv64 not installed "
                       "(apt-get install qemu-system-misc)"),
]


# --- the disk of smc_virtio_blk -----------------------------------------------------------
def disk_k(sector: int) -> int:
    """The immediate of sector `sector`'s functions (smc_virtio_blk.c: disk_k)."""
    return ((sector * 97 + 5) & 0x7FF) - 1024


def _addi(rd: int, rs1: int, imm: int) -> int:
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (rd << 7) | 0x13


RET = 0x00008067        # jalr zero, 0(ra)
A0 = 10


def disk_image(path: Path) -> Path:
    """Sector s: 64 copies of `addi a0, a0, disk_k(s); ret` (8 bytes each)."""
    path.write_bytes(b"".join(struct.pack("<II", _addi(A0, A0, disk_k(s)), RET) * 64
                              for s in range(DISK_SECTORS)))
    return path


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    return disk_image(tmp_path_factory.mktemp("smc") / "code.img")


# --- running -----------------------------------------------------------------------------------
def _elf(name: str) -> Path:
    return build_program(name, VIRTIO_SRC if name == VIRTIO else None)


def _run(cmd: list[str], timeout: float, env: dict | None = None) -> RunResult:
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, cwd=REPO, env=env)
    except subprocess.TimeoutExpired as e:
        return RunResult(None, e.stdout or b"", e.stderr or b"", timed_out=True)
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


def run_qemu(name: str, disk: Path) -> RunResult:
    cmd = qemu_command(_elf(name))
    if name == VIRTIO:
        # QEMU's virtio-mmio is legacy (version 1) unless told otherwise.
        cmd += ["-global", "virtio-mmio.force-legacy=false",
                "-drive", f"file={disk},format=raw,if=none,id=d0,readonly=on",
                "-device", "virtio-blk-device,drive=d0"]
    return _run(cmd, TIMEOUT + STARTUP_SLACK["qemu"])


def run_vmkit(name: str, disk: Path, mode: str) -> RunResult:
    cmd = vmkit_command(_elf(name), TIMEOUT) + ["--stats"]
    if name == VIRTIO:
        cmd += ["--disk", f"{disk},format=raw,readonly=on"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMKIT_JIT")
           or k == "VMKIT_JIT_CACHE"}
    env.update(JIT_MODES[mode])
    return _run(cmd, TIMEOUT + STARTUP_SLACK["vmkit"], env)


def translated_percent(result: RunResult) -> float | None:
    m = _SHARE.search(result.stderr) or _SHARE.search(result.console)
    return float(m.group(1)) if m else None


_references: dict[str, RunResult] = {}


def reference(name: str, disk: Path) -> RunResult:
    if name not in _references:
        _references[name] = run_qemu(name, disk)
    return _references[name]


# --- tests -------------------------------------------------------------------------------------
def test_disk_image_matches_the_program(tmp_path):
    """The Python side and the C side agree on the disk's layout."""
    src = VIRTIO_SRC.read_text()
    assert f"#define DISK_SECTORS    {DISK_SECTORS}" in src
    assert "return (int64_t)((s * 97 + 5) & 0x7ff) - 1024;" in src
    data = disk_image(tmp_path / "d.img").read_bytes()
    assert len(data) == DISK_SECTORS * 512
    assert struct.unpack_from("<II", data, 512 * 3 + 8 * 5) == (_addi(A0, A0, disk_k(3)), RET)
    assert all(-1024 <= disk_k(s) < 1024 for s in range(DISK_SECTORS))


@pytest.mark.parametrize("name", PROGRAMS)
def test_qemu(name, disk):
    result = reference(name, disk)
    assert result.exit_status == 0, f"{name} fails under QEMU\n{result.describe()}"


@pytest.mark.parametrize("mode", list(JIT_MODES))
@pytest.mark.parametrize("name", PROGRAMS)
def test_vmkit(name, mode, disk):
    ref = reference(name, disk)
    if ref.exit_status != 0:
        pytest.fail(f"{name} does not pass under QEMU (see test_qemu)\n{ref.describe()}")
    result = run_vmkit(name, disk, mode)
    settings = " ".join(f"{k}={v}" for k, v in JIT_MODES[mode].items()) or "the defaults"
    assert result.exit_status == 0, (
        f"{name} fails under vmkit with {settings}\n{result.describe()}")
    assert result.console == ref.console, (
        f"{name} with {settings}: console differs from QEMU\n--- qemu ---\n"
        f"{ref.console.decode(errors='replace')}\n{result.describe()}")
    if mode in MIN_TRANSLATED_PERCENT:
        share = translated_percent(result)
        assert share is not None, f"no 'jit: X% of instructions ran translated' line\n{result.describe()}"
        assert share > MIN_TRANSLATED_PERCENT[mode], (
            f"{name} with {settings}: only {share}% of instructions ran translated, "
            f"so the translating tier was hardly exercised\n{result.describe()}")
