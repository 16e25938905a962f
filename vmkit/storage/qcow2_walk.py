"""Walk every qcow2 metadata structure and count the references to each host cluster.

Spec: QEMU docs/interop/qcow2.txt, "Cluster mapping", "Host cluster
management", "Snapshots", "Bitmaps". A cluster's refcount must equal the
number of references found here: the header cluster, the active L1 table,
each snapshot's L1 table, every L2 table once per L1 table that points at it
and every data cluster once per such L2 path, the snapshot table, the
refcount table and blocks, and bitmap directories, tables and data.

The walk also finds structural damage (reserved bits, unaligned offsets,
references past the end of the file, the COPIED flag disagreeing with the
refcount in the active tables) and reports each as a corruption, like
`qemu-img check`. Used by check.py and to rebuild the refcounts of a dirty
image. L2 tables are processed with numpy, a table at a time.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from .hostfile import HostFile
from .qcow2_header import (AUTOCLEAR_BITMAPS, COMPRESSED_SECTOR, L1E_OFFSET_MASK, L1E_RESERVED_MASK,
                           L2E_OFFSET_MASK, L2E_STD_RESERVED_MASK, OFLAG_COMPRESSED, OFLAG_COPIED,
                           OFLAG_ZERO, REFT_OFFSET_MASK, REFT_RESERVED_MASK, Header,
                           compressed_geometry)
from .qcow2_refcount import decode_refblock_np
from .qcow2_snapshot import Snapshot

MAX_MESSAGES = 200
_U64 = np.uint64


@dataclass
class Walk:
    counts: np.ndarray                      # references per host cluster (index < nclusters)
    corruptions: int = 0
    messages: list = field(default_factory=list)
    allocated_clusters: int = 0             # guest clusters with data in the active L1
    compressed_clusters: int = 0

    def corrupt(self, msg: str) -> None:
        self.corruptions += 1
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(f"ERROR {msg}")


def read_stored_refcounts(file: HostFile, h: Header, nclusters: int, walk: Walk | None = None) -> np.ndarray:
    """The refcounts the image claims, for clusters 0..nclusters-1."""
    cs, pb = h.cluster_size, h.refblock_entries
    file_size = file.size()
    stored = np.zeros(nclusters, dtype=np.uint64)
    table = np.frombuffer(bytes(file.read(h.refcount_table_offset, h.refcount_table_clusters * cs)),
                          dtype=">u8").astype(_U64)
    for ti in np.nonzero(table)[0]:
        ti = int(ti)
        e = int(table[ti])
        off = e & REFT_OFFSET_MASK
        if e & REFT_RESERVED_MASK or off % cs:
            if walk:
                walk.corrupt(f"refcount block {ti} is not cluster aligned; refcount table entry corrupted")
            continue
        if off >= file_size:
            if walk:
                walk.corrupt(f"refcount block {ti} is outside image")
            continue
        lo = ti * pb
        if lo >= nclusters:
            continue
        values = decode_refblock_np(bytes(file.read(off, cs)), h.refcount_order)
        hi = min(nclusters, lo + pb)
        stored[lo:hi] = values[:hi - lo]
    return stored


def walk_references(file: HostFile, h: Header, snapshots: list[Snapshot], snapshot_table_size: int,
                    stored: np.ndarray | None = None, count_refcount_structure: bool = True) -> Walk:
    """Count references; with stored refcounts also check the active COPIED flags.
    Without count_refcount_structure the refcount table and blocks are left out
    (a rebuild replaces them)."""
    cs, bits = h.cluster_size, h.cluster_bits
    file_size = file.size()
    nclusters = -(-file_size // cs)
    w = Walk(counts=np.zeros(nclusters, dtype=np.uint32))

    def ref_range(offset: int, length: int, what: str) -> None:
        if length <= 0:
            return
        first, last = offset >> bits, (offset + length - 1) >> bits
        if last >= nclusters:
            w.corrupt(f"{what} at {offset:#x} ({length} bytes) is past the end of the file")
            return
        w.counts[first:last + 1] += 1

    ref_range(0, cs, "header")
    walk_l1(file, h, w, h.l1_table_offset, h.l1_size, "active", stored)
    for i, sn in enumerate(snapshots):
        walk_l1(file, h, w, sn.l1_table_offset, sn.l1_size, f"snapshot {sn.id}", None)
    if h.nb_snapshots:
        ref_range(h.snapshots_offset, snapshot_table_size, "snapshot table")
    if count_refcount_structure:
        _walk_refcount_structure(file, h, w, ref_range)
    if h.has_bitmaps and h.autoclear_features & AUTOCLEAR_BITMAPS:
        _walk_bitmaps(file, h, w, ref_range)
    return w


def _walk_refcount_structure(file: HostFile, h: Header, w: Walk, ref_range) -> None:
    cs, bits = h.cluster_size, h.cluster_bits
    file_size = file.size()
    ref_range(h.refcount_table_offset, h.refcount_table_clusters * cs, "refcount table")
    table = np.frombuffer(bytes(file.read(h.refcount_table_offset, h.refcount_table_clusters * cs)),
                          dtype=">u8").astype(_U64)
    for ti in np.nonzero(table)[0]:
        e = int(table[int(ti)])
        off = e & REFT_OFFSET_MASK
        if e & REFT_RESERVED_MASK or off % cs or off >= file_size:
            continue   # reported by read_stored_refcounts
        w.counts[off >> bits] += 1


def walk_l1(file: HostFile, h: Header, w: Walk, l1_offset: int, l1_size: int, what: str,
            stored: np.ndarray | None) -> None:
    cs, bits = h.cluster_size, h.cluster_bits
    nclusters = w.counts.size
    if not l1_size:
        return
    first, last = l1_offset >> bits, (l1_offset + 8 * l1_size - 1) >> bits
    if last >= nclusters:
        w.corrupt(f"{what} L1 table at {l1_offset:#x} is past the end of the file")
        return
    w.counts[first:last + 1] += 1
    l1 = np.frombuffer(bytes(file.read(l1_offset, 8 * l1_size)), dtype=">u8").astype(_U64)
    for i in np.nonzero(l1)[0]:
        i = int(i)
        e = int(l1[i])
        off = e & L1E_OFFSET_MASK
        if e & L1E_RESERVED_MASK:
            w.corrupt(f"{what} L1 entry {i} ({e:#x}) has reserved bits set")
            continue
        if not off:
            continue
        if off % cs:
            w.corrupt(f"l2_offset={off:x}: Table is not cluster aligned; L1 entry corrupted")
            continue
        if off >= cs * nclusters:
            w.corrupt(f"{what} L2 table {i} at {off:#x} is past the end of the file")
            continue
        w.counts[off >> bits] += 1
        if stored is not None:
            rc = int(stored[off >> bits])
            if (rc == 1) != bool(e & OFLAG_COPIED):
                w.corrupt(f"OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={e:x} refcount={rc}")
        _walk_l2(file, h, w, off, what, stored, active=what == "active")


def _walk_l2(file: HostFile, h: Header, w: Walk, l2_offset: int, what: str,
             stored: np.ndarray | None, active: bool) -> None:
    cs, bits = h.cluster_size, h.cluster_bits
    nclusters = w.counts.size
    ent = np.frombuffer(bytes(file.read(l2_offset, cs)), dtype=">u8").astype(_U64)
    ent = ent[ent != 0]
    if not ent.size:
        return
    comp = (ent & _U64(OFLAG_COMPRESSED)) != 0
    std = ent[~comp]
    if std.size:
        reserved_mask = L2E_STD_RESERVED_MASK | (OFLAG_ZERO if h.version == 2 else 0)
        bad = (std & _U64(reserved_mask)) != 0
        for e in std[bad][:10]:
            w.corrupt(f"found l2 entry with reserved bits set: {int(e):#x} (L2 table at {l2_offset:#x})")
        w.corruptions += max(0, int(bad.sum()) - 10)
        std = std[~bad]
        off = std & _U64(L2E_OFFSET_MASK)
        alloc = off != 0
        std, off = std[alloc], off[alloc]
        unaligned = (off & _U64(cs - 1)) != 0
        for o in off[unaligned][:10]:
            w.corrupt(f"offset={int(o):x}: Cluster is not properly aligned; L2 entry corrupted")
        w.corruptions += max(0, int(unaligned.sum()) - 10)
        std, off = std[~unaligned], off[~unaligned]
        idx = (off >> _U64(bits)).astype(np.int64)
        past = idx >= nclusters
        for o in off[past][:10]:
            w.corrupt(f"{what} data cluster at {int(o):#x} is past the end of the file "
                      f"(L2 table at {l2_offset:#x})")
        w.corruptions += max(0, int(past.sum()) - 10)
        std, idx = std[~past], idx[~past]
        np.add.at(w.counts, idx, 1)
        if active:
            w.allocated_clusters += int(((std & _U64(OFLAG_ZERO)) == 0).sum()) if h.version == 3 \
                else int(std.size)
        if stored is not None and active and idx.size:
            rc = stored[idx]
            copied = (std & _U64(OFLAG_COPIED)) != 0
            wrong = (rc == 1) != copied
            for e, r in zip(std[wrong][:10], rc[wrong][:10]):
                w.corrupt(f"OFLAG_COPIED data cluster: l2_entry={int(e):x} refcount={int(r)}")
            w.corruptions += max(0, int(wrong.sum()) - 10)
    ce = ent[comp]
    if ce.size:
        if active:
            w.allocated_clusters += int(ce.size)
            w.compressed_clusters += int(ce.size)
        copied = (ce & _U64(OFLAG_COPIED)) != 0
        for e in ce[copied][:10]:
            w.corrupt(f"cluster {int(e) >> bits}: copied flag must never be set for compressed clusters")
        w.corruptions += max(0, int(copied.sum()) - 10)
        mask, shift = compressed_geometry(bits)
        coff = ce & _U64(mask)
        nsect = ((ce >> _U64(shift)) & _U64((1 << (bits - 8)) - 1)) + _U64(1)
        start = coff & ~_U64(COMPRESSED_SECTOR - 1)
        end = start + nsect * _U64(COMPRESSED_SECTOR)
        first = (start >> _U64(bits)).astype(np.int64)
        last = ((end - _U64(1)) >> _U64(bits)).astype(np.int64)
        past = first >= nclusters
        for o in coff[past][:10]:
            w.corrupt(f"{what} compressed cluster at {int(o):#x} is past the end of the file")
        w.corruptions += max(0, int(past.sum()) - 10)
        first, last = first[~past], np.minimum(last[~past], nclusters - 1)
        for k in range(4):   # a compressed cluster spans at most 3 host clusters
            sel = first + k <= last
            if not sel.any():
                break
            np.add.at(w.counts, first[sel] + k, 1)


def _walk_bitmaps(file: HostFile, h: Header, w: Walk, ref_range) -> None:
    """"Bitmaps extension" / "Bitmap directory" / "Bitmap table"."""
    cs = h.cluster_size
    if len(h.bitmaps_ext) < 24:
        w.corrupt("bitmaps extension is shorter than 24 bytes")
        return
    nb, _, dir_size, dir_off = struct.unpack_from(">IIQQ", h.bitmaps_ext, 0)
    file_size = file.size()
    if dir_off % cs or dir_off + dir_size > file_size or dir_size > (64 << 20):
        w.corrupt(f"bitmap directory at {dir_off:#x} ({dir_size} bytes) is invalid")
        return
    ref_range(dir_off, dir_size, "bitmap directory")
    d = bytes(file.read(dir_off, dir_size))
    pos = 0
    for i in range(nb):
        if pos + 24 > len(d):
            w.corrupt(f"bitmap directory entry {i} runs past the directory")
            return
        t_off, t_size, _flags, _type, _gran, name_size, extra_size = struct.unpack_from(">QIIBBHI", d, pos)
        pos += 24 + extra_size + name_size
        pos += -pos % 8
        if t_off % cs or t_off + 8 * t_size > file_size:
            w.corrupt(f"bitmap table {i} at {t_off:#x} is invalid")
            continue
        ref_range(t_off, 8 * t_size, "bitmap table")
        table = np.frombuffer(bytes(file.read(t_off, 8 * t_size)), dtype=">u8").astype(_U64)
        for e in table[(table & _U64(L1E_OFFSET_MASK)) != 0]:
            ref_range(int(e) & L1E_OFFSET_MASK, cs, "bitmap data")
