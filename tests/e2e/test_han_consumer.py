"""The consumer's view at the HAN interface, end to end (docs/domain.md §7): a real gateway with its HAN
consumer interface on loopback, the reference consumer (`reference/trudi_client.py`, what TRuDI
does) over real TLS with the HAN profile, meter values put in the real store through its API. The
export must validate against the AR 2418-6 schema set, show exactly the consumer's own values,
and every access must be in the consumer log; every bad input is refused, logged and changes
nothing."""

from __future__ import annotations

import datetime as _dt
import hashlib
import ssl
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import serialization

from smgw_emu.app.gateway import Gateway
from smgw_emu.app.hanconfig import HanConsumer
from smgw_emu.core.clock import VirtualClock
from smgw_emu.core.hanauth import hash_password
from smgw_emu.net.tls import PROFILES, certificate_fingerprint
from smgw_emu.pki import generate_key, issue_certificate
from smgw_emu.reference.trudi_client import GatewayNotPinned, HanConsumerClient, read_export
from tests.trudi_schema import assert_valid

from .conftest import gateway_config, started, wait_for

UTC = _dt.timezone.utc
T0 = _dt.datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
METER_A = "1XXX0098765432"        # Anna's electricity meter
METER_B = "1XXX0000000002"        # Bob's
METER_C = "7XXX0000000003"        # Carla's gas meter; she signs in with her certificate
IMPORT, EXPORT, GAS = "0100010800ff", "0100020800ff", "0700030000ff"
PASSWORDS = {"anna": "anna-geheim", "bob": "bob-geheim"}
WINDOW = {"from": "2026-11-20T00:00:00Z", "to": "2026-11-20T01:00:00Z"}


# -- set-up -----------------------------------------------------------------------------------------

def client_certificate(pki, directory, name: str, *, other_root: bool = False):
    """A consumer's TLS certificate (chain file, key file, SHA-256): issued by the SM-PKI's gateway
    sub-CA, or by a root of its own."""
    key = generate_key(pki.curve)
    if other_root:
        issuer_key = generate_key(pki.curve)
        issuer = issue_certificate(subject_cn="Other-Root-CA", org_unit="root", public_key=issuer_key.public_key(),
                                   issuer_cert=None, issuer_key=issuer_key, ca=True, path_length=1)
    else:
        issuer, issuer_key = pki.cert("sub-ca-gw"), pki.key("sub-ca-gw")
    cert = issue_certificate(subject_cn=name, org_unit="consumer-tls", public_key=key.public_key(),
                             issuer_cert=issuer, issuer_key=issuer_key)
    chain, key_file = directory / f"{name}.chain.pem", directory / f"{name}.key"
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, issuer)))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain, key_file, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@pytest.fixture(scope="module")
def hashes():
    return {user: hash_password(password, n=1024) for user, password in PASSWORDS.items()}


@pytest.fixture
def carla(pki, tmp_path):
    return client_certificate(pki, tmp_path, "LV-0003")


def consumers(hashes, carla_fingerprint: str, **anna) -> tuple[HanConsumer, ...]:
    return (
        HanConsumer("LV-0001", (METER_A,), "anna", hashes["anna"], usage_point_id="DE0001", **anna),
        HanConsumer("LV-0002", (METER_B,), "bob", hashes["bob"]),
        HanConsumer("LV-0003", (METER_C,), certificate_sha256=carla_fingerprint, tariff_name="Gas Grundtarif"),
    )


async def han_gateway(pki, gwa, tmp_path, hashes, carla, *, clock=None, han=None, **anna) -> Gateway:
    settings = {"enabled": True, "consumers": consumers(hashes, carla[2], **anna), **(han or {})}
    sections = {"han": settings} | ({"clock": {"mode": "virtual"}} if clock else {})
    gateway = Gateway(gateway_config(pki, gwa, tmp_path / "state", **sections), clock=clock)
    await started(gateway, gwa)
    store_values(gateway)
    return gateway


@pytest.fixture
async def gateway(pki, gwa, tmp_path, hashes, carla):
    gw = await han_gateway(pki, gwa, tmp_path, hashes, carla)
    yield gw
    await gw.stop()


def store_values(gateway: Gateway) -> None:
    """Values as app/meters.py stores them: one transaction, UTC time stamps in whole seconds."""
    with gateway.store.transaction() as tx:
        for i in range(5):  # 00:00 .. 01:00, every 15 minutes
            stamp = (T0 + _dt.timedelta(minutes=15 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            tx.put_meter_value(METER_A, IMPORT, stamp, f"{63910.8 + i:.1f}", "0000000000100504")
            tx.put_meter_value(METER_A, EXPORT, stamp, str(12 + i), "0000000400100504")
            tx.put_meter_value(METER_B, IMPORT, stamp, str(99000 + i), "0000000000100504")
            tx.put_meter_value(METER_C, GAS, stamp, f"{1234.125 + i:.3f}", "0000000000000000")
        late = (T0 + _dt.timedelta(minutes=75)).strftime("%Y-%m-%dT%H:%M:%SZ")
        tx.put_meter_value(METER_A, IMPORT, late, "63915.8", "0000000000100504")  # after the window


def client(gateway: Gateway, pki, **kwargs) -> HanConsumerClient:
    host, port = gateway.han.address
    if "user" in kwargs and "password" not in kwargs:
        kwargs["password"] = PASSWORDS.get(kwargs["user"], "x")
    pin = certificate_fingerprint(pki.cert("gateway-tls").public_bytes(serialization.Encoding.DER))
    return HanConsumerClient(host, port, cafile=pki.root_ca, gateway_fingerprint=pin, **kwargs)


def consumer_log(gateway: Gateway, consumer: str | None = None):
    return [e for e in gateway.store.logs("consumer", limit=1_000_000)
            if consumer is None or e.details.get("consumer") == consumer]


def refusals(gateway: Gateway):
    return [e for e in gateway.store.logs("system", limit=1_000_000) if e.event == "han-access-refused"]


def state_counts(gateway: Gateway) -> dict[str, int]:
    return {table: gateway.store.count(table) for table in ("meter_values", "objects", "ldevs", "key_banks", "kv")}


# -- reading -----------------------------------------------------------------------------------------

async def test_a_consumer_reads_his_export_with_his_password_and_the_access_is_logged(gateway, pki):
    async with client(gateway, pki, user="anna") as anna:
        answer = await anna.get("/han/export", WINDOW)
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("application/xml")
    assert_valid(answer.body)
    view = read_export(answer.body)
    assert (view.customer_id, view.usage_point_id, view.smgw_id, view.service_kind) == (
        "LV-0001", "DE0001", gateway.id, 0)
    assert view.tariff_name == "no tariff profile"
    assert view.certificate_der == pki.cert("gateway-tls").public_bytes(serialization.Encoding.DER)
    # exactly his stored values, both ends of the window included, nothing of Bob's
    stored = {obis: gateway.store.meter_values(METER_A, obis, "2026-11-20T00:00:00Z", "2026-11-20T01:00:01Z")
              for obis in (IMPORT, EXPORT)}
    for obis in (IMPORT, EXPORT):
        values = view.lists[f"{obis}.{METER_A}.sm"]
        assert [(v.time.strftime("%Y-%m-%dT%H:%M:%SZ"), v.value, v.status_fnn.lower()) for v in values] == [
            (ts, Decimal(value), status) for ts, value, status in stored[obis]]
        assert len(values) == 5
    assert [v.status_ptb for v in view.lists[f"{EXPORT}.{METER_A}.sm"]] == [1] * 5  # the PTB-warning bit
    assert set(view.meters.values()) == {METER_A}
    assert b"99000" not in answer.body and METER_B.encode() not in answer.body
    # the access is in the consumer log, as his
    entry = consumer_log(gateway, "LV-0001")[-1]
    assert (entry.event, entry.outcome, entry.details["auth"], entry.details["values"]) == (
        "han-export-read", 0, "password", "10")
    assert (entry.details["from"], entry.details["to"]) == ("2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z")


async def test_the_consumer_log_shows_his_accesses_only(gateway, pki):
    gateway.journal("time-deviation-exceeded", "the gateway's clock was off", log_name="consumer")  # gateway-wide
    async with client(gateway, pki, user="bob") as bob:
        assert (await bob.get("/han/export")).status == 200
    async with client(gateway, pki, user="anna") as anna:
        assert (await anna.get("/han/export", {"meter": METER_A})).status == 200
        answer = await anna.get("/han/log")
    assert answer.status == 200
    assert_valid(answer.body)
    view = read_export(answer.body)
    events = [e.extensions.split(";")[0] for e in view.log]
    assert events == ["event=time-deviation-exceeded", "event=han-export-read"]
    assert all("LV-0002" not in e.extensions + e.text for e in view.log)
    assert view.lists == {}
    mine = consumer_log(gateway, "LV-0001")
    assert [e.event for e in mine] == ["han-export-read", "han-log-read"]
    assert view.log[-1].record == mine[0].record


async def test_a_consumer_signs_in_with_his_own_certificate(gateway, pki, carla):
    async with client(gateway, pki, certificate=carla[:2]) as carla_client:
        view = await carla_client.export(**WINDOW)
    assert view.customer_id == "LV-0003" and view.service_kind == 1 and view.tariff_name == "Gas Grundtarif"
    assert [v.value for v in view.lists[f"{GAS}.{METER_C}.sm"]] == [Decimal("1234.125") + i for i in range(5)]
    assert consumer_log(gateway, "LV-0003")[-1].details["auth"] == "certificate"


async def test_one_connection_signs_in_once_and_keeps_the_han_profile(gateway, pki):
    async with client(gateway, pki, user="anna") as anna:
        for _ in range(3):
            assert (await anna.get("/han/log")).status == 200
        assert gateway.han.server.connections_accepted == 1 and anna.connections == 1
        ssl_object = anna.ssl_object
        assert ssl_object.version() == "TLSv1.2" and ssl_object.cipher()[0] in PROFILES["han"].ciphers


async def test_a_new_tenant_sees_nothing_before_his_data_from(pki, gwa, tmp_path, hashes, carla):
    gateway = await han_gateway(pki, gwa, tmp_path, hashes, carla,
                                data_from=_dt.datetime(2026, 11, 20, 0, 30, tzinfo=UTC))
    try:
        async with client(gateway, pki, user="anna") as anna:
            view = await anna.export(**WINDOW)
        assert [v.time.minute for v in view.lists[f"{IMPORT}.{METER_A}.sm"]] == [30, 45, 0]
    finally:
        await gateway.stop()


async def test_the_client_refuses_a_gateway_it_does_not_expect(gateway, pki):
    host, port = gateway.han.address
    async with HanConsumerClient(host, port, cafile=pki.root_ca, user="anna", password=PASSWORDS["anna"],
                                 gateway_fingerprint="00" * 32) as anna:
        with pytest.raises(GatewayNotPinned):
            await anna.get("/han/export")
    await wait_for(lambda: gateway.han.server.connections_accepted == 1)
    assert consumer_log(gateway) == [] and refusals(gateway) == []  # no request was sent: no password either


# -- refusals ----------------------------------------------------------------------------------------

async def test_wrong_password_or_unknown_user_is_refused_and_logged(gateway, pki):
    before = state_counts(gateway)
    for user, password, anna_entries in (("anna", "wrong", 1), ("mallory", "anna-geheim", 1)):
        async with client(gateway, pki, user=user, password=password) as someone:
            answer = await someone.get("/han/export", WINDOW)
        assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith('Basic realm="smgw-han"')
        assert b"bad-credentials" in answer.body and METER_A.encode() not in answer.body and b"63910" not in answer.body
        entry = refusals(gateway)[-1]
        assert (entry.details["reason"], entry.details["status"], entry.outcome) == ("bad-credentials", "401", 1)
        assert user not in entry.message and user not in str(entry.details)  # the GWA reads the system log
        # a wrong password of his user name is in his consumer log too; an unknown user is nobody's
        assert len([e for e in consumer_log(gateway, "LV-0001") if e.event == "han-access-refused"]) == anna_entries
    assert consumer_log(gateway, "LV-0001")[0].outcome == 1
    assert state_counts(gateway) == before


async def test_missing_or_malformed_credentials_are_refused(gateway, pki):
    for headers, code, reason in (({}, "authentication-required", "no-credentials"),
                                  ({"Authorization": "Basic !!!"}, "bad-credentials", "malformed-credentials"),
                                  ({"Authorization": "Bearer abc"}, "bad-credentials", "malformed-credentials")):
        async with client(gateway, pki) as nobody:
            answer = await nobody.get("/han/export", headers=headers)
        assert answer.status == 401 and code.encode() in answer.body
        assert refusals(gateway)[-1].details["reason"] == reason
    assert consumer_log(gateway) == []


async def test_a_certificate_of_another_root_fails_the_handshake_and_is_logged(gateway, pki, tmp_path):
    chain, key, _ = client_certificate(pki, tmp_path, "LV-EVIL", other_root=True)
    async with client(gateway, pki, certificate=(chain, key), user="anna") as evil:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await evil.get("/han/export")
    await wait_for(lambda: any(e.details.get("reason") == "tls-handshake-failed" for e in refusals(gateway)))
    assert "certificate" in refusals(gateway)[-1].message.lower()
    assert consumer_log(gateway) == []


async def test_a_certificate_of_the_right_root_but_of_no_consumer_is_refused(gateway, pki, tmp_path):
    chain, key, _ = client_certificate(pki, tmp_path, "LV-UNKNOWN")
    async with client(gateway, pki, certificate=(chain, key)) as stranger:
        answer = await stranger.get("/han/export")
    assert answer.status == 401 and b"unknown-certificate" in answer.body
    assert refusals(gateway)[-1].details["reason"] == "unknown-certificate"


async def test_a_meter_of_another_consumer_is_refused_without_its_data(gateway, pki):
    async with client(gateway, pki, user="anna") as anna:
        for meters in ([("meter", METER_B)], [("meter", METER_A), ("meter", METER_B)], [("meter", "1XXX9999999999")]):
            answer = await anna.get("/han/export", meters)
            assert answer.status == 403 and b"meter-not-yours" in answer.body
            assert b"99000" not in answer.body and b"63910" not in answer.body
    assert [e.details["reason"] for e in refusals(gateway)] == ["foreign-meter"] * 3
    refused = [e for e in consumer_log(gateway, "LV-0001") if e.event == "han-access-refused"]
    assert len(refused) == 3 and refused[0].details["field"] == "meter" and refused[0].outcome == 1
    assert not [e for e in consumer_log(gateway, "LV-0001") if e.event == "han-export-read"]


BAD_QUERIES = [
    ({"from": "yesterday"}, "invalid-value", "from"),
    ({"to": "2026-11-20T00:00:00"}, "invalid-value", "to"),  # no offset
    ({"from": "2026-11-21T00:00:00Z", "to": "2026-11-20T00:00:00Z"}, "invalid-range", "from"),
    ({"from": "2024-01-01T00:00:00Z", "to": "2026-11-20T00:00:00Z"}, "range-too-long", "to"),
    ({"colour": "red"}, "unknown-parameter", "colour"),
    ([("from", "2026-11-20T00:00:00Z"), ("from", "2026-11-20T00:00:00Z")], "invalid-value", "from"),
]


async def test_a_bad_query_is_refused_naming_the_parameter(gateway, pki):
    before = state_counts(gateway)
    async with client(gateway, pki, user="anna") as anna:
        for params, code, field in BAD_QUERIES:
            for path in ("/han/export", "/han/log"):
                answer = await anna.get(path, params)
                assert answer.status == 400 and f'code="{code}"'.encode() in answer.body, (path, params)
                assert f"<field>{field}</field>".encode() in answer.body
                entry = consumer_log(gateway, "LV-0001")[-1]
                assert (entry.event, entry.details["reason"], entry.details["field"]) == (
                    "han-access-refused", "bad-request", field)
    assert [e.details["status"] for e in refusals(gateway)] == ["400"] * len(BAD_QUERIES) * 2
    assert state_counts(gateway) == before


async def test_an_offset_with_a_plus_sign_is_read_as_written(gateway, pki):
    async with client(gateway, pki, user="anna") as anna:  # '+' must be %2B in a query; a raw '+' is a space
        answer = await anna.request("GET", "/han/export?from=2026-11-20T01:30:00%2B01:00&to=2026-11-20T02:00:00+01:00")
        view = read_export(answer.body)
    assert [v.time.minute for v in view.lists[f"{IMPORT}.{METER_A}.sm"]] == [30, 45, 0]


async def test_unknown_resources_and_other_methods_are_refused_after_sign_in(gateway, pki):
    async with client(gateway, pki, user="anna") as anna:
        assert (await anna.get("/smgw/cosem")).status == 404
        answer = await anna.request("POST", "/han/export", body=b"x")
        assert answer.status == 405 and answer.headers["Allow"] == "GET"
    async with client(gateway, pki) as nobody:
        assert (await nobody.get("/smgw/cosem")).status == 401  # nothing is told before sign-in


# -- rate limit and session lifetime -----------------------------------------------------------------

async def test_password_failures_are_rate_limited_per_source_and_user(pki, gwa, tmp_path, hashes, carla):
    clock = VirtualClock(_dt.datetime.now(UTC))
    gateway = await han_gateway(pki, gwa, tmp_path, hashes, carla, clock=clock,
                                han={"password_failures": 3, "password_failure_refill_s": 60})
    try:
        async with client(gateway, pki, user="anna", password="guess") as guesser:
            statuses = [(await guesser.get("/han/log")).status for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        async with client(gateway, pki, user="anna") as anna:  # even the right password waits now
            answer = await anna.get("/han/log")
            assert answer.status == 429 and answer.headers["Retry-After"] == "60"
            clock.advance(60)
            assert (await anna.get("/han/log")).status == 200  # one more attempt after the refill
        async with client(gateway, pki, user="bob") as bob:  # an hour later the source's bucket is full again
            clock.advance(3600)
            assert (await bob.get("/han/log")).status == 200
        reasons = [e.details["reason"] for e in refusals(gateway)]
        assert reasons == ["bad-credentials"] * 3 + ["rate-limited"] * 2
    finally:
        await gateway.stop()


async def test_a_han_connection_ends_after_48_hours(pki, gwa, tmp_path, hashes, carla):
    clock = VirtualClock(_dt.datetime.now(UTC))
    gateway = await han_gateway(pki, gwa, tmp_path, hashes, carla, clock=clock, han={"idle_timeout_s": 3600})
    try:
        async with client(gateway, pki, user="anna") as anna:
            assert (await anna.get("/han/log")).status == 200
            assert gateway.han.server.open_connections == 1
            clock.advance(48 * 3600)
            await wait_for(lambda: gateway.han.server.open_connections == 0, timeout=5)
            assert (await anna.get("/han/log")).status == 200  # a new connection, a new sign-in
            assert gateway.han.server.connections_accepted == 2
    finally:
        await gateway.stop()
