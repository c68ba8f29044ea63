"""The simulated NEM: the BidService gRPC server over PostgreSQL, a price taker facing historical prices.

What it does with a SubmitBid:

1. Checks the request (bid, unit, trading day and dispatch interval present and readable, interval on
   the 5-minute grid: else INVALID_ARGUMENT; a unit other than the configured battery: NOT_FOUND).
2. A bid whose key (unit, trading day, first dispatch interval, version) was already submitted gets the
   stored answer with ``duplicate=True``; nothing is validated, stored or cleared again.
3. Validates the bid (rules V0–V8, :func:`algorithms.market.bid_validation.validate_bid`, with the products of
   the price data and the band prices in force for the day: its DAILY bid's, else its first accepted
   bid's). An invalid bid is stored as REJECTED with its reasons (the audit trail) and answered REJECTED
   with the reasons; it is never cleared.
4. A valid day-ahead daily bid (a DAILY entry from the trading day's first interval, offered before 12:30
   on D−1: :func:`is_day_ahead_daily_bid`) is stored as ACCEPTED and clears nothing yet: its band prices
   are the day's (rule V4 holds every later rebid of the day to them, :func:`models.bids.daily_band_prices`)
   and it is the bid in force for the day's intervals until a rebid covers them. Any other valid bid is
   stored as ACCEPTED and cleared, in the same transaction and under a row lock on the unit's state
   (``SELECT ... FOR UPDATE``), every not-yet-cleared interval of the unit up to and including the bid's
   dispatch interval, in order, against the historical DISPATCHPRICE of the unit's region.

Simplifications of the simulated market (a real market adapter implements the same service):

- The bid's first interval is cleared as soon as the bid is accepted, so its outcome (GetBid) is known at
  once; a real market reports outcomes after the interval has been dispatched.
- Catch-up: intervals after the unit's last cleared interval are cleared from the newest accepted bid
  covering each (:func:`models.bids.latest_accepted_bid_covering`); an interval no bid covers, or with
  no usable price in the data, dispatches 0 MW (the outcome carries a note saying so).
- Catch-up is bounded: when the gap since the last cleared interval is longer than one trading day
  (``market.intervals_per_trading_day`` intervals), the unit starts afresh at the interval before the
  bid (initial state of charge, 0 MW) instead of clearing the whole gap. The first bid of a unit also
  starts it afresh.
- A bid whose first interval is already cleared is stored (it may cover later intervals) but clears
  nothing now; GetBid reports ``cleared`` only for an interval cleared from that very bid.
- Each interval of a unit is cleared at most once (primary key of ``cleared_intervals``), so revenue is
  never double counted, even under concurrent submissions.

Prices: ENERGY $/MWh (RRP), FCAS $/MW/h; times are interval-ending AEST (naive) inside, UTC protobuf
timestamps on the wire. Market depth: where the data has DISPATCHREGIONSUM (the market store), each FCAS
enablement is capped at ``[market_depth] fcas_enablement_share`` × the MW the region enabled of the service
(:mod:`algorithms.market.depth`); energy is price-taking.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from aemo.price_thresholds import read_price_thresholds, with_price_thresholds
from aemo.store_prices import configured_dispatch_prices
from algorithms.common import nem_time
from algorithms.common.battery import battery_spec_from_settings
from algorithms.common.content_hash import message_bytes, sha256_hex
from algorithms.common.products import ENERGY
from algorithms.market.bid_columns import ColumnarBid
from algorithms.market.bid_validation import validate_bid
from algorithms.market.clearing import (
    clear_interval,
    to_market_outcome,
    with_administered_pricing,
)
from algorithms.market.depth import interval_caps_mw
from algorithms.market.prices import DispatchPrices
from models import bids as bid_store
from models.connections import Connections
from models.db import migrate
from services.health import SERVER_OPTIONS, add_health, bind_port
from services.security import ChannelPool, EdgeSecurity, call_channel, channel, secure_server
from settings import BatterySettings, MarketRules, Settings
from vpp.v1 import bid_pb2, bid_pb2_grpc, common_pb2

log = logging.getLogger(__name__)

SERVICE_NAME: str = bid_pb2.DESCRIPTOR.services_by_name["BidService"].full_name
_STATUS_OF_TEXT = {
    bid_store.ACCEPTED: bid_pb2.BID_STATUS_ACCEPTED,
    bid_store.REJECTED: bid_pb2.BID_STATUS_REJECTED,
}
_STOP_GRACE_S = 2.0

Response = TypeVar("Response")


class BidRequestError(ValueError):
    """A request the market cannot act on; ``code`` is the gRPC status it is answered with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def bid_id_for(unit_id: str, trading_day: date, dispatch_interval: datetime, version: int) -> str:
    """The market's id of a bid: ``"{unit_id}/{trading_day}/{interval_no:03d}/v{version}"``.

    ``interval_no`` is the period number 1..288 of ``dispatch_interval`` (interval-ending AEST) within its
    trading day, e.g. ``bid_id_for("HPR1", date(2021, 1, 10), datetime(2021, 1, 10, 4, 5), 1)`` is
    ``"HPR1/2021-01-10/001/v1"``.
    """
    return f"{unit_id}/{trading_day.isoformat()}/{nem_time.interval_number(dispatch_interval):03d}/v{version}"


@dataclass(frozen=True)
class BidKey:
    """The idempotency key of a bid: unit, trading day, first dispatch interval (AEST), version."""

    unit_id: str
    trading_day: date
    dispatch_interval: datetime
    version: int

    @property
    def bid_id(self) -> str:
        """The market's id of the bid (:func:`bid_id_for`)."""
        return bid_id_for(self.unit_id, self.trading_day, self.dispatch_interval, self.version)


def bid_key(bid: bid_pb2.Bid, interval_minutes: int = 5) -> BidKey:
    """The key of ``bid``; BidRequestError(INVALID_ARGUMENT) when a field of the key is missing or unreadable.

    The dispatch interval must lie on the ``interval_minutes`` grid (interval-ending AEST).
    """
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    if not bid.unit_id:
        raise BidRequestError(invalid, "bid.unit_id is missing")
    if not bid.HasField("dispatch_interval"):
        raise BidRequestError(invalid, "bid.dispatch_interval is missing")
    if not bid.trading_day:
        raise BidRequestError(invalid, "bid.trading_day is missing (YYYY-MM-DD)")
    try:
        day = date.fromisoformat(bid.trading_day)
    except ValueError:
        message = f"bid.trading_day {bid.trading_day!r} is not a YYYY-MM-DD date"
        raise BidRequestError(invalid, message) from None
    try:
        first_interval = nem_time.from_timestamp(bid.dispatch_interval)
    except (OverflowError, ValueError, OSError) as exc:
        raise BidRequestError(invalid, f"bid.dispatch_interval is not a readable time: {exc}") from None
    grid = timedelta(minutes=interval_minutes)
    if (first_interval - datetime(2000, 1, 1)) % grid:
        raise BidRequestError(
            invalid, f"bid.dispatch_interval {first_interval:%Y-%m-%d %H:%M:%S} (AEST) is not on the "
                     f"{interval_minutes}-minute grid")
    return BidKey(unit_id=bid.unit_id, trading_day=day, dispatch_interval=first_interval, version=bid.version)


def is_day_ahead_daily_bid(bid: bid_pb2.Bid, key: BidKey) -> bool:
    """True for a trading day's daily bid as the platform submits it before 12:30 on D−1: a DAILY entry whose
    first interval is the trading day's first (04:05, period 1). The market stores it without clearing
    anything (its day has not started); a DAILY entry starting later in its day is cleared like any bid."""
    return bid.entry_type == bid_pb2.ENTRY_TYPE_DAILY and nem_time.interval_number(key.dispatch_interval) == 1


def covered_intervals(bid: bid_pb2.Bid | ColumnarBid) -> tuple[datetime, ...]:
    """Interval-ending AEST times ``bid`` has period offers for (any product), ascending, distinct; from its
    columns when it comes with them (each distinct time converted once)."""
    if isinstance(bid, ColumnarBid):
        stamps: set[tuple[int, int]] = set()
        for columns in bid.offer_periods:
            timed = columns.has_time
            stamps.update(zip(columns.seconds[timed].tolist(), columns.nanos[timed].tolist(), strict=True))
        moments = (Timestamp(seconds=seconds, nanos=nanos) for seconds, nanos in stamps)
    else:
        moments = (period.dispatch_interval for offer in bid.offers for period in offer.periods
                   if period.HasField("dispatch_interval"))
    times: set[datetime] = set()
    for moment in moments:
        try:
            times.add(nem_time.from_timestamp(moment))
        except (OverflowError, ValueError, OSError):
            continue  # an unreadable time is a V0 violation; such a bid is stored REJECTED
    return tuple(sorted(times))


def entry_type_text(entry_type: int) -> str:
    """"DAILY" / "REBID" / "UNSPECIFIED" for an EntryType value; "UNKNOWN(n)" for a value not in the enum."""
    try:
        return bid_pb2.EntryType.Name(entry_type).removeprefix("ENTRY_TYPE_")  # type: ignore[arg-type]
    except ValueError:
        return f"UNKNOWN({entry_type})"


def bid_record(bid: bid_pb2.Bid, key: BidKey, reasons: Sequence[str],
               columns: ColumnarBid | None = None) -> bid_store.BidRecord:
    """The row to store for ``bid``: ACCEPTED when ``reasons`` is empty, else REJECTED with them (``columns``:
    the bid with its columns, when read already, for the covered intervals)."""
    payload = message_bytes(bid)
    return bid_store.BidRecord(
        bid_id=key.bid_id,
        unit_id=key.unit_id,
        trading_day=key.trading_day,
        dispatch_interval=key.dispatch_interval,
        version=key.version,
        entry_type=entry_type_text(bid.entry_type),
        status=bid_store.REJECTED if reasons else bid_store.ACCEPTED,
        reasons=tuple(reasons),
        payload=payload,
        content_hash=sha256_hex(payload),
        covered_intervals=covered_intervals(columns if columns is not None else bid),
    )


@dataclass(frozen=True)
class CatchUpPlan:
    """Which intervals to clear (interval-ending AEST, in order) and the unit state to start from.

    ``restarted`` is True when the unit starts afresh (first clearing, or a gap longer than allowed).
    """

    intervals: tuple[datetime, ...]
    state_of_charge_mwh: float
    previous_net_mw: float
    restarted: bool


def catch_up_plan(
    state: bid_store.UnitState,
    dispatch_interval: datetime,
    *,
    initial_state_of_charge_mwh: float,
    max_gap_intervals: int,
    interval_minutes: int = 5,
) -> CatchUpPlan:
    """The intervals to clear so that the unit is cleared up to and including ``dispatch_interval``.

    From the interval after ``state.last_cleared_interval`` on, starting from the stored state of charge
    (MWh) and net output (MW). Nothing when ``dispatch_interval`` is already cleared. The unit starts
    afresh (``initial_state_of_charge_mwh``, 0 MW, only ``dispatch_interval``) when it was never cleared
    or when more than ``max_gap_intervals`` intervals would have to be cleared.
    """
    step = timedelta(minutes=interval_minutes)
    last = state.last_cleared_interval
    if last is not None and last >= dispatch_interval:
        return CatchUpPlan((), state.state_of_charge_mwh, state.net_mw, restarted=False)
    if last is None or (dispatch_interval - last) / step > max_gap_intervals:
        return CatchUpPlan((dispatch_interval,), initial_state_of_charge_mwh, 0.0, restarted=True)
    count = int((dispatch_interval - last) / step)
    return CatchUpPlan(
        tuple(last + step * (i + 1) for i in range(count)), state.state_of_charge_mwh, state.net_mw,
        restarted=False,
    )


def idle_outcome(
    dispatch_interval: datetime, state_of_charge_mwh: float, prices: Mapping[str, float], note: str
) -> bid_pb2.MarketOutcome:
    """The outcome of an interval the unit is not dispatched in: 0 MW, $0, state of charge (MWh) unchanged.

    ``prices`` (product -> $/MWh or $/MW/h, may be empty) are reported for the record; ``note`` says why.
    """
    return bid_pb2.MarketOutcome(
        dispatch_interval=nem_time.to_timestamp(dispatch_interval),
        gen_mw=0.0,
        load_mw=0.0,
        products=[bid_pb2.ProductOutcome(product=product, cleared_mw=0.0, price=price, revenue_dollars=0.0)
                  for product, price in prices.items()],
        energy_revenue_dollars=0.0,
        fcas_revenue_dollars=0.0,
        state_of_charge_mwh=state_of_charge_mwh,
        notes=[note],
    )


def clearing_record(
    unit_id: str, bid_id: str | None, outcome: bid_pb2.MarketOutcome
) -> bid_store.ClearingRecord:
    """The ledger row of one cleared interval (MW, $, MWh) from its MarketOutcome."""
    return bid_store.ClearingRecord(
        unit_id=unit_id,
        dispatch_interval=nem_time.from_timestamp(outcome.dispatch_interval),
        bid_id=bid_id,
        gen_mw=outcome.gen_mw,
        load_mw=outcome.load_mw,
        energy_revenue=outcome.energy_revenue_dollars,
        fcas_revenue=outcome.fcas_revenue_dollars,
        state_of_charge_mwh=outcome.state_of_charge_mwh,
        outcome=message_bytes(outcome),
    )


def _wall_clock_timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
    return stamp


def submit_response(row: bid_store.BidRow, *, duplicate: bool) -> bid_pb2.SubmitBidResponse:
    """The SubmitBid answer for a stored bid."""
    return bid_pb2.SubmitBidResponse(
        bid_id=row.bid_id,
        status=_STATUS_OF_TEXT[row.status],
        duplicate=duplicate,
        reasons=list(row.reasons),
        received_at=_wall_clock_timestamp(row.received_at),
    )


# --------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredUnit:
    """A unit registered with the simulated market: its registered facts and the stored energy it starts
    with (MWh) before its first clearing."""

    spec: common_pb2.BatterySpec
    initial_state_of_charge_mwh: float


class SimulatedMarket(bid_pb2_grpc.BidServiceServicer):
    """BidService of the simulated NEM for the registered battery and any further units (e.g. a VPP's
    fleet unit), each cleared from its own bids (see the module docstring).

    Every call uses its own database connection (new, or borrowed from the serving process's pool), so calls
    run concurrently; clearing of a unit is serialised by the row lock on its ``unit_state``.
    """

    def __init__(
        self,
        database_url: str,
        dispatch_prices: DispatchPrices,
        battery: BatterySettings,
        rules: MarketRules,
        further_units: Sequence[RegisteredUnit] = (),
        fcas_enablement_share: float | None = None,
        connections: Connections | None = None,
    ) -> None:
        """``connections``: autocommit connections to ``database_url`` (pooled by the serving process); a new
        connection per call without."""
        units = [RegisteredUnit(battery_spec_from_settings(battery), battery.initial_state_of_charge_mwh),
                 *further_units]
        for unit in units:
            dispatch_prices.region_index(unit.spec.region)  # KeyError naming the known regions
        self._database_url = database_url
        self._connections = connections if connections is not None else Connections(database_url, autocommit=True)
        self._prices = dispatch_prices
        self._units = {unit.spec.unit_id: unit for unit in units}
        self._rules = rules
        # Market depth: FCAS enablement capped at this share of the region's enabled MW where the data has
        # DISPATCHREGIONSUM (None: price-taking FCAS).
        self._fcas_enablement_share = fcas_enablement_share

    # gRPC methods -----------------------------------------------------------------------------

    async def SubmitBid(  # noqa: N802 (gRPC method name)
        self, request: bid_pb2.SubmitBidRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bid_pb2.SubmitBidResponse:
        """Validate, store and (if valid) clear a bid; idempotent on its key (see the module docstring)."""
        return await _answer(context, lambda: self.submit(request))

    async def GetBid(  # noqa: N802
        self, request: bid_pb2.GetBidRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bid_pb2.GetBidResponse:
        """The stored bid, its status and reasons, and the outcome of its first interval once cleared."""
        return await _answer(context, lambda: self.get_bid(request.bid_id))

    async def GetUnitStatus(  # noqa: N802
        self, request: bid_pb2.GetUnitStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bid_pb2.GetUnitStatusResponse:
        """State of charge (MWh), last cleared interval and net output (MW) of a unit."""
        return await _answer(context, lambda: self.unit_status(request.unit_id))

    async def GetDispatchOutcome(  # noqa: N802
        self, request: bid_pb2.GetDispatchOutcomeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bid_pb2.GetDispatchOutcomeResponse:
        """The unit's dispatch in one interval, from the bid in force then (cleared on demand here)."""
        return await _answer(context, lambda: self.dispatch_outcome(request))

    # Logic ------------------------------------------------------------------------------------

    def _unit(self, unit_id: str) -> RegisteredUnit:
        if not unit_id:
            raise BidRequestError(grpc.StatusCode.INVALID_ARGUMENT, "unit_id is missing")
        unit = self._units.get(unit_id)
        if unit is None:
            raise BidRequestError(
                grpc.StatusCode.NOT_FOUND,
                f"unit {unit_id!r} is not registered with this market "
                f"(registered: {', '.join(repr(u) for u in sorted(self._units))})",
            )
        return unit

    async def submit(self, request: bid_pb2.SubmitBidRequest) -> bid_pb2.SubmitBidResponse:
        """SubmitBid without the gRPC plumbing; raises BidRequestError for requests it cannot act on."""
        if not request.HasField("bid"):
            raise BidRequestError(grpc.StatusCode.INVALID_ARGUMENT, "request.bid is missing")
        bid = request.bid
        key = bid_key(bid, self._rules.interval_minutes)
        unit = self._unit(key.unit_id)
        async with self._connections.connection() as conn:
            stored = await bid_store.find_bid(conn, key.unit_id, key.trading_day, key.dispatch_interval,
                                              key.version)
            if stored is not None:
                return self._repeat_answer(stored, bid)
            daily_prices = await bid_store.daily_band_prices(conn, key.unit_id, key.trading_day)
            columnar = ColumnarBid.of(bid, self._rules.band_count)  # read once: validation, covered intervals
            violations = validate_bid(columnar, unit.spec, self._rules, products=self._prices.products,
                                      daily_band_prices=daily_prices)
            record = bid_record(bid, key, [str(violation) for violation in violations], columnar)
            # A trading day's daily bid is for a day still to come: stored, cleared when its intervals are.
            clears = record.status == bid_store.ACCEPTED and not is_day_ahead_daily_bid(bid, key)
            priced = self._prices.interval_index(key.dispatch_interval) is not None
            if clears and not priced:
                raise BidRequestError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the market has no dispatch prices for the interval ending "
                    f"{key.dispatch_interval:%Y-%m-%d %H:%M} (AEST); it cannot clear this bid",
                )
            async with conn.transaction():
                state: bid_store.UnitState | None = None
                if clears:
                    # Lock first: concurrent submissions for the unit queue here, one clearing at a time.
                    state = await bid_store.lock_unit_state(
                        conn, key.unit_id, unit.initial_state_of_charge_mwh)
                row, duplicate = await bid_store.insert_bid(conn, record)
                if state is not None and not duplicate and row.status == bid_store.ACCEPTED:
                    await self._clear_up_to(conn, state, key.dispatch_interval)
        if duplicate:
            return self._repeat_answer(row, bid)
        log.info("bid %s %s%s", row.bid_id, row.status, f": {'; '.join(row.reasons)}" if row.reasons else "")
        return submit_response(row, duplicate=False)

    def _repeat_answer(self, stored: bid_store.BidRow, bid: bid_pb2.Bid) -> bid_pb2.SubmitBidResponse:
        content_hash = sha256_hex(message_bytes(bid))
        if content_hash != stored.content_hash:
            log.warning("bid %s resubmitted with different content (hash %s, stored %s); the stored bid "
                        "stands: submit a new version to change it", stored.bid_id, content_hash,
                        stored.content_hash)
        return submit_response(stored, duplicate=True)

    async def _clear_up_to(
        self, conn: psycopg.AsyncConnection[Any], state: bid_store.UnitState, dispatch_interval: datetime
    ) -> None:
        """Clear every pending interval of the (locked) unit up to ``dispatch_interval``; store the state."""
        unit = self._unit(state.unit_id)
        plan = catch_up_plan(
            state, dispatch_interval,
            initial_state_of_charge_mwh=unit.initial_state_of_charge_mwh,
            max_gap_intervals=self._rules.intervals_per_trading_day,
            interval_minutes=self._rules.interval_minutes,
        )
        if not plan.intervals:
            return
        if plan.restarted and state.last_cleared_interval is not None:
            log.warning("unit %s: the gap since the last cleared interval %s is more than one trading "
                        "day; starting afresh at %s", state.unit_id, state.last_cleared_interval,
                        dispatch_interval)
        state_of_charge_mwh, previous_net_mw = plan.state_of_charge_mwh, plan.previous_net_mw
        for interval in plan.intervals:
            covering = await bid_store.latest_accepted_bid_covering(conn, state.unit_id, interval)
            outcome = self._clear_one(unit, covering, interval, state_of_charge_mwh, previous_net_mw)
            await bid_store.record_clearing(
                conn, clearing_record(state.unit_id, covering.bid_id if covering else None, outcome))
            state_of_charge_mwh = outcome.state_of_charge_mwh
            previous_net_mw = outcome.gen_mw - outcome.load_mw
        cleared = bid_store.UnitState(state.unit_id, state_of_charge_mwh, plan.intervals[-1], previous_net_mw)
        await bid_store.upsert_unit_state(conn, cleared)

    def _clear_one(
        self,
        unit: RegisteredUnit,
        covering: bid_store.BidRow | None,
        dispatch_interval: datetime,
        state_of_charge_mwh: float,
        previous_net_mw: float,
    ) -> bid_pb2.MarketOutcome:
        """The outcome of one interval: cleared from ``covering``, or idle without a bid or a price."""
        try:
            prices = self._prices.prices_at(unit.spec.region, dispatch_interval)
        except KeyError:
            return idle_outcome(dispatch_interval, state_of_charge_mwh, {},
                                "no dispatch price in the data for this interval: dispatched 0 MW")
        energy_price = prices.get(ENERGY, math.nan)
        if not math.isfinite(energy_price):
            return idle_outcome(dispatch_interval, state_of_charge_mwh, {},
                                f"{ENERGY} price missing in the data: dispatched 0 MW")
        if covering is None:
            return idle_outcome(dispatch_interval, state_of_charge_mwh, prices,
                                "no accepted bid covers this interval: dispatched 0 MW")
        caps = (None if self._fcas_enablement_share is None else
                interval_caps_mw(self._prices.enabled_at(unit.spec.region, dispatch_interval),
                                 self._fcas_enablement_share))
        clearing = clear_interval(
            covering.bid(), dispatch_interval, prices,
            state_of_charge_mwh=state_of_charge_mwh,
            previous_net_mw=previous_net_mw,
            battery=unit.spec,
            interval_minutes=self._rules.interval_minutes,
            enablement_cap_mw=caps,
        )
        return to_market_outcome(clearing)

    async def get_bid(self, bid_id: str) -> bid_pb2.GetBidResponse:
        """GetBid without the gRPC plumbing; BidRequestError INVALID_ARGUMENT / NOT_FOUND."""
        if not bid_id:
            raise BidRequestError(grpc.StatusCode.INVALID_ARGUMENT, "bid_id is missing")
        async with self._connections.connection() as conn:
            row = await bid_store.get_bid(conn, bid_id)
            if row is None:
                raise BidRequestError(grpc.StatusCode.NOT_FOUND, f"no bid with id {bid_id!r}")
            clearing = await bid_store.get_clearing(conn, row.unit_id, row.dispatch_interval)
        response = bid_pb2.GetBidResponse(
            bid_id=row.bid_id, bid=row.bid(), status=_STATUS_OF_TEXT[row.status], reasons=list(row.reasons))
        if clearing is not None and clearing.bid_id == row.bid_id:
            response.outcome.CopyFrom(clearing.market_outcome())
            response.cleared = True
        return response

    async def dispatch_outcome(self, request: bid_pb2.GetDispatchOutcomeRequest) -> bid_pb2.GetDispatchOutcomeResponse:
        """GetDispatchOutcome without the gRPC plumbing.

        The simulated market dispatches an interval when asked about it (a real adapter reads AEMO's
        dispatch results once published): pending intervals of the unit up to ``dispatch_interval``
        are cleared from the bids in force, under the unit's lock, exactly as a submission would.
        """
        unit = self._unit(request.unit_id)
        if not request.HasField("dispatch_interval"):
            raise BidRequestError(grpc.StatusCode.INVALID_ARGUMENT, "dispatch_interval is missing")
        interval = nem_time.from_timestamp(request.dispatch_interval)
        if self._prices.interval_index(interval) is None:
            raise BidRequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"the market has no dispatch prices for the interval ending "
                                  f"{interval:%Y-%m-%d %H:%M} (AEST)")
        async with self._connections.connection() as conn:
            clearing = await bid_store.get_clearing(conn, request.unit_id, interval)
            if clearing is None:
                async with conn.transaction():
                    state = await bid_store.lock_unit_state(
                        conn, request.unit_id, unit.initial_state_of_charge_mwh)
                    if state.last_cleared_interval is None or state.last_cleared_interval < interval:
                        await self._clear_up_to(conn, state, interval)
                clearing = await bid_store.get_clearing(conn, request.unit_id, interval)
        if clearing is None:
            raise BidRequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"the interval ending {interval:%Y-%m-%d %H:%M} was before this unit's "
                                  "first bid: it was never dispatched")
        return bid_pb2.GetDispatchOutcomeResponse(unit_id=request.unit_id, bid_id=clearing.bid_id or "",
                                                  outcome=clearing.market_outcome())

    async def unit_status(self, unit_id: str) -> bid_pb2.GetUnitStatusResponse:
        """GetUnitStatus without the gRPC plumbing; before the first clearing: initial SoC, no interval."""
        unit = self._unit(unit_id)
        async with self._connections.connection() as conn:
            state = await bid_store.get_unit_state(conn, unit_id)
        response = bid_pb2.GetUnitStatusResponse(
            unit_id=unit_id, state_of_charge_mwh=unit.initial_state_of_charge_mwh, net_mw=0.0)
        if state is not None and state.last_cleared_interval is not None:
            response.state_of_charge_mwh = state.state_of_charge_mwh
            response.net_mw = state.net_mw
            response.last_cleared_interval.CopyFrom(nem_time.to_timestamp(state.last_cleared_interval))
        return response


async def _answer(
    context: grpc.aio.ServicerContext[Any, Any], handler: Callable[[], Awaitable[Response]]
) -> Response:
    """Run ``handler``; answer BidRequestError with its status, a database outage with UNAVAILABLE and
    any other failure with INTERNAL (logged; the transaction was rolled back, nothing was stored)."""
    try:
        return await handler()
    except BidRequestError as exc:
        await context.abort(exc.code, str(exc))
        raise  # abort raises; this keeps the type checker informed
    except psycopg.OperationalError as exc:
        log.warning("database unavailable: %s", exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"market database unavailable: {exc}")
        raise
    except Exception as exc:
        if isinstance(exc, grpc.aio.AbortError):
            raise
        log.exception("bid service failed")
        await context.abort(grpc.StatusCode.INTERNAL, f"bid service failed: {type(exc).__name__}: {exc}")
        raise


# --------------------------------------------------------------------------------------------------
# Server and clients
# --------------------------------------------------------------------------------------------------


def registered_fleet_units(settings: Settings, database_url: str) -> list[RegisteredUnit]:
    """The VPP's fleet unit (``[coopt] fleet_unit_id``) as registered from the asset graph now: the sites
    under ``[coopt] vpp_node`` as one bidirectional unit (``algorithms.fleet.fleet_bid.fleet_unit_spec``),
    starting half full between its SoC limits. None when the node is unknown or has no site yet."""
    from algorithms.fleet.fleet_bid import fleet_unit_of_sites
    from models.assets import AssetGraphError, node_site_parameters

    coopt = settings.coopt
    with psycopg.connect(database_url) as conn:
        try:
            parameters = node_site_parameters(conn, coopt.vpp_node, datetime.now(UTC), coopt.hierarchy or None)
        except AssetGraphError as error:
            log.info("no fleet unit registered: %s", error)
            return []
    if not parameters.site_count:
        return []
    spec = fleet_unit_of_sites(coopt.fleet_unit_id, settings.vpp_unit.region, parameters)
    middle = spec.energy_mwh * (spec.soc_min_fraction + spec.soc_max_fraction) / 2
    return [RegisteredUnit(spec=spec, initial_state_of_charge_mwh=middle)]


def market_rules_of_data(settings: Settings) -> MarketRules:
    """The market rules the simulated market applies: the configured ones, with AEMO's
    MARKET_PRICE_THRESHOLDS where the data folder holds that table (AEMO's CSV or zip files)."""
    return with_price_thresholds(settings.market, read_price_thresholds([settings.market_data.data_dir]))


async def serve(settings: Settings, stop: asyncio.Event, security: EdgeSecurity | None = None) -> None:
    """Run the BidService on ``settings.stack.bid_service_port`` until ``stop`` is set.

    ``[bid_service] backend`` chooses the market: the simulated NEM (:class:`SimulatedMarket`) or AEMO's bidding
    API (:mod:`services.aemo_bidding`, configured from the environment: a missing variable stops the start with
    :class:`aemo.bidding_api.BiddingApiConfigError`).

    Requires ``settings.database_url`` (see :func:`models.db.resolve_database_url`); migrates the
    database, loads DISPATCHPRICE from the configured source (``[market_data] source``) and MARKET_PRICE_THRESHOLDS
    (:func:`market_rules_of_data`) and serves with gRPC health. A trading day of the data whose price limits
    no source gives stops the start with :class:`settings.PriceLimitsUnknownError`.
    ``security`` (bind host, TLS, accepted tokens) defaults to the environment's.
    Raises ValueError without a database URL and services.health.PortInUseError when the port is taken.
    """
    if not settings.database_url:
        raise ValueError("the bid service needs settings.database_url (set DATABASE_URL, or resolve one "
                         "with models.db.resolve_database_url)")
    security = EdgeSecurity.from_environment(with_site_keys=False) if security is None else security
    database_url = settings.database_url
    applied = await asyncio.to_thread(migrate, database_url)
    if applied:
        log.info("applied migrations %s", ", ".join(applied))
    rules = await asyncio.to_thread(market_rules_of_data, settings)
    fleet_units = await asyncio.to_thread(registered_fleet_units, settings, database_url)
    # The portfolio's further battery units (the first is ``settings.battery``), each with its own region.
    portfolio_units = [RegisteredUnit(battery_spec_from_settings(unit.battery),
                                      unit.battery.initial_state_of_charge_mwh)
                       for unit in settings.battery_units[1:]]
    # Every call borrows an autocommit connection from the service's pool instead of opening its own.
    connections = Connections(database_url, autocommit=True)
    market: bid_pb2_grpc.BidServiceServicer
    if settings.bid_service.backend == "aemo":  # AEMO dispatches: no historical prices to clear against
        from services.aemo_bidding import aemo_market

        units = [RegisteredUnit(battery_spec_from_settings(settings.battery),
                                settings.battery.initial_state_of_charge_mwh), *portfolio_units, *fleet_units]
        market = aemo_market(database_url, units, rules, settings.bid_service,  # BiddingApiConfigError
                             connections=connections)
    else:
        historical = await asyncio.to_thread(configured_dispatch_prices, settings)
        # PriceLimitsUnknownError: a trading day of the data whose year no source covers
        dispatch_prices = with_administered_pricing(historical, rules)
        market = SimulatedMarket(database_url, dispatch_prices, settings.battery, rules,
                                 [*portfolio_units, *fleet_units],
                                 fcas_enablement_share=settings.market_depth.fcas_enablement_share,
                                 connections=connections)
    await connections.open_pool()
    try:
        await _serve_market(settings, security, market, portfolio_units, fleet_units, stop)
    finally:
        await connections.close()


async def _serve_market(settings: Settings, security: EdgeSecurity, market: bid_pb2_grpc.BidServiceServicer,
                        portfolio_units: Sequence[RegisteredUnit], fleet_units: Sequence[RegisteredUnit],
                        stop: asyncio.Event) -> None:
    """Serve ``market`` (``settings.battery``, the portfolio's further units and the fleet units) with gRPC
    health on the bid service's port until ``stop`` is set."""
    server = secure_server(security, SERVER_OPTIONS)
    bid_pb2_grpc.add_BidServiceServicer_to_server(market, server)
    add_health(server, [SERVICE_NAME])
    address = bind_port(server, settings.stack.bid_service_port, "bid service", security=security)
    await server.start()
    log.info("bid service on %s, %s backend (unit %s, region %s%s%s)", address, settings.bid_service.backend,
             settings.battery.unit_id, settings.battery.region,
             "".join(f"; unit {u.spec.unit_id}, region {u.spec.region}" for u in portfolio_units),
             "".join(f"; fleet unit {u.spec.unit_id} {u.spec.power_mw:.2f} MW / "
                     f"{u.spec.energy_mwh:.2f} MWh" for u in fleet_units))
    try:
        await stop.wait()
    finally:
        await server.stop(_STOP_GRACE_S)


async def submit_bid(address: str, bid: bid_pb2.Bid, timeout_s: float = 10.0,
                     security: EdgeSecurity | None = None,
                     channels: ChannelPool | None = None) -> bid_pb2.SubmitBidResponse:
    """Submit ``bid`` to the BidService at ``address`` ("host:port"); grpc.aio.AioRpcError on failure.

    Every client helper here takes ``security`` (TLS trust, token), the environment's by default; those a cycle
    calls also ``channels``, a process's open channels (services.security.ChannelPool) to call on instead of a
    channel of their own.
    """
    async with call_channel(address, security, channels) as bid_channel:
        stub = bid_pb2_grpc.BidServiceStub(bid_channel)
        response: bid_pb2.SubmitBidResponse = await stub.SubmitBid(
            bid_pb2.SubmitBidRequest(bid=bid), timeout=timeout_s)
    return response


async def get_bid(address: str, bid_id: str, timeout_s: float = 10.0,
                  security: EdgeSecurity | None = None) -> bid_pb2.GetBidResponse:
    """The bid ``bid_id`` from the BidService at ``address``; AioRpcError NOT_FOUND if unknown."""
    async with channel(address, security) as bid_channel:
        stub = bid_pb2_grpc.BidServiceStub(bid_channel)
        response: bid_pb2.GetBidResponse = await stub.GetBid(
            bid_pb2.GetBidRequest(bid_id=bid_id), timeout=timeout_s)
    return response


async def get_unit_status(
    address: str, unit_id: str, timeout_s: float = 10.0, security: EdgeSecurity | None = None,
    channels: ChannelPool | None = None
) -> bid_pb2.GetUnitStatusResponse:
    """State of ``unit_id`` (SoC MWh, last cleared interval, net MW) from the BidService at ``address``."""
    async with call_channel(address, security, channels) as bid_channel:
        stub = bid_pb2_grpc.BidServiceStub(bid_channel)
        response: bid_pb2.GetUnitStatusResponse = await stub.GetUnitStatus(
            bid_pb2.GetUnitStatusRequest(unit_id=unit_id), timeout=timeout_s)
    return response


async def get_dispatch_outcome(address: str, unit_id: str, dispatch_interval: datetime,
                               timeout_s: float = 10.0,
                               security: EdgeSecurity | None = None,
                               channels: ChannelPool | None = None) -> bid_pb2.GetDispatchOutcomeResponse:
    """What ``unit_id`` was dispatched in the interval ending ``dispatch_interval`` (AEST), and by which bid."""
    async with call_channel(address, security, channels) as bid_channel:
        stub = bid_pb2_grpc.BidServiceStub(bid_channel)
        response: bid_pb2.GetDispatchOutcomeResponse = await stub.GetDispatchOutcome(
            bid_pb2.GetDispatchOutcomeRequest(unit_id=unit_id,
                                              dispatch_interval=nem_time.to_timestamp(dispatch_interval)),
            timeout=timeout_s)
    return response
