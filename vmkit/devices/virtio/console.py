"""virtio-console with one port (virtio 1.2, 5.3 "Console Device").

No VIRTIO_CONSOLE_F_MULTIPORT, so there are just the two queues of port 0
(5.3.2): receiveq0 (index 0, host -> guest) and transmitq0 (index 1, guest ->
host), and Linux turns the port into the hvc0 console (`console=hvc0`).
VIRTIO_CONSOLE_F_EMERG_WRITE is offered: a byte written to `emerg_wr` in the
configuration space (5.3.4) is output at once, even before the queues exist.

Output: every device-readable byte the guest posts on transmitq0 goes to
`output(bytes)`, in pieces of at most OUTPUT_CHUNK bytes and at most
MAX_TX_REQUEST bytes per request (the rest is counted in `dropped_output`);
rate limits are the output's business (the board's console).

Input: `push_input(bytes)` queues host input, at most INPUT_BACKLOG_LIMIT
bytes (more is counted in `dropped_input`), and it moves into the receive
buffers the guest posts on receiveq0 as soon as there are some: now, or when
the driver next notifies receiveq0.  Pending input survives a device reset
(like the UART's backlog: typed before the driver came up, read after).

Not thread-safe: call `push_input` from the thread that runs the machine.
"""

import struct
from collections.abc import Callable, Mapping
from typing import Any

from vmkit.devices.device import state_bytes, state_int
from vmkit.devices.virtio.device import ID_CONSOLE, VirtioDevice
from vmkit.devices.virtio.queue import scatter

# --- feature bits (5.3.3) ------------------------------------------------------------------------
F_SIZE = 1 << 0
F_MULTIPORT = 1 << 1
F_EMERG_WRITE = 1 << 2

RECEIVEQ = 0
TRANSMITQ = 1
QUEUE_SIZE = 128                   # as QEMU's virtio-serial port queues
INPUT_BACKLOG_LIMIT = 64 * 1024
OUTPUT_CHUNK = 64 * 1024
MAX_TX_REQUEST = 1 << 20

# struct virtio_console_config (5.3.4): cols, rows, max_nr_ports, emerg_wr
CONFIG = struct.Struct("<HHII")
EMERG_WR_OFFSET = 8


class VirtioConsole(VirtioDevice):
    """virtio-console, port 0 only.  `output(data)` receives guest output."""

    device_id = ID_CONSOLE
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)
    features = F_EMERG_WRITE

    def __init__(self, output: Callable[[bytes], None]) -> None:
        super().__init__()
        self._output = output
        self._pending = bytearray()    # host input not yet in a receive buffer
        self.dropped_input = 0
        self.dropped_output = 0

    # --- host side ----------------------------------------------------------------------------
    def push_input(self, data: bytes) -> None:
        """Queue keyboard input; it reaches the guest through receiveq0."""
        room = INPUT_BACKLOG_LIMIT - len(self._pending)
        self._pending += data[:max(room, 0)]
        if len(data) > room:
            self.dropped_input += len(data) - max(room, 0)
        self._guarded(self._deliver_input)

    @property
    def pending_input(self) -> int:
        return len(self._pending)

    # --- guest side -----------------------------------------------------------------------------
    def config_bytes(self) -> bytes:
        return CONFIG.pack(0, 0, 1, 0)

    def config_write(self, offset: int, data: bytes) -> None:
        if offset == EMERG_WR_OFFSET and len(data) == 4:
            self._output(data[:1])

    def notify(self, index: int) -> None:
        if index == RECEIVEQ:
            self._deliver_input()
        elif index == TRANSMITQ:
            self._transmit()

    def _deliver_input(self) -> None:
        if not self.active or len(self.queues) <= RECEIVEQ:
            return
        q = self.queues[RECEIVEQ]
        while self._pending and (chain := q.pop()) is not None:
            n = scatter(chain.writable, 0, bytes(self._pending[:chain.writable_len]))
            del self._pending[:n]
            q.push(chain, n)

    def _transmit(self) -> None:
        q = self.queues[TRANSMITQ]
        while (chain := q.pop()) is not None:
            budget = MAX_TX_REQUEST
            for view in chain.readable:
                for start in range(0, min(len(view), budget), OUTPUT_CHUNK):
                    self._output(bytes(view[start:min(start + OUTPUT_CHUNK, budget)]))
                self.dropped_output += max(0, len(view) - budget)
                budget = max(0, budget - len(view))
            q.push(chain, 0)

    # --- saved state --------------------------------------------------------------------------------
    def save(self) -> dict[str, Any]:
        return {"pending": bytes(self._pending), "dropped_input": self.dropped_input,
                "dropped_output": self.dropped_output}

    def restore(self, state: Mapping[str, Any]) -> None:
        pending = state_bytes(state, "pending", INPUT_BACKLOG_LIMIT)
        dropped_in = state_int(state, "dropped_input", 0, 1 << 63)
        dropped_out = state_int(state, "dropped_output", 0, 1 << 63)
        self._pending = bytearray(pending)
        self.dropped_input, self.dropped_output = dropped_in, dropped_out
