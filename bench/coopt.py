"""``vpp bench coopt``: three ways to run a VPP of home batteries, on real prices and a simulated fleet.

Modes (every one runs the same homes, the same weather, the same household-load noise and the same
battery physics, :func:`simulator.battery.battery_step`, so what is scored is what the batteries could do):

1. ``self_only`` — each site plans only its own bill (:func:`algorithms.fleet.site_plan.plan_sites` with
   ``market_share = 0`` and no market signal).
2. ``central`` — a central controller dispatches the fleet as one aggregated battery
   (:func:`aggregate_battery`: summed capacities and power limits, capacity-weighted efficiencies, the
   owners' reserves as ``soc_min_fraction``) against the market signal with the platform's LP
   (:func:`algorithms.market.optimise.solve_dispatch`), ignoring the homes: their load and PV go straight to the
   grid and the batteries only do what the centre says. The plan's MW are split over the sites in
   proportion to each site's headroom in that direction (:func:`split_pro_rata_to_headroom`, the VPP
   allocator's rule: pro rata to power and thus to capacity while the batteries are away from their
   limits; a site at its reserve or full gives nothing and the others carry its share).
3. ``co_optimised`` — each site plans its own bill plus the market signal (``market_share = 1``: the
   VPP passes the spot value of the battery's power to the owner).

Information (the same for every mode). Decisions are taken every ``replan_minutes`` (default 30) on a
rolling horizon of ``horizon_hours`` (24) in ``plan_interval_minutes`` (30) intervals; only the plan's
first ``replan_minutes`` are carried out. The market signal is a **daily-profile forecast**
(:func:`daily_profile_forecast`): the mean of the last ``forecast_days`` (7) days' dispatch prices at the
same time of day, from the prices published up to the decision (intervals ending at or before it);
with less history it uses the days there are, and with none a flat forecast at the mean of what is
known (zero on the very first decision). Nobody sees a future price. Two other signals can be chosen
(``CooptConfig.price_signal``): ``"predispatch"``, AEMO's pre-dispatch as published by the decision
(the daily profile beyond its last period), the information a real VPP has; and ``"perfect_foresight"``,
the actual prices, which is not a fair comparison but bounds what a better forecast could add. The
household load forecast is the conditional expectation of the load model given its current noise
(:func:`expected_load_factor`: the shape times ``E[exp(noise)]`` decaying to 1 over the 15-minute
correlation time); the PV forecast is the PV model itself (a typical year without noise, so it is
exact).

Realisation. The physics runs at 5-minute steps aligned with the dispatch intervals (interval-ending
AEST). Household load evolves with its AR(1) noise (:func:`simulator.household_load.next_log_noise`),
sampled at the middle of each step; PV likewise. A home mode requests its plan's battery power for the
current plan interval; the central mode requests its share of the plan's MW; each request goes through
``battery_step`` (power limits, capacity, the owner's reserve), and the delivered power is what is
scored:

- **market revenue** ($) = Σ over steps of price ($/MWh) × Σ over sites of delivered battery power
  (kW) / 1000 × 5/60 h: the spot value of the batteries' power at the actual dispatch prices;
- **bill** ($) per site = Σ over steps of import kWh × import tariff − export kWh × feed-in tariff, with
  the meter's net export = PV + battery − load each step; **bill savings** = bill of the same home
  with no battery (same load and PV) − bill with the mode's battery;
- **total value** = market revenue + bill savings.

Every bill is read at the home's meter, so whatever a battery does passes through the retail tariff:
in the central mode the homes buy the centre's charging energy at the import tariff and its discharge
earns them only the feed-in, which is why ignoring the homes costs them. In the self_only mode nobody is
paid the market revenue: it is the spot value of what the batteries did, reported for comparison.

**Reserve kept**: the share of site-steps whose stored energy at the end of the step is at least the
owner's backup reserve, and the lowest stored energy minus reserve (kWh) over all site-steps.

Cost: the home planner dominates (one batched plan of every site per decision and home mode; about
0.1 s per plan of 1,000 sites with 41 levels on this machine), so the three modes run in worker
processes (:func:`simulate_coopt` ``workers``; every mode draws the same load noise from the seed, so
the figures do not depend on it) and the default month of 1,000 sites takes about three to four
minutes on two cores; the physics of the three modes about 2 s.

Retail tariff (a parameter, :class:`CooptConfig`): time of use, peak $0.45/kWh from 15:00 to 21:00
AEST, off-peak $0.25/kWh, feed-in $0.05/kWh. Storm warnings: none by default (``storm_share`` of the
sites, drawn from the seed, can be put under a warning for the whole run; the home planners then hold
``storm_reserve_fraction``, the centre ignores it; reserve kept is always judged against the owner's
own reserve). Every battery starts at ``initial_soc_fraction`` (50 %) of its capacity.

Central's horizon end: the plan must end the horizon with at least the energy it starts with (the
perfect-foresight convention of shared/NEM.md), so a rolling plan never sells the fleet empty just
because its horizon ends.
"""

from __future__ import annotations

import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from rich.console import Console
from rich.table import Table

from aemo.mms import load_market_data
from algorithms.common.battery import BatteryParams
from algorithms.common.nem_time import market_to_unix_ms
from algorithms.common.products import ENERGY
from algorithms.fleet.fleet_types import BoolArray, FloatArray, SiteParameters
from algorithms.fleet.site_plan import plan_sites, resample_prices_to_plan, time_of_use_tariff
from algorithms.fleet.site_plan_types import NO_VERSION, SitePlanInputs, SitePlans, Tariff
from algorithms.market.optimise import solve_dispatch
from algorithms.market.prices import PredispatchPrices
from settings import Settings
from simulator.battery import battery_step, reserve_kwh
from simulator.household_load import (
    NOISE_CORRELATION_S,
    NOISE_LOG_SIGMA,
    HouseholdLoads,
    household_load_kw,
    initial_log_noise,
    make_household_loads,
    next_log_noise,
)
from simulator.population import make_site_parameters
from simulator.pv import PvFleet, make_pv_fleet, orientation_class_profiles, pv_power_kw

MODES: tuple[str, ...] = ("self_only", "central", "co_optimised")
"""The three ways of running the fleet, in the order they are reported."""
STEP_MINUTES = 5
"""Physics and scoring step (minutes): the NEM dispatch interval."""
STEP_HOURS = STEP_MINUTES / 60.0
STEP_MS = STEP_MINUTES * 60_000
INTERVALS_PER_DAY = 24 * 60 // STEP_MINUTES
PREDISPATCH_PERIOD_STEPS = 30 // STEP_MINUTES
"""5-minute intervals per pre-dispatch period (30 minutes)."""
RESERVE_TOLERANCE_KWH = 1e-9
"""Stored energy this close below the reserve (kWh, rounding) still counts as keeping it."""
CENTRAL_UNIT_ID = "vpp-central"
DEFAULT_REGION = "SA1"
PriceSignal = Literal["daily_profile", "predispatch", "perfect_foresight"]
PRICE_SIGNALS: tuple[PriceSignal, ...] = ("daily_profile", "predispatch", "perfect_foresight")
"""Market signals the comparison can run on (:class:`CooptConfig`); ``daily_profile`` is the default."""
DEFAULT_WORKERS = min(len(MODES), os.cpu_count() or 1)
"""Processes the command runs the modes in (one per mode, at most one per CPU)."""
PIPE_WIDTH = 160
"""Table width when the output is not a terminal (a pipe or file) and COLUMNS is unset."""


class CooptBenchError(ValueError):
    """The benchmark cannot run with these inputs (period outside the data, misaligned start, bad option)."""


@dataclass(frozen=True)
class CooptConfig:
    """Parameters of the comparison (units in the names; times AEST where they are clock hours).

    Attributes:
        peak_per_kwh / offpeak_per_kwh / feed_in_per_kwh: the retail time-of-use tariff ($/kWh).
        peak_start_hour / peak_end_hour: the peak window, AEST clock hours ``[start, end)``.
        plan_interval_minutes: plan interval length (minutes, a multiple of 5).
        replan_minutes: time between decisions (minutes, a multiple of 5, at most the horizon).
        horizon_hours: planning horizon (hours, a whole number of plan intervals).
        soc_levels: state-of-charge grid of the home planner (levels).
        forecast_days: days of history averaged by the daily-profile price forecast.
        market_share: share of the spot value passed to the owner in the co-optimised mode (0–1).
        initial_soc_fraction: every battery's stored energy at the start (fraction of capacity).
        storm_share: share of sites under a storm warning for the whole run (0–1; 0 = none).
        storm_reserve_fraction: reserve the home planners hold under a storm warning (fraction).
        lp_time_limit_s: time limit of each central LP solve (seconds).
        price_signal: the market signal of the central and co-optimised modes: ``"daily_profile"`` (the
            default forecast of the module docstring); ``"predispatch"``: AEMO's latest pre-dispatch run
            published by the decision, step-held onto the 5-minute grid, the daily profile beyond its
            last period; ``"perfect_foresight"``: the actual prices of the horizon (beyond the data: the
            daily profile), a diagnostic bound on what the signal can add, not a fair comparison.
    """

    peak_per_kwh: float = 0.45
    offpeak_per_kwh: float = 0.25
    feed_in_per_kwh: float = 0.05
    peak_start_hour: int = 15
    peak_end_hour: int = 21
    plan_interval_minutes: int = 30
    replan_minutes: int = 30
    horizon_hours: float = 24.0
    soc_levels: int = 41
    forecast_days: int = 7
    market_share: float = 1.0
    initial_soc_fraction: float = 0.5
    storm_share: float = 0.0
    storm_reserve_fraction: float = 0.8
    lp_time_limit_s: float = 10.0
    price_signal: PriceSignal = "daily_profile"

    def __post_init__(self) -> None:
        if self.price_signal not in PRICE_SIGNALS:
            raise CooptBenchError(f"price_signal must be one of {PRICE_SIGNALS}, got {self.price_signal!r}")
        if self.plan_interval_minutes <= 0 or self.plan_interval_minutes % STEP_MINUTES:
            raise CooptBenchError(f"plan_interval_minutes must be a positive multiple of {STEP_MINUTES}, "
                                  f"got {self.plan_interval_minutes}")
        horizon_minutes = self.horizon_hours * 60.0
        if not horizon_minutes > 0 or horizon_minutes % self.plan_interval_minutes:
            raise CooptBenchError(f"horizon_hours must be a positive whole number of plan intervals, "
                                  f"got {self.horizon_hours}")
        if (self.replan_minutes <= 0 or self.replan_minutes % STEP_MINUTES
                or self.replan_minutes > horizon_minutes):
            raise CooptBenchError(f"replan_minutes must be a multiple of {STEP_MINUTES} within the horizon, "
                                  f"got {self.replan_minutes}")
        for label, fraction in (("market_share", self.market_share), ("storm_share", self.storm_share),
                                ("initial_soc_fraction", self.initial_soc_fraction),
                                ("storm_reserve_fraction", self.storm_reserve_fraction)):
            if not 0.0 <= fraction <= 1.0:
                raise CooptBenchError(f"{label} must be in [0, 1], got {fraction}")
        if self.forecast_days < 1:
            raise CooptBenchError(f"forecast_days must be >= 1, got {self.forecast_days}")
        if not (0 <= self.peak_start_hour <= 23 and self.peak_start_hour <= self.peak_end_hour <= 24):
            raise CooptBenchError(f"the peak window must satisfy 0 <= start <= 23, start <= end <= 24, got "
                                  f"{self.peak_start_hour}-{self.peak_end_hour}")

    @property
    def horizon_intervals(self) -> int:
        """Plan intervals per horizon."""
        return round(self.horizon_hours * 60.0) // self.plan_interval_minutes

    @property
    def horizon_steps(self) -> int:
        """5-minute intervals per horizon."""
        return self.horizon_intervals * self.plan_interval_minutes // STEP_MINUTES

    @property
    def steps_per_decision(self) -> int:
        """5-minute steps carried out between two decisions."""
        return self.replan_minutes // STEP_MINUTES

    @property
    def grid_minutes(self) -> int:
        """Spacing of the plan-interval midpoints over all decisions (minutes): gcd(replan, plan interval)."""
        return math.gcd(self.replan_minutes, self.plan_interval_minutes)


@dataclass(frozen=True)
class CooptFleet:
    """The simulated homes: batteries and PV sizes (:class:`SiteParameters`), PV orientation and derate,
    household load scale and habits, and which sites are under a storm warning."""

    parameters: SiteParameters
    pv: PvFleet
    loads: HouseholdLoads
    storm_warning: BoolArray


def make_coopt_fleet(site_count: int, seed: int, storm_share: float = 0.0) -> CooptFleet:
    """``site_count`` homes of :mod:`simulator.population` with PV and household loads, deterministic in ``seed``;
    ``storm_share`` of them (drawn from the seed) under a storm warning."""
    if site_count < 1:
        raise CooptBenchError(f"sites must be >= 1, got {site_count}")
    pv_stream, load_stream, storm_stream = np.random.SeedSequence(seed).spawn(3)
    parameters = make_site_parameters(site_count, seed)
    pv = make_pv_fleet(parameters.pv_capacity_kw, int(np.random.default_rng(pv_stream).integers(2**63 - 1)))
    loads = make_household_loads(site_count, int(np.random.default_rng(load_stream).integers(2**63 - 1)))
    order = np.random.default_rng(storm_stream).permutation(site_count)
    storm_warning = np.zeros(site_count, dtype=np.bool_)
    storm_warning[order[:round(storm_share * site_count)]] = True
    return CooptFleet(parameters=parameters, pv=pv, loads=loads, storm_warning=storm_warning)


# --------------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------------


def daily_profile_forecast(known_price_per_mwh: FloatArray, horizon_steps: int, *, history_days: int = 7,
                           intervals_per_day: int = INTERVALS_PER_DAY) -> FloatArray:
    """Price forecast ($/MWh) of the next ``horizon_steps`` 5-minute intervals from the prices known so far.

    ``known_price_per_mwh`` holds the dispatch prices up to the decision, the last element being the
    interval ending at the decision time. Lead ``k`` (1-based) targets interval ``n − 1 + k``; its forecast
    is the mean of the prices at the same time of day on the ``history_days`` most recent days that are
    known (days ``d ≥ ⌈k / intervals_per_day⌉`` back). A lead with no such day gets the mean of all known
    prices (0 when nothing is known).
    """
    if horizon_steps < 0:
        raise CooptBenchError(f"horizon_steps must be >= 0, got {horizon_steps}")
    known = np.asarray(known_price_per_mwh, dtype=np.float64)
    count = len(known)
    fallback = float(known.mean()) if count else 0.0
    leads = np.arange(1, horizon_steps + 1)
    first_day = -(-leads // intervals_per_day)
    days_back = first_day[:, None] + np.arange(history_days)[None, :]
    source = (count - 1 + leads)[:, None] - days_back * intervals_per_day
    valid = source >= 0
    padded = np.append(known, 0.0)  # source -1 and below read the appended zero; masked out anyway
    values = np.where(valid, padded[np.where(valid, source, count)], 0.0)
    found = valid.sum(axis=1)
    return np.where(found > 0, values.sum(axis=1) / np.maximum(found, 1), fallback).astype(np.float64)


def aggregate_battery(parameters: SiteParameters, region: str) -> BatteryParams:
    """The fleet as one battery for the central LP: summed energy (MWh) and power (MW, the smaller of the
    summed charge and discharge limits), capacity-weighted efficiencies, the summed owners' reserves as
    ``soc_min_fraction``; loss factors 1 and a ramp limit that never binds."""
    capacity_kwh = float(parameters.capacity_kwh.sum())
    if not capacity_kwh > 0:
        raise CooptBenchError("the fleet has no battery capacity")
    weights = parameters.capacity_kwh / capacity_kwh
    power_mw = min(float(parameters.max_charge_kw.sum()), float(parameters.max_discharge_kw.sum())) / 1000.0
    return BatteryParams(
        unit_id=CENTRAL_UNIT_ID, region=region, power_mw=power_mw, energy_mwh=capacity_kwh / 1000.0,
        charge_efficiency=float(weights @ parameters.charge_efficiency),
        discharge_efficiency=float(weights @ parameters.discharge_efficiency),
        soc_min_fraction=min(float(reserve_kwh(parameters).sum()) / capacity_kwh, 1.0), soc_max_fraction=1.0,
        mlf_gen=1.0, mlf_load=1.0, ramp_rate_mw_per_min=max(power_mw, 1e-6) * 10.0, min_ramp_rate_mw_per_min=0.0,
    )


def split_pro_rata_to_headroom(parameters: SiteParameters, state_of_charge_kwh: FloatArray, target_kw: float,
                               duration_s: float) -> FloatArray:
    """Per-site battery requests (kW, + discharge / − charge) that add up to ``target_kw`` (the fleet's
    battery power) where the sites can give it, every site at the same fraction of its headroom.

    Headroom (kW) in the target's direction over ``duration_s`` seconds: discharge up to the power limit
    and the stored energy above the owner's reserve; charge up to the power limit and the room below
    capacity. A target beyond the fleet's headroom puts every site at its headroom.
    """
    hours = duration_s / 3600.0
    if target_kw >= 0:
        headroom_kw = np.minimum(parameters.max_discharge_kw, np.maximum(
            state_of_charge_kwh - reserve_kwh(parameters), 0.0) * parameters.discharge_efficiency / hours)
    else:
        headroom_kw = np.minimum(parameters.max_charge_kw, np.maximum(
            parameters.capacity_kwh - state_of_charge_kwh, 0.0) / (parameters.charge_efficiency * hours))
    total_kw = float(headroom_kw.sum())
    fraction = min(abs(target_kw) / total_kw, 1.0) if total_kw > 0 else 0.0
    return np.asarray(math.copysign(fraction, target_kw) * headroom_kw, dtype=np.float64)


def interval_bill_dollars(pv_kw: FloatArray, load_kw: FloatArray, battery_power_kw: FloatArray,
                          import_per_kwh: float, feed_in_per_kwh: float, hours: float) -> FloatArray:
    """Each site's bill for one interval ($): import kWh × ``import_per_kwh`` − export kWh × ``feed_in_per_kwh``,
    with the meter's net export (kW, + export) = PV + battery − load held for ``hours``."""
    net_export_kw = pv_kw + battery_power_kw - load_kw
    return np.asarray((np.maximum(-net_export_kw, 0.0) * import_per_kwh
                       - np.maximum(net_export_kw, 0.0) * feed_in_per_kwh) * hours, dtype=np.float64)


def market_revenue_dollars(price_per_mwh: FloatArray, fleet_battery_power_kw: FloatArray,
                           hours: float = STEP_HOURS) -> float:
    """Spot value ($) of the fleet's battery power: Σ price ($/MWh) × power (kW) / 1000 × ``hours`` per step."""
    return float(np.dot(price_per_mwh, fleet_battery_power_kw) * hours / 1000.0)


def expected_load_factor(log_noise: FloatArray, lead_s: FloatArray) -> FloatArray:
    """``E[exp(noise(t + lead) − σ²/2) | noise(t)]`` per site and lead, shape ``(sites, leads)``.

    The household-load noise is AR(1) in log space with stationary σ and correlation time
    :data:`~simulator.household_load.NOISE_CORRELATION_S`, so with ρ = exp(−lead / τ) the factor is
    ``exp(ρ·noise − σ²ρ²/2)``: the current deviation fading to the mean factor 1.
    """
    correlation = np.exp(-np.asarray(lead_s, dtype=np.float64) / NOISE_CORRELATION_S)[None, :]
    return np.asarray(np.exp(correlation * np.asarray(log_noise)[:, None]
                             - NOISE_LOG_SIGMA**2 * correlation**2 / 2.0), dtype=np.float64)


def market_signal(price_per_mwh_5min: FloatArray, known_count: int, config: CooptConfig,
                  overlay_per_mwh: FloatArray | None = None) -> FloatArray:
    """The market signal ($/MWh) of one decision over its horizon on the 5-minute grid.

    ``price_per_mwh_5min[:known_count]`` are the prices published by the decision (the last one ends at
    the decision time). The daily-profile forecast of those prices, replaced where ``config.price_signal``
    has something better: the finite values of ``overlay_per_mwh`` (``"predispatch"``), or the actual
    prices that follow (``"perfect_foresight"``).
    """
    signal = daily_profile_forecast(price_per_mwh_5min[:known_count], config.horizon_steps,
                                    history_days=config.forecast_days)
    if config.price_signal == "perfect_foresight":
        actual = price_per_mwh_5min[known_count:known_count + config.horizon_steps]
        signal[:len(actual)] = actual
    elif config.price_signal == "predispatch" and overlay_per_mwh is not None:
        signal = np.where(np.isfinite(overlay_per_mwh), overlay_per_mwh, signal)
    return signal


def predispatch_on_grid(period_ending: list[datetime], price_per_mwh: FloatArray, decision_time: datetime,
                        horizon_steps: int) -> FloatArray:
    """Half-hourly pre-dispatch prices ($/MWh, period-ending AEST) step-held onto the 5-minute intervals
    ending ``decision_time + 5 min … + horizon_steps × 5 min``: an interval takes the price of the 30-minute
    period that contains it; NaN where no period does."""
    on_grid = np.full(horizon_steps, np.nan)
    if not period_ending:
        return on_grid
    step = timedelta(minutes=STEP_MINUTES)
    offsets = np.array([(moment - decision_time) / step for moment in period_ending])
    interval_offsets = np.arange(1, horizon_steps + 1, dtype=np.float64)
    slot = np.searchsorted(offsets, interval_offsets, side="left")
    clipped = np.minimum(slot, len(offsets) - 1)
    covered = (slot < len(offsets)) & (offsets[clipped] - interval_offsets < PREDISPATCH_PERIOD_STEPS)
    on_grid[covered] = np.asarray(price_per_mwh, dtype=np.float64)[clipped[covered]]
    return on_grid


def predispatch_overlay(predispatch: PredispatchPrices, region: str, start: datetime, decisions: int,
                        config: CooptConfig) -> FloatArray:
    """Pre-dispatch ENERGY prices ($/MWh) of every decision's horizon, shape ``(decisions, horizon_steps)``:
    decision ``d`` at ``start + d × replan_minutes`` (AEST) reads the newest run known by then; NaN where
    no run or period covers an interval."""
    overlay = np.full((decisions, config.horizon_steps), np.nan)
    energy = predispatch.products.index(ENERGY)
    for decision in range(decisions):
        decision_time = start + timedelta(minutes=decision * config.replan_minutes)
        run = predispatch.latest_run(region, decision_time)
        if run is None:
            continue
        periods = [datetime(1970, 1, 1) + timedelta(seconds=int(moment)) for moment in
                   run.periods.astype("datetime64[s]").astype(np.int64)]
        overlay[decision] = predispatch_on_grid(periods, run.price[:, energy], decision_time, config.horizon_steps)
    return overlay


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeTrace:
    """Per-site, per-step record of one mode (kept on request; ``(steps, sites)``): delivered battery power
    (kW, + discharge) and stored energy at the end of each step (kWh)."""

    battery_power_kw: FloatArray
    state_of_charge_kwh: FloatArray


@dataclass(frozen=True)
class ModeFigures:
    """One mode's figures over the whole fleet and period ($, MWh, fractions of 1, kWh).

    Attributes:
        mode: one of :data:`MODES`.
        market_revenue_dollars: Σ dispatch price × delivered battery power × hours ($).
        bill_dollars: Σ over sites of the retail bill with the mode's battery ($).
        no_battery_bill_dollars: Σ over sites of the bill of the same homes without a battery ($).
        discharged_mwh / charged_mwh: battery energy out of / into the batteries' terminals (MWh).
        reserve_kept_share: site-steps ending with stored energy ≥ the owner's reserve (fraction).
        lowest_margin_kwh: the lowest (stored energy − reserve) over all site-steps (kWh).
        fleet_battery_power_kw: Σ over sites of delivered battery power per 5-minute step (kW).
        failed_plans: decisions whose plan could not be used (the mode then idled until the next one).
        planning_s: time spent planning (seconds).
        trace: the per-site record, when asked for.
    """

    mode: str
    market_revenue_dollars: float
    bill_dollars: float
    no_battery_bill_dollars: float
    discharged_mwh: float
    charged_mwh: float
    reserve_kept_share: float
    lowest_margin_kwh: float
    fleet_battery_power_kw: FloatArray
    failed_plans: int
    planning_s: float
    trace: ModeTrace | None = None

    @property
    def bill_savings_dollars(self) -> float:
        """Bill without a battery − bill with this mode's battery, summed over sites ($)."""
        return self.no_battery_bill_dollars - self.bill_dollars

    @property
    def total_value_dollars(self) -> float:
        """Market revenue + bill savings ($)."""
        return self.market_revenue_dollars + self.bill_savings_dollars


@dataclass(frozen=True)
class CooptResult:
    """The comparison: one :class:`ModeFigures` per mode (in :data:`MODES` order) and the run's shape.

    ``price_per_mwh`` is the realised dispatch price of every 5-minute step ($/MWh); ``start_ms`` the start
    of the first step (epoch ms UTC); ``decisions`` the number of re-plans; ``physics_s`` / ``elapsed_s``
    seconds spent in the physics and in total.
    """

    modes: tuple[ModeFigures, ...]
    site_count: int
    steps: int
    decisions: int
    start_ms: int
    price_per_mwh: FloatArray
    physics_s: float
    elapsed_s: float
    total_capacity_kwh: float = field(default=0.0)

    def mode(self, name: str) -> ModeFigures:
        """The figures of mode ``name``; KeyError for an unknown mode."""
        for figures in self.modes:
            if figures.mode == name:
                return figures
        raise KeyError(f"unknown mode {name!r}; modes are {', '.join(MODES)}")


@dataclass
class _ModeState:
    """Mutable accumulators of one mode while the simulation runs (per-site arrays)."""

    state_of_charge_kwh: FloatArray
    bill_dollars: FloatArray
    fleet_power_kw: FloatArray
    discharged_kwh: float = 0.0
    charged_kwh: float = 0.0
    kept_site_steps: int = 0
    lowest_margin_kwh: float = math.inf
    failed_plans: int = 0
    planning_s: float = 0.0
    plan_kw: FloatArray | None = None
    central_plan_mw: FloatArray | None = None
    power_trace: list[FloatArray] = field(default_factory=list)
    soc_trace: list[FloatArray] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------------


def _midpoint_grid(fleet: CooptFleet, first_ms: int, count: int, spacing_ms: int) -> tuple[FloatArray, FloatArray]:
    """Noise-free household load (kW, mean factor 1) and PV (kW) of every site at ``count`` times
    ``first_ms + j · spacing_ms``, shape ``(sites, count)`` each."""
    mean_factor_noise = np.full(fleet.parameters.site_count, NOISE_LOG_SIGMA**2 / 2.0)
    times = [first_ms + j * spacing_ms for j in range(count)]
    load = np.stack([household_load_kw(fleet.loads, moment, mean_factor_noise) for moment in times], axis=1)
    pv = np.stack([pv_power_kw(fleet.pv, moment) for moment in times], axis=1)
    return load, pv


def _home_plan(fleet: CooptFleet, state_of_charge_kwh: FloatArray, load_forecast_kw: FloatArray,
               pv_forecast_kw: FloatArray, tariff: Tariff, market_price_per_mwh: FloatArray, market_share: float,
               config: CooptConfig, start_ms: int, forecast_version: int) -> SitePlans:
    inputs = SitePlanInputs(
        parameters=fleet.parameters, state_of_charge_kwh=state_of_charge_kwh, load_forecast_kw=load_forecast_kw,
        pv_forecast_kw=pv_forecast_kw, tariff=tariff, market_price_per_mwh=market_price_per_mwh,
        market_share=market_share, storm_warning=fleet.storm_warning,
        storm_reserve_fraction=config.storm_reserve_fraction, start_ms=start_ms,
        plan_interval_minutes=config.plan_interval_minutes, forecast_version=forecast_version)
    return plan_sites(inputs, soc_levels=config.soc_levels)


def _central_plan(battery: BatteryParams, state_of_charge_kwh: FloatArray, market_price_per_mwh: FloatArray,
                  config: CooptConfig) -> FloatArray | None:
    """The aggregated battery's net MW per plan interval, or None when the LP gives no usable plan."""
    stored_mwh = min(max(float(state_of_charge_kwh.sum()) / 1000.0, battery.soc_min_mwh), battery.soc_max_mwh)
    plan = solve_dispatch({ENERGY: market_price_per_mwh}, battery, stored_mwh, stored_mwh,
                          interval_hours=config.plan_interval_minutes / 60.0, time_limit_s=config.lp_time_limit_s)
    return plan.net_mw if plan.status == "OPTIMAL" else None


@dataclass(frozen=True)
class _Run:
    """Everything one mode's simulation needs (picklable, so modes can run in worker processes)."""

    prices: FloatArray
    first_step: int
    steps: int
    start_ms: int
    fleet: CooptFleet
    config: CooptConfig
    region: str
    seed: int
    keep_traces: bool
    signal_overlay: FloatArray | None

    @property
    def decisions(self) -> int:
        """Number of re-plans."""
        return -(-self.steps // self.config.steps_per_decision)


def simulate_coopt(price_per_mwh_5min: FloatArray, first_step: int, steps: int, start_ms: int, fleet: CooptFleet,
                   config: CooptConfig, *, region: str = DEFAULT_REGION, seed: int = 1, keep_traces: bool = False,
                   signal_overlay: FloatArray | None = None, workers: int = 1) -> CooptResult:
    """Run the three modes over ``steps`` 5-minute intervals and score them (see the module docstring).

    Args:
        price_per_mwh_5min: the region's dispatch prices on the 5-minute grid ($/MWh, interval-ending,
            no gaps); element ``first_step + s`` is the price of step ``s``, the interval ending
            ``start_ms + (s + 1) · 5 min``; earlier elements are the history the forecast may use.
        first_step: index of the first simulated interval in ``price_per_mwh_5min``.
        steps: number of 5-minute intervals to simulate (a whole number of decisions is not required).
        start_ms: start of the first step (epoch ms UTC).
        fleet: the homes.
        config: tariff, planning cadence and horizon, forecast, shares.
        region: NEM region (names the central unit).
        seed: seed of the household-load noise (the same noise in every mode).
        keep_traces: keep every site's power and stored energy per step (memory: 2 × steps × sites floats
            per mode).
        signal_overlay: for ``price_signal = "predispatch"``: the pre-dispatch price ($/MWh) of every
            decision's horizon on the 5-minute grid, shape ``(decisions, horizon_steps)``, NaN where it
            has none (:func:`predispatch_overlay`).
        workers: processes to run the modes in (1 = in this process). Each mode draws the same noise
            from ``seed``, so the figures do not depend on it.
    """
    started = time.perf_counter()
    prices = np.asarray(price_per_mwh_5min, dtype=np.float64)
    if steps < 1 or first_step < 0 or first_step + steps > len(prices):
        raise CooptBenchError(f"steps {first_step}..{first_step + steps} are outside the {len(prices)} prices")
    if not bool(np.all(np.isfinite(prices[:first_step + steps]))):
        raise CooptBenchError("the prices have gaps (NaN) before the end of the period")
    run = _Run(prices=prices[:first_step + steps], first_step=first_step, steps=steps, start_ms=start_ms, fleet=fleet,
               config=config, region=region, seed=seed, keep_traces=keep_traces, signal_overlay=signal_overlay)
    if config.price_signal == "predispatch" and (
            signal_overlay is None or signal_overlay.shape != (run.decisions, config.horizon_steps)):
        raise CooptBenchError(f"price_signal 'predispatch' needs a signal_overlay of shape "
                              f"({run.decisions}, {config.horizon_steps})")
    aggregate_battery(fleet.parameters, region)  # fail early on a fleet without capacity
    # The home planners take longest: start them first.
    order = ("self_only", "co_optimised", "central")
    if workers > 1:
        orientation_class_profiles()  # computed once here, inherited by forked workers
        with ProcessPoolExecutor(max_workers=min(workers, len(order))) as pool:
            outcomes = dict(zip(order, pool.map(_simulate_mode, order, [run] * len(order)), strict=True))
    else:
        outcomes = {mode: _simulate_mode(mode, run) for mode in order}
    return CooptResult(modes=tuple(outcomes[mode][0] for mode in MODES), site_count=fleet.parameters.site_count,
                       steps=steps, decisions=run.decisions, start_ms=start_ms,
                       price_per_mwh=prices[first_step:first_step + steps].copy(),
                       physics_s=sum(outcome[1] for outcome in outcomes.values()),
                       elapsed_s=time.perf_counter() - started,
                       total_capacity_kwh=float(fleet.parameters.capacity_kwh.sum()))


def _simulate_mode(mode: str, run: _Run) -> tuple[ModeFigures, float]:
    """One mode over the whole period: its figures and the seconds its physics took."""
    config, fleet, steps = run.config, run.fleet, run.steps
    parameters = fleet.parameters
    site_count = parameters.site_count
    reserve = reserve_kwh(parameters)
    battery = aggregate_battery(parameters, run.region)
    noise_rng = np.random.default_rng(np.random.SeedSequence([run.seed, 7]))
    log_noise = initial_log_noise(site_count, noise_rng)
    horizon = config.horizon_intervals
    grid_ms = config.grid_minutes * 60_000
    interval_ms = config.plan_interval_minutes * 60_000
    per_interval = interval_ms // grid_ms
    per_decision = config.replan_minutes * 60_000 // grid_ms
    home = mode != "central"
    if home:
        base_load_kw, base_pv_kw = _midpoint_grid(fleet, run.start_ms + interval_ms // 2,
                                                  (run.decisions - 1) * per_decision + horizon * per_interval, grid_ms)
    lead_s: FloatArray = (np.arange(horizon, dtype=np.float64) + 0.5) * (interval_ms / 1000.0) + STEP_MS / 2000.0
    step_tariff = time_of_use_tariff(run.start_ms, steps, STEP_MINUTES, peak_per_kwh=config.peak_per_kwh,
                                     offpeak_per_kwh=config.offpeak_per_kwh, feed_in_per_kwh=config.feed_in_per_kwh,
                                     peak_start_hour=config.peak_start_hour, peak_end_hour=config.peak_end_hour)
    state = _ModeState(state_of_charge_kwh=np.maximum(config.initial_soc_fraction * parameters.capacity_kwh, reserve),
                       bill_dollars=np.zeros(site_count), fleet_power_kw=np.zeros(steps))
    no_battery_bill = np.zeros(site_count)
    physics_s = 0.0
    for decision in range(run.decisions):
        first = decision * config.steps_per_decision
        decision_ms = run.start_ms + first * STEP_MS
        planning_started = time.perf_counter()
        # What is known: prices of intervals ending at or before the decision; the noise of the last sample.
        if mode == "self_only":
            signal = np.zeros(horizon)
        else:
            signal_5min = market_signal(run.prices, run.first_step + first, config,
                                        None if run.signal_overlay is None else run.signal_overlay[decision])
            signal = np.asarray(resample_prices_to_plan(signal_5min, config.plan_interval_minutes), dtype=np.float64)
        if home:
            columns = decision * per_decision + np.arange(horizon) * per_interval
            load_forecast: FloatArray = base_load_kw[:, columns] * expected_load_factor(log_noise, lead_s)
            tariff = time_of_use_tariff(decision_ms, horizon, config.plan_interval_minutes,
                                        peak_per_kwh=config.peak_per_kwh, offpeak_per_kwh=config.offpeak_per_kwh,
                                        feed_in_per_kwh=config.feed_in_per_kwh,
                                        peak_start_hour=config.peak_start_hour, peak_end_hour=config.peak_end_hour)
            co_optimised = mode == "co_optimised"
            state.plan_kw = _home_plan(fleet, state.state_of_charge_kwh, load_forecast, base_pv_kw[:, columns],
                                       tariff, signal, config.market_share if co_optimised else 0.0, config,
                                       decision_ms, decision + 1 if co_optimised else NO_VERSION).battery_power_kw
        else:
            state.central_plan_mw = _central_plan(battery, state.state_of_charge_kwh, signal, config)
            state.failed_plans += int(state.central_plan_mw is None)
        state.planning_s += time.perf_counter() - planning_started

        physics_started = time.perf_counter()
        for step in range(first, min(first + config.steps_per_decision, steps)):
            sample_ms = run.start_ms + step * STEP_MS + STEP_MS // 2
            log_noise = next_log_noise(log_noise, STEP_MS / 1000.0, noise_rng)
            load_kw = household_load_kw(fleet.loads, sample_ms, log_noise)
            pv_kw = pv_power_kw(fleet.pv, sample_ms)
            import_price = float(step_tariff.import_per_kwh[step])
            feed_in_price = float(step_tariff.feed_in_per_kwh[step])
            no_battery_bill += interval_bill_dollars(pv_kw, load_kw, np.zeros(site_count), import_price,
                                                     feed_in_price, STEP_HOURS)
            plan_column = (step - first) * STEP_MINUTES // config.plan_interval_minutes
            if home:
                assert state.plan_kw is not None
                request_kw = state.plan_kw[:, plan_column]
            else:
                target_kw = 0.0 if state.central_plan_mw is None else 1000.0 * float(state.central_plan_mw[plan_column])
                request_kw = split_pro_rata_to_headroom(parameters, state.state_of_charge_kwh, target_kw,
                                                        STEP_MS / 1000.0)
            _advance(state, parameters, reserve, request_kw, pv_kw, load_kw, import_price, feed_in_price, step,
                     run.keep_traces)
        physics_s += time.perf_counter() - physics_started
    figures = _figures(mode, state, no_battery_bill, run.prices[run.first_step:run.first_step + steps], site_count,
                       steps)
    return figures, physics_s


def _advance(state: _ModeState, parameters: SiteParameters, reserve: FloatArray, request_kw: FloatArray,
             pv_kw: FloatArray, load_kw: FloatArray, import_price: float, feed_in_price: float, step: int,
             keep_traces: bool) -> None:
    """One 5-minute step of one mode through the battery physics, accumulating its figures."""
    result = battery_step(parameters, state.state_of_charge_kwh, request_kw, STEP_MS / 1000.0)
    power_kw = result.battery_power_kw
    state.state_of_charge_kwh = result.state_of_charge_kwh
    state.bill_dollars += interval_bill_dollars(pv_kw, load_kw, power_kw, import_price, feed_in_price, STEP_HOURS)
    state.fleet_power_kw[step] = float(power_kw.sum())
    state.discharged_kwh += float(np.maximum(power_kw, 0.0).sum()) * STEP_HOURS
    state.charged_kwh += float(np.maximum(-power_kw, 0.0).sum()) * STEP_HOURS
    margin_kwh = result.state_of_charge_kwh - reserve
    state.kept_site_steps += int(np.count_nonzero(margin_kwh >= -RESERVE_TOLERANCE_KWH))
    state.lowest_margin_kwh = min(state.lowest_margin_kwh, float(margin_kwh.min()))
    if keep_traces:
        state.power_trace.append(power_kw)
        state.soc_trace.append(result.state_of_charge_kwh)


def _figures(mode: str, state: _ModeState, no_battery_bill: FloatArray, price_per_mwh: FloatArray, site_count: int,
             steps: int) -> ModeFigures:
    trace = ModeTrace(battery_power_kw=np.stack(state.power_trace), state_of_charge_kwh=np.stack(state.soc_trace)) \
        if state.power_trace else None
    return ModeFigures(
        mode=mode, market_revenue_dollars=market_revenue_dollars(price_per_mwh, state.fleet_power_kw),
        bill_dollars=float(state.bill_dollars.sum()), no_battery_bill_dollars=float(no_battery_bill.sum()),
        discharged_mwh=state.discharged_kwh / 1000.0, charged_mwh=state.charged_kwh / 1000.0,
        reserve_kept_share=state.kept_site_steps / (steps * site_count), lowest_margin_kwh=state.lowest_margin_kwh,
        fleet_battery_power_kw=state.fleet_power_kw, failed_plans=state.failed_plans, planning_s=state.planning_s,
        trace=trace)


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def region_prices(settings: Settings, region: str, start: datetime, days: float) -> tuple[FloatArray, int, int]:
    """The region's ENERGY dispatch prices ($/MWh, 5-minute grid, interval-ending AEST) from the start of the
    data to the end of the period, the index of the interval ending ``start + 5 min`` and the step count.

    Raises CooptBenchError when the period is not in the data, the data has gaps up to its end, or
    ``start`` is not on a 5-minute boundary.
    """
    if start.second or start.microsecond or start.minute % STEP_MINUTES:
        raise CooptBenchError(f"start must be on a {STEP_MINUTES}-minute boundary, got {start}")
    steps = round(days * INTERVALS_PER_DAY)
    if steps < 1:
        raise CooptBenchError(f"days must cover at least one 5-minute interval, got {days}")
    dispatch, _ = load_market_data(settings.market_data.data_dir)
    try:
        series = np.asarray(dispatch.series(region, ENERGY), dtype=np.float64)
    except KeyError as exc:
        raise CooptBenchError(str(exc.args[0])) from None
    first_interval = start + timedelta(minutes=STEP_MINUTES)
    first_step = dispatch.interval_index(first_interval)
    last_step = dispatch.interval_index(start + timedelta(minutes=STEP_MINUTES * steps))
    if first_step is None or last_step is None or last_step - first_step + 1 != steps:
        raise CooptBenchError(f"the data ({dispatch.intervals[0]} .. {dispatch.intervals[-1]}, interval-ending AEST) "
                              f"does not hold {steps} consecutive 5-minute intervals from {first_interval}")
    # The forecast indexes history by position: the grid up to the period's end must have no gaps.
    grid = dispatch.intervals[:last_step + 1]
    if len(grid) > 1 and bool(np.any(np.diff(grid) != np.timedelta64(STEP_MINUTES * 60, "s"))):
        raise CooptBenchError("the dispatch data has missing intervals before the end of the period")
    return series[:last_step + 1], first_step, steps


def _money(value: float) -> str:
    return f"{value:,.0f}"


def _cents(value: float) -> str:
    return f"{value:,.2f}"


def print_coopt(console: Console, result: CooptResult, config: CooptConfig, *, region: str, start: datetime,
                days: float, seed: int) -> None:
    """Print the side-by-side table (fleet totals and per-site averages) and how the co-optimised mode compares."""
    end = start + timedelta(minutes=STEP_MINUTES * result.steps)
    sites = result.site_count
    storm = (f"storm warnings on {config.storm_share:.0%} of sites (reserve {config.storm_reserve_fraction:.0%})"
             if config.storm_share > 0 else "no storm warnings")
    console.print(f"VPP operating modes, {region}, {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} AEST ({days:g} days), "
                  f"{sites:,} simulated homes (seed {seed}), {result.total_capacity_kwh / 1000:,.2f} MWh of batteries")
    console.print(f"tariff: peak ${config.peak_per_kwh:.2f}/kWh {config.peak_start_hour:02d}:00–"
                  f"{config.peak_end_hour:02d}:00 AEST, off-peak ${config.offpeak_per_kwh:.2f}/kWh, feed-in "
                  f"${config.feed_in_per_kwh:.2f}/kWh; {storm}")
    profile = f"the mean of the last {config.forecast_days} days' prices at the same time of day"
    signal = {"daily_profile": profile,
              "predispatch": f"AEMO pre-dispatch as published, then {profile}",
              "perfect_foresight": "the actual prices (PERFECT FORESIGHT: a bound, not a fair comparison)"}
    console.print(f"every mode re-plans every {config.replan_minutes} min over {config.horizon_hours:g} h in "
                  f"{config.plan_interval_minutes}-min intervals; market signal = {signal[config.price_signal]}; "
                  f"co_optimised market share {config.market_share:g}; physics and scoring at 5-min dispatch prices")
    table = Table(title="fleet figures ($ over the period) and per-site averages", title_justify="left")
    table.add_column("figure")
    for mode in MODES:
        table.add_column(mode, justify="right")
    figures = result.modes

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    row("market revenue, fleet $", [_money(f.market_revenue_dollars) for f in figures])
    row("bill savings, fleet $", [_money(f.bill_savings_dollars) for f in figures])
    row("total value, fleet $", [_money(f.total_value_dollars) for f in figures])
    row("market revenue, $/site", [_cents(f.market_revenue_dollars / sites) for f in figures])
    row("bill savings, $/site", [_cents(f.bill_savings_dollars / sites) for f in figures])
    row("total value, $/site", [_cents(f.total_value_dollars / sites) for f in figures])
    row("bill with battery, $/site (without: "
        f"{figures[0].no_battery_bill_dollars / sites:,.2f})", [_cents(f.bill_dollars / sites) for f in figures])
    row("energy discharged / charged, MWh",
        [f"{f.discharged_mwh:,.1f} / {f.charged_mwh:,.1f}" for f in figures])
    row("site-intervals at or above reserve", [f"{f.reserve_kept_share:.2%}" for f in figures])
    row("lowest stored energy − reserve, kWh", [f"{f.lowest_margin_kwh:.3f}" for f in figures])
    row("failed plans", [str(f.failed_plans) for f in figures])
    row("planning time, s", [f"{f.planning_s:.1f}" for f in figures])
    console.print(table)
    co_optimised = result.mode("co_optimised")
    for other in (result.mode("self_only"), result.mode("central")):
        difference = co_optimised.total_value_dollars - other.total_value_dollars
        relative = difference / abs(other.total_value_dollars) if other.total_value_dollars else math.nan
        share = f"{relative:+.1%}" if math.isfinite(relative) else "-"
        console.print(f"co_optimised vs {other.mode}: total value {difference:+,.0f} $ ({share}); market revenue "
                      f"{co_optimised.market_revenue_dollars - other.market_revenue_dollars:+,.0f} $, bill savings "
                      f"{co_optimised.bill_savings_dollars - other.bill_savings_dollars:+,.0f} $")
    console.print(f"{sites:,} sites, {result.steps:,} 5-minute intervals, {result.decisions:,} decisions; "
                  f"elapsed {result.elapsed_s:.1f} s (physics {result.physics_s:.1f} s)")


def run_coopt_bench(settings: Settings, *, region: str, start: datetime, days: float, sites: int, seed: int,
                    config: CooptConfig | None = None, console: Console | None = None,
                    workers: int = DEFAULT_WORKERS) -> int:
    """Compare self_only, central and co_optimised over ``days`` days from ``start`` (naive AEST, the start of
    the first 5-minute interval) for ``sites`` simulated homes in ``region``; print the table.

    ``config`` (default :class:`CooptConfig`) sets the tariff, cadence and market signal; ``workers`` the
    processes the modes run in. Returns 0 when every mode kept every owner's reserve and every plan was
    usable, 1 otherwise. Raises CooptBenchError for a period outside the data or bad options.
    """
    started = time.perf_counter()
    chosen = config or CooptConfig()
    interactive = sys.stdout.isatty() or bool(os.environ.get("COLUMNS"))
    out = console or Console(width=None if interactive else PIPE_WIDTH)
    plan_minutes = chosen.plan_interval_minutes
    if (start.hour * 60 + start.minute) % math.gcd(plan_minutes, 60) or start.second or start.microsecond:
        raise CooptBenchError(f"start must be on a {plan_minutes}-minute boundary, got {start}")
    prices, first_step, steps = region_prices(settings, region, start, days)
    overlay = None
    if chosen.price_signal == "predispatch":
        decisions = -(-steps // chosen.steps_per_decision)
        overlay = predispatch_overlay(load_market_data(settings.market_data.data_dir)[1], region, start, decisions,
                                      chosen)
    fleet = make_coopt_fleet(sites, seed, chosen.storm_share)
    result = simulate_coopt(prices, first_step, steps, market_to_unix_ms(start), fleet, chosen, region=region,
                            seed=seed, signal_overlay=overlay, workers=workers)
    result = CooptResult(modes=result.modes, site_count=result.site_count, steps=result.steps,
                         decisions=result.decisions, start_ms=result.start_ms, price_per_mwh=result.price_per_mwh,
                         physics_s=result.physics_s, elapsed_s=time.perf_counter() - started,
                         total_capacity_kwh=result.total_capacity_kwh)
    print_coopt(out, result, chosen, region=region, start=start, days=days, seed=seed)
    healthy = all(f.reserve_kept_share == 1.0 and f.failed_plans == 0 for f in result.modes)
    return 0 if healthy else 1
