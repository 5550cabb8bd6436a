"""6.5.1 device discovery: the LDEVs (fig. 43), then the objects of each (fig. 44); reading
objects, attributes and arrays with selective access."""

from __future__ import annotations

import datetime as _dt
from urllib.parse import quote

from smgw_emu import __version__
from smgw_emu.core.cosem import xmlcodec

from .conftest import assert_transcript
from .cosem_flow import attributes, emt_profile, error_of, meter, open_channel, provision

SYSTEM_LOG = "28403-0000636200ff"


async def test_fig43_discover_ldevs(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), meter(pki))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("GET", "/smgw/cosem", step="get-ldev-list")
    assert response.status == 200, response.text
    ldevs = {(l.kind, l.id) for l in xmlcodec.ldev_list_from_xml(response.body)}
    assert ldevs == {("gateway", gateway.id), ("commprofile", gateway.gwa.id), ("commprofile", pki.identities.emt),
                     ("meter", pki.identities.meter)}
    assert_transcript(43, gateway, gwa)


async def test_ldevs_of_one_kind(gateway, gwa, pki):
    await provision(gateway, gwa, meter(pki))
    channel = await open_channel(gateway, gwa)
    meters = xmlcodec.ldev_list_from_xml((await channel.request("GET", "/smgw/cosem/meter")).body)
    assert [(l.kind, l.id) for l in meters] == [("meter", pki.identities.meter)]
    assert xmlcodec.ldev_list_from_xml((await channel.request("GET", "/smgw/cosem/clsprofile/")).body) == []
    unknown = await channel.request("GET", "/smgw/cosem/toaster")
    assert unknown.status == 404 and error_of(unknown.body).field == "kind"


async def test_fig44_discover_objects_of_each_ldev(gateway, gwa, pki):
    meter_id = pki.identities.meter
    await provision(gateway, gwa, meter(pki))
    channel = await open_channel(gateway, gwa)
    own = await channel.request("GET", f"/smgw/cosem/gateway/{gateway.id}", step="get-ldev-objects")
    assert own.status == 200, own.text
    ldev, refs = xmlcodec.object_list_from_xml(own.body)
    assert (ldev.kind, ldev.id) == ("gateway", gateway.id)
    # at least these (other processes add objects of their own to the gateway's LDEV)
    assert {(r.class_id, r.obis.hex, r.class_name) for r in refs} >= {
        (1, "0100000200ff", "Data"), (8, "0000010000ff", "Clock"), (28403, "0000636200ff", "Log"),
        (28700, "00002c0000ff", "FirmwareUpdate")}
    response = await channel.request("GET", f"/smgw/cosem/meter/{meter_id}", step="get-ldev-objects")
    _, refs = xmlcodec.object_list_from_xml(response.body)
    assert [(r.class_id, r.obis.hex) for r in refs] == [(28300, "0000800002ff"), (28403, "0100010800ff"), (28403, "0100020800ff")]
    assert_transcript(44, gateway, gwa)
    # what discovery lists can be read
    clock = attributes((await channel.request("GET", f"/smgw/cosem/gateway/{gateway.id}/8-0000010000ff")).body)
    assert abs(clock["time"].value - gateway.clock.now()) < _dt.timedelta(seconds=5)
    firmware = await channel.request("GET", f"/smgw/cosem/gateway/{gateway.id}/1-0100000200ff/attributes/2")
    assert xmlcodec.attribute_from_xml(firmware.body)[1].value == __version__


async def test_selective_access_on_the_system_log(gateway, gwa, pki):
    channel = await open_channel(gateway, gwa)
    path = f"/smgw/cosem/gateway/{gateway.id}/{SYSTEM_LOG}/attributes/2"
    everything = xmlcodec.attribute_from_xml((await channel.request("GET", path)).body)[1].value
    assert len(everything) >= 4  # personalisation, start, wake-up, channel, AUTH ...
    records = [row.value[1].value for row in everything]
    assert records == sorted(records)

    by_index = await channel.request("GET", path + "?q.fromidx=1&q.count=2")
    assert by_index.status == 200, by_index.text
    rows = xmlcodec.attribute_from_xml(by_index.body)[1].value
    assert [row.value[1].value for row in rows] == records[1:3]

    stamps = [row.value[0].value for row in everything]
    window = f"?q.fromtime={quote(stamps[1].isoformat())}&q.totime={quote(stamps[-1].isoformat())}"
    by_time = xmlcodec.attribute_from_xml((await channel.request("GET", path + window)).body)[1].value
    assert [row.value[0].value for row in by_time] == [t for t in stamps if stamps[1] <= t < stamps[-1]]

    for query, field in (("?q.fromidx=x", "q.fromidx"), ("?q.fromidx=1&q.totime=2026-01-01T00:00:00Z", "q.totime"),
                         ("?q.bogus=1", "q.bogus")):
        bad = await channel.request("GET", path + query)
        assert (bad.status, error_of(bad.body).code, error_of(bad.body).field) == (400, "bad-selector", field)
    scalar = await channel.request("GET", f"/smgw/cosem/gateway/{gateway.id}/8-0000010000ff/attributes/2?q.count=1")
    assert scalar.status == 400 and error_of(scalar.body).code == "selective-access-unsupported"
    on_object = await channel.request("GET", f"/smgw/cosem/gateway/{gateway.id}/{SYSTEM_LOG}?q.count=1")
    assert on_object.status == 400 and error_of(on_object.body).code == "bad-selector"
