"""5.14 "Event versenden" (fig. 14): an event pushed on the INFO-REPORT channel until the GWA
acknowledges it, through a refused delivery, a lost acknowledgement and the duplicate that
follows, which the GWA drops by its id. The event is a real one (the gateway's scheduled self
test); retries run on the gateway's virtual clock."""

from __future__ import annotations

import datetime as _dt

from smgw_emu.app.gateway import Gateway
from smgw_emu.core.clock import VirtualClock

from .conftest import assert_transcript, gateway_config, started, wait_for
from .cosem_flow import settled


def _failures(gateway: Gateway) -> list:
    return [e for e in gateway.store.logs("system", limit=10**6) if e.event == "info-report-delivery-failed"]


async def test_fig14_event_refused_retried_acknowledged_and_deduplicated(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"},
                            operations={"self_test_interval_s": 3600})
    gateway = await started(Gateway(config, clock=clock), gwa)
    try:
        gwa.record_acknowledgements = True
        gwa.report_answers = [503, "drop"]  # refuse the first delivery, lose the acknowledgement of the second
        clock.advance(3600)  # the scheduled self test queues its event
        await wait_for(lambda: len(_failures(gateway)) == 1)
        [pending] = gateway.store.pending("info-report")
        assert (pending.kind, pending.attempts) == ("self-test-result", 1)
        assert "503" in _failures(gateway)[0].details["reason"]
        clock.advance(1)  # past the backoff: the retry
        await wait_for(lambda: len(_failures(gateway)) == 2)
        assert gateway.store.pending("info-report")[0].attempts == 2  # not acknowledged: still queued
        clock.advance(1)
        await settled(gateway)
        # the GWA took the event once, acknowledged the identical retry and dropped it
        [event] = gwa.events("self-test-result")
        [duplicate] = gwa.duplicates
        assert event.id == duplicate.id == pending.id and duplicate.type == "self-test-result"
        assert gateway.store.pending("info-report") == []
        assert_transcript(14, gateway, gwa)
    finally:
        await gateway.stop()


async def test_events_stay_queued_while_the_gwa_refuses_and_keep_their_order(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"},
                            operations={"self_test_interval_s": 60})
    gateway = await started(Gateway(config, clock=clock), gwa)
    try:
        gwa.report_status = 500
        clock.advance(60)
        await wait_for(lambda: len(_failures(gateway)) >= 1)
        clock.advance(60)  # a second event while the first still waits
        await wait_for(lambda: len(gateway.store.pending("info-report")) == 2)
        ids = [p.id for p in gateway.store.pending("info-report")]
        gwa.report_status = 200
        clock.advance(1)
        await settled(gateway)
        assert [e.id for e in gwa.events("self-test-result")] == ids  # delivered in order, each once
        assert gwa.duplicates == []
    finally:
        await gateway.stop()
