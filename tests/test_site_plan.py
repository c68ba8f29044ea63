"""The local site planner: optimality against an independent LP, physical feasibility, behaviour, contract."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from algorithms.fleet.fleet_types import FloatArray, SiteParameters
from algorithms.fleet.site_plan import (
    InvalidSitePlanInputError,
    plan_sites,
    resample_prices_to_plan,
    time_of_use_tariff,
)
from algorithms.fleet.site_plan_types import SitePlanInputs, SitePlans, Tariff
from simulator.battery import battery_step
from simulator.population import make_site_parameters, site_ids_for

START_MS = 1_610_028_000_000  # 2021-01-08 00:00 AEST (UTC+10)
HALF_HOUR_S = 1800.0


def batteries(capacity_kwh: list[float], power_kw: list[float], charge_eff: list[float], discharge_eff: list[float],
              reserve: list[float]) -> SiteParameters:
    count = len(capacity_kwh)
    return SiteParameters(
        site_ids=site_ids_for(count), capacity_kwh=np.array(capacity_kwh, dtype=float),
        max_charge_kw=np.array(power_kw, dtype=float), max_discharge_kw=np.array(power_kw, dtype=float) * 1.1,
        charge_efficiency=np.array(charge_eff, dtype=float), discharge_efficiency=np.array(discharge_eff, dtype=float),
        backup_reserve_fraction=np.array(reserve, dtype=float), pv_capacity_kw=np.zeros(count))


def make_inputs(parameters: SiteParameters, soc_kwh: list[float] | FloatArray, load_kw: FloatArray, pv_kw: FloatArray,
                import_per_kwh: FloatArray, feed_in_per_kwh: FloatArray, price_per_mwh: FloatArray, share: float,
                storm: list[bool] | None = None, storm_fraction: float = 0.8, minutes: int = 30,
                version: int = 7) -> SitePlanInputs:
    count = parameters.site_count
    return SitePlanInputs(
        parameters=parameters, state_of_charge_kwh=np.asarray(soc_kwh, dtype=float),
        load_forecast_kw=np.asarray(load_kw, dtype=float), pv_forecast_kw=np.asarray(pv_kw, dtype=float),
        tariff=Tariff(import_per_kwh=np.asarray(import_per_kwh, dtype=float),
                      feed_in_per_kwh=np.asarray(feed_in_per_kwh, dtype=float)),
        market_price_per_mwh=np.asarray(price_per_mwh, dtype=float), market_share=share,
        storm_warning=np.array(storm if storm is not None else [False] * count), storm_reserve_fraction=storm_fraction,
        start_ms=START_MS, plan_interval_minutes=minutes, forecast_version=version)


def effective_reserve_kwh(inputs: SitePlanInputs) -> FloatArray:
    parameters = inputs.parameters
    storm = np.where(inputs.storm_warning, inputs.storm_reserve_fraction, 0.0)
    return np.maximum(parameters.backup_reserve_fraction, storm) * parameters.capacity_kwh


def objective_dollars(inputs: SitePlanInputs, battery_kw: FloatArray, end_kwh: FloatArray,
                      terminal_per_kwh: float) -> FloatArray:
    """Bill − market value − terminal value ($ per site), straight from the brief's formula."""
    hours = inputs.plan_interval_minutes / 60.0
    grid_kw = inputs.load_forecast_kw - inputs.pv_forecast_kw - battery_kw
    bill = hours * (inputs.tariff.import_per_kwh * np.maximum(grid_kw, 0)
                    - inputs.tariff.feed_in_per_kwh * np.maximum(-grid_kw, 0)).sum(axis=1)
    market = inputs.market_share * hours * (inputs.market_price_per_mwh / 1000.0 * battery_kw).sum(axis=1)
    return np.asarray(bill - market - terminal_per_kwh * end_kwh, dtype=np.float64)


def lp_optimum_dollars(inputs: SitePlanInputs, site: int, terminal_per_kwh: float) -> float:
    """The continuous problem of one site as an LP (charge, discharge, import, export, stored energy)."""
    parameters = inputs.parameters
    horizon = inputs.horizon_intervals
    hours = inputs.plan_interval_minutes / 60.0
    charge_eff = parameters.charge_efficiency[site]
    discharge_eff = parameters.discharge_efficiency[site]
    value = inputs.market_share * inputs.market_price_per_mwh / 1000.0
    charge, discharge, imported, exported, stored = (np.arange(horizon) + k * horizon for k in range(5))
    cost = np.zeros(5 * horizon)
    cost[charge] = hours * value
    cost[discharge] = -hours * value
    cost[imported] = hours * inputs.tariff.import_per_kwh
    cost[exported] = -hours * inputs.tariff.feed_in_per_kwh
    cost[stored[-1]] = -terminal_per_kwh
    equalities = np.zeros((2 * horizon, 5 * horizon))
    right = np.zeros(2 * horizon)
    for t in range(horizon):
        equalities[t, stored[t]] = 1.0
        if t > 0:
            equalities[t, stored[t - 1]] = -1.0
        else:
            right[t] = inputs.state_of_charge_kwh[site]
        equalities[t, charge[t]] = -hours * charge_eff
        equalities[t, discharge[t]] = hours / discharge_eff
        row = horizon + t
        equalities[row, [imported[t], exported[t], discharge[t], charge[t]]] = [1.0, -1.0, 1.0, -1.0]
        right[row] = inputs.load_forecast_kw[site, t] - inputs.pv_forecast_kw[site, t]
    reserve = effective_reserve_kwh(inputs)[site]
    bounds = ([(0.0, parameters.max_charge_kw[site])] * horizon + [(0.0, parameters.max_discharge_kw[site])] * horizon
              + [(0.0, None)] * (2 * horizon) + [(reserve, parameters.capacity_kwh[site])] * horizon)
    result = linprog(cost, A_eq=equalities, b_eq=right, bounds=bounds, method="highs")
    assert result.status == 0, result.message
    return float(result.fun)


def replay(inputs: SitePlanInputs, plans: SitePlans) -> tuple[FloatArray, FloatArray]:
    """Step fleet.battery through the plan: delivered power (kW) and stored energy (kWh) per interval."""
    soc = inputs.state_of_charge_kwh.copy()
    delivered, stored = [], []
    for t in range(plans.horizon_intervals):
        step = battery_step(inputs.parameters, soc, plans.battery_power_kw[:, t], inputs.plan_interval_minutes * 60.0)
        delivered.append(step.battery_power_kw)
        soc = step.state_of_charge_kwh
        stored.append(soc)
    return np.stack(delivered, axis=1), np.stack(stored, axis=1)


def day_profiles(count: int, horizon: int, seed: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Load and PV (kW), a TOU import tariff ($/kWh) and a market price path ($/MWh) over half-hours from 08:00."""
    rng = np.random.default_rng(seed)
    hour = 8.0 + 0.5 * np.arange(horizon)
    sun = np.clip(np.sin((hour - 6.0) / 13.0 * np.pi), 0.0, None)
    pv = rng.uniform(2.0, 6.0, (count, 1)) * sun[None, :] * rng.uniform(0.8, 1.0, (count, horizon))
    load = rng.uniform(0.3, 1.0, (count, 1)) * (1.0 + 2.0 * np.exp(-((hour - 18.5) / 1.5) ** 2))[None, :]
    load = load * rng.uniform(0.7, 1.3, (count, horizon))
    import_per_kwh = np.where((hour >= 16) & (hour < 21), 0.45, 0.25)
    price = 40.0 + 250.0 * np.exp(-((hour - 19.0) / 1.0) ** 2) + rng.uniform(-10.0, 10.0, horizon)
    return load, pv, import_per_kwh, price


# ---------------------------------------------------------------------------------------------- optimality


def small_case(share: float) -> SitePlanInputs:
    parameters = batteries([13.5, 6.5, 27.0], [5.0, 3.3, 10.0], [0.95, 0.94, 0.96], [0.95, 0.96, 0.94],
                           [0.2, 0.1, 0.3])
    load, pv, import_per_kwh, price = day_profiles(3, 24, seed=3)
    return make_inputs(parameters, [5.0, 3.0, 20.0], load, pv, import_per_kwh, np.full(24, 0.06), price, share)


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_plan_is_within_discretisation_of_the_lp_optimum_and_never_better(share: float) -> None:
    inputs = small_case(share)
    lp = np.array([lp_optimum_dollars(inputs, site, 0.0) for site in range(3)])
    gaps = {}
    for levels in (41, 161):
        plans = plan_sites(inputs, soc_levels=levels, terminal_value_per_kwh=0.0)
        dp = objective_dollars(inputs, plans.battery_power_kw, plans.state_of_charge_kwh[:, -1], 0.0)
        assert np.all(dp >= lp - 1e-6), (dp, lp)
        gaps[levels] = dp - lp
    idle = objective_dollars(inputs, np.zeros((3, 24)), inputs.state_of_charge_kwh, 0.0)
    saving = idle - lp  # what the best plan gains over leaving the battery idle ($)
    assert np.all(saving > 0.5)
    assert np.all(gaps[41] <= 0.01 * saving), (gaps, saving)
    assert np.all(gaps[161] <= 0.005 * saving), (gaps, saving)


def test_default_terminal_value_matches_the_lp_with_that_value() -> None:
    inputs = small_case(0.5)
    terminal = (inputs.parameters.charge_efficiency * inputs.parameters.discharge_efficiency
                * inputs.tariff.import_per_kwh.min())
    plans = plan_sites(inputs, soc_levels=161)
    dp = objective_dollars(inputs, plans.battery_power_kw, plans.state_of_charge_kwh[:, -1], 0.0) - (
        terminal * plans.state_of_charge_kwh[:, -1])
    lp = np.array([lp_optimum_dollars(inputs, site, float(terminal[site])) for site in range(3)])
    assert np.all(dp >= lp - 1e-6)
    assert np.all(dp - lp <= 0.02), dp - lp


@hypothesis_settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.floats(0.0, 1.0), levels=st.sampled_from([5, 21, 41]),
       start_fraction=st.floats(0.0, 1.0), reserve=st.sampled_from([0.0, 0.2, 0.4]), storm=st.booleans(),
       minutes=st.sampled_from([5, 30]))
def test_plans_are_physical_and_never_beat_the_lp(seed: int, share: float, levels: int, start_fraction: float,
                                                   reserve: float, storm: bool, minutes: int) -> None:
    rng = np.random.default_rng(seed)
    horizon = 10
    parameters = batteries([float(rng.uniform(3.0, 20.0))], [float(rng.uniform(0.5, 6.0))],
                           [float(rng.uniform(0.85, 1.0))], [float(rng.uniform(0.85, 1.0))], [reserve])
    load, pv, import_per_kwh, price = day_profiles(1, horizon, seed)
    inputs = make_inputs(parameters, [start_fraction * parameters.capacity_kwh[0]], load, pv,
                         import_per_kwh * rng.uniform(0.5, 1.5, horizon), np.full(horizon, 0.05),
                         price * rng.uniform(0.0, 3.0, horizon), share, storm=[storm], storm_fraction=0.6,
                         minutes=minutes)
    plans = plan_sites(inputs, soc_levels=levels, terminal_value_per_kwh=0.0)
    delivered, stored = replay(inputs, plans)
    np.testing.assert_allclose(delivered, plans.battery_power_kw, atol=1e-6)
    np.testing.assert_allclose(stored, plans.state_of_charge_kwh, atol=1e-6)
    reserve_kwh = effective_reserve_kwh(inputs)[0]
    start = np.concatenate([inputs.state_of_charge_kwh, plans.state_of_charge_kwh[0, :-1]])
    discharging = plans.battery_power_kw[0] > 0
    assert not np.any(discharging & (plans.state_of_charge_kwh[0] < reserve_kwh - 1e-9))
    assert not np.any(discharging & (start < reserve_kwh - 1e-9))
    if inputs.state_of_charge_kwh[0] >= reserve_kwh:
        dp = objective_dollars(inputs, plans.battery_power_kw, plans.state_of_charge_kwh[:, -1], 0.0)
        assert dp[0] >= lp_optimum_dollars(inputs, 0, 0.0) - 1e-6


# ---------------------------------------------------------------------------------------------- behaviour


def test_self_consumption_golden_case_stores_surplus_and_covers_the_evening_load() -> None:
    # 9.5 kWh, no reserve: 41 levels are 0.2375 kWh apart, and 2 kW for half an hour stores 0.95 kWh = 4 levels.
    parameters = batteries([9.5], [5.0], [0.95], [0.95], [0.0])
    load = np.array([[0.0, 0.0, 3.0, 3.0]])
    pv = np.array([[2.0, 2.0, 0.0, 0.0]])
    inputs = make_inputs(parameters, [0.0], load, pv, np.full(4, 0.30), np.full(4, 0.0), np.zeros(4), 0.0)
    plans = plan_sites(inputs, terminal_value_per_kwh=0.0)
    np.testing.assert_allclose(plans.battery_power_kw[0, :2], [-2.0, -2.0], atol=1e-9)
    assert plans.battery_power_kw[0, 2:].sum() * 0.5 == pytest.approx(1.9 * 0.95)  # everything stored comes back
    bill = objective_dollars(inputs, plans.battery_power_kw, plans.state_of_charge_kwh[:, -1], 0.0)
    assert bill[0] == pytest.approx(0.30 * (3.0 - 1.9 * 0.95))  # 0.3585 $
    assert plans.state_of_charge_kwh[0, -1] == pytest.approx(0.0, abs=1e-9)


def test_self_only_plans_under_a_flat_tariff_never_charge_from_the_grid_or_export_from_the_battery() -> None:
    parameters = make_site_parameters(40, seed=5)
    load, pv, _, price = day_profiles(40, 40, seed=5)
    soc = parameters.capacity_kwh * np.random.default_rng(5).uniform(0.2, 1.0, 40)
    inputs = make_inputs(parameters, soc, load, pv, np.full(40, 0.30), np.full(40, 0.07), price, 0.0)
    plans = plan_sites(inputs)
    surplus_kw = np.maximum(pv - load, 0.0)
    deficit_kw = np.maximum(load - pv, 0.0)
    assert np.all(plans.battery_power_kw >= -surplus_kw - 1e-9)  # charges only from PV surplus
    assert np.all(plans.battery_power_kw <= deficit_kw + 1e-9)  # discharges only into the load
    stored_from_pv = np.maximum(-plans.battery_power_kw, 0.0).sum()
    assert stored_from_pv > 0.5 * 40
    assert np.maximum(plans.battery_power_kw, 0.0).sum() > 0.5 * 40  # and uses it in the evening


def test_leftover_energy_is_exported_at_the_end_only_without_a_terminal_value() -> None:
    parameters = batteries([13.5], [5.0], [0.95], [0.95], [0.0])
    inputs = make_inputs(parameters, [13.5], np.zeros((1, 4)), np.zeros((1, 4)), np.full(4, 0.30),
                         np.full(4, 0.08), np.zeros(4), 0.0)
    dumped = plan_sites(inputs, terminal_value_per_kwh=0.0)
    assert dumped.state_of_charge_kwh[0, -1] < 13.5 - 4 * 2.6  # exports at 0.08 $/kWh rather than nothing
    kept = plan_sites(inputs)  # default: 0.95 × 0.95 × 0.30 $/kWh > 0.08 × 0.95
    np.testing.assert_allclose(kept.battery_power_kw, 0.0, atol=1e-12)


def test_market_price_spike_makes_the_battery_discharge_at_full_power_in_the_spike() -> None:
    parameters = make_site_parameters(30, seed=8)
    load, pv, import_per_kwh, _ = day_profiles(30, 24, seed=8)
    price = np.full(24, 50.0)
    price[6] = 12_000.0
    soc = parameters.capacity_kwh * 0.9
    inputs = make_inputs(parameters, soc, load, pv, import_per_kwh, np.full(24, 0.06), price, 1.0)
    plans = plan_sites(inputs)
    reserve = effective_reserve_kwh(inputs)
    full_kw = np.minimum(parameters.max_discharge_kw,
                         (plans.state_of_charge_kwh[:, 5] - reserve) * parameters.discharge_efficiency / 0.5)
    np.testing.assert_allclose(plans.battery_power_kw[:, 6], full_kw, atol=1e-9)
    assert np.all(full_kw > 0.5 * parameters.max_discharge_kw)
    np.testing.assert_allclose(plans.discharge_flexibility_kw[:, 6], 0.0, atol=1e-9)
    self_only = plan_sites(replace(inputs, market_share=0.0))
    assert np.all(self_only.battery_power_kw[:, 6] < plans.battery_power_kw[:, 6])


def test_storm_warning_keeps_the_planned_energy_above_the_storm_reserve() -> None:
    parameters = batteries([13.5, 13.5], [5.0, 5.0], [0.95, 0.95], [0.95, 0.95], [0.2, 0.2])
    load = np.full((2, 12), 1.5)
    price = np.full(12, 3_000.0)  # worth emptying the battery
    inputs = make_inputs(parameters, [13.0, 13.0], load, np.zeros((2, 12)), np.full(12, 0.3), np.full(12, 0.05),
                         price, 1.0, storm=[True, False], storm_fraction=0.75)
    plans = plan_sites(inputs)
    assert plans.state_of_charge_kwh[0].min() >= 0.75 * 13.5 - 1e-9
    assert plans.state_of_charge_kwh[0].min() == pytest.approx(0.75 * 13.5)  # and uses everything above it
    assert plans.state_of_charge_kwh[1].min() == pytest.approx(0.2 * 13.5)
    # discharge flexibility counts down to the storm reserve, not the owner's
    start = np.concatenate([[13.0], plans.state_of_charge_kwh[0, :-1]])
    expected = np.maximum(np.minimum(5.5, (start - 0.75 * 13.5) * 0.95 / 0.5) - plans.battery_power_kw[0], 0.0)
    np.testing.assert_allclose(plans.discharge_flexibility_kw[0], expected, atol=1e-12)


def test_a_site_below_its_reserve_charges_but_never_discharges_while_below() -> None:
    parameters = batteries([13.5, 13.5, 13.5], [1.0, 5.0, 5.0], [0.95, 0.95, 0.95], [0.95, 0.95, 0.95],
                           [0.3, 0.3, 0.2])
    horizon = 8
    load = np.full((3, horizon), 2.0)
    price = np.full(horizon, 40.0)
    price[-3:] = 5_000.0  # tempting to discharge at the end
    soc = [0.0, 0.5, 5.0]  # site 3: under a storm warning (reserve 0.6 × 13.5 = 8.1 kWh)
    inputs = make_inputs(parameters, soc, load, np.zeros((3, horizon)), np.full(horizon, 0.1), np.zeros(horizon),
                         price, 1.0, storm=[False, False, True], storm_fraction=0.6)
    plans = plan_sites(inputs, terminal_value_per_kwh=0.0)
    reserve = effective_reserve_kwh(inputs)
    start = np.concatenate([inputs.state_of_charge_kwh[:, None], plans.state_of_charge_kwh[:, :-1]], axis=1)
    discharging = plans.battery_power_kw > 1e-12
    assert not np.any(discharging & (start < reserve[:, None] - 1e-9))
    assert not np.any(discharging & (plans.state_of_charge_kwh < reserve[:, None] - 1e-9))
    # site 1 (1 kW) cannot climb above its 4.05 kWh reserve in 4 hours (3.8 kWh): the spike is out of its
    # reach, so charging from the grid would be a pure loss and it stays idle
    np.testing.assert_allclose(plans.battery_power_kw[0], 0.0, atol=1e-12)
    # sites 2 and 3 charge above the reserve cheaply and sell in the spike
    assert np.all(plans.battery_power_kw[1:, -3:].sum(axis=1) > 0)
    delivered, _ = replay(inputs, plans)
    np.testing.assert_allclose(delivered, plans.battery_power_kw, atol=1e-6)


def test_population_plans_are_delivered_by_the_battery_model_and_do_not_depend_on_chunking() -> None:
    parameters = make_site_parameters(300, seed=11)
    rng = np.random.default_rng(11)
    load, pv, import_per_kwh, price = day_profiles(300, 48, seed=11)
    soc = parameters.capacity_kwh * rng.uniform(0.0, 1.0, 300)
    inputs = make_inputs(parameters, soc, load, pv, import_per_kwh, np.full(48, 0.06), price, 0.5,
                         storm=list(rng.random(300) < 0.1), storm_fraction=0.7)
    plans = plan_sites(inputs)
    delivered, stored = replay(inputs, plans)
    np.testing.assert_allclose(delivered, plans.battery_power_kw, atol=1e-6)
    np.testing.assert_allclose(stored, plans.state_of_charge_kwh, atol=1e-6)
    assert np.all(plans.battery_power_kw <= parameters.max_discharge_kw[:, None] + 1e-9)
    assert np.all(plans.battery_power_kw >= -parameters.max_charge_kw[:, None] - 1e-9)
    assert np.all(plans.state_of_charge_kwh <= parameters.capacity_kwh[:, None] + 1e-9)
    above = soc >= effective_reserve_kwh(inputs)
    assert np.all(plans.state_of_charge_kwh[above] >= effective_reserve_kwh(inputs)[above, None] - 1e-9)
    chunked = plan_sites(inputs, chunk_sites=7)
    np.testing.assert_array_equal(chunked.battery_power_kw, plans.battery_power_kw)
    # the flexibility of each interval is deliverable on top of the plan from the planned stored energy
    start = np.concatenate([soc[:, None], plans.state_of_charge_kwh[:, :-1]], axis=1)
    for t in (0, 20, 40):
        for extra_kw in (plans.discharge_flexibility_kw[:, t], -plans.charge_flexibility_kw[:, t]):
            request = plans.battery_power_kw[:, t] + extra_kw
            step = battery_step(parameters, start[:, t], request, HALF_HOUR_S)
            np.testing.assert_allclose(step.battery_power_kw, request, atol=1e-6)
    assert plans.discharge_flexibility_kw.max() > 1.0 and plans.charge_flexibility_kw.max() > 1.0


# ---------------------------------------------------------------------------------------------- contract


def test_outputs_carry_shapes_versions_and_the_meter_and_flexibility_identities() -> None:
    parameters = batteries([13.5, 10.0], [5.0, 5.0], [0.95, 0.9], [0.93, 0.95], [0.2, 0.0])
    load, pv, import_per_kwh, price = day_profiles(2, 6, seed=2)
    inputs = make_inputs(parameters, [6.0, 10.0], load, pv, import_per_kwh, np.full(6, 0.05), price, 0.3, version=42)
    plans = plan_sites(inputs)
    assert plans.battery_power_kw.shape == (2, 6) and plans.site_count == 2 and plans.horizon_intervals == 6
    np.testing.assert_array_equal(plans.site_ids, parameters.site_ids)
    np.testing.assert_array_equal(plans.forecast_version, [42, 42])
    np.testing.assert_array_equal(plans.start_ms, [START_MS, START_MS])
    assert plans.plan_interval_minutes == 30
    np.testing.assert_allclose(plans.net_export_kw, plans.battery_power_kw + pv - load, atol=1e-12)
    start = np.concatenate([[[6.0], [10.0]], plans.state_of_charge_kwh[:, :-1]], axis=1)
    discharge_room = np.minimum(5.5, (start - np.array([[2.7], [0.0]])) * np.array([[0.93], [0.95]]) / 0.5)
    charge_room = np.minimum(5.0, (np.array([[13.5], [10.0]]) - start) / (np.array([[0.95], [0.9]]) * 0.5))
    np.testing.assert_allclose(plans.discharge_flexibility_kw, np.maximum(discharge_room - plans.battery_power_kw, 0))
    np.testing.assert_allclose(plans.charge_flexibility_kw, np.maximum(charge_room + plans.battery_power_kw, 0))
    assert plans.charge_flexibility_kw[1, 0] == pytest.approx(max(plans.battery_power_kw[1, 0], 0.0))  # full


def test_a_one_interval_horizon_and_a_flat_battery_plan() -> None:
    parameters = batteries([13.5, 0.0], [5.0, 5.0], [0.95, 0.95], [0.95, 0.95], [0.2, 0.2])
    inputs = make_inputs(parameters, [13.5, 0.0], np.full((2, 1), 1.0), np.zeros((2, 1)), np.full(1, 0.3),
                         np.full(1, 0.05), np.full(1, 100.0), 0.0)
    plans = plan_sites(inputs)  # stored energy is worth 0.95 × 0.95 × 0.30 $/kWh: more than exporting it
    np.testing.assert_allclose(plans.battery_power_kw, [[1.0], [0.0]], atol=1e-9)  # covers the load, nothing more
    dumped = plan_sites(inputs, terminal_value_per_kwh=0.0)
    np.testing.assert_allclose(dumped.battery_power_kw, [[5.5], [0.0]], atol=1e-9)  # exports for 0.05 $/kWh
    np.testing.assert_allclose(plans.state_of_charge_kwh[1], [0.0])


def test_resample_prices_to_plan_takes_the_mean_of_each_interval() -> None:
    prices = np.arange(12, dtype=float) * 10.0
    np.testing.assert_allclose(resample_prices_to_plan(prices, 30), [25.0, 85.0])
    np.testing.assert_allclose(resample_prices_to_plan(prices, 5), prices)
    with pytest.raises(InvalidSitePlanInputError, match="do not divide"):
        resample_prices_to_plan(np.zeros(10), 30)
    with pytest.raises(InvalidSitePlanInputError, match="multiple of 5"):
        resample_prices_to_plan(np.zeros(12), 7)


def test_time_of_use_tariff_uses_local_interval_start_hours() -> None:
    # START_MS is 00:00 AEST; 48 half-hours cover the local day
    tariff = time_of_use_tariff(START_MS, 48, 30, peak_per_kwh=0.45, offpeak_per_kwh=0.25, feed_in_per_kwh=0.06,
                                peak_start_hour=16, peak_end_hour=21)
    expected = np.full(48, 0.25)
    expected[32:42] = 0.45  # 16:00 .. 20:30 starts
    np.testing.assert_allclose(tariff.import_per_kwh, expected)
    np.testing.assert_allclose(tariff.feed_in_per_kwh, 0.06)
    adelaide = time_of_use_tariff(START_MS, 48, 30, peak_per_kwh=1.0, offpeak_per_kwh=0.0, feed_in_per_kwh=0.0,
                                  peak_start_hour=16, peak_end_hour=21, utc_offset_hours=9.5)
    assert np.flatnonzero(adelaide.import_per_kwh)[[0, -1]].tolist() == [33, 42]  # 16:00 ACST = 16:30 AEST
    overnight = time_of_use_tariff(START_MS, 48, 30, peak_per_kwh=1.0, offpeak_per_kwh=0.0, feed_in_per_kwh=0.0,
                                   peak_start_hour=22, peak_end_hour=6)
    assert overnight.import_per_kwh.sum() == 16.0  # 22:00–24:00 and 00:00–06:00
    with pytest.raises(InvalidSitePlanInputError):
        time_of_use_tariff(START_MS, 48, 30, peak_per_kwh=0.4, offpeak_per_kwh=0.2, feed_in_per_kwh=0.0,
                           peak_start_hour=25, peak_end_hour=3)


def test_invalid_inputs_raise_clearly() -> None:
    parameters = batteries([13.5], [5.0], [0.95], [0.95], [0.2])
    load, pv, import_per_kwh, price = day_profiles(1, 4, seed=1)
    inputs = make_inputs(parameters, [6.0], load, pv, import_per_kwh, np.full(4, 0.05), price, 0.5)
    bad_load = load.copy()
    bad_load[0, 1] = np.nan
    cases = [
        (replace(inputs, load_forecast_kw=bad_load), "finite"),
        (replace(inputs, pv_forecast_kw=-pv - 1.0), ">= 0"),
        (replace(inputs, state_of_charge_kwh=np.array([14.0])), "outside"),
        (replace(inputs, market_share=1.5), "market_share"),
        (replace(inputs, storm_reserve_fraction=-0.1), "storm_reserve_fraction"),
        (replace(inputs, market_price_per_mwh=np.array([1.0, np.inf, 1.0, 1.0])), "finite"),
        (replace(inputs, parameters=replace(parameters, charge_efficiency=np.array([0.0]))), "charge_efficiency"),
        (replace(inputs, parameters=replace(parameters, backup_reserve_fraction=np.array([1.2]))), "reserve"),
    ]
    for case, message in cases:
        with pytest.raises(InvalidSitePlanInputError, match=message):
            plan_sites(case)
    with pytest.raises(InvalidSitePlanInputError, match="soc_levels"):
        plan_sites(inputs, soc_levels=1)
    with pytest.raises(InvalidSitePlanInputError, match="terminal_value_per_kwh"):
        plan_sites(inputs, terminal_value_per_kwh=float("nan"))
    assert issubclass(InvalidSitePlanInputError, ValueError)
