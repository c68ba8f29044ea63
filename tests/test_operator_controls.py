"""Operator controls: pure validation, the stored controls and audit trail, the UnitOperator workflow
(time-skipping server, real PostgreSQL), the cycle honouring the controls, and ``vpp ops``."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from activities.cycle import CycleActivities
from activities.cycle_facts import (
    BidBuilt,
    BuildBidInput,
    CycleInput,
    FetchInput,
    MarketFetched,
    RecordInput,
    cycle_view,
)
from activities.operator import OperatorActivities, operator_signal
from activities.operator_facts import (
    CYCLE_RECORDED_SIGNAL,
    ControlsView,
    OperatorInput,
    RebidRequested,
    operator_workflow_id,
)
from algorithms.market.console import cycle_line
from algorithms.market.operator_controls import (
    ControlTimeline,
    EffectiveControls,
    ManualRebid,
    OperatorRequestError,
    Pause,
    SocHold,
    UnitControls,
    battery_with_soc_floor,
    controls_at,
    effective_controls,
    validate_manual_rebid,
    validate_pause,
    validate_release_soc,
    validate_resume,
    validate_soc_hold,
    with_operator_rebid_reason,
)
from archive.store import LocalArchive
from cli.main import app
from models import operator_controls as store
from models.db import connect, migrate
from settings import Settings
from tests.conftest import temporary_database
from tests.temporal_env import time_skipping_server_path
from tests.test_autobidder_workflow import DECISION_TIME, DEFAULT_CYCLE, PRODUCTS, StandIns
from tests.test_bid_builder import AFTER_CLOSE, FIRST, make_plan
from tests.test_bid_builder import PRODUCTS as BID_PRODUCTS
from vpp.v1 import bid_pb2, common_pb2
from workflows.autobidder import AutobidderCycle
from workflows.operator import UnitOperator

NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
AEST = timezone(timedelta(hours=10))


# -- pure validation ----------------------------------------------------------------------------------


def test_soc_hold_accepts_a_floor_within_limits_until_a_near_future_time() -> None:
    reason = validate_soc_hold(0.6, NOW + timedelta(hours=12), NOW, 0.05, 0.95, "  storm watch  ")
    assert reason == "storm watch"


@pytest.mark.parametrize(("floor", "until", "reason", "message"), [
    (0.99, NOW + timedelta(hours=1), "storm", "outside the battery's limits [0.05, 0.95]"),
    (0.01, NOW + timedelta(hours=1), "storm", "outside the battery's limits"),
    (float("nan"), NOW + timedelta(hours=1), "storm", "outside the battery's limits"),
    (0.6, NOW - timedelta(minutes=1), "storm", "is not in the future"),
    (0.6, NOW + timedelta(days=7, minutes=1), "storm", "more than 7 days ahead"),
    (0.6, datetime(2026, 11, 22, 18, 0), "storm", "has no UTC offset"),
    (0.6, NOW + timedelta(hours=1), "   ", "needs a reason"),
])
def test_soc_hold_rejects_bad_requests_with_a_clear_message(floor: float, until: datetime, reason: str,
                                                            message: str) -> None:
    with pytest.raises(OperatorRequestError, match=re.escape(message)):
        validate_soc_hold(floor, until, NOW, 0.05, 0.95, reason)


def test_pause_resume_and_release_check_the_unit_state() -> None:
    idle = UnitControls(unit_id="HPR1")
    paused = UnitControls(unit_id="HPR1", paused=True, paused_reason="maintenance")
    assert validate_pause("maintenance", idle) == "maintenance"
    with pytest.raises(OperatorRequestError, match="already paused \\(maintenance\\)"):
        validate_pause("again", paused)
    with pytest.raises(OperatorRequestError, match="not paused"):
        validate_resume("done", idle)
    assert validate_resume("done", paused) == "done"
    with pytest.raises(OperatorRequestError, match="no SoC hold in force"):
        validate_release_soc("over", idle, NOW)
    expired = UnitControls(unit_id="HPR1", soc_floor_fraction=0.6, soc_floor_until=NOW - timedelta(seconds=1))
    with pytest.raises(OperatorRequestError, match="no SoC hold in force"):
        validate_release_soc("over", expired, NOW)


def test_manual_rebid_needs_a_reason_within_the_explanation_limit() -> None:
    assert validate_manual_rebid(" storm front ", 500) == "storm front"
    with pytest.raises(OperatorRequestError, match="needs a reason"):
        validate_manual_rebid("", 500)
    with pytest.raises(OperatorRequestError, match="501 characters; at most 500"):
        validate_manual_rebid("x" * 501, 500)


@given(offset_s=st.integers(min_value=-7 * 86400, max_value=7 * 86400),
       floor=st.floats(min_value=0.0, max_value=1.0))
def test_a_soc_hold_is_in_force_only_before_its_end(offset_s: int, floor: float) -> None:
    controls = UnitControls(unit_id="U", soc_floor_fraction=floor, soc_floor_until=NOW + timedelta(seconds=offset_s),
                            pending_rebid_reason="r")
    effective = effective_controls(controls, NOW)
    assert (effective.soc_floor_fraction is not None) == (offset_s > 0)
    if offset_s > 0:
        assert effective.soc_floor_fraction == floor
    assert effective.manual_rebid_reason == "r" and not effective.paused


def test_the_held_battery_never_drops_below_its_configured_minimum_nor_above_its_maximum() -> None:
    battery = common_pb2.BatterySpec(energy_mwh=200.0, soc_min_fraction=0.05, soc_max_fraction=0.95)
    assert battery_with_soc_floor(battery, 0.6).soc_min_fraction == pytest.approx(0.6)
    assert battery_with_soc_floor(battery, 0.01).soc_min_fraction == pytest.approx(0.05)
    assert battery_with_soc_floor(battery, 0.99).soc_min_fraction == pytest.approx(0.95)
    assert battery_with_soc_floor(battery, None) == battery
    assert battery.soc_min_fraction == pytest.approx(0.05)  # the configured spec is not changed


def test_the_operator_reason_leads_the_rebid_explanation_within_the_limit() -> None:
    bid = bid_pb2.Bid(entry_type=bid_pb2.ENTRY_TYPE_REBID, rebid_explanation="Availability rebid from 17:40")
    text = with_operator_rebid_reason(bid, "storm watch SA", [], 500).rebid_explanation
    assert text.startswith("Manual rebid: storm watch SA. Availability rebid from 17:40.")
    assert text.endswith("No material change.")
    long = with_operator_rebid_reason(bid, "storm", ["ENERGY/GEN band prices changed"] * 50, 120)
    assert len(long.rebid_explanation) == 120 and long.rebid_explanation.startswith("Manual rebid: storm.")
    daily = bid_pb2.Bid(entry_type=bid_pb2.ENTRY_TYPE_DAILY)
    assert with_operator_rebid_reason(daily, "storm", [], 500).rebid_explanation == ""


# -- stored controls and audit trail ------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    migrate(database_url)
    return database_url


def _unit() -> str:
    return f"U{uuid.uuid4().hex[:8]}"


async def test_controls_round_trip_and_the_audit_trail_is_append_only(migrated: str) -> None:
    unit = _unit()
    until = NOW + timedelta(days=1)
    async with await connect(migrated) as conn:
        assert await store.get_controls(conn, unit) == UnitControls(unit_id=unit)
        await store.set_paused(conn, unit, True, "maintenance")
        held = await store.set_soc_hold(conn, unit, 0.6, until)
        assert held.paused and held.paused_reason == "maintenance"
        assert held.soc_floor_fraction == 0.6 and held.soc_floor_until == until
        await store.set_pending_rebid(conn, unit, "storm")
        assert not await store.clear_pending_rebid(conn, unit, "an older reason")
        assert await store.clear_pending_rebid(conn, unit, "storm")
        for action in ("pause", "hold_soc"):
            await store.append_action(conn, store.OperatorAction(unit_id=unit, action=action, reason="r",
                                                                 operator="ann", detail={"n": 1}))
        await conn.commit()
        assert (await store.get_controls(conn, unit)).pending_rebid_reason is None
        rows = await store.list_actions(conn, unit)
        assert [r.action for r in rows] == ["hold_soc", "pause"] and rows[0].detail == {"n": 1}
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            await conn.execute("DELETE FROM operator_actions WHERE unit_id = %s", (unit,))


# -- the UnitOperator workflow ------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=time_skipping_server_path()) as e:
        yield e


@dataclass
class Operator:
    handle: WorkflowHandle[Any, Any]
    unit: str
    triggered: list[str] = field(default_factory=list)

    async def update(self, name: str, *args: Any) -> Any:
        result_type = RebidRequested if name == "manual_rebid" else ControlsView
        return await self.handle.execute_update(name, args=list(args), result_type=result_type)


async def _actions(url: str, unit: str) -> list[store.OperatorAction]:
    async with await connect(url) as conn:
        return await store.list_actions(conn, unit, 50)


async def _with_operator(client: Client, url: str, body: Callable[[Operator], Any],
                         max_actions_per_run: int = 500) -> None:
    unit = _unit()
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    triggered: list[str] = []

    async def trigger(unit_id: str) -> None:
        triggered.append(unit_id)

    activities = OperatorActivities(url, trigger)
    async with Worker(client, task_queue=task_queue, workflows=[UnitOperator], activities=activities.all()):
        handle = await client.start_workflow(
            UnitOperator.run, OperatorInput(unit_id=unit, soc_min_fraction=0.05, soc_max_fraction=0.95,
                                            max_actions_per_run=max_actions_per_run),
            id=operator_workflow_id(unit), task_queue=task_queue)
        try:
            await body(Operator(handle, unit, triggered))
        finally:
            await handle.terminate("test over")


async def test_operator_updates_write_controls_and_the_audit_trail(env: WorkflowEnvironment, migrated: str) -> None:
    async def body(op: Operator) -> None:
        paused = await op.update("pause", "transformer maintenance", "ann")
        assert paused.paused and paused.paused_reason == "transformer maintenance"
        until = (await env.get_current_time() + timedelta(hours=6)).astimezone(AEST)
        held = await op.update("hold_soc", 0.6, until.isoformat(), "storm watch", "ann")
        assert held.soc_floor_fraction == 0.6 and datetime.fromisoformat(held.soc_floor_until) == until
        rebid = await op.update("manual_rebid", "storm front moved north", "bob")
        assert rebid.cycle_triggered and op.triggered == [op.unit]
        assert rebid.controls.pending_rebid_reason == "storm front moved north"
        await op.update("release_soc", "storm passed", "ann")
        resumed = await op.update("resume", "maintenance done", "ann")
        assert not resumed.paused and resumed.soc_floor_fraction is None
        assert await op.handle.query(UnitOperator.controls) == resumed
        rows = list(reversed(await _actions(migrated, op.unit)))
        assert [r.action for r in rows] == ["pause", "hold_soc", "manual_rebid", "release_soc", "resume"]
        assert [r.operator for r in rows] == ["ann", "ann", "bob", "ann", "ann"]
        assert rows[1].detail is not None and rows[1].detail["soc_floor_fraction"] == 0.6
        async with await connect(migrated) as conn:
            stored = await store.get_controls(conn, op.unit)
        assert not stored.paused and stored.pending_rebid_reason == "storm front moved north"

    await _with_operator(env.client, migrated, body)


async def test_validators_reject_bad_requests_with_the_reason(env: WorkflowEnvironment, migrated: str) -> None:
    async def body(op: Operator) -> None:
        now = await env.get_current_time()
        rejected: dict[tuple[Any, ...], tuple[str]] = {
            ("resume", "nothing to resume"): ("not paused",),
            ("hold_soc", 1.2, (now + timedelta(hours=1)).isoformat(), "storm"): ("outside the battery's limits",),
            ("hold_soc", 0.6, (now - timedelta(hours=1)).isoformat(), "storm"): ("not in the future",),
            ("hold_soc", 0.6, "tomorrow evening", "storm"): ("not an ISO-8601 time",),
            ("release_soc", "over"): ("no SoC hold in force",),
            ("manual_rebid", "  "): ("needs a reason",),
            ("pause", ""): ("needs a reason",),
        }
        for (name, *args), (message,) in rejected.items():
            with pytest.raises(WorkflowUpdateFailedError) as failure:
                await op.update(name, *args)
            assert message in str(failure.value.cause), (name, failure.value.cause)
        await op.update("pause", "maintenance")
        with pytest.raises(WorkflowUpdateFailedError) as twice:
            await op.update("pause", "again")
        assert "already paused (maintenance)" in str(twice.value.cause)
        assert [r.action for r in await _actions(migrated, op.unit)] == ["pause"]

    await _with_operator(env.client, migrated, body)


async def test_the_operator_continues_as_new_with_the_stored_controls(env: WorkflowEnvironment,
                                                                     migrated: str) -> None:
    async def body(op: Operator) -> None:
        first_run = op.handle.result_run_id
        await op.update("pause", "maintenance")
        await op.update("manual_rebid", "storm")
        latest = env.client.get_workflow_handle(op.handle.id)
        description = await latest.describe()
        assert description.run_id != first_run
        assert (await latest.query(UnitOperator.controls)).paused  # reloaded from PostgreSQL
        with pytest.raises(WorkflowUpdateFailedError) as failure:
            await latest.execute_update("pause", args=["again", ""], result_type=ControlsView)
        assert "already paused" in str(failure.value.cause)
        resumed = await latest.execute_update("resume", args=["done", ""], result_type=ControlsView)
        assert not resumed.paused
        assert len(await _actions(migrated, op.unit)) == 3

    await _with_operator(env.client, migrated, body, max_actions_per_run=2)


async def test_the_fetch_activity_of_a_paused_unit_reads_no_market_data(settings: Settings, migrated: str) -> None:
    unit = _unit()
    async with await connect(migrated) as conn:
        await store.set_paused(conn, unit, True, "maintenance")
        await conn.commit()
    # Nothing listens on the market data port: a fetch would fail.
    activities = CycleActivities(replace(settings, database_url=migrated), archive=None, sqs=None, queues=None)  # type: ignore[arg-type]
    fetched = await ActivityEnvironment().run(
        activities.fetch_market_snapshot,
        FetchInput(cycle_id="c", unit_id=unit, region="SA1", dispatch_interval="2021-01-15T17:40:00",
                   as_of="2021-01-15T17:30:30", history_intervals=12, use_estimates=False))
    assert fetched.paused and fetched.paused_reason == "maintenance" and fetched.products == ()


async def test_the_bid_activity_offers_no_discharge_below_the_held_floor_and_leads_with_the_reason(
        settings: Settings, server_url: str, tmp_path: Path) -> None:
    with temporary_database(server_url) as url:  # no bid of HPR1 from other tests
        migrate(url)
        archive = LocalArchive(tmp_path / "archive")
        activities = CycleActivities(replace(settings, database_url=url), archive=archive, sqs=None,  # type: ignore[arg-type]
                                     queues=None)  # type: ignore[arg-type]
        plan_key = archive.put(make_plan([0.0] * 12, [0.0] * 12), cycle_id="c", label="plan")
        # SoC 97 MWh is 50% of 194 MWh: free headroom to discharge, unless 60% is held.
        request = BuildBidInput(cycle_id="c", unit_id="HPR1", plan_key=plan_key, dispatch_interval=FIRST.isoformat(),
                                offer_time=AFTER_CLOSE.isoformat(), version=1, state_of_charge_mwh=97.0,
                                products=BID_PRODUCTS)
        run = ActivityEnvironment().run
        free = await run(activities.build_and_validate_bid, request)
        held = await run(activities.build_and_validate_bid,
                         replace(request, soc_floor_fraction=0.6, manual_rebid_reason="storm watch"))
        assert free.valid and held.valid and not held.safe_fallback
        assert held.manual_rebid_reason == "storm watch" and "manual rebid: storm watch" in held.summary
        free_bid, held_bid = (cast(bid_pb2.Bid, archive.get(b.bid_key or "")) for b in (free, held))
        gen = common_pb2.DIRECTION_GEN

        def discharging(bid: bid_pb2.Bid) -> list[float]:
            """MAXAVAIL of every offer that would discharge: energy GEN and every raise service."""
            return [p.max_avail_mw for o in bid.offers
                    if (o.product == "ENERGY" and o.direction == gen) or o.product.startswith("RAISE")
                    for p in o.periods]

        free_gen, held_gen = discharging(free_bid), discharging(held_bid)
        assert free_gen[0] > 1.0 and max(held_gen) == pytest.approx(0.0, abs=1e-9)
        assert held_bid.rebid_explanation.startswith("Manual rebid: storm watch.")


async def test_the_record_stage_tells_the_units_operator_workflow_the_cycles_line(
        env: WorkflowEnvironment, settings: Settings, migrated: str, tmp_path: Path) -> None:
    """A cycle asking its record stage to tell the operator (cycle-operator-told-by-record): the record activity
    signals the running UnitOperator ``cycle_recorded`` with the cycle's line — the line the cycle sent itself
    before (cycle_line of the same view) — and a unit without a running operator workflow records all the same."""
    signal = operator_signal(env.client)
    failures: list[BaseException] = []

    async def tell(unit_id: str, line: str) -> None:  # the worker's signal, its failures kept for the assertion
        try:
            await signal(unit_id, line)
        except BaseException as failure:
            failures.append(failure)
            raise

    activities = CycleActivities(replace(settings, database_url=migrated), archive=LocalArchive(tmp_path / "a"),
                                 sqs=None, queues=None, tell_operator=tell)  # type: ignore[arg-type]

    def record(unit: str) -> RecordInput:
        return RecordInput(cycle_id=f"autobidder-{unit}-c1", unit_id=unit, region="SA1",
                           dispatch_interval="2021-01-15T17:40:00", status="PAUSED", bid_id=None, failure=None,
                           started_at="2026-12-06T20:00:00+00:00", facts=(), tell_operator=True,
                           decision_time=DECISION_TIME, not_submitted_reason="bidding paused by the operator")

    async def body(op: Operator) -> None:
        recorded = await ActivityEnvironment().run(activities.record_outcome, record(op.unit))
        expected = cycle_line(cycle_view(
            unit_id=op.unit, region="SA1", dispatch_interval=datetime(2021, 1, 15, 17, 40), status="PAUSED",
            started_wall_clock=datetime(2026, 12, 6, 20, tzinfo=UTC),
            decision_market_time=datetime.fromisoformat(DECISION_TIME), bid_id=None,
            not_submitted_reason="bidding paused by the operator", outcome=recorded))
        assert expected.startswith(f"cycle {op.unit} ") and "PAUSED" in expected
        assert not failures

        async def signals_received() -> list[tuple[str, Any]]:
            """The signals of the operator's first run and, when it has continued as new since, its latest."""
            workflow_id = operator_workflow_id(op.unit)
            first = op.handle.first_execution_run_id
            latest = (await env.client.get_workflow_handle(workflow_id).describe()).run_id
            runs = [env.client.get_workflow_handle(workflow_id, run_id=run_id)
                    for run_id in dict.fromkeys((first, latest))]
            return [(event.workflow_execution_signaled_event_attributes.signal_name,
                     json.loads(event.workflow_execution_signaled_event_attributes.input.payloads[0].data))
                    for run in runs for event in (await run.fetch_history()).events
                    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]

        received = await signals_received()
        for _ in range(50):  # the history as the server shows it a moment later, on a loaded machine
            if received:
                break
            await asyncio.sleep(0.1)
            received = await signals_received()
        assert received == [(CYCLE_RECORDED_SIGNAL, expected)]

    await _with_operator(env.client, migrated, body)
    alone = await ActivityEnvironment().run(activities.record_outcome, record(_unit()))  # no operator running
    assert not alone.cleared


def test_a_replayed_timeline_gives_the_controls_in_force_at_each_decision() -> None:
    t0 = datetime(2021, 1, 15, 17, 0)
    timeline = ControlTimeline(
        soc_holds=(SocHold(t0, t0 + timedelta(hours=2), 0.6),
                   SocHold(t0 + timedelta(hours=1), t0 + timedelta(hours=3), 0.8)),
        pauses=(Pause(t0 + timedelta(minutes=30), t0 + timedelta(minutes=40), "maintenance"),),
        manual_rebids=(ManualRebid(t0 + timedelta(minutes=5), "first"),
                       ManualRebid(t0 + timedelta(minutes=6), "second")))
    assert controls_at(timeline, t0 - timedelta(minutes=1)) == EffectiveControls()
    assert controls_at(timeline, t0).soc_floor_fraction == 0.6
    assert controls_at(timeline, t0 + timedelta(minutes=90)).soc_floor_fraction == 0.8  # the higher floor
    assert controls_at(timeline, t0 + timedelta(hours=3)).soc_floor_fraction is None  # the end is exclusive
    paused = controls_at(timeline, t0 + timedelta(minutes=30))
    assert paused.paused and paused.paused_reason == "maintenance"
    assert not controls_at(timeline, t0 + timedelta(minutes=40)).paused
    # A later request replaces a pending one; a submission serves every request asked up to it.
    assert controls_at(timeline, t0 + timedelta(minutes=5, seconds=30)).manual_rebid_reason == "first"
    assert controls_at(timeline, t0 + timedelta(minutes=10)).manual_rebid_reason == "second"
    assert controls_at(timeline, t0 + timedelta(minutes=10), t0 + timedelta(minutes=5, seconds=30)
                       ).manual_rebid_reason == "second"
    assert controls_at(timeline, t0 + timedelta(minutes=10), t0 + timedelta(minutes=6)).manual_rebid_reason is None


# -- the cycle honours the controls -------------------------------------------------------------------


@dataclass
class ControlledStandIns(StandIns):
    """The cycle's stand-ins, with the operator controls a fetch reports."""

    controls: dict[str, Any] = field(default_factory=dict)
    builds: list[BuildBidInput] = field(default_factory=list)

    def activities(self) -> list[Callable[..., Any]]:
        fetch, forecast, forecasts, optimise, optimise_plan, _, submit, record = super().activities()

        @activity.defn(name="fetch_market_snapshot")
        async def controlled_fetch(request: FetchInput) -> MarketFetched:
            fetched: MarketFetched = await fetch(request)
            return replace(fetched, **self.controls)

        @activity.defn(name="build_and_validate_bid")
        async def build(request: BuildBidInput) -> BidBuilt:
            self.builds.append(request)
            # The real builder submits a manual rebid even when nothing changed materially.
            return BidBuilt(bid_key="sha256:bid", valid=True, safe_fallback=False, violations=(),
                            summary="bid v1 from plan", manual_rebid_reason=request.manual_rebid_reason)

        return [controlled_fetch, forecast, forecasts, optimise, optimise_plan, build, submit, record]


async def _run_cycle(client: Client, stand_ins: StandIns) -> Any:
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    cycle = CycleInput(unit_id="HPR1", region="SA1", config=DEFAULT_CYCLE, decision_time=DECISION_TIME)
    async with Worker(client, task_queue=task_queue, workflows=[AutobidderCycle],
                      activities=stand_ins.activities()):
        return await client.execute_workflow(AutobidderCycle.run, cycle, id=f"cycle-{uuid.uuid4().hex[:8]}",
                                             task_queue=task_queue)


async def test_a_paused_unit_records_paused_and_submits_nothing(env: WorkflowEnvironment) -> None:
    stand_ins = ControlledStandIns(controls={"paused": True, "paused_reason": "maintenance", "products": ()})
    result = await _run_cycle(env.client, stand_ins)
    assert result.status == "PAUSED" and result.bid_id is None
    assert [f.stage for f in result.facts] == ["fetch", "record"]
    assert "paused by the operator (maintenance)" in result.facts[0].summary
    assert stand_ins.forecast_calls == stand_ins.forecasts_calls == [] and stand_ins.submits == []
    assert stand_ins.builds == []
    assert stand_ins.records[-1].status == "PAUSED"


async def test_a_manual_rebid_with_a_soc_hold_is_submitted_with_the_reason(env: WorkflowEnvironment) -> None:
    stand_ins = ControlledStandIns(controls={"soc_floor_fraction": 0.6,
                                             "soc_floor_until": "2026-11-22T18:00:00+10:00",
                                             "manual_rebid_reason": "storm watch"})
    result = await _run_cycle(env.client, stand_ins)
    assert result.status == "SUBMITTED" and len(stand_ins.submits) == 1
    assert [f.stage for f in result.facts] == ["fetch", "controls", "forecast", "optimise", "bid", "submit",
                                               "record", "record"]
    assert "no discharge below 60%" in result.facts[1].summary and "storm watch" in result.facts[1].summary
    build = stand_ins.builds[-1]
    assert build.soc_floor_fraction == 0.6 and build.manual_rebid_reason == "storm watch"
    assert stand_ins.records[-1].manual_rebid_reason == "storm watch"
    assert "manual rebid submitted" in result.facts[-1].summary
    assert [call.products for call in stand_ins.forecasts_calls] == [PRODUCTS]


# -- vpp ops ------------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str | None]:
    return {"VPP_STATE_DIR": str(tmp_path / "state"), "VPP_CONFIG": None, "VPP_SQS_ENDPOINT": None}


@pytest.mark.parametrize(("args", "message"), [
    (["hold-soc", "HPR1", "--floor", "1.5", "--until", "2099-01-01T18:00+10:00", "--reason", "storm"],
     "outside the battery's limits"),
    (["hold-soc", "HPR1", "--floor", "0.6", "--until", "2099-01-01T18:00", "--reason", "storm"], "no UTC offset"),
    (["hold-soc", "HPR1", "--floor", "0.6", "--until", "2000-01-01T18:00+10:00", "--reason", "s"], "not in the future"),
    (["rebid", "HPR1", "--reason", " "], "needs a reason"),
    (["pause", "HPR1", "--reason", ""], "needs a reason"),
])
def test_ops_validation_failures_are_one_error_line_and_exit_1(cli_env: dict[str, str | None], args: list[str],
                                                               message: str) -> None:
    result = runner.invoke(app, ["ops", *args], env=cli_env, terminal_width=200)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_ops_status_shows_controls_and_the_latest_audit_rows(cli_env: dict[str, str | None], migrated: str) -> None:
    unit = _unit()
    with psycopg.connect(migrated) as conn:
        conn.execute("INSERT INTO unit_controls (unit_id, paused, paused_reason) VALUES (%s, true, 'maintenance')",
                     (unit,))
        for n in range(12):
            conn.execute("INSERT INTO operator_actions (unit_id, action, reason, operator) VALUES (%s, %s, %s, 'ann')",
                         (unit, "pause", f"reason-{n:02d}"))
    result = runner.invoke(app, ["ops", "status", unit], env={**cli_env, "DATABASE_URL": migrated},
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "bidding PAUSED (maintenance)" in result.output and "SoC hold: none" in result.output
    assert "reason-11" in result.output and "reason-02" in result.output and "reason-01" not in result.output


async def test_ops_commands_drive_the_operator_workflow(env: WorkflowEnvironment, migrated: str,
                                                        cli_env: dict[str, str | None], tmp_path: Path) -> None:
    unit, task_queue = _unit(), f"tq-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "ops.toml"
    config.write_text(f'[stack]\ntemporal_address = "{env.client.service_client.config.target_host}"\n'
                      f'task_queue = "{task_queue}"\n[cycle]\nunit_id = "{unit}"\n')
    invoke_env = {**cli_env, "DATABASE_URL": migrated}

    def vpp(*args: str) -> Any:
        return runner.invoke(app, ["--config", str(config), "ops", *args], env=invoke_env, terminal_width=200)

    async def trigger(unit_id: str) -> None:
        raise RuntimeError("no schedule in the test server")

    async with Worker(env.client, task_queue=task_queue, workflows=[UnitOperator],
                      activities=OperatorActivities(migrated, trigger).all()):
        paused = await asyncio.to_thread(vpp, "pause", unit, "--reason", "maintenance", "--operator", "ann")
        assert paused.exit_code == 0, paused.output
        assert "bidding PAUSED (maintenance)" in paused.output
        again = await asyncio.to_thread(vpp, "pause", unit, "--reason", "again")
        assert again.exit_code == 1
        assert again.output.strip().splitlines() == [again.output.strip()]
        assert again.output.startswith("error: rejected:") and "already paused" in again.output
        rebid = await asyncio.to_thread(vpp, "rebid", unit, "--reason", "storm front")
        assert rebid.exit_code == 0, rebid.output
        assert "manual rebid pending: storm front" in rebid.output and "next scheduled cycle" in rebid.output
        await env.client.get_workflow_handle(operator_workflow_id(unit)).terminate("test over")
    assert [a.action for a in await _actions(migrated, unit)] == ["manual_rebid", "pause"]
