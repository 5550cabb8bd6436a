"""Transfer into normal operation, sans-IO (core/operating.py)."""

from __future__ import annotations

import datetime as _dt

import pytest

from smgw_emu.core import operating


def material(pki, **replace):
    items = {name: operating.Material(name, pki.cert(name)) for name in ("gateway-tls", "gateway-sig", "gateway-enc")}
    items.update({f"gwa-{u}": operating.Material(f"gwa-{u}", pki.cert(f"gwa-{u}")) for u in ("tls", "sig", "enc")})
    items.update(replace)
    return list(items.values())


def now():
    return _dt.datetime.now(_dt.timezone.utc)


def refused(*args):
    with pytest.raises(operating.TransferRefused) as info:
        operating.enter_normal_operation(*args)
    assert info.value.http_status == 409
    return info.value.code, info.value.field


def test_a_personalised_gateway_with_a_good_self_test_switches(pki):
    for result in ("passed", "warning"):
        transfer = operating.enter_normal_operation("delivery", material(pki), result, now())
        assert (transfer.state, transfer.event, transfer.details["self-test"]) == ("normal", "normal-operation", result)
        assert transfer.details["previous-state"] == "delivery"


def test_refusals(pki):
    assert refused("normal", material(pki), "passed", now()) == ("state-conflict", "state")
    assert refused("delivery", material(pki), "failed", now()) == ("self-test-failed", "self_test")
    assert refused("delivery", material(pki), None, now()) == ("self-test-missing", "self_test")
    missing = material(pki, **{"gateway-enc": operating.Material("gateway-enc", None, problem="no file")})
    assert refused("delivery", missing, "passed", now()) == ("personalisation-incomplete", "gateway-enc")
    wrong_key = material(pki, **{"gateway-sig": operating.Material("gateway-sig", pki.cert("gateway-sig"), key_matches=False)})
    assert refused("delivery", wrong_key, "passed", now()) == ("personalisation-incomplete", "gateway-sig")
    later = now() + _dt.timedelta(days=3 * 365)
    code, field = refused("delivery", material(pki), "passed", later)
    assert code == "personalisation-incomplete" and field == "gateway-tls"


def test_gaps_name_every_problem(pki):
    gaps = operating.personalisation_gaps(material(pki, **{
        "gwa-tls": operating.Material("gwa-tls", None), "gateway-tls": operating.Material("gateway-tls", pki.cert("gateway-tls"), False)}), now())
    assert [g.split(":")[0] for g in gaps] == ["gateway-tls", "gwa-tls"]
    assert operating.personalisation_gaps(material(pki), now()) == []
