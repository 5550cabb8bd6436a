"""Profile semantics of Lastenheft 6.4 (sans-IO): what create, update, delete and the profile
methods mean, how each is validated, and which events each emits.

Input: the COSEM model as it is, the proposed object or values, and a :class:`ProfileContext`
(the gateway's time, its certificate trust list, a function that opens CMS containers from the
GWA, ...). Output: a :class:`ProfileChange` (the objects to store or remove, key material, the
system-log entry and the events), or a typed error that names the field. Nothing here changes
the model: the application layer stores the change in one transaction and applies it to the
model only after the commit.

[ours] Layout (docs/decisions.md "Profiles as logical devices"): every profile is a logical
device (LDEV) of its own kind, holding the profile object at a fixed OBIS code
(:data:`PROFILE_KINDS`) plus the objects the gateway derives from it (value lists). The LDEV id
is the profile's id (partner id, meter id, profile id). The gateway's own LDEV (kind
``gateway``) and the active GWA's communication profile are not changed through this API.

Error codes (``code`` / HTTP status): ``invalid-value`` 422, ``unknown-reference`` 422,
``invalid-certificate`` 422, ``profile-in-use`` 409, ``profile-locked`` 409, ``state-conflict``
409, ``wrong-object`` 400, ``method-not-implemented`` 501, ``cms-<CmsError code>`` (400, 403,
413 or 415, see :data:`CMS_STATUS`); the model's own errors (type-mismatch 400, access-denied
403, read-only-attribute 405, unknown-* 404, duplicate-* 409) pass through.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping
from urllib.parse import urlsplit

from smgw_emu.core import cms
from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.core.cls import han_address_problem
from smgw_emu.core.cosem.errors import (
    AccessDenied,
    CosemError,
    CosemXmlError,
    DuplicateLdev,
    DuplicateObject,
    ReadOnlyAttribute,
    UnknownLdev,
    UnknownObject,
)
from smgw_emu.core.cosem.model import CosemModel, CosemObject, LogicalDevice, ObisCode
from smgw_emu.core.cosem.types import DlmsValue
from smgw_emu.core.cosem.xmlcodec import ObjectDocument

__all__ = [
    "BILLING_TAFS",
    "CMS_STATUS",
    "ContainerError",
    "EventSpec",
    "GATEWAY_KIND",
    "InvalidCertificate",
    "KeyBankWrite",
    "MEDIUM_REGISTERS",
    "MethodNotImplemented",
    "NON_BILLING_TAFS",
    "PROFILE_KINDS",
    "ProfileChange",
    "ProfileContext",
    "ProfileError",
    "ProfileInUse",
    "ProfileKind",
    "ProfileLocked",
    "Reading",
    "StateConflict",
    "UnknownReference",
    "VALUE_LIST_CLASS",
    "WrongObject",
    "meter_key_banks",
    "plan_create",
    "plan_delete",
    "plan_invoke",
    "plan_update",
    "profile_label",
]


# ---------------------------------------------------------------------------------------------
# [ours] The layout: one place, so a lab holding DKE AK 461.0.142 corrects it here
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileKind:
    kind: str            # LDEV kind in /smgw/cosem/<kind>/<ldev>
    class_id: int        # class of the profile object
    obis: ObisCode       # logical name of the profile object inside its LDEV
    id_attribute: str    # the attribute that must equal the LDEV id
    label: str           # prefix of event and log names ("meter-profile-created")


PROFILE_KINDS: dict[str, ProfileKind] = {
    "commprofile": ProfileKind("commprofile", 28100, ObisCode(0, 0, 128, 0, 1), "partner_id", "communication-profile"),
    "meter": ProfileKind("meter", 28300, ObisCode(0, 0, 128, 0, 2), "meter_id", "meter-profile"),
    # billing and non-billing evaluation profiles share a kind; the label says which
    "tafprofile": ProfileKind("tafprofile", 28200, ObisCode(0, 0, 128, 0, 3), "profile_id", "evaluation-profile"),
    "clsprofile": ProfileKind("clsprofile", 28500, ObisCode(0, 0, 128, 0, 5), "profile_id", "cls-proxy-profile"),
}
GATEWAY_KIND = "gateway"
VALUE_LIST_CLASS = 28403

#: Registers whose original value lists a meter LDEV holds, by medium (OBIS value group A).
MEDIUM_REGISTERS: dict[str, tuple[ObisCode, ...]] = {
    "electricity": (ObisCode(1, 0, 1, 8, 0), ObisCode(1, 0, 2, 8, 0)),  # import, export
    "heat": (ObisCode(6, 0, 1, 0, 0),),
    "gas": (ObisCode(7, 0, 3, 0, 0),),
    "water": (ObisCode(8, 0, 1, 0, 0),),
}
#: Medium digit of a DIN 43863-5 meter id -> meter_type name.
MEDIUM_DIGIT = {"1": "electricity", "6": "heat", "7": "gas", "8": "water"}
METER_ID = re.compile(r"[0-9][A-Z]{3}[0-9]{10}")  # DIN 43863-5: medium, manufacturer, block, number

BILLING_TAFS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 12})
NON_BILLING_TAFS = frozenset({6, 7, 9, 10, 14})
#: Billing-relevant parameters that may not change once a billing profile's validity began (fig. 34).
BILLING_LOCKED = ("billing_relevant", "taf", "tariff_id", "meters", "registers", "billing_period", "capture_period_s")

MAX_SESSION_S = 48 * 3600  # TR-03116-3: no WAN session longer than 48 h
VALUE_LIST_RETENTION_S = 42 * 86400  # TAF 6 keeps daily values 42 days: value lists are sized for it
METER_KEY_LENGTHS = (16, 24, 32)  # AES key material for the meter, bytes

CMS_STATUS = {
    "malformed": 400, "not-for-us": 400, "decrypt-failed": 400, "wrong-content-type": 400,
    "too-large": 413, "signature-invalid": 403, "unknown-signer": 403, "unsupported-algorithm": 415,
}


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class ProfileError(CosemError):
    """A well-typed profile that makes no sense (a period that does not divide a day, ...)."""

    code = "invalid-value"
    http_status = 422


class UnknownReference(ProfileError):
    """A profile names a meter, EMT, register, tariff stage or day profile that does not exist."""

    code = "unknown-reference"


class InvalidCertificate(ProfileError):
    code = "invalid-certificate"


class ProfileInUse(ProfileError):
    code = "profile-in-use"
    http_status = 409


class ProfileLocked(ProfileError):
    code = "profile-locked"
    http_status = 409


class StateConflict(ProfileError):
    code = "state-conflict"
    http_status = 409


class WrongObject(CosemError):
    """The object given does not fit the LDEV it is posted to (class or OBIS code)."""

    code = "wrong-object"
    http_status = 400


class MethodNotImplemented(CosemError):
    code = "method-not-implemented"
    http_status = 501


class ContainerError(CosemError):
    """A CMS container was refused (5.10); ``code`` is ``cms-`` + the CmsError code."""

    code = "cms-error"

    def __init__(self, exc: cms.CmsError, field: str | None = None) -> None:
        super().__init__(f"CMS container refused: {exc.detail}", field=field)
        self.code = f"cms-{exc.code}"
        self.cms_code = exc.code
        self.http_status = CMS_STATUS.get(exc.code, 400)


# ---------------------------------------------------------------------------------------------
# Context and result
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """The latest value of one register of one meter, as the gateway holds it."""

    time: str
    value: str
    status: str


@dataclass(frozen=True)
class ProfileContext:
    now: _dt.datetime
    trust: CertificateTrust
    #: 5.10: decrypt a container sealed by the GWA for the gateway and check the GWA's signature;
    #: returns the content, raises cms.CmsError.
    open_container: Callable[[bytes], bytes]
    #: fresh key material for a crypto reset the GWA supplies none for
    new_key: Callable[[], bytes]
    #: the latest reading of (meter id, register OBIS hex), None when the gateway has none
    latest_reading: Callable[[str, str], Reading | None] = lambda meter, obis: None
    #: LDEV ids this API must not change (the gateway's own, the active GWA's profile)
    locked_ldevs: frozenset[str] = frozenset()
    role: str = "gwa"


@dataclass(frozen=True)
class EventSpec:
    type: str
    details: Mapping[str, str]


@dataclass(frozen=True)
class KeyBankWrite:
    bank: str
    state: str
    material: Mapping[str, str]


@dataclass(frozen=True)
class ProfileChange:
    """One accepted change. ``log_event``/``message``/``details`` are its system-log entry;
    ``events`` go to the GWA on the INFO-REPORT channel (in this order)."""

    action: str                                 # create | update | delete | invoke
    ldev: LogicalDevice
    log_event: str
    message: str
    details: Mapping[str, str]
    events: tuple[EventSpec, ...] = ()
    put: tuple[CosemObject, ...] = ()           # objects of ldev to store, new or replacing
    remove: tuple[CosemObject, ...] = ()        # objects of ldev to delete
    new_ldev: bool = False
    remove_ldev: bool = False
    key_writes: tuple[KeyBankWrite, ...] = ()
    key_deletes: tuple[str, ...] = ()
    result: DlmsValue | None = None             # a method's return value
    target: CosemObject | None = None           # the object the request addressed, after the change
    level: int = 1                              # of the system-log entry: 1 info .. 4 fatal
    outcome: int = 0                            # of the system-log entry: 0 success, 1 failure


def meter_key_banks(meter_id: str) -> tuple[str, str, str]:
    """Key banks of a meter: the initial key from the GWA, a pending (crypto reset) and the
    active key (set by the LMN side once the meter uses it)."""
    return (f"meter/{meter_id}/initial", f"meter/{meter_id}/pending", f"meter/{meter_id}/active")


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _py(obj: CosemObject, name: str):
    attr = obj.cosem_class.attribute_named(name)
    return attr.spec.to_python(obj.peek(attr.index))


def _raw(obj: CosemObject, name: str) -> DlmsValue:
    return obj.peek(obj.cosem_class.attribute_named(name).index)


def _put(obj: CosemObject, name: str, data) -> None:
    attr = obj.cosem_class.attribute_named(name)
    obj.store(attr.index, attr.spec.build(data, name))


def _copy(obj: CosemObject) -> CosemObject:
    return obj.copy()


def _changed(old: CosemObject | None, new: CosemObject, name: str) -> bool:
    return old is None or not _raw(old, name).same_as(_raw(new, name))


def _find_ldev(model: CosemModel, ldev_id: str) -> LogicalDevice | None:
    try:
        return model.ldev_by_id(ldev_id)
    except UnknownLdev:
        return None


def profile_object(model: CosemModel, ldev: LogicalDevice) -> CosemObject | None:
    """The profile object of a profile LDEV, or None (no profile kind, or absent)."""
    pk = PROFILE_KINDS.get(ldev.kind)
    if pk is None:
        return None
    try:
        return model.object(ldev, pk.class_id, pk.obis)
    except (UnknownLdev, UnknownObject):
        return None


def _profile(model: CosemModel, kind: str, ldev_id: str) -> CosemObject | None:
    found = _find_ldev(model, ldev_id)
    return profile_object(model, found) if found is not None and found.kind == kind else None


def _profiles(model: CosemModel, kind: str) -> list[tuple[LogicalDevice, CosemObject]]:
    result = []
    for ldev in model.ldevs(kind):
        obj = profile_object(model, ldev)
        if obj is not None:
            result.append((ldev, obj))
    return result


def profile_label(ldev_kind: str, obj: CosemObject) -> str:
    """"meter-profile", "billing-evaluation-profile", ...: the prefix of event names."""
    pk = PROFILE_KINDS[ldev_kind]
    if ldev_kind == "tafprofile":
        return ("billing-" if _py(obj, "billing_relevant") else "non-billing-") + pk.label
    return pk.label


def _check_period(seconds: int, name: str) -> None:
    if not 1 <= seconds <= 86400 or 86400 % seconds:
        raise ProfileError(f"{name} must divide a day (1..86400 s, e.g. 900 for 15 minutes), not {seconds}", field=name)


_DURATION = re.compile(r"P(?!\Z)(?:(\d{1,4})Y)?(?:(\d{1,4})M)?(?:(\d{1,4})W)?(?:(\d{1,5})D)?(?:T(?=\d)(?:(\d{1,6})H)?(?:(\d{1,6})M)?(?:(\d{1,8})S)?)?")


def _duration(text: str, name: str) -> tuple[bool, int]:
    """(calendar-based, seconds of the fixed part) of an ISO 8601 duration like P1M or PT15M."""
    m = _DURATION.fullmatch(text)
    if not m:
        raise ProfileError(f"{name} must be an ISO 8601 duration such as P1M or P1D, not {text[:40]!r}", field=name)
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    fixed = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if years == months == fixed == 0:
        raise ProfileError(f"{name} must not be zero", field=name)
    return bool(years or months), fixed


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _check_host(host: str, name: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ProfileError(f"{name} must be a host name or an IP address, not {host[:60]!r}", field=name)


def _check_url(url: str, name: str) -> None:
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme != "https" or not parts.hostname or not port_ok:
        raise ProfileError(f"{name} must be an https:// URL, not {url[:60]!r}", field=name)


def _open_key(ctx: ProfileContext, container: bytes, name: str) -> bytes:
    try:
        key = ctx.open_container(container)
    except cms.CmsError as exc:
        raise ContainerError(exc, field=name) from None
    if len(key) not in METER_KEY_LENGTHS:
        raise ProfileError(f"{name}: the container holds {len(key)} bytes; meter key material is 16, 24 or 32 bytes",
                           field=name)
    return key


def _check_certificate(ctx: ProfileContext, der: bytes, usage: str, name: str) -> None:
    problem = ctx.trust.problem(der, usage, ctx.now)
    if problem:
        raise InvalidCertificate(f"{name}: {problem}", field=name)


def _value_list(obis: ObisCode, capture_period_s: int, existing: CosemObject | None, model: CosemModel) -> CosemObject:
    """A derived value list (28403, kind value_list); keeps the buffer of an existing one."""
    obj = _copy(existing) if existing is not None else model.build_object(VALUE_LIST_CLASS, obis)
    _put(obj, "kind", "value_list")
    _put(obj, "capture_period_s", capture_period_s)
    if existing is None:
        _put(obj, "profile_entries", VALUE_LIST_RETENTION_S // capture_period_s)
    return obj


def _derived_diff(
    model: CosemModel, ldev: LogicalDevice | None, wanted: Mapping[ObisCode, int]
) -> tuple[list[CosemObject], list[CosemObject]]:
    """Value lists to put and to remove so that ``ldev`` holds exactly ``wanted`` (OBIS -> period)."""
    current = {}
    if ldev is not None:
        current = {o.obis: o for o in model.objects(ldev) if o.class_id == VALUE_LIST_CLASS}
    put = [
        _value_list(obis, period, current.get(obis), model)
        for obis, period in wanted.items()
        if obis not in current or _py(current[obis], "capture_period_s") != period
    ]
    remove = [obj for obis, obj in current.items() if obis not in wanted]
    return put, remove


# ---------------------------------------------------------------------------------------------
# Per-kind validation. Each returns what the profile implies besides itself.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Implied:
    derived: dict[ObisCode, int] = field(default_factory=dict)   # value lists: OBIS -> capture period
    key_writes: list[KeyBankWrite] = field(default_factory=list)
    key_deletes: list[str] = field(default_factory=list)
    summary: dict[str, str] = field(default_factory=dict)        # event details


def _validate_communication(model, ldev, new, old, ctx) -> _Implied:
    if _py(new, "partner_role") != "emt":
        raise ProfileError("only EMT communication profiles are created or changed here; the GWA's profile comes "
                           "from personalisation and changes by a GWA change (6.6)", field="partner_role")
    _check_host(_py(new, "host"), "host")
    if not 1 <= _py(new, "port"):
        raise ProfileError("port must be 1..65535", field="port")
    for name in ("admin_service_url", "info_report_url"):
        if _py(new, name):
            _check_url(_py(new, name), name)
    for name, usage in (("tls_certificate", "tls"), ("signature_certificate", "sig"), ("encryption_certificate", "enc")):
        der = _py(new, name)
        if not der:
            raise ProfileError(f"{name} is required (DER X.509 of the partner's {usage} certificate)", field=name)
        if _changed(old, new, name):
            _check_certificate(ctx, der, usage, name)
    if not 1 <= _py(new, "idle_timeout_s") <= MAX_SESSION_S:
        raise ProfileError(f"idle_timeout_s must be 1..{MAX_SESSION_S} (48 h, TR-03116-3)", field="idle_timeout_s")
    if not 1 <= _py(new, "retry_interval_s") <= 86400:
        raise ProfileError("retry_interval_s must be 1..86400", field="retry_interval_s")
    if not _py(new, "container_profile"):
        _put(new, "container_profile", "default")
    if _py(new, "container_profile") not in cms.PROFILES:
        raise ProfileError(f"container_profile must be one of {sorted(cms.PROFILES)}", field="container_profile")
    return _Implied(summary={"partner": _py(new, "partner_id"), "role": "emt", "host": _py(new, "host"),
                             "port": str(_py(new, "port"))})


def _validate_meter(model, ldev, new, old, ctx) -> _Implied:
    meter_id, meter_type = _py(new, "meter_id"), _py(new, "meter_type")
    if not METER_ID.fullmatch(meter_id):
        raise ProfileError(f"meter_id {meter_id[:40]!r} is no DIN 43863-5 id (medium digit, 3 letters, 10 digits)",
                           field="meter_id")
    if MEDIUM_DIGIT.get(meter_id[0]) != meter_type:
        raise ProfileError(f"meter {meter_id} is of medium {meter_id[0]} ({MEDIUM_DIGIT.get(meter_id[0], 'unknown')}), "
                           f"meter_type says {meter_type}", field="meter_type")
    period = _py(new, "capture_period_s")
    _check_period(period, "capture_period_s")
    implied = _Implied(derived={obis: period for obis in MEDIUM_REGISTERS[meter_type]})
    initial = meter_key_banks(meter_id)[0]
    if _changed(old, new, "encrypted_key"):
        container = _py(new, "encrypted_key")
        if container:
            key = _open_key(ctx, container, "encrypted_key")
            implied.key_writes.append(KeyBankWrite(initial, "stored", {"key": key.hex(), "source": "gwa"}))
        elif old is not None:
            implied.key_deletes.append(initial)
    certificate = _py(new, "meter_certificate")
    if certificate and _changed(old, new, "meter_certificate"):
        _check_certificate(ctx, certificate, "tls", "meter_certificate")
    address = _py(new, "lmn_address")
    if address and _changed(old, new, "lmn_address"):
        _check_lmn_address(address, "lmn_address")
    implied.summary = {"meter": meter_id, "meter-type": meter_type, "capture-period-s": str(period),
                       "key-material": "yes" if _py(new, "encrypted_key") else "no"}
    return implied


def _check_lmn_address(address: str, name: str) -> None:
    """[ours] A meter's place on the emulated LMN: "host:port" or "[IPv6]:port" (core/lmn.py)."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ProfileError(f"{name} must be host:port (port 1..65535), not {address[:60]!r}", field=name)
    _check_host(host, name)


def _emt_profile(model: CosemModel, partner: str, name: str) -> CosemObject:
    obj = _profile(model, "commprofile", partner) if partner else None
    if obj is None or _py(obj, "partner_role") != "emt":
        what = "the GWA's profile, not an EMT's" if obj is not None else "no EMT communication profile"
        raise UnknownReference(f"{name} {partner[:64]!r}: {what}", field=name)
    return obj


def _validate_evaluation(model, ldev, new, old, ctx) -> _Implied:
    billing, taf = _py(new, "billing_relevant"), _py(new, "taf")
    if old is not None and _changed(old, new, "billing_relevant"):
        raise ProfileLocked("billing_relevant cannot change: delete the profile and create the other kind",
                            field="billing_relevant")
    if old is not None and billing and (_py(old, "valid_from") is None or _py(old, "valid_from") <= ctx.now):
        for name in BILLING_LOCKED:
            if _changed(old, new, name):
                raise ProfileLocked(f"{name} of a running billing profile cannot change (terminate it and create "
                                    "a new one)", field=name)
    allowed = BILLING_TAFS if billing else NON_BILLING_TAFS
    if taf not in allowed:
        kind = "billing" if billing else "non-billing"
        raise ProfileError(f"TAF {taf} is no {kind} TAF (allowed: {sorted(allowed)})", field="taf")
    if billing and not _py(new, "tariff_id"):
        raise ProfileError("a billing evaluation profile needs a tariff_id", field="tariff_id")

    meters = _py(new, "meters")
    if not meters:
        raise ProfileError("meters must name at least one meter", field="meters")
    meter_profiles = []
    for i, meter in enumerate(meters):
        obj = _profile(model, "meter", meter)
        if obj is None:
            raise UnknownReference(f"meters[{i}]: no meter profile {meter[:64]!r}", field=f"meters[{i}]")
        if meter in meters[:i]:
            raise ProfileError(f"meters[{i}]: {meter} named twice", field=f"meters[{i}]")
        meter_profiles.append(obj)

    registers = _py(new, "registers")
    if not registers:
        raise ProfileError("registers must name at least one register", field="registers")
    for i, reg in enumerate(registers):
        name = f"registers[{i}]"
        if len(reg) != 6:
            raise ProfileError(f"{name}: an OBIS code has 6 bytes, not {len(reg)}", field=name)
        if reg in registers[:i]:
            raise ProfileError(f"{name}: {reg.hex()} named twice", field=name)
        obis = ObisCode.from_bytes(reg)
        for meter in meters:
            if obis not in MEDIUM_REGISTERS[_py(_profile(model, "meter", meter), "meter_type")]:
                raise UnknownReference(f"{name}: meter {meter} has no register {obis} ({reg.hex()})", field=name)

    _emt_profile(model, _py(new, "recipient_emt"), "recipient_emt")

    period = _py(new, "capture_period_s")
    _check_period(period, "capture_period_s")
    for meter, obj in zip(meters, meter_profiles):
        if period % _py(obj, "capture_period_s"):
            raise ProfileError(f"capture_period_s {period} is no multiple of the capture period of meter {meter} "
                               f"({_py(obj, 'capture_period_s')} s)", field="capture_period_s")
    billing_period = _py(new, "billing_period")
    if billing_period or billing:
        calendar, fixed = _duration(billing_period, "billing_period")
        if not calendar and (fixed < period or fixed % period):
            raise ProfileError(f"billing_period {billing_period} must be a whole number of capture periods "
                               f"({period} s)", field="billing_period")

    stages = _py(new, "tariff_stages")
    stage_numbers: set[int] = set()
    for i, stage in enumerate(stages):
        name = f"tariff_stages[{i}]"
        if stage["stage"] in stage_numbers:
            raise ProfileError(f"{name}.stage: stage {stage['stage']} defined twice", field=f"{name}.stage")
        stage_numbers.add(stage["stage"])
        if len(stage["register"]) != 6:
            raise ProfileError(f"{name}.register: an OBIS code has 6 bytes", field=f"{name}.register")
        obis = ObisCode.from_bytes(stage["register"])
        if obis == PROFILE_KINDS["tafprofile"].obis or any(s["register"] == stage["register"] for s in stages[:i]):
            raise ProfileError(f"{name}.register: {obis} is used twice in this profile", field=f"{name}.register")
    if taf == 1 and len(stages) > 1:
        raise ProfileError("TAF 1 has one tariff stage at most", field="tariff_stages")
    if taf == 2 and len(stages) < 2:
        raise ProfileError("TAF 2 needs at least two tariff stages", field="tariff_stages")

    day_profiles = _py(new, "day_profiles")
    day_ids: set[int] = set()
    for i, day in enumerate(day_profiles):
        name = f"day_profiles[{i}]"
        if day["day_id"] in day_ids:
            raise ProfileError(f"{name}.day_id: day {day['day_id']} defined twice", field=f"{name}.day_id")
        day_ids.add(day["day_id"])
        points = day["switch_points"]
        if not points or points[0]["start"] != 0:
            raise ProfileError(f"{name}.switch_points: the first switch point starts at minute 0",
                               field=f"{name}.switch_points")
        for j, point in enumerate(points):
            where = f"{name}.switch_points[{j}]"
            if j and point["start"] <= points[j - 1]["start"]:
                raise ProfileError(f"{where}.start: switch points must be in ascending order", field=f"{where}.start")
            if point["stage"] not in stage_numbers:
                raise UnknownReference(f"{where}.stage: no tariff stage {point['stage']}", field=f"{where}.stage")
    if taf == 1 and day_profiles:
        raise ProfileError("TAF 1 has no day profiles", field="day_profiles")
    if taf == 2 and not day_profiles:
        raise ProfileError("TAF 2 needs at least one day profile", field="day_profiles")

    seen_dates: set[str] = set()
    for i, special in enumerate(_py(new, "special_days")):
        name = f"special_days[{i}]"
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", special["date"]):
                raise ValueError
            _dt.date.fromisoformat(special["date"])
        except ValueError:
            raise ProfileError(f"{name}.date: a calendar date YYYY-MM-DD expected", field=f"{name}.date") from None
        if special["date"] in seen_dates:
            raise ProfileError(f"{name}.date: {special['date']} given twice", field=f"{name}.date")
        seen_dates.add(special["date"])
        if special["day_id"] not in day_ids:
            raise UnknownReference(f"{name}.day_id: no day profile {special['day_id']}", field=f"{name}.day_id")

    valid_from, valid_until = _py(new, "valid_from"), _py(new, "valid_until")
    if valid_from and valid_until and valid_from >= valid_until:
        raise ProfileError("valid_until must be after valid_from", field="valid_until")

    derived_at = [ObisCode.from_bytes(s["register"]) for s in stages] or [ObisCode.from_bytes(r) for r in registers]
    return _Implied(
        derived={obis: period for obis in derived_at},
        summary={"profile": _py(new, "profile_id"), "taf": str(taf), "meters": ",".join(meters),
                 "recipient": _py(new, "recipient_emt"), "billing-period": billing_period},
    )


def _validate_cls(model, ldev, new, old, ctx) -> _Implied:
    device = _py(new, "cls_device_id")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", device):
        raise ProfileError("cls_device_id must be 1..64 of A-Z a-z 0-9 _ . : -", field="cls_device_id")
    _emt_profile(model, _py(new, "emt_id"), "emt_id")
    if _py(new, "max_bandwidth_kbps") < 1:
        raise ProfileError("max_bandwidth_kbps must be at least 1", field="max_bandwidth_kbps")
    if not 1 <= _py(new, "max_session_s") <= MAX_SESSION_S:
        raise ProfileError(f"max_session_s must be 1..{MAX_SESSION_S} (48 h, TR-03116-3)", field="max_session_s")
    problem = han_address_problem(_py(new, "hks"), _py(new, "cls_address"))  # core/cls.py: the HKS 4/5 dial target
    if problem:
        raise ProfileError(problem, field="cls_address")
    return _Implied(summary={"profile": _py(new, "profile_id"), "cls-device": device, "emt": _py(new, "emt_id"),
                             "hks": str(_py(new, "hks"))})


_VALIDATORS = {
    "commprofile": _validate_communication,
    "meter": _validate_meter,
    "tafprofile": _validate_evaluation,
    "clsprofile": _validate_cls,
}


def _validate(model: CosemModel, ldev: LogicalDevice, new: CosemObject, old: CosemObject | None,
              ctx: ProfileContext) -> _Implied:
    pk = PROFILE_KINDS[ldev.kind]
    if _py(new, pk.id_attribute) != ldev.id:
        raise ProfileError(f"{pk.id_attribute} must equal the LDEV id {ldev.id}", field=pk.id_attribute)
    return _VALIDATORS[ldev.kind](model, ldev, new, old, ctx)


def _base_details(ldev: LogicalDevice, obj: CosemObject) -> dict[str, str]:
    return {"ldev": f"{ldev.kind}/{ldev.id}", "class-id": str(obj.class_id), "obis": obj.obis.hex}


# ---------------------------------------------------------------------------------------------
# The four operations
# ---------------------------------------------------------------------------------------------


def _check_names(obj: CosemObject, doc: ObjectDocument) -> None:
    for index, name in doc.names.items():
        actual = obj.attribute(index).name
        if name != actual:
            raise CosemXmlError(f"attribute {index} of {obj.cosem_class.name} is {actual}, not {name[:40]!r}",
                                field=f"attribute[@index={index}]/@name")


def plan_create(model: CosemModel, kind: str, ldev_id: str, doc: ObjectDocument, ctx: ProfileContext) -> ProfileChange:
    """POST of ``doc`` to ``/smgw/cosem/<kind>/<ldev_id>``: a new profile (and its LDEV), or a new
    object in an existing LDEV (only classes the role may create)."""
    ldev = LogicalDevice(kind, ldev_id)
    pk = PROFILE_KINDS.get(kind)
    existing = _find_ldev(model, ldev_id)
    if existing is not None:
        if existing.kind != kind:
            raise DuplicateLdev(f"LDEV id {ldev_id} is taken (kind {existing.kind})", field="ldev")
        if pk is not None and doc.class_id == pk.class_id:
            raise DuplicateLdev(f"{pk.label} {ldev_id} exists", field="ldev")
        obj = model.build_object(doc.class_id, doc.obis, doc.attributes, role=ctx.role)
        _check_names(obj, doc)
        if ldev_id in ctx.locked_ldevs:
            raise ProfileLocked(f"LDEV {kind}/{ldev_id} is not changed through this API", field="ldev")
        if any(o.obis == obj.obis for o in model.objects(existing)):
            raise DuplicateObject(f"LDEV {ldev_id} already holds an object at {obj.obis.hex}", field="obis")
        details = _base_details(existing, obj)
        return ProfileChange("create", existing, "object-created", f"{obj!r} created in {kind}/{ldev_id}", details,
                             put=(obj,), target=obj)
    if pk is None:
        raise UnknownLdev(f"no LDEV {kind}/{ldev_id}, and {kind} is no profile kind "
                          f"({', '.join(sorted(PROFILE_KINDS))})", field="ldev")
    if doc.class_id != pk.class_id:
        raise WrongObject(f"a {kind} LDEV is created with a class {pk.class_id} object, not {doc.class_id}",
                          field="class-id")
    if doc.obis != pk.obis:
        raise WrongObject(f"the profile object of a {kind} LDEV is at OBIS {pk.obis.hex}, not {doc.obis.hex}",
                          field="obis")
    new = model.build_object(pk.class_id, pk.obis, doc.attributes, role=ctx.role)
    _check_names(new, doc)
    implied = _validate(model, ldev, new, None, ctx)
    derived, _ = _derived_diff(model, None, implied.derived)
    label = profile_label(kind, new)
    details = {**_base_details(ldev, new), **implied.summary}
    events = [EventSpec(f"{label}-created", details)]
    if label == "billing-evaluation-profile":
        events.append(_first_readout(new, ctx))
    return ProfileChange(
        "create", ldev, f"{label}-created", f"{label.replace('-', ' ')} {ldev_id} created ({kind}/{ldev_id})",
        details, tuple(events), put=(new, *derived), new_ldev=True, key_writes=tuple(implied.key_writes),
        target=new,
    )


def _first_readout(profile: CosemObject, ctx: ProfileContext) -> EventSpec:
    """Erstauslesung (fig. 33): the latest value of every register of every meter of the profile.

    [ours] Values the gateway does not hold (no meter reading yet) are reported as "missing";
    status is "complete", "partial" or "no-values".
    """
    details: dict[str, str] = {"profile": _py(profile, "profile_id"), "recipient": _py(profile, "recipient_emt")}
    present = total = 0
    for meter in _py(profile, "meters"):
        for reg in _py(profile, "registers"):
            total += 1
            reading = ctx.latest_reading(meter, reg.hex())
            if reading is None:
                details[f"{meter}/{reg.hex()}"] = "missing"
            else:
                present += 1
                details[f"{meter}/{reg.hex()}"] = f"{reading.value} status={reading.status} time={reading.time}"
    details["status"] = "complete" if present == total else ("no-values" if present == 0 else "partial")
    return EventSpec("first-readout", details)


def plan_update(model: CosemModel, ldev: LogicalDevice, obj: CosemObject, values: Mapping[int, DlmsValue],
                ctx: ProfileContext) -> ProfileChange:
    """PUT of one attribute or several (an object document) of ``obj`` in ``ldev``."""
    new = _copy(obj)
    for index, value in sorted(values.items()):
        if index == 1:
            if value != obj.peek(1):
                raise ReadOnlyAttribute("logical_name is fixed by the OBIS code", field="logical_name")
            continue
        new.set(index, value, ctx.role)
    if ldev.id in ctx.locked_ldevs:
        raise ProfileLocked(f"LDEV {ldev.kind}/{ldev.id} is not changed through this API"
                            + (" (the GWA's profile changes by a GWA change, 6.6)" if ldev.kind == "commprofile" else ""),
                            field="ldev")
    changed = [a.name for a in new.attributes() if _changed(obj, new, a.name)]
    pk = PROFILE_KINDS.get(ldev.kind)
    if pk is None or (obj.class_id, obj.obis) != (pk.class_id, pk.obis):
        details = {**_base_details(ldev, new), "changed": ",".join(changed)}
        return ProfileChange("update", ldev, "object-updated", f"{new!r} in {ldev.kind}/{ldev.id} updated", details,
                             put=(new,), target=new)
    implied = _validate(model, ldev, new, obj, ctx)
    put, remove = _derived_diff(model, ldev, implied.derived)
    label = profile_label(ldev.kind, new)
    details = {**_base_details(ldev, new), "changed": ",".join(changed)}
    return ProfileChange(
        "update", ldev, f"{label}-updated", f"{label.replace('-', ' ')} {ldev.id} updated: {', '.join(changed) or 'no change'}",
        details, (EventSpec(f"{label}-updated", details),), put=(new, *put), remove=tuple(remove),
        key_writes=tuple(implied.key_writes), key_deletes=tuple(implied.key_deletes), target=new,
    )


def plan_delete(model: CosemModel, ldev: LogicalDevice, obj: CosemObject | None, ctx: ProfileContext) -> ProfileChange:
    """DELETE of an LDEV (``obj`` None) or of one object. Deleting a profile object, or its LDEV,
    deletes the profile: the LDEV with everything in it."""
    profile = profile_object(model, ldev)
    if obj is not None and (profile is None or obj is not profile):
        if ctx.role not in obj.cosem_class.delete_roles:
            raise AccessDenied(f"role {ctx.role} may not delete {obj!r}", field="object")
        if ldev.id in ctx.locked_ldevs:
            raise ProfileLocked(f"LDEV {ldev.kind}/{ldev.id} is not changed through this API", field="ldev")
        return ProfileChange("delete", ldev, "object-deleted", f"{obj!r} deleted from {ldev.kind}/{ldev.id}",
                             _base_details(ldev, obj), remove=(obj,))
    if profile is None:
        raise AccessDenied(f"LDEV {ldev.kind}/{ldev.id} is no profile; it cannot be deleted", field="ldev")
    if ldev.id in ctx.locked_ldevs:
        raise ProfileLocked(f"{ldev.kind}/{ldev.id} is the active GWA's profile: it changes only by a GWA change (6.6)",
                            field="ldev")
    users = _users(model, ldev)
    if users:
        raise ProfileInUse(f"{ldev.kind}/{ldev.id} is still used by {', '.join(users)}", field="ldev")
    label = profile_label(ldev.kind, profile)
    details = {**_base_details(ldev, profile), "profile": ldev.id}
    key_deletes = meter_key_banks(ldev.id) if ldev.kind == "meter" else ()
    return ProfileChange(
        "delete", ldev, f"{label}-deleted", f"{label.replace('-', ' ')} {ldev.id} deleted ({ldev.kind}/{ldev.id})",
        details, (EventSpec(f"{label}-deleted", details),), remove_ldev=True, key_deletes=key_deletes,
    )


def _users(model: CosemModel, ldev: LogicalDevice) -> list[str]:
    """Profiles that reference the profile ``ldev``."""
    users = []
    if ldev.kind == "meter":
        users += [f"tafprofile/{l.id}" for l, o in _profiles(model, "tafprofile") if ldev.id in _py(o, "meters")]
    if ldev.kind == "commprofile":
        users += [f"tafprofile/{l.id}" for l, o in _profiles(model, "tafprofile") if _py(o, "recipient_emt") == ldev.id]
        users += [f"clsprofile/{l.id}" for l, o in _profiles(model, "clsprofile") if _py(o, "emt_id") == ldev.id]
    return users


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------

_PAIRING = {"unpaired": 0, "pairing": 1, "paired": 2, "failed": 3}


def plan_invoke(model: CosemModel, ldev: LogicalDevice, obj: CosemObject, index: int, argument: DlmsValue | None,
                ctx: ProfileContext) -> ProfileChange:
    """POST to ``.../methods/<index>``: check the call, then run the method's semantics."""
    method = obj.check_method(index, ctx.role, argument)
    if ldev.id in ctx.locked_ldevs:
        raise ProfileLocked(f"LDEV {ldev.kind}/{ldev.id} is not changed through this API", field="ldev")
    handler = _METHODS.get((obj.class_id, method.name))
    if handler is None or obj is not profile_object(model, ldev):
        raise MethodNotImplemented(f"{obj.cosem_class.name}.{method.name} is not implemented yet "
                                   f"({_PLANNED.get(method.name, 'a later issue')})", field=method.name)
    return handler(model, ldev, obj, argument if argument is not None else DlmsValue.null(), ctx)


_PLANNED = {"terminate": "figs. 49/50", "readout": "figs. 51-53", "disconnect": "fig. 77",
            "reset": "no process uses it", "capture": "no process uses it"}


def _pair(model, ldev, obj, argument, ctx) -> ProfileChange:
    """6.4.2.6: start pairing. [ours] The LMN side completes it (paired / failed) later."""
    state = _py(obj, "pairing_state")
    if state in ("pairing", "paired"):
        raise StateConflict(f"meter {ldev.id} is {state}" + ("; use crypto_reset to renew its keys" if state == "paired" else ""),
                            field="pairing_state")
    if not _py(obj, "encrypted_key"):  # [ours] the LMN files of pairing are signed with it (core/lmn.py)
        raise StateConflict(f"meter {ldev.id} has no initial key: set encrypted_key first", field="encrypted_key")
    new = _copy(obj)
    _put(new, "pairing_state", "pairing")
    details = {**_base_details(ldev, new), "meter": ldev.id, "previous-state": state}
    return ProfileChange("invoke", ldev, "meter-pairing-started", f"pairing of meter {ldev.id} started", details,
                         (EventSpec("meter-pairing-started", details),), put=(new,),
                         result=DlmsValue("enum", _PAIRING["pairing"]), target=new)


def _crypto_reset(model, ldev, obj, argument, ctx) -> ProfileChange:
    """6.4.2.7: new key material for the meter, with (fig. 31) or without (fig. 32) a pairing.

    The argument is a container from the GWA with the new key (opened like encrypted_key) or
    null-data: the gateway makes the key. Without a pairing the initial key must be present.
    [ours] The LMN side takes the pending key to the meter and reports crypto-reset-done.
    """
    state = _py(obj, "pairing_state")
    if state == "pairing":
        raise StateConflict(f"meter {ldev.id} is pairing; wait for the result", field="pairing_state")
    mode = "with-pairing" if state == "paired" else "without-pairing"
    if mode == "without-pairing" and not _py(obj, "encrypted_key"):
        raise StateConflict(f"meter {ldev.id} is not paired: set the meter's initial key (encrypted_key) first",
                            field="encrypted_key")
    if argument.is_null:
        key, source = ctx.new_key(), "gateway"
    else:
        key, source = _open_key(ctx, argument.value, "argument"), "gwa"
    new = _copy(obj)
    _put(new, "pairing_state", "pairing")
    pending = meter_key_banks(ldev.id)[1]
    details = {**_base_details(ldev, new), "meter": ldev.id, "mode": mode, "key-source": source}
    return ProfileChange(
        "invoke", ldev, "crypto-reset-started", f"crypto reset of meter {ldev.id} started ({mode})", details,
        (EventSpec("crypto-reset-started", details),), put=(new,),
        key_writes=(KeyBankWrite(pending, "pending", {"key": key.hex(), "source": source, "mode": mode}),),
        result=DlmsValue("enum", _PAIRING["pairing"]), target=new,
    )


_METHODS = {(28300, "pair"): _pair, (28300, "crypto_reset"): _crypto_reset}
