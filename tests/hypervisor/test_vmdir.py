"""vmkit/hypervisor/vmdir.py: a VM's directory, its overlay disk and the worker's config."""

import json
import os
import stat
from pathlib import Path

import pytest

from vmkit.hypervisor.models import GiB, Limits, MiB, VmSpec, WorkerConfig
from vmkit.hypervisor.vmdir import VmDir, VmDirError, vm_mac, worker_config
from vmkit.images import default, store
from vmkit.storage.image import create_image, open_image
from vmkit.storage.info import describe_image

REAL_IMAGE = store.images_dir() / default.NAME   # read before any test changes the environment


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """An image directory like the default image's, with a 64 MiB qcow2 root disk starting with b"base"."""
    image = tmp_path / "images" / "default"
    image.mkdir(parents=True)
    for name in ("Image", "fw_dynamic.bin", "initrd.img"):
        (image / name).write_bytes(name.encode())
    create_image(str(image / default.ROOTFS), "qcow2", 64 * MiB)
    with open_image(str(image / default.ROOTFS), "qcow2") as img:
        img.write_from(0, b"base")
    (image / "manifest.json").write_text(json.dumps({"name": "default", "cmdline": "console=ttyS0 quiet"}))
    return image


def read_first(disk: Path, n: int = 4) -> bytes:
    with open_image(str(disk), "qcow2", readonly=True) as img:
        buf = bytearray(n)
        img.read_into(0, buf)
        return bytes(buf)


def test_create_makes_a_private_directory_and_an_overlay(tmp_path, image_dir):
    state = tmp_path / "vmkitd"
    vd = VmDir.create(state, VmSpec(name="web", disk_gib=2), image_dir)
    assert vd.path == state / "vms" / "web" and vd.name == "web"
    assert stat.S_IMODE(vd.path.stat().st_mode) == 0o700
    info = describe_image(str(vd.disk), "qcow2")
    assert info["backing_file"] == str(image_dir / default.ROOTFS) and os.path.isabs(info["backing_file"])
    assert info["backing_format"] == "qcow2"
    assert info["virtual_size"] == 2 * GiB
    assert read_first(vd.disk) == b"base"
    assert sorted(p.name for p in vd.path.iterdir()) == ["disk.qcow2"]   # no temporary left


def test_a_base_bigger_than_disk_gib_sets_the_size(tmp_path, image_dir):
    base = image_dir / default.ROOTFS
    base.unlink()
    create_image(str(base), "qcow2", 3 * GiB)
    vd = VmDir.create(tmp_path, VmSpec(name="web", disk_gib=1), image_dir)
    assert describe_image(str(vd.disk), "qcow2")["virtual_size"] == 3 * GiB


def test_create_refuses_an_existing_disk(tmp_path, image_dir):
    vd = VmDir.create(tmp_path, VmSpec(name="web"), image_dir)
    with open_image(str(vd.disk), "qcow2") as img:
        img.write_from(0, b"mine")
    with pytest.raises(VmDirError, match="already exists"):
        VmDir.create(tmp_path, VmSpec(name="web"), image_dir)
    assert read_first(vd.disk) == b"mine"


def test_create_without_a_root_disk_says_pull(tmp_path, image_dir):
    (image_dir / default.ROOTFS).unlink()
    with pytest.raises(VmDirError, match="vmkit images pull"):
        VmDir.create(tmp_path, VmSpec(name="web"), image_dir)
    assert not (tmp_path / "vms" / "web").exists()


def test_write_config_is_atomic_and_private(tmp_path, image_dir):
    spec = VmSpec(name="web")
    vd = VmDir.create(tmp_path, spec, image_dir)
    cfg = worker_config(spec, vd, image_dir)
    vd.write_config(cfg)
    assert WorkerConfig.model_validate_json(vd.config.read_text()) == cfg
    assert stat.S_IMODE(vd.config.stat().st_mode) == 0o600
    vd.write_config(cfg.model_copy(update={"memory_mib": 1024}))
    assert json.loads(vd.config.read_text())["memory_mib"] == 1024
    assert sorted(p.name for p in vd.path.iterdir()) == ["config.json", "disk.qcow2"]


def test_worker_config(tmp_path, image_dir):
    spec = VmSpec(name="web", memory_mib=256, append="loglevel=7", net=False, hostfwd=["tcp::8080-:80"],
                  limits=Limits(cpu_max=0.5))
    vd = VmDir.create(tmp_path, spec, image_dir)
    cfg = worker_config(spec, vd, image_dir)
    assert cfg.name == "web" and cfg.vm_dir == str(vd.path) and cfg.memory_mib == 256
    assert (cfg.kernel, cfg.initrd, cfg.bios) == tuple(str(image_dir / n) for n in
                                                       ("Image", "initrd.img", "fw_dynamic.bin"))
    assert cfg.append == "console=ttyS0 quiet root=/dev/vda rw loglevel=7"
    assert cfg.disk == str(vd.disk) and os.path.isabs(cfg.disk)
    assert cfg.net is False and cfg.hostfwd == ["tcp::8080-:80"] and cfg.limits.cpu_max == 0.5
    assert cfg.mac == vm_mac("web")
    assert worker_config(VmSpec(name="web"), vd, image_dir).append == "console=ttyS0 quiet root=/dev/vda rw"


def test_worker_config_without_the_image_says_pull(tmp_path, image_dir):
    (image_dir / "Image").unlink()
    with pytest.raises(VmDirError, match="vmkit images pull"):
        worker_config(VmSpec(name="web"), VmDir(tmp_path / "vms" / "web"), image_dir)


def test_mac_is_stable_and_unicast():
    mac = vm_mac("web")
    assert mac == vm_mac("web") != vm_mac("db")
    assert mac.startswith("52:54:00:") and len(mac.split(":")) == 6
    assert all(len(b) == 2 and int(b, 16) >= 0 for b in mac.split(":"))


def test_runtime_files_are_read_tolerantly(tmp_path):
    vd = VmDir(tmp_path)
    assert vd.read_worker() is None and vd.read_exit() is None            # missing
    vd.worker_json.write_text('{"pid": 42, "started": 1.5}')
    assert vd.read_worker() == {"pid": 42, "started": 1.5}
    for garbage in (b'{"pid": 4', b"\xff\xfe", b"[1, 2]", b"", b"[" * 100000):
        vd.exit_json.write_bytes(garbage)
        assert vd.read_exit() is None, garbage
    vd.exit_json.write_text(json.dumps({"tail": "x" * (2 << 20)}))         # absurdly big
    assert vd.read_exit() is None


def test_clear_runtime_and_remove(tmp_path, image_dir):
    vd = VmDir.create(tmp_path, VmSpec(name="web"), image_dir)
    for path in (vd.worker_json, vd.exit_json, vd.control_sock, vd.console_sock, vd.serial_log):
        path.write_text("x")
    vd.clear_runtime()
    assert sorted(p.name for p in vd.path.iterdir()) == ["disk.qcow2", "serial.log"]
    vd.clear_runtime()   # nothing there is fine
    vd.remove()
    assert not vd.path.exists() and (tmp_path / "vms").is_dir()
    vd.remove()          # a repeated delete is fine


def test_paths():
    vd = VmDir.of("/state", "web")
    assert vd.path == Path("/state/vms/web")
    assert [p.name for p in (vd.config, vd.disk, vd.serial_log, vd.control_sock, vd.console_sock,
                             vd.worker_json, vd.exit_json)] == \
        ["config.json", "disk.qcow2", "serial.log", "control.sock", "console.sock", "worker.json", "exit.json"]


@pytest.mark.skipif(not (REAL_IMAGE / default.ROOTFS).exists() or store.read_manifest(REAL_IMAGE) is None,
                    reason="the default image is not pulled (vmkit images pull)")
def test_real_default_image(tmp_path):
    spec = VmSpec(name="real", disk_gib=1)
    vd = VmDir.create(tmp_path, spec, REAL_IMAGE)
    base_size = describe_image(str(REAL_IMAGE / default.ROOTFS), "qcow2")["virtual_size"]
    assert describe_image(str(vd.disk), "qcow2")["virtual_size"] == max(GiB, base_size)
    with open_image(str(vd.disk), "qcow2", readonly=True) as img:   # the ext4 superblock, through the overlay
        magic = bytearray(2)
        img.read_into(1024 + 56, magic)
    assert bytes(magic) == b"\x53\xef"
    cfg = worker_config(spec, vd, REAL_IMAGE)
    manifest = store.read_manifest(REAL_IMAGE)
    assert cfg.append == f"{manifest.get('cmdline', default.CMDLINE)} root=/dev/vda rw"
    assert all(Path(p).is_file() for p in (cfg.kernel, cfg.initrd, cfg.bios))
