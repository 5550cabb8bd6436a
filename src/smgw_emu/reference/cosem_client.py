"""What the reference GWA sends on the MANAGEMENT channel: COSEM documents for the profiles of
Lastenheft 6.4, and CMS containers (5.10 towards the gateway, 5.11 back from it).

    body = profile_document("meter", meter_profile_values(pki, key_container=...))
    await channel.request("POST", profile_path("meter", meter_id), body, step="post-meter-profile")

Values are plain Python as `TypeSpec.build` takes them: names for enums, dicts for structures,
bytes for octet-strings. Only the attributes given are written, so read-only attributes
(pairing_state, logical_name) stay out of a request.
"""

from __future__ import annotations

from typing import Any, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from smgw_emu.core import cms
from smgw_emu.core.cosem import ObisCode, default_definitions
from smgw_emu.core.cosem.xmlcodec import NAMESPACE, encode_value
from smgw_emu.core.profiles import PROFILE_KINDS
from smgw_emu.pki import PkiDir

CMS_MEDIA_TYPE = "application/pkcs7-mime"


def object_document(class_id: int, obis: ObisCode, values: Mapping[str, Any]) -> bytes:
    """A ``<cosem-object>`` with the attributes named in ``values`` (by attribute name)."""
    cosem_class = default_definitions().cls(class_id)
    root = etree.Element(f"{{{NAMESPACE}}}cosem-object",
                         {"class-id": str(class_id), "class-name": cosem_class.name, "obis": obis.hex},
                         nsmap={None: NAMESPACE})
    for name, data in values.items():
        attr = cosem_class.attribute_named(name)
        element = etree.SubElement(root, f"{{{NAMESPACE}}}attribute", {"index": str(attr.index), "name": name})
        element.append(encode_value(attr.spec.build(data, name)))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def attribute_document(class_id: int, name: str, data: Any) -> bytes:
    """An ``<attribute>`` body for a PUT of one attribute."""
    attr = default_definitions().cls(class_id).attribute_named(name)
    root = etree.Element(f"{{{NAMESPACE}}}attribute", {"index": str(attr.index), "name": name}, nsmap={None: NAMESPACE})
    root.append(encode_value(attr.spec.build(data, name)))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def profile_document(kind: str, values: Mapping[str, Any]) -> bytes:
    pk = PROFILE_KINDS[kind]
    return object_document(pk.class_id, pk.obis, values)


def profile_path(kind: str, ldev_id: str) -> str:
    """Where a profile is created (POST) or deleted (DELETE)."""
    return f"/smgw/cosem/{kind}/{ldev_id}"


def profile_object_path(kind: str, ldev_id: str) -> str:
    """The profile object (GET, PUT, DELETE); also the Location of a 201."""
    pk = PROFILE_KINDS[kind]
    return f"/smgw/cosem/{kind}/{ldev_id}/{pk.class_id}-{pk.obis.hex}"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# -- typical profiles, built from the test SM-PKI ------------------------------------------------


def communication_profile_values(pki: PkiDir, **changes: Any) -> dict[str, Any]:
    """The EMT's communication profile (partner = the PKI's EMT)."""
    values = {
        "partner_id": pki.identities.emt, "partner_role": "emt", "host": "emt.example", "port": 4443,
        "admin_service_url": "", "info_report_url": "https://emt.example:4443/reports",
        "tls_certificate": _der(pki.cert("emt-tls")), "signature_certificate": _der(pki.cert("emt-sig")),
        "encryption_certificate": _der(pki.cert("emt-enc")), "idle_timeout_s": 300, "retry_interval_s": 60,
        "max_retries": 3, "container_profile": "default",
    }
    values.update(changes)
    return values


def meter_profile_values(pki: PkiDir, *, key_container: bytes = b"", **changes: Any) -> dict[str, Any]:
    values = {
        "meter_id": pki.identities.meter, "meter_type": "electricity", "capture_period_s": 900,
        "encrypted_key": key_container, "meter_certificate": _der(pki.cert("meter-tls")),
    }
    values.update(changes)
    return values


def evaluation_profile_values(pki: PkiDir, profile_id: str, /, *, billing: bool = True, **changes: Any) -> dict[str, Any]:
    """A TAF 2 billing profile (two tariff stages, one day profile) or a TAF 7 non-billing one."""
    meter = pki.identities.meter
    if billing:
        values = {
            "profile_id": profile_id, "billing_relevant": True, "taf": 2, "tariff_id": "HT-NT-2026",
            "meters": [meter], "registers": [ObisCode(1, 0, 1, 8, 0).to_bytes()], "recipient_emt": pki.identities.emt,
            "billing_period": "P1M", "capture_period_s": 900,
            "tariff_stages": [
                {"stage": 1, "register": ObisCode(1, 0, 1, 8, 1).to_bytes(), "label": "HT"},
                {"stage": 2, "register": ObisCode(1, 0, 1, 8, 2).to_bytes(), "label": "NT"},
            ],
            "day_profiles": [{"day_id": 1, "switch_points": [{"start": 0, "stage": 2}, {"start": 360, "stage": 1},
                                                             {"start": 1320, "stage": 2}]}],
            "special_days": [{"date": "2026-12-25", "day_id": 1}],
        }
    else:
        values = {
            "profile_id": profile_id, "billing_relevant": False, "taf": 7, "meters": [meter],
            "registers": [ObisCode(1, 0, 1, 8, 0).to_bytes(), ObisCode(1, 0, 2, 8, 0).to_bytes()],
            "recipient_emt": pki.identities.emt, "capture_period_s": 900,
        }
    values.update(changes)
    return values


def cls_proxy_profile_values(pki: PkiDir, profile_id: str, /, **changes: Any) -> dict[str, Any]:
    values = {"profile_id": profile_id, "cls_device_id": pki.identities.cls, "emt_id": pki.identities.emt,
              "hks": 4, "max_bandwidth_kbps": 64, "max_session_s": 3600, "cls_address": "cls.example:4712"}
    values.update(changes)
    return values


# -- CMS (5.10 / 5.11) -----------------------------------------------------------------------------


def seal_for_gateway(pki: PkiDir, content: bytes, *, signer: str = "gwa-sig", recipient: str = "gateway-enc") -> bytes:
    """Sign as the GWA, encrypt for the gateway: what the gateway opens (5.10)."""
    return cms.seal(content, pki.cert(signer), pki.key(signer), pki.cert(recipient))


def open_from_gateway(pki: PkiDir, container: bytes) -> bytes:
    """Decrypt with the GWA's key, verify the gateway's signature: what the gateway sealed (5.11)."""
    return cms.open_sealed(container, pki.cert("gwa-enc"), pki.key("gwa-enc"), [pki.cert("gateway-sig")]).content
