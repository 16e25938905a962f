"""atheris fuzz target: the qcow2 opener, reader, writer and checker on arbitrary bytes.

    python tests/storage/fuzz_qcow2.py [-max_total_time=60] [-rss_limit_mb=512] [CORPUS_DIR ...]

A failure is any exception other than ImageFormatError, a hang (libFuzzer's
-timeout) or memory over -rss_limit_mb (RELIABILITY.md, "Continuous
checks"). Seeds: small valid images (512-byte clusters) written to
CORPUS_DIR/seed-* when the directory is empty. Each crash found becomes a
case in test_bad_input.py.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from vmkit.storage.check import check_image
    from vmkit.storage.errors import ImageFormatError
    from vmkit.storage.qcow2 import Qcow2Image

# Scratch files: in $VMKIT_FUZZ_WORKDIR (the test passes its tmp_path), else a temp dir.
_DIR = os.environ.get("VMKIT_FUZZ_WORKDIR") or tempfile.mkdtemp(prefix="vmkit-fuzz-")
if "VMKIT_FUZZ_WORKDIR" not in os.environ:
    atexit.register(shutil.rmtree, _DIR, True)
_PATH = os.path.join(_DIR, "fuzz.qcow2")


def exercise(data: bytes) -> None:
    """Open, read, write, check: only ImageFormatError may come out."""
    with open(_PATH, "wb") as f:
        f.write(data)
    try:
        img = Qcow2Image(_PATH, readonly=True, open_backing=False)
        try:
            size = img.virtual_size
            buf = bytearray(4096)
            for off in (0, size // 2, max(0, size - 4096)):
                n = min(4096, size - off)
                if n > 0:
                    img.read_into(off, memoryview(buf)[:n])
            if size:
                img.block_status(0, size)
        finally:
            img.close()
    except ImageFormatError:
        pass
    try:
        check_image(_PATH, "qcow2")
    except ImageFormatError:
        pass
    try:
        img = Qcow2Image(_PATH, readonly=False, open_backing=False)
        try:
            size = img.virtual_size
            if size:
                img.write_from(min(size - 1, 1000), b"\x5a")
                img.write_zeroes(0, min(size, 2048), may_unmap=True)
                img.flush()
        finally:
            img.close()
    except ImageFormatError:
        pass


def test_one_input(data: bytes) -> None:
    exercise(data)


def write_seeds(corpus: str) -> None:
    from vmkit.storage.image import create_image, open_image
    os.makedirs(corpus, exist_ok=True)
    if os.listdir(corpus):
        return
    p = os.path.join(_DIR, "seed.qcow2")
    for i, kw in enumerate(({}, {"compat": "0.10"}, {"lazy_refcounts": True})):
        create_image(p, "qcow2", 64 << 10, cluster_size=512, **kw)
        with open_image(p, "qcow2") as img:
            img.write_from(1000, b"x" * 3000)
            if i == 0:
                img.snapshot_create("s")
                img.write_from(0, b"y" * 600)
        with open(p, "rb") as f, open(os.path.join(corpus, f"seed-{i}"), "wb") as out:
            out.write(f.read())


def main() -> None:
    corpora = [a for a in sys.argv[1:] if not a.startswith("-")]
    for c in corpora:
        write_seeds(c)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
