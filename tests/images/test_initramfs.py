"""vmkit/images/initramfs.py: cpio newc writer, checked by our reader and GNU cpio."""

import gzip
import os
import shutil
import stat
import subprocess

import pytest

from vmkit.images.initramfs import Initramfs, read_initramfs


def sample() -> Initramfs:
    rd = Initramfs()
    rd.add_dir("bin")
    rd.add_file("bin/busybox", b"\x7fELF" + bytes(range(256)) * 3, 0o755)
    rd.add_symlink("bin/sh", "/bin/busybox")
    rd.add_device("dev/console", "c", 5, 1)
    rd.add_device("dev/vda", "b", 254, 0, 0o660)
    rd.add_file("init", b"#!/bin/sh\n", 0o755)
    rd.add_file("a/b/c/odd-name.txt", b"abc")  # parents come automatically
    rd.add_file("empty", b"")
    return rd


def test_round_trip():
    rd = sample()
    for compress in (None, "gzip"):
        data = rd.to_bytes(compress)
        assert (data[:2] == b"\x1f\x8b") == (compress == "gzip")
        entries = {e.name: e for e in read_initramfs(data)}
        assert list(entries) == list(rd.entries)
        assert entries["bin/busybox"].data == rd.entries["bin/busybox"].data
        assert entries["bin/busybox"].mode == stat.S_IFREG | 0o755
        assert entries["bin/sh"].kind == "symlink" and entries["bin/sh"].data == b"/bin/busybox"
        assert entries["dev/console"].kind == "char" and entries["dev/console"].rdev == (5, 1)
        assert entries["dev/vda"].kind == "block" and entries["dev/vda"].rdev == (254, 0)
        assert [entries[n].kind for n in ("a", "a/b", "a/b/c")] == ["dir"] * 3


def test_layout_is_4_byte_aligned_and_deterministic():
    data = sample().to_bytes()
    assert len(data) % 4 == 0
    assert data == sample().to_bytes()
    assert data.startswith(b"070701") and b"TRAILER!!!\0" in data[-128:]
    assert gzip.decompress(sample().to_bytes("gzip")) == data


def test_rejects_bad_paths():
    rd = Initramfs()
    with pytest.raises(ValueError):
        rd.add_file("../x", b"")
    rd.add_file("/abs", b"1")  # a leading / is just the archive root
    assert "abs" in rd.entries


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio is not installed")
def test_gnu_cpio_reads_it(tmp_path):
    archive = tmp_path / "initrd.img"
    archive.write_bytes(sample().to_bytes())
    listing = subprocess.run(["cpio", "-itv", "--quiet", "-F", str(archive)],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    by_name = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing}
    assert by_name["dev/console"].startswith("crw-------") and "5,   1" in by_name["dev/console"]
    assert by_name["bin/sh"].startswith("lrwxrwxrwx")
    assert by_name["bin/busybox"].startswith("-rwxr-xr-x")
    # Unpack; device nodes fail without root, which check=False tolerates.
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames", "-F", str(archive)],
                   cwd=out, check=False, capture_output=True)
    assert (out / "bin/busybox").read_bytes() == sample().entries["bin/busybox"].data
    assert os.readlink(out / "bin/sh") == "/bin/busybox"
    assert (out / "a/b/c/odd-name.txt").read_bytes() == b"abc"
    assert (out / "empty").read_bytes() == b""
    for name, entry in sample().entries.items():
        if entry.kind not in ("char", "block"):
            assert os.path.lexists(out / name), name


def test_busybox_initramfs_takes_busybox_from_the_source():
    from vmkit.images.initramfs import Initramfs, busybox_initramfs, read_initramfs
    src = Initramfs()
    src.add_file("bin/busybox", b"\x7fELF-busybox", 0o755)
    src.add_file("etc/other", b"not copied")
    out = {e.name: e for e in read_initramfs(busybox_initramfs(src.to_bytes(), b"#!/bin/sh\necho hi\n", ("sh", "echo")))}
    assert out["bin/busybox"].data == b"\x7fELF-busybox"
    assert out["bin/sh"].data == b"busybox" and out["bin/echo"].data == b"busybox"
    assert out["init"].data == b"#!/bin/sh\necho hi\n" and out["init"].mode & 0o111
    assert out["dev/console"].rdev == (5, 1)
    assert "etc/other" not in out


def test_busybox_initramfs_needs_a_busybox():
    import pytest
    from vmkit.images.initramfs import Initramfs, busybox_initramfs
    with pytest.raises(ValueError, match="busybox"):
        busybox_initramfs(Initramfs().to_bytes(), b"#!/bin/sh\n")
