"""vmkit/images/mirror.py: finding the Debian mirror from a fake /etc/apt."""

import pytest

from vmkit.images.errors import ImageError
from vmkit.images.mirror import MIRROR_ENV, find_mirror, is_debian_archive_suite

A = "http://127.0.0.2/debian"
S = "http://127.0.0.3/debian-security"
OTHER = "https://127.0.0.4/apt"


def apt(tmp_path, sources_list=None, **parts):
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    if sources_list is not None:
        (root / "sources.list").write_text(sources_list)
    for name, text in parts.items():
        (root / "sources.list.d" / name.replace("_", ".")).write_text(text)
    return root


def test_deb822_sources_skip_security_and_others(tmp_path):
    root = apt(tmp_path, **{
        "a-vendor_sources": f"Types: deb\nURIs: {OTHER}\nSuites: nodistro\nComponents: main\n",
        "debian_sources": (
            f"Types: deb\n# a comment\nURIs: {S}\nSuites: trixie-security\nComponents: main\n\n"
            "Types: deb\nURIs: http://127.0.0.6/debian\nSuites: trixie\nEnabled: no\n\n"
            f"Types: deb-src deb\nURIs: {A}/ {OTHER}\nSuites: bookworm bookworm-updates\n"
            "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
    })
    assert find_mirror(apt_dir=root, environ={}) == A


def test_one_line_sources_list_first(tmp_path):
    root = apt(tmp_path, (
        "# deb http://127.0.0.5/debian trixie main\n"
        f"deb-src {OTHER} trixie main\n"
        f"deb {S} bookworm-security main\n"
        f"deb [arch=amd64 signed-by=/x.gpg] {A} trixie main contrib\n"),
        **{"z_sources": f"Types: deb\nURIs: {OTHER}\nSuites: sid\n"})
    assert find_mirror(apt_dir=root, environ={}) == A


def test_non_debian_suites_ignored(tmp_path):
    root = apt(tmp_path, f"deb {OTHER} cloud-sdk-bookworm main\ndeb {OTHER} jammy main\n")
    with pytest.raises(ImageError, match=MIRROR_ENV):
        find_mirror(apt_dir=root, environ={})


def test_explicit_and_environment_win(tmp_path):
    root = apt(tmp_path, f"deb {A} trixie main\n")
    assert find_mirror(apt_dir=root, environ={MIRROR_ENV: OTHER + "/"}) == OTHER
    assert find_mirror("file:///srv/mirror/", apt_dir=root, environ={MIRROR_ENV: OTHER}) == \
        "file:///srv/mirror"
    with pytest.raises(ImageError, match="URL"):
        find_mirror("127.0.0.2/debian", apt_dir=root, environ={})


def test_no_apt_dir(tmp_path):
    with pytest.raises(ImageError, match="--mirror"):
        find_mirror(apt_dir=tmp_path / "nothing", environ={})


def test_suite_rule():
    assert is_debian_archive_suite("trixie")
    assert is_debian_archive_suite("bookworm-updates")
    assert is_debian_archive_suite("stable-backports")
    assert not is_debian_archive_suite("bookworm-security")
    assert not is_debian_archive_suite("focal")
