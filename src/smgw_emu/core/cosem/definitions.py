"""COSEM class definitions, loaded from data (``definitions.toml`` beside this module).

The TOML file is the single place where class ids, attribute layouts, types and access rights
live; see its header for the format. This module turns it into immutable objects:

* :class:`Definitions` — roles, named types, classes (``defs.cls(28200)``, ``defs.class_named``);
* :class:`CosemClass` — one class, with :class:`AttributeDef` and :class:`MethodDef` entries;
* :class:`TypeSpec` — the type/shape of a value (``check``, ``default``, ``build``, ``to_python``).

Unknown keys, roles, types or duplicate indices in the file raise :class:`DefinitionError`, so a
typo in a lab's correction fails at start-up instead of silently changing behaviour.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .errors import CosemTypeError, UnknownAttribute, UnknownClass, UnknownMethod
from .types import DLMS_TYPE_NAMES, INTEGER_RANGES, DlmsValue

__all__ = [
    "DefinitionError",
    "TypeSpec",
    "PrimitiveSpec",
    "AnySpec",
    "ArraySpec",
    "StructureSpec",
    "FieldSpec",
    "NullableSpec",
    "AttributeDef",
    "MethodDef",
    "CosemClass",
    "Definitions",
    "load_definitions",
    "default_definitions",
    "ACCESS_VALUES",
]

ACCESS_VALUES = frozenset({"", "r", "w", "rw"})
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class DefinitionError(ValueError):
    """The definitions data is inconsistent; the message names the offending entry."""


# ---------------------------------------------------------------------------------------------
# Type specs
# ---------------------------------------------------------------------------------------------


class TypeSpec:
    """The expected type/shape of a value. ``label`` is the spec as written in the data."""

    label: str

    def check(self, value: DlmsValue, field: str | None = None) -> None:
        """Raise CosemTypeError (naming ``field``) unless ``value`` matches."""
        raise NotImplementedError

    def default(self) -> DlmsValue:
        """The value an attribute holds before anything is written to it."""
        raise NotImplementedError

    def build(self, data: Any, field: str | None = None) -> DlmsValue:
        """Build a checked DlmsValue from plain Python (dicts for structures, names for enums)."""
        raise NotImplementedError

    def to_python(self, value: DlmsValue) -> Any:
        """The inverse of build: dicts for structures, names for named enum values."""
        raise NotImplementedError

    def _fail(self, value: Any, field: str | None, reason: str = "") -> CosemTypeError:
        return CosemTypeError(self.label, value, reason=reason, field=field)


def _build_leaf(spec: TypeSpec, type_name: str, data: Any, field: str | None) -> DlmsValue:
    if isinstance(data, DlmsValue):
        value = data
    else:
        try:
            value = DlmsValue(type_name, data)
        except CosemTypeError as exc:
            raise CosemTypeError(spec.label, data, reason=str(exc), field=field) from None
    spec.check(value, field)
    return value


@dataclass(frozen=True)
class PrimitiveSpec(TypeSpec):
    """A DLMS type, optionally narrowed by a range or a set of named enum values."""

    label: str
    type_name: str
    min: int | None = None
    max: int | None = None
    values: Mapping[str, int] | None = None  # named enum values

    def check(self, value: DlmsValue, field: str | None = None) -> None:
        if not isinstance(value, DlmsValue) or value.type_name != self.type_name:
            raise self._fail(value, field)
        if self.min is not None and value.value < self.min:
            raise self._fail(value, field, f"below {self.min}")
        if self.max is not None and value.value > self.max:
            raise self._fail(value, field, f"above {self.max}")
        if self.values is not None and value.value not in self.values.values():
            allowed = ", ".join(f"{k}={v}" for k, v in self.values.items())
            raise self._fail(value, field, f"allowed: {allowed}")

    def default(self) -> DlmsValue:
        t = self.type_name
        if self.values:
            return DlmsValue(t, min(self.values.values()))
        if t in INTEGER_RANGES:
            low = INTEGER_RANGES[t][0] if self.min is None else self.min
            high = INTEGER_RANGES[t][1] if self.max is None else self.max
            return DlmsValue(t, min(max(0, low), high))  # 0, or the bound nearest to it
        plain = {
            "null-data": None,
            "boolean": False,
            "bit-string": "",
            "octet-string": b"",
            "visible-string": "",
            "utf8-string": "",
            "float32": 0.0,
            "float64": 0.0,
            "date-time": _EPOCH,
            "array": (),
            "structure": (),
        }
        return DlmsValue(t, plain[t])

    def build(self, data: Any, field: str | None = None) -> DlmsValue:
        if self.values is not None and isinstance(data, str):
            if data not in self.values:
                raise self._fail(data, field, f"allowed: {', '.join(self.values)}")
            data = self.values[data]
        if self.type_name in ("array", "structure") and not isinstance(data, DlmsValue):
            raise self._fail(data, field, "give a DlmsValue for an untyped array/structure")
        return _build_leaf(self, self.type_name, data, field)

    def to_python(self, value: DlmsValue) -> Any:
        if self.values is not None:
            for name, number in self.values.items():
                if number == value.value:
                    return name
        return value.to_python()


@dataclass(frozen=True)
class AnySpec(TypeSpec):
    label: str = "any"

    def check(self, value: DlmsValue, field: str | None = None) -> None:
        if not isinstance(value, DlmsValue):
            raise self._fail(value, field, "not a DlmsValue")

    def default(self) -> DlmsValue:
        return DlmsValue.null()

    def build(self, data: Any, field: str | None = None) -> DlmsValue:
        self.check(data, field)
        return data

    def to_python(self, value: DlmsValue) -> Any:
        return value.to_python()


@dataclass(frozen=True)
class NullableSpec(TypeSpec):
    label: str
    inner: TypeSpec

    def check(self, value: DlmsValue, field: str | None = None) -> None:
        if not (isinstance(value, DlmsValue) and value.is_null):
            self.inner.check(value, field)

    def default(self) -> DlmsValue:
        return DlmsValue.null()

    def build(self, data: Any, field: str | None = None) -> DlmsValue:
        if data is None or (isinstance(data, DlmsValue) and data.is_null):
            return DlmsValue.null()
        return self.inner.build(data, field)

    def to_python(self, value: DlmsValue) -> Any:
        return None if value.is_null else self.inner.to_python(value)


@dataclass(frozen=True)
class ArraySpec(TypeSpec):
    label: str
    element: TypeSpec

    def check(self, value: DlmsValue, field: str | None = None) -> None:
        if not isinstance(value, DlmsValue) or value.type_name != "array":
            raise self._fail(value, field)
        for i, item in enumerate(value.value):
            self.element.check(item, f"{field or ''}[{i}]")

    def default(self) -> DlmsValue:
        return DlmsValue("array", ())

    def build(self, data: Any, field: str | None = None) -> DlmsValue:
        if isinstance(data, DlmsValue):
            self.check(data, field)
            return data
        if not isinstance(data, (list, tuple)):
            raise self._fail(data, field, "not a list")
        items = [self.element.build(x, f"{field or ''}[{i}]") for i, x in enumerate(data)]
        return _build_leaf(self, "array", items, field)

    def to_python(self, value: DlmsValue) -> Any:
        return [self.element.to_python(item) for item in value.value]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    spec: TypeSpec


@dataclass(frozen=True)
class StructureSpec(TypeSpec):
    label: str
    fields: tuple[FieldSpec, ...]

    def _path(self, field: str | None, name: str) -> str:
        return f"{field}.{name}" if field else name

    def check(self, value: DlmsValue, field: str | None = None) -> None:
        if not isinstance(value, DlmsValue) or value.type_name != "structure":
            raise self._fail(value, field)
        if len(value.value) != len(self.fields):
            raise self._fail(value, field, f"{len(self.fields)} elements expected")
        for f, item in zip(self.fields, value.value):
            f.spec.check(item, self._path(field, f.name))

    def default(self) -> DlmsValue:
        return DlmsValue("structure", [f.spec.default() for f in self.fields])

    def build(self, data: Any, field: str | None = None) -> DlmsValue:
        if isinstance(data, DlmsValue):
            self.check(data, field)
            return data
        if isinstance(data, Mapping):
            names = [f.name for f in self.fields]
            if set(data) != set(names):
                raise self._fail(data, field, f"fields {names} expected")
            data = [data[name] for name in names]
        if not isinstance(data, (list, tuple)) or len(data) != len(self.fields):
            raise self._fail(data, field, f"{len(self.fields)} elements expected")
        items = [f.spec.build(x, self._path(field, f.name)) for f, x in zip(self.fields, data)]
        return DlmsValue("structure", items)

    def to_python(self, value: DlmsValue) -> Any:
        return {f.name: f.spec.to_python(item) for f, item in zip(self.fields, value.value)}


# ---------------------------------------------------------------------------------------------
# Classes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AttributeDef:
    index: int
    name: str
    spec: TypeSpec
    access: Mapping[str, str]  # role -> "", "r", "w" or "rw"; every known role present

    def _rights(self, role: str) -> str:
        try:
            return self.access[role]
        except KeyError:
            raise ValueError(f"unknown role {role!r}") from None

    def can_read(self, role: str) -> bool:
        return "r" in self._rights(role)

    def can_write(self, role: str) -> bool:
        return "w" in self._rights(role)

    @property
    def read_only(self) -> bool:
        """True if no role may write it (the gateway may, via CosemObject.store)."""
        return not any("w" in rights for rights in self.access.values())


@dataclass(frozen=True, eq=False)
class MethodDef:
    index: int
    name: str
    roles: frozenset[str]
    argument: TypeSpec

    def can_invoke(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True, eq=False)
class CosemClass:
    class_id: int
    name: str
    version: int
    attributes: tuple[AttributeDef, ...]
    methods: tuple[MethodDef, ...]
    create_roles: frozenset[str] = frozenset()
    delete_roles: frozenset[str] = frozenset()
    _by_index: Mapping[int, AttributeDef] = field(init=False, repr=False)
    _by_name: Mapping[str, AttributeDef] = field(init=False, repr=False)
    _methods: Mapping[int, MethodDef] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_index", {a.index: a for a in self.attributes})
        object.__setattr__(self, "_by_name", {a.name: a for a in self.attributes})
        object.__setattr__(self, "_methods", {m.index: m for m in self.methods})

    def attribute(self, index: int) -> AttributeDef:
        try:
            return self._by_index[index]
        except KeyError:
            raise UnknownAttribute(
                f"class {self.name} ({self.class_id}) has no attribute {index}", field=str(index)
            ) from None

    def attribute_named(self, name: str) -> AttributeDef:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownAttribute(
                f"class {self.name} ({self.class_id}) has no attribute {name!r}", field=name
            ) from None

    def method(self, index: int) -> MethodDef:
        try:
            return self._methods[index]
        except KeyError:
            raise UnknownMethod(
                f"class {self.name} ({self.class_id}) has no method {index}", field=str(index)
            ) from None


@dataclass(frozen=True, eq=False)
class Definitions:
    roles: tuple[str, ...]
    types: Mapping[str, TypeSpec]
    classes: Mapping[int, CosemClass]

    def cls(self, class_id: int) -> CosemClass:
        try:
            return self.classes[class_id]
        except KeyError:
            raise UnknownClass(f"no COSEM class {class_id}", field=str(class_id)) from None

    def class_named(self, name: str) -> CosemClass:
        for c in self.classes.values():
            if c.name == name:
                return c
        raise UnknownClass(f"no COSEM class named {name!r}", field=name)

    def spec(self, text: str) -> TypeSpec:
        """Parse a type spec string (e.g. ``"array<log_entry>"``) against the named types."""
        return _SpecParser({}, dict(self.types)).parse(text, "spec")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

_ARRAY_SPEC = re.compile(r"\Aarray<(.+)>\Z")


class _SpecParser:
    """Parses spec strings, resolving named types lazily so they may reference each other."""

    def __init__(self, raw_types: Mapping[str, Any], resolved: dict[str, TypeSpec]):
        self.raw = raw_types
        self.resolved = resolved
        self.resolving: list[str] = []

    def parse(self, text: str, where: str) -> TypeSpec:
        if not isinstance(text, str) or not text.strip():
            raise DefinitionError(f"{where}: type spec must be a non-empty string")
        text = text.strip()
        if text.endswith("?"):
            return NullableSpec(text, self.parse(text[:-1], where))
        if text == "any":
            return AnySpec()
        if m := _ARRAY_SPEC.match(text):
            return ArraySpec(text, self.parse(m.group(1), where))
        if text in DLMS_TYPE_NAMES:
            return PrimitiveSpec(text, text)
        return self.named(text, where)

    def named(self, name: str, where: str) -> TypeSpec:
        if name in self.resolved:
            return self.resolved[name]
        if name not in self.raw:
            raise DefinitionError(f"{where}: unknown type {name!r}")
        if name in self.resolving:
            raise DefinitionError(f"types.{name}: recursive definition via {self.resolving}")
        self.resolving.append(name)
        try:
            spec = self._build_named(name, self.raw[name])
        finally:
            self.resolving.pop()
        self.resolved[name] = spec
        return spec

    def _build_named(self, name: str, raw: Any) -> TypeSpec:
        where = f"types.{name}"
        if not isinstance(raw, Mapping):
            raise DefinitionError(f"{where}: must be a table")
        _only_keys(raw, {"base", "fields", "values", "min", "max"}, where)
        base = raw.get("base")
        if base == "structure" and "fields" in raw:
            fields = []
            for i, f in enumerate(_list(raw["fields"], f"{where}.fields")):
                fwhere = f"{where}.fields[{i}]"
                _only_keys(f, {"name", "type"}, fwhere)
                fname = _str(f.get("name"), f"{fwhere}.name")
                fields.append(FieldSpec(fname, self.parse(f.get("type"), fwhere)))
            if len({f.name for f in fields}) != len(fields):
                raise DefinitionError(f"{where}: duplicate field names")
            return StructureSpec(name, tuple(fields))
        if base not in INTEGER_RANGES:
            raise DefinitionError(f"{where}: base must be 'structure' (with fields) or an integer type")
        values = raw.get("values")
        if values is not None:
            if not isinstance(values, Mapping) or not values:
                raise DefinitionError(f"{where}.values: must be a non-empty table")
            low, high = INTEGER_RANGES[base]
            for k, v in values.items():
                if not isinstance(v, int) or not low <= v <= high:
                    raise DefinitionError(f"{where}.values.{k}: must be an integer in {low}..{high}")
            values = MappingProxyType(dict(values))
        low, high = raw.get("min"), raw.get("max")
        for key, bound in (("min", low), ("max", high)):
            if bound is not None and not isinstance(bound, int):
                raise DefinitionError(f"{where}.{key}: must be an integer")
        return PrimitiveSpec(name, base, low, high, values)


def _only_keys(raw: Any, allowed: set[str], where: str) -> None:
    if not isinstance(raw, Mapping):
        raise DefinitionError(f"{where}: must be a table")
    unknown = set(raw) - allowed
    if unknown:
        raise DefinitionError(f"{where}: unknown keys {sorted(unknown)}")


def _list(raw: Any, where: str) -> list:
    if not isinstance(raw, list):
        raise DefinitionError(f"{where}: must be a list")
    return raw


def _str(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise DefinitionError(f"{where}: must be a non-empty string")
    return raw


def _int(raw: Any, where: str, low: int, high: int) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or not low <= raw <= high:
        raise DefinitionError(f"{where}: must be an integer in {low}..{high}")
    return raw


def _roles(raw: Any, roles: tuple[str, ...], where: str) -> frozenset[str]:
    for role in _list(raw, where):
        if role not in roles:
            raise DefinitionError(f"{where}: unknown role {role!r}")
    return frozenset(raw)


def _access(raw: Any, roles: tuple[str, ...], where: str) -> Mapping[str, str]:
    _only_keys(raw, set(roles), where)
    for role, rights in raw.items():
        if rights not in ACCESS_VALUES:
            raise DefinitionError(f"{where}.{role}: access must be one of {sorted(ACCESS_VALUES)}")
    return MappingProxyType({role: raw.get(role, "") for role in roles})


def _build_class(raw: Any, roles: tuple[str, ...], parser: _SpecParser, where: str) -> CosemClass:
    _only_keys(
        raw,
        {"class_id", "name", "version", "access", "attributes", "methods", "create", "delete"},
        where,
    )
    class_id = _int(raw.get("class_id"), f"{where}.class_id", 0, 65535)
    where = f"class {class_id}"
    name = _str(raw.get("name"), f"{where}.name")
    version = _int(raw.get("version", 0), f"{where}.version", 0, 255)
    default_access = raw.get("access", {})
    _access(default_access, roles, f"{where}.access")

    attributes = []
    for i, a in enumerate(_list(raw.get("attributes"), f"{where}.attributes")):
        awhere = f"{where}.attributes[{i}]"
        _only_keys(a, {"index", "name", "type", "access"}, awhere)
        attributes.append(
            AttributeDef(
                index=_int(a.get("index"), f"{awhere}.index", 1, 255),
                name=_str(a.get("name"), f"{awhere}.name"),
                spec=parser.parse(a.get("type"), awhere),
                access=_access(a.get("access", default_access), roles, f"{awhere}.access"),
            )
        )
    methods = []
    for i, m in enumerate(_list(raw.get("methods", []), f"{where}.methods")):
        mwhere = f"{where}.methods[{i}]"
        _only_keys(m, {"index", "name", "roles", "argument"}, mwhere)
        methods.append(
            MethodDef(
                index=_int(m.get("index"), f"{mwhere}.index", 1, 255),
                name=_str(m.get("name"), f"{mwhere}.name"),
                roles=_roles(m.get("roles", []), roles, f"{mwhere}.roles"),
                argument=parser.parse(m.get("argument", "any"), mwhere),
            )
        )
    for kind, items in (("attribute", attributes), ("method", methods)):
        if len({x.index for x in items}) != len(items):
            raise DefinitionError(f"{where}: duplicate {kind} index")
        if len({x.name for x in items}) != len(items):
            raise DefinitionError(f"{where}: duplicate {kind} name")
    first = attributes[0] if attributes else None
    # COSEM invariant the model relies on: attribute 1 is the logical name (the OBIS code).
    if first is None or first.index != 1 or first.name != "logical_name" or (
        not isinstance(first.spec, PrimitiveSpec) or first.spec.type_name != "octet-string"
    ):
        raise DefinitionError(f"{where}: attribute 1 must be logical_name, an octet-string")
    return CosemClass(
        class_id=class_id,
        name=name,
        version=version,
        attributes=tuple(sorted(attributes, key=lambda a: a.index)),
        methods=tuple(sorted(methods, key=lambda m: m.index)),
        create_roles=_roles(raw.get("create", []), roles, f"{where}.create"),
        delete_roles=_roles(raw.get("delete", []), roles, f"{where}.delete"),
    )


def load_definitions(source: str | Path | None = None, *, text: str | None = None) -> Definitions:
    """Load definitions from a TOML file path, from TOML ``text``, or (neither) the packaged file."""
    if text is None:
        if source is None:
            text = resources.files(__package__).joinpath("definitions.toml").read_text("utf-8")
        else:
            text = Path(source).read_text("utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(f"not valid TOML: {exc}") from None
    _only_keys(raw, {"roles", "types", "classes"}, "definitions")

    roles = tuple(_list(raw.get("roles"), "roles"))
    if not roles or not all(isinstance(r, str) and r for r in roles) or len(set(roles)) != len(roles):
        raise DefinitionError("roles: must be a list of distinct non-empty strings")
    raw_types = raw.get("types", {})
    _only_keys(raw_types, set(raw_types), "types")
    for name in raw_types:
        if name in DLMS_TYPE_NAMES or name == "any" or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise DefinitionError(f"types.{name}: name must be [a-z0-9_] and not a DLMS type name")
    parser = _SpecParser(raw_types, {})
    types = {name: parser.named(name, f"types.{name}") for name in raw_types}

    classes: dict[int, CosemClass] = {}
    for i, c in enumerate(_list(raw.get("classes"), "classes")):
        cls = _build_class(c, roles, parser, f"classes[{i}]")
        if cls.class_id in classes:
            raise DefinitionError(f"class {cls.class_id}: defined twice")
        if any(other.name == cls.name for other in classes.values()):
            raise DefinitionError(f"class {cls.class_id}: name {cls.name!r} used twice")
        classes[cls.class_id] = cls
    return Definitions(roles, MappingProxyType(types), MappingProxyType(classes))


@functools.cache
def default_definitions() -> Definitions:
    """The packaged definitions, loaded once."""
    return load_definitions()
