"""The record of VPP dispatch events and their per-site impact log (tables of migration 0003).

Written once per event when it ends (idempotent: recording the same event again replaces its rows);
read by ``vpp dispatch impact EVENT`` and by site-owner reports. Energy per site in kWh, per event MWh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg

from algorithms.fleet.fleet_types import NEVER, BoolArray, FloatArray, IntArray, StrArray


@dataclass(frozen=True)
class DispatchEventRecord:
    """One finished event: window (aware datetimes), target (MW), outcome, energy asked/delivered (MWh)."""

    event_id: str
    node_id: str
    target_mw: float
    window_start: datetime
    window_end: datetime
    status: str
    reason: str
    site_count: int
    asked_mwh: float
    delivered_mwh: float


@dataclass(frozen=True)
class SiteImpactLog:
    """Per-site rows of an event (arrays aligned by site); first ack NEVER (-1) when none (epoch ms)."""

    site_ids: StrArray
    asked_kwh: FloatArray
    delivered_kwh: FloatArray
    shortfall_kwh: FloatArray
    acknowledged: BoolArray
    first_acknowledged_at_ms: IntArray


def _aware(epoch_ms: int) -> datetime | None:
    return None if epoch_ms == NEVER else datetime.fromtimestamp(epoch_ms / 1000.0, tz=UTC)


def record_event(conn: psycopg.Connection[Any], event: DispatchEventRecord, impact: SiteImpactLog) -> None:
    """Store ``event`` and its impact log in one transaction, replacing an earlier record of the event."""
    with conn.transaction():
        conn.execute("DELETE FROM dispatch_events WHERE event_id = %s", (event.event_id,))
        conn.execute(
            "INSERT INTO dispatch_events (event_id, node_id, target_mw, window_start, window_end, status, reason,"
            " site_count, asked_mwh, delivered_mwh) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (event.event_id, event.node_id, event.target_mw, event.window_start, event.window_end, event.status,
             event.reason, event.site_count, event.asked_mwh, event.delivered_mwh))
        with conn.cursor().copy(
                "COPY dispatch_site_impact (event_id, site_id, asked_kwh, delivered_kwh, shortfall_kwh,"
                " acknowledged, first_acknowledged_at) FROM STDIN") as copy:
            for site_id, asked, delivered, shortfall, acknowledged, first_ack in zip(
                    impact.site_ids.tolist(), impact.asked_kwh.tolist(), impact.delivered_kwh.tolist(),
                    np.maximum(impact.shortfall_kwh, 0.0).tolist(), impact.acknowledged.tolist(),
                    impact.first_acknowledged_at_ms.tolist(), strict=True):
                copy.write_row((event.event_id, site_id, asked, delivered, shortfall, acknowledged,
                                _aware(first_ack)))


def get_event(conn: psycopg.Connection[Any], event_id: str) -> DispatchEventRecord | None:
    """The recorded event ``event_id``, or None."""
    row = conn.execute(
        "SELECT event_id, node_id, target_mw, window_start, window_end, status, reason, site_count, asked_mwh,"
        " delivered_mwh FROM dispatch_events WHERE event_id = %s", (event_id,)).fetchone()
    return None if row is None else DispatchEventRecord(*row)


def get_impact(conn: psycopg.Connection[Any], event_id: str) -> SiteImpactLog:
    """The impact log of ``event_id`` (empty when the event is not recorded), sorted by site id."""
    rows = conn.execute(
        "SELECT site_id, asked_kwh, delivered_kwh, shortfall_kwh, acknowledged, first_acknowledged_at"
        " FROM dispatch_site_impact WHERE event_id = %s ORDER BY site_id", (event_id,)).fetchall()
    first_ack = [NEVER if row[5] is None else int(row[5].timestamp() * 1000) for row in rows]
    return SiteImpactLog(
        site_ids=np.array([row[0] for row in rows], dtype=np.str_),
        asked_kwh=np.array([row[1] for row in rows], dtype=np.float64),
        delivered_kwh=np.array([row[2] for row in rows], dtype=np.float64),
        shortfall_kwh=np.array([row[3] for row in rows], dtype=np.float64),
        acknowledged=np.array([row[4] for row in rows], dtype=np.bool_),
        first_acknowledged_at_ms=np.array(first_ack, dtype=np.int64))
