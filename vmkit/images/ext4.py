"""ext4 file system images made from a file tree, with e2fsprogs.

``make_ext4`` writes the entries of an ``Initramfs`` (the same in-memory tree
the initramfs is built from) into a scratch directory and runs
``mkfs.ext4 -d`` on a sparse file of the wanted size; mke2fs copies the
directory into the new file system without root privileges or a loop
device. What a directory cannot carry is fixed afterwards with one
``debugfs -w`` batch: every inode is made root's (mke2fs copies the building
user's uid/gid) and device nodes are created with ``mknod``.

debugfs also sets every inode's mode and times (``entry.mtime``; the ctime
mke2fs copied is the build's). With a fixed creation time
(E2FSPROGS_FAKE_TIME) and a UUID and directory-hash seed derived from the
contents, the result depends only on the entries: a rebuild from the same
packages yields the same bytes, and disks layered on it stay valid.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

from .errors import ImageError
from .initramfs import Entry

MKFS = "mkfs.ext4"
DEBUGFS = "debugfs"
# mke2fs stamps the superblock with "now"; e2fsprogs reads this variable
# instead (1.47.1 and later also honour SOURCE_DATE_EPOCH).
FAKE_TIME = 1
INSTALL_HINT = "install e2fsprogs (apt-get install e2fsprogs)"


def find_tool(name: str) -> str:
    """The path of an e2fsprogs program; they live in /sbin, often not on a user's PATH."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise ImageError(f"{name} is needed to build the root disk and was not found: {INSTALL_HINT}")
    return path


def write_tree(entries: list[Entry], root: Path) -> None:
    """Create the files, directories and symlinks under ``root``.

    Device nodes, modes, owners and times are left to the debugfs pass: it
    sets them all, ctime included, which no host call can.
    """
    for e in entries:
        path = root / e.name
        match e.kind:
            case "dir":
                path.mkdir(exist_ok=True)
            case "file":
                path.write_bytes(e.data)
            case "symlink":
                path.symlink_to(e.data.decode())
            case "char" | "block":
                pass
            case _:
                raise ImageError(f"cannot put {e.name!r} (mode {e.mode:o}) into an ext4 image")


def content_uuid(entries: list[Entry]) -> str:
    """A UUID that changes whenever the tree does, and only then."""
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.name}\0{e.mode:o}\0{e.rdev}\0{e.mtime}\0{len(e.data)}\0".encode())
        h.update(e.data)
    return str(uuid.UUID(bytes=h.digest()[:16], version=4))


def make_ext4(entries: list[Entry], image: Path, size: int, label: str) -> None:
    """Write an ext4 file system holding ``entries`` to ``image`` (a sparse raw file of ``size`` bytes)."""
    mkfs, debugfs = find_tool(MKFS), find_tool(DEBUGFS)
    fs_uuid = content_uuid(entries)
    with tempfile.TemporaryDirectory(prefix="ext4-tree.", dir=image.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        write_tree(entries, root)
        with open(image, "wb") as f:
            f.truncate(size)
        # Inode tables and the journal are zeroed here, not lazily by the guest
        # kernel: that would write (and, emulated, spend time on) megabytes of
        # zeros into every VM's disk. Zeros cost nothing in the qcow2 copy.
        _run([mkfs, "-q", "-F", "-t", "ext4", "-L", label, "-U", fs_uuid,
              "-E", f"hash_seed={fs_uuid},lazy_itable_init=0,lazy_journal_init=0,nodiscard",
              "-d", str(root), str(image)], "mkfs.ext4")
        commands = _inode_commands("", stat.S_IFDIR | 0o755, 0)
        for e in entries:
            if e.kind in ("char", "block"):
                # mknod makes its name in debugfs's current directory.
                parent, _, base = e.name.rpartition("/")
                commands += [f"cd /{parent}", f"mknod {base} {e.kind[0]} {e.rdev[0]} {e.rdev[1]}", "cd /"]
            commands += _inode_commands(e.name, e.mode, e.mtime)
        script = Path(tmp) / "debugfs.cmds"
        script.write_text("\n".join(commands) + "\n")
        out = _run([debugfs, "-w", "-f", str(script), str(image)], "debugfs")
        # debugfs reports a failed command on stderr and still exits 0.
        errors = [line for line in out.splitlines() if line and not line.startswith("debugfs ")]
        if errors:
            raise ImageError(f"debugfs could not finish the root file system: {errors[:3]}")


def _inode_commands(name: str, mode: int, mtime: int) -> list[str]:
    """debugfs commands giving /name root's ownership, its mode and fixed times."""
    return [f"set_inode_field /{name} {field} {value}" for field, value in (
        ("mode", f"0{mode:o}"), ("uid", 0), ("gid", 0),
        ("atime", mtime), ("ctime", mtime), ("mtime", mtime), ("crtime", mtime))]


def _run(argv: list[str], what: str) -> str:
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(FAKE_TIME), SOURCE_DATE_EPOCH=str(FAKE_TIME))
    try:
        run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    except OSError as e:
        raise ImageError(f"cannot run {what}: {e}; {INSTALL_HINT}") from e
    if run.returncode != 0:
        raise ImageError(f"{what} failed (exit status {run.returncode}): {run.stderr.strip()}")
    return run.stderr
