"""The worker's sandbox (vmkit/hypervisor/sandbox.py), applied in a child
process: after harden() the process has the VM's uid, no-new-privileges, and
a seccomp filter that refuses exec, ptrace and mounts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vmkit.hypervisor.sandbox import UID_BASE, UID_SPAN, vm_uid

CHILD = r"""
import os, sys
from vmkit.hypervisor.sandbox import harden
done = harden(%(uid)r, %(uid)r)
print("done:", done)
status = open("/proc/self/status").read()
print("nnp:", "NoNewPrivs:\t1" in status)
print("uid:", os.getuid(), os.geteuid(), os.getgid())
try:
    os.execv("/bin/true", ["true"])
except PermissionError:
    print("exec: refused")
try:
    open("/root/.vmkit-sandbox-probe", "w")
except PermissionError:
    print("root files: refused")
"""


def test_vm_uids_are_stable_distinct_and_in_range():
    a = vm_uid("web", set())
    assert a == vm_uid("web", set()) and UID_BASE <= a < UID_BASE + UID_SPAN
    assert vm_uid("web", {a}) != a


def test_harden_drops_uid_sets_nnp_and_refuses_exec():
    root = os.geteuid() == 0
    uid = 200_123 if root else None
    r = subprocess.run([sys.executable, "-c", CHILD % {"uid": uid}], capture_output=True, text=True, timeout=60,
                       cwd="/")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "nnp: True" in out, out
    if "seccomp (" in out:
        assert "exec: refused" in out, out
    else:
        pytest.skip("no libseccomp on this host: " + out)
    if root:
        assert "uid: 200123 200123 200123" in out and "root files: refused" in out, out


def test_address_space_cap_turns_a_runaway_allocation_into_memory_error():
    code = ("from vmkit.hypervisor.sandbox import cap_address_space\n"
            "import resource\n"
            "cap_address_space(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 + (512 << 20))\n"
            "try:\n"
            "    b = bytearray(4 << 30)\n"
            "except MemoryError:\n"
            "    print('refused')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "refused" in r.stdout, r
