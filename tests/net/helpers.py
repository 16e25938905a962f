"""The guest's side of the wire for the user-mode network tests: frames a
guest would send, and a UserNet whose output is collected in a list."""

from __future__ import annotations

import struct

from vmkit.net import dhcp
from vmkit.net.packets import (
    ARP_OP_REQUEST, ETH_BROADCAST, ETH_P_ARP, ETH_P_IP, ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_UDP,
    build_arp, build_ethernet, build_icmp, build_ipv4, build_ipv4_udp_frame, parse_ethernet, parse_ipv4,
    parse_udp,
)
from vmkit.net.stack import GATEWAY_MAC, GUEST_IP, UserNet

GUEST_MAC = bytes.fromhex("525400123456")


def ip(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def loopback_only(host: str, port: int) -> bool:
    """allow_relay policy for tests: nothing leaves 127.0.0.0/8."""
    return host.startswith("127.")


def make_net(**kw) -> tuple[UserNet, list[bytes]]:
    out: list[bytes] = []
    kw.setdefault("allow_relay", loopback_only)
    return UserNet(out.append, **kw), out


def arp_request(target: bytes, *, spa: bytes = GUEST_IP, sha: bytes = GUEST_MAC) -> bytes:
    return build_ethernet(ETH_BROADCAST, GUEST_MAC, ETH_P_ARP,
                          build_arp(ARP_OP_REQUEST, sha, spa, b"\0" * 6, target))


def icmp_echo(dst: bytes, ident: int = 0x1234, seq: int = 1, data: bytes = b"ping data",
              *, src: bytes = GUEST_IP) -> bytes:
    icmp = build_icmp(ICMP_ECHO_REQUEST, 0, struct.pack("!HH", ident, seq), data)
    return build_ethernet(GATEWAY_MAC, GUEST_MAC, ETH_P_IP, build_ipv4(src, dst, IPPROTO_ICMP, icmp))


def udp_frame(dst: bytes, dport: int, payload: bytes, *, sport: int = 40000, src: bytes = GUEST_IP,
              dst_mac: bytes = GATEWAY_MAC) -> bytes:
    return build_ipv4_udp_frame(dst_mac, GUEST_MAC, src, dst, sport, dport, payload)


def dhcp_message(mtype: int, xid: int = 0x11223344, *, requested: bytes | None = None,
                 server_id: bytes | None = None, flags: int = 0, ciaddr: bytes = b"\0\0\0\0") -> bytes:
    """A BOOTREQUEST as a client sends it (RFC 2131 2, options per RFC 2132)."""
    body = struct.pack("!BBBBIHH4s4s4s4s", dhcp.BOOTREQUEST, 1, 6, 0, xid, 0, flags, ciaddr,
                       b"\0" * 4, b"\0" * 4, b"\0" * 4)
    body += GUEST_MAC + bytes(10) + bytes(192) + dhcp.MAGIC_COOKIE
    body += bytes([dhcp.OPT_MESSAGE_TYPE, 1, mtype])
    if requested is not None:
        body += bytes([dhcp.OPT_REQUESTED_IP, 4]) + requested
    if server_id is not None:
        body += bytes([dhcp.OPT_SERVER_ID, 4]) + server_id
    body += bytes([55, 3, 1, 3, 6, dhcp.OPT_END])      # parameter request list, End
    return body


def dhcp_frame(payload: bytes, *, src: bytes = b"\0\0\0\0") -> bytes:
    return build_ipv4_udp_frame(ETH_BROADCAST, GUEST_MAC, src, b"\xff\xff\xff\xff", dhcp.CLIENT_PORT,
                                dhcp.SERVER_PORT, payload)


def dns_query(name: str, qtype: int = 1, ident: int = 0xBEEF) -> bytes:
    q = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", qtype, 1)


def parse_udp_frame(frame: bytes):
    """(ethernet, ipv4, udp) of a frame the stack sent; the parsers check every checksum."""
    eth = parse_ethernet(frame)
    assert eth.ethertype == ETH_P_IP
    ipv4 = parse_ipv4(eth.payload)
    assert ipv4.proto == IPPROTO_UDP
    return eth, ipv4, parse_udp(ipv4)
