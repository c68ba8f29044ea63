"""The 5-minute AutoBidder cycle.

operator controls + market data (gRPC) -> forecasts (SQS, every product in one activity, the requests shared by
the region's units deciding from the same snapshot) -> optimise (SQS) -> build + validate the bid (V1–V8) ->
submit (gRPC, idempotent) -> record. The stages run as local activities (LOCAL_STAGES_PATCH); cycles started
before the patches ran them as activities, with one forecast activity per product.

The workflow only orchestrates: every decision about prices, plans and bids is made by pure functions
behind the activities. Operator controls (workflows/operator.py) are read with the market data: a paused
unit's cycle records ``PAUSED`` and submits nothing (the bid in force stands); a SoC hold raises the
battery's minimum SoC for the optimiser and the bid builder; a pending manual rebid is submitted even
without material change, with the operator's reason in its explanation. Its state is the tuple of
immutable :class:`StageFact` s, readable with the ``facts`` / ``state`` queries, and mirrored into
search attributes and memo for the Web UI.

The Temporal UI is the trading desk's console: each activity carries a one-line summary (what it does for
which interval, market time AEST), and the workflow's current details (markdown, rendered by the pure
functions of algorithms/market/console.py from the facts) show the unit, the interval in market time with
its zone, the plan's intent, the bid for the interval as a table, the outcome (dispatched MW, price,
revenue — counted once per interval) and why nothing was submitted when nothing was. The memo carries the
same as plain values (``console``); once recorded, the cycle signals its unit's ``UnitOperator`` workflow
(``cycle_recorded``) so that the operator's page refreshes its P&L (ignored when that workflow is not
running).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.cycle_facts import (
        BidBuilt,
        BidSubmitted,
        BuildBidInput,
        CycleConfig,
        CycleInput,
        CycleResult,
        CycleState,
        FetchInput,
        ForecastsAnswered,
        ForecastsInput,
        ForecastTaskInput,
        MarketFetched,
        OptimisationTaskInput,
        OutcomeRecorded,
        RecordInput,
        StageFact,
        SubmitInput,
        cycle_view,
    )
    from activities.operator_facts import CYCLE_RECORDED_SIGNAL, operator_workflow_id
    from algorithms.common.replay_clock import cycle_market_time, cycle_timeline, market_now
    from algorithms.market.console import (
        CycleView,
        cycle_details_markdown,
        cycle_line,
        cycle_summary,
        interval_text,
        market_time_iso,
        market_time_text,
    )
    from pools.replies import WORKER_FAILED_ERROR_TYPE, WorkerAnswer
    from workflows import search_attributes as sa
    from workflows.pending_upserts import PendingUpserts

# Market time now (naive AEST) and the time left until gate closure.
_MarketClock = Callable[[], datetime]
_Remaining = Callable[[], timedelta]

# Business failures the cycle ends with (ApplicationError types, non-retryable).
GATE_CLOSURE_MISSED = "GateClosureMissed"
NO_VALID_BID = "NoValidBid"
BID_REJECTED = "BidRejected"
# workflow.patched id of the console: the memo's console values and the cycle_recorded signal to the unit's
# operator workflow.
TELL_OPERATOR_PATCH = "tell-operator-cycle-recorded"
# workflow.patched id of the DAILY bid: the next trading day's DAILY bid is submitted after the interval's bid.
DAILY_BID_PATCH = "submit-daily-bid"
# workflow.patched id of the region's forecasts: the first fetch is as of the decision time, and one activity
# asks for every product's forecast as of the snapshot's as-of (requests shared by the units of the region
# deciding from the same snapshot) instead of one activity per product as of the forecast stage's market time.
SHARED_FORECASTS_PATCH = "region-forecasts-one-activity"
# workflow.patched id of the local stages: fetch, forecasts, optimisation, build + validate, submit and record run
# as local activities (in the worker that runs the cycle, recorded as markers) instead of tasks through the
# server; the optimisation waits for the pool's answer in the worker process (optimise_plan) instead of being
# completed by the result relay (request_optimisation).
LOCAL_STAGES_PATCH = "cycle-local-stages"
# workflow.patched id of the upserts sent together: the cycle's memo and search-attribute changes are held and sent
# as one memo upsert and one search-attribute upsert before the cycle waits on anything outside its worker (a
# timer, a signal, an activity through the server) and when it ends, instead of one upsert per change (about
# twenty commands per cycle). The memo and search attributes a cycle ends with are the same.
UPSERTS_TOGETHER_PATCH = "cycle-upserts-together"
# workflow.patched id of the operator told by the record stage: the record activity signals the unit's UnitOperator
# workflow (``cycle_recorded``, the cycle's line) through the worker's Temporal client once it has the outcome,
# instead of the cycle signalling it and waiting for the server to deliver the signal — which took a second
# workflow task per cycle (the signal's result), five events of 27. The operator's page gets the same line.
OPERATOR_TOLD_BY_RECORD_PATCH = "cycle-operator-told-by-record"

QUICK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=10))
WORKER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                           non_retryable_error_types=[WORKER_FAILED_ERROR_TYPE])


def _iso(moment: datetime) -> str:
    return moment.isoformat()


@workflow.defn(name="AutobidderCycle")
class AutobidderCycle:
    """One bidding cycle for one unit and one dispatch interval."""

    def __init__(self) -> None:
        self._facts: list[StageFact] = []
        self._stage = "starting"
        self._unit_id = ""
        self._region = ""
        self._dispatch_interval: str | None = None
        self._bid_id: str | None = None
        self._outcome: str | None = None
        self._search_attributes = True
        self._started_utc: datetime | None = None
        self._decision_time: datetime | None = None
        self._plan_key: str | None = None
        self._not_submitted: str | None = None
        self._shared_forecasts = False
        self._local_stages = False
        self._pending: PendingUpserts | None = None

    @workflow.query
    def facts(self) -> list[StageFact]:
        """The immutable stage facts so far, in order."""
        return list(self._facts)

    @workflow.query
    def state(self) -> CycleState:
        """Where the cycle is: stage, dispatch interval, bid id, outcome and facts."""
        return CycleState(
            cycle_id=workflow.info().workflow_id,
            unit_id=self._unit_id,
            region=self._region,
            dispatch_interval=self._dispatch_interval,
            stage=self._stage,
            bid_id=self._bid_id,
            outcome=self._outcome,
            facts=tuple(self._facts),
        )

    @workflow.run
    async def run(self, cycle: CycleInput) -> CycleResult:
        info = workflow.info()
        cycle_id = info.workflow_id
        config = cycle.config
        self._unit_id, self._region = cycle.unit_id, cycle.region
        started_utc = workflow.now()
        decision_time = (
            datetime.fromisoformat(cycle.decision_time)
            if cycle.decision_time
            else cycle_market_time(started_utc, config.clock, datetime.fromisoformat(config.replay_start),
                                   config.replay_days)
        )
        timeline = cycle_timeline(decision_time, market_data_cutoff_s=config.market_data_cutoff_s,
                                  gate_closure_margin_s=config.gate_closure_margin_s,
                                  minimum_lead_s=config.minimum_lead_s)
        self._dispatch_interval = _iso(timeline.dispatch_interval)
        self._started_utc, self._decision_time = started_utc, decision_time
        gate_closure_utc = started_utc + (timeline.gate_closure - decision_time)
        self._search_attributes = config.search_attributes
        if workflow.patched(UPSERTS_TOGETHER_PATCH):
            self._pending = PendingUpserts()
        self._upsert(sa.UNIT.value_set(cycle.unit_id), sa.REGION.value_set(cycle.region),
                     sa.DISPATCH_INTERVAL.value_set(_as_utc(timeline.dispatch_interval)),
                     sa.MARKET_INTERVAL.value_set(market_time_text(timeline.dispatch_interval)))
        self._show(self._view("starting"))

        def now_market() -> datetime:
            return market_now(decision_time, started_utc, workflow.now())

        def time_left() -> timedelta:
            return gate_closure_utc - workflow.now()

        try:
            self._shared_forecasts = workflow.patched(SHARED_FORECASTS_PATCH)
            self._local_stages = self._shared_forecasts and workflow.patched(LOCAL_STAGES_PATCH)
            fetched = await self._fetch(cycle, cycle_id, timeline.dispatch_interval, now_market,
                                        started_utc + (timeline.data_cutoff - decision_time),
                                        decision_time if self._shared_forecasts else None)
            if fetched.paused:
                return await self._paused(cycle, cycle_id, timeline.dispatch_interval, started_utc, decision_time)
            if self._shared_forecasts:
                forecasts = await self._region_forecasts(cycle, cycle_id, fetched, timeline.dispatch_interval,
                                                         time_left)
            else:
                forecasts = await self._forecast(cycle_id, fetched, timeline.dispatch_interval, now_market(),
                                                 config, time_left)
            plan = await self._optimise(cycle, cycle_id, fetched, forecasts, timeline.dispatch_interval, time_left)
            built = await self._build(cycle, cycle_id, plan, fetched, timeline.dispatch_interval, now_market(),
                                      config, time_left)
            if time_left() <= timedelta(0):
                raise ApplicationError(
                    f"gate closure for {timeline.dispatch_interval:%Y-%m-%d %H:%M} passed before submission",
                    type=GATE_CLOSURE_MISSED, non_retryable=True)
            bid_id: str | None
            manual_rebid: str | None = None
            if built.rebid:
                assert built.bid_key is not None
                submitted = await self._submit(cycle_id, built.bid_key, time_left)
                status, bid_id = "SUBMITTED", submitted.bid_id
                # A duplicate is a bid submitted earlier: the manual rebid stays pending for the next cycle.
                manual_rebid = None if submitted.duplicate else built.manual_rebid_reason
            else:
                status, bid_id = "NO_REBID", built.standing_bid_id
                self._bid_id = bid_id
                self._not_submitted = f"the new bid does not differ materially: {built.summary}"
            latency_s = (workflow.now() - started_utc).total_seconds()
            if built.daily_summary and workflow.patched(DAILY_BID_PATCH):
                if built.daily_bid_key:
                    await self._submit_daily(cycle_id, built.daily_bid_key, built.daily_summary)
                else:  # due, but no DAILY candidate passed validation: nothing submitted, the reasons recorded
                    self._add_fact("daily", built.daily_summary)
            outcome = await self._record(cycle, cycle_id, timeline.dispatch_interval, started_utc, status,
                                         bid_id, None, manual_rebid)
            self._outcome = status
            self._upsert(sa.OUTCOME.value_set(status))
            return self._result(cycle_id, timeline.dispatch_interval, status, bid_id, outcome, latency_s)
        except Exception as failure:  # business failures, activity failures, timeouts: recorded, then raised
            await self._record_failure(cycle, cycle_id, timeline.dispatch_interval, started_utc, failure)
            raise
        finally:
            self._flush()

    # -- stages ---------------------------------------------------------------------------------

    async def _fetch(self, cycle: CycleInput, cycle_id: str, dispatch_interval: datetime,
                     now_market: _MarketClock, cutoff_utc: datetime, first_as_of: datetime | None) -> MarketFetched:
        """Fetch the snapshot, polling until the latest interval's price is known or the cut-off passes; the
        first fetch is as of ``first_as_of`` (the decision time, AEST) when given, every other as of the
        market time now."""
        config = cycle.config
        self._enter("fetch")
        summary = f"operator controls and {cycle.region} market data for {interval_text(dispatch_interval)}"
        while True:
            use_estimates = workflow.now() >= cutoff_utc
            as_of = first_as_of if first_as_of is not None else now_market()
            first_as_of = None
            fetched: MarketFetched = await self._stage_activity(
                "fetch_market_snapshot",
                FetchInput(cycle_id=cycle_id, unit_id=cycle.unit_id, region=cycle.region,
                           dispatch_interval=_iso(dispatch_interval), as_of=_iso(as_of),
                           history_intervals=config.history_intervals, use_estimates=use_estimates),
                result_type=MarketFetched,
                start_to_close_timeout=timedelta(seconds=20),
                retry_policy=QUICK_RETRY,
                summary=summary,
            )
            if fetched.paused or fetched.latest_known or use_estimates:
                break
            workflow.logger.info("market data %s for %s; waiting", fetched.latest_quality, fetched.latest_interval)
            wait_s = min(float(config.market_data_poll_s), (cutoff_utc - workflow.now()).total_seconds())
            self._flush()
            await workflow.sleep(max(wait_s, 0.0))
        if fetched.paused:
            self._add_fact("fetch", f"bidding paused by the operator ({fetched.paused_reason or 'no reason'}): "
                           "market data not fetched, no bid submitted; the bid in force stands")
            self._upsert_memo({"controls": {"paused": True, "paused_reason": fetched.paused_reason}})
            return fetched
        notes = "; ".join(fetched.quality_notes)
        self._add_fact("fetch", f"{len(fetched.products)} products, latest {fetched.latest_interval} "
                       f"{fetched.latest_quality}, SoC {fetched.state_of_charge_mwh:.1f} MWh"
                       + (f" ({notes})" if notes else ""), (fetched.snapshot_key,))
        controls = _controls_text(fetched)
        if controls:
            self._add_fact("controls", controls)
            self._upsert_memo({"controls": {"soc_floor_fraction": fetched.soc_floor_fraction,
                                               "soc_floor_until": fetched.soc_floor_until,
                                               "manual_rebid_reason": fetched.manual_rebid_reason}})
        return fetched

    async def _forecast(self, cycle_id: str, fetched: MarketFetched, dispatch_interval: datetime,
                        decision_time: datetime, config: CycleConfig,
                        time_left: _Remaining) -> list[WorkerAnswer]:
        self._enter("forecast")
        self._flush()
        timeout = _bounded(timedelta(seconds=config.worker_answer_timeout_s), time_left())
        tasks = [
            workflow.execute_activity(
                "request_forecast",
                ForecastTaskInput(cycle_id=cycle_id, product=product, snapshot_key=fetched.snapshot_key,
                                  decision_time=_iso(decision_time), first_interval=_iso(dispatch_interval),
                                  config=config),
                result_type=WorkerAnswer,
                activity_id=f"forecast-{product}",
                start_to_close_timeout=timeout,
                schedule_to_close_timeout=_bounded(time_left(), time_left()),
                retry_policy=WORKER_RETRY,
                summary=f"{product} price forecast from {interval_text(dispatch_interval)} (SQS pool)",
            )
            for product in fetched.products
        ]
        answers: list[WorkerAnswer] = list(await asyncio.gather(*tasks))
        slowest = max((a.compute_ms for a in answers), default=0.0)
        self._add_fact("forecast", f"{len(answers)} forecasts ({config.forecast_algorithm} "
                       f"v{config.forecast_algorithm_version}), slowest {slowest:.0f} ms",
                       tuple(a.archive_key for a in answers))
        return answers

    async def _region_forecasts(self, cycle: CycleInput, cycle_id: str, fetched: MarketFetched,
                                dispatch_interval: datetime, time_left: _Remaining) -> list[WorkerAnswer]:
        """Every product's forecast in one activity, as of the snapshot's as-of: the requests are the region's
        (the units of the region deciding from the same snapshot share them)."""
        config = cycle.config
        self._enter("forecast")
        answered: ForecastsAnswered = await self._stage_activity(
            "request_forecasts",
            ForecastsInput(cycle_id=cycle_id, region=cycle.region, products=fetched.products,
                           snapshot_key=fetched.snapshot_key, first_interval=_iso(dispatch_interval), config=config),
            result_type=ForecastsAnswered,
            activity_id="forecasts",
            start_to_close_timeout=_bounded(timedelta(seconds=config.worker_answer_timeout_s), time_left()),
            schedule_to_close_timeout=_bounded(time_left(), time_left()),
            retry_policy=WORKER_RETRY,
            summary=f"{len(fetched.products)} {cycle.region} price forecasts from {interval_text(dispatch_interval)} "
                    "(SQS pool, shared by the region's units)",
        )
        answers = list(answered.answers)
        slowest = max((a.compute_ms for a in answers), default=0.0)
        self._add_fact("forecast", f"{len(answers)} forecasts ({config.forecast_algorithm} "
                       f"v{config.forecast_algorithm_version}), slowest {slowest:.0f} ms; {answered.sent} asked, "
                       f"{answered.shared} shared with other {cycle.region} cycles",
                       tuple(a.archive_key for a in answers))
        return answers

    async def _optimise(self, cycle: CycleInput, cycle_id: str, fetched: MarketFetched,
                        forecasts: list[WorkerAnswer], dispatch_interval: datetime,
                        time_left: _Remaining) -> WorkerAnswer:
        config = cycle.config
        self._enter("optimise")
        plan: WorkerAnswer = await self._stage_activity(
            # Local: asked and answered in the worker process; else completed by the result relay.
            "optimise_plan" if self._local_stages else "request_optimisation",
            OptimisationTaskInput(cycle_id=cycle_id, unit_id=cycle.unit_id,
                                  forecast_keys=tuple(a.archive_key for a in forecasts),
                                  first_interval=_iso(dispatch_interval),
                                  state_of_charge_mwh=fetched.state_of_charge_mwh, net_mw=fetched.net_mw,
                                  config=config, soc_floor_fraction=fetched.soc_floor_fraction,
                                  snapshot_key=fetched.snapshot_key),
            result_type=WorkerAnswer,
            activity_id="optimise",
            start_to_close_timeout=_bounded(timedelta(seconds=config.worker_answer_timeout_s), time_left()),
            schedule_to_close_timeout=_bounded(time_left(), time_left()),
            retry_policy=WORKER_RETRY,
            summary=f"energy + FCAS plan of {config.horizon_intervals} intervals from "
                    f"{interval_text(dispatch_interval)} (SQS pool)",
        )
        self._plan_key = plan.archive_key or None
        reason = f": {plan.status_reason}" if plan.status_reason and plan.status != "OPTIMAL" else ""
        self._add_fact("optimise", f"plan {plan.status} in {plan.compute_ms:.0f} ms{reason}", (plan.archive_key,))
        return plan

    async def _build(self, cycle: CycleInput, cycle_id: str, plan: WorkerAnswer, fetched: MarketFetched,
                     dispatch_interval: datetime, offer_time: datetime, config: CycleConfig,
                     time_left: _Remaining) -> BidBuilt:
        self._enter("bid")
        built: BidBuilt = await self._stage_activity(
            "build_and_validate_bid",
            BuildBidInput(cycle_id=cycle_id, unit_id=cycle.unit_id, plan_key=plan.archive_key,
                          dispatch_interval=_iso(dispatch_interval), offer_time=_iso(offer_time),
                          version=config.bid_version, state_of_charge_mwh=fetched.state_of_charge_mwh,
                          products=fetched.products, soc_floor_fraction=fetched.soc_floor_fraction,
                          manual_rebid_reason=fetched.manual_rebid_reason),
            result_type=BidBuilt,
            start_to_close_timeout=_bounded(timedelta(seconds=30), time_left()),
            retry_policy=QUICK_RETRY,
            summary=f"build and validate the bid from {interval_text(dispatch_interval)} (V1–V8)",
        )
        keys = (built.bid_key,) if built.bid_key else ()
        self._add_fact("bid", built.summary + (f"; rejected: {'; '.join(built.violations)}"
                                               if built.violations else ""), keys)
        if not built.valid or (built.rebid and built.bid_key is None):
            raise ApplicationError(f"no valid bid for {dispatch_interval:%Y-%m-%d %H:%M}: "
                                   + "; ".join(built.violations), type=NO_VALID_BID, non_retryable=True)
        return built

    async def _submit(self, cycle_id: str, bid_key: str, time_left: _Remaining) -> BidSubmitted:
        self._enter("submit")
        submitted: BidSubmitted = await self._stage_activity(
            "submit_bid",
            SubmitInput(cycle_id=cycle_id, bid_key=bid_key),
            result_type=BidSubmitted,
            start_to_close_timeout=timedelta(seconds=15),
            schedule_to_close_timeout=_bounded(time_left(), time_left()),
            retry_policy=QUICK_RETRY,
            summary="submit the bid to the market (idempotent)",
        )
        self._bid_id = submitted.bid_id
        self._upsert(sa.BID_ID.value_set(submitted.bid_id))
        self._upsert_memo({"bid": {"bid_id": submitted.bid_id, "status": submitted.status,
                                      "duplicate": submitted.duplicate}})
        self._add_fact("submit", f"bid {submitted.bid_id} {submitted.status}"
                       + (" (already submitted)" if submitted.duplicate else ""), (bid_key,))
        if submitted.status != "ACCEPTED":
            raise ApplicationError(f"market rejected bid {submitted.bid_id}: {'; '.join(submitted.reasons)}",
                                   type=BID_REJECTED, non_retryable=True)
        return submitted

    async def _submit_daily(self, cycle_id: str, bid_key: str, summary: str) -> None:
        """Submit the next trading day's DAILY bid (idempotent: one per unit and trading day). A rejection is
        recorded as a fact with the market's reasons and does not fail the cycle: the interval's own bid
        stands, and the day's rebids then keep the configured ladder. A submission that fails (time-out, market
        unreachable) is recorded too; the next cycle before the close decides the DAILY bid again."""
        self._enter("submit")
        try:
            submitted: BidSubmitted = await self._stage_activity(
                "submit_bid",
                SubmitInput(cycle_id=cycle_id, bid_key=bid_key),
                result_type=BidSubmitted,
                start_to_close_timeout=timedelta(seconds=15),
                schedule_to_close_timeout=timedelta(seconds=60),
                retry_policy=QUICK_RETRY,
                summary="submit the next trading day's DAILY bid (idempotent)",
            )
        # Not stored by the market: the next cycle in the window decides it again. A local activity's failure
        # arrives as the activity's own error (or time-out), not wrapped in an ActivityError.
        except (ActivityError, ApplicationError, TemporalTimeoutError) as failure:
            self._add_fact("daily", f"{summary}; not submitted: {_failure_text(failure)}", (bid_key,))
            return
        self._upsert_memo({"daily_bid": {"bid_id": submitted.bid_id, "status": submitted.status,
                                            "duplicate": submitted.duplicate}})
        outcome = (f"{submitted.status}" + (" (already submitted)" if submitted.duplicate else "")
                   + (f": {'; '.join(submitted.reasons)}" if submitted.reasons else ""))
        self._add_fact("daily", f"{summary}; bid {submitted.bid_id} {outcome}", (bid_key,))

    async def _paused(self, cycle: CycleInput, cycle_id: str, dispatch_interval: datetime,
                      started_utc: datetime, decision_time: datetime) -> CycleResult:
        """End a cycle of a paused unit: recorded as PAUSED, nothing submitted."""
        status = "PAUSED"
        outcome = await self._record(cycle, cycle_id, dispatch_interval, started_utc, status, None, None)
        self._outcome = status
        self._upsert(sa.OUTCOME.value_set(status))
        return self._result(cycle_id, dispatch_interval, status, None, outcome,
                            (workflow.now() - started_utc).total_seconds())

    def _result(self, cycle_id: str, dispatch_interval: datetime, status: str, bid_id: str | None,
                outcome: OutcomeRecorded, latency_s: float) -> CycleResult:
        assert self._decision_time is not None
        return CycleResult(cycle_id=cycle_id, dispatch_interval=_iso(dispatch_interval), status=status,
                           bid_id=bid_id, facts=tuple(self._facts), outcome=outcome,
                           started_market_time=_iso(self._decision_time), latency_to_ack_s=latency_s,
                           dispatch_interval_aest=market_time_iso(dispatch_interval),
                           started_market_time_aest=market_time_iso(self._decision_time),
                           summary=cycle_summary(self._view(status, outcome)))

    async def _record(self, cycle: CycleInput, cycle_id: str, dispatch_interval: datetime,
                      started_utc: datetime, status: str, bid_id: str | None,
                      failure: str | None, manual_rebid_reason: str | None = None) -> OutcomeRecorded:
        self._enter("record")
        if status == "PAUSED":
            self._not_submitted = next((f.summary for f in self._facts if f.stage == "fetch"), "bidding paused")
        elif failure:
            self._not_submitted = f"the cycle failed: {failure}"
        told_by_record = workflow.patched(OPERATOR_TOLD_BY_RECORD_PATCH)
        outcome: OutcomeRecorded = await self._stage_activity(
            "record_outcome",
            RecordInput(cycle_id=cycle_id, unit_id=cycle.unit_id, region=cycle.region,
                        dispatch_interval=_iso(dispatch_interval), status=status, bid_id=bid_id,
                        failure=failure, started_at=started_utc.isoformat(), facts=tuple(self._facts),
                        manual_rebid_reason=manual_rebid_reason, plan_key=self._plan_key,
                        tell_operator=told_by_record,
                        decision_time=_iso(self._decision_time) if told_by_record and self._decision_time else None,
                        not_submitted_reason=self._not_submitted if told_by_record else None),
            result_type=OutcomeRecorded,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=QUICK_RETRY,
            summary=f"record {status} and read the market's outcome of {interval_text(dispatch_interval)}",
        )
        if outcome.cleared:
            self._add_fact("record", f"cleared gen {outcome.gen_mw:.1f} MW load {outcome.load_mw:.1f} MW at "
                           f"{_price_text(outcome.price)}: energy ${outcome.energy_revenue_dollars:,.2f}, FCAS "
                           f"${outcome.fcas_revenue_dollars:,.2f}; SoC {outcome.state_of_charge_mwh:.1f} MWh")
            if not outcome.revenue_counted:
                self._add_fact("record", f"revenue of this interval already counted by {outcome.counted_by_cycle}: "
                               "not counted again")
            if outcome.dispatch_flags:  # live mode: AEMO's dispatch that the bid in force cannot explain
                self._add_fact("record", f"{outcome.dispatch_source} dispatch UNEXPLAINED by the bid in force: "
                               + "; ".join(outcome.dispatch_flags))
        else:
            self._add_fact("record", f"recorded {status}" + (f": {failure}" if failure else ""))
        if outcome.settled_earlier:  # live mode: earlier intervals AEMO has published since their cycles
            self._add_fact("record", f"settled {len(outcome.settled_earlier)} earlier interval(s) from AEMO's "
                           "dispatch: " + " | ".join(outcome.settled_earlier))
        if manual_rebid_reason:
            self._add_fact("record", f"manual rebid submitted as {bid_id}: {manual_rebid_reason}")
        view = self._view(status, outcome)
        self._show(view)
        if workflow.patched(TELL_OPERATOR_PATCH):
            self._upsert_memo({"console": _memo(view, outcome)})
            if not told_by_record:  # the record stage told it otherwise (OPERATOR_TOLD_BY_RECORD_PATCH)
                self._flush()
                await self._tell_operator(cycle.unit_id, view)
        elif outcome.cleared:  # cycles recorded before the console: their memo held the outcome only
            self._upsert_memo({"outcome": {
                "gen_mw": outcome.gen_mw, "load_mw": outcome.load_mw, "price": outcome.price,
                "energy_revenue_dollars": outcome.energy_revenue_dollars,
                "fcas_revenue_dollars": outcome.fcas_revenue_dollars}})
        return outcome

    async def _tell_operator(self, unit_id: str, view: CycleView) -> None:
        """Signal the unit's operator workflow that a cycle recorded its interval (its page refreshes the
        P&L); nothing happens when that workflow is not running."""
        try:
            await workflow.get_external_workflow_handle(operator_workflow_id(unit_id)).signal(
                CYCLE_RECORDED_SIGNAL, cycle_line(view))
        except Exception as failure:  # not running: the operator page refreshes when it starts
            workflow.logger.debug("operator workflow of %s not signalled: %s", unit_id, failure)

    async def _record_failure(self, cycle: CycleInput, cycle_id: str, dispatch_interval: datetime,
                              started_utc: datetime, failure: BaseException) -> None:
        reason = _failure_text(failure)
        self._outcome = "FAILED"
        self._upsert(sa.OUTCOME.value_set("FAILED"))
        try:
            await self._record(cycle, cycle_id, dispatch_interval, started_utc, "FAILED", self._bid_id, reason)
        except Exception as record_failure:  # the original failure is what the operator must see
            workflow.logger.warning("could not record failed cycle: %s", record_failure)

    # -- state helpers --------------------------------------------------------------------------

    async def _stage_activity(self, activity: str, arg: Any, *, result_type: type, start_to_close_timeout: timedelta,
                              retry_policy: RetryPolicy, summary: str,
                              schedule_to_close_timeout: timedelta | None = None, activity_id: str | None = None,
                              ) -> Any:
        """Run a stage's activity: a local activity once the cycle runs its stages locally
        (LOCAL_STAGES_PATCH), else an activity scheduled through the server."""
        if self._local_stages:
            return await workflow.execute_local_activity(
                activity, arg, result_type=result_type, start_to_close_timeout=start_to_close_timeout,
                schedule_to_close_timeout=schedule_to_close_timeout, retry_policy=retry_policy,
                activity_id=activity_id, summary=summary)
        self._flush()
        return await workflow.execute_activity(
            activity, arg, result_type=result_type, start_to_close_timeout=start_to_close_timeout,
            schedule_to_close_timeout=schedule_to_close_timeout, retry_policy=retry_policy, activity_id=activity_id,
            summary=summary)

    def _enter(self, stage: str) -> None:
        self._stage = stage
        self._upsert(sa.STAGE.value_set(stage))
        if self._decision_time is not None and stage != "record":
            self._show(self._view(stage))

    def _view(self, status: str, outcome: OutcomeRecorded | None = None) -> CycleView:
        """What the cycle's page shows now (pure data: :func:`~activities.cycle_facts.cycle_view`, rendered by
        algorithms/market/console.py)."""
        assert self._dispatch_interval is not None
        return cycle_view(unit_id=self._unit_id, region=self._region,
                          dispatch_interval=datetime.fromisoformat(self._dispatch_interval), status=status,
                          started_wall_clock=self._started_utc, decision_market_time=self._decision_time,
                          bid_id=self._bid_id, not_submitted_reason=self._not_submitted, outcome=outcome)

    @staticmethod
    def _show(view: CycleView) -> None:
        workflow.set_current_details(cycle_details_markdown(view))

    def _upsert(self, *updates: SearchAttributeUpdate[Any]) -> None:
        """Change search attributes (when the cycle keeps them): held until the next flush once upserts go
        together (UPSERTS_TOGETHER_PATCH), else upserted now."""
        if not self._search_attributes:
            return
        if self._pending is not None:
            self._pending.search_attributes(list(updates))
        else:
            workflow.upsert_search_attributes(list(updates))

    def _upsert_memo(self, values: dict[str, Any]) -> None:
        """Change memo keys: held until the next flush once upserts go together, else upserted now."""
        if self._pending is not None:
            self._pending.memo(values)
        else:
            workflow.upsert_memo(values)

    def _flush(self) -> None:
        """Send the held changes: one search-attribute upsert and one memo upsert, each only when something
        changed (nothing is held before UPSERTS_TOGETHER_PATCH)."""
        if self._pending is None:
            return
        updates = self._pending.take_search_attributes()
        if updates:
            workflow.upsert_search_attributes(updates)
        memo = self._pending.take_memo()
        if memo:
            workflow.upsert_memo(memo)

    def _add_fact(self, stage: str, summary: str, archive_keys: tuple[str, ...] = ()) -> None:
        self._facts.append(StageFact(stage=stage, at=workflow.now().isoformat(), summary=summary,
                                     archive_keys=archive_keys))
        self._upsert_memo({"last_fact": f"{stage}: {summary}"})


def _memo(view: CycleView, outcome: OutcomeRecorded) -> dict[str, Any]:
    """The cycle's memo: what it bid, dispatched and earned, as plain values (times labelled with zones;
    revenue counted once per interval: ``revenue_counted`` false means an earlier cycle counted it)."""
    memo: dict[str, Any] = {
        "unit": view.unit_id, "region": view.region, "status": view.status,
        "dispatch_interval": interval_text(view.dispatch_interval),
        "dispatch_interval_aest": market_time_iso(view.dispatch_interval),
        "bid_id": view.bid_id,
        "bid": [{"product": b.product, "direction": b.direction, "band": b.band, "price": b.price,
                 "mw": b.band_availability_mw} for b in view.bid_bands],
        "intent": view.plan_intent,
        "line": cycle_line(view),
    }
    if view.not_submitted_reason:
        memo["not_submitted"] = view.not_submitted_reason
    if outcome.cleared:
        memo["outcome"] = {"dispatched_mw": outcome.gen_mw - outcome.load_mw, "gen_mw": outcome.gen_mw,
                           "load_mw": outcome.load_mw, "price_per_mwh": outcome.price,
                           "energy_revenue_dollars": outcome.energy_revenue_dollars,
                           "fcas_revenue_dollars": outcome.fcas_revenue_dollars,
                           "revenue_counted": outcome.revenue_counted, "counted_by_cycle": outcome.counted_by_cycle}
    return memo


def _controls_text(fetched: MarketFetched) -> str:
    """The operator controls a cycle honours, for its facts ('' when none is in force)."""
    parts: list[str] = []
    if fetched.soc_floor_fraction is not None:
        parts.append(f"SoC hold: no discharge below {fetched.soc_floor_fraction:.0%} of capacity "
                     f"(until {fetched.soc_floor_until})")
    if fetched.manual_rebid_reason:
        parts.append(f"manual rebid requested: {fetched.manual_rebid_reason}")
    return "; ".join(parts)


def _bounded(wanted: timedelta, remaining: timedelta) -> timedelta:
    """``wanted``, but never past gate closure, and at least one second (Temporal needs > 0)."""
    return max(min(wanted, remaining), timedelta(seconds=1))


def _as_utc(market_time: datetime) -> datetime:
    return (market_time - timedelta(hours=10)).replace(tzinfo=UTC)


def _failure_text(failure: BaseException) -> str:
    cause = failure
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause  # type: ignore[attr-defined]
    text = str(cause) or type(cause).__name__
    outer = str(failure)
    return text if outer in ("", text) else f"{outer}: {text}"


def _price_text(price: float | None) -> str:
    """``$123.45/MWh``, or ``an unknown price`` when the market gave none."""
    return "an unknown price" if price is None else f"${price:,.2f}/MWh"
