"""Raw disk images: the file is the disk, byte for byte.

Files are created sparse (ftruncate); discard and write_zeroes with unmap
punch holes (fallocate PUNCH_HOLE) where the host file system can, so the
space goes back to the host. The virtual size is the file size when opened.
"""

from __future__ import annotations

import os

from .errors import ImageFormatError
from .hostfile import HostFile
from .image import SECTOR, BlockImage


class RawImage(BlockImage):
    format = "raw"

    def __init__(self, path: str, readonly: bool = False, cache: str = "writeback",
                 lock: str | None = "default") -> None:
        self.closed = True
        self.file = HostFile(path, readonly=readonly, cache=cache, lock=lock)
        try:
            size = self.file.size()
            if not os.path.isfile(path):  # a block device: fstat says 0
                size = os.lseek(self.file.fd, 0, os.SEEK_END)
        except OSError as e:
            self.file.close()
            raise ImageFormatError(f"{path}: cannot find the size: {e.strerror}") from e
        except ImageFormatError:
            self.file.close()
            raise
        super().__init__(path, size, readonly, cache)

    def _read(self, offset: int, view: memoryview) -> None:
        self.file.read_into(offset, view)

    def _write(self, offset: int, view: memoryview) -> None:
        self.file.write(offset, view)

    def _flush(self) -> None:
        self.file.sync()

    def _discard(self, offset: int, length: int) -> None:
        # Only whole sectors: a hole smaller than a block is zero-filled by the
        # file system anyway, and a partial sector would lose guest data.
        start = -(-offset // SECTOR) * SECTOR
        end = (offset + length) // SECTOR * SECTOR
        if end > start:
            self.file.punch_hole(start, end - start)

    def _write_zeroes(self, offset: int, length: int, may_unmap: bool) -> None:
        self.file.write_zeroes(offset, length, unmap=may_unmap)

    def block_status(self, offset: int, length: int) -> tuple[int, bool]:
        self._check_request(offset, length, "status")
        end = offset + length
        data = self.file.seek_data(offset)
        if data > offset:
            return min(data, end) - offset, True
        hole = self.file.seek_hole(offset)
        return max(1, min(hole, end) - offset), False

    def resize(self, new_size: int, shrink: bool = False) -> None:
        self._check_open()
        if self.readonly:
            raise ImageFormatError(f"{self.path}: resize refused: the image is open read-only")
        if new_size < self.virtual_size and not shrink:
            raise ImageFormatError(
                f"{self.path}: shrinking from {self.virtual_size} to {new_size} bytes loses data at "
                "the end of the disk; pass --shrink if you mean it")
        self.file.truncate(new_size)
        self.file.sync()
        self.virtual_size = new_size

    def _close(self) -> None:
        try:
            if not self.readonly:
                self.file.sync()
        finally:
            self.file.close()


def create_raw(path: str, size: int) -> None:
    if size < 0:
        raise ImageFormatError(f"invalid size {size}")
    size = -(-size // SECTOR) * SECTOR
    f = HostFile(path, readonly=False, create=True)
    try:
        f.truncate(size)
        f.sync()
    finally:
        f.close()
