"""``vpp``: the single command-line entry point of openvpp (also ``python -m cli.main``).

Commands load the configuration (``--config PATH`` or ``$VPP_CONFIG`` over settings/default.toml) and
hand it to the module that does the work; heavy modules are imported only by the command that needs
them. Configuration errors, taken ports and failed parts end with one red line and exit code 1.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
import warnings
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.assets import assets_app
from cli.bids import bids_app
from cli.coopt import coopt_app
from cli.data import bench_store, data_app
from cli.fleet import dispatch_app, fleet_app, peak_app
from cli.ops import ops_app
from settings import ConfigError, Settings, load_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO records are noise on the console (pgserver echoes every pg_ctl call).
QUIET_LOGGERS = ("pgserver", "botocore", "urllib3")
DEMO_START = datetime(2021, 1, 15, 16, 0)
DEMO_START_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]

app = typer.Typer(name="vpp", help="openvpp: trade a grid battery in the NEM every 5 minutes.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
serve_app = typer.Typer(help="Run one gRPC service in the foreground.", no_args_is_help=True)
worker_app = typer.Typer(help="Run workers in the foreground.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL database.", no_args_is_help=True)
archive_app = typer.Typer(help="The archive of every cycle's requests and results.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks on the real local stack.", no_args_is_help=True)
backtest_app = typer.Typer(help="Backtests: replay a strategy over historical MMS data in-process; compare runs.",
                           no_args_is_help=True)
app.add_typer(serve_app, name="serve")
app.add_typer(worker_app, name="worker")
app.add_typer(db_app, name="db")
app.add_typer(archive_app, name="archive")
app.add_typer(bench_app, name="bench")
app.add_typer(backtest_app, name="backtest")
app.add_typer(assets_app, name="assets")
app.add_typer(fleet_app, name="fleet")
app.add_typer(dispatch_app, name="dispatch")
app.add_typer(peak_app, name="peak")
app.add_typer(ops_app, name="ops")
app.add_typer(coopt_app, name="coopt")
app.add_typer(data_app, name="data")
app.add_typer(bids_app, name="bids")

# Width of tables when the output is not a terminal (a pipe or file) and COLUMNS is unset: wide enough
# that archive keys (71 characters) are never folded.
PIPE_WIDTH = 200


def console(*, to_stderr: bool = False) -> Console:
    """A rich console for this invocation's stdout (or stderr)."""
    stream = sys.stderr if to_stderr else sys.stdout
    interactive = stream.isatty() or bool(os.environ.get("COLUMNS"))
    return Console(file=stream, width=None if interactive else PIPE_WIDTH)


@dataclass(frozen=True)
class CliContext:
    """What the global options decided: the user's configuration file, if any (``--config``, else
    ``$VPP_CONFIG``), so that what a command records (a backtest's ``config_file``) names the file either way."""

    config_path: Path | None


def user_config_path(option: Path | None, environ: Mapping[str, str]) -> Path | None:
    """The configuration file merged over the defaults: ``--config`` if given, else ``$VPP_CONFIG`` if set."""
    if option is not None:
        return option
    named = environ.get("VPP_CONFIG")
    return Path(named) if named else None


class PoolKind(StrEnum):
    """The request kinds a worker pool serves."""

    FORECAST = "forecast"
    OPTIMISATION = "optimisation"
    BACKTEST = "backtest"


def configure_logging(level: int = logging.INFO) -> None:
    """Log records to stderr as "time LEVEL logger: message" (once; later calls change nothing)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    for chatty in QUIET_LOGGERS:
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))


def fail(message: str) -> typer.Exit:
    """Print ``message`` (first line in red, the rest as is) to stderr; the Exit(1) to raise."""
    first, _, rest = message.partition("\n")
    console(to_stderr=True).print(f"[bold red]error:[/] [red]{escape(first)}[/]", soft_wrap=True)
    if rest:
        console(to_stderr=True).print(rest, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)


@contextmanager
def clean_errors() -> Iterator[None]:
    """Turn configuration errors, taken ports and failed parts into one clear message and exit code 1."""
    from aemo.errors import AemoDataError
    from services.health import PortInUseError
    from stack.ports import StackError

    try:
        yield
    except (ConfigError, StackError, PortInUseError, AemoDataError) as exc:
        raise fail(str(exc)) from None


def load(ctx: typer.Context) -> Settings:
    """The settings for this invocation (``--config`` / ``$VPP_CONFIG`` merged over the defaults)."""
    state = ctx.find_object(CliContext)
    with clean_errors():
        return load_settings(state.config_path if state else None)


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)`` on a new event loop; SIGINT and SIGTERM set ``stop`` for a graceful exit."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    asyncio.run(runner())


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Configuration file merged over the defaults (else $VPP_CONFIG).",
        dir_okay=False)] = None,
) -> None:
    """openvpp command line."""
    # pgserver asks platformdirs for a runtime folder; its warning about XDG_RUNTIME_DIR is noise here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    configure_logging()
    ctx.obj = CliContext(config_path=user_config_path(config, os.environ))


# ---------------------------------------------------------------------------------------------------
# The local stack


class MarketDataMode(StrEnum):
    """Where ``vpp up`` takes market data from."""

    REPLAY = "replay"
    LIVE = "live"


class MarketMode(StrEnum):
    """Where ``vpp up``'s bid service submits bids (``--market``)."""

    SIMULATED = "simulated"
    AEMO_SANDBOX = "aemo-sandbox"


@app.command()
def up(
    ctx: typer.Context,
    headless: Annotated[bool, typer.Option("--headless", help="Run Temporal without its Web UI.")] = False,
    no_trigger: Annotated[bool, typer.Option("--no-trigger", help="Do not start a cycle at once.")] = False,
    market_data: Annotated[MarketDataMode, typer.Option(
        "--market-data", help="replay: the embedded January 2021 data on the replay clock; live: AEMO's "
        "current reports as they are published, cycles on the market clock.")] = MarketDataMode.REPLAY,
    source: Annotated[str | None, typer.Option(
        help="Live: NEMWEB's address or a stand-in laid out like it (default: [market_store] source).")] = None,
    market: Annotated[MarketMode | None, typer.Option(
        "--market", help="simulated: bids go to the simulated NEM; aemo-sandbox: the bid service's aemo backend "
        "submits to a local stand-in of AEMO's bidding API that the stack starts.")] = None,
) -> None:
    """Start the whole local stack (Temporal, SQS, PostgreSQL, services, workers) until Ctrl-C."""
    from stack.supervisor import run_up, with_market, with_market_data

    settings = load(ctx)
    state = ctx.find_object(CliContext)
    with clean_errors():
        settings = with_market_data(settings, market_data.value, source)
        sandbox = market is MarketMode.AEMO_SANDBOX
        if market is not None:
            settings = with_market(settings, market.value)
        code = run_up(settings, ui=not headless, trigger=not no_trigger,
                      config_path=state.config_path if state else None, aemo_sandbox=sandbox)
    raise typer.Exit(code)


@app.command()
def status(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every part of the stack (Temporal, SQS, PostgreSQL, each gRPC service, gateway, pools, workers,
    schedules) with its state, asked as the stack is configured (TLS, tokens). Exit 1 when any is down."""
    from cli.calls import print_json
    from stack.status import probe_stack, probe_units

    settings = load(ctx)
    with clean_errors():
        states = probe_stack(settings)
        units = probe_units(settings)
    down = [state.part for state in states if not state.up]
    if json_output:
        print_json({"up": not down, "parts": states, "units": units})
    else:
        table = Table(title="openvpp stack")
        for column in ("part", "address", "state", "detail"):
            table.add_column(column, overflow="fold")
        for state in states:
            table.add_row(state.part, state.address, "[green]up[/]" if state.up else "[red]down[/]",
                          escape(state.detail))
        console().print(table)
        unit_table = Table(title="units (P&L of each unit's latest trading day, market time AEST)")
        for column in ("unit", "kind", "region", "P&L"):
            unit_table.add_column(column, overflow="fold")
        for unit in units:
            unit_table.add_row(unit.unit_id, unit.kind, unit.region, escape(unit.pnl))
        console().print(unit_table)
        if down:
            raise fail(f"{len(down)} of {len(states)} parts down: {', '.join(down)}")
    if down:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------------
# Foreground processes (what the supervisor runs as children)


@serve_app.command("market-data")
def serve_market_data(ctx: typer.Context) -> None:
    """Run the market-data gRPC service until SIGINT/SIGTERM."""
    from aemo.errors import AemoDataError
    from services.market_data import serve  # type: ignore[import-not-found]

    settings = load(ctx)
    with clean_errors():
        try:
            run_until_signal(lambda stop: serve(settings, stop))  # type: ignore[no-any-return]
        except AemoDataError as exc:  # unusable data files, live source or market store
            raise fail(str(exc)) from None


@serve_app.command("bids")
def serve_bids(ctx: typer.Context) -> None:
    """Run the bid gRPC service (simulated market, or AEMO's bidding API: [bid_service] backend) until
    SIGINT/SIGTERM."""
    from aemo.errors import AemoDataError
    from services.bid_service import serve  # type: ignore[import-not-found]

    settings = load(ctx)
    with clean_errors():
        try:
            run_until_signal(lambda stop: serve(settings, stop))  # type: ignore[no-any-return]
        except AemoDataError as exc:  # e.g. the aemo backend without its environment
            raise fail(str(exc)) from None


POOL_BATCH_MESSAGES = 10


@worker_app.command("pool")
def worker_pool(ctx: typer.Context, kind: Annotated[PoolKind, typer.Argument(help="Request kind.")]) -> None:
    """Run one forecast, optimisation or backtest worker (SQS consumer) until SIGINT/SIGTERM."""
    from pools.runtime import run_pool

    settings = load(ctx)
    if kind is PoolKind.BACKTEST:
        from backtest.sweep_worker import run_backtest_pool

        run_until_signal(lambda stop: run_backtest_pool(settings, stop))
        return
    # Up to ten requests per receive, settled with SQS's batch calls (pools.runtime.handle_batch).
    run_until_signal(lambda stop: run_pool(settings, kind.value, stop, max_messages=POOL_BATCH_MESSAGES))


@worker_app.command("sweep")
def worker_sweep(ctx: typer.Context) -> None:
    """Run the backtest sweep's Temporal worker (workflow, queueing and report activities) until SIGINT/SIGTERM."""
    from backtest.sweep_worker import run_sweep_worker

    settings = load(ctx)
    run_until_signal(lambda stop: run_sweep_worker(settings, stop))


@worker_app.command("temporal")
def worker_temporal(ctx: typer.Context) -> None:
    """Run the Temporal worker (workflows, activities, result relay) until SIGINT/SIGTERM."""
    from workers.temporal import run_temporal_worker  # type: ignore[import-not-found]

    settings = load(ctx)
    run_until_signal(lambda stop: run_temporal_worker(settings, stop))  # type: ignore[no-any-return]


@worker_app.command("vpp")
def worker_vpp(ctx: typer.Context) -> None:
    """Run the VPP Temporal worker (dispatch events) until SIGINT/SIGTERM."""
    from models.db import resolve_database_url
    from workers.vpp import run_vpp_worker

    settings = load(ctx)
    url, embedded = resolve_database_url(settings)
    try:
        run_until_signal(lambda stop: run_vpp_worker(settings, url, stop))
    finally:
        if embedded is not None:
            embedded.stop()


# ---------------------------------------------------------------------------------------------------
# Database and archive


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply pending schema migrations (to DATABASE_URL, else the embedded server in the state folder)."""
    import psycopg

    from models.db import MigrationError, migrate, resolve_database_url

    settings = load(ctx)
    try:
        url, embedded = resolve_database_url(settings)
    except Exception as exc:
        raise fail(f"cannot reach PostgreSQL: {exc}") from None
    try:
        applied = migrate(url)
    except MigrationError as exc:
        raise fail(str(exc)) from None
    except psycopg.Error as exc:
        raise fail(f"cannot reach PostgreSQL: {exc}") from None
    finally:
        if embedded is not None:
            embedded.stop()
    console().print(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied
                 else "database is up to date", soft_wrap=True)


@archive_app.command("ls")
def archive_ls(
    ctx: typer.Context,
    cycle_id: Annotated[str | None, typer.Argument(help="A cycle id; without it, list cycle ids.")] = None,
) -> None:
    """List archived cycles, or the entries (label, type, key, time) of one cycle."""
    from archive.store import ArchiveError, open_archive

    settings = load(ctx)
    try:
        archive = open_archive(settings)
        if cycle_id is None:
            cycles = archive.list_cycles()
            for cycle in cycles:
                console().print(cycle, markup=False, highlight=False, soft_wrap=True)
            if not cycles:
                console(to_stderr=True).print("the archive has no cycles yet", soft_wrap=True)
            return
        entries = archive.list_cycle(cycle_id)
    except (ArchiveError, ValueError) as exc:
        raise fail(f"archive: {exc}") from None
    if not entries:
        raise fail(f"archive: no entries for cycle {cycle_id!r}")
    table = Table(title=f"cycle {cycle_id}")
    for column in ("label", "type", "key", "time (UTC)"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        recorded = entry.recorded_at.isoformat(timespec="seconds")
        table.add_row(escape(entry.label), entry.type_name, entry.key, recorded)
    console().print(table)


# ---------------------------------------------------------------------------------------------------
# Demo and benchmarks: the commands live in stack/demo.py and bench/cycle.py, registered here.


DEMO_START_HELP = ("Market time (AEST) of the first cycle: it decides schedule_offset_s later and bids the "
                   "interval ending 10 minutes after this time.")


@app.command()
def demo(
    ctx: typer.Context,
    region: Annotated[str | None, typer.Option(help="NEM region (default: the cycle's region).")] = None,
    start: Annotated[datetime, typer.Option(formats=DEMO_START_FORMATS,
                                            help=DEMO_START_HELP)] = DEMO_START,
    intervals: Annotated[int, typer.Option(min=1, help="Number of 5-minute cycles to run.")] = 12,
) -> None:
    """Run a few AutoBidder cycles over real January 2021 data on the local stack and show the bids."""
    from stack.demo import run_demo

    settings = load(ctx)
    with clean_errors():
        code = run_demo(settings, region=region or settings.cycle.region, start=start, intervals=intervals)
    raise typer.Exit(int(code))


bench_app.command("store")(bench_store)


@bench_app.command("cycle")
def bench_cycle(
    ctx: typer.Context,
    cycles: Annotated[int, typer.Option(min=1, help="Number of cycles to measure (with --units: rounds).")] = 20,
    units: Annotated[int, typer.Option(min=1, max=100, help="Battery units whose cycles run at once, in several "
                                                            "regions (1: the configured unit alone).")] = 1,
) -> None:
    """Measure the AutoBidder cycle end to end on the local stack (a portfolio of units with --units)."""
    from bench.cycle import run_cycle_bench

    settings = load(ctx)
    with clean_errors():
        code = run_cycle_bench(settings, cycles=cycles, units=units)
    raise typer.Exit(int(code))


@bench_app.command("forecast")
def bench_forecast(
    ctx: typer.Context,
    region: Annotated[str | None, typer.Option(help="NEM region (default: the cycle's region).")] = None,
    decisions: Annotated[int, typer.Option(min=1, help="Decision times spread over the data.")] = 60,
    cases: Annotated[bool, typer.Option(help="Also score ENERGY in every data situation: with / without "
                                            "pre-dispatch and P5MIN, long / one-day history, gaps.")] = False,
    recent_data: Annotated[Path | None, typer.Option(help="DISPATCHPRICE file or folder of a recent month "
                                                          "(history-limited cases; e.g. a 2025 archive).")] = None,
    p5min: Annotated[list[Path] | None, typer.Option(help="AEMO P5MIN report file(s) (the P5MIN cases).")] = None,
    forecaster: Annotated[str | None, typer.Option(help="Forecaster NAME@VERSION (default: configured).")] = None,
) -> None:
    """Forecast skill (MAE, pinball) by horizon against seasonal naive and AEMO pre-dispatch; with --cases
    in every data situation."""
    from bench.forecast_skill import main

    settings = load(ctx)
    from aemo.errors import AemoDataError

    with clean_errors():
        try:
            code = main(settings, region, decisions, cases=cases, recent_data=recent_data, p5min_paths=p5min or (),
                        forecaster=forecaster)
        except (ValueError, AemoDataError) as exc:
            raise fail(str(exc)) from None
    raise typer.Exit(int(code))


@bench_app.command("aemo-submit")
def bench_aemo_submit(
    ctx: typer.Context,
    bids: Annotated[int, typer.Option(min=1, max=240, help="New bids to submit (each also submitted again).")] = 50,
) -> None:
    """SubmitBid latency (median, p95) through the bid service's aemo backend to the local AEMO stand-in."""
    from bench.aemo_submit import main

    settings = load(ctx)
    with clean_errors():
        code = main(settings, bids)
    raise typer.Exit(int(code))


@bench_app.command("market")
def bench_market(
    ctx: typer.Context,
    region: Annotated[list[str] | None, typer.Option(help="NEM region; repeat for several (default: all).")] = None,
    days: Annotated[float, typer.Option(min=0.01, help="Days of 5-minute decisions to replay per region.")] = 1.0,
    start: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d", *DEMO_START_FORMATS], help="First decision, AEST (default 2021-01-15 04:00; the "
        "schedule offset is added).")] = None,
) -> None:
    """Realised revenue through the real bidding path vs perfect foresight (capture %), per region."""
    from bench.market import main

    settings = load(ctx)
    first = None if start is None else start + timedelta(seconds=settings.cycle.schedule_offset_s)
    with clean_errors():
        code = main(settings, region or None, days, start=first)
    raise typer.Exit(int(code))


@bench_app.command("perfect-foresight")
def bench_perfect_foresight(
    ctx: typer.Context,
    region: Annotated[str, typer.Option(help="NEM region.")] = "SA1",
    start: Annotated[datetime, typer.Option(
        formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
        help="First interval, interval-ending AEST.")] = datetime(2021, 1, 15, 4, 5),
    intervals: Annotated[int, typer.Option(min=1, help="5-minute intervals of the window.")] = 288,
    fcas: Annotated[bool, typer.Option("--fcas/--energy-only", help="Also energy + FCAS.")] = False,
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="MMS data: DISPATCHPRICE files (zip, CSV, parquet) or folders, e.g. a month of "
        "data/nemweb. Repeat for several. Default: the configured data folder.")] = None,
    mip_rel_gap: Annotated[float | None, typer.Option(
        min=0.0, max=0.5, help="Relative gap the physical MILP is solved to (default: the benchmark's, 0.001).")
    ] = None,
) -> None:
    """Perfect foresight as physics allows: physical MILP vs LP relaxation, value, gap, solve times."""
    from bench.perfect_foresight import main

    settings = load(ctx)
    try:
        code = main(settings, region=region, start=start, intervals=intervals, fcas=fcas, data=data or [],
                    mip_rel_gap=mip_rel_gap)
    except ValueError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(int(code))


@bench_app.command("sweep")
def bench_sweep(
    ctx: typer.Context,
    processes: Annotated[list[int] | None, typer.Option(
        "--processes", min=1, help="Pool processes to time the sweep with (repeatable; default 1, 2).")] = None,
    region: Annotated[list[str] | None, typer.Option(
        "--region", help="Regions of the grid (repeatable; default SA1 and VIC1).")] = None,
    days: Annotated[float, typer.Option(min=0.01, help="Days of each run.")] = 1.0,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Grid parameter KEY=V1,V2 (repeatable; default horizon_intervals=24,48 and "
        "history_intervals=576).")] = None,
) -> None:
    """Sweep throughput on the real local stack: runs per hour and decisions per second with 1, 2, … pool
    processes (a fresh stack each)."""
    from backtest.sweep import SweepError
    from bench.sweep import DEFAULT_PARAMETERS, DEFAULT_REGIONS, main

    settings = load(ctx)
    with clean_errors(), backtest_errors():
        try:
            code = main(settings, processes=processes or [1, 2], regions=region or DEFAULT_REGIONS, days=days,
                        parameters=param or DEFAULT_PARAMETERS)
        except SweepError as exc:
            raise fail(str(exc)) from None
    raise typer.Exit(code)


@bench_app.command("backtest")
def bench_backtest(
    ctx: typer.Context,
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="MMS data: a folder, or DISPATCHPRICE and PREDISPATCHPRICE files (default: the "
        "configured data folder). Repeat for several.")] = None,
    region: Annotated[str, typer.Option(help="NEM region.")] = "SA1",
    days: Annotated[float | None, typer.Option(min=0.001, help="Days of 5-minute decisions (default 31, or to "
                                               "the end of the data).")] = None,
    start: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d", *DEMO_START_FORMATS], help="Period start, AEST (default: the start of the "
        "data).")] = None,
    workers: Annotated[int | None, typer.Option(min=0, help="Worker processes (default: the engine's).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Strategy parameter KEY=VALUE (TOML value), e.g. horizon_intervals=48.")] = None,
) -> None:
    """Backtest speed: decisions per second, wall time and time by stage (default 31 days of SA1)."""
    from bench.backtest import main

    settings = load(ctx)
    with clean_errors(), backtest_errors():
        code = main(settings, data=data or [settings.market_data.data_dir], region=region, days=days,
                    start=start, workers=workers, parameters=param or [])
    raise typer.Exit(int(code))


@bench_app.command("coopt")
def bench_coopt(
    ctx: typer.Context,
    region: Annotated[str, typer.Option(help="NEM region.")] = "SA1",
    start: Annotated[datetime, typer.Option(
        formats=["%Y-%m-%d", *DEMO_START_FORMATS], help="Start of the first 5-minute interval, AEST (on a "
        "30-minute boundary).")] = datetime(2021, 1, 1, 0, 0),
    days: Annotated[float, typer.Option(min=0.01, help="Days to simulate.")] = 31.0,
    sites: Annotated[int, typer.Option(min=1, help="Simulated homes.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the homes and of their household-load noise.")] = 1,
) -> None:
    """VPP modes on real prices: self-only vs central vs co-optimised (revenue, bill savings, reserve)."""
    from bench.coopt import CooptBenchError, run_coopt_bench

    settings = load(ctx)
    with clean_errors():
        try:
            code = run_coopt_bench(settings, region=region, start=start, days=days, sites=sites, seed=seed)
        except CooptBenchError as exc:
            raise fail(str(exc)) from None
    raise typer.Exit(int(code))


@bench_app.command("distribution")
def bench_distribution(
    sites: Annotated[int, typer.Option(min=10, help="Simulated sites.")] = 10_000,
    concentrators: Annotated[int, typer.Option(min=1, help="gRPC streams (sites multiplexed per stream).")] = 20,
    poll_interval: Annotated[float, typer.Option(min=1.0, help="Seconds between two polls of a concentrator.")] = 10.0,
) -> None:
    """Push vs poll of a price-forecast version over the real gateway: time until 99 % of sites hold it,
    messages and bytes, polls, a reconnect storm, and the sites' planning time."""
    from bench.distribution import main

    main(["--sites", str(sites), "--concentrators", str(concentrators), "--poll-interval", str(poll_interval)])


@bench_app.command("fleet")
def bench_fleet(
    ctx: typer.Context,
    sites: Annotated[int, typer.Option(min=100, help="Sites of the asset graph, maths and simulator sections.")]
    = 100_000,
    event_sites: Annotated[int, typer.Option(min=10, help="Simulated homes of the live dispatch event.")] = 10_000,
    event_mw: Annotated[float, typer.Option(help="Target of the live event, MW (+ discharge).")] = 10.0,
    event_seconds: Annotated[float, typer.Option(min=10.0, help="Length of the live event (real time).")] = 60.0,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats of each timed operation (median / best).")] = 3,
) -> None:
    """VPP figures: asset graph, ingest, aggregation, allocation, simulator, and a live dispatch event."""
    from bench.fleet import run_fleet_bench

    settings = load(ctx)
    with clean_errors():
        code = run_fleet_bench(settings, sites=sites, event_sites=event_sites, event_mw=event_mw,
                               event_seconds=event_seconds, repeats=repeats)
    raise typer.Exit(int(code))


@bench_app.command("live")
def bench_live(
    ctx: typer.Context,
    reports: Annotated[int, typer.Option(min=1, max=500, help="DispatchIS reports published one by one.")] = 20,
    poll_s: Annotated[float | None, typer.Option(
        "--poll-s", min=0.05, help="Poll interval, seconds (default: [market_data] live_poll_s).")] = None,
) -> None:
    """Live lag: a report's appearance in its NEMWEB listing -> its price served by GetSnapshot (live mode)."""
    from bench.live import main as live_main

    settings = load(ctx)
    with clean_errors():
        code = live_main(settings, reports=reports, poll_s=poll_s)
    raise typer.Exit(int(code))


# ---------------------------------------------------------------------------------------------------
# Backtests (backtest/runs.py, backtest/compare.py, backtest/report.py)

BACKTEST_TIME_FORMATS = ["%Y-%m-%d", *DEMO_START_FORMATS]
OUT_HELP = "Folder holding the runs (one sub-folder per run id)."


class DataSource(StrEnum):
    """Where a backtest reads its market data when no --data is given (backtest/runs.choose_inputs)."""

    AUTO = "auto"
    STORE = "store"
    FILES = "files"


@contextmanager
def backtest_errors() -> Iterator[None]:
    """Turn a backtest's input errors (strategy, parameters, data, period, runs) into one line and exit 1."""
    from aemo.errors import MmsFormatError
    from algorithms.common.errors import InvalidRequestError
    from backtest.engine import BacktestError
    from backtest.report import ReportError
    from backtest.runs import RunError
    from backtest.strategy import StrategyError

    try:
        yield
    except (StrategyError, RunError, BacktestError, MmsFormatError, ReportError, InvalidRequestError) as exc:
        raise fail(str(exc)) from None


@backtest_app.command("run")
def backtest_run(
    ctx: typer.Context,
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="MMS data: a folder, or DISPATCHPRICE (and optionally PREDISPATCHPRICE) files (parquet, "
        "CSV, raw MMS CSV or zip). Repeat for several. Default: see --source.")] = None,
    source: Annotated[DataSource, typer.Option(
        "--source", help="Without --data: 'auto' reads the market store (vpp data sync) when a period is given "
        "and the store holds it, else the configured data folder (January 2021); 'store' or 'files' forces "
        "one.")] = DataSource.AUTO,
    region: Annotated[str | None, typer.Option(help="NEM region (default: the cycle's region).")] = None,
    start: Annotated[datetime | None, typer.Option(
        formats=BACKTEST_TIME_FORMATS, help="Period start, market time AEST: the first interval bid starts "
        "then (default: the start of the data).")] = None,
    end: Annotated[datetime | None, typer.Option(
        formats=BACKTEST_TIME_FORMATS, help="Period end, AEST: the last interval bid ends then (default: the "
        "end of the data).")] = None,
    days: Annotated[float | None, typer.Option(min=0.001, help="Period length in days (with --start or "
                                               "--end).")] = None,
    forecaster: Annotated[str | None, typer.Option(help="Forecaster NAME\\[@VERSION] (default: configured).")] = None,
    optimiser: Annotated[str | None, typer.Option(help="Optimiser NAME\\[@VERSION] (default: configured).")] = None,
    bid_builder: Annotated[str | None, typer.Option(help="Bid builder NAME\\[@VERSION] (default: schedule).")] = None,
    params: Annotated[Path | None, typer.Option(
        "--params", help="Strategy parameter file (TOML): backtest overrides, \\[strategy], \\[settings.*].")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Strategy parameter KEY=VALUE (TOML value); wins over --params. Repeatable.")] = None,
    perfect_information: Annotated[bool, typer.Option(
        "--perfect-information", help="Also run the same strategy fed the actual prices "
        "(forecast_source=actual): the value of perfect information.")] = False,
    workers: Annotated[int | None, typer.Option(min=0, help="Worker processes (default: the engine's).")] = None,
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("backtests"),
    plot_day: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d"], help="Trading day of the day plots (default: the day with the most perfect-"
        "foresight revenue).")] = None,
    report: Annotated[bool, typer.Option(help="Write the PNG plots and report.html.")] = True,
) -> None:
    """Replay every 5-minute decision of a strategy over a period of historical MMS data, in-process."""
    from backtest.compare import headline
    from backtest.report import decision_progress
    from backtest.runs import (
        choose_inputs,
        data_line,
        make_spec,
        perfect_information_spec,
        require_price_limits,
        run_and_save,
        with_data_price_limits,
    )
    from backtest.strategy import resolve_strategy

    settings = load(ctx)
    state = ctx.find_object(CliContext)
    day = plot_day.date().isoformat() if plot_day is not None else None
    with clean_errors(), backtest_errors():
        strategy = resolve_strategy(settings, forecaster=forecaster, optimiser=optimiser, bid_builder=bid_builder,
                                    parameter_file=params, assignments=param or [])
        chosen_region = region or settings.cycle.region
        inputs, period = choose_inputs(settings, strategy, chosen_region, data=data or [], source=source.value,
                                       start=start, end=end, days=days)
        settings = with_data_price_limits(settings, inputs)
        require_price_limits(settings, period)
        _check_plot_day(day, period.first_interval, period.last_interval)
        spec = make_spec(settings, inputs, chosen_region, period, strategy,
                         config_file=state.config_path if state else None)
        out_console = console()
        twin = None
        if perfect_information:  # first, so that the run's report has it
            twin_spec = perfect_information_spec(spec)
            with decision_progress(console(to_stderr=True), "perfect information") as progress:
                twin, folder = run_and_save(settings, inputs, twin_spec, out, workers=workers, progress=progress,
                                            report=report, plot_day=day)
            out_console.print(f"perfect-information run {twin_spec.run_id} → {folder}", highlight=False,
                              soft_wrap=True)
        out_console.print(data_line(inputs, chosen_region, period), highlight=False, soft_wrap=True)
        with decision_progress(console(to_stderr=True), f"{chosen_region} backtest") as progress:
            outcome, folder = run_and_save(settings, inputs, spec, out, workers=workers, progress=progress,
                                           report=report, plot_day=day,
                                           perfect_information=None if twin is None else twin.summary)
        out_console.print(f"run {spec.run_id} → {folder}", highlight=False, soft_wrap=True)
        out_console.print(headline(outcome.summary), highlight=False, soft_wrap=True)
        if twin is not None:
            realised = outcome.summary["results"]["total_revenue_dollars"]
            informed = twin.summary["results"]["total_revenue_dollars"]
            out_console.print(f"perfect information: revenue ${informed:,.0f}; value of perfect information "
                              f"${informed - realised:,.0f}", highlight=False, soft_wrap=True)


@backtest_app.command("months")
def backtest_months(
    ctx: typer.Context,
    region: Annotated[list[str] | None, typer.Option(
        "--region", help="Region to backtest; repeat for several (default: SA1 and NSW1).")] = None,
    month: Annotated[list[str] | None, typer.Option(
        "--month", help="Only this month of the store, YYYY-MM; repeat for several (default: every month held).")]
        = None,
    embedded: Annotated[bool, typer.Option(
        help="Also January 2021 of the configured data folder (with AEMO's forecasts) for the cycle's region.")] = True,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: every core).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for months.csv and months.md.")] = Path("backtests/months"),
) -> None:
    """The regimes table: backtest every month and region of the market store with enough data (each stretch of
    consecutive data after its first day) and January 2021, against perfect foresight over the same intervals."""
    from rich.progress import Progress

    from aemo.tables import parse_month
    from backtest.engine import DEFAULT_WORKERS
    from backtest.months import (
        depth_cell,
        dollars_cell,
        failures_text,
        percent_cell,
        run_months,
        soc_text,
        split_text,
        write_months,
    )

    settings = load(ctx)
    chosen = region or ["SA1", "NSW1"]
    with clean_errors(), backtest_errors():
        try:
            months = [parse_month(text) for text in month] if month else None
        except ValueError as error:
            raise fail(str(error)) from None
        progress = Progress(console=console(to_stderr=True), transient=True)
        tasks: list[Any] = []

        def advance(_: object) -> None:  # shown from the first result on: no empty line before an error
            if not tasks:
                progress.start()
                tasks.append(progress.add_task("stretches backtested", total=None))
            progress.advance(tasks[0])

        try:
            rows = run_months(settings, regions=chosen, months=months, include_embedded=embedded,
                              workers=workers or DEFAULT_WORKERS, on_result=advance)
        finally:
            if tasks:
                progress.stop()
        if not rows:
            raise fail(f"no month of {', '.join(chosen)} has enough data (more than a day of consecutive dispatch "
                       "prices): sync the market store first (vpp data sync)")
        csv_path, markdown_path = write_months(out, rows)
    table = Table(title="Backtests by month and region (capture vs perfect foresight over the same intervals)",
                  title_justify="left")
    for column in ("month", "region", "data", "AEMO forecasts", "FCAS markets", "market depth", "decisions",
                   "realised price-taker", "realised depth-limited", "energy / FCAS", "PF price-taker",
                   "PF depth-limited", "capture price-taker", "capture depth-limited", "end-of-run SoC charge",
                   "SoC end MWh", "failed / safe fallbacks"):
        table.add_column(column, justify="left" if column in ("month", "region", "data") else "right")
    for row in rows:
        table.add_row(row.month, row.region, row.source, "yes" if row.aemo_forecasts else "no", str(row.fcas_markets),
                      "yes" if row.market_depth else "no", f"{row.decisions:,}", f"${row.total_revenue_dollars:,.0f}",
                      depth_cell(row.depth_total_revenue_dollars), split_text(row),
                      f"${row.perfect_foresight_dollars:,.0f}", depth_cell(row.perfect_foresight_depth_dollars),
                      percent_cell(row.capture),
                      percent_cell(row.capture_depth) if row.market_depth else depth_cell(None),
                      dollars_cell(row.end_of_run_adjustment_dollars), soc_text(row), failures_text(row))
    shown_note = ("Depth-limited: FCAS capped at the region's enabled MW (DISPATCHREGIONSUM) x "
                  f"{settings.market_depth.fcas_enablement_share:g} in clearing and perfect foresight; energy is "
                  "price-taking. Captures include the end-of-run SoC charge (shortfall refilled at the run's mean "
                  "energy price).")
    shown = console()
    shown.print(table)
    shown.print(shown_note, highlight=False, soft_wrap=True)
    shown.print(f"written: {csv_path}, {markdown_path}", highlight=False, soft_wrap=True)


def _check_plot_day(day: str | None, first_interval: datetime, last_interval: datetime) -> None:
    """RunError unless ``day`` (YYYY-MM-DD) is a trading day of the period (intervals ending AEST)."""
    from backtest.report import trading_day_of
    from backtest.runs import RunError

    if day is None:
        return
    first, last = trading_day_of(first_interval), trading_day_of(last_interval)
    if not first <= day <= last:
        raise RunError(f"--plot-day {day} is not in the period (trading days {first} .. {last})")


@backtest_app.command("fcas-gap")
def backtest_fcas_gap(
    ctx: typer.Context,
    region: Annotated[list[str] | None, typer.Option(
        "--region", help="Region to backtest; repeat for several (default: SA1).")] = None,
    month: Annotated[list[str] | None, typer.Option(
        "--month", help="A month of the store, YYYY-MM; repeat for several.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: every core).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for fcas_gap.md.")] = Path("backtests/fcas-gap"),
) -> None:
    """Where the store's months lose to depth-limited perfect foresight: each FCAS service's realised and perfect
    foresight revenue and the gap by cause (not offered, offered above the price, capped by depth, headroom),
    and energy (backtest/fcas_gap.py)."""
    from aemo.tables import month_label, parse_month
    from backtest.engine import DEFAULT_WORKERS, end_of_run_adjustment
    from backtest.fcas_gap import gap_markdown, month_gap
    from backtest.months import run_month_results

    settings = load(ctx)
    chosen = region or ["SA1"]
    with clean_errors(), backtest_errors():
        try:
            months = [parse_month(text) for text in month] if month else None
        except ValueError as error:
            raise fail(str(error)) from None
        groups = run_month_results(settings, regions=chosen, months=months, include_embedded=False,
                                   workers=workers or DEFAULT_WORKERS)
        if not groups:
            raise fail(f"no month of {', '.join(chosen)} has enough data: sync the market store first (vpp data sync)")
        gaps = [month_gap(group.settings, group.market, month_label(group.month), group.region, group.results,
                          math.fsum(end_of_run_adjustment(group.settings, r) for r in group.results))
                for group in groups]
    text = gap_markdown(gaps)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fcas_gap.md").write_text(text)
    console().print(text, markup=False, highlight=False)
    console().print(f"written: {out / 'fcas_gap.md'}")


@backtest_app.command("compare")
def backtest_compare(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes, or run folders).")],
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("backtests"),
    perfect_information: Annotated[bool, typer.Option(
        "--perfect-information", help="Run the perfect-information twin of each run that has none.")] = False,
    workers: Annotated[int | None, typer.Option(min=0, help="Worker processes for those runs.")] = None,
    html_report: Annotated[Path | None, typer.Option(
        "--report", help="Where to write the HTML report (default: <out>/compare-<ids>.html).")] = None,
) -> None:
    """Compare runs side by side: revenue, capture, value of perfect information, forecast skill, and where
    money was won or lost against perfect foresight."""
    from backtest.compare import RunView, comparison_tables, period_warning, run_labels
    from backtest.report import print_tables, write_compare_report
    from backtest.runs import find_perfect_information, find_run, sha256_text

    settings = load(ctx)
    with clean_errors(), backtest_errors():
        stored = [find_run(out, reference) for reference in runs]
        labels = run_labels([run.run_id for run in stored])
        views = []
        for run, label in zip(stored, labels, strict=True):
            twin = find_perfect_information(out, run)
            if twin is None and perfect_information:
                twin = _perfect_information_twin(settings, run, out, workers)
            views.append(RunView(label, run.summary, run.ledger(), None if twin is None else twin.summary))
        shown = console()
        warning = period_warning(views)
        if warning:
            console(to_stderr=True).print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
        print_tables(shown, comparison_tables(views))
        name = sha256_text(",".join(run.run_id for run in stored))[:10]
        page, png = write_compare_report(html_report or out / f"compare-{name}.html", views)
        shown.print(f"report: {page} (cumulative revenue plot: {png})", highlight=False, soft_wrap=True)


def _perfect_information_twin(settings: Settings, run: Any, out: Path, workers: int | None) -> Any:
    """Run and save the perfect-information twin of a stored run (its data loaded again and checked)."""
    from backtest.report import decision_progress
    from backtest.runs import RunError, inputs_of, perfect_information_spec, read_run, run_and_save, stored_spec

    inputs = inputs_of(run)
    spec = perfect_information_spec(stored_spec(run, settings, inputs))
    if spec.settings_sha256 != run.summary.get("settings_sha256"):
        config = run.summary.get("config_file") or {}
        hint = f" (it ran with --config {config['path']})" if config else ""
        raise RunError(f"run {run.run_id} was made with other settings{hint}: give the same --config")
    with decision_progress(console(to_stderr=True), f"perfect information for {run.run_id}") as progress:
        _, folder = run_and_save(settings, inputs, spec, out, workers=workers, progress=progress)
    return read_run(folder)


@backtest_app.command("list")
def backtest_list(out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("backtests")) -> None:
    """List the runs: id, region, period, strategy, revenue, capture, code version."""
    from backtest.compare import dollars, percent
    from backtest.runs import list_runs

    with backtest_errors():
        stored = list_runs(out)
    if not stored:
        console(to_stderr=True).print(f"no backtest runs in {out}", soft_wrap=True)
        return
    table = Table(title=f"Backtest runs in {out}", title_justify="left")
    for column in ("run id", "region", "intervals ending (AEST)", "strategy", "parameters", "forecasts",
                   "revenue $", "capture", "code version", "finished (UTC)"):
        table.add_column(column, overflow="fold", no_wrap=column == "run id")
    for run in stored:
        summary, results = run.summary, run.summary["results"]
        parameters = summary["strategy"].get("parameters", {})
        first, last = (datetime.fromisoformat(summary["period"][key]) for key in ("first_interval", "last_interval"))
        finished = str(run.timing.get("finished_at_utc", "")).replace("T", " ").removesuffix("+00:00")
        table.add_row(run.run_id, summary["region"], f"{first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M}",
                      summary.get("strategy_label", ""), ", ".join(f"{k}={v}" for k, v in sorted(parameters.items())),
                      str(summary.get("forecast_source", "model")), dollars(results["total_revenue_dollars"]),
                      percent(results.get("capture_total")), str(summary.get("code_version", "")), finished)
    console().print(table)


@backtest_app.command("show")
def backtest_show(
    run: Annotated[str, typer.Argument(help="Run id (or a unique prefix, or a run folder).")],
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("backtests"),
) -> None:
    """Show one run: parameters, code version, input data hashes, results and the command that reproduces it."""
    from backtest.compare import headline
    from backtest.runs import find_run

    with backtest_errors():
        stored = find_run(out, run)
    summary, timing = stored.summary, stored.timing
    shown = console()
    table = Table(title=f"Backtest run {stored.run_id}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    table.add_row("folder", str(stored.folder))
    table.add_row("region", str(summary["region"]))
    table.add_row("intervals ending (AEST)",
                  f"{summary['period']['first_interval']} .. {summary['period']['last_interval']} "
                  f"({summary['period']['intervals']} decisions)")
    for part in ("forecaster", "optimiser", "bid_builder"):
        table.add_row(part.replace("_", " "), str(summary["strategy"][part]))
    for key, value in sorted(summary["strategy"].get("parameters", {}).items()):
        table.add_row(f"parameter {key}", str(value))
    table.add_row("forecast source", str(summary.get("forecast_source", "model")))
    table.add_row("code version", str(summary.get("code_version", "")))
    for item in summary.get("data", []):
        table.add_row(f"data {item['table']}", f"{item['path']} sha256 {item['sha256']} ({item['bytes']:,} bytes)")
    if summary.get("config_file"):
        table.add_row("config file", f"{summary['config_file']['path']} sha256 {summary['config_file']['sha256']}")
    table.add_row("settings sha256", str(summary.get("settings_sha256", "")))
    table.add_row("results", headline(summary))
    if timing:
        table.add_row("timing", f"{timing.get('wall_time_s', 0.0):.1f} s wall, "
                                f"{timing.get('decisions_per_second') or 0.0:.2f} decisions/s, "
                                f"finished {timing.get('finished_at_utc', '')} UTC")
    table.add_row("files", ", ".join(sorted(p.name for p in stored.folder.iterdir())))
    shown.print(table)
    command = summary["command"] + ("" if out == Path("backtests") else f" --out {out}")
    shown.print("reproduce:", highlight=False)
    shown.print(command, markup=False, highlight=False, soft_wrap=True)



@backtest_app.command("sweep")
def backtest_sweep(
    ctx: typer.Context,
    grid: Annotated[Path | None, typer.Option(
        "--grid", help="Grid file (TOML): regions, months or start/end, data, \\[strategy], \\[parameters] "
        "(a list of values per key). Flags replace the file's axes.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Parameter and its values KEY=V1,V2 (TOML values). Repeatable: the runs are every "
        "combination.")] = None,
    month: Annotated[list[str] | None, typer.Option(
        "--month", help="A month to run, YYYY-MM (market time AEST). Repeatable.")] = None,
    start: Annotated[datetime | None, typer.Option(
        formats=BACKTEST_TIME_FORMATS, help="Period start (instead of months), AEST.")] = None,
    end: Annotated[datetime | None, typer.Option(
        formats=BACKTEST_TIME_FORMATS, help="Period end (with --start), AEST.")] = None,
    region: Annotated[list[str] | None, typer.Option(
        "--region", help="NEM region (default: the cycle's region). Repeatable.")] = None,
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="MMS data as for backtest run (default: the configured data folder). The pool "
        "processes read the same paths and refuse files whose sha256 differs.")] = None,
    forecaster: Annotated[str | None, typer.Option(help="Forecaster NAME\\[@VERSION] (default: configured).")] = None,
    optimiser: Annotated[str | None, typer.Option(help="Optimiser NAME\\[@VERSION] (default: configured).")] = None,
    bid_builder: Annotated[str | None, typer.Option(help="Bid builder NAME\\[@VERSION] (default: schedule).")] = None,
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("backtests"),
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Submit, print the sweep id and return.")] = False,
    max_in_flight: Annotated[int | None, typer.Option(
        min=1, help="Runs queued at once (default [pools] sweep_max_in_flight).")] = None,
) -> None:
    """Run a grid (parameters × months × regions) through the platform's engine: a Temporal workflow fans the
    runs out over the backtest pool; results and a comparison land in the runs folder."""
    from backtest.sweep import SweepError, build_grid, read_grid_file
    from stack.sweep import SweepNotFoundError, plan_sweep, run_sweep

    settings = load(ctx)
    if max_in_flight is not None:
        settings = replace(settings, pools=replace(settings.pools, sweep_max_in_flight=max_in_flight))
    with clean_errors(), backtest_errors():
        try:
            chosen = build_grid(file=read_grid_file(grid) if grid is not None else None, regions=region or [],
                                months=month or [], start=start, end=end, params=param or [], data=data or [],
                                forecaster=forecaster, optimiser=optimiser, bid_builder=bid_builder,
                                default_region=settings.cycle.region, default_data=settings.market_data.data_dir)
            plan = plan_sweep(settings, chosen)
            console(to_stderr=True).print(f"sweep {plan.sweep_id}: {len(plan.runs)} runs", highlight=False)
            code = run_sweep(settings, plan, out, wait=not no_wait, console=console())
        except (SweepError, SweepNotFoundError) as exc:
            raise fail(str(exc)) from None
    raise typer.Exit(code)


@backtest_app.command("sweep-status")
def backtest_sweep_status(
    ctx: typer.Context, sweep: Annotated[str, typer.Argument(help="The sweep id (sweep-…).")],
) -> None:
    """A sweep's progress (runs done / total, failed, throughput), and its table once it has finished."""
    from cli.calls import CommandError, with_temporal
    from stack.sweep import SweepNotFoundError, print_result, sweep_status, throughput_text, utc_now

    settings = load(ctx)

    async def status(client: Any) -> None:
        try:
            state, progress, result = await sweep_status(client, sweep)
        except SweepNotFoundError as exc:
            raise CommandError(str(exc)) from None
        shown = console()
        shown.print(f"sweep {sweep}: {state.name.lower() if state else 'unknown'}, stage {progress.stage}; "
                    f"{throughput_text(progress, utc_now())}", highlight=False, soft_wrap=True)
        if result is not None:
            print_result(shown, result)

    with clean_errors():
        with_temporal(settings, status)


@backtest_app.command("archive")
def backtest_archive(
    ctx: typer.Context,
    cycle: Annotated[list[str] | None, typer.Option(help="A cycle id to replay; repeat for several (default: "
                                                         "every archived cycle).")] = None,
    forecaster: Annotated[str | None, typer.Option(help="Replay with this forecaster, NAME@VERSION (default: "
                                                        "the recorded one).")] = None,
    optimiser: Annotated[str | None, typer.Option(help="Replay with this optimiser, NAME@VERSION (default: "
                                                       "the recorded one).")] = None,
) -> None:
    """Re-run the live cycles' archived inputs through the pure algorithms (the recorded versions, or new
    ones) and compare with what each cycle decided: forecasts, plan, bid. Exit 1 when a recorded-version
    replay does not reproduce the archive."""
    from archive.store import ArchiveError, open_archive
    from backtest.archive_replay import replay_archived_cycles
    from backtest.strategy import FORECAST_KIND, OPTIMISATION_KIND, available_algorithms, parse_choice
    from vpp.v1 import common_pb2

    settings = load(ctx)
    available = available_algorithms()

    def ref(text: str | None, kind: str) -> common_pb2.AlgorithmRef | None:
        if text is None:
            return None
        choice = parse_choice(text, kind, available[kind])
        return common_pb2.AlgorithmRef(name=choice.name, version=choice.version)

    with backtest_errors():
        forecast_ref, optimiser_ref = ref(forecaster, FORECAST_KIND), ref(optimiser, OPTIMISATION_KIND)
    try:
        archive = open_archive(settings)
        unknown = [c for c in cycle or [] if not archive.list_cycle(c)]
        if unknown:
            raise fail(f"archive replay: no archived cycle {', '.join(repr(c) for c in unknown)} "
                       "(`vpp archive ls` lists them)")
        report = replay_archived_cycles(archive, settings, cycle_ids=cycle or None,
                                        forecast_algorithm=forecast_ref, optimiser_algorithm=optimiser_ref)
    except (ArchiveError, ValueError) as exc:
        raise fail(f"archive replay: {exc}") from None
    if not report.cycles:
        raise fail("archive replay: the archive has no replayable cycles (run `vpp up` first)")
    shown = console()
    for replay in report.cycles:
        outcome = ("reproduced" if replay.reproduced else f"failed: {replay.failure}" if replay.failure
                   else "differs")
        plan = "" if replay.plan is None else f", plan objective diff ${replay.plan.objective_diff_dollars:,.2f}"
        shown.print(f"{replay.cycle_id}: {outcome}; forecast max diff {replay.forecast_max_abs_diff:.6g}{plan}",
                    markup=False, highlight=False, soft_wrap=True)
    shown.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    overridden = forecast_ref is not None or optimiser_ref is not None
    raise typer.Exit(0 if overridden or report.reproduced else 1)


def run() -> None:
    """Console-script entry point (``vpp``). An error no command expected is still one ``error:`` line and
    exit 1 (``VPP_DEBUG=1`` shows the traceback)."""
    try:
        app(prog_name="vpp")
    except Exception as exc:  # the last line of defence: never a traceback for the user
        if os.environ.get("VPP_DEBUG") == "1":
            raise
        text = str(exc).strip().splitlines()
        console(to_stderr=True).print(f"[bold red]error:[/] [red]{escape(text[0] if text else type(exc).__name__)}[/]"
                                      " (VPP_DEBUG=1 shows where)", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
