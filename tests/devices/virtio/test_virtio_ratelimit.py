"""Rate-limited virtio-blk and virtio-net (vmkit/devices/ratelimit.py), driven
through the virtio-mmio transport like the other device tests, on a fake
clock; `drive` plays the board: sleep to next_deadline(), poll()."""

import os

import pytest
from virtio_harness import RAM_BASE, Driver, RawFile

from vmkit.devices.ratelimit import RateLimiter
from vmkit.devices.virtio.block import Req, VirtioBlock
from vmkit.devices.virtio.device import STATUS_DEVICE_NEEDS_RESET
from vmkit.devices.virtio.mmio import Reg, VirtioMmio
from vmkit.devices.virtio.net import HDR, RECEIVEQ, TRANSMITQ, VirtioNet
from vmkit.devices.virtio.queue import Virtqueue
from tests.devices.virtio.test_virtio_block import request_buffers

SECTORS = 256
SIZE = SECTORS * 512
MAC = bytes.fromhex("525400123456")
RX_BUF = 1526


class FakeClock:
    def __init__(self, t: float = 5000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(SIZE))
    return path


def drive(drv, clock, collect, want: int, *, max_steps: int = 100_000) -> list[tuple[float, object]]:
    """The board's loop for a throttled device: look a little before the
    next deadline (nothing may complete), then at it, poll, and collect.
    Returns (time, item) for every item `collect()` returns, until `want`."""
    events = [(clock.t, item) for item in collect()]
    for _ in range(max_steps):
        if len(events) >= want:
            break
        deadline = drv.device.next_deadline()
        assert deadline is not None, f"{len(events)} of {want} done and no deadline: the device is stuck"
        if deadline - 0.001 > clock.t:
            clock.t = deadline - 0.001
            drv.device.poll()
            assert collect() == [], "completed before its deadline"
        clock.t = max(clock.t, deadline)
        drv.device.poll()
        events += [(clock.t, item) for item in collect()]
    else:
        raise AssertionError("no progress")
    return events


def assert_never_early(times: list[float], start: float, rate: float, burst: float, cost=None) -> None:
    """What completed by time t is at most burst + rate * t (plus the one
    request that may go into debt)."""
    done = 0
    for k, t in enumerate(times):
        n = 1 if cost is None else cost[k]
        done += n
        assert done <= burst + rate * (t - start) + n + 1e-6 * rate, (k, t - start)


# --- virtio-blk ------------------------------------------------------------------------------------------
def blk(image, limiter, ram_size: int = 4 << 20):
    drv = Driver(VirtioBlock(image, rate_limiter=limiter), ram_size=ram_size)
    drv.start()
    return drv


def post(drv, rtype, sector, *, out: bytes = b"", in_len: int = 0) -> tuple[int, int | None, int]:
    """One request in an indirect chain (one ring slot); (head, data, status)."""
    bufs, data, status = request_buffers(drv, rtype, sector, out, in_len)
    return drv.queues[0].add_indirect(bufs), data, status


@pytest.mark.parametrize("burst", [None, 1])
def test_block_ops_limit_ten_seconds_of_requests(disk, clock, burst):
    n_per_sec = 20
    limiter = RateLimiter(ops_per_sec=n_per_sec, ops_burst=burst, clock=clock)
    drv = blk(RawFile(disk), limiter)
    q = drv.queues[0]
    raw = disk.read_bytes()
    reqs = [post(drv, Req.IN, (7 * i) % SECTORS, in_len=512) for i in range(10 * n_per_sec)]
    start = clock.t
    drv.kick()
    bucket = n_per_sec if burst is None else burst

    def collect():
        got = q.collect()
        if got:
            assert drv.ack_interrupt() & 1          # each batch interrupts the guest
            q.set_used_event(q.last_used)           # as Linux re-arms with EVENT_IDX
        return got

    events = drive(drv, clock, collect, len(reqs))
    assert [t for t, _ in events[:bucket + 1]] == [start] * bucket + [events[bucket][0]]
    assert events[bucket][0] > start                 # the burst at once, then the rate
    # In order, each once, with the right data.
    assert [head for _, (head, _) in events] == [head for head, _, _ in reqs]
    for i, (head, data, status) in enumerate(reqs):
        sector = (7 * i) % SECTORS
        assert drv.ram.read(status, 1) == b"\0"
        assert drv.ram.read(data, 512) == raw[sector * 512:(sector + 1) * 512]
    assert all(length == 513 for _, (_, length) in events)
    times = [t for t, _ in events]
    assert_never_early(times, start, n_per_sec, bucket)
    assert times[-1] - start == pytest.approx((len(reqs) - bucket) / n_per_sec, rel=0.02)
    # Nothing more, ever.
    clock.t += 100
    drv.device.poll()
    drv.kick()
    assert q.collect() == [] and drv.device.next_deadline() is None


def test_block_kick_and_early_poll_while_throttled_do_nothing(disk, clock):
    limiter = RateLimiter(ops_per_sec=1, ops_burst=1, clock=clock)
    drv = blk(RawFile(disk), limiter)
    q = drv.queues[0]
    for s in range(3):
        post(drv, Req.IN, s, in_len=512)
    drv.kick()
    assert len(q.collect()) == 1
    assert drv.device.next_deadline() == pytest.approx(clock.t + 1)
    post(drv, Req.IN, 3, in_len=512)
    drv.kick()                                      # throttled: not even a look at the ring
    clock.t += 0.5
    drv.device.poll()
    drv.kick()
    assert q.collect() == []
    assert drv.device.queues[0].last_avail_idx == 1 and drv.device.queues[0].in_flight == 0
    clock.t += 0.5
    drv.device.poll()
    assert len(q.collect()) == 1


def test_block_byte_limit_holds_throughput_and_order(disk, clock):
    rate = 64 * 1024
    limiter = RateLimiter(bytes_per_sec=rate, clock=clock)
    drv = blk(RawFile(disk), limiter)
    q = drv.queues[0]
    # Writes and read-backs of the same sectors, interleaved: a read sees the
    # write before it only if the order holds.
    reqs, payloads = [], {}
    for i in range(50):
        sector = 8 * (i % (SECTORS // 8))
        payload = os.urandom(4096)
        payloads[i] = payload
        reqs.append(("w", post(drv, Req.OUT, sector, out=payload)))
        reqs.append(("r", post(drv, Req.IN, sector, in_len=4096)))
    start = clock.t
    drv.kick()
    events = drive(drv, clock, q.collect, len(reqs))
    assert [head for _, (head, _) in events] == [r[1][0] for r in reqs]
    for i in range(50):
        (_, (_, _, wst)), (_, (_, rdata, rst)) = reqs[2 * i], reqs[2 * i + 1]
        assert drv.ram.read(wst, 1) == b"\0" and drv.ram.read(rst, 1) == b"\0"
        assert drv.ram.read(rdata, 4096) == payloads[i]
    times = [t for t, _ in events]
    assert_never_early(times, start, rate, rate, cost=[4096] * len(reqs))
    total = 4096 * len(reqs)
    assert times[-1] - start == pytest.approx((total - rate) / rate, rel=0.02)
    assert limiter.passed_bytes == total and limiter.passed_ops == len(reqs)


def test_block_request_bigger_than_the_burst(disk, clock):
    limiter = RateLimiter(bytes_per_sec=4096, clock=clock)      # burst: 4 KiB
    drv = blk(RawFile(disk), limiter)
    q = drv.queues[0]
    start = clock.t
    big = post(drv, Req.IN, 0, in_len=64 * 1024)
    small = post(drv, Req.IN, 200, in_len=512)
    drv.kick()
    events = drive(drv, clock, q.collect, 2)
    assert [head for _, (head, _) in events] == [big[0], small[0]]
    assert events[0][0] == start                                 # a full bucket lets it through
    # Then the 60 KiB of debt and the small request's 512 bytes.
    assert events[1][0] - start == pytest.approx((60 * 1024 + 512) / 4096)
    assert drv.ram.read(big[1], 64 * 1024) == disk.read_bytes()[:64 * 1024]


def test_block_flush_costs_an_op_only(disk, clock):
    limiter = RateLimiter(bytes_per_sec=1024, ops_per_sec=100, clock=clock)
    drv = blk(RawFile(disk), limiter)
    q = drv.queues[0]
    post(drv, Req.OUT, 0, out=bytes(8192))                       # 7 KiB of debt
    flush = post(drv, Req.FLUSH, 0)
    drv.kick()
    assert [head for head, _ in q.collect()] == [0, flush[0]]   # the flush is not held by the debt


def test_block_reset_while_throttled(disk, clock):
    limiter = RateLimiter(ops_per_sec=1, ops_burst=1, clock=clock)
    drv = blk(RawFile(disk), limiter)
    for s in range(5):
        post(drv, Req.IN, s, in_len=512)
    drv.kick()
    assert drv.device.next_deadline() is not None
    drv.w32(Reg.STATUS, 0)                                       # the driver resets the device
    assert drv.device.next_deadline() is None
    clock.t += 10
    drv.device.poll()                                            # nothing to take up
    drv.start()                                                  # fresh rings
    q = drv.queues[0]
    req = post(drv, Req.IN, 9, in_len=512)
    drv.kick()
    assert q.collect() == [(req[0], 513)]                        # only the new one, once
    assert q.used_idx() == 1


def test_block_save_restore_while_throttled(disk, clock):
    limiter = RateLimiter(ops_per_sec=2, ops_burst=1, clock=clock)
    image = RawFile(disk)
    drv = blk(image, limiter)
    q = drv.queues[0]
    reqs = [post(drv, Req.IN, s, in_len=512) for s in range(6)]
    drv.kick()
    assert len(q.collect()) == 1
    state = drv.mmio.save()
    # Another process picks the VM up: new device, new transport, same RAM.
    other = VirtioMmio(VirtioBlock(image, rate_limiter=limiter), drv.ram.array, RAM_BASE, drv._irq)
    other.restore(state)
    drv.mmio, drv.device = other, other.device
    events = drive(drv, clock, q.collect, 5)                     # nobody kicks: poll() alone
    assert [head for _, (head, _) in events] == [r[0] for r in reqs[1:]]
    assert q.used_idx() == 6


def test_block_needs_reset_leaves_no_deadline_in_the_past(disk, clock):
    limiter = RateLimiter(ops_per_sec=1, ops_burst=1, clock=clock)
    drv = blk(RawFile(disk), limiter)
    for s in range(3):
        post(drv, Req.IN, s, in_len=512)
    drv.kick()
    drv.mmio.set_needs_reset()
    clock.t += 5
    drv.device.poll()
    assert drv.device.next_deadline() is None                    # else the board would spin
    assert drv.status & STATUS_DEVICE_NEEDS_RESET


def test_block_without_a_limiter_has_no_deadline(disk):
    drv = blk(RawFile(disk), None)
    post(drv, Req.IN, 0, in_len=512)
    drv.kick()
    assert len(drv.queues[0].collect()) == 1
    drv.device.poll()
    assert drv.device.next_deadline() is None


def test_undo_pop_gives_the_chain_back():
    drv = Driver(VirtioBlock(_NullImage()), ram_size=1 << 20)
    drv.start()
    q: Virtqueue = drv.device.queues[0]
    post(drv, Req.IN, 0, in_len=512)
    post(drv, Req.IN, 1, in_len=512)
    first = q.pop()
    q.undo_pop()
    assert q.in_flight == 0 and q.last_avail_idx == 0
    assert drv.queues[0].avail_event() == 0                      # EVENT_IDX: as if never popped
    again = q.pop()
    assert again.head == first.head and bytes(again.readable[0]) == bytes(first.readable[0])
    assert q.pop().head != first.head and q.pop() is None


class _NullImage:
    virtual_size = SIZE
    readonly = False

    def read_into(self, offset, buf):
        buf[:] = bytes(len(buf))

    def write_from(self, offset, buf):
        pass

    def flush(self):
        pass


# --- virtio-net ------------------------------------------------------------------------------------------
from tests.devices.virtio.test_virtio_net import FakeBackend, frame  # noqa: E402 (the net fakes)


def nic(clock, **kw):
    backend = FakeBackend()
    drv = Driver(VirtioNet(backend, MAC, **kw), ram_size=4 << 20)
    drv.start()
    return drv, backend


def post_tx(drv, data: bytes) -> int:
    """Header and frame in one descriptor (Linux with any_header_sg)."""
    buf = bytes(HDR.size) + data
    return drv.queues[TRANSMITQ].add([(drv.ram.buf(buf), len(buf), False)])


def post_rx(drv, count: int) -> list[int]:
    q = drv.queues[RECEIVEQ]
    bufs = [drv.ram.buf(size=RX_BUF) for _ in range(count)]
    for b in bufs:
        q.add([(b, RX_BUF, True)])
    drv.kick(RECEIVEQ)
    return bufs


def test_net_tx_packet_limit(clock):
    pps = 25
    limiter = RateLimiter(ops_per_sec=pps, clock=clock)
    drv, backend = nic(clock, tx_rate_limiter=limiter)
    frames = [frame(60 + i % 200, tag=i) for i in range(10 * pps)]
    for f in frames:
        post_tx(drv, f)
    start = clock.t
    drv.kick(TRANSMITQ)
    assert len(backend.sent) == pps                              # the burst

    def collect():
        new = backend.sent[collect.seen:]
        collect.seen = len(backend.sent)
        return new
    collect.seen = 0
    events = drive(drv, clock, collect, len(frames))
    assert [f for _, f in events] == frames                      # in order, each once
    times = [t for t, _ in events]
    assert_never_early(times, start, pps, pps)
    assert times[-1] - start == pytest.approx((len(frames) - pps) / pps, rel=0.02)
    assert drv.device.counters["tx_frames"] == len(frames)
    q = drv.queues[TRANSMITQ]
    assert len(q.collect()) == len(frames)                       # every chain went back


def test_net_tx_byte_limit(clock):
    rate = 100_000
    limiter = RateLimiter(bytes_per_sec=rate, clock=clock)
    drv, backend = nic(clock, tx_rate_limiter=limiter)
    frames = [frame(1000, tag=i) for i in range(200)]            # 200 kB
    for f in frames:
        post_tx(drv, f)
    start = clock.t
    drv.kick(TRANSMITQ)

    def collect():
        new = backend.sent[collect.seen:]
        collect.seen = len(backend.sent)
        return new
    collect.seen = 0
    events = drive(drv, clock, collect, len(frames))
    assert [f for _, f in events] == frames
    times = [t for t, _ in events]
    assert_never_early(times, start, rate, rate, cost=[1000] * len(frames))
    assert times[-1] - start == pytest.approx((200 * 1000 - rate) / rate, rel=0.02)


def test_net_rx_limit_delivers_everything_in_order(clock):
    pps = 30
    limiter = RateLimiter(ops_per_sec=pps, clock=clock)
    drv, _ = nic(clock, rx_rate_limiter=limiter)
    dev = drv.device
    frames = [frame(100 + i, tag=i) for i in range(8 * pps)]
    assert all(dev.deliver(f) for f in frames)
    bufs = post_rx(drv, len(frames))                              # the notify moves the burst
    start = clock.t
    q = drv.queues[RECEIVEQ]
    events = drive(drv, clock, q.collect, len(frames))
    heads = [head for _, (head, _) in events]
    assert heads == sorted(heads)                                 # posted order
    for (_, (head, length)), f in zip(events, frames):
        assert length == HDR.size + len(f)
        assert drv.ram.read(bufs[head] + HDR.size, len(f)) == f
    times = [t for t, _ in events]
    assert_never_early(times, start, pps, pps)
    assert times[-1] - start == pytest.approx((len(frames) - pps) / pps, rel=0.02)
    assert dev.rx_pending == 0
    assert not any(v for k, v in dev.counters.items() if k.startswith("rx_dropped"))


def test_net_rx_limit_only_the_full_backlog_drops(clock):
    limiter = RateLimiter(ops_per_sec=1, ops_burst=1, clock=clock)
    drv, _ = nic(clock, rx_rate_limiter=limiter, rx_backlog_frames=8)
    dev = drv.device
    post_rx(drv, 16)
    results = [dev.deliver(frame(tag=i)) for i in range(10)]
    dev.poll()
    assert results == [True] * 8 + [False] * 2
    assert dev.counters["rx_dropped_full"] == 2
    q = drv.queues[RECEIVEQ]
    assert len(q.collect()) == 1                                  # the burst of one
    events = drive(drv, clock, q.collect, 7)
    assert [t - events[0][0] for t, _ in events] == pytest.approx(list(range(7)), abs=1e-6)
    assert dev.counters["rx_frames"] == 8 and dev.counters["rx_dropped_full"] == 2


def test_net_rx_throttled_without_buffers_then_buffers(clock):
    limiter = RateLimiter(ops_per_sec=10, ops_burst=1, clock=clock)
    drv, _ = nic(clock, rx_rate_limiter=limiter)
    dev = drv.device
    for i in range(3):
        dev.deliver(frame(tag=i))
    dev.poll()
    assert dev.next_deadline() is None                            # waiting for buffers, not the limiter
    post_rx(drv, 3)
    q = drv.queues[RECEIVEQ]
    assert len(q.collect()) == 1
    assert dev.next_deadline() == pytest.approx(clock.t + 0.1)
    assert len(drive(drv, clock, q.collect, 2)) == 2


def test_net_both_directions_next_deadline_is_the_earlier(clock):
    tx = RateLimiter(ops_per_sec=1, ops_burst=1, clock=clock)
    rx = RateLimiter(ops_per_sec=4, ops_burst=1, clock=clock)
    drv, backend = nic(clock, tx_rate_limiter=tx, rx_rate_limiter=rx)
    dev = drv.device
    for i in range(3):
        post_tx(drv, frame(tag=i))
        dev.deliver(frame(tag=100 + i))
    drv.kick(TRANSMITQ)
    post_rx(drv, 3)
    assert len(backend.sent) == 1 and dev.rx_pending == 2
    assert dev.next_deadline() == pytest.approx(clock.t + 0.25)
    clock.t += 0.25
    dev.poll()
    assert len(backend.sent) == 1 and dev.rx_pending == 1
    clock.t += 0.75
    dev.poll()
    assert len(backend.sent) == 2 and dev.rx_pending == 0
    assert dev.next_deadline() == pytest.approx(clock.t + 1)     # only tx left


def test_net_reset_while_throttled(clock):
    tx = RateLimiter(ops_per_sec=1, ops_burst=1, clock=clock)
    drv, backend = nic(clock, tx_rate_limiter=tx)
    for i in range(4):
        post_tx(drv, frame(tag=i))
    drv.kick(TRANSMITQ)
    assert len(backend.sent) == 1 and drv.device.next_deadline() is not None
    drv.w32(Reg.STATUS, 0)
    assert drv.device.next_deadline() is None
    clock.t += 10
    drv.device.poll()
    assert len(backend.sent) == 1                                 # the old ring is gone
    drv.start()
    post_tx(drv, frame(tag=9))
    drv.kick(TRANSMITQ)
    assert backend.sent[-1] == frame(tag=9) and len(backend.sent) == 2


def test_net_tx_needs_reset_leaves_no_deadline_in_the_past(clock):
    tx = RateLimiter(ops_per_sec=1, ops_burst=1, clock=clock)
    drv, backend = nic(clock, tx_rate_limiter=tx)
    for i in range(3):
        post_tx(drv, frame(tag=i))
    drv.kick(TRANSMITQ)
    drv.mmio.set_needs_reset()
    clock.t += 5
    drv.device.poll()
    assert drv.device.next_deadline() is None and len(backend.sent) == 1


def test_net_without_limiters_has_no_deadline(clock):
    drv, backend = nic(clock)
    post_tx(drv, frame())
    drv.kick(TRANSMITQ)
    drv.device.deliver(frame())
    drv.device.poll()
    assert len(backend.sent) == 1 and drv.device.next_deadline() is None
