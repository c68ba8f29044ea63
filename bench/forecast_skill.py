"""``vpp bench forecast``: skill of the price forecaster by product, horizon and data situation.

For decision times spread over the month (after two days of history), each decision is replayed the way
the live cycle makes it: the as-of market snapshot (:func:`services.market_data.build_snapshot` with the
configured publication model and history length; estimated at the data cut-off if the latest interval
is still unknown), the cycle's forecast request (:func:`algorithms.market.cycle_requests.forecast_request`) and
the real forecaster (:func:`algorithms.market.forecast.run_forecast`). The same snapshot gives two baselines:
seasonal naive (yesterday-same-time from the snapshot history) and AEMO pre-dispatch alone (the snapshot's
pre-dispatch run on the 5-minute grid, held flat beyond its last period). All three are scored against
the DISPATCHPRICE actuals with :func:`algorithms.market.forecast_skill.evaluate_skill`.

Data situations (:class:`ForecastCase`): with or without AEMO's pre-dispatch, with or without P5MIN (where
the data has it), the configured history (a week) or one day, one day with gaps (intervals never published).
:func:`run_cases` scores them on January 2021 (``data/nem``, pre-dispatch) and on a recent month of
DISPATCHPRICE (the test data of 2024-2026 has no pre-dispatch: history-limited cases only); given P5MIN
runs, on the period they cover (actuals: DISPATCHPRICE, else each run's first interval).

Decisions run in worker processes (spawned with single-threaded BLAS: the forecaster's small
least-squares fits gain nothing from BLAS threads, and on two cores they contend badly).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from aemo.mms import load_dispatch_prices, load_market_data
from aemo.p5min import load_p5min_files
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import INTERVAL, INTERVALS_PER_DAY, from_timestamp
from algorithms.common.products import ENERGY, LOWER_PREFIX, RAISE_PREFIX, is_lower, is_raise
from algorithms.common.replay_clock import cycle_timeline
from algorithms.market.as_of import (
    PublicationModel,
    build_snapshot,
    estimate_missing,
    latest_known,
    publication_model,
)
from algorithms.market.cycle_requests import forecast_request
from algorithms.market.forecast import forecast_from_result
from algorithms.market.forecast_skill import (
    BucketScores,
    FloatArray,
    SkillTable,
    evaluate_skill,
    horizon_buckets,
    predispatch_forecast_on_grid,
    seasonal_naive_forecast,
    spread_decision_times,
)
from algorithms.market.prices import DispatchPrices, P5minPrices, PredispatchPrices
from algorithms.registry import default_registry
from pools.blas import single_threaded_blas
from settings import Settings
from vpp.v1 import common_pb2, market_data_pb2

SEASONAL_NAIVE = "seasonal-naive"
PREDISPATCH = "aemo-predispatch"
AEMO_ALONE = "aemo-alone"
WARMUP_DAYS = 2
DEFAULT_WORKERS = 2
ONE_DAY = INTERVALS_PER_DAY
# One day with gaps: this share of the data's intervals is never published (drawn once per seed).
GAP_SHARE = 0.05


@dataclass(frozen=True)
class ForecastCase:
    """A data situation a decision may be in: whether AEMO's pre-dispatch and P5MIN reach the forecaster,
    how many 5-minute intervals of history it gets (0: the configured ``[cycle] history_intervals``), and
    the share of intervals never published (gaps, MISSING in the snapshot)."""

    name: str
    predispatch: bool = True
    p5min: bool = False
    history_intervals: int = 0
    gap_share: float = 0.0


DEFAULT_CASE = ForecastCase("pre-dispatch, long history")
# January 2021 (pre-dispatch, no P5MIN): with / without pre-dispatch x long / one day / one day with gaps.
PREDISPATCH_CASES = (
    DEFAULT_CASE,
    ForecastCase("no pre-dispatch, long history", predispatch=False),
    ForecastCase("pre-dispatch, one day", history_intervals=ONE_DAY),
    ForecastCase("pre-dispatch, one day with gaps", history_intervals=ONE_DAY, gap_share=GAP_SHARE),
    ForecastCase("no pre-dispatch, one day", predispatch=False, history_intervals=ONE_DAY),
    ForecastCase("no pre-dispatch, one day with gaps", predispatch=False, history_intervals=ONE_DAY,
                 gap_share=GAP_SHARE),
)
# A month of DISPATCHPRICE only (no pre-dispatch): history-limited cases.
HISTORY_ONLY_CASES = (
    ForecastCase("history only, one day", predispatch=False, history_intervals=ONE_DAY),
    ForecastCase("history only, one day with gaps", predispatch=False, history_intervals=ONE_DAY,
                 gap_share=GAP_SHARE),
)
# P5MIN runs: with and without them, with pre-dispatch where the data has it.
P5MIN_CASES = (
    ForecastCase("P5MIN + pre-dispatch", p5min=True),
    ForecastCase("pre-dispatch only"),
    ForecastCase("P5MIN only", predispatch=False, p5min=True),
    ForecastCase("neither", predispatch=False),
)


@dataclass(frozen=True)
class SkillJob:
    """What every decision of one benchmark run forecasts (times AEST, prices $/MWh or $/MW/h)."""

    region: str
    products: tuple[str, ...]
    horizon_intervals: int
    quantiles: tuple[float, ...]
    algorithm_name: str
    algorithm_version: str


@dataclass(frozen=True, eq=False)
class DecisionForecasts:
    """The three methods' forecasts of one decision, for every product of the job.

    ``ours`` has shape (n_products, horizon, n_quantiles); ``seasonal_naive``, ``predispatch`` (AEMO
    alone: P5MIN where its run covers the interval, else pre-dispatch, held beyond; NaN when the case has
    neither) and ``predispatch_covered`` (whether AEMO's runs covered the interval, rather than being
    held) have shape (n_products, horizon). Row ``i`` is the interval ending ``first_interval + 5 min * i``.
    """

    decision_time: datetime
    first_interval: datetime
    ours: FloatArray
    seasonal_naive: FloatArray
    predispatch: FloatArray
    predispatch_covered: np.ndarray


def cycle_snapshot(dispatch: DispatchPrices, predispatch: PredispatchPrices, settings: Settings, region: str,
                   decision_time: datetime, *, p5min: P5minPrices | None = None, history_intervals: int = 0,
                   publication: PublicationModel | None = None) -> tuple[datetime, market_data_pb2.MarketSnapshot]:
    """(dispatch interval, snapshot) of the cycle deciding at ``decision_time`` (AEST), as the cycle gets it.

    The snapshot is taken as of the decision time; if its latest interval is not known then, the cycle
    waits until its data cut-off and carries the last known values forward (``estimate_missing``).
    ``p5min``: AEMO's P5MIN runs (None: none); ``history_intervals`` (0: the configured length) and
    ``publication`` (None: the configured model) as the market-data service would apply them.
    """
    cycle = settings.cycle
    timeline = cycle_timeline(decision_time, market_data_cutoff_s=cycle.market_data_cutoff_s,
                              gate_closure_margin_s=cycle.gate_closure_margin_s)
    publication = publication or publication_model(settings.market_data)
    history = history_intervals or cycle.history_intervals
    snapshot = build_snapshot(dispatch, predispatch, region=region,
                              dispatch_interval=timeline.dispatch_interval, as_of=decision_time,
                              history_intervals=history, publication=publication, p5min=p5min)
    if not latest_known(snapshot):
        snapshot = estimate_missing(build_snapshot(
            dispatch, predispatch, region=region, dispatch_interval=timeline.dispatch_interval,
            as_of=timeline.data_cutoff, history_intervals=history, publication=publication, p5min=p5min))
    return timeline.dispatch_interval, snapshot


def _history_prices(history: market_data_pb2.ProductPriceHistory) -> FloatArray:
    """History prices with MISSING slots as NaN (as the forecaster reads them)."""
    prices = np.asarray(history.price, dtype=np.float64)
    missing = np.asarray(history.quality, dtype=np.int64) == common_pb2.DATA_QUALITY_MISSING
    return np.where(missing, np.nan, prices) if missing.size == prices.size else prices


def aemo_alone_forecast(predispatch: market_data_pb2.PredispatchForecast | None,
                        p5min: market_data_pb2.P5minForecast | None, first_interval: datetime,
                        horizon_intervals: int) -> tuple[FloatArray, np.ndarray]:
    """AEMO's own forecast on the 5-minute grid ($/MWh or $/MW/h) and where its runs cover the horizon.

    P5MIN where its run prices the interval, else the pre-dispatch run (:func:`predispatch_forecast_on_grid`);
    intervals neither covers are held from the nearest covered one (beyond P5MIN's hour without
    pre-dispatch: P5MIN's last interval held flat). All NaN when there is neither.
    """
    covered_price = np.full(horizon_intervals, np.nan)
    if predispatch is not None and len(predispatch.period):
        periods = [from_timestamp(period) for period in predispatch.period]
        run_price = np.asarray(predispatch.price, dtype=np.float64)
        covered_price = predispatch_forecast_on_grid(periods, run_price, first_interval, horizon_intervals,
                                                     hold=False)
    if p5min is not None and len(p5min.interval):
        offsets = np.array([(from_timestamp(moment) - first_interval) // INTERVAL for moment in p5min.interval])
        inside = (offsets >= 0) & (offsets < horizon_intervals)
        covered_price[offsets[inside]] = np.asarray(p5min.price, dtype=np.float64)[inside]
    covered = np.isfinite(covered_price)
    if not bool(covered.any()):
        return covered_price, covered
    known = np.flatnonzero(covered)
    nearest_before = np.maximum.accumulate(np.where(covered, np.arange(horizon_intervals), -1))
    source = np.where(nearest_before >= 0, nearest_before, known[0])
    return np.asarray(covered_price[source], dtype=np.float64), covered


@dataclass(frozen=True, eq=False)
class _DecisionData:
    """What every decision of one run reads: the tables, the settings, the job and its data situation."""

    dispatch: DispatchPrices
    predispatch: PredispatchPrices
    p5min: P5minPrices | None
    settings: Settings
    job: SkillJob
    case: ForecastCase
    missing_intervals: frozenset[datetime]

    @cached_property
    def publication(self) -> PublicationModel:
        """The publication model of the decisions (built where they run: it does not pickle)."""
        return PublicationModel(dispatch_price_delay_s=self.settings.market_data.dispatch_price_delay_s,
                                missing_intervals=self.missing_intervals)


def decision_forecasts(dispatch: DispatchPrices, predispatch: PredispatchPrices, settings: Settings,
                       job: SkillJob, decision_time: datetime, *, case: ForecastCase = DEFAULT_CASE,
                       p5min: P5minPrices | None = None,
                       publication: PublicationModel | None = None) -> DecisionForecasts:
    """Forecasts of every product of ``job`` for the cycle deciding at ``decision_time`` (AEST) in the data
    situation ``case`` (its pre-dispatch and P5MIN withheld from the snapshot when the case has none).

    Raises InvalidRequestError naming the decision and product when a request cannot be forecast, and
    ValueError when the snapshot lacks a product's history.
    """
    first_interval, snapshot = cycle_snapshot(
        dispatch, predispatch, settings, job.region, decision_time, p5min=p5min if case.p5min else None,
        history_intervals=case.history_intervals, publication=publication)
    if not case.predispatch:
        snapshot.ClearField("predispatch")
    algorithm = common_pb2.AlgorithmRef(name=job.algorithm_name, version=job.algorithm_version)
    forecaster = default_registry().resolve("forecast", job.algorithm_name, job.algorithm_version)
    histories = {history.product: history for history in snapshot.history}
    runs = {run.product: run for run in snapshot.predispatch}
    p5min_runs = {run.product: run for run in snapshot.p5min}
    horizon = job.horizon_intervals
    ours, naive, on_grid, covered = [], [], [], []
    for product in job.products:
        label = f"decision {decision_time:%Y-%m-%d %H:%M:%S}, {job.region} {product}"
        if product not in histories:
            notes = "; ".join(snapshot.quality_notes)
            raise ValueError(f"{label}: the snapshot has no price history" + (f" ({notes})" if notes else ""))
        request_id = f"forecast-skill/{job.region}/{decision_time:%Y%m%dT%H%M%S}/{product}"
        try:
            request = forecast_request(
                snapshot, product, request_id=request_id, decision_time=decision_time,
                first_interval=first_interval, horizon_intervals=horizon, quantiles=job.quantiles,
                algorithm=algorithm)
            ours.append(forecast_from_result(forecaster(request)).price)  # type: ignore[arg-type]
        except InvalidRequestError as error:
            raise InvalidRequestError(f"{label}: {error}") from error
        history = histories[product]
        history_last = from_timestamp(history.first_interval) + INTERVAL * (len(history.price) - 1)
        history_prices = _history_prices(history)
        if np.isfinite(history_prices).any():
            naive.append(seasonal_naive_forecast(history_prices, horizon, INTERVALS_PER_DAY,
                                                 first_lead=(first_interval - history_last) // INTERVAL))
        else:
            naive.append(np.full(horizon, np.nan))
        aemo, aemo_covered = aemo_alone_forecast(runs.get(product), p5min_runs.get(product), first_interval,
                                                 horizon)
        on_grid.append(aemo)
        covered.append(aemo_covered)
    return DecisionForecasts(decision_time=decision_time, first_interval=first_interval, ours=np.stack(ours),
                             seasonal_naive=np.stack(naive), predispatch=np.stack(on_grid),
                             predispatch_covered=np.stack(covered))


def actual_prices(dispatch: DispatchPrices, region: str, products: Sequence[str],
                  first_intervals: Sequence[datetime], horizon_intervals: int) -> FloatArray:
    """DISPATCHPRICE actuals, shape (n_products, n_decisions, horizon): ``[p, d, i]`` is the price of the
    interval ending ``first_intervals[d] + 5 min * i`` (AEST); NaN where the data has no such interval."""
    starts = np.asarray(first_intervals, dtype="datetime64[s]")
    wanted = starts[:, np.newaxis] + np.timedelta64(300, "s") * np.arange(horizon_intervals)
    position = np.searchsorted(dispatch.intervals, wanted)
    clipped = np.minimum(position, len(dispatch.intervals) - 1)
    present = (position < len(dispatch.intervals)) & (dispatch.intervals[clipped] == wanted)
    series = np.stack([dispatch.series(region, product) for product in products])  # (P, N)
    return np.where(present[np.newaxis], series[:, clipped], np.nan)


# --------------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------------

_worker_context: _DecisionData | None = None


def _init_worker(data: _DecisionData) -> None:
    global _worker_context
    _worker_context = data


def _decide(data: _DecisionData, decision_time: datetime) -> DecisionForecasts:
    return decision_forecasts(data.dispatch, data.predispatch, data.settings, data.job, decision_time,
                              case=data.case, p5min=data.p5min, publication=data.publication)


def _worker_decision(decision_time: datetime) -> DecisionForecasts:
    if _worker_context is None:
        raise RuntimeError("forecast-skill worker used before its initialiser ran")
    return _decide(_worker_context, decision_time)


def _run_decisions(data: _DecisionData, times: Sequence[datetime], workers: int) -> list[DecisionForecasts]:
    if workers <= 1 or len(times) <= 1:
        return [_decide(data, moment) for moment in times]
    context = multiprocessing.get_context("spawn")
    chunk = max(1, math.ceil(len(times) / (4 * workers)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(data,)) as pool:
        with single_threaded_blas():  # map submits every task now, which spawns the workers here
            results = pool.map(_worker_decision, times, chunksize=chunk)
        return list(results)


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


def _coverage_notes(table_buckets: Sequence[tuple[str, int, int]], covered: np.ndarray,
                    scored: np.ndarray) -> list[str]:
    """How much of each bucket AEMO's run covered itself (the rest is its last period held flat)."""
    parts = []
    for label, first, last in table_buckets:
        in_bucket = scored[:, :, first - 1:last]
        total = int(in_bucket.sum())
        if total:
            share = float((covered[:, :, first - 1:last] & in_bucket).sum()) / total
            parts.append(f"{label} {share:.0%}")
    return ["AEMO pre-dispatch covered by its own run (rest held from its last period): " + ", ".join(parts)]


def _check_choice(dispatch: DispatchPrices, region: str, products: Sequence[str] | None) -> tuple[str, ...]:
    if region not in dispatch.regions:
        raise ValueError(f"unknown region {region!r}; the data has regions {', '.join(dispatch.regions)}")
    chosen = tuple(products) if products else dispatch.products
    unknown = [product for product in chosen if product not in dispatch.products]
    if unknown:
        raise ValueError(f"unknown product(s) {', '.join(unknown)}; "
                         f"the data has {', '.join(dispatch.products)}")
    return chosen


def gap_intervals(settings: Settings, dispatch: DispatchPrices, share: float, seed: int = 0) -> frozenset[datetime]:
    """The configured missing intervals plus ``share`` of the data's intervals (drawn with ``seed``): what the
    publication model never publishes, history with gaps as the snapshot reports them (MISSING)."""
    configured = frozenset(settings.market_data.missing_intervals)
    if share <= 0:
        return configured
    rng = np.random.default_rng(seed)
    chosen = dispatch.intervals[rng.random(len(dispatch.intervals)) < share]
    return configured | frozenset(moment.astype(datetime) for moment in chosen)


def score_case(dispatch: DispatchPrices, predispatch: PredispatchPrices, settings: Settings, *, region: str,
               case: ForecastCase, times: Sequence[datetime], products: Sequence[str] | None = None,
               horizon_intervals: int = 288, p5min: P5minPrices | None = None,
               actual: DispatchPrices | None = None, workers: int = DEFAULT_WORKERS, seed: int = 0) -> SkillTable:
    """Skill of the configured forecaster in data situation ``case`` vs seasonal naive and AEMO alone.

    Every decision time of ``times`` (AEST) is replayed as the live cycle makes it (see the module
    docstring) for ``products`` (default: every product of the data) of ``region`` over
    ``horizon_intervals`` 5-minute intervals, on ``workers`` processes. Scores are $/MWh (ENERGY) or
    $/MW/h (FCAS) against ``actual`` (default ``dispatch``); intervals without an actual are not scored. A
    baseline that cannot forecast every scored interval (no history, no AEMO run) is left out. The table
    carries the wall time in ``elapsed_s``. Raises ValueError for an unknown region or product.
    """
    started = time.perf_counter()
    cycle = settings.cycle
    chosen = _check_choice(dispatch, region, products)
    buckets = horizon_buckets(horizon_intervals)
    job = SkillJob(region=region, products=chosen, horizon_intervals=horizon_intervals,
                   quantiles=tuple(cycle.forecast_quantiles), algorithm_name=cycle.forecast_algorithm,
                   algorithm_version=cycle.forecast_algorithm_version)
    data = _DecisionData(dispatch=dispatch, predispatch=predispatch, p5min=p5min, settings=settings, job=job,
                         case=case, missing_intervals=gap_intervals(settings, dispatch, case.gap_share, seed))
    results = _run_decisions(data, times, workers)

    actuals = actual_prices(actual or dispatch, region, chosen, [r.first_interval for r in results],
                            horizon_intervals)
    ours = np.stack([r.ours for r in results], axis=1)  # (P, D, H, Q)
    naive = np.stack([r.seasonal_naive for r in results], axis=1)  # (P, D, H)
    on_grid = np.stack([r.predispatch for r in results], axis=1)
    covered = np.stack([r.predispatch_covered for r in results], axis=1)
    ours_name = f"{cycle.forecast_algorithm} v{cycle.forecast_algorithm_version}"
    scored = np.isfinite(actuals)
    baselines = {SEASONAL_NAIVE: naive, AEMO_ALONE if case.p5min else PREDISPATCH: on_grid}
    usable = {name: forecast for name, forecast in baselines.items()
              if bool(np.all(np.isfinite(forecast) | ~scored))}
    scores: dict[str, BucketScores] = {}
    for index, product in enumerate(chosen):
        methods = {ours_name: ours[index]}
        methods.update({name: forecast[index][..., np.newaxis] for name, forecast in usable.items()})
        scores[product] = evaluate_skill(actuals[index], methods, job.quantiles, buckets,
                                         point_level=cycle.optimiser_price_quantile)
    notes = _coverage_notes(buckets, covered, scored) if case.predispatch or case.p5min else []
    return SkillTable.from_scores(scores, job.quantiles, point_level=cycle.optimiser_price_quantile,
                                  region=region, decisions=len(results), horizon_intervals=horizon_intervals,
                                  elapsed_s=time.perf_counter() - started, notes=notes)


def decision_window(dispatch: DispatchPrices, region: str, warmup: timedelta) -> tuple[datetime, datetime]:
    """(start, exclusive end) of the decision times of the data's first stretch of consecutive intervals of
    ``region`` with a price: from ``warmup`` after its first interval to its last usable boundary (the cycle
    bids for the interval ending 10 minutes after its decision's interval boundary).

    Raises ValueError when that stretch is not longer than ``warmup``.
    """
    priced = np.isfinite(dispatch.price[dispatch.region_index(region), :, 0])
    intervals = dispatch.intervals[priced]
    if not len(intervals):
        raise ValueError(f"the data has no price of {region}")
    breaks = np.flatnonzero(np.diff(intervals) != np.timedelta64(300, "s"))
    last = intervals[breaks[0]] if breaks.size else intervals[-1]
    start = intervals[0].astype(datetime) - INTERVAL + warmup
    end = last.astype(datetime) - INTERVAL
    if end <= start:
        raise ValueError(f"the data's first stretch of {region} prices ({intervals[0]} .. {last}) is not longer "
                         f"than the {warmup} of history a decision needs")
    return start, end


def run_forecast_skill(settings: Settings, *, region: str | None = None,
                       products: Sequence[str] | None = None, decisions: int = 60,
                       horizon_intervals: int = 288, seed: int = 0,
                       workers: int = DEFAULT_WORKERS, case: ForecastCase = DEFAULT_CASE) -> SkillTable:
    """Skill of the configured forecaster vs seasonal naive and AEMO pre-dispatch alone on the configured
    data (January 2021), by horizon bucket, in data situation ``case`` (default: pre-dispatch, the
    configured history).

    ``decisions`` decision times are spread evenly over the data (after WARMUP_DAYS days, so two days of
    history exist; ``seed`` shifts the comb) at an interval boundary + ``settings.cycle.schedule_offset_s``;
    see :func:`score_case`. Raises ValueError for an unknown region or product, or too few / too many
    decisions for the data.
    """
    dispatch, predispatch = load_market_data(settings.market_data.data_dir)
    region = region or settings.cycle.region
    _check_choice(dispatch, region, products)
    window_start, window_end = decision_window(dispatch, region, timedelta(days=WARMUP_DAYS))
    times = spread_decision_times(window_start, window_end, decisions,
                                  schedule_offset_s=settings.cycle.schedule_offset_s, seed=seed)
    return score_case(dispatch, predispatch, settings, region=region, case=case, times=times, products=products,
                      horizon_intervals=horizon_intervals, workers=workers, seed=seed)


@dataclass(frozen=True, eq=False)
class CaseResult:
    """One data situation scored on one data set: ``data`` names the data, ``table`` holds the scores."""

    data: str
    case: ForecastCase
    table: SkillTable


def p5min_decision_times(p5min: P5minPrices, region: str, settings: Settings) -> list[datetime]:
    """The cycle's decision times (boundary + ``schedule_offset_s``) while ``region``'s P5MIN runs last: from
    the first run's first interval to the last run's (AEST)."""
    runs = p5min.run_time[p5min.row_stop[p5min.region_index(region)] > p5min.row_start[p5min.region_index(region)]]
    if not len(runs):
        raise ValueError(f"the P5MIN data has no run of {region}")
    first, last = runs.min().astype(datetime), runs.max().astype(datetime)
    count = (last - first) // INTERVAL + 1
    offset = timedelta(seconds=settings.cycle.schedule_offset_s)
    return [first + INTERVAL * index + offset for index in range(count)]


def run_p5min_cases(settings: Settings, p5min: P5minPrices, *, region: str,
                    dispatch: DispatchPrices | None = None, predispatch: PredispatchPrices | None = None,
                    workers: int = 1, data: str = "P5MIN runs") -> list[CaseResult]:
    """The P5MIN cases (:data:`P5MIN_CASES`) over the hour after each decision while ``p5min``'s runs last.

    History and actuals come from ``dispatch`` (DISPATCHPRICE) or, without it, from each run's first
    interval (:meth:`P5minPrices.first_interval_prices`); without ``predispatch`` the cases with
    pre-dispatch have none to use (they equal the cases without). ENERGY only (what the runs price for every
    product is scored where the data has it).
    """
    history = dispatch if dispatch is not None else p5min.first_interval_prices()
    runs_predispatch = predispatch if predispatch is not None else PredispatchPrices.empty(history.products)
    times = p5min_decision_times(p5min, region, settings)
    # The cycle must find a price history: decisions start once the first interval is published.
    publication = publication_model(settings.market_data)
    first_known = publication.expected_at(history.intervals[0].astype(datetime))
    # ... and bid for an interval the data still covers (the one ending 10 minutes after its boundary).
    offset = timedelta(seconds=settings.cycle.schedule_offset_s)
    last_bid = history.intervals[-1].astype(datetime) - 2 * INTERVAL + offset
    times = [moment for moment in times if first_known <= moment <= last_bid]
    results = []
    for case in P5MIN_CASES:
        table = score_case(history, runs_predispatch, settings, region=region, case=case, times=times,
                           products=(ENERGY,), horizon_intervals=12, p5min=p5min, workers=workers)
        results.append(CaseResult(data=data, case=case, table=table))
    return results


def run_cases(settings: Settings, *, region: str | None = None, decisions: int = 60,
              recent_data: Path | None = None, p5min_paths: Sequence[Path] = (), seed: int = 0,
              workers: int = DEFAULT_WORKERS) -> list[CaseResult]:
    """ENERGY skill in every data situation: :data:`PREDISPATCH_CASES` on the configured data (January
    2021), :data:`HISTORY_ONLY_CASES` on ``recent_data`` (a DISPATCHPRICE file or folder, e.g. a 2024-2026
    month; decisions over its first stretch of consecutive intervals after one day), and
    :data:`P5MIN_CASES` on the AEMO P5MIN files ``p5min_paths`` (with the configured data's DISPATCHPRICE
    where it covers them). ``decisions`` per case and data set."""
    region = region or settings.cycle.region
    results = []
    for case in PREDISPATCH_CASES:
        table = run_forecast_skill(settings, region=region, products=(ENERGY,), decisions=decisions,
                                   seed=seed, workers=workers, case=case)
        results.append(CaseResult(data=str(settings.market_data.data_dir), case=case, table=table))
    if recent_data is not None:
        recent = load_dispatch_prices(recent_data)
        _check_choice(recent, region, (ENERGY,))
        window_start, window_end = decision_window(recent, region, timedelta(days=1))
        count = min(decisions, (window_end - window_start) // INTERVAL)
        times = spread_decision_times(window_start, window_end, count,
                                      schedule_offset_s=settings.cycle.schedule_offset_s, seed=seed)
        nothing = PredispatchPrices.empty(recent.products)
        for case in HISTORY_ONLY_CASES:
            table = score_case(recent, nothing, settings, region=region, case=case, times=times,
                               products=(ENERGY,), workers=workers, seed=seed)
            results.append(CaseResult(data=str(recent_data), case=case, table=table))
    if p5min_paths:
        p5min = load_p5min_files(p5min_paths)
        dispatch, predispatch = load_market_data(settings.market_data.data_dir)
        covers = bool(np.isin(p5min.run_time, dispatch.intervals).all())
        results += run_p5min_cases(settings, p5min, region=region, dispatch=dispatch if covers else None,
                                   predispatch=predispatch if covers else None, workers=workers,
                                   data=", ".join(str(path) for path in p5min_paths))
    return results


# --------------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------------


def product_family(product: str) -> str:
    """ENERGY, RAISE or LOWER: the family a product belongs to (its name up to the service)."""
    if is_raise(product):
        return RAISE_PREFIX
    if is_lower(product):
        return LOWER_PREFIX
    return product


def _families(products: Sequence[str]) -> list[tuple[str, list[int]]]:
    """(family, product positions), ENERGY first, then the others in data order."""
    order: dict[str, list[int]] = {}
    for index, product in enumerate(products):
        order.setdefault(product_family(product), []).append(index)
    return sorted(order.items(), key=lambda item: item[0] != ENERGY)


def _money(value: float) -> str:
    """A price for the table: 3 decimals below 10 (FCAS errors are cents), else 2; "-" if undefined."""
    if not math.isfinite(value):
        return "-"
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.2f}"


def print_skill(console: Console, table: SkillTable) -> None:
    """Print one rich table per product family (ENERGY first): rows = product x horizon bucket, columns =
    scored intervals, MAE of each method (the best highlighted), the MAE skill of the first method over
    the best baseline, and the first method's pinball loss. Units: $/MWh (ENERGY), $/MW/h (FCAS)."""
    levels = ", ".join(f"{q:g}" for q in table.quantiles)
    console.print(f"[bold]Forecast skill[/bold] {table.region}: {table.decisions} decisions, "
                  f"{table.horizon_intervals}-interval horizon, quantiles {levels}; "
                  f"{table.elapsed_s:.1f} s")
    ours = table.methods[0]
    for family, positions in _families(table.products):
        unit = "$/MWh" if family == ENERGY else "$/MW/h"
        rich_table = Table(title=f"{family} ({unit}): MAE of the q={table.point_level:g} forecast, "
                                 "pinball over the quantile levels", title_justify="left")
        if len(positions) > 1:
            rich_table.add_column("product")
        rich_table.add_column("lead")
        rich_table.add_column("n", justify="right")
        for method in table.methods:
            rich_table.add_column(f"MAE {method}", justify="right")
        rich_table.add_column("skill vs best baseline", justify="right")
        rich_table.add_column(f"pinball {ours}", justify="right")
        for position in positions:
            for column, bucket in enumerate(table.buckets):
                mae = table.mae[position, :, column]
                finite = np.isfinite(mae)
                best = int(np.nanargmin(mae)) if finite.any() else -1
                cells = [f"[bold green]{_money(float(v))}[/]" if m == best else _money(float(v))
                         for m, v in enumerate(mae)]
                baseline = np.nanmin(mae[1:]) if mae.size > 1 and np.isfinite(mae[1:]).any() else math.nan
                skill = 1 - mae[0] / baseline if math.isfinite(baseline) and baseline > 0 else math.nan
                row = [table.products[position]] if len(positions) > 1 else []
                row += [bucket[0], str(int(table.n[position, 0, column])), *cells,
                        "-" if not math.isfinite(skill) else f"{skill:+.0%}",
                        _money(float(table.pinball[position, 0, column]))]
                rich_table.add_row(*row, end_section=column == len(table.buckets) - 1)
        console.print(rich_table)
    console.print(f"skill vs best baseline = 1 - MAE {ours} / lowest baseline MAE (positive: {ours} is "
                  "better). Point baselines score pinball = MAE / 2 at symmetric quantile levels.")
    for note in table.notes:
        console.print(note)


def print_cases(console: Console, results: Sequence[CaseResult]) -> None:
    """Print the ENERGY skill of every data situation: rows = data x case x horizon bucket; columns = scored
    intervals, MAE of each method (the best highlighted), pinball loss of ours ($/MWh)."""
    method_names = [SEASONAL_NAIVE, PREDISPATCH, AEMO_ALONE]
    rich_table = Table(title="ENERGY ($/MWh) by data situation: MAE of the median (pinball over the quantile "
                             "levels)", title_justify="left")
    for heading in ("data", "case", "lead", "n", "ours"):
        rich_table.add_column(heading, justify="right" if heading in ("n", "ours") else "left")
    for name in method_names:
        rich_table.add_column(name, justify="right")
    for result in results:
        table = result.table
        position = table.products.index(ENERGY)
        for column, bucket in enumerate(table.buckets):
            mae = table.mae[position, :, column]
            pinball = table.pinball[position, :, column]
            best = int(np.nanargmin(mae)) if np.isfinite(mae).any() else -1
            texts = [f"{_money(float(m))} ({_money(float(b))})" for m, b in zip(mae, pinball, strict=True)]
            texts = [f"[bold green]{text}[/]" if index == best else text for index, text in enumerate(texts)]
            cells = [texts[table.methods.index(name)] if name in table.methods else "-" for name in method_names]
            rich_table.add_row(result.data if column == 0 else "", result.case.name if column == 0 else "",
                               bucket[0], str(int(table.n[position, 0, column])), texts[0], *cells,
                               end_section=column == len(table.buckets) - 1)
    console.print(rich_table)
    if results:
        console.print(f"ours = {results[0].table.methods[0]}; {AEMO_ALONE} = AEMO's P5MIN for its hour, then "
                      "pre-dispatch; one day with gaps: 5 % of intervals never published.")


def with_forecaster(settings: Settings, forecaster: str) -> Settings:
    """``settings`` with the cycle's forecaster set to ``forecaster`` (``NAME@VERSION``, a registered one).

    Raises ValueError for a malformed or unknown forecaster, listing the registered ones."""
    name, _, version = forecaster.partition("@")
    default_registry().resolve("forecast", name, version)
    return replace(settings, cycle=replace(settings.cycle, forecast_algorithm=name, forecast_algorithm_version=version))


def main(settings: Settings, region: str | None, decisions: int, *, cases: bool = False,
         recent_data: Path | None = None, p5min_paths: Sequence[Path] = (), forecaster: str | None = None) -> int:
    """Run the forecast-skill benchmark (every product, 288-interval horizon) and print it; with ``cases``
    also the ENERGY skill in every data situation (:func:`run_cases`). ``forecaster`` (``NAME@VERSION``)
    replaces the configured one. Returns 0."""
    if forecaster:
        settings = with_forecaster(settings, forecaster)
    console = Console(width=160)
    table = run_forecast_skill(settings, region=region, decisions=decisions)
    print_skill(console, table)
    if cases:
        print_cases(console, run_cases(settings, region=region, decisions=decisions, recent_data=recent_data,
                                       p5min_paths=p5min_paths))
    return 0
