"""`vmkit run` as a user meets it: exit statuses and one-line errors."""

import subprocess
import sys

FINISH = """
    .section .text.start
    .globl _start
_start:
    li   t0, 0x10000000
    li   t1, 'o'
    sb   t1, 0(t0)
    li   t1, 'k'
    sb   t1, 0(t0)
    li   t0, 0x100000
    li   t1, {value}
    sw   t1, 0(t0)
1:  j 1b
"""

SPIN = """
    .section .text.start
    .globl _start
_start:
1:  j 1b
"""


def vmkit(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "vmkit", "run", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_usage_error(p, words):
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmkit: error:"), p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_poweroff_exits_zero_with_console_output(riscv_asm):
    p = vmkit("--bios", "none", "--kernel", str(riscv_asm(FINISH.format(value=0x5555), "pass")))
    assert p.returncode == 0, p.stderr
    assert p.stdout == "ok"


def test_finisher_failure_code_becomes_exit_status(riscv_asm):
    p = vmkit("--bios", "none", "--kernel", str(riscv_asm(FINISH.format(value=(7 << 16) | 0x3333), "fail7")))
    assert p.returncode == 7, p.stderr


def test_timeout_has_its_own_status(riscv_asm):
    p = vmkit("--bios", "none", "--kernel", str(riscv_asm(SPIN, "spin")), "--timeout", "2")
    assert p.returncode == 124, p.stderr
    assert "timeout" in p.stderr


def test_instruction_budget_stops_a_spinning_guest(riscv_asm):
    p = vmkit("--bios", "none", "--kernel", str(riscv_asm(SPIN, "spin2")), "--max-instructions", "100000",
              "--clock", "deterministic")
    assert p.returncode == 124, p.stderr


def test_missing_kernel(tmp_path):
    assert_usage_error(vmkit("--bios", "none", "--kernel", str(tmp_path / "nope.elf")), ["no such file"])


def test_non_riscv_elf():
    assert_usage_error(vmkit("--bios", "none", "--kernel", sys.executable), ["not RISC-V"])


def test_corrupt_elf(tmp_path, riscv_asm):
    good = riscv_asm(FINISH.format(value=0x5555), "truncme").read_bytes()
    bad = tmp_path / "bad.elf"
    bad.write_bytes(good[:80])
    assert_usage_error(vmkit("--bios", "none", "--kernel", str(bad)), ["corrupt"])


def test_kernel_too_big_for_ram(tmp_path):
    big = tmp_path / "fw.bin"
    big.write_bytes(b"\x13\x00\x00\x00" * (5 << 20))  # 20 MiB of nops
    assert_usage_error(vmkit("--bios", str(big), "-m", "16M"), ["does not fit", "-m"])


def test_bad_memory_size(riscv_asm):
    elf = str(riscv_asm(FINISH.format(value=0x5555), "mem"))
    assert_usage_error(vmkit("--bios", "none", "--kernel", elf, "-m", "lots"), ["memory size"])


def test_smp_not_supported_yet(riscv_asm):
    elf = str(riscv_asm(FINISH.format(value=0x5555), "smp"))
    assert_usage_error(vmkit("--bios", "none", "--kernel", elf, "--smp", "2"), ["not supported yet"])


def test_trace_prints_disassembly(riscv_asm):
    p = vmkit("--bios", "none", "--kernel", str(riscv_asm(FINISH.format(value=0x5555), "trace")), "--trace", "3")
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 3, p.stderr
    assert "0000000080000000" in lines[0] and "lui" in lines[0] and "t0=0x10000000" in lines[0]
