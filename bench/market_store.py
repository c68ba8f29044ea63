"""``vpp bench store``: the local market store against its goals, on the repository's NEMWEB test tree.

1. A full sync of ``data/nemweb`` (every table, every month, the current reports) served by the NEMWEB
   stand-in (a real local HTTP server, ``tests/nemweb_standin.py``) into an empty store: files, rows,
   bytes, seconds (goal < 30 s).
2. A second sync that finds nothing new: seconds (goal < 2 s), files ingested (must be 0).
3. One region-month of DISPATCHPRICE: loaded from the store vs parsed from AEMO's zip (median of
   ``repeats``; goal: store < 1 s).
4. The same region-month from the store into the platform's price tables (``DispatchPrices`` and the
   empty ``PredispatchPrices`` of data without AEMO's forecasts, with the source files' sha256:
   :func:`aemo.store_prices.load_store_prices`, what ``vpp backtest run`` reads; goal < 1 s).

Run ``vpp bench store`` (or ``python -m bench.market_store``). Figures are printed, never asserted.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from aemo.archive_files import read_file
from aemo.nemweb import HttpSource, SyncReport, SyncRequest, month_folder, sync
from aemo.store import MarketStore
from aemo.store_prices import load_store_prices
from aemo.tables import next_month, normalise, parse_month, schema_named
from settings import REPO_ROOT, Settings, load_settings

if TYPE_CHECKING:
    from tests.nemweb_standin import NemwebStandIn

DEFAULT_DATA_ROOT = REPO_ROOT / "data" / "nemweb"
SYNC_GOAL_S = 30.0
RESYNC_GOAL_S = 2.0
LOAD_GOAL_S = 1.0


@dataclass(frozen=True)
class StoreBenchFigures:
    """Measured figures (seconds, counts, bytes); ``load_*`` are medians over the repeats."""

    first_sync: SyncReport
    second_sync: SyncReport
    region: str
    month: str
    load_rows: int
    load_store_s: float
    load_parse_s: float
    repeats: int
    tables_s: float = 0.0
    tables_products: int = 0


def _median_seconds(action: Callable[[], int], repeats: int) -> tuple[float, int]:
    times: list[float] = []
    rows = 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def _standin_class() -> type[NemwebStandIn]:
    """The NEMWEB stand-in of the tests (importable from the repository root)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests import nemweb_standin

    return nemweb_standin.NemwebStandIn


def run_store_bench(settings: Settings, *, region: str = "SA1", month: str = "2024-08",
                    data_root: Path | None = None, repeats: int = 5) -> StoreBenchFigures:
    """Measure the three figures of the module docstring in a temporary store."""
    root = data_root or DEFAULT_DATA_ROOT
    first_month = parse_month(month)
    store_settings = settings.market_store
    standin_class = _standin_class()
    with tempfile.TemporaryDirectory(prefix="openvpp-store-bench-") as folder, standin_class(root) as standin:
        store = MarketStore(Path(folder) / "market")
        source = HttpSource(standin.url, timeout_s=store_settings.timeout_s, attempts=store_settings.attempts,
                            backoff_s=store_settings.backoff_s)
        request = SyncRequest(current_folders=store_settings.current_folders, archive_path=store_settings.archive_path,
                              current_path=store_settings.current_path)
        first = sync(store, source, request, workers=store_settings.workers)
        second = sync(store, source, request, workers=store_settings.workers)

        def from_store() -> int:
            return len(store.load_month("DISPATCHPRICE", first_month, regions=[region]))

        schema = schema_named("DISPATCHPRICE")
        archive = root / month_folder(store_settings.archive_path, first_month)
        zips = [path for path in sorted(archive.glob("*.zip")) if "DISPATCHPRICE" in path.name]

        def from_zips() -> int:
            rows = 0
            for path in zips:
                for report in read_file(path, wanted=schema.carries):
                    for table in report.tables:
                        frame = normalise(table, schema)
                        rows += int((frame["REGIONID"] == region).sum())
            return rows

        products: list[int] = []

        def into_tables() -> int:
            start = datetime.combine(first_month, datetime.min.time())
            end = datetime.combine(next_month(first_month), datetime.min.time())
            loaded = load_store_prices(store, regions=[region], start=start, end=end)
            products[:] = [len(loaded.dispatch.products)]
            return int(loaded.dispatch.intervals.size)

        load_store_s, load_rows = _median_seconds(from_store, repeats)
        load_parse_s, _ = _median_seconds(from_zips, repeats)
        tables_s, _ = _median_seconds(into_tables, repeats)
    return StoreBenchFigures(first_sync=first, second_sync=second, region=region, month=month, load_rows=load_rows,
                             load_store_s=load_store_s, load_parse_s=load_parse_s, repeats=repeats, tables_s=tables_s,
                             tables_products=products[0] if products else 0)


def _verdict(seconds: float, goal: float) -> str:
    return f"goal < {goal:g} s: {'met' if seconds < goal else 'MISSED'}"


def print_figures(figures: StoreBenchFigures, console: Console) -> None:
    """The figures as a table and one line per goal."""
    first, second = figures.first_sync, figures.second_sync
    table = Table(title="Market store (data/nemweb through the local NEMWEB stand-in)")
    for column in ("measure", "files", "rows", "MB", "seconds", "goal"):
        table.add_column(column, justify="left" if column in ("measure", "goal") else "right")
    table.add_row("first sync (empty store)", str(first.files), f"{first.rows:,}", f"{first.bytes / 1e6:.1f}",
                  f"{first.seconds:.2f}", _verdict(first.seconds, SYNC_GOAL_S))
    table.add_row(f"second sync ({second.skipped} skipped)", str(second.files), f"{second.rows:,}",
                  f"{second.bytes / 1e6:.1f}", f"{second.seconds:.2f}", _verdict(second.seconds, RESYNC_GOAL_S))
    table.add_row(f"DISPATCHPRICE {figures.region} {figures.month} from the store", "", f"{figures.load_rows:,}", "",
                  f"{figures.load_store_s:.4f}", _verdict(figures.load_store_s, LOAD_GOAL_S))
    table.add_row(f"DISPATCHPRICE {figures.region} {figures.month} parsed from the zip", "", f"{figures.load_rows:,}",
                  "", f"{figures.load_parse_s:.4f}", "")
    table.add_row(f"{figures.region} {figures.month} from the store into DispatchPrices "
                  f"({figures.tables_products} products)", "", f"{figures.load_rows:,}", "", f"{figures.tables_s:.4f}",
                  _verdict(figures.tables_s, LOAD_GOAL_S))
    console.print(table)
    if first.failed or second.failed:
        console.print(f"failures: {first.summary()} / {second.summary()}", highlight=False)


def main(settings: Settings, *, region: str = "SA1", month: str = "2024-08", data_root: Path | None = None) -> int:
    """Run the benchmark and print its figures; 0 (figures are not asserted), 1 if a sync had failures."""
    figures = run_store_bench(settings, region=region, month=month, data_root=data_root)
    print_figures(figures, Console())
    return 1 if figures.first_sync.failed or figures.second_sync.failed else 0


if __name__ == "__main__":
    raise SystemExit(main(load_settings()))
