"""Run AutoBidder cycles at chosen market times through the real workflow (demo, bench, tests).

The cycles are the production ``AutobidderCycle`` workflow on the running stack; only the decision
time is given explicitly instead of being mapped from the wall clock, so a trading hour of January
2021 can be replayed in about a minute.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from temporalio.client import Client, WorkflowFailureError

from activities.cycle_facts import CycleInput, CycleResult
from settings import Settings
from stack.schedule import cycle_config
from workflows.autobidder import AutobidderCycle


@dataclass(frozen=True)
class CycleRun:
    """One cycle run: its result, or why it failed (ApplicationError message)."""

    decision_time: datetime
    workflow_id: str
    result: CycleResult | None
    failure: str | None


def decision_times(first_interval_start: datetime, intervals: int, offset_s: int) -> list[datetime]:
    """Decision times (naive AEST) of consecutive cycles, ``offset_s`` after each interval boundary."""
    return [first_interval_start + timedelta(minutes=5 * i, seconds=offset_s) for i in range(intervals)]


async def run_cycle_at(client: Client, settings: Settings, decision_time: datetime, *, region: str | None = None,
                       workflow_id: str | None = None, bid_version: int = 1) -> CycleRun:
    """Run one cycle deciding at ``decision_time`` (AEST) and wait for it to end."""
    cycle = settings.cycle
    config = replace(cycle_config(cycle, bid_version=bid_version))
    workflow_id = workflow_id or f"autobidder-{cycle.unit_id}-{decision_time:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    cycle_input = CycleInput(unit_id=cycle.unit_id, region=region or cycle.region, config=config,
                             decision_time=decision_time.isoformat())
    try:
        result = await client.execute_workflow(
            AutobidderCycle.run, cycle_input, id=workflow_id, task_queue=settings.stack.task_queue,
            execution_timeout=timedelta(minutes=10),
            static_summary=f"AutoBidder cycle of {cycle.unit_id} deciding at {decision_time:%Y-%m-%d %H:%M:%S} AEST "
                           "(market time given explicitly)")
        return CycleRun(decision_time, workflow_id, result, None)
    except WorkflowFailureError as failure:
        cause = failure.cause
        while getattr(cause, "cause", None) is not None:
            cause = cause.cause  # type: ignore[attr-defined]
        return CycleRun(decision_time, workflow_id, None, str(cause) or str(failure))


async def run_cycles(client: Client, settings: Settings, times: Sequence[datetime], *,
                     region: str | None = None) -> list[CycleRun]:
    """Run cycles one after the other (each bids the interval after the previous one's)."""
    return [await run_cycle_at(client, settings, t, region=region) for t in times]
