"""vmkit/hypervisor/worker.py: the real worker process on a VM directory of the
default image: console and control sockets, pause/resume, the CPU throttle,
a graceful stop through Magic SysRq, kill, reboot, a bad config; and the
serial.log cap and console input cap without a guest.

The guest tests need the default image (`vmkit images pull`); they boot it
from a qcow2 overlay, as the daemon does (~5-10 s to a prompt on 2 cores).
A failing test prints the guest console and the worker's log.
"""

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vmkit.hypervisor.models import Limits, WorkerConfig
from vmkit.hypervisor.worker import SerialLog, SocketConsole, capped_allowance

PROMPT = "vmkit:/# "
START_TIMEOUT = 600      # worker.json; a cold numba cache compiles the core first
BOOT_TIMEOUT = 300       # to the shell prompt, on a loaded host


def default_image():
    """(kernel, firmware, initrd, cmdline, rootfs) of the default image, or skip."""
    from vmkit.images import ImageError, default_image_paths, store
    try:
        kernel, firmware, initrd, cmdline = default_image_paths()
    except ImageError:
        pytest.skip("the default image is not pulled (vmkit images pull)")
    rootfs = store.images_dir() / "default" / "rootfs.qcow2"
    if not rootfs.exists():
        pytest.skip("the default image has no rootfs.qcow2 (vmkit images pull)")
    return kernel, firmware, initrd, cmdline, rootfs


@pytest.fixture
def vm_dir(tmp_path) -> Path:
    """A VM directory as the daemon makes it: a qcow2 overlay of the image's root disk and config.json."""
    from vmkit.images import ROOT_ARGS
    from vmkit.storage.image import create_image
    kernel, firmware, initrd, cmdline, rootfs = default_image()
    d = tmp_path / "vm"
    d.mkdir(mode=0o700)
    disk = d / "disk.qcow2"
    create_image(str(disk), "qcow2", None, backing=str(rootfs.absolute()), backing_format="qcow2")
    config = WorkerConfig(name="t", vm_dir=str(d), memory_mib=256, kernel=str(kernel), initrd=str(initrd),
                          bios=str(firmware), append=f"{cmdline} {ROOT_ARGS}", disk=str(disk),
                          mac="52:54:00:12:34:99")
    (d / "config.json").write_text(config.model_dump_json())
    return d


class WorkerProc:
    """The worker process on a VM directory, with a console client that keeps the transcript."""

    def __init__(self, vm_dir: Path) -> None:
        self.dir = vm_dir
        self.log_path = vm_dir / "worker.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "vmkit.hypervisor.worker", str(vm_dir)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                         start_new_session=True)
        self.out = bytearray()
        self._pos = 0
        self._cond = threading.Condition()
        self.console = None

    @property
    def transcript(self) -> str:
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return (f"--- console ---\n{self.out.decode(errors='replace')}\n"
                f"--- worker.log ---\n{log}")

    def fail(self, message: str):
        raise AssertionError(f"{message}\n{self.transcript}")

    def wait_up(self, timeout: float = START_TIMEOUT) -> None:
        """Wait for worker.json, then attach to the console."""
        end = time.monotonic() + timeout
        while not (self.dir / "worker.json").exists():
            if self.proc.poll() is not None:
                self.fail(f"the worker exited with {self.proc.returncode} before it was up")
            if time.monotonic() > end:
                self.fail("no worker.json in time")
            time.sleep(0.1)
        self.console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.console.connect(str(self.dir / "console.sock"))
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = self.console.recv(65536)
            except OSError:
                data = b""
            with self._cond:
                if data:
                    self.out += data
                self._cond.notify_all()
            if not data:
                return

    def expect(self, text: str, timeout: float = 60) -> str:
        needle, end = text.encode(), time.monotonic() + timeout
        with self._cond:
            while (i := self.out.find(needle, self._pos)) < 0:
                left = end - time.monotonic()
                if left <= 0:
                    self.fail(f"timed out waiting for {text!r}")
                self._cond.wait(min(left, 1.0))
            seen = bytes(self.out[self._pos:i])
            self._pos = i + len(needle)
        return seen.decode(errors="replace")

    def run(self, command: str, timeout: float = 60) -> str:
        """Type a shell command; what it printed before the next prompt."""
        self.console.sendall(command.encode() + b"\n")
        out = self.expect(PROMPT, timeout).replace("\r", "")
        return out.split("\n", 1)[1] if "\n" in out else ""

    def control(self, op: str | None = None, raw: bytes | None = None, **args) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.dir / "control.sock"))
            s.sendall(raw if raw is not None else json.dumps({"op": op, **args}).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    self.fail(f"control connection closed, reply so far {reply!r}")
                reply += chunk
        return json.loads(reply)

    def ok(self, op: str, **args) -> dict:
        reply = self.control(op, **args)
        if not reply.get("ok"):
            self.fail(f"{op}: {reply}")
        return reply

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail("the worker did not exit in time")

    def exit_json(self) -> dict:
        return json.loads((self.dir / "exit.json").read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.console is not None:
            self.console.close()


@pytest.fixture
def worker(vm_dir):
    w = WorkerProc(vm_dir)
    yield w
    w.kill()
    print(w.transcript)     # pytest shows it when the test failed


def test_worker_console_pause_throttle_and_sysrq_stop(worker):
    t0 = time.monotonic()
    worker.wait_up()
    info = json.loads((worker.dir / "worker.json").read_text())
    assert info["pid"] == worker.proc.pid and info["started"] > 0
    for name in ("control.sock", "console.sock"):
        assert stat.S_IMODE(os.stat(worker.dir / name).st_mode) == 0o600
    worker.console.sendall(b"\n")
    worker.expect(PROMPT, BOOT_TIMEOUT)
    t_boot = time.monotonic() - t0
    assert worker.run("echo $((6*7))").strip() == "42"

    # Bad requests are answered, and change nothing.
    assert worker.control(raw=b"not json\n")["ok"] is False
    assert "unknown op" in worker.control("fly")["error"]
    assert worker.control("cpu", allowance=-1)["ok"] is False

    a = worker.ok("status")
    time.sleep(0.3)
    b = worker.ok("status")
    assert a["state"] == "running" and b["instructions"] > a["instructions"]
    assert b["cpu_seconds"] > 0 and b["rss"] > 100 << 20

    # Pause: no instructions for a second; and the guest's clock is held.
    up0 = float(worker.run("cat /proc/uptime").split()[0])
    w0 = time.monotonic()
    assert worker.ok("pause")["state"] == "paused"
    p0 = worker.ok("status")
    time.sleep(2)
    p1 = worker.ok("status")
    assert p1["state"] == "paused" and p1["instructions"] == p0["instructions"]
    assert worker.ok("resume")["state"] == "running"
    time.sleep(0.3)
    assert worker.ok("status")["instructions"] > p1["instructions"]
    up1 = float(worker.run("cat /proc/uptime").split()[0])
    wall = time.monotonic() - w0
    assert up1 - up0 < wall - 1.5, f"guest uptime moved {up1 - up0:.2f} s in {wall:.2f} s with a 2 s pause"

    # Throttle: a busy guest held to 0.3 cores.
    worker.run("while :; do :; done &")
    worker.ok("cpu", allowance=0.3)
    time.sleep(0.5)
    c0, w0 = worker.ok("status")["cpu_seconds"], time.monotonic()
    time.sleep(4)
    s1 = worker.ok("status")
    ratio = (s1["cpu_seconds"] - c0) / (time.monotonic() - w0)
    assert s1["allowance"] == 0.3
    assert 0.2 <= ratio <= 0.4, f"CPU/wall {ratio:.2f} with an allowance of 0.3"
    worker.ok("cpu", allowance=0)
    worker.run("kill %1")

    # Stop: SysRq sync, remount read-only, power off.
    t1 = time.monotonic()
    assert worker.ok("stop")["state"] == "stopping"
    assert worker.wait_exit(60) == 0
    t_stop = time.monotonic() - t1
    end = worker.exit_json()
    assert end["reason"] == "poweroff" and end["exit_code"] == 0
    assert "Emergency Remount complete" in end["console_tail"] and "Power down" in end["console_tail"]
    assert end["time"] > info["started"]
    assert not (worker.dir / "control.sock").exists() and not (worker.dir / "console.sock").exists()
    log = (worker.dir / "serial.log").read_bytes()
    assert b"Linux version" in log and b"Power down" in log
    print(f"boot to prompt {t_boot:.1f} s, stop {t_stop:.1f} s, throttled CPU/wall {ratio:.2f}")


def test_worker_reboot_and_kill(worker):
    from vmkit.storage.image import open_image
    worker.wait_up()
    # A second worker on the same directory refuses, and touches nothing.
    r = subprocess.run([sys.executable, "-m", "vmkit.hypervisor.worker", str(worker.dir)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "another worker runs" in r.stderr, r.stderr
    assert (worker.dir / "worker.json").exists() and not (worker.dir / "exit.json").exists()
    worker.expect("Linux version", BOOT_TIMEOUT)
    worker.ok("reboot")
    worker.expect("OpenSBI", 60)            # the firmware's banner again: a fresh boot
    worker.expect("Linux version", BOOT_TIMEOUT)
    t0 = time.monotonic()
    worker.ok("kill")
    assert worker.wait_exit(30) == 0
    assert time.monotonic() - t0 < 10
    end = worker.exit_json()
    assert end["reason"] == "killed" and end["exit_code"] == 0
    assert 0 < len(end["console_tail"]) <= 4096
    assert not (worker.dir / "control.sock").exists()
    with open_image(str(worker.dir / "disk.qcow2"), "qcow2", readonly=True):
        pass                                # closed cleanly: it opens


@pytest.mark.parametrize("change,message", [
    ({"memory_mib": "lots"}, "memory_mib"),
    ({"surprise": 1}, "surprise"),
    ({"kernel": "/nonexistent/Image"}, "/nonexistent/Image"),
    ({"mac": "01:00:00:00:00:01"}, "multicast"),
])
def test_bad_config_exits_with_one_line(vm_dir, change, message):
    config = json.loads((vm_dir / "config.json").read_text())
    config.update(change)
    (vm_dir / "config.json").write_text(json.dumps(config))
    r = subprocess.run([sys.executable, "-m", "vmkit.hypervisor.worker", str(vm_dir)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    lines = [line for line in r.stderr.splitlines() if line and "compiling the CPU core" not in line]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("vmkit-worker: error:") and message in lines[0]
    end = json.loads((vm_dir / "exit.json").read_text())
    assert end["exit_code"] == 1 and message in end["reason"]
    assert not (vm_dir / "worker.json").exists() and not (vm_dir / "control.sock").exists()


def test_serial_log_keeps_at_most_the_cap(tmp_path):
    path = str(tmp_path / "serial.log")
    log = SerialLog(path, 1000)
    for i in range(100):
        log.write(b"%04d-----\n" % i)       # 10 bytes a line
    log.close()
    current, previous = Path(path).read_bytes(), Path(path + ".1").read_bytes()
    assert len(current) <= 500 and len(previous) == 500
    assert (previous + current).endswith(b"0099-----\n")
    assert previous + current == b"".join(b"%04d-----\n" % i for i in range(100))[-len(previous + current):]
    log = SerialLog(path, 1000)             # a restart appends to what is there
    log.write(b"x" * 1200)
    log.close()
    assert os.path.getsize(path) + os.path.getsize(path + ".1") <= 1000


def test_console_input_is_capped():
    console = SocketConsole(lambda data: None)
    console.feed(b"a" * 60_000)
    console.feed(b"b" * 10_000)
    assert console.dropped_input == 70_000 - 64 * 1024
    assert len(console.take_input()) == 64 * 1024
    console.feed(b"c")
    assert console.take_input() == b"c"
    assert console.input_open and not console.raw


def test_allowance_capped_by_cpu_max():
    assert capped_allowance(0.0, 0.0) == 0.0        # no word, no cap: unthrottled
    assert capped_allowance(0.7, 0.0) == 0.7
    assert capped_allowance(0.0, 0.5) == 0.5        # no word from the pacer: the cap
    assert capped_allowance(0.7, 0.5) == 0.5
    assert capped_allowance(0.2, 0.5) == 0.2
    assert Limits(cpu_max=0.5).cpu_max == 0.5
