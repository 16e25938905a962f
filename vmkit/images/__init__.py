"""Guest images: build them from Debian packages, list them, find their files.

``vmkit images pull`` builds the default image (Debian trixie riscv64:
kernel, OpenSBI, busybox initramfs and root disk) in the user's data
directory; see ``default.py`` for its contents, ``store.py`` for the layout
on disk and ``vmdisk.py`` for the default VM's own disk.
"""

from __future__ import annotations

from pathlib import Path

from . import store
from .default import CMDLINE, pull_default
from .errors import ImageError
from .store import ImageInfo
from .vmdisk import ROOT_ARGS, default_vm_disk, root_disk_cmdline

__all__ = ["ImageError", "ImageInfo", "pull", "list_images", "image_paths", "default_image_paths",
           "default_vm_disk", "root_disk_cmdline", "ROOT_ARGS"]


def pull(mirror: str | None = None, force: bool = False, progress: bool = True) -> Path:
    """Build (or check) the default image and return its directory.

    mirror: a Debian mirror's base URL; default from VMKIT_DEBIAN_MIRROR or
    the host's apt sources. force: rebuild even if the image verifies (cached
    .debs are reused while they match the fresh index). progress: show
    download progress bars. When the image exists and every file matches its
    manifest, nothing is fetched. Raises ImageError with advice on failure.
    """
    return pull_default(mirror=mirror, force=force, progress=progress)


def list_images() -> list[ImageInfo]:
    """The images in the data directory: name, path, size in bytes, packages."""
    return store.list_images()


def image_paths(image: Path) -> tuple[Path, Path, Path, str]:
    """``(kernel Image, fw_dynamic.bin, initrd.img, kernel command line)`` of the image in directory ``image``.

    Raises ImageError if the image has not been pulled (or is incomplete).
    """
    manifest = store.read_manifest(image)
    files = (image / "Image", image / "fw_dynamic.bin", image / "initrd.img")
    if manifest is None or not all(f.exists() for f in files):
        raise ImageError(f"the {image.name} image is not in {image}: run `vmkit images pull`")
    return (*files, manifest.get("cmdline", CMDLINE))


def default_image_paths() -> tuple[Path, Path, Path, str]:
    """``image_paths`` of the default image."""
    return image_paths(store.images_dir() / "default")
