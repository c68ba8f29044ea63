"""Speed of the local site planner (:func:`algorithms.fleet.site_plan.plan_sites`) over a realistic fleet batch.

``python -m bench.site_plan [--sites 100000] [--intervals 48] [--minutes 30] [--seed 1] [--lp-sample 20]``
builds one planning batch and prints the figures of :func:`run_site_plan_bench`:

- **Sites**: :func:`simulator.population.make_site_parameters` (South-Australian battery and PV mix); stored
  energy now uniform between 10 % and 100 % of capacity (so some sites start below their reserve); 2 %
  of the sites under a storm warning (storm reserve 80 %).
- **Forecasts**: PV from :mod:`simulator.pv` (typical-year weather, each site's orientation and derate) and
  household load from :mod:`simulator.household_load` with zero log noise, both at the middle of each plan
  interval; the horizon starts at 12:00 AEST on 15 January 2021.
- **Tariff**: time of use in South-Australian summer time (UTC+10:30): 0.45 $/kWh from 16:00 to 21:00,
  0.25 $/kWh otherwise, feed-in 0.06 $/kWh.
- **Market signal**: a synthetic January-2021-like SA 5-minute price path (negative around midday solar,
  an evening ramp to ~250 $/MWh, a two-interval spike to 12,000 $/MWh on the first evening, seeded
  noise), resampled to the plan intervals with :func:`algorithms.fleet.site_plan.resample_prices_to_plan`;
  half of its value is passed to the owners (``market_share = 0.5``).

Figures: ``plan_seconds`` (wall time of ``plan_sites`` on the whole batch), ``sites_per_second``,
``peak_memory_mib`` (peak of numpy/Python allocations during a second, traced plan of the same batch,
:mod:`tracemalloc`; the inputs are not counted),
``build_seconds`` (building the inputs), and for comparison ``lp_seconds_per_site`` — the same problem
of one site solved exactly as an LP with HiGHS (:func:`scipy.optimize.linprog`) over ``lp_sample`` sites
that start above their reserve — ``lp_seconds_extrapolated`` for the whole batch at that rate, and
``dp_gap_pct_of_lp_saving``: how much of the LP's saving over an idle battery the planner misses on those
sites (%, summed over the sample; objective with the planner's default terminal value).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linprog

from algorithms.fleet.fleet_types import FloatArray
from algorithms.fleet.site_plan import plan_sites, resample_prices_to_plan, time_of_use_tariff
from algorithms.fleet.site_plan_types import SitePlanInputs
from simulator.household_load import household_load_kw, make_household_loads
from simulator.population import make_site_parameters
from simulator.pv import make_pv_fleet, orientation_class_profiles, pv_power_kw

START_MS = int(pd.Timestamp("2021-01-15 12:00", tz="Australia/Brisbane").value // 1_000_000)
"""12:00 AEST (market time) on 15 January 2021, epoch ms UTC."""
SA_SUMMER_UTC_OFFSET_HOURS = 10.5
STORM_SHARE = 0.02
STORM_RESERVE_FRACTION = 0.8
MARKET_SHARE = 0.5
MS_PER_MINUTE = 60_000
MIB = 1024.0 * 1024.0


def january_price_path(start_ms: int, five_minute_intervals: int, seed: int) -> FloatArray:
    """A synthetic SA January 2021-like 5-minute energy price path ($/MWh) from ``start_ms`` (epoch ms UTC)."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(five_minute_intervals) * 5.0
    hour = (pd.Timestamp(start_ms, unit="ms", tz="UTC").tz_convert("Australia/Brisbane").hour + minutes / 60.0) % 24.0
    solar_dip = 75.0 * np.exp(-(((hour - 12.5) / 2.2) ** 2))
    evening = 190.0 * np.exp(-(((hour - 18.75) / 1.4) ** 2))
    prices = 55.0 - solar_dip + evening + rng.normal(0.0, 12.0, five_minute_intervals)
    first_evening = np.flatnonzero((minutes < 24 * 60) & (hour >= 18.5))[:2]
    prices[first_evening] = 12_000.0
    return np.asarray(prices, dtype=np.float64)


def build_inputs(site_count: int, horizon_intervals: int, plan_interval_minutes: int, seed: int) -> SitePlanInputs:
    """The planning batch described in the module docstring."""
    rng = np.random.default_rng(seed)
    parameters = make_site_parameters(site_count, seed)
    pv_fleet = make_pv_fleet(parameters.pv_capacity_kw, seed)
    loads = make_household_loads(site_count, seed)
    interval_ms = plan_interval_minutes * MS_PER_MINUTE
    middles_ms = [START_MS + k * interval_ms + interval_ms // 2 for k in range(horizon_intervals)]
    no_noise = np.zeros(site_count)
    pv_kw = np.stack([pv_power_kw(pv_fleet, moment) for moment in middles_ms], axis=1)
    load_kw = np.stack([household_load_kw(loads, moment, no_noise) for moment in middles_ms], axis=1)
    tariff = time_of_use_tariff(START_MS, horizon_intervals, plan_interval_minutes, peak_per_kwh=0.45,
                                offpeak_per_kwh=0.25, feed_in_per_kwh=0.06, peak_start_hour=16, peak_end_hour=21,
                                utc_offset_hours=SA_SUMMER_UTC_OFFSET_HOURS)
    five_minute = january_price_path(START_MS, horizon_intervals * plan_interval_minutes // 5, seed)
    return SitePlanInputs(
        parameters=parameters,
        state_of_charge_kwh=parameters.capacity_kwh * rng.uniform(0.1, 1.0, site_count),
        load_forecast_kw=load_kw, pv_forecast_kw=pv_kw, tariff=tariff,
        market_price_per_mwh=resample_prices_to_plan(five_minute, plan_interval_minutes),
        market_share=MARKET_SHARE, storm_warning=rng.random(site_count) < STORM_SHARE,
        storm_reserve_fraction=STORM_RESERVE_FRACTION, start_ms=START_MS,
        plan_interval_minutes=plan_interval_minutes, forecast_version=1)


def lp_plan_dollars(inputs: SitePlanInputs, site: int, terminal_value_per_kwh: float) -> float:
    """The same problem of one site (above its reserve) as an exact LP (HiGHS); its optimum ($)."""
    parameters = inputs.parameters
    horizon = inputs.horizon_intervals
    hours = inputs.plan_interval_minutes / 60.0
    value = inputs.market_share * inputs.market_price_per_mwh / 1000.0
    # variables: charge, discharge, import, export (kW), stored energy at interval end (kWh); T of each
    cost = np.concatenate([hours * value, -hours * value, hours * inputs.tariff.import_per_kwh,
                           -hours * inputs.tariff.feed_in_per_kwh, np.zeros(horizon)])
    cost[-1] = -terminal_value_per_kwh
    eye = sp.identity(horizon, format="csr")
    previous = sp.eye(horizon, k=-1, format="csr")
    zero = sp.csr_matrix((horizon, horizon))
    energy = sp.hstack([-hours * parameters.charge_efficiency[site] * eye,
                        hours / parameters.discharge_efficiency[site] * eye, zero, zero, eye - previous])
    meter = sp.hstack([-eye, eye, eye, -eye, zero])
    start = np.zeros(horizon)
    start[0] = inputs.state_of_charge_kwh[site]
    net_kw = inputs.load_forecast_kw[site] - inputs.pv_forecast_kw[site]
    storm = STORM_RESERVE_FRACTION if inputs.storm_warning[site] else 0.0
    reserve = max(parameters.backup_reserve_fraction[site], storm) * parameters.capacity_kwh[site]
    bounds = ([(0.0, parameters.max_charge_kw[site])] * horizon + [(0.0, parameters.max_discharge_kw[site])] * horizon
              + [(0.0, None)] * (2 * horizon) + [(reserve, parameters.capacity_kwh[site])] * horizon)
    result = linprog(cost, A_eq=sp.vstack([energy, meter]).tocsr(), b_eq=np.concatenate([start, net_kw]),
                     bounds=bounds, method="highs")
    return float(result.fun)


def run_site_plan_bench(site_count: int = 100_000, horizon_intervals: int = 48, plan_interval_minutes: int = 30,
                        seed: int = 1, lp_sample: int = 20, measure_memory: bool = True) -> dict[str, float]:
    """Build the batch, plan it and time it (see the module docstring); seconds, sites/s, MiB, %."""
    orientation_class_profiles()  # the PV model's one-off yearly computation, not part of the build
    built = time.perf_counter()
    inputs = build_inputs(site_count, horizon_intervals, plan_interval_minutes, seed)
    build_seconds = time.perf_counter() - built
    started = time.perf_counter()
    plans = plan_sites(inputs)
    plan_seconds = time.perf_counter() - started
    figures = {
        "sites": float(site_count),
        "intervals": float(horizon_intervals),
        "plan_seconds": plan_seconds,
        "sites_per_second": site_count / plan_seconds,
        "build_seconds": build_seconds,
        "mean_abs_battery_kw": float(np.abs(plans.battery_power_kw).mean()),
    }
    if measure_memory:  # a second, traced run: tracing slows numpy's allocations down
        tracemalloc.start()
        plan_sites(inputs)
        figures["peak_memory_mib"] = tracemalloc.get_traced_memory()[1] / MIB
        tracemalloc.stop()
    parameters = inputs.parameters
    reserve_kwh = np.maximum(parameters.backup_reserve_fraction,
                             np.where(inputs.storm_warning, STORM_RESERVE_FRACTION, 0.0)) * parameters.capacity_kwh
    sample = np.flatnonzero(inputs.state_of_charge_kwh >= reserve_kwh)[:lp_sample]
    if len(sample):
        terminal = (parameters.charge_efficiency * parameters.discharge_efficiency
                    * max(float(inputs.tariff.import_per_kwh.min()), 0.0))
        started = time.perf_counter()
        lp = np.array([lp_plan_dollars(inputs, int(site), float(terminal[site])) for site in sample])
        figures["lp_seconds_per_site"] = (time.perf_counter() - started) / len(sample)
        figures["lp_seconds_extrapolated"] = figures["lp_seconds_per_site"] * site_count
        planned = plan_dollars(inputs, plans.battery_power_kw, plans.state_of_charge_kwh[:, -1], terminal)[sample]
        idle = plan_dollars(inputs, np.zeros_like(plans.battery_power_kw), inputs.state_of_charge_kwh, terminal)[sample]
        figures["dp_gap_pct_of_lp_saving"] = float(100.0 * (planned - lp).sum() / (idle - lp).sum())
    return figures


def plan_dollars(inputs: SitePlanInputs, battery_power_kw: FloatArray, final_kwh: FloatArray,
                 terminal_value_per_kwh: FloatArray) -> FloatArray:
    """Each site's objective ($): bill − market value passed on − terminal value of the final energy."""
    hours = inputs.plan_interval_minutes / 60.0
    grid_kw = inputs.load_forecast_kw - inputs.pv_forecast_kw - battery_power_kw
    bill = hours * (inputs.tariff.import_per_kwh * np.maximum(grid_kw, 0.0)
                    - inputs.tariff.feed_in_per_kwh * np.maximum(-grid_kw, 0.0)).sum(axis=1)
    market = inputs.market_share * hours * (inputs.market_price_per_mwh / 1000.0 * battery_power_kw).sum(axis=1)
    return np.asarray(bill - market - terminal_value_per_kwh * final_kwh, dtype=np.float64)


def main() -> None:
    """Command-line entry: ``python -m bench.site_plan --sites N``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sites", type=int, default=100_000)
    parser.add_argument("--intervals", type=int, default=48)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lp-sample", type=int, default=20)
    parser.add_argument("--no-memory", action="store_true", help="skip the traced run that measures peak memory")
    arguments = parser.parse_args()
    figures = run_site_plan_bench(arguments.sites, arguments.intervals, arguments.minutes, arguments.seed,
                                  arguments.lp_sample, not arguments.no_memory)
    for name, value in figures.items():
        print(f"{name:>26}: {value:,.4g}")


if __name__ == "__main__":
    main()
