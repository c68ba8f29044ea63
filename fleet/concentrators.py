"""Simulated homes on the wire: a :class:`FleetSimulator` driven in real time behind gRPC concentrators.

The sites are split into ``concentrator_count`` contiguous groups; each group holds one bidirectional
``Connect`` stream to the fleet gateway (many sites multiplexed per stream, as a real aggregator's
edge concentrators would). Every ``tick_s`` the simulator advances to the wall clock, and each
concentrator sends the telemetry and acknowledgements of its sites that reached the platform by then;
setpoints coming down any stream are delivered to the simulator's sites as they arrive.

With site keys configured (``VPP_FLEET_SITE_SECRET`` / ``VPP_FLEET_SITE_KEYS_FILE``, see
:mod:`services.security`) every hello proves each of its sites; the channel uses the process's TLS trust
and bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import numpy as np

from algorithms.fleet_types import AckBatch, IntArray, TelemetryBatch
from fleet.simulator import FleetSimulator
from services.fleet_codec import acks_to_proto, setpoints_from_proto, telemetry_to_proto
from services.fleet_gateway import CHANNEL_OPTIONS, wall_clock_ms
from services.security import EdgeSecurity, channel, prove_sites
from vpp.v1 import fleet_pb2, fleet_pb2_grpc

logger = logging.getLogger(__name__)


@dataclass
class ConcentratorStats:
    """What the concentrators did (counts since start)."""

    telemetry_sent: int = 0
    acks_sent: int = 0
    setpoints_received: int = 0
    receipts: int = 0
    quarantined_reported: int = 0
    sites_authenticated: int = 0
    sites_refused: int = 0


def concentrator_of_rows(site_count: int, concentrator_count: int) -> IntArray:
    """The concentrator (0..count-1) serving each site row: contiguous, near-equal groups."""
    return (np.arange(site_count, dtype=np.int64) * concentrator_count) // max(site_count, 1)


def _telemetry_part(batch: TelemetryBatch, mask: np.ndarray) -> TelemetryBatch:
    return TelemetryBatch(site_ids=batch.site_ids[mask], sequence=batch.sequence[mask],
                          measured_at_ms=batch.measured_at_ms[mask], battery_power_kw=batch.battery_power_kw[mask],
                          state_of_charge_pct=batch.state_of_charge_pct[mask], pv_power_kw=batch.pv_power_kw[mask],
                          load_power_kw=batch.load_power_kw[mask])


def _acks_part(batch: AckBatch, mask: np.ndarray) -> AckBatch:
    return AckBatch(site_ids=batch.site_ids[mask], command_id=batch.command_id[mask],
                    acknowledged_at_ms=batch.acknowledged_at_ms[mask], accepted=batch.accepted[mask])


async def run_concentrators(simulator: FleetSimulator, address: str, stop: asyncio.Event, *,
                            concentrator_count: int = 4, tick_s: float = 0.5,
                            clock: Callable[[], int] = wall_clock_ms,
                            stats: ConcentratorStats | None = None,
                            security: EdgeSecurity | None = None) -> ConcentratorStats:
    """Run the simulator's sites against the gateway at ``address`` until ``stop`` is set.

    ``security`` (TLS trust, token, site keys) defaults to the environment's.
    Raises grpc.aio.AioRpcError when the gateway refuses a stream (e.g. INVALID_ARGUMENT, UNAUTHENTICATED).
    """
    stats = stats or ConcentratorStats()
    security = EdgeSecurity.from_environment() if security is None else security
    latest_ms = clock()

    def monotonic_clock() -> int:
        """The wall clock, never going backwards (the simulator refuses time that does)."""
        nonlocal latest_ms
        latest_ms = max(latest_ms, clock())
        return latest_ms

    site_ids = simulator.parameters.site_ids
    owner = concentrator_of_rows(len(site_ids), concentrator_count)
    outboxes: list[asyncio.Queue[fleet_pb2.ConnectRequest | None]] = [
        asyncio.Queue(maxsize=16) for _ in range(concentrator_count)]

    def hello(index: int) -> fleet_pb2.ConcentratorHello:
        concentrator_id = f"concentrator-{index}"
        served = site_ids[owner == index].tolist()
        if security.site_keys is None:
            return fleet_pb2.ConcentratorHello(concentrator_id=concentrator_id, site_id=served)
        issued_at_ms = clock()
        return fleet_pb2.ConcentratorHello(
            concentrator_id=concentrator_id, site_id=served, issued_at_ms=issued_at_ms,
            site_proof=prove_sites(security.site_keys, concentrator_id, served, issued_at_ms))

    async def uplink(index: int) -> AsyncIterator[fleet_pb2.ConnectRequest]:
        yield fleet_pb2.ConnectRequest(hello=hello(index))
        while True:
            message = await outboxes[index].get()
            if message is None:
                return
            yield message

    async def downlink(channel: grpc.aio.Channel, index: int) -> None:
        stub = fleet_pb2_grpc.FleetGatewayServiceStub(channel)
        call = stub.Connect(uplink(index))
        async for response in call:
            kind = response.WhichOneof("body")
            if kind == "setpoints":
                batch = setpoints_from_proto(response.setpoints)
                stats.setpoints_received += len(batch.site_ids)
                simulator.deliver_setpoints(batch, monotonic_clock())
            elif kind == "receipt":
                stats.receipts += 1
                stats.quarantined_reported += sum(response.receipt.quarantined.values())
            elif kind == "site_auth":
                stats.sites_authenticated += response.site_auth.authenticated
                stats.sites_refused += len(response.site_auth.refused_site_id)
                if response.site_auth.refused_site_id:
                    logger.warning("concentrator-%d: the gateway refused %d sites", index,
                                   len(response.site_auth.refused_site_id))

    async with channel(address, security, CHANNEL_OPTIONS) as gateway_channel:
        readers = [asyncio.create_task(downlink(gateway_channel, index)) for index in range(concentrator_count)]
        try:
            while not stop.is_set():
                for reader in readers:
                    if reader.done():
                        reader.result()  # a stream that ended raises its error here
                now_ms = monotonic_clock()
                simulator.advance(now_ms)
                _send_uplink(simulator.collect_telemetry(now_ms), simulator.collect_acks(now_ms),
                             site_ids, owner, outboxes, stats)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=tick_s)
        finally:
            for outbox in outboxes:
                await outbox.put(None)
            await asyncio.wait(readers, timeout=2.0)
            for reader in readers:
                reader.cancel()
    return stats


def _send_uplink(telemetry: TelemetryBatch, acks: AckBatch, site_ids: np.ndarray, owner: IntArray,
                 outboxes: list[asyncio.Queue[fleet_pb2.ConnectRequest | None]],
                 stats: ConcentratorStats) -> None:
    """Split one tick's telemetry and acks by concentrator and queue them (drop if a queue is full)."""
    from algorithms.fleet_types import site_positions

    telemetry_owner = owner[np.maximum(site_positions(site_ids, telemetry.site_ids), 0)]
    ack_owner = owner[np.maximum(site_positions(site_ids, acks.site_ids), 0)]
    for index, outbox in enumerate(outboxes):
        mask = telemetry_owner == index
        if mask.any() and not outbox.full():
            outbox.put_nowait(fleet_pb2.ConnectRequest(telemetry=telemetry_to_proto(_telemetry_part(telemetry, mask))))
            stats.telemetry_sent += int(mask.sum())
        ack_mask = ack_owner == index
        if ack_mask.any() and not outbox.full():
            outbox.put_nowait(fleet_pb2.ConnectRequest(acks=acks_to_proto(_acks_part(acks, ack_mask))))
            stats.acks_sent += int(ack_mask.sum())
