"""The FCAS market depth a plan can expect: caps on enablement estimated as of the decision time.

The market model caps a unit's FCAS enablement, per interval and service, at ``share`` × the MW the region
actually enabled of it (DISPATCHREGIONSUM ``<service>LOCALDISPATCH``, :mod:`algorithms.market.depth`). Those
MW are only known after the fact; a plan made at decision time has to *expect* them. This module estimates
them from what was known then — the region's local dispatch of each service in the intervals ending at or
before ``as_of`` (never later: no look-ahead) — and the same ``share``:

* **time-of-day profile**: per 5-minute slot of the day, the mean local dispatch (MW) of the last
  ``lookback_days`` days within ± ``profile_window_intervals`` slots of it (circular over midnight); a slot
  with no known value in that window takes the mean of the whole look-back;
* **recent level**: the mean local dispatch (MW) of the last ``recent_intervals`` known intervals;
* the expected local dispatch of an interval ``j`` intervals after the first of the plan is
  ``w_j`` × the recent level + (1 − ``w_j``) × the profile of its slot, ``w_j = exp(−j / recent_decay_intervals)``;
* the expected cap (MW) is ``share`` × ``cap_factor`` × that.

A service with no known local dispatch in the look-back has no expected cap (it is left out: the plan is
a price-taker's for it); data without DISPATCHREGIONSUM gives no caps at all. Pure and vectorised: one pass
of ``np.bincount`` over the look-back, no per-interval Python.

The live cycle, the backtest and the archive replay expect the depth from the same input: the local dispatch
history the market snapshot carries (``MarketSnapshot.local_dispatch``, known at its as-of), through
:func:`snapshot_enablement_caps_mw` (the live cycle's optimisation activity and the backtest call it; the
archive replay replays the request it went into).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from algorithms.common.nem_time import from_timestamp
from algorithms.common.products import is_fcas
from algorithms.market.depth import check_share
from algorithms.market.prices import DispatchPrices
from vpp.v1 import market_data_pb2

FloatArray = npt.NDArray[np.float64]

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class DepthEstimatePolicy:
    """How the expected FCAS depth is estimated (see the module docstring). Intervals are of
    ``interval_minutes`` minutes; every count is in intervals except ``lookback_days``."""

    lookback_days: int = 7
    profile_window_intervals: int = 6
    recent_intervals: int = 12
    recent_decay_intervals: float = 12.0
    cap_factor: float = 1.0
    interval_minutes: int = 5

    def __post_init__(self) -> None:
        if self.lookback_days < 1:
            raise ValueError(f"lookback_days must be at least 1, got {self.lookback_days}")
        if self.interval_minutes < 1 or MINUTES_PER_DAY % self.interval_minutes:
            raise ValueError(f"interval_minutes must divide a day, got {self.interval_minutes}")
        slots = MINUTES_PER_DAY // self.interval_minutes
        if not 0 <= self.profile_window_intervals < slots // 2:
            raise ValueError(f"profile_window_intervals must be in [0, {slots // 2}), "
                             f"got {self.profile_window_intervals}")
        if self.recent_intervals < 1:
            raise ValueError(f"recent_intervals must be at least 1, got {self.recent_intervals}")
        if not (np.isfinite(self.recent_decay_intervals) and self.recent_decay_intervals > 0):
            raise ValueError(f"recent_decay_intervals must be positive, got {self.recent_decay_intervals}")
        if not (np.isfinite(self.cap_factor) and self.cap_factor > 0):
            raise ValueError(f"cap_factor must be positive, got {self.cap_factor}")

    @property
    def slots_per_day(self) -> int:
        """Intervals in a day (288 for 5-minute intervals)."""
        return MINUTES_PER_DAY // self.interval_minutes


def _slots(times: npt.NDArray[np.datetime64], interval_minutes: int) -> npt.NDArray[np.int64]:
    """Slot of the day (0 … slots − 1) of interval-ending times: minutes after midnight // interval."""
    minutes = times.astype("datetime64[m]").astype(np.int64)
    slots: npt.NDArray[np.int64] = (minutes % MINUTES_PER_DAY) // interval_minutes
    return slots


def _circular_window_sum(per_slot: FloatArray, half_width: int) -> FloatArray:
    """Sum over slots ``s − half_width … s + half_width`` (circular) of a (slots × columns) array."""
    if half_width == 0:
        return per_slot.copy()
    extended = np.concatenate([per_slot[-half_width:], per_slot, per_slot[:half_width]])
    cumulative = np.concatenate([np.zeros((1, per_slot.shape[1])), np.cumsum(extended, axis=0)])
    width = 2 * half_width + 1
    summed: FloatArray = cumulative[width:] - cumulative[:-width]
    return summed


def expected_local_dispatch_mw(history_intervals: npt.ArrayLike, history_enabled_mw: npt.ArrayLike,
                               as_of: datetime, plan_intervals: npt.ArrayLike,
                               policy: DepthEstimatePolicy = DepthEstimatePolicy()) -> FloatArray:
    """The region's expected local dispatch (MW) of each column of ``history_enabled_mw`` in each interval of
    ``plan_intervals`` (interval-ending AEST), from the intervals of ``history_intervals`` (sorted,
    interval-ending AEST) ending at or before ``as_of`` within the policy's look-back only.

    ``history_enabled_mw`` is (history intervals × services), MW, NaN unknown (negatives read as 0). Returns
    (plan intervals × services), MW; a service with no known value in the look-back is NaN throughout.
    """
    times = np.asarray(history_intervals, dtype="datetime64[s]")
    enabled = np.asarray(history_enabled_mw, dtype=np.float64)
    if enabled.ndim != 2 or enabled.shape[0] != times.shape[0]:
        raise ValueError(f"history_enabled_mw has shape {enabled.shape}, expected ({times.shape[0]}, services)")
    if times.size > 1 and not bool(np.all(np.diff(times) > np.timedelta64(0, "s"))):
        raise ValueError("history_intervals must be sorted and unique")
    plan = np.asarray(plan_intervals, dtype="datetime64[s]")
    services = enabled.shape[1]
    moment = np.datetime64(as_of, "s")
    end = int(np.searchsorted(times, moment, side="right"))
    start = int(np.searchsorted(times, moment - np.timedelta64(policy.lookback_days, "D"), side="right"))
    window = enabled[start:end]
    known = np.isfinite(window)
    values = np.where(known, np.maximum(np.where(known, window, 0.0), 0.0), 0.0)
    slots_per_day = policy.slots_per_day

    slot = _slots(times[start:end], policy.interval_minutes)
    flat = (slot[:, None] * services + np.arange(services)[None, :]).ravel()
    sums = np.asarray(np.bincount(flat, weights=values.ravel(), minlength=slots_per_day * services), dtype=np.float64)
    counts = np.asarray(np.bincount(flat, weights=known.ravel().astype(np.float64),
                                    minlength=slots_per_day * services), dtype=np.float64)
    window_sums = _circular_window_sum(sums.reshape(slots_per_day, services), policy.profile_window_intervals)
    window_counts = _circular_window_sum(counts.reshape(slots_per_day, services), policy.profile_window_intervals)
    total_counts = known.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        overall = np.where(total_counts > 0, values.sum(axis=0) / np.maximum(total_counts, 1), np.nan)
        profile = np.where(window_counts > 0, window_sums / np.maximum(window_counts, 1.0), overall[None, :])

    recent = values[-policy.recent_intervals:]
    recent_known = known[-policy.recent_intervals:]
    recent_counts = recent_known.sum(axis=0)
    recent_level = np.where(recent_counts > 0, recent.sum(axis=0) / np.maximum(recent_counts, 1), np.nan)

    plan_profile = profile[_slots(plan, policy.interval_minutes)]
    weight = np.exp(-np.arange(plan.size, dtype=np.float64) / policy.recent_decay_intervals)[:, None]
    blended = weight * recent_level[None, :] + (1.0 - weight) * plan_profile
    expected: FloatArray = np.where(np.isnan(recent_level)[None, :], plan_profile, blended)
    return expected


def expected_enablement_caps_mw(products: Sequence[str], history_intervals: npt.ArrayLike,
                                history_enabled_mw: npt.ArrayLike, as_of: datetime,
                                plan_intervals: npt.ArrayLike, share: float,
                                policy: DepthEstimatePolicy = DepthEstimatePolicy()) -> dict[str, FloatArray]:
    """FCAS product → the cap (MW) on the unit's enablement a plan can expect in each interval of
    ``plan_intervals`` (interval-ending AEST): ``share`` × ``policy.cap_factor`` × the region's expected local
    dispatch (:func:`expected_local_dispatch_mw`), known as of ``as_of`` only.

    ``history_enabled_mw`` is (history intervals × ``products``), MW, the region's local dispatch
    (DISPATCHREGIONSUM ``<product>LOCALDISPATCH``); ENERGY (never capped) and products with no known value
    in the look-back are left out (no cap: the plan is a price-taker's for them). Every array returned is
    finite and ≥ 0, one value per plan interval.
    """
    share = check_share(share)
    enabled = np.asarray(history_enabled_mw, dtype=np.float64)
    if enabled.ndim != 2 or enabled.shape[1] != len(products):
        raise ValueError(f"history_enabled_mw has shape {enabled.shape}, expected (intervals, {len(products)})")
    columns = [index for index, product in enumerate(products) if is_fcas(product)]
    expected = expected_local_dispatch_mw(history_intervals, enabled[:, columns], as_of, plan_intervals, policy)
    scale = share * policy.cap_factor
    return {products[column]: np.asarray(expected[:, position] * scale, dtype=np.float64)
            for position, column in enumerate(columns) if bool(np.all(np.isfinite(expected[:, position])))}


def plan_enablement_caps_mw(dispatch: DispatchPrices, region: str, as_of: datetime, first_interval: datetime,
                            horizon_intervals: int, share: float,
                            policy: DepthEstimatePolicy = DepthEstimatePolicy()) -> dict[str, FloatArray] | None:
    """The expected caps (MW, FCAS product → one value per interval) of a plan of ``horizon_intervals``
    intervals from the one ending ``first_interval`` (AEST), made at ``as_of`` (AEST), from the region's
    local dispatch in ``dispatch`` (DISPATCHREGIONSUM) known by then (:func:`expected_enablement_caps_mw`).
    None when the data has no DISPATCHREGIONSUM: the plan is then a price-taker's."""
    if dispatch.region_enabled_mw is None:
        return None
    step = np.timedelta64(policy.interval_minutes * 60, "s")
    plan = np.datetime64(first_interval, "s") + step * np.arange(horizon_intervals)
    return expected_enablement_caps_mw(dispatch.products, dispatch.intervals,
                                       dispatch.region_enabled_mw[dispatch.region_index(region)], as_of, plan,
                                       share, policy)


@dataclass(frozen=True)
class LocalDispatchHistory:
    """The region's FCAS local dispatch a snapshot carries, as arrays: ``products`` (FCAS, snapshot order),
    ``intervals`` (interval-ending AEST, datetime64[s], 5-minute steps) and ``enabled_mw`` (intervals ×
    products, MW; NaN where not known at the snapshot's as-of)."""

    products: tuple[str, ...]
    intervals: npt.NDArray[np.datetime64]
    enabled_mw: FloatArray


def depth_policy(plan_with_expected_depth: bool, planning_cap_factor: float,
                 interval_minutes: int = 5) -> DepthEstimatePolicy | None:
    """The expected-depth estimate of ``[market_depth]`` (``planning_cap_factor``, dimensionless; intervals of
    ``interval_minutes`` minutes), or None when the plan is not to expect the depth
    (``plan_with_expected_depth`` false: a price-taker's plan)."""
    if not plan_with_expected_depth:
        return None
    return DepthEstimatePolicy(cap_factor=planning_cap_factor, interval_minutes=interval_minutes)


def snapshot_local_dispatch(snapshot: market_data_pb2.MarketSnapshot,
                            interval_minutes: int = 5) -> LocalDispatchHistory | None:
    """The FCAS local dispatch (MW per ``interval_minutes`` interval, interval-ending AEST) ``snapshot``
    carries (``MarketSnapshot.local_dispatch``), or None when it carries none (data without
    DISPATCHREGIONSUM). ValueError when its histories disagree on their first interval or length, or one
    is not of an FCAS product."""
    histories = list(snapshot.local_dispatch)
    if not histories:
        return None
    first = histories[0]
    length = len(first.enabled_mw)
    for history in histories:
        if not is_fcas(history.product):
            raise ValueError(f"local dispatch history of {history.product!r}, not an FCAS product")
        if history.first_interval != first.first_interval or len(history.enabled_mw) != length:
            raise ValueError(f"local dispatch history of {history.product} does not cover the intervals of "
                             f"{first.product}'s ({len(history.enabled_mw)} values vs {length})")
    start = np.datetime64(from_timestamp(first.first_interval), "s")
    intervals = start + np.timedelta64(interval_minutes * 60, "s") * np.arange(length)
    enabled = np.column_stack([np.asarray(history.enabled_mw, dtype=np.float64) for history in histories])
    return LocalDispatchHistory(products=tuple(history.product for history in histories),
                                intervals=intervals, enabled_mw=enabled)


def snapshot_enablement_caps_mw(snapshot: market_data_pb2.MarketSnapshot, first_interval: datetime,
                                horizon_intervals: int, share: float,
                                policy: DepthEstimatePolicy | None) -> dict[str, FloatArray] | None:
    """The FCAS depth a plan made from ``snapshot`` expects: FCAS product → cap (MW) on the unit's enablement
    in each of ``horizon_intervals`` intervals from the one ending ``first_interval`` (AEST), ``share`` ×
    ``policy.cap_factor`` × the region's local dispatch expected from the snapshot's local dispatch history
    known at its as-of (:func:`expected_enablement_caps_mw`).

    The one home of the decision for the live cycle, the backtest and the archive replay. None when not
    asked for (``policy`` None: ``[market_depth] plan_with_expected_depth`` off) or when the snapshot carries
    no local dispatch (data without DISPATCHREGIONSUM): the plan is then a price-taker's. The look-back is
    what the snapshot holds: ``policy.lookback_days`` needs as many days of history (2016 intervals for 7).
    """
    if policy is None:
        return None
    history = snapshot_local_dispatch(snapshot, policy.interval_minutes)
    if history is None:
        return None
    step = np.timedelta64(policy.interval_minutes * 60, "s")
    plan = np.datetime64(first_interval, "s") + step * np.arange(horizon_intervals)
    return expected_enablement_caps_mw(history.products, history.intervals, history.enabled_mw,
                                       from_timestamp(snapshot.as_of), plan, share, policy)


__all__ = [
    "DepthEstimatePolicy",
    "LocalDispatchHistory",
    "depth_policy",
    "expected_enablement_caps_mw",
    "expected_local_dispatch_mw",
    "plan_enablement_caps_mw",
    "snapshot_enablement_caps_mw",
    "snapshot_local_dispatch",
]
