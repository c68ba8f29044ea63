"""gRPC health checking (grpc.health.v1) for the platform's servers, and a readiness wait for clients.

Servers also bind through :func:`bind_port` so that a port already in use is a clear error: gRPC
enables SO_REUSEPORT by default, which would otherwise let two servers share a port silently. With TLS
configured (:mod:`services.security`) the port is bound with the server certificate, on ``VPP_BIND_HOST``.
Health checks need no token, but they do speak TLS when the server does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.security import EdgeSecurity, channel, server_credentials

# Server options every platform server uses: refuse to share a port with another process.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (("grpc.so_reuseport", 0),)
_RETRY_PAUSE_S = 0.05


class PortInUseError(RuntimeError):
    """The TCP port a server must listen on is already taken."""


class _ServingHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """The asyncio health servicer, created with the given services (and the server, "") SERVING."""

    def __init__(self, service_names: Sequence[str]) -> None:
        super().__init__()
        for name in ("", *service_names):
            self._server_status[name] = health_pb2.HealthCheckResponse.SERVING


def add_health(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Register grpc.health.v1.Health on ``server`` with ``service_names`` (full names) and "" SERVING."""
    health_pb2_grpc.add_HealthServicer_to_server(_ServingHealthServicer(service_names), server)


def bind_port(server: grpc.aio.Server, port: int, service_label: str, host: str | None = None,
              security: EdgeSecurity | None = None) -> str:
    """Bind ``server`` (created with :data:`SERVER_OPTIONS`) to ``host:port``; return the address.

    ``security`` defaults to the environment's (:meth:`EdgeSecurity.from_environment`); ``host`` to its
    bind host (``VPP_BIND_HOST``, 127.0.0.1). With TLS configured the port is a TLS port.
    Raises PortInUseError("port 50051 (market-data service) is already in use") when binding fails.
    """
    security = EdgeSecurity.from_environment(with_site_keys=False) if security is None else security
    address = f"{host or security.bind_host}:{port}"
    credentials = server_credentials(security)
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise PortInUseError(f"port {port} ({service_label}) is already in use") from exc
    if bound == 0:
        raise PortInUseError(f"port {port} ({service_label}) is already in use")
    return address


async def wait_healthy(address: str, timeout_s: float, security: EdgeSecurity | None = None) -> None:
    """Wait until the gRPC server at ``address`` ("host:port") answers its health check SERVING.

    ``security`` (TLS trust) defaults to the environment's. Raises TimeoutError naming the address when
    it does not within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    last_problem = "no answer"
    async with channel(address, security) as health_channel:
        stub = health_pb2_grpc.HealthStub(health_channel)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""),
                                         timeout=min(remaining, 1.0))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_problem = f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
            except grpc.aio.AioRpcError as exc:
                last_problem = f"{exc.code().name}: {exc.details()}"
            await asyncio.sleep(min(_RETRY_PAUSE_S, max(deadline - time.monotonic(), 0.0)))
    raise TimeoutError(f"gRPC server at {address} not healthy within {timeout_s} s ({last_problem})")
