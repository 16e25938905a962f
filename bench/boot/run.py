"""bench/boot: Debian's kernel + OpenSBI + a tiny initrd, vmkit beside QEMU TCG.

    python bench/boot/run.py [--repeat N]

Both boot the default image's kernel and firmware with a minimal initrd
whose /init prints a marker and powers off at once, with the same command
line.  Reported: wall time to /init (the marker) and to power-off, with the
kernel's crypto self-tests on and off (cryptomgr.notests), and the ratio
vmkit/QEMU.  The numba cache is warmed first; vmkit uses the host clock,
as QEMU does.
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
            vm = [sys.executable, "-m", "vmkit", "run", *common, "--append", append, "--timeout", "900"]
            qemu = ["qemu-system-riscv64", "-M", "virt", "-m", "512M", "-nographic", "-bios", str(firmware),
                    "-kernel", str(kernel), "-initrd", str(initrd), "-append", append]
            timed_boot(vm)  # warm the numba cache
            best = {}
            for _ in range(args.repeat):
                for name, cmd in (("vmkit", vm), ("qemu", qemu)):
                    r = timed_boot(cmd)
                    best[name] = min(best.get(name, r), r, key=lambda t: t[1])
            rows.append((label, best))
    print(f"{'':20} {'to /init':>10} {'to poweroff':>12}")
    for label, best in rows:
        for name in ("vmkit", "qemu"):
            print(f"{label + ' ' + name:32} {best[name][0]:8.2f} s {best[name][1]:10.2f} s")
        print(f"{label + ' ratio':32} {best['vmkit'][0] / best['qemu'][0]:8.2f} x "
              f"{best['vmkit'][1] / best['qemu'][1]:10.2f} x")


if __name__ == "__main__":
    main()
