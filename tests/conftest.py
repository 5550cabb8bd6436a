"""Shared fixtures. The test SM-PKI is built once per test session (no key is committed)."""

from __future__ import annotations

import pytest

from smgw_emu.pki import PkiDir, init_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PkiDir:
    """A complete brainpoolP256r1 test SM-PKI (see smgw_emu.pki for the file names)."""
    return init_pki(tmp_path_factory.mktemp("pki"))
