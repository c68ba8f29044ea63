"""`vpp backtest run / list / show / compare` and `vpp bench backtest` on tiny runs (two hours of SA1).

Every run here makes 24 decisions with a 4-hour horizon and 2 days of history, on three days of SA1 data
cut from the embedded January 2021 tables, so that each takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from backtest.engine import perfect_foresight_revenue
from backtest.runs import LEDGER_FILE, SUMMARY_FILE, TIMING_FILE, load_inputs, supports_forecast_source
from cli.main import app
from settings import load_settings
from tests.backtest_fixtures import DISPATCH_NAME, PREDISPATCH_NAME, write_tiny_market

runner = CliRunner()
DATA_START = datetime(2021, 1, 13, 4, 0)
DATA_END = datetime(2021, 1, 16, 4, 0)
PERIOD = ["--region", "SA1", "--start", "2021-01-15T17:00", "--end", "2021-01-15T19:00"]
SMALL = ["--param", "horizon_intervals=48", "--param", "history_intervals=576"]
DECISIONS = 24


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_market(tmp_path_factory.mktemp("mms"), start=DATA_START, end=DATA_END)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    return {"VPP_STATE_DIR": str(tmp_path_factory.mktemp("state")), "VPP_CONFIG": None, "COLUMNS": "250"}


def invoke(args: list[str], env: dict[str, str | None]) -> tuple[int, str]:
    result = runner.invoke(app, args, env=env)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def run_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["backtest", "run", "--data", str(data_dir), *PERIOD, *SMALL, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def first_run(data_dir: Path, env: dict[str, str | None], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of one tiny run (plots for 15 Jan)."""
    out = tmp_path_factory.mktemp("runs")
    code, output = invoke(run_args(data_dir, out, "--plot-day", "2021-01-15"), env)
    assert code == 0, output
    folders = [child for child in out.iterdir() if child.is_dir()]
    assert len(folders) == 1
    return folders[0]


def summary_of(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / SUMMARY_FILE).read_text())  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------------


def test_run_writes_summary_ledger_plots_and_report(first_run: Path) -> None:
    for name in (SUMMARY_FILE, LEDGER_FILE, TIMING_FILE, "day.png", "forecast_fan.png", "cumulative_revenue.png",
                 "report.html"):
        assert (first_run / name).is_file(), name
    assert (first_run / "day.png").read_bytes().startswith(b"\x89PNG")
    page = (first_run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "src='http" not in page and 'src="http' not in page
    summary = summary_of(first_run)
    assert summary["run_id"] == first_run.name
    assert summary["period"]["intervals"] == DECISIONS
    assert summary["period"]["first_interval"] == "2021-01-15T17:05:00"
    assert summary["strategy"]["parameters"] == {"history_intervals": 576, "horizon_intervals": 48}


def test_summary_totals_are_the_ledger_sums(first_run: Path) -> None:
    summary, ledger = summary_of(first_run), pd.read_parquet(first_run / LEDGER_FILE)
    results = summary["results"]
    assert len(ledger) == DECISIONS
    assert ledger["total_revenue_dollars"].sum() == pytest.approx(results["total_revenue_dollars"], abs=1e-6)
    assert ledger["energy_revenue_dollars"].sum() == pytest.approx(results["energy_revenue_dollars"], abs=1e-6)
    for product, dollars in results["fcas_revenue_by_product_dollars"].items():
        assert ledger[f"fcas_revenue_dollars_{product}"].sum() == pytest.approx(dollars, abs=1e-6)
    pf = results["perfect_foresight"]
    assert ledger["pf_total_revenue_dollars"].sum() == pytest.approx(pf["energy_fcas_dollars"], abs=1e-6)
    # Captures are after the end-of-run SoC charge (≤ 0; a run ending below its starting SoC pays to refill).
    charge = results["end_of_run_adjustment_dollars"]
    assert charge <= 0.0 and results["credited_revenue_dollars"] == pytest.approx(results["total_revenue_dollars"]
                                                                                 + charge)
    assert (charge < 0) == (results["final_state_of_charge_mwh"] < results["initial_state_of_charge_mwh"] - 1e-9)
    assert results["capture_total"] == pytest.approx((results["total_revenue_dollars"] + charge)
                                                     / pf["energy_fcas_dollars"])
    assert results["depth_limited"] is None  # the embedded January 2021 has no DISPATCHREGIONSUM
    assert (ledger["vs_pf_dollars"] == ledger["total_revenue_dollars"] - ledger["pf_total_revenue_dollars"]).all()
    intervals = pd.to_datetime(ledger["dispatch_interval"])
    assert (intervals.diff().dropna() == pd.Timedelta(minutes=5)).all()


def test_per_interval_perfect_foresight_matches_the_engine_benchmark(first_run: Path, data_dir: Path) -> None:
    settings = load_settings(environ={})
    inputs = load_inputs([data_dir])
    from backtest.engine import market_prices

    energy, fcas = perfect_foresight_revenue(settings, market_prices(settings, inputs.dispatch), "SA1",
                                             datetime(2021, 1, 15, 17, 5), DECISIONS, include_fcas=True)
    pf = summary_of(first_run)["results"]["perfect_foresight"]
    assert pf["energy_fcas_dollars"] == pytest.approx(energy + fcas, rel=1e-6, abs=1e-3)
    assert pf["energy_only_dollars"] <= pf["energy_fcas_dollars"] + 1e-6


def test_run_prints_revenue_perfect_foresight_and_capture(data_dir: Path, env: dict[str, str | None],
                                                          first_run: Path, tmp_path: Path) -> None:
    extra = ["--perfect-information"] if supports_forecast_source() else []
    code, output = invoke(run_args(data_dir, tmp_path, "--no-report", *extra), env)
    assert code == 0, output
    summary = summary_of(first_run)
    revenue = summary["results"]["total_revenue_dollars"]
    assert f"revenue ${revenue:,.0f}" in output
    assert "perfect foresight $" in output and "capture " in output
    assert first_run.name in output
    assert not (tmp_path / first_run.name / "report.html").exists()
    if extra:
        twin = summary_of(tmp_path / summary["perfect_information_run_id"])
        assert twin["forecast_source"] == "actual"
        assert twin["strategy"]["parameters"]["forecast_source"] == "actual"
        informed = twin["results"]["total_revenue_dollars"]
        assert f"value of perfect information ${informed - revenue:,.0f}" in output


def test_same_inputs_give_the_same_bytes(first_run: Path, data_dir: Path, env: dict[str, str | None],
                                         tmp_path: Path) -> None:
    """The command `show` prints reproduces the run, here on one process instead of every core: same id,
    same summary.json and ledger.parquet bytes."""
    code, output = invoke(["backtest", "show", first_run.name, "--out", str(first_run.parent)], env)
    assert code == 0, output
    command = output.strip().splitlines()[-1]
    words = shlex.split(command)
    assert words[0] == "vpp"
    assert "--out" in words
    words[words.index("--out") + 1] = str(tmp_path)
    code, output = invoke([*words[1:], "--workers", "1"], env)
    assert code == 0, output
    again = tmp_path / first_run.name
    assert (again / SUMMARY_FILE).read_bytes() == (first_run / SUMMARY_FILE).read_bytes()
    assert (again / LEDGER_FILE).read_bytes() == (first_run / LEDGER_FILE).read_bytes()
    assert json.loads((again / TIMING_FILE).read_text())["run_id"] == first_run.name


def test_a_parameter_changes_the_run_id(data_dir: Path, env: dict[str, str | None], first_run: Path,
                                        tmp_path: Path) -> None:
    params = tmp_path / "strategy.toml"
    params.write_text("horizon_intervals = 36\nhistory_intervals = 576\n[settings.bidding]\n"
                      "rebid_materiality_mw = 2.0\n")
    args = ["backtest", "run", "--data", str(data_dir), *PERIOD, "--params", str(params), "--out", str(tmp_path),
            "--no-report"]
    code, output = invoke(args, env)
    assert code == 0, output
    (folder,) = [child for child in tmp_path.iterdir() if child.is_dir()]
    assert folder.name != first_run.name
    summary = summary_of(folder)
    assert summary["strategy"]["parameters"] == {"horizon_intervals": 36, "history_intervals": 576,
                                                 "settings.bidding.rebid_materiality_mw": 2.0}
    assert summary["settings"]["bidding"]["rebid_materiality_mw"] == 2.0
    assert summary["settings_sha256"] != summary_of(first_run)["settings_sha256"]


# --------------------------------------------------------------------------------------------------
# list / show
# --------------------------------------------------------------------------------------------------


def test_list_shows_the_run(first_run: Path, env: dict[str, str | None]) -> None:
    code, output = invoke(["backtest", "list", "--out", str(first_run.parent)], env)
    assert code == 0, output
    assert first_run.name in output
    assert "SA1" in output and "sarx-quantile@6" in output


def test_list_of_an_empty_folder_says_so(tmp_path: Path, env: dict[str, str | None]) -> None:
    code, output = invoke(["backtest", "list", "--out", str(tmp_path)], env)
    assert code == 0
    assert "no backtest runs" in output


def test_show_gives_parameters_code_version_and_data_hashes(first_run: Path, data_dir: Path,
                                                            env: dict[str, str | None]) -> None:
    prefix = first_run.name[:-4]
    code, output = invoke(["backtest", "show", prefix, "--out", str(first_run.parent)], env)
    assert code == 0, output
    for name in (DISPATCH_NAME, PREDISPATCH_NAME):
        digest = hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
        assert digest in output
    summary = summary_of(first_run)
    assert summary["code_version"] in output
    assert summary["code_version"].startswith(("git ", "openvpp "))
    assert "parameter horizon_intervals" in output
    assert output.strip().splitlines()[-1].startswith("vpp backtest run --data ")


# --------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------


def test_compare_two_runs_side_by_side(first_run: Path, data_dir: Path, env: dict[str, str | None]) -> None:
    out = first_run.parent
    code, output = invoke(run_args(data_dir, out, "--param", "optimiser_price_quantile=0.6", "--no-report"), env)
    assert code == 0, output
    other = next(child.name for child in out.iterdir() if child.is_dir() and child.name != first_run.name)
    report = out / "comparison.html"
    code, output = invoke(["backtest", "compare", first_run.name, other, "--out", str(out), "--report",
                           str(report)], env)
    assert code == 0, output
    for title in ("Realised revenue", "Against perfect foresight", "capture total", "value of perfect information",
                  "cycles", "throughput", "forecast skill by lead", "by trading day", "by hour of day",
                  "price band", "Spike events", "RAISE6SEC"):
        assert title in output, title
    page = report.read_text()
    assert first_run.name in page and other in page
    assert page.count("data:image/png;base64,") == 1
    assert report.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(not supports_forecast_source(), reason="the engine has no forecast_source yet")
def test_compare_computes_the_value_of_perfect_information(first_run: Path, env: dict[str, str | None]) -> None:
    out = first_run.parent
    code, output = invoke(["backtest", "compare", first_run.name, "--out", str(out), "--perfect-information",
                           "--report", str(out / "pi.html")], env)
    assert code == 0, output
    twins = [summary_of(child) for child in out.iterdir()
             if (child / SUMMARY_FILE).is_file() and summary_of(child)["forecast_source"] == "actual"]
    assert len(twins) == 1
    assert twins[0]["run_id"] == summary_of(first_run)["perfect_information_run_id"]
    informed = twins[0]["results"]["total_revenue_dollars"]
    realised = summary_of(first_run)["results"]["total_revenue_dollars"]
    row = next(line for line in output.splitlines() if "value of perfect information" in line)
    assert f"{informed - realised:,.0f}" in row


# --------------------------------------------------------------------------------------------------
# Bad input: one clear line, exit code 1, no traceback
# --------------------------------------------------------------------------------------------------


def assert_one_line_error(code: int, output: str, *fragments: str) -> None:
    assert code == 1, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_a_period_with_no_data(data_dir: Path, env: dict[str, str | None], tmp_path: Path) -> None:
    code, output = invoke(["backtest", "run", "--data", str(data_dir), "--region", "SA1", "--start", "2020-03-01",
                           "--days", "2", "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, "no SA1 dispatch prices", "2020-03-01", "data covers")


def test_a_period_running_past_the_data(data_dir: Path, env: dict[str, str | None], tmp_path: Path) -> None:
    code, output = invoke(["backtest", "run", "--data", str(data_dir), "--region", "SA1", "--start", "2021-01-15",
                           "--days", "5", "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, "have no SA1 dispatch price", "2021-01-16 04:05")


def test_an_unknown_region(data_dir: Path, env: dict[str, str | None], tmp_path: Path) -> None:
    code, output = invoke(["backtest", "run", "--data", str(data_dir), "--region", "XX1", "--out", str(tmp_path)],
                          env)
    assert_one_line_error(code, output, "unknown region 'XX1'", "SA1")


def test_an_unknown_strategy_name_lists_the_available_ones(data_dir: Path, env: dict[str, str | None],
                                                          tmp_path: Path) -> None:
    code, output = invoke(["backtest", "run", "--data", str(data_dir), "--forecaster", "crystal-ball",
                           "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, "unknown forecast 'crystal-ball'", "sarx-quantile@1")
    code, output = invoke(["backtest", "run", "--data", str(data_dir), "--optimiser", "lp-energy-fcas@9",
                           "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, "lp-energy-fcas@9", "lp-energy-fcas@1")
    code, output = invoke(["backtest", "run", "--data", str(data_dir), "--bid-builder", "greedy",
                           "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, "unknown bid builder 'greedy'", "schedule@1")


def test_a_malformed_parameter_file(data_dir: Path, env: dict[str, str | None], tmp_path: Path) -> None:
    params = tmp_path / "bad.toml"
    params.write_text("horizon_intervals = [48\n")
    code, output = invoke(["backtest", "run", "--data", str(data_dir), "--params", str(params), "--out",
                           str(tmp_path)], env)
    assert_one_line_error(code, output, str(params), "not valid TOML")


@pytest.mark.parametrize(("content", "fragment"), [
    ("horizon = 48\n", "unknown parameter 'horizon'"),
    ("horizon_intervals = 'long'\n", "horizon_intervals must be a whole number"),
    ("forecast_quantiles = [0.9, 0.1]\n", "strictly increasing"),
    ("[settings.bidding]\nrebid_materiality = 1\n", "unknown parameter 'settings.bidding.rebid_materiality'"),
    ("[strategy]\nforecaster = 'nope@1'\n", "unknown forecast 'nope@1'"),
])
def test_bad_parameters_are_named(data_dir: Path, env: dict[str, str | None], tmp_path: Path, content: str,
                                  fragment: str) -> None:
    params = tmp_path / "params.toml"
    params.write_text(content)
    code, output = invoke(["backtest", "run", "--data", str(data_dir), "--params", str(params), "--out",
                           str(tmp_path)], env)
    assert_one_line_error(code, output, fragment)


def test_a_bad_parameter_flag(data_dir: Path, env: dict[str, str | None], tmp_path: Path) -> None:
    code, output = invoke(["backtest", "run", "--data", str(data_dir), "--param", "horizon_intervals",
                           "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, "is not KEY=VALUE")


def test_a_data_file_in_the_wrong_format(data_dir: Path, env: dict[str, str | None], tmp_path: Path) -> None:
    bad = tmp_path / "PUBLIC_DISPATCHPRICE_BAD.csv"
    bad.write_text("this,is,not\nan,mms,table\n")
    code, output = invoke(["backtest", "run", "--data", str(bad), "--data", str(data_dir / PREDISPATCH_NAME),
                           "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, str(bad), "SETTLEMENTDATE")
    unnamed = tmp_path / "prices.parquet"
    unnamed.write_bytes((data_dir / DISPATCH_NAME).read_bytes())
    code, output = invoke(["backtest", "run", "--data", str(unnamed), "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, "cannot tell which MMS table")
    garbage = tmp_path / "PUBLIC_DISPATCHPRICE_GARBAGE.parquet"
    garbage.write_bytes(b"not parquet at all")
    code, output = invoke(["backtest", "run", "--data", str(garbage), "--data", str(data_dir / PREDISPATCH_NAME),
                           "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, str(garbage), "cannot be read")


def test_missing_data_and_missing_table(env: dict[str, str | None], data_dir: Path, tmp_path: Path) -> None:
    code, output = invoke(["backtest", "run", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, "no such file or folder")
    code, output = invoke(["backtest", "run", "--data", str(data_dir / PREDISPATCH_NAME), "--out", str(tmp_path)],
                          env)
    assert_one_line_error(code, output, "no DISPATCHPRICE file")


def test_a_plot_day_outside_the_period(data_dir: Path, env: dict[str, str | None], tmp_path: Path) -> None:
    code, output = invoke(run_args(data_dir, tmp_path, "--plot-day", "2021-01-20"), env)
    assert_one_line_error(code, output, "--plot-day 2021-01-20", "2021-01-15")


def test_show_and_compare_of_an_unknown_run(env: dict[str, str | None], tmp_path: Path) -> None:
    code, output = invoke(["backtest", "show", "SA1-nope", "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, "no run 'SA1-nope'")
    code, output = invoke(["backtest", "compare", "SA1-nope", "--out", str(tmp_path)], env)
    assert_one_line_error(code, output, "no run 'SA1-nope'")


# --------------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------------


def test_bench_backtest_prints_rate_wall_time_and_stages(data_dir: Path, env: dict[str, str | None]) -> None:
    code, output = invoke(["bench", "backtest", "--data", str(data_dir), "--days", "0.05", *SMALL], env)
    assert code == 0, output  # the first two intervals know no earlier price: no decision, none failed
    assert "decisions/s" in output and "wall time" in output
    assert "12 decisions" in output and "failed decisions 0" in output
    for stage in ("snapshot", "forecast", "optimise", "bid", "clear"):
        assert stage in output
    rates = [float(word) for line in output.splitlines() if "decisions/s" in line
             for word in line.replace(",", " ").split() if word.replace(".", "", 1).isdigit()]
    assert rates and np.isfinite(rates).all()
