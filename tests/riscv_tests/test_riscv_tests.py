"""The official riscv-tests ISA suite (vendored in isa/) under vmkit, in vmkit's
own test environments (env/p: physical memory; env/v: U-mode under Sv39).

Every test must end with "PASS" on the console and exit status 0 from the test
finisher; a failure prints the test number (see env/report.S and the test's
source, isa/<suite>/<test>.S).  test_qemu runs the same ELFs under QEMU to
prove the environments themselves.

Each program is a vmkit process of its own (start-up is most of its run time),
so the session fixtures run all the selected tests at once on a thread pool
and the parametrized tests only look the results up.  vmkit is run once per
CPU tier mode in VMKIT_VARIANTS (names of tests/diff/harness.py's JIT_MODES):
by default with every block translated at its first execution, since these
programs are too short for a block to get hot.
"""

import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # for `tests.*`

from tests.diff.harness import JIT_MODES, RunResult, qemu_available, run_qemu, run_vmkit  # noqa: E402
from tests.riscv_tests.build import (CC, build_all, compiler_available,  # noqa: E402
                                     program_names, source_path)

TIMEOUT = 30            # seconds per test; each needs well under one
JOBS = max(2, os.cpu_count() or 1)

# JIT_MODES names to run vmkit under ("interp", "check", ... pass too; each
# adds a few minutes).
VMKIT_VARIANTS = ["first"]

# Known failures, as strict xfails: a test that starts passing must be removed here.
VMKIT_XFAIL = {
    "rv64mi-p-breakpoint": "vmkit does not implement debug triggers",
}
QEMU_XFAIL = {
    # Not strict: depends on the QEMU version.
    "rv64mi-p-instret_overflow": "QEMU 7.2 derives minstret from host ticks, so a "
                                 "value written to it has moved on by the next read",
}

# Our checks of the environments themselves (selftest/*.S):
# name -> (exit status, what the console must contain)
SELFTESTS = {
    "selftest-p-fail": (5, b"FAIL: test 5\n"),
    "selftest-v-fail": (5, b"FAIL: test 5\n"),
    "selftest-p-trap": (3, b"FAIL: unexpected trap: mcause=0x0000000000000002 "),
    "selftest-v-trap": (3, b"FAIL: unexpected trap: mcause=0x0000000000000002 "),
    "selftest-v-vfault": (4, b"S-mode kernel: scause=0x000000000000000d "),
    "selftest-v-vaddr": (0, b"PASS\n"),
}

NAMES = program_names()

pytestmark = pytest.mark.skipif(not compiler_available(), reason=f"{CC} not installed "
                                "(apt-get install gcc-riscv64-linux-gnu)")
needs_qemu = pytest.mark.skipif(not qemu_available(), reason="qemu-system-riscv64 not "
                                "installed (apt-get install qemu-system-misc)")


def _params(xfails: dict[str, str], strict: bool) -> list:
    return [pytest.param(n, marks=pytest.mark.xfail(reason=xfails[n], strict=strict))
            if n in xfails else n for n in NAMES]


def _selected(request) -> dict[tuple[str, str], set[str]]:
    """{(runner, variant): names} that the selected items of this module need
    (all of them unless deselected with -k and the like)."""
    selected: dict[tuple[str, str], set[str]] = {}
    for item in request.session.items:
        module = getattr(item, "module", None)
        if module is None or module.__name__ != __name__ or not hasattr(item, "callspec"):
            continue
        params = item.callspec.params
        runner = params.get("runner", "vmkit" if item.originalname == "test_vmkit" else "qemu")
        if runner == "qemu" and not qemu_available():
            continue
        variant = params.get("variant", VMKIT_VARIANTS[0]) if runner == "vmkit" else ""
        selected.setdefault((runner, variant), set()).add(params["name"])
    return selected


def _run_all(run: Callable[[Path], RunResult], elfs: dict[str, Path],
             names: set[str]) -> dict[str, RunResult]:
    """Run `names` in parallel."""
    names = sorted(names)
    with ThreadPoolExecutor(JOBS) as pool:
        return dict(zip(names, pool.map(lambda n: run(elfs[n]), names)))


def _runner(runner: str, variant: str) -> Callable[[Path], RunResult]:
    if runner == "qemu":
        return lambda elf: run_qemu(elf, TIMEOUT)
    return lambda elf: run_vmkit(elf, TIMEOUT, variant)


@pytest.fixture(scope="session")
def results(request) -> dict[tuple[str, str], dict[str, RunResult]]:
    """{(runner, variant): {name: result}}, for everything the session selected."""
    selected = _selected(request)
    elfs = build_all(sorted(set().union(*selected.values())), jobs=JOBS)
    return {(runner, variant): _run_all(_runner(runner, variant), elfs, names)
            for (runner, variant), names in selected.items()}


def _check(name: str, where: str, result: RunResult) -> None:
    assert result.exit_status == 0 and b"PASS" in result.console, (
        f"{name} fails under {where} (source: {source_path(name)})\n"
        f"{result.describe()}")


@pytest.mark.slow
@pytest.mark.vmkit
@pytest.mark.parametrize("name", _params(VMKIT_XFAIL, strict=True))
@pytest.mark.parametrize("variant", VMKIT_VARIANTS)
def test_vmkit(variant, name, results):
    where = f"vmkit with {JIT_MODES[variant] or 'the default CPU tiers'}"
    _check(name, where, results["vmkit", variant][name])


@needs_qemu
@pytest.mark.parametrize("name", _params(QEMU_XFAIL, strict=False))
def test_qemu(name, results):
    _check(name, "QEMU", results["qemu", ""][name])


@pytest.mark.parametrize("name", list(SELFTESTS))
@pytest.mark.parametrize("runner", [pytest.param("qemu", marks=needs_qemu),
                                    pytest.param("vmkit", marks=pytest.mark.vmkit)])
def test_env_selftest(runner, name, results):
    """The environments report a failure, a stray trap, a page fault in the
    v environment as they should, and run v tests at their virtual address."""
    status, console = SELFTESTS[name]
    result = results[runner, VMKIT_VARIANTS[0] if runner == "vmkit" else ""][name]
    assert result.exit_status == status and console in result.console, (
        f"{name} under {runner}: expected exit status {status} and {console!r} on the "
        f"console (source: {source_path(name)})\n{result.describe()}")
