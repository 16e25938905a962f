"""vmkit/images/ext4.py: mkfs.ext4 -d on a small tree, read back with debugfs."""

import hashlib
import os
import shutil
import subprocess

import pytest

from vmkit.images import ext4
from vmkit.images.errors import ImageError
from vmkit.images.initramfs import Initramfs

needs_e2fsprogs = pytest.mark.skipif(
    shutil.which("debugfs", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None,
    reason="e2fsprogs is not installed (apt-get install e2fsprogs)")


def tree() -> Initramfs:
    rd = Initramfs()
    rd.add_file("bin/busybox", b"\x7fELF" + bytes(range(256)) * 64, 0o755)
    rd.add_symlink("bin/sh", "/bin/busybox")
    rd.add_symlink("sbin/init", "/bin/busybox")
    rd.add_dir("root", 0o700)
    rd.add_dir("tmp", 0o1777)
    rd.add_device("dev/console", "c", 5, 1, 0o600)
    rd.add_device("dev/vda", "b", 254, 0, 0o660)
    rd.add_file("etc/hostname", b"vmkit\n")
    return rd


def debugfs(image, command: str) -> str:
    run = subprocess.run([ext4.find_tool("debugfs"), "-R", command, str(image)],
                         capture_output=True, check=True)
    return run.stdout.decode("latin-1")


@needs_e2fsprogs
def test_make_ext4_holds_the_tree(tmp_path):
    image = tmp_path / "fs.img"
    ext4.make_ext4(list(tree().entries.values()), image, 64 << 20, "vmkit-test")
    assert image.stat().st_size == 64 << 20
    assert image.stat().st_blocks * 512 < 64 << 20  # sparse
    assert debugfs(image, "cat /etc/hostname") == "vmkit\n"
    assert debugfs(image, "cat /bin/busybox").encode("latin-1") == tree().entries["bin/busybox"].data
    listing = debugfs(image, "ls -l /bin")
    assert "busybox" in listing and "sh" in listing
    sh = debugfs(image, "stat /bin/sh")
    assert "Type: symlink" in sh and '"/bin/busybox"' in sh
    console = debugfs(image, "stat /dev/console")
    assert "Type: character special" in console and "Mode:  0600" in console
    assert "Device major/minor number: 05:01" in console
    assert "Type: block special" in debugfs(image, "stat /dev/vda")
    assert "Mode:  01777" in debugfs(image, "stat /tmp")
    assert "Mode:  0700" in debugfs(image, "stat /root")
    for path in ("/", "/bin/busybox", "/bin/sh", "/dev/console", "/tmp"):
        assert "User:     0   Group:     0" in debugfs(image, f"stat {path}"), path
    super_block = subprocess.run([ext4.find_tool("dumpe2fs"), "-h", str(image)],
                                 capture_output=True, text=True, check=True).stdout
    assert "Filesystem volume name:   vmkit-test" in super_block
    assert "Filesystem UUID:          " + ext4.content_uuid(list(tree().entries.values())) in super_block


@needs_e2fsprogs
def test_make_ext4_is_reproducible(tmp_path):
    entries = list(tree().entries.values())
    digests = set()
    for name in ("a.img", "b.img"):
        ext4.make_ext4(entries, tmp_path / name, 16 << 20, "vmkit-test")
        digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1
    other = tree()
    other.add_file("etc/motd", b"hello\n")
    assert ext4.content_uuid(list(other.entries.values())) != ext4.content_uuid(entries)


@needs_e2fsprogs
def test_files_of_another_owner_become_roots(tmp_path, monkeypatch):
    """mke2fs copies the building user's uid; debugfs makes every inode root's."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make files of another owner")
    write_tree = ext4.write_tree

    def chowning(entries, root):
        write_tree(entries, root)
        for e in entries:
            if e.kind in ("dir", "file", "symlink"):
                os.chown(root / e.name, 1234, 1234, follow_symlinks=False)
    monkeypatch.setattr(ext4, "write_tree", chowning)
    image = tmp_path / "fs.img"
    ext4.make_ext4(list(tree().entries.values()), image, 16 << 20, "vmkit-test")
    for path in ("/bin/busybox", "/bin/sh", "/etc/hostname"):
        assert "User:     0   Group:     0" in debugfs(image, f"stat {path}"), path


def test_missing_mkfs_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(ext4.shutil, "which", lambda name, path=None: None)
    with pytest.raises(ImageError, match="apt-get install e2fsprogs"):
        ext4.make_ext4(list(tree().entries.values()), tmp_path / "fs.img", 16 << 20, "x")
    assert not (tmp_path / "fs.img").exists()


@needs_e2fsprogs
def test_mkfs_failure_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="mkfs.ext4 failed"):
        ext4.make_ext4(list(tree().entries.values()), tmp_path / "fs.img", 4096, "x")  # too small
