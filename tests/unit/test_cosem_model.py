from datetime import datetime, timezone

import pytest

from smgw_emu.core.cosem.errors import (
    AccessDenied,
    BadAddress,
    BadObis,
    CosemTypeError,
    DuplicateLdev,
    DuplicateObject,
    ReadOnlyAttribute,
    UnknownAttribute,
    UnknownClass,
    UnknownLdev,
    UnknownMethod,
    UnknownObject,
)
from smgw_emu.core.cosem.model import (
    CosemModel,
    CosemObject,
    LogicalDevice,
    ObisCode,
    ObjectAddress,
    parse_qualified_name,
)
from smgw_emu.core.cosem.selective import IndexSelector
from smgw_emu.core.cosem.types import DlmsValue

METER = LogicalDevice("meter", "1XXX0012345678")
OBIS = ObisCode.parse("1-0:1.8.0*255")


@pytest.fixture
def model():
    m = CosemModel()
    m.add_ldev(METER)
    return m


# OBIS ----------------------------------------------------------------------------------------


def test_obis_parse_and_format():
    assert OBIS == ObisCode(1, 0, 1, 8, 0, 255)
    assert ObisCode.parse("0100010800FF") == OBIS
    assert ObisCode.parse("1-0:1.8.0") == OBIS  # F defaults to 255
    assert ObisCode.parse("1-0:1.8.0.255") == OBIS
    assert OBIS.hex == "0100010800ff"
    assert str(OBIS) == "1-0:1.8.0*255"
    assert ObisCode.from_bytes(OBIS.to_bytes()) == OBIS


@pytest.mark.parametrize("text", ["", "0100010800f", "01000108ffgg", "1-0:1.8.256*255", "1.8.0", 42])
def test_bad_obis(text):
    with pytest.raises(BadObis) as info:
        ObisCode.parse(text)
    assert info.value.code == "bad-obis"


def test_bad_obis_groups_and_bytes():
    with pytest.raises(BadObis):
        ObisCode(1, 0, 1, 8, 0, 256)
    with pytest.raises(BadObis):
        ObisCode.from_bytes(b"\x01\x02")


def test_qualified_names():
    assert METER.qualified_name(OBIS) == "0100010800ff.1XXX0012345678.sm"
    assert parse_qualified_name("0100010801ff.taf1.sm") == (ObisCode(1, 0, 1, 8, 1, 255), "taf1")
    with pytest.raises(BadAddress):
        parse_qualified_name("0100010801ff.taf1")
    with pytest.raises(BadObis):
        parse_qualified_name("01000108.taf1.sm")


# Addresses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,level",
    [
        ("/smgw/cosem", "root"),
        ("/smgw/cosem/", "root"),
        ("/smgw/cosem/meter", "kind"),
        ("/smgw/cosem/meter/1XXX0012345678", "ldev"),
        ("/smgw/cosem/meter/1XXX0012345678/3-0100010800ff", "object"),
        ("/smgw/cosem/meter/1XXX0012345678/3-0100010800ff/attributes/2", "attribute"),
        ("/smgw/cosem/meter/1XXX0012345678/3-0100010800ff/methods/1/", "method"),
    ],
)
def test_address_levels_round_trip(path, level):
    address = ObjectAddress.parse(path)
    assert address.level == level
    assert address.path == path.rstrip("/")
    assert ObjectAddress.parse(address.path) == address


def test_address_fields():
    a = ObjectAddress.parse("/smgw/cosem/meter/1XXX0012345678/28200-0100010800FF/attributes/12")
    assert (a.kind, a.ldev, a.class_id, a.obis, a.member, a.index) == (
        "meter", "1XXX0012345678", 28200, OBIS, "attributes", 12,
    )
    assert a.logical_device == METER


@pytest.mark.parametrize(
    "path",
    [
        "/smgw",
        "/smgw/cosemx",
        "/other/cosem/meter",
        "/smgw/cosem//x",
        "/smgw/cosem/Meter",
        "/smgw/cosem/meter/bad.id",
        "/smgw/cosem/meter/m1/3_0100010800ff",
        "/smgw/cosem/meter/m1/70000-0100010800ff",
        "/smgw/cosem/meter/m1/3-0100010800ff/attributes",
        "/smgw/cosem/meter/m1/3-0100010800ff/attributes/0",
        "/smgw/cosem/meter/m1/3-0100010800ff/attributes/x",
        "/smgw/cosem/meter/m1/3-0100010800ff/values/2",
        "/smgw/cosem/meter/m1/3-0100010800ff/attributes/2/more",
        "/smgw/cosem/meter/m1/3-0100010800ff/attributes/2?q.count=1",
    ],
)
def test_bad_addresses(path):
    with pytest.raises(BadAddress) as info:
        ObjectAddress.parse(path)
    assert info.value.code == "bad-address"


def test_bad_ldev_names():
    with pytest.raises(BadAddress):
        LogicalDevice("Meter", "x")
    with pytest.raises(BadAddress):
        LogicalDevice("meter", "a/b")


# Objects -------------------------------------------------------------------------------------


def comm_profile(model, **values):
    ldev = model.add_ldev(LogicalDevice("gateway", "EXXX0012345678"))
    return model.create_object(ldev, 28100, ObisCode.parse("0-0:128.0.0*1"), values)


def test_object_defaults_and_logical_name(model):
    obj = model.create_object(METER, 3, OBIS)
    assert obj.get(1, "consumer") == DlmsValue("octet-string", OBIS.to_bytes())
    assert obj.get(2, "gwa").is_null
    assert obj.values[3] == DlmsValue("structure", [DlmsValue("integer", 0), DlmsValue("enum", 0)])


def test_set_checks_access_then_type(model):
    obj = comm_profile(model)
    host = obj.cosem_class.attribute_named("host").index
    obj.set(host, DlmsValue("visible-string", "gwa.example"), "gwa")
    assert obj.get(host, "gwa").value == "gwa.example"
    with pytest.raises(AccessDenied) as info:
        obj.set(host, DlmsValue("visible-string", "evil"), "consumer")
    assert info.value.field == "host"
    with pytest.raises(AccessDenied):
        obj.get(host, "emt")
    with pytest.raises(CosemTypeError) as info:
        obj.set(host, DlmsValue("utf8-string", "x"), "gwa")
    assert info.value.expected == "visible-string" and info.value.field == "host"
    role = obj.cosem_class.attribute_named("partner_role").index
    with pytest.raises(CosemTypeError):
        obj.set(role, DlmsValue("enum", 9), "gwa")


def test_read_only_attributes_refuse_writes(model):
    obj = model.create_object(METER, 3, OBIS)
    with pytest.raises(ReadOnlyAttribute) as info:
        obj.set(2, DlmsValue("unsigned", 1), "gwa")
    assert info.value.code == "read-only-attribute"
    with pytest.raises(ReadOnlyAttribute):
        obj.set(1, DlmsValue("octet-string", b"123456"), "gwa")
    with pytest.raises(ReadOnlyAttribute):
        obj.store(1, DlmsValue("octet-string", b"123456"))
    obj.store(2, DlmsValue("double-long-unsigned", 42))  # the gateway itself may
    assert obj.get(2, "consumer").value == 42


def test_unknown_attribute_and_method(model):
    obj = model.create_object(METER, 3, OBIS)
    with pytest.raises(UnknownAttribute):
        obj.get(9, "gwa")
    with pytest.raises(UnknownAttribute):
        obj.set(9, DlmsValue("unsigned", 1), "gwa")
    with pytest.raises(UnknownMethod):
        obj.check_method(5, "gwa")


def test_method_checks(model):
    obj = model.create_object(METER, 3, OBIS)
    assert obj.check_method(1, "gwa").name == "reset"
    obj.check_method(1, "gwa", DlmsValue("integer", 0))
    with pytest.raises(AccessDenied):
        obj.check_method(1, "consumer")
    with pytest.raises(CosemTypeError):
        obj.check_method(1, "gwa", DlmsValue("visible-string", "x"))


def test_initial_values_are_checked(model):
    cls = model.definitions.cls(28500)
    obis = ObisCode.parse("0-0:128.1.0*1")
    hks = cls.attribute_named("hks").index
    assert CosemObject(cls, obis, {hks: DlmsValue("unsigned", 5)}).peek(hks).value == 5
    with pytest.raises(CosemTypeError) as info:
        CosemObject(cls, obis, {hks: DlmsValue("unsigned", 2)})
    assert info.value.field == "hks"
    with pytest.raises(CosemTypeError):
        CosemObject(cls, obis, {1: DlmsValue("octet-string", b"\x00" * 6)})
    CosemObject(cls, obis, {1: DlmsValue("octet-string", obis.to_bytes())})
    with pytest.raises(UnknownAttribute):
        CosemObject(cls, obis, {42: DlmsValue("unsigned", 1)})


def test_access_overrides_and_readable(model):
    log = model.create_object(METER, 28403, ObisCode.parse("0-0:99.98.1*255"), access_overrides={2: {"consumer": "r"}})
    other = model.create_object(METER, 28403, ObisCode.parse("0-0:99.98.0*255"))
    assert log.get(2, "consumer").value == ()
    with pytest.raises(AccessDenied):
        other.get(2, "consumer")
    assert [a.name for a, _ in other.readable("consumer")] == ["logical_name"]
    assert len(other.readable(None)) == len(other.cosem_class.attributes)
    with pytest.raises(ValueError):
        CosemObject(model.definitions.cls(3), OBIS, access_overrides={2: {"nobody": "r"}})


def test_selective_get(model):
    log = model.create_object(METER, 28403, ObisCode.parse("0-0:99.98.0*255"))
    rows = [
        DlmsValue("structure", [DlmsValue("date-time", datetime(2026, 1, d, tzinfo=timezone.utc)), DlmsValue("unsigned", d)])
        for d in (1, 2, 3)
    ]
    log.store(2, DlmsValue("array", rows))
    assert log.get(2, "gwa", IndexSelector(1, 1)).value == (rows[1],)


# Registry ------------------------------------------------------------------------------------


def test_registry_ldevs(model):
    model.add_ldev(LogicalDevice("gateway", "EXXX0012345678"))
    assert model.ldevs() == [LogicalDevice("gateway", "EXXX0012345678"), METER]
    assert model.ldevs("meter") == [METER]
    assert model.kinds() == ["gateway", "meter"]
    assert model.ldev_by_id("1XXX0012345678") == METER
    with pytest.raises(DuplicateLdev):
        model.add_ldev(METER)
    with pytest.raises(DuplicateLdev):
        model.add_ldev(LogicalDevice("log", METER.id))  # ids are unique across kinds
    with pytest.raises(UnknownLdev):
        model.ldev("log", METER.id)
    with pytest.raises(UnknownLdev):
        model.ldev_by_id("nope")


def test_registry_objects(model):
    reg = model.create_object(METER, 3, OBIS)
    clock = model.create_object(METER, 8, ObisCode.parse("0-0:1.0.0*255"))
    assert model.objects(METER) == [reg, clock]
    assert model.object(METER, 3, OBIS) is reg
    with pytest.raises(UnknownObject):
        model.object(METER, 1, OBIS)  # right OBIS, wrong class
    with pytest.raises(DuplicateObject):
        model.create_object(METER, 1, OBIS)
    with pytest.raises(UnknownClass):
        model.create_object(METER, 4711, ObisCode.parse("0-0:1.0.1*255"))
    with pytest.raises(UnknownLdev):
        model.create_object(LogicalDevice("meter", "ghost"), 3, OBIS)
    assert model.find_qualified("0100010800ff.1XXX0012345678.sm") == (METER, reg)
    with pytest.raises(UnknownObject):
        model.find_qualified("0100010801ff.1XXX0012345678.sm")
    assert list(model.iter_objects()) == [(METER, reg), (METER, clock)]
    assert model.remove_object(METER, 3, OBIS) is reg
    with pytest.raises(UnknownObject):
        model.remove_object(METER, 3, OBIS)
    assert model.remove_ldev("meter", METER.id) == [clock]
    assert model.ldevs() == []
    with pytest.raises(UnknownLdev):
        model.objects(METER)


def test_resolve(model):
    reg = model.create_object(METER, 3, OBIS)
    base = "/smgw/cosem/meter/1XXX0012345678/3-0100010800ff"
    assert model.resolve("/smgw/cosem").ldev is None
    assert model.resolve("/smgw/cosem/anything").ldev is None
    assert model.resolve("/smgw/cosem/meter/1XXX0012345678").ldev == METER
    assert model.resolve(base).obj is reg
    assert model.resolve(base + "/attributes/2").attribute.name == "value"
    assert model.resolve(base + "/methods/1").method.name == "reset"
    with pytest.raises(UnknownLdev):
        model.resolve("/smgw/cosem/meter/other")
    with pytest.raises(UnknownObject):
        model.resolve("/smgw/cosem/meter/1XXX0012345678/3-0100010801ff")
    with pytest.raises(UnknownAttribute):
        model.resolve(base + "/attributes/4")
    with pytest.raises(UnknownMethod):
        model.resolve(base + "/methods/2")


def test_create_and_remove_as_a_role(model):
    cls = model.definitions.class_named("MeterProfile")
    obis = ObisCode.parse("0-0:128.2.0*1")
    meter_id = {cls.attribute_named("meter_id").index: DlmsValue("visible-string", "1XXX0012345678")}
    pairing = {cls.attribute_named("pairing_state").index: DlmsValue("enum", 2)}
    with pytest.raises(AccessDenied):
        model.create_object(METER, cls.class_id, obis, meter_id, role="emt")
    with pytest.raises(ReadOnlyAttribute):
        model.create_object(METER, cls.class_id, obis, pairing, role="gwa")
    with pytest.raises(AccessDenied):
        model.create_object(METER, 3, OBIS, role="gwa")  # standard classes are not created from outside
    assert model.objects(METER) == []
    obj = model.create_object(METER, cls.class_id, obis, meter_id, role="gwa")
    with pytest.raises(AccessDenied):
        model.remove_object(METER, cls.class_id, obis, role="consumer")
    assert model.remove_object(METER, cls.class_id, obis, role="gwa") is obj
