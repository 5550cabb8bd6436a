"""Zähler wechseln (Lastenheft 6.3, fig. 21), sans-IO: replace meter A by meter B.

[ours] (docs/decisions.md "Meter change"): the GWA calls the method ``change_meter`` (index 3)
of the old meter's profile (``meter/<A>``) with the new meter's id as a visible-string. The new
meter's profile must exist and be paired. The gateway takes a final reading of A over the LMN,
then commits in ONE transaction: the final reading in ``meter_values``, every evaluation profile
naming A re-pointed to B (the one change of ``meters`` a running billing profile accepts, the
exception to the fig. 34 lock), A's meter profile and its key banks deleted, the log entries and
the events (meter-changed first, then ``<label>-updated`` per moved profile, then
meter-profile-deleted).

:func:`check_meter_change` runs before the LMN reading (so a refused call never talks to the
meter) and :func:`plan_meter_change` again after it, on the model as it is then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from smgw_emu.core.cosem.model import CosemModel, CosemObject, LogicalDevice
from smgw_emu.core.cosem.types import DlmsValue
from smgw_emu.core.profiles import (
    EventSpec,
    ProfileChange,
    ProfileContext,
    ProfileError,
    StateConflict,
    UnknownReference,
    _base_details,
    _copy,
    _derived_diff,
    _profile,
    _profiles,
    _put,
    _py,
    _validate,
    meter_key_banks,
    profile_label,
)

#: [ours] the method of the meter profile (class 28300) that starts a meter change
METHOD = "change_meter"


@dataclass(frozen=True)
class FinalReading:
    """The last values of the old meter: register OBIS hex -> (value, status word), at ``time``."""

    time: str
    values: Mapping[str, tuple[str, str]]


def _new_meter_id(argument: DlmsValue | None) -> str:
    if argument is None or argument.is_null or not isinstance(argument.value, str) or not argument.value:
        raise ProfileError("the argument is the new meter's id (visible-string)", field="argument")
    return argument.value


def check_meter_change(model: CosemModel, old: LogicalDevice, argument: DlmsValue | None,
                       ctx: ProfileContext) -> tuple[str, list[tuple[LogicalDevice, CosemObject]]]:
    """Is the change allowed now? (new meter id, [(evaluation LDEV, its profile re-pointed)]).

    Errors: A == B 422 invalid-value; B has no meter profile 422 unknown-reference; A or B not
    paired 409 state-conflict; a moved profile B does not fit (another medium, a capture period
    that does not divide, B already named) 422 with the profile named in the message."""
    new_id = _new_meter_id(argument)
    if new_id == old.id:
        raise ProfileError(f"meter {old.id} cannot replace itself", field="argument")
    old_profile = _profile(model, "meter", old.id)
    if old_profile is None:
        raise UnknownReference(f"no meter profile {old.id}", field="ldev")
    new_profile = _profile(model, "meter", new_id)
    if new_profile is None:
        raise UnknownReference(f"no meter profile {new_id[:64]!r}: create and pair the new meter first",
                               field="argument")
    for meter, profile, where in ((new_id, new_profile, "argument"), (old.id, old_profile, "pairing_state")):
        state = _py(profile, "pairing_state")
        if state != "paired":
            what = "new" if meter == new_id else "old"
            raise StateConflict(f"the {what} meter {meter} is {state}, not paired"
                                + (" (the final reading needs the pairing)" if what == "old" else ""), field=where)
    moved = []
    for ldev, profile in _profiles(model, "tafprofile"):
        meters = _py(profile, "meters")
        if old.id not in meters:
            continue
        new = _copy(profile)
        _put(new, "meters", [new_id if m == old.id else m for m in meters])
        try:
            # validated as a new profile: B must fit every rule a profile naming it must meet;
            # the fig. 34 lock (old given) is what this change is the exception to
            _validate(model, ldev, new, None, ctx)
        except ProfileError as exc:
            raise type(exc)(f"{ldev.kind}/{ldev.id} cannot move to meter {new_id}: {exc.message}",
                            field=exc.field) from None
        moved.append((ldev, new))
    return new_id, moved


def plan_meter_change(model: CosemModel, old: LogicalDevice, argument: DlmsValue | None, final: FinalReading,
                      ctx: ProfileContext) -> tuple[ProfileChange, ...]:
    """The changes to commit together, in order: meter-changed (its log entry and event, the
    final reading in the details), one update per moved evaluation profile, the deletion of the
    old meter profile with its key banks."""
    new_id, moved = check_meter_change(model, old, argument, ctx)
    old_profile = _profile(model, "meter", old.id)
    registers = sorted(final.values)
    details: dict[str, str] = {
        **_base_details(old, old_profile), "old-meter": old.id, "new-meter": new_id,
        "profiles": ",".join(f"{l.kind}/{l.id}" for l, _ in moved), "final-reading-time": final.time,
        "final-reading": "complete" if registers else "no-values",
    }
    for obis in registers:
        value, status = final.values[obis]
        details[obis] = f"{value} status={status}"
    changes = [ProfileChange(
        "invoke", old, "meter-changed",
        f"meter {old.id} replaced by {new_id}: final reading at {final.time} kept, "
        f"{len(moved)} evaluation profile(s) moved", details, (EventSpec("meter-changed", details),),
        result=DlmsValue("visible-string", new_id), target=old_profile,
    )]
    for ldev, new in moved:
        label = profile_label(ldev.kind, new)
        put, remove = _derived_diff(model, ldev, _validate(model, ldev, new, None, ctx).derived)
        update = {**_base_details(ldev, new), "changed": "meters", "meters": ",".join(_py(new, "meters")),
                  "reason": "meter-changed", "old-meter": old.id, "new-meter": new_id}
        changes.append(ProfileChange(
            "update", ldev, f"{label}-updated",
            f"{label.replace('-', ' ')} {ldev.id} updated: meter {old.id} replaced by {new_id}", update,
            (EventSpec(f"{label}-updated", update),), put=(new, *put), remove=tuple(remove), target=new,
        ))
    # the old profile, unused once the moves apply: deleted as plan_delete deletes a meter profile
    label = profile_label(old.kind, old_profile)
    deleted = {**_base_details(old, old_profile), "profile": old.id, "reason": "meter-changed", "new-meter": new_id}
    changes.append(ProfileChange(
        "delete", old, f"{label}-deleted", f"{label.replace('-', ' ')} {old.id} deleted ({old.kind}/{old.id}): "
        f"replaced by {new_id}", deleted, (EventSpec(f"{label}-deleted", deleted),), remove_ldev=True,
        key_deletes=meter_key_banks(old.id),
    ))
    return tuple(changes)
