"""``vpp bench fleet``: the VPP's figures on this machine, each printed against its goal.

1. Asset graph (``sites`` sites, default 100,000) in a scratch database on the configured PostgreSQL
   (``DATABASE_URL``, else the embedded server): import rate, subtree resolution (recursive CTE vs
   closure table), membership matrix, **whole-graph aggregation** (goal < 200 ms).
2. Fleet maths at ``sites``: **telemetry ingest** (goal ≥ 50,000 readings/s), aggregation of a 5-level
   graph, **allocation of a fleet-wide target** (goal < 1 s), one correction step.
3. The fleet simulator at ``sites``: time per simulated second, telemetry and command handling.
4. A live dispatch event: ``event_mw`` MW over ``event_sites`` simulated homes (default 10 MW over
   10,000) with 5 % of commands lost, over the real gateway and gRPC streams, in real time
   (``event_seconds``): **time to 95 % of target** (goal ≤ 30 s) and **largest error once held**
   (goal ±2 %, from 5 s after the target is reached).
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from rich.table import Table

from settings import Settings


def _database_section(settings: Settings, site_count: int, repeats: int) -> dict[str, float]:
    from bench.assets import measure_asset_graph
    from models.db import resolve_database_url, scratch_database

    server_url, embedded = resolve_database_url(settings)
    try:
        with scratch_database(server_url) as url:
            return measure_asset_graph(url, site_count, repeats=repeats)
    finally:
        if embedded is not None:
            embedded.stop()


def run_fleet_bench(settings: Settings, *, sites: int = 100_000, event_sites: int = 10_000,
                    event_mw: float = 10.0, event_seconds: float = 60.0, repeats: int = 3,
                    console: Console | None = None) -> int:
    """Measure and print every section; returns 0 (figures are reported, not asserted)."""
    from bench.fleet_event import run_fleet_event
    from bench.fleet_maths import measure_fleet_maths
    from bench.fleet_simulator import measure_simulator
    from stack.ports import free_tcp_port

    out = console or Console()
    out.rule(f"asset graph, {sites:,} sites (PostgreSQL)")
    graph = _database_section(settings, sites, repeats)
    out.rule(f"fleet maths, {sites:,} sites")
    maths = measure_fleet_maths(sites, repeats)
    out.rule(f"fleet simulator, {sites:,} sites")
    simulator = measure_simulator(sites, repeats)
    out.rule(f"live event: {event_mw:g} MW over {event_sites:,} simulated homes, 5 % of commands lost")
    trace = asyncio.run(run_fleet_event(site_count=event_sites, target_mw=event_mw, duration_s=event_seconds,
                                        port=free_tcp_port(), fleet_settings=settings.fleet))
    table = Table(title="openvpp fleet figures")
    for column in ("figure", "measured", "goal"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    rows: list[tuple[str, str, str]] = [
        (f"whole-graph aggregation: {graph['aggregation_nodes']:,.0f} nodes of 3 hierarchies over {sites:,} sites",
         f"{graph['aggregate_ms']:.1f} ms", "< 200 ms"),
        ("  the same with every site as its own node too", f"{graph['aggregate_with_site_rows_ms']:.1f} ms", ""),
        ("membership matrix build (PostgreSQL → csr)", f"{graph['membership_s'] * 1000:.0f} ms", ""),
        ("subtree of the root: recursive CTE / closure table",
         f"{graph['root_cte_ms']:.0f} / {graph['root_closure_ms']:.0f} ms", ""),
        ("subtree of a feeder: recursive CTE / closure table",
         f"{graph['feeder_cte_ms']:.2f} / {graph['feeder_closure_ms']:.2f} ms", ""),
        ("asset import (file → validated rows → PostgreSQL)", f"{graph['import_sites_per_s']:,.0f} sites/s", ""),
        ("telemetry ingest", f"{maths['ingest_readings_per_s']:,.0f} readings/s", "≥ 50,000/s"),
        ("fleet-wide allocation", f"{maths['allocate_ms']:.1f} ms", "< 1 s"),
        ("one correction step", f"{maths['correct_ms']:.1f} ms", ""),
        ("simulator: one simulated second", f"{_first(simulator, 'advance_1s_ms'):.1f} ms", ""),
        (f"event: time to 95 % of {event_mw:g} MW", f"{trace.reached_s:.1f} s", "≤ 30 s"),
        (f"event: largest error from {trace.hold_from_s:.1f} s to the end", f"{trace.hold_error_pct:.2f} %",
         "≤ ±2 %"),
        ("event: sites that acknowledged / commands resent",
         f"{trace.acknowledged_sites:,} / {trace.commands_resent:,}", ""),
        ("event: energy delivered / asked (impact log)",
         f"{trace.delivered_mwh * 1000:.1f} / {trace.asked_mwh * 1000:.1f} kWh", ""),
    ]
    for row in rows:
        table.add_row(*row)
    out.print(table)
    return 0


def _first(figures: dict[str, Any], key: str) -> float:
    """A figure by key, or NaN when the section did not report it."""
    value = figures.get(key)
    return float(value) if value is not None else float("nan")
