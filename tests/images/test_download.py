"""vmkit/images/download.py: verified downloads from a loopback HTTP server."""

import hashlib

import pytest

from vmkit.images.archive import is_not_found
from vmkit.images.download import download, is_verified
from vmkit.images.errors import ImageError

DATA = bytes(range(256)) * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def test_good_download(http_root, tmp_path):
    root, url, _ = http_root
    (root / "f.bin").write_bytes(DATA)
    dest = tmp_path / "cache" / "f.bin"
    assert download(f"{url}/f.bin", dest, size=len(DATA), sha256=SHA, progress=False) == SHA
    assert dest.read_bytes() == DATA and is_verified(dest, len(DATA), SHA)
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]  # no .part left


@pytest.mark.parametrize("size, sha, match", [
    (len(DATA) + 1, SHA, "bytes"),
    (len(DATA), "0" * 64, "SHA256"),
])
def test_mismatch_keeps_nothing(http_root, tmp_path, size, sha, match):
    root, url, _ = http_root
    (root / "f.bin").write_bytes(DATA)
    dest = tmp_path / "cache" / "f.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old good copy")
    with pytest.raises(ImageError, match=match):
        download(f"{url}/f.bin", dest, size=size, sha256=sha, progress=False)
    assert dest.read_bytes() == b"old good copy"  # replaced only by a verified file
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]


def test_not_found(http_root, tmp_path):
    _, url, _ = http_root
    with pytest.raises(ImageError, match="HTTP 404") as e:
        download(f"{url}/missing", tmp_path / "x", progress=False)
    assert is_not_found(e.value)
    assert not (tmp_path / "x").exists()


def test_unreachable(tmp_path):
    with pytest.raises(ImageError, match="network"):
        download("http://127.0.0.1:9/x", tmp_path / "x", progress=False)


def test_is_verified(tmp_path):
    f = tmp_path / "f"
    assert not is_verified(f, None, None)
    f.write_bytes(DATA)
    assert is_verified(f, None, None) and is_verified(f, len(DATA), SHA)
    assert not is_verified(f, 1, SHA) and not is_verified(f, len(DATA), "0" * 64)
