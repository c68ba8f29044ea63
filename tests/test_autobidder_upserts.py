"""A cycle sends its memo and search-attribute changes together (workflow.patched: cycle-upserts-together):
one memo upsert where it made one per change, and the memo it ends with is the memo the change-by-change upserts
gave. On the time-skipping test server with the stand-in activities of test_autobidder_workflow.py.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import replace
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributeKey, SearchAttributeUpdate
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.cycle_facts import CycleInput, CycleResult
from tests.test_autobidder_workflow import DECISION_TIME, DEFAULT_CYCLE, StandIns, env
from workflows.autobidder import AutobidderCycle
from workflows.pending_upserts import PendingUpserts

__all__ = ["env"]  # the module's time-skipping server, shared with test_autobidder_workflow.py


@workflow.defn(name="AutobidderCycle", sandboxed=False)
class AutobidderCycleUpsertEach(AutobidderCycle):
    """The cycle as it was before its upserts went together: every change upserted at once."""

    @workflow.run
    async def run(self, cycle: CycleInput) -> CycleResult:
        return await super().run(cycle)

    def _upsert_memo(self, values: dict[str, Any]) -> None:
        workflow.upsert_memo(values)


async def _memo_and_upserts(client: Client, stand_ins: StandIns, cycle_class: type,
                            config: Any = None) -> tuple[dict[str, Any], int, str]:
    """The memo a cycle ended with, its number of memo upserts and its status (or the failure's message)."""
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    cycle = CycleInput(unit_id="HPR1", region="SA1", config=config or DEFAULT_CYCLE, decision_time=DECISION_TIME)
    async with Worker(client, task_queue=task_queue, workflows=[cycle_class], activities=stand_ins.activities()):
        handle = await client.start_workflow(AutobidderCycle.run, cycle, id=f"cycle-{uuid.uuid4().hex[:8]}",
                                             task_queue=task_queue)
        try:
            status = (await handle.result()).status
        except WorkflowFailureError as failure:
            status = f"failed: {failure.cause}"
        memo = await (await handle.describe()).memo()
        history = await handle.fetch_history()
    upserts = sum(1 for event in history.events
                  if event.event_type == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED)
    return memo, upserts, status


@pytest.mark.parametrize("case", ["submitted", "stands", "late data", "daily bid", "rejected", "invalid bid"])
async def test_a_cycle_ends_with_the_memo_of_its_upserts_one_by_one(env: WorkflowEnvironment, case: str) -> None:
    def stand_ins() -> StandIns:
        return {"submitted": StandIns(), "stands": StandIns(standing_bid="HPR1/2021-01-15/161/v1"),
                "late data": StandIns(late_fetches=2), "daily bid": StandIns(daily="due"),
                "rejected": StandIns(market_rejects=True), "invalid bid": StandIns(bid_valid=False)}[case]

    config = replace(DEFAULT_CYCLE, market_data_poll_s=5, market_data_cutoff_s=60)
    memo, upserts, status = await _memo_and_upserts(env.client, stand_ins(), AutobidderCycle, config)
    each_memo, each_upserts, each_status = await _memo_and_upserts(env.client, stand_ins(),
                                                                  AutobidderCycleUpsertEach, config)
    assert status == each_status
    assert memo == each_memo
    assert memo["last_fact"].startswith("record: ") and "console" in memo
    # One memo upsert, before the operator's workflow is told (the polls for late data change no memo key).
    assert upserts == 1, upserts
    assert each_upserts >= 6


@pytest.mark.parametrize("case", ["submitted", "stands", "rejected"])
async def test_the_record_stage_tells_the_operator_and_a_cycle_is_one_workflow_task(env: WorkflowEnvironment,
                                                                                     case: str) -> None:
    """cycle-operator-told-by-record: the record stage is asked to tell the unit's operator workflow, with what
    the cycle's line needs beyond the record's own fields (the decision time, why nothing was submitted); the
    cycle itself signals nothing, so it ends in the workflow task that ran its local stages."""
    stand_ins = {"submitted": StandIns(), "stands": StandIns(standing_bid="HPR1/2021-01-15/161/v1"),
                 "rejected": StandIns(market_rejects=True)}[case]
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    cycle = CycleInput(unit_id="HPR1", region="SA1", config=DEFAULT_CYCLE, decision_time=DECISION_TIME)
    async with Worker(env.client, task_queue=task_queue, workflows=[AutobidderCycle],
                      activities=stand_ins.activities()):
        handle = await env.client.start_workflow(AutobidderCycle.run, cycle, id=f"cycle-{uuid.uuid4().hex[:8]}",
                                                 task_queue=task_queue)
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        history = await handle.fetch_history()
    [record] = stand_ins.records
    assert record.tell_operator and record.decision_time == DECISION_TIME
    if case == "submitted":
        assert record.status == "SUBMITTED" and record.not_submitted_reason is None
    elif case == "stands":
        assert record.status == "NO_REBID"
        assert (record.not_submitted_reason or "").startswith("the new bid does not differ materially")
    else:
        assert record.status == "FAILED" and (record.not_submitted_reason or "").startswith("the cycle failed: ")
    kinds = [event.event_type for event in history.events]
    assert EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED not in kinds
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1


def test_pending_upserts_keep_each_keys_last_value() -> None:
    stage, outcome = SearchAttributeKey.for_keyword("Stage"), SearchAttributeKey.for_keyword("Outcome")
    pending = PendingUpserts()
    pending.memo({"last_fact": "fetch: 3 products", "controls": {"paused": False}})
    pending.memo({"last_fact": "bid: built", "controls": None})
    pending.search_attributes([stage.value_set("fetch")])
    pending.search_attributes([outcome.value_set("SUBMITTED"), stage.value_set("record")])
    assert pending.take_memo() == {"last_fact": "bid: built", "controls": None}
    updates: list[SearchAttributeUpdate[Any]] = pending.take_search_attributes()
    assert [(u.key.name, u.value) for u in updates] == [("Stage", "record"), ("Outcome", "SUBMITTED")]
    assert pending.take_memo() == {} and pending.take_search_attributes() == []
