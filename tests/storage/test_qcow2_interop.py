"""qcow2 against the reference, qemu-img 7.2: images QEMU writes read the same in
vmkit, and every image vmkit writes passes `qemu-img check` and `qemu-img compare`."""

from __future__ import annotations

import random

import pytest

from vmkit.storage import create_image, open_image
from vmkit.storage.check import check_image
from vmkit.storage.qcow2 import Qcow2Image
from vmkit.storage.qcow2_create import create_qcow2

from .conftest import assert_same, qemu, qemu_check, qemu_io, qemu_raw, random_workload, read_all

pytestmark = pytest.mark.usefixtures("qemu_img")

SIZE = 8 << 20


@pytest.fixture
def source(tmp_path):
    """A raw file with random data, repeated patterns and holes."""
    rnd = random.Random(7)
    data = bytearray(SIZE)
    for _ in range(40):
        off = rnd.randrange(0, SIZE - 70000)
        n = rnd.randrange(1, 70000)
        data[off:off + n] = rnd.randbytes(n) if rnd.random() < 0.6 else bytes([rnd.randrange(1, 256)]) * n
    p = tmp_path / "src.raw"
    p.write_bytes(data)
    return p, bytes(data)


@pytest.mark.parametrize("opts", ["", "compat=0.10", "cluster_size=512", "cluster_size=2M",
                                  "refcount_bits=1", "refcount_bits=64", "lazy_refcounts=on"])
@pytest.mark.parametrize("compressed", [False, True])
def test_reads_images_made_by_qemu(tmp_path, source, opts, compressed):
    src, data = source
    out = tmp_path / "q.qcow2"
    qemu("convert", *(["-c"] if compressed else []), "-O", "qcow2", *(["-o", opts] if opts else []), src, out)
    assert_same(read_all(out), data, f"convert {opts}")
    # Writing over compressed / shared clusters keeps the image clean for QEMU.
    rnd = random.Random(3)
    ref = bytearray(data)
    with open_image(out, "qcow2") as img:
        random_workload(img, ref, rnd, 40, img.cs)
    assert qemu_check(out)[0] == 0, qemu_check(out)[1]
    assert check_image(str(out), "qcow2").exit_code == 0
    assert_same(qemu_raw(out, tmp_path), bytes(ref), "after vmkit writes")


def test_reads_qemu_backing_chains(tmp_path, source):
    src, data = source
    base = tmp_path / "base.qcow2"
    qemu("convert", "-O", "qcow2", src, base)
    mid = tmp_path / "mid.qcow2"
    qemu("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid)
    qemu_io(mid, "write -P 0x55 1M 3M", "write -z 6M 512k", "discard 7M 64k")
    top = tmp_path / "sub" / "top.qcow2"
    top.parent.mkdir()
    qemu("create", "-f", "qcow2", "-b", "../mid.qcow2", "-F", "qcow2", top, "10M")
    qemu_io(top, "write -P 0x66 2M 100k", "write -P 0x67 9M 64k")
    assert_same(read_all(top), qemu_raw(top, tmp_path), "three-level chain")
    over_raw = tmp_path / "over-raw.qcow2"
    qemu("create", "-f", "qcow2", "-b", src, "-F", "raw", over_raw, "9M")
    qemu_io(over_raw, "write -P 0x11 7M 1M")
    assert_same(read_all(over_raw), qemu_raw(over_raw, tmp_path), "qcow2 over raw")


def test_reads_and_switches_qemu_internal_snapshots(tmp_path, source):
    src, data = source
    img_path = tmp_path / "s.qcow2"
    qemu("convert", "-O", "qcow2", src, img_path)
    qemu("snapshot", "-c", "one", img_path)
    qemu_io(img_path, "write -P 0x77 0 5M")
    qemu("snapshot", "-c", "two", img_path)
    two = qemu_raw(img_path, tmp_path)
    qemu_io(img_path, "write -P 0x78 3M 2M")
    assert_same(read_all(img_path), qemu_raw(img_path, tmp_path), "active layer")
    with Qcow2Image(str(img_path)) as img:
        assert [(s.id, s.name) for s in img.snapshots] == [("1", "one"), ("2", "two")]
        img.snapshot_apply("one")
    assert_same(read_all(img_path), data, "after vmkit applies 'one'")
    with Qcow2Image(str(img_path)) as img:
        img.snapshot_delete("one")
        img.snapshot_create("three")
    assert qemu_check(img_path)[0] == 0
    listing = qemu("snapshot", "-l", img_path).stdout
    assert "two" in listing and "three" in listing and "one" not in listing
    qemu("snapshot", "-a", "two", img_path)
    assert_same(read_all(img_path), two, "qemu applies 'two'")
    qemu("snapshot", "-a", "three", img_path)
    assert_same(read_all(img_path), data, "qemu applies vmkit's 'three'")
    assert qemu_check(img_path)[0] == 0


CONFIGS = {
    "default": {},
    "512-byte clusters": {"cluster_size": 512},
    "4k clusters": {"cluster_size": 4096},
    "version 2": {"compat": "0.10"},
    "lazy refcounts": {"lazy_refcounts": True},
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("backing", [None, "qcow2", "raw"])
def test_images_vmkit_writes_pass_qemu_check(tmp_path, name, backing):
    kw = CONFIGS[name]
    cs = kw.get("cluster_size", 65536)
    size = 4 << 20 if cs < 65536 else 16 << 20
    rnd = random.Random(hash((name, backing)) & 0xFFFF)
    ref = bytearray(size)
    path = tmp_path / "vm.qcow2"
    if backing:
        base = tmp_path / f"base.{backing}"
        create_image(base, backing, size)
        with open_image(base, backing) as b:
            for _ in range(20):
                off = rnd.randrange(0, size - 1)
                d = rnd.randbytes(rnd.randrange(1, min(50000, size - off) + 1))
                b.write_from(off, d)
                ref[off:off + len(d)] = d
        create_image(path, "qcow2", None, backing=base.name, backing_format=backing, **kw)
    else:
        create_image(path, "qcow2", size, **kw)
    discards_zero = kw.get("compat") != "0.10" or backing is None
    with open_image(path, "qcow2") as img:
        random_workload(img, ref, rnd, 150, cs, discards_zero=discards_zero)
        buf = bytearray(size)
        img.read_into(0, buf)
        assert_same(bytes(buf), bytes(ref), "vmkit read before close")
    rc, out = qemu_check(path)
    assert rc == 0, out
    assert check_image(str(path), "qcow2").exit_code == 0
    expected = tmp_path / "expected.raw"
    expected.write_bytes(ref)
    r = qemu("compare", "-f", "qcow2", "-F", "raw", path, expected, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_snapshots_resize_and_growth_pass_qemu_check(tmp_path):
    """Snapshots, L1 growth and refcount-table growth (512-byte clusters) in one image."""
    cs = 512
    path = tmp_path / "snap.qcow2"
    # 64-bit refcounts: a block covers 64 clusters, the first table cluster 2 MiB of file.
    create_qcow2(str(path), 1 << 20, cluster_size=cs, refcount_bits=64)
    rnd = random.Random(11)
    ref = bytearray(1 << 20)
    saved = {}
    with Qcow2Image(str(path)) as img:
        for step in range(12):
            random_workload(img, ref, rnd, 60, cs, max_len=40000)
            choice = step % 4
            if choice == 0:
                img.snapshot_create(f"s{step}")
                saved[f"s{step}"] = bytes(ref)
            elif choice == 1 and saved:
                name = rnd.choice(sorted(saved))
                img.snapshot_apply(name)
                ref[:] = saved[name]
            elif choice == 2:
                new = len(ref) + rnd.randrange(1, 64) * 4096
                img.resize(new)
                ref += bytes(new - len(ref))
            elif saved and len(saved) > 1:
                name = rnd.choice(sorted(saved))
                img.snapshot_delete(name)
                del saved[name]
        assert img.refs.h.refcount_table_clusters > 1      # the refcount table grew
        buf = bytearray(img.virtual_size)
        img.read_into(0, buf)
        assert_same(bytes(buf), bytes(ref), "active layer")
    rc, out = qemu_check(path)
    assert rc == 0, out
    assert_same(qemu_raw(path, tmp_path), bytes(ref), "qemu view")
    for name, content in saved.items():
        qemu("snapshot", "-a", name, path)
        got = qemu_raw(path, tmp_path)
        assert_same(got, content + bytes(len(got) - len(content)), f"snapshot {name}")
    assert qemu_check(path)[0] == 0


def test_create_matches_qemu_layout(tmp_path):
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    create_qcow2(str(ours), 1 << 30)
    qemu("create", "-f", "qcow2", theirs, "1G")
    assert ours.stat().st_size == theirs.stat().st_size
    assert ours.read_bytes()[:104] == theirs.read_bytes()[:104]
    info = qemu("info", "--output", "json", ours).stdout
    assert '"virtual-size": 1073741824' in info and '"cluster-size": 65536' in info


@pytest.mark.parametrize("opts,message", [("extended_l2=on", "extended L2"), ("data_file={tmp}/data.raw", "external data file"),
                                          ("compression_type=zstd", "zstd")])
def test_refuses_features_it_does_not_implement(tmp_path, opts, message):
    from vmkit.storage import ImageFormatError
    opts = opts.format(tmp=tmp_path)  # the external data file goes in tmp_path, not the cwd
    p = tmp_path / "f.qcow2"
    r = qemu("create", "-f", "qcow2", "-o", opts, p, "8M", check=False)
    if r.returncode:
        pytest.skip(f"this qemu-img cannot make {opts}")
    for readonly in (True, False):
        with pytest.raises(ImageFormatError, match=message):
            open_image(p, "qcow2", readonly=readonly)


def test_bitmaps_read_only_and_checked(tmp_path):
    from vmkit.storage import ImageFormatError
    p = tmp_path / "b.qcow2"
    qemu("create", "-f", "qcow2", p, "8M")
    qemu_io(p, "write -P 0x42 0 1M")
    qemu("bitmap", "--add", p, "b0")
    assert read_all(p)[:1 << 20] == b"\x42" * (1 << 20)
    with pytest.raises(ImageFormatError, match="bitmaps"):
        open_image(p, "qcow2")
    assert check_image(str(p), "qcow2").exit_code == 0


def test_metadata_preallocation(tmp_path):
    p = tmp_path / "pre.qcow2"
    qemu("create", "-f", "qcow2", "-o", "preallocation=metadata", p, "8M")
    ref = bytearray(8 << 20)
    with open_image(p, "qcow2") as img:
        random_workload(img, ref, random.Random(5), 60, img.cs)
    assert qemu_check(p)[0] == 0 and check_image(str(p), "qcow2").exit_code == 0
    assert_same(qemu_raw(p, tmp_path), bytes(ref), "preallocated image")
