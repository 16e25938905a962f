"""Host port forwards: host sockets whose traffic goes to a guest port.

TCP: a listening socket; each accepted connection becomes a connection the
TCP relay opens toward the guest (tcp.py, `open_inbound`). UDP: a bound
socket; each host peer that sends to it gets a port on the gateway, so the
guest sees datagrams from 10.0.2.2:PORT and its replies to that address go
back to that peer. Peers are capped and forgotten when idle.

Listeners are opened when the network is made, so a port that is taken is
an error at start (ForwardError names the forward), never later.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass, field

ACCEPT_BURST = 16               # connections accepted per poll, so a flood cannot starve the VM loop
LISTEN_BACKLOG = 64
MAX_UDP_PEERS = 64              # host peers remembered per UDP forward
UDP_PEER_PORTS = range(49152, 65536)


class ForwardError(OSError):
    pass


@dataclass(frozen=True)
class HostForward:
    proto: str                  # "tcp" or "udp"
    host_addr: str
    host_port: int              # 0: the host picks one
    guest_port: int

    def __str__(self) -> str:
        return f"{self.proto}:{self.host_addr}:{self.host_port}-:{self.guest_port}"


@dataclass(eq=False)
class Listener:
    """One forward's host socket; `port` is the port it is bound to."""
    rule: HostForward
    sock: socket.socket
    port: int
    # UDP only: host peer <-> gateway port, and when each was last used.
    peer_port: dict[tuple[str, int], int] = field(default_factory=dict)
    port_peer: dict[int, tuple[str, int]] = field(default_factory=dict)
    last_used: dict[int, float] = field(default_factory=dict)
    next_port: int = UDP_PEER_PORTS.start

    def udp_port_for(self, peer: tuple[str, int], now: float) -> int | None:
        """The gateway port that stands for this host peer (assigned on first use)."""
        port = self.peer_port.get(peer)
        if port is None:
            if len(self.peer_port) >= MAX_UDP_PEERS:
                oldest = min(self.last_used, key=self.last_used.__getitem__)
                self.forget(oldest)
            port = self._free_port()
            if port is None:
                return None
            self.peer_port[peer] = port
            self.port_peer[port] = peer
        self.last_used[port] = now
        return port

    def _free_port(self) -> int | None:
        for _ in range(len(UDP_PEER_PORTS)):
            port = self.next_port
            self.next_port = port + 1 if port + 1 < UDP_PEER_PORTS.stop else UDP_PEER_PORTS.start
            if port not in self.port_peer:
                return port
        return None

    def forget(self, port: int) -> None:
        peer = self.port_peer.pop(port)
        del self.peer_port[peer]
        del self.last_used[port]

    def reap(self, now: float, idle: float) -> None:
        for port in [p for p, t in self.last_used.items() if now - t >= idle]:
            self.forget(port)


def open_listeners(rules) -> list[Listener]:
    """Bind every forward's host socket, or raise ForwardError for the
    first that cannot be bound (closing those already open)."""
    opened: list[Listener] = []
    try:
        for rule in rules:
            opened.append(_open(rule))
    except ForwardError:
        for listener in opened:
            listener.sock.close()
        raise
    return opened


def _open(rule: HostForward) -> Listener:
    kind = socket.SOCK_STREAM if rule.proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if rule.proto == "tcp":
            # Only lets a new listener take over a port whose old connections
            # linger in TIME-WAIT; a port someone listens on stays an error.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((rule.host_addr, rule.host_port))
        if rule.proto == "tcp":
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        reason = os.strerror(e.errno) if e.errno else str(e)
        if e.errno == errno.EADDRINUSE:
            reason = f"host port {rule.host_port} is already in use"
        raise ForwardError(e.errno or errno.EIO, f"hostfwd={rule}: {reason}") from None
    return Listener(rule, sock, sock.getsockname()[1])
