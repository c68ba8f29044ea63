"""Submissions to AEMO's bidding API and AEMO's answers (plain SQL over async psycopg).

The ``aemo`` bid backend (services/aemo_bidding.py) writes a submission (state SUBMITTING) and commits it
before sending, then records each exchange with AEMO (:func:`record_exchange`) and the submission's state.
Every function takes an open :class:`psycopg.AsyncConnection` and runs inside the caller's transaction; none
commits. Market times are naive AEST, interval-ending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

AsyncConn = psycopg.AsyncConnection[Any]

SUBMITTING = "SUBMITTING"
RECEIVED = "RECEIVED"
ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"
TIMED_OUT = "TIMED_OUT"
UNREADABLE = "UNREADABLE"
UNAVAILABLE = "UNAVAILABLE"
REFUSED = "REFUSED"
# AEMO decided: the submission is never sent again and its answer is final.
FINAL_STATES = frozenset({ACCEPTED, REJECTED})
SUBMIT = "submitBids"
STATUS = "getSubmission"

_COLUMNS = ("reference_id, bid_id, unit_id, trading_day, dispatch_interval, version, state, transaction_id, "
            "reasons, payload, submission, content_hash, sends, created_at, updated_at")


@dataclass(frozen=True)
class AemoSubmission:
    """A stored submission: its keys, state, AEMO's transaction id and reasons, the JSON sent, times sent."""

    reference_id: str
    bid_id: str
    unit_id: str
    trading_day: date
    dispatch_interval: datetime
    version: int
    state: str
    transaction_id: str | None
    reasons: list[str]
    payload: bytes
    submission: dict[str, Any]
    content_hash: str
    sends: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AemoExchange:
    """One request to AEMO about a submission and what came back."""

    exchange_id: int
    reference_id: str
    operation: str
    at: datetime
    http_status: int | None
    outcome: str
    detail: str
    answer: str | None


async def claim_submission(conn: AsyncConn, *, reference_id: str, bid_id: str, unit_id: str, trading_day: date,
                           dispatch_interval: datetime, version: int, payload: bytes,
                           submission: dict[str, Any], content_hash: str) -> tuple[AemoSubmission, bool]:
    """Store a new submission in state SUBMITTING; (the stored row, whether this call created it).

    When ``reference_id`` (or ``bid_id``) is already stored nothing is written and the stored row comes back
    with ``False``: a concurrent or earlier call owns it.
    """
    async with conn.cursor(row_factory=class_row(AemoSubmission)) as cur:
        await cur.execute(
            "INSERT INTO aemo_submissions (reference_id, bid_id, unit_id, trading_day, dispatch_interval, version,"
            " state, payload, submission, content_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
            (reference_id, bid_id, unit_id, trading_day, dispatch_interval, version, SUBMITTING, payload,
             Jsonb(submission), content_hash))
        created = await cur.fetchone()
        if created is not None:
            return created, True
        await cur.execute(f"SELECT {_COLUMNS} FROM aemo_submissions WHERE reference_id = %s OR bid_id = %s"
                          " ORDER BY reference_id = %s DESC LIMIT 1", (reference_id, bid_id, reference_id))
        existing = await cur.fetchone()
    if existing is None:
        raise RuntimeError(f"submission {reference_id} conflicted on insert but cannot be read back")
    return existing, False


async def get_submission(conn: AsyncConn, reference_id: str) -> AemoSubmission | None:
    """The stored submission ``reference_id``, or None."""
    async with conn.cursor(row_factory=class_row(AemoSubmission)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM aemo_submissions WHERE reference_id = %s", (reference_id,))
        return await cur.fetchone()


async def submission_of_bid(conn: AsyncConn, bid_id: str) -> AemoSubmission | None:
    """The stored submission of the platform's bid ``bid_id``, or None."""
    async with conn.cursor(row_factory=class_row(AemoSubmission)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM aemo_submissions WHERE bid_id = %s", (bid_id,))
        return await cur.fetchone()


async def lock_submission(conn: AsyncConn, reference_id: str) -> AemoSubmission | None:
    """The stored submission, locked (``FOR UPDATE``) until the caller's transaction ends; None if absent."""
    async with conn.cursor(row_factory=class_row(AemoSubmission)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM aemo_submissions WHERE reference_id = %s FOR UPDATE",
                          (reference_id,))
        return await cur.fetchone()


async def count_send(conn: AsyncConn, reference_id: str) -> None:
    """Count one POST of the submission's JSON (recorded before it is sent)."""
    await conn.execute("UPDATE aemo_submissions SET sends = sends + 1, updated_at = now() WHERE reference_id = %s",
                       (reference_id,))


async def set_state(conn: AsyncConn, reference_id: str, state: str, *, transaction_id: str | None = None,
                    reasons: tuple[str, ...] = ()) -> None:
    """Record the submission's state (and AEMO's transaction id and reasons when given)."""
    await conn.execute(
        "UPDATE aemo_submissions SET state = %s, transaction_id = COALESCE(%s, transaction_id), reasons = %s,"
        " updated_at = now() WHERE reference_id = %s", (state, transaction_id, list(reasons), reference_id))


async def record_exchange(conn: AsyncConn, reference_id: str, operation: str, outcome: str, *,
                          http_status: int | None = None, detail: str = "", answer: str | None = None) -> None:
    """Record one request to AEMO about ``reference_id`` and its outcome (AEMO's status or the failure)."""
    await conn.execute(
        "INSERT INTO aemo_exchanges (reference_id, operation, http_status, outcome, detail, answer)"
        " VALUES (%s, %s, %s, %s, %s, %s)", (reference_id, operation, http_status, outcome, detail, answer))


async def list_exchanges(conn: AsyncConn, reference_id: str) -> list[AemoExchange]:
    """Every recorded exchange about ``reference_id``, in order."""
    async with conn.cursor(row_factory=class_row(AemoExchange)) as cur:
        await cur.execute("SELECT exchange_id, reference_id, operation, at, http_status, outcome, detail, answer"
                          " FROM aemo_exchanges WHERE reference_id = %s ORDER BY exchange_id", (reference_id,))
        return await cur.fetchall()
