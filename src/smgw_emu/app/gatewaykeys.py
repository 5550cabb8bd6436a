"""The gateway's own WAN keys, wired: personalisation (6.7.1) and the gateway key change (6.7.2).

Rules in the sans-IO `smgw_emu.core.gatewaykeys`. The identity in use lives in the state store
(key bank rows ``gateway/ACTIVE`` and ``gateway/PENDING``); at the first start it is the initial
identity of the PKI directory. Its TLS key and chain are written to ``<state_dir>/keys/`` for the
TLS context (OpenSSL loads identities from files); on a change the WAN TLS context is rebuilt and
the CMS keys follow. Resources (docs/wan-api.md "Key banks, GWA change and trust anchors"):

    GET    /smgw/keys                 the identity in use and what is pending
    POST   /smgw/keys/generate        <generate purpose="personalisation|key-change"/>: 200
    GET    /smgw/keys/requests        the PKCS#10 certificate requests of the new keys: 200
    PUT    /smgw/keys/certificates    their certificates: 200 (personalisation: active at once)
    POST   /smgw/keys/activate        key change: the new keys for the next connections: 200
    DELETE /smgw/keys/pending         discard new keys not yet active: 204
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from smgw_emu.app.api import ApiRequest, ApiResponse, Router
from smgw_emu.core.cosem import CosemXmlError
from smgw_emu.core.gatewaykeys import (
    INITIAL,
    ROW_ACTIVE,
    USAGES,
    GatewayKeys,
    Identity,
    KeyTransition,
    load_key,
)
from smgw_emu.core.keybanks import certificate_fingerprint

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway
    from smgw_emu.app.keybanks import KeyBankService

KEYBANK_NS = "urn:smgw-emu:keybank:1"
_NS = f"{{{KEYBANK_NS}}}"


def _iso(t) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GatewayKeyService:
    def __init__(self, gateway: "Gateway", banks: "KeyBankService") -> None:
        self.gateway = gateway
        self.banks = banks
        self.keys: GatewayKeys | None = None
        self.tls_files: tuple[Path, Path] | None = None   # (chain, key) of the identity in use

    # -- start -----------------------------------------------------------------------------------
    def load(self) -> None:
        """The identity in use; at the first start the initial one of the PKI directory."""
        gw = self.gateway
        keys = GatewayKeys.from_rows(gw.store.key_banks())
        if keys is None:
            keys = self._initialise()
        self.keys = keys
        self._materialise()

    def _initialise(self) -> GatewayKeys:
        from smgw_emu.app.gateway import GatewayStartError

        gw = self.gateway
        pki = gw.pki
        try:
            certificates = {u: pki.cert(f"gateway-{u}").public_bytes(serialization.Encoding.DER) for u in USAGES}
            keys = {u: pki.key_path(f"gateway-{u}").read_text() for u in USAGES}
            chain = x509.load_pem_x509_certificates(pki.chain_path("gateway-tls").read_bytes())[1:]
        except (OSError, ValueError, AssertionError) as exc:
            raise GatewayStartError(f"the gateway's initial keys in {pki.root} are unreadable: {exc}") from None
        identity = Identity(INITIAL, 0, keys, certificates, tuple(c.public_bytes(serialization.Encoding.DER) for c in chain))
        with gw.store.transaction() as tx:
            tx.put_key_bank(ROW_ACTIVE, INITIAL, identity.to_json(), _iso(gw.clock.now()))
            gw.journal("gateway-identity-initialised", f"initial gateway keys and certificates from {pki.root}",
                       tx=tx, tls=certificate_fingerprint(certificates["tls"])[:16])
        return GatewayKeys(identity)

    def _materialise(self) -> None:
        """Write the TLS key and chain of the identity in use where OpenSSL can load them."""
        assert self.keys is not None
        identity = self.keys.active
        directory = Path(self.gateway.config.gateway.state_dir) / "keys" / f"generation-{identity.generation}"
        directory.mkdir(parents=True, exist_ok=True)
        key_path, chain_path = directory / "tls.key", directory / "tls.chain.pem"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(identity.keys["tls"])
        pems = [x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
                for der in (identity.certificates["tls"], *identity.chain)]
        chain_path.write_bytes(b"".join(pems))
        self.tls_files = (chain_path, key_path)

    def start(self) -> None:
        self._apply_cms_keys()

    def _apply_cms_keys(self) -> None:
        assert self.keys is not None
        identity = self.keys.active
        pair = {u: (x509.load_der_x509_certificate(identity.certificates[u]), load_key(identity.keys[u]))
                for u in ("enc", "sig")}
        self.gateway.cosem.set_gateway_keys(enc=pair["enc"], sig=pair["sig"])

    # -- committing a step -----------------------------------------------------------------------
    def _commit(self, transition: KeyTransition) -> None:
        self.gateway.journal.commit_key_transition(transition)
        self.keys = transition.after
        if transition.identity_changed:
            self._materialise()
            self.banks.rebuild_tls()  # the next connections present the new certificate
            self._apply_cms_keys()

    # -- routes ----------------------------------------------------------------------------------
    def install(self, router: Router) -> None:
        route = self.banks._route
        router.add("GET", r"/smgw/keys/?", route(self._get), name="gateway-keys-read")
        router.add("POST", r"/smgw/keys/generate/?", route(self._generate), name="gateway-keys-generate")
        router.add("GET", r"/smgw/keys/requests/?", route(self._requests), name="gateway-keys-requests")
        router.add("PUT", r"/smgw/keys/certificates/?", route(self._certificates), name="gateway-keys-certificates")
        router.add("POST", r"/smgw/keys/activate/?", route(self._activate), name="gateway-keys-activate")
        router.add("DELETE", r"/smgw/keys/pending/?", route(self._discard), name="gateway-keys-discard")

    def _document(self) -> bytes:
        assert self.keys is not None
        identity, pending = self.keys.active, self.keys.pending
        root = etree.Element(_NS + "gateway-keys", nsmap={None: KEYBANK_NS})
        root.set("gateway", self.gateway.id)
        root.set("stage", identity.stage)
        root.set("generation", str(identity.generation))
        if pending is not None:
            root.set("pending", pending.state)
            root.set("pending-purpose", pending.purpose)
            root.set("pending-generation", str(pending.generation))
        for usage in USAGES:
            root.append(self.banks._certificate_element("certificate", identity.certificates[usage], usage=usage))
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    async def _get(self, request: ApiRequest) -> ApiResponse:
        """The gateway's WAN identity in use (stage, generation, certificates) and pending key pairs."""
        return ApiResponse(200, self._document())

    async def _generate(self, request: ApiRequest) -> ApiResponse:
        """6.7.1 / 6.7.2: generate new TLS, signature and encryption key pairs."""
        root = self.banks._xml(request, "generate")
        purpose = root.get("purpose", "")
        if not purpose:
            raise CosemXmlError('<generate> needs purpose="personalisation" or "key-change"', field="purpose")
        assert self.keys is not None
        curve = load_key(self.keys.active.keys["tls"]).curve
        self._commit(self.keys.generate(purpose, self.gateway.id, lambda: ec.generate_private_key(type(curve)()),
                                        self.gateway.clock.now()))
        return ApiResponse(200, self._document())

    async def _requests(self, request: ApiRequest) -> ApiResponse:
        """The PKCS#10 requests of the pending key pairs (each signed with its new key)."""
        assert self.keys is not None
        pending = self.keys.pending
        if pending is None:
            from smgw_emu.core.profiles import StateConflict

            raise StateConflict("no pending key pairs: generate them first (POST /smgw/keys/generate)", field="pending")
        root = etree.Element(_NS + "certificate-requests", nsmap={None: KEYBANK_NS})
        root.set("purpose", pending.purpose)
        root.set("generation", str(pending.generation))
        for usage in USAGES:
            etree.SubElement(root, _NS + "request", {"usage": usage}).text = pending.requests[usage].hex()
        return ApiResponse(200, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

    async def _certificates(self, request: ApiRequest) -> ApiResponse:
        """The certificates the SM-PKI issued for the pending key pairs."""
        certs = self.banks._certificates_of(self.banks._xml(request, "certificates"))
        assert self.keys is not None
        self._commit(self.keys.install({"tls": certs.tls, "sig": certs.sig, "enc": certs.enc}, list(certs.cas),
                                       self.banks.trust(), self.gateway.id, self.gateway.clock.now()))
        return ApiResponse(200, self._document())

    async def _activate(self, request: ApiRequest) -> ApiResponse:
        """6.7.2: use the new keys from the next connection on."""
        assert self.keys is not None
        self._commit(self.keys.activate(self.gateway.clock.now()))
        return ApiResponse(200, self._document())

    async def _discard(self, request: ApiRequest) -> ApiResponse:
        """Discard pending key pairs; the active ones stay."""
        assert self.keys is not None
        self._commit(self.keys.discard(self.gateway.clock.now()))
        return ApiResponse(204)
