"""A VM's directory, ``<state dir>/vms/<name>/`` (docs/hypervisor.md, "Files").

The daemon makes it (with the VM's root disk, a qcow2 overlay of the image's
rootfs.qcow2) and writes config.json, the worker's whole input; the worker
writes worker.json, exit.json, serial.log and its sockets there. Files the
worker writes are read tolerantly: a worker killed mid-write leaves garbage,
which reads as "not there".

    vd = VmDir.create(state_dir, spec, image_dir)
    vd.write_config(worker_config(spec, vd, image_dir))
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ..images import ImageError, image_paths, root_disk_cmdline
from ..images.default import ROOTFS
from ..storage.errors import ImageFormatError
from ..storage.image import create_image, open_image
from .models import GiB, VmSpec, WorkerConfig

MAX_RUNTIME_JSON = 1 << 20   # worker.json/exit.json are small; a bigger file is garbage, not read


class VmDirError(Exception):
    """A VM directory or its disk cannot be made, written or removed."""


class VmDir:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, state_dir: str | os.PathLike, name: str) -> VmDir:
        return cls(Path(state_dir) / "vms" / name)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def disk(self) -> Path:
        return self.path / "disk.qcow2"

    @property
    def serial_log(self) -> Path:
        return self.path / "serial.log"

    @property
    def control_sock(self) -> Path:
        return self.path / "control.sock"

    @property
    def console_sock(self) -> Path:
        return self.path / "console.sock"

    @property
    def worker_json(self) -> Path:
        return self.path / "worker.json"

    @property
    def exit_json(self) -> Path:
        return self.path / "exit.json"

    @classmethod
    def create(cls, state_dir: str | os.PathLike, spec: VmSpec, image_dir: str | os.PathLike) -> VmDir:
        """Make vms/<name>/ (mode 0700) and its root disk over ``image_dir``'s rootfs.qcow2.

        The disk's virtual size is spec.disk_gib GiB, or the base's if that is
        bigger (a smaller disk would cut off the base's file system). A VM
        directory that already has a disk is refused: that disk is some VM's data.
        """
        vd = cls.of(state_dir, spec.name)
        base = Path(image_dir).absolute() / ROOTFS
        try:
            with open_image(str(base), "qcow2", readonly=True) as img:
                size = max(spec.disk_gib * GiB, img.virtual_size)
        except ImageFormatError as e:
            raise VmDirError(f"image {spec.image!r} has no usable root disk {base}: {e}; "
                             "run `vmkit images pull`") from e
        try:
            vd.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            vd.path.mkdir(mode=0o700, exist_ok=True)
            vd.path.chmod(0o700)   # mkdir's mode is filtered by the umask
            if vd.disk.exists():
                raise VmDirError(f"{vd.disk} already exists: remove the old VM's directory {vd.path} first")
            # Made under a temporary name, so a crash never leaves a half-made disk.qcow2.
            new = vd.path / f".{vd.disk.name}.new"
            new.unlink(missing_ok=True)
            # The backing name is absolute and its format recorded, never probed (see vmdisk.py).
            create_image(str(new), "qcow2", size, backing=str(base), backing_format="qcow2")
            os.replace(new, vd.disk)
        except ImageFormatError as e:
            raise VmDirError(f"cannot create the disk of VM {spec.name!r}: {e}") from e
        except OSError as e:
            raise VmDirError(f"cannot create the directory of VM {spec.name!r} in {vd.path}: {e}") from e
        return vd

    def write_config(self, config: WorkerConfig) -> None:
        """Replace config.json atomically: the worker sees the old file or the new, never a part."""
        tmp = self.path / f".{self.config.name}.new"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(config.model_dump_json(indent=2) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.config)
            _fsync_dir(self.path)   # the rename itself survives a host crash
        except OSError as e:
            raise VmDirError(f"cannot write {self.config}: {e}") from e

    def read_worker(self) -> dict | None:
        return _read_json(self.worker_json)

    def read_exit(self) -> dict | None:
        return _read_json(self.exit_json)

    def clear_runtime(self) -> None:
        """Remove what a previous worker left (before a start, after a crash)."""
        for path in (self.worker_json, self.exit_json, self.control_sock, self.console_sock):
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                raise VmDirError(f"cannot remove {path}: {e}") from e

    def remove(self) -> None:
        """Delete the directory, disk included. Nothing there is fine (a repeated delete)."""
        try:
            shutil.rmtree(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise VmDirError(f"cannot remove {self.path}: {e}") from e


def vm_mac(name: str) -> str:
    """A MAC address stable for the VM's name: QEMU's 52:54:00 prefix (locally
    administered, unicast) and three bytes of sha256(name)."""
    tail = hashlib.sha256(name.encode()).digest()[:3]
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)


def worker_config(spec: VmSpec, vmdir: VmDir, image_dir: str | os.PathLike) -> WorkerConfig:
    """The worker's input for ``spec``: the image's kernel, initrd and firmware,
    booting the VM's disk as root, as ``vmkit run`` boots the default VM."""
    try:
        kernel, bios, initrd, cmdline = image_paths(Path(image_dir).absolute())
    except ImageError as e:
        raise VmDirError(str(e)) from e
    append = root_disk_cmdline(cmdline)
    if spec.append:
        append = f"{append} {spec.append}"
    return WorkerConfig(name=spec.name, vm_dir=str(vmdir.path.absolute()), memory_mib=spec.memory_mib,
                        kernel=str(kernel), initrd=str(initrd), bios=str(bios), append=append,
                        disk=str(vmdir.disk.absolute()), net=spec.net, mac=vm_mac(spec.name),
                        hostfwd=list(spec.hostfwd), limits=spec.limits, jit=spec.jit)


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RUNTIME_JSON + 1)
        if len(data) > MAX_RUNTIME_JSON:
            return None
        value = json.loads(data)
    except (OSError, ValueError, RecursionError):   # missing, unreadable, not UTF-8, not JSON, absurdly nested
        return None
    return value if isinstance(value, dict) else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
