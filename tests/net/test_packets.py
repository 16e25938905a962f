"""Parsers and builders of vmkit/net/packets.py, dhcp.py and dns.py: round
trips, and every malformed case raising MalformedFrame (and nothing else)."""

from __future__ import annotations

import struct

import pytest

from vmkit.net import dhcp, dns
from vmkit.net.packets import (
    ARP_OP_REPLY, ARP_OP_REQUEST, ETH_P_IP, ICMP_ECHO_REQUEST, IPPROTO_UDP,
    MalformedFrame, build_arp, build_ethernet, build_icmp, build_ipv4, build_udp, internet_checksum,
    parse_arp, parse_ethernet, parse_icmp, parse_ipv4, parse_udp,
)
from tests.net.helpers import GUEST_MAC, dhcp_message, dns_query, ip

SRC, DST = ip("10.0.2.15"), ip("10.0.2.2")


def test_internet_checksum_rfc1071_example():
    # RFC 1071 3, numerical example: the sum of these words is ddf2, checksum its complement.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    assert internet_checksum(b"\x01") == ~0x0100 & 0xFFFF     # odd length pads with a zero byte


def test_ethernet_round_trip():
    frame = build_ethernet(b"\xff" * 6, GUEST_MAC, ETH_P_IP, b"payload")
    eth = parse_ethernet(frame)
    assert (eth.dst, eth.src, eth.ethertype, eth.payload) == (b"\xff" * 6, GUEST_MAC, ETH_P_IP, b"payload")


@pytest.mark.parametrize("frame", [
    b"",
    b"\0" * 13,                                                     # shorter than the header
    build_ethernet(b"\xff" * 6, GUEST_MAC, ETH_P_IP, bytes(1501)),  # over the MTU
    build_ethernet(b"\xff" * 6, GUEST_MAC, 46, bytes(46)),          # 802.3 length, not a type
])
def test_ethernet_malformed(frame):
    with pytest.raises(MalformedFrame):
        parse_ethernet(frame)


def test_arp_round_trip_ignores_padding():
    raw = build_arp(ARP_OP_REQUEST, GUEST_MAC, SRC, b"\0" * 6, DST)
    assert len(raw) == 28
    arp = parse_arp(raw + bytes(18))
    assert (arp.op, arp.sha, arp.spa, arp.tha, arp.tpa) == (ARP_OP_REQUEST, GUEST_MAC, SRC, b"\0" * 6, DST)


def _arp_with(offset: int, fmt: str, value: int) -> bytes:
    raw = bytearray(build_arp(ARP_OP_REPLY, GUEST_MAC, SRC, GUEST_MAC, DST))
    struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


@pytest.mark.parametrize("raw", [
    build_arp(ARP_OP_REQUEST, GUEST_MAC, SRC, b"\0" * 6, DST)[:27],   # truncated
    _arp_with(0, "!H", 6),          # hardware type not Ethernet
    _arp_with(2, "!H", 0x86DD),     # protocol not IPv4
    _arp_with(4, "!B", 8),          # hardware length
    _arp_with(5, "!B", 16),         # protocol length
    _arp_with(6, "!H", 3),          # RARP opcode
])
def test_arp_malformed(raw):
    with pytest.raises(MalformedFrame):
        parse_arp(raw)


def test_ipv4_round_trip_trims_padding_and_checks_checksum():
    raw = build_ipv4(SRC, DST, IPPROTO_UDP, b"abcdef", ident=7)
    assert internet_checksum(raw[:20]) == 0
    pkt = parse_ipv4(raw + bytes(20))          # Ethernet pads short frames to 60 bytes
    assert (pkt.src, pkt.dst, pkt.proto, pkt.ident, pkt.ttl, pkt.payload) == (SRC, DST, IPPROTO_UDP, 7, 64, b"abcdef")
    assert not pkt.is_fragment


def _with_header(raw: bytes, offset: int, fmt: str, value: int, *, fix_checksum: bool = True) -> bytes:
    b = bytearray(raw)
    struct.pack_into(fmt, b, offset, value)
    if fix_checksum:
        hlen = (b[0] & 0xF) * 4
        struct.pack_into("!H", b, 10, 0)
        struct.pack_into("!H", b, 10, internet_checksum(bytes(b[:max(20, min(hlen, len(b)))])))
    return bytes(b)


def test_ipv4_options_are_skipped():
    plain = build_ipv4(SRC, DST, IPPROTO_UDP, b"xyz")
    with_opts = bytearray(plain[:20] + b"\x01\x01\x01\x00" + plain[20:])   # NOP NOP NOP EOL
    with_opts[0] = 0x46
    struct.pack_into("!H", with_opts, 2, len(with_opts))
    pkt = parse_ipv4(_with_header(bytes(with_opts), 0, "!B", 0x46))
    assert pkt.payload == b"xyz"


@pytest.mark.parametrize("flags_frag", [0x2000, 0x0001, 0x2010])
def test_ipv4_fragments_are_detected(flags_frag):
    raw = _with_header(build_ipv4(SRC, DST, IPPROTO_UDP, b"x" * 16), 6, "!H", flags_frag)
    assert parse_ipv4(raw).is_fragment


def test_ipv4_fragment_fields_and_options_round_trip():
    options = b"\x94\x04\x00\x00\x01\x01\x01\x00"          # Router Alert, NOP NOP NOP EOL
    raw = build_ipv4(SRC, DST, IPPROTO_UDP, b"y" * 16, ident=3, flags_frag=0x2000 | 185, options=options)
    assert raw[0] == 0x47 and internet_checksum(raw[:28]) == 0
    pkt = parse_ipv4(raw)
    assert (pkt.options, pkt.payload, pkt.more_fragments, pkt.frag_offset) == (options, b"y" * 16, True, 1480)
    assert parse_ipv4(build_ipv4(SRC, DST, IPPROTO_UDP, b"z")).options == b""


@pytest.mark.parametrize("options", [b"\x01", b"\x01" * 44])
def test_ipv4_build_refuses_bad_options(options):
    with pytest.raises(ValueError):
        build_ipv4(SRC, DST, IPPROTO_UDP, b"", options=options)


_IP = build_ipv4(SRC, DST, IPPROTO_UDP, b"x" * 16)


@pytest.mark.parametrize("raw", [
    _IP[:19],                                           # truncated header
    _with_header(_IP, 0, "!B", 0x65),                   # version 6
    _with_header(_IP, 0, "!B", 0x44),                   # IHL 4 (16 bytes)
    _with_header(_IP, 0, "!B", 0x4F),                   # IHL 15: header past the packet
    _with_header(_IP, 2, "!H", 19),                     # total length below header length
    _with_header(_IP, 2, "!H", len(_IP) + 1),           # total length past the bytes received
    _with_header(_IP, 6, "!H", 0x8000),                 # reserved flag
    _with_header(_IP, 8, "!B", 1, fix_checksum=False),  # header checksum wrong
])
def test_ipv4_malformed(raw):
    with pytest.raises(MalformedFrame):
        parse_ipv4(raw)


def test_icmp_round_trip():
    raw = build_icmp(ICMP_ECHO_REQUEST, 0, b"\x12\x34\x00\x01", b"data!")
    assert internet_checksum(raw) == 0
    msg = parse_icmp(raw)
    assert (msg.type, msg.code, msg.rest, msg.payload) == (ICMP_ECHO_REQUEST, 0, b"\x12\x34\x00\x01", b"data!")


@pytest.mark.parametrize("raw", [
    b"\x08\0\0\0\0\0\0",                                          # 7 bytes
    build_icmp(ICMP_ECHO_REQUEST, 0, b"\0\0\0\1", b"data")[:-1],   # checksum no longer matches
    bytes([8, 0, 0, 0]) + b"\0\0\0\1",                             # checksum field zero, not computed
])
def test_icmp_malformed(raw):
    with pytest.raises(MalformedFrame):
        parse_icmp(raw)


def _udp_ip(udp: bytes):
    return parse_ipv4(build_ipv4(SRC, DST, IPPROTO_UDP, udp))


def test_udp_round_trip_and_checksum():
    raw = build_udp(SRC, DST, 1234, 53, b"hello")
    dgram = parse_udp(_udp_ip(raw))
    assert (dgram.sport, dgram.dport, dgram.payload) == (1234, 53, b"hello")
    assert raw[6:8] != b"\0\0"
    no_checksum = raw[:6] + b"\0\0" + raw[8:]                # RFC 768: zero means none computed
    assert parse_udp(_udp_ip(no_checksum)).payload == b"hello"


def test_udp_checksum_zero_sent_as_ones():
    # Find a payload whose checksum computes to 0: it must go out as 0xffff (RFC 768).
    for n in range(0x10000):
        raw = build_udp(SRC, DST, 1, 2, struct.pack("!H", n))
        if raw[6:8] == b"\xff\xff":
            assert parse_udp(_udp_ip(raw)).payload == struct.pack("!H", n)
            return
    pytest.fail("no payload with a zero checksum")


_UDP = build_udp(SRC, DST, 1234, 53, b"hello")


@pytest.mark.parametrize("raw", [
    _UDP[:7],                                           # truncated header
    _UDP[:4] + struct.pack("!H", 7) + _UDP[6:],          # length below the header
    _UDP[:4] + struct.pack("!H", len(_UDP) + 1) + _UDP[6:],   # length past the payload
    _UDP[:4] + struct.pack("!H", len(_UDP) - 1) + _UDP[6:],   # length short of the payload
    _UDP[:-1] + bytes([_UDP[-1] ^ 1]),                  # checksum mismatch
])
def test_udp_malformed(raw):
    with pytest.raises(MalformedFrame):
        parse_udp(_udp_ip(raw))


# -------------------------------------------------------------------- DHCP

def test_dhcp_round_trip():
    msg = dhcp.parse_dhcp(dhcp_message(dhcp.DHCPREQUEST, 0xABCD, requested=SRC, server_id=DST))
    assert (msg.op, msg.xid, msg.chaddr, msg.message_type) == (dhcp.BOOTREQUEST, 0xABCD, GUEST_MAC, dhcp.DHCPREQUEST)
    assert msg.options[dhcp.OPT_REQUESTED_IP] == SRC and msg.options[dhcp.OPT_SERVER_ID] == DST


_DHCP = dhcp_message(dhcp.DHCPDISCOVER)


@pytest.mark.parametrize("raw", [
    _DHCP[:239],                                             # no room for the cookie
    _DHCP[:1] + b"\x06" + _DHCP[2:],                         # hardware type
    _DHCP[:236] + b"\0\0\0\0" + _DHCP[240:],                 # bad magic cookie
    _DHCP[:-1],                                              # options without End
    _DHCP[:240] + bytes([dhcp.OPT_MESSAGE_TYPE, 5, 1]),      # option runs past the end
    _DHCP[:240] + bytes([dhcp.OPT_MESSAGE_TYPE]),            # option without its length
])
def test_dhcp_malformed(raw):
    with pytest.raises(MalformedFrame):
        dhcp.parse_dhcp(raw)


# --------------------------------------------------------------------- DNS

def test_dns_query_and_response():
    q = dns.parse_query(dns_query("example-host.test"))
    assert q.hostname == "example-host.test" and q.qtype == dns.TYPE_A and q.ident == 0xBEEF
    resp = dns.build_response(q, dns.RCODE_NOERROR, [bytes([10, 0, 2, 99])])
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", resp)
    assert (ident, qd, an, ns, ar) == (0xBEEF, 1, 1, 0, 0)
    assert flags & dns.FLAG_QR and flags & dns.FLAG_RD and flags & 0xF == dns.RCODE_NOERROR
    assert resp.endswith(bytes([10, 0, 2, 99])) and len(resp) == len(dns_query("example-host.test")) + 16


def test_dns_answers_fit_in_512_bytes():
    q = dns.parse_query(dns_query("a" * 63 + "." + "b" * 63))
    resp = dns.build_response(q, dns.RCODE_NOERROR, [bytes([10, 0, 0, i]) for i in range(200)])
    assert len(resp) <= dns.MAX_UDP_MESSAGE
    assert struct.unpack_from("!H", resp, 6)[0] == (len(resp) - 12 - len(q.question)) // 16


def test_dns_odd_names_are_not_host_names():
    assert dns.parse_query(dns_query("a b.test")).hostname is None
    raw = dns_query("x.test").replace(b"\x01x", b"\x01\0")
    assert dns.parse_query(raw).hostname is None


_Q = dns_query("host.test")


@pytest.mark.parametrize("raw", [
    _Q[:11],                                                 # header truncated
    _Q[:2] + b"\x81\x00" + _Q[4:],                           # a response (QR set)
    _Q[:4] + b"\x00\x02" + _Q[6:],                           # two questions
    _Q[:4] + b"\x00\x00" + _Q[6:],                           # no question
    _Q[:14],                                                 # label runs past the end
    _Q[:-4],                                                 # no type and class
    _Q[:-3],                                                 # partial type and class
    _Q[:12] + b"\xc0\x0c" + _Q[-4:],                         # compression pointer
    _Q[:12] + (b"\x3f" + b"a" * 63) * 5 + b"\0\0\1\0\1",     # name over 255 bytes
    _Q + bytes(600),                                         # over 512 bytes
])
def test_dns_malformed(raw):
    with pytest.raises(MalformedFrame):
        dns.parse_query(raw)
