"""Operator controls of AutoBidder units and their audit trail (tables of migration 0005).

``unit_controls`` holds what the cycle honours (one row per unit; no row = nothing in force);
``operator_actions`` is the append-only audit trail of every operator action and its effects. Writes do
not commit: the caller commits a control change and its audit row together. Times are aware datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from algorithms.market.operator_controls import UnitControls

AsyncConn = psycopg.AsyncConnection[Any]

_CONTROL_COLUMNS = ("unit_id, paused, paused_reason, soc_floor_fraction, soc_floor_until, pending_rebid_reason,"
                    " updated_at")
_ACTION_COLUMNS = "id, unit_id, action, detail, operator, reason, at"


@dataclass(frozen=True)
class OperatorAction:
    """One row of the audit trail: ``action`` on ``unit_id`` by ``operator`` for ``reason`` at ``at``
    (aware), with JSON ``detail``; ``id`` orders rows (0 before it is stored)."""

    unit_id: str
    action: str
    reason: str
    operator: str = ""
    detail: dict[str, Any] | None = None
    at: datetime | None = None
    id: int = 0


async def get_controls(conn: AsyncConn, unit_id: str) -> UnitControls:
    """The controls stored for ``unit_id`` (the defaults when it has none)."""
    cur = await conn.execute(f"SELECT {_CONTROL_COLUMNS} FROM unit_controls WHERE unit_id = %s", (unit_id,))
    row = await cur.fetchone()
    if row is None:
        return UnitControls(unit_id=unit_id)
    unit, paused, paused_reason, floor, until, pending, updated_at = row
    return UnitControls(unit_id=unit, paused=paused, paused_reason=paused_reason, soc_floor_fraction=floor,
                        soc_floor_until=until, pending_rebid_reason=pending, updated_at=updated_at)


async def _upsert(conn: AsyncConn, unit_id: str, columns: dict[str, Any]) -> UnitControls:
    names = list(columns)
    await conn.execute(
        f"INSERT INTO unit_controls (unit_id, {', '.join(names)}) VALUES (%s{', %s' * len(names)})"
        f" ON CONFLICT (unit_id) DO UPDATE SET {', '.join(f'{n} = EXCLUDED.{n}' for n in names)},"
        " updated_at = now()",
        (unit_id, *columns.values()),
    )
    return await get_controls(conn, unit_id)


async def set_paused(conn: AsyncConn, unit_id: str, paused: bool, reason: str | None) -> UnitControls:
    """Pause (with ``reason``) or resume bidding for ``unit_id``; returns the new controls."""
    return await _upsert(conn, unit_id, {"paused": paused, "paused_reason": reason if paused else None})


async def set_soc_hold(conn: AsyncConn, unit_id: str, floor_fraction: float | None,
                       until: datetime | None) -> UnitControls:
    """Hold SoC at least ``floor_fraction`` of capacity until ``until`` (aware); both None releases it."""
    if (floor_fraction is None) != (until is None):
        raise ValueError("a SoC hold needs both a floor and an end time (or neither, to release it)")
    if until is not None and until.tzinfo is None:
        raise ValueError(f"SoC hold end {until.isoformat()} must be timezone-aware")
    return await _upsert(conn, unit_id, {"soc_floor_fraction": floor_fraction, "soc_floor_until": until})


async def set_pending_rebid(conn: AsyncConn, unit_id: str, reason: str) -> UnitControls:
    """Ask the next cycle of ``unit_id`` to rebid with ``reason``; returns the new controls."""
    return await _upsert(conn, unit_id, {"pending_rebid_reason": reason})


async def clear_pending_rebid(conn: AsyncConn, unit_id: str, reason: str) -> bool:
    """Clear the pending manual rebid of ``unit_id`` if it is still ``reason`` (a newer request stays);
    True when it was cleared."""
    cur = await conn.execute(
        "UPDATE unit_controls SET pending_rebid_reason = NULL, updated_at = now()"
        " WHERE unit_id = %s AND pending_rebid_reason = %s", (unit_id, reason))
    return cur.rowcount > 0


async def append_action(conn: AsyncConn, action: OperatorAction) -> OperatorAction:
    """Append ``action`` to the audit trail (``at`` defaults to the database's now); returns the stored row."""
    cur = await conn.execute(
        "INSERT INTO operator_actions (unit_id, action, detail, operator, reason, at)"
        " VALUES (%s, %s, %s, %s, %s, coalesce(%s, now()))"
        f" RETURNING {_ACTION_COLUMNS}",
        (action.unit_id, action.action, Jsonb(action.detail or {}), action.operator, action.reason, action.at))
    row = await cur.fetchone()
    assert row is not None
    return _action(row)


async def list_actions(conn: AsyncConn, unit_id: str, limit: int = 10) -> list[OperatorAction]:
    """The ``limit`` latest audit rows of ``unit_id``, latest first."""
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    cur = await conn.execute(
        f"SELECT {_ACTION_COLUMNS} FROM operator_actions WHERE unit_id = %s ORDER BY at DESC, id DESC LIMIT %s",
        (unit_id, limit))
    return [_action(row) for row in await cur.fetchall()]


def _action(row: tuple[Any, ...]) -> OperatorAction:
    identifier, unit_id, action, detail, operator, reason, at = row
    return OperatorAction(unit_id=unit_id, action=action, reason=reason, operator=operator, detail=dict(detail),
                          at=at, id=int(identifier))
