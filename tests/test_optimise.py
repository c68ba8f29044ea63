"""Tests of the energy + FCAS dispatch LP (algorithms/market/optimise.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from algorithms.common.battery import BatteryParams, battery_from_spec, battery_spec_from_settings
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import to_timestamp
from algorithms.market.forecast import ALGORITHM as FORECAST_ALGORITHM
from algorithms.market.forecast import forecast_from_result, quantile_at
from algorithms.market.optimise import (
    ALGORITHM,
    Backend,
    DispatchPlan,
    perfect_foresight,
    run_optimisation,
    solve_dispatch,
)
from settings import REPO_ROOT, Settings, load_settings
from vpp.v1 import worker_pb2

DATA_DIR = REPO_ROOT / "data" / "nem"
FCAS_PRODUCTS = ["RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG", "LOWER6SEC", "LOWER60SEC", "LOWER5MIN",
                 "LOWERREG"]
# Perfect foresight, reference battery, energy only, SA1, January 2021 (its LP relaxation, with HiGHS).
SA1_JANUARY_2021_PERFECT_FORESIGHT = 2_286_610.51
# The golden cases hold for the sparse-matrix build (highspy) and for the PuLP reference build.
BUILDS: list[Backend] = ["highspy", "pulp"]


@pytest.fixture()
def reference_battery(settings: Settings) -> BatteryParams:
    return battery_from_spec(battery_spec_from_settings(settings.battery))


def small_battery(**overrides: Any) -> BatteryParams:
    battery = BatteryParams(
        unit_id="TEST1", region="SA1", power_mw=10.0, energy_mwh=20.0, charge_efficiency=0.9,
        discharge_efficiency=0.9, soc_min_fraction=0.0, soc_max_fraction=1.0, mlf_gen=1.0, mlf_load=1.0,
        ramp_rate_mw_per_min=100.0, min_ramp_rate_mw_per_min=3.0,
    )
    return replace(battery, **overrides)


def random_prices(horizon: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    prices = {"ENERGY": rng.normal(60, 80, horizon)}
    for product in FCAS_PRODUCTS:
        prices[product] = rng.exponential(8.0, horizon)
    return prices


@pytest.mark.parametrize("backend", BUILDS)
def test_tiny_case_charges_low_discharges_high_to_the_cent(backend: Backend) -> None:
    # One-hour intervals: charge 10 MW at $10 (-$100) storing 9 MWh, discharge 9 x 0.9 = 8.1 MWh at $100.
    plan = solve_dispatch({"ENERGY": np.array([10.0, 100.0])}, small_battery(), 0.0, 0.0, interval_hours=1.0,
                          backend=backend)
    assert plan.status == "OPTIMAL"
    np.testing.assert_allclose(plan.load_mw, [10.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(plan.gen_mw, [0.0, 8.1], atol=1e-7)
    np.testing.assert_allclose(plan.state_of_charge_mwh, [9.0, 0.0], atol=1e-7)
    assert round(plan.objective_dollars, 2) == 710.00
    # Stored energy is worth the discharge price times the discharge efficiency.
    np.testing.assert_allclose(plan.energy_value_per_mwh, [90.0, 90.0], atol=1e-6)
    assert plan.solver in ("HiGHS", "CBC")


@pytest.mark.parametrize("backend", BUILDS)
def test_tiny_case_with_degradation_and_loss_factors(backend: Backend) -> None:
    battery = small_battery(mlf_gen=0.95, mlf_load=1.02)
    plan = solve_dispatch({"ENERGY": np.array([10.0, 100.0, 20.0])}, battery, 0.0, 0.0, interval_hours=1.0,
                          degradation_cost_per_mwh=2.0, backend=backend)
    # -10 x 10 x 1.02 - 2 x 10 + 8.1 x 100 x 0.95 - 2 x 8.1 = -102 - 20 + 769.5 - 16.2 = 631.30
    assert plan.status == "OPTIMAL"
    assert round(plan.objective_dollars, 2) == 631.30
    np.testing.assert_allclose(plan.gen_mw, [0.0, 8.1, 0.0], atol=1e-7)


def joint_capacity_holds(plan: DispatchPlan, power_mw: float) -> None:
    net = plan.net_mw
    for product in FCAS_PRODUCTS:
        if product.endswith("REG"):
            continue
        if product.startswith("RAISE"):
            assert np.all(net + plan.fcas[product] + plan.fcas["RAISEREG"] <= power_mw + 1e-6)
        else:
            assert np.all(-net + plan.fcas[product] + plan.fcas["LOWERREG"] <= power_mw + 1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_joint_capacity_and_soc_hold_on_random_prices(reference_battery: BatteryParams, seed: int) -> None:
    battery = reference_battery
    prices = random_prices(288, seed)
    start = battery.energy_mwh * 0.5
    plan = solve_dispatch(prices, battery, start, start)
    assert plan.status == "OPTIMAL", plan.status_reason
    assert list(plan.fcas) == FCAS_PRODUCTS
    joint_capacity_holds(plan, battery.power_mw)
    assert sum(float(plan.fcas[p].sum()) for p in FCAS_PRODUCTS) > 0
    soc = plan.state_of_charge_mwh
    assert np.all(soc >= battery.soc_min_mwh - 1e-6) and np.all(soc <= battery.soc_max_mwh + 1e-6)
    assert soc[-1] >= start - 1e-6
    h = 5 / 60
    previous = np.concatenate([[start], soc[:-1]])
    expected = previous + battery.charge_efficiency * plan.load_mw * h - plan.gen_mw * h / battery.discharge_efficiency
    np.testing.assert_allclose(soc, expected, atol=1e-6)
    energy = h * np.sum(prices["ENERGY"] * (plan.gen_mw - plan.load_mw))
    fcas = h * sum(float(np.sum(prices[p] * plan.fcas[p])) for p in FCAS_PRODUCTS)
    assert plan.objective_dollars == pytest.approx(energy + fcas)


def test_regulation_alone_obeys_joint_capacity(reference_battery: BatteryParams) -> None:
    prices = {"ENERGY": np.array([300.0, 300.0, -50.0, -50.0]), "RAISEREG": np.full(4, 40.0),
              "LOWERREG": np.full(4, 40.0)}
    plan = solve_dispatch(prices, reference_battery, 97.0, 0.0)
    assert plan.status == "OPTIMAL"
    net = plan.net_mw
    assert np.all(net + plan.fcas["RAISEREG"] <= reference_battery.power_mw + 1e-6)
    assert np.all(-net + plan.fcas["LOWERREG"] <= reference_battery.power_mw + 1e-6)


@pytest.mark.parametrize("backend", BUILDS)
def test_ramp_limit_is_honoured(backend: Backend) -> None:
    battery = small_battery(power_mw=150.0, energy_mwh=194.0, ramp_rate_mw_per_min=2.0)  # 10 MW per interval
    prices = {"ENERGY": np.tile([500.0, -100.0], 12)}
    plan = solve_dispatch(prices, battery, 97.0, 0.0, initial_net_mw=30.0, backend=backend)
    assert plan.status == "OPTIMAL"
    steps = np.diff(np.concatenate([[30.0], plan.net_mw]))
    assert np.max(np.abs(steps)) <= 10.0 + 1e-6
    assert np.max(np.abs(steps)) == pytest.approx(10.0)  # the limit binds with these prices


@pytest.mark.parametrize("backend", BUILDS)
def test_energy_reserve_behind_raise_services(reference_battery: BatteryParams, backend: Backend) -> None:
    prices = random_prices(48, 7)
    prices["RAISE5MIN"] = np.full(48, 500.0)  # worth reserving for
    hours = {"RAISE6SEC": 0.1, "RAISE60SEC": 0.1, "RAISE5MIN": 0.5}
    start = 20.0
    plan = solve_dispatch(prices, reference_battery, start, 10.0, raise_energy_reserve_hours=hours, backend=backend)
    assert plan.status == "OPTIMAL"
    soc_before = np.concatenate([[start], plan.state_of_charge_mwh[:-1]])
    needed = sum(plan.fcas[p] * h for p, h in hours.items()) / reference_battery.discharge_efficiency
    assert np.all(soc_before - reference_battery.soc_min_mwh >= needed - 1e-6)
    assert np.any(np.isclose(soc_before - reference_battery.soc_min_mwh, needed, atol=1e-4))


def test_unreachable_terminal_soc_is_infeasible_not_an_exception(reference_battery: BatteryParams) -> None:
    plan = solve_dispatch({"ENERGY": np.array([50.0, 60.0, 70.0])}, reference_battery, 20.0, 150.0)
    assert plan.status == "INFEASIBLE"
    assert "unreachable" in plan.status_reason
    assert plan.gen_mw.size == 0


def test_malformed_prices_raise(reference_battery: BatteryParams) -> None:
    with pytest.raises(InvalidRequestError, match="no 'ENERGY' series"):
        solve_dispatch({"RAISE6SEC": np.ones(3)}, reference_battery, 97.0, 97.0)
    with pytest.raises(InvalidRequestError, match="shape"):
        solve_dispatch({"ENERGY": np.ones(3), "RAISE6SEC": np.ones(4)}, reference_battery, 97.0, 97.0)
    with pytest.raises(InvalidRequestError, match="neither the energy product nor FCAS"):
        solve_dispatch({"ENERGY": np.ones(3), "MYSTERY": np.ones(3)}, reference_battery, 97.0, 97.0)
    with pytest.raises(InvalidRequestError, match="not finite"):
        solve_dispatch({"ENERGY": np.array([1.0, np.nan])}, reference_battery, 97.0, 97.0)


def forecast_result(product: str, first: datetime, low: np.ndarray, mid: np.ndarray,
                    high: np.ndarray) -> worker_pb2.ForecastResult:
    price = np.column_stack([low, mid, high])
    return worker_pb2.ForecastResult(
        request_id=f"f-{product}", algorithm=FORECAST_ALGORITHM, product=product,
        first_interval=to_timestamp(first), horizon_intervals=len(mid), quantiles=[0.1, 0.5, 0.9],
        price=price.ravel().tolist(), status=worker_pb2.RESULT_STATUS_OK,
    )


def optimisation_request(settings: Settings, horizon: int = 24) -> worker_pb2.OptimisationRequest:
    first = datetime(2021, 1, 10, 4, 5)
    rng = np.random.default_rng(5)
    energy_mid = rng.normal(80, 60, horizon)
    raise_mid = rng.exponential(5, horizon)
    return worker_pb2.OptimisationRequest(
        request_id="opt-1", algorithm=ALGORITHM, inputs_hash="h1",
        battery=battery_spec_from_settings(settings.battery),
        initial_state_of_charge_mwh=97.0, terminal_state_of_charge_mwh=90.0,
        first_interval=to_timestamp(first), horizon_intervals=horizon,
        forecasts=[
            forecast_result("ENERGY", first, energy_mid - 40, energy_mid, energy_mid + 200),
            forecast_result("RAISE6SEC", first, raise_mid * 0.5, raise_mid, raise_mid * 3),
        ],
        price_quantile=0.3, degradation_cost_per_mwh=1.0, time_limit_s=10.0, initial_net_mw=0.0,
    )


def test_run_optimisation_round_trip_with_quantile_selection(settings: Settings) -> None:
    request = optimisation_request(settings)
    result = run_optimisation(request)
    assert result.status == worker_pb2.RESULT_STATUS_OPTIMAL
    assert (result.request_id, result.inputs_hash) == ("opt-1", "h1")
    assert result.algorithm == ALGORITHM
    assert result.first_interval == request.first_interval and result.horizon_intervals == 24
    assert len(result.gen_mw) == len(result.load_mw) == len(result.state_of_charge_mwh) == 24
    assert [s.product for s in result.fcas] == ["RAISE6SEC"]
    assert len(result.energy_value_per_mwh) == 24
    assert result.solver and result.solve_ms == 0.0  # pure: no clock; whoever runs it times it (pools/timing.py)
    assert run_optimisation(request) == result  # the same request, the same plan, bit for bit
    # The plan is the one for the 0.3 quantile, interpolated between P10 and P50.
    prices = {f.product: quantile_at(forecast_from_result(f), 0.3) for f in request.forecasts}
    expected_energy = 0.5 * (np.array(request.forecasts[0].price[0::3]) + np.array(request.forecasts[0].price[1::3]))
    np.testing.assert_allclose(prices["ENERGY"], expected_energy)
    direct = solve_dispatch(prices, battery_from_spec(request.battery), 97.0, 90.0, degradation_cost_per_mwh=1.0,
                            initial_net_mw=0.0)
    assert result.objective_dollars == pytest.approx(direct.objective_dollars)
    np.testing.assert_allclose(result.gen_mw, direct.gen_mw, atol=1e-6)


def test_run_optimisation_infeasible_is_a_result(settings: Settings) -> None:
    request = optimisation_request(settings, horizon=2)
    request.terminal_state_of_charge_mwh = 180.0
    result = run_optimisation(request)
    assert result.status == worker_pb2.RESULT_STATUS_INFEASIBLE
    assert "unreachable" in result.status_reason


def test_run_optimisation_rejects_inconsistent_forecasts(settings: Settings) -> None:
    request = optimisation_request(settings)
    request.horizon_intervals = 12
    with pytest.raises(InvalidRequestError, match="covers 24 intervals"):
        run_optimisation(request)
    request = optimisation_request(settings)
    del request.forecasts[0]
    with pytest.raises(InvalidRequestError, match="no ENERGY forecast"):
        run_optimisation(request)
    request = optimisation_request(settings)
    request.forecasts[1].first_interval.CopyFrom(to_timestamp(datetime(2021, 1, 10, 4, 10)))
    with pytest.raises(InvalidRequestError, match="starts at"):
        run_optimisation(request)
    request = optimisation_request(settings)
    request.price_quantile = 0.95
    with pytest.raises(InvalidRequestError, match="outside"):
        run_optimisation(request)


def test_perfect_foresight_sa1_january_2021_golden(reference_battery: BatteryParams) -> None:
    dispatch = pd.read_parquet(DATA_DIR / "PUBLIC_DVD_DISPATCHPRICE_202101010000.parquet",
                               columns=["SETTLEMENTDATE", "REGIONID", "INTERVENTION", "RRP"])
    sa1 = dispatch[(dispatch.INTERVENTION == 0) & (dispatch.REGIONID == "SA1")].sort_values("SETTLEMENTDATE")
    assert len(sa1) == 8928
    # The LP relaxation (the golden figure; the physical month is in the README, 2-3 minutes of MILP).
    plan = perfect_foresight({"ENERGY": sa1.RRP.to_numpy(np.float64)}, reference_battery, include_fcas=False,
                             physical=False)
    assert plan.status == "OPTIMAL"
    assert plan.objective_dollars == pytest.approx(SA1_JANUARY_2021_PERFECT_FORESIGHT, rel=0.02)
    assert plan.objective_dollars == pytest.approx(2.29e6, rel=0.02)  # data README sanity figure
    assert plan.state_of_charge_mwh[-1] >= 0.5 * reference_battery.energy_mwh - 1e-6
    assert plan.fcas == {}


@pytest.mark.parametrize("backend", BUILDS)
def test_time_limit_is_a_status_not_an_exception(reference_battery: BatteryParams, backend: Backend) -> None:
    rng = np.random.default_rng(0)
    prices = {"ENERGY": rng.normal(50, 100, 3000), "RAISE6SEC": rng.exponential(5, 3000),
              "LOWERREG": rng.exponential(5, 3000)}
    plan = solve_dispatch(prices, reference_battery, 97.0, 97.0, time_limit_s=1e-4, backend=backend)
    assert plan.status == "TIME_LIMIT"
    assert "time limit" in plan.status_reason
    assert plan.gen_mw.size == 0


def test_terminal_value_keeps_energy_stored_at_the_end_of_the_horizon() -> None:
    battery = battery_from_spec(battery_spec_from_settings(load_settings(environ={}).battery))
    # A flat $100/MWh: without a terminal value the plan sells everything above the terminal target;
    # valued at $105/MWh, neither selling (0.92 x 100 < 105) nor buying (0.92 x 105 < 100) pays.
    prices = {"ENERGY": np.full(24, 100.0)}
    start = battery.energy_mwh * 0.8
    plain = solve_dispatch(prices, battery, start, battery.soc_min_mwh)
    valued = solve_dispatch(prices, battery, start, battery.soc_min_mwh, terminal_value_per_mwh=105.0)
    assert plain.status == valued.status == "OPTIMAL"
    assert plain.state_of_charge_mwh[-1] == pytest.approx(battery.soc_min_mwh, abs=1e-6)
    assert valued.state_of_charge_mwh[-1] == pytest.approx(start, abs=1e-6)
    assert valued.objective_dollars == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InvalidRequestError, match="terminal_value_per_mwh"):
        solve_dispatch(prices, battery, start, battery.soc_min_mwh, terminal_value_per_mwh=-1.0)


def test_capacity_values_price_the_fcas_that_energy_would_displace() -> None:
    """One interval; SoC allows only 60 MW of discharge, energy pays more than raise regulation: the plan
    discharges 60 MW and enables 90 MW of regulation, so one more MW of raise capacity is worth the
    regulation price, and nothing binds on the lower side."""
    battery = small_battery(power_mw=150.0, energy_mwh=200.0)
    hours = 5 / 60
    energy_needed = 60.0 * hours / 0.9
    prices = {"ENERGY": np.array([1000.0]), "RAISEREG": np.array([300.0]), "LOWERREG": np.array([0.0])}
    plan = solve_dispatch(prices, battery, energy_needed, 0.0, backend="highspy")
    assert plan.status == "OPTIMAL"
    np.testing.assert_allclose(plan.gen_mw, [60.0], atol=1e-6)
    np.testing.assert_allclose(plan.fcas["RAISEREG"], [90.0], atol=1e-6)
    np.testing.assert_allclose(plan.raise_capacity_value_per_mw, [300.0], atol=1e-6)
    np.testing.assert_allclose(plan.lower_capacity_value_per_mw, [0.0], atol=1e-6)
    result_fields = worker_pb2.OptimisationResult.DESCRIPTOR.fields_by_name
    assert {"raise_capacity_value_per_mw", "lower_capacity_value_per_mw"} <= set(result_fields)


def test_the_planning_price_blends_the_tails_into_the_central_quantile(settings: Settings) -> None:
    from algorithms.market.optimise import planning_price

    request = optimisation_request(settings)
    energy = forecast_from_result(request.forecasts[0])
    p10, p50, p90 = (np.array(request.forecasts[0].price[i::3]) for i in range(3))
    np.testing.assert_allclose(planning_price(energy, 0.5, 0.0), p50)
    np.testing.assert_allclose(planning_price(energy, 0.5, 0.3), 0.3 * p10 + 0.4 * p50 + 0.3 * p90)
    for bad in (-0.1, 0.5, 0.7):
        with pytest.raises(InvalidRequestError, match="price_tail_weight"):
            planning_price(energy, 0.5, bad)


def test_a_spike_only_the_upper_tail_sees_changes_the_plan_with_a_tail_weight(settings: Settings) -> None:
    # Flat 50 $/MWh in every quantile except P90 = 5,000 $/MWh in interval 6: on the median alone there is
    # nothing to do; on the skew-aware mean (Swanson) the battery discharges into the likely spike.
    first = datetime(2021, 1, 10, 4, 5)
    flat = np.full(12, 50.0)
    spiky = flat.copy()
    spiky[6] = 5_000.0
    request = worker_pb2.OptimisationRequest(
        request_id="opt-tail", algorithm=ALGORITHM, inputs_hash="h",
        battery=battery_spec_from_settings(settings.battery),
        initial_state_of_charge_mwh=97.0, terminal_state_of_charge_mwh=80.0, first_interval=to_timestamp(first),
        horizon_intervals=12, forecasts=[forecast_result("ENERGY", first, flat, flat, spiky)], price_quantile=0.5,
        degradation_cost_per_mwh=1.0, time_limit_s=10.0, initial_net_mw=0.0)
    median_plan = run_optimisation(request)
    request.price_tail_weight = 0.3
    mean_plan = run_optimisation(request)
    assert median_plan.gen_mw[6] == pytest.approx(median_plan.gen_mw[5], abs=1e-6)
    assert mean_plan.gen_mw[6] > median_plan.gen_mw[6] + 10


@pytest.mark.parametrize("backend", BUILDS)
def test_a_per_interval_soc_maximum_caps_the_stored_energy_to_the_cent(backend: Backend) -> None:
    # One-hour intervals, $10, $10, $100, $100: the plain plan charges 10 MW twice (18 MWh stored) and sells 16.2
    # MWh at $100 ($1,420). Capped at 9 MWh after the second interval it can store only 9 MWh: it charges 10 MWh
    # and sells 8.1 MWh ($710); the cap elsewhere is the battery's own 20 MWh.
    prices = {"ENERGY": np.array([10.0, 10.0, 100.0, 100.0])}
    plain = solve_dispatch(prices, small_battery(), 0.0, 0.0, interval_hours=1.0, backend=backend)
    capped = solve_dispatch(prices, small_battery(), 0.0, 0.0, interval_hours=1.0, backend=backend,
                            soc_max_mwh_by_interval=np.array([20.0, 9.0, 20.0, 20.0]))
    assert plain.status == capped.status == "OPTIMAL"
    assert round(plain.objective_dollars, 2) == 1420.00
    assert round(capped.objective_dollars, 2) == 710.00
    assert capped.state_of_charge_mwh[1] == pytest.approx(9.0, abs=1e-7)
    with pytest.raises(InvalidRequestError, match="soc_max_mwh_by_interval has shape"):
        solve_dispatch(prices, small_battery(), 0.0, 0.0, soc_max_mwh_by_interval=np.array([20.0, 9.0, 20.0]))
    with pytest.raises(InvalidRequestError, match="not at intervals \\[2\\]"):
        solve_dispatch(prices, small_battery(), 0.0, 0.0, soc_max_mwh_by_interval=np.array([20.0, 9.0, 21.0, 20.0]))
