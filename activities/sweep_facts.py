"""Inputs and results of the backtest sweep workflow and its activities (plain frozen dataclasses: JSON across
Temporal). The workflow holds archive keys, never a run's request, result or files."""

from __future__ import annotations

from dataclasses import dataclass

SWEEP_WORKFLOW = "BacktestSweep"
# Activity names (the request activity runs in activities/sweep.py, the report in backtest/sweep_report.py).
REQUEST_BACKTEST_RUN = "request_backtest_run"
WRITE_SWEEP_REPORT = "write_sweep_report"
# Outcome of a run in the sweep.
RUN_FINISHED = "finished"
RUN_FAILED = "failed"


@dataclass(frozen=True)
class SweepRunSpec:
    """One run of the sweep: its deterministic id, its grid point and the archive key of its request
    (``BacktestRunRequest``)."""

    run_id: str
    label: str
    request_key: str


@dataclass(frozen=True)
class SweepInput:
    """A sweep of backtest runs (``vpp backtest sweep``).

    ``out_folder`` is the runs folder the report activity writes to (``<out>/<run id>/`` per run and
    ``<out>/sweeps/<sweep id>/``); ``max_in_flight`` bounds the runs queued at once; ``run_timeout_s`` is how
    long one run may take before its task is sent again (same task id: a finished run is not recomputed).
    """

    sweep_id: str
    runs: tuple[SweepRunSpec, ...]
    out_folder: str
    max_in_flight: int = 8
    run_timeout_s: int = 7200
    # How often a run's task is sent (first time included) before the run counts as failed.
    run_attempts: int = 3


@dataclass(frozen=True)
class BacktestRunTaskInput:
    """Queue run ``run_id`` of sweep ``sweep_id``: its archived request (``request_key``) on the backtest pool."""

    sweep_id: str
    run_id: str
    request_key: str


@dataclass(frozen=True)
class SweepRunOutcome:
    """What became of one run: ``status`` finished (``result_key``: its archived ``BacktestRunResult``) or
    failed (``reason``); ``finished_at`` the workflow time (UTC ISO) it ended; ``wall_time_s`` the worker's."""

    run_id: str
    label: str
    status: str
    result_key: str = ""
    reason: str = ""
    finished_at: str = ""
    wall_time_s: float = 0.0


@dataclass(frozen=True)
class SweepReportInput:
    """Write the sweep's runs and comparison into ``out_folder`` (see :class:`SweepInput`)."""

    sweep_id: str
    out_folder: str
    outcomes: tuple[SweepRunOutcome, ...]
    started_at: str
    finished_at: str


@dataclass(frozen=True)
class SweepReport:
    """Where the report went and the comparison as markdown (one row per run, failed runs with their reason)."""

    folder: str
    table_markdown: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class SweepProgress:
    """The sweep as it stands (the ``progress`` query): runs in all, finished, failed and in flight, and when
    it started (UTC ISO)."""

    sweep_id: str
    total: int
    finished: int
    failed: int
    in_flight: int
    started_at: str
    stage: str


@dataclass(frozen=True)
class SweepResult:
    """The finished sweep: every run's outcome (in the grid's order) and the report."""

    sweep_id: str
    outcomes: tuple[SweepRunOutcome, ...]
    report: SweepReport
    started_at: str
    finished_at: str
