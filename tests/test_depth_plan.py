"""The FCAS depth a plan expects (algorithms/market/depth_plan.py): estimated from the region's local dispatch
known at decision time only, carried in the optimisation request, respected by the plan; without
DISPATCHREGIONSUM the plan is a price-taker's bit for bit; on real data it earns more depth-limited."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from aemo.store import MarketStore
from aemo.store_prices import load_store_prices
from algorithms.common.battery import battery_spec_from_settings
from algorithms.common.errors import InvalidRequestError
from algorithms.common.products import ENERGY
from algorithms.market.cycle_requests import optimisation_request
from algorithms.market.depth_plan import (
    DepthEstimatePolicy,
    expected_enablement_caps_mw,
    expected_local_dispatch_mw,
    plan_enablement_caps_mw,
)
from algorithms.market.optimise import ALGORITHM, request_enablement_caps, run_optimisation
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from backtest.engine import BacktestConfig, BacktestResult, market_prices, run_backtest
from settings import Settings, load_settings
from tests.aemo_fixtures import archive_zip
from tests.test_optimise import forecast_result
from vpp.v1 import worker_pb2

SHARE = 0.5
STEP = np.timedelta64(300, "s")
PRODUCTS = ("ENERGY", "RAISEREG", "LOWER6SEC")


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(environ={})


def _times(first: datetime, count: int) -> np.ndarray:
    return np.datetime64(first, "s") + STEP * np.arange(count)


def _history(days: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``days`` of 5-minute intervals ending 2024-08-01 00:05 onwards: RAISEREG 100 MW from 12:00 to 18:00 and
    20 MW otherwise, LOWER6SEC a steady 60 MW, ENERGY NaN (as DISPATCHREGIONSUM gives it)."""
    times = _times(datetime(2024, 8, 1, 0, 5), days * 288)
    hours = (times.astype("datetime64[m]").astype(np.int64) % 1440) / 60
    raise_reg = np.where((hours > 12) & (hours <= 18), 100.0, 20.0)
    enabled = np.column_stack([np.full(times.size, np.nan), raise_reg, np.full(times.size, 60.0)])
    return times, enabled


# --------------------------------------------------------------------------------------------------
# The estimator, pure
# --------------------------------------------------------------------------------------------------


def test_a_steady_service_is_expected_at_the_share_of_its_level() -> None:
    times, enabled = _history()
    as_of = datetime(2024, 8, 8, 0, 0)
    plan = _times(as_of + timedelta(minutes=10), 288)
    caps = expected_enablement_caps_mw(PRODUCTS, times, enabled, as_of, plan, SHARE)
    assert set(caps) == {"RAISEREG", "LOWER6SEC"}  # ENERGY is never capped
    np.testing.assert_allclose(caps["LOWER6SEC"], SHARE * 60.0, rtol=1e-12)
    assert all(cap.shape == (288,) and bool(np.all(np.isfinite(cap))) for cap in caps.values())


def test_far_leads_follow_the_time_of_day_profile_and_the_first_the_last_hour() -> None:
    times, enabled = _history()
    enabled[-12:, 1] = 80.0  # the last hour before midnight ran at 80 MW, not 20
    as_of = datetime(2024, 8, 8, 0, 0)
    plan = _times(as_of + timedelta(minutes=10), 288)
    expected = expected_local_dispatch_mw(times, enabled[:, 1:], as_of, plan)[:, 0]
    hours = (plan.astype("datetime64[m]").astype(np.int64) % 1440) / 60
    # The first interval is the recent level: the mean of the last 12 known intervals.
    assert expected[0] == pytest.approx(80.0)
    # Hours later, the profile: 100 MW in the afternoon, 20 MW at night (away from the 30-minute smoothing edges;
    # the last hour's 80 MW is one of seven days at 23:00, so not in these slots).
    # The last hour weighs exp(-lead / 12 intervals) on top of the profile.
    weight = np.exp(-np.arange(plan.size) / 12.0)
    afternoon = (hours >= 13) & (hours <= 17)
    night = (hours >= 3) & (hours <= 9)
    np.testing.assert_allclose(expected[afternoon], (100.0 + weight * (80.0 - 100.0))[afternoon], rtol=1e-9)
    np.testing.assert_allclose(expected[night], (20.0 + weight * (80.0 - 20.0))[night], rtol=1e-9)
    assert abs(expected[hours == 15][0] - 100.0) < 1e-3 and abs(expected[hours == 9][0] - 20.0) < 1e-1


def test_no_look_ahead_changing_the_future_changes_nothing() -> None:
    times, enabled = _history(days=9)
    as_of = datetime(2024, 8, 8, 0, 0)
    plan = _times(as_of + timedelta(minutes=10), 288)
    caps = expected_enablement_caps_mw(PRODUCTS, times, enabled, as_of, plan, SHARE)
    future = times > np.datetime64(as_of, "s")
    assert future.sum() > 288  # the data runs past the whole plan
    changed = enabled.copy()
    changed[future, 1:] = np.random.default_rng(3).uniform(0.0, 500.0, (int(future.sum()), 2))
    again = expected_enablement_caps_mw(PRODUCTS, times, changed, as_of, plan, SHARE)
    for product in caps:
        np.testing.assert_array_equal(again[product], caps[product])
    # ... while the past does change them (the test could fail).
    past = changed.copy()
    past[~future, 1] += 40.0
    moved = expected_enablement_caps_mw(PRODUCTS, times, past, as_of, plan, SHARE)
    np.testing.assert_allclose(moved["RAISEREG"], caps["RAISEREG"] + SHARE * 40.0, rtol=1e-9)


def test_only_the_look_back_counts_and_unknown_services_have_no_cap() -> None:
    times, enabled = _history(days=9)
    as_of = datetime(2024, 8, 10, 0, 0)
    plan = _times(as_of + timedelta(minutes=10), 12)
    old = times <= np.datetime64(as_of - timedelta(days=7), "s")
    changed = enabled.copy()
    changed[old, 2] = 1000.0  # older than the 7-day look-back
    base = expected_enablement_caps_mw(PRODUCTS, times, enabled, as_of, plan, SHARE)
    changed_caps = expected_enablement_caps_mw(PRODUCTS, times, changed, as_of, plan, SHARE)
    np.testing.assert_array_equal(changed_caps["LOWER6SEC"], base["LOWER6SEC"])
    unknown = enabled.copy()
    unknown[:, 2] = np.nan
    assert set(expected_enablement_caps_mw(PRODUCTS, times, unknown, as_of, plan, SHARE)) == {"RAISEREG"}
    factor = expected_enablement_caps_mw(PRODUCTS, times, enabled, as_of, plan, SHARE,
                                         DepthEstimatePolicy(cap_factor=0.5))
    np.testing.assert_allclose(factor["LOWER6SEC"], 0.5 * base["LOWER6SEC"])
    with pytest.raises(ValueError, match="share"):
        expected_enablement_caps_mw(PRODUCTS, times, enabled, as_of, plan, 1.5)
    with pytest.raises(ValueError, match="cap_factor"):
        DepthEstimatePolicy(cap_factor=0.0)


def test_data_without_dispatchregionsum_expects_nothing() -> None:
    times, enabled = _history(days=2)
    prices = np.zeros((1, times.size, len(PRODUCTS)))
    plain = DispatchPrices(intervals=times, regions=("SA1",), products=PRODUCTS, price=prices)
    as_of = datetime(2024, 8, 2, 12, 0)
    assert plan_enablement_caps_mw(plain, "SA1", as_of, as_of + timedelta(minutes=10), 24, SHARE) is None
    deep = replace(plain, region_enabled_mw=enabled[None, :, :])
    caps = plan_enablement_caps_mw(deep, "SA1", as_of, as_of + timedelta(minutes=10), 24, SHARE)
    assert caps is not None and set(caps) == {"RAISEREG", "LOWER6SEC"} and caps["RAISEREG"].shape == (24,)


# --------------------------------------------------------------------------------------------------
# The request and the plan
# --------------------------------------------------------------------------------------------------


def _request(settings: Settings, caps: dict[str, np.ndarray] | None,
             horizon: int = 24) -> worker_pb2.OptimisationRequest:
    first = datetime(2024, 8, 10, 4, 5)
    energy = np.full(horizon, 60.0)
    regulation = np.full(horizon, 90.0)  # FCAS worth far more than arbitrage: a price-taker plans it all
    forecasts = [forecast_result(ENERGY, first, energy, energy, energy),
                 forecast_result("RAISEREG", first, regulation, regulation, regulation)]
    return optimisation_request(
        forecasts, battery_spec_from_settings(settings.battery), request_id="opt-depth", first_interval=first,
        horizon_intervals=horizon, state_of_charge_mwh=97.0, terminal_state_of_charge_mwh=97.0, price_quantile=0.5,
        degradation_cost_per_mwh=1.0, time_limit_s=10.0, initial_net_mw=0.0, algorithm=ALGORITHM,
        enablement_cap_mw=caps)


def test_the_plan_respects_the_caps_the_request_carries(settings: Settings) -> None:
    caps = {"RAISEREG": np.linspace(5.0, 40.0, 24), "LOWER6SEC": np.full(24, 3.0)}  # LOWER6SEC is not forecast
    request = _request(settings, caps)
    assert [cap.product for cap in request.enablement_caps] == ["RAISEREG"]
    np.testing.assert_array_equal(request_enablement_caps(request)["RAISEREG"], caps["RAISEREG"])
    capped = run_optimisation(request)
    free = run_optimisation(_request(settings, None))
    capped_reg = np.asarray(next(s for s in capped.fcas if s.product == "RAISEREG").enablement_mw)
    free_reg = np.asarray(next(s for s in free.fcas if s.product == "RAISEREG").enablement_mw)
    assert np.all(capped_reg <= caps["RAISEREG"] + 1e-6)
    np.testing.assert_allclose(capped_reg, caps["RAISEREG"], atol=1e-6)  # worth planning up to the cap
    assert np.all(free_reg > caps["RAISEREG"] + 1.0)  # the price-taker's plan would take more
    assert capped.objective_dollars < free.objective_dollars


def test_no_caps_is_the_price_takers_request_bit_for_bit(settings: Settings) -> None:
    plain = _request(settings, None)
    assert _request(settings, {}).SerializeToString(deterministic=True) == plain.SerializeToString(deterministic=True)
    assert not plain.enablement_caps and plain.inputs_hash == _request(settings, {}).inputs_hash
    with pytest.raises(InvalidRequestError, match="enablement cap of 'RAISEREG'"):
        _request(settings, {"RAISEREG": np.ones(12)})
    with pytest.raises(InvalidRequestError, match="enablement cap of 'RAISEREG'"):
        _request(settings, {"RAISEREG": np.full(24, -1.0)})


def test_the_setting_is_read_and_checked(tmp_path: Path) -> None:
    depth = load_settings(environ={}).market_depth
    assert depth.plan_with_expected_depth and depth.planning_cap_factor == 1.5
    config = tmp_path / "depth.toml"
    config.write_text("[market_depth]\nplan_with_expected_depth = false\nplanning_cap_factor = 0.75\n")
    loaded = load_settings(config, environ={}).market_depth
    assert not loaded.plan_with_expected_depth and loaded.planning_cap_factor == 0.75
    config.write_text("[market_depth]\nplan_with_expected_depth = 1\n")
    with pytest.raises(ValueError, match="true or false"):
        load_settings(config, environ={})
    config.write_text("[market_depth]\nplanning_cap_factor = 0\n")
    with pytest.raises(ValueError, match="planning_cap_factor must be positive"):
        load_settings(config, environ={})


# --------------------------------------------------------------------------------------------------
# Backtests on real data (SA1, August 2024: DISPATCHPRICE and DISPATCHREGIONSUM of data/nemweb)
# --------------------------------------------------------------------------------------------------


August = tuple[DispatchPrices, PredispatchPrices, DispatchPrices]


@pytest.fixture(scope="module")
def august_2024(tmp_path_factory: pytest.TempPathFactory) -> August:
    """(dispatch, pre-dispatch, market) of SA1, 1–3 August 2024, with the region's FCAS local dispatch."""
    store = MarketStore(tmp_path_factory.mktemp("depth-plan") / "market")
    for table in ("DISPATCHPRICE", "DISPATCHREGIONSUM"):
        store.ingest_path(archive_zip("2024_08", table), tables=[table])
    loaded = load_store_prices(store, regions=["SA1"], start=datetime(2024, 8, 1, 0, 5), end=datetime(2024, 8, 4))
    assert loaded.dispatch.region_enabled_mw is not None
    return loaded.dispatch, loaded.predispatch, market_prices(load_settings(environ={}), loaded.dispatch)


CONFIG = BacktestConfig(region="SA1", first_decision=datetime(2024, 8, 2, 4, 0, 30), decisions=72, horizon_intervals=48,
                        history_intervals=288)


def _run(settings: Settings, data: August, plan_with_depth: bool, config: BacktestConfig = CONFIG) -> BacktestResult:
    dispatch, predispatch, market = data
    chosen = replace(settings, market_depth=replace(settings.market_depth, plan_with_expected_depth=plan_with_depth))
    return run_backtest(chosen, dispatch, predispatch, config, workers=1, market=market)


def test_planning_with_the_expected_depth_earns_more_depth_limited(
        settings: Settings, august_2024: August) -> None:
    price_taker = _run(settings, august_2024, plan_with_depth=False)
    aware = _run(settings, august_2024, plan_with_depth=True)
    assert price_taker.failed_decisions == aware.failed_decisions == 0
    assert price_taker.depth_total_revenue_dollars is not None and aware.depth_total_revenue_dollars is not None
    # The same data, the same decisions: the depth-aware plan earns more once FCAS is capped at the depth ...
    assert aware.depth_total_revenue_dollars > 1.05 * price_taker.depth_total_revenue_dollars
    # ... by keeping energy arbitrage it no longer gives up for FCAS it would not be enabled for.
    assert aware.energy_revenue_dollars > price_taker.energy_revenue_dollars
    assert aware.fcas_revenue_dollars < price_taker.fcas_revenue_dollars  # price-taking FCAS falls, as expected


def test_without_dispatchregionsum_the_backtest_is_the_price_takers_bit_for_bit(
        settings: Settings, august_2024: August) -> None:
    dispatch, predispatch, market = august_2024
    plain = (replace(dispatch, region_enabled_mw=None), predispatch, replace(market, region_enabled_mw=None))
    config = replace(CONFIG, decisions=24)
    aware, price_taker = (_run(settings, plain, plan_with_depth, config) for plan_with_depth in (True, False))
    assert aware.depth_fcas_revenue_dollars is None  # price-taker only
    assert aware.records == price_taker.records
    assert aware.total_revenue_dollars == price_taker.total_revenue_dollars
