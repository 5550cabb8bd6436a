import time

import pytest
from lxml import etree

from smgw_emu.core import xmlsafe
from smgw_emu.core.xmlsafe import MalformedXmlError, UnsafeXmlError, XmlInputError, parse_xml

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<foo>&xxe;</foo>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<lolz>&lol9;</lolz>"""


def reason_of(data, **kwargs):
    with pytest.raises(XmlInputError) as info:
        parse_xml(data, **kwargs)
    assert info.value.code == info.value.reason
    return type(info.value), info.value.reason


def test_parses_plain_utf8_xml():
    root = parse_xml('<?xml version="1.0" encoding="UTF-8"?><a x="1"><b>ä &amp; &#x41;</b><!-- c --></a>'.encode())
    assert root.tag == "a"
    assert root[0].text == "ä & A"
    assert len(root) == 1  # comments are dropped


def test_xxe_is_refused():
    assert reason_of(XXE) == (UnsafeXmlError, "entity-forbidden")


def test_parser_itself_never_resolves_external_entities():
    # Defence in depth: even without the textual pre-check, the configured parser leaves &xxe; alone.
    root = etree.fromstring(XXE, xmlsafe._make_parser())
    assert "root:" not in etree.tostring(root, encoding="unicode")


def test_billion_laughs_is_refused():
    assert reason_of(BILLION_LAUGHS) == (UnsafeXmlError, "entity-forbidden")


def test_doctype_is_refused():
    assert reason_of(b'<!DOCTYPE a SYSTEM "http://example.invalid/a.dtd"><a/>') == (
        UnsafeXmlError,
        "doctype-forbidden",
    )


def test_undeclared_entity_reference_is_refused():
    assert reason_of(b"<a>&foo;</a>") == (UnsafeXmlError, "entity-forbidden")


def test_huge_body_is_refused_by_size_before_parsing(monkeypatch):
    monkeypatch.setattr(xmlsafe, "_make_parser", lambda: pytest.fail("parser must not run"))
    body = b"<a>" + b"x" * (50 * 1024 * 1024) + b"</a>"
    start = time.perf_counter()
    assert reason_of(body) == (UnsafeXmlError, "too-large")
    assert time.perf_counter() - start < 0.5


def test_size_limit_is_configurable():
    assert reason_of(b"<a>12345</a>", max_bytes=5) == (UnsafeXmlError, "too-large")


def test_deep_nesting_is_refused():
    deep = b"<a>" * 10_000 + b"</a>" * 10_000
    assert reason_of(deep) == (UnsafeXmlError, "too-deep")


def test_depth_limit_is_exact():
    assert parse_xml(b"<a>" * 64 + b"</a>" * 64).tag == "a"
    assert reason_of(b"<a>" * 65 + b"</a>" * 65) == (UnsafeXmlError, "too-deep")
    assert reason_of(b"<a><b/></a>", max_depth=1) == (UnsafeXmlError, "too-deep")


@pytest.mark.parametrize(
    "data",
    [
        b"<a><b></a>",
        b"",
        b"   ",
        b"no xml at all",
        bytes(range(256)),
        b"\xff\xfe<\x00a\x00/\x00>\x00",  # UTF-16
        '<?xml version="1.0" encoding="ISO-8859-1"?><a>é</a>'.encode("latin-1"),
        '<?xml version="1.0" encoding="ISO-8859-1"?><a/>'.encode(),  # honest bytes, foreign label
        b"<a>\x00</a>",
    ],
)
def test_malformed_or_non_utf8_is_refused(data):
    assert reason_of(data) == (MalformedXmlError, "malformed")


def test_only_bytes_are_accepted():
    with pytest.raises(TypeError):
        parse_xml("<a/>")


def test_utf16_without_bom_cannot_smuggle_a_doctype():
    data = '<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>'.encode("utf-16-le")
    with pytest.raises(XmlInputError):
        parse_xml(data)


def test_utf8_bom_is_accepted():
    assert parse_xml(b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?><a/>').tag == "a"
