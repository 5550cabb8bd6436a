"""The sans-IO meter change (fig. 21): checks and plan, against the model, without changing it."""

from __future__ import annotations

import pytest

from smgw_emu.core.cosem import DlmsValue
from smgw_emu.core.meterchange import FinalReading, check_meter_change, plan_meter_change
from smgw_emu.core.profiles import (
    PROFILE_KINDS,
    ProfileError,
    ProfileLocked,
    StateConflict,
    UnknownReference,
    meter_key_banks,
    plan_update,
)
from smgw_emu.reference.cosem_client import evaluation_profile_values, meter_profile_values, seal_for_gateway

from .test_profiles import apply, create, ctx, model  # noqa: F401  (fixtures)

B = "1XXX0000000002"
FINAL = FinalReading("2026-11-25T10:00:00Z", {"0100010800ff": ("5555500.0", "0000000000000104")})


def set_paired(model, meter_id: str) -> None:
    ldev = model.ldev("meter", meter_id)
    profile = model.object(ldev, 28300, PROFILE_KINDS["meter"].obis).copy()
    profile.store(7, DlmsValue("enum", 2))
    model.replace_object(ldev, profile)


@pytest.fixture
def two_meters(pki, ctx, model):  # noqa: F811
    create(model, ctx, "meter", B, meter_profile_values(pki, meter_id=B,
                                                        key_container=seal_for_gateway(pki, b"\x33" * 16)))
    create(model, ctx, "tafprofile", "T1", evaluation_profile_values(pki, "T1"))
    create(model, ctx, "tafprofile", "T7", evaluation_profile_values(pki, "T7", billing=False))
    set_paired(model, pki.identities.meter)
    set_paired(model, B)
    return model


def arg(text: str) -> DlmsValue:
    return DlmsValue("visible-string", text)


def test_plan_moves_the_profiles_and_deletes_the_old_meter(pki, ctx, two_meters):  # noqa: F811
    model, a = two_meters, pki.identities.meter
    old = model.ldev("meter", a)
    before = [(l, o.obis, dict(o.values)) for l, o in model.iter_objects()]
    changes = plan_meter_change(model, old, arg(B), FINAL, ctx)
    assert [(c.action, c.ldev.id, c.log_event) for c in changes] == [
        ("invoke", a, "meter-changed"),
        ("update", "T1", "billing-evaluation-profile-updated"),
        ("update", "T7", "non-billing-evaluation-profile-updated"),
        ("delete", a, "meter-profile-deleted"),
    ]
    changed = changes[0].events[0].details
    assert changed["0100010800ff"] == "5555500.0 status=0000000000000104" and changed["new-meter"] == B
    assert changes[-1].remove_ldev and set(changes[-1].key_deletes) == set(meter_key_banks(a))
    assert [(l, o.obis, dict(o.values)) for l, o in model.iter_objects()] == before  # plans change nothing
    for change in changes:
        apply(model, change)
    t1 = model.object(model.ldev("tafprofile", "T1"), 28200, PROFILE_KINDS["tafprofile"].obis)
    meters = t1.cosem_class.attribute_named("meters")
    assert meters.spec.to_python(t1.peek(meters.index)) == [B]
    assert [l.id for l in model.ldevs("meter")] == [B]


def test_the_lock_still_holds_for_an_ordinary_update(pki, ctx, two_meters):  # noqa: F811
    ldev = two_meters.ldev("tafprofile", "T1")
    profile = two_meters.object(ldev, 28200, PROFILE_KINDS["tafprofile"].obis)
    index = profile.cosem_class.attribute_named("meters").index
    with pytest.raises(ProfileLocked):
        plan_update(two_meters, ldev, profile, {index: DlmsValue("array", [arg(B)])}, ctx)


@pytest.mark.parametrize("argument, error, field", [
    (arg("1XXX0000000099"), UnknownReference, "argument"),
    (None, ProfileError, "argument"),
    (DlmsValue.null(), ProfileError, "argument"),
])
def test_bad_arguments(pki, ctx, two_meters, argument, error, field):  # noqa: F811
    with pytest.raises(error) as info:
        check_meter_change(two_meters, two_meters.ldev("meter", pki.identities.meter), argument, ctx)
    assert info.value.field == field


def test_same_meter_and_unpaired_meters_are_refused(pki, ctx, two_meters):  # noqa: F811
    a = pki.identities.meter
    with pytest.raises(ProfileError, match="cannot replace itself"):
        check_meter_change(two_meters, two_meters.ldev("meter", a), arg(a), ctx)
    create(two_meters, ctx, "meter", "1XXX0000000003", meter_profile_values(pki, meter_id="1XXX0000000003"))
    with pytest.raises(StateConflict):
        check_meter_change(two_meters, two_meters.ldev("meter", a), arg("1XXX0000000003"), ctx)


def test_a_new_meter_of_another_medium_does_not_fit(pki, ctx, two_meters):  # noqa: F811
    create(two_meters, ctx, "meter", "7XXX0000000004",
           meter_profile_values(pki, meter_id="7XXX0000000004", meter_type="gas"))
    set_paired(two_meters, "7XXX0000000004")
    with pytest.raises(UnknownReference, match="tafprofile/T1 cannot move"):
        check_meter_change(two_meters, two_meters.ldev("meter", pki.identities.meter), arg("7XXX0000000004"), ctx)
