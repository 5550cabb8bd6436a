"""Helpers for the gateway-operation tests (time sync, self test, logs, device data, removal
signal, WAN address): addresses of the objects in the gateway's own LDEV and their values."""

from __future__ import annotations

from smgw_emu.app.gateway import Gateway
from smgw_emu.app.operations import LOG_CLASS, OPERATION_OBJECTS
from smgw_emu.core import gatewaylogs
from smgw_emu.core.cosem import xmlcodec

from .cosem_flow import attributes


def object_path(gateway: Gateway, name: str) -> str:
    """Path of an operation object ("time-sync", "self-test", "device-data", "deinstallation-signal")
    or of a log ("log:system", "log:consumer", "log:calibration")."""
    if name.startswith("log:"):
        class_id, obis = LOG_CLASS, gatewaylogs.LOGS[name[4:]].obis
    else:
        class_id, obis = OPERATION_OBJECTS[name]
    return f"/smgw/cosem/gateway/{gateway.id}/{class_id}-{obis.hex}"


def method_result(body: bytes):
    """The value of a <method-result>."""
    return xmlcodec.method_result_from_xml(body)[1]


def buffer_rows(body: bytes) -> list[dict]:
    """The rows of a log buffer <attribute> answer, as dicts named after definitions.toml's log_entry."""
    _, value = xmlcodec.attribute_from_xml(body)
    names = ["timestamp", "record_number", "parent_record_number", "repetition_counter", "level", "outcome",
             "event_type", "message", "extensions"]
    rows = []
    for row in value.value:
        fields = dict(zip(names, row.value))
        extensions = {ext.value[0].value: ext.value[1].value for ext in fields["extensions"].value}
        rows.append({**{k: v.value for k, v in fields.items() if k not in ("event_type", "extensions")},
                     "event_type": [part.value for part in fields["event_type"].value], "extensions": extensions,
                     "event": extensions.get("event")})
    return rows


def values(body: bytes) -> dict:
    """name -> Python value of a <cosem-object> answer."""
    return {name: value.value for name, value in attributes(body).items()}
