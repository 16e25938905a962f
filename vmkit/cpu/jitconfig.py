"""The translating tier's settings: one frozen config from front end to hart.

Kept free of numba and LLVM imports so that front ends (the CLI, the
daemon's models) can validate `--jit` without loading the CPU core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MODES = ("on", "off", "check")
DEFAULT_THRESHOLD = 50
DEFAULT_OPTIMIZE_AFTER = 4_000_000
DEFAULT_CACHE_SIZE = 64 << 20


class JitError(Exception):
    """A translation-tier setting is wrong, or `--jit check` found a difference."""


@dataclass(frozen=True)
class JitConfig:
    """How a VM's CPU runs guest code.

    mode: on (translate hot code), off (interpreter only) or check (translate,
    and run every translation beside the interpreter, stopping at the first
    difference).  Block starts reached `threshold` times are translated;
    threshold 1 translates every block at its first execution, synchronously.
    `cache_size`: bytes of translated code at most (flushed when full).
    A baseline translation that has run `optimize_after` guest instructions
    is compiled again by the optimizing tier (0: never).
    """
    mode: str = "on"
    threshold: int = DEFAULT_THRESHOLD
    cache_size: int = DEFAULT_CACHE_SIZE
    optimize_after: int = DEFAULT_OPTIMIZE_AFTER

    def __post_init__(self):
        if self.mode not in MODES:
            raise JitError(f"--jit must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.threshold < 1:
            raise JitError(f"the translation threshold must be at least 1, not {self.threshold}")
        if self.optimize_after < 0:
            raise JitError(f"optimize_after must be 0 (never) or more, not {self.optimize_after}")
        if self.cache_size < 1 << 20:
            raise JitError(f"the code cache needs at least 1 MiB, not {self.cache_size} bytes")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def sync(self) -> bool:
        """Translate before going on: at first execution, translation must come first."""
        return self.threshold == 1

    @classmethod
    def from_env(cls, mode: str | None = None, threshold: int | None = None,
                 cache_size: int | None = None, optimize_after: int | None = None) -> "JitConfig":
        """Explicit values, else $VMKIT_JIT, $VMKIT_JIT_THRESHOLD and
        $VMKIT_JIT_OPTIMIZE_AFTER (how the test suite runs every guest under
        every mode), else the defaults."""
        mode = mode or os.environ.get("VMKIT_JIT") or "on"
        if threshold is None:
            threshold = _env_int("VMKIT_JIT_THRESHOLD", DEFAULT_THRESHOLD)
        if optimize_after is None:
            optimize_after = _env_int("VMKIT_JIT_OPTIMIZE_AFTER", DEFAULT_OPTIMIZE_AFTER)
        return cls(mode, threshold, cache_size or DEFAULT_CACHE_SIZE, optimize_after)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise JitError(f"{name}={text!r}: not a number") from None
