"""Fixtures for the guest-image tests: a loopback HTTP server and .deb builders."""

from __future__ import annotations

import hashlib
import http.server
import lzma
import shutil
import subprocess
import threading
from pathlib import Path

import pytest


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def http_root(tmp_path):
    """``(root dir, base URL, request log)`` of an HTTP server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(root)))
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", server.requests
    server.shutdown()
    server.server_close()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty vmkit data directory (VMKIT_DATA_DIR)."""
    path = tmp_path / "data"
    monkeypatch.setenv("VMKIT_DATA_DIR", str(path))
    return path


def build_deb(tmp: Path, name: str, files: dict[str, bytes | tuple[str, str]],
              compression: str = "xz", version: str = "1.0", arch: str = "riscv64") -> Path:
    """A real .deb made by dpkg-deb; ``files`` maps paths to bytes, or to
    ``("symlink", target)``."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    root = tmp / f"{name}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: vmkit tests <tests@localhost>\nDescription: test package\n")
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            target.symlink_to(content[1])
        else:
            target.write_bytes(content)
    deb = tmp / f"{name}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build",
                    str(root), str(deb)], check=True, capture_output=True)
    return deb


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    """An ar archive (as in a .deb) from ``(name, data)`` members."""
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def write_archive(root: Path, packages: list[dict[str, str]], suite: str = "trixie",
                  arch: str = "riscv64") -> Path:
    """A minimal Debian archive under ``root``: Packages.xz and an unsigned Release.

    ``packages``: stanzas; for each with a ``deb`` key (a Path), the .deb is
    put in the pool and Filename, Size and SHA256 are filled in.
    """
    lines = []
    for p in packages:
        p = dict(p)
        deb = p.pop("deb", None)
        if deb is not None:
            pool = f"pool/main/{p['Package'][0]}/{p['Package']}/{deb.name}"
            (root / pool).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(deb, root / pool)
            data = deb.read_bytes()
            p.update(Filename=pool, Size=str(len(data)), SHA256=hashlib.sha256(data).hexdigest())
        lines.append("".join(f"{k}: {v}\n" for k, v in p.items()))
    text = "\n".join(lines).encode()
    dists = root / "dists" / suite
    index = dists / "main" / f"binary-{arch}"
    index.mkdir(parents=True, exist_ok=True)
    (index / "Packages.xz").write_bytes(lzma.compress(text))
    sums = []
    for name in ("Packages.xz",):
        data = (index / name).read_bytes()
        sums.append(f" {hashlib.sha256(data).hexdigest()} {len(data):>8} main/binary-{arch}/{name}")
    (dists / "Release").write_text(
        f"Origin: Debian\nSuite: stable\nCodename: {suite}\nArchitectures: {arch}\n"
        "Components: main\nSHA256:\n" + "\n".join(sums) + "\n")
    return dists / "Release"
