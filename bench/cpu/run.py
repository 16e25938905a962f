"""bench/cpu: six CPU-bound bare-metal phases under QEMU and vmkit, translator on and off.

    python bench/cpu/run.py [--repeat N] [--phases 1,3] [--no-off]

bench.c holds the phases, one kind of work each: 1 integer multiply and
divide, 2 table lookups (CRC32), 3 double-precision 64x64 matrix multiply,
4 recursive quicksort, 5 string and memory routines as byte loops, 6 compressed
code.  Each is its own ELF (-DPHASE=n), so each is timed on its own; phase 6
is built with -march=rv64gc (and the share of 16-bit instructions in its hot
loop is printed), the others with -march=rv64g, so that only phase 6 runs RVC.
Each phase runs under `vmkit run --bios none --jit on`, the same with
`--jit off` (both with --clock deterministic --stats), and
`qemu-system-riscv64 -M virt -bios none`; all three must print the same
checksum.

Times are the best of --repeat runs:
- vmkit: the guest run time that --stats prints (first guest instruction to
  power-off), so neither process start-up nor loading the numba cache counts;
  compiling translations does (a background thread, while the interpreter
  goes on).  One untimed run comes first, to build or load the numba cache.
- QEMU: wall time of the process minus that of the empty program (PHASE=0,
  which exits through the finisher at once), i.e. without QEMU's start-up.
Ratios are vmkit's time / QEMU's: 1.00x is as fast as QEMU, lower is better.
"jit %" is the share of instructions that ran translated with --jit on.
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
OBJDUMP = "riscv64-linux-gnu-objdump"
CFLAGS = ["-O2", "-mabi=lp64d", "-mcmodel=medany", "-ffreestanding", "-fno-builtin",
          "-fno-tree-loop-distribute-patterns", "-nostdlib", "-nostartfiles", "-static",
          "-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments"]
PHASES = {1: "mul/div", 2: "crc32 table", 3: "dgemm 64x64", 4: "quicksort", 5: "string/memory",
          6: "compressed"}
RVC_PHASE = 6


def build(phase: int, out: Path) -> Path:
    elf = out / f"phase{phase}.elf"
    march = "rv64gc" if phase == RVC_PHASE else "rv64g"
    subprocess.run([CC, *CFLAGS, f"-march={march}", f"-DPHASE={phase}", "-T", str(HERE / "link.ld"),
                    "-o", str(elf), str(HERE / "start.S"), str(HERE / "bench.c")], check=True)
    return elf


def rvc_share(elf: Path) -> float:
    """Share of 16-bit instructions in the loop of phase 6's mix(), from objdump."""
    dump = subprocess.run([OBJDUMP, "-d", "--disassemble=mix", str(elf)],
                          capture_output=True, text=True, check=True).stdout
    insns = [(int(addr, 16), len(bits) // 2, text) for addr, bits, text in
             re.findall(r"^\s*([0-9a-f]+):\s+([0-9a-f]+)\s+(.*)$", dump, re.M)]
    # The loop: from the target of the (last) backward branch to the branch.
    branches = [(addr, int(m.group(1), 16)) for addr, _, text in insns
                if (m := re.search(r"\b([0-9a-f]+) <mix\+", text)) and int(m.group(1), 16) < addr]
    end, start = branches[-1]
    loop = [size for addr, size, _ in insns if start <= addr <= end]
    return loop.count(2) / len(loop)


def run_vmkit(elf: Path, jit: str):
    """(checksum, instructions, guest seconds, % run translated) of one run."""
    cmd = [sys.executable, "-m", "vmkit", "run", "--bios", "none", "--kernel", str(elf), "--jit", jit,
           "--clock", "deterministic", "--console", "stdio", "--stats"]
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    m = re.search(r"(\d+) instructions in ([\d.]+) s", p.stderr)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"exit status {p.returncode}: {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    share = re.search(r"([\d.]+)% of instructions ran translated", p.stderr)
    return p.stdout.strip(), int(m.group(1)), float(m.group(2)), float(share.group(1)) if share else 0.0


def run_qemu(elf: Path):
    """(checksum, wall seconds) of one run."""
    cmd = ["qemu-system-riscv64", "-M", "virt", "-bios", "none", "-kernel", str(elf), "-nographic", "-m", "128M"]
    t = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    dt = time.monotonic() - t
    if p.returncode != 0:
        sys.exit(f"qemu failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return p.stdout.strip(), dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--phases", default=",".join(map(str, PHASES)), help="comma-separated, e.g. 1,3")
    ap.add_argument("--no-off", action="store_true", help="skip the (slow) --jit off runs")
    args = ap.parse_args()
    phases = [int(p) for p in args.phases.split(",")]
    if not set(phases) <= set(PHASES):
        sys.exit(f"--phases: choose from {', '.join(map(str, PHASES))}")
    modes = ("on",) if args.no_off else ("on", "off")
    for tool in (CC, OBJDUMP, "qemu-system-riscv64"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install gcc-riscv64-linux-gnu qemu-system-misc")

    qemu, vmkit, insns, share, errors = {}, {}, {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        elfs = {p: build(p, Path(tmp)) for p in [0, *phases]}
        if RVC_PHASE in phases:
            print(f"phase {RVC_PHASE}: {rvc_share(elfs[RVC_PHASE]):.0%} of its hot loop's instructions are 16-bit")
        run_vmkit(elfs[0], "on")  # untimed: builds or loads the numba cache
        startup = min(run_qemu(elfs[0])[1] for _ in range(3 * args.repeat))
        for _ in range(args.repeat):
            for p in phases:
                expected, wall = run_qemu(elfs[p])
                qemu[p] = min(qemu.get(p, wall - startup), wall - startup)
                for mode in modes:
                    if vmkit.get((p, mode), 0) is None:
                        continue  # failed before: once is enough
                    try:
                        out, n, seconds, pct = run_vmkit(elfs[p], mode)
                        if out != expected:
                            raise RuntimeError(f"checksum {out!r}, QEMU printed {expected!r}")
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        errors.append(f"phase {p} --jit {mode}: {e}")
                        vmkit[p, mode] = None
                        continue
                    if insns.setdefault(p, n) != n:
                        errors.append(f"phase {p} --jit {mode}: {n} instructions retired, before {insns[p]}")
                    vmkit[p, mode] = min(vmkit.get((p, mode), seconds), seconds)
                    if mode == "on":
                        share[p] = pct

    def cells(q, times):
        cols = [f"{'-' if t is None else f'{t:.2f}':>9}" for t in times]
        cols += [f"{'-' if t is None else f'{t / q:.2f}x':>9}" for t in times]
        return " ".join(cols)

    print(f"{'phase':16} {'instructions':>14} {'QEMU s':>7} "
          + " ".join(f"{f'jit-{m} s':>9}" for m in modes) + " "
          + " ".join(f"{f'{m}/QEMU':>9}" for m in modes) + f" {'jit %':>6}")
    for p in phases:
        times = [vmkit.get((p, m)) for m in modes]
        pct = f"{share[p]:.1f}" if p in share else "-"
        print(f"{p} {PHASES[p]:14} {insns.get(p, 0):14,} {qemu[p]:7.2f} {cells(qemu[p], times)} {pct:>6}")
    totals = [None if any(vmkit.get((p, m)) is None for p in phases) else sum(vmkit[p, m] for p in phases)
              for m in modes]
    q = sum(qemu.values())
    print(f"{'total':16} {sum(insns.values()):14,} {q:7.2f} {cells(q, totals)}")
    for e in errors:
        print(f"\nFAILED {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
