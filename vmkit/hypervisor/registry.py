"""The daemon's registry: VM definitions, their states, and an event log, in SQLite.

One file, ``<state dir>/registry.sqlite`` (docs/hypervisor.md), written by
the daemon alone. WAL mode with ``synchronous=FULL``: every change is one
transaction that is on disk when the method returns, so a crash (of the
daemon or the host) never loses or half-writes a definition.

The daemon serves its API from several threads; they share one connection
behind a lock (SQLite serialises writers anyway, and the calls are short).

    reg = Registry(state_dir / "registry.sqlite")
    reg.create(VmSpec(name="web"))          # -> VmInfo, state stopped
    reg.set_state("web", VmState.running, pid=1234, started=time.time())
    reg.add_event("web", "started")
    reg.events(since_id=0)                  # -> [Event, ...], oldest first
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from pydantic import ValidationError

from .models import Event, VmInfo, VmSpec, VmState, VmUpdate

SCHEMA_VERSION = 1
MAX_EVENTS = 10000              # the event log keeps the newest rows only
MAX_CONSOLE_TAIL = 16 * 1024    # guest-driven text: keep its end, bounded
MAX_DETAIL = 4096

SCHEMA = """
CREATE TABLE vms (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,               -- VmSpec as JSON
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    created REAL NOT NULL,
    started REAL,
    restarts INTEGER NOT NULL DEFAULT 0,
    console_tail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, so clients can poll with since_id
    time REAL NOT NULL,
    vm TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""

_KEEP = object()   # set_state: leave the column as it is (None means clear it)


class RegistryError(Exception):
    """The registry cannot be opened or written; the message names the file."""


class NotFound(RegistryError):
    pass


class Conflict(RegistryError):
    pass


class Registry:
    def __init__(self, path: str | os.PathLike, max_events: int = MAX_EVENTS) -> None:
        self.path = os.fspath(path)
        self.max_events = max_events
        self._lock = threading.Lock()
        try:
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT), not sqlite3's guesses.
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as e:
            raise RegistryError(f"cannot open the registry {self.path}: {e}") from e
        try:
            self._open_schema()
        except Exception:
            self._db.close()
            raise

    def _open_schema(self) -> None:
        try:
            # The first read is where a file that is not SQLite shows itself.
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as e:
            raise RegistryError(f"cannot use {self.path} as the vmkit registry ({e}): "
                                "move it away and the daemon makes a new, empty one") from e
        if version > SCHEMA_VERSION:
            raise RegistryError(f"{self.path} was written by a newer vmkit (schema {version}, "
                                f"this one knows {SCHEMA_VERSION}): use that vmkit, or another --state-dir")
        if version == 0 and tables:
            raise RegistryError(f"{self.path} is an SQLite database but not a vmkit registry: "
                                "move it away, or use another --state-dir")
        if version == 0:
            with self._tx() as db:
                if db.execute("PRAGMA user_version").fetchone()[0]:
                    return   # another opener made it meanwhile
                # Statement by statement: executescript would COMMIT, splitting the transaction.
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; sqlite3 errors become RegistryError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise RegistryError(f"registry {self.path}: {e}") from e

    # -- VMs ----------------------------------------------------------------------
    def create(self, spec: VmSpec) -> VmInfo:
        """Define a VM (state stopped). Raises Conflict if the name is taken."""
        with self._tx() as db:
            if _row(db, spec.name) is not None:
                raise Conflict(f"a VM named {spec.name!r} already exists")
            db.execute("INSERT INTO vms (name, spec, state, created) VALUES (?, ?, ?, ?)",
                       (spec.name, spec.model_dump_json(), VmState.stopped.value, time.time()))
            return self._info(_row(db, spec.name))

    def get(self, name: str) -> VmInfo:
        with self._tx() as db:
            return self._info(_existing(db, name))

    def list(self) -> list[VmInfo]:
        """Every VM, sorted by name."""
        with self._tx() as db:
            return [self._info(r) for r in db.execute(f"{_SELECT} ORDER BY name")]

    def update_spec(self, name: str, update: VmUpdate) -> VmInfo:
        """Apply the fields of ``update`` that are set.

        Raises NotFound, or pydantic's ValidationError if the result is not a
        valid VmSpec (the API answers that as an invalid request). Whether
        the VM may change now (it should be stopped) is the caller's rule.
        """
        with self._tx() as db:
            info = self._info(_existing(db, name))
            fields = info.spec.model_dump() | update.model_dump(exclude_none=True)
            spec = VmSpec.model_validate(fields)
            db.execute("UPDATE vms SET spec = ? WHERE name = ?", (spec.model_dump_json(), name))
            return self._info(_row(db, name))

    def set_state(self, name: str, state: VmState, *, reason: str | None = None, pid=_KEEP,
                  started=_KEEP, console_tail: str | None = None, restarts: int | None = None) -> VmInfo:
        """Record a VM's state; of the other fields only those given change
        (``pid=None``/``started=None`` clear them). Raises NotFound."""
        changes: dict[str, object] = {"state": VmState(state).value}
        if reason is not None:
            changes["reason"] = reason
        if pid is not _KEEP:
            changes["pid"] = pid
        if started is not _KEEP:
            changes["started"] = started
        if console_tail is not None:
            changes["console_tail"] = console_tail[-MAX_CONSOLE_TAIL:]
        if restarts is not None:
            changes["restarts"] = restarts
        columns = ", ".join(f"{c} = ?" for c in changes)    # column names are ours, never input
        with self._tx() as db:
            _existing(db, name)
            db.execute(f"UPDATE vms SET {columns} WHERE name = ?", (*changes.values(), name))
            return self._info(_row(db, name))

    def delete(self, name: str) -> None:
        """Forget a VM (its events stay). Raises NotFound."""
        with self._tx() as db:
            _existing(db, name)
            db.execute("DELETE FROM vms WHERE name = ?", (name,))

    # -- events -------------------------------------------------------------------
    def add_event(self, vm: str, kind: str, detail: str = "") -> Event:
        with self._tx() as db:
            now = time.time()
            detail = detail[:MAX_DETAIL]
            cur = db.execute("INSERT INTO events (time, vm, kind, detail) VALUES (?, ?, ?, ?)",
                             (now, vm, kind, detail))
            # ids only grow, so the newest max_events rows are the last ids; the
            # primary key makes this delete cheap.
            db.execute("DELETE FROM events WHERE id <= ?", (cur.lastrowid - self.max_events,))
            return Event(id=cur.lastrowid, time=now, vm=vm, kind=kind, detail=detail)

    def events(self, since_id: int = 0, limit: int = 1000) -> list[Event]:
        """Events with id > since_id, oldest first, at most ``limit``."""
        limit = max(0, min(limit, self.max_events))
        with self._tx() as db:
            rows = db.execute("SELECT id, time, vm, kind, detail FROM events WHERE id > ? ORDER BY id LIMIT ?",
                              (since_id, limit))
            return [Event(id=i, time=t, vm=vm, kind=k, detail=d) for i, t, vm, k, d in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _info(self, row: tuple) -> VmInfo:
        name, spec, state, reason, pid, created, started, restarts, console_tail = row
        try:
            return VmInfo(spec=VmSpec.model_validate_json(spec), state=VmState(state), reason=reason,
                          pid=pid, created=created, started=started, restarts=restarts,
                          console_tail=console_tail)
        except (ValidationError, ValueError) as e:
            raise RegistryError(f"registry {self.path}: the record of VM {name!r} is not valid: {e}") from e


_SELECT = "SELECT name, spec, state, reason, pid, created, started, restarts, console_tail FROM vms"


def _row(db: sqlite3.Connection, name: str) -> tuple | None:
    return db.execute(f"{_SELECT} WHERE name = ?", (name,)).fetchone()


def _existing(db: sqlite3.Connection, name: str) -> tuple:
    row = _row(db, name)
    if row is None:
        raise NotFound(f"no VM named {name!r}")
    return row
