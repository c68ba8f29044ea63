"""Tests of the spike-reserve optimiser (algorithms/market/spike_reserve.py)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from algorithms.common.battery import battery_spec_from_settings
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import to_timestamp
from algorithms.market import optimise, spike_reserve
from algorithms.market.forecast import ALGORITHM as FORECAST_ALGORITHM
from algorithms.market.forecast import PriceForecast
from algorithms.market.spike_reserve import (
    POLICY_V1,
    SpikeReservePolicy,
    reserve_floor_fraction,
    spike_reserve_mwh,
    spiky_share,
)
from algorithms.registry import default_registry
from settings import Settings
from vpp.v1 import worker_pb2

FIRST = datetime(2022, 1, 20, 4, 5)


def energy_forecast(low: np.ndarray, mid: np.ndarray, high: np.ndarray) -> PriceForecast:
    return PriceForecast(product="ENERGY", first_interval=FIRST, quantiles=np.array([0.05, 0.5, 0.95]),
                         price=np.column_stack([low, mid, high]))


def forecast_result(low: np.ndarray, mid: np.ndarray, high: np.ndarray) -> worker_pb2.ForecastResult:
    return worker_pb2.ForecastResult(
        request_id="f-ENERGY", algorithm=FORECAST_ALGORITHM, product="ENERGY", first_interval=to_timestamp(FIRST),
        horizon_intervals=len(mid), quantiles=[0.05, 0.5, 0.95],
        price=np.column_stack([low, mid, high]).ravel().tolist(), status=worker_pb2.RESULT_STATUS_OK)


def request_for(settings: Settings, forecast: worker_pb2.ForecastResult,
                algorithm: str) -> worker_pb2.OptimisationRequest:
    battery = battery_spec_from_settings(settings.battery)
    ref = spike_reserve.ALGORITHM if algorithm == "reserve" else optimise.ALGORITHM
    return worker_pb2.OptimisationRequest(
        request_id="opt", algorithm=ref, inputs_hash="h", battery=battery,
        initial_state_of_charge_mwh=0.9 * battery.energy_mwh, terminal_state_of_charge_mwh=0.5 * battery.energy_mwh,
        first_interval=to_timestamp(FIRST), horizon_intervals=forecast.horizon_intervals, forecasts=[forecast],
        price_quantile=0.5, price_tail_weight=0.185, time_limit_s=10.0, initial_net_mw=0.0)


def test_spiky_share_counts_intervals_whose_highest_quantile_reaches_the_spike_price() -> None:
    mid = np.full(100, 80.0)
    high = np.full(100, 150.0)
    high[:25] = 300.0   # exactly at the threshold counts
    high[25:30] = 299.9
    assert spiky_share(energy_forecast(mid - 50, mid, high), 300.0) == pytest.approx(0.25)
    assert spiky_share(energy_forecast(mid - 50, mid, np.full(100, 200.0)), 300.0) == 0.0


def test_reserve_grows_with_the_spiky_share_up_to_the_maximum() -> None:
    mid = np.full(100, 80.0)
    policy = SpikeReservePolicy(spike_price_per_mwh=300.0, full_reserve_share=0.2, max_reserve_fraction=0.3)
    reserves = []
    for spiky in (0, 5, 10, 20, 60):
        high = np.full(100, 150.0)
        high[:spiky] = 1_000.0
        reserves.append(spike_reserve_mwh(energy_forecast(mid - 50, mid, high), policy, 194.0))
    assert reserves[0] == 0.0
    assert reserves[1] == pytest.approx(0.3 * 194.0 * 0.25)
    assert reserves[2] == pytest.approx(0.3 * 194.0 * 0.5)
    assert reserves[3] == reserves[4] == pytest.approx(0.3 * 194.0)


def test_policy_and_battery_errors_are_specific() -> None:
    with pytest.raises(InvalidRequestError, match="full_reserve_share"):
        SpikeReservePolicy(spike_price_per_mwh=300.0, full_reserve_share=0.0, max_reserve_fraction=0.3)
    with pytest.raises(InvalidRequestError, match="max_reserve_fraction"):
        SpikeReservePolicy(spike_price_per_mwh=300.0, full_reserve_share=0.1, max_reserve_fraction=1.0)
    with pytest.raises(InvalidRequestError, match="energy_mwh"):
        spike_reserve_mwh(energy_forecast(np.zeros(3), np.zeros(3), np.zeros(3)), POLICY_V1, -1.0)


def test_floor_never_above_the_energy_held_or_the_terminal_target(settings: Settings) -> None:
    battery = battery_spec_from_settings(settings.battery)
    energy = battery.energy_mwh
    own_min = battery.soc_min_fraction
    assert reserve_floor_fraction(58.2, battery, 0.9 * energy, 0.5 * energy) == pytest.approx(own_min + 58.2 / energy)
    # Holding less than the reserve: the floor is where the battery is now, the plan is never forced to charge.
    assert reserve_floor_fraction(58.2, battery, 0.2 * energy, 0.5 * energy) == pytest.approx(0.2)
    # The terminal target caps it, and it is never below the battery's own minimum.
    assert reserve_floor_fraction(150.0, battery, 0.9 * energy, 0.4 * energy) == pytest.approx(0.4)
    assert reserve_floor_fraction(0.0, battery, 0.01 * energy, 0.5 * energy) == pytest.approx(own_min)


def test_plan_holds_charge_when_the_upper_tail_shows_spikes(settings: Settings) -> None:
    # A day of high median prices early on: the plain LP sells everything down to the minimum at once; the
    # forecast's P95 reaches $1,000 in a fifth of the horizon, so the reserve plan keeps 30 % of the storage.
    horizon = 96
    mid = np.full(horizon, 60.0)
    mid[:12] = 250.0
    high = mid + 100.0
    high[40:60] = 1_000.0
    forecast = forecast_result(mid - 40.0, mid, high)
    plain = optimise.run_optimisation(request_for(settings, forecast, "plain"))
    held = spike_reserve.run_optimisation(request_for(settings, forecast, "reserve"))
    assert plain.status == held.status == worker_pb2.RESULT_STATUS_OPTIMAL
    battery = battery_spec_from_settings(settings.battery)
    own_min = battery.energy_mwh * battery.soc_min_fraction
    reserve = own_min + 0.3 * battery.energy_mwh
    assert min(plain.state_of_charge_mwh) < reserve - 10.0
    assert min(held.state_of_charge_mwh) >= reserve - 1e-6
    assert held.algorithm == spike_reserve.ALGORITHM
    # Keeping the reserve costs planned revenue at the path's prices; that is the price of the option.
    assert held.objective_dollars < plain.objective_dollars


def test_without_spikes_in_the_tail_the_plan_is_the_plain_lp_bit_for_bit(settings: Settings) -> None:
    horizon = 48
    rng = np.random.default_rng(3)
    mid = rng.normal(80.0, 30.0, horizon)
    forecast = forecast_result(mid - 40.0, mid, mid + 100.0)  # P95 never reaches $300/MWh
    plain = optimise.run_optimisation(request_for(settings, forecast, "plain"))
    held = spike_reserve.run_optimisation(request_for(settings, forecast, "reserve"))
    held.algorithm.CopyFrom(plain.algorithm)
    assert held == plain


def test_served_by_the_registry_and_refuses_another_algorithm(settings: Settings) -> None:
    registry = default_registry()
    assert "lp-spike-reserve v1" in registry.known("optimisation")
    assert "lp-energy-fcas v1" in registry.known("optimisation")
    mid = np.full(12, 80.0)
    request = request_for(settings, forecast_result(mid, mid, mid), "plain")
    with pytest.raises(InvalidRequestError, match="is not lp-spike-reserve v1"):
        spike_reserve.run_optimisation(request)
    request.algorithm.Clear()
    request.ClearField("forecasts")
    with pytest.raises(InvalidRequestError, match="no forecasts"):
        spike_reserve.run_optimisation(request)
