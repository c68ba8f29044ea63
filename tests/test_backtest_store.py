"""AEMO's tables feed the platform: the market store built from the real files of data/nemweb read into the
platform's price tables, backtests over the store (no PREDISPATCHPRICE, all FCAS markets including the
1-second ones, gaps in the data), the market-data service on the store, and the regimes table."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aemo.mms import load_dispatch_prices
from aemo.store import MarketStore
from aemo.store_prices import (
    StoreCoverageError,
    configured_market_tables,
    held_span,
    load_store_prices,
    replay_span,
)
from backtest.engine import BacktestConfig, run_backtest
from backtest.months import month_periods, write_months
from backtest.runs import file_sha256
from cli.main import app
from services.health import wait_healthy
from services.market_data import fetch_snapshot, serve
from settings import Settings, load_settings
from tests.aemo_fixtures import ARCHIVE_ROOT, archive_zip
from tests.conftest import free_port

FCAS_8 = ("RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG", "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG")
ONE_SECOND = ("RAISE1SEC", "LOWER1SEC")
# A short horizon and a day of history keep decisions fast; the products and the path are the same.
FAST = ("--param", "horizon_intervals=48", "--param", "history_intervals=288")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder whose market store holds DISPATCHPRICE of every month of data/nemweb (AEMO's zips)."""
    state = tmp_path_factory.mktemp("state")
    store = MarketStore(state / "market")
    for path in sorted(ARCHIVE_ROOT.rglob("*DISPATCHPRICE*.zip")):
        if "PREDISPATCH" not in path.name:
            store.ingest_path(path, tables=["DISPATCHPRICE"])
    return state


@pytest.fixture(scope="module")
def store(state_dir: Path) -> MarketStore:
    return MarketStore(state_dir / "market")


def _env(state_dir: Path) -> dict[str, str]:
    return {"VPP_STATE_DIR": str(state_dir), "COLUMNS": "200"}


def invoke(args: list[str], state_dir: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, env=_env(state_dir))
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------------------------------
# The store into the platform's tables
# --------------------------------------------------------------------------------------------------


def test_a_region_month_from_the_store_equals_the_file_read_directly(store: MarketStore) -> None:
    for month, fcas in (("2024_07", FCAS_8), ("2025_01", (*FCAS_8, *ONE_SECOND))):
        year, number = int(month[:4]), int(month[5:])
        start = datetime(year, number, 1, 0, 5)
        end = datetime(year + number // 12, number % 12 + 1, 1)
        loaded = load_store_prices(store, regions=["SA1"], start=start, end=end)
        path = archive_zip(month, "DISPATCHPRICE")
        direct = load_dispatch_prices(path)
        assert loaded.dispatch.products == ("ENERGY", *fcas) == direct.products
        assert loaded.dispatch.regions == ("SA1",)
        np.testing.assert_array_equal(loaded.dispatch.intervals, direct.intervals)
        np.testing.assert_array_equal(loaded.dispatch.price[0], direct.price[direct.region_index("SA1")])
        assert not loaded.has_predispatch and loaded.predispatch.regions == ()
        (source,) = loaded.sources
        assert source.name == path.name and source.sha256 == file_sha256(path)
        assert source.size_bytes == path.stat().st_size and source.table == "DISPATCHPRICE"


def test_products_come_from_the_rows_loaded(store: MarketStore) -> None:
    """DISPATCHPRICE v4 (July 2024) has no 1-second prices, v5 (August 2024) has: a span over both has 10."""
    both = load_store_prices(store, regions=["SA1"], start=datetime(2024, 7, 30), end=datetime(2024, 8, 2))
    assert both.dispatch.products[-2:] == ONE_SECOND
    july = both.dispatch.price[0, both.dispatch.intervals < np.datetime64("2024-08-01T00:05")]
    assert bool(np.isnan(july[:, -2:]).all()) and bool(np.isfinite(july[:, :-2]).all())
    assert {s.name for s in both.sources} == {archive_zip("2024_07", "DISPATCHPRICE").name,
                                              archive_zip("2024_08", "DISPATCHPRICE").name}
    older = load_store_prices(store, regions=["NSW1", "SA1"], start=datetime(2018, 4, 1), end=datetime(2018, 5, 1))
    assert older.dispatch.products == ("ENERGY", *FCAS_8) and older.dispatch.regions == ("NSW1", "SA1")


def test_what_the_store_does_not_hold_is_a_clear_error(store: MarketStore) -> None:
    with pytest.raises(StoreCoverageError, match=r"holds no DISPATCHPRICE of SA1 .* 2023-01-01 00:00 .*"
                                                 r"NSW1, SA1: 2018-04, 2018-05, .*2026-03"):
        load_store_prices(store, regions=["SA1"], start=datetime(2023, 1, 1), end=datetime(2023, 2, 1))
    assert held_span(store, "SA1") == (datetime(2018, 4, 1, 0, 5), datetime(2026, 4, 1))
    assert held_span(store, "QLD1") is None


# --------------------------------------------------------------------------------------------------
# vpp backtest run on the store
# --------------------------------------------------------------------------------------------------


def test_a_2025_backtest_from_the_store_trades_every_fcas_market(state_dir: Path, store: MarketStore,
                                                                 tmp_path: Path) -> None:
    """January 2025, SA1, no PREDISPATCHPRICE: the 1-second markets flow through forecast, plan, bid,
    validation, clearing and settlement, and the run records the store's files and their sha256."""
    code, stdout, stderr = invoke(["backtest", "run", "--region", "SA1", "--start", "2025-01-02T00:00", "--end",
                                   "2025-01-02T06:00", *FAST, "--out", str(tmp_path), "--no-report", "--workers",
                                   "1"], state_dir)
    assert code == 0, stdout + stderr
    assert "the market store" in stdout and "10 FCAS markets, without AEMO's forecasts" in stdout
    (folder,) = [child for child in tmp_path.iterdir() if child.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    results = summary["results"]
    assert summary["data_origin"] == "store" and summary["aemo_forecasts"] is False
    path = archive_zip("2025_01", "DISPATCHPRICE")
    assert summary["data"] == [{"path": str(store.root / path.name), "table": "DISPATCHPRICE",
                                "sha256": file_sha256(path), "bytes": path.stat().st_size,
                                "identity": path.name.removesuffix(".zip")}]
    assert "--source store" in summary["command"]
    assert summary["fcas_products"][-2:] == list(ONE_SECOND)
    assert results["decisions"] == 72 and results["failed_decisions"] == 0
    assert results["validation_rejections"] == 0 and results["safe_fallbacks"] == 0
    for product in ONE_SECOND:
        assert results["fcas_revenue_by_product_dollars"][product] > 0
        assert results["perfect_foresight"]["energy_fcas_fcas_by_product_dollars"][product] > 0
    ledger = pd.read_parquet(folder / "ledger.parquet")
    assert (ledger["violations"] == "").all() and (ledger["failure"] == "").all()
    for product in ONE_SECOND:
        assert (ledger[f"fcas_enabled_mw_{product}"] > 0).any()
        assert (ledger[f"fcas_revenue_dollars_{product}"] > 0).any()
    # The stored run's data loads again from the store (compare --perfect-information does this), checked.
    from backtest.runs import inputs_of, read_run

    reloaded = inputs_of(read_run(folder))
    assert reloaded.origin == "store" and [f.sha256 for f in reloaded.files] == [file_sha256(path)]
    # The same run again: the same id (data identified by its sha256).
    code, again, stderr = invoke(["backtest", "run", "--region", "SA1", "--start", "2025-01-02T00:00", "--end",
                                  "2025-01-02T06:00", *FAST, "--out", str(tmp_path), "--no-report", "--workers", "1"],
                                 state_dir)
    assert code == 0, stderr
    assert folder.name in again


def test_a_period_across_a_gap_decides_only_where_the_data_allows(state_dir: Path, tmp_path: Path) -> None:
    """2025-01-03 18:00 .. 2025-01-30 02:00: the data holds days 1-3 and 30-31 only. No decision in the gap,
    none until a price is known again; after it, the snapshot's history reaches back to days 1-3 (``[market_data]
    history_reach_intervals``, 35 days), so the forecaster runs from the first priced interval on, and no decision
    fails for the layout of the data."""
    code, stdout, stderr = invoke(["backtest", "run", "--region", "SA1", "--start", "2025-01-03T18:00", "--end",
                                   "2025-01-30T02:00", *FAST, "--out", str(tmp_path), "--no-report", "--workers",
                                   "1"], state_dir)
    assert code == 0, stdout + stderr
    (folder,) = [child for child in tmp_path.iterdir() if child.is_dir()]
    results = json.loads((folder / "summary.json").read_text())["results"]
    ledger = pd.read_parquet(folder / "ledger.parquet")
    intervals = pd.DatetimeIndex(ledger["dispatch_interval"])
    before, after = intervals[intervals < "2025-01-10"], intervals[intervals > "2025-01-10"]
    assert before[0] == pd.Timestamp("2025-01-03 18:05") and before[-1] == pd.Timestamp("2025-01-03 23:55")
    # The interval ending 01-30 00:00 is the first priced again. The decisions bidding 00:00 and 00:05 know no
    # price of the last seven days; the reach gives them days 1-3 (without it the first decision would bid 00:10).
    assert after[0] == pd.Timestamp("2025-01-30 00:00") and after[-1] == pd.Timestamp("2025-01-30 02:00")
    assert results["decisions"] == len(before) + len(after) == 71 + 25
    assert results["intervals_without_data"] == (datetime(2025, 1, 30, 2) - datetime(2025, 1, 3, 18)) // timedelta(
        minutes=5) - 96
    assert results["failed_decisions"] == 0 and results["validation_rejections"] == 0
    assert ledger["forecast_energy_p50"].notna().all()
    # Perfect foresight per stretch of data: the battery does nothing across the gap.
    assert results["perfect_foresight"]["energy_fcas_dollars"] > 0


def test_the_store_is_chosen_only_when_it_holds_the_period(state_dir: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke(["backtest", "run", "--region", "SA1", "--start", "2023-03-01", "--days", "2",
                                   "--out", str(tmp_path)], state_dir)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "no SA1 dispatch prices in the period 2023-03-01" in lines[0]
    assert "holds DISPATCHPRICE of NSW1, SA1: 2018-04" in lines[0]
    code, _, stderr = invoke(["backtest", "run", "--source", "store", "--region", "QLD1", "--start", "2025-01-02",
                              "--days", "1", "--out", str(tmp_path)], state_dir)
    assert code == 1 and "the market store does not hold QLD1 over 2025-01-02 00:00 .. 2025-01-03 00:00" in stderr
    assert "NSW1, SA1: 2018-04" in stderr
    code, _, stderr = invoke(["backtest", "run", "--source", "store", "--region", "SA1", "--out", str(tmp_path)],
                             state_dir)
    assert code == 1 and "needs a period" in stderr
    code, _, stderr = invoke(["backtest", "run", "--source", "store", "--data", "data/nem", "--out", str(tmp_path)],
                             state_dir)
    assert code == 1 and "cannot be combined" in stderr


def test_data_files_without_predispatch_run(tmp_path: Path, state_dir: Path) -> None:
    """--data with DISPATCHPRICE alone (AEMO's zip as published): the strategy plans on its own."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(archive_zip("2024_08", "DISPATCHPRICE"), data)
    code, stdout, stderr = invoke(["backtest", "run", "--data", str(data), "--region", "NSW1", "--start",
                                   "2024-08-02T12:00", "--end", "2024-08-02T13:00", *FAST, "--out",
                                   str(tmp_path / "runs"), "--no-report", "--workers", "1"], state_dir)
    assert code == 0, stdout + stderr
    (folder,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["data_origin"] == "files" and summary["aemo_forecasts"] is False
    assert [item["table"] for item in summary["data"]] == ["DISPATCHPRICE"]
    assert summary["results"]["decisions"] == 12 and summary["results"]["failed_decisions"] == 0


# --------------------------------------------------------------------------------------------------
# The engine on a month with one day of history
# --------------------------------------------------------------------------------------------------


def test_one_day_of_history_and_a_v4_month_next_to_a_v5_month(store: MarketStore) -> None:
    """2024-07-31: the store's history is July 30 (one day), the table also holds August's 1-second prices
    (v5). The 1-second markets, not yet priced as of the decisions, are neither forecast nor planned; nothing
    fails."""
    settings = load_settings(environ={})
    loaded = load_store_prices(store, regions=["SA1"], start=datetime(2024, 7, 29), end=datetime(2024, 8, 2))
    assert loaded.dispatch.products[-2:] == ONE_SECOND
    config = BacktestConfig(region="SA1", first_decision=datetime(2024, 7, 31, 0, 0, 30), decisions=24,
                            horizon_intervals=24, history_intervals=2016)
    result = run_backtest(settings, loaded.dispatch, loaded.predispatch, config, workers=1)
    assert len(result.records) == 24 and result.failed_decisions == 0 and result.validation_rejections == 0
    assert result.fcas_products[-2:] == ONE_SECOND
    assert all(record.fcas_revenue_by_product_dollars["RAISE1SEC"] == 0.0 for record in result.records)
    assert result.fcas_revenue_dollars > 0


# --------------------------------------------------------------------------------------------------
# The regimes table
# --------------------------------------------------------------------------------------------------


def test_month_periods_take_each_stretch_after_its_first_day(store: MarketStore) -> None:
    loaded = load_store_prices(store, regions=["SA1"], start=datetime(2024, 12, 24), end=datetime(2025, 2, 2))
    periods = month_periods(loaded.dispatch, "SA1", date(2025, 1, 1), 288)
    assert [(p.first_interval, p.last_interval, p.intervals) for p in periods] == [
        (datetime(2025, 1, 2, 0, 5), datetime(2025, 1, 3, 23, 55), 575),
        (datetime(2025, 1, 31, 0, 0), datetime(2025, 2, 1, 0, 0), 289)]
    assert month_periods(loaded.dispatch, "SA1", date(2024, 12, 1), 288) == []
    assert month_periods(loaded.dispatch, "QLD1", date(2025, 1, 1), 288) == []


def test_the_regimes_table_of_a_month(state_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "fast.toml"
    config.write_text("[cycle]\nhorizon_intervals = 12\nhistory_intervals = 288\n")
    code, stdout, stderr = invoke(["--config", str(config), "backtest", "months", "--month", "2025-01", "--region",
                                   "SA1", "--no-embedded", "--workers", "1", "--out", str(tmp_path / "months")],
                                  state_dir)
    assert code == 0, stdout + stderr
    rows = pd.read_csv(tmp_path / "months" / "months.csv")
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["month"], row["region"], row["source"]) == ("2025-01", "SA1", "store")
    assert not row["aemo_forecasts"] and row["fcas_markets"] == 10 and row["stretches"] == 2
    assert row["decisions"] == 575 + 289 and row["failed_decisions"] == 0 and row["validation_rejections"] == 0
    assert row["safe_fallbacks"] == 0
    assert row["one_second_revenue_dollars"] > 0
    assert 0 < row["capture"] <= 1.0 + 1e-9
    assert abs(row["total_revenue_dollars"] - row["energy_revenue_dollars"] - row["fcas_revenue_dollars"]) < 1e-6
    markdown = (tmp_path / "months" / "months.md").read_text()
    assert "| 2025-01 | SA1 | store | no | 10 | no | 864 |" in markdown  # no DISPATCHREGIONSUM in this store
    assert "price-taker only" in markdown and not row["market_depth"]
    assert "2025-01" in stdout and "months.csv" in stdout


def test_the_regimes_table_without_data_is_one_error(tmp_path: Path) -> None:
    code, _, stderr = invoke(["backtest", "months", "--no-embedded", "--out", str(tmp_path)], tmp_path / "empty")
    assert code == 1 and stderr.startswith("error: no month of SA1, NSW1 has enough data")
    assert not (tmp_path / "empty" / "market").exists()


def test_write_months_rounds_and_marks_missing_benchmarks(tmp_path: Path) -> None:
    from backtest.months import MonthRow

    row = MonthRow(month="2021-01", region="SA1", source="files", aemo_forecasts=True, fcas_markets=8, stretches=1,
                   decisions=10, intervals_without_data=0, energy_revenue_dollars=0.0, fcas_revenue_dollars=0.0,
                   total_revenue_dollars=0.0, one_second_revenue_dollars=0.0, perfect_foresight_dollars=0.0,
                   capture=None, energy_share=None, failed_decisions=0, validation_rejections=0)
    _, markdown = write_months(tmp_path, [row])
    assert ("| 2021-01 | SA1 | files | yes | 8 | no | 10 | $0 | price-taker only | – | $0 | $0 | price-taker only "
            "| – | price-taker only | $0 | – | 0 / 0 |") in markdown.read_text()


# --------------------------------------------------------------------------------------------------
# The market-data service on the store
# --------------------------------------------------------------------------------------------------


def _store_settings(state_dir: Path, replay_start: datetime) -> Settings:
    loaded = load_settings(environ={})
    return replace(loaded, stack=replace(loaded.stack, state_dir=state_dir),
                   market_data=replace(loaded.market_data, source="store", history_reach_intervals=0),
                   cycle=replace(loaded.cycle, replay_start=replay_start, replay_days=1, history_intervals=288,
                                 horizon_intervals=12))


def test_the_configured_source_gives_the_services_tables(state_dir: Path) -> None:
    settings = _store_settings(state_dir, datetime(2025, 1, 2, 4, 5))
    assert replay_span(settings) == (datetime(2025, 1, 1, 4, 0), datetime(2025, 1, 3, 5, 5))
    reaching = replace(settings, market_data=replace(settings.market_data, history_reach_intervals=2 * 288))
    assert replay_span(reaching) == (datetime(2024, 12, 31, 4, 0), datetime(2025, 1, 3, 5, 5))  # the reach's days
    dispatch, predispatch = configured_market_tables(settings)
    assert dispatch.regions == ("NSW1", "SA1") and dispatch.products[-2:] == ONE_SECOND
    assert predispatch.is_empty
    files = configured_market_tables(replace(settings, market_data=replace(settings.market_data, source="files")))
    assert files[0].intervals[0] == np.datetime64("2021-01-01T00:05") and not files[1].is_empty
    with pytest.raises(StoreCoverageError, match=r"source = store: .*holds no DISPATCHPRICE.*replay_start"):
        configured_market_tables(_store_settings(state_dir, datetime(2023, 1, 1, 4, 5)))


async def test_the_market_data_service_serves_the_store(state_dir: Path) -> None:
    settings = _store_settings(state_dir, datetime(2025, 1, 2, 4, 5))
    port = free_port()
    configured = replace(settings, stack=replace(settings.stack, market_data_port=port))
    stop = asyncio.Event()
    task = asyncio.create_task(serve(configured, stop))
    try:
        address = f"127.0.0.1:{port}"
        await wait_healthy(address, timeout_s=30.0)
        snapshot = await fetch_snapshot(address, "SA1", datetime(2025, 1, 2, 12, 10), datetime(2025, 1, 2, 12, 0, 30),
                                        history_intervals=12)
        assert list(snapshot.products)[-2:] == list(ONE_SECOND) and not snapshot.predispatch
        sa1 = load_dispatch_prices(archive_zip("2025_01", "DISPATCHPRICE"))
        position = sa1.interval_index(datetime(2025, 1, 2, 12, 0))
        assert position is not None
        for history in snapshot.history:
            assert history.price[-1] == sa1.price[sa1.region_index("SA1"), position,
                                                  sa1.product_index(history.product)]
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def test_forecastable_products_leave_out_a_market_not_yet_priced(store: MarketStore) -> None:
    from algorithms.market.as_of import PublicationModel, build_snapshot
    from algorithms.market.cycle_requests import forecastable_products

    loaded = load_store_prices(store, regions=["SA1"], start=datetime(2024, 7, 29), end=datetime(2024, 8, 2))
    publication = PublicationModel(dispatch_price_delay_s=20.0)

    def products_at(as_of: datetime) -> tuple[str, ...]:
        snapshot = build_snapshot(loaded.dispatch, loaded.predispatch, region="SA1", as_of=as_of,
                                  dispatch_interval=as_of.replace(second=0) + timedelta(minutes=10),
                                  history_intervals=288, publication=publication)
        return forecastable_products(snapshot)

    assert products_at(datetime(2024, 7, 31, 12, 0, 30)) == ("ENERGY", *FCAS_8)
    assert products_at(datetime(2024, 8, 1, 12, 0, 30)) == ("ENERGY", *FCAS_8, *ONE_SECOND)


def test_the_regimes_table_prices_a_month_before_the_configured_years_with_aemos_thresholds(tmp_path: Path) -> None:
    """April 2018 lies before every configured financial year: without AEMO's MARKET_PRICE_THRESHOLDS in the
    store the month is one clear error; with them (FY2017-18: cap $14,200, CPT $212,800) it is backtested."""
    state = tmp_path / "state"
    store = MarketStore(state / "market")
    for path in sorted(ARCHIVE_ROOT.rglob("*DISPATCHPRICE_201804*.zip")):
        if "PREDISPATCH" not in path.name:
            store.ingest_path(path, tables=["DISPATCHPRICE"])
    config = tmp_path / "fast.toml"
    config.write_text("[cycle]\nhorizon_intervals = 12\nhistory_intervals = 288\n")
    args = ["--config", str(config), "backtest", "months", "--month", "2018-04", "--region", "SA1", "--no-embedded",
            "--workers", "1", "--out", str(tmp_path / "months")]
    code, stdout, stderr = invoke(args, state)
    assert code != 0 and "2017" in stderr and "Traceback" not in stdout + stderr, stdout + stderr
    thresholds = next(ARCHIVE_ROOT.rglob("*MARKET_PRICE_THRESHOLDS_202104*.zip"))
    store.ingest_path(thresholds, tables=["MARKET_PRICE_THRESHOLDS"])
    code, stdout, stderr = invoke(args, state)
    assert code == 0, stdout + stderr
    rows = pd.read_csv(tmp_path / "months" / "months.csv")
    assert list(rows["month"]) == ["2018-04"] and rows.iloc[0]["failed_decisions"] == 0
    assert rows.iloc[0]["decisions"] > 0 and 0 < rows.iloc[0]["capture"] <= 1.0 + 1e-9


def test_the_regimes_table_counts_safe_fallbacks_beside_failed_decisions(tmp_path: Path) -> None:
    from backtest.months import MonthRow

    row = MonthRow(month="2024-08", region="NSW1", source="store", aemo_forecasts=False, fcas_markets=10, stretches=2,
                   decisions=864, intervals_without_data=0, energy_revenue_dollars=1.0, fcas_revenue_dollars=1.0,
                   total_revenue_dollars=2.0, one_second_revenue_dollars=0.0, perfect_foresight_dollars=4.0,
                   capture=0.5, energy_share=0.5, failed_decisions=2, validation_rejections=0, safe_fallbacks=3)
    csv_path, markdown = write_months(tmp_path, [row])
    assert "failed decisions / safe fallbacks |" in markdown.read_text()
    assert markdown.read_text().splitlines()[-1].endswith("| 2 / 3 |")
    assert pd.read_csv(csv_path).iloc[0]["safe_fallbacks"] == 3


def test_a_run_configured_by_vpp_config_records_the_file(state_dir: Path, tmp_path: Path) -> None:
    """A configuration given as ``$VPP_CONFIG`` is named in the run's summary as ``--config`` would be."""
    config = tmp_path / "strategy.toml"
    config.write_text("[cycle]\noptimiser_uncertainty_weight = 0.3\n")
    result = CliRunner().invoke(app, ["backtest", "run", "--region", "SA1", "--start", "2025-01-02T00:00", "--end",
                                      "2025-01-02T01:00", *FAST, "--out", str(tmp_path / "runs"), "--no-report",
                                      "--workers", "1"], env={**_env(state_dir), "VPP_CONFIG": str(config)})
    assert result.exit_code == 0, result.stdout + result.stderr
    (folder,) = [child for child in (tmp_path / "runs").iterdir() if child.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["config_file"] == {"path": str(config.resolve()), "sha256": file_sha256(config)}
    assert summary["settings"]["cycle"]["optimiser_uncertainty_weight"] == 0.3
