"""``vpp fleet …`` (the fleet gateway, simulated homes, live aggregates) and ``vpp dispatch …`` (VPP events).

The database is ``DATABASE_URL`` if set, else the embedded server in the state folder (as ``vpp db
migrate``); pending migrations are applied first. The gateway is ``127.0.0.1:[fleet] gateway_port``;
Temporal is ``[stack] temporal_address``; dispatch workflows run on ``[fleet] task_queue``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.calls import DISPATCH_WORKFLOW_TYPE, CommandError, JsonOpt, dispatch_event, print_json, with_temporal

fleet_app = typer.Typer(help="The fleet: gateway, simulated homes, live aggregates.", no_args_is_help=True)
dispatch_app = typer.Typer(help="VPP dispatch events: hold a MW target at a node of the asset graph.",
                           no_args_is_help=True)

TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
TIME_HELP = "Start (ISO time; without an offset it is UTC). Default: now."


@contextmanager
def database(ctx: typer.Context) -> Iterator[str]:
    """A migrated database URL for this command (the embedded server is stopped afterwards)."""
    import psycopg

    from cli.main import fail, load
    from models.db import MigrationError, migrate, resolve_database_url
    from settings import ConfigError

    embedded = None
    try:
        url, embedded = resolve_database_url(load(ctx))
        migrate(url)
    except (psycopg.Error, MigrationError, OSError, ConfigError) as exc:
        if embedded is not None:
            embedded.stop()
        raise fail(f"cannot reach PostgreSQL: {exc}") from None
    try:
        yield url
    finally:
        if embedded is not None:
            embedded.stop()




@fleet_app.command("seed")
def fleet_seed(
    ctx: typer.Context,
    sites: Annotated[int, typer.Option(min=1, help="Simulated sites (default: [fleet] simulated_sites).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic fleet.")] = 0,
) -> None:
    """Register a synthetic fleet (sites and their graph) when the asset graph has no site yet."""
    from cli.main import console, load
    from simulator.population import seed_fleet

    settings = load(ctx)
    with database(ctx) as url:
        imported = seed_fleet(url, sites or settings.fleet.simulated_sites, seed or settings.fleet.simulator_seed)
    console().print(f"imported {imported:,} sites" if imported else "the asset graph already has sites")


@fleet_app.command("gateway")
def fleet_gateway(ctx: typer.Context) -> None:
    """Run the fleet gateway (the sites of the asset graph) until SIGINT/SIGTERM."""
    import psycopg

    from cli.main import clean_errors, fail, load, run_until_signal
    from models.assets import site_parameters
    from services.fleet_gateway import FleetGateway, serve_gateway
    from services.security import EdgeConfigError, EdgeSecurity

    settings = load(ctx)
    try:
        security = EdgeSecurity.from_environment()
    except EdgeConfigError as exc:
        raise fail(str(exc)) from None
    with database(ctx) as url, psycopg.connect(url) as conn:
        parameters = site_parameters(conn)
    if parameters.site_count == 0:
        raise fail("the asset graph has no sites: run `vpp fleet seed` or `vpp assets import FILE` first")
    gateway = FleetGateway(parameters, settings.fleet, site_auth=security.site_authenticator())
    with clean_errors():
        run_until_signal(lambda stop: serve_gateway(gateway, settings.fleet.gateway_port, stop, security))


@fleet_app.command("simulate")
def fleet_simulate(
    ctx: typer.Context,
    command_loss: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of commands lost.")] = 0.01,
    concentrators: Annotated[int, typer.Option(min=1, help="gRPC streams (sites multiplexed per stream).")] = 4,
    plan: Annotated[bool, typer.Option(help="Sites plan their batteries on the price forecasts they receive "
                                            "and send the plans back (the co-optimised VPP).")] = True,
    poll: Annotated[bool, typer.Option(help="Concentrators also poll for forecasts every "
                                            "[fleet] edge_poll_interval_s (poll-mode programmes need it).")] = True,
) -> None:
    """Run simulated homes for every site of the asset graph against the gateway until SIGINT/SIGTERM."""
    from dataclasses import replace

    import psycopg

    from cli.main import fail, load, run_until_signal
    from models.assets import site_parameters
    from services.fleet_gateway import wall_clock_ms
    from services.health import wait_healthy
    from simulator.concentrators import run_concentrators
    from simulator.homes import FleetSimulator, SimulatorConfig

    settings = load(ctx)
    with database(ctx) as url, psycopg.connect(url) as conn:
        parameters = site_parameters(conn)
    if parameters.site_count == 0:
        raise fail("the asset graph has no sites: run `vpp fleet seed` first")
    config = replace(SimulatorConfig(seed=settings.fleet.simulator_seed), command_loss_probability=command_loss)
    simulator = FleetSimulator(parameters, config, wall_clock_ms())
    address = settings.fleet.gateway_address

    async def main(stop: asyncio.Event) -> None:
        await wait_healthy(address, 60.0)
        await run_concentrators(simulator, address, stop, concentrator_count=concentrators,
                                edge=edge_planner_config(settings.fleet) if plan else None, poll=plan and poll)

    run_until_signal(main)


def edge_planner_config(fleet: Any) -> Any:
    """The simulated sites' planner configuration from ``[fleet]`` (the plan shape the gateway stores)."""
    from simulator.edge_planner import EdgePlannerConfig

    return EdgePlannerConfig(
        peak_per_kwh=fleet.edge_peak_per_kwh, offpeak_per_kwh=fleet.edge_offpeak_per_kwh,
        feed_in_per_kwh=fleet.edge_feed_in_per_kwh, peak_start_hour=fleet.edge_peak_start_hour,
        peak_end_hour=fleet.edge_peak_end_hour, market_share=fleet.edge_market_share,
        storm_reserve_fraction=fleet.edge_storm_reserve_fraction, plan_interval_minutes=fleet.plan_interval_minutes,
        plan_horizon_intervals=fleet.plan_horizon_intervals, replan_interval_s=fleet.edge_replan_interval_s,
        poll_interval_s=fleet.edge_poll_interval_s)


def _gateway_call(method: str, request: Any, settings: Any) -> Any:
    import grpc

    from cli.main import fail
    from services.fleet_gateway import CHANNEL_OPTIONS
    from services.security import EdgeConfigError, channel, operator_security
    from vpp.v1 import fleet_pb2_grpc

    async def call() -> Any:
        security = operator_security(settings.stack.state_dir)  # the environment's, else `vpp up`'s
        async with channel(settings.fleet.gateway_address, security, CHANNEL_OPTIONS) as gateway:
            stub = fleet_pb2_grpc.FleetGatewayServiceStub(gateway)
            return await getattr(stub, method)(request, timeout=30)

    try:
        return asyncio.run(call())
    except EdgeConfigError as exc:
        raise fail(str(exc)) from None
    except grpc.aio.AioRpcError as exc:
        raise fail(f"fleet gateway: {exc.code().name}: {exc.details()}") from None


@fleet_app.command("stats")
def fleet_stats(
    ctx: typer.Context,
    recent: Annotated[int, typer.Option(min=0, help="Also list this many of the newest quarantined readings.")] = 0,
) -> None:
    """Telemetry ingest counters of the running gateway (accepted, duplicate, quarantined by reason)."""
    from cli.main import console, load
    from vpp.v1 import fleet_pb2

    stats = _gateway_call("GetIngestStats", fleet_pb2.GetIngestStatsRequest(recent_quarantined=recent), load(ctx))
    table = Table(title="fleet gateway ingest")
    table.add_column("counter")
    table.add_column("readings", justify="right")
    for name in ("readings", "accepted", "applied", "duplicate", "out_of_order"):
        table.add_row(name, f"{getattr(stats, name):,}")
    for reason, count in sorted(stats.quarantined.items()):
        table.add_row(f"quarantined: {reason}", f"{count:,}")
    table.add_row("connected streams", f"{stats.connected_streams}")
    table.add_row("setpoints dropped (stream queue full)", f"{stats.dropped_downlink:,}")
    console().print(table)
    if stats.recent:
        quarantined = Table(title="newest quarantined readings")
        for column in ("site", "measured at (UTC)", "reason", "SoC %", "battery kW", "PV kW", "load kW"):
            quarantined.add_column(column)
        for reading in stats.recent:
            measured = datetime.fromtimestamp(reading.measured_at_ms / 1000, tz=UTC).isoformat(timespec="seconds")
            quarantined.add_row(reading.site_id, measured, reading.reason, f"{reading.state_of_charge_pct:g}",
                                f"{reading.battery_power_kw:g}", f"{reading.pv_power_kw:g}",
                                f"{reading.load_power_kw:g}")
        console().print(quarantined)


@fleet_app.command("aggregate")
def fleet_aggregate(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="Node of the asset graph (e.g. region-SA1, feeder-…).")],
    hierarchy: Annotated[str | None, typer.Option(help="Only this hierarchy's subtree.")] = None,
) -> None:
    """Live aggregate of a node's sites with its uncertainty (energy available, sites reporting)."""
    import psycopg

    from cli.main import console, fail, load
    from models.assets import AssetGraphError, sites_under
    from vpp.v1 import fleet_pb2

    settings = load(ctx)
    with database(ctx) as url, psycopg.connect(url) as conn:
        try:
            site_ids = sites_under(conn, node, datetime.now(tz=UTC), hierarchy)
        except AssetGraphError as exc:
            raise fail(str(exc)) from None
    if len(site_ids) == 0:
        raise fail(f"node {node} has no sites now")
    aggregate = _gateway_call("GetAggregate", fleet_pb2.GetAggregateRequest(site_id=site_ids.tolist()), settings)
    console().print(f"{node}: {aggregate.description}; battery power {aggregate.battery_power_mw:+.3f} MW")


# ---------------------------------------------------------------------------------------------------
# Dispatch events


def _temporal(settings: Any) -> Any:
    """A Temporal client of the configured address and namespace (mTLS when the environment says)."""
    from services.temporal_client import connect_temporal

    return connect_temporal(settings)


@dispatch_app.command("start")
def dispatch_start(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="Node of the asset graph whose sites take part.")],
    mw: Annotated[float, typer.Option(help="Target MW at the sites (+ discharge / − charge), within what the "
                                           "node's sites can deliver.")],
    minutes: Annotated[float, typer.Option(min=0.1, max=7 * 24 * 60, help="Length of the window.")] = 60.0,
    start: Annotated[datetime | None, typer.Option(formats=TIME_FORMATS, help=TIME_HELP)] = None,
    hierarchy: Annotated[str | None, typer.Option(help="Only this hierarchy's subtree.")] = None,
    event_id: Annotated[str | None, typer.Option(help="Event id (default: generated).")] = None,
    replace_running: Annotated[bool, typer.Option(
        "--replace", help="Cancel the events already dispatching these sites in this window (with a reason) "
                          "and start this one.")] = False,
    wait: Annotated[bool, typer.Option(help="Wait for the event to end and print its summary.")] = False,
    json_output: Annotated[bool, JsonOpt] = False,
) -> None:
    """Start a dispatch event (a VppDispatchEvent workflow; watch it in the Temporal UI).

    Refused before anything starts: an unknown node, a target beyond what the node's sites can deliver,
    an event id in use, and a window over sites another event is dispatching (unless --replace)."""
    import psycopg

    from activities.dispatch_facts import DispatchEventInput
    from algorithms.fleet.capability import TargetBeyondCapabilityError, check_target, node_capability
    from cli.main import console, fail, load
    from models.assets import AssetGraphError, site_parameters, sites_under

    if not math.isfinite(mw):
        raise fail(f"--mw must be a finite number, got {mw}")
    settings = load(ctx)
    begin = (start or datetime.now(tz=UTC))
    begin = begin if begin.tzinfo else begin.replace(tzinfo=UTC)
    start_ms = int(begin.timestamp() * 1000)
    end_ms = start_ms + int(timedelta(minutes=minutes).total_seconds() * 1000)
    if end_ms <= int(datetime.now(tz=UTC).timestamp() * 1000):
        raise fail(f"the window {begin.isoformat()} + {minutes:g} min is already over")
    identifier = event_id or f"dispatch-{node}-{begin:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    with database(ctx) as url, psycopg.connect(url) as conn:
        try:
            site_ids = sites_under(conn, node, begin, hierarchy)
            capability = node_capability(node, site_parameters(conn, site_ids))
            check_target(mw, capability)
        except (AssetGraphError, TargetBeyondCapabilityError) as exc:
            raise fail(str(exc)) from None

    async def run(client: Any) -> Any:
        from temporalio.service import RPCError, RPCStatusCode

        try:
            await client.get_workflow_handle(identifier).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        else:
            raise CommandError(f"event id {identifier!r} is already in use")
        conflicts = await _conflicting_events(client, url, site_ids, start_ms, end_ms)
        if conflicts and not replace_running:
            listed = ", ".join(f"{e.event_id} at {e.node_id} ({e.stage})" for e in conflicts)
            raise CommandError(f"{len(conflicts)} event(s) already dispatch sites of {node} in this window: {listed}; "
                               "give --replace to cancel them and start this one")
        for event in conflicts:
            with contextlib.suppress(Exception):  # it may have finished meanwhile
                await client.get_workflow_handle(event.event_id).execute_update(
                    "cancel", f"replaced by {identifier} ({mw:+g} MW at {node})")
        handle = await client.start_workflow(
            "VppDispatchEvent",
            DispatchEventInput(event_id=identifier, node_id=node, target_mw=mw, start_ms=start_ms, end_ms=end_ms,
                               hierarchy=hierarchy, control_interval_s=settings.fleet.control_interval_s,
                               max_abs_target_mw=max(capability.discharge_mw, capability.charge_mw)),
            id=identifier, task_queue=settings.fleet.task_queue,
            static_summary=f"{mw:+g} MW at {node} for {minutes:g} min",
            static_details=f"Dispatch event at **{node}**: target {mw:+g} MW (+ discharge / − charge) from "
                           f"{begin.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC (wall clock) for {minutes:g} min. "
                           f"{capability.text()}.")
        replaced = [e.event_id for e in conflicts]
        return replaced, (await handle.result() if wait else None)

    replaced, summary = with_temporal(settings, run)
    if json_output:
        print_json({"event_id": identifier, "node_id": node, "target_mw": mw, "start": begin.isoformat(),
                    "minutes": minutes, "replaced": replaced, "summary": summary})
        return
    out = console()
    for old in replaced:
        out.print(f"cancelled {old}: replaced by {identifier}", highlight=False, soft_wrap=True)
    out.print(f"dispatch event {identifier}: {mw:+g} MW at {node} from {begin.isoformat()} for {minutes:g} min "
              f"({capability.text()})", highlight=False, soft_wrap=True)
    if summary is not None:
        out.print(_summary_text(summary), highlight=False, soft_wrap=True)


async def _conflicting_events(client: Any, url: str, site_ids: Any, start_ms: int, end_ms: int) -> list[Any]:
    """The running dispatch events over any of ``site_ids`` whose windows overlap [start_ms, end_ms)."""
    import numpy as np
    import psycopg

    from algorithms.fleet.capability import RunningEvent, conflicting_events
    from models.assets import AssetGraphError, sites_under

    running: list[RunningEvent] = []
    async for execution in client.list_workflows(
            f"WorkflowType = '{DISPATCH_WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'"):
        try:
            progress = await client.get_workflow_handle(execution.id).query("progress")
        except Exception:  # finished meanwhile, or its worker is gone: it does not hold the sites
            continue
        running.append(RunningEvent(event_id=execution.id, node_id=str(progress.get("node_id", "")),
                                    start_ms=int(progress.get("start_ms") or 0),
                                    end_ms=int(progress.get("end_ms") or 0), stage=str(progress.get("stage", "")),
                                    hierarchy=progress.get("hierarchy")))
    if not running:
        return []
    now = datetime.now(tz=UTC)
    shares: list[bool] = []
    with psycopg.connect(url) as conn:
        for event in running:
            try:
                theirs = sites_under(conn, event.node_id, now, event.hierarchy)
            except AssetGraphError:
                shares.append(False)
                continue
            shares.append(bool(np.intersect1d(theirs, site_ids).size))
    return conflicting_events(running, shares, start_ms, end_ms)


def _step_text(step: dict[str, Any]) -> str:
    """A control step (the ``progress`` query's ``latest``) as a sentence."""
    measured = datetime.fromtimestamp(int(step.get("measured_at_ms", 0)) / 1000, tz=UTC)
    text = (f"measured {float(step.get('measured_mw', 0.0)):+.3f} MW of {float(step.get('target_mw', 0.0)):+.3f} MW at "
            f"{measured:%H:%M:%S} UTC; commanded {float(step.get('commanded_mw', 0.0)):+.3f} MW to "
            f"{int(step.get('commanded_sites', 0)):,} of {int(step.get('site_count', 0)):,} sites "
            f"({int(step.get('acknowledged_sites', 0)):,} acknowledged, {int(step.get('reporting_sites', 0)):,} "
            f"reporting), {float(step.get('unallocated_mw', 0.0)):.3f} MW unallocated")
    excluded = step.get("excluded") or {}
    if excluded:
        text += "; left out: " + ", ".join(f"{reason} {count:,}" for reason, count in sorted(excluded.items()))
    return text


def _summary_text(summary: Any) -> str:
    """An event's summary (the workflow's result, a dict) as a sentence."""
    return (f"{summary['event_id']} {summary['status']}: {summary['site_count']:,} sites, asked "
            f"{summary['asked_mwh']:.3f} MWh, delivered {summary['delivered_mwh']:.3f} MWh, "
            f"{summary['sites_short']:,} sites short, {summary['sites_acknowledged']:,} acknowledged")


@dispatch_app.command("status")
def dispatch_status(ctx: typer.Context, event_id: Annotated[str, typer.Argument(help="Event id.")],
                    json_output: Annotated[bool, JsonOpt] = False) -> None:
    """Progress of an event (the workflow's progress query): stage, target, latest control step."""
    from cli.main import console, load

    settings = load(ctx)

    async def run(client: Any) -> Any:
        handle = await dispatch_event(client, event_id)
        description = await handle.describe()
        try:
            return description.status.name, await handle.query("progress")
        except Exception as exc:  # the query needs the VPP worker
            raise CommandError(f"{event_id}: {description.status.name.lower()}, but its progress cannot be read "
                               f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): is the VPP "
                               "worker running?") from None

    status, progress = with_temporal(settings, run)
    if json_output:
        print_json({"workflow_status": status, **progress})
        return
    console().print(_progress_table(event_id, status, progress))


def _progress_table(event_id: str, status: str, progress: dict[str, Any]) -> Table:
    """The ``progress`` query's answer as a two-column table."""
    table = Table(title=f"dispatch event {event_id}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("workflow", status.lower())
    table.add_row("stage", str(progress.get("stage", "")))
    table.add_row("node", str(progress.get("node_id", "")))
    if progress.get("start_ms"):
        start = datetime.fromtimestamp(progress["start_ms"] / 1000, tz=UTC)
        end = datetime.fromtimestamp(progress["end_ms"] / 1000, tz=UTC)
        table.add_row("window (wall clock)", f"{start:%Y-%m-%d %H:%M:%S} → {end:%H:%M:%S} UTC")
    table.add_row("target", f"{progress.get('target_mw', 0.0):+g} MW")
    table.add_row("sites", f"{progress.get('site_count', 0):,}")
    table.add_row("control steps", f"{progress.get('steps', 0):,}")
    latest = progress.get("latest")
    if latest:
        table.add_row("latest step", _step_text(latest))
    for change in progress.get("target_changes") or []:
        table.add_row("target change", str(change))
    if progress.get("summary"):
        table.add_row("summary", _summary_text(progress["summary"]))
    return table


@dispatch_app.command("set-target")
def dispatch_set_target(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="Event id.")],
    mw: Annotated[float, typer.Argument(help="New target MW.")],
) -> None:
    """Change an event's target (validated by the workflow: finite and within what its node can deliver)."""
    from cli.main import console, fail

    if not math.isfinite(mw):
        raise fail(f"the target must be a finite number of MW, got {mw}")
    previous = _event_update(ctx, event_id, "set_target", mw)
    console().print(f"{event_id}: target {previous:g} -> {mw:g} MW")


def _event_update(ctx: typer.Context, event_id: str, update: str, argument: Any) -> Any:
    """Run update ``update`` of dispatch event ``event_id``; a rejection is one `error:` line, exit 1."""
    from cli.main import load

    settings = load(ctx)

    async def run(client: Any) -> Any:
        handle = await dispatch_event(client, event_id)
        return await handle.execute_update(update, argument)

    return with_temporal(settings, run)


@dispatch_app.command("cancel")
def dispatch_cancel(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="Event id.")],
    reason: Annotated[str, typer.Option(help="Why (goes into the impact log).")],
) -> None:
    """Stop an event now: its sites are released and its impact log recorded."""
    from cli.main import console, fail

    if not reason.strip():
        raise fail("a cancel needs a reason (it goes into the impact log)")
    stage = _event_update(ctx, event_id, "cancel", reason)
    console().print(f"{event_id}: cancelled while {stage}")


@dispatch_app.command("impact")
def dispatch_impact(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="Event id.")],
    site: Annotated[str | None, typer.Option(help="Only this site's row.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown (the sites furthest short first).")] = 20,
) -> None:
    """The impact log of a finished event: per site asked, acknowledged, delivered, shortfall."""
    import numpy as np
    import psycopg

    from cli.main import console, fail
    from models.dispatch_events import get_event, get_impact

    with database(ctx) as url, psycopg.connect(url) as conn:
        record = get_event(conn, event_id)
        impact = get_impact(conn, event_id)
    if record is None:
        raise fail(f"no recorded dispatch event {event_id!r} (it may still be running)")
    console().print(f"{record.event_id} at {record.node_id}: {record.status}, target {record.target_mw:+g} MW, "
                    f"{record.window_start:%Y-%m-%d %H:%M:%S} → {record.window_end:%H:%M:%S} UTC, "
                    f"{record.site_count:,} sites, asked {record.asked_mwh:.3f} MWh, "
                    f"delivered {record.delivered_mwh:.3f} MWh" + (f" ({record.reason})" if record.reason else ""))
    rows = np.argsort(-impact.shortfall_kwh, kind="stable")
    if site is not None:
        rows = np.flatnonzero(impact.site_ids == site)
        if len(rows) == 0:
            raise fail(f"site {site} did not take part in {event_id}")
    table = Table()
    for column in ("site", "asked kWh", "delivered kWh", "shortfall kWh", "acknowledged"):
        table.add_column(column, justify="left" if column in ("site", "acknowledged") else "right")
    for row in rows[:limit].tolist():
        table.add_row(str(impact.site_ids[row]), f"{impact.asked_kwh[row]:.3f}", f"{impact.delivered_kwh[row]:.3f}",
                      f"{impact.shortfall_kwh[row]:.3f}", "yes" if impact.acknowledged[row] else "no")
    console().print(table)


# ---------------------------------------------------------------------------------------------------
# Peak shaving

peak_app = typer.Typer(help="Peak shaving: forecast a node's load, shave its peaks with dispatch events.",
                       no_args_is_help=True)


@peak_app.command("seed-history")
def peak_seed_history(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="Node of the asset graph.")],
    days: Annotated[float, typer.Option(min=1.0, help="Days of 5-minute history ending now.")] = 28.0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic history.")] = 0,
) -> None:
    """Record a synthetic load history for a node's sites (simulator/load_history.py), for demos and trials."""
    import psycopg

    from cli.main import console, fail
    from models.assets import AssetGraphError, site_parameters, sites_under
    from models.node_load import record_node_load
    from simulator.load_history import synthetic_node_load_history

    now = datetime.now(tz=UTC)
    start_ms = int(now.timestamp() * 1000) - int(days * 86_400_000)
    start_ms -= start_ms % 300_000
    with database(ctx) as url, psycopg.connect(url) as conn:
        try:
            site_ids = sites_under(conn, node, now, None)
        except AssetGraphError as exc:
            raise fail(str(exc)) from None
        if len(site_ids) == 0:
            raise fail(f"node {node} has no sites now")
        history = synthetic_node_load_history(node, site_parameters(conn, site_ids), start_ms, days, seed)
        written = record_node_load(conn, history)
    console().print(f"{node}: recorded {written:,} intervals of synthetic load for {len(site_ids):,} sites "
                    f"(peak net load {float(history.net_load_mw.max()):.3f} MW)")


@peak_app.command("plan")
def peak_plan(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="Node whose load is shaved.")],
    threshold: Annotated[float, typer.Option(help="Load the node should not exceed, MW (net of rooftop PV).")],
    hierarchy: Annotated[str | None, typer.Option(help="Only this hierarchy's subtree.")] = None,
    hours: Annotated[float, typer.Option(min=1.0, max=168.0, help="Horizon planned.")] = 24.0,
    json_output: Annotated[bool, JsonOpt] = False,
) -> None:
    """Run the PeakShaving workflow: forecast, find peaks, start a dispatch event per shave and lockout."""
    import psycopg

    from activities.peak_shaving_facts import PeakShavingInput, PeakShavingPlan
    from cli.main import console, fail, load
    from models.assets import AssetGraphError, sites_under

    if not math.isfinite(threshold):
        raise fail(f"--threshold must be a finite number, got {threshold}")
    settings = load(ctx)
    now = datetime.now(tz=UTC)
    workflow_id = f"peak-shaving-{node}-{now:%Y%m%dT%H%M%S}"

    async def run(client: Any) -> Any:
        return await client.execute_workflow(
            "PeakShaving", PeakShavingInput(node_id=node, threshold_mw=threshold, hierarchy=hierarchy,
                                            horizon_intervals=int(hours * 12),
                                            control_interval_s=settings.fleet.control_interval_s),
            id=workflow_id, task_queue=settings.fleet.task_queue, result_type=PeakShavingPlan,
            static_summary=f"peak shaving at {node} above {threshold:g} MW")

    with database(ctx) as url, psycopg.connect(url) as conn:
        try:
            sites_under(conn, node, now, hierarchy)
        except AssetGraphError as exc:
            raise fail(str(exc)) from None
    plan = with_temporal(settings, run)
    if json_output:
        print_json(plan)
        return
    out = console()
    out.print(f"{plan.node_id}: forecast peak {plan.forecast_peak_mw:.3f} MW ({plan.forecast_method}) against a "
              f"threshold of {plan.threshold_mw:g} MW; {plan.peaks_found} peak(s) worth shaving; energy budget "
              f"{plan.energy_budget_mwh:.3f} MWh, discharge power {plan.max_discharge_mw:.3f} MW; {plan.fleet}",
              highlight=False, soft_wrap=True)
    if plan.events:
        table = Table(title="dispatch events", title_justify="left")
        for column in ("event", "kind", "from (UTC)", "to (UTC)", "target MW", "started now"):
            table.add_column(column, overflow="fold")
        for event in plan.events:
            table.add_row(event.event_id, event.kind,
                          f"{datetime.fromtimestamp(event.start_ms / 1000, tz=UTC):%Y-%m-%d %H:%M}",
                          f"{datetime.fromtimestamp(event.end_ms / 1000, tz=UTC):%Y-%m-%d %H:%M}",
                          f"{event.target_mw:+.3f}", "yes" if event.started else "no (already existed)")
        out.print(table)
    else:
        out.print("no peak above the threshold needs shaving: no event started", highlight=False)
