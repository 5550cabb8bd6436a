"""[channels] management_max_retries: the bound of the MANAGEMENT connect retries (docs/decisions.md
"Channel timing")."""

from __future__ import annotations

import pytest

from smgw_emu.app.config import DEFAULT_CONFIG_TOML, ConfigError, load_config, parse_config


def _with(value: str) -> str:
    line = "management_max_retries = 8"
    assert line in DEFAULT_CONFIG_TOML
    return DEFAULT_CONFIG_TOML.replace(line, f"management_max_retries = {value}")



def test_default_bound_is_eight_retries():
    assert load_config().channels.management_max_retries == 8


@pytest.mark.parametrize("value", [0, 255])
def test_bound_accepts_zero_to_255(value):
    assert parse_config(_with(value)).channels.management_max_retries == value


@pytest.mark.parametrize("value", ["-1", "256", "1.5", '"3"'])
def test_bound_refuses_other_values(value):
    with pytest.raises(ConfigError, match="channels.management_max_retries"):
        parse_config(_with(value))
