"""The wake-up packet read by an independent parser and verifier: the openssl binary."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization

from smgw_emu.core.wakeup import DEFAULT_CODEC, WakeUpPacket, build_wakeup

pytestmark = [
    pytest.mark.openssl,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary"),
]

CREATED_AT = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def packet(pki) -> bytes:
    return build_wakeup(
        recipient_id=pki.identities.gateway, signer_key=pki.key("gwa-sig"), signer_cert=pki.cert("gwa-sig"),
        created_at=CREATED_AT, nonce=b"\x11" * 16,
    )


def openssl(*args: str, data: bytes | None = None) -> str:
    result = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=10)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_asn1parse_reads_the_packet(packet, pki):
    out = openssl("asn1parse", "-inform", "DER", data=packet)
    assert f"UTF8STRING        :{pki.identities.gateway}" in out
    assert "GENERALIZEDTIME   :20261125120000Z" in out
    assert "ecdsa-with-SHA256" in out
    assert "BIT STRING" in out
    assert "Error" not in out


def test_openssl_verifies_the_signature_over_der_content(packet, pki, tmp_path):
    parsed = WakeUpPacket.load(packet)
    (tmp_path / "content.der").write_bytes(parsed["content"].dump())
    (tmp_path / "sig.der").write_bytes(DEFAULT_CODEC.decode(packet).signature)
    (tmp_path / "gwa.pub").write_bytes(
        pki.cert("gwa-sig").public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    out = openssl("dgst", "-sha256", "-verify", str(tmp_path / "gwa.pub"),
                  "-signature", str(tmp_path / "sig.der"), str(tmp_path / "content.der"))
    assert "Verified OK" in out
