"""Bad GWA peers on the MANAGEMENT channel (TR-03116-3 via docs/domain.md §2): a GWA certificate from
another root, an expired one, one with the wrong key usage, a valid SM-PKI certificate that is not
the GWA's; a peer offering only RSA or TLS 1.0/1.1; a peer that tries to renegotiate.

Each runs against a real gateway on the GWA address of its communication profile, triggered by a
real wake-up. Each must be refused, logged with a reason, change no persistent state, and after it
the same gateway must open a working channel to the valid reference GWA on the same port.

Three kinds of bad peer:
* the reference GWA on a copy of the SM-PKI whose GWA TLS certificate was replaced;
* `openssl s_server` (RSA certificate, `-tls1`/`-tls1_1`, renegotiation from its stdin);
* hostile peers that a correct TLS server would never be: a raw ServerHello choosing what the
  gateway did not offer, and a proxy that swaps the GWA's certificate for one with the wrong key
  usage and signs with its key (OpenSSL will not serve such a certificate itself).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import struct
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smgw_emu.app.gateway import Gateway
from smgw_emu.pki import PkiDir, generate_key, init_pki, issue_certificate
from smgw_emu.reference.gwa import ChannelClosed, ReferenceGwa

from .conftest import HOST, persistent_state, rsa_gwa_identity, s_server_args, write_identity

no_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
WAIT = 10.0  # upper bound for one step; every step here takes milliseconds
CHANNEL_EVENT_PREFIXES = ("wakeup-", "management-channel-", "auth-")


# -- the scene: a running gateway whose GWA is away ----------------------------------------------
@dataclass
class Scene:
    gateway: Gateway
    pki: PkiDir
    port: int          # the GWA's MANAGEMENT port in the gateway's profile
    service_port: int  # ADMIN-SERVICE / INFO-REPORT
    waker: ReferenceGwa
    state_before: dict
    mark: int

    def channel_events(self) -> list[str]:
        """Wake-up, MANAGEMENT-channel and AUTH entries since the scene was set."""
        return [e.event for e in self.entries() if e.event.startswith(CHANNEL_EVENT_PREFIXES)]

    def entries(self, event: str | None = None) -> list:
        assert self.gateway.store is not None
        return [e for e in self.gateway.store.logs("system", since_record=self.mark, limit=100_000)
                if event is None or e.event == event]

    def wake(self) -> None:
        """A valid wake-up, signed by the GWA of the profile: the gateway connects to `port`."""
        self.waker.send_wakeup(self.gateway.wakeup_address, self.gateway.id)

    async def wait_entry(self, event: str):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not self.entries(event):
            if loop.time() > deadline:
                raise AssertionError(f"no {event!r} in the system log; got {[e.event for e in self.entries()]}")
            await asyncio.sleep(0.01)
        return self.entries(event)[-1]

    async def assert_refused(self, reason: str, *texts: str):
        """The wake-up was accepted, the channel refused and logged, and nothing else happened."""
        failed = await self.wait_entry("management-channel-failed")
        assert failed.details["reason"] == reason, failed
        for text in texts:
            assert text in failed.message, failed.message
        assert failed.level >= 3 and failed.outcome == 1
        assert self.channel_events() == ["wakeup-accepted", "management-channel-failed"], self.channel_events()
        await self.assert_unchanged_and_serving()
        return failed

    async def assert_unchanged_and_serving(self) -> None:
        assert persistent_state(self.gateway) == self.state_before
        assert self.gateway.management is None or not self.gateway.management.is_open
        # The valid GWA comes back on the same port: the next wake-up gives a working channel.
        async with ReferenceGwa(self.pki, management_port=self.port, service_port=self.service_port) as gwa:
            channel = await gwa.wake(self.gateway.wakeup_address, self.gateway.id, timeout=WAIT)
            response = await channel.request("GET", "/smgw/info", step="gateway-info")
            assert response.status == 200 and f'id="{self.gateway.id}"' in response.text
            await channel.close()
        assert persistent_state(self.gateway) == self.state_before


@pytest.fixture
async def scene(pki, wan_gateway, free_port) -> Scene:
    port, service_port = free_port(), free_port()
    async with ReferenceGwa(pki, management_port=port, service_port=service_port) as gwa:
        gateway = await wan_gateway(pki, management_port=port, service_port=service_port)
        await gwa.wait_event("gateway-started", timeout=WAIT)
        await asyncio.wait_for(gateway.info_report.idle.wait(), WAIT)
    # The GWA is gone; from here on the port belongs to the bad peer.
    assert gateway.store is not None
    mark = gateway.store.logs("system", limit=100_000)[-1].record
    return Scene(gateway, pki, port, service_port, gwa, persistent_state(gateway), mark)


# -- bad GWA certificates, presented by the reference GWA ---------------------------------------
def _issue_without_key_usage(pki: PkiDir, key) -> x509.Certificate:
    """Like the GWA's TLS certificate, but with no key usage extension at all (OpenSSL treats
    that as 'any usage', so only the gateway's own check can refuse it)."""
    ca, ca_key = pki.cert("sub-ca-emt"), pki.key("sub-ca-emt")
    now = dt.datetime.now(dt.timezone.utc)
    template = pki.cert("gwa-tls")
    return (
        x509.CertificateBuilder()
        .subject_name(template.subject).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def bad_gwa_pkis(pki, tmp_path_factory) -> dict[str, PkiDir]:
    """Copies of the SM-PKI whose gwa-tls certificate and key are replaced by a bad one."""
    base = tmp_path_factory.mktemp("bad-gwa")
    ca, ca_key = pki.cert("sub-ca-emt"), pki.key("sub-ca-emt")
    now = dt.datetime.now(dt.timezone.utc)
    gwa_id = pki.identities.gwa

    def issued(**kwargs):
        key = generate_key(pki.curve)
        cert = issue_certificate(subject_cn=gwa_id, org_unit="gwa-tls", public_key=key.public_key(),
                                 issuer_cert=ca, issuer_key=ca_key, san_ip=(HOST,), **kwargs)
        return cert, key, [ca]

    other = init_pki(base / "another-sm-pki")
    no_usage_key = generate_key(pki.curve)
    identities = {
        "other-root": (other.cert("gwa-tls"), other.key("gwa-tls"), [other.cert("sub-ca-emt")]),
        "expired": issued(not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)),
        "wrong-key-usage": issued(digital_signature=False, key_agreement=True),
        "no-key-usage": (_issue_without_key_usage(pki, no_usage_key), no_usage_key, [ca]),
    }
    result = {}
    for name, (cert, key, chain) in identities.items():
        copy = base / name
        shutil.copytree(pki.root, copy)
        write_identity(copy, "gwa-tls", cert, key, chain)
        result[name] = PkiDir.open(copy)
    return result


@pytest.mark.parametrize(
    "case, reason, texts",
    [
        ("other-root", "tls-handshake-failed", ("CERTIFICATE_VERIFY_FAILED", "unable to get local issuer certificate")),
        ("expired", "tls-handshake-failed", ("CERTIFICATE_VERIFY_FAILED", "certificate has expired")),
        # OpenSSL, as a server, will not use a certificate without digitalSignature for an
        # ECDHE-ECDSA suite ("no shared cipher") and closes: the gateway never sees it. The
        # hostile test below makes the gateway see it.
        ("wrong-key-usage", "tls-handshake-failed", ("the GWA closed the connection during the handshake",)),
        # OpenSSL takes a missing key usage extension as "any usage"; the gateway's own check refuses it.
        ("no-key-usage", "peer-rejected", ("has no key usage extension",)),
    ],
)
async def test_bad_gwa_certificate_is_refused(scene, bad_gwa_pkis, case, reason, texts):
    async with ReferenceGwa(bad_gwa_pkis[case], management_port=scene.port) as fake:
        scene.wake()
        await scene.wait_entry("management-channel-failed")
        for channel in fake.channels:  # TLS completed on the peer's side: the gateway sends nothing
            with pytest.raises(ChannelClosed):
                await channel.request("GET", "/", timeout=WAIT)
        assert bool(fake.channels) == (reason == "peer-rejected")
    await scene.assert_refused(reason, *texts)


async def test_valid_sm_pki_certificate_that_is_not_the_gwas_is_refused(scene):
    """The EMT's TLS certificate chains to the SM-PKI root, but the profile names the GWA's."""
    async with ReferenceGwa(scene.pki, management_port=scene.port, entity="emt") as fake:
        scene.wake()
        await scene.wait_entry("management-channel-failed")
        [channel] = fake.channels
        with pytest.raises(ChannelClosed):
            await channel.request("GET", "/smgw/info", timeout=WAIT)
    await scene.assert_refused("peer-rejected", "is not the one in the communication profile",
                               scene.pki.identities.emt)


# -- hostile peers: what no correct TLS server sends ---------------------------------------------
def _record(content_type: int, payload: bytes, version: bytes = b"\x03\x03") -> bytes:
    return bytes([content_type]) + version + len(payload).to_bytes(2, "big") + payload


def _handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def server_hello(version: int, suite: int, compression: int = 0) -> bytes:
    body = struct.pack(">H", version) + os.urandom(32) + b"\x00" + struct.pack(">HB", suite, compression)
    return _record(22, _handshake(2, body))


class RawPeer:
    """Answers the gateway's ClientHello with fixed bytes and records what comes back."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.client_hello = b""
        self.after = bytearray()
        self.done = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> "RawPeer":
        self.server = await asyncio.start_server(self._handle, HOST, port)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.client_hello = await reader.read(65536)
            writer.write(self.answer)
            await writer.drain()
            while chunk := await reader.read(65536):
                self.after += chunk
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.done.set()

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.parametrize(
    "answer, error",
    [
        pytest.param(server_hello(0x0301, 0xC02B), "UNSUPPORTED_PROTOCOL", id="tls1.0"),
        pytest.param(server_hello(0x0302, 0xC02B), "UNSUPPORTED_PROTOCOL", id="tls1.1"),
        pytest.param(server_hello(0x0300, 0xC02B), "UNSUPPORTED_PROTOCOL", id="ssl3"),
        # TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 and TLS_RSA_WITH_AES_128_GCM_SHA256: not offered
        pytest.param(server_hello(0x0303, 0xC02F), "WRONG_CIPHER_RETURNED", id="ecdhe-rsa"),
        pytest.param(server_hello(0x0303, 0x009C), "WRONG_CIPHER_RETURNED", id="static-rsa"),
        pytest.param(server_hello(0x0303, 0xC02B, compression=1), "COMPRESSION_DISABLED", id="deflate"),
    ],
)
async def test_server_hello_outside_the_profile_is_refused(scene, answer, error):
    peer = await RawPeer(answer).start(scene.port)
    try:
        scene.wake()
        await asyncio.wait_for(peer.done.wait(), WAIT)
    finally:
        await peer.stop()
    assert peer.client_hello[:1] == b"\x16" and peer.client_hello[5:6] == b"\x01"  # a ClientHello came
    # The gateway's answer is to close: nothing of the handshake follows. (OpenSSL prepared a fatal
    # alert; asyncio's SSL transport on Python 3.11 drops it on handshake errors, CPython gh-98078.)
    assert not peer.after or peer.after[0] == 21, bytes(peer.after)  # nothing, or an alert record
    await scene.assert_refused("tls-handshake-failed", error)


class CertificateSwappingProxy:
    """A man in the middle before the valid GWA: it replaces the GWA's Certificate message with
    another chain and re-signs the ServerKeyExchange with that certificate's key, so that the
    gateway sees a server that really holds the key of the certificate it presents."""

    def __init__(self, upstream_port: int, chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey) -> None:
        self.upstream_port = upstream_port
        ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
        certificate_list = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
        self.certificate = _handshake(11, len(certificate_list).to_bytes(3, "big") + certificate_list)
        self.key = key
        self.swapped = self.resigned = 0
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self, port: int) -> "CertificateSwappingProxy":
        self.server = await asyncio.start_server(self._handle, HOST, port)
        return self

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()
        for task in self._tasks:
            task.cancel()

    async def _handle(self, client_reader, client_writer) -> None:
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.upstream_port)
        randoms: dict[str, bytes] = {}

        async def client_to_server() -> None:
            while chunk := await client_reader.read(65536):
                if "client" not in randoms:  # the ClientHello: record(5) type(1) len(3) version(2)
                    randoms["client"] = chunk[11:43]
                upstream_writer.write(chunk)
            upstream_writer.close()

        async def server_to_client() -> None:
            buffer, handshake, plaintext = b"", b"", True
            while chunk := await upstream_reader.read(65536):
                if not plaintext:
                    client_writer.write(chunk)
                    continue
                buffer += chunk
                out = b""
                while len(buffer) >= 5 and len(buffer) >= 5 + int.from_bytes(buffer[3:5], "big"):
                    length = int.from_bytes(buffer[3:5], "big")
                    content_type, fragment, buffer = buffer[0], buffer[5:5 + length], buffer[5 + length:]
                    if content_type != 22:
                        out += _record(content_type, fragment)
                        if content_type == 20:  # ChangeCipherSpec: the rest is encrypted
                            plaintext, out, buffer = False, out + buffer, b""
                        continue
                    handshake += fragment
                    while len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
                        size = 4 + int.from_bytes(handshake[1:4], "big")
                        message, handshake = handshake[:size], handshake[size:]
                        out += _record(22, self._rewrite(message, randoms))
                client_writer.write(out)
            client_writer.close()

        try:
            await asyncio.gather(client_to_server(), server_to_client())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            upstream_writer.close()
            client_writer.close()

    def _rewrite(self, message: bytes, randoms: dict[str, bytes]) -> bytes:
        kind, body = message[0], message[4:]
        if kind == 2:  # ServerHello: version(2) random(32)
            randoms["server"] = body[2:34]
        elif kind == 11:
            self.swapped += 1
            return self.certificate
        elif kind == 12:  # ServerKeyExchange, ECDHE: curve_type(1) group(2) point_len(1) point
            params = body[:4 + body[3]]
            signature = self.key.sign(randoms["client"] + randoms["server"] + params, ec.ECDSA(hashes.SHA256()))
            self.resigned += 1
            return _handshake(12, params + b"\x04\x03" + len(signature).to_bytes(2, "big") + signature)
        return message


async def test_wrong_key_usage_certificate_with_its_key_is_refused(scene, bad_gwa_pkis, free_port):
    """The certificate (keyAgreement, no digitalSignature) chains to the SM-PKI root and its key
    signs the key exchange: the gateway's TLS client still refuses it for ECDHE-ECDSA."""
    bad = bad_gwa_pkis["wrong-key-usage"]
    async with ReferenceGwa(scene.pki, management_port=free_port()) as upstream:
        proxy = await CertificateSwappingProxy(
            upstream.management_port, [bad.cert("gwa-tls"), scene.pki.cert("sub-ca-emt")], bad.key("gwa-tls"),
        ).start(scene.port)
        try:
            scene.wake()
            await scene.wait_entry("management-channel-failed")
        finally:
            await proxy.stop()
        assert proxy.swapped == 1 and proxy.resigned == 1
        assert not upstream.channels  # the handshake never completed
    await scene.assert_refused("tls-handshake-failed", "BAD_ECC_CERT")


# -- openssl s_server as the bad peer ------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_identity(pki, tmp_path_factory):
    return rsa_gwa_identity(pki, tmp_path_factory.mktemp("rsa"))


@pytest.mark.openssl
@no_openssl
async def test_peer_offering_only_rsa_is_refused(scene, openssl_peer, rsa_identity):
    chain, key = rsa_identity
    server = await openssl_peer(*s_server_args(scene.pki, scene.port, "-cert", str(chain), "-key", str(key), "-msg"),
                                ready="ACCEPT")
    scene.wake()
    await scene.wait_entry("management-channel-failed")
    output = await server.wait_exit()
    assert "no shared cipher" in output                           # nothing in common ...
    assert ">>> TLS 1.2, Alert [length 0002], fatal handshake_failure" in output  # ... said on the wire
    assert "ServerHello" not in output
    await scene.assert_refused("tls-handshake-failed", "SSLV3_ALERT_HANDSHAKE_FAILURE")


@pytest.mark.openssl
@no_openssl
@pytest.mark.parametrize("version, wire", [("-tls1", "TLS 1.0"), ("-tls1_1", "TLS 1.1")])
async def test_peer_offering_only_old_tls_is_refused(scene, openssl_peer, version, wire):
    server = await openssl_peer(
        *s_server_args(scene.pki, scene.port, "-groups", "brainpoolP256r1:prime256v1", "-msg",
                       "-cipher", "DEFAULT@SECLEVEL=0", version=version),
        ready="ACCEPT",
    )
    scene.wake()
    await scene.wait_entry("management-channel-failed")
    output = await server.wait_exit()
    # The gateway offers only TLS 1.2 suites, so a TLS 1.0/1.1 server finds none it may use.
    assert "no shared cipher" in output
    assert f">>> {wire}, Alert [length 0002], fatal handshake_failure" in output
    assert "ServerHello" not in output
    await scene.assert_refused("tls-handshake-failed", "SSLV3_ALERT_HANDSHAKE_FAILURE")


@pytest.mark.openssl
@no_openssl
@pytest.mark.parametrize("command", [
    pytest.param(b"r\n", id="hello-request"),
    pytest.param(b"R\n", id="hello-request-with-client-auth"),
])
async def test_peer_that_tries_to_renegotiate_is_refused(scene, openssl_peer, command):
    server = await openssl_peer(*s_server_args(scene.pki, scene.port, "-groups", "brainpoolP256r1", "-msg"),
                                ready="ACCEPT")
    scene.wake()
    await scene.wait_entry("auth-established")  # a valid GWA so far: the channel is up
    channel = scene.gateway.management
    assert channel is not None and channel.is_open
    await server.send(command)  # s_server sends a HelloRequest
    await asyncio.wait_for(channel.wait_closed(), WAIT)
    output = await server.wait_exit()

    after = output[output.index("HelloRequest"):]
    # The gateway (SSL_OP_NO_RENEGOTIATION) answers with a no_renegotiation warning instead of a
    # new ClientHello; OpenSSL's server then ends the connection with a fatal handshake_failure.
    assert "<<< TLS 1.2, Alert [length 0002], warning no_renegotiation" in after
    assert ">>> TLS 1.2, Alert [length 0002], fatal handshake_failure" in after
    assert "no renegotiation" in after
    assert output.count("ClientHello") == 1 and output.count("], Finished") == 2  # one handshake only

    closed = await scene.wait_entry("management-channel-closed")
    assert closed.details["reason"] == "closed-by-gwa"
    assert "SSLV3_ALERT_HANDSHAKE_FAILURE" in closed.details["error"]
    assert scene.channel_events() == ["wakeup-accepted", "management-channel-opened", "auth-established",
                                      "auth-ended", "management-channel-closed"], scene.channel_events()
    await scene.assert_unchanged_and_serving()
