"""Selective access to array-valued attributes (value lists, logs, profile buffers).

Two selectors, taken from the query parameters of the HTTP addressing scheme:

* by index: ``q.fromidx`` (default: the first entry) and ``q.count`` (default: all the rest);
* by time: ``q.fromtime`` and/or ``q.totime``, ISO 8601 with a UTC offset (or ``Z``). A row is
  selected when its time stamp ``t`` satisfies ``fromtime <= t < totime``. Rows are structures
  whose first element is a date-time.

[ours] Indices start at :data:`FROM_INDEX_BASE` (0); the half-open time interval avoids double
counting when consecutive windows are read. An index beyond the end selects nothing, it is not
an error. Mixing index and time parameters, repeating one, or an unknown ``q.*`` parameter is a
:class:`BadSelector`; parameters not starting with ``q.`` are left to the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping, Union

from .errors import BadSelector, SelectiveAccessUnsupported
from .types import DlmsValue

__all__ = [
    "FROM_INDEX_BASE",
    "QUERY_PARAMETERS",
    "IndexSelector",
    "TimeSelector",
    "Selector",
    "parse_selector",
    "apply_selector",
]

FROM_INDEX_BASE = 0  # [ours] first index of q.fromidx
QUERY_PARAMETERS = ("q.fromidx", "q.count", "q.fromtime", "q.totime")
_MAX_INT_DIGITS = 10  # bounds the work of int() on hostile input; 10 digits cover uint32


@dataclass(frozen=True)
class IndexSelector:
    from_index: int = FROM_INDEX_BASE
    count: int | None = None  # None: to the end


@dataclass(frozen=True)
class TimeSelector:
    from_time: datetime | None = None  # inclusive
    to_time: datetime | None = None  # exclusive


Selector = Union[IndexSelector, TimeSelector]


def _parse_int(name: str, text: str, minimum: int) -> int:
    if not re.fullmatch(rf"[0-9]{{1,{_MAX_INT_DIGITS}}}", text):
        raise BadSelector(f"{name} must be a decimal integer, not {text[:40]!r}", field=name)
    number = int(text)
    if number < minimum:
        raise BadSelector(f"{name} must be at least {minimum}, not {number}", field=name)
    return number


def _parse_time(name: str, text: str) -> datetime:
    # A '+' of a UTC offset arrives as a space when the client did not percent-encode it; a
    # space is never valid in the value, so restoring it is unambiguous.
    candidate = text.replace(" ", "+") if text.count(" ") == 1 else text
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        raise BadSelector(f"{name} must be an ISO 8601 date-time, not {text[:40]!r}", field=name) from None
    if moment.utcoffset() is None:
        raise BadSelector(f"{name} needs a UTC offset or Z: {text[:40]!r}", field=name)
    return moment


def parse_selector(query: Mapping[str, str] | Iterable[tuple[str, str]]) -> Selector | None:
    """The selector described by the ``q.*`` parameters of ``query``, or None if there are none.

    ``query`` may be a mapping (a multidict's ``items()`` repeats keys, and repeats are refused)
    or an iterable of (name, value) pairs.
    """
    pairs = query.items() if hasattr(query, "items") else query
    params: dict[str, str] = {}
    for name, value in pairs:
        if not name.startswith("q."):
            continue
        if name not in QUERY_PARAMETERS:
            raise BadSelector(f"unknown selective access parameter {name[:40]!r}", field=name[:40])
        if name in params:
            raise BadSelector(f"{name} given more than once", field=name)
        params[name] = value
    if not params:
        return None
    by_index = {"q.fromidx", "q.count"} & params.keys()
    by_time = {"q.fromtime", "q.totime"} & params.keys()
    if by_index and by_time:
        raise BadSelector("select by index or by time, not both", field=sorted(by_time)[0])
    if by_index:
        return IndexSelector(
            from_index=_parse_int("q.fromidx", params["q.fromidx"], FROM_INDEX_BASE)
            if "q.fromidx" in params
            else FROM_INDEX_BASE,
            count=_parse_int("q.count", params["q.count"], 0) if "q.count" in params else None,
        )
    from_time = _parse_time("q.fromtime", params["q.fromtime"]) if "q.fromtime" in params else None
    to_time = _parse_time("q.totime", params["q.totime"]) if "q.totime" in params else None
    if from_time and to_time and from_time > to_time:
        raise BadSelector("q.fromtime is after q.totime", field="q.fromtime")
    return TimeSelector(from_time, to_time)


def apply_selector(value: DlmsValue, selector: Selector | None, *, field: str | None = None) -> DlmsValue:
    """The part of array ``value`` chosen by ``selector`` (all of it for None)."""
    if selector is None:
        return value
    if value.type_name != "array":
        raise SelectiveAccessUnsupported(
            f"selective access needs an array, this is a {value.type_name}", field=field
        )
    rows = value.value
    if isinstance(selector, IndexSelector):
        start = selector.from_index - FROM_INDEX_BASE
        stop = None if selector.count is None else start + selector.count
        return DlmsValue("array", rows[start:stop])
    selected = []
    for row in rows:
        stamp = row.value[0] if row.type_name == "structure" and row.value else None
        if stamp is None or stamp.type_name != "date-time":
            raise SelectiveAccessUnsupported(
                "selection by time needs rows that are structures starting with a date-time",
                field=field,
            )
        t = stamp.value
        if (selector.from_time is None or selector.from_time <= t) and (
            selector.to_time is None or t < selector.to_time
        ):
            selected.append(row)
    return DlmsValue("array", selected)
