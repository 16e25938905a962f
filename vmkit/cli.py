"""The `vmkit` command line.

`vmkit run` works alone, without a daemon, like qemu-system-riscv64:
    vmkit run                                   boot the default Debian image from its own disk
    vmkit run --bios none --kernel prog.elf     bare-metal program in M-mode
    vmkit run --bios fw_dynamic.bin --kernel Image --initrd initrd.img --append "console=ttyS0"
Exit status: 0 on guest poweroff (or Ctrl-A x), the finisher's code when the
guest reports failure, 124 on --timeout, 2 on bad options or images.

Many VMs are managed by the daemon, vmkitd (`vmkit daemon`), with the verbs
of vmkit/hypervisor/cli.py: launch, list, info, stop, console, ...
"""

import sys
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="vmkit: RISC-V virtual machines written in Python.")

EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_JIT_CHECK = 3   # --jit check: a translation and the interpreter disagreed


def _fail(message: str) -> None:
    print(f"vmkit: error: {message}", file=sys.stderr)
    raise typer.Exit(EXIT_USAGE)


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def run(
    bios: Optional[str] = typer.Option(None, "--bios", help="Firmware: OpenSBI fw_dynamic (.bin or ELF), or 'none' to run --kernel directly in M-mode."),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="Kernel Image or ELF (loaded at 0x80200000; with --bios none, the program to run)."),
    initrd: Optional[str] = typer.Option(None, "--initrd", help="Initial ramdisk."),
    append: Optional[str] = typer.Option(None, "--append", help="Kernel command line."),
    memory: str = typer.Option("512M", "-m", "--memory", help="Guest RAM, e.g. 512M, 1G."),
    disk: Optional[list[str]] = typer.Option(None, "--disk", help="Disk image: PATH[,format=raw|qcow2][,readonly=on][,cache=writeback|none|unsafe]; repeat for more disks (vda, vdb, ...)."),
    net: str = typer.Option("user", "--net", help="Network: user[,hostfwd=[tcp|udp]:[HOSTADDR]:HOSTPORT-:GUESTPORT]...[,restrict=on] (NAT: guest 10.0.2.15 by DHCP, gateway and host 10.0.2.2, DNS 10.0.2.3; HOSTADDR defaults to 127.0.0.1; HOSTPORT 0 picks a free port) or none."),
    mac: Optional[str] = typer.Option(None, "--mac", help="The NIC's MAC address (default 52:54:00:12:34:56)."),
    smp: int = typer.Option(1, "--smp", help="Number of CPUs (only 1 is supported yet)."),
    console: str = typer.Option("stdio", "--console", help="stdio, file:PATH or none."),
    clock: str = typer.Option("host", "--clock", help="host (real time) or deterministic (time advances with instructions; runs repeat exactly)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop after this many seconds (exit status 124)."),
    max_instructions: Optional[int] = typer.Option(None, "--max-instructions", help="Stop after this many guest instructions (exit status 124)."),
    trace: Optional[int] = typer.Option(None, "--trace", help="Print the first N instructions (pc, bits, disassembly, register written) to stderr."),
    trace_after: Optional[str] = typer.Option(None, "--trace-after", help="With --trace: start tracing when pc reaches this address (hex)."),
    dumpdtb: Optional[str] = typer.Option(None, "--dumpdtb", help="Write the generated device tree blob to this file."),
    stats: bool = typer.Option(False, "--stats", help="Print instructions, time and MIPS to stderr at exit (and what the translating tier did)."),
    jit: Optional[str] = typer.Option(None, "--jit", help="The translating CPU tier: on (default; hot guest code runs as host machine code), off (interpreter only), or check (run every translation beside the interpreter and stop with a report at the first difference). Default: $VMKIT_JIT, else on."),
    jit_threshold: Optional[int] = typer.Option(None, "--jit-threshold", help="Translate a block once it has been reached this many times (default 50; 1 translates every block at its first execution). Default: $VMKIT_JIT_THRESHOLD."),
    jit_cache: Optional[str] = typer.Option(None, "--jit-cache", help="Size limit of the code cache, e.g. 64M (the default); flushed when full."),
):
    """Boot a virtual machine (the default image when no --kernel/--bios is given).

    The default VM boots from its own disk, DATA/vms/default/disk.qcow2 (DATA is
    $VMKIT_DATA_DIR, else ~/.local/share/vmkit): a qcow2 overlay of the image's
    rootfs.qcow2, made on the first run. It is /dev/vda (--disk options become
    vdb, vdc, ...), and what the guest writes to it persists across runs and
    `vmkit images pull`, unless the pull changes the image: then the disk is made
    afresh, with a warning. Delete the disk for a fresh one. --append replaces the
    whole command line, root=/dev/vda included (without it the initramfs shell stays).
    """
    from vmkit.machine.board import Machine, MachineConfig, MachineError, parse_memory
    from vmkit.machine.console import Console, ConsoleError
    from vmkit.machine.disks import DiskSpec, DiskSpecError, parse_disk
    from vmkit.machine.loader import LoadError
    from vmkit.machine.netspec import NetSpecError, parse_net
    from vmkit.cpu.jitconfig import JitConfig, JitError

    try:
        jit_config = JitConfig.from_env(jit, jit_threshold,
                                        parse_memory(jit_cache, minimum=1 << 20) if jit_cache else None)
        mem = parse_memory(memory)
        disks = [parse_disk(d) for d in disk or []]
        netspec = parse_net(net, mac)
        if bios is None and kernel is None:
            from vmkit.images import ImageError, default_image_paths, default_vm_disk, pull, root_disk_cmdline
            try:
                try:
                    k, fw, rd, default_append = default_image_paths()
                except ImageError:  # first use: build it, as the README promises
                    print("vmkit: the default image is not here yet: building it from Debian's "
                          "packages (once)", file=sys.stderr)
                    pull(progress=sys.stderr.isatty())
                    k, fw, rd, default_append = default_image_paths()
                root = default_vm_disk(warn=lambda m: print(f"vmkit: warning: {m}", file=sys.stderr))
            except ImageError as e:
                _fail(str(e))
            bios, kernel = str(fw), str(k)
            initrd = initrd or str(rd)
            append = append if append is not None else root_disk_cmdline(default_append)
            disks.insert(0, DiskSpec(str(root), "qcow2"))
        cfg = MachineConfig(memory=mem, bios=bios, kernel=kernel, initrd=initrd, append=append or "",
                            smp=smp, clock=clock, dtb_out=dumpdtb, disks=disks, net=netspec,
                            jit=jit_config)
        con = Console(console)
        machine = Machine(cfg, con)
    except (MachineError, LoadError, ConsoleError, DiskSpecError, NetSpecError, JitError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or ''}: {e.strerror}")

    if machine.usernet is not None:
        for rule, port in machine.usernet.forward_ports:
            print(f"vmkit: forwarding {rule.proto} {rule.host_addr}:{port} to guest port {rule.guest_port}",
                  file=sys.stderr)
    con.start()
    try:
        halted = None
        if trace:
            from vmkit.cpu import state as S
            from vmkit.machine.tracer import trace as run_trace
            if trace_after:
                try:
                    machine.hart.st[S.BREAK_PC] = int(trace_after, 16)
                except ValueError:
                    _fail(f"--trace-after {trace_after!r}: not a hex address")
                r = machine.run(timeout=timeout, max_instructions=max_instructions)
                machine.hart.st[S.BREAK_PC] = -1
                if r.reason != "break":
                    halted = r
            if halted is None:
                reason = run_trace(machine, trace)
                if reason:
                    halted = machine._result(reason, machine._halt[1], 0, 0)
        result = halted or machine.run(timeout=timeout, max_instructions=max_instructions)
    except JitError as e:  # --jit check found a difference: a bug in the tier
        con.close()
        print(f"vmkit: {e}", file=sys.stderr)
        raise typer.Exit(EXIT_JIT_CHECK) from None
    finally:
        jit_lines = machine.hart.jit_stats()
        machine.close()
        con.close()
    if stats:
        mips = result.instructions / result.seconds / 1e6 if result.seconds else 0.0
        print(f"vmkit: {result.reason}: {result.instructions} instructions in {result.seconds:.2f} s "
              f"({mips:.1f} MIPS)", file=sys.stderr)
        for line in jit_lines:
            print(f"vmkit: {line}", file=sys.stderr)
    if result.reason in ("timeout", "budget"):
        print(f"vmkit: {'timeout' if result.reason == 'timeout' else 'instruction limit'} reached, stopping the guest",
              file=sys.stderr)
        raise typer.Exit(EXIT_TIMEOUT)
    if result.reason == "fail":
        raise typer.Exit(result.exit_code or 1)
    raise typer.Exit(0)


def _mount_subcommands() -> None:
    from vmkit.images.cli import images_app
    from vmkit.storage.cli import disk_app
    app.add_typer(images_app, name="images", help="Guest images: pull, ls.")
    app.add_typer(disk_app, name="disk", help="Disk images: create, info, convert, check, resize, snapshot.")
    from vmkit.hypervisor.cli import register
    register(app)


_mount_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
