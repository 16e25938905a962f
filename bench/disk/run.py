"""bench/disk: disk throughput inside the guest, vmkit beside QEMU on the same images.

    python bench/disk/run.py [--size-mib 64] [--random-ops 200]

Boots the default image's kernel and initramfs under both emulators with one
extra virtio disk (a fresh raw file, then a fresh qcow2 file) and times, from
the host, busybox dd inside the guest: sequential 1 MiB writes and reads
(O_DIRECT, so the guest page cache is out of the way) and random 4 KiB reads
and writes (one dd per request, so process start-up is part of that figure
in both emulators).  Prints MiB/s and IOPS and the ratio vmkit/QEMU (> 1
means vmkit is faster).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.guest import Guest  # noqa: E402

PROMPT = "vmkit:/# "


def emulator_argv(name, kernel, firmware, initrd, append, disk, fmt):
    if name == "vmkit":
        return [sys.executable, "-m", "vmkit", "run", "--bios", str(firmware), "--kernel", str(kernel),
                "--initrd", str(initrd), "--append", append, "--disk", f"{disk},format={fmt}"]
    return ["qemu-system-riscv64", "-M", "virt", "-m", "512M", "-nographic", "-bios", str(firmware),
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
            "-drive", f"file={disk},format={fmt},if=none,id=d0", "-device", "virtio-blk-device,drive=d0"]


def timed(g, command):
    t = time.monotonic()
    g.run(command, PROMPT)
    return time.monotonic() - t


def measure(argv, size_mib, ops, blocks):
    g = Guest([], timeout=1800, argv=argv)
    g.expect(PROMPT)
    seq_w = timed(g, f"dd if=/dev/zero of=/dev/vda bs=1M count={size_mib} oflag=direct 2>/dev/null")
    seq_r = timed(g, f"dd if=/dev/vda of=/dev/null bs=1M count={size_mib} iflag=direct 2>/dev/null")
    loop = (f"i=0; while [ $i -lt {ops} ]; do dd if=/dev/vda of=/dev/null bs=4k count=1 "
            f"skip=$(( (i * 7919) % {blocks} )) iflag=direct 2>/dev/null; i=$((i+1)); done")
    rnd_r = timed(g, loop)
    loop_w = loop.replace("if=/dev/vda of=/dev/null", "if=/dev/zero of=/dev/vda").replace(
        "skip=", "seek=").replace("iflag=direct", "oflag=direct")
    rnd_w = timed(g, loop_w)
    g.send("poweroff")
    g.wait(120)
    g.kill()
    return {"seq write MiB/s": size_mib / seq_w, "seq read MiB/s": size_mib / seq_r,
            "rand read IOPS": ops / rnd_r, "rand write IOPS": ops / rnd_w}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--random-ops", type=int, default=200)
    args = ap.parse_args()
    from vmkit.images import default_image_paths, pull
    pull(progress=False)
    kernel, firmware, initrd, append = default_image_paths()
    size = 2 * args.size_mib << 20
    blocks = size // 4096
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("raw", "qcow2"):
            results = {}
            for name in ("vmkit", "qemu"):
                disk = Path(tmp) / f"{name}.{fmt}"
                subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(disk), str(size)], check=True)
                results[name] = measure(emulator_argv(name, kernel, firmware, initrd, append, disk, fmt),
                                        args.size_mib, args.random_ops, blocks)
                os.unlink(disk)
            rows.append((fmt, results))
    print(f"{'':24} {'vmkit':>10} {'qemu':>10} {'ratio':>7}")
    for fmt, results in rows:
        for key in results["vmkit"]:
            v, q = results["vmkit"][key], results["qemu"][key]
            print(f"{fmt + ' ' + key:24} {v:10.1f} {q:10.1f} {v / q:7.2f}")


if __name__ == "__main__":
    main()
