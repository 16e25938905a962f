"""Flattened device tree (DTB): a small node builder, a writer and a reader.

Devicetree Specification v0.4:
- 2.2   node and property names (character sets, lengths), unit addresses;
- 2.3.3 phandle; 2.3.5 #address-cells/#size-cells; 2.3.6 reg;
- 5.2   the header; 5.3 the memory reservation block; 5.4 the structure block
        (FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END);
        5.5 the strings block.

A tree is built from `FdtNode` objects::

    root = FdtNode("")
    soc = root.child("soc")
    uart = soc.child("serial@10000000")
    uart.prop_str("compatible", "ns16550a")
    uart.prop_u32("interrupt-parent", plic.phandle())
    blob = to_dtb(root)

`parse_dtb` reads a blob back (for tests, and for patching a user-supplied
device tree); a blob comes from outside, so every offset and length in it is
checked and any defect raises `FdtError`.
"""

import re
import struct

FDT_MAGIC = 0xD00DFEED
FDT_VERSION = 17
FDT_LAST_COMP_VERSION = 16

# Structure block tokens (5.4.1).
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9

# struct fdt_header (5.2): ten big-endian u32 fields.
_HEADER = struct.Struct(">10I")
HEADER_SIZE = _HEADER.size  # 40
# struct fdt_reserve_entry (5.3.2): address, size, both u64.
_RESERVE_ENTRY = struct.Struct(">QQ")

# 2.2.1: node names are 1..31 characters of [0-9a-zA-Z,._+-], then an
# optional @unit-address.  2.2.4: property names are 1..31 characters of
# [0-9a-zA-Z,._+?#-].
_NODE_NAME = re.compile(r"[0-9a-zA-Z,._+-]{1,31}(@[0-9a-zA-Z,._+-]+)?")
_PROP_NAME = re.compile(r"[0-9a-zA-Z,._+?#-]{1,31}")
# Real trees break the 31-character limit (Linux has longer property names),
# so the reader only insists on names that cannot confuse a path: printable
# ASCII without "/" (and, for nodes, not empty).
_READ_NAME = re.compile(r"[!-.0-~]+")

_U32_MAX = 0xFFFF_FFFF
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF


class FdtError(Exception):
    """A device tree could not be built or parsed (the message says why)."""


class FdtNode:
    """One device-tree node: a name, ordered properties (raw bytes), children."""

    def __init__(self, name: str, parent: "FdtNode | None" = None) -> None:
        """A root node (`FdtNode("")`); use `child` to make the others."""
        if parent is None and name != "":
            raise FdtError(f"the root node has an empty name, not {name!r}")
        self.name = name
        self.parent = parent
        self.props: dict[str, bytes] = {}
        self.children: list[FdtNode] = []
        self._child_names: set[str] = set()  # O(1) duplicate check on untrusted blobs

    # --- tree shape ---------------------------------------------------------------
    def child(self, name: str) -> "FdtNode":
        """Add and return a new child node named `name` (unique among siblings)."""
        if not _NODE_NAME.fullmatch(name):
            raise FdtError(f"{self.path}: invalid node name {name!r} (Devicetree Spec 2.2.1)")
        return self._add_child(name)

    def _add_child(self, name: str) -> "FdtNode":
        if name in self._child_names:
            raise FdtError(f"{self.path}: duplicate child node {name!r}")
        node = FdtNode(name, self)
        self.children.append(node)
        self._child_names.add(name)
        return node

    @property
    def path(self) -> str:
        names = []
        node = self
        while node.parent is not None:  # iterative: a parsed tree may be deep
            names.append(node.name)
            node = node.parent
        return "/" + "/".join(reversed(names))

    @property
    def root(self) -> "FdtNode":
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def find(self, path: str) -> "FdtNode | None":
        """The node at `path` ("/soc/serial@10000000"), relative to this node."""
        node: FdtNode | None = self
        for part in path.strip("/").split("/"):
            if not part:
                continue
            node = next((c for c in node.children if c.name == part), None)
            if node is None:
                return None
        return node

    def walk(self):
        """This node and all below it, depth first, in tree order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def phandle(self) -> int:
        """This node's phandle (2.3.3); the first call allocates the next free one.

        Allocation takes one more than the largest phandle in the tree, so
        numbers follow the order of first use and never collide with phandles
        set by hand or read from a blob.
        """
        if "phandle" in self.props:
            return self.get_u32("phandle")
        used = [n.get_u32("phandle") for n in self.root.walk() if "phandle" in n.props]
        value = max(used, default=0) + 1
        self.prop_u32("phandle", value)
        return value

    # --- setting properties ------------------------------------------------------
    def prop_bytes(self, name: str, value: bytes) -> None:
        if not _PROP_NAME.fullmatch(name):
            raise FdtError(f"{self.path}: invalid property name {name!r} (Devicetree Spec 2.2.4)")
        self.props[name] = bytes(value)

    def prop_empty(self, name: str) -> None:
        """A boolean property: present, no value (2.2.4.2 <empty>)."""
        self.prop_bytes(name, b"")

    def prop_u32(self, name: str, *cells: int) -> None:
        """One or more 32-bit big-endian cells (<u32>, <prop-encoded-array>)."""
        for c in cells:
            if not 0 <= c <= _U32_MAX:
                raise FdtError(f"{self.path}: {name}: cell {c:#x} does not fit 32 bits")
        self.prop_bytes(name, struct.pack(f">{len(cells)}I", *cells))

    def prop_u64(self, name: str, *values: int) -> None:
        """One or more 64-bit values, each as two cells, high first (<u64>)."""
        for v in values:
            if not 0 <= v <= _U64_MAX:
                raise FdtError(f"{self.path}: {name}: value {v:#x} does not fit 64 bits")
        self.prop_bytes(name, struct.pack(f">{len(values)}Q", *values))

    def prop_str(self, name: str, value: str) -> None:
        """A NUL-terminated string (<string>)."""
        self.prop_strlist(name, value)

    def prop_strlist(self, name: str, *values: str) -> None:
        """Concatenated NUL-terminated strings (<stringlist>)."""
        encoded = [v.encode() for v in values]
        if any(b"\0" in e for e in encoded):
            raise FdtError(f"{self.path}: {name}: strings may not contain NUL")
        self.prop_bytes(name, b"".join(e + b"\0" for e in encoded))

    def prop_reg(self, *entries: tuple[int, int]) -> None:
        """`reg` (2.3.6) as (address, size) pairs, encoded with the parent's
        #address-cells and #size-cells (defaults 2 and 1, 2.3.5)."""
        parent = self.parent if self.parent is not None else self
        address_cells = parent.get_u32("#address-cells", 2)
        size_cells = parent.get_u32("#size-cells", 1)
        cells: list[int] = []
        for address, size in entries:
            cells += _split_cells(address, address_cells, f"{self.path}: reg address")
            cells += _split_cells(size, size_cells, f"{self.path}: reg size")
        self.prop_u32("reg", *cells)

    # --- reading properties ------------------------------------------------------
    def get_u32s(self, name: str) -> list[int]:
        value = self.props[name]
        if len(value) % 4:
            raise FdtError(f"{self.path}: {name} is not a list of 32-bit cells")
        return list(struct.unpack(f">{len(value) // 4}I", value))

    def get_u32(self, name: str, default: int | None = None) -> int:
        if name not in self.props and default is not None:
            return default
        cells = self.get_u32s(name)
        if len(cells) != 1:
            raise FdtError(f"{self.path}: {name} has {len(cells)} cells, expected 1")
        return cells[0]

    def get_strlist(self, name: str) -> list[str]:
        value = self.props[name]
        if not value.endswith(b"\0"):
            raise FdtError(f"{self.path}: {name} is not NUL-terminated")
        return [s.decode(errors="replace") for s in value[:-1].split(b"\0")]

    def get_str(self, name: str) -> str:
        return self.get_strlist(name)[0]

    def __repr__(self) -> str:
        return f"FdtNode({self.path!r}, props={list(self.props)}, children={len(self.children)})"


def _split_cells(value: int, ncells: int, what: str) -> list[int]:
    if not 0 <= value < (1 << (32 * ncells)):
        raise FdtError(f"{what} {value:#x} does not fit {ncells} cells")
    return [(value >> (32 * i)) & _U32_MAX for i in reversed(range(ncells))]


def _pad4(data: bytearray) -> None:
    data += b"\0" * (-len(data) % 4)


def to_dtb(root: FdtNode, boot_cpuid: int = 0,
           reserved: tuple[tuple[int, int], ...] = ()) -> bytes:
    """Serialize the tree under `root` as a version-17 flattened device tree.

    Blocks in the order 5.1 recommends: header, memory reservation block
    (8-byte aligned, 5.3), structure block (4-byte aligned tokens, 5.4),
    strings block (5.5; each property name stored once).
    """
    if root.parent is not None:
        raise FdtError(f"to_dtb needs the root node, not {root.path}")
    strings = bytearray()
    string_offsets: dict[str, int] = {}
    structure = bytearray()

    def name_offset(name: str) -> int:
        if name not in string_offsets:
            string_offsets[name] = len(strings)
            strings.extend(name.encode() + b"\0")
        return string_offsets[name]

    def emit(node: FdtNode) -> None:
        structure.extend(struct.pack(">I", FDT_BEGIN_NODE) + node.name.encode() + b"\0")
        _pad4(structure)
        for name, value in node.props.items():
            structure.extend(struct.pack(">III", FDT_PROP, len(value), name_offset(name)))
            structure.extend(value)
            _pad4(structure)
        for child in node.children:
            emit(child)
        structure.extend(struct.pack(">I", FDT_END_NODE))

    emit(root)
    structure.extend(struct.pack(">I", FDT_END))

    reserve_map = b"".join(_RESERVE_ENTRY.pack(a, s) for a, s in reserved)
    reserve_map += _RESERVE_ENTRY.pack(0, 0)  # terminator (5.3.2)
    off_mem_rsvmap = HEADER_SIZE  # 40 is already 8-byte aligned
    off_dt_struct = off_mem_rsvmap + len(reserve_map)
    off_dt_strings = off_dt_struct + len(structure)
    totalsize = off_dt_strings + len(strings)
    header = _HEADER.pack(
        FDT_MAGIC, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap,
        FDT_VERSION, FDT_LAST_COMP_VERSION, boot_cpuid,
        len(strings), len(structure),
    )
    return header + reserve_map + bytes(structure) + bytes(strings)


def parse_dtb(blob: bytes) -> FdtNode:
    """Read a flattened device tree (version 16 or 17) into FdtNode objects.

    The blob may come from a file, so it is treated as untrusted: every
    offset, length and string is range-checked and a defect raises FdtError.
    The memory reservation block is checked but not returned.
    """
    blob = bytes(blob)
    if len(blob) < HEADER_SIZE:
        raise FdtError(f"device tree is {len(blob)} bytes, shorter than its header")
    (magic, totalsize, off_struct, off_strings, off_rsvmap, version,
     last_comp, _boot_cpuid, size_strings, size_struct) = _HEADER.unpack_from(blob)
    if magic != FDT_MAGIC:
        raise FdtError(f"bad device tree magic {magic:#x} (expected {FDT_MAGIC:#x})")
    if version < 16 or last_comp > FDT_VERSION:
        raise FdtError(f"unsupported device tree version {version} (last compatible {last_comp})")
    if totalsize > len(blob) or totalsize < HEADER_SIZE:
        raise FdtError(f"device tree totalsize {totalsize} does not match its {len(blob)} bytes")
    if version < 17:
        size_struct = totalsize - off_struct if off_struct <= totalsize else 0
    for name, off, size in (("structure", off_struct, size_struct),
                            ("strings", off_strings, size_strings)):
        if off > totalsize or size > totalsize - off:
            raise FdtError(f"{name} block [{off:#x}, +{size:#x}) lies outside the blob")
    if off_struct % 4:
        raise FdtError(f"structure block offset {off_struct:#x} is not 4-byte aligned")
    _check_reserve_map(blob, off_rsvmap, totalsize)
    strings = blob[off_strings:off_strings + size_strings]
    return _parse_structure(blob[off_struct:off_struct + size_struct], strings)


def _check_reserve_map(blob: bytes, offset: int, totalsize: int) -> None:
    if offset % 8:
        raise FdtError(f"memory reservation block offset {offset:#x} is not 8-byte aligned")
    while True:
        if offset + _RESERVE_ENTRY.size > totalsize:
            raise FdtError("memory reservation block has no terminating entry")
        address, size = _RESERVE_ENTRY.unpack_from(blob, offset)
        offset += _RESERVE_ENTRY.size
        if address == 0 and size == 0:
            return


def _parse_structure(data: bytes, strings: bytes) -> FdtNode:
    def cstring(buf: bytes, start: int, what: str) -> str:
        end = buf.find(b"\0", start)
        if start >= len(buf) or end < 0:
            raise FdtError(f"unterminated {what} at offset {start:#x}")
        try:
            return buf[start:end].decode("ascii")
        except UnicodeDecodeError:
            raise FdtError(f"non-ASCII {what} at offset {start:#x}") from None

    pos = 0
    stack: list[FdtNode] = []
    root: FdtNode | None = None
    while True:
        if pos + 4 > len(data):
            raise FdtError("structure block ends without FDT_END")
        (token,) = struct.unpack_from(">I", data, pos)
        pos += 4
        # if/elif rather than match: a bare FDT_* name in a case clause would
        # be a capture pattern, not a comparison.
        if token == FDT_BEGIN_NODE:
            name = cstring(data, pos, "node name")
            pos += len(name) + 1
            pos += -pos % 4
            if not stack:
                if root is not None:
                    raise FdtError("more than one root node")
                if name != "":
                    raise FdtError(f"root node named {name!r}")
                root = node = FdtNode("")
            else:
                if not _READ_NAME.fullmatch(name):
                    raise FdtError(f"{stack[-1].path}: unreadable node name {name!r}")
                node = stack[-1]._add_child(name)
            stack.append(node)
        elif token == FDT_PROP:
            if not stack:
                raise FdtError(f"property outside any node at offset {pos - 4:#x}")
            if pos + 8 > len(data):
                raise FdtError("truncated property header")
            length, nameoff = struct.unpack_from(">II", data, pos)
            pos += 8
            if length > len(data) - pos:
                raise FdtError(f"property value of {length} bytes runs past the structure block")
            name = cstring(strings, nameoff, "property name")
            if not _READ_NAME.fullmatch(name):
                raise FdtError(f"{stack[-1].path}: unreadable property name {name!r}")
            if name in stack[-1].props:
                raise FdtError(f"{stack[-1].path}: duplicate property {name!r}")
            stack[-1].props[name] = data[pos:pos + length]
            pos += length
            pos += -pos % 4
        elif token == FDT_END_NODE:
            if not stack:
                raise FdtError(f"unbalanced FDT_END_NODE at offset {pos - 4:#x}")
            stack.pop()
        elif token == FDT_NOP:
            pass
        elif token == FDT_END:
            if stack or root is None:
                raise FdtError("FDT_END inside an open node or before the root")
            return root
        else:
            raise FdtError(f"unknown structure token {token:#x} at offset {pos - 4:#x}")
