"""The plain types of peak shaving (no numpy): the rules, a planned shave, a plan's figures and the errors.

They cross the workflow/activity boundary as JSON (:mod:`activities.peak_shaving_facts`), so this module
imports nothing but the standard library: the ``PeakShaving`` workflow stays import-light. The maths
that uses them is :mod:`algorithms.fleet.peak_shaving`.

Power MW (+ discharge for battery targets), energy MWh, times epoch milliseconds UTC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
"""Probability levels of a node load forecast unless asked otherwise."""
LOAD_COLUMNS = ("load_mw", "net_load_mw")
"""The history columns a forecast can be made of."""


class PeakShavingInputError(ValueError):
    """Input the peak-shaving functions cannot use (misaligned arrays, irregular grid, bad rule …)."""


class InsufficientHistoryError(PeakShavingInputError):
    """Too little valid history to fit the forecast (see ``algorithms.fleet.peak_shaving.MIN_HISTORY_DAYS``)."""


@dataclass(frozen=True)
class PeakShavingRules:
    """How peaks are chosen and shaved (plain fields: it travels through Temporal as JSON).

    Attributes:
        quantile: the forecast quantile that must exceed the threshold (0.5: P50; 0.9: cautious).
        min_duration_s: a peak shorter than this is not worth a dispatch event (s).
        merge_gap_s: exceedances separated by a dip no longer than this are one peak (s).
        min_energy_above_mwh: a peak with less energy above the threshold is not worth shaving (MWh).
        lockout_s: after every shave the batteries are held at 0 MW for this long (s) — no rebound.
        energy_use_fraction: share of the energy available to discharge the plan may spend (0–1].
        power_use_fraction: share of the sites' total discharge power a shave may ask (0–1].
        max_shaves: most shaves planned per run.
        min_target_mw: a shave asking less than this is not planned (MW).
        load_column: the history column forecast and shaved (``net_load_mw`` or ``load_mw``).
    """

    quantile: float = 0.5
    min_duration_s: float = 900.0
    merge_gap_s: float = 900.0
    min_energy_above_mwh: float = 0.0
    lockout_s: float = 7_200.0
    energy_use_fraction: float = 0.9
    power_use_fraction: float = 1.0
    max_shaves: int = 4
    min_target_mw: float = 0.001
    load_column: str = "net_load_mw"

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise PeakShavingInputError(f"quantile must be in (0, 1), got {self.quantile}")
        for name in ("min_duration_s", "merge_gap_s", "min_energy_above_mwh", "lockout_s", "min_target_mw"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise PeakShavingInputError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("energy_use_fraction", "power_use_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise PeakShavingInputError(f"{name} must be in (0, 1], got {value}")
        if self.max_shaves < 0:
            raise PeakShavingInputError(f"max_shaves must be >= 0, got {self.max_shaves}")
        if self.load_column not in LOAD_COLUMNS:
            raise PeakShavingInputError(f"load_column must be one of {LOAD_COLUMNS}, got {self.load_column!r}")


@dataclass(frozen=True)
class PlannedShave:
    """A shave: hold ``target_mw`` of battery discharge over ``[start_ms, end_ms)``, then hold the
    batteries at 0 MW over the lockout ``[end_ms, lockout_end_ms)`` (epoch ms UTC, MW, MWh).

    Attributes:
        start_ms, end_ms: the dispatch window.
        target_mw: total battery power asked at the node (+ discharge).
        peak_forecast_mw: the forecast peak (at the rules' quantile) in the window.
        ceiling_mw: the forecast load's maximum after the shave (= threshold for a full shave).
        energy_above_threshold_mwh: forecast energy above the threshold in the peak.
        planned_energy_mwh: energy the block asks of the batteries (target × duration).
        lockout_end_ms: end of the 0 MW hold that follows (= end_ms when the lockout is 0).
    """

    start_ms: int
    end_ms: int
    target_mw: float
    peak_forecast_mw: float
    ceiling_mw: float
    energy_above_threshold_mwh: float
    planned_energy_mwh: float
    lockout_end_ms: int

    @property
    def lockout_start_ms(self) -> int:
        """The lockout starts when the shave ends."""
        return self.end_ms


@dataclass(frozen=True)
class PlannedPeakShaving:
    """A node's peak-shaving plan and the figures it shows (``algorithms.fleet.peak_shaving.plan_node_peak_shaving``).

    Attributes:
        shaves: the planned shaves in time order (each followed by its lockout).
        forecast_method: the forecast model the plan is built on.
        forecast_peak_mw: the highest forecast load at the rules' quantile over the horizon (MW; NaN when
            the forecast holds no value).
        peaks_found: peaks above the threshold worth shaving (before energy/power/overlap limits).
        energy_budget_mwh: energy the plan could spend (energy available × ``energy_use_fraction``, MWh).
    """

    shaves: tuple[PlannedShave, ...]
    forecast_method: str
    forecast_peak_mw: float
    peaks_found: int
    energy_budget_mwh: float
