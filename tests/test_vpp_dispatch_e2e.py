"""End to end on the real local stack: a VPP dispatch event steered by Temporal over the asset graph.

Real parts: PostgreSQL (asset graph, impact log), the Temporal dev server (the VppDispatchEvent
workflow and its activities), the fleet gateway over gRPC, and simulated homes connected through gRPC
concentrator streams (5 % of commands lost). The event runs in real time (about 40 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.dispatch import DispatchActivities
from activities.dispatch_facts import DispatchEventInput, DispatchProgress, EventSummary
from activities.node_load_facts import NodeLoadSampled, SampleNodeLoadInput
from activities.peak_shaving import PeakShavingActivities
from models.asset_factory import synthetic_asset_graph
from models.asset_io import import_graph
from models.assets import site_parameters, sites_under
from models.db import migrate
from models.dispatch_events import get_event, get_impact
from services.fleet_gateway import FleetGateway, serve_gateway, wall_clock_ms
from services.health import wait_healthy
from settings import FleetSettings
from simulator.concentrators import run_concentrators
from simulator.homes import FleetSimulator, SimulatorConfig
from simulator.population import make_site_parameters
from stack.ports import free_tcp_port
from tests.conftest import temporary_database
from tests.temporal_env import dev_server_path
from workers.vpp import dispatch_worker
from workflows.dispatch import VppDispatchEvent
from workflows.node_load_sampler import NodeLoadSampler

SITE_COUNT = 3_000
TASK_QUEUE = "vpp-e2e"
pytestmark = pytest.mark.stack


@dataclass
class VppStack:
    client: Client
    database_url: str
    gateway: FleetGateway
    simulator: FleetSimulator


@pytest.fixture(scope="module")
async def vpp_stack(server_url: str) -> AsyncIterator[VppStack]:
    with temporary_database(server_url) as database_url:
        migrate(database_url)
        with psycopg.connect(database_url) as conn:
            report = import_graph(conn, synthetic_asset_graph(make_site_parameters(SITE_COUNT, 3), seed=3))
            assert report.rejected == [] or len(report.rejected) == 0
            parameters = site_parameters(conn)
        simulator = FleetSimulator(parameters, replace(SimulatorConfig(seed=3), command_loss_probability=0.05),
                                   wall_clock_ms())
        gateway = FleetGateway(parameters, FleetSettings())
        port = free_tcp_port()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(serve_gateway(gateway, port, stop))]
        await wait_healthy(f"127.0.0.1:{port}", 20.0)
        tasks.append(asyncio.create_task(run_concentrators(simulator, f"127.0.0.1:{port}", stop,
                                                           concentrator_count=3)))
        activities = DispatchActivities(f"127.0.0.1:{port}", database_url)
        peak = PeakShavingActivities(f"127.0.0.1:{port}", database_url)
        try:
            async with await WorkflowEnvironment.start_local(dev_server_existing_path=dev_server_path()) as env:
                worker = dispatch_worker(env.client, TASK_QUEUE, activities, peak)
                async with worker:
                    await asyncio.sleep(7.0)  # every site reports at least once
                    yield VppStack(env.client, database_url, gateway, simulator)
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await activities.close()
            await peak.close()


async def _start(stack: VppStack, node_id: str, target_mw: float, duration_s: float,
                 delay_s: float = 0.0) -> WorkflowHandle[VppDispatchEvent, EventSummary]:
    event_id = f"event-{uuid.uuid4().hex[:8]}"
    start_ms = wall_clock_ms() + int(delay_s * 1000)
    return await stack.client.start_workflow(
        VppDispatchEvent.run,
        DispatchEventInput(event_id=event_id, node_id=node_id, target_mw=target_mw, start_ms=start_ms,
                           end_ms=start_ms + int(duration_s * 1000), control_interval_s=2.0, max_abs_target_mw=20.0),
        id=event_id, task_queue=TASK_QUEUE)


def _true_mw(stack: VppStack, site_ids: np.ndarray) -> float:
    rows = np.searchsorted(stack.simulator.parameters.site_ids, site_ids)
    return float(stack.simulator.true_battery_power_kw[rows].sum()) / 1000.0


async def test_an_event_at_a_region_node_reaches_and_holds_its_target_then_records_the_impact_log(
        vpp_stack: VppStack) -> None:
    with psycopg.connect(vpp_stack.database_url) as conn:
        site_ids = sites_under(conn, "network-nem", _now(), "electrical")
    assert len(site_ids) == SITE_COUNT
    handle = await _start(vpp_stack, "network-nem", 3.0, duration_s=40.0)
    samples: list[tuple[float, float]] = []
    started = asyncio.get_running_loop().time()
    while (elapsed := asyncio.get_running_loop().time() - started) < 26.0:
        samples.append((elapsed, _true_mw(vpp_stack, site_ids)))
        await asyncio.sleep(0.5)
    progress: DispatchProgress = await handle.query(VppDispatchEvent.progress)
    assert progress.stage == "controlling"
    assert progress.site_count == SITE_COUNT
    assert progress.latest is not None and progress.latest.acknowledged_sites >= 0.85 * SITE_COUNT

    late = [mw for t, mw in samples if t >= 15.0]
    assert min(late) >= 0.95 * 3.0, samples
    assert max(abs(mw - 3.0) for mw in late) <= 0.03 * 3.0, samples

    # An operator raises the target; a bad target is rejected with a clear message.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(VppDispatchEvent.set_target, math.nan)
    assert "finite" in str(refused.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as too_big:
        await handle.execute_update(VppDispatchEvent.set_target, 50.0)
    assert "limit" in str(too_big.value.cause)
    assert await handle.execute_update(VppDispatchEvent.set_target, 4.0) == 3.0
    await asyncio.sleep(9.0)
    assert _true_mw(vpp_stack, site_ids) >= 0.95 * 4.0

    summary = await handle.result()
    assert summary.status == "COMPLETED"
    assert summary.site_count == SITE_COUNT
    # Delivery is judged on telemetry (5 s reports): the ramp at the start and after the target change
    # shows as shortfall, so a little under what was asked.
    assert summary.delivered_mwh >= 0.8 * summary.asked_mwh > 0
    with psycopg.connect(vpp_stack.database_url) as conn:
        record = get_event(conn, summary.event_id)
        impact = get_impact(conn, summary.event_id)
    assert record is not None and record.status == "COMPLETED" and record.target_mw == 4.0
    assert len(impact.site_ids) == SITE_COUNT
    assert set(impact.site_ids.tolist()) == set(site_ids.tolist())
    assert np.all(impact.shortfall_kwh >= 0)
    assert impact.acknowledged.sum() >= 0.85 * SITE_COUNT
    final: DispatchProgress = await handle.query(VppDispatchEvent.progress)
    assert final.stage == "completed" and final.summary == summary
    assert len(final.target_changes) == 1


async def test_a_cancelled_event_releases_its_sites_and_is_recorded_as_cancelled(vpp_stack: VppStack) -> None:
    handle = await _start(vpp_stack, "programme-vpp-x", -1.0, duration_s=120.0)
    await asyncio.sleep(8.0)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(VppDispatchEvent.cancel, "  ")
    await handle.execute_update(VppDispatchEvent.cancel, "storm watch: hold charge")
    summary = await handle.result()
    assert summary.status == "CANCELLED"
    assert summary.asked_mwh > 0
    assert not vpp_stack.gateway.events
    with psycopg.connect(vpp_stack.database_url) as conn:
        record = get_event(conn, summary.event_id)
    assert record is not None and record.reason == "storm watch: hold charge"


async def test_an_unknown_node_fails_the_event_with_a_clear_error(vpp_stack: VppStack) -> None:
    from temporalio.client import WorkflowFailureError

    handle = await _start(vpp_stack, "feeder-does-not-exist", 1.0, duration_s=10.0)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert "feeder-does-not-exist" in str(failure.value.cause.cause) or "feeder-does-not-exist" in str(
        failure.value.cause)


def _now() -> datetime:
    return datetime.now(tz=UTC)


async def test_the_node_load_sampler_records_the_live_load_of_each_node_and_names_what_it_skips(
        vpp_stack: VppStack) -> None:
    from models.node_load import read_node_load

    result: NodeLoadSampled = await vpp_stack.client.execute_workflow(
        NodeLoadSampler.run, SampleNodeLoadInput(node_ids=("network-nem", "region-SA1", "feeder-nowhere")),
        id=f"sampler-{uuid.uuid4().hex[:6]}", task_queue=TASK_QUEUE)
    assert result.recorded == 2
    assert result.skipped == ("feeder-nowhere: no sites",)
    assert result.interval_end_ms % 300_000 == 0
    with psycopg.connect(vpp_stack.database_url) as conn:
        history = read_node_load(conn, "network-nem", result.interval_end_ms - 1, result.interval_end_ms)
    assert history.interval_end_ms.tolist() == [result.interval_end_ms]
    true_load_mw = float(vpp_stack.simulator.true_load_power_kw.sum()) / 1000.0
    assert history.load_mw[0] == pytest.approx(true_load_mw, rel=0.25)
    assert history.sites_reporting[0] >= 0.9 * SITE_COUNT
