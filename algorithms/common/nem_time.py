"""NEM market time: 5-minute dispatch intervals, interval-ending, AEST (UTC+10, no daylight saving).

Market times are naive ``datetime`` objects in AEST throughout the platform; protobuf timestamps are
UTC and are converted at the edges with :func:`to_timestamp` / :func:`from_timestamp`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

AEST_OFFSET = timedelta(hours=10)
INTERVAL = timedelta(minutes=5)
TRADING_DAY_START = time(4, 0)
INTERVALS_PER_DAY = 288


def to_timestamp(market_time: datetime) -> Timestamp:
    """Protobuf UTC timestamp of a naive AEST market time."""
    ts = Timestamp()
    ts.FromDatetime((market_time - AEST_OFFSET).replace(tzinfo=UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    """Naive AEST market time of a protobuf UTC timestamp."""
    return ts.ToDatetime() + AEST_OFFSET


def utc_to_market(moment: datetime) -> datetime:
    """Naive AEST market time of an aware (or naive-UTC) datetime."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment + AEST_OFFSET


def market_to_utc(market_time: datetime) -> datetime:
    """Aware UTC datetime of a naive AEST market time."""
    return (market_time - AEST_OFFSET).replace(tzinfo=UTC)


def market_to_unix_ms(market_time: datetime) -> int:
    """Unix milliseconds of a naive AEST market time."""
    return round(market_to_utc(market_time).timestamp() * 1000)


def unix_ms_to_market(unix_ms: int) -> datetime:
    """Naive AEST market time of Unix milliseconds."""
    return utc_to_market(datetime.fromtimestamp(unix_ms / 1000, tz=UTC))


def interval_ending_at_or_before(market_time: datetime) -> datetime:
    """The latest 5-minute boundary at or before ``market_time`` (an interval-ending time)."""
    floored = market_time.replace(second=0, microsecond=0)
    return floored - timedelta(minutes=floored.minute % 5)


def next_dispatch_interval(decision_time: datetime) -> datetime:
    """The first interval whose dispatch run has not happened at ``decision_time``.

    The interval in progress was dispatched at its start, so a decision made during the interval
    ending E bids for the interval ending E + 5 min.
    """
    in_progress_end = interval_ending_at_or_before(decision_time) + INTERVAL
    return in_progress_end + INTERVAL


def interval_start(dispatch_interval: datetime) -> datetime:
    """Start time of the interval ending ``dispatch_interval``."""
    return dispatch_interval - INTERVAL


def trading_day(dispatch_interval: datetime) -> date:
    """Trading day of an interval-ending time: intervals ending 04:05 .. 04:00 next day."""
    shifted = dispatch_interval - timedelta(hours=4, minutes=5)
    return shifted.date()


def interval_number(dispatch_interval: datetime) -> int:
    """Period number 1..288 of an interval-ending time within its trading day."""
    day_start = datetime.combine(trading_day(dispatch_interval), TRADING_DAY_START)
    return int((dispatch_interval - day_start) / INTERVAL)


def trading_day_last_interval(day: date) -> datetime:
    """Interval-ending time of the last interval (period 288) of a trading day."""
    return datetime.combine(day + timedelta(days=1), TRADING_DAY_START)


def intervals(first_interval: datetime, count: int) -> list[datetime]:
    """``count`` consecutive interval-ending times starting at ``first_interval``."""
    return [first_interval + INTERVAL * i for i in range(count)]


def daily_bid_deadline(day: date, close: time) -> datetime:
    """Market time by which the daily bid for trading day ``day`` must be in (``close`` on D-1)."""
    return datetime.combine(day - timedelta(days=1), close)


def hours_per_interval(interval_minutes: int = 5) -> float:
    """Length of a dispatch interval in hours (MWh = MW x this)."""
    return interval_minutes / 60.0
