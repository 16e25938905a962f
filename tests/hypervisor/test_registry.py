"""vmkit/hypervisor/registry.py: definitions, states and events in SQLite."""

import sqlite3
import threading

import pytest
from pydantic import ValidationError

from vmkit.hypervisor.models import RestartPolicy, VmSpec, VmState, VmUpdate
from vmkit.hypervisor.registry import MAX_CONSOLE_TAIL, SCHEMA_VERSION, Conflict, NotFound, Registry, RegistryError


@pytest.fixture
def reg(tmp_path):
    r = Registry(tmp_path / "registry.sqlite")
    yield r
    r.close()


def test_create_get_list_delete(reg):
    info = reg.create(VmSpec(name="web", memory_mib=256))
    assert info.state == VmState.stopped and info.spec.memory_mib == 256 and info.created > 0
    assert info.pid is None and info.started is None and info.restarts == 0
    reg.create(VmSpec(name="db"))
    assert reg.get("web") == info
    assert [i.spec.name for i in reg.list()] == ["db", "web"]
    reg.delete("web")
    assert [i.spec.name for i in reg.list()] == ["db"]
    with pytest.raises(NotFound, match="web"):
        reg.get("web")


def test_conflict_and_not_found(reg):
    reg.create(VmSpec(name="web"))
    with pytest.raises(Conflict, match="'web' already exists"):
        reg.create(VmSpec(name="web", memory_mib=1024))
    assert reg.get("web").spec.memory_mib == 512   # the first definition stands
    for call in (lambda: reg.get("nope"), lambda: reg.delete("nope"),
                 lambda: reg.set_state("nope", VmState.running),
                 lambda: reg.update_spec("nope", VmUpdate(memory_mib=128))):
        with pytest.raises(NotFound, match="no VM named 'nope'"):
            call()
    assert issubclass(NotFound, RegistryError) and issubclass(Conflict, RegistryError)


def test_update_spec_changes_only_given_fields(reg):
    reg.create(VmSpec(name="web", append="quiet", hostfwd=["tcp::8080-:80"]))
    info = reg.update_spec("web", VmUpdate(memory_mib=1024, restart=RestartPolicy.always))
    assert info.spec.memory_mib == 1024 and info.spec.restart == RestartPolicy.always
    assert info.spec.append == "quiet" and info.spec.hostfwd == ["tcp::8080-:80"]
    assert reg.update_spec("web", VmUpdate(hostfwd=[])).spec.hostfwd == []
    with pytest.raises(ValidationError):
        reg.update_spec("web", VmUpdate(cpus=2))   # VmUpdate allows it, VmSpec does not (one hart)
    assert reg.get("web").spec.cpus == 1


def test_set_state_keeps_and_clears(reg):
    reg.create(VmSpec(name="web"))
    info = reg.set_state("web", VmState.running, pid=1234, started=100.0)
    assert (info.state, info.pid, info.started) == (VmState.running, 1234, 100.0)
    info = reg.set_state("web", VmState.crashed, reason="worker killed", console_tail="oops", restarts=1)
    assert (info.pid, info.started, info.reason, info.console_tail, info.restarts) == \
        (1234, 100.0, "worker killed", "oops", 1)
    info = reg.set_state("web", VmState.stopped, pid=None, started=None, reason="")
    assert (info.pid, info.started, info.reason, info.console_tail) == (None, None, "", "oops")
    long_tail = "x" * MAX_CONSOLE_TAIL + "end"
    assert reg.set_state("web", VmState.crashed, console_tail=long_tail).console_tail.endswith("xend")
    assert len(reg.get("web").console_tail) == MAX_CONSOLE_TAIL


def test_events_order_since_and_limit(reg):
    ids = [reg.add_event("web", kind, f"n{i}").id for i, kind in enumerate(["created", "started", "stopped"])]
    assert ids == sorted(ids)
    events = reg.events()
    assert [(e.kind, e.detail, e.vm) for e in events] == \
        [("created", "n0", "web"), ("started", "n1", "web"), ("stopped", "n2", "web")]
    assert [e.id for e in reg.events(since_id=ids[0])] == ids[1:]
    assert [e.id for e in reg.events(since_id=ids[0], limit=1)] == ids[1:2]
    assert reg.events(since_id=ids[-1]) == []


def test_events_are_capped(tmp_path):
    with Registry(tmp_path / "r.sqlite", max_events=5) as reg:
        for i in range(12):
            reg.add_event("web", "started", str(i))
        events = reg.events()
        assert [e.detail for e in events] == [str(i) for i in range(7, 12)]
        assert events[-1].id == 12   # ids are not reused after the cap deletes rows
        assert reg.add_event("web", "stopped").id == 13


def test_persists_across_reopen(tmp_path):
    path = tmp_path / "registry.sqlite"
    with Registry(path) as reg:
        reg.create(VmSpec(name="web", disk_gib=8))
        reg.set_state("web", VmState.running, pid=42, started=1.5)
        reg.add_event("web", "started")
    with Registry(path) as reg:
        info = reg.get("web")
        assert (info.spec.disk_gib, info.state, info.pid, info.started) == (8, VmState.running, 42, 1.5)
        assert [e.kind for e in reg.events()] == ["started"]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "registry.sqlite"
    path.write_bytes(b"this is not a database, just some text\n" * 100)
    with pytest.raises(RegistryError, match=f"cannot use {path} as the vmkit registry"):
        Registry(path)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "registry.sqlite"
    Registry(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RegistryError, match=f"{path} was written by a newer vmkit"):
        Registry(path)


def test_another_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(RegistryError, match="not a vmkit registry"):
        Registry(path)


def test_a_missing_directory_is_a_registry_error(tmp_path):
    with pytest.raises(RegistryError, match="nowhere"):
        Registry(tmp_path / "nowhere" / "registry.sqlite")


def test_a_bad_record_is_a_registry_error(reg):
    reg.create(VmSpec(name="web"))
    with reg._lock:
        reg._db.execute("UPDATE vms SET spec = '{\"name\": 1}'")
    with pytest.raises(RegistryError, match="record of VM 'web' is not valid"):
        reg.get("web")


def test_closed_registry_raises_registry_error(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    reg.close()
    with pytest.raises(RegistryError):
        reg.list()


def test_concurrent_use_from_threads(reg):
    errors = []

    def work(t: int) -> None:
        try:
            for i in range(20):
                name = f"vm{t}-{i}"
                reg.create(VmSpec(name=name))
                reg.set_state(name, VmState.running, pid=t * 100 + i)
                reg.add_event(name, "started")
                reg.update_spec(name, VmUpdate(memory_mib=128))
                reg.list()
                reg.events(limit=10)
                if i % 2:
                    reg.delete(name)
        except Exception as e:   # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    infos = reg.list()
    assert len(infos) == 8 * 10 and all(i.spec.memory_mib == 128 and i.state == VmState.running for i in infos)
    assert len(reg.events(limit=10000)) == 8 * 20
