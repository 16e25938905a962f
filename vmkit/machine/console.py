"""The host side of the guest's serial console.

`stdio` on a terminal is raw: every keystroke goes to the guest and Ctrl-A
is the escape key, as in QEMU (-nographic): Ctrl-A x quits, Ctrl-A h prints
help, Ctrl-A Ctrl-A sends a literal Ctrl-A.  When stdin/stdout are not a
terminal, bytes stream through unchanged so scripts and tests can drive the
guest.  `file:PATH` writes the output to a file, `none` discards it.  The
last 64 KiB of output are kept for error reports (`tail`).
"""

import os
import sys
import threading
from collections import deque

CTRL_A = 0x01
TAIL_BYTES = 64 * 1024

HELP = (b"\r\nC-a h    print this help\r\n"
        b"C-a x    exit the emulator\r\n"
        b"C-a C-a  send C-a\r\n")


class ConsoleError(ValueError):
    pass


class Console:
    def __init__(self, spec: str = "stdio", stdin=None, stdout=None) -> None:
        self.spec = spec
        self.quit_requested = False
        self._tail = bytearray()
        self._input = deque()
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._escape = False
        self._tty_state = None
        self._out = None
        self._out_file = None
        self._in_fd = None
        self._reading = False
        if spec == "stdio":
            self._out = stdout if stdout is not None else sys.stdout.buffer
            stdin = stdin if stdin is not None else sys.stdin
            try:
                self._in_fd = stdin.fileno()
            except (AttributeError, OSError, ValueError):
                self._in_fd = None
        elif spec.startswith("file:"):
            path = spec[5:]
            if not path:
                raise ConsoleError("--console file:PATH needs a path")
            try:
                self._out_file = open(path, "ab", buffering=0)
            except OSError as e:
                raise ConsoleError(f"--console {spec}: {e.strerror}") from None
        elif spec != "none":
            raise ConsoleError(f"--console must be stdio, file:PATH or none (got {spec!r})")
        self.raw = self._in_fd is not None and os.isatty(self._in_fd) and self._is_tty_out()

    def _is_tty_out(self) -> bool:
        try:
            return os.isatty(self._out.fileno())
        except (AttributeError, OSError, ValueError):
            return False

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self.raw:
            import termios
            import tty
            self._tty_state = termios.tcgetattr(self._in_fd)
            tty.setraw(self._in_fd)
        if self._in_fd is not None:
            self._reading = True
            threading.Thread(target=self._reader, name="console-input", daemon=True).start()

    def close(self) -> None:
        if self._tty_state is not None:
            import termios
            termios.tcsetattr(self._in_fd, termios.TCSADRAIN, self._tty_state)
            self._tty_state = None
        if self._out_file is not None:
            self._out_file.close()
            self._out_file = None

    # --- input -------------------------------------------------------------------------
    @property
    def input_open(self) -> bool:
        """True while more input may still arrive (stdin not at end of file)."""
        return self._reading

    def _reader(self) -> None:
        self._reading = True
        try:
            self._read_loop()
        finally:
            self._reading = False

    def _read_loop(self) -> None:
        while True:
            try:
                data = os.read(self._in_fd, 4096)
            except OSError:
                return
            if not data:
                return
            if self.raw:
                data = self._filter_escapes(data)
            if data:
                with self._lock:
                    self._input.append(data)
            self._event.set()
            if self.quit_requested:
                return

    def _filter_escapes(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if self._escape:
                self._escape = False
                if b in (ord("x"), ord("X")):
                    self.quit_requested = True
                    break
                if b in (ord("h"), ord("H"), ord("?")):
                    self._emit(HELP)
                elif b == CTRL_A:
                    out.append(CTRL_A)
                continue
            if b == CTRL_A:
                self._escape = True
                continue
            out.append(b)
        return bytes(out)

    def feed(self, data: bytes) -> None:
        """Queue input as if typed (used by tests and the hypervisor)."""
        with self._lock:
            self._input.append(bytes(data))
        self._event.set()

    def take_input(self) -> bytes:
        with self._lock:
            if not self._input:
                return b""
            data = b"".join(self._input)
            self._input.clear()
        self._event.clear()
        return data

    def wait(self, timeout: float) -> None:
        """Sleep until input arrives or `timeout` seconds pass."""
        self._event.wait(timeout)

    # --- output ------------------------------------------------------------------------
    def _emit(self, data: bytes) -> None:
        if self._out is not None:
            try:
                self._out.write(data)
                self._out.flush()
            except (OSError, ValueError):
                pass

    def write(self, data: bytes) -> None:
        self._tail += data
        if len(self._tail) > TAIL_BYTES:
            del self._tail[:len(self._tail) - TAIL_BYTES]
        if self._out_file is not None:
            self._out_file.write(data)
        else:
            self._emit(data)

    @property
    def tail(self) -> bytes:
        return bytes(self._tail)
