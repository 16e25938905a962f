"""The translating tier's settings: one frozen config from front end to hart.

Kept free of numba and LLVM imports so that front ends (the CLI, the
daemon's models) can validate `--jit` without loading the CPU core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MODES = ("on", "off", "check")
DEFAULT_THRESHOLD = 64
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
    """
    mode: str = "on"
    threshold: int = DEFAULT_THRESHOLD
    cache_size: int = DEFAULT_CACHE_SIZE

    def __post_init__(self):
        if self.mode not in MODES:
            raise JitError(f"--jit must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.threshold < 1:
            raise JitError(f"the translation threshold must be at least 1, not {self.threshold}")
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
                 cache_size: int | None = None) -> "JitConfig":
        """Explicit values, else $VMKIT_JIT / $VMKIT_JIT_THRESHOLD (how the test
        suite runs everything under every mode), else the defaults."""
        mode = mode or os.environ.get("VMKIT_JIT") or "on"
        if threshold is None:
            text = os.environ.get("VMKIT_JIT_THRESHOLD")
            try:
                threshold = int(text) if text else DEFAULT_THRESHOLD
            except ValueError:
                raise JitError(f"VMKIT_JIT_THRESHOLD={text!r}: not a number") from None
        return cls(mode, threshold, cache_size or DEFAULT_CACHE_SIZE)
