from datetime import datetime, timezone

import pytest

from smgw_emu.core.cosem.definitions import (
    DefinitionError,
    NullableSpec,
    default_definitions,
    load_definitions,
)
from smgw_emu.core.cosem.errors import CosemTypeError, UnknownAttribute, UnknownClass, UnknownMethod
from smgw_emu.core.cosem.types import DlmsValue

DEFS = default_definitions()

PROFILE_FIELDS = {
    "CommunicationProfile": [
        "partner_id", "partner_role", "host", "port", "admin_service_url", "info_report_url",
        "tls_certificate", "signature_certificate", "encryption_certificate", "idle_timeout_s",
        "retry_interval_s", "max_retries",
    ],
    "MeterProfile": [
        "meter_id", "meter_type", "capture_period_s", "encrypted_key", "meter_certificate",
        "pairing_state",
    ],
    "EvaluationProfile": [
        "profile_id", "billing_relevant", "taf", "tariff_id", "meters", "registers",
        "recipient_emt", "billing_period", "capture_period_s", "tariff_stages", "day_profiles",
        "valid_from", "valid_until",
    ],
    "ClsProxyProfile": [
        "profile_id", "cls_device_id", "emt_id", "hks", "max_bandwidth_kbps", "max_session_s",
    ],
    "Log": ["buffer"],
}


def test_packaged_definitions_hold_the_needed_classes():
    assert {1, 3, 7, 8, 28403} <= set(DEFS.classes)
    assert DEFS.roles == ("gwa", "emt", "consumer", "service")
    for name, fields in PROFILE_FIELDS.items():
        cls = DEFS.class_named(name)
        assert 28000 <= cls.class_id < 29000
        assert cls.attribute(1).name == "logical_name"
        for f in fields:
            cls.attribute_named(f)
    assert DEFS.cls(28403).name == "Log"


def test_attribute_specs_and_access():
    comm = DEFS.class_named("CommunicationProfile")
    assert comm.attribute(1).read_only
    assert comm.attribute_named("host").can_write("gwa")
    assert not comm.attribute_named("host").can_read("consumer")
    key = DEFS.class_named("MeterProfile").attribute_named("encrypted_key")
    assert key.can_write("gwa") and not key.can_read("gwa")
    with pytest.raises(ValueError):
        key.can_read("nobody")
    evaluation = DEFS.class_named("EvaluationProfile")
    assert isinstance(evaluation.attribute_named("valid_until").spec, NullableSpec)
    assert evaluation.method(1).can_invoke("gwa") and not evaluation.method(1).can_invoke("emt")


def test_lookup_errors():
    with pytest.raises(UnknownClass):
        DEFS.cls(4711)
    with pytest.raises(UnknownClass):
        DEFS.class_named("Nope")
    with pytest.raises(UnknownAttribute) as info:
        DEFS.cls(3).attribute(99)
    assert info.value.code == "unknown-attribute"
    with pytest.raises(UnknownMethod):
        DEFS.cls(3).method(9)


def test_specs_check_shapes_ranges_and_enums():
    hks = DEFS.types["hks"]
    hks.check(DlmsValue("unsigned", 4))
    with pytest.raises(CosemTypeError, match="hks"):
        hks.check(DlmsValue("unsigned", 6), "hks")
    meter_type = DEFS.types["meter_type"]
    assert meter_type.build("gas") == DlmsValue("enum", 7)
    assert meter_type.to_python(DlmsValue("enum", 1)) == "electricity"
    with pytest.raises(CosemTypeError):
        meter_type.check(DlmsValue("enum", 2))
    with pytest.raises(CosemTypeError):
        meter_type.build("steam")

    stages = DEFS.spec("array<tariff_stage>")
    good = stages.build([{"stage": 1, "register": bytes.fromhex("0100010801ff"), "label": "HT"}])
    assert stages.to_python(good) == [{"stage": 1, "register": bytes.fromhex("0100010801ff"), "label": "HT"}]
    bad = DlmsValue("array", [DlmsValue("structure", [DlmsValue("unsigned", 1), DlmsValue("unsigned", 2), DlmsValue("visible-string", "")])])
    with pytest.raises(CosemTypeError) as info:
        stages.check(bad, "tariff_stages")
    assert info.value.field == "tariff_stages[0].register"
    with pytest.raises(CosemTypeError):
        stages.build([{"stage": 1}])


def test_defaults_match_their_specs():
    for cls in DEFS.classes.values():
        for attr in cls.attributes:
            attr.spec.check(attr.spec.default(), attr.name)
    assert DEFS.spec("date-time?").default().is_null
    assert DEFS.spec("any").build(DlmsValue("unsigned", 1)) == DlmsValue("unsigned", 1)
    entry = DEFS.types["log_entry"].default()
    assert entry.items[0].value == datetime(1970, 1, 1, tzinfo=timezone.utc)


MINIMAL = """
roles = ["gwa"]
[[classes]]
class_id = 1
name = "Data"
attributes = [{ index = 1, name = "logical_name", type = "octet-string" }]
"""


def test_minimal_text_loads():
    defs = load_definitions(text=MINIMAL)
    assert defs.cls(1).attribute(1).access == {"gwa": ""}


@pytest.mark.parametrize(
    "broken,match",
    [
        (MINIMAL.replace('type = "octet-string"', 'type = "octet-strin"'), "unknown type"),
        (MINIMAL.replace("class_id = 1", "class_id = 1\nacces = {}"), "unknown keys"),
        (MINIMAL.replace('type = "octet-string"', 'type = "octet-string", access = { emt = "r" }'), "unknown keys"),
        (MINIMAL.replace('type = "octet-string"', 'type = "octet-string", access = { gwa = "x" }'), "access must be"),
        (MINIMAL.replace('name = "logical_name"', 'name = "ln"'), "logical_name"),
        (MINIMAL + MINIMAL.replace('roles = ["gwa"]', ""), "defined twice"),
        (MINIMAL + "[types.a]\nbase='structure'\nfields=[{name='x', type='a'}]\n", "recursive"),
        (MINIMAL + "[types.b]\nbase='string'\n", "base must be"),
        (MINIMAL + "[types.unsigned]\nbase='unsigned'\n", "not a DLMS type name"),
        ("roles = [", "not valid TOML"),
        (
            MINIMAL.replace(
                'type = "octet-string" }',
                'type = "octet-string" },\n  { index = 1, name = "x", type = "unsigned" }',
            ),
            "duplicate attribute index",
        ),
    ],
)
def test_broken_definitions_are_refused(broken, match):
    with pytest.raises(DefinitionError, match=match):
        load_definitions(text=broken)


def test_load_from_path(tmp_path):
    path = tmp_path / "defs.toml"
    path.write_text(MINIMAL)
    assert load_definitions(path).cls(1).name == "Data"
