"""Runs the atheris target for the qcow2 opener (fuzz_qcow2.py) for a short while.

Skipped when atheris is not installed. VMKIT_FUZZ_SECONDS sets the time
(default 20); any exception other than ImageFormatError, a hang over 10 s or
more than 1 GiB of memory fails the test with libFuzzer's report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

TARGET = Path(__file__).with_name("fuzz_qcow2.py")


@pytest.mark.slow
def test_fuzz_qcow2_opener(tmp_path):
    seconds = int(os.environ.get("VMKIT_FUZZ_SECONDS", "20"))
    corpus = tmp_path / "corpus"
    r = subprocess.run([sys.executable, str(TARGET), f"-max_total_time={seconds}", "-rss_limit_mb=1024",
                        "-timeout=10", f"-artifact_prefix={tmp_path}/", str(corpus)],
                       capture_output=True, text=True, timeout=seconds + 120,
                       env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]),
                                VMKIT_FUZZ_WORKDIR=str(tmp_path)))
    report = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("INFO: Instrumenting"))
    assert r.returncode == 0, report[-5000:]
    assert "DONE" in r.stderr, report[-3000:]
