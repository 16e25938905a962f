"""qcow2 refcounts: the two-level structure that says which host clusters are in use.

Spec: QEMU docs/interop/qcow2.txt, "Host cluster management". The refcount
table (contiguous, offset and size in the header) points to refcount blocks
of one cluster each; a block holds cluster_size*8/refcount_bits counts.

Allocation (`alloc`) finds the lowest run of free clusters and sets their
counts to 1 in the cached blocks; the caller writes data and table entries
only afterwards, and qcow2.py writes blocks before any table that points at
the clusters (crash-safe order: a crash leaves leaks, never a reference to a
cluster counted free). A missing block is created self-describing: it lives
at the first cluster it covers (free by definition, as nothing covers it
yet) and counts itself. When the table itself is full it grows to a new
place after everything the old one describes, with the blocks that cover the
new table written first and the header switched in one write.

`rebuild` writes a fresh structure from counts computed by walking the
mapping tables (qcow2_walk.py): used for dirty images (lazy refcounts) and
by check.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Callable

import numpy as np

from .errors import ImageFormatError
from .hostfile import HostFile
from .qcow2_cache import TableCache, dump_u64_table, load_u64_table
from .qcow2_header import (HDR_REFCOUNT_TABLE_OFFSET, MAX_REFTABLE_BYTES, REFT_OFFSET_MASK,
                           REFT_RESERVED_MASK, Header)

_SWAP = sys.byteorder == "little"


class SubByteBlock:
    """A refcount block with 1-, 2- or 4-bit entries ("bit 0 means the least
    significant bit" of each byte holds entry 0)."""

    def __init__(self, data, bits: int) -> None:
        self.data = bytearray(data)
        self.bits = bits
        self.mask = (1 << bits) - 1
        self.n = len(self.data) * 8 // bits

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        pos = i * self.bits
        return (self.data[pos >> 3] >> (pos & 7)) & self.mask

    def __setitem__(self, i: int, v: int) -> None:
        pos = i * self.bits
        b = self.data[pos >> 3] & ~(self.mask << (pos & 7))
        self.data[pos >> 3] = b | (v << (pos & 7))

    def index(self, value: int, start: int = 0) -> int:
        for i in range(start, self.n):
            if self[i] == value:
                return i
        raise ValueError("not found")


def refblock_codec(order: int) -> tuple[Callable, Callable]:
    """(load, dump) between on-disk refcount blocks and indexable native blocks."""
    bits = 1 << order
    if bits < 8:
        return (lambda data: SubByteBlock(data, bits)), (lambda blk: bytes(blk.data))
    tc = {8: "B", 16: "H", 32: "I" if array("I").itemsize == 4 else "L", 64: "Q"}[bits]
    swap = _SWAP and bits > 8

    def load(data):
        a = array(tc)
        a.frombytes(bytes(data))
        if swap:
            a.byteswap()
        return a

    def dump(a):
        if not swap:
            return a.tobytes()
        b = array(tc, a)
        b.byteswap()
        return b.tobytes()
    return load, dump


def decode_refblock_np(data: bytes, order: int) -> np.ndarray:
    """All counts of one block as uint64 (for check and rebuild)."""
    bits = 1 << order
    if bits >= 8:
        return np.frombuffer(data, dtype=f">u{bits // 8}").astype(np.uint64)
    raw = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    per = 8 // bits
    cols = [(raw >> (k * bits)) & ((1 << bits) - 1) for k in range(per)]
    return np.stack(cols, axis=1).reshape(-1)


def encode_refblock_np(values: np.ndarray, order: int) -> bytes:
    bits = 1 << order
    if bits >= 8:
        return values.astype(f">u{bits // 8}").tobytes()
    per = 8 // bits
    v = values.astype(np.uint8).reshape(-1, per)
    out = np.zeros(v.shape[0], dtype=np.uint8)
    for k in range(per):
        out |= (v[:, k] << (k * bits)).astype(np.uint8)
    return out.tobytes()


class Refcounts:
    def __init__(self, file: HostFile, h: Header, capacity: int, meta: dict,
                 corrupt: Callable[[str], None]) -> None:
        self.file = file
        self.h = h
        self.cs = h.cluster_size
        self.cluster_bits = h.cluster_bits
        self.per_block = h.refblock_entries
        self.max = (1 << h.refcount_bits) - 1
        self.meta = meta            # host cluster index -> kind of metadata (shared with the image)
        self.corrupt = corrupt      # marks the image corrupt and raises
        load, dump = refblock_codec(h.refcount_order)
        self._load_block = load
        self.blocks = TableCache(file, self.cs, capacity, load=load, dump=dump)
        self.table = load_u64_table(file.read(h.refcount_table_offset, h.refcount_table_clusters * self.cs))
        self._table_dirty: set[int] = set()
        self.free_hint = 0

    # -- structure checks -----------------------------------------------------------
    def problems(self, file_size: int) -> list[str]:
        """What is wrong with the table entries (checked before the image is written)."""
        out = []
        for ti, e in enumerate(self.table):
            if not e:
                continue
            off = e & REFT_OFFSET_MASK
            if e & REFT_RESERVED_MASK:
                out.append(f"refcount table entry {ti} ({e:#x}) has reserved bits set or is unaligned")
            elif off + self.cs > file_size:
                out.append(f"refcount block {ti} at {off:#x} is past the end of the file")
            elif off == 0:
                out.append(f"refcount block {ti} points at the header")
        return out

    def register_metadata(self) -> None:
        for c in range(self.h.refcount_table_clusters):
            self.meta[(self.h.refcount_table_offset >> self.cluster_bits) + c] = "refcount table"
        for e in self.table:
            if e:
                self.meta.setdefault((e & REFT_OFFSET_MASK) >> self.cluster_bits, "refcount block")

    # -- lookups ----------------------------------------------------------------------
    def block_offset(self, ti: int) -> int:
        return self.table[ti] & REFT_OFFSET_MASK if ti < len(self.table) else 0

    def get(self, cluster: int) -> int:
        ti, bi = divmod(cluster, self.per_block)
        off = self.block_offset(ti)
        if not off:
            return 0
        return self.blocks.get(off)[bi]

    # -- updates ------------------------------------------------------------------------
    def set(self, cluster: int, value: int) -> None:
        if not 0 <= value <= self.max:
            raise ImageFormatError(
                f"{self.file.path}: refcount of cluster {cluster} would become {value}, outside "
                f"0..{self.max} ({self.h.refcount_bits}-bit refcounts); convert the image with "
                "wider refcounts (qemu-img amend -o refcount_bits=16)")
        ti, bi = divmod(cluster, self.per_block)
        off = self._ensure_block(ti)
        block = self.blocks.get(off)
        block[bi] = value
        self.blocks.mark_dirty(off, block)
        if value == 0 and cluster < self.free_hint:
            self.free_hint = cluster

    def change(self, cluster: int, delta: int) -> int:
        value = self.get(cluster) + delta
        if value < 0:
            self.corrupt(f"refcount of cluster {cluster} (offset {cluster << self.cluster_bits:#x}) "
                         "would drop below 0")
        self.set(cluster, value)
        return value

    def alloc(self, n: int = 1) -> int:
        """Reserve n contiguous free clusters (refcount 1); returns the first cluster index."""
        while True:
            c, first_zero = self._find_free(n)
            missing = [ti for ti in range(c // self.per_block, (c + n - 1) // self.per_block + 1)
                       if not self.block_offset(ti)]
            if not missing:
                break
            self._create_block(missing[0])   # may take a cluster of the run: search again
        for i in range(n):
            kind = self.meta.get(c + i)
            if kind is not None:
                self.corrupt(f"cluster {c + i} holds the {kind} but its refcount is 0")
        for i in range(n):
            self.set(c + i, 1)
        self.free_hint = first_zero if first_zero < c else c + n
        return c

    def _find_free(self, n: int) -> tuple[int, int]:
        c = self.free_hint
        first_zero = None
        while True:
            c = self._next_zero(c)
            if first_zero is None:
                first_zero = c
            k = 1
            while k < n and self.get(c + k) == 0:
                k += 1
            if k == n:
                return c, first_zero
            c += k + 1

    def _next_zero(self, c: int) -> int:
        pb = self.per_block
        while True:
            ti = c // pb
            off = self.block_offset(ti)
            if not off:
                return c
            block = self.blocks.get(off)
            try:
                return ti * pb + block.index(0, c - ti * pb)
            except ValueError:
                c = (ti + 1) * pb

    def _ensure_block(self, ti: int) -> int:
        off = self.block_offset(ti)
        if not off:
            self._create_block(ti)
            off = self.block_offset(ti)
        return off

    def _create_block(self, ti: int) -> None:
        if ti >= len(self.table):
            self._grow_table(ti + 1)
            if self.block_offset(ti):
                return
        c = ti * self.per_block     # free: no block counted it yet
        kind = self.meta.get(c)
        if kind is not None:
            self.corrupt(f"cluster {c} holds the {kind} but no refcount block covers it")
        block = self._load_block(bytes(self.cs))
        block[0] = 1                # the block counts itself
        off = c << self.cluster_bits
        self.blocks.new(off, block)
        self.table[ti] = off
        self._table_dirty.add(ti)
        self.meta[c] = "refcount block"

    def _grow_table(self, min_entries: int) -> None:
        """Move the table to a bigger place after everything the old one covers."""
        self.write_dirty()
        self.file.sync()
        cs, pb = self.cs, self.per_block
        per_cluster = cs // 8
        old_entries = len(self.table)
        start = max(old_entries * pb, -(-self.file.size() // cs))
        entries = max(min_entries, old_entries + old_entries // 2 + 1)
        while True:
            t_clusters = -(-entries // per_cluster)
            nb = 1
            while True:
                end = start + nb + t_clusters
                need = (end - 1) // pb - start // pb + 1
                if need <= nb:
                    break
                nb = need
            last_ti = (start + nb + t_clusters - 1) // pb
            if entries > last_ti:
                break
            entries = last_ti + 1
        entries = t_clusters * per_cluster
        if entries * 8 > MAX_REFTABLE_BYTES:
            raise ImageFormatError(f"{self.file.path}: the refcount table would exceed "
                                   f"{MAX_REFTABLE_BYTES} bytes; use bigger clusters for such a big image")
        first_ti = start // pb
        new_table = array("Q", self.table) + array("Q", bytes(8 * (entries - old_entries)))
        region = range(start, start + nb + t_clusters)
        new_blocks = {}
        for k in range(nb):
            ti = first_ti + k
            block = self._load_block(bytes(cs))
            for c in region:
                if c // pb == ti:
                    block[c - ti * pb] = 1
            new_blocks[(start + k) << self.cluster_bits] = block
            new_table[ti] = (start + k) << self.cluster_bits
        for off, block in new_blocks.items():
            self.file.write(off, self.blocks.dump(block))
        table_off = (start + nb) << self.cluster_bits
        self.file.write(table_off, dump_u64_table(new_table))
        self.file.sync()
        self.file.write(HDR_REFCOUNT_TABLE_OFFSET, struct.pack(">QI", table_off, t_clusters))
        self.file.sync()
        old_off, old_clusters = self.h.refcount_table_offset, self.h.refcount_table_clusters
        self.h.refcount_table_offset, self.h.refcount_table_clusters = table_off, t_clusters
        self.table = new_table
        for off, block in new_blocks.items():
            self.blocks._insert(off, block)
            self.meta[off >> self.cluster_bits] = "refcount block"
        for c in range(t_clusters):
            self.meta[start + nb + c] = "refcount table"
        # The header no longer points at the old table: drop its clusters.
        for c in range(old_off >> self.cluster_bits, (old_off >> self.cluster_bits) + old_clusters):
            if self.meta.get(c) == "refcount table":
                del self.meta[c]
            self.change(c, -1)

    def write_dirty(self) -> bool:
        """Blocks first, then (after a sync, so they are durable) the table entries
        that point at new blocks."""
        wrote = self.blocks.write_dirty()
        if self._table_dirty:
            self.file.sync()
            self._write_table_entries()
            wrote = True
        return wrote

    def _write_table_entries(self) -> None:
        for ti in sorted(self._table_dirty):
            self.file.write(self.h.refcount_table_offset + 8 * ti, struct.pack(">Q", self.table[ti]))
        self._table_dirty.clear()

    @property
    def has_dirty(self) -> bool:
        return self.blocks.has_dirty or bool(self._table_dirty)


def rebuild(file: HostFile, h: Header, counts: np.ndarray) -> None:
    """Write a fresh refcount structure after the end of the file from computed
    counts (one per host cluster), then switch the header to it in one write.
    The old blocks and table are not counted: they become free space."""
    cs, pb = h.cluster_size, h.refblock_entries
    per_cluster = cs // 8
    maxval = (1 << h.refcount_bits) - 1
    if counts.size and int(counts.max()) > maxval:
        raise ImageFormatError(f"{file.path}: a cluster is referenced more often than "
                               f"{h.refcount_bits}-bit refcounts can count")
    start = max(counts.size, -(-file.size() // cs))
    nb, tc = 1, 1
    while True:
        total = start + nb + tc
        nb2 = -(-total // pb)
        tc2 = -(-nb2 // per_cluster)
        if (nb2, tc2) == (nb, tc):
            break
        nb, tc = nb2, tc2
    if tc * cs > MAX_REFTABLE_BYTES:
        raise ImageFormatError(f"{file.path}: the image is too big for a refcount table of "
                               f"{MAX_REFTABLE_BYTES} bytes")
    total = start + nb + tc
    full = np.zeros(nb * pb, dtype=np.uint64)
    full[:counts.size] = counts
    full[start:total] = 1
    table = array("Q", bytes(tc * cs))
    for ti in range(nb):
        off = (start + ti) * cs
        file.write(off, encode_refblock_np(full[ti * pb:(ti + 1) * pb], h.refcount_order))
        table[ti] = off
    table_off = (start + nb) * cs
    file.write(table_off, dump_u64_table(table))
    file.sync()
    file.write(HDR_REFCOUNT_TABLE_OFFSET, struct.pack(">QI", table_off, tc))
    file.sync()
    h.refcount_table_offset, h.refcount_table_clusters = table_off, tc
