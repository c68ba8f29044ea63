"""Inputs, progress and results of a VPP dispatch event (plain frozen dataclasses: JSON across Temporal).

Power is MW at the sites' meters (+ discharge / − charge); times are epoch milliseconds UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EVENT_LOST = "DispatchEventLost"

DISPATCH_WORKFLOW = "VppDispatchEvent"
"""The dispatch event workflow's name (workflows/dispatch.py), for parents that start it as a child."""


@dataclass(frozen=True)
class DispatchEventInput:
    """A dispatch event: hold ``target_mw`` from ``start_ms`` to ``end_ms`` at a node of the asset graph.

    ``hierarchy`` restricts the node's subtree to one hierarchy (None: every hierarchy the node heads).
    ``max_abs_target_mw`` bounds what an operator may set through the ``set_target`` update.
    """

    event_id: str
    node_id: str
    target_mw: float
    start_ms: int
    end_ms: int
    hierarchy: str | None = None
    control_interval_s: float = 2.0
    max_abs_target_mw: float = 1_000.0


@dataclass(frozen=True)
class StartEventInput:
    """Resolve the node's sites as of the event start and hand them to the fleet gateway."""

    event_id: str
    node_id: str
    hierarchy: str | None
    target_mw: float
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class EventStarted:
    """The event's sites as resolved: how many, and ids the gateway does not know."""

    site_count: int
    unknown_site_count: int


@dataclass(frozen=True)
class ControlInput:
    """One control step with the target in force (MW)."""

    event_id: str
    target_mw: float


@dataclass(frozen=True)
class ControlStep:
    """What a control step observed and did (the ``progress`` query shows the latest)."""

    measured_at_ms: int
    target_mw: float
    measured_mw: float
    commanded_mw: float
    unallocated_mw: float
    site_count: int
    commanded_sites: int
    acknowledged_sites: int
    reporting_sites: int
    commands_sent: int
    commands_resent: int
    excluded: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FinishInput:
    """End the event and record its impact log under ``status`` (COMPLETED, CANCELLED)."""

    event_id: str
    node_id: str
    target_mw: float
    start_ms: int
    end_ms: int
    status: str
    reason: str = ""


@dataclass(frozen=True)
class EventSummary:
    """The event's outcome: energy asked and delivered (MWh), sites short of what they were asked."""

    event_id: str
    status: str
    site_count: int
    asked_mwh: float
    delivered_mwh: float
    sites_short: int
    sites_acknowledged: int


@dataclass(frozen=True)
class DispatchProgress:
    """The ``progress`` query: stage, target, latest control step, the history of targets."""

    event_id: str
    node_id: str
    stage: str
    target_mw: float
    site_count: int
    steps: int
    latest: ControlStep | None
    target_changes: tuple[str, ...]
    summary: EventSummary | None
    # The event's window (Unix ms, wall clock) and its hierarchy (None: every hierarchy of the node).
    start_ms: int = 0
    end_ms: int = 0
    hierarchy: str | None = None
