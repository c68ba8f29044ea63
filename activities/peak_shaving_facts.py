"""Inputs, stage facts and the plan of the peak-shaving workflow (frozen dataclasses: JSON across Temporal).

Plain data only (the standard library and :mod:`algorithms.fleet.peak_shaving_types`, no numpy): the
workflow imports this module. The planning activity returns
:class:`algorithms.fleet.peak_shaving_types.PlannedPeakShaving`.

Power MW (+ discharge / − charge for battery targets), energy MWh, times epoch milliseconds UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from algorithms.fleet.peak_shaving_types import DEFAULT_QUANTILES, PeakShavingRules, PlannedShave

INVALID_PEAK_SHAVING = "InvalidPeakShaving"
INSUFFICIENT_HISTORY = "InsufficientLoadHistory"


@dataclass(frozen=True)
class PeakShavingInput:
    """One peak-shaving run for a node of the asset graph.

    Attributes:
        node_id: the node whose load is shaved (feeder, substation, region …).
        threshold_mw: the load the node should not exceed (MW, in ``rules.load_column``).
        hierarchy: the hierarchy that resolves the node's sites (None: every hierarchy it heads).
        horizon_intervals: 5-minute intervals forecast and planned (288: 24 h).
        history_days: days of history the forecast is fitted on.
        rules: :class:`PeakShavingRules` (quantile, minimum duration, lockout, energy share …).
        origin_ms: plan as of this time (epoch ms UTC); None: the workflow's clock (normal use).
        control_interval_s: control step of the dispatch events started.
    """

    node_id: str
    threshold_mw: float
    hierarchy: str | None = None
    horizon_intervals: int = 288
    history_days: float = 28.0
    rules: PeakShavingRules = field(default_factory=PeakShavingRules)
    origin_ms: int | None = None
    control_interval_s: float = 2.0


@dataclass(frozen=True)
class NodeForecastInput:
    """Load the node's history before ``origin_ms`` and forecast the next ``horizon_intervals``."""

    node_id: str
    load_column: str
    origin_ms: int
    history_days: float
    horizon_intervals: int
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES


@dataclass(frozen=True)
class NodeForecast:
    """A node's load forecast as plain lists: ``values_mw[q][i]`` is quantile ``quantiles[q]`` of the
    interval ending ``interval_end_ms[i]`` (MW). ``history_intervals`` valid values were used."""

    node_id: str
    interval_end_ms: tuple[int, ...]
    interval_ms: int
    quantiles: tuple[float, ...]
    values_mw: tuple[tuple[float, ...], ...]
    method: str
    history_intervals: int


@dataclass(frozen=True)
class FleetCapacityInput:
    """What the node's batteries can do as of ``as_of_ms``."""

    node_id: str
    hierarchy: str | None
    as_of_ms: int


@dataclass(frozen=True)
class FleetCapacity:
    """The node's batteries: energy available to discharge above the owners' reserves (MWh; estimate and
    lower bound from the fleet gateway's aggregate) and their total discharge power (MW)."""

    site_count: int
    reporting_sites: int
    energy_available_mwh: float
    energy_lower_mwh: float
    max_discharge_mw: float
    description: str


@dataclass(frozen=True)
class PeakShavingPlanInput:
    """Plan the shaves of a node from its load forecast and what its batteries can do.

    Attributes:
        node_id: the node planned.
        threshold_mw: the load the node should not exceed (MW).
        rules: :class:`PeakShavingRules`.
        forecast: the node's load forecast (the ``forecast_node_load`` activity's result).
        capacity: the node's batteries (the ``node_fleet_capacity`` activity's result); the plan spends
            at most the lower bound of their energy.
    """

    node_id: str
    threshold_mw: float
    rules: PeakShavingRules
    forecast: NodeForecast
    capacity: FleetCapacity


@dataclass(frozen=True)
class ScheduledEvent:
    """A dispatch event the plan asked for: ``kind`` "shave" (discharge) or "lockout" (hold 0 MW);
    ``started`` False when an event with this id already existed (an earlier run started it)."""

    event_id: str
    kind: str
    start_ms: int
    end_ms: int
    target_mw: float
    started: bool


@dataclass(frozen=True)
class PeakShavingPlan:
    """The ``plan`` query and the workflow's result.

    Attributes:
        node_id, threshold_mw, origin_ms: what was planned, as of when.
        stage: "forecasting", "planning", "scheduling", "done".
        forecast_method: the forecast model.
        forecast_peak_mw: the highest forecast load at the rules' quantile over the horizon (MW).
        peaks_found: peaks above the threshold worth shaving (before energy/power/overlap limits).
        energy_budget_mwh: energy the plan could spend (lower bound × ``energy_use_fraction``).
        max_discharge_mw: the node's battery discharge power (MW).
        fleet: the gateway's readable summary of the node's batteries.
        shaves: the planned shaves in time order (each followed by its lockout).
        events: the dispatch events (shave and lockout per shave) and whether this run started them.
    """

    node_id: str
    threshold_mw: float
    origin_ms: int
    stage: str
    forecast_method: str = ""
    forecast_peak_mw: float = 0.0
    peaks_found: int = 0
    energy_budget_mwh: float = 0.0
    max_discharge_mw: float = 0.0
    fleet: str = ""
    shaves: tuple[PlannedShave, ...] = ()
    events: tuple[ScheduledEvent, ...] = ()
