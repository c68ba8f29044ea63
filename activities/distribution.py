"""Activities of the 15-minute price-forecast distribution (``workflows/distribution.py``): thin I/O
adapters over the market-data service, the archive, the asset graph and the fleet gateway; the logic is
in ``algorithms/fleet/`` (``forecast_publication.py``, ``plan_aggregate.py``, ``fleet_bid.py``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import grpc
import numpy as np
import psycopg
import scipy.sparse as sp
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.distribution_facts import (
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
from algorithms.common.content_hash import sha256_hex
from algorithms.common.products import ENERGY
from algorithms.common.replay_clock import plan_window_start_ms
from algorithms.fleet.fleet_bid import FleetBidError, build_fleet_bid, fleet_unit_of_sites
from algorithms.fleet.fleet_types import SiteParameters, StrArray
from algorithms.fleet.forecast_publication import ForecastPublicationError, price_forecast_for_sites
from algorithms.fleet.plan_aggregate import aggregate_plans
from algorithms.market.clearing import dispatched_mw, outcome_price
from archive import Archive
from models.assets import AssetGraphError, node_site_parameters, sites_under
from services.bid_service import get_dispatch_outcome, submit_bid
from services.fleet_codec import plans_from_proto
from services.fleet_gateway import CHANNEL_OPTIONS
from services.market_data import fetch_snapshot
from services.security import EdgeSecurity, channel
from settings import BiddingSettings, ConfigError, Settings
from vpp.v1 import bid_pb2, fleet_pb2, fleet_pb2_grpc, worker_pb2

INVALID_DISTRIBUTION_INPUT = "InvalidDistributionInput"


def _non_retryable(message: str) -> ApplicationError:
    return ApplicationError(message, type=INVALID_DISTRIBUTION_INPUT, non_retryable=True)


class DistributionActivities:
    """Bound to the archive, the database and the market-data and fleet-gateway addresses."""

    def __init__(self, settings: Settings, archive: Archive, database_url: str,
                 security: EdgeSecurity | None = None) -> None:
        self._settings = settings
        self._archive = archive
        self._database_url = database_url
        self._market_data_address = settings.stack.market_data_address
        self._gateway_address = settings.fleet.gateway_address
        self._bid_address = settings.stack.bid_service_address
        self._security = security

    def _fleet_bidding(self, fleet_unit_id: str) -> BiddingSettings:
        """The bid ladders of the VPP's fleet unit (its ``[[units]]`` entry; ``[bidding]`` by default)."""
        try:
            return self._settings.unit(fleet_unit_id).bidding
        except ConfigError as error:
            raise _non_retryable(str(error)) from error

    def all(self) -> list[Any]:
        """Every activity, for ``Worker(activities=...)``."""
        return [self.fetch_distribution_snapshot, self.publish_price_forecast, self.bid_fleet_plans,
                self.submit_fleet_bid, self.fleet_dispatch_instruction]

    @activity.defn(name="fetch_distribution_snapshot")
    async def fetch_distribution_snapshot(self, request: SnapshotRequest) -> str:
        """Fetch the region's market data as of ``request.as_of`` (gRPC) and archive it; returns its key."""
        try:
            snapshot = await fetch_snapshot(self._market_data_address, request.region,
                                            datetime.fromisoformat(request.first_interval),
                                            datetime.fromisoformat(request.as_of), request.history_intervals)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                raise _non_retryable(f"market data: {error.details()}") from error
            raise
        return await asyncio.to_thread(self._archive.put, snapshot, cycle_id=request.run_id,
                                       label="distribution-snapshot")

    def _sites_under(self, nodes: tuple[str, ...], hierarchy: str | None) -> StrArray:
        now = datetime.now(UTC)
        found: list[StrArray] = []
        with psycopg.connect(self._database_url) as conn:
            for node in nodes:
                try:
                    found.append(sites_under(conn, node, now, hierarchy))
                except AssetGraphError as error:
                    raise _non_retryable(f"node {node!r}: {error}") from error
        return np.unique(np.concatenate(found)) if found else np.array([], dtype=np.str_)

    @activity.defn(name="publish_price_forecast")
    async def publish_price_forecast(self, request: PublishRequest) -> Published:
        """Turn the archived forecaster result into the next site forecast version and publish it at the
        gateway; the sites under ``poll_nodes`` poll for it, every other site gets it pushed."""
        result = cast(worker_pb2.ForecastResult, await asyncio.to_thread(self._archive.get, request.forecast_key))
        try:
            forecast = price_forecast_for_sites(result, region=request.region,
                                                published_at_ms=request.published_at_ms, start_ms=request.start_ms,
                                                storm_warning=request.storm_warning)
        except ForecastPublicationError as error:
            raise _non_retryable(str(error)) from error
        key = await asyncio.to_thread(self._archive.put, forecast, cycle_id=activity.info().workflow_id,
                                      label="site-price-forecast")
        poll_sites = await asyncio.to_thread(self._sites_under, request.poll_nodes, request.hierarchy)
        async with channel(self._gateway_address, self._security, CHANNEL_OPTIONS) as gateway_channel:
            stub = fleet_pb2_grpc.FleetGatewayServiceStub(gateway_channel)
            if len(poll_sites):
                await stub.SetDistributionMode(fleet_pb2.SetDistributionModeRequest(
                    site_id=poll_sites.tolist(), mode=fleet_pb2.DISTRIBUTION_MODE_POLL), timeout=30)
            response = await stub.PublishForecast(fleet_pb2.PublishForecastRequest(forecast=forecast), timeout=30)
        return Published(version=int(response.version), published=response.published,
                         streams_pushed=response.streams_pushed, sites_pushed=response.sites_pushed,
                         bytes_pushed=int(response.bytes_pushed), poll_sites=len(poll_sites), forecast_key=key)

    def _node_sites(self, node: str, hierarchy: str | None) -> SiteParameters:
        with psycopg.connect(self._database_url) as conn:
            try:
                parameters = node_site_parameters(conn, node, datetime.now(UTC), hierarchy)
            except AssetGraphError as error:
                raise _non_retryable(f"node {node!r}: {error}") from error
        if not parameters.site_count:
            raise _non_retryable(f"node {node!r} has no site now")
        return parameters

    @activity.defn(name="bid_fleet_plans")
    async def bid_fleet_plans(self, request: FleetBidRequest) -> FleetBidOutcome:
        """Aggregate the node's latest plans and build, validate and archive the fleet unit's bid."""
        parameters = await asyncio.to_thread(self._node_sites, request.vpp_node, request.hierarchy)
        async with channel(self._gateway_address, self._security, CHANNEL_OPTIONS) as gateway_channel:
            stub = fleet_pb2_grpc.FleetGatewayServiceStub(gateway_channel)
            response = await stub.GetPlans(fleet_pb2.GetPlansRequest(site_id=parameters.site_ids.tolist()),
                                           timeout=60)
        # Sites plan in wall-clock time; the market (replayed in the local stack) runs in market time:
        # move the plans onto the market clock, then aggregate the window holding the bid's first interval.
        received = plans_from_proto(response.plans)
        plans = received.take(np.argsort(received.site_ids, kind="stable"), shift_ms=request.market_offset_ms)
        fleet = self._settings.fleet
        window_start_ms = plan_window_start_ms(datetime.fromisoformat(request.dispatch_interval),
                                               fleet.plan_interval_minutes)
        membership = sp.csr_matrix(np.ones((1, parameters.site_count)))
        aggregate = aggregate_plans(membership, parameters.site_ids, plans, start_ms=window_start_ms,
                                    horizon_intervals=fleet.plan_horizon_intervals - 1,
                                    plan_interval_minutes=fleet.plan_interval_minutes,
                                    current_version=request.version, site_capacity_kwh=parameters.capacity_kwh,
                                    confidence_z=fleet.confidence_z)
        spec = fleet_unit_of_sites(request.fleet_unit_id, request.region, parameters)
        counts = dict(expected_sites=int(aggregate.expected_sites[0]),
                      current_version_sites=int(aggregate.current_version_sites[0, 0]),
                      stale_version_sites=int(aggregate.stale_version_sites[0, 0]),
                      estimated_sites=int(aggregate.estimated_sites[0, 0]))
        try:
            fleet_bid = build_fleet_bid(aggregate, 0, spec, self._fleet_bidding(request.fleet_unit_id),
                                        self._settings.market,
                                        dispatch_interval=datetime.fromisoformat(request.dispatch_interval),
                                        offer_time=datetime.fromisoformat(request.offer_time), version=1,
                                        plan_hash=sha256_hex(response.plans.SerializeToString()))
        except FleetBidError as error:  # no bid can be made from these plans: say why, bid nothing
            return FleetBidOutcome(valid=False, violations=(str(error),), summary=f"no fleet bid: {error}",
                                   aggregate=aggregate.description(0), bid_key="",
                                   registered_power_mw=spec.power_mw, **counts)
        key = ""
        if fleet_bid.bid is not None:
            key = await asyncio.to_thread(self._archive.put, fleet_bid.bid, cycle_id=request.run_id,
                                          label="fleet-bid")
        violations = tuple(str(v) for v in fleet_bid.violations)
        return FleetBidOutcome(valid=fleet_bid.bid is not None and not violations, violations=violations,
                               summary=fleet_bid.summary, aggregate=aggregate.description(0), bid_key=key,
                               registered_power_mw=spec.power_mw, **counts)


    @activity.defn(name="submit_fleet_bid")
    async def submit_fleet_bid(self, request: SubmitFleetBidRequest) -> FleetSubmitted:
        """Submit the archived fleet bid to the market; when accepted, ask for the dispatch instruction of
        its first interval (the simulated market clears it on demand from the replayed prices)."""
        bid = cast(bid_pb2.Bid, await asyncio.to_thread(self._archive.get, request.bid_key))
        response = await submit_bid(self._bid_address, bid, security=self._security)
        status = bid_pb2.BidStatus.Name(response.status).removeprefix("BID_STATUS_")
        if status != "ACCEPTED":
            return FleetSubmitted(bid_id=response.bid_id, status=status, reasons=tuple(response.reasons),
                                  dispatch_mw=None, energy_price_per_mwh=None)
        instruction = await self.fleet_dispatch_instruction(
            InstructionRequest(fleet_unit_id=request.fleet_unit_id, dispatch_interval=request.dispatch_interval))
        return FleetSubmitted(bid_id=response.bid_id, status=status, reasons=tuple(response.reasons),
                              dispatch_mw=instruction.dispatch_mw,
                              energy_price_per_mwh=instruction.energy_price_per_mwh)

    @activity.defn(name="fleet_dispatch_instruction")
    async def fleet_dispatch_instruction(self, request: InstructionRequest) -> FleetInstruction:
        """The market's instruction for the fleet unit in an interval (the simulated market clears it on
        demand from the bids in force); no instruction when the market will never dispatch it."""
        try:
            dispatched = await get_dispatch_outcome(self._bid_address, request.fleet_unit_id,
                                                    datetime.fromisoformat(request.dispatch_interval),
                                                    security=self._security)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            activity.logger.warning("no instruction for %s at %s: %s", request.fleet_unit_id,
                                    request.dispatch_interval, error.details())
            return FleetInstruction(dispatch_mw=None, energy_price_per_mwh=None)
        return FleetInstruction(dispatch_mw=dispatched_mw(dispatched.outcome),
                                energy_price_per_mwh=outcome_price(dispatched.outcome, ENERGY))
