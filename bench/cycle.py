"""``vpp bench cycle``: latency of the 5-minute cycle on the local stack, and the optimiser's solve time.

Prints the median and p95 time from cycle start to bid acknowledged (goal: median < 3 s, p95 < 10 s),
the median time of each stage, and the median/p95 time to build and solve the 288-interval energy +
FCAS horizon (goal < 0.5 s). Uses a running ``vpp up`` stack if there is one, otherwise starts a
headless one in a temporary folder.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from aemo.mms import load_dispatch_prices
from algorithms.common.battery import battery_from_spec, battery_spec_from_settings
from algorithms.market.optimise import solve_dispatch
from services.temporal_client import connect_temporal
from settings import Settings
from stack.cycles import CycleRun, decision_times, run_cycles
from stack.demo import stack_is_running

BENCH_START = datetime(2021, 1, 20, 14, 0)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0–100) of ``values``, linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def stage_durations(runs: Sequence[CycleRun]) -> dict[str, list[float]]:
    """Seconds each stage took, per stage name, from consecutive fact times."""
    durations: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        if run.result is None:
            continue
        previous = None
        for fact in run.result.facts:
            at = datetime.fromisoformat(fact.at)
            if previous is not None:
                durations[fact.stage].append((at - previous).total_seconds())
            previous = at
    return durations


def solve_times_ms(settings: Settings, repeats: int) -> list[float]:
    """Build + solve times (ms) of the 288-interval energy + FCAS LP over real SA1 prices."""
    prices = load_dispatch_prices(settings.market_data.data_dir)
    battery = battery_from_spec(battery_spec_from_settings(settings.battery))
    region = settings.cycle.region
    times: list[float] = []
    for day in range(repeats):
        first = 288 * (day % 28)
        horizon = {product: prices.series(region, product)[first:first + 288] for product in prices.products}
        started = time.perf_counter()
        plan = solve_dispatch(horizon, battery, settings.battery.initial_state_of_charge_mwh,
                              settings.battery.initial_state_of_charge_mwh)
        times.append((time.perf_counter() - started) * 1000.0)
        if plan.status != "OPTIMAL":
            raise RuntimeError(f"benchmark solve {day} ended {plan.status}: {plan.status_reason}")
    return times


async def _bench_cycles(settings: Settings, cycles: int) -> list[CycleRun]:
    client = await connect_temporal(settings)
    times = decision_times(BENCH_START, cycles + 1, settings.cycle.schedule_offset_s)
    runs = await run_cycles(client, settings, times)
    return runs[1:]  # the first cycle warms up the worker processes


def report(console: Console, runs: Sequence[CycleRun], solve_ms: Sequence[float]) -> None:
    """Print the figures."""
    latencies = [r.result.latency_to_ack_s for r in runs if r.result is not None]
    failed = [r for r in runs if r.result is None]
    table = Table(title="vpp bench cycle")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("goal", justify="right")
    if latencies:
        table.add_row(f"cycle start → bid acknowledged, median ({len(latencies)} cycles)",
                      f"{statistics.median(latencies):.2f} s", "< 3 s")
        table.add_row("cycle start → bid acknowledged, p95", f"{percentile(latencies, 95):.2f} s", "< 10 s")
    for stage, seconds in stage_durations(runs).items():
        table.add_row(f"  stage {stage}, median", f"{statistics.median(seconds):.2f} s", "")
    table.add_row("288-interval energy + FCAS solve, median", f"{statistics.median(solve_ms):.0f} ms", "< 500 ms")
    table.add_row("288-interval energy + FCAS solve, p95", f"{percentile(solve_ms, 95):.0f} ms", "")
    table.add_row("failed cycles", str(len(failed)), "0")
    console.print(table)
    for run in failed:
        console.print(f"[red]cycle deciding at {run.decision_time} failed:[/red] {run.failure}")


def run_cycle_bench(settings: Settings, *, cycles: int) -> int:
    """Run ``cycles`` consecutive cycles (plus one warm-up) and print the figures; 0 if none failed."""
    console = Console(width=110)
    solve_ms = solve_times_ms(settings, repeats=20)
    if stack_is_running(settings):
        runs = asyncio.run(_bench_cycles(settings, cycles))
    else:
        from stack.supervisor import LocalStack

        state_dir = Path(tempfile.mkdtemp(prefix="openvpp-bench-"))
        bench_settings = replace(settings, stack=replace(settings.stack, state_dir=state_dir))
        with LocalStack(bench_settings, ui=False) as stack:
            runs = asyncio.run(_bench_cycles(stack.settings, cycles))
    report(console, runs, solve_ms)
    return 0 if all(r.result is not None for r in runs) else 1
