"""Battery physics of the fleet simulator: energy accounting, limits, reserve, self-consumption requests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from algorithms.fleet.fleet_types import SiteParameters
from simulator.battery import (
    InvalidBatteryStepError,
    battery_step,
    requested_power_kw,
    reserve_kwh,
    self_consumption_request_kw,
)
from simulator.population import site_ids_for


def batteries(capacity_kwh: list[float], power_kw: list[float], efficiency: list[float],
              reserve: list[float]) -> SiteParameters:
    count = len(capacity_kwh)
    return SiteParameters(
        site_ids=site_ids_for(count), capacity_kwh=np.array(capacity_kwh), max_charge_kw=np.array(power_kw),
        max_discharge_kw=np.array(power_kw) * 1.1, charge_efficiency=np.array(efficiency),
        discharge_efficiency=np.array(efficiency) * 0.99, backup_reserve_fraction=np.array(reserve),
        pv_capacity_kw=np.zeros(count))


def test_energy_accounting_uses_each_efficiency_on_its_own_direction() -> None:
    parameters = batteries([13.5, 13.5], [5.0, 5.0], [0.95, 0.9], [0.2, 0.2])
    soc = np.array([8.0, 8.0])
    step = battery_step(parameters, soc, np.array([3.0, -3.0]), 600.0)
    np.testing.assert_allclose(step.battery_power_kw, [3.0, -3.0])
    # discharge 3 kW for 10 min = 0.5 kWh delivered, 0.5 / (0.95*0.99) drawn from storage
    np.testing.assert_allclose(step.state_of_charge_kwh, [8.0 - 0.5 / (0.95 * 0.99), 8.0 + 0.5 * 0.9])


def test_round_trip_returns_the_product_of_the_efficiencies() -> None:
    parameters = batteries([13.5], [5.0], [0.95], [0.0])
    charged = battery_step(parameters, np.array([5.0]), np.array([-4.0]), 3600.0)
    stored = charged.state_of_charge_kwh[0] - 5.0
    # discharge exactly the stored energy back out
    hours_needed = stored * 0.95 * 0.99 / 2.0
    discharged = battery_step(parameters, charged.state_of_charge_kwh, np.array([2.0]), hours_needed * 3600.0)
    np.testing.assert_allclose(discharged.state_of_charge_kwh, [5.0], atol=1e-9)
    energy_out, energy_in = 2.0 * hours_needed, 4.0
    assert energy_out / energy_in == pytest.approx(0.95 * 0.95 * 0.99)


def test_power_limits_and_capacity_clip_the_request() -> None:
    parameters = batteries([13.5, 13.5, 13.5], [5.0, 5.0, 5.0], [0.95, 0.95, 0.95], [0.2, 0.2, 0.2])
    soc = np.array([10.0, 13.4, 2.8])
    step = battery_step(parameters, soc, np.array([9.0, -5.0, 5.0]), 3600.0)
    assert step.battery_power_kw[0] == pytest.approx(5.5)  # max discharge 5 × 1.1
    assert step.state_of_charge_kwh[1] == pytest.approx(13.5)  # only 0.1 kWh of room
    assert step.battery_power_kw[1] == pytest.approx(-0.1 / 0.95)
    assert step.state_of_charge_kwh[2] == pytest.approx(2.7)  # stops at the 20 % reserve
    assert step.battery_power_kw[2] == pytest.approx(0.1 * 0.95 * 0.99)


def test_below_reserve_the_battery_charges_but_never_discharges() -> None:
    parameters = batteries([10.0, 10.0], [5.0, 5.0], [0.95, 0.95], [0.3, 0.3])
    soc = np.array([1.0, 1.0])
    step = battery_step(parameters, soc, np.array([4.0, -4.0]), 60.0)
    assert step.battery_power_kw[0] == 0.0
    assert step.state_of_charge_kwh[0] == 1.0
    assert step.battery_power_kw[1] == pytest.approx(-4.0)


def test_bad_inputs_are_named() -> None:
    parameters = batteries([10.0], [5.0], [0.95], [0.3])
    with pytest.raises(InvalidBatteryStepError, match="duration_s"):
        battery_step(parameters, np.array([5.0]), np.array([1.0]), 0.0)
    with pytest.raises(InvalidBatteryStepError, match="shape"):
        battery_step(parameters, np.array([5.0, 1.0]), np.array([1.0]), 1.0)


def test_self_consumption_covers_load_and_stores_surplus_and_a_setpoint_overrides() -> None:
    pv = np.array([0.0, 6.0, 6.0])
    load = np.array([1.5, 1.0, 1.0])
    np.testing.assert_allclose(self_consumption_request_kw(pv, load), [1.5, -5.0, -5.0])
    request = requested_power_kw(np.array([False, False, True]), np.array([9.0, 9.0, 2.0]), pv, load)
    np.testing.assert_allclose(request, [1.5, -5.0, 2.0])


site_rows = st.tuples(
    st.floats(1.0, 30.0),  # capacity kWh
    st.floats(0.5, 10.0),  # power kW
    st.floats(0.8, 1.0),  # efficiency
    st.floats(0.0, 0.6),  # reserve fraction
    st.floats(0.0, 1.0),  # soc fraction
    st.floats(-20.0, 20.0),  # request kW
)


@hypothesis_settings(max_examples=150, deadline=None)
@given(rows=st.lists(site_rows, min_size=1, max_size=20), duration_s=st.floats(0.1, 7200.0))
def test_limits_capacity_and_reserve_are_never_violated(
        rows: list[tuple[float, float, float, float, float, float]], duration_s: float) -> None:
    capacity, power, efficiency, reserve, soc_fraction, request = (list(column) for column in zip(*rows, strict=True))
    parameters = batteries(capacity, power, efficiency, reserve)
    soc = np.array(capacity) * np.array(soc_fraction)
    requested = np.array(request)
    step = battery_step(parameters, soc, requested, duration_s)
    power_kw, new_soc = step.battery_power_kw, step.state_of_charge_kwh
    floor = reserve_kwh(parameters)
    tolerance = 1e-9
    assert np.all(power_kw <= parameters.max_discharge_kw + tolerance)
    assert np.all(-power_kw <= parameters.max_charge_kw + tolerance)
    assert np.all(power_kw * requested >= 0)  # never the opposite direction
    assert np.all(np.abs(power_kw) <= np.abs(requested) + tolerance)
    assert np.all(new_soc <= parameters.capacity_kwh + tolerance)
    assert np.all(new_soc >= -tolerance)
    discharged = power_kw > 0
    assert np.all(new_soc[discharged] >= floor[discharged] - tolerance)
    assert np.all(new_soc[soc < floor] >= soc[soc < floor] - tolerance)  # below reserve: no discharge
    hours = duration_s / 3600.0
    expected = np.where(power_kw > 0, soc - power_kw * hours / parameters.discharge_efficiency,
                        soc - power_kw * hours * parameters.charge_efficiency)
    np.testing.assert_allclose(new_soc, expected, atol=1e-9)
    # a request that is feasible all the way is followed exactly
    feasible = (requested <= np.minimum(parameters.max_discharge_kw,
                                        (soc - floor) * parameters.discharge_efficiency / hours)) & (
        -requested <= np.minimum(parameters.max_charge_kw,
                                 (parameters.capacity_kwh - soc) / (parameters.charge_efficiency * hours)))
    np.testing.assert_allclose(power_kw[feasible], requested[feasible])
