"""The AutoBidder cycle's inputs and its immutable stage facts.

Plain frozen dataclasses of strings and numbers: they cross the Temporal boundary as JSON, are safe to
import in the workflow sandbox, and are what an operator reads through the ``facts`` query. Large
payloads (snapshots, forecasts, plans, bids) never enter workflow history: a fact carries the archive
key of the immutable protobuf message instead. Times are ISO-8601 strings; market times are naive
interval-ending AEST, wall-clock times are UTC with an offset.

The annotations are real types, not postponed strings (no ``from __future__ import annotations``): Temporal's
data converter resolves the type hints of every dataclass it converts, for every payload a cycle's stages send
and receive (a few dozen per cycle), and evaluating string annotations each time made that about four times as
costly (tens of µs per class). A class is therefore defined before the classes whose fields name it.
"""

from dataclasses import dataclass
from datetime import datetime

from algorithms.market.console import BidBand, CycleOutcomeView, CycleView
from pools.replies import WorkerAnswer


@dataclass(frozen=True)
class CycleConfig:
    """Parameters of one cycle, fixed when the cycle starts.

    Built from the configuration by :func:`stack.schedule.cycle_config` (``settings.cycle`` and
    ``settings.market_depth``): the values live only in ``settings/default.toml``, so no field has a default
    of its own (the exceptions are the test switch ``search_attributes``, and ``clock``,
    ``optimiser_uncertainty_weight`` and the market-depth fields, whose defaults read cycles started before
    they existed). Units as in :class:`settings.CycleSettings` (intervals, seconds, $/MWh); ``replay_start`` is
    an ISO naive AEST market time; ``bid_version`` is the version every bid of the cycle carries.
    """

    horizon_intervals: int
    history_intervals: int
    forecast_quantiles: tuple[float, ...]
    optimiser_price_quantile: float
    optimiser_price_tail_weight: float
    forecast_algorithm: str
    forecast_algorithm_version: str
    optimiser_algorithm: str
    optimiser_algorithm_version: str
    degradation_cost_per_mwh: float
    terminal_value_per_mwh: float
    optimiser_time_limit_s: float
    schedule_offset_s: int
    market_data_poll_s: int
    market_data_cutoff_s: int
    gate_closure_margin_s: int
    minimum_lead_s: int
    worker_answer_timeout_s: int
    replay_start: str
    replay_days: int
    bid_version: int
    # Mirror stage, bid id and outcome into the project's search attributes (the time-skipping test
    # server cannot register custom search attributes, so its tests switch this off).
    search_attributes: bool = True
    # The market clock: "replay" (wall clock mapped onto replay_start … + replay_days) or "live" (AEST now).
    # Its default is not configuration: it reads cycles started before the field existed (recorded histories).
    clock: str = "replay"
    # κ of lp-uncertainty-spread ([cycle] optimiser_uncertainty_weight, in [0, 1)); None = the optimiser
    # version's own. Its default reads cycles started before the field existed.
    optimiser_uncertainty_weight: float | None = None
    # The FCAS depth the plan expects ([market_depth]): whether to cap each FCAS service at the share (of the
    # region's local dispatch, in (0, 1]) × the cap factor (> 0) × the local dispatch expected from the
    # snapshot (algorithms/market/depth_plan.snapshot_enablement_caps_mw). Their defaults read cycles started
    # before the fields existed: a price-taker's plan, as those cycles made.
    plan_with_expected_depth: bool = False
    fcas_enablement_share: float = 0.5
    planning_cap_factor: float = 1.5


@dataclass(frozen=True)
class CycleInput:
    """What starts a cycle. Without ``decision_time`` the cycle reads its start time on its config's clock
    (the replay period, or AEST now on live data); the demo and tests give an explicit market decision time."""

    unit_id: str
    region: str
    config: CycleConfig
    # Naive AEST market time the cycle decides at (its as-of at start); None = from the workflow clock.
    decision_time: str | None = None


@dataclass(frozen=True)
class FetchInput:
    """Fetch the market snapshot as of ``as_of`` (AEST) for the interval ending ``dispatch_interval``."""

    cycle_id: str
    unit_id: str
    region: str
    dispatch_interval: str
    as_of: str
    history_intervals: int
    use_estimates: bool


@dataclass(frozen=True)
class MarketFetched:
    """The fetch stage's fact: the archived snapshot and how good the data was."""

    snapshot_key: str
    # DataQuality name without prefix: ON_TIME, LATE, MISSING, ESTIMATED.
    latest_quality: str
    latest_interval: str
    # Whether the latest interval's price is known (published, or estimated after the cut-off).
    latest_known: bool
    # The products forecast, planned and bid: those of the snapshot with something to forecast from
    # (algorithms/market/cycle_requests.forecastable_products; a market not yet priced is left out).
    products: tuple[str, ...]
    quality_notes: tuple[str, ...]
    state_of_charge_mwh: float
    net_mw: float
    as_of: str
    # Operator controls in force when the cycle fetched (unit_controls; algorithms/market/operator_controls.py).
    # A paused unit's fetch reads no market data (empty snapshot key, no products).
    paused: bool = False
    paused_reason: str | None = None
    # SoC hold: floor (fraction of capacity) and its end (ISO, UTC offset), None when no hold is in force.
    soc_floor_fraction: float | None = None
    soc_floor_until: str | None = None
    # A manual rebid the operator asked for (its reason), None when none is pending.
    manual_rebid_reason: str | None = None


@dataclass(frozen=True)
class ForecastsInput:
    """Every product's forecast of one decision from the archived snapshot, as of the snapshot's as-of, for
    the horizon from ``first_interval`` (interval-ending AEST): requests shared by the units of the region
    deciding from the same snapshot (algorithms/market/cycle_requests.region_forecast_requests)."""

    cycle_id: str
    region: str
    products: tuple[str, ...]
    snapshot_key: str
    first_interval: str
    config: CycleConfig


@dataclass(frozen=True)
class ForecastsAnswered:
    """The forecast stage's answers, in the order of the products asked; ``sent`` forecasts were asked of
    the pool by this cycle, ``shared`` were answered by a request of another cycle of the region (or of this
    round before)."""

    answers: tuple[WorkerAnswer, ...]
    sent: int
    shared: int


@dataclass(frozen=True)
class ForecastTaskInput:
    """One forecast task: one product's forecast from the archived snapshot."""

    cycle_id: str
    product: str
    snapshot_key: str
    decision_time: str
    first_interval: str
    config: CycleConfig


@dataclass(frozen=True)
class OptimisationTaskInput:
    """The optimisation task: every forecast plus the unit's state."""

    cycle_id: str
    unit_id: str
    forecast_keys: tuple[str, ...]
    first_interval: str
    state_of_charge_mwh: float
    net_mw: float
    config: CycleConfig
    # Operator SoC hold in force: the battery's minimum SoC is raised to it for the whole horizon.
    soc_floor_fraction: float | None = None
    # The archived snapshot the forecasts were made from: the FCAS depth the plan expects is estimated from
    # its local dispatch (config.plan_with_expected_depth). "" (tasks of cycles recorded before): none.
    snapshot_key: str = ""


@dataclass(frozen=True)
class BuildBidInput:
    """Build and validate the bid for ``dispatch_interval`` from the archived plan."""

    cycle_id: str
    unit_id: str
    plan_key: str
    dispatch_interval: str
    offer_time: str
    version: int
    state_of_charge_mwh: float
    products: tuple[str, ...]
    # Operator SoC hold in force (no discharge offered below it) and a pending manual rebid's reason.
    soc_floor_fraction: float | None = None
    manual_rebid_reason: str | None = None


@dataclass(frozen=True)
class BidBuilt:
    """The bid stage's fact (:class:`algorithms.market.bid_decision.BidDecision`): a bid that passed V1–V8,
    that the bid in force stands, or why no bid could be built.

    ``safe_fallback``: the decision fell back to the safe bid (unusable plan, or the plan's bid rejected),
    whether that bid was submitted, stood or was itself rejected. ``violations``: the rejected candidates'
    reasons (``"plan bid V6: ..."``).
    """

    bid_key: str | None
    valid: bool
    safe_fallback: bool
    violations: tuple[str, ...]
    summary: str
    # False when the new bid does not differ materially from the bid in force, which then stands.
    rebid: bool = True
    standing_bid_id: str | None = None
    # The operator's reason when this bid is (also) a manual rebid.
    manual_rebid_reason: str | None = None
    # The next trading day's DAILY bid decided with this one (archived as ``bid-daily``; None when none was due
    # or none passed validation) and one line on it ("" when none was due).
    daily_bid_key: str | None = None
    daily_summary: str = ""


@dataclass(frozen=True)
class SubmitInput:
    """Submit the archived bid ``bid_key`` to the market."""

    cycle_id: str
    bid_key: str


@dataclass(frozen=True)
class BidSubmitted:
    """The submit stage's fact: the market's acknowledgement."""

    bid_id: str
    status: str
    duplicate: bool
    reasons: tuple[str, ...]
    received_at: str


@dataclass(frozen=True)
class StageFact:
    """One immutable fact of a cycle, in the order the stages produced them."""

    stage: str
    # Wall-clock time the stage finished (UTC, ISO-8601).
    at: str
    summary: str
    archive_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordInput:
    """Record the cycle's outcome in PostgreSQL."""

    cycle_id: str
    unit_id: str
    region: str
    dispatch_interval: str
    status: str
    bid_id: str | None
    failure: str | None
    started_at: str
    facts: tuple[StageFact, ...]
    # A manual rebid this cycle submitted: its pending request is cleared and audited when recorded.
    manual_rebid_reason: str | None = None
    # The archived plan (for the plan's intent on the cycle's page); None when the cycle has none.
    plan_key: str | None = None
    # Cycles that leave telling the unit's UnitOperator workflow to the record stage (workflows/autobidder.py,
    # OPERATOR_TOLD_BY_RECORD_PATCH): the record stage signals ``cycle_recorded`` with the cycle's line
    # (:func:`cycle_view`, then algorithms.market.console.cycle_line) once it has the outcome. What the line needs
    # beyond the fields above: the decision time (ISO, naive AEST) and why nothing was submitted, if nothing was.
    tell_operator: bool = False
    decision_time: str | None = None
    not_submitted_reason: str | None = None


@dataclass(frozen=True)
class OutcomeRecorded:
    """The record stage's fact: what the market did with the bid's first interval."""

    cleared: bool
    gen_mw: float
    load_mw: float
    energy_revenue_dollars: float
    fcas_revenue_dollars: float
    state_of_charge_mwh: float
    # Energy price of the interval ($/MWh); None when not cleared. (Never NaN: results are JSON, and
    # the Temporal Web UI can only show a result that is valid JSON.)
    price: float | None
    # Whether this cycle counts the interval's revenue (False when an earlier cycle of the same unit and
    # interval already did: revenue is counted once) and which cycle counts it. Meaningful when cleared.
    revenue_counted: bool = True
    counted_by_cycle: str | None = None
    # The bid for the interval (the one submitted, else the bid in force): its bands with MW offered.
    bid_id: str | None = None
    bid_bands: tuple[BidBand, ...] = ()
    # The plan's intent in one sentence ('' without a plan).
    plan_intent: str = ""
    # Where the dispatch came from: "" the market the bid was submitted to (the simulated market), "AEMO" (live
    # mode: DISPATCHLOAD settled at DISPATCHPRICE); what of it the bid in force cannot explain.
    dispatch_source: str = ""
    dispatch_flags: tuple[str, ...] = ()
    # Live mode: earlier cycles of the unit whose interval AEMO published since they recorded, settled now (one
    # line each: interval, cycle, MW, price, revenue, anything the bid in force cannot explain).
    settled_earlier: tuple[str, ...] = ()


@dataclass(frozen=True)
class CycleState:
    """What the ``state`` query returns: where the cycle is and what it has established."""

    cycle_id: str
    unit_id: str
    region: str
    dispatch_interval: str | None
    stage: str
    bid_id: str | None
    outcome: str | None
    facts: tuple[StageFact, ...]


@dataclass(frozen=True)
class CycleResult:
    """The workflow's result."""

    cycle_id: str
    dispatch_interval: str
    status: str
    bid_id: str | None
    facts: tuple[StageFact, ...]
    outcome: OutcomeRecorded | None = None
    started_market_time: str = ""
    latency_to_ack_s: float = 0.0
    # The same market times with their zone (interval-ending AEST, UTC+10), e.g. 2021-01-15T16:10:00+10:00;
    # fact times (StageFact.at) are wall clock, UTC.
    dispatch_interval_aest: str = ""
    started_market_time_aest: str = ""
    # One line: unit, interval, status, dispatched MW, price, revenue.
    summary: str = ""


def cycle_view(*, unit_id: str, region: str, dispatch_interval: datetime, status: str,
               started_wall_clock: datetime | None, decision_market_time: datetime | None, bid_id: str | None,
               not_submitted_reason: str | None, outcome: OutcomeRecorded | None = None) -> CycleView:
    """What a cycle's page shows (rendered by algorithms/market/console.py): the cycle's own fields, and once the
    record stage has run its ``outcome`` — the bid shown (the one submitted, else the bid in force: the
    outcome's ``bid_id`` when it names one, else ``bid_id``), its bands, the plan's intent and, when the
    interval cleared, what was dispatched and earned. Market times naive interval-ending AEST, wall clock UTC."""
    cleared = outcome is not None and outcome.cleared
    return CycleView(
        unit_id=unit_id, region=region, dispatch_interval=dispatch_interval, status=status,
        started_wall_clock=started_wall_clock, decision_market_time=decision_market_time,
        bid_id=(outcome.bid_id if outcome is not None and outcome.bid_id else bid_id),
        bid_bands=outcome.bid_bands if outcome is not None else (),
        plan_intent=outcome.plan_intent if outcome is not None else "",
        outcome=CycleOutcomeView(
            gen_mw=outcome.gen_mw, load_mw=outcome.load_mw, price=outcome.price,
            energy_revenue_dollars=outcome.energy_revenue_dollars,
            fcas_revenue_dollars=outcome.fcas_revenue_dollars, state_of_charge_mwh=outcome.state_of_charge_mwh,
            revenue_counted=outcome.revenue_counted, counted_by_cycle=outcome.counted_by_cycle,
            dispatch_flags=outcome.dispatch_flags)
        if outcome is not None and cleared else None,
        not_submitted_reason=not_submitted_reason)
