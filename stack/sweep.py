"""``vpp backtest sweep``: submit a grid of backtest runs to the platform's own engine and follow it.

:func:`plan_sweep` loads the grid's data (hashing every file) and expands the grid into runs with their
deterministic ids (:func:`backtest.sweep.expand_grid`): bad input is refused here, before anything starts.
:func:`submit_sweep` archives one ``BacktestRunRequest`` per run (under the sweep's id) and starts the
``BacktestSweep`` workflow (id = the sweep id, so the same grid is the same sweep: a sweep already running is
followed, not started twice); :func:`follow_sweep` polls its ``progress`` query (runs done / total, failed,
throughput) until it ends. The workflow fans the runs out over the backtest pool (``vpp worker pool backtest``,
any number of processes on any machines) and writes the results into the runs folder.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.sweep import backtest_task_id
from activities.sweep_facts import RUN_FAILED, SweepInput, SweepProgress, SweepResult, SweepRunSpec
from archive import Archive, open_archive
from backtest.pool_task import run_request
from backtest.runs import load_inputs, with_data_price_limits
from backtest.sweep import SweepGrid, SweepRun, expand_grid, sweep_id
from services.temporal_client import connect_temporal
from settings import Settings
from stack.demo import stack_is_running
from workflows.backtest_sweep import BacktestSweep

# Seconds between two progress queries while following a sweep.
FOLLOW_PERIOD_S = 1.0
REQUEST_LABEL_PREFIX = "backtest-request/"


class SweepNotFoundError(LookupError):
    """No sweep workflow with that id on the Temporal server."""


@dataclass(frozen=True, eq=False)
class SweepPlan:
    """A grid expanded: the sweep id and its runs in grid order."""

    sweep_id: str
    runs: tuple[SweepRun, ...]


def plan_sweep(settings: Settings, grid: SweepGrid) -> SweepPlan:
    """Load the grid's data and expand the grid into runs (ids as ``vpp backtest run`` gives them).

    Raises RunError, MmsFormatError, StrategyError, PriceLimitsUnknownError or SweepError for input that
    cannot be run."""
    inputs = load_inputs(list(grid.data))
    runs = expand_grid(grid, with_data_price_limits(settings, inputs), inputs)
    return SweepPlan(sweep_id=sweep_id([run.spec.run_id for run in runs]), runs=tuple(runs))


def archive_requests(archive: Archive, plan: SweepPlan, engine_workers: int) -> tuple[SweepRunSpec, ...]:
    """Archive each run's ``BacktestRunRequest`` (indexed under the sweep id); the workflow's run specs."""
    specs = []
    for run in plan.runs:
        request = run_request(run.spec, request_id=backtest_task_id(plan.sweep_id, run.spec.run_id),
                              engine_workers=engine_workers)
        key = archive.put(request, cycle_id=plan.sweep_id, label=REQUEST_LABEL_PREFIX + run.spec.run_id)
        specs.append(SweepRunSpec(run_id=run.spec.run_id, label=run.label, request_key=key))
    return tuple(specs)


def sweep_input(settings: Settings, plan: SweepPlan, specs: tuple[SweepRunSpec, ...], out: Path) -> SweepInput:
    """The workflow's input: the runs, the runs folder (absolute) and ``[pools]`` concurrency and timeout."""
    pools = settings.pools
    return SweepInput(sweep_id=plan.sweep_id, runs=specs, out_folder=str(Path(out).expanduser().resolve()),
                      max_in_flight=pools.sweep_max_in_flight, run_timeout_s=pools.sweep_run_timeout_s)


async def submit_sweep(client: Client, settings: Settings, archive: Archive, plan: SweepPlan,
                       out: Path) -> WorkflowHandle[BacktestSweep, SweepResult]:
    """Archive the runs' requests and start the sweep (or attach to the one of that id already running)."""
    specs = await asyncio.to_thread(archive_requests, archive, plan, settings.pools.backtest_engine_workers)
    return await client.start_workflow(
        BacktestSweep.run, sweep_input(settings, plan, specs, out), id=plan.sweep_id,
        task_queue=settings.pools.sweep_task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"backtest sweep of {len(specs)} runs")


def throughput_text(progress: SweepProgress, now: datetime) -> str:
    """``done/total runs (failed), N runs/h``: how far a sweep is and its throughput since it started."""
    done = progress.finished + progress.failed
    text = f"{done}/{progress.total} runs ({progress.failed} failed, {progress.in_flight} in flight)"
    if progress.started_at and progress.finished:
        elapsed = (now - datetime.fromisoformat(progress.started_at)).total_seconds()
        if elapsed > 0:
            text += f", {progress.finished * 3600.0 / elapsed:.1f} runs/h"
    return text


async def follow_sweep(handle: WorkflowHandle[BacktestSweep, SweepResult],
                       report: Callable[[SweepProgress], None]) -> SweepResult:
    """``report`` the sweep's progress whenever it changes (polling every :data:`FOLLOW_PERIOD_S`) until it
    ends, and once more when it has ended (a sweep that finishes between two polls still reports its last
    runs); its result (raises the workflow's failure)."""
    result_task = asyncio.ensure_future(handle.result())
    last: tuple[int, int, int] | None = None

    async def poll() -> None:
        nonlocal last
        try:
            progress = await handle.query(BacktestSweep.progress)
        except RPCError:
            return
        if (progress.finished, progress.failed, progress.in_flight) != last:
            last = (progress.finished, progress.failed, progress.in_flight)
            report(progress)

    try:
        while not result_task.done():
            await poll()
            await asyncio.wait({result_task}, timeout=FOLLOW_PERIOD_S)
        result = result_task.result()
        await poll()
        return result
    finally:
        if not result_task.done():
            result_task.cancel()


async def sweep_status(client: Client, sweep_id_text: str) -> tuple[WorkflowExecutionStatus | None, SweepProgress,
                                                                     SweepResult | None]:
    """The sweep's workflow status, progress and (when completed) result; SweepNotFoundError if unknown."""
    handle = client.get_workflow_handle_for(BacktestSweep.run, sweep_id_text)
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise SweepNotFoundError(f"no sweep {sweep_id_text!r} on the Temporal server") from None
        raise
    progress = await handle.query(BacktestSweep.progress)
    result = await handle.result() if description.status == WorkflowExecutionStatus.COMPLETED else None
    return description.status, progress, result


def utc_now() -> datetime:
    """Now (UTC, aware): the reference of throughput figures while following."""
    return datetime.now(UTC)


def _print_progress(console: Console) -> Callable[[SweepProgress], None]:
    def report(progress: SweepProgress) -> None:
        console.print(f"{utc_now():%H:%M:%S} {throughput_text(progress, utc_now())}", highlight=False,
                      soft_wrap=True)

    return report


def print_result(console: Console, result: SweepResult) -> None:
    """The sweep's comparison table, failed runs with their reason, and where the report is."""
    console.print(result.report.table_markdown, markup=False, highlight=False, soft_wrap=True)
    for outcome in result.outcomes:
        if outcome.status == RUN_FAILED:
            console.print(f"failed: {outcome.label} ({outcome.run_id}): {outcome.reason}", markup=False,
                          highlight=False, soft_wrap=True)
    elapsed = (datetime.fromisoformat(result.finished_at) - datetime.fromisoformat(result.started_at)).total_seconds()
    finished = sum(1 for o in result.outcomes if o.status != RUN_FAILED)
    rate = f", {finished * 3600.0 / elapsed:.1f} runs/h" if elapsed > 0 and finished else ""
    console.print(f"sweep {result.sweep_id}: {finished} of {len(result.outcomes)} runs finished in {elapsed:.0f} s"
                  f"{rate}; report: {result.report.folder}", markup=False, highlight=False, soft_wrap=True)


async def _submit_and_follow(settings: Settings, plan: SweepPlan, out: Path, wait: bool, console: Console) -> int:
    client = await connect_temporal(settings)
    handle = await submit_sweep(client, settings, open_archive(settings), plan, out)
    console.print(f"sweep {plan.sweep_id} submitted: {len(plan.runs)} runs on the backtest pool "
                  f"(task queue {settings.pools.sweep_task_queue})", highlight=False, soft_wrap=True)
    if not wait:
        console.print(plan.sweep_id, highlight=False)
        return 0
    result = await follow_sweep(handle, _print_progress(console))
    print_result(console, result)
    return 0 if all(o.status != RUN_FAILED for o in result.outcomes) else 1


def run_sweep(settings: Settings, plan: SweepPlan, out: Path, *, wait: bool, console: Console) -> int:
    """Submit the sweep to the running stack (``vpp up``), or to a stack of its own (Temporal, SQS, PostgreSQL,
    the Temporal worker, the backtest pool and the sweep worker, in a temporary state folder) when none runs;
    follow it and print the table unless ``wait`` is False (then the sweep id is printed). Exit code: 1 when a
    run failed."""
    if stack_is_running(settings):
        return asyncio.run(_submit_and_follow(settings, plan, out, wait, console))
    if not wait:
        raise SweepNotFoundError(f"no running stack at {settings.stack.temporal_address}: --no-wait needs one "
                                 "(start it with vpp up)")
    from stack.supervisor import SWEEP_PARTS, LocalStack

    state_dir = Path(tempfile.mkdtemp(prefix="openvpp-sweep-"))
    own = replace(settings, stack=replace(settings.stack, state_dir=state_dir))
    console.print(f"Starting a local stack for the sweep (state in {state_dir}) …", highlight=False)
    with LocalStack(own, ui=False, parts=SWEEP_PARTS) as stack:
        return asyncio.run(_submit_and_follow(stack.settings, plan, out, wait, console))
