"""The real default image: pull it from the Debian mirror, boot it in QEMU.

Skipped unless VMKIT_NETWORK_TESTS=1 or the image is already in the data
directory (then the pull is a verified no-op). Uses the user's data
directory, like ``vmkit images pull``.
"""

import os
import re
import shutil
import subprocess
import threading
import time

import pytest

import vmkit.images as images
from vmkit.images import store

HAVE_IMAGE = store.verify_image(store.images_dir() / "default")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("VMKIT_NETWORK_TESTS") != "1" and not HAVE_IMAGE,
                       reason="set VMKIT_NETWORK_TESTS=1 to pull the real image"),
]


def test_real_pull():
    path = images.pull(progress=False)
    manifest = store.read_manifest(path)
    assert manifest["kernel"]["release"].endswith("-riscv64")
    assert manifest["kernel"]["load_address"] == 0x80200000
    assert (path / "Image").read_bytes()[0x38:0x3C] == b"RSC\x05"
    assert "virtio_mmio" in manifest["initrd"]["modules"] + manifest["initrd"]["builtin"]
    started = time.monotonic()
    assert images.pull(progress=False) == path
    assert time.monotonic() - started < 5  # cached and verified: no work


class Console:
    """QEMU's serial console on stdio, read by a thread; ``expect`` waits for a pattern."""

    def __init__(self, args):
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.text = ""
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while chunk := self.proc.stdout.read1(4096):
            with self.lock:
                self.text += chunk.decode("utf-8", "replace")

    def expect(self, pattern, timeout, start=0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                m = re.compile(pattern).search(self.text, start)
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} on the console; it shows:\n{self.text}")

    def send(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()


@pytest.mark.skipif(shutil.which("qemu-system-riscv64") is None,
                    reason="qemu-system-riscv64 is not installed")
def test_boots_in_qemu(tmp_path):
    images.pull(progress=False)
    kernel, firmware, initrd, append = images.default_image_paths()
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    console = Console([
        "qemu-system-riscv64", "-M", "virt", "-m", "512M", "-nographic",
        "-bios", str(firmware), "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
        "-drive", f"file={disk},if=none,format=raw,id=d0", "-device", "virtio-blk-device,drive=d0",
        # a virtio NIC on an empty hub: the driver binds, no frame leaves QEMU
        "-netdev", "hubport,id=n0,hubid=0", "-device", "virtio-net-device,netdev=n0",
    ])
    try:
        started = time.monotonic()
        banner = console.expect(r"vmkit default image: Linux \S+ riscv64", 300)
        prompt = console.expect(r"vmkit:/# ", 60, banner.end())
        booted = time.monotonic() - started
        console.send("uname -m; cat /sys/block/vda/size; ls /sys/class/net; lsmod | wc -l")
        console.expect(r"riscv64\s+2048\s+eth0\s+lo", 30, prompt.end())
        console.send("poweroff")
        console.expect(r"reboot: Power down", 60, prompt.end())
        assert console.proc.wait(30) == 0
        print(f"booted to a shell in {booted:.1f} s, off after {time.monotonic() - started:.1f} s")
    finally:
        if console.proc.poll() is None:
            console.proc.kill()
            console.proc.wait()
