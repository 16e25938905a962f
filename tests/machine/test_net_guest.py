"""The network as a guest sees it: the default image on `--net user` / `--net none`.

Real guest, real host sockets, all on the VM's user network or the host's
127.0.0.1: the guest takes its address by DHCP, pings the gateway, asks the
DNS forwarder for localhost.  (The image's busybox nc has no -u, so UDP to
the host is not exercised from the guest yet.)  A failure prints the guest console.
"""

import os
import subprocess
import sys

import pytest

from tests.guest import PROMPT, boot_image

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def image():
    from vmkit.images import default_image_paths, pull
    pull(progress=False)
    return default_image_paths()


def boot(*extra):
    """The default image's kernel and initramfs, no disk, with the given options."""
    return boot_image(*extra)


def host_hosts_name() -> tuple[str, str] | None:
    """A name in the host's /etc/hosts other than localhost, and its IPv4 address."""
    try:
        lines = open("/etc/hosts").read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0].count(".") == 3:
            for name in fields[1:]:
                if name != "localhost" and "." not in name:
                    return name, fields[0]
    return None


def wait_for_lease(g) -> None:
    """The image's rcS starts udhcpc at boot; the lease may land just after the prompt."""
    out = g.run("for i in 1 2 3 4 5 6 7 8 9 10; do ip -4 addr show eth0 | grep -q 10.0.2.15 && break; "
                "sleep 0.5; done; ip -4 addr show eth0; ip route; cat /etc/resolv.conf", PROMPT)
    if "inet 10.0.2.15/24" not in out:
        g.fail(f"eth0 did not get 10.0.2.15/24 by DHCP at boot: {out!r}")
    if "default via 10.0.2.2 dev eth0" not in out:
        g.fail(f"no default route via 10.0.2.2: {out!r}")
    if "nameserver 10.0.2.3" not in out:
        g.fail(f"/etc/resolv.conf does not name 10.0.2.3: {out!r}")


def test_user_network_dhcp_ping_dns(image):
    g = boot("--net", "user")
    wait_for_lease(g)
    out = g.run("ip addr show eth0", PROMPT)
    if "52:54:00:12:34:56" not in out:
        g.fail(f"eth0 does not have the default MAC: {out!r}")
    out = g.run("ping -c 1 -W 5 10.0.2.2 2>&1; echo rc=$?", PROMPT)
    if "rc=0" not in out or "1 packets received" not in out:
        g.fail(f"ping of the gateway failed: {out!r}")
    out = g.run("nslookup localhost 10.0.2.3 2>&1; echo rc=$?", PROMPT)
    if "127.0.0.1" not in out.split("localhost", 1)[-1]:
        g.fail(f"nslookup localhost did not resolve to 127.0.0.1: {out!r}")
    # A name only the host's /etc/hosts knows, through the resolver from resolv.conf.
    entry = host_hosts_name()
    if entry is not None:
        name, address = entry
        out = g.run(f"nslookup {name} 2>&1; echo rc=$?", PROMPT)
        if address not in out.split(name, 1)[-1]:
            g.fail(f"nslookup {name} (from the host's /etc/hosts) did not give {address}: {out!r}")
    g.poweroff()


def test_mac_option(image):
    g = boot("--net", "user", "--mac", "52:54:00:ab:cd:ef")
    out = g.run("cat /sys/class/net/eth0/address", PROMPT)
    if "52:54:00:ab:cd:ef" not in out:
        g.fail(f"eth0 does not have the MAC from --mac: {out!r}")
    g.poweroff()


def test_no_network(image):
    g = boot("--net", "none")
    out = g.run("ls /sys/class/net", PROMPT)
    if "eth0" in out or "lo" not in out.split():
        g.fail(f"expected only lo with --net none: {out!r}")
    ids = g.run("cat /sys/bus/virtio/devices/*/device", PROMPT).split()
    if "0x0001" in ids or "0x0004" not in ids:   # no net (1); entropy (4) is there
        g.fail(f"virtio device ids with --net none: {ids!r}")
    g.poweroff()


@pytest.mark.parametrize("args, message", [
    (["--net", "user,hostfwd=sctp::8080-:80"], "the protocol must be tcp or udp"),
    (["--net", "user,hostfwd=tcp::8080-10.0.2.16:80"], "the guest address can only be 10.0.2.15"),
    (["--net", "user,hostfwd=tcp::70000-:80"], "bad host port"),
    (["--net", "tap"], "use user[,hostfwd=...][,restrict=on] or none"),
    (["--net", "user,restrict=maybe"], "restrict must be on or off"),
    (["--mac", "01:00:5e:00:00:01"], "multicast"),
    (["--mac", "52:54:00:12:34"], "six hex bytes"),
])
def test_cli_rejects_bad_network_options(args, message):
    r = subprocess.run([sys.executable, "-m", "vmkit", "run", "--bios", "none", "--kernel", "/nonexistent",
                        *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmkit: error: ") and message in lines[0], r.stderr


def test_guest_fetches_a_file_over_tcp_from_a_host_server(image, tmp_path):
    """wget in the guest, through the gateway 10.0.2.2, from an HTTP server on
    the host's loopback; the hash must match what the server sent."""
    import functools
    import hashlib
    import http.server
    import threading

    payload = os.urandom(256 * 1024)
    (tmp_path / "blob.bin").write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        g = boot("--net", "user")
        g.run("ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && "
              "ip route add default via 10.0.2.2", PROMPT)
        out = g.run(f"wget -q -O - http://10.0.2.2:{server.server_port}/blob.bin | sha256sum", PROMPT)
        if hashlib.sha256(payload).hexdigest() not in out:
            g.fail(f"wget over TCP returned other bytes: {out!r}")
        g.poweroff()
    finally:
        server.shutdown()
        server.server_close()
