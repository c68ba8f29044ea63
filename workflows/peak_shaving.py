"""The peak-shaving workflow: forecast a node's load, find the peaks worth shaving, start dispatch events.

forecast the node's load (activity: PostgreSQL history + statsmodels) ∥ read what its batteries can do
(activity: asset graph + the fleet gateway's aggregate) -> plan (activity ``plan_peak_shaves``: the pure
:func:`algorithms.fleet.peak_shaving.plan_node_peak_shaving`) -> start one child ``VppDispatchEvent``
per shave (target = the shave's MW) and one per lockout (target 0 MW: the batteries neither charge nor
discharge, so they do not recharge right after the peak; see :mod:`algorithms.fleet.peak_shaving` for
the rule) -> return the plan. The workflow only orchestrates: it imports no numpy (an import-linter
contract in pyproject.toml keeps it so).

Children are started with ``parent_close_policy=ABANDON`` (they wait for their own window and outlive
this run) and ids made from the node and the start time (``peak-shave-<node>-<YYYYMMDDTHHMM>Z``,
``peak-lockout-<node>-<…>Z``) with ``REJECT_DUPLICATE``: a re-run that plans the same shave finds the
event already there (running or finished) and starts nothing twice; the plan marks it ``started=False``.
A re-run whose forecast moves a shave's start plans a new id; schedule the workflow once per planning
horizon (e.g. daily, before the evening) or lock the plan with a fixed ``origin_ms``.

Energy is the aggregate's **lower bound** (cautious: the plan never counts on energy the fleet may
not have). The ``plan`` query shows the plan while the run proceeds. Triggered by a Temporal
Schedule (daily or hourly) or an operator.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.dispatch_facts import DISPATCH_WORKFLOW, DispatchEventInput
    from activities.peak_shaving_facts import (
        INSUFFICIENT_HISTORY,
        INVALID_PEAK_SHAVING,
        FleetCapacity,
        FleetCapacityInput,
        NodeForecast,
        NodeForecastInput,
        PeakShavingInput,
        PeakShavingPlan,
        PeakShavingPlanInput,
        ScheduledEvent,
    )
    from algorithms.fleet.peak_shaving_types import PlannedPeakShaving

ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                             maximum_attempts=5, non_retryable_error_types=[INVALID_PEAK_SHAVING, INSUFFICIENT_HISTORY])


def event_id(kind: str, node_id: str, start_ms: int) -> str:
    """Deterministic dispatch event id of a shave or lockout: ``peak-<kind>-<node>-<YYYYMMDDTHHMM>Z``."""
    moment = datetime.fromtimestamp(start_ms / 1000.0, tz=UTC)
    return f"peak-{kind}-{node_id}-{moment:%Y%m%dT%H%M}Z"


@workflow.defn(name="PeakShaving")
class PeakShaving:
    """One planning run for one node (workflow id chosen by the caller, e.g. per node and day)."""

    def __init__(self) -> None:
        self._plan: PeakShavingPlan | None = None

    @workflow.query
    def plan(self) -> PeakShavingPlan | None:
        """The plan as it stands (None before the run has started)."""
        return self._plan

    @workflow.run
    async def run(self, request: PeakShavingInput) -> PeakShavingPlan:
        origin_ms = request.origin_ms if request.origin_ms is not None else int(workflow.now().timestamp() * 1000)
        self._plan = PeakShavingPlan(node_id=request.node_id, threshold_mw=request.threshold_mw,
                                     origin_ms=origin_ms, stage="forecasting")
        rules = request.rules
        quantiles = tuple(sorted({0.1, 0.5, 0.9, rules.quantile}))
        forecast_fact, capacity = await asyncio.gather(
            workflow.execute_activity(
                "forecast_node_load",
                NodeForecastInput(node_id=request.node_id, load_column=rules.load_column, origin_ms=origin_ms,
                                  history_days=request.history_days, horizon_intervals=request.horizon_intervals,
                                  quantiles=quantiles),
                result_type=NodeForecast, start_to_close_timeout=timedelta(minutes=2), retry_policy=ACTIVITY_RETRY),
            workflow.execute_activity(
                "node_fleet_capacity",
                FleetCapacityInput(node_id=request.node_id, hierarchy=request.hierarchy, as_of_ms=origin_ms),
                result_type=FleetCapacity, start_to_close_timeout=timedelta(seconds=60), retry_policy=ACTIVITY_RETRY))
        self._plan = replace(self._plan, stage="planning")
        planned: PlannedPeakShaving = await workflow.execute_activity(
            "plan_peak_shaves",
            PeakShavingPlanInput(node_id=request.node_id, threshold_mw=request.threshold_mw, rules=rules,
                                 forecast=forecast_fact, capacity=capacity),
            result_type=PlannedPeakShaving, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ACTIVITY_RETRY)
        shaves = planned.shaves
        self._plan = PeakShavingPlan(
            node_id=request.node_id, threshold_mw=request.threshold_mw, origin_ms=origin_ms, stage="scheduling",
            forecast_method=planned.forecast_method, forecast_peak_mw=planned.forecast_peak_mw,
            peaks_found=planned.peaks_found, energy_budget_mwh=planned.energy_budget_mwh,
            max_discharge_mw=capacity.max_discharge_mw, fleet=capacity.description, shaves=shaves)
        events: list[ScheduledEvent] = []
        for shave in shaves:
            events.append(await self._start_event(request, "shave", shave.start_ms, shave.end_ms, shave.target_mw,
                                                  capacity.max_discharge_mw))
            if shave.lockout_end_ms > shave.end_ms:
                events.append(await self._start_event(request, "lockout", shave.end_ms, shave.lockout_end_ms, 0.0,
                                                      capacity.max_discharge_mw))
            self._plan = replace(self._plan, events=tuple(events))
        self._plan = replace(self._plan, events=tuple(events), stage="done")
        return self._plan

    async def _start_event(self, request: PeakShavingInput, kind: str, start_ms: int, end_ms: int, target_mw: float,
                           max_discharge_mw: float) -> ScheduledEvent:
        """Start one child dispatch event (abandoned on close, never twice for one id)."""
        child_id = event_id(kind, request.node_id, start_ms)
        event = DispatchEventInput(event_id=child_id, node_id=request.node_id, target_mw=target_mw, start_ms=start_ms,
                                   end_ms=end_ms, hierarchy=request.hierarchy,
                                   control_interval_s=request.control_interval_s,
                                   max_abs_target_mw=max(max_discharge_mw, abs(target_mw)))
        try:
            await workflow.start_child_workflow(
                DISPATCH_WORKFLOW, event, id=child_id, parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            workflow.logger.info("dispatch event %s already exists; not starting it again", child_id)
            return ScheduledEvent(child_id, kind, start_ms, end_ms, target_mw, started=False)
        return ScheduledEvent(child_id, kind, start_ms, end_ms, target_mw, started=True)
