"""``vpp bench forecast``: skill of the price forecaster on January 2021, by product and horizon.

For decision times spread over the month (after two days of history), each decision is replayed the way
the live cycle makes it: the as-of market snapshot (:func:`services.market_data.build_snapshot` with the
configured publication model and history length; estimated at the data cut-off if the latest interval
is still unknown), the cycle's forecast request (:func:`algorithms.market.cycle_requests.forecast_request`) and
the real forecaster (:func:`algorithms.market.forecast.run_forecast`). The same snapshot gives two baselines:
seasonal naive (yesterday-same-time from the snapshot history) and AEMO pre-dispatch alone (the snapshot's
pre-dispatch run on the 5-minute grid, held flat beyond its last period). All three are scored against
the DISPATCHPRICE actuals with :func:`algorithms.market.forecast_skill.evaluate_skill`.

Decisions run in worker processes (spawned with single-threaded BLAS: the forecaster's small
least-squares fits gain nothing from BLAS threads, and on two cores they contend badly).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from rich.console import Console
from rich.table import Table

from aemo.mms import load_market_data
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import INTERVAL, INTERVALS_PER_DAY, from_timestamp
from algorithms.common.products import ENERGY, LOWER_PREFIX, RAISE_PREFIX, is_lower, is_raise
from algorithms.common.replay_clock import cycle_timeline
from algorithms.market.as_of import build_snapshot, estimate_missing, latest_known, publication_model
from algorithms.market.cycle_requests import forecast_request
from algorithms.market.forecast import forecast_from_result, run_forecast
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
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from pools.blas import single_threaded_blas
from settings import Settings
from vpp.v1 import common_pb2, market_data_pb2

SEASONAL_NAIVE = "seasonal-naive"
PREDISPATCH = "aemo-predispatch"
WARMUP_DAYS = 2
DEFAULT_WORKERS = 2


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

    ``ours`` has shape (n_products, horizon, n_quantiles); ``seasonal_naive``, ``predispatch`` and
    ``predispatch_covered`` (whether the run itself covered the interval, rather than being held)
    have shape (n_products, horizon). Row ``i`` is the interval ending ``first_interval + 5 min * i``.
    """

    decision_time: datetime
    first_interval: datetime
    ours: FloatArray
    seasonal_naive: FloatArray
    predispatch: FloatArray
    predispatch_covered: np.ndarray


def cycle_snapshot(dispatch: DispatchPrices, predispatch: PredispatchPrices, settings: Settings, region: str,
                   decision_time: datetime) -> tuple[datetime, market_data_pb2.MarketSnapshot]:
    """(dispatch interval, snapshot) of the cycle deciding at ``decision_time`` (AEST), as the cycle gets it.

    The snapshot is taken as of the decision time; if its latest interval is not known then, the cycle
    waits until its data cut-off and carries the last known values forward (``estimate_missing``).
    """
    cycle = settings.cycle
    timeline = cycle_timeline(decision_time, market_data_cutoff_s=cycle.market_data_cutoff_s,
                              gate_closure_margin_s=cycle.gate_closure_margin_s)
    publication = publication_model(settings.market_data)
    snapshot = build_snapshot(dispatch, predispatch, region=region,
                              dispatch_interval=timeline.dispatch_interval, as_of=decision_time,
                              history_intervals=cycle.history_intervals, publication=publication)
    if not latest_known(snapshot):
        snapshot = estimate_missing(build_snapshot(
            dispatch, predispatch, region=region, dispatch_interval=timeline.dispatch_interval,
            as_of=timeline.data_cutoff, history_intervals=cycle.history_intervals, publication=publication))
    return timeline.dispatch_interval, snapshot


def _history_prices(history: market_data_pb2.ProductPriceHistory) -> FloatArray:
    """History prices with MISSING slots as NaN (as the forecaster reads them)."""
    prices = np.asarray(history.price, dtype=np.float64)
    missing = np.asarray(history.quality, dtype=np.int64) == common_pb2.DATA_QUALITY_MISSING
    return np.where(missing, np.nan, prices) if missing.size == prices.size else prices


def decision_forecasts(dispatch: DispatchPrices, predispatch: PredispatchPrices, settings: Settings,
                       job: SkillJob, decision_time: datetime) -> DecisionForecasts:
    """Forecasts of every product of ``job`` for the cycle deciding at ``decision_time`` (AEST).

    Raises InvalidRequestError naming the decision and product when a request cannot be forecast, and
    ValueError when the snapshot lacks a product's history or pre-dispatch forecast.
    """
    first_interval, snapshot = cycle_snapshot(dispatch, predispatch, settings, job.region, decision_time)
    algorithm = common_pb2.AlgorithmRef(name=job.algorithm_name, version=job.algorithm_version)
    histories = {history.product: history for history in snapshot.history}
    runs = {run.product: run for run in snapshot.predispatch}
    horizon = job.horizon_intervals
    ours, naive, on_grid, covered = [], [], [], []
    for product in job.products:
        label = f"decision {decision_time:%Y-%m-%d %H:%M:%S}, {job.region} {product}"
        if product not in histories or product not in runs:
            notes = "; ".join(snapshot.quality_notes)
            raise ValueError(f"{label}: the snapshot has no price history or no pre-dispatch forecast"
                             + (f" ({notes})" if notes else ""))
        request_id = f"forecast-skill/{job.region}/{decision_time:%Y%m%dT%H%M%S}/{product}"
        try:
            request = forecast_request(
                snapshot, product, request_id=request_id, decision_time=decision_time,
                first_interval=first_interval, horizon_intervals=horizon, quantiles=job.quantiles,
                algorithm=algorithm)
            ours.append(forecast_from_result(run_forecast(request)).price)
        except InvalidRequestError as error:
            raise InvalidRequestError(f"{label}: {error}") from error
        history = histories[product]
        history_last = from_timestamp(history.first_interval) + INTERVAL * (len(history.price) - 1)
        naive.append(seasonal_naive_forecast(_history_prices(history), horizon, INTERVALS_PER_DAY,
                                             first_lead=(first_interval - history_last) // INTERVAL))
        run = runs[product]
        periods = [from_timestamp(period) for period in run.period]
        run_price = np.asarray(run.price, dtype=np.float64)
        on_grid.append(predispatch_forecast_on_grid(periods, run_price, first_interval, horizon))
        covered.append(np.isfinite(predispatch_forecast_on_grid(periods, run_price, first_interval, horizon,
                                                                hold=False)))
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

_worker_context: tuple[DispatchPrices, PredispatchPrices, Settings, SkillJob] | None = None


def _init_worker(dispatch: DispatchPrices, predispatch: PredispatchPrices, settings: Settings,
                 job: SkillJob) -> None:
    global _worker_context
    _worker_context = (dispatch, predispatch, settings, job)


def _worker_decision(decision_time: datetime) -> DecisionForecasts:
    if _worker_context is None:
        raise RuntimeError("forecast-skill worker used before its initialiser ran")
    return decision_forecasts(*_worker_context, decision_time)


def _run_decisions(dispatch: DispatchPrices, predispatch: PredispatchPrices, settings: Settings,
                   job: SkillJob, times: Sequence[datetime], workers: int) -> list[DecisionForecasts]:
    if workers <= 1 or len(times) <= 1:
        return [decision_forecasts(dispatch, predispatch, settings, job, moment) for moment in times]
    context = multiprocessing.get_context("spawn")
    chunk = max(1, math.ceil(len(times) / (4 * workers)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(dispatch, predispatch, settings, job)) as pool:
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


def run_forecast_skill(settings: Settings, *, region: str | None = None,
                       products: Sequence[str] | None = None, decisions: int = 60,
                       horizon_intervals: int = 288, seed: int = 0,
                       workers: int = DEFAULT_WORKERS) -> SkillTable:
    """Skill of the configured forecaster vs seasonal naive and AEMO pre-dispatch alone, by horizon bucket.

    ``decisions`` decision times are spread evenly over the data (after WARMUP_DAYS days, so two days of
    history exist; ``seed`` shifts the comb) at an interval boundary + ``settings.cycle.schedule_offset_s``.
    Each is replayed as the live cycle makes it (see the module docstring) for ``products`` (default:
    every product in the data) of ``region`` (default: the cycle's) over ``horizon_intervals`` 5-minute
    intervals, on ``workers`` processes. Scores are $/MWh (ENERGY) or $/MW/h (FCAS) against DISPATCHPRICE;
    intervals beyond the data are not scored. The returned table carries the wall time in ``elapsed_s``.

    Raises ValueError for an unknown region or product, or too few / too many decisions for the data.
    """
    started = time.perf_counter()
    cycle = settings.cycle
    dispatch, predispatch = load_market_data(settings.market_data.data_dir)
    region = region or cycle.region
    if region not in dispatch.regions:
        raise ValueError(f"unknown region {region!r}; the data has regions {', '.join(dispatch.regions)}")
    chosen = tuple(products) if products else dispatch.products
    unknown = [product for product in chosen if product not in dispatch.products]
    if unknown:
        raise ValueError(f"unknown product(s) {', '.join(unknown)}; "
                         f"the data has {', '.join(dispatch.products)}")
    buckets = horizon_buckets(horizon_intervals)

    first_end = dispatch.intervals[0].astype(datetime)
    last_end = dispatch.intervals[-1].astype(datetime)
    window_start = first_end - INTERVAL + timedelta(days=WARMUP_DAYS)
    # The cycle bids for the interval ending 10 minutes after its decision's interval boundary, so the
    # last usable boundary is last_end - 10 min; the window end is exclusive.
    window_end = last_end - INTERVAL
    times = spread_decision_times(window_start, window_end, decisions,
                                  schedule_offset_s=cycle.schedule_offset_s, seed=seed)
    job = SkillJob(region=region, products=chosen, horizon_intervals=horizon_intervals,
                   quantiles=tuple(cycle.forecast_quantiles), algorithm_name=cycle.forecast_algorithm,
                   algorithm_version=cycle.forecast_algorithm_version)
    results = _run_decisions(dispatch, predispatch, settings, job, times, workers)

    actuals = actual_prices(dispatch, region, chosen, [r.first_interval for r in results], horizon_intervals)
    ours = np.stack([r.ours for r in results], axis=1)  # (P, D, H, Q)
    naive = np.stack([r.seasonal_naive for r in results], axis=1)  # (P, D, H)
    on_grid = np.stack([r.predispatch for r in results], axis=1)
    covered = np.stack([r.predispatch_covered for r in results], axis=1)
    ours_name = f"{cycle.forecast_algorithm} v{cycle.forecast_algorithm_version}"
    scores: dict[str, BucketScores] = {}
    for index, product in enumerate(chosen):
        scores[product] = evaluate_skill(
            actuals[index],
            {ours_name: ours[index], SEASONAL_NAIVE: naive[index][..., np.newaxis],
             PREDISPATCH: on_grid[index][..., np.newaxis]},
            job.quantiles, buckets, point_level=cycle.optimiser_price_quantile)
    notes = _coverage_notes(buckets, covered, np.isfinite(actuals))
    return SkillTable.from_scores(scores, job.quantiles, point_level=cycle.optimiser_price_quantile,
                                  region=region, decisions=len(results), horizon_intervals=horizon_intervals,
                                  elapsed_s=time.perf_counter() - started, notes=notes)


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


def main(settings: Settings, region: str | None, decisions: int) -> int:
    """Run the forecast-skill benchmark (every product, 288-interval horizon) and print it; returns 0."""
    console = Console(width=140)
    table = run_forecast_skill(settings, region=region, decisions=decisions)
    print_skill(console, table)
    return 0
