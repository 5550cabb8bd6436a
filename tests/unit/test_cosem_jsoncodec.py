"""The store's JSON form of COSEM values and objects round-trips exactly (property-based)."""

from __future__ import annotations

import json
from datetime import timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smgw_emu.core.cosem import CosemTypeError, DlmsValue, ObisCode, UnknownAttribute, default_definitions
from smgw_emu.core.cosem.definitions import AnySpec, ArraySpec, NullableSpec, PrimitiveSpec, StructureSpec
from smgw_emu.core.cosem.jsoncodec import (
    object_from_json,
    object_to_json,
    tagged_from_json,
    tagged_to_json,
    value_from_json,
    value_to_json,
)
from smgw_emu.core.cosem.model import CosemObject
from smgw_emu.core.cosem.types import INTEGER_RANGES

DEFS = default_definitions()
offsets = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))

SCALARS = {
    "null-data": st.none(),
    "boolean": st.booleans(),
    "bit-string": st.text("01", max_size=12),
    "octet-string": st.binary(max_size=16),
    "visible-string": st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
    "utf8-string": st.text(st.one_of(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",),
                                                   blacklist_characters="\ufffe\uffff"), st.sampled_from("\t\n\r")), max_size=12),
    "float32": st.floats(width=32),
    "float64": st.floats(),
    "date-time": st.datetimes(timezones=offsets),
}


def scalar(type_name: str) -> st.SearchStrategy[DlmsValue]:
    if type_name in INTEGER_RANGES:
        low, high = INTEGER_RANGES[type_name]
        return st.integers(low, high).map(lambda v: DlmsValue(type_name, v))
    return SCALARS[type_name].map(lambda v: DlmsValue(type_name, v))


any_values = st.recursive(
    st.sampled_from(sorted(set(SCALARS) | set(INTEGER_RANGES))).flatmap(scalar),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda xs: DlmsValue("structure", xs)),
        st.sampled_from(sorted(INTEGER_RANGES)).flatmap(
            lambda t: st.lists(scalar(t), max_size=3).map(lambda xs: DlmsValue("array", xs))),
    ),
    max_leaves=12,
)


def for_spec(spec) -> st.SearchStrategy[DlmsValue]:
    """Values that match a TypeSpec of the definitions."""
    if isinstance(spec, NullableSpec):
        return st.one_of(st.just(DlmsValue.null()), for_spec(spec.inner))
    if isinstance(spec, ArraySpec):
        return st.lists(for_spec(spec.element), max_size=3).map(lambda xs: DlmsValue("array", xs))
    if isinstance(spec, StructureSpec):
        return st.tuples(*[for_spec(f.spec) for f in spec.fields]).map(lambda xs: DlmsValue("structure", list(xs)))
    if isinstance(spec, AnySpec):
        return any_values
    assert isinstance(spec, PrimitiveSpec)
    if spec.type_name == "structure":
        return st.lists(any_values, max_size=3).map(lambda xs: DlmsValue("structure", xs))
    if spec.type_name == "array":
        return st.just(DlmsValue("array", ()))
    if spec.values is not None:
        return st.sampled_from(sorted(spec.values.values())).map(lambda v: DlmsValue(spec.type_name, v))
    if spec.type_name in INTEGER_RANGES:
        low, high = INTEGER_RANGES[spec.type_name]
        low = low if spec.min is None else spec.min
        high = high if spec.max is None else spec.max
        return st.integers(low, high).map(lambda v: DlmsValue(spec.type_name, v))
    return scalar(spec.type_name)


ATTRIBUTES = [(c.class_id, a) for c in DEFS.classes.values() for a in c.attributes if a.index != 1]


def through_json(data):
    return json.loads(json.dumps(data))


@settings(max_examples=200, deadline=None)
@given(any_values)
def test_tagged_values_round_trip(value):
    assert tagged_from_json(through_json(tagged_to_json(value))).same_as(value)


@pytest.mark.parametrize("class_id,attr", ATTRIBUTES, ids=[f"{c}-{a.name}" for c, a in ATTRIBUTES])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_attribute_of_every_class_round_trips(class_id, attr, data):
    value = data.draw(for_spec(attr.spec))
    attr.spec.check(value)
    assert value_from_json(attr.spec, through_json(value_to_json(attr.spec, value)), attr.name).same_as(value)


def test_json_reads_like_the_definition():
    meter = DEFS.cls(28300)
    obj = CosemObject(meter, ObisCode(0, 0, 128, 0, 2), {
        2: DlmsValue("visible-string", "1XXX0098765432"), 3: DlmsValue("enum", 1),
        5: DlmsValue("octet-string", b"\x01\x02")})
    data = object_to_json(obj)
    assert data["meter_type"] == "electricity" and data["encrypted_key"] == "0102" and "logical_name" not in data
    back = object_from_json(meter, obj.obis, through_json(data))
    assert all(back.peek(i).same_as(obj.peek(i)) for i in obj.values)
    stage = DEFS.types["tariff_stage"]
    value = stage.build({"stage": 1, "register": b"\x01\x00\x01\x08\x01\xff", "label": "HT"})
    assert value_to_json(stage, value) == {"stage": 1, "register": "0100010801ff", "label": "HT"}


def test_stored_data_that_does_not_fit_is_refused():
    meter = DEFS.cls(28300)
    with pytest.raises(UnknownAttribute):
        object_from_json(meter, ObisCode(0, 0, 128, 0, 2), {"no_such_attribute": 1})
    with pytest.raises(CosemTypeError):
        object_from_json(meter, ObisCode(0, 0, 128, 0, 2), {"encrypted_key": "not hex"})
    with pytest.raises(CosemTypeError):
        object_from_json(meter, ObisCode(0, 0, 128, 0, 2), {"meter_type": "plutonium"})
    with pytest.raises(CosemTypeError):
        tagged_from_json({"t": "unsigned"})
