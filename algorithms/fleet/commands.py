"""Which setpoint commands to send, resend or renew: the retry-until-acknowledged bookkeeping of an event.

A dispatch event keeps one :class:`CommandBook` row per site of the event. Every control step calls
:func:`plan_commands` with the setpoints the allocation wants now; the result says which sites get a
**new command** (no command yet, the setpoint moved by more than the deadband, or the command in force
is about to expire) and which get a **resend** of the command in force (not acknowledged within
``resend_after_ms``). Commands expire (``valid_until_ms``) so that no setpoint outlives its controller:
if the platform stops, every site returns to its own plan within ``command_validity_ms``.

:func:`record_acks` marks acknowledgements; an acknowledgement of an older command of the same site
(a late ack of a superseded command) is ignored, not counted as an acknowledgement of the new one.
All functions are pure and vectorised over the event's sites; times are epoch ms UTC, power kW.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from algorithms.fleet.fleet_types import NEVER, BoolArray, FloatArray, IntArray

NO_COMMAND = -1
"""``command_id`` of a site that has not been sent any command in this event."""


@dataclass(frozen=True)
class CommandPolicy:
    """How commands are (re)sent: ms, kW."""

    resend_after_ms: int = 2_000
    command_validity_ms: int = 30_000
    setpoint_deadband_kw: float = 0.05


@dataclass(frozen=True)
class CommandBook:
    """Per-site command state of one event; rows are the event's sites.

    Attributes:
        command_id: id of the command in force (:data:`NO_COMMAND` if none).
        setpoint_kw: its setpoint (kW, + discharge / − charge).
        valid_until_ms: when it expires.
        sent_at_ms: when it was last sent (first send or resend).
        acknowledged: the command in force has been acknowledged (accepted or refused).
        refused: the site acknowledged the command in force but refused it.
        acknowledged_at_ms: when the command in force was first acknowledged (NEVER if not yet).
        first_acknowledged_at_ms: first acknowledgement of any command of the event (NEVER if none).
        send_count: sends of any command to the site over the event (resends included).
    """

    command_id: IntArray
    setpoint_kw: FloatArray
    valid_until_ms: IntArray
    sent_at_ms: IntArray
    acknowledged: BoolArray
    refused: BoolArray
    acknowledged_at_ms: IntArray
    first_acknowledged_at_ms: IntArray
    send_count: IntArray

    @classmethod
    def empty(cls, site_count: int) -> CommandBook:
        """The book of an event whose ``site_count`` sites have not been sent anything."""
        return cls(
            command_id=np.full(site_count, NO_COMMAND, dtype=np.int64),
            setpoint_kw=np.zeros(site_count),
            valid_until_ms=np.full(site_count, NEVER, dtype=np.int64),
            sent_at_ms=np.full(site_count, NEVER, dtype=np.int64),
            acknowledged=np.zeros(site_count, dtype=np.bool_),
            refused=np.zeros(site_count, dtype=np.bool_),
            acknowledged_at_ms=np.full(site_count, NEVER, dtype=np.int64),
            first_acknowledged_at_ms=np.full(site_count, NEVER, dtype=np.int64),
            send_count=np.zeros(site_count, dtype=np.int64),
        )


@dataclass(frozen=True)
class CommandPlan:
    """What one control step sends: ``new_rows`` get new commands, ``resend_rows`` the one in force."""

    book: CommandBook
    new_rows: IntArray
    resend_rows: IntArray
    next_command_id: int

    @property
    def send_rows(self) -> IntArray:
        """Every row that gets a message this step (new and resent), ascending."""
        return np.sort(np.concatenate([self.new_rows, self.resend_rows]))


def plan_commands(book: CommandBook, setpoint_kw: FloatArray, *, now_ms: int, event_end_ms: int,
                  next_command_id: int, policy: CommandPolicy) -> CommandPlan:
    """Decide the commands of one control step.

    Args:
        book: the event's command state before this step.
        setpoint_kw: the setpoint each site should hold from now (kW, + discharge / − charge).
        now_ms: the time of the step (epoch ms UTC).
        event_end_ms: end of the event's window: no command is valid beyond it.
        next_command_id: first unused command id (ids are unique across events).
        policy: deadband, resend and validity times.

    Returns:
        The new book and the rows to send. A new command gets ``valid_until_ms = min(now +
        command_validity_ms, event_end_ms)``; it replaces the one in force (not yet acknowledged).
    """
    if setpoint_kw.shape != book.command_id.shape:
        raise ValueError(f"setpoint_kw has shape {setpoint_kw.shape}, the book {book.command_id.shape}")
    renew_before_ms = policy.command_validity_ms // 2
    expiring = (book.valid_until_ms - now_ms < renew_before_ms) & (book.valid_until_ms < event_end_ms)
    moved = np.abs(setpoint_kw - book.setpoint_kw) > policy.setpoint_deadband_kw
    new = (book.command_id == NO_COMMAND) | moved | expiring
    if now_ms >= event_end_ms:
        new[:] = False
    new_rows = np.flatnonzero(new).astype(np.int64)
    resend = (~new & (book.command_id != NO_COMMAND) & ~book.acknowledged
              & (now_ms - book.sent_at_ms >= policy.resend_after_ms) & (book.valid_until_ms > now_ms))
    resend_rows = np.flatnonzero(resend).astype(np.int64)

    command_id = book.command_id.copy()
    command_id[new_rows] = next_command_id + np.arange(len(new_rows), dtype=np.int64)
    setpoint = book.setpoint_kw.copy()
    setpoint[new_rows] = setpoint_kw[new_rows]
    valid_until = book.valid_until_ms.copy()
    valid_until[new_rows] = min(now_ms + policy.command_validity_ms, event_end_ms)
    sent_at = book.sent_at_ms.copy()
    sent_at[new_rows] = now_ms
    sent_at[resend_rows] = now_ms
    acknowledged = book.acknowledged.copy()
    acknowledged[new_rows] = False
    refused = book.refused.copy()
    refused[new_rows] = False
    acknowledged_at = book.acknowledged_at_ms.copy()
    acknowledged_at[new_rows] = NEVER
    send_count = book.send_count.copy()
    send_count[new_rows] += 1
    send_count[resend_rows] += 1
    new_book = replace(book, command_id=command_id, setpoint_kw=setpoint, valid_until_ms=valid_until,
                       sent_at_ms=sent_at, acknowledged=acknowledged, refused=refused,
                       acknowledged_at_ms=acknowledged_at, send_count=send_count)
    return CommandPlan(book=new_book, new_rows=new_rows, resend_rows=resend_rows,
                       next_command_id=next_command_id + len(new_rows))


def record_acks(book: CommandBook, rows: IntArray, command_id: IntArray, acknowledged_at_ms: IntArray,
                accepted: BoolArray) -> CommandBook:
    """Mark acknowledgements of the commands in force; returns the new book.

    ``rows`` are the event rows of the acknowledging sites (-1 for sites not in the event: ignored).
    An acknowledgement whose ``command_id`` is not the command in force is ignored.
    """
    matches = (rows >= 0)
    safe_rows = np.where(matches, rows, 0)
    matches &= book.command_id[safe_rows] == command_id
    hit_rows = safe_rows[matches]
    acknowledged = book.acknowledged.copy()
    acknowledged[hit_rows] = True
    refused = book.refused.copy()
    refused[hit_rows] = ~accepted[matches]
    first = book.first_acknowledged_at_ms.copy()
    ack_times = acknowledged_at_ms[matches]
    never = first == NEVER
    candidate = np.full(len(first), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(candidate, hit_rows, ack_times)
    has_ack = candidate != np.iinfo(np.int64).max
    first = np.where(has_ack & never, candidate, np.where(has_ack, np.minimum(first, candidate), first))
    held = book.acknowledged_at_ms
    acknowledged_at = np.where(has_ack & (held == NEVER), candidate,
                               np.where(has_ack, np.minimum(held, candidate), held))
    return replace(book, acknowledged=acknowledged, refused=refused, acknowledged_at_ms=acknowledged_at,
                   first_acknowledged_at_ms=first)
