"""The `vpp` command line: commands, clear configuration errors, status and archive listing."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from typer.testing import CliRunner

from archive.store import LocalArchive
from cli.main import app
from tests.conftest import free_port

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    """Environment of one invocation: an empty state folder, no user configuration."""
    return {"VPP_STATE_DIR": str(tmp_path / "state"), "VPP_CONFIG": None, "VPP_SQS_ENDPOINT": None}


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for command in ("up", "status", "serve", "worker", "db", "archive", "demo", "bench"):
        assert f" {command} " in result.output


def test_missing_config_file_is_one_clear_line_and_exit_1(env: dict[str, str | None]) -> None:
    result = runner.invoke(app, ["--config", "missing.toml", "status"], env=env)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: config file missing.toml")
    assert "Traceback" not in result.output


def test_malformed_config_file_is_one_clear_line(tmp_path: Path, env: dict[str, str | None]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[stack\n")
    result = runner.invoke(app, ["--config", str(config), "status"], env=env)
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert str(config) in result.output


def test_status_reports_parts_down_on_free_ports(tmp_path: Path, env: dict[str, str | None]) -> None:
    config = tmp_path / "ports.toml"
    config.write_text(
        "[stack]\n"
        f'temporal_address = "127.0.0.1:{free_port()}"\n'
        f"temporal_ui_port = {free_port()}\nsqs_port = {free_port()}\n"
        f"market_data_port = {free_port()}\nbid_service_port = {free_port()}\n"
    )
    result = runner.invoke(app, ["--config", str(config), "status"], env=env, terminal_width=200)
    assert result.exit_code == 1, result.output
    parts = ["Temporal", "Temporal UI", "SQS", "PostgreSQL", "market-data service", "bid service", "fleet gateway",
             "forecast pool", "optimisation pool", "AutoBidder worker process", "VPP worker process",
             "simulated homes"]
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│")}
    assert all(part in rows and "down" in rows[part] for part in parts), result.output
    assert result.output.strip().splitlines()[-1].startswith("error: 12 of 12 parts down: Temporal,")
    as_json = runner.invoke(app, ["--config", str(config), "status", "--json"], env=env, terminal_width=200)
    assert as_json.exit_code == 1
    assert '"up": false' in as_json.output and '"part": "SQS"' in as_json.output


def test_archive_ls_on_an_empty_state_folder(env: dict[str, str | None]) -> None:
    result = runner.invoke(app, ["archive", "ls"], env=env)
    assert result.exit_code == 0, result.output
    assert "no cycles" in result.output


def test_archive_ls_lists_cycles_and_entries(tmp_path: Path, env: dict[str, str | None]) -> None:
    recorded_at = datetime(2021, 1, 15, 6, 0, tzinfo=UTC)
    archive = LocalArchive(tmp_path / "state" / "archive", clock=lambda: recorded_at)
    key = archive.put(Timestamp(seconds=1610690700), cycle_id="HPR1-20210115T1605", label="snapshot")
    listed = runner.invoke(app, ["archive", "ls"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.output.split() == ["HPR1-20210115T1605"]

    entries = runner.invoke(app, ["archive", "ls", "HPR1-20210115T1605"], env=env, terminal_width=250)
    assert entries.exit_code == 0, entries.output
    assert "snapshot" in entries.output and key in entries.output
    assert "google.protobuf.Timestamp" in entries.output
    assert "2021-01-15T06:00:00+00:00" in entries.output

    unknown = runner.invoke(app, ["archive", "ls", "NOPE"], env=env)
    assert unknown.exit_code == 1
    assert "no entries for cycle 'NOPE'" in unknown.output


def test_unknown_pool_kind_is_a_usage_error(env: dict[str, str | None]) -> None:
    result = runner.invoke(app, ["worker", "pool", "weather"], env=env)
    assert result.exit_code == 2
    assert "weather" in result.output


def test_runs_as_a_module() -> None:
    import subprocess

    completed = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True,
                               check=False, timeout=60)
    assert completed.returncode == 0
    assert "Usage: vpp" in completed.stdout


def test_up_takes_a_source_only_for_live_market_data(env: dict[str, str | None]) -> None:
    result = runner.invoke(app, ["up", "--source", "http://127.0.0.1:9/"], env=env)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: --source is for live market data: use it with "
                                                  "--market-data live"]
    unknown = runner.invoke(app, ["up", "--market-data", "tomorrow"], env=env)
    assert unknown.exit_code == 2 and "Traceback" not in unknown.output


def test_live_market_data_from_an_unusable_source_is_one_clear_line(tmp_path: Path,
                                                                     env: dict[str, str | None]) -> None:
    config = tmp_path / "live.toml"
    missing = tmp_path / "no-such-nemweb"
    config.write_text(f'[market_data]\nsource = "live"\n[market_store]\nsource = "{missing}"\n'
                      f"[stack]\nmarket_data_port = {free_port()}\n")
    result = runner.invoke(app, ["--config", str(config), "serve", "market-data"], env=env)
    assert result.exit_code == 1, result.output
    assert [line for line in result.output.strip().splitlines() if line.startswith("error:")] == [
        f"error: {missing}: no such folder"]
    assert "Traceback" not in result.output


def test_the_user_configuration_is_the_option_else_vpp_config(tmp_path: Path) -> None:
    """``--config`` wins; without it ``$VPP_CONFIG`` names the file, so a backtest run records it either way."""
    from cli.main import user_config_path

    option, named = tmp_path / "option.toml", tmp_path / "named.toml"
    assert user_config_path(option, {"VPP_CONFIG": str(named)}) == option
    assert user_config_path(None, {"VPP_CONFIG": str(named)}) == named
    assert user_config_path(None, {"VPP_CONFIG": ""}) is None
    assert user_config_path(None, {}) is None
