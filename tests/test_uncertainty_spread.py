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
from algorithms.market.uncertainty_spread import (
    HAIRCUT_PROFILE_BY_VERSION,
    KAPPA_V1,
    energy_haircut_per_mwh,
    half_band_per_mwh,
    request_kappa,
)
from algorithms.registry import default_registry
from settings import ConfigError, Settings, load_settings
from stack.schedule import cycle_config
from vpp.v1 import common_pb2, worker_pb2

FIRST = datetime(2026, 3, 20, 4, 5)
HORIZON = 288


def forecast_result(product: str, low: np.ndarray, mid: np.ndarray, high: np.ndarray) -> worker_pb2.ForecastResult:
    """A forecast of P05 / P50 / P95 ($/MWh or $/MW/h) per interval."""
    return worker_pb2.ForecastResult(
        request_id=f"f-{product}", algorithm=FORECAST_ALGORITHM, product=product, first_interval=to_timestamp(FIRST),
        horizon_intervals=len(mid), quantiles=[0.05, 0.5, 0.95],
        price=np.column_stack([low, mid, high]).ravel().tolist(), status=worker_pb2.RESULT_STATUS_OK)


# Each served version of lp-uncertainty-spread and its worker function.
VERSIONS = {"1": uncertainty_spread.run_optimisation, "2": uncertainty_spread.run_optimisation_v2}


def request_for(settings: Settings, forecasts: list[worker_pb2.ForecastResult], *, spread: bool,
                kappa: float | None, version: str = "1") -> worker_pb2.OptimisationRequest:
    """A rolling request starting and ending half full, planned on the Pearson–Tukey blend
    (``lp-uncertainty-spread`` of ``version`` when ``spread``, else ``lp-energy-fcas``)."""
    battery = battery_spec_from_settings(settings.battery)
    algorithm = (common_pb2.AlgorithmRef(name=uncertainty_spread.NAME, version=version) if spread
                 else optimise.ALGORITHM)
    request = worker_pb2.OptimisationRequest(
        request_id="opt", algorithm=algorithm, inputs_hash="h",
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


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_kappa_zero_is_the_plain_plan_bit_for_bit(version: str) -> None:
    settings = load_settings(environ={})
    rng = np.random.default_rng(7)
    mid = 60.0 + 80.0 * rng.random(HORIZON)
    mid[200:230] = 900.0
    energy = forecast_result("ENERGY", mid - 40.0 - 30.0 * rng.random(HORIZON), mid, mid + 200.0)
    raise_mid = 5.0 + 10.0 * rng.random(HORIZON)
    fcas = forecast_result("RAISE6SEC", raise_mid * 0.5, raise_mid, raise_mid * 2)
    plain = optimise.run_optimisation(request_for(settings, [energy, fcas], spread=False, kappa=None))
    spread = VERSIONS[version](request_for(settings, [energy, fcas], spread=True, kappa=0.0, version=version))
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


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_the_reported_objective_is_revenue_at_the_planning_price(version: str) -> None:
    settings = load_settings(environ={})
    mid = np.where(np.arange(HORIZON) < HORIZON // 2, 30.0, 250.0)
    # A band widening with lead, so v1's and v2's haircuts differ.
    widening = 40.0 + np.arange(HORIZON) / 2
    forecast = forecast_result("ENERGY", mid - widening, mid, mid + widening)
    request = request_for(settings, [forecast], spread=True, kappa=0.5, version=version)
    result = VERSIONS[version](request)
    assert result.status == worker_pb2.RESULT_STATUS_OPTIMAL and throughput_mwh(result) > 100.0
    assert (result.algorithm.name, result.algorithm.version) == (uncertainty_spread.NAME, version)
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


def test_v2s_haircut_is_the_same_at_every_lead_kappa_times_the_mean_half_band() -> None:
    mid = np.array([50.0, 100.0, 300.0, 300.0])
    forecast = PriceForecast(product="ENERGY", first_interval=FIRST, quantiles=np.array([0.05, 0.5, 0.95]),
                             price=np.column_stack([mid - 20.0, mid, mid + np.array([20.0, 100.0, 700.0, 0.0])]))
    assert half_band_per_mwh(forecast).tolist() == [20.0, 60.0, 360.0, 10.0]
    # Mean half band (20 + 60 + 360 + 10) / 4 = $112.5/MWh; κ = 0.25 of it at every interval.
    assert energy_haircut_per_mwh(forecast, 0.25, "horizon_mean").tolist() == [28.125] * 4
    assert energy_haircut_per_mwh(forecast, 0.25, HAIRCUT_PROFILE_BY_VERSION["2"]).tolist() == [28.125] * 4
    assert energy_haircut_per_mwh(forecast, 0.25, HAIRCUT_PROFILE_BY_VERSION["1"]).tolist() == [5.0, 15.0, 90.0, 2.5]
    with pytest.raises(ValueError, match="unknown haircut profile 'by_lead'"):
        energy_haircut_per_mwh(forecast, 0.25, "by_lead")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="must be in"):
        energy_haircut_per_mwh(forecast, 1.0, "horizon_mean")


def test_a_band_widening_with_lead_brings_v1s_discharge_forward_and_not_v2s() -> None:
    """A flat $300/MWh median for the first hour, $310/MWh after it, with a band widening with lead (half band
    $10/MWh at lead 0, $10/MWh more each interval); the battery starts full and must end half full. At κ = 0.25
    v1 values discharge at lead 0 at $297.5/MWh and in the $310 hour at most $277.5 (haircut $32.5 at lead 12):
    it sells now. v2's haircut is the same everywhere, so it sells in the $310 hour as the plain plan does."""
    settings = load_settings(environ={})
    horizon, cheap = 48, 12
    mid = np.where(np.arange(horizon) < cheap, 300.0, 310.0)
    half_band = 10.0 + 10.0 * np.arange(horizon)
    forecast = forecast_result("ENERGY", mid - half_band, mid, mid + half_band)
    battery = battery_spec_from_settings(settings.battery)
    results = {}
    for label, version in (("plain", None), ("v1", "1"), ("v2", "2")):
        request = request_for(settings, [forecast], spread=version is not None, kappa=0.25, version=version or "1")
        request.initial_state_of_charge_mwh = 0.95 * battery.energy_mwh
        if version is None:
            request.ClearField("energy_uncertainty_weight")
            results[label] = optimise.run_optimisation(request)
        else:
            results[label] = VERSIONS[version](request)
        assert results[label].status == worker_pb2.RESULT_STATUS_OPTIMAL
    gen = {label: np.asarray(result.gen_mw) for label, result in results.items()}
    delivered_mwh = {label: float(np.sum(g)) * optimise.NEM_INTERVAL_HOURS for label, g in gen.items()}
    # All three sell the same energy (full down to half full, about 80 MWh delivered); only the timing differs.
    assert delivered_mwh["v1"] == pytest.approx(delivered_mwh["plain"], rel=1e-6)
    assert delivered_mwh["v2"] == pytest.approx(delivered_mwh["plain"], rel=1e-6)
    assert delivered_mwh["plain"] > 70.0
    assert gen["v1"][0] == pytest.approx(battery.power_mw)  # v1 sells at once, at the $300 median
    assert gen["v1"][:cheap].sum() * optimise.NEM_INTERVAL_HOURS == pytest.approx(delivered_mwh["v1"], rel=1e-6)
    for label in ("plain", "v2"):  # v2, like the plain plan, waits for the $310 hour
        assert gen[label][:cheap].sum() == pytest.approx(0.0, abs=1e-6)
    assert results["v2"].objective_dollars == pytest.approx(results["plain"].objective_dollars, rel=1e-9)
    assert results["v2"].objective_dollars > results["v1"].objective_dollars + 700.0  # $10/MWh on about 80 MWh


@pytest.mark.parametrize("version", sorted(VERSIONS))
@pytest.mark.parametrize("kappa", [1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_an_invalid_kappa_is_rejected_with_a_clear_error(kappa: float, version: str) -> None:
    settings = load_settings(environ={})
    request = request_for(settings, [noisy_flat_forecast()], spread=True, kappa=kappa, version=version)
    with pytest.raises(InvalidRequestError, match=r"energy_uncertainty_weight \(kappa\) must be in \[0, 1\)"):
        VERSIONS[version](request)


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


def test_the_registry_serves_both_versions_and_each_refuses_the_others_request() -> None:
    registry = default_registry()
    assert uncertainty_spread.VERSION == "1"  # v1 stays the module's current version; v2 is served next to it
    assert registry.resolve("optimisation", uncertainty_spread.NAME, "1") is uncertainty_spread.run_optimisation
    assert registry.resolve("optimisation", uncertainty_spread.NAME, "2") is uncertainty_spread.run_optimisation_v2
    settings = load_settings(environ={})
    with pytest.raises(InvalidRequestError, match="lp-uncertainty-spread v1 is not lp-uncertainty-spread v2"):
        uncertainty_spread.run_optimisation_v2(request_for(settings, [noisy_flat_forecast()], spread=True, kappa=0.25))
    with pytest.raises(InvalidRequestError, match="lp-uncertainty-spread v2 is not lp-uncertainty-spread v1"):
        uncertainty_spread.run_optimisation(
            request_for(settings, [noisy_flat_forecast()], spread=True, kappa=0.25, version="2"))
    # Without a name in the request, each names its own version in the result.
    unnamed = request_for(settings, [noisy_flat_forecast()], spread=True, kappa=0.25)
    unnamed.ClearField("algorithm")
    assert uncertainty_spread.run_optimisation_v2(unnamed).algorithm.version == "2"
    assert uncertainty_spread.run_optimisation(unnamed).algorithm.version == "1"


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
