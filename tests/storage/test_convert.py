"""raw <-> qcow2 conversion (vmkit/storage/convert.py): same content, zeros not allocated."""

from __future__ import annotations

import os

import pytest

from vmkit.storage import create_image, open_image
from vmkit.storage.convert import convert

from .conftest import qemu, qemu_check, qemu_raw, read_all

pytestmark = pytest.mark.usefixtures("qemu_img")
MiB = 1 << 20


@pytest.fixture
def sparse_raw(tmp_path):
    p = tmp_path / "src.raw"
    create_image(p, "raw", 64 * MiB)
    with open_image(p, "raw") as img:
        img.write_from(1 * MiB, os.urandom(MiB))
        img.write_from(10 * MiB, bytes(2 * MiB))          # written zeros: still not data
        img.write_from(20 * MiB + 123, b"tail" * 1000)
        img.write_from(64 * MiB - 512, b"\x01" * 512)
    return p


def test_raw_to_qcow2_to_raw(tmp_path, sparse_raw):
    q = tmp_path / "d.qcow2"
    convert(str(sparse_raw), "raw", str(q), "qcow2")
    assert qemu_check(q)[0] == 0
    assert read_all(q) == sparse_raw.read_bytes()
    assert qemu_raw(q, tmp_path) == sparse_raw.read_bytes()
    # 1 MiB of random data + 2 small pieces: 16 + 1 + 1 clusters and metadata, no zeros.
    assert q.stat().st_size < 2 * MiB
    back = tmp_path / "back.raw"
    convert(str(q), "qcow2", str(back), "raw")
    assert back.read_bytes() == sparse_raw.read_bytes()
    assert back.stat().st_blocks * 512 < 3 * MiB


def test_flattens_a_backing_chain(tmp_path, sparse_raw):
    ov = tmp_path / "ov.qcow2"
    create_image(ov, "qcow2", None, backing=str(sparse_raw), backing_format="raw")
    with open_image(ov, "qcow2") as img:
        img.write_from(1 * MiB + 4096, b"\x22" * 4096)
        img.discard(20 * MiB, MiB)
    flat = tmp_path / "flat.qcow2"
    convert(str(ov), "qcow2", str(flat), "qcow2", cluster_size=4096)
    assert read_all(flat) == read_all(ov) == qemu_raw(ov, tmp_path)
    assert "backing file:" not in qemu("info", flat).stdout
    assert qemu_check(flat)[0] == 0


def test_converts_compressed_qemu_image(tmp_path, sparse_raw):
    c = tmp_path / "c.qcow2"
    qemu("convert", "-c", "-O", "qcow2", sparse_raw, c)
    out = tmp_path / "out.raw"
    convert(str(c), "qcow2", str(out), "raw")
    assert out.read_bytes() == sparse_raw.read_bytes()


def test_refuses_same_file(tmp_path, sparse_raw):
    from vmkit.storage import ImageFormatError
    with pytest.raises(ImageFormatError, match="same file"):
        convert(str(sparse_raw), "raw", str(sparse_raw), "raw")
