"""`vpp coopt …`: the co-optimised VPP — forecast versions at the sites, their plans, a distribution run now."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from vpp.v1 import fleet_pb2

coopt_app = typer.Typer(help="Co-optimised VPP: price-forecast versions at the sites, their plans, the fleet bid.",
                        no_args_is_help=True)


def distribution_rows(response: fleet_pb2.GetPlansResponse) -> list[tuple[str, str]]:
    """Readable (label, value) rows of a GetPlans answer: versions held, plans by version, counters."""
    latest = int(response.latest_version)
    held = np.asarray(response.held_version, dtype=np.int64)
    sites = len(held)
    holding_latest = int(np.count_nonzero(held == latest)) if latest else 0
    rows = [("newest version", f"v{latest}" if latest else "none published"),
            ("sites", f"{sites:,}"),
            ("sites holding the newest version", f"{holding_latest:,} ({100 * holding_latest / max(sites, 1):.1f} %)"),
            ("sites holding an older version", f"{int(np.count_nonzero((held > 0) & (held < latest))):,}"),
            ("sites holding no version", f"{int(np.count_nonzero(held == 0)):,}")]
    by_version = Counter(int(v) for v in response.plans.forecast_version)
    for version, count in sorted(by_version.items(), reverse=True)[:5]:
        label = "current" if version == latest else ("no forecast" if version == 0 else "older")
        rows.append((f"plans on v{version} ({label})", f"{count:,}"))
    rows += [("forecasts pushed (messages / bytes)",
              f"{response.forecasts_pushed:,} / {response.forecast_bytes_pushed:,}"),
             ("polls (answered)", f"{response.polls:,} ({response.polls_answered:,})"),
             ("plans accepted", f"{response.plans_accepted:,}")]
    rows += [(f"plans quarantined: {reason}", f"{count:,}")
             for reason, count in sorted(response.plans_quarantined.items())]
    return rows


@coopt_app.command("status")
def coopt_status(ctx: typer.Context) -> None:
    """Which forecast version the sites hold, what their plans were built on, and the distribution counters."""
    from cli.fleet import _gateway_call
    from cli.main import console, load

    response = _gateway_call("GetPlans", fleet_pb2.GetPlansRequest(), load(ctx))
    table = Table(title="price-forecast distribution and site plans")
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in distribution_rows(response):
        table.add_row(label, value)
    console().print(table)


@coopt_app.command("distribute")
def coopt_distribute(
    ctx: typer.Context,
    wait: Annotated[bool, typer.Option(help="Wait for the run and print its result.")] = True,
    storm_warning: Annotated[bool, typer.Option(help="A storm warning is in force: every site raises its backup "
                                                     "reserve while it plans on this version.")] = False,
    dispatch_intervals: Annotated[int, typer.Option(min=0, help="Intervals of the bid to dispatch through the "
                                                          "control loop (the schedule's rounds do 3).")] = 1,
) -> None:
    """Run the price-forecast distribution now (as the 15-minute schedule would) and print the fleet bid."""
    from cli.main import console, fail, load
    from stack.schedule import DISTRIBUTION_SCHEDULE_ID, distribution_input
    from workflows.distribution import PriceForecastDistribution

    settings = load(ctx)

    async def run() -> object:

        from services.temporal_client import connect_temporal

        client = await connect_temporal(settings)
        from uuid import uuid4

        handle = await client.start_workflow(PriceForecastDistribution.run,
                                             replace(distribution_input(settings, storm_warning=storm_warning),
                                                     dispatch_intervals=dispatch_intervals),
                                             id=f"{DISTRIBUTION_SCHEDULE_ID}-manual-{uuid4().hex[:8]}",
                                             task_queue=settings.stack.task_queue)
        console().print(f"started {handle.id}")
        return await handle.result() if wait else None

    try:
        result = asyncio.run(run())
    except Exception as exc:  # the Temporal error carries the step that failed
        raise fail(f"distribution run failed: {exc}: {getattr(exc, 'cause', '')}") from None
    if result is not None:
        console().print(result)
