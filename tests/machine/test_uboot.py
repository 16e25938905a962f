"""U-Boot (Debian's qemu-riscv64_smode build) runs as the S-mode payload of
OpenSBI, as on QEMU's virt: it reaches its prompt, runs commands and powers
the machine off."""

import shutil
import subprocess

import pytest

from tests.guest import Guest

pytestmark = pytest.mark.slow

UBOOT = "usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin"


@pytest.fixture(scope="module")
def uboot(tmp_path_factory):
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("needs apt-get and dpkg-deb to fetch Debian's u-boot-qemu")
    d = tmp_path_factory.mktemp("uboot")
    p = subprocess.run(["apt-get", "download", "u-boot-qemu"], cwd=d, capture_output=True, text=True)
    debs = list(d.glob("u-boot-qemu_*.deb"))
    if p.returncode != 0 or not debs:
        pytest.skip(f"apt-get download u-boot-qemu failed: {p.stderr.strip()}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(d / "root")], check=True)
    return d / "root" / UBOOT


def test_uboot_prompt_and_poweroff(uboot):
    from vmkit.images import default_image_paths, pull
    pull(progress=False)
    _, firmware, _, _ = default_image_paths()
    g = Guest(["--bios", str(firmware), "--kernel", str(uboot), "--clock", "deterministic",
               "--timeout", "600", "--max-instructions", "5000000000"])
    g.expect("U-Boot ")
    g.expect("=> ")
    out = g.run("version", "=> ")
    if "U-Boot" not in out:
        g.fail(f"version printed {out!r}")
    g.send("poweroff")
    status = g.wait()
    if status != 0:
        g.fail(f"exit status {status}")
