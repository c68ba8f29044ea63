"""The market's price tables as compact numpy structures: dispatch prices of every region, interval and
product, and every pre-dispatch run indexed for as-of look-ups.

All times are naive market times (AEST, UTC+10), interval-ending. Prices are $/MWh for ENERGY and $/MW/h
for FCAS. The product list always comes from the data: ENERGY first, then each FCAS product. Reading
AEMO's files into these structures is :mod:`aemo.mms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

ENERGY_PRODUCT = "ENERGY"


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

    def __post_init__(self) -> None:
        expected = (len(self.regions), len(self.intervals), len(self.products))
        if self.price.shape != expected:
            raise ValueError(f"price has shape {self.price.shape}, "
                             f"expected {expected} (regions, intervals, products)")
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

    def series(self, region: str, product: str) -> np.ndarray:
        """Prices of one region and product over :attr:`intervals` (read-only float64 view, NaN if absent)."""
        return self.price[self.region_index(region), :, self.product_index(product)]


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
    region, or -1.
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
    def empty(cls, products: tuple[str, ...] = (ENERGY_PRODUCT,)) -> PredispatchPrices:
        """No pre-dispatch run at all (data without AEMO's forecasts): no region, no run."""
        no_runs = np.zeros((0, 0), dtype=np.int64)
        return cls(regions=(), products=products, run_time=np.array([], dtype="datetime64[s]"),
                   known_at=np.array([], dtype="datetime64[s]"), row_period=np.array([], dtype="datetime64[s]"),
                   row_price=np.zeros((0, len(products))), row_start=no_runs, row_stop=no_runs.copy(),
                   latest_run_position=no_runs.copy())

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
        region_pos = self.region_index(region)
        known_count = int(np.searchsorted(self.known_at, _to_datetime64(as_of), side="right"))
        if known_count == 0:
            return None
        run_pos = int(self.latest_run_position[region_pos, known_count - 1])
        if run_pos < 0:
            return None
        start, stop = int(self.row_start[region_pos, run_pos]), int(self.row_stop[region_pos, run_pos])
        return PredispatchRun(
            region=region,
            run_time=_to_datetime(self.run_time[run_pos]),
            known_at=_to_datetime(self.known_at[run_pos]),
            products=self.products,
            periods=self.row_period[start:stop],
            price=self.row_price[start:stop],
        )
