"""A fleet gateway served over real gRPC for the duration of a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from services.fleet_gateway import CHANNEL_OPTIONS, FleetGateway, serve_gateway
from services.health import wait_healthy
from stack.ports import free_tcp_port
from vpp.v1 import fleet_pb2_grpc


@contextlib.asynccontextmanager
async def served_gateway(gateway: FleetGateway) -> AsyncIterator[fleet_pb2_grpc.FleetGatewayServiceStub]:
    """Serve ``gateway`` on a free local port; yields a stub of it, stops the server on exit."""
    port = free_tcp_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_gateway(gateway, port, stop))
    await wait_healthy(f"127.0.0.1:{port}", 20.0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=list(CHANNEL_OPTIONS)) as channel:
            yield fleet_pb2_grpc.FleetGatewayServiceStub(channel)
    finally:
        stop.set()
        await server
