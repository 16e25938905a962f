"""vmkit/images/deb.py: ar parsing and safe extraction of .deb files."""

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from vmkit.images.deb import ar_members, extract_deb, member_path
from vmkit.images.errors import ImageError

from .conftest import ar_archive, build_deb

FILES = {
    "usr/bin/tool": b"#!/bin/sh\necho hi\n",
    "usr/share/doc/tool/README": b"odd length!",
    "usr/lib/tool/data.bin": bytes(range(256)) * 100,
    "usr/bin/tool-link": ("symlink", "tool"),
    "etc/abs-link": ("symlink", "/usr/bin/tool"),
}


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_extract_real_deb(tmp_path, compression):
    if compression == "zstd" and shutil.which("zstd") is None:
        try:
            import zstandard  # noqa: F401
        except ImportError:
            pytest.skip("neither zstd nor zstandard is available")
    deb = build_deb(tmp_path, "tool", FILES, compression=compression)
    with open(deb, "rb") as f:
        names = [n for n, _, _ in ar_members(f)]
    assert names[0] == "debian-binary" and names[2].startswith("data.tar")
    out = tmp_path / "out"
    done = extract_deb(deb, out)
    assert "usr/bin/tool" in done
    for path, content in FILES.items():
        if isinstance(content, tuple):
            assert os.readlink(out / path) == content[1]
        else:
            assert (out / path).read_bytes() == content


def test_include_filter(tmp_path):
    deb = build_deb(tmp_path, "tool", FILES)
    out = tmp_path / "out"
    extract_deb(deb, out, include=("usr/lib/",))
    assert (out / "usr/lib/tool/data.bin").exists()
    assert not (out / "usr/bin").exists()


def test_member_path():
    assert str(member_path("./usr/bin/x")) == "usr/bin/x"
    for bad in ["/etc/passwd", "../x", "usr/../../x", "./a/../../b"]:
        with pytest.raises(ImageError):
            member_path(bad)


def crafted_deb(tmp_path, build) -> Path:
    """A .deb whose data.tar.gz is made by ``build(tar)``, bypassing dpkg-deb's checks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        build(tar)
    deb = tmp_path / "evil.deb"
    deb.write_bytes(ar_archive([("debian-binary", b"2.0\n"), ("control.tar.gz", b""),
                                ("data.tar.gz", buf.getvalue())]))
    return deb


def add_file(tar, name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_link(tar, name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


@pytest.mark.parametrize("build", [
    lambda t: add_file(t, "./../outside"),
    lambda t: add_file(t, "usr/../../outside"),
    lambda t: add_file(t, "/abs/outside"),
    # a symlink that leads out, then a file written "through" it
    lambda t: (add_link(t, "./escape", "../.."), add_file(t, "./escape/outside")),
    lambda t: (add_link(t, "./escape", "/"), add_file(t, "./escape/tmp/outside")),
    lambda t: add_link(t, "./hard", "../outside", tarfile.LNKTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-relative", "symlink-absolute", "hardlink"])
def test_unsafe_members_are_refused(tmp_path, build):
    deb = crafted_deb(tmp_path, build)
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(ImageError):
        extract_deb(deb, out)
    assert not (tmp_path / "a" / "b" / "outside").exists()
    assert not (tmp_path / "a" / "outside").exists()
    assert not (tmp_path / "outside").exists()


def test_special_files_and_setuid_dropped(tmp_path):
    def build(t):
        info = tarfile.TarInfo("./dev/evil")
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 1
        t.addfile(info)
        info = tarfile.TarInfo("./bin/suid")
        info.size, info.mode = 1, 0o4755
        t.addfile(info, io.BytesIO(b"x"))
    out = tmp_path / "out"
    assert extract_deb(crafted_deb(tmp_path, build), out) == ["bin/suid"]
    assert not (out / "dev/evil").exists()
    assert (out / "bin/suid").stat().st_mode & 0o7777 == 0o755


def test_internal_symlink_is_followed(tmp_path):
    def build(t):
        add_link(t, "./lib", "usr/lib")
        add_file(t, "./usr/lib/keep", b"1")
        add_file(t, "./lib/through", b"2")
    out = tmp_path / "out"
    extract_deb(crafted_deb(tmp_path, build), out)
    assert (out / "usr/lib/through").read_bytes() == b"2"


def test_corrupt_deb(tmp_path):
    deb = build_deb(tmp_path, "tool", FILES)
    data = bytearray(deb.read_bytes())
    data[-2000:-1000] = bytes(1000)
    deb.write_bytes(bytes(data))
    with pytest.raises(ImageError):
        extract_deb(deb, tmp_path / "out")
    not_deb = tmp_path / "x.deb"
    not_deb.write_bytes(b"<html>404</html>")
    with pytest.raises(ImageError, match="ar magic"):
        extract_deb(not_deb, tmp_path / "out")
