"""One open host file under a disk image: positioned I/O, sync, holes.

Every host error (EIO, ENOSPC, ...) becomes an ImageFormatError naming the
file and the operation, so the block device can turn it into
VIRTIO_BLK_S_IOERR instead of dying or reporting a false success. A failed
fdatasync is sticky: the kernel may already have dropped the dirty pages it
could not write, so a later fdatasync that "succeeds" proves nothing; every
later sync() fails too (the lesson of PostgreSQL's "fsyncgate").

Linux facts used here: pread/pwrite may return short counts (loop); reading
past EOF returns 0 bytes (callers get zeros); fallocate(PUNCH_HOLE|KEEP_SIZE)
frees blocks and reads back as zeros where the file system supports it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os

from .errors import ImageFormatError

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_ZERO_CHUNK = bytes(1 << 20)

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _fallocate = _libc.fallocate
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int
except (OSError, AttributeError):  # not glibc/Linux: holes are an optimisation only
    _fallocate = None


def fill_zero(view: memoryview) -> None:
    """Zero a writable byte view in place, without a temporary as big as the view."""
    n = len(view)
    pos = 0
    while pos < n:
        k = min(n - pos, len(_ZERO_CHUNK))
        view[pos:pos + k] = _ZERO_CHUNK[:k]
        pos += k


class HostFile:
    """A file descriptor with the few operations images need.

    cache: 'writeback' (sync() is fdatasync), 'none' (opened O_DSYNC: every
    write is durable when it returns; sync() still fdatasyncs), 'unsafe'
    (sync() does nothing). lock: 'exclusive', 'shared' or None; by default
    exclusive for writers and none for readers.
    """

    def __init__(self, path: str, readonly: bool, cache: str = "writeback", create: bool = False,
                 lock: str | None = "default") -> None:
        self.path = path
        self.readonly = readonly
        self.cache = cache
        flags = os.O_CLOEXEC | (os.O_RDONLY if readonly else os.O_RDWR)
        if create:
            flags |= os.O_CREAT | os.O_TRUNC
        if cache == "none" and not readonly:
            flags |= os.O_DSYNC
        try:
            self.fd = os.open(path, flags, 0o644)
        except OSError as e:
            raise ImageFormatError(f"cannot open {path}: {e.strerror}") from e
        self._sync_error: str | None = None
        # The file's length as our own writes leave it (one writer: the lock).
        self.known_size = os.fstat(self.fd).st_size
        if lock == "default":
            lock = None if readonly else "exclusive"
        if lock:
            # Two writers on one image, or a writer under a reader that uses it
            # as a backing file, corrupt it; advisory locks (flock, not the
            # fcntl locks QEMU takes) catch the common mistake of giving one
            # disk to two VMs: writers lock exclusive, backing files shared.
            try:
                fcntl.flock(self.fd, (fcntl.LOCK_EX if lock == "exclusive" else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except OSError as e:
                os.close(self.fd)
                self.fd = -1
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise ImageFormatError(
                        f"{path} is in use by another process (as a disk or a backing file); "
                        "stop that VM or tool first") from e
                raise ImageFormatError(f"cannot lock {path}: {e.strerror}") from e

    # -- errors ---------------------------------------------------------------
    def _fail(self, what: str, e: OSError) -> ImageFormatError:
        hint = "the host disk is full; free space and retry" if e.errno == errno.ENOSPC \
            else "check the host disk and its kernel log"
        return ImageFormatError(f"{self.path}: host I/O error while {what}: {e.strerror} ({hint})")

    # -- sizes ----------------------------------------------------------------
    def size(self) -> int:
        try:
            return os.fstat(self.fd).st_size
        except OSError as e:
            raise self._fail("reading the file size", e) from e

    def allocated_bytes(self) -> int:
        try:
            return os.fstat(self.fd).st_blocks * 512
        except OSError as e:
            raise self._fail("reading the file size", e) from e

    def truncate(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)
        except OSError as e:
            raise self._fail(f"resizing the file to {size} bytes", e) from e
        self.known_size = size

    # -- data -----------------------------------------------------------------
    def read_into(self, offset: int, view: memoryview) -> None:
        """Fill view from offset; bytes past EOF read as zeros."""
        n = len(view)
        done = 0
        while done < n:
            try:
                got = os.preadv(self.fd, [view[done:]], offset + done)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise self._fail(f"reading {n} bytes at offset {offset}", e) from e
            if got == 0:
                fill_zero(view[done:])
                return
            done += got

    def read(self, offset: int, length: int) -> bytearray:
        buf = bytearray(length)
        self.read_into(offset, memoryview(buf))
        return buf

    def write(self, offset: int, data) -> None:
        view = memoryview(data).cast("B")
        n = len(view)
        done = 0
        while done < n:
            try:
                put = os.pwritev(self.fd, [view[done:]], offset + done)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise self._fail(f"writing {n} bytes at offset {offset}", e) from e
            if put == 0:
                raise ImageFormatError(f"{self.path}: host write at offset {offset + done} made no progress")
            done += put
            if offset + done > self.known_size:
                self.known_size = offset + done

    def write_zeroes(self, offset: int, length: int, unmap: bool = True) -> None:
        """Make [offset, offset+length) read as zeros: a hole (if unmap), an
        allocated zero range, or plain written zeros, whichever works first."""
        if length <= 0:
            return
        modes = [FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE]
        if unmap:
            modes.insert(0, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)
        for mode in modes:
            if self._fallocate(mode, offset, length):
                # KEEP_SIZE never extends; zeros past EOF are implicit but an
                # extension must still be visible in the size.
                if offset + length > self.size():
                    self.truncate(offset + length)
                return
        pos = offset
        end = offset + length
        while pos < end:
            k = min(end - pos, len(_ZERO_CHUNK))
            self.write(pos, _ZERO_CHUNK[:k])
            pos += k

    def punch_hole(self, offset: int, length: int) -> bool:
        """Give [offset, offset+length) back to the host file system if it can; True if done."""
        if length <= 0:
            return True
        return self._fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)

    def _fallocate(self, mode: int, offset: int, length: int) -> bool:
        if _fallocate is None:
            return False
        if _fallocate(self.fd, mode, offset, length) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
            return False
        raise self._fail(f"fallocate({mode:#x}) of {length} bytes at offset {offset}",
                         OSError(err, os.strerror(err)))

    def seek_data(self, offset: int) -> int:
        """Next offset >= offset holding data (SEEK_DATA); file size if none; offset if unsupported."""
        try:
            return os.lseek(self.fd, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return max(offset, self.size())
            return offset

    def seek_hole(self, offset: int) -> int:
        try:
            return os.lseek(self.fd, offset, os.SEEK_HOLE)
        except OSError:
            return max(offset, self.size())

    # -- durability -----------------------------------------------------------
    def sync(self) -> None:
        """fdatasync (per cache mode); once it failed, it keeps failing."""
        if self._sync_error is not None:
            raise ImageFormatError(self._sync_error)
        if self.cache == "unsafe" or self.readonly:
            return
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            err = self._fail("flushing to stable storage (fdatasync)", e)
            self._sync_error = (f"{err}; an earlier flush of {self.path} failed, so data written "
                                "since then may be lost: every later flush fails too; stop the VM "
                                "and check the disk")
            raise err from e

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError as e:
                raise self._fail("closing", e) from e
