"""Configuration loading: defaults match shared/NEM.md, user files merge, bad input is named."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from settings import ConfigError, load_settings


def test_defaults_carry_the_reference_battery_and_price_caps() -> None:
    loaded = load_settings(environ={})
    assert loaded.battery.power_mw == 150.0
    assert loaded.battery.energy_mwh == 194.0
    assert loaded.market.price_cap_for(date(2021, 1, 15)).cap == 15000.0
    assert loaded.market.price_cap_for(date(2021, 7, 1)).cap == 15100.0
    assert loaded.market.price_cap_for(date(2026, 3, 1)).cap == 20300.0
    assert loaded.market_data.data_dir.is_dir()


def test_user_file_merges_over_defaults(tmp_path: Path) -> None:
    user = tmp_path / "user.toml"
    user.write_text('[battery]\npower_mw = 100.0\n[stack]\nsqs_port = 9999\n')
    loaded = load_settings(user, environ={})
    assert loaded.battery.power_mw == 100.0
    assert loaded.battery.energy_mwh == 194.0
    assert loaded.stack.sqs_port == 9999


def test_environment_overrides_and_bad_values_are_named(tmp_path: Path) -> None:
    loaded = load_settings(environ={"VPP_SQS_PORT": "7000", "DATABASE_URL": "postgresql://x/y"})
    assert loaded.stack.sqs_port == 7000
    assert loaded.database_url == "postgresql://x/y"
    with pytest.raises(ConfigError, match="VPP_SQS_PORT"):
        load_settings(environ={"VPP_SQS_PORT": "many"})
    broken = tmp_path / "broken.toml"
    broken.write_text("[battery\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_settings(broken, environ={})


def test_market_data_source_and_price_caps_before_the_table(tmp_path: Path) -> None:
    loaded = load_settings(environ={})
    assert loaded.market_data.source == "files"
    # Before the first configured year (FY 2020-21) the nearest configured year applies.
    assert loaded.market.price_cap_for(date(2018, 4, 15)).cap == 15000.0
    store = tmp_path / "store.toml"
    store.write_text('[market_data]\nsource = "store"\n')
    assert load_settings(store, environ={}).market_data.source == "store"
    store.write_text('[market_data]\nsource = "nemweb"\n')
    with pytest.raises(ConfigError, match="source must be one of files, store"):
        load_settings(store, environ={})
