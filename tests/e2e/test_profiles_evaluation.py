"""6.4.3 billing evaluation profile: create with first readout (fig. 33), update (34), read (35),
delete (36); 6.4.4 non-billing evaluation profile: create (37), delete (38)."""

from __future__ import annotations

import datetime as _dt

from smgw_emu.core.cosem import ObisCode
from smgw_emu.reference.cosem_client import (
    cls_proxy_profile_values,
    evaluation_profile_values,
    profile_document,
    profile_object_path,
    profile_path,
)

from .conftest import assert_transcript
from .cosem_flow import attributes, create, emt_profile, error_of, evaluation, meter, open_channel, provision, settled

TAF2, TAF7 = "TAF2-0001", "TAF7-0001"


def r(text: str) -> bytes:
    return ObisCode.parse(text).to_bytes()


async def test_fig33_create_billing_evaluation_profile_with_first_readout(gateway, gwa, pki):
    meter_id = pki.identities.meter
    await provision(gateway, gwa, emt_profile(pki), meter(pki))
    channel = await open_channel(gateway, gwa)
    body = profile_document("tafprofile", evaluation_profile_values(pki, TAF2))
    response = await channel.request("POST", profile_path("tafprofile", TAF2), body, step="post-billing-evaluation-profile")
    assert response.status == 201, response.text
    assert response.headers["Location"] == profile_object_path("tafprofile", TAF2)
    [created] = await gwa.wait_event("billing-evaluation-profile-created")
    assert (created.details["taf"], created.details["meters"], created.details["recipient"]) == ("2", meter_id, pki.identities.emt)
    [readout] = await gwa.wait_event("first-readout")
    # no meter has delivered a value yet (the LMN comes later): reported, not hidden
    assert readout.details["status"] == "no-values"
    assert readout.details[f"{meter_id}/0100010800ff"] == "missing"
    await settled(gateway)
    # the profile's LDEV: the profile and one derived value list per tariff stage register
    stored = {(o.class_id, o.obis) for o in gateway.store.objects("tafprofile", TAF2)}
    assert stored == {(28200, "0000800003ff"), (28403, "0100010801ff"), (28403, "0100010802ff")}
    assert_transcript(33, gateway, gwa)


async def test_first_readout_reports_the_values_the_gateway_holds(gateway, gwa, pki):
    meter_id = pki.identities.meter
    await provision(gateway, gwa, emt_profile(pki), meter(pki))
    # a reading of the import register, as the LMN side will store it
    with gateway.store.transaction() as tx:
        tx.put_meter_value(meter_id, "0100010800ff", "2026-11-25T08:00:00Z", "12345.6", "0000000000000000")
    channel = await open_channel(gateway, gwa)
    values = evaluation_profile_values(pki, TAF2, registers=[r("1-0:1.8.0"), r("1-0:2.8.0")])
    response = await channel.request("POST", profile_path("tafprofile", TAF2), profile_document("tafprofile", values))
    assert response.status == 201, response.text
    [readout] = await gwa.wait_event("first-readout")
    assert readout.details["status"] == "partial"
    assert readout.details[f"{meter_id}/0100010800ff"] == "12345.6 status=0000000000000000 time=2026-11-25T08:00:00Z"
    assert readout.details[f"{meter_id}/0100020800ff"] == "missing"
    await settled(gateway)


async def test_evaluation_profile_validation_names_the_field(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), meter(pki))
    channel = await open_channel(gateway, gwa)
    now = _dt.datetime.now(_dt.timezone.utc)
    stage3 = [{"day_id": 1, "switch_points": [{"start": 0, "stage": 3}]}]
    late_start = [{"day_id": 1, "switch_points": [{"start": 60, "stage": 1}]}]
    cases = [
        ({"meters": ["1XXX0000000001"]}, "unknown-reference", "meters[0]"),
        ({"meters": []}, "invalid-value", "meters"),
        ({"recipient_emt": "EMT-NOBODY"}, "unknown-reference", "recipient_emt"),
        ({"recipient_emt": gateway.gwa.id}, "unknown-reference", "recipient_emt"),
        ({"registers": [r("1-0:3.8.0")]}, "unknown-reference", "registers[0]"),
        ({"registers": [b"\x01\x00"]}, "invalid-value", "registers[0]"),
        ({"capture_period_s": 7}, "invalid-value", "capture_period_s"),
        ({"capture_period_s": 600}, "invalid-value", "capture_period_s"),  # finer than the meter's 900 s
        ({"billing_period": "PT10M"}, "invalid-value", "billing_period"),
        ({"billing_period": "1 month"}, "invalid-value", "billing_period"),
        ({"taf": 9}, "invalid-value", "taf"),
        ({"tariff_id": ""}, "invalid-value", "tariff_id"),
        ({"profile_id": "OTHER"}, "invalid-value", "profile_id"),
        ({"tariff_stages": [{"stage": 1, "register": r("1-0:1.8.1"), "label": "HT"}]}, "invalid-value", "tariff_stages"),
        ({"day_profiles": stage3}, "unknown-reference", "day_profiles[0].switch_points[0].stage"),
        ({"day_profiles": late_start}, "invalid-value", "day_profiles[0].switch_points"),
        ({"special_days": [{"date": "2026-02-30", "day_id": 1}]}, "invalid-value", "special_days[0].date"),
        ({"special_days": [{"date": "2026-12-24", "day_id": 9}]}, "unknown-reference", "special_days[0].day_id"),
        ({"valid_from": now, "valid_until": now}, "invalid-value", "valid_until"),
    ]
    before = gateway.store.objects()
    for changes, code, field in cases:
        body = profile_document("tafprofile", evaluation_profile_values(pki, TAF2, **changes))
        response = await channel.request("POST", profile_path("tafprofile", TAF2), body)
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (422, code, field), (changes, response.text)
    non_billing_taf1 = profile_document("tafprofile", evaluation_profile_values(pki, TAF7, billing=False, taf=1))
    response = await channel.request("POST", profile_path("tafprofile", TAF7), non_billing_taf1)
    assert (response.status, error_of(response.body).field) == (422, "taf")
    assert gateway.store.objects() == before


async def test_fig34_update_billing_evaluation_profile(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), meter(pki), evaluation(pki, TAF2))
    channel = await open_channel(gateway, gwa)
    day = [{"day_id": 1, "switch_points": [{"start": 0, "stage": 2}, {"start": 420, "stage": 1}, {"start": 1260, "stage": 2}]}]
    body = profile_document("tafprofile", {"day_profiles": day, "special_days": [{"date": "2026-12-26", "day_id": 1}]})
    response = await channel.request("PUT", profile_object_path("tafprofile", TAF2), body, step="put-billing-evaluation-profile")
    assert response.status == 200, response.text
    [event] = await gwa.wait_event("billing-evaluation-profile-updated")
    assert event.details["changed"] == "day_profiles,special_days"
    await settled(gateway)
    [stored] = [o for o in gateway.store.objects("tafprofile", TAF2) if o.class_id == 28200]
    assert stored.attributes["special_days"] == [{"date": "2026-12-26", "day_id": 1}]
    assert stored.attributes["day_profiles"][0]["switch_points"][1] == {"start": 420, "stage": 1}
    assert_transcript(34, gateway, gwa)


async def test_running_billing_parameters_are_locked(gateway, gwa, pki):
    later = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=30)
    await provision(gateway, gwa, emt_profile(pki), meter(pki), evaluation(pki, TAF2),
                    evaluation(pki, "TAF2-LATER", valid_from=later))
    channel = await open_channel(gateway, gwa)
    before = gateway.store.objects()
    for changes, field in (({"taf": 1}, "taf"), ({"capture_period_s": 1800}, "capture_period_s"),
                           ({"billing_relevant": False}, "billing_relevant")):
        response = await channel.request("PUT", profile_object_path("tafprofile", TAF2), profile_document("tafprofile", changes))
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (409, "profile-locked", field), response.text
    assert gateway.store.objects() == before
    # a profile whose validity has not begun may still change them; derived value lists follow
    response = await channel.request("PUT", profile_object_path("tafprofile", "TAF2-LATER"),
                                     profile_document("tafprofile", {"capture_period_s": 1800}))
    assert response.status == 200, response.text
    periods = {o.obis: o.attributes["capture_period_s"] for o in gateway.store.objects("tafprofile", "TAF2-LATER")}
    assert periods == {"0000800003ff": 1800, "0100010801ff": 1800, "0100010802ff": 1800}
    await settled(gateway)


async def test_fig35_read_evaluation_profile(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), meter(pki), evaluation(pki, TAF2))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("GET", profile_object_path("tafprofile", TAF2), step="get-evaluation-profile")
    assert response.status == 200, response.text
    values = attributes(response.body)
    assert values["billing_relevant"].value is True and values["taf"].value == 2
    assert [s.value[0].value for s in values["tariff_stages"].value] == [1, 2]
    assert_transcript(35, gateway, gwa)


async def test_fig36_delete_billing_evaluation_profile(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), meter(pki), evaluation(pki, TAF2))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("DELETE", profile_object_path("tafprofile", TAF2), step="delete-billing-evaluation-profile")
    assert response.status == 204, response.text
    await gwa.wait_event("billing-evaluation-profile-deleted")
    await settled(gateway)
    assert gateway.store.objects("tafprofile", TAF2) == []
    assert_transcript(36, gateway, gwa)


async def test_fig37_create_non_billing_evaluation_profile(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), meter(pki))
    channel = await open_channel(gateway, gwa)
    body = profile_document("tafprofile", evaluation_profile_values(pki, TAF7, billing=False))
    response = await channel.request("POST", profile_path("tafprofile", TAF7), body, step="post-non-billing-evaluation-profile")
    assert response.status == 201, response.text
    [event] = await gwa.wait_event("non-billing-evaluation-profile-created")
    assert event.details["taf"] == "7"
    await settled(gateway)
    assert not gwa.events("first-readout")
    stored = {(o.class_id, o.obis) for o in gateway.store.objects("tafprofile", TAF7)}
    assert stored == {(28200, "0000800003ff"), (28403, "0100010800ff"), (28403, "0100020800ff")}
    assert_transcript(37, gateway, gwa)


async def test_fig38_delete_non_billing_evaluation_profile(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), meter(pki), evaluation(pki, TAF7, billing=False))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("DELETE", profile_object_path("tafprofile", TAF7), step="delete-non-billing-evaluation-profile")
    assert response.status == 204, response.text
    await gwa.wait_event("non-billing-evaluation-profile-deleted")
    await settled(gateway)
    assert ("tafprofile", TAF7) not in gateway.store.ldevs()
    assert_transcript(38, gateway, gwa)


async def test_referenced_profiles_cannot_be_deleted(gateway, gwa, pki):
    emt, meter_id = pki.identities.emt, pki.identities.meter
    await provision(gateway, gwa, emt_profile(pki), meter(pki), evaluation(pki, TAF2),
                    create("clsprofile", "CLS-1", cls_proxy_profile_values(pki, "CLS-1")))
    channel = await open_channel(gateway, gwa)
    before = gateway.store.objects()
    for kind, ldev, users in (("meter", meter_id, f"tafprofile/{TAF2}"), ("commprofile", emt, "clsprofile/CLS-1")):
        response = await channel.request("DELETE", profile_path(kind, ldev))
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (409, "profile-in-use", "ldev"), response.text
        assert users in error.message
    assert gateway.store.objects() == before
    for kind, ldev in (("tafprofile", TAF2), ("clsprofile", "CLS-1"), ("meter", meter_id), ("commprofile", emt)):
        assert (await channel.request("DELETE", profile_path(kind, ldev))).status == 204
    assert gateway.store.objects() == []
    await settled(gateway)


async def test_unknown_method_of_evaluation_profile_is_refused(gateway, gwa, pki):
    # terminate (1) and readout (2) run now (tests/e2e/test_data_transfer.py); no method 3 exists
    await provision(gateway, gwa, emt_profile(pki), meter(pki), evaluation(pki, TAF2))
    channel = await open_channel(gateway, gwa)
    before = gateway.store.objects()
    response = await channel.request("POST", profile_object_path("tafprofile", TAF2) + "/methods/3", b"")
    error = error_of(response.body)
    assert response.status == 404 and error.code
    assert gateway.store.objects() == before
