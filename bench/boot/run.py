"""bench/boot: Debian's kernel + OpenSBI + a tiny initrd, vmkit (translator on and off) beside QEMU TCG.

    python bench/boot/run.py [--repeat N]

QEMU, `vmkit run --jit on` and `vmkit run --jit off` boot the default
image's kernel and firmware with a minimal initrd whose /init prints a
marker and powers off at once, with the same command line.  Reported, best
of --repeat: wall time of the process to /init (the marker) and to power-off,
with the kernel's crypto self-tests on and off (cryptomgr.notests), and the
ratios vmkit/QEMU (1.00x: as fast as QEMU).  Wall time includes each
process's start-up (vmkit's ~1 s of loading the numba cache, which an untimed
first run warms).  vmkit uses the host clock, as QEMU does.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARKER = b"vmkit-bench-init-reached"
APPEND = "console=ttyS0 quiet"


def make_initrd(path: Path) -> Path:
    from vmkit.images import default_image_paths
    from vmkit.images.initramfs import busybox_initramfs
    _, _, default_initrd, _ = default_image_paths()
    path.write_bytes(busybox_initramfs(default_initrd.read_bytes(),
                                       b"#!/bin/sh\necho " + MARKER + b"\npoweroff -f\n",
                                       ("sh", "echo", "poweroff")))
    return path


def timed_boot(cmd):
    """(seconds to marker, seconds to exit) of one boot."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    buf = b""
    t_init = None
    while True:
        chunk = p.stdout.read1(65536)
        if not chunk:
            break
        buf += chunk
        if t_init is None and MARKER in buf:
            t_init = time.monotonic() - t0
    p.wait()
    t_end = time.monotonic() - t0
    if p.returncode != 0 or t_init is None:
        sys.exit(f"boot failed ({p.returncode}): {' '.join(cmd)}\n{buf.decode(errors='replace')[-3000:]}"
                 f"\n{p.stderr.read().decode(errors='replace')}")
    return t_init, t_end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from vmkit.images import default_image_paths, pull
    pull(progress=False)
    kernel, firmware, _, _ = default_image_paths()
    with tempfile.TemporaryDirectory() as tmp:
        initrd = make_initrd(Path(tmp) / "bench.cpio")
        common = ["--bios", str(firmware), "--kernel", str(kernel), "--initrd", str(initrd)]
        rows = []
        for label, append in (("self-tests on", APPEND), ("cryptomgr.notests", APPEND + " cryptomgr.notests")):
            cmds = {name: [sys.executable, "-m", "vmkit", "run", *common, "--append", append, "--jit", mode,
                           "--timeout", "900"] for name, mode in (("jit-on", "on"), ("jit-off", "off"))}
            cmds["QEMU"] = ["qemu-system-riscv64", "-M", "virt", "-m", "512M", "-nographic", "-bios", str(firmware),
                            "-kernel", str(kernel), "-initrd", str(initrd), "-append", append]
            if not rows:
                timed_boot(cmds["jit-on"])  # warm the numba cache
            best = {}
            for _ in range(args.repeat):
                for name, cmd in cmds.items():
                    r = timed_boot(cmd)
                    best[name] = min(best.get(name, r), r, key=lambda t: t[1])
            rows.append((label, best))
    print(f"{'':20} {'QEMU s':>8} {'jit-on s':>9} {'jit-off s':>9} {'on/QEMU':>8} {'off/QEMU':>8}")
    for label, best in rows:
        print(label)
        for i, what in enumerate(("to /init", "to poweroff")):
            q, on, off = (best[name][i] for name in ("QEMU", "jit-on", "jit-off"))
            print(f"  {what:18} {q:8.2f} {on:9.2f} {off:9.2f} {on / q:7.2f}x {off / q:7.2f}x")


if __name__ == "__main__":
    main()
