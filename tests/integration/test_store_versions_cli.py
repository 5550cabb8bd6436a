"""`smgw-emu run` on a state store it must not use: one line `smgw-emu: ...`, exit 2, no traceback.

The store's refusals themselves are tested in tests/unit/test_store_migrations.py; here only that
they reach the user as the CLI's one-line error (StoreError -> GatewayStartError -> CliError)."""

from __future__ import annotations

import sqlite3

from smgw_emu.store import MIGRATIONS, SCHEMA_VERSION, StateStore
from tests.integration.test_cli import assert_one_clear_error, run, write_config


def _config(tmp_path, pki):
    state = tmp_path / "state"
    path = write_config(tmp_path, pki.root, **{'state_dir = "state"': f'state_dir = "{state}"'})
    return state, path


def test_run_refuses_a_store_of_a_later_release_in_one_line(tmp_path, pki):
    state, path = _config(tmp_path, pki)
    later = SCHEMA_VERSION + 1
    StateStore(state, migrations={**MIGRATIONS, later: lambda tx: None}).close()
    db = state / StateStore.FILE_NAME
    assert_one_clear_error(run("run", "--config", str(path)), str(db), f"schema version {later}",
                           f"up to {SCHEMA_VERSION}")


def test_run_refuses_a_file_that_is_not_a_state_store_in_one_line(tmp_path, pki):
    state, path = _config(tmp_path, pki)
    state.mkdir()
    c = sqlite3.connect(state / StateStore.FILE_NAME)
    c.execute("CREATE TABLE notes (text TEXT)")
    c.commit()
    c.close()
    assert_one_clear_error(run("run", "--config", str(path)), "is not a smgw-emu state store")
