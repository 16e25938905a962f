"""The user-mode network's DHCP server: one guest address, fixed options.

RFC 2131 (message format 2, server behaviour 4.3, addressing of replies
4.1) with options from RFC 2132. The server hands out exactly one address,
GUEST_IP, to whoever asks -- a vmkit NIC has one guest behind it -- so there
is no lease table: DISCOVER gets an OFFER, a REQUEST for GUEST_IP gets an ACK,
a REQUEST for anything else a NAK.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vmkit.net.packets import ETH_BROADCAST, MalformedFrame

# RFC 2131 2, Figure 1: op .. file is 236 bytes, then the options' magic cookie.
BOOTP_FIXED_LEN = 236
MAGIC_COOKIE = bytes([99, 130, 83, 99])        # RFC 2131 3 / RFC 2132 2
BOOTREQUEST = 1
BOOTREPLY = 2
FLAG_BROADCAST = 0x8000                        # RFC 2131 2, Figure 2
BOOTP_MIN_REPLY = 300                          # RFC 1542 2.1: some clients drop shorter replies

SERVER_PORT = 67
CLIENT_PORT = 68

# RFC 2132 option codes
OPT_PAD = 0
OPT_SUBNET_MASK = 1             # 3.3
OPT_ROUTER = 3                  # 3.5
OPT_DNS = 6                     # 3.8
OPT_REQUESTED_IP = 50           # 9.1
OPT_LEASE_TIME = 51             # 9.2
OPT_MESSAGE_TYPE = 53           # 9.6
OPT_SERVER_ID = 54              # 9.7
OPT_END = 255

# RFC 2132 9.6 message types
DHCPDISCOVER = 1
DHCPOFFER = 2
DHCPREQUEST = 3
DHCPDECLINE = 4
DHCPACK = 5
DHCPNAK = 6
DHCPRELEASE = 7
DHCPINFORM = 8

LEASE_SECONDS = 86400


@dataclass(frozen=True)
class DhcpMessage:
    op: int
    xid: int
    flags: int
    ciaddr: bytes
    chaddr: bytes               # the 6-byte client MAC
    options: dict[int, bytes]   # last occurrence wins; no option is repeated by sane clients

    @property
    def message_type(self) -> int | None:
        v = self.options.get(OPT_MESSAGE_TYPE)
        return v[0] if v and len(v) == 1 else None


def parse_dhcp(data: bytes) -> DhcpMessage:
    if len(data) < BOOTP_FIXED_LEN + len(MAGIC_COOKIE):
        raise MalformedFrame(f"DHCP message of {len(data)} bytes is shorter than its fixed part")
    op, htype, hlen, _hops, xid, _secs, flags = struct.unpack_from("!BBBBIHH", data, 0)
    if htype != 1 or hlen != 6:
        raise MalformedFrame(f"DHCP hardware type {htype}/length {hlen}, not Ethernet")
    if data[BOOTP_FIXED_LEN:BOOTP_FIXED_LEN + 4] != MAGIC_COOKIE:
        raise MalformedFrame("DHCP options do not start with the magic cookie")
    options: dict[int, bytes] = {}
    i = BOOTP_FIXED_LEN + 4
    while i < len(data):
        code = data[i]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            i += 1
            continue
        if i + 2 > len(data) or i + 2 + data[i + 1] > len(data):
            raise MalformedFrame(f"DHCP option {code} runs past the end of the message")
        options[code] = bytes(data[i + 2:i + 2 + data[i + 1]])
        i += 2 + data[i + 1]
    else:
        raise MalformedFrame("DHCP options have no End option")
    # XXX: option 52 (overload: more options in sname/file) is ignored; no
    # client we know asks a server to read options there.
    return DhcpMessage(op, xid, flags, bytes(data[12:16]), bytes(data[28:34]), options)


@dataclass(frozen=True)
class DhcpReply:
    payload: bytes
    dst_ip: bytes
    dst_mac: bytes


def dhcp_reply(msg: DhcpMessage, *, server_ip: bytes, guest_ip: bytes, netmask: bytes,
               dns_ip: bytes) -> DhcpReply | None:
    """The server's answer to one client message, or None when it gets none."""
    if msg.op != BOOTREQUEST:
        return None
    mtype = msg.message_type
    if mtype == DHCPDISCOVER:
        reply_type = DHCPOFFER
    elif mtype == DHCPREQUEST:
        server_id = msg.options.get(OPT_SERVER_ID)
        if server_id is not None and server_id != server_ip:
            return None         # the client took another server's offer (RFC 2131 4.3.2)
        requested = msg.options.get(OPT_REQUESTED_IP) or msg.ciaddr
        reply_type = DHCPACK if requested == guest_ip else DHCPNAK
    else:
        # DECLINE/RELEASE need no answer with a single fixed address.
        # XXX: INFORM (RFC 2131 4.3.5) is not answered; clients fall back to
        # the options they got with their lease.
        return None

    options = bytearray()

    def put(code: int, value: bytes) -> None:
        options.extend((code, len(value)))
        options.extend(value)

    put(OPT_MESSAGE_TYPE, bytes([reply_type]))
    put(OPT_SERVER_ID, server_ip)
    yiaddr = b"\0\0\0\0"
    if reply_type != DHCPNAK:
        yiaddr = guest_ip
        put(OPT_LEASE_TIME, struct.pack("!I", LEASE_SECONDS))
        put(OPT_SUBNET_MASK, netmask)
        put(OPT_ROUTER, server_ip)
        put(OPT_DNS, dns_ip)
    options.append(OPT_END)

    # RFC 2131 4.3.1, Table 3: ciaddr is echoed in an ACK, zero otherwise.
    ciaddr = msg.ciaddr if reply_type == DHCPACK else b"\0\0\0\0"
    payload = bytearray(struct.pack("!BBBBIHH4s4s4s4s", BOOTREPLY, 1, 6, 0, msg.xid, 0, msg.flags,
                                    ciaddr, yiaddr, server_ip, b"\0\0\0\0"))
    payload += msg.chaddr + bytes(10) + bytes(64 + 128) + MAGIC_COOKIE + options
    payload += bytes(max(0, BOOTP_MIN_REPLY - len(payload)))

    # RFC 2131 4.1, "If the 'giaddr' field is zero ...": a client that has its
    # address gets a unicast to ciaddr; a NAK or a client asking for broadcast
    # gets a broadcast; otherwise unicast to the client's MAC and yiaddr.
    if reply_type == DHCPNAK or (msg.flags & FLAG_BROADCAST and msg.ciaddr == b"\0\0\0\0"):
        return DhcpReply(bytes(payload), b"\xff\xff\xff\xff", ETH_BROADCAST)
    if msg.ciaddr != b"\0\0\0\0":
        return DhcpReply(bytes(payload), msg.ciaddr, msg.chaddr)
    return DhcpReply(bytes(payload), yiaddr, msg.chaddr)
