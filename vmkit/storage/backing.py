"""Backing files of qcow2 overlays: name checks, path resolution, chain limits.

Spec: QEMU docs/interop/qcow2.txt, "Header" (backing_file_offset/size) and
"Header extensions" (backing file format name). A backing name comes from
the image, so from whoever wrote the image, possibly a guest (see image.py):
it must name a plain file, never a protocol ('nbd:', 'http:', 'file:') or a
'json:{...}' block-graph description, the format must be recorded in the
image (never probed), and the chain must not loop or grow without bound.
"""

from __future__ import annotations

import os
import re

from .errors import ImageFormatError

MAX_CHAIN_DEPTH = 16      # backing files below the top image
BACKING_FORMATS = ("raw", "qcow2")
_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def check_backing_name(image: str, name: str) -> None:
    if not name:
        raise ImageFormatError(f"{image}: empty backing file name")
    if name.startswith("json:") or _PROTOCOL.match(name):
        raise ImageFormatError(
            f"{image}: backing file {name!r} is a protocol or json: specification; vmkit opens plain "
            "files only (if it really is a file name, write it as ./NAME)")


def resolve_backing(image: str, name: str) -> str:
    """A relative name is relative to the directory of the image that names it."""
    check_backing_name(image, name)
    if os.path.isabs(name):
        return name
    return os.path.join(os.path.dirname(os.path.abspath(image)), name)


def file_identity(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise ImageFormatError(f"cannot open backing file {path}: {e.strerror}") from e
    return st.st_dev, st.st_ino


def check_chain(image: str, backing_path: str, chain: tuple, names: tuple) -> tuple[int, int]:
    """Refuse loops and chains deeper than MAX_CHAIN_DEPTH; returns the backing file's identity.

    chain holds the (st_dev, st_ino) of the image and everything above it,
    names their paths (for the message)."""
    ident = file_identity(backing_path)
    if ident in chain:
        loop = " -> ".join(list(names) + [backing_path])
        raise ImageFormatError(f"{image}: backing chain loops ({loop}); fix the backing file names")
    if len(chain) > MAX_CHAIN_DEPTH:
        raise ImageFormatError(f"{image}: backing chain has more than {MAX_CHAIN_DEPTH} backing files; "
                               "flatten it with 'vmkit disk convert'")
    return ident


def check_backing_format(image: str, name: str, fmt: str | None) -> str:
    if fmt is None:
        raise ImageFormatError(
            f"{image}: backing file {name!r} has no recorded format, and vmkit does not guess formats; "
            f"record it with 'qemu-img rebase -u -b {name} -F raw|qcow2 {image}'")
    if fmt not in BACKING_FORMATS:
        raise ImageFormatError(f"{image}: backing file format {fmt!r} is not supported "
                               f"(vmkit reads {', '.join(BACKING_FORMATS)})")
    return fmt
