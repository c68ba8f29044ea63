"""Inputs and results of the price-forecast distribution workflow and its activities (plain frozen dataclasses:
JSON across Temporal). Times are epoch milliseconds UTC unless a field says market time (naive AEST)."""

from __future__ import annotations

from dataclasses import dataclass

from activities.cycle_facts import CycleConfig

DISTRIBUTION_WORKFLOW = "PriceForecastDistribution"


@dataclass(frozen=True)
class DistributionInput:
    """What one distribution run does (the schedule fills it from ``[coopt]`` and ``[cycle]`` settings).

    ``decision_time`` (naive AEST) fixes the market time; None maps the run's start onto the replay
    period like the 5-minute cycle. ``poll_nodes``: asset-graph nodes whose sites poll instead of being
    pushed to (e.g. a programme on metered mobile links).
    """

    region: str
    vpp_node: str
    fleet_unit_id: str
    # The cycle's configuration (stack.schedule.cycle_config): the forecaster and its horizon and levels.
    config: CycleConfig
    plan_collection_s: float = 60.0
    hierarchy: str | None = None
    poll_nodes: tuple[str, ...] = ()
    decision_time: str | None = None
    # Task queue of the VPP workflows (the dispatch event of the bid's first interval); "" = no dispatch.
    dispatch_task_queue: str = ""
    control_interval_s: float = 2.0
    # A storm warning for the region: every site raises its backup reserve while it plans on this version.
    storm_warning: bool = False
    # How many intervals from the bid's first the run dispatches through the control loop (1 = the first).
    dispatch_intervals: int = 1


@dataclass(frozen=True)
class SnapshotRequest:
    """Fetch the region's market data as of ``as_of`` (AEST) for forecasts from ``first_interval``."""

    run_id: str
    region: str
    first_interval: str
    as_of: str
    history_intervals: int


@dataclass(frozen=True)
class PublishRequest:
    """Publish the archived forecaster result as a site forecast starting at ``start_ms`` (wall clock)."""

    forecast_key: str
    region: str
    published_at_ms: int
    start_ms: int
    poll_nodes: tuple[str, ...]
    hierarchy: str | None
    storm_warning: bool = False


@dataclass(frozen=True)
class Published:
    """What the gateway did with the new version."""

    version: int
    published: bool
    streams_pushed: int
    sites_pushed: int
    bytes_pushed: int
    poll_sites: int
    forecast_key: str


@dataclass(frozen=True)
class FleetBidRequest:
    """Aggregate the plans of ``vpp_node`` against ``version`` and bid them as ``fleet_unit_id``.

    ``dispatch_interval`` / ``offer_time``: market time (AEST ISO) of the bid's first interval and of the
    offer; ``market_offset_ms``: market time − wall clock (ms), to place the sites' wall-clock plans.
    """

    run_id: str
    vpp_node: str
    hierarchy: str | None
    fleet_unit_id: str
    region: str
    version: int
    dispatch_interval: str
    offer_time: str
    market_offset_ms: int


@dataclass(frozen=True)
class FleetBidOutcome:
    """The fleet bid's fate: valid (archived, ready to submit) or the rules it broke."""

    valid: bool
    violations: tuple[str, ...]
    summary: str
    aggregate: str
    bid_key: str
    expected_sites: int
    current_version_sites: int
    stale_version_sites: int
    estimated_sites: int
    # The fleet unit's registered capacity (MW): the most a dispatch instruction may ask either way.
    registered_power_mw: float = 0.0


@dataclass(frozen=True)
class SubmitFleetBidRequest:
    """Submit the archived fleet bid and ask the market for its first interval's dispatch instruction."""

    bid_key: str
    fleet_unit_id: str
    dispatch_interval: str


@dataclass(frozen=True)
class FleetSubmitted:
    """The market's answer: ACCEPTED or REJECTED (with reasons), and the dispatch instruction of the first
    interval (MW, + discharge / − charge) at the energy price ($/MWh); None when not cleared (never NaN:
    results are JSON the Web UI shows)."""

    bid_id: str
    status: str
    reasons: tuple[str, ...]
    dispatch_mw: float | None
    energy_price_per_mwh: float | None


@dataclass(frozen=True)
class InstructionRequest:
    """Ask the market what the fleet unit is dispatched to in the interval ending ``dispatch_interval``."""

    fleet_unit_id: str
    dispatch_interval: str


@dataclass(frozen=True)
class FleetInstruction:
    """The market's instruction (MW, + discharge / − charge) and the energy price ($/MWh); None when the
    market has none for the interval."""

    dispatch_mw: float | None
    energy_price_per_mwh: float | None


@dataclass(frozen=True)
class DistributionResult:
    """One run: the version published, how it went out, the fleet bid, the market's answer and the
    dispatch event that carries its instruction down to the sites ("" when none was started)."""

    version: int
    decision_time: str
    published: Published
    fleet_bid: FleetBidOutcome
    submitted: FleetSubmitted | None = None
    # The dispatch events started, one per dispatched interval ("" for an interval not dispatched).
    dispatch_event_ids: tuple[str, ...] = ()
