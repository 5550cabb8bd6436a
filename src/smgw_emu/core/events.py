"""Events and reports the gateway pushes on the INFO-REPORT channel (Lastenheft 5.14), sans-IO.

[ours] The normative XML of 5.14.1 is not public. An event is one XML document:

    <event xmlns="urn:smgw-emu:event:1" id="42" type="profile-created"
           gateway="EXXX0012345678" time="2026-11-25T08:00:00Z">
      <detail name="ldev">tafprofile/p1</detail>
    </event>

`id` is the outbox id, unique per gateway and stable across retries, so a GWA can drop a
duplicate delivery. The GWA acknowledges an event by answering 2xx; anything else is a retry.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from lxml import etree

from smgw_emu.core.xmlsafe import parse_xml

EVENT_NS = "urn:smgw-emu:event:1"
_E = f"{{{EVENT_NS}}}"


@dataclass(frozen=True)
class Event:
    type: str
    gateway: str
    time: _dt.datetime
    details: dict[str, str] = field(default_factory=dict)
    id: int | None = None


def encode_event(event: Event, event_id: int | None = None) -> bytes:
    root = etree.Element(_E + "event", nsmap={None: EVENT_NS})
    if event_id is not None or event.id is not None:
        root.set("id", str(event_id if event_id is not None else event.id))
    root.set("type", event.type)
    root.set("gateway", event.gateway)
    root.set("time", event.time.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    for name, value in sorted(event.details.items()):
        detail = etree.SubElement(root, _E + "detail")
        detail.set("name", name)
        detail.text = str(value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def decode_event(data: bytes) -> Event:
    root = parse_xml(data)
    if root.tag != _E + "event":
        raise ValueError(f"not an event document: {root.tag}")
    time = _dt.datetime.strptime(root.get("time", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    details = {d.get("name", ""): d.text or "" for d in root.iter(_E + "detail")}
    ident = root.get("id")
    return Event(root.get("type", ""), root.get("gateway", ""), time, details, int(ident) if ident else None)
