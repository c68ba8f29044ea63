"""The record of AutoBidder cycles: one row per cycle (workflow), upserted as it progresses."""

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

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None:
            raise ValueError(f"cycle {self.cycle_id}: started_at must be timezone-aware")
        if self.dispatch_interval.tzinfo is not None:
            raise ValueError(f"cycle {self.cycle_id}: dispatch_interval must be naive AEST market time")


_COLUMNS = "cycle_id, unit_id, region, dispatch_interval, status, bid_id, failure, facts, started_at"


async def record_cycle(conn: AsyncConn, cycle: CycleRecord) -> None:
    """Insert ``cycle`` or replace the stored row with the same ``cycle_id`` (idempotent)."""
    await conn.execute(
        f"INSERT INTO cycles ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (cycle_id) DO UPDATE SET unit_id = EXCLUDED.unit_id, region = EXCLUDED.region,"
        " dispatch_interval = EXCLUDED.dispatch_interval, status = EXCLUDED.status,"
        " bid_id = EXCLUDED.bid_id, failure = EXCLUDED.failure, facts = EXCLUDED.facts,"
        " started_at = EXCLUDED.started_at, recorded_at = now()",
        (
            cycle.cycle_id, cycle.unit_id, cycle.region, cycle.dispatch_interval, cycle.status, cycle.bid_id,
            cycle.failure, Jsonb(cycle.facts), cycle.started_at,
        ),
    )


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
    cycle_id, unit_id, region, dispatch_interval, status, bid_id, failure, facts, started_at = row
    return CycleRecord(
        cycle_id=cycle_id, unit_id=unit_id, region=region, dispatch_interval=dispatch_interval, status=status,
        bid_id=bid_id, failure=failure, facts=list(facts), started_at=started_at,
    )
