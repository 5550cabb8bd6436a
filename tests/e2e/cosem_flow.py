"""Helpers for the COSEM end-to-end tests: open a channel, settle the INFO-REPORT channel,
provision state over a channel of its own (outside the figure's transcript)."""

from __future__ import annotations

from lxml import etree

from smgw_emu.app.gateway import Gateway
from smgw_emu.core.cosem import xmlcodec
from smgw_emu.reference.cosem_client import (
    communication_profile_values,
    evaluation_profile_values,
    meter_profile_values,
    profile_document,
    profile_path,
)
from smgw_emu.reference.gwa import GwaChannel, ReferenceGwa

from .conftest import mark, wait_for

COSEM = "{urn:smgw-emu:cosem:1}"
ERROR = "{urn:smgw-emu:error:1}"


async def open_channel(gateway: Gateway, gwa: ReferenceGwa) -> GwaChannel:
    channel = await gwa.wake(gateway.wakeup_address, gateway.id)
    await wait_for(lambda: gateway.management is not None and gateway.management.authenticated())
    return channel


async def settled(gateway: Gateway) -> None:
    """Every queued event delivered and the INFO-REPORT channel closed again."""
    await wait_for(lambda: gateway.info_report.idle.is_set() and not gateway.store.pending("info-report"))


async def provision(gateway: Gateway, gwa: ReferenceGwa, *requests: tuple[str, str, bytes]) -> None:
    """Run set-up requests on a channel of their own, close it, settle, then mark the transcripts:
    what a figure's test does next starts from a clean transcript."""
    channel = await open_channel(gateway, gwa)
    for method, path, body in requests:
        response = await channel.request(method, path, body)
        assert response.status in (200, 201, 204), f"{method} {path}: {response.status} {response.text}"
    await channel.close()
    await wait_for(lambda: not gateway.management.is_open)
    await settled(gateway)
    mark(gateway, gwa)


def create(kind: str, ldev_id: str, values: dict) -> tuple[str, str, bytes]:
    return ("POST", profile_path(kind, ldev_id), profile_document(kind, values))


def emt_profile(pki, **changes) -> tuple[str, str, bytes]:
    return create("commprofile", pki.identities.emt, communication_profile_values(pki, **changes))


def meter(pki, **changes) -> tuple[str, str, bytes]:
    return create("meter", pki.identities.meter, meter_profile_values(pki, **changes))


def evaluation(pki, profile_id: str, **changes) -> tuple[str, str, bytes]:
    return create("tafprofile", profile_id, evaluation_profile_values(pki, profile_id, **changes))


def attributes(body: bytes) -> dict[str, object]:
    """name -> DlmsValue of a <cosem-object> response."""
    doc = xmlcodec.object_from_xml(body)
    root = etree.fromstring(body)
    names = {int(a.get("index")): a.get("name") for a in root.iter(COSEM + "attribute")}
    return {names[i]: v for i, v in doc.attributes.items()}


def error_of(body: bytes) -> xmlcodec.ErrorDocument:
    """The API's error document (urn:smgw-emu:error:1): code, message, field."""
    root = etree.fromstring(body)
    assert root.tag == ERROR + "error", body[:200]
    field = root.find(ERROR + "field")
    return xmlcodec.ErrorDocument(root.get("code"), root.findtext(ERROR + "message", ""),
                                  field.text if field is not None else None)


def system_events(gateway: Gateway, since: int = 0) -> list:
    return gateway.store.logs("system", since_record=since, limit=1_000_000)


def last_record(gateway: Gateway) -> int:
    entries = gateway.store.log_tail("system", 1)
    return entries[-1].record if entries else 0
