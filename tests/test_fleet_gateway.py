"""The fleet gateway: codec, control plane with a fake clock, and the gRPC service with bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.fleet.accounting import readings_in_force
from algorithms.fleet.commands import CommandBook, CommandPolicy, plan_commands, record_acks
from algorithms.fleet.fleet_types import NEVER, AckBatch, TelemetryBatch
from services.fleet_codec import (
    MalformedBatchError,
    acks_from_proto,
    acks_to_proto,
    setpoints_from_proto,
    telemetry_from_proto,
    telemetry_to_proto,
)
from services.fleet_gateway import (
    EventRequestError,
    FleetGateway,
    FleetGatewayServicer,
    UnknownEventError,
    presumed_response_kw,
)
from settings import FleetSettings
from simulator.population import make_site_parameters
from tests.gateway_helpers import served_gateway
from vpp.v1 import fleet_pb2

T0 = 1_750_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = T0

    def __call__(self) -> int:
        return self.now_ms


def _telemetry(site_ids: list[str], at_ms: int, power_kw: float, soc_pct: float = 60.0,
               sequence: int = 1) -> TelemetryBatch:
    n = len(site_ids)
    return TelemetryBatch(site_ids=np.array(site_ids), sequence=np.full(n, sequence, dtype=np.int64),
                          measured_at_ms=np.full(n, at_ms, dtype=np.int64), battery_power_kw=np.full(n, power_kw),
                          state_of_charge_pct=np.full(n, soc_pct), pv_power_kw=np.zeros(n), load_power_kw=np.ones(n))


def test_columnar_batches_round_trip_and_ragged_batches_are_rejected_naming_the_field() -> None:
    batch = _telemetry(["site-000001", "site-000002"], T0, 1.5)
    again = telemetry_from_proto(telemetry_to_proto(batch))
    for name in ("site_ids", "sequence", "measured_at_ms", "battery_power_kw", "state_of_charge_pct"):
        np.testing.assert_array_equal(getattr(again, name), getattr(batch, name))
    acks = AckBatch(site_ids=np.array(["a"]), command_id=np.array([7]), acknowledged_at_ms=np.array([T0]),
                    accepted=np.array([False]))
    assert acks_from_proto(acks_to_proto(acks)).accepted.tolist() == [False]
    ragged = telemetry_to_proto(batch)
    ragged.battery_power_kw.append(3.0)
    with pytest.raises(MalformedBatchError, match="battery_power_kw has 3 values"):
        telemetry_from_proto(ragged)
    with pytest.raises(MalformedBatchError, match="setpoint_kw"):
        setpoints_from_proto(fleet_pb2.SetpointBatch(site_id=["a"], command_id=[1], setpoint_kw=[], valid_until_ms=[1]))


def test_a_site_is_presumed_to_follow_an_accepted_command_its_latest_reading_predates() -> None:
    plan = plan_commands(CommandBook.empty(3), np.array([2.0, 2.0, 2.0]), now_ms=T0, event_end_ms=T0 + 60_000,
                         next_command_id=1, policy=CommandPolicy())
    book = record_acks(plan.book, np.array([0, 1, 2]), np.array([1, 2, 3]), np.array([T0 + 500] * 3),
                       np.array([True, True, False]))
    measured_at = np.array([T0 - 1_000, T0 + 900, T0 - 1_000])
    observed = presumed_response_kw(book, measured_at, np.array([-1.0, 1.8, -1.0]))
    assert observed.tolist() == [2.0, 1.8, -1.0]  # presumed / measured after the ack / refused


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=12), st.integers(1, 6), st.integers(0, 2**31))
def test_the_reading_in_force_at_each_step_is_the_newest_measured_by_then(gaps: list[int], sites: int,
                                                                        seed: int) -> None:
    """Property against a per-site Python reference, for any arrival pattern."""
    rng = np.random.default_rng(seed)
    steps = len(gaps)
    step_times = T0 + np.cumsum(np.array(gaps, dtype=np.int64) * 100)
    measured_at = np.full((steps, sites), NEVER, dtype=np.int64)
    power = np.full((steps, sites), np.nan)
    for site in range(sites):
        latest, value = NEVER, np.nan
        for step in range(steps):
            if rng.random() < 0.6:
                latest = int(step_times[step] - rng.integers(0, 400))
                latest = max(latest, int(measured_at[step - 1, site]) if step else latest)
                value = float(rng.normal())
            measured_at[step, site], power[step, site] = latest, value
    result = readings_in_force(step_times, measured_at, power, max_age_ms=2_000)
    for site in range(sites):
        for k in range(steps):
            candidates = [j for j in range(steps) if 0 <= measured_at[j, site] <= step_times[k]]
            if not candidates or step_times[k] - measured_at[max(candidates), site] > 2_000:
                assert np.isnan(result[k, site])
            else:
                assert result[k, site] == power[max(candidates), site]


def _gateway(site_count: int = 20, **fleet: int) -> tuple[FleetGateway, FakeClock]:
    clock = FakeClock()
    settings = FleetSettings(**{"first_correction_after_ms": 0, **fleet})  # type: ignore[arg-type]
    return FleetGateway(make_site_parameters(site_count, 5), settings, clock=clock), clock


async def test_the_first_allocation_is_held_until_every_site_has_reported_since_its_command() -> None:
    gateway, clock = _gateway(first_correction_after_ms=6_000)
    sites = gateway.parameters.site_ids
    _, queue = gateway.open_stream(sites)
    gateway.ingest(_telemetry(sites.tolist(), T0 - 1_000, -1.5))
    gateway.start_event("hold", sites, 0.05, T0, T0 + 60_000)
    gateway.control_event("hold", 0.05)
    first = queue.get_nowait().setpoints
    clock.now_ms = T0 + 4_000  # nobody acknowledged, readings still from before the commands
    held = gateway.control_event("hold", 0.05)
    assert held.commands_sent == 0 and held.commands_resent == 20  # resent, not corrected
    assert list(queue.get_nowait().setpoints.setpoint_kw) == list(first.setpoint_kw)
    changed = gateway.control_event("hold", 0.08)  # a new target is allocated at once
    assert changed.commands_sent == 20
    assert sum(queue.get_nowait().setpoints.setpoint_kw) == pytest.approx(80.0)


async def test_control_steps_command_every_reporting_site_then_resend_only_the_unacknowledged() -> None:
    gateway, clock = _gateway()
    sites = gateway.parameters.site_ids
    _, queue = gateway.open_stream(sites)
    gateway.ingest(_telemetry(sites.tolist(), T0 - 1_000, 0.0))
    with pytest.raises(EventRequestError, match="none of its 1 sites is known"):
        gateway.start_event("bad", np.array(["nobody"]), 0.05, T0, T0 + 60_000)
    with pytest.raises(EventRequestError, match="not after"):
        gateway.start_event("bad", sites, 0.05, T0, T0)
    count, unknown = gateway.start_event("e1", np.concatenate([sites, ["stranger"]]), 0.05, T0, T0 + 60_000)
    assert (count, unknown.tolist()) == (20, ["stranger"])

    progress = gateway.control_event("e1", 0.05)
    first = queue.get_nowait().setpoints
    assert progress.commands_sent == len(first.site_id) == 20
    assert sum(first.setpoint_kw) == pytest.approx(50.0)
    assert all(valid == T0 + 30_000 for valid in first.valid_until_ms)

    acked = list(first.site_id)[:15]
    gateway.acknowledge(AckBatch(site_ids=np.array(acked), command_id=np.array(list(first.command_id)[:15]),
                                 acknowledged_at_ms=np.full(15, T0 + 300), accepted=np.ones(15, dtype=bool)))
    clock.now_ms = T0 + 2_000
    gateway.ingest(_telemetry(acked, T0 + 1_500, 50.0 / 15, sequence=2))
    progress = gateway.control_event("e1", 0.05)
    assert progress.acknowledged_sites == 15
    second = queue.get_nowait().setpoints
    setpoints = dict(zip(second.site_id, second.setpoint_kw, strict=True))
    # Not acknowledged: counted on for what they deliver (0 kW); the 15 that answered carry the target.
    assert {setpoints[site] for site in list(first.site_id)[15:]} == {0.0}
    assert sum(setpoints[site] for site in acked) == pytest.approx(50.0)
    gateway.acknowledge(AckBatch(site_ids=np.array(acked), command_id=np.array(
        [command for site, command in zip(second.site_id, second.command_id, strict=True) if site in acked]),
        acknowledged_at_ms=np.full(15, T0 + 2_300), accepted=np.ones(15, dtype=bool)))
    clock.now_ms = T0 + 4_100
    progress = gateway.control_event("e1", 0.05)
    assert (progress.commands_sent, progress.commands_resent) == (0, 5)
    resent = queue.get_nowait().setpoints
    assert sorted(resent.site_id) == sorted(list(first.site_id)[15:])
    assert set(resent.command_id) <= set(second.command_id)

    clock.now_ms = T0 + 6_000
    account = gateway.finish_event("e1")
    release = queue.get_nowait().setpoints
    assert set(release.setpoint_kw) == {0.0} and len(release.site_id) == 20
    assert account.summary.asked_mwh > 0
    assert int(account.acknowledged.sum()) == 15
    with pytest.raises(UnknownEventError):
        gateway.control_event("e1", 0.05)


async def test_a_full_stream_queue_drops_the_batch_and_counts_it_for_the_next_resend() -> None:
    gateway, _ = _gateway()
    sites = gateway.parameters.site_ids
    _, queue = gateway.open_stream(sites)
    for _ in range(gateway.settings.stream_queue_size):
        queue.put_nowait(fleet_pb2.ConnectResponse())
    gateway.ingest(_telemetry(sites.tolist(), T0 - 1_000, 0.0))
    gateway.start_event("e2", sites, 0.02, T0, T0 + 60_000)
    gateway.control_event("e2", 0.02)
    assert gateway.counters.dropped_downlink == 20


async def test_the_stream_counts_quarantined_readings_and_aborts_on_a_malformed_batch() -> None:
    gateway, _ = _gateway()
    assert isinstance(FleetGatewayServicer(gateway), FleetGatewayServicer)
    sites = gateway.parameters.site_ids.tolist()
    good = telemetry_to_proto(_telemetry(sites[:3], T0 - 500, 1.0))
    nonsense = telemetry_to_proto(_telemetry(["site-999999", sites[3]], T0 - 500, 1.0, soc_pct=140.0))

    async def uplink() -> AsyncIterator[fleet_pb2.ConnectRequest]:
        yield fleet_pb2.ConnectRequest(telemetry=good)
        yield fleet_pb2.ConnectRequest(telemetry=nonsense)
        await asyncio.sleep(0.3)
        broken = telemetry_to_proto(_telemetry(sites[:1], T0 - 400, 1.0))
        broken.sequence.append(9)
        yield fleet_pb2.ConnectRequest(telemetry=broken)

    async with served_gateway(gateway) as stub:
        receipts = []
        with pytest.raises(grpc.aio.AioRpcError) as aborted:
            async for response in stub.Connect(uplink()):
                receipts.append(response.receipt)
        assert aborted.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "sequence has 2 values" in (aborted.value.details() or "")
        stats = await stub.GetIngestStats(fleet_pb2.GetIngestStatsRequest(recent_quarantined=10))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ControlEvent(fleet_pb2.ControlEventRequest(event_id="nope", target_mw=1.0))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as bad_start:
            await stub.StartEvent(fleet_pb2.StartEventRequest(event_id="x", site_id=sites, target_mw=float("nan"),
                                                              start_ms=T0, end_ms=T0 + 1))
        assert bad_start.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        aggregate = await stub.GetAggregate(fleet_pb2.GetAggregateRequest(site_id=sites[:3]))
    assert [r.accepted for r in receipts[:2]] == [3, 0]
    assert dict(receipts[1].quarantined) == {"unknown_site": 1, "soc_out_of_range": 1}
    assert stats.readings == 5 and stats.accepted == 3
    assert dict(stats.quarantined)["soc_out_of_range"] == 1 and dict(stats.quarantined)["unknown_site"] == 1
    assert [(r.site_id, r.reason) for r in stats.recent] == [(sites[3], "soc_out_of_range"),
                                                             ("site-999999", "unknown_site")]
    assert stats.recent[0].state_of_charge_pct == 140.0
    assert aggregate.expected_sites == 3 and aggregate.reporting_sites == 3
    assert aggregate.battery_power_mw == pytest.approx(0.003)
    assert "3 expected sites" in aggregate.description
