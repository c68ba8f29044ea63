"""The bid service's ``aemo`` backend: bids go to AEMO's NEM Dispatch Bidding API, every exchange is recorded.

Selected by ``[bid_service] backend = "aemo"``; address, participant id and credentials come from the
environment (:meth:`aemo.bidding_api.BiddingApiConfig.from_environment`) and are never logged or stored.
What SubmitBid does:

1. Reads the bid's key (INVALID_ARGUMENT / NOT_FOUND as the simulated market). A bid whose outcome is known
   (the ``bids`` ledger) gets that answer again with ``duplicate=True``; nothing goes to AEMO.
2. Validates it (V0–V8, :func:`algorithms.market.bid_validation.validate_bid`, with the band prices of the
   day's first accepted bid): an invalid bid is stored REJECTED with its reasons and never leaves. A submission
   an earlier attempt stored was validated then (and may be at AEMO): it goes straight to step 3.
3. Writes the submission (``aemo_submissions``, state SUBMITTING, the ``submitBids`` JSON of
   :func:`aemo.bid_json.bid_to_submission`) and commits it before sending, under a row lock that serialises
   calls for one reference id. A submission found already stored (an earlier attempt timed out, got an
   unreadable answer, or the service stopped mid-call) is never sent blindly: AEMO is asked for its status by
   reference id first, and the JSON is sent only when AEMO answers that it has no such submission.
4. Follows the submission until AEMO acknowledges it: an answer RECEIVED is asked for again every
   ``aemo_poll_interval_s`` up to ``aemo_poll_attempts`` times. A DUPLICATE answer (AEMO already has the
   reference id) is followed by asking for the original's status.
5. Records AEMO's answer: every exchange in ``aemo_exchanges`` (status, HTTP code, reasons, body), the
   submission's state and transaction id, and the final outcome in the ``bids`` ledger (ACCEPTED, or REJECTED
   with AEMO's reasons, each ``AEMO <code>: <detail> [<field>]``), which the cycle reads like the simulated
   market's.

Failures are recorded first, then answered with a gRPC error whose trailing metadata ``vpp-failure-type``
names them: :data:`ANSWER_UNREADABLE` (DATA_LOSS) and :data:`CREDENTIALS_REFUSED` (UNAUTHENTICATED) are final
for the cycle; a time-out or an unreachable API (UNAVAILABLE, :data:`NO_ANSWER`, :data:`UNREACHABLE`) and a
submission not yet acknowledged (UNAVAILABLE, :data:`NOT_ACKNOWLEDGED`) may be retried: the retry asks AEMO
first.

Dispatch is AEMO's: GetDispatchOutcome answers FAILED_PRECONDITION (the live record stage reads DISPATCHLOAD),
GetUnitStatus the configured initial state of charge; GetBid reads the ledger (FAILED_PRECONDITION naming
the submission's state while AEMO has not decided).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from aemo import bidding_api
from aemo.bid_json import bid_to_submission, default_reference_id
from aemo.bidding_api import BiddingApiClient, BiddingApiConfig, SubmissionAnswer
from algorithms.common.content_hash import message_bytes, sha256_hex
from algorithms.common.products import PRODUCTS
from algorithms.market.bid_validation import validate_bid
from models import aemo_submissions as aemo_store
from models import bids as bid_store
from models.connections import Connections
from services.bid_service import (
    _STATUS_OF_TEXT,
    BidKey,
    BidRequestError,
    RegisteredUnit,
    bid_key,
    bid_record,
    submit_response,
)
from settings import BidServiceSettings, MarketRules
from vpp.v1 import bid_pb2, bid_pb2_grpc

log = logging.getLogger(__name__)

Response = TypeVar("Response")
FAILURE_TYPE_KEY = "vpp-failure-type"
# Failure types (gRPC trailing metadata ``vpp-failure-type``; the cycle's ApplicationError types).
ANSWER_UNREADABLE = "MarketAnswerUnreadable"
CREDENTIALS_REFUSED = "MarketCredentialsRefused"
NO_ANSWER = "MarketNoAnswer"
UNREACHABLE = "MarketUnreachable"
NOT_ACKNOWLEDGED = "MarketNotAcknowledged"


class MarketFailureError(BidRequestError):
    """A submission that did not reach a decision at AEMO; recorded before it is raised."""

    def __init__(self, code: grpc.StatusCode, failure_type: str, message: str) -> None:
        super().__init__(code, message)
        self.failure_type = failure_type


@dataclass(frozen=True)
class _Outcome:
    answer: SubmissionAnswer | None
    failure: MarketFailureError | None
    sent: bool


class AemoBidding(bid_pb2_grpc.BidServiceServicer):
    """BidService backed by AEMO's bidding API (see the module docstring); one database connection per call (new,
    or borrowed from the serving process's pool)."""

    def __init__(self, database_url: str, api: BiddingApiClient, units: Sequence[RegisteredUnit], rules: MarketRules,
                 options: BidServiceSettings, connections: Connections | None = None) -> None:
        """``connections``: autocommit connections to ``database_url`` (pooled by the serving process); a new
        connection per call without."""
        self._database_url = database_url
        self._connections = connections if connections is not None else Connections(database_url, autocommit=True)
        self._api = api
        self._units = {unit.spec.unit_id: unit for unit in units}
        self._rules = rules
        self._options = options

    # gRPC methods -----------------------------------------------------------------------------

    async def SubmitBid(  # noqa: N802 (gRPC method name)
        self, request: bid_pb2.SubmitBidRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bid_pb2.SubmitBidResponse:
        """Submit a bid to AEMO, idempotent by reference id (see the module docstring)."""
        return await _answer(context, lambda: self.submit(request))

    async def GetBid(  # noqa: N802
        self, request: bid_pb2.GetBidRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bid_pb2.GetBidResponse:
        """The bid with AEMO's decision (FAILED_PRECONDITION while AEMO has not decided)."""
        return await _answer(context, lambda: self.get_bid(request.bid_id))

    async def GetUnitStatus(  # noqa: N802
        self, request: bid_pb2.GetUnitStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bid_pb2.GetUnitStatusResponse:
        """The unit's configured initial state of charge (MWh); dispatch is read from AEMO elsewhere."""
        return await _answer(context, lambda: self.unit_status(request.unit_id))

    async def GetDispatchOutcome(  # noqa: N802
        self, request: bid_pb2.GetDispatchOutcomeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bid_pb2.GetDispatchOutcomeResponse:
        """FAILED_PRECONDITION: AEMO dispatches; its targets are read from DISPATCHLOAD by the record stage."""
        async def refuse() -> bid_pb2.GetDispatchOutcomeResponse:
            self._unit(request.unit_id)
            raise BidRequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                  "the aemo backend does not dispatch: AEMO's targets are read from DISPATCHLOAD")
        return await _answer(context, refuse)

    # Logic ------------------------------------------------------------------------------------

    def _unit(self, unit_id: str) -> RegisteredUnit:
        if not unit_id:
            raise BidRequestError(grpc.StatusCode.INVALID_ARGUMENT, "unit_id is missing")
        unit = self._units.get(unit_id)
        if unit is None:
            raise BidRequestError(grpc.StatusCode.NOT_FOUND, f"unit {unit_id!r} is not one of this participant's "
                                  f"units ({', '.join(repr(u) for u in sorted(self._units))})")
        return unit

    async def submit(self, request: bid_pb2.SubmitBidRequest) -> bid_pb2.SubmitBidResponse:
        """SubmitBid without the gRPC plumbing; BidRequestError / MarketFailureError for what it cannot conclude."""
        if not request.HasField("bid"):
            raise BidRequestError(grpc.StatusCode.INVALID_ARGUMENT, "request.bid is missing")
        bid = request.bid
        key = bid_key(bid, self._rules.interval_minutes)
        unit = self._unit(key.unit_id)
        reference_id = bid.reference_id or default_reference_id(bid)
        async with self._connections.connection() as conn:
            known = await bid_store.get_bid(conn, key.bid_id)
            if known is not None:
                return submit_response(known, duplicate=True)
            # A submission stored by an earlier attempt was validated then and may be at AEMO: it is settled with
            # AEMO, never judged again here.
            earlier = await aemo_store.get_submission(conn, reference_id)
            daily_prices = await bid_store.daily_band_prices(conn, key.unit_id, key.trading_day)
            violations = [] if earlier is not None else validate_bid(
                bid, unit.spec, self._rules, products=PRODUCTS, daily_band_prices=daily_prices)
            if violations:
                row, duplicate = await bid_store.insert_bid(conn, bid_record(bid, key, [str(v) for v in violations]))
                log.info("bid %s REJECTED before submission: %s", row.bid_id, "; ".join(row.reasons))
                return submit_response(row, duplicate=duplicate)
            try:
                submission = bid_to_submission(bid, authorised_by=self._options.aemo_authorised_by)
            except ValueError as error:
                raise BidRequestError(grpc.StatusCode.INVALID_ARGUMENT, f"bid {key.bid_id}: {error}") from None
            payload = message_bytes(bid)
            stored, created = await aemo_store.claim_submission(
                conn, reference_id=reference_id, bid_id=key.bid_id, unit_id=key.unit_id,
                trading_day=key.trading_day, dispatch_interval=key.dispatch_interval, version=key.version,
                payload=payload, submission=submission, content_hash=sha256_hex(payload))
            if stored.bid_id != key.bid_id:
                raise BidRequestError(grpc.StatusCode.ALREADY_EXISTS, f"reference id {reference_id} was already "
                                      f"used for bid {stored.bid_id}; bid {key.bid_id} needs a reference of its own")
            async with conn.transaction():
                locked = await aemo_store.lock_submission(conn, reference_id)
                assert locked is not None
                known = await bid_store.get_bid(conn, key.bid_id)  # decided while this call waited for the lock
                outcome = None if known is not None else await self._settle(conn, locked, fresh=created)
                if outcome is not None and outcome.answer is not None:
                    known = await self._conclude(conn, bid, key, outcome.answer)
        if outcome is not None and outcome.failure is not None:
            raise outcome.failure
        assert known is not None
        duplicate = outcome is None or not outcome.sent
        log.info("bid %s (reference %s) %s at AEMO%s", known.bid_id, reference_id, known.status,
                 f": {'; '.join(known.reasons)}" if known.reasons else "")
        return submit_response(known, duplicate=duplicate)

    async def _settle(self, conn: aemo_store.AsyncConn, stored: aemo_store.AemoSubmission, *, fresh: bool) -> _Outcome:
        """Send (a fresh submission) or ask first (one stored before), then follow until AEMO decides."""
        reference_id = stored.reference_id
        sent = False
        try:
            if fresh:
                answer = await self._send(conn, stored)
                sent = True
            else:
                answer = await self._ask(conn, reference_id)
                if answer.status == bidding_api.NOT_FOUND:
                    log.info("AEMO has no submission %s (state %s): sending it", reference_id, stored.state)
                    answer = await self._send(conn, stored)
                    sent = True
            if answer.status == bidding_api.DUPLICATE:  # AEMO had it already: what became of the original?
                sent = False
                answer = await self._ask(conn, reference_id)
            attempts = 0
            while answer.status == bidding_api.RECEIVED and attempts < self._options.aemo_poll_attempts:
                await asyncio.sleep(self._options.aemo_poll_interval_s)
                answer = await self._ask(conn, reference_id)
                attempts += 1
            if answer.status == bidding_api.RECEIVED:
                await aemo_store.set_state(conn, reference_id, aemo_store.RECEIVED, transaction_id=answer.transaction_id
                                           or None, reasons=("received, not yet acknowledged",))
                return _Outcome(None, MarketFailureError(
                    grpc.StatusCode.UNAVAILABLE, NOT_ACKNOWLEDGED,
                    f"AEMO received submission {reference_id} but had not acknowledged it after {attempts} "
                    "status requests; recorded as RECEIVED: the next attempt asks AEMO again"), sent)
            if answer.status not in (bidding_api.ACCEPTED, bidding_api.REJECTED):
                raise bidding_api.BiddingApiUnreadableError(
                    f"AEMO answered {answer.status} about submission {reference_id} where it had to say ACCEPTED or "
                    "REJECTED", answer.answer)
            return _Outcome(answer, None, sent)
        except bidding_api.BiddingApiError as error:
            return _Outcome(None, await self._record_failure(conn, reference_id, error), sent)

    async def _send(self, conn: aemo_store.AsyncConn, stored: aemo_store.AemoSubmission) -> SubmissionAnswer:
        await aemo_store.count_send(conn, stored.reference_id)
        return await self._exchange(conn, stored.reference_id, aemo_store.SUBMIT, self._api.submit(stored.submission))

    async def _ask(self, conn: aemo_store.AsyncConn, reference_id: str) -> SubmissionAnswer:
        return await self._exchange(conn, reference_id, aemo_store.STATUS, self._api.submission_status(reference_id))

    async def _exchange(self, conn: aemo_store.AsyncConn, reference_id: str, operation: str,
                        call: Awaitable[SubmissionAnswer]) -> SubmissionAnswer:
        """Make one request to AEMO and record it (answer or failure)."""
        try:
            answer = await call
        except bidding_api.BiddingApiUnreadableError as error:
            await aemo_store.record_exchange(conn, reference_id, operation, aemo_store.UNREADABLE, detail=str(error),
                                             answer=error.answer)
            raise
        except bidding_api.BiddingApiError as error:
            await aemo_store.record_exchange(conn, reference_id, operation, _failure_state(error), detail=str(error))
            raise
        await aemo_store.record_exchange(conn, reference_id, operation, answer.status, http_status=answer.http_status,
                                         detail="; ".join(str(r) for r in answer.reasons), answer=answer.answer)
        return answer

    async def _record_failure(self, conn: aemo_store.AsyncConn, reference_id: str,
                              error: bidding_api.BiddingApiError) -> MarketFailureError:
        state = _failure_state(error)
        await aemo_store.set_state(conn, reference_id, state, reasons=(str(error),))
        log.warning("submission %s: %s (recorded as %s)", reference_id, error, state)
        if isinstance(error, bidding_api.BiddingApiUnreadableError):
            return MarketFailureError(grpc.StatusCode.DATA_LOSS, ANSWER_UNREADABLE,
                                 f"submission {reference_id}: {error}; recorded as UNREADABLE: whether AEMO has the "
                                 "bid is asked by reference id before anything is sent again")
        if isinstance(error, bidding_api.BiddingApiRefusedError):
            return MarketFailureError(grpc.StatusCode.UNAUTHENTICATED, CREDENTIALS_REFUSED,
                                 f"submission {reference_id}: {error}; recorded as REFUSED")
        if isinstance(error, bidding_api.BiddingApiTimeoutError):
            return MarketFailureError(grpc.StatusCode.UNAVAILABLE, NO_ANSWER,
                                 f"submission {reference_id}: {error}; recorded as TIMED_OUT: the next attempt asks "
                                 "AEMO for its status by reference id before sending anything")
        return MarketFailureError(grpc.StatusCode.UNAVAILABLE, UNREACHABLE,
                             f"submission {reference_id}: {error}; recorded as {state}")

    async def _conclude(self, conn: aemo_store.AsyncConn, bid: bid_pb2.Bid, key: BidKey,
                        answer: SubmissionAnswer) -> bid_store.BidRow:
        """Record AEMO's decision on the submission and in the bids ledger; the ledger's row."""
        reasons = tuple(str(reason) for reason in answer.reasons) if answer.status == bidding_api.REJECTED else ()
        await aemo_store.set_state(conn, answer.reference_id, answer.status,
                                   transaction_id=answer.transaction_id or None, reasons=reasons)
        row, _ = await bid_store.insert_bid(conn, bid_record(bid, key, reasons))
        return row

    async def get_bid(self, bid_id: str) -> bid_pb2.GetBidResponse:
        """GetBid without the gRPC plumbing; BidRequestError INVALID_ARGUMENT / NOT_FOUND."""
        if not bid_id:
            raise BidRequestError(grpc.StatusCode.INVALID_ARGUMENT, "bid_id is missing")
        async with self._connections.connection() as conn:
            row = await bid_store.get_bid(conn, bid_id)
            pending = None if row is not None else await aemo_store.submission_of_bid(conn, bid_id)
        if row is not None:
            return bid_pb2.GetBidResponse(bid_id=row.bid_id, bid=row.bid(), status=_STATUS_OF_TEXT[row.status],
                                          reasons=list(row.reasons))
        if pending is None:
            raise BidRequestError(grpc.StatusCode.NOT_FOUND, f"no bid with id {bid_id!r}")
        raise BidRequestError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"bid {bid_id} (reference {pending.reference_id}) has no decision from AEMO yet: "
                              f"{pending.state}{': ' + '; '.join(pending.reasons) if pending.reasons else ''}")

    async def unit_status(self, unit_id: str) -> bid_pb2.GetUnitStatusResponse:
        """GetUnitStatus without the gRPC plumbing: the configured initial state of charge (MWh), 0 MW."""
        unit = self._unit(unit_id)
        return bid_pb2.GetUnitStatusResponse(unit_id=unit_id, state_of_charge_mwh=unit.initial_state_of_charge_mwh,
                                             net_mw=0.0)


def _failure_state(error: bidding_api.BiddingApiError) -> str:
    if isinstance(error, bidding_api.BiddingApiUnreadableError):
        return aemo_store.UNREADABLE
    if isinstance(error, bidding_api.BiddingApiRefusedError):
        return aemo_store.REFUSED
    if isinstance(error, bidding_api.BiddingApiTimeoutError):
        return aemo_store.TIMED_OUT
    return aemo_store.UNAVAILABLE


async def _answer(context: grpc.aio.ServicerContext[Any, Any], handler: Callable[[], Awaitable[Response]]) -> Response:
    """Run ``handler``; a MarketFailureError is answered with its code and ``vpp-failure-type``, the rest as the
    simulated market answers (services.bid_service)."""
    from services.bid_service import _answer as answer_as_market

    try:
        return await handler()
    except MarketFailureError as failure:
        await context.abort(failure.code, str(failure), trailing_metadata=((FAILURE_TYPE_KEY, failure.failure_type),))
        raise
    except Exception as error:
        failed = error

        async def again() -> Response:
            raise failed
        return await answer_as_market(context, again)


def aemo_market(database_url: str, units: Sequence[RegisteredUnit], rules: MarketRules, options: BidServiceSettings,
                environ: Mapping[str, str] | None = None, connections: Connections | None = None) -> AemoBidding:
    """The aemo backend for ``units``, talking to the API the environment configures (``environ``, default
    ``os.environ``; ``connections`` as for :class:`AemoBidding`); :class:`aemo.bidding_api.BiddingApiConfigError`
    naming what is missing."""
    config = BiddingApiConfig.from_environment(os.environ if environ is None else environ,
                                               timeout_s=options.aemo_timeout_s)
    return AemoBidding(database_url, BiddingApiClient(config), units, rules, options, connections)

