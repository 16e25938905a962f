"""The daemon's side of the workers: start, control, watch, restart, re-attach.

One `Supervisor` per vmkitd. It is the only writer of VM state in the
registry. Workers are separate processes in sessions of their own
(docs/hypervisor.md), so they outlive a daemon restart; a new daemon finds
them again by the pid in the registry and their control socket.

A watcher thread looks at every live VM twice a second: a worker that has
come up turns "starting" into "running"; one that has gone leaves exit.json
behind, which says whether the VM stopped (exit 0: poweroff, stop, kill) or
crashed (anything else, with the reason and the console's last lines).
Restart policies act on those exits. The same thread runs the CPU pacer
(pacer.py): once a second it reads each worker's CPU time and sends it its
share of the host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from vmkit.hypervisor import pacer
from vmkit.hypervisor.capacity import Capacity
from vmkit.hypervisor.models import RestartPolicy, VmInfo, VmSpec, VmState, VmUpdate
from vmkit.hypervisor.registry import Conflict, NotFound, Registry
from vmkit.hypervisor.sandbox import vm_uid
from vmkit.hypervisor.vmdir import VmDir, worker_config

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.5
PACE_INTERVAL = 1.0
CONTROL_TIMEOUT = 5.0
START_TIMEOUT = 120.0           # a worker that does not come up (numba compiles on a cold cache)
STOP_TIMEOUT = 30.0             # graceful stop, then kill
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
LIVE = (VmState.starting, VmState.running, VmState.paused, VmState.stopping)


class SupervisorError(Exception):
    """A request that cannot be done in the VM's current state (HTTP 409)."""


class WorkerUnavailable(SupervisorError):
    pass


@contextlib.contextmanager
def socket_path(path: Path):
    """A name connect() accepts for the unix socket at path: sun_path holds
    107 bytes, and a VM directory with a long name can be deeper than that,
    so a long path is reached through /proc/self/fd/N of its directory."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def control(vmdir: VmDir, request: dict, timeout: float = CONTROL_TIMEOUT) -> dict:
    """One request on a worker's control socket (a JSON line each way)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, socket_path(vmdir.control_sock) as path:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps(request).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError as e:
        raise WorkerUnavailable(f"vm {vmdir.name!r}: its worker does not answer ({e.strerror or e})") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise WorkerUnavailable(f"vm {vmdir.name!r}: its worker sent a garbled reply") from None
    if not reply.get("ok"):
        raise SupervisorError(f"vm {vmdir.name!r}: {reply.get('error', 'request refused')}")
    return reply


def _chown_tree(path: Path, uid: int) -> None:
    os.chown(path, uid, uid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.chown(os.path.join(root, n), uid, uid, follow_symlinks=False)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def is_worker_of(pid: int, vmdir: VmDir) -> bool:
    """The process is a vmkit worker for this VM directory (not a recycled pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"vmkit.hypervisor.worker" in argv and str(vmdir.path).encode() in argv


class Supervisor:
    def __init__(self, state_dir: Path, registry: Registry, capacity: Capacity, images_dir: Path,
                 *, python: str = sys.executable, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.state_dir = Path(state_dir)
        self.registry = registry
        self.capacity = capacity
        self.images_dir = Path(images_dir)
        self.python = python
        self.stop_timeout = stop_timeout
        self._lock = threading.RLock()
        self._children: dict[str, subprocess.Popen] = {}
        self._user_stop: set[str] = set()         # exits the user asked for: no restart
        self._stop_deadline: dict[str, float] = {}
        self._restart_at: dict[str, float] = {}
        self._allowance: dict[str, float] = {}
        self._cpu_seen: dict[str, tuple[float, float]] = {}     # name -> (cpu_seconds, wall)
        self._status: dict[str, dict] = {}
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_pace = 0.0

    # ------------------------------------------------------------ lifecycle

    def start_watching(self) -> None:
        self.reattach()
        self._thread = threading.Thread(target=self._watch, name="vmkitd-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching. Workers keep running: a new daemon re-attaches."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(5)

    def reattach(self) -> None:
        """After a daemon (re)start: VMs the registry calls live are either
        still served by their worker or have gone; record which, truthfully."""
        for info in self.registry.list():
            if info.state not in LIVE:
                continue
            vmdir = self.vmdir(info.spec.name)
            if info.pid and pid_alive(info.pid) and is_worker_of(info.pid, vmdir):
                log.info("re-attached to %s (pid %d)", info.spec.name, info.pid)
                if info.state == VmState.stopping:      # the old daemon's deadline is gone: start anew
                    self._stop_deadline[info.spec.name] = time.monotonic() + self.stop_timeout
                self.registry.add_event(info.spec.name, "reattached", f"pid {info.pid}")
                continue
            self._worker_gone(info, note=" while vmkitd was down")

    # ---------------------------------------------------------------- VMs

    def vmdir(self, name: str) -> VmDir:
        return VmDir.of(self.state_dir, name)

    def image_dir(self, image: str) -> Path:
        return self.images_dir / image

    def create(self, spec: VmSpec) -> VmInfo:
        image = self.image_dir(spec.image)
        if not (image / "manifest.json").exists():
            raise SupervisorError(f"no image {spec.image!r}: run `vmkit images pull` (have: "
                                  f"{', '.join(sorted(p.name for p in self.images_dir.glob('*'))) or 'none'})")
        with self._lock:
            info = self.registry.create(spec)       # Conflict if the name is taken
            try:
                VmDir.create(self.state_dir, spec, image)
            except BaseException:
                self.registry.delete(spec.name)
                raise
            self.registry.add_event(spec.name, "created")
        return info

    def update(self, name: str, update: VmUpdate) -> VmInfo:
        with self._lock:
            info = self.registry.get(name)
            if info.state in LIVE:
                raise SupervisorError(f"vm {name!r} is {info.state.value}: stop it before changing it")
            return self.registry.update_spec(name, update)

    def delete(self, name: str, force: bool = False) -> None:
        with self._lock:
            info = self.registry.get(name)
            if info.state in LIVE:
                if not force:
                    raise SupervisorError(f"vm {name!r} is {info.state.value}: stop it first (or delete with force)")
                self._kill_now(info)
            self.vmdir(name).remove()
            self.registry.delete(name)
            self._forget(name)
            self.registry.add_event(name, "deleted")

    def start(self, name: str) -> VmInfo:
        with self._lock:
            info = self.registry.get(name)
            if info.state in LIVE:
                raise SupervisorError(f"vm {name!r} is already {info.state.value}")
            self._admit(info.spec)
            return self._spawn(info)

    def _admit(self, spec: VmSpec) -> None:
        """Raise CapacityError unless spec fits beside the other live VMs."""
        self.capacity.check_start(spec, [s for s in self.running_specs() if s.name != spec.name])

    def _spawn(self, info: VmInfo, restarts: int | None = None) -> VmInfo:
        name = info.spec.name
        vmdir = self.vmdir(name)
        config = worker_config(info.spec, vmdir, self.image_dir(info.spec.image))
        if os.geteuid() == 0:
            # Each VM runs as a uid of its own that owns its directory and nothing else.
            taken = {vm_uid(i.spec.name, set()) for i in self.registry.list() if i.spec.name != name}
            uid = vm_uid(name, taken)
            config = config.model_copy(update={"uid": uid, "gid": uid})
            _chown_tree(vmdir.path, uid)
        vmdir.write_config(config)
        vmdir.clear_runtime()
        with open(vmdir.path / "worker.log", "ab") as err:
            proc = subprocess.Popen([self.python, "-m", "vmkit.hypervisor.worker", str(vmdir.path)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True, close_fds=True)
        self._children[name] = proc
        self._user_stop.discard(name)
        self._stop_deadline.pop(name, None)
        self._allowance.pop(name, None)
        self._cpu_seen.pop(name, None)
        self._status.pop(name, None)
        info = self.registry.set_state(name, VmState.starting, reason="", pid=proc.pid, started=time.time(),
                                       console_tail="", restarts=restarts)
        self.registry.add_event(name, "starting", f"pid {proc.pid}")
        return info

    def stop(self, name: str, force: bool = False, timeout: float | None = None) -> VmInfo:
        with self._lock:
            info = self.registry.get(name)
            if info.state not in LIVE:
                raise SupervisorError(f"vm {name!r} is not running ({info.state.value})")
            self._user_stop.add(name)
            if force or info.state == VmState.starting:
                self._kill_now(info)
                return self.registry.get(name)
            if info.state == VmState.paused:
                self._control(name, "resume")
            self._control(name, "stop")
            self._stop_deadline[name] = time.monotonic() + (self.stop_timeout if timeout is None else timeout)
            info = self.registry.set_state(name, VmState.stopping)
            self.registry.add_event(name, "stopping")
            return info

    def kill(self, name: str) -> VmInfo:
        return self.stop(name, force=True)

    def pause(self, name: str) -> VmInfo:
        return self._transition(name, "pause", (VmState.running,), VmState.paused, "paused")

    def resume(self, name: str) -> VmInfo:
        return self._transition(name, "resume", (VmState.paused,), VmState.running, "resumed")

    def reboot(self, name: str) -> VmInfo:
        return self._transition(name, "reboot", (VmState.running,), VmState.running, "rebooted")

    def _transition(self, name, op, allowed, new_state, event) -> VmInfo:
        with self._lock:
            info = self.registry.get(name)
            if info.state not in allowed:
                raise SupervisorError(f"vm {name!r} is {info.state.value}: cannot {op}")
            self._control(name, op)
            info = self.registry.set_state(name, new_state)
            self.registry.add_event(name, event)
            return info

    def _control(self, name: str, op: str, **kw) -> dict:
        return control(self.vmdir(name), {"op": op, **kw})

    def _kill_now(self, info: VmInfo) -> None:
        """Kill the worker (politely over its socket, else SIGKILL) and wait for it."""
        name = info.spec.name
        self._user_stop.add(name)
        try:
            control(self.vmdir(name), {"op": "kill"}, 2.0)
        except SupervisorError:
            pass
        deadline = time.monotonic() + 10
        while pid_alive(info.pid) and time.monotonic() < deadline:
            self._reap_child(name)
            time.sleep(0.05)
        if pid_alive(info.pid) and is_worker_of(info.pid, self.vmdir(name)):
            os.kill(info.pid, signal.SIGKILL)
            while pid_alive(info.pid) and time.monotonic() < deadline + 5:
                self._reap_child(name)
                time.sleep(0.05)
        self._reap_child(name)
        self._worker_gone(self.registry.get(name))

    def _reap_child(self, name: str) -> None:
        proc = self._children.get(name)
        if proc is not None and proc.poll() is not None:
            del self._children[name]

    def _forget(self, name: str) -> None:
        for d in (self._children, self._stop_deadline, self._restart_at, self._allowance, self._cpu_seen,
                  self._status):
            d.pop(name, None)
        self._user_stop.discard(name)

    def status(self, name: str) -> dict | None:
        """The worker's last status reply (instructions, cpu_seconds, rss), if any."""
        return self._status.get(name)

    # ------------------------------------------------------------ watching

    def _watch(self) -> None:
        while not self._closing.wait(WATCH_INTERVAL):
            try:
                self.watch_once()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one VM's trouble
                log.exception("watching the workers failed")

    def watch_once(self) -> None:
        now = time.monotonic()
        with self._lock:
            for info in self.registry.list():
                name = info.spec.name
                if info.state not in LIVE:
                    due = self._restart_at.get(name)
                    if due is not None and now >= due:
                        self._restart(info)
                    continue
                self._reap_child(name)
                vmdir = self.vmdir(name)
                if not pid_alive(info.pid):
                    self._worker_gone(info)
                    continue
                if info.state == VmState.starting:
                    if vmdir.read_worker() is not None:
                        self.registry.set_state(name, VmState.running)
                        self.registry.add_event(name, "started", f"pid {info.pid}")
                    elif info.started and time.time() - info.started > START_TIMEOUT:
                        self._user_stop.discard(name)
                        os.kill(info.pid, signal.SIGKILL)
                if info.state == VmState.stopping and now >= self._stop_deadline.get(name, now + 1):
                    log.info("%s did not power off in time: killing it", name)
                    self.registry.add_event(name, "stop-timeout", "forced stop")
                    try:
                        control(vmdir, {"op": "kill"}, 2.0)
                    except SupervisorError:
                        os.kill(info.pid, signal.SIGKILL)
                    self._stop_deadline[name] = now + 10
            if now - self._last_pace >= PACE_INTERVAL:
                self._last_pace = now
                self._pace()

    def _worker_gone(self, info: VmInfo, note: str = "") -> None:
        """The worker has exited: record how, and restart per policy."""
        name = info.spec.name
        self._reap_child(name)
        vmdir = self.vmdir(name)
        record = vmdir.read_exit() or {}
        code = record.get("exit_code")
        reason = str(record.get("reason") or "the worker died without a word (killed or crashed)")
        tail = str(record.get("console_tail") or "")
        if not tail:
            try:
                tail = vmdir.serial_log.read_bytes()[-4096:].decode(errors="replace")
            except OSError:
                tail = ""
        asked = name in self._user_stop
        clean = code == 0
        state = VmState.stopped if clean or asked else VmState.crashed
        self.registry.set_state(name, state, reason=reason + note, pid=None, console_tail=tail)
        self.registry.add_event(name, "stopped" if state == VmState.stopped else "crashed", reason + note)
        self._stop_deadline.pop(name, None)
        self._status.pop(name, None)
        policy = info.spec.restart
        if not asked and (policy == RestartPolicy.always or
                          (policy == RestartPolicy.on_failure and state == VmState.crashed)):
            delay = RESTART_BACKOFF[min(info.restarts, len(RESTART_BACKOFF) - 1)]
            self._restart_at[name] = time.monotonic() + delay
        self._user_stop.discard(name)

    def _restart(self, info: VmInfo) -> None:
        name = info.spec.name
        self._restart_at.pop(name, None)
        try:
            self._admit(info.spec)
        except Exception as e:  # noqa: BLE001 - recorded, tried again later
            self.registry.add_event(name, "restart-refused", str(e))
            self._restart_at[name] = time.monotonic() + RESTART_BACKOFF[-1]
            return
        self.registry.add_event(name, "restarted", f"restart {info.restarts + 1} ({info.spec.restart.value})")
        self._spawn(info, restarts=info.restarts + 1)

    # ---------------------------------------------------------------- CPU

    def _pace(self) -> None:
        """Read every running worker's CPU time; hand out the host's cores by weight."""
        vms = []
        wall = time.monotonic()
        for info in self.registry.list():
            name = info.spec.name
            if info.state not in (VmState.running, VmState.stopping):
                continue
            try:
                status = control(self.vmdir(name), {"op": "status"}, 1.0)
            except SupervisorError:
                continue
            self._status[name] = status
            cpu = float(status.get("cpu_seconds", 0.0))
            seen = self._cpu_seen.get(name)
            self._cpu_seen[name] = (cpu, wall)
            used = (cpu - seen[0]) / max(1e-3, wall - seen[1]) if seen else 0.0
            limits = info.spec.limits
            cap = float(info.spec.cpus)
            if limits.cpu_max > 0:
                cap = min(cap, limits.cpu_max)
            vms.append((name, limits.cpu_weight, cap, used if seen else cap))
        if not vms:
            return
        cores = float(self.capacity.cores)
        split = pacer.fair_split(cores, vms, self._allowance)
        # A worker's CPU time is more than its vCPUs' (the translating tier
        # compiles in a thread of its own), so a VM at its cap runs unthrottled
        # only while the host has cores no VM was given; under contention each
        # is held to its allowance, compiles included.
        spare = cores - sum(split.get(name, cap) for name, _w, cap, _u in vms) > 1e-6
        for name, weight, cap, _used in vms:
            allowance = split.get(name, cap)
            send = 0.0 if spare and allowance >= cap - 1e-6 else max(0.01, allowance)
            self._allowance[name] = allowance
            try:
                control(self.vmdir(name), {"op": "cpu", "allowance": send}, 1.0)
            except SupervisorError:
                pass

    def running_specs(self) -> list[VmSpec]:
        return [i.spec for i in self.registry.list() if i.state in LIVE]


__all__ = ["Supervisor", "SupervisorError", "WorkerUnavailable", "NotFound", "Conflict", "control"]
