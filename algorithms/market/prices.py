"""The market's price tables as compact numpy structures: dispatch prices of every region, interval and
product, and every pre-dispatch (half-hourly) and P5MIN (5-minute) run indexed for as-of look-ups.

All times are naive market times (AEST, UTC+10), interval-ending. Prices are $/MWh for ENERGY and $/MW/h
for FCAS. The product list always comes from the data: ENERGY first, then each FCAS product. Reading
AEMO's files into these structures is :mod:`aemo.mms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from algorithms.common.products import ENERGY


def frozen_array(array: np.ndarray) -> np.ndarray:
    """``array``, made read-only (in place)."""
    array.setflags(write=False)
    return array


def _to_datetime64(moment: datetime) -> np.datetime64:
    return np.datetime64(moment.replace(tzinfo=None), "s")


def _to_datetime(moment: np.datetime64) -> datetime:
    seconds = int(moment.astype("datetime64[s]").astype(np.int64))
    return datetime(1970, 1, 1) + timedelta(seconds=seconds)


def _region_position(regions: tuple[str, ...], region: str) -> int:
    try:
        return regions.index(region)
    except ValueError:
        raise KeyError(f"unknown region {region!r}; the data has regions {', '.join(regions)}") from None


@dataclass(frozen=True, eq=False)
class DispatchPrices:
    """Dispatch prices of every region, interval and product (DISPATCHPRICE, INTERVENTION == 0).

    ``intervals``: sorted unique interval-ending AEST times (datetime64[s]); ``price``: float64 array
    of shape (n_regions, n_intervals, n_products), $/MWh for ENERGY and $/MW/h for FCAS, NaN where the
    data has no value. Arrays are read-only. Equality is identity (arrays do not compare as a whole).
    """

    intervals: np.ndarray
    regions: tuple[str, ...]
    products: tuple[str, ...]
    price: np.ndarray
    # Market depth (DISPATCHREGIONSUM, where the data has it): the MW each region actually enabled of each
    # FCAS product in each interval (its <product>LOCALDISPATCH), same shape as ``price``; NaN where the data
    # has no value and in the ENERGY column (energy is price-taking). None: the data has no DISPATCHREGIONSUM.
    region_enabled_mw: np.ndarray | None = None

    def __post_init__(self) -> None:
        expected = (len(self.regions), len(self.intervals), len(self.products))
        if self.price.shape != expected:
            raise ValueError(f"price has shape {self.price.shape}, "
                             f"expected {expected} (regions, intervals, products)")
        if self.region_enabled_mw is not None:
            if self.region_enabled_mw.shape != expected:
                raise ValueError(f"region_enabled_mw has shape {self.region_enabled_mw.shape}, "
                                 f"expected {expected} (regions, intervals, products)")
            frozen_array(self.region_enabled_mw)
        if self.intervals.dtype != np.dtype("datetime64[s]"):
            raise ValueError(f"intervals must be datetime64[s], got {self.intervals.dtype}")
        if len(self.intervals) > 1 and not bool(np.all(np.diff(self.intervals) > np.timedelta64(0, "s"))):
            raise ValueError("intervals must be sorted and unique")
        frozen_array(self.intervals)
        frozen_array(self.price)

    def region_index(self, region: str) -> int:
        """Position of ``region`` in :attr:`regions`; KeyError listing the known regions otherwise."""
        return _region_position(self.regions, region)

    def product_index(self, product: str) -> int:
        """Position of ``product`` in :attr:`products`; KeyError listing the known products otherwise."""
        try:
            return self.products.index(product)
        except ValueError:
            known = ", ".join(self.products)
            raise KeyError(f"unknown product {product!r}; the data has products {known}") from None

    def interval_index(self, dispatch_interval: datetime) -> int | None:
        """Position of the interval ending ``dispatch_interval`` (AEST) in :attr:`intervals`, or None."""
        target = _to_datetime64(dispatch_interval)
        position = int(np.searchsorted(self.intervals, target))
        if position < len(self.intervals) and self.intervals[position] == target:
            return position
        return None

    def prices_at(self, region: str, dispatch_interval: datetime) -> dict[str, float]:
        """Product -> price ($/MWh ENERGY, $/MW/h FCAS; NaN if absent) of one region and interval.

        Raises KeyError if the region is unknown or the interval ending ``dispatch_interval`` (AEST) is
        not in the data.
        """
        region_pos = self.region_index(region)
        position = self.interval_index(dispatch_interval)
        if position is None:
            covered = f"{self.intervals[0]} .. {self.intervals[-1]}" if len(self.intervals) else "none"
            raise KeyError(f"interval ending {dispatch_interval:%Y-%m-%d %H:%M:%S} is not in the "
                           f"dispatch data (intervals {covered})")
        row = self.price[region_pos, position]
        return {product: float(row[i]) for i, product in enumerate(self.products)}

    def enabled_at(self, region: str, dispatch_interval: datetime) -> dict[str, float] | None:
        """FCAS product -> MW the region enabled (DISPATCHREGIONSUM LOCALDISPATCH; NaN if absent) in the
        interval ending ``dispatch_interval`` (AEST); None when the data has no DISPATCHREGIONSUM or not this
        interval. ENERGY is never in it (price-taking)."""
        position = self.interval_index(dispatch_interval)
        if self.region_enabled_mw is None or position is None:
            return None
        row = self.region_enabled_mw[self.region_index(region), position]
        return {product: float(row[i]) for i, product in enumerate(self.products) if product != ENERGY}

    def series(self, region: str, product: str) -> np.ndarray:
        """Prices of one region and product over :attr:`intervals` (read-only float64 view, NaN if absent)."""
        return self.price[self.region_index(region), :, self.product_index(product)]


class RunRowsError(ValueError):
    """Rows of forecast runs that cannot be indexed (e.g. one run, region and period given twice)."""


@dataclass(frozen=True, eq=False)
class RunIndex:
    """Rows of forecast runs (pre-dispatch or P5MIN) indexed for as-of look-ups.

    Runs are ordered by (known_at, run_time): ``run_time`` and ``known_at`` (datetime64[s] AEST) per run,
    ``known_at`` being when the run became known (its latest row's). Rows are sorted by (region, run, period):
    ``row_period`` (datetime64[s], period-ending AEST) and ``row_price`` (n_rows, n_products).
    ``row_start`` / ``row_stop`` (n_regions, n_runs) delimit the rows of each region and run;
    ``latest_run_position`` (n_regions, n_runs) gives, for each region and each prefix of runs by known_at,
    the position of the newest run (by run_time) with rows for the region, or -1.
    """

    regions: tuple[str, ...]
    run_time: np.ndarray
    known_at: np.ndarray
    row_period: np.ndarray
    row_price: np.ndarray
    row_start: np.ndarray
    row_stop: np.ndarray
    latest_run_position: np.ndarray


def index_runs(run_time: np.ndarray, known_at: np.ndarray, region: np.ndarray, period: np.ndarray,
               price: np.ndarray) -> RunIndex:
    """Index forecast-run rows for O(log n) as-of look-ups (vectorised).

    One row per (run, region, period): ``run_time``, ``known_at`` (when the row was published; a run is
    known from its latest row's time) and ``period`` (period-ending) as datetime64 AEST, ``region`` text,
    ``price`` (n_rows, n_products) in $/MWh (ENERGY) and $/MW/h (FCAS). Raises :class:`RunRowsError`
    naming an example when a (run, region, period) appears twice, ValueError for unequal lengths.
    """
    run_time = np.asarray(run_time, dtype="datetime64[s]")
    known_at = np.asarray(known_at, dtype="datetime64[s]")
    period = np.asarray(period, dtype="datetime64[s]")
    region = np.asarray(region).astype(str)
    price = np.asarray(price, dtype=np.float64)
    price = price if price.ndim == 2 else price.reshape(len(run_time), -1)
    if not len(run_time) == len(known_at) == len(region) == len(period):
        raise ValueError(f"run rows of unequal lengths: {len(run_time)} run times, {len(known_at)} known-at "
                         f"times, {len(region)} regions, {len(period)} periods")
    unique_runs, run_of_row = np.unique(run_time, return_inverse=True)
    run_known_at = np.full(len(unique_runs), np.datetime64("NaT"), dtype="datetime64[s]")
    if len(unique_runs):
        run_known_at = np.full(len(unique_runs), known_at.min(), dtype="datetime64[s]")
        np.maximum.at(run_known_at, run_of_row, known_at)
    run_order = np.lexsort((unique_runs, run_known_at))  # by known_at, then run_time
    run_rank = np.empty_like(run_order)
    run_rank[run_order] = np.arange(len(run_order))
    regions = np.unique(region) if len(region) else np.array([], dtype=str)
    region_of_row = np.searchsorted(regions, region)
    run_of_row_sorted = run_rank[run_of_row]

    order = np.lexsort((period, run_of_row_sorted, region_of_row))
    region_sorted, run_sorted, period_sorted = region_of_row[order], run_of_row_sorted[order], period[order]
    same = (region_sorted[1:] == region_sorted[:-1]) & (run_sorted[1:] == run_sorted[:-1]) & (
        period_sorted[1:] == period_sorted[:-1])
    if bool(same.any()):
        at = int(np.argmax(same))
        run = unique_runs[run_order[run_sorted[at]]]
        raise RunRowsError(f"duplicate rows for one run, region and period, e.g. run {run} "
                           f"{regions[region_sorted[at]]} {period_sorted[at]}")
    n_regions, n_runs = len(regions), len(unique_runs)
    group = region_sorted.astype(np.int64) * n_runs + run_sorted
    boundaries = np.arange(n_regions * n_runs, dtype=np.int64)
    row_start = np.searchsorted(group, boundaries, side="left").reshape(n_regions, n_runs)
    row_stop = np.searchsorted(group, boundaries, side="right").reshape(n_regions, n_runs)

    sorted_run_time = unique_runs[run_order]
    run_time_value = sorted_run_time.astype(np.int64)
    has_rows = row_stop > row_start
    masked = np.where(has_rows, run_time_value[np.newaxis, :], np.iinfo(np.int64).min)
    running_max = np.maximum.accumulate(masked, axis=1) if n_runs else masked
    is_newest = has_rows & (masked == running_max)
    positions = np.where(is_newest, np.arange(n_runs)[np.newaxis, :], -1)
    latest_run_position = np.maximum.accumulate(positions, axis=1) if n_runs else positions
    return RunIndex(
        regions=tuple(str(r) for r in regions),
        run_time=sorted_run_time.astype("datetime64[s]"),
        known_at=run_known_at[run_order],
        row_period=period_sorted.astype("datetime64[s]"),
        row_price=np.ascontiguousarray(price[order]),
        row_start=row_start,
        row_stop=row_stop,
        latest_run_position=latest_run_position,
    )


def _latest_rows(known_at: np.ndarray, latest_run_position: np.ndarray, row_start: np.ndarray,
                 row_stop: np.ndarray, region_pos: int, as_of: datetime) -> tuple[int, int, int] | None:
    """(run position, first row, row stop) of the newest run of a region known at ``as_of``, or None.

    O(log n_runs): a binary search over known_at and the precomputed prefix table.
    """
    known_count = int(np.searchsorted(known_at, _to_datetime64(as_of), side="right"))
    if known_count == 0:
        return None
    run_pos = int(latest_run_position[region_pos, known_count - 1])
    if run_pos < 0:
        return None
    return run_pos, int(row_start[region_pos, run_pos]), int(row_stop[region_pos, run_pos])


@dataclass(frozen=True, eq=False)
class PredispatchRun:
    """One pre-dispatch run for one region: half-hour period-ending AEST times and forecast prices.

    ``price`` has shape (n_periods, n_products): $/MWh for ENERGY, $/MW/h for FCAS.
    """

    region: str
    run_time: datetime
    known_at: datetime
    products: tuple[str, ...]
    periods: np.ndarray
    price: np.ndarray


@dataclass(frozen=True, eq=False)
class PredispatchPrices:
    """Every pre-dispatch run (PREDISPATCHPRICE, INTERVENTION == 0), indexed for as-of look-ups.

    Runs are ordered by (known_at, run_time). ``run_time``: PREDISPATCH_RUN_DATETIME per run;
    ``known_at``: the latest LASTCHANGED of the run (when it was complete), both datetime64[s] AEST.
    Rows are stored sorted by (region, run, period): ``row_period`` (datetime64[s], period-ending AEST)
    and ``row_price`` (n_rows, n_products). ``row_start`` / ``row_stop`` (n_regions, n_runs) delimit
    the rows of each region and run. ``latest_run_position`` (n_regions, n_runs) gives, for each region
    and each prefix of runs by known_at, the position of the newest run (by run_time) with rows for the
    region, or -1 (see :func:`index_runs`).
    """

    regions: tuple[str, ...]
    products: tuple[str, ...]
    run_time: np.ndarray
    known_at: np.ndarray
    row_period: np.ndarray
    row_price: np.ndarray
    row_start: np.ndarray
    row_stop: np.ndarray
    latest_run_position: np.ndarray

    def __post_init__(self) -> None:
        for array in (self.run_time, self.known_at, self.row_period, self.row_price, self.row_start,
                      self.row_stop, self.latest_run_position):
            frozen_array(array)

    @classmethod
    def from_index(cls, index: RunIndex, products: tuple[str, ...]) -> PredispatchPrices:
        """The table of indexed pre-dispatch rows (:func:`index_runs`) priced for ``products``."""
        return cls(regions=index.regions, products=products, run_time=index.run_time, known_at=index.known_at,
                   row_period=index.row_period, row_price=index.row_price, row_start=index.row_start,
                   row_stop=index.row_stop, latest_run_position=index.latest_run_position)

    @classmethod
    def empty(cls, products: tuple[str, ...] = (ENERGY,)) -> PredispatchPrices:
        """No pre-dispatch run at all (data without AEMO's forecasts): every look-up finds nothing."""
        nothing = np.array([], dtype="datetime64[s]")
        index = index_runs(nothing, nothing, np.array([], dtype=str), nothing, np.empty((0, len(products))))
        return cls.from_index(index, products)

    @property
    def is_empty(self) -> bool:
        """True when the table holds no run (no AEMO forecast to blend)."""
        return len(self.run_time) == 0

    def region_index(self, region: str) -> int:
        """Position of ``region`` in :attr:`regions`; KeyError listing the known regions otherwise."""
        return _region_position(self.regions, region)

    def latest_run(self, region: str, as_of: datetime) -> PredispatchRun | None:
        """The newest run (by run time) for ``region`` whose known_at <= ``as_of`` (AEST), or None.

        O(log n_runs): a binary search over known_at and a precomputed prefix table.
        """
        found = _latest_rows(self.known_at, self.latest_run_position, self.row_start, self.row_stop,
                             self.region_index(region), as_of)
        if found is None:
            return None
        run_pos, start, stop = found
        return PredispatchRun(
            region=region,
            run_time=_to_datetime(self.run_time[run_pos]),
            known_at=_to_datetime(self.known_at[run_pos]),
            products=self.products,
            periods=self.row_period[start:stop],
            price=self.row_price[start:stop],
        )


@dataclass(frozen=True, eq=False)
class P5minRun:
    """One P5MIN run for one region: 5-minute interval-ending AEST times and forecast prices.

    ``run_time`` is AEMO's RUN_DATETIME, the end of the first interval the run covers (the interval in
    progress when it is published, about 4-5 minutes earlier); ``known_at`` when it was published.
    ``price`` has shape (n_intervals, n_products): $/MWh for ENERGY, $/MW/h for FCAS (NaN where the run
    has no value for a product).
    """

    region: str
    run_time: datetime
    known_at: datetime
    products: tuple[str, ...]
    intervals: np.ndarray
    price: np.ndarray


@dataclass(frozen=True, eq=False)
class P5minPrices:
    """Every P5MIN run (P5MIN REGIONSOLUTION, INTERVENTION == 0), indexed for as-of look-ups.

    AEMO runs P5MIN every 5 minutes over the next 12 five-minute intervals. Runs are ordered by
    (known_at, run_time): ``run_time`` is RUN_DATETIME, ``known_at`` the run's publication time (its
    latest LASTCHANGED, or the publication time of the file that carried it), both datetime64[s] AEST.
    Rows are sorted by (region, run, interval): ``row_interval`` (datetime64[s], interval-ending AEST) and
    ``row_price`` (n_rows, n_products). ``row_start`` / ``row_stop`` and ``latest_run_position`` (n_regions,
    n_runs) index them as in :class:`PredispatchPrices`.
    """

    regions: tuple[str, ...]
    products: tuple[str, ...]
    run_time: np.ndarray
    known_at: np.ndarray
    row_interval: np.ndarray
    row_price: np.ndarray
    row_start: np.ndarray
    row_stop: np.ndarray
    latest_run_position: np.ndarray

    def __post_init__(self) -> None:
        for array in (self.run_time, self.known_at, self.row_interval, self.row_price, self.row_start,
                      self.row_stop, self.latest_run_position):
            frozen_array(array)

    @classmethod
    def from_index(cls, index: RunIndex, products: tuple[str, ...]) -> P5minPrices:
        """The table of indexed P5MIN rows (:func:`index_runs`, periods = 5-minute intervals) for ``products``."""
        return cls(regions=index.regions, products=products, run_time=index.run_time, known_at=index.known_at,
                   row_interval=index.row_period, row_price=index.row_price, row_start=index.row_start,
                   row_stop=index.row_stop, latest_run_position=index.latest_run_position)

    def region_index(self, region: str) -> int:
        """Position of ``region`` in :attr:`regions`; KeyError listing the known regions otherwise."""
        return _region_position(self.regions, region)

    def latest_run(self, region: str, as_of: datetime) -> P5minRun | None:
        """The newest run (by run time) for ``region`` published at or before ``as_of`` (AEST), or None.

        O(log n_runs): a binary search over known_at and a precomputed prefix table.
        """
        found = _latest_rows(self.known_at, self.latest_run_position, self.row_start, self.row_stop,
                             self.region_index(region), as_of)
        if found is None:
            return None
        run_pos, start, stop = found
        return P5minRun(
            region=region,
            run_time=_to_datetime(self.run_time[run_pos]),
            known_at=_to_datetime(self.known_at[run_pos]),
            products=self.products,
            intervals=self.row_interval[start:stop],
            price=self.row_price[start:stop],
        )

    def first_interval_prices(self) -> DispatchPrices:
        """Each run's first interval (the one ending at its RUN_DATETIME) as a dispatch price series.

        P5MIN's first interval is solved with the dispatch run of that interval, on the same inputs, so where
        the data has no DISPATCHPRICE it stands in for it (NaN where no run starts at an interval).
        """
        intervals = np.unique(self.run_time)
        price = np.full((len(self.regions), len(intervals), len(self.products)), np.nan)
        for region_pos in range(len(self.regions)):
            start, stop = self.row_start[region_pos], self.row_stop[region_pos]
            has_rows = stop > start
            first_rows = start[has_rows]
            first_interval = self.row_interval[first_rows]
            starts_run = first_interval == self.run_time[has_rows]
            position = np.searchsorted(intervals, first_interval[starts_run])
            price[region_pos, position] = self.row_price[first_rows[starts_run]]
        return DispatchPrices(intervals=intervals.astype("datetime64[s]"), regions=self.regions,
                              products=self.products, price=price)
