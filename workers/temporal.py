"""The Temporal worker process: the AutoBidder workflow, the operator controls (UnitOperator), the
price-forecast distribution, their activities and the SQS result relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.cycle import CycleActivities
from activities.distribution import DistributionActivities
from activities.operator import OperatorActivities, operator_signal, schedule_trigger
from archive import Archive, open_archive
from models.connections import Connections
from pools.result_relay import run_result_relay
from pools.sqs import queue_urls, sqs_client
from services.temporal_client import connect_temporal
from settings import Settings
from workers.workflow_code import keep_workflow_code
from workflows.autobidder import AutobidderCycle
from workflows.distribution import PriceForecastDistribution
from workflows.operator import UnitOperator

logger = logging.getLogger(__name__)

# Threads for the worker's blocking I/O (archive reads and writes with their fsyncs, boto3's SQS calls, the
# relay's long poll): asyncio's default pool has os.cpu_count() + 4 of them (6 on two cores), and a portfolio's
# units deciding at once queue a few hundred such calls behind them. The threads mostly wait on disks and
# sockets, so they cost little CPU.
IO_THREADS = 64


async def run_temporal_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the cycle workflow and activities on the task queue, and relay worker results, until ``stop``."""
    keep_workflow_code()  # the sandbox re-imports the workflow modules for every run: compile them once
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="worker-io"))
    client = await connect_temporal(settings)
    archive = open_archive(settings)
    sqs = sqs_client(settings)
    queues = await asyncio.to_thread(queue_urls, sqs, settings)
    if settings.database_url is None:
        raise RuntimeError("the Temporal worker needs DATABASE_URL (the stack sets it for its children)")
    connections = Connections(settings.database_url)
    await connections.open_pool()  # the cycles' stages reuse connections instead of opening three per cycle
    activities: CycleActivities | None = None
    try:
        activities = CycleActivities(settings, archive, sqs, queues, connections=connections,
                                     tell_operator=operator_signal(client))
        await _serve(settings, settings.database_url, client, archive, sqs, activities, stop)
    finally:
        if activities is not None:
            await activities.channels.close()
        await connections.close()
    logger.info("temporal worker stopped")


async def _serve(settings: Settings, database_url: str, client: Client, archive: Archive, sqs: Any,
                 activities: CycleActivities, stop: asyncio.Event) -> None:
    """Run the worker and the result relay until ``stop`` (or until the relay fails)."""
    operator = OperatorActivities(database_url, schedule_trigger(settings, client))
    distribution = DistributionActivities(settings, archive, database_url)
    async with Worker(client, task_queue=settings.stack.task_queue,
                      workflows=[AutobidderCycle, UnitOperator, PriceForecastDistribution],
                      activities=[*activities.all(), *operator.all(), *distribution.all()],
                      max_concurrent_activities=50):
        relay = asyncio.create_task(run_result_relay(settings, client, archive, stop, sqs=sqs,
                                                     shared=activities.shared_requests))
        logger.info("temporal worker ready on task queue %s (%s)", settings.stack.task_queue,
                    settings.stack.temporal_address)
        stop_wait = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({relay, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if relay in done and not stop.is_set():
            stop_wait.cancel()
            relay.result()  # a relay that died is a failed worker: surface its error
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
