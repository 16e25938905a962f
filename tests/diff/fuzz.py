"""Long differential runs: vmkit against QEMU on many random sequences.

    python -m tests.diff.fuzz --count 10000                 # random base seed
    python -m tests.diff.fuzz --count 500 --seed 42 --length 400
    python -m tests.diff.fuzz --count 5000 --qemu-only      # check the generator

Sequences are numbered seed, seed+1, ...; each batch of --batch sequences is
one program.  Stops at the first mismatch unless --keep-going; every mismatch
is printed with the command that regenerates the failing sequence.
"""

import argparse
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.diff.batch import BUILD_DIR, run_batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000, help="number of sequences")
    ap.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    ap.add_argument("--length", type=int, default=200, help="instructions per sequence")
    ap.add_argument("--batch", type=int, default=25, help="sequences per program")
    ap.add_argument("--jobs", type=int, default=2, help="batches run in parallel")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per program")
    ap.add_argument("--qemu-only", action="store_true",
                    help="only check that QEMU runs every sequence without trapping")
    ap.add_argument("--keep-going", action="store_true")
    args = ap.parse_args(argv)

    base = args.seed if args.seed is not None else random.randrange(1 << 40)
    starts = list(range(base, base + args.count, args.batch))
    build_dir = BUILD_DIR / "fuzz"
    print(f"fuzz: {args.count} sequences of {args.length} instructions, "
          f"seeds {base}..{base + args.count - 1}", flush=True)

    def one(start: int):
        seeds = list(range(start, min(start + args.batch, base + args.count)))
        return run_batch(seeds, args.length, f"fuzz_{start}", vmkit=not args.qemu_only,
                         timeout=args.timeout, build_dir=build_dir)

    failures = 0
    done = 0
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for report in pool.map(one, starts):
            done += len(report.seeds)
            problem = report.qemu_problem()
            if problem is None and report.vmkit is not None:
                problem = report.vmkit_problem()
            if problem:
                failures += 1
                print(f"MISMATCH\n{problem}\n", flush=True)
                if not args.keep_going:
                    pool.shutdown(cancel_futures=True)
                    break
            else:
                for suffix in (".S", ".elf"):    # keep only failing programs
                    Path(report.elf).with_suffix(suffix).unlink(missing_ok=True)
            print(f"  {done}/{args.count} sequences, {failures} failing batches, "
                  f"{time.monotonic() - t0:.0f}s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
