"""bench/cpu: a CPU-bound bare-metal program under vmkit and QEMU, side by side.

    python bench/cpu/run.py [--repeat N]

Builds bench.c with Debian's riscv64 cross compiler, runs it under
`vmkit run --bios none` (numba cache warm: one untimed run first) and under
`qemu-system-riscv64 -M virt -bios none`, checks both print the same
checksum, and reports vmkit's MIPS (instructions retired / guest run time,
from --stats) and the time ratio vmkit/QEMU (QEMU's time is the whole
process, including its ~20 ms start-up, so the ratio slightly flatters us).
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CC = "riscv64-linux-gnu-gcc"
CFLAGS = ["-O2", "-march=rv64gc", "-mabi=lp64d", "-mcmodel=medany", "-ffreestanding", "-nostdlib",
          "-nostartfiles", "-static", "-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments"]


def build(out: Path) -> Path:
    elf = out / "bench.elf"
    subprocess.run([CC, *CFLAGS, "-T", str(HERE / "link.ld"), "-o", str(elf),
                    str(HERE / "start.S"), str(HERE / "bench.c")], check=True)
    return elf


def run_vmkit(elf: Path):
    p = subprocess.run([sys.executable, "-m", "vmkit", "run", "--bios", "none", "--kernel", str(elf),
                        "--clock", "deterministic", "--console", "stdio", "--stats"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    m = re.search(r"(\d+) instructions in ([\d.]+) s", p.stderr)
    if p.returncode != 0 or not m:
        sys.exit(f"vmkit failed ({p.returncode}): {p.stderr}")
    return p.stdout.strip(), int(m.group(1)), float(m.group(2))


def run_qemu(elf: Path):
    t = time.monotonic()
    p = subprocess.run(["qemu-system-riscv64", "-M", "virt", "-bios", "none", "-kernel", str(elf),
                        "-nographic", "-m", "128M"], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=600)
    dt = time.monotonic() - t
    if p.returncode != 0:
        sys.exit(f"qemu failed ({p.returncode}): {p.stderr}")
    return p.stdout.strip(), dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for tool in (CC, "qemu-system-riscv64"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install gcc-riscv64-linux-gnu qemu-system-misc")
    with tempfile.TemporaryDirectory() as tmp:
        elf = build(Path(tmp))
        run_vmkit(elf)  # warm the numba cache
        best_v, best_q, insns = None, None, 0
        for _ in range(args.repeat):
            out_v, insns, t_v = run_vmkit(elf)
            out_q, t_q = run_qemu(elf)
            if out_v != out_q:
                sys.exit(f"checksum mismatch: vmkit {out_v!r} qemu {out_q!r}")
            best_v = t_v if best_v is None else min(best_v, t_v)
            best_q = t_q if best_q is None else min(best_q, t_q)
    print(f"instructions      {insns:,}")
    print(f"vmkit             {best_v:.3f} s   {insns / best_v / 1e6:.0f} MIPS")
    print(f"qemu (TCG)        {best_q:.3f} s   {insns / best_q / 1e6:.0f} MIPS")
    print(f"ratio vmkit/qemu  {best_v / best_q:.2f}x")


if __name__ == "__main__":
    main()
