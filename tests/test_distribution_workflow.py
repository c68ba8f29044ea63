"""The 15-minute distribution workflow on the time-skipping test server, its activities stood in for:
order of the steps, the market → wall-clock mapping of the forecast, the plan-collection wait, and a
failing step failing the run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.cycle_facts import ForecastTaskInput
from activities.dispatch_facts import DispatchEventInput
from activities.distribution_facts import (
    DistributionInput,
    FleetBidOutcome,
    FleetBidRequest,
    FleetInstruction,
    FleetSubmitted,
    InstructionRequest,
    Published,
    PublishRequest,
    SnapshotRequest,
    SubmitFleetBidRequest,
)
from pools.replies import WorkerAnswer
from tests.temporal_env import time_skipping_server_path
from tests.test_autobidder_workflow import DEFAULT_CYCLE
from workflows.distribution import PriceForecastDistribution

DECISION_TIME = "2021-01-15T17:32:00"


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=time_skipping_server_path()) as environment:
        yield environment


@dataclass
class StandIns:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    bid_valid: bool = True
    fail_publish: bool = False
    market_status: str = "ACCEPTED"

    def activities(self) -> list[Any]:
        @activity.defn(name="fetch_distribution_snapshot")
        async def fetch(request: SnapshotRequest) -> str:
            self.calls.append(("fetch", request))
            return "snapshot-key"

        @activity.defn(name="request_forecast")
        async def forecast(task: ForecastTaskInput) -> WorkerAnswer:
            self.calls.append(("forecast", task))
            return WorkerAnswer(task_id="t", kind="forecast", archive_key="forecast-key", status="OK",
                                status_reason="", compute_ms=12.0)

        @activity.defn(name="publish_price_forecast")
        async def publish(request: PublishRequest) -> Published:
            self.calls.append(("publish", request))
            if self.fail_publish:
                raise ApplicationError("forecast unusable", type="InvalidDistributionInput", non_retryable=True)
            return Published(version=request.published_at_ms // 60_000, published=True, streams_pushed=3,
                             sites_pushed=300, bytes_pushed=30_000, poll_sites=0, forecast_key="site-forecast")

        @activity.defn(name="bid_fleet_plans")
        async def bid(request: FleetBidRequest) -> FleetBidOutcome:
            self.calls.append(("bid", request))
            return FleetBidOutcome(valid=self.bid_valid, violations=() if self.bid_valid else ("V6: too much",),
                                   summary="VPP1 bid", aggregate="1.0 MW planned export", bid_key="bid-key",
                                   expected_sites=300, current_version_sites=290, stale_version_sites=5,
                                   estimated_sites=5, registered_power_mw=1.5)

        @activity.defn(name="submit_fleet_bid")
        async def submit(request: SubmitFleetBidRequest) -> FleetSubmitted:
            self.calls.append(("submit", request))
            accepted = self.market_status == "ACCEPTED"
            return FleetSubmitted(bid_id="VPP1/x", status=self.market_status,
                                  reasons=() if accepted else ("V2: over capacity",),
                                  dispatch_mw=-0.4 if accepted else None,
                                  energy_price_per_mwh=-20.0 if accepted else None)

        @activity.defn(name="fleet_dispatch_instruction")
        async def instruction(request: InstructionRequest) -> FleetInstruction:
            self.calls.append(("instruction", request))
            later = {"2021-01-15T17:45:00": 0.7, "2021-01-15T17:50:00": None}[request.dispatch_interval]
            return FleetInstruction(dispatch_mw=later, energy_price_per_mwh=90.0 if later is not None else None)

        return [fetch, forecast, publish, bid, submit, instruction]


DISPATCHED: list[DispatchEventInput] = []


@workflow.defn(name="VppDispatchEvent", sandboxed=False)
class RecordingDispatchEvent:
    """Stands in for the VPP's dispatch event on its own task queue: records what it was asked."""

    @workflow.run
    async def run(self, event: DispatchEventInput) -> None:
        DISPATCHED.append(event)


async def _run(client: Client, stand_ins: StandIns, collection_s: float = 60.0, dispatch: bool = False,
               storm_warning: bool = False, dispatch_intervals: int = 1) -> Any:
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    vpp_queue = f"vpp-{uuid.uuid4().hex[:8]}"
    request = DistributionInput(region="SA1", vpp_node="region-SA1", fleet_unit_id="VPP1", config=DEFAULT_CYCLE,
                                plan_collection_s=collection_s, hierarchy="electrical",
                                decision_time=DECISION_TIME, dispatch_task_queue=vpp_queue if dispatch else "",
                                storm_warning=storm_warning, dispatch_intervals=dispatch_intervals)
    async with Worker(client, task_queue=task_queue, workflows=[PriceForecastDistribution],
                      activities=stand_ins.activities()), \
            Worker(client, task_queue=vpp_queue, workflows=[RecordingDispatchEvent]):
        return await client.execute_workflow(PriceForecastDistribution.run, request,
                                             id=f"distribution-{uuid.uuid4().hex[:8]}", task_queue=task_queue)


async def test_a_run_forecasts_publishes_waits_for_plans_then_bids(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns()
    result = await _run(env.client, stand_ins, collection_s=90.0)
    assert [name for name, _ in stand_ins.calls] == ["fetch", "forecast", "publish", "bid", "submit"]
    fetch, forecast, publish, bid, submit = (call for _, call in stand_ins.calls)
    # Decided in the interval ending 17:35: forecasts start with the interval ending 17:40.
    assert fetch.first_interval == "2021-01-15T17:40:00" and fetch.as_of == DECISION_TIME
    assert forecast.product == "ENERGY" and forecast.snapshot_key == "snapshot-key"
    assert publish.forecast_key == "forecast-key"
    # The forecast's first interval starts at 17:35 market time, 3 minutes after the decision: the sites
    # see it start 3 minutes after the run started (wall clock).
    assert publish.start_ms - publish.published_at_ms == 3 * 60_000
    assert bid.version == result.version == publish.published_at_ms // 60_000
    # The bid is offered after the plan-collection wait (market time advanced with the wall clock).
    offered = datetime.fromisoformat(bid.offer_time) - datetime.fromisoformat(DECISION_TIME)
    assert offered >= timedelta(seconds=90)
    wall_of_market = (datetime.fromisoformat("2021-01-15T17:35:00") - timedelta(hours=10)).timestamp() * 1000
    assert bid.market_offset_ms == pytest.approx(wall_of_market - publish.start_ms, abs=1)
    assert result.fleet_bid.valid and result.published.sites_pushed == 300
    assert submit.bid_key == "bid-key" and submit.dispatch_interval == "2021-01-15T17:40:00"
    assert result.submitted.status == "ACCEPTED" and result.dispatch_event_ids == ()  # no VPP queue given


async def test_an_invalid_fleet_bid_is_reported_and_never_submitted(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(bid_valid=False)
    result = await _run(env.client, stand_ins, dispatch=True)
    assert not result.fleet_bid.valid and result.fleet_bid.violations == ("V6: too much",)
    assert "submit" not in [name for name, _ in stand_ins.calls]
    assert result.submitted is None and result.dispatch_event_ids == ()


async def test_the_markets_instruction_flows_down_as_a_dispatch_event_over_the_interval(
        env: WorkflowEnvironment) -> None:
    DISPATCHED.clear()
    stand_ins = StandIns()
    result = await _run(env.client, stand_ins, collection_s=30.0, dispatch=True)
    publish = next(call for name, call in stand_ins.calls if name == "publish")
    [event_id] = result.dispatch_event_ids
    assert event_id.startswith("fleet-dispatch-VPP1-20210115T1735-")
    handle = env.client.get_workflow_handle(event_id)
    await handle.result()
    [event] = DISPATCHED
    assert (event.node_id, event.target_mw, event.hierarchy) == ("region-SA1", -0.4, "electrical")
    assert event.max_abs_target_mw == 1.5
    # The interval 17:35–17:40 (market) is the forecast's first interval: it starts at the forecast's
    # wall-clock start, or now if that has passed, and ends 5 minutes after that start.
    assert event.end_ms == publish.start_ms + 300_000 and event.start_ms >= publish.start_ms


async def test_a_storm_warning_goes_out_with_the_forecast(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns()
    await _run(env.client, stand_ins, storm_warning=True)
    publish = next(call for name, call in stand_ins.calls if name == "publish")
    assert publish.storm_warning


async def test_a_rejected_fleet_bid_dispatches_nothing(env: WorkflowEnvironment) -> None:
    result = await _run(env.client, StandIns(market_status="REJECTED"), dispatch=True)
    assert result.submitted.status == "REJECTED" and result.submitted.reasons == ("V2: over capacity",)
    assert result.dispatch_event_ids == ()


async def test_a_failed_publication_fails_the_run_and_bids_nothing(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(fail_publish=True)
    with pytest.raises(WorkflowFailureError):
        await _run(env.client, stand_ins)
    assert [name for name, _ in stand_ins.calls] == ["fetch", "forecast", "publish"]


async def test_each_following_interval_is_dispatched_when_it_starts_with_the_markets_instruction(
        env: WorkflowEnvironment) -> None:
    DISPATCHED.clear()
    stand_ins = StandIns()
    result = await _run(env.client, stand_ins, collection_s=30.0, dispatch=True, dispatch_intervals=3)
    publish = next(call for name, call in stand_ins.calls if name == "publish")
    asked = [call.dispatch_interval for name, call in stand_ins.calls if name == "instruction"]
    assert asked == ["2021-01-15T17:45:00", "2021-01-15T17:50:00"]
    first, second, third = result.dispatch_event_ids
    assert first and second and third == ""  # the market gave no instruction for the third interval
    for event_id in (first, second):
        await env.client.get_workflow_handle(event_id).result()
    events = sorted(DISPATCHED, key=lambda event: event.end_ms)
    assert [event.target_mw for event in events] == [-0.4, 0.7]
    # The second interval (17:40–17:45) is dispatched from its start (the workflow slept until then), to its end.
    assert 0 <= events[1].start_ms - (publish.start_ms + 300_000) < 1_000
    assert events[1].end_ms == publish.start_ms + 600_000
