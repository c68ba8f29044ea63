"""What every activity class that talks to the fleet gateway shares: its address, the database URL, the
edge security of the calls, and one lazily opened gRPC channel."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from services.fleet_gateway import CHANNEL_OPTIONS
from services.security import EdgeSecurity, channel
from vpp.v1 import fleet_pb2_grpc


def utc(epoch_ms: int) -> datetime:
    """The aware UTC datetime of ``epoch_ms`` (epoch milliseconds)."""
    return datetime.fromtimestamp(epoch_ms / 1000.0, tz=UTC)


class GatewayActivities:
    """Base of activity classes bound to a fleet gateway address and a database URL.

    ``security`` (TLS trust, token) of the gateway calls defaults to the environment's.
    """

    def __init__(self, gateway_address: str, database_url: str, security: EdgeSecurity | None = None) -> None:
        self.gateway_address = gateway_address
        self.database_url = database_url
        self.security = security
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> fleet_pb2_grpc.FleetGatewayServiceStub:
        if self._channel is None:
            self._channel = channel(self.gateway_address, self.security, CHANNEL_OPTIONS)
        return fleet_pb2_grpc.FleetGatewayServiceStub(self._channel)

    async def close(self) -> None:
        """Close the gRPC channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
