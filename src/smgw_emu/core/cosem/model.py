"""The COSEM object model: OBIS codes, logical devices, objects, addresses, and the registry.

Addressing ([ours], after one vendor's HTTP interface, docs/domain.md section 4)::

    /smgw/cosem                                                     all LDEV kinds / LDEVs
    /smgw/cosem/<kind>                                              LDEVs of one kind
    /smgw/cosem/<kind>/<ldev>                                       objects of one LDEV
    /smgw/cosem/<kind>/<ldev>/<classid>-<OBIS hex>                  one object
    /smgw/cosem/<kind>/<ldev>/<classid>-<OBIS hex>/attributes/<n>   one attribute
    /smgw/cosem/<kind>/<ldev>/<classid>-<OBIS hex>/methods/<n>      one method

An LDEV id is unique across kinds (qualified names ``<OBIS hex>.<ldev>.sm`` carry no kind), and
an OBIS code is unique within its LDEV (as COSEM logical names are).

Access: ``get``/``set`` check the role's rights from the class definitions, then the type.
Order of checks for a write: unknown attribute, read-only attribute (no role may write it),
access denied (this role may not), type mismatch. The gateway's own processes write with
``store`` (type-checked, no access check) and read with ``peek``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Iterable, Literal, Mapping

from .definitions import ACCESS_VALUES, AttributeDef, CosemClass, Definitions, MethodDef, default_definitions
from .errors import (
    AccessDenied,
    BadAddress,
    BadObis,
    CosemTypeError,
    DuplicateLdev,
    DuplicateObject,
    ReadOnlyAttribute,
    UnknownLdev,
    UnknownObject,
)
from .selective import Selector, apply_selector
from .types import DlmsValue

__all__ = [
    "ObisCode",
    "LogicalDevice",
    "CosemObject",
    "ObjectAddress",
    "Resolved",
    "CosemModel",
    "PATH_PREFIX",
    "parse_qualified_name",
]

PATH_PREFIX = "/smgw/cosem"
_LDEV_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")
_LDEV_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OBIS_HEX = re.compile(r"[0-9A-Fa-f]{12}")
_OBIS_DOTTED = re.compile(r"(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[*.](\d{1,3}))?")


# ---------------------------------------------------------------------------------------------
# OBIS codes and logical devices
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ObisCode:
    """An OBIS code A-B:C.D.E*F, each group 0..255."""

    a: int
    b: int
    c: int
    d: int
    e: int
    f: int = 255

    def __post_init__(self) -> None:
        for group in (self.a, self.b, self.c, self.d, self.e, self.f):
            if not isinstance(group, int) or isinstance(group, bool) or not 0 <= group <= 255:
                raise BadObis(f"OBIS groups must be integers 0..255, got {group!r}")

    @classmethod
    def parse(cls, text: str) -> ObisCode:
        """Parse ``"0100010800ff"`` (12 hex digits) or ``"1-0:1.8.0*255"`` (``*F`` optional)."""
        if not isinstance(text, str):
            raise BadObis(f"OBIS code must be a string, got {type(text).__name__}")
        text = text.strip()
        if _OBIS_HEX.fullmatch(text):
            return cls.from_bytes(bytes.fromhex(text))
        if m := _OBIS_DOTTED.fullmatch(text):
            groups = [int(g) for g in m.groups(default="255")]
            return cls(*groups)
        raise BadObis(f"not an OBIS code: {text[:40]!r} (use 0100010800ff or 1-0:1.8.0*255)")

    @classmethod
    def from_bytes(cls, data: bytes) -> ObisCode:
        if len(data) != 6:
            raise BadObis(f"an OBIS code has 6 bytes, not {len(data)}")
        return cls(*data)

    def to_bytes(self) -> bytes:
        return bytes((self.a, self.b, self.c, self.d, self.e, self.f))

    @property
    def hex(self) -> str:
        return self.to_bytes().hex()

    def __str__(self) -> str:
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}*{self.f}"


@dataclass(frozen=True, order=True)
class LogicalDevice:
    """An LDEV: ``kind`` groups LDEVs in the address space (e.g. "meter"), ``id`` names it."""

    kind: str
    id: str

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not _LDEV_KIND.fullmatch(self.kind):
            raise BadAddress(f"bad LDEV kind {self.kind!r} (want [a-z][a-z0-9-]*, max 32)", field="kind")
        if not isinstance(self.id, str) or not _LDEV_ID.fullmatch(self.id):
            raise BadAddress(f"bad LDEV id {self.id!r} (want [A-Za-z0-9_-], max 64)", field="ldev")

    @property
    def path(self) -> str:
        return f"{PATH_PREFIX}/{self.kind}/{self.id}"

    def qualified_name(self, obis: ObisCode) -> str:
        return f"{obis.hex}.{self.id}.sm"


def parse_qualified_name(name: str) -> tuple[ObisCode, str]:
    """Split ``"<OBIS hex>.<ldev>.sm"`` into (OBIS code, LDEV id)."""
    parts = name.split(".") if isinstance(name, str) else []
    if len(parts) != 3 or parts[2] != "sm" or not _LDEV_ID.fullmatch(parts[1]):
        raise BadAddress(f"not a qualified name <OBIS hex>.<ldev>.sm: {str(name)[:80]!r}")
    if not _OBIS_HEX.fullmatch(parts[0]):
        raise BadObis(f"not a 12-digit hex OBIS code: {parts[0][:40]!r}")
    return ObisCode.parse(parts[0]), parts[1]


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------


class CosemObject:
    """One COSEM object: a class, an OBIS code (its logical name) and its attribute values.

    ``access_overrides`` ({attribute index: {role: rights}}) changes the class's access rights for
    this object only, e.g. to let the consumer read the consumer log but not the system log.
    """

    def __init__(
        self,
        cosem_class: CosemClass,
        obis: ObisCode,
        values: Mapping[int, DlmsValue] | None = None,
        *,
        access_overrides: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        self.cosem_class = cosem_class
        self.obis = obis
        self._attributes = {a.index: a for a in cosem_class.attributes}
        for index, rights in (access_overrides or {}).items():
            attr = cosem_class.attribute(index)
            unknown = set(rights) - set(attr.access)
            if unknown or not set(rights.values()) <= ACCESS_VALUES:
                raise ValueError(f"bad access override for attribute {index}: {dict(rights)}")
            merged = MappingProxyType({**attr.access, **rights})
            self._attributes[index] = replace(attr, access=merged)

        self._values = {a.index: a.spec.default() for a in cosem_class.attributes}
        self._values[1] = DlmsValue("octet-string", obis.to_bytes())
        for index, value in (values or {}).items():
            attr = self.attribute(index)
            if index == 1:
                if value != self._values[1]:
                    raise CosemTypeError(
                        f"logical_name {obis.hex}", value, reason="must equal the object's OBIS code",
                        field=attr.name,
                    )
                continue
            attr.spec.check(value, attr.name)
            self._values[index] = value

    def __repr__(self) -> str:
        return f"CosemObject({self.cosem_class.name}, {self.obis})"

    def copy(self) -> CosemObject:
        """An independent copy: same class, OBIS code and access overrides, its own values."""
        twin = object.__new__(CosemObject)
        twin.cosem_class, twin.obis = self.cosem_class, self.obis
        twin._attributes = self._attributes  # never changed after construction
        twin._values = dict(self._values)
        return twin

    @property
    def class_id(self) -> int:
        return self.cosem_class.class_id

    @property
    def values(self) -> Mapping[int, DlmsValue]:
        """All attribute values by index (read-only view, no access check)."""
        return MappingProxyType(self._values)

    def attribute(self, index: int) -> AttributeDef:
        """The attribute definition (with this object's access overrides)."""
        if index not in self._attributes:
            self.cosem_class.attribute(index)  # raises UnknownAttribute with the class named
        return self._attributes[index]

    def attributes(self) -> list[AttributeDef]:
        return [self._attributes[i] for i in sorted(self._attributes)]

    def get(self, index: int, role: str, selector: Selector | None = None) -> DlmsValue:
        """Read attribute ``index`` as ``role``, optionally through a selective-access selector."""
        attr = self.attribute(index)
        if not attr.can_read(role):
            raise AccessDenied(f"role {role} may not read {attr.name} of {self!r}", field=attr.name)
        return apply_selector(self._values[index], selector, field=attr.name)

    def set(self, index: int, value: DlmsValue, role: str) -> None:
        """Write attribute ``index`` as ``role``."""
        attr = self.attribute(index)
        if attr.read_only:
            raise ReadOnlyAttribute(f"{attr.name} of {self!r} is read-only", field=attr.name)
        if not attr.can_write(role):
            raise AccessDenied(f"role {role} may not write {attr.name} of {self!r}", field=attr.name)
        attr.spec.check(value, attr.name)
        self._values[index] = value

    def store(self, index: int, value: DlmsValue) -> None:
        """Write as the gateway itself: type-checked, no access check (logical_name stays fixed)."""
        attr = self.attribute(index)
        if index == 1:
            raise ReadOnlyAttribute("logical_name is fixed by the OBIS code", field=attr.name)
        attr.spec.check(value, attr.name)
        self._values[index] = value

    def peek(self, index: int) -> DlmsValue:
        """Read as the gateway itself: no access check."""
        self.attribute(index)
        return self._values[index]

    def readable(self, role: str | None) -> list[tuple[AttributeDef, DlmsValue]]:
        """(definition, value) of every attribute ``role`` may read; all of them for None."""
        return [
            (attr, self._values[attr.index])
            for attr in self.attributes()
            if role is None or attr.can_read(role)
        ]

    def check_method(self, index: int, role: str, argument: DlmsValue | None = None) -> MethodDef:
        """Check that ``role`` may invoke method ``index`` with ``argument`` (None = null-data).

        Returns the method definition; running it is the business of the process layer.
        """
        method = self.cosem_class.method(index)
        if not method.can_invoke(role):
            raise AccessDenied(f"role {role} may not invoke {method.name} of {self!r}", field=method.name)
        method.argument.check(argument if argument is not None else DlmsValue.null(), method.name)
        return method


# ---------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------

Level = Literal["root", "kind", "ldev", "object", "attribute", "method"]


@dataclass(frozen=True)
class ObjectAddress:
    """A parsed ``/smgw/cosem/...`` path; fields after the addressed level are None."""

    kind: str | None = None
    ldev: str | None = None
    class_id: int | None = None
    obis: ObisCode | None = None
    member: Literal["attributes", "methods"] | None = None
    index: int | None = None

    @property
    def level(self) -> Level:
        if self.member == "attributes":
            return "attribute"
        if self.member == "methods":
            return "method"
        if self.obis is not None:
            return "object"
        if self.ldev is not None:
            return "ldev"
        return "kind" if self.kind is not None else "root"

    @property
    def logical_device(self) -> LogicalDevice | None:
        return LogicalDevice(self.kind, self.ldev) if self.ldev is not None else None

    @classmethod
    def parse(cls, path: str) -> ObjectAddress:
        """Parse a decoded URL path (no query string). One trailing slash is tolerated."""
        if not isinstance(path, str) or not (path == PATH_PREFIX or path.startswith(PATH_PREFIX + "/")):
            raise BadAddress(f"not a COSEM path (must start with {PATH_PREFIX}): {str(path)[:80]!r}")
        rest = path[len(PATH_PREFIX):]
        if rest.endswith("/"):
            rest = rest[:-1]
        parts = rest.split("/")[1:] if rest else []
        if len(parts) > 5 or len(parts) == 4:
            raise BadAddress(f"bad COSEM path {path[:120]!r} (want .../attributes/<n> or .../methods/<n>)")
        if any(not p for p in parts):
            raise BadAddress(f"empty segment in COSEM path {path[:120]!r}")

        kind = ldev = member = None
        class_id = index = None
        obis = None
        if parts:
            kind = parts[0]
            if not _LDEV_KIND.fullmatch(kind):
                raise BadAddress(f"bad LDEV kind {kind[:40]!r}", field="kind")
        if len(parts) >= 2:
            ldev = parts[1]
            if not _LDEV_ID.fullmatch(ldev):
                raise BadAddress(f"bad LDEV id {ldev[:70]!r}", field="ldev")
        if len(parts) >= 3:
            m = re.fullmatch(r"([0-9]{1,5})-([0-9A-Fa-f]{12})", parts[2])
            if not m or int(m.group(1)) > 65535:
                raise BadAddress(f"bad object segment {parts[2][:40]!r} (want <classid>-<OBIS hex>)", field="object")
            class_id, obis = int(m.group(1)), ObisCode.parse(m.group(2))
        if len(parts) == 5:
            if parts[3] not in ("attributes", "methods"):
                raise BadAddress(f"bad COSEM path {path[:120]!r} (want .../attributes/<n> or .../methods/<n>)")
            member = parts[3]
            if not re.fullmatch(r"[0-9]{1,3}", parts[4]) or not 1 <= int(parts[4]) <= 255:
                raise BadAddress(f"bad {member[:-1]} index {parts[4][:10]!r}", field="index")
            index = int(parts[4])
        return cls(kind, ldev, class_id, obis, member, index)

    @property
    def path(self) -> str:
        parts = [PATH_PREFIX]
        if self.kind is not None:
            parts.append(self.kind)
        if self.ldev is not None:
            parts.append(self.ldev)
        if self.obis is not None:
            parts.append(f"{self.class_id}-{self.obis.hex}")
        if self.member is not None:
            parts += [self.member, str(self.index)]
        return "/".join(parts)

    @classmethod
    def of_object(cls, ldev: LogicalDevice, obj: CosemObject) -> ObjectAddress:
        return cls(ldev.kind, ldev.id, obj.class_id, obj.obis)


@dataclass(frozen=True)
class Resolved:
    """What an address points at; levels below the address are None."""

    address: ObjectAddress
    ldev: LogicalDevice | None = None
    obj: CosemObject | None = None
    attribute: AttributeDef | None = None
    method: MethodDef | None = None


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


class CosemModel:
    """All LDEVs and their objects. Not thread-safe: owned by one event loop."""

    def __init__(self, definitions: Definitions | None = None) -> None:
        self.definitions = definitions or default_definitions()
        self._ldevs: dict[str, LogicalDevice] = {}  # by id
        self._objects: dict[str, dict[ObisCode, CosemObject]] = {}  # ldev id -> obis -> object

    # LDEVs -----------------------------------------------------------------------------------

    def add_ldev(self, ldev: LogicalDevice) -> LogicalDevice:
        if ldev.id in self._ldevs:
            raise DuplicateLdev(f"LDEV {ldev.id} exists (kind {self._ldevs[ldev.id].kind})", field="ldev")
        self._ldevs[ldev.id] = ldev
        self._objects[ldev.id] = {}
        return ldev

    def ldev(self, kind: str, ldev_id: str) -> LogicalDevice:
        found = self._ldevs.get(ldev_id)
        if found is None or found.kind != kind:
            raise UnknownLdev(f"no LDEV {kind}/{ldev_id}", field="ldev")
        return found

    def ldev_by_id(self, ldev_id: str) -> LogicalDevice:
        found = self._ldevs.get(ldev_id)
        if found is None:
            raise UnknownLdev(f"no LDEV {ldev_id}", field="ldev")
        return found

    def remove_ldev(self, kind: str, ldev_id: str) -> list[CosemObject]:
        """Remove an LDEV and return the objects it held."""
        self.ldev(kind, ldev_id)
        del self._ldevs[ldev_id]
        return list(self._objects.pop(ldev_id).values())

    def ldevs(self, kind: str | None = None) -> list[LogicalDevice]:
        return sorted(l for l in self._ldevs.values() if kind is None or l.kind == kind)

    def kinds(self) -> list[str]:
        return sorted({l.kind for l in self._ldevs.values()})

    # Objects ---------------------------------------------------------------------------------

    def add_object(self, ldev: LogicalDevice, obj: CosemObject) -> CosemObject:
        objects = self._objects[self.ldev(ldev.kind, ldev.id).id]
        if obj.obis in objects:
            raise DuplicateObject(
                f"LDEV {ldev.id} already holds {objects[obj.obis]!r} at {obj.obis.hex}", field="obis"
            )
        objects[obj.obis] = obj
        return obj

    def replace_object(self, ldev: LogicalDevice, obj: CosemObject) -> CosemObject:
        """Put ``obj`` at its OBIS code in ``ldev``, replacing whatever object is there."""
        self._objects[self.ldev(ldev.kind, ldev.id).id][obj.obis] = obj
        return obj

    def create_object(
        self,
        ldev: LogicalDevice,
        class_id: int,
        obis: ObisCode,
        values: Mapping[int, DlmsValue] | None = None,
        *,
        access_overrides: Mapping[int, Mapping[str, str]] | None = None,
        role: str | None = None,
    ) -> CosemObject:
        """Build an object of a defined class (values type-checked) and add it to ``ldev``.

        With a ``role`` (a request from outside), the class must list the role in ``create`` and
        every given value except logical_name must be writable by it; None is the gateway itself.
        """
        self.ldev(ldev.kind, ldev.id)
        return self.add_object(
            ldev, self.build_object(class_id, obis, values, access_overrides=access_overrides, role=role)
        )

    def build_object(
        self,
        class_id: int,
        obis: ObisCode,
        values: Mapping[int, DlmsValue] | None = None,
        *,
        access_overrides: Mapping[int, Mapping[str, str]] | None = None,
        role: str | None = None,
    ) -> CosemObject:
        """The checks of :meth:`create_object` without adding the object to any LDEV.

        Lets a caller validate a proposed object first and change the model only after the
        change was stored.
        """
        cosem_class = self.definitions.cls(class_id)
        obj = CosemObject(cosem_class, obis, values, access_overrides=access_overrides)
        if role is not None:
            if role not in cosem_class.create_roles:
                raise AccessDenied(f"role {role} may not create {cosem_class.name} objects", field="class-id")
            for index in values or {}:
                attr = obj.attribute(index)
                if index == 1:
                    continue
                if attr.read_only:
                    raise ReadOnlyAttribute(f"{attr.name} is read-only, it cannot be given", field=attr.name)
                if not attr.can_write(role):
                    raise AccessDenied(f"role {role} may not write {attr.name}", field=attr.name)
        return obj

    def object(self, ldev: LogicalDevice, class_id: int, obis: ObisCode) -> CosemObject:
        obj = self._objects[self.ldev(ldev.kind, ldev.id).id].get(obis)
        if obj is None or obj.class_id != class_id:
            raise UnknownObject(f"no object {class_id}-{obis.hex} in LDEV {ldev.id}", field="object")
        return obj

    def remove_object(
        self, ldev: LogicalDevice, class_id: int, obis: ObisCode, role: str | None = None
    ) -> CosemObject:
        """Remove an object; with a ``role``, the class must list it in ``delete``."""
        obj = self.object(ldev, class_id, obis)
        if role is not None and role not in obj.cosem_class.delete_roles:
            raise AccessDenied(f"role {role} may not delete {obj!r}", field="object")
        del self._objects[ldev.id][obis]
        return obj

    def objects(self, ldev: LogicalDevice) -> list[CosemObject]:
        held = self._objects[self.ldev(ldev.kind, ldev.id).id]
        return sorted(held.values(), key=lambda o: (o.class_id, o.obis))

    def find_qualified(self, name: str) -> tuple[LogicalDevice, CosemObject]:
        """Look up ``"<OBIS hex>.<ldev>.sm"``."""
        obis, ldev_id = parse_qualified_name(name)
        ldev = self.ldev_by_id(ldev_id)
        obj = self._objects[ldev_id].get(obis)
        if obj is None:
            raise UnknownObject(f"no object {obis.hex} in LDEV {ldev_id}", field="object")
        return ldev, obj

    def resolve(self, address: ObjectAddress | str) -> Resolved:
        """Check that everything an address names exists, and return it."""
        if isinstance(address, str):
            address = ObjectAddress.parse(address)
        if address.level in ("root", "kind"):
            return Resolved(address)
        ldev = self.ldev(address.kind, address.ldev)
        if address.level == "ldev":
            return Resolved(address, ldev)
        obj = self.object(ldev, address.class_id, address.obis)
        if address.level == "attribute":
            return Resolved(address, ldev, obj, attribute=obj.attribute(address.index))
        if address.level == "method":
            return Resolved(address, ldev, obj, method=obj.cosem_class.method(address.index))
        return Resolved(address, ldev, obj)

    def iter_objects(self) -> Iterable[tuple[LogicalDevice, CosemObject]]:
        for ldev in self.ldevs():
            for obj in self.objects(ldev):
                yield ldev, obj
