"""I/O rate limiting with token buckets (Firecracker's RateLimiter).

A `RateLimiter` has two `TokenBucket`s, one of bytes and one of operations
(a disk request, a network frame).  A bucket holds at most `burst` tokens
and refills continuously at `rate_per_sec`; it starts full, so an idle
device may do one burst at full speed.  An I/O goes ahead only when both
buckets can pay for it, and then pays both (one op and its bytes) or nothing.
A device that is refused stops taking requests from its queue, leaving them
on the ring in order, and asks `next_ready()` when to try again; the board
calls the device's `poll()` from its run loop and sleeps no longer than its
`next_deadline()`.  A rate of 0 means unlimited: that bucket always pays.

Requests bigger than a bucket (a 4 MiB write against a 1 MiB/s bucket with
its default one-second burst) must still pass.  We allow debt, as
Firecracker does when it consumes more than the bucket size: a request needs
`min(cost, burst)` tokens, i.e. a full bucket when it is bigger than the
bucket, and then takes its whole cost, leaving the balance negative.  Later
requests wait until the debt is refilled, so over time the rate holds
exactly (what passes in t seconds is at most burst + rate * t plus the one
request that went into debt), and no request is ever split or starved.
A bucket never holds more than its burst, so a caller that looks less often
than it takes the bucket to fill loses the overshoot: keep bursts at least
the rate times the board's poll interval (the default, one second's worth,
is far above it).

A request of 0 bytes (a flush) does not touch the bytes bucket: only its
operation is counted, even while the bytes bucket is in debt.

Times are seconds of `clock` (time.monotonic by default; tests inject a
fake, and a deterministic board may pass guest time).  A request that would
be allowed within SLACK seconds is allowed now and pays with a hair of debt:
float rounding in a caller's deadline arithmetic (seconds to ticks and
back) then can never wake a caller just short of the deadline again and
again without progress.

Not thread-safe: used from the thread that runs the machine.
"""

import math
import time
from collections.abc import Callable

Clock = Callable[[], float]

# Seconds: see the module docstring.  Far below any interval a device waits.
SLACK = 1e-6


def _check_rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"rate limit {name}={value!r} must be a finite number >= 0 (0 = unlimited)")
    return float(value)


class TokenBucket:
    """`rate_per_sec` tokens per second, at most `burst` held (default: one
    second's worth).  Rate 0: unlimited."""

    __slots__ = ("rate", "size", "tokens", "clock", "_last")

    def __init__(self, rate_per_sec: float, burst: float | None = None, clock: Clock = time.monotonic) -> None:
        self.rate = _check_rate("rate_per_sec", rate_per_sec)
        size = self.rate if burst is None else _check_rate("burst", burst)
        if self.rate and not size:
            raise ValueError(f"a token bucket of {self.rate} per second needs a burst > 0")
        self.size = size
        self.tokens = size            # starts full; negative while in debt
        self.clock = clock
        self._last = clock() if self.rate else 0.0

    @property
    def unlimited(self) -> bool:
        return not self.rate

    def refill(self, now: float) -> None:
        """Add what flowed in since the last refill (never above `size`)."""
        if now > self._last:
            self.tokens = min(self.size, self.tokens + (now - self._last) * self.rate)
            self._last = now
        elif now < self._last:
            # A clock that went back (guest time after a restore): no time
            # has passed, and nothing waits for the old time to come again.
            self._last = now

    def can_take(self, n: float) -> bool:
        """Enough tokens (after `refill`) for a request costing `n`?"""
        if n <= 0 or not self.rate:
            return True
        return min(n, self.size) - self.tokens <= self.rate * SLACK

    def take(self, n: float) -> None:
        """Pay `n` (after `can_take` said yes); may go into debt."""
        if n > 0 and self.rate:
            self.tokens -= n

    def ready_at(self, n: float) -> float:
        """When (clock seconds) a request costing `n` can pass, if nothing
        else takes tokens meanwhile; -inf when it can pass at any time."""
        if n <= 0 or not self.rate:
            return -math.inf
        deficit = min(n, self.size) - self.tokens
        return self._last + max(0.0, deficit) / self.rate

    def try_consume(self, n: float) -> bool:
        """Take `n` tokens now if the bucket allows it."""
        if n > 0 and self.rate:
            self.refill(self.clock())
            if not self.can_take(n):
                return False
            self.tokens -= n
        return True


class RateLimiter:
    """A bytes bucket and an operations bucket (0 = unlimited).  Bursts
    default to one second's worth of each."""

    def __init__(self, bytes_per_sec: float = 0, ops_per_sec: float = 0, *,
                 bytes_burst: float | None = None, ops_burst: float | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.bytes = TokenBucket(bytes_per_sec, bytes_burst, clock)
        self.ops = TokenBucket(ops_per_sec, ops_burst, clock)
        self._refused: int | None = None     # bytes of the last request refused
        # Totals, for statistics and tests.
        self.passed_ops = 0
        self.passed_bytes = 0
        self.refusals = 0

    @property
    def unlimited(self) -> bool:
        return self.bytes.unlimited and self.ops.unlimited

    def try_consume(self, nbytes: int) -> bool:
        """One operation of `nbytes`: pay both buckets and return True, or
        pay nothing and return False (then see `next_ready`)."""
        b, o = self.bytes, self.ops
        if b.rate or o.rate:
            now = self.clock()
            b.refill(now)
            o.refill(now)
            if not (b.can_take(nbytes) and o.can_take(1)):
                self._refused = nbytes
                self.refusals += 1
                return False
            b.take(nbytes)
            o.take(1)
        self._refused = None
        self.passed_ops += 1
        self.passed_bytes += nbytes
        return True

    def next_ready(self, nbytes: int | None = None) -> float | None:
        """When (clock seconds) an operation of `nbytes` can pass, if nothing
        else takes tokens meanwhile.  Without `nbytes`: for the last refused
        request, or None when the last request passed (or the limiter is
        unlimited).  The time may already be past."""
        n = self._refused if nbytes is None else nbytes
        if n is None or self.unlimited:
            return None
        return max(self.bytes.ready_at(n), self.ops.ready_at(1))

    def due(self, deadline: float) -> bool:
        """Has `deadline` (from `next_ready`) come?  Half of SLACK early
        counts, so a caller woken by rounding just short of it makes
        progress (and `try_consume` then allows the request)."""
        return self.clock() + SLACK / 2 >= deadline


class QueueGate:
    """One device queue's side of a `RateLimiter`: the queue stops when a
    request is refused and goes on once the limiter says it may
    (`ready_at`, in the limiter's clock; None while not throttled).  Each
    throttled direction of a device has one, so the three copies of this
    bookkeeping (disk, net transmit, net receive) are one."""

    __slots__ = ("limiter", "ready_at")

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.ready_at: float | None = None

    def waiting(self) -> bool:
        """Still throttled?  A deadline that has come is cleared."""
        if self.ready_at is None:
            return False
        if not self.limiter.due(self.ready_at):
            return True
        self.ready_at = None
        return False

    def take_due(self) -> bool:
        """For the board's poll: True (and cleared) when a throttled queue
        may go on now; False when it is not throttled or not yet due.
        Cleared before the work, so a device that cannot run (needs reset)
        keeps no deadline in the past and the board can still sleep."""
        if self.ready_at is not None and self.limiter.due(self.ready_at):
            self.ready_at = None
            return True
        return False

    def admit(self, nbytes: int) -> bool:
        """Pay for one request of `nbytes`; when refused, remember when it can go."""
        if self.limiter.try_consume(nbytes):
            return True
        self.ready_at = self.limiter.next_ready(nbytes)
        return False

    def recheck(self) -> None:
        """Look at the queue on the next poll (after a restore, requests held
        back are on the ring and the driver will not kick for them again)."""
        self.ready_at = self.limiter.clock()

    def clear(self) -> None:
        """A device reset: no deadline (the buckets stay: a reset buys no burst)."""
        self.ready_at = None


def make_rate_limiter(bytes_per_sec: float = 0, ops_per_sec: float = 0, *,
                      clock: Clock = time.monotonic) -> RateLimiter | None:
    """A limiter for these rates, or None when both are 0 (unlimited), so a
    device keeps its fast path."""
    limiter = RateLimiter(bytes_per_sec, ops_per_sec, clock=clock)
    return None if limiter.unlimited else limiter
