"""Build the official riscv-tests ISA programs (vendored in isa/) for vmkit's
own test environments (env/p, env/v) into tests/riscv_tests/build/.

A test is named as upstream names it, <suite>-<env>-<test>: rv64ui-p-add is
isa/rv64ui/add.S in the p environment (physical memory), rv64ui-v-add the
same source in the v environment (U-mode under Sv39).  The user-level suites
are built for both environments, rv64mi and rv64si for p only, as upstream.

A program is rebuilt only when its inputs change: the command line and a
SHA-256 of every input (the source, the files it #includes, the environment,
test_macros.h) are kept in <name>.stamp beside the ELF.

    python tests/riscv_tests/build.py                  # build all, print ELF paths
    python tests/riscv_tests/build.py rv64ui-p-add ... # build some
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
ISA = HERE / "isa"
ENV = HERE / "env"
MACROS = ISA / "macros" / "scalar"
BUILD_DIR = HERE / "build"
CC = "riscv64-linux-gnu-gcc"
# As upstream's isa/Makefile (-march=rv64g: the tests choose their own
# compressed instructions with .option rvc, and some trap handlers skip the
# faulting instruction by adding 4 to mepc), plus what a Linux-targeted gcc
# needs for bare metal: no PIC (`la` must be PC-relative, not through a GOT)
# and no linker relaxation, so that the code also runs at the v environment's
# virtual addresses.
CFLAGS = [
    "-march=rv64g", "-mabi=lp64d", "-static", "-nostdlib", "-nostartfiles",
    "-mcmodel=medany", "-mno-relax", "-fno-pic", "-no-pie",
    "-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments",
]
# suite -> environments it is built for (upstream's Makefrags)
SUITES = {
    "rv64ui": ("p", "v"), "rv64um": ("p", "v"), "rv64ua": ("p", "v"),
    "rv64uf": ("p", "v"), "rv64ud": ("p", "v"), "rv64uc": ("p", "v"),
    "rv64mi": ("p",), "rv64si": ("p",),
}
# Our own checks of the environments (that a failure or a stray trap is
# reported, that v tests really run translated in U-mode): selftest/<test>.S,
# named selftest-<env>-<test>, built on request (not in program_names).
SELFTEST = "selftest"
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


class BuildError(Exception):
    """A riscv-tests program failed to compile or link."""


def compiler_available() -> bool:
    return shutil.which(CC) is not None


def program_names() -> list[str]:
    """Every test, p environment first, in upstream's <suite>-<env>-<test> form."""
    names = []
    for env in ("p", "v"):
        for suite, envs in SUITES.items():
            if env in envs:
                names += [f"{suite}-{env}-{src.stem}" for src in sorted((ISA / suite).glob("*.S"))]
    return names


def split_name(name: str) -> tuple[str, str, str]:
    """"rv64mi-p-ld-misaligned" -> ("rv64mi", "p", "ld-misaligned")."""
    suite, env, test = (name.split("-", 2) + ["", ""])[:3]
    if not (suite == SELFTEST and env in ("p", "v")) and env not in SUITES.get(suite, ()):
        raise BuildError(f"unknown test {name!r}: expected <suite>-<env>-<test> "
                         f"with a suite of {sorted(SUITES)} and env p or v")
    return suite, env, test


def source_path(name: str) -> Path:
    suite, _, test = split_name(name)
    return (HERE / SELFTEST if suite == SELFTEST else ISA / suite) / f"{test}.S"


def _env_files(env: str) -> list[Path]:
    return [ENV / "encoding.h", ENV / "report.S", ENV / "link.ld", ENV / "p" / "riscv_test.h",
            *([ENV / "v" / "riscv_test.h"] if env == "v" else []), MACROS / "test_macros.h"]


def _source_files(src: Path) -> list[Path]:
    """The source and the test sources it #includes (rv64mi reuses rv64si's)."""
    files, todo = [], [src]
    while todo:
        path = todo.pop()
        files.append(path)
        for inc in _INCLUDE.findall(path.read_text()):
            dep = (path.parent / inc).resolve()
            if dep.is_file() and dep.suffix == ".S" and dep not in files:
                todo.append(dep)
    return files


def _command(env: str, src: Path, elf: Path) -> list[str]:
    return [CC, *CFLAGS, f"-I{ENV / env}", f"-I{ENV}", f"-I{MACROS}",
            "-T", str(ENV / "link.ld"), "-o", str(elf), str(ENV / "report.S"), str(src)]


@lru_cache(maxsize=1)
def _compiler_version() -> str:
    proc = subprocess.run([CC, "--version"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0] if proc.stdout else ""


def _stamp(cmd: list[str], inputs: list[Path]) -> str:
    lines = [_compiler_version(), " ".join(cmd)]
    lines += [f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.relative_to(HERE)}"
              for p in sorted(set(inputs))]
    return "\n".join(lines) + "\n"


def build_test(name: str) -> Path:
    """Build one test if out of date; return the ELF path."""
    env = split_name(name)[1]
    src = source_path(name)
    if not src.is_file():
        raise BuildError(f"unknown test {name!r}: no {src.relative_to(HERE)}")
    BUILD_DIR.mkdir(exist_ok=True)
    elf = BUILD_DIR / f"{name}.elf"
    stamp_path = BUILD_DIR / f"{name}.stamp"
    stamp = _stamp(_command(env, src, elf), _source_files(src) + _env_files(env))
    if elf.exists() and stamp_path.exists() and stamp_path.read_text() == stamp:
        return elf
    tmp = elf.with_name(f"{elf.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # never a half-written ELF
    cmd = _command(env, src, tmp)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"building {name} failed:\n{' '.join(cmd)}\n{proc.stderr}")
    tmp.replace(elf)
    stamp_path.write_text(stamp)
    return elf


def build_all(names: list[str] | None = None, jobs: int | None = None) -> dict[str, Path]:
    """Build tests (all by default) in parallel; {name: ELF path}."""
    names = names or program_names()
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        return dict(zip(names, pool.map(build_test, names)))


if __name__ == "__main__":
    try:
        for name, elf in build_all(sys.argv[1:] or None).items():
            print(f"{name}: {elf}")
    except BuildError as e:
        sys.exit(str(e))
