"""The TCP relay (vmkit/net/tcp.py through UserNet(tcp=True)): a tiny guest
TCP written here speaks to the stack in frames, and host servers listen on
127.0.0.1 only."""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import threading
import time

import pytest

from vmkit.net import tcp as tcp_mod
from vmkit.net.packets import (
    ETH_P_IP, IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, MalformedFrame, _pseudo_header_sum,
    build_ethernet, build_ipv4, build_ipv4_tcp_frame, build_tcp, internet_checksum, parse_ethernet, parse_ipv4,
    parse_tcp,
)
from vmkit.net.stack import GATEWAY_IP, GATEWAY_MAC, GUEST_IP, UserNet
from tests.net.helpers import GUEST_MAC, ip, make_net

ISN = 5000          # the stack's initial sequence number in these tests
M = 0xFFFFFFFF


def parse_tcp_frame(frame: bytes):
    eth = parse_ethernet(frame)
    assert eth.ethertype == ETH_P_IP and eth.dst == GUEST_MAC
    ipv4 = parse_ipv4(eth.payload)
    assert ipv4.proto == IPPROTO_TCP and ipv4.dst == GUEST_IP
    return ipv4, parse_tcp(ipv4)


class Guest:
    """One guest TCP connection, driven by hand: sends whatever the peer's
    window allows, acknowledges every segment, advertises `window`, and
    checks that the stack never sends past the window it was given."""

    def __init__(self, net: UserNet, out: list[bytes], port: int, *, sport: int = 40001,
                 dst: bytes = GATEWAY_IP, window: int = 65535, mss: int = 1460, iss: int = 1000):
        self.net, self.out, self.port, self.sport, self.dst = net, out, port, sport, dst
        self.window, self.mss = window, mss
        self.iss = iss
        self.snd_una = self.snd_nxt = iss
        self.rcv_nxt = 0
        self.right_edge = 0             # the highest sequence number our window allowed
        self.peer_wnd = 0
        self.pending = bytearray()      # application bytes not yet sent
        self.fin_pending = False
        self.fin_sent = False
        self.received = bytearray()
        self.fin_received = False
        self.rst: object | None = None
        self.synack = None
        self.segments: list = []        # everything the stack sent us, parsed

    def frame(self, flags: int, *, seq: int | None = None, ack: int | None = None, payload: bytes = b"",
              window: int | None = None, mss: int | None = None) -> bytes:
        return build_ipv4_tcp_frame(GATEWAY_MAC, GUEST_MAC, GUEST_IP, self.dst, self.sport, self.port,
                                    self.snd_nxt if seq is None else seq, self.rcv_nxt if ack is None else ack,
                                    flags, self.window if window is None else window, payload, mss=mss)

    def tx(self, flags: int, **kw) -> None:
        if flags & TCP_ACK:
            # The furthest right edge ever offered: a window the guest shrinks
            # may already have been used by segments in flight.
            edge = (self.rcv_nxt + (self.window if kw.get("window") is None else kw["window"])) & M
            if (edge - self.right_edge) & M < 0x80000000:
                self.right_edge = edge
        self.net.from_guest(self.frame(flags, **kw))

    def take(self) -> list:
        segs = []
        for f in self.out:
            _ip, seg = parse_tcp_frame(f)
            assert (seg.sport, seg.dport) == (self.port, self.sport)
            segs.append(seg)
        self.out.clear()
        self.segments += segs
        return segs

    def connect(self) -> None:
        self.tx(TCP_SYN, mss=self.mss, ack=0)
        self.snd_nxt = (self.iss + 1) & M
        deadline = time.monotonic() + 5
        while self.synack is None and self.rst is None and time.monotonic() < deadline:
            self.net.poll(0.02)
            self.handle(self.take())
        assert self.synack is not None, f"no SYN-ACK; counters {dict(self.net.counters)}"

    def handle(self, segs) -> None:
        need_ack = False
        for seg in segs:
            if seg.flags & TCP_RST:
                self.rst = seg
                continue
            if seg.flags & TCP_SYN:
                assert seg.flags & TCP_ACK and seg.ack == (self.iss + 1) & M
                assert seg.mss == tcp_mod.MSS
                if self.synack is None:
                    self.synack = seg
                    self.rcv_nxt = (seg.seq + 1) & M
                    self.snd_una = seg.ack
                    self.peer_wnd = seg.window
                need_ack = True
                continue
            assert seg.flags & TCP_ACK
            if (seg.ack - self.snd_una) & M <= (self.snd_nxt - self.snd_una) & M:
                self.snd_una = seg.ack
            self.peer_wnd = seg.window
            if seg.payload or seg.flags & TCP_FIN:
                end = (seg.seq + len(seg.payload)) & M
                # Flow control: nothing past the window we advertised.
                assert (self.right_edge - end) & M < 0x80000000, "the stack sent past the guest's window"
                if seg.seq == self.rcv_nxt:
                    self.received += seg.payload
                    self.rcv_nxt = end
                    if seg.flags & TCP_FIN:
                        self.fin_received = True
                        self.rcv_nxt = (self.rcv_nxt + 1) & M
                need_ack = True
        if need_ack:
            self.tx(TCP_ACK)

    def push(self) -> None:
        """Send what the stack's window allows; the FIN when all is out."""
        while self.pending:
            in_flight = (self.snd_nxt - self.snd_una) & M
            n = min(self.mss, self.peer_wnd - in_flight, len(self.pending))
            if n <= 0:
                break
            chunk = bytes(self.pending[:n])
            del self.pending[:n]
            self.tx(TCP_ACK | TCP_PSH, payload=chunk)
            self.snd_nxt = (self.snd_nxt + n) & M
        if self.fin_pending and not self.pending and not self.fin_sent:
            self.tx(TCP_FIN | TCP_ACK)
            self.snd_nxt = (self.snd_nxt + 1) & M
            self.fin_sent = True

    def step(self, timeout: float = 0.005) -> None:
        self.push()
        self.net.poll(timeout)
        self.handle(self.take())
        self.push()

    def run_until(self, cond, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out; counters {dict(self.net.counters)}"
            self.step()

    def send(self, data: bytes, fin: bool = False) -> None:
        self.pending += data
        self.fin_pending = self.fin_pending or fin
        self.push()


class Server:
    """A TCP server on 127.0.0.1 running handler(conn) for each connection on a thread."""

    def __init__(self, handler, backlog: int = 8, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set on the listener, so accepted sockets start small (shrinking
            # a live connection's buffer stalls the host's own TCP).
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.errors: list[BaseException] = []
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn) -> None:
        try:
            conn.settimeout(20)
            self.handler(conn)
        except BaseException as e:     # noqa: BLE001 -- reported by the test
            self.errors.append(e)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def recv_all(conn) -> bytes:
    buf = bytearray()
    while chunk := conn.recv(65536):
        buf += chunk
    return bytes(buf)


def echo(conn) -> None:
    while chunk := conn.recv(65536):
        conn.sendall(chunk)
    conn.shutdown(socket.SHUT_WR)


@pytest.fixture
def net():
    n, out = make_net(tcp_isn=lambda: ISN)
    yield n, out
    n.close()


@pytest.fixture
def server():
    servers = []

    def start(handler, **kw):
        s = Server(handler, **kw)
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.close()


# ------------------------------------------------------------------ parser

def _seg(flags=TCP_ACK, payload=b"", **kw):
    return build_tcp(GUEST_IP, GATEWAY_IP, 40000, 80, 1, 2, flags, 1000, payload, **kw)


def _ip_of(seg: bytes):
    return parse_ipv4(build_ipv4(GUEST_IP, GATEWAY_IP, IPPROTO_TCP, seg))


def _fix(seg: bytearray) -> bytes:
    struct.pack_into("!H", seg, 16, 0)
    struct.pack_into("!H", seg, 16, internet_checksum(bytes(seg), _pseudo_header_sum(GUEST_IP, GATEWAY_IP,
                                                                                     IPPROTO_TCP, len(seg))))
    return bytes(seg)


def test_tcp_build_parse_roundtrip():
    t = parse_tcp(_ip_of(_seg(TCP_SYN, mss=1400)))
    assert (t.sport, t.dport, t.seq, t.ack, t.flags, t.window, t.mss, t.payload) == \
        (40000, 80, 1, 2, TCP_SYN, 1000, 1400, b"")
    assert t.seg_len == 1
    t = parse_tcp(_ip_of(_seg(TCP_ACK | TCP_FIN, b"hello")))
    assert (t.mss, t.payload, t.seg_len) == (None, b"hello", 6)


def test_tcp_options_skipped_and_mss_kept():
    # NOP, NOP, timestamps (kind 8, len 10), window scale (3, 3), MSS, EOL padding
    opts = b"\x01\x01" + bytes([8, 10]) + bytes(8) + bytes([3, 3, 7]) + bytes([2, 4, 5, 0xB4]) + b"\0\0\0"
    seg = bytearray(_seg(TCP_SYN))
    seg = seg[:20] + opts
    struct.pack_into("!H", seg, 12, ((20 + len(opts)) // 4) << 12 | TCP_SYN)
    assert parse_tcp(_ip_of(_fix(seg))).mss == 1460


def _raw(offset_words: int, opts: bytes = b"", sport: int = 40000) -> bytes:
    seg = bytearray(struct.pack("!HHIIHHHH", sport, 80, 1, 2, offset_words << 12 | TCP_SYN, 1000, 0, 0) + opts)
    return _fix(seg)


@pytest.mark.parametrize("seg", [
    _seg(TCP_SYN)[:19],                             # truncated header
    _raw(4),                                        # data offset below 5 words
    _raw(15),                                       # data offset past the segment
    _raw(6, b"\x02\x05\x05\xb4"),                   # MSS option of length 5
    _raw(6, b"\x02\x03\x05\x00"),                   # MSS option of length 3
    _raw(6, b"\x01\x01\x01\x08"),                   # an option without its length byte
    _raw(6, b"\x08\x01\x00\x00"),                   # option length 1
    _raw(6, b"\x08\x09\x00\x00"),                   # option running past the header
    _raw(5, sport=0),                               # port 0
], ids=["truncated", "offset4", "offset-past", "mss5", "mss3", "nolen", "len1", "past-header", "port0"])
def test_tcp_malformed_rejected(seg):
    with pytest.raises(MalformedFrame):
        parse_tcp(_ip_of(seg))


def test_tcp_bad_checksum_rejected():
    seg = bytearray(_seg(TCP_ACK, b"data"))
    seg[-1] ^= 1
    with pytest.raises(MalformedFrame, match="checksum"):
        parse_tcp(_ip_of(bytes(seg)))


def test_malformed_tcp_frames_counted(net):
    n, out = net
    g = Guest(n, out, 80)
    good = bytearray(g.frame(TCP_SYN))
    bad_csum = bytearray(good)
    bad_csum[-1] ^= 0xFF
    n.from_guest(bytes(bad_csum))
    n.from_guest(build_ethernet(GATEWAY_MAC, GUEST_MAC, ETH_P_IP,
                                build_ipv4(GUEST_IP, GATEWAY_IP, IPPROTO_TCP, bytes(20))))
    assert out == [] and n.counters == {"malformed": 2}
    assert n.tcp_conn_count == 0


def test_tcp_off_drops_and_counts():
    n, out = make_net(tcp=False)
    try:
        n.from_guest(Guest(n, out, 80).frame(TCP_SYN))
        assert out == [] and n.counters == {"tcp": 1}
    finally:
        n.close()


# ------------------------------------------------------------- connections

def test_handshake_and_echo_with_seq_ack(net, server):
    n, out = net
    srv = server(echo)
    g = Guest(n, out, srv.port, mss=1000)
    g.connect()
    assert g.synack.seq == ISN and g.synack.ack == 1001 and g.synack.window > 0
    assert n.tcp_conn_count == 1
    g.send(b"hello, host")
    g.run_until(lambda: len(g.received) >= 11)
    assert bytes(g.received) == b"hello, host"
    data_segs = [s for s in g.segments if s.payload]
    assert data_segs[0].seq == ISN + 1 and data_segs[0].ack == 1001 + 11
    assert g.snd_una == 1001 + 11                       # the stack acknowledged every byte
    g.send(b"", fin=True)
    g.run_until(lambda: g.fin_received)
    g.run_until(lambda: n.tcp_conn_count == 0)          # the guest closed first: no TIME-WAIT here
    assert not srv.errors and not n.counters


def test_connect_to_closed_port_gets_rst(net):
    n, out = net
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    g = Guest(n, out, port)
    g.tx(TCP_SYN, mss=1460, ack=0)
    deadline = time.monotonic() + 5
    while g.rst is None and time.monotonic() < deadline:
        n.poll(0.02)
        g.handle(g.take())
    assert g.rst is not None
    assert g.rst.flags & TCP_ACK and g.rst.ack == 1001 and g.synack is None
    assert n.tcp_conn_count == 0 and n.counters["tcp_refused"] == 1


@pytest.mark.parametrize("dst,port,kw,reason", [
    (ip("169.254.169.254"), 80, {}, "denied_destination"),
    (ip("127.0.0.1"), 80, {}, "denied_destination"),
    (ip("10.0.2.3"), 53, {}, "no_such_port"),
    (ip("93.184.216.34"), 80, {}, "denied_destination"),       # allow_relay: loopback only
    (GATEWAY_IP, 80, {"restrict": True}, "restricted"),
])
def test_denied_destinations_get_rst(dst, port, kw, reason):
    n, out = make_net(**kw)
    try:
        g = Guest(n, out, port, dst=dst)
        g.tx(TCP_SYN, ack=0)
        g.handle(g.take())
        assert g.rst is not None and g.rst.ack == 1001
        assert n.counters == {reason: 1} and n.tcp_conn_count == 0
    finally:
        n.close()


def test_segment_for_unknown_connection_gets_rst(net):
    n, out = net
    g = Guest(n, out, 80)
    g.tx(TCP_ACK, seq=77, ack=1234, payload=b"x")
    g.handle(g.take())
    assert g.rst.seq == 1234 and g.rst.flags == TCP_RST
    g.rst = None
    g.tx(TCP_RST, seq=77, ack=0)
    assert g.take() == [] and n.counters == {"tcp_no_conn": 2}


def test_half_close_guest_first(net, server):
    """The guest's FIN becomes shutdown(SHUT_WR) on the host socket; the host
    keeps sending (the sha256 of what it read) and then closes."""
    def hasher(conn):
        digest = hashlib.sha256(recv_all(conn)).digest()
        conn.sendall(digest)
        conn.close()
    n, out = net
    srv = server(hasher)
    g = Guest(n, out, srv.port)
    g.connect()
    data = random.Random(1).randbytes(100_000)
    g.send(data, fin=True)
    g.run_until(lambda: g.fin_received)
    assert bytes(g.received) == hashlib.sha256(data).digest()
    g.run_until(lambda: n.tcp_conn_count == 0)
    assert not srv.errors and not n.counters


def test_half_close_host_first_then_time_wait(net, server):
    got = []

    def greeter(conn):
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        got.append(recv_all(conn))
        conn.close()
    n, out = net
    n._tcp.time_wait = 0.05
    srv = server(greeter)
    g = Guest(n, out, srv.port)
    g.connect()
    g.run_until(lambda: g.fin_received)
    assert bytes(g.received) == b"hello"
    g.send(b"still talking after your FIN", fin=True)
    g.run_until(lambda: got)
    assert got == [b"still talking after your FIN"]
    g.run_until(lambda: n._tcp.conns and next(iter(n._tcp.conns.values())).state == tcp_mod.TIME_WAIT_STATE
                or n.tcp_conn_count == 0)
    # A retransmitted FIN in TIME-WAIT is acknowledged again.
    g.take()
    g.tx(TCP_FIN | TCP_ACK, seq=(g.snd_nxt - 1) & M)
    acks = g.take()
    assert len(acks) == 1 and acks[0].flags == TCP_ACK and acks[0].ack == g.snd_nxt
    g.run_until(lambda: n.tcp_conn_count == 0)
    assert not srv.errors and not n.counters


def test_rst_from_host(net, server):
    def slammer(conn):
        conn.recv(100)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    n, out = net
    srv = server(slammer)
    g = Guest(n, out, srv.port)
    g.connect()
    g.send(b"knock knock")
    g.run_until(lambda: g.rst is not None)
    assert g.rst.seq == ISN + 1 and g.rst.flags & TCP_RST          # at SND.NXT: the guest accepts it
    assert n.tcp_conn_count == 0 and n.counters["tcp_host_reset"] == 1


def test_rst_from_guest_resets_host(net, server):
    seen = []

    def reader(conn):
        try:
            seen.append(recv_all(conn))
        except ConnectionResetError:
            seen.append("reset")
    n, out = net
    srv = server(reader)
    g = Guest(n, out, srv.port)
    g.connect()
    g.send(b"abc")
    g.run_until(lambda: g.snd_una == g.snd_nxt)
    g.tx(TCP_RST, seq=(g.snd_nxt + 5) & M, ack=0)          # in window but not exact: challenge ACK
    assert n.tcp_conn_count == 1 and n.counters == {"tcp_rst_challenged": 1}
    g.tx(TCP_RST, ack=0)
    assert n.tcp_conn_count == 0
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == ["reset"]


def test_connection_cap(server):
    n, out = make_net(max_tcp_conns=2)
    srv = server(echo)
    try:
        guests = [Guest(n, out, srv.port, sport=41000 + i) for i in range(3)]
        guests[0].connect()
        for g in guests:
            g.out = out
        guests[1].tx(TCP_SYN, ack=0)
        guests[1].snd_nxt = 1001
        guests[2].tx(TCP_SYN, ack=0)
        assert n.tcp_conn_count == 2 and n.counters == {"tcp_conn_limit": 1}
        rst = [parse_tcp_frame(f)[1] for f in out if parse_tcp_frame(f)[1].dport == 41002]
        assert len(rst) == 1 and rst[0].flags & TCP_RST
    finally:
        n.close()


# ---------------------------------------------------------- flow control

def test_bulk_echo_both_ways_small_guest_window(net, server):
    """4 MiB each way through an echo server while the guest advertises only
    4 KiB: byte-exact, and never a byte past the guest's window."""
    n, out = net
    srv = server(echo)
    g = Guest(n, out, srv.port, window=4096)
    g.connect()
    data = random.Random(2).randbytes(4 * 1024 * 1024)
    g.send(data, fin=True)
    g.run_until(lambda: g.fin_received, timeout=15)
    assert hashlib.sha256(g.received).digest() == hashlib.sha256(data).digest()
    assert max(len(s.payload) for s in g.segments) <= 1460
    g.run_until(lambda: n.tcp_conn_count == 0)
    assert not srv.errors and not n.counters


def test_slow_guest_zero_window_loses_nothing(net, server):
    """The guest stops reading (window 0): the stack stops sending and stops
    reading the host socket at its buffer bound, then resumes."""
    size = 2 * 1024 * 1024
    data = random.Random(3).randbytes(size)

    def sender(conn):
        conn.sendall(data)
        conn.close()
    n, out = net
    srv = server(sender)
    g = Guest(n, out, srv.port, window=8192)
    g.connect()
    g.run_until(lambda: len(g.received) >= 8192)
    g.window = 0
    g.tx(TCP_ACK)
    before = len(g.received)
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        g.step(0.01)
    assert len(g.received) - before <= 8192          # only what was in flight under the old window
    assert n.tcp_buffered <= tcp_mod.SND_BUF
    g.window = 16384
    g.tx(TCP_ACK)                                     # the window update
    g.run_until(lambda: g.fin_received, timeout=15)
    assert bytes(g.received) == data
    n._tcp.time_wait = 0.05
    g.send(b"", fin=True)
    g.run_until(lambda: n.tcp_conn_count == 0)          # through a short TIME-WAIT
    assert not srv.errors


def test_slow_host_peer_closes_our_window(net, server):
    """The host peer does not read for a while: our advertised window falls
    to zero, the guest waits, and every byte arrives once the peer reads."""
    go = threading.Event()
    got = []

    def lazy(conn):
        go.wait(10)
        got.append(hashlib.sha256(recv_all(conn)).digest())
        conn.close()
    n, out = net
    srv = server(lazy, rcvbuf=8192)
    g = Guest(n, out, srv.port)
    g.connect()
    data = random.Random(4).randbytes(8 * 1024 * 1024)
    g.send(data, fin=True)
    end = time.monotonic() + 5
    while time.monotonic() < end and g.peer_wnd != 0:
        g.step(0.005)
    assert g.peer_wnd == 0                            # kernel buffers and ours are full
    assert n.tcp_buffered <= tcp_mod.RCV_BUF
    go.set()
    g.run_until(lambda: got and g.fin_received, timeout=15)
    assert got == [hashlib.sha256(data).digest()]
    assert not srv.errors


def test_retransmission_and_zero_window_probe():
    """A fake clock drives the timers: unacknowledged data is sent again
    from SND.UNA, and a zero window is probed."""
    now = [1000.0]
    n, out = make_net(tcp_isn=lambda: ISN, clock=lambda: now[0])
    a, b = socket.socketpair()
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    try:
        g = Guest(n, out, lst.getsockname()[1], window=3000)
        g.connect()
        host, _ = lst.accept()
        host.sendall(b"A" * 5000)
        deadline = time.monotonic() + 5
        segs = []
        while sum(len(s.payload) for s in segs) < 3000 and time.monotonic() < deadline:
            n.poll(0.01)
            segs += g.take()
        assert [len(s.payload) for s in segs] == [1460, 1460, 80]           # the window, no more
        assert segs[0].seq == ISN + 1
        n.poll(0)
        assert g.take() == []
        now[0] += 1.01                                                     # RTO: 1 s
        assert n.poll(0) == 3                                              # poll() counts TCP frames too
        again = g.take()
        assert again[0].seq == ISN + 1 and [len(s.payload) for s in again] == [1460, 1460, 80]
        # The guest takes it all but closes its window: a probe follows the RTO.
        g.window = 0
        g.handle(again)                                 # its ACK carries window 0
        assert g.take() == []
        now[0] += 1.01
        n.poll(0)
        probe = g.take()
        assert len(probe) == 1 and probe[0].seq == ISN + 3001 and len(probe[0].payload) == 1
        host.close()
    finally:
        n.close()
        lst.close()
        a.close()
        b.close()


def test_reaping_idle_and_connecting():
    now = [1000.0]
    n, out = make_net(tcp_isn=lambda: ISN, clock=lambda: now[0])
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    try:
        g = Guest(n, out, lst.getsockname()[1])
        g.connect()
        assert n.tcp_conn_count == 1
        now[0] += tcp_mod.IDLE_TIMEOUT + 2
        n.poll(0)
        g.handle(g.take())
        assert g.rst is not None and n.tcp_conn_count == 0 and n.counters == {"tcp_reaped": 1}
    finally:
        n.close()
        lst.close()


def test_half_closed_connection_reaped():
    now = [1000.0]
    n, out = make_net(tcp_isn=lambda: ISN, clock=lambda: now[0])
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    try:
        g = Guest(n, out, lst.getsockname()[1])
        g.connect()
        host, _ = lst.accept()
        g.send(b"", fin=True)                       # the host never closes its side
        g.step()
        now[0] += tcp_mod.HALF_CLOSED_TIMEOUT - 1
        n.poll(0)
        assert n.tcp_conn_count == 1
        now[0] += 2
        n.poll(0)
        g.handle(g.take())
        assert g.rst is not None and n.tcp_conn_count == 0 and n.counters == {"tcp_reaped": 1}
        host.close()
    finally:
        n.close()
        lst.close()


def test_vm_wide_buffer_cap(server):
    """Two connections whose guest reads nothing: together they hold at most
    max_tcp_buffered host bytes, and both finish once the guest reads."""
    size = 300_000
    data = random.Random(5).randbytes(size)

    def sender(conn):
        conn.sendall(data)
        conn.close()
    n, out = make_net(tcp_isn=lambda: ISN, max_tcp_buffered=20_000)
    srv = server(sender)
    try:
        shared = out
        guests = []
        for i in range(2):
            g = Guest(n, shared, srv.port, sport=42000 + i, window=0)
            guests.append(g)
        for g in guests:
            g.tx(TCP_SYN, mss=1460, ack=0)
            g.snd_nxt = 1001

        def pump():
            n.poll(0.01)
            frames = list(shared)
            shared.clear()
            for g in guests:
                g.out = [f for f in frames if parse_tcp_frame(f)[1].dport == g.sport]
                g.handle(g.take())
                g.out = shared
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            pump()
            assert n._tcp.buffered <= 20_000
        assert all(g.synack is not None for g in guests) and n._tcp.buffered > 0
        for g in guests:
            g.window = 8192
            g.tx(TCP_ACK)
        deadline = time.monotonic() + 10
        while not all(g.fin_received for g in guests):
            assert time.monotonic() < deadline, dict(n.counters)
            pump()
            assert n._tcp.buffered <= 20_000
        assert all(bytes(g.received) == data for g in guests)
    finally:
        n.close()


def test_guest_retransmission_overlap_trimmed_and_gap_dup_acked(net, server):
    got = []

    def collector(conn):
        got.append(recv_all(conn))
        conn.close()
    n, out = net
    srv = server(collector)
    g = Guest(n, out, srv.port)
    g.connect()
    g.tx(TCP_ACK | TCP_PSH, payload=b"abcdef")
    acks = g.take()
    assert acks[-1].ack == 1007
    # A retransmission overlapping what was received: only "gh" is new.
    g.tx(TCP_ACK | TCP_PSH, seq=1004, payload=b"defgh")
    assert g.take()[-1].ack == 1009
    # A segment after a gap is not taken: the duplicate ACK asks for 1009.
    g.tx(TCP_ACK | TCP_PSH, seq=1020, payload=b"later")
    dup = g.take()
    assert len(dup) == 1 and dup[0].ack == 1009 and n.counters == {"tcp_out_of_order": 1}
    # Entirely old data: acceptable? No -- outside the window, answered with an ACK.
    g.tx(TCP_ACK | TCP_PSH, seq=1001, payload=b"ab")
    assert g.take()[-1].ack == 1009 and n.counters["tcp_out_of_window"] == 1
    g.snd_nxt = 1009
    g.send(b"", fin=True)
    g.run_until(lambda: got and g.fin_received)
    assert got == [b"abcdefgh"]


def test_syn_retransmitted_gets_synack_again(net, server):
    n, out = net
    srv = server(echo)
    g = Guest(n, out, srv.port)
    g.tx(TCP_SYN, ack=0, mss=1460)
    deadline = time.monotonic() + 5
    while not out and time.monotonic() < deadline:
        n.poll(0.01)
    first = g.take()
    assert len(first) == 1 and first[0].flags == TCP_SYN | TCP_ACK
    g.tx(TCP_SYN, seq=1000, ack=0, mss=1460)            # the guest did not see it
    again = g.take()
    assert len(again) == 1 and again[0].flags == TCP_SYN | TCP_ACK and again[0].seq == ISN
    g.snd_nxt = 1001
    g.handle(first)                                     # the handshake's ACK
    assert n._tcp.conns[(g.sport, GATEWAY_IP, srv.port)].state == tcp_mod.ESTABLISHED
    # A SYN with another sequence number on an established connection: challenge ACK.
    g.tx(TCP_SYN, seq=2000, ack=0)
    ch = g.take()
    assert ch[-1].flags == TCP_ACK and ch[-1].ack == 1001 and n.tcp_conn_count == 1


def test_data_past_our_window_is_trimmed(server):
    go = threading.Event()
    got = []

    def lazy(conn):
        go.wait(10)
        got.append(recv_all(conn))
        conn.close()
    n, out = make_net(tcp_isn=lambda: ISN)
    srv = server(lazy, rcvbuf=8192)
    try:
        g = Guest(n, out, srv.port)
        g.connect()
        data = random.Random(6).randbytes(8 * 1024 * 1024)
        g.send(data)
        end = time.monotonic() + 5
        while time.monotonic() < end and g.peer_wnd != 0:
            g.step(0.005)
        assert g.peer_wnd == 0
        # The guest ignores the zero window: the bytes are not taken.
        before = n.tcp_buffered
        g.tx(TCP_ACK | TCP_PSH, payload=b"X" * 100)
        reply = g.take()
        assert reply[-1].ack == g.snd_nxt and reply[-1].window == 0
        assert n.tcp_buffered == before and n.counters == {"tcp_out_of_window": 1}
        go.set()
        g.send(b"", fin=True)
        g.run_until(lambda: got, timeout=15)
        assert got == [data]
    finally:
        n.close()
