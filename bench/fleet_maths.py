"""Speed of the fleet maths at fleet scale, and a simulated dispatch event.

``python -m bench.fleet_maths [--sites 100000] [--repeats 5]`` builds a synthetic fleet (seeded), a
5-level membership graph (root → 5 regions → 100 zones → 2,000 feeders → 10,000 streets; every node
holds all the sites below it) and a telemetry batch of one reading per site plus 10 % late, duplicate
and invalid rows, then prints the best-of-``repeats`` time of

* telemetry ingest (readings/s),
* aggregation of every node (ms),
* allocation of a fleet-wide target (ms) and one closed-loop correction step (ms),

and the outcome of a simulated 10 MW event over 10,000 sites where 5 % of the sites never receive a
command (seconds to 95 % of target, seconds until it stays within ±2 %, largest error from 30 s on).
The simulated plant: a site that has received a command holds ``0.97 ×`` its latest setpoint (losses)
at the next 5 s control step, plus small noise; the others stay idle. No stack needed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import scipy.sparse as sp

from algorithms.fleet.accounting import account_event
from algorithms.fleet.aggregate import aggregate_fleet, describe
from algorithms.fleet.allocation import AllocationRules, allocate_setpoints, correct_setpoints
from algorithms.fleet.fleet_types import NEVER, FleetState, SiteParameters, TelemetryBatch
from algorithms.fleet.telemetry import ingest_telemetry
from simulator.population import make_site_parameters

NOW_MS = 1_700_000_000_000
LEVEL_SIZES = (1, 5, 100, 2_000, 10_000)
_Result = TypeVar("_Result")


def synthetic_membership(site_count: int, level_sizes: tuple[int, ...] = LEVEL_SIZES) -> sp.csr_matrix:
    """Nodes × sites csr: level ``k`` has ``level_sizes[k]`` nodes; site ``i`` is under node ``i % size``
    of each level (levels nest because every size divides the next)."""
    sites = np.arange(site_count)
    offsets = np.cumsum((0, *level_sizes[:-1]))
    node_rows = np.concatenate([offset + sites % size for offset, size in zip(offsets, level_sizes, strict=True)])
    site_columns = np.tile(sites, len(level_sizes))
    return sp.csr_matrix((np.ones(len(node_rows)), (node_rows, site_columns)),
                         shape=(int(sum(level_sizes)), site_count))


def synthetic_batch(parameters: SiteParameters, now_ms: int, seed: int = 1) -> TelemetryBatch:
    """One reading per site (some stale, 2 % never) plus 10 % extra rows: repeats, older and invalid ones."""
    rng = np.random.default_rng(seed)
    count = parameters.site_count
    reporting = np.flatnonzero(rng.random(count) > 0.02)
    extra = rng.choice(reporting, size=count // 10)
    rows = np.concatenate([reporting, extra])
    size = len(rows)
    age_ms = np.where(rng.random(size) < 0.05, rng.integers(60_000, 600_000, size), rng.integers(0, 20_000, size))
    soc_pct = rng.uniform(5.0, 100.0, size)
    soc_pct[len(reporting):][: count // 100] = 130.0  # a few invalid readings among the extras
    power_kw = rng.uniform(-1.0, 1.0, size) * parameters.max_discharge_kw[rows]
    order = rng.permutation(size)
    return TelemetryBatch(
        site_ids=parameters.site_ids[rows][order],
        sequence=(1_000 - age_ms // 5_000)[order].astype(np.int64),
        measured_at_ms=(now_ms - age_ms)[order].astype(np.int64),
        battery_power_kw=power_kw[order],
        state_of_charge_pct=soc_pct[order],
        pv_power_kw=rng.uniform(0.0, 5.0, size)[order],
        load_power_kw=rng.uniform(0.2, 3.0, size)[order],
    )


def _best_seconds(action: Callable[[], _Result], repeats: int) -> tuple[float, _Result]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def simulate_dispatch_event(site_count: int = 10_000, target_mw: float = 10.0, lost_fraction: float = 0.05,
                            step_s: float = 5.0, duration_s: float = 120.0, seed: int = 2) -> dict[str, float]:
    """Run a closed-loop event against the simulated plant (see the module docstring).

    Returns seconds to reach 95 % of target, the largest |error| (% of target) from then on, and the
    accounting's delivered share (%).
    """
    rng = np.random.default_rng(seed)
    parameters = make_site_parameters(site_count, seed)
    soc_pct = rng.uniform(40.0, 100.0, site_count)
    state = FleetState(
        measured_at_ms=np.full(site_count, NOW_MS, dtype=np.int64), sequence=np.zeros(site_count, dtype=np.int64),
        battery_power_kw=np.zeros(site_count), state_of_charge_pct=soc_pct, pv_power_kw=np.zeros(site_count),
        load_power_kw=np.zeros(site_count))
    rules = AllocationRules()
    rows = np.arange(site_count, dtype=np.int64)
    allocation = allocate_setpoints(parameters, state, rows, target_mw, duration_s, NOW_MS, rules)
    reachable = rng.random(site_count) >= lost_fraction
    held_kw = np.zeros(site_count)
    ack_ms = np.full(site_count, NEVER, dtype=np.int64)
    steps = int(duration_s // step_s)
    asked, measured_log, acks = [], [], []
    totals = []
    for step in range(1, steps + 1):
        now = NOW_MS + int(step * step_s * 1000)
        asked.append(allocation.setpoint_kw)
        held_kw = np.where(reachable, allocation.setpoint_kw, held_kw)  # commands land within the step
        ack_ms = np.where(reachable & (ack_ms == NEVER), now - 3_000, ack_ms)
        measured = 0.97 * held_kw + rng.normal(0.0, 0.05, site_count)
        measured_log.append(measured)
        acks.append(ack_ms != NEVER)
        totals.append(float(measured.sum()) / 1000.0)
        allocation = correct_setpoints(parameters, state, allocation, ack_ms != NEVER, measured, target_mw, rules)
    error_pct = np.abs(np.array(totals) / target_mw - 1.0) * 100.0
    reached = np.flatnonzero(error_pct <= 5.0)
    first = int(reached[0]) if len(reached) else steps - 1
    outside = np.flatnonzero(error_pct > 2.0)
    settled = int(outside[-1]) + 1 if len(outside) else 0
    account = account_event(parameters.site_ids, np.array(asked), np.array(acks), np.array(measured_log),
                            np.full(steps, step_s), first_ack_ms=ack_ms)
    return {
        "event_seconds_to_95pct": (first + 1) * step_s,
        "event_max_abs_error_pct_after_95pct": float(error_pct[first:].max()),
        "event_seconds_to_hold_within_2pct": (settled + 1) * step_s,
        "event_max_abs_error_pct_after_30s": float(error_pct[int(30.0 // step_s) - 1:].max()),
        "event_delivered_pct": account.summary.delivered_pct,
    }


def measure_fleet_maths(site_count: int = 100_000, repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` timings of ingest, aggregation, allocation and correction at ``site_count``
    sites, plus :func:`simulate_dispatch_event`; prints them and returns them by name."""
    parameters = make_site_parameters(site_count, seed=0)
    membership = synthetic_membership(site_count)
    batch = synthetic_batch(parameters, NOW_MS)
    empty = FleetState.empty(site_count)
    ingest_s, ingested = _best_seconds(lambda: ingest_telemetry(parameters, empty, batch, NOW_MS), repeats)
    state = ingested.state
    aggregate_s, aggregates = _best_seconds(
        lambda: aggregate_fleet(parameters, state, membership, NOW_MS), repeats)
    rows = np.arange(site_count, dtype=np.int64)
    rules = AllocationRules()
    target_mw = 0.2 * float(aggregates.discharge_power_available_mw.reported[0])
    allocate_s, allocation = _best_seconds(
        lambda: allocate_setpoints(parameters, state, rows, target_mw, 1_800.0, NOW_MS, rules), repeats)
    acknowledged = np.ones(site_count, dtype=bool)
    measured = 0.95 * allocation.setpoint_kw
    correct_s, _ = _best_seconds(
        lambda: correct_setpoints(parameters, state, allocation, acknowledged, measured, target_mw, rules,
                                  now_ms=NOW_MS + 5_000), repeats)
    figures = {
        "sites": float(site_count),
        "graph_nodes": float(membership.shape[0]),
        "ingest_readings_per_s": batch.reading_count / ingest_s,
        "ingest_ms": ingest_s * 1000.0,
        "aggregate_ms": aggregate_s * 1000.0,
        "allocate_ms": allocate_s * 1000.0,
        "correct_ms": correct_s * 1000.0,
    }
    figures |= simulate_dispatch_event()
    print(f"{site_count:,} sites, {batch.reading_count:,} readings, {membership.shape[0]:,} nodes in "
          f"{len(LEVEL_SIZES)} levels")
    print(f"root: {describe(aggregates, 0)}")
    for name, value in figures.items():
        print(f"{name:>36}: {value:,.1f}")
    return figures


def main() -> None:
    """Command-line entry: ``python -m bench.fleet_maths``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sites", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    measure_fleet_maths(arguments.sites, arguments.repeats)


if __name__ == "__main__":
    main()
