"""What a GWA sends to change the GWA (Lastenheft 6.6) and the trust anchors (6.7.3, 6.7.4), and
the PKI material of a *new* GWA for tests and labs.

    new = new_gwa_identity(pki, tmp / "new-gwa", "GWA-NEW-0001")            # same SM-PKI root
    other = new_gwa_identity(pki, tmp / "other", "GWA-NEW-0002", new_root=True)  # a root of its own
    await channel.request("POST", GWAPRE + "/reserve", step="post-reserve-gwapre")
    await channel.request("POST", GWAPRE + "/profile", gwa_profile_document(new, host, port, service_url))
    await channel.request("POST", GWAPRE + "/certificates", certificates_document(new))

`new_gwa_identity` writes a directory that `ReferenceGwa` can serve from: ``gwa-{tls,sig,enc}``
certificates, keys and chains of the new GWA, and ``root-ca.crt`` holding every root the new GWA
trusts (its own and the gateway's). With ``new_root`` it also writes the new hierarchy's root,
its sub-CA and a link certificate (the new root's subject and key, issued by the gateway's root)
with which the gateway accepts the new root (6.7.3).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from smgw_emu.pki import USAGES, PkiDir, generate_key, issue_certificate
from smgw_emu.reference.cosem_client import profile_document

KEYBANK_NS = "urn:smgw-emu:keybank:1"
GWAPRE = "/smgw/keybanks/GWAPRE"
ROOTS = "/smgw/trust/roots"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _write_key(path: Path, key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


@dataclass
class NewGwa:
    """A new GWA's PKI directory (for ReferenceGwa) and what the gateway is sent about it."""

    pki: PkiDir
    gwa_id: str
    ca_certificates: tuple[x509.Certificate, ...] = ()   # its sub-CA when it has a root of its own
    root: x509.Certificate | None = None                  # that root
    link_certificate: x509.Certificate | None = None      # that root, vouched for by the gateway's root

    def certificate(self, usage: str) -> x509.Certificate:
        return self.pki.cert(f"gwa-{usage}")


def new_gwa_identity(pki: PkiDir, directory: str | os.PathLike, gwa_id: str, *, new_root: bool = False,
                     root_name: str = "SM-Test-Root-CA-2") -> NewGwa:
    """Certificates for another GWA: issued by the PKI's GWA sub-CA, or (``new_root``) by a new
    root and sub-CA of their own."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    old_root, old_root_key = pki.cert("root-ca"), pki.key("root-ca")
    extra: tuple[x509.Certificate, ...] = ()
    root = link = None
    if new_root:
        root_key = generate_key(pki.curve)
        root = issue_certificate(subject_cn=root_name, org_unit="root", public_key=root_key.public_key(),
                                 issuer_cert=None, issuer_key=root_key, ca=True, path_length=1,
                                 not_after=_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=7300))
        link = issue_certificate(subject_cn=root_name, org_unit="root", public_key=root_key.public_key(),
                                 issuer_cert=old_root, issuer_key=old_root_key, ca=True, path_length=1)
        sub_key = generate_key(pki.curve)
        sub = issue_certificate(subject_cn=f"{root_name}-Sub-CA-EMT", org_unit="sub-ca", public_key=sub_key.public_key(),
                                issuer_cert=root, issuer_key=root_key, ca=True, path_length=0)
        ca_cert, ca_key = sub, sub_key
        extra = (sub,)
        (target / "root-ca.crt").write_bytes(_pem(root) + _pem(old_root))
        (target / "new-root.crt").write_bytes(_pem(root))
        (target / "link.crt").write_bytes(_pem(link))
    else:
        ca_cert, ca_key = pki.cert("sub-ca-emt"), pki.key("sub-ca-emt")
        (target / "root-ca.crt").write_bytes(_pem(old_root))
    for usage, (digital_signature, key_agreement) in USAGES.items():
        key = generate_key(pki.curve)
        cert = issue_certificate(
            subject_cn=gwa_id, org_unit=f"gwa-{usage}", public_key=key.public_key(), issuer_cert=ca_cert,
            issuer_key=ca_key, digital_signature=digital_signature, key_agreement=key_agreement,
            san_dns=("localhost",) if usage == "tls" else (), san_ip=("127.0.0.1", "::1") if usage == "tls" else (),
        )
        (target / f"gwa-{usage}.crt").write_bytes(_pem(cert))
        _write_key(target / f"gwa-{usage}.key", key)
        (target / f"gwa-{usage}.chain.pem").write_bytes(_pem(cert) + _pem(ca_cert))
    manifest = {"format": 1, "curve": pki.curve, "identities": dict(pki.manifest.get("identities", {}), gwa=gwa_id),
                "files": [], "derived_from": str(pki.root)}
    (target / "pki.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return NewGwa(PkiDir(target, manifest), gwa_id, extra, root, link)


# -- documents --------------------------------------------------------------------------------


def gwa_profile_document(gwa_id: str, host: str, port: int, service_url: str, /, **changes) -> bytes:
    """A class 28100 document with a GWA's communication profile for a key bank (6.6.5, 6.6.9).
    `service_url` is the base of its ADMIN-SERVICE and INFO-REPORT endpoints (ReferenceGwa's);
    `changes` set attributes by name (None leaves one out)."""
    values = {"partner_id": gwa_id, "partner_role": "gwa", "host": host, "port": port,
              "admin_service_url": f"{service_url}/admin-service/", "info_report_url": f"{service_url}/info-report"}
    values.update(changes)
    return profile_document("commprofile", {k: v for k, v in values.items() if v is not None})


def _document(tag: str, children: list[tuple[str, dict[str, str], str]], **attributes: str) -> bytes:
    root = etree.Element(f"{{{KEYBANK_NS}}}{tag}", attributes, nsmap={None: KEYBANK_NS})
    for child, attrs, text in children:
        etree.SubElement(root, f"{{{KEYBANK_NS}}}{child}", attrs).text = text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def certificates_document(gwa: NewGwa, *, replace: dict[str, bytes] | None = None,
                          cas: tuple[x509.Certificate, ...] | None = None) -> bytes:
    """The new GWA's TLS, signature and encryption certificates (hex DER) and its CA certificates
    (6.6.6). `replace` swaps a usage's DER (bad input for tests)."""
    replace = replace or {}
    children = [("certificate", {"usage": u}, replace.get(u, der(gwa.certificate(u))).hex()) for u in ("tls", "sig", "enc")]
    children += [("ca-certificate", {}, der(c).hex()) for c in (gwa.ca_certificates if cas is None else cas)]
    return _document("certificates", children)


def confirm_document(digest: str) -> bytes:
    """6.6.10: the new GWA confirms GWAPRE as it read it."""
    return _document("confirm", [], digest=digest)


def root_document(root: x509.Certificate, link: x509.Certificate) -> bytes:
    """6.7.3: a new root certificate and its link certificate."""
    return _document("root-certificate", [("certificate", {}, der(root).hex()),
                                          ("link-certificate", {}, der(link).hex())])


def bank_digest(body: bytes) -> str:
    """The digest of a <keybank> answer (what the new GWA confirms)."""
    return etree.fromstring(body).get("digest", "")


def bank_phase(body: bytes) -> str:
    return etree.fromstring(body).get("phase", "")


# -- the gateway's own keys (6.7.1 personalisation, 6.7.2 key change) ------------------------------

KEYS = "/smgw/keys"


def generate_document(purpose: str) -> bytes:
    """POST /smgw/keys/generate: purpose personalisation (6.7.1) or key-change (6.7.2)."""
    return _document("generate", [], purpose=purpose)


def issue_gateway_certificates(pki: PkiDir, requests_body: bytes, *, issuer: str = "sub-ca-gw",
                               subject_cn: str | None = None) -> dict[str, x509.Certificate]:
    """What the SM-PKI does with the gateway's <certificate-requests>: check each PKCS#10
    signature (proof of possession) and issue a certificate for its key by the gateway sub-CA."""
    issuer_cert, issuer_key = pki.cert(issuer), pki.key(issuer)
    issued: dict[str, x509.Certificate] = {}
    for element in etree.fromstring(requests_body):
        usage = element.get("usage")
        csr = x509.load_der_x509_csr(bytes.fromhex(element.text))
        if not csr.is_signature_valid:
            raise ValueError(f"the {usage} request is not signed with its key")
        cn = subject_cn or csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        digital_signature, key_agreement = USAGES[usage]
        issued[usage] = issue_certificate(
            subject_cn=cn, org_unit=f"gateway-{usage}", public_key=csr.public_key(), issuer_cert=issuer_cert,
            issuer_key=issuer_key, digital_signature=digital_signature, key_agreement=key_agreement,
            san_dns=("localhost",) if usage == "tls" else (), san_ip=("127.0.0.1", "::1") if usage == "tls" else (),
        )
    return issued


def gateway_certificates_document(certificates: dict[str, x509.Certificate],
                                  cas: tuple[x509.Certificate, ...] = ()) -> bytes:
    """PUT /smgw/keys/certificates: the certificates issued for the gateway's new keys."""
    children = [("certificate", {"usage": u}, der(certificates[u]).hex()) for u in ("tls", "sig", "enc")]
    children += [("ca-certificate", {}, der(c).hex()) for c in cas]
    return _document("certificates", children)


# -- the gateway's HAN and LMN identities (6.7.5, 6.7.6; app/localidentity.py) ---------------------

KEYS_HAN = KEYS + "/han"
KEYS_LMN = KEYS + "/lmn"


def identity_certificate_document(certificate: x509.Certificate, cas: tuple[x509.Certificate, ...] = ()) -> bytes:
    """PUT /smgw/keys/han|lmn/certificates: the certificate issued for the gateway's new HAN or LMN key."""
    children = [("certificate", {"usage": "tls"}, der(certificate).hex())]
    children += [("ca-certificate", {}, der(c).hex()) for c in cas]
    return _document("certificates", children)
