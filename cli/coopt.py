"""`vpp coopt …`: the co-optimised VPP — forecast versions at the sites, their plans, a distribution run now."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from activities.distribution_facts import DistributionResult
from cli.calls import JsonOpt, plain, print_json, with_temporal
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
def coopt_status(ctx: typer.Context, json_output: Annotated[bool, JsonOpt] = False) -> None:
    """Which forecast version the sites hold, what their plans were built on, and the distribution counters."""
    from cli.fleet import _gateway_call
    from cli.main import console, load

    response = _gateway_call("GetPlans", fleet_pb2.GetPlansRequest(), load(ctx))
    if json_output:
        print_json(dict(distribution_rows(response)))
        return
    table = Table(title="price-forecast distribution and site plans")
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in distribution_rows(response):
        table.add_row(label, value)
    console().print(table)


def distribution_result_rows(result: DistributionResult) -> list[tuple[str, str]]:
    """Readable (label, value) rows of a distribution run's result."""
    published, bid = result.published, result.fleet_bid
    decided = result.decision_time.replace("T", " ")[:19]
    rows = [("forecast version", f"v{result.version} (decided at {decided} AEST, market time)"),
            ("published", (f"pushed to {published.sites_pushed:,} sites over {published.streams_pushed:,} streams "
                           f"({published.bytes_pushed:,} bytes); {published.poll_sites:,} sites poll")
             if published.published else "already published (a retry of the same version)"),
            ("site plans", f"{bid.current_version_sites:,} on this version, {bid.stale_version_sites:,} on older "
                           f"versions, {bid.estimated_sites:,} estimated, of {bid.expected_sites:,} sites"),
            ("fleet bid", bid.summary if bid.valid else f"invalid: {'; '.join(bid.violations)}")]
    submitted = result.submitted
    if submitted is None:
        rows.append(("market", "not submitted"))
    else:
        answer = f"{submitted.status} as {submitted.bid_id}"
        if submitted.reasons:
            answer += f" ({'; '.join(submitted.reasons)})"
        rows.append(("market", answer))
        if submitted.dispatch_mw is not None:
            energy_price = submitted.energy_price_per_mwh
            price = ("" if energy_price is None
                     else f" at {'-' if energy_price < 0 else ''}${abs(energy_price):,.2f}/MWh")
            rows.append(("dispatch instruction", f"{submitted.dispatch_mw:+.3f} MW{price}"))
    events = [e for e in result.dispatch_event_ids if e]
    rows.append(("dispatch events", ", ".join(events) if events else "none started"))
    return rows


@coopt_app.command("distribute")
def coopt_distribute(
    ctx: typer.Context,
    wait: Annotated[bool, typer.Option(help="Wait for the run and print its result.")] = True,
    storm_warning: Annotated[bool, typer.Option(help="A storm warning is in force: every site raises its backup "
                                                     "reserve while it plans on this version.")] = False,
    dispatch_intervals: Annotated[int, typer.Option(min=0, max=12, help="Intervals of the bid to dispatch through "
                                                    "the control loop (the schedule's rounds do 3).")] = 1,
    json_output: Annotated[bool, JsonOpt] = False,
) -> None:
    """Run the price-forecast distribution now (as the 15-minute schedule would) and print the fleet bid.

    While it waits (the sites need ``[coopt] plan_collection_s`` to send their plans back) a progress line
    shows the elapsed time; --no-wait returns once the run has started."""
    from uuid import uuid4

    from rich.status import Status

    from cli.main import console, load
    from stack.schedule import DISTRIBUTION_SCHEDULE_ID, distribution_input
    from workflows.distribution import PriceForecastDistribution

    settings = load(ctx)
    err = console(to_stderr=True)

    async def run(client: Any) -> tuple[str, DistributionResult | None]:
        handle = await client.start_workflow(PriceForecastDistribution.run,
                                             replace(distribution_input(settings, storm_warning=storm_warning),
                                                     dispatch_intervals=dispatch_intervals),
                                             id=f"{DISTRIBUTION_SCHEDULE_ID}-manual-{uuid4().hex[:8]}",
                                             task_queue=settings.stack.task_queue,
                                             static_summary="price-forecast distribution started by hand")
        err.print(f"started {handle.id}", highlight=False, soft_wrap=True)
        if not wait:
            return handle.id, None
        started = time.monotonic()
        collecting = settings.coopt.plan_collection_s
        with Status("", console=err) as status:
            task = asyncio.ensure_future(handle.result())
            while not task.done():
                elapsed = time.monotonic() - started
                stage = ("sites are planning and sending their plans back" if elapsed < collecting
                         else "bidding the fleet's plans and dispatching")
                status.update(f"waiting for {handle.id}: {stage} ({elapsed:.0f} s; plans are collected for "
                              f"{collecting:g} s)")
                await asyncio.wait([task], timeout=1.0)
            return handle.id, task.result()

    workflow_id, result = with_temporal(settings, run)
    if result is None:
        if json_output:
            print_json({"workflow_id": workflow_id})
        return
    if json_output:
        print_json({"workflow_id": workflow_id, **plain(result)})
        return
    table = Table(title=f"distribution run {workflow_id}", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for label, value in distribution_result_rows(result):
        table.add_row(label, value)
    console().print(table)
