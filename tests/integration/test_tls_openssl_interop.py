"""The WAN TLS profile against an outside implementation: the real `openssl` binary.

The gateway (TLS client on the MANAGEMENT channel) connects to `openssl s_server` restricted to
one group, one suite at a time; the gateway's server context (as the reference GWA uses it)
accepts `openssl s_client` restricted the same way. What was negotiated is read from OpenSSL's own
protocol trace (`-trace`: the ClientHello, ServerHello and ServerKeyExchange as sent), not from
our side. In TLS 1.2 the supported-groups list also limits the curves of the ECDSA certificates,
so every group gets a test SM-PKI on its own curve (docs/decisions.md, TLS).
"""

from __future__ import annotations

import re
import shutil

import pytest

from smgw_emu.net.tls import WAN_CIPHERS, WAN_GROUPS, WAN_SIGALGS
from smgw_emu.pki import PkiDir, init_pki
from smgw_emu.reference.gwa import ReferenceGwa

from .conftest import HOST, rsa_gwa_identity, s_server_args

pytestmark = [
    pytest.mark.openssl,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary"),
]

#: our group name -> (name in OpenSSL's TLS trace, IANA TLS group code point)
TLS_GROUP = {
    "brainpoolP256r1": ("brainpoolP256r1", 26),
    "brainpoolP384r1": ("brainpoolP384r1", 27),
    "brainpoolP512r1": ("brainpoolP512r1", 28),
    "prime256v1": ("secp256r1", 23),
    "secp384r1": ("secp384r1", 24),
}
#: OpenSSL suite name -> (IANA name, code point as the trace prints it)
TLS_SUITE = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "{0xC0, 0x2B}"),
    "ECDHE-ECDSA-AES128-SHA256": ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "{0xC0, 0x23}"),
    "ECDHE-ECDSA-AES256-GCM-SHA384": ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "{0xC0, 0x2C}"),
}
#: TLS 1.2 signature_algorithms code points of ECDSA with SHA-256/384/512, as the trace names them
TLS_SIGALG = {"ECDSA+SHA256": "(0x0403)", "ECDSA+SHA384": "(0x0503)", "ECDSA+SHA512": "(0x0603)"}

#: suites OpenSSL offers that the WAN profile does not allow
OUTSIDE_SUITES = (
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES256-SHA384",      # CBC with SHA-384: not one of the three
    "ECDHE-ECDSA-AES128-SHA",         # SHA-1 MAC
    "ECDHE-RSA-AES128-GCM-SHA256",    # RSA authentication
)
OUTSIDE_GROUPS = ("X25519", "secp521r1")
NO_RETRY = {"retry_initial_s": 60, "retry_max_s": 60}  # the INFO-REPORT endpoint is not running


def test_profile_tables_cover_the_profile():
    assert set(TLS_GROUP) == set(WAN_GROUPS)
    assert set(TLS_SUITE) == set(WAN_CIPHERS)
    assert set(TLS_SIGALG) == set(WAN_SIGALGS)


@pytest.fixture(scope="module", params=WAN_GROUPS)
def curve_pki(request, tmp_path_factory) -> PkiDir:
    """A complete test SM-PKI whose every key is on the group's curve."""
    return init_pki(tmp_path_factory.mktemp(f"pki-{request.param}"), curve=request.param)


def trace_message(output: str, message: str) -> str:
    """One handshake message as `openssl -trace` printed it (up to the next record)."""
    start = output.find(f"    {message}, Length=")
    assert start >= 0, f"no {message} in the trace:\n{output}"
    ends = [i for i in (output.find("\nSent Record", start), output.find("\nReceived Record", start)) if i >= 0]
    return output[start:min(ends) if ends else len(output)]


def listed(block: str, heading: str) -> list[str]:
    """The indented lines below `heading` in a trace block (a list such as cipher_suites)."""
    lines = block.splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip().startswith(heading))
    indent = len(lines[index]) - len(lines[index].lstrip())
    items = []
    for line in lines[index + 1:]:
        if len(line) - len(line.lstrip()) <= indent:
            break
        items.append(line.strip())
    return items


async def gateway_to_s_server(openssl_peer, wan_gateway, free_port, pki, *s_server_extra: str):
    """s_server as the GWA of `pki`, a gateway whose profile points at it, and the gateway's
    MANAGEMENT channel to it (None if refused)."""
    port = free_port()
    server = await openssl_peer(*s_server_args(pki, port, *s_server_extra), ready="ACCEPT")
    gateway = await wan_gateway(pki, management_port=port, service_port=free_port(), channels=NO_RETRY)
    channel = await gateway.connect_management("test")
    return server, gateway, channel


async def s_client_to_reference_gwa(openssl_peer, gwa: ReferenceGwa, pki: PkiDir, *extra: str):
    return await openssl_peer(
        "s_client", "-connect", f"{HOST}:{gwa.management_port}",
        "-cert", str(pki.cert_path("gateway-tls")), "-key", str(pki.key_path("gateway-tls")),
        "-cert_chain", str(pki.root / "sub-ca-gw.crt"), "-CAfile", str(pki.ca_bundle),
        "-verify", "3", "-verify_return_error", "-tls1_2", *extra,
    )


def events(gateway, name: str) -> list:
    return [e for e in gateway.store.logs("system", limit=100_000) if e.event == name]


# -- the gateway as TLS client -----------------------------------------------------------------
async def test_gateway_client_hello_is_the_wan_profile(openssl_peer, wan_gateway, free_port, pki):
    server, gateway, channel = await gateway_to_s_server(
        openssl_peer, wan_gateway, free_port, pki, "-groups", "brainpoolP256r1", "-trace")
    assert channel is not None and channel.is_open
    channel.close("test")
    hello = trace_message(await server.wait_exit(), "ClientHello")

    assert "client_version=0x303 (TLS 1.2)" in hello
    suites = listed(hello, "cipher_suites")
    assert suites == [f"{TLS_SUITE[s][1]} {TLS_SUITE[s][0]}" for s in WAN_CIPHERS] + [
        "{0x00, 0xFF} TLS_EMPTY_RENEGOTIATION_INFO_SCSV"]
    assert listed(hello, "compression_methods") == ["No Compression (0x00)"]
    groups = listed(hello, "extension_type=supported_groups")
    assert [re.sub(r" \(P-\d+\)", "", g) for g in groups] == [
        f"{TLS_GROUP[g][0]} ({TLS_GROUP[g][1]})" for g in WAN_GROUPS]
    sigalgs = listed(hello, "extension_type=signature_algorithms")
    assert [s.split()[-1] for s in sigalgs] == [TLS_SIGALG[s] for s in WAN_SIGALGS]
    assert "session_ticket" not in hello          # OP_NO_TICKET
    assert "application_layer_protocol" not in hello


@pytest.mark.parametrize("suite", WAN_CIPHERS)
async def test_gateway_negotiates_each_wan_suite(openssl_peer, wan_gateway, free_port, pki, suite):
    server, gateway, channel = await gateway_to_s_server(
        openssl_peer, wan_gateway, free_port, pki, "-groups", "brainpoolP256r1", "-cipher", suite, "-trace")
    assert channel is not None and channel.is_open
    [opened] = events(gateway, "management-channel-opened")
    assert opened.details["cipher"] == suite
    channel.close("test")
    output = await server.wait_exit()
    server_hello = trace_message(output, "ServerHello")
    assert f"cipher_suite {TLS_SUITE[suite][1]} {TLS_SUITE[suite][0]}" in server_hello
    assert "server_version=0x303 (TLS 1.2)" in server_hello
    assert f"CIPHER is {suite}" in output


async def test_openssl_server_restricted_to_group_accepts_gateway(openssl_peer, wan_gateway, free_port, curve_pki):
    """The issue's proof: s_server offering exactly one group accepts the gateway's handshake,
    and the MANAGEMENT channel then carries HTTP from OpenSSL to the gateway and back."""
    pki = curve_pki
    trace_name, code_point = TLS_GROUP[pki.curve]
    server, gateway, channel = await gateway_to_s_server(
        openssl_peer, wan_gateway, free_port, pki, "-groups", pki.curve, "-trace")
    assert channel is not None and channel.is_open and channel.authenticated()
    [opened] = events(gateway, "management-channel-opened")
    assert "(TLSv1.2, " in opened.message and opened.details["cipher"] in WAN_CIPHERS

    # The GWA (OpenSSL) sends an HTTP request over the gateway's own outgoing connection.
    await server.send(b"GET /smgw/info HTTP/1.1\r\nHost: smgw\r\n\r\n")
    await server.wait_output("HTTP/1.1 200")
    await server.wait_output(f'id="{gateway.id}"')
    channel.close("test")
    output = await server.wait_exit()

    key_exchange = trace_message(output, "ServerKeyExchange")
    assert "KeyExchangeAlgorithm=ECDHE" in key_exchange
    assert re.search(rf"named_curve: {trace_name}\b.*\({code_point}\)", key_exchange), key_exchange
    server_hello = trace_message(output, "ServerHello")
    assert "server_version=0x303 (TLS 1.2)" in server_hello
    assert re.search(r"cipher_suite \{0xC0, 0x2[BC3]\} TLS_ECDHE_ECDSA_WITH_", server_hello), server_hello
    assert f"Shared groups: {trace_name}\n" in output
    assert re.search(r"CIPHER is ECDHE-ECDSA-", output)
    # mutual authentication: OpenSSL verified the gateway's certificate chain to the SM-PKI root
    assert f"CN = {pki.identities.gateway}\nverify return:1" in output
    assert "Peer signature type: ECDSA" in output


# -- the gateway's server context (reference GWA, HAN) ------------------------------------------
async def test_server_context_accepts_openssl_client_restricted_to_group(openssl_peer, curve_pki):
    pki = curve_pki
    async with ReferenceGwa(pki) as gwa:
        client = await s_client_to_reference_gwa(openssl_peer, gwa, pki, "-groups", pki.curve, "-brief")
        channel = await gwa.wait_channel(timeout=10)
        assert channel.tls_version == "TLSv1.2"
        assert channel.cipher in WAN_CIPHERS
        assert channel.peer_id == pki.identities.gateway
        await client.close_stdin()
        output = await client.wait_exit()
    assert "Protocol version: TLSv1.2" in output
    assert re.search(r"Ciphersuite: ECDHE-ECDSA-", output)
    assert f"Server Temp Key: ECDH, {pki.curve}, " in output
    assert "Signature type: ECDSA" in output
    assert "Verification: OK" in output


@pytest.mark.parametrize("suite", WAN_CIPHERS)
async def test_server_context_negotiates_each_wan_suite(openssl_peer, pki, suite):
    async with ReferenceGwa(pki) as gwa:
        client = await s_client_to_reference_gwa(
            openssl_peer, gwa, pki, "-groups", "brainpoolP256r1", "-cipher", suite, "-brief")
        channel = await gwa.wait_channel(timeout=10)
        assert channel.cipher == suite
        await client.close_stdin()
        output = await client.wait_exit()
    assert f"Ciphersuite: {suite}\n" in output


# -- what is outside the profile is refused, in both directions ---------------------------------
@pytest.fixture(scope="module")
def rsa_identity(pki, tmp_path_factory):
    return rsa_gwa_identity(pki, tmp_path_factory.mktemp("rsa"))


@pytest.mark.parametrize("suite", OUTSIDE_SUITES)
async def test_gateway_refuses_suite_outside_profile(openssl_peer, wan_gateway, free_port, pki, rsa_identity, suite):
    extra = ["-groups", "brainpoolP256r1:prime256v1", "-cipher", suite]
    if "-RSA-" in suite:  # a real RSA server: its certificate is RSA
        chain, key = rsa_identity
        extra += ["-cert", str(chain), "-key", str(key)]
    server, gateway, channel = await gateway_to_s_server(openssl_peer, wan_gateway, free_port, pki, *extra)
    assert channel is None
    output = await server.wait_exit()
    assert "no shared cipher" in output
    [failed] = events(gateway, "management-channel-failed")
    assert failed.details["reason"] == "tls-handshake-failed"
    assert "SSLV3_ALERT_HANDSHAKE_FAILURE" in failed.message
    assert not events(gateway, "management-channel-opened")


def assert_refused_before_server_hello(output: str, gwa: ReferenceGwa) -> None:
    """s_client (run with -msg) got no ServerHello: the server refused on the ClientHello.

    The refusing side is asyncio's SSL transport, which on Python 3.11 closes the connection
    without sending the fatal alert OpenSSL prepared (CPython gh-98078), so the client sees the
    close ("unexpected eof") rather than an alert; either is accepted here.
    """
    assert re.search(r">>> TLS 1\.\d, Handshake \[length [0-9a-f]+\], ClientHello", output), output
    assert "ServerHello" not in output
    assert "alert handshake failure" in output or "unexpected eof while reading" in output \
        or "alert protocol version" in output, output
    assert not gwa.channels and gwa.pending_channels() == 0


@pytest.mark.parametrize("suite", OUTSIDE_SUITES)
async def test_server_context_refuses_suite_outside_profile(openssl_peer, pki, suite):
    async with ReferenceGwa(pki) as gwa:
        client = await s_client_to_reference_gwa(
            openssl_peer, gwa, pki, "-groups", "brainpoolP256r1", "-cipher", suite, "-msg")
        output = await client.wait_exit()
        assert_refused_before_server_hello(output, gwa)


@pytest.mark.parametrize("group", OUTSIDE_GROUPS)
async def test_gateway_refuses_group_outside_profile(openssl_peer, wan_gateway, free_port, pki, group):
    server, gateway, channel = await gateway_to_s_server(openssl_peer, wan_gateway, free_port, pki, "-groups", group)
    assert channel is None
    output = await server.wait_exit()
    assert "no shared cipher" in output  # no common group: no ECDHE suite can be used
    [failed] = events(gateway, "management-channel-failed")
    assert failed.details["reason"] == "tls-handshake-failed"


@pytest.mark.parametrize("group", OUTSIDE_GROUPS)
async def test_server_context_refuses_group_outside_profile(openssl_peer, pki, group):
    async with ReferenceGwa(pki) as gwa:
        client = await s_client_to_reference_gwa(openssl_peer, gwa, pki, "-groups", group, "-msg")
        output = await client.wait_exit()
        assert_refused_before_server_hello(output, gwa)


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
async def test_server_context_refuses_old_protocol_versions(openssl_peer, pki, version):
    async with ReferenceGwa(pki) as gwa:
        client = await openssl_peer(
            "s_client", "-connect", f"{HOST}:{gwa.management_port}", version, "-cipher", "DEFAULT@SECLEVEL=0",
            "-groups", "brainpoolP256r1", "-cert", str(pki.cert_path("gateway-tls")),
            "-key", str(pki.key_path("gateway-tls")), "-cert_chain", str(pki.root / "sub-ca-gw.crt"),
            "-CAfile", str(pki.ca_bundle), "-msg",
        )
        output = await client.wait_exit()
        assert_refused_before_server_hello(output, gwa)


async def test_server_context_refuses_client_renegotiation(openssl_peer, pki):
    async with ReferenceGwa(pki) as gwa:
        client = await s_client_to_reference_gwa(openssl_peer, gwa, pki, "-groups", "brainpoolP256r1", "-msg")
        channel = await gwa.wait_channel(timeout=10)
        await client.wait_output("Verify return code: 0 (ok)")
        await client.send(b"R\n")  # s_client: renegotiate
        await channel.wait_closed(timeout=10)
        await client.close_stdin()
        output = await client.wait_exit()
    after = output[output.index("RENEGOTIATING"):]
    assert ">>> TLS 1.2, Handshake [length" in after and "ClientHello" in after   # the client asked ...
    assert "<<< TLS 1.2, Alert [length 0002], warning no_renegotiation" in after  # ... the server said no
    assert "ServerHello" not in after                                           # no second handshake
    assert output.count("], ServerHello\n") == 1
