"""Boot tests: Debian's riscv64 kernel through OpenSBI on the virt board.

These drive `vmkit run` the way a user does (a real process, its console on
pipes), with the deterministic clock, an instruction budget and a timeout.
A failure prints the whole guest console (tests/guest.py).
"""

import pytest

from tests.guest import Guest
from vmkit.images.initramfs import busybox_initramfs

pytestmark = pytest.mark.slow

PROMPT = "vmkit:/# "
# Instruction budgets: a boot to the shell takes about 1e9 instructions.
BOOT_BUDGET = "8000000000"


@pytest.fixture(scope="session")
def default_image():
    from vmkit.images import default_image_paths, pull
    pull(progress=False)
    return default_image_paths()


def test_default_image_boots_to_a_shell_and_powers_off(default_image, vm_data_dir):
    g = Guest(["--clock", "deterministic", "--timeout", "1200", "--max-instructions", BOOT_BUDGET])
    g.expect(PROMPT)
    assert g.run("uname -m", PROMPT).strip() == "riscv64"
    cpuinfo = g.run("cat /proc/cpuinfo", PROMPT)
    if "rv64imafdc" not in cpuinfo:
        g.fail(f"/proc/cpuinfo lacks our ISA string: {cpuinfo!r}")
    assert g.run("echo written-to-tmpfs > /tmp/probe && cat /tmp/probe", PROMPT).strip() == "written-to-tmpfs"
    g.send("poweroff")
    status = g.wait()
    if status != 0:
        g.fail(f"exit status {status} after poweroff")


def _custom_initrd(default_initrd, path):
    path.write_bytes(busybox_initramfs(
        default_initrd.read_bytes(),
        b"#!/bin/sh\nmount -t proc proc /proc\necho \"custom-init says: $(cat /proc/cmdline)\"\npoweroff -f\n",
        ("sh", "mount", "cat", "echo", "poweroff")))
    return path


def test_user_initrd_and_append(default_image, tmp_path):
    kernel, firmware, initrd, _ = default_image
    mine = _custom_initrd(initrd, tmp_path / "custom.cpio")
    g = Guest(["--bios", str(firmware), "--kernel", str(kernel), "--initrd", str(mine),
               "--append", "console=ttyS0 cryptomgr.notests quiet vmkit.marker=42",
               "--clock", "deterministic", "--timeout", "1200", "--max-instructions", BOOT_BUDGET])
    line = g.expect("vmkit.marker=42")
    assert "custom-init says:" in line
    status = g.wait()
    if status != 0:
        g.fail(f"exit status {status}")


def test_guest_reboot_restarts_the_machine(default_image, tmp_path):
    kernel, firmware, initrd, _ = default_image
    (tmp_path / "reboot.cpio").write_bytes(busybox_initramfs(
        initrd.read_bytes(), b"#!/bin/sh\necho vmkit-boot-marker\nreboot -f\n", ("sh", "echo", "reboot")))
    g = Guest(["--bios", str(firmware), "--kernel", str(kernel), "--initrd", str(tmp_path / "reboot.cpio"),
               "--append", "console=ttyS0 cryptomgr.notests quiet",
               "--clock", "deterministic", "--timeout", "1200", "--max-instructions", BOOT_BUDGET])
    g.expect("vmkit-boot-marker")
    g.expect("OpenSBI")  # the firmware starts again: the machine was reset
    g.expect("vmkit-boot-marker")
    g.kill()


def test_virtio_console_as_the_guest_console(default_image):
    """console=hvc0: the kernel and the shell talk through virtio-console, and
    keystrokes are routed to it instead of the UART."""
    kernel, firmware, initrd, append = default_image
    g = Guest(["--bios", str(firmware), "--kernel", str(kernel), "--initrd", str(initrd),
               "--append", append.replace("console=ttyS0", "console=hvc0"),
               "--clock", "deterministic", "--timeout", "1200", "--max-instructions", BOOT_BUDGET])
    g.expect(PROMPT)
    tty = g.run("tty; cat /sys/class/tty/console/active", PROMPT)
    if "hvc0" not in tty:
        g.fail(f"the shell is not on hvc0: {tty!r}")
    g.send("poweroff")
    status = g.wait()
    if status != 0:
        g.fail(f"exit status {status}")
