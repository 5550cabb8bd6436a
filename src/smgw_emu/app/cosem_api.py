"""The COSEM resources of the MANAGEMENT channel: device discovery, profiles, attributes, methods,
and CMS containers on the wire (docs/domain.md §4, Lastenheft 5.10, 5.11, 6.4, 6.5.1).

A thin adapter: addressing, XML and CMS on the way in and out, one store transaction per
accepted change. What a change means and whether it is valid is decided by the sans-IO
`smgw_emu.core.profiles`. docs/wan-api.md describes every resource; docs/openapi.json is
generated from the routes installed here (`smgw-emu api openapi`).

    GET    /smgw/cosem                                   LDEV list (6.5.1, fig. 43)
    GET    /smgw/cosem/<kind>                            LDEVs of one kind
    GET    /smgw/cosem/<kind>/<ldev>                     object list (fig. 44)
    POST   /smgw/cosem/<kind>/<ldev>                     create a profile (its LDEV) or an object: 201
    DELETE /smgw/cosem/<kind>/<ldev>                     delete a profile: 204
    GET    /smgw/cosem/<kind>/<ldev>/<class>-<obis>      one object (readable attributes)
    PUT    /smgw/cosem/<kind>/<ldev>/<class>-<obis>      update the attributes given: 200
    DELETE /smgw/cosem/<kind>/<ldev>/<class>-<obis>      delete (a profile object: the profile): 204
    GET    .../attributes/<n>[?q.fromidx=&q.count= | ?q.fromtime=&q.totime=]
    PUT    .../attributes/<n>                            update one attribute: 200
    POST   .../methods/<n>                               invoke a method: 200

Bodies are COSEM XML (`application/xml`) or a CMS container (`application/pkcs7-mime`,
SignedData by the GWA inside AuthEnvelopedData for the gateway, 5.10). A GET with
`Accept: application/pkcs7-mime` is answered with the body signed by the gateway and encrypted
for the GWA (5.11).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import TYPE_CHECKING, Awaitable, Callable

from cryptography import x509

from smgw_emu import __version__
from smgw_emu.app.api import ApiError, ApiRequest, ApiResponse, Router
from smgw_emu.core import cms
from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.core.cosem import (
    BadSelector,
    CosemError,
    CosemModel,
    CosemObject,
    CosemXmlError,
    DlmsValue,
    LogicalDevice,
    ObisCode,
    ObjectAddress,
    UnknownLdev,
    parse_selector,
)
from smgw_emu.core.cosem import xmlcodec
from smgw_emu.core.cosem.jsoncodec import object_from_json, object_to_json
from smgw_emu.core.profiles import (
    GATEWAY_KIND,
    PROFILE_KINDS,
    ContainerError,
    ProfileChange,
    ProfileContext,
    Reading,
    WrongObject,
    plan_create,
    plan_delete,
    plan_invoke,
    plan_update,
)
from smgw_emu.core.xmlsafe import XmlInputError

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway

XML = "application/xml"
CMS = "application/pkcs7-mime"
XML_TYPES = ("application/xml", "text/xml")

#: [ours] OBIS codes of the objects of the gateway's own LDEV.
CLOCK_OBIS = ObisCode(0, 0, 1, 0, 0)
SYSTEM_LOG_OBIS = ObisCode(0, 0, 99, 98, 0)
FIRMWARE_OBIS = ObisCode(1, 0, 0, 2, 0)
#: The system-log object shows the most recent entries (selective access works within them).
LOG_WINDOW = 1_000

_PREFIX = r"/smgw/cosem"
_LDEV = _PREFIX + r"/(?P<kind>[^/]+)/(?P<ldev>[^/]+)"
_OBJECT = _LDEV + r"/(?P<object>[^/]+)"
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class UnsupportedMediaType(CosemError):
    code = "unsupported-media-type"
    http_status = 415


class CosemApi:
    """Owns the in-memory COSEM model of one gateway and serves it on the MANAGEMENT channel."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        self.model = CosemModel()
        self.started = False
        #: Methods of objects the gateway runs itself (e.g. the firmware update, app/firmware.py):
        #: (LDEV kind, OBIS hex) -> async (request, resolved, argument) -> result. The class's
        #: method definition and the argument type are checked here first.
        self.method_hooks: dict[tuple[str, str], Callable[..., Awaitable[DlmsValue]]] = {}
        #: Live objects another module serves (e.g. logs, self test, app/operations.py), by
        #: (LDEV kind, OBIS hex): `refresh_hooks` bring the object up to date before it is read;
        #: `read_hooks` answer GET .../attributes/<n> themselves: (request, resolved, selector) ->
        #: value, checking the role's access (selective access over a whole log, in the store).
        self.refresh_hooks: dict[tuple[str, str], Callable[[CosemObject], None]] = {}
        self.read_hooks: dict[tuple[str, str], Callable[..., DlmsValue]] = {}
        #: Called after every committed change, with the change (the model already shows it).
        self.commit_hooks: list[Callable[[ProfileChange], None]] = []

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Load the model from the state store and add the gateway's own LDEVs."""
        from smgw_emu.app.gateway import GatewayStartError

        gw = self.gateway
        pki = gw.pki
        try:
            bundle = x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes())
            roots = [x509.load_pem_x509_certificate(pki.root_ca.read_bytes())]
            self._enc = (pki.cert("gateway-enc"), pki.key("gateway-enc"))
            self._sig = (pki.cert("gateway-sig"), pki.key("gateway-sig"))
        except (OSError, ValueError) as exc:
            raise GatewayStartError(f"gateway CMS keys or trust list unreadable: {exc}") from None
        self._trust = CertificateTrust(roots, bundle)
        try:
            self._load()
        except (CosemError, ValueError, KeyError) as exc:
            raise GatewayStartError(f"stored COSEM objects do not match the class definitions: {exc}") from None
        self._add_system_ldevs()
        self.started = True

    def _load(self) -> None:
        store = self.gateway.store
        for kind, ldev_id in store.ldevs():
            self.model.add_ldev(LogicalDevice(kind, ldev_id))
        for stored in store.objects():
            cosem_class = self.model.definitions.cls(stored.class_id)
            obj = object_from_json(cosem_class, ObisCode.parse(stored.obis), stored.attributes)
            self.model.add_object(self.model.ldev(stored.ldev_kind, stored.ldev_id), obj)

    def _add_system_ldevs(self) -> None:
        """The gateway's own LDEV and the active GWA's communication profile: built from the
        gateway's state at start, not stored as objects, not changed through this API."""
        gw = self.gateway
        model = self.model
        own = model.add_ldev(LogicalDevice(GATEWAY_KIND, gw.id))
        model.add_object(own, model.build_object(8, CLOCK_OBIS, access_overrides={2: {"gwa": "r"}}))
        model.add_object(own, model.build_object(
            28403, SYSTEM_LOG_OBIS, {3: DlmsValue("enum", 1), 6: DlmsValue("double-long-unsigned", LOG_WINDOW)},
            access_overrides={6: {"gwa": "r"}},
        ))
        model.add_object(own, model.build_object(
            1, FIRMWARE_OBIS, {2: DlmsValue("visible-string", __version__)}, access_overrides={2: {"gwa": "r"}}))
        self._add_gwa_ldev()

    def _add_gwa_ldev(self) -> None:
        """commprofile/<GWA id>: the communication profile of the GWA in use (its key bank)."""
        gw = self.gateway
        model = self.model
        gwa = gw.gwa
        pk = PROFILE_KINDS["commprofile"]
        spec = model.definitions.cls(pk.class_id)
        channels = gw.config.channels
        values = {
            "partner_id": gwa.id, "partner_role": "gwa", "host": gwa.host, "port": gwa.management_port,
            "admin_service_url": gwa.admin_service_url, "info_report_url": gwa.info_report_url,
            "tls_certificate": gwa.tls_certificate_der, "signature_certificate": gwa.signature_certificate_der,
            "encryption_certificate": gwa.encryption_certificate_der,
            "idle_timeout_s": max(1, round(channels.idle_timeout_s)),
            "retry_interval_s": max(1, round(channels.retry_initial_s)), "max_retries": channels.management_max_retries,
            "container_profile": "default",
        }
        built = {spec.attribute_named(k).index: spec.attribute_named(k).spec.build(v, k) for k, v in values.items()}
        gwa_ldev = model.add_ldev(LogicalDevice(pk.kind, gwa.id))
        model.add_object(gwa_ldev, model.build_object(pk.class_id, pk.obis, built))

    def replace_gwa_ldev(self, previous_id: str) -> None:
        """The GWA in use changed (6.6, app/keybanks.py): show the new GWA's profile instead."""
        try:
            self.model.remove_ldev(PROFILE_KINDS["commprofile"].kind, previous_id)
        except CosemError:
            pass
        self._add_gwa_ldev()

    def set_gateway_keys(self, *, enc, sig) -> None:
        """The gateway's CMS keys, (certificate, private key) each: they change by 6.7.1/6.7.2."""
        self._enc, self._sig = enc, sig

    def set_trust(self, trust: CertificateTrust) -> None:
        """Certificate checks against the gateway's trust anchors (they change by 6.7.3/6.7.4)."""
        self._trust = trust

    @property
    def locked_ldevs(self) -> frozenset[str]:
        return frozenset({self.gateway.id, self.gateway.gwa.id})

    # -- routes ------------------------------------------------------------------------------
    def install(self, router: Router) -> None:
        add = router.add
        add("GET", _PREFIX + r"/?", self._route(self._get_ldevs), name="cosem-ldev-list")
        add("GET", _PREFIX + r"/(?P<kind>[^/]+)/?", self._route(self._get_kind), name="cosem-ldev-list-of-kind")
        add("GET", _LDEV + r"/?", self._route(self._get_objects), name="cosem-object-list")
        add("POST", _LDEV + r"/?", self._route(self._post_object), name="cosem-create")
        add("DELETE", _LDEV + r"/?", self._route(self._delete_ldev), name="cosem-ldev-delete")
        add("GET", _OBJECT + r"/?", self._route(self._get_object), name="cosem-object-read")
        add("PUT", _OBJECT + r"/?", self._route(self._put_object), name="cosem-object-update")
        add("DELETE", _OBJECT + r"/?", self._route(self._delete_object), name="cosem-object-delete")
        add("GET", _OBJECT + r"/attributes/(?P<index>[^/]+)/?", self._route(self._get_attribute), name="cosem-attribute-read")
        add("PUT", _OBJECT + r"/attributes/(?P<index>[^/]+)/?", self._route(self._put_attribute), name="cosem-attribute-update")
        add("POST", _OBJECT + r"/methods/(?P<index>[^/]+)/?", self._route(self._post_method), name="cosem-method-invoke")

    def _route(self, handler: Callable[[ApiRequest], Awaitable[ApiResponse]]) -> Callable[[ApiRequest], Awaitable[ApiResponse]]:
        """COSEM and XML errors become the API's error document (the router logs them); 200
        bodies are sealed when the GWA asks for it."""

        async def route(request: ApiRequest) -> ApiResponse:
            try:
                response = await handler(request)
            except CosemError as exc:
                raise ApiError(exc.http_status, exc.code, exc.message, exc.field) from None
            except XmlInputError as exc:
                status = 413 if exc.code == "too-large" else 400
                raise ApiError(status, exc.code, f"request body: {exc.detail or exc.reason}") from None
            return self._seal_if_asked(request, response)

        route.__doc__ = handler.__doc__
        return route

    # -- request and response bodies ---------------------------------------------------------
    def _limits(self) -> dict[str, int]:
        policy = self.gateway.config.policy
        return {"max_bytes": policy.max_request_bytes, "max_depth": policy.xml_max_depth}

    def _body(self, request: ApiRequest) -> bytes:
        """The XML of the request: as sent, or out of a CMS container from the GWA (5.10)."""
        media = _header(request, "content-type").split(";")[0].strip().lower()
        if not request.body:
            return b""
        if media in XML_TYPES:
            return request.body
        if media == CMS:
            return self._open_container(request.body, "request body")
        raise UnsupportedMediaType(f"Content-Type {media or '(none)'} is not accepted; send {XML} or {CMS}",
                                   field="Content-Type")

    def _open_container(self, container: bytes, what: str) -> bytes:
        """5.10 on a request body: a refused container is the request's error."""
        try:
            return self._open_sealed(container, what)
        except cms.CmsError as exc:
            raise ContainerError(exc) from None

    def _open_sealed(self, container: bytes, what: str) -> bytes:
        """5.10: decrypt with the gateway's encryption key, verify the GWA's signature (CmsError if not)."""
        gw = self.gateway
        gwa_sig = x509.load_der_x509_certificate(gw.gwa.signature_certificate_der)
        opened = cms.open_sealed(container, self._enc[0], self._enc[1], [gwa_sig],
                                 max_size=gw.config.policy.max_request_bytes)
        gw.journal("cms-container-opened", f"CMS container ({what}, {len(container)} bytes) decrypted, signature of "
                   f"GWA {gw.gwa.id} verified", source=what, signer=gw.gwa.id, size=len(container))
        return opened.content

    def _seal_if_asked(self, request: ApiRequest, response: ApiResponse) -> ApiResponse:
        """5.11 on a GET with Accept: application/pkcs7-mime: sign with the gateway's signature key,
        encrypt for the GWA's encryption certificate. Errors stay plain, so the GWA can read them."""
        if (request.method != "GET" or response.status != 200 or not response.body
                or CMS not in _header(request, "accept").lower()):
            return response
        gw = self.gateway
        recipient = x509.load_der_x509_certificate(gw.gwa.encryption_certificate_der)
        sealed = cms.seal(response.body, self._sig[0], self._sig[1], recipient, signing_time=gw.clock.now())
        gw.journal("cms-container-sealed", f"response to {request.method} {request.path} signed by the gateway and "
                   f"encrypted for GWA {gw.gwa.id} ({len(sealed)} bytes)", recipient=gw.gwa.id, size=len(sealed))
        return ApiResponse(200, sealed, content_type=CMS, headers=dict(response.headers))

    def _context(self, request: ApiRequest) -> ProfileContext:
        return ProfileContext(
            now=self.gateway.clock.now(), trust=self._trust,
            open_container=lambda der: self._open_sealed(der, "key material"), new_key=lambda: os.urandom(16),
            latest_reading=self._latest_reading, locked_ldevs=self.locked_ldevs, role=request.role,
        )

    def _latest_reading(self, meter_id: str, obis_hex: str) -> Reading | None:
        rows = self.gateway.store.meter_values(meter_id, obis_hex)
        return Reading(*rows[-1]) if rows else None

    # -- applying a change -------------------------------------------------------------------
    def _commit(self, change: ProfileChange) -> None:
        """One transaction: objects, key material, system-log entry, events. Model after commit."""
        self.commit_together((change,))

    def commit_together(self, changes: tuple[ProfileChange, ...], extra=None) -> None:
        """Several changes of several LDEVs in ONE transaction (e.g. the meter change, fig. 21,
        app/meterchange.py); `extra(tx)` adds writes of the caller's own. The in-memory model and
        the commit hooks follow after the commit, in order."""
        gw = self.gateway
        now = gw.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with gw.store.transaction() as tx:
            if extra is not None:
                extra(tx)
            for change in changes:
                self._store_change(tx, change, now)
        for change in changes:
            self._apply_to_model(change)
        for change in changes:
            for hook in self.commit_hooks:  # e.g. app/meters.py starts the LMN side of a pairing
                hook(change)

    def _store_change(self, tx, change: ProfileChange, now: str) -> None:
        gw, ldev = self.gateway, change.ldev
        if change.remove_ldev:
            tx.delete_ldev(ldev.kind, ldev.id)  # its objects go with it (ON DELETE CASCADE)
        else:
            if change.new_ldev:
                tx.put_ldev(ldev.kind, ldev.id, now)
            for obj in change.remove:
                tx.delete_object(ldev.kind, ldev.id, obj.class_id, obj.obis.hex)
            for obj in change.put:
                tx.put_object(ldev.kind, ldev.id, obj.class_id, obj.obis.hex, object_to_json(obj), now)
        for write in change.key_writes:
            tx.put_key_bank(write.bank, write.state, dict(write.material), now)
        for bank in change.key_deletes:
            tx.execute("DELETE FROM key_banks WHERE bank=?", (bank,))
        gw.journal(change.log_event, change.message, tx=tx, level=change.level, outcome=change.outcome,
                   **change.details)
        for event in change.events:
            gw.journal.emit(tx, event.type, **event.details)

    def _apply_to_model(self, change: ProfileChange) -> None:
        model, ldev = self.model, change.ldev
        if change.remove_ldev:
            model.remove_ldev(ldev.kind, ldev.id)
            return
        if change.new_ldev:
            model.add_ldev(ldev)
        for obj in change.remove:
            model.remove_object(ldev, obj.class_id, obj.obis)
        for obj in change.put:
            model.replace_object(ldev, obj)

    # -- handlers ----------------------------------------------------------------------------
    def _address(self, request: ApiRequest) -> ObjectAddress:
        address = ObjectAddress.parse(request.path)
        if address.level != "attribute":
            for name in request.query:
                if name.startswith("q."):
                    raise BadSelector("selective access applies to an attribute (.../attributes/<n>)", field=name[:40])
        return address

    async def _get_ldevs(self, request: ApiRequest) -> ApiResponse:
        """6.5.1 device discovery, fig. 43: the gateway's logical devices."""
        self._address(request)
        return ApiResponse(200, xmlcodec.ldev_list_to_xml(self.model.ldevs()))

    async def _get_kind(self, request: ApiRequest) -> ApiResponse:
        """The logical devices of one kind."""
        kind = self._address(request).kind
        if kind != GATEWAY_KIND and kind not in PROFILE_KINDS:
            raise UnknownLdev(f"no LDEV kind {kind} (known: {', '.join(sorted([GATEWAY_KIND, *PROFILE_KINDS]))})",
                              field="kind")
        return ApiResponse(200, xmlcodec.ldev_list_to_xml(self.model.ldevs(kind)))

    async def _get_objects(self, request: ApiRequest) -> ApiResponse:
        """6.5.1 device discovery, fig. 44: class id and OBIS code of each object of an LDEV."""
        ldev = self.model.resolve(self._address(request)).ldev
        return ApiResponse(200, xmlcodec.object_list_to_xml(ldev, self.model.objects(ldev)))

    async def _post_object(self, request: ApiRequest) -> ApiResponse:
        """Create a profile (and its LDEV) or an object in an existing LDEV."""
        address = self._address(request)
        doc = xmlcodec.object_from_xml(self._body(request), **self._limits())
        change = plan_create(self.model, address.kind, address.ldev, doc, self._context(request))
        self._commit(change)
        target = change.target
        location = ObjectAddress.of_object(change.ldev, target).path
        return ApiResponse(201, xmlcodec.object_to_xml(target, request.role), headers={"Location": location})

    async def _delete_ldev(self, request: ApiRequest) -> ApiResponse:
        """Delete a profile: its LDEV with every object in it."""
        ldev = self.model.resolve(self._address(request)).ldev
        self._commit(plan_delete(self.model, ldev, None, self._context(request)))
        return ApiResponse(204)

    def _resolve_object(self, request: ApiRequest):
        resolved = self.model.resolve(self._address(request))
        self._refresh(resolved.ldev, resolved.obj)
        return resolved

    async def _get_object(self, request: ApiRequest) -> ApiResponse:
        """One object with every attribute the caller may read."""
        resolved = self._resolve_object(request)
        return ApiResponse(200, xmlcodec.object_to_xml(resolved.obj, request.role))

    async def _put_object(self, request: ApiRequest) -> ApiResponse:
        """Update the attributes the document gives; the others keep their values."""
        resolved = self._resolve_object(request)
        doc = xmlcodec.object_from_xml(self._body(request), **self._limits())
        if doc.class_id != resolved.obj.class_id:
            raise WrongObject(f"the document is a class {doc.class_id} object, the path names class "
                              f"{resolved.obj.class_id}", field="class-id")
        if doc.obis != resolved.obj.obis:
            raise WrongObject(f"the document is at OBIS {doc.obis.hex}, the path names {resolved.obj.obis.hex}",
                              field="obis")
        change = plan_update(self.model, resolved.ldev, resolved.obj, doc.attributes, self._context(request))
        self._commit(change)
        return ApiResponse(200, xmlcodec.object_to_xml(change.target, request.role))

    async def _delete_object(self, request: ApiRequest) -> ApiResponse:
        """Delete an object; a profile object takes its whole LDEV with it."""
        resolved = self.model.resolve(self._address(request))
        self._commit(plan_delete(self.model, resolved.ldev, resolved.obj, self._context(request)))
        return ApiResponse(204)

    async def _get_attribute(self, request: ApiRequest) -> ApiResponse:
        """One attribute; arrays allow selective access by index or time."""
        resolved = self.model.resolve(self._address(request))
        selector = parse_selector(request.query)
        hook = self.read_hooks.get((resolved.ldev.kind, resolved.obj.obis.hex))
        if hook is not None:
            value = hook(request, resolved, selector)
        else:
            self._refresh(resolved.ldev, resolved.obj)
            value = resolved.obj.get(resolved.attribute.index, request.role, selector)
        return ApiResponse(200, xmlcodec.attribute_to_xml(resolved.attribute.index, resolved.attribute.name, value))

    async def _put_attribute(self, request: ApiRequest) -> ApiResponse:
        """Update one attribute (an <attribute> element or a bare value)."""
        resolved = self._resolve_object(request)
        index, value = xmlcodec.attribute_from_xml(self._body(request), **self._limits())
        if index is not None and index != resolved.attribute.index:
            raise CosemXmlError(f"the document names attribute {index}, the path attribute {resolved.attribute.index}",
                                field="/attribute/@index")
        change = plan_update(self.model, resolved.ldev, resolved.obj, {resolved.attribute.index: value},
                             self._context(request))
        self._commit(change)
        return ApiResponse(200, xmlcodec.object_to_xml(change.target, request.role))

    async def _post_method(self, request: ApiRequest) -> ApiResponse:
        """Invoke a method; the body is its argument (a bare value), empty for null-data."""
        resolved = self.model.resolve(self._address(request))
        body = self._body(request)
        argument = xmlcodec.value_from_xml(body, **self._limits()) if body.strip() else None
        hook = self.method_hooks.get((resolved.ldev.kind, resolved.obj.obis.hex))
        if hook is not None:
            resolved.obj.check_method(resolved.method.index, request.role, argument)
            result = await hook(request, resolved, argument)
            return ApiResponse(200, xmlcodec.method_result_to_xml(resolved.method.index, resolved.method.name, result))
        change = plan_invoke(self.model, resolved.ldev, resolved.obj, resolved.method.index, argument,
                             self._context(request))
        self._commit(change)
        return ApiResponse(200, xmlcodec.method_result_to_xml(
            resolved.method.index, resolved.method.name, change.result or DlmsValue.null()))

    # -- live objects of the gateway's own LDEV ----------------------------------------------
    def _refresh(self, ldev: LogicalDevice, obj: CosemObject | None) -> None:
        if obj is not None and (hook := self.refresh_hooks.get((ldev.kind, obj.obis.hex))) is not None:
            hook(obj)
            return
        if obj is None or ldev.kind != GATEWAY_KIND:
            return
        if obj.obis == CLOCK_OBIS:
            obj.store(2, DlmsValue("date-time", self.gateway.clock.now()))
        elif obj.obis == SYSTEM_LOG_OBIS:
            rows = [self._log_row(entry) for entry in self.gateway.store.log_tail("system", LOG_WINDOW)]
            obj.store(2, DlmsValue("array", rows))
            obj.store(5, DlmsValue("double-long-unsigned", len(rows)))

    def _log_row(self, entry) -> DlmsValue:
        spec = self.model.definitions.types["log_entry"]
        extensions = [{"name": "event", "value": entry.event}] + [
            {"name": _printable(k), "value": _xml_text(str(v))} for k, v in sorted(entry.details.items())
        ]
        return spec.build({
            "timestamp": datetime.fromisoformat(entry.ts), "record_number": entry.record,
            "parent_record_number": entry.parent or 0, "repetition_counter": 0, "level": entry.level,
            "outcome": entry.outcome,
            "event_type": {"vendor": 0, "device_type": 0, "module": 0, "event_id": 0, "sub_id": 0},
            "message": _xml_text(entry.message), "extensions": extensions,
        })


def _header(request: ApiRequest, name: str) -> str:
    for key, value in request.headers.items():
        if key.lower() == name:
            return value
    return ""


def _printable(text: str) -> str:
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)[:64]


def _xml_text(text: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", text)
