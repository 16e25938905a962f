"""The console on a terminal: raw keys to the guest, Ctrl-A x quits, Ctrl-A h helps."""

import os
import pty
import select
import sys
import time


def read_until(fd, needle: bytes, timeout: float) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_ctrl_a_h_then_x_on_a_terminal(riscv_asm):
    # A guest that echoes what it receives on the UART, forever.
    echo = riscv_asm("""
    .section .text.start
    .globl _start
_start:
    li   t0, 0x10000000
    li   t1, '>'
    sb   t1, 0(t0)           # ready: the console is up (and raw)
1:  lbu  t1, 5(t0)          # LSR
    andi t1, t1, 1          # data ready
    beqz t1, 1b
    lbu  t2, 0(t0)
    sb   t2, 0(t0)
    j    1b
""", "echo")
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "vmkit", "run", "--bios", "none",
                                  "--kernel", str(echo), "--timeout", "120"])
    try:
        assert b">" in read_until(fd, b">", 120)
        os.write(fd, b"hello")
        assert b"hello" in read_until(fd, b"hello", 60)
        os.write(fd, b"\x01h")
        assert b"exit the emulator" in read_until(fd, b"exit the emulator", 30)
        os.write(fd, b"\x01x")
        read_until(fd, b"\0", 10)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
