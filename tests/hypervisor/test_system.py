"""vmkitd end to end, the way a user drives it: the daemon started from the
CLI, VMs launched with `vmkit launch`, consoles over the API's WebSocket,
a worker killed with SIGKILL, the daemon restarted, a VM over capacity
refused, and CPU weights honoured. Real guests (the default image); the
console of a VM that fails a check is printed."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import httpx
import pytest

from tests.hypervisor.vmkitd import Vmkitd as Daemon

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image():
    from vmkit.images import pull
    pull(progress=False)


def test_fleet_of_eight(image, tmp_path):
    d = Daemon(tmp_path / "state", "--memory-overcommit", "0.5")
    names = [f"vm{i}" for i in range(8)]
    try:
        for name in names:
            policy = ["--restart", "on-failure"] if name == "vm1" else []
            r = d.cli("launch", "--name", name, "--memory", "192M", *policy)
            assert r.returncode == 0 and f"Launched: {name}" in r.stdout, r.stderr
        listing = json.loads(d.cli("list", "--format", "json").stdout)
        assert sorted(vm["spec"]["name"] for vm in listing) == names
        for i, name in enumerate(names):
            d.wait_state(name, "running")
            d.console_command(name, f"echo answer-$(({i}*7))", f"answer-{i * 7}")

        # SIGKILL one worker: it is recorded crashed; the others and the daemon carry on.
        victim = d.vm("vm3")
        os.kill(victim["pid"], signal.SIGKILL)
        crashed = d.wait_state("vm3", "crashed", 30)
        assert "killed" in crashed["reason"] or "died" in crashed["reason"], crashed
        assert d.http.get("/v1/host").json()["running_vms"] == 7
        for name in ("vm2", "vm4"):
            assert d.vm(name)["state"] == "running"
            d.console_command(name, "echo still-$((40+2))", "still-42", 60)
        events = [e["kind"] for e in d.http.get("/v1/events").json() if e["vm"] == "vm3"]
        assert events[-1] == "crashed", events
        shown = [json.loads(line) for line in d.cli("events", "--format", "json").stdout.splitlines()]
        assert [e["kind"] for e in shown if e["vm"] == "vm3"] == events

        # A daemon restart keeps every definition and re-attaches to running workers.
        pids = {n: d.vm(n)["pid"] for n in names if n != "vm3"}
        d.stop()
        d.start()
        listing = {vm["spec"]["name"]: vm for vm in d.http.get("/v1/vms").json()}
        assert sorted(listing) == names
        assert listing["vm3"]["state"] == "crashed"
        for n, pid in pids.items():
            assert listing[n]["state"] == "running" and listing[n]["pid"] == pid, listing[n]
        d.console_command("vm7", "echo after-restart-$((1+1))", "after-restart-2", 60)
        # The CLI's console on a terminal; detaching leaves the VM running.
        shown = cli_console_session(d, "vm6", "echo via-cli-$((5*5))", "via-cli-25")
        assert b"[detached]" in shown or d.vm("vm6")["state"] == "running"
        assert d.vm("vm6")["state"] == "running"

        # A VM with --restart on-failure comes back after its worker is killed.
        os.kill(d.vm("vm1")["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (vm := d.vm("vm1"))["restarts"] < 1 or vm["state"] not in ("starting", "running"):
            assert time.monotonic() < deadline, vm
            time.sleep(0.25)
        d.wait_state("vm1", "running")
        d.console_command("vm1", "echo back-$((3*3))", "back-9")

        # Over capacity (memory overcommit 0.5 of this host's RAM): refused, naming the resource.
        r = d.cli("launch", "--name", "huge", "--memory", "16G")
        assert r.returncode == 1 and "not enough memory" in r.stderr, r
        assert d.http.get("/v1/vms/huge").status_code == 404

        # A graceful stop powers the guest off.
        r = d.cli("stop", "vm7")
        assert r.returncode == 0, r.stderr
        assert d.vm("vm7")["state"] == "stopped" and d.vm("vm7")["reason"] == "poweroff"
    finally:
        d.cleanup()
        d.stop()


def cli_console_session(d: Daemon, name: str, command: str, expect: str, timeout: float = 60) -> bytes:
    """`vmkit console NAME` on a pseudo-terminal, as a user types: run a
    command, see its output, detach with Ctrl-A x. Returns what was shown."""
    import pty
    import select
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(d.env)
        os.execv(sys.executable, [sys.executable, "-m", "vmkit", "console", name])
    seen = b""
    deadline = time.monotonic() + timeout
    sent = False
    try:
        while expect.encode() not in seen.split(command.encode(), 1)[-1] or not sent:
            assert time.monotonic() < deadline, f"vmkit console showed {seen[-1500:]!r}"
            if not sent and b"Ctrl-A x detaches" in seen:
                os.write(fd, command.encode() + b"\r")
                sent = True
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
        os.write(fd, b"\x01x")                  # Ctrl-A x: detach
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, seen[-1500:]
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
    return seen


def test_cpu_weights_share_one_core(image, tmp_path):
    """Two spinning VMs with weights 1:3 on a pool of one core get CPU time
    within 20% of 1:3.  CPU time, not guest instructions: with the
    translating tier, how many instructions a CPU second buys depends on how
    much of the guest's code is translated yet."""
    d = Daemon(tmp_path / "state", "--cores", "1")
    try:
        for name, weight in (("light", 100), ("heavy", 300)):
            r = d.cli("launch", "--name", name, "--memory", "192M", "--no-net", "--cpu-weight", str(weight))
            assert r.returncode == 0, r.stderr
        for name in ("light", "heavy"):
            d.wait_state(name, "running")
            d.console_command(name, "while :; do :; done & echo spin$((1+1))", "spin2")
        time.sleep(4)                                   # the pacer settles
        start = {n: d.vm(n) for n in ("light", "heavy")}
        time.sleep(12)
        end = {n: d.vm(n) for n in ("light", "heavy")}
        light, heavy = (end[n]["cpu_seconds"] - start[n]["cpu_seconds"] for n in ("light", "heavy"))
        ratio = heavy / light
        insns = {n: end[n]["instructions"] - start[n]["instructions"] for n in ("light", "heavy")}
        print(f"CPU seconds in 12 s: light {light:.2f}, heavy {heavy:.2f}, ratio {ratio:.2f} "
              f"(instructions: light {insns['light']:,}, heavy {insns['heavy']:,})")
        assert 2.4 <= ratio <= 3.6, ratio
    finally:
        d.cleanup()
        d.stop()


def _boot_seconds(d: Daemon, name: str) -> float:
    t0 = time.monotonic()
    r = d.cli("launch", "--name", name, "--memory", "192M", "--no-net")
    assert r.returncode == 0, r.stderr
    d.wait_state(name, "running")
    d.console_command(name, "echo up$((2+3))", "up5")
    return time.monotonic() - t0


def test_console_flood_does_not_slow_another_boot(image, tmp_path):
    """A VM writing to its console as fast as it can does not slow another
    VM's boot beyond its share of the host, and its serial log stays capped."""
    d = Daemon(tmp_path / "state")
    try:
        alone = _boot_seconds(d, "first")
        d.cli("delete", "--force", "first")
        r = d.cli("launch", "--name", "flood", "--memory", "192M", "--no-net")
        assert r.returncode == 0, r.stderr
        d.wait_state("flood", "running")
        d.console_command("flood", "(while :; do cat /proc/cpuinfo /proc/interrupts; done) & echo fl$((1+1))", "fl2")
        time.sleep(2)
        beside = _boot_seconds(d, "second")
        print(f"boot to a prompt: alone {alone:.1f} s, beside a console flood {beside:.1f} s")
        assert beside <= 1.6 * alone + 3, (alone, beside)
        vmdir = tmp_path / "state" / "vms" / "flood"
        logged = sum(p.stat().st_size for p in vmdir.glob("serial.log*"))
        cap = d.vm("flood")["spec"]["limits"]["console_log_bytes"]
        assert 0 < logged <= cap, (logged, cap)
        assert d.vm("flood")["state"] == "running"
    finally:
        d.cleanup()
        d.stop()


def test_tcp_listener_needs_the_token(tmp_path):
    """`vmkit daemon --tcp`: a request without the bearer token is refused,
    with it served; the unix socket needs none."""
    import socket as socketlib
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = Daemon(tmp_path / "state", "--tcp", f"127.0.0.1:{port}")
    try:
        token = (tmp_path / "state" / "token").read_text().strip()
        assert (tmp_path / "state" / "token").stat().st_mode & 0o077 == 0
        url = f"http://127.0.0.1:{port}/v1/vms"
        r = httpx.get(url, timeout=10)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
        r = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200 and r.json() == []
        assert d.http.get("/v1/vms").status_code == 200
        assert (tmp_path / "state" / "vmkitd.sock").stat().st_mode & 0o077 == 0
    finally:
        d.stop()
