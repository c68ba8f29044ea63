"""``vpp bids``: AEMO's published bids checked against the platform's bid rules (aemo/bid_check.py).

- ``vpp bids check PATH…`` — read BIDDAYOFFER_D / BIDPEROFFER_D from AEMO's files (monthly archives, current
  reports, zips, CSVs, or folders holding them), each unit's registration (DUDETAILSUMMARY) and the price
  limits (MARKET_PRICE_THRESHOLDS) from the same files and the local market store, and validate every bid:
  one line per unit and trading day (passed, or failed with the rule, AEMO's field and the reason), then a
  one-line total. Exit 0 when every bid passed, 1 when one failed or could not be checked.

Bad input (no such file, a file that is not AEMO's, a trading day whose price limits no source gives) is
one ``error:`` line and exit 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

if TYPE_CHECKING:
    import pandas as pd

    from aemo.bid_check import CheckReport, DayCheck
    from settings import Settings

bids_app = typer.Typer(help="AEMO's bids: check real bids against the platform's bid rules.", no_args_is_help=True)


@contextmanager
def _bid_errors() -> Iterator[None]:
    """Turn bad input and unreadable files into one ``error:`` line and exit 1."""
    from aemo.errors import AemoDataError
    from cli.main import fail

    try:
        yield
    except (AemoDataError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None


def _store_table(settings: Settings, table: str) -> pd.DataFrame | None:
    """``table`` from the local market store, if there is a store holding it (never creates one)."""
    from aemo.store import MANIFEST_NAME, MarketStore

    folder = settings.market_store.store_dir(settings.stack.state_dir)
    if not (folder / MANIFEST_NAME).is_file():
        return None
    store = MarketStore(folder)
    if table not in store.tables():
        return None
    frame = store.load(table)
    return None if frame.empty else frame


def _combined(first: pd.DataFrame | None, second: pd.DataFrame | None) -> pd.DataFrame | None:
    """Rows of both (the files' rows after the store's, so the files win where keys repeat)."""
    import pandas as pd

    frames = [frame for frame in (second, first) if frame is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def _day_lines(day: DayCheck) -> list[str]:
    from aemo.bids import aemo_column

    head = f"{day.unit_id:<10} {day.trading_day}"
    offers = f"{day.bids} offer{'s' if day.bids != 1 else ''}"
    if not day.registered:
        return [f"{head}  NOT CHECKED  {offers}: no registration (DUDETAILSUMMARY) of {day.unit_id} on "
                f"{day.trading_day}"]
    if day.passed:
        return [f"{head}  passed       {offers}"]
    return [f"{head}  FAILED       {failure.violation.rule} {aemo_column(failure.violation.field) or '-'}: "
            f"{failure.violation.message} (offer of {failure.offer_time})" for failure in day.failures]


def _total(report: CheckReport) -> str:
    units = {day.unit_id for day in report.days}
    days = {day.trading_day for day in report.days}
    incomplete = len(report.incomplete)
    return (f"checked {report.bids} bids (offers) of {len(units)} unit{'s' if len(units) != 1 else ''} on "
            f"{len(days)} trading days: {report.passed_bids} passed, {report.failed_bids} failed, "
            f"{report.unchecked_bids} not checked (no registration); {incomplete} unit-day"
            f"{'s' if incomplete != 1 else ''} of rows that make no bid")


@bids_app.command("check")
def bids_check(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="AEMO bid files (zip, CSV) or folders holding them.")],
) -> None:
    """Check every bid in AEMO's BIDDAYOFFER_D / BIDPEROFFER_D files against the bid rules V0–V8."""
    from aemo.bid_check import check_published_bids
    from aemo.bids import PRICE_THRESHOLDS, REGISTRATIONS, read_bid_tables
    from aemo.registrations import registry_from_dudetailsummary
    from cli.main import console, load

    settings = load(ctx)
    with _bid_errors():
        tables = read_bid_tables(paths)
        if tables.day_offers is None or tables.period_offers is None:
            raise ValueError(f"no BIDDAYOFFER_D and BIDPEROFFER_D rows in {', '.join(str(p) for p in paths)}")
        registrations = _combined(tables.registrations, _store_table(settings, REGISTRATIONS))
        thresholds = _combined(tables.price_thresholds, _store_table(settings, PRICE_THRESHOLDS))
        report = check_published_bids(tables, settings.market, thresholds=thresholds,
                                      registry=registry_from_dudetailsummary(registrations))
    out = console()
    for day in report.days:
        for line in _day_lines(day):
            out.print(escape(line), highlight=False, soft_wrap=True)
    for rows in report.incomplete:
        out.print(escape(f"{rows.unit_id:<10} {rows.trading_day}  no bid       {', '.join(rows.products)}: "
                         f"{rows.reason}"), highlight=False, soft_wrap=True)
    out.print(_total(report), highlight=False, soft_wrap=True)
    raise typer.Exit(1 if report.failed_bids or report.unchecked_bids else 0)
