"""The same core without numba (NUMBA_DISABLE_JIT=1) gives the same results.

This is the debugging mode of STYLE.md: every jitted function must also run
as plain Python.  The ISA programs are small, so they run here in seconds.
"""

import os
import subprocess
import sys

import pytest

from tests.isa.test_isa import PROGRAMS, build_program, needs_qemu as needs_toolchain


def run(elf, pure):
    env = dict(os.environ)
    if pure:
        env["NUMBA_DISABLE_JIT"] = "1"
    p = subprocess.run([sys.executable, "-m", "vmkit", "run", "--bios", "none", "--kernel", str(elf), "-m", "128M",
                        "--clock", "deterministic", "--timeout", "300"],
                       capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=400)
    return p.returncode, p.stdout


@needs_toolchain
@pytest.mark.parametrize("name", PROGRAMS)
def test_pure_python_matches_compiled(name):
    elf = build_program(name)
    compiled = run(elf, pure=False)
    pure = run(elf, pure=True)
    assert compiled[0] == 0, compiled[1].decode(errors="replace")
    assert pure == compiled, (pure[1].decode(errors="replace"), compiled[1].decode(errors="replace"))
