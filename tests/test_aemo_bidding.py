"""The bid service's aemo backend: a real gRPC bid service over a real PostgreSQL database, submitting over real
HTTP to the AEMO stand-in (aemo_sandbox), which decides with its own checks."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import grpc
import pytest

from aemo.bid_json import bid_to_submission, default_reference_id
from aemo.bidding_api import BiddingApiClient, BiddingApiConfig, BiddingApiConfigError
from aemo_sandbox.rules import UnitDefaults
from aemo_sandbox.server import FAULT_LATE, FAULT_MALFORMED, SandboxClock, SandboxConfig, SandboxServer
from models import aemo_submissions as aemo_store
from models import bids as bid_store
from models.db import connect, migrate
from services import bid_service
from services.aemo_bidding import (
    ANSWER_UNREADABLE,
    CREDENTIALS_REFUSED,
    FAILURE_TYPE_KEY,
    NO_ANSWER,
    UNREACHABLE,
)
from services.health import wait_healthy
from settings import Settings
from tests.conftest import free_port
from tests.test_bid_service import GEN_PRICES, LOAD_PRICES, T, make_bid
from vpp.v1 import bid_pb2

PARTICIPANT = "OPENVPP1"
USER = "bidder-7f3a"
PASSWORD = "s3cret-Pa55-word-9d1c"
FCAS_PRICES = (0.0, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 1000.0, 10000.0)
# The stand-in's market clock: ten minutes before the bids' first interval (T ends 18:30, starts 18:25).
BEFORE_GATE = T - timedelta(minutes=10)


def sandbox_config(unit_id: str, *, acknowledge_after_polls: int = 0) -> SandboxConfig:
    """The participant owning ``unit_id`` whose default bid has the test bids' band prices."""
    return SandboxConfig(participant_id=PARTICIPANT, username=USER, password=PASSWORD,
                         units={unit_id: UnitDefaults(unit_id, tuple(GEN_PRICES), tuple(LOAD_PRICES), FCAS_PRICES)},
                         acknowledge_after_polls=acknowledge_after_polls)


def api_environment(url: str, *, password: str = PASSWORD) -> dict[str, str]:
    return {"VPP_AEMO_API_URL": url, "VPP_AEMO_PARTICIPANT_ID": PARTICIPANT, "VPP_AEMO_API_USER": USER,
            "VPP_AEMO_API_PASSWORD": password}


@dataclass(frozen=True)
class AemoMarket:
    """A running bid service (aemo backend) for one fresh unit, and the stand-in it submits to."""

    address: str
    settings: Settings
    database_url: str
    sandbox: SandboxServer

    @property
    def unit_id(self) -> str:
        return self.settings.battery.unit_id


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> str:
    migrate(database_url)
    return database_url


async def start_market(settings: Settings, database_url: str, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch,
                       *, password: str = PASSWORD, timeout_s: float = 10.0) -> tuple[AemoMarket, asyncio.Event,
                                                                                    asyncio.Task[None]]:
    for name, value in api_environment(sandbox.url, password=password).items():
        monkeypatch.setenv(name, value)
    unit_id = next(iter(sandbox.state.config.units))
    configured = replace(
        settings, database_url=database_url, battery=replace(settings.battery, unit_id=unit_id),
        stack=replace(settings.stack, bid_service_port=free_port()),
        bid_service=replace(settings.bid_service, backend="aemo", aemo_timeout_s=timeout_s,
                            aemo_poll_interval_s=0.05))
    stop = asyncio.Event()
    task = asyncio.create_task(bid_service.serve(configured, stop))
    address = f"127.0.0.1:{configured.stack.bid_service_port}"
    await wait_healthy(address, timeout_s=20)
    return AemoMarket(address, configured, database_url, sandbox), stop, task


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(sandbox_config(f"T{uuid.uuid4().hex[:8]}"), SandboxClock.at(BEFORE_GATE)) as server:
        yield server


@pytest.fixture
async def market(settings: Settings, migrated_database: str, sandbox: SandboxServer,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AemoMarket]:
    running, stop, task = await start_market(settings, migrated_database, sandbox, monkeypatch, timeout_s=1.0)
    try:
        yield running
    finally:
        stop.set()
        await task


async def stored(market: AemoMarket, reference_id: str) -> tuple[aemo_store.AemoSubmission | None,
                                                                  list[aemo_store.AemoExchange]]:
    async with await connect(market.database_url) as conn:
        return (await aemo_store.get_submission(conn, reference_id),
                await aemo_store.list_exchanges(conn, reference_id))


async def ledger_row(market: AemoMarket, bid_id: str) -> bid_store.BidRow | None:
    async with await connect(market.database_url) as conn:
        return await bid_store.get_bid(conn, bid_id)


def failure_type(error: grpc.aio.AioRpcError) -> str | None:
    return next((str(v) for k, v in (error.trailing_metadata() or ()) if k == FAILURE_TYPE_KEY), None)


async def test_accepted_bid_is_recorded_with_aemos_transaction_and_a_resubmission_is_a_duplicate(
        market: AemoMarket) -> None:
    bid = make_bid(market.unit_id, T, count=3)
    reference_id = default_reference_id(bid)
    first = await bid_service.submit_bid(market.address, bid)
    assert first.status == bid_pb2.BID_STATUS_ACCEPTED and not first.duplicate and not first.reasons

    at_aemo = market.sandbox.state.submission(reference_id)
    assert at_aemo is not None and at_aemo.status == "ACCEPTED" and at_aemo.entry_type == "REBID"
    submission, exchanges = await stored(market, reference_id)
    assert submission is not None and submission.state == aemo_store.ACCEPTED
    assert submission.transaction_id == at_aemo.transaction_id and submission.sends == 1
    assert submission.submission["referenceId"] == reference_id
    assert [(e.operation, e.outcome, e.http_status) for e in exchanges] == [("submitBids", "ACCEPTED", 200)]
    row = await ledger_row(market, first.bid_id)
    assert row is not None and row.status == bid_store.ACCEPTED

    again = await bid_service.submit_bid(market.address, bid)
    assert again.duplicate and again.status == bid_pb2.BID_STATUS_ACCEPTED and again.bid_id == first.bid_id
    assert market.sandbox.state.received[reference_id] == 1  # nothing sent the second time
    fetched = await bid_service.get_bid(market.address, first.bid_id)
    assert fetched.status == bid_pb2.BID_STATUS_ACCEPTED and fetched.bid == bid


async def test_bid_aemo_rejects_is_recorded_with_aemos_reasons(market: AemoMarket) -> None:
    changed = [p + 1.0 for p in GEN_PRICES]  # after 12:30 D-1 the default bid's prices are fixed
    bid = make_bid(market.unit_id, T, gen_prices=changed)
    answer = await bid_service.submit_bid(market.address, bid)
    assert answer.status == bid_pb2.BID_STATUS_REJECTED and not answer.duplicate
    assert len(answer.reasons) == 1
    assert answer.reasons[0].startswith("AEMO PRICE_BANDS_FIXED: ENERGY GEN prices of")
    assert "differ from the default bid" in answer.reasons[0] and "energyBids[0].prices" in answer.reasons[0]
    submission, exchanges = await stored(market, default_reference_id(bid))
    assert submission is not None and submission.state == aemo_store.REJECTED
    assert submission.reasons == list(answer.reasons)
    assert [(e.operation, e.outcome, e.http_status) for e in exchanges] == [("submitBids", "REJECTED", 400)]
    row = await ledger_row(market, answer.bid_id)
    assert row is not None and row.status == bid_store.REJECTED and row.reasons == list(answer.reasons)


async def test_rebid_after_gate_closure_is_rejected_by_aemo(market: AemoMarket) -> None:
    market.sandbox.state.set_clock(SandboxClock.at(T - timedelta(minutes=4)))  # interval ending T started 1 min ago
    answer = await bid_service.submit_bid(market.address, make_bid(market.unit_id, T, count=2))
    assert answer.status == bid_pb2.BID_STATUS_REJECTED
    assert any(reason.startswith("AEMO GATE_CLOSED:") and "1 period(s) closed" in reason for reason in answer.reasons)


async def test_a_reference_aemo_already_has_is_answered_as_a_duplicate_with_the_original_outcome(
        market: AemoMarket) -> None:
    bid = make_bid(market.unit_id, T)
    reference_id = default_reference_id(bid)
    # Submitted before, by a service whose database is gone: AEMO knows the reference, the platform does not.
    config = BiddingApiConfig(market.sandbox.url, PARTICIPANT, USER, PASSWORD)
    earlier = await BiddingApiClient(config).submit(bid_to_submission(bid))
    assert earlier.status == "ACCEPTED"

    answer = await bid_service.submit_bid(market.address, bid)
    assert answer.duplicate and answer.status == bid_pb2.BID_STATUS_ACCEPTED
    submission, exchanges = await stored(market, reference_id)
    assert submission is not None and submission.state == aemo_store.ACCEPTED
    assert submission.transaction_id == earlier.transaction_id
    assert [(e.operation, e.outcome) for e in exchanges] == [("submitBids", "DUPLICATE"), ("getSubmission", "ACCEPTED")]


async def test_time_out_is_recorded_and_the_retry_asks_aemo_instead_of_submitting_again(market: AemoMarket) -> None:
    bid = make_bid(market.unit_id, T)
    reference_id = default_reference_id(bid)
    market.sandbox.state.add_fault(FAULT_LATE, delay_s=2.5)  # the client waits 1 s
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await bid_service.submit_bid(market.address, bid)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and failure_type(raised.value) == NO_ANSWER
    assert "recorded as TIMED_OUT" in (raised.value.details() or "")
    submission, exchanges = await stored(market, reference_id)
    assert submission is not None and submission.state == aemo_store.TIMED_OUT and submission.sends == 1
    assert [(e.operation, e.outcome, e.http_status) for e in exchanges] == [("submitBids", "TIMED_OUT", None)]
    assert await ledger_row(market, bid_service.bid_key(bid).bid_id) is None

    answer = await bid_service.submit_bid(market.address, bid)  # the activity's retry
    assert answer.status == bid_pb2.BID_STATUS_ACCEPTED and answer.duplicate
    assert market.sandbox.state.received[reference_id] == 1  # never a second submission
    submission, exchanges = await stored(market, reference_id)
    assert submission is not None and submission.state == aemo_store.ACCEPTED and submission.sends == 1
    assert [(e.operation, e.outcome) for e in exchanges][1:] == [("getSubmission", "ACCEPTED")]


async def test_malformed_answer_is_a_recorded_final_failure_and_never_a_second_submission(
        market: AemoMarket) -> None:
    bid = make_bid(market.unit_id, T)
    reference_id = default_reference_id(bid)
    market.sandbox.state.add_fault(FAULT_MALFORMED)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await bid_service.submit_bid(market.address, bid)
    assert raised.value.code() == grpc.StatusCode.DATA_LOSS and failure_type(raised.value) == ANSWER_UNREADABLE
    assert "is not JSON" in (raised.value.details() or "")
    submission, exchanges = await stored(market, reference_id)
    assert submission is not None and submission.state == aemo_store.UNREADABLE
    assert exchanges[-1].outcome == "UNREADABLE" and exchanges[-1].answer is not None
    assert "502 Bad Gateway" in exchanges[-1].answer
    with pytest.raises(grpc.aio.AioRpcError) as pending:
        await bid_service.get_bid(market.address, bid_service.bid_key(bid).bid_id)
    assert pending.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "UNREADABLE" in (pending.value.details() or "")

    answer = await bid_service.submit_bid(market.address, bid)
    assert answer.status == bid_pb2.BID_STATUS_ACCEPTED and answer.duplicate
    assert market.sandbox.state.received[reference_id] == 1


async def test_invalid_bid_never_leaves(market: AemoMarket) -> None:
    bid = make_bid(market.unit_id, T, gen_prices=[10.0, 5.0, *GEN_PRICES[2:]])  # V1: not increasing
    answer = await bid_service.submit_bid(market.address, bid)
    assert answer.status == bid_pb2.BID_STATUS_REJECTED
    assert all(not reason.startswith("AEMO") for reason in answer.reasons)
    assert market.sandbox.state.received[default_reference_id(bid)] == 0
    submission, _ = await stored(market, default_reference_id(bid))
    assert submission is None


async def test_a_submission_aemo_has_received_is_followed_until_acknowledged(
        settings: Settings, migrated_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    unit_id = f"T{uuid.uuid4().hex[:8]}"
    with SandboxServer(sandbox_config(unit_id, acknowledge_after_polls=2), SandboxClock.at(BEFORE_GATE)) as sandbox:
        market, stop, task = await start_market(settings, migrated_database, sandbox, monkeypatch)
        try:
            bid = make_bid(unit_id, T)
            answer = await bid_service.submit_bid(market.address, bid)
        finally:
            stop.set()
            await task
    assert answer.status == bid_pb2.BID_STATUS_ACCEPTED and not answer.duplicate
    _, exchanges = await stored(market, default_reference_id(bid))
    assert [(e.operation, e.outcome) for e in exchanges] == [
        ("submitBids", "RECEIVED"), ("getSubmission", "RECEIVED"), ("getSubmission", "RECEIVED"),
        ("getSubmission", "ACCEPTED")]


async def test_refused_credentials_are_recorded_and_no_credential_is_logged_or_stored(
        settings: Settings, migrated_database: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    unit_id = f"T{uuid.uuid4().hex[:8]}"
    wrong = "wrong-Pa55-0e2b"
    with SandboxServer(sandbox_config(unit_id), SandboxClock.at(BEFORE_GATE)) as sandbox:
        market, stop, task = await start_market(settings, migrated_database, sandbox, monkeypatch, password=wrong)
        try:
            refused_bid = make_bid(unit_id, T)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await bid_service.submit_bid(market.address, refused_bid)
        finally:
            stop.set()
            await task
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert failure_type(raised.value) == CREDENTIALS_REFUSED
        refused, _ = await stored(market, default_reference_id(refused_bid))
        assert refused is not None and refused.state == aemo_store.REFUSED
        market, stop, task = await start_market(settings, migrated_database, sandbox, monkeypatch)
        try:
            accepted = await bid_service.submit_bid(market.address, make_bid(unit_id, T + timedelta(minutes=5)))
            assert accepted.status == bid_pb2.BID_STATUS_ACCEPTED
        finally:
            stop.set()
            await task
    assert PASSWORD not in repr(BiddingApiConfig(sandbox.url, PARTICIPANT, USER, PASSWORD))
    platform_logs = "\n".join(record.getMessage() for record in caplog.records
                               if not record.name.startswith("aemo_sandbox"))
    assert "submission" in platform_logs  # the logs were captured
    for secret in (PASSWORD, wrong, USER, PARTICIPANT, sandbox.url):
        assert secret not in platform_logs, f"{secret!r} appears in the logs"
    async with await connect(migrated_database) as conn:
        cursor = await conn.execute(
            "SELECT s.submission::text || coalesce(string_agg(e.detail || coalesce(e.answer, ''), ''), '')"
            " FROM aemo_submissions s LEFT JOIN aemo_exchanges e USING (reference_id) WHERE s.unit_id = %s"
            " GROUP BY s.reference_id", (unit_id,))
        rows: list[Any] = await cursor.fetchall()
    assert len(rows) == 2
    for (text,) in rows:
        assert PASSWORD not in text and wrong not in text and USER not in text


async def test_the_aemo_backend_needs_its_environment(settings: Settings, migrated_database: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VPP_AEMO_API_URL", "VPP_AEMO_PARTICIPANT_ID", "VPP_AEMO_API_USER", "VPP_AEMO_API_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VPP_AEMO_API_URL", "http://127.0.0.1:9/NEMWholesale/bidding/v1")
    configured = replace(settings, database_url=migrated_database,
                         stack=replace(settings.stack, bid_service_port=free_port()),
                         bid_service=replace(settings.bid_service, backend="aemo"))
    with pytest.raises(BiddingApiConfigError) as raised:
        await bid_service.serve(configured, asyncio.Event())
    assert str(raised.value) == ("the aemo bid backend needs VPP_AEMO_PARTICIPANT_ID, VPP_AEMO_API_USER, "
                                 "VPP_AEMO_API_PASSWORD in the environment")




async def test_a_restarted_service_asks_aemo_about_a_submission_that_timed_out(
        settings: Settings, migrated_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    unit_id = f"T{uuid.uuid4().hex[:8]}"
    with SandboxServer(sandbox_config(unit_id), SandboxClock.at(BEFORE_GATE)) as sandbox:
        bid = make_bid(unit_id, T)
        reference_id = default_reference_id(bid)
        sandbox.state.add_fault(FAULT_LATE, delay_s=2.0)
        market, stop, task = await start_market(settings, migrated_database, sandbox, monkeypatch, timeout_s=0.5)
        try:
            with pytest.raises(grpc.aio.AioRpcError):
                await bid_service.submit_bid(market.address, bid)
        finally:
            stop.set()
            await task
        await asyncio.sleep(2.0)  # AEMO decides on the late submission meanwhile
        market, stop, task = await start_market(settings, migrated_database, sandbox, monkeypatch)
        try:
            answer = await bid_service.submit_bid(market.address, bid)
        finally:
            stop.set()
            await task
        assert answer.status == bid_pb2.BID_STATUS_ACCEPTED and answer.duplicate
        assert sandbox.state.received[reference_id] == 1


async def test_a_submission_sent_before_a_crash_is_asked_for_and_never_sent_again(market: AemoMarket) -> None:
    bid = make_bid(market.unit_id, T)
    reference_id = default_reference_id(bid)
    key = bid_service.bid_key(bid)
    payload = bid_to_submission(bid, authorised_by=market.settings.bid_service.aemo_authorised_by)
    # The service stored the submission, sent it and died before recording AEMO's answer.
    async with await connect(market.database_url, autocommit=True) as conn:
        await aemo_store.claim_submission(
            conn, reference_id=reference_id, bid_id=key.bid_id, unit_id=key.unit_id, trading_day=key.trading_day,
            dispatch_interval=key.dispatch_interval, version=key.version, payload=bid.SerializeToString(),
            submission=payload, content_hash="0" * 64)
    config = BiddingApiConfig(market.sandbox.url, PARTICIPANT, USER, PASSWORD)
    assert (await BiddingApiClient(config).submit(payload)).status == "ACCEPTED"

    answer = await bid_service.submit_bid(market.address, bid)
    assert answer.status == bid_pb2.BID_STATUS_ACCEPTED and answer.duplicate
    assert market.sandbox.state.received[reference_id] == 1
    _, exchanges = await stored(market, reference_id)
    assert [(e.operation, e.outcome) for e in exchanges] == [("getSubmission", "ACCEPTED")]


async def test_a_stored_submission_aemo_never_received_is_sent_once(market: AemoMarket) -> None:
    bid = make_bid(market.unit_id, T)
    reference_id = default_reference_id(bid)
    key = bid_service.bid_key(bid)
    # The service stored the submission and died before sending it.
    async with await connect(market.database_url, autocommit=True) as conn:
        await aemo_store.claim_submission(
            conn, reference_id=reference_id, bid_id=key.bid_id, unit_id=key.unit_id, trading_day=key.trading_day,
            dispatch_interval=key.dispatch_interval, version=key.version, payload=bid.SerializeToString(),
            submission=bid_to_submission(bid), content_hash="0" * 64)
    answer = await bid_service.submit_bid(market.address, bid)
    assert answer.status == bid_pb2.BID_STATUS_ACCEPTED
    assert market.sandbox.state.received[reference_id] == 1
    _, exchanges = await stored(market, reference_id)
    assert [(e.operation, e.outcome) for e in exchanges] == [("getSubmission", "NOT_FOUND"), ("submitBids", "ACCEPTED")]


async def test_an_unreachable_api_is_recorded_and_its_address_is_not_logged(
        settings: Settings, migrated_database: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    unit_id = f"T{uuid.uuid4().hex[:8]}"
    with SandboxServer(sandbox_config(unit_id), SandboxClock.at(BEFORE_GATE)) as sandbox:
        pass  # stopped: its port answers no more
    market, stop, task = await start_market(settings, migrated_database, sandbox, monkeypatch)
    try:
        bid = make_bid(unit_id, T)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await bid_service.submit_bid(market.address, bid)
    finally:
        stop.set()
        await task
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and failure_type(raised.value) == UNREACHABLE
    submission, exchanges = await stored(market, default_reference_id(bid))
    assert submission is not None and submission.state == aemo_store.UNAVAILABLE
    assert [(e.operation, e.outcome) for e in exchanges] == [("submitBids", "UNAVAILABLE")]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "cannot be reached" in logged
    assert sandbox.url not in logged and sandbox.url.split("/NEMWholesale")[0] not in logged
