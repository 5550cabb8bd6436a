"""The CLS proxy of one gateway (Lastenheft 6.8, figs. 74-77): wiring of the rules in
`smgw_emu.core.cls` and the sockets of `smgw_emu.net.cls_proxy` with the COSEM model, the journal
and the MANAGEMENT channel.

* HKS 3 (fig. 74): the HAN listener hands over each CLS device that completed the TLS handshake;
  the device is named by its certificate, names the EMT in a SOCKS5 CONNECT, and is checked
  against the CLS proxy profiles; the gateway opens TLS to the EMT and relays.
* HKS 4 (fig. 75): method 2 ``connect`` of a CLS proxy profile (POST .../28500-0000800005ff/methods/2).
* HKS 5 (fig. 76): a periodic check on the gateway's clock opens the standing channel of every
  HKS 5 profile that has none.
* Fig. 77: method 1 ``disconnect`` ends the profile's open connection.

Log entries (system log): ``cls-connection-refused`` (a HAN connection refused before anything
was relayed: reason tls-handshake-failed, bad-certificate, unknown-device, socks-error,
emt-not-allowed, wrong-hks, busy), ``cls-connection-authorised`` (HKS 3),
``cls-connection-triggered`` (HKS 4, 5), ``cls-bandwidth-limited``. Events to the GWA (and the
system log): ``cls-connection-opened``, ``cls-connection-failed`` (a leg could not be opened),
``cls-connection-closed`` (with the reason, the bytes each way and the duration).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections import Counter
from typing import TYPE_CHECKING

from smgw_emu.app.api import ApiError
from smgw_emu.app.journal import LEVEL_INFO, LEVEL_WARNING
from smgw_emu.core.cls import (
    REPLY_CONNECTION_REFUSED,
    REPLY_GENERAL_FAILURE,
    REPLY_SUCCEEDED,
    SOCKS_MAX_BYTES,
    ClsConnection,
    ClsProfile,
    ClsRefused,
    SocksError,
    authorise_hks3,
    check_cls_certificate,
    cls_device_id_of,
    parse_socks_greeting,
    parse_socks_request,
    socks_method_reply,
    socks_reply,
)
from smgw_emu.core.cosem import CosemObject, DlmsValue, LogicalDevice
from smgw_emu.core.profiles import PROFILE_KINDS, StateConflict
from smgw_emu.net.cls_proxy import CLOSE_TIMEOUT_S, HanListener, Leg, LegError, Relay, dial
from smgw_emu.net.tls import PROFILES, PeerCheck, certificate_fingerprint, client_context, server_context

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway

#: [ours] The SOCKS5 reply a CLS device gets when the EMT leg fails (HKS 3).
EMT_FAILURE_REPLY = {"connect-failed": REPLY_CONNECTION_REFUSED}
#: Side names in error codes: cls-emt-<reason>, cls-device-<reason>.
SIDE_CODE = {"emt": "emt", "cls": "device"}


class ConnectFailed(Exception):
    def __init__(self, side: str, error: LegError) -> None:
        super().__init__(str(error))
        self.side, self.error = side, error


class ClsProxyService:
    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        self.config = gateway.config.cls
        self.relays: dict[str, Relay] = {}     # profile id -> its open connection
        self._setting_up: set[str] = set()     # profile ids with a connection being set up
        self._suspended: set[str] = set()      # HKS 5 profiles the GWA disconnected
        self._numbers = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._tick = None
        self.listener: HanListener | None = None
        self.refused: Counter[str] = Counter()

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        from smgw_emu.app.gateway import GatewayStartError

        gw = self.gateway
        pki = gw.pki
        han = PROFILES["han"]
        # [ours] On the HAN the gateway presents its TLS certificate (gateway-tls); fig. 72 (HAN
        # certificate change) may give it one of its own.
        # (app/localidentity.py: its HAN identity, the PKI's gateway-tls until the first change)
        identity = {**gw.identities.files("han"), "cafile": pki.root_ca}
        try:
            self.han_server_context = server_context(han, **identity)
            self.han_client_context = client_context(han, **identity)
        except Exception as exc:
            raise GatewayStartError(f"HAN TLS set-up failed: {exc}") from None
        self.listener = HanListener(
            host=self.config.han_host, port=self.config.han_port, ssl_context=self.han_server_context,
            handshake_timeout=gw.config.channels.connect_timeout_s, on_leg=self._on_han_leg,
            on_refused=self._on_han_refused,
        )
        try:
            await self.listener.start()
        except OSError as exc:
            raise GatewayStartError(f"cannot listen for CLS devices on {self.config.han_host}:{self.config.han_port}: "
                                    f"{exc.strerror or exc}") from None
        pk = PROFILE_KINDS["clsprofile"]
        gw.cosem.method_hooks[(pk.kind, pk.obis.hex)] = self._method  # connect (HKS 4), disconnect (77)
        gw.cosem.commit_hooks.append(self._on_profile_change)
        self._arm_tick()

    async def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self.listener is not None:
            await self.listener.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        relays = list(self.relays.values())
        for relay in relays:
            relay.close("gateway-stopping")
        if relays:
            await asyncio.wait([asyncio.ensure_future(r.wait_closed()) for r in relays], timeout=2 * CLOSE_TIMEOUT_S)

    @property
    def han_address(self) -> tuple[str, int]:
        assert self.listener is not None
        return self.listener.address

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the profiles, as the COSEM model holds them -----------------------------------------
    def profiles(self) -> list[ClsProfile]:
        model = self.gateway.cosem.model
        pk = PROFILE_KINDS["clsprofile"]
        result = []
        for ldev in model.ldevs(pk.kind):
            for obj in model.objects(ldev):
                if (obj.class_id, obj.obis) == (pk.class_id, pk.obis):
                    result.append(_cls_profile(obj))
        return result

    def profile(self, profile_id: str) -> ClsProfile | None:
        return next((p for p in self.profiles() if p.profile_id == profile_id), None)

    def emt_endpoint(self, emt_id: str) -> tuple[str, int, bytes] | None:
        """Host, port and TLS certificate of the EMT's communication profile."""
        model = self.gateway.cosem.model
        pk = PROFILE_KINDS["commprofile"]
        for ldev in model.ldevs(pk.kind):
            if ldev.id != emt_id:
                continue
            for obj in model.objects(ldev):
                if (obj.class_id, obj.obis) == (pk.class_id, pk.obis):
                    return _value(obj, "host"), _value(obj, "port"), _value(obj, "tls_certificate")
        return None

    def _busy(self, profile_id: str) -> bool:
        return profile_id in self.relays or profile_id in self._setting_up

    def _new_connection(self, profile: ClsProfile, initiator: str) -> ClsConnection:
        number = next(self._numbers)
        return ClsConnection(f"{profile.profile_id}/{number}", profile, initiator, self.gateway.clock.monotonic())

    # -- journal -----------------------------------------------------------------------------
    def _log(self, event: str, message: str, details: dict[str, str], *, level: int = LEVEL_INFO, outcome: int = 0) -> None:
        self.gateway.journal(event, message, level=level, outcome=outcome, **details)

    def _report(self, event: str, message: str, details: dict[str, str], *, level: int = LEVEL_INFO, outcome: int = 0) -> None:
        """A system-log entry and the same event for the GWA, in one transaction."""
        journal = self.gateway.journal
        with journal.together() as tx:
            journal(event, message, tx=tx, level=level, outcome=outcome, **details)
            journal.emit(tx, event, **details)

    def _refuse(self, reason: str, message: str, **details: str) -> None:
        self.refused[reason] += 1
        self._log("cls-connection-refused", message, {"reason": reason, **details}, level=LEVEL_WARNING, outcome=1)

    def _on_han_refused(self, reason: str, message: str, peer: str) -> None:
        self._refuse(reason, message, peer=peer)

    # -- HKS 3: a CLS device connects (fig. 74) ----------------------------------------------
    async def _on_han_leg(self, leg: Leg) -> None:
        try:
            device = cls_device_id_of(leg.peer_der)
        except ClsRefused as exc:
            self._refuse(exc.reason, f"HAN connection from {leg.peer} refused: {exc}", peer=leg.peer)
            await self._close_leg(leg)
            return
        if not any(p.cls_device_id == device for p in self.profiles()):
            self._refuse("unknown-device", f"HAN connection from {leg.peer} refused: no CLS proxy profile names the "
                                           f"CLS device {device}", peer=leg.peer, device=device)
            await self._close_leg(leg)
            return
        timeout = self.gateway.config.channels.connect_timeout_s
        try:
            request, leftover = await asyncio.wait_for(self._read_socks(leg), timeout)
            endpoints = {p.emt_id: e[:2] for p in self.profiles() if (e := self.emt_endpoint(p.emt_id))}
            profile = authorise_hks3(self.profiles(), device, request, endpoints)
            if self._busy(profile.profile_id):
                raise ClsRefused("busy", f"profile {profile.profile_id} already has a connection", REPLY_GENERAL_FAILURE)
        except ClsRefused as exc:
            await self._send(leg, socks_method_reply(False) if exc.socks_reply is None else socks_reply(exc.socks_reply))
            self._refuse(exc.reason, f"CLS device {device} ({leg.peer}) refused: {exc}", peer=leg.peer, device=device)
            await self._close_leg(leg)
            return
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError) as exc:
            detail = "no complete SOCKS5 request in time" if isinstance(exc, asyncio.TimeoutError) else "the connection ended before a complete SOCKS5 request"
            self._refuse("socks-error", f"CLS device {device} ({leg.peer}) refused: {detail}", peer=leg.peer, device=device)
            await self._close_leg(leg)
            return
        connection = self._new_connection(profile, "cls")
        self._setting_up.add(profile.profile_id)
        try:
            self._log("cls-connection-authorised", f"CLS device {device} may reach EMT {profile.emt_id} (profile "
                      f"{profile.profile_id}, HKS 3); connecting to the EMT", {**connection.details(), "peer": leg.peer})
            try:
                emt = await self._dial_emt(profile)
            except LegError as exc:
                await self._send(leg, socks_reply(EMT_FAILURE_REPLY.get(exc.reason, REPLY_GENERAL_FAILURE)))
                await self._close_leg(leg)
                self._failed(connection, "emt", exc)
                return
            if not await self._send(leg, socks_reply(REPLY_SUCCEEDED)):
                await self._close_leg(emt)
                self._failed(connection, "cls", LegError("connect-failed", "the CLS device left before the SOCKS5 reply"))
                return
            self._start_relay(connection, emt, leg, initial=leftover)
        finally:
            self._setting_up.discard(profile.profile_id)

    async def _read_socks(self, leg: Leg):
        buffer = bytearray()

        async def more() -> None:
            chunk = await leg.reader.read(SOCKS_MAX_BYTES)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buffer), None)
            buffer.extend(chunk)
            if len(buffer) > SOCKS_MAX_BYTES * 2:
                raise SocksError("SOCKS5 set-up longer than any valid greeting and request", None)

        while (greeting := parse_socks_greeting(bytes(buffer))) is None:
            await more()
        del buffer[:greeting[0]]
        leg.writer.write(socks_method_reply(True))
        await leg.writer.drain()
        while (parsed := parse_socks_request(bytes(buffer))) is None:
            await more()
        consumed, request = parsed
        return request, bytes(buffer[consumed:])

    @staticmethod
    async def _send(leg: Leg, data: bytes) -> bool:
        try:
            leg.writer.write(data)
            await leg.writer.drain()
            return True
        except (ConnectionError, ssl.SSLError, OSError):
            return False

    @staticmethod
    async def _close_leg(leg: Leg) -> None:
        leg.close()
        await leg.wait_closed()

    # -- legs --------------------------------------------------------------------------------
    async def _dial_emt(self, profile: ClsProfile) -> Leg:
        """WAN: TLS to the EMT's address, its certificate pinned to the one of its communication profile."""
        endpoint = self.emt_endpoint(profile.emt_id)
        if endpoint is None:  # validation and profile-in-use keep this from happening
            raise LegError("connect-failed", f"no communication profile for EMT {profile.emt_id}")
        host, port, certificate = endpoint
        check = PeerCheck({certificate_fingerprint(certificate)}).problem
        return await dial("emt", host, port, self.gateway.tls_context,
                          timeout=self.gateway.config.channels.connect_timeout_s, check=check)

    async def _dial_cls(self, profile: ClsProfile) -> Leg:
        """HAN: TLS to the CLS device at the profile's address; its certificate must name the profile's device."""
        host, port = profile.cls_endpoint
        return await dial("cls", host, port, self.han_client_context,
                          timeout=self.gateway.config.channels.connect_timeout_s,
                          check=lambda der: check_cls_certificate(der, profile.cls_device_id))

    async def _open_dialled(self, profile: ClsProfile, trigger: str) -> ClsConnection:
        """HKS 4 and 5: the gateway opens TLS to the EMT, then to the CLS device, then relays."""
        connection = self._new_connection(profile, profile.scenario.initiator)
        pid = profile.profile_id
        self._setting_up.add(pid)
        try:
            self._log("cls-connection-triggered", f"CLS connection of profile {pid} (HKS {profile.hks}) triggered by "
                      f"{trigger}; connecting to EMT {profile.emt_id}, then to CLS device {profile.cls_device_id}",
                      {**connection.details(), "trigger": trigger})
            try:
                emt = await self._dial_emt(profile)
            except LegError as exc:
                self._failed(connection, "emt", exc)
                raise ConnectFailed("emt", exc) from None
            try:
                cls = await self._dial_cls(profile)
            except LegError as exc:
                await self._close_leg(emt)
                self._failed(connection, "cls", exc)
                raise ConnectFailed("cls", exc) from None
            self._start_relay(connection, emt, cls)
            return connection
        finally:
            self._setting_up.discard(pid)

    def _failed(self, connection: ClsConnection, side: str, exc: LegError) -> None:
        connection.close(f"{SIDE_CODE[side]}-{exc.reason}", self.gateway.clock.monotonic())
        details = {k: v for k, v in connection.details().items() if k not in ("bytes-to-emt", "bytes-to-cls", "duration-s")}
        details.update({"side": SIDE_CODE[side], "error": exc.reason})
        self._report("cls-connection-failed", f"CLS connection {connection.connection_id} not opened: {exc}", details,
                     level=LEVEL_WARNING, outcome=1)

    # -- the relay -----------------------------------------------------------------------------
    def _start_relay(self, connection: ClsConnection, emt: Leg, cls: Leg, initial: bytes = b"") -> None:
        relay = Relay(connection, emt, cls, timers=self.gateway.timers, policy=self.config.bandwidth_policy,
                      on_limited=self._on_limited, on_closed=self._on_closed, initial_to_emt=initial)
        self.relays[connection.profile.profile_id] = relay
        relay.start()
        p = connection.profile
        self._report("cls-connection-opened", f"CLS connection {connection.connection_id} open: CLS device "
                     f"{p.cls_device_id} <-> EMT {p.emt_id} (HKS {p.hks}, at most {p.max_bandwidth_kbps} kbit/s, "
                     f"{p.max_session_s} s)", connection.details())

    def _on_limited(self, connection: ClsConnection, direction: str) -> None:
        policy = self.config.bandwidth_policy
        action = "held back to the profile's rate" if policy == "shape" else "the connection is closed"
        self._log("cls-bandwidth-limited", f"CLS connection {connection.connection_id}: bytes {direction} exceed "
                  f"{connection.profile.max_bandwidth_kbps} kbit/s; {action}",
                  {**connection.details(), "direction": direction, "policy": policy}, level=LEVEL_WARNING, outcome=1)

    def _on_closed(self, connection: ClsConnection) -> None:
        pid = connection.profile.profile_id
        relay = self.relays.get(pid)
        if relay is not None and relay.connection is connection:
            del self.relays[pid]
        if self.gateway.store is None:  # the gateway has stopped already
            return
        limit = connection.reason in ("session-limit", "bandwidth-limit")
        self._report("cls-connection-closed", f"CLS connection {connection.connection_id} closed ({connection.reason}); "
                     f"{connection.bytes['to-emt']} bytes to the EMT, {connection.bytes['to-cls']} to the CLS device",
                     connection.details(), level=LEVEL_WARNING if limit else LEVEL_INFO)

    # -- methods of the CLS proxy profile (figs. 75, 77) -------------------------------------
    async def _method(self, request, resolved, argument: DlmsValue | None) -> DlmsValue:
        """The CosemApi method hook of the CLS proxy profile object (role and argument checked)."""
        handler = {"connect": self._connect_method, "disconnect": self._disconnect_method}[resolved.method.name]
        return await handler(resolved.ldev, resolved.obj, argument)

    async def _connect_method(self, ldev: LogicalDevice, obj: CosemObject, argument: DlmsValue | None) -> DlmsValue:
        """Method 2 connect: the trigger of HKS 4 (fig. 75)."""
        profile = _cls_profile(obj)
        if profile.hks != 4:
            raise StateConflict(f"connect is the GWA's trigger of HKS 4; profile {profile.profile_id} is HKS {profile.hks}"
                                + (" (the CLS device connects itself)" if profile.hks == 3 else
                                   " (the gateway keeps its standing channel itself)"), field="hks")
        if self._busy(profile.profile_id):
            raise StateConflict(f"profile {profile.profile_id} already has a CLS connection", field="profile_id")
        try:
            connection = await self._open_dialled(profile, "gwa-connect")
        except ConnectFailed as exc:
            raise ApiError(502, f"cls-{SIDE_CODE[exc.side]}-{exc.error.reason}", str(exc),
                           "emt_id" if exc.side == "emt" else "cls_address") from None
        return DlmsValue("visible-string", connection.connection_id)

    async def _disconnect_method(self, ldev: LogicalDevice, obj: CosemObject, argument: DlmsValue | None) -> DlmsValue:
        """Method 1 disconnect (fig. 77): end the profile's open connection, both legs."""
        profile = _cls_profile(obj)
        relay = self.relays.get(profile.profile_id)
        if relay is None:
            message = (f"the CLS connection of profile {profile.profile_id} is still being set up"
                       if profile.profile_id in self._setting_up else f"profile {profile.profile_id} has no open CLS connection")
            raise StateConflict(message, field="profile_id")
        if profile.hks == 5:
            self._suspended.add(profile.profile_id)
        relay.close("disconnected-by-gwa")
        await asyncio.wait_for(relay.wait_closed(), 2 * CLOSE_TIMEOUT_S)
        return DlmsValue("visible-string", relay.connection.connection_id)

    def _on_profile_change(self, change) -> None:
        """[ours] A connection runs under the profile that allowed it: a change or deletion of that
        profile, or of its EMT's communication profile, ends it."""
        ldev = change.ldev
        if change.action not in ("update", "delete"):
            return
        if ldev.kind == "clsprofile":
            self._suspended.discard(ldev.id)
            relay = self.relays.get(ldev.id)
            if relay is not None:
                relay.close("profile-deleted" if change.action == "delete" else "profile-changed")
        elif ldev.kind == "commprofile":
            for relay in list(self.relays.values()):
                if relay.connection.profile.emt_id == ldev.id:
                    relay.close("emt-profile-changed")

    # -- HKS 5: the standing channels (fig. 76) ----------------------------------------------
    def _arm_tick(self) -> None:
        self._tick = self.gateway.timers.call_later(self.config.hks5_interval_s, self._on_tick)

    def _on_tick(self) -> None:
        self._arm_tick()
        for profile in self.profiles():
            if profile.hks == 5 and not self._busy(profile.profile_id) and profile.profile_id not in self._suspended:
                self._spawn(self._standing(profile))

    async def _standing(self, profile: ClsProfile) -> None:
        try:
            await self._open_dialled(profile, "standing-check")
        except ConnectFailed:
            pass  # reported (cls-connection-failed); the next check tries again


def _value(obj: CosemObject, name: str):
    attr = obj.cosem_class.attribute_named(name)
    return attr.spec.to_python(obj.peek(attr.index))


def _cls_profile(obj: CosemObject) -> ClsProfile:
    return ClsProfile(
        profile_id=_value(obj, "profile_id"), cls_device_id=_value(obj, "cls_device_id"), emt_id=_value(obj, "emt_id"),
        hks=_value(obj, "hks"), max_bandwidth_kbps=_value(obj, "max_bandwidth_kbps"),
        max_session_s=_value(obj, "max_session_s"), cls_address=_value(obj, "cls_address"),
    )
