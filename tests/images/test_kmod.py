"""vmkit/images/kmod.py: module dependencies from .modinfo, modules.dep output."""

import lzma
import struct

import pytest

from vmkit.images.errors import ImageError
from vmkit.images.kmod import ModuleTree, modinfo, module_name, modules_alias, modules_dep


def fake_ko(**info: str | list[str]) -> bytes:
    """A minimal ELF64 relocatable file whose only section is .modinfo."""
    entries = []
    for key, values in info.items():
        for value in values if isinstance(values, list) else [values]:
            entries.append(f"{key}={value}".encode() + b"\0")
    modinfo_data = b"".join(entries)
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    data_off = 64
    str_off = data_off + len(modinfo_data)
    sh_off = (str_off + len(shstrtab) + 7) & ~7
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 1, 243, 1, 0, 0, sh_off, 0, 64, 0, 0, 64, 3, 2)

    def section(name, kind, offset, size):
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)

    body = header + modinfo_data + shstrtab
    body += bytes(sh_off - len(body))
    return body + section(0, 0, 0, 0) + section(1, 1, data_off, len(modinfo_data)) + \
        section(10, 3, str_off, len(shstrtab))


def make_tree(tmp_path):
    root = tmp_path / "6.1.0-test"
    mods = {
        "kernel/drivers/virtio/virtio_mmio.ko.xz": fake_ko(name="virtio_mmio", depends="",
                                                           alias=["of:N*T*Cvirtio,mmio"]),
        "kernel/drivers/net/virtio_net.ko.xz": fake_ko(name="virtio_net", depends="net_failover",
                                                       alias="virtio:d00000001v*"),
        "kernel/drivers/net/net_failover.ko.xz": fake_ko(name="net_failover", depends="failover"),
        "kernel/net/core/failover.ko": fake_ko(name="failover"),  # uncompressed works too
        "kernel/drivers/char/hw_random/virtio-rng.ko.xz": fake_ko(name="virtio_rng",
                                                                  depends="virtio_mmio,failover"),
        "kernel/loop/a.ko.xz": fake_ko(name="a", depends="b"),
        "kernel/loop/b.ko.xz": fake_ko(name="b", depends="a"),
    }
    for path, data in mods.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(lzma.compress(data) if path.endswith(".xz") else data)
    (root / "modules.builtin").write_text("kernel/drivers/char/virtio_console.ko\n")
    return ModuleTree(root)


def test_module_name():
    assert module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz") == "virtio_rng"
    assert module_name("x/9pnet_virtio.ko") == "9pnet_virtio"
    with pytest.raises(ValueError):
        module_name("modules.dep")


def test_modinfo():
    assert modinfo(fake_ko(name="x", depends="a,b", alias=["p", "q"])) == {
        "name": ["x"], "depends": ["a,b"], "alias": ["p", "q"]}


def test_closure_orders_dependencies_first(tmp_path):
    tree = make_tree(tmp_path)
    order, builtin, missing = tree.closure(
        ["virtio_mmio", "virtio_net", "virtio_console", "virtio-rng", "nonexistent"])
    names = [m.name for m in order]
    assert names == ["virtio_mmio", "failover", "net_failover", "virtio_net", "virtio_rng"]
    assert builtin == ["virtio_console"] and missing == ["nonexistent"]
    assert order[1].data.startswith(b"\x7fELF")  # decompressed
    assert order[4].ko_path == "kernel/drivers/char/hw_random/virtio-rng.ko"


def test_modules_dep_and_alias(tmp_path):
    order, _, _ = make_tree(tmp_path).closure(["virtio_net", "virtio-rng"])
    dep = modules_dep(order).splitlines()
    assert "kernel/net/core/failover.ko:" in dep
    # dependents before what they need: modprobe loads from the end of the line
    assert ("kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko "
            "kernel/net/core/failover.ko") in dep
    assert ("kernel/drivers/char/hw_random/virtio-rng.ko: kernel/net/core/failover.ko "
            "kernel/drivers/virtio/virtio_mmio.ko") in dep
    assert "alias virtio:d00000001v* virtio_net\n" in modules_alias(order)


def test_dependency_loop(tmp_path):
    with pytest.raises(ImageError, match="loop"):
        make_tree(tmp_path).closure(["a"])
