"""Configuration loading: defaults match shared/NEM.md, user files merge, bad input is named."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from settings import ConfigError, PriceLimitsUnknownError, load_settings


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


def test_a_financial_year_no_source_covers_is_an_error() -> None:
    """FY2026-27 used to reuse FY2025-26's cap silently; now it is named as missing."""
    rules = load_settings(environ={}).market
    assert rules.price_cap_for(date(2026, 6, 30)).cap == 20300.0
    with pytest.raises(PriceLimitsUnknownError) as error:
        rules.price_cap_for(date(2026, 7, 1))
    message = str(error.value)
    assert "trading day 2026-07-01 (FY2026-27)" in message
    assert "configures FY2020-21 to FY2025-26" in message and "MARKET_PRICE_THRESHOLDS" in message
    with pytest.raises(PriceLimitsUnknownError, match="2020-06-30"):
        rules.price_cap_for(date(2020, 6, 30))
    rules.require_price_caps(date(2020, 7, 1), date(2026, 6, 30))
    with pytest.raises(PriceLimitsUnknownError, match="2026-07-01"):
        rules.require_price_caps(date(2026, 1, 1), date(2026, 12, 31))
    assert isinstance(error.value, ConfigError)  # the CLI reports it as one error line


def test_a_configured_year_may_carry_its_floor(tmp_path: Path) -> None:
    user = tmp_path / "caps.toml"
    user.write_text("[market]\n[[market.price_caps]]\nfy_start = 2026\ncap = 21000.0\n"
                    "cumulative_price_threshold = 1900000.0\nmarket_price_floor = -1100.0\n")
    rules = load_settings(user, environ={}).market
    assert rules.price_cap_for(date(2026, 7, 1)).cap == 21000.0
    assert rules.price_floor_for(date(2026, 7, 1)) == -1100.0
    with pytest.raises(PriceLimitsUnknownError):
        rules.price_cap_for(date(2025, 7, 1))  # a user's list replaces the default one


def test_market_data_source_and_cycle_clock_are_checked(tmp_path: Path) -> None:
    loaded = load_settings(environ={})
    assert (loaded.market_data.source, loaded.cycle.clock) == ("files", "replay")
    assert loaded.market_data.live_folders[0] == "DispatchIS_Reports" and loaded.market_data.live_poll_s > 0
    live = tmp_path / "live.toml"
    live.write_text('[market_data]\nsource = "live"\nlive_poll_s = 2.5\n[cycle]\nclock = "live"\n')
    configured = load_settings(live, environ={})
    assert (configured.market_data.source, configured.market_data.live_poll_s, configured.cycle.clock) == (
        "live", 2.5, "live")
    for text, named in (('[market_data]\nsource = "nemweb"\n', "market_data.source"),
                        ('[cycle]\nclock = "wall"\n', "cycle.clock"),
                        ("[market_data]\nlive_poll_s = 0\n", "live_poll_s")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=named):
            load_settings(bad, environ={})


def test_the_market_store_is_a_market_data_source(tmp_path: Path) -> None:
    store = tmp_path / "store.toml"
    store.write_text('[market_data]\nsource = "store"\n')
    assert load_settings(store, environ={}).market_data.source == "store"
