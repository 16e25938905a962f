"""vmkitd: the registry, the supervisor and the API servers, in one process.

The API listens on a unix socket (mode 0600: whoever can open it owns the
VMs) and, if asked, on TCP where every request needs the bearer token. One
daemon per state directory: a lock file keeps a second one out.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from vmkit.images import store

log = logging.getLogger(__name__)

SOCKET_NAME = "vmkitd.sock"
SOCKET_ENV = "VMKIT_SOCKET"


def default_state_dir() -> Path:
    return store.data_dir() / "vmkitd"


def default_socket() -> Path:
    if path := os.environ.get(SOCKET_ENV):
        return Path(path)
    return default_state_dir() / SOCKET_NAME


class DaemonError(Exception):
    pass


@dataclass
class DaemonConfig:
    state_dir: Path
    socket: Path | None = None          # default: STATE_DIR/vmkitd.sock
    tcp: str | None = None              # HOST:PORT
    token_file: Path | None = None      # the TCP listener's bearer token (made if missing)
    cores: int | None = None            # host cores shared among VMs (default: all this process may use)
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0
    stop_timeout: float = 30.0


def _lock(state_dir: Path):
    f = open(state_dir / "vmkitd.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise DaemonError(f"another vmkitd is running on {state_dir}") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _token(path: Path) -> str:
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def serve(cfg: DaemonConfig, ready=None) -> None:
    """Run vmkitd until SIGINT/SIGTERM. `ready(socket_path)` is called once listening."""
    import uvicorn

    from vmkit.hypervisor.api import create_app
    from vmkit.hypervisor.capacity import Capacity
    from vmkit.hypervisor.registry import Registry
    from vmkit.hypervisor.supervisor import Supervisor

    state_dir = cfg.state_dir
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    (state_dir / "vms").mkdir(exist_ok=True, mode=0o700)
    lock = _lock(state_dir)
    sock_path = cfg.socket or state_dir / SOCKET_NAME
    registry = Registry(state_dir / "registry.sqlite")
    capacity = Capacity.of_host(state_dir, cfg.cpu_overcommit, cfg.memory_overcommit)
    if cfg.cores is not None:
        if not 1 <= cfg.cores <= capacity.cores:
            raise DaemonError(f"--cores {cfg.cores}: this host has {capacity.cores}")
        capacity = Capacity(cfg.cores, capacity.memory_bytes, capacity.disk_free_bytes,
                            cfg.cpu_overcommit, cfg.memory_overcommit)
    supervisor = Supervisor(state_dir, registry, capacity, store.images_dir(), stop_timeout=cfg.stop_timeout)
    supervisor.start_watching()

    # The listening sockets are made here, not by uvicorn, so that a port in
    # use is one clear error and the unix socket is 0600 from the start.
    listeners = []
    try:
        sock_path.unlink(missing_ok=True)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            unix.bind(str(sock_path))
        finally:
            os.umask(old)
        listeners.append((unix, create_app(supervisor)))
    except OSError as e:
        raise DaemonError(f"{sock_path}: {e.strerror}") from None
    if cfg.tcp:
        host, _, port = cfg.tcp.rpartition(":")
        try:
            port_no = int(port)
            tcp = socket.create_server((host or "127.0.0.1", port_no), backlog=128)
        except ValueError:
            raise DaemonError(f"--tcp {cfg.tcp!r}: use HOST:PORT") from None
        except OSError as e:
            raise DaemonError(f"--tcp {cfg.tcp}: {e.strerror}") from None
        token = _token(cfg.token_file or state_dir / "token")
        listeners.append((tcp, create_app(supervisor, token=token)))
    for sock, _app in listeners:
        sock.listen(128)
    servers = [uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")) for _s, app in listeners]

    async def main():
        tasks = [asyncio.create_task(server.serve(sockets=[sock]))
                 for server, (sock, _app) in zip(servers, listeners)]
        while not all(s.started for s in servers) and not any(t.done() for t in tasks):
            await asyncio.sleep(0.05)
        if all(s.started for s in servers):
            log.info("vmkitd listening on %s%s", sock_path, f" and tcp {cfg.tcp}" if cfg.tcp else "")
            if ready:
                ready(sock_path)
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        supervisor.close()
        registry.close()
        sock_path.unlink(missing_ok=True)
        lock.close()


def install_signal_handlers() -> None:
    # uvicorn handles SIGINT/SIGTERM itself (graceful shutdown); workers are
    # in their own sessions, so a Ctrl-C at the daemon's terminal leaves them be.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
