"""Peak shaving of a node's load (feeder, substation, region): sample, forecast, find peaks, plan shaves.

**What is shaved.** A node's *net load* is its sites' household consumption less their rooftop PV,
**before** batteries (``net_load_mw = load − PV``): what the node's network would carry if the batteries
stood idle. Battery power is deliberately left out of the recorded history: the history would otherwise
carry every past shave (and the batteries' self-consumption), and a forecast trained on shaved evenings
would learn that there is no evening peak to shave. A dispatch event's target is the node's total
battery power (+ discharge), so a shave of ``T`` MW over a window lowers the node's demand there to
``forecast − T``.

**Resolution.** The history (table ``node_load_history``) and the forecast are on a **5-minute** grid
(:data:`INTERVAL_MS`), intervals named by their end (epoch ms UTC). 5 minutes is the NEM dispatch
interval, the step the rest of the platform plans in, and fine enough to place a dispatch event's start
and end; 28 days of history are 8,064 rows per node, which the forecast fits in well under a second.

**Sampling** (:func:`node_load_figures`). In production a sampler turns the fleet gateway's live state
(latest reading per site) into one history row per node and interval: the sums over the node's
*reporting* sites (fresh readings) of consumption, PV and battery power, scaled up by
``expected / reporting`` (the silent sites are assumed to behave like the reporting ones, as in
:mod:`algorithms.fleet.aggregate`), with the number of reporting sites kept alongside.

**Forecast** (:func:`forecast_node_load`): harmonic regression on the Adelaide clock (where people
live by the clock: the same time base as the household load model), fitted with statsmodels.

- *Mean*: OLS of the load on, separately for weekdays and weekends, an intercept and
  :data:`MEAN_HARMONICS` daily harmonics (sin/cos of 1…K cycles per day of the local clock hour at the
  interval's midpoint).
- *Median and quantiles*: statsmodels QuantReg of the OLS residuals on an intercept and
  :data:`SPREAD_HARMONICS` daily harmonics, one fit per quantile, so the band follows the time of day
  (wide at midday where clouds move the PV, narrow at night). The median offset matters: cloudy days pull
  the mean of the net load up at midday, the median stays with the typical (clear) day. Quantiles are
  sorted so they never cross.

Chosen by measured skill against the seasonal-naive forecast (yesterday, same time; the standard
baseline) on synthetic history (:mod:`simulator.load_history`, sites of ``simulator.population
.make_site_parameters(n, 7)``, history seeds 1 and 2): 28 days of training from 2024-01-01 (Adelaide),
then 24-hour forecasts issued at 12:00 on each of the 7 following days; MAE of the median, over all
288 intervals and over the evening 16:00–22:00 (MW):

==========================  =============  ==============  ================  ==============
series, sites               this model     seasonal naive  this, evening     naive, evening
==========================  =============  ==============  ================  ==============
net load, 100 (feeder)      0.023          0.035           0.0123–0.0128     0.0169–0.0188
net load, 1,000             0.208–0.209    0.316–0.317     0.113–0.114       0.154–0.155
load, 100                   0.0016–0.0018  0.0051–0.0055   0.0028–0.0034     0.0057–0.0072
load, 1,000                 0.0052–0.0054  0.039–0.040     0.0088–0.0094     0.039
==========================  =============  ==============  ================  ==============

The P10–P90 band held 73–81 % of the outcomes (80 % nominal). Two variants were measured and dropped:
an AR(1) of the residuals at 5-minute lag (φ ≈ 0.998 on net load, because a cloudy day is cloudy all
day) carried a noon PV residual into the evening and made the evening error six times larger (0.071 vs 0.012 MW,
feeder); a persistence conditioned on the time of day of the origin lowered the all-day error by about
13 % but raised the evening error above the seasonal naive's, and the evening is what peak shaving
needs. ``tests/test_peak_shaving.py::test_forecast_beats_seasonal_naive_on_synthetic_history`` repeats
the feeder comparison (``-s`` prints the figures). A fit of 28 days (8,064 intervals) and a 288-interval
forecast take 0.2–0.6 s on this machine (2 shared cores); a plan takes about 0.4 ms.

**Planning** (:func:`find_peaks`, :func:`plan_peak_shaving`). A *peak* is a run of intervals where the
chosen forecast quantile (P50 by default; P90 for a cautious plan) is above the threshold, short dips
(``merge_gap_s``) bridged, at least ``min_duration_s`` long and with at least ``min_energy_above_mwh``
above the threshold. Peaks are ranked by energy above the threshold and accepted greedily while the
fleet's energy lasts and at most ``max_shaves``. A dispatch event holds one constant target, so a shave
is a block: its target is the peak's height above the ceiling, over the window where the forecast is
above the ceiling. The ceiling is the threshold when the fleet can afford it; otherwise it is raised just
enough that the block fits the fleet's power (``max_discharge_mw``) and the remaining energy budget (a
partial shave of the peak's core). The energy budget is ``energy_use_fraction`` of the energy available
to discharge; recharge between shaves is not counted (a conservative plan).

**No rebound: the lockout rule.** Every shave is followed by a *lockout* of ``lockout_s`` (2 h by
default) in which the plan holds the node's batteries at **0 MW net** (a dispatch event with target 0:
they neither charge nor discharge). After a shave the batteries are emptier than usual; left to
themselves (self-consumption, time-of-use charging) hundreds of them start recharging the moment the
event ends, while the evening load is still high, and the node sees a *rebound peak* right after the
shaved one — sometimes higher than the peak that was shaved. Holding them idle lets the evening load
fall first. A peak whose window (or whose own lockout) would overlap another accepted shave or its
lockout is not planned: shaves and lockouts never overlap.

Everything is vectorised over intervals (numpy); only the handful of peak candidates is looped over.
statsmodels and pandas are imported inside the forecast functions: the fleet gateway (sampling) and the
planning activity use this module without them. The types that cross the workflow boundary (rules, planned
shaves, a plan's figures) live in :mod:`algorithms.fleet.peak_shaving_types`, which imports no numpy, so the
``PeakShaving`` workflow stays import-light: it orchestrates, the activities forecast and plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from algorithms.fleet.fleet_types import NEVER, FleetState, FloatArray, IntArray
from algorithms.fleet.peak_shaving_types import DEFAULT_QUANTILES as DEFAULT_QUANTILES
from algorithms.fleet.peak_shaving_types import LOAD_COLUMNS as LOAD_COLUMNS
from algorithms.fleet.peak_shaving_types import InsufficientHistoryError as InsufficientHistoryError
from algorithms.fleet.peak_shaving_types import PeakShavingInputError as PeakShavingInputError
from algorithms.fleet.peak_shaving_types import PeakShavingRules as PeakShavingRules
from algorithms.fleet.peak_shaving_types import PlannedPeakShaving as PlannedPeakShaving
from algorithms.fleet.peak_shaving_types import PlannedShave as PlannedShave

INTERVAL_MS = 300_000
"""Resolution of the node load history and of the forecast: 5 minutes (ms)."""
MS_PER_HOUR = 3_600_000.0
LOCAL_TIME_ZONE = "Australia/Adelaide"
"""Clock of the forecast's daily and weekly pattern (the household load model's clock)."""
MEAN_HARMONICS = 10
"""Daily harmonics per day type of the mean model (the evening peak is sharp: it needs about ten)."""
SPREAD_HARMONICS = 3
"""Daily harmonics of the quantile regressions of the residuals."""
MIN_HISTORY_DAYS = 2.0
"""Least history (days of valid values) the forecast accepts: one weekday and one weekend day at best."""


# ---------------------------------------------------------------------------------------------------
# History and sampling


@dataclass(frozen=True)
class NodeLoadHistory:
    """Load history of one node, one row per interval, intervals named by their end.

    Attributes:
        node_id: the asset-graph node.
        interval_end_ms: interval ends (epoch ms UTC), strictly increasing.
        load_mw: household consumption of the node's sites (MW, ≥ 0).
        net_load_mw: consumption less rooftop PV, before batteries (MW; negative when PV exceeds load).
        sites_reporting: sites whose readings the interval's figures come from.
    """

    node_id: str
    interval_end_ms: IntArray
    load_mw: FloatArray
    net_load_mw: FloatArray
    sites_reporting: IntArray

    def __post_init__(self) -> None:
        length = len(self.interval_end_ms)
        for name in ("load_mw", "net_load_mw", "sites_reporting"):
            if np.shape(getattr(self, name)) != (length,):
                raise PeakShavingInputError(
                    f"NodeLoadHistory.{name} has shape {np.shape(getattr(self, name))}, expected ({length},)")
        if length > 1 and not bool(np.all(np.diff(self.interval_end_ms) > 0)):
            raise PeakShavingInputError("NodeLoadHistory.interval_end_ms must be strictly increasing")

    @property
    def interval_count(self) -> int:
        """Number of intervals."""
        return len(self.interval_end_ms)

    def series(self, column: str) -> FloatArray:
        """``load_mw`` or ``net_load_mw`` by name."""
        if column not in LOAD_COLUMNS:
            raise PeakShavingInputError(f"unknown load column {column!r}; expected one of {LOAD_COLUMNS}")
        values: FloatArray = getattr(self, column)
        return values


@dataclass(frozen=True)
class NodeLoadFigures:
    """One node's load at one moment from the fleet's latest readings (MW, counts).

    ``net_load_mw`` = load − PV (before batteries, what the history records); ``grid_import_mw`` =
    load − PV − battery (what the node's meters see, + import). Figures are NaN when no site reports.
    """

    load_mw: float
    pv_mw: float
    battery_mw: float
    net_load_mw: float
    grid_import_mw: float
    sites_reporting: int
    expected_sites: int


def node_load_figures(state: FleetState, site_rows: IntArray, now_ms: int,
                      stale_after_ms: int = 30_000) -> NodeLoadFigures:
    """The node's load figures from the latest reading of each of its sites (rows of ``state``).

    Sums consumption, PV and battery power (kW) over the sites with a fresh reading (no older than
    ``stale_after_ms`` at ``now_ms``), scales them by ``expected / reporting`` and converts to MW.

    Args:
        state: the fleet's latest reading per site.
        site_rows: rows of the node's sites in ``state`` (unique; e.g. from ``site_positions``).
        now_ms: the sampling time (epoch ms UTC).
        stale_after_ms: freshness limit (ms, > 0).
    """
    rows = np.asarray(site_rows, dtype=np.int64)
    site_count = len(state.measured_at_ms)
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= site_count)):
        raise PeakShavingInputError(f"site_rows must be a 1-d array of rows in 0..{site_count - 1}")
    if stale_after_ms <= 0:
        raise PeakShavingInputError(f"stale_after_ms must be > 0, got {stale_after_ms}")
    measured_at = state.measured_at_ms[rows]
    fresh = (measured_at != NEVER) & (now_ms - measured_at <= stale_after_ms)
    reporting = int(np.count_nonzero(fresh))
    scale = len(rows) / reporting / 1000.0 if reporting else float("nan")
    load, pv, battery = (float(np.nansum(np.where(fresh, values[rows], 0.0))) * scale
                         for values in (state.load_power_kw, state.pv_power_kw, state.battery_power_kw))
    return NodeLoadFigures(load_mw=load, pv_mw=pv, battery_mw=battery, net_load_mw=load - pv,
                           grid_import_mw=load - pv - battery, sites_reporting=reporting,
                           expected_sites=len(rows))


def regular_series(interval_end_ms: IntArray, values_mw: FloatArray, first_end_ms: int, last_end_ms: int,
                   interval_ms: int = INTERVAL_MS) -> tuple[IntArray, FloatArray]:
    """The values on the regular grid ``first_end_ms, first_end_ms + interval_ms, …, last_end_ms``;
    intervals with no row (a gap in the history) are NaN, rows off the grid are dropped."""
    if interval_ms <= 0 or last_end_ms < first_end_ms or (last_end_ms - first_end_ms) % interval_ms:
        raise PeakShavingInputError(
            f"the grid {first_end_ms}..{last_end_ms} is not a whole number of {interval_ms} ms intervals")
    grid = np.arange(first_end_ms, last_end_ms + 1, interval_ms, dtype=np.int64)
    out = np.full(len(grid), np.nan)
    ends = np.asarray(interval_end_ms, dtype=np.int64)
    offset = ends - first_end_ms
    on_grid = (offset >= 0) & (ends <= last_end_ms) & (offset % interval_ms == 0)
    out[offset[on_grid] // interval_ms] = np.asarray(values_mw, dtype=np.float64)[on_grid]
    return grid, out


# ---------------------------------------------------------------------------------------------------
# Forecast


@dataclass(frozen=True)
class LoadForecast:
    """Quantile forecast of a node's load on a regular grid.

    Attributes:
        interval_end_ms: ends of the forecast intervals (epoch ms UTC), regular.
        interval_ms: the grid step (ms).
        quantiles: the probability levels, ascending.
        values_mw: shape ``(len(quantiles), len(interval_end_ms))`` (MW), non-decreasing down axis 0.
        method: a name of the model that made it.
    """

    interval_end_ms: IntArray
    interval_ms: int
    quantiles: tuple[float, ...]
    values_mw: FloatArray
    method: str

    def __post_init__(self) -> None:
        expected = (len(self.quantiles), len(self.interval_end_ms))
        if self.values_mw.shape != expected:
            raise PeakShavingInputError(f"LoadForecast.values_mw has shape {self.values_mw.shape}, expected {expected}")

    def quantile(self, level: float) -> FloatArray:
        """The forecast at probability ``level`` (one of :attr:`quantiles`, MW)."""
        matches = [index for index, q in enumerate(self.quantiles) if abs(q - level) < 1e-9]
        if not matches:
            raise PeakShavingInputError(f"quantile {level} is not in the forecast's {self.quantiles}")
        row: FloatArray = self.values_mw[matches[0]]
        return row


def _check_history(history_mw: FloatArray, interval_end_ms: IntArray) -> tuple[FloatArray, IntArray, int]:
    values = np.asarray(history_mw, dtype=np.float64)
    ends = np.asarray(interval_end_ms, dtype=np.int64)
    if values.ndim != 1 or values.shape != ends.shape:
        raise PeakShavingInputError(
            f"history_mw {values.shape} and interval_end_ms {ends.shape} must be 1-d and aligned")
    if len(ends) < 2:
        raise InsufficientHistoryError("the forecast needs at least two intervals of history")
    steps = np.diff(ends)
    step = int(steps[0])
    if step <= 0 or not bool(np.all(steps == step)):
        raise PeakShavingInputError("interval_end_ms must be a regular, increasing grid (gaps as NaN values)")
    if bool(np.any(np.isinf(values))):
        raise PeakShavingInputError("history_mw holds infinite values")
    valid_days = np.count_nonzero(~np.isnan(values)) * step / (24 * MS_PER_HOUR)
    if valid_days < MIN_HISTORY_DAYS:
        raise InsufficientHistoryError(
            f"the forecast needs at least {MIN_HISTORY_DAYS:g} days of valid history, got {valid_days:.2f}")
    return values, ends, step


def _local_clock(epoch_ms: IntArray) -> tuple[FloatArray, FloatArray]:
    """(local clock hour 0–24, weekend 0/1) at each time, Adelaide clock with daylight saving."""
    import pandas as pd  # imported here: sampling and planning use this module without pandas
    local = pd.to_datetime(np.asarray(epoch_ms, dtype=np.int64), unit="ms", utc=True).tz_convert(LOCAL_TIME_ZONE)
    hour = np.asarray(local.hour + local.minute / 60.0 + local.second / 3600.0, dtype=np.float64)
    weekend = np.asarray(local.day_of_week >= 5, dtype=np.float64)
    return hour, weekend


def _harmonics(hour: FloatArray, count: int) -> FloatArray:
    """Columns [1, sin(2πkh/24), cos(2πkh/24) for k = 1..count] (T × (1 + 2·count))."""
    angle = 2.0 * np.pi * hour[:, None] * np.arange(1, count + 1)[None, :] / 24.0
    return np.hstack([np.ones((len(hour), 1)), np.sin(angle), np.cos(angle)])


def mean_design(midpoint_ms: IntArray, harmonics: int = MEAN_HARMONICS) -> FloatArray:
    """Design of the mean model: the daily harmonics, one block for weekdays and one for weekends."""
    hour, weekend = _local_clock(midpoint_ms)
    base = _harmonics(hour, harmonics)
    return np.hstack([base * (1.0 - weekend)[:, None], base * weekend[:, None]])


def _quantile_offsets(residuals: FloatArray, history_hours: FloatArray, future_hours: FloatArray,
                      quantiles: tuple[float, ...]) -> FloatArray:
    """Residual quantiles by time of day (QuantReg on daily harmonics), shape (Q, horizon)."""
    import statsmodels.api as sm

    design = _harmonics(history_hours, SPREAD_HARMONICS)
    future = _harmonics(future_hours, SPREAD_HARMONICS)
    offsets = np.empty((len(quantiles), len(future_hours)))
    for index, level in enumerate(quantiles):
        fit = sm.QuantReg(residuals, design).fit(q=level, max_iter=2000)
        offsets[index] = future @ np.asarray(fit.params, dtype=np.float64)
    return offsets


def forecast_node_load(history_mw: FloatArray, interval_end_ms: IntArray, horizon_intervals: int,
                       quantiles: tuple[float, ...] = DEFAULT_QUANTILES) -> LoadForecast:
    """Quantile forecast of a node's load for the ``horizon_intervals`` intervals after the history.

    Model: see the module docstring (harmonic regression by day type on the Adelaide clock with
    statsmodels OLS; median and quantiles from QuantReg of the residuals by time of day).

    Args:
        history_mw: the node's load (MW) on a regular grid, NaN where no value was recorded.
        interval_end_ms: the grid (interval ends, epoch ms UTC, regular step).
        horizon_intervals: how many intervals to forecast (≥ 1), from the last history interval on.
        quantiles: probability levels (each in (0, 1)); returned ascending.

    Returns:
        :class:`LoadForecast` (MW) for the intervals ending ``last + step`` … ``last + horizon × step``.

    Raises:
        PeakShavingInputError: misaligned or irregular input, bad horizon or quantiles.
        InsufficientHistoryError: fewer than :data:`MIN_HISTORY_DAYS` days of valid values.
    """
    import statsmodels.api as sm

    values, ends, step = _check_history(history_mw, interval_end_ms)
    levels = _check_quantiles(quantiles)
    if horizon_intervals < 1:
        raise PeakShavingInputError(f"horizon_intervals must be >= 1, got {horizon_intervals}")
    future_ends = ends[-1] + step * np.arange(1, horizon_intervals + 1, dtype=np.int64)
    history_design = mean_design(ends - step // 2)
    future_design = mean_design(future_ends - step // 2)
    valid = ~np.isnan(values)
    fit = sm.OLS(values[valid], history_design[valid]).fit()
    coefficients = np.asarray(fit.params, dtype=np.float64)
    residuals = np.full(len(values), np.nan)
    residuals[valid] = values[valid] - history_design[valid] @ coefficients
    central = future_design @ coefficients
    history_hours, _ = _local_clock(ends[valid] - step // 2)
    future_hours, _ = _local_clock(future_ends - step // 2)
    offsets = _quantile_offsets(residuals[valid], history_hours, future_hours, levels)
    return LoadForecast(interval_end_ms=future_ends, interval_ms=step, quantiles=levels,
                        values_mw=np.sort(central[None, :] + offsets, axis=0),
                        method=f"harmonic-ols-k{MEAN_HARMONICS}+quantreg-k{SPREAD_HARMONICS}")


def seasonal_naive_forecast(history_mw: FloatArray, interval_end_ms: IntArray, horizon_intervals: int,
                            season_ms: int = 86_400_000) -> LoadForecast:
    """The baseline: each interval's value one season (default one day) earlier, repeated for longer
    horizons (MW; a single "quantile" 0.5). NaN history stays NaN."""
    values, ends, step = _check_history(history_mw, interval_end_ms)
    if horizon_intervals < 1 or season_ms % step:
        raise PeakShavingInputError("horizon_intervals must be >= 1 and the season a whole number of intervals")
    period = season_ms // step
    if len(values) < period:
        raise InsufficientHistoryError(f"a seasonal-naive forecast needs one season ({period} intervals) of history")
    last_season = values[-period:]
    central = last_season[np.arange(horizon_intervals) % period]
    future_ends = ends[-1] + step * np.arange(1, horizon_intervals + 1, dtype=np.int64)
    return LoadForecast(interval_end_ms=future_ends, interval_ms=step, quantiles=(0.5,),
                        values_mw=central[None, :].astype(np.float64), method=f"seasonal-naive-{season_ms}ms")


def _check_quantiles(quantiles: tuple[float, ...]) -> tuple[float, ...]:
    levels = tuple(sorted(float(q) for q in quantiles))
    if not levels or any(not 0.0 < q < 1.0 for q in levels) or len(set(levels)) != len(levels):
        raise PeakShavingInputError(f"quantiles must be distinct levels in (0, 1), got {quantiles}")
    return levels


# ---------------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class PeakCandidate:
    """A run of forecast intervals above the threshold (indices inclusive, times epoch ms, MW, MWh)."""

    first_index: int
    last_index: int
    start_ms: int
    end_ms: int
    peak_forecast_mw: float
    peak_excess_mw: float
    energy_above_threshold_mwh: float


def _runs(mask: np.ndarray[Any, np.dtype[np.bool_]]) -> tuple[IntArray, IntArray]:
    """(first, last) indices (inclusive) of the runs of True in ``mask``."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    change = np.diff(padded)
    return np.flatnonzero(change == 1).astype(np.int64), (np.flatnonzero(change == -1) - 1).astype(np.int64)


def find_peaks(forecast: LoadForecast, threshold_mw: float, rules: PeakShavingRules) -> list[PeakCandidate]:
    """The peaks worth shaving, ranked by energy above the threshold (largest first).

    A peak is a run of intervals with the forecast (at ``rules.quantile``) above ``threshold_mw``;
    runs separated by no more than ``rules.merge_gap_s`` are merged; a peak must last at least
    ``rules.min_duration_s`` and hold at least ``rules.min_energy_above_mwh`` above the threshold.
    """
    threshold_mw = float(threshold_mw)
    if not np.isfinite(threshold_mw):
        raise PeakShavingInputError(f"threshold_mw must be finite, got {threshold_mw}")
    load = forecast.quantile(rules.quantile)
    excess = load - threshold_mw
    firsts, lasts = _runs(np.nan_to_num(excess, nan=-np.inf) > 0)
    if len(firsts) == 0:
        return []
    step = forecast.interval_ms
    gap_intervals = firsts[1:] - lasts[:-1] - 1
    merge = gap_intervals * step <= rules.merge_gap_s * 1000
    group_first = firsts[np.concatenate([[True], ~merge])]
    group_last = lasts[np.concatenate([~merge, [True]])]
    positive = np.clip(np.nan_to_num(excess, nan=0.0), 0.0, None)
    cumulative = np.concatenate([[0.0], np.cumsum(positive)])
    energy = (cumulative[group_last + 1] - cumulative[group_first]) * step / MS_PER_HOUR
    duration_ms = (group_last - group_first + 1) * step
    keep = (duration_ms >= rules.min_duration_s * 1000) & (energy >= rules.min_energy_above_mwh)
    candidates = []
    for first, last, above in zip(group_first[keep].tolist(), group_last[keep].tolist(), energy[keep].tolist(),
                                  strict=True):
        window = load[first:last + 1]
        candidates.append(PeakCandidate(
            first_index=first, last_index=last, start_ms=int(forecast.interval_end_ms[first]) - step,
            end_ms=int(forecast.interval_end_ms[last]), peak_forecast_mw=float(np.nanmax(window)),
            peak_excess_mw=float(np.nanmax(window)) - threshold_mw, energy_above_threshold_mwh=float(above)))
    return sorted(candidates, key=lambda candidate: (-candidate.energy_above_threshold_mwh, candidate.start_ms))


def _size_block(excess: FloatArray, step_ms: int, power_mw: float, energy_mwh: float
                ) -> tuple[int, int, float, float] | None:
    """(first, last, target MW, ceiling offset MW) of the deepest constant block that fits the power and
    energy, within a peak's excess profile (MW above the threshold); None if nothing fits.

    For a ceiling offset ``c`` the block covers the hull of the intervals with excess > c and asks
    ``peak − c``. Between two consecutive excess values the hull is fixed and the block's energy falls
    linearly in ``c``, so the smallest feasible ``c`` is found exactly, for all hulls at once. Where the
    hull shrinks by whole intervals the energy jumps, so a block may use less than the budget, never more.
    """
    peak = float(np.nanmax(excess))
    levels = np.unique(np.concatenate([[0.0], excess[excess > 0]]))
    levels = levels[levels < peak]
    if len(levels) == 0 or power_mw <= 0 or energy_mwh <= 0:
        return None
    upper = np.append(levels[1:], peak)
    above = excess[None, :] > levels[:, None]
    first = np.argmax(above, axis=1)
    last = len(excess) - 1 - np.argmax(above[:, ::-1], axis=1)
    hours = (last - first + 1) * step_ms / MS_PER_HOUR
    offset = np.maximum.reduce([levels, np.full(len(levels), peak - power_mw), peak - energy_mwh / hours])
    feasible = np.flatnonzero(offset < upper)
    if len(feasible) == 0:
        return None
    chosen = int(feasible[0])
    return int(first[chosen]), int(last[chosen]), peak - float(offset[chosen]), float(offset[chosen])


def _overlaps(start_ms: int, end_ms: int, shaves: list[PlannedShave]) -> bool:
    return any(start_ms < shave.lockout_end_ms and shave.start_ms < end_ms for shave in shaves)


def plan_peak_shaving(forecast: LoadForecast, threshold_mw: float, energy_available_mwh: float,
                      max_discharge_mw: float, rules: PeakShavingRules | None = None) -> list[PlannedShave]:
    """The shaves to dispatch, in time order, each followed by its 0 MW lockout (see the module docstring).

    Args:
        forecast: the node's load forecast (MW) holding ``rules.quantile``.
        threshold_mw: the load the node should not exceed (MW).
        energy_available_mwh: energy the node's batteries can deliver above their owners' reserves (MWh,
            grid side; e.g. the aggregate's lower bound for a cautious plan).
        max_discharge_mw: the node's total battery discharge power (MW).
        rules: :class:`PeakShavingRules` (None: the defaults).

    Returns:
        Non-overlapping :class:`PlannedShave` s (shave + lockout windows never overlap), sorted by start;
        targets ≤ ``power_use_fraction × max_discharge_mw``, total energy ≤ ``energy_use_fraction ×
        energy_available_mwh``; empty when nothing is above the threshold.
    """
    rules = rules if rules is not None else PeakShavingRules()
    threshold_mw = float(threshold_mw)
    for name, value in (("energy_available_mwh", energy_available_mwh), ("max_discharge_mw", max_discharge_mw)):
        if not np.isfinite(value) or value < 0:
            raise PeakShavingInputError(f"{name} must be a finite number >= 0, got {value}")
    budget_mwh = energy_available_mwh * rules.energy_use_fraction
    power_mw = max_discharge_mw * rules.power_use_fraction
    load = forecast.quantile(rules.quantile)
    lockout_ms = round(rules.lockout_s * 1000)
    step = forecast.interval_ms
    shaves: list[PlannedShave] = []
    for candidate in find_peaks(forecast, threshold_mw, rules):
        if len(shaves) >= rules.max_shaves or budget_mwh <= 1e-12:
            break
        if _overlaps(candidate.start_ms, candidate.end_ms + lockout_ms, shaves):
            continue
        window = load[candidate.first_index:candidate.last_index + 1]
        block = _size_block(np.nan_to_num(window - threshold_mw, nan=0.0), step, power_mw, budget_mwh)
        if block is None:
            continue
        first, last, target, offset = block
        if target < rules.min_target_mw:
            continue
        start_ms = candidate.start_ms + first * step
        end_ms = candidate.start_ms + (last + 1) * step
        energy = target * (end_ms - start_ms) / MS_PER_HOUR
        budget_mwh -= energy
        shaves.append(PlannedShave(
            start_ms=start_ms, end_ms=end_ms, target_mw=target, peak_forecast_mw=candidate.peak_forecast_mw,
            ceiling_mw=threshold_mw + offset, energy_above_threshold_mwh=candidate.energy_above_threshold_mwh,
            planned_energy_mwh=energy, lockout_end_ms=end_ms + lockout_ms))
    return sorted(shaves, key=lambda shave: shave.start_ms)


def plan_node_peak_shaving(forecast: LoadForecast, threshold_mw: float, energy_lower_mwh: float,
                           max_discharge_mw: float, rules: PeakShavingRules) -> PlannedPeakShaving:
    """A node's peak-shaving plan with the figures it shows: :func:`plan_peak_shaving` on the energy the
    fleet surely holds, the peaks found above the threshold and the forecast's highest load.

    Args:
        forecast: the node's load forecast (MW) holding ``rules.quantile``.
        threshold_mw: the load the node should not exceed (MW).
        energy_lower_mwh: the lower bound of the energy the node's batteries hold above their owners'
            reserves (MWh; the aggregate's cautious figure). A negative bound counts as none.
        max_discharge_mw: the node's total battery discharge power (MW).
        rules: :class:`PeakShavingRules`.

    Returns:
        :class:`PlannedPeakShaving`: the shaves (see :func:`plan_peak_shaving`), the forecast method, the
        forecast peak at ``rules.quantile`` (MW), the peaks found and the energy budget (MWh).
    """
    energy_available_mwh = max(float(energy_lower_mwh), 0.0)
    shaves = plan_peak_shaving(forecast, threshold_mw, energy_available_mwh, max_discharge_mw, rules)
    load = forecast.quantile(rules.quantile)
    forecast_peak_mw = float(np.nanmax(load)) if bool(np.any(~np.isnan(load))) else math.nan
    return PlannedPeakShaving(
        shaves=tuple(shaves), forecast_method=forecast.method, forecast_peak_mw=forecast_peak_mw,
        peaks_found=len(find_peaks(forecast, threshold_mw, rules)),
        energy_budget_mwh=energy_available_mwh * rules.energy_use_fraction)
