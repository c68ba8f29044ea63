"""Record real event histories of every workflow type for the replay test (tests/test_workflow_replay.py).

Run by hand when a workflow changes on purpose in a way that running workflows cannot replay (README,
"Replayable workflows")::

    .venv/bin/python -m tests.record_histories            # every case, into tests/histories/
    .venv/bin/python -m tests.record_histories --only PeakShaving --only NodeLoadSampler

It starts the whole local stack (:class:`stack.supervisor.LocalStack`: Temporal dev server, moto SQS, an
embedded PostgreSQL, the market-data, bid and fleet gateway services, the worker pools, the AutoBidder and
VPP Temporal workers, a small simulated fleet) in a temporary folder, runs each case through the
production workflows and activities, and writes each run's history as ``<WorkflowType>-<case>.json``
(``WorkflowHandle.fetch_history()`` → ``WorkflowHistory.to_json()``). Horizons and the fleet are kept
small so the files stay small. Takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from activities.dispatch_facts import DispatchEventInput
from activities.node_load_facts import SampleNodeLoadInput
from activities.operator_facts import ControlsView, OperatorInput, RebidRequested, operator_workflow_id
from activities.peak_shaving import forecast_from_history
from activities.peak_shaving_facts import NodeForecastInput, PeakShavingInput
from algorithms.fleet.peak_shaving import PeakShavingRules, find_peaks
from archive import open_archive
from backtest.sweep import build_grid, sweep_id
from models.assets import site_parameters, sites_under
from models.node_load import read_node_load, record_node_load
from services.temporal_client import schedule_id
from settings import Settings, load_settings
from simulator.load_history import synthetic_node_load_history
from stack.cycles import run_cycle_at
from stack.ports import free_tcp_port
from stack.schedule import distribution_input, ensure_schedule
from stack.supervisor import LocalStack
from stack.sweep import SweepPlan, plan_sweep, submit_sweep
from workflows.autobidder import AutobidderCycle

HISTORIES = Path(__file__).resolve().parent / "histories"
SIMULATED_SITES = 200
VPP_NODE = "network-nem"
PEAK_NODE = "region-SA1"
# Decisions 30 s into the intervals ending 16:05 and 16:10 on 15 January 2021 (market time, AEST).
FIRST_DECISION = datetime(2021, 1, 15, 16, 0, 30)
PEAK_HORIZON_INTERVALS = 144  # 12 h: enough for a peak, small enough for a small file
DAY_MS = 86_400_000
INTERVAL_MS = 300_000


def history_file_text(history_json: str) -> str:
    """A history's JSON (``WorkflowHistory.to_json()``) as stored: one compact event per line (small, and a
    re-recording diffs event by event)."""
    events = json.loads(history_json)["events"]
    lines = ",\n".join(json.dumps(event, separators=(",", ":"), ensure_ascii=False) for event in events)
    return '{"events":[\n' + lines + "\n]}\n"


def stack_settings(state_dir: Path) -> Settings:
    """The defaults on free ports in ``state_dir``, with a small fleet and short plan collection."""
    loaded = load_settings(environ={})
    return replace(
        loaded,
        database_url=None,  # the stack's embedded PostgreSQL, in state_dir
        stack=replace(loaded.stack, state_dir=state_dir, temporal_address=f"127.0.0.1:{free_tcp_port()}",
                      temporal_ui_port=free_tcp_port(), sqs_port=free_tcp_port(), market_data_port=free_tcp_port(),
                      bid_service_port=free_tcp_port(), forecast_workers=1, optimiser_workers=1),
        fleet=replace(loaded.fleet, simulated_sites=SIMULATED_SITES, gateway_port=free_tcp_port()),
        coopt=replace(loaded.coopt, vpp_node=VPP_NODE, plan_collection_s=10.0, dispatch_intervals=1),
    )


class Recorder:
    """Runs the cases on a running stack and writes their histories."""

    def __init__(self, stack: LocalStack, client: Client, out: Path) -> None:
        self.stack = stack
        self.settings = stack.settings
        self.client = client
        self.out = out

    async def save(self, workflow_type: str, case: str, workflow_id: str, run_id: str | None = None) -> None:
        """Write the history of ``workflow_id`` (``run_id``: that run, else the latest) as ``<type>-<case>.json``."""
        handle: WorkflowHandle[object, object] = self.client.get_workflow_handle(workflow_id, run_id=run_id)
        history = await handle.fetch_history()
        recorded_type = history.events[0].workflow_execution_started_event_attributes.workflow_type.name
        if recorded_type != workflow_type:
            raise RuntimeError(f"{workflow_id} is a {recorded_type}, not a {workflow_type}")
        path = self.out / f"{workflow_type}-{case}.json"
        path.write_text(history_file_text(history.to_json()))
        print(f"{path.name}: {len(history.events)} events, {path.stat().st_size:,} bytes", flush=True)

    # -- AutoBidder --------------------------------------------------------------------------------

    async def autobidder_and_operator(self) -> None:
        """A normal cycle; the unit's operator pauses it (a PAUSED cycle), resumes, holds and releases the
        SoC and asks for a manual rebid (the cycle the schedule starts carries it); five actions, so the
        operator continues as new and its first run's history is complete."""
        settings = self.settings
        normal = await run_cycle_at(self.client, settings, FIRST_DECISION)
        if normal.result is None or normal.result.status != "SUBMITTED":
            raise RuntimeError(f"the normal cycle did not submit: {normal.failure or normal.result}")
        await self.save("AutobidderCycle", "normal", normal.workflow_id)

        unit = settings.cycle.unit_id
        operator = await self.client.start_workflow(
            "UnitOperator", OperatorInput(unit_id=unit, soc_min_fraction=settings.battery.soc_min_fraction,
                                          soc_max_fraction=settings.battery.soc_max_fraction,
                                          max_actions_per_run=5),
            id=operator_workflow_id(unit), task_queue=settings.stack.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
        first_run = operator.result_run_id
        await operator.execute_update("pause", args=["storm watch over the interconnector", "ops-on-call"],
                                      result_type=ControlsView)
        paused = await run_cycle_at(self.client, settings, FIRST_DECISION + timedelta(minutes=5))
        if paused.result is None or paused.result.status != "PAUSED":
            raise RuntimeError(f"the paused cycle was not PAUSED: {paused.failure or paused.result}")
        await self.save("AutobidderCycle", "paused", paused.workflow_id)

        await operator.execute_update("resume", args=["storm passed", "ops-on-call"], result_type=ControlsView)
        until = (datetime.now(tz=UTC) + timedelta(hours=2)).isoformat(timespec="minutes")
        await operator.execute_update("hold_soc", args=[0.6, until, "heatwave tomorrow", "ops-on-call"],
                                      result_type=ControlsView)
        await operator.execute_update("release_soc", args=["forecast eased", "ops-on-call"],
                                      result_type=ControlsView)
        # The manual rebid triggers the unit's schedule (paused: it starts nothing by itself).
        await ensure_schedule(settings, self.client)
        schedule = self.client.get_schedule_handle(schedule_id(settings))
        await schedule.pause(note="recording workflow histories")
        requested: RebidRequested = await operator.execute_update(
            "manual_rebid", args=["interconnector limit changed", "ops-on-call"], result_type=RebidRequested)
        if not requested.cycle_triggered:
            raise RuntimeError(f"the manual rebid started no cycle: {requested.note}")
        await self._wait_for_continue_as_new(operator.id, first_run)
        await self.save("UnitOperator", "updates", operator.id, first_run)

        rebid_id = await self._triggered_cycle(schedule_id(settings))
        rebid = await self.client.get_workflow_handle_for(AutobidderCycle.run, rebid_id).result()
        if rebid.status != "SUBMITTED":
            raise RuntimeError(f"the manual rebid cycle ended {rebid.status}")
        await self.save("AutobidderCycle", "manual-rebid", rebid_id)

    async def _wait_for_continue_as_new(self, workflow_id: str, run_id: str | None, timeout_s: float = 60) -> None:
        handle: WorkflowHandle[object, object] = self.client.get_workflow_handle(workflow_id, run_id=run_id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            description = await handle.describe()
            if description.status is not None and description.status.name == "CONTINUED_AS_NEW":
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"{workflow_id} did not continue as new within {timeout_s} s")

    async def _triggered_cycle(self, identifier: str, timeout_s: float = 60) -> str:
        """Id of the workflow the schedule started last."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            description = await self.client.get_schedule_handle(identifier).describe()
            if description.info.recent_actions:
                action = description.info.recent_actions[-1].action
                if isinstance(action, ScheduleActionExecutionStartWorkflow):
                    return action.workflow_id
            await asyncio.sleep(0.5)
        raise RuntimeError(f"schedule {identifier} started nothing within {timeout_s} s")

    # -- VPP ------------------------------------------------------------------------------------

    async def distribution(self) -> None:
        """One price-forecast distribution round (forecast, publish, collect plans, bid, dispatch one interval)."""
        workflow_id = f"distribution-{uuid.uuid4().hex[:6]}"
        result = await self.client.execute_workflow(
            "PriceForecastDistribution", distribution_input(self.settings), id=workflow_id,
            task_queue=self.settings.stack.task_queue, execution_timeout=timedelta(minutes=5))
        print(f"distribution: {getattr(result, 'version', result)}", flush=True)
        await self.save("PriceForecastDistribution", "round", workflow_id)

    async def dispatch_events(self) -> None:
        """A dispatch event whose target an operator changes, and one an operator cancels."""
        task_queue = self.settings.fleet.task_queue
        now_ms = int(time.time() * 1000)
        changed = f"event-set-target-{uuid.uuid4().hex[:6]}"
        handle = await self.client.start_workflow(
            "VppDispatchEvent", DispatchEventInput(event_id=changed, node_id=VPP_NODE, target_mw=0.1,
                                                   start_ms=now_ms, end_ms=now_ms + 20_000, max_abs_target_mw=1.0),
            id=changed, task_queue=task_queue)
        await asyncio.sleep(8.0)
        await handle.execute_update("set_target", 0.2, result_type=float)
        await handle.result()
        await self.save("VppDispatchEvent", "set-target", changed)

        cancelled = f"event-cancelled-{uuid.uuid4().hex[:6]}"
        now_ms = int(time.time() * 1000)
        handle = await self.client.start_workflow(
            "VppDispatchEvent", DispatchEventInput(event_id=cancelled, node_id=PEAK_NODE, target_mw=-0.1,
                                                   start_ms=now_ms, end_ms=now_ms + 120_000, max_abs_target_mw=1.0),
            id=cancelled, task_queue=task_queue)
        await asyncio.sleep(6.0)
        await handle.execute_update("cancel", "storm watch: hold charge", result_type=str)
        await handle.result()
        await self.save("VppDispatchEvent", "cancelled", cancelled)

    async def node_load_sampler(self) -> None:
        """One sample of two nodes and one that has no sites."""
        workflow_id = f"sampler-{uuid.uuid4().hex[:6]}"
        await self.client.execute_workflow(
            "NodeLoadSampler", SampleNodeLoadInput(node_ids=(VPP_NODE, PEAK_NODE, "feeder-nowhere")),
            id=workflow_id, task_queue=self.settings.fleet.task_queue)
        await self.save("NodeLoadSampler", "sample", workflow_id)

    async def peak_shaving(self) -> None:
        """Seed 28 days of synthetic load for the node, then plan its peaks over 12 hours with a threshold
        just under the forecast peak (so at least one shave and its lockout are started)."""
        assert self.settings.database_url is not None
        now_ms = int(time.time() * 1000)
        origin_ms = now_ms - now_ms % INTERVAL_MS
        start_ms = origin_ms - 28 * DAY_MS
        with psycopg.connect(self.settings.database_url) as conn:
            site_ids = sites_under(conn, PEAK_NODE, datetime.now(tz=UTC), None)
            history = synthetic_node_load_history(PEAK_NODE, site_parameters(conn, site_ids), start_ms, 28.0, 0)
            record_node_load(conn, history)
            recorded = read_node_load(conn, PEAK_NODE, origin_ms - 28 * DAY_MS, origin_ms)
        rules = PeakShavingRules()
        forecast, _ = forecast_from_history(
            NodeForecastInput(node_id=PEAK_NODE, load_column=rules.load_column, origin_ms=origin_ms,
                              history_days=28.0, horizon_intervals=PEAK_HORIZON_INTERVALS,
                              quantiles=(0.1, 0.5, 0.9)),
            recorded.interval_end_ms, recorded.series(rules.load_column))
        median = forecast.quantile(0.5)
        threshold = float(median.max() - 0.15 * (median.max() - median.min()))
        if not find_peaks(forecast, threshold, rules):
            raise RuntimeError(f"no peak above {threshold:.3f} MW in the forecast")
        workflow_id = f"peak-shaving-{PEAK_NODE}-{uuid.uuid4().hex[:6]}"
        plan = await self.client.execute_workflow(
            "PeakShaving", PeakShavingInput(node_id=PEAK_NODE, threshold_mw=round(threshold, 4),
                                            horizon_intervals=PEAK_HORIZON_INTERVALS, origin_ms=origin_ms),
            id=workflow_id, task_queue=self.settings.fleet.task_queue)
        print(f"peak shaving: {plan}", flush=True)
        await self.save("PeakShaving", "plan", workflow_id)

    # -- backtest sweeps ---------------------------------------------------------------------------

    async def backtest_sweep(self) -> None:
        """A sweep of three two-hour runs on the backtest pool: two finish, one is refused because its data
        changed after it was planned (the sweep reports it); then the report."""
        settings = self.settings
        data = settings.market_data.data_dir
        start, end = datetime(2021, 1, 15, 4, 0), datetime(2021, 1, 15, 6, 0)
        flags = {"regions": ["SA1"], "start": start, "end": end, "default_region": "SA1"}
        finishing = plan_sweep(settings, build_grid(params=["history_intervals=576", "horizon_intervals=12,24"],
                                                    data=[data], default_data=data, **flags))  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory(prefix="vpp-sweep-data-") as folder:
            changed = Path(folder) / "data"
            shutil.copytree(data, changed)
            refused = plan_sweep(settings, build_grid(params=["history_intervals=576", "horizon_intervals=36"],
                                                      data=[changed], default_data=changed, **flags))  # type: ignore[arg-type]
            dispatch = next(changed.glob("*DISPATCHPRICE*"))
            dispatch.write_bytes(dispatch.read_bytes() + b"\0")
            runs = (*finishing.runs, *refused.runs)
            plan = SweepPlan(sweep_id=sweep_id([run.spec.run_id for run in runs]), runs=runs)
            handle = await submit_sweep(self.client, settings, open_archive(settings), plan,
                                        Path(folder) / "backtests")
            result = await handle.result()
        print(f"backtest sweep: {[(o.status, o.reason[:60]) for o in result.outcomes]}", flush=True)
        await self.save("BacktestSweep", "two-finished-one-refused", plan.sweep_id)


CASES: dict[str, Callable[[Recorder], Awaitable[None]]] = {
    "AutobidderCycle": Recorder.autobidder_and_operator,  # also UnitOperator
    "PriceForecastDistribution": Recorder.distribution,
    "VppDispatchEvent": Recorder.dispatch_events,
    "NodeLoadSampler": Recorder.node_load_sampler,
    "PeakShaving": Recorder.peak_shaving,
    "BacktestSweep": Recorder.backtest_sweep,
}


async def record(stack: LocalStack, out: Path, only: set[str]) -> None:
    """Run the chosen cases (all when ``only`` is empty) on ``stack`` and write their histories to ``out``."""
    recorder = Recorder(stack, await Client.connect(stack.temporal_address), out)
    for name, case in CASES.items():
        if not only or name in only or (name == "AutobidderCycle" and "UnitOperator" in only):
            await case(recorder)


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.record_histories [--only TYPE ...] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m tests.record_histories", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", default=[], choices=[*CASES, "UnitOperator"],
                        help="record only this workflow type (repeatable; UnitOperator comes with AutobidderCycle)")
    parser.add_argument("--out", type=Path, default=HISTORIES, help="folder of the histories (tests/histories)")
    arguments = parser.parse_args(argv)
    arguments.out.mkdir(parents=True, exist_ok=True)
    for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")):
        os.environ.setdefault(name, value)
    with tempfile.TemporaryDirectory(prefix="vpp-histories-") as state_dir:
        print(f"starting the local stack in {state_dir} (a minute or two) ...", flush=True)
        with LocalStack(stack_settings(Path(state_dir)), ui=False) as stack:
            asyncio.run(record(stack, arguments.out, set(arguments.only)))
    sys.exit(0)


if __name__ == "__main__":
    main()
