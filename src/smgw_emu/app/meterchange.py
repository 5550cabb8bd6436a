"""Zähler wechseln (Lastenheft 6.3, fig. 21): wiring of the meter change.

The GWA calls ``change_meter`` (method 3 of the meter profile, argument the new meter's id) on
the OLD meter's profile. The rules are in `core/meterchange.py`; this module checks the call,
takes the final reading of the old meter over the LMN (`MeterService.read_now`), plans again on
the model as it is after the await, and commits everything in one transaction
(`CosemApi.commit_together`): the final reading in ``meter_values``, the moved evaluation
profiles, the deleted old profile and its key banks, log entries, events.

[ours] (docs/decisions.md "Meter change"): when the old meter cannot be read the call is refused
(502 ``final-reading-failed``) and nothing changes; the GWA retries, or, for a broken meter,
terminates the profiles and deletes the meter profile (figs. 49/50, 34).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smgw_emu.app.api import ApiError
from smgw_emu.app.journal import LEVEL_WARNING
from smgw_emu.core.cosem import DlmsValue
from smgw_emu.core.lmn import LmnError
from smgw_emu.core.meterchange import METHOD, FinalReading, check_meter_change, plan_meter_change
from smgw_emu.core.profiles import PROFILE_KINDS, plan_invoke

if TYPE_CHECKING:
    from smgw_emu.app.gateway import Gateway

#: [ours] status of a meter change refused because the old meter could not be read
FINAL_READING_FAILED = 502


class MeterChangeService:
    def __init__(self, gateway: "Gateway") -> None:
        self.gw = gateway

    def start(self) -> None:
        pk = PROFILE_KINDS["meter"]
        self.gw.cosem.method_hooks[(pk.kind, pk.obis.hex)] = self._method

    async def _method(self, request, resolved, argument) -> DlmsValue:
        cosem = self.gw.cosem
        if resolved.method.name != METHOD:  # pair, crypto_reset: as without the hook
            change = plan_invoke(cosem.model, resolved.ldev, resolved.obj, resolved.method.index, argument,
                                 cosem._context(request))
            cosem._commit(change)
            return change.result or DlmsValue.null()
        return await self.change(request, resolved.ldev, argument)

    async def change(self, request, old, argument) -> DlmsValue:
        gw = self.gw
        cosem = gw.cosem
        new_id, moved = check_meter_change(cosem.model, old, argument, cosem._context(request))  # before the LMN
        gw.journal("meter-change-started", f"meter change {old.id} -> {new_id}: final reading of {old.id}",
                   meter=old.id, **{"new-meter": new_id, "profiles": ",".join(f"{l.kind}/{l.id}" for l, _ in moved)})
        try:
            values = await gw.meters.read_now(old.id)
        except LmnError as exc:
            gw.journal("meter-change-refused", f"meter change {old.id} -> {new_id} refused: final reading failed: "
                       f"{exc}; nothing changed", level=LEVEL_WARNING, outcome=1, meter=old.id,
                       reason=exc.reason, **{"new-meter": new_id})
            raise ApiError(FINAL_READING_FAILED, "final-reading-failed",
                           f"the final reading of meter {old.id} failed ({exc.reason}: {exc.detail}); nothing "
                           "changed", "ldev") from None
        final = FinalReading(gw.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"), values)
        # the model may have changed during the reading: plan on it as it is now (errors as above)
        changes = plan_meter_change(cosem.model, old, argument, final, cosem._context(request))

        def store_reading(tx) -> None:
            for obis, (value, status) in sorted(final.values.items()):
                tx.put_meter_value(old.id, obis, final.time, value, status)

        cosem.commit_together(changes, extra=store_reading)
        return changes[0].result
