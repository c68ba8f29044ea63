"""A sweep of backtest runs fanned out over the backtest worker pool (``vpp backtest sweep``).

``BacktestSweep`` receives the grid's runs (each a deterministic run id and the archive key of its
``BacktestRunRequest``; the grid is expanded by :func:`backtest.sweep.expand_grid` when it is submitted, so
bad input is refused before anything starts) and

1. queues every run on the backtest pool with ``request_backtest_run`` — an activity completed
   asynchronously by the pool's answer (the result relay archives the ``BacktestRunResult`` and completes
   the activity by workflow and activity id, as for the cycle's forecasts). At most ``max_in_flight`` runs
   are queued at once; more pool processes, on any machine, take them in parallel. A run that takes longer
   than ``run_timeout_s`` is queued again under the same task id: the pool answers a finished run from the
   archive and never recomputes it;
2. records each run's outcome — finished with its archived result, or failed with the reason the pool or
   Temporal gave (bad data hash, a run that cannot be made, timeouts): failed runs are reported, never
   dropped;
3. ``write_sweep_report``: the runs' folders, a comparison table (CSV, markdown, HTML) and a plot in
   ``<out>/sweeps/<sweep id>/``.

Deterministic and import-light: no I/O and no maths here; the ``progress`` query tells the CLI how far it
is.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.sweep_facts import (
        REQUEST_BACKTEST_RUN,
        RUN_FAILED,
        RUN_FINISHED,
        SWEEP_WORKFLOW,
        WRITE_SWEEP_REPORT,
        BacktestRunTaskInput,
        SweepInput,
        SweepProgress,
        SweepReport,
        SweepReportInput,
        SweepResult,
        SweepRunOutcome,
        SweepRunSpec,
    )
    from pools.replies import WORKER_FAILED_ERROR_TYPE, WorkerAnswer

REPORT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                           maximum_interval=timedelta(seconds=30), maximum_attempts=5)
# Stages of the sweep (the progress query's ``stage``).
STAGE_RUNS = "runs"
STAGE_REPORT = "report"
STAGE_DONE = "done"


def failure_reason(error: BaseException) -> str:
    """The deepest message of an activity failure: the pool's error text, or the timeout that ended it."""
    reason = str(error) or type(error).__name__
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError | TimeoutError) and str(cause):
            reason = str(cause)
            if isinstance(cause, TimeoutError):
                reason = f"no answer from the backtest pool in time ({cause})"
        cause = cause.__cause__
    return reason


@workflow.defn(name=SWEEP_WORKFLOW)
class BacktestSweep:
    """Fan a grid of backtest runs out over the backtest pool and collect their results and comparison."""

    def __init__(self) -> None:
        self._sweep_id = ""
        self._total = 0
        self._in_flight = 0
        self._outcomes: list[SweepRunOutcome] = []
        self._started_at = ""
        self._stage = STAGE_RUNS

    @workflow.query
    def progress(self) -> SweepProgress:
        """Runs in all, finished, failed and in flight, when the sweep started and its stage."""
        return SweepProgress(
            sweep_id=self._sweep_id, total=self._total,
            finished=sum(1 for o in self._outcomes if o.status == RUN_FINISHED),
            failed=sum(1 for o in self._outcomes if o.status == RUN_FAILED),
            in_flight=self._in_flight, started_at=self._started_at, stage=self._stage)

    @workflow.query
    def outcomes(self) -> list[SweepRunOutcome]:
        """The outcomes of the runs ended so far, in the order they ended."""
        return list(self._outcomes)

    @workflow.run
    async def run(self, sweep: SweepInput) -> SweepResult:
        self._sweep_id, self._total = sweep.sweep_id, len(sweep.runs)
        self._started_at = workflow.now().isoformat()
        if sweep.max_in_flight < 1:
            raise ApplicationError(f"max_in_flight must be at least 1, got {sweep.max_in_flight}",
                                   non_retryable=True)
        run_ids = [run.run_id for run in sweep.runs]
        if len(set(run_ids)) != len(run_ids):
            raise ApplicationError("a sweep names one run twice: each run id must appear once", non_retryable=True)
        slots = asyncio.Semaphore(sweep.max_in_flight)

        async def bounded(run: SweepRunSpec) -> SweepRunOutcome:
            async with slots:
                return await self._run_one(sweep, run)

        by_run = await asyncio.gather(*(bounded(run) for run in sweep.runs))
        self._stage = STAGE_REPORT
        finished_at = workflow.now().isoformat()
        report: SweepReport = await workflow.execute_activity(
            WRITE_SWEEP_REPORT,
            SweepReportInput(sweep_id=sweep.sweep_id, out_folder=sweep.out_folder, outcomes=tuple(by_run),
                             started_at=self._started_at, finished_at=finished_at),
            result_type=SweepReport, start_to_close_timeout=timedelta(minutes=10), retry_policy=REPORT_RETRY,
            summary=f"comparison of {len(by_run)} runs into {sweep.out_folder}/sweeps/{sweep.sweep_id}")
        self._stage = STAGE_DONE
        return SweepResult(sweep_id=sweep.sweep_id, outcomes=tuple(by_run), report=report,
                           started_at=self._started_at, finished_at=finished_at)

    async def _run_one(self, sweep: SweepInput, run: SweepRunSpec) -> SweepRunOutcome:
        self._in_flight += 1
        try:
            answer: WorkerAnswer = await workflow.execute_activity(
                REQUEST_BACKTEST_RUN,
                BacktestRunTaskInput(sweep_id=sweep.sweep_id, run_id=run.run_id, request_key=run.request_key),
                result_type=WorkerAnswer,
                activity_id=f"run-{run.run_id}",
                start_to_close_timeout=timedelta(seconds=sweep.run_timeout_s),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                                         maximum_attempts=max(1, sweep.run_attempts),
                                         non_retryable_error_types=[WORKER_FAILED_ERROR_TYPE]),
                summary=f"backtest run {run.label} ({run.run_id}) on the backtest pool (SQS)",
            )
            outcome = SweepRunOutcome(run_id=run.run_id, label=run.label, status=RUN_FINISHED,
                                      result_key=answer.archive_key, finished_at=workflow.now().isoformat(),
                                      wall_time_s=answer.compute_ms / 1000.0)
        except ActivityError as error:
            outcome = SweepRunOutcome(run_id=run.run_id, label=run.label, status=RUN_FAILED,
                                      reason=failure_reason(error), finished_at=workflow.now().isoformat())
        finally:
            self._in_flight -= 1
        self._outcomes.append(outcome)
        return outcome
