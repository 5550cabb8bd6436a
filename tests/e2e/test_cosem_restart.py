"""Profiles live in the state store: after a restart the gateway serves the same model."""

from __future__ import annotations

import json

import pytest

from smgw_emu.app.gateway import Gateway, GatewayStartError
from smgw_emu.core.cosem import xmlcodec
from smgw_emu.reference.cosem_client import cls_proxy_profile_values, profile_object_path, seal_for_gateway

from .conftest import gateway_config, started
from .cosem_flow import create, emt_profile, evaluation, meter, open_channel, provision


async def test_model_is_rebuilt_from_the_store_after_restart(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state")
    first = await started(Gateway(config), gwa)
    try:
        await provision(first, gwa, emt_profile(pki), meter(pki, key_container=seal_for_gateway(pki, bytes(16))),
                        evaluation(pki, "TAF2-0001"), create("clsprofile", "CLS-1", cls_proxy_profile_values(pki, "CLS-1")))
        channel = await open_channel(first, gwa)
        before = {path: (await channel.request("GET", path)).body for path in (
            "/smgw/cosem", f"/smgw/cosem/meter/{pki.identities.meter}", profile_object_path("tafprofile", "TAF2-0001"),
            profile_object_path("meter", pki.identities.meter), profile_object_path("clsprofile", "CLS-1"))}
        banks = first.store.key_banks()
        await channel.close()
    finally:
        await first.stop()

    second = await started(Gateway(config), gwa)
    try:
        channel = await open_channel(second, gwa)
        for path, body in before.items():
            response = await channel.request("GET", path)
            assert response.status == 200 and response.body == body, path
        assert second.store.key_banks() == banks
        assert len(xmlcodec.ldev_list_from_xml(before["/smgw/cosem"])) == 6
    finally:
        await second.stop()


async def test_stored_objects_that_no_longer_fit_the_definitions_stop_the_start(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state")
    first = await started(Gateway(config), gwa)
    try:
        await provision(first, gwa, emt_profile(pki))
        with first.store.transaction() as tx:
            tx.execute("UPDATE objects SET attributes=? WHERE ldev_kind='commprofile'", (json.dumps({"no_such": 1}),))
    finally:
        await first.stop()
    broken = Gateway(config)
    with pytest.raises(GatewayStartError, match="class definitions"):
        await broken.start()
    broken.store.close()
