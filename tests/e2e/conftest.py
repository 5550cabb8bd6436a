"""End-to-end fixtures: a real gateway and the reference GWA on loopback, real TLS, real PKI.

Transcripts: the reference GWA records every message it sees on the wire (channels wakeup,
management, admin-service, info-report); the gateway's system log supplies what happens inside
the gateway (channel "local", a fixed vocabulary of channel-level events). `assert_transcript`
compares both with the catalogue entry of a figure, channel by channel.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import dataclasses
from collections import defaultdict
from types import SimpleNamespace

import pytest

from smgw_emu.app.config import load_config
from smgw_emu.app.gateway import Gateway
from smgw_emu.catalogue import load as load_catalogue
from smgw_emu.core.clock import VirtualClock
from smgw_emu.reference.gwa import ReferenceGwa

#: Gateway system-log events that appear in transcripts as channel "local" steps.
LOCAL_EVENTS = {
    "wakeup-accepted", "wakeup-rejected", "wakeup-ignored",
    "management-channel-opened", "management-channel-failed", "management-channel-closed",
    "auth-established", "auth-ended", "auth-refused", "request-refused-no-auth",
    "admin-service-channel-opened", "admin-service-channel-closed", "admin-service-fetch-failed",
    "info-report-channel-opened", "info-report-channel-closed", "info-report-delivery-failed",
    "cms-container-opened", "cms-container-sealed",  # 5.10 / 5.11
    # 5.13 time sync and 6.5.2 WAN address change (app/operations.py)
    "time-synchronised", "time-sync-failed", "wan-address-changed",
    # 6.6 GWA change: the steps the gateway takes on its own (app/keybanks.py)
    "gwapre-verified", "gwa-change-fallback",
    # 6.1 firmware update: the update job's transitions inside the gateway
    "firmware-download-started", "firmware-download-resumed", "firmware-download-paused", "firmware-downloaded",
    "firmware-download-failed", "firmware-activation-scheduled", "firmware-activation-started", "firmware-activated",
    "firmware-activation-failed", "firmware-rolled-back",
    "normal-operation",  # 6.2 transfer into normal operation
    # 6.8 CLS proxy: the gateway's own decisions to set up a relay (app/cls.py)
    "cls-connection-authorised", "cls-connection-triggered",
    # 6.5.13 / 6.5.14 meter data to the EMT: a period's values derived and queued (app/datatransfer.py)
    "billing-period-end", "send-interval-due",
}


def gateway_config(pki, gwa: ReferenceGwa, state_dir, **sections):
    """The embedded default configuration, pointed at this test's PKI, GWA and state directory."""
    base = load_config()
    cfg = dataclasses.replace(
        base,
        gateway=dataclasses.replace(base.gateway, state_dir=state_dir, pki_dir=pki.root),
        wakeup=dataclasses.replace(base.wakeup, port=0),
        gwa=dataclasses.replace(
            base.gwa, management_port=gwa.management_port, admin_service_url=gwa.admin_service_url,
            info_report_url=gwa.info_report_url,
        ),
        channels=dataclasses.replace(base.channels, retry_initial_s=0.05, retry_max_s=0.5),
    )
    for name, changes in sections.items():
        cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **changes)})
    return cfg


@pytest.fixture
async def gwa(pki):
    async with ReferenceGwa(pki) as reference:
        yield reference


async def started(gateway: Gateway, gwa: ReferenceGwa) -> Gateway:
    """Start, wait until the start-up event reached the GWA, then mark both transcripts."""
    await gateway.start()
    await gwa.wait_event("gateway-started", timeout=10)
    await wait_for(lambda: gateway.info_report.idle.is_set())
    mark(gateway, gwa)
    return gateway


def mark(gateway: Gateway, gwa: ReferenceGwa) -> None:
    gwa.transcript.mark()
    gateway.transcript_mark = gateway.store.logs("system", limit=1_000_000)[-1].record


@pytest.fixture
async def gateway(pki, gwa, tmp_path):
    gw = Gateway(gateway_config(pki, gwa, tmp_path / "state"))
    yield await started(gw, gwa)
    await gw.stop()


@pytest.fixture
async def virtual_gateway(pki, gwa, tmp_path):
    """A gateway on a virtual clock: tests advance time instead of waiting."""
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    gw = Gateway(gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"}), clock=clock)
    yield await started(gw, gwa)
    await gw.stop()


async def wait_for(condition, timeout: float = 10.0, interval: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def local_steps(gateway: Gateway, since_record: int = 0) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(step=e.event, channel="local")
        for e in gateway.store.logs("system", since_record=since_record, limit=1_000_000)
        if e.event in LOCAL_EVENTS
    ]


def per_channel(entries) -> dict[str, list[str]]:
    by_channel: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        by_channel[entry.channel].append(entry.step if hasattr(entry, "step") else entry.id)
    return dict(by_channel)


def transcript_of(gateway: Gateway, gwa: ReferenceGwa, others=()) -> list:
    """Everything since the last mark: the GWA's wire transcript plus the gateway's local steps,
    plus the transcripts of other reference participants (`others`, e.g. a meter's on "lmn")."""
    extra = [entry for transcript in others for entry in transcript.since_mark()]
    return list(gwa.transcript.since_mark()) + extra + local_steps(gateway, getattr(gateway, "transcript_mark", 0))


def assert_transcript(figure: int, gateway: Gateway, gwa: ReferenceGwa, others=()) -> None:
    """The transcript since the last mark equals the catalogue's steps for `figure`, per channel.

    Channels run concurrently (an event may overtake the response that caused it), so order is
    compared within each channel, and the set of channels must be the same. `others` are the
    transcripts of further reference participants (marked by the test itself), e.g.
    `others=[meter.transcript]` for the LMN.
    """
    entry = load_catalogue().entry(figure)
    expected = per_channel(entry.steps)
    seen = per_channel(transcript_of(gateway, gwa, others))
    assert seen == expected, (
        f"figure {figure} ({entry.title_en}): transcript differs from the catalogue\n"
        f"expected: {expected}\nseen:     {seen}\n\n{gwa.transcript.format()}"
        + "".join(f"\n\n{transcript.format()}" for transcript in others)
    )
