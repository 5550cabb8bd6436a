"""One trigger per error class, so every code in the wire contract is shown to fire."""

import pytest

from smgw_emu.core.cosem import errors as E
from smgw_emu.core.cosem import xmlcodec as xc
from smgw_emu.core.cosem.model import CosemModel, LogicalDevice, ObisCode, ObjectAddress
from smgw_emu.core.cosem.selective import IndexSelector, apply_selector, parse_selector
from smgw_emu.core.cosem.types import DlmsValue

METER = LogicalDevice("meter", "m1")
OBIS = ObisCode(1, 0, 1, 8, 0, 255)


def model():
    m = CosemModel()
    m.add_ldev(METER)
    m.create_object(METER, 3, OBIS)
    return m


TRIGGERS = {
    E.CosemTypeError: lambda: DlmsValue("unsigned", 256),
    E.BadObis: lambda: ObisCode.parse("1.8.0"),
    E.BadAddress: lambda: ObjectAddress.parse("/smgw/cosem/meter/m1/3-0100010800ff/attributes"),
    E.BadSelector: lambda: parse_selector({"q.count": "-1"}),
    E.SelectiveAccessUnsupported: lambda: apply_selector(DlmsValue("unsigned", 1), IndexSelector()),
    E.UnknownLdev: lambda: model().ldev("meter", "m2"),
    E.UnknownObject: lambda: model().object(METER, 3, ObisCode(1, 0, 2, 8, 0, 255)),
    E.UnknownClass: lambda: model().create_object(METER, 4711, ObisCode(0, 0, 1, 0, 0, 255)),
    E.UnknownAttribute: lambda: model().object(METER, 3, OBIS).get(4, "gwa"),
    E.UnknownMethod: lambda: model().object(METER, 3, OBIS).check_method(2, "gwa"),
    E.DuplicateLdev: lambda: model().add_ldev(METER),
    E.DuplicateObject: lambda: model().create_object(METER, 3, OBIS),
    E.AccessDenied: lambda: model().object(METER, 3, OBIS).get(2, "emt"),
    E.ReadOnlyAttribute: lambda: model().object(METER, 3, OBIS).set(2, DlmsValue("unsigned", 1), "gwa"),
    E.CosemXmlError: lambda: xc.value_from_xml(b"<no-such-type/>"),
}


@pytest.mark.parametrize("error_class", list(TRIGGERS), ids=lambda c: c.code)
def test_each_error_fires_with_its_code(error_class):
    with pytest.raises(error_class) as info:
        TRIGGERS[error_class]()
    assert type(info.value) is error_class
    assert info.value.code == error_class.code
    assert 400 <= info.value.http_status < 500
    body = xc.error_from_xml(xc.exception_to_xml(info.value))
    assert body.code == error_class.code and body.message == info.value.message


def test_codes_are_unique_and_all_covered():
    concrete = [c for c in E.ERROR_CODES.values() if c is not E.CosemError]
    assert set(concrete) == set(TRIGGERS)
    assert len({c.code for c in E.ERROR_CODES.values()}) == len(E.ERROR_CODES)
    assert all(issubclass(c, E.CosemError) for c in E.ERROR_CODES.values())
