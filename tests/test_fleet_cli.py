"""`vpp fleet …` and `vpp dispatch …` against a real PostgreSQL: seeding, the impact log, bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from algorithms.fleet.fleet_types import NEVER
from cli.main import app
from models.db import migrate
from models.dispatch_events import DispatchEventRecord, SiteImpactLog, record_event
from stack.ports import free_tcp_port
from tests.conftest import temporary_database

runner = CliRunner()


@pytest.fixture
def cli_env(server_url: str, tmp_path: Path) -> dict[str, str | None]:
    with temporary_database(server_url) as url:
        migrate(url)
        yield {"DATABASE_URL": url, "VPP_STATE_DIR": str(tmp_path / "state"), "VPP_CONFIG": None}


def test_seed_registers_a_synthetic_fleet_once(cli_env: dict[str, str | None]) -> None:
    first = runner.invoke(app, ["fleet", "seed", "--sites", "250", "--seed", "4"], env=cli_env)
    assert first.exit_code == 0, first.output
    assert "imported 250 sites" in first.output
    again = runner.invoke(app, ["fleet", "seed", "--sites", "250"], env=cli_env)
    assert "already has sites" in again.output
    shown = runner.invoke(app, ["assets", "show", "network-nem"], env=cli_env, terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "250" in shown.output


def test_impact_log_shows_the_sites_furthest_short_first(cli_env: dict[str, str | None]) -> None:
    url = cli_env["DATABASE_URL"]
    assert url is not None
    start = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
    with psycopg.connect(url) as conn:
        record_event(conn, DispatchEventRecord(
            event_id="ev-1", node_id="feeder-x", target_mw=0.01, window_start=start,
            window_end=start.replace(hour=8), status="COMPLETED", reason="", site_count=3,
            asked_mwh=0.03, delivered_mwh=0.025), SiteImpactLog(
            site_ids=np.array(["site-a", "site-b", "site-c"]), asked_kwh=np.array([10.0, 10.0, 10.0]),
            delivered_kwh=np.array([10.0, 5.0, 10.0]), shortfall_kwh=np.array([0.0, 5.0, 0.0]),
            acknowledged=np.array([True, False, True]),
            first_acknowledged_at_ms=np.array([int(start.timestamp() * 1000), NEVER, int(start.timestamp() * 1000)])))
    shown = runner.invoke(app, ["dispatch", "impact", "ev-1", "--limit", "2"], env=cli_env, terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "COMPLETED" in shown.output and "asked 0.030 MWh" in shown.output
    rows = [line for line in shown.output.splitlines() if "site-" in line]
    assert len(rows) == 2 and "site-b" in rows[0] and "5.000" in rows[0] and "no" in rows[0]
    one = runner.invoke(app, ["dispatch", "impact", "ev-1", "--site", "site-c"], env=cli_env, terminal_width=200)
    site_rows = [line for line in one.output.splitlines() if "site-" in line]
    assert len(site_rows) == 1 and "site-c" in site_rows[0]
    missing = runner.invoke(app, ["dispatch", "impact", "ev-404"], env=cli_env)
    assert missing.exit_code == 1
    assert "no recorded dispatch event 'ev-404'" in missing.output


def test_fleet_commands_report_an_unreachable_gateway_or_unknown_node_in_one_line(
        cli_env: dict[str, str | None], tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(f"[fleet]\ngateway_port = {free_tcp_port()}\n")
    stats = runner.invoke(app, ["--config", str(config), "fleet", "stats"], env=cli_env)
    assert stats.exit_code == 1
    assert stats.output.strip().splitlines()[-1].startswith("error: fleet gateway: UNAVAILABLE")
    runner.invoke(app, ["fleet", "seed", "--sites", "50"], env=cli_env)
    unknown = runner.invoke(app, ["--config", str(config), "fleet", "aggregate", "feeder-nowhere"], env=cli_env)
    assert unknown.exit_code == 1
    assert "feeder-nowhere" in unknown.output
    bad_target = runner.invoke(app, ["dispatch", "start", "region-SA1", "--mw", "nan"], env=cli_env)
    assert bad_target.exit_code == 1 and "finite" in bad_target.output
