"""A rolling horizon in periods: the first dispatch intervals one by one, the rest in longer periods.

A rolling plan re-solves its whole horizon (288 five-minute intervals, a day) every dispatch interval, but acts on
the first interval only: the bid. What it plans for the evening matters to the bid through how much energy (and
room) it keeps for it, not through which five minutes of the evening it discharges in — and the forecast it plans
on is itself smooth that far ahead (AEMO's pre-dispatch is half-hourly). So the plan can resolve the near future
interval by interval and the far future in longer periods at one constant output: ``fine_intervals`` single
intervals, then periods of ``block_intervals`` intervals (the last one shorter when they do not divide the rest).

This module holds the pure array side of that: the period lengths (:func:`period_intervals`), the inputs of the
LP per period — prices averaged over a period (:func:`mean_over_periods`: a constant output earns the period's
mean price on every MW), limits at their tightest (:func:`min_over_periods`: a constant enablement must fit every
interval's depth cap; a per-interval SoC ceiling holds at the period's end at its smallest value in the period) —
and the plan back per interval
(:func:`repeat_over_periods` for MW and values, :func:`soc_over_intervals` for the SoC, which a constant output
moves linearly through a period). The LP itself (:mod:`algorithms.market.lp_matrix`, ``period_intervals``) is the
same formulation with each period's hours in place of an interval's.

The plan on periods is a restriction of the plan on intervals: every plan it makes, read back per interval, is one
the interval LP could make (a constant output within a period; the ramp limit of one interval between periods;
the battery's SoC bounds at every interval, since the SoC is linear within a period and within bounds at both
ends), and on the interval prices it earns exactly the objective the period LP reports. It can only be less good,
by what a constant output within each long period gives up. Two planning rules are held at period boundaries
only, not in every interval of a long period: the FCAS energy reserve (written at the start of each period, as
the interval LP writes it at the start of each interval), and a per-interval SoC ceiling (the room kept empty for
deeply negative prices, :mod:`algorithms.market.spike_reserve` v3), held at the period's end at its smallest value
in the period — the SoC may pass above an interval's ceiling on its way through a period. Holding the ceiling at
both ends of every period would hold it in every interval, but makes a plan infeasible where the ceiling follows
the battery's fastest discharge (the room rule guarantees only that), so it is not done.

Units: counts of dispatch intervals; prices $/MWh (energy) and $/MW/h (FCAS); MW; MWh.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from algorithms.common.errors import InvalidRequestError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def period_intervals(horizon_intervals: int, fine_intervals: int, block_intervals: int) -> IntArray:
    """The dispatch intervals each LP period covers, in order: ``fine_intervals`` periods of one interval, then
    periods of ``block_intervals`` intervals up to ``horizon_intervals`` (the last one shorter when they do not
    divide the rest). The counts sum to ``horizon_intervals``. InvalidRequestError unless the horizon and the
    block are positive and ``fine_intervals`` is at least 1 (the interval the bid offers is its own period)."""
    if horizon_intervals <= 0:
        raise InvalidRequestError(f"horizon_intervals must be positive, got {horizon_intervals}")
    if fine_intervals < 1:
        raise InvalidRequestError(f"fine_intervals must be at least 1, got {fine_intervals}")
    return periods_around(np.arange(horizon_intervals) < fine_intervals, block_intervals)


def periods_around(fine: BoolArray, block_intervals: int) -> IntArray:
    """The dispatch intervals each LP period covers, in order, for a horizon whose intervals marked ``fine`` (one
    flag per interval) are each their own period: every run of unmarked intervals between them is cut into periods
    of ``block_intervals`` intervals (the last of a run shorter). InvalidRequestError for an empty horizon or a
    block below 1."""
    flags = np.asarray(fine, dtype=np.bool_)
    if flags.ndim != 1 or flags.size == 0:
        raise InvalidRequestError("the horizon must have at least one interval")
    if block_intervals < 1:
        raise InvalidRequestError(f"block_intervals must be at least 1, got {block_intervals}")
    # A period starts at every marked interval, at the first unmarked interval of a run, and every
    # ``block_intervals`` unmarked intervals within a run.
    index = np.arange(flags.size)
    run_start = np.maximum.accumulate(np.where(np.concatenate([[True], flags[1:] != flags[:-1]]), index, 0))
    starts = np.flatnonzero(flags | ((index - run_start) % block_intervals == 0))
    counts: IntArray = np.diff(np.append(starts, flags.size)).astype(np.int64)
    return counts


def checked_period_intervals(counts: Sequence[int] | npt.NDArray[np.integer], horizon_intervals: int) -> IntArray:
    """``counts`` (dispatch intervals per period) as an array, checked: positive whole numbers summing to
    ``horizon_intervals``. InvalidRequestError naming what is wrong."""
    array = np.asarray(counts)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise InvalidRequestError(f"period_intervals must be a non-empty sequence of whole numbers, got {counts!r}")
    if np.any(array < 1):
        raise InvalidRequestError(f"every period must cover at least one interval, got {array.tolist()[:10]}")
    if int(array.sum()) != horizon_intervals:
        raise InvalidRequestError(f"period_intervals cover {int(array.sum())} intervals; the horizon has "
                                  f"{horizon_intervals}")
    return array.astype(np.int64)


def period_starts(counts: IntArray) -> IntArray:
    """The index of every period's first interval (0 for the first period)."""
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def mean_over_periods(series: FloatArray, counts: IntArray) -> FloatArray:
    """The mean of ``series`` (one value per interval, e.g. $/MWh) over every period: what a constant output
    earns per MW and hour over it."""
    totals = np.add.reduceat(np.asarray(series, dtype=np.float64), period_starts(counts))
    means: FloatArray = totals / counts
    return means


def min_over_periods(series: FloatArray, counts: IntArray) -> FloatArray:
    """The smallest value of ``series`` (one value per interval, e.g. MW or MWh) in every period: a limit a
    constant output (or the SoC at the period's end) must meet in each of its intervals."""
    minima: FloatArray = np.minimum.reduceat(np.asarray(series, dtype=np.float64), period_starts(counts))
    return minima


def repeat_over_periods(values: FloatArray, counts: IntArray) -> FloatArray:
    """Per-period ``values`` (MW, $/MWh, $/MW/h) back on the intervals: each period's value in each of its
    intervals."""
    repeated: FloatArray = np.repeat(np.asarray(values, dtype=np.float64), counts)
    return repeated


def soc_over_intervals(initial_soc_mwh: float, period_end_soc_mwh: FloatArray, counts: IntArray) -> FloatArray:
    """The SoC at the end of every interval (MWh) of a plan whose SoC at the end of each period is
    ``period_end_soc_mwh``: a constant output within a period moves the SoC in equal steps, from the previous
    period's end (``initial_soc_mwh`` for the first) to its own."""
    ends = np.asarray(period_end_soc_mwh, dtype=np.float64)
    starts = np.concatenate([[initial_soc_mwh], ends[:-1]])
    period = np.repeat(np.arange(len(counts)), counts)
    step = np.arange(1, int(counts.sum()) + 1) - period_starts(counts)[period]
    fraction = step / counts[period]
    soc: FloatArray = starts[period] + fraction * (ends - starts)[period]
    # A period's last interval ends exactly at the period's end SoC (no rounding from the interpolation).
    soc[np.cumsum(counts) - 1] = ends
    return soc
