"""`vmkit disk check` (vmkit/storage/check.py) agrees with `qemu-img check`."""

from __future__ import annotations

import re
import struct

import pytest

from vmkit.storage import open_image
from vmkit.storage.check import check_image, format_report
from vmkit.storage.qcow2_create import create_qcow2

from .conftest import qemu, qemu_check, read_all

pytestmark = pytest.mark.usefixtures("qemu_img")
CS = 65536


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "c.qcow2"
    create_qcow2(str(p), 16 << 20)
    with open_image(p, "qcow2") as img:
        for i in range(6):
            img.write_from(i * 3 * CS + 100, bytes([i + 1]) * 5000)
    return p


def _set_refcount(path, cluster: int, value: int) -> None:
    """16-bit refcounts, one block at cluster 2 (the layout create_qcow2 writes)."""
    with open(path, "r+b") as f:
        f.seek(2 * CS + 2 * cluster)
        f.write(struct.pack(">H", value))


def _qemu_leaks(out: str) -> int:
    m = re.search(r"(\d+) leaked clusters were found", out)
    return int(m.group(1)) if m else 0


def test_clean(image):
    r = check_image(str(image), "qcow2")
    assert r.exit_code == 0 and qemu_check(image)[0] == 0
    assert "No errors were found" in format_report(r)


def test_leaks_only(image):
    size = image.stat().st_size
    end = -(-size // CS)
    with open(image, "r+b") as f:
        f.truncate((end + 3) * CS)
    for c in (end, end + 2):
        _set_refcount(image, c, 1)
    rc, out = qemu_check(image)
    r = check_image(str(image), "qcow2")
    assert rc == 3 and r.exit_code == 3
    assert r.leaks == _qemu_leaks(out) == 2
    assert "2 leaked clusters" in format_report(r)
    before = read_all(image)
    r = check_image(str(image), "qcow2", repair="leaks")
    assert r.exit_code == 0 and r.leaks_fixed == 2
    assert qemu_check(image)[0] == 0
    assert read_all(image) == before


@pytest.mark.parametrize("case", ["refcount of used data cluster is 0", "refcount too high",
                                  "refcount of the L1 table is 0"])
def test_corruptions(image, case):
    l2 = None
    with open(image, "rb") as f:
        f.seek(3 * CS)
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        f.seek(l2)
        data = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
    if case == "refcount of used data cluster is 0":
        _set_refcount(image, data // CS, 0)
    elif case == "refcount too high":
        _set_refcount(image, data // CS, 2)     # a leak, but also a wrong COPIED flag
    else:
        _set_refcount(image, 3, 0)
    rc, out = qemu_check(image)
    r = check_image(str(image), "qcow2")
    assert rc == 2, out
    assert r.exit_code == 2, r.messages
    # --repair leaks never touches an image with corruptions.
    before = image.read_bytes()
    assert check_image(str(image), "qcow2", repair="leaks").exit_code == 2
    assert image.read_bytes() == before


def test_structural_damage(image):
    with open(image, "r+b") as f:
        f.seek(3 * CS)
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        f.seek(l2 + 8)
        f.write(struct.pack(">Q", (1 << 63) | (5 * CS + 512)))    # unaligned data cluster
    assert qemu_check(image)[0] == 2
    r = check_image(str(image), "qcow2")
    assert r.exit_code == 2
    assert any("not properly aligned" in m for m in r.messages)


def test_raw_has_nothing_to_check(tmp_path):
    p = tmp_path / "r.raw"
    p.write_bytes(bytes(4096))
    r = check_image(str(p), "raw")
    assert r.exit_code == 63 == qemu("check", "-f", "raw", p, check=False).returncode


def test_compressed_and_snapshot_images(tmp_path, image):
    src = tmp_path / "s.raw"
    src.write_bytes(read_all(image))
    comp = tmp_path / "comp.qcow2"
    qemu("convert", "-c", "-O", "qcow2", "-o", "cluster_size=4096", src, comp)
    qemu("snapshot", "-c", "a", comp)
    r = check_image(str(comp), "qcow2")
    assert r.exit_code == 0, r.messages
    assert r.compressed_clusters > 0
