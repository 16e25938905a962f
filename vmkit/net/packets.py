"""Parse and build the frames the user-mode network sees: Ethernet II, ARP
(RFC 826), IPv4 (RFC 791), ICMP (RFC 792), UDP (RFC 768) and TCP (RFC 9293).

Parsers are strict: every length field is checked against the bytes that
are actually there, and anything truncated, oversized or inconsistent raises
`MalformedFrame` -- the only exception this module raises on guest input, so
the stack can count and drop it. Parsers return views into the frame's bytes
(slices), never copies of large payloads they do not need.

Addresses are kept as raw bytes (6 for MAC, 4 for IPv4): they are compared
and copied far more often than printed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ETH_HLEN = 14
ETH_MTU = 1500                  # IPv4 payload bytes per frame; no jumbo frames
ETH_FRAME_MAX = ETH_HLEN + ETH_MTU
ETH_BROADCAST = b"\xff" * 6

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806

ARP_HRD_ETHER = 1               # RFC 826 "ar$hrd"; hardware type for Ethernet
ARP_OP_REQUEST = 1
ARP_OP_REPLY = 2
ARP_LEN = 28                    # Ethernet/IPv4 ARP packet

IPV4_HLEN_MIN = 20
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IP_FLAG_RESERVED = 0x8000       # RFC 791 3.1 Flags, bit 0: "reserved, must be zero"
IP_FLAG_DF = 0x4000
IP_FLAG_MF = 0x2000
IP_FRAG_OFFSET_MASK = 0x1FFF

ICMP_HLEN = 8
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8

UDP_HLEN = 8

TCP_HLEN_MIN = 20
TCP_HLEN_MAX = 60               # Data Offset is 4 bits of 32-bit words
TCP_FIN = 0x01                  # RFC 9293 3.1 "Control bits"
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_OPT_EOL = 0                 # RFC 9293 3.2 "Specific Option Definitions"
TCP_OPT_NOP = 1
TCP_OPT_MSS = 2


class MalformedFrame(ValueError):
    """A frame from the guest is truncated, oversized or internally inconsistent."""


def internet_checksum(data: bytes | memoryview, initial: int = 0) -> int:
    """The 16-bit one's complement of the one's complement sum (RFC 791 3.1,
    "Header Checksum"; the same sum serves ICMP and UDP). A buffer whose
    checksum field is already filled in sums to 0."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ---------------------------------------------------------------- Ethernet

@dataclass(frozen=True)
class Ethernet:
    dst: bytes
    src: bytes
    ethertype: int
    payload: bytes


def parse_ethernet(frame: bytes) -> Ethernet:
    if len(frame) < ETH_HLEN:
        raise MalformedFrame(f"Ethernet frame of {len(frame)} bytes is shorter than its header")
    if len(frame) > ETH_FRAME_MAX:
        raise MalformedFrame(f"Ethernet frame of {len(frame)} bytes exceeds {ETH_FRAME_MAX}")
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype < 0x0600:
        # IEEE 802.3 length field instead of an Ethernet II type: no guest
        # protocol we serve uses 802.2 LLC framing.
        raise MalformedFrame(f"802.3 length field {ethertype} instead of an EtherType")
    return Ethernet(bytes(frame[0:6]), bytes(frame[6:12]), ethertype, bytes(frame[ETH_HLEN:]))


def build_ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


# --------------------------------------------------------------------- ARP

@dataclass(frozen=True)
class Arp:
    op: int
    sha: bytes      # sender hardware address
    spa: bytes      # sender protocol address
    tha: bytes      # target hardware address
    tpa: bytes      # target protocol address


def parse_arp(data: bytes) -> Arp:
    """RFC 826 "Packet format", restricted to Ethernet + IPv4. Trailing bytes
    are Ethernet padding to the 60-byte minimum and are ignored."""
    if len(data) < ARP_LEN:
        raise MalformedFrame(f"ARP packet of {len(data)} bytes, need {ARP_LEN}")
    hrd, pro, hln, pln, op = struct.unpack_from("!HHBBH", data, 0)
    if hrd != ARP_HRD_ETHER or pro != ETH_P_IP or hln != 6 or pln != 4:
        raise MalformedFrame(f"ARP for hardware {hrd}/{hln} protocol {pro:#x}/{pln}, not Ethernet/IPv4")
    if op not in (ARP_OP_REQUEST, ARP_OP_REPLY):
        raise MalformedFrame(f"ARP opcode {op}")
    return Arp(op, bytes(data[8:14]), bytes(data[14:18]), bytes(data[18:24]), bytes(data[24:28]))


def build_arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    return struct.pack("!HHBBH", ARP_HRD_ETHER, ETH_P_IP, 6, 4, op) + sha + spa + tha + tpa


# -------------------------------------------------------------------- IPv4

@dataclass(frozen=True)
class IPv4:
    tos: int
    ident: int
    flags_frag: int     # flags (top 3 bits) and fragment offset, as on the wire
    ttl: int
    proto: int
    src: bytes
    dst: bytes
    payload: bytes      # exactly total_length - header_length bytes
    options: bytes = b""    # header bytes past the first 20, raw (a multiple of 4, at most 40)

    @property
    def is_fragment(self) -> bool:
        """More fragments follow, or this is not the first one (RFC 791 3.2, "Fragmentation")."""
        return bool(self.flags_frag & (IP_FLAG_MF | IP_FRAG_OFFSET_MASK))

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags_frag & IP_FLAG_MF)

    @property
    def frag_offset(self) -> int:
        """Where this payload starts in the original datagram, in bytes (the field counts 8-byte blocks)."""
        return (self.flags_frag & IP_FRAG_OFFSET_MASK) * 8


def parse_ipv4(data: bytes) -> IPv4:
    """RFC 791 3.1. Options are validated only for length and kept raw in
    `options`; bytes past Total Length are Ethernet padding and are dropped."""
    if len(data) < IPV4_HLEN_MIN:
        raise MalformedFrame(f"IPv4 packet of {len(data)} bytes is shorter than its header")
    vihl, tos, total, ident, flags_frag, ttl, proto, _csum = struct.unpack_from("!BBHHHBBH", data, 0)
    if vihl >> 4 != 4:
        raise MalformedFrame(f"IP version {vihl >> 4} in an IPv4 EtherType frame")
    hlen = (vihl & 0xF) * 4
    if hlen < IPV4_HLEN_MIN:
        raise MalformedFrame(f"IPv4 header length {hlen} below {IPV4_HLEN_MIN}")
    if total < hlen:
        raise MalformedFrame(f"IPv4 total length {total} shorter than its header length {hlen}")
    if total > len(data):
        raise MalformedFrame(f"IPv4 total length {total} past the {len(data)} bytes received")
    if internet_checksum(memoryview(data)[:hlen]) != 0:
        raise MalformedFrame("IPv4 header checksum mismatch")
    if flags_frag & IP_FLAG_RESERVED:
        raise MalformedFrame("IPv4 reserved flag bit set")
    return IPv4(tos, ident, flags_frag, ttl, proto, bytes(data[12:16]), bytes(data[16:20]),
                bytes(data[hlen:total]), bytes(data[IPV4_HLEN_MIN:hlen]))


def build_ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, *, ident: int = 0,
               ttl: int = 64, tos: int = 0, flags_frag: int = IP_FLAG_DF, options: bytes = b"") -> bytes:
    """By default a header without options, Don't Fragment set: we never send
    more than the MTU. fragments.py and the tests pass other flags and
    fragment offsets, and options (already padded to 4 bytes)."""
    hlen = IPV4_HLEN_MIN + len(options)
    if len(options) % 4 or hlen > 60:
        raise ValueError(f"IPv4 options of {len(options)} bytes: need a multiple of 4, at most 40")
    total = hlen + len(payload)
    if total > 0xFFFF:
        raise ValueError(f"IPv4 packet of {total} bytes is too large")
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | hlen // 4, tos, total, ident & 0xFFFF, flags_frag, ttl, proto, 0,
                      src, dst) + options
    csum = internet_checksum(hdr)
    return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + payload


# -------------------------------------------------------------------- ICMP

@dataclass(frozen=True)
class Icmp:
    type: int
    code: int
    rest: bytes         # the 4 type-specific header bytes (identifier + sequence for echo)
    payload: bytes


def parse_icmp(data: bytes) -> Icmp:
    """RFC 792: an 8-byte header whose checksum covers the whole message."""
    if len(data) < ICMP_HLEN:
        raise MalformedFrame(f"ICMP message of {len(data)} bytes is shorter than its header")
    if internet_checksum(data) != 0:
        raise MalformedFrame("ICMP checksum mismatch")
    return Icmp(data[0], data[1], bytes(data[4:8]), bytes(data[8:]))


def build_icmp(type_: int, code: int, rest: bytes, payload: bytes) -> bytes:
    body = bytes([type_, code, 0, 0]) + rest + payload
    return body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:]


# --------------------------------------------------------------------- UDP

@dataclass(frozen=True)
class Udp:
    sport: int
    dport: int
    payload: bytes


def _pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    # RFC 768 "Fields", Checksum: the pseudo header (source, destination,
    # zero, protocol, UDP length) prefixed to the datagram for the sum.
    # Returned uncomplemented so it can seed internet_checksum.
    return ~internet_checksum(src + dst + struct.pack("!BBH", 0, proto, length)) & 0xFFFF


def parse_udp(ip: IPv4) -> Udp:
    data = ip.payload
    if len(data) < UDP_HLEN:
        raise MalformedFrame(f"UDP datagram of {len(data)} bytes is shorter than its header")
    sport, dport, length, csum = struct.unpack_from("!HHHH", data, 0)
    if length != len(data):
        raise MalformedFrame(f"UDP length {length} disagrees with the {len(data)}-byte IPv4 payload")
    # A zero checksum means the sender computed none (RFC 768, "Fields").
    if csum and internet_checksum(data, _pseudo_header_sum(ip.src, ip.dst, IPPROTO_UDP, length)) != 0:
        raise MalformedFrame("UDP checksum mismatch")
    return Udp(sport, dport, bytes(data[UDP_HLEN:]))


def build_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    length = UDP_HLEN + len(payload)
    body = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = internet_checksum(body, _pseudo_header_sum(src, dst, IPPROTO_UDP, length))
    # A computed 0 is sent as all ones; 0 on the wire means "no checksum" (RFC 768).
    return body[:6] + struct.pack("!H", csum or 0xFFFF) + body[8:]


def build_ipv4_udp_frame(dst_mac: bytes, src_mac: bytes, src: bytes, dst: bytes, sport: int, dport: int,
                         payload: bytes, *, ident: int = 0) -> bytes:
    """Ethernet + IPv4 + UDP in one step, the shape of every UDP frame we send."""
    udp = build_udp(src, dst, sport, dport, payload)
    return build_ethernet(dst_mac, src_mac, ETH_P_IP, build_ipv4(src, dst, IPPROTO_UDP, udp, ident=ident))


# --------------------------------------------------------------------- TCP

@dataclass(frozen=True)
class Tcp:
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int          # the six classic control bits (URG..FIN); CWR/ECE and reserved bits are ignored
    window: int
    urgent: int
    mss: int | None     # the Maximum Segment Size option, when present
    payload: bytes

    @property
    def seg_len(self) -> int:
        """SEG.LEN (RFC 9293 3.3.1): SYN and FIN each occupy one sequence number."""
        return len(self.payload) + (self.flags & TCP_SYN != 0) + (self.flags & TCP_FIN != 0)


def parse_tcp(ip: IPv4) -> Tcp:
    """RFC 9293 3.1 "Header Format". The checksum (pseudo header included) is
    mandatory; options are walked per 3.2 -- EOL ends them, NOP is one byte,
    every other kind carries a length of at least 2 that must fit in the
    header -- and only MSS (exactly 4 bytes) is kept."""
    data = ip.payload
    if len(data) < TCP_HLEN_MIN:
        raise MalformedFrame(f"TCP segment of {len(data)} bytes is shorter than its header")
    sport, dport, seq, ack, off_flags, window, _csum, urgent = struct.unpack_from("!HHIIHHHH", data, 0)
    hlen = (off_flags >> 12) * 4
    if hlen < TCP_HLEN_MIN:
        raise MalformedFrame(f"TCP data offset {hlen} below {TCP_HLEN_MIN}")
    if hlen > len(data):
        raise MalformedFrame(f"TCP data offset {hlen} past the {len(data)}-byte segment")
    if internet_checksum(data, _pseudo_header_sum(ip.src, ip.dst, IPPROTO_TCP, len(data))) != 0:
        raise MalformedFrame("TCP checksum mismatch")
    if sport == 0 or dport == 0:
        raise MalformedFrame("TCP port 0")
    mss = None
    i = TCP_HLEN_MIN
    while i < hlen:
        kind = data[i]
        if kind == TCP_OPT_EOL:
            break
        if kind == TCP_OPT_NOP:
            i += 1
            continue
        if i + 1 >= hlen:
            raise MalformedFrame(f"TCP option {kind} without a length byte")
        olen = data[i + 1]
        if olen < 2 or i + olen > hlen:
            raise MalformedFrame(f"TCP option {kind} of length {olen} does not fit the header")
        if kind == TCP_OPT_MSS:
            if olen != 4:
                raise MalformedFrame(f"TCP MSS option of length {olen}")
            (mss,) = struct.unpack_from("!H", data, i + 2)
        i += olen
    return Tcp(sport, dport, seq, ack, off_flags & 0x3F, window, urgent, mss, bytes(data[hlen:]))


def build_tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
              payload: bytes = b"", *, mss: int | None = None) -> bytes:
    """A TCP segment with its checksum; the only option we ever send is MSS (on a SYN)."""
    opts = struct.pack("!BBH", TCP_OPT_MSS, 4, mss) if mss is not None else b""
    hlen = TCP_HLEN_MIN + len(opts)
    seg = struct.pack("!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      (hlen // 4) << 12 | flags, window, 0, 0) + opts + payload
    csum = internet_checksum(seg, _pseudo_header_sum(src, dst, IPPROTO_TCP, len(seg)))
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def build_ipv4_tcp_frame(dst_mac: bytes, src_mac: bytes, src: bytes, dst: bytes, sport: int, dport: int,
                         seq: int, ack: int, flags: int, window: int, payload: bytes = b"", *,
                         mss: int | None = None, ident: int = 0) -> bytes:
    """Ethernet + IPv4 + TCP in one step, the shape of every TCP frame we send."""
    tcp = build_tcp(src, dst, sport, dport, seq, ack, flags, window, payload, mss=mss)
    return build_ethernet(dst_mac, src_mac, ETH_P_IP, build_ipv4(src, dst, IPPROTO_TCP, tcp, ident=ident))
