"""The GWA's key banks, the GWA change and the trust anchors, wired (Lastenheft 6.6, 6.7.1, 6.7.3,
6.7.4).

The rules are in the sans-IO `smgw_emu.core.keybanks`; this module reads and writes them in the
state store (one transaction per step, with its system-log entry and events), serves them on
the MANAGEMENT channel, and makes the gateway follow the bank in use: the GWA endpoint
(`Gateway.gwa`), the pinned GWA TLS certificate (`PeerCheck`), the wake-up verifier's GWA
signature certificate, the INFO-REPORT and ADMIN-SERVICE URLs, the CMS partner certificates and
the COSEM LDEV of the GWA's communication profile. A change of the trust anchors rebuilds the
TLS context and the certificate checks. docs/wan-api.md ("Key banks, GWA change and trust anchors") describes the resources:

    GET    /smgw/keybanks                        both banks, and which one is in use
    GET    /smgw/keybanks/<bank>                 ACTIVE or GWAPRE, with its digest
    DELETE /smgw/keybanks/<bank>                 release GWAPRE (the rollback of 61-67): 204
    POST   /smgw/keybanks/GWAPRE/reserve         6.6.4: 200
    POST   /smgw/keybanks/GWAPRE/profile         6.6.5, a class 28100 document: 201
    POST   /smgw/keybanks/GWAPRE/certificates    6.6.6: 201
    POST   /smgw/keybanks/GWAPRE/switch          6.6.7: 200, fallback timer started
    POST   /smgw/keybanks/GWAPRE/final-profile   6.6.9 (new GWA), a class 28100 document: 201
    POST   /smgw/keybanks/GWAPRE/confirm         6.6.10 (new GWA), <confirm digest>: 200
    GET    /smgw/trust/roots                     the trust anchors
    POST   /smgw/trust/roots                     6.7.3, root + link certificate: 201
    DELETE /smgw/trust/roots/<fingerprint>       6.7.4: 204
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from smgw_emu.app.api import ApiError, ApiRequest, ApiResponse, Router
from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.core.cosem import CosemError, CosemXmlError, default_definitions, xmlcodec
from smgw_emu.core.keybanks import (
    ACTIVE,
    BANKS,
    GWAPRE,
    STORE_ROWS,
    TRUST_ROW,
    GwaCertificates,
    GwaMaterial,
    GwaProfile,
    KeyBanks,
    RootInUse,
    Transition,
    UnknownKeyBank,
    UnknownRoot,
    certificate_fingerprint,
    check_new_root,
    roots_in_use,
    validate_profile,
)
from smgw_emu.core.profiles import PROFILE_KINDS, StateConflict, WrongObject
from smgw_emu.core.xmlsafe import XmlInputError, parse_xml

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway, GwaEndpoint
    from smgw_emu.net.management import ManagementChannel

log = logging.getLogger("smgw_emu.keybanks")

KEYBANK_NS = "urn:smgw-emu:keybank:1"
_NS = f"{{{KEYBANK_NS}}}"
XML_TYPES = ("application/xml", "text/xml")
_PRE = r"/smgw/keybanks/GWAPRE"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _iso(t: _dt.datetime) -> str:
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def endpoint_of(material: GwaMaterial) -> "GwaEndpoint":
    from smgw_emu.app.gateway import GwaEndpoint

    profile, certs = material.profile, material.certificates
    assert profile is not None and certs is not None
    return GwaEndpoint(profile.partner_id, profile.host, profile.port, profile.admin_service_url,
                       profile.info_report_url, certs.tls, certs.sig, certs.enc)


def material_of(endpoint: "GwaEndpoint", cas: tuple[bytes, ...] = ()) -> GwaMaterial:
    return GwaMaterial(
        GwaProfile(endpoint.id, endpoint.host, endpoint.management_port, endpoint.admin_service_url,
                   endpoint.info_report_url),
        GwaCertificates(endpoint.tls_certificate_der, endpoint.signature_certificate_der,
                        endpoint.encryption_certificate_der, cas),
    )


class KeyBankService:
    """One gateway's GWA key banks and trust anchors: state, persistence, routes."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        self.banks: KeyBanks | None = None
        self.roots: list[x509.Certificate] = []
        self._bundle: list[x509.Certificate] = []
        self._timer = None
        from smgw_emu.app.gatewaykeys import GatewayKeyService

        self.gateway_keys = GatewayKeyService(gateway, self)  # the gateway's own WAN keys (6.7.1, 6.7.2)

    # -- start: personalisation, state, trust anchors ----------------------------------------
    def load(self) -> "GwaEndpoint":
        """The GWA endpoint in use. At the first start this is personalisation (6.7.1, [ours]):
        the GWA's communication profile and certificates from the configuration and the PKI
        directory go into bank ACTIVE, the PKI's root into the trust anchors, in one transaction."""
        gw = self.gateway
        store = gw.store
        assert store is not None
        try:
            self._bundle = x509.load_pem_x509_certificates(gw.pki.ca_bundle.read_bytes())
        except (OSError, ValueError):
            self._bundle = []
        rows = store.key_banks()
        banks = KeyBanks.from_rows(rows)
        if banks is None:
            banks = self._personalise(rows)
            rows = store.key_banks()
        self.banks = banks
        trust = rows.get(TRUST_ROW)
        if trust is None:  # a state of an earlier version: the PKI's root was the trust anchor
            self._seed_roots()
            trust = store.key_banks()[TRUST_ROW]
        self.roots = [x509.load_der_x509_certificate(bytes.fromhex(h)) for h in trust[1]["roots"]]
        self.gateway_keys.load()
        return endpoint_of(banks.in_use)

    def _root_from_pki(self) -> bytes:
        from smgw_emu.app.gateway import GatewayStartError

        try:
            return _der(x509.load_pem_x509_certificate(self.gateway.pki.root_ca.read_bytes()))
        except (OSError, ValueError) as exc:
            raise GatewayStartError(f"SM-PKI root {self.gateway.pki.root_ca} unreadable: {exc}") from None

    def _seed_roots(self) -> None:
        gw = self.gateway
        root = self._root_from_pki()
        with gw.store.transaction() as tx:
            tx.put_key_bank(TRUST_ROW, "active", {"roots": [root.hex()]}, _iso(gw.clock.now()))
            gw.journal("trust-anchors-seeded", f"trust anchor from {gw.pki.root_ca}", tx=tx,
                       fingerprint=certificate_fingerprint(root))

    def _personalise(self, rows) -> KeyBanks:
        from smgw_emu.app.gateway import GWA_PROFILE_KEY, GwaEndpoint

        gw = self.gateway
        stored = gw.store.get(GWA_PROFILE_KEY)  # the profile as an earlier version kept it
        if stored:
            endpoint, source = GwaEndpoint.from_json(stored), "the state of an earlier version"
        else:
            endpoint, source = gw._gwa_endpoint_from_config(), str(gw.config.source)
        banks = KeyBanks(material_of(endpoint))
        now = _iso(gw.clock.now())
        with gw.store.transaction() as tx:
            tx.put_key_bank(STORE_ROWS[ACTIVE], "active", banks.active.to_json(), now)
            if TRUST_ROW not in rows:
                root = self._root_from_pki()
                tx.put_key_bank(TRUST_ROW, "active", {"roots": [root.hex()]}, now)
            tx.execute("DELETE FROM kv WHERE key=?", (GWA_PROFILE_KEY,))
            gw.journal("personalisation", f"GWA communication profile seeded from {source}", tx=tx,
                       gwa=endpoint.id, host=endpoint.host, port=endpoint.management_port, bank=ACTIVE)
        return banks

    def start(self) -> None:
        """Once the channels exist: apply the trust anchors, arm (or run) the fallback timer."""
        self.gateway.cosem.set_trust(self.trust())
        self.gateway_keys.start()
        self.gateway.on_channel_opened.append(self._on_channel_opened)
        self._arm_fallback()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- trust -------------------------------------------------------------------------------
    def trust(self) -> CertificateTrust:
        """Certificate checks against the trust anchors (intermediates: the PKI bundle and the
        CA certificates the GWA banks hold)."""
        cas = [x509.load_der_x509_certificate(der) for der in self._bank_cas()]
        return CertificateTrust(self.roots, [*self._bundle, *cas])

    def _bank_cas(self) -> list[bytes]:
        banks = self.banks
        if banks is None:
            return []
        result = list(banks.active.certificates.cas if banks.active.certificates else ())
        if banks.gwapre and banks.gwapre.material.certificates:
            result += banks.gwapre.material.certificates.cas
        return result

    def roots_pem(self) -> str:
        return "".join(r.public_bytes(serialization.Encoding.PEM).decode() for r in self.roots)

    def client_context(self):
        """The WAN TLS client context trusting exactly the trust anchors of the store."""
        from smgw_emu.net.tls import client_context_with_roots

        gw = self.gateway
        chain, key = self.gateway_keys.tls_files or (gw.pki.chain_path("gateway-tls"), gw.pki.key_path("gateway-tls"))
        return client_context_with_roots(gw.tls_profile, chain=chain, key=key, roots_pem=self.roots_pem())

    # -- committing a step -------------------------------------------------------------------
    def _commit(self, transition: Transition) -> None:
        self.gateway.journal.commit_key_transition(transition)
        self.banks = transition.after
        if transition.in_use_changed:
            self._follow_in_use()
        self._arm_fallback()

    def _follow_in_use(self) -> None:
        """Make every part of the gateway work with the GWA of the bank in use."""
        gw = self.gateway
        assert self.banks is not None
        previous = gw.gwa
        gw.gwa = endpoint_of(self.banks.in_use)
        gw.gwa_peer_check()  # pins the new GWA TLS certificate, for every channel
        gw.verifier.set_gwa_certificates([x509.load_der_x509_certificate(gw.gwa.signature_certificate_der)])
        gw.info_report.retarget(url=gw.gwa.info_report_url)
        gw.admin_service.retarget(base_url=gw.gwa.admin_service_url)
        gw.cosem.set_trust(self.trust())
        gw.cosem.replace_gwa_ldev(previous.id)
        channel = gw.management
        if channel is not None and channel.is_open and channel.peer_der != gw.gwa.tls_certificate_der:
            channel.end_auth("gwa-changed")  # its peer is not the GWA in use any more

    def rebuild_tls(self) -> None:
        gw = self.gateway
        gw.tls_context = self.client_context()
        gw.info_report.retarget(ssl_context=gw.tls_context)
        gw.admin_service.retarget(ssl_context=gw.tls_context)
        gw.cosem.set_trust(self.trust())

    # -- the fallback timer ------------------------------------------------------------------
    def _arm_fallback(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self.banks is not None
        due = self.banks.fallback_at
        if due is None:
            return
        delay = (due - self.gateway.clock.now()).total_seconds()
        if delay <= 0:
            self._on_fallback_timer()
            return
        self._timer = self.gateway.timers.call_later(delay, self._on_fallback_timer)

    def _on_fallback_timer(self) -> None:
        self._timer = None
        assert self.banks is not None
        due = self.banks.fallback_at
        if due is None:
            return
        # The timer fired: its time has come even if the clock reads a microsecond before it.
        transition = self.banks.fallback(max(self.gateway.clock.now(), due))
        if transition is not None:
            self._commit(transition)

    def _on_channel_opened(self, channel: "ManagementChannel") -> None:
        """6.6.8: the first MANAGEMENT channel in AUTH with the new GWA verifies GWAPRE."""
        assert self.banks is not None
        if channel.authenticated():
            transition = self.banks.verified(self.gateway.clock.now())
            if transition is not None:
                self._commit(transition)

    # -- routes ------------------------------------------------------------------------------
    def install(self, router: Router) -> None:
        add = router.add
        add("GET", r"/smgw/keybanks/?", self._route(self._get_banks), name="keybank-list")
        add("GET", r"/smgw/keybanks/(?P<bank>[^/]+)/?", self._route(self._get_bank), name="keybank-read")
        add("DELETE", r"/smgw/keybanks/(?P<bank>[^/]+)/?", self._route(self._delete_bank), name="keybank-release")
        add("POST", _PRE + r"/reserve/?", self._route(self._reserve), name="gwapre-reserve")
        add("POST", _PRE + r"/profile/?", self._route(self._profile), name="gwapre-profile")
        add("POST", _PRE + r"/certificates/?", self._route(self._certificates), name="gwapre-certificates")
        add("POST", _PRE + r"/switch/?", self._route(self._switch), name="gwapre-switch")
        add("POST", _PRE + r"/final-profile/?", self._route(self._final_profile), name="gwapre-final-profile")
        add("POST", _PRE + r"/confirm/?", self._route(self._confirm), name="gwapre-confirm")
        add("GET", r"/smgw/trust/roots/?", self._route(self._get_roots), name="trust-root-list")
        add("POST", r"/smgw/trust/roots/?", self._route(self._add_root), name="trust-root-add")
        add("DELETE", r"/smgw/trust/roots/(?P<fingerprint>[^/]+)/?", self._route(self._delete_root),
            name="trust-root-delete")
        self.gateway_keys.install(router)

    def _route(self, handler: Callable[[ApiRequest], Awaitable[ApiResponse]]):
        async def route(request: ApiRequest) -> ApiResponse:
            try:
                return await handler(request)
            except CosemError as exc:
                raise ApiError(exc.http_status, exc.code, exc.message, exc.field) from None
            except XmlInputError as exc:
                status = 413 if exc.code == "too-large" else 400
                raise ApiError(status, exc.code, f"request body: {exc.detail or exc.reason}") from None

        route.__doc__ = handler.__doc__
        return route

    def _xml(self, request: ApiRequest, tag: str | None) -> etree._Element | bytes:
        """The request's XML body; parsed (root `tag` of our namespace), or as bytes for tag None."""
        media = ""
        for key, value in request.headers.items():
            if key.lower() == "content-type":
                media = value.split(";")[0].strip().lower()
        if media not in XML_TYPES:
            raise ApiError(415, "unsupported-media-type", f"Content-Type {media or '(none)'} is not accepted; send "
                           "application/xml", "Content-Type")
        policy = self.gateway.config.policy
        if tag is None:
            return request.body
        root = parse_xml(request.body, max_bytes=policy.max_request_bytes, max_depth=policy.xml_max_depth)
        if root.tag != _NS + tag:
            raise CosemXmlError(f'expected <{tag} xmlns="{KEYBANK_NS}">, got <{etree.QName(root).localname}>',
                                field=f"/{etree.QName(root).localname}")
        return root

    def _profile_values(self, request: ApiRequest) -> GwaProfile:
        """A class 28100 <cosem-object> with the GWA's profile (the attributes by name)."""
        body = self._xml(request, None)
        policy = self.gateway.config.policy
        doc = xmlcodec.object_from_xml(body, max_bytes=policy.max_request_bytes, max_depth=policy.xml_max_depth)
        pk = PROFILE_KINDS["commprofile"]
        if doc.class_id != pk.class_id:
            raise WrongObject(f"a GWA profile is a class {pk.class_id} object, not {doc.class_id}", field="class-id")
        if doc.obis != pk.obis:
            raise WrongObject(f"a GWA profile is at OBIS {pk.obis.hex}, not {doc.obis.hex}", field="obis")
        cosem_class = default_definitions().cls(pk.class_id)
        values: dict[str, Any] = {}
        for index, value in doc.attributes.items():
            attr = cosem_class.attribute(index)
            given = doc.names.get(index)
            if given is not None and given != attr.name:
                raise CosemXmlError(f"attribute {index} is {attr.name}, not {given}", field=f"attribute[{index}]")
            attr.spec.check(value, attr.name)
            values[attr.name] = attr.spec.to_python(value)
        return validate_profile(values)

    def _taken_ids(self) -> set[str]:
        return {ldev.id for ldev in self.gateway.cosem.model.ldevs()}

    # -- handlers ----------------------------------------------------------------------------
    async def _get_banks(self, request: ApiRequest) -> ApiResponse:
        """Both GWA key banks and which one the gateway uses."""
        assert self.banks is not None
        root = etree.Element(_NS + "keybanks", nsmap={None: KEYBANK_NS})
        root.set("in-use", self.banks.in_use_bank)
        for name in BANKS:
            if self.banks.bank(name) is not None:
                root.append(self._bank_element(name))
        return ApiResponse(200, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

    async def _get_bank(self, request: ApiRequest) -> ApiResponse:
        """One key bank: phase, profile, certificates and the digest the new GWA confirms."""
        return self._bank_response(self._bank_name(request), 200)

    def _bank_name(self, request: ApiRequest) -> str:
        assert self.banks is not None
        name = request.params["bank"]
        if self.banks.bank(name) is None:
            raise UnknownKeyBank("GWAPRE is not reserved", field="bank")
        return name

    async def _delete_bank(self, request: ApiRequest) -> ApiResponse:
        """Release GWAPRE: the rollback of a GWA change (figs. 61-67)."""
        name = self._bank_name(request)
        if name == ACTIVE:
            raise StateConflict("the ACTIVE bank is never deleted; a GWA change replaces it", field="bank")
        assert self.banks is not None
        self._commit(self.banks.release(self.gateway.clock.now()))
        return ApiResponse(204)

    async def _reserve(self, request: ApiRequest) -> ApiResponse:
        """6.6.4: reserve GWAPRE for a GWA change."""
        assert self.banks is not None
        self._commit(self.banks.reserve(self.gateway.clock.now()))
        return self._bank_response(GWAPRE, 200)

    async def _profile(self, request: ApiRequest) -> ApiResponse:
        """6.6.5: the new GWA's communication profile into GWAPRE."""
        profile = self._profile_values(request)
        assert self.banks is not None
        self._commit(self.banks.install_profile(profile, self.gateway.clock.now(), self._taken_ids()))
        return self._bank_response(GWAPRE, 201)

    async def _certificates(self, request: ApiRequest) -> ApiResponse:
        """6.6.6: the new GWA's TLS, signature and encryption certificates into GWAPRE."""
        certificates = self._certificates_of(self._xml(request, "certificates"))
        assert self.banks is not None
        self._commit(self.banks.install_certificates(certificates, self.trust(), self.gateway.clock.now()))
        return self._bank_response(GWAPRE, 201)

    async def _switch(self, request: ApiRequest) -> ApiResponse:
        """6.6.7: make GWAPRE the bank in use; the fallback timer starts."""
        assert self.banks is not None
        transition = self.banks.switch(self.gateway.clock.now(), self.gateway.config.policy.gwa_change_fallback_s,
                                       self._taken_ids())
        self._commit(transition)
        return self._bank_response(GWAPRE, 200)

    async def _final_profile(self, request: ApiRequest) -> ApiResponse:
        """6.6.9: the new GWA's final communication profile."""
        profile = self._profile_values(request)
        assert self.banks is not None
        self._commit(self.banks.install_final_profile(profile, self.gateway.clock.now()))
        return self._bank_response(GWAPRE, 201)

    async def _confirm(self, request: ApiRequest) -> ApiResponse:
        """6.6.10: the new GWA confirms GWAPRE as it read it (its digest); GWAPRE becomes ACTIVE."""
        root = self._xml(request, "confirm")
        digest = root.get("digest", "")
        if not digest:
            raise CosemXmlError("<confirm> needs the attribute digest (of GET /smgw/keybanks/GWAPRE)", field="digest")
        assert self.banks is not None
        self._commit(self.banks.confirm(digest, self.gateway.clock.now()))
        return self._bank_response(ACTIVE, 200)

    # -- documents ---------------------------------------------------------------------------
    def _bank_response(self, name: str, status: int) -> ApiResponse:
        element = self._bank_element(name)
        headers = {"Location": f"/smgw/keybanks/{name}"} if status == 201 else {}
        return ApiResponse(status, etree.tostring(element, xml_declaration=True, encoding="UTF-8"), headers=headers)

    def _bank_element(self, name: str) -> etree._Element:
        assert self.banks is not None
        banks = self.banks
        material = banks.bank(name)
        assert material is not None
        element = etree.Element(_NS + "keybank", nsmap={None: KEYBANK_NS})
        element.set("name", name)
        if name == ACTIVE:
            element.set("phase", "active")
        else:
            assert banks.gwapre is not None
            element.set("phase", banks.gwapre.phase.value)
            element.set("reserved-at", banks.gwapre.reserved_at)
            if banks.gwapre.fallback_at and banks.fallback_at:
                element.set("fallback-at", banks.gwapre.fallback_at)
            if banks.gwapre.reason:
                element.set("reason", banks.gwapre.reason)
        element.set("in-use", "true" if banks.in_use_bank == name else "false")
        element.set("digest", material.digest())
        if material.profile:
            p = material.profile
            etree.SubElement(element, _NS + "profile", {
                "partner-id": p.partner_id, "host": p.host, "port": str(p.port),
                "admin-service-url": p.admin_service_url, "info-report-url": p.info_report_url})
        if material.certificates:
            for usage in ("tls", "sig", "enc"):
                element.append(self._certificate_element("certificate", material.certificates.of(usage), usage=usage))
            for der in material.certificates.cas:
                element.append(self._certificate_element("ca-certificate", der))
        return element

    @staticmethod
    def _certificate_element(tag: str, der: bytes, **attributes: str) -> etree._Element:
        cert = x509.load_der_x509_certificate(der)
        element = etree.Element(_NS + tag, attributes)
        element.set("fingerprint", certificate_fingerprint(der))
        element.set("subject", cert.subject.rfc4514_string())
        element.set("not-after", cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return element

    @staticmethod
    def _hex(element: etree._Element, field_name: str) -> bytes:
        text = "".join((element.text or "").split())
        if len(element):
            raise CosemXmlError(f"<{etree.QName(element).localname}> holds text only (hex DER)", field=field_name)
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise CosemXmlError("expected hex digits (the DER certificate)", field=field_name) from None
        if not data:
            raise CosemXmlError("empty certificate", field=field_name)
        return data

    def _certificates_of(self, root: etree._Element) -> GwaCertificates:
        found: dict[str, bytes] = {}
        cas: list[bytes] = []
        for i, child in enumerate(root):
            if not isinstance(child.tag, str):
                continue
            local = etree.QName(child).localname
            if child.tag == _NS + "certificate":
                usage = child.get("usage", "")
                name = f"certificate[{usage}]"
                if usage not in ("tls", "sig", "enc"):
                    raise CosemXmlError(f"usage must be tls, sig or enc, not {usage[:20]!r}", field=f"/certificates/{local}[{i + 1}]/@usage")
                if usage in found:
                    raise CosemXmlError(f"the {usage} certificate is given twice", field=name)
                found[usage] = self._hex(child, name)
            elif child.tag == _NS + "ca-certificate":
                cas.append(self._hex(child, f"ca-certificate[{len(cas)}]"))
            else:
                raise CosemXmlError(f"<certificate> or <ca-certificate> expected, got <{local}>",
                                    field=f"/certificates/{local}[{i + 1}]")
        for usage in ("tls", "sig", "enc"):
            if usage not in found:
                raise CosemXmlError(f"the {usage} certificate is missing (<certificate usage=\"{usage}\">)",
                                    field=f"certificate[{usage}]")
        return GwaCertificates(found["tls"], found["sig"], found["enc"], tuple(cas))

    # -- trust anchors (6.7.3, 6.7.4) ------------------------------------------------------------
    def _roots_document(self) -> bytes:
        root = etree.Element(_NS + "trust-anchors", nsmap={None: KEYBANK_NS})
        for cert in self.roots:
            root.append(self._certificate_element("root", _der(cert)))
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    async def _get_roots(self, request: ApiRequest) -> ApiResponse:
        """The SM-PKI root certificates the gateway trusts (TLS and certificate checks)."""
        return ApiResponse(200, self._roots_document())

    async def _add_root(self, request: ApiRequest) -> ApiResponse:
        """6.7.3: add a root certificate, vouched for by a link certificate from a trusted root."""
        root = self._xml(request, "root-certificate")
        parts: dict[str, bytes] = {}
        for child in root:
            if not isinstance(child.tag, str):
                continue
            local = etree.QName(child).localname
            if child.tag not in (_NS + "certificate", _NS + "link-certificate") or local in parts:
                raise CosemXmlError(f"<certificate> and <link-certificate> expected once each, got <{local}>",
                                    field=f"/root-certificate/{local}")
            parts[local] = self._hex(child, local)
        for local in ("certificate", "link-certificate"):
            if local not in parts:
                raise CosemXmlError(f"<{local}> is missing", field=local)
        gw = self.gateway
        now = gw.clock.now()
        new_root = check_new_root(parts["certificate"], parts["link-certificate"], self.roots, now)
        der = _der(new_root)
        fingerprint = certificate_fingerprint(der)
        roots = [*self.roots, new_root]
        self._write_roots(roots, "root-certificate-added",
                          f"root certificate {new_root.subject.rfc4514_string()} added (link certificate verified)",
                          fingerprint=fingerprint, subject=new_root.subject.rfc4514_string())
        return ApiResponse(201, self._certificate_document(der), headers={"Location": f"/smgw/trust/roots/{fingerprint}"})

    def _certificate_document(self, der: bytes) -> bytes:
        element = self._certificate_element("root", der)
        tree = etree.Element(_NS + "root", dict(element.attrib), nsmap={None: KEYBANK_NS})
        return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")

    async def _delete_root(self, request: ApiRequest) -> ApiResponse:
        """6.7.4: delete a root certificate that nothing the gateway uses depends on."""
        fingerprint = request.params["fingerprint"].lower()
        matches = [r for r in self.roots if certificate_fingerprint(_der(r)) == fingerprint]
        if not matches:
            raise UnknownRoot(f"no trusted root with SHA-256 fingerprint {fingerprint[:64]}", field="fingerprint")
        if len(self.roots) == 1:
            raise RootInUse("the last root certificate is never deleted (the gateway could trust no GWA)",
                            field="fingerprint")
        users = roots_in_use(fingerprint, self.roots, self.trust().cas, self._certificates_in_use(),
                             self.gateway.clock.now())
        if users:
            raise RootInUse(f"certificates in use chain to this root: {', '.join(users[:5])}"
                            + (f" and {len(users) - 5} more" if len(users) > 5 else ""), field="fingerprint")
        subject = matches[0].subject.rfc4514_string()
        self._write_roots([r for r in self.roots if r is not matches[0]], "root-certificate-deleted",
                          f"root certificate {subject} deleted", fingerprint=fingerprint, subject=subject)
        return ApiResponse(204)

    def _certificates_in_use(self) -> list[tuple[str, bytes, str]]:
        """(label, DER, usage) of every certificate the gateway works with."""
        assert self.banks is not None
        used: list[tuple[str, bytes, str]] = []
        for bank in BANKS:
            material = self.banks.bank(bank)
            if material is not None and material.certificates and material.profile:
                for usage in ("tls", "sig", "enc"):
                    used.append((f"{bank} {material.profile.partner_id} {usage}", material.certificates.of(usage), usage))
        model = self.gateway.cosem.model
        for ldev in model.ldevs("commprofile"):
            if ldev.id == self.gateway.gwa.id:
                continue
            for obj in model.objects(ldev):
                for name, usage in (("tls_certificate", "tls"), ("signature_certificate", "sig"),
                                    ("encryption_certificate", "enc")):
                    der = obj.cosem_class.attribute_named(name).spec.to_python(
                        obj.peek(obj.cosem_class.attribute_named(name).index)) if obj.class_id == 28100 else b""
                    if der:
                        used.append((f"commprofile {ldev.id} {usage}", der, usage))
        for ldev in model.ldevs("meter"):
            for obj in model.objects(ldev):
                if obj.class_id == 28300:
                    attr = obj.cosem_class.attribute_named("meter_certificate")
                    der = attr.spec.to_python(obj.peek(attr.index))
                    if der:
                        used.append((f"meter {ldev.id} tls", der, "tls"))
        return used

    def _write_roots(self, roots: list[x509.Certificate], event: str, message: str, **details: str) -> None:
        gw = self.gateway
        with gw.store.transaction() as tx:
            tx.put_key_bank(TRUST_ROW, "active", {"roots": [_der(r).hex() for r in roots]}, _iso(gw.clock.now()))
            gw.journal(event, message, tx=tx, **details)
            gw.journal.emit(tx, event, **details)
        self.roots = roots
        self.rebuild_tls()
