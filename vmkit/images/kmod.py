"""Linux kernel modules: find them, read their dependencies, write modules.dep.

Debian's kernel package ships the modules (``.ko.xz``) and modules.builtin
but not modules.dep, which ``depmod`` makes at install time. We make our own
from each module's ``.modinfo`` ELF section (NUL-separated ``key=value``
strings; ``depends=`` names the modules it needs, see
include/linux/module.h and scripts/mod/modpost.c in Linux). A module's name is
its file name without ``.ko*`` and with ``-`` read as ``_``, as for modprobe.
"""

from __future__ import annotations

import gzip
import io
import lzma
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

from .errors import ImageError

SUFFIXES = (".ko.xz", ".ko.gz", ".ko.zst", ".ko")


@dataclass
class Module:
    name: str
    path: str  # relative to the modules directory, as found (maybe .ko.xz)
    depends: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    data: bytes = b""  # the uncompressed .ko

    @property
    def ko_path(self) -> str:
        """Where the uncompressed module goes, relative to /lib/modules/<release>/."""
        return self.path[: self.path.rindex(".ko")] + ".ko"


def module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)].replace("-", "_")
    raise ValueError(f"not a kernel module: {path}")


def decompress_module(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".zst"):
        try:
            import zstandard
        except ImportError as e:
            raise ImageError(f"{path.name} is zstd-compressed: pip install zstandard") from e
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw


def modinfo(ko: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` section of an uncompressed module as ``{key: [values]}``."""
    section = ELFFile(io.BytesIO(ko)).get_section_by_name(".modinfo")
    info: dict[str, list[str]] = {}
    if section is None:
        return info
    for entry in section.data().split(b"\0"):
        key, sep, value = entry.decode("utf-8", "replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


class ModuleTree:
    """The modules of one kernel release, e.g. ``.../lib/modules/6.12.x-riscv64``."""

    def __init__(self, root: Path):
        self.root = root
        self.files = {module_name(str(p.relative_to(root))): str(p.relative_to(root))
                      for p in sorted(root.rglob("*.ko*")) if p.name.endswith(SUFFIXES)}
        builtin = root / "modules.builtin"
        self.builtin = ({module_name(line) for line in builtin.read_text().split()}
                        if builtin.exists() else set())

    def load(self, name: str) -> Module:
        path = self.files[name]
        data = decompress_module(self.root / path)
        info = modinfo(data)
        depends = [d for d in ",".join(info.get("depends", [])).split(",") if d]
        return Module(name, path, depends, info.get("alias", []), data)

    def closure(self, wanted: list[str]) -> tuple[list[Module], list[str], list[str]]:
        """Resolve ``wanted`` module names.

        Returns the modules to ship in load order (each after its
        dependencies), the wanted names that are built into the kernel, and
        those that exist neither way.
        """
        order: list[Module] = []
        seen: dict[str, Module | None] = {}
        builtin, missing = [], []

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in seen:
                return
            if name in self.builtin or name not in self.files:
                seen[name] = None
                return
            seen[name] = module = self.load(name)
            for dep in module.depends:
                if dep in chain:
                    raise ImageError(f"module dependency loop: {' -> '.join(chain + (dep,))}")
                visit(dep, chain + (dep,))
            order.append(module)

        for name in (w.replace("-", "_") for w in wanted):
            if name in self.builtin:
                builtin.append(name)
            elif name not in self.files:
                missing.append(name)
            else:
                visit(name, (name,))
        return order, builtin, missing


def modules_dep(modules: list[Module]) -> str:
    """modules.dep text (modules.dep(5)) for modules given in load order.

    Each line lists a module's dependencies transitively, dependents before
    what they depend on; modprobe loads them from the end of the line.
    """
    by_name = {m.name: m for m in modules}
    lines = []
    for m in modules:
        deps = " ".join(d.ko_path for d in reversed(_dependencies(m, by_name, [])))
        lines.append(f"{m.ko_path}:{' ' + deps if deps else ''}\n")
    return "".join(lines)


def _dependencies(module: Module, by_name: dict[str, Module], found: list[Module]) -> list[Module]:
    """``module``'s dependencies, transitively, each after its own dependencies."""
    for name in module.depends:
        dep = by_name.get(name)
        if dep is not None and dep not in found:
            _dependencies(dep, by_name, found)
            found.append(dep)
    return found


def modules_alias(modules: list[Module]) -> str:
    """modules.alias text: ``alias <pattern> <module>`` lines, for modprobe by device id."""
    return "".join(f"alias {a} {m.name}\n" for m in modules for a in m.aliases)
