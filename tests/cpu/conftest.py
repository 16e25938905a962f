"""Shared fixtures for the CPU tests: GNU objdump as the disassembly oracle."""

import re
import shutil
import struct
import subprocess

import pytest

OBJDUMP = "riscv64-linux-gnu-objdump"

_LINE = re.compile(r"^\s*([0-9a-f]+):\t[0-9a-f ]+\t(.*)$")


@pytest.fixture
def objdump(tmp_path):
    """objdump(words, width) -> objdump -M no-aliases text of each word
    ({address: "mnemonic ops"}); width is 2 or 4 bytes per word."""
    exe = shutil.which(OBJDUMP)
    if exe is None:
        pytest.skip(f"{OBJDUMP} not installed")

    def run(words, width):
        fmt = "<H" if width == 2 else "<I"
        path = tmp_path / f"words{width}.bin"
        path.write_bytes(b"".join(struct.pack(fmt, w) for w in words))
        out = subprocess.run(
            [exe, "-D", "-b", "binary", "-m", "riscv:rv64", "-M", "no-aliases", str(path)],
            check=True, capture_output=True, text=True).stdout
        lines = {}
        for line in out.splitlines():
            m = _LINE.match(line)
            if m:
                # Drop objdump's annotations: "# 0x..." (a value it tracked
                # from an earlier lui/auipc) and "<symbol>".
                text = re.sub(r"\s+[#<].*$", "", m.group(2))
                lines[int(m.group(1), 16)] = text.replace("\t", " ").strip()
        assert len(lines) == len(words), "objdump lost sync with the instruction stream"
        return lines

    return run
