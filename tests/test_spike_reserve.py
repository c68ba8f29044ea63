"""Tests of the spike-reserve optimiser (algorithms/market/spike_reserve.py)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from algorithms.common.battery import battery_spec_from_settings
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import to_timestamp
from algorithms.market import optimise, spike_reserve, uncertainty_spread
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
from vpp.v1 import common_pb2, worker_pb2

FIRST = datetime(2022, 1, 20, 4, 5)
# lp-spike-reserve v3's plan on deep_negative_forecast(): revenue at the planning price ($) and highest SoC over the
# deep intervals (MWh: the reference battery's 184.3 MWh maximum less the full room of 30 % of its 194 MWh).
GOLDEN_V3_OBJECTIVE_DOLLARS = 23_686.304
GOLDEN_V3_MAX_SOC_MWH = 126.1


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


def spiky_forecast() -> worker_pb2.ForecastResult:
    """96 intervals: a high median ($250/MWh) for the first hour, $60/MWh after; P05 $40 below the median, P95
    $100 above it and $1,000/MWh over intervals 40–59 (a fifth of the horizon)."""
    mid = np.full(96, 60.0)
    mid[:12] = 250.0
    high = mid + 100.0
    high[40:60] = 1_000.0
    return forecast_result(mid - 40.0, mid, high)


def test_plan_holds_charge_when_the_upper_tail_shows_spikes(settings: Settings) -> None:
    # A day of high median prices early on: the plain LP sells everything down to the minimum at once; the
    # forecast's P95 reaches $1,000 in a fifth of the horizon, so the reserve plan keeps 30 % of the storage.
    forecast = spiky_forecast()
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


# v2: the same reserve under lp-uncertainty-spread v1's plan.

def request_v2(settings: Settings, forecast: worker_pb2.ForecastResult, *, algorithm: str,
               kappa: float | None = None) -> worker_pb2.OptimisationRequest:
    """The request of :func:`request_for` naming ``algorithm`` ("reserve-v2": lp-spike-reserve v2,
    "spread": lp-uncertainty-spread v1, "reserve": lp-spike-reserve v1), with κ when given."""
    request = request_for(settings, forecast, "plain")
    ref = {"reserve-v2": common_pb2.AlgorithmRef(name=spike_reserve.NAME, version="2"),
           "spread": uncertainty_spread.ALGORITHM, "reserve": spike_reserve.ALGORITHM}[algorithm]
    request.algorithm.CopyFrom(ref)
    if kappa is not None:
        request.energy_uncertainty_weight = kappa
    return request


def spiky_noisy_forecast() -> worker_pb2.ForecastResult:
    """A flat market (about $80/MWh) whose median wiggles by ±$30/MWh inside a ±$150/MWh band, its P95
    reaching $1,000/MWh over a fifth of the horizon: noise the haircut will not trade, and a spiky tail."""
    horizon = 96
    rng = np.random.default_rng(15)
    mid = 80.0 + 30.0 * np.sin(np.arange(horizon) / 6.0) + rng.normal(0.0, 5.0, horizon)
    high = mid + 150.0
    high[40:60] = 1_000.0
    return forecast_result(mid - 150.0, mid, high)


def throughput_mwh(result: worker_pb2.OptimisationResult) -> float:
    """Energy charged plus discharged over the plan (MWh)."""
    return float(np.sum(np.asarray(result.gen_mw) + np.asarray(result.load_mw))) * optimise.NEM_INTERVAL_HOURS


def test_v2_holds_the_reserve_under_the_uncertainty_spread_plan(settings: Settings) -> None:
    # The forecast of the v1 test: high median prices early, P95 at $1,000/MWh in a fifth of the horizon. The
    # uncertainty-spread plan sells down to the minimum as the plain LP does; v2 keeps 30 % of the storage.
    forecast = spiky_forecast()
    spread = uncertainty_spread.run_optimisation(request_v2(settings, forecast, algorithm="spread"))
    held = spike_reserve.run_optimisation_v2(request_v2(settings, forecast, algorithm="reserve-v2"))
    assert spread.status == held.status == worker_pb2.RESULT_STATUS_OPTIMAL
    battery = battery_spec_from_settings(settings.battery)
    reserve = battery.energy_mwh * battery.soc_min_fraction + 0.3 * battery.energy_mwh
    assert min(spread.state_of_charge_mwh) < reserve - 10.0
    assert min(held.state_of_charge_mwh) >= reserve - 1e-6
    assert held.algorithm == common_pb2.AlgorithmRef(name=spike_reserve.NAME, version="2")
    assert held.objective_dollars < spread.objective_dollars


def test_v2_applies_the_haircut_above_the_floor(settings: Settings) -> None:
    # A noisy flat median and a spiky tail: both reserve versions hold the same floor, but v1 (the plain LP
    # above it) cycles the noise and v2 (the haircut of κ = 0.25 × half the ±$150/MWh band) does not.
    forecast = spiky_noisy_forecast()
    v1 = spike_reserve.run_optimisation(request_v2(settings, forecast, algorithm="reserve"))
    v2 = spike_reserve.run_optimisation_v2(request_v2(settings, forecast, algorithm="reserve-v2", kappa=0.25))
    assert v1.status == v2.status == worker_pb2.RESULT_STATUS_OPTIMAL
    battery = battery_spec_from_settings(settings.battery)
    reserve = battery.energy_mwh * battery.soc_min_fraction + 0.3 * battery.energy_mwh
    assert min(v1.state_of_charge_mwh) >= reserve - 1e-6 and min(v2.state_of_charge_mwh) >= reserve - 1e-6
    assert throughput_mwh(v1) > 50.0
    assert throughput_mwh(v2) < 0.5 * throughput_mwh(v1)


@pytest.mark.parametrize("kappa", [None, 0.25, 0.5])
def test_v2_without_spikes_in_the_tail_is_the_uncertainty_spread_plan_bit_for_bit(
        settings: Settings, kappa: float | None) -> None:
    rng = np.random.default_rng(3)
    mid = 80.0 + 30.0 * np.sin(np.arange(48) / 4.0) + rng.normal(0.0, 10.0, 48)
    forecast = forecast_result(mid - 60.0, mid, mid + 60.0)  # P95 never reaches $300/MWh
    spread = uncertainty_spread.run_optimisation(request_v2(settings, forecast, algorithm="spread", kappa=kappa))
    held = spike_reserve.run_optimisation_v2(request_v2(settings, forecast, algorithm="reserve-v2", kappa=kappa))
    plain = optimise.run_optimisation(request_for(settings, forecast, "plain"))
    # The haircut changes this plan, so equality says v2 planned with it, not with the plain LP.
    assert list(spread.gen_mw) != list(plain.gen_mw) or list(spread.load_mw) != list(plain.load_mw)
    held.algorithm.CopyFrom(spread.algorithm)
    assert held == spread


def test_v2_is_served_next_to_v1_and_each_refuses_the_others_request(settings: Settings) -> None:
    registry = default_registry()
    assert registry.resolve("optimisation", spike_reserve.NAME, "2") is spike_reserve.run_optimisation_v2
    assert registry.resolve("optimisation", spike_reserve.NAME, "1") is spike_reserve.run_optimisation
    assert spike_reserve.VERSION == "1"
    forecast = spiky_noisy_forecast()
    with pytest.raises(InvalidRequestError, match="is not lp-spike-reserve v2"):
        spike_reserve.run_optimisation_v2(request_v2(settings, forecast, algorithm="reserve"))
    with pytest.raises(InvalidRequestError, match="is not lp-spike-reserve v1"):
        spike_reserve.run_optimisation(request_v2(settings, forecast, algorithm="reserve-v2"))
    with pytest.raises(InvalidRequestError, match="is not lp-spike-reserve v2"):
        spike_reserve.run_optimisation_v2(request_v2(settings, forecast, algorithm="spread"))


def test_v2_refuses_an_invalid_kappa_and_a_request_without_battery(settings: Settings) -> None:
    forecast = spiky_noisy_forecast()
    with pytest.raises(InvalidRequestError, match="kappa"):
        spike_reserve.run_optimisation_v2(request_v2(settings, forecast, algorithm="reserve-v2", kappa=1.0))
    request = request_v2(settings, forecast, algorithm="reserve-v2")
    request.ClearField("battery")
    with pytest.raises(InvalidRequestError, match="battery is not set"):
        spike_reserve.run_optimisation_v2(request)
    request = request_v2(settings, forecast, algorithm="reserve-v2")
    request.ClearField("forecasts")
    with pytest.raises(InvalidRequestError, match="no forecasts"):
        spike_reserve.run_optimisation_v2(request)


def test_the_reserve_request_leaves_the_callers_request_unchanged(settings: Settings) -> None:
    forecast = spiky_noisy_forecast()
    request = request_v2(settings, forecast, algorithm="reserve-v2")
    before = worker_pb2.OptimisationRequest()
    before.CopyFrom(request)
    inner = spike_reserve.reserve_request(request, POLICY_V1, uncertainty_spread.ALGORITHM)
    assert request == before
    assert inner.algorithm == uncertainty_spread.ALGORITHM
    assert inner.battery.soc_min_fraction > request.battery.soc_min_fraction


# v3: v1's reserve plus room kept empty for deeply negative prices.

def request_v3(settings: Settings, forecast: worker_pb2.ForecastResult, *, initial_fraction: float = 0.3,
               terminal_fraction: float = 0.5) -> worker_pb2.OptimisationRequest:
    """The request of :func:`request_for` naming lp-spike-reserve v3, starting at ``initial_fraction`` of the
    storage and ending with at least ``terminal_fraction`` of it."""
    request = request_for(settings, forecast, "plain")
    request.algorithm.CopyFrom(common_pb2.AlgorithmRef(name=spike_reserve.NAME, version="3"))
    request.initial_state_of_charge_mwh = initial_fraction * request.battery.energy_mwh
    request.terminal_state_of_charge_mwh = terminal_fraction * request.battery.energy_mwh
    return request


def deep_negative_forecast() -> worker_pb2.ForecastResult:
    """96 intervals: a median of -$40/MWh for the first hour, $60/MWh after; P95 $100 above the median (never
    $300/MWh), P05 $40 below it and -$600/MWh over intervals 40–59 (a fifth of the horizon)."""
    mid = np.full(96, 60.0)
    mid[:12] = -40.0
    low = mid - 40.0
    low[40:60] = -600.0
    return forecast_result(low, mid, mid + 100.0)


def test_deeply_negative_share_counts_intervals_whose_lowest_quantile_reaches_the_price() -> None:
    mid = np.full(100, 20.0)
    low = np.full(100, -50.0)
    low[:25] = -100.0   # exactly at the threshold counts
    low[25:30] = -99.9
    assert spike_reserve.deeply_negative_share(energy_forecast(low, mid, mid + 50), -100.0) == pytest.approx(0.25)
    assert spike_reserve.deeply_negative_share(energy_forecast(np.full(100, -80.0), mid, mid + 50), -100.0) == 0.0


def test_room_grows_with_the_deeply_negative_share_up_to_the_maximum() -> None:
    mid = np.full(100, 20.0)
    policy = spike_reserve.SpikeRoomPolicy(price_per_mwh=-100.0, full_room_share=0.2, max_room_fraction=0.3)
    rooms = []
    for deep in (0, 5, 10, 20, 60):
        low = np.full(100, -20.0)
        low[:deep] = -500.0
        rooms.append(spike_reserve.spike_room_mwh(energy_forecast(low, mid, mid + 50), policy, 194.0))
    assert rooms[0] == 0.0
    assert rooms[1] == pytest.approx(0.3 * 194.0 * 0.25)
    assert rooms[2] == pytest.approx(0.3 * 194.0 * 0.5)
    assert rooms[3] == rooms[4] == pytest.approx(0.3 * 194.0)
    with pytest.raises(InvalidRequestError, match="full_room_share"):
        spike_reserve.SpikeRoomPolicy(price_per_mwh=-100.0, full_room_share=0.0, max_room_fraction=0.3)
    with pytest.raises(InvalidRequestError, match="max_room_fraction"):
        spike_reserve.SpikeRoomPolicy(price_per_mwh=-100.0, full_room_share=0.1, max_room_fraction=1.0)
    with pytest.raises(InvalidRequestError, match="price_per_mwh"):
        spike_reserve.SpikeRoomPolicy(price_per_mwh=float("nan"), full_room_share=0.1, max_room_fraction=0.3)


def test_fastest_discharge_follows_power_ramp_and_the_own_minimum(settings: Settings) -> None:
    battery = battery_spec_from_settings(settings.battery)
    hours = optimise.NEM_INTERVAL_HOURS
    soc = spike_reserve.fastest_discharge_soc_mwh(battery, 150.0, 0.0, 12, hours)
    step = battery.power_mw * hours / battery.discharge_efficiency
    assert soc[0] == pytest.approx(150.0 - step)
    assert soc[-1] == pytest.approx(battery.energy_mwh * battery.soc_min_fraction)
    slow = common_pb2.BatterySpec()
    slow.CopyFrom(battery)
    slow.ramp_rate_mw_per_min = 3.0   # 15 MW more discharge each interval, starting from 30 MW of charge
    soc = spike_reserve.fastest_discharge_soc_mwh(slow, 100.0, -30.0, 3, hours)
    expected = 100.0 + np.cumsum([15.0 * hours * slow.charge_efficiency, 0.0,
                                  -15.0 * hours / slow.discharge_efficiency])
    assert soc == pytest.approx(expected)


def test_ceiling_covers_the_deep_intervals_and_the_one_before_within_reach(settings: Settings) -> None:
    battery = battery_spec_from_settings(settings.battery)
    own_max = battery.energy_mwh * battery.soc_max_fraction
    room = 0.3 * battery.energy_mwh
    mid = np.full(48, 20.0)
    low = np.full(48, -20.0)
    low[30:40] = -300.0   # deep over intervals 30–39 (more than a tenth of the horizon: the full room)
    forecast = energy_forecast(low, mid, mid + 50)
    ceiling = spike_reserve.room_ceiling_mwh(forecast, spike_reserve.ROOM_POLICY_V3, battery, 0.5 * own_max, 0.0,
                                             0.3 * own_max, optimise.NEM_INTERVAL_HOURS)
    assert ceiling is not None
    assert ceiling[29:40] == pytest.approx(own_max - room)
    assert ceiling[:29] == pytest.approx(own_max) and ceiling[40:] == pytest.approx(own_max)
    # Starting full with deep prices two intervals ahead: the ceiling is what discharging at full power reaches.
    low = np.full(48, -20.0)
    low[2:10] = -300.0
    ceiling = spike_reserve.room_ceiling_mwh(energy_forecast(low, mid, mid + 50), spike_reserve.ROOM_POLICY_V3,
                                             battery, own_max, 0.0, 0.3 * own_max, optimise.NEM_INTERVAL_HOURS)
    reach = spike_reserve.fastest_discharge_soc_mwh(battery, own_max, 0.0, 48, optimise.NEM_INTERVAL_HOURS)
    assert ceiling is not None
    assert ceiling[1] == pytest.approx(max(reach[1], own_max - room))
    assert ceiling[9] == pytest.approx(own_max - room)
    # The terminal target holds it up; no deep interval: no ceiling.
    ceiling = spike_reserve.room_ceiling_mwh(forecast, spike_reserve.ROOM_POLICY_V3, battery, 0.5 * own_max, 0.0,
                                             own_max - 10.0, optimise.NEM_INTERVAL_HOURS)
    assert ceiling is not None and ceiling.min() == pytest.approx(own_max - 10.0)
    assert spike_reserve.room_ceiling_mwh(energy_forecast(np.full(48, -99.0), mid, mid + 50),
                                          spike_reserve.ROOM_POLICY_V3, battery, own_max, 0.0, 0.3 * own_max,
                                          optimise.NEM_INTERVAL_HOURS) is None


def test_v3_makes_room_ahead_of_deeply_negative_prices_when_full(settings: Settings) -> None:
    # A full battery; median $50/MWh for 40 intervals, $80/MWh over the next 20, $150/MWh after; P05 $40 below the
    # median but -$150/MWh over intervals 40–59, P95 $100 above it. The planning prices (Pearson–Tukey: about $61,
    # $56 and $161/MWh) leave no round trip worth its losses before the $161, so v1 (no spike in the upper tail:
    # the plain LP) holds its energy; v3 sells 30 % of the storage before the deep intervals to make room.
    mid = np.full(96, 50.0)
    mid[40:60] = 80.0
    mid[60:] = 150.0
    low = mid - 40.0
    low[40:60] = -150.0
    forecast = forecast_result(low, mid, mid + 100.0)
    battery = battery_spec_from_settings(settings.battery)
    own_max = battery.energy_mwh * battery.soc_max_fraction
    v1_request = request_v3(settings, forecast, initial_fraction=battery.soc_max_fraction)
    v1_request.algorithm.CopyFrom(spike_reserve.ALGORITHM)
    v1 = spike_reserve.run_optimisation(v1_request)
    v3 = spike_reserve.run_optimisation_v3(request_v3(settings, forecast, initial_fraction=battery.soc_max_fraction))
    assert v1.status == v3.status == worker_pb2.RESULT_STATUS_OPTIMAL
    assert min(v1.state_of_charge_mwh[:40]) > own_max - 1.0
    assert max(v3.state_of_charge_mwh[39:60]) <= own_max - 0.3 * battery.energy_mwh + 1e-6
    assert sum(v3.gen_mw[:40]) > 0.0


def test_v3_keeps_room_when_the_lower_tail_shows_deeply_negative_prices(settings: Settings) -> None:
    # Cheap energy for an hour, then $60/MWh: lp-spike-reserve v1 (no spike in the upper tail: the plain LP)
    # fills the battery at once; the P05 reaches -$600/MWh over a fifth of the horizon, so v3 keeps 30 % of the
    # storage empty for it.
    forecast = deep_negative_forecast()
    v1_request = request_v3(settings, forecast)
    v1_request.algorithm.CopyFrom(spike_reserve.ALGORITHM)
    v1 = spike_reserve.run_optimisation(v1_request)
    v3 = spike_reserve.run_optimisation_v3(request_v3(settings, forecast))
    assert v1.status == v3.status == worker_pb2.RESULT_STATUS_OPTIMAL
    battery = battery_spec_from_settings(settings.battery)
    ceiling = battery.energy_mwh * battery.soc_max_fraction - 0.3 * battery.energy_mwh
    assert max(v1.state_of_charge_mwh[39:60]) > ceiling + 10.0
    assert max(v3.state_of_charge_mwh[39:60]) <= ceiling + 1e-6
    assert v3.algorithm == common_pb2.AlgorithmRef(name=spike_reserve.NAME, version="3")
    assert v3.objective_dollars < v1.objective_dollars
    # Golden figures of this plan (HiGHS, the one LP formulation): its revenue at the planning price ($) and
    # its highest SoC (MWh) over the deep intervals.
    assert v3.objective_dollars == pytest.approx(GOLDEN_V3_OBJECTIVE_DOLLARS, abs=0.01)
    assert max(v3.state_of_charge_mwh[39:60]) == pytest.approx(GOLDEN_V3_MAX_SOC_MWH, abs=1e-6)


def test_v3_without_deeply_negative_prices_in_the_tail_is_v1_bit_for_bit(settings: Settings) -> None:
    # The spiky forecast of v1's test (P05 never below $20/MWh): v3 holds v1's reserve and no room.
    forecast = spiky_forecast()
    v1 = spike_reserve.run_optimisation(request_for(settings, forecast, "reserve"))
    request = request_for(settings, forecast, "reserve")
    request.algorithm.CopyFrom(common_pb2.AlgorithmRef(name=spike_reserve.NAME, version="3"))
    v3 = spike_reserve.run_optimisation_v3(request)
    battery = battery_spec_from_settings(settings.battery)
    reserve = battery.energy_mwh * battery.soc_min_fraction + 0.3 * battery.energy_mwh
    assert min(v3.state_of_charge_mwh) >= reserve - 1e-6
    v3.algorithm.CopyFrom(v1.algorithm)
    assert v3 == v1


def test_v3_is_served_next_to_v1_and_each_refuses_the_others_request(settings: Settings) -> None:
    registry = default_registry()
    assert registry.resolve("optimisation", spike_reserve.NAME, "3") is spike_reserve.run_optimisation_v3
    forecast = deep_negative_forecast()
    with pytest.raises(InvalidRequestError, match="is not lp-spike-reserve v3"):
        spike_reserve.run_optimisation_v3(request_for(settings, forecast, "reserve"))
    with pytest.raises(InvalidRequestError, match="is not lp-spike-reserve v1"):
        spike_reserve.run_optimisation(request_v3(settings, forecast))
    request = request_v3(settings, forecast)
    before = worker_pb2.OptimisationRequest()
    before.CopyFrom(request)
    ceiling = spike_reserve.request_room_ceiling_mwh(request, spike_reserve.ROOM_POLICY_V3)
    assert request == before
    assert ceiling is not None and len(ceiling) == request.horizon_intervals
    request.ClearField("battery")
    with pytest.raises(InvalidRequestError, match="battery is not set"):
        spike_reserve.request_room_ceiling_mwh(request, spike_reserve.ROOM_POLICY_V3)
