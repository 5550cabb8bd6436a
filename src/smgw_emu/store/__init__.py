"""The gateway's persistent state in SQLite (stdlib sqlite3).

Rules that make it crash-safe:
* every logical change is exactly one transaction (`with store.transaction() as tx:`), so after a
  crash the state is either before or after a change, never in between;
* WAL journal: a change that `transaction()` returned from survives SIGKILL of the process (an
  acknowledged change is never lost). Durability against power loss or a kernel crash as well
  is `durability="power-loss"` (`synchronous=FULL`, an fsync per commit); the default
  `"process-crash"` (`synchronous=NORMAL`) fsyncs only at checkpoints, which is what an emulator
  that runs by the thousand needs;
* the schema is versioned (`PRAGMA user_version`, mirrored in `meta`) and created or migrated in
  one transaction: see "Schema versions" below.

What is stored: the COSEM objects of every logical device (profiles live there), key banks, the
three logs, meter values, firmware slots, the INFO-REPORT outbox (reports are kept until the GWA
has acknowledged them), wake-up nonces seen, and small key/value settings.

Schema versions: `SCHEMA_VERSION` is the version this code reads and writes; `MIGRATIONS` maps
every version 1 .. SCHEMA_VERSION to the function that brings a store of the version before it
there. Opening a store reads its version first and then
* equal: opens it;
* older: runs the missing migrations in order, all in ONE transaction (BEGIN IMMEDIATE .. COMMIT,
  the new version written in the same transaction: SQLite's DDL is transactional, so a crash or a
  failing migration leaves the store at its old version, data unchanged), and logs from/to;
* newer than `SCHEMA_VERSION`: refuses it (StoreError naming the file, its version and ours);
* 0 without tables: a new store, created by running every migration from 0;
* 0 with the tables of version 1 and `meta` schema_version 1: a store of the release before
  versioning (it wrote the version only into `meta`); migrated 0 -> 1, which stamps it;
* anything else (other tables, no `meta` row, `meta` and the header disagreeing, not SQLite):
  refused as not a smgw-emu state store or damaged. A refused file is not written to.
The version in `meta` is kept equal to `user_version` so that the release before versioning,
which reads only `meta`, refuses a store of a later version instead of using it.

The store is synchronous on purpose: one small transaction costs about a millisecond on this kind
of machine, and keeping it on the event loop keeps the order of changes the order of requests.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

log = logging.getLogger("smgw_emu.store")

#: The schema version this code reads and writes (== max(MIGRATIONS)).
SCHEMA_VERSION = 1

#: The tables of schema version 1: a store of the release before versioning has exactly these.
V1_TABLES = frozenset({"meta", "ldevs", "objects", "key_banks", "log", "meter_values", "firmware", "outbox",
                       "nonces", "kv"})

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ldevs (
    kind TEXT NOT NULL, id TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS objects (
    ldev_kind TEXT NOT NULL, ldev_id TEXT NOT NULL, class_id INTEGER NOT NULL, obis TEXT NOT NULL,
    attributes TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (ldev_kind, ldev_id, class_id, obis),
    FOREIGN KEY (ldev_kind, ldev_id) REFERENCES ldevs (kind, id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS key_banks (
    bank TEXT PRIMARY KEY, state TEXT NOT NULL, material TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    record INTEGER PRIMARY KEY AUTOINCREMENT, log TEXT NOT NULL, parent INTEGER,
    level INTEGER NOT NULL, outcome INTEGER NOT NULL, ts TEXT NOT NULL, event TEXT NOT NULL,
    message TEXT NOT NULL, details TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS log_by_log_ts ON log (log, ts);
CREATE TABLE IF NOT EXISTS meter_values (
    meter_id TEXT NOT NULL, obis TEXT NOT NULL, ts TEXT NOT NULL, value TEXT NOT NULL,
    status TEXT NOT NULL, PRIMARY KEY (meter_id, obis, ts));
CREATE TABLE IF NOT EXISTS firmware (
    slot TEXT PRIMARY KEY, version TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, kind TEXT NOT NULL,
    created_at TEXT NOT NULL, body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS nonces (nonce BLOB PRIMARY KEY, expires_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(Exception):
    """The state directory or database cannot be used (the message is one line, for the user)."""


@dataclass(frozen=True)
class LogEntry:
    record: int
    log: str
    parent: int | None
    level: int
    outcome: int
    ts: str
    event: str
    message: str
    details: dict


@dataclass(frozen=True)
class StoredObject:
    ldev_kind: str
    ldev_id: str
    class_id: int
    obis: str
    attributes: Any
    updated_at: str


@dataclass(frozen=True)
class OutboxItem:
    id: int
    channel: str
    kind: str
    created_at: str
    body: bytes
    attempts: int
    last_error: str


LOG_NAMES = ("system", "consumer", "calibration")


class Transaction:
    """The writes of one logical change. Obtained from `StateStore.transaction()`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        return self._c.execute(sql, params)

    # -- COSEM objects -----------------------------------------------------------------------
    def put_ldev(self, kind: str, ldev_id: str, now: str) -> None:
        self._c.execute(
            "INSERT OR IGNORE INTO ldevs (kind, id, created_at) VALUES (?, ?, ?)", (kind, ldev_id, now)
        )

    def delete_ldev(self, kind: str, ldev_id: str) -> bool:
        return self._c.execute("DELETE FROM ldevs WHERE kind=? AND id=?", (kind, ldev_id)).rowcount > 0

    def put_object(self, kind: str, ldev_id: str, class_id: int, obis: str, attributes: Any, now: str) -> None:
        self.put_ldev(kind, ldev_id, now)
        self._c.execute(
            "INSERT INTO objects (ldev_kind, ldev_id, class_id, obis, attributes, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ldev_kind, ldev_id, class_id, obis)"
            " DO UPDATE SET attributes=excluded.attributes, updated_at=excluded.updated_at",
            (kind, ldev_id, class_id, obis, json.dumps(attributes, sort_keys=True), now),
        )

    def delete_object(self, kind: str, ldev_id: str, class_id: int, obis: str) -> bool:
        cur = self._c.execute(
            "DELETE FROM objects WHERE ldev_kind=? AND ldev_id=? AND class_id=? AND obis=?",
            (kind, ldev_id, class_id, obis),
        )
        return cur.rowcount > 0

    # -- logs, outbox, key banks, settings ---------------------------------------------------
    def append_log(
        self, log: str, *, level: int, outcome: int, ts: str, event: str, message: str,
        details: dict | None = None, parent: int | None = None,
    ) -> int:
        if log not in LOG_NAMES:
            raise ValueError(f"unknown log {log!r}")
        cur = self._c.execute(
            "INSERT INTO log (log, parent, level, outcome, ts, event, message, details)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (log, parent, level, outcome, ts, event, message, json.dumps(details or {}, sort_keys=True)),
        )
        return int(cur.lastrowid)

    def enqueue(self, channel: str, kind: str, body: bytes, now: str) -> int:
        cur = self._c.execute(
            "INSERT INTO outbox (channel, kind, created_at, body) VALUES (?, ?, ?, ?)",
            (channel, kind, now, body),
        )
        return int(cur.lastrowid)

    def put_key_bank(self, bank: str, state: str, material: dict, now: str) -> None:
        self._c.execute(
            "INSERT INTO key_banks (bank, state, material, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (bank) DO UPDATE SET state=excluded.state, material=excluded.material,"
            " updated_at=excluded.updated_at",
            (bank, state, json.dumps(material, sort_keys=True), now),
        )

    def set(self, key: str, value: Any) -> None:
        self._c.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value, sort_keys=True)),
        )

    def remember_nonce(self, nonce: bytes, expires_at: str, now: str) -> None:
        """Keep `nonce` refused until `expires_at`; forget nonces that expired before `now`."""
        self._c.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
        self._c.execute("INSERT OR REPLACE INTO nonces (nonce, expires_at) VALUES (?, ?)", (nonce, expires_at))

    def put_meter_value(self, meter_id: str, obis: str, ts: str, value: str, status: str) -> None:
        self._c.execute(
            "INSERT OR REPLACE INTO meter_values (meter_id, obis, ts, value, status) VALUES (?, ?, ?, ?, ?)",
            (meter_id, obis, ts, value, status),
        )

    def put_firmware(self, slot: str, version: str, state: str, detail: dict, now: str) -> None:
        self._c.execute(
            "INSERT OR REPLACE INTO firmware (slot, version, state, detail, updated_at) VALUES (?, ?, ?, ?, ?)",
            (slot, version, state, json.dumps(detail, sort_keys=True), now),
        )


# -- schema migrations ---------------------------------------------------------------------------
Migration = Callable[[Transaction], None]


def _to_v1(tx: Transaction) -> None:
    """0 -> 1: create the schema of version 1.

    On a new (empty) store this creates every table. On a store of the release before versioning
    the tables are already there, exactly as version 1 has them (that release wrote schema 1 and
    only recorded it in `meta`), so nothing is created or changed: the step only stamps it (the
    caller writes `user_version` and `meta` in the same transaction)."""
    for statement in filter(str.strip, _SCHEMA_V1.split(";")):
        tx.execute(statement)


#: Version -> the step that brings a store of the version before it to it. Append only: a released
#: step is never changed (stores in the field have run it); a change of what is stored is a new
#: version with its own step, and SCHEMA_VERSION moves with it.
MIGRATIONS: Mapping[int, Migration] = {1: _to_v1}

assert max(MIGRATIONS) == SCHEMA_VERSION


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class StateStore:
    """One gateway's state database (`<state_dir>/state.sqlite3`).

    `migrations` is the table of schema migrations (default `MIGRATIONS`); the highest key is the
    version the store is brought to. The application never passes it: it is there so that a test
    can add a version after the current one (and a failing one) without touching the module.
    """

    FILE_NAME = "state.sqlite3"

    DURABILITY = {"process-crash": "NORMAL", "power-loss": "FULL"}

    def __init__(self, state_dir: str | os.PathLike, *, durability: str = "process-crash",
                 migrations: Mapping[int, Migration] | None = None) -> None:
        if durability not in self.DURABILITY:
            raise StoreError(f"unknown durability {durability!r} (process-crash or power-loss)")
        migrations = MIGRATIONS if migrations is None else migrations
        if sorted(migrations) != list(range(1, len(migrations) + 1)):
            raise ValueError(f"migrations must be keyed 1 .. n without gaps, not {sorted(migrations)}")
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create state directory {self.state_dir}: {exc.strerror or exc}") from None
        if not os.access(self.state_dir, os.W_OK | os.X_OK):
            raise StoreError(f"state directory {self.state_dir} is not writable")
        self.path = self.state_dir / self.FILE_NAME
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per logical change.
            self._c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._c.execute("PRAGMA busy_timeout=5000")
            # Look before writing anything: a file that is refused is left as it is (not even
            # switched to WAL).
            found = self._version_found(len(migrations))
            self._c.execute("PRAGMA journal_mode=WAL")
            self._c.execute(f"PRAGMA synchronous={self.DURABILITY[durability]}")
            self._migrate(migrations, found)
            self._c.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise StoreError(f"cannot open state database {self.path}: {' '.join(str(exc).split())}") from None
        except BaseException:
            self._close_quietly()  # e.g. the schema version is refused: do not leak the connection
            raise

    def _version_found(self, supported: int) -> int:
        """The schema version of the open file (0: new and empty, or the release before versioning).

        Raises StoreError for a file this code must not use. Reads only."""
        c = self._c
        version = int(c.execute("PRAGMA user_version").fetchone()[0])  # "file is not a database" here
        names = {r[0]: r[1] for r in c.execute(
            "SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")}
        tables = {n for n, t in names.items() if t == "table"}
        if version == 0 and not names:
            return 0  # a new store
        meta = None
        if "meta" in tables:
            row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            meta = None if row is None else str(row[0]).strip()  # a string compare: no ValueError on junk
        if meta is None:
            what = f"user_version {version}, " if version else ""
            raise StoreError(f"{self.path} is not a smgw-emu state store ({what}no schema version in a meta table); "
                             "not opened")
        if version == 0:  # the release before versioning: the tables of version 1, version 1 in meta
            missing = sorted(V1_TABLES - tables)
            if meta != "1" or missing:
                detail = f"tables missing: {', '.join(missing)}" if missing else f"schema version {meta!r} in meta"
                raise StoreError(f"{self.path} is not a smgw-emu state store of a known version "
                                 f"(no user_version, {detail}); not opened")
            return 0
        if version > supported:
            raise StoreError(f"{self.path} has schema version {version}, newer than this smgw-emu supports "
                             f"(up to {supported}): written by a later release; not opened")
        if meta != str(version):
            raise StoreError(f"{self.path} is damaged: schema version {version} in its header but {meta!r} in "
                             "its meta table; not opened")
        return version

    def _migrate(self, migrations: Mapping[int, Migration], found: int) -> None:
        """Bring the store from version `found` to the highest version of `migrations`, in one
        transaction."""
        target = len(migrations)
        self.schema_version = found
        if found == target:
            return
        # Off for the migration (a rebuilt table would cascade or fail halfway); foreign_key_check
        # before COMMIT instead. __init__ switches it on again.
        self._c.execute("PRAGMA foreign_keys=OFF")
        with self.transaction() as tx:
            # Again under the write lock: another process may have migrated it meanwhile.
            found = self._version_found(target)
            new = not self._c.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
            step = found
            try:
                for step in range(found + 1, target + 1):
                    migrations[step](tx)
                    log.debug("state store %s: migration to schema version %d done", self.path, step)
                problems = tx.execute("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise StoreError(f"foreign keys broken: {problems[:3]}")
            except Exception as exc:
                log.debug("migration of %s to schema version %d failed", self.path, step, exc_info=True)
                raise StoreError(f"cannot migrate state database {self.path} from schema version {found} "
                                 f"to {target}: step {step} failed ({_one_line(exc)}); the store is "
                                 f"unchanged, still version {found}") from exc
            tx.execute(f"PRAGMA user_version={int(target)}")
            tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                       " ON CONFLICT (key) DO UPDATE SET value=excluded.value", (str(target),))
        if new:
            log.info("state store %s created at schema version %d", self.path, target)
        elif found == 0:
            log.info("state store %s migrated from schema version 0 (the release before versioning) to %d",
                     self.path, target)
        else:
            log.info("state store %s migrated from schema version %d to %d", self.path, found, target)
        self.schema_version = target

    def _close_quietly(self) -> None:
        conn = getattr(self, "_c", None)
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        self._c.close()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One logical change: all of its writes commit together or not at all."""
        self._c.execute("BEGIN IMMEDIATE")
        try:
            yield Transaction(self._c)
            # COMMIT inside the try: if SQLite refuses it (deferred constraint, I/O error, busy),
            # the change is rolled back instead of staying open and leaking into the next change.
            self._c.execute("COMMIT")
        except BaseException:
            if self._c.in_transaction:  # SQLite may already have rolled back by itself
                try:
                    self._c.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original exception is the one worth reporting
            raise

    # -- reads -------------------------------------------------------------------------------
    def ldevs(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._c.execute("SELECT kind, id FROM ldevs ORDER BY kind, id")]

    def objects(self, kind: str | None = None, ldev_id: str | None = None) -> list[StoredObject]:
        sql = "SELECT ldev_kind, ldev_id, class_id, obis, attributes, updated_at FROM objects"
        params: tuple = ()
        if kind is not None:
            sql += " WHERE ldev_kind=?" + (" AND ldev_id=?" if ldev_id is not None else "")
            params = (kind,) + ((ldev_id,) if ldev_id is not None else ())
        rows = self._c.execute(sql + " ORDER BY ldev_kind, ldev_id, class_id, obis", params)
        return [StoredObject(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def logs(self, log: str = "system", *, since_record: int = 0, limit: int = 1000) -> list[LogEntry]:
        rows = self._c.execute(
            "SELECT record, log, parent, level, outcome, ts, event, message, details FROM log"
            " WHERE log=? AND record>? ORDER BY record LIMIT ?",
            (log, since_record, limit),
        )
        return [LogEntry(*r[:8], json.loads(r[8])) for r in rows]

    def log_tail(self, log: str = "system", count: int = 1000) -> list[LogEntry]:
        """The last `count` entries of `log`, oldest first."""
        rows = self._c.execute(
            "SELECT record, log, parent, level, outcome, ts, event, message, details FROM log"
            " WHERE log=? ORDER BY record DESC LIMIT ?",
            (log, count),
        )
        return [LogEntry(*r[:8], json.loads(r[8])) for r in rows][::-1]

    def log_count(self, log: str = "system") -> int:
        return int(self._c.execute("SELECT COUNT(*) FROM log WHERE log=?", (log,)).fetchone()[0])

    def log_page(self, log: str, offset: int, count: int) -> list[LogEntry]:
        """Entries `offset` .. `offset + count - 1` of `log` (0 = its oldest), oldest first."""
        rows = self._c.execute(
            "SELECT record, log, parent, level, outcome, ts, event, message, details FROM log"
            " WHERE log=? ORDER BY record LIMIT ? OFFSET ?",
            (log, count, offset),
        )
        return [LogEntry(*r[:8], json.loads(r[8])) for r in rows]

    def log_between(self, log: str, from_ts: str | None, to_ts: str | None, limit: int) -> list[LogEntry]:
        """At most `limit` entries of `log` with from_ts <= ts < to_ts (time stamps as stored), oldest first."""
        rows = self._c.execute(
            "SELECT record, log, parent, level, outcome, ts, event, message, details FROM log"
            " WHERE log=? AND ts>=? AND ts<? ORDER BY record LIMIT ?",
            (log, from_ts or "", to_ts if to_ts is not None else "\uffff", limit),
        )
        return [LogEntry(*r[:8], json.loads(r[8])) for r in rows]

    def integrity_check(self) -> list[str]:
        """SQLite's PRAGMA integrity_check: ["ok"], or the problems it found."""
        try:
            return [str(r[0]) for r in self._c.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            return [f"integrity check failed: {exc}"]

    def pending(self, channel: str, limit: int = 100) -> list[OutboxItem]:
        rows = self._c.execute(
            "SELECT id, channel, kind, created_at, body, attempts, last_error FROM outbox"
            " WHERE channel=? ORDER BY id LIMIT ?",
            (channel, limit),
        )
        return [OutboxItem(*r) for r in rows]

    def acknowledge(self, item_id: int) -> None:
        with self.transaction() as tx:
            tx.execute("DELETE FROM outbox WHERE id=?", (item_id,))

    def record_attempt(self, item_id: int, error: str) -> None:
        with self.transaction() as tx:
            tx.execute("UPDATE outbox SET attempts=attempts+1, last_error=? WHERE id=?", (error, item_id))

    def key_banks(self) -> dict[str, tuple[str, dict]]:
        rows = self._c.execute("SELECT bank, state, material FROM key_banks ORDER BY bank")
        return {r[0]: (r[1], json.loads(r[2])) for r in rows}

    def get(self, key: str, default: Any = None) -> Any:
        row = self._c.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def meter_values(self, meter_id: str, obis: str, from_ts: str = "", to_ts: str = "\uffff") -> list[tuple[str, str, str]]:
        rows = self._c.execute(
            "SELECT ts, value, status FROM meter_values WHERE meter_id=? AND obis=? AND ts>=? AND ts<? ORDER BY ts",
            (meter_id, obis, from_ts, to_ts),
        )
        return [tuple(r) for r in rows]

    def firmware(self) -> dict[str, tuple[str, str, dict]]:
        rows = self._c.execute("SELECT slot, version, state, detail FROM firmware ORDER BY slot")
        return {r[0]: (r[1], r[2], json.loads(r[3])) for r in rows}

    def count(self, table: str) -> int:
        if table not in {"ldevs", "objects", "key_banks", "log", "meter_values", "firmware", "outbox", "nonces", "kv"}:
            raise ValueError(table)
        return int(self._c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # -- wake-up nonces (replay protection across restarts) ----------------------------------
    def remember_nonce(self, nonce: bytes, expires_at: str, now: str) -> None:
        with self.transaction() as tx:
            tx.remember_nonce(nonce, expires_at, now)

    def nonces(self, valid_at: str) -> list[tuple[bytes, str]]:
        """Nonces still refused at `valid_at`, with the time until which they are."""
        return [tuple(r) for r in self._c.execute("SELECT nonce, expires_at FROM nonces WHERE expires_at >= ?", (valid_at,))]
