"""Bare-metal ISA test programs (tests/isa/*.S, *.c): each must pass under
QEMU (the reference: exit status 0) and under vmkit with the same console
output.  Programs are built on demand by build.py into tests/isa/build/."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # for `tests.*`

from tests.diff.harness import JIT_MODES, qemu_available, run_qemu, run_vmkit  # noqa: E402
from tests.isa.build import CC, build_program, program_sources  # noqa: E402

TIMEOUT = 60
# The self-modifying-code programs (smc_*) run in tests/cpu/test_jit_smc.py,
# under every CPU tier mode and with a check that the tier really ran.
PROGRAMS = sorted(n for n in program_sources() if not n.startswith("smc_"))

pytestmark = [
    pytest.mark.skipif(shutil.which(CC) is None, reason=f"{CC} not installed "
                       "(apt-get install gcc-riscv64-linux-gnu)"),
]
needs_qemu = pytest.mark.skipif(not qemu_available(), reason="qemu-system-riscv64 "
                                "not installed (apt-get install qemu-system-misc)")

_qemu_results = {}


def qemu_result(name):
    if name not in _qemu_results:
        _qemu_results[name] = run_qemu(build_program(name), TIMEOUT)
    return _qemu_results[name]


@needs_qemu
@pytest.mark.parametrize("name", PROGRAMS)
def test_qemu(name):
    result = qemu_result(name)
    assert result.exit_status == 0, f"{name} fails under QEMU\n{result.describe()}"


@needs_qemu
@pytest.mark.vmkit
@pytest.mark.parametrize("jit", list(JIT_MODES))
@pytest.mark.parametrize("name", PROGRAMS)
def test_vmkit(name, jit):
    reference = qemu_result(name)
    if reference.exit_status != 0:
        pytest.skip(f"{name} does not pass under QEMU: see test_qemu")
    result = run_vmkit(build_program(name), TIMEOUT, jit)
    assert result.exit_status == 0, f"{name} fails under vmkit\n{result.describe()}"
    # Documented difference: QEMU 7.2 implements Sv57, vmkit ignores the write.
    if b"satp-sv57:" in reference.console:
        assert b"satp-sv57: ignored" in result.console, result.describe()
        reference_console = reference.console.replace(b"satp-sv57: accepted", b"satp-sv57: ignored")
    else:
        reference_console = reference.console
    assert result.console == reference_console, (
        f"{name}: console differs from QEMU\n--- qemu ---\n"
        f"{reference.console.decode(errors='replace')}\n{result.describe()}")
