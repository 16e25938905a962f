"""Where guest images and the package cache live, and what an image holds.

Layout, under the data directory (``$VMKIT_DATA_DIR``, else
``$XDG_DATA_HOME/vmkit``, else ``~/.local/share/vmkit``)::

    images/<name>/        one directory per image, with manifest.json
    vms/<name>/           one directory per VM: its disk (see vmdisk.py)
    cache/debs/           downloaded .deb files, kept while they verify
    cache/indexes/<suite>/  InRelease and Packages files

An image's ``manifest.json`` lists its files with size and SHA256; an image
is usable only while every file matches.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .download import is_verified

DATA_ENV = "VMKIT_DATA_DIR"
MANIFEST = "manifest.json"


def data_dir() -> Path:
    if path := os.environ.get(DATA_ENV):
        return Path(path)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "vmkit"


def images_dir() -> Path:
    return data_dir() / "images"


def vms_dir() -> Path:
    return data_dir() / "vms"


def cache_dir() -> Path:
    return data_dir() / "cache"


@dataclass(frozen=True)
class ImageInfo:
    name: str
    path: Path
    size: int  # bytes of the image's files, manifest included
    packages: list[str]  # "name version"
    manifest: dict


def read_manifest(image: Path) -> dict | None:
    try:
        return json.loads((image / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def verify_image(image: Path) -> bool:
    """True if the image has a manifest and every file in it matches."""
    manifest = read_manifest(image)
    if not manifest or not manifest.get("files"):
        return False
    return all(is_verified(image / name, f["size"], f["sha256"])
               for name, f in manifest["files"].items())


def list_images() -> list[ImageInfo]:
    """The images in the data directory that have a manifest, by name."""
    infos = []
    root = images_dir()
    for image in sorted(root.iterdir()) if root.is_dir() else []:
        if image.name.startswith("."):
            continue  # an image being built or replaced
        manifest = read_manifest(image)
        if manifest is None:
            continue
        size = sum(p.stat().st_size for p in image.iterdir() if p.is_file())
        packages = [f"{p['name']} {p['version']}" for p in manifest.get("packages", [])]
        infos.append(ImageInfo(image.name, image, size, packages, manifest))
    return infos


def staging_dir(name: str) -> Path:
    """A fresh directory beside the image's final place, for building it."""
    images_dir().mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=images_dir()))
    path.chmod(0o755)  # mkdtemp makes it private; an image is not secret
    return path


def install_image(staging: Path, name: str) -> Path:
    """Move a built image into place, replacing the old one.

    Both renames are within one directory, so a crash leaves either the old
    image, or none (then ``pull`` builds it again), never a mixture.
    """
    final = images_dir() / name
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=images_dir()))
        os.replace(final, old / name)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final
