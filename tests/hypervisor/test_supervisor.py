"""The supervisor's side of the control protocol, without a guest: a fake
worker answers on a control socket deeper than a unix socket path can be."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from vmkit.hypervisor.supervisor import SupervisorError, WorkerUnavailable, control, socket_path
from vmkit.hypervisor.vmdir import VmDir


def fake_worker(path, replies):
    srv = socket.socket(socket.AF_UNIX)
    with socket_path(path) as p:
        srv.bind(p)
    srv.listen()

    def serve():
        for reply in replies:
            conn, _ = srv.accept()
            with conn:
                request = json.loads(conn.makefile().readline())
                conn.sendall(reply(request))
        srv.close()
    threading.Thread(target=serve, daemon=True).start()


def test_control_reaches_a_socket_past_the_sun_path_limit(tmp_path):
    vmdir = VmDir(tmp_path / ("d" * 80) / ("v" * 63))
    vmdir.path.mkdir(parents=True)
    assert len(str(vmdir.control_sock)) > 107
    fake_worker(vmdir.control_sock, [
        lambda r: json.dumps({"ok": True, "echo": r["op"]}).encode() + b"\n",
        lambda r: b'{"ok": false, "error": "the VM is stopping"}\n',
        lambda r: b"garbage\n",
    ])
    assert control(vmdir, {"op": "status"})["echo"] == "status"
    with pytest.raises(SupervisorError, match="the VM is stopping"):
        control(vmdir, {"op": "pause"})
    with pytest.raises(WorkerUnavailable, match="garbled"):
        control(vmdir, {"op": "status"})


def test_control_without_a_worker_is_unavailable(tmp_path):
    vmdir = VmDir(tmp_path / "vm")
    vmdir.path.mkdir()
    with pytest.raises(WorkerUnavailable, match="does not answer"):
        control(vmdir, {"op": "status"}, timeout=1)
