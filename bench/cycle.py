"""``vpp bench cycle``: latency of the 5-minute cycle on the local stack, and the optimiser's solve time.

Prints the median and p95 time from cycle start to bid acknowledged (goal: median < 3 s, p95 < 10 s),
the median time of each stage, and the median/p95 time to build and solve the 288-interval energy +
FCAS horizon (goal < 0.5 s). Uses a running ``vpp up`` stack if there is one, otherwise starts a
headless one in a temporary folder.

``--units N`` measures a portfolio: N battery units in several regions (:func:`bench_portfolio`), every
unit's cycle started at the same decision time, as their schedules start them, round after round (goal:
median < 0.5 s, p95 < 1 s from cycle start to bid acknowledged). A running stack is used only if it
configures at least N battery units; otherwise a headless stack with the generated portfolio is started.

On a stack of its own the bench also prints the CPU-s (user + system) each of the stack's processes — and the
bench's client — used from the end of the warm-up to the end, read from ``/proc`` (stack/process_cpu.py).
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from aemo.mms import load_dispatch_prices
from algorithms.common.battery import battery_from_spec, battery_spec_from_settings
from algorithms.market.optimise import solve_dispatch
from services.temporal_client import connect_temporal
from settings import BATTERY_UNIT, Settings, UnitSettings
from stack.cycles import CycleRun, decision_times, run_cycles, run_portfolio_cycles_at
from stack.demo import stack_is_running
from stack.process_cpu import cpu_seconds_used, read_cpu_seconds

BENCH_START = datetime(2021, 1, 20, 14, 0)
# Regions the generated portfolio's units are spread over, in turn (the embedded January 2021 data has all
# five; units share a region once there are more units than regions).
BENCH_REGIONS = ("SA1", "NSW1", "VIC1", "QLD1")
# The bench's own process (the Temporal client starting the cycles) in the CPU figures.
BENCH_CLIENT = "bench client"


def bench_portfolio(settings: Settings, unit_count: int) -> Settings:
    """``settings`` with ``unit_count`` battery units: the first configured battery unit, then copies of it
    (``BESS02`` …) in BENCH_REGIONS in turn from NSW1, and the VPP's fleet unit. A configuration that
    already has ``unit_count`` battery units keeps its first ``unit_count``."""
    configured = settings.battery_units
    if len(configured) >= unit_count:
        chosen = configured[:unit_count]
    else:
        first = configured[0]
        chosen = (*configured, *(
            UnitSettings(unit_id, region, BATTERY_UNIT, replace(first.battery, unit_id=unit_id, region=region),
                         first.bidding, replace(first.cycle, unit_id=unit_id, region=region))
            for unit_id, region in ((f"BESS{index + 1:02d}", BENCH_REGIONS[index % len(BENCH_REGIONS)])
                                    for index in range(len(configured), unit_count))))
    return replace(settings, units=(*chosen, settings.vpp_unit), battery=chosen[0].battery, cycle=chosen[0].cycle)


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


# Called once the warm-up cycle (or round) is done: where the stack's CPU starts being counted.
WarmedUp = Callable[[], None]


def _nothing() -> None:
    return None


async def _bench_cycles(settings: Settings, cycles: int, warmed_up: WarmedUp = _nothing) -> list[CycleRun]:
    client = await connect_temporal(settings)
    times = decision_times(BENCH_START, cycles + 1, settings.cycle.schedule_offset_s)
    warm_up = await run_cycles(client, settings, times[:1])  # warms up the worker processes
    warmed_up()
    return await run_cycles(client, settings, times[1:]) if warm_up else []


async def _bench_portfolio(settings: Settings, rounds: int, round_seconds: list[float],
                           warmed_up: WarmedUp = _nothing) -> list[CycleRun]:
    """``rounds`` rounds (after one warm-up round, then ``warmed_up()``) of every battery unit's cycle started at
    once; each round's wall-clock seconds (start of the workflows → every result back at the client) go to
    ``round_seconds``."""
    client = await connect_temporal(settings)
    runs: list[CycleRun] = []
    for index, decision in enumerate(decision_times(BENCH_START, rounds + 1, settings.cycle.schedule_offset_s)):
        started = time.perf_counter()
        round_runs = await run_portfolio_cycles_at(client, settings, decision)
        if index:  # the first round warms up the worker processes
            runs += round_runs
            round_seconds.append(time.perf_counter() - started)
        else:
            warmed_up()
    return runs


def report(console: Console, runs: Sequence[CycleRun], solve_ms: Sequence[float], *, units: int = 1,
           round_seconds: Sequence[float] = (), cpu_seconds: Mapping[str, float] | None = None) -> None:
    """Print the figures (``units``: cycles started at once per round; ``round_seconds``: each round's wall
    clock at the client, from starting its workflows to the last result, s; ``cpu_seconds``: CPU-s each
    process used after the warm-up, when the bench ran its own stack)."""
    latencies = [r.result.latency_to_ack_s for r in runs if r.result is not None]
    failed = [r for r in runs if r.result is None]
    table = Table(title="vpp bench cycle" + (f" --units {units}" if units > 1 else ""))
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("goal", justify="right")
    median_goal, p95_goal = ("< 0.5 s", "< 1 s") if units > 1 else ("< 3 s", "< 10 s")
    if latencies:
        what = (f"{len(latencies)} cycles, {units} units at once" if units > 1 else f"{len(latencies)} cycles")
        table.add_row(f"cycle start → bid acknowledged, median ({what})",
                      f"{statistics.median(latencies):.2f} s", median_goal)
        table.add_row("cycle start → bid acknowledged, p95", f"{percentile(latencies, 95):.2f} s", p95_goal)
        table.add_row("cycle start → bid acknowledged, max", f"{max(latencies):.2f} s", "")
    if round_seconds:  # the client's wall clock: a check on the workflows' own latency figures
        table.add_row("round, start → every result at the client (wall clock), median",
                      f"{statistics.median(round_seconds):.2f} s", "")
    for stage, seconds in stage_durations(runs).items():
        table.add_row(f"  stage {stage}, median", f"{statistics.median(seconds):.2f} s", "")
    table.add_row("288-interval energy + FCAS solve, median", f"{statistics.median(solve_ms):.0f} ms", "< 500 ms")
    table.add_row("288-interval energy + FCAS solve, p95", f"{percentile(solve_ms, 95):.0f} ms", "")
    table.add_row("failed cycles", str(len(failed)), "0")
    console.print(table)
    if cpu_seconds:
        console.print(cpu_table(cpu_seconds, len(runs)))
    for run in failed:
        console.print(f"[red]cycle deciding at {run.decision_time} failed:[/red] {run.failure}")


def cpu_table(cpu_seconds: Mapping[str, float], cycles: int) -> Table:
    """CPU-s (user + system) by process after the warm-up, largest first, with the total and per cycle."""
    table = Table(title="CPU after the warm-up, by process")
    table.add_column("process")
    table.add_column("CPU-s", justify="right")
    table.add_column("share", justify="right")
    total = sum(cpu_seconds.values())
    for name, seconds in sorted(cpu_seconds.items(), key=lambda item: -item[1]):
        table.add_row(name, f"{seconds:.2f}", f"{seconds / total:.0%}" if total > 0 else "")
    table.add_row("all", f"{total:.2f}", "100%" if total > 0 else "")
    if cycles:
        table.add_row("all, per cycle", f"{total / cycles:.3f}", "")
    return table


def run_cycle_bench(settings: Settings, *, cycles: int, units: int = 1) -> int:
    """Run ``cycles`` consecutive cycles (plus one warm-up) and print the figures; 0 if none failed. With
    ``units`` > 1: ``cycles`` rounds (plus one warm-up round) of ``units`` battery units' cycles at once."""
    console = Console(width=110)
    solve_ms = solve_times_ms(settings, repeats=20)
    round_seconds: list[float] = []
    cpu_seconds: dict[str, float] = {}
    if units > 1:
        portfolio = bench_portfolio(settings, units)
        regions = sorted({unit.region for unit in portfolio.battery_units})
        console.print(f"{units} units in {', '.join(regions)}: "
                      + ", ".join(f"{unit.unit_id} ({unit.region})" for unit in portfolio.battery_units))
        if len(settings.battery_units) >= units and stack_is_running(settings):
            runs = asyncio.run(_bench_portfolio(portfolio, cycles, round_seconds))
        else:
            runs = _on_own_stack(portfolio, cpu_seconds, lambda running, warmed_up: _bench_portfolio(
                running, cycles, round_seconds, warmed_up))
    elif stack_is_running(settings):
        runs = asyncio.run(_bench_cycles(settings, cycles))
    else:
        runs = _on_own_stack(settings, cpu_seconds,
                             lambda running, warmed_up: _bench_cycles(running, cycles, warmed_up))
    report(console, runs, solve_ms, units=units, round_seconds=round_seconds, cpu_seconds=cpu_seconds)
    return 0 if all(r.result is not None for r in runs) else 1


def _client_cpu_seconds() -> float:
    """CPU seconds (user + system) this process (the bench's client) has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _on_own_stack(settings: Settings, cpu_seconds: dict[str, float],
                  bench: Callable[[Settings, WarmedUp], Coroutine[Any, Any, list[CycleRun]]]) -> list[CycleRun]:
    """Run ``bench`` on a headless local stack of ``settings`` started in a temporary folder (removed at the end);
    the CPU-s each of its processes (and the bench's client) used from the end of the warm-up to the end go to
    ``cpu_seconds``."""
    from stack.supervisor import LocalStack

    # The stack's state (archive, Temporal's database, logs) is only the bench's: removed when it ends.
    with tempfile.TemporaryDirectory(prefix="openvpp-bench-") as state_folder, \
            LocalStack(replace(settings, stack=replace(settings.stack, state_dir=Path(state_folder))),
                       ui=False) as stack:
        pids = stack.part_pids()
        before: dict[str, float] = {}

        def warmed_up() -> None:
            before.update({**read_cpu_seconds(pids), BENCH_CLIENT: _client_cpu_seconds()})

        runs = asyncio.run(bench(stack.settings, warmed_up))
        after = {**read_cpu_seconds(pids), BENCH_CLIENT: _client_cpu_seconds()}
        cpu_seconds.update(cpu_seconds_used(before, after) if before else {})
        return runs
