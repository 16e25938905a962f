"""Find the Debian mirror to fetch guest-image packages from.

The mirror is never written into vmkit: it comes, in this order, from the
caller (``--mirror``), the ``VMKIT_DEBIAN_MIRROR`` environment variable, or
the host's apt sources, where it is the first URI of the first Debian archive
entry (a ``deb`` entry for a Debian suite that is not ``*-security``).

apt source formats (sources.list(5)): one-line ``deb [opts] URI suite comp...``
in ``sources.list`` and ``sources.list.d/*.list``; deb822 stanzas with
``Types``, ``URIs``, ``Suites`` (and optionally ``Enabled: no``) in
``sources.list.d/*.sources``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from .deb822 import parse_deb822
from .errors import ImageError

MIRROR_ENV = "VMKIT_DEBIAN_MIRROR"

# Debian's code names and suite aliases; an entry whose suite is not one of
# these (plus -updates, -backports, ...) belongs to some other archive
# (Ubuntu, a vendor's repository), and its URI would not serve Debian trixie.
DEBIAN_SUITES = frozenset({
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental",
})
URI_SCHEMES = ("http://", "https://", "file:/")


def find_mirror(mirror: str | None = None, *, apt_dir: Path = Path("/etc/apt"),
                environ: Mapping[str, str] = os.environ) -> str:
    """Return the Debian mirror's base URL, without a trailing slash."""
    for candidate in (mirror, environ.get(MIRROR_ENV)):
        if candidate:
            return check_mirror_url(candidate)
    for uri, suites in apt_entries(apt_dir):
        if any(is_debian_archive_suite(s) for s in suites):
            return uri.rstrip("/")
    raise ImageError(
        f"no Debian mirror found in {apt_dir}/sources.list or {apt_dir}/sources.list.d/: "
        f"pass --mirror URL or set {MIRROR_ENV} to a Debian archive mirror "
        "(the URL whose dists/ directory holds trixie)")


def check_mirror_url(url: str) -> str:
    if not url.startswith(URI_SCHEMES):
        raise ImageError(f"mirror {url!r} is not an http://, https:// or file:/ URL: "
                         "give the Debian archive's base URL (the one holding dists/ and pool/)")
    return url.rstrip("/")


def is_debian_archive_suite(suite: str) -> bool:
    """True for ``bookworm``, ``trixie-updates``, ``stable``; false for ``*-security``."""
    base, _, pocket = suite.partition("-")
    return base in DEBIAN_SUITES and pocket != "security"


def apt_entries(apt_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """Yield ``(first URI, suites)`` for each enabled ``deb`` entry, in apt's file order."""
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            yield from deb822_entries(text)
        else:
            yield from one_line_entries(text)


def one_line_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2 and words[0].startswith(URI_SCHEMES):
            yield words[0], [words[1]]


def deb822_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    try:
        stanzas = parse_deb822(text)
    except ValueError:
        return  # a broken file is apt's problem; look at the others
    for stanza in stanzas:
        if stanza.get("Enabled", "yes").lower() == "no":
            continue
        if "deb" not in stanza.get("Types", "").split():
            continue
        uris = [u for u in stanza.get("URIs", "").split() if u.startswith(URI_SCHEMES)]
        if uris:
            yield uris[0], stanza.get("Suites", "").split()
