"""Disk images behind virtio-blk: raw and qcow2 (QEMU docs/interop/qcow2.txt).

open_image() is the one entry point for VMs; the `vmkit disk` command
(storage/cli.py) creates, inspects, converts, checks, resizes and snapshots.
"""

from .errors import ImageFormatError
from .image import BlockImage, create_image, open_image, parse_size

__all__ = ["BlockImage", "ImageFormatError", "create_image", "open_image", "parse_size"]
