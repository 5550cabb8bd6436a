"""The one hardened entry point for parsing untrusted XML.

Every XML body that reaches the gateway goes through :func:`parse_xml`. The policy is strict on
purpose, because a gateway has no use for the risky parts of XML:

* size is checked before any parsing (a 50 MB body costs one ``len``);
* only UTF-8 is accepted (an XML declaration naming another encoding is refused), so the textual
  scan below cannot be evaded by UTF-16 or EBCDIC tricks;
* any DOCTYPE is refused, and with it every entity declaration (XXE, billion laughs); the
  check is a textual scan before parsing (so even a comment mentioning ``<!DOCTYPE`` is refused)
  plus a look at the parsed document's docinfo; the parser itself is also configured never to
  load a DTD, resolve an entity or touch the network;
* nesting depth is checked after parsing, iteratively (libxml2's own 256-level limit, which fires
  first on very deep input, is reported with the same reason);
* comments and processing instructions are dropped, so consumers only see elements and text.

Errors carry a stable ``reason`` string (also available as ``code``):
``too-large``, ``doctype-forbidden``, ``entity-forbidden``, ``too-deep``, ``malformed``.
"""

from __future__ import annotations

import re

from lxml import etree

__all__ = [
    "XmlInputError",
    "UnsafeXmlError",
    "MalformedXmlError",
    "parse_xml",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
]

DEFAULT_MAX_BYTES = 1_000_000
DEFAULT_MAX_DEPTH = 64

TOO_LARGE = "too-large"
DOCTYPE_FORBIDDEN = "doctype-forbidden"
ENTITY_FORBIDDEN = "entity-forbidden"
TOO_DEEP = "too-deep"
MALFORMED = "malformed"


class XmlInputError(ValueError):
    """Base of all refusals of an XML input. ``reason`` is a stable machine string."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)

    @property
    def code(self) -> str:
        return self.reason


class UnsafeXmlError(XmlInputError):
    """The input is refused by policy (too large, DOCTYPE, entities, too deep)."""


class MalformedXmlError(XmlInputError):
    """The input is not well-formed UTF-8 XML."""


# Checked on the decoded text, so case and whitespace variants are caught. "<!ENTITY" can only
# legally appear inside a DOCTYPE, but it is the more specific danger, so it is reported first.
_ENTITY_DECL = re.compile(r"<!\s*ENTITY", re.IGNORECASE)
_DOCTYPE_DECL = re.compile(r"<!\s*DOCTYPE", re.IGNORECASE)
_XML_DECL_ENCODING = re.compile(r"""\A\s*<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _make_parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers keep state and are not safe to share across threads.
    return etree.XMLParser(
        encoding="utf-8",  # overrides any declaration; we have already checked it says UTF-8
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        recover=False,
    )


def parse_xml(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> etree._Element:
    """Parse untrusted UTF-8 XML ``data`` and return its root element, or raise XmlInputError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_xml expects bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise UnsafeXmlError(TOO_LARGE, f"{len(data)} bytes exceeds the limit of {max_bytes}")
    data = bytes(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedXmlError(MALFORMED, f"not UTF-8 at byte {exc.start}") from None
    if _ENTITY_DECL.search(text):
        raise UnsafeXmlError(ENTITY_FORBIDDEN, "entity declarations are not accepted")
    if _DOCTYPE_DECL.search(text):
        raise UnsafeXmlError(DOCTYPE_FORBIDDEN, "a DOCTYPE is not accepted")
    declared = _XML_DECL_ENCODING.match(text.lstrip("\ufeff"))
    if declared and declared.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise MalformedXmlError(MALFORMED, f"only UTF-8 is accepted, not {declared.group(1)}")
    if not text.strip():
        raise MalformedXmlError(MALFORMED, "empty document")

    try:
        root = etree.fromstring(data, _make_parser())
    except etree.XMLSyntaxError as exc:
        last = exc.error_log.last_error if exc.error_log else None
        if last is not None and last.type_name == "ERR_RESOURCE_LIMIT":
            raise UnsafeXmlError(TOO_DEEP, str(exc)) from None
        if last is not None and last.type_name in ("ERR_UNDECLARED_ENTITY", "WAR_UNDECLARED_ENTITY"):
            raise UnsafeXmlError(ENTITY_FORBIDDEN, str(exc)) from None
        raise MalformedXmlError(MALFORMED, str(exc)) from None

    # Defence in depth: the textual scan above should make these unreachable.
    if root.getroottree().docinfo.doctype:
        raise UnsafeXmlError(DOCTYPE_FORBIDDEN, "a DOCTYPE is not accepted")
    _check_tree(root, max_depth)
    return root


def _check_tree(root: etree._Element, max_depth: int) -> None:
    """Refuse entity nodes and nesting deeper than ``max_depth``; iterative, never recursive."""
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > max_depth:
            raise UnsafeXmlError(TOO_DEEP, f"nesting deeper than {max_depth} levels")
        for child in element:
            if isinstance(child, etree._Entity):
                raise UnsafeXmlError(ENTITY_FORBIDDEN, f"entity reference {child.text}")
            stack.append((child, depth + 1))
