"""``vpp data sync | ls | check`` through Typer's CliRunner, against the NEMWEB stand-in and the local folder."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.aemo_fixtures import NEMWEB_ROOT
from tests.nemweb_standin import NemwebStandIn

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    """An empty state folder and quick network settings (two attempts, short backoff)."""
    config = tmp_path / "config.toml"
    config.write_text("[market_store]\nattempts = 2\nbackoff_s = 0.01\ntimeout_s = 5.0\nworkers = 2\n")
    return {"VPP_STATE_DIR": str(tmp_path / "state"), "VPP_CONFIG": str(config), "VPP_MARKET_SOURCE": None,
            "COLUMNS": "200"}


@pytest.fixture(scope="module")
def standin() -> Iterator[NemwebStandIn]:
    with NemwebStandIn(NEMWEB_ROOT) as server:
        yield server


def _single_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_sync_ls_check(env: dict[str, str | None], standin: NemwebStandIn) -> None:
    sync = runner.invoke(app, ["data", "sync", "--source", standin.url, "--tables", "DISPATCHPRICE,TRADINGPRICE",
                               "--from", "2024-08", "--to", "2024-09", "--no-current"], env=env)
    assert sync.exit_code == 0, sync.output
    assert "synced 4 files (11,520 rows," in sync.output and "skipped 0; failed 0" in sync.output

    again = runner.invoke(app, ["data", "sync", "--source", standin.url, "--table", "DISPATCHPRICE",
                                "--table", "TRADINGPRICE", "--from", "2024-08", "--to", "2024-09", "--no-current"],
                          env=env)
    assert again.exit_code == 0 and "synced 0 files (0 rows, 0.0 MB)" in again.output
    assert "skipped 4; failed 0" in again.output

    listing = runner.invoke(app, ["data", "ls"], env=env)
    assert listing.exit_code == 0, listing.output
    rows = [line for line in listing.output.splitlines() if "DISPATCHPRICE" in line or "TRADINGPRICE" in line]
    assert len(rows) == 8
    assert any("DISPATCHPRICE" in r and "2024-08" in r and "SA1" in r and "1,440" in r and "2024-08-01 00:05" in r
               and "2024-09-01 00:00" in r for r in rows)
    assert "11,520 rows in all" in listing.output

    check = runner.invoke(app, ["data", "check", "--tables", "DISPATCHPRICE", "--from", "2024-08", "--to", "2024-08",
                                "--region", "SA1"], env=env)
    assert check.exit_code == 1, check.output
    gap = [line for line in check.output.splitlines() if "2024-08-04 00:00" in line]
    assert len(gap) == 1 and "2024-08-29 23:55" in gap[0] and "7,488 × 5 min" in gap[0]
    assert "1 gaps, 7,488 intervals missing." in check.output

    nothing_asked = runner.invoke(app, ["data", "check", "--tables", "MARKET_PRICE_THRESHOLDS"], env=env)
    assert nothing_asked.exit_code == 0 and "No gaps" in nothing_asked.output


def test_sync_from_a_folder_with_current_reports(env: dict[str, str | None]) -> None:
    result = runner.invoke(app, ["data", "sync", "--source", str(NEMWEB_ROOT), "--no-archives",
                                 "--folder", "P5_Reports", "--folder", "Daily_Reports"], env=env)
    assert result.exit_code == 0, result.output
    assert "synced 3 files" in result.output
    listing = runner.invoke(app, ["data", "ls", "--tables", "P5MIN_REGIONSOLUTION"], env=env)
    assert listing.exit_code == 0
    assert sum(1 for line in listing.output.splitlines() if "P5MIN_REGIONSOLUTION" in line and "2026-10" in line) == 5


def test_an_empty_store_is_said_so(env: dict[str, str | None]) -> None:
    listing = runner.invoke(app, ["data", "ls"], env=env)
    assert listing.exit_code == 0 and "holds nothing yet: run `vpp data sync`" in listing.output
    check = runner.invoke(app, ["data", "check", "--tables", "DISPATCHPRICE", "--from", "2024-01", "--to", "2024-01"],
                          env=env)
    assert check.exit_code == 1 and "2024-01-01 00:05" in check.output


def test_failed_files_make_sync_exit_1_with_their_reasons(env: dict[str, str | None], standin: NemwebStandIn) -> None:
    result = runner.invoke(app, ["data", "sync", "--source", standin.url, "--tables", "DISPATCHPRICE", "--from",
                                 "2030-01", "--to", "2030-01", "--no-current"], env=env)
    assert result.exit_code == 1
    assert "failed 1 (Data_Archive/Wholesale_Electricity/MMSDM/2030/MMSDM_2030_01/" in result.output
    assert "Traceback" not in result.output


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(("arguments", "message"), [
    (["data", "ls", "--tables", "DISPATCHPRICES"], "error: unknown table 'DISPATCHPRICES'; known tables: "),
    (["data", "check", "--table", "NOPE"], "error: unknown table 'NOPE'"),
    (["data", "sync", "--tables", "NOPE", "--source", str(NEMWEB_ROOT)], "error: unknown table 'NOPE'"),
    (["data", "ls", "--from", "2024-13"], "error: malformed month '2024-13': expected YYYY-MM"),
    (["data", "check", "--from", "24-01"], "error: malformed month '24-01'"),
    (["data", "sync", "--from", "2024/08", "--source", str(NEMWEB_ROOT)], "error: malformed month '2024/08'"),
    (["data", "ls", "--from", "2024-09", "--to", "2024-08"], "error: --from 2024-09 is after --to 2024-08"),
    (["data", "sync", "--source", "/no/such/nemweb/folder"], "error: /no/such/nemweb/folder: no such folder"),
])
def test_bad_input_is_one_error_line(env: dict[str, str | None], arguments: list[str], message: str) -> None:
    result = runner.invoke(app, arguments, env=env)
    assert result.exit_code == 1
    assert _single_error_line(result.output).startswith(message)


def test_an_unreachable_source_is_one_error_line(env: dict[str, str | None]) -> None:
    result = runner.invoke(app, ["data", "sync", "--source", f"http://127.0.0.1:{_closed_port()}/"], env=env)
    assert result.exit_code == 1
    assert _single_error_line(result.output).startswith("error: cannot reach http://127.0.0.1:")


def test_the_commands_are_registered() -> None:
    result = runner.invoke(app, ["data", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for command in ("sync", "ls", "check"):
        assert f" {command} " in result.output
    bench = runner.invoke(app, ["bench", "--help"], terminal_width=200)
    assert " store " in bench.output
