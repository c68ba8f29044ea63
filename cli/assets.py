"""``vpp assets``: import, export and inspect the asset graph (models/assets.py, models/asset_io.py).

The database is ``--database-url`` if given, else the configured one (``DATABASE_URL``), else the embedded
server in the state folder, as ``vpp db migrate`` does; pending migrations are applied first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

assets_app = typer.Typer(help="The asset graph: sites, aggregation nodes and their hierarchies over time.",
                         no_args_is_help=True)

AS_OF_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"]
SHOWN_REJECTIONS = 20
SHOWN_EDGES = 50


@assets_app.callback()
def assets_main(
    ctx: typer.Context,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="PostgreSQL URL (default: DATABASE_URL, else the embedded server).")] = None,
) -> None:
    """Import, export and show the asset graph."""
    ctx.meta["assets_database_url"] = database_url


@contextmanager
def _connection(ctx: typer.Context) -> Iterator[Any]:
    """A migrated database connection for this command (errors become one red line and exit 1)."""
    import psycopg

    from cli.main import fail, load
    from models.db import MigrationError, migrate, resolve_database_url
    from settings import ConfigError

    explicit = ctx.meta.get("assets_database_url")
    embedded = None
    try:
        if explicit:
            url = explicit
        else:
            url, embedded = resolve_database_url(load(ctx))
        migrate(url)
        conn = psycopg.connect(url)
    except (psycopg.Error, MigrationError, OSError, ConfigError) as exc:
        if embedded is not None:
            embedded.stop()
        raise fail(f"cannot reach PostgreSQL: {exc}") from None
    try:
        with conn:
            yield conn
    finally:
        if embedded is not None:
            embedded.stop()


@contextmanager
def _asset_errors() -> Iterator[None]:
    from cli.main import fail
    from models.asset_io import AssetFileError
    from models.assets import AssetGraphError

    try:
        yield
    except (AssetFileError, AssetGraphError) as exc:
        raise fail(str(exc)) from None


@assets_app.command("import")
def assets_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or JSON asset file (see models/asset_io.py).", exists=True,
                                         dir_okay=False)],
    file_format: Annotated[str | None, typer.Option("--format", help="csv or json (default: from the suffix).")] = None,
    partial: Annotated[bool, typer.Option("--partial", help="Write the valid rows even when others are rejected "
                                                            "(default: a file with a rejected row writes nothing).")]
    = False,
) -> None:
    """Import nodes, sites and edges, all or nothing: a file with a rejected row writes nothing (--partial
    writes the valid rows). Rejected rows are listed; exit 1 when any row was rejected."""
    from cli.main import console, fail
    from models.asset_io import import_assets

    with _asset_errors(), _connection(ctx) as conn:
        report = import_assets(conn, file, file_format, partial=partial)
    shown = console()
    written = ("written" if report.written
               else "valid but NOT written (the file has rejected rows; --partial writes them)")
    shown.print(f"{file}: {report.rows_read:,} rows read, {report.accepted:,} {written} ({report.accepted_nodes:,} "
                f"nodes, {report.accepted_sites:,} sites, {report.accepted_edges:,} edges), "
                f"{report.rejected_rows:,} rejected", highlight=False, soft_wrap=True)
    if report.rejected:
        table = Table(title="rejected rows", title_justify="left")
        for column in ("row", "record", "column", "reason", "value"):
            table.add_column(column, overflow="fold")
        for problem in report.rejected[:SHOWN_REJECTIONS]:
            table.add_row(str(problem.row), problem.record, problem.column, escape(problem.reason),
                          escape(problem.value))
        shown.print(table)
        if len(report.rejected) > SHOWN_REJECTIONS:
            shown.print(f"... and {len(report.rejected) - SHOWN_REJECTIONS:,} more problems", highlight=False)
        raise fail(f"{report.rejected_rows:,} row(s) rejected: "
                   + ("the valid rows were written (--partial)" if report.written else "nothing written"))


@assets_app.command("export")
def assets_export(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or JSON file to write.", dir_okay=False)],
    file_format: Annotated[str | None, typer.Option("--format", help="csv or json (default: from the suffix).")] = None,
) -> None:
    """Write the whole asset graph (nodes, sites, edges with their validity) to a file."""
    from cli.main import console
    from models.asset_io import export_assets, file_format_of

    with _asset_errors():
        file_format_of(file, file_format)
        with _connection(ctx) as conn:
            report = export_assets(conn, file, file_format)
    console().print(f"{file}: {report.nodes:,} nodes, {report.sites:,} sites, {report.edges:,} edges",
                    highlight=False, soft_wrap=True)


@assets_app.command("show")
def assets_show(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="Node id (a site, feeder, programme, ...).")],
    as_of: Annotated[datetime | None, typer.Option(
        "--as-of", formats=AS_OF_FORMATS, help="The time to ask about (UTC unless an offset is given; default: "
        "now).")] = None,
) -> None:
    """Show a node as of a time: kind, ancestors per hierarchy, sites under it and their totals, its edges."""
    from cli.main import console
    from models.assets import ancestors_of, edge_count, edges_of, node_info, site_records, sites_under

    moment = datetime.now(UTC) if as_of is None else (as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC))
    with _asset_errors(), _connection(ctx) as conn:
        info = node_info(conn, node)
        ancestors = ancestors_of(conn, node, moment)
        under = sites_under(conn, node, moment)
        records = site_records(conn, under) if len(under) else None
        edges = edges_of(conn, node, SHOWN_EDGES)
        total_edges = edge_count(conn, node)
    shown = console()
    table = Table(title=f"{info.kind} {info.node_id} as of {moment.isoformat()}", title_justify="left",
                  show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    table.add_row("name", escape(info.name))
    for hierarchy in sorted({a[0] for a in ancestors}):
        chain = " → ".join(a[2] for a in ancestors if a[0] == hierarchy)
        table.add_row(f"above ({hierarchy})", chain)
    table.add_row("sites under it", f"{len(under):,}")
    if records is not None:
        p = records.parameters
        table.add_row("capacity", f"{p.capacity_kwh.sum():,.1f} kWh")
        table.add_row("max discharge / charge", f"{p.max_discharge_kw.sum():,.1f} kW / {p.max_charge_kw.sum():,.1f} kW")
        table.add_row("rooftop PV", f"{p.pv_capacity_kw.sum():,.1f} kW on {int((p.pv_capacity_kw > 0).sum()):,} sites")
        if info.kind == "site":
            table.add_row("postcode", str(records.postcodes[0]))
            table.add_row("batteries", str(records.battery_counts[0]))
            table.add_row("efficiency (charge / discharge)",
                          f"{p.charge_efficiency[0]:.3f} / {p.discharge_efficiency[0]:.3f}")
            table.add_row("backup reserve", f"{100 * p.backup_reserve_fraction[0]:.0f} %")
    shown.print(table)
    if edges:
        listing = Table(title=f"edges of {info.node_id} ({total_edges:,})", title_justify="left")
        for column in ("hierarchy", "parent", "child", "valid from", "valid to", f"valid at {moment:%Y-%m-%d}"):
            listing.add_column(column, overflow="fold")
        for edge in edges:
            listing.add_row(edge.hierarchy, edge.parent_id, edge.child_id, edge.valid_from.isoformat(),
                            "open" if edge.valid_to is None else edge.valid_to.isoformat(),
                            "yes" if edge.valid_at(moment) else "no")
        shown.print(listing)
        if total_edges > len(edges):
            shown.print(f"... and {total_edges - len(edges):,} more edges", highlight=False)
