"""vmkit/images/default.py and the package API, against a fake archive on loopback."""

import json

import pytest

import vmkit.images as images
from vmkit.images import default
from vmkit.images.archive import parse_packages
from vmkit.images.errors import ImageError
from vmkit.images.initramfs import read_initramfs

from .conftest import build_deb, write_archive
from .test_kernel import fake_image
from .test_kmod import fake_ko

RELEASE = "6.1.0-test-riscv64"
CONFIG = "CONFIG_VIRTIO_MMIO=m\nCONFIG_VIRTIO_CONSOLE=y\n# CONFIG_HVC_RISCV_SBI is not set\n"


@pytest.fixture
def archive(http_root, tmp_path):
    """A fake trixie archive with the three packages; returns (root, url, requests)."""
    root, url, requests = http_root
    debs = tmp_path / "debs-src"
    debs.mkdir()
    mods = f"usr/lib/modules/{RELEASE}"
    kernel = build_deb(debs, f"linux-image-{RELEASE}", {
        f"boot/vmlinux-{RELEASE}": fake_image(),
        f"boot/config-{RELEASE}": CONFIG.encode(),
        f"boot/System.map-{RELEASE}": b"ffffffff80000000 T _start\n",
        f"{mods}/modules.builtin": b"kernel/drivers/char/virtio_console.ko\n",
        f"{mods}/kernel/drivers/virtio/virtio_mmio.ko": fake_ko(name="virtio_mmio"),
        f"{mods}/kernel/drivers/block/virtio_blk.ko": fake_ko(name="virtio_blk", depends="virtio_mmio"),
        f"{mods}/kernel/fs/ext4/ext4.ko": fake_ko(name="ext4"),
    })
    opensbi = build_deb(debs, "opensbi", {
        "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin": b"OpenSBI-64",
        "usr/lib/riscv32-linux-gnu/opensbi/generic/fw_dynamic.bin": b"OpenSBI-32",
    }, arch="all")
    busybox = build_deb(debs, "busybox-static", {"usr/bin/busybox": b"\x7fELF fake busybox"})
    write_archive(root, [
        {"Package": "linux-image-riscv64", "Version": "6.1.0-1", "Architecture": "riscv64",
         "Depends": f"linux-image-{RELEASE} (= 6.1.0-1)", "Filename": "pool/meta.deb",
         "Size": "1", "SHA256": "0" * 64},
        {"Package": f"linux-image-{RELEASE}", "Version": "6.1.0-1", "Architecture": "riscv64",
         "Depends": "kmod, initramfs-tools | linux-initramfs-tool", "deb": kernel},
        {"Package": "opensbi", "Version": "1.6-1", "Architecture": "all", "deb": opensbi},
        {"Package": "busybox-static", "Version": "1:1.37.0-6", "Architecture": "riscv64",
         "deb": busybox},
    ])
    return root, url, requests


def test_pull_builds_image(archive, data_dir, monkeypatch):
    which = default.shutil.which  # pretend there is no qemu-riscv64
    monkeypatch.setattr(default.shutil, "which",
                        lambda name: None if name.startswith("qemu") else which(name))
    _, url, requests = archive
    path = images.pull(mirror=url, progress=False)
    assert path == data_dir / "images" / "default"
    assert (path / "Image").read_bytes() == fake_image()
    assert (path / "fw_dynamic.bin").read_bytes() == b"OpenSBI-64"

    entries = {e.name: e for e in read_initramfs((path / "initrd.img").read_bytes())}
    assert entries["init"].mode & 0o111 and entries["init"].data.endswith(b"exec init\n")
    assert b"setsid cttyhack sh -l; poweroff" in entries["etc/inittab"].data
    assert entries["bin/init"].data == b"/bin/busybox"
    assert entries["dev/console"].kind == "char" and entries["dev/console"].rdev == (5, 1)
    assert entries["bin/busybox"].data == b"\x7fELF fake busybox"
    assert entries["bin/sh"].data == b"/bin/busybox"  # fallback applet list
    assert entries["bin/cttyhack"].kind == "symlink"
    base = f"lib/modules/{RELEASE}"
    assert entries[f"{base}/modules.dep"].data == (
        b"kernel/drivers/virtio/virtio_mmio.ko:\n"
        b"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_mmio.ko\n")
    assert f"{base}/kernel/fs/ext4/ext4.ko" not in entries  # only what MODULES needs
    assert entries["etc/modules"].data == b"virtio_mmio\nvirtio_blk\n"

    manifest = json.loads((path / "manifest.json").read_text())
    assert [p["name"] for p in manifest["packages"]] == [
        f"linux-image-{RELEASE}", "opensbi", "busybox-static"]
    assert manifest["kernel"]["release"] == RELEASE
    assert manifest["kernel"]["load_address"] == 0x80200000
    assert manifest["kernel"]["config"]["CONFIG_VIRTIO_MMIO"] == "m"
    assert manifest["kernel"]["config"]["CONFIG_HVC_RISCV_SBI"] == "n"
    assert manifest["firmware"]["package_path"].endswith("riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin")
    assert manifest["initrd"]["builtin"] == ["virtio_console"]
    assert manifest["cmdline"] == "console=ttyS0 cryptomgr.notests"
    assert set(manifest["files"]) == {"Image", "fw_dynamic.bin", "initrd.img", "kernel.config"}
    assert url not in (path / "manifest.json").read_text()  # no mirror recorded

    kernel, firmware, initrd, append = images.default_image_paths()
    assert (kernel, firmware, initrd) == (path / "Image", path / "fw_dynamic.bin", path / "initrd.img")
    assert append == manifest["cmdline"]
    [info] = images.list_images()
    assert info.name == "default" and info.path == path
    assert info.size > len(fake_image()) and "opensbi 1.6-1" in info.packages

    # Everything cached and verified: no network at all.
    requests.clear()
    assert images.pull(mirror=url, progress=False) == path
    assert requests == []
    assert not [p for p in (data_dir / "images").iterdir() if p.name != "default"]


def test_damaged_image_is_rebuilt_from_cached_debs(archive, data_dir):
    _, url, requests = archive
    path = images.pull(mirror=url, progress=False)
    with open(path / "Image", "r+b") as f:
        f.write(b"XX")
    requests.clear()
    images.pull(mirror=url, progress=False)
    assert (path / "Image").read_bytes() == fake_image()
    assert not [r for r in requests if r.endswith(".deb")]  # debs came from the cache
    # A damaged cached .deb is fetched again.
    debs = data_dir / "cache" / "debs"
    victim = next(debs.glob("opensbi_*.deb"))
    victim.write_bytes(b"garbage")
    requests.clear()
    images.pull(mirror=url, progress=False, force=True)
    assert [r for r in requests if r.endswith(".deb")] == [
        "/pool/main/o/opensbi/" + victim.name]


def test_bad_deb_on_mirror_fails_cleanly(archive, data_dir):
    root, url, _ = archive
    deb = next(root.glob("pool/main/b/busybox-static/*.deb"))
    deb.write_bytes(deb.read_bytes()[:-10] + bytes(10))  # same size, wrong hash
    with pytest.raises(ImageError, match="SHA256"):
        images.pull(mirror=url, progress=False)
    assert not list((data_dir / "cache" / "debs").glob("busybox*"))
    assert not (data_dir / "images" / "default").exists()
    assert not (data_dir / "images").exists() or not list((data_dir / "images").iterdir())
    with pytest.raises(ImageError, match="vmkit images pull"):
        images.default_image_paths()


def test_failed_rebuild_keeps_old_image(archive, data_dir, monkeypatch):
    _, url, _ = archive
    path = images.pull(mirror=url, progress=False)
    before = (path / "manifest.json").read_text()

    def broken(data):
        raise ImageError("simulated")
    monkeypatch.setattr(default, "kernel_image", broken)
    with pytest.raises(ImageError, match="simulated"):
        images.pull(mirror=url, progress=False, force=True)
    assert (path / "manifest.json").read_text() == before
    assert [p.name for p in (data_dir / "images").iterdir()] == ["default"]
    assert sorted(p.name for p in (data_dir / "cache").iterdir()) == ["debs", "indexes"]


def test_resolve_kernel_package():
    packages = parse_packages(
        "Package: linux-image-riscv64\nVersion: 2\nFilename: a\nSize: 1\nSHA256: 0\n"
        "Depends: linux-image-6.12.9+deb13-riscv64 (= 2)\n\n"
        "Package: linux-image-6.12.9+deb13-riscv64\nVersion: 2\nFilename: b\nSize: 1\n"
        "SHA256: 0\nDepends: kmod, linux-base (>= 4.3~)\n")
    assert default.resolve_kernel_package(packages, "linux-image-riscv64").name == \
        "linux-image-6.12.9+deb13-riscv64"


def test_kernel_config():
    assert default.kernel_config(CONFIG + 'CONFIG_CMDLINE=""\nCONFIG_NR_CPUS=64\n',
                                 ("CONFIG_VIRTIO_MMIO", "CONFIG_HVC_RISCV_SBI", "CONFIG_NR_CPUS",
                                  "CONFIG_CMDLINE")) == {
        "CONFIG_VIRTIO_MMIO": "m", "CONFIG_HVC_RISCV_SBI": "n", "CONFIG_NR_CPUS": "64",
        "CONFIG_CMDLINE": ""}


def test_data_dir_resolution(monkeypatch, tmp_path):
    from vmkit.images import store
    monkeypatch.delenv("VMKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store.images_dir() == tmp_path / "xdg" / "vmkit" / "images"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store.cache_dir() == tmp_path / "home" / ".local/share/vmkit/cache"
    monkeypatch.setenv("VMKIT_DATA_DIR", str(tmp_path / "d"))
    assert store.data_dir() == tmp_path / "d"
