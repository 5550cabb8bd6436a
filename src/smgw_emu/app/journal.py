"""The gateway's journal: system-log entries in the state store, mirrored to Python logging,
and events for the GWA put in the INFO-REPORT outbox.

A change and the log entry and event that belong to it are written in one transaction (pass the
transaction as `tx`), so after a crash there is never a change without its log entry or a logged
change that did not happen.
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator

from smgw_emu.core.clock import Clock
from smgw_emu.core.events import Event, encode_event
from smgw_emu.store import StateStore, Transaction

LEVEL_INFO, LEVEL_WARNING, LEVEL_ERROR, LEVEL_FATAL = 1, 2, 3, 4
_PY_LEVEL = {1: logging.INFO, 2: logging.WARNING, 3: logging.WARNING, 4: logging.ERROR}

INFO_REPORT = "info-report"

log = logging.getLogger("smgw_emu.gateway")


class Journal:
    def __init__(self, store: StateStore, clock: Clock, gateway_id: str) -> None:
        self.store = store
        self.clock = clock
        self.gateway_id = gateway_id
        self.counters: Counter[str] = Counter()
        self.on_event_enqueued: list[Callable[[], None]] = []
        self._shared_tx: Transaction | None = None

    @contextmanager
    def together(self) -> Iterator[Transaction]:
        """Entries logged inside this block go into one transaction (one commit, not several);
        the block gets that transaction for writes of its own."""
        if self._shared_tx is not None:
            yield self._shared_tx
            return
        with self.store.transaction() as tx:
            self._shared_tx = tx
            try:
                yield tx
            finally:
                self._shared_tx = None

    def _now(self) -> str:
        return self.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def __call__(
        self, event: str, message: str, *, level: int = LEVEL_INFO, outcome: int = 0,
        log_name: str = "system", tx: Transaction | None = None, **details: object,
    ) -> int:
        """Write one log entry (in `tx` when given, else in its own transaction)."""
        self.counters[event] += 1
        log.log(_PY_LEVEL.get(level, logging.INFO), "[%s] %s: %s", self.gateway_id, event, message)
        fields = dict(level=level, outcome=outcome, ts=self._now(), event=event, message=message,
                      details={k: str(v) for k, v in details.items()})
        tx = tx or self._shared_tx
        if tx is not None:
            return tx.append_log(log_name, **fields)
        with self.store.transaction() as own:
            return own.append_log(log_name, **fields)

    def emit(self, tx: Transaction, event_type: str, **details: object) -> int:
        """Queue an event for the GWA on the INFO-REPORT channel, inside the change's transaction."""
        event = Event(event_type, self.gateway_id, self.clock.now(), {k: str(v) for k, v in details.items()})
        # The body carries the outbox id (so the GWA can drop duplicates), known only after the insert.
        item_id = tx.enqueue(INFO_REPORT, event_type, b"", self._now())
        tx.execute("UPDATE outbox SET body=? WHERE id=?", (encode_event(event, item_id), item_id))
        for callback in self.on_event_enqueued:
            callback()
        return item_id

    def commit_key_transition(self, transition) -> None:
        """One key-bank step (app/keybanks.py, app/gatewaykeys.py, app/localidentity.py): its rows
        of the key_banks table, its log entry and its events in one transaction. `transition` has
        writes() (row -> (state, material), or None to delete the row), log_event, message,
        details and events ((event_type, details) pairs)."""
        now = self._now()
        with self.store.transaction() as tx:
            for row, value in transition.writes().items():
                if value is None:
                    tx.execute("DELETE FROM key_banks WHERE bank=?", (row,))
                else:
                    tx.put_key_bank(row, value[0], value[1], now)
            self(transition.log_event, transition.message, tx=tx, **transition.details)
            for event_type, details in transition.events:
                self.emit(tx, event_type, **details)

    def emit_now(self, event_type: str, message: str, **details: object) -> int:
        """Log and queue an event in a transaction of its own."""
        with self.store.transaction() as tx:
            self(event_type, message, tx=tx, **details)
            return self.emit(tx, event_type, **details)
