"""One gateway process per state directory: an exclusive `flock` on `<state_dir>/smgw-emu.lock`.

Taken before anything reads or writes the state (the start-up self test, the database), so a
second `smgw-emu run` on the same directory refuses at once and names the holder. The lock file
holds the holder's PID (for that message only: the flock is the lock). The kernel drops the lock
when its holder ends, however it ends (a SIGKILL too); a stale PID in the file then means nothing
and is overwritten by the next holder. The file is never removed: removing it would let two
processes lock two different files of the same name.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_FILE_NAME", "StateDirBusy", "StateDirLock", "StateDirLockError"]

LOCK_FILE_NAME = "smgw-emu.lock"


class StateDirLockError(Exception):
    """The state directory cannot be locked (it cannot be created or opened)."""


class StateDirBusy(StateDirLockError):
    """Another process holds the state directory's lock."""

    def __init__(self, directory: Path, pid: int | None) -> None:
        self.directory = directory
        self.pid = pid
        holder = f"PID {pid}" if pid is not None else "a process whose PID is not yet written"
        super().__init__(f"state directory {directory} is in use by another gateway ({holder}); "
                         "stop that one first or give this one its own gateway.state_dir")


class StateDirLock:
    """`with StateDirLock(state_dir):` holds the lock for the block (or acquire() / release())."""

    def __init__(self, state_dir: str | os.PathLike) -> None:
        self.directory = Path(os.path.abspath(state_dir))
        self.path = self.directory / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> "StateDirLock":
        if self._fd is not None:
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)  # no O_TRUNC: the holder's PID
        except OSError as exc:
            raise StateDirLockError(f"cannot lock state directory {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StateDirBusy(self.directory, pid) from None
        except OSError as exc:
            os.close(fd)
            raise StateDirLockError(f"cannot lock state directory {self.directory}: {exc.strerror or exc}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise StateDirLockError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no PID of a process that no longer holds it
        except OSError:
            pass
        os.close(fd)  # drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "StateDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
