"""Bids, cleared intervals and unit state of the simulated market (plain SQL over async psycopg).

Every function takes an open :class:`psycopg.AsyncConnection` and runs inside the caller's transaction;
none commits. Market times are naive AEST, interval-ending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from vpp.v1 import bid_pb2

ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"
BID_STATUSES = (ACCEPTED, REJECTED)

AsyncConn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class BidRecord:
    """A bid as the market stores it, before insertion.

    ``payload`` is the Bid message serialised deterministically and ``content_hash`` its sha256 hex;
    ``covered_intervals`` are the interval-ending times (AEST) the bid has period offers for, ascending.
    """

    bid_id: str
    unit_id: str
    trading_day: date
    dispatch_interval: datetime
    version: int
    entry_type: str
    status: str
    reasons: tuple[str, ...]
    payload: bytes
    content_hash: str
    covered_intervals: tuple[datetime, ...]

    def __post_init__(self) -> None:
        if self.status not in BID_STATUSES:
            raise ValueError(f"bid {self.bid_id}: status must be one of {BID_STATUSES}, not {self.status!r}")
        if self.status == REJECTED and not self.reasons:
            raise ValueError(f"bid {self.bid_id}: a rejected bid needs at least one reason")
        if list(self.covered_intervals) != sorted(set(self.covered_intervals)):
            raise ValueError(f"bid {self.bid_id}: covered_intervals must be ascending and distinct")


@dataclass(frozen=True)
class BidRow:
    """A stored bid: the record plus when the market received it (``received_at``, aware UTC)."""

    bid_id: str
    unit_id: str
    trading_day: date
    dispatch_interval: datetime
    version: int
    entry_type: str
    status: str
    reasons: list[str]
    payload: bytes
    content_hash: str
    first_interval: datetime | None
    last_interval: datetime | None
    received_at: datetime

    def bid(self) -> bid_pb2.Bid:
        """The stored Bid message."""
        message = bid_pb2.Bid()
        message.ParseFromString(self.payload)
        return message


@dataclass(frozen=True)
class ClearingRecord:
    """What the market did with one unit in one dispatch interval (MW, $, MWh after the interval).

    ``bid_id`` is the bid the interval was cleared from, ``None`` when no bid covered it (dispatched 0);
    ``outcome`` is the serialised MarketOutcome.
    """

    unit_id: str
    dispatch_interval: datetime
    bid_id: str | None
    gen_mw: float
    load_mw: float
    energy_revenue: float
    fcas_revenue: float
    state_of_charge_mwh: float
    outcome: bytes

    def market_outcome(self) -> bid_pb2.MarketOutcome:
        """The stored MarketOutcome message."""
        message = bid_pb2.MarketOutcome()
        message.ParseFromString(self.outcome)
        return message


@dataclass(frozen=True)
class UnitState:
    """Physical state of a unit after its last cleared interval (MWh, interval-ending AEST, MW net)."""

    unit_id: str
    state_of_charge_mwh: float
    last_cleared_interval: datetime | None
    net_mw: float


_BID_COLUMNS = (
    "bid_id, unit_id, trading_day, dispatch_interval, version, entry_type, status, reasons, payload,"
    " content_hash, first_interval, last_interval, received_at"
)
_CLEARING_COLUMNS = (
    "unit_id, dispatch_interval, bid_id, gen_mw, load_mw, energy_revenue, fcas_revenue,"
    " state_of_charge_mwh, outcome"
)


async def insert_bid(conn: AsyncConn, record: BidRecord) -> tuple[BidRow, bool]:
    """Store ``record``; return the stored row and whether it was already there (duplicate).

    Idempotent on (unit_id, trading_day, dispatch_interval, version): when that key (or the bid_id)
    exists, nothing is written and the EXISTING row is returned with ``True``. Concurrent inserts of the
    same key are resolved by the unique constraint: exactly one of them inserts.
    """
    covered = list(record.covered_intervals)
    async with conn.cursor(row_factory=class_row(BidRow)) as cur:
        await cur.execute(
            "INSERT INTO bids (bid_id, unit_id, trading_day, dispatch_interval, version, entry_type, status,"
            " reasons, payload, content_hash, first_interval, last_interval, covered_intervals)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT DO NOTHING RETURNING {_BID_COLUMNS}",
            (
                record.bid_id, record.unit_id, record.trading_day, record.dispatch_interval, record.version,
                record.entry_type, record.status, list(record.reasons), record.payload, record.content_hash,
                covered[0] if covered else None, covered[-1] if covered else None, covered,
            ),
        )
        inserted = await cur.fetchone()
        if inserted is not None:
            return inserted, False
        await cur.execute(
            f"SELECT {_BID_COLUMNS} FROM bids WHERE (unit_id, trading_day, dispatch_interval, version)"
            " = (%s, %s, %s, %s) OR bid_id = %s ORDER BY bid_id = %s DESC LIMIT 1",
            (record.unit_id, record.trading_day, record.dispatch_interval, record.version, record.bid_id,
             record.bid_id),
        )
        existing = await cur.fetchone()
    if existing is None:
        raise RuntimeError(f"bid {record.bid_id} conflicted on insert but cannot be read back")
    return existing, True


async def get_bid(conn: AsyncConn, bid_id: str) -> BidRow | None:
    """The stored bid ``bid_id``, or ``None``."""
    async with conn.cursor(row_factory=class_row(BidRow)) as cur:
        await cur.execute(f"SELECT {_BID_COLUMNS} FROM bids WHERE bid_id = %s", (bid_id,))
        return await cur.fetchone()


async def find_bid(
    conn: AsyncConn, unit_id: str, trading_day: date, dispatch_interval: datetime, version: int
) -> BidRow | None:
    """The stored bid with this idempotency key (unit, trading day, first interval, version), or ``None``."""
    async with conn.cursor(row_factory=class_row(BidRow)) as cur:
        await cur.execute(
            f"SELECT {_BID_COLUMNS} FROM bids"
            " WHERE unit_id = %s AND trading_day = %s AND dispatch_interval = %s AND version = %s",
            (unit_id, trading_day, dispatch_interval, version),
        )
        return await cur.fetchone()


async def latest_accepted_bid_covering(
    conn: AsyncConn, unit_id: str, dispatch_interval: datetime
) -> BidRow | None:
    """The bid in force for ``unit_id`` in ``dispatch_interval`` (interval-ending AEST), or ``None``.

    That is the newest ACCEPTED bid (latest first interval, then highest version) whose first interval is
    at or before ``dispatch_interval`` and which has a period offer for it.
    """
    async with conn.cursor(row_factory=class_row(BidRow)) as cur:
        await cur.execute(
            f"SELECT {_BID_COLUMNS} FROM bids"
            " WHERE unit_id = %(unit)s AND status = 'ACCEPTED' AND dispatch_interval <= %(t)s"
            " AND first_interval <= %(t)s AND last_interval >= %(t)s AND %(t)s = ANY (covered_intervals)"
            " ORDER BY dispatch_interval DESC, version DESC, received_at DESC LIMIT 1",
            {"unit": unit_id, "t": dispatch_interval},
        )
        return await cur.fetchone()


async def count_accepted_submissions(conn: AsyncConn, unit_id: str, dispatch_interval: datetime) -> int:
    """How many distinct accepted bids the market received for ``unit_id`` with this first interval.

    A repeated submission (duplicate) never adds a row, so this counts NEW accepted submissions.
    """
    cur = await conn.execute(
        "SELECT count(*) FROM bids WHERE unit_id = %s AND dispatch_interval = %s AND status = 'ACCEPTED'",
        (unit_id, dispatch_interval),
    )
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


async def record_clearing(conn: AsyncConn, clearing: ClearingRecord) -> None:
    """Store the clearing of one interval of one unit.

    Raises :class:`psycopg.errors.UniqueViolation` if that interval of that unit was already cleared:
    an interval is cleared at most once, so its revenue is never counted twice.
    """
    await conn.execute(
        f"INSERT INTO cleared_intervals ({_CLEARING_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            clearing.unit_id, clearing.dispatch_interval, clearing.bid_id, clearing.gen_mw, clearing.load_mw,
            clearing.energy_revenue, clearing.fcas_revenue, clearing.state_of_charge_mwh, clearing.outcome,
        ),
    )


async def get_clearing(conn: AsyncConn, unit_id: str, dispatch_interval: datetime) -> ClearingRecord | None:
    """The clearing of ``unit_id`` in ``dispatch_interval``, or ``None`` if not cleared yet."""
    async with conn.cursor(row_factory=class_row(ClearingRecord)) as cur:
        await cur.execute(
            f"SELECT {_CLEARING_COLUMNS} FROM cleared_intervals"
            " WHERE unit_id = %s AND dispatch_interval = %s",
            (unit_id, dispatch_interval),
        )
        return await cur.fetchone()


async def list_clearings(
    conn: AsyncConn, unit_id: str, first_interval: datetime, last_interval: datetime
) -> list[ClearingRecord]:
    """Clearings of ``unit_id`` with first_interval <= dispatch_interval <= last_interval, in time order."""
    async with conn.cursor(row_factory=class_row(ClearingRecord)) as cur:
        await cur.execute(
            f"SELECT {_CLEARING_COLUMNS} FROM cleared_intervals"
            " WHERE unit_id = %s AND dispatch_interval BETWEEN %s AND %s ORDER BY dispatch_interval",
            (unit_id, first_interval, last_interval),
        )
        return await cur.fetchall()


async def get_unit_state(conn: AsyncConn, unit_id: str, *, for_update: bool = False) -> UnitState | None:
    """The stored state of ``unit_id``, or ``None``.

    With ``for_update`` the row stays locked until the caller's transaction ends.
    """
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(UnitState)) as cur:
        await cur.execute(
            "SELECT unit_id, state_of_charge_mwh, last_cleared_interval, net_mw FROM unit_state"
            f" WHERE unit_id = %s{lock}",
            (unit_id,),
        )
        return await cur.fetchone()


async def lock_unit_state(conn: AsyncConn, unit_id: str, initial_state_of_charge_mwh: float) -> UnitState:
    """Row-lock the state of ``unit_id`` for this transaction, creating it first if absent.

    A new unit starts with ``initial_state_of_charge_mwh`` (MWh), no cleared interval and 0 MW. Every
    transaction that clears intervals of a unit goes through this lock, so they run one at a time.
    """
    await conn.execute(
        "INSERT INTO unit_state (unit_id, state_of_charge_mwh, last_cleared_interval, net_mw)"
        " VALUES (%s, %s, NULL, 0) ON CONFLICT (unit_id) DO NOTHING",
        (unit_id, initial_state_of_charge_mwh),
    )
    state = await get_unit_state(conn, unit_id, for_update=True)
    if state is None:
        raise RuntimeError(f"unit_state row of {unit_id} vanished while locking it")
    return state


async def upsert_unit_state(conn: AsyncConn, state: UnitState) -> None:
    """Store ``state`` as the current state of its unit (insert or replace)."""
    await conn.execute(
        "INSERT INTO unit_state (unit_id, state_of_charge_mwh, last_cleared_interval, net_mw)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (unit_id) DO UPDATE SET"
        " state_of_charge_mwh = EXCLUDED.state_of_charge_mwh,"
        " last_cleared_interval = EXCLUDED.last_cleared_interval,"
        " net_mw = EXCLUDED.net_mw, updated_at = now()",
        (state.unit_id, state.state_of_charge_mwh, state.last_cleared_interval, state.net_mw),
    )


BandPriceKey = tuple[str, int]
"""(product, Direction enum value) of a ProductOffer: a bidirectional unit's ENERGY and regulation FCAS offers
carry GEN / LOAD, its contingency FCAS offers DIRECTION_UNSPECIFIED (0)."""


def band_prices_of(bid: bid_pb2.Bid) -> dict[BandPriceKey, tuple[float, ...]]:
    """Band prices ($/MWh, FCAS $/MW/h) of each (product, direction) offer of ``bid``."""
    return {(offer.product, int(offer.direction)): tuple(offer.band_price) for offer in bid.offers}


async def daily_band_prices(
    conn: AsyncConn, unit_id: str, trading_day: date
) -> dict[BandPriceKey, tuple[float, ...]] | None:
    """Band prices in force for ``unit_id`` on ``trading_day`` (rule V4); ``None`` if the day has no accepted bid.

    They are the day's first accepted DAILY bid's (the platform submits one per day), else those of the first
    ACCEPTED bid of the day (earliest received; ties: earliest first interval, lowest version). A later
    rebid of the same trading day must keep them.
    """
    cur = await conn.execute(
        "SELECT payload FROM bids WHERE unit_id = %s AND trading_day = %s AND status = 'ACCEPTED'"
        " ORDER BY (entry_type = 'DAILY') DESC, received_at, dispatch_interval, version LIMIT 1",
        (unit_id, trading_day),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    first = bid_pb2.Bid()
    first.ParseFromString(bytes(row[0]))
    return band_prices_of(first)


async def daily_entry_band_prices(
    conn: AsyncConn, unit_id: str, trading_day: date
) -> dict[BandPriceKey, tuple[float, ...]] | None:
    """Band prices of the first ACCEPTED DAILY bid of ``unit_id`` for ``trading_day``; ``None`` if it has none."""
    cur = await conn.execute(
        "SELECT payload FROM bids WHERE unit_id = %s AND trading_day = %s AND status = 'ACCEPTED'"
        " AND entry_type = 'DAILY' ORDER BY received_at, dispatch_interval, version LIMIT 1",
        (unit_id, trading_day),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    daily = bid_pb2.Bid()
    daily.ParseFromString(bytes(row[0]))
    return band_prices_of(daily)


async def days_with_daily_bid(conn: AsyncConn, unit_id: str, from_day: date) -> frozenset[date]:
    """Trading days from ``from_day`` on for which ``unit_id`` has a DAILY bid stored (accepted or rejected)."""
    cur = await conn.execute(
        "SELECT DISTINCT trading_day FROM bids WHERE unit_id = %s AND entry_type = 'DAILY' AND trading_day >= %s",
        (unit_id, from_day),
    )
    return frozenset(row[0] for row in await cur.fetchall())
