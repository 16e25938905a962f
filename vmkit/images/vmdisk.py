"""The default VM's disk: a qcow2 overlay on the default image's root disk.

``vmkit run`` without --kernel/--bios boots the default image with this disk
as /dev/vda and ``root=/dev/vda rw``, so what the guest writes survives a
poweroff. Under the data directory::

    vms/default/disk.qcow2   the guest's writes; reads of anything else go to
                             the backing file images/default/rootfs.qcow2
    vms/default/disk.json    the base the overlay was made on: path and SHA256

An overlay holds only the clusters the guest changed, so it is meaningful
only over the very base it was made on. The image build is reproducible
(ext4.py), so a ``vmkit images pull --force`` from the same packages leaves
the base and the disk as they were; a base that did change (a new kernel or
busybox from Debian, a new RECIPE) would turn the old overlay into garbage,
so the disk is made afresh, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

from ..storage.errors import ImageFormatError
from ..storage.image import create_image
from . import store
from .default import NAME, ROOTFS
from .errors import ImageError

log = logging.getLogger(__name__)

VM = "default"
DISK = "disk.qcow2"
RECORD = "disk.json"
# Appended to the image's command line; /init mounts this disk and switches to it.
ROOT_ARGS = "root=/dev/vda rw"


def root_disk_cmdline(cmdline: str) -> str:
    """The image's kernel command line ``cmdline`` for booting from its root disk (an overlay) as /dev/vda."""
    return f"{cmdline} {ROOT_ARGS}"


def default_vm_disk(warn: Callable[[str], None] = log.warning) -> Path:
    """The default VM's disk, created on first use; made afresh (and ``warn``ed about) when its base changed.

    Raises ImageError if the default image (with its root disk) has not been
    pulled, or if a disk is there that vmkit did not make.
    """
    image = store.images_dir() / NAME
    manifest = store.read_manifest(image) or {}
    base = image / ROOTFS
    entry = manifest.get("files", {}).get(ROOTFS)
    if entry is None or not base.exists():
        raise ImageError(f"the default image in {image} has no root disk {ROOTFS}: "
                         "run `vmkit images pull`")
    want = {"backing": os.path.abspath(base), "backing_sha256": entry["sha256"]}
    vm = store.vms_dir() / VM
    disk, record = vm / DISK, vm / RECORD
    if disk.exists():
        have = _read_record(record)
        if have is None:
            raise ImageError(f"{disk} has no record of the base image it was made on ({RECORD}); "
                             "vmkit will not guess: move the disk away, and the next run makes a fresh one")
        if have == want:
            return disk
        why = ("the default image was rebuilt with different contents"
               if have.get("backing_sha256") != want["backing_sha256"]
               else f"its base image moved to {base}")
        warn(f"the default VM's disk {disk} was made on another base image ({why}); "
             "replacing it with a fresh disk, the files written to the old one are lost")
    make_overlay(disk, base, record, want)
    return disk


def make_overlay(disk: Path, base: Path, record: Path, want: dict) -> None:
    """Create ``disk`` over ``base``, then its record.

    The record goes first and comes back last, so a crash in between leaves
    a disk without a record (refused, never used over the wrong base), not
    an old disk with a new record.
    """
    disk.parent.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    new = disk.with_name(f".{disk.name}.new")
    new.unlink(missing_ok=True)
    try:
        # The backing name is absolute, and its format is recorded, not probed.
        create_image(str(new), "qcow2", None, backing=os.path.abspath(base), backing_format="qcow2")
    except ImageFormatError as e:
        raise ImageError(f"cannot create the default VM's disk {disk}: {e}") from e
    os.replace(new, disk)
    new_record = record.with_name(f".{record.name}.new")
    new_record.write_text(json.dumps(want, indent=2) + "\n")
    os.replace(new_record, record)
    log.info("created %s over %s", disk, base)


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
