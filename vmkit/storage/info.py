"""What `vmkit disk info` reports about an image and its backing chain.

Opens every image read-only and without its backing file, then follows the
chain itself (same name, format, loop and depth rules as opening), so a
missing or refused backing file is reported rather than fatal.
"""

from __future__ import annotations

import time

from .backing import MAX_CHAIN_DEPTH, check_backing_format, check_chain, file_identity, resolve_backing
from .errors import ImageFormatError


def _describe_one(path: str, fmt: str) -> dict:
    from .image import open_image
    if fmt == "qcow2":
        from .qcow2 import Qcow2Image
        img = Qcow2Image(path, readonly=True, open_backing=False)
    else:
        img = open_image(path, fmt, readonly=True)
    try:
        d = {"filename": path, "format": fmt, "virtual_size": img.virtual_size,
             "disk_size": img.file.allocated_bytes()}
        if fmt == "qcow2":
            h = img.h
            d.update({
                "cluster_size": h.cluster_size,
                "compat": "1.1" if h.version == 3 else "0.10",
                "lazy_refcounts": h.lazy_refcounts,
                "refcount_bits": h.refcount_bits,
                "dirty": h.dirty,
                "corrupt": h.corrupt,
                "bitmaps": h.has_bitmaps,
                "snapshots": snapshot_dicts(img.snapshots),
            })
            if h.backing_file:
                d["backing_file"] = h.backing_file
                d["backing_format"] = h.backing_format
        return d
    finally:
        img.close()


def describe_image(path: str, fmt: str) -> dict:
    """Info on path and, under "backing_chain", on each backing file below it."""
    info = _describe_one(path, fmt)
    chain_ids = (file_identity(path),)
    names = (path,)
    chain = []
    cur = info
    while cur.get("backing_file"):
        try:
            bpath = resolve_backing(cur["filename"], cur["backing_file"])
            bfmt = check_backing_format(cur["filename"], cur["backing_file"], cur.get("backing_format"))
            ident = check_chain(cur["filename"], bpath, chain_ids, names)
            cur["full_backing_filename"] = bpath
            nxt = _describe_one(bpath, bfmt)
        except ImageFormatError as e:
            cur["backing_error"] = str(e)
            break
        chain.append(nxt)
        chain_ids += (ident,)
        names += (bpath,)
        cur = nxt
        if len(chain) > MAX_CHAIN_DEPTH:
            break
    info["backing_chain"] = chain
    return info


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return str(n)


def snapshot_lines(snapshots: list[dict]) -> list[str]:
    """The snapshot table as qemu-img prints it (ID, tag, VM state size, date, VM clock)."""
    out = ["Snapshot list:", f"{'ID':<8}{'TAG':<20}{'VM SIZE':>10}  {'DATE':<19}  VM CLOCK"]
    for s in snapshots:
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["date_sec"]))
        clock = s["vm_clock_nsec"] // 10**6
        out.append(f"{s['id']:<8}{s['name']:<20}{human_size(s['vm_state_size']):>10}  {date:<19}  "
                   f"{clock // 3600000:02d}:{clock // 60000 % 60:02d}:{clock // 1000 % 60:02d}."
                   f"{clock % 1000:03d}")
    return out


def snapshot_dicts(snapshots) -> list[dict]:
    return [{"id": s.id, "name": s.name, "vm_state_size": s.vm_state_size, "date_sec": s.date_sec,
             "date_nsec": s.date_nsec, "vm_clock_nsec": s.vm_clock_nsec, "disk_size": s.disk_size}
            for s in snapshots]


def format_info(info: dict) -> str:
    out = []

    def one(d: dict, indent: str = "") -> None:
        out.append(f"{indent}image: {d['filename']}")
        out.append(f"{indent}file format: {d['format']}")
        out.append(f"{indent}virtual size: {human_size(d['virtual_size'])} ({d['virtual_size']} bytes)")
        out.append(f"{indent}disk size: {human_size(d['disk_size'])}")
        if d["format"] != "qcow2":
            return
        out.append(f"{indent}cluster_size: {d['cluster_size']}")
        if d.get("backing_file"):
            full = d.get("full_backing_filename")
            out.append(f"{indent}backing file: {d['backing_file']}"
                       + (f" (actual path: {full})" if full and full != d["backing_file"] else ""))
            out.append(f"{indent}backing file format: {d.get('backing_format') or '(not recorded)'}")
            if d.get("backing_error"):
                out.append(f"{indent}backing file error: {d['backing_error']}")
        if d["snapshots"]:
            out.extend(indent + line for line in snapshot_lines(d["snapshots"]))
        out.append(f"{indent}Format specific information:")
        out.append(f"{indent}    compat: {d['compat']}")
        out.append(f"{indent}    lazy refcounts: {str(d['lazy_refcounts']).lower()}")
        out.append(f"{indent}    refcount bits: {d['refcount_bits']}")
        out.append(f"{indent}    corrupt: {str(d['corrupt']).lower()}")
        out.append(f"{indent}    dirty: {str(d['dirty']).lower()}")

    one(info)
    for b in info.get("backing_chain", []):
        out.append("")
        one(b)
    return "\n".join(out)

