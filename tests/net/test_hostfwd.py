"""Host port forwards (vmkit/net/forward.py, tcp.py open_inbound): host
clients on 127.0.0.1 reach a guest port; the guest's side of the wire is
played by hand, as in test_tcp.py."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from vmkit.machine.netspec import NetSpecError, parse_net
from vmkit.net.forward import HostForward, ForwardError
from vmkit.net.packets import (
    ETH_P_IP, IPPROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN, parse_ethernet, parse_ipv4, parse_udp,
)
from vmkit.net.stack import GATEWAY_IP
from tests.net.helpers import GUEST_MAC, make_net, udp_frame
from tests.net.test_tcp import Guest, parse_tcp_frame

M = 0xFFFFFFFF


def fwd(proto="tcp", guest_port=8080, host_port=0, host_addr="127.0.0.1"):
    return HostForward(proto, host_addr, host_port, guest_port)


@pytest.fixture
def forwarded():
    nets = []

    def make(*rules, **kw):
        net, out = make_net(forwards=rules, guest_mac=GUEST_MAC, **kw)
        nets.append(net)
        return net, out, [port for _rule, port in net.forward_ports]
    yield make
    for n in nets:
        n.close()


def accept_in_guest(net, out, *, window=65535, guest_iss=7000) -> Guest:
    """Wait for the stack's SYN to the forwarded guest port and answer it:
    returns a Guest (test_tcp.py) in ESTABLISHED, ready to push/receive."""
    deadline = time.monotonic() + 5
    syn = None
    while syn is None:
        assert time.monotonic() < deadline, f"no SYN toward the guest; counters {dict(net.counters)}"
        net.poll(0.02)
        for f in out:
            ipv4, seg = parse_tcp_frame(f)
            if seg.flags & TCP_SYN:
                assert not seg.flags & TCP_ACK and ipv4.src == GATEWAY_IP and seg.mss == 1460
                syn = seg
        out.clear()
    g = Guest(net, out, syn.sport, sport=syn.dport, window=window, iss=guest_iss)
    g.rcv_nxt = (syn.seq + 1) & M
    g.synack = syn
    g.tx(TCP_SYN | TCP_ACK, seq=guest_iss, mss=1460)
    g.snd_una = g.snd_nxt = (guest_iss + 1) & M
    deadline = time.monotonic() + 5
    while g.peer_wnd == 0:
        assert time.monotonic() < deadline, "no ACK of our SYN-ACK"
        net.poll(0.01)
        for seg in g.take():
            assert seg.flags & TCP_ACK and seg.ack == g.snd_nxt and not seg.flags & (TCP_SYN | TCP_RST)
            g.peer_wnd = seg.window
    return g


def test_tcp_forward_moves_data_both_ways(forwarded):
    net, out, (port,) = forwarded(fwd())
    up = os.urandom(1 << 20)
    down = os.urandom(1 << 20)
    got = {}

    def client():
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            t = threading.Thread(target=lambda: (s.sendall(up), s.shutdown(socket.SHUT_WR)))
            t.start()
            buf = bytearray()
            while chunk := s.recv(65536):
                buf += chunk
            t.join()
            got["down"] = bytes(buf)

    t = threading.Thread(target=client)
    t.start()
    g = accept_in_guest(net, out, window=8192)
    g.send(down, fin=True)
    g.run_until(lambda: g.fin_received and g.fin_sent and g.snd_una == g.snd_nxt, timeout=30)
    t.join(10)
    assert hashlib.sha256(bytes(g.received)).digest() == hashlib.sha256(up).digest()
    assert got["down"] == down
    assert net.counters["tcp_inbound"] == 1


def test_guest_refuses_forwarded_connection_host_sees_reset(forwarded):
    net, out, (port,) = forwarded(fwd())
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    deadline = time.monotonic() + 5
    while not out:
        assert time.monotonic() < deadline
        net.poll(0.02)
    _ip, syn = parse_tcp_frame(out.pop())
    g = Guest(net, out, syn.sport, sport=syn.dport)
    g.tx(TCP_RST | TCP_ACK, seq=0, ack=(syn.seq + 1) & M)
    assert net.tcp_conn_count == 0 and net.counters["tcp_guest_refused"] == 1
    with pytest.raises(ConnectionResetError):
        s.recv(10)
    s.close()


def test_unanswered_syn_is_retransmitted(forwarded):
    clock = [0.0]
    net, out, (port,) = forwarded(fwd(), clock=lambda: clock[0])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    deadline = time.monotonic() + 5
    while not out:
        assert time.monotonic() < deadline
        net.poll(0.02)
    first = parse_tcp_frame(out.pop())[1]
    clock[0] += 1.5
    net.poll(0)
    again = parse_tcp_frame(out.pop())[1]
    assert again.flags == TCP_SYN and again.seq == first.seq and again.sport == first.sport
    s.close()


def test_port_in_use_is_a_clear_error(forwarded):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ForwardError) as e:
            make_net(forwards=(fwd(guest_port=80), fwd(host_port=port, guest_port=22)))
        assert f"hostfwd=tcp:127.0.0.1:{port}-:22: host port {port} is already in use" in e.value.strerror
    finally:
        taken.close()


def test_forward_cap_resets_extra_connections(forwarded):
    net, out, (port,) = forwarded(fwd(), max_tcp_conns=2)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    deadline = time.monotonic() + 5
    while net.counters["tcp_conn_limit"] < 1:
        assert time.monotonic() < deadline, dict(net.counters)
        net.poll(0.02)
    assert net.tcp_conn_count == 2
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        clients[2].recv(1)
    for c in clients:
        c.close()


def test_restrict_allows_the_forward_but_not_outbound(forwarded):
    net, out, (port,) = forwarded(fwd(), restrict=True)
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    g = accept_in_guest(net, out)
    g.send(b"hello from the guest", fin=True)
    g.run_until(lambda: g.snd_una == g.snd_nxt)
    assert c.recv(100) == b"hello from the guest"
    c.close()
    # An outbound connection from the same guest is refused with a reset.
    o = Guest(net, out, 9, sport=40123)
    o.tx(TCP_SYN, mss=1460, ack=0)
    o.handle(o.take())
    assert o.rst is not None and net.counters["restricted"] == 1


def _udp_to_guest(frame: bytes):
    eth = parse_ethernet(frame)
    assert eth.ethertype == ETH_P_IP and eth.dst == GUEST_MAC
    ipv4 = parse_ipv4(eth.payload)
    assert ipv4.proto == IPPROTO_UDP
    return ipv4, parse_udp(ipv4)


def test_udp_forward_round_trip_per_peer(forwarded):
    net, out, (port,) = forwarded(fwd("udp", guest_port=5300), restrict=True)
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for i, p in enumerate(peers):
        p.settimeout(5)
        p.sendto(f"question {i}".encode(), ("127.0.0.1", port))
    seen = {}
    deadline = time.monotonic() + 5
    while len(seen) < 2:
        assert time.monotonic() < deadline, dict(net.counters)
        net.poll(0.02)
        for f in out:
            ipv4, udp = _udp_to_guest(f)
            assert ipv4.src == GATEWAY_IP and udp.dport == 5300
            seen[udp.payload] = udp.sport
        out.clear()
    assert seen[b"question 0"] != seen[b"question 1"]
    for i in range(2):
        net.from_guest(udp_frame(GATEWAY_IP, seen[f"question {i}".encode()], f"answer {i}".encode(), sport=5300))
    for i, p in enumerate(peers):
        assert p.recvfrom(100)[0] == f"answer {i}".encode()
        p.close()


@pytest.mark.parametrize("text, message", [
    ("user,hostfwd=tcp:127.0.0.1:0", "use [tcp|udp]"),
    ("user,hostfwd=tcp:localhost:80-:80", "must be an IPv4 address"),
    ("user,hostfwd=tcp::80-:0", "bad guest port"),
    ("user,hostfwd=tcp::80-:22,hostfwd=tcp::80-:23", "same host port"),
])
def test_bad_hostfwd_rules(text, message):
    with pytest.raises(NetSpecError, match=message.replace("[", r"\[").replace("|", r"\|")):
        parse_net(text)


def test_hostfwd_rules_parse_like_qemu():
    spec = parse_net("user,hostfwd=tcp::2222-:22,hostfwd=udp:0.0.0.0:5353-10.0.2.15:53,hostfwd=:127.0.0.1:8080-:80")
    assert spec.forwards == (HostForward("tcp", "127.0.0.1", 2222, 22), HostForward("udp", "0.0.0.0", 5353, 53),
                             HostForward("tcp", "127.0.0.1", 8080, 80))


def test_udp_forward_larger_than_the_mtu_arrives_in_fragments(forwarded):
    from vmkit.net.fragments import Reassembler
    net, out, (port,) = forwarded(fwd("udp", guest_port=5300))
    payload = os.urandom(4000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.sendto(payload, ("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while len(out) < 3:
            assert time.monotonic() < deadline, dict(net.counters)
            net.poll(0.02)
    reassembler, whole = Reassembler(), None
    for f in out:
        whole = reassembler.add(parse_ipv4(parse_ethernet(f).payload)) or whole
    assert len(out) == 3 and whole is not None
    ipv4 = parse_ipv4(whole)
    assert ipv4.src == GATEWAY_IP and parse_udp(ipv4).payload == payload
