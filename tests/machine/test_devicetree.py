"""vmkit/machine/devicetree.py: the board's device tree decodes cleanly with dtc
and has every node QEMU 7.2's virt has, with the same properties and phandle
relations, apart from a short list of documented differences."""

import fnmatch
import shutil
import subprocess

import pytest

from vmkit.devices.plic import Plic
from vmkit.devices.rtc import GoldfishRtc
from vmkit.devices.test_finisher import TestFinisher
from vmkit.devices.uart import Uart16550
from vmkit.devices.virtio.mmio import VirtioMmio
from vmkit.machine.devicetree import ISA_STRING, build_device_tree, parse_isa_string
from vmkit.machine.fdt import FdtNode, parse_dtb
from vmkit.machine.memmap import RAM_BASE, VIRTIO_MMIO_COUNT

RAM_SIZE = 256 << 20

# QEMU nodes (and everything below them) that vmkit leaves out; the reasons
# are the docstring of vmkit/machine/devicetree.py.
OMITTED_NODES = {
    "/pmu": "no programmable hpm counters / Sscofpmf",
    "/fw-cfg@10100000": "no fw_cfg device",
    "/flash@20000000": "no CFI pflash",
    "/platform-bus@4000000": "no dynamic sysbus devices",
    "/soc/pci@30000000": "no PCIe host bridge",
}
# (node pattern, property): present in both, value differs on purpose.
DIFFERENT_PROPS = {
    ("/cpus/cpu@*", "riscv,isa"): "describes vmkit's harts (no H, Zb*; adds zicntr)",
    ("/soc/plic@c000000", "riscv,ndev"): "95 usable sources as QEMU 8.0+; QEMU 7.2 says 96",
    ("/chosen", "rng-seed"): "random on every QEMU run",
}
# (node pattern, property): ours only, as newer QEMU writes them.
EXTRA_PROPS = {
    ("/cpus/cpu@*", "riscv,isa-base"): "newer ISA binding (riscv/extensions.yaml)",
    ("/cpus/cpu@*", "riscv,isa-extensions"): "newer ISA binding (riscv/extensions.yaml)",
    ("/cpus/cpu@*/interrupt-controller", "#address-cells"): "dtc interrupt_provider check",
}
# Properties whose cells are phandles (compared by the path they point at).
PHANDLE_PROPS = {"interrupt-parent", "regmap", "cpu"}

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-riscv64") is None,
                                reason="qemu-system-riscv64 not installed: no reference tree")
needs_dtc = pytest.mark.skipif(shutil.which("dtc") is None,
                               reason="dtc (device-tree-compiler) not installed")


def our_dtb(num_harts: int = 1, **kwargs) -> bytes:
    kwargs.setdefault("rng_seed", bytes(32))
    return build_device_tree(
        RAM_BASE, RAM_SIZE,
        uart=Uart16550(lambda data: None, lambda level: None),
        plic=Plic(lambda ctx, level: None, num_harts=num_harts),
        rtc=GoldfishRtc(lambda level: None),
        test=TestFinisher(lambda kind, code: None),
        virtio=[VirtioMmio(None) for _ in range(VIRTIO_MMIO_COUNT)],
        num_harts=num_harts, **kwargs)


def qemu_dtb(tmp_path, num_harts: int) -> bytes:
    out = tmp_path / f"qemu-smp{num_harts}.dtb"
    subprocess.run(
        ["qemu-system-riscv64", "-M", f"virt,dumpdtb={out}", "-m", f"{RAM_SIZE >> 20}M",
         "-smp", str(num_harts), "-nographic", "-bios", "none"],
        capture_output=True, check=True, timeout=60)
    return out.read_bytes()


def flatten(root: FdtNode) -> dict[str, dict[str, object]]:
    """{path: {property: value}}, phandles replaced by the paths they name."""
    targets = {n.get_u32("phandle"): n for n in root.walk() if "phandle" in n.props}
    tree = {}
    for node in root.walk():
        props: dict[str, object] = {}
        for name, raw in node.props.items():
            if name == "phandle":
                continue
            if name in PHANDLE_PROPS:
                props[name] = targets[node.get_u32(name)].path
            elif name == "interrupts-extended":
                cells, value = node.get_u32s(name), []
                while cells:
                    target = targets[cells.pop(0)]
                    n = target.get_u32("#interrupt-cells")
                    value.append((target.path, *cells[:n]))
                    del cells[:n]
                props[name] = value
            else:
                props[name] = raw
        tree[node.path] = props
    return tree


def allowed(table: dict, path: str, prop: str) -> bool:
    return any(fnmatch.fnmatchcase(path, p) and prop == name for p, name in table)


def omitted(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OMITTED_NODES)


@needs_dtc
def test_dtc_decodes_without_warnings(tmp_path):
    path = tmp_path / "vmkit.dtb"
    path.write_bytes(our_dtb(bootargs="console=ttyS0", initrd=(0x8800_0000, 0x8810_0000)))
    result = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(path)],
                            capture_output=True, text=True, check=True)
    assert result.stderr == ""
    assert 'stdout-path = "/soc/serial@10000000";' in result.stdout


@needs_qemu
@pytest.mark.parametrize("num_harts", [1, 2])
def test_matches_qemu_virt(tmp_path, num_harts):
    qemu = flatten(parse_dtb(qemu_dtb(tmp_path, num_harts)))
    ours = flatten(parse_dtb(our_dtb(num_harts)))
    for node in OMITTED_NODES:  # a stale allow-list entry is a failure too
        assert node in qemu, f"allow-listed {node} is not in QEMU's tree any more"
    problems = []
    for path, qprops in qemu.items():
        if omitted(path):
            continue
        if path not in ours:
            problems.append(f"missing node {path}")
            continue
        for name, value in qprops.items():
            if name not in ours[path]:
                problems.append(f"{path}: missing property {name}")
            elif ours[path][name] != value and not allowed(DIFFERENT_PROPS, path, name):
                problems.append(f"{path}: {name} = {ours[path][name]!r}, QEMU has {value!r}")
    for path, props in ours.items():
        if path not in qemu:
            problems.append(f"extra node {path}")
            continue
        problems += [f"{path}: extra property {name}" for name in props
                     if name not in qemu[path] and not allowed(EXTRA_PROPS, path, name)]
    assert not problems, "\n".join(problems)


@needs_qemu
def test_virtio_slots_in_qemu_order(tmp_path):
    """Linux probes platform devices in tree order; QEMU lists the highest
    slot first, which decides which disk becomes vda."""
    def virtio_order(root):
        return [c.name for c in root.find("/soc").children if c.name.startswith("virtio_mmio@")]
    assert virtio_order(parse_dtb(our_dtb())) == virtio_order(parse_dtb(qemu_dtb(tmp_path, 1)))


def test_chosen():
    root = parse_dtb(our_dtb(bootargs="console=ttyS0 quiet", initrd=(0x1_8800_0000, 0x1_8810_0000),
                             rng_seed=b"\xaa" * 32))
    chosen = root.find("/chosen")
    assert chosen.get_str("bootargs") == "console=ttyS0 quiet"
    assert chosen.props["linux,initrd-start"] == (0x1_8800_0000).to_bytes(8, "big")
    assert chosen.props["linux,initrd-end"] == (0x1_8810_0000).to_bytes(8, "big")
    assert chosen.props["rng-seed"] == b"\xaa" * 32
    assert root.find(chosen.get_str("stdout-path")).get_str("compatible") == "ns16550a"


def test_chosen_minimal():
    chosen = parse_dtb(our_dtb(rng_seed=b"")).find("/chosen")
    assert set(chosen.props) == {"stdout-path"}


def test_cpu_and_memory():
    root = parse_dtb(our_dtb(2))
    assert root.find("/memory@80000000").get_u32s("reg") == [0, RAM_BASE, 0, RAM_SIZE]
    assert root.find("/cpus").get_u32("timebase-frequency") == 10_000_000
    cpu = root.find("/cpus/cpu@1")
    assert cpu.get_str("riscv,isa") == ISA_STRING
    assert cpu.get_str("riscv,isa-base") == "rv64i"
    assert cpu.get_strlist("riscv,isa-extensions") == [
        "i", "m", "a", "f", "d", "c", "zicntr", "zicsr", "zifencei", "zihintpause", "sstc"]
    assert cpu.get_str("mmu-type") == "riscv,sv48"
    intc = root.find("/cpus/cpu@1/interrupt-controller")
    plic = root.find("/soc/plic@c000000")
    # hart 1's contexts are 2 (M, irq 11) and 3 (S, irq 9)
    assert plic.get_u32s("interrupts-extended")[4:] == [intc.get_u32("phandle"), 11,
                                                        intc.get_u32("phandle"), 9]


def test_parse_isa_string():
    assert parse_isa_string("rv64gc_sstc") == (
        "rv64i", ["i", "m", "a", "f", "d", "zicsr", "zifencei", "c", "sstc"])
    assert parse_isa_string("rv32imac") == ("rv32i", ["i", "m", "a", "c"])
    for bad in ("rv64", "x86", "rv64mafd", "rv64i_", "RV64I"):
        with pytest.raises(ValueError):
            parse_isa_string(bad)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        build_device_tree(RAM_BASE, RAM_SIZE, uart=None, plic=None, rtc=None, test=None,
                          virtio=[VirtioMmio(None)] * (VIRTIO_MMIO_COUNT + 1))
    with pytest.raises(ValueError):
        our_dtb(initrd=(0x9000_0000, 0x8000_0000))
