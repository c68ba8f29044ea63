"""The AutoBidder workflow on the time-skipping test server, with stand-in activities.

The stand-ins record what the workflow asked for, so these tests pin the orchestration: stage order,
late-data waiting and cut-off, gate closure, invalid bids never submitted, failures recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.cycle_facts import (
    BidBuilt,
    BidSubmitted,
    BuildBidInput,
    CycleConfig,
    CycleInput,
    FetchInput,
    ForecastsAnswered,
    ForecastsInput,
    ForecastTaskInput,
    MarketFetched,
    OptimisationTaskInput,
    OutcomeRecorded,
    RecordInput,
    SubmitInput,
)
from pools.replies import WORKER_FAILED_ERROR_TYPE, WorkerAnswer
from settings import load_settings
from stack.schedule import cycle_config
from tests.temporal_env import time_skipping_server_path
from workflows.autobidder import BID_REJECTED, GATE_CLOSURE_MISSED, NO_VALID_BID, AutobidderCycle

PRODUCTS = ("ENERGY", "RAISE6SEC", "LOWERREG")
DECISION_TIME = "2021-01-15T17:30:30"
# The cycle's configuration as the schedule builds it from the settings (settings/default.toml), without
# search attributes (the time-skipping test server cannot register them).
DEFAULT_CYCLE = replace(cycle_config(load_settings(environ={}).cycle), search_attributes=False)


@dataclass
class StandIns:
    """Stand-in activities with the production names; behaviour is switched per test."""

    fetch_calls: list[FetchInput] = field(default_factory=list)
    forecast_calls: list[ForecastTaskInput] = field(default_factory=list)
    # The one-activity forecast stage (every product at once, requests shared by the region's units).
    forecasts_calls: list[ForecastsInput] = field(default_factory=list)
    optimise_plan_calls: int = 0
    submits: list[SubmitInput] = field(default_factory=list)
    records: list[RecordInput] = field(default_factory=list)
    late_fetches: int = 0
    bid_valid: bool = True
    forecast_fails: bool = False
    market_rejects: bool = False
    standing_bid: str | None = None
    # "due": a DAILY bid for the next trading day is decided with the interval's bid; "none passed": it was
    # due but no candidate passed validation.
    daily: str | None = None
    daily_rejected: bool = False
    daily_fails: bool = False
    # Live mode: the record stage's AEMO dispatch flags and the earlier intervals it settled.
    dispatch_source: str = ""
    dispatch_flags: tuple[str, ...] = ()
    settled_earlier: tuple[str, ...] = ()

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="fetch_market_snapshot")
        async def fetch(request: FetchInput) -> MarketFetched:
            self.fetch_calls.append(request)
            known = len(self.fetch_calls) > self.late_fetches or request.use_estimates
            quality = "ON_TIME" if len(self.fetch_calls) > self.late_fetches else (
                "ESTIMATED" if request.use_estimates else "LATE")
            return MarketFetched(snapshot_key=f"sha256:snap{len(self.fetch_calls)}", latest_quality=quality,
                                 latest_interval="2021-01-15T17:30:00", latest_known=known, products=PRODUCTS,
                                 quality_notes=(), state_of_charge_mwh=97.0, net_mw=0.0, as_of=request.as_of)

        @activity.defn(name="request_forecast")
        async def forecast(task: ForecastTaskInput) -> WorkerAnswer:
            self.forecast_calls.append(task)
            if self.forecast_fails:
                raise ApplicationError("invalid_request: no history", type=WORKER_FAILED_ERROR_TYPE,
                                       non_retryable=True)
            return WorkerAnswer(task_id=f"{task.cycle_id}/forecast/{task.product}", kind="forecast",
                                archive_key=f"sha256:fc-{task.product}", status="OK", status_reason="",
                                compute_ms=12.0)

        @activity.defn(name="request_forecasts")
        async def forecasts(task: ForecastsInput) -> ForecastsAnswered:
            self.forecasts_calls.append(task)
            if self.forecast_fails:
                raise ApplicationError("invalid_request: no history", type=WORKER_FAILED_ERROR_TYPE,
                                       non_retryable=True)
            return ForecastsAnswered(answers=tuple(
                WorkerAnswer(task_id=f"forecast/{task.region}/{product}", kind="forecast",
                             archive_key=f"sha256:fc-{product}", status="OK", status_reason="", compute_ms=12.0)
                for product in task.products), sent=len(task.products), shared=0)

        @activity.defn(name="request_optimisation")
        async def optimise(task: OptimisationTaskInput) -> WorkerAnswer:
            assert len(task.forecast_keys) == len(PRODUCTS)
            return WorkerAnswer(task_id="opt", kind="optimisation", archive_key="sha256:plan",
                                status="OPTIMAL", status_reason="", compute_ms=150.0)

        @activity.defn(name="optimise_plan")
        async def optimise_plan(task: OptimisationTaskInput) -> WorkerAnswer:
            self.optimise_plan_calls += 1
            return await optimise(task)

        @activity.defn(name="build_and_validate_bid")
        async def build(request: BuildBidInput) -> BidBuilt:
            built = build_interval(request)
            if self.daily == "due":
                return replace(built, daily_bid_key="sha256:daily",
                               daily_summary="DAILY bid for trading day 2021-01-16: energy offered in 97 of 288")
            if self.daily == "none passed":
                return replace(built, daily_summary="no DAILY bid for trading day 2021-01-16 passed validation: "
                                                    "daily-default bid V3: bad")
            return built

        def build_interval(request: BuildBidInput) -> BidBuilt:
            if self.standing_bid:
                return BidBuilt(bid_key=None, valid=True, safe_fallback=False, violations=(),
                                summary=f"no material change from bid {self.standing_bid}: it stands",
                                rebid=False, standing_bid_id=self.standing_bid)
            if self.bid_valid:
                return BidBuilt(bid_key="sha256:bid", valid=True, safe_fallback=False, violations=(),
                                summary="bid v1 from plan")
            return BidBuilt(bid_key=None, valid=False, safe_fallback=True,
                            violations=("V6: convexity broken at 17:40",), summary="no valid bid")

        @activity.defn(name="submit_bid")
        async def submit(request: SubmitInput) -> BidSubmitted:
            self.submits.append(request)
            if request.bid_key == "sha256:daily":
                if self.daily_fails:
                    raise ApplicationError("market unreachable", non_retryable=True)
                rejected = self.daily_rejected
                return BidSubmitted(bid_id="HPR1/2021-01-16/001/v0", status="REJECTED" if rejected else "ACCEPTED",
                                    duplicate=False, reasons=("V2: price above cap",) if rejected else (),
                                    received_at="2021-01-15T07:31:00+00:00")
            status = "REJECTED" if self.market_rejects else "ACCEPTED"
            reasons = ("V2: price above cap",) if self.market_rejects else ()
            return BidSubmitted(bid_id="HPR1/2021-01-15/162/v1", status=status, duplicate=False,
                                reasons=reasons, received_at="2021-01-15T07:31:00+00:00")

        @activity.defn(name="record_outcome")
        async def record(request: RecordInput) -> OutcomeRecorded:
            self.records.append(request)
            cleared = request.bid_id is not None and request.status in ("SUBMITTED", "NO_REBID")
            return OutcomeRecorded(cleared=cleared, gen_mw=100.0 if cleared else 0.0, load_mw=0.0,
                                   energy_revenue_dollars=1000.0 if cleared else 0.0, fcas_revenue_dollars=0.0,
                                   state_of_charge_mwh=88.0, price=120.0, dispatch_source=self.dispatch_source,
                                   dispatch_flags=self.dispatch_flags, settled_earlier=self.settled_earlier)

        return [fetch, forecast, forecasts, optimise, optimise_plan, build, submit, record]


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    server = time_skipping_server_path()
    async with await WorkflowEnvironment.start_time_skipping(test_server_existing_path=server) as e:
        yield e


async def run_cycle(client: Client, stand_ins: StandIns, config: CycleConfig | None = None) -> Any:
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    config = replace(config or DEFAULT_CYCLE, search_attributes=False)
    cycle = CycleInput(unit_id="HPR1", region="SA1", config=config, decision_time=DECISION_TIME)
    async with Worker(client, task_queue=task_queue, workflows=[AutobidderCycle],
                      activities=stand_ins.activities()):
        return await client.execute_workflow(AutobidderCycle.run, cycle, id=f"cycle-{uuid.uuid4().hex[:8]}",
                                             task_queue=task_queue)


async def test_cycle_runs_every_stage_in_order_and_bids_the_next_interval(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns()
    result = await run_cycle(env.client, stand_ins)
    assert result.status == "SUBMITTED"
    assert [f.stage for f in result.facts] == ["fetch", "forecast", "optimise", "bid", "submit", "record"]
    # Decided during the interval ending 17:35, so it bids the interval ending 17:40.
    assert result.dispatch_interval == "2021-01-15T17:40:00"
    # One forecast activity for every product (workflow.patched: region-forecasts-one-activity).
    assert stand_ins.forecast_calls == []
    assert [(c.region, c.products, c.first_interval) for c in stand_ins.forecasts_calls] == [
        ("SA1", PRODUCTS, "2021-01-15T17:40:00")]
    assert stand_ins.forecasts_calls[0].snapshot_key == "sha256:snap1"
    # The first fetch is as of the decision time itself, so the region's units fetch the same snapshot.
    assert stand_ins.fetch_calls[0].as_of == DECISION_TIME
    # The plan is asked for in the worker process (a local stage), not completed by the result relay.
    assert stand_ins.optimise_plan_calls == 1
    assert len(stand_ins.submits) == 1
    assert stand_ins.records[-1].status == "SUBMITTED"
    assert result.outcome.cleared and result.outcome.gen_mw == 100.0
    assert result.facts[1].archive_keys == tuple(f"sha256:fc-{p}" for p in PRODUCTS)


async def test_late_data_waits_then_continues_on_time(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(late_fetches=2)
    config = replace(DEFAULT_CYCLE, market_data_poll_s=5, market_data_cutoff_s=60)
    result = await run_cycle(env.client, stand_ins, config)
    assert result.status == "SUBMITTED"
    assert len(stand_ins.fetch_calls) == 3
    assert not any(c.use_estimates for c in stand_ins.fetch_calls)
    # Each poll asks as of a later market time.
    as_of = [datetime.fromisoformat(c.as_of) for c in stand_ins.fetch_calls]
    assert as_of == sorted(as_of) and as_of[-1] - as_of[0] >= timedelta(seconds=10)


async def test_data_still_late_at_cutoff_continues_on_estimates(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(late_fetches=1000)
    config = replace(DEFAULT_CYCLE, market_data_poll_s=5, market_data_cutoff_s=30)
    result = await run_cycle(env.client, stand_ins, config)
    assert result.status == "SUBMITTED"
    assert stand_ins.fetch_calls[-1].use_estimates
    assert not any(c.use_estimates for c in stand_ins.fetch_calls[:-1])
    assert "ESTIMATED" in result.facts[0].summary
    cutoff = datetime.fromisoformat(DECISION_TIME) + timedelta(seconds=30)
    assert datetime.fromisoformat(stand_ins.fetch_calls[-1].as_of) >= cutoff


async def test_gate_closure_passed_fails_clearly_and_never_submits(env: WorkflowEnvironment) -> None:
    # Data stays late and the cut-off is configured past gate closure: the wait eats the whole window.
    stand_ins = StandIns(late_fetches=1000)
    with pytest.raises(WorkflowFailureError) as failure:
        await run_cycle(env.client, stand_ins, replace(DEFAULT_CYCLE, market_data_poll_s=30, market_data_cutoff_s=600))
    assert stand_ins.submits == []
    assert stand_ins.records[-1].status == "FAILED"
    assert isinstance(failure.value.cause, ApplicationError)
    assert failure.value.cause.type == GATE_CLOSURE_MISSED
    assert "gate closure" in (stand_ins.records[-1].failure or "")


async def test_invalid_bid_never_leaves_the_platform(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(bid_valid=False)
    with pytest.raises(WorkflowFailureError) as failure:
        await run_cycle(env.client, stand_ins)
    assert isinstance(failure.value.cause, ApplicationError)
    assert failure.value.cause.type == NO_VALID_BID
    assert "V6" in str(failure.value.cause)
    assert stand_ins.submits == []
    assert stand_ins.records[-1].status == "FAILED" and "V6" in (stand_ins.records[-1].failure or "")


async def test_worker_failure_ends_the_cycle_with_its_reason(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(forecast_fails=True)
    with pytest.raises(WorkflowFailureError):
        await run_cycle(env.client, stand_ins)
    assert stand_ins.submits == []
    assert "no history" in (stand_ins.records[-1].failure or "")


async def test_market_rejection_is_a_failure_with_the_rule(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(market_rejects=True)
    with pytest.raises(WorkflowFailureError) as failure:
        await run_cycle(env.client, stand_ins)
    assert isinstance(failure.value.cause, ApplicationError)
    assert failure.value.cause.type == BID_REJECTED
    assert len(stand_ins.submits) == 1


async def test_state_query_reports_stage_and_facts(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(late_fetches=1000)
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    cycle = CycleInput(unit_id="HPR1", region="SA1", decision_time=DECISION_TIME,
                       config=replace(DEFAULT_CYCLE, market_data_poll_s=5, market_data_cutoff_s=60))
    async with Worker(env.client, task_queue=task_queue, workflows=[AutobidderCycle],
                      activities=stand_ins.activities()):
        handle = await env.client.start_workflow(AutobidderCycle.run, cycle, id=f"q-{uuid.uuid4().hex[:8]}",
                                                 task_queue=task_queue)
        state = await handle.query(AutobidderCycle.state)
        assert state.unit_id == "HPR1" and state.dispatch_interval == "2021-01-15T17:40:00"
        result = await handle.result()
        final = await handle.query(AutobidderCycle.state)
    assert final.stage == "record" and final.bid_id == result.bid_id
    assert final.outcome == "SUBMITTED"
    assert [f.stage for f in final.facts] == [f.stage for f in result.facts]


async def test_a_bid_in_force_that_still_fits_stands_and_is_not_resubmitted(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(standing_bid="HPR1/2021-01-15/161/v1")
    result = await run_cycle(env.client, stand_ins)
    assert result.status == "NO_REBID" and result.bid_id == "HPR1/2021-01-15/161/v1"
    assert stand_ins.submits == []
    assert [f.stage for f in result.facts] == ["fetch", "forecast", "optimise", "bid", "record"]
    assert stand_ins.records[-1].status == "NO_REBID" and stand_ins.records[-1].bid_id == result.bid_id


async def test_a_due_daily_bid_is_submitted_after_the_intervals_bid(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(daily="due")
    result = await run_cycle(env.client, stand_ins)
    assert result.status == "SUBMITTED" and result.bid_id == "HPR1/2021-01-15/162/v1"
    assert [s.bid_key for s in stand_ins.submits] == ["sha256:bid", "sha256:daily"]
    assert [f.stage for f in result.facts] == ["fetch", "forecast", "optimise", "bid", "submit", "daily", "record"]
    daily = result.facts[5]
    assert "DAILY bid for trading day 2021-01-16" in daily.summary
    assert "HPR1/2021-01-16/001/v0 ACCEPTED" in daily.summary
    assert daily.archive_keys == ("sha256:daily",)
    # The record stage gets the interval's bid, not the DAILY bid.
    assert stand_ins.records[-1].bid_id == "HPR1/2021-01-15/162/v1"


async def test_a_daily_bid_is_submitted_when_the_intervals_bid_stands(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(daily="due", standing_bid="HPR1/2021-01-15/161/v1")
    result = await run_cycle(env.client, stand_ins)
    assert result.status == "NO_REBID" and [s.bid_key for s in stand_ins.submits] == ["sha256:daily"]
    assert [f.stage for f in result.facts] == ["fetch", "forecast", "optimise", "bid", "daily", "record"]


async def test_a_rejected_daily_bid_is_recorded_with_its_reasons_and_the_cycle_stands(
        env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(daily="due", daily_rejected=True)
    result = await run_cycle(env.client, stand_ins)
    assert result.status == "SUBMITTED" and len(stand_ins.submits) == 2
    daily = next(f for f in result.facts if f.stage == "daily")
    assert "HPR1/2021-01-16/001/v0 REJECTED: V2: price above cap" in daily.summary


async def test_a_daily_bid_that_failed_validation_never_leaves(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(daily="none passed")
    result = await run_cycle(env.client, stand_ins)
    assert [s.bid_key for s in stand_ins.submits] == ["sha256:bid"]
    daily = next(f for f in result.facts if f.stage == "daily")
    assert daily.summary.startswith("no DAILY bid for trading day 2021-01-16 passed validation")


async def test_a_daily_submission_that_fails_is_recorded_and_the_cycle_stands(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(daily="due", daily_fails=True)
    result = await run_cycle(env.client, stand_ins)
    assert result.status == "SUBMITTED" and result.bid_id == "HPR1/2021-01-15/162/v1"
    daily = next(f for f in result.facts if f.stage == "daily")
    assert "not submitted" in daily.summary and "market unreachable" in daily.summary


async def test_live_records_name_unexplained_dispatch_and_earlier_intervals_settled(env: WorkflowEnvironment) -> None:
    stand_ins = StandIns(dispatch_source="AEMO",
                         dispatch_flags=("ENERGY GEN dispatched 100.0 MW above the offered availability",),
                         settled_earlier=("2021-01-15 17:30 (cycle-a) +80.0 MW at $95.00/MWh, $633.33",))
    result = await run_cycle(env.client, stand_ins)
    records = [f.summary for f in result.facts if f.stage == "record"]
    assert "AEMO dispatch UNEXPLAINED by the bid in force: ENERGY GEN dispatched 100.0 MW above the offered " \
           "availability" in records
    assert "settled 1 earlier interval(s) from AEMO's dispatch: 2021-01-15 17:30 (cycle-a) +80.0 MW at " \
           "$95.00/MWh, $633.33" in records
    assert list(result.outcome.dispatch_flags) == ["ENERGY GEN dispatched 100.0 MW above the offered availability"]
