"""vmkit/machine/fdt.py: DTB layout (Devicetree Spec v0.4 chapter 5), the builder
API, and a reader that refuses corrupt blobs without crashing."""

import random
import shutil
import struct
import subprocess

import pytest

from vmkit.machine.fdt import (
    FDT_BEGIN_NODE, FDT_END, FDT_MAGIC, FdtError, FdtNode, parse_dtb, to_dtb,
)

HEADER = struct.Struct(">10I")


def sample_tree() -> FdtNode:
    root = FdtNode("")
    root.prop_u32("#address-cells", 2)
    root.prop_u32("#size-cells", 2)
    root.prop_str("compatible", "vmkit,test")
    intc = root.child("intc")
    intc.prop_empty("interrupt-controller")
    intc.prop_u32("#interrupt-cells", 1)
    intc.prop_u32("#address-cells", 0)
    dev = root.child("dev@10000000")
    dev.prop_strlist("compatible", "a,b", "c")
    dev.prop_reg((0x10000000, 0x100))
    dev.prop_u32("interrupt-parent", intc.phandle())
    dev.prop_u32("interrupts", 10)
    dev.prop_u64("big", 0x1_2345_6789)
    dev.prop_bytes("blob", b"\x01\x02\x03")
    return root


def header(blob: bytes) -> dict:
    names = ("magic totalsize off_dt_struct off_dt_strings off_mem_rsvmap version "
             "last_comp_version boot_cpuid_phys size_dt_strings size_dt_struct").split()
    return dict(zip(names, HEADER.unpack_from(blob)))


def test_header_and_block_layout():
    blob = to_dtb(sample_tree(), boot_cpuid=3, reserved=((0x8000_0000, 0x1000),))
    h = header(blob)
    assert h["magic"] == FDT_MAGIC
    assert h["totalsize"] == len(blob)
    assert (h["version"], h["last_comp_version"], h["boot_cpuid_phys"]) == (17, 16, 3)
    assert h["off_mem_rsvmap"] % 8 == 0 and h["off_dt_struct"] % 4 == 0
    assert h["off_dt_struct"] == h["off_mem_rsvmap"] + 32  # one entry + terminator
    assert struct.unpack_from(">4Q", blob, h["off_mem_rsvmap"]) == (0x8000_0000, 0x1000, 0, 0)
    assert h["off_dt_strings"] == h["off_dt_struct"] + h["size_dt_struct"]
    assert h["off_dt_strings"] + h["size_dt_strings"] == len(blob)
    struct_block = blob[h["off_dt_struct"]:h["off_dt_strings"]]
    assert struct.unpack_from(">II", struct_block) == (FDT_BEGIN_NODE, 0)  # root, empty name
    assert struct.unpack_from(">I", struct_block, len(struct_block) - 4) == (FDT_END,)


def test_strings_block_is_deduplicated():
    blob = to_dtb(sample_tree())
    h = header(blob)
    strings = blob[h["off_dt_strings"]:].split(b"\0")[:-1]
    assert len(strings) == len(set(strings))
    assert strings.count(b"compatible") == 1 and b"#address-cells" in strings


def test_property_encodings_round_trip():
    root = parse_dtb(to_dtb(sample_tree()))
    dev = root.find("/dev@10000000")
    assert dev.get_strlist("compatible") == ["a,b", "c"]
    assert dev.get_u32s("reg") == [0, 0x10000000, 0, 0x100]
    assert dev.props["big"] == bytes.fromhex("0000000123456789")
    assert dev.props["blob"] == b"\x01\x02\x03"
    assert root.find("/intc").props["interrupt-controller"] == b""
    assert dev.get_u32("interrupt-parent") == root.find("/intc").get_u32("phandle")
    assert root.get_str("compatible") == "vmkit,test"
    assert [n.path for n in root.walk()] == ["/", "/intc", "/dev@10000000"]


def test_reg_follows_parent_cells():
    root = FdtNode("")
    bus = root.child("bus")
    bus.prop_u32("#address-cells", 1)
    bus.prop_u32("#size-cells", 1)
    bus.child("x@1000").prop_reg((0x1000, 0x10), (0x2000, 0x20))
    assert bus.find("x@1000").get_u32s("reg") == [0x1000, 0x10, 0x2000, 0x20]
    with pytest.raises(FdtError):
        bus.child("y@0").prop_reg((1 << 32, 1))


def test_phandle_allocation():
    root = FdtNode("")
    a, b = root.child("a"), root.child("b")
    b.prop_u32("phandle", 7)  # set by hand (or read from a blob)
    assert a.phandle() == 8
    assert a.phandle() == 8  # idempotent
    assert b.phandle() == 7
    assert root.child("c").child("d").phandle() == 9


@pytest.mark.parametrize("make", [
    lambda r: r.child("bad name"),
    lambda r: r.child("x" * 32),
    lambda r: r.prop_u32("bad name", 1),
    lambda r: r.prop_u32("x", 1 << 32),
    lambda r: r.prop_u32("x", -1),
    lambda r: r.prop_u64("x", 1 << 64),
    lambda r: r.prop_str("x", "a\0b"),
    lambda r: (r.child("a"), r.child("a")),
])
def test_builder_rejects_invalid_trees(make):
    with pytest.raises(FdtError):
        make(FdtNode(""))


def _corrupt(kind: str) -> bytes:
    good = to_dtb(sample_tree())
    h = header(good)
    match kind:
        case "short":
            return good[:20]
        case "magic":
            return b"\0\0\0\0" + good[4:]
        case "totalsize":
            return good[:4] + struct.pack(">I", len(good) + 1) + good[8:]
        case "truncated struct":
            return good[:h["off_dt_struct"] + 12]
        case "version":
            return good[:20] + struct.pack(">I", 1) + good[24:]
        case "strings offset":
            return good[:12] + struct.pack(">I", 0xFFFFFF00) + good[16:]
        case "unknown token":
            off = h["off_dt_struct"]
            return good[:off] + struct.pack(">I", 0x77) + good[off + 4:]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["short", "magic", "totalsize", "truncated struct",
                                  "version", "strings offset", "unknown token"])
def test_parse_rejects_corrupt_blobs(kind):
    with pytest.raises(FdtError):
        parse_dtb(_corrupt(kind))


def test_parse_survives_random_corruption():
    """A blob from a file may be anything: only FdtError may come out."""
    good = to_dtb(sample_tree())
    rng = random.Random(1234)
    for _ in range(3000):
        blob = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        if rng.random() < 0.2:
            del blob[rng.randrange(len(blob)):]
        try:
            parse_dtb(bytes(blob))
        except FdtError:
            pass


@pytest.mark.skipif(shutil.which("dtc") is None, reason="dtc (device-tree-compiler) not installed")
def test_dtc_reads_our_blob_and_agrees(tmp_path):
    blob = to_dtb(sample_tree())
    (tmp_path / "t.dtb").write_bytes(blob)
    dts = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(tmp_path / "t.dtb")],
                         capture_output=True, text=True, check=True)
    assert dts.stderr == ""
    # dtc compiles its own decoding back; our reader must see the same tree.
    again = subprocess.run(["dtc", "-I", "dts", "-O", "dtb"], input=dts.stdout.encode(),
                           capture_output=True, check=True).stdout
    assert tree_dict(parse_dtb(again)) == tree_dict(parse_dtb(blob))


def tree_dict(root: FdtNode) -> dict:
    return {n.path: dict(n.props) for n in root.walk()}


def test_reader_accepts_long_names_the_builder_refuses():
    """Real trees (Linux's) have property names past the spec's 31 characters."""
    root = FdtNode("")
    root.child("n").prop_u32("short", 1)
    blob = to_dtb(root).replace(b"short", b"SHORT")  # still valid, same length
    assert parse_dtb(blob).find("/n").get_u32("SHORT") == 1
    long_name = "snps,dis-u2-freeclk-exists-quirk"  # 32 characters, in Linux's dts
    with pytest.raises(FdtError):
        root.prop_empty(long_name)
    root.props[long_name] = b""
    assert long_name in parse_dtb(to_dtb(root)).props
