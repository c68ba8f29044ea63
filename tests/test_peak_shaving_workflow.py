"""The PeakShaving workflow on the time-skipping test server.

Real: PostgreSQL (the node's load history), the forecast activity reading it and the planning activity.
Stand-ins: the fleet capacity activity (no fleet gateway here) and the child ``VppDispatchEvent`` — a stub
workflow of the same name that reports the input it was started with to a recording activity and returns.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.dispatch_facts import DispatchEventInput
from activities.peak_shaving import PeakShavingActivities, forecast_from_history
from activities.peak_shaving_facts import (
    FleetCapacity,
    FleetCapacityInput,
    NodeForecastInput,
    PeakShavingInput,
    PeakShavingPlan,
)
from algorithms.fleet.peak_shaving import PeakShavingRules, plan_peak_shaving
from models.db import migrate
from models.node_load import read_node_load, record_node_load
from simulator.load_history import synthetic_node_load_history
from simulator.population import make_site_parameters
from tests.conftest import temporary_database
from tests.temporal_env import time_skipping_server_path
from workers.peak_shaving_worker import peak_shaving_activities, peak_shaving_workflows
from workflows.peak_shaving import INSUFFICIENT_HISTORY, INVALID_PEAK_SHAVING, PeakShaving, event_id

NODE = "feeder-SA1-000-f00"
START_MS = int(datetime(2023, 12, 31, 13, 30, tzinfo=UTC).timestamp() * 1000)  # 2024-01-01 00:00 Adelaide
ORIGIN_MS = START_MS + 28 * 86_400_000 + 12 * 3_600_000  # 12:00 Adelaide after 28 days
CAPACITY = FleetCapacity(site_count=100, reporting_sites=98, energy_available_mwh=0.6, energy_lower_mwh=0.5,
                         max_discharge_mw=0.5, description="0.6 MWh available to discharge (±0.1 MWh)")


@workflow.defn(name="VppDispatchEvent", sandboxed=False)
class StubDispatchEvent:
    """Stands in for the dispatch event: reports its input, then ends."""

    @workflow.run
    async def run(self, event: DispatchEventInput) -> str:
        await workflow.execute_activity("record_dispatch_start", event, start_to_close_timeout=timedelta(seconds=10))
        return event.event_id


@dataclass
class StandIns:
    started: list[DispatchEventInput] = field(default_factory=list)
    capacity_calls: list[FleetCapacityInput] = field(default_factory=list)

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="record_dispatch_start")
        async def record(event: DispatchEventInput) -> None:
            self.started.append(event)

        @activity.defn(name="node_fleet_capacity")
        async def capacity(request: FleetCapacityInput) -> FleetCapacity:
            self.capacity_calls.append(request)
            return CAPACITY

        return [record, capacity]


@pytest.fixture(scope="module")
def history_database(server_url: str) -> Iterator[str]:
    with temporary_database(server_url) as url:
        migrate(url)
        history = synthetic_node_load_history(NODE, make_site_parameters(100, 7), START_MS, days=28.5, seed=1)
        with psycopg.connect(url) as conn:
            record_node_load(conn, history)
        yield url


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=time_skipping_server_path()) as environment:
        yield environment


async def _run(client: Client, database_url: str, stand_ins: StandIns, request: PeakShavingInput,
               task_queue: str) -> tuple[PeakShavingPlan, PeakShavingPlan | None]:
    real = PeakShavingActivities("127.0.0.1:1", database_url)  # the gateway is never called here
    # The real forecast and planning; the capacity (fleet gateway) is a stand-in.
    real_activities = [a for a in peak_shaving_activities(real) if a.__name__ != "node_fleet_capacity"]
    assert {a.__name__ for a in real_activities} == {"forecast_node_load", "plan_peak_shaves"}
    async with Worker(client, task_queue=task_queue, workflows=[*peak_shaving_workflows(), StubDispatchEvent],
                      activities=[*real_activities, *stand_ins.activities()]):
        handle = await client.start_workflow(PeakShaving.run, request, id=f"peak-{uuid.uuid4().hex[:8]}",
                                             task_queue=task_queue)
        plan = await handle.result()
        queried = await handle.query(PeakShaving.plan)
    await real.close()
    return plan, queried


def _expected_shaves(database_url: str, request: PeakShavingInput) -> list[Any]:
    with psycopg.connect(database_url) as conn:
        history = read_node_load(conn, NODE, ORIGIN_MS - 28 * 86_400_000, ORIGIN_MS)
    forecast, _ = forecast_from_history(
        NodeForecastInput(node_id=NODE, load_column="net_load_mw", origin_ms=ORIGIN_MS, history_days=28.0,
                          horizon_intervals=288, quantiles=(0.1, 0.5, 0.9)),
        history.interval_end_ms, history.net_load_mw)
    return plan_peak_shaving(forecast, request.threshold_mw, CAPACITY.energy_lower_mwh, CAPACITY.max_discharge_mw,
                             request.rules)


async def test_the_workflow_starts_one_event_per_shave_and_lockout_and_never_twice(
        env: WorkflowEnvironment, history_database: str) -> None:
    request = PeakShavingInput(node_id=NODE, threshold_mw=0.085, hierarchy="electrical", origin_ms=ORIGIN_MS,
                               rules=PeakShavingRules(lockout_s=5400.0))
    expected = _expected_shaves(history_database, request)
    assert len(expected) >= 1
    stand_ins = StandIns()
    task_queue = f"peak-{uuid.uuid4().hex[:8]}"
    plan, queried = await _run(env.client, history_database, stand_ins, request, task_queue)

    assert plan.stage == "done" and queried == plan
    assert list(plan.shaves) == expected
    assert plan.peaks_found >= len(expected)
    assert plan.energy_budget_mwh == pytest.approx(0.5 * 0.9)
    assert plan.max_discharge_mw == 0.5 and plan.fleet == CAPACITY.description
    assert stand_ins.capacity_calls == [FleetCapacityInput(node_id=NODE, hierarchy="electrical", as_of_ms=ORIGIN_MS)]
    wanted = []
    for shave in expected:
        wanted.append(DispatchEventInput(
            event_id=event_id("shave", NODE, shave.start_ms), node_id=NODE, target_mw=shave.target_mw,
            start_ms=shave.start_ms, end_ms=shave.end_ms, hierarchy="electrical", control_interval_s=2.0,
            max_abs_target_mw=0.5))
        wanted.append(DispatchEventInput(
            event_id=event_id("lockout", NODE, shave.end_ms), node_id=NODE, target_mw=0.0, start_ms=shave.end_ms,
            end_ms=shave.end_ms + 5_400_000, hierarchy="electrical", control_interval_s=2.0, max_abs_target_mw=0.5))
    assert sorted(stand_ins.started, key=lambda e: e.event_id) == sorted(wanted, key=lambda e: e.event_id)
    assert [e.event_id for e in plan.events] == [w.event_id for w in wanted]
    assert all(e.started for e in plan.events)
    assert plan.events[0].event_id == f"peak-shave-{NODE}-" + datetime.fromtimestamp(
        expected[0].start_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%MZ")
    # Every shave is followed at once by its 0 MW lockout.
    for shave_event, lockout in zip(plan.events[::2], plan.events[1::2], strict=True):
        assert shave_event.kind == "shave" and lockout.kind == "lockout"
        assert lockout.start_ms == shave_event.end_ms and lockout.target_mw == 0.0

    # A second run of the same plan finds every event there and starts none again.
    again, _ = await _run(env.client, history_database, stand_ins, request, task_queue)
    assert list(again.shaves) == expected
    assert [e.event_id for e in again.events] == [w.event_id for w in wanted]
    assert not any(e.started for e in again.events)
    assert len(stand_ins.started) == len(wanted)


async def test_a_threshold_above_the_forecast_starts_nothing(env: WorkflowEnvironment, history_database: str) -> None:
    stand_ins = StandIns()
    plan, _ = await _run(env.client, history_database, stand_ins,
                         PeakShavingInput(node_id=NODE, threshold_mw=5.0, origin_ms=ORIGIN_MS),
                         f"peak-{uuid.uuid4().hex[:8]}")
    assert plan.stage == "done" and plan.shaves == () and plan.events == () and plan.peaks_found == 0
    assert 0.05 < plan.forecast_peak_mw < 5.0
    assert stand_ins.started == []


def _application_error(failure: WorkflowFailureError) -> ApplicationError:
    cause: BaseException | None = failure.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    assert isinstance(cause, ApplicationError)
    return cause


async def test_a_node_without_history_fails_clearly(env: WorkflowEnvironment, history_database: str) -> None:
    with pytest.raises(WorkflowFailureError) as failure:
        await _run(env.client, history_database, StandIns(),
                   PeakShavingInput(node_id="feeder-without-history", threshold_mw=0.1, origin_ms=ORIGIN_MS),
                   f"peak-{uuid.uuid4().hex[:8]}")
    cause = _application_error(failure.value)
    assert cause.type == INSUFFICIENT_HISTORY and "feeder-without-history" in str(cause)


async def test_a_threshold_the_planning_cannot_use_fails_the_run_at_once(env: WorkflowEnvironment,
                                                                          history_database: str) -> None:
    stand_ins = StandIns()
    with pytest.raises(WorkflowFailureError) as failure:
        await _run(env.client, history_database, stand_ins,
                   PeakShavingInput(node_id=NODE, threshold_mw=math.inf, origin_ms=ORIGIN_MS),
                   f"peak-{uuid.uuid4().hex[:8]}")
    cause = _application_error(failure.value)
    # The planning activity rejects it without retrying, and no dispatch event is started.
    assert cause.type == INVALID_PEAK_SHAVING and "threshold_mw must be finite" in str(cause)
    assert NODE in str(cause) and cause.non_retryable
    assert stand_ins.started == []
