"""Forecast skill: MAE and pinball loss by horizon bucket, against seasonal-naive and AEMO pre-dispatch.

Pure numpy: arrays in, scores out. The benchmark that feeds it real January 2021 snapshots lives in
``bench/forecast_skill.py``.

Conventions
-----------
* Prices are $/MWh (ENERGY) or $/MW/h (FCAS); times are naive AEST, interval-ending.
* A forecast of one decision covers ``horizon`` 5-minute intervals. *Horizon step* ``k`` (1-based) is the
  interval ending ``first_interval + 5 min * (k - 1)``; its lead is ``k * 5`` minutes counted from the
  start of the first forecast interval (the dispatch interval the cycle bids for, which starts about
  5 minutes after the decision).
* A horizon bucket is ``(label, first_step, last_step)``, both steps inclusive. The default labels name
  the lead range ``(first_step - 1) * 5 min .. last_step * 5 min`` (e.g. ``"1-2 h"`` = steps 13..24).
* Every method is scored as a set of quantiles at the same levels. A point method (seasonal naive,
  pre-dispatch) is a degenerate distribution: its single value stands at every level. Its pinball loss
  averaged over levels symmetric around 0.5 is exactly MAE / 2. MAE is the error of the method's
  ``point_level`` quantile (the median by default; interpolated between levels like
  :func:`algorithms.market.forecast.quantile_at`).
* Missing actuals (NaN, e.g. beyond the end of the data) are excluded from every score and from ``n``.
  A forecast value that is not finite where the actual is known is an error, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Bucket = tuple[str, int, int]

INTERVAL = timedelta(minutes=5)
INTERVAL_MINUTES = 5
INTERVALS_PER_DAY = 288
PREDISPATCH_PERIOD = timedelta(minutes=30)
_INTERVAL_S = np.timedelta64(300, "s")
_PERIOD_S = np.timedelta64(1800, "s")
# Upper ends (horizon steps) of the default buckets: 5 min, 30 min, 1 h, 2 h, 4 h, 8 h, 24 h of lead.
DEFAULT_BUCKET_ENDS = (1, 6, 12, 24, 48, 96, 288)


# --------------------------------------------------------------------------------------------------
# Horizon buckets
# --------------------------------------------------------------------------------------------------


def _lead_text(minutes: int) -> tuple[str, str]:
    if minutes < 60:
        return str(minutes), "min"
    return f"{minutes / 60:g}", "h"


def lead_label(first_step: int, last_step: int) -> str:
    """Label of the lead range of horizon steps ``first_step..last_step``: e.g. (13, 24) -> ``"1-2 h"``,
    (2, 6) -> ``"5-30 min"``, (7, 12) -> ``"30 min-1 h"``; a lead is ``step * 5`` minutes."""
    low, low_unit = _lead_text((first_step - 1) * INTERVAL_MINUTES)
    high, high_unit = _lead_text(last_step * INTERVAL_MINUTES)
    if low_unit == high_unit:
        return f"{low}-{high} {high_unit}"
    return f"{low} {low_unit}-{high} {high_unit}"


def horizon_buckets(horizon_intervals: int,
                    bucket_ends: Sequence[int] = DEFAULT_BUCKET_ENDS) -> tuple[Bucket, ...]:
    """Contiguous buckets ``(label, first_step, last_step)`` covering steps 1..``horizon_intervals``.

    ``bucket_ends`` are the buckets' last steps (strictly increasing); ends beyond the horizon are dropped
    and the last bucket is cut at (or extended to) the horizon. Raises ValueError for a horizon < 1 or
    unordered ends.
    """
    if horizon_intervals < 1:
        raise ValueError(f"horizon_intervals must be at least 1, got {horizon_intervals}")
    ends = [int(end) for end in bucket_ends]
    if not ends or ends[0] < 1 or any(b <= a for a, b in pairwise(ends)):
        raise ValueError(f"bucket_ends must be strictly increasing steps >= 1, got {ends}")
    kept = [end for end in ends if end < horizon_intervals] + [horizon_intervals]
    firsts = [1, *(end + 1 for end in kept[:-1])]
    return tuple((lead_label(first, last), first, last) for first, last in zip(firsts, kept, strict=True))


def _check_buckets(buckets: Sequence[Bucket], horizon: int) -> tuple[Bucket, ...]:
    checked = tuple((str(label), int(first), int(last)) for label, first, last in buckets)
    if not checked:
        raise ValueError("at least one horizon bucket is needed")
    labels = [label for label, _, _ in checked]
    if len(set(labels)) != len(labels):
        raise ValueError(f"horizon bucket labels must be unique, got {labels}")
    bad = [bucket for bucket in checked if not 1 <= bucket[1] <= bucket[2] <= horizon]
    if bad:
        raise ValueError(f"horizon buckets must satisfy 1 <= first_step <= last_step <= {horizon} "
                         f"(the horizon), got {bad}")
    return checked


# --------------------------------------------------------------------------------------------------
# Baseline forecasts
# --------------------------------------------------------------------------------------------------


def seasonal_naive_forecast(history_price: np.ndarray, horizon_intervals: int, season_intervals: int = 288,
                            *, first_lead: int = 1) -> FloatArray:
    """Seasonal-naive point forecast ($/MWh or $/MW/h), shape (horizon_intervals,).

    ``history_price[i]`` is the price of the i-th 5-minute interval, oldest first (NaN = missing); the
    first forecast interval lies ``first_lead`` intervals after the last history interval (1 = the next
    one; the live cycle forecasts from the interval after the one in progress, ``first_lead = 2``).
    Forecast interval ``i`` takes the price at the same time of day on the last day known: the history
    slot ``season_intervals * ceil(lead / season_intervals)`` intervals earlier (``lead = first_lead +
    i``), the same rule as the forecaster's seasonal regressor. Where that slot is missing or before the
    history starts, the last known (finite) history price is used instead.

    Raises ValueError for a history that is not 1-D, holds infinities or has no finite value, and for
    non-positive ``horizon_intervals`` / ``season_intervals`` / ``first_lead``.
    """
    history = np.asarray(history_price, dtype=np.float64)
    if history.ndim != 1:
        raise ValueError(f"history_price must be one-dimensional, got shape {history.shape}")
    if horizon_intervals < 1 or season_intervals < 1 or first_lead < 1:
        raise ValueError("horizon_intervals, season_intervals and first_lead must be >= 1, got "
                         f"{horizon_intervals}, {season_intervals}, {first_lead}")
    if np.any(np.isinf(history)):
        raise ValueError("history_price holds infinite values (use NaN for missing)")
    known = np.flatnonzero(np.isfinite(history))
    if known.size == 0:
        raise ValueError("history_price has no known (finite) value: nothing to forecast from")
    lead = first_lead + np.arange(horizon_intervals, dtype=np.int64)
    days_back = -(-lead // season_intervals)
    source = (history.size - 1) + lead - season_intervals * days_back
    seasonal = np.where(source >= 0, history[np.maximum(source, 0)], np.nan)
    return np.where(np.isfinite(seasonal), seasonal, history[known[-1]])


def predispatch_forecast_on_grid(predispatch_periods: Sequence[datetime] | np.ndarray,
                                 predispatch_price: np.ndarray, first_interval: datetime,
                                 horizon_intervals: int, *, hold: bool = True) -> FloatArray:
    """AEMO's half-hourly pre-dispatch forecast on the 5-minute grid, shape (horizon_intervals,).

    ``predispatch_periods`` are one run's half-hour period-ending AEST times (strictly increasing;
    datetimes or datetime64) with prices ``predispatch_price``. Forecast interval ``i`` ends at
    ``first_interval + 5 min * i`` (AEST) and takes the price of the half-hour period ending at or after
    its end, when that period covers it (ends less than 30 minutes after it).

    Intervals the run does not cover are NaN with ``hold=False``. With ``hold=True`` (the default, what
    the benchmark scores as "pre-dispatch alone") they take the price of the last period before them:
    beyond the run's last period (a run reaches only to 04:00, the end of its trading day, so for an
    evening decision the last hours of a 24 h horizon) the last forecast price is held flat; before the
    run's first period the first price is held back. This keeps the baseline defined at every lead,
    so all methods are scored on the same intervals; the held part is a persistence forecast of the
    run's last period, not AEMO's. An empty run gives all NaN.

    Raises ValueError for unequal lengths, non-finite prices, unordered periods, an off-grid
    ``first_interval`` or a horizon < 1.
    """
    if horizon_intervals < 1:
        raise ValueError(f"horizon_intervals must be at least 1, got {horizon_intervals}")
    if first_interval.second or first_interval.microsecond or first_interval.minute % INTERVAL_MINUTES:
        raise ValueError(f"first_interval {first_interval} is not on the 5-minute grid")
    periods = np.asarray(predispatch_periods, dtype="datetime64[s]")
    prices = np.asarray(predispatch_price, dtype=np.float64)
    if periods.ndim != 1 or prices.shape != periods.shape:
        raise ValueError(f"pre-dispatch has {periods.size} periods but {prices.size} prices")
    if not np.all(np.isfinite(prices)):
        raise ValueError("pre-dispatch prices must be finite")
    if periods.size > 1 and not bool(np.all(np.diff(periods) > np.timedelta64(0, "s"))):
        raise ValueError("pre-dispatch periods must be strictly increasing")
    on_grid = np.full(horizon_intervals, np.nan)
    if periods.size == 0:
        return on_grid
    interval_end = np.datetime64(first_interval, "s") + _INTERVAL_S * np.arange(horizon_intervals)
    slot = np.searchsorted(periods, interval_end, side="left")
    slot_clipped = np.minimum(slot, periods.size - 1)
    covered = (slot < periods.size) & (periods[slot_clipped] - interval_end < _PERIOD_S)
    if hold:
        return np.asarray(np.where(covered, prices[slot_clipped], prices[np.maximum(slot - 1, 0)]),
                          dtype=np.float64)
    on_grid[covered] = prices[slot_clipped[covered]]
    return on_grid


# --------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BucketScores:
    """Scores of several methods by horizon bucket for one product.

    ``mae``, ``pinball`` ($/MWh or $/MW/h; NaN where ``n`` is 0) and ``n`` (scored decision-intervals)
    have shape (n_methods, n_buckets), rows in ``methods`` order, columns in ``buckets`` order.
    """

    methods: tuple[str, ...]
    buckets: tuple[Bucket, ...]
    mae: FloatArray
    pinball: FloatArray
    n: IntArray


def _check_levels(quantiles: Sequence[float], point_level: float) -> FloatArray:
    levels = np.asarray(quantiles, dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError("quantiles must be a non-empty list of levels")
    if not np.all((levels > 0) & (levels < 1)) or np.any(np.diff(levels) <= 0):
        raise ValueError(f"quantile levels must be strictly increasing within (0, 1), got {levels.tolist()}")
    if not levels[0] - 1e-12 <= point_level <= levels[-1] + 1e-12:
        raise ValueError(f"point_level {point_level} is outside the quantile levels "
                         f"{levels[0]}..{levels[-1]}")
    return levels


def _point_path(forecast: FloatArray, levels: FloatArray, point_level: float) -> FloatArray:
    """The ``point_level`` quantile of (..., n_levels) forecasts, linear between levels."""
    if levels.size == 1:
        return np.asarray(forecast[..., 0], dtype=np.float64)
    upper = int(np.clip(np.searchsorted(levels, point_level, side="left"), 1, levels.size - 1))
    lower = upper - 1
    fraction = float(np.clip((point_level - levels[lower]) / (levels[upper] - levels[lower]), 0.0, 1.0))
    path = (1 - fraction) * forecast[..., lower] + fraction * forecast[..., upper]
    return np.asarray(path, dtype=np.float64)


def evaluate_skill(actuals: np.ndarray, forecasts: Mapping[str, np.ndarray], quantiles: Sequence[float],
                   buckets: Sequence[Bucket], *, point_level: float = 0.5) -> BucketScores:
    """MAE and mean pinball loss of each method by horizon bucket (vectorised, NaN-aware).

    ``actuals`` has shape (n_decisions, horizon): the realised price of each decision's horizon step
    ($/MWh or $/MW/h; NaN = unknown, excluded). ``forecasts`` maps a method name to an array of shape
    (n_decisions, horizon, len(quantiles)) at the levels ``quantiles``, or (n_decisions, horizon, 1)
    for a point forecast (a degenerate distribution: the value stands at every level). For an error
    ``u = actual - forecast`` at level ``tau`` the pinball loss is ``max(tau * u, (tau - 1) * u)``,
    averaged over levels, decisions and the bucket's steps; MAE is the mean absolute error of the
    ``point_level`` quantile. ``buckets`` are ``(label, first_step, last_step)`` with 1-based inclusive
    horizon steps (see :func:`horizon_buckets`).

    Raises ValueError on mismatched shapes, infinite actuals, invalid levels or buckets, no methods, or
    a non-finite forecast where the actual is known.
    """
    observed = np.asarray(actuals, dtype=np.float64)
    if observed.ndim != 2:
        raise ValueError(f"actuals must have shape (n_decisions, horizon), got {observed.shape}")
    if np.any(np.isinf(observed)):
        raise ValueError("actuals hold infinite values (use NaN for unknown)")
    if not forecasts:
        raise ValueError("no forecasts to evaluate")
    levels = _check_levels(quantiles, point_level)
    checked_buckets = _check_buckets(buckets, observed.shape[1])
    valid = np.isfinite(observed)
    actual_filled = np.where(valid, observed, 0.0)
    steps = np.arange(1, observed.shape[1] + 1)
    membership = np.array([(steps >= first) & (steps <= last) for _, first, last in checked_buckets],
                          dtype=np.float64)  # (n_buckets, horizon)
    count_per_step = valid.sum(axis=0).astype(np.float64)
    n = np.rint(membership @ count_per_step).astype(np.int64)

    methods = tuple(forecasts)
    mae = np.empty((len(methods), len(checked_buckets)))
    pinball = np.empty_like(mae)
    for row, method in enumerate(methods):
        predicted = np.asarray(forecasts[method], dtype=np.float64)
        if predicted.shape not in ((*observed.shape, levels.size), (*observed.shape, 1)):
            raise ValueError(f"forecast {method!r} has shape {predicted.shape}; expected "
                             f"{(*observed.shape, levels.size)} or {(*observed.shape, 1)} (point forecast)")
        unusable = valid & ~np.all(np.isfinite(predicted), axis=-1)
        if bool(unusable.any()):
            first_bad = np.argwhere(unusable)[0]
            raise ValueError(f"forecast {method!r} is not finite at {int(unusable.sum())} known actuals "
                             f"(first: decision {int(first_bad[0])}, step {int(first_bad[1]) + 1})")
        predicted = np.broadcast_to(np.where(valid[..., np.newaxis], predicted, 0.0),
                                    (*observed.shape, levels.size))
        error = actual_filled[..., np.newaxis] - predicted
        loss = np.maximum(levels * error, (levels - 1) * error).mean(axis=-1)
        absolute = np.abs(actual_filled - _point_path(predicted, levels, point_level))
        mae[row] = membership @ np.where(valid, absolute, 0.0).sum(axis=0)
        pinball[row] = membership @ np.where(valid, loss, 0.0).sum(axis=0)
    scored = n > 0
    mae = np.where(scored, mae / np.maximum(n, 1), np.nan)
    pinball = np.where(scored, pinball / np.maximum(n, 1), np.nan)
    counts = np.broadcast_to(n, mae.shape).copy()
    return BucketScores(methods=methods, buckets=checked_buckets, mae=mae, pinball=pinball, n=counts)


# --------------------------------------------------------------------------------------------------
# The skill table
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SkillTable:
    """Skill of each method by product and horizon bucket.

    ``mae`` and ``pinball`` ($/MWh for ENERGY, $/MW/h for FCAS; NaN where ``n`` is 0) and ``n`` (scored
    decision-intervals) have shape (n_products, n_methods, n_buckets). The first method is the one under
    test, the others are baselines. ``quantiles`` are the levels the pinball loss averages over (point
    methods stand at every level); MAE is scored on the ``point_level`` quantile. ``region``,
    ``decisions``, ``horizon_intervals``, ``elapsed_s`` (wall-clock seconds of the run) and ``notes``
    describe how the table was made.
    """

    products: tuple[str, ...]
    methods: tuple[str, ...]
    buckets: tuple[Bucket, ...]
    quantiles: tuple[float, ...]
    mae: FloatArray
    pinball: FloatArray
    n: IntArray
    point_level: float = 0.5
    region: str = ""
    decisions: int = 0
    horizon_intervals: int = 0
    elapsed_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        expected = (len(self.products), len(self.methods), len(self.buckets))
        for name in ("mae", "pinball", "n"):
            shape = np.shape(getattr(self, name))
            if shape != expected:
                raise ValueError(f"{name} has shape {shape}, "
                                 f"expected {expected} (products, methods, buckets)")

    @classmethod
    def from_scores(cls, scores: Mapping[str, BucketScores], quantiles: Sequence[float], *,
                    point_level: float = 0.5, region: str = "", decisions: int = 0,
                    horizon_intervals: int = 0, elapsed_s: float = 0.0,
                    notes: Sequence[str] = ()) -> SkillTable:
        """The table of per-product scores (product -> BucketScores, all with the same methods and buckets).

        Raises ValueError when there are no scores or products disagree on methods or buckets.
        """
        if not scores:
            raise ValueError("no product scores to tabulate")
        products = tuple(scores)
        first = scores[products[0]]
        for product in products[1:]:
            other = scores[product]
            if other.methods != first.methods or other.buckets != first.buckets:
                raise ValueError(f"scores of {product!r} have methods {other.methods} and buckets "
                                 f"{other.buckets}; {products[0]!r} {first.methods} and {first.buckets}")
        return cls(products=products, methods=first.methods, buckets=first.buckets,
                   quantiles=tuple(float(q) for q in quantiles),
                   mae=np.stack([scores[p].mae for p in products]),
                   pinball=np.stack([scores[p].pinball for p in products]),
                   n=np.stack([scores[p].n for p in products]), point_level=point_level,
                   region=region, decisions=decisions, horizon_intervals=horizon_intervals,
                   elapsed_s=elapsed_s, notes=tuple(notes))

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (product, method, bucket) with columns product, method, bucket,
        first_step, last_step, mae, pinball, n (prices $/MWh or $/MW/h)."""
        n_products, n_methods, n_buckets = len(self.products), len(self.methods), len(self.buckets)
        product_grid, method_grid, bucket_grid = np.meshgrid(
            np.arange(n_products), np.arange(n_methods), np.arange(n_buckets), indexing="ij")
        bucket_index = bucket_grid.ravel()
        return pd.DataFrame({
            "product": np.asarray(self.products, dtype=object)[product_grid.ravel()],
            "method": np.asarray(self.methods, dtype=object)[method_grid.ravel()],
            "bucket": np.asarray([b[0] for b in self.buckets], dtype=object)[bucket_index],
            "first_step": np.asarray([b[1] for b in self.buckets], dtype=np.int64)[bucket_index],
            "last_step": np.asarray([b[2] for b in self.buckets], dtype=np.int64)[bucket_index],
            "mae": np.asarray(self.mae, dtype=np.float64).ravel(),
            "pinball": np.asarray(self.pinball, dtype=np.float64).ravel(),
            "n": np.asarray(self.n, dtype=np.int64).ravel(),
        })


# --------------------------------------------------------------------------------------------------
# Decision times
# --------------------------------------------------------------------------------------------------


def spread_decision_times(window_start: datetime, window_end: datetime, decisions: int, *,
                          schedule_offset_s: int, seed: int = 0) -> list[datetime]:
    """``decisions`` decision times (naive AEST) spread evenly over ``window_start .. window_end``.

    The window is cut into ``decisions`` equal slots; decision ``k`` is ``window_start + phase + k * slot``
    floored to the 5-minute interval boundary, plus ``schedule_offset_s`` seconds (as the live schedule
    fires). ``phase`` is drawn once from [0, slot) with ``seed``, so a seed shifts the whole comb.
    Raises ValueError for fewer than one decision, an empty window, or more decisions than intervals.
    """
    if decisions < 1:
        raise ValueError(f"decisions must be at least 1, got {decisions}")
    window = window_end - window_start
    if window <= timedelta(0):
        raise ValueError(f"empty decision window {window_start} .. {window_end}")
    if decisions > window // INTERVAL:
        raise ValueError(f"{decisions} decisions do not fit in {window // INTERVAL} intervals "
                         f"from {window_start} to {window_end}")
    slot_s = window.total_seconds() / decisions
    phase_s = float(np.random.default_rng(seed).uniform(0.0, slot_s))
    start = np.datetime64(window_start, "s")
    offsets_s = np.floor(phase_s + slot_s * np.arange(decisions)).astype(np.int64)
    moments = start + offsets_s.astype("timedelta64[s]")
    since_midnight = (moments - moments.astype("datetime64[D]")).astype(np.int64)
    boundaries = moments - (since_midnight % 300).astype("timedelta64[s]")
    times = boundaries + np.timedelta64(schedule_offset_s, "s")
    return [moment.astype(datetime) for moment in times]
