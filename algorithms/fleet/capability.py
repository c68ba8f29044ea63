"""What a node of the asset graph can be asked to do, and which dispatch events would fight over its sites.

A dispatch event's target (MW, + discharge / − charge) is the total battery power of the node's sites;
it cannot exceed what those batteries can deliver together: the sum of their discharge (or charge) power
limits. Two events over the same sites at the same time would each try to hold its own target with the
same batteries, so a second one is refused unless the first is replaced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from algorithms.fleet.fleet_types import SiteParameters


class TargetBeyondCapabilityError(ValueError):
    """A dispatch target the node's sites cannot deliver; the message gives the node's capability."""


@dataclass(frozen=True)
class NodeCapability:
    """The battery power of a node's sites together: discharge and charge (MW, both positive)."""

    node_id: str
    site_count: int
    discharge_mw: float
    charge_mw: float

    def text(self) -> str:
        """``region-SA1 (1,000 sites) can discharge at most 5.000 MW and charge at most 5.000 MW``."""
        return (f"{self.node_id} ({self.site_count:,} sites) can discharge at most {self.discharge_mw:,.3f} MW "
                f"and charge at most {self.charge_mw:,.3f} MW")


def node_capability(node_id: str, sites: SiteParameters) -> NodeCapability:
    """The summed battery power limits (kW → MW) of ``sites``, the sites under ``node_id``."""
    return NodeCapability(node_id=node_id, site_count=len(sites.site_ids),
                          discharge_mw=float(np.sum(sites.max_discharge_kw)) / 1000.0,
                          charge_mw=float(np.sum(sites.max_charge_kw)) / 1000.0)


def check_target(target_mw: float, capability: NodeCapability) -> None:
    """Nothing if the node's sites can deliver ``target_mw`` (+ discharge / − charge, MW); else
    :class:`TargetBeyondCapabilityError` naming the node's capability."""
    if not math.isfinite(target_mw):
        raise TargetBeyondCapabilityError(f"the target must be a finite number of MW, got {target_mw}")
    if capability.site_count == 0:
        raise TargetBeyondCapabilityError(f"{capability.node_id} has no sites now: nothing can be dispatched there")
    limit = capability.discharge_mw if target_mw >= 0 else capability.charge_mw
    if abs(target_mw) > limit:
        side = "discharge" if target_mw >= 0 else "charge"
        raise TargetBeyondCapabilityError(f"a target of {target_mw:+g} MW is beyond what the node can {side}: "
                                          f"{capability.text()}")


@dataclass(frozen=True)
class RunningEvent:
    """A dispatch event that has not finished: its id, node, window (Unix ms; 0/0 when unknown), stage and
    hierarchy (None: every hierarchy of the node)."""

    event_id: str
    node_id: str
    start_ms: int
    end_ms: int
    stage: str
    hierarchy: str | None = None


def windows_overlap(start_ms: int, end_ms: int, other_start_ms: int, other_end_ms: int) -> bool:
    """Whether [start, end) and [other_start, other_end) share a moment (an unknown window, 0/0, always
    does)."""
    if other_start_ms == 0 and other_end_ms == 0:
        return True
    return start_ms < other_end_ms and other_start_ms < end_ms


def conflicting_events(events: Sequence[RunningEvent], shares_sites: Sequence[bool], start_ms: int,
                       end_ms: int) -> list[RunningEvent]:
    """The events among ``events`` that a new event over [start_ms, end_ms) would fight: those sharing
    sites with it (``shares_sites``, aligned with ``events``) whose windows overlap its window."""
    if len(events) != len(shares_sites):
        raise ValueError(f"{len(events)} events but {len(shares_sites)} site answers")
    return [event for event, shared in zip(events, shares_sites, strict=True)
            if shared and windows_overlap(start_ms, end_ms, event.start_ms, event.end_ms)]
