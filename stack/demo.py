"""``vpp demo``: an accelerated trading hour of January 2021 through the real workflows.

If a stack is already running (``vpp up``), the demo uses it; otherwise it starts a headless stack
in a temporary state folder for the duration of the demo and stops it afterwards. Either way the
cycles are the production workflow, workers, services and market model.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.temporal_client import connect_temporal
from settings import Settings
from stack.cycles import CycleRun, decision_times, run_cycles
from stack.ports import port_in_use
from stack.processes import split_address


def stack_is_running(settings: Settings) -> bool:
    """Whether a Temporal frontend answers at the configured address (a ``vpp up`` is running)."""
    host, port = split_address(settings.stack.temporal_address)
    return port_in_use(host, port)


def _number(value: float, decimals: int) -> str:
    """``value`` with thousands separators, never printed as a negative zero."""
    shown = round(value, decimals)
    return f"{shown + 0.0:,.{decimals}f}"


def cycles_table(runs: Sequence[CycleRun]) -> Table:
    """One row per cycle: interval, outcome, price, cleared MW, revenue, SoC, latency."""
    table = Table(title="AutoBidder cycles")
    for column in ("dispatch interval", "status", "RRP $/MWh", "gen MW", "load MW", "energy $", "FCAS $",
                   "SoC MWh", "cycle→ack s"):
        table.add_column(column, justify="right" if column not in ("dispatch interval", "status") else "left")
    for run in runs:
        result = run.result
        if result is None:
            table.add_row(f"decided {run.decision_time:%m-%d %H:%M:%S}", f"[red]FAILED[/red] {run.failure}",
                          *[""] * 7)
            continue
        outcome = result.outcome
        status = result.status + (" (safe)" if any("SAFE" in f.summary for f in result.facts) else "")
        if outcome is None or not outcome.cleared:
            table.add_row(result.dispatch_interval, status, *[""] * 6, f"{result.latency_to_ack_s:.2f}")
            continue
        price = "" if outcome.price is None else f"{outcome.price:,.2f}"
        table.add_row(result.dispatch_interval, status, price, _number(outcome.gen_mw, 1),
                      _number(outcome.load_mw, 1), _number(outcome.energy_revenue_dollars, 2),
                      _number(outcome.fcas_revenue_dollars, 2), _number(outcome.state_of_charge_mwh, 1),
                      f"{result.latency_to_ack_s:.2f}")
    return table


def print_summary(console: Console, runs: Sequence[CycleRun]) -> None:
    """Totals: cycles submitted, revenue, latency median."""
    done = [r.result for r in runs if r.result is not None]
    cleared = [r.outcome for r in done if r.outcome is not None and r.outcome.cleared]
    energy = sum(o.energy_revenue_dollars for o in cleared)
    fcas = sum(o.fcas_revenue_dollars for o in cleared)
    latencies = [r.latency_to_ack_s for r in done]
    console.print(f"{len(done)}/{len(runs)} cycles submitted a bid; revenue ${energy + fcas:,.2f} "
                  f"(energy ${energy:,.2f}, FCAS ${fcas:,.2f})"
                  + (f"; median cycle start → bid acknowledged {statistics.median(latencies):.2f} s" if latencies
                     else ""))


async def _demo_cycles(settings: Settings, region: str, start: datetime, intervals: int) -> list[CycleRun]:
    client = await connect_temporal(settings)
    times = decision_times(start, intervals, settings.cycle.schedule_offset_s)
    return await run_cycles(client, settings, times, region=region)


def run_demo(settings: Settings, *, region: str, start: datetime, intervals: int) -> int:
    """Run ``intervals`` consecutive cycles whose first decision is made at ``start`` (AEST) + the schedule
    offset; print what happened. Returns 0 when every cycle submitted a bid."""
    console = Console(width=None if Console().is_terminal else 130)
    if stack_is_running(settings):
        console.print(f"Using the running stack at {settings.stack.temporal_address}.")
        runs = asyncio.run(_demo_cycles(settings, region, start, intervals))
    else:
        from stack.supervisor import LocalStack

        state_dir = Path(tempfile.mkdtemp(prefix="openvpp-demo-"))
        demo_settings = replace(settings, stack=replace(settings.stack, state_dir=state_dir))
        console.print(f"Starting a local stack for the demo (state in {state_dir}) …")
        with LocalStack(demo_settings, ui=False) as stack:
            console.print("Stack up. Running cycles …")
            runs = asyncio.run(_demo_cycles(stack.settings, region, start, intervals))
    console.print(cycles_table(runs))
    print_summary(console, runs)
    return 0 if all(r.result is not None for r in runs) else 1
