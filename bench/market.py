"""``vpp bench market``: revenue through the real bidding path against perfect foresight, per region.

For each region the reference battery is bid by the AutoBidder cycle replayed in-process
(:func:`backtest.engine.run_backtest`: as-of snapshot, forecasts, optimisation, bid, validation,
clearing) for ``days`` days of consecutive decisions, and the revenue it realises is compared with the
perfect-foresight benchmark of shared/NEM.md over the same intervals (energy only, and energy + FCAS):
capture = realised / perfect foresight. Regions run in parallel processes; each region's decisions are
sequential because the state of charge carries over.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from rich.console import Console
from rich.table import Table

from aemo.mms import load_dispatch_prices
from backtest.compare import PRICE_TAKER_ONLY
from backtest.engine import (
    DEFAULT_WORKERS,
    BacktestConfig,
    BacktestResult,
    depth_caps_window,
    end_of_run_adjustment,
    market_prices,
    perfect_foresight_revenue,
    run_backtests,
)
from backtest.runs import load_inputs
from settings import Settings

# Start of the default benchmark day (a trading-day boundary, AEST); the schedule offset is added.
DEFAULT_START = datetime(2021, 1, 15, 4, 0)
DEFAULT_DAYS = 1.0
INTERVALS_PER_DAY = 288


@dataclass(frozen=True)
class RegionFigures:
    """One region's benchmark figures ($, MWh, fractions of 1, seconds).

    ``capture_total`` = realised energy + FCAS / perfect foresight energy + FCAS; ``capture_energy`` =
    realised energy / perfect foresight energy only (NaN when the benchmark earns nothing).
    ``stage_ms_per_decision`` is the mean time of each stage of one decision (milliseconds).
    """

    region: str
    first_interval: datetime
    intervals: int
    energy_revenue_dollars: float
    fcas_revenue_dollars: float
    fcas_revenue_by_product_dollars: dict[str, float]
    perfect_energy_only_dollars: float
    perfect_energy_fcas_energy_dollars: float
    perfect_energy_fcas_fcas_dollars: float
    initial_state_of_charge_mwh: float
    final_state_of_charge_mwh: float
    throughput_mwh: float
    cycles: float
    safe_fallbacks: int
    validation_rejections: int
    failed_decisions: int
    rebids: int
    decisions_per_second: float
    wall_time_s: float
    stage_ms_per_decision: dict[str, float]
    # The end-of-run SoC charge (≤ 0 $, in every capture) and the depth-limited figures ($; None: the data
    # has no DISPATCHREGIONSUM, price-taker only).
    end_of_run_adjustment_dollars: float = 0.0
    depth_fcas_revenue_dollars: float | None = None
    perfect_depth_dollars: float | None = None

    @property
    def total_revenue_dollars(self) -> float:
        """Realised energy + FCAS revenue ($)."""
        return self.energy_revenue_dollars + self.fcas_revenue_dollars

    @property
    def depth_total_revenue_dollars(self) -> float | None:
        """Realised energy + depth-limited FCAS revenue ($), None without market depth."""
        depth = self.depth_fcas_revenue_dollars
        return None if depth is None else self.energy_revenue_dollars + depth

    @property
    def capture_depth(self) -> float:
        """Depth-limited realised (after the end-of-run charge) over depth-limited perfect foresight (NaN
        without market depth or benchmark)."""
        if self.depth_total_revenue_dollars is None or self.perfect_depth_dollars is None:
            return math.nan
        return _ratio(self.depth_total_revenue_dollars + self.end_of_run_adjustment_dollars,
                      self.perfect_depth_dollars)

    @property
    def perfect_energy_fcas_dollars(self) -> float:
        """Perfect foresight energy + FCAS revenue ($)."""
        return self.perfect_energy_fcas_energy_dollars + self.perfect_energy_fcas_fcas_dollars

    @property
    def capture_total(self) -> float:
        """Realised energy + FCAS (after the end-of-run charge) over perfect foresight energy + FCAS (NaN if
        the latter is not positive)."""
        return _ratio(self.total_revenue_dollars + self.end_of_run_adjustment_dollars,
                      self.perfect_energy_fcas_dollars)

    @property
    def capture_energy(self) -> float:
        """Realised energy (after the end-of-run charge) over perfect foresight energy only (NaN if the
        latter is not positive)."""
        return _ratio(self.energy_revenue_dollars + self.end_of_run_adjustment_dollars,
                      self.perfect_energy_only_dollars)


def _ratio(realised: float, benchmark: float) -> float:
    return realised / benchmark if benchmark > 0 else math.nan


def region_figures(settings: Settings, result: BacktestResult, energy_only: tuple[float, float],
                   energy_fcas: tuple[float, float], wall_time_s: float,
                   energy_fcas_depth: tuple[float, float] | None = None) -> RegionFigures:
    """The figures of one region from its backtest and its perfect-foresight (energy $, FCAS $) pairs (energy
    only, energy + FCAS, and depth-limited energy + FCAS where the data has market depth); ``wall_time_s``
    covers the backtest and the benchmarks (seconds)."""
    decisions = len(result.records)
    return RegionFigures(
        region=result.region, first_interval=result.first_interval, intervals=decisions,
        energy_revenue_dollars=result.energy_revenue_dollars,
        fcas_revenue_dollars=result.fcas_revenue_dollars,
        fcas_revenue_by_product_dollars=dict(result.fcas_revenue_by_product_dollars),
        perfect_energy_only_dollars=energy_only[0] + energy_only[1],
        perfect_energy_fcas_energy_dollars=energy_fcas[0], perfect_energy_fcas_fcas_dollars=energy_fcas[1],
        initial_state_of_charge_mwh=result.initial_state_of_charge_mwh,
        final_state_of_charge_mwh=result.final_state_of_charge_mwh,
        throughput_mwh=result.throughput_mwh, cycles=result.cycles, safe_fallbacks=result.safe_fallbacks,
        validation_rejections=result.validation_rejections, failed_decisions=result.failed_decisions,
        rebids=result.rebids, decisions_per_second=result.decisions_per_second, wall_time_s=wall_time_s,
        stage_ms_per_decision={stage: 1000.0 * seconds / decisions
                               for stage, seconds in result.stage_seconds().items()},
        end_of_run_adjustment_dollars=end_of_run_adjustment(settings, result),
        depth_fcas_revenue_dollars=result.depth_fcas_revenue_dollars if energy_fcas_depth is not None else None,
        perfect_depth_dollars=None if energy_fcas_depth is None else sum(energy_fcas_depth))


def default_start(settings: Settings) -> datetime:
    """The default first decision: 2021-01-15 04:00 AEST plus the cycle's schedule offset."""
    return DEFAULT_START + timedelta(seconds=settings.cycle.schedule_offset_s)


def run_market_bench(settings: Settings, *, regions: Sequence[str], days: float, start: datetime,
                     workers: int = DEFAULT_WORKERS, console: Console | None = None) -> list[RegionFigures]:
    """Backtest every region of ``regions`` for ``days`` days of decisions from ``start`` (naive AEST, the
    first decision time) and benchmark each against perfect foresight over the same intervals.

    Regions run on ``workers`` processes; ``console`` (optional) gets a line as each region finishes.
    Raises ValueError for no regions or a non-positive number of days, BacktestError for a region or
    period outside the data.
    """
    if not regions:
        raise ValueError("no regions to benchmark")
    decisions = round(days * INTERVALS_PER_DAY)
    if decisions < 1:
        raise ValueError(f"days must cover at least one 5-minute decision, got {days}")
    started = time.perf_counter()
    inputs = load_inputs([settings.market_data.data_dir])  # DISPATCHREGIONSUM there: market depth
    dispatch, predispatch = inputs.dispatch, inputs.predispatch
    market = market_prices(settings, dispatch)
    configs = [BacktestConfig(region=region, first_decision=start, decisions=decisions) for region in regions]

    def announce(result: BacktestResult) -> None:
        if console is not None:
            console.print(f"{result.region}: {len(result.records)} decisions in {result.wall_time_s:.1f} s "
                          f"({result.decisions_per_second:.2f}/s)")

    results = run_backtests(settings, dispatch, predispatch, configs, workers=workers, market=market,
                            on_result=announce)
    backtests_s = time.perf_counter() - started
    figures = []
    for result in results:
        benchmark_started = time.perf_counter()
        energy_only = perfect_foresight_revenue(settings, market, result.region, result.first_interval,
                                                len(result.records), include_fcas=False)
        energy_fcas = perfect_foresight_revenue(settings, market, result.region, result.first_interval,
                                                len(result.records), include_fcas=True)
        has_depth = (result.depth_fcas_revenue_dollars is not None and depth_caps_window(
            settings, market, result.region, result.first_interval, len(result.records)) is not None)
        energy_fcas_depth = (perfect_foresight_revenue(settings, market, result.region, result.first_interval,
                                                       len(result.records), include_fcas=True, depth_limited=True)
                             if has_depth else None)
        benchmark_s = time.perf_counter() - benchmark_started
        figures.append(region_figures(settings, result, energy_only, energy_fcas,
                                      result.wall_time_s + benchmark_s, energy_fcas_depth))
    if console is not None:
        console.print(f"all regions: {time.perf_counter() - started:.1f} s wall time "
                      f"({backtests_s:.1f} s of backtests on {min(workers, len(regions))} process(es))")
    return figures


def _dollars(value: float) -> str:
    return f"{value:,.0f}"


def _percent(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.0%}"


def print_market(console: Console, figures: Sequence[RegionFigures]) -> None:
    """Print the revenue table (realised vs perfect foresight, capture), the FCAS revenue by product and
    the mean time per decision by stage, one column per region."""
    if not figures:
        console.print("no regions benchmarked")
        return
    first = figures[0]
    days = first.intervals / INTERVALS_PER_DAY
    revenue = Table(title=f"Realised revenue through the bidding path vs perfect foresight: "
                          f"{first.intervals} intervals ({days:.3g} days) from the interval ending "
                          f"{first.first_interval:%Y-%m-%d %H:%M} (AEST), $", title_justify="left")
    for column in ("region", "energy", "FCAS", "total", "total depth-limited", "PF energy only", "PF energy+FCAS",
                   "PF depth-limited", "capture total", "capture depth-limited", "capture energy",
                   "end-of-run SoC charge", "SoC start→end MWh", "cycles", "safe fallbacks",
                   "rejected bids", "failed", "decisions/s", "wall s"):
        revenue.add_column(column, justify="left" if column == "region" else "right")
    for f in figures:
        depth_total, depth_pf = f.depth_total_revenue_dollars, f.perfect_depth_dollars
        revenue.add_row(f.region, _dollars(f.energy_revenue_dollars), _dollars(f.fcas_revenue_dollars),
                        _dollars(f.total_revenue_dollars),
                        PRICE_TAKER_ONLY if depth_total is None else _dollars(depth_total),
                        _dollars(f.perfect_energy_only_dollars),
                        _dollars(f.perfect_energy_fcas_dollars),
                        PRICE_TAKER_ONLY if depth_pf is None else _dollars(depth_pf), _percent(f.capture_total),
                        PRICE_TAKER_ONLY if depth_pf is None else _percent(f.capture_depth),
                        _percent(f.capture_energy), _dollars(f.end_of_run_adjustment_dollars),
                        f"{f.initial_state_of_charge_mwh:.0f}→{f.final_state_of_charge_mwh:.0f}",
                        f"{f.cycles:.2f}", str(f.safe_fallbacks), str(f.validation_rejections),
                        str(f.failed_decisions), f"{f.decisions_per_second:.2f}", f"{f.wall_time_s:.0f}")
    console.print(revenue)
    console.print("capture total = realised energy + FCAS / perfect foresight energy + FCAS; "
                  "capture energy = realised energy / perfect foresight energy only. Perfect foresight ends "
                  "with at least the starting energy; a realised run ending below it pays for refilling the "
                  "shortfall at its mean energy price (end-of-run SoC charge, in every capture). Depth-limited: "
                  "FCAS capped at the region's enabled MW (DISPATCHREGIONSUM) x [market_depth] "
                  f"fcas_enablement_share in clearing and perfect foresight; energy is price-taking. "
                  f"'{PRICE_TAKER_ONLY}': the data has no DISPATCHREGIONSUM.")

    products = sorted({p for f in figures for p in f.fcas_revenue_by_product_dollars})
    if products:
        fcas = Table(title="Realised FCAS revenue by product, $", title_justify="left")
        fcas.add_column("product")
        for f in figures:
            fcas.add_column(f.region, justify="right")
        for product in products:
            fcas.add_row(product, *(_dollars(f.fcas_revenue_by_product_dollars.get(product, 0.0))
                                    for f in figures))
        console.print(fcas)

    stages = list(first.stage_ms_per_decision)
    timing = Table(title="Mean time per decision by stage, ms", title_justify="left")
    timing.add_column("stage")
    for f in figures:
        timing.add_column(f.region, justify="right")
    for stage in sorted(stages, key=lambda s: (s.split(":")[0], ":" in s, s)):
        timing.add_row(stage, *(f"{f.stage_ms_per_decision.get(stage, 0.0):.1f}" for f in figures))
    console.print(timing)


def main(settings: Settings, regions: Sequence[str] | None, days: float | None,
         start: datetime | None = None) -> int:
    """Run the market benchmark (default: every region of the data, one day from 2021-01-15 04:00 plus the
    schedule offset) and print it; 0 when no decision failed, 1 otherwise."""
    console = Console(width=200)
    chosen = list(regions) if regions else list(load_dispatch_prices(settings.market_data.data_dir).regions)
    figures = run_market_bench(settings, regions=chosen, days=DEFAULT_DAYS if days is None else days,
                               start=start or default_start(settings), console=console)
    print_market(console, figures)
    return 0 if all(f.failed_decisions == 0 for f in figures) else 1
