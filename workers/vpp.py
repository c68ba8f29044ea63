"""The VPP Temporal worker: dispatch events, peak shaving and the node-load sampler, on the fleet task queue.

Peak shaving starts ``VppDispatchEvent`` children on its own task queue, so both live on this worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.dispatch import DispatchActivities
from activities.node_load import NodeLoadActivities
from activities.peak_shaving import PeakShavingActivities
from services.temporal_client import connect_temporal
from settings import Settings
from workers.peak_shaving_worker import peak_shaving_activities, peak_shaving_workflows
from workflows.dispatch import VppDispatchEvent
from workflows.node_load_sampler import NodeLoadSampler

logger = logging.getLogger(__name__)


def dispatch_worker(client: Client, task_queue: str, activities: DispatchActivities,
                    peak: PeakShavingActivities | None = None) -> Worker:
    """A worker serving :class:`VppDispatchEvent` (and peak shaving when ``peak`` is given) on ``task_queue``."""
    workflows: list[type] = [VppDispatchEvent]
    callables: list[Callable[..., Any]] = [activities.start_dispatch_event, activities.control_dispatch_event,
                 activities.finish_dispatch_event]
    if peak is not None:
        workflows += [*peak_shaving_workflows(), NodeLoadSampler]
        callables += [*peak_shaving_activities(peak),
                      NodeLoadActivities(peak.gateway_address, peak.database_url).sample_node_load]
    return Worker(client, task_queue=task_queue, workflows=workflows, activities=callables,
                  max_concurrent_activities=50)


async def run_vpp_worker(settings: Settings, database_url: str, stop: asyncio.Event) -> None:
    """Serve the VPP workflows on ``settings.fleet.task_queue`` until ``stop`` is set."""
    client = await connect_temporal(settings)
    gateway = settings.fleet.gateway_address
    activities = DispatchActivities(gateway, database_url)
    peak = PeakShavingActivities(gateway, database_url)
    try:
        async with dispatch_worker(client, settings.fleet.task_queue, activities, peak):
            logger.info("VPP worker ready on task queue %s", settings.fleet.task_queue)
            await stop.wait()
    finally:
        await activities.close()
        await peak.close()
