"""Consistency check of qcow2 images, like `qemu-img check`.

Counts every reference to every host cluster (qcow2_walk.py) and compares
with the stored refcounts (QEMU docs/interop/qcow2.txt, "Host cluster
management"): a stored count above the references is a leak (wasted space,
no harm), below is a corruption (a cluster could be handed out twice), as is
any structural damage the walk finds. Exit codes are qemu-img's: 0 clean,
2 corruptions, 3 leaks only, 1 the check could not run, 63 nothing to check
(raw). `repair="leaks"` lowers leaked counts to the references found, and
only when no corruption was found (with damaged tables a "leak" may be a
cluster reached through a pointer the walk could not follow).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ImageFormatError
from .hostfile import HostFile
from .qcow2_header import HDR_INCOMPATIBLE, INCOMPAT_CORRUPT, MAX_CLUSTER_BITS, parse_header
from .qcow2_refcount import Refcounts
from .qcow2_snapshot import read_table
from .qcow2_walk import MAX_MESSAGES, Walk, read_stored_refcounts, walk_references

EXIT_CLEAN, EXIT_CHECK_FAILED, EXIT_CORRUPT, EXIT_LEAKS, EXIT_UNSUPPORTED = 0, 1, 2, 3, 63


@dataclass
class CheckResult:
    path: str
    format: str
    corruptions: int = 0
    leaks: int = 0
    leaks_fixed: int = 0
    messages: list = field(default_factory=list)
    image_end_offset: int = 0
    allocated_clusters: int = 0
    total_clusters: int = 0
    compressed_clusters: int = 0
    supported: bool = True

    @property
    def exit_code(self) -> int:
        if not self.supported:
            return EXIT_UNSUPPORTED
        if self.corruptions:
            return EXIT_CORRUPT
        if self.leaks:
            return EXIT_LEAKS
        return EXIT_CLEAN

    def as_dict(self) -> dict:
        return {"filename": self.path, "format": self.format, "check_errors": 0,
                "corruptions": self.corruptions, "leaks": self.leaks, "leaks_fixed": self.leaks_fixed,
                "image_end_offset": self.image_end_offset, "allocated_clusters": self.allocated_clusters,
                "total_clusters": self.total_clusters, "compressed_clusters": self.compressed_clusters}


def check_image(path: str, format: str, repair: str | None = None) -> CheckResult:
    if repair not in (None, "leaks"):
        raise ImageFormatError(f"--repair {repair!r}: only 'leaks' is supported")
    if format == "raw":
        return CheckResult(path, "raw", supported=False)
    if format != "qcow2":
        raise ImageFormatError(f"unknown image format {format!r}")
    f = HostFile(path, readonly=repair is None)
    try:
        result = _check(f, path)
        if repair == "leaks" and result.leaks and not result.corruptions:
            fixed = result.leaks
            _repair_leaks(f, path)
            result = _check(f, path)
            result.leaks_fixed = fixed - result.leaks
        if repair and not result.corruptions and not result.leaks:
            _clear_corrupt_bit(f, path)
        return result
    finally:
        f.close()


def _load(f: HostFile, path: str):
    size = f.size()
    head = f.read(0, min(size, 104))
    cb = int.from_bytes(head[20:24], "big") if len(head) >= 24 else 0
    if 9 <= cb <= MAX_CLUSTER_BITS:
        head = f.read(0, min(size, 1 << cb))
    h = parse_header(path, head, size)
    snaps, table_size = ([], 0)
    if h.nb_snapshots:
        snaps, table_size = read_table(path, f, h.snapshots_offset, h.nb_snapshots, h.cluster_size, size)
    return h, snaps, table_size


def _compare(h, stored: np.ndarray, counts: np.ndarray):
    """(leaked cluster indices, corrupt cluster indices)."""
    counts = counts.astype(np.uint64)
    return np.nonzero(stored > counts)[0], np.nonzero(stored < counts)[0]


def _check(f: HostFile, path: str) -> CheckResult:
    h, snaps, table_size = _load(f, path)
    cs = h.cluster_size
    nclusters = -(-f.size() // cs)
    pre = Walk(counts=np.zeros(0, dtype=np.uint32))
    stored = read_stored_refcounts(f, h, nclusters, pre)
    w = walk_references(f, h, snaps, table_size, stored=stored)
    r = CheckResult(path, "qcow2")
    r.messages = pre.messages + w.messages
    r.corruptions = pre.corruptions + w.corruptions
    leaked, bad = _compare(h, stored, w.counts)
    for c in np.union1d(leaked, bad)[:MAX_MESSAGES]:
        c = int(c)
        kind = "ERROR" if stored[c] < w.counts[c] else "Leaked"
        r.messages.append(f"{kind} cluster {c} refcount={int(stored[c])} reference={int(w.counts[c])}")
    r.leaks = int(leaked.size)
    r.corruptions += int(bad.size)
    used = np.nonzero((stored > 0) | (w.counts > 0))[0]
    r.image_end_offset = (int(used[-1]) + 1) * cs if used.size else 0
    r.allocated_clusters = w.allocated_clusters
    r.compressed_clusters = w.compressed_clusters
    r.total_clusters = -(-h.size // cs)
    return r


def _repair_leaks(f: HostFile, path: str) -> None:
    h, snaps, table_size = _load(f, path)
    nclusters = -(-f.size() // h.cluster_size)
    stored = read_stored_refcounts(f, h, nclusters)
    w = walk_references(f, h, snaps, table_size, stored=stored)
    leaked, _ = _compare(h, stored, w.counts)

    def refuse(msg: str) -> None:
        raise ImageFormatError(f"{path}: {msg}")
    refs = Refcounts(f, h, 64, {}, refuse)
    for c in leaked:
        refs.set(int(c), int(w.counts[int(c)]))
    refs.write_dirty()
    f.sync()


def _clear_corrupt_bit(f: HostFile, path: str) -> None:
    h, _, _ = _load(f, path)
    if h.version == 3 and h.corrupt:
        f.write(HDR_INCOMPATIBLE, (h.incompatible_features & ~INCOMPAT_CORRUPT).to_bytes(8, "big"))
        f.sync()


def format_report(r: CheckResult) -> str:
    """Human-readable report (the messages go first, like qemu-img's stderr lines)."""
    if not r.supported:
        return f"{r.path}: raw images carry no metadata, so there is nothing to check"
    lines = list(r.messages)
    if lines:
        lines.append("")
    if r.leaks_fixed:
        lines.append(f"{r.leaks_fixed} leaked clusters were freed.")
    if not r.corruptions and not r.leaks:
        lines.append("No errors were found on the image.")
    if r.corruptions:
        lines.append(f"{r.corruptions} errors were found on the image.")
        lines.append("Data may be corrupted, or further writes to the image may corrupt it.")
    if r.leaks:
        lines.append(f"{r.leaks} leaked clusters were found on the image.")
        lines.append("This means waste of disk space, but no harm to data.")
    if r.total_clusters:
        pct = 100.0 * r.allocated_clusters / r.total_clusters
        lines.append(f"{r.allocated_clusters}/{r.total_clusters} = {pct:.2f}% allocated, "
                     f"{r.compressed_clusters} compressed clusters")
    lines.append(f"Image end offset: {r.image_end_offset}")
    return "\n".join(lines)
