"""Meter data to the EMT, end to end: billing (6.5.13, fig. 57) and non-billing (6.5.14, fig. 58)
data transfers, and their failures (EMT unreachable: retried, kept across a restart).

Real parts only: the gateway on a virtual clock, the reference GWA, the reference meter (LMN,
TLS, SML) and the reference EMT's data endpoint (HTTPS with the EMT's certificate; it opens the
CMS container with its encryption key and verifies the gateway's signature).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
from decimal import Decimal

import pytest

from smgw_emu.app.gateway import Gateway
from smgw_emu.core import taf
from smgw_emu.core.clock import VirtualClock
from smgw_emu.core.cosem import ObisCode
from smgw_emu.reference.cosem_client import (
    evaluation_profile_values,
    profile_document,
    profile_path,
)
from smgw_emu.reference.emt_data import ReferenceEmtData
from smgw_emu.reference.meter import ReferenceMeter

from .conftest import assert_transcript, gateway_config, mark, started, wait_for
from .cosem_flow import emt_profile, open_channel, settled, system_events
from .test_lmn_pairing import INITIAL_KEY, LMN, method_path, profile_body

E180 = ObisCode(1, 0, 1, 8, 0).to_bytes()
E280 = ObisCode(1, 0, 2, 8, 0).to_bytes()


@pytest.fixture
async def gateway(pki, gwa, tmp_path):
    # start on the hour + 1 s, so the test knows where the boundaries are (the wake-up window covers the gap)
    now = _dt.datetime.now(_dt.timezone.utc)
    start = _dt.datetime.fromtimestamp(math.floor(now.timestamp() / 3600) * 3600 + 1, _dt.timezone.utc)
    clock = VirtualClock(start)
    gw = Gateway(gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"}, lmn=LMN,
                                wakeup={"window_s": 3600}), clock=clock)
    yield await started(gw, gwa)
    if gw.store is not None:
        await gw.stop()


@pytest.fixture
async def meter(pki):
    async with ReferenceMeter(pki, initial_key=INITIAL_KEY) as reference:
        yield reference


@pytest.fixture
async def emt(pki):
    async with ReferenceEmtData(pki) as reference:
        yield reference


async def set_up(gateway, gwa, pki, meter, emt, profile_id: str, **values) -> None:
    """EMT profile (its data URL), meter profile, pairing, evaluation profile: outside the figure."""
    channel = await open_channel(gateway, gwa)
    for method, path, body in (emt_profile(pki, info_report_url=emt.url, retry_interval_s=10, max_retries=2),):
        assert (await channel.request(method, path, body)).status == 201
    assert (await channel.request("POST", profile_path("meter", meter.meter_id), profile_body(pki, meter))).status == 201
    assert (await channel.request("POST", method_path(meter.meter_id, 1), b"")).status == 200
    await gwa.wait_event("meter-paired")
    body = profile_document("tafprofile", evaluation_profile_values(pki, profile_id, **values))
    response = await channel.request("POST", profile_path("tafprofile", profile_id), body)
    assert response.status == 201, response.text
    await channel.close()
    await wait_for(lambda: not gateway.management.is_open)
    await settled(gateway)


async def run_quarters(gateway, meter_id: str, quarters: int) -> None:
    """Move the clock over `quarters` capture-period boundaries, waiting for each meter reading."""
    for _ in range(quarters):
        count = len(gateway.store.meter_values(meter_id, E180.hex()))
        now = gateway.clock.now().timestamp()
        gateway.clock.advance(math.floor(now / 900) * 900 + 900 - now)
        await wait_for(lambda: len(gateway.store.meter_values(meter_id, E180.hex())) == count + 1)


def mark_all(gateway, gwa, *others) -> None:
    mark(gateway, gwa)
    for other in others:
        other.transcript.mark()


TAF1 = dict(billing=True, taf=1, tariff_id="TAF1-2026", billing_period="PT1H", tariff_stages=[], day_profiles=[],
            special_days=[], registers=[E180])


async def test_fig57_billing_data_transfer(gateway, gwa, pki, meter, emt):
    await set_up(gateway, gwa, pki, meter, emt, "TAF1-A", **TAF1)
    await run_quarters(gateway, meter.meter_id, 3)
    await settled(gateway)  # meter-detected reached the GWA
    meter.registers["0100010800ff"].value += 100
    mark_all(gateway, gwa, emt, meter)
    await run_quarters(gateway, meter.meter_id, 1)  # the hour boundary: the billing period ends
    meter.transcript.mark()
    gateway.clock.advance(taf.SETTLE_S)
    document = await emt.wait_document()
    await wait_for(lambda: gateway.datatransfer.delivery.idle.is_set() and not gateway.store.pending("emt-data"))
    attrs = document.attributes
    assert (attrs["profile"], attrs["taf"], attrs["kind"], attrs["billing-relevant"], attrs["tariff-id"]) == (
        "TAF1-A", "1", "billing-period", "true", "TAF1-2026")
    end = gateway.clock.now() - _dt.timedelta(seconds=taf.SETTLE_S)
    assert attrs["period-end"] == taf.stamp(end.replace(second=0, microsecond=0))
    [value] = document.values[(meter.meter_id, "0100010800ff")]
    stored = gateway.store.meter_values(meter.meter_id, "0100010800ff")
    assert (value.time, value.value, value.status) == stored[-1] and value.time == attrs["period-end"]
    assert float(stored[-1][1]) > float(stored[-2][1])  # the raise of the last quarter is in the billing value
    assert_transcript(57, gateway, gwa, others=[emt.transcript])


async def test_fig58_non_billing_data_transfer(gateway, gwa, pki, meter, emt):
    await set_up(gateway, gwa, pki, meter, emt, "TAF7-A", billing=False, billing_period="PT1H")
    for step in range(4):
        meter.registers["0100010800ff"].value += 10
        await run_quarters(gateway, meter.meter_id, 1)
        if step == 0:
            await settled(gateway)  # meter-detected reached the GWA
            mark_all(gateway, gwa, emt)
    gateway.clock.advance(taf.SETTLE_S)
    document = await emt.wait_document()
    await wait_for(lambda: gateway.datatransfer.delivery.idle.is_set())
    assert (document.attributes["taf"], document.attributes["kind"]) == ("7", "send-interval")
    series = document.values[(meter.meter_id, "0100010800ff")]
    stored = gateway.store.meter_values(meter.meter_id, "0100010800ff")
    assert [(v.time, v.value, v.status) for v in series] == stored[-4:]
    assert len({round(float(b[1]) - float(a[1]), 1) for a, b in zip(stored[-4:], stored[-3:])}) == 1
    assert len(document.values[(meter.meter_id, "0100020800ff")]) == 4
    assert_transcript(58, gateway, gwa, others=[emt.transcript])


async def test_emt_unreachable_data_kept_retried_and_delivered_after_restart(gateway, gwa, pki, meter, emt, tmp_path):
    await set_up(gateway, gwa, pki, meter, emt, "TAF1-B", **TAF1)
    emt.refuse_with = 503
    await run_quarters(gateway, meter.meter_id, 4)
    gateway.clock.advance(taf.SETTLE_S)
    await wait_for(lambda: gateway.journal.counters["data-transfer-retry"] >= 1)
    gateway.clock.advance(10)  # the EMT profile's retry_interval_s: second and last try
    [failed] = await gwa.wait_event("data-transfer-failed")
    assert (failed.details["attempts"], failed.details["reason"]) == ("2", "EMT answered 503")
    [queued] = gateway.store.pending("emt-data")
    assert queued.attempts == 2
    config, clock = gateway.config, gateway.clock
    await gateway.stop()
    emt.refuse_with = None
    again = await started(Gateway(config, clock=clock), gwa)
    try:
        document = await emt.wait_document()
        assert document.attributes["profile"] == "TAF1-B"
        await wait_for(lambda: not again.store.pending("emt-data"))
        assert any(e.event == "data-transfer-delivered" for e in system_events(again))
    finally:
        await again.stop()


# -- terminate: figs. 49, 50 -------------------------------------------------------------------------

from smgw_emu.core.cosem import xmlcodec  # noqa: E402
from smgw_emu.reference.cosem_client import profile_object_path  # noqa: E402

from .cosem_flow import error_of, last_record  # noqa: E402


def terminate_path(profile_id: str) -> str:
    return profile_object_path("tafprofile", profile_id) + "/methods/1"


async def test_fig49_terminate_billing_evaluation_profile(gateway, gwa, pki, meter, emt):
    await set_up(gateway, gwa, pki, meter, emt, "TAF1-T", **TAF1)
    await run_quarters(gateway, meter.meter_id, 1)
    await settled(gateway)
    gateway.clock.advance(300)
    mark_all(gateway, gwa, emt, meter)
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", terminate_path("TAF1-T"), b"", step="post-terminate-billing-evaluation-profile")
    assert response.status == 200, response.text
    index, result = xmlcodec.method_result_from_xml(response.body)
    assert index == 1 and result.type_name == "date-time"
    document = await emt.wait_document()
    [event] = await gwa.wait_event("evaluation-profile-terminated")
    await settled(gateway)
    await wait_for(lambda: gateway.datatransfer.delivery.idle.is_set() and not gateway.store.pending("emt-data"))
    end = taf.stamp(result.value)
    assert (document.attributes["kind"], document.attributes["period-end"], event.details["time"]) == ("final", end, end)
    [value] = document.values[(meter.meter_id, "0100010800ff")]
    assert value.time == end and value.value is not None  # the final readout at the termination time
    [stored] = [o for o in gateway.store.objects("tafprofile", "TAF1-T") if o.class_id == 28200]
    assert stored.attributes["valid_until"].startswith(end[:19])
    assert_transcript(49, gateway, gwa, others=[emt.transcript, meter.transcript])

    # no further periods; a second terminate is refused and changes nothing
    record, objects = last_record(gateway), gateway.store.objects()
    again = await channel.request("POST", terminate_path("TAF1-T"), b"")
    assert (again.status, error_of(again.body).code) == (409, "state-conflict")
    assert gateway.store.objects() == objects
    assert [e.event for e in system_events(gateway, record)] == ["request-failed"]
    await run_quarters(gateway, meter.meter_id, 4)
    gateway.clock.advance(taf.SETTLE_S)
    await asyncio.sleep(0.1)
    assert emt.documents == [document]


async def test_fig50_terminate_non_billing_evaluation_profile(gateway, gwa, pki, meter, emt):
    await set_up(gateway, gwa, pki, meter, emt, "TAF7-T", billing=False, billing_period="PT1H")
    await run_quarters(gateway, meter.meter_id, 2)
    await settled(gateway)
    mark_all(gateway, gwa, emt, meter)
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", terminate_path("TAF7-T"), b"", step="post-terminate-non-billing-evaluation-profile")
    assert response.status == 200, response.text
    document = await emt.wait_document()
    await gwa.wait_event("evaluation-profile-terminated")
    await settled(gateway)
    await wait_for(lambda: gateway.datatransfer.delivery.idle.is_set() and not gateway.store.pending("emt-data"))
    assert (document.attributes["kind"], document.attributes["billing-relevant"]) == ("final", "false")
    series = document.values[(meter.meter_id, "0100010800ff")]
    assert [v.time for v in series] == [s[0] for s in gateway.store.meter_values(meter.meter_id, "0100010800ff")]
    assert_transcript(50, gateway, gwa, others=[emt.transcript, meter.transcript])


async def test_terminate_bad_input(gateway, gwa, pki, meter, emt):
    await set_up(gateway, gwa, pki, meter, emt, "TAF1-X", **TAF1)
    channel = await open_channel(gateway, gwa)
    objects, record = gateway.store.objects(), last_record(gateway)
    for body, status in ((xmlcodec.value_to_xml(xmlcodec.DlmsValue("unsigned", 3)), 400),):
        response = await channel.request("POST", terminate_path("TAF1-X"), body)
        assert response.status == status, response.text
    missing = await channel.request("POST", terminate_path("NO-SUCH"), b"")
    assert missing.status == 404
    assert gateway.store.objects() == objects and not gateway.store.pending("emt-data")
    assert [e.event for e in system_events(gateway, record)] == ["request-failed", "request-failed"]


# -- OnDemandReadout: fig. 53 --------------------------------------------------------------------------


def readout_path(profile_id: str) -> str:
    return profile_object_path("tafprofile", profile_id) + "/methods/2"


async def test_fig53_on_demand_readout(gateway, gwa, pki, meter, emt):
    await set_up(gateway, gwa, pki, meter, emt, "TAF7-R", billing=False)
    await run_quarters(gateway, meter.meter_id, 1)
    await settled(gateway)
    gateway.clock.advance(123)
    meter.registers["0100010800ff"].value += 10
    mark_all(gateway, gwa, emt, meter)
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", readout_path("TAF7-R"), b"", step="post-on-demand-readout")
    assert response.status == 200, response.text
    _, readout_id = xmlcodec.method_result_from_xml(response.body)
    document = await emt.wait_document()
    [event] = await gwa.wait_event("on-demand-readout-done")
    await settled(gateway)
    now = taf.stamp(gateway.clock.now())
    assert readout_id.value == f"TAF7-R/{now}/on-demand" and event.details["kind"] == "on-demand"
    assert (document.attributes["kind"], document.attributes["period-end"]) == ("on-demand", now)
    for obis in ("0100010800ff", "0100020800ff"):  # one current value per register, even for TAF 7
        [value] = document.values[(meter.meter_id, obis)]
        assert (value.time, value.value, value.status) == gateway.store.meter_values(meter.meter_id, obis)[-1]
    assert_transcript(53, gateway, gwa, others=[emt.transcript, meter.transcript])


async def test_on_demand_readout_meter_silent_nothing_sent(gateway, gwa, pki, meter, emt):
    await set_up(gateway, gwa, pki, meter, emt, "TAF1-R", **TAF1)
    await meter.stop()  # the meter does not answer
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", readout_path("TAF1-R"), b"")
    assert response.status == 200, response.text
    [event] = await gwa.wait_event("on-demand-readout-failed")
    assert event.details["meters"] == meter.meter_id
    await asyncio.sleep(0.05)
    assert not gateway.store.pending("emt-data") and emt.documents == []
    bad = await channel.request("POST", readout_path("TAF1-R"), xmlcodec.value_to_xml(xmlcodec.DlmsValue("unsigned", 1)))
    assert bad.status == 400


# -- TAF 6 readout of a past day: figs. 51, 52 --------------------------------------------------------


async def open_channel_at_gateway_time(gateway, gwa):
    """A wake-up stamped with the gateway's (virtual) time: the test has moved it past midnight."""
    gwa.send_wakeup(gateway.wakeup_address, gateway.id, created_at=gateway.clock.now())
    channel = await gwa.wait_channel(10)
    await wait_for(lambda: gateway.management is not None and gateway.management.authenticated())
    return channel


async def past_midnight(gateway, meter: ReferenceMeter) -> tuple[_dt.date, dict[str, Decimal]]:
    """Move the clock to just before the next midnight, then over it: the meter is read at 00:00.
    The register values change before each of these readings and after midnight's, so every
    reading differs; returns the day that ended and the values the meter sent for its end."""
    meter_id = meter.meter_id
    now = gateway.clock.now()
    midnight = _dt.datetime.combine(now.date() + _dt.timedelta(days=1), _dt.time(), _dt.timezone.utc)
    count = len(gateway.store.meter_values(meter_id, E180.hex()))
    bump(meter, 1)
    gateway.clock.advance((midnight - now).total_seconds() - 1)
    await wait_for(lambda: len(gateway.store.meter_values(meter_id, E180.hex())) == count + 1)
    bump(meter, 2)
    sent = len(meter.readings)
    gateway.clock.advance(1)
    await wait_for(lambda: gateway.store.meter_values(meter_id, E180.hex())[-1][0] == taf.stamp(midnight))
    assert len(meter.readings) == sent + 1
    at_midnight = meter.readings[-1].values
    bump(meter, 3)  # later readings: a delivery of the latest value instead of the day's would show
    gateway.clock.advance(3600)
    return midnight.date() - _dt.timedelta(days=1), at_midnight


def bump(meter: ReferenceMeter, step: int) -> None:
    """Raise both registers by different amounts (the export one away from 0)."""
    meter.registers[E180.hex()].value += 1_000 * step + 7
    meter.registers[E280.hex()].value += 300 * step + 11


async def taf6_readout(figure: int, gateway, gwa, pki, meter, emt, profile_id: str):
    await set_up(gateway, gwa, pki, meter, emt, profile_id, billing=False, taf=6)
    day, at_midnight = await past_midnight(gateway, meter)
    await settled(gateway)
    mark_all(gateway, gwa, emt)
    channel = await open_channel_at_gateway_time(gateway, gwa)
    argument = xmlcodec.value_to_xml(xmlcodec.DlmsValue("visible-string", day.isoformat()))
    response = await channel.request("POST", readout_path(profile_id), argument, step="post-taf6-readout")
    assert response.status == 200, response.text
    document = await emt.wait_document()
    [event] = await gwa.wait_event("taf6-readout-done")
    await settled(gateway)
    assert (document.attributes["kind"], document.attributes["taf"]) == ("taf6-day", "6")
    assert document.attributes["period-end"] == taf.stamp(_dt.datetime.combine(day + _dt.timedelta(days=1), _dt.time(), _dt.timezone.utc))
    for obis in (E180.hex(), E280.hex()):  # the values the meter sent over the LMN at the day's end
        [value] = document.values[(meter.meter_id, obis)]
        assert value.time == document.attributes["period-end"], obis
        assert value.value is not None and Decimal(value.value) == at_midnight[obis], (obis, value, at_midnight)
    assert_transcript(figure, gateway, gwa, others=[emt.transcript])
    return channel, day


async def test_fig51_taf6_readout_process_chain(gateway, gwa, pki, meter, emt):
    await taf6_readout(51, gateway, gwa, pki, meter, emt, "TAF6-A")


async def test_fig52_taf6_readout_and_bad_days(gateway, gwa, pki, meter, emt):
    channel, day = await taf6_readout(52, gateway, gwa, pki, meter, emt, "TAF6-B")
    objects, record = gateway.store.objects(), last_record(gateway)
    today = gateway.clock.now().date()
    for text, status, code in (
        ((today - _dt.timedelta(days=43)).isoformat(), 404, "no-values"),  # older than 42 days
        (today.isoformat(), 404, "no-values"),                               # not over yet
        ((day - _dt.timedelta(days=1)).isoformat(), 404, "no-values"),      # nothing stored
        ("2026-02-30", 422, "invalid-value"), ("yesterday", 422, "invalid-value"),
    ):
        argument = xmlcodec.value_to_xml(xmlcodec.DlmsValue("visible-string", text))
        response = await channel.request("POST", readout_path("TAF6-B"), argument)
        assert (response.status, error_of(response.body).code) == (status, code), text
    assert gateway.store.objects() == objects and not gateway.store.pending("emt-data")
    assert [e.event for e in system_events(gateway, record)] == ["request-failed"] * 5


async def test_day_readout_needs_a_taf6_profile(gateway, gwa, pki, meter, emt):
    await set_up(gateway, gwa, pki, meter, emt, "TAF1-D", **TAF1)
    channel = await open_channel(gateway, gwa)
    argument = xmlcodec.value_to_xml(xmlcodec.DlmsValue("visible-string", "2026-01-01"))
    response = await channel.request("POST", readout_path("TAF1-D"), argument)
    assert (response.status, error_of(response.body).code) == (409, "state-conflict")
