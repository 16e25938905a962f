"""bench/density: VMs started per minute and per-VM host memory, vmkitd beside QEMU TCG.

    python bench/density/run.py [--vms 4] [--memory 128M] [--skip-qemu]

vmkit: starts vmkitd in a temporary state directory and runs `vmkit launch
--memory M` for --vms VMs at once (the default image: each VM boots from a
qcow2 overlay of the image's ext4 root disk, with a NIC on the user-mode
network).  QEMU: as many `qemu-system-riscv64 -M virt -m M` processes at once
on the same kernel, firmware and initramfs, with the image's command line
and a virtio-net NIC on slirp (-netdev user); QEMU boots no root disk, so
the boot paths differ slightly.  The two fleets run one after the other,
never together.

  start rate     --vms / wall minutes from the first launch (the first
                 `vmkit launch`, the first QEMU exec) until every VM's
                 console shows the shell prompt "vmkit:/# " (vmkit: the
                 console WebSocket of the API; QEMU: its serial on stdout)
  overhead       with every VM idle at its prompt, per VM process: VmRSS
                 (/proc/PID/status) minus the resident size of its guest RAM,
                 the anonymous mapping in /proc/PID/smaps whose size is the
                 guest RAM's (vmkit: the machine's numpy array; QEMU: its RAM
                 block).  Mean, min, max over the VMs.  RSS counts pages
                 shared with other processes (libpython, numba, QEMU's
                 libraries) in full; the Pss row shares them out instead.

Also shown: the guest RAM's resident MiB, the daemon's own VmRSS and
Firecracker's published figures.  Ratio = vmkit/QEMU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.hypervisor.vmkitd import PROMPT, Vmkitd, kill_named  # noqa: E402
BOOT_TIMEOUT = 900.0
MiB = 1 << 20


# --- /proc -----------------------------------------------------------------------------

def vm_rss(pid: int) -> int:
    """VmRSS of a process, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def smaps(pid: int) -> list[dict]:
    """The mappings of a process: {'range', 'path', 'Size', 'Rss', 'Pss', ...} with sizes in bytes."""
    maps, cur = [], None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            fields = line.split(None, 5)
            cur = {"range": head, "path": fields[5].strip() if len(fields) > 5 else ""}
            maps.append(cur)
        elif head.endswith(":") and rest.strip().endswith("kB"):
            cur[head[:-1]] = int(rest.split()[0]) * 1024
    return maps


def memory_figures(pid: int, guest_bytes: int) -> dict:
    """VmRSS, the guest RAM mapping's Rss/Pss, the overheads, and how the mapping was found."""
    rss = vm_rss(pid)
    maps = smaps(pid)
    anon = [m for m in maps if not m["path"]]
    exact = [m for m in anon if m.get("Size") == guest_bytes]
    if exact:
        ram = max(exact, key=lambda m: m.get("Rss", 0))
        method = "anonymous mapping of exactly the guest RAM size"
        if len(exact) > 1:
            method += f" (the most resident of {len(exact)})"
    else:                      # e.g. an allocator's header page: the smallest anonymous mapping that holds it
        bigger = [m for m in anon if m.get("Size", 0) >= guest_bytes]
        if not bigger:
            raise RuntimeError(f"pid {pid}: no anonymous mapping of {guest_bytes} bytes or more")
        ram = min(bigger, key=lambda m: m["Size"])
        method = f"smallest anonymous mapping >= guest RAM ({ram['Size'] // 1024} KiB)"
    pss = sum(m.get("Pss", 0) for m in maps)
    return {"rss": rss, "ram_rss": ram.get("Rss", 0), "overhead": rss - ram.get("Rss", 0),
            "pss_overhead": pss - ram.get("Pss", 0), "method": method}


# --- vmkit -----------------------------------------------------------------------------

class BenchVmkitd(Vmkitd):
    """vmkitd in a temporary state directory (tests/hypervisor/vmkitd.py), plus
    concurrent launches and the time each console first shows the prompt."""

    def __init__(self, state: Path) -> None:
        super().__init__(state, start_timeout=60)

    def launch(self, name: str, memory: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "vmkit", "launch", "--name", name, "--memory", memory],
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_prompt(self, name: str, deadline: float) -> float:
        """Monotonic time at which `name`'s console first showed the prompt."""
        import httpx
        from websockets.sync.client import unix_connect
        http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.sock)), base_url="http://vmkitd",
                            timeout=30)
        try:
            while (vm := http.get(f"/v1/vms/{name}").json())["state"] != "running":
                if vm["state"] in ("crashed", "stopped") or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} is {vm['state']} ({vm.get('reason')}):\n{self.log_of(name)}")
                time.sleep(0.1)
            while True:
                try:
                    ws = unix_connect(str(self.sock), f"ws://vmkitd/v1/vms/{name}/console")
                    break
                except Exception:  # noqa: BLE001 - the worker's console socket may not be up yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            with ws:
                # Attached first, then the log: a prompt printed before we attached is in the log.
                if PROMPT in http.get(f"/v1/vms/{name}/log", params={"tail": 4096}).content:
                    return time.monotonic()
                buf = b""
                while PROMPT not in buf:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name}: no prompt on the console; got {buf[-1500:]!r}")
                    try:
                        buf = buf[-4096:] + ws.recv(timeout=0.5)
                    except TimeoutError:
                        pass
                return time.monotonic()
        finally:
            http.close()

    def close(self) -> None:
        """Delete every VM, stop the daemon, and kill whatever still names the state directory."""
        try:
            self.cleanup()
        except Exception as e:  # noqa: BLE001 - the rest still runs
            print(f"density: deleting the VMs: {e}", file=sys.stderr)
        finally:
            self.stop()
            kill_named(str(self.state))


def run_vmkit(tmp: Path, n: int, memory: str, guest_bytes: int, settle: float) -> dict:
    d = BenchVmkitd(tmp / "state")
    names = [f"dens{i}" for i in range(n)]
    try:
        t0 = time.monotonic()
        deadline = t0 + BOOT_TIMEOUT
        launches = [d.launch(name, memory) for name in names]
        prompt_at: dict[str, float] = {}
        errors: list[str] = []

        def watch(name):
            try:
                prompt_at[name] = d.wait_prompt(name, deadline)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"{name}: {e}")

        for name, p in zip(names, launches):
            out, err = p.communicate(timeout=180)
            if p.returncode != 0:
                raise RuntimeError(f"vmkit launch {name} failed ({p.returncode}): {out}{err}")
        t_launched = time.monotonic() - t0
        threads = [threading.Thread(target=watch, args=(name,), daemon=True) for name in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError("\n".join(errors))
        times = sorted(t - t0 for t in prompt_at.values())
        print(f"vmkit: {n} launches returned after {t_launched:.1f} s; prompts at "
              + ", ".join(f"{t:.0f}" for t in times) + " s", file=sys.stderr, flush=True)
        time.sleep(settle)                      # every guest idle at its prompt
        figures = [memory_figures(d.vm(name)["pid"], guest_bytes) for name in names]
        return {"wall": times[-1], "first": times[0], "mem": figures, "daemon_rss": vm_rss(d.proc.pid)}
    finally:
        d.close()


# --- QEMU ------------------------------------------------------------------------------

class QemuVm:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.buf = b""
        self.prompt_at = None
        self.done = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while chunk := self.proc.stdout.read1(65536):
            self.buf = self.buf[-8192:] + chunk
            if self.prompt_at is None and PROMPT in self.buf:
                self.prompt_at = time.monotonic()
                self.done.set()
        self.done.set()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_qemu(n: int, guest_bytes: int, settle: float) -> dict:
    from vmkit.images import default_image_paths
    kernel, firmware, initrd, append = default_image_paths()
    argv = ["qemu-system-riscv64", "-M", "virt", "-m", f"{guest_bytes // MiB}M", "-nographic",
            "-bios", str(firmware), "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
            "-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"]
    vms: list[QemuVm] = []
    try:
        t0 = time.monotonic()
        vms = [QemuVm(argv) for _ in range(n)]
        for vm in vms:
            vm.done.wait(max(0.0, t0 + BOOT_TIMEOUT - time.monotonic()))
            if vm.prompt_at is None:
                raise RuntimeError(f"QEMU (pid {vm.proc.pid}, exit {vm.proc.poll()}): no prompt; "
                                   f"got {vm.buf[-1500:].decode(errors='replace')}")
        times = sorted(vm.prompt_at - t0 for vm in vms)
        print("qemu: prompts at " + ", ".join(f"{t:.0f}" for t in times) + " s", file=sys.stderr, flush=True)
        time.sleep(settle)
        figures = [memory_figures(vm.proc.pid, guest_bytes) for vm in vms]
        return {"wall": times[-1], "first": times[0], "mem": figures, "append": append}
    finally:
        for vm in vms:
            vm.close()


# --- report ----------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=4, help="VMs started at once (default 4)")
    ap.add_argument("--memory", default="128M", help="guest RAM of each VM (default 128M)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds idle at the prompt before measuring memory")
    ap.add_argument("--skip-qemu", action="store_true", help="vmkit only")
    args = ap.parse_args()
    if args.vms < 1:
        ap.error("--vms must be at least 1")
    from vmkit.machine.board import MachineError, parse_memory
    try:
        guest_bytes = parse_memory(args.memory)
    except MachineError as e:
        ap.error(f"--memory {args.memory!r}: {e}")
    memory = f"{guest_bytes // MiB}M"

    # SIGTERM/SIGHUP unwind through the finally blocks like Ctrl-C does.
    def _stop(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)

    from vmkit.images import pull
    pull(progress=False)
    # The CPU core's numba cache, so the first worker does not compile it inside the timing.
    subprocess.run([sys.executable, "-c", "from vmkit.cpu.hart import ensure_compiled; ensure_compiled()"],
                   check=True)
    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="vmkit-density-"))
    try:
        vm = run_vmkit(tmp, args.vms, memory, guest_bytes, args.settle)
        qemu = None if args.skip_qemu else run_qemu(args.vms, guest_bytes, args.settle)
    finally:
        kill_named(str(tmp))
        shutil.rmtree(tmp, ignore_errors=True)

    def stats(r, key):
        vals = [m[key] / MiB for m in r["mem"]]
        return sum(vals) / len(vals), min(vals), max(vals)

    rows = [("VMs started per minute", lambda r: args.vms / (r["wall"] / 60), "{:.2f}"),
            ("wall time to all prompts, s", lambda r: r["wall"], "{:.1f}"),
            ("first prompt, s", lambda r: r["first"], "{:.1f}")]
    for key, label in (("overhead", "overhead (VmRSS - RAM Rss)"), ("pss_overhead", "overhead by Pss")):
        for i, which in enumerate(("mean", "min", "max")):
            rows.append((f"{label} {which}, MiB", lambda r, key=key, i=i: stats(r, key)[i], "{:.1f}"))
    rows += [("worker VmRSS mean, MiB", lambda r: stats(r, "rss")[0], "{:.1f}"),
             ("guest RAM resident mean, MiB", lambda r: stats(r, "ram_rss")[0], "{:.1f}"),
             ("vmkitd VmRSS, MiB", lambda r: r["daemon_rss"] / MiB if "daemon_rss" in r else None, "{:.1f}")]

    print(f"--vms {args.vms} --memory {memory}: {args.vms} VMs started at once, 1 vCPU each, on "
          f"{os.cpu_count()} host CPUs; host load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print("boot paths differ slightly: vmkit VMs (vmkitd, `vmkit launch`) mount the image's ext4 root disk "
          "(a qcow2 overlay) as /; QEMU boots the same kernel into the initramfs shell"
          + (f" (-append {qemu['append']!r})" if qemu else ""))
    print(f"{'':40} {'vmkit':>9} {'qemu':>9} {'ratio':>7}")
    for label, fn, fmt in rows:
        v = fn(vm)
        q = fn(qemu) if qemu else None
        cell = lambda x: f"{fmt.format(x):>9}" if x is not None else f"{'-':>9}"  # noqa: E731
        ratio = f"{v / q:7.2f}" if v is not None and q else f"{'-':>7}"
        print(f"{label:40} {cell(v)} {cell(q)} {ratio}")
    for name, r in (("vmkit", vm), ("qemu", qemu)):
        if r:
            methods = sorted({m["method"] for m in r["mem"]})
            print(f"{name} guest RAM found as: {'; '.join(methods)}")
    per_core = args.vms / vm["wall"] / (os.cpu_count() or 1)
    print("Firecracker (published): 5 MiB per-VM memory overhead; 150 microVMs/s/host start rate -- "
          "SPECIFICATION.md: VMM memory overhead <= 5 MiB for a 1 vCPU, 128 MiB microVM (on KVM); "
          "docs/design.md: 5 microVMs per host core per second; 150/s per host: the NSDI '20 paper")
    print(f"(vmkit here: {per_core:.3f} VMs per host core per second, to a shell prompt; Firecracker's rate "
          "is to a running microVM on KVM)")


if __name__ == "__main__":
    main()
