"""Initramfs archives: cpio "newc" (SVR4 with no CRC), optionally gzip'd.

Linux Documentation/driver-api/early-userspace/buffer-format.rst: each entry
is a 110-byte ASCII header, ``070701`` then 13 eight-digit hex fields (ino,
mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
rdevminor, namesize including the NUL, check = 0), the NUL-terminated name
padded to a multiple of 4, then the data padded to a multiple of 4. A symlink's
data is its target. The archive ends with an entry named ``TRAILER!!!``.

Because we write the bytes ourselves, device nodes such as /dev/console
need no root privileges, and every entry is owned by root (uid/gid 0).
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
HEADER_SIZE = 110


@dataclass(frozen=True)
class Entry:
    name: str  # relative, e.g. "bin/busybox"
    mode: int  # file type and permission bits, as st_mode
    data: bytes = b""  # file contents, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node
    mtime: int = 0

    @property
    def kind(self) -> str:
        return {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
                stat.S_IFCHR: "char", stat.S_IFBLK: "block"}.get(stat.S_IFMT(self.mode), "other")


class Initramfs:
    """An initramfs under construction: add entries, then ``to_bytes``.

    Parent directories are added automatically (mode 0755) before the first
    entry inside them, as the kernel's unpacker does not create them.
    """

    def __init__(self, mtime: int = 0):
        self.mtime = mtime  # fixed by default, so the same inputs give the same bytes
        self.entries: dict[str, Entry] = {}

    def copy(self) -> "Initramfs":
        """Another archive with the same entries, to add to separately."""
        other = Initramfs(self.mtime)
        other.entries = dict(self.entries)
        return other

    def _add(self, path: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = str(PurePosixPath("/", path).relative_to("/"))
        if name == "." or ".." in PurePosixPath(name).parts:
            raise ValueError(f"bad initramfs path: {path!r}")
        parent = str(PurePosixPath(name).parent)
        if parent != "." and parent not in self.entries:
            self.add_dir(parent)
        self.entries[name] = Entry(name, mode, data, rdev, self.mtime)

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._add(path, stat.S_IFDIR | mode)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._add(path, stat.S_IFREG | mode, data)

    def add_symlink(self, path: str, target: str) -> None:
        self._add(path, stat.S_IFLNK | 0o777, target.encode())

    def add_device(self, path: str, kind: str, major: int, minor: int, mode: int = 0o600) -> None:
        """``kind`` is ``"c"`` (character) or ``"b"`` (block), as for mknod."""
        ftype = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}[kind]
        self._add(path, ftype | mode, rdev=(major, minor))

    def to_bytes(self, compress: str | None = None) -> bytes:
        """The archive; ``compress`` is ``None`` or ``"gzip"``."""
        out = bytearray()
        for ino, e in enumerate(self.entries.values(), start=1):
            out += _header(e.name, ino, e.mode, 2 if stat.S_ISDIR(e.mode) else 1,
                           e.mtime, len(e.data), e.rdev)
            out += e.data + _pad(len(e.data))
        out += _header(TRAILER, 0, 0, 1, 0, 0, (0, 0))
        if compress == "gzip":
            return gzip.compress(bytes(out), compresslevel=9, mtime=0)
        if compress is not None:
            raise ValueError(f"unsupported initramfs compression {compress!r}")
        return bytes(out)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(name: str, ino: int, mode: int, nlink: int, mtime: int, size: int,
            rdev: tuple[int, int]) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
    head = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
    return head + encoded + _pad(HEADER_SIZE + len(encoded))


def read_initramfs(data: bytes) -> list[Entry]:
    """Parse a (possibly gzip'd) newc archive back into entries, stopping at the trailer."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    entries, pos = [], 0
    while True:
        if data[pos:pos + 6] != NEWC_MAGIC:
            raise ValueError(f"no newc header at byte {pos}")
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, mtime, size, rdev, namesize = f[1], f[5], f[6], (f[9], f[10]), f[11]
        pos += HEADER_SIZE
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + (-(HEADER_SIZE + namesize) % 4)
        if name == TRAILER:
            return entries
        entries.append(Entry(name, mode, data[pos:pos + size], rdev, mtime))
        pos += size + (-size % 4)


def busybox_initramfs(source_initrd: bytes, init_script: bytes,
                      applets: tuple[str, ...] = ("sh",)) -> bytes:
    """A minimal initramfs: the busybox of `source_initrd` and `init_script` as /init.

    For tests and benchmarks that need a guest doing one precise thing
    (print a marker, power off, reboot) with nothing else running.
    """
    busybox = next((e.data for e in read_initramfs(source_initrd) if e.name == "bin/busybox"), None)
    if busybox is None:
        raise ValueError("the source initramfs has no bin/busybox")
    rd = Initramfs()
    rd.add_file("bin/busybox", busybox, 0o755)
    for applet in applets:
        rd.add_symlink(f"bin/{applet}", "busybox")
    rd.add_dir("proc")
    rd.add_device("dev/console", "c", 5, 1)
    rd.add_file("init", init_script, 0o755)
    return rd.to_bytes()
