"""Configuration loading: defaults match shared/NEM.md, user files merge, bad input is named."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from settings import ConfigError, PriceLimitsUnknownError, Settings, UnknownUnitError, load_settings
from stack.schedule import cycle_config


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


def test_the_history_reach_is_checked_and_reads_the_longer_span(tmp_path: Path) -> None:
    loaded = load_settings(environ={}).market_data
    assert loaded.history_reach_intervals == 10080
    assert loaded.history_read_intervals(2016) == 10080 and loaded.history_read_intervals(20000) == 20000
    none = tmp_path / "none.toml"
    none.write_text("[market_data]\nhistory_reach_intervals = 0\n")
    assert load_settings(none, environ={}).market_data.history_read_intervals(2016) == 2016
    for value in ("-1", "1.5", "true", "200000"):
        bad = tmp_path / "bad.toml"
        bad.write_text(f"[market_data]\nhistory_reach_intervals = {value}\n")
        with pytest.raises(ConfigError, match=r"market_data\.history_reach_intervals"):
            load_settings(bad, environ={})


def test_the_market_store_is_a_market_data_source(tmp_path: Path) -> None:
    store = tmp_path / "store.toml"
    store.write_text('[market_data]\nsource = "store"\n')
    assert load_settings(store, environ={}).market_data.source == "store"


# -- the portfolio ----------------------------------------------------------------------------------


PORTFOLIO = '''
[battery]
power_mw = 100.0
[[units]]
unit_id = "HPR1"
region = "SA1"
[[units]]
unit_id = "VIC2"
region = "VIC1"
power_mw = 50.0
energy_mwh = 100.0
[units.bidding]
headroom_pricing = "fixed"
gen_band_prices = [-1000.0, -100.0, -50.0, -20.0, 0.0, 50.0, 100.0, 300.0, 1000.0, 15000.0]
[units.cycle]
optimiser_price_tail_weight = 0.0
optimiser_algorithm_version = "7"
[[units]]
unit_id = "FLEET"
region = "NSW1"
kind = "vpp"
'''


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "units.toml"
    path.write_text(text)
    return load_settings(path, environ={})


def test_without_units_the_default_unit_and_the_vpp_make_the_portfolio() -> None:
    loaded = load_settings(environ={})
    assert loaded.unit_ids == ("HPR1", "VPP1")
    assert [unit.unit_id for unit in loaded.battery_units] == ["HPR1"]
    hpr1 = loaded.unit("HPR1")
    assert hpr1.battery == loaded.battery and hpr1.bidding == loaded.bidding and hpr1.cycle == loaded.cycle
    assert loaded.vpp_unit.unit_id == loaded.coopt.fleet_unit_id == "VPP1"
    assert loaded.vpp_unit.region == "SA1"
    with pytest.raises(UnknownUnitError, match="unknown unit 'NOPE': the configured units are HPR1, VPP1"):
        loaded.unit("NOPE")


def test_units_override_the_battery_bidding_and_cycle_defaults(tmp_path: Path) -> None:
    loaded = _load(tmp_path, PORTFOLIO)
    assert loaded.unit_ids == ("HPR1", "VIC2", "FLEET")
    hpr1, vic2 = loaded.battery_units
    assert hpr1.battery.power_mw == 100.0 and hpr1.battery.energy_mwh == 194.0  # [battery] is every unit's default
    assert (vic2.battery.unit_id, vic2.battery.region, vic2.battery.power_mw, vic2.battery.energy_mwh) == (
        "VIC2", "VIC1", 50.0, 100.0)
    assert vic2.battery.charge_efficiency == hpr1.battery.charge_efficiency
    assert vic2.bidding.headroom_pricing == "fixed" and hpr1.bidding.headroom_pricing == "opportunity_cost"
    assert vic2.bidding.gen_band_prices[-1] == 15000.0 and hpr1.bidding.gen_band_prices[-1] == 14900.0
    assert vic2.cycle.optimiser_price_tail_weight == 0.0 and hpr1.cycle.optimiser_price_tail_weight == 0.185
    assert (vic2.cycle.unit_id, vic2.cycle.region) == ("VIC2", "VIC1")
    # A unit chooses its own strategy; the others keep [cycle]'s.
    assert (vic2.cycle.optimiser_algorithm, vic2.cycle.optimiser_algorithm_version) == ("lp-spike-reserve", "7")
    assert hpr1.cycle.optimiser_algorithm_version == loaded.cycle.optimiser_algorithm_version == "4"
    assert cycle_config(vic2.cycle).optimiser_algorithm_version == "7"
    # The first battery unit is the default unit of every single-unit caller; the VPP entry names the fleet unit.
    assert loaded.battery == hpr1.battery and loaded.cycle.unit_id == "HPR1"
    assert loaded.coopt.fleet_unit_id == "FLEET" and loaded.vpp_unit.region == "NSW1"


@pytest.mark.parametrize(("entries", "message"), [
    ('[[units]]\nunit_id = "A"\n[[units]]\nunit_id = "A"\n',
     r"units\[1\] \(unit 'A'\) field unit_id: duplicate unit id, already used by units\[0\]"),
    ('[[units]]\nunit_id = "VPP1"\n',
     r"units\[1\] \(unit 'VPP1'\) field unit_id: duplicate unit id.*fleet_unit_id"),
    ('[[units]]\nunit_id = "A"\nregion = "WA1"\n', r"units\[0\] \(unit 'A'\) field region: unknown region 'WA1'"),
    ('[[units]]\nunit_id = "A"\npower_mw = -5.0\n', r"unit 'A'\) field power_mw: must be > 0, got -5.0"),
    ('[[units]]\nunit_id = "A"\npower_mw = "big"\n', r"unit 'A'\) field power_mw: must be a number"),
    ('[[units]]\nunit_id = "A"\ncharge_efficiency = 1.5\n', r"field charge_efficiency: must be in \(0, 1\]"),
    ('[[units]]\nunit_id = "A"\nsoc_min_fraction = 0.9\nsoc_max_fraction = 0.5\n', r"field soc_max_fraction"),
    ('[[units]]\nunit_id = "A"\nkind = "windfarm"\n', r"field kind: must be one of battery, vpp"),
    ('[[units]]\nunit_id = "A"\ncolour = "red"\n', r"unit 'A'\) field colour: unknown field"),
    ('[[units]]\nunit_id = ""\n', r"units\[0\] field unit_id"),
    ('[[units]]\nregion = "SA1"\n', r"units\[0\] field unit_id"),
    ('[[units]]\nunit_id = "A"\n[units.bidding]\ngen_band_prices = [1.0, 2.0]\n',
     r"unit 'A'\) field bidding.gen_band_prices: must have 10 bands, got 2"),
    ('[[units]]\nunit_id = "A"\n[units.bidding]\nload_band_prices = [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]\n',
     r"field bidding.load_band_prices: band prices must increase strictly"),
    ('[[units]]\nunit_id = "A"\n[units.bidding]\nheadroom_pricing = "greedy"\n',
     r"field bidding.headroom_pricing: must be one of fixed, opportunity_cost"),
    ('[[units]]\nunit_id = "A"\n[units.bidding]\ncharge_headroom = "always"\n',
     r"field bidding.charge_headroom: must be one of negative, energy_value"),
    ('[[units]]\nunit_id = "A"\n[units.cycle]\nschedule_offset_s = 10\n',
     r"field cycle.schedule_offset_s: not a per-unit setting"),
    ('[[units]]\nunit_id = "A"\n[units.cycle]\noptimiser_algorithm_version = 7\n',
     r"field cycle.optimiser_algorithm_version: must be a non-empty string \(a version in quotes"),
    ('[[units]]\nunit_id = "A"\n[units.cycle]\nforecast_algorithm = ""\n',
     r"field cycle.forecast_algorithm: must be a non-empty string"),
    ('[[units]]\nunit_id = "A"\nkind = "vpp"\n', r"configures no battery unit"),
    ('[[units]]\nunit_id = "A"\n[[units]]\nunit_id = "B"\nkind = "vpp"\n[[units]]\nunit_id = "C"\nkind = "vpp"\n',
     r"unit 'C' field kind: only one unit may be the VPP fleet unit"),
])
def test_a_bad_unit_is_one_settings_error_naming_the_unit_and_field(
        tmp_path: Path, entries: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        _load(tmp_path, entries)
    assert "malformed" not in str(error.value)  # the specific error, not the generic one


def test_charge_headroom_is_a_named_choice_and_a_unit_may_keep_the_negative_bands(tmp_path: Path) -> None:
    assert load_settings(environ={}).bidding.charge_headroom == "energy_value"
    loaded = _load(tmp_path, '[[units]]\nunit_id = "A"\n[units.bidding]\ncharge_headroom = "negative"\n')
    assert next(u for u in loaded.units if u.unit_id == "A").bidding.charge_headroom == "negative"
    with pytest.raises(ConfigError, match=r"bidding.charge_headroom must be one of negative, energy_value"):
        _load(tmp_path, '[bidding]\ncharge_headroom = "sometimes"\n')
