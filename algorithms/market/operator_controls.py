"""Operator controls of an AutoBidder unit: what an operator may ask, and what the cycle then honours.

Operators pause and resume bidding, hold a minimum state of charge until a time (a storm watch) and ask
for a manual rebid. These pure functions validate each request (a :class:`OperatorRequestError`, a
ValueError, whose message names the problem) and decide which controls are in force at a moment; the
bid decision (:mod:`algorithms.market.bid_decision`) applies them to the battery spec the optimiser and
the bid builder share, and to the rebid's explanation. Times are timezone-aware wall-clock datetimes
(a backtest replays controls from a :class:`ControlTimeline` in naive AEST market time); SoC as
fractions of the unit's capacity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vpp.v1 import bid_pb2, common_pb2

# Longest SoC hold an operator may set in one request.
MAX_SOC_HOLD = timedelta(days=7)
# Longest reason of a pause, resume or SoC hold (characters; a manual rebid's is the market's limit).
MAX_REASON_CHARS = 500


class OperatorRequestError(ValueError):
    """An operator's request that cannot be applied; the message says why."""


@dataclass(frozen=True)
class UnitControls:
    """The controls stored for a unit (a unit without a row has the defaults: nothing in force).

    ``soc_floor_fraction`` (fraction of energy capacity) applies until ``soc_floor_until`` (aware);
    ``pending_rebid_reason`` is a manual rebid the next cycle submits; ``updated_at`` is aware.
    """

    unit_id: str
    paused: bool = False
    paused_reason: str | None = None
    soc_floor_fraction: float | None = None
    soc_floor_until: datetime | None = None
    pending_rebid_reason: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class EffectiveControls:
    """The controls a cycle honours at one moment: a SoC hold past its time is not in force.

    The defaults are "nothing in force": not paused, no SoC floor, no manual rebid pending.
    ``soc_floor_fraction`` is a fraction of the unit's energy capacity; ``soc_floor_until`` (aware) when
    the hold ends, if known.
    """

    paused: bool = False
    paused_reason: str | None = None
    soc_floor_fraction: float | None = None
    soc_floor_until: datetime | None = None
    manual_rebid_reason: str | None = None


def _aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise OperatorRequestError(f"{name} {moment.isoformat()} has no UTC offset; give one, e.g. +10:00")


def validate_reason(reason: str, action: str, max_chars: int = MAX_REASON_CHARS) -> str:
    """``reason`` stripped; raises OperatorRequestError when it is blank or longer than ``max_chars``."""
    text = reason.strip()
    if not text:
        raise OperatorRequestError(f"{action} needs a reason (it goes into the audit trail)")
    if len(text) > max_chars:
        raise OperatorRequestError(f"{action} reason is {len(text)} characters; at most {max_chars} are allowed")
    return text


def validate_pause(reason: str, controls: UnitControls) -> str:
    """The reason of a pause of ``controls.unit_id``; raises OperatorRequestError when the reason is
    missing or the unit is already paused."""
    text = validate_reason(reason, "pause")
    if controls.paused:
        raise OperatorRequestError(f"unit {controls.unit_id} is already paused "
                                   f"({controls.paused_reason or 'no reason recorded'})")
    return text


def validate_resume(reason: str, controls: UnitControls) -> str:
    """The reason of a resume; raises OperatorRequestError when it is missing or the unit is not paused."""
    text = validate_reason(reason, "resume")
    if not controls.paused:
        raise OperatorRequestError(f"unit {controls.unit_id} is not paused; there is nothing to resume")
    return text


def validate_soc_hold(floor_fraction: float, until: datetime, now: datetime, soc_min_fraction: float,
                      soc_max_fraction: float, reason: str, max_hold: timedelta = MAX_SOC_HOLD) -> str:
    """The reason of a SoC hold at ``floor_fraction`` (of capacity) until ``until`` (aware).

    Raises OperatorRequestError unless the floor is a number within the battery's
    [``soc_min_fraction``, ``soc_max_fraction``], ``until`` is after ``now`` and at most ``max_hold``
    after it, and a reason is given.
    """
    if not math.isfinite(floor_fraction) or not soc_min_fraction <= floor_fraction <= soc_max_fraction:
        raise OperatorRequestError(f"SoC floor {floor_fraction:g} is outside the battery's limits "
                                   f"[{soc_min_fraction:g}, {soc_max_fraction:g}] (a fraction of capacity)")
    _aware(until, "hold until")
    if until <= now:
        raise OperatorRequestError(f"hold until {until.isoformat()} is not in the future (now {now.isoformat()})")
    if until - now > max_hold:
        raise OperatorRequestError(f"hold until {until.isoformat()} is more than {max_hold.days} days ahead; "
                                   "set a shorter hold and extend it later")
    return validate_reason(reason, "SoC hold")


def validate_release_soc(reason: str, controls: UnitControls, now: datetime) -> str:
    """The reason of releasing a SoC hold; raises OperatorRequestError when it is missing or no hold
    is in force at ``now``."""
    text = validate_reason(reason, "SoC release")
    if effective_controls(controls, now).soc_floor_fraction is None:
        raise OperatorRequestError(f"unit {controls.unit_id} has no SoC hold in force to release")
    return text


def validate_manual_rebid(reason: str, max_chars: int) -> str:
    """The reason of a manual rebid (it becomes part of the rebid explanation, at most ``max_chars``
    characters); raises OperatorRequestError when it is blank or too long."""
    return validate_reason(reason, "manual rebid", max_chars)


def effective_controls(controls: UnitControls, now: datetime) -> EffectiveControls:
    """What a cycle at ``now`` (aware) honours: the pause, a SoC hold until a time after ``now``, and a
    pending manual rebid."""
    _aware(now, "now")
    hold_in_force = (controls.soc_floor_fraction is not None and controls.soc_floor_until is not None
                     and controls.soc_floor_until > now)
    return EffectiveControls(
        paused=controls.paused,
        paused_reason=controls.paused_reason,
        soc_floor_fraction=controls.soc_floor_fraction if hold_in_force else None,
        soc_floor_until=controls.soc_floor_until if hold_in_force else None,
        manual_rebid_reason=controls.pending_rebid_reason or None,
    )


@dataclass(frozen=True)
class SocHold:
    """A SoC hold in a replay: minimum SoC ``floor_fraction`` (of capacity) for the decisions at
    ``start`` <= decision time < ``end`` (naive AEST market time)."""

    start: datetime
    end: datetime
    floor_fraction: float


@dataclass(frozen=True)
class Pause:
    """Bidding paused in a replay for the decisions at ``start`` <= decision time < ``end`` (naive AEST)."""

    start: datetime
    end: datetime
    reason: str


@dataclass(frozen=True)
class ManualRebid:
    """A manual rebid asked at ``at`` (naive AEST) in a replay: pending from the first decision at or after
    it until a decision submits a bid."""

    at: datetime
    reason: str


@dataclass(frozen=True)
class ControlTimeline:
    """The operator's controls over a replayed period (the backtest's counterpart of ``vpp ops``).

    Raises OperatorRequestError for a period that ends before it starts, a floor that is not a fraction
    in [0, 1], or a blank reason.
    """

    soc_holds: tuple[SocHold, ...] = ()
    pauses: tuple[Pause, ...] = ()
    manual_rebids: tuple[ManualRebid, ...] = ()

    def __post_init__(self) -> None:
        periods: list[SocHold | Pause] = [*self.soc_holds, *self.pauses]
        for period in periods:
            if not period.start < period.end:
                raise OperatorRequestError(f"control period from {period.start:%Y-%m-%d %H:%M} to "
                                           f"{period.end:%Y-%m-%d %H:%M} ends before it starts")
        for hold in self.soc_holds:
            if not (math.isfinite(hold.floor_fraction) and 0 <= hold.floor_fraction <= 1):
                raise OperatorRequestError(f"SoC floor {hold.floor_fraction:g} is not a fraction of capacity "
                                           "in [0, 1]")
        for pause in self.pauses:
            validate_reason(pause.reason, "pause")
        for rebid in self.manual_rebids:
            validate_reason(rebid.reason, "manual rebid")


def controls_at(timeline: ControlTimeline, moment: datetime,
                last_manual_rebid_submitted: datetime | None = None) -> EffectiveControls:
    """The controls a replayed decision at ``moment`` (naive AEST) honours: paused when a pause covers it
    (the first one's reason); the highest floor of the SoC holds covering it; the latest manual rebid asked
    at or before ``moment`` and after ``last_manual_rebid_submitted`` (the decision time that last
    submitted a manual rebid: requests asked up to then were served by it), as live cycles honour a
    pending rebid until one is submitted."""
    pause = next((p for p in timeline.pauses if p.start <= moment < p.end), None)
    floors = [h.floor_fraction for h in timeline.soc_holds if h.start <= moment < h.end]
    pending = [r for r in timeline.manual_rebids if r.at <= moment
               and (last_manual_rebid_submitted is None or r.at > last_manual_rebid_submitted)]
    latest = max(pending, key=lambda r: r.at, default=None)
    return EffectiveControls(
        paused=pause is not None,
        paused_reason=pause.reason if pause is not None else None,
        soc_floor_fraction=max(floors) if floors else None,
        manual_rebid_reason=latest.reason if latest is not None else None,
    )


def battery_with_soc_floor(battery: common_pb2.BatterySpec, floor_fraction: float | None) -> common_pb2.BatterySpec:
    """A copy of ``battery`` whose minimum SoC is ``max(configured, floor_fraction)`` (never above its
    maximum); the same battery when no floor is given. The optimiser and bid builder read the copy, so
    no plan or bid discharges below the floor (charging up to it is not forced)."""
    held = common_pb2.BatterySpec()
    held.CopyFrom(battery)
    if floor_fraction is not None:
        held.soc_min_fraction = min(max(battery.soc_min_fraction, floor_fraction), battery.soc_max_fraction)
    return held


def with_operator_rebid_reason(bid: bid_pb2.Bid, reason: str, changes: Iterable[str],
                               max_chars: int) -> bid_pb2.Bid:
    """A copy of ``bid`` whose REBID explanation starts with the operator's ``reason`` and ends with the
    material ``changes`` (if any), at most ``max_chars`` characters (a DAILY bid has no explanation and
    is copied as is)."""
    copy = bid_pb2.Bid()
    copy.CopyFrom(bid)
    if copy.entry_type != bid_pb2.ENTRY_TYPE_REBID:
        return copy
    listed = "; ".join(changes)
    body = copy.rebid_explanation.rstrip(". ")
    text = f"Manual rebid: {reason.strip()}." + (f" {body}." if body else "")
    text += f" Changes: {listed}" if listed else " No material change."
    copy.rebid_explanation = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
    return copy


def parse_hold_until(text: str) -> datetime:
    """An ISO-8601 time with a UTC offset; raises OperatorRequestError otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise OperatorRequestError(f"hold until {text!r} is not an ISO-8601 time "
                                   "(e.g. 2026-11-22T18:00+10:00)") from None
    if moment.tzinfo is None:
        raise OperatorRequestError(f"hold until {text!r} has no UTC offset; give one, e.g. +10:00")
    return moment
