"""Trimming kernel modules (vmkit/images/kotrim.py) on a relocatable object
made by the riscv64 cross compiler with debug info (which is full of `.L`
labels, as Debian's modules are): every relocation still names the same
symbol, every non-label symbol stays, and an appended signature goes."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from vmkit.images.kotrim import SIG_INFO, SIG_MAGIC, strip_signature, trim_module

CC = "riscv64-linux-gnu-gcc"
SOURCE = r"""
static int counter;
static int helper(int x) { return x * 3 + counter; }
int table[16];
int exported(int n) {
    int s = 0;
    for (int i = 0; i < n; i++) { s += helper(i) + table[i & 15]; counter++; }
    return s;
}
const char *message(void) { return "a string in .rodata"; }
"""


@pytest.fixture(scope="module")
def obj(tmp_path_factory):
    if shutil.which(CC) is None:
        pytest.skip(f"{CC} not installed (apt-get install gcc-riscv64-linux-gnu)")
    d = tmp_path_factory.mktemp("ko")
    (d / "m.c").write_text(SOURCE)
    subprocess.run([CC, "-c", "-g", "-O2", "-fno-pic", "-mcmodel=medany", "-o", str(d / "m.o"), str(d / "m.c")],
                   check=True)
    # As Debian installs modules: debug sections stripped, the labels left behind.
    subprocess.run([CC.replace("gcc", "strip"), "--strip-debug", "-o", str(d / "s.o"), str(d / "m.o")], check=True)
    return (d / "s.o").read_bytes()


def symbols(elf):
    return elf.get_section_by_name(".symtab")


def relocations(elf):
    st = symbols(elf)
    out = []
    for s in elf.iter_sections():
        if s.header.sh_type in ("SHT_RELA", "SHT_REL"):
            for r in s.iter_relocations():
                sym = st.get_symbol(r["r_info_sym"])
                out.append((s.name, r["r_offset"], r["r_info_type"], r.entry.get("r_addend"), sym.name,
                            sym["st_value"], sym["st_shndx"], sym["st_info"]["type"]))
    return out


def test_labels_go_relocations_and_symbols_stay(obj):
    before = ELFFile(io.BytesIO(obj))
    trimmed = trim_module(obj)
    after = ELFFile(io.BytesIO(trimmed))
    labels = [s for s in symbols(before).iter_symbols() if s.name.startswith(".L")]
    assert labels, "the compiler made no .L labels: the test proves nothing"
    assert symbols(after).num_symbols() < symbols(before).num_symbols()
    assert relocations(after) == relocations(before)
    keep = lambda elf: sorted((s.name, s["st_value"], s["st_shndx"], s["st_info"]["bind"])
                              for s in symbols(elf).iter_symbols() if not s.name.startswith(".L"))
    assert keep(after) == keep(before)
    for s in before.iter_sections():
        if s.name != ".symtab" and not s.name.startswith(".rela") and s.header.sh_type != "SHT_NOBITS":
            assert after.get_section_by_name(s.name).data() == s.data(), s.name
    # Locals still come first: sh_info is the index of the first global.
    st = symbols(after)
    first_global = st.header.sh_info
    assert all(s["st_info"]["bind"] == "STB_LOCAL" for s in list(st.iter_symbols())[:first_global])
    assert all(s["st_info"]["bind"] != "STB_LOCAL" for s in list(st.iter_symbols())[first_global:])
    assert trim_module(trimmed) == trimmed              # nothing left to take


def test_signature_is_removed(obj):
    sig = b"S" * 100
    signed = obj + sig + SIG_INFO.pack(0, 0, 2, 0, 0, len(sig)) + SIG_MAGIC
    assert strip_signature(signed) == obj
    assert strip_signature(obj) == obj
    assert not trim_module(signed).endswith(SIG_MAGIC)


@pytest.mark.parametrize("data", [b"", b"\x7fELF", b"not an elf at all" * 10,
                                  b"\x7fELF\x02\x01\x01" + bytes(100)])
def test_anything_else_is_left_alone(data):
    assert trim_module(data) == data


def test_truncated_object_is_left_alone(obj):
    cut = obj[: len(obj) // 2]
    assert trim_module(cut) in (cut,)
