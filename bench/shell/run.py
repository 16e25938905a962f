"""bench/shell: a 20,000-iteration shell loop in the default VM, vmkit beside QEMU.

    python bench/shell/run.py [--repeat N] [--iterations N]

The default image's kernel and busybox boot with an initrd whose /init
prints a start marker, runs `i=0; while [ $i -lt N ]; do i=$((i+1)); done`
in busybox sh, prints an end marker and powers off.  The time between the
two markers, seen on the host as the console output arrives, is the loop's
time: no boot, no start-up.  QEMU TCG runs the same kernel, initrd and
command line; vmkit runs with translation on and off.  Best of --repeat.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = b"vmkit-bench-loop-start"
END = b"vmkit-bench-loop-end"
APPEND = "console=ttyS0 quiet cryptomgr.notests"


def make_initrd(path: Path, iterations: int) -> Path:
    from vmkit.images import default_image_paths
    from vmkit.images.initramfs import busybox_initramfs
    _, _, default_initrd, _ = default_image_paths()
    script = (b"#!/bin/sh\necho " + START + b"\ni=0\nwhile [ $i -lt " + str(iterations).encode()
              + b" ]; do i=$((i+1)); done\necho " + END + b" $i\npoweroff -f\n")
    path.write_bytes(busybox_initramfs(default_initrd.read_bytes(), script, ("sh", "echo", "poweroff")))
    return path


def timed_loop(cmd) -> float:
    """Seconds between the start and end markers on the guest console."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    buf = b""
    t_start = t_end = None
    while True:
        chunk = p.stdout.read1(65536)
        if not chunk:
            break
        buf += chunk
        now = time.monotonic()
        if t_start is None and START in buf:
            t_start = now
        if t_end is None and END in buf:
            t_end = now
    p.wait()
    if p.returncode != 0 or t_start is None or t_end is None:
        sys.exit(f"run failed ({p.returncode}): {' '.join(cmd)}\n{buf.decode(errors='replace')[-3000:]}"
                 f"\n{p.stderr.read().decode(errors='replace')}")
    return t_end - t_start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=20000)
    args = ap.parse_args()
    from vmkit.images import default_image_paths, pull
    pull(progress=False)
    kernel, firmware, _, _ = default_image_paths()
    with tempfile.TemporaryDirectory() as tmp:
        initrd = make_initrd(Path(tmp) / "loop.cpio", args.iterations)
        common = ["--bios", str(firmware), "--kernel", str(kernel), "--initrd", str(initrd),
                  "--append", APPEND, "--timeout", "900"]
        cmds = {name: [sys.executable, "-m", "vmkit", "run", *common, "--jit", mode]
                for name, mode in (("jit-on", "on"), ("jit-off", "off"))}
        cmds["QEMU"] = ["qemu-system-riscv64", "-M", "virt", "-m", "512M", "-nographic", "-bios", str(firmware),
                        "-kernel", str(kernel), "-initrd", str(initrd), "-append", APPEND]
        timed_loop(cmds["jit-on"])  # warm the numba cache
        best = {}
        for _ in range(args.repeat):
            for name, cmd in cmds.items():
                best[name] = min(best.get(name, 1e9), timed_loop(cmd))
    q = best["QEMU"]
    print(f"{args.iterations:,}-iteration shell loop: QEMU {q:.2f} s, jit-on {best['jit-on']:.2f} s "
          f"({best['jit-on'] / q:.2f}x), jit-off {best['jit-off']:.2f} s ({best['jit-off'] / q:.2f}x)")


if __name__ == "__main__":
    main()
