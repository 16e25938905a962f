"""One VM's process: `python -m vmkit.hypervisor.worker VMDIR` (docs/hypervisor.md).

Reads VMDIR/config.json (a WorkerConfig), builds the Machine and runs it on a
thread of its own; the main thread serves two unix sockets in VMDIR:
control.sock (one JSON request per line, one JSON reply each) and
console.sock (raw bytes both ways, any number of clients; the output also
goes to serial.log, capped).  It writes worker.json once up and exit.json as
it exits: code 0 after a guest poweroff, a requested stop or a kill, 1 after
a guest failure or an error.

Threads, and why:
- main: a selector loop over the sockets; it writes serial.log and answers
  requests, and never touches the machine (its devices are not thread-safe).
- machine: runs the machine in slices of SLICE_SECONDS; between slices it
  runs what the main thread posted for it (reboot, SysRq keys, a new CPU
  allowance), parks while paused, and sleeps as the throttle says.
- stopper: a graceful stop types Magic SysRq keys with pauses in between.

Graceful stop: the guest is unmodified Linux on a serial console, so the
worker asks it to power off the way a serial console can: a break followed
by a key is a Magic SysRq (CONFIG_MAGIC_SYSRQ_SERIAL; Debian's default mask
438 allows these): 5 (console log level), s (sync), u (remount read-only),
o (power off).  A guest that ignores it (still booting, SysRq disabled, its
console on hvc0) keeps running: the daemon kills it after its stop timeout.

Pause: the machine thread parks between slices; with the host clock the
guest's clock is held for as long as it was paused (Machine.hold_clock), so
it does not see time jump, and its wall clock lags by the pause, as with
QEMU's stop/cont.  Throttled time, by contrast, passes for the guest: it
sees a slower CPU.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import queue
import selectors
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from vmkit.hypervisor.models import MiB, WorkerConfig
from vmkit.hypervisor.pacer import Throttle
from vmkit.cpu.jitconfig import JitConfig, JitError
from vmkit.machine.console import Console

log = logging.getLogger("vmkit.worker")

CONFIG_JSON = "config.json"
WORKER_JSON = "worker.json"
EXIT_JSON = "exit.json"
SERIAL_LOG = "serial.log"
CONTROL_SOCK = "control.sock"
CONSOLE_SOCK = "console.sock"

SLICE_SECONDS = 0.05           # the machine thread looks at requests at least this often
THROTTLE_SLEEP_MAX = 0.2       # a throttle sleep is cut in pieces this long, to stay responsive
CONSOLE_TAIL_BYTES = 4096      # of console output, in exit.json
OUTPUT_PENDING_MAX = 4 * MiB   # output the machine made that the main thread has not yet taken
CLIENT_BACKLOG_MAX = 1 * MiB   # output owed to one slow client; past that it misses output
INPUT_PENDING_MAX = 64 * 1024  # client input the machine has not yet taken; past that it is dropped
CONTROL_LINE_MAX = 64 * 1024
PAUSE_ACK_TIMEOUT = 2.0        # how long a pause request waits for the machine thread to park
KILL_TIMEOUT = 10.0            # how long a kill waits for the machine thread to stop
# Graceful stop: each SysRq key, and the kernel's report that it is done
# (waited for up to SYSRQ_STEP_TIMEOUT before the next key).  The reports of
# sync and remount are printed at the default message level (4), which
# Debian's console level (4) hides: "5" first raises the console level so
# they show.  Waiting for each report also keeps two keys out of one receive
# interrupt, where the 8250 driver would act on the last one only.
SYSRQ_STOP = ((b"5", b"Loglevel set to 5"), (b"s", b"Emergency Sync complete"),
              (b"u", b"Emergency Remount complete"), (b"o", None))
SYSRQ_STEP_TIMEOUT = 5.0

EXIT_OK = 0
EXIT_FAILURE = 1


class WorkerError(Exception):
    """The worker cannot start: a bad config.json or VM directory."""


class SocketConsole(Console):
    """The console of a worker's VM: output goes to `sink` (the console
    socket's clients and serial.log), input arrives through `feed` (what the
    clients type).  No escape key: every byte, Ctrl-A included, is the
    guest's, and input stays open (a client may type at any time)."""

    def __init__(self, sink) -> None:
        super().__init__("none")
        self._sink = sink
        self._queued = 0
        self._queued_lock = threading.Lock()
        self.dropped_input = 0

    @property
    def input_open(self) -> bool:
        return True

    def feed(self, data: bytes) -> None:
        with self._queued_lock:
            room = max(0, INPUT_PENDING_MAX - self._queued)
            self.dropped_input += max(0, len(data) - room)
            data = data[:room]
            self._queued += len(data)
        if data:
            super().feed(data)

    def take_input(self) -> bytes:
        data = super().take_input()
        with self._queued_lock:
            self._queued -= len(data)
        return data

    def write(self, data: bytes) -> None:
        super().write(data)
        self._sink(data)


class SerialLog:
    """serial.log, at most `cap` bytes on disk: when it would pass half the
    cap it becomes serial.log.1 (replacing the older part) and starts anew."""

    def __init__(self, path: str, cap: int) -> None:
        self.path = path
        self.half = max(1, cap // 2)
        self._file = open(path, "ab", buffering=0)
        self.size = self._file.tell()

    def write(self, data: bytes) -> None:
        while data:
            room = self.half - self.size
            if room <= 0:
                self._file.close()
                os.replace(self.path, self.path + ".1")
                self._file = open(self.path, "ab", buffering=0)
                self.size = 0
                continue
            self._file.write(data[:room])
            self.size += min(room, len(data))
            data = data[room:]

    def close(self) -> None:
        self._file.close()


class _Client:
    """A connection to one of the sockets: input not yet handled, output owed."""

    def __init__(self, sock: socket.socket, kind: str) -> None:
        self.sock = sock
        self.kind = kind                # "control" or "console"
        self.inbuf = bytearray()
        self.outbuf = bytearray()


def load_config(vm_dir: Path) -> WorkerConfig:
    from pydantic import ValidationError
    path = vm_dir / CONFIG_JSON
    try:
        cfg = WorkerConfig.model_validate_json(path.read_bytes())
    except OSError as e:
        raise WorkerError(f"{path}: {e.strerror}") from None
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'the file'}: {err['msg']}"
                             for err in e.errors())
        raise WorkerError(f"{path}: {problems}") from None
    if os.path.realpath(cfg.vm_dir) != os.path.realpath(vm_dir):
        raise WorkerError(f"{path} is for the VM directory {cfg.vm_dir}, not {vm_dir}")
    return cfg


def build_machine(cfg: WorkerConfig, console: Console):
    """The Machine a WorkerConfig describes: the overlay as its disk (vda), the NIC, the host clock."""
    from vmkit.machine.board import Machine, MachineConfig
    from vmkit.machine.disks import DiskSpec
    from vmkit.machine.netspec import parse_net
    net = None
    if cfg.net:
        net = parse_net("user" + "".join(",hostfwd=" + f for f in cfg.hostfwd), mac=cfg.mac)
    config = MachineConfig(memory=cfg.memory_mib * MiB, bios=cfg.bios, kernel=cfg.kernel, initrd=cfg.initrd,
                           append=cfg.append, clock=cfg.clock, disks=[DiskSpec(cfg.disk, "qcow2")], net=net,
                           limits=cfg.limits, jit=JitConfig(mode=cfg.jit))
    return Machine(config, console)


def capped_allowance(allowance: float, cpu_max: float) -> float:
    """The allowance the worker enforces: the pacer's, capped by cpu_max (0 = no word, no cap)."""
    if cpu_max <= 0:
        return allowance
    return cpu_max if allowance <= 0 else min(allowance, cpu_max)


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_json(path: str, data: dict) -> None:
    """Write `path` atomically: readers see the old file or the whole new one."""
    tmp = f".{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_exit(reason: str, code: int, console_tail: bytes) -> None:
    write_json(EXIT_JSON, {"reason": reason, "exit_code": code,
                           "console_tail": console_tail[-CONSOLE_TAIL_BYTES:].decode(errors="replace"),
                           "time": time.time()})


class Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.state = "running"          # running, paused, stopping (docs/hypervisor.md)
        self.allowance = capped_allowance(0.0, cfg.limits.cpu_max)
        self.throttle = Throttle(self.allowance)   # the machine thread's
        self.result = None              # the machine's RunResult when the guest stopped it
        self.error: BaseException | None = None
        self.console_dropped = 0        # output bytes some client missed
        self._kill_reason: str | None = None
        self._kill_at = 0.0
        self._pause = False
        self._stopping = False
        self._parked = threading.Event()
        self._wake = threading.Event()  # wakes the machine thread from a park or a throttle sleep
        self._requests: queue.SimpleQueue = queue.SimpleQueue()   # callables for the machine thread
        self._out = bytearray()         # output for the main thread to hand out
        self._out_lock = threading.Lock()
        self._printed = 0               # output bytes so far (the stopper watches it)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.console = SocketConsole(self._on_output)
        self.serial_log = SerialLog(SERIAL_LOG, cfg.limits.console_log_bytes)
        self.machine = build_machine(cfg, self.console)
        self.sel = selectors.DefaultSelector()
        self.listeners: list[tuple[str, socket.socket]] = []
        self.clients: list[_Client] = []
        self.thread = threading.Thread(target=self._run_machine, name="machine", daemon=True)

    # --- the main thread ---------------------------------------------------------------
    def serve(self) -> int:
        """Run the VM until it stops; returns the process's exit code."""
        try:
            for name, kind in ((CONTROL_SOCK, "control"), (CONSOLE_SOCK, "console")):
                self._listen(name, kind)
            self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, _: self._kill(f"killed by {signal.Signals(signum).name}"))
            self.thread.start()
            write_json(WORKER_JSON, {"pid": os.getpid(), "started": time.time()})
            log.info("%s: running (pid %d)", self.cfg.name, os.getpid())
            while self.thread.is_alive():
                if self._kill_reason and time.monotonic() - self._kill_at > KILL_TIMEOUT:
                    log.error("the machine thread did not stop in %.0f s", KILL_TIMEOUT)
                    break
                for key, mask in self.sel.select(timeout=0.1):
                    self._on_event(key, mask)
        except Exception as e:  # noqa: BLE001 - whatever it was, exit.json must say so
            log.exception("the worker failed")
            self.error = self.error or e
        return self._finish()

    def _listen(self, name: str, kind: str) -> None:
        # The sockets are bound by relative name: the process works in the VM
        # directory, and a full path could pass the 107 bytes sun_path holds.
        # One left here by a worker that died goes (main() holds the
        # directory's lock: no other worker is serving it).
        Path(name).unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(name)                 # mode 0600: main() set the umask
        sock.listen(16)
        sock.setblocking(False)
        self.listeners.append((name, sock))
        self.sel.register(sock, selectors.EVENT_READ, kind)

    def _on_event(self, key, mask) -> None:
        what = key.data
        if what == "wake":
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            self._hand_out_output()
        elif isinstance(what, str):     # a listener
            try:
                sock, _ = key.fileobj.accept()
            except OSError:
                return
            sock.setblocking(False)
            client = _Client(sock, what)
            self.clients.append(client)
            self.sel.register(sock, selectors.EVENT_READ, client)
        else:
            if mask & selectors.EVENT_WRITE:
                self._send(what, b"")
            if mask & selectors.EVENT_READ:
                self._receive(what)

    def _receive(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
        elif client.kind == "console":
            self.console.feed(data)
        else:
            client.inbuf += data
            while b"\n" in client.inbuf and client in self.clients:
                line, _, rest = bytes(client.inbuf).partition(b"\n")
                client.inbuf[:] = rest
                if line.strip():
                    self._send(client, json.dumps(self._request(line)).encode() + b"\n")
            if len(client.inbuf) > CONTROL_LINE_MAX:
                self._send(client, b'{"ok": false, "error": "request line too long"}\n')
                self._drop(client)

    def _send(self, client: _Client, data: bytes) -> None:
        """Send what the client is owed and `data`, as much as it takes now; keep the rest."""
        client.outbuf += data
        try:
            sent = client.sock.send(client.outbuf) if client.outbuf else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop(client)
            return
        del client.outbuf[:sent]
        if len(client.outbuf) > CLIENT_BACKLOG_MAX:
            # A client that does not read misses output rather than holding the VM back.
            with self._out_lock:
                self.console_dropped += len(client.outbuf) - CLIENT_BACKLOG_MAX
            del client.outbuf[:len(client.outbuf) - CLIENT_BACKLOG_MAX]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbuf else 0)
        if self.sel.get_key(client.sock).events != events:
            self.sel.modify(client.sock, events, client)

    def _drop(self, client: _Client) -> None:
        if client in self.clients:
            self.clients.remove(client)
            self.sel.unregister(client.sock)
            client.sock.close()

    def _hand_out_output(self) -> None:
        with self._out_lock:
            data = bytes(self._out)
            self._out.clear()
        if data:
            self.serial_log.write(data)
            for client in [c for c in self.clients if c.kind == "console"]:
                self._send(client, data)

    # --- requests ------------------------------------------------------------------------
    def _request(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object, e.g. {\"op\": \"status\"}")
            return self._handle(request)
        except ValueError as e:
            return {"ok": False, "error": f"bad request: {e}"}
        except Exception as e:  # noqa: BLE001 - one bad request must not end the VM
            log.exception("request %r failed", line[:200])
            return {"ok": False, "error": f"internal error: {e}"}

    def _handle(self, request: dict) -> dict:
        op = request.get("op")
        match op:
            case "status":
                return self._status()
            case "pause":
                if self._stopping:
                    return {"ok": False, "error": "the VM is stopping"}
                self._pause = True
                self._wake.set()
                # Answer once the CPU has stopped, so "paused" means it.
                self._parked.wait(PAUSE_ACK_TIMEOUT)
                self.state = "paused"
            case "resume":
                self._pause = False
                self._wake.set()
                if not self._stopping:
                    self.state = "running"
            case "stop":
                self._stop()
            case "kill":
                self._kill("killed")
            case "reboot":
                log.info("reboot requested")
                self._post(self.machine.boot)
            case "cpu":
                allowance = request.get("allowance")
                if isinstance(allowance, bool) or not isinstance(allowance, (int, float)) \
                        or not math.isfinite(allowance) or allowance < 0:
                    return {"ok": False, "error": "cpu needs \"allowance\": a number of cores >= 0"}
                self.allowance = capped_allowance(float(allowance), self.cfg.limits.cpu_max)
                self._post(lambda a=self.allowance: self.throttle.set_allowance(a))
            case _:
                return {"ok": False, "error": f"unknown op {op!r}: use status, pause, resume, stop, "
                                              "kill, reboot or cpu"}
        return {"ok": True, "state": self.state}

    def _status(self) -> dict:
        return {"ok": True, "state": self.state, "instructions": self.machine.hart.instret,
                "cpu_seconds": time.process_time(), "rss": rss_bytes(), "allowance": self.allowance,
                "console_dropped": self.console_dropped, "input_dropped": self.console.dropped_input}

    def _post(self, fn) -> None:
        """Run `fn` on the machine thread, between slices."""
        self._requests.put(fn)
        self._wake.set()

    def _kill(self, reason: str) -> None:
        if self._kill_reason is None:
            log.info("%s", reason)
            self._kill_reason = reason
            self._kill_at = time.monotonic()
        self._wake.set()

    def _stop(self) -> None:
        if self._stopping:
            return
        log.info("stop requested: SysRq sync, remount read-only, power off")
        self._stopping = True
        self.state = "stopping"
        self._pause = False
        self._wake.set()
        threading.Thread(target=self._sysrq_poweroff, name="stopper", daemon=True).start()

    def _sysrq_poweroff(self) -> None:
        """The stopper thread: each SysRq key, then wait for the kernel's report."""
        for key, report in SYSRQ_STOP:
            mark = self._printed
            self._post(lambda k=key: self._sysrq(k))
            deadline = time.monotonic() + SYSRQ_STEP_TIMEOUT
            while report and time.monotonic() < deadline and self.thread.is_alive():
                if report in self._printed_since(mark):
                    break
                time.sleep(0.05)

    def _printed_since(self, mark: int) -> bytes:
        n = self._printed - mark
        return self.console.tail[-n:] if n > 0 else b""

    # --- the machine thread ---------------------------------------------------------------
    def _run_machine(self) -> None:
        try:
            while self._kill_reason is None:
                # Cleared before looking at requests and flags, so a request
                # posted after this point cuts the next wait short.
                self._wake.clear()
                self._run_requests()
                if self._pause:
                    self._park()
                    continue
                wait = self.throttle.wait_needed(time.process_time(), time.monotonic())
                if wait > 0:
                    # The CPU tier's compile thread is this VM's CPU use too.
                    self.machine.hart.hold_translation(True)
                    self._wake.wait(min(wait, THROTTLE_SLEEP_MAX))
                    continue
                self.machine.hart.hold_translation(False)
                result = self.machine.run(timeout=SLICE_SECONDS)
                if result.reason != "timeout":
                    self.result = result
                    return
        except Exception as e:  # noqa: BLE001 - reported in exit.json
            log.exception("the machine failed")
            self.error = e
        finally:
            self._wake_main()

    def _run_requests(self) -> bool:
        ran = False
        while True:
            try:
                fn = self._requests.get_nowait()
            except queue.Empty:
                return ran
            fn()
            ran = True

    def _park(self) -> None:
        """Paused: run no instructions until resumed or killed."""
        since = time.monotonic_ns()
        self._parked.set()
        self.machine.hart.hold_translation(True)
        try:
            while self._pause and self._kill_reason is None:
                self._wake.clear()
                if self._run_requests():
                    since = time.monotonic_ns()   # a reboot restarts the clock: count from here
                if not self._pause:
                    break
                self._wake.wait(0.5)
        finally:
            self._parked.clear()
        self.machine.hold_clock(time.monotonic_ns() - since)

    def _sysrq(self, key: bytes) -> None:
        self.machine.uart.push_break()
        self.machine.uart.push_input(key)

    def _on_output(self, data: bytes) -> None:
        """Console output (on the machine thread): queue it for the main thread."""
        self._printed += len(data)
        with self._out_lock:
            wake = not self._out
            room = max(0, OUTPUT_PENDING_MAX - len(self._out))
            self.console_dropped += max(0, len(data) - room)
            self._out += data[:room]
        if wake:
            self._wake_main()

    def _wake_main(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass    # the pipe is full: the main thread has a wake-up waiting already

    # --- the end --------------------------------------------------------------------------
    def _outcome(self) -> tuple[str, int]:
        if self.error is not None:
            return str(self.error) or type(self.error).__name__, EXIT_FAILURE
        if self._kill_reason is not None and self.result is None:
            return self._kill_reason, EXIT_OK if not self.thread.is_alive() else EXIT_FAILURE
        if self.result is not None and self.result.reason == "poweroff":
            return "poweroff", EXIT_OK
        if self.result is not None and self.result.reason == "fail":
            return f"guest failure (exit code {self.result.exit_code})", EXIT_FAILURE
        return f"the machine stopped: {self.result.reason if self.result else 'unknown'}", EXIT_FAILURE

    def _finish(self) -> int:
        reason, code = self._outcome()
        if self.thread.is_alive():
            # It may be inside a device: closing the disks under it could tear a write.
            log.error("not closing the machine: its thread is still running")
        else:
            self.machine.close()        # flushes the disks
        self._hand_out_output()
        for client in list(self.clients):
            try:
                client.sock.setblocking(True)
                client.sock.settimeout(1.0)
                client.sock.sendall(client.outbuf)
            except OSError:
                pass
            self._drop(client)
        for name, sock in self.listeners:
            sock.close()
            Path(name).unlink(missing_ok=True)
        self.serial_log.close()
        write_exit(reason, code, self.console.tail)
        log.info("%s: exit %d: %s", self.cfg.name, code, reason)
        return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m vmkit.hypervisor.worker VMDIR", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.umask(0o177)         # sockets, logs and JSON files: mode 0600, the owner's only
    vm_dir = Path(args[0]).absolute()
    try:
        os.chdir(vm_dir)
    except OSError as e:
        print(f"vmkit-worker: error: {vm_dir}: {e.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    if not lock_vm_dir():
        print(f"vmkit-worker: error: another worker runs in {vm_dir}", file=sys.stderr)
        return EXIT_FAILURE     # and its files are left alone
    for stale in (WORKER_JSON, EXIT_JSON):
        Path(stale).unlink(missing_ok=True)
    from vmkit.machine.board import MachineError
    from vmkit.machine.loader import LoadError
    from vmkit.machine.netspec import NetSpecError
    from vmkit.hypervisor.sandbox import ADDRESS_SPACE_HEADROOM, SandboxError, harden
    try:
        cfg = load_config(vm_dir)
        worker = Worker(cfg)
        # Everything the VM needs is open: give up what it does not (sandbox.py).
        limit = cfg.memory_mib * MiB + ADDRESS_SPACE_HEADROOM
        log.info("%s: sandbox: %s", cfg.name, ", ".join(harden(cfg.uid, cfg.gid, limit)))
    except (WorkerError, MachineError, LoadError, NetSpecError, SandboxError, JitError) as e:
        return _fail_to_start(str(e))
    except OSError as e:
        return _fail_to_start(f"{e.filename or ''}: {e.strerror}" if e.strerror else str(e))
    return worker.serve()


_dir_lock: int | None = None


def lock_vm_dir() -> bool:
    """Take the VM directory (the working directory) for this process's
    lifetime: False if another worker holds it.  A lock, not a look at the
    sockets, so two workers started at once cannot both get past it."""
    global _dir_lock
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _dir_lock = fd          # held open (and locked) until the process exits
    return True


def _fail_to_start(message: str) -> int:
    print(f"vmkit-worker: error: {message}", file=sys.stderr)
    write_exit(message, EXIT_FAILURE, b"")
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
