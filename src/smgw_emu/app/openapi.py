"""OpenAPI 3.1 description of the MANAGEMENT-channel API, generated from the gateway's Router.

The routes (method, path pattern, AUTH or not) come from the code: the same `Router` the gateway
serves with, filled by `Gateway._install_routes` and `CosemApi.install`. What the code cannot
say (summary, statuses, bodies) comes from :data:`ROUTE_DOCS`, keyed by route name. A route
without an entry appears as "undocumented", and tests/unit/test_openapi.py fails until it has
one and docs/openapi.json is regenerated:

    .venv/bin/smgw-emu api openapi --output docs/openapi.json
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from smgw_emu import __version__
from smgw_emu.app.api import ERROR_NS, Router

XML = "application/xml"
CMS = "application/pkcs7-mime"
BODY_TYPES = (XML, CMS)


@dataclass(frozen=True)
class RouteDoc:
    summary: str
    description: str = ""
    request: str = ""                        # what the body holds; "" = no body
    response: str = ""                       # what a success body holds
    responses: dict[int, str] = field(default_factory=dict)  # status -> when
    selective: bool = False                  # accepts q.* selective-access parameters
    sealed: bool = False                     # body may be a CMS container / response sealed on request


_COSEM_ERRORS = {
    400: "bad XML (malformed, doctype-forbidden, entity-forbidden, too-deep, bad-xml), type-mismatch, bad-obis, bad-selector, wrong-object, cms-malformed / cms-not-for-us / cms-decrypt-failed / cms-wrong-content-type",
    403: "auth-required (outside the AUTH state), access-denied (the role may not), cms-signature-invalid / cms-unknown-signer",
    404: "unknown-ldev, unknown-object, unknown-attribute, unknown-method, bad-address",
    413: "body-too-large (over policy.max_request_bytes, refused before it is read)",
    415: "unsupported-media-type (neither application/xml nor application/pkcs7-mime), cms-unsupported-algorithm",
}


def _errors(*statuses: int, **extra: str) -> dict[int, str]:
    result = {s: _COSEM_ERRORS[s] for s in statuses}
    result.update({int(k[1:]): v for k, v in extra.items()})
    return result


ROUTE_DOCS: dict[str, RouteDoc] = {
    "auth-state": RouteDoc("AUTH state of this channel (5.8)", response="<auth state=\"established|none\" gateway=\"..\"/>",
                           responses={200: "the state"}),
    "auth-establish": RouteDoc("Establish the AUTH state again (5.8)",
                               description="Checks the peer certificate against the current GWA TLS certificate.",
                               response="<auth state=\"established\"/>",
                               responses={200: "AUTH established", 403: "auth-refused: the peer is not the GWA of the communication profile"}),
    "auth-end": RouteDoc("End the AUTH state (5.9)", response="<auth state=\"none\"/>", responses={200: "AUTH ended"}),
    "gateway-info": RouteDoc("Gateway id and time", response="<gateway id=\"..\" time=\"..\"/>",
                             responses={200: "the gateway", 403: "auth-required"}),
    "admin-service-fetch": RouteDoc(
        "Fetch a resource over the ADMIN-SERVICE channel (5.4/5.5)",
        description="[ours] Diagnostic: the gateway GETs <admin_service_url><name> and reports size and SHA-256.",
        request="<fetch xmlns=\"urn:smgw-emu:gateway:1\" name=\"..\"/>", response="<fetched name=\"..\" size=\"..\" sha256=\"..\"/>",
        responses={200: "fetched", 400: "malformed / bad-request (field name)", 403: "auth-required",
                   413: "body-too-large", 502: "admin-service-<reason>: the fetch failed"}),
    "cosem-ldev-list": RouteDoc(
        "Device discovery: the logical devices (6.5.1, fig. 43)", response="<ldev-list> of <ldev kind id href/>",
        responses={200: "all LDEVs", 400: "bad-selector (q.* given)", 403: "auth-required"}, sealed=True),
    "cosem-ldev-list-of-kind": RouteDoc(
        "The logical devices of one kind", description="Kinds: gateway, commprofile, meter, tafprofile, clsprofile.",
        response="<ldev-list>", responses={200: "the LDEVs of the kind (possibly none)", 403: "auth-required",
                                           404: "unknown-ldev (field kind): no such kind"}, sealed=True),
    "cosem-object-list": RouteDoc(
        "Device discovery: the objects of one LDEV (6.5.1, fig. 44)",
        response="<object-list> of <object class-id class-name obis href/>",
        responses={200: "the objects", 403: "auth-required", 404: "unknown-ldev, bad-address"}, sealed=True),
    "cosem-create": RouteDoc(
        "Create a profile (and its LDEV), or an object in an existing LDEV (6.4: figs. 22, 26, 33, 37, 39)",
        description="The body is the profile object (<cosem-object class-id obis>) with the attributes to set; "
                    "the LDEV id in the path is the profile's id. Events <label>-created (and first-readout for "
                    "billing evaluation profiles) go to the GWA.",
        request="<cosem-object>", response="<cosem-object> as stored; Location: the object's path",
        responses={201: "created", **_errors(400, 403, 404, 413, 415),
                   405: "read-only-attribute: the document sets one (pairing_state, ...)",
                   409: "duplicate-ldev: the profile (or the LDEV id) exists",
                   422: "invalid-value, unknown-reference, invalid-certificate: naming the field"}, sealed=True),
    "cosem-ldev-delete": RouteDoc(
        "Delete a profile: its LDEV with every object in it (figs. 25, 29, 36, 38, 42)",
        responses={204: "deleted; event <label>-deleted", 403: "auth-required; access-denied: not a profile LDEV",
                   404: "unknown-ldev", 409: "profile-in-use (another profile names it), profile-locked (the active GWA's)"}),
    "cosem-object-read": RouteDoc(
        "Read an object: every attribute the caller may read (figs. 24, 28, 35, 41)",
        response="<cosem-object> with <attribute index name> children",
        responses={200: "the object", 400: "bad-selector (q.* given)", 403: "auth-required", 404: _COSEM_ERRORS[404]}, sealed=True),
    "cosem-object-update": RouteDoc(
        "Update the attributes an object document gives (figs. 23, 27, 34, 40)",
        description="Attributes not in the document keep their values. Class id and OBIS code must be those of the path.",
        request="<cosem-object>", response="<cosem-object> as stored",
        responses={200: "updated; event <label>-updated for a profile", **_errors(400, 403, 404, 413, 415),
                   405: "read-only-attribute", 409: "profile-locked (active GWA profile, running billing parameter)",
                   422: "invalid-value, unknown-reference, invalid-certificate: naming the field"}, sealed=True),
    "cosem-object-delete": RouteDoc(
        "Delete an object; the profile object of a profile LDEV deletes the profile",
        responses={204: "deleted", 403: "auth-required; access-denied: the class may not be deleted by the role",
                   404: _COSEM_ERRORS[404], 409: "profile-in-use, profile-locked"}),
    "cosem-attribute-read": RouteDoc(
        "Read one attribute; arrays with selective access",
        description="q.fromidx (first index 0) and q.count, or q.fromtime (inclusive) and q.totime (exclusive), "
                    "ISO 8601 with offset; rows selected by time start with a date-time. The gateway's logs "
                    "(fig. 54) are selected over the whole log, at most 1,000 rows per answer; the GWA may not "
                    "read the consumer log's entries.",
        response="<attribute index name>value</attribute>",
        responses={200: "the value", 400: "bad-selector, selective-access-unsupported",
                   403: "auth-required; access-denied (e.g. encrypted_key is write-only, the consumer log's entries)",
                   404: _COSEM_ERRORS[404]},
        selective=True, sealed=True),
    "cosem-attribute-update": RouteDoc(
        "Update one attribute", request="<attribute index name>value</attribute> or a bare value element",
        response="<cosem-object> as stored",
        responses={200: "updated", **_errors(400, 403, 404, 413, 415), 405: "read-only-attribute",
                   409: "profile-locked", 422: "invalid-value, unknown-reference, invalid-certificate"}, sealed=True),
    "cosem-method-invoke": RouteDoc(
        "Invoke a method (pair and crypto_reset of a meter profile: figs. 30-32, gateway side)",
        description="The body is the argument as a bare value element; empty for null-data. Gateway operations "
                    "(app/operations.py): TimeSync.synchronise (5.13, fig. 13), SelfTest.run (5.15, fig. 15), "
                    "DeinstallationSignal.start_deinstallation_signal / stop_deinstallation_signal (figs. 47/48). "
                    "CLS proxy (app/cls.py): ClsProxyProfile.connect (HKS 4, fig. 75) and disconnect (fig. 77) "
                    "answer with the connection id. "
                    "Meter data (app/datatransfer.py): EvaluationProfile.terminate (figs. 49/50) ends the profile now and "
                    "answers with the termination time; EvaluationProfile.readout (OnDemandReadout, fig. 53) answers with "
                    "the readout id, with a day (YYYY-MM-DD, TAF 6, figs. 51/52) the transfer id or 404 no-values; "
                    "the values go sealed to the profile's EMT. "
                    "Meter change (app/meterchange.py, 6.3, fig. 21): MeterProfile.change_meter on the old meter's "
                    "profile with the new, paired meter's id (visible-string) takes a final reading of the old meter, "
                    "moves its evaluation profiles to the new one and deletes the old profile in one transaction; "
                    "answers with the new meter's id; 422 unknown-reference / invalid-value, 409 state-conflict, "
                    "502 final-reading-failed change nothing.",
        request="a value element, or nothing", response="<method-result index name>value</method-result>",
        responses={200: "invoked; event meter-pairing-started / crypto-reset-started", **_errors(400, 403, 404, 413, 415),
                   409: "state-conflict (pairing state, missing key material; CLS: not HKS 4, a connection open / none open; "
                        "evaluation profile ended or a readout running), profile-locked",
                   422: "invalid-value (key material of a wrong length)",
                   501: "method-not-implemented (a method no process uses yet)",
                   502: "time-sync-<reason>: TimeSync.synchronise got no usable time from the GWA's time service; "
                        "cls-emt-<reason> / cls-device-<reason>: ClsProxyProfile.connect could not open a leg"},
        sealed=True),
    # -- key banks, GWA change, trust anchors (6.6, 6.7.3, 6.7.4; app/keybanks.py) --------------
    "keybank-list": RouteDoc(
        "The GWA key banks ACTIVE and GWAPRE, and which one the gateway uses (6.6)",
        response="<keybanks xmlns=\"urn:smgw-emu:keybank:1\" in-use=\"ACTIVE|GWAPRE\"> of <keybank>",
        responses={200: "the banks", 403: "auth-required"}),
    "keybank-read": RouteDoc(
        "One GWA key bank: phase, profile, certificate fingerprints and the digest a new GWA confirms",
        response="<keybank name phase in-use digest [reserved-at fallback-at reason]> with <profile>, <certificate>, <ca-certificate>",
        responses={200: "the bank", 403: "auth-required", 404: "unknown-keybank (not ACTIVE or GWAPRE, or GWAPRE not reserved)"}),
    "keybank-release": RouteDoc(
        "Release GWAPRE: the rollback of a GWA change (figs. 61-67)",
        description="Allowed in the phases reserved, profiled, prepared (event gwa-change-aborted) and rolled-back.",
        responses={204: "released", 403: "auth-required", 404: "unknown-keybank",
                   409: "state-conflict: ACTIVE is never deleted; GWAPRE is in use (switched, verified, finalised)"}),
    "gwapre-reserve": RouteDoc(
        "Reserve GWAPRE for a GWA change (6.6.4, fig. 61)", response="<keybank name=\"GWAPRE\" phase=\"reserved\">",
        responses={200: "reserved", 403: "auth-required", 409: "state-conflict: already reserved"}),
    "gwapre-profile": RouteDoc(
        "The new GWA's communication profile into GWAPRE (6.6.5, fig. 62)",
        request="<cosem-object class-id=\"28100\" obis=\"0000800001ff\"> with partner_id, partner_role (gwa), host, port, admin_service_url, info_report_url",
        response="<keybank phase=\"profiled\">",
        responses={201: "stored", 400: "malformed, bad-xml, type-mismatch, wrong-object", 403: "auth-required",
                   409: "state-conflict: GWAPRE not reserved or already prepared", 413: "body-too-large",
                   415: "unsupported-media-type", 422: "invalid-value naming the attribute"}),
    "gwapre-certificates": RouteDoc(
        "The new GWA's TLS, signature and encryption certificates into GWAPRE (6.6.6, fig. 63)",
        request="<certificates xmlns=\"urn:smgw-emu:keybank:1\"> of <certificate usage=\"tls|sig|enc\">hex DER</certificate> and 0..4 <ca-certificate>",
        response="<keybank phase=\"prepared\">",
        responses={201: "stored", 400: "malformed, bad-xml (a usage missing or twice, no hex)", 403: "auth-required",
                   409: "state-conflict: no GWAPRE profile", 413: "body-too-large", 415: "unsupported-media-type",
                   422: "invalid-certificate (field certificate[usage] or ca-certificate[i]): chain, validity, key usage, subject CN"}),
    "gwapre-switch": RouteDoc(
        "Switch to GWAPRE (6.6.7, fig. 64): the gateway works with the new GWA; the fallback timer starts",
        description="The caller's AUTH ends (its peer is no longer the GWA in use).",
        response="<keybank phase=\"switched\" in-use=\"true\" fallback-at>",
        responses={200: "switched", 403: "auth-required", 409: "state-conflict: GWAPRE incomplete",
                   422: "invalid-value: the partner id names another profile now"}),
    "gwapre-final-profile": RouteDoc(
        "The new GWA's final communication profile (6.6.9, fig. 66)",
        request="<cosem-object class-id=\"28100\"> as for the GWAPRE profile, same partner_id",
        response="<keybank phase=\"finalised\" digest>",
        responses={201: "stored", 400: "malformed, bad-xml, type-mismatch, wrong-object", 403: "auth-required",
                   409: "state-conflict: GWAPRE not verified", 413: "body-too-large", 415: "unsupported-media-type",
                   422: "invalid-value naming the attribute"}),
    "gwapre-confirm": RouteDoc(
        "Confirm the final GWA (6.6.10, fig. 67): GWAPRE becomes ACTIVE",
        request="<confirm xmlns=\"urn:smgw-emu:keybank:1\" digest=\"..\"/> with the digest of GWAPRE as read",
        response="<keybank name=\"ACTIVE\">",
        responses={200: "confirmed; event gwa-change-completed", 400: "malformed, bad-xml (no digest)", 403: "auth-required",
                   409: "state-conflict (not finalised), digest-mismatch", 415: "unsupported-media-type"}),
    "trust-root-list": RouteDoc(
        "The SM-PKI root certificates the gateway trusts (TLS and certificate checks)",
        response="<trust-anchors xmlns=\"urn:smgw-emu:keybank:1\"> of <root fingerprint subject not-after/>",
        responses={200: "the roots", 403: "auth-required"}),
    "trust-root-add": RouteDoc(
        "Add a root certificate (6.7.3, fig. 70)",
        description="Accepted only with a link certificate: the new root's subject and key, issued by a trusted root.",
        request="<root-certificate xmlns=\"urn:smgw-emu:keybank:1\"><certificate>hex DER</certificate><link-certificate>hex DER</link-certificate></root-certificate>",
        response="<root fingerprint subject not-after/>",
        responses={201: "added; event root-certificate-added", 400: "malformed, bad-xml", 403: "auth-required",
                   409: "duplicate-root", 413: "body-too-large", 415: "unsupported-media-type",
                   422: "invalid-certificate (field certificate or link-certificate)"}),
    "trust-root-delete": RouteDoc(
        "Delete a root certificate (6.7.4, fig. 71)",
        responses={204: "deleted; event root-certificate-deleted", 403: "auth-required", 404: "unknown-root",
                   409: "root-in-use: the last root, or certificates in use chain to it"}),
    # -- the gateway's own WAN keys (6.7.1, 6.7.2; app/gatewaykeys.py) --------------------------------
    "gateway-keys-read": RouteDoc(
        "The gateway's WAN identity in use (stage initial/personalised, generation, certificates) and pending key pairs",
        response="<gateway-keys xmlns=\"urn:smgw-emu:keybank:1\" stage generation [pending pending-purpose]> of <certificate usage fingerprint/>",
        responses={200: "the identity", 403: "auth-required"}),
    "gateway-keys-generate": RouteDoc(
        "Generate new TLS, signature and encryption key pairs (6.7.1 personalisation, 6.7.2 key change)",
        request="<generate xmlns=\"urn:smgw-emu:keybank:1\" purpose=\"personalisation|key-change\"/>",
        response="<gateway-keys pending=\"generated\">",
        responses={200: "generated", 400: "malformed, bad-xml (no purpose)", 403: "auth-required",
                   409: "state-conflict: purpose does not fit the stage (field purpose), key pairs pending (field pending)",
                   415: "unsupported-media-type"}),
    "gateway-keys-requests": RouteDoc(
        "The PKCS#10 certificate requests of the pending key pairs",
        response="<certificate-requests purpose generation> of <request usage>hex DER</request>",
        responses={200: "the requests", 403: "auth-required", 409: "state-conflict: nothing pending"}),
    "gateway-keys-certificates": RouteDoc(
        "Install the certificates issued for the pending key pairs (personalisation: active at once)",
        request="<certificates xmlns=\"urn:smgw-emu:keybank:1\"> of <certificate usage>hex DER</certificate> and <ca-certificate>",
        response="<gateway-keys>",
        responses={200: "installed; event personalisation-completed (6.7.1)", 400: "malformed, bad-xml", 403: "auth-required",
                   409: "state-conflict: nothing pending, or certified already", 415: "unsupported-media-type",
                   422: "invalid-certificate (field certificate[usage]): another key, another gateway, key usage, chain"}),
    "gateway-keys-activate": RouteDoc(
        "Key change (6.7.2): the certified new keys serve the next connections",
        response="<gateway-keys generation>",
        responses={200: "active; event key-change-completed", 403: "auth-required",
                   409: "state-conflict: no certified pending key pairs"}),
    "gateway-keys-discard": RouteDoc(
        "Discard pending key pairs (the active ones stay)",
        responses={204: "discarded", 403: "auth-required", 409: "state-conflict: nothing pending"}),
    # -- the gateway's HAN and LMN TLS identities (6.7.5, 6.7.6; app/localidentity.py) ----------------
    "han-identity-read": RouteDoc(
        "The gateway's HAN TLS identity in use (stage initial/own, generation, certificate) and a pending key pair",
        response="<identity xmlns=\"urn:smgw-emu:keybank:1\" domain stage generation [pending]> of <certificate usage=\"tls\"/>",
        responses={200: "the identity", 403: "auth-required"}),
    "han-identity-generate": RouteDoc(
        "Generate a new HAN (6.7.5) TLS key pair and its certificate request",
        request="<generate xmlns=\"urn:smgw-emu:keybank:1\"/>",
        response="<identity pending=\"generated\">",
        responses={200: "generated", 403: "auth-required", 409: "state-conflict: a key pair is pending (field pending)"}),
    "han-identity-requests": RouteDoc(
        "The PKCS#10 request of the pending HAN key pair",
        response="<certificate-requests domain generation> of <request usage=\"tls\">hex DER</request>",
        responses={200: "the request", 403: "auth-required", 409: "state-conflict: nothing pending"}),
    "han-identity-certificates": RouteDoc(
        "Install the certificate issued for the pending HAN key pair: in use from the next connection",
        request="<certificates xmlns=\"urn:smgw-emu:keybank:1\"> of one <certificate usage=\"tls\">hex DER</certificate> and <ca-certificate>",
        response="<identity stage=\"own\" generation>",
        responses={200: "installed; event han-certificate-changed", 400: "malformed, bad-xml",
                   403: "auth-required", 409: "state-conflict: nothing pending", 415: "unsupported-media-type",
                   422: "invalid-certificate (field certificate): another key, another gateway, key usage, chain"}),
    "han-identity-discard": RouteDoc(
        "Discard a pending HAN key pair (the certificate in use stays)",
        responses={204: "discarded", 403: "auth-required", 409: "state-conflict: nothing pending"}),
    "lmn-identity-read": RouteDoc(
        "The gateway's LMN TLS identity in use (stage initial/own, generation, certificate) and a pending key pair",
        response="<identity xmlns=\"urn:smgw-emu:keybank:1\" domain stage generation [pending]> of <certificate usage=\"tls\"/>",
        responses={200: "the identity", 403: "auth-required"}),
    "lmn-identity-generate": RouteDoc(
        "Generate a new LMN (6.7.6) TLS key pair and its certificate request",
        request="<generate xmlns=\"urn:smgw-emu:keybank:1\"/>",
        response="<identity pending=\"generated\">",
        responses={200: "generated", 403: "auth-required", 409: "state-conflict: a key pair is pending (field pending)"}),
    "lmn-identity-requests": RouteDoc(
        "The PKCS#10 request of the pending LMN key pair",
        response="<certificate-requests domain generation> of <request usage=\"tls\">hex DER</request>",
        responses={200: "the request", 403: "auth-required", 409: "state-conflict: nothing pending"}),
    "lmn-identity-certificates": RouteDoc(
        "Install the certificate issued for the pending LMN key pair: in use from the next connection",
        request="<certificates xmlns=\"urn:smgw-emu:keybank:1\"> of one <certificate usage=\"tls\">hex DER</certificate> and <ca-certificate>",
        response="<identity stage=\"own\" generation>",
        responses={200: "installed; event lmn-certificate-changed; every paired meter is shown it (failure: event lmn-certificate-change-failed)", 400: "malformed, bad-xml",
                   403: "auth-required", 409: "state-conflict: nothing pending", 415: "unsupported-media-type",
                   422: "invalid-certificate (field certificate): another key, another gateway, key usage, chain"}),
    "lmn-identity-discard": RouteDoc(
        "Discard a pending LMN key pair (the certificate in use stays)",
        responses={204: "discarded", 403: "auth-required", 409: "state-conflict: nothing pending"}),
}


def documented_router() -> Router:
    """The routes the gateway serves, without starting it."""
    from smgw_emu.app.config import load_config
    from smgw_emu.app.cosem_api import CosemApi
    from smgw_emu.app.gateway import Gateway

    gateway = Gateway(load_config())
    router = Router(journal=lambda *args, **kwargs: 0)
    gateway._install_routes(router)
    CosemApi(gateway).install(router)
    return router


_PARAM = re.compile(r"\(\?P<(\w+)>\[\^/\]\+\)")
_PARAM_DOCS = {
    "kind": "LDEV kind: gateway, commprofile, meter, tafprofile, clsprofile",
    "ldev": "LDEV id (a profile's id: partner id, meter id, profile id; the gateway id)",
    "object": "<class id>-<OBIS code, 12 hex digits>, e.g. 28300-0000800002ff",
    "index": "attribute or method index, 1..255",
    "bank": "key bank: ACTIVE or GWAPRE",
    "fingerprint": "SHA-256 of the root certificate's DER, 64 hex digits",
}


def path_template(pattern: str) -> tuple[str, list[str]]:
    """"/smgw/cosem/(?P<kind>[^/]+)/?\\Z" -> ("/smgw/cosem/{kind}", ["kind"])."""
    text = pattern.removesuffix(r"\Z").removesuffix("/?")
    names = _PARAM.findall(text)
    text = _PARAM.sub(lambda m: "{" + m.group(1) + "}", text)
    if re.search(r"[\\()\[\]?*+^$|]", text):
        raise ValueError(f"route pattern {pattern!r} is not a plain path with [^/]+ parameters")
    return text or "/", names


def _body(description: str, media: tuple[str, ...]) -> dict[str, Any]:
    return {"description": description, "content": {m: {"schema": {"type": "string"}} for m in media}}


def generate(router: Router | None = None) -> dict[str, Any]:
    router = router or documented_router()
    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes:
        path, names = path_template(route.pattern.pattern)
        doc = ROUTE_DOCS.get(route.name, RouteDoc("undocumented", responses={200: "undocumented"}))
        operation: dict[str, Any] = {"operationId": route.name, "summary": doc.summary}
        if doc.description:
            operation["description"] = doc.description
        parameters = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"},
                       "description": _PARAM_DOCS.get(n, n)} for n in names]
        if doc.selective:
            for name, what in (("q.fromidx", "first row, from 0"), ("q.count", "number of rows"),
                               ("q.fromtime", "rows at or after (ISO 8601 with offset)"),
                               ("q.totime", "rows before (ISO 8601 with offset)")):
                parameters.append({"name": name, "in": "query", "required": False, "schema": {"type": "string"},
                                   "description": what})
        if doc.sealed and route.method == "GET":
            parameters.append({"name": "Accept", "in": "header", "required": False, "schema": {"type": "string"},
                               "description": f"{CMS}: the answer is sealed for the GWA (5.11)"})
        if parameters:
            operation["parameters"] = parameters
        if doc.request:
            media = BODY_TYPES if doc.sealed else (XML,)
            operation["requestBody"] = _body(doc.request + (f"; or that document in a CMS container ({CMS}, 5.10)"
                                                            if doc.sealed else ""), media)
        responses: dict[str, Any] = {}
        for status, when in sorted(doc.responses.items()):
            if status >= 400:
                responses[str(status)] = {"description": when,
                                          "content": {XML: {"schema": {"$ref": "#/components/schemas/Error"}}}}
            elif status == 204:
                responses[str(status)] = {"description": when}
            else:
                media = (XML, CMS) if doc.sealed and route.method == "GET" else (XML,)
                responses[str(status)] = _body(f"{when}: {doc.response}" if doc.response else when, media)
                if status == 201:
                    responses["201"]["headers"] = {"Location": {"schema": {"type": "string"},
                                                                "description": "path of the created object"}}
        responses.setdefault("405", {"description": "method-not-allowed (Allow header names the methods of the path)",
                                     "content": {XML: {"schema": {"$ref": "#/components/schemas/Error"}}}})
        operation["responses"] = responses
        if route.admin:
            operation["security"] = [{"gwaTls": []}]
        else:
            operation["description"] = (operation.get("description", "") + " Answered outside the AUTH state.").strip()
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smgw-emu MANAGEMENT channel API",
            "version": __version__,
            "description": "Served by the gateway over the TLS connection it opens to the GWA (reverse HTTP, "
                           "docs/domain.md section 2). Generated from the gateway's routes; docs/wan-api.md explains it.",
        },
        "servers": [{"url": "/", "description": "the gateway, on its MANAGEMENT channel to the GWA"}],
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object", "required": ["code", "message"],
                    "xml": {"name": "error", "namespace": ERROR_NS},
                    "properties": {
                        "code": {"type": "string", "xml": {"attribute": True}, "description": "stable machine code"},
                        "message": {"type": "string"},
                        "field": {"type": "string", "description": "the attribute, element or parameter at fault"},
                    },
                },
            },
            "securitySchemes": {"gwaTls": {
                "type": "mutualTLS",
                "description": "the AUTH state: the peer certificate is the GWA TLS certificate of the communication profile",
            }},
        },
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
