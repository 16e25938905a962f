"""vmkit/images/default.py and the package API, against a fake archive on loopback."""

import json
import subprocess

import pytest

import vmkit.images as images
from vmkit.images import default, ext4
from vmkit.images.archive import parse_packages
from vmkit.images.errors import ImageError
from vmkit.images.initramfs import read_initramfs
from vmkit.storage.convert import convert
from vmkit.storage.info import describe_image

from .conftest import build_deb, write_archive
from .test_kernel import fake_image
from .test_kmod import fake_ko, make_tree

RELEASE = "6.1.0-test-riscv64"
CONFIG = "CONFIG_VIRTIO_MMIO=m\nCONFIG_VIRTIO_CONSOLE=y\n# CONFIG_HVC_RISCV_SBI is not set\n"


@pytest.fixture
def archive(http_root, tmp_path):
    """A fake trixie archive with the three packages; returns (root, url, requests)."""
    try:
        ext4.find_tool(ext4.MKFS)
    except ImageError:
        pytest.skip("e2fsprogs is not installed: the image's root disk needs mkfs.ext4")
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
        f"{mods}/kernel/fs/btrfs/btrfs.ko": fake_ko(name="btrfs"),
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
    assert entries["sbin/init"].data == b"/bin/busybox"
    assert entries["dev/console"].kind == "char" and entries["dev/console"].rdev == (5, 1)
    assert entries["bin/busybox"].data == b"\x7fELF fake busybox"
    assert entries["bin/sh"].data == b"/bin/busybox"  # fallback applet list
    assert entries["bin/cttyhack"].kind == "symlink"
    base = f"lib/modules/{RELEASE}"
    assert entries[f"{base}/modules.dep"].data == (
        b"kernel/drivers/virtio/virtio_mmio.ko:\n"
        b"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_mmio.ko\n"
        b"kernel/fs/ext4/ext4.ko:\n")
    assert f"{base}/kernel/fs/btrfs/btrfs.ko" not in entries  # only what MODULES needs
    assert entries["etc/modules"].data == b"virtio_mmio\nvirtio_blk\next4\n"

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
    assert set(manifest["files"]) == {"Image", "fw_dynamic.bin", "initrd.img", "kernel.config",
                                      "rootfs.qcow2"}
    assert manifest["rootfs"]["virtual_size"] == 1 << 30
    assert manifest["rootfs"]["label"] == "vmkit-root"
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


def test_pull_builds_the_root_disk(archive, data_dir, tmp_path):
    _, url, _ = archive
    path = images.pull(mirror=url, progress=False)
    rootfs = path / "rootfs.qcow2"
    info = describe_image(str(rootfs), "qcow2")
    assert info["virtual_size"] == 1 << 30 and "backing_file" not in info
    assert info["disk_size"] < 8 << 20  # only what mkfs.ext4 wrote
    raw = tmp_path / "rootfs.raw"
    convert(str(rootfs), "qcow2", str(raw), "raw")

    def debugfs(command):
        return subprocess.run([ext4.find_tool("debugfs"), "-R", command, str(raw)], check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode("latin-1")
    assert "LABEL=vmkit-root / ext4" in debugfs("cat /etc/fstab")
    assert debugfs("cat /bin/busybox").endswith("\x7fELF fake busybox")
    assert "::sysinit:/etc/init.d/rcS" in debugfs("cat /etc/inittab")
    assert '"/bin/busybox"' in debugfs("stat /sbin/init")
    assert "virtio_blk.ko: kernel/drivers/virtio/virtio_mmio.ko" in debugfs(
        f"cat /lib/modules/{RELEASE}/modules.dep")
    assert "File not found" in debugfs("stat /init")  # the initramfs's, not the disk's

    # A forced rebuild from the same packages gives the same root disk, so
    # the default VM's overlay on it stays valid.
    before = json.loads((path / "manifest.json").read_text())["files"]["rootfs.qcow2"]
    images.pull(mirror=url, progress=False, force=True)
    assert json.loads((path / "manifest.json").read_text())["files"]["rootfs.qcow2"] == before


def test_initramfs_and_root_disk_share_one_userland(tmp_path):
    tree = make_tree(tmp_path)
    modules, _, _ = tree.closure(list(default.MODULES))
    userland = default.build_userland(b"\x7fELF", ["bin/sh", "sbin/init", "sbin/switch_root"],
                                      "6.1.0-test", tree, modules)
    rd, fs = default.build_initramfs(userland), default.build_rootfs(userland)
    assert set(rd.entries) - set(fs.entries) == {"init", "newroot"}
    assert set(fs.entries) - set(rd.entries) == {"etc/fstab"}
    assert all(rd.entries[n] == fs.entries[n] for n in set(rd.entries) & set(fs.entries))
    assert set(userland.entries) == set(rd.entries) & set(fs.entries)  # copies, not changed

    kinds = {n: e.kind for n, e in fs.entries.items()}
    for d in ("proc", "sys", "dev", "tmp", "run", "mnt", "root", "var", "etc/init.d",
              "lib/modules/6.1.0-test"):
        assert kinds[d] == "dir", d
    assert fs.entries["tmp"].mode & 0o7777 == 0o1777 and fs.entries["root"].mode & 0o777 == 0o700
    assert fs.entries["sbin/init"].data == b"/bin/busybox"
    assert kinds["dev/console"] == "char"
    text = {n: e.data.decode() for n, e in fs.entries.items() if n.startswith("etc/")
            and e.kind == "file"}
    assert text["etc/hostname"] == "vmkit\n"
    assert text["etc/passwd"].startswith("root:x:0:0:") and text["etc/group"].startswith("root:x:0:")
    assert "PS1='\\h:\\w\\$ '" in text["etc/profile"]
    assert "::shutdown:/bin/umount -a -r" in text["etc/inittab"]
    assert fs.entries["etc/init.d/rcS"].mode & 0o111
    assert "udhcpc -i eth0 -b" in text["etc/init.d/rcS"]
    assert fs.entries["usr/share/udhcpc/default.script"].mode & 0o111
    assert "127.0.0.1 localhost" in text["etc/hosts"]
    assert "LABEL=vmkit-root / ext4" in text["etc/fstab"]
    assert text["etc/modules"] == "virtio_mmio\nvirtio_net\nvirtio_rng\n"
    assert "lib/modules/6.1.0-test/modules.dep" in fs.entries
    init = rd.entries["init"].data.decode()
    assert "root=/dev/*)" in init and "exec switch_root /newroot /sbin/init" in init
    assert init.endswith("exec init\n")


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
