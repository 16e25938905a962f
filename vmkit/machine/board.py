"""The `virt` board: RAM, one hart, the devices, image loading and the run loop.

Assembles a machine as a straight sequence of small attach steps
(Firecracker's builder), loads firmware/kernel/initrd/device tree where QEMU's
virt puts them (hw/riscv/boot.c), and drives the hart's exit protocol:
MMIO exits go to the bus, WFI sleeps (host clock) or skips to the next timer
deadline (deterministic clock), budget exits poll the console and deadlines.
"""

import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from vmkit.cpu import csrs as C
from vmkit.cpu import state as S
from vmkit.cpu.hart import Hart
from vmkit.cpu.jitconfig import JitConfig
from vmkit.devices.plic import Plic
from vmkit.devices.ratelimit import make_rate_limiter
from vmkit.devices.rtc import GoldfishRtc
from vmkit.devices.test_finisher import TestFinisher
from vmkit.devices.uart import Uart16550
from vmkit.devices.virtio.block import VirtioBlock
from vmkit.devices.virtio.console import VirtioConsole
from vmkit.devices.virtio.mmio import VirtioMmio
from vmkit.devices.virtio.net import VirtioNet
from vmkit.devices.virtio.rng import VirtioRng
from vmkit.machine import memmap as M
from vmkit.machine.bootrom import BootRom
from vmkit.machine.bus import Bus
from vmkit.machine.console import Console
from vmkit.machine.devicetree import ISA_STRING, build_device_tree
from vmkit.machine.loader import GuestMemory, LoadError, check_kernel_image, is_elf, load_elf, read_file
from vmkit.machine.netspec import NetSpec

log = logging.getLogger(__name__)

MiB = 1 << 20
KERNEL_LOAD_ADDR = M.RAM_BASE + 0x20_0000  # riscv64 Image text offset
# Deterministic clock: one 10 MHz tick per 100 instructions (a 1 GIPS guest).
DETERMINISTIC_TICK_INSTRUCTIONS = 100
HOST_BUDGET = 2_000_000          # instructions between host-clock syncs (~10 ms)
DETERMINISTIC_BUDGET = 4_000_000
MMIO_EXITS_PER_POLL = 256
# Longest the idle loop sleeps in one go (seconds): console input and network
# traffic wake it sooner.
IDLE_WAIT_MAX = 0.05
# With a network, idle waits go in slices this long (seconds), looking at the
# console between them: the network's selector cannot see console input.
NET_WAIT_SLICE = 0.01
# Deterministic clock: idle gaps longer than this (seconds of guest time) are
# also waited out in real time while console input may still arrive.
IDLE_WAIT_THRESHOLD = 0.01
# Deterministic RTC epoch: 2026-01-01T00:00:00Z, so runs repeat exactly.
DETERMINISTIC_EPOCH_NS = 1_767_225_600 * 10**9


class MachineError(Exception):
    """A machine could not be configured or started (bad option, bad image)."""


@dataclass
class MachineConfig:
    memory: int = 512 * MiB
    bios: str | None = None          # path, or "none" to run --kernel in M-mode
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    smp: int = 1
    clock: str = "host"              # "host" or "deterministic"
    dtb_out: str | None = None       # write the generated device tree here
    disks: list = field(default_factory=list)   # DiskSpec, in guest order (vda, vdb, ...)
    net: NetSpec | None = None       # the NIC (netspec.py); None or mode "none": no NIC
    limits: object | None = None     # I/O rate limits: anything with the disk_/net_*_per_sec
                                     # fields of hypervisor.models.Limits (0 = unlimited); None: none
    jit: JitConfig = field(default_factory=JitConfig)   # the translating CPU tier


@dataclass
class RunResult:
    reason: str                      # poweroff, fail, timeout, quit, budget, reset
    exit_code: int = 0
    instructions: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def parse_memory(text: str, minimum: int = 16 * MiB) -> int:
    """'512M', '1G', '1536' (MiB, as QEMU) -> bytes, at least `minimum`."""
    t = str(text).strip().upper()
    if t.endswith("B"):
        t = t[:-1]
    mult = MiB
    if t and t[-1] in "KMGT":
        mult = {"K": 1 << 10, "M": MiB, "G": 1 << 30, "T": 1 << 40}[t[-1]]
        t = t[:-1]
    try:
        value = float(t)
    except ValueError:
        raise MachineError(f"bad memory size {text!r}: use e.g. 512M or 2G") from None
    size = int(value * mult)
    if size < minimum or size > 16 << 30 or size % 4096:
        raise MachineError(f"size {text!r} out of range: {minimum // MiB}M..16G in whole pages")
    return size


class _UserNetBackend:
    """virtio-net's backend: transmitted frames go to the user-mode network.
    Called only from the VM thread (the device's transmit notify)."""

    usernet = None

    def send(self, frame: bytes) -> None:
        self.usernet.from_guest(frame)


class Machine:
    def __init__(self, config: MachineConfig, console: Console | None = None) -> None:
        if config.smp != 1:
            raise MachineError(f"--smp {config.smp}: more than one CPU is not supported yet")
        if config.clock not in ("host", "deterministic"):
            raise MachineError(f"--clock must be host or deterministic (got {config.clock!r})")
        self.config = config
        self.console = console or Console("none")
        self.deterministic = config.clock == "deterministic"
        self.ram = np.zeros(config.memory, dtype=np.uint8)
        self.mem = GuestMemory(self.ram, M.RAM_BASE)
        self.hart = Hart(self.ram, M.RAM_BASE, jit=config.jit)
        self.bus = Bus()
        self._halt: tuple[str, int] | None = None
        self._start_ns = time.monotonic_ns()
        self._attach_plic()
        self._attach_uart()
        self._attach_rtc()
        self._attach_finisher()
        self.images = []
        self.usernet = None
        self.net = None
        self.disks: list[VirtioBlock] = []
        self._boot_fds: dict[str, int] = {}
        self._ram_used = False          # RAM is still the fresh all-zero array
        self._make_rate_limiters()
        self._hvc_console = "console=hvc0" in config.append
        try:
            self._attach_virtio_slots()
            self.boot()
        except BaseException:
            self.close()     # the images and sockets opened so far
            raise

    # --- assembly ----------------------------------------------------------------------
    def _attach_plic(self) -> None:
        lines = {0: C.MIP_MEIP, 1: C.MIP_SEIP}
        self.plic = Plic(lambda ctx, level: self.hart.set_irq_line(lines[ctx], level))
        self.bus.attach(M.PLIC_BASE, M.PLIC_SIZE, self.plic, "plic")

    def _irq(self, source: int):
        return lambda level: self.plic.set_line(source, level)

    def _attach_uart(self) -> None:
        self.uart = Uart16550(self.console.write, self._irq(M.UART0_IRQ))
        self.bus.attach(M.UART0_BASE, M.UART0_SIZE, self.uart, "uart0")

    def _attach_rtc(self) -> None:
        self.rtc = GoldfishRtc(self._irq(M.RTC_IRQ), clock=self._wall_clock_ns)
        self.bus.attach(M.RTC_BASE, M.RTC_SIZE, self.rtc, "rtc")

    def _attach_finisher(self) -> None:
        self.finisher = TestFinisher(self._on_halt)
        self.bus.attach(M.TEST_BASE, M.TEST_SIZE, self.finisher, "test")

    def _attach_virtio_slots(self) -> None:
        """Disks, then the NIC, then entropy, then the console, from slot 7
        down, as QEMU fills virt's slots; the device tree lists slot 7 first,
        so the first disk is /dev/vda.  Empty slots answer like QEMU's
        (DeviceID 0)."""
        devices = [self._open_disk(spec, i) for i, spec in enumerate(self.config.disks)]
        net = self._make_nic()
        if net is not None:
            devices.append(net)
        devices.append(VirtioRng())
        self.virtio_console = VirtioConsole(self.console.write)
        devices.append(self.virtio_console)
        if len(devices) > M.VIRTIO_MMIO_COUNT:
            raise MachineError(f"too many virtio devices: the board has {M.VIRTIO_MMIO_COUNT} slots")
        self.virtio_slots = [None] * M.VIRTIO_MMIO_COUNT
        for i in range(M.VIRTIO_MMIO_COUNT):
            slot = M.VIRTIO_MMIO_COUNT - 1 - i
            device = devices[i] if i < len(devices) else None
            transport = VirtioMmio(device, self.ram, M.RAM_BASE, self._irq(M.virtio_mmio_irq(slot)),
                                   on_write=self._ram_written)
            self.virtio_slots[slot] = transport
            self.bus.attach(M.virtio_mmio_base(slot), M.VIRTIO_MMIO_SIZE, transport, f"virtio-mmio{slot}")

    def _make_rate_limiters(self) -> None:
        """Firecracker's I/O rate limiters from config.limits: one shared by
        every disk (the limit is the VM's) and one per network direction;
        None where the rates are 0, so the devices keep their fast path."""
        lim = self.config.limits

        def rates(bytes_field: str, ops_field: str) -> tuple[float, float]:
            return (getattr(lim, bytes_field, 0), getattr(lim, ops_field, 0)) if lim is not None else (0, 0)

        disk = rates("disk_bytes_per_sec", "disk_ops_per_sec")
        net = rates("net_bytes_per_sec", "net_packets_per_sec")
        self.disk_limiter = make_rate_limiter(*disk, clock=self._io_clock)
        self.net_tx_limiter = make_rate_limiter(*net, clock=self._io_clock)
        self.net_rx_limiter = make_rate_limiter(*net, clock=self._io_clock)

    def _io_clock(self) -> float:
        """The rate limiters' seconds: host time, or guest time with the
        deterministic clock, so throttled runs repeat exactly."""
        if self.deterministic:
            return self.hart.mtime / M.TIMEBASE_FREQUENCY
        return time.monotonic()

    def _open_disk(self, spec, index: int):
        from vmkit.storage.errors import ImageFormatError
        from vmkit.storage.image import open_image
        try:
            image = open_image(spec.path, spec.format, readonly=spec.readonly, cache=spec.cache)
        except FileNotFoundError:
            raise MachineError(f"--disk {spec.path}: no such file (create one with `vmkit disk create`)") from None
        except (ImageFormatError, OSError, ValueError) as e:
            raise MachineError(f"--disk {spec.path}: {e}") from None
        self.images.append(image)
        disk = VirtioBlock(image, serial=f"vmkit-disk{index}", readonly=spec.readonly,
                           rate_limiter=self.disk_limiter)
        self.disks.append(disk)
        return disk

    def _make_nic(self) -> VirtioNet | None:
        """The virtio-net device and its user-mode network, unless --net none."""
        spec = self.config.net
        if spec is None or spec.mode == "none":
            return None
        from vmkit.net.stack import UserNet
        # The device calls backend.send from notify(), i.e. while the VM thread
        # services an MMIO exit; UserNet answers through device.deliver, which
        # only queues the frame: everything stays on the VM thread.
        backend = _UserNetBackend()
        try:
            self.net = VirtioNet(backend, spec.mac, tx_rate_limiter=self.net_tx_limiter,
                                 rx_rate_limiter=self.net_rx_limiter)
        except ValueError as e:
            raise MachineError(f"--mac: {e}") from None
        from vmkit.net.forward import ForwardError
        try:
            self.usernet = UserNet(self.net.deliver, restrict=spec.restrict, forwards=spec.forwards,
                                   guest_mac=spec.mac)
        except ForwardError as e:
            raise MachineError(str(e.strerror)) from None
        backend.usernet = self.usernet
        return self.net

    def _poll_net(self, timeout: float = 0.0) -> bool:
        """Collect the host side's frames for the guest (waiting up to timeout
        seconds if there are none) and move them into the guest's receive
        buffers.  True when the guest now has an interrupt to take."""
        if self.usernet is None:
            return False
        self.usernet.poll(timeout)
        self.net.poll()
        return self.hart.interrupt_pending()

    def _poll_io(self) -> bool:
        """Take up rate-limited disk queues whose time has come (the NIC's
        are taken up by _poll_net).  True when the guest now has an
        interrupt to take."""
        if self.disk_limiter is None:
            return False
        for disk in self.disks:
            disk.poll()
        return self.hart.interrupt_pending()

    def _io_deadline(self) -> float | None:
        """When (_io_clock seconds) the first throttled device may go on, or None."""
        devices = (*self.disks, self.net) if self.net is not None else self.disks
        return min((d for dev in devices if (d := dev.next_deadline()) is not None), default=None)

    def _ram_written(self, offset: int, length: int) -> None:
        """A device wrote guest RAM (DMA): translations made from it are stale."""
        if self.hart.translator is not None:
            self.hart.translator.invalidate_range(offset, length)

    def close(self) -> None:
        """Flush and close the disk images and the network (a clean shutdown of the host side)."""
        self.hart.close()
        if self.usernet is not None:
            try:
                self.usernet.close()
            except Exception:  # noqa: BLE001 - report, keep closing the rest
                log.exception("closing the user-mode network failed")
        for image in self.images:
            try:
                image.close()
            except Exception:  # noqa: BLE001 - report, keep closing the others
                log.exception("closing a disk image failed")
        self.images = []
        for fd in self._boot_fds.values():
            os.close(fd)
        self._boot_fds = {}

    def _wall_clock_ns(self) -> int:
        if self.deterministic:
            return DETERMINISTIC_EPOCH_NS + self.hart.mtime * (10**9 // M.TIMEBASE_FREQUENCY)
        return time.time_ns()

    def _on_halt(self, kind: str, code: int) -> None:
        self._halt = (kind, code)

    # --- boot ---------------------------------------------------------------------------
    def boot(self) -> None:
        """Load the images and put the hart at the reset state QEMU's ROM produces."""
        cfg = self.config
        self._clear_ram()
        for _, _, _, dev in self.bus.devices():
            if hasattr(dev, "reset"):
                dev.reset()
        self._halt = None
        self.hart.reset(M.RAM_BASE)
        # Host clock: the core interpolates mtime between syncs at a rate that
        # tracks the measured speed (see _sync_host_clock), so guest code that
        # polls the time between exits still sees it move.
        self.hart.st[S.TICK_INSTRUCTIONS] = DETERMINISTIC_TICK_INSTRUCTIONS
        self._start_ns = time.monotonic_ns()

        ram_end = M.RAM_BASE + cfg.memory
        kernel_entry = None
        kernel_end = KERNEL_LOAD_ADDR
        if cfg.bios == "none":
            if not cfg.kernel:
                raise MachineError("--bios none needs --kernel (an ELF or raw image to run in M-mode)")
            start, kernel_end = self._load_kernel(cfg.kernel, M.RAM_BASE)
        else:
            if not cfg.bios:
                raise MachineError("no firmware: pass --bios PATH (OpenSBI fw_dynamic) or --bios none")
            data = self._read_boot_file(cfg.bios, "firmware")
            if is_elf(data):
                start, _ = load_elf(data, self.mem, f"firmware {cfg.bios}")
            else:
                self.mem.write(M.RAM_BASE, data, f"firmware {cfg.bios}")
                start = M.RAM_BASE
            if cfg.kernel:
                kernel_entry, kernel_end = self._load_kernel(cfg.kernel, KERNEL_LOAD_ADDR)
        initrd = None
        if cfg.initrd:
            data = self._read_boot_file(cfg.initrd, "initrd")
            # QEMU (hw/riscv/boot.c): far enough above the kernel that its
            # decompression cannot clobber it.
            base = (kernel_entry if kernel_entry is not None else KERNEL_LOAD_ADDR)
            addr = base + min(cfg.memory // 2, 128 * MiB)
            addr = max(addr, (kernel_end + 0xFFFF) & ~0xFFFF)
            self.mem.write(addr, data, f"initrd {cfg.initrd}")
            initrd = (addr, addr + len(data))
        dtb = self.device_tree(initrd)
        if cfg.dtb_out:
            with open(cfg.dtb_out, "wb") as fh:
                fh.write(dtb)
        # QEMU: the tree goes 2 MiB-aligned below min(RAM end, 3 GiB).
        top = min(ram_end, 3072 * MiB) if M.RAM_BASE < 3072 * MiB else ram_end
        fdt_addr = (top - len(dtb)) & ~(2 * MiB - 1)
        if initrd and fdt_addr < initrd[1]:
            raise LoadError("initrd and device tree do not fit in guest RAM together (use a larger -m)")
        self.mem.write(fdt_addr, dtb, "device tree")
        rom = BootRom(start, fdt_addr, kernel_entry if kernel_entry is not None else None)
        if not any(name == "boot-rom" for _, _, name, _ in self.bus.devices()):
            self.bus.attach(M.BOOT_ROM_BASE, M.BOOT_ROM_SIZE, rom, "boot-rom")
        else:
            self.bus.find(M.BOOT_ROM_BASE).device = rom
        self.rom = rom
        # What the reset vector's instructions leave behind (bootrom.py).
        self.hart.x[10] = 0                               # a0 = mhartid
        self.hart.x[11] = fdt_addr                        # a1 = device tree
        self.hart.x[12] = rom.fw_dynamic_info_addr        # a2 = &fw_dynamic_info
        self.hart.x[5] = start                            # t0 = start address
        self.hart.pc = start
        self.fdt_addr = fdt_addr

    def _clear_ram(self) -> None:
        """Zero guest RAM for a (re)boot without touching every page: a fresh
        array is already zero and not yet resident (an idle VM should not
        hold all its RAM), and on reboot the pages go back to the kernel
        (madvise MADV_DONTNEED: they read as zero and cost nothing until used)."""
        if not self._ram_used:
            self._ram_used = True
            return
        import ctypes
        page = 4096
        addr, size = self.ram.ctypes.data, self.ram.nbytes
        start, end = (addr + page - 1) & ~(page - 1), (addr + size) & ~(page - 1)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if end > start and libc.madvise(start, end - start, 4) == 0:     # 4: MADV_DONTNEED
            self.ram[:start - addr] = 0
            self.ram[end - addr:] = 0
        else:
            self.ram[:] = 0

    def _read_boot_file(self, path: str, what: str) -> bytes:
        """Firmware, kernel or initrd, read through a descriptor kept open from
        the first boot: a reboot reads them again after the hypervisor's
        worker has dropped the privileges that opened them (sandbox.py)."""
        fd = self._boot_fds.get(path)
        if fd is None:
            data = read_file(path, what)
            try:
                self._boot_fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass                    # read once; a reboot will try the path again
            return data
        size = os.fstat(fd).st_size
        chunks, offset = [], 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        data = b"".join(chunks)
        if not data:
            raise LoadError(f"{what} {path}: file is empty")
        return data

    def _load_kernel(self, path: str, raw_addr: int) -> tuple[int, int]:
        data = self._read_boot_file(path, "kernel")
        if is_elf(data):
            return load_elf(data, self.mem, f"kernel {path}")
        if raw_addr != M.RAM_BASE:
            check_kernel_image(data, path)
        self.mem.write(raw_addr, data, f"kernel {path}")
        return raw_addr, raw_addr + len(data)

    def device_tree(self, initrd) -> bytes:
        return build_device_tree(
            ram_base=M.RAM_BASE, ram_size=self.config.memory, bootargs=self.config.append,
            initrd=initrd, isa_string=ISA_STRING, rng_seed=os.urandom(32) if not self.deterministic else bytes(32),
            plic=self.plic, uart=self.uart, rtc=self.rtc, test=self.finisher,
            virtio=self.virtio_slots)

    # --- running --------------------------------------------------------------------------
    def _host_ticks(self) -> int:
        return (time.monotonic_ns() - self._start_ns) // (10**9 // M.TIMEBASE_FREQUENCY)

    def hold_clock(self, ns: int) -> None:
        """Leave `ns` of host time out of the guest's clock (host mode): the
        hypervisor paused the VM that long.  Like QEMU's virtual clock, which
        stops while a VM is stopped: a guest whose clock jumped would find all
        its timers late at once and report soft lockups and RCU stalls.  The
        guest's wall clock then lags the host's by the pause (QEMU's too)."""
        self._start_ns += ns

    def _sync_host_clock(self) -> None:
        """Bring mtime up to the host clock; it never goes backwards. If the
        core's interpolation got ahead of the host (the guest sped up within
        a slice), the next slice runs the guest clock at half speed so the
        host catches up: a guest clock ahead of real time would never come back."""
        now = self._host_ticks()
        if now > self.hart.mtime:
            self.hart.mtime = now
        elif self.hart.mtime > now:
            st = self.hart.st
            st[S.TICK_INSTRUCTIONS] = min(20_000, 2 * int(st[S.TICK_INSTRUCTIONS]))

    def _tune_interpolation(self, ticks: int, instructions: int) -> None:
        """Match the core's instructions-per-tick to the speed just measured.

        Only slices that ran flat out (budget exits) are measured, so idle
        time in WFI does not make the guest clock race ahead.
        """
        if ticks > 0 and instructions > 0:
            # Rounded up, so that between syncs the guest clock runs a little
            # slow rather than fast: a sync can move it forward, never back.
            rate = max(1, min(10_000, -(-instructions // ticks)))
            old = int(self.hart.st[S.TICK_INSTRUCTIONS])
            self.hart.st[S.TICK_INSTRUCTIONS] = max(1, -(-(3 * old + rate) // 4))

    def _service_mmio(self) -> None:
        addr, size, is_store, value = self.hart.mmio_request
        if is_store:
            if self.bus.write(addr, size, value):
                self.hart.complete_mmio()
            else:
                self.hart.fault_mmio()
        else:
            v = self.bus.read(addr, size)
            if v is None:
                self.hart.fault_mmio()
            else:
                self.hart.complete_mmio(v)

    def _poll_input(self) -> bool:
        data = self.console.take_input()
        if data:
            # Keystrokes go to whichever console the kernel was told to use.
            if self._hvc_console:
                self.virtio_console.push_input(data)
            else:
                self.uart.push_input(data)
            return True
        return False

    def run(self, timeout: float | None = None, max_instructions: int | None = None) -> RunResult:
        """Run until poweroff/fail, a console quit, the timeout or the instruction limit."""
        hart = self.hart
        t0 = time.monotonic()
        deadline = t0 + timeout if timeout else None
        budget = DETERMINISTIC_BUDGET if self.deterministic else HOST_BUDGET
        total_base = hart.instret
        mmio_exits = 0
        while True:
            if not self.deterministic:
                self._sync_host_clock()
            step = budget
            if max_instructions is not None:
                left = max_instructions - (hart.instret - total_base)
                if left <= 0:
                    return self._result("budget", 0, total_base, t0)
                step = min(step, left)
            if self.deterministic:
                code = hart.run(step)
            else:
                t_slice, i_slice = self._host_ticks(), hart.instret
                code = hart.run(step)
                if code == S.EXIT_BUDGET:
                    self._tune_interpolation(self._host_ticks() - t_slice, hart.instret - i_slice)
            if code == S.EXIT_MMIO:
                self._service_mmio()
                if self._halt is not None:
                    kind, exit_code = self._halt
                    if kind == "reset":
                        self.boot()
                        continue
                    return self._result(kind, exit_code, total_base, t0)
                # A guest that polls a device (U-Boot reading the UART's LSR)
                # exits on every access and never spends a budget: look at
                # input and deadlines every so many exits all the same.
                mmio_exits += 1
                if mmio_exits % MMIO_EXITS_PER_POLL:
                    continue
            if code == S.EXIT_BREAK:
                return self._result("break", 0, total_base, t0)
            if code == S.EXIT_WFI:
                self._idle(deadline)
            else:
                self._poll_net()
                self._poll_io()
            self._poll_input()
            if self.console.quit_requested:
                return self._result("quit", 0, total_base, t0)
            if deadline is not None and time.monotonic() >= deadline:
                return self._result("timeout", 0, total_base, t0)

    def _idle(self, deadline) -> None:
        """The hart waits for an interrupt: skip or sleep to the next event."""
        hart = self.hart
        if hart.interrupt_pending() or self._poll_input() or self._poll_net() or self._poll_io():
            return
        self.rtc_poll()
        target = hart.next_timer_deadline()
        # A throttled device waits for its deadline, which the polls above
        # just left strictly in the future (ratelimit.py, SLACK).
        io = self._io_deadline()
        if self.deterministic:
            if io is not None:
                # Guest time: the device's deadline is one more timer.
                io_tick = math.ceil(io * M.TIMEBASE_FREQUENCY)
                target = io_tick if target is None else min(target, io_tick)
            if target is not None and target > hart.mtime:
                # Skip straight to the deadline.  While someone may still type
                # or the network may still answer, first wait up to that long
                # in real time, so an idle guest waiting for input does not
                # spin through its timers (nor time out a host that is about
                # to reply).
                wait = (target - hart.mtime) / M.TIMEBASE_FREQUENCY
                if (self.console.input_open or self.usernet is not None) and wait > IDLE_WAIT_THRESHOLD:
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - time.monotonic()))
                    if self._wait(min(wait, 0.5)):
                        return
                hart.mtime = target
                return
            if target is not None:
                return
            # Nothing will ever fire by itself: only console input or the
            # network can wake the guest.
            wait = IDLE_WAIT_MAX
        else:
            now = self._host_ticks()
            if target is not None and target <= now:
                hart.mtime = now
                return
            wait = IDLE_WAIT_MAX if target is None else (target - now) / M.TIMEBASE_FREQUENCY
            wait = min(wait, IDLE_WAIT_MAX)
            if io is not None:
                wait = min(wait, max(0.0, io - time.monotonic()))
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        self._wait(wait)

    def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; console input, a console quit or a frame
        that raised the guest's interrupt end it sooner (True)."""
        if self.usernet is None:
            self.console.wait(seconds)
            return self._poll_input()
        end = time.monotonic() + seconds
        while True:
            left = max(0.0, end - time.monotonic())
            if self._poll_net(min(left, NET_WAIT_SLICE)):
                return True
            if self._poll_input() or self.console.quit_requested:
                return True
            if left <= NET_WAIT_SLICE:
                return False

    def rtc_poll(self) -> None:
        poll = getattr(self.rtc, "poll", None)
        if poll is not None:
            poll(self._wall_clock_ns())

    def _result(self, reason: str, code: int, base: int, t0: float) -> RunResult:
        return RunResult(reason, code, self.hart.instret - base, time.monotonic() - t0)
