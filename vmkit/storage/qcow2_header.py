"""qcow2 header: layout constants, strict parsing, packing for create.

Spec: QEMU docs/interop/qcow2.txt, sections "Header", "Additional fields
(version 3 and higher)", "Header extensions", "Feature name table",
"Cluster mapping" (entry masks) and "Host cluster management" (refcount
table entries). All numbers are big-endian ("General").

Parsing refuses, naming the field, anything a damaged or hostile file could
use to make us read past the end of the file, allocate absurd amounts of
memory or write to the wrong place: every table offset is checked for
alignment and for lying inside the file before anything is read from it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .errors import ImageFormatError

QCOW2_MAGIC = b"QFI\xfb"

# "Header": byte offsets of the fields we rewrite in place.
HDR_SIZE = 24                 # u64 virtual size
HDR_L1_SIZE = 36              # u32, followed by u64 l1_table_offset at 40
HDR_L1_TABLE_OFFSET = 40
HDR_REFCOUNT_TABLE_OFFSET = 48  # u64, followed by u32 refcount_table_clusters at 56
HDR_NB_SNAPSHOTS = 60         # u32, followed by u64 snapshots_offset at 64
HDR_INCOMPATIBLE = 72
HDR_COMPATIBLE = 80
HDR_AUTOCLEAR = 88
V2_HEADER_LENGTH = 72
V3_MIN_HEADER_LENGTH = 104
V3_HEADER_LENGTH = 112        # what we write: up to compression_type, padded to 8

_V2_FMT = ">4sIQIIQIIQQIIQ"   # bytes 0..71
_V3_FMT = ">QQQII"            # bytes 72..103

# incompatible_features bits
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT
_INCOMPAT_UNSUPPORTED = {
    INCOMPAT_DATA_FILE: "an external data file",
    INCOMPAT_COMPRESSION: "a non-zlib compression type (zstd)",
    INCOMPAT_EXTL2: "extended L2 entries (subclusters)",
}
# compatible_features bits
COMPAT_LAZY_REFCOUNTS = 1 << 0
# autoclear_features bits
AUTOCLEAR_BITMAPS = 1 << 0

# "Header extensions"
EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441

# "Cluster mapping": L1 and L2 entries.
OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1 << 0
L1E_OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00
L1E_RESERVED_MASK = 0x7F00_0000_0000_01FF
L2E_OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00
L2E_STD_RESERVED_MASK = 0x3F00_0000_0000_01FE
# "Host cluster management": refcount table entries.
REFT_OFFSET_MASK = 0xFFFF_FFFF_FFFF_FE00
REFT_RESERVED_MASK = 0x1FF

# Limits (QEMU's implementation limits, quoted in the spec's notes).
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
MAX_L1_BYTES = 32 << 20
MAX_REFTABLE_BYTES = 8 << 20
MAX_BACKING_NAME = 1023
MAX_BACKING_FORMAT = 16
MAX_SNAPSHOTS = 65536
MAX_SNAPSHOT_TABLE_BYTES = 64 << 20
COMPRESSED_SECTOR = 512


@dataclass
class Header:
    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible_features: int = 0
    compatible_features: int = 0
    autoclear_features: int = 0
    refcount_order: int = 4
    header_length: int = V2_HEADER_LENGTH
    compression_type: int = 0
    # from the extensions and the backing-name area
    backing_file: str | None = None
    backing_format: str | None = None
    feature_names: dict = field(default_factory=dict)   # (type, bit) -> name
    has_bitmaps: bool = False
    bitmaps_ext: bytes = b""

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def l2_entries(self) -> int:
        return self.cluster_size // 8

    @property
    def refcount_bits(self) -> int:
        return 1 << self.refcount_order

    @property
    def refblock_entries(self) -> int:
        return self.cluster_size * 8 // self.refcount_bits

    @property
    def dirty(self) -> bool:
        return bool(self.incompatible_features & INCOMPAT_DIRTY)

    @property
    def corrupt(self) -> bool:
        return bool(self.incompatible_features & INCOMPAT_CORRUPT)

    @property
    def lazy_refcounts(self) -> bool:
        return bool(self.compatible_features & COMPAT_LAZY_REFCOUNTS)


def l1_entries_needed(size: int, cluster_bits: int) -> int:
    """L1 entries to map size bytes ("Cluster mapping": one L2 table maps cluster_size/8 clusters)."""
    span = 1 << (cluster_bits + cluster_bits - 3)
    return -(-size // span)


def compressed_geometry(cluster_bits: int) -> tuple[int, int]:
    """(offset mask, sector-count shift) of a compressed cluster descriptor:
    x = 62 - (cluster_bits - 8) offset bits, then the additional-sector count."""
    x = 62 - (cluster_bits - 8)
    return (1 << x) - 1, x


def compressed_range(entry: int, cluster_bits: int) -> tuple[int, int]:
    """(host offset, byte length) a compressed L2 entry covers, ending at a sector boundary."""
    mask, shift = compressed_geometry(cluster_bits)
    offset = entry & mask
    nsectors = ((entry >> shift) & ((1 << (cluster_bits - 8)) - 1)) + 1
    return offset, nsectors * COMPRESSED_SECTOR - (offset & (COMPRESSED_SECTOR - 1))


def _feature_label(h: Header, kind: int, mask: int) -> str:
    names = []
    for bit in range(64):
        if mask & (1 << bit):
            names.append(h.feature_names.get((kind, bit), f"bit {bit}"))
    return ", ".join(names)


def parse_header(path: str, data: bytes, file_size: int) -> Header:
    """Parse and validate the first cluster of a qcow2 file. data holds at least
    min(file_size, cluster size) bytes from offset 0."""
    def bad(msg: str) -> ImageFormatError:
        return ImageFormatError(f"{path}: not a usable qcow2 image: {msg}")

    if len(data) < V2_HEADER_LENGTH:
        raise bad(f"the file is only {file_size} bytes, smaller than a qcow2 header")
    (magic, version, backing_off, backing_size, cluster_bits, size, crypt, l1_size, l1_off,
     rt_off, rt_clusters, nb_snap, snap_off) = struct.unpack_from(_V2_FMT, data, 0)
    if magic != QCOW2_MAGIC:
        raise bad(f"bad magic {magic!r} (expected {QCOW2_MAGIC!r}); is it a raw image? then open it as raw")
    if version not in (2, 3):
        raise bad(f"unsupported version {version} (vmkit reads versions 2 and 3)")
    if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
        raise bad(f"cluster_bits {cluster_bits} outside {MIN_CLUSTER_BITS}..{MAX_CLUSTER_BITS} "
                  "(512 bytes to 2 MiB clusters)")
    h = Header(version, backing_off, backing_size, cluster_bits, size, crypt, l1_size, l1_off, rt_off,
               rt_clusters, nb_snap, snap_off)
    cs = h.cluster_size
    if version == 3:
        if len(data) < V3_MIN_HEADER_LENGTH:
            raise bad(f"the file is only {file_size} bytes, smaller than a version 3 header")
        (h.incompatible_features, h.compatible_features, h.autoclear_features, h.refcount_order,
         h.header_length) = struct.unpack_from(_V3_FMT, data, 72)
        if h.header_length < V3_MIN_HEADER_LENGTH or h.header_length % 8 or h.header_length > cs:
            raise bad(f"header_length {h.header_length} must be a multiple of 8 between "
                      f"{V3_MIN_HEADER_LENGTH} and the cluster size {cs}")
        if len(data) < h.header_length:
            raise bad(f"the header ({h.header_length} bytes) is cut off by the end of the file")
        if h.header_length > 104:
            h.compression_type = data[104]
        if h.refcount_order > 6:
            raise bad(f"refcount_order {h.refcount_order} is above 6 (64-bit refcounts)")
    else:
        h.header_length = V2_HEADER_LENGTH

    # Extensions first: the feature name table names unknown feature bits.
    _parse_extensions(h, data, bad)

    unknown = h.incompatible_features & ~(INCOMPAT_KNOWN | sum(_INCOMPAT_UNSUPPORTED))
    if unknown:
        raise bad(f"unknown incompatible feature(s) {_feature_label(h, 0, unknown)} "
                  f"(incompatible_features={h.incompatible_features:#x}); a newer tool wrote it, "
                  "convert it with that tool")
    for bit, what in _INCOMPAT_UNSUPPORTED.items():
        if h.incompatible_features & bit:
            raise bad(f"the image uses {what}, which vmkit does not support; "
                      "convert it with 'qemu-img convert -O qcow2' first")
    if h.compression_type != 0:
        raise bad(f"compression_type {h.compression_type} without the compression-type feature bit "
                  "(the field must be 0 for zlib)")
    if crypt != 0:
        raise bad(f"the image is encrypted (crypt_method {crypt}), which vmkit does not support")

    # Tables: alignment, size limits, inside the file.
    def table(name: str, offset: int, length: int, limit: int) -> None:
        if length > limit:
            raise bad(f"{name} of {length} bytes is larger than the limit of {limit} bytes")
        if length == 0:
            return
        if offset % cs:
            raise bad(f"{name} offset {offset:#x} is not aligned to a cluster ({cs} bytes)")
        if offset == 0:
            raise bad(f"{name} at offset 0 would overlap the header")
        if offset + length > file_size:
            raise bad(f"{name} ({length} bytes at offset {offset:#x}) extends past the end of the "
                      f"file ({file_size} bytes); the file is truncated or damaged")

    table("L1 table", l1_off, l1_size * 8, MAX_L1_BYTES)
    needed = l1_entries_needed(size, cluster_bits)
    if needed > MAX_L1_BYTES // 8:
        raise bad(f"virtual size {size} bytes is too large for {cs}-byte clusters (it needs an L1 "
                  f"table of {needed * 8} bytes, the limit is {MAX_L1_BYTES})")
    if l1_size < needed:
        raise bad(f"L1 table has {l1_size} entries, too few for the virtual size {size} "
                  f"(needs {needed})")
    if rt_clusters == 0:
        raise bad("refcount_table_clusters is 0: the image has no refcount table")
    table("refcount table", rt_off, rt_clusters * cs, MAX_REFTABLE_BYTES)
    if nb_snap > MAX_SNAPSHOTS:
        raise bad(f"nb_snapshots {nb_snap} is above the limit of {MAX_SNAPSHOTS}")
    if nb_snap:
        table("snapshot table", snap_off, 40 * nb_snap, MAX_SNAPSHOT_TABLE_BYTES)
    if ranges_overlap(l1_off, l1_size * 8, rt_off, rt_clusters * cs):
        raise bad("the L1 table and the refcount table overlap")

    # Backing file name ("Header": not longer than 1023 bytes; we also require
    # it to sit in the first cluster, after the header, where QEMU puts it).
    if backing_off:
        if backing_size == 0 or backing_size > MAX_BACKING_NAME:
            raise bad(f"backing_file_size {backing_size} is outside 1..{MAX_BACKING_NAME}")
        if backing_off < h.header_length or backing_off + backing_size > cs:
            raise bad(f"backing file name ({backing_size} bytes at {backing_off}) is not inside "
                      "the header cluster after the header")
        if backing_off + backing_size > len(data):
            raise bad("backing file name is cut off by the end of the file")
        try:
            h.backing_file = bytes(data[backing_off:backing_off + backing_size]).decode("utf-8")
        except UnicodeDecodeError:
            raise bad("backing file name is not valid UTF-8") from None
        if "\0" in h.backing_file:
            raise bad("backing file name contains a NUL byte")
    return h


def _parse_extensions(h: Header, data: bytes, bad) -> None:
    """"Header extensions": (type, length, data, pad to 8) records until type 0."""
    cs = h.cluster_size
    end = min(cs, len(data))
    if h.backing_file_offset and h.backing_file_offset < end:
        end = h.backing_file_offset
    pos = h.header_length
    seen = set()
    while True:
        if pos + 8 > end:
            if h.version == 2 and pos >= end:
                return  # version 2 images may have no extension area at all
            raise bad(f"header extensions run past offset {end} without an end marker")
        ext_type, length = struct.unpack_from(">II", data, pos)
        pos += 8
        if ext_type == EXT_END:
            return
        if pos + length > end:
            raise bad(f"header extension {ext_type:#010x} ({length} bytes) runs past offset {end}")
        body = bytes(data[pos:pos + length])
        pos += (length + 7) & ~7
        if ext_type in seen and ext_type in (EXT_BACKING_FORMAT, EXT_FEATURE_TABLE, EXT_BITMAPS,
                                             EXT_CRYPTO, EXT_DATA_FILE):
            raise bad(f"header extension {ext_type:#010x} appears twice")
        seen.add(ext_type)
        if ext_type == EXT_BACKING_FORMAT:
            if length == 0 or length > MAX_BACKING_FORMAT:
                raise bad(f"backing format name of {length} bytes (expected 1..{MAX_BACKING_FORMAT})")
            try:
                h.backing_format = body.decode("ascii")
            except UnicodeDecodeError:
                raise bad("backing format name is not ASCII") from None
        elif ext_type == EXT_FEATURE_TABLE:
            for i in range(0, length - length % 48, 48):
                kind, bit = body[i], body[i + 1]
                name = body[i + 2:i + 48].split(b"\0", 1)[0].decode("utf-8", "replace")
                if kind <= 2 and bit < 64:
                    h.feature_names[(kind, bit)] = name
        elif ext_type == EXT_BITMAPS:
            h.has_bitmaps = True
            h.bitmaps_ext = body
        elif ext_type == EXT_CRYPTO:
            raise bad("the image has a full-disk-encryption header, which vmkit does not support")
        elif ext_type == EXT_DATA_FILE:
            raise bad("the image names an external data file, which vmkit does not support")
        # other types: "Unknown header extension, can be safely ignored"


def ranges_overlap(a: int, alen: int, b: int, blen: int) -> bool:
    return alen > 0 and blen > 0 and a < b + blen and b < a + alen


def pack_header(h: Header, extensions: list[tuple[int, bytes]]) -> bytes:
    """Header + extensions + end marker + backing name, as one byte string (for create)."""
    out = bytearray(struct.pack(_V2_FMT, QCOW2_MAGIC, h.version, h.backing_file_offset,
                                h.backing_file_size, h.cluster_bits, h.size, h.crypt_method, h.l1_size,
                                h.l1_table_offset, h.refcount_table_offset, h.refcount_table_clusters,
                                h.nb_snapshots, h.snapshots_offset))
    if h.version == 3:
        out += struct.pack(_V3_FMT, h.incompatible_features, h.compatible_features,
                           h.autoclear_features, h.refcount_order, h.header_length)
        out += bytes(h.header_length - len(out))  # compression_type 0 (zlib) and padding
    for ext_type, body in extensions:
        out += struct.pack(">II", ext_type, len(body)) + body + bytes(-len(body) % 8)
    out += struct.pack(">II", EXT_END, 0)
    return bytes(out)


def feature_table() -> bytes:
    """The feature name table QEMU writes, so other tools can name our bits."""
    entries = [(0, 0, "dirty bit"), (0, 1, "corrupt bit"), (0, 2, "external data file"),
               (0, 3, "compression type"), (0, 4, "extended L2 entries"),
               (1, 0, "lazy refcounts"), (2, 0, "bitmaps"), (2, 1, "raw external data")]
    return b"".join(struct.pack(">BB46s", kind, bit, name.encode()) for kind, bit, name in entries)
