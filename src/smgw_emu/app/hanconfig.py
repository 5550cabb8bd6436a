"""The ``[han]`` section of the gateway configuration: the consumer's HTTPS server at the HAN
interface and the consumers who may sign in there (docs/configuration.md, `[han]`).

Kept beside `config.py` (which parses the file, calls :func:`check_han` and renders it back) so
that the consumer table, the only nested table of the configuration, has its rules in one place.
Errors are :class:`HanConfigError`; `config.py` turns them into `ConfigError`.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, fields
from typing import Any

from smgw_emu.core.hanauth import HashFormatError, parse_hash

__all__ = ["HanConsumer", "HanSection", "HanConfigError", "parse_consumers", "check_han", "render_consumers"]

_CONSUMER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")      # AR 2418-6 customerId: String64
_USER = re.compile(r"[!-~]([ -~]{0,62}[!-~])?\Z")                  # printable ASCII; no ':' (HTTP Basic)
_METER_ID = re.compile(r"[0-9][A-Z]{3}[0-9]{10}\Z")                 # DIN 43863-5 (core/profiles.METER_ID)
_FINGERPRINT = re.compile(r"[0-9a-f]{64}\Z")
_PKI_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


class HanConfigError(ValueError):
    """An invalid [han] value; the message starts with the field name."""


@dataclass(frozen=True)
class HanConsumer:
    id: str
    meters: tuple[str, ...]
    user: str = ""
    password_hash: str = ""
    certificate_sha256: str = ""
    usage_point_id: str = ""
    tariff_name: str = ""
    data_from: _dt.datetime | None = None


@dataclass(frozen=True)
class HanSection:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    certificate: str = "gateway-tls"
    client_ca: str = "root-ca.crt"
    password_failures: int = 5
    password_failure_refill_s: float = 60.0
    default_range_h: float = 24.0
    max_range_days: float = 400.0
    idle_timeout_s: float = 60.0
    consumers: tuple[HanConsumer, ...] = ()


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise HanConfigError(f"{name}: expected a string, got {value!r}")
    return value


def _consumer(name: str, raw: Any) -> HanConsumer:
    if not isinstance(raw, dict):
        raise HanConfigError(f"{name}: each consumer must be a table ([[han.consumers]])")
    known = {f.name for f in fields(HanConsumer)}
    for key in raw:
        if key not in known:
            raise HanConfigError(f"{name}.{key}: unknown field (known: {', '.join(sorted(known))})")
    for key in ("id", "meters"):
        if key not in raw:
            raise HanConfigError(f"{name}.{key}: required field is missing")
    consumer_id = _string(f"{name}.id", raw["id"])
    if not _CONSUMER_ID.match(consumer_id):
        raise HanConfigError(f"{name}.id: {consumer_id!r} must be 1..64 characters of A-Z a-z 0-9 . _ : -")
    meters = raw["meters"]
    if not isinstance(meters, list) or not meters:
        raise HanConfigError(f"{name}.meters: expected a non-empty list of meter ids")
    for i, meter in enumerate(meters):
        if not isinstance(meter, str) or not _METER_ID.match(meter):
            raise HanConfigError(f"{name}.meters[{i}]: {meter!r} is not a meter id (DIN 43863-5, e.g. 1XXX0098765432)")
    if len(set(meters)) != len(meters):
        raise HanConfigError(f"{name}.meters: a meter is listed twice")
    user = _string(f"{name}.user", raw.get("user", ""))
    password_hash = _string(f"{name}.password_hash", raw.get("password_hash", ""))
    if user and (not _USER.match(user) or ":" in user):
        raise HanConfigError(f"{name}.user: {user!r} must be 1..64 printable ASCII characters without ':'")
    if bool(user) != bool(password_hash):
        raise HanConfigError(f"{name}.password_hash: user and password_hash go together")
    if password_hash:
        try:
            parse_hash(password_hash)
        except HashFormatError as exc:
            raise HanConfigError(f"{name}.password_hash: {exc}") from None
    fingerprint = _string(f"{name}.certificate_sha256", raw.get("certificate_sha256", ""))
    fingerprint = fingerprint.replace(":", "").lower()
    if fingerprint and not _FINGERPRINT.match(fingerprint):
        raise HanConfigError(f"{name}.certificate_sha256: must be the SHA-256 of the DER certificate, 64 hex digits")
    if not user and not fingerprint:
        raise HanConfigError(f"{name}: give user and password_hash, or certificate_sha256, or both")
    usage_point = _string(f"{name}.usage_point_id", raw.get("usage_point_id", ""))
    tariff_name = _string(f"{name}.tariff_name", raw.get("tariff_name", ""))
    for key, value, limit in (("usage_point_id", usage_point, 64), ("tariff_name", tariff_name, 256)):
        if not re.fullmatch(rf"[ -~]{{0,{limit}}}", value):
            raise HanConfigError(f"{name}.{key}: at most {limit} printable ASCII characters")
    data_from = raw.get("data_from")
    if data_from is not None:
        if isinstance(data_from, str):
            try:
                data_from = _dt.datetime.fromisoformat(data_from.replace("Z", "+00:00"))
            except ValueError:
                data_from = None
        if not isinstance(data_from, _dt.datetime):
            raise HanConfigError(f"{name}.data_from: expected an ISO 8601 date-time, got {raw.get('data_from')!r}")
        if data_from.tzinfo is None:
            data_from = data_from.replace(tzinfo=_dt.timezone.utc)
    return HanConsumer(consumer_id, tuple(meters), user, password_hash, fingerprint, usage_point, tariff_name, data_from)


def parse_consumers(name: str, value: Any) -> tuple[HanConsumer, ...]:
    """The ``[[han.consumers]]`` tables; ids, user names, certificates and meters are unique."""
    if not isinstance(value, list):
        raise HanConfigError(f"{name}: expected a list of tables ([[han.consumers]])")
    consumers = tuple(_consumer(f"{name}[{i}]", raw) for i, raw in enumerate(value))
    seen: dict[str, dict[str, int]] = {"id": {}, "user": {}, "certificate_sha256": {}, "meter": {}}
    for i, consumer in enumerate(consumers):
        keys = [("id", consumer.id), ("user", consumer.user), ("certificate_sha256", consumer.certificate_sha256)]
        keys += [("meter", meter) for meter in consumer.meters]
        for kind, key in keys:
            if not key:
                continue
            if key in seen[kind]:
                what = "meters" if kind == "meter" else kind
                raise HanConfigError(f"{name}[{i}].{what}: {key!r} is already used by {name}[{seen[kind][key]}]"
                                     + (" (a meter belongs to one consumer)" if kind == "meter" else ""))
            seen[kind][key] = i
    return consumers


def check_han(han: HanSection) -> None:
    """The rules of the section's plain fields (host and port are checked by config.py)."""
    for name in ("certificate", "client_ca"):
        if not _PKI_NAME.match(getattr(han, name)):
            raise HanConfigError(f"han.{name}: {getattr(han, name)!r} must be a file name in gateway.pki_dir")
    if not 1 <= han.password_failures <= 1000:
        raise HanConfigError("han.password_failures: must lie in 1..1000")
    if not 1 <= han.password_failure_refill_s <= 86400:
        raise HanConfigError("han.password_failure_refill_s: must lie in 1..86400 seconds")
    if not 1 <= han.max_range_days <= 3660:
        raise HanConfigError("han.max_range_days: must lie in 1..3660 days")
    if not 0 < han.default_range_h <= han.max_range_days * 24:
        raise HanConfigError("han.default_range_h: must be more than 0 and at most han.max_range_days")
    if not 1 <= han.idle_timeout_s <= 3600:
        raise HanConfigError("han.idle_timeout_s: must lie in 1..3600 seconds")


def render_consumers(consumers: tuple[HanConsumer, ...]) -> list[str]:
    """The consumers as ``[[han.consumers]]`` tables (for config.render_config)."""
    lines: list[str] = []
    for consumer in consumers:
        lines.append("[[han.consumers]]")
        for f in fields(consumer):
            value = getattr(consumer, f.name)
            if value is None or value == "":
                continue
            if isinstance(value, tuple):
                lines.append(f"{f.name} = [{', '.join(repr_toml(v) for v in value)}]")
            elif isinstance(value, _dt.datetime):
                lines.append(f'{f.name} = "{value.isoformat()}"')
            else:
                lines.append(f"{f.name} = {repr_toml(value)}")
    return lines


def repr_toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
