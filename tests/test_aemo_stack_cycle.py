"""Cycles on the real local stack submitting through the AEMO stand-in: the production AutobidderCycle on a
Temporal dev server, the forecast and optimisation pools over the SQS endpoint, the market-data service and the
bid service (aemo backend) over gRPC, PostgreSQL, and the stand-in over HTTP deciding with its own checks.

Each cycle bids for a trading day of its own, so every cycle submits a new bid (none stands)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError

from aemo_sandbox.rules import UnitDefaults
from aemo_sandbox.server import FAULT_LATE, FAULT_MALFORMED, SandboxClock, SandboxConfig, SandboxServer
from models import aemo_submissions as aemo_store
from models import cycles as cycle_store
from models.db import connect, scratch_database
from services.aemo_bidding import ANSWER_UNREADABLE
from settings import Settings, load_settings
from tests.live_stack import LiveStack, live_stack
from workflows.autobidder import BID_REJECTED

pytestmark = pytest.mark.stack

PARTICIPANT = "OPENVPP1"
USER = "desk"
PASSWORD = "stack-Pa55-41f0"
ACCEPTED_AT = datetime(2021, 1, 12, 17, 0, 30)
TIMED_OUT_AT = datetime(2021, 1, 13, 17, 0, 30)
GATE_CLOSED_AT = datetime(2021, 1, 14, 17, 0, 30)
UNREADABLE_AT = datetime(2021, 1, 15, 17, 0, 30)


@dataclass(frozen=True)
class AemoStack:
    stack: LiveStack
    sandbox: SandboxServer


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """The stand-in: the participant owns the configured battery, whose default bid is the configured ladder."""
    loaded = load_settings(environ={})
    bidding = loaded.bidding
    unit = UnitDefaults(loaded.battery.unit_id, bidding.gen_band_prices, bidding.load_band_prices,
                        bidding.fcas_band_prices)
    config = SandboxConfig(PARTICIPANT, USER, PASSWORD, {unit.duid: unit})
    with SandboxServer(config, SandboxClock.at(ACCEPTED_AT)) as server:
        yield server


@pytest.fixture(scope="module")
async def aemo_stack(server_url: str, sqs_endpoint: str, sandbox: SandboxServer,
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AemoStack]:
    monkeypatch = pytest.MonkeyPatch()
    for name, value in {"VPP_AEMO_API_URL": sandbox.url, "VPP_AEMO_PARTICIPANT_ID": PARTICIPANT,
                        "VPP_AEMO_API_USER": USER, "VPP_AEMO_API_PASSWORD": PASSWORD}.items():
        monkeypatch.setenv(name, value)
    loaded = load_settings(environ={})
    try:
        with scratch_database(server_url) as database_url:
            settings = replace(
                loaded, database_url=database_url,
                stack=replace(loaded.stack, state_dir=tmp_path_factory.mktemp("aemo-stack")),
                cycle=replace(loaded.cycle, horizon_intervals=48, history_intervals=576),
                bid_service=replace(loaded.bid_service, backend="aemo", aemo_timeout_s=1.0))
            async with live_stack(settings, sqs_endpoint) as stack:
                yield AemoStack(stack, sandbox)
    finally:
        monkeypatch.undo()


async def cycle_row(settings: Settings, cycle_id: str) -> cycle_store.CycleRecord:
    assert settings.database_url is not None
    async with await connect(settings.database_url) as conn:
        record = await cycle_store.get_cycle(conn, cycle_id)
    assert record is not None
    return record


async def failed_cycle(settings: Settings, decision: datetime) -> cycle_store.CycleRecord:
    """The recorded cycle that decided at ``decision`` (its id is in the failed workflow's history only)."""
    assert settings.database_url is not None
    async with await connect(settings.database_url) as conn:
        cursor = await conn.execute("SELECT cycle_id FROM cycles WHERE dispatch_interval > %s AND "
                                    "dispatch_interval <= %s", (decision, decision + timedelta(minutes=15)))
        rows = await cursor.fetchall()
    assert len(rows) == 1
    return await cycle_row(settings, str(rows[0][0]))


async def submissions(settings: Settings, bid_id: str) -> aemo_store.AemoSubmission:
    assert settings.database_url is not None
    async with await connect(settings.database_url) as conn:
        cursor = await conn.execute("SELECT reference_id FROM aemo_submissions WHERE bid_id = %s", (bid_id,))
        row = await cursor.fetchone()
        assert row is not None
        stored = await aemo_store.get_submission(conn, str(row[0]))
    assert stored is not None
    return stored


def cause_of(error: BaseException) -> ApplicationError:
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = getattr(cause, "cause", None)
    assert isinstance(cause, ApplicationError), f"no ApplicationError in {error!r}"
    return cause


async def test_cycle_submits_through_the_stand_in_and_aemo_accepts(aemo_stack: AemoStack) -> None:
    sandbox, settings = aemo_stack.sandbox, aemo_stack.stack.settings
    sandbox.state.set_clock(SandboxClock.at(ACCEPTED_AT))
    _, result = await aemo_stack.stack.run_cycle(ACCEPTED_AT)
    assert result.status == "SUBMITTED" and result.bid_id is not None
    submit_facts = [fact.summary for fact in result.facts if fact.stage == "submit"]
    assert submit_facts == [f"bid {result.bid_id} ACCEPTED"]
    stored = await submissions(settings, result.bid_id)
    at_aemo = sandbox.state.submission(stored.reference_id)
    assert at_aemo is not None and at_aemo.status == "ACCEPTED" and at_aemo.entry_type == "REBID"
    assert stored.state == aemo_store.ACCEPTED and stored.transaction_id == at_aemo.transaction_id
    assert sandbox.state.received[stored.reference_id] == 1
    record = await cycle_row(settings, result.cycle_id)
    assert record.status == "SUBMITTED" and record.bid_id == result.bid_id


async def test_a_time_out_is_retried_by_asking_aemo_and_the_bid_is_submitted_once(aemo_stack: AemoStack) -> None:
    sandbox, settings = aemo_stack.sandbox, aemo_stack.stack.settings
    sandbox.state.set_clock(SandboxClock.at(TIMED_OUT_AT))
    sandbox.state.add_fault(FAULT_LATE, delay_s=3.0)  # the bid service waits 1 s
    _, result = await aemo_stack.stack.run_cycle(TIMED_OUT_AT)
    assert result.status == "SUBMITTED" and result.bid_id is not None
    assert [fact.summary for fact in result.facts if fact.stage == "submit"] == [
        f"bid {result.bid_id} ACCEPTED (already submitted)"]
    stored = await submissions(settings, result.bid_id)
    assert stored.state == aemo_store.ACCEPTED and stored.sends == 1
    assert sandbox.state.received[stored.reference_id] == 1
    assert settings.database_url is not None
    async with await connect(settings.database_url) as conn:
        exchanges = await aemo_store.list_exchanges(conn, stored.reference_id)
    assert [(e.operation, e.outcome) for e in exchanges] == [("submitBids", "TIMED_OUT"),
                                                            ("getSubmission", "ACCEPTED")]


async def test_a_bid_aemo_rejects_fails_the_cycle_with_aemos_reasons(aemo_stack: AemoStack) -> None:
    sandbox, settings = aemo_stack.sandbox, aemo_stack.stack.settings
    # AEMO's clock is ten minutes ahead of the cycle's: the interval the cycle bids for has started there.
    sandbox.state.set_clock(SandboxClock.at(GATE_CLOSED_AT + timedelta(minutes=10)))
    with pytest.raises(WorkflowFailureError) as raised:
        await aemo_stack.stack.run_cycle(GATE_CLOSED_AT)
    failure = cause_of(raised.value)
    assert failure.type == BID_REJECTED and failure.non_retryable
    assert "market rejected bid" in failure.message and "AEMO GATE_CLOSED:" in failure.message
    record = await failed_cycle(settings, GATE_CLOSED_AT)
    assert record.status == "FAILED" and record.failure is not None and "AEMO GATE_CLOSED:" in record.failure
    assert record.bid_id is not None
    stored = await submissions(settings, record.bid_id)
    assert stored.state == aemo_store.REJECTED and stored.reasons[0].startswith("AEMO GATE_CLOSED:")


async def test_an_unreadable_answer_fails_the_cycle_once_recorded_and_nothing_is_sent_again(
        aemo_stack: AemoStack) -> None:
    sandbox, settings = aemo_stack.sandbox, aemo_stack.stack.settings
    sandbox.state.set_clock(SandboxClock.at(UNREADABLE_AT))
    sandbox.state.add_fault(FAULT_MALFORMED)
    before = sum(sandbox.state.received.values())
    with pytest.raises(WorkflowFailureError) as raised:
        await aemo_stack.stack.run_cycle(UNREADABLE_AT)
    # The submit stage's failure: wrapped in an ActivityError, or, from a local activity, its own error.
    assert isinstance(raised.value.cause, ActivityError | ApplicationError)
    failure = cause_of(raised.value)
    assert failure.type == ANSWER_UNREADABLE and failure.non_retryable and "is not JSON" in failure.message
    assert sum(sandbox.state.received.values()) == before + 1  # one submission, no retry
    record = await failed_cycle(settings, UNREADABLE_AT)
    assert record.status == "FAILED" and record.failure is not None and "recorded as UNREADABLE" in record.failure
    assert settings.database_url is not None
    async with await connect(settings.database_url) as conn:
        cursor = await conn.execute("SELECT state, sends FROM aemo_submissions WHERE dispatch_interval > %s "
                                    "AND dispatch_interval <= %s", (UNREADABLE_AT, UNREADABLE_AT + timedelta(hours=1)))
        rows = await cursor.fetchall()
    assert rows == [(aemo_store.UNREADABLE, 1)]


