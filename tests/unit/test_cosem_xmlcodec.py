import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from smgw_emu.core.cosem import xmlcodec as xc
from smgw_emu.core.cosem.errors import BadAddress, BadObis, CosemTypeError, CosemXmlError
from smgw_emu.core.cosem.model import CosemModel, LogicalDevice, ObisCode
from smgw_emu.core.cosem.types import INTEGER_RANGES, DlmsValue
from smgw_emu.core.xmlsafe import MalformedXmlError, UnsafeXmlError

NS = xc.NAMESPACE

# Strategies ----------------------------------------------------------------------------------

offsets = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
xml_text = st.text(
    st.one_of(
        st.characters(min_codepoint=0x20, blacklist_categories=("Cs",), blacklist_characters="\ufffe\uffff"),
        st.sampled_from("\t\n\r"),
    ),
    max_size=20,
)
scalars = st.one_of(
    st.just(DlmsValue.null()),
    st.booleans().map(lambda v: DlmsValue("boolean", v)),
    st.text("01", max_size=16).map(lambda v: DlmsValue("bit-string", v)),
    *[
        st.integers(low, high).map(lambda v, t=t: DlmsValue(t, v))
        for t, (low, high) in INTEGER_RANGES.items()
    ],
    st.binary(max_size=24).map(lambda v: DlmsValue("octet-string", v)),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(
        lambda v: DlmsValue("visible-string", v)
    ),
    xml_text.map(lambda v: DlmsValue("utf8-string", v)),
    st.floats(width=32).map(lambda v: DlmsValue("float32", v)),
    st.floats().map(lambda v: DlmsValue("float64", v)),
    st.datetimes(timezones=offsets).map(lambda v: DlmsValue("date-time", v)),
)


def homogeneous_array(items):
    return DlmsValue("array", [i for i in items if i.type_name == items[0].type_name] if items else [])


values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda xs: DlmsValue("structure", xs)),
        st.lists(children, max_size=4).map(homogeneous_array),
    ),
    max_leaves=20,
)


# Values --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(values)
def test_every_value_round_trips(value):
    decoded = xc.value_from_xml(xc.value_to_xml(value))
    assert decoded.same_as(value)


@settings(max_examples=100, deadline=None)
@given(values)
def test_attribute_bodies_round_trip(value):
    assert xc.attribute_from_xml(xc.attribute_to_xml(7, "x", value))[1].same_as(value)


def test_value_encoding_looks_like_the_vendor_format():
    value = DlmsValue(
        "structure",
        [
            DlmsValue("double-long-unsigned", 42),
            DlmsValue("octet-string", bytes.fromhex("0100010800ff")),
            DlmsValue("array", [DlmsValue("visible-string", "a b")]),
            DlmsValue("date-time", datetime(2026, 11, 25, 12, tzinfo=timezone.utc)),
            DlmsValue("float64", -math.inf),
            DlmsValue("null-data"),
        ],
    )
    element = xc.encode_value(value)
    assert element.nsmap == {None: NS}
    xml = etree.tostring(element).decode()
    assert xml == (
        f'<structure xmlns="{NS}"><double-long-unsigned>42</double-long-unsigned>'
        "<octet-string>0100010800ff</octet-string><array><visible-string>a b</visible-string></array>"
        "<date-time>2026-11-25T12:00:00+00:00</date-time><float64>-INF</float64><null-data/></structure>"
    )
    assert xc.decode_value(element) == value


def test_decoding_is_lenient_on_whitespace_and_namespace():
    data = b"""<structure>
        <long64-unsigned> 7 </long64-unsigned>
        <octet-string>01 00 01
            08 00 FF</octet-string>
        <boolean>1</boolean>
        <float32>NaN</float32>
        <date-time>2026-11-25T12:00:00Z</date-time>
        <visible-string>  kept  </visible-string>
    </structure>"""
    value = xc.value_from_xml(data)
    assert [v.value for v in value.items][:3] == [7, bytes.fromhex("0100010800ff"), True]
    assert math.isnan(value.items[3].value)
    assert value.items[4].value == datetime(2026, 11, 25, 12, tzinfo=timezone.utc)
    assert value.items[5].value == "  kept  "


@pytest.mark.parametrize(
    "data,error,field",
    [
        (b"<unsigned>256</unsigned>", CosemTypeError, "/unsigned"),
        (b"<unsigned>-1</unsigned>", CosemTypeError, "/unsigned"),
        (b"<unsigned>1e3</unsigned>", CosemTypeError, "/unsigned"),
        (b"<structure><long>1</long><enum>x</enum></structure>", CosemTypeError, "/structure/enum[1]"),
        (b"<array><unsigned>1</unsigned><long>1</long></array>", CosemTypeError, "/array"),
        (b"<octet-string>abc</octet-string>", CosemTypeError, "/octet-string"),
        (b"<boolean>yes</boolean>", CosemTypeError, "/boolean"),
        (b"<bit-string>012</bit-string>", CosemTypeError, "/bit-string"),
        (b"<float64>1,5</float64>", CosemTypeError, "/float64"),
        (b"<float32>1e40</float32>", CosemTypeError, "/float32"),
        (b"<date-time>2026-11-25T12:00:00</date-time>", CosemTypeError, "/date-time"),
        (b"<date-time>tomorrow</date-time>", CosemTypeError, "/date-time"),
        (b"<visible-string>\xc3\xa4</visible-string>", CosemTypeError, "/visible-string"),
        (b"<null-data>x</null-data>", CosemTypeError, "/null-data"),
        (b"<array><integer>1</integer><int>2</int></array>", CosemXmlError, "/array/int[1]"),
        (b"<unsigned><unsigned>1</unsigned></unsigned>", CosemXmlError, "/unsigned"),
        (b"<structure>text<unsigned>1</unsigned></structure>", CosemXmlError, "/structure"),
        (b"<structure><unsigned>1</unsigned>tail</structure>", CosemXmlError, "/structure"),
        (b'<unsigned xmlns="urn:other">1</unsigned>', CosemXmlError, "/"),
    ],
)
def test_bad_values_name_the_offending_element(data, error, field):
    with pytest.raises(error) as info:
        xc.value_from_xml(data)
    assert info.value.field == field


def test_unsafe_input_is_refused_by_xmlsafe():
    with pytest.raises(UnsafeXmlError):
        xc.value_from_xml(b'<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><utf8-string>&e;</utf8-string>')
    with pytest.raises(MalformedXmlError):
        xc.value_from_xml(b"<unsigned>1</long>")


# Objects and attributes ----------------------------------------------------------------------


@pytest.fixture
def model():
    m = CosemModel()
    m.add_ldev(LogicalDevice("meter", "1XXX0012345678"))
    return m


def test_object_round_trip_respects_the_role(model):
    ldev = model.ldev("meter", "1XXX0012345678")
    cls = model.definitions.class_named("MeterProfile")
    values = {
        cls.attribute_named("meter_id").index: DlmsValue("visible-string", "1XXX0012345678"),
        cls.attribute_named("meter_type").index: DlmsValue("enum", 1),
        cls.attribute_named("encrypted_key").index: DlmsValue("octet-string", b"\x30\x00"),
    }
    obj = model.create_object(ldev, cls.class_id, ObisCode.parse("0-0:128.2.0*1"), values)

    as_gwa = xc.object_from_xml(xc.object_to_xml(obj, "gwa"))
    assert (as_gwa.class_id, as_gwa.obis) == (cls.class_id, obj.obis)
    key_index = cls.attribute_named("encrypted_key").index
    assert key_index not in as_gwa.attributes  # write-only
    assert as_gwa.names[2] == "meter_id"

    everything = xc.object_from_xml(xc.object_to_xml(obj))
    assert everything.attributes == dict(obj.values)
    # the decoded document is enough to rebuild the object
    model.remove_object(ldev, obj.class_id, obj.obis)
    rebuilt = model.create_object(ldev, everything.class_id, everything.obis, everything.attributes)
    assert dict(rebuilt.values) == dict(obj.values)


def test_object_decoding_accepts_dotted_obis_and_no_namespace():
    doc = xc.object_from_xml(
        b'<cosem-object class-id="3" obis="1-0:1.8.0*255"><attribute index="2">'
        b"<long64-unsigned>5</long64-unsigned></attribute></cosem-object>"
    )
    assert doc.obis == ObisCode(1, 0, 1, 8, 0, 255)
    assert doc.attributes == {2: DlmsValue("long64-unsigned", 5)}
    assert doc.names == {}


@pytest.mark.parametrize(
    "data,error,field",
    [
        (b'<cosem-obj class-id="3" obis="0100010800ff"/>', CosemXmlError, "/cosem-obj"),
        (b'<cosem-object obis="0100010800ff"/>', CosemXmlError, "/cosem-object/@class-id"),
        (b'<cosem-object class-id="x" obis="0100010800ff"/>', CosemXmlError, "/cosem-object/@class-id"),
        (b'<cosem-object class-id="3"/>', CosemXmlError, "/cosem-object/@obis"),
        (b'<cosem-object class-id="3" obis="zz"/>', BadObis, "/cosem-object/@obis"),
        (b'<cosem-object class-id="3" obis="0100010800ff"><value/></cosem-object>', CosemXmlError, "/cosem-object/value[1]"),
        (
            b'<cosem-object class-id="3" obis="0100010800ff"><attribute index="2"/></cosem-object>',
            CosemXmlError,
            "/cosem-object/attribute[1]",
        ),
        (
            b'<cosem-object class-id="3" obis="0100010800ff"><attribute index="2"><unsigned>1</unsigned>'
            b'</attribute><attribute index="2"><unsigned>1</unsigned></attribute></cosem-object>',
            CosemXmlError,
            "/cosem-object/attribute[2]",
        ),
        (
            b'<cosem-object class-id="3" obis="0100010800ff"><attribute index="2"><unsigned>x</unsigned>'
            b"</attribute></cosem-object>",
            CosemTypeError,
            "/cosem-object/attribute[1]/unsigned[1]",
        ),
    ],
)
def test_bad_objects(data, error, field):
    with pytest.raises(error) as info:
        xc.object_from_xml(data)
    assert info.value.field == field


def test_attribute_bodies():
    body = xc.attribute_to_xml(2, "value", DlmsValue("unsigned", 3))
    assert b'<attribute xmlns="urn:smgw-emu:cosem:1" index="2" name="value"><unsigned>3</unsigned></attribute>' in body
    assert xc.attribute_from_xml(body) == (2, DlmsValue("unsigned", 3))
    assert xc.attribute_from_xml(b"<unsigned>3</unsigned>") == (None, DlmsValue("unsigned", 3))
    assert xc.attribute_from_xml(b"<attribute><unsigned>3</unsigned></attribute>") == (None, DlmsValue("unsigned", 3))
    with pytest.raises(CosemXmlError):
        xc.attribute_from_xml(b'<attribute index="300"><unsigned>3</unsigned></attribute>')


# Errors and discovery ------------------------------------------------------------------------


def test_error_bodies_round_trip():
    exc = CosemTypeError("unsigned", 300, field="taf")
    doc = xc.error_from_xml(xc.exception_to_xml(exc))
    assert doc == xc.ErrorDocument("type-mismatch", exc.message, "taf")
    assert xc.error_from_xml(xc.error_to_xml("x", "bad \x00 char")) == xc.ErrorDocument("x", "bad \ufffd char")
    doc = xc.error_from_xml(xc.exception_to_xml(UnsafeXmlError("too-deep", "nesting")))
    assert (doc.code, doc.message, doc.field) == ("too-deep", "nesting", None)
    with pytest.raises(CosemXmlError):
        xc.error_from_xml(b"<error><message>m</message></error>")
    with pytest.raises(CosemXmlError):
        xc.error_from_xml(b'<error code="c"><detail/></error>')


def test_discovery_listings_round_trip(model):
    ldev = model.ldev("meter", "1XXX0012345678")
    model.add_ldev(LogicalDevice("gateway", "EXXX0012345678"))
    reg = model.create_object(ldev, 3, ObisCode.parse("1-0:1.8.0*255"))
    model.create_object(ldev, 8, ObisCode.parse("0-0:1.0.0*255"))

    body = xc.ldev_list_to_xml(model.ldevs())
    assert b'href="/smgw/cosem/meter/1XXX0012345678"' in body
    assert xc.ldev_list_from_xml(body) == model.ldevs()

    body = xc.object_list_to_xml(ldev, model.objects(ldev))
    assert b'href="/smgw/cosem/meter/1XXX0012345678/3-0100010800ff"' in body
    listed_ldev, refs = xc.object_list_from_xml(body)
    assert listed_ldev == ldev
    assert refs[0] == xc.ObjectRef(3, reg.obis, "Register")
    assert [r.class_id for r in refs] == [3, 8]

    with pytest.raises(CosemXmlError):
        xc.ldev_list_from_xml(b"<ldev-list><device/></ldev-list>")
    with pytest.raises(BadAddress):
        xc.ldev_list_from_xml(b'<ldev-list><ldev kind="meter"/></ldev-list>')
    with pytest.raises(CosemXmlError):
        xc.object_list_from_xml(b'<object-list kind="meter" ldev="m1"><ldev/></object-list>')


@settings(max_examples=100, deadline=None)
@given(values)
def test_method_results_round_trip(value):
    index, decoded = xc.method_result_from_xml(xc.method_result_to_xml(2, "crypto_reset", value))
    assert index == 2 and decoded.same_as(value)


def test_parse_limits_pass_through():
    deep = b"<array>" * 20 + b"</array>" * 20
    assert xc.value_from_xml(deep).type_name == "array"
    with pytest.raises(UnsafeXmlError) as info:
        xc.value_from_xml(deep, max_depth=16)
    assert info.value.reason == "too-deep"
    body = b'<cosem-object class-id="1" obis="0000010000ff"><attribute index="2">' + deep + b"</attribute></cosem-object>"
    with pytest.raises(UnsafeXmlError):
        xc.object_from_xml(body, max_depth=16)
    with pytest.raises(UnsafeXmlError) as info:
        xc.attribute_from_xml(b"<unsigned>1</unsigned>", max_bytes=10)
    assert info.value.reason == "too-large"
