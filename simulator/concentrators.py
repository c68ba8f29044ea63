"""Simulated homes on the wire: a :class:`FleetSimulator` driven in real time behind gRPC concentrators.

The sites are split into ``concentrator_count`` contiguous groups; each group holds one bidirectional
``Connect`` stream to the fleet gateway (many sites multiplexed per stream, as a real aggregator's
edge concentrators would). Every ``tick_s`` the simulator advances to the wall clock, and each
concentrator sends the telemetry and acknowledgements of its sites that reached the platform by then;
setpoints coming down any stream are delivered to the simulator's sites as they arrive.

With site keys configured (``VPP_FLEET_SITE_SECRET`` / ``VPP_FLEET_SITE_KEYS_FILE``, see
:mod:`services.security`) every hello proves each of its sites; the channel uses the process's TLS trust
and bearer token.

**Price forecasts and own plans** (the co-optimised VPP, with an :class:`~simulator.edge_planner.EdgePlannerConfig`).
A forecast coming down a stream (pushed, or the answer to a poll) is now held by every site of that
concentrator (:class:`~simulator.edge_planner.HeldForecasts`, kept across reconnects like a device's storage).
A newer version makes the concentrator plan its sites at once (:func:`algorithms.fleet.site_plan.plan_sites` in a
worker thread, :mod:`simulator.edge_planner`), apply the plans to the simulator and queue them up as one
PlanBatch; it also re-plans every ``replan_interval_s`` on the last version it holds. With ``poll=True`` a
concentrator sends ``ForecastPoll(after_version=held)`` right after connecting and then every
``poll_interval_s``: concentrator ``i`` of ``K`` polls again ``(i + 1)/K`` of an interval after connecting and
then every interval, so the concentrators do not poll in lock-step (real devices' phases are spread by when
they booted) and no concentrator ever waits longer than one interval between two polls.
Plan receipts are counted. Without an edge configuration the concentrators neither plan nor poll (forecasts
pushed to them are still counted and held).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from algorithms.fleet.fleet_types import AckBatch, IntArray, TelemetryBatch
from algorithms.fleet.site_plan import InvalidSitePlanInputError, plan_sites
from algorithms.fleet.site_plan_types import SitePlanInputs, SitePlans
from services.fleet_codec import acks_to_proto, plans_to_proto, setpoints_from_proto, telemetry_to_proto
from services.fleet_gateway import CHANNEL_OPTIONS, wall_clock_ms
from services.security import EdgeSecurity, channel, prove_sites
from simulator.edge_planner import (
    EdgePlannerConfig,
    HeldForecasts,
    UnusableForecastError,
    apply_plans,
    site_plan_inputs,
)
from simulator.homes import FleetSimulator
from vpp.v1 import fleet_pb2, fleet_pb2_grpc

logger = logging.getLogger(__name__)


@dataclass
class ConcentratorStats:
    """What the concentrators did (counts since start; sizes in bytes of the serialised stream messages).

    Forecasts: ``forecasts_received`` downlink forecast messages (pushed or answering a poll) and their
    bytes; ``polls_sent`` uplink ForecastPoll messages and their bytes; ``version_held_at_ms[v][i]`` the
    wall-clock time (epoch ms UTC) concentrator ``i`` first held version ``v``. Plans: ``plans_sent`` site
    plans sent up (in ``plan_batches_sent`` batches, ``plan_bytes_sent`` bytes), ``plans_accepted`` /
    ``plans_quarantined`` as the gateway's receipts reported them (by reason in
    ``plans_quarantined_by_reason``), ``plan_runs`` planner runs and ``planning_s`` their CPU time
    (seconds, summed over concentrators, which plan in parallel worker threads).
    """

    telemetry_sent: int = 0
    acks_sent: int = 0
    setpoints_received: int = 0
    receipts: int = 0
    quarantined_reported: int = 0
    sites_authenticated: int = 0
    sites_refused: int = 0
    forecasts_received: int = 0
    forecast_bytes_received: int = 0
    polls_sent: int = 0
    poll_bytes_sent: int = 0
    plans_sent: int = 0
    plan_batches_sent: int = 0
    plan_bytes_sent: int = 0
    plan_receipts: int = 0
    plans_accepted: int = 0
    plans_quarantined: int = 0
    plans_quarantined_by_reason: Counter[str] = field(default_factory=Counter)
    plan_runs: int = 0
    planning_s: float = 0.0
    version_held_at_ms: dict[int, dict[int, int]] = field(default_factory=dict)

    def record_held(self, version: int, concentrator: int, at_ms: int) -> None:
        """Note that ``concentrator`` holds ``version`` at ``at_ms`` (epoch ms UTC) unless it did before."""
        self.version_held_at_ms.setdefault(int(version), {}).setdefault(concentrator, int(at_ms))


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


def _plan_message(inputs: SitePlanInputs, soc_levels: int) -> tuple[SitePlans, fleet_pb2.ConnectRequest, float]:
    """Plan a concentrator's sites and build their PlanBatch (run in a worker thread); with the CPU time the
    thread spent on it (s)."""
    started = time.thread_time()
    plans = plan_sites(inputs, soc_levels=soc_levels)
    message = fleet_pb2.ConnectRequest(plans=plans_to_proto(plans))
    return plans, message, time.thread_time() - started


async def run_concentrators(simulator: FleetSimulator, address: str, stop: asyncio.Event, *,
                            concentrator_count: int = 4, tick_s: float = 0.5,
                            clock: Callable[[], int] = wall_clock_ms,
                            stats: ConcentratorStats | None = None,
                            security: EdgeSecurity | None = None,
                            edge: EdgePlannerConfig | None = None,
                            poll: bool = False,
                            held: HeldForecasts | None = None) -> ConcentratorStats:
    """Run the simulator's sites against the gateway at ``address`` until ``stop`` is set.

    ``security`` (TLS trust, token, site keys) defaults to the environment's. ``edge`` makes the sites plan
    their own batteries on the forecasts they receive (None: no planning, no polling); ``poll`` makes the
    concentrators poll for forecasts every ``edge.poll_interval_s`` (see the module docstring). ``held`` is
    the forecast every concentrator's sites hold, kept across runs (None: they start holding none).
    Raises grpc.aio.AioRpcError when the gateway refuses a stream (e.g. INVALID_ARGUMENT, UNAUTHENTICATED).
    """
    stats = stats if stats is not None else ConcentratorStats()
    held = held if held is not None else HeldForecasts()
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
    plan_wanted = [asyncio.Event() for _ in range(concentrator_count)]

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
            elif kind == "forecast":
                stats.forecasts_received += 1
                stats.forecast_bytes_received += response.ByteSize()
                if held.hold(index, response.forecast):
                    stats.record_held(response.forecast.version, index, monotonic_clock())
                    plan_wanted[index].set()
            elif kind == "plan_receipt":
                stats.plan_receipts += 1
                stats.plans_accepted += response.plan_receipt.accepted
                stats.plans_quarantined += sum(response.plan_receipt.quarantined.values())
                stats.plans_quarantined_by_reason.update(dict(response.plan_receipt.quarantined))

    async def planner(index: int, config: EdgePlannerConfig) -> None:
        """Plan the concentrator's sites on each new version it holds, and every replan_interval_s."""
        rows = np.flatnonzero(owner == index)
        while len(rows):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(plan_wanted[index].wait(), timeout=config.replan_interval_s)
            plan_wanted[index].clear()
            try:
                forecast = held.forecast(index)
                storm = np.full(len(rows), bool(forecast is not None and forecast.storm_warning))
                inputs = site_plan_inputs(simulator, rows, forecast, monotonic_clock(), config, storm)
                plans, message, compute_s = await asyncio.to_thread(_plan_message, inputs, config.soc_levels)
            except (UnusableForecastError, InvalidSitePlanInputError) as error:  # keep the plan they follow
                logger.warning("concentrator-%d: its sites could not plan (%s); they keep their last plan",
                               index, error)
                continue
            apply_plans(simulator, rows, plans)
            stats.plan_runs += 1
            stats.planning_s += compute_s
            await outboxes[index].put(message)
            stats.plans_sent += plans.site_count
            stats.plan_batches_sent += 1
            stats.plan_bytes_sent += message.ByteSize()

    async def poller(index: int, config: EdgePlannerConfig) -> None:
        """Poll right after connecting, then every poll_interval_s at this concentrator's phase."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + config.poll_interval_s * (index + 1) / concentrator_count
        while True:
            message = fleet_pb2.ConnectRequest(forecast_poll=fleet_pb2.ForecastPoll(after_version=held.version(index)))
            await outboxes[index].put(message)
            stats.polls_sent += 1
            stats.poll_bytes_sent += message.ByteSize()
            await asyncio.sleep(max(next_poll - loop.time(), 0.0))
            next_poll += config.poll_interval_s

    async with channel(address, security, CHANNEL_OPTIONS) as gateway_channel:
        readers = [asyncio.create_task(downlink(gateway_channel, index)) for index in range(concentrator_count)]
        helpers: list[asyncio.Task[None]] = []
        if edge is not None:
            helpers += [asyncio.create_task(planner(index, edge)) for index in range(concentrator_count)]
            if poll:
                helpers += [asyncio.create_task(poller(index, edge)) for index in range(concentrator_count)]
        try:
            while not stop.is_set():
                for task in (*readers, *helpers):
                    if task.done():
                        task.result()  # a stream that ended (or a planner that failed) raises its error here
                now_ms = monotonic_clock()
                simulator.advance(now_ms)
                _send_uplink(simulator.collect_telemetry(now_ms), simulator.collect_acks(now_ms),
                             site_ids, owner, outboxes, stats)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=tick_s)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            for outbox in outboxes:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(outbox.put(None), timeout=2.0)
            await asyncio.wait(readers, timeout=2.0)
            for reader in readers:
                reader.cancel()
    return stats


def _send_uplink(telemetry: TelemetryBatch, acks: AckBatch, site_ids: np.ndarray, owner: IntArray,
                 outboxes: list[asyncio.Queue[fleet_pb2.ConnectRequest | None]],
                 stats: ConcentratorStats) -> None:
    """Split one tick's telemetry and acks by concentrator and queue them (drop if a queue is full)."""
    from algorithms.fleet.fleet_types import site_positions

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
