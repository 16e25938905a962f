"""Build one batch of generated sequences into an ELF, run it under QEMU and
vmkit, and compare the dumps (used by test_diff.py and fuzz.py)."""

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.diff import gen
from tests.diff.harness import RunResult, run_qemu, run_vmkit
from tests.isa.build import CC, CFLAGS, COMMON

DIFF_DIR = Path(__file__).resolve().parent
BUILD_DIR = DIFF_DIR / "build"


class BuildError(Exception):
    """A generated program failed to assemble: a generator bug."""


def build_batch(seeds: list[int], length: int, name: str,
                build_dir: Path = BUILD_DIR) -> Path:
    """Generate and assemble the sequences `seeds`; returns the ELF path (the
    .S stays beside it for inspection)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / f"{name}.S"
    elf = build_dir / f"{name}.elf"
    seqs = [gen.generate_sequence(s, length) for s in seeds]
    src.write_text(gen.generate_program(seqs))
    cmd = [CC, *CFLAGS, f"-I{DIFF_DIR}", "-T", str(COMMON / "link.ld"),
           "-o", str(elf), str(DIFF_DIR / "runtime.S"), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"assembling {src} failed:\n{proc.stderr[-3000:]}")
    return elf


@dataclass
class BatchReport:
    name: str
    seeds: list[int]
    length: int
    elf: Path
    qemu: RunResult
    vmkit: RunResult | None

    def qemu_problem(self) -> str | None:
        """Why QEMU's run is not a valid reference (a generator bug), if so."""
        dumps = gen.parse_dumps(self.qemu.console)
        if self.qemu.exit_status != 0 or len(dumps) != len(self.seeds):
            return (f"{self.name}: QEMU did not run all {len(self.seeds)} sequences "
                    f"cleanly (got {len(dumps)} dumps); the generator produced a "
                    f"trapping or hanging program: {self.elf.with_suffix('.S')}\n"
                    + self.qemu.describe())
        return None

    def vmkit_problem(self) -> str | None:
        """First difference between vmkit and QEMU, described, or None."""
        assert self.vmkit is not None
        want = gen.parse_dumps(self.qemu.console)
        got = gen.parse_dumps(self.vmkit.console)
        for i, (w, g) in enumerate(zip(want, got)):
            reg = gen.first_difference(w, g)
            if reg is not None:
                diffs = [f"  {n}: qemu {w[n]:#018x}  vmkit {g.get(n, 0):#018x}"
                         for n in gen.REG_NAMES if w[n] != g.get(n)]
                return (f"sequence seed {self.seeds[i]} (#{i} of {self.name}): first "
                        f"difference in {reg}\n" + "\n".join(diffs[:12]) + "\n"
                        + self._reproduce(self.seeds[i]))
        if len(got) < len(want) or self.vmkit.exit_status != 0:
            seed = self.seeds[len(got)] if len(got) < len(self.seeds) else None
            return (f"{self.name}: vmkit stopped after {len(got)} of {len(want)} "
                    f"dumps (next seed {seed}); exit status {self.vmkit.exit_status}\n"
                    + (self._reproduce(seed) if seed is not None else "")
                    + "\n" + self.vmkit.describe())
        if self.vmkit.console != self.qemu.console:
            return f"{self.name}: dumps agree but the console output differs\n" \
                   + self.vmkit.describe()
        return None

    def _reproduce(self, seed: int) -> str:
        return (f"  batch source: {self.elf.with_suffix('.S')}\n"
                f"  reproduce: python -m tests.diff.gen --seed {seed} "
                f"--length {self.length} -o seq{seed}.S")


def run_batch(seeds: list[int], length: int, name: str, *, vmkit: bool = True,
              timeout: float = 60, build_dir: Path = BUILD_DIR, jit: str = "on") -> BatchReport:
    elf = build_batch(seeds, length, name, build_dir)
    qemu = run_qemu(elf, timeout)
    report = BatchReport(name, seeds, length, elf, qemu, None)
    if vmkit and report.qemu_problem() is None:
        report.vmkit = run_vmkit(elf, timeout, jit)
    return report
