"""The shape every virtio device has, and the facts all of them share.

Virtio 1.2: 2.1 (device status field), 2.2 and 6 (feature bits reserved for
the transport and the rings), 5 (device IDs).  A device (block, entropy,
console, ...) is a `VirtioDevice`: an ID, the feature bits it offers, a
configuration space, a list of queue sizes, and `activate` / `notify` /
`reset` / `save` / `restore`.  It never sees the transport's registers; the
transport (mmio.py) owns the status state machine, the feature negotiation,
the queue registers and the interrupt line, and calls the device:

- `activate(features, queues)` when the driver sets DRIVER_OK (2.1.2: no
  buffer is consumed before then);
- `notify(index)` when the driver kicks queue `index`;
- `reset()` when the driver writes 0 to Status (or the board resets).

A device reports trouble by raising: `VirtqueueError` for a malformed
descriptor chain (queue.py) or `VirtioRequestError` for a request it cannot
even answer (no room for a status byte).  Anything raised out of a device
method is caught by the transport, which logs it and sets
DEVICE_NEEDS_RESET (2.1.2); the VM and the other devices keep running.
Host-side entry points (a console's `push_input`) go through `_guarded` for
the same reason.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmkit.devices.virtio.queue import Virtqueue

log = logging.getLogger(__name__)

# --- device status (2.1) ---------------------------------------------------------------
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_DEVICE_NEEDS_RESET = 64
STATUS_FAILED = 128

# --- reserved feature bits (6) ----------------------------------------------------------
F_INDIRECT_DESC = 1 << 28     # VIRTIO_F_INDIRECT_DESC (2.7.5.3)
F_EVENT_IDX = 1 << 29         # VIRTIO_F_EVENT_IDX (2.7.10)
F_VERSION_1 = 1 << 32         # VIRTIO_F_VERSION_1: not a legacy device

# --- device IDs (5) ----------------------------------------------------------------------
ID_NONE = 0
ID_BLOCK = 2
ID_CONSOLE = 3
ID_ENTROPY = 4


class VirtioRequestError(Exception):
    """A request so malformed the device cannot report an error inside it
    (e.g. no device-writable byte for the status).  The transport sets
    DEVICE_NEEDS_RESET, as QEMU does (virtio_error)."""


class VirtioDevice:
    """Base class of the devices behind a virtio transport.

    Subclasses set `device_id`, `queue_sizes` (QueueNumMax of each queue),
    `features` (the device-specific bits offered; the transport adds
    VERSION_1, INDIRECT_DESC and EVENT_IDX), and override `config_bytes`,
    `notify` and, when they hold state, `reset` / `save` / `restore`.
    """

    device_id: int = ID_NONE
    queue_sizes: Sequence[int] = ()
    features: int = 0

    def __init__(self) -> None:
        self.driver_features = 0
        self.queues: list["Virtqueue"] = []
        self.active = False
        # Set by the transport when the device is plugged in (see bind).
        self._run: Callable[[Callable[[], None]], None] = _run_unbound
        self._on_config_change: Callable[[], None] = lambda: None

    # --- wiring (called by the transport) ----------------------------------------------
    def bind(self, run: Callable[[Callable[[], None]], None], on_config_change: Callable[[], None]) -> None:
        """`run(fn)` runs device work the way the transport runs `notify`:
        exceptions end in DEVICE_NEEDS_RESET, used buffers raise the
        interrupt the driver asked for.  `on_config_change()` signals a
        configuration change."""
        self._run = run
        self._on_config_change = on_config_change

    # --- configuration space (4.2.2: offset 0x100 on virtio-mmio) ----------------------
    def config_bytes(self) -> bytes:
        """The current device-specific configuration structure, little-endian."""
        return b""

    def config_write(self, offset: int, data: bytes) -> None:
        """The driver wrote `data` at `offset` of the configuration space.
        Most fields are read-only: the default ignores the write."""

    def features_error(self, driver_features: int) -> str | None:
        """Why the device cannot work with the features the driver accepted
        (FEATURES_OK is then refused, 3.1.1), or None.  The transport has
        already checked they were offered and include VERSION_1."""
        return None

    def config_changed(self) -> None:
        """Tell the driver the configuration changed (4.2.2: bumps
        ConfigGeneration and raises a configuration change interrupt)."""
        self._on_config_change()

    # --- life cycle -----------------------------------------------------------------------
    def activate(self, driver_features: int, queues: list["Virtqueue"]) -> None:
        """DRIVER_OK: the driver accepted `driver_features` and set up `queues`
        (one per `queue_sizes` entry; those not ready have `ready` False)."""
        self.driver_features = driver_features
        self.queues = queues
        self.active = True

    def notify(self, index: int) -> None:
        """The driver made buffers available on queue `index`."""

    def reset(self) -> None:
        """Back to the state before the driver found the device (2.1.2);
        anything the host configured (the image, the serial) is kept."""
        self.driver_features = 0
        self.queues = []
        self.active = False

    def save(self) -> dict[str, Any]:
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a `save()` dict (called by the transport, before `activate`).
        Check every field first: a corrupt state raises DeviceStateError and
        leaves the device unchanged."""

    # --- helpers for subclasses -------------------------------------------------------------
    def _guarded(self, fn: Callable[[], None]) -> None:
        """Run host-side work (not called through the transport, e.g. console
        input) with the transport's protection: an exception ends in
        DEVICE_NEEDS_RESET instead of escaping, and completed buffers
        interrupt the guest."""
        self._run(fn)


def _run_unbound(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - a device must never take the VM down
        log.exception("virtio device error with no transport attached")
