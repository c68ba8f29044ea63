"""``vpp``: the single command-line entry point of openvpp (also ``python -m cli.main``).

Commands load the configuration (``--config PATH`` or ``$VPP_CONFIG`` over settings/default.toml) and
hand it to the module that does the work; heavy modules are imported only by the command that needs
them. Configuration errors, taken ports and failed parts end with one red line and exit code 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
app.add_typer(serve_app, name="serve")
app.add_typer(worker_app, name="worker")
app.add_typer(db_app, name="db")
app.add_typer(archive_app, name="archive")
app.add_typer(bench_app, name="bench")

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
    """What the global options decided: the user's configuration file, if any."""

    config_path: Path | None


class PoolKind(StrEnum):
    """The request kinds a worker pool serves."""

    FORECAST = "forecast"
    OPTIMISATION = "optimisation"


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
    from services.health import PortInUseError
    from stack.ports import StackError

    try:
        yield
    except (ConfigError, StackError, PortInUseError) as exc:
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
    configure_logging()
    ctx.obj = CliContext(config_path=config)


# ---------------------------------------------------------------------------------------------------
# The local stack


@app.command()
def up(
    ctx: typer.Context,
    headless: Annotated[bool, typer.Option("--headless", help="Run Temporal without its Web UI.")] = False,
    no_trigger: Annotated[bool, typer.Option("--no-trigger", help="Do not start a cycle at once.")] = False,
) -> None:
    """Start the whole local stack (Temporal, SQS, PostgreSQL, services, workers) until Ctrl-C."""
    from stack.supervisor import run_up

    settings = load(ctx)
    state = ctx.find_object(CliContext)
    with clean_errors():
        code = run_up(settings, ui=not headless, trigger=not no_trigger,
                      config_path=state.config_path if state else None)
    raise typer.Exit(code)


@app.command()
def status(ctx: typer.Context) -> None:
    """Show which parts of the stack answer on the configured ports."""
    from stack.processes import grpc_answers, http_answers, temporal_answers

    settings = load(ctx)
    stack = settings.stack
    market_data = f"127.0.0.1:{stack.market_data_port}"
    bids = f"127.0.0.1:{stack.bid_service_port}"
    ui_url = f"http://127.0.0.1:{stack.temporal_ui_port}"
    probes: list[tuple[str, str, Callable[[], bool]]] = [
        ("Temporal", stack.temporal_address, lambda: temporal_answers(stack.temporal_address)),
        ("Temporal UI", ui_url, lambda: http_answers(ui_url)),
        ("SQS", stack.sqs_endpoint_url, lambda: http_answers(stack.sqs_endpoint_url + "/")),
        ("market-data service", market_data, lambda: grpc_answers(market_data)),
        ("bid service", bids, lambda: grpc_answers(bids)),
    ]
    table = Table(title="openvpp local stack")
    table.add_column("part")
    table.add_column("address")
    table.add_column("state")
    for part, address, probe in probes:
        table.add_row(part, address, "[green]up[/]" if probe() else "[red]down[/]")
    console().print(table)


# ---------------------------------------------------------------------------------------------------
# Foreground processes (what the supervisor runs as children)


@serve_app.command("market-data")
def serve_market_data(ctx: typer.Context) -> None:
    """Run the market-data gRPC service until SIGINT/SIGTERM."""
    from services.market_data import serve  # type: ignore[import-not-found]

    settings = load(ctx)
    with clean_errors():
        run_until_signal(lambda stop: serve(settings, stop))  # type: ignore[no-any-return]


@serve_app.command("bids")
def serve_bids(ctx: typer.Context) -> None:
    """Run the bid gRPC service (simulated market) until SIGINT/SIGTERM."""
    from services.bid_service import serve  # type: ignore[import-not-found]

    settings = load(ctx)
    with clean_errors():
        run_until_signal(lambda stop: serve(settings, stop))  # type: ignore[no-any-return]


@worker_app.command("pool")
def worker_pool(ctx: typer.Context, kind: Annotated[PoolKind, typer.Argument(help="Request kind.")]) -> None:
    """Run one forecast or optimisation worker (SQS consumer) until SIGINT/SIGTERM."""
    from workers.runtime import run_pool

    settings = load(ctx)
    run_until_signal(lambda stop: run_pool(settings, kind.value, stop))


@worker_app.command("temporal")
def worker_temporal(ctx: typer.Context) -> None:
    """Run the Temporal worker (workflows, activities, result relay) until SIGINT/SIGTERM."""
    from workers.temporal import run_temporal_worker  # type: ignore[import-not-found]

    settings = load(ctx)
    run_until_signal(lambda stop: run_temporal_worker(settings, stop))  # type: ignore[no-any-return]


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


@bench_app.command("cycle")
def bench_cycle(
    ctx: typer.Context,
    cycles: Annotated[int, typer.Option(min=1, help="Number of cycles to measure.")] = 20,
) -> None:
    """Measure the AutoBidder cycle end to end on the local stack."""
    from bench.cycle import run_cycle_bench

    settings = load(ctx)
    with clean_errors():
        code = run_cycle_bench(settings, cycles=cycles)
    raise typer.Exit(int(code))


@bench_app.command("forecast")
def bench_forecast(
    ctx: typer.Context,
    region: Annotated[str | None, typer.Option(help="NEM region (default: the cycle's region).")] = None,
    decisions: Annotated[int, typer.Option(min=1, help="Decision times spread over the data.")] = 60,
) -> None:
    """Forecast skill (MAE, pinball) by horizon against seasonal naive and AEMO pre-dispatch."""
    from bench.forecast_skill import main

    settings = load(ctx)
    with clean_errors():
        code = main(settings, region, decisions)
    raise typer.Exit(int(code))


@bench_app.command("market")
def bench_market(
    ctx: typer.Context,
    region: Annotated[list[str] | None, typer.Option(help="NEM region; repeat for several (default: all).")] = None,
    days: Annotated[float, typer.Option(min=0.01, help="Days of 5-minute decisions to replay per region.")] = 1.0,
) -> None:
    """Realised revenue through the real bidding path vs perfect foresight (capture %), per region."""
    from bench.market import main

    settings = load(ctx)
    with clean_errors():
        code = main(settings, region or None, days)
    raise typer.Exit(int(code))


def run() -> None:
    """Console-script entry point (``vpp``)."""
    app(prog_name="vpp")


if __name__ == "__main__":
    run()
