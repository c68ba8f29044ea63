"""``vpp bench backtest``: how fast the backtest engine replays decisions, and where the time goes.

Replays ``days`` days of 5-minute decisions of one region (default 31 days of SA1 from the first decision
the data allows: the whole of January 2021 with the embedded data) through
:func:`backtest.engine.run_backtest` with the configured strategy, with a progress bar, and prints decisions
per second, wall time and the time per stage (snapshot, forecast per product, optimisation of which LP
build + solve, bid, clear), in total and per decision. Stage times are summed over every worker process,
so with several workers they add up to more than the wall time. It also prints the CPU time of the run
(this process and its worker processes, user + system): on a machine shared with other work the wall and
stage times stretch with the load, CPU time much less, and ``cores / CPU time per decision`` is about the
throughput the run would reach on idle cores. A change made for speed must leave every result as it was:
``python -m bench.backtest_digest`` (:mod:`bench.backtest_digest`) hashes every decision's forecasts, request,
plan, bids and record of the same replay and compares two runs.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from backtest.engine import market_prices
from backtest.report import decision_progress
from backtest.runs import INTERVALS_PER_DAY, Period, engine_run, load_inputs, resolve_period
from backtest.strategy import Strategy, resolve_strategy
from settings import Settings

DEFAULT_DAYS = 31.0
DEFAULT_REGION = "SA1"


@dataclass(frozen=True)
class BacktestBench:
    """The figures of one timed backtest (seconds, decisions per second, $); ``workers`` is the number of
    processes that prepared snapshots and forecasts (1: in-process)."""

    region: str
    period: Period
    strategy: Strategy
    workers: int
    decisions: int
    wall_time_s: float
    stage_seconds: dict[str, float]
    total_revenue_dollars: float
    failed_decisions: int
    cpu_seconds: float = 0.0

    @property
    def decisions_per_second(self) -> float:
        """Decisions replayed per second of wall time."""
        return self.decisions / self.wall_time_s if self.wall_time_s > 0 else 0.0

    @property
    def cpu_ms_per_decision(self) -> float:
        """CPU milliseconds (user + system, this process and its workers) per decision."""
        return 1000.0 * self.cpu_seconds / self.decisions if self.decisions else 0.0


def run_backtest_bench(settings: Settings, *, data: Sequence[Path], region: str, days: float | None,
                       start: datetime | None = None, workers: int | None = None,
                       strategy: Strategy | None = None, console: Console | None = None) -> BacktestBench:
    """Time a backtest of ``region`` for ``days`` days (None: 31 days, or to the end of the data if sooner)
    from ``start`` (AEST period start; default the start of the data's first interval) on ``workers``
    processes (None: the engine's default). Raises RunError / BacktestError / MmsFormatError when it cannot run."""
    chosen = strategy or resolve_strategy(settings)
    effective = chosen.apply(settings)
    inputs = load_inputs(data)
    period = resolve_period(inputs.dispatch, region, start=start, days=days)  # to the end of the data if None
    if days is None and period.intervals > DEFAULT_DAYS * INTERVALS_PER_DAY:
        period = resolve_period(inputs.dispatch, region, start=period.start, days=DEFAULT_DAYS)
    config = chosen.config(region, period.first_decision(effective.cycle.schedule_offset_s), period.intervals)
    market = market_prices(effective, inputs.dispatch)
    shown = console or Console(stderr=True)
    cpu_before = _cpu_seconds()
    with decision_progress(shown, f"{region} backtest") as progress:
        result = engine_run(effective, inputs, config, market=market, workers=workers, progress=progress)
    return BacktestBench(region=region, period=period, strategy=chosen,
                         workers=result.workers, decisions=len(result.records), wall_time_s=result.wall_time_s,
                         stage_seconds=result.stage_seconds(), total_revenue_dollars=result.total_revenue_dollars,
                         failed_decisions=result.failed_decisions, cpu_seconds=_cpu_seconds() - cpu_before)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished child processes (the engine's workers
    are joined before it returns)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _stage_order(stage: str) -> tuple[str, bool, str]:
    return stage.split(":")[0], ":" in stage, stage


def print_bench(console: Console, bench: BacktestBench) -> None:
    """Print decisions per second, wall time and the stage breakdown."""
    console.print(f"{bench.region}: {bench.decisions} decisions, intervals ending "
                  f"{bench.period.first_interval:%Y-%m-%d %H:%M} .. {bench.period.last_interval:%Y-%m-%d %H:%M} "
                  f"(AEST), strategy {bench.strategy.label}, {bench.workers} worker process(es)",
                  highlight=False, soft_wrap=True)
    console.print(f"wall time {bench.wall_time_s:.1f} s, {bench.decisions_per_second:.2f} decisions/s; "
                  f"revenue ${bench.total_revenue_dollars:,.0f}; failed decisions {bench.failed_decisions}",
                  highlight=False, soft_wrap=True)
    console.print(f"CPU time {bench.cpu_seconds:.1f} s (this process and its workers), "
                  f"{bench.cpu_ms_per_decision:.1f} ms per decision", highlight=False, soft_wrap=True)
    stages = Table(title="Time by stage (summed over worker processes)", title_justify="left")
    for column in ("stage", "total s", "ms per decision", "share of decisions' time"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    top_level = sum(seconds for stage, seconds in bench.stage_seconds.items() if ":" not in stage)
    for stage in sorted(bench.stage_seconds, key=_stage_order):
        seconds = bench.stage_seconds[stage]
        share = seconds / top_level if top_level > 0 else 0.0
        stages.add_row(stage, f"{seconds:.1f}", f"{1000.0 * seconds / max(bench.decisions, 1):.1f}",
                       f"{share:.0%}")
    console.print(stages)


def main(settings: Settings, *, data: Sequence[Path], region: str | None, days: float | None,
         workers: int | None, parameters: Sequence[str] = (), start: datetime | None = None) -> int:
    """Run and print the benchmark (default 31 days of SA1 from ``start``, else the data's first interval;
    AEST); 0 when no decision failed, 1 otherwise."""
    console = Console(width=160)
    strategy = resolve_strategy(settings, assignments=parameters)
    bench = run_backtest_bench(settings, data=data, region=region or DEFAULT_REGION, days=days, start=start,
                               workers=workers, strategy=strategy)
    print_bench(console, bench)
    return 0 if bench.failed_decisions == 0 else 1
