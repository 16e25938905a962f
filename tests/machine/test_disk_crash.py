"""SIGKILL of the VM process during heavy guest writes loses nothing flushed.

The guest writes numbered 64 KiB blocks to a qcow2 disk, each with
O_DIRECT + fsync (a virtio-blk FLUSH), and says "flushed N" after each one
completes.  The host kills the VM at a random moment, then checks: qemu-img
check finds no corruption (leaks are allowed), and every block the guest saw
flushed holds its pattern.  VMKIT_CRASH_BOOTS raises the number of kills.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.guest import Guest

pytestmark = pytest.mark.slow

PROMPT = "vmkit:/# "
BLOCK = 64 * 1024
FLUSHED = re.compile(rb"flushed (\d+)\r?\n")


def pattern(i: int) -> bytes:
    return (f"{i}\n".encode() * BLOCK)[:BLOCK]


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img not installed")
def test_kill_during_flushed_writes(tmp_path):
    from vmkit.images import default_image_paths, pull
    from vmkit.storage.image import open_image
    pull(progress=False)
    kernel, firmware, initrd, append = default_image_paths()
    disk = tmp_path / "crash.qcow2"
    subprocess.run([sys.executable, "-m", "vmkit", "disk", "create", "-f", "qcow2", str(disk), "64M"], check=True)
    rng = random.Random(1234)
    flushed: set[int] = set()
    boots = int(os.environ.get("VMKIT_CRASH_BOOTS", "3"))
    for boot in range(boots):
        g = Guest(["--bios", str(firmware), "--kernel", str(kernel), "--initrd", str(initrd),
                   "--append", append, "--disk", f"{disk},format=qcow2", "--timeout", "900"])
        g.expect(PROMPT)
        first = 1 + boot * 200
        g.send(f"i={first}; while [ $i -lt {first + 200} ]; do yes $i | head -c {BLOCK} > /tmp/b; "
               f"dd if=/tmp/b of=/dev/vda bs={BLOCK} seek=$i count=1 oflag=direct conv=fsync 2>/dev/null "
               f"&& echo flushed $i; i=$((i+1)); done")
        target = rng.randint(5, 60)
        end = time.monotonic() + 600
        while time.monotonic() < end and len(FLUSHED.findall(bytes(g.out))) < target:
            time.sleep(0.05 + rng.random() * 0.1)
        time.sleep(rng.random() * 0.3)  # land somewhere inside the next write
        g.proc.send_signal(signal.SIGKILL)
        g.wait(30)
        seen = {int(n) for n in FLUSHED.findall(bytes(g.out))}
        if len(seen) < 5:
            g.fail("the guest flushed too few blocks before the kill")
        flushed |= seen
        check = subprocess.run(["qemu-img", "check", str(disk)], capture_output=True, text=True)
        assert check.returncode in (0, 3), f"after kill {boot}: {check.stdout}{check.stderr}"
    with open_image(str(disk), "qcow2", readonly=True) as img:
        for i in sorted(flushed):
            buf = bytearray(BLOCK)
            img.read_into(i * BLOCK, memoryview(buf))
            assert bytes(buf) == pattern(i), f"block {i} was reported flushed but does not hold its data"
