"""The gateway's HAN and LMN TLS identities, wired: HAN certificate change (6.7.5, fig. 72) and
LMN certificate change (6.7.6, fig. 73). Rules in the sans-IO `smgw_emu.core.localidentity`.

Resources (docs/wan-api.md "Key banks, GWA change and trust anchors"), ``<domain>`` = han | lmn:

    GET    /smgw/keys/<domain>               the identity in use and what is pending
    POST   /smgw/keys/<domain>/generate      a new key pair and its certificate request: 200
    GET    /smgw/keys/<domain>/requests      the PKCS#10 request: 200
    PUT    /smgw/keys/<domain>/certificates  its certificate: active at once: 200
    DELETE /smgw/keys/<domain>/pending       discard a key pair not yet certified: 204

After a change the TLS contexts of that network are rebuilt: on the HAN the CLS listener, the
gateway's client context towards CLS devices and the consumer interface present the new
certificate to every new connection (open ones keep their session); on the LMN the gateway shows
the new certificate to every paired meter at once, on a connection of its own with an identity
query signed with the meter's key (log ``lmn-certificate-shown``, or on failure event
``lmn-certificate-change-failed``; the meter sees it at its next reading anyway).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from smgw_emu.app.api import ApiRequest, ApiResponse, Router
from smgw_emu.app.journal import LEVEL_WARNING
from smgw_emu.core import lmn
from smgw_emu.core.cosem import CosemXmlError
from smgw_emu.core.lmn import LmnError
from smgw_emu.core.localidentity import DOMAINS, LocalIdentity, LocalTransition
from smgw_emu.core.gatewaykeys import load_key
from smgw_emu.core.profiles import meter_key_banks
from smgw_emu.core.keybanks import certificate_fingerprint
from smgw_emu.net.tls import PROFILES, client_context, server_context

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway

KEYBANK_NS = "urn:smgw-emu:keybank:1"
_NS = f"{{{KEYBANK_NS}}}"


class LocalIdentityService:
    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        self.identities: dict[str, LocalIdentity] = {}
        self._files: dict[str, tuple[Path, Path]] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- start -----------------------------------------------------------------------------------
    def load(self) -> None:
        rows = self.gateway.store.key_banks()
        for domain in DOMAINS:
            self.identities[domain] = LocalIdentity.from_rows(domain, rows)
            self._materialise(domain)

    def _materialise(self, domain: str) -> None:
        identity = self.identities[domain].active
        if identity is None:
            self._files.pop(domain, None)
            return
        directory = Path(self.gateway.config.gateway.state_dir) / "keys" / f"{domain}-generation-{identity.generation}"
        directory.mkdir(parents=True, exist_ok=True)
        key_path, chain_path = directory / "tls.key", directory / "tls.chain.pem"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(identity.keys["tls"])
        pems = [x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
                for der in (identity.certificates["tls"], *identity.chain)]
        chain_path.write_bytes(b"".join(pems))
        self._files[domain] = (chain_path, key_path)

    def files(self, domain: str) -> dict[str, Path]:
        """``chain`` and ``key`` of the domain's TLS identity: its own once changed, else the PKI
        directory's gateway TLS certificate (the initial identity)."""
        pki = self.gateway.pki
        chain, key = self._files.get(domain) or (pki.chain_path("gateway-tls"), pki.key_path("gateway-tls"))
        return {"chain": chain, "key": key}

    def has_own(self, domain: str) -> bool:
        return domain in self._files

    def certificate_der(self, domain: str) -> bytes:
        identity = self.identities[domain].active
        if identity is not None:
            return identity.certificates["tls"]
        return self.gateway.pki.cert("gateway-tls").public_bytes(serialization.Encoding.DER)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    # -- committing a step -----------------------------------------------------------------------
    def _commit(self, transition: LocalTransition) -> None:
        self.gateway.journal.commit_key_transition(transition)
        domain = transition.after.domain
        self.identities[domain] = transition.after
        if transition.identity_changed:
            self._materialise(domain)
            (self._apply_han if domain == "han" else self._apply_lmn)()

    def _apply_han(self) -> None:
        """The HAN listeners and the client context towards CLS devices take the new certificate."""
        gw = self.gateway
        profile, files = PROFILES["han"], self.files("han")
        cls = gw.cls
        if cls is not None:
            cls.han_server_context = server_context(profile, **files, cafile=gw.pki.root_ca)
            cls.han_client_context = client_context(profile, **files, cafile=gw.pki.root_ca)
            if cls.listener is not None:
                cls.listener.set_ssl_context(cls.han_server_context)
        han = gw.han
        if han is not None and han.server is not None:
            context = server_context(profile, **files, cafile=gw.pki.root / han.config.client_ca,
                                     client_certificate="optional")
            han.certificate_der = self.certificate_der("han")
            han.server.set_ssl_context(context)

    def _apply_lmn(self) -> None:
        """The LMN client context takes the new certificate; every paired meter is shown it."""
        gw = self.gateway
        meters = gw.meters
        if meters is None:
            return
        meters.ssl_context = client_context(PROFILES["lmn"], **self.files("lmn"), cafile=gw.pki.root_ca)
        for ldev in gw.cosem.model.ldevs("meter"):
            found = lmn.meter_profile(gw.cosem.model, ldev.id)
            if found is None or _value(found[1], "pairing_state") != "paired":
                continue
            task = asyncio.get_running_loop().create_task(self._show_lmn(ldev.id), name=f"lmn-certificate-{ldev.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _show_lmn(self, meter: str) -> None:
        """An identity query on a new connection: the meter sees the gateway's new LMN certificate."""
        gw = self.gateway
        found = lmn.meter_profile(gw.cosem.model, meter)
        if found is None:
            return
        obj = found[1]
        bank = gw.store.key_banks().get(meter_key_banks(meter)[2])
        generation = str(self.identities["lmn"].generation)
        try:
            if bank is None:
                raise LmnError("no-key", "no active key for the paired meter")
            request = lmn.identity_request(key=bytes.fromhex(bank[1]["key"]), client_id=gw.meters.client_id,
                                           meter=meter, req_file_id=os.urandom(8))
            body, _, _ = await gw.meters._exchange(meter, _value(obj, "lmn_address"), _value(obj, "meter_certificate"),
                                                   request)
            lmn.check_identity(body, meter)
        except LmnError as exc:
            details = {"meter": meter, "generation": generation, "reason": exc.reason, "detail": str(exc)[:200]}
            with gw.journal.together() as tx:
                gw.journal("lmn-certificate-show-failed", f"meter {meter} could not be shown the new LMN certificate: "
                           f"{exc}; it sees it at its next reading", tx=tx, level=LEVEL_WARNING, outcome=1, **details)
                gw.journal.emit(tx, "lmn-certificate-change-failed", **details)
            return
        gw.journal("lmn-certificate-shown", f"meter {meter} was shown the gateway's LMN certificate generation "
                   f"{generation}", meter=meter, generation=generation,
                   tls=certificate_fingerprint(self.certificate_der("lmn"))[:16])

    # -- routes ----------------------------------------------------------------------------------
    def install(self, router: Router) -> None:
        route = self.gateway.keybanks._route
        for domain in DOMAINS:  # literal paths per network (the OpenAPI document lists each)
            base = f"/smgw/keys/{domain}"

            def bound(handler, domain=domain):
                async def handle(request: ApiRequest) -> ApiResponse:
                    request.params["domain"] = domain
                    return await handler(request)

                handle.__doc__ = handler.__doc__
                return route(handle)

            router.add("GET", base + r"/?", bound(self._get), name=f"{domain}-identity-read")
            router.add("POST", base + r"/generate/?", bound(self._generate), name=f"{domain}-identity-generate")
            router.add("GET", base + r"/requests/?", bound(self._requests), name=f"{domain}-identity-requests")
            router.add("PUT", base + r"/certificates/?", bound(self._certificates), name=f"{domain}-identity-certificates")
            router.add("DELETE", base + r"/pending/?", bound(self._discard), name=f"{domain}-identity-discard")

    def _document(self, domain: str) -> bytes:
        identity = self.identities[domain]
        root = etree.Element(_NS + "identity", nsmap={None: KEYBANK_NS})
        root.set("gateway", self.gateway.id)
        root.set("domain", domain)
        root.set("stage", "initial" if identity.active is None else "own")
        root.set("generation", str(identity.generation))
        if identity.pending is not None:
            root.set("pending", identity.pending.state)
            root.set("pending-generation", str(identity.pending.generation))
        root.append(self.gateway.keybanks._certificate_element("certificate", self.certificate_der(domain), usage="tls"))
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    async def _get(self, request: ApiRequest) -> ApiResponse:
        """The gateway's HAN or LMN TLS identity in use and a pending key pair."""
        return ApiResponse(200, self._document(request.params["domain"]))

    async def _generate(self, request: ApiRequest) -> ApiResponse:
        """6.7.5 / 6.7.6: generate a new HAN or LMN TLS key pair and its certificate request."""
        domain = request.params["domain"]
        curve = load_key(self.gateway.keybanks.gateway_keys.keys.active.keys["tls"]).curve
        self._commit(self.identities[domain].generate(self.gateway.id, lambda: ec.generate_private_key(type(curve)()),
                                                      self.gateway.clock.now()))
        return ApiResponse(200, self._document(domain))

    async def _requests(self, request: ApiRequest) -> ApiResponse:
        """The PKCS#10 request of the pending HAN or LMN key pair."""
        from smgw_emu.core.profiles import StateConflict

        domain = request.params["domain"]
        pending = self.identities[domain].pending
        if pending is None:
            raise StateConflict(f"no pending {domain} key pair: generate it first (POST /smgw/keys/{domain}/generate)",
                                field="pending")
        root = etree.Element(_NS + "certificate-requests", nsmap={None: KEYBANK_NS})
        root.set("domain", domain)
        root.set("generation", str(pending.generation))
        etree.SubElement(root, _NS + "request", {"usage": "tls"}).text = pending.requests["tls"].hex()
        return ApiResponse(200, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

    async def _certificates(self, request: ApiRequest) -> ApiResponse:
        """The certificate the SM-PKI issued for the pending key pair; in use at once."""
        domain = request.params["domain"]
        root = self.gateway.keybanks._xml(request, "certificates")
        certificate, cas = b"", []
        for i, element in enumerate(root):
            tag = etree.QName(element).localname if isinstance(element.tag, str) else ""
            try:
                value = bytes.fromhex((element.text or "").strip())
            except ValueError:
                raise CosemXmlError(f"<{tag}> [{i}]: not hexadecimal DER", field=tag) from None
            if tag == "certificate" and element.get("usage", "tls") == "tls" and not certificate:
                certificate = value
            elif tag == "ca-certificate":
                cas.append(value)
            else:
                raise CosemXmlError(f"unexpected <{tag}> in <certificates>: one <certificate usage=\"tls\"> and "
                                    "optional <ca-certificate> elements", field=tag or "certificates")
        if not certificate:
            raise CosemXmlError('<certificates> needs one <certificate usage="tls">', field="certificate")
        self._commit(self.identities[domain].install(certificate, cas, self.gateway.keybanks.trust(), self.gateway.id,
                                                     self.gateway.clock.now()))
        return ApiResponse(200, self._document(domain))

    async def _discard(self, request: ApiRequest) -> ApiResponse:
        """Discard a pending HAN or LMN key pair; the certificate in use stays."""
        domain = request.params["domain"]
        self._commit(self.identities[domain].discard(self.gateway.clock.now()))
        return ApiResponse(204)


def _value(obj, name: str):
    attr = obj.cosem_class.attribute_named(name)
    return attr.spec.to_python(obj.peek(attr.index))
