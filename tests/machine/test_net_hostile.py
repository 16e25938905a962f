"""A hostile guest on `--net user`: malformed frames and a SYN flood, and
both the VM and the host side stay healthy (RELIABILITY.md, "Network").

The guest runs tests/machine/guest_programs/netflood.c (built here with the
riscv64 cross compiler, fetched by the guest over HTTP from a server on the
host's loopback): it writes raw Ethernet frames to the gateway's MAC through
an AF_PACKET socket, past the guest kernel's IP stack: 20000 malformed frames, a
5000-SYN flood the guest's kernel answers with RSTs, then a 1000-SYN flood
with the guest's address removed (half-open: it fills the relay's
MAX_TCP_CONNS, and the host server must see no more connections than that).
While it floods, a sampler watches the vmkit process: its open file
descriptors must stay under the relay's connection cap plus slack, its RSS
must not balloon.
Afterwards the guest's shell answers, it pings the gateway, fetches a file
through 10.0.2.2 with the right SHA-256 and resolves localhost through
10.0.2.3; the host server that took the flood still serves the host; and the
vmkit process's descriptors come back down to where they started (flows
reaped or closed).  A failure prints the guest console.
"""

import functools
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.guest import PROMPT, boot_image
from vmkit.net.tcp import MAX_TCP_CONNS

CC = "riscv64-linux-gnu-gcc"
SOURCE = Path(__file__).resolve().parent / "guest_programs" / "netflood.c"

MALFORMED_FRAMES = 20000
SYN_FLOOD = 5000
HALF_OPEN_FLOOD = 1000          # enough to fill the relay's MAX_TCP_CONNS
FD_SLACK = 100                  # descriptors over the baseline beyond one per relayed TCP connection
RSS_GROWTH_MAX = 200 << 20
FD_SETTLE_SECONDS = 60.0        # for the relay to drop every flood connection afterwards

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CC) is None, reason=f"{CC} not installed "
                       "(apt-get install gcc-riscv64-linux-gnu)"),
]


@pytest.fixture(scope="module")
def image():
    from vmkit.images import default_image_paths, pull
    pull(progress=False)
    return default_image_paths()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    timeout = 30                # a connection that never sends a request does not hold a thread forever

    def log_message(self, *args):
        pass


class FloodableServer(http.server.ThreadingHTTPServer):
    """The host's HTTP server: serves the guest program and the test file,
    and takes the SYN flood; counts the connections it accepted."""
    request_queue_size = 1024   # the relay opens up to MAX_TCP_CONNS at once
    daemon_threads = True

    def __init__(self, directory: Path):
        super().__init__(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
        self.accepted = 0
        self.errors = 0
        self.open = 0           # connections accepted and not yet closed
        self.max_open = 0
        self._lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._lock:
            self.accepted += 1
            self.open += 1
            self.max_open = max(self.max_open, self.open)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        super().shutdown_request(request)
        with self._lock:
            self.open -= 1

    def handle_error(self, request, client_address):
        self.errors += 1        # flood connections are reset by the relay: expected, and not printed


class ProcessSampler:
    """Samples a process's open descriptors and RSS from /proc every few ms."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid = pid
        self.interval = interval
        self.max_fds = 0
        self.max_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self):
        while not self._stop.is_set():
            try:
                self.max_fds = max(self.max_fds, self.fds())
                self.max_rss = max(self.max_rss, self.rss())
            except (FileNotFoundError, ProcessLookupError):
                return                  # the VM is gone; the test notices on its own
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def build_netflood(out: Path) -> Path:
    exe = out / "netflood"
    r = subprocess.run([CC, "-static", "-O2", "-Wall", "-Werror", str(SOURCE), "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"building netflood failed:\n{r.stderr}"
    return exe


def wait_for_lease(g) -> None:
    """The image's rcS starts udhcpc at boot; the lease may land just after the prompt."""
    out = g.run("for i in 1 2 3 4 5 6 7 8 9 10; do ip -4 addr show eth0 | grep -q 10.0.2.15 && break; "
                "sleep 0.5; done; ip -4 addr show eth0", PROMPT)
    if "inet 10.0.2.15/24" not in out:
        g.fail(f"eth0 did not get 10.0.2.15/24 by DHCP at boot: {out!r}")


def sent_count(g, out: str, command: str) -> int:
    m = re.search(r"sent (\d+) failed (\d+)", out)
    if m is None:
        g.fail(f"{command} did not report what it sent: {out!r}")
    return int(m.group(1))


def test_hostile_guest_malformed_frames_and_syn_flood(image, tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    build_netflood(served)
    payload = os.urandom(256 * 1024)
    (served / "blob.bin").write_bytes(payload)
    server = FloodableServer(served)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    g = None
    try:
        g = boot_image("--net", "user", budget="200000000000")
        wait_for_lease(g)
        out = g.run(f"wget -q -O /tmp/netflood http://10.0.2.2:{port}/netflood && chmod +x /tmp/netflood; "
                    "echo rc=$?", PROMPT)
        if "rc=0" not in out:
            g.fail(f"the guest could not fetch netflood: {out!r}")
        # settle: the wget's connection is closed and reaped before the baseline
        time.sleep(2)
        with ProcessSampler(g.proc.pid) as sampler:
            fds_before, rss_before = sampler.fds(), sampler.rss()
            fd_bound = fds_before + MAX_TCP_CONNS + FD_SLACK

            started = time.monotonic()
            tx_path = "/sys/class/net/eth0/statistics/tx_packets"
            out = g.run(f"cat {tx_path}; /tmp/netflood malformed {MALFORMED_FRAMES}; cat {tx_path}", PROMPT)
            malformed_seconds = time.monotonic() - started
            sent = sent_count(g, out, "netflood malformed")
            if sent < MALFORMED_FRAMES * 0.9:
                g.fail(f"netflood sent only {sent} of {MALFORMED_FRAMES} malformed frames: {out!r}")
            counts = [int(x) for x in re.findall(r"^(\d+)$", out, re.M)]
            tx_packets = counts[-1] - counts[0] if len(counts) == 2 else -1
            if tx_packets < sent:       # the frames left the guest's driver, they were not dropped in the guest
                g.fail(f"eth0 sent {tx_packets} packets for netflood's {sent} frames: {out!r}")
            if "alive" not in g.run("echo alive", PROMPT):
                g.fail("the shell does not answer after the malformed frames")

            # A SYN flood the guest's kernel answers: each SYN-ACK from the relay
            # gets the kernel's RST (no socket owns the port), so connections are short.
            accepted_before = server.accepted
            started = time.monotonic()
            out = g.run(f"/tmp/netflood synflood {SYN_FLOOD} {port}", PROMPT)
            flood_seconds = time.monotonic() - started
            syns = sent_count(g, out, "netflood synflood")
            if syns < SYN_FLOOD * 0.99:
                g.fail(f"netflood sent only {syns} of {SYN_FLOOD} SYNs: {out!r}")
            accepted = server.accepted - accepted_before
            if not 0 < accepted <= syns:
                g.fail(f"the host server accepted {accepted} connections for {syns} SYNs")
            if "alive" not in g.run("echo alive", PROMPT):
                g.fail("the shell does not answer after the SYN flood")

            # A half-open flood: with 10.0.2.15 taken off eth0 the guest's kernel
            # drops the SYN-ACKs without a word, the relay's connections stay
            # half open and its cap is what holds; with the address back, the
            # retransmitted SYN-ACKs get their RSTs and the slots come free.
            # What the cap bounds is the connections open at once: the host
            # server's count of open ones may only rise by that much.  (Its
            # total of accepts is no measure: on a loaded host the relay may
            # still be opening and closing the last flood's connections.)
            max_fds_open, sampler.max_fds = sampler.max_fds, 0
            accepted_before = server.accepted
            with server._lock:
                open_before = server.max_open = server.open
            out = g.run(f"ip addr del 10.0.2.15/24 dev eth0; /tmp/netflood synflood {HALF_OPEN_FLOOD} {port}; "
                        "sleep 2; ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2", PROMPT)
            half_open = sent_count(g, out, "netflood synflood (half open)")
            half_open_accepted = server.accepted - accepted_before
            half_open_peak = server.max_open - open_before
            if not 0 < half_open_accepted or half_open_peak > MAX_TCP_CONNS:
                g.fail(f"the host server had up to {half_open_peak} more half-open flood connections open "
                       f"at once ({half_open_accepted} accepted; the relay's cap is {MAX_TCP_CONNS})")

            # Healthy afterwards, from the guest (what needs no TCP first) ...
            if "alive" not in g.run("echo alive", PROMPT):
                g.fail("the shell does not answer after the SYN floods")
            out = g.run("ping -c 1 -W 5 10.0.2.2 2>&1; echo rc=$?", PROMPT)
            if "rc=0" not in out or "1 packets received" not in out:
                g.fail(f"ping of the gateway failed after the floods: {out!r}")
            out = g.run("nslookup localhost 10.0.2.3 2>&1; echo rc=$?", PROMPT)
            if "127.0.0.1" not in out.split("localhost", 1)[-1]:
                g.fail(f"nslookup localhost did not resolve after the floods: {out!r}")
            # ... from the host: the server that took the floods still serves ...
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/blob.bin", timeout=10) as r:
                if hashlib.sha256(r.read()).digest() != hashlib.sha256(payload).digest():
                    g.fail("the host server returned other bytes after the floods")
            # ... the relay lets go of the half-open connections: descriptors
            # return to the baseline (until then the guest is at its own cap) ...
            deadline = time.monotonic() + FD_SETTLE_SECONDS
            while (fds_now := sampler.fds()) > fds_before + 4 and time.monotonic() < deadline:
                time.sleep(0.5)
            settle_seconds = time.monotonic() - deadline + FD_SETTLE_SECONDS
            max_fds, rss_growth = max(max_fds_open, sampler.max_fds), sampler.max_rss - rss_before

        print(f"malformed: {sent} frames in {malformed_seconds:.1f}s (guest eth0 tx_packets +{tx_packets}); "
              f"synflood: {syns} SYNs in {flood_seconds:.1f}s, host accepted {accepted}, vmkit fds "
              f"{fds_before} -> max {max_fds_open}; half-open flood: {half_open} SYNs, host accepted "
              f"{half_open_accepted} (at most {half_open_peak} open at once), vmkit fds max {sampler.max_fds}, "
              f"back to {fds_now} after "
              f"{settle_seconds:.1f}s; RSS +{rss_growth >> 20} MiB")
        if max_fds > fd_bound:
            g.fail(f"the vmkit process held {max_fds} descriptors during the flood (bound {fd_bound})")
        if rss_growth > RSS_GROWTH_MAX:
            g.fail(f"the vmkit process's RSS grew by {rss_growth >> 20} MiB during the flood")
        if fds_now > fds_before + 4:
            g.fail(f"the vmkit process still holds {fds_now} descriptors {FD_SETTLE_SECONDS:.0f}s "
                   f"after the flood (baseline {fds_before})")
        # ... and TCP from the guest works again.
        out = g.run(f"wget -q -O - http://10.0.2.2:{port}/blob.bin | sha256sum", PROMPT)
        if hashlib.sha256(payload).hexdigest() not in out:
            g.fail(f"wget through 10.0.2.2 after the floods returned other bytes: {out!r}")
        g.poweroff()
    finally:
        if g is not None:
            g.kill()
        server.shutdown()
        server.server_close()
