"""qcow2 images: read, write, discard, resize; snapshots live in qcow2_snapshot_ops.py.

Spec: QEMU docs/interop/qcow2.txt. Versions 3 and 2 ("Header"), zlib
compressed clusters read ("Compressed Clusters Descriptor"), zero clusters
("Standard Cluster Descriptor" bit 0), backing files, internal snapshots,
lazy refcounts with the dirty bit, and the corrupt bit. Not supported (open
refused with the reason): encryption, external data files, extended L2
entries, zstd; images with persistent bitmaps open read-only.

Where a guest cluster is (``Cluster mapping``)::

    guest offset -> L1[index >> (cluster_bits - 3)] -> L2 table (one cluster)
                 -> L2[index & (cluster_size/8 - 1)] -> host cluster | zero | compressed | unallocated

Write order (what makes a host crash lose nothing flushed and corrupt
nothing, leaks aside):
1. allocate: the refcount is set in the cached refcount block;
2. the data (with the copy-on-write fill from the backing file, the old
   cluster or the compressed cluster) is written to the new cluster;
3. L2 entries are written only after the refcount blocks and the data were
   written and synced (the L2 cache's before_write hook);
4. L1 entries and header fields last, after another sync.
Freeing runs the other way: the entry that drops a reference is made durable
first, and only then is the refcount decremented (`_pending_frees`).
With lazy refcounts (compatible bit 0), step 1 is not made durable before
step 3; instead the dirty bit is set durably before the first allocation and
the refcounts are rebuilt from the tables (and the COPIED flags fixed) when a
dirty image is opened read-write. Snapshot operations use the dirty bit the
same way (qcow2_snapshot_ops.py).

A table entry that points into metadata, past the end of the file or with
reserved bits set makes the request fail with an I/O error, sets the corrupt
bit and turns the image read-only; no write lands on metadata, since data is
only written to clusters that are neither known metadata nor shared.
"""

from __future__ import annotations

import struct
import zlib
from array import array

from .backing import check_backing_format, check_chain, file_identity, resolve_backing
from .errors import ImageFormatError
from .hostfile import HostFile, fill_zero
from .image import SECTOR, BlockImage
from .qcow2_cache import TableCache, dump_u64_table, load_u64_table
from .qcow2_header import (HDR_AUTOCLEAR, HDR_INCOMPATIBLE, HDR_SIZE, INCOMPAT_CORRUPT,
                           INCOMPAT_DIRTY, L1E_OFFSET_MASK, L1E_RESERVED_MASK, L2E_OFFSET_MASK,
                           L2E_STD_RESERVED_MASK, MAX_CLUSTER_BITS, MAX_L1_BYTES, OFLAG_COMPRESSED, OFLAG_COPIED,
                           OFLAG_ZERO, V3_MIN_HEADER_LENGTH, compressed_range, l1_entries_needed,
                           parse_header)
from .qcow2_refcount import Refcounts, rebuild
from .qcow2_snapshot import Snapshot, read_table
from .qcow2_walk import walk_references

L2_CACHE_BYTES = 4 << 20
REFCOUNT_CACHE_BYTES = 1 << 20
MAX_PENDING_FREES = 65536

# Kinds of guest cluster (what an L2 entry says).
UNALLOCATED, ZERO, DATA, COMPRESSED = range(4)

# Names for the metadata map (host cluster -> what it holds).
M_HEADER, M_L1, M_L2 = "header", "active L1 table", "L2 table"
M_SNAP_TABLE, M_SNAP_L1 = "snapshot table", "snapshot L1 table"


class Qcow2Image(BlockImage):
    format = "qcow2"

    def __init__(self, path: str, readonly: bool = False, cache: str = "writeback",
                 open_backing: bool = True, lock: str | None = "default",
                 _chain: tuple = (), _names: tuple = ()) -> None:
        """open_backing=False leaves the backing file closed (unallocated clusters
        then read as zeros): for inspecting an image, never for running a VM."""
        self.closed = True
        self.path = path
        self.readonly = readonly
        self.backing = None
        self.readonly_reason = "the image is open read-only"
        self.file = HostFile(path, readonly=readonly, cache=cache, lock=lock)
        try:
            self._open(path, readonly, open_backing, _chain, _names)
        except BaseException:
            if self.backing is not None:
                self.backing.close()
            self.file.close()
            raise
        super().__init__(path, self.h.size, readonly, cache)

    # ------------------------------------------------------------------ opening
    def _open(self, path: str, readonly: bool, open_backing: bool, chain: tuple, names: tuple) -> None:
        f = self.file
        head = f.read(0, min(f.known_size, V3_MIN_HEADER_LENGTH))
        cluster_bits = struct.unpack_from(">I", head, 20)[0] if len(head) >= 24 else 0
        if 9 <= cluster_bits <= MAX_CLUSTER_BITS:
            head = f.read(0, min(f.known_size, 1 << cluster_bits))
        h = self.h = parse_header(path, head, self.file_size)
        self.cs, self.cb = h.cluster_size, h.cluster_bits
        self.l2_bits = self.cb - 3
        self.l2_mask = (1 << self.l2_bits) - 1
        self._broken: str | None = None
        self._pending_frees: list[int] = []
        self._data_since_sync = False
        self._zcache: tuple[int, bytes] | None = None
        self._l1_dirty: set[int] = set()
        if not readonly:
            if h.corrupt:
                raise ImageFormatError(
                    f"{path}: the image is marked corrupt; it can only be opened read-only. Copy the "
                    "data out with 'vmkit disk convert', or repair it with 'qemu-img check -r all'")
            if h.has_bitmaps:
                raise ImageFormatError(
                    f"{path}: the image has persistent dirty bitmaps, which vmkit does not keep up to "
                    "date; open it read-only, or remove them with 'qemu-img bitmap --remove'")
        # Snapshots and the tables of the mapping ("Snapshots", "Cluster mapping").
        self.snapshots: list[Snapshot] = []
        self.snapshot_table_size = 0
        if h.nb_snapshots:
            self.snapshots, self.snapshot_table_size = read_table(
                path, f, h.snapshots_offset, h.nb_snapshots, self.cs, self.file_size)
        self.l1 = load_u64_table(f.read(h.l1_table_offset, 8 * h.l1_size)) if h.l1_size else array("Q")
        self.meta: dict[int, str] = {0: M_HEADER}
        self._register(h.l1_table_offset, 8 * h.l1_size, M_L1)
        if h.nb_snapshots:
            self._register(h.snapshots_offset, self.snapshot_table_size, M_SNAP_TABLE)
        self.refs = self._make_refcounts()
        if not readonly:
            problems = self.refs.problems(self.file_size)
            if problems:
                raise ImageFormatError(f"{path}: the refcount structure is damaged ({problems[0]}); "
                                       "open it read-only or repair it with 'qemu-img check -r all'")
        self._register_l2_tables(self.l1)
        for sn in self.snapshots:
            self._register(sn.l1_table_offset, 8 * sn.l1_size, M_SNAP_L1)
            self._register_l2_tables(load_u64_table(f.read(sn.l1_table_offset, 8 * sn.l1_size)))
        self.l2cache = TableCache(f, self.cs, L2_CACHE_BYTES // self.cs, before_write=self._before_l2_write)
        self.lazy = h.version == 3 and h.lazy_refcounts and not readonly
        self._dirty_on_disk = h.dirty
        # The backing chain ("Header": backing_file_offset; "Header extensions": format).
        if h.backing_file and open_backing:
            bpath = resolve_backing(path, h.backing_file)
            fmt = check_backing_format(path, h.backing_file, h.backing_format)
            me = file_identity(path)
            check_chain(path, bpath, chain + (me,), names + (path,))
            # Shared locks: nobody may open a backing file for writing under us.
            if fmt == "raw":
                from .raw import RawImage
                self.backing = RawImage(bpath, readonly=True, lock="shared")
            else:
                self.backing = Qcow2Image(bpath, readonly=True, lock="shared", _chain=chain + (me,),
                                          _names=names + (path,))
        if not readonly:
            if h.dirty:
                self._rebuild_refcounts()
            if h.autoclear_features:
                # "An implementation may only write to an image with unknown
                # auto-clear features if it clears the respective bits first."
                h.autoclear_features = 0
                f.write(HDR_AUTOCLEAR, struct.pack(">Q", 0))
                f.sync()

    def _make_refcounts(self) -> Refcounts:
        refs = Refcounts(self.file, self.h, max(8, REFCOUNT_CACHE_BYTES // self.cs), self.meta, self._corrupt)
        refs.register_metadata()
        return refs

    def _register(self, offset: int, length: int, kind: str) -> None:
        if length <= 0:
            return
        for c in range(offset >> self.cb, ((offset + length - 1) >> self.cb) + 1):
            self.meta.setdefault(c, kind)

    def _register_l2_tables(self, l1: array) -> None:
        for e in l1:
            off = e & L1E_OFFSET_MASK
            if off and not e & L1E_RESERVED_MASK and not off % self.cs:
                self.meta.setdefault(off >> self.cb, M_L2)

    def _rebuild_refcounts(self) -> None:
        """The image was not closed cleanly with lazy refcounts ("Dirty bit"): recount."""
        w = walk_references(self.file, self.h, self.snapshots, self.snapshot_table_size,
                            count_refcount_structure=False)
        if w.corruptions:
            raise ImageFormatError(
                f"{self.path}: the image was not closed cleanly and its tables are damaged "
                f"({w.messages[0] if w.messages else 'see vmkit disk check'}); repair it with "
                "'qemu-img check -r all'")
        rebuild(self.file, self.h, w.counts)
        for c in [c for c, k in self.meta.items() if k in ("refcount table", "refcount block")]:
            del self.meta[c]
        self.refs = self._make_refcounts()
        # A snapshot operation may have stopped between refcounts and flags.
        from .qcow2_snapshot_ops import fix_copied_flags
        fix_copied_flags(self)
        self._flush_metadata()
        self._set_incompatible(self.h.incompatible_features & ~INCOMPAT_DIRTY)
        self._dirty_on_disk = False

    # ------------------------------------------------------------------ helpers
    @property
    def file_size(self) -> int:
        return self.file.known_size

    def _set_incompatible(self, value: int) -> None:
        self.h.incompatible_features = value
        self.file.write(HDR_INCOMPATIBLE, struct.pack(">Q", value))
        self.file.sync()

    def _corrupt(self, msg: str) -> None:
        """Mark the image corrupt ("Corrupt bit"), make it read-only and fail the request."""
        full = (f"{self.path}: {msg}; the image is corrupt and now read-only. Copy the data out "
                "with 'vmkit disk convert' or repair it with 'qemu-img check -r all'")
        if not self.readonly and self._broken is None and self.h.version == 3:
            try:
                self._set_incompatible(self.h.incompatible_features | INCOMPAT_CORRUPT)
            except ImageFormatError:
                pass
        self._broken = full
        self.readonly = True
        self.readonly_reason = "the image is corrupt"
        raise ImageFormatError(full)

    def _check_usable(self) -> None:
        if self._broken:
            raise ImageFormatError(self._broken)

    def _alloc(self, n: int = 1) -> int:
        """Reserve n contiguous host clusters; with lazy refcounts mark the image dirty first."""
        if self.lazy and not self._dirty_on_disk:
            self._set_incompatible(self.h.incompatible_features | INCOMPAT_DIRTY)
            self._dirty_on_disk = True
        return self.refs.alloc(n)

    def _free_later(self, cluster: int) -> None:
        """Drop one reference once the table change that removed it is durable."""
        self._pending_frees.append(cluster)
        if len(self._pending_frees) > MAX_PENDING_FREES:
            self._flush_metadata()

    def _release(self, cluster: int) -> None:
        """Drop one reference now (the referencing structure is already gone on disk)."""
        if self.refs.change(cluster, -1) == 0:
            kind = self.meta.pop(cluster, None)
            off = cluster << self.cb
            if kind == M_L2:
                self.l2cache.forget(off)
            if off < self.file_size:
                self.file.punch_hole(off, self.cs)

    def _release_compressed(self, entry: int) -> None:
        off, length = compressed_range(entry, self.cb)
        for c in range(off >> self.cb, ((off + length - 1) >> self.cb) + 1):
            self._free_later(c)

    # ------------------------------------------------------------------ mapping
    def _l2_table(self, l1i: int) -> tuple[int, array | None]:
        """(offset, table) of the L2 table for L1 index l1i, or (0, None) if unallocated."""
        e = self.l1[l1i]
        if not e:
            return 0, None
        if e & L1E_RESERVED_MASK:
            self._corrupt(f"L1 entry {l1i} ({e:#x}) has reserved bits set")
        off = e & L1E_OFFSET_MASK
        if not off:
            return 0, None
        if off in self.l2cache:
            return off, self.l2cache.get(off)
        if off % self.cs:
            self._corrupt(f"L1 entry {l1i} points at {off:#x}, which is not cluster aligned")
        kind = self.meta.get(off >> self.cb)
        if kind not in (None, M_L2):
            self._corrupt(f"L1 entry {l1i} points into the {kind} at {off:#x}")
        if off >= self.file_size:
            self._corrupt(f"L1 entry {l1i} points past the end of the file ({off:#x})")
        return off, self.l2cache.get(off)

    def _classify(self, entry: int) -> tuple[int, int]:
        """(kind, host offset) of an L2 entry, after checking it ("Cluster mapping")."""
        if not entry:
            return UNALLOCATED, 0
        if entry & OFLAG_COMPRESSED:
            off, _ = compressed_range(entry, self.cb)
            if off >= self.file_size:
                self._corrupt(f"compressed cluster at {off:#x} is past the end of the file")
            return COMPRESSED, 0
        reserved = L2E_STD_RESERVED_MASK | (OFLAG_ZERO if self.h.version == 2 else 0)
        if entry & reserved:
            self._corrupt(f"L2 entry {entry:#x} has reserved bits set")
        off = entry & L2E_OFFSET_MASK
        if off % self.cs:
            self._corrupt(f"L2 entry {entry:#x} points at an unaligned cluster")
        if off:
            kind = self.meta.get(off >> self.cb)
            if kind is not None:
                self._corrupt(f"L2 entry {entry:#x} points into the {kind}")
            if off >= self.file_size:
                self._corrupt(f"L2 entry {entry:#x} points past the end of the file")
        if entry & OFLAG_ZERO:
            return ZERO, off
        return (DATA, off) if off else (UNALLOCATED, 0)

    def _extents(self, offset: int, length: int):
        """Yield (kind, host offset or L2 entry, guest offset, length) runs covering the range;
        DATA runs are host-contiguous, a COMPRESSED run is one cluster."""
        cs, cb = self.cs, self.cb
        pos, end = offset, offset + length
        while pos < end:
            gci = pos >> cb
            l1i, l2i = gci >> self.l2_bits, gci & self.l2_mask
            _, table = self._l2_table(l1i)
            if table is None:
                n = min(((l1i + 1) << (self.l2_bits + cb)) - pos, end - pos)
                yield UNALLOCATED, 0, pos, n
                pos += n
                continue
            entry = table[l2i]
            kind, host = self._classify(entry)
            start = pos
            pos = min((gci + 1) << cb, end)
            if kind == COMPRESSED:
                yield kind, entry, start, pos - start
                continue
            hstart = host + (start & (cs - 1)) if kind == DATA else host
            while pos < end and l2i + 1 <= self.l2_mask:
                nk, nh = self._classify(table[l2i + 1])
                if nk != kind or (kind == DATA and nh != host + cs):
                    break
                l2i += 1
                host = nh
                pos = min(pos + cs, end)
            yield kind, hstart, start, pos - start

    # ------------------------------------------------------------------ reading
    def _read(self, offset: int, view: memoryview) -> None:
        for kind, where, pos, n in self._extents(offset, len(view)):
            part = view[pos - offset:pos - offset + n]
            if kind == DATA:
                self.file.read_into(where, part)
            elif kind == UNALLOCATED and self.backing is not None:
                self._read_backing(pos, part)
            elif kind == COMPRESSED:
                data = self._decompress(where)
                inc = pos & (self.cs - 1)
                part[:] = data[inc:inc + n]
            else:
                fill_zero(part)

    def _read_backing(self, pos: int, part: memoryview) -> None:
        # "If there is no backing file or the backing file is smaller than the
        # image, they shall read zeros for all parts that are not covered."
        size = self.backing.virtual_size
        n = max(0, min(len(part), size - pos))
        if n:
            self.backing.read_into(pos, part[:n])
        if n < len(part):
            fill_zero(part[n:])

    def _decompress(self, entry: int) -> bytes:
        """One compressed cluster: raw deflate, output capped at one cluster."""
        if self._zcache and self._zcache[0] == entry:
            return self._zcache[1]
        off, length = compressed_range(entry, self.cb)
        # The last sector may be cut short by the end of the file.
        length = min(length, self.file_size - off)
        raw = bytes(self.file.read(off, length))
        try:
            out = zlib.decompressobj(-15).decompress(raw, self.cs)
        except zlib.error as e:
            raise ImageFormatError(f"{self.path}: compressed cluster at {off:#x} is damaged ({e})") from e
        if len(out) != self.cs:
            raise ImageFormatError(f"{self.path}: compressed cluster at {off:#x} decompresses to "
                                   f"{len(out)} bytes instead of {self.cs}")
        self._zcache = (entry, out)
        return out

    # ------------------------------------------------------------------ writing
    def _write(self, offset: int, view: memoryview) -> None:
        # XXX: an allocating write takes one cluster (and one pwrite) at a time;
        # reserving a run of clusters per request would cut syscalls for big
        # sequential writes (about 1.6 GB/s here already).
        self._check_usable()
        cs, cb = self.cs, self.cb
        pos, end = offset, offset + len(view)
        while pos < end:
            gci = pos >> cb
            l1i, l2i = gci >> self.l2_bits, gci & self.l2_mask
            _, table = self._l2_table(l1i)
            entry = table[l2i] if table is not None else 0
            kind, host = self._classify(entry)
            inc = pos & (cs - 1)
            n = min(cs - inc, end - pos)
            if kind == DATA and self.refs.get(host >> cb) == 1:
                # In place; extend over following clusters that are also ours and contiguous.
                first_host, run = host, n
                while pos + run < end and l2i + 1 <= self.l2_mask:
                    nk, nh = self._classify(table[l2i + 1])
                    if nk != DATA or nh != host + cs or self.refs.get(nh >> cb) != 1:
                        break
                    l2i += 1
                    host = nh
                    run += min(cs, end - pos - run)
                self._write_data(first_host + inc, view[pos - offset:pos - offset + run])
                pos += run
                continue
            self._write_new_cluster(l1i, l2i, gci, inc, view[pos - offset:pos - offset + n], kind, host, entry)
            pos += n

    def _write_data(self, host_off: int, data) -> None:
        self.file.write(host_off, data)
        self._data_since_sync = True

    def _write_new_cluster(self, l1i: int, l2i: int, gci: int, inc: int, data: memoryview,
                           kind: int, host: int, entry: int) -> None:
        """Copy-on-write: build the whole cluster, put it in a cluster of our own, point L2 at it."""
        cs = self.cs
        full = inc == 0 and len(data) == cs
        zero_fill = kind == ZERO or (kind == UNALLOCATED and self.backing is None)
        if full:
            buf = data
        else:
            buf = bytearray(cs)
            mv = memoryview(buf)
            if kind == UNALLOCATED and self.backing is not None:
                self._read_backing(gci << self.cb, mv)
            elif kind == DATA:
                self.file.read_into(host, mv)
            elif kind == COMPRESSED:
                mv[:] = self._decompress(entry)
            mv[inc:inc + len(data)] = data
        l2_off, table = self._writable_l2(l1i)
        reuse = kind == ZERO and host and self.refs.get(host >> self.cb) == 1
        c = host >> self.cb if reuse else self._alloc(1)
        host_off = c << self.cb
        try:
            if not full and zero_fill and host_off >= self.file_size:
                # Fresh space past the end of the file reads as zeros already.
                self._write_data(host_off + inc, data)
            else:
                self._write_data(host_off, buf)
        except ImageFormatError:
            if not reuse:
                self.refs.change(c, -1)
            raise
        table[l2i] = host_off | OFLAG_COPIED
        self.l2cache.mark_dirty(l2_off, table)
        if kind == COMPRESSED:
            self._release_compressed(entry)
        elif host and not reuse:
            self._free_later(host >> self.cb)      # a shared or preallocated-zero cluster

    def _writable_l2(self, l1i: int) -> tuple[int, array]:
        """The L2 table for l1i, allocated if missing and copied if shared with a snapshot."""
        off, table = self._l2_table(l1i)
        if table is not None:
            if self.refs.get(off >> self.cb) == 1:
                if not self.l1[l1i] & OFLAG_COPIED:
                    self.l1[l1i] |= OFLAG_COPIED
                    self._l1_dirty.add(l1i)
                return off, table
            new = array("Q", table)
        else:
            new = array("Q", bytes(self.cs))
        c = self._alloc(1)
        noff = c << self.cb
        self.meta[c] = M_L2
        self.l2cache.new(noff, new)
        self.l1[l1i] = noff | OFLAG_COPIED
        self._l1_dirty.add(l1i)
        if off:
            self._free_later(off >> self.cb)
        return noff, new

    # ------------------------------------------------------------------ discard / zeroes
    def _discard(self, offset: int, length: int) -> None:
        self._zero_range(offset, length, discard=True, may_unmap=True)

    def _write_zeroes(self, offset: int, length: int, may_unmap: bool) -> None:
        self._zero_range(offset, length, discard=False, may_unmap=may_unmap)

    def _zero_range(self, offset: int, length: int, discard: bool, may_unmap: bool) -> None:
        self._check_usable()
        cs, cb = self.cs, self.cb
        end = offset + length
        first = -(-offset // cs) * cs       # whole clusters: [first, last)
        last = end // cs * cs
        if not discard:
            # Partial clusters at either end get real zeros; discard just leaves them.
            parts = [(offset, end)] if first >= last else [(offset, first), (last, end)]
            for a, b in parts:
                if b > a:
                    self._write(a, memoryview(bytes(b - a)))
        if first >= last:
            return
        v3 = self.h.version == 3
        for gci in range(first >> cb, last >> cb):
            l1i, l2i = gci >> self.l2_bits, gci & self.l2_mask
            _, table = self._l2_table(l1i)
            entry = table[l2i] if table is not None else 0
            kind, host = self._classify(entry)
            if (kind == UNALLOCATED and self.backing is None) or (kind == ZERO and not host):
                continue    # reads as zeros already, nothing to free
            # "Standard Cluster Descriptor" bit 0 (version 3): reads as zeros, and
            # hides the backing file; without a backing file, unallocated does too.
            keep = False
            if v3:
                new = OFLAG_ZERO if self.backing is not None else 0
                if not discard and not may_unmap and kind in (DATA, ZERO) and host \
                        and self.refs.get(host >> cb) == 1:
                    new, keep = host | OFLAG_ZERO | OFLAG_COPIED, True   # keep the allocation
            elif self.backing is None:
                new = 0
            elif discard:
                continue    # version 2 cannot say "zero" over a backing file; discard is advisory
            else:
                self._write(gci << cb, memoryview(bytes(cs)))
                continue
            if new == entry:
                continue
            l2_off, table = self._writable_l2(l1i)
            table[l2i] = new
            self.l2cache.mark_dirty(l2_off, table)
            if kind == COMPRESSED:
                self._release_compressed(entry)
            elif host and not keep:
                self._free_later(host >> cb)

    # ------------------------------------------------------------------ flush / close
    def _before_l2_write(self) -> None:
        """Refcount blocks and data reach the disk before the L2 entries that point at them."""
        wrote = False if self.lazy else self.refs.write_dirty()
        if wrote or self._data_since_sync:
            self.file.sync()
            self._data_since_sync = False

    def _write_l1_entries(self) -> None:
        idx = sorted(self._l1_dirty)
        i = 0
        while i < len(idx):
            j = i
            while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
                j += 1
            run = array("Q", self.l1[idx[i]:idx[j] + 1])
            self.file.write(self.h.l1_table_offset + 8 * idx[i], dump_u64_table(run))
            i = j + 1
        self._l1_dirty.clear()

    def _flush_metadata(self) -> None:
        self._check_usable()
        try:
            if not self.lazy:
                self.refs.write_dirty()
            self.l2cache.write_dirty()
            if self._l1_dirty:
                self.file.sync()
                self._write_l1_entries()
            self.file.sync()
            self._data_since_sync = False
            if self._pending_frees:
                frees, self._pending_frees = self._pending_frees, []
                for c in frees:
                    self._release(c)
        except ImageFormatError as e:
            # The on-disk state no longer matches memory: fail every later flush.
            self._broken = self._broken or f"{e}; the image stopped accepting writes after this error"
            self.readonly = True
            self.readonly_reason = "an earlier metadata write failed"
            raise

    def _flush(self) -> None:
        self._check_usable()
        if self.readonly:
            return
        self._flush_metadata()

    def flush(self) -> None:
        self._check_open()
        self._flush()

    def _close(self) -> None:
        try:
            if not self.readonly and not self._broken:
                self._flush_metadata()
                self._flush_metadata()      # the refcount drops of the first round
                if self.lazy:
                    self.refs.write_dirty()
                    self.file.sync()
                if self._dirty_on_disk and self.h.version == 3:
                    self._set_incompatible(self.h.incompatible_features & ~INCOMPAT_DIRTY)
        finally:
            try:
                if self.backing is not None:
                    self.backing.close()
            finally:
                self.file.close()

    # ------------------------------------------------------------------ status / resize
    def block_status(self, offset: int, length: int) -> tuple[int, bool]:
        self._check_request(offset, length, "status")
        if length == 0:
            return 0, True
        gci = offset >> self.cb
        l1i = gci >> self.l2_bits
        if not self.l1[l1i]:
            # Skip whole unallocated L1 entries quickly (petabyte-sized sparse images).
            j = l1i
            while j + 1 < len(self.l1) and not self.l1[j + 1]:
                j += 1
            n = min(((j + 1) << (self.l2_bits + self.cb)) - offset, length)
            return self._unallocated_status(offset, n)
        kind, _, pos, n = next(self._extents(offset, length))
        if kind == UNALLOCATED:
            return self._unallocated_status(offset, n)
        return n, kind == ZERO

    def _unallocated_status(self, offset: int, n: int) -> tuple[int, bool]:
        if self.backing is None or offset >= self.backing.virtual_size:
            return n, True
        return self.backing.block_status(offset, min(n, self.backing.virtual_size - offset))

    def resize(self, new_size: int, shrink: bool = False) -> None:
        self._check_open()
        if self.readonly:
            raise ImageFormatError(f"{self.path}: resize refused: {self.readonly_reason}")
        new_size = -(-new_size // SECTOR) * SECTOR
        if new_size < self.h.size:
            raise ImageFormatError(f"{self.path}: shrinking a qcow2 image is not supported (it would "
                                   "drop data at the end of the disk); convert it instead")
        self._flush_metadata()
        needed = l1_entries_needed(new_size, self.cb)
        if needed > len(self.l1):
            self._grow_l1(needed, new_size)
        else:
            self.file.write(HDR_SIZE, struct.pack(">Q", new_size))
            self.file.sync()
        self.h.size = self.virtual_size = new_size

    def _grow_l1(self, entries: int, new_size: int | None = None) -> None:
        """Move the active L1 table to a bigger place; the header switches in one write."""
        if entries * 8 > MAX_L1_BYTES:
            raise ImageFormatError(f"{self.path}: an L1 table of {entries} entries exceeds the "
                                   f"{MAX_L1_BYTES}-byte limit; use bigger clusters")
        self._flush_metadata()
        old_off, old_size = self.h.l1_table_offset, len(self.l1)
        nclusters = -(-entries * 8 // self.cs)
        c = self._alloc(nclusters)
        new_off = c << self.cb
        new_l1 = array("Q", self.l1) + array("Q", bytes(8 * (entries - old_size)))
        self.file.write(new_off, dump_u64_table(new_l1))
        self.refs.write_dirty()
        self.file.sync()
        size = self.h.size if new_size is None else new_size
        # Bytes 24..47: size, crypt_method, l1_size, l1_table_offset, in one write.
        self.file.write(HDR_SIZE, struct.pack(">QIIQ", size, self.h.crypt_method, entries, new_off))
        self.file.sync()
        for k in range(nclusters):
            self.meta[c + k] = M_L1
        if old_size:
            for oc in range(old_off >> self.cb, ((old_off + 8 * old_size - 1) >> self.cb) + 1):
                if self.meta.get(oc) == M_L1:
                    del self.meta[oc]
                self._release(oc)
        self.l1 = new_l1
        self.h.l1_table_offset, self.h.l1_size, self.h.size = new_off, entries, size
        self._flush_metadata()

    # ------------------------------------------------------------------ snapshots
    def snapshot_list(self) -> list[Snapshot]:
        return list(self.snapshots)

    def snapshot_create(self, name: str) -> Snapshot:
        from .qcow2_snapshot_ops import create_snapshot
        return create_snapshot(self, name)

    def snapshot_apply(self, name: str) -> None:
        from .qcow2_snapshot_ops import apply_snapshot
        apply_snapshot(self, name)

    def snapshot_delete(self, name: str) -> None:
        from .qcow2_snapshot_ops import delete_snapshot
        delete_snapshot(self, name)

