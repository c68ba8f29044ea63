"""Market data as it was known at a given time: the as-of market snapshot (pure functions).

The as-of contract
------------------
A snapshot for (region, dispatch_interval, as_of) never contains anything published after ``as_of``:

* History covers the ``history_intervals`` 5-minute slots ending at the *latest interval*
  ``L = interval_ending_at_or_before(as_of)`` (interval-ending AEST), oldest first. With a *reach*
  (``history_reach_intervals`` > ``history_intervals``) a window that holds fewer than ``history_intervals``
  known prices starts earlier: at the slot of the ``history_intervals``-th newest known price within the reach,
  or at the oldest known one when the reach holds fewer (:func:`history_window_start`); never later than
  without the reach. Full data (the live case) gives the same window as without it; a history with gaps of
  days (a new unit, the store's months of a few days each) gets the earlier days the data holds.
* The DISPATCHPRICE value of the interval ending ``t`` is published at ``known_at(t) = t + delay
  (+ extra delay for late intervals)`` (:class:`PublicationModel`); intervals in ``missing_intervals``
  or absent from the data are never published.
* A slot's value is returned only when ``known_at <= as_of``. Its quality is ON_TIME when it was published
  no later than its expected time ``t + delay``, LATE when published after that time (but by as_of).
  Every other slot (not published yet, or never) is NaN with quality MISSING and known_at 0; so is a
  single product whose published value is empty in the source.
* ``latest_quality`` describes slot ``L``: ON_TIME / LATE as above when known; when not known by as_of
  it is LATE if a publication is scheduled after as_of (the data is on its way) and MISSING if the slot
  is never published (a gap). This flag is the only thing the snapshot says about the future and it
  carries no price; a cycle treats both the same (poll until its cut-off, then :func:`estimate_missing`).
* Pre-dispatch: the newest run (by run time) of the region whose known_at (latest LASTCHANGED) <= as_of.
* P5MIN (when a P5MIN table is given): the newest run (by run time) of the region published at or before
  as_of (:class:`~algorithms.market.prices.P5minPrices`), each product with the intervals it prices.
* Local dispatch (where the data has DISPATCHREGIONSUM, :attr:`DispatchPrices.region_enabled_mw`): the MW
  the region enabled of each FCAS product in the history slots, known with the slot's dispatch prices
  (the same DispatchIS report: same ``known_at``); NaN where those were not known at as_of or the data has
  no value. Without DISPATCHREGIONSUM the snapshot carries none.

Live data (:class:`ObservedPublication`) follows the same contract with observed publication times: a
value is known at the publication time of the AEMO file that carried it (from the file's header or
name), LATE when that is after its expected time ``t + delay``, and MISSING while no file has carried it.
Whether a publication is still on its way cannot be known in advance: the latest slot is LATE while its
expected time is after as_of (AEMO has not yet missed it) or when its file was published after as_of,
MISSING once the expected time has passed without a file. Live data grows as AEMO publishes, so a
dispatch interval after the newest one held is a valid request (the data is *open-ended*).

:func:`estimate_missing` is a separate pure step: it carries the last known value forward into MISSING
slots (quality ESTIMATED) for a cycle that has passed its cut-off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import cached_property
from types import MappingProxyType
from typing import ClassVar, Protocol

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from algorithms.common.nem_time import (
    AEST_OFFSET,
    INTERVAL,
    from_timestamp,
    interval_ending_at_or_before,
    to_timestamp,
    utc_to_market,
)
from algorithms.common.products import is_fcas
from algorithms.market.packed_wire import packed_doubles, packed_varints
from algorithms.market.prices import DispatchPrices, P5minPrices, PredispatchPrices
from settings import MAX_HISTORY_INTERVALS, MarketDataSettings
from vpp.v1 import common_pb2, market_data_pb2

DEFAULT_HISTORY_INTERVALS = 2016

ON_TIME = common_pb2.DATA_QUALITY_ON_TIME
LATE = common_pb2.DATA_QUALITY_LATE
MISSING = common_pb2.DATA_QUALITY_MISSING
ESTIMATED = common_pb2.DATA_QUALITY_ESTIMATED

_INTERVAL_S = int(INTERVAL.total_seconds())
_AEST_OFFSET_US = AEST_OFFSET // timedelta(microseconds=1)
_AEST_OFFSET_S = int(AEST_OFFSET.total_seconds())
_NEVER = np.iinfo(np.int64).max
# The snapshot's long repeated fields are appended from their arrays in one step (algorithms.market.packed_wire).
_PRICE_FIELD = market_data_pb2.ProductPriceHistory.DESCRIPTOR.fields_by_name["price"].number
_QUALITY_FIELD = market_data_pb2.ProductPriceHistory.DESCRIPTOR.fields_by_name["quality"].number
_ENABLED_FIELD = market_data_pb2.LocalDispatchHistory.DESCRIPTOR.fields_by_name["enabled_mw"].number
_MARKET_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


class SnapshotRequestError(ValueError):
    """A snapshot request that can never be answered as given (gRPC INVALID_ARGUMENT)."""


class SnapshotNotFoundError(LookupError):
    """A snapshot request for an interval the data does not cover (gRPC NOT_FOUND)."""


# --------------------------------------------------------------------------------------------------
# Publication model
# --------------------------------------------------------------------------------------------------


def _on_grid(moment: datetime) -> bool:
    return moment.second == 0 and moment.microsecond == 0 and moment.minute % 5 == 0


def _datetime_us(moment: datetime) -> int:
    """Microseconds since 1970-01-01 00:00 market time of a naive market datetime (exact)."""
    return (moment - _MARKET_EPOCH) // _MICROSECOND


def _seconds_us(seconds: float) -> int:
    """Microseconds of a duration in seconds, rounded as ``timedelta(seconds=...)`` rounds."""
    return timedelta(seconds=seconds) // _MICROSECOND


def _us_to_datetime(market_us: int) -> datetime:
    return _MARKET_EPOCH + timedelta(microseconds=market_us)


def _unix_ms(market_us: np.ndarray) -> np.ndarray:
    """Unix milliseconds (UTC) of market-time microseconds, rounded up: never earlier than the truth."""
    return -((_AEST_OFFSET_US - market_us) // 1000)


@dataclass(frozen=True)
class PublicationModel:
    """When DISPATCHPRICE values become known (seconds; interval-ending AEST keys).

    The value of the interval ending ``t`` is published at ``t + dispatch_price_delay_s`` plus
    ``late_intervals[t]`` extra seconds for a late interval; an interval in ``missing_intervals`` is
    never published.
    """

    dispatch_price_delay_s: float
    missing_intervals: frozenset[datetime] = frozenset()
    late_intervals: Mapping[datetime, float] = field(default_factory=dict)
    open_ended: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not np.isfinite(self.dispatch_price_delay_s) or self.dispatch_price_delay_s < 0:
            raise ValueError("dispatch_price_delay_s must be a finite number >= 0, "
                             f"got {self.dispatch_price_delay_s}")
        labelled = (("missing_intervals", self.missing_intervals), ("late_intervals", self.late_intervals))
        for label, moments in labelled:
            off_grid = sorted(str(moment) for moment in moments if not _on_grid(moment) or moment.tzinfo)
            if off_grid:
                raise ValueError(f"{label} must be naive 5-minute interval-ending AEST times, "
                                 f"got {', '.join(off_grid)}")
        negative = sorted(str(moment) for moment, extra in self.late_intervals.items()
                          if not np.isfinite(extra) or extra < 0)
        if negative:
            raise ValueError("late_intervals extra delays must be finite and >= 0 (seconds): "
                             f"{', '.join(negative)}")
        object.__setattr__(self, "missing_intervals", frozenset(self.missing_intervals))
        object.__setattr__(self, "late_intervals", MappingProxyType(dict(self.late_intervals)))

    def expected_at(self, interval: datetime) -> datetime:
        """Expected publication time (AEST) of the interval ending ``interval``: interval + delay."""
        return interval + timedelta(seconds=self.dispatch_price_delay_s)

    def known_at(self, interval: datetime) -> datetime | None:
        """Publication time (AEST) of the interval ending ``interval``; None when never published."""
        if interval in self.missing_intervals:
            return None
        return self.expected_at(interval) + timedelta(seconds=self.late_intervals.get(interval, 0.0))

    @cached_property
    def _missing_us(self) -> np.ndarray:
        return np.sort(np.array([_datetime_us(moment) for moment in self.missing_intervals], dtype=np.int64))

    @cached_property
    def _late_table(self) -> tuple[np.ndarray, np.ndarray]:
        keys = sorted(self.late_intervals)
        extra_us = [_seconds_us(self.late_intervals[moment]) for moment in keys]
        return (np.array([_datetime_us(moment) for moment in keys], dtype=np.int64),
                np.array(extra_us, dtype=np.int64))

    def publication_us(self, intervals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised (expected, known) publication times of interval-ending datetime64 values.

        Both int64 microseconds since 1970-01-01 market time, exactly as :meth:`expected_at` and
        :meth:`known_at` compute them; ``known`` is ``iinfo(int64).max`` for never-published intervals.
        """
        interval_us = np.asarray(intervals.astype("datetime64[us]").astype(np.int64))
        expected = interval_us + _seconds_us(self.dispatch_price_delay_s)
        late_keys, late_extra = self._late_table
        known = expected.copy()
        if len(late_keys):
            position = np.clip(np.searchsorted(late_keys, interval_us), 0, len(late_keys) - 1)
            hit = late_keys[position] == interval_us
            known[hit] += late_extra[position[hit]]
        if len(self._missing_us):
            known[np.isin(interval_us, self._missing_us)] = _NEVER
        return expected, known

    def awaited(self, interval: datetime, as_of: datetime) -> bool:
        """Never: every interval this model publishes is in the data (a slot absent from it is a gap)."""
        return False


class Publication(Protocol):
    """When DISPATCHPRICE values become known: simulated (:class:`PublicationModel`) or observed live
    (:class:`ObservedPublication`). Times are naive AEST; ``*_us`` are int64 microseconds since 1970-01-01
    market time."""

    open_ended: ClassVar[bool]
    """Whether the data grows as AEMO publishes (a dispatch interval after the newest held is valid)."""

    def publication_us(self, intervals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(expected, known) publication times of interval-ending datetime64 values; known is
        ``iinfo(int64).max`` where the value is never published (or, live, not published yet)."""
        ...

    def awaited(self, interval: datetime, as_of: datetime) -> bool:
        """Whether a slot absent from the data is still expected to be published after ``as_of``."""
        ...


@dataclass(frozen=True, eq=False)
class ObservedPublication:
    """When live DISPATCHPRICE values became known: the publication time of the file that carried each
    interval, as observed (naive AEST, interval-ending keys).

    ``intervals`` (datetime64[s], sorted, unique) and ``published`` (datetime64[s], one per interval)
    come from the ingested files; an interval not among them has not been published. A value is expected
    by ``interval + dispatch_price_delay_s``; published after that it is LATE. Arrays are read-only.
    """

    dispatch_price_delay_s: float
    intervals: np.ndarray
    published: np.ndarray
    open_ended: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not np.isfinite(self.dispatch_price_delay_s) or self.dispatch_price_delay_s < 0:
            raise ValueError("dispatch_price_delay_s must be a finite number >= 0, "
                             f"got {self.dispatch_price_delay_s}")
        intervals = np.asarray(self.intervals).astype("datetime64[s]")
        published = np.asarray(self.published).astype("datetime64[s]")
        if intervals.shape != published.shape or intervals.ndim != 1:
            raise ValueError(f"intervals {intervals.shape} and published {published.shape} must be "
                             "one-dimensional and of one length")
        if len(intervals) > 1 and not bool(np.all(np.diff(intervals) > np.timedelta64(0, "s"))):
            raise ValueError("intervals must be sorted and unique")
        if bool(np.isnat(published).any()):
            raise ValueError("every observed interval needs its publication time")
        intervals.setflags(write=False)
        published.setflags(write=False)
        object.__setattr__(self, "intervals", intervals)
        object.__setattr__(self, "published", published)

    def expected_at(self, interval: datetime) -> datetime:
        """Expected publication time (AEST) of the interval ending ``interval``: interval + delay."""
        return interval + timedelta(seconds=self.dispatch_price_delay_s)

    def known_at(self, interval: datetime) -> datetime | None:
        """Publication time (AEST) of the interval ending ``interval``; None while it is not published."""
        _, known = self.publication_us(np.array([np.datetime64(interval, "s")]))
        return None if int(known[0]) == _NEVER else _us_to_datetime(int(known[0]))

    def publication_us(self, intervals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised (expected, known) publication times (see :class:`Publication`)."""
        interval_us = np.asarray(intervals.astype("datetime64[us]").astype(np.int64))
        expected = interval_us + _seconds_us(self.dispatch_price_delay_s)
        known = np.full(len(interval_us), _NEVER, dtype=np.int64)
        if len(self.intervals):
            observed_us = self.intervals.astype("datetime64[us]").astype(np.int64)
            position = np.clip(np.searchsorted(observed_us, interval_us), 0, len(observed_us) - 1)
            hit = observed_us[position] == interval_us
            known[hit] = self.published.astype("datetime64[us]").astype(np.int64)[position[hit]]
        return expected, known

    def awaited(self, interval: datetime, as_of: datetime) -> bool:
        """Whether the interval's expected publication time is after ``as_of`` (AEMO has not missed it)."""
        return self.expected_at(interval) > as_of


@dataclass(frozen=True, eq=False)
class MarketTables:
    """What as-of snapshots are built from: dispatch prices, pre-dispatch runs, when dispatch prices became
    known (replayed files: a :class:`PublicationModel`; live reports: an :class:`ObservedPublication`) and,
    where the data has them, P5MIN runs."""

    dispatch: DispatchPrices
    predispatch: PredispatchPrices
    publication: Publication
    p5min: P5minPrices | None = None


def publication_model(market_data: MarketDataSettings,
                      late_intervals: Mapping[datetime, float] | None = None) -> PublicationModel:
    """The publication model of the configuration (delay seconds, missing intervals) plus any late ones."""
    return PublicationModel(dispatch_price_delay_s=market_data.dispatch_price_delay_s,
                            missing_intervals=frozenset(market_data.missing_intervals),
                            late_intervals=dict(late_intervals or {}))


# --------------------------------------------------------------------------------------------------
# The as-of snapshot (pure)
# --------------------------------------------------------------------------------------------------


def validate_snapshot_request(dispatch: DispatchPrices, *, region: str, dispatch_interval: datetime,
                              history_intervals: int, open_ended: bool = False) -> None:
    """Check a snapshot request against the data.

    Raises SnapshotRequestError for an unknown region (naming the known ones), a dispatch interval off
    the 5-minute grid or a history length outside 0..MAX_HISTORY_INTERVALS; SnapshotNotFoundError for a
    dispatch interval (interval-ending AEST) outside the data, or for empty data. ``open_ended`` (live
    data, growing as AEMO publishes): a dispatch interval after the newest one held is valid.
    """
    if open_ended and len(dispatch.intervals) == 0:
        raise SnapshotNotFoundError("no dispatch prices have been published yet (live data is empty)")
    if region not in dispatch.regions:
        raise SnapshotRequestError(f"unknown region {region!r}; known regions: {', '.join(dispatch.regions)}")
    if not _on_grid(dispatch_interval):
        raise SnapshotRequestError(f"dispatch_interval {dispatch_interval.isoformat()} is not on the "
                                   "5-minute grid (interval-ending AEST, e.g. 17:35:00)")
    if not 0 <= history_intervals <= MAX_HISTORY_INTERVALS:
        raise SnapshotRequestError(f"history_intervals must be within 0..{MAX_HISTORY_INTERVALS}, "
                                   f"got {history_intervals}")
    if len(dispatch.intervals) == 0:
        raise SnapshotNotFoundError("the dispatch price data is empty")
    first = dispatch.intervals[0].astype(datetime)
    last = dispatch.intervals[-1].astype(datetime)
    if not first <= dispatch_interval <= last and not (open_ended and dispatch_interval > last):
        raise SnapshotNotFoundError(f"dispatch_interval {dispatch_interval.isoformat()} is outside the data "
                                    f"(intervals ending {first.isoformat()} .. {last.isoformat()})")


def history_window_start(slot_known: np.ndarray, history_intervals: int) -> int:
    """Index of the first slot of the history window within ``slot_known`` (one bool per 5-minute slot of the
    reach, oldest first, True where a price is known at as-of; the last ``history_intervals`` slots are the
    window without the reach): the slot of the ``history_intervals``-th newest known price, or of the oldest
    known one when there are fewer, but never after ``len(slot_known) - history_intervals``. Pure."""
    standard = max(slot_known.size - history_intervals, 0)
    known = np.flatnonzero(slot_known)
    if known.size == 0:
        return standard
    wanted = known[-history_intervals] if known.size >= history_intervals else known[0]
    return int(min(wanted, standard))


@dataclass(frozen=True)
class _HistoryWindow:
    """The history slots (datetime64[s], oldest first) and, per slot, the data row, what the data and the
    publication say of it, and the prices known at as-of (slots x products; NaN where not known)."""

    slots: np.ndarray
    positions: np.ndarray
    in_data: np.ndarray
    values: np.ndarray
    expected_us: np.ndarray
    known_us: np.ndarray
    published: np.ndarray
    known_now: np.ndarray
    late: np.ndarray
    value_known: np.ndarray

    @classmethod
    def of(cls, dispatch: DispatchPrices, region: str, latest: datetime, count: int, as_of: datetime,
           publication: Publication) -> _HistoryWindow:
        """The window of ``count`` slots ending at the interval ending ``latest``, as known at ``as_of``."""
        latest64 = np.datetime64(latest, "s")
        slots = latest64 - np.arange(count - 1, -1, -1, dtype=np.int64) * np.timedelta64(_INTERVAL_S, "s")
        position = np.searchsorted(dispatch.intervals, slots)
        clipped = np.minimum(position, max(len(dispatch.intervals) - 1, 0))
        in_data = (position < len(dispatch.intervals)) & (dispatch.intervals[clipped] == slots)
        values = dispatch.price[dispatch.region_index(region)][clipped]  # (count, n_products)
        expected_us, known_us = publication.publication_us(slots)
        published = in_data & (known_us != _NEVER)
        known_now = published & (known_us <= _datetime_us(as_of))
        late = known_now & (known_us > expected_us)
        value_known = known_now[:, np.newaxis] & np.isfinite(values)
        return cls(slots, clipped, in_data, values, expected_us, known_us, published, known_now, late, value_known)

    def slot_known(self) -> np.ndarray:
        """Per slot: whether at least one price of it is known at as-of."""
        return np.asarray(self.value_known.any(axis=1), dtype=bool)

    def known_slots(self) -> int:
        """Slots with at least one price known at as-of."""
        return int(self.slot_known().sum())

    def from_slot(self, first: int) -> _HistoryWindow:
        """The same window from slot index ``first`` on."""
        return _HistoryWindow(*(getattr(self, column.name)[first:] for column in fields(self)))


def _history_window(dispatch: DispatchPrices, region: str, latest: datetime, as_of: datetime, count: int,
                    reach: int, publication: Publication) -> _HistoryWindow:
    """The snapshot's history window (module docstring): ``count`` slots ending at ``latest``, started earlier
    within ``reach`` slots (:func:`history_window_start`) when it holds fewer than ``count`` known prices."""
    window = _HistoryWindow.of(dispatch, region, latest, count, as_of, publication)
    if reach <= count or window.known_slots() >= count:
        return window
    reached = _HistoryWindow.of(dispatch, region, latest, reach, as_of, publication)
    return reached.from_slot(history_window_start(reached.slot_known(), count))


def _naive_market(moment: datetime) -> datetime:
    return utc_to_market(moment) if moment.tzinfo is not None else moment


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def build_snapshot(dispatch: DispatchPrices, predispatch: PredispatchPrices, *, region: str,
                   dispatch_interval: datetime, as_of: datetime, history_intervals: int,
                   publication: Publication,
                   p5min: P5minPrices | None = None,
                   history_reach_intervals: int = 0) -> market_data_pb2.MarketSnapshot:
    """The market snapshot of ``region`` for the interval ending ``dispatch_interval`` as known at ``as_of``.

    Times are naive AEST market times (an aware ``as_of`` is converted). ``history_intervals`` 5-minute
    slots (0 = 2016) ending at interval_ending_at_or_before(as_of); prices $/MWh (ENERGY) and $/MW/h
    (FCAS). ``p5min``: AEMO's P5MIN runs, if the data has them (None: the snapshot carries no P5MIN).
    Where ``dispatch`` has DISPATCHREGIONSUM the snapshot carries the region's FCAS local dispatch (MW) over
    the same slots, known as the prices are (``local_dispatch``); otherwise none.
    ``history_reach_intervals`` (0 or at most ``history_intervals``: no reach) 5-minute slots: how far back a
    window holding fewer than ``history_intervals`` known prices may start (module docstring).
    See the module docstring for the as-of contract and the quality rules.
    Raises SnapshotRequestError / SnapshotNotFoundError (see :func:`validate_snapshot_request`).
    """
    as_of = _naive_market(as_of)
    dispatch_interval = _naive_market(dispatch_interval)
    validate_snapshot_request(dispatch, region=region, dispatch_interval=dispatch_interval,
                              history_intervals=history_intervals, open_ended=publication.open_ended)
    if not 0 <= history_reach_intervals <= MAX_HISTORY_INTERVALS:
        raise SnapshotRequestError(f"history_reach_intervals must be within 0..{MAX_HISTORY_INTERVALS}, "
                                   f"got {history_reach_intervals}")
    latest = interval_ending_at_or_before(as_of)
    window = _history_window(dispatch, region, latest, as_of, history_intervals or DEFAULT_HISTORY_INTERVALS,
                             history_reach_intervals, publication)
    slots, clipped, in_data, values = window.slots, window.positions, window.in_data, window.values
    expected_us, known_us, published = window.expected_us, window.known_us, window.published
    known_now, late, value_known = window.known_now, window.late, window.value_known
    count = slots.size
    prices = np.where(value_known, values, np.nan)
    known_unix_ms = np.where(value_known, _unix_ms(np.where(published, known_us, 0))[:, np.newaxis], 0)
    quality = np.where(value_known, np.where(late, LATE, ON_TIME)[:, np.newaxis], MISSING)

    snapshot = market_data_pb2.MarketSnapshot(
        region=region, dispatch_interval=to_timestamp(dispatch_interval), as_of=to_timestamp(as_of),
        products=dispatch.products, latest_interval=to_timestamp(latest))
    first_interval = to_timestamp(slots[0].astype(datetime))
    for index, product in enumerate(dispatch.products):
        history = snapshot.history.add(product=product)
        history.first_interval.CopyFrom(first_interval)
        history.MergeFromString(packed_doubles(_PRICE_FIELD, prices[:, index])
                                + packed_varints(_QUALITY_FIELD, quality[:, index]))
        history.known_at_unix_ms.extend(known_unix_ms[:, index].tolist())
    if dispatch.region_enabled_mw is not None:
        _add_local_dispatch(snapshot, dispatch, region, clipped, known_now,
                            _unix_ms(np.where(published, known_us, 0)), first_interval)

    notes: list[str] = []
    if bool(value_known[-1].any()):
        snapshot.latest_quality = LATE if bool(late[-1]) else ON_TIME
        if bool(late[-1]):
            notes.append(f"latest interval ending {_fmt(latest)} published late, at "
                         f"{_fmt(_us_to_datetime(int(known_us[-1])))} (expected "
                         f"{_fmt(_us_to_datetime(int(expected_us[-1])))})")
    elif ((bool(published[-1]) and bool(np.isfinite(values[-1]).any()))
          or (not bool(in_data[-1]) and publication.awaited(latest, as_of))):
        snapshot.latest_quality = LATE
        notes.append(f"latest interval ending {_fmt(latest)} not yet published at as_of {_fmt(as_of)} "
                     f"(expected {_fmt(_us_to_datetime(int(expected_us[-1])))})")
    else:
        snapshot.latest_quality = MISSING
        notes.append(f"latest interval ending {_fmt(latest)} has no publication (gap)")
    missing_slots = int((~value_known.any(axis=1)).sum())
    if missing_slots:
        notes.append(f"{missing_slots} of {count} history intervals have no price known at as_of")
    late_slots = int(late.sum())
    if late_slots:
        notes.append(f"{late_slots} of {count} history intervals were published late")
    notes.extend(_add_predispatch(snapshot, predispatch, region, as_of))
    if p5min is not None:
        notes.extend(_add_p5min(snapshot, p5min, region, as_of))
    snapshot.quality_notes.extend(notes)
    return snapshot


def _add_local_dispatch(snapshot: market_data_pb2.MarketSnapshot, dispatch: DispatchPrices, region: str,
                        positions: np.ndarray, known_now: np.ndarray, known_unix_ms: np.ndarray,
                        first_interval: Timestamp) -> None:
    """Append the region's FCAS local dispatch (MW, DISPATCHREGIONSUM) of the history slots: for each slot,
    the data row at ``positions`` where the slot's dispatch prices were known at as_of (``known_now``) and
    the data has a value; NaN (known_at 0) elsewhere. One history per FCAS product of the data."""
    assert dispatch.region_enabled_mw is not None
    enabled = dispatch.region_enabled_mw[dispatch.region_index(region)][positions]  # (count, n_products)
    value_known = known_now[:, np.newaxis] & np.isfinite(enabled)
    values = np.where(value_known, enabled, np.nan)
    known_ms = np.where(value_known, known_unix_ms[:, np.newaxis], 0)
    for index, product in enumerate(dispatch.products):
        if not is_fcas(product):
            continue
        history = snapshot.local_dispatch.add(product=product)
        history.first_interval.CopyFrom(first_interval)
        history.MergeFromString(packed_doubles(_ENABLED_FIELD, values[:, index]))
        history.known_at_unix_ms.extend(known_ms[:, index].tolist())


def _add_predispatch(snapshot: market_data_pb2.MarketSnapshot, predispatch: PredispatchPrices,
                     region: str, as_of: datetime) -> list[str]:
    """Append the newest pre-dispatch run known at ``as_of`` (one forecast per product); return notes."""
    if region not in predispatch.regions:
        return [f"no pre-dispatch data for region {region}"]
    run = predispatch.latest_run(region, as_of)
    if run is None:
        return [f"no pre-dispatch run for {region} known at as_of {_fmt(as_of)}"]
    run_time = to_timestamp(run.run_time)
    known_at_ms = int(_unix_ms(np.array([_datetime_us(run.known_at)], dtype=np.int64))[0])
    unix_seconds = (run.periods.astype("datetime64[s]").astype(np.int64) - _AEST_OFFSET_S).tolist()
    periods = [Timestamp(seconds=seconds) for seconds in unix_seconds]
    for index, product in enumerate(run.products):
        forecast = snapshot.predispatch.add(product=product, known_at_unix_ms=known_at_ms)
        forecast.run_time.CopyFrom(run_time)
        forecast.period.extend(periods)
        forecast.price.extend(run.price[:, index].tolist())
    return []


def _add_p5min(snapshot: market_data_pb2.MarketSnapshot, p5min: P5minPrices, region: str,
               as_of: datetime) -> list[str]:
    """Append the newest P5MIN run published by ``as_of`` (one forecast per product, only the intervals the
    run prices for it); return notes."""
    if region not in p5min.regions:
        return [f"no P5MIN data for region {region}"]
    run = p5min.latest_run(region, as_of)
    if run is None:
        return [f"no P5MIN run for {region} known at as_of {_fmt(as_of)}"]
    run_time = to_timestamp(run.run_time)
    known_at_ms = int(_unix_ms(np.array([_datetime_us(run.known_at)], dtype=np.int64))[0])
    unix_seconds = run.intervals.astype("datetime64[s]").astype(np.int64) - _AEST_OFFSET_S
    for index, product in enumerate(run.products):
        priced = np.isfinite(run.price[:, index])
        if not bool(priced.any()):
            continue
        forecast = snapshot.p5min.add(product=product, known_at_unix_ms=known_at_ms)
        forecast.run_time.CopyFrom(run_time)
        forecast.interval.extend(Timestamp(seconds=seconds) for seconds in unix_seconds[priced].tolist())
        forecast.price.extend(run.price[priced, index].tolist())
    return []


def latest_known(snapshot: market_data_pb2.MarketSnapshot) -> bool:
    """Whether the snapshot carries a price (published or estimated) for its latest interval."""
    return any(len(history.quality) and history.quality[-1] != MISSING for history in snapshot.history)


def estimate_missing(snapshot: market_data_pb2.MarketSnapshot) -> market_data_pb2.MarketSnapshot:
    """A copy of ``snapshot`` whose MISSING history slots carry the last known value forward (ESTIMATED).

    Slots before a product's first known value stay MISSING. When the latest interval had no price and is
    now estimated, ``latest_quality`` becomes ESTIMATED and a quality note says from which interval.
    Known values, their qualities and the pre-dispatch forecasts are unchanged. Idempotent.
    """
    estimated = market_data_pb2.MarketSnapshot()
    estimated.CopyFrom(snapshot)
    latest_was_known = latest_known(snapshot)
    filled_slots = 0
    source_slots: list[int] = []
    for history in estimated.history:
        quality = np.asarray(history.quality, dtype=np.int64)
        if not len(quality):
            continue
        prices = np.asarray(history.price, dtype=np.float64)
        has_value = quality != MISSING
        source = np.maximum.accumulate(np.where(has_value, np.arange(len(quality)), -1))
        fill = ~has_value & (source >= 0)
        if not bool(fill.any()):
            continue
        prices[fill] = prices[source[fill]]
        quality[fill] = ESTIMATED
        filled_slots = max(filled_slots, int(fill.sum()))
        if bool(fill[-1]):
            source_slots.append(int(source[-1]))
        del history.price[:]
        history.price.extend(prices.tolist())
        del history.quality[:]
        history.quality.extend(quality.tolist())
    notes: list[str] = []
    if not latest_was_known and source_slots:
        estimated.latest_quality = ESTIMATED
        latest = from_timestamp(estimated.latest_interval)
        origin = latest - INTERVAL * (len(estimated.history[0].quality) - 1 - min(source_slots))
        notes.append(f"latest interval ending {_fmt(latest)} ESTIMATED: last known prices carried forward "
                     f"(from the interval ending {_fmt(origin)} or later)")
    elif not latest_was_known:
        notes.append("latest interval cannot be estimated: no earlier price is known")
    if filled_slots:
        notes.append(f"{filled_slots} history intervals ESTIMATED (last known value carried forward)")
    estimated.quality_notes.extend(notes)
    return estimated
