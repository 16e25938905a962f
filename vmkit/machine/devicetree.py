"""The device tree of the virt board, shaped like QEMU 7.2's (hw/riscv/virt.c).

Same node names, compatibles, reg, interrupts and phandle relations as QEMU,
so firmware and kernels cannot tell the boards apart by their device tree.
Bindings: Devicetree Specification v0.4 chapter 3 (/, /memory, /chosen,
/cpus); Linux Documentation/devicetree/bindings: riscv/cpus.yaml,
riscv/extensions.yaml, cpu/cpu-topology.txt (cpu-map), power/reset/
syscon-poweroff.yaml and syscon-reboot.yaml, interrupt-controller/
sifive,plic-1.0.0.yaml, timer/sifive,clint.yaml.

Each Python device writes its own node (`dt_node`); this module writes the
rest: /, /chosen, /memory, /cpus, /soc, the CLINT (which lives in the CPU
core) and the syscon /poweroff and /reboot nodes.

QEMU nodes vmkit leaves out, because the hardware behind them is absent:
- /pmu ("riscv,pmu"): maps SBI PMU events to hpm counters; vmkit has no
  programmable counters (no Sscofpmf), and without the node OpenSBI simply
  offers no PMU events.
- /fw-cfg@10100000: no fw_cfg device; kernel, initrd and command line are
  placed in RAM by the boot code and described in /chosen.
- /flash@20000000: no CFI pflash; firmware is loaded into RAM directly.
- /platform-bus@4000000: only holds dynamically plugged sysbus devices.
- /soc/pci@30000000: no PCIe host bridge; I/O devices use virtio-mmio.
Deliberate differences from QEMU 7.2:
- /cpus/cpu@N riscv,isa describes vmkit's harts, not QEMU's (which adds H
  and Zb*); riscv,isa-base and riscv,isa-extensions are added, as QEMU 8.2+
  does, for kernels that read the newer binding.
- /cpus/cpu@N/interrupt-controller gets #address-cells = <0>, as newer QEMU
  does: dtc's interrupt_provider check warns without it.
- /soc/plic riscv,ndev is 95 (usable sources 1..95), as in QEMU 8.0+;
  QEMU 7.2 wrote 96.
- /chosen linux,initrd-start/-end are 64-bit values (QEMU 8.0+), so an
  initrd above 4 GiB can be described; Linux accepts either width.
- The PLIC comes first under /soc (QEMU puts it near the end) so that its
  phandle exists when the other devices point at it; node order among /soc
  children does not matter except for virtio-mmio, which follows QEMU:
  highest slot first, so the first virtio device is probed first.
"""

import re
from collections.abc import Sequence
from typing import Protocol

from vmkit.cpu.csrs import IRQ_MSI, IRQ_MTI
from vmkit.devices.plic import Plic
from vmkit.devices.rtc import GoldfishRtc
from vmkit.devices.test_finisher import Command, TestFinisher
from vmkit.devices.uart import Uart16550
from vmkit.machine.fdt import FdtNode, to_dtb
from vmkit.machine.memmap import (
    CLINT_BASE,
    CLINT_SIZE,
    TIMEBASE_FREQUENCY,
    VIRTIO_MMIO_COUNT,
    virtio_mmio_base,
    virtio_mmio_irq,
)

# The harts vmkit implements (riscv/cpus.yaml, riscv/extensions.yaml).
ISA_STRING = "rv64imafdc_zicntr_zicsr_zifencei_zihintpause_sstc"
MMU_TYPE = "riscv,sv48"  # the widest mode; Linux probes down to sv39

# What QEMU's virt calls itself; some software matches on it.
BOARD_COMPATIBLE = "riscv-virtio"
BOARD_MODEL = "riscv-virtio,qemu"

# The ratified extensions the single letter "g" stands for (ISA vol. I, 28.6).
_G_EXTENSIONS = ("i", "m", "a", "f", "d", "zicsr", "zifencei")
_ISA_RE = re.compile(r"rv(32|64)([a-z]+)((?:_[a-z][a-z0-9]*)*)")


class VirtioSlot(Protocol):
    """Whatever sits in a virtio-mmio slot: a transport, or an empty slot."""

    def dt_node(self, parent: FdtNode, plic: FdtNode, *, base: int, irq: int) -> FdtNode: ...


def build_device_tree(
    ram_base: int,
    ram_size: int,
    *,
    uart: Uart16550,
    plic: Plic,
    rtc: GoldfishRtc,
    test: TestFinisher,
    virtio: Sequence[VirtioSlot] = (),
    bootargs: str | None = None,
    initrd: tuple[int, int] | None = None,
    isa_string: str = ISA_STRING,
    rng_seed: bytes = b"",
    num_harts: int = 1,
    boot_cpuid: int = 0,
) -> bytes:
    """The board's flattened device tree.

    `virtio[i]` sits in virtio-mmio slot i.  `initrd` is (start, end) in guest
    physical memory.  `rng_seed` (QEMU passes 32 random bytes; deterministic
    runs pass fixed ones) seeds the kernel's RNG; empty omits it.
    """
    if len(virtio) > VIRTIO_MMIO_COUNT:
        raise ValueError(f"{len(virtio)} virtio-mmio devices, the board has {VIRTIO_MMIO_COUNT} slots")
    if ram_size <= 0:
        raise ValueError(f"RAM size must be positive, got {ram_size}")
    if initrd is not None and not 0 <= initrd[0] <= initrd[1]:
        raise ValueError(f"initrd range {initrd[0]:#x}..{initrd[1]:#x} is inverted")

    root = FdtNode("")
    root.prop_u32("#address-cells", 2)
    root.prop_u32("#size-cells", 2)
    root.prop_str("compatible", BOARD_COMPATIBLE)
    root.prop_str("model", BOARD_MODEL)

    # Children of / in QEMU's order; /chosen and the syscon nodes are
    # completed once the nodes they point at exist.
    chosen = root.child("chosen")
    poweroff = root.child("poweroff")
    reboot = root.child("reboot")
    add_memory_node(root, ram_base, ram_size)
    cpu_intcs = add_cpus_node(root, num_harts, isa_string)

    soc = root.child("soc")
    soc.prop_u32("#address-cells", 2)
    soc.prop_u32("#size-cells", 2)
    soc.prop_str("compatible", "simple-bus")
    soc.prop_empty("ranges")  # 1:1 translation to the parent bus
    plic_node = plic.dt_node(soc, cpu_intcs)
    rtc.dt_node(soc, plic_node)
    uart_node = uart.dt_node(soc, plic_node)
    test_node = test.dt_node(soc)
    for slot in reversed(range(len(virtio))):
        virtio[slot].dt_node(soc, plic_node, base=virtio_mmio_base(slot), irq=virtio_mmio_irq(slot))
    add_clint_node(soc, cpu_intcs)

    fill_syscon_node(poweroff, "syscon-poweroff", test_node, Command.PASS)
    fill_syscon_node(reboot, "syscon-reboot", test_node, Command.RESET)
    fill_chosen_node(chosen, stdout_path=uart_node.path, bootargs=bootargs,
                     initrd=initrd, rng_seed=rng_seed)
    return to_dtb(root, boot_cpuid)


def add_memory_node(root: FdtNode, base: int, size: int) -> FdtNode:
    """/memory@base (Devicetree Spec 3.4)."""
    node = root.child(f"memory@{base:x}")
    node.prop_str("device_type", "memory")
    node.prop_reg((base, size))
    return node


def add_cpus_node(root: FdtNode, num_harts: int, isa_string: str) -> list[FdtNode]:
    """/cpus with one cpu@N per hart (Devicetree Spec 3.7, riscv/cpus.yaml)
    and its cpu-map; returns the harts' interrupt-controller nodes."""
    isa_base, extensions = parse_isa_string(isa_string)
    cpus = root.child("cpus")
    cpus.prop_u32("#address-cells", 1)
    cpus.prop_u32("#size-cells", 0)
    cpus.prop_u32("timebase-frequency", TIMEBASE_FREQUENCY)
    cpu_nodes, intcs = [], []
    for hart in range(num_harts):
        cpu = cpus.child(f"cpu@{hart:x}")
        cpu.phandle()
        cpu.prop_str("device_type", "cpu")
        cpu.prop_u32("reg", hart)
        cpu.prop_str("status", "okay")
        cpu.prop_str("compatible", "riscv")
        cpu.prop_str("riscv,isa", isa_string)
        cpu.prop_str("riscv,isa-base", isa_base)
        cpu.prop_strlist("riscv,isa-extensions", *extensions)
        cpu.prop_str("mmu-type", MMU_TYPE)
        intc = cpu.child("interrupt-controller")
        intc.prop_u32("#interrupt-cells", 1)
        intc.prop_u32("#address-cells", 0)
        intc.prop_empty("interrupt-controller")
        intc.prop_str("compatible", "riscv,cpu-intc")
        intc.phandle()
        cpu_nodes.append(cpu)
        intcs.append(intc)
    # cpu-topology.txt: one cluster holding every hart, as QEMU writes it.
    cluster = cpus.child("cpu-map").child("cluster0")
    for hart, cpu in enumerate(cpu_nodes):
        cluster.child(f"core{hart}").prop_u32("cpu", cpu.phandle())
    return intcs


def add_clint_node(soc: FdtNode, cpu_intcs: Sequence[FdtNode], *, base: int = CLINT_BASE) -> FdtNode:
    """The CLINT (timer/clint sifive,clint.yaml): per hart, the machine
    software interrupt (MSI) and machine timer interrupt (MTI)."""
    node = soc.child(f"clint@{base:x}")
    cells: list[int] = []
    for intc in cpu_intcs:
        cells += [intc.phandle(), IRQ_MSI, intc.phandle(), IRQ_MTI]
    node.prop_u32("interrupts-extended", *cells)
    node.prop_reg((base, CLINT_SIZE))
    node.prop_strlist("compatible", "sifive,clint0", "riscv,clint0")
    return node


def fill_syscon_node(node: FdtNode, compatible: str, regmap: FdtNode, value: int) -> None:
    """syscon-poweroff / syscon-reboot: write `value` at offset 0 of `regmap`."""
    node.prop_str("compatible", compatible)
    node.prop_u32("regmap", regmap.phandle())
    node.prop_u32("offset", 0)
    node.prop_u32("value", value)


def fill_chosen_node(chosen: FdtNode, *, stdout_path: str, bootargs: str | None,
                     initrd: tuple[int, int] | None, rng_seed: bytes) -> None:
    """/chosen (Devicetree Spec 3.6, Linux's chosen.txt)."""
    if bootargs:
        chosen.prop_str("bootargs", bootargs)
    if initrd is not None:
        chosen.prop_u64("linux,initrd-start", initrd[0])
        chosen.prop_u64("linux,initrd-end", initrd[1])
    chosen.prop_str("stdout-path", stdout_path)
    if rng_seed:
        chosen.prop_bytes("rng-seed", rng_seed)


def parse_isa_string(isa_string: str) -> tuple[str, list[str]]:
    """Split a riscv,isa string into riscv,isa-base and riscv,isa-extensions:
    "rv64imafdc_zicsr" -> ("rv64i", ["i", "m", "a", "f", "d", "c", "zicsr"])."""
    match = _ISA_RE.fullmatch(isa_string)
    if match is None or match.group(2)[0] not in "ig":
        raise ValueError(f"bad ISA string {isa_string!r}; expected e.g. {ISA_STRING!r}")
    xlen, letters, multi = match.groups()
    extensions: list[str] = []
    for letter in letters:
        extensions += _G_EXTENSIONS if letter == "g" else [letter]
    extensions += multi.split("_")[1:]
    return f"rv{xlen}i", list(dict.fromkeys(extensions))  # dedupe, keep order
