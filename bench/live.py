"""``vpp bench live``: the live lag — from a report's appearance in its NEMWEB listing to its values being
served by the market-data service's GetSnapshot — against its goal of at most one poll interval + 1 s.

The market-data service runs in live mode (``serve()`` with ``[market_data] source = "live"``, its follower,
its market store in a temporary folder, real gRPC) against the NEMWEB stand-in (``tests/nemweb_standin.py``),
which publishes DispatchIS reports made from real AEMO rows (``tests/live_reports.py``) one at a time, each at
a random moment of the poll cycle. For each report the client asks GetSnapshot every ``probe_s`` seconds, as of
the report's publication time, until the report's interval has its price; the lag is the time from
publishing to that answer. Figures are printed, never asserted.

Run ``vpp bench live [--reports 20] [--poll-s S]`` (or ``python -m bench.live``).
"""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import numpy as np
from rich.console import Console
from rich.table import Table

from algorithms.common.nem_time import from_timestamp
from services.health import wait_healthy
from services.market_data import fetch_snapshot, serve
from services.security import EdgeSecurity
from settings import REPO_ROOT, Settings, load_settings

FIRST_INTERVAL = datetime(2024, 8, 1, 0, 5)
PUBLISHED_AFTER = timedelta(seconds=15)
SLACK_S = 1.0
INTERVAL = timedelta(minutes=5)


@dataclass(frozen=True)
class LiveLagFigures:
    """Lags (seconds) from publishing each report to its price being served; the poll interval (s); the
    GET requests the stand-in answered per report (1: each downloaded once)."""

    poll_s: float
    lags_s: tuple[float, ...]
    gets_per_report: tuple[int, ...]

    @property
    def goal_s(self) -> float:
        """One poll interval + 1 s."""
        return self.poll_s + SLACK_S

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of the lags (s)."""
        return float(np.percentile(self.lags_s, q))


def _test_module(name: str) -> ModuleType:
    """A helper module of the tests (the NEMWEB stand-in, the report builder), importable from the root."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import importlib

    return importlib.import_module(f"tests.{name}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class _Service:
    """``serve()`` on its own event loop in a thread, until :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, args=(settings,), name="bench-market-data", daemon=True)
        self._thread.start()

    def _run(self, settings: Settings) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(serve(settings, self._stop, security=EdgeSecurity()))

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


async def _served_after(address: str, interval: datetime, as_of: datetime, probe_s: float, timeout_s: float) -> float:
    """Ask GetSnapshot every ``probe_s`` until the interval has a price; seconds it took (perf counter)."""
    started = time.perf_counter()
    security = EdgeSecurity()
    while time.perf_counter() - started < timeout_s:
        try:
            snap = await fetch_snapshot(address, "SA1", interval + INTERVAL, as_of, history_intervals=1,
                                        security=security)
            history = snap.history[0]
            if from_timestamp(history.first_interval) == interval and not np.isnan(history.price[0]):
                return time.perf_counter() - started
        except Exception:  # NOT_FOUND until the first report is in
            pass
        await asyncio.sleep(probe_s)
    raise TimeoutError(f"the interval ending {interval} was not served within {timeout_s:g} s")


def run_live_bench(settings: Settings, *, reports: int = 20, poll_s: float | None = None, probe_s: float = 0.02,
                   seed: int = 1) -> LiveLagFigures:
    """Publish ``reports`` DispatchIS reports one by one and measure each one's lag (see the module docstring)."""
    live_reports = _test_module("live_reports")
    standin_module = _test_module("nemweb_standin")
    poll = poll_s if poll_s is not None else settings.market_data.live_poll_s
    randomness = random.Random(seed)
    rows = live_reports.archive_dispatch_rows()
    intervals = live_reports.dispatch_intervals(rows, FIRST_INTERVAL, reports)
    with tempfile.TemporaryDirectory(prefix="openvpp-live-bench-") as folder:
        root = Path(folder) / "nemweb"
        written = []
        for index, interval in enumerate(intervals):
            name, data = live_reports.dispatchis(rows, interval, interval + PUBLISHED_AFTER,
                                                 live_reports.FIRST_SEQUENCE + index)
            written.append((interval, live_reports.write_report(root, live_reports.DISPATCH_FOLDER, name, data)))
        with standin_module.NemwebStandIn(root, visible=()) as standin:
            configured = replace(
                settings,
                stack=replace(settings.stack, state_dir=Path(folder) / "state", market_data_port=_free_port()),
                market_data=replace(settings.market_data, source="live", live_poll_s=poll,
                                    live_folders=(live_reports.DISPATCH_FOLDER,)),
                market_store=replace(settings.market_store, source=standin.url))
            address = f"127.0.0.1:{configured.stack.market_data_port}"
            service = _Service(configured)
            try:
                asyncio.run(wait_healthy(address, timeout_s=60.0, security=EdgeSecurity()))
                lags: list[float] = []
                for interval, path in written:
                    time.sleep(randomness.uniform(0.0, poll))  # a random moment of the poll cycle
                    standin.publish(path)
                    lags.append(asyncio.run(_served_after(address, interval, interval + PUBLISHED_AFTER, probe_s,
                                                          timeout_s=poll * 3 + 30.0)))
            finally:
                service.stop()
            gets = tuple(len(standin.requests_for(path, "GET")) for _, path in written)
    return LiveLagFigures(poll_s=poll, lags_s=tuple(lags), gets_per_report=gets)


def print_figures(figures: LiveLagFigures, console: Console) -> None:
    """The lag figures as a table and the verdict against the goal."""
    table = Table(title=f"Live lag: a report's appearance in its listing -> its price served by GetSnapshot "
                        f"({len(figures.lags_s)} DispatchIS reports, poll every {figures.poll_s:g} s)")
    for column in ("median s", "p95 s", "max s", "min s", "goal s", "verdict", "downloads per report"):
        table.add_column(column, justify="right")
    worst = max(figures.lags_s)
    downloads = sorted(set(figures.gets_per_report))
    table.add_row(f"{statistics.median(figures.lags_s):.2f}", f"{figures.percentile(95):.2f}", f"{worst:.2f}",
                  f"{min(figures.lags_s):.2f}", f"<= {figures.goal_s:g}",
                  "met" if worst <= figures.goal_s else "MISSED", ", ".join(str(n) for n in downloads))
    console.print(table)


def main(settings: Settings, *, reports: int = 20, poll_s: float | None = None) -> int:
    """Run the benchmark and print its figures; 0 (figures are not asserted)."""
    print_figures(run_live_bench(settings, reports=reports, poll_s=poll_s), Console())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(load_settings()))
