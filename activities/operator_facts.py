"""Inputs, views and results of a unit's operator controls (the UnitOperator workflow and its activities):
plain frozen dataclasses, times as ISO-8601 text with a UTC offset."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from algorithms.market.console import BidBand, ControlsText, UnitPnl
from algorithms.market.operator_controls import UnitControls

PAUSE, RESUME, HOLD_SOC, RELEASE_SOC, MANUAL_REBID = "pause", "resume", "hold_soc", "release_soc", "manual_rebid"
ACTIONS = (PAUSE, RESUME, HOLD_SOC, RELEASE_SOC, MANUAL_REBID)
# Signal a cycle sends its unit's operator workflow once it has recorded its interval (a line about it).
CYCLE_RECORDED_SIGNAL = "cycle_recorded"


def operator_workflow_id(unit_id: str) -> str:
    """Id of the unit's UnitOperator workflow."""
    return f"operator-{unit_id}"


@dataclass(frozen=True)
class OperatorInput:
    """Starts a UnitOperator: the unit and the battery limits its requests are checked against (SoC as
    fractions of capacity; manual rebid reasons at most ``rebid_reason_max_chars`` characters)."""

    unit_id: str
    soc_min_fraction: float
    soc_max_fraction: float
    rebid_reason_max_chars: int = 500
    max_actions_per_run: int = 500
    # Refreshes of the page (one per recorded cycle, coalesced) before the workflow continues as new.
    max_refreshes_per_run: int = 1000
    # The controls carried over by continue-as-new (shown until the new run has reloaded them).
    controls: ControlsView | None = None


@dataclass(frozen=True)
class ControlsView:
    """A unit's controls as the ``controls`` query and every update return them (times ISO-8601, UTC
    offset included)."""

    unit_id: str
    paused: bool = False
    paused_reason: str | None = None
    soc_floor_fraction: float | None = None
    soc_floor_until: str | None = None
    pending_rebid_reason: str | None = None
    updated_at: str | None = None

    @staticmethod
    def of(controls: UnitControls) -> ControlsView:
        """The view of stored controls."""
        return ControlsView(
            unit_id=controls.unit_id, paused=controls.paused, paused_reason=controls.paused_reason,
            soc_floor_fraction=controls.soc_floor_fraction,
            soc_floor_until=controls.soc_floor_until.isoformat() if controls.soc_floor_until else None,
            pending_rebid_reason=controls.pending_rebid_reason,
            updated_at=controls.updated_at.isoformat() if controls.updated_at else None)

    def shown(self) -> ControlsText:
        """The controls as the operator page shows them."""
        return ControlsText(paused=self.paused, paused_reason=self.paused_reason,
                            soc_floor_fraction=self.soc_floor_fraction,
                            soc_floor_until=datetime.fromisoformat(self.soc_floor_until) if self.soc_floor_until
                            else None, pending_rebid_reason=self.pending_rebid_reason)

    def controls(self) -> UnitControls:
        """The controls this view shows."""
        return UnitControls(
            unit_id=self.unit_id, paused=self.paused, paused_reason=self.paused_reason,
            soc_floor_fraction=self.soc_floor_fraction,
            soc_floor_until=datetime.fromisoformat(self.soc_floor_until) if self.soc_floor_until else None,
            pending_rebid_reason=self.pending_rebid_reason,
            updated_at=datetime.fromisoformat(self.updated_at) if self.updated_at else None)


@dataclass(frozen=True)
class OperatorActionInput:
    """One accepted operator action to write (``action`` one of ACTIONS; the SoC hold's floor and end
    time for ``hold_soc``)."""

    unit_id: str
    action: str
    reason: str
    operator: str = ""
    soc_floor_fraction: float | None = None
    soc_floor_until: str | None = None


@dataclass(frozen=True)
class RebidRequested:
    """What ``manual_rebid`` returns: the controls with the pending rebid, and whether a cycle was
    started now (else the next scheduled cycle submits it)."""

    controls: ControlsView
    cycle_triggered: bool
    note: str = ""


@dataclass(frozen=True)
class UnitConsole:
    """What the operator page shows besides the controls (the ``load_unit_console`` activity): the P&L of
    the trading day of the unit's latest recorded interval (each interval counted once; $), and the bid in
    force for that interval with its bands. Market times are naive interval-ending AEST, ISO-8601."""

    unit_id: str
    trading_day: str | None = None
    energy_revenue_dollars: float = 0.0
    fcas_revenue_dollars: float = 0.0
    intervals: int = 0
    cycles: int = 0
    latest_interval: str | None = None
    bid_id: str | None = None
    bid_bands: tuple[BidBand, ...] = ()

    def pnl(self) -> UnitPnl:
        """The P&L as the pure renderer takes it."""
        return UnitPnl(unit_id=self.unit_id,
                       trading_day=date.fromisoformat(self.trading_day) if self.trading_day else None,
                       energy_revenue_dollars=self.energy_revenue_dollars,
                       fcas_revenue_dollars=self.fcas_revenue_dollars, intervals=self.intervals, cycles=self.cycles,
                       latest_interval=datetime.fromisoformat(self.latest_interval) if self.latest_interval else None)
