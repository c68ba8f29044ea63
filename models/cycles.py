"""The record of AutoBidder cycles: one row per cycle (workflow), upserted as it progresses.

A cycle that read the market's outcome of its interval stores it (MW, price, revenue). The revenue of a
unit's interval is *counted* by the first cycle that records it; a later cycle for the same interval (a
re-triggered or repeated cycle) keeps the outcome but is not counted, so the sum of counted revenue never
double counts (migration 0006: at most one counted row per unit and interval).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

AsyncConn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class CycleRecord:
    """One AutoBidder cycle.

    ``cycle_id`` is the workflow id; ``dispatch_interval`` the interval-ending AEST time it bid for;
    ``status`` its current state; ``bid_id`` the bid it submitted (if any); ``failure`` why it failed (if
    it did); ``facts`` the JSON-serialisable facts it recorded in order; ``started_at`` an aware datetime.
    """

    cycle_id: str
    unit_id: str
    region: str
    dispatch_interval: datetime
    status: str
    bid_id: str | None
    failure: str | None
    facts: list[dict[str, Any]]
    started_at: datetime
    outcome: IntervalOutcome | None = None

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None:
            raise ValueError(f"cycle {self.cycle_id}: started_at must be timezone-aware")
        if self.dispatch_interval.tzinfo is not None:
            raise ValueError(f"cycle {self.cycle_id}: dispatch_interval must be naive AEST market time")


@dataclass(frozen=True)
class IntervalOutcome:
    """What the market dispatched in a cycle's interval: MW (gen, load), energy price ($/MWh, None when
    unknown) and revenue ($)."""

    gen_mw: float
    load_mw: float
    price: float | None
    energy_revenue: float
    fcas_revenue: float


@dataclass(frozen=True)
class Counted:
    """Whether a recorded cycle counts its interval's revenue, and which cycle does (itself when counted)."""

    counted: bool
    counted_by: str | None


_COLUMNS = ("cycle_id, unit_id, region, dispatch_interval, status, bid_id, failure, facts, started_at, "
            "gen_mw, load_mw, price, energy_revenue, fcas_revenue")


async def record_cycle(conn: AsyncConn, cycle: CycleRecord) -> Counted:
    """Insert ``cycle`` or replace the stored row with the same ``cycle_id`` (idempotent), and count its
    interval's revenue unless another cycle already counts it (the caller commits).

    A retried record of the same cycle keeps its count; concurrent records of one interval are
    serialised by a transaction-level advisory lock on (unit, interval).
    """
    outcome = cycle.outcome
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                       (f"openvpp.cycles/{cycle.unit_id}/{cycle.dispatch_interval.isoformat()}",))
    cur = await conn.execute(
        "SELECT cycle_id FROM cycles WHERE unit_id = %s AND dispatch_interval = %s AND revenue_counted"
        " AND cycle_id <> %s", (cycle.unit_id, cycle.dispatch_interval, cycle.cycle_id))
    other = await cur.fetchone()
    counted = outcome is not None and other is None
    await conn.execute(
        f"INSERT INTO cycles ({_COLUMNS}, revenue_counted)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (cycle_id) DO UPDATE SET unit_id = EXCLUDED.unit_id, region = EXCLUDED.region,"
        " dispatch_interval = EXCLUDED.dispatch_interval, status = EXCLUDED.status,"
        " bid_id = EXCLUDED.bid_id, failure = EXCLUDED.failure, facts = EXCLUDED.facts,"
        " started_at = EXCLUDED.started_at, gen_mw = EXCLUDED.gen_mw, load_mw = EXCLUDED.load_mw,"
        " price = EXCLUDED.price, energy_revenue = EXCLUDED.energy_revenue, fcas_revenue = EXCLUDED.fcas_revenue,"
        " revenue_counted = EXCLUDED.revenue_counted, recorded_at = now()",
        (
            cycle.cycle_id, cycle.unit_id, cycle.region, cycle.dispatch_interval, cycle.status, cycle.bid_id,
            cycle.failure, Jsonb(cycle.facts), cycle.started_at,
            *((outcome.gen_mw, outcome.load_mw, outcome.price, outcome.energy_revenue, outcome.fcas_revenue)
              if outcome is not None else (None,) * 5),
            counted,
        ),
    )
    return Counted(counted=counted, counted_by=cycle.cycle_id if counted else (other[0] if other else None))


async def unsettled_cycles(conn: AsyncConn, unit_id: str, first_interval: datetime,
                           last_interval: datetime) -> list[tuple[str, datetime]]:
    """(cycle_id, interval-ending AEST) of the cycles of ``unit_id`` in [first_interval, last_interval] recorded
    without an outcome (the market had not dispatched their interval yet), in time order."""
    cur = await conn.execute(
        "SELECT cycle_id, dispatch_interval FROM cycles WHERE unit_id = %s AND energy_revenue IS NULL"
        " AND dispatch_interval BETWEEN %s AND %s ORDER BY dispatch_interval, started_at, cycle_id",
        (unit_id, first_interval, last_interval))
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def settle_cycle(conn: AsyncConn, cycle_id: str, unit_id: str, dispatch_interval: datetime,
                       outcome: IntervalOutcome, fact: dict[str, Any]) -> Counted:
    """Store the outcome of a cycle recorded before its interval was dispatched, append ``fact`` (JSON) to its
    facts, and count its interval's revenue unless another cycle already counts it (the caller commits).
    A cycle that already has an outcome is left as it is (settling twice changes nothing)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                       (f"openvpp.cycles/{unit_id}/{dispatch_interval.isoformat()}",))
    cur = await conn.execute(
        "SELECT cycle_id FROM cycles WHERE unit_id = %s AND dispatch_interval = %s AND revenue_counted"
        " AND cycle_id <> %s", (unit_id, dispatch_interval, cycle_id))
    other = await cur.fetchone()
    cur = await conn.execute(
        "UPDATE cycles SET gen_mw = %s, load_mw = %s, price = %s, energy_revenue = %s, fcas_revenue = %s,"
        " revenue_counted = %s, facts = facts || %s, recorded_at = now()"
        " WHERE cycle_id = %s AND energy_revenue IS NULL RETURNING cycle_id",
        (outcome.gen_mw, outcome.load_mw, outcome.price, outcome.energy_revenue, outcome.fcas_revenue,
         other is None, Jsonb([fact]), cycle_id))
    if await cur.fetchone() is None:
        return Counted(counted=False, counted_by=other[0] if other else None)
    return Counted(counted=other is None, counted_by=cycle_id if other is None else other[0])


async def counted_revenue(conn: AsyncConn, unit_id: str, first_interval: datetime,
                          last_interval: datetime) -> list[tuple[datetime, float, float]]:
    """(interval-ending AEST, energy $, FCAS $) of each counted interval of ``unit_id`` in
    [first_interval, last_interval], in time order: one row per interval whatever the number of cycles."""
    cur = await conn.execute(
        "SELECT dispatch_interval, energy_revenue, fcas_revenue FROM cycles"
        " WHERE unit_id = %s AND revenue_counted AND dispatch_interval BETWEEN %s AND %s"
        " ORDER BY dispatch_interval", (unit_id, first_interval, last_interval))
    return [(row[0], float(row[1]), float(row[2])) for row in await cur.fetchall()]


async def latest_interval(conn: AsyncConn, unit_id: str) -> datetime | None:
    """The latest dispatch interval (naive AEST) any cycle of ``unit_id`` recorded, or None."""
    cur = await conn.execute("SELECT max(dispatch_interval) FROM cycles WHERE unit_id = %s", (unit_id,))
    row = await cur.fetchone()
    return None if row is None else row[0]


async def cycles_between(conn: AsyncConn, unit_id: str, first_interval: datetime, last_interval: datetime) -> int:
    """How many cycles of ``unit_id`` recorded an interval in [first_interval, last_interval] (AEST)."""
    cur = await conn.execute(
        "SELECT count(*) FROM cycles WHERE unit_id = %s AND dispatch_interval BETWEEN %s AND %s",
        (unit_id, first_interval, last_interval))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def unit_exists(conn: AsyncConn, unit_id: str) -> bool:
    """Whether ``unit_id`` has ever been bid for, cycled or controlled here (bids, unit state, cycles,
    controls)."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM cycles WHERE unit_id = %(u)s) OR EXISTS (SELECT 1 FROM bids WHERE unit_id ="
        " %(u)s) OR EXISTS (SELECT 1 FROM unit_state WHERE unit_id = %(u)s)"
        " OR EXISTS (SELECT 1 FROM unit_controls WHERE unit_id = %(u)s)", {"u": unit_id})
    row = await cur.fetchone()
    return bool(row and row[0])


async def get_cycle(conn: AsyncConn, cycle_id: str) -> CycleRecord | None:
    """The stored cycle ``cycle_id``, or ``None``."""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM cycles WHERE cycle_id = %s", (cycle_id,))
    row = await cur.fetchone()
    return None if row is None else _cycle(row)


async def list_cycles(conn: AsyncConn, unit_id: str, limit: int = 100) -> list[CycleRecord]:
    """The ``limit`` most recent cycles of ``unit_id`` (latest dispatch interval first)."""
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM cycles WHERE unit_id = %s"
        " ORDER BY dispatch_interval DESC, started_at DESC, cycle_id LIMIT %s",
        (unit_id, limit),
    )
    return [_cycle(row) for row in await cur.fetchall()]


def _cycle(row: tuple[Any, ...]) -> CycleRecord:
    cycle_id, unit_id, region, dispatch_interval, status, bid_id, failure, facts, started_at = row[:9]
    gen_mw, load_mw, price, energy_revenue, fcas_revenue = row[9:14]
    outcome = (None if energy_revenue is None else
               IntervalOutcome(gen_mw=gen_mw, load_mw=load_mw, price=price, energy_revenue=energy_revenue,
                               fcas_revenue=fcas_revenue))
    return CycleRecord(
        cycle_id=cycle_id, unit_id=unit_id, region=region, dispatch_interval=dispatch_interval, status=status,
        bid_id=bid_id, failure=failure, facts=list(facts), started_at=started_at, outcome=outcome,
    )
