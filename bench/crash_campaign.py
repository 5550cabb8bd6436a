"""Long SIGKILL campaign against the state store (the suite runs a short version of it).

    .venv/bin/python bench/crash_campaign.py [TRIALS] [--seed N] [--dir PATH] [--max-delay S]
                                             [--early-fraction F] [--keep]

Each trial starts tests/integration/store_writer.py as a child on the SAME state directory,
SIGKILLs it at a random moment (after READY, or for --early-fraction of the trials at a random
moment after spawn, i.e. possibly during start-up / WAL recovery), reopens the store and checks
that every change is all-or-nothing and nothing ACKed is lost. Prints trials, kills, max change
reached and violations; exits 1 if there was any violation.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import store_writer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trials", nargs="?", type=int, default=500)
    ap.add_argument("--seed", type=int, default=None, help="seed for the kill delays (default: random)")
    ap.add_argument("--dir", type=Path, default=None, help="state directory (default: a fresh temp dir)")
    ap.add_argument("--min-delay", type=float, default=0.003, help="seconds after READY (default 0.003)")
    ap.add_argument("--max-delay", type=float, default=0.150, help="seconds after READY (default 0.150)")
    ap.add_argument("--early-fraction", type=float, default=0.1, help="share of kills timed from spawn")
    ap.add_argument("--full-every", type=int, default=25,
                    help="full row-by-row check every N trials; in between, the new changes row by row"
                         " plus exact row counts and integrity_check over all (default 25; 1 = always full)")
    ap.add_argument("--keep", action="store_true", help="keep the temp state directory")
    args = ap.parse_args(argv)

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    tmp = None
    if args.dir is None:
        tmp = tempfile.mkdtemp(prefix="smgw-crash-")
        state = Path(tmp) / "state"
    else:
        state = args.dir
    print(f"crash campaign: {args.trials} trials, seed {seed}, state {state}", flush=True)

    started = time.monotonic()
    last = 0
    kills = early = not_killed = commit_before_ack = 0
    violations: list[str] = []
    try:
        last, pre = store_writer.check_state(state)  # a --dir may already hold state
        violations += [f"before trial 0: {v}" for v in pre]
        for trial in range(args.trials):
            is_early = rng.random() < args.early_fraction
            delay = rng.uniform(0.0, 0.12) if is_early else rng.uniform(args.min_delay, args.max_delay)
            res = store_writer.run_trial(state, delay, before_ready=is_early)
            kills += res.killed
            early += is_early
            if not res.killed:
                not_killed += 1
                violations.append(f"trial {trial}: child not killed (rc={res.returncode}) {res.stderr.strip()[-300:]}")
            if res.garbage:
                violations.append(f"trial {trial}: unexpected child output {res.garbage[:3]}")
            if res.ready_last is not None and res.ready_last != last:
                violations.append(f"trial {trial}: child resumed from {res.ready_last}, expected {last}")
            full = args.full_every <= 1 or (trial + 1) % args.full_every == 0 or trial + 1 == args.trials
            L, v = store_writer.check_state(state, acked=res.max_ack, previous_last=last,
                                            since=1 if full else last + 1)
            violations += [f"trial {trial} (delay {delay * 1000:.1f} ms, acked {res.max_ack}, L {L}): {x}" for x in v]
            base = res.max_ack if res.acks else last
            if L > base + 1:
                violations.append(f"trial {trial}: L={L} is more than one commit ahead of the last ACK {base}")
            commit_before_ack += L > base
            last = max(last, L)
            if (trial + 1) % 50 == 0 or trial + 1 == args.trials:
                print(f"  {trial + 1:5d} trials  {kills:5d} kills  change {last:7d}  violations {len(violations)}"
                      f"  {time.monotonic() - started:6.1f}s", flush=True)
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - started
    print(f"trials: {args.trials}")
    print(f"kills: {kills} ({early} timed from spawn, {commit_before_ack} landed after a commit but before its ACK,"
          f" {not_killed} children not killed)")
    print(f"max change reached: {last}")
    print(f"violations: {len(violations)}")
    for v in violations[:20]:
        print(f"  {v}")
    print(f"seed: {seed}   elapsed: {elapsed:.1f}s")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
