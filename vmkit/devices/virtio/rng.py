"""virtio-entropy (virtio 1.2, 5.4 "Entropy Device"): one request queue,
no feature bits, no configuration space.

The driver posts device-writable buffers; the device fills them with random
bytes from the host (`os.urandom`).  5.4.6.2 lets the device use less than the
whole buffer, so each request gets at most MAX_REQUEST bytes: a guest cannot
make the host generate (or hold) more than that per request.  Device-readable
buffers in a request are ignored (5.4.6.1: the driver must not post them).
"""

import os
from collections.abc import Callable

from vmkit.devices.virtio.device import ID_ENTROPY, VirtioDevice
from vmkit.devices.virtio.queue import scatter

QUEUE_SIZE = 8            # as QEMU's virtio-rng
MAX_REQUEST = 64 * 1024   # bytes of entropy per request


class VirtioRng(VirtioDevice):
    """virtio-rng.  `source(n)` returns n random bytes (os.urandom; a test or
    a deterministic run may pass its own)."""

    device_id = ID_ENTROPY
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, source: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__()
        self.source = source
        self.bytes_served = 0

    def notify(self, index: int) -> None:
        q = self.queues[index]
        while (chain := q.pop()) is not None:
            n = min(chain.writable_len, MAX_REQUEST)
            written = scatter(chain.writable, 0, self.source(n)[:n]) if n else 0
            self.bytes_served += written
            q.push(chain, written)
