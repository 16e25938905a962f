"""`vmkit disk ...` (vmkit/storage/cli.py): commands, exit codes, one-line errors."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vmkit.storage import open_image
from vmkit.storage.cli import disk_app

from .conftest import qemu_check, read_all

pytestmark = pytest.mark.usefixtures("qemu_img")
runner = CliRunner()


def disk(*args):
    return runner.invoke(disk_app, [str(a) for a in args])


def one_line_error(res, code: int, text: str = "") -> None:
    assert res.exit_code == code, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmkit: error: "), res.stderr
    assert text in lines[0]
    assert "Traceback" not in res.stdout + res.stderr


def test_create_info_json(tmp_path):
    base = tmp_path / "base.raw"
    assert disk("create", base, "8M").exit_code == 0
    assert base.stat().st_size == 8 << 20
    ov = tmp_path / "ov.qcow2"
    res = disk("create", "--backing", "base.raw", "-F", "raw", ov)
    assert res.exit_code == 0, res.stderr
    assert disk("snapshot", "-c", "first", ov).exit_code == 0
    res = disk("info", "--format", "json", ov)
    info = json.loads(res.stdout)
    assert info["format"] == "qcow2" and info["virtual_size"] == 8 << 20
    assert info["backing_file"] == "base.raw" and info["backing_format"] == "raw"
    assert info["full_backing_filename"] == str(base)
    assert [b["format"] for b in info["backing_chain"]] == ["raw"]
    assert [s["name"] for s in info["snapshots"]] == ["first"]
    assert info["dirty"] is False and info["corrupt"] is False and info["cluster_size"] == 65536
    human = disk("info", ov).stdout
    assert "backing file: base.raw" in human and "first" in human and "virtual size: 8 MiB" in human


def test_convert_check_resize_snapshot(tmp_path):
    raw = tmp_path / "a.raw"
    raw.write_bytes(b"\x07" * (1 << 20) + bytes(3 << 20))
    q = tmp_path / "a.qcow2"
    assert disk("convert", "-f", "raw", "-O", "qcow2", raw, q).exit_code == 0
    assert read_all(q) == raw.read_bytes()
    res = disk("check", q)
    assert res.exit_code == 0 and "No errors" in res.stdout
    assert disk("resize", q, "+1M").exit_code == 0
    assert disk("resize", q, "6M").exit_code == 0
    with open_image(q, "qcow2", readonly=True) as img:
        assert img.virtual_size == 6 << 20
    assert disk("snapshot", "-c", "s1", q).exit_code == 0
    with open_image(q, "qcow2") as img:
        img.write_from(0, b"\x09" * 4096)
    res = disk("snapshot", "-l", q)
    assert res.exit_code == 0 and "s1" in res.stdout
    assert disk("snapshot", "-a", "s1", q).exit_code == 0
    assert read_all(q)[:4096] == b"\x07" * 4096
    assert disk("snapshot", "-d", "1", q).exit_code == 0      # by ID
    assert "s1" not in disk("snapshot", "-l", q).stdout
    assert qemu_check(q)[0] == 0
    one_line_error(disk("resize", q, "1M"), 1, "shrinking")
    one_line_error(disk("snapshot", "-a", "nope", q), 1, "no snapshot")


def test_check_exit_codes(tmp_path):
    q = tmp_path / "l.qcow2"
    assert disk("create", "-f", "qcow2", q, "4M").exit_code == 0
    with open(q, "r+b") as f:        # a leaked cluster: refcount 1, nothing points at it
        f.truncate(5 * 65536)
        f.seek(2 * 65536 + 2 * 4)
        f.write(struct.pack(">H", 1))
    res = disk("check", q)
    assert res.exit_code == 3 and "1 leaked clusters" in res.stdout
    assert disk("check", "--repair", "leaks", q).exit_code == 0
    assert disk("check", q).exit_code == 0
    with open(q, "r+b") as f:        # the L1 table's refcount gone: corruption
        f.seek(2 * 65536 + 2 * 3)
        f.write(struct.pack(">H", 0))
    assert disk("check", q).exit_code == 2
    assert json.loads(disk("check", "--format", "json", q).stdout)["corruptions"] >= 1
    raw = tmp_path / "r.raw"
    raw.write_bytes(bytes(512))
    assert disk("check", "-f", "raw", raw).exit_code == 63


def test_errors_are_one_line(tmp_path):
    one_line_error(disk("info", tmp_path / "missing.qcow2"), 1, "No such file")
    one_line_error(disk("create", "-f", "vmdk", tmp_path / "x", "1M"), 2, "unknown image format")
    one_line_error(disk("create", tmp_path / "x", "12Q"), 2, "invalid size")
    one_line_error(disk("create", tmp_path / "x"), 2, "missing SIZE")
    one_line_error(disk("frobnicate"), 2, "No such command")
    one_line_error(disk("info", "--bogus", tmp_path / "x"), 2, "No such option")
    one_line_error(disk("snapshot", "-l", "-c", "x", tmp_path / "x"), 2, "exactly one")
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb" + struct.pack(">I", 9) + bytes(200))
    one_line_error(disk("info", bad), 1, "unsupported version 9")
    one_line_error(disk("check", "-f", "qcow2", bad), 1, "unsupported version 9")
    loop = tmp_path / "loop.qcow2"
    assert disk("create", "-f", "qcow2", loop, "1M").exit_code == 0
    one_line_error(disk("create", "-b", "json:{}", tmp_path / "j.qcow2", "1M"), 1, "json")


def test_runs_as_a_program(tmp_path):
    """The real click entry point prints the same one-line errors."""
    code = "from vmkit.storage.cli import disk_app; disk_app(prog_name='vmkit disk')"
    r = subprocess.run([sys.executable, "-c", code, "info", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.startswith("vmkit: error: ") and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-c", code, "create", "--nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("vmkit: error: ") and r.stderr.count("\n") == 1
