"""StateStore against a real SQLite file in tmp_path."""

from __future__ import annotations

import sqlite3

import pytest

from smgw_emu.store import LOG_NAMES, SCHEMA_VERSION, StateStore, StoreError

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


@pytest.fixture
def store(tmp_path):
    s = StateStore(tmp_path / "state")
    yield s
    s.close()


def _log(tx, log="system", **kw):
    args = dict(level=1, outcome=0, ts=NOW, event="ev", message="msg")
    args.update(kw)
    return tx.append_log(log, **args)


# -- schema ------------------------------------------------------------------------------------


def test_schema_created_with_version(tmp_path):
    s = StateStore(tmp_path / "new" / "deeper")  # parents are created
    s.close()
    db = tmp_path / "new" / "deeper" / StateStore.FILE_NAME
    assert db.is_file()
    c = sqlite3.connect(db)
    try:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"meta", "ldevs", "objects", "key_banks", "log", "meter_values", "firmware",
                "outbox", "nonces", "kv"} <= tables
        assert c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        c.close()


def test_pragmas_for_durability(store):
    assert store._c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: SIGKILL-safe in WAL
    assert store._c.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_reopen_existing_store_keeps_single_version_row(tmp_path):
    for _ in range(3):
        StateStore(tmp_path).close()
    c = sqlite3.connect(tmp_path / StateStore.FILE_NAME)
    try:
        assert c.execute("SELECT COUNT(*) FROM meta WHERE key='schema_version'").fetchone()[0] == 1
    finally:
        c.close()


def test_wrong_schema_version_refused(tmp_path):
    StateStore(tmp_path).close()
    c = sqlite3.connect(tmp_path / StateStore.FILE_NAME)
    c.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    c.commit()
    c.close()
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this smgw-emu supports "
                                         rf"\(up to {SCHEMA_VERSION}\)"):
        StateStore(tmp_path)
    # The refused open must not have rewritten the version (more in test_store_migrations.py).
    c = sqlite3.connect(tmp_path / StateStore.FILE_NAME)
    try:
        assert c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION + 1),)
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    finally:
        c.close()


def test_not_a_database_refused(tmp_path):
    (tmp_path / StateStore.FILE_NAME).write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="cannot open state database"):
        StateStore(tmp_path)


def test_unwritable_state_dir_refused(tmp_path):
    # Tests run as root, so chmod does not stop us; a path below a regular FILE really fails.
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "sub"
    with pytest.raises(StoreError) as info:
        StateStore(target)
    msg = str(info.value)
    assert "cannot create state directory" in msg
    assert str(target) in msg
    assert "Not a directory" in msg


def test_state_dir_is_a_file_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create state directory"):
        StateStore(tmp_path / "file")


# -- COSEM objects / LDEVs -----------------------------------------------------------------------


def test_put_and_get_objects(store):
    with store.transaction() as tx:
        tx.put_object("tafprofile", "p1", 7, "0.0.98.1.0.255", {"2": [1, 2], "name": "x"}, NOW)
        tx.put_object("tafprofile", "p1", 1, "0.0.96.1.0.255", {"2": "abc"}, NOW)
        tx.put_object("meter", "m1", 3, "1.0.1.8.0.255", {"2": 42}, NOW)
    assert store.ldevs() == [("meter", "m1"), ("tafprofile", "p1")]
    objs = store.objects("tafprofile", "p1")
    assert [(o.class_id, o.obis) for o in objs] == [(1, "0.0.96.1.0.255"), (7, "0.0.98.1.0.255")]
    assert objs[1].attributes == {"2": [1, 2], "name": "x"}
    assert objs[1].updated_at == NOW
    assert len(store.objects()) == 3
    assert [o.ldev_id for o in store.objects("meter")] == ["m1"]

    # upsert replaces attributes and updated_at, keeps one row
    with store.transaction() as tx:
        tx.put_object("tafprofile", "p1", 7, "0.0.98.1.0.255", {"2": []}, LATER)
    o = [o for o in store.objects("tafprofile", "p1") if o.class_id == 7]
    assert len(o) == 1 and o[0].attributes == {"2": []} and o[0].updated_at == LATER
    assert store.count("objects") == 3

    with store.transaction() as tx:
        assert tx.delete_object("tafprofile", "p1", 7, "0.0.98.1.0.255") is True
        assert tx.delete_object("tafprofile", "p1", 7, "0.0.98.1.0.255") is False
    assert store.count("objects") == 2
    assert store.ldevs() == [("meter", "m1"), ("tafprofile", "p1")]  # the LDEV stays


def test_put_ldev_is_idempotent(store):
    with store.transaction() as tx:
        tx.put_ldev("tafprofile", "p1", NOW)
        tx.put_ldev("tafprofile", "p1", LATER)
    assert store.ldevs() == [("tafprofile", "p1")]
    created = store._c.execute("SELECT created_at FROM ldevs").fetchone()[0]
    assert created == NOW


def test_delete_ldev_cascades_its_objects(store):
    with store.transaction() as tx:
        for i in range(3):
            tx.put_object("tafprofile", "p1", 7, f"0.0.98.1.{i}.255", {"i": i}, NOW)
        tx.put_object("tafprofile", "p2", 7, "0.0.98.1.0.255", {}, NOW)
    assert store.count("objects") == 4
    with store.transaction() as tx:
        assert tx.delete_ldev("tafprofile", "p1") is True
        assert tx.delete_ldev("tafprofile", "p1") is False
    assert store.ldevs() == [("tafprofile", "p2")]
    assert store.objects("tafprofile", "p1") == []
    assert store.count("objects") == 1


def test_object_without_ldev_is_refused_by_foreign_key(store):
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as tx:
            tx.execute(
                "INSERT INTO objects (ldev_kind, ldev_id, class_id, obis, attributes, updated_at)"
                " VALUES ('x', 'nope', 1, 'o', '{}', ?)", (NOW,))
    assert store.count("objects") == 0


# -- logs -----------------------------------------------------------------------------------------


def test_logs_three_names(store):
    assert LOG_NAMES == ("system", "consumer", "calibration")
    with store.transaction() as tx:
        first = _log(tx, "system", event="boot", details={"a": 1})
        _log(tx, "consumer", event="c1", parent=first)
        _log(tx, "calibration", event="k1", level=3, outcome=2)
        _log(tx, "system", event="second")
    sys_log = store.logs("system")
    assert [e.event for e in sys_log] == ["boot", "second"]
    assert sys_log[0].details == {"a": 1} and sys_log[0].record == first and sys_log[0].parent is None
    assert sys_log[1].details == {}
    (c,) = store.logs("consumer")
    assert c.parent == first and c.log == "consumer"
    (k,) = store.logs("calibration")
    assert (k.level, k.outcome, k.ts, k.message) == (3, 2, NOW, "msg")
    assert [e.event for e in store.logs("system", since_record=first)] == ["second"]
    assert len(store.logs("system", limit=1)) == 1
    assert store.logs() == sys_log  # default is the system log


def test_unknown_log_refused_and_rolled_back(store):
    with pytest.raises(ValueError, match="unknown log"):
        with store.transaction() as tx:
            _log(tx, "system")
            _log(tx, "audit")
    assert store.count("log") == 0


# -- outbox ---------------------------------------------------------------------------------------


def test_outbox_enqueue_pending_attempt_acknowledge(store):
    with store.transaction() as tx:
        a = tx.enqueue("gwa", "info-report", b"one", NOW)
        b = tx.enqueue("gwa", "info-report", b"\x00two", NOW)
        c = tx.enqueue("other", "x", b"three", NOW)
    assert a < b
    items = store.pending("gwa")
    assert [(i.id, i.body, i.attempts, i.last_error) for i in items] == [(a, b"one", 0, ""), (b, b"\x00two", 0, "")]
    assert items[0].channel == "gwa" and items[0].kind == "info-report" and items[0].created_at == NOW
    assert len(store.pending("gwa", limit=1)) == 1
    assert [i.id for i in store.pending("other")] == [c]

    store.record_attempt(a, "timeout")
    store.record_attempt(a, "refused")
    first = store.pending("gwa")[0]
    assert (first.attempts, first.last_error) == (2, "refused")

    store.acknowledge(a)
    assert [i.id for i in store.pending("gwa")] == [b]
    store.acknowledge(a)  # acknowledging twice is harmless
    assert store.count("outbox") == 2


# -- key banks, kv, meter values, firmware, nonces -----------------------------------------------


def test_key_banks(store):
    with store.transaction() as tx:
        tx.put_key_bank("A", "active", {"k": "00ff"}, NOW)
        tx.put_key_bank("B", "pending", {}, NOW)
    assert store.key_banks() == {"A": ("active", {"k": "00ff"}), "B": ("pending", {})}
    with store.transaction() as tx:
        tx.put_key_bank("A", "retired", {"k": "11"}, LATER)
    assert store.key_banks()["A"] == ("retired", {"k": "11"})
    assert store.count("key_banks") == 2


def test_kv(store):
    assert store.get("missing") is None
    assert store.get("missing", 5) == 5
    with store.transaction() as tx:
        tx.set("n", 1)
        tx.set("cfg", {"a": [1, 2], "b": None})
        tx.set("n", 2)
    assert store.get("n") == 2
    assert store.get("cfg") == {"a": [1, 2], "b": None}
    assert store.count("kv") == 2


def test_meter_values_range_query(store):
    with store.transaction() as tx:
        for h in range(6):
            tx.put_meter_value("m1", "1.8.0", f"2026-01-01T0{h}:00:00Z", str(100 + h), "ok")
        tx.put_meter_value("m2", "1.8.0", "2026-01-01T02:00:00Z", "999", "ok")
        tx.put_meter_value("m1", "2.8.0", "2026-01-01T02:00:00Z", "888", "ok")
        tx.put_meter_value("m1", "1.8.0", "2026-01-01T03:00:00Z", "103b", "corrected")  # replace
    all_m1 = store.meter_values("m1", "1.8.0")
    assert [v for _, v, _ in all_m1] == ["100", "101", "102", "103b", "104", "105"]
    # from inclusive, to exclusive
    rng = store.meter_values("m1", "1.8.0", "2026-01-01T02:00:00Z", "2026-01-01T04:00:00Z")
    assert rng == [("2026-01-01T02:00:00Z", "102", "ok"), ("2026-01-01T03:00:00Z", "103b", "corrected")]
    assert store.meter_values("m1", "1.8.0", "2026-01-02") == []
    assert store.meter_values("m2", "1.8.0") == [("2026-01-01T02:00:00Z", "999", "ok")]


def test_firmware(store):
    with store.transaction() as tx:
        tx.put_firmware("active", "1.0.0", "running", {"hash": "ab"}, NOW)
        tx.put_firmware("staged", "1.1.0", "verified", {}, NOW)
    assert store.firmware() == {"active": ("1.0.0", "running", {"hash": "ab"}), "staged": ("1.1.0", "verified", {})}
    with store.transaction() as tx:
        tx.put_firmware("active", "1.1.0", "running", {}, LATER)
    assert store.firmware()["active"] == ("1.1.0", "running", {})
    assert store.count("firmware") == 2


def test_nonces_remember_and_forget(store):
    store.remember_nonce(b"n1", "2026-01-01T00:00:00Z", "2025-12-31T00:00:00Z")
    store.remember_nonce(b"n2", "2026-01-01T01:00:00Z", "2025-12-31T00:00:00Z")
    assert sorted(store.nonces("")) == [(b"n1", "2026-01-01T00:00:00Z"), (b"n2", "2026-01-01T01:00:00Z")]
    assert store.nonces("2026-01-01T00:30:00Z") == [(b"n2", "2026-01-01T01:00:00Z")]
    # remembering n3 forgets every nonce that expired before "now", in the same transaction
    store.remember_nonce(b"n3", "2026-01-01T02:00:00Z", "2026-01-01T00:30:00Z")
    assert sorted(n for n, _ in store.nonces("")) == [b"n2", b"n3"]
    # seeing a nonce again refreshes it
    store.remember_nonce(b"n2", "2026-01-01T03:00:00Z", "2026-01-01T00:30:00Z")
    assert dict(store.nonces(""))[b"n2"] == "2026-01-01T03:00:00Z"
    assert store.count("nonces") == 2


def test_count_refuses_unknown_table(store):
    with pytest.raises(ValueError):
        store.count("meta; DROP TABLE kv")


# -- transactions ------------------------------------------------------------------------------


def test_transaction_that_raises_rolls_back_all_writes(store):
    with store.transaction() as tx:
        tx.set("keep", 1)
        tx.put_object("tafprofile", "p0", 7, "o", {}, NOW)
    before = {t: store.count(t) for t in ("ldevs", "objects", "key_banks", "log", "meter_values",
                                           "firmware", "outbox", "nonces", "kv")}

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with store.transaction() as tx:
            tx.put_object("tafprofile", "p1", 7, "o", {"x": 1}, NOW)
            assert tx.delete_ldev("tafprofile", "p0")
            tx.put_key_bank("A", "active", {}, NOW)
            _log(tx)
            tx.put_meter_value("m", "o", NOW, "1", "ok")
            tx.put_firmware("active", "1", "ok", {}, NOW)
            tx.enqueue("gwa", "k", b"x", NOW)
            tx.execute("INSERT INTO nonces (nonce, expires_at) VALUES (?, ?)", (b"n", NOW))
            tx.set("keep", 2)
            tx.set("new", 3)
            raise Boom
    after = {t: store.count(t) for t in before}
    assert after == before
    assert store.get("keep") == 1 and store.get("new") is None
    assert store.ldevs() == [("tafprofile", "p0")]
    assert not store._c.in_transaction
    # the store is still usable after the rollback
    with store.transaction() as tx:
        tx.set("keep", 4)
    assert store.get("keep") == 4


def test_sql_error_mid_transaction_rolls_back(store):
    with pytest.raises(sqlite3.OperationalError):
        with store.transaction() as tx:
            tx.set("a", 1)
            tx.execute("INSERT INTO no_such_table VALUES (1)")
    assert store.get("a") is None
    with store.transaction() as tx:
        tx.set("a", 2)
    assert store.get("a") == 2


def test_failed_commit_leaves_store_usable(tmp_path):
    """A COMMIT refused by SQLite (here: a deferred foreign key) must not leave a dangling transaction."""
    s = StateStore(tmp_path)
    try:
        s._c.execute("PRAGMA defer_foreign_keys=ON")  # only applies to the next transaction
        with pytest.raises(sqlite3.IntegrityError):
            with s.transaction() as tx:
                tx.set("a", 1)
                tx.execute(
                    "INSERT INTO objects (ldev_kind, ldev_id, class_id, obis, attributes, updated_at)"
                    " VALUES ('x', 'nope', 1, 'o', '{}', ?)", (NOW,))
        assert not s._c.in_transaction
        assert s.get("a") is None
        with s.transaction() as tx:
            tx.set("a", 2)
        assert s.get("a") == 2
    finally:
        s.close()


def test_committed_change_visible_to_other_connection(tmp_path):
    s = StateStore(tmp_path)
    other = StateStore(tmp_path)
    try:
        with s.transaction() as tx:
            tx.set("x", 1)
            assert other.get("x") is None  # not visible before commit
        assert other.get("x") == 1
    finally:
        s.close()
        other.close()


def test_state_survives_close_and_reopen(tmp_path):
    s = StateStore(tmp_path)
    with s.transaction() as tx:
        tx.put_object("tafprofile", "p1", 7, "o", {"n": 1}, NOW)
        tx.put_key_bank("A", "active", {"k": 1}, NOW)
        _log(tx, "calibration", details={"d": 1})
        item = tx.enqueue("gwa", "r", b"body", NOW)
        tx.set("k", "v")
        tx.put_meter_value("m", "o", NOW, "1", "ok")
        tx.put_firmware("active", "1", "ok", {}, NOW)
    s.remember_nonce(b"n", NOW, "")
    s.record_attempt(item, "err")
    s.close()

    r = StateStore(tmp_path)
    try:
        assert r.ldevs() == [("tafprofile", "p1")]
        assert r.objects()[0].attributes == {"n": 1}
        assert r.key_banks() == {"A": ("active", {"k": 1})}
        assert r.logs("calibration")[0].details == {"d": 1}
        (p,) = r.pending("gwa")
        assert (p.id, p.body, p.attempts, p.last_error) == (item, b"body", 1, "err")
        assert r.get("k") == "v"
        assert r.meter_values("m", "o") == [(NOW, "1", "ok")]
        assert r.firmware() == {"active": ("1", "ok", {})}
        assert r.nonces("") == [(b"n", NOW)]
        # AUTOINCREMENT ids are not reused after a restart
        r.acknowledge(item)
        with r.transaction() as tx:
            assert tx.enqueue("gwa", "r", b"b2", NOW) > item
    finally:
        r.close()


def test_power_loss_durability_uses_full_sync(tmp_path):
    store = StateStore(tmp_path / "full", durability="power-loss")
    try:
        assert store._c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


def test_unknown_durability_refused(tmp_path):
    with pytest.raises(StoreError, match="durability"):
        StateStore(tmp_path / "x", durability="sometimes")
