"""vmkit/devices/ratelimit.py: token buckets and the two-bucket rate limiter,
on a fake clock."""

import math
import random

import pytest

from vmkit.devices.ratelimit import SLACK, RateLimiter, TokenBucket, make_rate_limiter


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run_until(limiter: RateLimiter, clock: FakeClock, sizes) -> list[float]:
    """Push requests of `sizes` through, sleeping until next_ready() after
    each refusal (a device driven by its deadlines); their pass times."""
    times = []
    for n in sizes:
        for _ in range(3):                     # refused at most once, then at its time
            if limiter.try_consume(n):
                break
            ready = limiter.next_ready()
            assert ready is not None and ready > clock.t - SLACK
            clock.t = max(clock.t, ready)
        else:
            raise AssertionError(f"a {n}-byte request was refused at the time next_ready() gave")
        times.append(clock.t)
    return times


# --- unlimited ------------------------------------------------------------------------------------------
def test_unlimited_never_refuses_and_never_reads_the_clock():
    def clock():
        raise AssertionError("an unlimited limiter must not read the clock")
    limiter = RateLimiter(clock=clock)
    assert limiter.unlimited
    assert all(limiter.try_consume(n) for n in (0, 1, 1 << 30, 1 << 40))
    assert limiter.next_ready() is None and limiter.next_ready(1 << 40) is None
    assert limiter.passed_ops == 4 and limiter.refusals == 0
    assert make_rate_limiter(0, 0, clock=clock) is None


def test_unlimited_bucket_inside_a_limited_limiter():
    clock = FakeClock()
    limiter = RateLimiter(ops_per_sec=10, clock=clock)       # bytes unlimited
    assert not limiter.unlimited and limiter.bytes.unlimited
    assert all(limiter.try_consume(1 << 40) for _ in range(10))
    assert not limiter.try_consume(0)
    assert limiter.next_ready() == pytest.approx(clock.t + 0.1)
    assert isinstance(make_rate_limiter(100, 0, clock=clock), RateLimiter)


@pytest.mark.parametrize("kw", [{"bytes_per_sec": -1}, {"ops_per_sec": math.nan}, {"ops_per_sec": math.inf},
                                {"bytes_per_sec": True}, {"ops_per_sec": "10"},
                                {"ops_per_sec": 10, "ops_burst": 0}, {"bytes_per_sec": 1, "bytes_burst": -5}])
def test_bad_arguments_refused(kw):
    with pytest.raises(ValueError):
        RateLimiter(clock=FakeClock(), **kw)


# --- burst ------------------------------------------------------------------------------------------------
def test_default_burst_is_one_second():
    clock = FakeClock()
    limiter = RateLimiter(ops_per_sec=50, clock=clock)
    assert sum(limiter.try_consume(0) for _ in range(100)) == 50
    assert limiter.next_ready() == pytest.approx(clock.t + 1 / 50)
    clock.t += 0.5
    assert sum(limiter.try_consume(0) for _ in range(100)) == 25


def test_explicit_burst_and_refill_cap():
    clock = FakeClock()
    limiter = RateLimiter(bytes_per_sec=1000, bytes_burst=100, clock=clock)
    assert limiter.try_consume(100)
    assert not limiter.try_consume(1)
    assert limiter.next_ready() == pytest.approx(clock.t + 0.001)
    clock.t += 3600                                         # a long idle time refills only the burst
    assert limiter.try_consume(60) and limiter.try_consume(40)
    assert not limiter.try_consume(1)


def test_all_or_nothing():
    clock = FakeClock()
    limiter = RateLimiter(bytes_per_sec=1000, ops_per_sec=2, clock=clock)
    assert limiter.try_consume(400) and limiter.try_consume(400)
    assert not limiter.try_consume(100)                      # ops empty: bytes untouched
    assert limiter.bytes.tokens == pytest.approx(200)
    assert limiter.next_ready() == pytest.approx(clock.t + 0.5)
    clock.t += 0.5                                           # 1 op, 700 bytes
    assert not limiter.try_consume(900)                      # bytes short: the op is not taken
    assert limiter.ops.tokens == pytest.approx(1)
    assert limiter.next_ready() == pytest.approx(clock.t + 0.2)
    assert limiter.try_consume(700)
    assert limiter.next_ready() is None                      # the last request passed


def test_next_ready_for_a_given_size():
    clock = FakeClock()
    limiter = RateLimiter(bytes_per_sec=1000, clock=clock)
    assert limiter.next_ready(500) == clock.t                # could pass now
    assert limiter.try_consume(1000)
    assert limiter.next_ready(250) == pytest.approx(clock.t + 0.25)
    assert limiter.next_ready(5000) == pytest.approx(clock.t + 1.0)   # needs a full bucket


# --- requests bigger than the bucket -------------------------------------------------------------------
def test_big_request_passes_on_a_full_bucket_and_goes_into_debt():
    clock = FakeClock()
    limiter = RateLimiter(bytes_per_sec=1000, clock=clock)   # burst 1000
    assert limiter.try_consume(5000)                         # full bucket: passes
    assert limiter.bytes.tokens == pytest.approx(-4000)
    assert not limiter.try_consume(100)
    assert limiter.next_ready() == pytest.approx(clock.t + 4.1)   # the debt, then 100


def test_big_request_waits_for_a_full_bucket():
    clock = FakeClock()
    limiter = RateLimiter(bytes_per_sec=1000, clock=clock)
    assert limiter.try_consume(10)
    assert not limiter.try_consume(5000)
    assert limiter.next_ready() == pytest.approx(clock.t + 0.01)
    clock.t += 0.01
    assert limiter.try_consume(5000)


def test_big_requests_hold_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(bytes_per_sec=1000, clock=clock)
    start = clock.t
    times = run_until(limiter, clock, [10_000] * 20)
    # The first passes at once; each later one waits for the debt of the one before.
    assert times[0] == start
    assert times[-1] - start == pytest.approx(19 * 10, rel=1e-9)


def test_zero_byte_requests_ignore_byte_debt():
    clock = FakeClock()
    limiter = RateLimiter(bytes_per_sec=1000, ops_per_sec=100, clock=clock)
    assert limiter.try_consume(50_000)
    assert limiter.try_consume(0) and limiter.try_consume(0)   # flushes: only an op each
    assert not limiter.try_consume(1)


# --- steady state ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes", ["fixed", "random"])
def test_steady_state_byte_rate(sizes):
    rng = random.Random(7)
    clock = FakeClock()
    rate = 1_000_000
    limiter = RateLimiter(bytes_per_sec=rate, clock=clock)
    reqs = [4096] * 5000 if sizes == "fixed" else [rng.randrange(512, 128 * 1024, 512) for _ in range(500)]
    start = clock.t
    times = run_until(limiter, clock, reqs)
    # After the first second's burst, bytes pass at the rate.
    total = sum(reqs)
    assert (total - rate) / (times[-1] - start) == pytest.approx(rate, rel=0.02)
    # And never faster: what passed by time t is at most burst + rate * t + one request.
    done = 0
    for n, t in zip(reqs, times):
        done += n
        assert done <= rate + rate * (t - start) + n + 1e-6 * rate


def test_steady_state_op_rate_when_polled_on_a_tick():
    # A board that looks every 7 ms rather than sleeping to the deadline:
    # with the default one-second burst the bucket never overflows between
    # looks, so no tokens are lost and the rate holds.
    clock = FakeClock()
    limiter = RateLimiter(ops_per_sec=333, clock=clock)
    passed = []
    for _ in range(10_000):                                   # 70 s
        while limiter.try_consume(0):
            passed.append(clock.t)
        clock.t += 0.007
    measured = (len(passed) - 333) / (passed[-1] - passed[0])
    assert measured == pytest.approx(333, rel=0.02)


def test_a_burst_smaller_than_the_poll_interval_loses_tokens():
    # The flip side (documented): 1-op bucket, 333/s, looked at every 1 ms:
    # the bucket fills between looks and the overshoot is lost, 250/s.
    clock = FakeClock()
    limiter = RateLimiter(ops_per_sec=333, ops_burst=1, clock=clock)
    passed = 0
    for _ in range(10_000):
        passed += limiter.try_consume(0)
        clock.t += 0.001
    assert passed == pytest.approx(2500, abs=2)


def test_both_buckets_the_slower_one_wins():
    clock = FakeClock()
    limiter = RateLimiter(bytes_per_sec=100_000, ops_per_sec=1000, clock=clock)
    start = clock.t
    times = run_until(limiter, clock, [1000] * 3000)          # bytes allow 100 ops/s
    assert (3000 * 1000 - 100_000) / (times[-1] - start) == pytest.approx(100_000, rel=0.02)


def test_slack_covers_rounding_just_short_of_the_deadline():
    clock = FakeClock(1e6)                                    # large times: coarse floats
    limiter = RateLimiter(bytes_per_sec=3e9, clock=clock)
    assert limiter.try_consume(3_000_000_000)
    assert not limiter.try_consume(12345)
    ready = limiter.next_ready()
    clock.t = ready - SLACK / 4                               # a caller's rounding
    assert limiter.due(ready)
    assert limiter.try_consume(12345)
    clock.t = ready
    assert not limiter.due(limiter.next_ready(1 << 30) + SLACK)


def test_token_bucket_alone():
    clock = FakeClock()
    bucket = TokenBucket(10, burst=2, clock=clock)
    assert bucket.try_consume(1) and bucket.try_consume(1) and not bucket.try_consume(1)
    assert bucket.ready_at(1) == pytest.approx(clock.t + 0.1)
    clock.t += 0.1
    assert bucket.try_consume(1)
    free = TokenBucket(0, clock=clock)
    assert free.unlimited and free.try_consume(1 << 50) and free.ready_at(1) == -math.inf


def test_a_clock_that_goes_back_does_not_stall_the_bucket():
    clock = FakeClock(100.0)
    limiter = RateLimiter(ops_per_sec=10, ops_burst=1, clock=clock)
    assert limiter.try_consume(0) and not limiter.try_consume(0)
    clock.t = 3.0                                             # e.g. guest time after a restore
    assert not limiter.try_consume(0)
    assert limiter.next_ready() == pytest.approx(3.1)         # not 100.1
    clock.t = 3.1
    assert limiter.try_consume(0)
