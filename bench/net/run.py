"""bench/net: guest<->host TCP through the user-mode NAT, vmkit beside QEMU's slirp.

    python bench/net/run.py [--size-mib 32] [--connections 100] [--repeat 2] [--skip-qemu]

Boots the default image's kernel and initramfs (no disk) under both
emulators at once, each with user networking and one host forward
127.0.0.1:P -> guest port 8080 (vmkit: --net user,hostfwd=tcp:127.0.0.1:P-:8080;
QEMU: -netdev user,id=n0,hostfwd=... -device virtio-net-device,netdev=n0),
waits for the DHCP lease, then takes turns (vmkit, QEMU, vmkit, QEMU, ...)
so both see the same host load, and keeps the best of --repeat runs:

  host->guest MiB/s    the guest runs `nc -l -p 8080 >/dev/null`; the host
                       sends --size-mib MiB through the forward; timed from
                       connect to the guest's "nc finished" marker
  guest->host MiB/s    `dd if=/dev/zero bs=64k | nc 10.0.2.2 PORT` to a host
                       server on 127.0.0.1 that counts the bytes; timed by
                       the host (first byte to EOF) and by the guest's clock
  guest->host conn/s   --connections sequential `nc 10.0.2.2 PORT </dev/null`
                       (connect, FIN, wait for the server's close: busybox nc
                       half-closes at EOF on stdin); timed by the host (first
                       to last accept) and by the guest's clock
  host->guest conn/s   the host connects --connections times to a guest
                       `nc -ll -p 8080 -e /bin/echo` and waits for its
                       newline and close

Two guest-only figures (no NIC) help tell guest CPU from the NAT: TCP over
the guest's loopback (dd | nc 127.0.0.1, --size-mib MiB) and the process
spawn rate (a loop of /bin/true: each connection above starts an nc too).

Guest-side durations: busybox date has no %N, so the host times the command
between two console markers (`echo START; cmd; echo END`); "guest clock" rows
use the guest's /proc/uptime (10 ms) around the same command instead.  The
second table shows, for the best run of each measurement: the guest's busy
share (its /proc/stat), the emulator's threads on a host CPU and runnable
but waiting for one (schedstat; % of wall time, 100 = one core), and guest
clock seconds per host second over the timed command.  Ratio = vmkit/QEMU,
> 1 means vmkit is faster.
"""

import argparse
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.guest import PROMPT, Guest  # noqa: E402

GUEST_PORT = 8080
LOOP_PORT = 9000
CHUNK = 64 << 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emulator_argv(name, kernel, firmware, initrd, append, host_port):
    fwd = f"hostfwd=tcp:127.0.0.1:{host_port}-:{GUEST_PORT}"
    if name == "vmkit":
        return [sys.executable, "-m", "vmkit", "run", "--bios", str(firmware), "--kernel", str(kernel),
                "--initrd", str(initrd), "--append", append, "--net", f"user,{fwd}"]
    return ["qemu-system-riscv64", "-M", "virt", "-m", "512M", "-nographic", "-bios", str(firmware),
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
            "-netdev", f"user,id=n0,{fwd}", "-device", "virtio-net-device,netdev=n0"]


def sched_seconds(pid) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of a process, all its threads."""
    run = wait = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = open(f"/proc/{pid}/task/{task}/schedstat").read().split()
        except OSError:
            continue                        # the thread just ended
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


class SinkServer:
    """A TCP server on 127.0.0.1 that takes one connection at a time, reads it
    to EOF, closes it, and records (accept, first byte, EOF, bytes)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            t_accept, t_first, n = time.monotonic(), None, 0
            with c:
                while True:
                    try:
                        data = c.recv(1 << 20)
                    except OSError:
                        break
                    if not data:
                        break
                    if t_first is None:
                        t_first = time.monotonic()
                    n += len(data)
            self.conns.append((t_accept, t_first, time.monotonic(), n))

    def wait_for(self, count, timeout=60.0):
        end = time.monotonic() + timeout
        while len(self.conns) < count and time.monotonic() < end:
            time.sleep(0.01)
        return self.conns[:count]

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Bench:
    """One booted guest with its host forward and host server; keeps the best of each metric."""

    def __init__(self, name: str, argv: list[str], host_port: int):
        self.name, self.host_port = name, host_port
        self.server = SinkServer()
        self.g = Guest([], timeout=1800, argv=argv)
        self.best = {}                       # metric -> best value (all higher-is-better)
        self.diag = {}                       # a run's first metric -> (guest busy %, host run %,
        #                                      host wait %, guest clock / host clock or None)
        self.clock = None                    # of the last guest_timed
        self.last = {}                       # the last run's values

    def ready(self) -> None:
        self.g.expect(PROMPT)
        # The image's rcS starts udhcpc at boot; the lease may land just after the prompt.
        out = self.g.run("for i in $(seq 40); do ip -4 addr show eth0 | grep -q 10.0.2.15 && break; "
                         "sleep 0.5; done; ip -4 addr show eth0", PROMPT)
        if "inet 10.0.2.15/" not in out:
            self.g.fail(f"eth0 has no DHCP lease: {out!r}")

    def close(self) -> None:
        if self.g.proc.poll() is None:
            self.g.send("poweroff")
            try:
                self.g.proc.wait(60)
            except Exception:  # noqa: BLE001 - killed below
                pass
        self.g.kill()
        self.server.close()

    def guest_cpu(self) -> tuple[int, int]:
        """(busy, total) jiffies of the guest, from its /proc/stat."""
        out = self.g.run("head -1 /proc/stat", PROMPT)
        m = re.search(r"^cpu +([\d ]+)$", out, re.M)
        if not m:
            self.g.fail(f"no cpu line in /proc/stat: {out!r}")
        ticks = [int(x) for x in m.group(1).split()]
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks)    # idle and iowait are not busy

    def measure(self, fn) -> None:
        """One run of fn() (-> {metric: value}); keep the best values and, for the
        best of the first metric, where the time went."""
        self.clock = None
        (b0, n0), (r0, w0), t0 = self.guest_cpu(), sched_seconds(self.g.proc.pid), time.monotonic()
        r = fn()
        (r1, w1), dt = sched_seconds(self.g.proc.pid), time.monotonic() - t0
        b1, n1 = self.guest_cpu()
        self.last = r
        first = next(iter(r))
        if first not in self.best or r[first] > self.best[first]:
            self.diag[first] = (100 * (b1 - b0) / max(1, n1 - n0), 100 * (r1 - r0) / dt, 100 * (w1 - w0) / dt,
                                self.clock)
        for k, v in r.items():
            self.best[k] = max(self.best.get(k, v), v)

    def guest_timed(self, command: str) -> tuple[float, float]:
        """(host seconds between console markers around `command`, guest seconds
        by its /proc/uptime around the same); their ratio goes to self.clock."""
        self.g.send(f"a=$(cut -d' ' -f1 /proc/uptime); echo ST''ART; {command}; echo EN''D; "
                    f"b=$(cut -d' ' -f1 /proc/uptime); echo T-''IME $a $b")
        self.g.expect("START")
        t0 = time.monotonic()
        self.g.expect("END")
        th = time.monotonic() - t0
        out = self.g.expect(PROMPT)
        m = re.search(r"T-IME ([\d.]+) ([\d.]+)", out)
        if not m:
            self.g.fail(f"no timing from {command!r}: {out!r}")
        tg = float(m.group(2)) - float(m.group(1))
        self.clock = tg / th
        return th, tg

    def listen_in_guest(self, command: str, port: int) -> None:
        """Start `command` (a listener on `port`) in the background; return once it listens."""
        self.g.run(f"{command} &", PROMPT)
        out = self.g.run(f"i=0; until netstat -ltn | grep -q ':{port} '; do usleep 20000; i=$((i+1)); "
                         f"[ $i -gt 500 ] && echo NOT-''LISTENING && break; done", PROMPT)
        if "NOT-LISTENING" in out:
            self.g.fail(f"{command!r} does not listen on port {port}")

    # --- the measurements -------------------------------------------------

    def host_to_guest(self, size_mib):
        self.listen_in_guest(f"(nc -l -p {GUEST_PORT} </dev/null >/dev/null; echo NC-''DONE)", GUEST_PORT)
        buf = bytes(CHUNK)
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.host_port)) as s:
            for _ in range((size_mib << 20) // CHUNK):
                s.sendall(buf)
            s.shutdown(socket.SHUT_WR)
            self.g.expect("NC-DONE")
            t = time.monotonic() - t0
        return {"host->guest MiB/s": size_mib / t}

    def guest_to_host(self, size_mib):
        self.server.conns.clear()
        count = (size_mib << 20) // CHUNK
        _, tg = self.guest_timed(f"dd if=/dev/zero bs={CHUNK} count={count} 2>/dev/null | "
                                 f"nc 10.0.2.2 {self.server.port}")
        (conn,) = self.server.wait_for(1)
        if conn[3] != count * CHUNK:
            self.g.fail(f"the host server got {conn[3]} bytes, not {count * CHUNK}")
        return {"guest->host MiB/s (host timed)": size_mib / (conn[2] - conn[1]),
                "guest->host MiB/s (guest clock)": size_mib / tg}

    def guest_connects(self, k):
        self.server.conns.clear()
        _, tg = self.guest_timed(f"for i in $(seq {k}); do nc 10.0.2.2 {self.server.port} </dev/null; done")
        conns = self.server.wait_for(k)
        if len(conns) != k:
            self.g.fail(f"the host server saw {len(conns)} connections, not {k}")
        return {"guest->host conn/s (host timed)": (k - 1) / (conns[-1][0] - conns[0][0]),
                "guest->host conn/s (guest clock)": k / tg}

    def host_connects(self, k):
        self.listen_in_guest(f"nc -ll -p {GUEST_PORT} -e /bin/echo </dev/null >/dev/null 2>&1", GUEST_PORT)
        t0 = time.monotonic()
        for i in range(k):
            with socket.create_connection(("127.0.0.1", self.host_port), timeout=30) as s:
                got = b""
                while chunk := s.recv(4096):     # echo prints a newline and exits: the guest closes
                    got += chunk
            if got != b"\n":
                self.g.fail(f"connection {i} through the forward got {got!r}, not the guest's echo")
        t = time.monotonic() - t0
        self.g.run("kill $!; wait", PROMPT)
        return {"host->guest conn/s": k / t}

    def guest_loopback(self, size_mib):
        # The listener's stdin must stay open: at EOF busybox nc half-closes, and
        # the client nc exits as soon as it reads that EOF, before its data is sent.
        self.listen_in_guest(f"sleep 3600 | nc -l -p {LOOP_PORT} >/dev/null", LOOP_PORT)
        count = (size_mib << 20) // CHUNK
        before = self.lo_bytes()
        th, _ = self.guest_timed(f"dd if=/dev/zero bs={CHUNK} count={count} 2>/dev/null | nc 127.0.0.1 {LOOP_PORT}")
        moved = self.lo_bytes() - before
        self.g.run("killall sleep nc 2>/dev/null; wait", PROMPT)
        if moved < count * CHUNK:
            self.g.fail(f"only {moved} bytes went over lo, not {count * CHUNK}")
        return {"guest loopback TCP MiB/s": size_mib / th}

    def lo_bytes(self) -> int:
        out = self.g.run("echo R''X=$(cat /sys/class/net/lo/statistics/rx_bytes)", PROMPT)
        m = re.search(r"RX=(\d+)", out)
        if not m:
            self.g.fail(f"no byte count for lo: {out!r}")
        return int(m.group(1))

    def guest_spawns(self, k):
        th, _ = self.guest_timed(f"for i in $(seq {k}); do /bin/true; done")
        return {"guest /bin/true spawns/s": k / th}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=32, help="MiB per throughput run (default 32)")
    ap.add_argument("--connections", type=int, default=100, help="connections per rate run (default 100)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each measurement, best kept (default 2)")
    ap.add_argument("--skip-qemu", action="store_true", help="vmkit only")
    args = ap.parse_args()
    from vmkit.images import default_image_paths, pull
    pull(progress=False)
    kernel, firmware, initrd, append = default_image_paths()
    names = ("vmkit",) if args.skip_qemu else ("vmkit", "qemu")
    load0, t0 = os.getloadavg()[0], time.monotonic()
    benches = {}
    try:
        for name in names:                   # both boot at once; the runs below take turns
            port = free_port()
            benches[name] = Bench(name, emulator_argv(name, kernel, firmware, initrd, append, port), port)
        for b in benches.values():
            b.ready()
            print(f"{b.name} up after {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        n, k = args.size_mib, args.connections
        for method, arg in (("host_to_guest", n), ("guest_to_host", n), ("guest_connects", k),
                            ("host_connects", k), ("guest_loopback", n), ("guest_spawns", k)):
            for _ in range(args.repeat):
                for b in benches.values():
                    b.measure(lambda: getattr(b, method)(arg))
                    print(f"{b.name} {method}: " + ", ".join(f"{v:.2f}" for v in b.last.values()),
                          file=sys.stderr, flush=True)
    finally:
        for b in benches.values():
            b.close()
    wall = time.monotonic() - t0

    print(f"--size-mib {args.size_mib} --connections {args.connections} --repeat {args.repeat} (best kept); "
          f"append {append!r}; {wall:.0f} s in all; host load average {load0:.1f} -> {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"{'':34} {'vmkit':>9} {'qemu':>9} {'ratio':>7}")
    vm, qemu = benches["vmkit"].best, benches["qemu"].best if "qemu" in benches else {}
    for key, v in vm.items():
        q = qemu.get(key)
        print(f"{key:34} {v:9.2f} " + (f"{'-':>9} {'-':>7}" if q is None else f"{q:9.2f} {v / q:7.2f}"))
    print()
    print(f"{'best run of':34} " + "  ".join(f"{name + ': guest run wait clock':>30}" for name in names))
    for key in benches["vmkit"].diag:
        cells = []
        for name in names:
            busy, run, wait, clock = benches[name].diag[key]
            cells.append(f"{busy:>10.0f}% {run:>4.0f}% {wait:>4.0f}% {'-' if clock is None else f'{clock:.2f}':>5}")
        print(f"{key:34} " + "  ".join(f"{c:>30}" for c in cells))
    print("guest: the guest's busy share (/proc/stat); run, wait: the emulator's threads on a host CPU, "
          "runnable but waiting for one (% of wall, 100 = one core); clock: guest /proc/uptime seconds "
          "per host second")


if __name__ == "__main__":
    main()
