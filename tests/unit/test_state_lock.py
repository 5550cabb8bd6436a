"""store/lock.py: one holder per state directory (flock), the holder's PID in the lock file."""

from __future__ import annotations

import os

import pytest

from smgw_emu.store.lock import LOCK_FILE_NAME, StateDirBusy, StateDirLock, StateDirLockError


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    state = tmp_path / "state"
    with StateDirLock(state) as first:  # creates the directory
        assert first.held and (state / LOCK_FILE_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(StateDirBusy) as refused:
            StateDirLock(state).acquire()  # flock: another open file description, so refused in-process too
        assert refused.value.pid == os.getpid() and refused.value.directory == state
        assert f"PID {os.getpid()}" in str(refused.value) and str(state) in str(refused.value)
    assert (state / LOCK_FILE_NAME).read_text() == ""  # released: no PID of a former holder
    with StateDirLock(state):
        pass


def test_a_stale_pid_does_not_hold_the_directory(tmp_path):
    (tmp_path / LOCK_FILE_NAME).write_text("999999999\n")  # left by a killed holder
    with StateDirLock(tmp_path):
        assert (tmp_path / LOCK_FILE_NAME).read_text() == f"{os.getpid()}\n"


def test_a_state_directory_that_cannot_be_made_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StateDirLockError, match="cannot lock state directory .*a-file/state"):
        StateDirLock(blocker / "state").acquire()
