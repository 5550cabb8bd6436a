"""Shared fixtures. The test SM-PKI is built once per test session (no key is committed)."""

from __future__ import annotations

import datetime as _dt

import pytest

from smgw_emu.pki import PkiDir, init_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PkiDir:
    """A complete brainpoolP256r1 test SM-PKI (see smgw_emu.pki for the file names)."""
    return init_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def pki_now(pki: PkiDir) -> _dt.datetime:
    """A moment every certificate of the test PKI covers: the time it was issued.

    The PKI is issued from the wall clock (real TLS checks against it), so a test that passes a
    time to certificate checks takes it from here, never from a date literal."""
    leaf = pki.cert("gateway-tls")
    issued = leaf.not_valid_before_utc + _dt.timedelta(days=1)  # issue_certificate backdates by a day
    assert leaf.not_valid_before_utc < issued < leaf.not_valid_after_utc
    return issued
