"""``vpp data``: mirror AEMO's market data into the local market store and inspect it (aemo/).

- ``vpp data sync`` — fetch monthly archives and current reports from NEMWEB (or ``--source``: another
  address or a local folder laid out like NEMWEB) into the store; a one-line summary at the end. Exit 0
  when every file was synced or skipped, 1 when some failed (each named with its reason), 130 when
  interrupted (what was committed stays; run it again to resume).
- ``vpp data ls`` — what the store holds: table × month × region, rows, first and last time.
- ``vpp data check`` — missing intervals per table, month and region, as ranges. Exit 1 when gaps are found
  in what was asked (so scripts can wait for complete data), 0 when complete.

Bad input (unknown table, malformed month, unreachable source) is one ``error:`` line and exit 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from aemo.store import MarketStore

data_app = typer.Typer(help="AEMO market data: sync NEMWEB into the local market store, list it, find gaps.",
                       no_args_is_help=True)

TablesOption = Annotated[list[str] | None, typer.Option(
    "--tables", "--table", help="Store tables (repeat or comma-separate; default: all), e.g. DISPATCHPRICE.")]
FromOption = Annotated[str | None, typer.Option("--from", help="First month, YYYY-MM.")]
ToOption = Annotated[str | None, typer.Option("--to", help="Last month, YYYY-MM (default: the latest).")]


def _tables(values: list[str] | None) -> tuple[str, ...] | None:
    """Table names from repeated / comma-separated options, checked against the schemas (None: all)."""
    from aemo.tables import schema_named

    if not values:
        return None
    names = [name for value in values for name in value.split(",") if name.strip()]
    return tuple(dict.fromkeys(schema_named(name).name for name in names))


def _months(first: str | None, last: str | None) -> tuple[date | None, date | None]:
    """The month range of ``--from`` / ``--to`` (a lone ``--from`` is that month onwards)."""
    from aemo.tables import parse_month

    first_month = parse_month(first) if first else None
    last_month = parse_month(last) if last else None
    if first_month and last_month and first_month > last_month:
        raise ValueError(f"--from {first} is after --to {last}")
    return first_month, last_month


@contextmanager
def _data_errors() -> Iterator[None]:
    """Turn bad input and unusable sources into one ``error:`` line and exit 1."""
    from aemo.errors import AemoDataError
    from cli.main import fail

    try:
        yield
    except (AemoDataError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None


def _time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M")


@data_app.command("sync")
def data_sync(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option(
        help="NEMWEB address or a local folder laid out like it (default: [market_store] source).")] = None,
    tables: TablesOption = None,
    first: FromOption = None,
    last: ToOption = None,
    current: Annotated[bool, typer.Option("--current/--no-current", help="Sync Reports/Current folders.")] = True,
    archives: Annotated[bool, typer.Option("--archives/--no-archives", help="Sync monthly archives.")] = True,
    folder: Annotated[list[str] | None, typer.Option(
        "--folder", help="Reports/Current folder (repeat; default: [market_store] current_folders).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Downloads at once (default: settings).")] = None,
) -> None:
    """Mirror AEMO's monthly archives and current reports into the local market store."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from aemo.nemweb import SyncEvent, SyncRequest, open_source, sync
    from aemo.store import MarketStore
    from aemo.tables import TABLE_NAMES
    from cli.main import console, load

    settings = load(ctx)
    store_settings = settings.market_store
    with _data_errors():
        selected = _tables(tables) or TABLE_NAMES
        first_month, last_month = _months(first, last)
        request = SyncRequest(
            tables=selected, first_month=first_month, last_month=last_month, archives=archives, current=current,
            current_folders=tuple(folder) if folder else store_settings.current_folders,
            archive_path=store_settings.archive_path, current_path=store_settings.current_path)
        origin = open_source(source or store_settings.source, timeout_s=store_settings.timeout_s,
                             attempts=store_settings.attempts, backoff_s=store_settings.backoff_s)
        store = MarketStore.from_settings(settings)
        origin.probe()
    out = console()
    out.print(f"Syncing {escape(origin.description)} into {escape(str(store.root))} …", highlight=False)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rows]:,} rows {task.fields[megabytes]:.1f} MB"), TimeElapsedColumn(),
                        console=out, transient=True, disable=not out.is_terminal)
    task = progress.add_task("listing", total=None, rows=0, megabytes=0.0)
    totals = {"rows": 0, "bytes": 0}

    def on_event(event: SyncEvent) -> None:
        if event.kind == "planned":
            progress.update(task, total=event.total, description="files")
            return
        totals["rows"] += event.rows
        totals["bytes"] += event.bytes
        progress.update(task, completed=event.completed, description=event.name[-44:], rows=totals["rows"],
                        megabytes=totals["bytes"] / 1e6)

    try:
        with progress, _data_errors():
            report = sync(store, origin, request, workers=workers or store_settings.workers, progress=on_event)
    except KeyboardInterrupt:
        out.print("interrupted: files already synced are kept; run `vpp data sync` again to resume.")
        raise typer.Exit(130) from None
    out.print(report.summary(), highlight=False, soft_wrap=True)
    raise typer.Exit(1 if report.failed else 0)


@data_app.command("ls")
def data_ls(
    ctx: typer.Context,
    tables: TablesOption = None,
    first: FromOption = None,
    last: ToOption = None,
) -> None:
    """What the store holds: table × month × region, rows, first and last interval (AEST)."""
    from aemo.store import MarketStore
    from cli.main import console, load

    settings = load(ctx)
    with _data_errors():
        selected = _tables(tables)
        first_month, last_month = _months(first, last)
        store = MarketStore.from_settings(settings)
        months = _month_filter(store, selected, first_month, last_month)
        holdings = store.holdings(selected, months)
    out = console()
    if not holdings:
        out.print(f"The store at {escape(str(store.root))} holds nothing" + (" of what was asked." if selected or
                  months is not None else " yet: run `vpp data sync`."), highlight=False)
        return
    table = Table(title=f"Market store {store.root}")
    for column in ("table", "month", "region", "rows", "first", "last"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for holding in holdings:
        table.add_row(holding.table, holding.month, holding.region or "-", f"{holding.rows:,}", _time(holding.first),
                      _time(holding.last))
    out.print(table)
    out.print(f"{len(holdings)} rows listed; {sum(h.rows for h in holdings):,} rows in all.", highlight=False)


def _month_filter(store: MarketStore, selected: tuple[str, ...] | None, first_month: date | None,
                  last_month: date | None) -> list[date] | None:
    """The months asked for: ``--from`` … ``--to`` (an open end bounded by what the store holds), or None."""
    from aemo.store import month_starts
    from aemo.tables import month_range

    if first_month is None and last_month is None:
        return None
    held = sorted({month for name in (selected or tuple(store.tables())) for month in month_starts(store.months(name))})
    low = first_month or (held[0] if held else last_month)
    high = last_month or (held[-1] if held else first_month)
    assert low is not None and high is not None
    return list(month_range(low, high)) if low <= high else []


@data_app.command("check")
def data_check(
    ctx: typer.Context,
    tables: TablesOption = None,
    first: FromOption = None,
    last: ToOption = None,
    region: Annotated[list[str] | None, typer.Option(help="Region (repeat; default: those the table holds).")] = None,
) -> None:
    """Missing intervals per table, month and region, as ranges; exit 1 when there are gaps."""
    from aemo.store import MarketStore
    from cli.main import console, load

    settings = load(ctx)
    with _data_errors():
        selected = _tables(tables)
        first_month, last_month = _months(first, last)
        store = MarketStore.from_settings(settings)
        months = _month_filter(store, selected, first_month, last_month)
        gaps = store.gaps(selected, months, region)
    out = console()
    if not gaps:
        out.print("No gaps: every interval asked for is in the store.")
        return
    table = Table(title="Missing intervals (interval-ending, AEST)")
    for column in ("table", "month", "region", "first missing", "last missing", "intervals"):
        table.add_column(column, justify="right" if column == "intervals" else "left")
    for gap in gaps:
        table.add_row(gap.table, gap.month, gap.region or "-", _time(gap.first_missing), _time(gap.last_missing),
                      f"{gap.intervals:,} × {gap.interval_minutes} min")
    out.print(table)
    out.print(f"{len(gaps)} gaps, {sum(g.intervals for g in gaps):,} intervals missing.", highlight=False)
    raise typer.Exit(1)


def bench_store(
    ctx: typer.Context,
    region: Annotated[str, typer.Option(help="Region of the region-month load.")] = "SA1",
    month: Annotated[str, typer.Option(help="Month of the region-month load, YYYY-MM.")] = "2024-08",
    data: Annotated[Path | None, typer.Option(
        help="Folder laid out like NEMWEB to serve (default: the repository's data/nemweb).")] = None,
) -> None:
    """Market store: sync of the test NEMWEB tree from a local stand-in, a second sync, load vs parse."""
    from bench.market_store import main
    from cli.main import load

    settings = load(ctx)
    with _data_errors():
        code = main(settings, region=region, month=month, data_root=data)
    raise typer.Exit(int(code))
