"""The node-load sampler's activity: the asset graph (PostgreSQL) -> the fleet gateway's live load figures
(gRPC GetAggregate) -> ``node_load_history`` rows (PostgreSQL). No business logic here."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import numpy as np
import psycopg
from temporalio import activity

from activities.node_load_facts import NodeLoadSampled, SampleNodeLoadInput
from algorithms.fleet.peak_shaving import INTERVAL_MS, NodeLoadHistory
from models.assets import AssetGraphError, sites_under
from models.node_load import record_node_load
from services.fleet_gateway import CHANNEL_OPTIONS
from services.security import EdgeSecurity, channel
from vpp.v1 import fleet_pb2, fleet_pb2_grpc


def interval_end_at_or_before(now_ms: int) -> int:
    """The 5-minute grid point (epoch ms UTC) at or before ``now_ms``: the interval a sample is filed under."""
    return now_ms - now_ms % INTERVAL_MS


class NodeLoadActivities:
    """Bound to a fleet gateway address and a database URL."""

    def __init__(self, gateway_address: str, database_url: str, security: EdgeSecurity | None = None) -> None:
        """``security`` (TLS trust, token) of the gateway calls defaults to the environment's."""
        self.gateway_address = gateway_address
        self.database_url = database_url
        self.security = security

    @activity.defn(name="sample_node_load")
    async def sample_node_load(self, request: SampleNodeLoadInput) -> NodeLoadSampled:
        """Record one row per node that has reporting sites now; skip (and name) the others."""
        now = datetime.now(tz=UTC)
        interval_end = interval_end_at_or_before(int(now.timestamp() * 1000))

        def resolve() -> dict[str, np.ndarray]:
            found: dict[str, np.ndarray] = {}
            with psycopg.connect(self.database_url) as conn:
                for node in request.node_ids:
                    try:
                        found[node] = sites_under(conn, node, now, request.hierarchy)
                    except AssetGraphError:
                        found[node] = np.array([], dtype=np.str_)
            return found

        sites = await asyncio.to_thread(resolve)
        rows: list[tuple[str, fleet_pb2.GetAggregateResponse]] = []
        skipped: list[str] = []
        async with channel(self.gateway_address, self.security, CHANNEL_OPTIONS) as gateway_channel:
            stub = fleet_pb2_grpc.FleetGatewayServiceStub(gateway_channel)
            for node, site_ids in sites.items():
                if len(site_ids) == 0:
                    skipped.append(f"{node}: no sites")
                    continue
                aggregate = await stub.GetAggregate(fleet_pb2.GetAggregateRequest(site_id=site_ids.tolist()),
                                                    timeout=30)
                if aggregate.reporting_sites == 0 or not math.isfinite(aggregate.net_load_mw):
                    skipped.append(f"{node}: no site reporting")
                    continue
                rows.append((node, aggregate))

        def store() -> None:
            with psycopg.connect(self.database_url) as conn:
                for node, aggregate in rows:
                    record_node_load(conn, NodeLoadHistory(
                        node_id=node, interval_end_ms=np.array([interval_end], dtype=np.int64),
                        load_mw=np.array([max(aggregate.load_mw, 0.0)]), net_load_mw=np.array([aggregate.net_load_mw]),
                        sites_reporting=np.array([aggregate.reporting_sites], dtype=np.int64)))

        await asyncio.to_thread(store)
        return NodeLoadSampled(interval_end_ms=interval_end, recorded=len(rows), skipped=tuple(skipped))
