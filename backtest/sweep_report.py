"""A sweep's results in the runs folder: each finished run's folder restored from the archive, and the
comparison of the runs in ``<out>/sweeps/<sweep id>/``.

The pool process that made a run archived its folder's files (``BacktestRunFiles``, :mod:`backtest.pool_task`);
this writes them to ``<out>/<run id>/`` (sha256 checked: the same bytes the worker wrote, so ``vpp backtest
show|compare`` read them like any run) and then, in ``<out>/sweeps/<sweep id>/``:

* ``table.csv`` and ``table.md``: one row per run (:func:`backtest.compare.sweep_table`), failed runs with
  their reason;
* ``report.html``: that table, the side-by-side comparison of the finished runs
  (:func:`backtest.compare.comparison_tables`) and the cumulative-revenue plot, also as ``cumulative_revenue.png``;
* ``sweep.json``: the sweep's runs and outcomes, when it started and finished, and its throughput.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from temporalio import activity

from activities.sweep_facts import RUN_FINISHED, WRITE_SWEEP_REPORT, SweepReport, SweepReportInput, SweepRunOutcome
from archive.store import Archive
from backtest.compare import RunView, SweepRow, comparison_tables, csv_table, markdown_table, sweep_table
from backtest.report import ReportError, plot_cumulative, render_html
from backtest.runs import SUMMARY_FILE, read_run, write_json
from vpp.v1 import worker_pb2

SWEEPS_FOLDER = "sweeps"
TABLE_CSV = "table.csv"
TABLE_MD = "table.md"
REPORT_HTML = "report.html"
CUMULATIVE_PNG = "cumulative_revenue.png"
SWEEP_JSON = "sweep.json"


class SweepReportError(RuntimeError):
    """An archived run that cannot be restored (missing, corrupt, or not what its key says)."""


def sweep_folder(out: Path, sweep_id: str) -> Path:
    """``<out>/sweeps/<sweep id>/``."""
    return Path(out) / SWEEPS_FOLDER / sweep_id


def restore_run(archive: Archive, result_key: str, out: Path) -> tuple[worker_pb2.BacktestRunResult, Path]:
    """The archived result of a run and its folder ``<out>/<run id>/`` written from the archived files (each
    file's sha256 checked; the folder replaced whole). SweepReportError when they are not what they claim."""
    result = archive.get(result_key)
    if not isinstance(result, worker_pb2.BacktestRunResult) or not result.run_id:
        raise SweepReportError(f"{result_key} is not a backtest run's result")
    files = archive.get(result.files_key)
    if not isinstance(files, worker_pb2.BacktestRunFiles) or files.run_id != result.run_id:
        raise SweepReportError(f"run {result.run_id}: {result.files_key} is not its run folder")
    if SUMMARY_FILE not in {f.name for f in files.files}:
        raise SweepReportError(f"run {result.run_id}: its archived folder has no {SUMMARY_FILE}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{result.run_id}-", dir=out))
    try:
        for archived in files.files:
            intact = hashlib.sha256(archived.content).hexdigest() == archived.sha256
            if Path(archived.name).name != archived.name or not intact:
                raise SweepReportError(f"run {result.run_id}: archived file {archived.name!r} is corrupt")
            (staging / archived.name).write_bytes(archived.content)
        folder = out / result.run_id
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result, folder


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def sweep_record(request: SweepReportInput, decisions: int) -> dict[str, Any]:
    """``sweep.json``: the sweep's outcomes, timing and throughput (runs per hour and decisions per second
    over the sweep's wall time)."""
    elapsed = _seconds_between(request.started_at, request.finished_at)
    finished = sum(1 for o in request.outcomes if o.status == RUN_FINISHED)
    return {
        "sweep_id": request.sweep_id, "started_at": request.started_at, "finished_at": request.finished_at,
        "wall_time_s": elapsed, "runs": len(request.outcomes), "finished": finished,
        "failed": len(request.outcomes) - finished,
        "runs_per_hour": finished * 3600.0 / elapsed if elapsed > 0 else None,
        "decisions": decisions, "decisions_per_second": decisions / elapsed if elapsed > 0 else None,
        "outcomes": [{"run_id": o.run_id, "label": o.label, "status": o.status, "reason": o.reason,
                      "result_key": o.result_key, "finished_at": o.finished_at, "wall_time_s": o.wall_time_s}
                     for o in request.outcomes],
    }


def _row(outcome: SweepRunOutcome, results: dict[str, Any] | None) -> SweepRow:
    return SweepRow(label=outcome.label, run_id=outcome.run_id, status=outcome.status, results=results,
                    wall_time_s=outcome.wall_time_s if results is not None else None, reason=outcome.reason)


def write_sweep_report(archive: Archive, request: SweepReportInput) -> SweepReport:
    """Restore every finished run into ``<out>/<run id>/`` and write the sweep's table, report, plot and
    record into ``<out>/sweeps/<sweep id>/`` (see the module docstring)."""
    out = Path(request.out_folder)
    folder = sweep_folder(out, request.sweep_id)
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[SweepRow] = []
    views: list[RunView] = []
    decisions = 0
    for outcome in request.outcomes:
        if outcome.status != RUN_FINISHED:
            rows.append(_row(outcome, None))
            continue
        _, run_folder = restore_run(archive, outcome.result_key, out)
        stored = read_run(run_folder)
        results = cast(dict[str, Any], stored.summary["results"])
        decisions += int(results["decisions"])
        rows.append(_row(outcome, results))
        views.append(RunView(outcome.label, stored.summary, stored.ledger()))
    table = sweep_table(rows, f"Sweep {request.sweep_id}")
    (folder / TABLE_CSV).write_text(csv_table(table), encoding="utf-8")
    (folder / TABLE_MD).write_text(markdown_table(table), encoding="utf-8")
    record = sweep_record(request, decisions)
    write_json(folder / SWEEP_JSON, record)
    images: list[tuple[str, bytes]] = []
    written = [folder / TABLE_CSV, folder / TABLE_MD, folder / SWEEP_JSON]
    runs_per_hour = record["runs_per_hour"]
    lines = [f"{record['finished']} of {record['runs']} runs finished, {record['failed']} failed, in "
             f"{record['wall_time_s']:.0f} s" + (f" ({runs_per_hour:.1f} runs/hour)" if runs_per_hour else "") + "."]
    if views:
        try:
            png = plot_cumulative([(view.label, view.ledger) for view in views])
        except ReportError as exc:  # a deployment without the bench extra: the tables, without the plot
            lines.append(f"No plot: {exc}")
        else:
            (folder / CUMULATIVE_PNG).write_bytes(png)
            images.append(("Cumulative revenue by run", png))
            written.append(folder / CUMULATIVE_PNG)
    page = render_html(f"Backtest sweep {request.sweep_id}", lines,
                       [table, *(comparison_tables(views) if views else [])], images)
    (folder / REPORT_HTML).write_text(page, encoding="utf-8")
    written.append(folder / REPORT_HTML)
    return SweepReport(folder=str(folder), table_markdown=markdown_table(table),
                       files=tuple(str(path) for path in written))


class SweepReportActivities:
    """The report activity, bound to the archive the runs' results are in."""

    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def all(self) -> list[Any]:
        """Every activity, for ``Worker(activities=...)``."""
        return [self.write_sweep_report]

    @activity.defn(name=WRITE_SWEEP_REPORT)
    async def write_sweep_report(self, request: SweepReportInput) -> SweepReport:
        """Write the sweep's runs and comparison into its runs folder (:func:`write_sweep_report`)."""
        return await asyncio.to_thread(write_sweep_report, self._archive, request)
