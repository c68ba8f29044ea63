"""Run AutoBidder cycles at chosen market times through the real workflow (demo, bench, tests).

The cycles are the production ``AutobidderCycle`` workflow on the running stack; only the decision
time is given explicitly instead of being mapped from the wall clock, so a trading hour of January
2021 can be replayed in about a minute.
"""

from __future__ import annotations

import asyncio
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
                       workflow_id: str | None = None, bid_version: int = 1, unit_id: str | None = None,
                       search_attributes: bool = True) -> CycleRun:
    """Run one cycle of ``unit_id`` (default: the first battery unit) deciding at ``decision_time`` (AEST) and
    wait for it to end. ``region`` overrides the unit's region (tests of a region without data);
    ``search_attributes`` False for a Temporal server without the platform's search attributes registered."""
    unit = settings.unit(unit_id) if unit_id else settings.battery_units[0]
    config = replace(cycle_config(unit.cycle, bid_version=bid_version, market_depth=settings.market_depth),
                     search_attributes=search_attributes)
    workflow_id = workflow_id or f"autobidder-{unit.unit_id}-{decision_time:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    cycle_input = CycleInput(unit_id=unit.unit_id, region=region or unit.region, config=config,
                             decision_time=decision_time.isoformat())
    try:
        result = await client.execute_workflow(
            AutobidderCycle.run, cycle_input, id=workflow_id, task_queue=settings.stack.task_queue,
            execution_timeout=timedelta(minutes=10),
            static_summary=f"AutoBidder cycle of {unit.unit_id} deciding at {decision_time:%Y-%m-%d %H:%M:%S} AEST "
                           "(market time given explicitly)")
        return CycleRun(decision_time, workflow_id, result, None)
    except WorkflowFailureError as failure:
        cause = failure.cause
        while getattr(cause, "cause", None) is not None:
            cause = cause.cause  # type: ignore[attr-defined]
        return CycleRun(decision_time, workflow_id, None, str(cause) or str(failure))


async def run_portfolio_cycles_at(client: Client, settings: Settings, decision_time: datetime,
                                  unit_ids: Sequence[str] | None = None, *,
                                  search_attributes: bool = True) -> list[CycleRun]:
    """Run one cycle of every battery unit (or of ``unit_ids``) deciding at ``decision_time`` (AEST), all at
    once, as their schedules start them at the same instant; the runs in unit order."""
    units = list(unit_ids) if unit_ids is not None else [unit.unit_id for unit in settings.battery_units]
    return list(await asyncio.gather(*(run_cycle_at(client, settings, decision_time, unit_id=unit_id,
                                                    search_attributes=search_attributes)
                                       for unit_id in units)))


async def run_cycles(client: Client, settings: Settings, times: Sequence[datetime], *,
                     region: str | None = None) -> list[CycleRun]:
    """Run cycles one after the other (each bids the interval after the previous one's)."""
    return [await run_cycle_at(client, settings, t, region=region) for t in times]
