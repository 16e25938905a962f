"""The split virtqueue (virtio 1.2, 2.7), with indirect descriptors (2.7.5.3)
and used/available event suppression (2.7.7, 2.7.10).

Guest memory layout of a queue of `num` entries (2.7, table "Virtqueue Part
Alignment"): the descriptor table (16-byte aligned, 16 * num bytes), the
driver area or available ring (2-aligned: flags, idx, ring[num], used_event)
and the device area or used ring (4-aligned: flags, idx, ring[num] of
{id, len}, avail_event).

Everything in guest memory is hostile and may change under us (another hart
can rewrite a descriptor while we look at it), so:
- each descriptor is read once into host integers and only that copy is used;
- every descriptor is checked before any of the chain is handed to a device:
  address + length inside RAM (never wrapping 2^64, never reaching MMIO),
  `next` and the head inside the queue (or the indirect table), at most
  `num` descriptors in the chain and at most the table's entries inside an
  indirect table (so loops end), indirect tables non-empty, a multiple of 16
  bytes, not nested, not combined with NEXT, and only when negotiated,
  device-readable buffers before device-writable ones (2.7.4.2), and the
  available index at most `num` ahead of what we consumed;
- a violation raises `VirtqueueError`; the transport then sets
  DEVICE_NEEDS_RESET (2.1.2) and nothing of the chain is read or written.

Buffers are handed out as memoryview slices of the RAM array (zero-copy),
device-readable ones read-only.  Zero-length descriptors are skipped (never
bounds-checked, never handed out), so a chain of them still completes.

Host memory a guest can make us hold is bounded: a chain holds at most
`num + MAX_INDIRECT` views and a queue lets a device hold at most `num`
chains that were popped and not yet pushed back.
"""

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from vmkit.devices.device import DeviceStateError, state_int

# --- descriptor flags (2.7.5) ---------------------------------------------------------------
DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
DESC_SIZE = 16
# --- ring flags (2.7.6, 2.7.8) ----------------------------------------------------------------
AVAIL_F_NO_INTERRUPT = 1
USED_F_NO_NOTIFY = 1
# --- alignment of the three parts (2.7, "Virtqueue Part Alignment") --------------------------
DESC_ALIGN = 16
AVAIL_ALIGN = 2
USED_ALIGN = 4
# The largest queue the split ring format allows (2.7: Queue Size <= 32768).
MAX_QUEUE_SIZE = 32768
# Entries in one indirect table.  The spec has no limit of its own; QEMU and
# Linux use 1024 (VIRTQUEUE_MAX_SIZE, and Linux sizes its tables by seg_max).
MAX_INDIRECT = 1024

_DESC = struct.Struct("<QIHH")
_U16 = struct.Struct("<H")
_USED_ELEM = struct.Struct("<II")

U64_LIMIT = 1 << 64


class VirtqueueError(Exception):
    """The driver broke the ring protocol; the device needs a reset."""


class GuestRam:
    """Guest RAM: a uint8 array at guest-physical `base`, with range checks."""

    def __init__(self, ram: np.ndarray, base: int, on_write=None) -> None:
        if not isinstance(ram, np.ndarray) or ram.dtype != np.uint8 or ram.ndim != 1:
            raise TypeError("guest RAM must be a one-dimensional uint8 numpy array")
        self.mem = memoryview(ram)
        self.base = base
        self.size = len(ram)
        # Told (RAM offset, length) of what a device wrote, before the driver
        # sees it: the CPU's translations of those bytes must go (codepages.py).
        self.on_write = on_write

    def offset(self, addr: int, length: int) -> int:
        """The RAM offset of guest-physical [addr, addr+length); VirtqueueError
        unless the whole range is RAM (no wrap past 2^64, no MMIO)."""
        if addr < 0 or length < 0 or addr + length > U64_LIMIT:
            raise VirtqueueError(f"buffer {addr:#x}+{length:#x} wraps past 2^64")
        off = addr - self.base
        if off < 0 or off + length > self.size:
            raise VirtqueueError(f"buffer {addr:#x}+{length:#x} is not inside guest RAM")
        return off

    def contains(self, addr: int, length: int) -> bool:
        off = addr - self.base
        return 0 <= off and off + length <= self.size and addr + length <= U64_LIMIT

    def u16(self, off: int) -> int:
        return _U16.unpack_from(self.mem, off)[0]

    def set_u16(self, off: int, value: int) -> None:
        _U16.pack_into(self.mem, off, value & 0xFFFF)


class Chain:
    """One descriptor chain: `head` (the id the used ring gets back) and its
    buffers, device-readable ones first (read-only views), then the
    device-writable ones."""

    __slots__ = ("head", "readable", "writable", "readable_len", "writable_len", "writable_at")

    def __init__(self, head: int, readable: list[memoryview], writable: list[memoryview],
                 writable_at: list[int] | None = None) -> None:
        self.head = head
        self.readable = readable
        self.writable = writable
        self.writable_at = writable_at or []   # RAM offset of each writable view
        self.readable_len = sum(len(v) for v in readable)
        self.writable_len = sum(len(v) for v in writable)

    @property
    def buffers(self) -> list[tuple[memoryview, bool]]:
        """(view, is_writable) pairs in chain order."""
        return [(v, False) for v in self.readable] + [(v, True) for v in self.writable]


# --- scatter/gather over lists of views --------------------------------------------------------
def sub_views(views: Iterable[memoryview], start: int, end: int) -> list[memoryview]:
    """Zero-copy slices covering bytes [start, end) of the concatenated views."""
    out = []
    pos = 0
    for v in views:
        n = len(v)
        lo, hi = max(start - pos, 0), min(end - pos, n)
        if lo < hi:
            out.append(v[lo:hi])
        pos += n
        if pos >= end:
            break
    return out


def gather(views: Iterable[memoryview], start: int, length: int) -> bytes:
    """A copy of bytes [start, start+length) of the concatenated views
    (shorter if the views end first)."""
    return b"".join(bytes(v) for v in sub_views(views, start, start + length))


def scatter(views: Iterable[memoryview], start: int, data: bytes | memoryview) -> int:
    """Copy `data` into the concatenated views from byte `start`; returns how
    many bytes fitted."""
    done = 0
    for v in sub_views(views, start, start + len(data)):
        n = len(v)
        v[:] = data[done:done + n]
        done += n
    return done


class Virtqueue:
    """One split virtqueue: its registers (as the transport sets them) and the
    ring protocol.  Indices are kept modulo 2^16, as in the rings."""

    def __init__(self, ram: GuestRam, index: int, num_max: int) -> None:
        if not 1 <= num_max <= MAX_QUEUE_SIZE or num_max & (num_max - 1):
            raise ValueError(f"queue size {num_max} must be a power of two in 1..{MAX_QUEUE_SIZE}")
        self.ram = ram
        self.index = index
        self.num_max = num_max
        self.reset()

    def reset(self) -> None:
        # Registers (4.2.2).  QueueNum starts at the maximum, as in QEMU.
        self.num = self.num_max
        self.ready = False
        self.desc_addr = 0
        self.driver_addr = 0
        self.device_addr = 0
        # Negotiated ring features (set when the device is activated).
        self.indirect = False
        self.event_idx = False
        # Ring state.
        self.last_avail_idx = 0
        self.used_idx = 0
        self.signalled_used = 0
        self.signalled_used_valid = False
        self.in_flight = 0
        self._pushed = False
        # Offsets into RAM of the three parts, valid while `ready`.
        self._desc = self._avail = self._used = 0

    # --- setup ---------------------------------------------------------------------------
    def layout_error(self) -> str | None:
        """Why the current registers cannot make a working queue, or None."""
        num = self.num
        if not 1 <= num <= self.num_max or num & (num - 1):
            return f"queue size {num} is not a power of two in 1..{self.num_max}"
        parts = (("descriptor table", self.desc_addr, DESC_SIZE * num, DESC_ALIGN),
                 ("available ring", self.driver_addr, 6 + 2 * num, AVAIL_ALIGN),
                 ("used ring", self.device_addr, 6 + 8 * num, USED_ALIGN))
        for name, addr, size, align in parts:
            if addr % align:
                return f"{name} at {addr:#x} is not {align}-byte aligned"
            if not self.ram.contains(addr, size):
                return f"{name} at {addr:#x}+{size:#x} is not inside guest RAM"
        return None

    def enable(self) -> str | None:
        """QueueReady := 1.  Refused (returns why) when the layout is bad."""
        err = self.layout_error()
        if err is not None:
            return err
        base = self.ram.base
        self._desc = self.desc_addr - base
        self._avail = self.driver_addr - base
        self._used = self.device_addr - base
        self.ready = True
        return None

    def disable(self) -> None:
        """QueueReady := 0: the queue stops; the driver may set it up again."""
        self.ready = False
        self.last_avail_idx = self.used_idx = 0
        self.signalled_used = 0
        self.signalled_used_valid = False
        self.in_flight = 0
        self._pushed = False

    def set_features(self, features: int, indirect_bit: int, event_idx_bit: int) -> None:
        self.indirect = bool(features & indirect_bit)
        self.event_idx = bool(features & event_idx_bit)

    # --- the device side of the ring ---------------------------------------------------------
    def pop(self) -> Chain | None:
        """The next available chain, validated, or None when there is none
        (or the device already holds `num` chains).  VirtqueueError when the
        ring or the chain is malformed."""
        if not self.ready:
            return None
        ram, num = self.ram, self.num
        avail_idx = ram.u16(self._avail + 2)
        pending = (avail_idx - self.last_avail_idx) & 0xFFFF
        if pending == 0 or self.in_flight >= num:
            if self.event_idx:
                self._set_avail_event()
            return None
        if pending > num:
            raise VirtqueueError(f"queue {self.index}: available index {avail_idx} is {pending} entries "
                                 f"ahead of {self.last_avail_idx}, more than the queue size {num}")
        head = ram.u16(self._avail + 4 + 2 * (self.last_avail_idx % num))
        if head >= num:
            raise VirtqueueError(f"queue {self.index}: head {head} >= queue size {num}")
        chain = self._walk(head)
        self.last_avail_idx = (self.last_avail_idx + 1) & 0xFFFF
        self.in_flight += 1
        if self.event_idx:
            self._set_avail_event()
        return chain

    def undo_pop(self) -> None:
        """Give back, unused, the chain the last `pop` returned: the next
        `pop` returns it again, read afresh from the ring.  For a device that
        must wait before taking a request it has looked at (a rate limiter:
        vmkit/devices/ratelimit.py); Firecracker's Queue::undo_pop.  Only
        right after a `pop` that returned a chain, before anything is pushed."""
        self.last_avail_idx = (self.last_avail_idx - 1) & 0xFFFF
        self.in_flight = max(0, self.in_flight - 1)
        if self.event_idx:
            self._set_avail_event()

    def _walk(self, head: int) -> Chain:
        ram, mem, num, q = self.ram, self.ram.mem, self.num, self.index
        readable: list[memoryview] = []
        writable: list[memoryview] = []
        writable_at: list[int] = []
        table = self._desc          # RAM offset of the table being walked
        limit = num                 # entries in it
        in_indirect = False
        seen_writable = False
        i = head
        steps = 0
        while True:
            steps += 1
            if steps > limit:
                where = "indirect table" if in_indirect else "chain"
                raise VirtqueueError(f"queue {q}: {where} from head {head} is longer than {limit} "
                                     f"descriptors (a loop?)")
            # The one read of this descriptor: only this copy is used.
            addr, length, flags, nxt = _DESC.unpack_from(mem, table + DESC_SIZE * i)
            if flags & DESC_F_INDIRECT:
                if in_indirect:
                    raise VirtqueueError(f"queue {q}: nested indirect descriptor (2.7.5.3.1)")
                if not self.indirect:
                    raise VirtqueueError(f"queue {q}: indirect descriptor but VIRTIO_F_INDIRECT_DESC "
                                         f"was not negotiated")
                if flags & DESC_F_NEXT:
                    raise VirtqueueError(f"queue {q}: descriptor has both INDIRECT and NEXT (2.7.5.3.1)")
                if length == 0 or length % DESC_SIZE:
                    raise VirtqueueError(f"queue {q}: indirect table length {length} is not a non-zero "
                                         f"multiple of {DESC_SIZE}")
                if length // DESC_SIZE > MAX_INDIRECT:
                    raise VirtqueueError(f"queue {q}: indirect table of {length // DESC_SIZE} entries, "
                                         f"more than {MAX_INDIRECT}")
                # 2.7.5.3.2: a single indirect descriptor may end a chain of
                # normal ones; its WRITE flag is ignored.
                table = ram.offset(addr, length)
                limit = length // DESC_SIZE
                in_indirect = True
                i = 0
                steps = 0
                continue
            if flags & DESC_F_WRITE:
                seen_writable = True
            elif seen_writable:
                raise VirtqueueError(f"queue {q}: device-readable descriptor after a device-writable "
                                     f"one (2.7.4.2)")
            if length:
                off = ram.offset(addr, length)
                view = mem[off:off + length]
                if flags & DESC_F_WRITE:
                    writable.append(view)
                    writable_at.append(off)
                else:
                    readable.append(view.toreadonly())
            if not flags & DESC_F_NEXT:
                return Chain(head, readable, writable, writable_at)
            if nxt >= limit:
                raise VirtqueueError(f"queue {q}: next {nxt} >= {limit} "
                                     f"({'indirect table entries' if in_indirect else 'queue size'})")
            i = nxt

    def push(self, chain: Chain, written: int) -> None:
        """Return `chain` to the driver with `written` bytes written into its
        device-writable buffers (2.7.8)."""
        if not self.ready:
            return
        written = max(0, min(written, chain.writable_len))
        if self.ram.on_write is not None:
            for at, view in zip(chain.writable_at, chain.writable):
                self.ram.on_write(at, len(view))
        off = self._used + 4 + 8 * (self.used_idx % self.num)
        _USED_ELEM.pack_into(self.ram.mem, off, chain.head, written)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.ram.set_u16(self._used + 2, self.used_idx)
        if self.ram.on_write is not None:
            self.ram.on_write(off, 8)
            self.ram.on_write(self._used + 2, 2)
        self.in_flight = max(0, self.in_flight - 1)
        self._pushed = True

    def should_interrupt(self) -> bool:
        """After a batch of `push`es: does the driver want an interrupt?
        (2.7.7.2 without EVENT_IDX, 2.7.10 with it; as QEMU's
        virtio_split_should_notify.)"""
        if not self.ready or not self._pushed:
            return False
        self._pushed = False
        if not self.event_idx:
            return not self.ram.u16(self._avail) & AVAIL_F_NO_INTERRUPT
        used_event = self.ram.u16(self._avail + 4 + 2 * self.num)
        valid = self.signalled_used_valid
        old, new = self.signalled_used, self.used_idx
        self.signalled_used, self.signalled_used_valid = new, True
        return not valid or ((new - used_event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)

    def _set_avail_event(self) -> None:
        # 2.7.10: "notify me when you make entry last_avail_idx available".
        self.ram.set_u16(self._used + 4 + 8 * self.num, self.last_avail_idx)

    # --- saved state ---------------------------------------------------------------------------
    def save(self) -> dict[str, Any]:
        return {
            "num": self.num, "ready": self.ready,
            "desc": self.desc_addr, "driver": self.driver_addr, "device": self.device_addr,
            "last_avail": self.last_avail_idx, "used": self.used_idx,
            "signalled_used": self.signalled_used, "signalled_valid": self.signalled_used_valid,
        }

    @staticmethod
    def check_state(state: Mapping[str, Any], ram: GuestRam, index: int, num_max: int) -> "Virtqueue":
        """A new queue built from a `save()` dict; DeviceStateError if any
        field is missing or out of range (a ready queue must lie in RAM)."""
        q = Virtqueue(ram, index, num_max)
        q.num = state_int(state, "num", 0, 0xFFFF_FFFF)   # any value until the queue is ready
        ready = bool(state_int(state, "ready", 0, 1))
        q.desc_addr = state_int(state, "desc", 0, U64_LIMIT - 1)
        q.driver_addr = state_int(state, "driver", 0, U64_LIMIT - 1)
        q.device_addr = state_int(state, "device", 0, U64_LIMIT - 1)
        last_avail = state_int(state, "last_avail", 0, 0xFFFF)
        used = state_int(state, "used", 0, 0xFFFF)
        signalled = state_int(state, "signalled_used", 0, 0xFFFF)
        signalled_valid = bool(state_int(state, "signalled_valid", 0, 1))
        if ready:
            err = q.enable()
            if err is not None:
                raise DeviceStateError(f"saved virtqueue {index}: {err}")
        q.last_avail_idx, q.used_idx = last_avail, used
        q.signalled_used, q.signalled_used_valid = signalled, signalled_valid
        return q

    def load(self, other: "Virtqueue") -> None:
        """Take over the state of a checked queue (see `check_state`)."""
        for name in ("num", "ready", "desc_addr", "driver_addr", "device_addr", "last_avail_idx",
                     "used_idx", "signalled_used", "signalled_used_valid", "_desc", "_avail", "_used"):
            setattr(self, name, getattr(other, name))
        self.in_flight = 0
        self._pushed = False


def check_sizes(sizes: Sequence[int]) -> None:
    for n in sizes:
        if not 1 <= n <= MAX_QUEUE_SIZE or n & (n - 1):
            raise ValueError(f"queue size {n} must be a power of two in 1..{MAX_QUEUE_SIZE}")
