"""Meter data to the EMT: billing and non-billing data transfers (Lastenheft 6.5.13, 6.5.14,
figs. 57, 58), the termination of an evaluation profile with its final transfer (6.5.6, 6.5.7,
figs. 49, 50), the TAF 6 readout of a past day (6.5.8, figs. 51, 52) and the OnDemandReadout
(6.5.9, fig. 53): methods 1 terminate and 2 readout of the evaluation profile.

Wiring only. The periods, the derivation of a profile's values and the document are in
`core/taf.py`; the delivery (TLS to the EMT, pinned, POST, backoff) in `net/emt_delivery.py`.
Each evaluation profile has its state in the store (kv ``datatransfer/<profile id>``: the end of
the next period to send, whether the final transfer went out). At each period end (plus
`taf.SETTLE_S`, so the meter reading of the boundary is stored) the values are derived, the
document is queued in the outbox (channel ``emt-data``) together with that state and the log
entry, in one transaction; the queue is sealed for the EMT and delivered until the EMT answers
2xx, across restarts.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
from typing import TYPE_CHECKING

from cryptography import x509

from smgw_emu.app.journal import LEVEL_WARNING
from smgw_emu.core import cms, taf
from smgw_emu.core.cosem import CosemError, DlmsValue
from smgw_emu.core.profiles import (
    PROFILE_KINDS,
    EventSpec,
    ProfileChange,
    ProfileError,
    StateConflict,
    _copy,
    profile_label,
)
from smgw_emu.net.emt_delivery import CHANNEL, EmtDelivery, Target
from smgw_emu.store import OutboxItem

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway

TAF_OBIS = PROFILE_KINDS["tafprofile"].obis


class NoValues(CosemError):
    """[ours] A TAF 6 readout of a day the gateway has no values for (not over, older than 42 days, none stored)."""

    code = "no-values"
    http_status = 404

STATE_KEY = "datatransfer/{}"


def _py(obj, name: str):
    attr = obj.cosem_class.attribute_named(name)
    return attr.spec.to_python(obj.peek(attr.index))


def spec_of(obj) -> taf.ProfileSpec:
    billing = bool(_py(obj, "billing_relevant"))
    period = _py(obj, "billing_period") or ("" if billing else taf.NON_BILLING_DEFAULT_PERIOD)
    return taf.ProfileSpec(
        profile_id=_py(obj, "profile_id"), taf=_py(obj, "taf"), billing_relevant=billing,
        tariff_id=_py(obj, "tariff_id"), meters=tuple(_py(obj, "meters")),
        registers=tuple(r.hex() for r in _py(obj, "registers")), recipient=_py(obj, "recipient_emt"),
        billing_period=period, capture_period_s=_py(obj, "capture_period_s"),
    )


class DataTransferService:
    def __init__(self, gateway: "Gateway") -> None:
        self.gw = gateway
        self._timers: dict[str, object] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._finals: set[str] = set()
        self._readouts: set[str] = set()  # profiles with an on-demand readout running  # profiles whose final transfer is being prepared
        self.delivery: EmtDelivery | None = None

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        gw = self.gw
        self.delivery = EmtDelivery(
            store=gw.store, ssl_context=lambda: gw.tls_context, timers=gw.timers, prepare=self._prepare,
            delivered=self._delivered, failed=self._failed, journal=gw.journal, retry_max_s=taf.RETRY_MAX_S,
            timeout=gw.config.channels.connect_timeout_s + 30,
        )
        gw.cosem.commit_hooks.append(self._on_commit)
        gw.cosem.method_hooks[("tafprofile", TAF_OBIS.hex)] = self._method  # terminate (figs. 49, 50)
        self._spawn(self.delivery.run(), "emt-delivery")
        for ldev in gw.cosem.model.ldevs("tafprofile"):
            self._follow(ldev.id)

    async def stop(self) -> None:
        self._stopping = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.gw.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- profiles and their periods --------------------------------------------------------------
    def _profile(self, profile_id: str):
        model = self.gw.cosem.model
        for ldev in model.ldevs("tafprofile"):
            if ldev.id == profile_id:
                for obj in model.objects(ldev):
                    if obj.class_id == PROFILE_KINDS["tafprofile"].class_id and obj.obis == TAF_OBIS:
                        return ldev, obj
        return None

    def _state(self, profile_id: str) -> dict | None:
        return self.gw.store.get(STATE_KEY.format(profile_id))

    def _on_commit(self, change: ProfileChange) -> None:
        if change.ldev.kind == "tafprofile" and not self._stopping:
            if change.remove_ldev:
                with self.gw.store.transaction() as tx:
                    tx.execute("DELETE FROM kv WHERE key=?", (STATE_KEY.format(change.ldev.id),))
            self._follow(change.ldev.id)

    def _follow(self, profile_id: str) -> None:
        timer = self._timers.pop(profile_id, None)
        if timer is not None:
            timer.cancel()
        found = self._profile(profile_id)
        if found is None:
            return
        obj = found[1]
        spec = spec_of(obj)
        state = self._state(profile_id)
        now = self.gw.clock.now()
        if state is None:
            begin = max(now, _py(obj, "valid_from") or now)
            state = {"next_end": taf.stamp(spec.period.end_after(begin)), "final": False}
            with self.gw.store.transaction() as tx:
                tx.set(STATE_KEY.format(profile_id), state)
        until = _py(obj, "valid_until")
        if state.get("terminated"):
            if not state.get("final") and profile_id not in self._finals:
                self._finals.add(profile_id)
                task = self._spawn(self._final(profile_id), f"final-{profile_id}")
                task.add_done_callback(lambda _t: self._finals.discard(profile_id))
            return
        if spec.taf in taf.ON_DEMAND_TAFS:
            return  # TAF 6 sends only when asked (figs. 51/52)
        next_end = taf.parse_stamp(state["next_end"])
        if until is not None and next_end > until:
            return  # the profile ends before its next period does
        at = next_end + _dt.timedelta(seconds=taf.SETTLE_S)
        self._timers[profile_id] = self.gw.timers.call_later(
            max(0.0, (at - now).total_seconds()), lambda: self._due(profile_id))

    def _due(self, profile_id: str) -> None:
        self._timers.pop(profile_id, None)
        if self._stopping:
            return
        found = self._profile(profile_id)
        state = self._state(profile_id)
        if found is None or state is None or state.get("terminated"):
            return
        spec = spec_of(found[1])
        now = self.gw.clock.now()
        for start, end in taf.due_periods(spec.period, taf.parse_stamp(state["next_end"]), now):
            kind = "billing-period" if spec.billing_relevant else "send-interval"
            step = "billing-period-end" if spec.billing_relevant else "send-interval-due"
            state = {**state, "next_end": taf.stamp(spec.period.end_after(end))}
            self._queue(spec, kind, start, end, step=step, state=state)
        self._follow(profile_id)

    def _queue(self, spec: taf.ProfileSpec, kind: str, start, end, *, step: str, state: dict | None = None,
               events: tuple[EventSpec, ...] = (), on_delivered: str = "", series: bool | None = None) -> str:
        """Derive, and queue the document in one transaction with the profile's state and log entry."""
        gw = self.gw
        data = taf.derive(gw.id, spec, kind, start, end, gw.store.meter_values, series=series)
        transfer_id = f"{spec.profile_id}/{taf.stamp(end)}/{kind}/{os.urandom(4).hex()}"
        item = {"transfer_id": transfer_id, "emt": spec.recipient, "profile": spec.profile_id, "kind": kind,
                "document": taf.to_xml(data, transfer_id).decode("utf-8"), "on_delivered": on_delivered}
        details = {**taf.summary(data), "transfer-id": transfer_id, "recipient": spec.recipient}
        with gw.journal.together() as tx:
            tx.enqueue(CHANNEL, kind, json.dumps(item).encode("utf-8"), gw.clock.now().isoformat())
            if state is not None:
                tx.set(STATE_KEY.format(spec.profile_id), state)
            gw.journal(step, f"{kind} of profile {spec.profile_id} ({details['period-start']} .. "
                       f"{details['period-end']}): {details['values']} values, {details['missing']} missing, "
                       f"queued for EMT {spec.recipient}", tx=tx, **details)
            for event in events:
                gw.journal.emit(tx, event.type, **event.details)
        if self.delivery is not None:
            self.delivery.notify()
        return transfer_id

    # -- delivery callbacks ----------------------------------------------------------------------
    def _emt(self, emt_id: str):
        found = None
        model = self.gw.cosem.model
        for ldev in model.ldevs("commprofile"):
            if ldev.id == emt_id:
                found = [o for o in model.objects(ldev) if o.class_id == PROFILE_KINDS["commprofile"].class_id]
        return found[0] if found else None

    def _prepare(self, item: OutboxItem) -> Target | None:
        gw = self.gw
        body = json.loads(item.body)
        emt = self._emt(body["emt"])
        if emt is None:  # deleted since: nobody to send to
            gw.store.acknowledge(item.id)
            gw.journal("data-transfer-dropped", f"transfer {body['transfer_id']} dropped: no communication profile "
                       f"for EMT {body['emt']} any more", level=LEVEL_WARNING, outcome=1,
                       **{"transfer-id": body["transfer_id"], "recipient": body["emt"]})
            return None
        recipient = x509.load_der_x509_certificate(_py(emt, "encryption_certificate"))
        sig_cert, sig_key = gw.cosem._sig
        sealed = cms.seal(body["document"].encode("utf-8"), sig_cert, sig_key, recipient, signing_time=gw.clock.now())
        return Target(url=_py(emt, "info_report_url"), tls_certificate=_py(emt, "tls_certificate"), body=sealed,
                      retry_initial_s=max(1, _py(emt, "retry_interval_s")), max_retries=max(1, _py(emt, "max_retries")))

    def _delivered(self, item: OutboxItem, attempts: int) -> None:
        gw = self.gw
        body = json.loads(item.body)
        details = {"transfer-id": body["transfer_id"], "recipient": body["emt"], "profile": body["profile"],
                   "kind": body["kind"], "attempts": attempts}
        with gw.journal.together() as tx:
            gw.journal("data-transfer-delivered", f"transfer {body['transfer_id']} accepted by EMT {body['emt']}",
                       tx=tx, **details)
            if body.get("on_delivered"):
                gw.journal.emit(tx, body["on_delivered"], **details)

    def _failed(self, item: OutboxItem, attempts: int, reason: str, last: bool) -> None:
        gw = self.gw
        body = json.loads(item.body)
        details = {"transfer-id": body["transfer_id"], "recipient": body["emt"], "profile": body["profile"],
                   "kind": body["kind"], "attempts": attempts, "reason": reason}
        with gw.journal.together() as tx:
            gw.journal("data-transfer-retry", f"transfer {body['transfer_id']} to EMT {body['emt']} failed "
                       f"(attempt {attempts}): {reason}; kept for the next try", tx=tx, level=LEVEL_WARNING,
                       outcome=1, **details)
            if last:  # the EMT profile's max_retries reached: the GWA is told once; the data stays queued
                gw.journal.emit(tx, "data-transfer-failed", **details)

    # -- methods of the evaluation profile: terminate (figs. 49, 50) -------------------------------
    async def _method(self, request, resolved, argument) -> DlmsValue:
        from smgw_emu.core.profiles import MethodNotImplemented

        name = resolved.method.name
        if name == "terminate":
            return self._terminate(resolved.ldev, resolved.obj)
        if name == "readout":
            if argument is not None and not argument.is_null:
                return self._taf6_readout(resolved.ldev, resolved.obj, argument.value)
            return self._readout(resolved.ldev, resolved.obj)
        raise MethodNotImplemented(f"EvaluationProfile.{name} is not implemented", field=name)

    # -- readout of a past day: TAF 6 (figs. 51, 52) ---------------------------------------------
    def _taf6_readout(self, ldev, obj, day_text: str) -> DlmsValue:
        """6.5.8: the daily values of a past day (kept 42 days) to the profile's EMT. [ours] The
        argument is the day (YYYY-MM-DD); the values are queued before the answer, so an accepted
        readout is never lost; taf6-readout-done follows when the EMT acknowledged them."""
        gw = self.gw
        spec = spec_of(obj)
        if spec.taf not in taf.ON_DEMAND_TAFS:
            raise StateConflict(f"evaluation profile {ldev.id} is TAF {spec.taf}: a day's readout needs a TAF 6 "
                                "profile (null-data reads the meters now)", field="taf")
        now = gw.clock.now()
        try:
            day = taf.parse_day(day_text, now.date())
        except taf.TafError as exc:
            raise ProfileError(str(exc), field="readout") from None
        problem = taf.day_kept(day, now.date())
        start, end = taf.day_bounds(day)
        if problem is None:
            data = taf.derive(gw.id, spec, "taf6-day", start, end, gw.store.meter_values, series=False)
            if data.missing == len(data.values):
                problem = f"no daily values of {day.isoformat()}"
        if problem is not None:
            raise NoValues(problem, field="readout")
        transfer_id = self._queue(spec, "taf6-day", start, end, step="taf6-readout-queued",
                                  on_delivered="taf6-readout-done", series=False)
        return DlmsValue("visible-string", transfer_id)

    # -- readout: OnDemandReadout (fig. 53) ------------------------------------------------------
    def _readout(self, ldev, obj) -> DlmsValue:
        """6.5.9: read the profile's meters over the LMN now and send the current values to the
        profile's EMT. [ours] Answers at once with the readout id; the result follows as event
        on-demand-readout-done (EMT acknowledged) or on-demand-readout-failed (a meter did not answer)."""
        gw = self.gw
        profile_id = ldev.id
        now = gw.clock.now().replace(microsecond=0)
        until = _py(obj, "valid_until")
        if (self._state(profile_id) or {}).get("terminated") or (until is not None and until <= now):
            raise StateConflict(f"evaluation profile {profile_id} has ended", field="valid_until")
        if profile_id in self._readouts:
            raise StateConflict(f"a readout of evaluation profile {profile_id} is running", field="profile_id")
        readout_id = f"{profile_id}/{taf.stamp(now)}/on-demand"
        gw.journal("on-demand-readout-started", f"on-demand readout {readout_id} started", profile=profile_id,
                   **{"readout-id": readout_id})
        self._readouts.add(profile_id)
        task = self._spawn(self._on_demand(profile_id, now, readout_id), f"readout-{profile_id}")
        task.add_done_callback(lambda _t: self._readouts.discard(profile_id))
        return DlmsValue("visible-string", readout_id)

    async def _on_demand(self, profile_id: str, at, readout_id: str) -> None:
        gw = self.gw
        found = self._profile(profile_id)
        if found is None:
            return
        spec = spec_of(found[1])
        missing = []
        for meter in spec.meters:
            await gw.meters._read(meter, at)  # logs lmn-reading-failed itself
            if not any(ts == taf.stamp(at) for ts, _, _ in gw.store.meter_values(meter, spec.registers[0])):
                missing.append(meter)
        if missing:
            details = {"profile": profile_id, "readout-id": readout_id, "meters": ",".join(missing)}
            with gw.journal.together() as tx:
                gw.journal("on-demand-readout-failed", f"on-demand readout {readout_id}: no answer from meter(s) "
                           f"{', '.join(missing)}; nothing sent", tx=tx, level=LEVEL_WARNING, outcome=1, **details)
                gw.journal.emit(tx, "on-demand-readout-failed", **details)
            return
        data_start = at - _dt.timedelta(seconds=1)
        self._queue(spec, "on-demand", data_start, at, step="on-demand-readout-queued",
                    on_delivered="on-demand-readout-done", series=False)

    def _terminate(self, ldev, obj) -> DlmsValue:
        """6.5.6 / 6.5.7: end the profile now; its running period closes with a final transfer."""
        gw = self.gw
        profile_id = ldev.id
        state = self._state(profile_id) or {}
        now = gw.clock.now().replace(microsecond=0)
        until = _py(obj, "valid_until")
        if state.get("terminated") or (until is not None and until <= now):
            raise StateConflict(f"evaluation profile {profile_id} has ended already", field="valid_until")
        spec = spec_of(obj)
        new = _copy(obj)
        attr = new.cosem_class.attribute_named("valid_until")
        new.store(attr.index, attr.spec.build(now, "valid_until"))
        label = profile_label("tafprofile", obj)
        details = {"ldev": f"tafprofile/{profile_id}", "profile": profile_id, "taf": str(spec.taf),
                   "billing-relevant": str(spec.billing_relevant).lower(), "time": taf.stamp(now)}
        with gw.store.transaction() as tx:  # the state first: a crash after it still sends the final data
            tx.set(STATE_KEY.format(profile_id), {**state, "terminated": taf.stamp(now), "final": False,
                                                  "next_end": state.get("next_end", taf.stamp(now))})
        gw.cosem._commit(ProfileChange(
            "invoke", ldev, f"{label}-terminating", f"{label.replace('-', ' ')} {profile_id} terminated at "
            f"{taf.stamp(now)}; final transfer follows", details, put=(new,), target=new))
        return DlmsValue("date-time", now)

    async def _final(self, profile_id: str) -> None:
        gw = self.gw
        found = self._profile(profile_id)
        state = self._state(profile_id)
        if found is None or state is None or state.get("final"):
            return
        spec = spec_of(found[1])
        end = taf.parse_stamp(state["terminated"])
        if spec.billing_relevant:  # 6.5.6: a metrological final readout of the meters at the termination time
            for meter in spec.meters:
                try:
                    await gw.meters._read(meter, end)
                except Exception as exc:  # the values are then sent flagged as missing
                    gw.journal("final-readout-failed", f"final readout of meter {meter}: {exc}", level=LEVEL_WARNING,
                               outcome=1, meter=meter)
        state = self._state(profile_id)
        if state is None or state.get("final"):
            return
        next_end = taf.parse_stamp(state["next_end"])
        start = spec.period.start_of(next_end)
        if start >= end:
            start = end - _dt.timedelta(seconds=1)
        label = profile_label("tafprofile", found[1])
        details = {"profile": profile_id, "taf": str(spec.taf), "time": taf.stamp(end), "recipient": spec.recipient}
        self._queue(spec, "final", start, end, step="final-data-queued", state={**state, "final": True},
                    events=(EventSpec("evaluation-profile-terminated", {**details, "kind": label}),))
