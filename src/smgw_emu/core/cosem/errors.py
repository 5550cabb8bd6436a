"""Errors of the COSEM layer.

Every error has a stable machine ``code`` (kebab-case, part of the wire contract: it is written to
``<error code="..">`` bodies), a human ``message`` and optionally the ``field`` it concerns (an
attribute, a query parameter, an XML path). ``http_status`` is a suggestion for the HTTP layer,
which remains free to map differently.
"""

from __future__ import annotations

__all__ = [
    "CosemError",
    "CosemTypeError",
    "BadObis",
    "BadAddress",
    "BadSelector",
    "SelectiveAccessUnsupported",
    "UnknownLdev",
    "UnknownObject",
    "UnknownClass",
    "UnknownAttribute",
    "UnknownMethod",
    "DuplicateLdev",
    "DuplicateObject",
    "AccessDenied",
    "ReadOnlyAttribute",
    "CosemXmlError",
    "ERROR_CODES",
]


class CosemError(Exception):
    code = "cosem-error"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.message} [{self.field}]" if self.field else self.message


class CosemTypeError(CosemError):
    """A value does not match the DLMS type (or schema) expected for it."""

    code = "type-mismatch"

    def __init__(self, expected: str, value: object, *, reason: str = "", field: str | None = None):
        self.expected = expected
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        detail = f": {reason}" if reason else ""
        super().__init__(f"expected {expected}, got {shown}{detail}", field=field)


class BadObis(CosemError):
    code = "bad-obis"


class BadAddress(CosemError):
    code = "bad-address"
    http_status = 404


class BadSelector(CosemError):
    code = "bad-selector"


class SelectiveAccessUnsupported(CosemError):
    code = "selective-access-unsupported"


class UnknownLdev(CosemError):
    code = "unknown-ldev"
    http_status = 404


class UnknownObject(CosemError):
    code = "unknown-object"
    http_status = 404


class UnknownClass(CosemError):
    code = "unknown-class"


class UnknownAttribute(CosemError):
    code = "unknown-attribute"
    http_status = 404


class UnknownMethod(CosemError):
    code = "unknown-method"
    http_status = 404


class DuplicateLdev(CosemError):
    code = "duplicate-ldev"
    http_status = 409


class DuplicateObject(CosemError):
    code = "duplicate-object"
    http_status = 409


class AccessDenied(CosemError):
    code = "access-denied"
    http_status = 403


class ReadOnlyAttribute(CosemError):
    """A write to an attribute that no role may write (e.g. logical_name, a capture buffer)."""

    code = "read-only-attribute"
    http_status = 405


class CosemXmlError(CosemError):
    """Well-formed XML whose structure is not a valid COSEM document (unknown element, ...)."""

    code = "bad-xml"


ERROR_CODES: dict[str, type[CosemError]] = {
    cls.code: cls
    for cls in (
        CosemError,
        CosemTypeError,
        BadObis,
        BadAddress,
        BadSelector,
        SelectiveAccessUnsupported,
        UnknownLdev,
        UnknownObject,
        UnknownClass,
        UnknownAttribute,
        UnknownMethod,
        DuplicateLdev,
        DuplicateObject,
        AccessDenied,
        ReadOnlyAttribute,
        CosemXmlError,
    )
}
