"""Disks as a guest sees them: the default image with extra virtio disks.

Real guest, real image files: the guest formats and mounts a disk, writes
random data, and a second boot (or the host, through debugfs and qemu-img)
finds exactly those bytes.  A failure prints the guest console.
"""

import hashlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.guest import PROMPT, boot_image

pytestmark = pytest.mark.slow

SHA = re.compile(r"\b([0-9a-f]{64})\b")


@pytest.fixture(scope="module")
def image():
    from vmkit.images import default_image_paths, pull
    pull(progress=False)
    return default_image_paths()


def boot(*disks):
    """The default image's kernel and initramfs, with only the given disks."""
    return boot_image(*[arg for d in disks for arg in ("--disk", d)], timeout=1500)


def sha_of(g, command):
    out = g.run(command, PROMPT)
    m = SHA.search(out)
    if not m:
        g.fail(f"no sha256 in {out!r}")
    return m.group(1)


def debugfs_dump(raw_image, name, dest):
    if not shutil.which("debugfs"):
        pytest.skip("debugfs not installed (apt-get install e2fsprogs)")
    subprocess.run(["debugfs", "-R", f"dump /{name} {dest}", str(raw_image)], check=True,
                   capture_output=True)
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def test_format_write_and_read_back_across_boots(image, tmp_path):
    disk = tmp_path / "data.raw"
    with open(disk, "wb") as f:
        f.truncate(256 << 20)
    g = boot(str(disk))
    g.run("mke2fs -q /dev/vda && mkdir -p /mnt && mount /dev/vda /mnt", PROMPT)
    g.run("dd if=/dev/urandom of=/mnt/random.bin bs=1M count=64 2>/dev/null", PROMPT)
    written = sha_of(g, "sha256sum /mnt/random.bin")
    g.run("sync && umount /mnt", PROMPT)
    g.poweroff()

    g = boot(str(disk))
    g.run("mkdir -p /mnt && mount /dev/vda /mnt", PROMPT)
    assert sha_of(g, "sha256sum /mnt/random.bin") == written
    g.run("umount /mnt", PROMPT)
    g.poweroff()
    assert debugfs_dump(disk, "random.bin", tmp_path / "out.bin") == written


def test_read_only_disk_refuses_writes(image, tmp_path):
    disk = tmp_path / "ro.raw"
    disk.write_bytes(b"vmkit-readonly-marker".ljust(1 << 20, b"\0"))
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    g = boot(f"{disk},format=raw,readonly=on")
    assert "vmkit-readonly-marker" in g.run("head -c 21 /dev/vda; echo", PROMPT)
    out = g.run("dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=fsync 2>&1; echo rc=$?", PROMPT)
    assert "rc=0" not in out, out
    g.poweroff()
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before


def test_qcow2_overlay_on_read_only_base(image, tmp_path):
    for tool in ("mkfs.ext4", "qemu-img"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "base.txt").write_text("from the base image\n")
    base = tmp_path / "base.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(base), "64M"], check=True)
    base_sha = hashlib.sha256(base.read_bytes()).hexdigest()
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run([sys.executable, "-m", "vmkit", "disk", "create", "-f", "qcow2", "-b", str(base),
                    "-F", "raw", str(overlay)], check=True)

    g = boot(str(overlay))
    g.run("mkdir -p /mnt && mount /dev/vda /mnt", PROMPT)
    assert "from the base image" in g.run("cat /mnt/base.txt", PROMPT)
    g.run("dd if=/dev/urandom of=/mnt/new.bin bs=1M count=16 2>/dev/null", PROMPT)
    written = sha_of(g, "sha256sum /mnt/new.bin")
    g.run("sync && umount /mnt", PROMPT)
    g.poweroff()

    assert hashlib.sha256(base.read_bytes()).hexdigest() == base_sha, "the base image changed"
    check = subprocess.run(["qemu-img", "check", str(overlay)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    flat = tmp_path / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(overlay), str(flat)], check=True)
    assert debugfs_dump(flat, "new.bin", tmp_path / "new.bin") == written
    assert (debugfs_dump(flat, "base.txt", tmp_path / "base.txt")
            == hashlib.sha256(b"from the base image\n").hexdigest())
