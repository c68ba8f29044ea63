"""The cycle's clock: which dispatch interval a cycle bids for, its data cut-off and gate closure.

The local stack replays historical market data live: wall-clock time is mapped onto the replay period
keeping the time of day (day ``k`` of the replay is ``k mod replay_days`` days after its start), so a
newcomer watching the Temporal UI at 17:40 AEST sees the cycle bid a January 2021 evening interval.
On live market data the clock is the market's own: AEST now (:func:`cycle_market_time`).
Import-light (datetime only): the workflow uses it inside the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

AEST_OFFSET = timedelta(hours=10)
INTERVAL = timedelta(minutes=5)


def replay_market_time(now_utc: datetime, replay_start: datetime, replay_days: int) -> datetime:
    """Naive AEST market time in the replay period that corresponds to wall-clock ``now_utc``.

    The time of day (AEST) is kept; the day is ``(days since replay_start's date) mod replay_days``
    days after replay_start's date.
    """
    if replay_days <= 0:
        raise ValueError(f"replay_days must be positive, got {replay_days}")
    if now_utc.tzinfo is not None:
        now_utc = now_utc.astimezone(UTC).replace(tzinfo=None)
    market_now = now_utc + AEST_OFFSET
    day_offset = (market_now.date() - replay_start.date()).days % replay_days
    return datetime.combine(replay_start.date() + timedelta(days=day_offset), market_now.time())


REPLAY_CLOCK = "replay"
LIVE_CLOCK = "live"


def live_market_time(now_utc: datetime) -> datetime:
    """Naive AEST market time of wall-clock ``now_utc`` (an aware time is converted; naive is read as UTC)."""
    if now_utc.tzinfo is not None:
        now_utc = now_utc.astimezone(UTC).replace(tzinfo=None)
    return now_utc + AEST_OFFSET


def cycle_market_time(now_utc: datetime, clock: str, replay_start: datetime, replay_days: int) -> datetime:
    """The market time (naive AEST) a cycle started at wall-clock ``now_utc`` decides at.

    ``clock`` "replay": :func:`replay_market_time` (the replay period of the data); "live": AEST now.
    Raises ValueError for another clock.
    """
    if clock == LIVE_CLOCK:
        return live_market_time(now_utc)
    if clock == REPLAY_CLOCK:
        return replay_market_time(now_utc, replay_start, replay_days)
    raise ValueError(f"unknown cycle clock {clock!r}: expected {REPLAY_CLOCK!r} or {LIVE_CLOCK!r}")


@dataclass(frozen=True)
class CycleTimeline:
    """The market times (naive AEST) that bound one cycle."""

    decision_time: datetime
    # Interval-ending time of the interval the cycle bids for.
    dispatch_interval: datetime
    # After this the cycle stops waiting for late data and uses estimates.
    data_cutoff: datetime
    # The bid must be acknowledged before this.
    gate_closure: datetime


def cycle_timeline(decision_time: datetime, *, market_data_cutoff_s: int, gate_closure_margin_s: int,
                   minimum_lead_s: int = 0) -> CycleTimeline:
    """Timeline of a cycle deciding at ``decision_time``: it bids for the first interval whose dispatch
    run has not happened (the one after the interval in progress); gate closure is
    ``gate_closure_margin_s`` before that interval starts.

    A cycle needs time to fetch, forecast, optimise and submit: when fewer than ``minimum_lead_s``
    seconds separate ``decision_time`` from that gate closure (an operator triggered the schedule
    late in an interval), the cycle bids for the interval after it instead of failing at gate closure.
    Scheduled cycles start ``schedule_offset_s`` after the boundary and are never shifted.
    """
    floored = decision_time.replace(second=0, microsecond=0)
    in_progress_end = floored - timedelta(minutes=floored.minute % 5) + INTERVAL
    dispatch_interval = in_progress_end + INTERVAL
    margin = timedelta(seconds=gate_closure_margin_s)
    if dispatch_interval - INTERVAL - margin - decision_time < timedelta(seconds=minimum_lead_s):
        dispatch_interval += INTERVAL
    return CycleTimeline(
        decision_time=decision_time,
        dispatch_interval=dispatch_interval,
        data_cutoff=decision_time + timedelta(seconds=market_data_cutoff_s),
        gate_closure=dispatch_interval - INTERVAL - margin,
    )


def market_now(decision_time: datetime, cycle_started_utc: datetime, now_utc: datetime) -> datetime:
    """Market time now: the decision time plus the wall-clock time elapsed since the cycle started."""
    return decision_time + (now_utc - cycle_started_utc)


_EPOCH = datetime(1970, 1, 1)


def market_offset_ms(market_time: datetime, now_utc: datetime) -> int:
    """Market time − wall clock (ms) when naive-AEST ``market_time`` is "now" at ``now_utc``.

    The local stack replays January 2021 live: a run maps its start onto the replay period and keeps this
    offset, so wall-clock things (homes, their plans) and market things (intervals, bids) line up.
    """
    if now_utc.tzinfo is not None:
        now_utc = now_utc.astimezone(UTC).replace(tzinfo=None)
    return int(((market_time - AEST_OFFSET) - now_utc).total_seconds() * 1000)


def wall_clock_ms(market_time: datetime, offset_ms: int) -> int:
    """Wall-clock epoch ms UTC of naive-AEST ``market_time``, given market time − wall clock (``offset_ms``)."""
    return int(((market_time - AEST_OFFSET) - _EPOCH).total_seconds() * 1000) - offset_ms


def plan_window_start_ms(dispatch_interval: datetime, plan_interval_minutes: int) -> int:
    """Start (epoch ms of the market clock, AEST read as UTC+10) of the plan interval holding the start of
    interval-ending ``dispatch_interval``: where a fleet bid's aggregate of site plans begins."""
    start_ms = wall_clock_ms(dispatch_interval - INTERVAL, 0)
    return start_ms - start_ms % (plan_interval_minutes * 60_000)
