"""DNS messages for the user-mode network's forwarder at 10.0.2.3 (RFC 1035).

Only what a stub resolver in the guest sends is understood: a standard
query (opcode 0) with one question. The answer carries A records from the
host's resolver; anything else is answered with an empty section, NXDOMAIN,
SERVFAIL or NOTIMP so the guest never waits for a timeout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vmkit.net.packets import MalformedFrame

DNS_PORT = 53
HEADER_LEN = 12                 # RFC 1035 4.1.1
MAX_NAME = 255                  # RFC 1035 2.3.4, octets including length bytes
MAX_LABEL = 63
MAX_UDP_MESSAGE = 512           # RFC 1035 2.3.4; answers are cut to fit (no EDNS)

TYPE_A = 1
CLASS_IN = 1
FLAG_QR = 0x8000
OPCODE_MASK = 0x7800
FLAG_AA = 0x0400
FLAG_RD = 0x0100
FLAG_RA = 0x0080

RCODE_NOERROR = 0
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4

ANSWER_TTL = 60                 # seconds; the host resolver does its own caching
_A_RECORD_LEN = 16              # pointer(2) type(2) class(2) ttl(4) rdlength(2) address(4)

# Host-name bytes (RFC 952/1123 letters, digits, hyphen; underscore for
# service names). Other names are never handed to the host resolver.
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@dataclass(frozen=True)
class DnsQuery:
    ident: int
    flags: int
    opcode: int
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int
    question: bytes             # the question section as received, echoed in the answer

    @property
    def hostname(self) -> str | None:
        """The name as the host resolver takes it, or None if it is not a plain host name."""
        if not self.labels or any(not set(label) <= _NAME_BYTES for label in self.labels):
            return None
        return b".".join(self.labels).decode("ascii")


def parse_query(data: bytes) -> DnsQuery:
    if len(data) < HEADER_LEN:
        raise MalformedFrame(f"DNS message of {len(data)} bytes is shorter than its header")
    if len(data) > MAX_UDP_MESSAGE:
        # XXX: EDNS0 (RFC 6891) would allow larger queries; stub resolvers never send them.
        raise MalformedFrame(f"DNS query of {len(data)} bytes exceeds {MAX_UDP_MESSAGE}")
    ident, flags, qdcount = struct.unpack_from("!HHH", data, 0)
    if flags & FLAG_QR:
        raise MalformedFrame("DNS response sent to the forwarder")
    if qdcount != 1:
        raise MalformedFrame(f"DNS query with {qdcount} questions, expected 1")
    labels = []
    i = HEADER_LEN
    while True:
        if i >= len(data):
            raise MalformedFrame("DNS question name runs past the end of the message")
        n = data[i]
        if n == 0:
            i += 1
            break
        if n > MAX_LABEL:
            # 0xC0 is a compression pointer (RFC 1035 4.1.4); in the first and
            # only question there is nothing earlier for it to point to.
            raise MalformedFrame(f"DNS label length byte {n:#x} in a question")
        if i + 1 + n > len(data):
            raise MalformedFrame("DNS label runs past the end of the message")
        labels.append(bytes(data[i + 1:i + 1 + n]))
        i += 1 + n
        if i - HEADER_LEN > MAX_NAME:
            raise MalformedFrame(f"DNS name longer than {MAX_NAME} bytes")
    if i + 4 > len(data):
        raise MalformedFrame("DNS question has no type and class")
    qtype, qclass = struct.unpack_from("!HH", data, i)
    # Answer, authority and additional sections (an EDNS OPT record, say)
    # are ignored: the reply is built from the question alone.
    return DnsQuery(ident, flags, (flags & OPCODE_MASK) >> 11, tuple(labels), qtype, qclass,
                    bytes(data[HEADER_LEN:i + 4]))


def build_response(query: DnsQuery, rcode: int, addresses: list[bytes] = ()) -> bytes:
    """A reply to query with A records for addresses (4 bytes each), as many as fit in 512 bytes."""
    room = (MAX_UDP_MESSAGE - HEADER_LEN - len(query.question)) // _A_RECORD_LEN
    answers = b"".join(struct.pack("!HHHIH", 0xC000 | HEADER_LEN, TYPE_A, CLASS_IN, ANSWER_TTL, 4) + a
                       for a in list(addresses)[:max(0, room)])
    flags = FLAG_QR | (query.flags & (OPCODE_MASK | FLAG_RD)) | FLAG_RA | rcode
    header = struct.pack("!HHHHHH", query.ident, flags, 1, len(answers) // _A_RECORD_LEN, 0, 0)
    return header + query.question + answers
