"""virtio-net with one queue pair (virtio 1.2, 5.1 "Network Device").

Offered (5.1.3): VIRTIO_NET_F_MAC and VIRTIO_NET_F_STATUS (the link is always
up); the transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX.  No checksum
or segmentation offloads, no mergeable receive buffers, no control queue, no
multiqueue, so there are two queues (5.1.2): receiveq1 (index 0) and
transmitq1 (index 1).  The configuration space (5.1.4) is `mac[6]` and
`le16 status`; the fields after it belong to features we do not offer.

Every buffer starts with the 12-byte struct virtio_net_hdr (5.1.6: with
VERSION_1 it always has num_buffers).

Transmit (5.1.6.2): a chain on transmitq1 is the header then the Ethernet
frame, all device-readable.  The header must say "nothing to do" (flags 0,
gso_type GSO_NONE: we offered no offload, and DATA_VALID / RSC_INFO are for
received packets only); the other fields are ignored, as QEMU does when no
offload is in use.  A chain with device-writable buffers, a bogus header, a
frame shorter than an Ethernet header or longer than MAX_TX_FRAME is dropped
and counted in `counters["tx_dropped_malformed"]`; the chain still goes back
to the driver (used length 0), so a broken frame never stops the queue.  Good
frames go to `backend.send(frame)`; an exception there drops the frame
(`tx_dropped_backend`) and the device keeps working (RELIABILITY.md,
"Network").  A chain that breaks the ring protocol itself (readable after
writable, out of RAM, ...) is the ring's business: VirtqueueError, and the
transport sets DEVICE_NEEDS_RESET (queue.py).

Receive (5.1.6.3, 5.1.6.4): the backend calls `deliver(frame)`, which only
queues the frame in a bounded host-side backlog (rx_backlog_frames frames
and rx_backlog_bytes bytes; more is dropped and counted in `rx_dropped_full`).
Frames move into the buffers the driver posted on receiveq1 when the board
calls `poll()` and when the driver notifies receiveq1 (it does when it adds
buffers, and with EVENT_IDX we ask for exactly that: queue.py sets
avail_event when the ring is empty), so a frame that arrives while the guest
has no buffers waits, up to the bound.  Each frame takes one chain (no
mergeable buffers: num_buffers = 1); a frame that does not fit the chain is
dropped (`rx_dropped_small_buffer`) and the chain returned with length 0,
which Linux counts as a length error and recycles.  The interrupt follows
the queue's event suppression rules (2.7.7, 2.7.10), checked once per batch
by the transport.  Frames the backend hands over that no driver without
offloads can take (shorter than 14 or longer than MAX_RX_FRAME bytes) are
refused by `deliver` (`rx_dropped_malformed`).

Rate limits (vmkit/devices/ratelimit.py): `tx_rate_limiter` counts each
transmit chain as one operation of its frame's bytes (everything after the
virtio-net header), `rx_rate_limiter` each frame moved into the guest.  A
transmit chain the limiter refuses goes back on the ring
(`Virtqueue.undo_pop`) and transmitq1 waits; a refused received frame stays
first in the backlog, and the backlog's bound is the only thing that drops
frames (counted in `rx_dropped_full` as before).  `poll()` takes both
directions up again once `next_deadline()` has come.

A device reset drops the backlog (`rx_dropped_reset`): those frames were
meant for the guest OS that just went away.  Frames delivered after the
reset and before DRIVER_OK are kept.  (Linux resets the device when it
registers it, so frames from before the driver loaded are dropped there.)

Not thread-safe: `deliver` and `poll` are called from the thread that runs
the machine.
"""

import logging
import struct
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from vmkit.devices.device import DeviceStateError, guest_error, state_int
from vmkit.devices.ratelimit import QueueGate, RateLimiter
from vmkit.devices.virtio.device import VirtioDevice
from vmkit.devices.virtio.queue import Chain, Virtqueue, gather, scatter

log = logging.getLogger(__name__)

ID_NET = 1                        # device ID (5)

# --- feature bits (5.1.3) ----------------------------------------------------------------------
F_MAC = 1 << 5
F_STATUS = 1 << 16

# --- configuration space (5.1.4) ---------------------------------------------------------------
S_LINK_UP = 1                     # VIRTIO_NET_S_LINK_UP
CONFIG = struct.Struct("<6sH")    # mac, status

# --- struct virtio_net_hdr (5.1.6) -------------------------------------------------------------
# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers
HDR = struct.Struct("<BBHHHHH")
HDR_F_NEEDS_CSUM = 1
HDR_F_DATA_VALID = 2
HDR_F_RSC_INFO = 4
GSO_NONE = 0
RX_HDR = HDR.pack(0, GSO_NONE, 0, 0, 0, 0, 1)    # num_buffers = 1: one chain per frame

RECEIVEQ = 0
TRANSMITQ = 1
QUEUE_SIZE = 256                  # QEMU's default rx/tx queue size

ETH_HLEN = 14
# The largest frame a driver without offloads expects: 1500-byte MTU (no
# VIRTIO_NET_F_MTU) plus the Ethernet and VLAN headers, Linux's GOOD_PACKET_LEN.
MAX_RX_FRAME = ETH_HLEN + 4 + 1500
MAX_TX_FRAME = 65535
RX_BACKLOG_FRAMES = 256
RX_BACKLOG_BYTES = 4 << 20

COUNTERS = ("tx_frames", "rx_frames", "tx_dropped_malformed", "tx_dropped_backend",
            "rx_dropped_malformed", "rx_dropped_full", "rx_dropped_small_buffer", "rx_dropped_reset")
_BACKEND_TRACEBACKS = 8           # full tracebacks logged for backend errors; later ones are counted


class NetBackend(Protocol):
    """Where transmitted frames go (the user-mode NAT, a test's list).  It
    hands received frames to the device with `VirtioNet.deliver`."""

    def send(self, frame: bytes) -> None: ...


class VirtioNet(VirtioDevice):
    """virtio-net with MAC address `mac` (6 bytes, unicast) over `backend`;
    `tx_rate_limiter` / `rx_rate_limiter` (None: unlimited) throttle each
    direction (see the module docstring)."""

    device_id = ID_NET
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)
    features = F_MAC | F_STATUS

    def __init__(self, backend: NetBackend, mac: bytes, *, rx_backlog_frames: int = RX_BACKLOG_FRAMES,
                 rx_backlog_bytes: int = RX_BACKLOG_BYTES, tx_rate_limiter: RateLimiter | None = None,
                 rx_rate_limiter: RateLimiter | None = None) -> None:
        super().__init__()
        mac = bytes(mac)
        if len(mac) != 6 or mac[0] & 1 or mac == bytes(6):
            raise ValueError(f"MAC address {mac.hex(':')} must be 6 bytes, unicast and not all zero")
        if rx_backlog_frames < 1 or rx_backlog_bytes < MAX_RX_FRAME:
            raise ValueError(f"receive backlog of {rx_backlog_frames} frames / {rx_backlog_bytes} bytes "
                             f"cannot hold one {MAX_RX_FRAME}-byte frame")
        self.backend = backend
        self.mac = mac
        self.rx_backlog_frames = rx_backlog_frames
        self.rx_backlog_bytes = rx_backlog_bytes
        self._backlog: deque[bytes] = deque()
        self._backlog_bytes = 0
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.tx_rate_limiter = tx_rate_limiter
        self.rx_rate_limiter = rx_rate_limiter
        self._tx_gate = QueueGate(tx_rate_limiter) if tx_rate_limiter is not None else None
        self._rx_gate = QueueGate(rx_rate_limiter) if rx_rate_limiter is not None else None

    # --- configuration space ------------------------------------------------------------------
    def config_bytes(self) -> bytes:
        return CONFIG.pack(self.mac, S_LINK_UP)

    # --- host side ------------------------------------------------------------------------------
    def deliver(self, frame: bytes) -> bool:
        """Queue a received Ethernet frame for the guest; False when it was
        dropped (malformed, or the backlog is full).  It reaches guest RAM at
        the next `poll()` or receiveq1 notification."""
        n = len(frame)
        if not ETH_HLEN <= n <= MAX_RX_FRAME:
            self.counters["rx_dropped_malformed"] += 1
            return False
        if (len(self._backlog) >= self.rx_backlog_frames
                or self._backlog_bytes + n > self.rx_backlog_bytes):
            self.counters["rx_dropped_full"] += 1
            return False
        self._backlog.append(bytes(frame))
        self._backlog_bytes += n
        return True

    def poll(self) -> None:
        """Move backlogged frames into the guest's receive buffers and take
        a throttled transmitq1 up again once its limiter allows (called by
        the board from its run loop)."""
        # Deadlines are cleared before the work (QueueGate); the work sets
        # them again if still throttled.
        if self._backlog and (self._rx_gate is None or not self._rx_gate.waiting()):
            self._guarded(self._receive)
        if self._tx_gate is not None and self._tx_gate.take_due():
            self._guarded(self._transmit)

    def next_deadline(self) -> float | None:
        """When (limiter clock seconds, possibly already past) `poll()` has
        throttled work to take up again; None when neither direction waits
        for its limiter."""
        rx = self._rx_gate.ready_at if self._backlog and self._rx_gate is not None else None
        tx = self._tx_gate.ready_at if self._tx_gate is not None else None
        if rx is None or tx is None:
            return tx if rx is None else rx
        return min(rx, tx)

    @property
    def rx_pending(self) -> int:
        """Frames waiting for receive buffers."""
        return len(self._backlog)

    # --- guest side -------------------------------------------------------------------------------
    def notify(self, index: int) -> None:
        if index == RECEIVEQ:
            self._receive()
        elif index == TRANSMITQ:
            self._transmit()

    def _receive(self) -> None:
        if not self.active or len(self.queues) <= RECEIVEQ:
            return
        gate = self._rx_gate
        if gate is not None and gate.waiting():
            return
        q = self.queues[RECEIVEQ]
        while self._backlog and (chain := q.pop()) is not None:
            if gate is not None and not gate.admit(len(self._backlog[0])):
                q.undo_pop()              # the frame stays first in the backlog
                return
            frame = self._backlog.popleft()
            self._backlog_bytes -= len(frame)
            if chain.writable_len < HDR.size + len(frame):
                guest_error(log, "virtio-net: %d-byte receive buffer for a %d-byte frame, frame dropped",
                            chain.writable_len, len(frame))
                self.counters["rx_dropped_small_buffer"] += 1
                q.push(chain, 0)
                continue
            # Device-readable buffers in a receive chain (5.1.6.3.1 forbids
            # them) are skipped: only chain.writable is written.
            n = scatter(chain.writable, 0, RX_HDR)
            n += scatter(chain.writable, n, frame)
            q.push(chain, n)
            self.counters["rx_frames"] += 1

    def _transmit(self) -> None:
        if not self.active or len(self.queues) <= TRANSMITQ:
            return
        gate = self._tx_gate
        if gate is not None and gate.waiting():
            return                        # still throttled: poll() takes the queue up
        q = self.queues[TRANSMITQ]
        while (chain := q.pop()) is not None:
            if gate is not None and not gate.admit(max(0, chain.readable_len - HDR.size)):
                q.undo_pop()              # it stays first on the ring
                return
            frame = self._tx_frame(chain)
            q.push(chain, 0)
            if frame is None:
                self.counters["tx_dropped_malformed"] += 1
                continue
            try:
                self.backend.send(frame)
            except Exception as exc:  # noqa: BLE001 - a backend failure loses a frame, not the NIC
                self.counters["tx_dropped_backend"] += 1
                if self.counters["tx_dropped_backend"] <= _BACKEND_TRACEBACKS:
                    log.error("virtio-net: backend send raised %s: %s; frame dropped",
                              type(exc).__name__, exc, exc_info=exc)
                continue
            self.counters["tx_frames"] += 1

    @staticmethod
    def _tx_frame(chain: Chain) -> bytes | None:
        """The Ethernet frame of a transmit chain, or None (and why, logged as
        a guest error) when it must be dropped."""
        if chain.writable_len:
            guest_error(log, "virtio-net: transmit chain with %d device-writable bytes", chain.writable_len)
            return None
        length = chain.readable_len - HDR.size
        if not ETH_HLEN <= length <= MAX_TX_FRAME:
            guest_error(log, "virtio-net: transmit chain of %d bytes: frame of %d bytes is not in %d..%d",
                        chain.readable_len, length, ETH_HLEN, MAX_TX_FRAME)
            return None
        flags, gso_type, *_ = HDR.unpack(gather(chain.readable, 0, HDR.size))
        if flags or gso_type != GSO_NONE:
            # NEEDS_CSUM and GSO need offloads we did not offer (5.1.6.2);
            # DATA_VALID and RSC_INFO are for received packets only.
            guest_error(log, "virtio-net: transmit header flags %#x gso_type %#x without offloads",
                        flags, gso_type)
            return None
        return gather(chain.readable, HDR.size, length)

    # --- life cycle ---------------------------------------------------------------------------------
    def activate(self, driver_features: int, queues: list[Virtqueue]) -> None:
        super().activate(driver_features, queues)
        if self._tx_gate is not None:
            self._tx_gate.recheck()       # after a restore, held-back frames are on transmitq1

    def reset(self) -> None:
        super().reset()
        for gate in (self._tx_gate, self._rx_gate):
            if gate is not None:
                gate.clear()
        self.counters["rx_dropped_reset"] += len(self._backlog)
        self._backlog.clear()
        self._backlog_bytes = 0

    # --- saved state --------------------------------------------------------------------------------
    def save(self) -> dict[str, Any]:
        return {"backlog": list(self._backlog), "counters": dict(self.counters)}

    def restore(self, state: Mapping[str, Any]) -> None:
        backlog = state.get("backlog") if isinstance(state, Mapping) else None
        if not isinstance(backlog, (list, tuple)) or len(backlog) > self.rx_backlog_frames:
            raise DeviceStateError(f"saved state field 'backlog' is not a list of at most "
                                   f"{self.rx_backlog_frames} frames")
        for frame in backlog:
            if not isinstance(frame, (bytes, bytearray)) or not ETH_HLEN <= len(frame) <= MAX_RX_FRAME:
                raise DeviceStateError(f"saved state field 'backlog' holds a frame that is not bytes of "
                                       f"{ETH_HLEN}..{MAX_RX_FRAME}")
        total = sum(len(f) for f in backlog)
        if total > self.rx_backlog_bytes:
            raise DeviceStateError(f"saved receive backlog of {total} bytes is more than "
                                   f"{self.rx_backlog_bytes}")
        saved = state["counters"] if isinstance(state.get("counters"), Mapping) else {}
        counters = {name: state_int(saved, name, 0, 1 << 63) for name in COUNTERS}
        self._backlog = deque(bytes(f) for f in backlog)
        self._backlog_bytes = total
        self.counters = counters
