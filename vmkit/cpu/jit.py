"""numba settings for the CPU core, kept in one place (as PySDM does).

`njit` is the decorator every core function uses.  numba's on-disk cache keys
each function on its own source file only, so a change in a module that a
function calls could leave a stale compiled core.  We therefore point numba's
cache at a directory named after a hash of *all* vmkit/cpu sources: any edit
to the core selects a fresh directory.  The directory lives in the package
when writable, otherwise in the user's cache directory.
"""

import hashlib
import os
import sys
from pathlib import Path

import numba

CPU_DIR = Path(__file__).resolve().parent


def _sources_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(CPU_DIR.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(numba.__version__.encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def _cache_dir() -> Path:
    key = _sources_hash()
    override = os.environ.get("VMKIT_JIT_CACHE")
    candidates = [Path(override)] if override else []
    candidates.append(CPU_DIR / "__jitcache__")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    candidates.append(Path(xdg) / "vmkit" / "jit")
    for base in candidates:
        if _writable(base / key):
            return base / key
    return candidates[-1] / key  # numba will warn and compile without caching


CACHE_DIR = _cache_dir()
numba.config.CACHE_DIR = str(CACHE_DIR)

JIT_DISABLED = bool(numba.config.DISABLE_JIT)


def njit(*args, **kwargs):
    """numba.njit with the core's settings: cached, no GIL, no refcounting.

    `_nrt=False`: the core never allocates, and with numba's runtime on, every
    call to a non-inlined function atomically increments and decrements the
    refcount of each array argument (measured: ~230 ns per CSR instruction,
    8x slower; see docs/cpu-core.md).
    """
    kwargs.setdefault("cache", True)
    kwargs.setdefault("nogil", True)
    kwargs.setdefault("_nrt", False)
    return numba.njit(*args, **kwargs)


def is_compiled() -> bool:
    """True when the compiled core is already in the cache (no compile needed)."""
    return (CACHE_DIR / "compiled.ok").exists()


def mark_compiled() -> None:
    try:
        (CACHE_DIR / "compiled.ok").write_text("ok\n")
    except OSError:
        pass
