"""The fleet gateway: live fleet state in memory, gRPC streams to the sites, the dispatch control plane.

Sites reach the platform through concentrators, each holding one bidirectional ``Connect`` stream
with many sites multiplexed on it: telemetry and acknowledgements go up, setpoints come down. The
gateway keeps the **latest state of every site** as arrays (:class:`FleetState`), updated by
:func:`algorithms.fleet.telemetry.ingest_telemetry`; nonsense readings are quarantined and counted by
reason (``GetIngestStats``), never silently used or dropped.

Dispatch events are steered by the VPP dispatch workflow through ``StartEvent`` / ``ControlEvent`` /
``FinishEvent``. Each control step observes the event's sites, allocates (first step) or corrects the
setpoints with the pure functions of :mod:`algorithms.fleet.allocation`, and decides with
:mod:`algorithms.fleet.commands` which commands to send, resend (not acknowledged yet) or renew (about
to expire). The gateway holds an event's control state in memory; ``StartEvent`` is idempotent, so a
workflow that finds the gateway restarted starts the event again (setpoints already at the sites
expire on their own within ``command_validity_ms``).

Quarantine: besides the counts, the newest :data:`QUARANTINE_BUFFER` rejected readings are kept with
their reason and arrival time (``GetIngestStats`` returns them; ``vpp fleet stats --recent N``), so an
operator can see what a misbehaving site sends.

Site authentication (``site_auth``, on in ``vpp up``; see :mod:`services.security` for the scheme):
a concentrator proves each site it serves in its hello; only the sites proved on a stream are served by
it. Telemetry of any other site arriving on that stream is quarantined as ``unauthenticated_site`` and
never applied, its acknowledgements are ignored (counted), and setpoints go only down the stream that
authenticated the site. Without ``site_auth`` the gateway is open: a stream serves the sites it names.

Back-pressure: every stream's outgoing queue is bounded (``stream_queue_size``); a setpoint batch that
does not fit is counted as ``dropped_downlink`` and its sites are resent at the next step.
Telemetry history is not stored here: per-event accounting uses the samples of its control steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from algorithms.fleet.accounting import EventAccount, account_event, readings_in_force
from algorithms.fleet.aggregate import aggregate_fleet, describe
from algorithms.fleet.allocation import Allocation, AllocationRules, allocate_setpoints, correct_setpoints
from algorithms.fleet.commands import CommandBook, CommandPolicy, plan_commands, record_acks
from algorithms.fleet.fleet_types import (
    NEVER,
    AckBatch,
    BoolArray,
    FleetState,
    FloatArray,
    IntArray,
    SetpointBatch,
    SiteParameters,
    StrArray,
    TelemetryBatch,
    site_positions,
)
from algorithms.fleet.peak_shaving import node_load_figures
from algorithms.fleet.plan_store import PlanShapeError
from algorithms.fleet.site_plan_types import SitePlans
from algorithms.fleet.telemetry import IngestResult, ingest_telemetry
from services.fleet_codec import (
    MalformedBatchError,
    acks_from_proto,
    plans_from_proto,
    setpoints_to_proto,
    telemetry_from_proto,
)
from services.forecast_distribution import ForecastDistribution, ForecastRequestError, PushTarget
from services.health import SERVER_OPTIONS, add_health, bind_port
from services.security import EdgeSecurity, SiteAuthenticator, SiteAuthError, secure_server
from settings import FleetSettings
from vpp.v1 import fleet_pb2, fleet_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = "vpp.v1.FleetGatewayService"
# Rejected readings kept (newest) for operators to inspect.
QUARANTINE_BUFFER = 1_000
# How long the release command at the end of an event holds 0 kW before the site returns to its own plan.
RELEASE_HOLD_MS = 2_000
SERVICE_LABEL = "fleet gateway"
# Large batches (100,000 sites) exceed gRPC's default 4 MB message limit.
MESSAGE_LIMIT_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MESSAGE_LIMIT_BYTES),
    ("grpc.max_send_message_length", MESSAGE_LIMIT_BYTES),
)
# Quarantine reason of a reading whose site is not authenticated on the stream it came from.
UNAUTHENTICATED_SITE = "unauthenticated_site"


def wall_clock_ms() -> int:
    """Now, epoch milliseconds UTC."""
    return time.time_ns() // 1_000_000


class UnknownEventError(LookupError):
    """A control-plane call named an event the gateway does not hold (never started, or finished)."""


class EventRequestError(ValueError):
    """A StartEvent request that cannot be used (empty window, no known site, non-finite target)."""


@dataclass
class IngestCounters:
    """Totals since the gateway started: readings by outcome, quarantined readings by reason."""

    readings: int = 0
    accepted: int = 0
    applied: int = 0
    duplicate: int = 0
    out_of_order: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    dropped_downlink: int = 0
    refused_site_auth: int = 0
    unauthenticated_acks: int = 0

    def add(self, result: IngestResult, readings: int) -> None:
        """Add one batch's outcome."""
        self.readings += readings
        self.accepted += int(result.accepted.sum())
        self.applied += int(result.applied.sum())
        self.duplicate += int(result.duplicate.sum())
        self.out_of_order += int(result.out_of_order.sum())
        self.quarantined.update({str(reason): int(count) for reason, count in result.reason_counts.items()})


@dataclass(frozen=True)
class StreamIngest:
    """One telemetry batch from a stream: the outcome of its authenticated readings (all of them on an
    open gateway) and the readings refused because their site is not authenticated on the stream."""

    result: IngestResult
    unauthenticated: TelemetryBatch

    def receipt(self) -> fleet_pb2.IngestReceipt:
        """The IngestReceipt sent back down the stream (counts only: no site's data)."""
        result = self.result
        quarantined = {str(k): int(v) for k, v in result.reason_counts.items() if v}
        if self.unauthenticated.reading_count:
            quarantined[UNAUTHENTICATED_SITE] = self.unauthenticated.reading_count
        return fleet_pb2.IngestReceipt(
            accepted=int(result.accepted.sum()), applied=int(result.applied.sum()),
            duplicate=int(result.duplicate.sum()), out_of_order=int(result.out_of_order.sum()),
            quarantined=quarantined)


@dataclass(frozen=True)
class SiteAuthOutcome:
    """The sites of a hello now served by its stream, and those refused."""

    authenticated: StrArray
    refused: StrArray


@dataclass(frozen=True)
class ControlSample:
    """One control step of an event, per event site: what was asked, acknowledged, measured (kW, ms)."""

    at_ms: int
    asked_kw: FloatArray
    acknowledged: BoolArray
    measured_kw: FloatArray
    reading_at_ms: IntArray
    reading_kw: FloatArray


@dataclass
class EventControl:
    """The in-memory control state of one dispatch event (rows index the gateway's sites)."""

    event_id: str
    rows: IntArray
    target_mw: float
    start_ms: int
    end_ms: int
    book: CommandBook
    allocation: Allocation | None = None
    first_step_ms: int = 0
    baseline_kw: float | None = None
    samples: list[ControlSample] = field(default_factory=list)
    last_progress: fleet_pb2.EventProgress | None = None


class FleetGateway:
    """Live fleet state and dispatch control of the sites in ``parameters`` (no gRPC: testable directly).

    ``clock`` gives now in epoch ms UTC (tests pass a fake clock). ``site_auth`` checks the site proofs
    of hellos; None leaves the gateway open (a stream serves whatever sites it names).
    """

    def __init__(self, parameters: SiteParameters, settings: FleetSettings,
                 clock: Callable[[], int] = wall_clock_ms, site_auth: SiteAuthenticator | None = None) -> None:
        self.parameters = parameters
        self.settings = settings
        self.clock = clock
        self.site_auth = site_auth
        self.state = FleetState.empty(parameters.site_count)
        self.counters = IngestCounters()
        self.recent_quarantine: deque[fleet_pb2.QuarantinedReading] = deque(maxlen=QUARANTINE_BUFFER)
        self.stream_of_site = np.full(parameters.site_count, -1, dtype=np.int64)
        self.streams: dict[int, asyncio.Queue[fleet_pb2.ConnectResponse]] = {}
        self.events: dict[str, EventControl] = {}
        self._next_stream = 0
        # Command ids unique across gateway restarts: start from the clock (ms) scaled.
        self._next_command_id = clock() * 1_000
        self.rules = AllocationRules(stale_after_ms=settings.stale_after_ms)
        self.policy = CommandPolicy(resend_after_ms=settings.resend_after_ms,
                                    command_validity_ms=settings.command_validity_ms,
                                    setpoint_deadband_kw=settings.setpoint_deadband_kw)
        self.distribution = ForecastDistribution(parameters, plan_interval_minutes=settings.plan_interval_minutes,
                                                 plan_horizon_intervals=settings.plan_horizon_intervals)

    # -- streams -------------------------------------------------------------------------------------
    def open_stream(self, site_ids: StrArray) -> tuple[int, asyncio.Queue[fleet_pb2.ConnectResponse]]:
        """Register a concentrator serving ``site_ids``; returns its stream id and outgoing queue."""
        stream_id = self._next_stream
        self._next_stream += 1
        queue: asyncio.Queue[fleet_pb2.ConnectResponse] = asyncio.Queue(maxsize=self.settings.stream_queue_size)
        self.streams[stream_id] = queue
        self.route_sites(stream_id, site_ids)
        return stream_id, queue

    def route_sites(self, stream_id: int, site_ids: StrArray) -> None:
        """Send future setpoints of ``site_ids`` (those the gateway knows) down stream ``stream_id``.

        With site authentication on, only :meth:`authenticate_sites` routes: this changes nothing.
        """
        if self.site_auth is not None:
            return
        rows = site_positions(self.parameters.site_ids, site_ids)
        self.stream_of_site[rows[rows >= 0]] = stream_id

    def authenticate_sites(self, stream_id: int, concentrator_id: str, site_ids: StrArray, issued_at_ms: int,
                           proofs: Sequence[bytes]) -> SiteAuthOutcome:
        """Serve the sites of a hello whose proofs hold (all known sites on an open gateway) by ``stream_id``.

        Unknown sites are refused like wrong proofs. Raises SiteAuthError when proofs and sites differ in
        number (site authentication on).
        """
        rows = site_positions(self.parameters.site_ids, site_ids)
        if self.site_auth is None:
            valid = rows >= 0
        else:
            valid = self.site_auth.verify(concentrator_id, site_ids.tolist(), issued_at_ms, proofs,
                                          self.clock()) & (rows >= 0)
            self.counters.refused_site_auth += int(np.count_nonzero(~valid))
        if stream_id in self.streams:
            self.stream_of_site[rows[valid]] = stream_id
        return SiteAuthOutcome(authenticated=site_ids[valid], refused=site_ids[~valid])

    def _served_by(self, stream_id: int | None, site_ids: StrArray) -> BoolArray:
        """Per site id: whether ``stream_id`` may speak for it (always on an open gateway)."""
        if self.site_auth is None:
            return np.ones(len(site_ids), dtype=np.bool_)
        if stream_id is None:
            return np.zeros(len(site_ids), dtype=np.bool_)
        rows = site_positions(self.parameters.site_ids, site_ids)
        served: BoolArray = (rows >= 0) & (self.stream_of_site[np.maximum(rows, 0)] == stream_id)
        return served

    def close_stream(self, stream_id: int) -> None:
        """Forget a closed stream; its sites are unreachable until they connect again."""
        self.streams.pop(stream_id, None)
        self.stream_of_site[self.stream_of_site == stream_id] = -1

    # -- uplink --------------------------------------------------------------------------------------
    def ingest(self, batch: TelemetryBatch) -> IngestResult:
        """Ingest a telemetry batch from no stream (see :meth:`ingest_from`): with site authentication on,
        every reading is refused as ``unauthenticated_site``; the result covers the readings ingested."""
        return self.ingest_from(None, batch).result

    def ingest_from(self, stream_id: int | None, batch: TelemetryBatch) -> StreamIngest:
        """Ingest the readings of sites authenticated on ``stream_id`` into the latest state; quarantine
        the others as ``unauthenticated_site`` (never applied); count both."""
        served = self._served_by(stream_id, batch.site_ids)
        authenticated = batch if served.all() else _telemetry_rows(batch, served)
        refused = _telemetry_rows(batch, ~served)
        result = ingest_telemetry(self.parameters, self.state, authenticated, self.clock(),
                                  max_clock_skew_ms=self.settings.max_clock_skew_ms)
        self.state = result.state
        self.counters.add(result, authenticated.reading_count)
        self._keep_quarantined(result.quarantine.readings, result.quarantine.reasons)
        if refused.reading_count:
            self.counters.readings += refused.reading_count
            self.counters.quarantined[UNAUTHENTICATED_SITE] += refused.reading_count
            self._keep_quarantined(refused, np.full(refused.reading_count, UNAUTHENTICATED_SITE))
        return StreamIngest(result=result, unauthenticated=refused)

    def _keep_quarantined(self, readings: TelemetryBatch, reasons: StrArray) -> None:
        if readings.reading_count == 0:
            return
        received = self.clock()
        tail = slice(max(readings.reading_count - QUARANTINE_BUFFER, 0), None)
        self.recent_quarantine.extend(
            fleet_pb2.QuarantinedReading(
                site_id=site, sequence=sequence, measured_at_ms=measured_at, battery_power_kw=power,
                state_of_charge_pct=soc, pv_power_kw=pv, load_power_kw=load, reason=reason, received_at_ms=received)
            for site, sequence, measured_at, power, soc, pv, load, reason in zip(
                readings.site_ids[tail].tolist(), readings.sequence[tail].tolist(),
                readings.measured_at_ms[tail].tolist(), readings.battery_power_kw[tail].tolist(),
                readings.state_of_charge_pct[tail].tolist(), readings.pv_power_kw[tail].tolist(),
                readings.load_power_kw[tail].tolist(), reasons[tail].tolist(), strict=True))

    def acknowledge(self, acks: AckBatch, stream_id: int | None = None) -> int:
        """Record acknowledgements against every running event that holds the acknowledging sites.

        With site authentication on, only acknowledgements of sites authenticated on ``stream_id`` count;
        the others are ignored. Returns how many were ignored.
        """
        served = self._served_by(stream_id, acks.site_ids)
        ignored = int(np.count_nonzero(~served))
        if ignored:
            self.counters.unauthenticated_acks += ignored
            acks = AckBatch(site_ids=acks.site_ids[served], command_id=acks.command_id[served],
                            acknowledged_at_ms=acks.acknowledged_at_ms[served], accepted=acks.accepted[served])
        site_rows = site_positions(self.parameters.site_ids, acks.site_ids)
        for event in self.events.values():
            event_rows = site_positions(event.rows, site_rows)
            event.book = record_acks(event.book, event_rows, acks.command_id, acks.acknowledged_at_ms,
                                     acks.accepted)
        return ignored

    # -- price forecasts and plans (services/forecast_distribution.py) ------------------------------
    def publish_forecast(self, forecast: fleet_pb2.PriceForecast) -> fleet_pb2.PublishForecastResponse:
        """Make ``forecast`` the newest version and push it down every stream serving a push-mode site
        (once per stream). Raises ForecastRequestError for an unusable forecast."""
        distribution = self.distribution
        targets = distribution.publish(forecast, self.stream_of_site)
        if targets is None:
            return fleet_pb2.PublishForecastResponse(version=distribution.latest_version, published=False)
        pushed_streams, pushed_sites, dropped = self._push_forecast(targets)
        return fleet_pb2.PublishForecastResponse(
            version=distribution.latest_version, published=True, streams_pushed=pushed_streams,
            sites_pushed=pushed_sites, bytes_pushed=pushed_streams * distribution.latest_message_bytes,
            streams_dropped=dropped)

    def catch_up(self, stream_id: int) -> None:
        """After a (re)connect: push the newest forecast down ``stream_id`` if its push-mode sites lack it."""
        self._push_forecast(self.distribution.catch_up_targets(self.stream_of_site, stream_id))

    def _push_forecast(self, targets: Sequence[PushTarget]) -> tuple[int, int, int]:
        pushed_streams = pushed_sites = dropped = 0
        for target in targets:
            queue = self.streams.get(target.stream_id)
            if queue is None or queue.full():
                dropped += 1
                self.counters.dropped_downlink += 1
                continue
            queue.put_nowait(self.distribution.message())
            self.distribution.pushed(target, self.stream_of_site)
            pushed_streams += 1
            pushed_sites += target.sites
        return pushed_streams, pushed_sites, dropped

    def poll_forecast(self, stream_id: int, after_version: int) -> fleet_pb2.ConnectResponse | None:
        """A stream's poll: the newest forecast when newer than ``after_version``, else None."""
        return self.distribution.poll(stream_id, after_version, self.stream_of_site)

    def ingest_plans_from(self, stream_id: int | None, plans: SitePlans) -> fleet_pb2.PlanReceipt:
        """Keep the valid plans of sites authenticated on ``stream_id``; the others are quarantined as
        ``unauthenticated_site`` and counted. Raises PlanShapeError for plans of another shape."""
        served = self._served_by(stream_id, plans.site_ids)
        refused = int(np.count_nonzero(~served))
        if refused:
            plans = plans.take(served)
            self.distribution.counters.plans_quarantined[UNAUTHENTICATED_SITE] += refused
        result = self.distribution.ingest(plans, self.clock())
        quarantined = result.quarantined
        if refused:
            quarantined[UNAUTHENTICATED_SITE] = refused
        return fleet_pb2.PlanReceipt(accepted=int(np.count_nonzero(result.reasons == "")), quarantined=quarantined)

    # -- control plane -------------------------------------------------------------------------------
    def start_event(self, event_id: str, site_ids: StrArray, target_mw: float, start_ms: int,
                    end_ms: int) -> tuple[int, StrArray]:
        """Hold the control state of an event (idempotent by id); returns (sites, unknown site ids)."""
        if not np.isfinite(target_mw):
            raise EventRequestError(f"event {event_id}: target_mw must be finite, got {target_mw}")
        if end_ms <= start_ms:
            raise EventRequestError(f"event {event_id}: end_ms {end_ms} is not after start_ms {start_ms}")
        rows = site_positions(self.parameters.site_ids, np.unique(site_ids))
        unknown = np.unique(site_ids)[rows < 0]
        rows = np.sort(rows[rows >= 0])
        if len(rows) == 0:
            raise EventRequestError(f"event {event_id}: none of its {len(site_ids)} sites is known")
        existing = self.events.get(event_id)
        if existing is not None and np.array_equal(existing.rows, rows):
            existing.target_mw = target_mw
            return len(rows), unknown
        self.events[event_id] = EventControl(event_id=event_id, rows=rows, target_mw=target_mw,
                                             start_ms=start_ms, end_ms=end_ms,
                                             book=CommandBook.empty(len(rows)))
        return len(rows), unknown

    def control_event(self, event_id: str, target_mw: float) -> fleet_pb2.EventProgress:
        """One control step: observe, allocate or correct, send / resend / renew commands."""
        event = self._event(event_id)
        now_ms = self.clock()
        event.target_mw = target_mw
        measured_kw = self._fresh_power_kw(event.rows, now_ms)
        # Control counts every site: fresh readings (or the accepted command a reading predates), else
        # the last reading however old (an offline site goes on with its own plan), else (never seen)
        # the mean power of the event's reporting sites at its first step (their own plans' baseline).
        last_kw = self.state.battery_power_kw[event.rows]
        if event.baseline_kw is None:
            # What an unseen site is taken to do: the mean of its event peers before any command.
            event.baseline_kw = float(np.nanmean(measured_kw)) if np.isfinite(measured_kw).any() else 0.0
        known_kw = np.where(np.isfinite(measured_kw), measured_kw, last_kw)
        observed_kw = presumed_response_kw(event.book, self.state.measured_at_ms[event.rows],
                                           np.where(np.isfinite(known_kw), known_kw, event.baseline_kw))
        window_s = max((event.end_ms - now_ms) / 1000.0, 1.0)
        # Sites whose command in force had been accepted when this step began (before new commands).
        acknowledged = event.book.acknowledged & ~event.book.refused
        if event.allocation is None or (
                now_ms - event.first_step_ms < self.settings.first_correction_after_ms
                and target_mw != event.allocation.target_mw):
            if event.allocation is None:
                event.first_step_ms = now_ms
            allocation = allocate_setpoints(self.parameters, self.state, event.rows, target_mw, window_s,
                                            now_ms, self.rules)
        elif now_ms - event.first_step_ms < self.settings.first_correction_after_ms:
            # Hold the first allocation until every site has reported since it (sites report every few
            # seconds): judged on readings from before their command, the loop would over-correct.
            allocation = event.allocation
        else:
            allocation = correct_setpoints(self.parameters, self.state, event.allocation, acknowledged,
                                           observed_kw, target_mw, self.rules)
        event.allocation = allocation
        plan = plan_commands(event.book, allocation.setpoint_kw, now_ms=now_ms, event_end_ms=event.end_ms,
                             next_command_id=self._next_command_id, policy=self.policy)
        self._next_command_id = plan.next_command_id
        event.book = plan.book
        self._send(event, plan.send_rows)
        in_force = event.book.valid_until_ms > now_ms
        asked_kw = np.where(in_force, event.book.setpoint_kw, 0.0)
        event.samples.append(ControlSample(at_ms=now_ms, asked_kw=asked_kw,
                                           acknowledged=event.book.first_acknowledged_at_ms != NEVER,
                                           measured_kw=measured_kw,
                                           reading_at_ms=self.state.measured_at_ms[event.rows].copy(),
                                           reading_kw=self.state.battery_power_kw[event.rows].copy()))
        progress = fleet_pb2.EventProgress(
            event_id=event_id, measured_at_ms=now_ms, target_mw=target_mw,
            measured_mw=float(np.nansum(measured_kw)) / 1000.0,
            commanded_mw=float(asked_kw.sum()) / 1000.0,
            unallocated_mw=float(allocation.unallocated_mw),
            site_count=len(event.rows),
            commanded_sites=int(np.count_nonzero(in_force & (event.book.setpoint_kw != 0.0))),
            acknowledged_sites=int(np.count_nonzero(acknowledged)),
            reporting_sites=int(np.count_nonzero(np.isfinite(measured_kw))),
            commands_sent=len(plan.new_rows), commands_resent=len(plan.resend_rows),
            excluded={str(reason): int(count) for reason, count in allocation.excluded.items()},
        )
        event.last_progress = progress
        return progress

    def finish_event(self, event_id: str) -> EventAccount:
        """Release the event's sites and return its per-site accounting.

        The release is a last command per site — 0 kW for :data:`RELEASE_HOLD_MS` — which supersedes the
        event's setpoint (command ids only increase); the site then returns to its own plan.
        """
        event = self._event(event_id)
        now_ms = self.clock()
        release = SetpointBatch(
            site_ids=self.parameters.site_ids[event.rows],
            command_id=self._next_command_id + np.arange(len(event.rows), dtype=np.int64),
            setpoint_kw=np.zeros(len(event.rows)),
            valid_until_ms=np.full(len(event.rows), now_ms + RELEASE_HOLD_MS, dtype=np.int64))
        self._next_command_id += len(event.rows)
        self._dispatch(release, event.rows)
        del self.events[event_id]
        return self._account(event, now_ms)

    def _account(self, event: EventControl, now_ms: int) -> EventAccount:
        """Per-site accounting: step k (from its time to the next) asked its setpoint and is judged by
        the reading in force at the step's end, among every reading recorded until now (telemetry lags:
        a reading taken during the step may arrive later). See readings_in_force."""
        width = len(event.rows)
        times_ms = np.array([sample.at_ms for sample in event.samples] + [now_ms], dtype=np.int64)
        reading_at = np.vstack([*(sample.reading_at_ms for sample in event.samples),
                                self.state.measured_at_ms[event.rows]])
        reading_kw = np.vstack([*(sample.reading_kw for sample in event.samples),
                                self.state.battery_power_kw[event.rows]])
        in_force_kw = readings_in_force(times_ms, reading_at, reading_kw, self.settings.stale_after_ms)
        return account_event(
            site_ids=self.parameters.site_ids[event.rows],
            asked_kw=_stack([sample.asked_kw for sample in event.samples], width),
            acknowledged=_stack_bool([sample.acknowledged for sample in event.samples], width),
            measured_kw=in_force_kw[1:],
            step_duration_s=np.diff(times_ms) / 1000.0,
            first_ack_ms=event.book.first_acknowledged_at_ms)

    def aggregate(self, site_ids: StrArray) -> fleet_pb2.GetAggregateResponse:
        """Aggregate (with bounds) of ``site_ids`` (every site when empty) from the live state."""
        if len(site_ids) == 0:
            columns = np.arange(self.parameters.site_count, dtype=np.int64)
        else:
            rows = site_positions(self.parameters.site_ids, site_ids)
            columns = rows[rows >= 0]
        from scipy import sparse

        membership = sparse.csr_matrix(
            (np.ones(len(columns)), (np.zeros(len(columns), dtype=np.int64), columns)),
            shape=(1, self.parameters.site_count))
        now_ms = self.clock()
        aggregates = aggregate_fleet(self.parameters, self.state, membership, now_ms,
                                     stale_after_ms=self.settings.stale_after_ms,
                                     confidence_z=self.settings.confidence_z)
        load = node_load_figures(self.state, columns, now_ms, stale_after_ms=self.settings.stale_after_ms)
        return fleet_pb2.GetAggregateResponse(
            expected_sites=int(aggregates.expected_sites[0]),
            reporting_sites=int(aggregates.reporting_sites[0]),
            stale_sites=int(aggregates.stale_sites[0]),
            never_reported_sites=int(aggregates.never_reported_sites[0]),
            battery_power_mw=float(aggregates.battery_power_mw.estimate[0]),
            discharge_energy_available_mwh=float(aggregates.discharge_energy_available_mwh.estimate[0]),
            discharge_energy_lower_mwh=float(aggregates.discharge_energy_available_mwh.lower[0]),
            discharge_energy_upper_mwh=float(aggregates.discharge_energy_available_mwh.upper[0]),
            charge_energy_available_mwh=float(aggregates.charge_energy_available_mwh.estimate[0]),
            charge_energy_lower_mwh=float(aggregates.charge_energy_available_mwh.lower[0]),
            charge_energy_upper_mwh=float(aggregates.charge_energy_available_mwh.upper[0]),
            description=describe(aggregates, 0),
            discharge_power_available_mw=float(aggregates.discharge_power_available_mw.estimate[0]),
            charge_power_available_mw=float(aggregates.charge_power_available_mw.estimate[0]),
            load_mw=load.load_mw, pv_mw=load.pv_mw, net_load_mw=load.net_load_mw, measured_at_ms=now_ms)

    # -- internals -----------------------------------------------------------------------------------
    def _event(self, event_id: str) -> EventControl:
        event = self.events.get(event_id)
        if event is None:
            raise UnknownEventError(f"no running dispatch event {event_id!r} at the fleet gateway")
        return event

    def _fresh_power_kw(self, rows: IntArray, now_ms: int) -> FloatArray:
        measured_at = self.state.measured_at_ms[rows]
        fresh = (measured_at >= 0) & (now_ms - measured_at <= self.settings.stale_after_ms)
        return np.where(fresh, self.state.battery_power_kw[rows], np.nan)

    def _send(self, event: EventControl, send_rows: IntArray) -> None:
        if len(send_rows) == 0:
            return
        book = event.book
        site_rows = event.rows[send_rows]
        batch = SetpointBatch(site_ids=self.parameters.site_ids[site_rows], command_id=book.command_id[send_rows],
                              setpoint_kw=book.setpoint_kw[send_rows], valid_until_ms=book.valid_until_ms[send_rows])
        self._dispatch(batch, site_rows)

    def _dispatch(self, batch: SetpointBatch, site_rows: IntArray) -> None:
        """Put ``batch`` on the streams of its sites (one message per stream); count what cannot go."""
        streams = self.stream_of_site[site_rows]
        for stream_id in np.unique(streams[streams >= 0]).tolist():
            queue = self.streams.get(int(stream_id))
            mask = streams == stream_id
            if queue is None:
                continue
            part = SetpointBatch(site_ids=batch.site_ids[mask], command_id=batch.command_id[mask],
                                 setpoint_kw=batch.setpoint_kw[mask], valid_until_ms=batch.valid_until_ms[mask])
            try:
                queue.put_nowait(fleet_pb2.ConnectResponse(setpoints=setpoints_to_proto(part)))
            except asyncio.QueueFull:
                self.counters.dropped_downlink += int(mask.sum())


def presumed_response_kw(book: CommandBook, measured_at_ms: IntArray, measured_kw: FloatArray) -> FloatArray:
    """What each event site is taken to deliver now, for control (kW).

    A site's latest reading may predate the command it has acknowledged since (sites report every few
    seconds): judged on that reading, it would look like it ignores the command and the others would
    be pushed to compensate, overshooting a moment later. So a site whose command in force was accepted
    after its latest reading is presumed to deliver that command's setpoint; every other site counts
    for what it was measured doing (NaN: no fresh reading). Accounting always uses the measurements.
    """
    accepted = book.acknowledged & ~book.refused & (book.acknowledged_at_ms >= 0)
    reading_predates_ack = accepted & (measured_at_ms < book.acknowledged_at_ms)
    return np.where(reading_predates_ack, book.setpoint_kw, measured_kw)


def _telemetry_rows(batch: TelemetryBatch, mask: BoolArray) -> TelemetryBatch:
    """The readings of ``batch`` where ``mask`` holds."""
    return TelemetryBatch(site_ids=batch.site_ids[mask], sequence=batch.sequence[mask],
                          measured_at_ms=batch.measured_at_ms[mask], battery_power_kw=batch.battery_power_kw[mask],
                          state_of_charge_pct=batch.state_of_charge_pct[mask], pv_power_kw=batch.pv_power_kw[mask],
                          load_power_kw=batch.load_power_kw[mask])


def _stack(columns: list[FloatArray], width: int) -> FloatArray:
    return np.vstack(columns) if columns else np.zeros((0, width))


def _stack_bool(columns: list[BoolArray], width: int) -> BoolArray:
    return np.vstack(columns) if columns else np.zeros((0, width), dtype=np.bool_)


class FleetGatewayServicer(fleet_pb2_grpc.FleetGatewayServiceServicer):
    """gRPC adapter of a :class:`FleetGateway` (INVALID_ARGUMENT / NOT_FOUND for bad requests, UNAUTHENTICATED
    for a hello none of whose sites is authenticated)."""

    def __init__(self, gateway: FleetGateway) -> None:
        self.gateway = gateway

    async def Connect(self, request_iterator: AsyncIterator[fleet_pb2.ConnectRequest],  # noqa: N802
                      context: grpc.aio.ServicerContext[fleet_pb2.ConnectRequest, fleet_pb2.ConnectResponse],
                      ) -> AsyncIterator[fleet_pb2.ConnectResponse]:
        """Multiplexed site stream: telemetry and acks up; setpoints and ingest receipts down."""
        stream_id, queue = self.gateway.open_stream(np.array([], dtype=np.str_))
        reader = asyncio.create_task(self._read_uplink(stream_id, request_iterator, queue))
        try:
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                while not queue.empty():
                    yield queue.get_nowait()
                problem = reader.result()
                if problem is not None:
                    await context.abort(*problem)
                return
        finally:
            reader.cancel()
            self.gateway.close_stream(stream_id)

    async def _read_uplink(self, stream_id: int, request_iterator: AsyncIterator[fleet_pb2.ConnectRequest],
                           queue: asyncio.Queue[fleet_pb2.ConnectResponse],
                           ) -> tuple[grpc.StatusCode, str] | None:
        """Consume the uplink; returns None at its end, or the status and message to abort the stream with."""
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        async for message in request_iterator:
            kind = message.WhichOneof("body")
            try:
                if kind == "hello":
                    refusal = self._hello(stream_id, message.hello, queue)
                    if refusal is not None:
                        return grpc.StatusCode.UNAUTHENTICATED, refusal
                elif kind == "telemetry":
                    batch = telemetry_from_proto(message.telemetry)
                    self.gateway.route_sites(stream_id, np.unique(batch.site_ids))
                    ingested = self.gateway.ingest_from(stream_id, batch)
                    with_receipt = fleet_pb2.ConnectResponse(receipt=ingested.receipt())
                    if not queue.full():
                        queue.put_nowait(with_receipt)
                elif kind == "acks":
                    self.gateway.acknowledge(acks_from_proto(message.acks), stream_id)
                elif kind == "forecast_poll":
                    answer = self.gateway.poll_forecast(stream_id, message.forecast_poll.after_version)
                    if answer is not None and not queue.full():
                        queue.put_nowait(answer)
                elif kind == "plans":
                    receipt = self.gateway.ingest_plans_from(stream_id, plans_from_proto(message.plans))
                    if not queue.full():
                        queue.put_nowait(fleet_pb2.ConnectResponse(plan_receipt=receipt))
                else:
                    return invalid, "ConnectRequest without a body"
            except (MalformedBatchError, SiteAuthError, PlanShapeError) as exc:
                return invalid, str(exc)
        return None

    def _hello(self, stream_id: int, hello: fleet_pb2.ConcentratorHello,
               queue: asyncio.Queue[fleet_pb2.ConnectResponse]) -> str | None:
        """Serve the hello's sites (authenticated ones when required); None, or why the stream is refused."""
        site_ids = np.array(list(hello.site_id), dtype=np.str_)
        if self.gateway.site_auth is None:
            self.gateway.route_sites(stream_id, site_ids)
            self.gateway.catch_up(stream_id)
            return None
        outcome = self.gateway.authenticate_sites(stream_id, hello.concentrator_id, site_ids, hello.issued_at_ms,
                                                  list(hello.site_proof))
        if len(outcome.refused):
            logger.warning("concentrator %r: %d of %d sites refused (proof missing, wrong, expired or replayed)",
                           hello.concentrator_id, len(outcome.refused), len(site_ids))
        if not queue.full():
            queue.put_nowait(fleet_pb2.ConnectResponse(site_auth=fleet_pb2.SiteAuthResult(
                authenticated=len(outcome.authenticated), refused_site_id=outcome.refused.tolist())))
        self.gateway.catch_up(stream_id)
        if len(site_ids) and not len(outcome.authenticated):
            return (f"concentrator {hello.concentrator_id!r}: none of its {len(site_ids)} sites is authenticated "
                    "(site_proof missing, wrong, expired or replayed)")
        return None

    async def StartEvent(self, request: fleet_pb2.StartEventRequest,  # noqa: N802
                         context: grpc.aio.ServicerContext[fleet_pb2.StartEventRequest,
                                                           fleet_pb2.StartEventResponse],
                         ) -> fleet_pb2.StartEventResponse:
        """Hold the control state of an event."""
        if not request.event_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event_id is required")
        try:
            count, unknown = self.gateway.start_event(
                request.event_id, np.array(list(request.site_id), dtype=np.str_), request.target_mw,
                request.start_ms, request.end_ms)
        except EventRequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return fleet_pb2.StartEventResponse(site_count=count, unknown_site_id=unknown.tolist())

    async def ControlEvent(self, request: fleet_pb2.ControlEventRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext[fleet_pb2.ControlEventRequest,
                                                             fleet_pb2.ControlEventResponse],
                           ) -> fleet_pb2.ControlEventResponse:
        """One control step of an event."""
        if not request.event_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event_id is required")
        if not np.isfinite(request.target_mw):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"target_mw must be finite, got {request.target_mw}")
        try:
            progress = self.gateway.control_event(request.event_id, request.target_mw)
        except UnknownEventError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return fleet_pb2.ControlEventResponse(progress=progress)

    async def FinishEvent(self, request: fleet_pb2.FinishEventRequest,  # noqa: N802
                          context: grpc.aio.ServicerContext[fleet_pb2.FinishEventRequest,
                                                            fleet_pb2.FinishEventResponse],
                          ) -> fleet_pb2.FinishEventResponse:
        """End an event and return its accounting."""
        if not request.event_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event_id is required")
        try:
            accounting = self.gateway.finish_event(request.event_id)
        except UnknownEventError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return accounting_to_proto(request.event_id, accounting)

    async def GetAggregate(self, request: fleet_pb2.GetAggregateRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext[fleet_pb2.GetAggregateRequest,
                                                             fleet_pb2.GetAggregateResponse],
                           ) -> fleet_pb2.GetAggregateResponse:
        """Aggregate of the live state."""
        return self.gateway.aggregate(np.array(list(request.site_id), dtype=np.str_))

    async def GetIngestStats(self, request: fleet_pb2.GetIngestStatsRequest,  # noqa: N802
                             context: grpc.aio.ServicerContext[fleet_pb2.GetIngestStatsRequest,
                                                               fleet_pb2.GetIngestStatsResponse],
                             ) -> fleet_pb2.GetIngestStatsResponse:
        """Ingest counters since start."""
        counters = self.gateway.counters
        recent = list(self.gateway.recent_quarantine)[::-1][:request.recent_quarantined]
        return fleet_pb2.GetIngestStatsResponse(
            readings=counters.readings, accepted=counters.accepted, applied=counters.applied,
            duplicate=counters.duplicate, out_of_order=counters.out_of_order,
            quarantined=dict(counters.quarantined), connected_streams=len(self.gateway.streams),
            recent=recent, dropped_downlink=counters.dropped_downlink,
            refused_site_auth=counters.refused_site_auth, unauthenticated_acks=counters.unauthenticated_acks)


    async def PublishForecast(self, request: fleet_pb2.PublishForecastRequest,  # noqa: N802
                              context: grpc.aio.ServicerContext[fleet_pb2.PublishForecastRequest,
                                                                fleet_pb2.PublishForecastResponse],
                              ) -> fleet_pb2.PublishForecastResponse:
        """Publish a forecast version (INVALID_ARGUMENT for an unusable one)."""
        try:
            return self.gateway.publish_forecast(request.forecast)
        except ForecastRequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises

    async def SetDistributionMode(self, request: fleet_pb2.SetDistributionModeRequest,  # noqa: N802
                                  context: grpc.aio.ServicerContext[fleet_pb2.SetDistributionModeRequest,
                                                                    fleet_pb2.SetDistributionModeResponse],
                                  ) -> fleet_pb2.SetDistributionModeResponse:
        """Push or poll for the named sites (INVALID_ARGUMENT without a mode)."""
        if request.mode == fleet_pb2.DISTRIBUTION_MODE_UNSPECIFIED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "mode must be DISTRIBUTION_MODE_PUSH or _POLL")
        site_ids = np.array(list(request.site_id), dtype=np.str_)
        unknown = self.gateway.distribution.set_push(site_ids, request.mode == fleet_pb2.DISTRIBUTION_MODE_PUSH)
        return fleet_pb2.SetDistributionModeResponse(site_count=len(site_ids) - len(unknown),
                                                     unknown_site_id=unknown.tolist())

    async def GetPlans(self, request: fleet_pb2.GetPlansRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext[fleet_pb2.GetPlansRequest, fleet_pb2.GetPlansResponse],
                       ) -> fleet_pb2.GetPlansResponse:
        """Latest plans and held forecast versions of the named sites (all when none is named)."""
        return self.gateway.distribution.plans_response(np.array(list(request.site_id), dtype=np.str_))


def accounting_to_proto(event_id: str, accounting: EventAccount) -> fleet_pb2.FinishEventResponse:
    """The FinishEventResponse (impact log) of an event's accounting."""
    return fleet_pb2.FinishEventResponse(
        event_id=event_id, asked_mwh=accounting.summary.asked_mwh, delivered_mwh=accounting.summary.delivered_mwh,
        sites=[fleet_pb2.SiteImpact(site_id=str(site_id), asked_kwh=float(asked), delivered_kwh=float(delivered),
                                    shortfall_kwh=float(short), acknowledged=bool(acked),
                                    first_acknowledged_at_ms=max(int(first_ack), 0))
               for site_id, asked, delivered, short, acked, first_ack in zip(
                   accounting.site_ids.tolist(), accounting.asked_kwh.tolist(), accounting.delivered_kwh.tolist(),
                   accounting.shortfall_kwh.tolist(), accounting.acknowledged.tolist(),
                   accounting.first_ack_ms.tolist(), strict=True)])


async def serve_gateway(gateway: FleetGateway, port: int, stop: asyncio.Event,
                        security: EdgeSecurity | None = None) -> None:
    """Run the fleet gateway's gRPC server on ``port`` until ``stop`` is set.

    ``security`` (bind host, TLS, accepted tokens) defaults to the environment's; site authentication is
    the gateway's own (``FleetGateway(site_auth=...)``).
    """
    security = EdgeSecurity.from_environment(with_site_keys=False) if security is None else security
    server = secure_server(security, [*SERVER_OPTIONS, *CHANNEL_OPTIONS])
    fleet_pb2_grpc.add_FleetGatewayServiceServicer_to_server(FleetGatewayServicer(gateway), server)
    add_health(server, [SERVICE_NAME])
    address = bind_port(server, port, SERVICE_LABEL, security=security)
    await server.start()
    try:
        logger.info("%s ready on %s: %d sites, TLS %s, tokens %s, site authentication %s", SERVICE_LABEL,
                    address, gateway.parameters.site_count, "on" if security.tls else "off",
                    "on" if security.accepted_tokens else "off", "on" if gateway.site_auth else "off")
        await stop.wait()
    finally:
        await server.stop(grace=1.0)
