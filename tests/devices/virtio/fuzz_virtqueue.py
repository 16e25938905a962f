#!/usr/bin/env python3
"""Fuzz target: virtio-mmio register sequences and hostile ring contents.

Each input is a program of operations on one virtio-mmio slot holding a
block device (over an in-memory image that can fail), an entropy device or
a console: raw register reads and writes, a driver-like setup with
fuzzer-chosen queue sizes and addresses, descriptors and available-ring
entries with fuzzer-chosen fields, raw bytes anywhere in guest RAM,
notifications, console input, save/restore.  A failure is any exception that
escapes the transport or the device, a broken invariant (the interrupt line
must equal InterruptStatus != 0; a device never holds more than a queue's
worth of chains), or a hang (libFuzzer's -timeout; SIGALRM in random mode).

Run:
    python tests/devices/virtio/fuzz_virtqueue.py --seconds 60           # atheris if installed
    python tests/devices/virtio/fuzz_virtqueue.py --seconds 60 --random  # plain random inputs
Extra arguments go to libFuzzer (e.g. a corpus directory, -jobs=2).
A crash found becomes a regression test: replay it with
    python tests/devices/virtio/fuzz_virtqueue.py --replay crash-FILE
"""

import argparse
import os
import random
import signal
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

RAM_BASE = 0x8000_0000
RAM_SIZE = 64 * 1024
HANG_SECONDS = 5

_mods = {}


def _import_targets() -> None:
    """Import the code under test (inside atheris.instrument_imports when fuzzing)."""
    from vmkit.devices import device
    from vmkit.devices.virtio import block, console, mmio, queue, rng
    from vmkit.devices.virtio import device as vdevice
    _mods.update(device=device, block=block, console=console, mmio=mmio, queue=queue, rng=rng,
                 vdevice=vdevice)


class ByteReader:
    """The subset of atheris.FuzzedDataProvider the target uses, over bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def remaining_bytes(self) -> int:
        return len(self.data) - self.pos

    def ConsumeBytes(self, n: int) -> bytes:  # noqa: N802 - atheris' name
        out = self.data[self.pos:self.pos + max(n, 0)]
        self.pos += len(out)
        return out

    def ConsumeIntInRange(self, lo: int, hi: int) -> int:  # noqa: N802
        span = hi - lo
        if span <= 0:
            return lo
        nbytes = (span.bit_length() + 7) // 8
        raw = int.from_bytes(self.ConsumeBytes(nbytes).ljust(nbytes, b"\0"), "little")
        return lo + raw % (span + 1)


class FlakyImage:
    """An in-memory disk whose calls fail when the fuzzer says so."""

    def __init__(self, size: int, readonly: bool) -> None:
        self.data = bytearray(size)
        self.virtual_size = size
        self.readonly = readonly
        self.fail_mask = 0

    def _maybe_fail(self, bit: int) -> None:
        if self.fail_mask & bit:
            raise OSError(5, "injected EIO") if bit & 0x15 else ValueError("injected image error")

    def read_into(self, offset, buf):
        self._maybe_fail(1)
        buf[:] = self.data[offset:offset + len(buf)]

    def write_from(self, offset, buf):
        self._maybe_fail(2)
        self.data[offset:offset + len(buf)] = buf

    def flush(self):
        self._maybe_fail(4)

    def discard(self, offset, length):
        self._maybe_fail(8)

    def write_zeroes(self, offset, length, may_unmap):
        self._maybe_fail(16)
        self.data[offset:offset + length] = bytes(length)


REGS = (0x000, 0x004, 0x008, 0x00C, 0x010, 0x014, 0x020, 0x024, 0x030, 0x034, 0x038, 0x044, 0x050,
        0x060, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094, 0x0A0, 0x0A4, 0x0AC, 0x0B0, 0x0C0, 0x0FC,
        0x100, 0x104, 0x108, 0x10C, 0x120, 0x138)


def run_program(data: bytes, fdp=None) -> None:
    """One fuzz input.  Raises on a failure."""
    import numpy as np

    mmio_mod = _mods["mmio"]
    fdp = fdp or ByteReader(data)
    ram = np.zeros(RAM_SIZE, dtype=np.uint8)
    irq = {"level": False}
    out = []

    kind = fdp.ConsumeIntInRange(0, 2)
    image = None
    if kind == 0:
        image = FlakyImage(fdp.ConsumeIntInRange(0, 8) * 512 + fdp.ConsumeIntInRange(0, 1) * 7,
                           bool(fdp.ConsumeIntInRange(0, 1)))
        dev = _mods["block"].VirtioBlock(image, serial=b"fuzz")
    elif kind == 1:
        dev = _mods["rng"].VirtioRng(source=lambda n: b"\xA5" * n)
    else:
        dev = _mods["console"].VirtioConsole(out.append)

    def set_irq(level):
        irq["level"] = level

    t = mmio_mod.VirtioMmio(dev, ram, RAM_BASE, set_irq)

    def addr_in_ram(align):
        if fdp.ConsumeIntInRange(0, 15) == 0:
            return fdp.ConsumeIntInRange(0, (1 << 64) - 1)
        return RAM_BASE + (fdp.ConsumeIntInRange(0, RAM_SIZE - 1) & ~(align - 1))

    def w32(off, val):
        t.write(off, 4, val & 0xFFFFFFFF)

    def setup():
        w32(0x070, 0)
        w32(0x070, 1)
        w32(0x070, 3)
        offered = t.read(0x010, 4)
        w32(0x014, 1)
        offered |= t.read(0x010, 4) << 32
        w32(0x014, 0)
        accept = offered & fdp.ConsumeIntInRange(0, (1 << 64) - 1) | (1 << 32)
        if fdp.ConsumeIntInRange(0, 7) == 0:
            accept = fdp.ConsumeIntInRange(0, (1 << 64) - 1)
        w32(0x024, 1)
        w32(0x020, accept >> 32)
        w32(0x024, 0)
        w32(0x020, accept)
        w32(0x070, t.read(0x070, 4) | 8)
        for qi in range(len(t.queues)):
            w32(0x030, qi)
            max_n = t.read(0x034, 4)
            num = 1 << fdp.ConsumeIntInRange(0, max(max_n.bit_length() - 1, 0))
            if fdp.ConsumeIntInRange(0, 7) == 0:
                num = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
            w32(0x038, num)
            for reg, align in ((0x080, 16), (0x090, 2), (0x0A0, 4)):
                a = addr_in_ram(align)
                w32(reg, a)
                w32(reg + 4, a >> 32)
            w32(0x044, 1)
        w32(0x070, t.read(0x070, 4) | 4)

    def some_queue():
        return t.queues[fdp.ConsumeIntInRange(0, len(t.queues) - 1)]

    def post_request():
        """A well-formed chain (header, data, status) in a ready queue, so
        that the devices' request paths get exercised too."""
        q = some_queue()
        d_off, a_off = q.desc_addr - RAM_BASE, q.driver_addr - RAM_BASE
        if not q.ready or q.num < 3 or not 0 <= d_off <= RAM_SIZE - 48 or not 0 <= a_off <= RAM_SIZE - 8:
            return
        hdr = fdp.ConsumeIntInRange(0, RAM_SIZE - 16)
        struct.pack_into("<IIQ", ram, hdr, (0, 1, 4, 8, 11, 13, 99)[fdp.ConsumeIntInRange(0, 6)], 0,
                         fdp.ConsumeIntInRange(0, 9))
        data = fdp.ConsumeIntInRange(0, RAM_SIZE - 1024)
        dlen = (0, 16, 20, 512, 1024, 100)[fdp.ConsumeIntInRange(0, 5)]
        dwrite = fdp.ConsumeIntInRange(0, 1) * 2
        status = fdp.ConsumeIntInRange(0, RAM_SIZE - 1)
        first = fdp.ConsumeIntInRange(0, q.num - 3)
        struct.pack_into("<QIHH", ram, d_off + 16 * first, RAM_BASE + hdr, 16, 1, first + 1)
        struct.pack_into("<QIHH", ram, d_off + 16 * (first + 1), RAM_BASE + data, dlen, 1 | dwrite, first + 2)
        struct.pack_into("<QIHH", ram, d_off + 16 * (first + 2), RAM_BASE + status, 1, 2, 0)
        if a_off + 4 + 2 * q.num + 2 <= RAM_SIZE:
            idx = struct.unpack_from("<H", ram, a_off + 2)[0]
            struct.pack_into("<H", ram, a_off + 4 + 2 * (idx % q.num), first)
            struct.pack_into("<H", ram, a_off + 2, (idx + 1) & 0xFFFF)
            w32(0x050, q.index)

    steps = 0
    while fdp.remaining_bytes() > 0 and steps < 200:
        steps += 1
        op = fdp.ConsumeIntInRange(0, 12)
        if op == 0:
            off = REGS[fdp.ConsumeIntInRange(0, len(REGS) - 1)]
            size = (1, 2, 4, 8)[fdp.ConsumeIntInRange(0, 3)] if fdp.ConsumeIntInRange(0, 3) == 0 else 4
            t.write(off + (fdp.ConsumeIntInRange(0, 3) if size != 4 else 0), size,
                    fdp.ConsumeIntInRange(0, (1 << (8 * size)) - 1))
        elif op == 1:
            off = REGS[fdp.ConsumeIntInRange(0, len(REGS) - 1)]
            size = (1, 2, 4, 8)[fdp.ConsumeIntInRange(0, 3)]
            value = t.read(off, size)
            assert isinstance(value, int) and 0 <= value < (1 << (8 * size)), (off, size, value)
        elif op == 2:
            setup()
        elif op in (3, 4):
            # A descriptor in a ready queue's table, or anywhere.
            q = some_queue()
            base = q.desc_addr - RAM_BASE
            i = fdp.ConsumeIntInRange(0, max(q.num, 1) - 1)
            addr = addr_in_ram(1)
            length = fdp.ConsumeIntInRange(0, 64) if fdp.ConsumeIntInRange(0, 3) else \
                fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
            flags = fdp.ConsumeIntInRange(0, 7) if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(0, 0xFFFF)
            nxt = fdp.ConsumeIntInRange(0, max(q.num, 1)) if fdp.ConsumeIntInRange(0, 7) else \
                fdp.ConsumeIntInRange(0, 0xFFFF)
            if op == 4:
                base = fdp.ConsumeIntInRange(0, RAM_SIZE - 16) & ~15
                i = 0
            off = base + 16 * i
            if 0 <= off <= RAM_SIZE - 16:
                struct.pack_into("<QIHH", ram, off, addr & ((1 << 64) - 1), length, flags, nxt & 0xFFFF)
        elif op == 5:
            # Make entries available: avail.ring[idx % num] = head; idx += k.
            q = some_queue()
            off = q.driver_addr - RAM_BASE
            if q.ready and 0 <= off <= RAM_SIZE - (6 + 2 * q.num):
                idx = struct.unpack_from("<H", ram, off + 2)[0]
                head = fdp.ConsumeIntInRange(0, q.num) if fdp.ConsumeIntInRange(0, 7) else \
                    fdp.ConsumeIntInRange(0, 0xFFFF)
                struct.pack_into("<H", ram, off + 4 + 2 * (idx % q.num), head & 0xFFFF)
                step = 1 if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(0, 0xFFFF)
                struct.pack_into("<H", ram, off + 2, (idx + step) & 0xFFFF)
                if fdp.ConsumeIntInRange(0, 3) == 0:      # flags / used_event
                    struct.pack_into("<H", ram, off, fdp.ConsumeIntInRange(0, 0xFFFF))
                    struct.pack_into("<H", ram, off + 4 + 2 * q.num, fdp.ConsumeIntInRange(0, 0xFFFF))
        elif op == 6:
            w32(0x050, fdp.ConsumeIntInRange(0, len(t.queues)) if fdp.ConsumeIntInRange(0, 7) else
                fdp.ConsumeIntInRange(0, 0xFFFFFFFF))
        elif op == 7:
            chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
            off = fdp.ConsumeIntInRange(0, RAM_SIZE - 1)
            chunk = chunk[:RAM_SIZE - off]
            ram[off:off + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        elif op == 8:
            if kind == 2:
                dev.push_input(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)))
            elif image is not None:
                image.fail_mask = fdp.ConsumeIntInRange(0, 31)
        elif op == 9:
            pending = t.read(0x060, 4)
            t.write(0x064, 4, pending if fdp.ConsumeIntInRange(0, 3) else fdp.ConsumeIntInRange(0, 3))
        elif op == 10:
            state = t.save()
            t.restore(state)
            assert t.save() == state
            # A damaged state is refused cleanly or accepted; nothing else.
            bad = dict(state)
            key = sorted(bad)[fdp.ConsumeIntInRange(0, len(bad) - 1)] if bad else None
            if key is not None:
                bad[key] = (fdp.ConsumeIntInRange(0, (1 << 64) - 1), None, "x", [], {})[fdp.ConsumeIntInRange(0, 4)]
                try:
                    t.restore(bad)
                except _mods["device"].DeviceStateError:
                    pass
        elif op == 11:
            t.write(0x100 + fdp.ConsumeIntInRange(0, 63), (1, 2, 4, 8)[fdp.ConsumeIntInRange(0, 3)],
                    fdp.ConsumeIntInRange(0, 0xFFFFFFFF))
        else:
            post_request()
        # Invariants after every operation.
        assert irq["level"] == (t.interrupt_status != 0), "irq line out of step with InterruptStatus"
        for q in t.queues:
            assert 0 <= q.in_flight <= max(q.num, 0) or not q.ready
    t.reset()
    assert t.status == 0 and not irq["level"]
    assert all(not q.ready for q in t.queues)


# --- drivers ------------------------------------------------------------------------------------------------
def _alarm(signum, frame):
    raise TimeoutError(f"one input ran longer than {HANG_SECONDS} s (a hang)")


def fuzz_random(seconds: float, seed: int | None = None) -> int:
    """Random inputs for `seconds`; returns how many ran.  Raises on a failure
    after writing the input to fuzz-crash-<n>.bin in the current directory."""
    _import_targets()
    rnd = random.Random(seed)
    end = time.monotonic() + seconds
    n = 0
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        while time.monotonic() < end:
            data = rnd.randbytes(rnd.randint(1, 2048))
            signal.alarm(HANG_SECONDS)
            try:
                run_program(data)
            except BaseException:
                path = Path(f"fuzz-crash-{n}.bin")
                path.write_bytes(data)
                print(f"failure on input {n}, saved to {path.resolve()}", file=sys.stderr)
                raise
            finally:
                signal.alarm(0)
            n += 1
    finally:
        signal.signal(signal.SIGALRM, old)
    return n


def fuzz_atheris(seconds: float, extra: list[str]) -> None:
    import atheris
    import numpy  # noqa: F401  (not instrumented: only vmkit is)

    with atheris.instrument_imports(include=["vmkit"]):
        _import_targets()

    def one_input(data: bytes) -> None:
        run_program(data, atheris.FuzzedDataProvider(data))

    args = [sys.argv[0], f"-max_total_time={int(seconds)}", f"-timeout={HANG_SECONDS}",
            "-rss_limit_mb=2048", "-max_len=4096", *extra]
    atheris.Setup(args, one_input)
    atheris.Fuzz()   # exits the process


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--random", action="store_true", help="plain random inputs, no atheris")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--replay", metavar="FILE", help="run one saved input and report")
    args, extra = ap.parse_known_args()
    if args.replay:
        _import_targets()
        run_program(Path(args.replay).read_bytes())
        print("input ran without a failure")
        return
    try:
        import atheris  # noqa: F401
        have_atheris = True
    except ImportError:
        have_atheris = False
    if have_atheris and not args.random:
        fuzz_atheris(args.seconds, extra)
    else:
        if not args.random:
            print("atheris is not installed: running random inputs instead", file=sys.stderr)
        n = fuzz_random(args.seconds, args.seed)
        print(f"{n} random inputs ran without a failure")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
