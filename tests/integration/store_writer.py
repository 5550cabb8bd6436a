"""Crash-safety harness for the state store.

Run as a script, this is the *child*: it opens `StateStore(state_dir)`, prints ``READY <last>``
and then performs logical changes n = last+1, last+2, ... until it is killed (or a safety limit
is reached). Each change is ONE `store.transaction()` touching several tables:

* `put_object` of two COSEM objects of the profile LDEV ``('tafprofile', f'p{n}')`` whose
  attributes carry n,
* the shared kv counter ``last_change = n``,
* a system log entry with details ``{'change': n}``,
* an outbox item on channel ``crash`` with body ``f'{n}'``,
* when ``n % 7 == 0``: the deletion of the older LDEV ``p{n-5}`` (its objects cascade).

After each commit it writes ``ACK n`` to stdout and flushes: an ACK means "durably committed".

Imported as a module (by tests/integration/test_store_crash.py and bench/crash_campaign.py), it
provides `run_trial()` (spawn a child, SIGKILL it at a chosen moment, collect the ACKs) and
`check_state()` (reopen the store and check that every change 1..L is complete, nothing of a
change > L exists, and no ACKed change is lost).

The child imports only `smgw_emu.store` (not the whole app) so that a trial costs ~0.1 s.
"""

from __future__ import annotations

import os
import sys

from smgw_emu.store import StateStore

KIND = "tafprofile"
CHANNEL = "crash"
EVENT = "crash-change"
NOW = "2026-01-01T00:00:00Z"
OBJECTS = ((7, "0.0.98.1.0.255"), (1, "0.0.96.1.0.255"))  # two objects per profile LDEV
DELETE_EVERY = 7
DELETE_LAG = 5


def deleted_by(n: int) -> int | None:
    """The LDEV number that change n deletes, if any."""
    return n - DELETE_LAG if n % DELETE_EVERY == 0 and n > DELETE_LAG else None


def apply_change(store: StateStore, n: int) -> None:
    """Logical change n, as one transaction."""
    with store.transaction() as tx:
        for class_id, obis in OBJECTS:
            tx.put_object(KIND, f"p{n}", class_id, obis, {"n": n, "class": class_id, "pad": "x" * 64}, NOW)
        tx.set("last_change", n)
        tx.append_log("system", level=1, outcome=0, ts=NOW, event=EVENT, message=f"change {n}",
                      details={"change": n})
        tx.enqueue(CHANNEL, "change", f"{n}".encode(), NOW)
        old = deleted_by(n)
        if old is not None:
            tx.delete_ldev(KIND, f"p{old}")


def child_main(argv: list[str]) -> int:
    import time

    state_dir = argv[0]
    max_changes = int(argv[1]) if len(argv) > 1 else 100_000
    max_seconds = float(argv[2]) if len(argv) > 2 else 20.0  # never outlive a crashed parent for long
    store = StateStore(state_dir)
    last = int(store.get("last_change", 0))
    out = sys.stdout
    out.write(f"READY {last}\n")
    out.flush()
    deadline = time.monotonic() + max_seconds
    for n in range(last + 1, last + 1 + max_changes):
        apply_change(store, n)
        out.write(f"ACK {n}\n")
        out.flush()
        if time.monotonic() > deadline:
            break
    store.close()
    out.write("DONE\n")
    out.flush()
    return 0


# -- parent side --------------------------------------------------------------------------------


class TrialResult:
    def __init__(self) -> None:
        self.ready_last: int | None = None  # the `last` the child resumed from (None: killed before READY)
        self.acks: list[int] = []
        self.killed = False  # SIGKILL actually delivered while the child was running
        self.returncode: int | None = None
        self.stderr = ""
        self.garbage: list[str] = []  # complete lines that are neither READY nor ACK

    @property
    def max_ack(self) -> int:
        return max(self.acks, default=0)


def run_trial(state_dir: str | os.PathLike, delay: float | None, *, before_ready: bool = False,
              max_changes: int | None = None, python: str = sys.executable,
              timeout: float = 30.0) -> TrialResult:
    """Start a child writer on `state_dir` and SIGKILL it `delay` seconds after it said READY
    (or, with `before_ready`, `delay` seconds after spawn: the kill may land during start-up,
    schema creation or WAL recovery). `delay=None`: no kill, let the child finish `max_changes`."""
    import signal
    import subprocess
    import threading
    import time

    res = TrialResult()
    ready = threading.Event()
    proc = subprocess.Popen(
        [python, os.path.abspath(__file__), os.fspath(state_dir)]
        + ([str(max_changes)] if max_changes is not None else []),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    err_chunks: list[bytes] = []

    def read_stdout() -> None:
        buf = b""
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:  # only complete, newline-terminated lines count
                line = raw.decode(errors="replace")
                if line.startswith("ACK "):
                    res.acks.append(int(line[4:]))
                elif line.startswith("READY "):
                    res.ready_last = int(line[6:])
                    ready.set()
                else:
                    res.garbage.append(line)
        ready.set()  # EOF: the child is gone

    def read_stderr() -> None:
        assert proc.stderr is not None
        err_chunks.append(proc.stderr.read())

    readers = [threading.Thread(target=read_stdout, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for t in readers:
        t.start()

    if not before_ready:
        ready.wait(timeout)
    if delay is not None:
        time.sleep(delay)
    if delay is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        res.killed = True
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - only if SIGKILL did not work
        proc.kill()
        proc.wait()
    for t in readers:
        t.join(timeout)
    res.returncode = proc.returncode
    res.killed = res.killed and proc.returncode == -signal.SIGKILL
    res.stderr = b"".join(err_chunks).decode(errors="replace")
    return res


def check_state(state_dir: str | os.PathLike, acked: int = 0, previous_last: int = 0,
                since: int = 1) -> tuple[int, list[str]]:
    """Reopen the store (a real restart) and check the invariants. Returns (L, violations).

    * L = kv last_change;
    * every change 1..L is complete: exactly one log entry and one outbox item, its LDEV with both
      objects exists unless a change <= L deleted it (and then none of its objects remain);
    * no trace of any change > L: no log entry, outbox item, LDEV or object;
    * nothing acknowledged is lost: acked <= L, and L never goes back (previous_last <= L).

    With `since` > 1 (long campaigns) the row-by-row comparison covers only changes >= since
    (and the LDEVs they may delete); older changes are then covered by exact row counts and
    `PRAGMA integrity_check`. The default is the full check.
    """
    v: list[str] = []
    store = StateStore(state_dir)
    try:
        q = store._c.execute
        integrity = q("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            v.append(f"integrity_check: {integrity}")
        L = int(store.get("last_change", 0))
        if acked > L:
            v.append(f"acknowledged change {acked} lost: last_change is {L}")
        if previous_last > L:
            v.append(f"last_change went back from {previous_last} to {L}")

        since = max(1, min(since, L + 1))
        window = list(range(since, L + 1))
        deleted_total = sum(1 for n in range(1, L + 1) if deleted_by(n) is not None)
        live_total = L - deleted_total

        # Exact counts over the whole history.
        counts = {
            "log": (q("SELECT COUNT(*) FROM log WHERE event=?", (EVENT,)).fetchone()[0], L),
            "outbox": (q("SELECT COUNT(*) FROM outbox WHERE channel=?", (CHANNEL,)).fetchone()[0], L),
            "ldevs": (q("SELECT COUNT(*) FROM ldevs WHERE kind=?", (KIND,)).fetchone()[0], live_total),
            "objects": (q("SELECT COUNT(*) FROM objects WHERE ldev_kind=?", (KIND,)).fetchone()[0],
                        live_total * len(OBJECTS)),
        }
        for table, (got, want) in counts.items():
            if got != want:
                v.append(f"{table}: {got} rows of the test's changes, expected {want} for L={L}")

        # Row by row (bulk reads in SQL: the check runs after every kill on an ever larger DB).
        log_changes = [r[0] for r in q(
            "SELECT json_extract(details, '$.change') FROM log WHERE log='system' AND event=?"
            " AND json_extract(details, '$.change') >= ? ORDER BY record", (EVENT, since))]
        if log_changes != window:
            v.append(f"log changes are not exactly {since}..{L} in order: {_diff(log_changes, window)}")

        bodies = [int(r[0]) for r in q(
            "SELECT body FROM outbox WHERE channel=? AND CAST(body AS INTEGER) >= ? ORDER BY id", (CHANNEL, since))]
        if bodies != window:
            v.append(f"outbox items are not exactly {since}..{L} in order: {_diff(bodies, window)}")

        # LDEVs p{since-DELETE_LAG}.. : only changes >= since can have deleted any of them.
        low = max(1, since - DELETE_LAG)
        expected = set(range(low, L + 1)) - {d for n in window if (d := deleted_by(n)) is not None}
        ldevs = {int(r[0]) for r in q(
            "SELECT substr(id, 2) FROM ldevs WHERE kind=? AND CAST(substr(id, 2) AS INTEGER) >= ?", (KIND, low))}
        if ldevs != expected:
            v.append(f"profile LDEVs: missing {sorted(expected - ldevs)[:10]}, unexpected {sorted(ldevs - expected)[:10]}")

        per_ldev: dict[int, list] = {}
        for ldev_num, class_id, obis, n_attr in q(
            "SELECT substr(ldev_id, 2), class_id, obis, json_extract(attributes, '$.n') FROM objects"
            " WHERE ldev_kind=? AND CAST(substr(ldev_id, 2) AS INTEGER) >= ?", (KIND, low)
        ):
            per_ldev.setdefault(int(ldev_num), []).append((class_id, obis, n_attr))
        want_objects = sorted(OBJECTS)
        bad_objects = []
        for n, objs in per_ldev.items():
            if n not in expected:
                bad_objects.append(f"p{n}: objects without a live LDEV")
            elif sorted(o[:2] for o in objs) != want_objects or any(o[2] != n for o in objs):
                bad_objects.append(f"p{n}: wrong objects {objs}")
        bad_objects += [f"p{n}: objects missing" for n in sorted(expected - per_ldev.keys())]
        if bad_objects:
            v.append(f"objects: {bad_objects[:10]}")
    finally:
        store.close()
    return L, v


def _diff(seen: list, want: list) -> str:
    extra = sorted(set(seen) - set(want))
    missing = sorted(set(want) - set(seen))
    dup = len(seen) - len(set(seen))
    return f"missing {missing[:10]}, beyond/foreign {extra[:10]}, duplicates {dup}"


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
