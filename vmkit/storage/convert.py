"""Copy a disk image into another format (raw <-> qcow2), keeping it sparse.

The source is asked which ranges are known to read as zeros (holes in a raw
file, unallocated or zero clusters in qcow2, recursively through backing
files) and those are skipped; the rest is read in chunks and every
cluster-sized piece that turns out to be all zeros is not written either, so
the destination allocates only what holds data. The result has no backing
file (the chain is flattened).
"""

from __future__ import annotations

import os

import numpy as np

from .errors import ImageFormatError
from .image import create_image, open_image

CHUNK = 2 << 20
STATUS_SPAN = 1 << 30


def convert(src: str, src_format: str, dst: str, dst_format: str, cluster_size: int = 65536,
            compat: str = "1.1") -> None:
    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise ImageFormatError(f"{dst}: source and destination are the same file")
    with open_image(src, src_format, readonly=True) as s:
        size = s.virtual_size
        if dst_format == "qcow2":
            create_image(dst, "qcow2", size, cluster_size=cluster_size, compat=compat)
        else:
            create_image(dst, dst_format, size)
        with open_image(dst, dst_format, readonly=False, cache="writeback") as d:
            copy_data(s, d, piece=cluster_size if dst_format == "qcow2" else 65536)
            d.flush()


def copy_data(s, d, piece: int = 65536) -> int:
    """Copy every range of s that may hold data into d, skipping zero pieces; returns bytes written."""
    size = min(s.virtual_size, d.virtual_size)
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    arr = np.frombuffer(buf, dtype=np.uint8)
    written = 0
    pos = 0
    while pos < size:
        n, is_zero = s.block_status(pos, min(STATUS_SPAN, size - pos))
        end = pos + n
        if is_zero:
            pos = end
            continue
        while pos < end:
            k = min(CHUNK, end - pos)
            s.read_into(pos, mv[:k])
            a = 0
            while a < k:
                # Align pieces to the destination's clusters.
                b = min(k, (pos + a) // piece * piece + piece - pos)
                if arr[a:b].any():
                    start = a
                    while b < k and arr[b:min(k, b + piece)].any():
                        b = min(k, b + piece)
                    d.write_from(pos + start, mv[start:b])
                    written += b - start
                a = b
            pos += k
    return written
