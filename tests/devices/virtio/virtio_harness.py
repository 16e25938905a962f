"""A virtio driver written in Python, for the tests: it drives a virtio-mmio
transport the way Linux's virtio_mmio and virtio_ring do (4.2.3 and 2.7),
over a numpy RAM array, and can also write raw (malformed) rings."""

import os
import struct

import numpy as np

from vmkit.devices.virtio.device import (
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    F_VERSION_1,
    STATUS_ACKNOWLEDGE,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
)
from vmkit.devices.virtio.mmio import Reg, VirtioMmio
from vmkit.devices.virtio.queue import DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE

RAM_BASE = 0x8000_0000
RING_FEATURES = F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX


class Ram:
    """Guest RAM plus a bump allocator."""

    def __init__(self, size: int = 1 << 20) -> None:
        self.array = np.zeros(size, dtype=np.uint8)
        self.next = RAM_BASE + 0x1000

    def alloc(self, size: int, align: int = 16) -> int:
        addr = (self.next + align - 1) & ~(align - 1)
        if addr + size > RAM_BASE + len(self.array):
            raise MemoryError("test RAM exhausted")
        self.next = addr + max(size, 1)
        return addr

    def write(self, addr: int, data: bytes) -> None:
        off = addr - RAM_BASE
        self.array[off:off + len(data)] = np.frombuffer(bytes(data), dtype=np.uint8)

    def read(self, addr: int, n: int) -> bytes:
        off = addr - RAM_BASE
        return self.array[off:off + n].tobytes()

    def u16(self, addr: int) -> int:
        return struct.unpack("<H", self.read(addr, 2))[0]

    def set_u16(self, addr: int, v: int) -> None:
        self.write(addr, struct.pack("<H", v & 0xFFFF))

    def buf(self, data: bytes = b"", size: int | None = None) -> int:
        """A new buffer holding `data` (or `size` zero bytes)."""
        n = len(data) if size is None else size
        addr = self.alloc(n)
        if data:
            self.write(addr, data)
        return addr


class QueueDriver:
    """The driver side of one split virtqueue."""

    def __init__(self, ram: Ram, num: int) -> None:
        self.ram, self.num = ram, num
        self.desc = ram.alloc(16 * num, 16)
        self.avail = ram.alloc(6 + 2 * num, 2)
        self.used = ram.alloc(6 + 8 * num, 4)
        self.free = list(range(num))
        self.avail_idx = 0
        self.last_used = 0

    def write_desc(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0, table=None) -> None:
        base = self.desc if table is None else table
        self.ram.write(base + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def post_head(self, head: int) -> None:
        self.ram.set_u16(self.avail + 4 + 2 * (self.avail_idx % self.num), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.ram.set_u16(self.avail + 2, self.avail_idx)

    def add(self, bufs: list[tuple[int, int, bool]]) -> int:
        """A direct chain of (addr, len, writable); returns its head."""
        ids = [self.free.pop(0) for _ in bufs]
        for k, (addr, length, w) in enumerate(bufs):
            last = k == len(bufs) - 1
            self.write_desc(ids[k], addr, length, (DESC_F_WRITE if w else 0) | (0 if last else DESC_F_NEXT),
                            0 if last else ids[k + 1])
        self.post_head(ids[0])
        return ids[0]

    def add_indirect(self, bufs: list[tuple[int, int, bool]]) -> int:
        table = self.ram.alloc(16 * len(bufs), 16)
        for k, (addr, length, w) in enumerate(bufs):
            last = k == len(bufs) - 1
            self.write_desc(k, addr, length, (DESC_F_WRITE if w else 0) | (0 if last else DESC_F_NEXT),
                            0 if last else k + 1, table=table)
        head = self.free.pop(0)
        self.write_desc(head, table, 16 * len(bufs), DESC_F_INDIRECT)
        self.post_head(head)
        return head

    def set_used_event(self, value: int) -> None:
        self.ram.set_u16(self.avail + 4 + 2 * self.num, value)

    def set_avail_flags(self, value: int) -> None:
        self.ram.set_u16(self.avail, value)

    def avail_event(self) -> int:
        return self.ram.u16(self.used + 4 + 8 * self.num)

    def used_idx(self) -> int:
        return self.ram.u16(self.used + 2)

    def collect(self) -> list[tuple[int, int]]:
        """New used elements (id, len); their descriptors become free again."""
        out = []
        while self.last_used != self.used_idx():
            off = self.used + 4 + 8 * (self.last_used % self.num)
            i, n = struct.unpack("<II", self.ram.read(off, 8))
            out.append((i, n))
            self.last_used = (self.last_used + 1) & 0xFFFF
            self._free_chain(i)
        return out

    def _free_chain(self, head: int) -> None:
        i = head
        for _ in range(self.num):
            addr, length, flags, nxt = struct.unpack("<QIHH", self.ram.read(self.desc + 16 * i, 16))
            if i not in self.free:
                self.free.append(i)
            if not flags & DESC_F_NEXT or flags & DESC_F_INDIRECT:
                break
            i = nxt


class Driver:
    """A device in a virtio-mmio slot, driven like Linux's virtio_mmio."""

    def __init__(self, device, ram_size: int = 1 << 20) -> None:
        self.ram = Ram(ram_size)
        self.irq_level = False
        self.irq_changes = 0
        self.device = device
        self.mmio = VirtioMmio(device, self.ram.array, RAM_BASE, self._irq)
        self.queues: dict[int, QueueDriver] = {}

    def _irq(self, level: bool) -> None:
        self.irq_level = level
        self.irq_changes += 1

    def r32(self, reg: int) -> int:
        return self.mmio.read(reg, 4)

    def w32(self, reg: int, value: int) -> None:
        self.mmio.write(reg, 4, value)

    @property
    def status(self) -> int:
        return self.r32(Reg.STATUS)

    def device_features(self) -> int:
        self.w32(Reg.DEVICE_FEATURES_SEL, 1)
        hi = self.r32(Reg.DEVICE_FEATURES)
        self.w32(Reg.DEVICE_FEATURES_SEL, 0)
        return (hi << 32) | self.r32(Reg.DEVICE_FEATURES)

    def negotiate(self, features: int | None = None) -> bool:
        """3.1.1 steps 1-6; returns whether FEATURES_OK stuck."""
        self.w32(Reg.STATUS, 0)
        self.w32(Reg.STATUS, STATUS_ACKNOWLEDGE)
        self.w32(Reg.STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER)
        offered = self.device_features()
        accept = offered if features is None else features
        self.w32(Reg.DRIVER_FEATURES_SEL, 1)
        self.w32(Reg.DRIVER_FEATURES, accept >> 32)
        self.w32(Reg.DRIVER_FEATURES_SEL, 0)
        self.w32(Reg.DRIVER_FEATURES, accept & 0xFFFF_FFFF)
        self.w32(Reg.STATUS, self.status | STATUS_FEATURES_OK)
        return bool(self.status & STATUS_FEATURES_OK)

    def setup_queue(self, index: int, num: int | None = None) -> QueueDriver:
        self.w32(Reg.QUEUE_SEL, index)
        assert self.r32(Reg.QUEUE_READY) == 0
        num = num or self.r32(Reg.QUEUE_NUM_MAX)
        q = QueueDriver(self.ram, num)
        self.w32(Reg.QUEUE_NUM, num)
        for reg, addr in ((Reg.QUEUE_DESC_LOW, q.desc), (Reg.QUEUE_DRIVER_LOW, q.avail),
                          (Reg.QUEUE_DEVICE_LOW, q.used)):
            self.w32(reg, addr & 0xFFFF_FFFF)
            self.w32(reg + 4, addr >> 32)
        self.w32(Reg.QUEUE_READY, 1)
        assert self.r32(Reg.QUEUE_READY) == 1
        self.queues[index] = q
        return q

    def start(self, features: int | None = None, nqueues: int | None = None,
              num: int | None = None) -> None:
        """Negotiate, set up the queues, DRIVER_OK."""
        assert self.negotiate(features)
        n = len(self.device.queue_sizes) if nqueues is None else nqueues
        for i in range(n):
            self.setup_queue(i, num)
        self.w32(Reg.STATUS, self.status | STATUS_DRIVER_OK)
        assert self.status & STATUS_DRIVER_OK

    def kick(self, index: int = 0) -> None:
        self.w32(Reg.QUEUE_NOTIFY, index)

    def ack_interrupt(self) -> int:
        pending = self.r32(Reg.INTERRUPT_STATUS)
        self.w32(Reg.INTERRUPT_ACK, pending)
        return pending

    def config(self, offset: int, size: int) -> int:
        return self.mmio.read(Reg.CONFIG + offset, size)


class RawFile:
    """A raw disk image on a file, as simple as it gets (the test's own)."""

    def __init__(self, path, readonly: bool = False) -> None:
        self.fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        self.readonly = readonly
        self.virtual_size = os.fstat(self.fd).st_size
        self.flushes = 0

    def read_into(self, offset: int, buf: memoryview) -> None:
        done = 0
        while done < len(buf):
            n = os.preadv(self.fd, [buf[done:]], offset + done)
            if n == 0:
                buf[done:] = bytes(len(buf) - done)
                return
            done += n

    def write_from(self, offset: int, buf: memoryview) -> None:
        done = 0
        while done < len(buf):
            done += os.pwrite(self.fd, buf[done:], offset + done)

    def flush(self) -> None:
        self.flushes += 1
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
