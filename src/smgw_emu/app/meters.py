"""The gateway's LMN side: pairing (6.4.2.6, fig. 30), crypto reset (6.4.2.7, figs. 31, 32) and
the readings that detect a paired meter (6.5.12, fig. 56).

Wiring only: the dialogs and what their outcome means are in `core/lmn.py`, the connection in
`net/lmn.py`. The service follows the meter profiles: a profile whose ``pairing_state`` is
``pairing`` (set by the ``pair`` or ``crypto_reset`` method) gets a job that talks to the meter
and commits the result (``paired`` / ``failed``, key banks, log entry and event in one
transaction); a ``paired`` profile is read at every boundary of its capture period. Because it
follows the stored state, a job interrupted by a stop or crash runs again at the next start.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
import os
from typing import TYPE_CHECKING

from smgw_emu.app.journal import LEVEL_WARNING
from smgw_emu.core import lmn
from smgw_emu.core.lmn import LmnError, Outcome
from smgw_emu.core.profiles import MEDIUM_REGISTERS, ProfileChange, meter_key_banks
from smgw_emu.net.lmn import LmnConnection, LmnLimits, open_lmn
from smgw_emu.net.tls import PROFILES, client_context

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway


def _py(obj, name: str):
    attr = obj.cosem_class.attribute_named(name)
    return attr.spec.to_python(obj.peek(attr.index))


class MeterService:
    def __init__(self, gateway: "Gateway") -> None:
        self.gw = gateway
        self._jobs: dict[str, asyncio.Task] = {}
        self._reading_timers: dict[str, object] = {}
        self._reading_tasks: set[asyncio.Task] = set()
        self._stopping = False
        #: [ours] the gateway's SML clientId: its id in ASCII
        self.client_id = gateway.id.encode("ascii")

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        from smgw_emu.app.gateway import GatewayStartError

        gw = self.gw
        profile = PROFILES["lmn"]
        try:
            # [ours] the gateway's LMN identity: its TLS certificate until the LMN certificate change
            # (fig. 73, app/localidentity.py) gives it one of its own
            self.ssl_context = client_context(profile, **gw.identities.files("lmn"), cafile=gw.pki.root_ca)
        except Exception as exc:
            raise GatewayStartError(f"LMN TLS set-up failed: {exc}") from None
        cfg = gw.config.lmn
        self.limits = LmnLimits(cfg.connect_timeout_s, cfg.exchange_timeout_s, profile.max_session_lifetime_s)
        gw.cosem.commit_hooks.append(self._on_commit)
        for ldev in gw.cosem.model.ldevs("meter"):
            self._follow(ldev.id)

    async def stop(self) -> None:
        self._stopping = True
        for timer in self._reading_timers.values():
            timer.cancel()
        self._reading_timers.clear()
        tasks = [*self._jobs.values(), *self._reading_tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._jobs.clear()

    def busy(self, meter: str) -> bool:
        job = self._jobs.get(meter)
        return job is not None and not job.done()

    # -- following the meter profiles ----------------------------------------------------------
    def _on_commit(self, change: ProfileChange) -> None:
        if change.ldev.kind == "meter" and not self._stopping:
            self._follow(change.ldev.id)

    def _follow(self, meter: str) -> None:
        found = lmn.meter_profile(self.gw.cosem.model, meter)
        state = _py(found[1], "pairing_state") if found else None
        if state != "paired":
            timer = self._reading_timers.pop(meter, None)
            if timer is not None:
                timer.cancel()
        if found is None:
            job = self._jobs.pop(meter, None)
            if job is not None:
                job.cancel()
            return
        if state == "pairing" and not self.busy(meter):
            self._jobs[meter] = asyncio.get_running_loop().create_task(self._run_job(meter), name=f"lmn-job-{meter}")
        elif state == "paired" and meter not in self._reading_timers:
            self._schedule_reading(meter, _py(found[1], "capture_period_s"))

    # -- pairing and crypto reset --------------------------------------------------------------
    async def _run_job(self, meter: str) -> None:
        outcome = await self._job(meter)
        if outcome is None:
            return
        found = lmn.meter_profile(self.gw.cosem.model, meter)
        if found is None or _py(found[1], "pairing_state") != "pairing":
            self.gw.journal("lmn-result-discarded", f"{outcome.job} of meter {meter} finished after its profile changed",
                            level=LEVEL_WARNING, meter=meter)
            return
        self._jobs.pop(meter, None)
        self.gw.cosem._commit(lmn.plan_outcome(found[0], found[1], outcome, self.gw.clock.now()))

    async def _job(self, meter: str) -> Outcome | None:
        gw = self.gw
        found = lmn.meter_profile(gw.cosem.model, meter)
        if found is None:
            return None
        obj = found[1]
        address, certificate = _py(obj, "lmn_address"), _py(obj, "meter_certificate")
        initial, pending, active = meter_key_banks(meter)
        banks = gw.store.key_banks()
        if pending in banks:
            material = banks[pending][1]
            job, mode, source = "crypto-reset", material.get("mode", "without-pairing"), material.get("source", "")
            new_key = bytes.fromhex(material["key"])
            use_active = mode == "with-pairing" and active in banks
            auth_hex = banks[active][1]["key"] if use_active else banks.get(initial, ("", {}))[1].get("key", "")
        else:
            job, mode, source, new_key = "pairing", "", "initial", b""
            auth_hex = banks.get(initial, ("", {}))[1].get("key", "")
        if not address:
            gw.journal("lmn-address-missing", f"{job} of meter {meter} waits: its profile has no lmn_address",
                       level=LEVEL_WARNING, meter=meter)
            return None
        if not auth_hex:
            return Outcome(job, False, "no-key", "no key material for the meter", mode=mode)
        key = bytes.fromhex(auth_hex)
        attempts = 0
        try:
            if job == "crypto-reset":
                request = lmn.set_key_request(key=key, new_key=new_key, client_id=self.client_id, meter=meter,
                                              req_file_id=os.urandom(8))
                _, _, attempts = await self._exchange(meter, address, certificate, request)
                key = new_key  # the meter uses it now: prove it on a new connection
            request = lmn.identity_request(key=key, client_id=self.client_id, meter=meter, req_file_id=os.urandom(8))
            body, peer, tries = await self._exchange(meter, address, certificate, request)
            attempts += tries
            identity = lmn.check_identity(body, meter)
        except LmnError as exc:
            return Outcome(job, False, exc.reason, exc.detail, mode=mode, attempts=attempts + getattr(exc, "attempts", 0))
        return Outcome(job, True, identity=identity, certificate_sha256=lmn.certificate_sha256(peer), key=key,
                       key_source=source, mode=mode, attempts=attempts)

    async def _exchange(self, meter: str, address: str, certificate: bytes, request: lmn.Request, *,
                        attempts: int | None = None):
        """One dialog on a connection of its own: (judged answer body, meter certificate, attempts)."""
        connection, tries = await self._connect(meter, address, certificate, attempts=attempts)
        try:
            body = lmn.judge_answer(request, await connection.exchange(request.payload))
        except LmnError as exc:
            exc.attempts = tries  # type: ignore[attr-defined]
            raise
        finally:
            await self._close(connection, meter)
        return body, connection.peer_certificate_der, tries

    async def _connect(self, meter: str, address: str, certificate: bytes, *, attempts: int | None = None
                       ) -> tuple[LmnConnection, int]:
        """Open the LMN connection; only an unreachable meter is tried again."""
        gw = self.gw
        cfg = gw.config.lmn
        attempts = attempts or cfg.attempts
        for attempt in range(1, attempts + 1):
            try:
                connection = await open_lmn(address, ssl_context=self.ssl_context, meter_id=meter,
                                            meter_certificate_der=certificate, limits=self.limits,
                                            monotonic=gw.clock.monotonic)
            except LmnError as exc:
                gw.journal("lmn-channel-failed", f"LMN connection to meter {meter} at {address} failed "
                           f"(attempt {attempt}/{attempts}): {exc}", level=LEVEL_WARNING, outcome=1, meter=meter,
                           reason=exc.reason, attempt=attempt)
                if exc.reason != "unreachable" or attempt == attempts:
                    exc.attempts = attempt  # type: ignore[attr-defined]
                    raise
                await gw.timers.sleep(cfg.retry_interval_s)
                continue
            gw.journal("lmn-channel-opened", f"LMN TLS connection to meter {meter} at {address} "
                       f"({connection.tls_version}, {connection.cipher}); meter certificate checked",
                       meter=meter, address=address)
            return connection, attempt
        raise AssertionError("unreachable")

    async def _close(self, connection: LmnConnection, meter: str) -> None:
        await connection.close()
        self.gw.journal("lmn-channel-closed", f"LMN connection to meter {meter} closed", meter=meter)

    # -- readings (fig. 56: the first one after a pairing detects the meter) -------------------
    def _schedule_reading(self, meter: str, period: int) -> None:
        now = self.gw.clock.now()
        epoch = now.timestamp()
        boundary = (math.floor(epoch / period) + 1) * period
        at = _dt.datetime.fromtimestamp(boundary, _dt.timezone.utc)

        def due() -> None:
            self._reading_timers.pop(meter, None)
            if self._stopping:
                return
            task = asyncio.get_running_loop().create_task(self._read(meter, at), name=f"lmn-reading-{meter}")
            self._reading_tasks.add(task)
            task.add_done_callback(self._reading_tasks.discard)

        self._reading_timers[meter] = self.gw.timers.call_later(boundary - epoch, due)

    async def _read(self, meter: str, at: _dt.datetime) -> None:
        gw = self.gw
        found = lmn.meter_profile(gw.cosem.model, meter)
        if found is None or _py(found[1], "pairing_state") != "paired":
            return
        obj = found[1]
        active = meter_key_banks(meter)[2]
        bank = gw.store.key_banks().get(active)
        try:
            if bank is None:
                raise LmnError("no-key", "no active key for the paired meter")
            request = lmn.reading_request(key=bytes.fromhex(bank[1]["key"]), client_id=self.client_id, meter=meter,
                                          req_file_id=os.urandom(8))
            body, _, _ = await self._exchange(meter, _py(obj, "lmn_address"), _py(obj, "meter_certificate"), request,
                                              attempts=1)
            if body.server_id != lmn.server_id(meter):
                raise LmnError("meter-id-mismatch", f"the reading names server id {body.server_id.hex()}")
        except LmnError as exc:
            gw.journal("lmn-reading-failed", f"reading of meter {meter} at {at.isoformat()} failed: {exc}",
                       level=LEVEL_WARNING, outcome=1, meter=meter, reason=exc.reason)
            self._follow_after_reading(meter)
            return
        registers = [obis.hex for obis in MEDIUM_REGISTERS[_py(obj, "meter_type")]]
        values = lmn.readings(body, registers)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        found = lmn.meter_profile(gw.cosem.model, meter)  # still the same paired meter after the await?
        if found is None or _py(found[1], "pairing_state") != "paired":
            return
        with gw.journal.together() as tx:
            for obis, (value, status) in values.items():
                tx.put_meter_value(meter, obis, stamp, value, status)
            gw.journal("meter-values-stored", f"meter {meter}: {len(values)} register values at {stamp}",
                       meter=meter, time=stamp, registers=",".join(sorted(values)))
            material = dict(bank[1])
            if not material.get("detected"):
                # 6.5.12 Zählererkennung: the first valid data after pairing (or a crypto reset)
                material["detected"] = stamp
                tx.put_key_bank(active, "active", material, gw.clock.now().isoformat())
                details = lmn.detection_details(meter, body.server_id.hex(), values, at)
                gw.journal("meter-detected", f"meter {meter} detected: first valid data after pairing", tx=tx, **details)
                gw.journal.emit(tx, "meter-detected", **details)
        self._follow_after_reading(meter)

    async def read_now(self, meter: str) -> dict[str, tuple[str, str]]:
        """One reading of a paired meter outside its capture period (e.g. the final reading of a
        meter change, fig. 21): register OBIS hex -> (value, status word). Stores nothing;
        LmnError when the meter cannot be read (one attempt, as a periodic reading)."""
        found = lmn.meter_profile(self.gw.cosem.model, meter)
        if found is None or _py(found[1], "pairing_state") != "paired":
            raise LmnError("not-paired", f"meter {meter} is not paired")
        obj = found[1]
        bank = self.gw.store.key_banks().get(meter_key_banks(meter)[2])
        if bank is None:
            raise LmnError("no-key", "no active key for the paired meter")
        request = lmn.reading_request(key=bytes.fromhex(bank[1]["key"]), client_id=self.client_id, meter=meter,
                                      req_file_id=os.urandom(8))
        body, _, _ = await self._exchange(meter, _py(obj, "lmn_address"), _py(obj, "meter_certificate"), request,
                                          attempts=1)
        if body.server_id != lmn.server_id(meter):
            raise LmnError("meter-id-mismatch", f"the reading names server id {body.server_id.hex()}")
        return lmn.readings(body, [obis.hex for obis in MEDIUM_REGISTERS[_py(obj, "meter_type")]])

    def _follow_after_reading(self, meter: str) -> None:
        if not self._stopping:
            self._follow(meter)
