"""``vpp bench sweep``: throughput of backtest sweeps on the real local stack with 1, 2, … pool processes.

For each count of backtest pool processes it starts a stack of its own in a fresh temporary folder (Temporal,
SQS, PostgreSQL, the Temporal worker with the result relay, the sweep worker and that many ``vpp worker pool
backtest`` processes; a fresh archive, so no run is answered from an earlier one), submits the same grid
(default: horizon 24 and 48 intervals × SA1 and VIC1 × one day, two days of history) and times it from
submission to the sweep's result. Prints runs per hour and decisions per second for each count, and the
speed-up over the first.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from activities.sweep_facts import RUN_FINISHED, SweepResult
from archive import open_archive
from backtest.sweep import build_grid
from services.temporal_client import connect_temporal
from settings import Settings
from stack.ports import free_tcp_port
from stack.supervisor import SWEEP_PARTS, LocalStack
from stack.sweep import SweepPlan, plan_sweep, submit_sweep

DEFAULT_START = datetime(2021, 1, 15, 4, 0)
DEFAULT_REGIONS = ("SA1", "VIC1")
DEFAULT_PARAMETERS = ("horizon_intervals=24,48", "history_intervals=576")


@dataclass(frozen=True)
class SweepBench:
    """One timed sweep: pool processes, runs (finished), decisions, wall time (s) from submission to result."""

    processes: int
    runs: int
    finished: int
    decisions: int
    wall_time_s: float

    @property
    def runs_per_hour(self) -> float:
        """Finished runs per hour of wall time."""
        return self.finished * 3600.0 / self.wall_time_s

    @property
    def decisions_per_second(self) -> float:
        """Decisions of the finished runs per second of wall time."""
        return self.decisions / self.wall_time_s


def bench_settings(settings: Settings, state_dir: Path, processes: int) -> Settings:
    """``settings`` on free ports in ``state_dir`` with ``processes`` backtest pool processes."""
    return replace(
        settings, database_url=None,
        stack=replace(settings.stack, state_dir=state_dir, temporal_address=f"127.0.0.1:{free_tcp_port()}",
                      temporal_ui_port=free_tcp_port(), sqs_port=free_tcp_port()),
        pools=replace(settings.pools, backtest_processes=processes))


async def _timed_sweep(stack: LocalStack, plan: SweepPlan, out: Path) -> tuple[float, SweepResult]:
    settings = stack.settings
    client = await connect_temporal(settings)
    started = time.perf_counter()
    handle = await submit_sweep(client, settings, open_archive(settings), plan, out)
    result = await handle.result()
    return time.perf_counter() - started, result


def bench_sweep(settings: Settings, plan: SweepPlan, processes: int, console: Console) -> SweepBench:
    """Run ``plan`` on a fresh stack with ``processes`` backtest pool processes; its figures."""
    with tempfile.TemporaryDirectory(prefix="openvpp-bench-sweep-") as folder:
        console.print(f"{processes} pool process(es): starting a stack in {folder} …", highlight=False)
        with LocalStack(bench_settings(settings, Path(folder), processes), ui=False, parts=SWEEP_PARTS) as stack:
            wall_s, result = asyncio.run(_timed_sweep(stack, plan, Path(folder) / "backtests"))
    finished = sum(1 for o in result.outcomes if o.status == RUN_FINISHED)
    for outcome in result.outcomes:
        if outcome.status != RUN_FINISHED:
            console.print(f"failed: {outcome.label}: {outcome.reason}", markup=False, highlight=False, soft_wrap=True)
    decisions = sum(run.spec.period.intervals for run in plan.runs) * finished // max(1, len(plan.runs))
    return SweepBench(processes=processes, runs=len(plan.runs), finished=finished, decisions=decisions,
                      wall_time_s=wall_s)


def figures_table(benches: Sequence[SweepBench]) -> Table:
    """One row per pool-process count: runs, wall time, runs per hour, decisions per second, speed-up."""
    table = Table(title="Backtest sweep throughput (local stack)", title_justify="left")
    for column in ("pool processes", "runs finished", "decisions", "wall s", "runs/h", "decisions/s", "speed-up"):
        table.add_column(column, justify="right")
    base = benches[0].runs_per_hour if benches else 0.0
    for bench in benches:
        table.add_row(str(bench.processes), f"{bench.finished}/{bench.runs}", f"{bench.decisions:,}",
                      f"{bench.wall_time_s:.1f}", f"{bench.runs_per_hour:.1f}", f"{bench.decisions_per_second:.1f}",
                      f"{bench.runs_per_hour / base:.2f}×" if base > 0 else "-")
    return table


def main(settings: Settings, *, processes: Sequence[int] = (1, 2), regions: Sequence[str] = DEFAULT_REGIONS,
         days: float = 1.0, start: datetime = DEFAULT_START, parameters: Sequence[str] = DEFAULT_PARAMETERS,
         data: Sequence[Path] = ()) -> int:
    """Time the grid with each count of pool processes and print the figures. 0 when every run finished."""
    console = Console()
    grid = build_grid(regions=list(regions), start=start, end=start + timedelta(days=days), params=list(parameters),
                      data=list(data), default_region=settings.cycle.region, default_data=settings.market_data.data_dir)
    plan = plan_sweep(settings, grid)
    console.print(f"grid: {len(plan.runs)} runs of {plan.runs[0].spec.period.intervals} decisions "
                  f"({', '.join(run.label for run in plan.runs)})", highlight=False, soft_wrap=True)
    benches = [bench_sweep(settings, plan, count, console) for count in processes]
    console.print(figures_table(benches))
    return 0 if all(b.finished == b.runs for b in benches) else 1
