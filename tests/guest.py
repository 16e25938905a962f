"""Drive a guest's serial console from tests, expect-style.

Starts `python -m vmkit run ...` with pipes, collects everything the guest
prints in a background thread, and offers `expect(text)` / `send(line)`.
Every failure message carries the full console transcript, so a failing boot
test shows what the guest said.
"""

import os
import subprocess
import sys
import threading
import time


class GuestError(AssertionError):
    pass


class Guest:
    def __init__(self, args, timeout=600.0, env=None, argv=None):
        """`args` go to `vmkit run`; `argv` runs another emulator instead (QEMU, for benchmarks)."""
        self.args = argv or [sys.executable, "-m", "vmkit", "run", *args]
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env or os.environ.copy())
        self.out = bytearray()
        self.err = bytearray()
        self.deadline = time.monotonic() + timeout
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self._threads:
            t.start()
        self._pos = 0

    def _pump(self, stream, buf):
        while True:
            data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(1)
            if not data:
                break
            with self._cond:
                buf += data
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def transcript(self) -> str:
        return (self.out.decode(errors="replace") + "\n--- stderr ---\n" + self.err.decode(errors="replace"))

    def fail(self, message: str):
        self.kill()
        raise GuestError(f"{message}\n--- guest console ---\n{self.transcript}")

    def expect(self, text: str, timeout: float | None = None) -> str:
        """Wait until `text` appears after the last match; returns the output in between."""
        needle = text.encode()
        end = min(self.deadline, time.monotonic() + timeout) if timeout else self.deadline
        with self._cond:
            while True:
                i = self.out.find(needle, self._pos)
                if i >= 0:
                    seen = bytes(self.out[self._pos:i])
                    self._pos = i + len(needle)
                    return seen.decode(errors="replace")
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads[:1]):
                    break
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 1.0))
        self.fail(f"timed out waiting for {text!r} (exit status {self.proc.poll()})")

    def send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.fail(f"guest gone while sending {line!r}")

    def run(self, command: str, prompt: str) -> str:
        """Type a shell command, return what it printed before the next prompt."""
        self.send(command)
        out = self.expect(prompt)
        return out.replace("\r", "").split("\n", 1)[1] if "\n" in out else ""

    def wait(self, timeout: float | None = None) -> int:
        left = timeout if timeout is not None else max(1.0, self.deadline - time.monotonic())
        try:
            status = self.proc.wait(left)
        except subprocess.TimeoutExpired:
            self.fail("guest did not exit in time")
        for t in self._threads:
            t.join(5)
        return status

    def poweroff(self) -> None:
        """`poweroff` in the guest's shell; the VM must exit with status 0."""
        self.send("poweroff")
        status = self.wait()
        if status != 0:
            self.fail(f"exit status {status} after poweroff")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


PROMPT = "vmkit:/# "   # the default image's shell prompt


def boot_image(*extra: str, timeout: float = 400.0, budget: str = "30000000000") -> Guest:
    """The default image's kernel and initramfs (no root disk), deterministic
    clock, with `extra` options added; returns once the shell prompt is up."""
    from vmkit.images import default_image_paths
    kernel, firmware, initrd, append = default_image_paths()
    g = Guest(["--bios", str(firmware), "--kernel", str(kernel), "--initrd", str(initrd), "--append", append,
               "--clock", "deterministic", "--timeout", "1500", "--max-instructions", budget, *extra],
              timeout=timeout)
    g.expect(PROMPT)
    return g
