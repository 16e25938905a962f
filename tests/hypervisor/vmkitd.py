"""Drive a real vmkitd from outside, as a user's scripts would: started with
`vmkit daemon` in a state directory of its own, spoken to over its unix
socket (HTTP and the console WebSocket) and through the `vmkit` CLI.
Shared by tests/hypervisor/test_system.py and bench/density."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROMPT = b"vmkit:/# "


class Vmkitd:
    def __init__(self, state: Path, *args: str, start_timeout: float = 30) -> None:
        self.state = state
        self.sock = state / "vmkitd.sock"
        self.env = {**os.environ, "VMKIT_SOCKET": str(self.sock)}
        self.args = args
        self.start_timeout = start_timeout
        self.start()

    @property
    def log_path(self) -> Path:
        return self.state.parent / "vmkitd.log"

    def start(self) -> None:
        """Start the daemon and wait until its API answers."""
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "vmkit", "daemon", "--state-dir", str(self.state),
                                      *self.args], env=self.env, stdout=self.log, stderr=self.log)
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.sock)), base_url="http://vmkitd",
                                 timeout=30)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("vmkitd exited:\n" + self.log_path.read_text()[-3000:])
            if time.monotonic() > deadline:
                raise RuntimeError(f"vmkitd did not answer in {self.start_timeout:.0f} s")
            try:
                if self.http.get("/v1/host").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the daemon (its workers keep running) and wait for it."""
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vmkit", *args], env=self.env, capture_output=True,
                              text=True, timeout=120)

    def vm(self, name: str) -> dict:
        return self.http.get(f"/v1/vms/{name}").json()

    def log_of(self, name: str, tail: int = 4000) -> str:
        try:
            return self.http.get(f"/v1/vms/{name}/log", params={"tail": tail}).text
        except Exception as e:  # noqa: BLE001 - only for an error message
            return f"(no log: {e})"

    def wait_state(self, name: str, state: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while (vm := self.vm(name))["state"] != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} is {vm['state']}, not {state}:\n{self.log_of(name)}")
            time.sleep(0.25)
        return vm

    def console_command(self, name: str, command: str, expect: str, timeout: float = 240) -> None:
        """Wait for the shell prompt on the VM's console, run command, expect its output."""
        from websockets.sync.client import unix_connect
        with unix_connect(str(self.sock), f"ws://vmkitd/v1/vms/{name}/console") as ws:
            deadline = time.monotonic() + timeout
            buf = b""
            sent = False
            next_poke = 0.0
            while expect.encode() not in buf.split(command.encode(), 1)[-1] or not sent:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name}: no {expect!r} on the console; got {buf[-2000:]!r}\n"
                                         f"serial log:\n{self.log_of(name)}")
                if not sent and PROMPT in buf:
                    ws.send(command.encode() + b"\n")
                    sent = True
                elif not sent and time.monotonic() > next_poke:
                    ws.send(b"\n")                  # the prompt may have been printed before we attached
                    next_poke = time.monotonic() + 3
                try:
                    buf += ws.recv(timeout=0.5)
                except TimeoutError:
                    pass

    def cleanup(self) -> None:
        """Delete every VM; whatever the daemon managed, no worker of this
        state directory outlives it."""
        try:
            for vm in self.http.get("/v1/vms", timeout=10).json():
                self.http.delete(f"/v1/vms/{vm['spec']['name']}", params={"force": True}, timeout=30)
        finally:
            kill_named(str(self.state), "vmkit.hypervisor.worker")


def kill_named(*words: str) -> None:
    """SIGKILL every process (but this one) whose command line contains all of words."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if all(w.encode() in argv for w in words):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
