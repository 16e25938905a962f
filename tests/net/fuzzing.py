"""Shared by the random fuzz tests (test_fuzz.py, test_fragments.py) and the
atheris targets (fuzz_frames.py, fuzz_fragments.py): seed frames,
mutations, checksum repair, a UserNet harness that checks what "handled or
counted" means, a fragment-sequence driver for the Reassembler, and the
runner that gives an atheris target a few seconds from pytest.

The harness's UserNet may relay only to sink sockets it owns on 127.0.0.1
(a UDP socket and a TCP listener on the same port number, both echoing) and
its resolver is a fake, so fuzzed frames never reach another host or a real
name server.
"""

from __future__ import annotations

import math
import os
import random
import socket
import struct
import subprocess
import sys
from pathlib import Path

from vmkit.net import dhcp
from vmkit.net.packets import (
    ETH_HLEN, ETH_P_ARP, ETH_P_IP, IP_FRAG_OFFSET_MASK, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK,
    TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, MalformedFrame, _pseudo_header_sum, build_ethernet, build_ipv4, build_tcp,
    internet_checksum, parse_arp, parse_ethernet, parse_icmp, parse_ipv4, parse_tcp, parse_udp,
)
from vmkit.net.fragments import IPV4_TOTAL_MAX, Reassembler
from vmkit.net.stack import DNS_IP, GATEWAY_IP, GATEWAY_MAC, GUEST_IP, UserNet, virtual_mac
from tests.net.helpers import GUEST_MAC, arp_request, dhcp_frame, dhcp_message, dns_query, icmp_echo, udp_frame

HARNESS_ISN = 7777      # the stack's initial sequence number in the harness, so seeds can complete handshakes


def fake_resolver(name: str) -> list[str]:
    if name.startswith("x"):
        raise OSError("resolver failure")
    return [] if len(name) % 2 else ["10.1.2.3", "10.1.2.4"]


def seed_frames(sink_port: int) -> list[bytes]:
    frames = [
        arp_request(GATEWAY_IP), arp_request(DNS_IP),
        icmp_echo(GATEWAY_IP), icmp_echo(DNS_IP, data=bytes(100)),
        dhcp_frame(dhcp_message(dhcp.DHCPDISCOVER)),
        dhcp_frame(dhcp_message(dhcp.DHCPREQUEST, requested=bytes([10, 0, 2, 15]), server_id=GATEWAY_IP)),
        udp_frame(DNS_IP, 53, dns_query("localhost"), dst_mac=virtual_mac(DNS_IP)),
        udp_frame(DNS_IP, 53, dns_query("abc", qtype=28)),
        udp_frame(DNS_IP, 53, dns_query("xfail")),
        udp_frame(GATEWAY_IP, sink_port, b"relay me"),
        udp_frame(GATEWAY_IP, sink_port, b"relay me too", sport=1234),
    ]
    # A whole TCP connection to the sink (the SYN-ACK carries HARNESS_ISN),
    # a SYN with the usual options, an aborted one, and one to a closed port.
    ack = HARNESS_ISN + 1
    frames += [
        tcp_frame(sink_port, TCP_SYN, 1000, 0, mss=1460),
        tcp_frame(sink_port, TCP_ACK, 1001, ack),
        tcp_frame(sink_port, TCP_ACK | TCP_PSH, 1001, ack, b"hello over tcp"),
        tcp_frame(sink_port, TCP_ACK | TCP_FIN, 1015, ack),
        tcp_frame(sink_port, TCP_SYN, 5000, 0, sport=45001,
                  options=b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + bytes(8) + b"\x01\x03\x03\x07"),
        tcp_frame(sink_port, TCP_SYN, 9000, 0, sport=45002),
        tcp_frame(sink_port, TCP_RST, 9001, 0, sport=45002),
    ]
    # Fragmented datagrams: a UDP one to the sink (in reverse) and a ping.
    from vmkit.net.fragments import build_ipv4_fragments
    from vmkit.net.packets import ICMP_ECHO_REQUEST, build_icmp, build_udp
    for proto, payload, order in ((IPPROTO_UDP, build_udp(GUEST_IP, GATEWAY_IP, 40001, sink_port, bytes(3000)), -1),
                                  (IPPROTO_ICMP, build_icmp(ICMP_ECHO_REQUEST, 0, b"\0\1\0\2", bytes(2000)), 1)):
        packets = build_ipv4_fragments(GUEST_IP, GATEWAY_IP, proto, payload, ident=0x77 + proto)
        frames += [build_ethernet(GATEWAY_MAC, GUEST_MAC, ETH_P_IP, p) for p in packets[::order]]
    return frames


def tcp_frame(dport: int, flags: int, seq: int, ack: int, payload: bytes = b"", *, sport: int = 45000,
              mss: int | None = None, options: bytes = b"", window: int = 65535) -> bytes:
    """A guest TCP segment to the gateway; options (padded to 4 bytes) are raw."""
    seg = build_tcp(GUEST_IP, GATEWAY_IP, sport, dport, seq, ack, flags, window, payload, mss=mss)
    if options:
        options += bytes(-len(options) % 4)
        hlen = 20 + len(options)
        b = bytearray(seg[:20] + options + payload)
        struct.pack_into("!H", b, 12, (hlen // 4) << 12 | flags)
        struct.pack_into("!H", b, 16, 0)
        struct.pack_into("!H", b, 16, internet_checksum(bytes(b), _pseudo_header_sum(GUEST_IP, GATEWAY_IP,
                                                                                    IPPROTO_TCP, len(b))))
        seg = bytes(b)
    return build_ethernet(GATEWAY_MAC, GUEST_MAC, ETH_P_IP, build_ipv4(GUEST_IP, GATEWAY_IP, IPPROTO_TCP, seg))


def fix_checksums(frame: bytes) -> bytes:
    """Recompute the IPv4 header checksum and the ICMP/UDP checksum where the
    lengths allow, so mutations reach the code behind checksum checks."""
    b = bytearray(frame)
    if len(b) < ETH_HLEN + 20 or struct.unpack_from("!H", b, 12)[0] != ETH_P_IP:
        return frame
    hlen = (b[ETH_HLEN] & 0xF) * 4
    if hlen < 20 or ETH_HLEN + hlen > len(b):
        return frame
    struct.pack_into("!H", b, ETH_HLEN + 10, 0)
    struct.pack_into("!H", b, ETH_HLEN + 10, internet_checksum(bytes(b[ETH_HLEN:ETH_HLEN + hlen])))
    total = struct.unpack_from("!H", b, ETH_HLEN + 2)[0]
    start, end = ETH_HLEN + hlen, min(len(b), ETH_HLEN + total)
    proto = b[ETH_HLEN + 9]
    if proto == IPPROTO_ICMP and end - start >= 8:
        struct.pack_into("!H", b, start + 2, 0)
        struct.pack_into("!H", b, start + 2, internet_checksum(bytes(b[start:end])))
    elif proto == IPPROTO_UDP and end - start >= 8:
        struct.pack_into("!H", b, start + 6, 0)         # zero: "no checksum", always accepted
    elif proto == IPPROTO_TCP and end - start >= 20:
        struct.pack_into("!H", b, start + 16, 0)
        pseudo = _pseudo_header_sum(bytes(b[ETH_HLEN + 12:ETH_HLEN + 16]), bytes(b[ETH_HLEN + 16:ETH_HLEN + 20]),
                                    IPPROTO_TCP, end - start)
        struct.pack_into("!H", b, start + 16, internet_checksum(bytes(b[start:end]), pseudo))
    return bytes(b)


def mutate(rng: random.Random, frame: bytes, seeds: list[bytes]) -> bytes:
    b = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            del b[rng.randrange(len(b) + 1):]
        elif op == 3:
            b += rng.randbytes(rng.randrange(64))
        elif op == 4 and len(b) > 2:
            i = rng.randrange(len(b) - 1)
            value = rng.choice((0, 1, 0xFFFF, len(b), len(b) - ETH_HLEN, rng.randrange(65536)))
            struct.pack_into("!H", b, i, value & 0xFFFF)         # a plausible or absurd length field
        elif op == 5:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            b = b[:cut] + bytearray(other[cut:])
    return fix_checksums(bytes(b)) if rng.random() < 0.7 else bytes(b)


class Harness:
    """A UserNet fed arbitrary frames. feed() raises AssertionError when the
    stack misbehaves: an exception escaped, more than one drop counted for a
    frame, or a frame it sent does not parse."""

    MAX_TCP_PEERS = 32

    def __init__(self, **kw):
        for _ in range(50):
            self.tcp_sink = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp_sink.bind(("127.0.0.1", 0))
            self.sink_port = self.tcp_sink.getsockname()[1]
            self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.sink.bind(("127.0.0.1", self.sink_port))
                break
            except OSError:
                self.sink.close()
                self.tcp_sink.close()
        else:
            raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")
        self.sink.setblocking(False)
        self.tcp_sink.listen(64)
        self.tcp_sink.setblocking(False)
        self.tcp_peers: list[socket.socket] = []
        self.sent: list[bytes] = []
        kw.setdefault("tcp", True)
        kw.setdefault("tcp_isn", lambda: HARNESS_ISN)
        kw.setdefault("max_tcp_conns", 16)
        self.net = UserNet(self._to_guest, dns_resolver=fake_resolver,
                           allow_relay=lambda host, port: host == "127.0.0.1" and port == self.sink_port, **kw)

    def _to_guest(self, frame: bytes) -> None:
        check_outgoing(frame)
        self.sent.append(frame)

    def feed(self, frame: bytes) -> None:
        evictions = ("frag_memory", "frag_timeout")     # a fragment can also free other datagrams
        before = sum(v for k, v in self.net.counters.items() if k not in evictions)
        self.net.from_guest(frame)
        grew = sum(v for k, v in self.net.counters.items() if k not in evictions) - before
        assert grew in (0, 1), f"{grew} drops counted for one frame: {dict(self.net.counters)}"
        self._echo_sink()
        self.net.poll()
        self.sent.clear()

    def _echo_sink(self) -> None:
        # Answer relayed datagrams and streams so the reply paths run too.
        for _ in range(8):
            try:
                data, addr = self.sink.recvfrom(65535)
            except BlockingIOError:
                break
            self.sink.sendto(data[:64], addr)
        for _ in range(4):
            try:
                peer, _addr = self.tcp_sink.accept()
            except BlockingIOError:
                break
            peer.setblocking(False)
            self.tcp_peers.append(peer)
            if len(self.tcp_peers) > self.MAX_TCP_PEERS:
                self.tcp_peers.pop(0).close()
        for peer in list(self.tcp_peers):
            try:
                data = peer.recv(4096)
                if data:
                    peer.send(data[:256])
                else:
                    peer.close()                # the guest closed: so do we
                    self.tcp_peers.remove(peer)
            except BlockingIOError:
                pass
            except OSError:
                peer.close()
                self.tcp_peers.remove(peer)

    def close(self) -> None:
        self.net.close()
        self.sink.close()
        self.tcp_sink.close()
        for peer in self.tcp_peers:
            peer.close()


def check_outgoing(frame: bytes) -> None:
    """Every frame the stack sends must pass its own strict parsers."""
    try:
        eth = parse_ethernet(frame)
        if eth.ethertype == ETH_P_ARP:
            parse_arp(eth.payload)
        else:
            assert eth.ethertype == ETH_P_IP
            ip = parse_ipv4(eth.payload)
            assert ip.proto in (IPPROTO_ICMP, IPPROTO_UDP, IPPROTO_TCP)
            if ip.is_fragment:
                return                          # XXX: the harness could reassemble and check the whole
            if ip.proto == IPPROTO_ICMP:
                parse_icmp(ip.payload)
            elif ip.proto == IPPROTO_UDP:
                parse_udp(ip)
            else:
                parse_tcp(ip)
    except MalformedFrame as e:
        raise AssertionError(f"the stack sent a malformed frame ({e}): {frame.hex()}") from e


# ------------------------------------------------------------- fragments

FRAG_IDENTS = 4         # fragments in a fuzz input belong to at most this many datagrams


def feed_fragment_ops(data: bytes, **limits) -> Reassembler:
    """Decode data into fragments and clock steps, feed them to a fresh
    Reassembler (small limits by default, so eviction happens) and check it
    after every step. Raises AssertionError when reassembly misbehaves: an
    exception escaped add(), the byte count is off or over the cap, a
    datagram came out that does not parse, or expire() left memory held.

    Each op starts with a byte: bits 0-1 == 3 advance the clock by the next
    byte / 8 seconds; otherwise it is a fragment of datagram (bits 2-3),
    with 4 bytes of NOP options if bit 4 is set, followed by its flags and
    offset (2 bytes; the reserved bit is cleared, as parse_ipv4 would refuse
    it), a length (2 bytes, at most 2047) and its data, from the input and
    then padded with the op byte."""
    now = [0.0]
    limits.setdefault("max_bytes", 4096)
    limits.setdefault("max_datagrams", 3)
    limits.setdefault("timeout", 5.0)
    r = Reassembler(clock=lambda: now[0], **limits)
    i = 0
    while i < len(data):
        op = data[i]
        i += 1
        if op & 3 == 3:
            now[0] += (data[i] if i < len(data) else 255) / 8
            i += 1
            continue
        head = data[i:i + 4].ljust(4, b"\0")
        i += 4
        flags_frag, length = struct.unpack("!HH", head)
        length &= 0x7FF
        payload = data[i:i + length].ljust(length, bytes([op]))
        i += length
        ident = op >> 2 & (FRAG_IDENTS - 1)
        options = b"\x01\x01\x01\x01" if op & 0x10 else b""
        packet = build_ipv4(b"\x0a\x00\x02\x0f", b"\x0a\x00\x02\x02", 17, payload, ident=ident,
                            flags_frag=flags_frag & (0x6000 | IP_FRAG_OFFSET_MASK), options=options)
        out = r.add(parse_ipv4(packet))
        check_reassembler(r)
        if out is not None:
            whole = parse_ipv4(out)
            assert len(out) <= IPV4_TOTAL_MAX and not whole.is_fragment and whole.ident == ident
    r.expire(math.inf)
    assert r.buffered == 0 and r.pending == 0, (r.buffered, r.pending)
    return r


def check_reassembler(r: Reassembler) -> None:
    """The Reassembler's accounting is exact and within its caps."""
    held = sum(len(data) for d in r._datagrams.values() for _end, data, _last in d.pieces)
    assert r.buffered == held == sum(d.held for d in r._datagrams.values()), (r.buffered, held)
    assert r.buffered <= r.max_bytes and r.pending <= r.max_datagrams, (r.buffered, r.pending)


def fragment_seeds() -> list[bytes]:
    """feed_fragment_ops inputs: a datagram in three fragments in order, out
    of order with a duplicate, with an overlap, and one left to time out."""
    def frag(sel: int, off: int, payload: bytes, more: bool) -> bytes:
        return bytes([sel << 2]) + struct.pack("!HH", (0x2000 if more else 0) | off // 8, len(payload)) + payload
    a, b, c = bytes(range(16)), bytes(range(16, 32)), b"tail"
    return [
        frag(0, 0, a, True) + frag(0, 16, b, True) + frag(0, 32, c, False),
        frag(1, 32, c, False) + frag(1, 0, a, True) + frag(1, 0, a, True) + frag(1, 16, b, True),
        frag(2, 0, a, True) + frag(2, 8, b, True) + frag(2, 32, c, False),
        frag(3, 0, a, True) + b"\x03\xff" * 8,
    ]


# ---------------------------------------------------------------- atheris

def run_atheris(target: Path, tmp_path: Path, seconds: int) -> None:
    """Run an atheris target for `seconds` on a fresh corpus under tmp_path;
    fail with libFuzzer's report if it finds a crash, a hang or a memory blowup."""
    corpus = tmp_path / "corpus"
    r = subprocess.run([sys.executable, str(target), f"-max_total_time={seconds}", "-rss_limit_mb=1024",
                        "-timeout=10", f"-artifact_prefix={tmp_path}/", str(corpus)],
                       capture_output=True, text=True, timeout=seconds + 120,
                       env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2])))
    report = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("INFO: Instrumenting"))
    assert r.returncode == 0, report[-5000:]
    assert "DONE" in r.stderr, report[-3000:]
