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
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.temporal_env import time_skipping_server_path
from workers.replies import WorkerAnswer
from workflows.distribution import (
    DistributionInput,
    FleetBidOutcome,
    FleetBidRequest,
    PriceForecastDistribution,
    Published,
    PublishRequest,
    SnapshotRequest,
)
from workflows.facts import ForecastTaskInput

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
                                   estimated_sites=5)

        return [fetch, forecast, publish, bid]


async def _run(client: Client, stand_ins: StandIns, collection_s: float = 60.0) -> Any:
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    request = DistributionInput(region="SA1", vpp_node="region-SA1", fleet_unit_id="VPP1",
                                plan_collection_s=collection_s, hierarchy="electrical",
                                decision_time=DECISION_TIME)
    async with Worker(client, task_queue=task_queue, workflows=[PriceForecastDistribution],
                      activities=stand_ins.activities()):
        return await client.execute_workflow(PriceForecastDistribution.run, request,
                                             id=f"distribution-{uuid.uuid4().hex[:8]}", task_queue=task_queue)


async def test_a_run_forecasts_publishes_waits_for_plans_then_bids(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns()
    result = await _run(env.client, stand_ins, collection_s=90.0)
    assert [name for name, _ in stand_ins.calls] == ["fetch", "forecast", "publish", "bid"]
    fetch, forecast, publish, bid = (call for _, call in stand_ins.calls)
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


async def test_an_invalid_fleet_bid_is_reported_not_hidden(env: WorkflowEnvironment) -> None:
    result = await _run(env.client, StandIns(bid_valid=False))
    assert not result.fleet_bid.valid and result.fleet_bid.violations == ("V6: too much",)


async def test_a_failed_publication_fails_the_run_and_bids_nothing(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(fail_publish=True)
    with pytest.raises(WorkflowFailureError):
        await _run(env.client, stand_ins)
    assert [name for name, _ in stand_ins.calls] == ["fetch", "forecast", "publish"]
