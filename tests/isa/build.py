"""Build the bare-metal ISA test programs in tests/isa/ into tests/isa/build/.

Each program is one source file (tests/isa/<name>.S or <name>.c) linked with
the runtime in common/ (crt.S, lib.c, link.ld) at 0x80000000.  A program is
rebuilt only when its source, the runtime or the compiler command changed
(the command is kept in <name>.cmd beside the ELF).

    python tests/isa/build.py            # build all, print ELF paths
    python tests/isa/build.py rv64i csr  # build some
"""

import shutil
import subprocess
import sys
from pathlib import Path

ISA_DIR = Path(__file__).resolve().parent
COMMON = ISA_DIR / "common"
BUILD_DIR = ISA_DIR / "build"
CC = "riscv64-linux-gnu-gcc"
CFLAGS = [
    "-nostdlib", "-nostartfiles", "-static", "-ffreestanding",
    "-march=rv64gc", "-mabi=lp64d", "-mcmodel=medany", "-mno-relax",
    "-fno-pic", "-no-pie", "-O2", "-g", "-Wall",
    "-fno-tree-loop-distribute-patterns",  # no memset/memcpy calls
]


class BuildError(Exception):
    """A test program failed to compile or link."""


def compiler_available() -> bool:
    return shutil.which(CC) is not None


def program_sources() -> dict[str, Path]:
    """Map program name -> source file, for every program in tests/isa/."""
    return {p.stem: p for p in sorted(ISA_DIR.glob("*.[Sc]"))}


def _command(name: str, src: Path, elf: Path) -> list[str]:
    return [CC, *CFLAGS, f'-DTEST_NAME="{name}"', f"-I{COMMON}",
            "-T", str(COMMON / "link.ld"), "-o", str(elf),
            str(COMMON / "crt.S"), str(COMMON / "lib.c"), str(src)]


def build_program(name: str, src: Path | None = None) -> Path:
    """Build one program if out of date; return the ELF path."""
    src = src or program_sources()[name]
    BUILD_DIR.mkdir(exist_ok=True)
    elf = BUILD_DIR / f"{name}.elf"
    stamp = BUILD_DIR / f"{name}.cmd"
    cmd = _command(name, src, elf)
    inputs = [src, *COMMON.iterdir()]
    if (elf.exists() and stamp.exists() and stamp.read_text() == " ".join(cmd)
            and all(p.stat().st_mtime <= elf.stat().st_mtime for p in inputs)):
        return elf
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"building {name} failed:\n{' '.join(cmd)}\n{proc.stderr}")
    stamp.write_text(" ".join(cmd))
    return elf


def build_all(names: list[str] | None = None) -> dict[str, Path]:
    sources = program_sources()
    return {n: build_program(n, sources[n]) for n in (names or sources)}


if __name__ == "__main__":
    for name, elf in build_all(sys.argv[1:] or None).items():
        print(f"{name}: {elf}")
