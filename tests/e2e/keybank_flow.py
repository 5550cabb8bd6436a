"""Helpers for the GWA change (6.6) and trust-anchor (6.7.3/6.7.4) end-to-end tests."""

from __future__ import annotations

import datetime as _dt
from contextlib import asynccontextmanager

from smgw_emu.app.gateway import Gateway
from smgw_emu.core.clock import VirtualClock
from smgw_emu.reference.gwa import GwaChannel, ReferenceGwa
from smgw_emu.reference.keybank_client import (
    GWAPRE,
    NewGwa,
    bank_digest,
    certificates_document,
    gwa_profile_document,
)

from .conftest import gateway_config, started, wait_for
from .cosem_flow import settled


@asynccontextmanager
async def new_gwa_running(new: NewGwa, gwa: ReferenceGwa):
    """The new GWA as a ReferenceGwa on ports of its own; it writes into the old GWA's transcript,
    so one transcript shows both GWAs in the order things happened."""
    async with ReferenceGwa(new.pki) as reference:
        reference.transcript = gwa.transcript
        yield reference


def profile_of(new: NewGwa, reference: ReferenceGwa, **changes) -> bytes:
    """The new GWA's profile: its own address and service endpoints; `changes` by attribute name."""
    return gwa_profile_document(new.gwa_id, reference.host, reference.management_port,
                                f"https://{reference.host}:{reference.service_port}", **changes)


async def wake_channel(gateway: Gateway, gwa: ReferenceGwa, *, step: str = "wakeup") -> GwaChannel:
    """Wake the gateway (packet dated by the gateway's clock, which may be virtual and ahead) and
    take its MANAGEMENT channel once it is in AUTH."""
    gwa.send_wakeup(gateway.wakeup_address, gateway.id, created_at=gateway.clock.now(), step=step)
    channel = await gwa.wait_channel(10)
    await wait_for(lambda: gateway.management is not None and gateway.management.authenticated())
    return channel


async def close(gateway: Gateway, channel: GwaChannel) -> None:
    await channel.close()
    await wait_for(lambda: gateway.management is None or not gateway.management.is_open)


async def prepare(channel: GwaChannel, new: NewGwa, reference: ReferenceGwa) -> None:
    """6.6.4-6.6.6 by the old GWA: reserve, GWAPRE profile, the new GWA's certificates."""
    r = await channel.request("POST", GWAPRE + "/reserve", step="post-reserve-gwapre")
    assert r.status == 200, r.text
    r = await channel.request("POST", GWAPRE + "/profile", profile_of(new, reference), step="post-gwapre-profile")
    assert r.status == 201, r.text
    r = await channel.request("POST", GWAPRE + "/certificates", certificates_document(new),
                              step="post-gwapre-certificates")
    assert r.status == 201, r.text


async def switch_and_leave(gateway: Gateway, channel: GwaChannel) -> None:
    """6.6.7 by the old GWA, which then closes its channel (its AUTH ended with the switch)."""
    r = await channel.request("POST", GWAPRE + "/switch", step="post-switch-to-gwapre")
    assert r.status == 200, r.text
    assert not gateway.management.authenticated()
    await close(gateway, channel)


async def verify_new_gwa(gateway: Gateway, new_gwa: ReferenceGwa) -> tuple[GwaChannel, str]:
    """6.6.8: the new GWA wakes the gateway, the gateway reaches it; it reads GWAPRE."""
    channel = await wake_channel(gateway, new_gwa, step="wakeup-new-gwa")
    r = await channel.request("GET", GWAPRE, step="get-gwapre")
    assert r.status == 200, r.text
    return channel, bank_digest(r.body)


def state(gateway: Gateway):
    """What a rolled-back GWA change must leave as it was."""
    return (gateway.store.key_banks(), gateway.store.objects(), gateway.store.ldevs(), gateway.gwa,
            [ldev.id for ldev in gateway.cosem.model.ldevs("commprofile")])


async def old_gwa_back_in_charge(gateway: Gateway, gwa: ReferenceGwa) -> None:
    """The old GWA can open a channel again and is the GWA the gateway works with."""
    channel = await wake_channel(gateway, gwa, step="wakeup-check")
    r = await channel.request("GET", "/smgw/keybanks", step="get-keybanks-check")
    assert r.status == 200 and b'in-use="ACTIVE"' in r.body, r.text
    await close(gateway, channel)
    await settled(gateway)


def virtual_config(pki, gwa, state_dir, **sections):
    return gateway_config(pki, gwa, state_dir, clock={"mode": "virtual"}, **sections)


async def virtual_gateway_at(pki, gwa, state_dir, start: _dt.datetime | None = None, **sections) -> Gateway:
    clock = VirtualClock(start or _dt.datetime.now(_dt.timezone.utc))
    return await started(Gateway(virtual_config(pki, gwa, state_dir, **sections), clock=clock), gwa)
