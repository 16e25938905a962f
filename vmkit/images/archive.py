"""Debian archive indexes: the suite's Release file and a Packages list.

Debian repository format (the Debian wiki page DebianRepository/Format):
``dists/<suite>/InRelease`` is the clear-signed Release file (``Release`` +
``Release.gpg`` on older mirrors); its ``SHA256`` field lists every index
file with size and hash; ``dists/<suite>/<component>/binary-<arch>/Packages.xz``
has one deb822 stanza per package, giving the ``.deb``'s pool path, size and
SHA256. The chain of trust is therefore signature -> Release -> Packages ->
.deb, and every link but the first is checked here unconditionally.

The signature is checked with ``gpgv`` against Debian's archive keyring when
both are installed. A host older than the suite may not have the suite's
signing key (bookworm's first keyrings predate trixie's keys): then we warn
and carry on, trusting the Release file as fetched, with the Packages and
.deb checksums still enforced. ``VMKIT_REQUIRE_SIGNATURE=1`` turns that
warning into an error.
"""

from __future__ import annotations

import logging
import lzma
import os
import re
import shutil
import subprocess
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from .deb822 import parse_deb822
from .download import download, is_verified
from .errors import ImageError

log = logging.getLogger(__name__)

SUITE = "trixie"
ARCH = "riscv64"
COMPONENT = "main"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
REQUIRE_SIGNATURE_ENV = "VMKIT_REQUIRE_SIGNATURE"


@dataclass(frozen=True)
class Package:
    """One binary package stanza, reduced to what image building needs."""
    name: str
    version: str
    architecture: str
    filename: str  # pool path, relative to the mirror's base URL
    sha256: str
    size: int
    depends: str = ""
    provides: str = ""

    def dependencies(self) -> list[list[str]]:
        """``Depends`` as groups of alternative package names (versions dropped)."""
        return parse_relations(self.depends)


@dataclass(frozen=True)
class IndexFile:
    path: str  # relative to dists/<suite>/
    size: int
    sha256: str


# ---------------------------------------------------------------- parsing

def parse_relations(text: str) -> list[list[str]]:
    """``"a (>= 1) | b:any, c [riscv64]"`` -> ``[["a", "b"], ["c"]]``."""
    groups = []
    for group in text.split(","):
        names = []
        for alt in group.split("|"):
            name = re.split(r"[\s(\[<:]", alt.strip(), maxsplit=1)[0]
            if name:
                names.append(name)
        if names:
            groups.append(names)
    return groups


def clearsigned_text(text: str) -> str:
    """The signed body of an OpenPGP clear-signed message (RFC 4880, 7)."""
    if not text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return text  # a plain Release file
    head, sep, rest = text.partition("\n\n")  # armor headers ("Hash: SHA256") end at a blank line
    body, sep2, _ = rest.partition("\n-----BEGIN PGP SIGNATURE-----")
    if not sep or not sep2:
        raise ImageError("InRelease is not a well-formed clear-signed file: "
                         "the mirror returned something else; try another mirror")
    # Dash-escaping: lines starting with "-" are sent as "- -..."
    return "\n".join(line[2:] if line.startswith("- ") else line for line in body.split("\n"))


def parse_release(text: str) -> dict[str, IndexFile]:
    """Map each index path in a Release file's ``SHA256`` field to its size and hash."""
    try:
        stanzas = parse_deb822(clearsigned_text(text))
    except ValueError:
        stanzas = []
    if not stanzas or "SHA256" not in stanzas[0]:
        raise ImageError("the Release file has no SHA256 list: the mirror's dists/ is not "
                         "a Debian archive; check --mirror / VMKIT_DEBIAN_MIRROR")
    files = {}
    for line in stanzas[0]["SHA256"].split("\n"):
        words = line.split()
        if len(words) == 3:
            sha256, size, path = words
            files[path] = IndexFile(path, int(size), sha256)
    return files


def parse_packages(text: str) -> dict[str, Package]:
    """Map package name -> ``Package`` for a Packages file.

    XXX: a name listed twice keeps its last stanza; picking the highest
    version would need Debian version comparison, and one suite/arch has a
    single version of each package in practice.
    """
    packages = {}
    try:
        stanzas = parse_deb822(text)
    except ValueError as e:
        raise ImageError(f"the Packages index is damaged ({e}); pull again with --force") from e
    for s in stanzas:
        try:
            p = Package(name=s["Package"], version=s["Version"],
                        architecture=s.get("Architecture", ""), filename=s["Filename"],
                        sha256=s["SHA256"], size=int(s["Size"]),
                        depends=s.get("Depends", ""), provides=s.get("Provides", ""))
        except (KeyError, ValueError) as e:
            raise ImageError(f"Packages stanza {s.get('Package', '?')!r} lacks or garbles {e}: "
                             "the index is damaged; pull again with --force") from e
        packages[p.name] = p
    return packages


def find_package(packages: dict[str, Package], name: str) -> Package:
    """The package called ``name``, else the first one that ``Provides`` it."""
    if name in packages:
        return packages[name]
    for p in packages.values():
        if name in (alt for group in parse_relations(p.provides) for alt in group):
            return p
    raise ImageError(f"package {name!r} is not in {SUITE}/{COMPONENT} for {ARCH}: "
                     "check that the mirror carries riscv64 (a partial mirror may not)")


# ---------------------------------------------------------------- signature

def verify_signature(signed: Path, detached: Path | None = None, keyring: Path = KEYRING) -> str:
    """Check a Release signature with gpgv: returns ``"good"``, ``"unknown-key"`` or ``"unchecked"``.

    Raises ``ImageError`` for a bad signature (tampering or corruption).
    """
    gpgv = shutil.which("gpgv")
    if gpgv is None or not keyring.exists():
        _unverified(f"gpgv or {keyring} is missing (apt-get install gpgv debian-archive-keyring)")
        return "unchecked"
    args = [gpgv, "--status-fd", "1", "--keyring", str(keyring)]
    args += [str(detached), str(signed)] if detached else [str(signed)]
    run = subprocess.run(args, capture_output=True, text=True)
    status = [line.split()[1] for line in run.stdout.splitlines()
              if line.startswith("[GNUPG:] ") and len(line.split()) > 1]
    if "BADSIG" in status:
        raise ImageError(f"{signed.name} has a BAD signature: the mirror's index was altered or "
                         "corrupted; do not use this mirror (pass another with --mirror)")
    if "GOODSIG" in status:
        # One good signature by a key in Debian's keyring is enough (as for apt),
        # even if other signatures on InRelease are by keys this host lacks.
        return "good"
    if "NO_PUBKEY" in status:
        # The signing keys are not in the host keyring (e.g. trixie's keys on a
        # bookworm host whose keyring predates them).
        _unverified(f"{signed.name} is signed by a key not in {keyring}; "
                    "update the keyring (apt-get install debian-archive-keyring) to check it")
        return "unknown-key"
    raise ImageError(f"gpgv could not check {signed.name}: {run.stderr.strip()}")


def _unverified(why: str) -> None:
    if os.environ.get(REQUIRE_SIGNATURE_ENV) == "1":
        raise ImageError(f"cannot verify the archive signature: {why} "
                         f"(or unset {REQUIRE_SIGNATURE_ENV})")
    log.warning("archive signature not verified: %s; relying on the Release checksums "
                "as fetched over the network", why)


# ---------------------------------------------------------------- fetching

def is_not_found(e: ImageError) -> bool:
    """True if ``download`` failed because the server (or file: mirror) has no such file."""
    cause = e.__cause__
    if isinstance(cause, urllib.error.HTTPError):
        return cause.code == 404
    return isinstance(cause, urllib.error.URLError) and isinstance(cause.reason, FileNotFoundError)


def fetch_release(mirror: str, cache: Path, *, suite: str = SUITE,
                  progress: bool = False) -> dict[str, IndexFile]:
    """Fetch, verify and parse ``dists/<suite>/InRelease`` (or Release + Release.gpg).

    The Release file is fetched on every call: it is what tells a cached
    Packages file from a stale one.
    """
    base = f"{mirror}/dists/{suite}"
    inrelease = cache / "InRelease"
    try:
        download(f"{base}/InRelease", inrelease, progress=progress)
        verify_signature(inrelease)
        return parse_release(inrelease.read_text())
    except ImageError as e:
        if not is_not_found(e):
            raise
    release, gpg = cache / "Release", cache / "Release.gpg"
    download(f"{base}/Release", release, progress=progress)
    try:
        download(f"{base}/Release.gpg", gpg, progress=progress)
        verify_signature(release, detached=gpg)
    except ImageError as e:
        if not is_not_found(e):
            raise
        _unverified(f"{base} has neither InRelease nor Release.gpg")
    return parse_release(release.read_text())


def fetch_packages(mirror: str, cache: Path, *, suite: str = SUITE, arch: str = ARCH,
                   component: str = COMPONENT, progress: bool = True) -> dict[str, Package]:
    """Return the verified, parsed Packages index of ``suite/component/binary-arch``.

    Index files live in ``cache`` and are fetched again only when the Release
    file lists a different hash for them.
    """
    cache.mkdir(parents=True, exist_ok=True)
    release = fetch_release(mirror, cache, suite=suite)
    path = f"{component}/binary-{arch}/Packages.xz"
    entry = release.get(path)
    if entry is None:
        raise ImageError(f"{suite}'s Release lists no {path}: this mirror does not carry "
                         f"{arch}; use a full Debian mirror (--mirror or VMKIT_DEBIAN_MIRROR)")
    local = cache / f"Packages-{component}-{arch}.xz"
    if not is_verified(local, entry.size, entry.sha256):
        download(f"{mirror}/dists/{suite}/{path}", local, size=entry.size,
                 sha256=entry.sha256, progress=progress, label=f"{suite} Packages ({arch})")
    try:
        text = lzma.decompress(local.read_bytes()).decode("utf-8", errors="replace")
    except lzma.LZMAError as e:
        local.unlink(missing_ok=True)
        raise ImageError(f"{path} does not decompress ({e}); pull again") from e
    return parse_packages(text)
