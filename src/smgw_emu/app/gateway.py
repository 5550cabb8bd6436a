"""One emulated gateway: configuration, state, clock and network adapters wired together."""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smgw_emu.app.api import ApiError, ApiRequest, ApiResponse, Router
from smgw_emu.app.cls import ClsProxyService
from smgw_emu.app.config import GatewayConfig
from smgw_emu.app.cosem_api import CosemApi
from smgw_emu.app.datatransfer import DataTransferService
from smgw_emu.app.han import HanConsumerService
from smgw_emu.app.firmware import FirmwareService
from smgw_emu.app.operating import OperatingStateService
from smgw_emu.app.operations import Operations
from smgw_emu.app.journal import LEVEL_ERROR, LEVEL_WARNING, Journal
from smgw_emu.app.meterchange import MeterChangeService
from smgw_emu.app.meters import MeterService
from smgw_emu.app.keybanks import KeyBankService
from smgw_emu.app.localidentity import LocalIdentityService
from smgw_emu.core.clock import Clock, make_clock
from smgw_emu.core.session import SessionLimits
from smgw_emu.core.wakeup import WakeUpVerifier
from smgw_emu.net.admin_service import AdminServiceChannel
from smgw_emu.net.info_report import InfoReportChannel
from smgw_emu.net.management import ChannelError, ManagementChannel
from smgw_emu.net.timers import Timers
from smgw_emu.net.tls import PROFILES, PeerCheck, certificate_fingerprint
from smgw_emu.net.wakeup_listener import RateLimits, WakeUpListener
from smgw_emu.pki import PkiDir, PkiError
from smgw_emu.store import StateStore

log = logging.getLogger("smgw_emu.gateway")


class GatewayStartError(Exception):
    """The gateway cannot start; the message says why (no traceback for the user)."""


@dataclass
class GwaEndpoint:
    """Where and who the GWA is: the communication profile of the GWA, as the gateway holds it."""

    id: str
    host: str
    management_port: int
    admin_service_url: str
    info_report_url: str
    tls_certificate_der: bytes
    signature_certificate_der: bytes
    encryption_certificate_der: bytes

    def to_json(self) -> dict:
        return {
            "id": self.id, "host": self.host, "management_port": self.management_port,
            "admin_service_url": self.admin_service_url, "info_report_url": self.info_report_url,
            "tls_certificate": self.tls_certificate_der.hex(),
            "signature_certificate": self.signature_certificate_der.hex(),
            "encryption_certificate": self.encryption_certificate_der.hex(),
        }

    @classmethod
    def from_json(cls, data: dict) -> "GwaEndpoint":
        return cls(
            data["id"], data["host"], int(data["management_port"]), data["admin_service_url"],
            data["info_report_url"], bytes.fromhex(data["tls_certificate"]),
            bytes.fromhex(data["signature_certificate"]), bytes.fromhex(data["encryption_certificate"]),
        )


GWA_PROFILE_KEY = "gwa-communication-profile"
#: [ours] How long a wake-up that arrived during an open channel stays pending should that
#: channel close (it crossed the GWA's close on the wire).
PENDING_WAKEUP_GRACE_S = 2.0


class Gateway:
    def __init__(self, config: GatewayConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.id = config.gateway.id
        self.clock = clock or make_clock(config.clock.mode, config.clock.start)
        self.timers = Timers(self.clock)
        self.store: StateStore | None = None
        self.journal: Journal | None = None
        self.management: ManagementChannel | None = None
        self._connecting: asyncio.Task | None = None
        self.wakeup_listener: WakeUpListener | None = None
        self.info_report: InfoReportChannel | None = None
        self.admin_service: AdminServiceChannel | None = None
        self.firmware: FirmwareService | None = None
        self.operating: OperatingStateService | None = None
        self.meters: MeterService | None = None
        self.operations: Operations | None = None
        self.cls: ClsProxyService | None = None
        self.han: HanConsumerService | None = None
        self._tasks: list[asyncio.Task] = []
        self.router: Router | None = None
        self.channels_opened = 0
        self._pending_wakeup_at: float | None = None
        self._stopping = False
        self._peer_check: PeerCheck | None = None
        #: Called with each MANAGEMENT channel once it is open and in AUTH (e.g. 6.6.8 in app/keybanks.py).
        self.on_channel_opened: list = []
        self.keybanks = KeyBankService(self)  # GWA key banks, GWA change, trust anchors (6.6, 6.7)
        self.identities = LocalIdentityService(self)  # the gateway's HAN and LMN TLS identities (6.7.5, 6.7.6)

    # -- start and stop ----------------------------------------------------------------------
    async def start(self) -> None:
        from smgw_emu.store import StoreError

        cfg = self.config
        self._stopping = False
        try:
            self.pki = PkiDir.open(cfg.gateway.pki_dir)
        except PkiError as exc:
            raise GatewayStartError(str(exc)) from None
        try:
            self.store = StateStore(cfg.gateway.state_dir, durability=cfg.store.durability)
        except StoreError as exc:
            raise GatewayStartError(str(exc)) from None
        self.journal = Journal(self.store, self.clock, self.id)
        self.gwa = self._load_or_seed_gwa_profile()  # the GWA of the key bank in use (app/keybanks.py)
        self.identities.load()
        profile = PROFILES[cfg.tls.profile]
        if cfg.tls.allow_tls13:
            from dataclasses import replace

            profile = replace(profile, allow_tls13=True)
        self.tls_profile = profile
        try:
            self.tls_context = self.keybanks.client_context()  # trusting the trust anchors of the store
        except Exception as exc:  # TlsConfigError and friends: say it, don't trace it
            raise GatewayStartError(f"TLS set-up failed: {exc}") from None
        self.router = Router(journal=self.journal, auth_refused_status=cfg.policy.auth_refused_status)
        self._install_routes(self.router)
        self.cosem = CosemApi(self)  # COSEM model, profiles, CMS on the wire (/smgw/cosem/...)
        self.cosem.start()
        self.cosem.install(self.router)
        self.info_report = InfoReportChannel(
            store=self.store, url=self.gwa.info_report_url, ssl_context=self.tls_context,
            peer_check=self.gwa_peer_check(), timers=self.timers, journal=self.journal,
            retry_initial=cfg.channels.retry_initial_s, retry_max=cfg.channels.retry_max_s,
        )
        self.journal.on_event_enqueued.append(self.info_report.notify)
        self.admin_service = AdminServiceChannel(
            base_url=self.gwa.admin_service_url, ssl_context=self.tls_context, peer_check=self.gwa_peer_check(),
            timers=self.timers, journal=self.journal, retry_initial=cfg.channels.retry_initial_s,
            retry_max=cfg.channels.retry_max_s,
        )
        self.firmware = FirmwareService(self)  # 6.1: the FirmwareUpdate object; resumes an interrupted download
        self.firmware.start()
        self.meters = MeterService(self)  # LMN: pairing, crypto reset, readings (figs. 30-32, 56)
        self.meters.start()
        self.meter_change = MeterChangeService(self)  # 6.3 meter change (fig. 21): change_meter of a meter profile
        self.meter_change.start()
        self.operations = Operations(self)  # time sync, self test, logs, device data, removal signal
        self.operations.start()  # runs the start-up self test (its result goes into gateway-started)
        self.operating = OperatingStateService(self)  # 6.2: delivery -> normal operation (fig. 20)
        self.operating.start()
        self.datatransfer = DataTransferService(self)  # meter data to the EMT, terminate (app/datatransfer.py)
        self.datatransfer.start()
        self.cls = ClsProxyService(self)  # 6.8 CLS proxy: HAN interface, HKS 3/4/5 relays (app/cls.py)
        await self.cls.start()
        self.han = HanConsumerService(self)  # the consumer's view at the HAN interface, TRuDI (app/han.py)
        await self.han.start()  # only with han.enabled
        self.verifier = WakeUpVerifier(
            self.id, [x509.load_der_x509_certificate(self.gwa.signature_certificate_der)],
            window=_dt.timedelta(seconds=cfg.wakeup.window_s), max_size=cfg.wakeup.max_packet_bytes,
        )
        self._restore_nonces()
        self.wakeup_listener = WakeUpListener(
            self.verifier, on_accept=self._on_wakeup, on_reject=self._on_wakeup_rejected,
            host=cfg.wakeup.host, port=cfg.wakeup.port, clock=self.clock.now, monotonic=self.clock.monotonic,
            rate_limits=RateLimits(per_source_rate=cfg.wakeup.per_source_rate, per_source_burst=cfg.wakeup.per_source_burst),
        )
        try:
            await self.wakeup_listener.start()
        except OSError as exc:
            raise GatewayStartError(f"cannot listen for wake-up packets on {cfg.wakeup.host}:{cfg.wakeup.port}: {exc.strerror or exc}") from None
        self._tasks.append(asyncio.create_task(self.info_report.run(), name=f"{self.id}-info-report"))
        self.keybanks.start()  # a GWA change's fallback timer survives restarts
        # 6.5.3 "SMGW gestartet": logged and reported to the GWA on the INFO-REPORT channel.
        self.journal.emit_now("gateway-started", f"gateway {self.id} started; wake-up on {self.wakeup_address[0]}:{self.wakeup_address[1]}/udp",
                              firmware=self.firmware.active_version, **self.operations.startup_details())
        self.operations.after_start()  # 6.5.2: a changed WAN address is reported

    async def stop(self) -> None:
        self._stopping = True
        if self.wakeup_listener:
            await self.wakeup_listener.close()
        if self._connect_in_progress:
            assert self._connecting is not None
            self._connecting.cancel()
            try:
                await self._connecting
            except (asyncio.CancelledError, Exception):
                pass
        if self.management and self.management.is_open:
            self.management.close("gateway-stopping")
            try:
                await asyncio.wait_for(self.management.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
        if self.firmware:
            await self.firmware.stop()
        if self.meters:
            await self.meters.stop()
        if self.operations:
            await self.operations.stop()
        if getattr(self, "datatransfer", None):
            await self.datatransfer.stop()
        if self.cls:
            await self.cls.stop()
        if self.han:
            await self.han.stop()
        await self.identities.stop()
        self.keybanks.stop()
        for task in self._tasks + ([self._connecting] if self._connecting else []):
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.store:
            self.journal("gateway-stopped", f"gateway {self.id} stopped")
            self.store.close()
            self.store = None

    @property
    def wakeup_address(self) -> tuple[str, int]:
        assert self.wakeup_listener is not None
        return self.wakeup_listener.address

    # -- the GWA's communication profile -----------------------------------------------------
    def _load_or_seed_gwa_profile(self) -> GwaEndpoint:
        """The GWA of the key bank in use; at the first start, personalisation from the [gwa]
        section and the PKI directory into key bank ACTIVE (app/keybanks.py)."""
        return self.keybanks.load()

    def _gwa_endpoint_from_config(self) -> GwaEndpoint:
        """The GWA's communication profile as the configuration and the PKI directory give it."""
        gwa = self.config.gwa

        def der(name: str) -> bytes:
            path = self.pki.root / name
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise GatewayStartError(f"gwa certificate {path} unreadable: {exc}") from None
            return cert.public_bytes(serialization.Encoding.DER)

        return GwaEndpoint(
            gwa.id, gwa.host, gwa.management_port, gwa.admin_service_url, gwa.info_report_url,
            der(gwa.tls_certificate), der(gwa.signature_certificate), der(gwa.encryption_certificate),
        )

    def gwa_peer_check(self) -> PeerCheck:
        """The check for the GWA of the current communication profile (new when that changes)."""
        fingerprint = certificate_fingerprint(self.gwa.tls_certificate_der)
        if self._peer_check is None:
            self._peer_check = PeerCheck({fingerprint})
        elif fingerprint not in self._peer_check.expected_fingerprints:
            self._peer_check.pin({fingerprint})  # in place: open channels and re-checks follow (6.6)
        return self._peer_check

    # -- wake-up (5.1) and MANAGEMENT channel (5.2) ------------------------------------------
    def _on_wakeup(self, decision, addr) -> None:
        assert self.store is not None and self.journal is not None
        now = self.clock.now()
        expires = self.verifier.seen_nonces().get(decision.content.nonce)
        busy = self.management_busy
        with self.journal.together() as tx:  # the nonce and the log entry in one commit
            if expires is not None:
                tx.remember_nonce(decision.content.nonce, expires.isoformat(), now.isoformat())
            if busy and self._connect_in_progress:
                # Connecting or retrying already (5.2): no second attempt, no second retry loop.
                self.journal("wakeup-ignored", f"valid wake-up from {addr[0]} while connecting to the GWA: no second connection attempt",
                             source=addr[0])
            elif busy:
                # No second channel. But a GWA that has just closed the channel may wake us before
                # the close reached us: keep the wake-up pending for a moment (docs/decisions.md).
                self._pending_wakeup_at = self.clock.monotonic()
                self.journal("wakeup-ignored", f"valid wake-up from {addr[0]} while a MANAGEMENT channel is open: no second channel"
                             f" (pending {PENDING_WAKEUP_GRACE_S:g} s in case the channel is closing)", source=addr[0])
            else:
                self.journal("wakeup-accepted", f"valid wake-up from {addr[0]}; connecting to the GWA at {self.gwa.host}:{self.gwa.management_port}",
                             source=addr[0])
        if busy:
            return
        self._start_connecting()

    def _start_connecting(self) -> None:
        """The MANAGEMENT connect for a wake-up, retried while the GWA is unreachable (5.2)."""
        self._connecting = asyncio.create_task(self.connect_management_retrying("wakeup"), name=f"{self.id}-connect")

    def _on_wakeup_rejected(self, reason: str, addr, details=None) -> None:
        assert self.journal is not None
        self.journal("wakeup-rejected", f"wake-up from {addr[0]}:{addr[1]} rejected: {reason}",
                     level=LEVEL_WARNING, outcome=1, reason=reason, source=addr[0])

    def _restore_nonces(self) -> None:
        assert self.store is not None
        now = self.clock.now()
        stored = self.store.nonces(now.isoformat())
        self.verifier.restore_nonces({bytes(n): _dt.datetime.fromisoformat(t) for n, t in stored}, now)

    @property
    def _connect_in_progress(self) -> bool:
        """A MANAGEMENT connect, or its retries (5.2), is running."""
        return self._connecting is not None and not self._connecting.done()

    @property
    def management_busy(self) -> bool:
        return self._connect_in_progress or (self.management is not None and self.management.is_open)

    async def connect_management_retrying(self, trigger: str = "api") -> ManagementChannel | None:
        """Open the MANAGEMENT channel; while the GWA is unreachable (connect-failed), retry
        `[channels] management_max_retries` times, `retry_initial_s` doubling to `retry_max_s` apart
        on the gateway clock (docs/decisions.md "Channel timing"). A failed handshake or a rejected
        peer is not retried: the next attempt would meet the same certificate."""
        assert self.journal is not None
        ch = self.config.channels
        attempts = 1 + ch.management_max_retries
        for attempt in range(1, attempts + 1):
            try:
                return await self._open_management()
            except ChannelError as exc:
                if exc.reason != "connect-failed" or self._stopping:
                    return None
                if attempt == attempts:
                    self.journal("management-connect-abandoned",
                                 f"MANAGEMENT channel to {self.gwa.host}:{self.gwa.management_port}: attempt {attempt} of {attempts} failed;"
                                 " no further attempt until the next wake-up", level=LEVEL_ERROR, outcome=1,
                                 attempt=attempt, attempts=attempts, trigger=trigger)
                    return None
                delay = min(ch.retry_max_s, ch.retry_initial_s * 2 ** (attempt - 1))
                self.journal("management-connect-retry",
                             f"MANAGEMENT channel to {self.gwa.host}:{self.gwa.management_port}: attempt {attempt} of {attempts} failed;"
                             f" next attempt in {delay:g} s", level=LEVEL_WARNING, outcome=1,
                             attempt=attempt, attempts=attempts, next_delay_s=f"{delay:g}", trigger=trigger)
                await self.timers.sleep(delay)
        return None

    async def connect_management(self, trigger: str = "api") -> ManagementChannel | None:
        """Open the MANAGEMENT channel to the GWA of the communication profile (one attempt)."""
        try:
            return await self._open_management()
        except ChannelError:
            return None

    async def _open_management(self) -> ManagementChannel:
        """One attempt at the MANAGEMENT channel; raises ChannelError (logged by the channel)."""
        assert self.router is not None and self.journal is not None
        ch = self.config.channels
        channel = ManagementChannel(
            host=self.gwa.host, port=self.gwa.management_port, ssl_context=self.tls_context,
            peer_check=self.gwa_peer_check(), handler=self.router.handle_aiohttp, timers=self.timers,
            limits=SessionLimits(ch.idle_timeout_s, ch.auth_timeout_s, ch.max_session_lifetime_s),
            journal=self.journal, max_request_bytes=self.config.policy.max_request_bytes,
            connect_timeout=ch.connect_timeout_s,
        )
        await channel.open()
        self.management = channel
        self.channels_opened += 1
        self._pending_wakeup_at = None
        self._tasks.append(asyncio.create_task(self._after_channel(channel)))
        for hook in self.on_channel_opened:
            hook(channel)
        return channel

    async def _after_channel(self, channel: ManagementChannel) -> None:
        """Serve a wake-up that arrived while this channel was closing."""
        await channel.wait_closed()
        self._tasks = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
        pending = self._pending_wakeup_at
        if pending is None or channel.close_reason == "gateway-stopping":
            return
        self._pending_wakeup_at = None
        if self.clock.monotonic() - pending <= PENDING_WAKEUP_GRACE_S and not self.management_busy:
            assert self.journal is not None
            self.journal("wakeup-pending-served", "channel closed right after a wake-up: connecting to the GWA for it")
            self._start_connecting()

    # -- routes of this layer ----------------------------------------------------------------
    def _install_routes(self, router: Router) -> None:
        self.keybanks.install(router)  # /smgw/keybanks, /smgw/trust/roots (6.6, 6.7.3, 6.7.4)
        self.identities.install(router)  # /smgw/keys/han, /smgw/keys/lmn (6.7.5, 6.7.6)
        router.add("GET", r"/smgw/auth", self._get_auth, admin=False, name="auth-state")
        router.add("POST", r"/smgw/auth", self._post_auth, admin=False, name="auth-establish")
        router.add("DELETE", r"/smgw/auth", self._delete_auth, admin=False, name="auth-end")
        router.add("GET", r"/smgw/info", self._get_info, name="gateway-info")
        router.add("POST", r"/smgw/admin-service/fetch", self._post_admin_service_fetch, name="admin-service-fetch")

    async def _get_auth(self, request: ApiRequest) -> ApiResponse:
        channel = request.channel
        state = "established" if channel and channel.authenticated() else "none"
        return ApiResponse(200, _simple_xml("auth", state=state, gateway=self.id))

    async def _post_auth(self, request: ApiRequest) -> ApiResponse:
        assert request.channel is not None
        problem = request.channel.reestablish_auth()
        if problem:
            raise ApiError(self.config.policy.auth_refused_status, "auth-refused", problem)
        return ApiResponse(200, _simple_xml("auth", state="established", gateway=self.id))

    async def _delete_auth(self, request: ApiRequest) -> ApiResponse:
        assert request.channel is not None
        request.channel.end_auth("ended-by-gwa")
        return ApiResponse(200, _simple_xml("auth", state="none", gateway=self.id))

    async def _post_admin_service_fetch(self, request: ApiRequest) -> ApiResponse:
        """[ours] Make the gateway fetch a named resource over ADMIN-SERVICE (5.4/5.5) and report
        its size and SHA-256: the diagnostic a lab uses to prove that path before a firmware
        download (6.1) relies on it."""
        import hashlib

        from smgw_emu.core.xmlsafe import XmlInputError, parse_xml
        from smgw_emu.net.admin_service import AdminServiceError

        try:
            root = parse_xml(request.body, max_depth=self.config.policy.xml_max_depth)
        except XmlInputError as exc:
            raise ApiError(400, exc.reason, f"request body: {exc}") from None
        name = root.get("name", "")
        if root.tag != f"{{{GATEWAY_NS}}}fetch" or not name:
            raise ApiError(400, "bad-request", 'expected <fetch xmlns="urn:smgw-emu:gateway:1" name="..."/>', "name")
        assert self.admin_service is not None
        try:
            data = await self.admin_service.fetch(name, max_bytes=self.config.policy.max_request_bytes * 64)
        except AdminServiceError as exc:
            raise ApiError(502, f"admin-service-{exc.reason}", str(exc)) from None
        return ApiResponse(200, _simple_xml("fetched", name=name, size=str(len(data)), sha256=hashlib.sha256(data).hexdigest()))

    async def _get_info(self, request: ApiRequest) -> ApiResponse:
        return ApiResponse(200, _simple_xml("gateway", id=self.id, time=self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")))


GATEWAY_NS = "urn:smgw-emu:gateway:1"


def _simple_xml(tag: str, **attributes: str) -> bytes:
    from lxml import etree

    root = etree.Element(f"{{{GATEWAY_NS}}}{tag}", nsmap={None: GATEWAY_NS})
    for key, value in attributes.items():
        root.set(key, value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
