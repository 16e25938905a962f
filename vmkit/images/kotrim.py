"""Drop assembler-local labels from a kernel module's symbol table.

Debian's riscv64 modules keep every `.L` label the assembler made (debug
line/variable labels, relaxation anchors): ext4.ko carries 213,000 of them,
a 5 MB .symtab. The kernel's module loader walks the whole table several
times (symbol resolution, kallsyms), and under emulation that cost 4 of the
5.5 seconds `modprobe ext4` took, on every boot. Like `strip
--discard-locals`, this keeps every symbol a relocation refers to, every
function, object, section and global symbol; only unreferenced local
NOTYPE symbols named `.L...` go. The module's code and data are untouched.

The module signature is removed too: it covers the whole file, so it no
longer matches, and a module with a bad signature is refused while an
unsigned one loads (the Debian kernel does not set MODULE_SIG_FORCE; the
kernel is marked "E", unsigned module, once).

ELF layout per the System V gABI (ELF-64 object file format): the file is
rewritten with the sections in their original order, the shrunk .symtab in
place, later sections moved down, and the section header table at the end.
Anything unexpected (not ELF64 little-endian relocatable, an extended
section index table) leaves the module as it was.
"""

from __future__ import annotations

import struct

ELF_MAGIC = b"\x7fELF"
SIG_MAGIC = b"~Module signature appended~\n"
SIG_INFO = struct.Struct(">BBBBBxxxI")        # struct module_signature (include/linux/module_signature.h)
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")
SHT_SYMTAB, SHT_RELA, SHT_REL, SHT_GROUP, SHT_SYMTAB_SHNDX, SHT_NOBITS = 2, 4, 9, 17, 18, 8
ET_REL = 1
STB_LOCAL, STT_NOTYPE = 0, 0


def strip_signature(ko: bytes) -> bytes:
    """The module without its appended signature (unchanged if unsigned)."""
    if not ko.endswith(SIG_MAGIC) or len(ko) < len(SIG_MAGIC) + SIG_INFO.size:
        return ko
    end = len(ko) - len(SIG_MAGIC)
    *_, sig_len = SIG_INFO.unpack_from(ko, end - SIG_INFO.size)
    start = end - SIG_INFO.size - sig_len
    return ko[:start] if start > 0 else ko


def trim_module(ko: bytes) -> bytes:
    """strip_signature, then drop the unreferenced `.L` labels (see the module docstring)."""
    ko = strip_signature(ko)
    try:
        return _trim(ko)
    except (struct.error, IndexError, ValueError):
        return ko                               # not the ELF we expect: ship it as it is


def _trim(ko: bytes) -> bytes:
    if ko[:4] != ELF_MAGIC or ko[4] != 2 or ko[5] != 1:
        return ko                               # ELF64, little-endian only
    eh = list(EHDR.unpack_from(ko, 0))
    e_type, e_shoff, e_shentsize, e_shnum = eh[1], eh[6], eh[11], eh[12]
    if e_type != ET_REL or e_shentsize != SHDR.size or e_shnum == 0:
        return ko
    shdrs = [list(SHDR.unpack_from(ko, e_shoff + i * SHDR.size)) for i in range(e_shnum)]
    # Field indices of a section header.
    NAME, TYPE, FLAGS, ADDR, OFFSET, SIZE, LINK, INFO, ALIGN, ENTSIZE = range(10)
    symtabs = [i for i, s in enumerate(shdrs) if s[TYPE] == SHT_SYMTAB]
    if len(symtabs) != 1 or any(s[TYPE] == SHT_SYMTAB_SHNDX for s in shdrs):
        return ko
    si = symtabs[0]
    sym = shdrs[si]
    strtab = shdrs[sym[LINK]]
    names = ko[strtab[OFFSET]:strtab[OFFSET] + strtab[SIZE]]
    count = sym[SIZE] // SYM.size
    first_global = sym[INFO]

    referenced = set()
    for s in shdrs:
        if s[TYPE] in (SHT_RELA, SHT_REL) and s[LINK] == si:
            entsize = 24 if s[TYPE] == SHT_RELA else 16
            for off in range(s[OFFSET], s[OFFSET] + s[SIZE], entsize):
                referenced.add(struct.unpack_from("<Q", ko, off + 8)[0] >> 32)
        elif s[TYPE] == SHT_GROUP and s[LINK] == si:
            referenced.add(s[INFO])

    keep, remap = [], {}
    for i in range(count):
        name, info, _other, _shndx, _value, _size = SYM.unpack_from(ko, sym[OFFSET] + i * SYM.size)
        label = (i < first_global and info >> 4 == STB_LOCAL and info & 0xF == STT_NOTYPE
                 and names[name:name + 2] == b".L")
        if i == 0 or not label or i in referenced:
            remap[i] = len(keep)
            keep.append(i)
    if len(keep) == count:
        return ko

    table = b"".join(ko[sym[OFFSET] + i * SYM.size:sym[OFFSET] + (i + 1) * SYM.size] for i in keep)
    new_first_global = sum(1 for i in keep if i < first_global)
    sections: dict[int, bytes] = {si: table}
    for n, s in enumerate(shdrs):
        if s[TYPE] in (SHT_RELA, SHT_REL) and s[LINK] == si:
            entsize = 24 if s[TYPE] == SHT_RELA else 16
            data = bytearray(ko[s[OFFSET]:s[OFFSET] + s[SIZE]])
            for off in range(0, len(data), entsize):
                r_info = struct.unpack_from("<Q", data, off + 8)[0]
                struct.pack_into("<Q", data, off + 8, (remap[r_info >> 32] << 32) | (r_info & 0xFFFFFFFF))
            sections[n] = bytes(data)
        elif s[TYPE] == SHT_GROUP and s[LINK] == si:
            s[INFO] = remap[s[INFO]]
    sym[SIZE] = len(table)
    sym[INFO] = new_first_global

    # Lay the file out again: ELF header, then the sections in their old file order.
    out = bytearray(ko[:EHDR.size])
    for n in sorted(range(1, e_shnum), key=lambda n: shdrs[n][OFFSET]):
        s = shdrs[n]
        if s[TYPE] == SHT_NOBITS:
            continue
        data = sections.get(n, ko[s[OFFSET]:s[OFFSET] + s[SIZE]])
        align = max(1, s[ALIGN])
        out += b"\0" * (-len(out) % align)
        s[OFFSET] = len(out)
        out += data
    out += b"\0" * (-len(out) % 8)
    eh[6] = len(out)
    for s in shdrs:
        out += SHDR.pack(*s)
    out[:EHDR.size] = EHDR.pack(*eh)
    return bytes(out)
