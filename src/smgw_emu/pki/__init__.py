"""A test SM-PKI: root CA, sub-CAs and the end-entity certificates the emulator and its
reference peers need.

Shape, after TR-03109-4 as far as it is public: one root, sub-CAs below it, and for each WAN
participant three certificates with their own keys: TLS (digitalSignature), signature
(digitalSignature) and encryption (keyAgreement). Meter and CLS devices get a TLS certificate.

This is a tool, not part of the gateway: it writes files. The gateway only reads them.

File layout of `smgw-emu pki init DIR` (documented in docs/pki.md):
  root-ca.crt / .key              the trust anchor
  sub-ca-gw.crt / .key            issues gateway, meter and CLS device certificates
  sub-ca-emt.crt / .key           issues GWA and EMT certificates
  <entity>-<usage>.crt / .key     end-entity certificate and its private key (PKCS#8 PEM, 0600)
  <entity>-<usage>.chain.pem      end-entity certificate followed by its sub-CA (what TLS presents)
  ca-bundle.pem                   root and both sub-CAs
  pki.json                        manifest: curve, identities, file names
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CURVES: dict[str, tuple[type[ec.EllipticCurve], type[hashes.HashAlgorithm]]] = {
    "brainpoolP256r1": (ec.BrainpoolP256R1, hashes.SHA256),
    "brainpoolP384r1": (ec.BrainpoolP384R1, hashes.SHA384),
    "brainpoolP512r1": (ec.BrainpoolP512R1, hashes.SHA512),
    "prime256v1": (ec.SECP256R1, hashes.SHA256),
    "secp384r1": (ec.SECP384R1, hashes.SHA384),
}
CURVE_ALIASES = {"P-256": "prime256v1", "secp256r1": "prime256v1", "P-384": "secp384r1"}
DEFAULT_CURVE = "brainpoolP256r1"

DEFAULT_GATEWAY_ID = "EXXX0012345678"
DEFAULT_GWA_ID = "GWA-TEST-0001"
DEFAULT_EMT_ID = "EMT-TEST-0001"
DEFAULT_METER_ID = "1XXX0098765432"
DEFAULT_CLS_ID = "CLS-TEST-0001"

#: usage name -> (digitalSignature, keyAgreement)
USAGES = {"tls": (True, False), "sig": (True, False), "enc": (False, True)}


class PkiError(Exception):
    """A PKI directory is missing, incomplete or unreadable."""


def canonical_curve(name: str) -> str:
    name = CURVE_ALIASES.get(name, name)
    if name not in CURVES:
        raise PkiError(f"unknown curve {name!r}; choose one of {', '.join(CURVES)}")
    return name


def generate_key(curve: str = DEFAULT_CURVE) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVES[canonical_curve(curve)][0]())


def _hash_for(key: ec.EllipticCurvePrivateKey) -> hashes.HashAlgorithm:
    for curve_cls, hash_cls in CURVES.values():
        if isinstance(key.curve, curve_cls):
            return hash_cls()
    return hashes.SHA256()


def _name(common_name: str, org_unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smgw-emu test SM-PKI"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, org_unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue_certificate(
    *,
    subject_cn: str,
    org_unit: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool = False,
    path_length: int | None = None,
    digital_signature: bool = True,
    key_agreement: bool = False,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    san_dns: tuple[str, ...] = (),
    san_ip: tuple[str, ...] = (),
) -> x509.Certificate:
    """Issue one certificate. `issuer_cert=None` makes a self-signed root.

    Public so that tests can build deliberately bad certificates (expired, wrong key usage,
    other root) with the same code that builds the good ones.
    """
    import ipaddress

    now = _dt.datetime.now(_dt.timezone.utc)
    not_before = not_before or now - _dt.timedelta(days=1)
    not_after = not_after or now + _dt.timedelta(days=3650 if ca else 730)
    subject = _name(subject_cn, org_unit)
    issuer = issuer_cert.subject if issuer_cert is not None else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature and not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=key_agreement and not ca,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_cert is not None:
        issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
        )
    if san_dns or san_ip:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in san_dns]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in san_ip]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, _hash_for(issuer_key))


def _write_pem_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Identities:
    gateway: str = DEFAULT_GATEWAY_ID
    gwa: str = DEFAULT_GWA_ID
    emt: str = DEFAULT_EMT_ID
    meter: str = DEFAULT_METER_ID
    cls: str = DEFAULT_CLS_ID


@dataclass
class PkiDir:
    """Read access to a PKI directory written by `init_pki`."""

    root: Path
    manifest: dict = field(default_factory=dict)

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "PkiDir":
        root = Path(directory)
        manifest_path = root / "pki.json"
        if not root.is_dir():
            raise PkiError(f"PKI directory {root} does not exist (create it with: smgw-emu pki init {root})")
        if not manifest_path.is_file():
            raise PkiError(f"{manifest_path} is missing: {root} is not a PKI made by 'smgw-emu pki init'")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise PkiError(f"{manifest_path} is unreadable: {exc}") from None
        pki = cls(root, manifest)
        for name in manifest.get("files", []):
            if not (root / name).is_file():
                raise PkiError(f"PKI file {root / name} is missing")
        return pki

    def cert_path(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key_path(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def chain_path(self, name: str) -> Path:
        return self.root / f"{name}.chain.pem"

    @property
    def ca_bundle(self) -> Path:
        return self.root / "ca-bundle.pem"

    @property
    def root_ca(self) -> Path:
        return self.root / "root-ca.crt"

    def cert(self, name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_path(name).read_bytes())

    def key(self, name: str) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_path(name).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    @property
    def identities(self) -> Identities:
        return Identities(**self.manifest.get("identities", {}))

    @property
    def curve(self) -> str:
        return self.manifest.get("curve", DEFAULT_CURVE)


def init_pki(
    directory: str | os.PathLike,
    *,
    curve: str = DEFAULT_CURVE,
    identities: Identities | None = None,
    force: bool = False,
) -> PkiDir:
    """Write a complete test SM-PKI into `directory` and return it."""
    curve = canonical_curve(curve)
    ids = identities or Identities()
    root_dir = Path(directory)
    if (root_dir / "pki.json").exists() and not force:
        raise PkiError(f"{root_dir} already holds a PKI (use --force to replace it)")
    try:
        root_dir.mkdir(parents=True, exist_ok=True)
        probe = root_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PkiError(f"cannot write PKI directory {root_dir}: {exc.strerror or exc}") from None

    files: list[str] = []

    def save(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]):
        (root_dir / f"{name}.crt").write_bytes(_pem(cert))
        _write_pem_key(root_dir / f"{name}.key", key)
        files.extend([f"{name}.crt", f"{name}.key"])
        if chain:
            (root_dir / f"{name}.chain.pem").write_bytes(_pem(cert) + b"".join(_pem(c) for c in chain))
            files.append(f"{name}.chain.pem")

    root_key = generate_key(curve)
    root_cert = issue_certificate(
        subject_cn="SM-Test-Root-CA", org_unit="root", public_key=root_key.public_key(),
        issuer_cert=None, issuer_key=root_key, ca=True, path_length=1,
        not_after=_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=7300),
    )
    save("root-ca", root_cert, root_key, [])
    sub_cas: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}
    for sub in ("gw", "emt"):
        key = generate_key(curve)
        cert = issue_certificate(
            subject_cn=f"SM-Test-Sub-CA-{sub.upper()}", org_unit="sub-ca", public_key=key.public_key(),
            issuer_cert=root_cert, issuer_key=root_key, ca=True, path_length=0,
        )
        save(f"sub-ca-{sub}", cert, key, [])
        sub_cas[sub] = (cert, key)

    # entity name, subject CN, issuing sub-CA, usages
    entities = [
        ("gateway", ids.gateway, "gw", ("tls", "sig", "enc")),
        ("gwa", ids.gwa, "emt", ("tls", "sig", "enc")),
        ("emt", ids.emt, "emt", ("tls", "sig", "enc")),
        ("meter", ids.meter, "gw", ("tls",)),
        ("cls", ids.cls, "gw", ("tls",)),
    ]
    for entity, cn, sub, usages in entities:
        ca_cert, ca_key = sub_cas[sub]
        for usage in usages:
            digital_signature, key_agreement = USAGES[usage]
            key = generate_key(curve)
            cert = issue_certificate(
                subject_cn=cn, org_unit=f"{entity}-{usage}", public_key=key.public_key(),
                issuer_cert=ca_cert, issuer_key=ca_key,
                digital_signature=digital_signature, key_agreement=key_agreement,
                san_dns=("localhost",) if usage == "tls" else (),
                san_ip=("127.0.0.1", "::1") if usage == "tls" else (),
            )
            save(f"{entity}-{usage}", cert, key, [ca_cert])

    (root_dir / "ca-bundle.pem").write_bytes(
        _pem(root_cert) + _pem(sub_cas["gw"][0]) + _pem(sub_cas["emt"][0])
    )
    files.append("ca-bundle.pem")
    manifest = {
        "format": 1,
        "curve": curve,
        "identities": ids.__dict__,
        "files": files,
    }
    (root_dir / "pki.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return PkiDir(root_dir, manifest)


def derive_gateway_pki(pki: PkiDir, directory: str | os.PathLike, gateway_id: str) -> PkiDir:
    """A PKI directory for one more gateway of the same SM-PKI (fleet mode, benchmarks).

    New gateway TLS/signature/encryption keys and certificates with `gateway_id` as subject,
    issued by the same sub-CA; the CA certificates and the other participants' *certificates*
    are copied. No CA key and no other participant's private key is copied.
    """
    import shutil

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for name in pki.manifest["files"]:
        if name.endswith(".key") or name.startswith("gateway-"):
            continue
        shutil.copyfile(pki.root / name, target / name)
        files.append(name)
    ca_cert, ca_key = pki.cert("sub-ca-gw"), pki.key("sub-ca-gw")
    for usage in ("tls", "sig", "enc"):
        digital_signature, key_agreement = USAGES[usage]
        key = generate_key(pki.curve)
        cert = issue_certificate(
            subject_cn=gateway_id, org_unit=f"gateway-{usage}", public_key=key.public_key(),
            issuer_cert=ca_cert, issuer_key=ca_key, digital_signature=digital_signature, key_agreement=key_agreement,
            san_dns=("localhost",) if usage == "tls" else (), san_ip=("127.0.0.1", "::1") if usage == "tls" else (),
        )
        name = f"gateway-{usage}"
        (target / f"{name}.crt").write_bytes(_pem(cert))
        _write_pem_key(target / f"{name}.key", key)
        (target / f"{name}.chain.pem").write_bytes(_pem(cert) + _pem(ca_cert))
        files += [f"{name}.crt", f"{name}.key", f"{name}.chain.pem"]
    identities = dict(pki.manifest.get("identities", {}), gateway=gateway_id)
    manifest = {"format": 1, "curve": pki.curve, "identities": identities, "files": files, "derived_from": str(pki.root)}
    (target / "pki.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return PkiDir(target, manifest)
