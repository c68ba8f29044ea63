"""The regimes table: every month and region of the market store with enough data, backtested with the
current strategy and compared with perfect foresight over the same intervals.

**Enough data.** A month's DISPATCHPRICE of a region is cut into stretches of consecutive intervals (the
test data holds days 1–3 and the last 2–3 days of each month; AEMO's full months are one stretch). Each
stretch's first day (``warmup_intervals``, 288) is history only; every later interval of it is a decision.
A stretch of a day or less gives no decision, and a month without one is left out. History reaches back as
far as the strategy's window (7 days) across gaps and months: what the data does not hold is MISSING.
January 2021 of the configured data folder (the embedded month, with AEMO's pre-dispatch forecasts) joins
the table for the cycle's region (``[cycle] region``, SA1), under the same rule: the reference the store's
months are read against.

Every stretch is one :class:`~backtest.engine.BacktestConfig` (the battery starts each stretch at the
configured SoC); all of them run through :func:`backtest.engine.run_backtests`, in parallel. Perfect
foresight is :func:`backtest.engine.perfect_foresight_revenue` (energy + FCAS) per stretch, with the
products priced in every interval of it (:func:`backtest.runs.segment_market`). A row sums its stretches.

**Price-taker and depth-limited.** Every row shows both: where the store holds DISPATCHREGIONSUM for every
decided interval, FCAS is also cleared and benchmarked with each service capped at the region's enablement ×
``[market_depth] fcas_enablement_share`` (:mod:`algorithms.market.depth`); elsewhere the depth-limited cells
say "price-taker only". **End of run**: a stretch that ends below its starting SoC pays for refilling the
shortfall at its mean ENERGY price (:func:`backtest.engine.end_of_run_adjustment`), in both captures.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

from aemo.tables import month_label, next_month
from algorithms.market.prices import DispatchPrices
from backtest.compare import PRICE_TAKER_ONLY
from backtest.engine import (
    BacktestConfig,
    BacktestResult,
    depth_caps_window,
    end_of_run_adjustment,
    market_prices,
    perfect_foresight_revenue,
    run_backtests,
)
from backtest.ledger import contiguous_runs
from backtest.runs import (
    FILES_ORIGIN,
    STORE_ORIGIN,
    MarketInputs,
    Period,
    RunError,
    data_span,
    load_inputs,
    load_store_inputs,
    open_store,
    segment_market,
    with_data_price_limits,
)
from settings import Settings

INTERVAL = timedelta(minutes=5)
CSV_FILE = "months.csv"
MARKDOWN_FILE = "months.md"
EMBEDDED_MONTH = date(2021, 1, 1)

Progress = Callable[[BacktestResult], None]


@dataclass(frozen=True)
class MonthRow:
    """One month and region of the regimes table: revenue ($) realised (energy, FCAS, of which the 1-second
    markets) and of perfect foresight over the same intervals, capture and the energy share as fractions
    (None without a benchmark or revenue). ``source``: ``store`` or ``files``; ``fcas_markets``: the FCAS
    products priced in the month; ``stretches``: the periods of consecutive data decided in."""

    month: str
    region: str
    source: str
    aemo_forecasts: bool
    fcas_markets: int
    stretches: int
    decisions: int
    intervals_without_data: int
    energy_revenue_dollars: float
    fcas_revenue_dollars: float
    total_revenue_dollars: float
    one_second_revenue_dollars: float
    perfect_foresight_dollars: float
    capture: float | None
    energy_share: float | None
    failed_decisions: int
    validation_rejections: int
    # Market depth (DISPATCHREGIONSUM held for every decided interval): FCAS capped at the region's enablement
    # × [market_depth] fcas_enablement_share in clearing and perfect foresight; None: price-taker only.
    market_depth: bool = False
    depth_fcas_revenue_dollars: float | None = None
    depth_total_revenue_dollars: float | None = None
    perfect_foresight_depth_dollars: float | None = None
    capture_depth: float | None = None
    # End of run: the charge (≤ 0 $) for stretches ending below their starting SoC (in every capture), the
    # starting SoC (MWh, each stretch) and each stretch's SoC at its end (MWh).
    end_of_run_adjustment_dollars: float = 0.0
    initial_state_of_charge_mwh: float = 0.0
    final_states_of_charge_mwh: tuple[float, ...] = ()
    # Decisions that fell back to the safe bid (the strategy's plan was unusable or its bid invalid).
    safe_fallbacks: int = 0


def month_periods(dispatch: DispatchPrices, region: str, month: date, warmup_intervals: int) -> list[Period]:
    """The decision periods of ``region`` in ``month`` (see the module docstring): for each stretch of
    consecutive intervals with an ENERGY price (interval-ending AEST, the month's intervals ending after
    00:00 on its 1st up to 00:00 on the next 1st), the part after its first ``warmup_intervals``. Pure."""
    first = np.datetime64(datetime(month.year, month.month, 1), "s") + np.timedelta64(300, "s")
    last = np.datetime64(datetime.combine(next_month(month), datetime.min.time()), "s")
    if region not in dispatch.regions:
        return []
    priced = np.isfinite(dispatch.price[dispatch.region_index(region), :, 0])
    inside = (dispatch.intervals >= first) & (dispatch.intervals <= last) & priced
    intervals = [moment.item() for moment in dispatch.intervals[inside].astype("datetime64[s]")]
    periods: list[Period] = []
    for start, count in contiguous_runs(intervals):
        if count > warmup_intervals:
            decision_start = start + INTERVAL * (warmup_intervals - 1)
            periods.append(Period(decision_start, start + INTERVAL * (count - 1)))
    return periods


@dataclass(frozen=True)
class _Target:
    """The stretches of one month and region, and the data they run on."""

    month: date
    region: str
    inputs: MarketInputs
    periods: tuple[Period, ...]


def _fcas_markets(dispatch: DispatchPrices, region: str, month: date) -> int:
    first = np.datetime64(datetime(month.year, month.month, 1), "s")
    last = np.datetime64(datetime.combine(next_month(month), datetime.min.time()), "s")
    inside = (dispatch.intervals > first) & (dispatch.intervals <= last)
    prices = dispatch.price[dispatch.region_index(region)][inside]
    return int(np.isfinite(prices[:, 1:]).any(axis=0).sum())


def _store_targets(settings: Settings, regions: Sequence[str], months: Sequence[date] | None,
                   warmup_intervals: int, history: int, horizon: int) -> list[_Target]:
    store = open_store(settings)
    if store is None:
        return []
    held = [label for label in store.months("DISPATCHPRICE") if label != "all"]
    chosen = [date(int(label[:4]), int(label[5:7]), 1) for label in held]
    if months is not None:
        wanted = {month_label(month) for month in months}
        chosen = [month for month in chosen if month_label(month) in wanted]
    if not chosen:
        return []
    months_held = Period(datetime.combine(chosen[0], datetime.min.time()),
                         datetime.combine(next_month(chosen[-1]), datetime.min.time()))
    try:
        inputs = load_store_inputs(store, list(regions), data_span(months_held, history, horizon))
    except RunError:
        return []
    targets = []
    for month in chosen:
        for region in regions:
            periods = month_periods(inputs.dispatch, region, month, warmup_intervals)
            if periods:
                targets.append(_Target(month, region, inputs, tuple(periods)))
    return targets


def _file_targets(settings: Settings, regions: Sequence[str], warmup_intervals: int) -> list[_Target]:
    inputs = load_inputs([settings.market_data.data_dir])
    targets = []
    for region in regions:
        periods = month_periods(inputs.dispatch, region, EMBEDDED_MONTH, warmup_intervals)
        if periods:
            targets.append(_Target(EMBEDDED_MONTH, region, inputs, tuple(periods)))
    return targets


def _row(settings: Settings, target: _Target, results: Sequence[BacktestResult], market: DispatchPrices) -> MonthRow:
    """Sum a month's stretches and their perfect foresight (energy + FCAS over the intervals decided), price-taker
    and, where the data has market depth, depth-limited; the end-of-run charge of each stretch
    (:func:`backtest.engine.end_of_run_adjustment`) is in both captures."""
    benchmark = 0.0
    depth_known = all(r.depth_fcas_revenue_dollars is not None for r in results)
    depth_benchmark = 0.0
    for result in results:
        intervals = [record.dispatch_interval for record in result.records]
        for first, count in contiguous_runs(intervals):
            window = segment_market(market, target.region, first, count)
            energy, fcas = perfect_foresight_revenue(settings, window, target.region, first, count, include_fcas=True)
            benchmark += energy + fcas
            if depth_known and depth_caps_window(settings, window, target.region, first, count) is not None:
                energy, fcas = perfect_foresight_revenue(settings, window, target.region, first, count,
                                                         include_fcas=True, depth_limited=True)
                depth_benchmark += energy + fcas
            else:
                depth_known = False
    energy = math.fsum(r.energy_revenue_dollars for r in results)
    fcas = math.fsum(r.fcas_revenue_dollars for r in results)
    one_second = math.fsum(value for r in results for product, value in r.fcas_revenue_by_product_dollars.items()
                           if product.endswith("1SEC"))
    total = energy + fcas
    end_of_run = math.fsum(end_of_run_adjustment(settings, r) for r in results)
    depth_fcas = math.fsum(r.depth_fcas_revenue_dollars or 0.0 for r in results) if depth_known else None
    depth_total = None if depth_fcas is None else energy + depth_fcas
    return MonthRow(
        month=month_label(target.month), region=target.region,
        source=STORE_ORIGIN if target.inputs.origin == STORE_ORIGIN else FILES_ORIGIN,
        aemo_forecasts=target.region in target.inputs.predispatch.regions,
        fcas_markets=_fcas_markets(target.inputs.dispatch, target.region, target.month),
        stretches=len(target.periods), decisions=sum(len(r.records) for r in results),
        intervals_without_data=sum(r.intervals_without_data for r in results),
        energy_revenue_dollars=energy, fcas_revenue_dollars=fcas, total_revenue_dollars=total,
        one_second_revenue_dollars=one_second, perfect_foresight_dollars=benchmark,
        capture=(total + end_of_run) / benchmark if benchmark > 0 else None,
        energy_share=energy / total if total > 0 else None,
        failed_decisions=sum(r.failed_decisions for r in results),
        validation_rejections=sum(r.validation_rejections for r in results),
        market_depth=depth_known, depth_fcas_revenue_dollars=depth_fcas, depth_total_revenue_dollars=depth_total,
        perfect_foresight_depth_dollars=depth_benchmark if depth_known else None,
        capture_depth=((depth_total + end_of_run) / depth_benchmark
                       if depth_total is not None and depth_benchmark > 0 else None),
        end_of_run_adjustment_dollars=end_of_run,
        initial_state_of_charge_mwh=settings.battery.initial_state_of_charge_mwh,
        final_states_of_charge_mwh=tuple(r.final_state_of_charge_mwh for r in results),
        safe_fallbacks=sum(r.safe_fallbacks for r in results))


@dataclass(frozen=True)
class MonthResults:
    """One month and region of the regimes table as backtested: its stretches' results, the market they were
    cleared against (prices with administered pricing, region enablement) and the settings they ran with
    (the data's price limits in them)."""

    month: date
    region: str
    results: tuple[BacktestResult, ...]
    market: DispatchPrices
    settings: Settings


def _group_results(settings: Settings, targets: Sequence[_Target], workers: int,
                   on_result: Progress | None) -> list[MonthResults]:
    """Backtest targets that share one data set, their stretches in parallel."""
    if not targets:
        return []
    inputs = targets[0].inputs
    # AEMO's MARKET_PRICE_THRESHOLDS in the data (the store keeps every year's) price the months before the
    # configured financial years, as `vpp backtest run` does.
    settings = with_data_price_limits(settings, inputs)
    market = market_prices(settings, inputs.dispatch)
    offset = timedelta(seconds=settings.cycle.schedule_offset_s)
    configs = [BacktestConfig(region=target.region, first_decision=period.first_decision(int(offset.total_seconds())),
                              decisions=period.intervals)
               for target in targets for period in target.periods]
    results = run_backtests(settings, inputs.dispatch, inputs.predispatch, configs, workers=workers, market=market,
                            on_result=on_result)
    grouped, position = [], 0
    for target in targets:
        grouped.append(MonthResults(target.month, target.region,
                                    tuple(results[position:position + len(target.periods)]), market, settings))
        position += len(target.periods)
    return grouped


def _targets(settings: Settings, regions: Sequence[str], months: Sequence[date] | None,
             include_embedded: bool) -> tuple[list[_Target], list[_Target]]:
    history = settings.market_data.history_read_intervals(settings.cycle.history_intervals)
    horizon = settings.cycle.horizon_intervals
    warmup = settings.market.intervals_per_trading_day
    store_targets = _store_targets(settings, regions, months, warmup, history, horizon)
    file_targets = _file_targets(settings, [settings.cycle.region], warmup) if include_embedded else []
    return store_targets, file_targets


def run_month_results(settings: Settings, *, regions: Sequence[str], months: Sequence[date] | None = None,
                      include_embedded: bool = True, workers: int = 1,
                      on_result: Progress | None = None) -> list[MonthResults]:
    """Backtest the months of the regimes table (:func:`run_months`, same arguments) and keep every stretch's
    result (decision records included), by month, then region."""
    store_targets, file_targets = _targets(settings, regions, months, include_embedded)
    grouped = (_group_results(settings, store_targets, workers, on_result)
               + _group_results(settings, file_targets, workers, on_result))
    return sorted(grouped, key=lambda group: (group.month, group.region))


def run_months(settings: Settings, *, regions: Sequence[str], months: Sequence[date] | None = None,
               include_embedded: bool = True, workers: int = 1, on_result: Progress | None = None) -> list[MonthRow]:
    """The regimes table (module docstring): the store's months (``months``: only these) of ``regions`` and,
    with ``include_embedded``, January 2021 of the configured data folder for the cycle's region. Rows by
    month, then region."""
    store_targets, file_targets = _targets(settings, regions, months, include_embedded)
    rows: list[MonthRow] = []
    for targets in (store_targets, file_targets):
        for target, group in zip(targets, _group_results(settings, targets, workers, on_result), strict=True):
            rows.append(_row(group.settings, target, group.results, group.market))
    return sorted(rows, key=lambda row: (row.month, row.region, row.source))


def write_months(folder: Path, rows: Sequence[MonthRow]) -> tuple[Path, Path]:
    """Write the table as ``months.csv`` (every field) and ``months.md`` (the README's table) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, markdown_path = folder / CSV_FILE, folder / MARKDOWN_FILE
    with csv_path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=[f.name for f in fields(MonthRow)])
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))
    lines = ["| month | region | data | AEMO forecasts | FCAS markets | market depth | decisions | realised "
             "price-taker | realised depth-limited | energy / FCAS | of which 1-second | perfect foresight price-taker "
             "| perfect foresight depth-limited | capture price-taker | capture depth-limited | end-of-run SoC charge "
             "| SoC end MWh | failed decisions / safe fallbacks |",
             "| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: | ---: |"]
    for row in rows:
        lines.append(" | ".join([
            f"| {row.month}", row.region, row.source, "yes" if row.aemo_forecasts else "no", str(row.fcas_markets),
            "yes" if row.market_depth else "no", f"{row.decisions:,}", f"${row.total_revenue_dollars:,.0f}",
            depth_cell(row.depth_total_revenue_dollars), split_text(row),
            f"${row.one_second_revenue_dollars:,.0f}", f"${row.perfect_foresight_dollars:,.0f}",
            depth_cell(row.perfect_foresight_depth_dollars), percent_cell(row.capture),
            PRICE_TAKER_ONLY if not row.market_depth else percent_cell(row.capture_depth),
            dollars_cell(row.end_of_run_adjustment_dollars), soc_text(row), f"{failures_text(row)} |"]))
    markdown_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, markdown_path


def failures_text(row: MonthRow) -> str:
    """Failed decisions and safe fallbacks of a row: ``0 / 0``."""
    return f"{row.failed_decisions} / {row.safe_fallbacks}"


def dollars_cell(value: float) -> str:
    """Whole dollars with the sign before the $: ``$1,234``, ``−$1,234``, ``$0``."""
    rounded = round(value)
    return f"−${-rounded:,.0f}" if rounded < 0 else f"${rounded:,.0f}"


def depth_cell(value: float | None) -> str:
    """A depth-limited dollar figure, or ``price-taker only`` where the data has no market depth."""
    return PRICE_TAKER_ONLY if value is None else f"${value:,.0f}"


def percent_cell(value: float | None) -> str:
    """A fraction as a percentage with one decimal (``–`` for none)."""
    return "–" if value is None else f"{value:.1%}"


def soc_text(row: MonthRow) -> str:
    """The SoC (MWh) each stretch ended at, from the starting SoC: e.g. ``97 → 97 / 60``."""
    if not row.final_states_of_charge_mwh:
        return "–"
    ends = " / ".join(f"{soc:.0f}" for soc in row.final_states_of_charge_mwh)
    return f"{row.initial_state_of_charge_mwh:.0f} → {ends}"


def split_text(row: MonthRow) -> str:
    """Energy / FCAS shares of the realised revenue, e.g. ``31 % / 69 %`` (``–`` without revenue)."""
    if row.energy_share is None:
        return "–"
    return f"{row.energy_share:.0%} / {1 - row.energy_share:.0%}"


__all__ = ["MonthRow", "depth_cell", "dollars_cell", "month_periods", "percent_cell", "run_months", "soc_text",
           "split_text", "write_months"]
