"""Differential tests: random RV64GC sequences must leave identical state in
vmkit and in QEMU (the reference).  See gen.py for what is generated.

Default: 1000 sequences of 200 instructions in batches of 25 (one program
each), each run with every block translated at its first execution, and the
first batches under every CPU tier mode (tests/diff/harness.py, JIT_MODES).  VMKIT_DIFF_SEQUENCES raises the count, VMKIT_DIFF_LENGTH the length,
VMKIT_DIFF_SEED moves the seeds (default 1, so CI runs are reproducible).
For long runs use `python -m tests.diff.fuzz`.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # for `tests.*`

from tests.diff.batch import run_batch  # noqa: E402
from tests.diff.harness import JIT_MODES, qemu_available  # noqa: E402
from tests.isa.build import CC  # noqa: E402

SEQUENCES = int(os.environ.get("VMKIT_DIFF_SEQUENCES", "1000"))
LENGTH = int(os.environ.get("VMKIT_DIFF_LENGTH", "200"))
SEED = int(os.environ.get("VMKIT_DIFF_SEED", "1"))
BATCH = 25
TIMEOUT = 120

pytestmark = [
    pytest.mark.skipif(shutil.which(CC) is None, reason=f"{CC} not installed "
                       "(apt-get install gcc-riscv64-linux-gnu)"),
    pytest.mark.skipif(not qemu_available(), reason="qemu-system-riscv64 not "
                       "installed (apt-get install qemu-system-misc)"),
]

BATCHES = [list(range(s, min(s + BATCH, SEED + SEQUENCES)))
           for s in range(SEED, SEED + SEQUENCES, BATCH)]


# Each sequence runs once, so the default tier ("on": translate once hot)
# would interpret them: every batch runs with translation at first execution,
# and the first few under every other mode too (JIT_MODES).
EVERY_MODE_BATCHES = 2
RUNS = [(seeds, "first") for seeds in BATCHES] + [
    (seeds, jit) for seeds in BATCHES[:EVERY_MODE_BATCHES] for jit in JIT_MODES if jit != "first"]


@pytest.mark.vmkit
@pytest.mark.parametrize("seeds,jit", RUNS, ids=lambda v: f"seeds{v[0]}-{v[-1]}" if isinstance(v, list) else v)
def test_diff(seeds, jit):
    report = run_batch(seeds, LENGTH, f"diff_{seeds[0]}", timeout=TIMEOUT, jit=jit)
    problem = report.qemu_problem()
    assert problem is None, problem
    problem = report.vmkit_problem()
    assert problem is None, problem
