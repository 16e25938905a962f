"""Run a bare-metal RISC-V ELF under QEMU or vmkit.

Both follow the same contract (tests/isa/common/test.h): M-mode entry at the
ELF entry point, console on the ns16550a, exit status from the SiFive test
finisher.  Each runner returns a RunResult, which unpacks as
``(exit_status, console_bytes)`` and also carries ``stderr`` and
``timed_out``; exit_status is None when the run was killed at the timeout.

The vmkit command line lives in `vmkit_command` only: adjust it there.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QEMU = "qemu-system-riscv64"
MEMORY = "128M"
# Extra seconds on top of the guest timeout for process start-up and, for
# vmkit, numba compilation.
STARTUP_SLACK = {"qemu": 10, "vmkit": 120}


class RunResult(tuple):
    """(exit_status, console) plus .stderr and .timed_out."""

    def __new__(cls, exit_status: int | None, console: bytes, stderr: bytes = b"",
                timed_out: bool = False):
        self = super().__new__(cls, (exit_status, console))
        self.stderr = stderr
        self.timed_out = timed_out
        return self

    @property
    def exit_status(self) -> int | None:
        return self[0]

    @property
    def console(self) -> bytes:
        return self[1]

    def describe(self, limit: int = 4000) -> str:
        """Console and stderr, for test failure messages."""
        status = "timed out" if self.timed_out else f"exit status {self.exit_status}"
        out = [f"{status}", "--- console ---", _tail(self.console, limit)]
        if self.stderr.strip():
            out += ["--- stderr ---", _tail(self.stderr, limit)]
        return "\n".join(out)


def _tail(data: bytes, limit: int) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


def qemu_command(elf: Path) -> list[str]:
    return [QEMU, "-M", "virt", "-bios", "none", "-kernel", str(elf),
            "-nographic", "-m", MEMORY]


def vmkit_python() -> str:
    """The interpreter that has vmkit installed: $VMKIT_PYTHON, the repo's
    .venv, or the current one."""
    env = os.environ.get("VMKIT_PYTHON")
    if env:
        return env
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def vmkit_command(elf: Path, timeout: float) -> list[str]:
    return [vmkit_python(), "-m", "vmkit", "run", "--bios", "none",
            "--kernel", str(elf), "-m", MEMORY, "--clock", "deterministic",
            "--timeout", str(int(timeout))]


# The CPU tiers every guest program runs under (environment for `vmkit run`,
# read by vmkit.cpu.jitconfig.JitConfig.from_env).  "on" translates blocks
# once hot, in the background, as by default but at 64 arrivals instead of
# 1,000 so that short test programs get hot too; the others force each
# path at every block: translation at first execution (baseline tier),
# the optimizing tier at once, and the lockstep check against the interpreter.
JIT_MODES = {
    "on": {"VMKIT_JIT_THRESHOLD": "64"},
    "interp": {"VMKIT_JIT": "off"},
    "first": {"VMKIT_JIT_THRESHOLD": "1"},
    "first-opt": {"VMKIT_JIT_THRESHOLD": "1", "VMKIT_JIT_OPTIMIZE_AFTER": "1"},
    "check": {"VMKIT_JIT": "check", "VMKIT_JIT_THRESHOLD": "1"},
}


def _run(cmd: list[str], timeout: float, env: dict | None = None) -> RunResult:
    full_env = None
    if env:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VMKIT_JIT")}
        full_env.update(env)
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, cwd=REPO, env=full_env)
    except subprocess.TimeoutExpired as e:
        return RunResult(None, e.stdout or b"", e.stderr or b"", timed_out=True)
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


def run_qemu(elf: Path, timeout: float = 60) -> RunResult:
    """Run `elf` under QEMU's virt board; (exit_status, console)."""
    return _run(qemu_command(elf), timeout + STARTUP_SLACK["qemu"])


def run_vmkit(elf: Path, timeout: float = 60, jit: str = "on") -> RunResult:
    """Run `elf` under vmkit with the deterministic clock and the CPU tiers of
    JIT_MODES[jit]; (exit_status, console)."""
    return _run(vmkit_command(elf, timeout), timeout + STARTUP_SLACK["vmkit"], JIT_MODES[jit])
