"""The default guest image: Debian trixie's riscv64 kernel, OpenSBI and busybox.

``pull_default`` resolves ``linux-image-riscv64`` (a metapackage) to its
concrete ``linux-image-<release>`` package, fetches it, ``opensbi`` and
``busybox-static`` into the package cache, and writes the image:

    Image            the kernel as a raw RISC-V Image (load at 0x80200000)
    fw_dynamic.bin   OpenSBI, generic platform, FW_DYNAMIC (QEMU's -bios)
    initrd.img       a cpio initramfs: busybox, virtio modules, /init
    rootfs.qcow2     the root disk (ext4, label vmkit-root): the same busybox and
                     modules, booted with root=/dev/vda; VMs use overlays of it
    kernel.config    the kernel's build configuration, for reference
    manifest.json    packages, versions, SHA256s, kernel release, command line

Equivalent QEMU command line (the default VM of ``vmkit run``, whose disk is
an overlay of rootfs.qcow2, see vmdisk.py)::

    qemu-system-riscv64 -M virt -m 512M -nographic -bios fw_dynamic.bin \\
        -kernel Image -initrd initrd.img \\
        -append "console=ttyS0 cryptomgr.notests root=/dev/vda rw" \\
        -drive file=disk.qcow2,format=qcow2,if=none,id=d0 -device virtio-blk-device,drive=d0

Without root= the initramfs keeps the machine: a shell whose files live in RAM.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path, PurePosixPath

from ..storage.convert import convert
from ..storage.errors import ImageFormatError
from . import archive, store
from .archive import Package, fetch_packages, find_package
from .deb import extract_deb
from .download import download, is_verified, sha256_file
from .errors import ImageError
from .ext4 import MKFS, find_tool, make_ext4
from .initramfs import Initramfs
from .kernel import kernel_image
from .kotrim import trim_module
from .kmod import Module, ModuleTree, modules_alias, modules_dep
from .mirror import find_mirror

log = logging.getLogger(__name__)

NAME = "default"
KERNEL_PACKAGE = "linux-image-riscv64"
FIRMWARE_PACKAGE = "opensbi"
FIRMWARE_PATH = "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"
BUSYBOX_PACKAGE = "busybox-static"
BUSYBOX_PATH = "usr/bin/busybox"
# earlycon is left out: OpenSBI's banner already shows the machine is alive, and
# the 8250 console starts early enough. cryptomgr.notests skips the crypto
# self-tests, seconds of guest CPU time under emulation.
CMDLINE = "console=ttyS0 cryptomgr.notests"
ROOTFS = "rootfs.qcow2"
INITRD_COMPRESSION = None  # uncompressed: the guest need not inflate it (slow when emulated)

# Loaded by /init when they are modules; Debian builds virtio_console and the
# virtio core in, but virtio_mmio (the transport of QEMU virt's devices) and
# the block, net and rng drivers are modules. Dependencies come along.
MODULES = ("virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtio-rng",
           "virtio_balloon", "vmw_vsock_virtio_transport", "ext4", "crc32c_generic")
# Bump when what build_image produces changes: an image built by an older
# recipe is rebuilt on the next pull (cached .debs are reused).
RECIPE = 6

# Shown in the manifest and the report: are the drivers vmkit's virt machine
# needs built in (y), modules (m) or absent?
CONFIG_OF_INTEREST = (
    "CONFIG_VIRTIO_MMIO", "CONFIG_VIRTIO_BLK", "CONFIG_VIRTIO_NET", "CONFIG_VIRTIO_CONSOLE",
    "CONFIG_HW_RANDOM_VIRTIO", "CONFIG_VIRTIO_BALLOON", "CONFIG_VIRTIO_PCI",
    "CONFIG_SERIAL_8250", "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_SERIAL_OF_PLATFORM",
    "CONFIG_SERIAL_EARLYCON_RISCV_SBI", "CONFIG_HVC_RISCV_SBI", "CONFIG_RISCV_SBI_V01",
    "CONFIG_RTC_DRV_GOLDFISH", "CONFIG_SIFIVE_PLIC", "CONFIG_POWER_RESET_SYSCON",
    "CONFIG_POWER_RESET_SYSCON_POWEROFF", "CONFIG_DEVTMPFS", "CONFIG_BLK_DEV_INITRD",
    "CONFIG_RD_GZIP", "CONFIG_MODULE_DECOMPRESS", "CONFIG_MODULE_SIG_FORCE",
    "CONFIG_RISCV_ISA_C", "CONFIG_FPU", "CONFIG_RISCV_ISA_V", "CONFIG_PGTABLE_LEVELS",
    "CONFIG_NR_CPUS", "CONFIG_EFI_ZBOOT",
)

# Used when busybox cannot be asked for its applets (no qemu-riscv64 here).
FALLBACK_APPLETS = (
    "init", "sh", "ash", "cttyhack", "setsid", "mount", "umount", "ls", "cat", "echo", "uname",
    "poweroff", "reboot", "halt", "mkdir", "rmdir", "rm", "cp", "mv", "ln", "dmesg", "ip",
    "ifconfig", "route", "udhcpc", "wget", "nc", "ping", "insmod", "rmmod", "lsmod",
    "modprobe", "modinfo", "sync", "sleep", "ps", "kill", "free", "df", "du", "top",
    "grep", "sed", "awk", "head", "tail", "wc", "sort", "uniq", "cut", "tr", "vi", "less",
    "more", "find", "xargs", "date", "hostname", "id", "whoami", "env", "true", "false",
    "test", "[", "[[", "printf", "chmod", "chown", "touch", "stat", "dd", "hexdump", "xxd",
    "md5sum", "sha256sum", "gzip", "gunzip", "zcat", "tar", "cpio", "nproc", "uptime",
    "clear", "reset", "stty", "tty", "mknod", "mdev", "switch_root", "mke2fs", "fdisk",
    "blockdev", "losetup", "nslookup", "telnet", "time", "timeout", "watch", "which",
    "usleep",
)
# Of those, the ones busybox installs in /sbin; /init, /etc/inittab and the
# kernel look for /sbin/init, and inittab names /sbin/reboot.
FALLBACK_SBIN = ("init", "switch_root", "poweroff", "reboot", "halt", "modprobe", "insmod",
                 "rmmod", "lsmod", "mdev", "ifconfig", "route", "udhcpc", "mke2fs", "fdisk",
                 "blockdev", "losetup")

INIT_SCRIPT = r"""#!/bin/sh
# /init of the vmkit default image (written by vmkit/images/default.py):
# mount the kernel file systems and load the drivers. Given root=/dev/NAME
# on the kernel command line, mount that disk and make its /sbin/init PID 1;
# else (or if that fails) become busybox init right here. Either init runs
# /etc/init.d/rcS and the shell of /etc/inittab, and handles poweroff.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do
    modprobe -q "$module" || echo "init: cannot load $module"
done < /etc/modules
dmesg -n 4  # from here on only errors reach the console, not the shell's screen
echo "vmkit default image: Linux $(uname -r) $(uname -m)"
echo "Exit the shell or run poweroff to stop the machine."

mount_root() {  # DEVICE MODE: mount it on /newroot, hand it /dev, /proc and /sys
    # The driver may still be probing the disk: give it 5 s to appear.
    tries=0
    until [ -e "/sys/class/block/${1#/dev/}" ]; do
        if [ $tries -ge 50 ]; then
            echo "init: no disk $1 after 5 s (is a --disk attached?)"
            return 1
        fi
        usleep 100000
        tries=$((tries + 1))
    done
    if ! mount -t ext4 -o "$2" "$1" /newroot; then
        echo "init: cannot mount $1 as ext4 (see the kernel messages: dmesg | tail)"
        return 1
    fi
    if [ ! -x /newroot/sbin/init ]; then
        echo "init: $1 has no /sbin/init"
        umount /newroot
        return 1
    fi
    # What cannot be moved, rcS on the disk mounts afresh.
    for fs in /dev /proc /sys; do
        mount -o move "$fs" "/newroot$fs" 2>/dev/null
    done
    return 0
}

root= mode=rw
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=/dev/*) root=${arg#root=} ;;
        ro|rw) mode=$arg ;;
    esac
done
if [ -n "$root" ]; then
    if mount_root "$root" "$mode"; then
        exec switch_root /newroot /sbin/init
    fi
    echo "init: staying in the initramfs; its files are lost at poweroff"
fi
exec init
"""

# Run once by busybox init (::sysinit: in /etc/inittab), in the initramfs and
# on the root disk alike. busybox has no mountpoint applet, hence mounted().
RCS_SCRIPT = r"""#!/bin/sh
# /etc/init.d/rcS of the vmkit default image (written by vmkit/images/default.py).
mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }
mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts devpts /dev/pts
mounted /tmp || mount -t tmpfs tmpfs /tmp
mounted /run || mount -t tmpfs tmpfs /run
hostname -F /etc/hostname
ip link set lo up
# The first NIC takes its address by DHCP: udhcpc stays in the background to
# renew the lease (-b: it goes there after 3 unanswered tries, so a network
# that does not answer delays the boot by about 3 s, not forever).
if [ -e /sys/class/net/eth0 ]; then
    udhcpc -i eth0 -b -t 3 -T 1 -s /usr/share/udhcpc/default.script >/dev/null 2>&1
fi
"""

# udhcpc(8) runs this with deconfig, bound, renew, leasefail or nak and the
# lease in the environment ($ip, $subnet, $router, $dns, ...).
UDHCPC_SCRIPT_TEXT = r"""#!/bin/sh
# udhcpc action script of the vmkit default image (written by vmkit/images/default.py).
[ -n "$interface" ] || exit 1
case "$1" in
    deconfig)
        ifconfig "$interface" 0.0.0.0 up
        ;;
    bound|renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" ${broadcast:+broadcast "$broadcast"} up
        if [ -n "$router" ]; then
            while route del default dev "$interface" 2>/dev/null; do :; done
            set -- $router
            route add default gw "$1" dev "$interface"
        fi
        if [ -n "$dns" ]; then
            for server in $dns; do echo "nameserver $server"; done > /etc/resolv.conf
        fi
        ;;
esac
exit 0
"""

HOSTS = """127.0.0.1 localhost
::1 localhost
"""

# A shell script as PID 1 cannot serve: its background jobs ignore SIGINT
# (so Ctrl-C would not work in the shell), and while it waits for a
# foreground job it cannot act on poweroff's signal. busybox init can.
# cttyhack reopens the console as its real tty (e.g. /dev/ttyS0) and setsid
# makes the shell a session leader, so the shell gets job control. init
# runs an entry as `sh -c "exec ENTRY"`, hence the inner sh -c: without it
# the exec would replace the shell and poweroff would never run. At
# shutdown, before init kills everything and syncs, disks are unmounted or
# made read-only (umount of / does that), so the root disk is clean for the
# next boot; the kernel's own file systems need neither.
INITTAB = """\
# busybox init(8) table of the vmkit default image.
::sysinit:/etc/init.d/rcS
::once:sh -c 'setsid cttyhack sh -l; poweroff'
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r -t norootfs,devtmpfs,proc,sysfs
"""

PROFILE = r"""export PS1='\h:\w\$ '
"""

HOSTNAME = "vmkit"
ROOT_LABEL = "vmkit-root"
ROOTFS_SIZE = 1 << 30  # virtual; the qcow2 file holds only what mkfs.ext4 wrote
# /init reads root= and mounts the disk itself; this table is for mount and umount.
FSTAB = f"""\
# <file system> <mount point> <type> <options> <dump> <pass>
LABEL={ROOT_LABEL} / ext4 rw,relatime 0 1
proc /proc proc defaults 0 0
sysfs /sys sysfs defaults 0 0
devpts /dev/pts devpts defaults 0 0
tmpfs /tmp tmpfs defaults 0 0
tmpfs /run tmpfs defaults 0 0
"""


def pull_default(mirror: str | None = None, force: bool = False, progress: bool = True) -> Path:
    """Build the default image if it is missing, damaged or ``force``d; return its directory."""
    final = store.images_dir() / NAME
    if not force and store.verify_image(final) and _recipe(final) == RECIPE:
        log.info("image %r is up to date in %s", NAME, final)
        return final
    started = time.monotonic()
    find_tool(MKFS)  # before any download: without e2fsprogs there is no root disk
    mirror = find_mirror(mirror)
    cache = store.cache_dir()
    packages = fetch_packages(mirror, cache / "indexes" / archive.SUITE, progress=progress)
    meta = find_package(packages, KERNEL_PACKAGE)
    chosen = [resolve_kernel_package(packages, KERNEL_PACKAGE),
              find_package(packages, FIRMWARE_PACKAGE), find_package(packages, BUSYBOX_PACKAGE)]
    debs = [fetch_deb(mirror, p, cache / "debs", progress) for p in chosen]
    staging = store.staging_dir(NAME)
    try:
        with tempfile.TemporaryDirectory(prefix="unpack.", dir=cache) as tmp:
            manifest = build_image(staging, Path(tmp), chosen, debs)
        manifest["kernel_metapackage"] = {"name": meta.name, "version": meta.version}
        manifest["build_seconds"] = round(time.monotonic() - started, 1)
        manifest["recipe"] = RECIPE
        write_manifest(staging, manifest)
        return store.install_image(staging, NAME)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _recipe(image: Path) -> int | None:
    try:
        return json.loads((image / "manifest.json").read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):
        return None


def resolve_kernel_package(packages: dict[str, Package], name: str) -> Package:
    """Follow ``linux-image-*`` dependencies from a metapackage to the real kernel.

    ``linux-image-riscv64`` depends on ``linux-image-<release>``, which
    depends on no further ``linux-image-*`` package and carries the files.
    """
    package = find_package(packages, name)
    seen = {package.name}
    while True:
        nexts = [alt for group in package.dependencies() for alt in group
                 if alt.startswith("linux-image-") and alt in packages]
        if not nexts:
            return package
        package = packages[nexts[0]]
        if package.name in seen:
            raise ImageError(f"dependency loop among kernel packages at {package.name}")
        seen.add(package.name)


def fetch_deb(mirror: str, package: Package, debs: Path, progress: bool) -> Path:
    """The package's .deb in the cache, downloaded unless a verified copy is there."""
    dest = debs / PurePosixPath(package.filename).name
    if is_verified(dest, package.size, package.sha256):
        log.info("cached: %s", dest.name)
        return dest
    download(f"{mirror}/{package.filename}", dest, size=package.size, sha256=package.sha256,
             progress=progress, label=f"{package.name} {package.version}")
    return dest


def build_image(out: Path, tmp: Path, packages: list[Package], debs: list[Path]) -> dict:
    """Write the image files into ``out``; return the manifest (without file list)."""
    kernel_deb, firmware_deb, busybox_deb = debs
    log.info("unpacking %s", kernel_deb.name)
    kroot = tmp / "kernel"
    extract_deb(kernel_deb, kroot, include=("boot/", "usr/lib/modules/", "lib/modules/"))
    extract_deb(firmware_deb, tmp / "opensbi", include=("usr/lib/",))
    extract_deb(busybox_deb, tmp / "busybox", include=(BUSYBOX_PATH,))

    moddirs = sorted(p for d in ("usr/lib/modules", "lib/modules") if (kroot / d).is_dir()
                     for p in (kroot / d).iterdir() if p.is_dir())
    if len(moddirs) != 1:
        raise ImageError(f"{kernel_deb.name}: expected one modules directory, found "
                         f"{[p.name for p in moddirs]}; the package layout changed")
    release = moddirs[0].name
    kfile = next((kroot / "boot" / f"{n}-{release}" for n in ("vmlinux", "vmlinuz", "Image")
                  if (kroot / "boot" / f"{n}-{release}").exists()), None)
    if kfile is None:
        raise ImageError(f"{kernel_deb.name} has no /boot/vmlinu[xz]-{release}")
    kimage = kernel_image(kfile.read_bytes())
    (out / "Image").write_bytes(kimage.data)
    config_text = (kroot / "boot" / f"config-{release}").read_text()
    (out / "kernel.config").write_text(config_text)

    firmware = find_firmware(tmp / "opensbi")
    shutil.copyfile(tmp / "opensbi" / firmware, out / "fw_dynamic.bin")

    busybox = (tmp / "busybox" / BUSYBOX_PATH).read_bytes()
    tree = ModuleTree(moddirs[0])
    modules, builtin, missing = tree.closure(list(MODULES))
    if missing:
        log.warning("kernel %s has neither module nor built-in driver for %s", release, missing)
    userland = build_userland(busybox, busybox_applets(tmp / "busybox" / BUSYBOX_PATH),
                              release, tree, modules)
    initrd = build_initramfs(userland)
    (out / "initrd.img").write_bytes(initrd.to_bytes(INITRD_COMPRESSION))
    rootfs = build_rootfs(userland)
    write_root_disk(rootfs, out / ROOTFS, tmp)

    return {
        "name": NAME,
        "suite": archive.SUITE,
        "architecture": archive.ARCH,
        "packages": [{"name": p.name, "version": p.version, "filename": p.filename,
                      "sha256": p.sha256, "size": p.size} for p in packages],
        "kernel": {"release": release, "package_path": str(kfile.relative_to(kroot)),
                   "source_format": kimage.source_format, "efi_stub": kimage.efi_stub,
                   "text_offset": kimage.text_offset, "image_size": kimage.image_size,
                   "load_address": kimage.load_address,
                   "config": kernel_config(config_text, CONFIG_OF_INTEREST)},
        "firmware": {"package_path": firmware, "type": "opensbi-generic-fw_dynamic"},
        "initrd": {"compression": INITRD_COMPRESSION or "none",
                   "modules": [m.name for m in modules], "builtin": builtin,
                   "unavailable": missing, "entries": len(initrd.entries)},
        "rootfs": {"format": "qcow2", "filesystem": "ext4", "label": ROOT_LABEL,
                   "virtual_size": ROOTFS_SIZE, "entries": len(rootfs.entries)},
        "cmdline": CMDLINE,
    }


def find_firmware(root: Path) -> str:
    """The fw_dynamic.bin path inside the opensbi package (64-bit, generic platform)."""
    if (root / FIRMWARE_PATH).exists():
        return FIRMWARE_PATH
    found = sorted(str(p.relative_to(root)) for p in root.rglob("generic/fw_dynamic.bin")
                   if "riscv64" in str(p))
    if not found:
        raise ImageError(f"the {FIRMWARE_PACKAGE} package has no riscv64 generic/fw_dynamic.bin; "
                         "its layout changed: update FIRMWARE_PATH in vmkit/images/default.py")
    return found[0]


def busybox_applets(busybox: Path) -> list[str]:
    """Applet paths such as ``bin/sh``, ``sbin/modprobe``, from busybox itself.

    A riscv64 binary runs under ``qemu-riscv64`` (user mode) on other hosts;
    without it, FALLBACK_APPLETS go into /bin and /sbin.
    """
    runner = [] if platform.machine() == "riscv64" else [
        shutil.which("qemu-riscv64") or shutil.which("qemu-riscv64-static")]
    if None not in runner:
        try:
            run = subprocess.run(runner + [str(busybox), "--list-full"], capture_output=True,
                                 text=True, timeout=60, check=True)
            applets = [a for a in run.stdout.split() if a not in ("bin/busybox", "linuxrc")]
            if applets:
                return applets
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("cannot run busybox --list-full (%s); using a fixed applet list", e)
    return [f"{'sbin' if a in FALLBACK_SBIN else 'bin'}/{a}" for a in FALLBACK_APPLETS]


def build_userland(busybox: bytes, applets: list[str], release: str, tree: ModuleTree,
                   modules: list[Module]) -> Initramfs:
    """What the initramfs and the root disk both hold: busybox and its applet
    links, /etc (inittab, rcS, profile, users), the modules and their indexes."""
    rd = Initramfs()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev",
              "run", "mnt", "var", f"lib/modules/{release}"):
        rd.add_dir(d)
    rd.add_dir("root", 0o700)
    rd.add_dir("tmp", 0o1777)
    # The kernel opens /dev/console for init before anything mounts devtmpfs.
    rd.add_device("dev/console", "c", 5, 1, 0o600)
    rd.add_device("dev/null", "c", 1, 3, 0o666)
    rd.add_file("bin/busybox", busybox, 0o755)
    for applet in applets:
        rd.add_symlink(applet, "/bin/busybox")
    rd.add_file("etc/inittab", INITTAB.encode())
    rd.add_file("etc/init.d/rcS", RCS_SCRIPT.encode(), 0o755)
    rd.add_file("etc/hostname", f"{HOSTNAME}\n".encode())
    rd.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    rd.add_file("etc/group", b"root:x:0:\n")
    rd.add_file("etc/profile", PROFILE.encode())
    # Only the drivers that are modules here; the rest are built in.
    wanted = [w.replace("-", "_") for w in MODULES]
    rd.add_file("etc/modules", "".join(f"{m.name}\n" for m in modules if m.name in wanted).encode())
    rd.add_file("usr/share/udhcpc/default.script", UDHCPC_SCRIPT_TEXT.encode(), 0o755)
    rd.add_file("etc/hosts", HOSTS.encode())
    base = f"lib/modules/{release}"
    for m in modules:
        # Without the assembler's local labels the guest loads them ~4x faster (kotrim.py).
        rd.add_file(f"{base}/{m.ko_path}", trim_module(m.data))
    rd.add_file(f"{base}/modules.dep", modules_dep(modules).encode())
    rd.add_file(f"{base}/modules.alias", modules_alias(modules).encode())
    builtin = tree.root / "modules.builtin"
    if builtin.exists():
        rd.add_file(f"{base}/modules.builtin", builtin.read_bytes())
    return rd


def build_initramfs(userland: Initramfs) -> Initramfs:
    """The initramfs: the userland, /init, and /newroot where /init mounts the root disk."""
    rd = userland.copy()
    rd.add_dir("newroot")
    rd.add_file("init", INIT_SCRIPT.encode(), 0o755)
    return rd


def build_rootfs(userland: Initramfs) -> Initramfs:
    """The root disk's tree: the userland and an /etc/fstab. Its /sbin/init is busybox."""
    fs = userland.copy()
    fs.add_file("etc/fstab", FSTAB.encode())
    return fs


def write_root_disk(rootfs: Initramfs, dest: Path, scratch: Path) -> None:
    """Make ``rootfs`` an ext4 file system (mkfs.ext4 -d) and store it as qcow2 at ``dest``.

    The raw file system is sparse and ROOTFS_SIZE long; the copy keeps only
    clusters with data, so the qcow2 file is about as big as the files in it.
    """
    raw = scratch / "rootfs.raw"
    log.info("making the root file system (%d entries)", len(rootfs.entries))
    make_ext4(list(rootfs.entries.values()), raw, ROOTFS_SIZE, ROOT_LABEL)
    try:
        convert(str(raw), "raw", str(dest), "qcow2")
    except ImageFormatError as e:
        raise ImageError(f"cannot write the root disk {dest.name}: {e}") from e
    finally:
        raw.unlink()


def kernel_config(text: str, names: tuple[str, ...]) -> dict[str, str]:
    """``{"CONFIG_X": "y" | "m" | value | "n"}`` for the given options (n = not set)."""
    values = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_"):
            key, _, value = line.partition("=")
            values[key] = value.strip('"')
    return {n: values.get(n, "n") for n in names}


def write_manifest(image: Path, manifest: dict) -> None:
    files = {}
    for p in sorted(image.iterdir()):
        if p.is_file() and p.name != store.MANIFEST:
            files[p.name] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    manifest["files"] = files
    (image / store.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
