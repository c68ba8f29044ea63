"""The MarketDataService gRPC server (as-of market snapshots over the loaded MMS tables) and its client.

The as-of contract and the snapshot itself are pure functions: :mod:`algorithms.market.as_of`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import grpc

from aemo.store_prices import configured_market_tables
from algorithms.common.nem_time import from_timestamp, to_timestamp
from algorithms.market.as_of import (
    DEFAULT_HISTORY_INTERVALS,
    PublicationModel,
    SnapshotNotFoundError,
    SnapshotRequestError,
    build_snapshot,
    publication_model,
)
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from services.health import SERVER_OPTIONS, add_health, bind_port
from services.security import EdgeSecurity, channel, secure_server
from settings import Settings
from vpp.v1 import market_data_pb2, market_data_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = market_data_pb2.DESCRIPTOR.services_by_name["MarketDataService"].full_name
SERVICE_LABEL = "market-data service"


# --------------------------------------------------------------------------------------------------
# gRPC server
# --------------------------------------------------------------------------------------------------


class MarketDataServicer(market_data_pb2_grpc.MarketDataServiceServicer):
    """MarketDataService over loaded MMS tables and a publication model (grpc.aio)."""

    def __init__(self, dispatch: DispatchPrices, predispatch: PredispatchPrices,
                 publication: PublicationModel,
                 default_history_intervals: int = DEFAULT_HISTORY_INTERVALS) -> None:
        self._dispatch = dispatch
        self._predispatch = predispatch
        self._publication = publication
        self._default_history_intervals = default_history_intervals

    async def GetSnapshot(self, request: market_data_pb2.GetSnapshotRequest,  # noqa: N802 (gRPC method name)
                          context: grpc.aio.ServicerContext[market_data_pb2.GetSnapshotRequest,
                                                            market_data_pb2.GetSnapshotResponse],
                          ) -> market_data_pb2.GetSnapshotResponse:
        """The snapshot as of ``request.as_of``; INVALID_ARGUMENT / NOT_FOUND with a clear message."""
        for required in ("as_of", "dispatch_interval"):
            if not request.HasField(required):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"{required} is required (a timestamp; market time is AEST)")
        try:
            snapshot = build_snapshot(
                self._dispatch, self._predispatch, region=request.region,
                dispatch_interval=from_timestamp(request.dispatch_interval),
                as_of=from_timestamp(request.as_of),
                history_intervals=request.history_intervals or self._default_history_intervals,
                publication=self._publication)
        except SnapshotRequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except SnapshotNotFoundError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return market_data_pb2.GetSnapshotResponse(snapshot=snapshot)


def market_tables(settings: Settings) -> tuple[DispatchPrices, PredispatchPrices]:
    """The MMS tables the service serves, from the configured source (``[market_data] source``: the files of
    ``data_dir``, the embedded January 2021 month by default, or the market store over the replay period)."""
    return configured_market_tables(settings)


async def serve(settings: Settings, stop: asyncio.Event, security: EdgeSecurity | None = None) -> None:
    """Run the market-data gRPC server on settings.stack.market_data_port until ``stop`` is set.

    Loads the MMS tables of the configured source (:func:`market_tables`); registers gRPC health (SERVING).
    ``security`` (bind host, TLS, accepted tokens) defaults to the environment's (:mod:`services.security`).
    Raises PortInUseError when the port is taken, an aemo.errors.AemoDataError when the data cannot be loaded.
    """
    security = EdgeSecurity.from_environment(with_site_keys=False) if security is None else security
    dispatch, predispatch = await asyncio.to_thread(market_tables, settings)
    servicer = MarketDataServicer(dispatch, predispatch, publication_model(settings.market_data),
                                  settings.cycle.history_intervals or DEFAULT_HISTORY_INTERVALS)
    server = secure_server(security, SERVER_OPTIONS)
    market_data_pb2_grpc.add_MarketDataServiceServicer_to_server(servicer, server)
    add_health(server, [SERVICE_NAME])
    address = bind_port(server, settings.stack.market_data_port, SERVICE_LABEL, security=security)
    await server.start()
    try:
        logger.info("%s ready on %s: %d regions, intervals %s .. %s, %d products, %d pre-dispatch runs",
                    SERVICE_LABEL, address, len(dispatch.regions), dispatch.intervals[0],
                    dispatch.intervals[-1], len(dispatch.products), len(predispatch.run_time))
        await stop.wait()
    finally:
        await server.stop(grace=2.0)
        logger.info("%s on %s stopped", SERVICE_LABEL, address)


async def fetch_snapshot(address: str, region: str, dispatch_interval: datetime, as_of: datetime,
                         history_intervals: int = 0,
                         timeout_s: float = 10.0,
                         security: EdgeSecurity | None = None) -> market_data_pb2.MarketSnapshot:
    """Call GetSnapshot on the server at ``address`` ("host:port"); times are naive AEST market times.

    ``security`` (TLS trust, token) defaults to the environment's.
    Raises grpc.aio.AioRpcError (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED, UNAVAILABLE, ...).
    """
    request = market_data_pb2.GetSnapshotRequest(
        region=region, dispatch_interval=to_timestamp(dispatch_interval), as_of=to_timestamp(as_of),
        history_intervals=history_intervals)
    async with channel(address, security) as snapshot_channel:
        stub = market_data_pb2_grpc.MarketDataServiceStub(snapshot_channel)
        response: market_data_pb2.GetSnapshotResponse = await stub.GetSnapshot(request, timeout=timeout_s)
    return response.snapshot
