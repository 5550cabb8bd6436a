"""XML wire encoding of DLMS values, COSEM objects, error bodies and discovery listings.

Namespace: every element is written in ``urn:smgw-emu:cosem:1`` (:data:`NAMESPACE`) as the
default namespace, without prefix. [ours] Decoding also accepts elements in no namespace, so
hand-written lab requests work; any other namespace is refused.

Values: the element name is the DLMS type name, the text its value::

    <double-long-unsigned>42</double-long-unsigned>
    <octet-string>0100010800ff</octet-string>           hex, whitespace ignored on input
    <boolean>true</boolean>                             true/false (1/0 accepted on input)
    <bit-string>0110</bit-string>
    <float64>1.5</float64>                              also INF, -INF, NaN
    <date-time>2026-11-25T12:00:00+00:00</date-time>    ISO 8601 with UTC offset (or Z)
    <null-data/>
    <structure><unsigned>1</unsigned><visible-string>a</visible-string></structure>
    <array><unsigned>1</unsigned><unsigned>2</unsigned></array>

Strings are taken verbatim (no trimming); numbers, hex and date-times are trimmed. Nesting is
bounded by :func:`smgw_emu.core.xmlsafe.parse_xml` (64 levels including the wrappers).

Documents::

    <cosem-object class-id="3" class-name="Register" obis="0100010800ff">
      <attribute index="2" name="value"><double-long-unsigned>42</double-long-unsigned></attribute>
    </cosem-object>
    <attribute index="2" name="value">...one value...</attribute>
    <method-result index="1" name="pair"><enum>1</enum></method-result>
    <error code="access-denied"><message>...</message><field>...</field></error>
    <ldev-list><ldev kind="meter" id="1XXX0012345678" href="/smgw/cosem/meter/1XXX0012345678"/></ldev-list>
    <object-list kind="meter" ldev="1XXX0012345678" href="...">
      <object class-id="3" class-name="Register" obis="0100010800ff" href=".../3-0100010800ff"/>
    </object-list>

Decoding parses with xmlsafe (raising its XmlInputError subclasses) and raises
:class:`CosemXmlError` for a wrong structure or :class:`CosemTypeError` for a wrong value; both
name the offending element as an XPath-like ``field`` (``/cosem-object/attribute[2]/array/unsigned[3]``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from lxml import etree

from ..xmlsafe import XmlInputError, parse_xml
from .errors import BadObis, CosemError, CosemTypeError, CosemXmlError
from .model import CosemObject, LogicalDevice, ObisCode, ObjectAddress
from .types import DLMS_TYPE_NAMES, INTEGER_RANGES, DlmsValue

__all__ = [
    "NAMESPACE",
    "encode_value",
    "decode_value",
    "value_to_xml",
    "value_from_xml",
    "attribute_to_xml",
    "attribute_from_xml",
    "object_to_xml",
    "object_from_xml",
    "ObjectDocument",
    "method_result_to_xml",
    "method_result_from_xml",
    "error_to_xml",
    "exception_to_xml",
    "error_from_xml",
    "ErrorDocument",
    "ldev_list_to_xml",
    "ldev_list_from_xml",
    "object_list_to_xml",
    "object_list_from_xml",
    "ObjectRef",
]

NAMESPACE = "urn:smgw-emu:cosem:1"
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,20}")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?")
_SPECIAL_FLOATS = {"INF": math.inf, "+INF": math.inf, "-INF": -math.inf, "NaN": math.nan}
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _q(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def _root(tag: str, attrs: dict[str, str] | None = None) -> etree._Element:
    return etree.Element(_q(tag), attrs or {}, nsmap={None: NAMESPACE})


def _serialize(element: etree._Element) -> bytes:
    return etree.tostring(element, xml_declaration=True, encoding="UTF-8")


def _local(element: etree._Element, path: str) -> str:
    qname = etree.QName(element)
    if qname.namespace not in (None, NAMESPACE):
        raise CosemXmlError(f"element in foreign namespace {qname.namespace!r}", field=path)
    return qname.localname


def _children(element: etree._Element, path: str) -> list[tuple[etree._Element, str, str]]:
    """Child elements as (element, local name, path); refuses non-whitespace text between them."""
    if (element.text or "").strip():
        raise CosemXmlError("unexpected text, child elements expected", field=path)
    result = []
    counts: dict[str, int] = {}
    for child in element:
        if (child.tail or "").strip():
            raise CosemXmlError("unexpected text between elements", field=path)
        name = _local(child, f"{path}/?")
        counts[name] = counts.get(name, 0) + 1
        result.append((child, name, f"{path}/{name}[{counts[name]}]"))
    return result


def _text(element: etree._Element, path: str) -> str:
    if len(element):
        raise CosemXmlError("unexpected child element, text expected", field=path)
    return element.text or ""


def _int_attr(element: etree._Element, name: str, path: str, low: int, high: int) -> int:
    raw = element.get(name)
    if raw is None:
        raise CosemXmlError(f"attribute {name!r} missing", field=f"{path}/@{name}")
    if not re.fullmatch(r"[0-9]{1,5}", raw.strip()) or not low <= int(raw) <= high:
        raise CosemXmlError(f"attribute {name!r} must be an integer {low}..{high}", field=f"{path}/@{name}")
    return int(raw)


def _obis_attr(element: etree._Element, path: str) -> ObisCode:
    raw = element.get("obis")
    if raw is None:
        raise CosemXmlError("attribute 'obis' missing", field=f"{path}/@obis")
    try:
        return ObisCode.parse(raw)
    except BadObis as exc:
        raise BadObis(exc.message, field=f"{path}/@obis") from None


def _parse(data: bytes, expected_root: str | None, limits: dict | None = None) -> tuple[etree._Element, str, str]:
    root = parse_xml(data, **(limits or {}))
    name = _local(root, "/")
    path = f"/{name}"
    if expected_root is not None and name != expected_root:
        raise CosemXmlError(f"root element <{expected_root}> expected, got <{name}>", field=path)
    return root, name, path


def _xml_safe(text: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", text)


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def _format_float(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "INF" if number > 0 else "-INF"
    return repr(number)


def _value_text(value: DlmsValue) -> str | None:
    t, v = value.type_name, value.value
    if t == "null-data":
        return None
    if t == "boolean":
        return "true" if v else "false"
    if t == "octet-string":
        return v.hex()
    if t in ("float32", "float64"):
        return _format_float(v)
    if t == "date-time":
        return v.isoformat()
    return str(v)  # integers, enum, bit-string, strings


def _fill(element: etree._Element, value: DlmsValue) -> None:
    if value.type_name in ("array", "structure"):
        for item in value.value:
            _fill(etree.SubElement(element, _q(item.type_name)), item)
    else:
        element.text = _value_text(value)


def encode_value(value: DlmsValue) -> etree._Element:
    """The element for ``value`` (a standalone root carrying the namespace declaration)."""
    element = _root(value.type_name)
    _fill(element, value)
    return element


def _parse_scalar(type_name: str, text: str, path: str) -> object:
    def bad(reason: str) -> CosemTypeError:
        return CosemTypeError(type_name, text[:60], reason=reason, field=path)

    if type_name in INTEGER_RANGES:
        if not _INT_TEXT.fullmatch(text.strip()):
            raise bad("not a decimal integer")
        return int(text)
    if type_name == "null-data":
        if text.strip():
            raise bad("null-data must be empty")
        return None
    if type_name == "boolean":
        stripped = text.strip()
        if stripped not in ("true", "false", "1", "0"):
            raise bad("not true/false")
        return stripped in ("true", "1")
    if type_name == "bit-string":
        return text.strip()
    if type_name == "octet-string":
        compact = "".join(text.split())
        if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})*", compact):
            raise bad("not an even number of hex digits")
        return bytes.fromhex(compact)
    if type_name in ("visible-string", "utf8-string"):
        return text
    if type_name in ("float32", "float64"):
        stripped = text.strip()
        if stripped in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[stripped]
        if not _FLOAT_TEXT.fullmatch(stripped):
            raise bad("not a decimal number, INF, -INF or NaN")
        return float(stripped)
    if type_name == "date-time":
        try:
            return datetime.fromisoformat(text.strip())
        except ValueError:
            raise bad("not an ISO 8601 date-time") from None
    raise AssertionError(type_name)


def _decode(element: etree._Element, name: str, path: str) -> DlmsValue:
    if name not in DLMS_TYPE_NAMES:
        raise CosemXmlError(f"unknown DLMS type element <{name}>", field=path)
    if name in ("array", "structure"):
        items = [_decode(child, cname, cpath) for child, cname, cpath in _children(element, path)]
        raw: object = items
    else:
        raw = _parse_scalar(name, _text(element, path), path)
    try:
        return DlmsValue(name, raw)
    except CosemTypeError as exc:
        raise CosemTypeError(exc.expected, exc.value, reason=exc.reason, field=path) from None


def decode_value(element: etree._Element, path: str | None = None) -> DlmsValue:
    """The DlmsValue of an already parsed value element."""
    name = _local(element, path or "/?")
    return _decode(element, name, path or f"/{name}")


def value_to_xml(value: DlmsValue) -> bytes:
    return _serialize(encode_value(value))


def value_from_xml(data: bytes, **limits: int) -> DlmsValue:
    """``limits``: ``max_bytes`` / ``max_depth`` for :func:`~smgw_emu.core.xmlsafe.parse_xml`."""
    root, name, path = _parse(data, None, limits)
    return _decode(root, name, path)


# ---------------------------------------------------------------------------------------------
# Attributes and objects
# ---------------------------------------------------------------------------------------------


def _attribute_element(parent: etree._Element | None, index: int, name: str, value: DlmsValue) -> etree._Element:
    attrs = {"index": str(index), "name": name}
    element = _root("attribute", attrs) if parent is None else etree.SubElement(parent, _q("attribute"), attrs)
    _fill(etree.SubElement(element, _q(value.type_name)), value)
    return element


def _single_value(element: etree._Element, path: str) -> DlmsValue:
    children = _children(element, path)
    if len(children) != 1:
        raise CosemXmlError(f"exactly one value element expected, got {len(children)}", field=path)
    child, cname, cpath = children[0]
    return _decode(child, cname, cpath)


def attribute_to_xml(index: int, name: str, value: DlmsValue) -> bytes:
    """The body of a GET of one attribute."""
    return _serialize(_attribute_element(None, index, name, value))


def attribute_from_xml(data: bytes, **limits: int) -> tuple[int | None, DlmsValue]:
    """The body of a PUT of one attribute: ``<attribute index=..>value</attribute>`` or a bare value.

    Returns (index or None for a bare value, value); the caller checks the index against the path.
    """
    root, name, path = _parse(data, None, limits)
    if name != "attribute":
        return None, _decode(root, name, path)
    index = _int_attr(root, "index", path, 1, 255) if root.get("index") is not None else None
    return index, _single_value(root, path)


def object_to_xml(obj: CosemObject, role: str | None = None) -> bytes:
    """The object with every attribute ``role`` may read (all attributes for None)."""
    root = _root(
        "cosem-object",
        {"class-id": str(obj.class_id), "class-name": obj.cosem_class.name, "obis": obj.obis.hex},
    )
    for attr, value in obj.readable(role):
        _attribute_element(root, attr.index, attr.name, value)
    return _serialize(root)


@dataclass
class ObjectDocument:
    """A decoded ``<cosem-object>``: not yet checked against the class definitions."""

    class_id: int
    obis: ObisCode
    attributes: dict[int, DlmsValue] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # as given in the document, if any


def object_from_xml(data: bytes, **limits: int) -> ObjectDocument:
    root, _, path = _parse(data, "cosem-object", limits)
    doc = ObjectDocument(_int_attr(root, "class-id", path, 0, 65535), _obis_attr(root, path))
    for child, cname, cpath in _children(root, path):
        if cname != "attribute":
            raise CosemXmlError(f"<attribute> expected, got <{cname}>", field=cpath)
        index = _int_attr(child, "index", cpath, 1, 255)
        if index in doc.attributes:
            raise CosemXmlError(f"attribute {index} given twice", field=cpath)
        doc.attributes[index] = _single_value(child, cpath)
        if child.get("name") is not None:
            doc.names[index] = child.get("name")
    return doc


def method_result_to_xml(index: int, name: str, value: DlmsValue) -> bytes:
    """The body answering a method invocation: ``<method-result index=".." name="..">value</method-result>``."""
    element = _root("method-result", {"index": str(index), "name": name})
    _fill(etree.SubElement(element, _q(value.type_name)), value)
    return _serialize(element)


def method_result_from_xml(data: bytes) -> tuple[int, DlmsValue]:
    root, _, path = _parse(data, "method-result")
    return _int_attr(root, "index", path, 1, 255), _single_value(root, path)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorDocument:
    code: str
    message: str
    field: str | None = None


def error_to_xml(code: str, message: str, field: str | None = None) -> bytes:
    root = _root("error", {"code": _xml_safe(code)})
    etree.SubElement(root, _q("message")).text = _xml_safe(message)
    if field is not None:
        etree.SubElement(root, _q("field")).text = _xml_safe(field)
    return _serialize(root)


def exception_to_xml(exc: CosemError | XmlInputError) -> bytes:
    """The error body for a COSEM error or an XML input refusal (code = its reason)."""
    if isinstance(exc, XmlInputError):
        return error_to_xml(exc.code, exc.detail or exc.reason)
    return error_to_xml(exc.code, exc.message, exc.field)


def error_from_xml(data: bytes) -> ErrorDocument:
    root, _, path = _parse(data, "error")
    code = root.get("code")
    if not code:
        raise CosemXmlError("attribute 'code' missing", field=f"{path}/@code")
    parts: dict[str, str] = {}
    for child, cname, cpath in _children(root, path):
        if cname not in ("message", "field") or cname in parts:
            raise CosemXmlError(f"unexpected <{cname}>", field=cpath)
        parts[cname] = _text(child, cpath)
    return ErrorDocument(code, parts.get("message", ""), parts.get("field"))


# ---------------------------------------------------------------------------------------------
# Device discovery
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    class_id: int
    obis: ObisCode
    class_name: str | None = None


def ldev_list_to_xml(ldevs: Iterable[LogicalDevice]) -> bytes:
    root = _root("ldev-list")
    for ldev in ldevs:
        etree.SubElement(root, _q("ldev"), kind=ldev.kind, id=ldev.id, href=ldev.path)
    return _serialize(root)


def ldev_list_from_xml(data: bytes) -> list[LogicalDevice]:
    root, _, path = _parse(data, "ldev-list")
    result = []
    for child, cname, cpath in _children(root, path):
        if cname != "ldev":
            raise CosemXmlError(f"<ldev> expected, got <{cname}>", field=cpath)
        result.append(LogicalDevice(child.get("kind", ""), child.get("id", "")))
    return result


def object_list_to_xml(ldev: LogicalDevice, objects: Iterable[CosemObject]) -> bytes:
    root = _root("object-list", {"kind": ldev.kind, "ldev": ldev.id, "href": ldev.path})
    for obj in objects:
        etree.SubElement(
            root,
            _q("object"),
            {
                "class-id": str(obj.class_id),
                "class-name": obj.cosem_class.name,
                "obis": obj.obis.hex,
                "href": ObjectAddress.of_object(ldev, obj).path,
            },
        )
    return _serialize(root)


def object_list_from_xml(data: bytes) -> tuple[LogicalDevice, list[ObjectRef]]:
    root, _, path = _parse(data, "object-list")
    ldev = LogicalDevice(root.get("kind", ""), root.get("ldev", ""))
    refs = []
    for child, cname, cpath in _children(root, path):
        if cname != "object":
            raise CosemXmlError(f"<object> expected, got <{cname}>", field=cpath)
        refs.append(
            ObjectRef(
                _int_attr(child, "class-id", cpath, 0, 65535),
                _obis_attr(child, cpath),
                child.get("class-name"),
            )
        )
    return ldev, refs
