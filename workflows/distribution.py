"""Every 15 minutes: forecast the region's prices, send them to every site, collect the sites' plans and
bid the VPP node's aggregate as one unit.

``PriceForecastDistribution`` (started by the ``price-forecast-distribution`` schedule) runs on the
AutoBidder task queue, where the archive, the market-data service and the SQS forecaster pool are:

1. ``fetch_distribution_snapshot``: the region's market data as of the decision time (archived);
2. ``request_forecast``: the same worker pool and forecaster the 5-minute cycle uses (ENERGY, quantiles);
3. ``publish_price_forecast``: the forecast becomes a new version at the fleet gateway (push to push-mode
   sites at once; poll-mode sites — the configured programmes — fetch it at their next poll);
4. wait ``plan_collection_s`` while sites plan on the device and send their plans back;
5. ``bid_fleet_plans``: aggregate the node's plans with their uncertainty (sites without a plan are
   estimated, plans on older versions are counted) and build and validate the fleet unit's bid; an
   invalid bid is reported with its violations and never submitted;
6. ``submit_fleet_bid``: a valid bid goes to the market as the fleet unit's; the market's dispatch
   instruction for its first interval comes back, and flows down the VPP's control loop as a
   ``VppDispatchEvent`` over that interval at the node (a child on the VPP task queue, abandoned when
   this run ends);
7. for each following interval up to ``dispatch_intervals`` (3 = the 15 minutes until the next round's
   first interval), the run sleeps until the interval starts, asks the market for its instruction
   (``fleet_dispatch_instruction``) and starts its dispatch event. Rounds therefore overlap by their
   last interval (the schedule allows it); each dispatches its own intervals only.

The workflow holds no business logic: each step is an activity over pure functions
(``algorithms/fleet/``: ``forecast_publication.py``, ``plan_aggregate.py``, ``fleet_bid.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.cycle_facts import ForecastTaskInput
    from activities.dispatch_facts import DISPATCH_WORKFLOW, DispatchEventInput
    from activities.distribution_facts import (
        DISTRIBUTION_WORKFLOW,
        DistributionInput,
        DistributionResult,
        FleetBidOutcome,
        FleetBidRequest,
        FleetInstruction,
        FleetSubmitted,
        InstructionRequest,
        Published,
        PublishRequest,
        SnapshotRequest,
        SubmitFleetBidRequest,
    )
    from algorithms.common.products import ENERGY
    from algorithms.common.replay_clock import (
        INTERVAL,
        cycle_market_time,
        cycle_timeline,
        market_offset_ms,
        wall_clock_ms,
    )
    from pools.replies import WorkerAnswer

QUICK_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1))
























@workflow.defn(name=DISTRIBUTION_WORKFLOW)
class PriceForecastDistribution:
    """One 15-minute distribution round (see the module docstring)."""

    def __init__(self) -> None:
        self._stage = "starting"

    @workflow.query
    def stage(self) -> str:
        """The step the run is at (fetch, forecast, publish, collect, bid, done)."""
        return self._stage

    @workflow.run
    async def run(self, request: DistributionInput) -> DistributionResult:
        config = request.config
        run_id = workflow.info().workflow_id
        started = workflow.now()
        decision_time = (datetime.fromisoformat(request.decision_time) if request.decision_time
                         else cycle_market_time(started, config.clock, datetime.fromisoformat(config.replay_start),
                                                config.replay_days))
        timeline = cycle_timeline(decision_time, market_data_cutoff_s=config.market_data_cutoff_s,
                                  gate_closure_margin_s=config.gate_closure_margin_s,
                                  minimum_lead_s=config.minimum_lead_s)
        first_interval = timeline.dispatch_interval
        started_ms = int(started.timestamp() * 1000)
        # Market time − wall clock, so the sites' wall-clock plans line up with market intervals.
        offset_ms = market_offset_ms(decision_time, started)
        self._stage = "fetch"
        snapshot_key: str = await workflow.execute_activity(
            "fetch_distribution_snapshot",
            SnapshotRequest(run_id=run_id, region=request.region, first_interval=first_interval.isoformat(),
                            as_of=decision_time.isoformat(), history_intervals=config.history_intervals),
            result_type=str, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK_RETRY)
        self._stage = "forecast"
        answer: WorkerAnswer = await workflow.execute_activity(
            "request_forecast",
            ForecastTaskInput(cycle_id=run_id, product=ENERGY, snapshot_key=snapshot_key,
                              decision_time=decision_time.isoformat(), first_interval=first_interval.isoformat(),
                              config=config),
            result_type=WorkerAnswer, activity_id=f"forecast-{ENERGY}",
            start_to_close_timeout=timedelta(seconds=config.worker_answer_timeout_s),
            schedule_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1)))
        self._stage = "publish"
        first_start_market = first_interval - INTERVAL
        published: Published = await workflow.execute_activity(
            "publish_price_forecast",
            PublishRequest(forecast_key=answer.archive_key, region=request.region, published_at_ms=started_ms,
                           start_ms=wall_clock_ms(first_start_market, offset_ms), poll_nodes=request.poll_nodes,
                           hierarchy=request.hierarchy, storm_warning=request.storm_warning),
            result_type=Published, start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK_RETRY)
        self._stage = "collect"
        await workflow.sleep(timedelta(seconds=request.plan_collection_s))
        self._stage = "bid"
        fleet_bid: FleetBidOutcome = await workflow.execute_activity(
            "bid_fleet_plans",
            FleetBidRequest(run_id=run_id, vpp_node=request.vpp_node, hierarchy=request.hierarchy,
                            fleet_unit_id=request.fleet_unit_id, region=request.region, version=published.version,
                            dispatch_interval=first_interval.isoformat(),
                            offer_time=(decision_time + (workflow.now() - started)).isoformat(),
                            market_offset_ms=offset_ms),
            result_type=FleetBidOutcome, start_to_close_timeout=timedelta(seconds=120), retry_policy=QUICK_RETRY)
        submitted: FleetSubmitted | None = None
        event_ids: list[str] = []
        if fleet_bid.valid:
            self._stage = "submit"
            submitted = await workflow.execute_activity(
                "submit_fleet_bid",
                SubmitFleetBidRequest(bid_key=fleet_bid.bid_key, fleet_unit_id=request.fleet_unit_id,
                                      dispatch_interval=first_interval.isoformat()),
                result_type=FleetSubmitted, start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK_RETRY)
            if submitted.status == "ACCEPTED" and request.dispatch_task_queue:
                self._stage = "dispatch"
                event_ids.append(await self._dispatch(request, submitted.dispatch_mw, fleet_bid.registered_power_mw,
                                                      first_start_market, offset_ms))
                for k in range(1, request.dispatch_intervals):
                    event_ids.append(await self._follow(request, fleet_bid.registered_power_mw,
                                                        first_start_market + k * INTERVAL, offset_ms))
        self._stage = "done"
        workflow.upsert_memo({"version": published.version, "fleet_bid": fleet_bid.summary,
                              "aggregate": fleet_bid.aggregate,
                              "market": _market_text(submitted),
                              "dispatch_events": [event_id for event_id in event_ids if event_id]})
        return DistributionResult(version=published.version, decision_time=decision_time.isoformat(),
                                  published=published, fleet_bid=fleet_bid, submitted=submitted,
                                  dispatch_event_ids=tuple(event_ids))

    async def _follow(self, request: DistributionInput, registered_power_mw: float, interval_start: datetime,
                      offset_ms: int) -> str:
        """At the start of a later interval of the bid: ask the market for its instruction, dispatch it."""
        await workflow.sleep(max(wall_clock_ms(interval_start, offset_ms) / 1000
                                 - workflow.now().timestamp(), 0.0))
        instruction: FleetInstruction = await workflow.execute_activity(
            "fleet_dispatch_instruction",
            InstructionRequest(fleet_unit_id=request.fleet_unit_id,
                               dispatch_interval=(interval_start + INTERVAL).isoformat()),
            result_type=FleetInstruction, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK_RETRY)
        return await self._dispatch(request, instruction.dispatch_mw, registered_power_mw, interval_start,
                                    offset_ms)

    async def _dispatch(self, request: DistributionInput, target_mw: float | None, registered_power_mw: float,
                        interval_start: datetime, offset_ms: int) -> str:
        """Start the dispatch event carrying an interval's instruction (once per id); its id, or "" when the
        interval is already over or the market gave no instruction."""
        start_ms = wall_clock_ms(interval_start, offset_ms)
        end_ms = wall_clock_ms(interval_start + INTERVAL, offset_ms)
        now_ms = int(workflow.now().timestamp() * 1000)
        if end_ms <= now_ms + 1000 or target_mw is None:
            return ""
        child_id = f"fleet-dispatch-{request.fleet_unit_id}-{interval_start:%Y%m%dT%H%M}-{start_ms}"
        event = DispatchEventInput(event_id=child_id, node_id=request.vpp_node, target_mw=target_mw,
                                   start_ms=max(start_ms, now_ms), end_ms=end_ms, hierarchy=request.hierarchy,
                                   control_interval_s=request.control_interval_s,
                                   max_abs_target_mw=max(registered_power_mw, abs(target_mw)))
        try:
            await workflow.start_child_workflow(
                DISPATCH_WORKFLOW, event, id=child_id, task_queue=request.dispatch_task_queue,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            workflow.logger.info("dispatch event %s already exists; not starting it again", child_id)
        return child_id






def _market_text(submitted: FleetSubmitted | None) -> str:
    """The market's answer in a few words for the memo."""
    if submitted is None:
        return "not submitted"
    if submitted.dispatch_mw is None:
        return f"{submitted.status}: {'; '.join(submitted.reasons)}"
    return f"{submitted.status}, dispatched {submitted.dispatch_mw:.3f} MW"
