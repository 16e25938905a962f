"""The default VM boots Debian's kernel from its own disk, and the disk keeps what it is given.

`vmkit run` with no --kernel/--bios: the initramfs mounts /dev/vda (an
overlay of the image's rootfs.qcow2, vmkit/images/vmdisk.py) and switches to
it. A file written in one boot is there in the next; the base image is never
written. vm_data_dir (conftest.py) gives the test its own VM disk. A failure
prints the guest console.
"""

import os

import pytest

from tests.guest import Guest
from vmkit.images import store
from vmkit.images.download import sha256_file
from vmkit.storage.check import check_image
from vmkit.storage.info import describe_image

pytestmark = pytest.mark.slow

PROMPT = "vmkit:/# "
BOOT_BUDGET = "8000000000"  # a boot to the shell takes about 2.6e9 instructions


@pytest.fixture(scope="module")
def image():
    from vmkit.images import pull
    return pull(progress=False)


def boot():
    g = Guest(["--clock", "deterministic", "--timeout", "1200", "--max-instructions", BOOT_BUDGET])
    g.expect(PROMPT)
    return g


def root_mount(g) -> list[str]:
    """The /proc/mounts fields of the file system mounted on / (the last one there)."""
    mounts = [line.split() for line in g.run("cat /proc/mounts", PROMPT).splitlines()]
    roots = [m for m in mounts if len(m) >= 4 and m[1] == "/"]
    if not roots:
        g.fail(f"nothing mounted on / in {mounts}")
    return roots[-1]


def test_default_vm_boots_from_its_disk_and_keeps_files(image, vm_data_dir):
    image = store.images_dir() / "default"  # as the VM sees it, through vm_data_dir
    base = image / "rootfs.qcow2"
    base_sha = store.read_manifest(image)["files"]["rootfs.qcow2"]["sha256"]

    g = boot()
    assert g.run("uname -m", PROMPT).strip() == "riscv64"
    device, _, fstype, options = root_mount(g)[:4]
    if (device, fstype) != ("/dev/vda", "ext4") or "rw" not in options.split(","):
        g.fail(f"/ is {device} {fstype} {options}, not /dev/vda ext4 rw")
    g.run("echo kept-across-boots > /root/marker && sync", PROMPT)
    g.poweroff()

    disk = vm_data_dir / "vms" / "default" / "disk.qcow2"
    info = describe_image(str(disk), "qcow2")
    assert info["backing_file"] == os.path.abspath(base)
    assert info["backing_format"] == "qcow2"
    assert check_image(str(disk), "qcow2").exit_code == 0

    g = boot()
    if g.run("cat /root/marker", PROMPT).strip() != "kept-across-boots":
        g.fail("/root/marker did not survive the poweroff")
    assert root_mount(g)[0] == "/dev/vda"
    # The shutdown left the file system clean: no journal replay this time.
    assert "recovery" not in g.run("dmesg | grep -i ext4", PROMPT)
    g.poweroff()

    assert sha256_file(base) == base_sha  # the guest's writes went to the overlay only
