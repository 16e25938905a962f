"""Create an empty qcow2 image.

Spec: QEMU docs/interop/qcow2.txt, "Header", "Header extensions", "Host
cluster management". Layout (the same as qemu-img's)::

    cluster 0         header, extensions (backing format, feature names), backing name
    cluster 1..       refcount table
    next clusters     refcount block(s) counting everything up to the L1 table
    next clusters     L1 table (all zero: nothing allocated); the file ends with it
"""

from __future__ import annotations

import os
from array import array

import numpy as np

from .backing import check_backing_name, check_chain, file_identity, resolve_backing
from .errors import ImageFormatError
from .hostfile import HostFile
from .qcow2_cache import dump_u64_table
from .qcow2_header import (COMPAT_LAZY_REFCOUNTS, EXT_BACKING_FORMAT, EXT_FEATURE_TABLE,
                           MAX_BACKING_NAME, MAX_CLUSTER_BITS, MAX_L1_BYTES, MIN_CLUSTER_BITS,
                           V2_HEADER_LENGTH, V3_HEADER_LENGTH, Header, feature_table, l1_entries_needed,
                           pack_header)
from .qcow2_refcount import encode_refblock_np


def create_qcow2(path: str, size: int | None, backing: str | None = None, backing_format: str | None = None,
                 cluster_size: int = 65536, lazy_refcounts: bool = False, compat: str = "1.1",
                 refcount_bits: int = 16) -> None:
    if compat not in ("1.1", "0.10"):
        raise ImageFormatError(f"compat {compat!r}: use 1.1 (version 3) or 0.10 (version 2)")
    version = 3 if compat == "1.1" else 2
    cb = cluster_size.bit_length() - 1
    if cluster_size != 1 << cb or not MIN_CLUSTER_BITS <= cb <= MAX_CLUSTER_BITS:
        raise ImageFormatError(f"cluster size {cluster_size} must be a power of two from 512 to 2M")
    if refcount_bits not in (1, 2, 4, 8, 16, 32, 64) or (version == 2 and refcount_bits != 16):
        raise ImageFormatError(f"refcount_bits {refcount_bits}: use a power of two up to 64 "
                               "(16 for compat 0.10)")
    if lazy_refcounts and version == 2:
        raise ImageFormatError("lazy refcounts need compat 1.1 (qcow2 version 3)")
    if backing:
        check_backing_name(path, backing)
        if len(backing.encode()) > MAX_BACKING_NAME:
            raise ImageFormatError(f"backing file name is longer than {MAX_BACKING_NAME} bytes")
        bpath = resolve_backing(path, backing)
        if backing_format is None:
            # A person names the backing file here; record the format so that
            # opening never has to guess it.
            from .image import probe_format
            backing_format = probe_format(bpath)
        if backing_format not in ("raw", "qcow2"):
            raise ImageFormatError(f"backing format {backing_format!r}: use raw or qcow2")
        from .image import open_image
        with open_image(bpath, backing_format, readonly=True) as base:
            if size is None:
                size = base.virtual_size
        if os.path.exists(path):
            check_chain(path, bpath, (file_identity(path),), (path,))
    if size is None:
        raise ImageFormatError("a size is needed to create an image without a backing file")
    if size < 0:
        raise ImageFormatError(f"invalid size {size}")
    size = -(-size // 512) * 512
    l1_size = l1_entries_needed(size, cb)
    if l1_size * 8 > MAX_L1_BYTES:
        raise ImageFormatError(f"size {size} is too big for {cluster_size}-byte clusters; "
                               "use a bigger cluster size")
    order = refcount_bits.bit_length() - 1
    per_block = cluster_size * 8 // refcount_bits
    l1_clusters = -(-l1_size * 8 // cluster_size)
    rt, nb = 1, 1
    while True:
        total = 1 + rt + nb + l1_clusters
        nb2 = -(-total // per_block)
        rt2 = -(-nb2 * 8 // cluster_size)
        if (nb2, rt2) == (nb, rt):
            break
        nb, rt = nb2, rt2
    rt_off = cluster_size
    rb_off = rt_off + rt * cluster_size
    l1_off = rb_off + nb * cluster_size
    h = Header(version=version, backing_file_offset=0, backing_file_size=0, cluster_bits=cb, size=size,
               crypt_method=0, l1_size=l1_size, l1_table_offset=l1_off, refcount_table_offset=rt_off,
               refcount_table_clusters=rt, nb_snapshots=0, snapshots_offset=0,
               compatible_features=COMPAT_LAZY_REFCOUNTS if lazy_refcounts else 0,
               refcount_order=order if version == 3 else 4,
               header_length=V3_HEADER_LENGTH if version == 3 else V2_HEADER_LENGTH)
    exts = []
    if backing:
        exts.append((EXT_BACKING_FORMAT, backing_format.encode()))
    if version == 3:
        exts.append((EXT_FEATURE_TABLE, feature_table()))
    name = backing.encode() if backing else b""
    if len(pack_header(h, exts)) + len(name) > cluster_size and version == 3:
        exts.pop()      # the feature name table is optional; small clusters go without
    head = pack_header(h, exts)
    if backing:
        h.backing_file_offset, h.backing_file_size = len(head), len(name)
        head = pack_header(h, exts) + name
    if len(head) > cluster_size:
        raise ImageFormatError(f"the header and backing file name do not fit in one {cluster_size}-byte "
                               "cluster; use a shorter backing name or bigger clusters")
    counts = np.zeros(nb * per_block, dtype=np.uint64)
    counts[:total] = 1
    reftable = array("Q", bytes(rt * cluster_size))
    for i in range(nb):
        reftable[i] = rb_off + i * cluster_size
    f = HostFile(path, readonly=False, create=True)
    try:
        f.write(0, head)
        f.write(rt_off, dump_u64_table(reftable))
        for i in range(nb):
            f.write(rb_off + i * cluster_size,
                    encode_refblock_np(counts[i * per_block:(i + 1) * per_block], order))
        f.truncate(l1_off + 8 * l1_size)     # the L1 table: zeros, sparse
        f.sync()
    finally:
        f.close()
