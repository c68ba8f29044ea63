"""The VPP operating-mode comparison (bench/coopt.py): pure pieces against hand-computed numbers, the
three modes on a small fleet (reserve kept, revenue recomputed, physics replayed), and a constructed
price spike where co-optimising must pay."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rich.console import Console

from algorithms.common.nem_time import market_to_unix_ms
from algorithms.fleet.fleet_types import SiteParameters
from bench.coopt import (
    MODES,
    STEP_HOURS,
    CooptBenchError,
    CooptConfig,
    CooptResult,
    aggregate_battery,
    daily_profile_forecast,
    expected_load_factor,
    interval_bill_dollars,
    make_coopt_fleet,
    market_revenue_dollars,
    market_signal,
    predispatch_on_grid,
    predispatch_overlay,
    region_prices,
    run_coopt_bench,
    simulate_coopt,
    split_pro_rata_to_headroom,
)
from settings import Settings
from simulator.battery import battery_step, reserve_kwh
from simulator.household_load import NOISE_LOG_SIGMA, next_log_noise

SITES = 20
DAYS = 2.0
START = datetime(2021, 1, 10, 0, 0)
PER_DAY = 288


def _parameters(capacity: list[float], power: list[float], reserve: list[float]) -> SiteParameters:
    count = len(capacity)
    return SiteParameters(
        site_ids=np.array([f"site-{i:06d}" for i in range(1, count + 1)]),
        capacity_kwh=np.array(capacity), max_charge_kw=np.array(power), max_discharge_kw=np.array(power),
        charge_efficiency=np.full(count, 0.9), discharge_efficiency=np.full(count, 0.8),
        backup_reserve_fraction=np.array(reserve), pv_capacity_kw=np.zeros(count))


# --------------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------------


def test_daily_profile_forecast_averages_the_same_time_of_day() -> None:
    # 4 intervals a day; three known days 0..11, the decision right after interval 11.
    known = np.arange(12.0)
    forecast = daily_profile_forecast(known, 6, history_days=2, intervals_per_day=4)
    # Lead 1 targets interval 12: days back 1, 2 -> intervals 8, 4. Lead 5 targets 16: days 2, 3 -> 8, 4.
    # Lead 6 targets 17: days 2, 3 -> 9, 5.
    assert forecast.tolist() == [6.0, 7.0, 8.0, 9.0, 6.0, 7.0]


def test_daily_profile_forecast_with_short_history() -> None:
    assert daily_profile_forecast(np.zeros(0), 3).tolist() == [0.0, 0.0, 0.0]
    # Two known intervals of a 4-interval day: leads 1, 2 have no day back -> the mean 15; leads 3, 4 read
    # the known intervals 0, 1.
    forecast = daily_profile_forecast(np.array([10.0, 20.0]), 4, history_days=7, intervals_per_day=4)
    assert forecast.tolist() == [15.0, 15.0, 10.0, 20.0]


def test_interval_bill_golden() -> None:
    pv = np.array([1.0, 4.0])
    load = np.array([3.0, 1.0])
    battery = np.array([1.0, -1.0])
    # Site 1 imports 1 kW for 0.5 h at 0.45; site 2 exports 2 kW for 0.5 h at 0.05.
    bill = interval_bill_dollars(pv, load, battery, 0.45, 0.05, 0.5)
    assert bill == pytest.approx([0.225, -0.05])


@hypothesis_settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 20), st.floats(0, 20), st.floats(-5, 5)), min_size=1, max_size=30),
       st.floats(0, 1), st.floats(0, 1))
def test_bill_is_import_cost_less_export_credit(flows: list[tuple[float, float, float]], import_price: float,
                                               feed_in: float) -> None:
    pv, load, battery = (np.array(column) for column in zip(*flows, strict=True))
    bill = interval_bill_dollars(pv, load, battery, import_price, feed_in, STEP_HOURS)
    for i, (p, x, b) in enumerate(flows):
        net = p + b - x
        expected = (-net * import_price if net < 0 else -net * feed_in) * STEP_HOURS
        assert bill[i] == pytest.approx(expected, abs=1e-12)


def test_no_op_schedule_saves_nothing() -> None:
    # Every battery full and its owner's reserve at 100 %: nothing can move in any mode.
    fleet = make_coopt_fleet(5, 3)
    parameters = replace(fleet.parameters, backup_reserve_fraction=np.ones(5))
    fleet = replace(fleet, parameters=parameters)
    prices = np.tile(np.linspace(-100.0, 300.0, PER_DAY), 2)
    result = simulate_coopt(prices, PER_DAY, 48, market_to_unix_ms(START), fleet,
                            replace(CooptConfig(), initial_soc_fraction=1.0), seed=3)
    for figures in result.modes:
        assert figures.discharged_mwh == 0.0 and figures.charged_mwh == 0.0
        assert figures.bill_savings_dollars == 0.0
        assert figures.market_revenue_dollars == 0.0
        assert figures.no_battery_bill_dollars > 0


def test_market_revenue_golden() -> None:
    # $100/MWh × 1,000 kW for 1 h = $100; −$50/MWh × −2,000 kW for 1 h = $100.
    assert market_revenue_dollars(np.array([100.0, -50.0]), np.array([1000.0, -2000.0]), 1.0) == pytest.approx(200.0)


def test_aggregate_battery_sums_the_fleet() -> None:
    parameters = _parameters([10.0, 30.0], [5.0, 10.0], [0.2, 0.4])
    battery = aggregate_battery(parameters, "SA1")
    assert battery.energy_mwh == pytest.approx(0.040)
    assert battery.power_mw == pytest.approx(0.015)
    assert battery.soc_min_mwh == pytest.approx((2.0 + 12.0) / 1000.0)
    assert battery.charge_efficiency == pytest.approx(0.9)


def test_split_pro_rata_to_headroom_delivers_the_target() -> None:
    parameters = _parameters([10.0, 10.0, 10.0], [5.0, 5.0, 5.0], [0.2, 0.2, 0.2])
    stored = np.array([2.0, 2.1, 10.0])  # at reserve, just above it, full
    duration_s = 300.0
    discharge = split_pro_rata_to_headroom(parameters, stored, 4.0, duration_s)
    # Headroom: 0, min(5, 0.1 × 0.8 × 12 = 0.96), 5 → total 5.96; every site at 4 / 5.96 of it.
    assert discharge == pytest.approx([0.0, 0.96 * 4 / 5.96, 5.0 * 4 / 5.96])
    assert discharge.sum() == pytest.approx(4.0)
    delivered = battery_step(parameters, stored, discharge, duration_s).battery_power_kw
    assert delivered == pytest.approx(discharge)
    charge = split_pro_rata_to_headroom(parameters, stored, -100.0, duration_s)
    assert charge == pytest.approx([-5.0, -5.0, 0.0])  # beyond the headroom: everyone at theirs, full sites none


def test_expected_load_factor_matches_the_noise_process() -> None:
    rng = np.random.default_rng(3)
    start = np.full(200_000, 0.4)
    noise = start
    for _ in range(6):  # 30 minutes in 5-minute steps
        noise = next_log_noise(noise, 300.0, rng)
    sampled = float(np.exp(noise - NOISE_LOG_SIGMA**2 / 2.0).mean())
    expected = expected_load_factor(np.array([0.4]), np.array([1800.0]))[0, 0]
    assert sampled == pytest.approx(expected, rel=3e-3)
    assert expected_load_factor(np.array([0.4]), np.array([1e7]))[0, 0] == pytest.approx(1.0)


def test_config_rejects_misaligned_cadence() -> None:
    with pytest.raises(CooptBenchError):
        CooptConfig(replan_minutes=7)
    with pytest.raises(CooptBenchError):
        CooptConfig(horizon_hours=0.7)
    with pytest.raises(CooptBenchError):
        CooptConfig(market_share=1.5)


# --------------------------------------------------------------------------------------------------
# The three modes on real prices
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run() -> tuple[CooptResult, np.ndarray, SiteParameters]:
    from settings import load_settings

    prices, first_step, steps = region_prices(load_settings(environ={}), "SA1", START, DAYS)
    fleet = make_coopt_fleet(SITES, 5)
    result = simulate_coopt(prices, first_step, steps, market_to_unix_ms(START), fleet, CooptConfig(), seed=5,
                            keep_traces=True)
    return result, prices[first_step:first_step + steps], fleet.parameters


def test_three_modes_return_figures(real_run: tuple[CooptResult, np.ndarray, SiteParameters]) -> None:
    result, _, _ = real_run
    assert [f.mode for f in result.modes] == list(MODES)
    assert result.steps == DAYS * PER_DAY and result.decisions == DAYS * 48
    for figures in result.modes:
        assert np.isfinite([figures.market_revenue_dollars, figures.bill_savings_dollars,
                            figures.total_value_dollars]).all()
        assert figures.failed_plans == 0
        assert figures.discharged_mwh > 0
        assert figures.total_value_dollars == pytest.approx(
            figures.market_revenue_dollars + figures.no_battery_bill_dollars - figures.bill_dollars)
    # The homes' own modes save on the bill; the centre ignores the homes and buys at the retail tariff.
    assert result.mode("self_only").bill_savings_dollars > 0
    assert result.mode("co_optimised").bill_savings_dollars > 0
    assert result.mode("central").bill_savings_dollars < result.mode("self_only").bill_savings_dollars


def test_reserve_is_kept_in_every_site_interval(real_run: tuple[CooptResult, np.ndarray, SiteParameters]) -> None:
    result, _, parameters = real_run
    reserve = reserve_kwh(parameters)
    for figures in result.modes:
        assert figures.trace is not None
        assert bool(np.all(figures.trace.state_of_charge_kwh >= reserve[None, :] - 1e-9))
        assert figures.reserve_kept_share == 1.0
        assert figures.lowest_margin_kwh == pytest.approx(
            float((figures.trace.state_of_charge_kwh - reserve[None, :]).min()))
        assert figures.lowest_margin_kwh >= -1e-9


def test_market_revenue_is_the_spot_value_of_the_battery_power(
        real_run: tuple[CooptResult, np.ndarray, SiteParameters]) -> None:
    result, prices, parameters = real_run
    for mode in MODES:
        figures = result.mode(mode)
        assert figures.trace is not None
        power = figures.trace.battery_power_kw
        recomputed = sum(float(prices[t]) * float(power[t].sum()) * (5 / 60) / 1000 for t in range(len(prices)))
        assert figures.market_revenue_dollars == pytest.approx(recomputed, rel=1e-9, abs=1e-9)
        # The recorded powers are what the physics delivers: replaying them as requests changes nothing.
        stored = np.maximum(0.5 * parameters.capacity_kwh, reserve_kwh(parameters))
        for t in range(len(prices)):
            step = battery_step(parameters, stored, power[t], 300.0)
            np.testing.assert_allclose(step.battery_power_kw, power[t], atol=1e-9)
            stored = step.state_of_charge_kwh
            np.testing.assert_allclose(stored, figures.trace.state_of_charge_kwh[t], atol=1e-9)


# --------------------------------------------------------------------------------------------------
# A constructed price spike
# --------------------------------------------------------------------------------------------------


def test_co_optimising_pays_when_prices_spike() -> None:
    # Every day the same: $40/MWh with $5,000/MWh from 18:00 to 19:00 AEST (intervals ending 18:05..19:00);
    # a week of history, so the daily-profile forecast knows the spike exactly.
    day = np.full(PER_DAY, 40.0)
    day[18 * 12:19 * 12] = 5000.0
    history_days = 7
    prices = np.tile(day, history_days + int(DAYS))
    fleet = make_coopt_fleet(SITES, 11)
    result = simulate_coopt(prices, history_days * PER_DAY, int(DAYS) * PER_DAY, market_to_unix_ms(START), fleet,
                            CooptConfig(), seed=11)
    self_only, central, co_optimised = (result.mode(mode) for mode in MODES)
    tolerance = 0.01 * abs(central.total_value_dollars)
    assert co_optimised.total_value_dollars >= self_only.total_value_dollars
    assert co_optimised.total_value_dollars >= central.total_value_dollars - tolerance
    assert co_optimised.market_revenue_dollars > self_only.market_revenue_dollars
    # Without a market share the co-optimised sites plan exactly as the self-only ones.
    no_share = simulate_coopt(prices, history_days * PER_DAY, PER_DAY, market_to_unix_ms(START), fleet,
                              replace(CooptConfig(), market_share=0.0), seed=11)
    assert no_share.mode("co_optimised").total_value_dollars == pytest.approx(
        no_share.mode("self_only").total_value_dollars)


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def test_run_coopt_bench_prints_the_table(settings: Settings) -> None:
    buffer = io.StringIO()
    code = run_coopt_bench(settings, region="SA1", start=START, days=0.25, sites=10, seed=2,
                           console=Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert code == 0
    for expected in ("self_only", "central", "co_optimised", "market revenue", "bill savings", "total value",
                     "10 simulated homes", "peak $0.45/kWh 15:00–21:00", "co_optimised vs self_only", "elapsed"):
        assert expected in text


def test_run_coopt_bench_rejects_a_period_outside_the_data(settings: Settings) -> None:
    with pytest.raises(CooptBenchError, match="does not hold"):
        run_coopt_bench(settings, region="SA1", start=datetime(2021, 1, 31), days=2, sites=10, seed=1)
    with pytest.raises(CooptBenchError, match="boundary"):
        run_coopt_bench(settings, region="SA1", start=datetime(2021, 1, 3, 0, 10), days=1, sites=10, seed=1)
    with pytest.raises(CooptBenchError, match="unknown region"):
        run_coopt_bench(settings, region="XX1", start=START, days=1, sites=10, seed=1)


def test_predispatch_on_grid_step_holds_half_hours() -> None:
    decision = datetime(2021, 1, 10, 12, 0)
    periods = [datetime(2021, 1, 10, 12, 30), datetime(2021, 1, 10, 13, 0)]
    on_grid = predispatch_on_grid(periods, np.array([10.0, 20.0]), decision, 14)
    np.testing.assert_array_equal(on_grid, [10.0] * 6 + [20.0] * 6 + [np.nan] * 2)
    later = predispatch_on_grid(periods[1:], np.array([20.0]), decision, 8)
    np.testing.assert_array_equal(later, [np.nan] * 6 + [20.0] * 2)


def test_market_signal_options() -> None:
    prices = np.arange(3 * PER_DAY, dtype=np.float64)
    known = 2 * PER_DAY
    profile = market_signal(prices, known, CooptConfig())
    np.testing.assert_array_equal(profile, daily_profile_forecast(prices[:known], PER_DAY))
    perfect = market_signal(prices, known, CooptConfig(price_signal="perfect_foresight"))
    np.testing.assert_array_equal(perfect, prices[known:])
    overlay = np.full(PER_DAY, np.nan)
    overlay[:6] = 99.0
    blended = market_signal(prices, known, CooptConfig(price_signal="predispatch"), overlay)
    np.testing.assert_array_equal(blended, np.concatenate([np.full(6, 99.0), profile[6:]]))


def test_predispatch_overlay_reads_the_run_known_at_each_decision() -> None:
    from aemo.mms import load_market_data
    from settings import load_settings

    _, predispatch = load_market_data(load_settings(environ={}).market_data.data_dir)
    decision = datetime(2021, 1, 10, 12, 0)
    config = CooptConfig()
    overlay = predispatch_overlay(predispatch, "SA1", decision, 2, config)
    run = predispatch.latest_run("SA1", decision)
    assert run is not None and run.known_at <= decision
    periods = run.periods.astype("datetime64[s]").tolist()
    energy = run.price[:, 0]
    half_hour = periods.index(datetime(2021, 1, 10, 12, 30))
    np.testing.assert_array_equal(overlay[0, :6], np.full(6, energy[half_hour]))
    covered_steps = (periods[-1] - decision) // timedelta(minutes=5)
    assert np.isfinite(overlay[0, :covered_steps]).all() and np.isnan(overlay[0, covered_steps:]).all()
    later = predispatch.latest_run("SA1", decision + timedelta(minutes=30))
    assert later is not None
    assert overlay[1, 0] == later.price[list(later.periods.astype("datetime64[s]").tolist()).index(
        datetime(2021, 1, 10, 13, 0)), 0]


def test_modes_in_worker_processes_give_the_same_figures() -> None:
    day = np.linspace(-50.0, 400.0, PER_DAY)
    prices = np.tile(day, 2)
    fleet = make_coopt_fleet(6, 4)
    arguments = (prices, PER_DAY, 36, market_to_unix_ms(START), fleet, CooptConfig())
    alone = simulate_coopt(*arguments, seed=4)
    pooled = simulate_coopt(*arguments, seed=4, workers=3)
    for mine, theirs in zip(alone.modes, pooled.modes, strict=True):
        assert mine.mode == theirs.mode
        assert mine.total_value_dollars == theirs.total_value_dollars
        assert mine.market_revenue_dollars == theirs.market_revenue_dollars
        np.testing.assert_array_equal(mine.fleet_battery_power_kw, theirs.fleet_battery_power_kw)
    # Every mode sees the same homes: the same bill without a battery.
    assert len({figures.no_battery_bill_dollars for figures in alone.modes}) == 1
