"""The AutoBidder cycle's real bidding path, replayed in-process over historical market data.

One *decision* per 5-minute interval, exactly as the live cycle (``workflows/autobidder.py`` with the
activities of ``activities/cycle.py``) makes it, without Temporal, SQS, gRPC or PostgreSQL:

1. **Timeline** — :func:`algorithms.replay_clock.cycle_timeline`: a decision at ``decision_time`` (naive
   AEST) bids for the interval after the one in progress (interval-ending AEST).
2. **Fetch** — :func:`services.market_data.build_snapshot` as of the decision time with the configured
   publication model. While the latest interval is not known the cycle polls every
   ``market_data_poll_s`` until ``market_data_cutoff_s``, then carries the last known prices forward
   (:func:`services.market_data.estimate_missing`); the snapshot's as-of is the market time it was taken.
   The unit's state of charge (MWh) and net output (MW) are those the simulated market left after the
   previous decision's interval (the live market clears an interval when its outcome is recorded).
3. **Forecast** — :func:`algorithms.cycle_requests.forecast_request` for every product of the snapshot,
   answered by the handler the worker pools serve for the configured algorithm
   (:func:`workers.handlers.default_registry`).
4. **Optimise** — :func:`algorithms.cycle_requests.optimisation_request` (initial SoC = the unit's,
   terminal = the configured initial SoC, initial net MW = the unit's) and its handler.
5. **Bid** — as the ``build_and_validate_bid`` activity: the plan's bid
   (:func:`algorithms.bid_builder.build_bid`), else the safe bid; a bid that does not differ materially
   from the bid in force (:func:`algorithms.rebid.material_changes`) is not resubmitted and the bid in
   force stands; a rebid carries its changes (:func:`algorithms.rebid.with_rebid_reason`) and must pass
   :func:`algorithms.bid_validation.validate_bid` with the trading day's band prices in force (V4).
6. **Clear** — the newest accepted bid covering the dispatch interval is cleared by
   :func:`algorithms.clearing.clear_interval` against the market's prices of that interval (by default
   the historical DISPATCHPRICE with administered pricing re-applied, as the simulated market settles:
   :func:`market_prices`); no bid or no energy price: 0 MW, $0, SoC unchanged. SoC and net MW carry over.

Decision ``k`` is at ``first_decision + 5 min * k``, so the decisions bid consecutive intervals: the
interval in progress at each decision was cleared by the previous one. A decision whose forecast or
optimisation request is rejected as invalid fails like a live cycle would (recorded with the reason);
its interval is cleared from the bid in force.

The loop is deterministic: the same settings, data and configuration give equal results (durations are
measured for profiling but excluded from equality). Regions are independent and run in parallel
processes with :func:`run_backtests`; a region's decisions are sequential because SoC carries over.

:func:`perfect_foresight_revenue` is the benchmark of shared/NEM.md over the same intervals.
Not modelled, as in the simulated market: our own effect on prices, network constraints, causer-pays.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from algorithms.battery import battery_from_spec, battery_spec_from_settings
from algorithms.bid_builder import build_bid, build_safe_bid
from algorithms.bid_validation import validate_bid
from algorithms.clearing import clear_interval
from algorithms.cycle_requests import forecast_request, optimisation_request
from algorithms.errors import InvalidRequestError
from algorithms.forecast import forecast_from_result, quantile_at
from algorithms.nem_time import hours_per_interval, to_timestamp, trading_day, unix_ms_to_market
from algorithms.optimise import PERFECT_FORESIGHT_TIME_LIMIT_S, perfect_foresight, solve_dispatch
from algorithms.rebid import material_changes, with_rebid_reason
from algorithms.replay_clock import CycleTimeline, cycle_timeline
from archive import archive_key
from models.bids import BandPriceKey, band_prices_of
from services.bid_service import with_administered_pricing
from services.market_data import (
    PublicationModel,
    build_snapshot,
    estimate_missing,
    latest_known,
    publication_model,
)
from services.mms import DispatchPrices, PredispatchPrices
from settings import Settings
from vpp.v1 import bid_pb2, common_pb2, market_data_pb2, worker_pb2
from workers.blas import single_threaded_blas
from workers.handlers import Handler, default_registry

# The forecast level reported per decision (the median).
REPORTED_FORECAST_LEVEL = 0.5
DEFAULT_WORKERS = 2

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
    ``forecast_quantiles`` (levels in (0, 1)), ``optimiser_price_quantile``, ``degradation_cost_per_mwh``
    and ``terminal_value_per_mwh`` ($/MWh), ``optimiser_time_limit_s`` (seconds).
    ``bid_version`` is the version every bid carries, as the cycle's configuration sets it.
    """

    region: str
    first_decision: datetime
    decisions: int
    history_intervals: int | None = None
    horizon_intervals: int | None = None
    forecast_quantiles: tuple[float, ...] | None = None
    optimiser_price_quantile: float | None = None
    degradation_cost_per_mwh: float | None = None
    terminal_value_per_mwh: float | None = None
    optimiser_time_limit_s: float | None = None
    bid_version: int = 1

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

    def decision_times(self) -> list[datetime]:
        """Every decision time (naive AEST), 5 minutes apart."""
        step = timedelta(minutes=5)
        return [self.first_decision + step * k for k in range(self.decisions)]


@dataclass(frozen=True)
class DecisionRecord:
    """One decision and what the market made of its interval (MW, MWh, $, $/MWh; times naive AEST).

    ``as_of`` is the market time of the snapshot the decision used (its decision time unless it waited
    for late data) and ``data_known_at`` the latest publication time of anything in that snapshot
    (history or pre-dispatch; None when it holds nothing). ``safe_fallback``: the bid made was the safe
    bid (unusable plan or the plan's bid rejected); ``rebid``: a new bid was accepted (False: the bid in
    force stood, or none passed validation); ``bid_in_force``: some accepted bid covered the interval.
    ``violations`` are the rejected bids' rule violations; ``failure`` why the decision failed (None if it
    did not). ``forecast_energy_p50`` is the median ENERGY forecast for the dispatch interval ($/MWh).
    Durations (milliseconds) are for profiling and do not take part in equality.
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

    @property
    def net_mw(self) -> float:
        """Net output (MW): gen − load."""
        return self.gen_mw - self.load_mw

    @property
    def total_revenue_dollars(self) -> float:
        """Energy + FCAS revenue of the interval ($)."""
        return self.energy_revenue_dollars + self.fcas_revenue_dollars


@dataclass(frozen=True)
class BacktestResult:
    """A region's backtest: every decision's record and the totals ($, MWh, counts).

    ``throughput_mwh`` is the energy through the connection point, Σ (gen + load) × h; ``cycles`` the
    equivalent full cycles, discharged MWh Σ gen × h over the registered storage (MWh).
    ``validation_rejections`` counts rejected bids (plan and safe), ``safe_fallbacks`` decisions whose
    bid was the safe bid, ``failed_decisions`` decisions that made no bid because a request was invalid.
    ``wall_time_s`` (seconds) does not take part in equality.
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
        LP build + solve, bid, clear), for profiling."""
        totals = {
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
    degradation_cost_per_mwh: float
    terminal_value_per_mwh: float
    optimiser_time_limit_s: float
    forecast_algorithm: common_pb2.AlgorithmRef
    optimiser_algorithm: common_pb2.AlgorithmRef


def _parameters(settings: Settings, config: BacktestConfig) -> _CycleParameters:
    cycle = settings.cycle

    def pick(override: Any, default: Any) -> Any:
        return default if override is None else override

    return _CycleParameters(
        history_intervals=pick(config.history_intervals, cycle.history_intervals),
        horizon_intervals=pick(config.horizon_intervals, cycle.horizon_intervals),
        forecast_quantiles=tuple(pick(config.forecast_quantiles, cycle.forecast_quantiles)),
        optimiser_price_quantile=pick(config.optimiser_price_quantile, cycle.optimiser_price_quantile),
        degradation_cost_per_mwh=pick(config.degradation_cost_per_mwh, cycle.degradation_cost_per_mwh),
        terminal_value_per_mwh=pick(config.terminal_value_per_mwh, cycle.terminal_value_per_mwh),
        optimiser_time_limit_s=pick(config.optimiser_time_limit_s, cycle.optimiser_time_limit_s),
        forecast_algorithm=common_pb2.AlgorithmRef(name=cycle.forecast_algorithm,
                                                   version=cycle.forecast_algorithm_version),
        optimiser_algorithm=common_pb2.AlgorithmRef(name=cycle.optimiser_algorithm,
                                                    version=cycle.optimiser_algorithm_version),
    )


def _battery_spec(settings: Settings, region: str) -> common_pb2.BatterySpec:
    """The configured battery, placed in ``region``."""
    return battery_spec_from_settings(replace(settings.battery, region=region))


def market_prices(settings: Settings, dispatch: DispatchPrices) -> DispatchPrices:
    """The prices the simulated market settles at: DISPATCHPRICE ($/MWh, $/MW/h) with administered
    pricing re-applied to ENERGY under the configured cumulative price thresholds."""
    return with_administered_pricing(dispatch, settings.market)


@dataclass
class _BidBook:
    """The market's accepted bids as far as clearing and V4 need them.

    Every accepted bid starts at its decision's dispatch interval and runs to the end of that trading day
    (or of its plan), so the newest accepted bid is the only one that can be in force: an older bid never
    covers an interval the newest does not. Covered intervals are kept as the UTC seconds of the period
    offers' timestamps (any product), as the market's ``covered_intervals`` reads them.
    """

    newest: bid_pb2.Bid | None = None
    newest_seconds: frozenset[int] = frozenset()
    daily_prices: dict[date, dict[BandPriceKey, tuple[float, ...]]] = field(default_factory=dict)

    def covering(self, dispatch_interval: datetime) -> bid_pb2.Bid | None:
        """The bid in force for the interval ending ``dispatch_interval`` (AEST), or None."""
        return self.newest if to_timestamp(dispatch_interval).seconds in self.newest_seconds else None

    def band_prices_in_force(self, day: date) -> dict[BandPriceKey, tuple[float, ...]] | None:
        """Band prices of the first accepted bid of trading day ``day`` (rule V4), or None."""
        return self.daily_prices.get(day)

    def accept(self, bid: bid_pb2.Bid, dispatch_interval: datetime) -> None:
        """Record ``bid`` (first interval ``dispatch_interval``, AEST) as accepted."""
        self.newest = bid
        self.newest_seconds = frozenset(period.dispatch_interval.seconds for offer in bid.offers
                                        for period in offer.periods if period.HasField("dispatch_interval"))
        day = trading_day(dispatch_interval)
        self.daily_prices.setdefault(day, band_prices_of(bid))
        for stale in [d for d in self.daily_prices if d < day]:
            del self.daily_prices[stale]


@dataclass(frozen=True)
class _BidOutcome:
    """What the bid stage decided: the accepted bid (None: none submitted), its source and rejections."""

    bid: bid_pb2.Bid | None
    safe_fallback: bool
    violations: tuple[str, ...]
    rejections: int


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


class _RegionReplay:
    """The cycle of one region, decision after decision, with the simulated unit's state."""

    def __init__(self, settings: Settings, dispatch: DispatchPrices, predispatch: PredispatchPrices,
                 market: DispatchPrices, config: BacktestConfig) -> None:
        self._settings = settings
        self._dispatch = dispatch
        self._predispatch = predispatch
        self._market = market
        self._config = config
        self._parameters = _parameters(settings, config)
        self._publication: PublicationModel = publication_model(settings.market_data)
        self._battery = _battery_spec(settings, config.region)
        registry = default_registry()
        self._forecaster: Handler = registry.resolve(
            "forecast", self._parameters.forecast_algorithm.name, self._parameters.forecast_algorithm.version)
        self._optimiser: Handler = registry.resolve(
            "optimisation", self._parameters.optimiser_algorithm.name,
            self._parameters.optimiser_algorithm.version)
        self._products = tuple(dispatch.products)
        energy = settings.market.energy_product
        self._fcas_products = tuple(p for p in self._products if p != energy)
        self._book = _BidBook()
        self.state_of_charge_mwh = settings.battery.initial_state_of_charge_mwh
        self.net_mw = 0.0

    @property
    def fcas_products(self) -> tuple[str, ...]:
        """FCAS products of the data, in data order."""
        return self._fcas_products

    def _timeline(self, decision_time: datetime) -> CycleTimeline:
        cycle = self._settings.cycle
        return cycle_timeline(decision_time, market_data_cutoff_s=cycle.market_data_cutoff_s,
                              gate_closure_margin_s=cycle.gate_closure_margin_s)

    def dispatch_intervals(self) -> list[datetime]:
        """The dispatch interval of every decision (interval-ending AEST)."""
        return [self._timeline(moment).dispatch_interval for moment in self._config.decision_times()]

    # -- stages --------------------------------------------------------------------------------

    def fetch(self, timeline: CycleTimeline) -> tuple[datetime, market_data_pb2.MarketSnapshot]:
        """(as-of, snapshot) as the cycle's fetch stage gets it: poll until the cut-off, then estimate."""
        poll = timedelta(seconds=self._settings.cycle.market_data_poll_s)
        as_of = timeline.decision_time
        while True:
            use_estimates = as_of >= timeline.data_cutoff
            snapshot = build_snapshot(self._dispatch, self._predispatch, region=self._config.region,
                                      dispatch_interval=timeline.dispatch_interval, as_of=as_of,
                                      history_intervals=self._parameters.history_intervals,
                                      publication=self._publication)
            if use_estimates:
                snapshot = estimate_missing(snapshot)
            if latest_known(snapshot) or use_estimates:
                return as_of, snapshot
            step = poll if poll > timedelta(0) else timeline.data_cutoff - as_of
            as_of = min(as_of + step, timeline.data_cutoff)

    def forecast(self, snapshot: market_data_pb2.MarketSnapshot, cycle_id: str, decision_time: datetime,
                 first_interval: datetime, timings: dict[str, float]) -> list[worker_pb2.ForecastResult]:
        """One forecast per product of the snapshot (the request_forecast activity and its worker)."""
        parameters = self._parameters
        results: list[worker_pb2.ForecastResult] = []
        for product in snapshot.products:
            started = time.perf_counter()
            request = forecast_request(
                snapshot, product, request_id=f"{cycle_id}/forecast/{product}", decision_time=decision_time,
                first_interval=first_interval, horizon_intervals=parameters.horizon_intervals,
                quantiles=parameters.forecast_quantiles, algorithm=parameters.forecast_algorithm)
            result = self._forecaster(request)
            if not isinstance(result, worker_pb2.ForecastResult):
                raise TypeError(f"the forecast handler answered a {type(result).__name__}, "
                                "not a ForecastResult")
            results.append(result)
            timings[product] = _elapsed_ms(started)
        return results

    def optimise(self, forecasts: Sequence[worker_pb2.ForecastResult], cycle_id: str,
                 first_interval: datetime) -> worker_pb2.OptimisationResult:
        """The plan (the request_optimisation activity and its worker)."""
        parameters = self._parameters
        request = optimisation_request(
            forecasts, self._battery, request_id=f"{cycle_id}/optimisation", first_interval=first_interval,
            horizon_intervals=parameters.horizon_intervals, state_of_charge_mwh=self.state_of_charge_mwh,
            terminal_state_of_charge_mwh=self._settings.battery.initial_state_of_charge_mwh,
            price_quantile=parameters.optimiser_price_quantile,
            degradation_cost_per_mwh=parameters.degradation_cost_per_mwh,
            time_limit_s=parameters.optimiser_time_limit_s, initial_net_mw=self.net_mw,
            terminal_value_per_mwh=parameters.terminal_value_per_mwh,
            algorithm=parameters.optimiser_algorithm)
        plan = self._optimiser(request)
        if not isinstance(plan, worker_pb2.OptimisationResult):
            raise TypeError(f"the optimisation handler answered a {type(plan).__name__}, "
                            "not an OptimisationResult")
        return plan

    def bid(self, plan: worker_pb2.OptimisationResult, dispatch_interval: datetime,
            offer_time: datetime) -> _BidOutcome:
        """The build_and_validate_bid activity followed by the market's acceptance."""
        settings = self._settings
        bidding, rules = settings.bidding, settings.market
        standing = self._book.covering(dispatch_interval)
        daily_prices = self._book.band_prices_in_force(trading_day(dispatch_interval))
        plan_hash = archive_key(plan).removeprefix("sha256:")
        common: dict[str, Any] = dict(dispatch_interval=dispatch_interval, offer_time=offer_time,
                                      version=self._config.bid_version, fcas_products=self._fcas_products,
                                      initial_soc_mwh=self.state_of_charge_mwh)
        candidates: list[tuple[str, Callable[[], bid_pb2.Bid]]] = [
            ("plan", lambda: build_bid(plan, self._battery, bidding, rules, plan_hash=plan_hash, **common)),
            ("safe", lambda: build_safe_bid(self._battery, bidding, rules, plan_hash=plan_hash,
                                            reason="the plan's bid failed validation", **common)),
        ]
        unusable_plan = plan.status != worker_pb2.RESULT_STATUS_OPTIMAL
        rejected: list[str] = []
        rejections = 0
        for name, make in candidates:
            safe = name == "safe" or unusable_plan
            try:
                bid = make()
            except ValueError as error:
                rejected.append(f"{name} bid: {error}")
                rejections += 1
                continue
            changes = material_changes(bid, standing, bidding.rebid_materiality_mw)
            if not changes and standing is not None:
                return _BidOutcome(None, safe, tuple(rejected), rejections)
            bid = with_rebid_reason(bid, changes, rules.rebid_explanation_max_chars)
            violations = validate_bid(bid, self._battery, rules, products=self._products,
                                      daily_band_prices=daily_prices)
            if violations:
                rejected.extend(f"{name} bid {violation}" for violation in violations)
                rejections += 1
                continue
            self._book.accept(bid, dispatch_interval)
            return _BidOutcome(bid, safe, tuple(rejected), rejections)
        return _BidOutcome(None, True, tuple(rejected), rejections)

    def clear(self, dispatch_interval: datetime) -> _Cleared:
        """Clear the interval from the bid in force at the market's prices; update the unit's state."""
        rules = self._settings.market
        prices = self._market.prices_at(self._config.region, dispatch_interval)
        rrp = prices.get(rules.energy_product, math.nan)
        covering = self._book.covering(dispatch_interval)
        if covering is None or not math.isfinite(rrp):
            cleared = _Cleared(rrp, 0.0, 0.0, dict.fromkeys(self._fcas_products, 0.0), 0.0,
                               dict.fromkeys(self._fcas_products, 0.0), self.state_of_charge_mwh)
        else:
            clearing = clear_interval(covering, dispatch_interval, prices,
                                      state_of_charge_mwh=self.state_of_charge_mwh,
                                      previous_net_mw=self.net_mw, battery=self._battery,
                                      interval_minutes=rules.interval_minutes,
                                      energy_product=rules.energy_product)
            cleared = _Cleared(rrp, clearing.gen_mw, clearing.load_mw, dict(clearing.fcas_enabled_mw),
                               clearing.energy_revenue_dollars,
                               dict(clearing.fcas_revenue_by_product_dollars), clearing.state_of_charge_mwh)
        self.state_of_charge_mwh = cleared.state_of_charge_mwh
        self.net_mw = cleared.gen_mw - cleared.load_mw
        return cleared

    # -- one decision ----------------------------------------------------------------------------

    def decide(self, decision_time: datetime,
               inspect: Callable[[datetime, market_data_pb2.MarketSnapshot], None] | None = None,
               ) -> tuple[DecisionRecord, int]:
        """Replay the decision at ``decision_time`` (AEST); returns its record and rejected bid count."""
        timeline = self._timeline(decision_time)
        interval = timeline.dispatch_interval
        cycle_id = f"backtest-{self._config.region}-{interval:%Y%m%dT%H%M}"
        started = time.perf_counter()
        as_of, snapshot = self.fetch(timeline)
        snapshot_ms = _elapsed_ms(started)
        if inspect is not None:
            inspect(as_of, snapshot)
        forecast_ms_by_product: dict[str, float] = {}
        failure: str | None = None
        plan_status = "NONE"
        p50: float | None = None
        optimise_ms = solve_ms = bid_ms = 0.0
        outcome = _BidOutcome(None, False, (), 0)
        try:
            forecasts = self.forecast(snapshot, cycle_id, as_of, interval, forecast_ms_by_product)
            p50 = self._energy_p50(forecasts)
            started = time.perf_counter()
            plan = self.optimise(forecasts, cycle_id, interval)
            optimise_ms, solve_ms = _elapsed_ms(started), plan.solve_ms
            plan_status = worker_pb2.ResultStatus.Name(plan.status).removeprefix("RESULT_STATUS_")
            started = time.perf_counter()
            outcome = self.bid(plan, interval, as_of)
            bid_ms = _elapsed_ms(started)
        except InvalidRequestError as error:
            failure = str(error)
        started = time.perf_counter()
        bid_in_force = self._book.covering(interval) is not None
        cleared = self.clear(interval)
        clear_ms = _elapsed_ms(started)
        record = DecisionRecord(
            decision_time=decision_time, dispatch_interval=interval, as_of=as_of,
            latest_quality=common_pb2.DataQuality.Name(snapshot.latest_quality).removeprefix("DATA_QUALITY_"),
            data_known_at=_max_known_at(snapshot), plan_status=plan_status,
            safe_fallback=outcome.safe_fallback and failure is None, rebid=outcome.bid is not None,
            bid_in_force=bid_in_force, violations=outcome.violations, failure=failure,
            forecast_energy_p50=p50, rrp=cleared.rrp, gen_mw=cleared.gen_mw, load_mw=cleared.load_mw,
            fcas_enabled_mw=math.fsum(cleared.fcas_enabled_mw.values()),
            fcas_enabled_by_product_mw=cleared.fcas_enabled_mw,
            energy_revenue_dollars=cleared.energy_revenue_dollars,
            fcas_revenue_dollars=math.fsum(cleared.fcas_revenue_by_product_dollars.values()),
            fcas_revenue_by_product_dollars=cleared.fcas_revenue_by_product_dollars,
            state_of_charge_mwh=cleared.state_of_charge_mwh, snapshot_ms=snapshot_ms,
            forecast_ms=math.fsum(forecast_ms_by_product.values()),
            forecast_ms_by_product=forecast_ms_by_product, optimise_ms=optimise_ms, solve_ms=solve_ms,
            bid_ms=bid_ms, clear_ms=clear_ms)
        return record, outcome.rejections

    def _energy_p50(self, forecasts: Sequence[worker_pb2.ForecastResult]) -> float | None:
        energy = next((f for f in forecasts if f.product == self._settings.market.energy_product), None)
        if energy is None:
            return None
        try:
            return float(quantile_at(forecast_from_result(energy), REPORTED_FORECAST_LEVEL)[0])
        except InvalidRequestError:
            return None


# --------------------------------------------------------------------------------------------------
# Running a backtest
# --------------------------------------------------------------------------------------------------


def _check_period(market: DispatchPrices, region: str, intervals: Sequence[datetime]) -> None:
    """BacktestError unless ``region`` is in the data and every interval (AEST) has a dispatch price row."""
    if region not in market.regions:
        raise BacktestError(f"unknown region {region!r}; the data has regions {', '.join(market.regions)}")
    wanted = np.asarray(intervals, dtype="datetime64[s]")
    position = np.searchsorted(market.intervals, wanted)
    clipped = np.minimum(position, len(market.intervals) - 1)
    present = (position < len(market.intervals)) & (market.intervals[clipped] == wanted)
    if not bool(present.all()):
        first_absent = intervals[int(np.argmin(present))]
        covered = (f"{market.intervals[0]} .. {market.intervals[-1]}" if len(market.intervals) else "none")
        raise BacktestError(f"{int((~present).sum())} of the {len(intervals)} dispatch intervals are not in "
                            f"the dispatch data, first {first_absent:%Y-%m-%d %H:%M} (data: intervals ending "
                            f"{covered})")


def _summarise(config: BacktestConfig, replay: _RegionReplay, records: list[DecisionRecord],
               rejections: int, settings: Settings, wall_time_s: float) -> BacktestResult:
    hours = hours_per_interval(settings.market.interval_minutes)
    gen = np.array([r.gen_mw for r in records])
    load = np.array([r.load_mw for r in records])
    by_product = {product: math.fsum(r.fcas_revenue_by_product_dollars.get(product, 0.0) for r in records)
                  for product in replay.fcas_products}
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
        wall_time_s=wall_time_s)


def run_backtest(settings: Settings, dispatch: DispatchPrices, predispatch: PredispatchPrices,
                 config: BacktestConfig, *, progress: Progress | None = None,
                 market: DispatchPrices | None = None,
                 inspect: Callable[[datetime, market_data_pb2.MarketSnapshot], None] | None = None,
                 ) -> BacktestResult:
    """Replay ``config.decisions`` consecutive cycles of ``config.region`` (see the module docstring).

    ``dispatch`` / ``predispatch`` are the historical MMS tables the market-data service serves;
    ``market`` the prices the simulated market clears at ($/MWh, $/MW/h; default :func:`market_prices`
    of ``dispatch``). ``progress(done, total)`` is called after each decision; ``inspect(as_of,
    snapshot)`` sees every snapshot a decision uses (for checks). No I/O. Raises BacktestError when the
    region or a dispatch interval is not in the data.
    """
    started = time.perf_counter()
    market_data = market if market is not None else market_prices(settings, dispatch)
    replay = _RegionReplay(settings, dispatch, predispatch, market_data, config)
    _check_period(dispatch, config.region, replay.dispatch_intervals())
    _check_period(market_data, config.region, replay.dispatch_intervals())
    records: list[DecisionRecord] = []
    rejections = 0
    times = config.decision_times()
    for done, decision_time in enumerate(times, start=1):
        record, rejected = replay.decide(decision_time, inspect)
        records.append(record)
        rejections += rejected
        if progress is not None:
            progress(done, len(times))
    return _summarise(config, replay, records, rejections, settings, time.perf_counter() - started)


# --------------------------------------------------------------------------------------------------
# Regions in parallel
# --------------------------------------------------------------------------------------------------

_worker_context: tuple[Settings, DispatchPrices, PredispatchPrices, DispatchPrices] | None = None


def _init_worker(settings: Settings, dispatch: DispatchPrices, predispatch: PredispatchPrices,
                 market: DispatchPrices) -> None:
    global _worker_context
    _worker_context = (settings, dispatch, predispatch, market)


def _worker_backtest(config: BacktestConfig) -> BacktestResult:
    if _worker_context is None:
        raise RuntimeError("backtest worker used before its initialiser ran")
    settings, dispatch, predispatch, market = _worker_context
    return run_backtest(settings, dispatch, predispatch, config, market=market)


def run_backtests(settings: Settings, dispatch: DispatchPrices, predispatch: PredispatchPrices,
                  configs: Sequence[BacktestConfig], *, workers: int = DEFAULT_WORKERS,
                  market: DispatchPrices | None = None,
                  on_result: Callable[[BacktestResult], None] | None = None) -> list[BacktestResult]:
    """Run several backtests (typically one per region) on ``workers`` processes; results in ``configs``
    order. ``on_result`` is called as each finishes. A region's decisions stay sequential (SoC carries
    over). Workers are spawned with single-threaded BLAS (the forecaster's small least-squares fits only
    lose to BLAS threads), at most one per configuration; ``workers=0`` runs everything in this process.
    Raises BacktestError like :func:`run_backtest`.
    """
    market_data = market if market is not None else market_prices(settings, dispatch)
    for config in configs:
        replay = _RegionReplay(settings, dispatch, predispatch, market_data, config)
        _check_period(dispatch, config.region, replay.dispatch_intervals())
    if workers <= 0 or not configs:
        results = []
        for config in configs:
            result = run_backtest(settings, dispatch, predispatch, config, market=market_data)
            if on_result is not None:
                on_result(result)
            results.append(result)
        return results
    context = multiprocessing.get_context("spawn")
    ordered: dict[int, BacktestResult] = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(configs)), mp_context=context,
                             initializer=_init_worker,
                             initargs=(settings, dispatch, predispatch, market_data)) as pool:
        with single_threaded_blas():  # the workers are spawned at the first submissions
            futures = {pool.submit(_worker_backtest, config): index for index, config in enumerate(configs)}
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


def perfect_foresight_revenue(settings: Settings, dispatch: DispatchPrices, region: str,
                              first_interval: datetime, count: int, include_fcas: bool, *,
                              terminal_state_of_charge_mwh: float | None = None) -> tuple[float, float]:
    """(energy $, FCAS $) of the perfect-foresight benchmark over ``count`` intervals from
    ``first_interval`` (interval-ending AEST) of ``region``, for the configured battery.

    :func:`algorithms.optimise.perfect_foresight`: starts at the configured initial SoC and ends with at
    least as much, knowing every price of ``dispatch`` ($/MWh, $/MW/h); FCAS $ is 0 unless
    ``include_fcas``. ``terminal_state_of_charge_mwh`` (MWh) replaces that end condition (e.g. the SoC a
    backtest ended with, for a like-for-like upper bound). Raises BacktestError when an interval or a
    price is missing or the LP does not solve to optimality.
    """
    prices = _price_window(dispatch, region, first_interval, count)
    battery = battery_from_spec(_battery_spec(settings, region))
    energy_product = settings.market.energy_product
    hours = hours_per_interval(settings.market.interval_minutes)
    if terminal_state_of_charge_mwh is None:
        plan = perfect_foresight(prices, battery, include_fcas=include_fcas, interval_hours=hours,
                                 initial_soc_fraction=settings.battery.initial_soc_fraction,
                                 energy_product=energy_product)
    else:
        selected: Mapping[str, np.ndarray] = (prices if include_fcas
                                               else {energy_product: prices[energy_product]})
        plan = solve_dispatch(selected, battery, settings.battery.initial_state_of_charge_mwh,
                              terminal_state_of_charge_mwh, interval_hours=hours,
                              time_limit_s=PERFECT_FORESIGHT_TIME_LIMIT_S, energy_product=energy_product)
    if plan.status != "OPTIMAL":
        raise BacktestError(f"perfect foresight for {region} from {first_interval:%Y-%m-%d %H:%M} "
                            f"({count} intervals) ended {plan.status}: {plan.status_reason}")
    rrp = prices[energy_product]
    energy = float(np.sum(hours * rrp * (battery.mlf_gen * plan.gen_mw - battery.mlf_load * plan.load_mw)))
    fcas = math.fsum(float(np.sum(hours * prices[product] * enabled))
                     for product, enabled in plan.fcas.items())
    return energy, fcas
