"""Unpack Debian binary packages (.deb) without dpkg.

deb(5): a .deb is an ``ar`` archive holding ``debian-binary``,
``control.tar.*`` and ``data.tar.*``; the data tarball (compressed with xz,
zstd, gzip or nothing) holds the files relative to ``/``, as ``./usr/...``.
ar format: the magic ``!<arch>\\n``, then per member a 60-byte header
(name 16, mtime 12, uid 6, gid 6, mode 8, size 10, ``\\x60\\n``) and the data
padded to an even length.

Extraction is for untrusted input: members with absolute paths or ``..``
components are refused, nothing is ever written through a symbolic link that
leads out of the target directory, and device nodes, FIFOs and set-id bits
are dropped.
"""

from __future__ import annotations

import gzip
import io
import logging
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from .errors import ImageError

log = logging.getLogger(__name__)

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60


def ar_members(f) -> Iterator[tuple[str, int, int]]:
    """Yield ``(name, data offset, size)`` for each member of an open ar file."""
    f.seek(0)
    if f.read(len(AR_MAGIC)) != AR_MAGIC:
        raise ImageError("not a .deb (no ar magic): the download is damaged; pull again with --force")
    offset = len(AR_MAGIC)
    while True:
        f.seek(offset)
        header = f.read(AR_HEADER)
        if not header:
            return
        if len(header) != AR_HEADER or header[58:60] != b"`\n":
            raise ImageError(f"truncated or corrupt ar header at byte {offset}: "
                             "the .deb is damaged; pull again with --force")
        name = header[0:16].decode("ascii", "replace").rstrip().rstrip("/")  # GNU ar ends names with /
        size = int(header[48:58].decode("ascii").strip() or 0)
        yield name, offset + AR_HEADER, size
        offset += AR_HEADER + size + (size & 1)


class _Slice(io.RawIOBase):
    """A read-only view of ``size`` bytes at ``offset`` of an open file."""

    def __init__(self, f, offset: int, size: int):
        self.f, self.pos, self.end = f, offset, offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        self.f.seek(self.pos)
        n = self.f.readinto(memoryview(buf)[: max(0, self.end - self.pos)])
        self.pos += n
        return n


@contextmanager
def open_data_tar(deb: Path) -> Iterator[tarfile.TarFile]:
    """Open a .deb's ``data.tar.*`` as a streaming (forward-only) TarFile."""
    with open(deb, "rb") as f:
        member = next(((n, o, s) for n, o, s in ar_members(f) if n.startswith("data.tar")), None)
        if member is None:
            raise ImageError(f"{deb.name} has no data.tar member: not a binary package")
        name, offset, size = member
        raw = io.BufferedReader(_Slice(f, offset, size), 1 << 20)
        with _decompressed(name, raw, deb) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                yield tar


@contextmanager
def _decompressed(name: str, raw, deb: Path):
    suffix = name.removeprefix("data.tar")
    if suffix == ".xz":
        yield lzma.LZMAFile(raw)
    elif suffix == ".gz":
        yield gzip.GzipFile(fileobj=raw)
    elif suffix == "":
        yield raw
    elif suffix == ".zst":
        with _zstd_reader(raw, deb) as stream:
            yield stream
    else:
        raise ImageError(f"{deb.name}: unsupported {name}; vmkit reads xz, zstd and gzip")


@contextmanager
def _zstd_reader(raw, deb: Path):
    try:
        import zstandard
    except ImportError:
        zstandard = None
    if zstandard is not None:
        yield zstandard.ZstdDecompressor().stream_reader(raw)
        return
    zstd = shutil.which("zstd")
    if zstd is None:
        raise ImageError(f"{deb.name} is zstd-compressed: pip install zstandard "
                         "or apt-get install zstd")
    proc = subprocess.Popen([zstd, "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def feed():  # a thread, so that neither pipe can fill up and block the other
        try:
            shutil.copyfileobj(raw, proc.stdin)
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield proc.stdout
    finally:
        proc.stdout.read()  # drain so the feeder can finish
        feeder.join()
        if proc.wait() != 0:
            raise ImageError(f"zstd could not decompress {deb.name}: the .deb is damaged")


def extract_deb(deb: Path, dest: Path, include: tuple[str, ...] = ()) -> list[str]:
    """Extract a .deb's files into ``dest``; return their paths relative to it.

    ``include``: path prefixes such as ``("boot/", "usr/lib/modules/")``;
    empty means everything.
    """
    try:
        with open_data_tar(deb) as tar:
            return extract_tar(tar, dest, include)
    except (tarfile.TarError, EOFError, lzma.LZMAError, gzip.BadGzipFile, zlib.error) as e:
        raise ImageError(f"{deb.name}: corrupt data archive ({e}); pull again with --force") from e
    except OSError as e:
        raise ImageError(f"cannot extract {deb.name} into {dest}: {e}") from e


def member_path(name: str) -> PurePosixPath:
    """The safe relative path of a tar member, or ``ImageError``."""
    path = PurePosixPath(name)
    if path.is_absolute():
        raise ImageError(f"refusing tar member with an absolute path: {name!r}")
    if ".." in path.parts:
        raise ImageError(f"refusing tar member with a '..' component: {name!r}")
    return PurePosixPath(*[p for p in path.parts if p != "."]) if path.parts else path


def extract_tar(tar: tarfile.TarFile, dest: Path, include: tuple[str, ...] = ()) -> list[str]:
    """Safely extract ``tar`` (a stream is fine) into ``dest``; see ``extract_deb``."""
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    done = []
    for m in tar:
        rel = member_path(m.name)
        if not rel.parts:
            continue  # "./" itself
        name = str(rel)
        if include and not any(name == p.rstrip("/") or name.startswith(p) for p in include):
            continue
        target = os.path.join(root, name)
        parent = os.path.realpath(os.path.dirname(target))
        if not _inside(root, parent):
            raise ImageError(f"refusing {m.name!r}: a symbolic link in its path leads out of {dest}")
        os.makedirs(parent, exist_ok=True)
        target = os.path.join(parent, rel.name)
        if m.isdir():
            if os.path.islink(target):
                raise ImageError(f"refusing directory {m.name!r} over a symbolic link")
            os.makedirs(target, exist_ok=True)
            os.chmod(target, (m.mode & 0o777) | 0o700)
        elif m.isreg():
            _remove(target)
            src = tar.extractfile(m)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.chmod(target, m.mode & 0o777)  # drop setuid/setgid/sticky
        elif m.issym():
            _remove(target)
            os.symlink(m.linkname, target)
        elif m.islnk():
            source = os.path.realpath(os.path.join(root, str(member_path(m.linkname))))
            if not _inside(root, source) or not os.path.isfile(source):
                raise ImageError(f"refusing hard link {m.name!r} -> {m.linkname!r}: "
                                 "its target is not a file extracted here")
            _remove(target)
            shutil.copyfile(source, target)
            os.chmod(target, m.mode & 0o777)
        else:
            log.debug("skipping special file %s in package", name)
            continue
        done.append(name)
    return done


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _remove(target: str) -> None:
    """Clear the way for a new file; never follow or descend a link."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"refusing to replace directory {target} with a file")
    os.unlink(target)
