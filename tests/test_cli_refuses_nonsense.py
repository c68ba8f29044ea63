"""Every CLI command with bad arguments: one ``error:`` line (or a usage error) and a non-zero exit, never a
traceback; unknown nodes, units and events are refused before anything is started or written; dispatch
targets beyond the node's capability and second events over the same sites are refused (``--replace``
cancels the first with a reason)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from activities.dispatch_facts import (
    ControlInput,
    ControlStep,
    EventStarted,
    EventSummary,
    FinishInput,
    StartEventInput,
)
from cli.main import app
from models.db import migrate
from stack.ports import free_tcp_port
from tests.conftest import temporary_database
from tests.temporal_env import dev_server_path
from workflows.dispatch import VppDispatchEvent

runner = CliRunner()
SITES = 40


@dataclass(frozen=True)
class Setup:
    env: dict[str, str | None]
    config: Path
    database_url: str
    tmp: Path


@pytest.fixture(scope="module")
def setup(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A migrated database with a small fleet, and a configuration whose every port is free (no stack)."""
    tmp = tmp_path_factory.mktemp("nonsense")
    with temporary_database(server_url) as url:
        migrate(url)
        config = tmp / "nothing-runs.toml"
        ports = [free_tcp_port() for _ in range(6)]
        config.write_text(f'[stack]\ntemporal_address = "127.0.0.1:{ports[0]}"\ntemporal_ui_port = {ports[1]}\n'
                          f"sqs_port = {ports[2]}\nmarket_data_port = {ports[3]}\nbid_service_port = {ports[4]}\n"
                          f"[fleet]\ngateway_port = {ports[5]}\n")
        env: dict[str, str | None] = {"DATABASE_URL": url, "VPP_STATE_DIR": str(tmp / "state"), "VPP_CONFIG": None,
                                      "VPP_SQS_ENDPOINT": None}
        seeded = runner.invoke(app, ["fleet", "seed", "--sites", str(SITES)], env=env)
        assert seeded.exit_code == 0, seeded.output
        (tmp / "bad.csv").write_text("record,node_id,kind,name\nnode,feeder-x,volcano,X\n")
        yield Setup(env=env, config=config, database_url=url, tmp=tmp)


def _refused(setup: Setup, args: list[str], *, config: bool = True) -> Any:
    argv = (["--config", str(setup.config)] if config else []) + [a.replace("{tmp}", str(setup.tmp)) for a in args]
    result = runner.invoke(app, argv, env=setup.env, terminal_width=200)
    assert result.exit_code != 0, f"vpp {' '.join(args)} was accepted:\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"vpp {' '.join(args)} raised {result.exception!r}:\n{result.output}")
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    usage = result.exit_code == 2 and "Usage:" in result.output
    assert usage or any(line.startswith("error:") for line in lines), result.output
    return result


BAD_COMMANDS: list[tuple[list[str], str]] = [
    (["dispatch", "start", "nosuchnode", "--mw", "0.2"], "unknown asset node 'nosuchnode'"),
    (["dispatch", "start", "region-SA1", "--mw", "1e9"], "beyond what the node can discharge"),
    (["dispatch", "start", "region-SA1", "--mw", "-1e9"], "beyond what the node can charge"),
    (["dispatch", "start", "region-SA1", "--mw", "nan"], "finite"),
    (["dispatch", "start", "region-SA1", "--mw", "0.01", "--start", "tomorrow"], ""),
    (["dispatch", "start", "region-SA1", "--mw", "0.01", "--minutes", "-5"], ""),
    (["dispatch", "start", "region-SA1", "--mw", "0.01", "--start", "2001-01-01T00:00"], "already over"),
    (["dispatch", "start", "region-SA1", "--mw", "0.01", "--hierarchy", "plumbing"], "unknown hierarchy"),
    (["dispatch", "start", "region-SA1", "--mw", "0.01"], "cannot reach Temporal"),
    (["dispatch", "status", "nosuch-event"], "cannot reach Temporal"),
    (["dispatch", "set-target", "nosuch-event", "5"], "cannot reach Temporal"),
    (["dispatch", "set-target", "nosuch-event", "inf"], "finite"),
    (["dispatch", "cancel", "nosuch-event", "--reason", "x"], "cannot reach Temporal"),
    (["dispatch", "cancel", "nosuch-event", "--reason", " "], "needs a reason"),
    (["dispatch", "impact", "nosuch-event"], "no recorded dispatch event"),
    (["ops", "pause", "NOPE", "--reason", "x"], "unknown unit 'NOPE'"),
    (["ops", "rebid", "NOPE", "--reason", "x"], "unknown unit 'NOPE'"),
    (["ops", "status", "NOPE"], "unknown unit 'NOPE'"),
    (["ops", "pause", "VPP1", "--reason", "x"], "the VPP's fleet unit"),
    (["ops", "hold-soc", "NOPE", "--floor", "0.6", "--until", "2099-01-01T00:00+10:00", "--reason", "x"],
     "unknown unit 'NOPE'"),
    (["bench", "cycle", "--units", "0"], ""),
    (["ops", "hold-soc", "HPR1", "--floor", "lots", "--until", "2099-01-01T00:00+10:00", "--reason", "x"], ""),
    (["ops", "hold-soc", "HPR1", "--floor", "0.6", "--until", "soon", "--reason", "x"], "until"),
    (["ops", "resume", "HPR1", "--reason", "x"], "cannot reach Temporal"),
    (["fleet", "aggregate", "nosuchnode"], "unknown asset node"),
    (["fleet", "stats"], "fleet gateway"),
    (["fleet", "seed", "--sites", "0"], ""),
    (["peak", "plan", "nosuchnode", "--threshold", "1"], "unknown asset node"),
    (["peak", "plan", "region-SA1", "--threshold", "nan"], "finite"),
    (["peak", "seed-history", "nosuchnode"], "unknown asset node"),
    (["coopt", "status"], "fleet gateway"),
    (["coopt", "distribute", "--no-wait"], "cannot reach Temporal"),
    (["coopt", "distribute", "--dispatch-intervals", "-1"], ""),
    (["assets", "import", "{tmp}/missing.csv"], ""),
    (["assets", "import", "{tmp}/bad.csv"], "kind"),
    (["assets", "show", "nosuchnode"], "unknown asset node"),
    (["assets", "show", "region-SA1", "--as-of", "last week"], ""),
    (["assets", "export", "{tmp}/graph.txt"], "unknown asset file format"),
    (["archive", "ls", "nosuch-cycle"], "no entries"),
    (["backtest", "show", "nosuch-run"], "nosuch-run"),
    (["backtest", "compare", "nosuch-run", "other-run"], "nosuch-run"),
    (["backtest", "run", "--start", "garbage"], ""),
    (["backtest", "run", "--data", "{tmp}/no-such-folder", "--days", "1"], "no-such-folder"),
    (["backtest", "archive", "--cycle", "nosuch-cycle"], "archive"),
    (["backtest", "sweep"], "no period"),
    (["backtest", "sweep", "--month", "2021-13"], "YYYY-MM"),
    (["backtest", "sweep", "--month", "2021-01", "--param", "horizon_minutes=24,48"], "unknown parameter"),
    (["backtest", "sweep", "--month", "2021-01", "--param", "horizon_intervals=24,24"], "given twice"),
    (["backtest", "sweep", "--month", "2021-01", "--region", "XX1"], "unknown region"),
    (["backtest", "sweep", "--month", "2020-12"], "no SA1 dispatch prices"),
    (["backtest", "sweep", "--start", "2021-01-15", "--end", "2021-01-16", "--no-wait"], "no running stack"),
    (["backtest", "sweep-status", "sweep-0000000000"], "cannot reach Temporal"),
    (["bench", "cycle", "--cycles", "0"], ""),
    (["bench", "market", "--days", "0"], ""),
    (["bench", "aemo-submit", "--bids", "0"], ""),
    (["up", "--market", "aemo"], ""),
    (["bench", "perfect-foresight", "--intervals", "0"], ""),
    (["bench", "perfect-foresight", "--start", "2019-06-01T04:05"], "no interval ending 2019-06-01 04:05"),
    (["bench", "perfect-foresight", "--data", "/nonexistent/DISPATCHPRICE.zip"], "no such file or folder"),
    (["bench", "perfect-foresight", "--mip-rel-gap", "0.9"], ""),
    (["demo", "--intervals", "0"], ""),
    (["worker", "pool", "nosuchkind"], ""),
    (["status"], "parts down"),
]


@pytest.mark.parametrize(("args", "message"), BAD_COMMANDS, ids=[" ".join(a) for a, _ in BAD_COMMANDS])
def test_every_command_refuses_bad_arguments_in_one_line_without_a_traceback(setup: Setup, args: list[str],
                                                                            message: str) -> None:
    result = _refused(setup, args)
    assert message in result.output, result.output


def test_a_missing_configuration_or_database_is_one_line(setup: Setup) -> None:
    missing = runner.invoke(app, ["--config", str(setup.tmp / "nope.toml"), "status"], env=setup.env)
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    unreachable = runner.invoke(app, ["db", "migrate"], terminal_width=200,
                                env={**setup.env, "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_tcp_port()}/x"})
    assert unreachable.exit_code == 1 and "cannot reach PostgreSQL" in unreachable.output, unreachable.output


def test_an_unknown_unit_writes_no_audit_row_and_starts_nothing(setup: Setup) -> None:
    _refused(setup, ["ops", "pause", "NOPE", "--reason", "storm"])
    with psycopg.connect(setup.database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM operator_actions WHERE unit_id = 'NOPE'").fetchone()
        controls = conn.execute("SELECT count(*) FROM unit_controls WHERE unit_id = 'NOPE'").fetchone()
    assert rows == (0,) and controls == (0,)


@pytest.mark.parametrize("args", [["dispatch", "status", "nosuch-event"], ["status"]])
def test_the_installed_command_prints_no_traceback(setup: Setup, args: list[str]) -> None:
    vpp = Path(sys.executable).parent / "vpp"
    environment = {k: v for k, v in {**os.environ, **setup.env}.items() if v is not None}
    done = subprocess.run([str(vpp), "--config", str(setup.config), *args], capture_output=True, text=True,
                          env=environment, timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(("error:", "12 of", "13 of")) or "down" in done.stderr


# -- against a real Temporal (dev server): unknown events, a second event over the same sites, --replace ----


class QuietFleet:
    """Stand-ins for the fleet gateway's activities: the event runs, nothing is dispatched."""

    @activity.defn(name="start_dispatch_event")
    async def start(self, request: StartEventInput) -> EventStarted:
        return EventStarted(site_count=SITES, unknown_site_count=0)

    @activity.defn(name="control_dispatch_event")
    async def control(self, request: ControlInput) -> ControlStep:
        return ControlStep(measured_at_ms=0, target_mw=request.target_mw, measured_mw=0.0, commanded_mw=0.0,
                           unallocated_mw=0.0, site_count=SITES, commanded_sites=0, acknowledged_sites=0,
                           reporting_sites=0, commands_sent=0, commands_resent=0)

    @activity.defn(name="finish_dispatch_event")
    async def finish(self, request: FinishInput) -> EventSummary:
        return EventSummary(event_id=request.event_id, status=request.status, site_count=SITES, asked_mwh=0.0,
                            delivered_mwh=0.0, sites_short=0, sites_acknowledged=0)


async def test_unknown_events_are_refused_and_a_second_event_needs_replace(setup: Setup) -> None:
    async with await WorkflowEnvironment.start_local(dev_server_existing_path=dev_server_path(),
                                                     ui=False) as local:
        task_queue = f"vpp-{uuid.uuid4().hex[:8]}"
        config = setup.tmp / f"temporal-{task_queue}.toml"
        config.write_text(f'[stack]\ntemporal_address = "{local.client.service_client.config.target_host}"\n'
                          f'[fleet]\ntask_queue = "{task_queue}"\ncontrol_interval_s = 1.0\n')

        def vpp(*args: str) -> Any:
            return runner.invoke(app, ["--config", str(config), *args], env=setup.env, terminal_width=200)

        fleet = QuietFleet()
        async with Worker(local.client, task_queue=task_queue, workflows=[VppDispatchEvent],
                          activities=[fleet.start, fleet.control, fleet.finish]):
            for args in (["dispatch", "status", "nosuch-event"], ["dispatch", "set-target", "nosuch-event", "1"],
                         ["dispatch", "cancel", "nosuch-event", "--reason", "x"]):
                unknown = await asyncio.to_thread(vpp, *args)
                assert unknown.exit_code == 1, unknown.output
                assert unknown.output.strip().splitlines() == ["error: no dispatch event 'nosuch-event' (see the "
                                                               "Temporal UI, workflow type VppDispatchEvent)"]
            first = await asyncio.to_thread(vpp, "dispatch", "start", "region-SA1", "--mw", "0.01", "--minutes", "30",
                                            "--event-id", "first-event")
            assert first.exit_code == 0, first.output
            assert "first-event: +0.01 MW at region-SA1" in first.output and "can discharge at most" in first.output
            await _wait_for_stage(local, "first-event", "controlling")
            # A feeder below the region shares its sites: refused, nothing started.
            second = await asyncio.to_thread(vpp, "dispatch", "start", "network-nem", "--mw", "0.01", "--minutes", "5",
                                             "--event-id", "second-event")
            assert second.exit_code == 1, second.output
            assert "already dispatch sites of network-nem in this window: first-event at region-SA1" in second.output
            assert "--replace" in second.output
            assert not [e async for e in local.client.list_workflows("WorkflowId = 'second-event'")]
            taken = await asyncio.to_thread(vpp, "dispatch", "start", "region-SA1", "--mw", "0.01", "--event-id",
                                            "first-event", "--replace")
            assert taken.exit_code == 1 and "already in use" in taken.output, taken.output
            status = await asyncio.to_thread(vpp, "dispatch", "status", "first-event")
            assert status.exit_code == 0, status.output
            assert "controlling" in status.output and "+0.01 MW" in status.output and "{" not in status.output
            over = await asyncio.to_thread(vpp, "dispatch", "set-target", "first-event", "1e6")
            assert over.exit_code == 1 and "beyond this event's limit" in over.output, over.output
            replaced = await asyncio.to_thread(vpp, "dispatch", "start", "network-nem", "--mw", "0.02", "--minutes",
                                               "5", "--event-id", "second-event", "--replace")
            assert replaced.exit_code == 0, replaced.output
            assert "cancelled first-event: replaced by second-event" in replaced.output
            summary = await local.client.get_workflow_handle("first-event").result()
            assert summary["status"] == "CANCELLED"
            description = await local.client.get_workflow_handle("second-event").describe()
            assert description.status == WorkflowExecutionStatus.RUNNING
            await local.client.get_workflow_handle("second-event").execute_update("cancel", "test over")


async def _wait_for_stage(local: WorkflowEnvironment, event_id: str, stage: str) -> None:
    handle = local.client.get_workflow_handle(event_id)
    for _ in range(100):
        if (await handle.query("progress"))["stage"] == stage:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{event_id} never reached {stage}")
