"""The consumer's view at the HAN interface (docs/domain.md §7): wiring of the HTTPS server
(`smgw_emu.net.han`), consumer authentication (`smgw_emu.core.hanauth`) and the AR 2418-6 export
(`smgw_emu.core.trudi`) with the configuration, the store and the journal.

Resources (docs/configuration.md `[han]`, docs/decisions.md "HAN consumer view"):

* ``GET /han/export[?from=..&to=..&meter=..]``: the AR 2418-6 document (TRuDI's format) for the
  signed-in consumer: his meters' original value lists in the window, and his consumer-log
  entries in it. ``meter`` (repeatable) narrows it to some of his meters.
* ``GET /han/log[?from=..&to=..]``: the same document with the consumer-log entries only.

``from`` and ``to`` are ISO 8601 date-times with an offset (``Z`` or ``%2B01:00``), both ends
included; ``to`` defaults to now, ``from`` to ``han.default_range_h`` before ``to``; a window
longer than ``han.max_range_days`` is refused. A consumer sees the values and log entries from
his ``data_from`` on (a new tenant does not see the previous one's data).

Sign-in [ours]: a client certificate whose SHA-256 a consumer lists identifies him (the TLS
layer has already checked that it chains to ``han.client_ca``); otherwise HTTP Basic with his
user name and password (salted scrypt hash in the configuration). A connection remembers a
successful Basic sign-in, so the hash is computed once per connection, not per request.

Log entries: every answered request is a consumer-log entry (``han-export-read``,
``han-log-read``). Every refusal is a system-log entry ``han-access-refused`` (reason, status,
source address; never a user name, the GWA reads that log) and, when the consumer is known
(wrong password of his user name, a meter not his, a bad query), also a consumer-log entry
``han-access-refused``. A consumer-log entry with a ``consumer`` detail is that consumer's; one
without (time-deviation-exceeded, removal signal: app/operations.py) concerns every consumer of
the gateway.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import logging
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from aiohttp import web
from aiohttp.web_request import BaseRequest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smgw_emu.app.api import error_body
from smgw_emu.app.hanconfig import HanConsumer
from smgw_emu.app.journal import LEVEL_INFO, LEVEL_WARNING
from smgw_emu.core import gatewaylogs, trudi
from smgw_emu.core.hanauth import (
    DUMMY_HASH,
    BadAuthorization,
    FailureLimiter,
    HashFormatError,
    PasswordHash,
    parse_basic,
    parse_hash,
    verify_password,
)
from smgw_emu.core.profiles import MEDIUM_DIGIT, MEDIUM_REGISTERS
from smgw_emu.net.han import HanServer, peer_address, peer_certificate
from smgw_emu.net.tls import PROFILES, server_context

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway

log = logging.getLogger("smgw_emu.han")

EXPORT_PATH = "/han/export"
LOG_PATH = "/han/log"
#: [ours] the realm of the HTTP Basic challenge.
REALM = "smgw-han"
#: [ours] at most this many consumer-log entries per document: the newest of the window.
LOG_LIMIT = gatewaylogs.PAGE
#: [ours] tariffName when no tariff name is configured and no evaluation profile names one
#: (TRuDI refuses an empty tariffName).
NO_TARIFF = "no tariff profile"
_STORE_TIME = "%Y-%m-%dT%H:%M:%SZ"   # meter value time stamps as app/meters.py stores them
_QUERY = {EXPORT_PATH: ("from", "to", "meter"), LOG_PATH: ("from", "to")}


class HanRefused(Exception):
    """A refused request: HTTP status, error code, message; `reason` for the logs."""

    def __init__(self, status: int, code: str, message: str, *, reason: str, consumer: HanConsumer | None = None,
                 field_name: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.reason, self.consumer = status, code, reason, consumer
        self.field_name = field_name
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Identity:
    consumer: HanConsumer
    method: str                          # certificate | password


@dataclass
class _Window:
    start: _dt.datetime
    end: _dt.datetime
    meters: tuple[str, ...] = field(default_factory=tuple)


def _challenge() -> dict[str, str]:
    return {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}


class HanConsumerService:
    def __init__(self, gateway: "Gateway") -> None:
        self.gw = gateway
        self.config = gateway.config.han
        self.server: HanServer | None = None
        self._by_id = {c.id: c for c in self.config.consumers}
        self._by_user = {c.user: c for c in self.config.consumers if c.user}
        self._by_fingerprint = {c.certificate_sha256: c for c in self.config.consumers if c.certificate_sha256}
        self._hashes: dict[str, PasswordHash] = {}
        self._dummy = DUMMY_HASH
        self._failures = FailureLimiter(self.config.password_failures, self.config.password_failure_refill_s)
        self._signed_in: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # TLS transport -> (header, id)
        self.refused: Counter[str] = Counter()
        self.certificate_der = b""

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.config.enabled:
            return
        from smgw_emu.app.gateway import GatewayStartError

        gw, cfg = self.gw, self.config
        pki = gw.pki
        profile = PROFILES["han"]
        try:
            self._hashes = {c.user: parse_hash(c.password_hash) for c in cfg.consumers if c.user}
        except HashFormatError as exc:  # a configuration built in code, not parsed from a file
            raise GatewayStartError(f"han.consumers: password_hash: {exc}") from None
        if self._hashes:  # an unknown user name costs what the configured hashes cost
            first = next(iter(self._hashes.values()))
            self._dummy = PasswordHash(first.n, first.r, first.p, bytes(len(first.salt)), bytes(len(first.digest)))
        try:
            if gw.identities.has_own("han"):  # fig. 72 gave the gateway a HAN certificate of its own
                self.certificate_der = gw.identities.certificate_der("han")
                files = gw.identities.files("han")
            else:
                self.certificate_der = x509.load_pem_x509_certificate(pki.cert_path(cfg.certificate).read_bytes()) \
                    .public_bytes(serialization.Encoding.DER)
                files = {"chain": pki.chain_path(cfg.certificate), "key": pki.key_path(cfg.certificate)}
            context = server_context(profile, **files, cafile=pki.root / cfg.client_ca, client_certificate="optional")
        except Exception as exc:  # OSError, ValueError, TlsConfigError: say it, don't trace it
            raise GatewayStartError(f"HAN consumer interface: TLS set-up failed: {exc}") from None
        self.server = HanServer(
            host=cfg.host, port=cfg.port, ssl_context=context, handler=self.handle, timers=gw.timers,
            handshake_timeout=gw.config.channels.connect_timeout_s, max_session_s=profile.max_session_lifetime_s,
            on_refused=self._on_tls_refused, idle_timeout_s=cfg.idle_timeout_s,
        )
        try:
            await self.server.start()
        except OSError as exc:
            self.server = None
            raise GatewayStartError(f"cannot listen for consumers on {cfg.host}:{cfg.port}: {exc.strerror or exc}") from None
        host, port = self.server.address
        log.info("[%s] HAN consumer interface on https://%s:%s%s", gw.id, host, port, EXPORT_PATH)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None, "the HAN consumer interface is not enabled"
        return self.server.address

    # -- one request -------------------------------------------------------------------------
    async def handle(self, raw: BaseRequest) -> web.StreamResponse:
        try:
            identity = await self._authenticate(raw)
            if raw.path not in _QUERY:
                raise HanRefused(404, "unknown-resource", f"no resource {raw.path} (GET {EXPORT_PATH} or {LOG_PATH})",
                                 reason="unknown-resource", consumer=identity.consumer)
            if raw.method != "GET":
                raise HanRefused(405, "method-not-allowed", f"{raw.method} is not allowed on {raw.path}",
                                 reason="method-not-allowed", consumer=identity.consumer, headers={"Allow": "GET"})
            window = self._window(raw, identity.consumer)
            if raw.path == EXPORT_PATH:
                return self._export(raw, identity, window)
            return self._log(raw, identity, window)
        except HanRefused as refused:
            self._log_refusal(raw, refused)
            return web.Response(status=refused.status, body=error_body(refused.code, str(refused), refused.field_name),
                                content_type="application/xml", headers=refused.headers)

    async def _authenticate(self, raw: BaseRequest) -> Identity:
        certificate = peer_certificate(raw)
        if certificate:
            consumer = self._by_fingerprint.get(hashlib.sha256(certificate).hexdigest())
            if consumer is not None:
                return Identity(consumer, "certificate")
        header = raw.headers.get("Authorization")
        if header is None:
            if certificate:
                raise HanRefused(401, "unknown-certificate", "this client certificate belongs to no consumer of this "
                                 "gateway; sign in with user and password", reason="unknown-certificate", headers=_challenge())
            raise HanRefused(401, "authentication-required", "sign in with HTTP Basic (user and password) or a client "
                             "certificate", reason="no-credentials", headers=_challenge())
        transport = raw.transport
        remembered = self._signed_in.get(transport) if transport is not None else None
        if remembered is not None and remembered[0] == header and remembered[1] in self._by_id:
            return Identity(self._by_id[remembered[1]], "password")
        try:
            user, password = parse_basic(header)
        except BadAuthorization as exc:
            raise HanRefused(401, "bad-credentials", str(exc), reason="malformed-credentials", headers=_challenge()) from None
        consumer = self._by_user.get(user)
        now = self.gw.clock.monotonic()
        keys = (("source", peer_address(raw)), ("user", user))
        for key in keys:
            if self._failures.blocked(key, now):
                wait = max(self._failures.retry_after(k, now) for k in keys)
                raise HanRefused(429, "too-many-failures", f"too many failed sign-ins; try again in {wait} s",
                                 reason="rate-limited", consumer=consumer, headers={"Retry-After": str(max(wait, 1))})
        stored = self._hashes.get(user, self._dummy)  # an unknown user costs the same time as a known one
        ok = await asyncio.to_thread(verify_password, stored, password)
        if not ok or consumer is None:
            now = self.gw.clock.monotonic()
            for key in keys:
                self._failures.failed(key, now)
            raise HanRefused(401, "bad-credentials", "user name or password is wrong", reason="bad-credentials",
                             consumer=consumer, headers=_challenge())
        if transport is not None:
            self._signed_in[transport] = (header, consumer.id)
        return Identity(consumer, "password")

    def _window(self, raw: BaseRequest, consumer: HanConsumer) -> _Window:
        allowed = _QUERY[raw.path]
        for name in raw.query:
            if name not in allowed:
                raise HanRefused(400, "unknown-parameter", f"unknown query parameter {name!r} (known: {', '.join(allowed)})",
                                 reason="bad-request", consumer=consumer, field_name=name)
        for name in ("from", "to"):
            if len(raw.query.getall(name, [])) > 1:
                raise HanRefused(400, "invalid-value", f"{name} is given twice", reason="bad-request", consumer=consumer,
                                 field_name=name)
        cfg = self.config
        end = self._time(raw, "to", consumer) or self.gw.clock.now()
        start = self._time(raw, "from", consumer) or end - _dt.timedelta(hours=cfg.default_range_h)
        if start > end:
            raise HanRefused(400, "invalid-range", "from lies after to", reason="bad-request", consumer=consumer,
                             field_name="from")
        if end - start > _dt.timedelta(days=cfg.max_range_days):
            raise HanRefused(400, "range-too-long", f"at most {cfg.max_range_days:g} days per request",
                             reason="bad-request", consumer=consumer, field_name="to")
        meters = tuple(raw.query.getall("meter", [])) or consumer.meters
        foreign = [meter for meter in meters if meter not in consumer.meters]
        if foreign:
            raise HanRefused(403, "meter-not-yours", f"meter {foreign[0]!r} is not one of your meters",
                             reason="foreign-meter", consumer=consumer, field_name="meter")
        if consumer.data_from is not None and start < consumer.data_from:
            start = consumer.data_from  # his data begins there; end < start then means: nothing
        return _Window(start, end, tuple(dict.fromkeys(meters)))

    @staticmethod
    def _time(raw: BaseRequest, name: str, consumer: HanConsumer) -> _dt.datetime | None:
        text = raw.query.get(name)
        if text is None:
            return None
        try:  # a '+' in a query decodes to ' ': take it back
            moment = _dt.datetime.fromisoformat(text.strip().replace(" ", "+").replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise HanRefused(400, "invalid-value", f"{name}: {text!r} is not an ISO 8601 date-time with an offset "
                             "(e.g. 2026-11-25T00:00:00Z)", reason="bad-request", consumer=consumer, field_name=name)
        return moment.astimezone(_dt.timezone.utc)

    # -- the answers -------------------------------------------------------------------------
    def _export(self, raw: BaseRequest, identity: Identity, window: _Window) -> web.Response:
        value_lists, bad_times = [], 0
        for meter in window.meters:
            registers, period = self._registers(meter)
            for obis in registers:
                readings, bad = self._readings(meter, obis, window)
                bad_times += bad
                value_lists.append(trudi.ValueList(meter, obis, readings, period))
        result = trudi.build_export(self._data(identity.consumer, window, value_lists))
        consumer = identity.consumer
        skipped = len(result.skipped) + bad_times
        with self.gw.journal.together():
            self.gw.journal("han-export-read", f"consumer {consumer.id} read the AR 2418-6 export of "
                            f"{_iso(window.start)}..{_iso(window.end)}: {result.values} values of "
                            f"{len(value_lists)} value lists", log_name="consumer", consumer=consumer.id,
                            auth=identity.method, **{"from": _iso(window.start), "to": _iso(window.end)},
                            meters=",".join(window.meters), values=result.values, skipped=skipped)
            if skipped:
                reasons = sorted({s.reason for s in result.skipped} | ({"bad-time"} if bad_times else set()))
                self.gw.journal("han-export-values-skipped", f"{skipped} stored values could not be written exactly "
                                f"in the AR 2418-6 export ({', '.join(reasons)})", level=LEVEL_WARNING, outcome=1,
                                count=skipped, reasons=",".join(reasons))
        return _xml(result.document)

    def _log(self, raw: BaseRequest, identity: Identity, window: _Window) -> web.Response:
        result = trudi.build_export(self._data(identity.consumer, window, []))
        consumer = identity.consumer
        self.gw.journal("han-log-read", f"consumer {consumer.id} read the consumer log of "
                        f"{_iso(window.start)}..{_iso(window.end)}", log_name="consumer", consumer=consumer.id,
                        auth=identity.method, **{"from": _iso(window.start), "to": _iso(window.end)})
        return _xml(result.document)

    def _data(self, consumer: HanConsumer, window: _Window, value_lists: list) -> trudi.ExportData:
        gw = self.gw
        tariff_name, invoicing_party = self._tariff(consumer)
        firmware = getattr(gw.firmware, "active_version", "") if gw.firmware is not None else ""
        return trudi.ExportData(
            gateway_id=gw.id, customer_id=consumer.id, usage_point_id=consumer.usage_point_id or consumer.id,
            tariff_name=consumer.tariff_name or tariff_name, invoicing_party=invoicing_party, meters=consumer.meters,
            value_lists=value_lists, log_entries=self.visible_log(consumer, window.start, window.end),
            period=(window.start, max(window.start, window.end)), certificate_der=self.certificate_der,
            system_time=gw.clock.now(), manufacturer=gw.config.operations.manufacturer,
            firmware_version=str(firmware or ""),
        )

    def _registers(self, meter: str) -> tuple[list[str], int | None]:
        """The original value lists of a meter: the registers of its medium (meter profile if there
        is one, else the medium digit of its id) and its capture period."""
        stored = self.gw.store.objects("meter", meter)
        attributes = stored[0].attributes if stored and isinstance(stored[0].attributes, dict) else {}
        medium = attributes.get("meter_type") or MEDIUM_DIGIT.get(meter[:1], "")
        period = attributes.get("capture_period_s")
        registers = [obis.hex for obis in MEDIUM_REGISTERS.get(medium, ())]
        return registers, period if isinstance(period, int) else None

    def _readings(self, meter: str, obis: str, window: _Window) -> tuple[list[trudi.Reading], int]:
        if window.end < window.start:
            return [], 0
        rows = self.gw.store.meter_values(meter, obis, window.start.strftime(_STORE_TIME),
                                          (window.end + _dt.timedelta(seconds=1)).strftime(_STORE_TIME))
        readings, bad = [], 0
        for stamp, value, status in rows:
            moment = _parse_time(stamp)
            if moment is None:
                bad += 1
            elif window.start <= moment <= window.end:
                readings.append(trudi.Reading(moment, value, status))
        return readings, bad

    def _tariff(self, consumer: HanConsumer) -> tuple[str, str]:
        """(tariff name, invoicing party) from the evaluation profiles over his meters, billing ones first."""
        profiles = []
        for stored in self.gw.store.objects("tafprofile"):
            attributes = stored.attributes if isinstance(stored.attributes, dict) else {}
            if set(attributes.get("meters") or ()) & set(consumer.meters):
                profiles.append(attributes)
        profiles.sort(key=lambda a: (not a.get("billing_relevant"), str(a.get("tariff_id", ""))))
        for attributes in profiles:
            if str(attributes.get("tariff_id", "")).strip():
                return str(attributes["tariff_id"]), str(attributes.get("recipient_emt", ""))
        return NO_TARIFF, ""

    def visible_log(self, consumer: HanConsumer, start: _dt.datetime, end: _dt.datetime) -> list[trudi.LogRecord]:
        """His consumer-log entries in [start, end] (and those of the whole gateway), newest LOG_LIMIT."""
        if end < start:
            return []
        entries = self.gw.store.log_between("consumer", gatewaylogs.store_time(start),
                                            gatewaylogs.store_time(end + _dt.timedelta(microseconds=1)), 1_000_000)
        mine = [e for e in entries if e.details.get("consumer", consumer.id) == consumer.id]
        return [trudi.LogRecord(e.record, _parse_time(e.ts) or start, e.event, e.message, e.level, e.outcome, e.parent,
                                e.details) for e in mine[-LOG_LIMIT:]]

    # -- refusals ----------------------------------------------------------------------------
    def _log_refusal(self, raw: BaseRequest, refused: HanRefused) -> None:
        self.refused[refused.reason] += 1
        source = peer_address(raw)
        level = LEVEL_INFO if refused.reason == "no-credentials" else LEVEL_WARNING
        with self.gw.journal.together():
            self.gw.journal("han-access-refused", f"HAN request {raw.method} {raw.path} from {source} refused: "
                            f"{refused.status} {refused.code}", level=level, outcome=1, reason=refused.reason,
                            status=refused.status, code=refused.code, source=source)
            if refused.consumer is not None:
                self.gw.journal("han-access-refused", f"request {raw.method} {raw.path} of consumer "
                                f"{refused.consumer.id} refused: {refused}", level=level, outcome=1,
                                log_name="consumer", consumer=refused.consumer.id, reason=refused.reason,
                                status=refused.status, **({"field": refused.field_name} if refused.field_name else {}))

    def _on_tls_refused(self, reason: str, message: str, peer: str) -> None:
        self.refused[reason] += 1
        self.gw.journal("han-access-refused", message, level=LEVEL_WARNING, outcome=1, reason=reason,
                        source=peer.rsplit(":", 1)[0])


def _iso(moment: _dt.datetime) -> str:
    return trudi.xml_time(moment)


def _parse_time(text: str) -> _dt.datetime | None:
    try:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def _xml(document: bytes) -> web.Response:
    return web.Response(status=200, body=document, content_type="application/xml", charset="utf-8")

