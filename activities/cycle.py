"""Activities of the AutoBidder cycle: thin I/O adapters around pure functions.

Each activity reads its inputs from the archive (by content key), calls gRPC, SQS or PostgreSQL, and
archives what it produced under the cycle's id. Decisions (what to forecast, how to bid, whether a bid
is valid) are made by the pure functions in ``algorithms/``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
import numpy as np
import numpy.typing as npt
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.cycle_facts import (
    BidBuilt,
    BidSubmitted,
    BuildBidInput,
    CycleConfig,
    FetchInput,
    ForecastsAnswered,
    ForecastsInput,
    ForecastTaskInput,
    MarketFetched,
    OptimisationTaskInput,
    OutcomeRecorded,
    RecordInput,
    SubmitInput,
    cycle_view,
)
from aemo.dispatch_results import dispatches_from_store
from aemo.store import MarketStore
from algorithms.common.battery import battery_spec_from_settings
from algorithms.common.content_hash import message_bytes, sha256_hex
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import from_timestamp, trading_day
from algorithms.common.products import ENERGY
from algorithms.market.as_of import estimate_missing, latest_known
from algorithms.market.bid_columns import ColumnarBid
from algorithms.market.bid_decision import NO_VALID_BID, STANDS, StandingBid, decide_bid
from algorithms.market.clearing import outcome_price
from algorithms.market.console import bid_bands, cycle_line, plan_intent
from algorithms.market.cycle_requests import (
    forecast_request,
    forecastable_products,
    optimisation_request,
    region_forecast_requests,
)
from algorithms.market.daily_bid import DailyBidsInForce
from algorithms.market.depth_plan import depth_policy, snapshot_enablement_caps_mw
from algorithms.market.dispatch_check import DispatchCheck, check_dispatch
from algorithms.market.operator_controls import EffectiveControls, battery_with_soc_floor, effective_controls
from archive import Archive
from models import bids as bid_store
from models import cycles as cycle_store
from models import operator_controls as control_store
from models.connections import Connections
from pools.replies import WorkerAnswer
from pools.shared_requests import SharedRequests
from pools.sqs import QueueUrls, send_task
from services.aemo_bidding import ANSWER_UNREADABLE, CREDENTIALS_REFUSED, FAILURE_TYPE_KEY
from services.bid_service import get_dispatch_outcome, get_unit_status, submit_bid
from services.market_data import fetch_snapshot
from services.security import ChannelPool
from settings import Settings, UnitSettings
from vpp.v1 import bid_pb2, common_pb2, market_data_pb2, worker_pb2

logger = logging.getLogger(__name__)

INVALID_INPUT_ERROR_TYPE = "InvalidCycleInput"
# Live mode: how far back (trading days) a cycle's record stage settles earlier cycles whose interval AEMO has
# published since (DispatchIS within a minute of the interval, Next_Day_Dispatch the next day).
SETTLE_LOOKBACK_DAYS = 2
# Market failures the cycle ends with at once (ApplicationError types, non-retryable): an answer from AEMO that
# cannot be read, credentials AEMO refuses. A time-out is retried: the bid service asks AEMO before resending.
FINAL_MARKET_FAILURES = frozenset({ANSWER_UNREADABLE, CREDENTIALS_REFUSED})
# Archive objects kept decoded in a worker process, most recently read first out last: a cycle reads its
# snapshot, its forecasts and its plan (twice) again after writing or fetching them; a round of ten units in four
# regions keeps ~60 of them; keys are content hashes, so an object never changes.
DECODED_CACHE_OBJECTS = 128
# Columns of the bids this worker process built, by the sha256 of the bid's deterministic encoding (the content
# hash the bid service stores it under): a unit's next cycle compares its new bid with the bid in force, usually
# the one its previous cycle built here, without reading that bid's period offers again. Two per battery unit
# of a portfolio of 32.
BUILT_BID_COLUMNS = 64

# Tells a unit's UnitOperator workflow that one of its cycles recorded its interval: (unit id, the cycle's line).
# The worker's is :func:`activities.operator.operator_signal` (a signal through its Temporal client).
TellOperator = Callable[[str, str], Awaitable[None]]


def market_failure_type(error: grpc.aio.AioRpcError) -> str | None:
    """The bid service's ``vpp-failure-type`` of a failed call (services/aemo_bidding.py), or None."""
    for key, value in error.trailing_metadata() or ():
        if key == FAILURE_TYPE_KEY:
            return str(value)
    return None


def _quality_name(quality: int) -> str:
    return common_pb2.DataQuality.Name(cast(Any, quality)).removeprefix("DATA_QUALITY_")


def _status_name(status: int) -> str:
    return bid_pb2.BidStatus.Name(cast(Any, status)).removeprefix("BID_STATUS_")


def _reply_to() -> worker_pb2.ReplyTo:
    info = activity.info()
    return worker_pb2.ReplyTo(workflow_id=info.workflow_id or "", run_id=info.workflow_run_id or "",
                              activity_id=info.activity_id)


def _forecaster(config: CycleConfig) -> common_pb2.AlgorithmRef:
    """The forecaster the cycle's config names."""
    return common_pb2.AlgorithmRef(name=config.forecast_algorithm, version=config.forecast_algorithm_version)


def _non_retryable(message: str) -> ApplicationError:
    return ApplicationError(message, type=INVALID_INPUT_ERROR_TYPE, non_retryable=True)


class CycleActivities:
    """The cycle's activities, bound to the platform's clients.

    Construct once per worker process; the archive and SQS client are shared by every activity.
    """

    def __init__(self, settings: Settings, archive: Archive, sqs: Any, queues: QueueUrls,
                 shared_requests: SharedRequests | None = None, connections: Connections | None = None,
                 tell_operator: TellOperator | None = None) -> None:
        if settings.database_url is None:
            raise ValueError("the cycle activities need settings.database_url (DATABASE_URL)")
        self._settings = settings
        # PostgreSQL: a new connection per use unless the process hands its pooled connections in.
        self._connections = connections if connections is not None else Connections(settings.database_url)
        self._archive = archive
        self._sqs = sqs
        self._queues = queues
        # Every battery unit of the portfolio, by unit id: a cycle plans and bids with its own unit's facts.
        self._batteries = {unit.unit_id: battery_spec_from_settings(unit.battery) for unit in settings.battery_units}
        self._market_data_address = settings.stack.market_data_address
        self._bid_address = settings.stack.bid_service_address
        self._decoded: OrderedDict[str, Any] = OrderedDict()
        self._built_columns: OrderedDict[str, ColumnarBid] = OrderedDict()
        # Snapshots being fetched, by what they are of: identical concurrent fetches share one call.
        self._snapshots: dict[tuple[str, str, str, int, bool], asyncio.Future[market_data_pb2.MarketSnapshot]] = {}
        # The process's request exchange: its result relay must be given the same one (run_result_relay).
        self.shared_requests = shared_requests if shared_requests is not None else SharedRequests(sqs, queues)
        # The market-data and bid services are called on channels kept open (one per address), not one per call.
        self.channels = ChannelPool()
        # The record stage tells the unit's operator workflow when the cycle asks it to (RecordInput.tell_operator);
        # without it (a worker that serves no UnitOperator) nobody is told.
        self._tell_operator = tell_operator

    def all(self) -> list[Any]:
        """Every activity, for ``Worker(activities=...)``."""
        return [self.fetch_market_snapshot, self.request_forecast, self.request_forecasts, self.request_optimisation,
                self.optimise_plan,
                self.build_and_validate_bid, self.submit_bid, self.record_outcome]

    async def _put(self, message: Any, cycle_id: str, label: str) -> str:
        return await asyncio.to_thread(self._archive.put, message, cycle_id=cycle_id, label=label)

    async def _get(self, key: str) -> Any:
        """The archived message under ``key`` (content-addressed, so a decoded copy read before is the same
        message; callers must not modify it). Read and hash-checked once per process while it stays among the
        DECODED_CACHE_OBJECTS most recently read."""
        cached = self._decoded.get(key)
        if cached is not None:
            self._decoded.move_to_end(key)
            return cached
        message = await asyncio.to_thread(self._archive.get, key)
        self._remember(key, message)
        return message

    def _remember(self, key: str, message: Any) -> None:
        """Keep ``message``, archived under ``key``, decoded for the next :meth:`_get`."""
        self._decoded[key] = message
        self._decoded.move_to_end(key)
        while len(self._decoded) > DECODED_CACHE_OBJECTS:
            self._decoded.popitem(last=False)

    def _unit(self, unit_id: str) -> UnitSettings:
        """The configured battery unit ``unit_id``; a non-retryable failure naming the configured ones otherwise."""
        if unit_id not in self._batteries:
            raise _non_retryable(f"unit {unit_id!r} is not a configured battery unit (configured: "
                                 f"{', '.join(self._batteries)})")
        return self._settings.unit(unit_id)

    async def _controls(self, unit_id: str) -> EffectiveControls:
        """The unit's operator controls in force now (wall clock: SoC holds end at a wall-clock time)."""
        async with self._connections.connection() as conn:
            stored = await control_store.get_controls(conn, unit_id)
        return effective_controls(stored, datetime.now(UTC))

    @activity.defn(name="fetch_market_snapshot")
    async def fetch_market_snapshot(self, request: FetchInput) -> MarketFetched:
        """Read the unit's operator controls; unless bidding is paused, fetch the as-of snapshot (gRPC) and
        the unit's state and archive the snapshot. A paused unit's fact has no snapshot and no products."""
        controls = await self._controls(request.unit_id)
        if controls.paused:
            return MarketFetched(snapshot_key="", latest_quality="SKIPPED", latest_interval="", latest_known=True,
                                 products=(), quality_notes=(), state_of_charge_mwh=float("nan"),
                                 net_mw=float("nan"), as_of=request.as_of, paused=True,
                                 paused_reason=controls.paused_reason)
        snapshot, status = await asyncio.gather(self._region_snapshot(request),
                                                get_unit_status(self._bid_address, request.unit_id,
                                                                channels=self.channels))
        key = await self._put(snapshot, request.cycle_id, "market-snapshot")
        self._remember(key, snapshot)  # the forecast stage reads it next
        return MarketFetched(
            snapshot_key=key,
            latest_quality=_quality_name(snapshot.latest_quality),
            latest_interval=from_timestamp(snapshot.latest_interval).isoformat(),
            latest_known=latest_known(snapshot),
            products=forecastable_products(snapshot),
            quality_notes=tuple(snapshot.quality_notes),
            state_of_charge_mwh=status.state_of_charge_mwh,
            net_mw=status.net_mw,
            as_of=request.as_of,
            soc_floor_fraction=controls.soc_floor_fraction,
            soc_floor_until=controls.soc_floor_until.isoformat() if controls.soc_floor_until else None,
            manual_rebid_reason=controls.manual_rebid_reason,
        )

    async def _region_snapshot(self, request: FetchInput) -> market_data_pb2.MarketSnapshot:
        """The region's snapshot for the interval ending ``request.dispatch_interval`` as of ``request.as_of``
        (AEST), estimated past the cut-off when asked: fetched once (gRPC) for every cycle of the process that
        asks for the same one at the same time, so the region's units deciding in a round decide from one
        snapshot. Callers must not modify it."""
        fetch_key = (request.region, request.dispatch_interval, request.as_of, request.history_intervals,
                     request.use_estimates)
        pending = self._snapshots.get(fetch_key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_snapshot(request))
            self._snapshots[fetch_key] = pending
            pending.add_done_callback(lambda _: self._snapshots.pop(fetch_key, None))
        return await asyncio.shield(pending)

    async def _fetch_snapshot(self, request: FetchInput) -> market_data_pb2.MarketSnapshot:
        dispatch_interval = datetime.fromisoformat(request.dispatch_interval)
        as_of = datetime.fromisoformat(request.as_of)
        try:
            snapshot = await fetch_snapshot(self._market_data_address, request.region, dispatch_interval, as_of,
                                            request.history_intervals, channels=self.channels)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                raise _non_retryable(f"market data: {error.details()}") from error
            raise
        return estimate_missing(snapshot) if request.use_estimates else snapshot

    @activity.defn(name="request_forecast")
    async def request_forecast(self, task: ForecastTaskInput) -> None:
        """Archive one product's forecast request and queue it; a worker's answer completes this activity."""
        snapshot = cast(market_data_pb2.MarketSnapshot, await self._get(task.snapshot_key))
        config = task.config
        try:
            request = forecast_request(
                snapshot, task.product, request_id=f"{task.cycle_id}/forecast/{task.product}",
                decision_time=datetime.fromisoformat(task.decision_time),
                first_interval=datetime.fromisoformat(task.first_interval),
                horizon_intervals=config.horizon_intervals, quantiles=config.forecast_quantiles,
                algorithm=_forecaster(config))
        except InvalidRequestError as error:
            raise _non_retryable(str(error)) from error
        await self._put(request, task.cycle_id, f"forecast-request/{task.product}")
        await asyncio.to_thread(send_task, self._sqs, self._queues,
                                worker_pb2.WorkerTask(task_id=request.request_id, reply_to=_reply_to(),
                                                      forecast=request))
        activity.raise_complete_async()

    @activity.defn(name="request_forecasts")
    async def request_forecasts(self, task: ForecastsInput) -> ForecastsAnswered:
        """Every product's forecast of the cycle, as of its snapshot's as-of (AEST), in one activity: the
        requests (:func:`~algorithms.market.cycle_requests.region_forecast_requests`, the same for every unit
        of the region deciding from the same snapshot) are archived under the cycle, asked of the forecast
        pool through the process's :class:`~pools.shared_requests.SharedRequests` (a request another cycle
        already asked is not sent again), and the results indexed under the cycle as they come back."""
        snapshot = cast(market_data_pb2.MarketSnapshot, await self._get(task.snapshot_key))
        config = task.config
        if snapshot.region != task.region:
            raise _non_retryable(f"snapshot {task.snapshot_key} is of {snapshot.region}, not {task.region}")
        try:
            requests = region_forecast_requests(
                snapshot, task.products, first_interval=datetime.fromisoformat(task.first_interval),
                horizon_intervals=config.horizon_intervals, quantiles=config.forecast_quantiles,
                algorithm=_forecaster(config))
        except InvalidRequestError as error:
            raise _non_retryable(str(error)) from error
        # The requests are archived while they are asked (their answers do not depend on the archive): both are
        # done, the requests durable, before the results are indexed and the activity returns.
        _, asked = await asyncio.gather(
            asyncio.to_thread(self._archive.put_all, [
                (request, f"forecast-request/{request.product}") for request in requests], cycle_id=task.cycle_id),
            self.shared_requests.ask(requests, resend_after_s=float(config.worker_answer_timeout_s)))
        await asyncio.to_thread(self._archive.put_all, [
            (forecast.result, f"forecast-result/{request.product}")
            for forecast, request in zip(asked.answers, requests, strict=True)], cycle_id=task.cycle_id)
        for forecast in asked.answers:  # the optimisation request reads them next
            self._remember(forecast.answer.archive_key, forecast.result)
        return ForecastsAnswered(answers=tuple(forecast.answer for forecast in asked.answers), sent=asked.sent,
                                 shared=asked.shared)

    @activity.defn(name="request_optimisation")
    async def request_optimisation(self, task: OptimisationTaskInput) -> None:
        """Archive the optimisation request over every forecast and queue it (completed by its answer)."""
        request = await self._optimisation_request(task)
        await self._put(request, task.cycle_id, "optimisation-request")
        await asyncio.to_thread(send_task, self._sqs, self._queues,
                                worker_pb2.WorkerTask(task_id=request.request_id, reply_to=_reply_to(),
                                                      optimisation=request))
        activity.raise_complete_async()

    @activity.defn(name="optimise_plan")
    async def optimise_plan(self, task: OptimisationTaskInput) -> WorkerAnswer:
        """The plan over every forecast (MW, MWh): the optimisation request is archived under the cycle, asked
        of the optimisation pool through the process's :class:`~pools.shared_requests.SharedRequests`, and the
        plan indexed under the cycle when it comes back; the answer names it."""
        request = await self._optimisation_request(task)
        # Archived while asked, as the forecast requests are (request_forecasts): durable before the plan is indexed.
        _, asked = await asyncio.gather(
            self._put(request, task.cycle_id, "optimisation-request"),
            self.shared_requests.ask([request], resend_after_s=float(task.config.worker_answer_timeout_s)))
        plan = asked.answers[0]
        await self._put(plan.result, task.cycle_id, "optimisation-result/")
        self._remember(plan.answer.archive_key, plan.result)  # the bid and record stages read it next
        return plan.answer

    async def _optimisation_request(self, task: OptimisationTaskInput) -> worker_pb2.OptimisationRequest:
        """The optimisation request over the archived forecasts of ``task`` for its unit's battery, expecting
        the FCAS depth of its archived snapshot (:func:`_expected_caps`)."""
        forecasts = [cast(worker_pb2.ForecastResult, f)
                     for f in await asyncio.gather(*(self._get(k) for k in task.forecast_keys))]
        config = task.config
        unit = self._unit(task.unit_id)
        first_interval = datetime.fromisoformat(task.first_interval)
        caps = await self._expected_caps(task, first_interval)
        try:
            request = optimisation_request(
                forecasts, battery_with_soc_floor(self._batteries[unit.unit_id], task.soc_floor_fraction),
                request_id=f"{task.cycle_id}/optimisation",
                first_interval=first_interval,
                horizon_intervals=config.horizon_intervals, state_of_charge_mwh=task.state_of_charge_mwh,
                terminal_state_of_charge_mwh=unit.battery.initial_state_of_charge_mwh,
                price_quantile=config.optimiser_price_quantile,
                price_tail_weight=config.optimiser_price_tail_weight,
                degradation_cost_per_mwh=config.degradation_cost_per_mwh,
                time_limit_s=config.optimiser_time_limit_s, initial_net_mw=task.net_mw,
                terminal_value_per_mwh=config.terminal_value_per_mwh,
                algorithm=common_pb2.AlgorithmRef(name=config.optimiser_algorithm,
                                                  version=config.optimiser_algorithm_version),
                uncertainty_weight=config.optimiser_uncertainty_weight, enablement_cap_mw=caps)
        except InvalidRequestError as error:
            raise _non_retryable(str(error)) from error
        return request

    async def _expected_caps(self, task: OptimisationTaskInput,
                             first_interval: datetime) -> dict[str, npt.NDArray[np.float64]] | None:
        """The FCAS depth (MW per interval of the horizon from ``first_interval``, AEST, by FCAS product) the
        plan expects from the local dispatch of the task's archived snapshot, known at its as-of
        (:func:`algorithms.market.depth_plan.snapshot_enablement_caps_mw`, as the backtest asks it); None when
        ``[market_depth] plan_with_expected_depth`` is off, the task names no snapshot or the snapshot
        carries no local dispatch (data without DISPATCHREGIONSUM): a price-taker's plan."""
        config = task.config
        policy = depth_policy(config.plan_with_expected_depth, config.planning_cap_factor)
        if policy is None or not task.snapshot_key:
            return None
        snapshot = cast(market_data_pb2.MarketSnapshot, await self._get(task.snapshot_key))
        try:
            return snapshot_enablement_caps_mw(snapshot, first_interval, config.horizon_intervals,
                                               config.fcas_enablement_share, policy)
        except ValueError as error:  # a snapshot or setting no retry can mend
            raise _non_retryable(f"expected FCAS depth of snapshot {task.snapshot_key}: {error}") from error

    @activity.defn(name="build_and_validate_bid")
    async def build_and_validate_bid(self, request: BuildBidInput) -> BidBuilt:
        """Decide the bid (:func:`algorithms.market.bid_decision.decide_bid`) around its I/O: read the plan
        from the archive and the bid in force and the trading day's band prices from PostgreSQL; archive
        the bid to submit as ``bid`` and every rejected candidate as ``bid-rejected/<plan|safe>``.

        The fact says whether the bid is a rebid or the bid in force stands (no material change and no
        manual rebid), whether the safe fallback was used, and the rejected candidates' violations; a bid
        that fails validation is never returned for submission. The operator's SoC hold and manual rebid
        reason come with the request (read with the market data). The DAILY bids in force and submitted are
        read from PostgreSQL too; a DAILY bid for the next trading day, when due and valid, is archived as
        ``bid-daily`` (its rejected candidates as ``bid-rejected/daily-<plan|default>``).
        """
        unit = self._unit(request.unit_id)
        plan = cast(worker_pb2.OptimisationResult, await self._get(request.plan_key))
        dispatch_interval = datetime.fromisoformat(request.dispatch_interval)
        day = trading_day(dispatch_interval)
        async with self._connections.connection() as conn:
            daily_prices = await bid_store.daily_band_prices(conn, request.unit_id, day)
            standing = await bid_store.latest_accepted_bid_covering(conn, request.unit_id, dispatch_interval)
            daily_bids = DailyBidsInForce(
                day_prices=await bid_store.daily_entry_band_prices(conn, request.unit_id, day),
                days_with_daily_bid=await bid_store.days_with_daily_bid(conn, request.unit_id, day))
        decision = decide_bid(
            plan, standing_bid=self._standing_bid(standing) if standing is not None else None,
            controls=EffectiveControls(soc_floor_fraction=request.soc_floor_fraction,
                                       manual_rebid_reason=request.manual_rebid_reason),
            battery=self._batteries[unit.unit_id], bidding=unit.bidding, rules=self._settings.market,
            products=request.products, daily_band_prices=daily_prices, dispatch_interval=dispatch_interval,
            offer_time=datetime.fromisoformat(request.offer_time), version=request.version,
            initial_state_of_charge_mwh=request.state_of_charge_mwh, plan_hash=request.plan_key.removeprefix("sha256:"),
            daily_bids=daily_bids)
        for rejected in (*decision.rejected, *decision.daily_rejected):
            if rejected.bid is not None:
                await self._put(rejected.bid, request.cycle_id, f"bid-rejected/{rejected.candidate}")
        bid_key = await self._put(decision.bid, request.cycle_id, "bid") if decision.bid is not None else None
        if decision.bid is not None and decision.columns is not None:
            self._remember_columns(decision.columns)
        daily_key = (await self._put(decision.daily_bid, request.cycle_id, "bid-daily")
                     if decision.daily_bid is not None else None)
        return BidBuilt(bid_key=bid_key, valid=decision.outcome != NO_VALID_BID,
                        safe_fallback=decision.safe_fallback, violations=decision.violations,
                        summary=decision.summary, rebid=decision.rebid,
                        standing_bid_id=decision.standing_bid_id if decision.outcome == STANDS else None,
                        manual_rebid_reason=decision.manual_rebid_reason, daily_bid_key=daily_key,
                        daily_summary=decision.daily_summary)

    def _standing_bid(self, stored: bid_store.BidRow) -> StandingBid:
        """The bid in force as :func:`~algorithms.market.bid_decision.decide_bid` compares it: with the columns
        of its period offers (the rebid check then compares whole arrays) — those this process built it with when
        the stored bid's content hash is one it built, else read from its encoding once."""
        bid = stored.bid()
        built = self._built_columns.get(stored.content_hash)
        if built is not None:
            self._built_columns.move_to_end(stored.content_hash)
            return StandingBid(stored.bid_id, bid, built.with_bid(bid))
        return StandingBid(stored.bid_id, bid, ColumnarBid.of(bid, self._settings.market.band_count))

    def _remember_columns(self, columns: ColumnarBid) -> None:
        """Keep the columns of a bid this process built, under its content hash (sha256 hex of its deterministic
        encoding, as the bid service stores it), for :meth:`_standing_bid`; the BUILT_BID_COLUMNS newest."""
        content_hash = sha256_hex(message_bytes(columns.bid))
        self._built_columns[content_hash] = columns
        self._built_columns.move_to_end(content_hash)
        while len(self._built_columns) > BUILT_BID_COLUMNS:
            self._built_columns.popitem(last=False)

    @activity.defn(name="submit_bid")
    async def submit_bid(self, request: SubmitInput) -> BidSubmitted:
        """Submit the archived bid to the market (idempotent there on unit, day, interval and version)."""
        bid = cast(bid_pb2.Bid, await self._get(request.bid_key))
        try:
            response = await submit_bid(self._bid_address, bid, channels=self.channels)
        except grpc.aio.AioRpcError as error:
            failure_type = market_failure_type(error)
            if failure_type in FINAL_MARKET_FAILURES:
                # Recorded by the bid service; retrying would not change AEMO's answer.
                raise ApplicationError(f"market: {error.details()}", type=failure_type, non_retryable=True) from error
            raise
        await self._put(response, request.cycle_id, "bid-acknowledgement")
        return BidSubmitted(bid_id=response.bid_id, status=_status_name(response.status),
                            duplicate=response.duplicate, reasons=tuple(response.reasons),
                            received_at=response.received_at.ToDatetime(tzinfo=UTC).isoformat())

    async def _aemo_checks(self, unit_id: str, region: str, intervals: Collection[datetime],
                           ) -> dict[datetime, tuple[DispatchCheck, float]]:
        """Live mode: what AEMO dispatched for the unit in each of ``intervals`` (interval-ending AEST) that the
        market store holds (DISPATCHLOAD, filled by the live follower), settled at DISPATCHPRICE and checked
        against the bid in force then (:func:`algorithms.market.dispatch_check.check_dispatch`), with the stored
        energy after it (DISPATCHLOAD's ENERGY_STORAGE, MWh; 0 where AEMO does not publish it). Intervals not
        published yet are absent."""
        store = MarketStore.from_settings(self._settings)
        found = await asyncio.to_thread(dispatches_from_store, store, unit_id, region, min(intervals), max(intervals))
        battery = self._unit(unit_id).battery  # the unit's own loss factors
        checks: dict[datetime, tuple[DispatchCheck, float]] = {}
        async with self._connections.connection() as conn:
            for interval in sorted(set(intervals) & set(found)):
                dispatched, prices = found[interval]
                in_force = await bid_store.latest_accepted_bid_covering(conn, unit_id, interval)
                check = check_dispatch(in_force.bid() if in_force is not None else None, dispatched, prices,
                                       mlf_gen=battery.mlf_gen, mlf_load=battery.mlf_load,
                                       interval_minutes=self._settings.market.interval_minutes)
                if check.flags:
                    activity.logger.warning("AEMO's dispatch of %s in %s is not explained by the bid in force: %s",
                                            unit_id, interval, "; ".join(check.flags))
                storage = dispatched.energy_storage_mwh
                checks[interval] = (check, storage if storage is not None else 0.0)
        return checks

    @activity.defn(name="record_outcome")
    async def record_outcome(self, request: RecordInput) -> OutcomeRecorded:
        """Read what the market dispatched in the cycle's interval and record the cycle in PostgreSQL.

        The market is the bid service's (the simulated NEM); in live mode (``[market_data] source = "live"``)
        it is AEMO: its DISPATCHLOAD of the unit settled at DISPATCHPRICE and checked against the bid in force
        (:meth:`_aemo_outcome`), the unexplained parts in ``dispatch_flags``.

        The interval's revenue is counted by the first cycle that records it (models/cycles.py); the
        result also carries what the cycle's page shows: the bid for the interval (the one submitted, else
        the bid in force) band by band, and the plan's intent in one sentence. When the cycle asks
        (``request.tell_operator``), the unit's operator workflow is then told the cycle's line (:meth:`_told`).
        """
        outcome = OutcomeRecorded(cleared=False, gen_mw=0.0, load_mw=0.0, energy_revenue_dollars=0.0,
                                  fcas_revenue_dollars=0.0, state_of_charge_mwh=0.0, price=None)
        dispatch_interval = datetime.fromisoformat(request.dispatch_interval)
        live = self._settings.market_data.source == "live"
        unsettled: list[tuple[str, datetime]] = []
        checks: dict[datetime, tuple[DispatchCheck, float]] = {}
        if live:
            interval = timedelta(minutes=self._settings.market.interval_minutes)
            async with self._connections.connection() as conn:
                unsettled = await cycle_store.unsettled_cycles(
                    conn, request.unit_id, dispatch_interval - SETTLE_LOOKBACK_DAYS * timedelta(days=1),
                    dispatch_interval - interval)
            checks = await self._aemo_checks(request.unit_id, request.region,
                                             {dispatch_interval, *(moment for _, moment in unsettled)})
            if dispatch_interval in checks:
                outcome = _aemo_recorded(*checks[dispatch_interval])
            else:
                activity.logger.info("AEMO's dispatch of %s in %s is not published yet", request.unit_id,
                                     dispatch_interval)
        elif request.bid_id:
            try:
                answer = await get_dispatch_outcome(self._bid_address, request.unit_id, dispatch_interval,
                                                    channels=self.channels)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                # The market will never dispatch this interval for the unit (e.g. it already cleared later
                # intervals): record the cycle as not cleared instead of retrying for ever.
                activity.logger.warning("no dispatch outcome for %s: %s", request.dispatch_interval,
                                        error.details())
            else:
                await self._put(answer.outcome, request.cycle_id, "market-outcome")
                outcome = _outcome(answer.outcome)
        intent = ""
        if request.plan_key:
            plan = cast(worker_pb2.OptimisationResult, await self._get(request.plan_key))
            intent = plan_intent(plan)
        record = cycle_store.CycleRecord(
            cycle_id=request.cycle_id, unit_id=request.unit_id, region=request.region,
            dispatch_interval=dispatch_interval, status=request.status,
            bid_id=request.bid_id, failure=request.failure,
            facts=[asdict(f) for f in request.facts] + ([{"stage": "outcome", **asdict(outcome)}]
                                                         if outcome.cleared else []),
            started_at=datetime.fromisoformat(request.started_at),
            outcome=cycle_store.IntervalOutcome(
                gen_mw=outcome.gen_mw, load_mw=outcome.load_mw, price=outcome.price,
                energy_revenue=outcome.energy_revenue_dollars, fcas_revenue=outcome.fcas_revenue_dollars)
            if outcome.cleared else None)
        settled: list[str] = []
        async with self._connections.connection() as conn:
            counted = await cycle_store.record_cycle(conn, record)
            for earlier_id, moment in unsettled:  # live mode: earlier intervals AEMO has published since
                if moment in checks:
                    settled.append(await _settle_earlier(conn, request.unit_id, earlier_id, moment,
                                                         *checks[moment]))
            if request.manual_rebid_reason and request.bid_id and await control_store.clear_pending_rebid(
                    conn, request.unit_id, request.manual_rebid_reason):
                await control_store.append_action(conn, control_store.OperatorAction(
                    unit_id=request.unit_id, action="rebid submitted", reason=request.manual_rebid_reason,
                    operator="autobidder", detail={"cycle_id": request.cycle_id, "bid_id": request.bid_id}))
            await conn.commit()
            shown = (await bid_store.get_bid(conn, request.bid_id) if request.bid_id
                     else await bid_store.latest_accepted_bid_covering(conn, request.unit_id, dispatch_interval))
        bands = bid_bands(shown.bid(), dispatch_interval) if shown is not None else ()
        recorded = replace(outcome, revenue_counted=counted.counted, counted_by_cycle=counted.counted_by,
                           bid_id=shown.bid_id if shown is not None else None, bid_bands=bands, plan_intent=intent,
                           settled_earlier=tuple(settled))
        if request.tell_operator:
            await self._told(request, dispatch_interval, recorded)
        return recorded

    async def _told(self, request: RecordInput, dispatch_interval: datetime, recorded: OutcomeRecorded) -> None:
        """Signal the unit's operator workflow the recorded cycle's line (its page refreshes the P&L), as the
        cycle did itself before OPERATOR_TOLD_BY_RECORD_PATCH; a workflow that is not running, or a failed
        signal, is logged and does not fail the record (the page refreshes when the workflow starts). A retried
        record signals again: the operator keeps the last line."""
        if self._tell_operator is None:
            activity.logger.debug("no operator workflow to tell about %s", request.cycle_id)
            return
        view = cycle_view(unit_id=request.unit_id, region=request.region, dispatch_interval=dispatch_interval,
                          status=request.status, started_wall_clock=datetime.fromisoformat(request.started_at),
                          decision_market_time=(datetime.fromisoformat(request.decision_time)
                                                if request.decision_time else None),
                          bid_id=request.bid_id, not_submitted_reason=request.not_submitted_reason,
                          outcome=recorded)
        try:
            await self._tell_operator(request.unit_id, cycle_line(view))
        except Exception as failure:  # not running: the operator page refreshes when it starts
            activity.logger.warning("operator workflow of %s not signalled: %s", request.unit_id, failure)


async def _settle_earlier(conn: cycle_store.AsyncConn, unit_id: str, cycle_id: str, dispatch_interval: datetime,
                          check: DispatchCheck, state_of_charge_mwh: float) -> str:
    """Store AEMO's dispatch of an earlier cycle's interval in that cycle's record (fact ``settled``) and say so
    in one line: interval, cycle, MW, price, revenue and what the bid in force cannot explain."""
    recorded = _aemo_recorded(check, state_of_charge_mwh)
    counted = await cycle_store.settle_cycle(
        conn, cycle_id, unit_id, dispatch_interval,
        cycle_store.IntervalOutcome(gen_mw=recorded.gen_mw, load_mw=recorded.load_mw, price=recorded.price,
                                    energy_revenue=recorded.energy_revenue_dollars,
                                    fcas_revenue=recorded.fcas_revenue_dollars),
        {"stage": "settled", **asdict(recorded)})
    price = f"${recorded.price:,.2f}/MWh" if recorded.price is not None else "no price"
    revenue = recorded.energy_revenue_dollars + recorded.fcas_revenue_dollars
    line = (f"{dispatch_interval:%Y-%m-%d %H:%M} ({cycle_id}) {recorded.gen_mw - recorded.load_mw:+,.1f} MW at "
            f"{price}, ${revenue:,.2f}" + ("" if counted.counted else " (not counted: already counted)"))
    return line + (f"; UNEXPLAINED: {'; '.join(check.flags)}" if check.flags else "")


def _aemo_recorded(check: DispatchCheck, state_of_charge_mwh: float) -> OutcomeRecorded:
    """The record stage's fact for AEMO's dispatch settled and checked (live mode)."""
    return OutcomeRecorded(cleared=True, gen_mw=check.gen_mw, load_mw=check.load_mw,
                           energy_revenue_dollars=check.energy_revenue_dollars,
                           fcas_revenue_dollars=check.fcas_revenue_dollars, state_of_charge_mwh=state_of_charge_mwh,
                           price=check.rrp if math.isfinite(check.rrp) else None, dispatch_source="AEMO",
                           dispatch_flags=check.flags)


def _outcome(market: bid_pb2.MarketOutcome) -> OutcomeRecorded:
    energy_price = outcome_price(market, ENERGY)
    return OutcomeRecorded(cleared=True, gen_mw=market.gen_mw, load_mw=market.load_mw,
                           energy_revenue_dollars=market.energy_revenue_dollars,
                           fcas_revenue_dollars=market.fcas_revenue_dollars,
                           state_of_charge_mwh=market.state_of_charge_mwh, price=energy_price)

