"""Shared fixtures: building small bare-metal RISC-V programs for tests."""

import shutil
import subprocess
from pathlib import Path

import pytest

CC = "riscv64-linux-gnu-gcc"
LINK_LD = """ENTRY(_start)
SECTIONS {
    . = 0x80000000;
    .text : { *(.text.start) *(.text*) }
    .rodata : { *(.rodata*) *(.srodata*) }
    .data : { *(.data*) *(.sdata*) }
    .bss : { *(.bss*) *(.sbss*) *(COMMON) }
}
"""


@pytest.fixture(scope="session")
def riscv_asm(tmp_path_factory):
    """build(source, name) -> path of an ELF linked at 0x80000000, entry first."""
    if not shutil.which(CC):
        pytest.skip(f"{CC} not installed (apt-get install gcc-riscv64-linux-gnu)")
    out = tmp_path_factory.mktemp("elf")
    (out / "link.ld").write_text(LINK_LD)

    def build(source: str, name: str) -> Path:
        src = out / f"{name}.S"
        src.write_text(source)
        elf = out / f"{name}.elf"
        subprocess.run([CC, "-nostdlib", "-nostartfiles", "-static", "-march=rv64gc", "-mabi=lp64d",
                        "-mcmodel=medany", "-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments",
                        "-T", str(out / "link.ld"), "-o", str(elf), str(src)], check=True)
        return elf

    return build
