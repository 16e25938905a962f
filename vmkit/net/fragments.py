"""IPv4 fragment reassembly (RFC 791 3.2, "Fragmentation and Reassembly")
for the user-mode network, and fragmentation of datagrams we send.

Only the guest sends us fragments, so the dangers are a buggy or hostile
guest spending the host's memory and CPU, and fragment tricks that make two
readers see different datagrams. So we are stricter than RFC 791:

- Overlaps are refused, not resolved: a fragment that overlaps one already
  held drops its whole datagram (RFC 5722's rule for IPv6, applied to
  IPv4). That defeats RFC 1858's overlapping-fragment attack. Its
  tiny-fragment attack does not apply here, because the stack only ever
  looks at whole datagrams, never at a first fragment by itself.
- An exact duplicate (same offset, same bytes, same MF flag) is harmless
  and is ignored.
- A badly shaped fragment drops its datagram as well: an empty fragment,
  a non-final fragment whose length is not a multiple of 8, final
  fragments that disagree on where the datagram ends, data past the final
  fragment's end, or a datagram longer than 65535 bytes.
- Memory and time are capped: at most max_bytes of payload held and
  max_datagrams in progress (the oldest is evicted to make room), and an
  incomplete datagram is dropped timeout seconds after its first fragment
  arrived. The default is 30 s, Linux's ipfrag_time. RFC 791 suggests 15 s,
  raised to the fragment's TTL; we do not raise it.

Every drop is counted once in `counters` under its reason: once per
datagram, or once for a lone fragment that starts none. The reasons are
frag_bad, frag_overlap, frag_too_big, frag_memory and frag_timeout.
frag_duplicate counts the duplicates we ignore. A fragment that is held
counts nothing yet: later its datagram either completes or is dropped, and
that drop is counted. Nothing here raises on a fragment that parse_ipv4
accepted.
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vmkit.net.packets import ETH_MTU, IP_FLAG_DF, IP_FLAG_MF, IPV4_HLEN_MIN, IPv4, build_ipv4

FRAG_TIMEOUT = 30.0             # seconds from a datagram's first fragment to giving up on it
MAX_FRAG_BYTES = 256 * 1024     # per VM: fragment payload bytes held
MAX_FRAG_DATAGRAMS = 64         # per VM: datagrams being reassembled
IPV4_TOTAL_MAX = 0xFFFF         # Total Length is 16 bits, header included

Key = tuple[bytes, bytes, int, int]     # RFC 791 3.2: source, destination, protocol, identification


@dataclass(eq=False)
class _Datagram:
    created: float
    starts: list[int] = field(default_factory=list)         # sorted; pieces never overlap
    pieces: list[tuple[int, bytes, bool]] = field(default_factory=list)    # (end, data, last), by start
    held: int = 0                   # sum of len(data) over pieces
    end: int | None = None          # known once the final fragment (MF clear) is in
    first: IPv4 | None = None       # the offset-0 fragment: its header becomes the datagram's


class Reassembler:
    """Fragments in, whole datagrams out. Not thread-safe: call from the VM loop only."""

    def __init__(self, *, max_bytes: int = MAX_FRAG_BYTES, max_datagrams: int = MAX_FRAG_DATAGRAMS,
                 timeout: float = FRAG_TIMEOUT, clock: Callable[[], float] = time.monotonic,
                 counters: collections.Counter[str] | None = None):
        """counters: where the drops are counted; pass UserNet's to share it.
        clock must never go backwards: the datagrams expire in creation order."""
        if max_bytes < 1 or max_datagrams < 1 or not timeout > 0:
            raise ValueError(f"reassembly limits must be positive: max_bytes={max_bytes}, "
                             f"max_datagrams={max_datagrams}, timeout={timeout}")
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self._clock = clock
        self.counters: collections.Counter[str] = collections.Counter() if counters is None else counters
        self.buffered = 0           # payload bytes held, over all datagrams
        self._datagrams: dict[Key, _Datagram] = {}     # in creation order, so the first is the oldest

    @property
    def pending(self) -> int:
        """How many datagrams are incomplete."""
        return len(self._datagrams)

    def add(self, ip: IPv4) -> bytes | None:
        """Take one fragment. Returns the whole datagram as an IPv4 packet
        (the first fragment's header with MF and offset cleared, and the
        length and checksum fixed; it parses with parse_ipv4) when this
        fragment completes it. Otherwise returns None: the fragment is
        held, or it was dropped and counted. A packet that is not a
        fragment comes back rebuilt, as a datagram of one fragment."""
        now = self._clock()
        self.expire(now)
        key = (ip.src, ip.dst, ip.proto, ip.ident)
        d = self._datagrams.get(key)
        if d is None:
            d = _Datagram(now)          # stored below only if the fragment is kept
        off, data, last = ip.frag_offset, ip.payload, not ip.more_fragments
        end = off + len(data)
        i = bisect.bisect_right(d.starts, off)
        reason = _refusal(d, i, ip, off, end, last)
        if reason is not None:
            if reason != "frag_duplicate" and key in self._datagrams:
                self._forget(key)
            self.counters[reason] += 1
            return None
        # No overlaps, and every byte lies in [0, final): pieces that add up
        # to `final` bytes fill the datagram with no holes.
        final = d.end if d.end is not None else end if last else None
        complete = final is not None and d.held + len(data) == final
        if not complete and not self._make_room(key, d, len(data)):
            return None
        d.starts.insert(i, off)
        d.pieces.insert(i, (end, data, last))
        d.held += len(data)
        self.buffered += len(data)
        if last:
            d.end = end
        if off == 0:
            d.first = ip
        if not complete:
            return None
        self._datagrams.pop(key, None)          # absent if this one fragment was the whole datagram
        self.buffered -= d.held
        first = d.first
        return build_ipv4(first.src, first.dst, first.proto, b"".join(p[1] for p in d.pieces),
                          ident=first.ident, ttl=first.ttl, tos=first.tos,
                          flags_frag=first.flags_frag & IP_FLAG_DF, options=first.options)

    def expire(self, now: float | None = None) -> int:
        """Drop the datagrams that have been incomplete for timeout seconds
        or more. Returns how many were dropped. add() calls this itself, and
        the VM loop should call it now and then to free memory even when no
        fragments arrive (expire(math.inf) drops everything)."""
        if now is None:
            now = self._clock()
        dropped = 0
        while self._datagrams:
            key = next(iter(self._datagrams))
            if now - self._datagrams[key].created < self.timeout:
                break
            self._drop(key, "frag_timeout")
            dropped += 1
        return dropped

    def _make_room(self, key: Key, d: _Datagram, size: int) -> bool:
        """Make room to hold size more bytes for datagram key, evicting the
        oldest other datagrams as needed. Returns False (and counts it) when
        the datagram cannot fit even alone."""
        if key not in self._datagrams:
            while len(self._datagrams) >= self.max_datagrams:
                self._drop(next(iter(self._datagrams)), "frag_memory")
            self._datagrams[key] = d
        while self.buffered + size > self.max_bytes:
            victim = next((k for k in self._datagrams if k != key), None)
            if victim is None:
                self._drop(key, "frag_memory")
                return False
            self._drop(victim, "frag_memory")
        return True

    def _drop(self, key: Key, reason: str) -> None:
        self._forget(key)
        self.counters[reason] += 1

    def _forget(self, key: Key) -> None:
        self.buffered -= self._datagrams.pop(key).held


def _refusal(d: _Datagram, i: int, ip: IPv4, off: int, end: int, last: bool) -> str | None:
    """Why fragment [off, end) cannot join datagram d (a new, empty one if
    none is in progress), where i is its place among d's pieces. Returns
    None if it can join."""
    size = end - off
    if size == 0 or not last and size % 8:
        return "frag_bad"
    if i and d.starts[i - 1] == off and d.pieces[i - 1] == (end, ip.payload, last):
        return "frag_duplicate"
    if d.end is not None and (end > d.end or last and end != d.end):
        return "frag_bad"                       # past the end, or a second, different end
    if last and d.pieces and d.pieces[-1][0] > end:
        return "frag_bad"                       # an end before data already held
    if i and d.pieces[i - 1][0] > off or i < len(d.starts) and d.starts[i] < end:
        return "frag_overlap"
    first = d.first if d.first is not None else ip if off == 0 else None
    hlen = IPV4_HLEN_MIN + (len(first.options) if first is not None else 0)
    if hlen + max(end, d.end or 0) > IPV4_TOTAL_MAX:
        return "frag_too_big"
    return None


def build_ipv4_fragments(src: bytes, dst: bytes, proto: int, payload: bytes, *, ident: int = 0, ttl: int = 64,
                         tos: int = 0, mtu: int = ETH_MTU) -> list[bytes]:
    """build_ipv4 for a payload of any size up to what an IPv4 packet can
    hold. If the packet fits in mtu, the result is the one packet build_ipv4
    makes (Don't Fragment set). Otherwise it is RFC 791 3.2 fragments of at
    most mtu bytes each, every one carrying 8-byte blocks except the last."""
    if IPV4_HLEN_MIN + len(payload) <= mtu:
        return [build_ipv4(src, dst, proto, payload, ident=ident, ttl=ttl, tos=tos)]
    if IPV4_HLEN_MIN + len(payload) > IPV4_TOTAL_MAX:
        raise ValueError(f"IPv4 payload of {len(payload)} bytes is too large")
    step = (mtu - IPV4_HLEN_MIN) // 8 * 8
    if step <= 0:
        raise ValueError(f"an MTU of {mtu} bytes holds no 8-byte fragment")
    return [build_ipv4(src, dst, proto, payload[o:o + step], ident=ident, ttl=ttl, tos=tos,
                       flags_frag=(IP_FLAG_MF if o + step < len(payload) else 0) | o // 8)
            for o in range(0, len(payload), step)]
