"""Build + solve time of the 288-interval energy + FCAS dispatch LP, per backend, over real prices.

``python -m bench.dispatch_lp [--repeats N] [--region SA1] [--horizon 288]`` times
:func:`algorithms.market.optimise.solve_dispatch` (validation, build, solve and reading the plan back) with
the highspy backend and with the PuLP backend (the same matrix loaded into PuLP) on the same windows of the
DISPATCHPRICE data (consecutive days, every FCAS product of the data, the configured battery, start = end = the
configured initial SoC), alternating the two so both see the same machine load. Prints the median and
p95 wall time (ms) per backend, the median thread CPU time (less sensitive to other processes) and the
largest relative difference between the two objectives. No stack needed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aemo.mms import load_dispatch_prices
from algorithms.common.battery import battery_from_spec, battery_spec_from_settings
from algorithms.market.optimise import Backend, DispatchPlan, solve_dispatch
from settings import Settings, load_settings

BENCH_BACKENDS: tuple[Backend, ...] = ("highspy", "pulp")


@dataclass
class BackendTimes:
    """Wall and thread CPU milliseconds of each solve, and the objectives ($)."""

    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    objective_dollars: list[float] = field(default_factory=list)


def _timed_solve(horizon: dict[str, np.ndarray], settings: Settings, backend: Backend,
                 times: BackendTimes) -> DispatchPlan:
    battery = battery_from_spec(battery_spec_from_settings(settings.battery))
    start_mwh = settings.battery.initial_state_of_charge_mwh
    wall, cpu = time.perf_counter(), time.thread_time()
    plan = solve_dispatch(horizon, battery, start_mwh, start_mwh, backend=backend)
    times.cpu_ms.append((time.thread_time() - cpu) * 1000.0)
    times.wall_ms.append((time.perf_counter() - wall) * 1000.0)
    if plan.status != "OPTIMAL":
        raise RuntimeError(f"benchmark solve with {backend} ended {plan.status}: {plan.status_reason}")
    times.objective_dollars.append(plan.objective_dollars)
    return plan


def dispatch_solve_times(settings: Settings, *, region: str, horizon_intervals: int,
                         repeats: int) -> dict[Backend, BackendTimes]:
    """Build + solve times (ms) of ``repeats`` windows of ``horizon_intervals`` per backend.

    Window ``i`` starts ``horizon_intervals * i`` intervals into the data (wrapping around); the
    backends alternate on each window.
    """
    prices = load_dispatch_prices(settings.market_data.data_dir)
    series = {product: prices.series(region, product) for product in prices.products}
    windows = max(1, len(prices.intervals) // horizon_intervals)
    results: dict[Backend, BackendTimes] = {backend: BackendTimes() for backend in BENCH_BACKENDS}
    for repeat in range(repeats):
        first = horizon_intervals * (repeat % windows)
        horizon = {product: values[first:first + horizon_intervals] for product, values in series.items()}
        order = BENCH_BACKENDS if repeat % 2 == 0 else BENCH_BACKENDS[::-1]
        for backend in order:
            _timed_solve(horizon, settings, backend, results[backend])
    return results


def largest_relative_difference(first: Sequence[float], second: Sequence[float]) -> float:
    """max |a - b| / max(1, |b|) over paired objectives ($)."""
    return max((abs(a - b) / max(1.0, abs(b)) for a, b in zip(first, second, strict=True)), default=0.0)


def report(results: dict[Backend, BackendTimes], horizon_intervals: int) -> str:
    """The figures as text lines."""
    lines = [f"{horizon_intervals}-interval energy + FCAS dispatch LP, solve_dispatch build + solve:"]
    for backend, times in results.items():
        lines.append(
            f"  {backend:8s} median {statistics.median(times.wall_ms):7.1f} ms   "
            f"p95 {float(np.percentile(times.wall_ms, 95)):7.1f} ms   "
            f"CPU median {statistics.median(times.cpu_ms):7.1f} ms   ({len(times.wall_ms)} solves)"
        )
    difference = largest_relative_difference(
        results["highspy"].objective_dollars, results["pulp"].objective_dollars
    )
    lines.append(f"  largest relative objective difference highspy vs pulp: {difference:.2e}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run the benchmark and print the figures; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--region", default="SA1")
    parser.add_argument("--horizon", type=int, default=288)
    arguments = parser.parse_args(argv)
    settings = load_settings()
    results = dispatch_solve_times(settings, region=arguments.region, horizon_intervals=arguments.horizon,
                                   repeats=arguments.repeats)
    print(report(results, arguments.horizon))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
