"""The `vmkit` verbs that talk to vmkitd (Multipass-style):

    vmkit daemon                        run vmkitd in the foreground
    vmkit launch [IMAGE] --name web     create and start
    vmkit create / start / stop [--force] / restart / pause / resume / delete NAME
    vmkit list (ls) / info NAME         --format table|json
    vmkit console NAME                  attach; Ctrl-A x detaches
    vmkit logs NAME                     the serial log
    vmkit events [--follow]             what happened to the VMs

The daemon's socket is STATE_DIR/vmkitd.sock, or $VMKIT_SOCKET. Exit status:
0, 1 when the daemon refuses (its message is printed), 2 on bad usage,
3 when no daemon answers.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3


class Format(str, Enum):
    table = "table"
    json = "json"


FORMAT = typer.Option(Format.table, "--format", help="table or json.")


def _client():
    from vmkit.hypervisor.client import Client
    return Client()


def _call(method: str, path: str, **kw):
    from vmkit.hypervisor.client import ClientError
    client = _client()
    try:
        return client.request(method, path, **kw)
    except ClientError as e:
        print(f"vmkit: error: {e}", file=sys.stderr)
        raise typer.Exit(EXIT_NO_DAEMON if e.kind == "unavailable" else EXIT_REFUSED)
    finally:
        client.close()


def _size_mib(text: str, what: str) -> int:
    from vmkit.machine.board import MachineError, parse_memory
    try:
        return parse_memory(text) >> 20
    except MachineError:
        print(f"vmkit: error: {what} {text!r}: use e.g. 512M or 2G", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE)


def _disk_gib(text: str) -> int:
    t = text.strip().upper().rstrip("B")
    try:
        if t.endswith("G"):
            return int(t[:-1])
        if t.endswith("T"):
            return int(t[:-1]) * 1024
        return int(t)
    except ValueError:
        print(f"vmkit: error: --disk {text!r}: use whole gigabytes, e.g. 8G", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE)


def _show_vms(vms: list[dict], fmt: Format) -> None:
    if fmt == Format.json:
        print(json.dumps(vms, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for col in ("Name", "State", "Image", "CPUs", "Memory", "Disk", "Reason"):
        table.add_column(col)
    for vm in vms:
        s = vm["spec"]
        table.add_row(s["name"], vm["state"], s["image"], str(s["cpus"]), f"{s['memory_mib']}M",
                      f"{s['disk_gib']}G", (vm.get("reason") or "")[:60])
    Console().print(table)


def _show_vm(vm: dict, fmt: Format) -> None:
    if fmt == Format.json:
        print(json.dumps(vm, indent=2))
        return
    s = vm["spec"]
    rows = [("Name", s["name"]), ("State", vm["state"]), ("Image", s["image"]), ("CPUs", s["cpus"]),
            ("Memory", f"{s['memory_mib']} MiB"), ("Disk", f"{s['disk_gib']} GiB"),
            ("Network", "user" if s["net"] else "none"), ("Forwards", ", ".join(s["hostfwd"]) or "-"),
            ("Restart", s["restart"]), ("CPU weight", s["limits"]["cpu_weight"]),
            ("CPU max", s["limits"]["cpu_max"] or "-"), ("PID", vm.get("pid") or "-"),
            ("Restarts", vm.get("restarts", 0)), ("Reason", vm.get("reason") or "-")]
    if vm.get("instructions") is not None:
        rows.append(("Instructions", f"{vm['instructions']:,}"))
    if vm.get("rss_bytes"):
        rows.append(("Worker RSS", f"{vm['rss_bytes'] >> 20} MiB"))
    for k, v in rows:
        print(f"{k + ':':<14}{v}")
    if vm["state"] == "crashed" and vm.get("console_tail"):
        print("Console tail:")
        print(vm["console_tail"][-1500:])


def _spec(name, image, cpus, memory, disk, net, forward, restart, cpu_weight, cpu_max, append, jit) -> dict:
    return {"name": name, "image": image, "cpus": cpus, "memory_mib": _size_mib(memory, "--memory"),
            "disk_gib": _disk_gib(disk), "net": net, "hostfwd": forward or [], "restart": restart,
            "limits": {"cpu_weight": cpu_weight, "cpu_max": cpu_max}, "append": append, "jit": jit}


def _wait_state(name: str, states: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        vm = _call("GET", f"/v1/vms/{name}")
        if vm["state"] in states or time.monotonic() > deadline:
            return vm
        time.sleep(0.2)


def _wait_running(name: str, timeout: float = 180) -> dict:
    """Wait until the VM's worker runs (the first start compiles the CPU core); a
    worker that fails to start is an error with its reason."""
    vm = _wait_state(name, ("running", "crashed", "stopped"), timeout)
    if vm["state"] != "running":
        why = vm.get("reason") or f"still {vm['state']} after {timeout:.0f} s"
        print(f"vmkit: error: {name} did not start: {why}", file=sys.stderr)
        raise typer.Exit(EXIT_REFUSED)
    return vm


def register(app: typer.Typer) -> None:
    """Add the daemon verbs to the main `vmkit` app."""

    def define(name, image, cpus, memory, disk, net, forward, restart, cpu_weight, cpu_max, append, jit, start, fmt):
        if name is None:
            import secrets
            name = f"vm-{secrets.token_hex(3)}"
        vm = _call("POST", "/v1/vms", params={"start": start},
                   json=_spec(name, image, cpus, memory, disk, net, forward, restart, cpu_weight, cpu_max, append,
                              jit))
        if start:
            vm = _wait_running(name)
        if fmt == Format.json:
            _show_vm(vm, fmt)
        else:
            print(f"{'Launched' if start else 'Created'}: {vm['spec']['name']}")

    opts = dict(
        cpus=typer.Option(1, "--cpus", "-c", help="vCPUs (1 for now)."),
        memory=typer.Option("512M", "--memory", "-m", help="Guest RAM, e.g. 512M, 1G."),
        disk=typer.Option("4G", "--disk", "-d", help="Root disk size (a qcow2 overlay of the image), e.g. 8G."),
        net=typer.Option(True, "--net/--no-net", help="A NIC on the user-mode network."),
        forward=typer.Option(None, "--forward", "-p", help="Port forward as in --net user,hostfwd=: e.g. tcp::8080-:80 (repeatable)."),
        restart=typer.Option("no", "--restart", help="Restart policy: no, on-failure, always."),
        cpu_weight=typer.Option(100, "--cpu-weight", help="Share of host CPU under contention (1..10000)."),
        cpu_max=typer.Option(0.0, "--cpu-max", help="Hard cap in cores (0: none)."),
        append=typer.Option("", "--append", help="Extra kernel command line."),
        jit=typer.Option("on", "--jit", help="The translating CPU tier: on, off or check (as vmkit run --jit)."),
    )

    @app.command()
    def launch(image: str = typer.Argument("default", help="Image name (vmkit images ls)."),
               name: Optional[str] = typer.Option(None, "--name", "-n", help="VM name (a DNS label)."),
               cpus: int = opts["cpus"], memory: str = opts["memory"], disk: str = opts["disk"],
               net: bool = opts["net"], forward: Optional[list[str]] = opts["forward"],
               restart: str = opts["restart"], cpu_weight: int = opts["cpu_weight"],
               cpu_max: float = opts["cpu_max"], append: str = opts["append"], jit: str = opts["jit"],
               fmt: Format = FORMAT):
        """Create a VM from an image and start it (needs vmkitd: `vmkit daemon`)."""
        define(name, image, cpus, memory, disk, net, forward, restart, cpu_weight, cpu_max, append, jit, True, fmt)

    @app.command()
    def create(name: str = typer.Argument(..., help="VM name (a DNS label)."),
               image: str = typer.Option("default", "--image", help="Image name."),
               cpus: int = opts["cpus"], memory: str = opts["memory"], disk: str = opts["disk"],
               net: bool = opts["net"], forward: Optional[list[str]] = opts["forward"],
               restart: str = opts["restart"], cpu_weight: int = opts["cpu_weight"],
               cpu_max: float = opts["cpu_max"], append: str = opts["append"], jit: str = opts["jit"],
               fmt: Format = FORMAT):
        """Define a VM without starting it."""
        define(name, image, cpus, memory, disk, net, forward, restart, cpu_weight, cpu_max, append, jit, False, fmt)

    @app.command()
    def start(names: list[str] = typer.Argument(..., help="VM names.")):
        """Start stopped VMs (returns once their workers run)."""
        for n in names:
            _call("POST", f"/v1/vms/{n}/start")
        for n in names:
            _wait_running(n)

    @app.command()
    def stop(names: list[str] = typer.Argument(..., help="VM names."),
             force: bool = typer.Option(False, "--force", help="Kill at once instead of asking the guest to power off."),
             timeout: float = typer.Option(30.0, "--timeout", help="Seconds before a graceful stop becomes a kill."),
             wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the VM has stopped.")):
        """Stop VMs: the guest is asked to power off (SysRq over its serial console), killed after --timeout."""
        for n in names:
            _call("POST", f"/v1/vms/{n}/stop", json={"force": force, "timeout": timeout})
        if wait:
            for n in names:
                vm = _wait_state(n, ("stopped", "crashed"), timeout + 15)
                if vm["state"] not in ("stopped", "crashed"):
                    print(f"vmkit: error: {n} is still {vm['state']}", file=sys.stderr)
                    raise typer.Exit(EXIT_REFUSED)

    @app.command()
    def restart(names: list[str] = typer.Argument(..., help="VM names.")):
        """Reboot running VMs (a reset of the machine)."""
        for n in names:
            _call("POST", f"/v1/vms/{n}/reboot")

    @app.command()
    def pause(names: list[str] = typer.Argument(..., help="VM names.")):
        """Pause VMs: their CPU stops; memory and devices stay."""
        for n in names:
            _call("POST", f"/v1/vms/{n}/pause")

    @app.command()
    def resume(names: list[str] = typer.Argument(..., help="VM names.")):
        """Resume paused VMs."""
        for n in names:
            _call("POST", f"/v1/vms/{n}/resume")

    @app.command()
    def delete(names: list[str] = typer.Argument(..., help="VM names."),
               force: bool = typer.Option(False, "--force", help="Kill a running VM first.")):
        """Delete VMs and their disks."""
        for n in names:
            _call("DELETE", f"/v1/vms/{n}", params={"force": force})

    @app.command("list")
    def list_(fmt: Format = FORMAT):
        """List the VMs."""
        _show_vms(_call("GET", "/v1/vms"), fmt)

    @app.command("ls", hidden=True)
    def ls(fmt: Format = FORMAT):
        """List the VMs."""
        _show_vms(_call("GET", "/v1/vms"), fmt)

    @app.command()
    def info(name: str = typer.Argument(..., help="VM name."), fmt: Format = FORMAT):
        """Show one VM: its definition, state and figures."""
        _show_vm(_call("GET", f"/v1/vms/{name}"), fmt)

    @app.command()
    def logs(name: str = typer.Argument(..., help="VM name."),
             tail: int = typer.Option(64 * 1024, "--tail", help="Bytes from the end.")):
        """Print the VM's serial log."""
        sys.stdout.write(_call("GET", f"/v1/vms/{name}/log", params={"tail": tail}))

    @app.command()
    def events(follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing events as they happen."),
               fmt: Format = FORMAT):
        """Print the daemon's events (created, started, stopped, crashed, ...)."""
        def show(ev: dict) -> None:
            if fmt == Format.json:
                print(json.dumps(ev), flush=True)
            else:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev["time"]))
                print(f"{stamp}  {ev['vm']:<16} {ev['kind']:<16} {ev['detail']}", flush=True)
        last = 0
        for ev in _call("GET", "/v1/events", params={"limit": 10000}):
            show(ev)
            last = ev["id"]
        if not follow:
            return
        from vmkit.hypervisor.client import ClientError
        client = _client()
        try:
            for ev in client.stream_events(since=last):
                show(ev)
        except ClientError as e:
            print(f"vmkit: error: {e}", file=sys.stderr)
            raise typer.Exit(EXIT_NO_DAEMON)
        except KeyboardInterrupt:
            pass
        finally:
            client.close()

    @app.command()
    def console(name: str = typer.Argument(..., help="VM name.")):
        """Attach to the VM's serial console (Ctrl-A x detaches; the VM keeps running)."""
        from vmkit.hypervisor.client import ClientError
        client = _client()
        try:
            client.console(name)
        except ClientError as e:
            print(f"vmkit: error: {e}", file=sys.stderr)
            raise typer.Exit(EXIT_NO_DAEMON if e.kind == "unavailable" else EXIT_REFUSED)
        finally:
            client.close()

    @app.command()
    def daemon(state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="Registry, VM directories and socket (default DATA/vmkitd)."),
               socket: Optional[Path] = typer.Option(None, "--socket", help="The API's unix socket (default STATE_DIR/vmkitd.sock)."),
               tcp: Optional[str] = typer.Option(None, "--tcp", help="Also listen on HOST:PORT; requests need the bearer token in STATE_DIR/token."),
               token_file: Optional[Path] = typer.Option(None, "--token-file", help="Bearer token for --tcp (made if missing)."),
               cores: Optional[int] = typer.Option(None, "--cores", help="Host cores shared among the VMs (default: all)."),
               cpu_overcommit: float = typer.Option(4.0, "--cpu-overcommit", help="vCPUs allowed per host core."),
               memory_overcommit: float = typer.Option(1.0, "--memory-overcommit", help="Guest RAM allowed per byte of host RAM."),
               stop_timeout: float = typer.Option(30.0, "--stop-timeout", help="Default seconds before a graceful stop becomes a kill.")):
        """Run vmkitd (the hypervisor daemon) in the foreground."""
        import logging

        from vmkit.hypervisor.daemon import DaemonConfig, DaemonError, default_state_dir, install_signal_handlers, serve
        logging.basicConfig(level=logging.INFO, format="vmkitd: %(message)s")
        install_signal_handlers()
        cfg = DaemonConfig(state_dir or default_state_dir(), socket, tcp, token_file, cores, cpu_overcommit,
                           memory_overcommit, stop_timeout)
        try:
            serve(cfg, ready=lambda p: print(f"vmkitd: listening on {p}", file=sys.stderr, flush=True))
        except DaemonError as e:
            print(f"vmkit: error: {e}", file=sys.stderr)
            raise typer.Exit(EXIT_USAGE)
