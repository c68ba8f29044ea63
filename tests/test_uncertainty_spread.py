"""Tests of the uncertainty-aware energy plan (algorithms/market/uncertainty_spread.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

from algorithms.common.battery import battery_spec_from_settings
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import to_timestamp
from algorithms.market import optimise, uncertainty_spread
from algorithms.market.cycle_requests import optimisation_request
from algorithms.market.forecast import ALGORITHM as FORECAST_ALGORITHM
from algorithms.market.forecast import PriceForecast, forecast_from_result
from algorithms.market.uncertainty_spread import KAPPA_V1, energy_haircut_per_mwh, half_band_per_mwh, request_kappa
from algorithms.registry import default_registry
from settings import ConfigError, Settings, load_settings
from stack.schedule import cycle_config
from vpp.v1 import worker_pb2

FIRST = datetime(2026, 3, 20, 4, 5)
HORIZON = 288


def forecast_result(product: str, low: np.ndarray, mid: np.ndarray, high: np.ndarray) -> worker_pb2.ForecastResult:
    """A forecast of P05 / P50 / P95 ($/MWh or $/MW/h) per interval."""
    return worker_pb2.ForecastResult(
        request_id=f"f-{product}", algorithm=FORECAST_ALGORITHM, product=product, first_interval=to_timestamp(FIRST),
        horizon_intervals=len(mid), quantiles=[0.05, 0.5, 0.95],
        price=np.column_stack([low, mid, high]).ravel().tolist(), status=worker_pb2.RESULT_STATUS_OK)


def request_for(settings: Settings, forecasts: list[worker_pb2.ForecastResult], *, spread: bool,
                kappa: float | None) -> worker_pb2.OptimisationRequest:
    """A rolling request starting and ending half full, planned on the Pearson–Tukey blend."""
    battery = battery_spec_from_settings(settings.battery)
    request = worker_pb2.OptimisationRequest(
        request_id="opt", algorithm=uncertainty_spread.ALGORITHM if spread else optimise.ALGORITHM, inputs_hash="h",
        battery=battery, initial_state_of_charge_mwh=0.5 * battery.energy_mwh,
        terminal_state_of_charge_mwh=0.5 * battery.energy_mwh, first_interval=to_timestamp(FIRST),
        horizon_intervals=forecasts[0].horizon_intervals, forecasts=forecasts, price_quantile=0.5,
        price_tail_weight=0.185, time_limit_s=10.0, initial_net_mw=0.0)
    if kappa is not None:
        request.energy_uncertainty_weight = kappa
    return request


def noisy_flat_forecast() -> worker_pb2.ForecastResult:
    """A flat market (about $80/MWh) whose median wiggles by ±$30/MWh inside a ±$150/MWh band: noise, not a
    spread — what one day of history gives."""
    rng = np.random.default_rng(15)
    mid = 80.0 + 30.0 * np.sin(np.arange(HORIZON) / 6.0) + rng.normal(0.0, 5.0, HORIZON)
    return forecast_result("ENERGY", mid - 150.0, mid, mid + 150.0)


def throughput_mwh(result: worker_pb2.OptimisationResult) -> float:
    """Energy charged plus discharged over the plan (MWh)."""
    return float(np.sum(np.asarray(result.gen_mw) + np.asarray(result.load_mw))) * optimise.NEM_INTERVAL_HOURS


def test_kappa_zero_is_the_plain_plan_bit_for_bit() -> None:
    settings = load_settings(environ={})
    rng = np.random.default_rng(7)
    mid = 60.0 + 80.0 * rng.random(HORIZON)
    mid[200:230] = 900.0
    energy = forecast_result("ENERGY", mid - 40.0 - 30.0 * rng.random(HORIZON), mid, mid + 200.0)
    raise_mid = 5.0 + 10.0 * rng.random(HORIZON)
    fcas = forecast_result("RAISE6SEC", raise_mid * 0.5, raise_mid, raise_mid * 2)
    plain = optimise.run_optimisation(request_for(settings, [energy, fcas], spread=False, kappa=None))
    spread = uncertainty_spread.run_optimisation(request_for(settings, [energy, fcas], spread=True, kappa=0.0))
    assert plain.status == worker_pb2.RESULT_STATUS_OPTIMAL and throughput_mwh(plain) > 0
    spread.algorithm.CopyFrom(plain.algorithm)
    spread.solve_ms = plain.solve_ms
    assert spread.SerializeToString(deterministic=True) == plain.SerializeToString(deterministic=True)


@pytest.mark.parametrize("kappa", [KAPPA_V1, 0.5])
def test_a_flat_but_uncertain_forecast_is_not_cycled(kappa: float) -> None:
    settings = load_settings(environ={})
    forecast = noisy_flat_forecast()
    plain = optimise.run_optimisation(request_for(settings, [forecast], spread=False, kappa=None))
    spread = uncertainty_spread.run_optimisation(request_for(settings, [forecast], spread=True, kappa=kappa))
    assert plain.status == spread.status == worker_pb2.RESULT_STATUS_OPTIMAL
    # The plain plan cycles the battery on the wiggles of the median; the uncertainty-aware plan does not.
    assert throughput_mwh(plain) > 100.0
    assert throughput_mwh(spread) == pytest.approx(0.0, abs=1e-6)


def test_a_clear_spread_still_trades() -> None:
    settings = load_settings(environ={})
    mid = np.where(np.arange(HORIZON) < HORIZON // 2, 30.0, 250.0)
    forecast = forecast_result("ENERGY", mid - 40.0, mid, mid + 40.0)
    plain = optimise.run_optimisation(request_for(settings, [forecast], spread=False, kappa=None))
    spread = uncertainty_spread.run_optimisation(request_for(settings, [forecast], spread=True, kappa=0.9))
    assert spread.status == worker_pb2.RESULT_STATUS_OPTIMAL
    assert throughput_mwh(spread) == pytest.approx(throughput_mwh(plain), rel=1e-6)
    assert throughput_mwh(spread) > 100.0
    load = np.asarray(spread.load_mw)
    gen = np.asarray(spread.gen_mw)
    assert load[: HORIZON // 2].sum() > 0 and gen[HORIZON // 2:].sum() > 0
    assert load[HORIZON // 2:].sum() == pytest.approx(0.0) and gen[: HORIZON // 2].sum() == pytest.approx(0.0)


def test_the_reported_objective_is_revenue_at_the_planning_price() -> None:
    settings = load_settings(environ={})
    mid = np.where(np.arange(HORIZON) < HORIZON // 2, 30.0, 250.0)
    forecast = forecast_result("ENERGY", mid - 40.0, mid, mid + 40.0)
    request = request_for(settings, [forecast], spread=True, kappa=0.5)
    result = uncertainty_spread.run_optimisation(request)
    planning = optimise.planning_price(forecast_from_result(forecast), 0.5, 0.185)
    battery = request.battery
    revenue = optimise.NEM_INTERVAL_HOURS * float(np.sum(
        planning * (battery.mlf_gen * np.asarray(result.gen_mw) - battery.mlf_load * np.asarray(result.load_mw))))
    assert result.objective_dollars == pytest.approx(revenue, rel=1e-9)


def test_the_haircut_is_kappa_times_half_the_band() -> None:
    mid = np.array([50.0, 100.0, 300.0])
    forecast = PriceForecast(product="ENERGY", first_interval=FIRST, quantiles=np.array([0.05, 0.5, 0.95]),
                             price=np.column_stack([mid - 20.0, mid, mid + np.array([20.0, 100.0, 700.0])]))
    assert half_band_per_mwh(forecast).tolist() == [20.0, 60.0, 360.0]
    assert energy_haircut_per_mwh(forecast, 0.25).tolist() == [5.0, 15.0, 90.0]


@pytest.mark.parametrize("kappa", [1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_an_invalid_kappa_is_rejected_with_a_clear_error(kappa: float) -> None:
    settings = load_settings(environ={})
    request = request_for(settings, [noisy_flat_forecast()], spread=True, kappa=kappa)
    with pytest.raises(InvalidRequestError, match=r"energy_uncertainty_weight \(kappa\) must be in \[0, 1\)"):
        uncertainty_spread.run_optimisation(request)


def test_an_unset_kappa_is_the_versions_own_and_the_request_is_unchanged() -> None:
    settings = load_settings(environ={})
    forecast = noisy_flat_forecast()
    battery = battery_spec_from_settings(settings.battery)
    common = dict(request_id="opt", first_interval=FIRST, horizon_intervals=HORIZON, state_of_charge_mwh=90.0,
                  terminal_state_of_charge_mwh=97.0, price_quantile=0.5, degradation_cost_per_mwh=0.0,
                  time_limit_s=10.0, initial_net_mw=0.0, algorithm=uncertainty_spread.ALGORITHM,
                  price_tail_weight=0.185)
    unset = optimisation_request([forecast], battery, **common)  # type: ignore[arg-type]
    explicit = optimisation_request([forecast], battery, uncertainty_weight=KAPPA_V1, **common)  # type: ignore[arg-type]
    assert not unset.HasField("energy_uncertainty_weight") and request_kappa(unset) == KAPPA_V1
    assert explicit.energy_uncertainty_weight == KAPPA_V1 and explicit.inputs_hash != unset.inputs_hash
    first = uncertainty_spread.run_optimisation(unset)
    second = uncertainty_spread.run_optimisation(explicit)
    assert list(first.gen_mw) == list(second.gen_mw) and list(first.load_mw) == list(second.load_mw)


def test_the_registry_serves_it_and_the_plain_optimiser_refuses_its_name() -> None:
    registry = default_registry()
    assert f"{uncertainty_spread.NAME} v{uncertainty_spread.VERSION}" in registry.known("optimisation")
    request = request_for(load_settings(environ={}), [noisy_flat_forecast()], spread=True, kappa=0.5)
    with pytest.raises(InvalidRequestError, match="is not lp-energy-fcas"):
        optimise.run_optimisation(request)


def test_settings_refuse_a_kappa_outside_zero_to_one(tmp_path: pytest.TempPathFactory) -> None:
    config = tmp_path / "kappa.toml"  # type: ignore[operator]
    config.write_text("[cycle]\noptimiser_uncertainty_weight = 1.0\n")
    with pytest.raises(ConfigError, match="optimiser_uncertainty_weight must be a number in \\[0, 1\\)"):
        load_settings(config, environ={})
    config.write_text("[cycle]\noptimiser_uncertainty_weight = 0.25\n")
    assert load_settings(config, environ={}).cycle.optimiser_uncertainty_weight == 0.25
    assert load_settings(environ={}).cycle.optimiser_uncertainty_weight is None


def test_the_backtest_takes_kappa_from_the_cycle_settings() -> None:
    from dataclasses import replace

    from backtest.engine import BacktestConfig, _parameters

    settings = load_settings(environ={})
    config = BacktestConfig(region="SA1", first_decision=datetime(2021, 1, 2, 4, 0, 30), decisions=1)
    assert _parameters(settings, config).optimiser_uncertainty_weight is None
    chosen = replace(settings, cycle=replace(settings.cycle, optimiser_uncertainty_weight=0.25))
    assert _parameters(chosen, config).optimiser_uncertainty_weight == 0.25


def test_the_live_cycle_carries_the_configured_kappa() -> None:
    settings = load_settings(environ={})
    assert cycle_config(settings.cycle).optimiser_uncertainty_weight is None
    weighted = replace(settings.cycle, optimiser_uncertainty_weight=0.4)
    assert cycle_config(weighted).optimiser_uncertainty_weight == 0.4
