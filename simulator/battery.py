"""Home-battery physics as one pure vectorised step: power limits, 0..capacity, efficiencies, reserve.

Conventions (as everywhere in the fleet): power at the battery's AC terminals in kW, + discharge /
− charge; stored energy ``state_of_charge_kwh`` in kWh. Over a step of ``duration_s`` the power is held
constant, so with ``h = duration_s / 3600``:

- discharging at ``P > 0`` removes ``P·h / discharge_efficiency`` kWh from storage;
- charging at ``P < 0`` adds ``−P·h · charge_efficiency`` kWh.

What the site's firmware does with a request (:func:`battery_step`): the requested power is clipped to
``[−max_charge_kw, +max_discharge_kw]``, then to what the stored energy allows over the step: charging
never above ``capacity_kwh``, discharging never below the owner's backup reserve
(``backup_reserve_fraction × capacity_kwh``). A battery already below its reserve (e.g. after an outage)
may charge but not discharge. The reserve applies to VPP setpoints and to self-consumption alike
(outages, where a site may use its reserve for its own load, are not simulated).

Which power is requested (:func:`requested_power_kw`): a valid VPP setpoint overrides; otherwise the
site runs self-consumption: it charges from PV surplus and discharges to cover household load, i.e.
requests ``load − pv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.fleet.fleet_types import BoolArray, FloatArray, SiteParameters

SECONDS_PER_HOUR = 3600.0


class InvalidBatteryStepError(ValueError):
    """A battery step was asked with unusable inputs (non-positive duration, misaligned arrays)."""


@dataclass(frozen=True)
class BatteryStep:
    """Result of one step: the power actually delivered (kW, + discharge / − charge, constant over the
    step) and the stored energy at the end of the step (kWh)."""

    battery_power_kw: FloatArray
    state_of_charge_kwh: FloatArray


def reserve_kwh(parameters: SiteParameters) -> FloatArray:
    """Energy each owner keeps back (kWh): ``backup_reserve_fraction × capacity_kwh``."""
    return parameters.backup_reserve_fraction * parameters.capacity_kwh


def battery_step(parameters: SiteParameters, state_of_charge_kwh: FloatArray, requested_power_kw: FloatArray,
                 duration_s: float) -> BatteryStep:
    """Advance every site's battery by ``duration_s`` seconds at (up to) its requested power.

    Args:
        parameters: the sites' batteries (capacity kWh, power limits kW, efficiencies, reserve fraction).
        state_of_charge_kwh: stored energy at the start of the step (kWh), one per site.
        requested_power_kw: power asked for (kW, + discharge / − charge), one per site.
        duration_s: step length (seconds, > 0).

    Returns:
        the delivered power (kW) — the request clipped to the power limits, to the energy above the
        reserve (discharge) and to the room below capacity (charge) — and the new stored energy (kWh).
    """
    site_count = parameters.site_count
    if not duration_s > 0 or not np.isfinite(duration_s):
        raise InvalidBatteryStepError(f"duration_s must be a finite number > 0, got {duration_s}")
    if np.shape(state_of_charge_kwh) != (site_count,) or np.shape(requested_power_kw) != (site_count,):
        raise InvalidBatteryStepError(
            f"state_of_charge_kwh {np.shape(state_of_charge_kwh)} and requested_power_kw "
            f"{np.shape(requested_power_kw)} must both have shape ({site_count},)")
    hours = duration_s / SECONDS_PER_HOUR
    floor_kwh = reserve_kwh(parameters)
    discharge_room_kw = np.maximum(state_of_charge_kwh - floor_kwh, 0.0) * parameters.discharge_efficiency / hours
    charge_room_kw = np.maximum(parameters.capacity_kwh - state_of_charge_kwh, 0.0) / (
        parameters.charge_efficiency * hours)
    power_kw = np.clip(requested_power_kw, -np.minimum(parameters.max_charge_kw, charge_room_kw),
                       np.minimum(parameters.max_discharge_kw, discharge_room_kw))
    stored_change_kwh = np.where(power_kw > 0, -power_kw * hours / parameters.discharge_efficiency,
                                 -power_kw * hours * parameters.charge_efficiency)
    new_state_kwh = state_of_charge_kwh + stored_change_kwh
    # Clipping above makes these exact up to rounding; keep the invariants exact.
    new_state_kwh = np.where(power_kw > 0, np.maximum(new_state_kwh, np.minimum(floor_kwh, state_of_charge_kwh)),
                             np.minimum(new_state_kwh, np.maximum(parameters.capacity_kwh, state_of_charge_kwh)))
    return BatteryStep(battery_power_kw=power_kw, state_of_charge_kwh=new_state_kwh)


def self_consumption_request_kw(pv_power_kw: FloatArray, load_power_kw: FloatArray) -> FloatArray:
    """Power a self-consuming site asks of its battery (kW): ``load − pv`` (+ covers load, − stores surplus)."""
    return load_power_kw - pv_power_kw


def requested_power_kw(setpoint_active: BoolArray, setpoint_kw: FloatArray, pv_power_kw: FloatArray,
                       load_power_kw: FloatArray) -> FloatArray:
    """The site's request (kW): its VPP setpoint where one is active, self-consumption elsewhere."""
    return np.where(setpoint_active, setpoint_kw, self_consumption_request_kw(pv_power_kw, load_power_kw))
