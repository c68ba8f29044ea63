"""The device side of the co-optimised VPP: each simulated site plans its own battery on the forecast it holds.

Every 15 minutes the platform publishes a versioned price forecast (:mod:`services.forecast_distribution`);
a site gets it by push or by polling through its concentrator, and plans its battery with the pure
planner :func:`algorithms.fleet.site_plan.plan_sites` against

- its **retail tariff** (:class:`EdgePlannerConfig`: time of use, peak $0.45/kWh from 15:00 to 21:00
  AEST, off-peak $0.25/kWh, feed-in $0.05/kWh);
- the **market signal**: the forecast's P50 ($/MWh) from the plan's start, resampled to the plan
  intervals (:func:`plan_prices_per_mwh`), passed to the owner at ``market_share``;
- its own **load and PV forecasts** (:meth:`simulator.homes.FleetSimulator.expected_load_and_pv_kw`: the
  fleet's models without noise, what the device's forecaster would predict) and its **true stored energy**;
- its **reserve**: the owner's, raised to ``storm_reserve_fraction`` under a storm warning.

The plan starts at the current plan-interval boundary (``now`` floored to ``plan_interval_minutes``) and
runs ``plan_horizon_intervals`` intervals. A site with no forecast plans its bill only (market price 0,
``forecast_version`` 0); a site that missed a version keeps planning on the last one it holds, and its
plan says which version that was. The plan is handed to the simulator (:meth:`FleetSimulator.set_plans`),
whose batteries then follow it whenever no VPP setpoint is in force, and sent up as a PlanBatch by the
concentrators (:mod:`simulator.concentrators`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from algorithms.fleet.fleet_types import BoolArray, FloatArray, IntArray, SiteParameters
from algorithms.fleet.site_plan import plan_sites, resample_prices_to_plan, time_of_use_tariff
from algorithms.fleet.site_plan_types import NO_VERSION, SitePlanInputs, SitePlans
from services.fleet_codec import MalformedBatchError, median_price_per_mwh
from simulator.homes import FleetSimulator
from vpp.v1 import fleet_pb2

MS_PER_MINUTE = 60_000
PRICE_STEP_MINUTES = 5
"""Resolution (minutes) of the price path built from a forecast before resampling to plan intervals."""


class InvalidEdgePlannerConfigError(ValueError):
    """An :class:`EdgePlannerConfig` value is out of range."""


class UnusableForecastError(ValueError):
    """A held forecast the planner cannot read (no quantiles, ragged prices, no interval length)."""


@dataclass(frozen=True)
class EdgePlannerConfig:
    """How every simulated site plans, and how often its concentrator polls and re-plans.

    Attributes:
        peak_per_kwh / offpeak_per_kwh: retail import prices in and out of the peak window ($/kWh).
        feed_in_per_kwh: price paid for exports ($/kWh).
        peak_start_hour / peak_end_hour: the peak window, local hours ``[start, end)`` (AEST, UTC+10).
        utc_offset_hours: the tariff's local time offset from UTC (hours; 10 = AEST).
        market_share: share of the battery's spot value passed to the owner (0–1).
        storm_reserve_fraction: reserve of a site under a storm warning (fraction of capacity, 0–1).
        plan_interval_minutes: plan interval length (minutes, a multiple of 5).
        plan_horizon_intervals: plan length (intervals, ≥ 1).
        replan_interval_s: seconds between two plans on the same held version (s, > 0).
        poll_interval_s: seconds between two forecast polls of a poll-mode concentrator (s, > 0).
        soc_levels: stored-energy grid points of the planner's dynamic programme (2–2001).
    """

    peak_per_kwh: float = 0.45
    offpeak_per_kwh: float = 0.25
    feed_in_per_kwh: float = 0.05
    peak_start_hour: int = 15
    peak_end_hour: int = 21
    utc_offset_hours: float = 10.0
    market_share: float = 1.0
    storm_reserve_fraction: float = 0.8
    plan_interval_minutes: int = 30
    plan_horizon_intervals: int = 48
    replan_interval_s: float = 900.0
    poll_interval_s: float = 60.0
    soc_levels: int = 41

    def __post_init__(self) -> None:
        if self.plan_interval_minutes <= 0 or self.plan_interval_minutes % PRICE_STEP_MINUTES:
            raise InvalidEdgePlannerConfigError(
                f"plan_interval_minutes must be a positive multiple of {PRICE_STEP_MINUTES}, "
                f"got {self.plan_interval_minutes}")
        if self.plan_horizon_intervals < 1:
            raise InvalidEdgePlannerConfigError(
                f"plan_horizon_intervals must be >= 1, got {self.plan_horizon_intervals}")
        for name in ("replan_interval_s", "poll_interval_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InvalidEdgePlannerConfigError(f"{name} must be a finite number > 0, got {value}")
        for name in ("market_share", "storm_reserve_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidEdgePlannerConfigError(f"{name} must be within [0, 1], got {value}")
        if not all(np.isfinite([self.peak_per_kwh, self.offpeak_per_kwh, self.feed_in_per_kwh])):
            raise InvalidEdgePlannerConfigError("tariff prices must be finite")

    @property
    def plan_interval_ms(self) -> int:
        """Plan interval length (ms)."""
        return self.plan_interval_minutes * MS_PER_MINUTE


@dataclass
class HeldForecasts:
    """The newest price forecast each concentrator's sites hold, by concentrator index.

    Devices keep it across reconnects (it is stored on the device, not in the stream), so pass the same
    object to every run of :func:`simulator.concentrators.run_concentrators` that simulates the same devices.
    """

    by_concentrator: dict[int, fleet_pb2.PriceForecast] = field(default_factory=dict)

    def version(self, concentrator: int) -> int:
        """Version the concentrator's sites hold (``NO_VERSION`` when none)."""
        held = self.by_concentrator.get(concentrator)
        return int(held.version) if held is not None else NO_VERSION

    def forecast(self, concentrator: int) -> fleet_pb2.PriceForecast | None:
        """The forecast the concentrator's sites hold (None when none)."""
        return self.by_concentrator.get(concentrator)

    def hold(self, concentrator: int, forecast: fleet_pb2.PriceForecast) -> bool:
        """Keep ``forecast`` if it is newer than the one held; returns whether it was."""
        if forecast.version <= self.version(concentrator):
            return False
        self.by_concentrator[concentrator] = forecast
        return True


def plan_start_ms(now_ms: int, plan_interval_minutes: int) -> int:
    """Start of the plan interval holding ``now_ms``: ``now`` floored to ``plan_interval_minutes`` (epoch ms UTC)."""
    interval_ms = plan_interval_minutes * MS_PER_MINUTE
    return (int(now_ms) // interval_ms) * interval_ms


def plan_prices_per_mwh(forecast: fleet_pb2.PriceForecast | None, start_ms: int, horizon_intervals: int,
                        plan_interval_minutes: int) -> FloatArray:
    """The market signal over the plan intervals ($/MWh): the forecast's P50, resampled.

    The P50 path is read as a step function over its intervals (``forecast.start_ms`` + k ×
    ``interval_minutes``), sampled at the start of every 5-minute slot of the plan and averaged over each
    plan interval (:func:`algorithms.fleet.site_plan.resample_prices_to_plan`). Slots after the forecast's last
    interval hold its last value; slots before its first interval (the plan starts at the interval
    boundary before ``now``) hold its first value. No forecast → 0 $/MWh throughout.

    Args:
        forecast: the held forecast, or None.
        start_ms: start of the plan's first interval (epoch ms UTC).
        horizon_intervals: plan intervals (≥ 1).
        plan_interval_minutes: plan interval length (minutes, a multiple of 5).

    Raises:
        UnusableForecastError: the forecast has no quantiles, ragged prices or no interval length.
    """
    if forecast is None:
        return np.zeros(horizon_intervals)
    try:
        median = np.asarray(median_price_per_mwh(forecast), dtype=np.float64)
    except MalformedBatchError as error:
        raise UnusableForecastError(str(error)) from error
    if not len(median) or forecast.interval_minutes == 0:
        raise UnusableForecastError(f"PriceForecast v{forecast.version} has no intervals or no interval length")
    slots = horizon_intervals * plan_interval_minutes // PRICE_STEP_MINUTES
    slot_start_ms = int(start_ms) + np.arange(slots, dtype=np.int64) * PRICE_STEP_MINUTES * MS_PER_MINUTE
    index = (slot_start_ms - int(forecast.start_ms)) // (int(forecast.interval_minutes) * MS_PER_MINUTE)
    path = median[np.clip(index, 0, len(median) - 1)]
    return resample_prices_to_plan(path, plan_interval_minutes)


def site_parameter_rows(parameters: SiteParameters, site_rows: IntArray) -> SiteParameters:
    """The parameters of the sites at ``site_rows`` (ascending rows keep the ids sorted)."""
    rows = np.asarray(site_rows, dtype=np.int64)
    return SiteParameters(
        site_ids=parameters.site_ids[rows], capacity_kwh=parameters.capacity_kwh[rows],
        max_charge_kw=parameters.max_charge_kw[rows], max_discharge_kw=parameters.max_discharge_kw[rows],
        charge_efficiency=parameters.charge_efficiency[rows],
        discharge_efficiency=parameters.discharge_efficiency[rows],
        backup_reserve_fraction=parameters.backup_reserve_fraction[rows],
        pv_capacity_kw=parameters.pv_capacity_kw[rows])


def site_plan_inputs(simulator: FleetSimulator, site_rows: IntArray, forecast: fleet_pb2.PriceForecast | None,
                     now_ms: int, config: EdgePlannerConfig, storm_warning: BoolArray | None = None) -> SitePlanInputs:
    """What the sites at ``site_rows`` (ascending) plan with at ``now_ms`` (epoch ms UTC): see the module docstring.

    ``storm_warning`` is one flag per row (None: no warning). The stored energy is the simulator's true one,
    clipped to each battery's capacity.
    """
    rows = np.asarray(site_rows, dtype=np.int64)
    parameters = site_parameter_rows(simulator.parameters, rows)
    start_ms = plan_start_ms(now_ms, config.plan_interval_minutes)
    horizon = config.plan_horizon_intervals
    load_kw, pv_kw = simulator.expected_load_and_pv_kw(rows, start_ms, horizon, config.plan_interval_minutes)
    tariff = time_of_use_tariff(start_ms, horizon, config.plan_interval_minutes, peak_per_kwh=config.peak_per_kwh,
                                offpeak_per_kwh=config.offpeak_per_kwh, feed_in_per_kwh=config.feed_in_per_kwh,
                                peak_start_hour=config.peak_start_hour, peak_end_hour=config.peak_end_hour,
                                utc_offset_hours=config.utc_offset_hours)
    warnings = np.zeros(len(rows), dtype=np.bool_) if storm_warning is None else np.asarray(storm_warning, np.bool_)
    stored_kwh = np.clip(np.asarray(simulator.true_state_of_charge_kwh)[rows], 0.0, parameters.capacity_kwh)
    return SitePlanInputs(
        parameters=parameters, state_of_charge_kwh=stored_kwh, load_forecast_kw=load_kw, pv_forecast_kw=pv_kw,
        tariff=tariff,
        market_price_per_mwh=plan_prices_per_mwh(forecast, start_ms, horizon, config.plan_interval_minutes),
        market_share=config.market_share, storm_warning=warnings,
        storm_reserve_fraction=config.storm_reserve_fraction, start_ms=start_ms,
        plan_interval_minutes=config.plan_interval_minutes,
        forecast_version=int(forecast.version) if forecast is not None else NO_VERSION)


def apply_plans(simulator: FleetSimulator, site_rows: IntArray, plans: SitePlans) -> None:
    """Make the sites at ``site_rows`` follow ``plans`` (rows aligned) whenever no VPP setpoint is in force."""
    simulator.set_plans(np.asarray(site_rows, dtype=np.int64), plans.start_ms,
                        plans.plan_interval_minutes * MS_PER_MINUTE, plans.battery_power_kw)


def plan_for_sites(simulator: FleetSimulator, site_rows: IntArray, forecast: fleet_pb2.PriceForecast | None,
                   now_ms: int, config: EdgePlannerConfig, storm_warning: BoolArray | None = None) -> SitePlans:
    """Plan the sites at ``site_rows`` (ascending) on ``forecast`` at ``now_ms``, apply the plans, return them.

    Builds the inputs (:func:`site_plan_inputs`), runs :func:`algorithms.fleet.site_plan.plan_sites` and hands the
    plans to the simulator (:func:`apply_plans`). Plans are in kW / kWh from the current plan-interval
    boundary (epoch ms UTC); ``forecast_version`` is the held forecast's (0 without one).
    """
    plans = plan_sites(site_plan_inputs(simulator, site_rows, forecast, now_ms, config, storm_warning),
                       soc_levels=config.soc_levels)
    apply_plans(simulator, site_rows, plans)
    return plans
