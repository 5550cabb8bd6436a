"""Gateway operations: time synchronisation (5.13), self test (5.15, and at start-up for 6.5.3),
the three logs (6.5.10), technical device data (6.5.11), the removal signal (6.5.4/6.5.5) and the
WAN address (6.5.2).

The adapter around the sans-IO rules of `smgw_emu.core.timesync`, `core.selftest`,
`core.gatewaylogs`, `core.devicedata` and `core.statusword`. It owns six objects in the
gateway's own LDEV (OBIS codes in :data:`OPERATION_OBJECTS` and `core.gatewaylogs.LOGS`) and serves
them through the hooks of `CosemApi`: reads refresh them from the gateway's state, log reads are
answered from the store (selective access over the whole log), methods run the processes. Every
change is one store transaction with its log entries and events; the in-memory state follows the
commit. The state survives restarts (kv keys `operations/...`).

    POST .../28610-<TimeSync>/methods/1       synchronise: ask the GWA's time service (ADMIN-SERVICE)
    POST .../28620-<SelfTest>/methods/1       run the self test
    POST .../28640-<DeinstallationSignal>/methods/1, /2   start / stop the removal signal
    GET  .../28630-<DeviceData>               technical device data
    GET  .../28403-<log>/attributes/2?q...    a log, selective access by index or time
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
from typing import TYPE_CHECKING, Any, Callable

from smgw_emu import __version__
from smgw_emu.app.api import ApiError, ApiRequest
from smgw_emu.app.journal import LEVEL_ERROR, LEVEL_FATAL, LEVEL_INFO, LEVEL_WARNING
from smgw_emu.core import gatewaylogs, selftest, statusword, timesync
from smgw_emu.core.cosem import (
    AccessDenied,
    BadSelector,
    CosemObject,
    DlmsValue,
    IndexSelector,
    LogicalDevice,
    ObisCode,
    TimeSelector,
)
from smgw_emu.core.devicedata import DeviceFacts, SignalConflict, device_data_values, removal_signal_change
from smgw_emu.core.profiles import GATEWAY_KIND, StateConflict
from smgw_emu.net.admin_service import AdminServiceError

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway
    from smgw_emu.store import Transaction

log = logging.getLogger("smgw_emu.operations")

#: [ours] The operation objects of the gateway's LDEV: name -> (class id, OBIS code).
OPERATION_OBJECTS: dict[str, tuple[int, ObisCode]] = {
    "time-sync": (28610, ObisCode(0, 0, 128, 20, 1)),
    "self-test": (28620, ObisCode(0, 0, 128, 20, 2)),
    "device-data": (28630, ObisCode(0, 0, 128, 20, 3)),
    "deinstallation-signal": (28640, ObisCode(0, 0, 128, 20, 4)),
}
LOG_CLASS = 28403
#: [ours] The time service: this resource on the GWA's ADMIN-SERVICE endpoint.
TIME_RESOURCE = "time"
#: The gateway's key pairs the self test checks and the device data list (PKI file names).
GATEWAY_KEYS = ("gateway-tls", "gateway-sig", "gateway-enc")
#: What the firmware digest covers: the installed package's files with these suffixes.
FIRMWARE_SUFFIXES = (".py", ".toml")

_KV = "operations/"
_FILE_CACHE: dict[str, tuple[tuple[int, int], bytes]] = {}
_STATE_ENUM = {"never": 0, "synchronised": 1, "deviation_exceeded": 2, "failed": 3}


def _from_iso(text: str | None) -> _dt.datetime | None:
    return _dt.datetime.fromisoformat(text) if text else None


class Operations:
    def __init__(self, gateway: "Gateway") -> None:
        self.gw = gateway
        self.cfg = gateway.config.operations
        self.policy = timesync.TimeSyncPolicy(max_round_trip_s=self.cfg.time_sync_max_round_trip_s)
        self.max_age = _dt.timedelta(seconds=self.cfg.time_sync_max_age_s)
        self.time_state: dict[str, Any] = {"state": "never"}
        self.self_test: selftest.SelfTestReport | None = None
        self.startup_report: selftest.SelfTestReport | None = None
        self.signal: dict[str, Any] = {"active": False, "since": None}
        self.firmware_record: dict[str, str] = {}
        self.started_at: _dt.datetime | None = None
        self._ldev: LogicalDevice | None = None
        self._objects: dict[str, CosemObject] = {}
        self._sync_lock = asyncio.Lock()
        self._timers: dict[str, Any] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stopped = False

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Restore the state, add the objects and hooks, record the firmware digest at the first
        start, and run the start-up self test (its result goes into gateway-started, fig. 46)."""
        gw = self.gw
        store = gw.store
        self.started_at = gw.clock.now()
        self.time_state = store.get(_KV + "time-sync", {"state": "never"})
        self.signal = store.get(_KV + "deinstallation-signal", {"active": False, "since": None})
        offset = store.get(_KV + "clock-offset")
        if offset is not None and not getattr(gw.clock, "virtual", True) and hasattr(gw.clock, "set"):
            # a real clock keeps its correction across restarts (as an RTC would)
            gw.clock.offset = _dt.timedelta(seconds=float(offset))  # type: ignore[attr-defined]
        self._install_objects()
        self._record_firmware_digest()
        self.startup_report = self.run_self_test("start-up")
        self._arm("self-test", self.cfg.self_test_interval_s, self._scheduled_self_test)
        self._arm("time-sync", self.cfg.time_sync_interval_s, self._scheduled_time_sync)

    def startup_details(self) -> dict[str, str]:
        """Details for the gateway-started event: the start-up self test and the WAN address."""
        details: dict[str, str] = {}
        if self.startup_report is not None:
            report = self.startup_report.details()
            details["self-test"] = report.pop("result")
            report.pop("trigger", None)
            details.update({f"self-test-{k}": v for k, v in report.items()})
        host, port = self.gw.wakeup_address
        details["wan-address"] = host
        details["wan-port"] = str(port)
        return details

    def after_start(self) -> None:
        """Compare the WAN address with the one the GWA knows (6.5.2); called once listening."""
        self._check_wan_address("start-up")

    async def stop(self) -> None:
        self._stopped = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _arm(self, name: str, interval: float, callback: Callable[[], None]) -> None:
        if interval > 0 and not self._stopped:
            self._timers[name] = self.gw.timers.call_later(interval, callback)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- objects and hooks -------------------------------------------------------------------
    def _install_objects(self) -> None:
        cosem = self.gw.cosem
        model = cosem.model
        self._ldev = ldev = model.ldev(GATEWAY_KIND, self.gw.id)
        for name, (class_id, obis) in OPERATION_OBJECTS.items():
            obj = model.build_object(class_id, obis)
            model.add_object(ldev, obj)
            self._objects[name] = obj
            cosem.refresh_hooks[(GATEWAY_KIND, obis.hex)] = self._refresh
        for spec in gatewaylogs.LOGS.values():
            # the buffer as LOGS says; how many entries there are is no personal data
            meta = {"gwa": "r", "service": "r", "consumer": spec.buffer_access.get("consumer", ""), "emt": ""}
            obj = model.build_object(LOG_CLASS, spec.obis, {3: DlmsValue("enum", _log_kind(model, spec.kind))},
                                     access_overrides={2: dict(spec.buffer_access), 3: meta, 5: meta, 6: meta})
            model.replace_object(ldev, obj)  # the system log object exists already (CosemApi)
            self._objects[f"log:{spec.name}"] = obj
            cosem.refresh_hooks[(GATEWAY_KIND, spec.obis.hex)] = self._refresh
            cosem.read_hooks[(GATEWAY_KIND, spec.obis.hex)] = self._read_log
        for name in ("time-sync", "self-test", "deinstallation-signal"):
            cosem.method_hooks[(GATEWAY_KIND, OPERATION_OBJECTS[name][1].hex)] = self._invoke

    def _refresh(self, obj: CosemObject) -> None:
        obis = obj.obis
        now = self.gw.clock.now()
        if obis == OPERATION_OBJECTS["time-sync"][1]:
            st = self.time_state
            values = {
                "state": st.get("state", "never"), "last_sync": _from_iso(st.get("last_sync")),
                "last_deviation_ms": int(st.get("deviation_ms", 0)), "limit_ms": self.limit_ms(),
                "round_trip_ms": int(st.get("round_trip_ms", 0)), "source": self.time_source(),
                "interval_s": round(self.cfg.time_sync_interval_s), "last_error": st.get("last_error", ""),
            }
        elif obis == OPERATION_OBJECTS["self-test"][1]:
            report = self.self_test
            values = {
                "result": report.result if report else "passed", "last_run": report.time if report else None,
                "trigger": report.trigger if report else "", "checks": _checks_value(report),
                "interval_s": round(self.cfg.self_test_interval_s),
            }
        elif obis == OPERATION_OBJECTS["device-data"][1]:
            values = device_data_values(self._device_facts(), now)
        elif obis == OPERATION_OBJECTS["deinstallation-signal"][1]:
            values = {"active": bool(self.signal.get("active")), "since": _from_iso(self.signal.get("since"))}
        else:
            self._refresh_log(obj, with_buffer=True)
            return
        spec_class = obj.cosem_class
        for name, data in values.items():
            attr = spec_class.attribute_named(name)
            obj.store(attr.index, attr.spec.build(data, name))

    # -- logs (6.5.10) -----------------------------------------------------------------------
    def _refresh_log(self, obj: CosemObject, *, with_buffer: bool) -> None:
        spec = _log_spec(obj.obis)
        store = self.gw.store
        if with_buffer:
            rows = store.log_tail(spec.name, gatewaylogs.PAGE)
            obj.store(2, DlmsValue("array", [self._row(spec, e) for e in rows]))
        obj.store(5, DlmsValue("double-long-unsigned", store.log_count(spec.name)))
        obj.store(6, DlmsValue("double-long-unsigned", gatewaylogs.PAGE))

    def _row(self, spec: gatewaylogs.LogSpec, entry) -> DlmsValue:
        return self.gw.cosem.model.definitions.types["log_entry"].build(gatewaylogs.log_row(
            spec, record=entry.record, parent=entry.parent, level=entry.level, outcome=entry.outcome, ts=entry.ts,
            event=entry.event, message=entry.message, details=entry.details))

    def _read_log(self, request: ApiRequest, resolved, selector) -> DlmsValue:
        """GET .../attributes/<n> of a log: the buffer from the store, selected over the whole log."""
        obj: CosemObject = resolved.obj
        index = resolved.attribute.index
        attr = obj.attribute(index)
        if not attr.can_read(request.role):
            raise AccessDenied(f"role {request.role} may not read {attr.name} of the {_log_spec(obj.obis).name} log",
                               field=attr.name)
        if index != 2:
            self._refresh_log(obj, with_buffer=False)
            return obj.get(index, request.role, selector)
        spec = _log_spec(obj.obis)
        store = self.gw.store
        page = gatewaylogs.PAGE
        if selector is None:
            entries = store.log_tail(spec.name, page)
        elif isinstance(selector, IndexSelector):
            if selector.count is not None and selector.count > page:
                raise BadSelector(f"q.count is at most {page} rows per request; page with q.fromidx", field="q.count")
            count = page if selector.count is None else selector.count
            entries = store.log_page(spec.name, selector.from_index, count) if count else []
        elif isinstance(selector, TimeSelector):
            entries = store.log_between(
                spec.name, gatewaylogs.store_time(selector.from_time) if selector.from_time else None,
                gatewaylogs.store_time(selector.to_time) if selector.to_time else None, page)
        else:  # pragma: no cover - parse_selector makes only these two
            raise BadSelector("unknown selector")
        return DlmsValue("array", [self._row(spec, e) for e in entries])

    def _log(self, tx: "Transaction", log_name: str, event: str, message: str, *, level: int = LEVEL_INFO,
             outcome: int = 0, parent: int | None = None, **details: object) -> int:
        """An entry in the consumer or calibration log, optionally under a parent entry."""
        return tx.append_log(log_name, level=level, outcome=outcome, ts=gatewaylogs.store_time(self.gw.clock.now()),
                             event=event, message=message, details={k: str(v) for k, v in details.items()},
                             parent=parent)

    # -- methods -----------------------------------------------------------------------------
    async def _invoke(self, request: ApiRequest, resolved, argument: DlmsValue | None) -> DlmsValue:
        name = resolved.method.name
        if name == "synchronise":
            decision = await self.synchronise("gwa", raise_api_error=True)
            assert decision is not None
            return DlmsValue("structure", (
                DlmsValue("enum", _STATE_ENUM[self.time_state["state"]]),
                DlmsValue("long64", decision.deviation_ms),
                DlmsValue("double-long-unsigned", decision.limit_ms),
                DlmsValue("double-long-unsigned", decision.round_trip_ms),
            ))
        if name == "run":
            report = self.run_self_test("gwa")
            return DlmsValue("structure", (DlmsValue("enum", selftest.OUTCOMES.index(report.result)),
                                           _checks_value_dlms(self.gw, report)))
        return DlmsValue("boolean", self._removal_signal(name))

    # -- time synchronisation (5.13) ---------------------------------------------------------
    def time_source(self) -> str:
        base = self.gw.admin_service.base_url if self.gw.admin_service else self.gw.gwa.admin_service_url
        return (base if base.endswith("/") else base + "/") + TIME_RESOURCE

    def capture_periods(self) -> list[int]:
        """The capture periods of the meter profiles (the limit is 1 % of the shortest)."""
        periods = []
        for stored in self.gw.store.objects("meter"):
            value = stored.attributes.get("capture_period_s") if isinstance(stored.attributes, dict) else None
            if isinstance(value, int):
                periods.append(value)
        return periods

    def limit_ms(self) -> int:
        return round(timesync.deviation_limit(self.capture_periods()) / _dt.timedelta(milliseconds=1))

    def last_sync(self) -> _dt.datetime | None:
        """When the clock was last set by a successful synchronisation (failures keep it)."""
        return _from_iso(self.time_state.get("last_good_sync") or self.time_state.get("last_sync"))

    def time_valid(self, now: _dt.datetime) -> bool:
        last = self.last_sync()
        return last is not None and now - last <= self.max_age

    def _scheduled_time_sync(self) -> None:
        if self._stopped or self.gw.store is None:
            return
        self._spawn(self.synchronise("schedule"))
        self._arm("time-sync", self.cfg.time_sync_interval_s, self._scheduled_time_sync)

    async def synchronise(self, trigger: str, *, raise_api_error: bool = False) -> timesync.TimeSyncDecision | None:
        """Ask the GWA's time service, judge the answer, correct the clock. On failure the clock
        stays, the failure is logged and reported; with `raise_api_error` it becomes a 502."""
        async with self._sync_lock:
            gw = self.gw
            clock = gw.clock
            assert gw.admin_service is not None
            sent = clock.monotonic()
            try:
                body = await gw.admin_service.fetch(TIME_RESOURCE, max_bytes=4096, attempts=1)
                received = clock.monotonic()
                reference = timesync.parse_time_document(body)
            except AdminServiceError as exc:
                return self._sync_failed(trigger, exc.reason, str(exc), raise_api_error)
            except timesync.TimeSyncError as exc:
                return self._sync_failed(trigger, exc.reason, str(exc), raise_api_error)
            sample = timesync.TimeSample(reference, sent, received, clock.now())
            limit = timesync.deviation_limit(self.capture_periods())
            decision = timesync.decide(sample, limit, self.policy)
            if not decision.accepted:
                return self._sync_failed(trigger, decision.reason,
                                         f"time sample refused: {decision.reason} (round trip {decision.round_trip_ms} ms)",
                                         raise_api_error)
            if not hasattr(clock, "set"):
                return self._sync_failed(trigger, "clock-not-adjustable", "this gateway's clock cannot be set",
                                         raise_api_error)
            self._apply(trigger, decision)
            return decision

    def _apply(self, trigger: str, decision: timesync.TimeSyncDecision) -> None:
        """One transaction: state, log entries (system, calibration, consumer), flags, events; then
        the clock is set."""
        gw = self.gw
        before = gw.clock.now()
        after = before - decision.deviation
        exceeded = not decision.within_limit
        state = "deviation_exceeded" if exceeded else "synchronised"
        last_good = self.last_sync()
        details = {"deviation-ms": decision.deviation_ms, "limit-ms": decision.limit_ms,
                   "round-trip-ms": decision.round_trip_ms, "within-limit": str(not exceeded).lower(),
                   "trigger": trigger, "source": self.time_source()}
        new_state = {"state": state, "last_sync": after.isoformat(), "last_good_sync": after.isoformat(),
                     "deviation_ms": decision.deviation_ms, "round_trip_ms": decision.round_trip_ms, "last_error": ""}
        with gw.journal.together() as tx:
            record = gw.journal(
                "time-synchronised", f"clock corrected by {-decision.deviation_ms} ms against the GWA's time service "
                f"(deviation {decision.deviation_ms} ms, limit {decision.limit_ms} ms, round trip {decision.round_trip_ms} ms)",
                tx=tx, level=LEVEL_WARNING if exceeded else LEVEL_INFO, **details)
            # PTB-A 50.8: every time correction is metrologically relevant
            self._log(tx, "calibration", "clock-adjusted", f"clock set from {before.isoformat()} to {after.isoformat()}",
                      parent=record, **{"deviation-ms": decision.deviation_ms, "limit-ms": decision.limit_ms})
            if exceeded:
                flagged = self._flag_values(tx, last_good, before)
                details["flagged-values"] = flagged
                message = (f"time deviation {decision.deviation_ms} ms exceeds the limit of {decision.limit_ms} ms; "
                           f"{flagged} value(s) captured since {last_good.isoformat() if last_good else 'the start'} flagged")
                self._log(tx, "calibration", "time-deviation-exceeded", message, level=LEVEL_ERROR, outcome=1,
                          parent=record, **{"deviation-ms": decision.deviation_ms, "flagged-values": flagged})
                self._log(tx, "consumer", "time-deviation-exceeded", message, level=LEVEL_WARNING, outcome=1,
                          parent=record, **{"deviation-ms": decision.deviation_ms, "flagged-values": flagged})
                gw.journal.emit(tx, "time-deviation-exceeded", **details)
            gw.journal.emit(tx, "time-synchronised", **details)
            tx.set(_KV + "time-sync", new_state)
            if not getattr(gw.clock, "virtual", True):
                offset = getattr(gw.clock, "offset", _dt.timedelta(0)) - decision.deviation
                tx.set(_KV + "clock-offset", offset.total_seconds())
        self.time_state = new_state
        gw.clock.set(gw.clock.now() - decision.deviation)  # type: ignore[attr-defined]

    def _flag_values(self, tx: "Transaction", since: _dt.datetime | None, until: _dt.datetime) -> int:
        """Set 'system time invalid' in the status word of the meter values captured between the
        last good synchronisation and now (their time stamps may be off by more than the limit)."""
        flagged = 0
        rows = tx.execute("SELECT meter_id, obis, ts, status FROM meter_values").fetchall()
        for meter_id, obis, ts, status in rows:
            try:
                at = _dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
            except ValueError:
                continue
            if at.tzinfo is None:
                at = at.replace(tzinfo=_dt.timezone.utc)
            if (since is None or at >= since) and at <= until:
                new = statusword.with_gateway_bits(status, ["system-time-invalid"])
                if new != status:
                    tx.execute("UPDATE meter_values SET status=? WHERE meter_id=? AND obis=? AND ts=?",
                               (new, meter_id, obis, ts))
                flagged += 1
        return flagged

    def _sync_failed(self, trigger: str, reason: str, message: str, raise_api_error: bool) -> None:
        gw = self.gw
        new_state = dict(self.time_state, state="failed", last_error=reason[:64])
        with gw.journal.together() as tx:
            gw.journal("time-sync-failed", f"time synchronisation failed: {message}", tx=tx, level=LEVEL_WARNING,
                       outcome=1, reason=reason, trigger=trigger)
            gw.journal.emit(tx, "time-sync-failed", reason=reason, trigger=trigger, source=self.time_source())
            tx.set(_KV + "time-sync", new_state)
        self.time_state = new_state
        if raise_api_error:
            raise ApiError(502, f"time-sync-{reason}", f"time synchronisation failed: {message}")
        return None

    # -- self test (5.15) --------------------------------------------------------------------
    def _scheduled_self_test(self) -> None:
        if self._stopped or self.gw.store is None:
            return
        self.run_self_test("schedule")
        self._arm("self-test", self.cfg.self_test_interval_s, self._scheduled_self_test)

    def firmware_files(self) -> list[tuple[str, bytes]]:
        """The installed package's files (relative path, content). A file whose size and
        modification time are unchanged is not read again (many gateways share one process)."""
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        files = []
        for directory, subdirectories, names in os.walk(root):
            subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
            for name in names:
                if not name.endswith(FIRMWARE_SUFFIXES):
                    continue
                path = os.path.join(directory, name)
                stat = os.stat(path)
                key = (stat.st_size, stat.st_mtime_ns)
                cached = _FILE_CACHE.get(path)
                if cached is None or cached[0] != key:
                    with open(path, "rb") as fh:
                        cached = _FILE_CACHE[path] = (key, fh.read())
                files.append((os.path.relpath(path, root).replace(os.sep, "/"), cached[1]))
        return files

    def _record_firmware_digest(self) -> None:
        """[ours] The expected digest: the configured one, else the one recorded at the first start
        of this firmware version (a new version, installed by whatever means, records anew)."""
        store = self.gw.store
        record = store.get(_KV + "firmware")
        if self.cfg.firmware_digest:
            self.firmware_record = {"version": __version__, "digest": self.cfg.firmware_digest, "source": "configuration"}
            return
        if record and record.get("version") == __version__:
            self.firmware_record = record
            return
        digest = selftest.firmware_digest(self.firmware_files())
        self.firmware_record = {"version": __version__, "digest": digest, "source": "recorded"}
        with self.gw.journal.together() as tx:
            tx.set(_KV + "firmware", self.firmware_record)
            self.gw.journal("firmware-digest-recorded", f"digest of firmware {__version__} recorded: {digest}",
                            tx=tx, version=__version__, digest=digest,
                            **({"previous-version": record.get("version")} if record else {}))

    def _check_firmware(self) -> selftest.CheckResult:
        current = selftest.firmware_digest(self.firmware_files())
        result = selftest.check_firmware(current, self.firmware_record.get("digest", ""), __version__)
        image = self._check_active_image()
        if result.outcome == "passed" and image:
            return selftest.CheckResult("firmware", "failed", image)
        return result

    def _check_active_image(self) -> str:
        """The image of a firmware activated by 6.1 must still be the one verified."""
        import hashlib

        service = getattr(self.gw, "firmware", None)
        active = getattr(service, "active", None)
        sha = getattr(active, "sha256", "") if active is not None else ""
        if not sha or not hasattr(service, "image_path"):
            return ""
        try:
            data = service.image_path(sha).read_bytes()
        except OSError as exc:
            return f"active image {getattr(active, 'version', '?')} unreadable: {exc.strerror or exc}"
        if hashlib.sha256(data).hexdigest() != sha:
            return f"active image {getattr(active, 'version', '?')} changed since it was verified"
        return ""

    def _identity(self):
        """The gateway's key identity in use (key bank gateway/ACTIVE, app/gatewaykeys.py), if any."""
        service = getattr(getattr(self.gw, "keybanks", None), "gateway_keys", None)
        return getattr(getattr(service, "keys", None), "active", None)

    def _key_material(self) -> list[selftest.KeyMaterial]:
        """The gateway's key pairs in use: from its key bank, else from the PKI directory."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        identity = self._identity()
        pki = self.gw.pki
        material = []
        for name in GATEWAY_KEYS:
            usage = name.removeprefix("gateway-")
            try:
                if identity is not None:
                    cert = x509.load_der_x509_certificate(bytes(identity.certificates[usage]))
                    key = serialization.load_pem_private_key(str(identity.keys[usage]).encode(), None)
                else:
                    cert, key = pki.cert(name), pki.key(name)
                material.append(selftest.KeyMaterial(name, cert, key))
            except (OSError, ValueError, TypeError, KeyError, AssertionError) as exc:
                material.append(selftest.KeyMaterial(name, None, None, f"unreadable: {exc}"[:200]))
        return material

    def _why_never_synchronised(self) -> str:
        """For the time check of a clock never synchronised: what would synchronise it."""
        interval = self.cfg.time_sync_interval_s
        if interval:
            why = (f"the gateway's first scheduled time sync (every {interval:g} s, "
                   f"operations.time_sync_interval_s) from {self.time_source()} has not succeeded yet")
        else:
            why = ("no time source configured yet (operations.time_sync_interval_s = 0: the gateway asks the "
                   "GWA's time service only when the GWA requests a time sync)")
        error = self.time_state.get("last_error")
        return why + (f"; the last attempt failed: {error}" if error else "")

    def run_self_test(self, trigger: str) -> selftest.SelfTestReport:
        """Run every check, store the result with its log entries; report it to the GWA as an
        event unless it runs at start-up (then gateway-started carries it, fig. 46)."""
        gw = self.gw
        now = gw.clock.now()
        last = self.last_sync()
        report = selftest.SelfTestReport(now, trigger, (
            self._check_firmware(),
            selftest.check_keys(self._key_material(), now),
            selftest.check_time(now, last, self.max_age, why_never=self._why_never_synchronised()),
            selftest.check_storage(gw.store.integrity_check()),
        ))
        details = report.details()
        level = {"passed": LEVEL_INFO, "warning": LEVEL_WARNING, "failed": LEVEL_FATAL}[report.result]
        summary = ", ".join(f"{c.check} {c.outcome}" + (f" ({c.detail})" if c.outcome != "passed" else "")
                            for c in report.checks)  # a warning or failure says why
        with gw.journal.together() as tx:
            record = gw.journal("self-test-run", f"self test ({trigger}): {report.result}: {summary}", tx=tx,
                                level=level, outcome=0 if report.result != "failed" else 1, **details)
            for check in report.checks:
                if check.outcome == "failed" and check.check in ("firmware", "keys"):
                    self._log(tx, "calibration", "self-test-failed", f"{check.check}: {check.detail}",
                              level=LEVEL_FATAL, outcome=1, parent=record, check=check.check)
            if trigger != "start-up":
                gw.journal.emit(tx, "self-test-result", **details)
            tx.set(_KV + "self-test", _report_to_json(report))
        self.self_test = report
        return report

    # -- removal signal (6.5.4, 6.5.5) -------------------------------------------------------
    def _removal_signal(self, method: str) -> bool:
        gw = self.gw
        try:
            active, event = removal_signal_change(bool(self.signal.get("active")), method)
        except SignalConflict as exc:
            raise StateConflict(str(exc), field="active") from None
        now = gw.clock.now()
        new = {"active": active, "since": now.isoformat() if active else None}
        what = "set" if active else "ended"
        with gw.journal.together() as tx:
            record = gw.journal(event, f"removal signal (Ausbausignal) {what} by GWA {gw.gwa.id}", tx=tx, gwa=gw.gwa.id)
            self._log(tx, "consumer", event, f"removal signal of the gateway {what}", parent=record)
            gw.journal.emit(tx, event, active=str(active).lower(), gwa=gw.gwa.id)
            tx.set(_KV + "deinstallation-signal", new)
        self.signal = new
        return active

    # -- WAN address (6.5.2) -----------------------------------------------------------------
    def _check_wan_address(self, trigger: str) -> None:
        gw = self.gw
        host, port = gw.wakeup_address
        stored = gw.store.get(_KV + "wan-address")
        current = {"host": host, "port": port}
        if stored is None:
            with gw.journal.together() as tx:
                tx.set(_KV + "wan-address", current)
                gw.journal("wan-address-recorded", f"WAN address {host}:{port} recorded", tx=tx, address=host, port=port)
            return
        fixed_port = gw.config.wakeup.port != 0 or trigger == "rebind"
        if stored.get("host") == host and (not fixed_port or int(stored.get("port", 0)) == port):
            return
        with gw.journal.together() as tx:
            gw.journal("wan-address-changed", f"WAN address changed from {stored.get('host')}:{stored.get('port')} to "
                       f"{host}:{port} ({trigger}); telling the GWA", tx=tx, address=host, port=port,
                       **{"previous-address": stored.get("host"), "previous-port": stored.get("port")})
            gw.journal.emit(tx, "ip-address-changed", address=host, port=port, trigger=trigger,
                            **{"previous-address": stored.get("host"), "previous-port": stored.get("port")})
            tx.set(_KV + "wan-address", current)

    async def change_wan_address(self, host: str, port: int | None = None) -> tuple[str, int]:
        """The gateway's WAN address changes (a new DHCP lease; the lab or the control plane
        calls this): the wake-up listener moves to `host` and the GWA is told (6.5.2)."""
        listener = self.gw.wakeup_listener
        assert listener is not None
        old_host, old_port = listener.address  # the bound port, also when the configured one is 0
        await listener.close()
        await asyncio.sleep(0)  # the socket closes on the loop's next turn; then its port is free again
        listener.host, listener.port = host, self.gw.config.wakeup.port if port is None else port
        try:
            await listener.start()
        except OSError:
            listener.host, listener.port = old_host, old_port  # back where the GWA knows it
            await listener.start()
            raise
        self._check_wan_address("rebind")
        return self.gw.wakeup_address

    # -- device data and status (6.5.11) -----------------------------------------------------
    def status_flags(self) -> set[str]:
        flags: set[str] = set()
        if self.self_test is not None and self.self_test.result == "failed":
            flags.add("fatal-error")
        if not self.time_valid(self.gw.clock.now()):
            flags.add("system-time-invalid")
        if self.signal.get("active"):
            flags.add("deinstallation-signal")
        return flags

    def _device_facts(self) -> DeviceFacts:
        gw = self.gw
        certificates = [(m.usage, m.certificate) for m in self._key_material() if m.certificate is not None]
        service = getattr(gw, "firmware", None)
        version = getattr(service, "active_version", None) or __version__
        host, port = gw.wakeup_address
        return DeviceFacts(
            manufacturer=self.cfg.manufacturer, model=self.cfg.model, gateway_id=gw.id, firmware_version=version,
            firmware_digest=self.firmware_record.get("digest", ""), hardware_version=self.cfg.hardware_version,
            certificates=tuple(certificates), status_hex=statusword.gateway_status_hex(self.status_flags()),
            wan_address=host, wan_port=port, started_at=self.started_at,
        )


# -- helpers -----------------------------------------------------------------------------------
def _log_spec(obis: ObisCode) -> gatewaylogs.LogSpec:
    return next(spec for spec in gatewaylogs.LOGS.values() if spec.obis == obis)


def _log_kind(model, kind: str) -> int:
    return model.definitions.types["log_kind"].build(kind).value


def _checks_value(report: selftest.SelfTestReport | None) -> list[dict]:
    if report is None:
        return []
    return [{"check": c.check, "outcome": c.outcome, "detail": c.detail[:1000]} for c in report.checks]


def _checks_value_dlms(gw: "Gateway", report: selftest.SelfTestReport) -> DlmsValue:
    spec = gw.cosem.model.definitions.types["self_test_check"]
    return DlmsValue("array", tuple(spec.build(item) for item in _checks_value(report)))


def _report_to_json(report: selftest.SelfTestReport) -> dict:
    return {"time": report.time.isoformat(), "trigger": report.trigger,
            "checks": [[c.check, c.outcome, c.detail] for c in report.checks]}


