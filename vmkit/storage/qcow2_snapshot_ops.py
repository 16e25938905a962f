"""qcow2 internal snapshots: create, apply (revert to), delete.

Spec: QEMU docs/interop/qcow2.txt, "Snapshots": "When creating a snapshot,
the L1 table should be copied and the refcount of all L2 tables and clusters
reachable from this L1 table must be increased"; "When loading a snapshot,
bit 63 of all entries in the new active L1 table and all L2 tables
referenced by it must be reconstructed from the refcount table".

Order of each operation (references are added before they are published and
dropped after they are unpublished, so a crash in between leaks clusters and
never frees a cluster that is still referenced):
- create: copy L1, +1 on the active tree, clear COPIED flags, flush; write
  the new snapshot table; switch the header (nb_snapshots + offset, one
  write); free the old table.
- apply: +1 on the snapshot tree, flush; write the new active L1; -1 on the
  old active tree; fix COPIED flags.
- delete: write the table without the entry; switch the header; -1 on the
  snapshot tree and free its L1; fix COPIED flags.
Between the refcount changes and the COPIED-flag fix-up no order is clean,
so on version 3 images each operation runs with the dirty bit set ("Dirty
bit ... make sure to scan L1/L2 tables to repair refcounts"): after a crash
the next read-write open (vmkit's or QEMU's) recounts and fixes the flags.
XXX: version 2 has no dirty bit; a crash inside a snapshot operation can
leave COPIED flags that `qemu-img check -r all` must repair.
"""

from __future__ import annotations

import struct
import time
from array import array

from .errors import ImageFormatError
from .qcow2_cache import dump_u64_table, load_u64_table
from .qcow2_header import (HDR_NB_SNAPSHOTS, HDR_SIZE, INCOMPAT_DIRTY, L1E_OFFSET_MASK, L2E_OFFSET_MASK,
                           OFLAG_COMPRESSED, OFLAG_COPIED, compressed_range, l1_entries_needed)
from .qcow2_snapshot import Snapshot, new_extra, pack_table

M_SNAP_TABLE, M_SNAP_L1 = "snapshot table", "snapshot L1 table"


def find_snapshot(img, key: str) -> Snapshot:
    """By ID first, then by name (like qemu-img)."""
    for sn in img.snapshots:
        if sn.id == key:
            return sn
    for sn in img.snapshots:
        if sn.name == key:
            return sn
    raise ImageFormatError(f"{img.path}: no snapshot with ID or name {key!r}")


def _check_writable(img) -> None:
    img._check_open()
    img._check_usable()
    if img.readonly:
        raise ImageFormatError(f"{img.path}: snapshot change refused: {img.readonly_reason}")


def _tree_refcounts(img, l1: array, delta: int, dry_run: bool = False) -> None:
    """Add delta to every L2 table and data cluster reachable from l1; with
    dry_run only check that no count would overflow (so nothing changes if one would)."""
    cb = img.cb
    if dry_run:
        seen: dict[int, int] = {}

        def _change(img, cluster: int, delta: int) -> None:
            seen[cluster] = seen.get(cluster, img.refs.get(cluster)) + delta
            if seen[cluster] > img.refs.max:
                raise ImageFormatError(
                    f"{img.path}: cluster {cluster} is shared too often for {img.h.refcount_bits}-bit "
                    "refcounts; delete snapshots or widen them (qemu-img amend -o refcount_bits=16)")
    else:
        _change = _apply_change
    for e in l1:
        off = e & L1E_OFFSET_MASK
        if not off:
            continue
        table = img.l2cache.get(off) if off in img.l2cache else _load_l2(img, off)
        entries = [x for x in table if x]
        for x in entries:
            if x & OFLAG_COMPRESSED:
                coff, length = compressed_range(x, cb)
                for c in range(coff >> cb, ((coff + length - 1) >> cb) + 1):
                    _change(img, c, delta)
            elif x & L2E_OFFSET_MASK:
                _change(img, (x & L2E_OFFSET_MASK) >> cb, delta)
        _change(img, off >> cb, delta)


def _load_l2(img, off: int) -> array:
    if off % img.cs or off >= img.file_size:
        img._corrupt(f"an L1 entry points at {off:#x}, unaligned or past the end of the file")
    return img.l2cache.get(off)


def _apply_change(img, cluster: int, delta: int) -> None:
    if delta > 0:
        img.refs.change(cluster, delta)
    else:
        img._release(cluster)


def fix_copied_flags(img) -> None:
    """Bit 63 of active L1/L2 entries = "refcount is exactly one"."""
    cb = img.cb
    for i, e in enumerate(img.l1):
        off = e & L1E_OFFSET_MASK
        if not off:
            continue
        want = OFLAG_COPIED if img.refs.get(off >> cb) == 1 else 0
        if e & OFLAG_COPIED != want:
            img.l1[i] = (e & ~OFLAG_COPIED) | want
            img._l1_dirty.add(i)
        table = img.l2cache.get(off)
        changed = False
        for j, x in enumerate(table):
            if not x or x & OFLAG_COMPRESSED or not x & L2E_OFFSET_MASK:
                continue
            want = OFLAG_COPIED if img.refs.get((x & L2E_OFFSET_MASK) >> cb) == 1 else 0
            if x & OFLAG_COPIED != want:
                table[j] = (x & ~OFLAG_COPIED) | want
                changed = True
        if changed:
            img.l2cache.mark_dirty(off, table)


def _write_table(img, snapshots: list[Snapshot]) -> None:
    """Write a new snapshot table, switch the header to it, free the old one."""
    f = img.file
    data = pack_table(snapshots)
    if len(data) > (64 << 20):
        raise ImageFormatError(f"{img.path}: the snapshot table would exceed 64 MiB")
    new_off = 0
    if snapshots:
        n = -(-len(data) // img.cs)
        c = img._alloc(n)
        new_off = c << img.cb
        f.write(new_off, data)
        img.refs.write_dirty()
        f.sync()
        for k in range(n):
            img.meta[c + k] = M_SNAP_TABLE
    old_off, old_size = img.h.snapshots_offset, img.snapshot_table_size if img.h.nb_snapshots else 0
    f.write(HDR_NB_SNAPSHOTS, struct.pack(">IQ", len(snapshots), new_off))
    f.sync()
    img.h.nb_snapshots, img.h.snapshots_offset = len(snapshots), new_off
    img.snapshots, img.snapshot_table_size = list(snapshots), len(data)
    if old_size:
        for c in range(old_off >> img.cb, ((old_off + old_size - 1) >> img.cb) + 1):
            if img.meta.get(c) == M_SNAP_TABLE:
                del img.meta[c]
            img._release(c)


class _DirtyWhile:
    """Set the dirty bit for the duration of an operation (version 3 only)."""

    def __init__(self, img) -> None:
        self.img = img
        self.set_here = False

    def __enter__(self):
        img = self.img
        if img.h.version == 3 and not img._dirty_on_disk:
            img._set_incompatible(img.h.incompatible_features | INCOMPAT_DIRTY)
            img._dirty_on_disk = self.set_here = True
        return self

    def __exit__(self, exc_type, *_):
        img = self.img
        if exc_type is None and self.set_here and not img.lazy:
            img._flush_metadata()
            img._flush_metadata()
            img._set_incompatible(img.h.incompatible_features & ~INCOMPAT_DIRTY)
            img._dirty_on_disk = False


def create_snapshot(img, name: str) -> Snapshot:
    _check_writable(img)
    with _DirtyWhile(img):
        return _create_snapshot(img, name)


def apply_snapshot(img, key: str) -> None:
    _check_writable(img)
    with _DirtyWhile(img):
        _apply_snapshot(img, key)


def delete_snapshot(img, key: str) -> None:
    _check_writable(img)
    with _DirtyWhile(img):
        _delete_snapshot(img, key)


def _create_snapshot(img, name: str) -> Snapshot:
    if not name:
        raise ImageFormatError("a snapshot needs a name")
    if any(sn.name == name for sn in img.snapshots):
        raise ImageFormatError(f"{img.path}: a snapshot named {name!r} already exists")
    img._flush_metadata()
    l1 = img.l1
    _tree_refcounts(img, l1, +1, dry_run=True)
    l1_off = 0
    if len(l1):
        n = -(-len(l1) * 8 // img.cs)
        c = img._alloc(n)
        l1_off = c << img.cb
        copy = array("Q", (e & ~OFLAG_COPIED for e in l1))
        img.file.write(l1_off, dump_u64_table(copy))
        for k in range(n):
            img.meta[c + k] = M_SNAP_L1
    _tree_refcounts(img, l1, +1)
    fix_copied_flags(img)
    img._flush_metadata()
    ids = [int(sn.id) for sn in img.snapshots if sn.id.isdigit()]
    now = time.time_ns()
    sn = Snapshot(l1_off, len(l1), str(max(ids, default=0) + 1), name, now // 10**9, now % 10**9,
                  0, 0, new_extra(0, img.h.size))
    _write_table(img, img.snapshots + [sn])
    img._flush_metadata()
    return sn


def _apply_snapshot(img, key: str) -> None:
    sn = find_snapshot(img, key)
    img._flush_metadata()
    sn_l1 = load_u64_table(img.file.read(sn.l1_table_offset, 8 * sn.l1_size)) if sn.l1_size else array("Q")
    new_size = sn.disk_size if sn.disk_size is not None else img.h.size
    needed = max(sn.l1_size, l1_entries_needed(new_size, img.cb))
    _tree_refcounts(img, sn_l1, +1, dry_run=True)
    if needed > len(img.l1):
        img._grow_l1(needed)
    _tree_refcounts(img, sn_l1, +1)
    img._flush_metadata()
    old_l1 = array("Q", img.l1)
    for i in range(len(img.l1)):
        img.l1[i] = (sn_l1[i] & ~OFLAG_COPIED) if i < len(sn_l1) else 0
    img._l1_dirty.update(range(len(img.l1)))
    img._flush_metadata()
    if new_size != img.h.size:
        img.file.write(HDR_SIZE, struct.pack(">Q", new_size))
        img.file.sync()
        img.h.size = img.virtual_size = new_size
    _tree_refcounts(img, old_l1, -1)
    fix_copied_flags(img)
    img._flush_metadata()
    img._flush_metadata()


def _delete_snapshot(img, key: str) -> None:
    sn = find_snapshot(img, key)
    img._flush_metadata()
    sn_l1 = load_u64_table(img.file.read(sn.l1_table_offset, 8 * sn.l1_size)) if sn.l1_size else array("Q")
    _write_table(img, [s for s in img.snapshots if s is not sn])
    _tree_refcounts(img, sn_l1, -1)
    if sn.l1_size:
        first = sn.l1_table_offset >> img.cb
        for c in range(first, ((sn.l1_table_offset + 8 * sn.l1_size - 1) >> img.cb) + 1):
            if img.meta.get(c) == M_SNAP_L1:
                del img.meta[c]
            img._release(c)
    fix_copied_flags(img)
    img._flush_metadata()
    img._flush_metadata()
