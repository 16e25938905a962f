"""A bounded LRU cache of cluster-sized metadata tables (L2 tables, refcount blocks).

Tables are decoded to native arrays on load and encoded back to big-endian
on write. Dirty tables are written on write_dirty() or when evicted; the
`before_write` hook runs first, which is how the write order of
qcow2.txt's consistency rules is kept: an L2 table that points at freshly
allocated clusters only reaches the disk after their refcounts did
(qcow2.py passes a hook that writes and syncs the refcount blocks).
"""

from __future__ import annotations

import sys
from array import array
from collections import OrderedDict
from typing import Callable

from .hostfile import HostFile

_SWAP = sys.byteorder == "little"
U64 = "Q"


def load_u64_table(data) -> array:
    a = array(U64)
    a.frombytes(bytes(data))
    if _SWAP:
        a.byteswap()
    return a


def dump_u64_table(table: array) -> bytes:
    if not _SWAP:
        return table.tobytes()
    b = array(U64, table)
    b.byteswap()
    return b.tobytes()


class TableCache:
    def __init__(self, file: HostFile, cluster_size: int, capacity: int,
                 load: Callable = load_u64_table, dump: Callable = dump_u64_table,
                 before_write: Callable[[], None] | None = None) -> None:
        self.file = file
        self.cluster_size = cluster_size
        self.capacity = max(2, capacity)
        self.load = load
        self.dump = dump
        self.before_write = before_write
        self._tables: OrderedDict[int, object] = OrderedDict()
        self._dirty: set[int] = set()

    def __contains__(self, offset: int) -> bool:
        return offset in self._tables

    @property
    def has_dirty(self) -> bool:
        return bool(self._dirty)

    def get(self, offset: int):
        t = self._tables.get(offset)
        if t is not None:
            self._tables.move_to_end(offset)
            return t
        t = self.load(self.file.read(offset, self.cluster_size))
        self._insert(offset, t)
        return t

    def new(self, offset: int, table) -> None:
        """A table for a freshly allocated cluster: cached dirty, never read from disk."""
        self._insert(offset, table)
        self._dirty.add(offset)

    def mark_dirty(self, offset: int, table) -> None:
        # Re-insert if it was evicted between get() and now, so no change is lost.
        if self._tables.get(offset) is not table:
            self._insert(offset, table)
        self._dirty.add(offset)

    def forget(self, offset: int) -> None:
        """Drop a table whose cluster was freed (its contents no longer matter)."""
        self._tables.pop(offset, None)
        self._dirty.discard(offset)

    def clear(self) -> None:
        self._tables.clear()
        self._dirty.clear()

    def write_dirty(self) -> bool:
        if not self._dirty:
            return False
        if self.before_write:
            self.before_write()
        for offset in sorted(self._dirty):
            self.file.write(offset, self.dump(self._tables[offset]))
            self._dirty.discard(offset)
        return True

    def _insert(self, offset: int, table) -> None:
        self._tables[offset] = table
        self._tables.move_to_end(offset)
        while len(self._tables) > self.capacity:
            victim = next(iter(self._tables))
            if victim == offset:
                break
            if victim in self._dirty:
                if self.before_write:
                    self.before_write()
                self.file.write(victim, self.dump(self._tables[victim]))
                self._dirty.discard(victim)
            del self._tables[victim]
