"""The block-image interface behind virtio-blk, and opening/creating images.

    img = open_image("disk.qcow2", "qcow2", readonly=False, cache="writeback")
    img.read_into(offset, ram_view)      # fills the view (zero-copy into guest RAM)
    img.write_from(offset, ram_view)
    img.flush()                          # durable per the cache mode
    img.discard(offset, length); img.write_zeroes(offset, length, may_unmap=True)
    img.close()

The format comes only from the caller (the VM configuration). Nothing here
looks at a file's contents to guess it: a guest can write a qcow2 header,
backing-file name included, into its raw disk, and must not make the host
open some other file after a restart. `probe_format` exists for the
`vmkit disk` command line only, where a person names the file.

Every failure (bad request range, read-only image, malformed image, host
EIO/ENOSPC) raises ImageFormatError, which the block device answers with
VIRTIO_BLK_S_IOERR. An image object is not thread-safe: one caller at a time.

Cache modes (like QEMU's cache=):
- writeback: writes may sit in the host page cache; flush() = fdatasync.
- none: write-through, every write is durable when it returns (O_DSYNC and
  a metadata flush after each request); no O_DIRECT.
- unsafe: flush() does nothing (scratch disks, tests).
"""

from __future__ import annotations

import os
import re

from .errors import ImageFormatError

FORMATS = ("raw", "qcow2")
CACHE_MODES = ("writeback", "none", "unsafe")
SECTOR = 512


def as_byte_view(buf, writable: bool) -> memoryview:
    """A flat unsigned-byte view of buf (bytes, bytearray, numpy array, memoryview)."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    if view.format != "B" or view.ndim != 1:
        try:
            view = view.cast("B")
        except TypeError as e:
            raise ImageFormatError(f"buffer must be contiguous bytes ({e})") from e
    if writable and view.readonly:
        raise ImageFormatError("read buffer is read-only")
    return view


class BlockImage:
    """Base class: request checks shared by every format; formats fill in _read/_write/..."""

    format = "?"

    def __init__(self, path: str, virtual_size: int, readonly: bool, cache: str) -> None:
        self.path = path
        self.virtual_size = virtual_size
        self.readonly = readonly
        self.cache = cache
        self.closed = False

    # -- public API -------------------------------------------------------------
    def read_into(self, offset: int, buf) -> None:
        view = as_byte_view(buf, writable=True)
        self._check_request(offset, len(view), "read")
        if len(view):
            self._read(offset, view)

    def write_from(self, offset: int, buf) -> None:
        view = as_byte_view(buf, writable=False)
        self._check_request(offset, len(view), "write", write=True)
        if len(view):
            self._write(offset, view)
            self._write_through()

    def flush(self) -> None:
        self._check_open()
        if not self.readonly:
            self._flush()

    def discard(self, offset: int, length: int) -> None:
        """Tell the image the range is unused; its content becomes zeros or (for
        qcow2 v2 with a backing file) stays as is. Advisory for partial clusters."""
        self._check_request(offset, length, "discard", write=True)
        if length:
            self._discard(offset, length)
            self._write_through()

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        """Make the range read as zeros; may_unmap lets the image free the space."""
        self._check_request(offset, length, "write zeroes", write=True)
        if length:
            self._write_zeroes(offset, length, may_unmap)
            self._write_through()

    def block_status(self, offset: int, length: int) -> tuple[int, bool]:
        """(n, is_zero): the first n bytes from offset (1 <= n <= length) all read
        as zeros when is_zero, else may hold data. Lets convert skip holes."""
        self._check_request(offset, length, "status")
        return length, False

    def resize(self, new_size: int) -> None:
        raise ImageFormatError(f"{self.path}: {self.format} images cannot be resized")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # A forgotten image still gets its metadata written; errors are moot here.
        try:
            if not getattr(self, "closed", True):
                self.close()
        except Exception:
            pass

    # -- checks -----------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise ImageFormatError(f"{self.path}: image is closed")

    def _check_request(self, offset: int, length: int, what: str, write: bool = False) -> None:
        self._check_open()
        if write and self.readonly:
            raise ImageFormatError(f"{self.path}: {what} refused: the image is open read-only")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
            raise ImageFormatError(f"{self.path}: {what} with bad offset/length {offset!r}/{length!r}")
        if offset + length > self.virtual_size:
            raise ImageFormatError(
                f"{self.path}: {what} of {length} bytes at offset {offset} goes past the end of "
                f"the disk ({self.virtual_size} bytes)")

    def _write_through(self) -> None:
        if self.cache == "none":
            self._flush()

    # -- format hooks -------------------------------------------------------------
    def _read(self, offset: int, view: memoryview) -> None:
        raise NotImplementedError

    def _write(self, offset: int, view: memoryview) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _discard(self, offset: int, length: int) -> None:
        pass

    def _write_zeroes(self, offset: int, length: int, may_unmap: bool) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def _check_format_and_cache(fmt: str, cache: str) -> None:
    if fmt not in FORMATS:
        raise ImageFormatError(f"unknown image format {fmt!r}: use one of {', '.join(FORMATS)}")
    if cache not in CACHE_MODES:
        raise ImageFormatError(f"unknown cache mode {cache!r}: use one of {', '.join(CACHE_MODES)}")


def open_image(path: str, format: str, readonly: bool = False, cache: str = "writeback",
               lock: str | None = "default") -> BlockImage:
    """Open a disk image in the given format (never guessed from its contents).

    lock: 'exclusive' (the default for writers: a second writer is refused),
    'shared' (readers that must not see the file change, like backing files),
    None (the default for readers)."""
    _check_format_and_cache(format, cache)
    path = os.fspath(path)
    if format == "raw":
        from .raw import RawImage
        return RawImage(path, readonly=readonly, cache=cache, lock=lock)
    from .qcow2 import Qcow2Image
    return Qcow2Image(path, readonly=readonly, cache=cache, lock=lock)


def create_image(path: str, format: str, size: int | None, backing: str | None = None,
                 backing_format: str | None = None, cluster_size: int = 65536,
                 lazy_refcounts: bool = False, compat: str = "1.1") -> None:
    """Create an empty image (raw: a sparse file; qcow2: header and empty tables)."""
    _check_format_and_cache(format, "writeback")
    path = os.fspath(path)
    if format == "raw":
        if backing:
            raise ImageFormatError("raw images cannot have a backing file: use -f qcow2")
        if size is None:
            raise ImageFormatError("a size is needed to create a raw image")
        from .raw import create_raw
        create_raw(path, size)
        return
    from .qcow2_create import create_qcow2
    create_qcow2(path, size, backing=backing, backing_format=backing_format, cluster_size=cluster_size,
                 lazy_refcounts=lazy_refcounts, compat=compat)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}


def parse_size(text: str) -> int:
    """'10G', '512M', '1.5T', '4096' -> bytes (binary units, like qemu-img)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ImageFormatError(f"invalid size {text!r}: use a number with an optional K, M, G, T or P suffix")
    number, unit = m.groups()
    mult = _SIZE_UNITS[unit.lower()]
    if "." in number:
        whole, frac = number.split(".")
        value = int(whole) * mult + (int(frac) * mult) // (10 ** len(frac))
    else:
        value = int(number) * mult
    return value


def probe_format(path: str) -> str:
    """For the command line only: 'qcow2' if the file starts with the qcow2 magic, else 'raw'.

    Never used to open a VM's disks (see the module docstring)."""
    from .qcow2_header import QCOW2_MAGIC
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ImageFormatError(f"cannot open {path}: {e.strerror}") from e
    return "qcow2" if head == QCOW2_MAGIC else "raw"
