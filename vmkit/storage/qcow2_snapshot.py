"""qcow2 internal snapshot table: parse and pack.

Spec: QEMU docs/interop/qcow2.txt, "Snapshots". The table is a contiguous
run of variable-length entries (40 fixed bytes, extra data, ID, name, padding
to 8). Extra data we do not know is kept byte for byte when the table is
rewritten ("Unknown fields must be ignored").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ImageFormatError
from .hostfile import HostFile
from .qcow2_header import MAX_L1_BYTES, MAX_SNAPSHOT_TABLE_BYTES

_ENTRY = struct.Struct(">QIHHIIQII")   # bytes 0..39
MAX_EXTRA = 1024                       # QEMU's limit on extra data per entry
NO_ICOUNT = (1 << 64) - 1              # "icount not recorded", as QEMU writes it


@dataclass
class Snapshot:
    l1_table_offset: int
    l1_size: int
    id: str
    name: str
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    vm_state_size32: int
    extra: bytes

    @property
    def vm_state_size(self) -> int:
        if len(self.extra) >= 8:
            return struct.unpack_from(">Q", self.extra, 0)[0]
        return self.vm_state_size32

    @property
    def disk_size(self) -> int | None:
        if len(self.extra) >= 16:
            return struct.unpack_from(">Q", self.extra, 8)[0]
        return None

    def pack(self) -> bytes:
        ident, name = self.id.encode(), self.name.encode()
        out = _ENTRY.pack(self.l1_table_offset, self.l1_size, len(ident), len(name), self.date_sec,
                          self.date_nsec, self.vm_clock_nsec, self.vm_state_size32, len(self.extra))
        out += self.extra + ident + name
        return out + bytes(-len(out) % 8)


def new_extra(vm_state_size: int, disk_size: int) -> bytes:
    """Extra data for snapshots we write: large VM state size, disk size, icount."""
    return struct.pack(">QQQ", vm_state_size, disk_size, NO_ICOUNT)


def pack_table(snapshots: list[Snapshot]) -> bytes:
    return b"".join(s.pack() for s in snapshots)


def read_table(path: str, file: HostFile, offset: int, count: int, cluster_size: int,
               file_size: int) -> tuple[list[Snapshot], int]:
    """Parse count entries at offset; returns (snapshots, table size in bytes)."""
    def bad(msg: str) -> ImageFormatError:
        return ImageFormatError(f"{path}: not a usable qcow2 image: snapshot table: {msg}")

    snaps: list[Snapshot] = []
    buf = b""
    buf_start = offset
    pos = offset

    def take(n: int) -> bytes:
        nonlocal buf, buf_start
        if pos + n - offset > MAX_SNAPSHOT_TABLE_BYTES:
            raise bad(f"larger than {MAX_SNAPSHOT_TABLE_BYTES} bytes")
        if pos + n > file_size:
            raise bad(f"entry at {pos:#x} runs past the end of the file")
        if pos + n > buf_start + len(buf):
            want = max(n, 65536)
            buf = bytes(file.read(pos, min(want, file_size - pos)))
            buf_start = pos
        return buf[pos - buf_start:pos - buf_start + n]

    for i in range(count):
        (l1_off, l1_size, id_len, name_len, sec, nsec, vmclock, vmstate32,
         extra_len) = _ENTRY.unpack(take(40))
        pos += 40
        if extra_len > MAX_EXTRA:
            raise bad(f"entry {i} has {extra_len} bytes of extra data (limit {MAX_EXTRA})")
        extra = take(extra_len)
        pos += extra_len
        ident = take(id_len)
        pos += id_len
        name = take(name_len)
        pos += name_len
        pos += -(pos - offset) % 8
        if l1_size * 8 > MAX_L1_BYTES:
            raise bad(f"entry {i} has an L1 table of {l1_size} entries (limit {MAX_L1_BYTES // 8})")
        if l1_size and (l1_off % cluster_size or l1_off == 0 or l1_off + 8 * l1_size > file_size):
            raise bad(f"entry {i} has an L1 table at {l1_off:#x} that is unaligned or past the end "
                      "of the file")
        try:
            snaps.append(Snapshot(l1_off, l1_size, ident.decode(), name.decode(), sec, nsec, vmclock,
                                  vmstate32, extra))
        except UnicodeDecodeError:
            raise bad(f"entry {i} has an ID or name that is not UTF-8") from None
    return snaps, pos - offset
