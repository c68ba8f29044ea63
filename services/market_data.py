"""The MarketDataService gRPC server (as-of market snapshots over the loaded MMS tables) and its client.

The as-of contract and the snapshot itself are pure functions: :mod:`algorithms.market.as_of`. Where the
tables come from is ``[market_data] source`` (:func:`market_tables`): "files" (the MMS tables of
``data_dir``, replayed) or "live" (AEMO's current reports as they are published: :mod:`services.market_live`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import grpc

from aemo.store_prices import configured_market_tables
from algorithms.common.nem_time import from_timestamp, to_timestamp
from algorithms.market.as_of import (
    DEFAULT_HISTORY_INTERVALS,
    MarketTables,
    SnapshotNotFoundError,
    SnapshotRequestError,
    build_snapshot,
    publication_model,
)
from services.health import SERVER_OPTIONS, add_health, bind_port
from services.security import ChannelPool, EdgeSecurity, call_channel, secure_server
from settings import Settings
from vpp.v1 import market_data_pb2, market_data_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = market_data_pb2.DESCRIPTOR.services_by_name["MarketDataService"].full_name
SERVICE_LABEL = "market-data service"


# --------------------------------------------------------------------------------------------------
# gRPC server
# --------------------------------------------------------------------------------------------------


class MarketDataServicer(market_data_pb2_grpc.MarketDataServiceServicer):
    """MarketDataService over the market tables ``tables()`` returns at each call (grpc.aio); a request without
    ``history_intervals`` gets ``default_history_intervals``, and every window may reach back
    ``history_reach_intervals`` 5-minute intervals when short (:func:`~algorithms.market.as_of.build_snapshot`)."""

    def __init__(self, tables: Callable[[], MarketTables],
                 default_history_intervals: int = DEFAULT_HISTORY_INTERVALS,
                 history_reach_intervals: int = 0) -> None:
        self._tables = tables
        self._default_history_intervals = default_history_intervals
        self._history_reach_intervals = history_reach_intervals

    async def GetSnapshot(self, request: market_data_pb2.GetSnapshotRequest,  # noqa: N802 (gRPC method name)
                          context: grpc.aio.ServicerContext[market_data_pb2.GetSnapshotRequest,
                                                            market_data_pb2.GetSnapshotResponse],
                          ) -> market_data_pb2.GetSnapshotResponse:
        """The snapshot as of ``request.as_of``; INVALID_ARGUMENT / NOT_FOUND with a clear message."""
        for required in ("as_of", "dispatch_interval"):
            if not request.HasField(required):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"{required} is required (a timestamp; market time is AEST)")
        tables = self._tables()
        try:
            snapshot = build_snapshot(
                tables.dispatch, tables.predispatch, region=request.region,
                dispatch_interval=from_timestamp(request.dispatch_interval),
                as_of=from_timestamp(request.as_of),
                history_intervals=request.history_intervals or self._default_history_intervals,
                publication=tables.publication, p5min=tables.p5min,
                history_reach_intervals=self._history_reach_intervals)
        except SnapshotRequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except SnapshotNotFoundError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return market_data_pb2.GetSnapshotResponse(snapshot=snapshot)


@asynccontextmanager
async def market_tables(settings: Settings) -> AsyncIterator[Callable[[], MarketTables]]:
    """The service's tables by ``[market_data] source``, while the ``async with`` lasts: "files" loads the
    MMS tables of ``data_dir`` once (the embedded January 2021 month by default) and "store" the market
    store over the replay period (:func:`aemo.store_prices.configured_market_tables`; publication simulated
    by the settings); "live" follows AEMO's current reports (:func:`services.market_live.live_market_tables`).
    Raises :class:`aemo.errors.AemoDataError` (MmsFormatError among them) when the data cannot be used."""
    if settings.market_data.source == "live":
        from services.market_live import live_market_tables

        async with live_market_tables(settings) as live:
            yield live
        return
    dispatch, predispatch = await asyncio.to_thread(configured_market_tables, settings)
    loaded = MarketTables(dispatch=dispatch, predispatch=predispatch,
                          publication=publication_model(settings.market_data))
    yield lambda: loaded


def describe_tables(tables: MarketTables) -> str:
    """One line: regions, intervals, products and pre-dispatch runs."""
    dispatch = tables.dispatch
    span = (f"intervals {dispatch.intervals[0]} .. {dispatch.intervals[-1]}" if len(dispatch.intervals)
            else "no intervals yet")
    p5min = f", {len(tables.p5min.run_time)} P5MIN runs" if tables.p5min is not None else ""
    return (f"{len(dispatch.regions)} regions, {span}, {len(dispatch.products)} products, "
            f"{len(tables.predispatch.run_time)} pre-dispatch runs{p5min}")


async def serve(settings: Settings, stop: asyncio.Event, security: EdgeSecurity | None = None) -> None:
    """Run the market-data gRPC server on settings.stack.market_data_port until ``stop`` is set.

    Serves the tables of :func:`market_tables`; registers gRPC health (SERVING). ``security``
    (bind host, TLS, accepted tokens) defaults to the environment's (:mod:`services.security`).
    Raises PortInUseError when the port is taken, MmsFormatError when the data cannot be loaded.
    """
    security = EdgeSecurity.from_environment(with_site_keys=False) if security is None else security
    async with market_tables(settings) as tables:
        servicer = MarketDataServicer(tables, settings.cycle.history_intervals or DEFAULT_HISTORY_INTERVALS,
                                      settings.market_data.history_reach_intervals)
        server = secure_server(security, SERVER_OPTIONS)
        market_data_pb2_grpc.add_MarketDataServiceServicer_to_server(servicer, server)
        add_health(server, [SERVICE_NAME])
        address = bind_port(server, settings.stack.market_data_port, SERVICE_LABEL, security=security)
        await server.start()
        try:
            logger.info("%s ready on %s (%s): %s", SERVICE_LABEL, address, settings.market_data.source,
                        describe_tables(tables()))
            await stop.wait()
        finally:
            await server.stop(grace=2.0)
            logger.info("%s on %s stopped", SERVICE_LABEL, address)


async def fetch_snapshot(address: str, region: str, dispatch_interval: datetime, as_of: datetime,
                         history_intervals: int = 0,
                         timeout_s: float = 10.0,
                         security: EdgeSecurity | None = None,
                         channels: ChannelPool | None = None) -> market_data_pb2.MarketSnapshot:
    """Call GetSnapshot on the server at ``address`` ("host:port"); times are naive AEST market times.

    ``security`` (TLS trust, token) defaults to the environment's.
    Raises grpc.aio.AioRpcError (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED, UNAVAILABLE, ...).
    """
    request = market_data_pb2.GetSnapshotRequest(
        region=region, dispatch_interval=to_timestamp(dispatch_interval), as_of=to_timestamp(as_of),
        history_intervals=history_intervals)
    async with call_channel(address, security, channels) as snapshot_channel:
        stub = market_data_pb2_grpc.MarketDataServiceStub(snapshot_channel)
        response: market_data_pb2.GetSnapshotResponse = await stub.GetSnapshot(request, timeout=timeout_s)
    return response.snapshot
