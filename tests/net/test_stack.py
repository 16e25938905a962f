"""UserNet (vmkit/net/stack.py): the virtual hosts, DHCP, DNS, the UDP
relay and its limits. All host traffic stays on 127.0.0.1."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from vmkit.net import dhcp, dns, stack
from vmkit.net.packets import (
    ARP_OP_REPLY, ETH_BROADCAST, ETH_P_ARP, ETH_P_IP, ICMP_ECHO_REPLY, IPPROTO_ICMP, IPPROTO_TCP,
    build_ethernet, build_ipv4, internet_checksum, parse_arp, parse_ethernet, parse_icmp, parse_ipv4,
)
from vmkit.net.fragments import Reassembler, build_ipv4_fragments
from vmkit.net.packets import ICMP_ECHO_REQUEST, IPPROTO_UDP, build_icmp, build_udp
from vmkit.net.stack import DNS_IP, GATEWAY_IP, GATEWAY_MAC, GUEST_IP, UserNet
from tests.net.helpers import (
    GUEST_MAC, arp_request, dhcp_frame, dhcp_message, dns_query, icmp_echo, ip, make_net, parse_udp_frame,
    udp_frame,
)


@pytest.fixture
def net():
    n, out = make_net()
    yield n, out
    n.close()


@pytest.fixture
def echo_server():
    """A UDP echo server on 127.0.0.1; yields its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            sock.sendto(b"echo:" + data, addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield sock.getsockname()[1]
    stop.set()
    t.join()
    sock.close()


def poll_until(n: UserNet, out: list[bytes], count: int = 1, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        n.poll(0.05)
    assert len(out) >= count, f"no reply within {timeout} s; counters {dict(n.counters)}"


# --------------------------------------------------------------- ARP, ICMP

@pytest.mark.parametrize("target", [GATEWAY_IP, DNS_IP])
def test_arp_reply_for_virtual_hosts(net, target):
    n, out = net
    n.from_guest(arp_request(target) + bytes(18))        # padded to 60 bytes, as on a wire
    assert len(out) == 1
    eth = parse_ethernet(out[0])
    assert (eth.dst, eth.src, eth.ethertype) == (GUEST_MAC, stack.virtual_mac(target), ETH_P_ARP)
    arp = parse_arp(eth.payload)
    assert (arp.op, arp.sha, arp.spa, arp.tha, arp.tpa) == (ARP_OP_REPLY, stack.virtual_mac(target), target,
                                                            GUEST_MAC, GUEST_IP)
    assert stack.virtual_mac(GATEWAY_IP) == bytes.fromhex("52550a000202")
    assert not n.counters


def test_arp_for_other_addresses_is_not_answered(net):
    n, out = net
    n.from_guest(arp_request(ip("10.0.2.99")))
    n.from_guest(arp_request(GUEST_IP, spa=b"\0\0\0\0"))     # the guest's own duplicate-address probe
    assert out == [] and n.counters == {"arp_not_for_us": 2}


@pytest.mark.parametrize("target", [GATEWAY_IP, DNS_IP])
def test_icmp_echo_reply(net, target):
    n, out = net
    n.from_guest(icmp_echo(target, ident=0x4242, seq=7, data=bytes(range(56))))
    assert len(out) == 1
    eth = parse_ethernet(out[0])
    assert (eth.dst, eth.src, eth.ethertype) == (GUEST_MAC, stack.virtual_mac(target), ETH_P_IP)
    ipv4 = parse_ipv4(eth.payload)                            # verifies the header checksum
    assert internet_checksum(eth.payload[:20]) == 0
    assert (ipv4.src, ipv4.dst, ipv4.proto) == (target, GUEST_IP, IPPROTO_ICMP)
    assert internet_checksum(ipv4.payload) == 0
    msg = parse_icmp(ipv4.payload)
    assert (msg.type, msg.code, msg.rest, msg.payload) == (ICMP_ECHO_REPLY, 0, struct.pack("!HH", 0x4242, 7),
                                                           bytes(range(56)))


def test_icmp_elsewhere_is_dropped(net):
    n, out = net
    n.from_guest(icmp_echo(ip("127.0.0.1")))
    assert out == [] and n.counters == {"icmp_unsupported": 1}


# -------------------------------------------------------------------- DHCP

def _dhcp_reply(frame: bytes):
    eth, ipv4, udp = parse_udp_frame(frame)
    assert (ipv4.src, udp.sport, udp.dport, eth.src) == (GATEWAY_IP, 67, 68, GATEWAY_MAC)
    msg = dhcp.parse_dhcp(udp.payload)
    assert msg.op == dhcp.BOOTREPLY and msg.chaddr == GUEST_MAC
    return eth, ipv4, msg, udp.payload


def test_dhcp_exchange(net):
    n, out = net
    n.from_guest(dhcp_frame(dhcp_message(dhcp.DHCPDISCOVER, 0x1234)))
    eth, ipv4, offer, raw = _dhcp_reply(out.pop())
    assert offer.message_type == dhcp.DHCPOFFER and offer.xid == 0x1234
    assert raw[16:20] == GUEST_IP                          # yiaddr
    assert (eth.dst, ipv4.dst) == (GUEST_MAC, GUEST_IP)    # unicast: broadcast flag clear (RFC 2131 4.1)
    assert offer.options[dhcp.OPT_SERVER_ID] == GATEWAY_IP

    n.from_guest(dhcp_frame(dhcp_message(dhcp.DHCPREQUEST, 0x1234, requested=GUEST_IP, server_id=GATEWAY_IP)))
    _eth, _ipv4, ack, raw = _dhcp_reply(out.pop())
    assert ack.message_type == dhcp.DHCPACK and ack.xid == 0x1234
    assert raw[16:20] == GUEST_IP
    assert ack.options[dhcp.OPT_SUBNET_MASK] == ip("255.255.255.0")
    assert ack.options[dhcp.OPT_ROUTER] == GATEWAY_IP
    assert ack.options[dhcp.OPT_DNS] == DNS_IP
    assert struct.unpack("!I", ack.options[dhcp.OPT_LEASE_TIME])[0] > 0
    assert len(raw) >= dhcp.BOOTP_MIN_REPLY

    # Renewal: unicast from the leased address to the server (RFC 2131 4.4.5).
    renew = udp_frame(GATEWAY_IP, 67, dhcp_message(dhcp.DHCPREQUEST, 0x5678, ciaddr=GUEST_IP), sport=68)
    n.from_guest(renew)
    eth, ipv4, ack, _raw = _dhcp_reply(out.pop())
    assert ack.message_type == dhcp.DHCPACK and (eth.dst, ipv4.dst) == (GUEST_MAC, GUEST_IP)
    assert not n.counters


def test_dhcp_broadcast_flag_nak_and_other_server(net):
    n, out = net
    n.from_guest(dhcp_frame(dhcp_message(dhcp.DHCPDISCOVER, flags=dhcp.FLAG_BROADCAST)))
    eth, ipv4, offer, _ = _dhcp_reply(out.pop())
    assert (eth.dst, ipv4.dst) == (ETH_BROADCAST, b"\xff\xff\xff\xff")

    n.from_guest(dhcp_frame(dhcp_message(dhcp.DHCPREQUEST, requested=ip("10.0.2.99"))))
    eth, ipv4, nak, raw = _dhcp_reply(out.pop())
    assert nak.message_type == dhcp.DHCPNAK and raw[16:20] == b"\0\0\0\0" and eth.dst == ETH_BROADCAST

    n.from_guest(dhcp_frame(dhcp_message(dhcp.DHCPREQUEST, requested=GUEST_IP, server_id=ip("10.0.2.77"))))
    n.from_guest(dhcp_frame(dhcp_message(dhcp.DHCPRELEASE)))
    assert out == [] and n.counters == {"dhcp_ignored": 2}


def test_dhcp_malformed_is_counted(net):
    n, out = net
    n.from_guest(dhcp_frame(dhcp_message(dhcp.DHCPDISCOVER)[:-1]))     # no End option
    assert out == [] and n.counters == {"malformed": 1}


# --------------------------------------------------------------------- DNS

def _dns_answer(frame: bytes) -> tuple[int, list[bytes]]:
    eth, ipv4, udp = parse_udp_frame(frame)
    assert (eth.dst, eth.src, ipv4.src, ipv4.dst, udp.sport, udp.dport) == (
        GUEST_MAC, stack.virtual_mac(DNS_IP), DNS_IP, GUEST_IP, 53, 33333)
    resp = udp.payload
    ident, flags, qd, an = struct.unpack_from("!HHHH", resp)
    assert ident == 0xBEEF and flags & dns.FLAG_QR and qd == 1
    q = dns.parse_query(resp[:2] + b"\x01\x00" + resp[4:6] + bytes(6) + resp[12:])
    off = 12 + len(q.question)
    answers = [resp[off + 16 * i + 12:off + 16 * i + 16] for i in range(an)]
    return flags & 0xF, answers


def test_dns_localhost_through_host_resolver(net):
    n, out = net
    n.from_guest(udp_frame(DNS_IP, 53, dns_query("localhost"), sport=33333, dst_mac=stack.virtual_mac(DNS_IP)))
    poll_until(n, out)
    rcode, answers = _dns_answer(out[0])
    assert rcode == dns.RCODE_NOERROR and ip("127.0.0.1") in answers
    assert not n.counters


def test_dns_nxdomain():
    # The host resolver is not asked: a lookup of a missing name could leave the machine.
    def resolver(name):
        assert name == "no-such-name.invalid"
        return []
    n, out = make_net(dns_resolver=resolver)
    try:
        n.from_guest(udp_frame(DNS_IP, 53, dns_query("no-such-name.invalid"), sport=33333))
        poll_until(n, out)
        assert _dns_answer(out[0]) == (dns.RCODE_NXDOMAIN, [])
    finally:
        n.close()


def test_host_resolve_maps_missing_names_to_empty(monkeypatch):
    def fake_getaddrinfo(*args, **kw):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert stack.host_resolve("missing") == []


def test_dns_resolver_failure_is_servfail_and_other_types_empty():
    def resolver(name):
        if name == "broken":
            raise OSError("resolver down")
        return ["10.9.8.7"]
    n, out = make_net(dns_resolver=resolver)
    try:
        n.from_guest(udp_frame(DNS_IP, 53, dns_query("broken"), sport=33333))
        poll_until(n, out)
        assert _dns_answer(out.pop()) == (dns.RCODE_SERVFAIL, [])
        n.from_guest(udp_frame(DNS_IP, 53, dns_query("fine", qtype=28), sport=33333))   # AAAA
        poll_until(n, out)
        assert _dns_answer(out.pop()) == (dns.RCODE_NOERROR, [])
        n.from_guest(udp_frame(DNS_IP, 53, dns_query("fine"), sport=33333))
        poll_until(n, out)
        assert _dns_answer(out.pop()) == (dns.RCODE_NOERROR, [ip("10.9.8.7")])
        n.from_guest(udp_frame(DNS_IP, 53, dns_query("bad name"), sport=33333))          # answered at once
        assert _dns_answer(out.pop()) == (dns.RCODE_NXDOMAIN, [])
    finally:
        n.close()


def test_dns_pending_lookups_are_capped():
    release = threading.Event()
    n, out = make_net(dns_resolver=lambda name: release.wait(10) and ["10.1.1.1"])
    try:
        for i in range(stack.MAX_DNS_PENDING + 5):
            n.from_guest(udp_frame(DNS_IP, 53, dns_query(f"h{i}"), sport=33333))
        assert n.counters == {"dns_busy": 5}
        release.set()
        poll_until(n, out, stack.MAX_DNS_PENDING)
        assert len(out) == stack.MAX_DNS_PENDING
    finally:
        release.set()
        n.close()


# --------------------------------------------------------------- UDP relay

def test_udp_relay_to_host_loopback(net, echo_server):
    n, out = net
    n.from_guest(udp_frame(GATEWAY_IP, echo_server, b"hello host", sport=40001))
    poll_until(n, out)
    eth, ipv4, udp = parse_udp_frame(out[0])
    assert (eth.dst, eth.src) == (GUEST_MAC, GATEWAY_MAC)
    assert (ipv4.src, ipv4.dst, udp.sport, udp.dport) == (GATEWAY_IP, GUEST_IP, echo_server, 40001)
    assert udp.payload == b"echo:hello host"
    n.from_guest(udp_frame(GATEWAY_IP, echo_server, b"again", sport=40001))     # same flow
    poll_until(n, out, 2)
    assert parse_udp_frame(out[1])[2].payload == b"echo:again"
    assert n.udp_flow_count == 1 and not n.counters


def test_udp_flow_cap_and_idle_reaping(echo_server):
    now = [1000.0]
    n, out = make_net(max_udp_flows=3, udp_idle_timeout=30.0, clock=lambda: now[0])
    try:
        for sport in range(50000, 50005):
            n.from_guest(udp_frame(GATEWAY_IP, echo_server, b"x", sport=sport))
        assert n.udp_flow_count == 3 and n.counters == {"udp_flow_limit": 2}
        poll_until(n, out, 3)
        now[0] += 31.0          # all three idle past the timeout
        n.poll()
        assert n.udp_flow_count == 0
        n.from_guest(udp_frame(GATEWAY_IP, echo_server, b"y", sport=50009))
        assert n.udp_flow_count == 1 and n.counters == {"udp_flow_limit": 2}
    finally:
        n.close()


def test_udp_flow_at_cap_reaps_idle_before_refusing(echo_server):
    now = [0.0]
    n, _out = make_net(max_udp_flows=1, udp_idle_timeout=10.0, clock=lambda: now[0])
    try:
        n.from_guest(udp_frame(GATEWAY_IP, echo_server, b"x", sport=1))
        now[0] = 0.5            # before the poll-time reaper runs
        n.from_guest(udp_frame(GATEWAY_IP, echo_server, b"x", sport=2))
        assert n.counters == {"udp_flow_limit": 1}
        now[0] = 10.5
        n.from_guest(udp_frame(GATEWAY_IP, echo_server, b"x", sport=3))
        assert n.udp_flow_count == 1 and n.counters == {"udp_flow_limit": 1}
    finally:
        n.close()


@pytest.mark.parametrize("dst", ["10.0.2.7", "127.0.0.1", "169.254.169.254", "0.0.0.0", "240.0.0.1"])
def test_udp_relay_denied_destinations(net, dst):
    n, out = net
    n.from_guest(udp_frame(ip(dst), 9999, b"x"))
    assert out == [] and n.counters == {"denied_destination": 1} and n.udp_flow_count == 0


def test_udp_relay_policy_hook():
    asked = []
    n, out = make_net(allow_relay=lambda host, port: asked.append((host, port)) or False)
    try:
        n.from_guest(udp_frame(GATEWAY_IP, 7777, b"x"))
        assert asked == [("127.0.0.1", 7777)] and n.counters == {"denied_destination": 1}
    finally:
        n.close()


def test_udp_refused_port_is_counted(net):
    n, out = net
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                   # nothing listens there now
    n.from_guest(udp_frame(GATEWAY_IP, port, b"anyone?"))
    deadline = time.monotonic() + 2
    while not n.counters and time.monotonic() < deadline:
        n.poll(0.05)
    assert out == [] and n.counters == {"udp_refused": 1}


# ----------------------------------------------------- policy and spoofing

@pytest.mark.parametrize("frame", [
    udp_frame(GATEWAY_IP, 9999, b"x", src=ip("10.0.2.16")),
    udp_frame(GATEWAY_IP, 9999, b"x", src=ip("0.0.0.0")),          # 0.0.0.0 is for DHCP only
    udp_frame(DNS_IP, 53, dns_query("localhost"), src=ip("10.0.2.2")),
    icmp_echo(GATEWAY_IP, src=ip("10.0.3.1")),
    arp_request(GATEWAY_IP, spa=ip("10.0.2.2")),
    arp_request(GATEWAY_IP, sha=bytes.fromhex("525400000001")),     # ARP sender not the frame's source
])
def test_spoofed_source_dropped(net, frame):
    n, out = net
    n.from_guest(frame)
    assert out == [] and n.counters == {"spoofed_source": 1} and n.udp_flow_count == 0


def test_restrict_blocks_relay_but_not_virtual_hosts(echo_server):
    n, out = make_net(restrict=True, dns_resolver=lambda name: ["10.1.2.3"])
    try:
        n.from_guest(udp_frame(GATEWAY_IP, echo_server, b"blocked"))
        n.from_guest(udp_frame(ip("127.0.0.1"), echo_server, b"blocked"))
        assert n.counters == {"restricted": 2} and n.udp_flow_count == 0
        n.poll(0.2)
        assert out == []

        n.from_guest(arp_request(GATEWAY_IP))
        n.from_guest(icmp_echo(GATEWAY_IP))
        n.from_guest(dhcp_frame(dhcp_message(dhcp.DHCPDISCOVER)))
        n.from_guest(udp_frame(DNS_IP, 53, dns_query("anything"), sport=33333))
        poll_until(n, out, 4)
        assert [parse_ethernet(f).ethertype for f in out] == [ETH_P_ARP, ETH_P_IP, ETH_P_IP, ETH_P_IP]
        assert _dns_answer(out[3]) == (dns.RCODE_NOERROR, [ip("10.1.2.3")])
        assert n.counters == {"restricted": 2}
    finally:
        n.close()


# ------------------------------------------------------------- other drops

def _ip_frame(proto: int, payload: bytes, **kw) -> bytes:
    return build_ethernet(GATEWAY_MAC, GUEST_MAC, ETH_P_IP, build_ipv4(GUEST_IP, GATEWAY_IP, proto, payload, **kw))


@pytest.mark.parametrize("frame,reason", [
    (_ip_frame(IPPROTO_TCP, bytes(20)), "malformed"),          # TCP data offset 0
    (_ip_frame(47, bytes(8)), "ip_protocol"),
    (build_ethernet(GATEWAY_MAC, GUEST_MAC, 0x86DD, bytes(40)), "ethertype"),
    (build_ethernet(bytes.fromhex("333300000001"), GUEST_MAC, 0x86DD, bytes(40)), "eth_not_for_us"),
    (build_ethernet(GATEWAY_MAC, ETH_BROADCAST, ETH_P_IP, bytes(40)), "eth_bad_source"),
    (udp_frame(b"\xff\xff\xff\xff", 5353, b"x"), "broadcast"),
    (udp_frame(ip("224.0.0.251"), 5353, b"x"), "multicast"),
    (udp_frame(DNS_IP, 54, b"x"), "no_such_port"),
    (udp_frame(GATEWAY_IP, 0, b"x"), "no_such_port"),
    (udp_frame(DNS_IP, 53, b"\0" * 5), "malformed"),
    (b"\0" * 10, "malformed"),
])
def test_drops_are_counted_by_reason(net, frame, reason):
    n, out = net
    n.from_guest(frame)
    assert out == [] and n.counters == {reason: 1}


def guest_fragments(proto: int, payload: bytes, dst: bytes = GATEWAY_IP) -> list[bytes]:
    """An IPv4 payload from the guest cut to the MTU as its kernel would: DF clear, 8-byte blocks."""
    return [build_ethernet(GATEWAY_MAC, GUEST_MAC, ETH_P_IP, p)
            for p in build_ipv4_fragments(GUEST_IP, dst, proto, payload, ident=0x4321)]


def test_fragmented_udp_is_reassembled_and_relayed(net, echo_server):
    n, out = net
    data = bytes(range(256)) * 16                             # 4 KiB: three fragments
    frames = guest_fragments(IPPROTO_UDP, build_udp(GUEST_IP, GATEWAY_IP, 40000, echo_server, data))
    assert len(frames) == 3
    for f in reversed(frames):
        n.from_guest(f)
    assert not n.counters
    poll_until(n, out, 3)
    assert not n.counters                                      # "echo:" + 4 KiB comes back in 3 fragments
    assert len(out) == 3 and all(len(f) <= 1514 for f in out)


def test_fragmented_ping_gets_a_fragmented_reply(net):
    n, out = net
    frames = guest_fragments(IPPROTO_ICMP, build_icmp(ICMP_ECHO_REQUEST, 0, b"\0\1\0\1", bytes(3000)))
    for f in frames:
        n.from_guest(f)
    assert not n.counters and len(out) == 3
    r = Reassembler()
    whole = [w for f in out if (w := r.add(parse_ipv4(parse_ethernet(f).payload)))]
    assert len(whole) == 1
    assert parse_icmp(parse_ipv4(whole[0]).payload).payload == bytes(3000)


def test_fragment_overlap_dropped_and_counted(net):
    n, out = net
    frames = guest_fragments(IPPROTO_UDP, build_udp(GUEST_IP, GATEWAY_IP, 40000, 9999, b"x" * 3000))
    n.from_guest(frames[0])
    n.from_guest(frames[0][:-8] + b"y" * 8)                    # same offset, other bytes (checksum is the IP header's)
    assert out == [] and n.counters == {"frag_overlap": 1}


def test_closed_net_drops(net):
    n, out = net
    n.close()
    n.from_guest(arp_request(GATEWAY_IP))
    assert n.poll() == 0 and out == [] and n.counters == {"closed": 1}
