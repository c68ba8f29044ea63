"""The backtest sweep's queueing activity: a run's archived request onto the backtest pool's queue.

The pool's answer completes the activity (async completion through the result relay), exactly as the
cycle's forecast requests are answered. The task id is ``<sweep id>/backtest/<run id>``: a retried activity
sends the same task again, and the pool answers a run that is finished already from the archive.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sweep_facts import REQUEST_BACKTEST_RUN, BacktestRunTaskInput
from archive import Archive
from archive.store import ArchiveError
from pools.sqs import QueueUrls, send_task
from vpp.v1 import worker_pb2

INVALID_SWEEP_INPUT = "InvalidSweepInput"


def backtest_task_id(sweep_id: str, run_id: str) -> str:
    """The task id of run ``run_id`` in sweep ``sweep_id``: the same on every retry."""
    return f"{sweep_id}/backtest/{run_id}"


class SweepActivities:
    """Bound to the archive (the runs' requests) and the SQS client and queues (the backtest queue)."""

    def __init__(self, archive: Archive, sqs: Any, queues: QueueUrls) -> None:
        if not queues.backtest_requests:
            raise ValueError("the sweep activities need the backtest request queue")
        self._archive = archive
        self._sqs = sqs
        self._queues = queues

    def all(self) -> list[Any]:
        """Every activity, for ``Worker(activities=...)``."""
        return [self.request_backtest_run]

    @activity.defn(name=REQUEST_BACKTEST_RUN)
    async def request_backtest_run(self, task: BacktestRunTaskInput) -> None:
        """Queue the archived request of one run on the backtest pool; the pool's answer completes this."""
        try:
            request = await asyncio.to_thread(self._archive.get, task.request_key)
        except (ArchiveError, ValueError) as error:
            raise ApplicationError(f"run {task.run_id}: its request {task.request_key} cannot be read: {error}",
                                   type=INVALID_SWEEP_INPUT, non_retryable=True) from error
        if not isinstance(request, worker_pb2.BacktestRunRequest) or request.run_id != task.run_id:
            raise ApplicationError(f"run {task.run_id}: {task.request_key} is not its BacktestRunRequest",
                                   type=INVALID_SWEEP_INPUT, non_retryable=True)
        info = activity.info()
        reply_to = worker_pb2.ReplyTo(workflow_id=info.workflow_id or "", run_id=info.workflow_run_id or "",
                                      activity_id=info.activity_id)
        backtest_task = worker_pb2.WorkerTask(task_id=backtest_task_id(task.sweep_id, task.run_id), reply_to=reply_to,
                                              backtest=request)
        await asyncio.to_thread(send_task, self._sqs, self._queues, backtest_task)
        activity.raise_complete_async()
