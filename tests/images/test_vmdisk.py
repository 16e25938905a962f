"""vmkit/images/vmdisk.py: the default VM's overlay disk, made, kept and remade."""

import json
import os

import pytest

from vmkit.images import default, store, vmdisk
from vmkit.images.errors import ImageError
from vmkit.storage.image import create_image, open_image
from vmkit.storage.info import describe_image


def fake_image(content: bytes = b"base") -> None:
    """A default image whose root disk is a small qcow2 starting with ``content``."""
    image = store.images_dir() / default.NAME
    image.mkdir(parents=True, exist_ok=True)
    base = image / default.ROOTFS
    base.unlink(missing_ok=True)
    create_image(str(base), "qcow2", 1 << 20)
    with open_image(str(base), "qcow2") as img:
        img.write_from(0, content)
    default.write_manifest(image, {"name": default.NAME, "cmdline": default.CMDLINE})


def first_bytes(disk, n=4) -> bytes:
    with open_image(str(disk), "qcow2", readonly=True) as img:
        buf = bytearray(n)
        img.read_into(0, buf)
        return bytes(buf)


def test_first_use_makes_an_overlay_of_the_root_disk(data_dir):
    fake_image()
    disk = vmdisk.default_vm_disk()
    assert disk == data_dir / "vms" / "default" / "disk.qcow2"
    info = describe_image(str(disk), "qcow2")
    base = data_dir / "images" / "default" / "rootfs.qcow2"
    assert info["backing_file"] == str(base) and os.path.isabs(info["backing_file"])
    assert info["backing_format"] == "qcow2"
    assert info["virtual_size"] == 1 << 20
    assert first_bytes(disk) == b"base"  # read through to the base
    record = json.loads((disk.parent / vmdisk.RECORD).read_text())
    assert record == {"backing": str(base),
                      "backing_sha256": store.read_manifest(base.parent)["files"][default.ROOTFS]["sha256"]}
    assert sorted(p.name for p in disk.parent.iterdir()) == [vmdisk.RECORD, vmdisk.DISK]


def test_the_disk_is_kept_while_the_base_is_the_same(data_dir):
    fake_image()
    disk = vmdisk.default_vm_disk()
    with open_image(str(disk), "qcow2") as img:
        img.write_from(0, b"mine")
    fake_image()  # a rebuild with the same result, as `pull --force` gives
    warnings = []
    assert vmdisk.default_vm_disk(warn=warnings.append) == disk
    assert first_bytes(disk) == b"mine" and warnings == []


def test_a_changed_base_remakes_the_disk_with_a_warning(data_dir):
    fake_image(b"old!")
    disk = vmdisk.default_vm_disk()
    with open_image(str(disk), "qcow2") as img:
        img.write_from(4096, b"mine")
    fake_image(b"new!")
    warnings = []
    assert vmdisk.default_vm_disk(warn=warnings.append) == disk
    assert len(warnings) == 1 and "rebuilt" in warnings[0] and str(disk) in warnings[0]
    assert first_bytes(disk) == b"new!"
    with open_image(str(disk), "qcow2", readonly=True) as img:
        buf = bytearray(4)
        img.read_into(4096, buf)
    assert buf == bytes(4)  # the old overlay's data is gone
    assert vmdisk.default_vm_disk(warn=warnings.append) == disk and len(warnings) == 1


def test_a_moved_data_dir_remakes_the_disk(data_dir, monkeypatch, tmp_path):
    fake_image()
    vmdisk.default_vm_disk()
    moved = tmp_path / "moved"
    os.rename(data_dir, moved)  # the old overlay names a backing file that is gone
    monkeypatch.setenv(store.DATA_ENV, str(moved))
    warnings = []
    disk = vmdisk.default_vm_disk(warn=warnings.append)
    assert len(warnings) == 1 and "moved" in warnings[0]
    assert describe_image(str(disk), "qcow2")["backing_file"] == str(
        moved / "images" / "default" / default.ROOTFS)


def test_a_disk_without_record_is_refused_not_replaced(data_dir):
    fake_image()
    disk = vmdisk.default_vm_disk()
    (disk.parent / vmdisk.RECORD).unlink()
    with pytest.raises(ImageError, match="move the disk away"):
        vmdisk.default_vm_disk()
    assert disk.exists()


def test_no_image_or_no_root_disk_says_pull(data_dir):
    with pytest.raises(ImageError, match="vmkit images pull"):
        vmdisk.default_vm_disk()
    fake_image()
    (store.images_dir() / default.NAME / default.ROOTFS).unlink()  # an image of recipe 3
    with pytest.raises(ImageError, match="vmkit images pull"):
        vmdisk.default_vm_disk()
    assert not (data_dir / "vms").exists()
