"""The store survives SIGKILL at random moments during a stream of writes.

Requirement: "A test kills the gateway process with SIGKILL at random moments during a stream of
writes (at least 50 trials) and proves that after restart the state is always either before or
after each change, never mixed, and that nothing acknowledged is lost."

A real child process (tests/integration/store_writer.py, run with sys.executable) performs
numbered multi-table changes, one transaction each, and ACKs each after commit. The parent
SIGKILLs it at a random moment, reopens the store (a real restart) and checks the invariants
(see `store_writer.check_state`). The SAME state directory is carried across all trials, so the
database keeps growing through the crashes and every child resumes from what survived.

The random delays come from a seeded `random.Random`; set SMGW_CRASH_SEED to replay a run's
delays (the seed is printed, and is part of every failure message). bench/crash_campaign.py runs
the same thing for hundreds of trials.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import store_writer  # noqa: E402

from smgw_emu.store import StateStore  # noqa: E402

TRIALS = 50  # kills after READY, i.e. during the stream of writes
EARLY_TRIALS = 6  # extra kills at a random moment after spawn (start-up / recovery)


def _seed() -> int:
    env = os.environ.get("SMGW_CRASH_SEED")
    return int(env) if env else random.SystemRandom().randrange(2**32)


def test_sigkill_during_writes_never_mixes_and_never_loses_acks(tmp_path):
    seed = _seed()
    print(f"crash test seed: SMGW_CRASH_SEED={seed}")
    rng = random.Random(seed)
    state = tmp_path / "state"
    started = time.monotonic()

    plan = [("after-ready", rng.uniform(0.003, 0.150)) for _ in range(TRIALS)]
    plan += [("early", rng.uniform(0.0, 0.120)) for _ in range(EARLY_TRIALS)]
    rng.shuffle(plan)

    last = 0
    killed_mid_stream = 0
    mid_commit_kills = 0  # kills that left a commit not yet ACKed (L > max ACK)
    for trial, (mode, delay) in enumerate(plan):
        ctx = f"seed={seed} trial={trial} mode={mode} delay={delay * 1000:.1f}ms last={last}"
        res = store_writer.run_trial(state, delay, before_ready=(mode == "early"))
        assert res.garbage == [], f"{ctx}: child printed unexpected lines {res.garbage[:5]}\n{res.stderr}"
        if res.ready_last is not None:
            assert res.ready_last == last, f"{ctx}: child resumed from {res.ready_last}, not {last}"
            assert res.acks == list(range(last + 1, last + 1 + len(res.acks))), f"{ctx}: ACKs not consecutive"
        else:
            assert res.acks == [], ctx
        if mode == "after-ready":
            assert res.killed, f"{ctx}: child was not killed by SIGKILL (rc={res.returncode})\n{res.stderr}"
            assert res.ready_last is not None, f"{ctx}: child never became ready\n{res.stderr}"
            killed_mid_stream += 1
        elif not res.killed:  # an early kill can only miss if the child died on its own: a bug
            pytest.fail(f"{ctx}: child exited with rc={res.returncode} before the kill\n{res.stderr}")

        L, violations = store_writer.check_state(state, acked=res.max_ack, previous_last=last)
        assert violations == [], f"{ctx}: acked={res.max_ack} L={L}: " + "; ".join(violations)
        # At most one commit (the one being ACKed when the kill came) can be ahead of the ACKs.
        base = res.max_ack if res.acks else last
        assert L in (base, base + 1), f"{ctx}: L={L}, but the last ACK was {base}"
        mid_commit_kills += L > base
        last = L

    elapsed = time.monotonic() - started
    print(f"{len(plan)} trials ({killed_mid_stream} mid-stream kills, {mid_commit_kills} between commit and ACK),"
          f" reached change {last} in {elapsed:.1f}s")
    assert killed_mid_stream >= 50
    # The kills really landed in the middle of a stream of writes: the DB grew through the crashes.
    assert last >= TRIALS, f"seed={seed}: only {last} changes in {TRIALS} trials; the writer barely ran"


def test_writer_without_kill_completes_and_resumes(tmp_path):
    state = tmp_path / "state"
    first = store_writer.run_trial(state, None, max_changes=15)
    assert first.returncode == 0, first.stderr
    assert (first.ready_last, first.acks, first.garbage) == (0, list(range(1, 16)), ["DONE"])
    second = store_writer.run_trial(state, None, max_changes=5)
    assert (second.ready_last, second.acks) == (15, list(range(16, 21)))
    L, violations = store_writer.check_state(state, acked=20, previous_last=15)
    assert (L, violations) == (20, [])
    s = StateStore(state)
    try:
        # change 7 deleted p2, change 14 deleted p9: their LDEVs and objects are gone
        ids = {i for _, i in s.ldevs()}
        assert "p2" not in ids and "p9" not in ids and {"p1", "p3", "p20"} <= ids
        assert s.objects("tafprofile", "p2") == [] and len(s.objects("tafprofile", "p3")) == 2
    finally:
        s.close()


# -- the checker itself finds torn and lost changes (deterministic negative controls) -----------


def _consistent(state, upto):
    s = StateStore(state)
    try:
        for n in range(1, upto + 1):
            store_writer.apply_change(s, n)
    finally:
        s.close()


def test_checker_accepts_consistent_state(tmp_path):
    _consistent(tmp_path, 10)
    assert store_writer.check_state(tmp_path, acked=10, previous_last=9) == (10, [])
    for since in (1, 2, 8, 10, 11, 50):
        assert store_writer.check_state(tmp_path, since=since) == (10, [])


def test_checker_tail_mode_still_counts_old_rows(tmp_path):
    _consistent(tmp_path, 20)
    s = StateStore(tmp_path)
    try:
        with s.transaction() as tx:  # damage an old change, outside the tail window
            tx.execute("DELETE FROM outbox WHERE body=?", (b"3",))
    finally:
        s.close()
    L, violations = store_writer.check_state(tmp_path, since=15)
    assert L == 20 and any("outbox" in v for v in violations)


@pytest.mark.parametrize("since", [1, 7], ids=["full", "tail"])
@pytest.mark.parametrize("torn", ["profile-only", "no-log", "no-outbox", "no-delete", "counter-only"])
def test_checker_detects_a_change_split_into_two_commits(tmp_path, torn, since):
    _consistent(tmp_path, 6)
    n = 7  # a change that also deletes p2
    s = StateStore(tmp_path)
    try:
        with s.transaction() as tx:
            if torn != "counter-only":
                for class_id, obis in store_writer.OBJECTS:
                    tx.put_object(store_writer.KIND, f"p{n}", class_id, obis, {"n": n}, store_writer.NOW)
            if torn != "profile-only":
                tx.set("last_change", n)
            if torn not in ("no-log", "profile-only", "counter-only"):
                tx.append_log("system", level=1, outcome=0, ts="t", event=store_writer.EVENT, message="",
                              details={"change": n})
            if torn not in ("no-outbox", "profile-only", "counter-only"):
                tx.enqueue(store_writer.CHANNEL, "change", f"{n}".encode(), store_writer.NOW)
            if torn not in ("no-delete", "profile-only", "counter-only"):
                tx.delete_ldev(store_writer.KIND, "p2")
    finally:
        s.close()
    L, violations = store_writer.check_state(tmp_path, since=since)
    assert violations, f"{torn}: a torn change {n} went unnoticed (L={L})"


def test_checker_detects_lost_acknowledged_change(tmp_path):
    _consistent(tmp_path, 5)
    L, violations = store_writer.check_state(tmp_path, acked=6)
    assert L == 5 and any("lost" in v for v in violations)
    L, violations = store_writer.check_state(tmp_path, previous_last=8)
    assert any("went back" in v for v in violations)
