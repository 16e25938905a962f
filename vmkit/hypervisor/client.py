"""The CLI's client of vmkitd: HTTP over the daemon's unix socket (httpx),
and the console as a WebSocket over the same socket."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import httpx

from vmkit.hypervisor.daemon import default_socket


class ClientError(Exception):
    """The daemon said no (its message), or is not there."""

    def __init__(self, message: str, kind: str = "error", status: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class Client:
    def __init__(self, socket_path: Path | None = None, timeout: float = 60.0) -> None:
        self.socket_path = Path(socket_path or default_socket())
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket_path)),
                                  base_url="http://vmkitd", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kw):
        if not self.socket_path.exists():
            raise ClientError(f"vmkitd is not running (no socket {self.socket_path}): start it with `vmkit daemon`",
                              "unavailable")
        try:
            r = self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ClientError(f"cannot reach vmkitd at {self.socket_path}: {e}", "unavailable") from None
        if r.status_code >= 400:
            try:
                body = r.json()
                raise ClientError(body.get("message", r.text), body.get("error", "error"), r.status_code)
            except ValueError:
                raise ClientError(r.text or f"HTTP {r.status_code}", "error", r.status_code) from None
        if r.status_code == 204:
            return None
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return r.text

    def stream_events(self, since: int = 0):
        """Events from /v1/events/stream as they happen (a generator of dicts)."""
        import json
        try:
            with self._http.stream("GET", "/v1/events/stream", params={"since": since}, timeout=None) as r:
                for line in r.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.TransportError as e:
            raise ClientError(f"lost vmkitd at {self.socket_path}: {e}", "unavailable") from None

    # ------------------------------------------------------------ console

    def console(self, name: str, stdin_fd: int = 0, stdout=None) -> None:
        """Attach the terminal to the VM's console until Ctrl-A x (or the VM stops)."""
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import unix_connect

        out = stdout or sys.stdout.buffer
        try:
            ws = unix_connect(str(self.socket_path), f"ws://vmkitd/v1/vms/{name}/console")
        except ConnectionClosed as e:
            raise ClientError(e.rcvd.reason if e.rcvd else "the console closed", "conflict") from None
        except OSError as e:
            raise ClientError(f"cannot reach vmkitd at {self.socket_path}: {e}", "unavailable") from None
        except Exception as e:  # noqa: BLE001 - a refused handshake
            raise ClientError(f"console of {name!r}: {e}", "conflict") from None
        raw = os.isatty(stdin_fd)
        saved = None
        if raw:
            import termios
            import tty
            saved = termios.tcgetattr(stdin_fd)
            tty.setraw(stdin_fd)
            out.write(b"[attached to the console of " + name.encode() + b"; Ctrl-A x detaches]\r\n")
            out.flush()
        done = threading.Event()

        def pump_out():
            try:
                for msg in ws:
                    out.write(msg if isinstance(msg, bytes) else msg.encode())
                    out.flush()
            except ConnectionClosed:
                pass
            finally:
                done.set()

        threading.Thread(target=pump_out, daemon=True).start()
        escape = False
        try:
            while not done.is_set():
                data = os.read(stdin_fd, 1024)
                if not data:
                    break
                send = bytearray()
                for b in data:
                    if escape:
                        escape = False
                        if b in (ord("x"), ord("X")):
                            return
                        if b != 0x01:
                            send.append(0x01)
                        send.append(b)
                    elif b == 0x01:
                        escape = True
                    else:
                        send.append(b)
                if send:
                    ws.send(bytes(send))
        finally:
            if saved is not None:
                import termios
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
                out.write(b"\r\n[detached]\r\n")
                out.flush()
            ws.close()
