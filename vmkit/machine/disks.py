"""`--disk PATH[,format=raw|qcow2][,readonly=on][,cache=writeback|none|unsafe]`.

The format comes from the option, or else from the file name the user chose
(`.qcow2` -> qcow2, anything else raw), never from the file's contents: a
guest can write a qcow2 header into a raw disk (RELIABILITY.md, Block).
The cache modes mean what they mean in QEMU: writeback (default; a guest
flush reaches stable storage), none (every write goes through to the disk),
unsafe (guest flushes are ignored: fast, loses data on a host crash).
"""

from dataclasses import dataclass
from pathlib import Path

FORMATS = ("raw", "qcow2")
CACHE_MODES = ("writeback", "none", "unsafe")
TRUE = ("on", "yes", "true", "1")
FALSE = ("off", "no", "false", "0")


class DiskSpecError(ValueError):
    pass


@dataclass(frozen=True)
class DiskSpec:
    path: str
    format: str = "raw"
    readonly: bool = False
    cache: str = "writeback"


def parse_disk(text: str) -> DiskSpec:
    parts = text.split(",")
    path = parts[0]
    if not path:
        raise DiskSpecError(f"--disk {text!r}: missing the image path")
    opts = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in ("format", "readonly", "cache") or key in opts:
            raise DiskSpecError(f"--disk {text!r}: bad option {part!r} (use format=, readonly=, cache=)")
        opts[key] = value
    fmt = opts.get("format") or ("qcow2" if Path(path).suffix.lower() == ".qcow2" else "raw")
    if fmt not in FORMATS:
        raise DiskSpecError(f"--disk {text!r}: format must be raw or qcow2")
    ro = opts.get("readonly", "off").lower()
    if ro not in TRUE + FALSE:
        raise DiskSpecError(f"--disk {text!r}: readonly must be on or off")
    cache = opts.get("cache", "writeback")
    if cache not in CACHE_MODES:
        raise DiskSpecError(f"--disk {text!r}: cache must be writeback, none or unsafe")
    return DiskSpec(path, fmt, ro in TRUE, cache)
