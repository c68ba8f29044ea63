"""The AutoBidder cycle's real bidding path, replayed in-process over historical market data.

One *decision* per 5-minute interval, exactly as the live cycle (``workflows/autobidder.py`` with the
activities of ``activities/cycle.py``) makes it, without Temporal, SQS, gRPC or PostgreSQL:

1. **Timeline** — :func:`algorithms.common.replay_clock.cycle_timeline`: a decision at ``decision_time`` (naive
   AEST) bids for the interval after the one in progress (interval-ending AEST).
2. **Fetch** — :func:`services.market_data.build_snapshot` as of the decision time with the configured
   publication model. While the latest interval is not known the cycle polls every
   ``market_data_poll_s`` until ``market_data_cutoff_s``, then carries the last known prices forward
   (:func:`services.market_data.estimate_missing`); the snapshot's as-of is the market time it was taken.
   The unit's state of charge (MWh) and net output (MW) are those the simulated market left after the
   previous decision's interval (the live market clears an interval when its outcome is recorded).
3. **Forecast** — :func:`algorithms.market.cycle_requests.forecast_request` for every product of the snapshot,
   answered by the handler the worker pools serve for the configured algorithm
   (:func:`algorithms.registry.default_registry`).
4. **Optimise** — :func:`algorithms.market.cycle_requests.optimisation_request` (initial SoC = the unit's,
   terminal = the configured initial SoC, initial net MW = the unit's) and its handler. Where the data has
   DISPATCHREGIONSUM (and ``[market_depth] plan_with_expected_depth``), the request carries the FCAS depth
   the plan expects, estimated from the region's local dispatch the snapshot carries (known at its as-of)
   by the function the live cycle's optimisation activity calls
   (:func:`algorithms.market.depth_plan.snapshot_enablement_caps_mw`); otherwise none, as a price-taker's.
5. **Bid** — :func:`algorithms.market.bid_decision.decide_bid`, the same decision the
   ``build_and_validate_bid`` activity makes (:func:`bid_stage`): the plan's bid, else the safe bid; no
   resubmission without material change from the bid in force (it stands); V1–V8 with the trading day's
   band prices in force (V4). The operator's controls come from ``BacktestConfig.operator_controls``
   (:class:`algorithms.market.operator_controls.ControlTimeline`): a SoC hold raises the battery's
   minimum SoC for the optimiser and the bid; a manual rebid is submitted even without material change
   and is pending until a decision submits it; a paused decision optimises and submits nothing (the bid
   in force stands and is cleared), as a paused live cycle records ``PAUSED`` before fetching.
6. **Clear** — the newest accepted bid covering the dispatch interval is cleared by
   :func:`algorithms.market.clearing.clear_interval` against the market's prices of that interval (by default
   the historical DISPATCHPRICE with administered pricing re-applied, as the simulated market settles:
   :func:`market_prices`); no bid or no energy price: 0 MW, $0, SoC unchanged. SoC and net MW carry over.

Decision ``k`` is at ``first_decision + 5 min * k``, so the decisions bid consecutive intervals: the
interval in progress at each decision was cleared by the previous one. **Gaps in the data**: a decision is
made only where its dispatch interval has a price and its history window holds at least one
(:func:`decision_times_with_data`); the others are skipped (counted in ``intervals_without_data``), the
unit idles through them, and history across a gap is MISSING in the snapshot. A product whose market has
no price known as of a decision (:func:`algorithms.market.cycle_requests.forecastable_products`) is not
forecast or planned, and the bid offers nothing in it. A decision whose forecast or
optimisation request is rejected as invalid fails like a live cycle would (recorded with the reason);
its interval is cleared from the bid in force.

The loop is deterministic: the same settings, data and configuration give equal results (durations are
measured for profiling but excluded from equality), whatever the number of worker processes.

**Pipeline.** A decision's snapshot and forecasts depend neither on the unit's state nor on earlier
decisions, so with ``workers > 1`` :func:`run_backtest` prepares them (fetch + forecast) ahead on a pool of
``workers`` processes, a few chunks of consecutive decision times at a time, while this process consumes
them in decision order and runs optimise → bid → clear, which are sequential because SoC, net MW and the
bid in force carry over. Workers are forked where the platform can (they share the loaded data) and run
BLAS on one thread; so does this process during a backtest (the forecaster's small least-squares fits
only lose to BLAS threads, and one thread everywhere keeps results identical whatever the worker count).
Regions are independent: :func:`run_backtests` runs several regions at once and splits the workers
between them (see there).

**Forecast source.** ``BacktestConfig.forecast_source="model"`` (default) forecasts with the configured
algorithm, as the live cycle does. ``"actual"`` is perfect information: every product's forecast is the
market's own price of each interval of the horizon (:func:`market_prices`, the prices the decision's
interval clears at), the same at every quantile level, and goes through the same optimiser and bid path.
Revenue under ``"actual"`` minus revenue under ``"model"`` is the value of perfect price information for
the same strategy (still below :func:`perfect_foresight_revenue`: rolling horizon, bid bands, rebid
materiality and clearing are unchanged). Intervals of the horizon past the end of the data (or without a
price) take the last price known before them.

**Forecast skill.** Every decision records its ENERGY forecast at the leads of
:data:`FORECAST_SKILL_LEADS` the horizon covers (``DecisionRecord.energy_forecast_by_lead``; the levels
are ``BacktestResult.forecast_quantiles``, the leads ``BacktestResult.forecast_leads``): lead ``L``
forecasts the interval ending ``dispatch_interval + (L - 1) × 5 min``, lead 1 being the dispatch interval.

:func:`perfect_foresight_revenue` is the benchmark of shared/NEM.md over the same intervals.
Not modelled, as in the simulated market: our own effect on prices, network constraints, causer-pays.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from multiprocessing.context import BaseContext
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from algorithms.common.battery import battery_from_spec, battery_spec_from_settings
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import from_timestamp, hours_per_interval, to_timestamp, trading_day, unix_ms_to_market
from algorithms.common.products import ENERGY, fcas_products_of
from algorithms.common.replay_clock import CycleTimeline, cycle_timeline
from algorithms.market.as_of import (
    DEFAULT_HISTORY_INTERVALS,
    PublicationModel,
    build_snapshot,
    estimate_missing,
    latest_known,
    publication_model,
)
from algorithms.market.bid_columns import ColumnarBid, as_columnar
from algorithms.market.bid_decision import BidDecision, StandingBid, decide_bid
from algorithms.market.clearing import clear_interval, fcas_offers, with_administered_pricing
from algorithms.market.cycle_requests import forecast_request, forecastable_products, optimisation_request
from algorithms.market.daily_bid import DailyBidsInForce
from algorithms.market.depth import (
    caps_by_product,
    caps_cover,
    end_of_run_adjustment_dollars,
    interval_caps_mw,
)
from algorithms.market.depth_plan import depth_policy, snapshot_enablement_caps_mw
from algorithms.market.forecast import PriceForecast, forecast_from_result, quantile_at
from algorithms.market.operator_controls import (
    ControlTimeline,
    EffectiveControls,
    battery_with_soc_floor,
    controls_at,
)
from algorithms.market.optimise import (
    PERFECT_FORESIGHT_MIP_REL_GAP,
    PERFECT_FORESIGHT_TIME_LIMIT_S,
    DispatchPlan,
    perfect_foresight,
    solve_dispatch,
)
from algorithms.market.prices import DispatchPrices, P5minPrices, PredispatchPrices
from algorithms.registry import Handler, default_registry
from archive import archive_key
from models.bids import BandPriceKey, band_prices_of
from pools.blas import single_threaded_blas
from pools.timing import call_timed
from services.bid_service import bid_id_for
from settings import Settings
from vpp.v1 import bid_pb2, common_pb2, market_data_pb2, worker_pb2

# The forecast level reported per decision (the median).
REPORTED_FORECAST_LEVEL = 0.5
# Worker processes by default: every core.
DEFAULT_WORKERS = os.cpu_count() or 1
# Leads (5-minute intervals; 1 = the dispatch interval) at which each decision's ENERGY forecast is kept.
FORECAST_SKILL_LEADS = (1, 3, 6, 12, 24, 48, 96, 192, 288)
# Decision times per chunk a worker prepares (fewer when the period is short, so every worker gets some).
MAX_CHUNK_DECISIONS = 12
# Chunks each worker may have prepared or be preparing ahead of the decision being made.
CHUNKS_AHEAD_PER_WORKER = 2
# The algorithm named on perfect-information ("actual") forecasts.
ACTUAL_PRICES_ALGORITHM = common_pb2.AlgorithmRef(name="actual-prices", version="1")

FloatArray = npt.NDArray[np.float64]
ForecastSource = Literal["model", "actual"]
FORECAST_SOURCES: tuple[str, ...] = get_args(ForecastSource)

Progress = Callable[[int, int], None]


class BacktestError(ValueError):
    """A backtest that cannot run as configured (region, period or overrides); the message says why."""


# --------------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestConfig:
    """One region's backtest: ``decisions`` decisions, 5 minutes apart from ``first_decision``.

    ``first_decision`` is a naive AEST market time and includes the schedule offset (e.g. 04:00:30 for
    the live schedule firing 30 s after each interval boundary). Every ``None`` override takes the value
    of ``settings.cycle``: ``history_intervals`` and ``horizon_intervals`` (5-minute intervals),
    ``forecast_quantiles`` (levels in (0, 1)), ``optimiser_price_quantile``, ``optimiser_price_tail_weight``
    ([0, 0.5)), ``degradation_cost_per_mwh``
    and ``terminal_value_per_mwh`` ($/MWh), ``optimiser_time_limit_s`` (seconds).
    ``bid_version`` is the version every bid carries, as the cycle's configuration sets it.
    ``forecast_source``: ``"model"`` forecasts with the configured algorithm; ``"actual"`` uses the
    market's actual prices of the horizon as every quantile (perfect information, see the module docstring).
    ``operator_controls``: the operator's SoC holds, pauses and manual rebids over the period (market
    time; default none), honoured by every decision as the live cycle honours ``vpp ops``.
    """

    region: str
    first_decision: datetime
    decisions: int
    history_intervals: int | None = None
    horizon_intervals: int | None = None
    forecast_quantiles: tuple[float, ...] | None = None
    optimiser_price_quantile: float | None = None
    optimiser_price_tail_weight: float | None = None
    degradation_cost_per_mwh: float | None = None
    terminal_value_per_mwh: float | None = None
    optimiser_time_limit_s: float | None = None
    bid_version: int = 1
    forecast_source: ForecastSource = "model"
    operator_controls: ControlTimeline = field(default_factory=ControlTimeline)

    def __post_init__(self) -> None:
        if not self.region:
            raise BacktestError("region is empty")
        if self.first_decision.tzinfo is not None:
            raise BacktestError(f"first_decision must be a naive AEST market time, got {self.first_decision}")
        if self.decisions < 1:
            raise BacktestError(f"decisions must be at least 1, got {self.decisions}")
        for label, count in (("history_intervals", self.history_intervals),
                             ("horizon_intervals", self.horizon_intervals)):
            if count is not None and count < 1:
                raise BacktestError(f"{label} must be at least 1 when given, got {count}")
        if self.forecast_quantiles is not None:
            object.__setattr__(self, "forecast_quantiles", tuple(float(q) for q in self.forecast_quantiles))
        if self.optimiser_time_limit_s is not None and not self.optimiser_time_limit_s > 0:
            raise BacktestError(f"optimiser_time_limit_s must be positive, got {self.optimiser_time_limit_s}")
        if self.bid_version < 1:
            raise BacktestError(f"bid_version must be at least 1, got {self.bid_version}")
        if self.forecast_source not in FORECAST_SOURCES:
            raise BacktestError(f"forecast_source must be one of {', '.join(FORECAST_SOURCES)}, "
                                f"got {self.forecast_source!r}")

    def decision_times(self) -> list[datetime]:
        """Every decision time (naive AEST), 5 minutes apart."""
        step = timedelta(minutes=5)
        return [self.first_decision + step * k for k in range(self.decisions)]


@dataclass(frozen=True)
class DecisionRecord:
    """One decision and what the market made of its interval (MW, MWh, $, $/MWh; times naive AEST).

    ``as_of`` is the market time of the snapshot the decision used (its decision time unless it waited
    for late data) and ``data_known_at`` the latest publication time of anything in that snapshot
    (history or pre-dispatch; None when it holds nothing). ``safe_fallback``: the decision fell back to the
    safe bid (unusable plan, or the plan's bid rejected), whether that bid was submitted, stood or was
    itself rejected — the one definition of :mod:`algorithms.market.bid_decision`; ``rebid``: a new bid
    was accepted (False: the bid in force stood, bidding was paused, or none passed validation);
    ``bid_in_force``: some accepted bid covered the interval. ``paused``, ``soc_floor_fraction`` and
    ``manual_rebid_reason`` are the operator's controls the decision honoured.
    ``violations`` are the rejected bids' rule violations; ``failure`` why the decision failed (None if it
    did not). ``forecast_energy_p50`` is the median ENERGY forecast for the dispatch interval ($/MWh).
    ``energy_forecast_by_lead[i]`` is the ENERGY forecast ($/MWh) at lead ``BacktestResult.forecast_leads[i]``
    (interval ``dispatch_interval + (lead - 1) × 5 min``), one price per level of
    ``BacktestResult.forecast_quantiles``; finite; empty when the decision has no usable ENERGY forecast.
    Durations (milliseconds) are for profiling and do not take part in equality; ``wait_ms`` is the time
    the decision waited for a worker to prepare its snapshot and forecasts (0 in-process).
    """

    decision_time: datetime
    dispatch_interval: datetime
    as_of: datetime
    latest_quality: str
    data_known_at: datetime | None
    plan_status: str
    safe_fallback: bool
    rebid: bool
    bid_in_force: bool
    violations: tuple[str, ...]
    failure: str | None
    forecast_energy_p50: float | None
    rrp: float
    gen_mw: float
    load_mw: float
    fcas_enabled_mw: float
    fcas_enabled_by_product_mw: dict[str, float]
    energy_revenue_dollars: float
    fcas_revenue_dollars: float
    fcas_revenue_by_product_dollars: dict[str, float]
    state_of_charge_mwh: float
    snapshot_ms: float = field(default=0.0, compare=False)
    forecast_ms: float = field(default=0.0, compare=False)
    forecast_ms_by_product: dict[str, float] = field(default_factory=dict, compare=False)
    optimise_ms: float = field(default=0.0, compare=False)
    solve_ms: float = field(default=0.0, compare=False)
    bid_ms: float = field(default=0.0, compare=False)
    clear_ms: float = field(default=0.0, compare=False)
    energy_forecast_by_lead: tuple[tuple[float, ...], ...] = ()
    wait_ms: float = field(default=0.0, compare=False)
    paused: bool = False
    soc_floor_fraction: float | None = None
    manual_rebid_reason: str | None = None
    # Market depth (None where the data has no cap for some FCAS product of the interval): FCAS enabled (MW)
    # and revenue ($) by product with each service capped at the region's enablement × the configured share.
    depth_fcas_enabled_by_product_mw: dict[str, float] | None = None
    depth_fcas_revenue_by_product_dollars: dict[str, float] | None = None
    # What the bid in force offered of each FCAS service (MW: MAXAVAIL, and the part of it priced at or below the
    # interval's price; None without a bid in force) and the depth the plan expected for the interval (MW, the
    # first lead of its expected caps; None: planned as a price-taker). Read by :mod:`backtest.fcas_gap`.
    fcas_offered_by_product_mw: dict[str, float] | None = field(default=None, compare=False)
    fcas_offered_at_price_by_product_mw: dict[str, float] | None = field(default=None, compare=False)
    expected_cap_by_product_mw: dict[str, float] | None = field(default=None, compare=False)

    @property
    def net_mw(self) -> float:
        """Net output (MW): gen − load."""
        return self.gen_mw - self.load_mw

    @property
    def depth_fcas_revenue_dollars(self) -> float | None:
        """Depth-limited FCAS revenue of the interval ($), None where the data has no depth."""
        if self.depth_fcas_revenue_by_product_dollars is None:
            return None
        return math.fsum(self.depth_fcas_revenue_by_product_dollars.values())

    @property
    def total_revenue_dollars(self) -> float:
        """Energy + FCAS revenue of the interval ($)."""
        return self.energy_revenue_dollars + self.fcas_revenue_dollars


@dataclass(frozen=True)
class BacktestResult:
    """A region's backtest: every decision's record and the totals ($, MWh, counts).

    ``throughput_mwh`` is the energy through the connection point, Σ (gen + load) × h; ``cycles`` the
    equivalent full cycles, discharged MWh Σ gen × h over the registered storage (MWh).
    ``validation_rejections`` counts rejected bids (plan and safe), ``safe_fallbacks`` decisions that
    fell back to the safe bid (``DecisionRecord.safe_fallback``), ``failed_decisions`` decisions that made
    no bid because a request was invalid.
    ``forecast_quantiles`` are the forecast levels and ``forecast_leads`` the leads (5-minute intervals) of
    every record's ``energy_forecast_by_lead``. ``intervals_without_data`` counts the period's dispatch
    intervals no decision was made for because the data has none (see :func:`decision_times_with_data`).
    ``wall_time_s`` (seconds) and ``workers`` (the processes that prepared snapshots and forecasts;
    1 = in-process) do not take part in equality.
    """

    config: BacktestConfig
    fcas_products: tuple[str, ...]
    records: tuple[DecisionRecord, ...]
    initial_state_of_charge_mwh: float
    energy_revenue_dollars: float
    fcas_revenue_dollars: float
    fcas_revenue_by_product_dollars: dict[str, float]
    throughput_mwh: float
    cycles: float
    validation_rejections: int
    safe_fallbacks: int
    rebids: int
    failed_decisions: int
    wall_time_s: float = field(default=0.0, compare=False)
    forecast_quantiles: tuple[float, ...] = ()
    forecast_leads: tuple[int, ...] = ()
    workers: int = field(default=1, compare=False)
    intervals_without_data: int = 0
    # Depth-limited FCAS revenue by product ($); None ("price-taker only") unless every decision's interval
    # has the region's enablement of every FCAS product (DISPATCHREGIONSUM).
    depth_fcas_revenue_by_product_dollars: dict[str, float] | None = None

    @property
    def depth_fcas_revenue_dollars(self) -> float | None:
        """Depth-limited FCAS revenue ($), None when the data has no depth for the whole run."""
        if self.depth_fcas_revenue_by_product_dollars is None:
            return None
        return math.fsum(self.depth_fcas_revenue_by_product_dollars.values())

    @property
    def depth_total_revenue_dollars(self) -> float | None:
        """Energy + depth-limited FCAS revenue ($; energy is price-taking either way), or None."""
        depth = self.depth_fcas_revenue_dollars
        return None if depth is None else self.energy_revenue_dollars + depth

    @property
    def mean_energy_price_per_mwh(self) -> float:
        """Mean ENERGY price ($/MWh) of the intervals decided (the price the end-of-run shortfall is valued at)."""
        prices = np.array([record.rrp for record in self.records], dtype=np.float64)
        prices = prices[np.isfinite(prices)]
        return float(prices.mean()) if len(prices) else 0.0

    @property
    def region(self) -> str:
        """The region backtested."""
        return self.config.region

    @property
    def total_revenue_dollars(self) -> float:
        """Energy + FCAS revenue ($)."""
        return self.energy_revenue_dollars + self.fcas_revenue_dollars

    @property
    def first_interval(self) -> datetime:
        """The first dispatch interval cleared (interval-ending AEST)."""
        return self.records[0].dispatch_interval

    @property
    def final_state_of_charge_mwh(self) -> float:
        """Stored energy after the last interval (MWh)."""
        return self.records[-1].state_of_charge_mwh

    @property
    def decisions_per_second(self) -> float:
        """Decisions replayed per second of wall time (0 when not measured)."""
        return len(self.records) / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def stage_seconds(self) -> dict[str, float]:
        """Seconds spent per stage over every decision (snapshot, forecast per product, optimise, of which
        LP build + solve, bid, clear, and waiting for workers), for profiling. With workers, snapshot and
        forecast seconds are spent in the workers, alongside the other stages; the wall time is about
        optimise + bid + clear + wait."""
        totals = {
            "wait for workers": sum(r.wait_ms for r in self.records),
            "snapshot": sum(r.snapshot_ms for r in self.records),
            "forecast": sum(r.forecast_ms for r in self.records),
            "optimise": sum(r.optimise_ms for r in self.records),
            "optimise: LP build + solve": sum(r.solve_ms for r in self.records),
            "bid": sum(r.bid_ms for r in self.records),
            "clear": sum(r.clear_ms for r in self.records),
        }
        for product in {p for r in self.records for p in r.forecast_ms_by_product}:
            totals[f"forecast: {product}"] = sum(r.forecast_ms_by_product.get(product, 0.0)
                                                 for r in self.records)
        return {stage: ms / 1000.0 for stage, ms in totals.items()}


# --------------------------------------------------------------------------------------------------
# The cycle's parameters and the simulated unit
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CycleParameters:
    """The cycle configuration after the backtest's overrides."""

    history_intervals: int
    horizon_intervals: int
    forecast_quantiles: tuple[float, ...]
    optimiser_price_quantile: float
    optimiser_price_tail_weight: float
    degradation_cost_per_mwh: float
    terminal_value_per_mwh: float
    optimiser_time_limit_s: float
    forecast_algorithm: common_pb2.AlgorithmRef
    optimiser_algorithm: common_pb2.AlgorithmRef
    optimiser_uncertainty_weight: float | None = None


def _parameters(settings: Settings, config: BacktestConfig) -> _CycleParameters:
    cycle = settings.cycle

    def pick(override: Any, default: Any) -> Any:
        return default if override is None else override

    return _CycleParameters(
        history_intervals=pick(config.history_intervals, cycle.history_intervals),
        horizon_intervals=pick(config.horizon_intervals, cycle.horizon_intervals),
        forecast_quantiles=tuple(pick(config.forecast_quantiles, cycle.forecast_quantiles)),
        optimiser_price_quantile=pick(config.optimiser_price_quantile, cycle.optimiser_price_quantile),
        optimiser_price_tail_weight=pick(config.optimiser_price_tail_weight, cycle.optimiser_price_tail_weight),
        degradation_cost_per_mwh=pick(config.degradation_cost_per_mwh, cycle.degradation_cost_per_mwh),
        terminal_value_per_mwh=pick(config.terminal_value_per_mwh, cycle.terminal_value_per_mwh),
        optimiser_time_limit_s=pick(config.optimiser_time_limit_s, cycle.optimiser_time_limit_s),
        forecast_algorithm=common_pb2.AlgorithmRef(name=cycle.forecast_algorithm,
                                                   version=cycle.forecast_algorithm_version),
        optimiser_algorithm=common_pb2.AlgorithmRef(name=cycle.optimiser_algorithm,
                                                    version=cycle.optimiser_algorithm_version),
        optimiser_uncertainty_weight=cycle.optimiser_uncertainty_weight,
    )


def _battery_spec(settings: Settings, region: str) -> common_pb2.BatterySpec:
    """The configured battery, placed in ``region``."""
    return battery_spec_from_settings(replace(settings.battery, region=region))


def market_prices(settings: Settings, dispatch: DispatchPrices) -> DispatchPrices:
    """The prices the simulated market settles at: DISPATCHPRICE ($/MWh, $/MW/h) with administered
    pricing re-applied to ENERGY under the configured cumulative price thresholds."""
    return with_administered_pricing(dispatch, settings.market)


@dataclass
class BidBook:
    """The simulated market's accepted bids as far as clearing, the bid decision and V4 need them.

    Every accepted bid starts at its decision's dispatch interval and runs to the end of that trading day
    (or of its plan), so the newest accepted bid is the only one that can be in force: an older bid never
    covers an interval the newest does not. Covered intervals are kept as the sorted UTC seconds of the
    period offers' timestamps (any product), as the market's ``covered_intervals`` reads them, taken from
    the bid's columns (:mod:`algorithms.market.bid_columns`); the bid's id is the market's
    (:func:`services.bid_service.bid_id_for`).
    """

    newest: StandingBid | None = None
    newest_seconds: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    daily_prices: dict[date, dict[BandPriceKey, tuple[float, ...]]] = field(default_factory=dict)
    daily_bids: dict[date, StandingBid] = field(default_factory=dict)

    def covering(self, dispatch_interval: datetime) -> StandingBid | None:
        """The bid in force for the interval ending ``dispatch_interval`` (AEST), or None: the newest accepted
        rebid when it covers the interval, else the accepted DAILY bid of the interval's trading day."""
        seconds = to_timestamp(dispatch_interval).seconds
        position = int(np.searchsorted(self.newest_seconds, seconds))
        if position < self.newest_seconds.size and int(self.newest_seconds[position]) == seconds:
            return self.newest
        return self.daily_bids.get(trading_day(dispatch_interval))

    def band_prices_in_force(self, day: date) -> dict[BandPriceKey, tuple[float, ...]] | None:
        """Band prices in force on trading day ``day`` (rule V4): its DAILY bid's, else its first accepted
        bid's, or None."""
        daily = self.daily_bids.get(day)
        return band_prices_of(daily.bid) if daily is not None else self.daily_prices.get(day)

    def daily_bids_in_force(self, dispatch_interval: datetime) -> DailyBidsInForce:
        """The DAILY bids the bid decision needs for the interval ending ``dispatch_interval`` (AEST)."""
        daily = self.daily_bids.get(trading_day(dispatch_interval))
        return DailyBidsInForce(day_prices=band_prices_of(daily.bid) if daily is not None else None,
                                days_with_daily_bid=frozenset(self.daily_bids))

    def accept_daily(self, bid: bid_pb2.Bid, band_count: int | None = None) -> None:
        """Record the DAILY ``bid`` (for the trading day it names) as accepted: in force for that day's
        intervals until a rebid covers them. With ``band_count`` (bands a period) its columns are read once,
        so rebid checks against it compare columns."""
        day = date.fromisoformat(bid.trading_day)
        first = from_timestamp(bid.dispatch_interval)
        columns = ColumnarBid.of(bid, band_count) if band_count is not None else None
        self.daily_bids[day] = StandingBid(bid_id_for(bid.unit_id, day, first, bid.version), bid, columns)

    def accept(self, bid: bid_pb2.Bid | ColumnarBid, dispatch_interval: datetime, band_count: int) -> None:
        """Record ``bid`` (first interval ``dispatch_interval``, AEST; its columns are read when it comes
        without, ``band_count`` bands a period) as accepted."""
        day = trading_day(dispatch_interval)
        columns = as_columnar(bid, band_count)
        bid = columns.bid
        self.newest = StandingBid(bid_id_for(bid.unit_id, day, dispatch_interval, bid.version), bid, columns)
        self.newest_seconds = columns.interval_seconds()
        self.daily_prices.setdefault(day, band_prices_of(bid))
        for stale in [d for d in self.daily_prices if d < day]:
            del self.daily_prices[stale]
        for stale in [d for d in self.daily_bids if d < day]:
            del self.daily_bids[stale]


def bid_stage(book: BidBook, plan: worker_pb2.OptimisationResult | None, settings: Settings, *,
              battery: common_pb2.BatterySpec, products: Sequence[str], controls: EffectiveControls,
              dispatch_interval: datetime, offer_time: datetime, version: int,
              initial_state_of_charge_mwh: float) -> BidDecision:
    """The backtest's bid stage: :func:`algorithms.market.bid_decision.decide_bid` against the bid in force
    and the trading day's band prices and DAILY bids ``book`` holds (as the live activity reads them from
    PostgreSQL); a bid submitted is accepted into ``book``, then a DAILY bid decided for the next trading day.
    Units and times as :func:`decide_bid`'s."""
    decision = decide_bid(
        plan, standing_bid=book.covering(dispatch_interval), controls=controls, battery=battery,
        bidding=settings.bidding, rules=settings.market, products=products,
        daily_band_prices=book.band_prices_in_force(trading_day(dispatch_interval)),
        dispatch_interval=dispatch_interval, offer_time=offer_time, version=version,
        initial_state_of_charge_mwh=initial_state_of_charge_mwh,
        plan_hash=archive_key(plan).removeprefix("sha256:") if plan is not None else "",
        daily_bids=book.daily_bids_in_force(dispatch_interval))
    if decision.bid is not None:
        book.accept(decision.columns if decision.columns is not None else decision.bid, dispatch_interval,
                    settings.market.band_count)
    if decision.daily_bid is not None:
        book.accept_daily(decision.daily_bid, settings.market.band_count)
    return decision


@dataclass(frozen=True)
class _Cleared:
    """The market's outcome of one interval for the unit (MW, $, MWh)."""

    rrp: float
    gen_mw: float
    load_mw: float
    fcas_enabled_mw: dict[str, float]
    energy_revenue_dollars: float
    fcas_revenue_by_product_dollars: dict[str, float]
    state_of_charge_mwh: float
    # Market depth (None: the data has no cap for some FCAS product of this interval): the same clearing
    # with each service's enablement capped (MW), and its FCAS revenue by product ($).
    depth_fcas_enabled_mw: dict[str, float] | None = None
    depth_fcas_revenue_by_product_dollars: dict[str, float] | None = None


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _max_known_at(snapshot: market_data_pb2.MarketSnapshot) -> datetime | None:
    """Latest publication time (AEST) of anything the snapshot carries; None when it carries nothing."""
    latest = 0
    for history in snapshot.history:
        if len(history.known_at_unix_ms):
            latest = max(latest, int(np.max(np.asarray(history.known_at_unix_ms, dtype=np.int64))))
    for run in snapshot.predispatch:
        latest = max(latest, int(run.known_at_unix_ms))
    return unix_ms_to_market(latest) if latest > 0 else None


def _cycle_id(config: BacktestConfig, dispatch_interval: datetime) -> str:
    return f"backtest-{config.region}-{dispatch_interval:%Y%m%dT%H%M}"


def _timeline(settings: Settings, decision_time: datetime) -> CycleTimeline:
    cycle = settings.cycle
    return cycle_timeline(decision_time, market_data_cutoff_s=cycle.market_data_cutoff_s,
                          gate_closure_margin_s=cycle.gate_closure_margin_s)


def _forecast_leads(horizon_intervals: int) -> tuple[int, ...]:
    """The leads of :data:`FORECAST_SKILL_LEADS` a horizon of ``horizon_intervals`` intervals covers."""
    return tuple(lead for lead in FORECAST_SKILL_LEADS if lead <= horizon_intervals)


def _energy_by_lead(forecast: PriceForecast, leads: Sequence[int],
                    levels: Sequence[float]) -> tuple[tuple[float, ...], ...]:
    """The forecast's prices ($/MWh) at ``leads`` (1 = its first interval) and quantile ``levels``; empty
    when it was made at other levels, does not reach every lead, or is not finite there."""
    if not np.array_equal(forecast.quantiles, np.asarray(levels, dtype=np.float64)):
        return ()
    if leads and leads[-1] > forecast.horizon_intervals:
        return ()
    rows = forecast.price[[lead - 1 for lead in leads]]
    if not bool(np.isfinite(rows).all()):
        return ()
    return tuple(tuple(float(price) for price in row) for row in rows)


def _forward_filled(prices: FloatArray) -> FloatArray:
    """``prices`` (intervals × products) with every NaN replaced by the last finite price above it (NaN
    when there is none)."""
    rows = np.arange(prices.shape[0])[:, None]
    last_finite = np.maximum.accumulate(np.where(np.isfinite(prices), rows, -1), axis=0)
    filled = np.take_along_axis(prices, np.maximum(last_finite, 0), axis=0)
    filled[last_finite < 0] = np.nan
    return filled


class _ActualPrices:
    """The prices one region's market settled at ($/MWh, $/MW/h), each interval's or else the last known."""

    def __init__(self, market: DispatchPrices, region: str, interval_minutes: int) -> None:
        self._intervals = market.intervals
        self._products = market.products
        self._filled = _forward_filled(np.asarray(market.price[market.region_index(region)], dtype=np.float64))
        self._step = np.timedelta64(interval_minutes * 60, "s")

    def path(self, product: str, first_interval: datetime, count: int) -> FloatArray:
        """Prices of ``count`` consecutive intervals from the one ending ``first_interval`` (AEST): each
        interval's own, or the last known before it when the data has none (past its end).

        Raises InvalidRequestError when ``product`` is not in the data or no price precedes an interval.
        """
        if product not in self._products:
            raise InvalidRequestError(f"no actual prices for product {product!r}")
        wanted = np.datetime64(first_interval, "s") + self._step * np.arange(count)
        position = np.searchsorted(self._intervals, wanted, side="right") - 1
        path = self._filled[np.maximum(position, 0), self._products.index(product)]
        if bool((position < 0).any()) or not bool(np.isfinite(path).all()):
            raise InvalidRequestError(f"no actual {product} price at or before some interval of the "
                                      f"{count} from {first_interval:%Y-%m-%d %H:%M}")
        return np.asarray(path, dtype=np.float64)


@dataclass(frozen=True)
class _Prepared:
    """What a decision needs that does not depend on the unit's state: the snapshot's facts and the
    forecasts (or why they could not be made), with their timings (ms). ``snapshot`` only when asked for."""

    decision_time: datetime
    as_of: datetime
    latest_quality: str
    data_known_at: datetime | None
    forecasts: tuple[worker_pb2.ForecastResult, ...]
    failure: str | None
    forecast_energy_p50: float | None
    energy_forecast_by_lead: tuple[tuple[float, ...], ...]
    snapshot_ms: float
    forecast_ms_by_product: dict[str, float]
    snapshot: market_data_pb2.MarketSnapshot | None
    # The FCAS depth the plan expects (MW per interval of the horizon, by FCAS product), from the snapshot's
    # local dispatch (:func:`expected_caps`); None: not asked for, or the data has no DISPATCHREGIONSUM.
    expected_caps: dict[str, FloatArray] | None = None


def expected_caps(settings: Settings, snapshot: market_data_pb2.MarketSnapshot, first_interval: datetime,
                  horizon_intervals: int) -> dict[str, FloatArray] | None:
    """The FCAS depth (MW per interval of ``horizon_intervals`` from the one ending ``first_interval``, AEST)
    the plan made from ``snapshot`` expects: :func:`algorithms.market.depth_plan.snapshot_enablement_caps_mw`
    from the snapshot's local dispatch known at its as-of, as the live cycle's optimisation activity asks it;
    None when not asked for (``[market_depth] plan_with_expected_depth``) or without DISPATCHREGIONSUM."""
    depth = settings.market_depth
    return snapshot_enablement_caps_mw(snapshot, first_interval, horizon_intervals, depth.fcas_enablement_share,
                                       depth_policy(depth.plan_with_expected_depth, depth.planning_cap_factor,
                                                    settings.market.interval_minutes))


class _Preparer:
    """The fetch and forecast stages of one region's cycle: pure functions of the decision time."""

    def __init__(self, settings: Settings, dispatch: DispatchPrices, predispatch: PredispatchPrices,
                 market: DispatchPrices, config: BacktestConfig, p5min: P5minPrices | None = None) -> None:
        self._settings = settings
        self._dispatch = dispatch
        self._predispatch = predispatch
        self._p5min = p5min
        self._config = config
        self._parameters = _parameters(settings, config)
        self._publication: PublicationModel = publication_model(settings.market_data)
        self._leads = _forecast_leads(self._parameters.horizon_intervals)
        self._actual = (_ActualPrices(market, config.region, settings.market.interval_minutes)
                        if config.forecast_source == "actual" else None)
        self._forecaster: Handler = default_registry().resolve(
            "forecast", self._parameters.forecast_algorithm.name, self._parameters.forecast_algorithm.version)

    def prepare(self, decision_time: datetime, keep_snapshot: bool) -> _Prepared:
        """Snapshot and forecasts of the decision at ``decision_time`` (AEST); an invalid forecast request
        is recorded as the decision's failure, as the live cycle fails."""
        timeline = _timeline(self._settings, decision_time)
        interval = timeline.dispatch_interval
        started = time.perf_counter()
        as_of, snapshot = self.fetch(timeline)
        snapshot_ms = _elapsed_ms(started)
        timings: dict[str, float] = {}
        forecasts: list[worker_pb2.ForecastResult] = []
        failure: str | None = None
        try:
            forecasts = self.forecast(snapshot, _cycle_id(self._config, interval), as_of, interval, timings)
        except InvalidRequestError as error:
            failure = str(error)
        p50, by_lead = self._energy_summary(forecasts)
        return _Prepared(
            decision_time=decision_time, as_of=as_of,
            latest_quality=common_pb2.DataQuality.Name(snapshot.latest_quality).removeprefix("DATA_QUALITY_"),
            data_known_at=_max_known_at(snapshot), forecasts=tuple(forecasts), failure=failure,
            forecast_energy_p50=p50, energy_forecast_by_lead=by_lead, snapshot_ms=snapshot_ms,
            forecast_ms_by_product=timings, snapshot=snapshot if keep_snapshot else None,
            expected_caps=expected_caps(self._settings, snapshot, interval, self._parameters.horizon_intervals))

    def fetch(self, timeline: CycleTimeline) -> tuple[datetime, market_data_pb2.MarketSnapshot]:
        """(as-of, snapshot) as the cycle's fetch stage gets it: poll until the cut-off, then estimate."""
        poll = timedelta(seconds=self._settings.cycle.market_data_poll_s)
        as_of = timeline.decision_time
        while True:
            use_estimates = as_of >= timeline.data_cutoff
            snapshot = build_snapshot(self._dispatch, self._predispatch, region=self._config.region,
                                      dispatch_interval=timeline.dispatch_interval, as_of=as_of,
                                      history_intervals=self._parameters.history_intervals,
                                      publication=self._publication, p5min=self._p5min,
                                      history_reach_intervals=self._settings.market_data.history_reach_intervals)
            if use_estimates:
                snapshot = estimate_missing(snapshot)
            if latest_known(snapshot) or use_estimates:
                return as_of, snapshot
            step = poll if poll > timedelta(0) else timeline.data_cutoff - as_of
            as_of = min(as_of + step, timeline.data_cutoff)

    def forecast(self, snapshot: market_data_pb2.MarketSnapshot, cycle_id: str, decision_time: datetime,
                 first_interval: datetime, timings: dict[str, float]) -> list[worker_pb2.ForecastResult]:
        """One forecast per product of the snapshot with something to forecast from
        (:func:`~algorithms.market.cycle_requests.forecastable_products`; the request_forecast activity and
        its worker), or the actual prices under perfect information; ``timings`` gets each product's
        milliseconds."""
        parameters = self._parameters
        results: list[worker_pb2.ForecastResult] = []
        for product in forecastable_products(snapshot):
            started = time.perf_counter()
            request_id = f"{cycle_id}/forecast/{product}"
            if self._actual is not None:
                results.append(self._actual_forecast(product, request_id, first_interval))
                timings[product] = _elapsed_ms(started)
                continue
            request = forecast_request(
                snapshot, product, request_id=request_id, decision_time=decision_time,
                first_interval=first_interval, horizon_intervals=parameters.horizon_intervals,
                quantiles=parameters.forecast_quantiles, algorithm=parameters.forecast_algorithm)
            result = call_timed(self._forecaster, request)
            if not isinstance(result, worker_pb2.ForecastResult):
                raise TypeError(f"the forecast handler answered a {type(result).__name__}, "
                                "not a ForecastResult")
            results.append(result)
            timings[product] = _elapsed_ms(started)
        return results

    def _actual_forecast(self, product: str, request_id: str, first_interval: datetime) -> worker_pb2.ForecastResult:
        """A forecast whose every quantile is the market's actual price of the interval ($/MWh, $/MW/h)."""
        assert self._actual is not None
        parameters = self._parameters
        path = self._actual.path(product, first_interval, parameters.horizon_intervals)
        levels = parameters.forecast_quantiles
        return worker_pb2.ForecastResult(
            request_id=request_id, algorithm=ACTUAL_PRICES_ALGORITHM, product=product,
            first_interval=to_timestamp(first_interval), horizon_intervals=parameters.horizon_intervals,
            quantiles=list(levels), price=np.repeat(path, len(levels)).tolist(),
            status=worker_pb2.RESULT_STATUS_OK)

    def _energy_summary(self, forecasts: Sequence[worker_pb2.ForecastResult],
                        ) -> tuple[float | None, tuple[tuple[float, ...], ...]]:
        """(median for the dispatch interval, prices by lead) of the ENERGY forecast ($/MWh); (None, ())
        without a usable one."""
        energy = next((f for f in forecasts if f.product == ENERGY), None)
        if energy is None:
            return None, ()
        try:
            forecast = forecast_from_result(energy)
            p50 = float(quantile_at(forecast, REPORTED_FORECAST_LEVEL)[0])
        except InvalidRequestError:
            return None, ()
        return p50, _energy_by_lead(forecast, self._leads, self._parameters.forecast_quantiles)


class _RegionReplay:
    """The stages of one region's cycle that depend on the unit's state: optimise, bid and clear, decision
    after decision, with the simulated unit and the bids in force."""

    def __init__(self, settings: Settings, dispatch: DispatchPrices, market: DispatchPrices,
                 config: BacktestConfig) -> None:
        self._settings = settings
        self._market = market
        self._config = config
        self._parameters = _parameters(settings, config)
        self._battery = _battery_spec(settings, config.region)
        self._optimiser: Handler = default_registry().resolve(
            "optimisation", self._parameters.optimiser_algorithm.name,
            self._parameters.optimiser_algorithm.version)
        self._products = tuple(dispatch.products)
        self._fcas_products = fcas_products_of(self._products)
        self._book = BidBook()
        self.state_of_charge_mwh = settings.battery.initial_state_of_charge_mwh
        self.net_mw = 0.0
        # Decision time that last submitted a manual rebid: rebids asked up to then have been served.
        self._manual_rebid_submitted: datetime | None = None

    @property
    def fcas_products(self) -> tuple[str, ...]:
        """FCAS products of the data, in data order."""
        return self._fcas_products

    def dispatch_intervals(self) -> list[datetime]:
        """The dispatch interval of every decision (interval-ending AEST)."""
        return [_timeline(self._settings, moment).dispatch_interval for moment in self._config.decision_times()]

    # -- stages --------------------------------------------------------------------------------

    def optimise(self, forecasts: Sequence[worker_pb2.ForecastResult], cycle_id: str,
                 first_interval: datetime, soc_floor_fraction: float | None = None,
                 caps: Mapping[str, FloatArray] | None = None) -> worker_pb2.OptimisationResult:
        """The plan (the request_optimisation activity and its worker), for the battery with the operator's
        SoC floor (fraction of capacity) when one is held, expecting the FCAS depth ``caps`` (MW per interval
        of the horizon, by FCAS product: :func:`expected_caps`; None: a price-taker's plan)."""
        parameters = self._parameters
        request = optimisation_request(
            forecasts, battery_with_soc_floor(self._battery, soc_floor_fraction), request_id=f"{cycle_id}/optimisation",
            first_interval=first_interval,
            horizon_intervals=parameters.horizon_intervals, state_of_charge_mwh=self.state_of_charge_mwh,
            terminal_state_of_charge_mwh=self._settings.battery.initial_state_of_charge_mwh,
            price_quantile=parameters.optimiser_price_quantile,
            degradation_cost_per_mwh=parameters.degradation_cost_per_mwh,
            time_limit_s=parameters.optimiser_time_limit_s, initial_net_mw=self.net_mw,
            terminal_value_per_mwh=parameters.terminal_value_per_mwh,
            price_tail_weight=parameters.optimiser_price_tail_weight,
            algorithm=parameters.optimiser_algorithm,
            enablement_cap_mw=caps,
            uncertainty_weight=parameters.optimiser_uncertainty_weight)
        plan = call_timed(self._optimiser, request)
        if not isinstance(plan, worker_pb2.OptimisationResult):
            raise TypeError(f"the optimisation handler answered a {type(plan).__name__}, "
                            "not an OptimisationResult")
        return plan

    def bid(self, plan: worker_pb2.OptimisationResult | None, dispatch_interval: datetime, offer_time: datetime,
            controls: EffectiveControls) -> BidDecision:
        """The build_and_validate_bid activity followed by the market's acceptance (:func:`bid_stage`)."""
        return bid_stage(self._book, plan, self._settings, battery=self._battery, products=self._products,
                         controls=controls, dispatch_interval=dispatch_interval, offer_time=offer_time,
                         version=self._config.bid_version, initial_state_of_charge_mwh=self.state_of_charge_mwh)

    def _depth_caps(self, dispatch_interval: datetime, prices: Mapping[str, float]) -> dict[str, float] | None:
        """The market-depth caps (MW) of every FCAS product priced in ``dispatch_interval`` (``prices``: the
        interval's prices, NaN where a market was not open), or None when the data lacks one
        (:mod:`algorithms.market.depth`). A product the interval has no price for (the 1-second markets before
        October 2023 in a run whose data spans that date) clears nothing and needs no cap."""
        caps = interval_caps_mw(self._market.enabled_at(self._config.region, dispatch_interval),
                                self._settings.market_depth.fcas_enablement_share)
        if caps is None or not all(math.isfinite(caps.get(product, math.nan)) for product in self._fcas_products
                                   if math.isfinite(prices.get(product, math.nan))):
            return None
        return caps

    def clear(self, dispatch_interval: datetime) -> _Cleared:
        """Clear the interval from the bid in force at the market's prices; update the unit's state. Where the
        data has the region's FCAS enablement the interval is also cleared depth-limited (same energy and SoC:
        the caps only touch FCAS, which does not move the SoC in the market model)."""
        rules = self._settings.market
        prices = self._market.prices_at(self._config.region, dispatch_interval)
        rrp = prices.get(ENERGY, math.nan)
        covering = self._book.covering(dispatch_interval)
        caps = self._depth_caps(dispatch_interval, prices)
        if covering is None or not math.isfinite(rrp):
            nothing = dict.fromkeys(self._fcas_products, 0.0)
            cleared = _Cleared(rrp, 0.0, 0.0, dict(nothing), 0.0, dict(nothing), self.state_of_charge_mwh,
                               None if caps is None else dict(nothing), None if caps is None else dict(nothing))
        else:
            clearing = clear_interval(covering.bid, dispatch_interval, prices,
                                      state_of_charge_mwh=self.state_of_charge_mwh,
                                      previous_net_mw=self.net_mw, battery=self._battery,
                                      interval_minutes=rules.interval_minutes)
            depth = None if caps is None else clear_interval(
                covering.bid, dispatch_interval, prices, state_of_charge_mwh=self.state_of_charge_mwh,
                previous_net_mw=self.net_mw, battery=self._battery, interval_minutes=rules.interval_minutes,
                enablement_cap_mw=caps)
            cleared = _Cleared(rrp, clearing.gen_mw, clearing.load_mw, dict(clearing.fcas_enabled_mw),
                               clearing.energy_revenue_dollars,
                               dict(clearing.fcas_revenue_by_product_dollars), clearing.state_of_charge_mwh,
                               None if depth is None else dict(depth.fcas_enabled_mw),
                               None if depth is None else dict(depth.fcas_revenue_by_product_dollars))
        self.state_of_charge_mwh = cleared.state_of_charge_mwh
        self.net_mw = cleared.gen_mw - cleared.load_mw
        return cleared

    # -- one decision ----------------------------------------------------------------------------

    def decide(self, prepared: _Prepared, wait_ms: float = 0.0) -> tuple[DecisionRecord, int]:
        """Make the decision ``prepared`` holds the snapshot and forecasts of (optimise, bid, clear); returns
        its record and its rejected bid count. ``wait_ms`` is how long it waited for them (ms)."""
        interval = _timeline(self._settings, prepared.decision_time).dispatch_interval
        cycle_id = _cycle_id(self._config, interval)
        controls = controls_at(self._config.operator_controls, prepared.decision_time, self._manual_rebid_submitted)
        # A paused unit's cycle reads no market data, so nothing it would have fetched can fail it.
        failure = None if controls.paused else prepared.failure
        plan_status = "NONE"
        optimise_ms = solve_ms = bid_ms = 0.0
        decision: BidDecision | None = None
        if failure is None:
            try:
                plan: worker_pb2.OptimisationResult | None = None
                if not controls.paused:
                    started = time.perf_counter()
                    plan = self.optimise(prepared.forecasts, cycle_id, interval, controls.soc_floor_fraction,
                                         prepared.expected_caps)
                    optimise_ms, solve_ms = _elapsed_ms(started), plan.solve_ms
                    plan_status = worker_pb2.ResultStatus.Name(plan.status).removeprefix("RESULT_STATUS_")
                started = time.perf_counter()
                decision = self.bid(plan, interval, prepared.as_of, controls)
                bid_ms = _elapsed_ms(started)
            except InvalidRequestError as error:
                failure = str(error)
        if decision is not None and decision.rebid and decision.manual_rebid_reason is not None:
            self._manual_rebid_submitted = prepared.decision_time
        started = time.perf_counter()
        covering = self._book.covering(interval)
        bid_in_force = covering is not None
        offers = None if covering is None else fcas_offers(
            covering.bid, interval, self._market.prices_at(self._config.region, interval),
            power_mw=self._battery.power_mw, interval_minutes=self._settings.market.interval_minutes)
        cleared = self.clear(interval)
        clear_ms = _elapsed_ms(started)
        record = DecisionRecord(
            decision_time=prepared.decision_time, dispatch_interval=interval, as_of=prepared.as_of,
            latest_quality=prepared.latest_quality, data_known_at=prepared.data_known_at,
            plan_status=plan_status, safe_fallback=decision is not None and decision.safe_fallback,
            rebid=decision is not None and decision.rebid, bid_in_force=bid_in_force,
            violations=decision.violations if decision is not None else (),
            failure=failure, forecast_energy_p50=prepared.forecast_energy_p50, rrp=cleared.rrp,
            gen_mw=cleared.gen_mw, load_mw=cleared.load_mw,
            fcas_enabled_mw=math.fsum(cleared.fcas_enabled_mw.values()),
            fcas_enabled_by_product_mw=cleared.fcas_enabled_mw,
            energy_revenue_dollars=cleared.energy_revenue_dollars,
            fcas_revenue_dollars=math.fsum(cleared.fcas_revenue_by_product_dollars.values()),
            fcas_revenue_by_product_dollars=cleared.fcas_revenue_by_product_dollars,
            state_of_charge_mwh=cleared.state_of_charge_mwh, snapshot_ms=prepared.snapshot_ms,
            forecast_ms=math.fsum(prepared.forecast_ms_by_product.values()),
            forecast_ms_by_product=dict(prepared.forecast_ms_by_product), optimise_ms=optimise_ms,
            solve_ms=solve_ms, bid_ms=bid_ms, clear_ms=clear_ms,
            energy_forecast_by_lead=prepared.energy_forecast_by_lead, wait_ms=wait_ms, paused=controls.paused,
            soc_floor_fraction=controls.soc_floor_fraction, manual_rebid_reason=controls.manual_rebid_reason,
            depth_fcas_enabled_by_product_mw=cleared.depth_fcas_enabled_mw,
            depth_fcas_revenue_by_product_dollars=cleared.depth_fcas_revenue_by_product_dollars,
            fcas_offered_by_product_mw=(None if offers is None else
                                        {product: offer.max_avail_mw for product, offer in offers.items()}),
            fcas_offered_at_price_by_product_mw=(None if offers is None else
                                                 {product: offer.at_price_mw for product, offer in offers.items()}),
            expected_cap_by_product_mw=(None if prepared.expected_caps is None or plan_status == "NONE" else
                                        {product: float(caps[0]) for product, caps in prepared.expected_caps.items()
                                         if len(caps)}))
        return record, len(decision.rejected) if decision is not None else 0


# --------------------------------------------------------------------------------------------------
# BLAS threads and worker processes
# --------------------------------------------------------------------------------------------------

# OpenBLAS entry points (plain, and as the numpy and scipy wheels rename them).
_BLAS_SET_THREADS = ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "scipy_openblas_set_num_threads64_")
_BLAS_GET_THREADS = ("openblas_get_num_threads", "openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                     "scipy_openblas_get_num_threads64_")


def _loaded_openblas() -> list[tuple[Any, Any]]:
    """(get, set) thread-count functions of every OpenBLAS this process has loaded (Linux; none elsewhere)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        getter = next((getattr(library, name) for name in _BLAS_GET_THREADS if hasattr(library, name)), None)
        setter = next((getattr(library, name) for name in _BLAS_SET_THREADS if hasattr(library, name)), None)
        if getter is not None and setter is not None:
            getter.restype = ctypes.c_int
            found.append((getter, setter))
    return found


@contextlib.contextmanager
def _blas_on_one_thread() -> Iterator[None]:
    """Within the block, every loaded OpenBLAS of this process (and of processes forked in it) computes on
    one thread; the thread counts are restored after. Processes spawned in it start with one BLAS thread."""
    libraries = _loaded_openblas()
    saved = [(setter, int(getter())) for getter, setter in libraries]
    for _, setter in libraries:
        setter(ctypes.c_int(1))
    try:
        with single_threaded_blas():
            yield
    finally:
        for setter, threads in saved:
            setter(ctypes.c_int(threads))


def _process_context() -> BaseContext:
    """How forecast workers start: 'fork' where the platform has it (they share the loaded data and this
    process's BLAS setting, and start at once), else 'spawn'. Forking is safe here: the workers run no LP
    solver, whose threads this process may hold."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


_worker_context: tuple[Settings, DispatchPrices, PredispatchPrices, DispatchPrices] | None = None
_worker_preparers: dict[BacktestConfig, _Preparer] = {}


_worker_p5min: P5minPrices | None = None


def _init_worker(settings: Settings, dispatch: DispatchPrices, predispatch: PredispatchPrices,
                 market: DispatchPrices, p5min: P5minPrices | None = None) -> None:
    global _worker_context, _worker_p5min
    _worker_context = (settings, dispatch, predispatch, market)
    _worker_p5min = p5min
    _worker_preparers.clear()
    for _, setter in _loaded_openblas():
        setter(ctypes.c_int(1))


def _worker_data() -> tuple[Settings, DispatchPrices, PredispatchPrices, DispatchPrices]:
    if _worker_context is None:
        raise RuntimeError("backtest worker used before its initialiser ran")
    return _worker_context


def _worker_prepare(config: BacktestConfig, decision_times: tuple[datetime, ...],
                    keep_snapshots: bool) -> list[_Prepared]:
    """Prepare consecutive decisions of ``config`` in a worker (its preparer is kept for later chunks)."""
    preparer = _worker_preparers.get(config)
    if preparer is None:
        preparer = _worker_preparers[config] = _Preparer(*_worker_data(), config, _worker_p5min)
    return [preparer.prepare(moment, keep_snapshots) for moment in decision_times]


def _chunks(times: Sequence[datetime], workers: int) -> list[tuple[datetime, ...]]:
    """Consecutive runs of decision times for ``workers`` workers: small enough that each gets several
    early on, at most :data:`MAX_CHUNK_DECISIONS`."""
    size = max(1, min(MAX_CHUNK_DECISIONS, len(times) // (workers * 8)))
    return [tuple(times[k:k + size]) for k in range(0, len(times), size)]


def _prepared_decisions(settings: Settings, dispatch: DispatchPrices, predispatch: PredispatchPrices,
                        market: DispatchPrices, config: BacktestConfig, times: Sequence[datetime], workers: int,
                        keep_snapshots: bool, p5min: P5minPrices | None = None
                        ) -> Generator[tuple[_Prepared, float], None, None]:
    """The snapshot and forecasts of the decisions at ``times`` in order, with the milliseconds this process
    waited for each: prepared here when ``workers <= 1`` (or the period is a single chunk), else by
    ``workers`` processes a bounded number of chunks ahead. Closing the iterator cancels the work not started."""
    chunks = _chunks(times, max(workers, 1))
    if workers <= 1 or len(chunks) < 2:
        preparer = _Preparer(settings, dispatch, predispatch, market, config, p5min)
        for moment in times:
            yield preparer.prepare(moment, keep_snapshots), 0.0
        return
    pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=_process_context(),
                               initializer=_init_worker, initargs=(settings, dispatch, predispatch, market, p5min))
    try:
        pending: deque[Future[list[_Prepared]]] = deque()
        upcoming = iter(chunks)
        for chunk in upcoming:
            pending.append(pool.submit(_worker_prepare, config, chunk, keep_snapshots))
            if len(pending) >= workers * CHUNKS_AHEAD_PER_WORKER:
                break
        while pending:
            started = time.perf_counter()
            prepared = pending.popleft().result()
            wait_ms = _elapsed_ms(started)
            following = next(upcoming, None)
            if following is not None:
                pending.append(pool.submit(_worker_prepare, config, following, keep_snapshots))
            for index, decision in enumerate(prepared):
                yield decision, wait_ms if index == 0 else 0.0
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------------
# Running a backtest
# --------------------------------------------------------------------------------------------------


def _check_period(market: DispatchPrices, region: str, intervals: Sequence[datetime]) -> None:
    """BacktestError unless ``region`` is in the data and some of the dispatch ``intervals`` (AEST) lies
    within the data's span. Intervals the data does not hold (gaps inside it, or the ends of a period
    reaching past it) are not errors here: no decision is made for them (:func:`decision_times_with_data`);
    whether a period may reach past the data is the caller's rule (``backtest.runs`` checks it against
    what the source holds)."""
    if region not in market.regions:
        raise BacktestError(f"unknown region {region!r}; the data has regions {', '.join(market.regions)}")
    wanted = np.asarray(intervals, dtype="datetime64[s]")
    inside = ((wanted >= market.intervals[0]) & (wanted <= market.intervals[-1]) if len(market.intervals)
              else np.zeros(len(wanted), dtype=bool))
    if not bool(inside.any()):
        covered = (f"{market.intervals[0]} .. {market.intervals[-1]}" if len(market.intervals) else "none")
        raise BacktestError(f"none of the {len(intervals)} dispatch intervals from {intervals[0]:%Y-%m-%d %H:%M} "
                            f"is in the dispatch data (data: intervals ending {covered})")


def decision_times_with_data(settings: Settings, dispatch: DispatchPrices, market: DispatchPrices,
                             config: BacktestConfig) -> list[datetime]:
    """The decision times of ``config`` (naive AEST) whose decision can be made from the data: its dispatch
    interval has an ENERGY price in ``market`` (the price it clears at) and its snapshot's history window
    (``history_intervals`` intervals ending at the latest interval, or the reach of ``[market_data]
    history_reach_intervals`` when longer, :mod:`algorithms.market.as_of`) holds at
    least one ENERGY price of ``dispatch``. Others are not decisions: a gap in the data (an interval AEMO's
    files do not hold, the days a pruned month leaves out) is skipped, not failed. Pure and vectorised."""
    times = config.decision_times()
    if not times:
        return []
    energy = ENERGY
    region = config.region
    step = np.timedelta64(settings.market.interval_minutes * 60, "s")
    history = settings.market_data.history_read_intervals(
        _parameters(settings, config).history_intervals or DEFAULT_HISTORY_INTERVALS)
    decided = np.asarray(times, dtype="datetime64[s]")
    latest = decided - (decided - np.datetime64("1970-01-01T00:00:00")) % step
    target = np.asarray([_timeline(settings, moment).dispatch_interval for moment in times], dtype="datetime64[s]")
    market_energy = market.price[market.region_index(region), :, market.product_index(energy)]
    position = np.searchsorted(market.intervals, target)
    clipped = np.minimum(position, max(len(market.intervals) - 1, 0))
    priced = ((position < len(market.intervals)) & (market.intervals[clipped] == target)
              & np.isfinite(market_energy[clipped]))
    known = np.isfinite(dispatch.price[dispatch.region_index(region), :, dispatch.product_index(energy)])
    count_to = np.concatenate(([0], np.cumsum(known)))
    newest = np.searchsorted(dispatch.intervals, latest, side="right")
    oldest = np.searchsorted(dispatch.intervals, latest - history * step, side="right")
    has_history = count_to[newest] - count_to[oldest] > 0
    return [moment for moment, made in zip(times, priced & has_history, strict=True) if made]


def _summarise(config: BacktestConfig, replay: _RegionReplay, records: list[DecisionRecord],
               rejections: int, settings: Settings, wall_time_s: float, workers: int,
               intervals_without_data: int = 0) -> BacktestResult:
    hours = hours_per_interval(settings.market.interval_minutes)
    gen = np.array([r.gen_mw for r in records])
    load = np.array([r.load_mw for r in records])
    by_product = {product: math.fsum(r.fcas_revenue_by_product_dollars.get(product, 0.0) for r in records)
                  for product in replay.fcas_products}
    depth_known = bool(records) and all(r.depth_fcas_revenue_by_product_dollars is not None for r in records)
    depth_by_product = ({product: math.fsum((r.depth_fcas_revenue_by_product_dollars or {}).get(product, 0.0)
                                            for r in records) for product in replay.fcas_products}
                        if depth_known else None)
    parameters = _parameters(settings, config)
    return BacktestResult(
        config=config, fcas_products=replay.fcas_products, records=tuple(records),
        initial_state_of_charge_mwh=settings.battery.initial_state_of_charge_mwh,
        energy_revenue_dollars=math.fsum(r.energy_revenue_dollars for r in records),
        fcas_revenue_dollars=math.fsum(r.fcas_revenue_dollars for r in records),
        fcas_revenue_by_product_dollars=by_product,
        throughput_mwh=float(np.sum(gen + load) * hours),
        cycles=float(np.sum(gen) * hours / settings.battery.energy_mwh),
        validation_rejections=rejections,
        safe_fallbacks=sum(r.safe_fallback for r in records),
        rebids=sum(r.rebid for r in records),
        failed_decisions=sum(r.failure is not None for r in records),
        wall_time_s=wall_time_s, forecast_quantiles=parameters.forecast_quantiles,
        forecast_leads=_forecast_leads(parameters.horizon_intervals), workers=workers,
        intervals_without_data=intervals_without_data, depth_fcas_revenue_by_product_dollars=depth_by_product)


def run_backtest(settings: Settings, dispatch: DispatchPrices, predispatch: PredispatchPrices,
                 config: BacktestConfig, *, progress: Progress | None = None,
                 market: DispatchPrices | None = None,
                 inspect: Callable[[datetime, market_data_pb2.MarketSnapshot], None] | None = None,
                 workers: int | None = None, p5min: P5minPrices | None = None) -> BacktestResult:
    """Replay ``config.decisions`` consecutive cycles of ``config.region`` (see the module docstring).

    ``dispatch`` / ``predispatch`` (and ``p5min``, AEMO's P5MIN runs where the data has them; None: none)
    are the historical MMS tables the market-data service serves;
    ``market`` the prices the simulated market clears at ($/MWh, $/MW/h; default :func:`market_prices`
    of ``dispatch``). ``progress(done, total)`` is called in this process after each decision (decisions
    made, decisions in all); ``inspect(as_of, snapshot)`` sees every snapshot a decision uses, in decision
    order (for checks). ``workers``: processes preparing snapshots and forecasts ahead (default: every
    core, :data:`DEFAULT_WORKERS`); ``1`` (or less) prepares them in this process. Results are equal
    whatever ``workers``. No I/O. Decisions are made where the data allows
    (:func:`decision_times_with_data`): the period's gaps are skipped and counted. Raises BacktestError when
    the region is not in the data, a dispatch interval lies outside its span, or no decision can be made.
    """
    started = time.perf_counter()
    workers = DEFAULT_WORKERS if workers is None else max(1, workers)
    market_data = market if market is not None else market_prices(settings, dispatch)
    replay = _RegionReplay(settings, dispatch, market_data, config)
    _check_period(dispatch, config.region, replay.dispatch_intervals())
    _check_period(market_data, config.region, replay.dispatch_intervals())
    times = decision_times_with_data(settings, dispatch, market_data, config)
    if not times:
        raise BacktestError(f"none of the {config.decisions} decisions from {config.first_decision:%Y-%m-%d %H:%M} "
                            f"can be made: the data has no {config.region} dispatch price for their intervals, "
                            "or none in their history")
    records: list[DecisionRecord] = []
    rejections = 0
    total = len(times)
    with _blas_on_one_thread(), contextlib.closing(_prepared_decisions(
            settings, dispatch, predispatch, market_data, config, times, workers,
            inspect is not None, p5min)) as decisions:
        for done, (prepared, wait_ms) in enumerate(decisions, start=1):
            if inspect is not None and prepared.snapshot is not None:
                inspect(prepared.as_of, prepared.snapshot)
            record, rejected = replay.decide(prepared, wait_ms)
            records.append(record)
            rejections += rejected
            if progress is not None:
                progress(done, total)
    return _summarise(config, replay, records, rejections, settings, time.perf_counter() - started, workers,
                      intervals_without_data=config.decisions - len(times))


def end_of_run_adjustment(settings: Settings, result: BacktestResult) -> float:
    """The end-of-run charge ($, ≤ 0) of ``result``: a run that ends with less stored energy than it started
    with pays for refilling the shortfall at its mean ENERGY price
    (:func:`algorithms.market.depth.end_of_run_adjustment_dollars`, the one rule every report applies)."""
    if not result.records:
        return 0.0
    battery = battery_from_spec(_battery_spec(settings, result.region))
    return end_of_run_adjustment_dollars(result.initial_state_of_charge_mwh, result.final_state_of_charge_mwh,
                                         result.mean_energy_price_per_mwh, battery.charge_efficiency,
                                         battery.mlf_load)


# --------------------------------------------------------------------------------------------------
# Regions in parallel
# --------------------------------------------------------------------------------------------------


def _worker_backtest(config: BacktestConfig, workers: int) -> BacktestResult:
    settings, dispatch, predispatch, market = _worker_data()
    return run_backtest(settings, dispatch, predispatch, config, market=market, workers=workers)


def workers_per_region(workers: int, regions: int) -> tuple[int, int]:
    """(regions backtested at once, workers preparing each one's forecasts) for ``workers`` processes over
    ``regions`` regions, as :func:`run_backtests` splits them.

    Every region's own process makes its decisions; forecasts are prepared ahead by ``workers // regions``
    more (at least 1, i.e. in the region's process) so that all of them together keep about ``workers``
    cores busy. With fewer workers than regions, ``workers`` regions run at once, each in-process.
    """
    if workers <= 1 or regions <= 1:
        return 1, max(1, workers)
    return min(workers, regions), max(1, workers // regions)


def run_backtests(settings: Settings, dispatch: DispatchPrices, predispatch: PredispatchPrices,
                  configs: Sequence[BacktestConfig], *, workers: int = DEFAULT_WORKERS,
                  market: DispatchPrices | None = None,
                  on_result: Callable[[BacktestResult], None] | None = None) -> list[BacktestResult]:
    """Run several backtests (typically one per region) with ``workers`` processes; results in ``configs``
    order. ``on_result`` is called as each finishes. A region's decisions stay sequential (SoC carries
    over); the workers are split as :func:`workers_per_region` says: one configuration (or ``workers <= 1``)
    runs in this process, one after another, each with :func:`run_backtest` and ``workers`` workers;
    otherwise up to ``workers`` configurations run at once in processes of their own (spawned, BLAS on one
    thread), each preparing its forecasts with ``workers // len(configs)`` workers.
    Results are equal whatever ``workers``. Raises BacktestError like :func:`run_backtest`.
    """
    market_data = market if market is not None else market_prices(settings, dispatch)
    for config in configs:
        replay = _RegionReplay(settings, dispatch, market_data, config)
        _check_period(dispatch, config.region, replay.dispatch_intervals())
    at_once, per_region = workers_per_region(workers, len(configs))
    if at_once <= 1:
        results = []
        for config in configs:
            result = run_backtest(settings, dispatch, predispatch, config, market=market_data,
                                  workers=per_region)
            if on_result is not None:
                on_result(result)
            results.append(result)
        return results
    ordered: dict[int, BacktestResult] = {}
    # Spawned, not forked: these processes solve LPs, and this process may hold the LP solver's threads.
    with _blas_on_one_thread(), ProcessPoolExecutor(
            max_workers=at_once, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=(settings, dispatch, predispatch, market_data)) as pool:
        futures = {pool.submit(_worker_backtest, config, per_region): index for index, config in enumerate(configs)}
        for future in as_completed(futures):
            result = future.result()
            ordered[futures[future]] = result
            if on_result is not None:
                on_result(result)
    return [ordered[index] for index in range(len(configs))]


# --------------------------------------------------------------------------------------------------
# Perfect foresight over the same intervals
# --------------------------------------------------------------------------------------------------


def _price_window(dispatch: DispatchPrices, region: str, first_interval: datetime,
                  count: int) -> dict[str, np.ndarray]:
    """Every product's prices ($/MWh, $/MW/h) of ``count`` consecutive intervals from ``first_interval``."""
    if count < 1:
        raise BacktestError(f"count must be at least 1, got {count}")
    step = timedelta(minutes=5)
    intervals = [first_interval + step * k for k in range(count)]
    _check_period(dispatch, region, intervals)
    start = dispatch.interval_index(first_interval)
    assert start is not None
    window = dispatch.price[dispatch.region_index(region), start:start + count]
    not_finite = ~np.isfinite(window)
    if bool(not_finite.any()):
        row, column = np.argwhere(not_finite)[0]
        raise BacktestError(f"{region} {dispatch.products[column]} has no price for the interval ending "
                            f"{intervals[row]:%Y-%m-%d %H:%M}; perfect foresight needs every price")
    return {product: np.array(window[:, index]) for index, product in enumerate(dispatch.products)}


def depth_caps_window(settings: Settings, dispatch: DispatchPrices, region: str, first_interval: datetime,
                      count: int) -> dict[str, FloatArray] | None:
    """FCAS product → market-depth caps (MW per interval) of ``count`` intervals from ``first_interval``
    (interval-ending AEST): the region's enablement (DISPATCHREGIONSUM) × ``[market_depth]
    fcas_enablement_share`` (:func:`algorithms.market.depth.caps_by_product`). None ("price-taker only") when
    the data has no DISPATCHREGIONSUM or lacks a value of some FCAS product of ``dispatch`` in the window."""
    start = dispatch.interval_index(first_interval)
    if dispatch.region_enabled_mw is None or start is None or start + count > len(dispatch.intervals):
        return None
    window = dispatch.region_enabled_mw[dispatch.region_index(region), start:start + count]
    caps = caps_by_product(dispatch.products, window, settings.market_depth.fcas_enablement_share)
    return caps if caps_cover(caps, dispatch.products) else None


@dataclass(frozen=True)
class BenchmarkSolve:
    """What one perfect-foresight solve reported beside its plan: the physical plan's revenue ($), the LP
    relaxation's (charging and discharging at once allowed, $) and the intervals in which it did so, the
    proven bound ($), the MIP gap and the status (OPTIMAL, or TIME_LIMIT with the best plan found)."""

    objective_dollars: float
    relaxation_dollars: float
    relaxation_simultaneous_intervals: int
    bound_dollars: float
    mip_gap: float
    status: str


def benchmark_solve_of(plan: DispatchPlan) -> BenchmarkSolve:
    """The :class:`BenchmarkSolve` of a perfect-foresight plan ($)."""
    return BenchmarkSolve(objective_dollars=plan.objective_dollars,
                          relaxation_dollars=plan.relaxation_objective_dollars,
                          relaxation_simultaneous_intervals=plan.relaxation_simultaneous_intervals,
                          bound_dollars=plan.objective_bound_dollars, mip_gap=plan.mip_gap, status=plan.status)


def perfect_foresight_revenue(settings: Settings, dispatch: DispatchPrices, region: str,
                              first_interval: datetime, count: int, include_fcas: bool, *,
                              terminal_state_of_charge_mwh: float | None = None,
                              enablement_cap_mw: Mapping[str, np.ndarray] | None = None,
                              depth_limited: bool = False,
                              solves: list[BenchmarkSolve] | None = None) -> tuple[float, float]:
    """(energy $, FCAS $) of the perfect-foresight benchmark over ``count`` intervals from
    ``first_interval`` (interval-ending AEST) of ``region``, for the configured battery.

    :func:`algorithms.market.optimise.perfect_foresight`: starts at the configured initial SoC and ends with at
    least as much, knowing every price of ``dispatch`` ($/MWh, $/MW/h); FCAS $ is 0 unless
    ``include_fcas``. ``terminal_state_of_charge_mwh`` (MWh) replaces that end condition (e.g. the SoC a
    backtest ended with, for a like-for-like upper bound). ``enablement_cap_mw`` (market depth): per
    FCAS product, the most MW it may be enabled for in each of the ``count`` intervals (``inf`` = no cap).
    ``depth_limited`` takes those caps from the data instead: the market depth of :func:`depth_caps_window`,
    the same caps the clearing applies (energy stays price-taking).
    The plan never charges and discharges in the same interval (a MILP where the LP relaxation would);
    ``solves``, when given, receives its :class:`BenchmarkSolve` (relaxation, bound, gap). Raises
    BacktestError when an interval or a price is missing, the depth is asked for but the data has none for
    the window, or the solver finds no plan (a MILP stopped by the time limit with a plan counts, with its
    gap).
    """
    plan, prices = perfect_foresight_plan(settings, dispatch, region, first_interval, count, include_fcas,
                                          terminal_state_of_charge_mwh=terminal_state_of_charge_mwh,
                                          enablement_cap_mw=enablement_cap_mw, depth_limited=depth_limited)
    if solves is not None:
        solves.append(benchmark_solve_of(plan))
    battery = battery_from_spec(_battery_spec(settings, region))
    hours = hours_per_interval(settings.market.interval_minutes)
    rrp = prices[ENERGY]
    energy = float(np.sum(hours * rrp * (battery.mlf_gen * plan.gen_mw - battery.mlf_load * plan.load_mw)))
    fcas = math.fsum(float(np.sum(hours * prices[product] * enabled))
                     for product, enabled in plan.fcas.items())
    return energy, fcas


def perfect_foresight_plan(settings: Settings, dispatch: DispatchPrices, region: str, first_interval: datetime,
                           count: int, include_fcas: bool, *, terminal_state_of_charge_mwh: float | None = None,
                           enablement_cap_mw: Mapping[str, np.ndarray] | None = None,
                           depth_limited: bool = False) -> tuple[DispatchPlan, dict[str, np.ndarray]]:
    """The perfect-foresight plan of :func:`perfect_foresight_revenue` (MW per interval: energy and each FCAS
    service's enablement) and the prices it knew ($/MWh, $/MW/h by product), over ``count`` intervals from
    ``first_interval`` (interval-ending AEST). Arguments and errors as there."""
    prices = _price_window(dispatch, region, first_interval, count)
    battery = battery_from_spec(_battery_spec(settings, region))
    hours = hours_per_interval(settings.market.interval_minutes)
    caps: Mapping[str, np.ndarray] | None = enablement_cap_mw
    if depth_limited and include_fcas:
        caps = depth_caps_window(settings, dispatch, region, first_interval, count)
        if caps is None:
            raise BacktestError(f"the data has no market depth (DISPATCHREGIONSUM) of every FCAS product of {region} "
                                f"for the {count} intervals from {first_interval:%Y-%m-%d %H:%M}")
    if terminal_state_of_charge_mwh is None:
        plan = perfect_foresight(prices, battery, include_fcas=include_fcas, interval_hours=hours,
                                 initial_soc_fraction=settings.battery.initial_soc_fraction,
                                 enablement_cap_mw=caps)
    else:
        selected: Mapping[str, np.ndarray] = prices if include_fcas else {ENERGY: prices[ENERGY]}
        kept = {product: cap for product, cap in (caps or {}).items() if product in selected}
        plan = solve_dispatch(selected, battery, settings.battery.initial_state_of_charge_mwh,
                              terminal_state_of_charge_mwh, interval_hours=hours,
                              time_limit_s=PERFECT_FORESIGHT_TIME_LIMIT_S, mip_rel_gap=PERFECT_FORESIGHT_MIP_REL_GAP,
                              enablement_cap_mw=kept,
                              physical_intervals=None)
    if plan.status not in ("OPTIMAL", "TIME_LIMIT") or not plan.gen_mw.size:
        raise BacktestError(f"perfect foresight for {region} from {first_interval:%Y-%m-%d %H:%M} "
                            f"({count} intervals) ended {plan.status}: {plan.status_reason}")
    return plan, prices
