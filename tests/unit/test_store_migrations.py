"""Schema versions of the state store: new stores, the store of the release before versioning
(tests/fixtures/store-v0.sqlite, made by tests/fixtures/make_store_fixture.py with the code of
e6583db), migrations in one transaction, and the files that are refused."""

from __future__ import annotations

import hashlib
import logging
import shutil
import sqlite3
from pathlib import Path

import pytest

from smgw_emu.store import MIGRATIONS, SCHEMA_VERSION, V1_TABLES, StateStore, StoreError
from tests.fixtures import make_store_fixture as fixture

NOW = "2026-03-02T00:00:00+00:00"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pragma(db: Path, name: str):
    c = sqlite3.connect(db)
    try:
        return c.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        c.close()


def _meta_version(db: Path) -> str | None:
    c = sqlite3.connect(db)
    try:
        row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return None if row is None else row[0]
    finally:
        c.close()


def _tables(db: Path) -> set[str]:
    c = sqlite3.connect(db)
    try:
        return {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")} - {"sqlite_sequence"}
    finally:
        c.close()


@pytest.fixture
def v0_store(tmp_path) -> Path:
    """A copy of the committed store of the release before versioning: its state directory."""
    state = tmp_path / "state"
    state.mkdir()
    shutil.copyfile(fixture.FIXTURE, state / StateStore.FILE_NAME)
    return state


def _write(db: Path, *statements: str) -> None:
    """Change the file behind the store's back, as another program or a damaged disk would."""
    c = sqlite3.connect(db)
    for statement in statements:
        c.execute(statement)
    c.commit()
    c.close()


def _v1_store(tmp_path) -> Path:
    """A state directory with the fixture's data at version 1 (the v0 fixture migrated)."""
    state = tmp_path / "v1"
    state.mkdir()
    shutil.copyfile(fixture.FIXTURE, state / StateStore.FILE_NAME)
    StateStore(state).close()
    assert _pragma(state / StateStore.FILE_NAME, "user_version") == 1
    return state


def _one_line_error(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


# -- the fixture itself ------------------------------------------------------------------------------


def test_fixture_is_a_checkpointed_store_of_the_release_before_versioning():
    db = fixture.FIXTURE
    assert db.is_file() and db.stat().st_size < 200_000
    beside = sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name) and p != db)
    assert beside == [], "the fixture has journal files beside it (checkpoint it: make_store_fixture.py)"
    # Opened read-only (immutable): reading it must not create -shm/-wal next to the committed file.
    c = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 0
        assert c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables - {"sqlite_sequence"} == V1_TABLES
    finally:
        c.close()


# -- the store of the release before versioning opens, migrated ------------------------------------


def test_store_of_the_release_before_versioning_opens_with_its_data(v0_store, caplog):
    committed = _sha(fixture.FIXTURE)
    with caplog.at_level(logging.INFO, logger="smgw_emu.store"):
        store = StateStore(v0_store)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert fixture.check(store) == []  # every row reads back exactly as the old code wrote it
        # and the migrated store is usable: a write, read back
        with store.transaction() as tx:
            tx.set("after-migration", {"ok": True})
        assert store.get("after-migration") == {"ok": True}
    finally:
        store.close()
    db = v0_store / StateStore.FILE_NAME
    assert _pragma(db, "user_version") == SCHEMA_VERSION
    assert _meta_version(db) == str(SCHEMA_VERSION)
    assert _pragma(db, "journal_mode") == "wal"
    migrated = [r.getMessage() for r in caplog.records if "migrated" in r.getMessage()]
    assert migrated == [f"state store {db} migrated from schema version 0 (the release before versioning)"
                        f" to {SCHEMA_VERSION}"]
    assert _sha(fixture.FIXTURE) == committed  # the committed file was never opened


def test_migrated_store_opens_again_without_migrating(v0_store, caplog):
    StateStore(v0_store).close()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="smgw_emu.store"):
        store = StateStore(v0_store)
    try:
        assert store.schema_version == SCHEMA_VERSION and fixture.check(store) == []
    finally:
        store.close()
    assert not [r for r in caplog.records if "migrat" in r.getMessage() or "created" in r.getMessage()]


def test_new_store_is_created_at_the_current_version(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="smgw_emu.store"):
        store = StateStore(tmp_path)
    store.close()
    db = tmp_path / StateStore.FILE_NAME
    assert store.schema_version == SCHEMA_VERSION
    assert _pragma(db, "user_version") == SCHEMA_VERSION
    assert _meta_version(db) == str(SCHEMA_VERSION)
    assert _tables(db) == V1_TABLES
    assert [r.getMessage() for r in caplog.records] == [f"state store {db} created at schema version {SCHEMA_VERSION}"]


def test_migrations_are_keyed_one_to_the_current_version():
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))
    with pytest.raises(ValueError, match="without gaps"):
        StateStore("/nonexistent-never-created", migrations={**MIGRATIONS, SCHEMA_VERSION + 2: lambda tx: None})


# -- a later version: a migration registered by the test -------------------------------------------


def _to_v2(tx) -> None:
    """A test-only step 1 -> 2: a new table filled from an old one, and a rewritten value."""
    tx.execute("CREATE TABLE meter_names (meter_id TEXT PRIMARY KEY, name TEXT NOT NULL)")
    tx.execute("INSERT INTO meter_names SELECT id, 'meter ' || id FROM ldevs WHERE kind='meter'")
    tx.execute("UPDATE kv SET value=json_set(value, '$.migrated', 2) WHERE key='operations/operating-state'")


def test_a_later_migration_runs_from_version_1(tmp_path, caplog):
    state = _v1_store(tmp_path)
    with caplog.at_level(logging.INFO, logger="smgw_emu.store"):
        store = StateStore(state, migrations={**MIGRATIONS, 2: _to_v2})
    try:
        assert store.schema_version == 2
        assert store.get("operations/operating-state") == {**fixture.KV["operations/operating-state"], "migrated": 2}
        assert store.count("ldevs") == len(fixture.LDEVS) and store.count("log") == len(fixture.LOGS)
    finally:
        store.close()
    db = state / StateStore.FILE_NAME
    assert (_pragma(db, "user_version"), _meta_version(db)) == (2, "2")
    assert "meter_names" in _tables(db)
    assert [r.getMessage() for r in caplog.records] == [f"state store {db} migrated from schema version 1 to 2"]


def test_all_steps_from_the_release_before_versioning_run_in_one_go(v0_store, caplog):
    steps = []

    def to_v2(tx):
        steps.append(2)
        _to_v2(tx)

    with caplog.at_level(logging.INFO, logger="smgw_emu.store"):
        StateStore(v0_store, migrations={**MIGRATIONS, 2: to_v2}).close()
    db = v0_store / StateStore.FILE_NAME
    assert steps == [2] and (_pragma(db, "user_version"), _meta_version(db)) == (2, "2")
    assert [r.getMessage() for r in caplog.records] == [
        f"state store {db} migrated from schema version 0 (the release before versioning) to 2"]


def _failing_v2(tx) -> None:
    _to_v2(tx)  # writes first: DDL and data, all of it must be rolled back
    tx.execute("DELETE FROM log")
    raise RuntimeError("planted failure\nsecond line")


def test_a_failing_migration_leaves_version_and_data_unchanged(tmp_path):
    state = _v1_store(tmp_path)
    db = state / StateStore.FILE_NAME
    with pytest.raises(StoreError) as info:
        StateStore(state, migrations={**MIGRATIONS, 2: _failing_v2})
    message = _one_line_error(info)
    assert str(db) in message
    assert "from schema version 1 to 2: step 2 failed (RuntimeError: planted failure second line)" in message
    assert "unchanged, still version 1" in message
    assert (_pragma(db, "user_version"), _meta_version(db)) == (1, "1")
    assert "meter_names" not in _tables(db)
    store = StateStore(state)
    try:
        assert store.schema_version == 1 and fixture.check(store) == []
    finally:
        store.close()


def test_a_failing_later_step_also_undoes_the_earlier_steps(v0_store):
    """0 -> 1 (the stamp) and 1 -> 2 are one transaction: when 2 fails the file is still version 0."""
    db = v0_store / StateStore.FILE_NAME
    with pytest.raises(StoreError, match="from schema version 0 to 2: step 2 failed.*still version 0"):
        StateStore(v0_store, migrations={**MIGRATIONS, 2: _failing_v2})
    assert (_pragma(db, "user_version"), _meta_version(db)) == (0, "1")
    assert _tables(db) == V1_TABLES
    store = StateStore(v0_store)  # and it still migrates normally afterwards
    try:
        assert store.schema_version == SCHEMA_VERSION and fixture.check(store) == []
    finally:
        store.close()


# -- refused files: one line, the file left as it is ------------------------------------------------


def test_newer_version_refused(tmp_path):
    StateStore(tmp_path, migrations={**MIGRATIONS, 2: _to_v2}).close()  # as a later release writes it
    db = tmp_path / StateStore.FILE_NAME
    before = _sha(db)
    with pytest.raises(StoreError) as info:
        StateStore(tmp_path)
    assert _one_line_error(info) == (
        f"{db} has schema version 2, newer than this smgw-emu supports (up to {SCHEMA_VERSION}): "
        "written by a later release; not opened")
    assert _sha(db) == before and _pragma(db, "user_version") == 2


def test_non_store_sqlite_file_refused_and_left_alone(tmp_path):
    db = tmp_path / StateStore.FILE_NAME
    _write(db, "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)", "INSERT INTO notes (text) VALUES ('mine')")
    before = _sha(db)
    with pytest.raises(StoreError) as info:
        StateStore(tmp_path)
    assert _one_line_error(info) == (
        f"{db} is not a smgw-emu state store (no schema version in a meta table); not opened")
    assert _sha(db) == before
    assert _pragma(db, "journal_mode") == "delete"  # not switched to WAL either
    assert sorted(p.name for p in tmp_path.iterdir()) == [StateStore.FILE_NAME]


def test_sqlite_file_of_another_program_with_a_user_version_refused(tmp_path):
    db = tmp_path / StateStore.FILE_NAME
    _write(db, "CREATE TABLE settings (k TEXT, v TEXT)", "PRAGMA user_version=7")
    with pytest.raises(StoreError) as info:
        StateStore(tmp_path)
    assert _one_line_error(info) == (
        f"{db} is not a smgw-emu state store (user_version 7, no schema version in a meta table); not opened")
    assert _pragma(db, "user_version") == 7


def test_unversioned_store_with_tables_missing_refused(v0_store):
    db = v0_store / StateStore.FILE_NAME
    _write(db, "DROP TABLE nonces", "DROP TABLE firmware")
    with pytest.raises(StoreError) as info:
        StateStore(v0_store)
    assert _one_line_error(info) == (f"{db} is not a smgw-emu state store of a known version "
                                     "(no user_version, tables missing: firmware, nonces); not opened")
    assert _pragma(db, "user_version") == 0


def test_unversioned_store_with_another_meta_version_refused(v0_store):
    db = v0_store / StateStore.FILE_NAME
    _write(db, "UPDATE meta SET value='3' WHERE key='schema_version'")
    with pytest.raises(StoreError, match=r"not a smgw-emu state store of a known version \(no user_version, "
                                         r"schema version '3' in meta\)"):
        StateStore(v0_store)


def test_header_and_meta_disagreeing_refused(tmp_path):
    StateStore(tmp_path).close()
    db = tmp_path / StateStore.FILE_NAME
    _write(db, "UPDATE meta SET value='9' WHERE key='schema_version'")
    with pytest.raises(StoreError) as info:
        StateStore(tmp_path)
    assert _one_line_error(info) == (f"{db} is damaged: schema version 1 in its header but '9' in its meta table;"
                                     " not opened")


def test_non_sqlite_file_refused_and_left_alone(tmp_path):
    db = tmp_path / StateStore.FILE_NAME
    db.write_bytes(b"PK\x03\x04 not a database, a zip perhaps " * 200)
    before = _sha(db)
    with pytest.raises(StoreError) as info:
        StateStore(tmp_path)
    assert _one_line_error(info) == f"cannot open state database {db}: file is not a database"
    assert _sha(db) == before


def test_empty_file_is_a_new_store(tmp_path):
    (tmp_path / StateStore.FILE_NAME).write_bytes(b"")
    store = StateStore(tmp_path)
    try:
        assert store.schema_version == SCHEMA_VERSION and store.count("log") == 0
    finally:
        store.close()
