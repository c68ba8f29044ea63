"""Activities of the VPP dispatch event: thin adapters to PostgreSQL (asset graph, impact log) and the
fleet gateway (gRPC). Allocation, correction and accounting are pure functions run by the gateway.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dispatch_facts import (
    EVENT_LOST,
    ControlInput,
    ControlStep,
    EventStarted,
    EventSummary,
    FinishInput,
    StartEventInput,
)
from activities.gateway_client import GatewayActivities, utc
from algorithms.fleet.fleet_types import NEVER
from models.assets import UnknownNodeError, sites_under
from models.dispatch_events import DispatchEventRecord, SiteImpactLog, record_event
from vpp.v1 import fleet_pb2

INVALID_EVENT = "InvalidDispatchEvent"


def impact_from_proto(response: fleet_pb2.FinishEventResponse) -> SiteImpactLog:
    """The per-site impact log carried by a FinishEventResponse (first ack 0 -> NEVER)."""
    sites = response.sites
    first_ack = np.array([site.first_acknowledged_at_ms for site in sites], dtype=np.int64)
    return SiteImpactLog(
        site_ids=np.array([site.site_id for site in sites], dtype=np.str_),
        asked_kwh=np.array([site.asked_kwh for site in sites], dtype=np.float64),
        delivered_kwh=np.array([site.delivered_kwh for site in sites], dtype=np.float64),
        shortfall_kwh=np.array([site.shortfall_kwh for site in sites], dtype=np.float64),
        acknowledged=np.array([site.acknowledged for site in sites], dtype=np.bool_),
        first_acknowledged_at_ms=np.where(first_ack > 0, first_ack, NEVER))


class DispatchActivities(GatewayActivities):
    """The dispatch event's activities, bound to a fleet gateway address and a database URL."""

    @activity.defn(name="start_dispatch_event")
    async def start_dispatch_event(self, request: StartEventInput) -> EventStarted:
        """Resolve the node's sites as of the event start and start the event at the gateway."""
        as_of = utc(request.start_ms)

        def resolve() -> np.ndarray:
            with psycopg.connect(self.database_url) as conn:
                return sites_under(conn, request.node_id, as_of, request.hierarchy)

        try:
            site_ids = await asyncio.to_thread(resolve)
        except UnknownNodeError as exc:
            raise ApplicationError(str(exc), type=INVALID_EVENT, non_retryable=True) from exc
        if len(site_ids) == 0:
            raise ApplicationError(f"node {request.node_id} has no sites as of {as_of.isoformat()}",
                                   type=INVALID_EVENT, non_retryable=True)
        try:
            response: fleet_pb2.StartEventResponse = await self._stub().StartEvent(
                fleet_pb2.StartEventRequest(event_id=request.event_id, site_id=site_ids.tolist(),
                                            target_mw=request.target_mw, start_ms=request.start_ms,
                                            end_ms=request.end_ms), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ApplicationError(exc.details() or "invalid event", type=INVALID_EVENT,
                                       non_retryable=True) from exc
            raise
        return EventStarted(site_count=response.site_count, unknown_site_count=len(response.unknown_site_id))

    @activity.defn(name="control_dispatch_event")
    async def control_dispatch_event(self, request: ControlInput) -> ControlStep:
        """One control step at the gateway; EVENT_LOST when the gateway no longer holds the event."""
        try:
            response: fleet_pb2.ControlEventResponse = await self._stub().ControlEvent(
                fleet_pb2.ControlEventRequest(event_id=request.event_id, target_mw=request.target_mw), timeout=8)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ApplicationError(exc.details() or "event lost", type=EVENT_LOST, non_retryable=True) from exc
            raise
        progress = response.progress
        return ControlStep(
            measured_at_ms=progress.measured_at_ms, target_mw=progress.target_mw, measured_mw=progress.measured_mw,
            commanded_mw=progress.commanded_mw, unallocated_mw=progress.unallocated_mw,
            site_count=progress.site_count, commanded_sites=progress.commanded_sites,
            acknowledged_sites=progress.acknowledged_sites, reporting_sites=progress.reporting_sites,
            commands_sent=progress.commands_sent, commands_resent=progress.commands_resent,
            excluded=dict(progress.excluded))

    @activity.defn(name="finish_dispatch_event")
    async def finish_dispatch_event(self, request: FinishInput) -> EventSummary:
        """Release the sites, fetch the accounting and record the event and its impact log."""
        reason = request.reason
        try:
            response: fleet_pb2.FinishEventResponse = await self._stub().FinishEvent(
                fleet_pb2.FinishEventRequest(event_id=request.event_id), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            # Never started (cancelled before its window) or lost by a gateway restart: nothing to account.
            response = fleet_pb2.FinishEventResponse(event_id=request.event_id)
            reason = (reason + "; " if reason else "") + "no accounting: the gateway did not hold the event"
        impact = impact_from_proto(response)
        record = DispatchEventRecord(
            event_id=request.event_id, node_id=request.node_id, target_mw=request.target_mw,
            window_start=utc(request.start_ms), window_end=utc(request.end_ms), status=request.status,
            reason=reason, site_count=len(impact.site_ids), asked_mwh=response.asked_mwh,
            delivered_mwh=response.delivered_mwh)

        def store() -> None:
            with psycopg.connect(self.database_url) as conn:
                record_event(conn, record, impact)

        await asyncio.to_thread(store)
        return EventSummary(
            event_id=request.event_id, status=request.status, site_count=len(impact.site_ids),
            asked_mwh=response.asked_mwh, delivered_mwh=response.delivered_mwh,
            sites_short=int(np.count_nonzero(impact.shortfall_kwh > 1e-6)),
            sites_acknowledged=int(np.count_nonzero(impact.acknowledged)))
