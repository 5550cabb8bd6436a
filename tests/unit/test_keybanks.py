"""The GWA key banks, the GWA change state machine and the trust-anchor rules (core/keybanks.py),
in memory: every transition, its rows, log entry and events, and every refusal."""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509

from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.core.cosem.errors import CosemError
from smgw_emu.core.keybanks import (
    ACTIVE,
    GWAPRE,
    STORE_ROWS,
    GwaCertificates,
    GwaMaterial,
    GwaProfile,
    KeyBanks,
    Phase,
    certificate_fingerprint,
    check_new_root,
    roots_in_use,
    validate_certificates,
    validate_profile,
)
from smgw_emu.pki import generate_key, issue_certificate
from smgw_emu.reference.keybank_client import der, new_gwa_identity

NEW = "GWA-NEW-0001"


@pytest.fixture(scope="module")
def now(pki_now) -> _dt.datetime:
    return pki_now


@pytest.fixture(scope="module")
def material(pki, tmp_path_factory):
    """(old GWA material, new GWA under the same root, new GWA under a root of its own)."""
    base = tmp_path_factory.mktemp("keybanks")
    same = new_gwa_identity(pki, base / "same", NEW)
    other = new_gwa_identity(pki, base / "other", "GWA-NEW-0002", new_root=True)
    old = GwaMaterial(GwaProfile("GWA-TEST-0001", "127.0.0.1", 4000, "https://127.0.0.1:4001/admin-service/",
                                 "https://127.0.0.1:4001/info-report"),
                      GwaCertificates(*(der(pki.cert(f"gwa-{u}")) for u in ("tls", "sig", "enc"))))
    return old, same, other


def profile(gwa_id: str = NEW, **changes) -> GwaProfile:
    values = {"partner_id": gwa_id, "partner_role": "gwa", "host": "127.0.0.1", "port": 5000,
              "admin_service_url": "https://127.0.0.1:5001/admin-service/", "info_report_url": "https://127.0.0.1:5001/info-report"}
    values.update(changes)
    return validate_profile(values)


def certs(new) -> GwaCertificates:
    return GwaCertificates(*(der(new.certificate(u)) for u in ("tls", "sig", "enc")), tuple(der(c) for c in new.ca_certificates))


def trust(pki, *extra_roots) -> CertificateTrust:
    bundle = x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes())
    return CertificateTrust([pki.cert("root-ca"), *extra_roots], bundle)


def prepared(pki, material, now) -> KeyBanks:
    old, same, _ = material
    banks = KeyBanks(old)
    for step in (lambda b: b.reserve(now), lambda b: b.install_profile(profile(), now),
                 lambda b: b.install_certificates(certs(same), trust(pki), now)):
        banks = step(banks).after
    return banks


def code_of(excinfo) -> tuple[int, str, str | None]:
    exc = excinfo.value
    return exc.http_status, exc.code, exc.field


# -- the good case -------------------------------------------------------------------------------
def test_good_case_moves_the_gateway_to_the_new_gwa(pki, material, now):
    old, same, _ = material
    banks = KeyBanks(old)
    assert (banks.phase, banks.in_use_bank, banks.in_use) == (None, ACTIVE, old)
    t = banks.reserve(now)
    assert t.writes() == {STORE_ROWS[GWAPRE]: ("reserved", t.after.gwapre.to_json())} and t.events == ()
    t = t.after.install_profile(profile(), now)
    assert t.after.phase == Phase.PROFILED and t.log_event == "gwapre-profile-installed"
    t = t.after.install_certificates(certs(same), trust(pki), now)
    assert t.after.phase == Phase.PREPARED and t.after.in_use_bank == ACTIVE and not t.in_use_changed
    t = t.after.switch(now, 600)
    assert t.after.in_use_bank == GWAPRE and t.in_use_changed and t.events == ()
    assert t.after.fallback_at == now + _dt.timedelta(seconds=600)
    assert t.after.verified(now).after.phase == Phase.VERIFIED
    assert t.after.verified(now).after.verified(now) is None  # only the first channel verifies
    t = t.after.verified(now).after.install_final_profile(profile(port=5002), now)
    assert t.after.phase == Phase.FINALISED and t.in_use_changed and t.after.in_use.profile.port == 5002
    digest = t.after.gwapre.material.digest()
    done = t.after.confirm(digest.upper(), now)
    assert done.after == KeyBanks(t.after.gwapre.material) and done.after.fallback_at is None
    assert done.writes() == {STORE_ROWS[ACTIVE]: ("active", done.after.active.to_json()), STORE_ROWS[GWAPRE]: None}
    assert [e for e, _ in done.events] == ["gwa-change-completed"]
    assert dict(done.events[0][1]) == {"gwa": NEW, "previous-gwa": "GWA-TEST-0001", "digest": digest}
    assert not done.in_use_changed  # the bank in use was GWAPRE's content already


def test_each_step_writes_exactly_the_rows_the_next_start_reads(pki, material, now):
    """Persistence: applying each transition's writes to the rows gives back its state."""
    old, same, _ = material
    banks = KeyBanks(old)
    rows = {STORE_ROWS[ACTIVE]: ("active", old.to_json())}
    steps = [lambda b: b.reserve(now), lambda b: b.install_profile(profile(), now),
             lambda b: b.install_certificates(certs(same), trust(pki), now), lambda b: b.switch(now, 60),
             lambda b: b.verified(now), lambda b: b.fallback(now + _dt.timedelta(seconds=60)),
             lambda b: b.release(now)]
    for step in steps:
        transition = step(banks)
        for row, value in transition.writes().items():
            if value is None:
                rows.pop(row)
            else:
                rows[row] = value
        banks = transition.after
        assert KeyBanks.from_rows(rows) == banks
    assert banks == KeyBanks(old)
    assert KeyBanks.from_rows({}) is None


# -- refusals and rollbacks ----------------------------------------------------------------------
def test_reserve_twice_and_steps_out_of_order_are_refused(pki, material, now):
    old, same, _ = material
    banks = KeyBanks(old)
    for call in (lambda: banks.install_profile(profile(), now), lambda: banks.switch(now, 60),
                 lambda: banks.release(now), lambda: banks.confirm("00", now),
                 lambda: banks.install_final_profile(profile(), now)):
        with pytest.raises(CosemError) as excinfo:
            call()
        assert code_of(excinfo) == (409, "state-conflict", "phase")
    reserved = banks.reserve(now).after
    with pytest.raises(CosemError) as excinfo:
        reserved.reserve(now)
    assert code_of(excinfo) == (409, "state-conflict", "phase")
    with pytest.raises(CosemError) as excinfo:
        reserved.install_profile(profile(), now).after.switch(now, 60)  # no certificates yet
    assert code_of(excinfo)[1] == "state-conflict"


def test_release_is_the_rollback_before_the_switch_and_after_a_fallback(pki, material, now):
    old, _, _ = material
    banks = prepared(pki, material, now)
    t = banks.release(now)
    assert t.after == KeyBanks(old) and t.writes() == {STORE_ROWS[GWAPRE]: None}
    assert [e for e, _ in t.events] == ["gwa-change-aborted"] and t.events[0][1]["released-in"] == "prepared"
    switched = banks.switch(now, 60).after
    with pytest.raises(CosemError) as excinfo:
        switched.release(now)  # in use: only confirmation or the fallback end it
    assert code_of(excinfo) == (409, "state-conflict", "phase")
    assert switched.fallback(now + _dt.timedelta(seconds=59)) is None
    back = switched.fallback(now + _dt.timedelta(seconds=60))
    assert back.after.phase == Phase.ROLLED_BACK and back.after.in_use_bank == ACTIVE and back.in_use_changed
    assert [e for e, _ in back.events] == ["gwa-change-failed"] and back.events[0][1]["failed-in"] == "switched"
    assert back.after.fallback_at is None and back.after.fallback(now + _dt.timedelta(days=1)) is None
    released = back.after.release(now)
    assert released.after == KeyBanks(old) and released.events == ()  # the failure was reported already


def test_fallback_from_verified_and_finalised(pki, material, now):
    switched = prepared(pki, material, now).switch(now, 60).after
    verified = switched.verified(now).after
    finalised = verified.install_final_profile(profile(), now).after
    for banks, phase in ((verified, "verified"), (finalised, "finalised")):
        t = banks.fallback(now + _dt.timedelta(minutes=5))
        assert t.after.phase == Phase.ROLLED_BACK and t.events[0][1]["failed-in"] == phase


def test_final_profile_and_confirmation_checks(pki, material, now):
    verified = prepared(pki, material, now).switch(now, 60).after.verified(now).after
    with pytest.raises(CosemError) as excinfo:
        verified.install_final_profile(profile("GWA-OTHER-0001"), now)
    assert code_of(excinfo) == (422, "invalid-value", "partner_id")
    with pytest.raises(CosemError) as excinfo:
        verified.confirm(verified.gwapre.material.digest(), now)  # no final profile yet
    assert code_of(excinfo) == (409, "state-conflict", "phase")
    finalised = verified.install_final_profile(profile(host="localhost"), now).after
    with pytest.raises(CosemError) as excinfo:
        finalised.confirm(verified.gwapre.material.digest(), now)  # what it was before the final profile
    assert code_of(excinfo) == (409, "digest-mismatch", "digest")


def test_partner_id_of_another_profile_is_refused(pki, material, now):
    old, _, _ = material
    reserved = KeyBanks(old).reserve(now).after
    with pytest.raises(CosemError) as excinfo:
        reserved.install_profile(profile(), now, taken_ids={NEW, "GWA-TEST-0001"})
    assert code_of(excinfo) == (422, "invalid-value", "partner_id")
    # the GWA in charge may keep its id (new address or certificates for the same GWA)
    assert reserved.install_profile(profile("GWA-TEST-0001"), now, taken_ids={"GWA-TEST-0001"}).after.phase == Phase.PROFILED


# -- validation of what the GWA sends ------------------------------------------------------------
@pytest.mark.parametrize("changes, field", [
    ({"partner_role": "emt"}, "partner_role"),
    ({"partner_id": "no spaces"}, "partner_id"),
    ({"host": "not a host"}, "host"),
    ({"port": 0}, "port"),
    ({"port": 70000}, "port"),
    ({"info_report_url": "http://x/"}, "info_report_url"),
    ({"admin_service_url": ""}, "admin_service_url"),
    ({"tls_certificate": b"\x30"}, "tls_certificate"),
    ({"idle_timeout_s": 300}, "idle_timeout_s"),
])
def test_profile_validation_names_the_field(changes, field):
    with pytest.raises(CosemError) as excinfo:
        profile(**changes)
    assert code_of(excinfo) == (422, "invalid-value", field)


def test_profile_needs_every_part():
    values = {"partner_id": NEW, "host": "h", "port": 1, "admin_service_url": "https://h/", "info_report_url": "https://h/r"}
    assert validate_profile(values).partner_id == NEW  # partner_role may be left out
    for name in values:
        with pytest.raises(CosemError) as excinfo:
            validate_profile({k: v for k, v in values.items() if k != name})
        assert code_of(excinfo) == (422, "invalid-value", name)


def test_certificate_validation(pki, material, now):
    _, same, other = material
    good = certs(same)
    validate_certificates(good, NEW, trust(pki), now)
    cases = {
        "certificate[tls]": GwaCertificates(good.enc, good.sig, good.enc),                 # keyAgreement for TLS
        "certificate[sig]": GwaCertificates(good.tls, b"\x30\x03\x02\x01\x01", good.enc),  # no certificate
        "certificate[enc]": GwaCertificates(good.tls, good.sig, good.sig),                 # no keyAgreement
    }
    for field, bad in cases.items():
        with pytest.raises(CosemError) as excinfo:
            validate_certificates(bad, NEW, trust(pki), now)
        assert code_of(excinfo) == (422, "invalid-certificate", field)
    with pytest.raises(CosemError) as excinfo:
        validate_certificates(good, "GWA-SOMEONE-ELSE", trust(pki), now)
    assert "names 'GWA-NEW-0001'" in excinfo.value.message
    # a GWA under another root: refused until that root is trusted, then accepted with its sub-CA
    foreign = certs(other)
    with pytest.raises(CosemError) as excinfo:
        validate_certificates(foreign, "GWA-NEW-0002", trust(pki), now)
    assert "not in the gateway's SM-PKI trust list" in excinfo.value.message
    validate_certificates(foreign, "GWA-NEW-0002", trust(pki, other.root), now)
    with pytest.raises(CosemError) as excinfo:
        validate_certificates(GwaCertificates(foreign.tls, foreign.sig, foreign.enc, (foreign.tls,)), "GWA-NEW-0002",
                              trust(pki, other.root), now)
    assert code_of(excinfo) == (422, "invalid-certificate", "ca-certificate[0]")


# -- trust anchors -------------------------------------------------------------------------------
def test_new_root_needs_a_link_from_a_trusted_root(pki, material, now):
    _, _, other = material
    roots = [pki.cert("root-ca")]
    assert check_new_root(der(other.root), der(other.link_certificate), roots, now) == other.root
    stranger_key = generate_key(pki.curve)
    stranger = issue_certificate(subject_cn="Stranger", org_unit="root", public_key=stranger_key.public_key(),
                                 issuer_cert=None, issuer_key=stranger_key, ca=True, path_length=1)
    forged = issue_certificate(subject_cn="SM-Test-Root-CA-2", org_unit="root", public_key=other.root.public_key(),
                               issuer_cert=stranger, issuer_key=stranger_key, ca=True, path_length=1)
    cases = [
        (der(other.root), der(forged), "invalid-certificate", "link-certificate"),
        (der(other.root), der(pki.cert("sub-ca-emt")), "invalid-certificate", "link-certificate"),
        (der(pki.cert("sub-ca-emt")), der(other.link_certificate), "invalid-certificate", "certificate"),
        (der(pki.cert("gwa-tls")), der(other.link_certificate), "invalid-certificate", "certificate"),
        (b"junk", der(other.link_certificate), "invalid-certificate", "certificate"),
        (der(pki.cert("root-ca")), der(other.link_certificate), "duplicate-root", "certificate"),
    ]
    for root, link, code, field in cases:
        with pytest.raises(CosemError) as excinfo:
            check_new_root(root, link, roots, now)
        assert (excinfo.value.code, excinfo.value.field) == (code, field), excinfo.value.message
    with pytest.raises(CosemError):
        check_new_root(der(other.root), der(other.link_certificate), roots, now + _dt.timedelta(days=3650 * 3))


def test_roots_in_use(pki, material, now):
    _, same, other = material
    roots = [pki.cert("root-ca"), other.root]
    bundle = x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes())
    used = [("old tls", der(pki.cert("gwa-tls")), "tls"), ("foreign tls", der(other.certificate("tls")), "tls")]
    intermediates = [*bundle, *other.ca_certificates]
    root1, root2 = (certificate_fingerprint(der(r)) for r in roots)
    assert roots_in_use(root1, roots, intermediates, used, now) == ["old tls"]
    assert roots_in_use(root2, roots, intermediates, used, now) == ["foreign tls"]
    assert roots_in_use(root2, roots, intermediates, used[:1], now) == []
