"""Backtest sweeps on the real local stack: Temporal dev server, SQS endpoint (moto server), PostgreSQL, the
Temporal worker (its result relay completes the runs' activities), the sweep worker and two backtest pool
processes, each a separate process started by :class:`stack.supervisor.LocalStack`.

A grid of 2 parameter values × 2 regions × 1 day goes through ``vpp backtest sweep`` (the CLI, as a user runs
it); one pool process is killed while it makes a run: the run is delivered again after the visibility timeout
and made exactly once by the other process; every run's summary equals the in-process run of the same spec;
a run whose data changed after it was planned fails with its reason and the sweep reports it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.sweep_facts import RUN_FAILED, RUN_FINISHED
from archive import open_archive
from backtest.pool_task import RESULT_LABEL, run_index
from backtest.runs import execute_run, load_inputs, read_run, with_data_price_limits
from backtest.sweep import build_grid
from backtest.sweep_report import sweep_folder
from settings import REPO_ROOT, load_settings
from stack.supervisor import SWEEP_PARTS, LocalStack
from stack.sweep import plan_sweep, submit_sweep
from tests.conftest import free_port, temporary_database

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

DAY_START = datetime(2021, 1, 15, 4, 0)
DAY_END = datetime(2021, 1, 16, 4, 0)
# Short horizons and two days of history, so that a day's run takes seconds.
GRID_FLAGS = ["--param", "horizon_intervals=24,48", "--param", "history_intervals=576", "--region", "SA1",
              "--region", "VIC1", "--start", "2021-01-15T04:00", "--end", "2021-01-16T04:00"]
VISIBILITY_TIMEOUT_S = 10
STARTED = re.compile(r"run (\S+): started")


@pytest.fixture(scope="module")
def stack(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Temporal, SQS, PostgreSQL, the Temporal worker, the sweep worker and two backtest pool processes."""
    loaded = load_settings(environ={})
    with temporary_database(server_url) as url:
        settings = replace(
            loaded, database_url=url,
            stack=replace(loaded.stack, state_dir=tmp_path_factory.mktemp("sweep-stack"),
                          temporal_address=f"127.0.0.1:{free_port()}", temporal_ui_port=free_port(),
                          sqs_port=free_port(), market_data_port=free_port(), bid_service_port=free_port()),
            pools=replace(loaded.pools, backtest_processes=2, backtest_visibility_timeout_s=VISIBILITY_TIMEOUT_S))
        with LocalStack(settings, ui=False, parts=SWEEP_PARTS) as running:
            yield running


def vpp(stack: LocalStack, *arguments: str) -> list[str]:
    """The ``vpp`` command line against the running stack's effective configuration."""
    return [sys.executable, "-m", "cli.main", "--config", str(stack.config_file), *arguments]


def cli_environment() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "250", "PYTHONUNBUFFERED": "1"}


def wait_for_started_run(log: Path, timeout_s: float) -> str:
    """The run id a pool process's log says it started, waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = STARTED.search(log.read_text(errors="replace")) if log.exists() else None
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"{log.name} started no run within {timeout_s} s")


def test_a_sweep_runs_on_two_pool_processes_and_survives_a_killed_one(stack: LocalStack, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    sweep = subprocess.Popen(vpp(stack, "backtest", "sweep", *GRID_FLAGS, "--out", str(out)), cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_environment())
    try:
        killed_run = wait_for_started_run(stack.settings.stack.log_dir / "backtest-1.log", timeout_s=120)
        stack.kill_part("backtest-1")  # SIGKILL mid-run: its message comes back after the visibility timeout
        stdout, stderr = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, stderr + stdout
    sweep_id = re.search(r"sweep (sweep-[0-9a-f]{10})", stderr + stdout).group(1)  # type: ignore[union-attr]
    assert re.search(r"\d\d:\d\d:\d\d 4/4 runs \(0 failed, 0 in flight\), [\d.]+ runs/h", stdout), stdout
    assert f"sweep {sweep_id}: 4 of 4 runs finished" in stdout

    record = json.loads((sweep_folder(out, sweep_id) / "sweep.json").read_text())
    outcomes = {o["run_id"]: o for o in record["outcomes"]}
    assert [o["status"] for o in record["outcomes"]] == [RUN_FINISHED] * 4 and killed_run in outcomes
    assert {p.name for p in sweep_folder(out, sweep_id).iterdir()} >= {"table.csv", "table.md", "report.html",
                                                                      "cumulative_revenue.png"}

    # The killed process's run was made again, by the other process, and archived exactly once.
    archive = open_archive(stack.settings)
    assert [e.label for e in archive.list_cycle(run_index(killed_run))].count(RESULT_LABEL) == 1
    survivor_log = (stack.settings.stack.log_dir / "backtest-2.log").read_text()
    assert f"run {killed_run}: 288 decisions" in survivor_log

    # Determinism across the boundary: each run's summary is the in-process run's of the same spec.
    settings = load_settings(environ={})
    grid = build_grid(regions=["SA1", "VIC1"], start=DAY_START, end=DAY_END,
                      params=["horizon_intervals=24,48", "history_intervals=576"],
                      default_region="SA1", default_data=settings.market_data.data_dir)
    plan = plan_sweep(settings, grid)
    assert plan.sweep_id == sweep_id
    inputs = load_inputs([settings.market_data.data_dir])
    for run in plan.runs:
        alone = execute_run(with_data_price_limits(settings, inputs), inputs, run.spec, workers=1)
        stored = read_run(out / run.spec.run_id)
        assert stored.summary == json.loads(json.dumps(alone.summary)), run.label

    status = subprocess.run(vpp(stack, "backtest", "sweep-status", sweep_id), cwd=REPO_ROOT, capture_output=True,
                            text=True, env=cli_environment(), timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"sweep {sweep_id}: completed, stage done; 4/4 runs" in status.stdout


async def test_a_run_whose_data_changed_fails_with_its_reason(stack: LocalStack, tmp_path: Path) -> None:
    settings = stack.settings
    data = tmp_path / "data"
    shutil.copytree(load_settings(environ={}).market_data.data_dir, data)
    grid = build_grid(regions=["SA1"], start=DAY_START, end=datetime(2021, 1, 15, 6, 0),
                      params=["history_intervals=576", "horizon_intervals=24,12"], data=[data],
                      default_region="SA1", default_data=data)
    plan = plan_sweep(settings, grid)
    dispatch = next(data.glob("*DISPATCHPRICE*"))
    dispatch.write_bytes(dispatch.read_bytes() + b"\0")  # after planning: the workers see other bytes
    client = await Client.connect(stack.temporal_address)
    handle = await submit_sweep(client, settings, open_archive(settings), plan, tmp_path / "runs")
    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert [o.status for o in result.outcomes] == [RUN_FAILED, RUN_FAILED]
    for outcome in result.outcomes:
        assert "has sha256" in outcome.reason and "the sweep expects" in outcome.reason, outcome.reason
        assert outcome.run_id in result.report.table_markdown
    assert "the sweep expects" in result.report.table_markdown
