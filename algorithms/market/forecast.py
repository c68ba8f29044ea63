"""Probabilistic price forecast of one product: ``sarx-quantile`` v2 (:func:`run_forecast`, the module's current
version), v3 (:func:`run_forecast_v3`), v4 (:func:`run_forecast_v4`), v5 (:func:`run_forecast_v5`, served, not
the default) and v6 (:func:`run_forecast_v6`, the configured default), numpy least squares, xarray.

v3 is v2 plus AEMO's *P5MIN* for the first hour where a run is known at decision time
(:class:`P5minBlend`, see "P5MIN" below); without P5MIN it forecasts exactly as v2, from history alone, from
history and pre-dispatch, or from pre-dispatch alone. It is served next to v2 but not the default: on the
only P5MIN sequence the platform holds it is worse than v2 at the first lead (README, forecast skill).

v4 is v2 with the ENERGY path held longer towards the last known price where no AEMO pre-dispatch price
covers the interval (τ = 24 intervals, two hours, instead of 3; where pre-dispatch covers it, FCAS and everything
else as v2; :func:`run_forecast_v4`). On the store's months, with one to three days of history
and no AEMO forecast, v2's path runs ahead of the price: the time-of-day harmonics and yesterday-same-time
carry the other days' ramps onto a day whose evening comes earlier, later or not at all, and over the first
hours holding the price of now is the better guess (README, "Holding the price of now a little longer").

v5 is v4 with a *short-history guard* (:class:`ShortHistoryGuard`, :func:`run_forecast_v5`). On the store's months
the snapshot's week of history holds one to three days of prices after an unknown stretch; v4 counts that stretch
as history, fits the harmonics and the seasonal regressor on it and its long-lead paths run to the highest price
seen (README, "Forecast skill by data situation": worse than yesterday-same-time beyond 4 h with one day of
history). v5 fits the model on the history from its first known price, and below :data:`SHORT_HISTORY_GUARD_V5`
``full_days`` of it forecasts the *mixture* of two distributions: the model's (its path clipped to the observed
range) and seasonal naive's (the same band around the last known price at the same time of day), seasonal naive
weighted 1 at one day of usable history falling linearly to 0 at three (:func:`mixture_quantiles`). The mixture's
median is the path; where the two disagree its band covers both, so a model that sees a spike keeps it in the
upper tail while the path follows the day. Then the pre-dispatch blend and persistence as in v4. From three days
of usable history on, v5 is v4 on the history from its first known price.

v6 is v4 for a history that *reached back* (:class:`ReachBlend`, :func:`run_forecast_v6`). When the week before a
decision holds fewer known prices than a week (a new unit, the store's months of a few days each), the market-data
snapshot starts earlier, at the days the data holds within ``[market_data] history_reach_intervals``
(:func:`algorithms.market.as_of.history_window_start`). v4 fits that whole history as one; v6 fits the recent week
alone and the whole history, and forecasts the mixture of the two (:func:`mixture_quantiles`), the whole
history weighted half at one day of known prices in the week, falling to none at three. The recent days keep the
regime (yesterday's spike stays in the path and the upper band), the earlier days add the shape of a typical day.
A history no longer than the week (full data, the live case) is forecast exactly as v4.

v2 is v1 plus *persistence*: after the pre-dispatch blend, the first leads are pulled towards the last
known price with weight exp(−lead/τ) in asinh space (:class:`Persistence`, τ = 3 intervals for energy,
2 for FCAS), so a spike or a deep negative price in progress is expected to last a few more intervals.
v1 stays servable (:func:`run_forecast_v1`) for replays.

Design
------
Prices are spiky (SA1 reaches the $15,000/MWh cap and the -$1,000 floor), so the model works in a
robust transformed space ``z = asinh(price / s)``: linear for |price| below the scale ``s`` (the median
absolute price of the inputs, at least 1 $/MWh or $/MW/h), logarithmic above it. Forecasts are
transformed back with ``s * sinh(z)``.

*Central path (direct strategy).* For each training lead ``k`` in ``TRAINING_LEADS`` (1, 2, 3, 6, 12,
24, 48, 96, 192, 286 ... 5-minute intervals; only those the horizon and the history need) one linear
model is fitted by least squares on the history itself. Every valid history interval ``j`` is a
target, with what was known ``k`` intervals earlier as regressors:

* intercept and three time-of-day harmonics (sin/cos of 1, 2, 3 cycles per day) of interval ``j``;
* yesterday-same-time: the last known value at the same time of day before the origin
  (``j - 288 * ceil(k / 288)``);
* the last known price at the origin ``j - k``.

Each fit is followed by one Huber step (residuals beyond ``HUBER_K`` robust standard deviations are
clipped and the model refitted), so the odd spike does not drag the path. A forecast interval at lead
``k`` takes the predictions of the two trained leads around it, interpolated over log(lead). Missing
values (NaN) are carried forward as regressors and never used as targets. Short histories degrade
gracefully: the seasonal regressor needs two days of history, the harmonics one day; below
``MIN_HISTORY_FOR_MODEL`` valid values the central path is the last known price.

*Solving.* The reference estimator of a lead is statsmodels OLS (its pseudo-inverse) with the Huber
step (:func:`huber_fit_reference`). The hot path solves the same problems for all leads at once
(:func:`huber_fit`): every lead's rows are a suffix of the known targets, so the leads' designs stack
on one row axis (:func:`lead_problems`; a lead's earlier rows are zero padding). The intercept is
eliminated by centring each lead's columns on its rows, the normal equations of the other columns are
scaled to a unit diagonal and solved in one batched call, and the Huber step's median and the residual
quantiles come from one sort per step (numpy's median and "linear" quantile, row by row). Centred and
scaled, the January 2021 designs have condition numbers below 100, so coefficients agree with statsmodels'
to about 1e-10 and forecasts to far below a micro-dollar. A lead with a (nearly) constant column
(``MIN_RELATIVE_SPREAD``) or worse conditioned than ``MAX_BATCHED_CONDITION`` (a flat history; a few
hours of rows for six harmonics) is handed to the reference, so degenerate inputs keep statsmodels'
minimum-norm fit. tests/test_forecast_equivalence.py holds the two paths to each other and to golden
forecasts of the per-lead statsmodels implementation.

*Quantiles.* Empirical quantiles of each lead model's in-sample residuals (interpolated over log(lead)
like the path): the median residual corrects the path, the others, widened by ``SPREAD_WIDENING``
because in-sample residuals understate out-of-sample errors, give the band. The band widens with the
lead as the history says it should and stays skewed when spikes are one-sided.

*Pre-dispatch.* AEMO's half-hourly forecast (period-ending) is step-held onto the 5-minute grid: an
interval belongs to the half-hour period ending at or after it. History holds no past pre-dispatch
runs, so its weight cannot be fitted online; where it covers an interval the central path is
``(1 - w(k)) * model + w(k) * predispatch`` in asinh space, ``w(k) = far - (far - near) *
exp(-k / scale)`` (:class:`PredispatchBlend`), calibrated offline on January 2021 (four mainland
regions; energy and FCAS separately: AEMO's energy pre-dispatch is strong, its FCAS forecast weak).
With no usable history the central path is the pre-dispatch price (held flat past its last period,
back-held before its first) and the band ``DEFAULT_SPREAD`` standard normal quantiles wide (asinh).

*P5MIN (v3).* AEMO's 5-minute pre-dispatch covers the 12 intervals from the one in progress when the
run was published. Where it covers a forecast interval, the central path (after the pre-dispatch blend and
persistence) becomes ``(1 - w) * path + w * p5min`` in asinh space, ``w(j) = far - (far - near) *
exp(-j / scale)`` with ``j`` the interval's position in its run (0 = the run's first interval), and the band
around it narrows to ``1 - w * (1 - spread_ratio)`` of the model's. The weights are a *prior*, not a fit:
the platform holds one full P5MIN report (9 October 2026 11:50, five regions) and twenty consecutive QLD1
runs of energy prices (9 October 2026 04:00-05:35), far too little to fit a curve on; AEMO's P5MIN is near
exact at its first intervals (it is solved with the dispatch engine on the same inputs) and loses skill
over its hour, so energy starts at 0.95 and falls towards 0.6 over about half an hour
(:data:`ENERGY_P5MIN_BLEND`). On the twenty runs (tests/test_forecast_p5min.py) AEMO's P5MIN of the
first hour beats holding the last price; FCAS takes a smaller weight (:data:`FCAS_P5MIN_BLEND`), by analogy
with AEMO's weaker FCAS pre-dispatch. With neither history nor pre-dispatch, P5MIN alone is the path
(held flat beyond its last interval).

All quantiles are clipped to the range of prices seen in the inputs (history and pre-dispatch), which
keeps ``sinh`` from extrapolating far beyond anything observed, and sorted so they never cross.
One product, a 288-interval horizon, 2,016 intervals of history and three quantiles take about 1.3 ms in
:func:`run_forecast`, protobuf in and out included (11 ms with one statsmodels fit per lead and step;
``python -m bench.forecast_speed``, SA1 January 2021). See the module's tests for the January 2021
coverage check.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
import statsmodels.api as sm
import xarray as xr
from google.protobuf.timestamp_pb2 import Timestamp
from statsmodels.tools.sm_exceptions import SingularMatrixWarning

from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import AEST_OFFSET, from_timestamp
from algorithms.common.products import ENERGY
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2

NAME = "sarx-quantile"
VERSION = "2"
ALGORITHM = common_pb2.AlgorithmRef(name=NAME, version=VERSION)

INTERVAL = timedelta(minutes=5)
_MICROSECOND = timedelta(microseconds=1)
PREDISPATCH_PERIOD = timedelta(minutes=30)
INTERVALS_PER_DAY = 288
MINUTES_PER_DAY = 1440
MAX_HORIZON_INTERVALS = 2016
HARMONICS = (1, 2, 3)
# Leads (5-minute intervals) with a model of their own. Whole days are avoided on purpose: at a lead of
# exactly d days the seasonal regressor is the origin price itself and the design is singular.
TRAINING_LEADS = (1, 2, 3, 6, 12, 24, 48, 96, 192, 286, 574, 1150, 2014)
MIN_HISTORY_FOR_MODEL = 24
HUBER_K = 1.5
MIN_ROWS_PER_LEAD = 24
MIN_PRICE_SCALE = 1.0
DEFAULT_SPREAD = 0.5
# In-sample residuals understate out-of-sample errors: quantile offsets around the median are widened.
SPREAD_WIDENING = 1.2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class PriceForecast:
    """Quantile price forecast of one product: ``price[i, j]`` is quantile ``quantiles[j]`` of the
    interval ending ``first_interval + 5 min * i`` (AEST), in $/MWh (ENERGY) or $/MW/h (FCAS)."""

    product: str
    first_interval: datetime
    quantiles: FloatArray
    price: FloatArray

    @property
    def horizon_intervals(self) -> int:
        """Number of 5-minute intervals covered."""
        return int(self.price.shape[0])


@dataclass(frozen=True)
class PredispatchBlend:
    """Weight of the pre-dispatch price in the central path (asinh space) as a function of the lead:
    ``far - (far - near) * exp(-lead / lead_scale_intervals)``."""

    near: float
    far: float
    lead_scale_intervals: float

    def weight(self, lead: IntArray) -> FloatArray:
        """Weight (0..1) at ``lead`` 5-minute intervals after the last known price."""
        span = self.far - self.near
        return np.asarray(self.far - span * np.exp(-lead / self.lead_scale_intervals), dtype=np.float64)


# Calibrated on January 2021 (NSW1, QLD1, SA1, VIC1; every 37th interval as decision time, 288 leads):
# AEMO's energy pre-dispatch beats the statistical model at every lead up to a day; for FCAS it helps less.
ENERGY_PREDISPATCH_BLEND = PredispatchBlend(near=0.85, far=0.45, lead_scale_intervals=60.0)
FCAS_PREDISPATCH_BLEND = PredispatchBlend(near=0.25, far=0.25, lead_scale_intervals=60.0)



ENERGY_PERSISTENCE_SCALE_V2 = 3.0
FCAS_PERSISTENCE_SCALE_V2 = 2.0
# v4: the ENERGY τ where no pre-dispatch price covers the interval (see the module docstring). Chosen on the
# tuning set of issue 15 (README "Holding the price of now a little longer"): 12 and 24 intervals on SA1
# 2022-01, 2024-08 and 2024-09 against v2, then 24 on the whole tuning set.
ENERGY_PERSISTENCE_SCALE_V4 = 24.0


@dataclass(frozen=True)
class Persistence:
    """How strongly the first leads hold the last known price (v2): weight exp(−lead/τ) in asinh space
    after the pre-dispatch blend, τ in 5-minute intervals per product family (0: none, as in v1).
    ``energy_unforecast_lead_scale_intervals`` (v4): the ENERGY τ of the intervals no AEMO pre-dispatch
    price covers (None: ``energy_lead_scale_intervals`` everywhere)."""

    energy_lead_scale_intervals: float
    fcas_lead_scale_intervals: float
    energy_unforecast_lead_scale_intervals: float | None = None

    def scale_for(self, product: str) -> float:
        """τ of ``product`` (ENERGY or an FCAS service), in 5-minute intervals."""
        return self.energy_lead_scale_intervals if product == ENERGY else self.fcas_lead_scale_intervals

    def unforecast_scale_for(self, product: str) -> float | None:
        """τ (5-minute intervals) of ``product`` where no pre-dispatch price covers an interval, when it
        differs from :meth:`scale_for` (None: it does not)."""
        return self.energy_unforecast_lead_scale_intervals if product == ENERGY else None


# Per version: v1 never persists; v2 holds spikes and negative prices for the next few intervals.
# Chosen on SA1 January 2021 by realised revenue through the bidding path (`vpp backtest run`, 8,928
# decisions; energy τ / FCAS τ → share of perfect foresight): none (v1) 83.7 %; 1/1 84.1 %; 2/2 84.4 %;
# 4/1 84.0 %; 2/1 84.5 %; 3/2 84.5 % ($3,909,561, chosen).
PERSISTENCE_BY_VERSION: dict[str, Persistence] = {
    "1": Persistence(energy_lead_scale_intervals=0.0, fcas_lead_scale_intervals=0.0),
    "2": Persistence(energy_lead_scale_intervals=ENERGY_PERSISTENCE_SCALE_V2,
                     fcas_lead_scale_intervals=FCAS_PERSISTENCE_SCALE_V2),
    "3": Persistence(energy_lead_scale_intervals=ENERGY_PERSISTENCE_SCALE_V2,
                     fcas_lead_scale_intervals=FCAS_PERSISTENCE_SCALE_V2),
    "4": Persistence(energy_lead_scale_intervals=ENERGY_PERSISTENCE_SCALE_V2,
                     fcas_lead_scale_intervals=FCAS_PERSISTENCE_SCALE_V2,
                     energy_unforecast_lead_scale_intervals=ENERGY_PERSISTENCE_SCALE_V4),
    "5": Persistence(energy_lead_scale_intervals=ENERGY_PERSISTENCE_SCALE_V2,
                     fcas_lead_scale_intervals=FCAS_PERSISTENCE_SCALE_V2,
                     energy_unforecast_lead_scale_intervals=ENERGY_PERSISTENCE_SCALE_V4),
    "6": Persistence(energy_lead_scale_intervals=ENERGY_PERSISTENCE_SCALE_V2,
                     fcas_lead_scale_intervals=FCAS_PERSISTENCE_SCALE_V2,
                     energy_unforecast_lead_scale_intervals=ENERGY_PERSISTENCE_SCALE_V4),
}


@dataclass(frozen=True)
class P5minBlend:
    """Weight of AEMO's P5MIN price in the central path (asinh space) by the interval's position in its run
    (``j`` = 0 for the run's first interval, the one in progress when it was published):
    ``far - (far - near) * exp(-j / position_scale_intervals)``. Where the weight is ``w`` the band around
    the path is ``1 - w * (1 - spread_ratio)`` times as wide as the model's."""

    near: float
    far: float
    position_scale_intervals: float
    spread_ratio: float

    def weight(self, position: IntArray) -> FloatArray:
        """Weight (0..1) of the P5MIN price at ``position`` 5-minute intervals into its run."""
        span = self.far - self.near
        return np.asarray(self.far - span * np.exp(-np.maximum(position, 0) / self.position_scale_intervals),
                          dtype=np.float64)


# Priors, not fits (see the module docstring "P5MIN"): the platform's P5MIN data is one report and twenty
# QLD1 energy runs of one morning. Energy trusts AEMO's P5MIN almost fully at its first intervals; FCAS less.
ENERGY_P5MIN_BLEND = P5minBlend(near=0.95, far=0.6, position_scale_intervals=6.0, spread_ratio=0.5)
FCAS_P5MIN_BLEND = P5minBlend(near=0.7, far=0.35, position_scale_intervals=6.0, spread_ratio=0.8)


@dataclass(frozen=True, eq=False)
class P5minRun:
    """One P5MIN run of one product as the forecaster takes it: ``run_time`` (RUN_DATETIME, the end of its
    first interval, AEST), interval-ending AEST ``intervals`` (5-minute grid, increasing) and ``price``
    ($/MWh or $/MW/h, finite)."""

    run_time: datetime
    intervals: Sequence[datetime]
    price: FloatArray


# Per version: whether AEMO's P5MIN run of the request is used (v3 on); earlier versions ignore it.
USES_P5MIN_BY_VERSION: dict[str, bool] = {"1": False, "2": False, "3": True, "4": False, "5": False, "6": False}


@dataclass(frozen=True)
class ShortHistoryGuard:
    """The weight of seasonal naive in v5's mixture with the model for a short history: 1 at ``first_day_days``
    days of usable history or less, falling linearly to 0 at ``full_days`` days (a day = 288 intervals with a
    price)."""

    first_day_days: float
    full_days: float

    def __post_init__(self) -> None:
        if not 0 <= self.first_day_days < self.full_days:
            raise ValueError(f"the guard needs 0 <= first_day_days < full_days, got {self.first_day_days} and "
                             f"{self.full_days}")

    def weight(self, usable_history_intervals: int) -> float:
        """Weight (0..1) of seasonal naive in the mixture for a history of ``usable_history_intervals``
        5-minute intervals with a price."""
        days = usable_history_intervals / INTERVALS_PER_DAY
        span = self.full_days - self.first_day_days
        return float(min(1.0, max(0.0, (self.full_days - days) / span)))


# v5: chosen before any backtest from the forecast-skill table of one day of history (Jan 2021 and Jan 2025, both
# worse than seasonal naive beyond 4 h) and the seasonal regressor's need of two days; three days for the fits to
# have a full day of seasonal rows. Not tuned further.
SHORT_HISTORY_GUARD_V5 = ShortHistoryGuard(first_day_days=1.0, full_days=3.0)
# Per version: the short-history guard (None: none, as before v5).
SHORT_HISTORY_GUARD_BY_VERSION: dict[str, ShortHistoryGuard | None] = {
    "1": None, "2": None, "3": None, "4": None, "5": SHORT_HISTORY_GUARD_V5, "6": None}


@dataclass(frozen=True)
class ReachBlend:
    """v6: how a history longer than the recent window (``recent_intervals`` 5-minute slots, the default
    ``[cycle] history_intervals``; longer only when the market-data snapshot reached back because the window
    held too few known prices, ``[market_data] history_reach_intervals``) is used. The model fitted on the recent
    window alone is mixed with the model fitted on the whole history, the whole history's weighted
    ``max_weight`` x ``guard``'s weight of the recent window's known prices (1 at ``first_day_days`` days or
    less, 0 at ``full_days``). The price scale is the whole history's, as in v4. A history longer than the window
    whose window is full (a ``[cycle] history_intervals`` above a week) is forecast from the window alone: v6
    takes the extra days only where the week lacks them; v4 fits all of them."""

    recent_intervals: int
    max_weight: float
    guard: ShortHistoryGuard

    def weight(self, recent_known_intervals: int) -> float:
        """Weight (0..1) of the whole history's model for a recent window with ``recent_known_intervals``
        known prices."""
        return self.max_weight * self.guard.weight(recent_known_intervals)


# v6: fixed before any backtest: the recent window is the default week; the whole history weighs at most half
# (the recent days keep the regime: SA1 30-31 January 2022, where a week's history before the stretch, calm
# 1-3 January, took the spike out of the forecast and the battery was empty at the cap); the weight falls as the
# recent window fills, as v5's guard does (one day: full weight, three days: none).
REACH_BLEND_V6 = ReachBlend(recent_intervals=2016, max_weight=0.5,
                            guard=ShortHistoryGuard(first_day_days=1.0, full_days=3.0))
# Per version: the blend of a reached history (None: the whole history is fitted as one, as before v6).
REACH_BLEND_BY_VERSION: dict[str, ReachBlend | None] = {
    "1": None, "2": None, "3": None, "4": None, "5": None, "6": REACH_BLEND_V6}


@dataclass(frozen=True)
class _CentralModel:
    """One OLS coefficient vector per training lead, and the residual quantiles (asinh space) per lead
    at the requested levels followed by the median."""

    params: FloatArray
    use_harmonics: bool
    use_seasonal: bool
    leads: IntArray
    residual_quantiles: FloatArray


def _check_quantile_levels(quantiles: Sequence[float]) -> FloatArray:
    """The levels as a read-only array, checked (InvalidRequestError naming the problem); the same few level
    sets come with every request, so a valid set is checked once and its array shared."""
    try:
        key = tuple(quantiles)
        hash(key)
    except TypeError:  # e.g. nested lists: checked (and refused) without the cache
        return _checked_levels(quantiles)
    return _checked_levels_cached(key)


@functools.lru_cache(maxsize=32)
def _checked_levels_cached(quantiles: tuple[float, ...]) -> FloatArray:
    return _checked_levels(quantiles)


def _checked_levels(quantiles: Sequence[float]) -> FloatArray:
    levels = np.array(quantiles, dtype=np.float64)
    levels.flags.writeable = False
    if levels.ndim != 1 or levels.size == 0:
        raise InvalidRequestError("quantiles must be a non-empty list of levels")
    if not np.all((levels > 0) & (levels < 1)):
        raise InvalidRequestError(f"quantile levels must lie strictly between 0 and 1, got {levels.tolist()}")
    if np.any(np.diff(levels) <= 0):
        raise InvalidRequestError(f"quantile levels must be strictly increasing, got {levels.tolist()}")
    return levels


def _check_on_grid(moment: datetime, label: str) -> None:
    if moment.second or moment.microsecond or moment.minute % 5:
        raise InvalidRequestError(f"{label} {moment} is not on the 5-minute interval grid")


def _minute_of_day(first: datetime, count: int) -> IntArray:
    start = first.hour * 60 + first.minute
    return (start + 5 * np.arange(count, dtype=np.int64)) % MINUTES_PER_DAY


def _forward_fill(values: FloatArray) -> FloatArray:
    """Each value replaced by the last finite value at or before it (NaN before the first)."""
    index = np.where(np.isfinite(values), np.arange(values.size), -1)
    np.maximum.accumulate(index, out=index)
    filled = values[np.maximum(index, 0)]
    return np.where(index >= 0, filled, np.nan)


def _interval_offsets(periods: Sequence[datetime] | npt.NDArray[np.datetime64], first_interval: datetime) -> FloatArray:
    """``(period - first_interval) / 5 min`` of every period (AEST datetimes, or a datetime64 array of them),
    to the microsecond as ``datetime`` arithmetic gives it: both divide the exact whole number of
    microseconds by 300,000,000 and round once."""
    if isinstance(periods, np.ndarray):
        micros = periods.astype("datetime64[us]") - np.datetime64(first_interval, "us")
        offsets: FloatArray = micros.astype(np.int64).astype(np.float64) / float(INTERVAL // _MICROSECOND)
        return offsets
    return np.array([(p - first_interval) / INTERVAL for p in periods], dtype=np.float64)


def market_times_of(timestamps: Sequence[Timestamp]) -> npt.NDArray[np.datetime64]:
    """The naive AEST market times (datetime64, microseconds) of protobuf UTC timestamps, as
    :func:`~algorithms.common.nem_time.from_timestamp` reads each one (nanoseconds truncated to the
    microsecond), without making a ``datetime`` of each."""
    micros = np.array([ts.seconds * 1_000_000 + ts.nanos // 1000 for ts in timestamps], dtype=np.int64)
    return np.asarray(micros.astype("datetime64[us]") + np.timedelta64(AEST_OFFSET // _MICROSECOND, "us"),
                      dtype="datetime64[us]")


def _predispatch_on_grid(
    periods: Sequence[datetime] | npt.NDArray[np.datetime64], prices: FloatArray, first_interval: datetime,
    horizon: int,
) -> FloatArray:
    """Pre-dispatch price step-held onto each 5-minute interval of the horizon (NaN where uncovered)."""
    on_grid = np.full(horizon, np.nan)
    if len(periods) == 0:
        return on_grid
    offsets = _interval_offsets(periods, first_interval)
    if np.any(np.diff(offsets) <= 0):
        raise InvalidRequestError("predispatch periods must be strictly increasing")
    interval_offsets = np.arange(horizon, dtype=np.float64)
    slot = np.searchsorted(offsets, interval_offsets, side="left")
    inside = slot < offsets.size
    period_length = PREDISPATCH_PERIOD / INTERVAL
    slot_clipped = np.minimum(slot, offsets.size - 1)
    covered = inside & (offsets[slot_clipped] - interval_offsets < period_length)
    on_grid[covered] = prices[slot_clipped[covered]]
    return on_grid


def _harmonic_columns(minute_of_day: IntArray) -> list[FloatArray]:
    angle = 2 * np.pi * minute_of_day / MINUTES_PER_DAY
    columns: list[FloatArray] = []
    for cycles in HARMONICS:
        columns.append(np.sin(cycles * angle))
        columns.append(np.cos(cycles * angle))
    return columns


# The harmonic columns of every minute of the day (one row per column): looked up, not recomputed.
_HARMONICS_BY_MINUTE = np.stack(_harmonic_columns(np.arange(MINUTES_PER_DAY, dtype=np.int64)))
_HARMONICS_BY_MINUTE.flags.writeable = False


def _harmonics(minute_of_day: IntArray) -> FloatArray:
    """The time-of-day harmonic columns (sin/cos of HARMONICS cycles per day), shape (columns, rows)."""
    return np.asarray(_HARMONICS_BY_MINUTE[:, minute_of_day], dtype=np.float64)


def _design(
    minute_of_day: IntArray,
    level: FloatArray,
    seasonal: FloatArray,
    use_harmonics: bool,
    use_seasonal: bool,
) -> FloatArray:
    columns: list[FloatArray] = [np.ones(level.size)]
    if use_harmonics:
        columns += list(_harmonics(minute_of_day))
    if use_seasonal:
        columns.append(seasonal)
    columns.append(level)
    return np.column_stack(columns)


def _seasonal_offset(lead: IntArray) -> IntArray:
    """Intervals back from a target to the same time of day on the last day known ``lead`` intervals
    before it: 288 x ceil(lead / 288)."""
    return INTERVALS_PER_DAY * -(-lead // INTERVALS_PER_DAY)


def _seasonal_index(target: IntArray, lead: IntArray) -> IntArray:
    """History index of the same time of day on the last day known at the forecast origin."""
    return target - _seasonal_offset(lead)


def _training_leads(history_length: int, max_lead: int) -> IntArray:
    """Training leads below ``max_lead`` plus the first at or above it, all shorter than the history."""
    candidates = [k for k in TRAINING_LEADS if k < history_length]
    beyond = [k for k in candidates if k >= max_lead]
    return np.asarray([k for k in candidates if k < max_lead] + beyond[:1], dtype=np.int64)


def huber_fit_reference(response: FloatArray, design: FloatArray) -> FloatArray:
    """Reference estimator of one lead (asinh space): statsmodels OLS, then one Huber step (residuals
    beyond HUBER_K robust standard deviations, 1.4826 x median absolute residual, are clipped and the
    model refitted). Returns the refit's coefficients, one per design column.

    :func:`huber_fit` solves the same problem for every lead at once and falls back to this for the
    designs it cannot solve accurately. A flat price history (common for FCAS, and at the start of a data
    set) makes the level and intercept columns collinear; OLS's pseudo-inverse then gives the
    minimum-norm fit, which is the intended answer, so statsmodels' rank warning is silenced here rather
    than flooding worker logs.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=SingularMatrixWarning)
        coefficients = np.asarray(sm.OLS(response, design).fit().params, dtype=np.float64)
        fitted = design @ coefficients
        residual = response - fitted
        bound = HUBER_K * 1.4826 * max(float(np.median(np.abs(residual))), 1e-9)
        refit = sm.OLS(fitted + np.clip(residual, -bound, bound), design).fit()
    return np.asarray(refit.params, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class LeadProblems:
    """The least-squares problems of the training leads, stacked (asinh space).

    ``regressors[l]`` (columns x rows; columns: intercept, optional harmonics, optional seasonal, level)
    and ``response[l]`` hold lead ``leads[l]``'s design (transposed) and targets on the rows where
    ``valid[l]`` is True, i.e. from ``first_row[l]`` on; the rows before are zero padding and take no part
    in any fit, median or quantile.
    """

    leads: IntArray
    regressors: FloatArray
    response: FloatArray
    first_row: IntArray
    valid: BoolArray

    def lead_rows(self, index: int) -> tuple[FloatArray, FloatArray]:
        """(response, design: rows x columns) of the lead at ``index`` without its padding."""
        rows = self.valid[index]
        return self.response[index, rows], np.ascontiguousarray(self.regressors[index][:, rows].T)

    def fitted(self, coefficients: FloatArray) -> FloatArray:
        """Each lead's fitted values (leads x rows; zero on padding) for ``coefficients`` (leads x columns)."""
        fitted: FloatArray = np.matmul(coefficients[:, None, :], self.regressors)[:, 0, :]
        return fitted


def lead_problems(
    z_history: FloatArray, history_minutes: IntArray, max_lead: int, use_harmonics: bool, use_seasonal: bool
) -> LeadProblems | None:
    """Every training lead's problem (asinh prices ``z_history``, NaN = missing; ``history_minutes`` the
    minute of day of each interval end, AEST) with at least MIN_ROWS_PER_LEAD rows; None if there is none.

    Target ``j`` is usable at lead ``k`` when its price is known and what it is regressed on was known: the
    origin ``j - k`` and, with the seasonal regressor, ``j - 288 * ceil(k / 288)`` lie at or after the first
    known price ``f`` (the forward-filled level is finite from there on). Each lead's rows are therefore a
    suffix of the known targets: all leads share one row axis and differ only in where their rows start.
    """
    targets = np.flatnonzero(np.isfinite(z_history))
    if targets.size == 0:
        return None
    first_known = int(targets[0])
    leads = _training_leads(z_history.size, max_lead)
    reach = np.maximum(leads, _seasonal_offset(leads)) if use_seasonal else leads
    start = np.searchsorted(targets, reach + first_known)
    kept = targets.size - start >= MIN_ROWS_PER_LEAD
    if not np.any(kept):
        return None
    leads, start = leads[kept], start[kept]
    rows = targets[int(start.min()):]
    first_row = start - start.min()
    valid = np.arange(rows.size) >= first_row[:, None]
    level_filled = _forward_fill(z_history)
    regressors = np.empty((leads.size, _column_count(use_harmonics, use_seasonal), rows.size))
    regressors[:, 0] = 1.0
    if use_harmonics:
        regressors[:, 1:1 + 2 * len(HARMONICS)] = _harmonics(history_minutes[rows])
    if use_seasonal:
        regressors[:, -2] = level_filled[np.maximum(_seasonal_index(rows, leads[:, None]), first_known)]
    regressors[:, -1] = level_filled[np.maximum(rows - leads[:, None], first_known)]
    response = np.broadcast_to(z_history[rows], valid.shape).copy()
    for index, first in enumerate(first_row.tolist()):
        regressors[index, :, :first] = 0.0
        response[index, :first] = 0.0
    return LeadProblems(leads, regressors, response, first_row, valid)


def _column_count(use_harmonics: bool, use_seasonal: bool) -> int:
    return 2 + (2 * len(HARMONICS) if use_harmonics else 0) + (1 if use_seasonal else 0)


def masked_median(values: FloatArray, valid: BoolArray) -> FloatArray:
    """Median of each row of ``values`` over its ``valid`` entries (numpy's median, row by row). Only the
    middle order statistics are put in place (a partial sort: the same values as a full sort), each row's own
    one or two: partitioning every row at every row's middle positions costs several times more."""
    count = np.count_nonzero(valid, axis=1)
    padded = np.where(valid, values, np.inf)
    upper = np.empty(values.shape[0])
    lower = np.empty(values.shape[0])
    for row, valid_count in enumerate(count.tolist()):
        high, low = valid_count // 2, (valid_count - 1) // 2
        ordered = np.partition(padded[row], high if high == low else (low, high))
        upper[row], lower[row] = ordered[high], ordered[low]
    median: FloatArray = np.where(count % 2 == 1, upper, (lower + upper) / 2)
    return median


def masked_quantiles(values: FloatArray, valid: BoolArray, levels: FloatArray) -> FloatArray:
    """Quantiles (numpy's default "linear" method) of each row of ``values`` over its ``valid`` entries:
    shape (rows, levels), each row needing at least two valid entries."""
    ordered = np.sort(np.where(valid, values, np.inf), axis=1)
    count = np.count_nonzero(valid, axis=1)
    position = (count[:, None] - 1) * levels[None, :]
    below = np.floor(position)
    gamma = position - below
    index = below.astype(np.int64)
    lower = np.take_along_axis(ordered, index, axis=1)
    upper = np.take_along_axis(ordered, index + 1, axis=1)
    step = upper - lower
    quantiles: FloatArray = np.where(gamma >= 0.5, upper - step * (1 - gamma), lower + step * gamma)
    return quantiles


# The batched solver hands a lead to the reference estimator when its standardised normal equations are
# worse conditioned than this (January 2021 designs stay below 100; a flat history is singular) ...
MAX_BATCHED_CONDITION = 1e6
# ... or when a column is (nearly) constant, i.e. (nearly) collinear with the intercept: its spread
# (norm after centring) below this share of its norm. January 2021 designs stay above 0.004.
MIN_RELATIVE_SPREAD = 1e-6


@dataclass(frozen=True, eq=False)
class _StandardisedDesigns:
    """Every lead's design with the intercept eliminated: the other columns centred on the lead's valid
    rows (``centred``, leads x columns-1 x rows, zero on padding), their means and norms, and the
    correlation matrix of the normal equations. ``solvable`` is False for the leads with a (nearly)
    constant column (relative spread below MIN_RELATIVE_SPREAD) or whose correlation matrix is worse
    conditioned than MAX_BATCHED_CONDITION: the reference estimator solves those."""

    count: FloatArray
    mean: FloatArray
    centred: FloatArray
    norm: FloatArray
    correlation: FloatArray
    solvable: BoolArray

    @classmethod
    def of(cls, problems: LeadProblems) -> _StandardisedDesigns:
        """Standardise ``problems``' designs (the part shared by every fit on them)."""
        count = np.count_nonzero(problems.valid, axis=1).astype(np.float64)
        mean = problems.regressors.sum(axis=2) / count[:, None]
        centred = problems.regressors[:, 1:] - mean[:, 1:, None]
        for index, first in enumerate(problems.first_row.tolist()):
            centred[index, :, :first] = 0.0
        gram = np.matmul(centred, centred.transpose(0, 2, 1))
        spread = np.diagonal(gram, axis1=1, axis2=2)
        magnitude = spread + count[:, None] * mean[:, 1:] ** 2  # sum of squares before centring
        solvable = np.all(spread > MIN_RELATIVE_SPREAD**2 * magnitude, axis=1) & np.all(spread > 0, axis=1)
        norm = np.sqrt(spread)
        norm = np.where(solvable[:, None], norm, 1.0)
        correlation = gram / (norm[:, :, None] * norm[:, None, :])
        identity = np.eye(correlation.shape[1])
        correlation[~solvable] = identity
        eigenvalues = np.linalg.eigvalsh(correlation)
        solvable &= eigenvalues[:, 0] * MAX_BATCHED_CONDITION > eigenvalues[:, -1]
        correlation[~solvable] = identity
        return cls(count, mean, centred, norm, correlation, solvable)

    def least_squares(self, response: FloatArray) -> FloatArray:
        """Every lead's OLS coefficients (leads x columns) for ``response`` (leads x rows, zero on padding);
        meaningless for the leads that are not ``solvable``."""
        response_mean = response.sum(axis=1) / self.count
        centred_response = response - response_mean[:, None]
        moment = np.matmul(self.centred, centred_response[:, :, None])[:, :, 0]
        slopes = np.linalg.solve(self.correlation, (moment / self.norm)[:, :, None])[:, :, 0] / self.norm
        intercept = response_mean - np.sum(self.mean[:, 1:] * slopes, axis=1)
        return np.column_stack([intercept, slopes])


def ols_batched(problems: LeadProblems, response: FloatArray) -> tuple[FloatArray, BoolArray]:
    """Every lead's OLS coefficients (leads x columns) for ``response`` (leads x rows, zero on padding) on
    ``problems``' designs, and whether each lead was solvable; for the others the coefficients are
    meaningless and statsmodels OLS is the answer (see :class:`_StandardisedDesigns`)."""
    designs = _StandardisedDesigns.of(problems)
    return designs.least_squares(response), designs.solvable


def huber_fit(problems: LeadProblems) -> FloatArray:
    """Every lead's coefficients (leads x columns, asinh space) as :func:`huber_fit_reference` gives them:
    OLS, then one Huber step, for all leads at once. The intercept is eliminated by centring; the normal
    equations of the other columns, scaled to unit diagonal, are solved together. Leads whose design this
    cannot solve accurately (a constant column or ill-conditioned, e.g. a flat history) go to the reference."""
    designs = _StandardisedDesigns.of(problems)
    response, valid = problems.response, problems.valid
    fitted = problems.fitted(designs.least_squares(response))
    residual = response - fitted
    bound = HUBER_K * 1.4826 * np.maximum(masked_median(np.abs(residual), valid), 1e-9)
    clipped = (fitted + np.clip(residual, -bound[:, None], bound[:, None])) * valid
    coefficients = designs.least_squares(clipped)
    for index in np.flatnonzero(~designs.solvable).tolist():
        coefficients[index] = huber_fit_reference(*problems.lead_rows(index))
    return coefficients


def _fit_central(
    z_history: FloatArray, history_minutes: IntArray, max_lead: int, levels: FloatArray
) -> _CentralModel | None:
    """One Huber-step OLS per training lead (direct strategy); None when the history is too short for it."""
    n = z_history.size
    valid_count = int(np.count_nonzero(np.isfinite(z_history)))
    if valid_count < MIN_HISTORY_FOR_MODEL:
        return None
    use_harmonics = n >= INTERVALS_PER_DAY and valid_count >= INTERVALS_PER_DAY // 2
    use_seasonal = n >= 2 * INTERVALS_PER_DAY
    problems = lead_problems(z_history, history_minutes, max_lead, use_harmonics, use_seasonal)
    if problems is None:
        return None
    coefficients = huber_fit(problems)
    residual = problems.response - problems.fitted(coefficients)
    residual_quantiles = masked_quantiles(residual, problems.valid, np.append(levels, 0.5))
    return _CentralModel(coefficients, use_harmonics, use_seasonal, problems.leads, residual_quantiles)


def _default_offsets(levels: FloatArray, horizon: int) -> FloatArray:
    normal = NormalDist()
    offsets = np.array([DEFAULT_SPREAD * normal.inv_cdf(float(q)) for q in levels])
    return np.broadcast_to(offsets, (horizon, levels.size)).copy()


def _lead_interpolation(model: _CentralModel, lead: IntArray) -> tuple[IntArray, FloatArray]:
    """Index of the trained lead at or below each lead and the log-lead weight of the next one."""
    log_lead = np.log(lead.astype(np.float64))
    log_trained = np.log(model.leads.astype(np.float64))
    if model.leads.size == 1:
        return np.zeros(lead.size, dtype=np.int64), np.zeros(lead.size)
    lower = np.clip(np.searchsorted(log_trained, log_lead, side="right") - 1, 0, model.leads.size - 2)
    fraction = (log_lead - log_trained[lower]) / (log_trained[lower + 1] - log_trained[lower])
    return lower.astype(np.int64), np.clip(fraction, 0.0, 1.0)


def quantile_price_forecast(
    history_price: np.ndarray,
    history_first_interval: datetime,
    predispatch_period: Sequence[datetime] | npt.NDArray[np.datetime64],
    predispatch_price: np.ndarray,
    first_interval: datetime,
    horizon_intervals: int,
    quantiles: Sequence[float],
    *,
    predispatch_blend: PredispatchBlend = ENERGY_PREDISPATCH_BLEND,
    persistence_lead_scale_intervals: float = 0.0,
    unforecast_persistence_lead_scale_intervals: float | None = None,
    p5min: P5minRun | None = None,
    p5min_blend: P5minBlend = ENERGY_P5MIN_BLEND,
    short_history_guard: ShortHistoryGuard | None = None,
    reach_blend: ReachBlend | None = None,
) -> FloatArray:
    """Quantile forecast of one product's price, shape (horizon_intervals, len(quantiles)).

    ``history_price[i]`` is the price of the interval ending ``history_first_interval + 5 min * i``
    (AEST; $/MWh or $/MW/h; NaN = missing); any length from 0. ``predispatch_period`` are half-hour
    period-ending times (AEST; datetimes, or a datetime64 array as :func:`market_times_of` reads them) with
    prices ``predispatch_price``, possibly empty or covering only part
    of the horizon. Row ``i`` forecasts the interval ending ``first_interval + 5 min * i``; columns
    follow ``quantiles`` (strictly increasing levels in (0, 1)) and never decrease along a row.
    ``predispatch_blend`` sets how much the pre-dispatch price counts (use FCAS_PREDISPATCH_BLEND for FCAS).
    ``persistence_lead_scale_intervals`` τ > 0 pulls the central path towards the last known price with
    weight exp(−lead/τ) after the blend (the next intervals are like the last one, spikes included).
    ``unforecast_persistence_lead_scale_intervals`` (None: the same τ everywhere) is τ of the intervals no
    pre-dispatch price covers.
    ``p5min``: AEMO's P5MIN run of the product (None: not known), blended in last with ``p5min_blend``
    where it covers the horizon (use FCAS_P5MIN_BLEND for FCAS).
    ``short_history_guard`` (None: none): the model is fitted on the history from its first known price and,
    with a short history, mixed with seasonal naive (the last known price at the same time of day) before the
    blend and persistence (v5, see the module docstring).
    ``reach_blend`` (None: none): a history longer than its recent window is forecast as the mixture of the
    recent window's model and the whole history's (v6, :class:`ReachBlend`); ``short_history_guard`` then
    plays no part.

    Raises InvalidRequestError when there is no usable history, no pre-dispatch and no P5MIN price, or the
    inputs are inconsistent (history reaching into the horizon, off-grid times, unequal lengths).
    """
    levels = _check_quantile_levels(quantiles)
    if not 0 < horizon_intervals <= MAX_HORIZON_INTERVALS:
        raise InvalidRequestError(
            f"horizon_intervals must be in 1..{MAX_HORIZON_INTERVALS}, got {horizon_intervals}"
        )
    _check_on_grid(first_interval, "first_interval")
    history = np.asarray(history_price, dtype=np.float64)
    if history.ndim != 1:
        raise InvalidRequestError(f"history_price must be one-dimensional, got shape {history.shape}")
    if np.any(np.isinf(history)):
        raise InvalidRequestError("history_price holds infinite values (use NaN for missing)")
    pd_price = np.asarray(predispatch_price, dtype=np.float64)
    if pd_price.ndim != 1 or pd_price.size != len(predispatch_period):
        raise InvalidRequestError(
            f"predispatch has {len(predispatch_period)} periods but {pd_price.size} prices"
        )
    if not np.all(np.isfinite(pd_price)):
        raise InvalidRequestError("predispatch prices must be finite")

    predispatch = _predispatch_on_grid(predispatch_period, pd_price, first_interval, horizon_intervals)
    p5min_price, p5min_position = _p5min_on_grid(p5min, first_interval, horizon_intervals)
    has_history = bool(np.any(np.isfinite(history)))
    if not has_history and not np.any(np.isfinite(predispatch)) and not np.any(np.isfinite(p5min_price)):
        raise InvalidRequestError(
            "no price history and no pre-dispatch or P5MIN price covering the horizon: nothing to forecast from"
        )
    # The scale comes from history and pre-dispatch (as in v2, so P5MIN changes nothing beyond its hour);
    # P5MIN's prices widen the range the quantiles are clipped to.
    scale_basis = np.concatenate([history[np.isfinite(history)], pd_price])
    p5min_observed = np.asarray(p5min.price, dtype=np.float64) if p5min is not None else np.empty(0)
    observed = np.concatenate([scale_basis, p5min_observed])
    scale = max(float(np.median(np.abs(scale_basis if scale_basis.size else observed))), MIN_PRICE_SCALE)
    z_low, z_high = np.arcsinh(observed.min() / scale), np.arcsinh(observed.max() / scale)
    z_predispatch = np.arcsinh(predispatch / scale)
    z_p5min = np.arcsinh(p5min_price / scale)
    has_p5min = np.isfinite(z_p5min)

    if has_history:
        _check_on_grid(history_first_interval, "history first_interval")
        last_history = history_first_interval + INTERVAL * (history.size - 1)
        first_lead = int((first_interval - last_history) / INTERVAL)
        if first_lead < 1:
            raise InvalidRequestError(
                f"history runs to {last_history}, not before the first forecast interval {first_interval}"
            )
        lead = first_lead + np.arange(horizon_intervals, dtype=np.int64)
        if reach_blend is not None:
            central, offsets = _reach_blended_model_path(history, history_first_interval, lead, levels, scale,
                                                         reach_blend)
        elif short_history_guard is None:
            central, offsets = _model_path(history, history_first_interval, lead, levels, scale)
        else:
            central, offsets = _guarded_model_path(history, history_first_interval, lead, levels, scale,
                                                   short_history_guard, (z_low, z_high))
        weight = predispatch_blend.weight(lead)
        has_pd = np.isfinite(z_predispatch)
        central = np.where(has_pd, (1 - weight) * central + weight * np.nan_to_num(z_predispatch), central)
        unforecast_scale = (persistence_lead_scale_intervals if unforecast_persistence_lead_scale_intervals is None
                            else unforecast_persistence_lead_scale_intervals)
        if persistence_lead_scale_intervals > 0 or unforecast_scale > 0:
            last_level = _forward_fill(np.arcsinh(history / scale))[-1]
            persistence = persistence_weight(lead, has_pd, persistence_lead_scale_intervals, unforecast_scale)
            central = persistence * last_level + (1 - persistence) * central
        if bool(has_p5min.any()):
            p5min_weight = np.where(has_p5min, p5min_blend.weight(p5min_position), 0.0)
            central = np.where(has_p5min, (1 - p5min_weight) * central + p5min_weight * np.nan_to_num(z_p5min),
                               central)
            offsets = offsets * (1 - p5min_weight * (1 - p5min_blend.spread_ratio))[:, None]
    else:
        central = _hold_both_ways(np.where(has_p5min, z_p5min, z_predispatch))
        offsets = _default_offsets(levels, horizon_intervals)

    z_quantiles = np.clip(central[:, None] + offsets, z_low, z_high)
    z_quantiles.sort(axis=1)
    return np.asarray(scale * np.sinh(z_quantiles), dtype=np.float64)


def persistence_weight(lead: IntArray, has_predispatch: BoolArray, forecast_scale_intervals: float,
                       unforecast_scale_intervals: float) -> FloatArray:
    """Weight (0..1) of the last known price at each ``lead`` (5-minute intervals): exp(−lead/τ) with τ
    ``forecast_scale_intervals`` where a pre-dispatch price covers the interval, ``unforecast_scale_intervals``
    where none does; τ = 0 gives 0."""
    scale = np.where(has_predispatch, forecast_scale_intervals, unforecast_scale_intervals)
    weight: FloatArray = np.where(scale > 0, np.exp(-lead / np.where(scale > 0, scale, 1.0)), 0.0)
    return weight


def _guarded_model_path(
    history: FloatArray, history_first_interval: datetime, lead: IntArray, levels: FloatArray, scale: float,
    guard: ShortHistoryGuard, z_range: tuple[float, float],
) -> tuple[FloatArray, FloatArray]:
    """v5's central path (asinh space) and offsets: the model fitted on the history from its first known price
    (the unknown stretch before it does not count as history: the model's harmonics and seasonal regressor
    need a day and two days of it); below ``guard``'s full history, the mixture of the model's distribution
    (its path clipped to the observed range ``z_range``) and seasonal naive's (the same band around
    yesterday-same-time), with seasonal naive's weight from ``guard``: its median is the path, its quantiles
    less the median the offsets."""
    known = np.flatnonzero(np.isfinite(history))
    first_known = int(known[0])
    usable = history[first_known:]
    central, offsets = _model_path(usable, history_first_interval + INTERVAL * first_known, lead, levels, scale)
    naive_weight = guard.weight(int(known.size))
    if naive_weight <= 0:
        return central, offsets
    naive = seasonal_naive_path(np.arcsinh(usable / scale), lead)
    return _mixed_path((np.clip(central, *z_range), offsets), (naive, offsets), levels, naive_weight)


def _mixed_path(first: tuple[FloatArray, FloatArray], second: tuple[FloatArray, FloatArray], levels: FloatArray,
                second_weight: float) -> tuple[FloatArray, FloatArray]:
    """Central path and offsets (asinh space) of the mixture ``(1 - second_weight)`` x first + ``second_weight``
    x second, each given as (central path, offsets at ``levels``) with a zero offset at the median: the
    mixture's median is the path, its quantiles at ``levels`` less the median the offsets."""
    point_levels = np.union1d(levels, [0.5])
    median_column = int(np.searchsorted(point_levels, 0.5))

    def points(central: FloatArray, offsets: FloatArray) -> FloatArray:
        band = np.insert(offsets, median_column, 0.0, axis=1) if point_levels.size > levels.size else offsets
        return central[:, None] + band

    mixed = mixture_quantiles(points(*first), points(*second), point_levels, second_weight, point_levels)
    median = mixed[:, median_column]
    wanted = np.searchsorted(point_levels, levels)
    return median, mixed[:, wanted] - median[:, None]


def _reach_blended_model_path(
    history: FloatArray, history_first_interval: datetime, lead: IntArray, levels: FloatArray, scale: float,
    blend: ReachBlend,
) -> tuple[FloatArray, FloatArray]:
    """v6's central path (asinh space) and offsets: the model of the recent window (the last
    ``blend.recent_intervals`` slots) mixed with the model of the whole history when the history is longer and
    holds known prices before the window, the whole history weighted :meth:`ReachBlend.weight`; a recent
    window without a known price leaves the whole history's model alone."""
    recent_size = min(history.size, blend.recent_intervals)
    recent = history[history.size - recent_size:]
    recent_known = int(np.count_nonzero(np.isfinite(recent)))
    earlier_known = bool(np.any(np.isfinite(history[:history.size - recent_size])))
    if recent_known == 0:
        return _model_path(history, history_first_interval, lead, levels, scale)
    recent_path = _model_path(recent, history_first_interval + INTERVAL * (history.size - recent_size), lead,
                              levels, scale)
    weight = blend.weight(recent_known) if earlier_known else 0.0
    if weight <= 0:
        return recent_path
    return _mixed_path(recent_path, _model_path(history, history_first_interval, lead, levels, scale), levels,
                       weight)


def _component_cdf(points: FloatArray, point_levels: FloatArray, at: FloatArray, *, left: bool) -> FloatArray:
    """Each row's CDF (0..1) at ``at`` (rows x m) of the distribution with quantiles ``points`` (rows x n,
    ascending) at ``point_levels``: linear between its points, the mass below the lowest point on it and the mass
    above the highest on that one. ``left``: the limit from the left (before a point's mass), else the value."""
    below = (points[:, None, :] < at[:, :, None]) if left else (points[:, None, :] <= at[:, :, None])
    count = below.sum(axis=2)  # points below (or at) each value
    inner = np.clip(count, 1, points.shape[1] - 1)
    lower = np.take_along_axis(points, inner - 1, axis=1)
    upper = np.take_along_axis(points, inner, axis=1)
    span = np.where(upper > lower, upper - lower, 1.0)
    fraction = np.clip((at - lower) / span, 0.0, 1.0)
    value = point_levels[inner - 1] + (point_levels[inner] - point_levels[inner - 1]) * fraction
    return np.where(count == 0, 0.0, np.where(count == points.shape[1], 1.0, value))


def mixture_quantiles(first: FloatArray, second: FloatArray, point_levels: FloatArray, second_weight: float,
                      wanted_levels: FloatArray) -> FloatArray:
    """Quantiles at ``wanted_levels`` (rows x levels) of the mixture ``(1 - second_weight)`` x first +
    ``second_weight`` x second, each distribution given by its quantiles (rows x n, ascending along a row) at
    ``point_levels`` (ascending, in (0, 1)). Between its quantiles a distribution's CDF is linear; its mass below
    the lowest quantile sits on that one, its mass above the highest on that one (no tail beyond what it
    gives). Units are those of the inputs (the forecaster's asinh space)."""
    candidates = np.sort(np.concatenate([first, second], axis=1), axis=1)
    mixed_value = ((1 - second_weight) * _component_cdf(first, point_levels, candidates, left=False)
                   + second_weight * _component_cdf(second, point_levels, candidates, left=False))
    mixed_left = ((1 - second_weight) * _component_cdf(first, point_levels, candidates, left=True)
                  + second_weight * _component_cdf(second, point_levels, candidates, left=True))
    rows = np.arange(candidates.shape[0])[:, None]
    wanted = np.asarray(wanted_levels, dtype=np.float64)[None, :]
    # The first candidate whose CDF value reaches the level (the last one's is 1), and the one before it.
    reach = np.argmax(mixed_value[:, :, None] >= wanted[:, None, :] - 1e-12, axis=1)
    before = np.maximum(reach - 1, 0)
    at_reach, at_before = candidates[rows, reach], candidates[rows, before]
    rise_start, rise_end = mixed_value[rows, before], mixed_left[rows, reach]
    inside = (rise_end >= wanted) & (reach > 0) & (rise_end > rise_start)
    fraction = np.clip((wanted - rise_start) / np.where(inside, rise_end - rise_start, 1.0), 0.0, 1.0)
    return np.asarray(np.where(inside, at_before + fraction * (at_reach - at_before), at_reach), dtype=np.float64)


def seasonal_naive_path(z_history: FloatArray, lead: IntArray) -> FloatArray:
    """Seasonal naive of each ``lead`` (5-minute intervals after the last history interval): the last known
    value (carried forward over gaps) at the same time of day on the last day known at the origin
    (:func:`_seasonal_index`), in the units of ``z_history``; the last known value where the history does not
    reach that far back. This is the model's seasonal regressor; the skill benchmark's baseline
    (:func:`algorithms.market.forecast_skill.seasonal_naive_forecast`) takes the last known price at a missing
    slot instead of carrying the slot's day forward."""
    return _seasonal_from_filled(_forward_fill(z_history), lead)


def _seasonal_from_filled(level_filled: FloatArray, lead: IntArray) -> FloatArray:
    """:func:`seasonal_naive_path` of a history already carried forward over its gaps (:func:`_forward_fill`)."""
    seasonal_index = _seasonal_index((level_filled.size - 1) + lead, lead)
    seasonal = np.where(seasonal_index >= 0, level_filled[np.maximum(seasonal_index, 0)], np.nan)
    return np.asarray(np.where(np.isfinite(seasonal), seasonal, level_filled[-1]), dtype=np.float64)


def _p5min_on_grid(p5min: P5minRun | None, first_interval: datetime, horizon: int) -> tuple[FloatArray, IntArray]:
    """P5MIN price of each 5-minute interval of the horizon (NaN where the run does not cover it) and each
    interval's position in the run (intervals after the run's first)."""
    on_grid = np.full(horizon, np.nan)
    position = np.zeros(horizon, dtype=np.int64)
    if p5min is None or len(p5min.intervals) == 0:
        return on_grid, position
    prices = np.asarray(p5min.price, dtype=np.float64)
    if prices.ndim != 1 or prices.size != len(p5min.intervals):
        raise InvalidRequestError(f"p5min has {len(p5min.intervals)} intervals but {prices.size} prices")
    if not np.all(np.isfinite(prices)):
        raise InvalidRequestError("p5min prices must be finite")
    _check_on_grid(p5min.run_time, "p5min run_time")
    for moment in p5min.intervals:
        _check_on_grid(moment, "p5min interval")
    offsets = np.array([(moment - first_interval) // INTERVAL for moment in p5min.intervals], dtype=np.int64)
    if np.any(np.diff(offsets) <= 0):
        raise InvalidRequestError("p5min intervals must be strictly increasing")
    inside = (offsets >= 0) & (offsets < horizon)
    on_grid[offsets[inside]] = prices[inside]
    position[:] = (first_interval - p5min.run_time) // INTERVAL + np.arange(horizon, dtype=np.int64)
    return on_grid, position


def _hold_both_ways(values: FloatArray) -> FloatArray:
    """Forward-filled, then the leading gap back-filled with the first finite value."""
    filled = _forward_fill(values)
    first_valid = int(np.flatnonzero(np.isfinite(values))[0])
    filled[:first_valid] = values[first_valid]
    return filled


def _model_path(
    history: FloatArray, history_first_interval: datetime, lead: IntArray, levels: FloatArray, scale: float
) -> tuple[FloatArray, FloatArray]:
    """Central path (asinh space) and per-interval quantile offsets from the history model."""
    z_history = np.arcsinh(history / scale)
    n = z_history.size
    history_minutes = _minute_of_day(history_first_interval, n)
    level_filled = _forward_fill(z_history)
    last_level = level_filled[-1]
    model = _fit_central(z_history, history_minutes, int(lead[-1]), levels)
    if model is None:
        return np.full(lead.size, last_level), _default_offsets(levels, lead.size)
    target_minutes = (history_minutes[-1] + 5 * lead) % MINUTES_PER_DAY
    seasonal = _seasonal_from_filled(level_filled, lead)
    design = _design(target_minutes, np.full(lead.size, last_level), seasonal,
                     model.use_harmonics, model.use_seasonal)
    per_model = design @ model.params.T
    lower, fraction = _lead_interpolation(model, lead)
    upper = np.minimum(lower + 1, model.leads.size - 1)
    rows = np.arange(lead.size)
    central = (1 - fraction) * per_model[rows, lower] + fraction * per_model[rows, upper]
    residual = ((1 - fraction)[:, None] * model.residual_quantiles[lower]
                + fraction[:, None] * model.residual_quantiles[upper])
    median_residual = residual[:, -1]
    offsets = SPREAD_WIDENING * (residual[:, :-1] - median_residual[:, None])
    return central + median_residual, offsets


def _history_prices(history: market_data_pb2.ProductPriceHistory) -> FloatArray:
    prices = np.array(history.price, dtype=np.float64)
    if len(history.known_at_unix_ms) not in (0, prices.size):
        raise InvalidRequestError(
            f"history has {prices.size} prices but {len(history.known_at_unix_ms)} known_at times"
        )
    if len(history.quality) not in (0, prices.size):
        raise InvalidRequestError(
            f"history has {prices.size} prices but {len(history.quality)} quality flags"
        )
    if len(history.quality):
        missing = np.array(history.quality) == common_pb2.DATA_QUALITY_MISSING
        prices[missing] = np.nan
    return prices


def run_forecast(request: worker_pb2.ForecastRequest) -> worker_pb2.ForecastResult:
    """Adapter of the module's current version (v2): a ForecastRequest in, its ForecastResult out ($/MWh or $/MW/h,
    row-major h x q). Raises InvalidRequestError naming the problem for malformed requests."""
    return _run_version(request, VERSION)


def run_forecast_v3(request: worker_pb2.ForecastRequest) -> worker_pb2.ForecastResult:
    """Adapter of v3: v2 plus the request's P5MIN run over its hour (see the module docstring)."""
    return _run_version(request, "3")


def run_forecast_v4(request: worker_pb2.ForecastRequest) -> worker_pb2.ForecastResult:
    """Adapter of v4: v2 with the ENERGY path held towards the last known price over the first hours where
    no pre-dispatch price covers the interval (τ = ENERGY_PERSISTENCE_SCALE_V4 intervals; elsewhere and for
    FCAS as v2; see the module docstring). $/MWh or $/MW/h, row-major h x q."""
    return _run_version(request, "4")


def run_forecast_v5(request: worker_pb2.ForecastRequest) -> worker_pb2.ForecastResult:
    """Adapter of v5: v4 with the short-history guard (:data:`SHORT_HISTORY_GUARD_V5`; see the module
    docstring): the model fitted from the first known price and, below three days of usable history, mixed with
    seasonal naive. $/MWh or $/MW/h, row-major h x q."""
    return _run_version(request, "5")


def run_forecast_v6(request: worker_pb2.ForecastRequest) -> worker_pb2.ForecastResult:
    """Adapter of v6: v4 with a history longer than its recent week (a snapshot that reached back past a gap of
    days) forecast as the mixture of the week's model and the whole history's (:data:`REACH_BLEND_V6`; see the
    module docstring). $/MWh or $/MW/h, row-major h x q."""
    return _run_version(request, "6")


def run_forecast_v1(request: worker_pb2.ForecastRequest) -> worker_pb2.ForecastResult:
    """Adapter of v1 (no persistence), kept so archived cycles and backtests can be replayed with it."""
    return _run_version(request, "1")


def _run_version(request: worker_pb2.ForecastRequest, version: str) -> worker_pb2.ForecastResult:
    if request.algorithm.name and (request.algorithm.name, request.algorithm.version) != (NAME, version):
        raise InvalidRequestError(
            f"algorithm {request.algorithm.name} v{request.algorithm.version} is not {NAME} v{version}"
        )
    if not request.product:
        raise InvalidRequestError("product is empty")
    if not request.HasField("first_interval"):
        raise InvalidRequestError("first_interval is not set")
    if not 0 < request.horizon_intervals <= MAX_HORIZON_INTERVALS:
        raise InvalidRequestError(
            f"horizon_intervals must be in 1..{MAX_HORIZON_INTERVALS}, got {request.horizon_intervals}"
        )
    _check_quantile_levels(request.quantiles)
    history = request.history
    if history.product and history.product != request.product:
        raise InvalidRequestError(f"history is for {history.product!r}, the request for {request.product!r}")
    predispatch = request.predispatch
    if predispatch.product and predispatch.product != request.product:
        raise InvalidRequestError(
            f"predispatch is for {predispatch.product!r}, the request for {request.product!r}"
        )
    if len(predispatch.period) != len(predispatch.price):
        raise InvalidRequestError(
            f"predispatch has {len(predispatch.period)} periods but {len(predispatch.price)} prices"
        )
    history_prices = _history_prices(history)
    if history_prices.size and not history.HasField("first_interval"):
        raise InvalidRequestError("history has prices but no first_interval")
    first_interval = from_timestamp(request.first_interval)
    history_first = first_interval
    if history.HasField("first_interval"):
        history_first = from_timestamp(history.first_interval)
    blend = ENERGY_PREDISPATCH_BLEND if request.product == ENERGY else FCAS_PREDISPATCH_BLEND
    persistence = PERSISTENCE_BY_VERSION[version].scale_for(request.product)
    unforecast_persistence = PERSISTENCE_BY_VERSION[version].unforecast_scale_for(request.product)
    p5min = _p5min_run(request) if USES_P5MIN_BY_VERSION[version] else None
    price = quantile_price_forecast(
        history_prices,
        history_first,
        market_times_of(predispatch.period),
        np.array(predispatch.price, dtype=np.float64),
        first_interval,
        request.horizon_intervals,
        list(request.quantiles),
        predispatch_blend=blend,
        persistence_lead_scale_intervals=persistence,
        unforecast_persistence_lead_scale_intervals=unforecast_persistence,
        p5min=p5min,
        p5min_blend=ENERGY_P5MIN_BLEND if request.product == ENERGY else FCAS_P5MIN_BLEND,
        short_history_guard=SHORT_HISTORY_GUARD_BY_VERSION[version],
        reach_blend=REACH_BLEND_BY_VERSION[version],
    )
    return worker_pb2.ForecastResult(
        request_id=request.request_id,
        algorithm=request.algorithm if request.algorithm.name else common_pb2.AlgorithmRef(name=NAME, version=version),
        inputs_hash=request.inputs_hash,
        product=request.product,
        first_interval=request.first_interval,
        horizon_intervals=request.horizon_intervals,
        quantiles=list(request.quantiles),
        price=price.ravel().tolist(),
        status=worker_pb2.RESULT_STATUS_OK,
    )


def _p5min_run(request: worker_pb2.ForecastRequest) -> P5minRun | None:
    """The request's P5MIN run (None when it carries none); InvalidRequestError if it is malformed."""
    if not request.HasField("p5min"):
        return None
    p5min = request.p5min
    if p5min.product and p5min.product != request.product:
        raise InvalidRequestError(f"p5min is for {p5min.product!r}, the request for {request.product!r}")
    if len(p5min.interval) != len(p5min.price):
        raise InvalidRequestError(f"p5min has {len(p5min.interval)} intervals but {len(p5min.price)} prices")
    if not len(p5min.interval):
        return None
    if not p5min.HasField("run_time"):
        raise InvalidRequestError("p5min has intervals but no run_time")
    return P5minRun(run_time=from_timestamp(p5min.run_time),
                    intervals=[from_timestamp(moment) for moment in p5min.interval],
                    price=np.array(p5min.price, dtype=np.float64))


def forecast_from_result(result: worker_pb2.ForecastResult) -> PriceForecast:
    """The PriceForecast of a ForecastResult (raises InvalidRequestError if its array is malformed)."""
    levels = np.array(result.quantiles, dtype=np.float64)
    expected = result.horizon_intervals * levels.size
    if levels.size == 0 or len(result.price) != expected:
        raise InvalidRequestError(
            f"forecast for {result.product!r} has {len(result.price)} prices; expected "
            f"{result.horizon_intervals} intervals x {levels.size} quantiles = {expected}"
        )
    price = np.array(result.price, dtype=np.float64).reshape(result.horizon_intervals, levels.size)
    return PriceForecast(
        product=result.product,
        first_interval=from_timestamp(result.first_interval),
        quantiles=levels,
        price=price,
    )


def forecasts_to_dataset(forecasts: Sequence[PriceForecast]) -> xr.Dataset:
    """One xarray Dataset of several products' forecasts: variable ``price`` on
    (interval, product, quantile); ``interval`` holds interval-ending AEST times.

    All forecasts must share first interval, horizon and quantile levels (InvalidRequestError otherwise).
    """
    if not forecasts:
        raise InvalidRequestError("no forecasts to combine")
    first = forecasts[0]
    products = [f.product for f in forecasts]
    if len(set(products)) != len(products):
        raise InvalidRequestError(f"duplicate products among forecasts: {products}")
    for forecast in forecasts[1:]:
        same_span = (forecast.first_interval, forecast.horizon_intervals) == (
            first.first_interval, first.horizon_intervals
        )
        if not same_span:
            raise InvalidRequestError(
                f"forecast for {forecast.product!r} covers {forecast.horizon_intervals} intervals from "
                f"{forecast.first_interval}, {first.product!r} {first.horizon_intervals} "
                f"from {first.first_interval}"
            )
        if not np.array_equal(forecast.quantiles, first.quantiles):
            raise InvalidRequestError(
                f"forecast for {forecast.product!r} has quantiles {forecast.quantiles.tolist()}, "
                f"{first.product!r} {first.quantiles.tolist()}"
            )
    interval = np.array(
        [np.datetime64(first.first_interval + INTERVAL * i, "ns") for i in range(first.horizon_intervals)]
    )
    price = np.stack([f.price for f in forecasts], axis=1)
    return xr.Dataset(
        {"price": (("interval", "product", "quantile"), price)},
        coords={"interval": interval, "product": products, "quantile": first.quantiles},
    )


def quantile_at(forecast: PriceForecast, level: float) -> FloatArray:
    """Price path ($/MWh or $/MW/h) at quantile ``level``, linear between the forecast's levels.

    Raises InvalidRequestError when ``level`` lies outside the forecast's lowest..highest level.
    """
    levels = forecast.quantiles
    if not math.isfinite(level) or level < levels[0] - 1e-12 or level > levels[-1] + 1e-12:
        raise InvalidRequestError(
            f"quantile {level} is outside the forecast's levels {levels[0]}..{levels[-1]} "
            f"for {forecast.product!r}"
        )
    if levels.size == 1:
        return np.asarray(forecast.price[:, 0], dtype=np.float64).copy()
    upper = int(np.clip(np.searchsorted(levels, level, side="left"), 1, levels.size - 1))
    lower = upper - 1
    fraction = float(np.clip((level - levels[lower]) / (levels[upper] - levels[lower]), 0.0, 1.0))
    path = (1 - fraction) * forecast.price[:, lower] + fraction * forecast.price[:, upper]
    return np.asarray(path, dtype=np.float64)


def pinball_loss(actual: np.ndarray, forecast_quantiles: np.ndarray, quantiles: Sequence[float]) -> float:
    """Mean pinball (quantile) loss over intervals and levels, in the price's unit ($/MWh or $/MW/h).

    ``actual`` has shape (h,), ``forecast_quantiles`` (h, q), ``quantiles`` the q levels. For an error
    ``u = actual - forecast`` at level ``tau`` the loss is ``max(tau * u, (tau - 1) * u)``. Raises
    ValueError on mismatched shapes or non-finite values.
    """
    observed = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(forecast_quantiles, dtype=np.float64)
    levels = np.asarray(quantiles, dtype=np.float64)
    if observed.ndim != 1 or predicted.shape != (observed.size, levels.size):
        raise ValueError(
            f"shapes do not match: actual {observed.shape}, forecast {predicted.shape}, "
            f"{levels.size} quantiles"
        )
    if not (np.all(np.isfinite(observed)) and np.all(np.isfinite(predicted))):
        raise ValueError("pinball_loss needs finite actuals and forecasts")
    error = observed[:, None] - predicted
    loss = np.maximum(levels * error, (levels - 1) * error)
    return float(loss.mean())
