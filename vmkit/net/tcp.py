"""TCP from the guest, terminated here and relayed over host sockets.

The shape of libslirp's and passt's TCP: the guest's connection ends in this
module, which speaks TCP (RFC 9293) to the guest over frames and opens an
ordinary non-blocking stream socket on the host; bytes move between the two
through two bounded buffers per connection:

    to_host   bytes the guest sent that the host socket has not taken yet.
              Our advertised window is its free space, so a slow host peer
              makes the guest wait instead of losing a byte.
    to_guest  bytes read from the host socket that the guest has not
              acknowledged, from SND.UNA on. We never send past the guest's
              window, and stop reading the host socket while this buffer
              (or the VM's total) is full, so a slow guest loses nothing.

Outbound connections: a guest SYN starts a host connect(); the SYN-ACK goes
to the guest when connect completes, an RST when it fails. Inbound ones (host
port forwards): a connection accepted on a host listener becomes our SYN to
the guest's port, from the gateway's address; the host socket is read once
the guest's SYN-ACK arrives, and the host peer is reset if the guest refuses. No window
scaling, SACK or timestamps are offered, so both windows are plain 16-bit
values; out-of-order segments are not queued (the guest link is a lossless
in-order queue; a gap is answered with a duplicate ACK and the guest
retransmits). Sequence numbers are compared modulo 2**32 (RFC 9293 3.4).

Per VM: at most `max_conns` connections and `max_buffered` host-to-guest
bytes; idle, half-closed and stuck-connecting connections are reaped.
Everything runs on the VM loop; sockets sit in the UserNet's selector.
"""

from __future__ import annotations

import collections
import errno
import secrets
import selectors
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from vmkit.net.packets import (
    TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Tcp, build_ipv4_tcp_frame,
)

MSS = 1460                      # ours: 1500 - 20 (IPv4) - 20 (TCP), advertised on the SYN-ACK
DEFAULT_GUEST_MSS = 536         # RFC 9293 3.7.1: assumed when the SYN carries no MSS option
MIN_GUEST_MSS = 64              # a guest may not make us send tiny segments
RCV_BUF = 0xFFFF                # guest-to-host bytes per connection; also our largest window (no scaling)
SND_BUF = 256 * 1024            # host-to-guest bytes per connection
MAX_TCP_CONNS = 256
MAX_TCP_BUFFERED = 16 * 1024 * 1024     # host-to-guest bytes over all connections of the VM
RTO_INITIAL = 1.0               # RFC 6298 2.1
RTO_MAX = 60.0                  # RFC 6298 2.5
MAX_RETRANSMITS = 8             # then the connection is reset both ways
MAX_SYN_RETRANSMITS = 5         # a handshake the guest never completes ends after ~63 s (Linux's tcp_synack_retries)
CONNECT_TIMEOUT = 30.0          # a host connect() that neither completes nor fails
IDLE_TIMEOUT = 3600.0           # an established connection with no traffic either way
HALF_CLOSED_TIMEOUT = 120.0     # idle after one side's FIN
TIME_WAIT = 1.0                 # kept short: the only peer is our own guest on a lossless link
RECV_CHUNK = 65536
INBOUND_PORTS = range(49152, 65536)     # the gateway-side ports of forwarded connections (RFC 6335 dynamic)

_M = 0xFFFFFFFF

# Our states, named as RFC 9293 3.3.2 where they match. CONNECTING is the
# guest's SYN held while the host connect() runs (a deferred SYN-RECEIVED).
# The closing states of an established connection are its flags
# (guest_fin, fin_sent, fin_acked) rather than names.
CONNECTING = "CONNECTING"
SYN_SENT = "SYN-SENT"
SYN_RECEIVED = "SYN-RECEIVED"
ESTABLISHED = "ESTABLISHED"
TIME_WAIT_STATE = "TIME-WAIT"


def seq_add(a: int, n: int) -> int:
    return (a + n) & _M


def seq_diff(a: int, b: int) -> int:
    """a - b modulo 2**32: how far a is ahead of b."""
    return (a - b) & _M


def seq_lt(a: int, b: int) -> bool:
    return a != b and seq_diff(b, a) < 0x80000000


def seq_le(a: int, b: int) -> bool:
    return a == b or seq_lt(a, b)


Key = tuple[int, bytes, int]     # guest port, remote IP (as the guest sees it), remote port


@dataclass(eq=False)
class TcpConn:
    key: Key
    sock: socket.socket | None
    guest_mac: bytes
    src_mac: bytes              # the MAC the remote's frames come from (the gateway's)
    state: str
    irs: int                    # the guest's initial sequence number
    rcv_nxt: int
    rcv_adv: int                # right edge of the window we last advertised (RCV.NXT + RCV.WND)
    iss: int
    snd_una: int
    snd_nxt: int
    snd_max: int                # highest sequence number sent (SND.NXT before any retransmission)
    snd_wnd: int
    snd_wl1: int
    snd_wl2: int
    guest_mss: int
    last_active: float
    to_host: bytearray = field(default_factory=bytearray)
    to_guest: bytearray = field(default_factory=bytearray)
    host_eof: bool = False      # the host peer closed its sending side
    host_shut: bool = False     # we did shutdown(SHUT_WR) after the guest's FIN
    guest_fin: bool = False     # the guest's FIN arrived (in order)
    fin_sent: bool = False      # our FIN went out at least once
    fin_acked: bool = False
    we_closed_first: bool = False   # our FIN went out before the guest's arrived
    rto: float = RTO_INITIAL
    retries: int = 0
    deadline: float | None = None   # retransmission/persist timer, or TIME-WAIT's end
    started: float = 0.0
    events: int = 0             # selector interest currently registered

    @property
    def guest_port(self) -> int:
        return self.key[0]

    @property
    def remote_ip(self) -> bytes:
        return self.key[1]

    @property
    def remote_port(self) -> int:
        return self.key[2]


class TcpRelay:
    """The TCP connections of one UserNet. `connect_policy(dst_ip, dport)`
    returns the host address to connect to, or a drop reason string prefixed
    with "!" (the UserNet's relay policy, shared with UDP)."""

    def __init__(self, send: Callable[[bytes], None], selector: selectors.BaseSelector,
                 clock: Callable[[], float], next_ident: Callable[[], int],
                 counters: collections.Counter, connect_policy: Callable[[bytes, int], str],
                 guest_ip: bytes, *, max_conns: int = MAX_TCP_CONNS, max_buffered: int = MAX_TCP_BUFFERED,
                 idle_timeout: float = IDLE_TIMEOUT, half_closed_timeout: float = HALF_CLOSED_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT, time_wait: float = TIME_WAIT,
                 isn: Callable[[], int] | None = None):
        self._send = send
        self._selector = selector
        self._clock = clock
        self._next_ident = next_ident
        self.counters = counters
        self._policy = connect_policy
        self._guest_ip = guest_ip
        self.max_conns = max_conns
        self.max_buffered = max_buffered
        self.idle_timeout = idle_timeout
        self.half_closed_timeout = half_closed_timeout
        self.connect_timeout = connect_timeout
        self.time_wait = time_wait
        # RFC 9293 3.4.1 / RFC 6528: initial sequence numbers must not be predictable.
        self._isn = isn or (lambda: secrets.randbits(32))
        self.conns: dict[Key, TcpConn] = {}
        self.buffered = 0           # host-to-guest bytes held over all connections
        self._starved = False       # some connection stopped reading for the VM-wide cap
        self._next_port = INBOUND_PORTS.start

    # ------------------------------------------------ host port forwards

    def open_inbound(self, sock: socket.socket, guest_mac: bytes, src_mac: bytes, src_ip: bytes,
                     guest_port: int) -> None:
        """A connection accepted on a forwarded host port: our SYN goes to
        the guest's guest_port from src_ip (the gateway) and a free port."""
        now = self._clock()
        if len(self.conns) >= self.max_conns:
            self._reap(now, count=False)
        port = self._free_port(guest_port, src_ip)
        if len(self.conns) >= self.max_conns or port is None:
            self.counters["tcp_conn_limit"] += 1
            reset_socket(sock)
            return
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        iss = self._isn() & _M
        c = TcpConn((guest_port, src_ip, port), sock, guest_mac, src_mac, SYN_SENT, irs=0, rcv_nxt=0,
                    rcv_adv=0, iss=iss, snd_una=iss, snd_nxt=seq_add(iss, 1), snd_max=seq_add(iss, 1),
                    snd_wnd=0, snd_wl1=0, snd_wl2=0, guest_mss=DEFAULT_GUEST_MSS, last_active=now, started=now)
        self.conns[c.key] = c
        self.counters["tcp_inbound"] += 1
        self._send_syn(c)
        c.deadline = now + c.rto

    def _free_port(self, guest_port: int, src_ip: bytes) -> int | None:
        for _ in range(len(INBOUND_PORTS)):
            port = self._next_port
            self._next_port = port + 1 if port + 1 < INBOUND_PORTS.stop else INBOUND_PORTS.start
            if (guest_port, src_ip, port) not in self.conns:
                return port
        return None

    def _syn_sent(self, c: TcpConn, seg: Tcp) -> None:
        """RFC 9293 3.10.7.3, SYN-SENT: the guest answers our SYN."""
        flags = seg.flags
        if flags & TCP_ACK and seg.ack != seq_add(c.iss, 1):
            if not flags & TCP_RST:
                self._reset_unknown(c.guest_mac, c.src_mac, c.key, seg, "tcp_bad_ack")
            return
        if flags & TCP_RST:
            if flags & TCP_ACK:
                self.counters["tcp_guest_refused"] += 1     # nothing listens on the guest port
                self._abort(c, rst_guest=False)
            return
        if not (flags & TCP_SYN and flags & TCP_ACK):
            self.counters["tcp_not_connected"] += 1         # simultaneous open is not offered
            return
        c.irs = seg.seq
        c.rcv_nxt = c.rcv_adv = seq_add(seg.seq, 1)
        c.snd_una = seg.ack
        c.snd_wnd, c.snd_wl1, c.snd_wl2 = seg.window, seg.seq, seg.ack
        c.guest_mss = max(MIN_GUEST_MSS, min(MSS, seg.mss or DEFAULT_GUEST_MSS))
        c.state = ESTABLISHED
        c.deadline = None
        c.rto, c.retries = RTO_INITIAL, 0
        self._send_ack(c)
        self._set_interest(c)

    # ------------------------------------------------------ guest segments

    def from_guest(self, src_mac: bytes, src_mac_for: bytes, dst_ip: bytes, seg: Tcp) -> None:
        """One TCP segment the guest sent to dst_ip. src_mac_for: the MAC we
        answer from for dst_ip."""
        key = (seg.sport, dst_ip, seg.dport)
        c = self.conns.get(key)
        now = self._clock()
        if c is not None and c.state == TIME_WAIT_STATE:
            if seg.flags & TCP_SYN and not seg.flags & TCP_ACK:
                self._remove(c)         # the port is reused: TIME-WAIT gives way (RFC 9293 3.6.1)
                c = None
            else:
                if seg.flags & TCP_RST:
                    self._remove(c)
                elif seg.flags & TCP_FIN:
                    self._emit(c, c.snd_nxt, TCP_ACK)      # our ACK of its FIN was lost: again
                else:
                    self.counters["tcp_time_wait"] += 1
                return
        if c is None:
            if seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN:
                self._open(src_mac, src_mac_for, key, seg, now)
            else:
                self._reset_unknown(src_mac, src_mac_for, key, seg)
            return
        c.guest_mac = src_mac
        c.last_active = now
        self._segment(c, seg)

    def _reset_unknown(self, dst_mac: bytes, src_mac: bytes, key: Key, seg: Tcp, reason: str = "tcp_no_conn") -> None:
        """RFC 9293 3.10.7.1, a segment for a CLOSED connection: an RST is
        dropped; otherwise answer with a reset that the sender will accept."""
        self.counters[reason] += 1
        if seg.flags & TCP_RST:
            return
        if seg.flags & TCP_ACK:
            seq, ack, flags = seg.ack, 0, TCP_RST
        else:
            seq, ack, flags = 0, seq_add(seg.seq, seg.seg_len), TCP_RST | TCP_ACK
        self._send(build_ipv4_tcp_frame(dst_mac, src_mac, key[1], self._guest_ip, key[2], key[0], seq, ack,
                                        flags, 0, ident=self._next_ident()))

    def _open(self, guest_mac: bytes, src_mac: bytes, key: Key, seg: Tcp, now: float) -> None:
        target = self._policy(key[1], key[2])
        if target.startswith("!"):
            self._reset_unknown(guest_mac, src_mac, key, seg, target[1:])
            return
        if len(self.conns) >= self.max_conns:
            self._reap(now, count=False)
        if len(self.conns) >= self.max_conns:
            self._reset_unknown(guest_mac, src_mac, key, seg, "tcp_conn_limit")
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex((target, key[2]))
        except OSError as e:
            err = e.errno or errno.EIO
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self._reset_unknown(guest_mac, src_mac, key, seg, "tcp_refused")
            return
        iss = self._isn() & _M
        rcv_nxt = seq_add(seg.seq, 1)
        c = TcpConn(key, sock, guest_mac, src_mac, CONNECTING, irs=seg.seq, rcv_nxt=rcv_nxt, rcv_adv=rcv_nxt,
                    iss=iss, snd_una=iss, snd_nxt=iss, snd_max=iss, snd_wnd=seg.window, snd_wl1=seg.seq,
                    snd_wl2=0, guest_mss=max(MIN_GUEST_MSS, min(MSS, seg.mss or DEFAULT_GUEST_MSS)),
                    last_active=now, started=now)
        self.conns[key] = c
        if err == 0:
            self._connected(c)
        else:
            self._set_interest(c)

    def _segment(self, c: TcpConn, seg: Tcp) -> None:
        """RFC 9293 3.10.7.4, "SEGMENT ARRIVES" in the synchronized states
        (and CONNECTING, where only the guest's SYN is known)."""
        flags = seg.flags
        if c.state == SYN_SENT:
            self._syn_sent(c, seg)
            return
        if c.state == CONNECTING:
            if flags & TCP_RST:
                self._abort(c, rst_guest=False)     # the guest gave up before the host answered
            elif not (flags & TCP_SYN and seg.seq == c.irs):
                self.counters["tcp_not_connected"] += 1
            return                                  # a retransmitted SYN: the SYN-ACK follows connect()
        # First: the sequence number (Table 6: acceptability per window and length).
        wnd = seq_diff(c.rcv_adv, c.rcv_nxt)
        seglen = seg.seg_len
        if c.state == SYN_RECEIVED and flags & TCP_SYN and seg.seq == c.irs:
            self._send_synack(c)                    # the guest did not see our SYN-ACK
            return
        if flags & TCP_RST:
            # Second (RFC 5961 3.2): only an exact match resets; in-window gets a challenge ACK.
            if seg.seq == c.rcv_nxt:
                self._abort(c, rst_guest=False)
            elif seq_diff(seg.seq, c.rcv_nxt) < max(wnd, 1):
                self._send_ack(c)
                self.counters["tcp_rst_challenged"] += 1
            else:
                self.counters["tcp_out_of_window"] += 1
            return
        if not self._acceptable(c, seg.seq, seglen, wnd):
            self._send_ack(c)                       # "send an acknowledgment ... and drop the segment"
            self.counters["tcp_out_of_window"] += 1
            return
        if flags & TCP_SYN:
            self._send_ack(c)                       # fourth: a SYN in window gets a challenge ACK (RFC 5961 4)
            self.counters["tcp_syn_in_window"] += 1
            return
        if not flags & TCP_ACK:
            self.counters["tcp_no_ack"] += 1        # fifth: "if the ACK bit is off, drop the segment"
            return
        if c.state == SYN_RECEIVED:
            if seg.ack != seq_add(c.iss, 1):
                self._reset_unknown(c.guest_mac, c.src_mac, c.key, seg, "tcp_bad_ack")
                return
            c.state = ESTABLISHED
            c.snd_una = c.snd_nxt = c.snd_max = seq_add(c.iss, 1)
            c.snd_wnd, c.snd_wl1, c.snd_wl2 = seg.window, seg.seq, seg.ack
            c.deadline = None
            c.rto, c.retries = RTO_INITIAL, 0
            self._set_interest(c)
        if seq_lt(c.snd_max, seg.ack):
            self._send_ack(c)                       # acknowledges something not yet sent
            self.counters["tcp_ack_ahead"] += 1
            return
        self._process_ack(c, seg)
        if c.key not in self.conns:
            return
        # Seventh: the segment text, in order only.
        payload, fin, seq = seg.payload, bool(flags & TCP_FIN), seg.seq
        if seq_lt(seq, c.rcv_nxt):
            cut = seq_diff(c.rcv_nxt, seq)
            if cut > len(payload):
                fin = False                         # its FIN, too, was already received
            payload = payload[cut:]
            seq = c.rcv_nxt
        if seq != c.rcv_nxt:
            self._send_ack(c)                       # a gap: not queued, the duplicate ACK asks again
            self.counters["tcp_out_of_order"] += 1
            return
        if c.guest_fin:
            payload, fin = b"", False               # nothing counts after the guest's FIN
        if len(payload) > wnd:
            payload, fin = payload[:wnd], False     # trimmed to the window (3.10.7.4 "first")
        if payload:
            c.to_host += payload
            c.rcv_nxt = seq_add(c.rcv_nxt, len(payload))
        if fin:
            c.rcv_nxt = seq_add(c.rcv_nxt, 1)
            c.guest_fin = True
            c.we_closed_first = c.fin_sent
        if payload or fin:
            self._flush_to_host(c, ack_update=False)
            if c.key not in self.conns:
                return
            self._send_ack(c)
        self._output(c)
        self._maybe_finish(c)

    @staticmethod
    def _acceptable(c: TcpConn, seq: int, seglen: int, wnd: int) -> bool:
        def in_window(s: int) -> bool:
            return seq_diff(s, c.rcv_nxt) < wnd
        if seglen == 0:
            return seq == c.rcv_nxt if wnd == 0 else in_window(seq)
        if wnd == 0:
            return False
        return in_window(seq) or in_window(seq_add(seq, seglen - 1))

    def _process_ack(self, c: TcpConn, seg: Tcp) -> None:
        """Fifth, ESTABLISHED: advance SND.UNA, free acknowledged bytes, take the window."""
        ack = seg.ack
        if seq_lt(c.snd_una, ack):
            acked = seq_diff(ack, c.snd_una)
            data_end = seq_add(c.snd_una, len(c.to_guest))
            if c.fin_sent and ack == seq_add(data_end, 1):
                c.fin_acked = True
                acked -= 1
            acked = min(acked, len(c.to_guest))
            del c.to_guest[:acked]
            self.buffered -= acked
            c.snd_una = ack
            if seq_lt(c.snd_nxt, ack):
                c.snd_nxt = ack                     # acknowledged beyond a rewind for retransmission
            c.rto, c.retries = RTO_INITIAL, 0
            c.deadline = None
            self._set_interest(c)
            self._unstarve()
        if seq_le(c.snd_una, ack) and (seq_lt(c.snd_wl1, seg.seq)
                                       or (c.snd_wl1 == seg.seq and seq_le(c.snd_wl2, ack))):
            c.snd_wnd, c.snd_wl1, c.snd_wl2 = seg.window, seg.seq, ack

    # ----------------------------------------------------- segments out

    def _window(self, c: TcpConn) -> int:
        """RCV.WND to advertise: free room in to_host. The right edge never
        moves left (RFC 9293 3.8.6.2.2, shrinking the window is discouraged)."""
        edge = seq_add(c.rcv_nxt, max(0, min(RCV_BUF - len(c.to_host), 0xFFFF)))
        if seq_lt(c.rcv_adv, edge):
            c.rcv_adv = edge
        return seq_diff(c.rcv_adv, c.rcv_nxt)

    def _emit(self, c: TcpConn, seq: int, flags: int, payload: bytes = b"", mss: int | None = None) -> None:
        ack = c.rcv_nxt if flags & TCP_ACK else 0
        self._send(build_ipv4_tcp_frame(c.guest_mac, c.src_mac, c.remote_ip, self._guest_ip, c.remote_port,
                                        c.guest_port, seq, ack, flags, self._window(c), payload, mss=mss,
                                        ident=self._next_ident()))

    def _send_ack(self, c: TcpConn) -> None:
        self._emit(c, c.snd_nxt, TCP_ACK)

    def _send_synack(self, c: TcpConn) -> None:
        self._emit(c, c.iss, TCP_SYN | TCP_ACK, mss=MSS)

    def _send_syn(self, c: TcpConn) -> None:
        self._emit(c, c.iss, TCP_SYN, mss=MSS)

    def _output(self, c: TcpConn) -> None:
        """Send what the guest's window allows from to_guest, then our FIN
        once the host has closed and everything before it is out."""
        if c.state != ESTABLISHED or c.fin_acked:
            self._arm(c)
            return
        end = len(c.to_guest)
        off = seq_diff(c.snd_nxt, c.snd_una)
        if off > end:
            self._arm(c)                            # our FIN is in flight: all is sent
            return
        while off < end:
            n = min(c.guest_mss, c.snd_wnd - off, end - off)
            if n <= 0:
                break
            flags = TCP_ACK | (TCP_PSH if off + n == end else 0)
            self._emit(c, seq_add(c.snd_una, off), flags, bytes(c.to_guest[off:off + n]))
            off += n
        c.snd_nxt = seq_add(c.snd_una, off)
        if c.host_eof and off == end:
            self._emit(c, c.snd_nxt, TCP_FIN | TCP_ACK)
            c.snd_nxt = seq_add(c.snd_nxt, 1)
            c.fin_sent = True
        if seq_lt(c.snd_max, c.snd_nxt):
            c.snd_max = c.snd_nxt
        self._arm(c)

    def _arm(self, c: TcpConn) -> None:
        """The retransmission timer runs while anything is unacknowledged; the
        persist timer (3.8.6.1) while data waits behind a zero window."""
        waiting = c.snd_max != c.snd_una or (c.snd_wnd == 0 and len(c.to_guest) > 0)
        if not waiting:
            c.deadline = None
        elif c.deadline is None:
            c.deadline = self._clock() + c.rto

    def _on_timer(self, c: TcpConn, now: float) -> None:
        c.deadline = None
        if c.state == TIME_WAIT_STATE:
            self._remove(c)
            return
        if c.state in (SYN_RECEIVED, SYN_SENT):
            c.retries += 1
            if c.retries > MAX_SYN_RETRANSMITS:
                self._abort(c, rst_guest=c.state == SYN_RECEIVED, reason="tcp_retransmit_limit")
                return
            if c.state == SYN_SENT:
                self._send_syn(c)               # the guest is not up (yet), or lost it
            else:
                self._send_synack(c)
        elif c.snd_wnd == 0 and len(c.to_guest) > 0:
            # Zero-window probe: one byte past the window; the guest's ACK
            # carries its current window. Probing never gives up by itself
            # (the idle reaper ends a guest that stops answering).
            c.snd_nxt = c.snd_una
            self._emit(c, c.snd_una, TCP_ACK, bytes(c.to_guest[:1]))
            c.snd_nxt = seq_add(c.snd_una, 1)
            if seq_lt(c.snd_max, c.snd_nxt):
                c.snd_max = c.snd_nxt
        elif c.snd_max != c.snd_una:
            c.retries += 1
            if c.retries > MAX_RETRANSMITS:
                self._abort(c, rst_guest=True, reason="tcp_retransmit_limit")
                return
            c.snd_nxt = c.snd_una                   # go back to the oldest unacknowledged byte
            self._output(c)
        else:
            return
        c.rto = min(c.rto * 2, RTO_MAX)             # RFC 6298 5.5: back off
        c.deadline = now + c.rto

    # --------------------------------------------------------- host side

    def _connected(self, c: TcpConn) -> None:
        c.state = SYN_RECEIVED
        c.snd_nxt = c.snd_max = seq_add(c.iss, 1)
        self._send_synack(c)
        c.deadline = self._clock() + c.rto
        self._set_interest(c)

    def host_event(self, c: TcpConn, events: int) -> None:
        if c.key not in self.conns or c.sock is None:
            return
        if c.state == CONNECTING:
            if not events & selectors.EVENT_WRITE:
                return
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.counters["tcp_refused"] += 1
                self._abort(c, rst_guest=True)
                return
            self._connected(c)
            return
        if events & selectors.EVENT_WRITE:
            self._flush_to_host(c, ack_update=True)
            if c.key not in self.conns:
                return
        if events & selectors.EVENT_READ:
            self._read_host(c)
            if c.key not in self.conns:
                return
        self._maybe_finish(c)

    def _read_host(self, c: TcpConn) -> None:
        room = min(SND_BUF - len(c.to_guest), self.max_buffered - self.buffered, RECV_CHUNK)
        if room <= 0 or c.host_eof:
            self._set_interest(c)
            return
        try:
            data = c.sock.recv(room)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.counters["tcp_host_reset"] += 1
            self._abort(c, rst_guest=True)
            return
        c.last_active = self._clock()
        if data:
            c.to_guest += data
            self.buffered += len(data)
        else:
            c.host_eof = True
        self._output(c)
        self._set_interest(c)

    def _flush_to_host(self, c: TcpConn, *, ack_update: bool) -> None:
        before = seq_diff(c.rcv_adv, c.rcv_nxt)
        if c.to_host:
            try:
                n = c.sock.send(c.to_host)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.counters["tcp_host_reset"] += 1
                self._abort(c, rst_guest=True)
                return
            del c.to_host[:n]
        if not c.to_host and c.guest_fin and not c.host_shut:
            try:
                c.sock.shutdown(socket.SHUT_WR)     # half-close: the guest's FIN goes on to the host
            except OSError:
                pass
            c.host_shut = True
        self._set_interest(c)
        if ack_update and c.state == ESTABLISHED and not c.guest_fin:
            # A window update once the window has opened by a segment or
            # more since we last advertised it (or from zero).
            free = min(RCV_BUF - len(c.to_host), 0xFFFF)
            if free - before >= min(c.guest_mss, RCV_BUF // 2) or (before == 0 and free > 0):
                self._send_ack(c)

    def _unstarve(self) -> None:
        """Bytes were freed: connections that stopped reading for the
        VM-wide cap may read again."""
        if self._starved:
            self._starved = False
            for other in list(self.conns.values()):
                self._set_interest(other)

    def _set_interest(self, c: TcpConn) -> None:
        if c.sock is None:
            return
        events = 0
        if c.state == CONNECTING or c.to_host:
            events |= selectors.EVENT_WRITE
        if c.state == ESTABLISHED and not c.host_eof:
            if len(c.to_guest) < SND_BUF and self.buffered < self.max_buffered:
                events |= selectors.EVENT_READ
            elif self.buffered >= self.max_buffered:
                self._starved = True
        if events == c.events:
            return
        if c.events == 0:
            self._selector.register(c.sock, events, c)
        elif events == 0:
            self._selector.unregister(c.sock)
        else:
            self._selector.modify(c.sock, events, c)
        c.events = events

    # ---------------------------------------------------------- closing

    def _maybe_finish(self, c: TcpConn) -> None:
        if c.key not in self.conns or c.state != ESTABLISHED:
            return
        if not (c.guest_fin and c.host_shut and c.host_eof and c.fin_acked):
            return
        self._close_sock(c, linger_rst=False)
        if c.we_closed_first:
            # We sent FIN first, so ours is the TIME-WAIT (RFC 9293 3.6): kept
            # briefly to re-ACK a retransmitted FIN.
            c.state = TIME_WAIT_STATE
            c.deadline = self._clock() + self.time_wait
        else:
            self._remove(c)

    def _abort(self, c: TcpConn, *, rst_guest: bool, reason: str | None = None) -> None:
        """Reset the connection: RST to the host peer (SO_LINGER 0) and, if
        asked, to the guest."""
        if reason:
            self.counters[reason] += 1
        if rst_guest:
            if c.state == CONNECTING:
                self._send(build_ipv4_tcp_frame(c.guest_mac, c.src_mac, c.remote_ip, self._guest_ip,
                                                c.remote_port, c.guest_port, 0, c.rcv_nxt, TCP_RST | TCP_ACK, 0,
                                                ident=self._next_ident()))
            elif c.state == SYN_SENT:
                self._emit(c, c.snd_max, TCP_RST)   # nothing of the guest's is known to acknowledge
            else:
                self._emit(c, c.snd_max, TCP_RST | TCP_ACK)
        self._close_sock(c, linger_rst=True)
        self._remove(c)

    def _close_sock(self, c: TcpConn, *, linger_rst: bool) -> None:
        if c.sock is None:
            return
        if c.events:
            self._selector.unregister(c.sock)
            c.events = 0
        if linger_rst:
            try:
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        c.sock.close()
        c.sock = None

    def _remove(self, c: TcpConn) -> None:
        self._close_sock(c, linger_rst=True)
        self.buffered -= len(c.to_guest)
        c.to_guest.clear()
        c.to_host.clear()
        if self.conns.get(c.key) is c:
            del self.conns[c.key]
        self._unstarve()

    # ------------------------------------------------------------ timers

    def tick(self, now: float, reap: bool) -> None:
        for c in [c for c in self.conns.values() if c.deadline is not None and c.deadline <= now]:
            if c.key in self.conns:
                self._on_timer(c, now)
        if reap:
            self._reap(now, count=True)

    def next_deadline(self) -> float | None:
        return min((c.deadline for c in self.conns.values() if c.deadline is not None), default=None)

    def _reap(self, now: float, *, count: bool) -> None:
        for c in list(self.conns.values()):
            if c.state == TIME_WAIT_STATE:
                if not count or (c.deadline is not None and c.deadline <= now):
                    self._remove(c)             # at the cap, TIME-WAIT gives way at once
                continue
            if c.state in (CONNECTING, SYN_SENT):
                limit = self.connect_timeout
                since = c.started
            else:
                limit = self.half_closed_timeout if (c.guest_fin or c.host_eof) else self.idle_timeout
                since = c.last_active
            if now - since >= limit:
                self._abort(c, rst_guest=True, reason="tcp_reaped" if count else None)

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._remove(c)


def reset_socket(sock: socket.socket) -> None:
    """Close an accepted socket so that its peer sees a reset, not an orderly close."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
