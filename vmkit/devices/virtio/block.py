"""virtio-blk (virtio 1.2, 5.2 "Block Device"), one request queue.

Requests (5.2.6): a 16-byte device-readable header {le32 type, le32 reserved,
le64 sector}, then the data (device-readable for OUT, DISCARD and
WRITE_ZEROES, device-writable for IN and GET_ID), then one device-writable
status byte.  The device assumes nothing about how the driver cut these into
descriptors (2.6.4, message framing).  Supported: IN, OUT, FLUSH, GET_ID,
DISCARD, WRITE_ZEROES; anything else is answered VIRTIO_BLK_S_UNSUPP.

Every request is checked before the image is touched, and answered IOERR
when it is wrong: data not a multiple of 512 bytes, sectors past the
capacity, a write to a read-only disk, data in buffers of the wrong
direction (a read into device-readable memory), more data than the limits
in the configuration space.  Any exception from the image (OSError such as
EIO or ENOSPC, an image format error) becomes IOERR, never a false success;
a failed flush fails every later flush too (the data it should have made
durable may be gone: RELIABILITY.md, "Block").  A chain with no room for a
header and a status byte cannot even be answered: VirtioRequestError, and
the transport sets DEVICE_NEEDS_RESET (as QEMU does).

Data moves between the image and guest RAM through memoryview slices of
the RAM array (`read_into` / `write_from`): no copy.  Requests are processed
synchronously when the driver notifies.

With a `rate_limiter` (vmkit/devices/ratelimit.py) every request is one
operation and costs the bytes of its chain but the header and the status
byte: the data of IN and OUT (Firecracker counts those two only; a FLUSH
costs nothing but its operation here too, GET_ID 20 bytes and a DISCARD or
WRITE_ZEROES its 16-byte segment).  When the limiter refuses a request, it
goes back on the available ring (`Virtqueue.undo_pop`) with everything
after it and the device stops;
`poll()`, which the board calls from its run loop, takes the queue up again
once `next_deadline()` has come.  Requests are still carried out once each
and in ring order: the guest only sees a slower disk.  A guest that kicks
while the device waits costs one clock read.
XXX: an I/O thread (or io_uring) would let the guest run while the host
disk works; completions would then be pushed from the run loop.
"""

import errno
import logging
import struct
from collections.abc import Mapping
from enum import IntEnum
from typing import Any, Protocol

from vmkit.devices.device import state_int
from vmkit.devices.ratelimit import QueueGate, RateLimiter
from vmkit.devices.virtio.device import ID_BLOCK, VirtioDevice, VirtioRequestError
from vmkit.devices.virtio.queue import Chain, Virtqueue, gather, sub_views

log = logging.getLogger(__name__)

SECTOR_SIZE = 512

# --- feature bits (5.2.3) ---------------------------------------------------------------------
F_SIZE_MAX = 1 << 1
F_SEG_MAX = 1 << 2
F_RO = 1 << 5
F_BLK_SIZE = 1 << 6
F_FLUSH = 1 << 9
F_DISCARD = 1 << 13
F_WRITE_ZEROES = 1 << 14



class Req(IntEnum):
    """Request types (5.2.6, VIRTIO_BLK_T_*)."""

    IN = 0
    OUT = 1
    FLUSH = 4
    GET_ID = 8
    DISCARD = 11
    WRITE_ZEROES = 13


# --- status values (5.2.6) --------------------------------------------------------------------
S_OK = 0
S_IOERR = 1
S_UNSUPP = 2

# virtio_blk_discard_write_zeroes.flags
WRITE_ZEROES_FLAG_UNMAP = 1

HEADER = struct.Struct("<IIQ")
SEGMENT = struct.Struct("<QII")   # sector, num_sectors, flags
ID_BYTES = 20                     # VIRTIO_BLK_ID_BYTES

# Limits offered in the configuration space (5.2.4), like QEMU's defaults.
QUEUE_SIZE = 256
SEG_MAX = QUEUE_SIZE - 2          # data segments in one request (header and status take two)
SIZE_MAX = 1 << 20                # bytes in one segment
MAX_DATA = SEG_MAX * SIZE_MAX     # so one request moves at most this much
MAX_DISCARD_SECTORS = (1 << 31) // SECTOR_SIZE - 1   # QEMU's BDRV_REQUEST_MAX_SECTORS
MAX_DISCARD_SEG = 1
MAX_WRITE_ZEROES_SECTORS = MAX_DISCARD_SECTORS
MAX_WRITE_ZEROES_SEG = 1
ZERO_CHUNK = 1 << 20              # when the image has no write_zeroes

# struct virtio_blk_config (5.2.4), up to write_zeroes_may_unmap and padding.
CONFIG = struct.Struct("<QIIHBBIBBHIBBHIIIIIBxxx")


class DiskImage(Protocol):
    """What the block device needs from a disk image (vmkit/storage)."""

    virtual_size: int
    readonly: bool

    def read_into(self, offset: int, buf: memoryview) -> None: ...

    def write_from(self, offset: int, buf: memoryview) -> None: ...

    def flush(self) -> None: ...


def request_bytes(chain: Chain) -> int:
    """The bytes a request moves, for the rate limiter: everything in the
    chain but the header and the status byte.  From the descriptor lengths
    only: the header in guest memory is read once, by `handle`."""
    return max(0, chain.readable_len - HEADER.size) + max(0, chain.writable_len - 1)


class RequestFailed(Exception):
    """This request is answered with `status`; the device is fine."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class VirtioBlock(VirtioDevice):
    """virtio-blk over `image`.  `serial` (at most 20 bytes) is what GET_ID
    returns, NUL-padded; `readonly` forces a read-only disk (the image's own
    `readonly` does too); `rate_limiter` (None: unlimited) throttles the
    requests (see the module docstring)."""

    device_id = ID_BLOCK
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, image: DiskImage, *, serial: str | bytes = b"", readonly: bool = False,
                 rate_limiter: RateLimiter | None = None) -> None:
        super().__init__()
        serial = serial.encode() if isinstance(serial, str) else bytes(serial)
        if len(serial) > ID_BYTES:
            raise ValueError(f"block device serial {serial!r} is longer than {ID_BYTES} bytes")
        self.image = image
        self.serial = serial.ljust(ID_BYTES, b"\0")
        self.readonly = bool(readonly or getattr(image, "readonly", False))
        self.capacity = int(image.virtual_size) // SECTOR_SIZE
        self.features = (F_SIZE_MAX | F_SEG_MAX | F_BLK_SIZE | F_FLUSH | F_DISCARD | F_WRITE_ZEROES
                         | (F_RO if self.readonly else 0))
        self.flush_failed = False     # sticky: see the module docstring
        self.requests = 0
        self.errors = 0               # requests answered IOERR
        self.rate_limiter = rate_limiter
        self._gate = QueueGate(rate_limiter) if rate_limiter is not None else None

    # --- configuration space -------------------------------------------------------------------
    def config_bytes(self) -> bytes:
        return CONFIG.pack(
            self.capacity, SIZE_MAX, SEG_MAX,
            0, 0, 0,                      # geometry: not offered
            SECTOR_SIZE,                  # blk_size
            0, 0, 0, 0,                   # topology: not offered
            0, 0, 1,                      # writeback, unused0, num_queues
            MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, 1,   # discard: 1-sector alignment
            MAX_WRITE_ZEROES_SECTORS, MAX_WRITE_ZEROES_SEG,
            1)                            # write_zeroes_may_unmap

    # --- requests -------------------------------------------------------------------------------
    def notify(self, index: int) -> None:
        q = self.queues[index]
        if self._gate is not None:
            self._process_limited(q)
            return
        while (chain := q.pop()) is not None:
            q.push(chain, self.handle(chain))

    def _process_limited(self, q: Virtqueue) -> None:
        gate = self._gate
        if gate.waiting():
            return                        # still throttled: poll() takes the queue up
        while (chain := q.pop()) is not None:
            if not gate.admit(request_bytes(chain)):
                q.undo_pop()              # it stays first on the ring
                return
            q.push(chain, self.handle(chain))

    def poll(self) -> None:
        """Take a throttled queue up again once the rate limiter allows
        (called by the board from its run loop; cheap when there is nothing
        to do)."""
        if self._gate is not None and self._gate.take_due():
            self._guarded(self._resume)

    def _resume(self) -> None:
        if self.active and self.queues:
            self._process_limited(self.queues[0])

    def next_deadline(self) -> float | None:
        """When (rate_limiter.clock seconds, possibly already past) `poll()`
        has work: the throttled queue may go on; None when not throttled."""
        return self._gate.ready_at if self._gate is not None else None

    def handle(self, chain: Chain) -> int:
        """Carry out one request; returns the bytes written into the chain."""
        if chain.readable_len < HEADER.size or chain.writable_len < 1:
            raise VirtioRequestError(f"block request without a {HEADER.size}-byte header and a status byte "
                                     f"({chain.readable_len} readable, {chain.writable_len} writable bytes)")
        self.requests += 1
        rtype, _, sector = HEADER.unpack(gather(chain.readable, 0, HEADER.size))
        # The status byte is the last device-writable byte of the chain.
        last = chain.writable[-1]
        status_view = last[len(last) - 1:]
        written = 1
        try:
            written += self._execute(rtype, sector, chain)
            status = S_OK
        except RequestFailed as failure:
            log.debug("virtio-blk: request type %d sector %d: %s", rtype, sector, failure)
            status = failure.status
        if status == S_IOERR:
            self.errors += 1
            written = 1
        status_view[0] = status
        return written

    def _execute(self, rtype: int, sector: int, chain: Chain) -> int:
        """Returns the data bytes written into the chain (before the status)."""
        extra_in = chain.readable_len - HEADER.size       # readable bytes after the header
        extra_out = chain.writable_len - 1                # writable bytes before the status
        match rtype:
            case Req.IN:
                if extra_in:
                    raise RequestFailed(S_IOERR, "read request with device-readable data buffers")
                self._check_range(sector, extra_out)
                pos = sector * SECTOR_SIZE
                for view in sub_views(chain.writable, 0, extra_out):
                    self._image_call(self.image.read_into, pos, view)
                    pos += len(view)
                return extra_out
            case Req.OUT:
                self._need_only_status(extra_out, "write")
                self._check_writable()
                self._check_range(sector, extra_in)
                pos = sector * SECTOR_SIZE
                for view in sub_views(chain.readable, HEADER.size, chain.readable_len):
                    self._image_call(self.image.write_from, pos, view)
                    pos += len(view)
                return 0
            case Req.FLUSH:
                self._need_only_status(extra_out, "flush")
                if extra_in:
                    raise RequestFailed(S_IOERR, "flush request with data")
                if self.flush_failed:
                    raise RequestFailed(S_IOERR, "an earlier flush failed")
                try:
                    self._image_call(self.image.flush)
                except RequestFailed:
                    self.flush_failed = True
                    raise
                return 0
            case Req.GET_ID:
                if extra_in:
                    raise RequestFailed(S_IOERR, "get-id request with device-readable data buffers")
                n = min(extra_out, ID_BYTES)
                pos = 0
                for view in sub_views(chain.writable, 0, n):
                    view[:] = self.serial[pos:pos + len(view)]
                    pos += len(view)
                return n
            case Req.DISCARD | Req.WRITE_ZEROES:
                self._need_only_status(extra_out, "discard/write-zeroes")
                self._discard_or_zero(rtype, chain, extra_in)
                return 0
            case _:
                raise RequestFailed(S_UNSUPP, f"unknown request type {rtype}")

    def _discard_or_zero(self, rtype: int, chain: Chain, length: int) -> None:
        zeroes = rtype == Req.WRITE_ZEROES
        max_seg, max_sectors = ((MAX_WRITE_ZEROES_SEG, MAX_WRITE_ZEROES_SECTORS) if zeroes
                                else (MAX_DISCARD_SEG, MAX_DISCARD_SECTORS))
        if length == 0 or length % SEGMENT.size:
            raise RequestFailed(S_IOERR, f"discard/write-zeroes data of {length} bytes")
        if length // SEGMENT.size > max_seg:
            # 5.2.6.2: more segments than max_*_seg.
            raise RequestFailed(S_UNSUPP, f"{length // SEGMENT.size} segments, more than {max_seg}")
        data = gather(chain.readable, HEADER.size, length)
        segments = [SEGMENT.unpack_from(data, i) for i in range(0, length, SEGMENT.size)]
        # Check every segment before doing any.
        self._check_writable()
        for sector, count, flags in segments:
            if flags & ~WRITE_ZEROES_FLAG_UNMAP or (flags and not zeroes):
                # 5.2.6.2: unknown flags, or unmap on a discard.
                raise RequestFailed(S_UNSUPP, f"segment flags {flags:#x}")
            if count > max_sectors:
                raise RequestFailed(S_IOERR, f"{count} sectors, more than {max_sectors}")
            self._check_range(sector, count * SECTOR_SIZE, data_limit=False)
        for sector, count, flags in segments:
            offset, size = sector * SECTOR_SIZE, count * SECTOR_SIZE
            if zeroes:
                self._write_zeroes(offset, size, bool(flags & WRITE_ZEROES_FLAG_UNMAP))
            elif hasattr(self.image, "discard"):
                self._image_call(self.image.discard, offset, size)
            # else: discarding is a hint (5.2.6.2 "MAY deallocate"); nothing to do.

    def _write_zeroes(self, offset: int, size: int, may_unmap: bool) -> None:
        if hasattr(self.image, "write_zeroes"):
            self._image_call(self.image.write_zeroes, offset, size, may_unmap)
            return
        zero = memoryview(bytes(min(size, ZERO_CHUNK)))
        end = offset + size
        while offset < end:
            n = min(len(zero), end - offset)
            self._image_call(self.image.write_from, offset, zero[:n])
            offset += n

    # --- checks ---------------------------------------------------------------------------------------
    def _check_range(self, sector: int, length: int, data_limit: bool = True) -> None:
        if length % SECTOR_SIZE:
            raise RequestFailed(S_IOERR, f"data length {length} is not a multiple of {SECTOR_SIZE}")
        if data_limit and length > MAX_DATA:
            raise RequestFailed(S_IOERR, f"data length {length} is more than {MAX_DATA}")
        if sector > self.capacity or length // SECTOR_SIZE > self.capacity - sector:
            raise RequestFailed(S_IOERR, f"sectors {sector}+{length // SECTOR_SIZE} are past the "
                                         f"capacity {self.capacity}")

    def _check_writable(self) -> None:
        if self.readonly:
            # 5.2.6.2: IOERR for a write when VIRTIO_BLK_F_RO is offered.
            raise RequestFailed(S_IOERR, "the disk is read-only")

    @staticmethod
    def _need_only_status(extra_out: int, what: str) -> None:
        if extra_out:
            raise RequestFailed(S_IOERR, f"{what} request with {extra_out} device-writable data bytes")

    def _image_call(self, fn, *args) -> None:
        try:
            fn(*args)
        except (OSError, ValueError) as exc:
            name = errno.errorcode.get(getattr(exc, "errno", None) or 0, type(exc).__name__)
            raise RequestFailed(S_IOERR, f"image error {name}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - a bug in the image layer is still an I/O error
            log.error("virtio-blk: image %s raised", getattr(fn, "__name__", fn), exc_info=exc)
            raise RequestFailed(S_IOERR, f"image raised {type(exc).__name__}") from exc

    # --- life cycle -------------------------------------------------------------------------------------
    def activate(self, driver_features: int, queues: list[Virtqueue]) -> None:
        super().activate(driver_features, queues)
        if self._gate is not None:
            self._gate.recheck()          # after a restore, held-back requests are on the ring

    def reset(self) -> None:
        super().reset()
        if self._gate is not None:
            self._gate.clear()

    # --- saved state -----------------------------------------------------------------------------------
    def save(self) -> dict[str, Any]:
        return {"flush_failed": self.flush_failed}

    def restore(self, state: Mapping[str, Any]) -> None:
        # A flush that failed in this process stays failed whatever the state says.
        self.flush_failed = self.flush_failed or bool(state_int(state, "flush_failed", 0, 1))
