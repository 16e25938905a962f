"""Fetch a file over HTTP(S) (or file:) and keep it only if it verifies.

The bytes go to ``<dest>.part`` beside the destination while their SHA256 is
computed; only when size and hash match what the archive index promised is
the file renamed into place (atomic on one file system). A file that fails
verification is deleted, so the cache never holds a bad copy.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .errors import ImageError

CHUNK = 1 << 16
TIMEOUT = 60  # seconds without progress before the socket gives up


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def is_verified(path: Path, size: int | None, sha256: str | None) -> bool:
    """True if ``path`` exists with the given size and SHA256 (those given)."""
    if not path.is_file() or (size is not None and path.stat().st_size != size):
        return False
    return sha256 is None or sha256_file(path) == sha256


def download(url: str, dest: Path, *, size: int | None = None, sha256: str | None = None,
             progress: bool = True, label: str | None = None) -> str:
    """Download ``url`` to ``dest`` and return the file's SHA256.

    ``size`` and ``sha256``, when given, must match or ``ImageError`` is
    raised and nothing is left at ``dest``. ``dest`` is replaced atomically,
    so a reader sees either the old file or the whole verified new one.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(part, "wb") as out:
            total = size if size is not None else _content_length(response)
            with _progress_bar(progress) as bar:
                task = bar.add_task(label or dest.name, total=total)
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(task, completed=got)
        digest = h.hexdigest()
        if size is not None and got != size:
            raise ImageError(f"{url}: got {got} bytes, the archive index says {size}; "
                             "the mirror may be mid-sync: try again later or use another mirror")
        if sha256 is not None and digest != sha256:
            raise ImageError(f"{url}: SHA256 {digest} does not match the archive index ({sha256}); "
                             "the download was corrupted or the mirror is inconsistent: "
                             "try again, or use another mirror with --mirror")
        os.replace(part, dest)
        return digest
    except urllib.error.HTTPError as e:
        raise ImageError(f"{url}: HTTP {e.code} {e.reason}; check that the mirror "
                         "carries this file (set --mirror or VMKIT_DEBIAN_MIRROR)") from e
    except (urllib.error.URLError, OSError) as e:
        raise ImageError(f"{url}: {getattr(e, 'reason', e)}; check the network and the mirror "
                         "(set --mirror or VMKIT_DEBIAN_MIRROR)") from e
    finally:
        part.unlink(missing_ok=True)


def _content_length(response) -> int | None:
    length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    return int(length) if length and length.isdigit() else None


def _progress_bar(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), disable=not enabled,
                    transient=False)
