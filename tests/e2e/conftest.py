"""End-to-end fixtures: a real gateway and the reference GWA on loopback, real TLS, real PKI."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest

from smgw_emu.app.config import load_config
from smgw_emu.app.gateway import Gateway
from smgw_emu.catalogue import load as load_catalogue
from smgw_emu.core.clock import VirtualClock
from smgw_emu.reference.gwa import ReferenceGwa

#: Steps of subprocesses a process uses but does not repeat in its catalogue entry.
INFRASTRUCTURE_STEPS = {"management-channel-closed"}


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


@pytest.fixture
async def gateway(pki, gwa, tmp_path):
    gw = Gateway(gateway_config(pki, gwa, tmp_path / "state"))
    await gw.start()
    yield gw
    await gw.stop()


@pytest.fixture
async def virtual_gateway(pki, gwa, tmp_path):
    """A gateway on a virtual clock: tests advance time instead of waiting."""
    clock = VirtualClock()
    gw = Gateway(gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"}), clock=clock)
    await gw.start()
    yield gw
    await gw.stop()


def per_channel(entries) -> dict[str, list[str]]:
    by_channel: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        by_channel[entry.channel].append(entry.step)
    return dict(by_channel)


def assert_transcript(figure: int, transcript_entries, *, ignore: set[str] = INFRASTRUCTURE_STEPS) -> None:
    """The wire transcript equals the catalogue's steps for `figure`, channel by channel.

    Channels run concurrently (an event may overtake the response that caused it), so order is
    compared within each channel, and the set of channels must be the same.
    """
    entry = load_catalogue().entry(figure)
    expected = per_channel(entry.steps)
    seen = per_channel(e for e in transcript_entries if e.step not in ignore or e.step in entry.step_ids())
    assert seen == expected, (
        f"figure {figure} ({entry.title_en}): transcript differs from the catalogue\n"
        f"expected: {expected}\nseen:     {seen}"
    )
