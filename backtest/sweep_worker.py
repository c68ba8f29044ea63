"""The processes of backtest sweeps: the sweep's Temporal worker and the backtest pool.

* :func:`run_sweep_worker` (``vpp worker sweep``): the ``BacktestSweep`` workflow, its queueing activity
  (:class:`activities.sweep.SweepActivities`) and its report activity
  (:class:`backtest.sweep_report.SweepReportActivities`) on ``[pools] sweep_task_queue``. The runs' answers
  complete its activities through the result relay of the Temporal worker (``vpp worker temporal``).
* :func:`run_backtest_pool` (``vpp worker pool backtest``): one SQS pool process serving backtest runs
  (:func:`backtest.pool_task.backtest_registry`) from the backtest queue. Scale by running more of them, on
  any machine that reaches the queue, the archive and the data.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.worker import Worker

from activities.sweep import SweepActivities
from archive import open_archive
from backtest.pool_task import KIND, backtest_registry
from backtest.sweep_report import SweepReportActivities
from pools.runtime import run_pool
from pools.sqs import queue_urls, sqs_client
from services.temporal_client import connect_temporal
from settings import Settings
from workflows.backtest_sweep import BacktestSweep

logger = logging.getLogger(__name__)


async def run_sweep_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the sweep workflow and its activities on ``settings.pools.sweep_task_queue`` until ``stop``."""
    client = await connect_temporal(settings)
    archive = open_archive(settings)
    sqs = sqs_client(settings)
    queues = await asyncio.to_thread(queue_urls, sqs, settings)
    activities = [*SweepActivities(archive, sqs, queues).all(), *SweepReportActivities(archive).all()]
    async with Worker(client, task_queue=settings.pools.sweep_task_queue, workflows=[BacktestSweep],
                      activities=activities, max_concurrent_activities=100):
        logger.info("sweep worker ready on task queue %s (%s)", settings.pools.sweep_task_queue,
                    settings.stack.temporal_address)
        await stop.wait()
    logger.info("sweep worker stopped")


async def run_backtest_pool(settings: Settings, stop: asyncio.Event) -> None:
    """Serve backtest runs from the backtest queue until ``stop`` is set (one run at a time)."""
    await run_pool(settings, KIND, stop, registry=backtest_registry(settings, open_archive(settings)))
