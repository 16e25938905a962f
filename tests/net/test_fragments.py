"""IPv4 fragment reassembly (vmkit/net/fragments.py): whole datagrams from
fragments in any order, and every bad case dropped, counted and freed.
Fragments are real packets: built with build_ipv4, read with parse_ipv4."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pytest

from vmkit.net.fragments import FRAG_TIMEOUT, IPV4_TOTAL_MAX, Reassembler, build_ipv4_fragments
from vmkit.net.packets import (
    ETH_MTU, IP_FLAG_DF, IP_FLAG_MF, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPv4, build_ipv4, build_udp,
    parse_ipv4, parse_udp,
)
from vmkit.net.stack import GATEWAY_IP, GUEST_IP
from tests.net.fuzzing import check_reassembler, feed_fragment_ops, fragment_seeds, run_atheris

TARGET = Path(__file__).with_name("fuzz_fragments.py")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw) -> tuple[Reassembler, Clock]:
    clock = Clock()
    return Reassembler(clock=clock, **kw), clock


def datagram(payload: bytes, *, ident: int = 0x1234, proto: int = IPPROTO_UDP, src: bytes = GUEST_IP,
             dst: bytes = GATEWAY_IP, options: bytes = b"", ttl: int = 64, tos: int = 0) -> bytes:
    """A whole datagram as the guest meant it, before fragmentation (DF clear)."""
    return build_ipv4(src, dst, proto, payload, ident=ident, ttl=ttl, tos=tos, flags_frag=0, options=options)


def frag(payload: bytes, off: int, more: bool, *, ident: int = 0x1234, proto: int = IPPROTO_UDP,
         src: bytes = GUEST_IP, dst: bytes = GATEWAY_IP, options: bytes = b"", flags: int = 0, ttl: int = 64,
         tos: int = 0) -> IPv4:
    """One fragment on the wire, parsed: payload at byte offset off (a multiple of 8)."""
    assert off % 8 == 0
    raw = build_ipv4(src, dst, proto, payload, ident=ident, options=options, ttl=ttl, tos=tos,
                     flags_frag=flags | (IP_FLAG_MF if more else 0) | off // 8)
    return parse_ipv4(raw)


def split(packet: bytes, cuts: list[int]) -> list[IPv4]:
    """Fragments of a whole packet cut at the given payload offsets (multiples
    of 8), in order. The first keeps the options; the rest carry none, as if
    no option had the copied flag (RFC 791 3.1, "Options")."""
    ip = parse_ipv4(packet)
    bounds = [0, *cuts, len(ip.payload)]
    return [frag(ip.payload[a:b], a, b != len(ip.payload), ident=ip.ident, proto=ip.proto, src=ip.src,
                 dst=ip.dst, options=ip.options if a == 0 else b"", flags=ip.flags_frag & IP_FLAG_DF,
                 ttl=ip.ttl, tos=ip.tos)
            for a, b in zip(bounds, bounds[1:])]


def feed(r: Reassembler, frags: list[IPv4]) -> list[bytes]:
    """Every datagram that came out, checking the byte accounting after each fragment."""
    out = []
    for f in frags:
        whole = r.add(f)
        check_reassembler(r)
        if whole is not None:
            out.append(whole)
    return out


def assert_empty(r: Reassembler) -> None:
    assert r.buffered == 0 and r.pending == 0, (r.buffered, r.pending)


PAYLOAD = bytes(range(256)) * 12             # 3072 bytes
PACKET = datagram(PAYLOAD)
FRAGS = split(PACKET, [1480, 2960])         # as a 1500-byte MTU cuts it


# ---------------------------------------------------------------- in order

@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1], [2, 0, 1], [1, 2, 0]])
def test_any_order_gives_the_original_datagram(order):
    r, _ = make()
    out = feed(r, [FRAGS[i] for i in order])
    assert out == [PACKET]
    whole = parse_ipv4(out[0])
    assert not whole.is_fragment and whole.payload == PAYLOAD and whole.ident == 0x1234
    assert_empty(r)
    assert not r.counters


def test_a_fragment_returns_none_until_the_last_piece():
    r, _ = make()
    assert r.add(FRAGS[0]) is None and r.add(FRAGS[2]) is None
    assert (r.pending, r.buffered) == (1, 1480 + 112)
    assert r.add(FRAGS[1]) == PACKET


def test_header_comes_from_the_first_fragment():
    # Its options, TTL, TOS and DF stay; MF, the offset, length and checksum are redone.
    options = b"\x94\x04\x00\x00"                   # Router Alert (RFC 2113), copied flag set
    packet = build_ipv4(GUEST_IP, GATEWAY_IP, IPPROTO_UDP, PAYLOAD, ident=9, ttl=17, tos=0x10,
                        flags_frag=IP_FLAG_DF, options=options)
    frags = split(packet, [512, 1024])
    assert frags[0].options == options and frags[1].options == b""
    r, _ = make()
    out = feed(r, frags[::-1])
    assert out == [packet]
    whole = parse_ipv4(out[0])
    assert (whole.options, whole.ttl, whole.tos, whole.flags_frag) == (options, 17, 0x10, IP_FLAG_DF)


def test_not_a_fragment_comes_back_whole():
    r, _ = make()
    assert r.add(parse_ipv4(PACKET)) == PACKET
    assert_empty(r)


def test_largest_datagram():
    payload = random.Random(1).randbytes(IPV4_TOTAL_MAX - 20)
    packet = datagram(payload)
    r, _ = make()
    out = feed(r, split(packet, list(range(1480, len(payload), 1480))))
    assert out == [packet] and len(packet) == IPV4_TOTAL_MAX
    assert parse_ipv4(out[0]).payload == payload


# ------------------------------------------------------------- duplicates

def test_exact_duplicates_are_ignored():
    r, _ = make()
    out = feed(r, [FRAGS[1], FRAGS[1], FRAGS[0], FRAGS[1], FRAGS[0], FRAGS[2]])
    assert out == [PACKET]
    assert r.counters == {"frag_duplicate": 3}
    assert_empty(r)


def test_duplicate_after_completion_starts_afresh_and_times_out():
    # The datagram is gone once delivered, so a late copy cannot complete
    # anything: it waits alone and expires.
    r, clock = make()
    assert feed(r, FRAGS + [FRAGS[1]]) == [PACKET]
    assert (r.pending, r.buffered) == (1, 1480)
    clock.now += FRAG_TIMEOUT
    assert r.expire() == 1
    assert_empty(r)
    assert r.counters == {"frag_timeout": 1}


# ---------------------------------------------------------------- overlap

A = bytes(range(0, 24))
B = bytes(range(100, 124))


@pytest.mark.parametrize("held, new", [
    ([(B[:16], 8, True)], (A[:16], 0, True)),               # runs into the start of a held piece
    ([(A[:16], 0, True)], (B[:16], 8, True)),               # runs past the start of the new one
    ([(B[:8], 8, True)], (A, 0, True)),                     # covers a held piece
    ([(A, 0, True)], (B[:8], 8, True)),                     # inside a held piece
    ([(A[:16], 0, True)], (B[:16], 0, True)),               # same place, other bytes
    ([(A[:8], 16, False)], (A[:8], 16, True)),              # same bytes, but MF set on a copy of the last
    ([(A[:8], 0, True), (A[:8], 16, False)], (B, 0, False)),    # over everything, as the last
    # RFC 1858 3.2: a fragment at offset 8 rewriting the TCP flags of a first
    # fragment that passed a filter.
    ([(A, 0, True)], (B[:16], 8, True)),
])
def test_overlap_drops_the_whole_datagram(held, new):
    r, _ = make()
    assert feed(r, [frag(*h) for h in held]) == []
    assert r.add(frag(*new)) is None
    assert r.counters == {"frag_overlap": 1}
    assert_empty(r)


def test_overlap_is_final_for_that_datagram():
    # What arrived before the overlap is gone: the remaining fragments
    # cannot complete a datagram that would mix old and new bytes.
    r, clock = make()
    frags = split(datagram(A + B, proto=IPPROTO_TCP), [16, 32])
    assert r.add(frags[0]) is None
    assert r.add(frag(B[:16], 8, True, proto=IPPROTO_TCP)) is None        # overlap: all dropped
    assert feed(r, frags[1:]) == []
    clock.now += FRAG_TIMEOUT
    r.expire()
    assert r.counters == {"frag_overlap": 1, "frag_timeout": 1}
    assert_empty(r)


# ------------------------------------------------------------- bad shapes

@pytest.mark.parametrize("held, new", [
    ([], (b"", 0, True)),                                   # empty, non-final
    ([], (b"", 64, False)),                                 # empty, final
    ([(A[:8], 0, True)], (b"", 8, True)),                   # empty, in a datagram in progress
    ([], (A[:12], 0, True)),                                # non-final, not a multiple of 8
    ([(A[:8], 0, True)], (A[:12], 8, True)),
    ([(A[:8], 16, False)], (A[:16], 16, False)),            # two last fragments, two different ends
    ([(A[:8], 16, False)], (A[:8], 8, False)),
    ([(A[:8], 16, False)], (A[:8], 24, True)),              # data past the end
    ([(A[:8], 8, False)], (A, 16, True)),
    ([(A[:8], 32, True)], (A[:8], 0, False)),               # an end before data already held
])
def test_bad_fragments_drop_the_datagram(held, new):
    r, _ = make()
    assert feed(r, [frag(*h) for h in held]) == []
    assert r.add(frag(*new)) is None
    assert r.counters == {"frag_bad": 1}
    assert_empty(r)


@pytest.mark.parametrize("frags", [
    [(A[:8], 65528, False)],                                # ends at 65536
    [(A[:16], 65504, True)],                                # ends past 65515 though not last
    [(A[:8], 0, True), (A[:16], 65512, False)],             # takes its datagram with it
])
def test_too_big_is_dropped(frags):
    r, _ = make()
    for f in frags[:-1]:
        assert r.add(frag(*f)) is None
    assert r.add(frag(*frags[-1])) is None
    assert r.counters == {"frag_too_big": 1}
    assert_empty(r)


def test_too_big_with_the_first_fragments_options():
    # Ends at 65504: 20 + 65504 fits, but not with 40 bytes of options.
    r, _ = make()
    assert r.add(frag(A[:8], 65496, False)) is None
    assert r.add(frag(A[:8], 0, True, options=b"\x01" * 40)) is None
    assert r.counters == {"frag_too_big": 1}
    assert_empty(r)


# -------------------------------------------------------- memory and time

def test_hole_never_filled_times_out():
    r, clock = make()
    assert feed(r, [FRAGS[0], FRAGS[2]]) == []
    clock.now += FRAG_TIMEOUT - 0.1
    assert r.expire() == 0 and r.pending == 1
    clock.now += 0.1
    assert r.expire() == 1
    assert r.counters == {"frag_timeout": 1}
    assert_empty(r)
    assert r.add(FRAGS[1]) is None                          # too late: a new datagram, on its own


def test_timeout_counts_from_the_first_fragment():
    r, clock = make(timeout=10.0)
    assert r.add(FRAGS[0]) is None
    clock.now += 9
    assert r.add(FRAGS[2]) is None
    clock.now += 1
    assert r.add(FRAGS[1]) is None                          # add() expires first: the datagram is gone
    assert r.counters == {"frag_timeout": 1}
    assert (r.pending, r.buffered) == (1, 1480)


def test_memory_cap_evicts_the_oldest():
    r, _ = make(max_bytes=4000)
    a, b = split(datagram(PAYLOAD, ident=1), [1480, 2960]), split(datagram(PAYLOAD, ident=2), [1480, 2960])
    assert feed(r, [a[0], a[1], b[0]]) == []                # 2960 + 1480 > 4000: a goes
    assert r.counters == {"frag_memory": 1}
    assert (r.pending, r.buffered) == (1, 1480)
    assert feed(r, [b[1], b[2]]) == [datagram(PAYLOAD, ident=2)]
    assert_empty(r)


def test_memory_cap_evicts_as_many_as_needed():
    r, _ = make(max_bytes=64)
    for ident in range(8):
        assert r.add(frag(A[:8], 0, True, ident=ident)) is None
    assert r.add(frag(bytes(48), 0, True, ident=99)) is None
    assert r.counters == {"frag_memory": 6}
    assert (r.pending, r.buffered) == (3, 64)


def test_fragment_larger_than_the_cap_alone():
    r, _ = make(max_bytes=1000)
    assert r.add(FRAGS[0]) is None
    assert r.counters == {"frag_memory": 1}
    assert_empty(r)
    # A datagram is capped on what it holds, not on its completing piece.
    r, _ = make(max_bytes=1600)
    assert feed(r, [FRAGS[0], FRAGS[2], FRAGS[1]]) == [PACKET]
    assert not r.counters


def test_datagram_cap_evicts_the_oldest():
    r, _ = make(max_datagrams=2)
    first = {ident: split(datagram(PAYLOAD, ident=ident), [1480, 2960]) for ident in (1, 2, 3)}
    assert feed(r, [first[1][0], first[2][0], first[3][0]]) == []
    assert r.counters == {"frag_memory": 1} and r.pending == 2
    assert feed(r, first[1][1:]) == []                      # 1 was evicted: these wait alone
    assert r.counters == {"frag_memory": 2}                 # ... and evict 2 in turn
    assert feed(r, first[3][1:]) == [datagram(PAYLOAD, ident=3)]


# ---------------------------------------------------------- several at once

def test_interleaved_datagrams_stay_apart():
    # Same identification but another protocol or source is another datagram (RFC 791 3.2).
    packets = [datagram(PAYLOAD, ident=1), datagram(PAYLOAD[::-1], ident=2),
               datagram(PAYLOAD[:2000], ident=1, proto=IPPROTO_ICMP),
               datagram(PAYLOAD[1000:], ident=1, src=bytes([10, 0, 2, 16]))]
    frags = [split(p, [1480, 1488]) for p in packets]
    r, _ = make()
    out = feed(r, [f[i] for i in (2, 0, 1) for f in frags])
    assert sorted(out) == sorted(packets)
    assert_empty(r)
    assert not r.counters


def test_reassembled_udp_checksum_verifies():
    udp = build_udp(GUEST_IP, GATEWAY_IP, 40000, 9999, PAYLOAD + b"odd")
    packet = datagram(udp)
    r, _ = make()
    out = feed(r, split(packet, [8, 1480, 1488, 2000])[::-1])      # the UDP header alone in the first
    assert out == [packet]
    ip = parse_ipv4(out[0])
    u = parse_udp(ip)                                        # raises on a checksum mismatch
    assert (u.sport, u.dport, u.payload) == (40000, 9999, PAYLOAD + b"odd")


# ------------------------------------------------------------ fragmenting

@pytest.mark.parametrize("size, mtu", [(0, ETH_MTU), (1472, ETH_MTU), (1473, ETH_MTU), (3072, ETH_MTU),
                                       (65507, ETH_MTU), (100, 68), (1000, 576)])
def test_build_ipv4_fragments_round_trip(size, mtu):
    # size: UDP payload bytes; 1472 just fits a 1500-byte MTU, 65507 is the most a datagram holds.
    udp = build_udp(GATEWAY_IP, GUEST_IP, 53, 40000, bytes(range(256)) * (size // 256) + bytes(size % 256))
    packets = build_ipv4_fragments(GATEWAY_IP, GUEST_IP, IPPROTO_UDP, udp, ident=77, mtu=mtu)
    assert all(len(p) <= mtu for p in packets)
    if 20 + len(udp) <= mtu:
        assert packets == [build_ipv4(GATEWAY_IP, GUEST_IP, IPPROTO_UDP, udp, ident=77)]
        return
    frags = [parse_ipv4(p) for p in packets]
    assert all(f.is_fragment and not f.flags_frag & IP_FLAG_DF for f in frags)
    assert [f.more_fragments for f in frags] == [True] * (len(frags) - 1) + [False]
    r, _ = make()
    out = feed(r, random.Random(size).sample(frags, len(frags)))
    assert len(out) == 1 and parse_udp(parse_ipv4(out[0])).dport == 40000


def test_build_ipv4_fragments_refuses_the_impossible():
    with pytest.raises(ValueError):
        build_ipv4_fragments(GATEWAY_IP, GUEST_IP, IPPROTO_UDP, bytes(65516))
    with pytest.raises(ValueError):
        build_ipv4_fragments(GATEWAY_IP, GUEST_IP, IPPROTO_UDP, bytes(100), mtu=27)


# ----------------------------------------------------------------- random

def random_split(rng: random.Random, packet: bytes) -> list[IPv4]:
    size = len(parse_ipv4(packet).payload)
    blocks = (size - 1) // 8
    cuts = sorted(rng.sample(range(1, blocks + 1), min(blocks, rng.randrange(12)))) if blocks else []
    return split(packet, [c * 8 for c in cuts])


@pytest.mark.parametrize("seed", range(20))
def test_random_fragments_in_any_order_with_duplicates(seed):
    rng = random.Random(seed)
    packets, streams = [], []
    for ident in rng.sample(range(65536), rng.randint(1, 6)):
        options = rng.choice([b"", b"\x01\x01\x01\x00", b"\x94\x04\x00\x00" * rng.randint(1, 10)])
        packet = datagram(rng.randbytes(rng.randint(1, 9000)), ident=ident, options=options,
                          proto=rng.choice([IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP, 200]),
                          ttl=rng.randint(1, 255), tos=rng.randrange(256))
        pieces = random_split(rng, packet)
        rng.shuffle(pieces)
        # Copies of any piece but the one that arrives last, which completes the datagram.
        early = pieces[:-1] + [rng.choice(pieces[:-1]) for _ in range(rng.randrange(4)) if len(pieces) > 1]
        rng.shuffle(early)
        packets.append(packet)
        streams.append(early + pieces[-1:])
    frags = []
    while streams:                  # interleave the datagrams, each keeping its own order
        stream = rng.choice(streams)
        frags.append(stream.pop(0))
        if not stream:
            streams.remove(stream)
    r, _ = make()
    out = feed(r, frags)
    assert sorted(out) == sorted(packets)
    assert set(r.counters) <= {"frag_duplicate"}
    assert_empty(r)


@pytest.mark.parametrize("seed", range(20))
def test_random_garbage_never_raises_and_frees_everything(seed):
    rng = random.Random(seed)
    r, clock = make(max_bytes=rng.choice([512, 4096, 64 * 1024]), max_datagrams=rng.randint(1, 8),
                    timeout=rng.choice([1.0, 5.0, 30.0]))
    base = rng.randbytes(2048)
    for _ in range(3000):
        off = rng.choice([rng.randrange(0, 256, 8), rng.randrange(0, 65536, 8)])
        n = rng.choice([0, 8, 16, rng.randrange(64), rng.randrange(2048)])
        data = base[:n] if rng.random() < 0.7 else rng.randbytes(n)
        f = frag(data, min(off, 65528), rng.random() < 0.7, ident=rng.randrange(4),
                 proto=rng.choice([IPPROTO_UDP, IPPROTO_TCP]), options=rng.choice([b"", b"\x01" * 40]))
        whole = r.add(f)
        check_reassembler(r)
        if whole is not None:
            assert not parse_ipv4(whole).is_fragment
        if rng.random() < 0.05:
            clock.now += rng.random() * 3
            r.expire()
    r.expire(math.inf)
    assert_empty(r)
    assert sum(r.counters.values()) > 0


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_through_the_fuzz_driver(seed):
    rng = random.Random(seed)
    for s in fragment_seeds():
        feed_fragment_ops(s)
    for _ in range(300):
        feed_fragment_ops(rng.randbytes(rng.randrange(4000)))


def test_counters_can_be_shared():
    from collections import Counter
    shared = Counter({"malformed": 2})
    r = Reassembler(counters=shared)
    r.add(frag(b"", 0, True))
    assert shared == {"malformed": 2, "frag_bad": 1}


@pytest.mark.parametrize("limits", [{"max_bytes": 0}, {"max_datagrams": 0}, {"timeout": 0}])
def test_limits_must_be_positive(limits):
    with pytest.raises(ValueError):
        Reassembler(**limits)


@pytest.mark.slow
def test_atheris_fragments(tmp_path):
    pytest.importorskip("atheris")
    run_atheris(TARGET, tmp_path, int(os.environ.get("VMKIT_FUZZ_SECONDS", "5")))
