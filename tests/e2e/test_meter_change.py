"""Zähler wechseln (Lastenheft 6.3, fig. 21), end to end: the GWA replaces meter A by the already
paired meter B with the method change_meter of A's profile; the gateway takes A's final reading
over the LMN, moves the evaluation profiles to B, deletes A's profile and key banks, in one
transaction. Real gateway, reference GWA, two reference meters, real sockets and TLS.
"""

from __future__ import annotations

import datetime as _dt

import pytest

from smgw_emu.app.gateway import Gateway
from smgw_emu.core.clock import VirtualClock
from smgw_emu.core.cosem import DlmsValue, xmlcodec
from smgw_emu.reference.cosem_client import profile_path
from smgw_emu.reference.meter import ReferenceMeter

from .conftest import assert_transcript, gateway_config, started
from .cosem_flow import emt_profile, error_of, evaluation, last_record, open_channel, provision, settled, system_events
from .test_lmn_pairing import INITIAL_KEY, mark_all, method_path, paired, profile_body

METER_B = "1XXX0000000002"
KEY_B = bytes(range(16, 32))
LMN = {"attempts": 1, "retry_interval_s": 10, "connect_timeout_s": 2, "exchange_timeout_s": 5}


@pytest.fixture
async def gateway(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    gw = Gateway(gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"}, lmn=LMN), clock=clock)
    yield await started(gw, gwa)
    await gw.stop()


@pytest.fixture
async def meters(pki):
    async with ReferenceMeter(pki, initial_key=INITIAL_KEY) as a, \
            ReferenceMeter(pki, initial_key=KEY_B, meter_id=METER_B) as b:
        a.registers["0100010800ff"].value = 55_555_000
        yield a, b


async def both_paired(gateway, gwa, pki, a, b, *profiles) -> None:
    await paired(gateway, gwa, pki, a)
    await paired(gateway, gwa, pki, b, meter_id=METER_B, key=KEY_B)
    await provision(gateway, gwa, emt_profile(pki), *profiles)
    mark_all(gateway, gwa, a, b)


def change_body(meter_id: str) -> bytes:
    return xmlcodec.value_to_xml(DlmsValue("visible-string", meter_id))


def meters_of(gateway, profile_id: str) -> list[str]:
    [obj] = [o for o in gateway.store.objects("tafprofile", profile_id) if o.class_id == 28200]
    return obj.attributes["meters"]


def snapshot(gateway):
    return (gateway.store.objects(), gateway.store.key_banks(), gateway.store.pending("info-report"))


async def test_fig21_change_meter(gateway, gwa, pki, meters):
    a, b = meters
    await both_paired(gateway, gwa, pki, a, b, evaluation(pki, "TAF2-A"))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", method_path(a.meter_id, 3), change_body(METER_B), step="post-change-meter")
    assert response.status == 200, response.text
    assert xmlcodec.method_result_from_xml(response.body) == (3, DlmsValue("visible-string", METER_B))
    [changed] = await gwa.wait_event("meter-changed")
    await gwa.wait_event("meter-profile-deleted")
    await settled(gateway)

    # the final reading: reported and kept in meter_values after A's profile is gone
    assert changed.details["old-meter"] == a.meter_id and changed.details["new-meter"] == METER_B
    assert changed.details["profiles"] == "tafprofile/TAF2-A"
    assert changed.details["0100010800ff"].startswith("5555500.0 status=00000000")
    assert changed.details["final-reading"] == "complete"
    [(ts, value, status)] = gateway.store.meter_values(a.meter_id, "0100010800ff")
    assert (ts, value) == (changed.details["final-reading-time"], "5555500.0")
    # the running billing profile now uses B (the one exception to the fig. 34 lock)
    assert meters_of(gateway, "TAF2-A") == [METER_B]
    [updated] = gwa.events("billing-evaluation-profile-updated")
    assert updated.details["changed"] == "meters" and updated.details["old-meter"] == a.meter_id
    # A's profile and key banks are deleted, B is untouched
    assert not gateway.store.objects("meter", a.meter_id)
    assert not [bank for bank in gateway.store.key_banks() if bank.startswith(f"meter/{a.meter_id}/")]
    assert f"meter/{METER_B}/active" in gateway.store.key_banks()
    assert [l.id for l in gateway.cosem.model.ldevs("meter")] == [METER_B]
    assert "meter-changed" in [e.event for e in system_events(gateway)]
    assert_transcript(21, gateway, gwa, others=[a.transcript, b.transcript])


async def test_change_meter_moves_every_profile_naming_the_old_meter(gateway, gwa, pki, meters):
    a, b = meters
    await both_paired(gateway, gwa, pki, a, b, evaluation(pki, "TAF2-A"), evaluation(pki, "TAF7-A", billing=False))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", method_path(a.meter_id, 3), change_body(METER_B))
    assert response.status == 200, response.text
    assert meters_of(gateway, "TAF2-A") == meters_of(gateway, "TAF7-A") == [METER_B]
    [changed] = await gwa.wait_event("meter-changed")
    assert changed.details["profiles"] == "tafprofile/TAF2-A,tafprofile/TAF7-A"
    await gwa.wait_event("non-billing-evaluation-profile-updated")


async def refused(gateway, gwa, path: str, body: bytes, status: int, code: str, field: str | None = None):
    before, record = snapshot(gateway), last_record(gateway)
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", path, body)
    assert response.status == status, response.text
    error = error_of(response.body)
    assert error.code == code, error
    if field is not None:
        assert error.field == field, error
    assert snapshot(gateway) == before  # nothing changed, no event queued
    assert any(e.event == "request-failed" and e.details.get("code") == code
               for e in system_events(gateway, record)), "refusal not logged"
    return error


@pytest.mark.parametrize("argument, status, code, field", [
    ("1XXX0000000099", 422, "unknown-reference", "argument"),   # B has no profile
    (None, 422, "invalid-value", "argument"),                   # A == B
])
async def test_change_meter_to_an_unknown_or_the_same_meter_is_refused(gateway, gwa, pki, meters, argument, status,
                                                                      code, field):
    a, b = meters
    await both_paired(gateway, gwa, pki, a, b, evaluation(pki, "TAF2-A"))
    await refused(gateway, gwa, method_path(a.meter_id, 3), change_body(argument or a.meter_id), status, code, field)
    assert a.files_received == 1  # the pairing only: a refused call never talks to the meter
    assert meters_of(gateway, "TAF2-A") == [a.meter_id]


async def test_change_meter_to_an_unpaired_meter_is_refused(gateway, gwa, pki, meters):
    a, _ = meters
    await paired(gateway, gwa, pki, a)
    # B's profile exists but B was never paired
    await provision(gateway, gwa, ("POST", profile_path("meter", METER_B),
                                   profile_body(pki, meter_id=METER_B, lmn_address="127.0.0.1:1")))
    await refused(gateway, gwa, method_path(a.meter_id, 3), change_body(METER_B), 409, "state-conflict", "argument")
    assert a.files_received == 1


async def test_change_meter_with_a_wrong_argument_type_is_refused(gateway, gwa, pki, meters):
    a, b = meters
    await both_paired(gateway, gwa, pki, a, b)
    await refused(gateway, gwa, method_path(a.meter_id, 3), b"", 400, "type-mismatch")


async def test_change_meter_when_the_new_meter_does_not_fit_a_profile_is_refused(gateway, gwa, pki, meters):
    a, b = meters
    await both_paired(gateway, gwa, pki, a, b, evaluation(pki, "TAF2-AB", meters=[a.meter_id, METER_B]))
    error = await refused(gateway, gwa, method_path(a.meter_id, 3), change_body(METER_B), 422, "invalid-value")
    assert "tafprofile/TAF2-AB" in error.message and "named twice" in error.message


async def test_change_meter_when_the_old_meter_is_unreachable_changes_nothing(gateway, gwa, pki, meters):
    a, b = meters
    await both_paired(gateway, gwa, pki, a, b, evaluation(pki, "TAF2-A"))
    await a.stop()  # A is gone from the LMN
    await refused(gateway, gwa, method_path(a.meter_id, 3), change_body(METER_B), 502, "final-reading-failed", "ldev")
    assert meters_of(gateway, "TAF2-A") == [a.meter_id]
    assert not gateway.store.meter_values(a.meter_id, "0100010800ff")
    events = [e.event for e in system_events(gateway)]
    assert "meter-change-refused" in events and "meter-changed" not in events


async def test_pair_and_crypto_reset_still_work_through_the_meter_hook(gateway, gwa, pki, meters):
    a, _ = meters
    await paired(gateway, gwa, pki, a)  # pair (method 1) goes through the same hook
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", method_path(a.meter_id, 1), b"")
    assert response.status == 409 and error_of(response.body).code == "state-conflict"
