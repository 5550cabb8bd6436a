"""Gateway configuration: one TOML file per gateway, validated field by field.

Relative paths in a file are resolved against the file's own directory; those of the embedded
default (what `make run` uses) against the current directory. Every invalid value is refused with
`ConfigError` naming the field (`section.key`) and the reason. docs/configuration.md documents
every field; `smgw-emu config default` prints the embedded default.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from smgw_emu.app.hanconfig import HanConfigError, HanSection, check_han, parse_consumers, render_consumers

GATEWAY_ID_RE = re.compile(r"^E[0-9A-Z]{3}[0-9]{10}$")  # DIN 43863-5: E + 3-char maker + 10 digits

DEFAULT_CONFIG_TOML = """\
# smgw-emu gateway configuration (embedded default). Documented in docs/configuration.md.
[gateway]
id = "EXXX0012345678"
state_dir = "var/gateway"
pki_dir = "var/pki"

[clock]
mode = "real"            # real | virtual

[wakeup]
host = "127.0.0.1"
port = 47110             # UDP; 0 picks a free port
window_s = 60            # accepted age/future skew of a wake-up packet
max_packet_bytes = 1024
per_source_rate = 20.0   # signature checks per second and source address
per_source_burst = 40

[gwa]                    # the GWA's communication profile as personalised (docs/domain.md §2)
id = "GWA-TEST-0001"
host = "127.0.0.1"
management_port = 47111  # the GWA's TLS endpoint for the MANAGEMENT channel
admin_service_url = "https://127.0.0.1:47112/admin-service/"
info_report_url = "https://127.0.0.1:47112/info-report"
tls_certificate = "gwa-tls.crt"         # file names in gateway.pki_dir
signature_certificate = "gwa-sig.crt"
encryption_certificate = "gwa-enc.crt"

[channels]
connect_timeout_s = 10
idle_timeout_s = 300
auth_timeout_s = 900
max_session_lifetime_s = 172800   # 48 h, TR-03116-3
retry_initial_s = 1
retry_max_s = 300
management_max_retries = 8        # after a failed MANAGEMENT connect (GWA unreachable); 0 = none

[tls]
profile = "wan"
allow_tls13 = false

[store]
durability = "process-crash"   # process-crash (survives SIGKILL) | power-loss (fsync per change)

[policy]                 # our decisions where the normative text is not public (docs/decisions.md)
auth_refused_status = 403
max_request_bytes = 1048576
xml_max_depth = 64
gwa_change_fallback_s = 3600   # GWA change (6.6): back to the old GWA unless the new one confirms in time

[firmware]               # firmware update, 6.1 (docs/decisions.md "Firmware update")
chunk_bytes = 65536      # bytes per HTTP Range request on ADMIN-SERVICE
max_image_bytes = 16777216
chunk_interval_s = 0     # pause between two ranges (WAN bandwidth), on the gateway clock
fetch_attempts = 3       # per range, with the channel backoff between attempts
signer_certificates = "gwa"   # pinned image signers: "gwa" (its signature certificate) and/or PEM files in pki_dir

[operations]             # time sync 5.13, self test 5.15, device data 6.5.11 (docs/decisions.md "Gateway operations")
time_sync_interval_s = 0         # the gateway's own time-sync schedule; 0: only when the GWA asks
time_sync_max_round_trip_s = 2   # a time sample with a longer round trip is refused
time_sync_max_age_s = 86400      # the time counts as synchronised this long after a sync (self test, status)
self_test_interval_s = 0         # the gateway's own self-test schedule; 0: at start-up and when the GWA asks
firmware_digest = ""             # expected SHA-256 of the installed files; "": recorded at the first start
manufacturer = "smgw-emu"        # technical device data (6.5.11)
model = "virtual SMGW"
hardware_version = "virtual-1"

[lmn]                    # the LMN link to the meters (docs/decisions.md "The LMN link and the meter side of pairing")
connect_timeout_s = 5    # TCP and TLS handshake to a meter
exchange_timeout_s = 10  # one SML request file until its answer file
attempts = 3             # connection attempts of a pairing or crypto reset (unreachable meter only)
retry_interval_s = 10    # between two attempts, on the gateway clock

[cls]                    # the CLS proxy, 6.8 (docs/decisions.md "CLS proxy")
han_host = "127.0.0.1"   # the HAN interface: TLS server for CLS devices (HKS 3)
han_port = 0             # 0 picks a free port (smgw-emu run prints it): many gateways share a host
hks5_interval_s = 60     # HKS 5: the gateway checks its standing channels this often (its clock)
bandwidth_policy = "shape"   # over max_bandwidth_kbps: shape (hold bytes back) | close (end the connection)

[han]                    # the consumer's view at the HAN interface, TRuDI (docs/decisions.md "HAN consumer view")
enabled = false          # true: HTTPS for consumers (GET /han/export, GET /han/log) on host:port
host = "127.0.0.1"
port = 0                 # 0 picks a free port (smgw-emu run prints it)
# [[han.consumers]]      # one table per consumer; hash: smgw-emu han hash-password
# id = "LV-0001"
# meters = ["1XXX0098765432"]
# user = "consumer"
# password_hash = "scrypt$16384$8$1$<salt hex>$<hash hex>"
# certificate_sha256 = "<SHA-256 of his DER client certificate>"
"""


class ConfigError(Exception):
    """An invalid configuration; the message names the field and the reason."""


@dataclass(frozen=True)
class GatewaySection:
    id: str
    state_dir: Path
    pki_dir: Path


@dataclass(frozen=True)
class ClockSection:
    mode: str = "real"
    start: _dt.datetime | None = None


@dataclass(frozen=True)
class WakeupSection:
    host: str = "127.0.0.1"
    port: int = 47110
    window_s: int = 60
    max_packet_bytes: int = 1024
    per_source_rate: float = 20.0
    per_source_burst: int = 40


@dataclass(frozen=True)
class GwaSection:
    id: str
    host: str
    management_port: int
    admin_service_url: str
    info_report_url: str
    tls_certificate: str = "gwa-tls.crt"
    signature_certificate: str = "gwa-sig.crt"
    encryption_certificate: str = "gwa-enc.crt"


@dataclass(frozen=True)
class ChannelsSection:
    connect_timeout_s: float = 10
    idle_timeout_s: float = 300
    auth_timeout_s: float = 900
    max_session_lifetime_s: float = 172800
    retry_initial_s: float = 1
    retry_max_s: float = 300
    #: [ours] MANAGEMENT channel: retries after a failed connect, retry_initial_s doubling to
    #: retry_max_s between them (docs/decisions.md "Channel timing"); 0 = one attempt only.
    management_max_retries: int = 8


@dataclass(frozen=True)
class TlsSection:
    profile: str = "wan"
    allow_tls13: bool = False


@dataclass(frozen=True)
class StoreSection:
    durability: str = "process-crash"


@dataclass(frozen=True)
class PolicySection:
    auth_refused_status: int = 403
    max_request_bytes: int = 1048576
    xml_max_depth: int = 64
    gwa_change_fallback_s: float = 3600  # [ours] GWA change: back to the old GWA unless confirmed (6.6)


@dataclass(frozen=True)
class FirmwareSection:
    chunk_bytes: int = 65536
    max_image_bytes: int = 16 * 1024 * 1024
    chunk_interval_s: float = 0.0
    fetch_attempts: int = 3
    signer_certificates: str = "gwa"


@dataclass(frozen=True)
class LmnSection:
    connect_timeout_s: float = 5.0
    exchange_timeout_s: float = 10.0
    attempts: int = 3
    retry_interval_s: float = 10.0


@dataclass(frozen=True)
class OperationsSection:
    time_sync_interval_s: float = 0.0
    time_sync_max_round_trip_s: float = 2.0
    time_sync_max_age_s: float = 86400.0
    self_test_interval_s: float = 0.0
    firmware_digest: str = ""
    manufacturer: str = "smgw-emu"
    model: str = "virtual SMGW"
    hardware_version: str = "virtual-1"


@dataclass(frozen=True)
class ClsSection:
    han_host: str = "127.0.0.1"
    han_port: int = 0
    hks5_interval_s: float = 60.0
    bandwidth_policy: str = "shape"


@dataclass(frozen=True)
class GatewayConfig:
    gateway: GatewaySection
    gwa: GwaSection
    clock: ClockSection = field(default_factory=ClockSection)
    wakeup: WakeupSection = field(default_factory=WakeupSection)
    channels: ChannelsSection = field(default_factory=ChannelsSection)
    tls: TlsSection = field(default_factory=TlsSection)
    store: StoreSection = field(default_factory=StoreSection)
    policy: PolicySection = field(default_factory=PolicySection)
    firmware: FirmwareSection = field(default_factory=FirmwareSection)
    operations: OperationsSection = field(default_factory=OperationsSection)
    lmn: LmnSection = field(default_factory=LmnSection)
    cls: ClsSection = field(default_factory=ClsSection)
    han: HanSection = field(default_factory=HanSection)
    source: str = "<embedded default>"


_SECTIONS = {
    "gateway": GatewaySection, "gwa": GwaSection, "clock": ClockSection, "wakeup": WakeupSection,
    "channels": ChannelsSection, "tls": TlsSection, "store": StoreSection, "policy": PolicySection,
    "firmware": FirmwareSection,
    "operations": OperationsSection,
    "lmn": LmnSection,
    "cls": ClsSection,
    "han": HanSection,
}


def _check_port(name: str, value: int, allow_zero: bool) -> None:
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise ConfigError(f"{name}: port {value} is out of range ({0 if allow_zero else 1}..65535)")


def _check_host(name: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", value):
        raise ConfigError(f"{name}: {value!r} is neither an IP address nor a host name")


def _check_https_url(name: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"{name}: {value!r} must be an https:// URL with a host")


def _coerce(section: str, key: str, expected: Any, value: Any) -> Any:
    name = f"{section}.{key}"
    if expected == "tuple[HanConsumer, ...]":
        try:
            return parse_consumers(name, value)
        except HanConfigError as exc:
            raise ConfigError(str(exc)) from None
    if expected in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if expected in ("float", float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if expected in ("bool", bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if expected in ("Path", Path):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name}: expected a path, got {value!r}")
        return Path(value)
    if expected in ("_dt.datetime | None",):
        if isinstance(value, _dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
        if isinstance(value, str):
            try:
                return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected an ISO 8601 date-time, got {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def parse_config(text: str, *, base_dir: Path | None = None, source: str = "<string>") -> GatewayConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section (known: {', '.join(_SECTIONS)})")
    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        values = raw.get(section)
        if values is None:
            if section in ("gateway", "gwa"):
                raise ConfigError(f"{section}: section is required")
            sections[section] = cls()
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: must be a table")
        known = {f.name: f for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(f"{section}.{key}: unknown field (known: {', '.join(known)})")
        kwargs = {}
        for name, f in known.items():
            if name in values:
                kwargs[name] = _coerce(section, name, f.type, values[name])
            elif f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{section}.{name}: required field is missing")
        sections[section] = cls(**kwargs)

    gw: GatewaySection = sections["gateway"]
    if not GATEWAY_ID_RE.match(gw.id):
        raise ConfigError(f"gateway.id: {gw.id!r} is not a gateway id (DIN 43863-5, e.g. EXXX0012345678)")
    if base_dir is not None:
        gw = GatewaySection(gw.id, base_dir / gw.state_dir, base_dir / gw.pki_dir)
        sections["gateway"] = gw
    clock: ClockSection = sections["clock"]
    if clock.mode not in ("real", "virtual"):
        raise ConfigError(f"clock.mode: {clock.mode!r} must be 'real' or 'virtual'")
    wake: WakeupSection = sections["wakeup"]
    _check_host("wakeup.host", wake.host)
    _check_port("wakeup.port", wake.port, allow_zero=True)
    if not 1 <= wake.window_s <= 3600:
        raise ConfigError(f"wakeup.window_s: {wake.window_s} must lie in 1..3600 seconds")
    if not 64 <= wake.max_packet_bytes <= 65507:
        raise ConfigError(f"wakeup.max_packet_bytes: {wake.max_packet_bytes} must lie in 64..65507")
    if wake.per_source_rate <= 0:
        raise ConfigError(f"wakeup.per_source_rate: {wake.per_source_rate} must be positive")
    if wake.per_source_burst < 1:
        raise ConfigError(f"wakeup.per_source_burst: {wake.per_source_burst} must be at least 1")
    gwa: GwaSection = sections["gwa"]
    _check_host("gwa.host", gwa.host)
    _check_port("gwa.management_port", gwa.management_port, allow_zero=False)
    _check_https_url("gwa.admin_service_url", gwa.admin_service_url)
    _check_https_url("gwa.info_report_url", gwa.info_report_url)
    ch: ChannelsSection = sections["channels"]
    for f in fields(ch):
        if f.name != "management_max_retries" and getattr(ch, f.name) <= 0:
            raise ConfigError(f"channels.{f.name}: must be a positive number of seconds")
    if not 0 <= ch.management_max_retries <= 255:  # the communication profile's max_retries is unsigned
        raise ConfigError("channels.management_max_retries: must lie in 0..255")
    if ch.max_session_lifetime_s > 48 * 3600:
        raise ConfigError("channels.max_session_lifetime_s: TR-03116-3 allows at most 48 h (172800 s) on the WAN")
    if ch.retry_initial_s > ch.retry_max_s:
        raise ConfigError("channels.retry_initial_s: must not exceed channels.retry_max_s")
    tls: TlsSection = sections["tls"]
    if tls.profile not in ("wan",):
        raise ConfigError(f"tls.profile: {tls.profile!r} is not a WAN TLS profile (wan)")
    if sections["store"].durability not in ("process-crash", "power-loss"):
        raise ConfigError(f"store.durability: {sections['store'].durability!r} must be 'process-crash' or 'power-loss'")
    pol: PolicySection = sections["policy"]
    if not 400 <= pol.auth_refused_status <= 499:
        raise ConfigError("policy.auth_refused_status: must be a 4xx HTTP status")
    if not 1024 <= pol.max_request_bytes <= 64 * 1024 * 1024:
        raise ConfigError("policy.max_request_bytes: must lie in 1 KiB..64 MiB")
    if not 8 <= pol.xml_max_depth <= 1000:
        raise ConfigError("policy.xml_max_depth: must lie in 8..1000")
    if not 60 <= pol.gwa_change_fallback_s <= 30 * 86400:
        raise ConfigError("policy.gwa_change_fallback_s: must lie in 60..2592000 seconds (1 minute..30 days)")
    fw: FirmwareSection = sections["firmware"]
    if not 256 <= fw.chunk_bytes <= 4 * 1024 * 1024:
        raise ConfigError("firmware.chunk_bytes: must lie in 256 bytes..4 MiB")
    if not 1024 <= fw.max_image_bytes <= 256 * 1024 * 1024:
        raise ConfigError("firmware.max_image_bytes: must lie in 1 KiB..256 MiB")
    if not 0 <= fw.chunk_interval_s <= 3600:
        raise ConfigError("firmware.chunk_interval_s: must lie in 0..3600 seconds")
    if not 1 <= fw.fetch_attempts <= 20:
        raise ConfigError("firmware.fetch_attempts: must lie in 1..20")
    if not [name for name in fw.signer_certificates.split(",") if name.strip()]:
        raise ConfigError('firmware.signer_certificates: name at least one signer ("gwa" or a PEM file in gateway.pki_dir)')
    ops: OperationsSection = sections["operations"]
    for name in ("time_sync_interval_s", "self_test_interval_s"):
        if not 0 <= getattr(ops, name) <= 31 * 86400:
            raise ConfigError(f"operations.{name}: must lie in 0 (off)..2678400 seconds (31 days)")
    if not 0 < ops.time_sync_max_round_trip_s <= 60:
        raise ConfigError("operations.time_sync_max_round_trip_s: must lie in (0, 60] seconds")
    if not 60 <= ops.time_sync_max_age_s <= 31 * 86400:
        raise ConfigError("operations.time_sync_max_age_s: must lie in 60..2678400 seconds")
    if ops.firmware_digest and not re.fullmatch(r"[0-9a-f]{64}", ops.firmware_digest):
        raise ConfigError("operations.firmware_digest: must be empty or 64 lower-case hex digits (SHA-256)")
    for name in ("manufacturer", "model", "hardware_version"):
        if not re.fullmatch(r"[ -~]{1,64}", getattr(ops, name)):
            raise ConfigError(f"operations.{name}: must be 1..64 printable ASCII characters")
    lmn: LmnSection = sections["lmn"]
    for name in ("connect_timeout_s", "exchange_timeout_s", "retry_interval_s"):
        if not 0 < getattr(lmn, name) <= 3600:
            raise ConfigError(f"lmn.{name}: must lie in 0..3600 seconds (more than 0)")
    if not 1 <= lmn.attempts <= 100:
        raise ConfigError("lmn.attempts: must lie in 1..100")
    cls: ClsSection = sections["cls"]
    _check_host("cls.han_host", cls.han_host)
    _check_port("cls.han_port", cls.han_port, allow_zero=True)
    if not 1 <= cls.hks5_interval_s <= 86400:
        raise ConfigError("cls.hks5_interval_s: must lie in 1..86400 seconds")
    from smgw_emu.core.cls import BANDWIDTH_POLICIES

    if cls.bandwidth_policy not in BANDWIDTH_POLICIES:
        raise ConfigError(f"cls.bandwidth_policy: {cls.bandwidth_policy!r} must be one of {', '.join(BANDWIDTH_POLICIES)}")
    han: HanSection = sections["han"]
    _check_host("han.host", han.host)
    _check_port("han.port", han.port, allow_zero=True)
    try:
        check_han(han)
    except HanConfigError as exc:
        raise ConfigError(str(exc)) from None
    return GatewayConfig(**sections, source=source)


def load_config(path: str | Path | None = None) -> GatewayConfig:
    """Load a gateway configuration file, or the embedded default when `path` is None."""
    if path is None:
        return parse_config(DEFAULT_CONFIG_TOML, source="<embedded default>")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc}") from None
    return parse_config(text, base_dir=path.resolve().parent, source=str(path))


def render_config(cfg: GatewayConfig) -> str:
    """Write a configuration back as TOML (used by tests and `fleet` to make per-gateway files)."""
    lines: list[str] = []
    for section in _SECTIONS:
        value = getattr(cfg, section)
        lines.append(f"[{section}]")
        tables: list[str] = []
        for f in fields(value):
            item = getattr(value, f.name)
            if item is None:
                continue
            if isinstance(item, tuple):  # [[han.consumers]]: tables after the section's plain fields
                tables += render_consumers(item)
                continue
            if isinstance(item, bool):
                lines.append(f"{f.name} = {'true' if item else 'false'}")
            elif isinstance(item, (int, float)):
                lines.append(f"{f.name} = {item}")
            elif isinstance(item, _dt.datetime):
                lines.append(f'{f.name} = "{item.isoformat()}"')
            else:
                lines.append(f'{f.name} = "{item}"')
        lines += tables
        lines.append("")
    return "\n".join(lines)
