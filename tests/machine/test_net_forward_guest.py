"""Port forwards and heavy traffic with a real guest (the default image on
`--net user`): a host client moves 50 MiB each way through hostfwd to busybox
nc in the guest, 200 guest connections are open at once, and restrict=on
stops outbound connections while the forward still works. All traffic stays
on the host's loopback. A failure prints the guest console.
"""

import hashlib
import http.server
import os
import socket
import threading
import time

import pytest

from tests.guest import PROMPT, boot_image
from tests.machine.test_net_guest import wait_for_lease

pytestmark = pytest.mark.slow

MiB = 1 << 20
BIG = 50 * MiB


@pytest.fixture(scope="module")
def image():
    from vmkit.images import default_image_paths, pull
    pull(progress=False)
    return default_image_paths()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect_retry(port: int, timeout: float = 30.0) -> socket.socket:
    """Connect to a forward; the guest's listener may take a moment to start
    (until then the guest answers the forwarded SYN with a reset)."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
            if s.recv(1, socket.MSG_PEEK) == b"":
                raise ConnectionResetError        # accepted by vmkit, refused by the guest
        except TimeoutError:
            s.settimeout(120)
            return s                              # connected and quiet: the guest's nc is there
        except ConnectionResetError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        s.settimeout(120)
        return s


def test_hostfwd_moves_50_mib_each_way(image):
    up_port, down_port = free_port(), free_port()
    g = boot_image("--net", f"user,hostfwd=tcp::{up_port}-:8080,hostfwd=tcp:127.0.0.1:{down_port}-:8081")
    wait_for_lease(g)
    # Host -> guest: the guest hashes what arrives.
    data = os.urandom(BIG)
    g.send("nc -l -p 8080 | sha256sum; echo up\"\"-done")
    s = connect_retry(up_port)
    t0 = time.monotonic()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    out = g.expect("up-done", timeout=300)
    up_s = time.monotonic() - t0
    s.close()
    g.expect(PROMPT)
    if hashlib.sha256(data).hexdigest() not in out:
        g.fail(f"the guest received other bytes than the host sent: {out!r}")
    # Guest -> host: a file made in the guest, hashed on both sides.
    out = g.run(f"dd if=/dev/urandom of=/tmp/blob bs=1M count={BIG // MiB} 2>/dev/null; sha256sum /tmp/blob",
                PROMPT)
    want = out.split()[-2] if len(out.split()) >= 2 else ""
    g.send("nc -l -p 8081 < /tmp/blob; echo down\"\"-done")
    s = connect_retry(down_port)
    t0 = time.monotonic()
    h, n = hashlib.sha256(), 0
    while chunk := s.recv(1 << 16):
        h.update(chunk)
        n += len(chunk)
    down_s = time.monotonic() - t0
    s.close()
    g.expect("down-done", timeout=120)
    g.expect(PROMPT)
    if n != BIG or h.hexdigest() != want:
        g.fail(f"the host received {n} bytes with sha256 {h.hexdigest()}, the guest sent {BIG} with {want!r}")
    print(f"hostfwd 50 MiB: host->guest {up_s:.1f} s, guest->host {down_s:.1f} s")
    g.poweroff()


class _BarrierHandler(http.server.BaseHTTPRequestHandler):
    """Answers only once `barrier.parties` requests are open at the same time."""
    barrier: threading.Barrier

    def do_GET(self):
        try:
            self.barrier.wait()
            body = b"ok\n"
        except threading.BrokenBarrierError:
            body = b"late\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_200_concurrent_guest_connections(image):
    n = 200
    handler = type("Handler", (_BarrierHandler,), {"barrier": threading.Barrier(n, timeout=180)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.request_queue_size = 256
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        g = boot_image("--net", "user")
        wait_for_lease(g)
        out = g.run(f"i=0; while [ $i -lt {n} ]; do wget -q -O /tmp/r$i http://10.0.2.2:{server.server_port}/ & "
                    f"i=$((i+1)); done; wait; cat /tmp/r* | grep -c '^ok$'", PROMPT)
        if str(n) not in out.split():
            g.fail(f"expected {n} connections open at once to complete: {out!r}")
        g.poweroff()
    finally:
        server.shutdown()
        server.server_close()


def test_restrict_blocks_outbound_but_forward_works(image):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = free_port()
    try:
        g = boot_image("--net", f"user,restrict=on,hostfwd=tcp::{port}-:8080")
        wait_for_lease(g)
        out = g.run(f"wget -q -T 5 -O - http://10.0.2.2:{server.getsockname()[1]}/ 2>&1; echo rc=$?", PROMPT)
        if "rc=0" in out:
            g.fail(f"restrict=on let the guest connect out: {out!r}")
        g.send("echo forwarded-hello | nc -l -p 8080; echo fwd\"\"-done")
        s = connect_retry(port)
        got = s.recv(100)
        s.close()
        g.expect("fwd-done", timeout=60)
        g.expect(PROMPT)
        if got != b"forwarded-hello\n":
            g.fail(f"the forward under restrict=on returned {got!r}")
        g.poweroff()
    finally:
        server.close()
