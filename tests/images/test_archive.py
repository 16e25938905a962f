"""vmkit/images/archive.py: Release and Packages parsing, checksums, signatures."""

import logging
import lzma
import os
import shutil
import subprocess

import pytest

from vmkit.images import archive
from vmkit.images.archive import (
    clearsigned_text,
    fetch_packages,
    find_package,
    parse_packages,
    parse_relations,
    parse_release,
    verify_signature,
)
from vmkit.images.errors import ImageError

from .conftest import write_archive

RELEASE = """\
Origin: Debian
Codename: trixie
MD5Sum:
 00000000000000000000000000000000 12 main/binary-riscv64/Packages.xz
SHA256:
 aaaa000000000000000000000000000000000000000000000000000000000000   100 main/binary-riscv64/Packages
 bbbb000000000000000000000000000000000000000000000000000000000000    12 main/binary-riscv64/Packages.xz
"""

PACKAGES = """\
Package: linux-image-riscv64
Version: 6.12.1-1
Architecture: riscv64
Provides: linux-image-generic, wireguard-modules (= 1.0.0)
Depends: linux-image-6.12.1+deb13-riscv64 (= 6.12.1-1)
Description: metapackage
 with a long description
 .
 over several lines
Filename: pool/main/l/linux/linux-image-riscv64_6.12.1-1_riscv64.deb
Size: 1444
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

Package: busybox-static
Version: 1:1.37.0-6
Architecture: riscv64
Provides: busybox
Filename: pool/main/b/busybox/busybox-static_1.37.0-6_riscv64.deb
Size: 941532
SHA256: 2222222222222222222222222222222222222222222222222222222222222222
"""


def test_parse_release_sha256_only():
    files = parse_release(RELEASE)
    assert set(files) == {"main/binary-riscv64/Packages", "main/binary-riscv64/Packages.xz"}
    assert files["main/binary-riscv64/Packages.xz"].size == 12
    assert files["main/binary-riscv64/Packages.xz"].sha256.startswith("bbbb")


def test_clearsigned_body_and_dash_escaping():
    signed = ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + RELEASE
              + "- -----not a marker\n-----BEGIN PGP SIGNATURE-----\n\nxyz\n"
              "-----END PGP SIGNATURE-----\n")
    body = clearsigned_text(signed)
    assert body.startswith("Origin: Debian") and body.endswith("-----not a marker")
    assert parse_release(signed.replace("- -----not a marker\n", ""))[
        "main/binary-riscv64/Packages.xz"].size == 12
    with pytest.raises(ImageError):
        clearsigned_text("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: x\n")


def test_parse_release_rejects_non_release():
    with pytest.raises(ImageError, match="SHA256"):
        parse_release("<html>mirror maintenance</html>\n")


def test_parse_packages():
    packages = parse_packages(PACKAGES)
    meta = packages["linux-image-riscv64"]
    assert meta.version == "6.12.1-1" and meta.size == 1444
    assert meta.dependencies() == [["linux-image-6.12.1+deb13-riscv64"]]
    assert packages["busybox-static"].version == "1:1.37.0-6"
    assert find_package(packages, "busybox") is packages["busybox-static"]  # via Provides
    assert find_package(packages, "wireguard-modules") is meta
    with pytest.raises(ImageError, match="riscv64"):
        find_package(packages, "nonexistent")
    with pytest.raises(ImageError, match="lacks"):
        parse_packages("Package: broken\nVersion: 1\n")


def test_parse_relations():
    assert parse_relations("kmod, initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, "
                           "libc6:any [riscv64], foo (<< 2)") == [
        ["kmod"], ["initramfs-tools", "linux-initramfs-tool"], ["libc6"], ["foo"]]
    assert parse_relations("") == []


def test_fetch_packages_verifies_and_caches(http_root, tmp_path, caplog):
    root, url, requests = http_root
    write_archive(root, [{"Package": "x", "Version": "1", "Filename": "pool/x.deb",
                          "Size": "1", "SHA256": "00"}])
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        packages = fetch_packages(url, cache, progress=False)
    assert packages["x"].version == "1"
    assert "/dists/trixie/InRelease" in requests  # tried first, 404 here
    assert "not verified" in caplog.text  # no signature on this archive
    # Second fetch: Release again (it is the freshness check), Packages from cache.
    requests.clear()
    fetch_packages(url, cache, progress=False)
    assert not any(r.endswith("Packages.xz") for r in requests)


def test_corrupt_packages_rejected_and_not_kept(http_root, tmp_path):
    root, url, _ = http_root
    write_archive(root, [{"Package": "x", "Version": "1", "Filename": "pool/x.deb",
                          "Size": "1", "SHA256": "00"}])
    index = root / "dists/trixie/main/binary-riscv64/Packages.xz"
    good = index.read_bytes()
    index.write_bytes(lzma.compress(b"Package: evil\nVersion: 6\n")[: len(good)].ljust(len(good), b"\0"))
    cache = tmp_path / "cache"
    with pytest.raises(ImageError, match="SHA256"):
        fetch_packages(url, cache, progress=False)
    assert not list(cache.glob("Packages*"))


def test_missing_architecture(http_root, tmp_path):
    root, url, _ = http_root
    write_archive(root, [], arch="amd64")
    with pytest.raises(ImageError, match="riscv64"):
        fetch_packages(url, tmp_path / "cache", progress=False)


def test_require_signature(http_root, tmp_path, monkeypatch):
    root, url, _ = http_root
    write_archive(root, [])
    monkeypatch.setenv(archive.REQUIRE_SIGNATURE_ENV, "1")
    with pytest.raises(ImageError, match="signature"):
        fetch_packages(url, tmp_path / "cache", progress=False)


@pytest.fixture
def gpg_key(tmp_path):
    """``(gpg command, keyring file)`` for a fresh signing key in a private GNUPGHOME."""
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        pytest.skip("gpg/gpgv are not installed")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    gpg = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(gpg + ["--quick-gen-key", "vmkit test <test@localhost>", "ed25519",
                          "sign", "never"], env=env, check=True, capture_output=True)
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(subprocess.run(gpg + ["--export"], env=env, check=True,
                                       capture_output=True).stdout)
    yield (lambda *args: subprocess.run(gpg + list(args), env=env, check=True,
                                        capture_output=True)), keyring
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True)


def test_signature_good_unknown_bad(gpg_key, tmp_path, caplog):
    gpg, keyring = gpg_key
    release = tmp_path / "Release"
    release.write_text(RELEASE)
    inrelease = tmp_path / "InRelease"
    gpg("--clearsign", "--output", str(inrelease), str(release))
    assert verify_signature(inrelease, keyring=keyring) == "good"
    gpg("--detach-sign", "--output", str(tmp_path / "Release.gpg"), str(release))
    assert verify_signature(release, detached=tmp_path / "Release.gpg", keyring=keyring) == "good"

    with caplog.at_level(logging.WARNING):
        assert verify_signature(inrelease, keyring=_other_keyring(tmp_path)) == "unknown-key"
    assert "not in" in caplog.text

    tampered = tmp_path / "InRelease.bad"
    tampered.write_text(inrelease.read_text().replace("Codename: trixie", "Codename: evil!"))
    with pytest.raises(ImageError, match="BAD signature"):
        verify_signature(tampered, keyring=keyring)


def _other_keyring(tmp_path):
    """A valid keyring holding a different key than the signer's."""
    home = tmp_path / "gnupg2"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    base = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        subprocess.run(base + ["--quick-gen-key", "other <o@localhost>", "ed25519", "sign", "never"],
                       env=env, check=True, capture_output=True)
        out = tmp_path / "other-keyring.gpg"
        out.write_bytes(subprocess.run(base + ["--export"], env=env, check=True,
                                       capture_output=True).stdout)
        return out
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True)


def test_file_mirror(tmp_path):
    root = tmp_path / "mirror"
    write_archive(root, [{"Package": "x", "Version": "2", "Filename": "pool/x.deb",
                          "Size": "1", "SHA256": "00"}])
    assert fetch_packages(f"file://{root}", tmp_path / "cache", progress=False)["x"].version == "2"
