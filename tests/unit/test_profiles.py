"""The sans-IO profile semantics: plans are computed against the model without changing it."""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509

from smgw_emu.core import cms
from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.core.cosem import CosemModel, DlmsValue, LogicalDevice, ObisCode, xmlcodec
from smgw_emu.core.profiles import (
    PROFILE_KINDS,
    ProfileChange,
    ProfileContext,
    ProfileInUse,
    ProfileLocked,
    Reading,
    StateConflict,
    meter_key_banks,
    plan_create,
    plan_delete,
    plan_invoke,
    plan_update,
)
from smgw_emu.reference.cosem_client import (
    communication_profile_values,
    evaluation_profile_values,
    meter_profile_values,
    profile_document,
    seal_for_gateway,
)

NOW = _dt.datetime.now(_dt.timezone.utc)


@pytest.fixture
def ctx(pki) -> ProfileContext:
    bundle = x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes())
    return ProfileContext(
        now=NOW, trust=CertificateTrust([pki.cert("root-ca")], bundle),
        open_container=lambda der: cms.open_sealed(der, pki.cert("gateway-enc"), pki.key("gateway-enc"),
                                                   [pki.cert("gwa-sig")]).content,
        new_key=lambda: b"\x11" * 16,
        latest_reading=lambda meter, obis: Reading("2026-11-25T08:00:00Z", "42", "00") if obis == "0100010800ff" else None,
        locked_ldevs=frozenset({"EXXX0012345678"}),
    )


def apply(model: CosemModel, change: ProfileChange) -> None:
    """What the application layer does after the commit."""
    if change.remove_ldev:
        model.remove_ldev(change.ldev.kind, change.ldev.id)
        return
    if change.new_ldev:
        model.add_ldev(change.ldev)
    for obj in change.remove:
        model.remove_object(change.ldev, obj.class_id, obj.obis)
    for obj in change.put:
        model.replace_object(change.ldev, obj)


def create(model, ctx, kind, ldev_id, values) -> ProfileChange:
    change = plan_create(model, kind, ldev_id, xmlcodec.object_from_xml(profile_document(kind, values)), ctx)
    apply(model, change)
    return change


@pytest.fixture
def model(pki, ctx) -> CosemModel:
    model = CosemModel()
    create(model, ctx, "commprofile", pki.identities.emt, communication_profile_values(pki))
    create(model, ctx, "meter", pki.identities.meter,
           meter_profile_values(pki, key_container=seal_for_gateway(pki, b"\x22" * 16)))
    return model


def test_plans_do_not_change_the_model(pki, ctx, model):
    before = [(l, o.obis, dict(o.values)) for l, o in model.iter_objects()]
    doc = xmlcodec.object_from_xml(profile_document("tafprofile", evaluation_profile_values(pki, "T1")))
    change = plan_create(model, "tafprofile", "T1", doc, ctx)
    assert change.new_ldev and [e.type for e in change.events] == ["billing-evaluation-profile-created", "first-readout"]
    assert [(l, o.obis, dict(o.values)) for l, o in model.iter_objects()] == before


def test_create_meter_keeps_the_key_out_of_events(pki, ctx, model):
    change = create(CosemModel(), ctx, "meter", pki.identities.meter,
                    meter_profile_values(pki, key_container=seal_for_gateway(pki, b"\x22" * 16)))
    [write] = change.key_writes
    assert write.bank == meter_key_banks(pki.identities.meter)[0] and write.material["key"] == "22" * 16
    assert "22" * 16 not in repr(change.details) + repr(change.events) + change.message


def test_first_readout_status(pki, ctx, model):
    values = evaluation_profile_values(pki, "T1", registers=[ObisCode(1, 0, 1, 8, 0).to_bytes(), ObisCode(1, 0, 2, 8, 0).to_bytes()])
    change = create(model, ctx, "tafprofile", "T1", values)
    readout = change.events[1]
    assert readout.details["status"] == "partial"
    assert readout.details[f"{pki.identities.meter}/0100010800ff"].startswith("42 ")
    only_import = create(model, ctx, "tafprofile", "T2", evaluation_profile_values(pki, "T2"))
    assert only_import.events[1].details["status"] == "complete"


def test_derived_value_lists_follow_the_tariff_stages(pki, ctx, model):
    later = NOW + _dt.timedelta(days=1)
    create(model, ctx, "tafprofile", "T1", evaluation_profile_values(pki, "T1", valid_from=later))
    ldev = model.ldev("tafprofile", "T1")
    profile = model.object(ldev, 28200, PROFILE_KINDS["tafprofile"].obis)
    spec = profile.attribute(11).spec
    stages = spec.build([{"stage": 1, "register": ObisCode(1, 0, 1, 8, 1).to_bytes(), "label": "HT"},
                         {"stage": 2, "register": ObisCode(1, 0, 1, 8, 3).to_bytes(), "label": "NT"}])
    change = plan_update(model, ldev, profile, {11: stages}, ctx)
    assert [o.obis for o in change.remove] == [ObisCode(1, 0, 1, 8, 2)]
    assert {o.obis for o in change.put} == {profile.obis, ObisCode(1, 0, 1, 8, 3)}
    apply(model, change)
    assert [o.obis.hex for o in model.objects(ldev)] == ["0000800003ff", "0100010801ff", "0100010803ff"]


def test_billing_lock_and_references(pki, ctx, model):
    create(model, ctx, "tafprofile", "T1", evaluation_profile_values(pki, "T1"))
    ldev = model.ldev("tafprofile", "T1")
    profile = model.object(ldev, 28200, PROFILE_KINDS["tafprofile"].obis)
    with pytest.raises(ProfileLocked) as info:
        plan_update(model, ldev, profile, {4: DlmsValue("unsigned", 1)}, ctx)
    assert info.value.field == "taf"
    with pytest.raises(ProfileInUse):
        plan_delete(model, model.ldev("meter", pki.identities.meter), None, ctx)
    apply(model, plan_delete(model, ldev, profile, ctx))
    change = plan_delete(model, model.ldev("meter", pki.identities.meter), None, ctx)
    assert change.remove_ldev and set(change.key_deletes) == set(meter_key_banks(pki.identities.meter))


def test_crypto_reset_with_an_existing_pairing(pki, ctx, model):
    """Fig. 31 needs a paired meter, which only the LMN side makes: set the state directly."""
    ldev = model.ldev("meter", pki.identities.meter)
    profile = model.object(ldev, 28300, PROFILE_KINDS["meter"].obis)
    paired = profile.copy()
    paired.store(7, DlmsValue("enum", 2))
    model.replace_object(ldev, paired)
    change = plan_invoke(model, ldev, paired, 2, None, ctx)
    assert change.events[0].details["mode"] == "with-pairing" and change.events[0].details["key-source"] == "gateway"
    assert change.key_writes[0].material["key"] == "11" * 16
    with pytest.raises(StateConflict):  # pair on a paired meter
        plan_invoke(model, ldev, paired, 1, None, ctx)
    assert change.target.peek(7) == DlmsValue("enum", 1)
    assert paired.peek(7) == DlmsValue("enum", 2)  # the model's object is untouched


def test_locked_ldevs(pki, ctx, model):
    own = model.add_ldev(LogicalDevice("gateway", "EXXX0012345678"))
    data = model.add_object(own, model.build_object(1, ObisCode(0, 0, 96, 1, 0)))
    with pytest.raises(ProfileLocked):
        plan_update(model, own, data, {2: DlmsValue("unsigned", 1)}, ctx)
