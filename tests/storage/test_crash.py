"""Crash safety of qcow2 writes (RELIABILITY.md, "Disk images (qcow2)").

Two tests:
- test_kill_9: a writer process does random allocating writes with periodic
  flushes and is SIGKILLed at random moments, twice per image (the second
  life reopens the crashed image). Afterwards `qemu-img check` finds no
  corruption (leaks allowed), vmkit's check agrees, vmkit and QEMU read the
  same disk, and every write the guest saw flushed reads back.
  VMKIT_CRASH_ITERATIONS sets the number of images (default 7, one per
  variant).
- test_power_loss_order: SIGKILL keeps the page cache, so it cannot show a
  missing fdatasync. Here every host write and sync of a workload is
  recorded, and crash images are built from everything before the last sync
  plus a random subset of the 4 KiB pages written since (what a power cut
  may leave), at every sync and at random points. Each must check clean
  (leaks allowed) and hold every flushed write. VMKIT_POWER_LOSS_POINTS sets
  the random points per case (default 25).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vmkit.storage import create_image, open_image
from vmkit.storage.check import check_image
from vmkit.storage.hostfile import HostFile
from vmkit.storage.qcow2_create import create_qcow2

from .conftest import qemu_check, qemu_raw, read_all
from .crash_writer import operation, perform

pytestmark = pytest.mark.usefixtures("qemu_img")

WRITER = Path(__file__).with_name("crash_writer.py")
VARIANTS = [
    {"name": "default"},
    {"name": "lazy refcounts", "lazy": True, "dirty_ok": True},
    {"name": "512-byte clusters", "cluster": 512, "size": 4 << 20},
    {"name": "backing file", "backing": True},
    {"name": "discards and zeroes", "mode": "mixed"},
    {"name": "after a snapshot", "snapshot": True, "mode": "mixed"},
    {"name": "snapshot create and delete", "mode": "snap", "dirty_ok": True},
]


class Model:
    """The guest-visible disk: bytes every flushed operation defines, and a mask
    of bytes an unflushed operation may or may not have changed."""

    def __init__(self, initial: bytes, cluster: int) -> None:
        self.data = np.frombuffer(bytearray(initial), dtype=np.uint8).copy()
        self.unsure = np.zeros(len(initial), dtype=bool)
        self.cluster = cluster

    def apply(self, op, certain: bool) -> None:
        kind, off, x = op
        if kind not in ("write", "zero", "discard"):
            return                      # snapshots leave the disk as it is
        n = len(x) if kind == "write" else x
        if kind == "discard":
            # Whole clusters read as zeros afterwards (version 3); the rest is untouched.
            a, b = -(-off // self.cluster) * self.cluster, (off + n) // self.cluster * self.cluster
            if b <= a:
                return
            off, n = a, b - a
        if certain:
            self.data[off:off + n] = np.frombuffer(x, dtype=np.uint8) if kind == "write" else 0
            self.unsure[off:off + n] = False
        else:
            self.unsure[off:off + n] = True

    def check(self, got: bytes, what: str) -> None:
        g = np.frombuffer(got, dtype=np.uint8)
        bad = np.nonzero((g != self.data) & ~self.unsure)[0]
        assert not bad.size, f"{what}: {bad.size} flushed bytes lost, first at {int(bad[0]):#x}"


def _make_image(tmp: Path, v: dict, seed: int) -> tuple[Path, bytes]:
    size, cluster = v.get("size", 64 << 20), v.get("cluster", 65536)
    path = tmp / "crash.qcow2"
    initial = bytes(size)
    if v.get("backing"):
        rnd = random.Random(seed)
        base = bytearray(size)
        for _ in range(30):
            off = rnd.randrange(0, size - 100000)
            base[off:off + 100000] = rnd.randbytes(100000)
        (tmp / "base.raw").write_bytes(base)
        create_qcow2(str(path), None, backing="base.raw", backing_format="raw", cluster_size=cluster)
        initial = bytes(base)
    else:
        create_qcow2(str(path), size, cluster_size=cluster, lazy_refcounts=v.get("lazy", False),
                     refcount_bits=64 if cluster == 512 else 16)
    if v.get("snapshot"):
        # Every table and cluster shared with a snapshot: writes copy L2 tables too.
        rnd = random.Random(seed)
        data = bytearray(size)
        with open_image(path, "qcow2") as img:
            for off in range(0, size, 3 * cluster):
                chunk = rnd.randbytes(cluster)
                img.write_from(off, chunk)
                data[off:off + cluster] = chunk
            img.snapshot_create("before")
        initial = bytes(data)
    return path, initial


def _run_writer(path: Path, journal: Path, seed: int, life: int, flush_every: int, mode: str,
                rnd: random.Random) -> int:
    """Start the writer, kill -9 it at a random moment, return the last flushed op count."""
    journal.write_text("")
    proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(journal), str(seed), str(life),
                             str(flush_every), mode], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while "ready" not in journal.read_text():
        if proc.poll() is not None:
            raise AssertionError(f"writer died: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, "writer did not start"
        time.sleep(0.01)
    time.sleep(rnd.uniform(0.05, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the writer stopped by itself"
    lines = journal.read_text().split()
    return int(lines[-1]) if lines[-1] != "ready" else 0


def test_kill_9(tmp_path):
    iterations = int(os.environ.get("VMKIT_CRASH_ITERATIONS", "7"))
    rnd = random.Random(int(os.environ.get("VMKIT_CRASH_SEED", "1234")))
    flush_every = 16
    for it in range(iterations):
        v = VARIANTS[it % len(VARIANTS)]
        seed = rnd.randrange(1 << 30)
        work = tmp_path / f"it{it}"
        work.mkdir()
        path, initial = _make_image(work, v, seed)
        size, cluster = len(initial), v.get("cluster", 65536)
        model = Model(initial, cluster)
        mode = v.get("mode", "plain")
        for life in range(2):
            flushed = _run_writer(path, work / "journal", seed, life, flush_every, mode, rnd)
            for i in range(flushed + flush_every):
                model.apply(operation(seed, life, i, size, cluster, mode), i < flushed)
            what = f"iteration {it} ({v['name']}, seed {seed}), life {life}, {flushed} ops flushed"
            _reopen_if_dirty(path, v, what)
            rc, out = qemu_check(path)
            assert rc in (0, 3), f"{what}: qemu-img check:\n{out}"
            ours = check_image(str(path), "qcow2")
            assert ours.exit_code == rc, f"{what}: vmkit check {ours.exit_code}, qemu-img {rc}: {ours.messages[:5]}"
            got = read_all(path)
            assert got == qemu_raw(path, work), f"{what}: vmkit and qemu read different data"
            model.check(got, what)


def _reopen_if_dirty(path: Path, v: dict, what: str) -> None:
    """A dirty image (lazy refcounts, or a snapshot operation cut short) is
    repaired by opening it read-write; no other variant may leave one."""
    with open(path, "rb") as f:
        f.seek(72)
        dirty = f.read(8)[-1] & 1
    if dirty:
        assert v.get("dirty_ok"), f"{what}: the dirty bit is set"
        open_image(path, "qcow2").close()


# ---------------------------------------------------------------- power loss

class Recorder:
    """Records the host writes and syncs of one file (HostFile is patched)."""

    def __init__(self, monkeypatch, path: Path) -> None:
        self.events: list = []
        self.path = str(path)
        rec = self
        orig_write, orig_sync = HostFile.write, HostFile.sync
        orig_trunc, orig_punch, orig_zero = HostFile.truncate, HostFile.punch_hole, HostFile.write_zeroes

        def write(self, offset, data):
            orig_write(self, offset, data)
            if self.path == rec.path:
                rec.events.append(("w", offset, bytes(memoryview(data).cast("B"))))

        def sync(self):
            orig_sync(self)
            if self.path == rec.path:
                rec.events.append(("s",))

        def truncate(self, size):
            orig_trunc(self, size)
            if self.path == rec.path:
                rec.events.append(("t", size))

        def punch_hole(self, offset, length):
            done = orig_punch(self, offset, length)
            if done and self.path == rec.path:
                rec.events.append(("z", offset, length))
            return done

        def write_zeroes(self, offset, length, unmap=True):
            orig_zero(self, offset, length, unmap)
            if self.path == rec.path:
                rec.events.append(("z", offset, length))
        monkeypatch.setattr(HostFile, "write", write)
        monkeypatch.setattr(HostFile, "sync", sync)
        monkeypatch.setattr(HostFile, "truncate", truncate)
        monkeypatch.setattr(HostFile, "punch_hole", punch_hole)
        monkeypatch.setattr(HostFile, "write_zeroes", write_zeroes)


def _apply(buf: bytearray, ev) -> None:
    if ev[0] == "w":
        _, off, data = ev
        if off + len(data) > len(buf):
            buf.extend(bytes(off + len(data) - len(buf)))
        buf[off:off + len(data)] = data
    elif ev[0] == "t":
        del buf[ev[1]:]
        buf.extend(bytes(ev[1] - len(buf)))
    elif ev[0] == "z":
        _, off, n = ev
        end = min(off + n, len(buf))
        if end > off:
            buf[off:end] = bytes(end - off)


def _crash_image(initial: bytes, events: list, k: int, rnd: random.Random) -> bytearray:
    """The file a power cut after events[:k] may leave."""
    last_sync = max((i for i in range(k) if events[i][0] == "s"), default=-1)
    buf = bytearray(initial)
    for ev in events[:last_sync + 1]:
        _apply(buf, ev)
    for ev in events[last_sync + 1:k]:
        if ev[0] == "w":
            _, off, data = ev
            for p in range(0, len(data), 4096):     # pages reach the disk independently
                if rnd.random() < 0.5:
                    _apply(buf, ("w", off + p, data[p:p + 4096]))
        elif ev[0] != "s" and rnd.random() < 0.5:
            _apply(buf, ev)
    return buf


@pytest.mark.parametrize("variant", VARIANTS, ids=[v["name"] for v in VARIANTS])
def test_power_loss_order(tmp_path, monkeypatch, variant):
    v = dict(variant, size=variant.get("size", 4 << 20), cluster=variant.get("cluster", 4096))
    points = int(os.environ.get("VMKIT_POWER_LOSS_POINTS", "25"))
    rnd = random.Random(99)
    path, initial = _make_image(tmp_path, v, 5)
    size, cluster = len(initial), v["cluster"]
    start = path.read_bytes()
    rec = Recorder(monkeypatch, path)
    ops, op_start, flushes = [], [], []      # flushes: (event index when it returned, ops done)
    with open_image(path, "qcow2") as img:
        for i in range(120):
            op = operation(5, 0, i, size, cluster, v.get("mode", "plain"))
            op_start.append(len(rec.events))
            perform(img, op, i)
            ops.append(op)
            if i % 10 == 9:
                img.flush()
                flushes.append((len(rec.events), i + 1))
    monkeypatch.undo()
    events = rec.events
    crash = tmp_path / "crashed.qcow2"
    # Just before each sync is where a missing barrier shows; add random points.
    before_sync = [i for i, ev in enumerate(events) if ev[0] == "s"]
    if len(before_sync) > 2 * points:
        before_sync = sorted(rnd.sample(before_sync, 2 * points))
    crash_points = before_sync + [rnd.randrange(1, len(events) + 1) for _ in range(points)]
    for n, k in enumerate(crash_points):
        crash.write_bytes(_crash_image(start, events, k, rnd))
        flushed = max((done for at, done in flushes if at <= k), default=0)
        model = Model(initial, cluster)
        for i, op in enumerate(ops):
            if op_start[i] < k:
                model.apply(op, i < flushed)
        what = f"{v['name']}: crash after event {k}/{len(events)}, {flushed} ops flushed"
        _reopen_if_dirty(crash, v, what)
        ours = check_image(str(crash), "qcow2")
        assert ours.exit_code in (0, 3), f"{what}: {ours.messages[:5]}"
        if n % 8 == 0:
            rc, out = qemu_check(crash)
            assert rc == ours.exit_code, f"{what}: qemu-img check says {rc}:\n{out}"
        model.check(read_all(crash), what)


def test_create_image_helper_for_raw_base(tmp_path):
    # _make_image's raw base must be a valid raw image for the overlay.
    p = tmp_path / "r.raw"
    create_image(p, "raw", 4096)
    assert read_all(p, "raw") == bytes(4096)
