"""JSON form of COSEM attribute values, for the state store (sans-IO).

Guided by the attribute's :class:`~smgw_emu.core.cosem.definitions.TypeSpec`, so a stored object
reads like its definition: structures are objects keyed by field name, named enum values are
their names, octet-strings are hex, date-times ISO 8601 with offset. Where the spec says nothing
about the type (``any``, an untyped ``array``/``structure``) the value is tagged,
``{"t": "<DLMS type>", "v": ...}``, recursively, so every value round-trips exactly.

    object_to_json(obj)            {"meter_id": "1XXX0098765432", "meter_type": "electricity", ...}
    object_from_json(cls, obis, d) the CosemObject again (values type-checked)

logical_name is not stored: it is the object's OBIS code, kept beside the JSON by the store.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Mapping

from .definitions import ArraySpec, CosemClass, NullableSpec, PrimitiveSpec, StructureSpec, TypeSpec
from .errors import CosemTypeError
from .model import CosemObject, ObisCode
from .types import DlmsValue

__all__ = ["value_to_json", "value_from_json", "tagged_to_json", "tagged_from_json", "object_to_json", "object_from_json"]

_UNTYPED = ("array", "structure")


def _leaf_to_json(value: DlmsValue) -> Any:
    t, v = value.type_name, value.value
    if t == "octet-string":
        return v.hex()
    if t == "date-time":
        return v.isoformat()
    if t in ("float32", "float64") and (math.isnan(v) or math.isinf(v)):
        return repr(v)  # "nan", "inf", "-inf": JSON has no literal for them
    return v


def _leaf_from_json(type_name: str, data: Any, field: str | None) -> Any:
    try:
        if type_name == "octet-string":
            return bytes.fromhex(data)
        if type_name == "date-time":
            return datetime.fromisoformat(data)
        if type_name in ("float32", "float64") and isinstance(data, str):
            return float(data)
    except (TypeError, ValueError):
        raise CosemTypeError(type_name, data, reason="not its JSON form", field=field) from None
    return data


def tagged_to_json(value: DlmsValue) -> dict:
    """Any value with its type: ``{"t": type name, "v": value}``."""
    if value.type_name in _UNTYPED:
        return {"t": value.type_name, "v": [tagged_to_json(item) for item in value.value]}
    return {"t": value.type_name, "v": _leaf_to_json(value)}


def tagged_from_json(data: Any, field: str | None = None) -> DlmsValue:
    if not isinstance(data, Mapping) or set(data) != {"t", "v"} or not isinstance(data["t"], str):
        raise CosemTypeError("a tagged value {t, v}", data, field=field)
    type_name, raw = data["t"], data["v"]
    if type_name in _UNTYPED:
        if not isinstance(raw, list):
            raise CosemTypeError(type_name, raw, reason="not a list", field=field)
        return DlmsValue(type_name, [tagged_from_json(item, f"{field or ''}[{i}]") for i, item in enumerate(raw)])
    try:
        return DlmsValue(type_name, _leaf_from_json(type_name, raw, field))
    except CosemTypeError as exc:
        raise CosemTypeError(exc.expected, exc.value, reason=exc.reason, field=field) from None


def value_to_json(spec: TypeSpec, value: DlmsValue) -> Any:
    """The JSON-able form of ``value``, which must match ``spec``."""
    if isinstance(spec, NullableSpec):
        return None if value.is_null else value_to_json(spec.inner, value)
    if isinstance(spec, ArraySpec):
        return [value_to_json(spec.element, item) for item in value.value]
    if isinstance(spec, StructureSpec):
        return {f.name: value_to_json(f.spec, item) for f, item in zip(spec.fields, value.value)}
    if isinstance(spec, PrimitiveSpec) and spec.type_name not in _UNTYPED:
        return spec.to_python(value) if spec.values is not None else _leaf_to_json(value)
    return tagged_to_json(value)  # AnySpec, untyped array / structure


def value_from_json(spec: TypeSpec, data: Any, field: str | None = None) -> DlmsValue:
    """The inverse of :func:`value_to_json`; the result is checked against ``spec``."""
    if isinstance(spec, NullableSpec):
        return DlmsValue.null() if data is None else value_from_json(spec.inner, data, field)
    if isinstance(spec, ArraySpec):
        if not isinstance(data, list):
            raise CosemTypeError(spec.label, data, reason="not a list", field=field)
        items = [value_from_json(spec.element, item, f"{field or ''}[{i}]") for i, item in enumerate(data)]
        return spec.build(DlmsValue("array", items), field)
    if isinstance(spec, StructureSpec):
        if not isinstance(data, Mapping) or set(data) != {f.name for f in spec.fields}:
            raise CosemTypeError(spec.label, data, reason=f"fields {[f.name for f in spec.fields]} expected", field=field)
        items = [value_from_json(f.spec, data[f.name], f"{field}.{f.name}" if field else f.name) for f in spec.fields]
        return DlmsValue("structure", items)
    if isinstance(spec, PrimitiveSpec) and spec.type_name not in _UNTYPED:
        if spec.values is not None:
            return spec.build(data, field)
        return spec.build(_leaf_from_json(spec.type_name, data, field), field)
    value = tagged_from_json(data, field)
    spec.check(value, field)
    return value


def object_to_json(obj: CosemObject) -> dict[str, Any]:
    """Every attribute except logical_name, by name."""
    return {
        attr.name: value_to_json(attr.spec, obj.peek(attr.index))
        for attr in obj.attributes()
        if attr.index != 1
    }


def object_from_json(cosem_class: CosemClass, obis: ObisCode, data: Mapping[str, Any]) -> CosemObject:
    """Rebuild a stored object; an attribute missing from ``data`` keeps its default."""
    if not isinstance(data, Mapping):
        raise CosemTypeError("a JSON object of attributes", data)
    values: dict[int, DlmsValue] = {}
    for name, raw in data.items():
        attr = cosem_class.attribute_named(name)  # UnknownAttribute if the definitions changed
        if attr.index == 1:
            continue
        values[attr.index] = value_from_json(attr.spec, raw, attr.name)
    return CosemObject(cosem_class, obis, values)
