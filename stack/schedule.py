"""The Temporal Schedules: the AutoBidder cycle every 5 minutes (aligned to dispatch intervals), the
node-load sampler every 5 minutes, and the price-forecast distribution every 15 minutes."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from activities.cycle_facts import CycleConfig, CycleInput
from services.temporal_client import connect_temporal, schedule_id
from settings import CycleSettings, MarketDepthSettings, Settings, UnitSettings

if TYPE_CHECKING:
    from activities.distribution_facts import DistributionInput
    from activities.operator_facts import OperatorInput




def cycle_config(cycle: CycleSettings, bid_version: int = 1,
                 market_depth: MarketDepthSettings | None = None) -> CycleConfig:
    """The workflow's CycleConfig from the configured CycleSettings and ``[market_depth]`` (default: its
    defaults; the FCAS depth the plan expects)."""
    depth = market_depth if market_depth is not None else MarketDepthSettings()
    return CycleConfig(
        horizon_intervals=cycle.horizon_intervals,
        history_intervals=cycle.history_intervals,
        forecast_quantiles=cycle.forecast_quantiles,
        optimiser_price_quantile=cycle.optimiser_price_quantile,
        optimiser_price_tail_weight=cycle.optimiser_price_tail_weight,
        forecast_algorithm=cycle.forecast_algorithm,
        forecast_algorithm_version=cycle.forecast_algorithm_version,
        optimiser_algorithm=cycle.optimiser_algorithm,
        optimiser_algorithm_version=cycle.optimiser_algorithm_version,
        degradation_cost_per_mwh=cycle.degradation_cost_per_mwh,
        terminal_value_per_mwh=cycle.terminal_value_per_mwh,
        optimiser_time_limit_s=cycle.optimiser_time_limit_s,
        schedule_offset_s=cycle.schedule_offset_s,
        market_data_poll_s=cycle.market_data_poll_s,
        market_data_cutoff_s=cycle.market_data_cutoff_s,
        gate_closure_margin_s=cycle.gate_closure_margin_s,
        minimum_lead_s=cycle.minimum_lead_s,
        worker_answer_timeout_s=cycle.worker_answer_timeout_s,
        clock=cycle.clock,
        replay_start=cycle.replay_start.isoformat(),
        replay_days=cycle.replay_days,
        bid_version=bid_version,
        optimiser_uncertainty_weight=cycle.optimiser_uncertainty_weight,
        plan_with_expected_depth=depth.plan_with_expected_depth,
        fcas_enablement_share=depth.fcas_enablement_share,
        planning_cap_factor=depth.planning_cap_factor,
    )


def cycle_schedule(settings: Settings, unit: UnitSettings | None = None) -> Schedule:
    """``unit``'s AutoBidder schedule (default: the first battery unit): every 5 minutes at ``schedule_offset_s``
    past each dispatch-interval boundary; overlapping runs are skipped and a missed run is caught up only
    within one interval. Each unit's cycle carries its own region and cycle settings."""
    unit = unit or settings.battery_units[0]
    cycle = unit.cycle
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "AutobidderCycle",
            CycleInput(unit_id=unit.unit_id, region=unit.region,
                       config=cycle_config(cycle, market_depth=settings.market_depth)),
            id=f"autobidder-{unit.unit_id}",
            task_queue=settings.stack.task_queue,
            execution_timeout=timedelta(minutes=10),
            static_summary=f"AutoBidder cycle of {unit.unit_id} ({unit.region}): bid the next dispatch interval",
            static_details=(f"Every 5 minutes, {cycle.schedule_offset_s} s past the boundary: market data, forecasts, "
                            "plan, bid, submit, record. Market times are interval-ending AEST (UTC+10); the live "
                            "replay maps wall-clock time onto the replay month. Current details show the bid, the "
                            "plan's intent and the outcome."),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=5),
                                                          offset=timedelta(seconds=cycle.schedule_offset_s))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(minutes=5)),
    )


async def ensure_schedules(settings: Settings, client: Client | None = None) -> tuple[str, ...]:
    """Create every battery unit's schedule, or update it to the current configuration; returns their ids."""
    if client is None:
        client = await connect_temporal(settings)
    return tuple([await create_or_update_schedule(client, schedule_id(settings, unit.unit_id),
                                                  cycle_schedule(settings, unit))
                  for unit in settings.battery_units])


async def ensure_schedule(settings: Settings, client: Client | None = None) -> str:
    """Create or update every battery unit's schedule (:func:`ensure_schedules`); returns the first unit's id."""
    return (await ensure_schedules(settings, client))[0]


async def create_or_update_schedule(client: Client, identifier: str, wanted: Schedule) -> str:
    """Create schedule ``identifier`` as ``wanted``, or update it to ``wanted`` if it exists; returns the id."""
    try:
        await client.create_schedule(identifier, wanted)
    except ScheduleAlreadyRunningError:
        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=wanted)

        await client.get_schedule_handle(identifier).update(update)
    return identifier




NODE_LOAD_SCHEDULE_ID = "node-load-sampler"


def node_load_schedule(settings: Settings) -> Schedule:
    """Every 5 minutes (on the grid): record the load of ``[fleet] load_sample_nodes``."""
    from activities.node_load_facts import SampleNodeLoadInput

    return Schedule(
        action=ScheduleActionStartWorkflow(
            "NodeLoadSampler", SampleNodeLoadInput(node_ids=settings.fleet.load_sample_nodes),
            id=NODE_LOAD_SCHEDULE_ID, task_queue=settings.fleet.task_queue,
            execution_timeout=timedelta(minutes=4)),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=5))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(minutes=5)),
    )


async def ensure_node_load_schedule(settings: Settings, client: Client | None = None) -> str:
    """Create or update the node-load sampler's schedule; returns its id."""
    if client is None:
        client = await connect_temporal(settings)
    return await create_or_update_schedule(client, NODE_LOAD_SCHEDULE_ID, node_load_schedule(settings))


DISTRIBUTION_SCHEDULE_ID = "price-forecast-distribution"


def distribution_input(settings: Settings, decision_time: str | None = None,
                       storm_warning: bool = False) -> DistributionInput:
    """The distribution run's input from ``[coopt]`` and ``[cycle]`` (``decision_time``: naive AEST ISO;
    ``storm_warning``: sites raise their backup reserve while they plan on this version)."""
    from activities.distribution_facts import DistributionInput

    coopt = settings.coopt
    return DistributionInput(
        region=settings.vpp_unit.region, vpp_node=coopt.vpp_node, fleet_unit_id=coopt.fleet_unit_id,
        plan_collection_s=coopt.plan_collection_s, hierarchy=coopt.hierarchy or None, poll_nodes=coopt.poll_nodes,
        config=cycle_config(settings.cycle, market_depth=settings.market_depth), decision_time=decision_time,
        dispatch_task_queue=settings.fleet.task_queue, control_interval_s=settings.fleet.control_interval_s,
        storm_warning=storm_warning, dispatch_intervals=settings.coopt.dispatch_intervals)


def distribution_schedule(settings: Settings) -> Schedule:
    """Every ``[coopt] distribution_every_minutes`` (on the grid): forecast, publish to sites, collect plans,
    bid the fleet, dispatch its intervals until the next round's first. A round dispatches its last
    interval while the next round starts, so rounds may overlap (each dispatches its own intervals)."""
    every = timedelta(minutes=settings.coopt.distribution_every_minutes)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "PriceForecastDistribution", distribution_input(settings), id=DISTRIBUTION_SCHEDULE_ID,
            task_queue=settings.stack.task_queue, execution_timeout=2 * every),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.ALLOW_ALL, catchup_window=every),
    )


async def ensure_distribution_schedule(settings: Settings, client: Client | None = None) -> str:
    """Create or update the price-forecast distribution's schedule; returns its id."""
    if client is None:
        client = await connect_temporal(settings)
    return await create_or_update_schedule(client, DISTRIBUTION_SCHEDULE_ID, distribution_schedule(settings))


def operator_input(settings: Settings, unit_id: str | None = None) -> OperatorInput:
    """The UnitOperator's input for ``unit_id`` (default: the first battery unit): that unit's SoC limits
    (fractions of capacity) and the market's limit on a rebid explanation (characters)."""
    from activities.operator_facts import OperatorInput

    unit = settings.unit(unit_id) if unit_id else settings.battery_units[0]
    return OperatorInput(unit_id=unit.unit_id, soc_min_fraction=unit.battery.soc_min_fraction,
                         soc_max_fraction=unit.battery.soc_max_fraction,
                         rebid_reason_max_chars=settings.market.rebid_explanation_max_chars)


async def ensure_operators(settings: Settings, client: Client | None = None) -> tuple[str, ...]:
    """Start every battery unit's UnitOperator workflow unless it runs (its page shows the P&L, the bid in
    force and the controls); returns their ids."""
    from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

    from activities.operator_facts import operator_workflow_id
    from workflows import search_attributes

    if client is None:
        client = await connect_temporal(settings)
    identifiers = []
    for unit in settings.battery_units:
        handle = await client.start_workflow(
            "UnitOperator", operator_input(settings, unit.unit_id), id=operator_workflow_id(unit.unit_id),
            task_queue=settings.stack.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Operator controls and P&L of {unit.unit_id} ({unit.region})",
            # VppUnit = "<unit>" in the UI lists the unit's operator page with its cycles.
            search_attributes=TypedSearchAttributes([SearchAttributePair(search_attributes.UNIT, unit.unit_id),
                                                     SearchAttributePair(search_attributes.REGION, unit.region)]))
        identifiers.append(handle.id)
    return tuple(identifiers)


async def ensure_operator(settings: Settings, client: Client | None = None) -> str:
    """Start every battery unit's UnitOperator workflow (:func:`ensure_operators`); returns the first one's id."""
    return (await ensure_operators(settings, client))[0]
