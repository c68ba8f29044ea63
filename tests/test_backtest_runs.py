"""Backtest runs: data inputs, the period, deterministic run ids, finding stored runs."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from algorithms.market.prices import DispatchPrices
from backtest.runs import (
    DataFile,
    Period,
    RunError,
    RunSpec,
    canonical_json,
    code_version,
    data_files,
    find_run,
    intervals_with_prices,
    list_runs,
    perfect_information_spec,
    resolve_period,
    settings_snapshot,
    supports_forecast_source,
    write_json,
)
from backtest.strategy import resolve_strategy
from settings import load_settings


def tiny_dispatch(first: datetime, count: int, missing: tuple[int, ...] = ()) -> DispatchPrices:
    intervals = np.arange(np.datetime64(first, "s"), np.datetime64(first, "s") + 300 * count, 300)
    price = np.full((1, count, 2), 50.0)
    for position in missing:
        price[0, position, 0] = np.nan
    return DispatchPrices(intervals=intervals.astype("datetime64[s]"), regions=("SA1",),
                          products=("ENERGY", "RAISEREG"), price=price)


FIRST = datetime(2021, 1, 15, 4, 5)


def test_the_default_period_is_the_whole_file() -> None:
    period = resolve_period(tiny_dispatch(FIRST, 288), "SA1")
    assert period == Period(datetime(2021, 1, 15, 4, 0), datetime(2021, 1, 16, 4, 0))
    assert (period.intervals, period.first_interval, period.last_interval) == (288, FIRST, datetime(2021, 1, 16, 4))
    # The decision bidding the first interval is made 30 s into the interval before it.
    assert period.first_decision(30) == datetime(2021, 1, 15, 3, 55, 30)


def test_start_end_and_days_combine() -> None:
    dispatch = tiny_dispatch(FIRST, 288)
    assert resolve_period(dispatch, "SA1", start=datetime(2021, 1, 15, 12), days=0.25).end == datetime(2021, 1, 15, 18)
    assert resolve_period(dispatch, "SA1", end=datetime(2021, 1, 15, 12), days=0.25).start == datetime(2021, 1, 15, 6)
    assert resolve_period(dispatch, "SA1", start=datetime(2021, 1, 16)).end == datetime(2021, 1, 16, 4)
    with pytest.raises(RunError, match="at most two"):
        resolve_period(dispatch, "SA1", start=datetime(2021, 1, 15, 12), end=datetime(2021, 1, 15, 13), days=1)
    with pytest.raises(RunError, match="not on the 5-minute grid"):
        resolve_period(dispatch, "SA1", start=datetime(2021, 1, 15, 12, 2))
    with pytest.raises(RunError, match="has no 5-minute interval"):
        resolve_period(dispatch, "SA1", start=datetime(2021, 1, 15, 12), end=datetime(2021, 1, 15, 12))
    with pytest.raises(RunError, match="unknown region 'VIC1'"):
        resolve_period(dispatch, "VIC1")


def test_periods_without_prices_are_refused_with_what_the_data_covers() -> None:
    dispatch = tiny_dispatch(FIRST, 288, missing=(10,))
    with pytest.raises(RunError, match=r"no SA1 dispatch prices in the period 2020-01-01 00:00 .. 2020-01-02 00:00"):
        resolve_period(dispatch, "SA1", start=datetime(2020, 1, 1), days=1)
    # A gap inside the data is no error: the run makes no decision there.
    period = resolve_period(dispatch, "SA1")
    assert period.intervals == 288 and intervals_with_prices(dispatch, "SA1", period) == 287
    # A period reaching past the data (or past what the source holds) is refused.
    with pytest.raises(RunError, match=r"2 of the 289 intervals .* \(first: ending 2021-01-16 04:05\); the data "
                                       r"covers intervals ending 2021-01-15 04:05 .. 2021-01-16 04:00"):
        resolve_period(dispatch, "SA1", end=datetime(2021, 1, 16, 4, 5))
    with pytest.raises(RunError, match=r"first: ending 2021-01-15 04:05\); the data covers intervals ending "
                                       r"2021-01-15 04:10"):
        resolve_period(dispatch, "SA1", held=(datetime(2021, 1, 15, 4, 10), datetime(2021, 1, 16, 4)))


def test_data_files_from_folders_and_files(tmp_path: Path) -> None:
    for name in ("PUBLIC_DISPATCHPRICE_1.parquet", "PUBLIC_DISPATCHPRICE_1.csv", "PUBLIC_PREDISPATCHPRICE_1.csv",
                 "notes.txt"):
        (tmp_path / name).write_text("x")
    found = data_files([tmp_path])
    assert [p.name for p in found["DISPATCHPRICE"]] == ["PUBLIC_DISPATCHPRICE_1.parquet"]
    assert [p.name for p in found["PREDISPATCHPRICE"]] == ["PUBLIC_PREDISPATCHPRICE_1.csv"]
    listed = data_files([tmp_path / "PUBLIC_DISPATCHPRICE_1.csv", tmp_path / "PUBLIC_PREDISPATCHPRICE_1.csv"])
    assert [p.name for p in listed["DISPATCHPRICE"]] == ["PUBLIC_DISPATCHPRICE_1.csv"]
    with pytest.raises(RunError, match="cannot tell which MMS table"):
        data_files([tmp_path / "notes.txt"])
    assert data_files([tmp_path / "PUBLIC_DISPATCHPRICE_1.csv"])["PREDISPATCHPRICE"] == []  # optional
    with pytest.raises(RunError, match="no DISPATCHPRICE file"):
        data_files([tmp_path / "PUBLIC_PREDISPATCHPRICE_1.csv"])


def spec(**changes: object) -> RunSpec:
    settings = load_settings(environ={})
    fields: dict[str, object] = {
        "region": "SA1", "period": Period(datetime(2021, 1, 15, 4), datetime(2021, 1, 15, 6)),
        "strategy": resolve_strategy(settings, assignments=["horizon_intervals=48"]),
        "files": (DataFile(Path("/d/PUBLIC_DISPATCHPRICE.parquet"), "DISPATCHPRICE", "a" * 64, 10),),
        "sources": (Path("/d"),), "code_version": "git v1", "settings": {"battery": {"power_mw": 150.0}},
    }
    fields.update(changes)
    return RunSpec(**fields)  # type: ignore[arg-type]


def test_run_ids_follow_every_input_but_not_paths() -> None:
    base = spec()
    assert base.run_id.startswith("SA1-20210115T0400-24-")
    assert spec().run_id == base.run_id
    moved = (DataFile(Path("/elsewhere/x.parquet"), "DISPATCHPRICE", "a" * 64, 10),)
    assert spec(files=moved, sources=(Path("/elsewhere"),)).run_id == base.run_id
    changed = [spec(code_version="git v2"), spec(settings={"battery": {"power_mw": 100.0}}),
               spec(files=(DataFile(Path("/d/x"), "DISPATCHPRICE", "b" * 64, 10),)),
               spec(strategy=base.strategy.with_parameter("horizon_intervals", 36)),
               spec(period=Period(datetime(2021, 1, 15, 4), datetime(2021, 1, 15, 7)))]
    assert len({s.run_id for s in changed} | {base.run_id}) == len(changed) + 1
    command = base.command()
    assert command.startswith("vpp backtest run --data /d --region SA1 --start 2021-01-15T04:00 --end "
                              "2021-01-15T06:00 --forecaster sarx-quantile@6")
    assert "--param horizon_intervals=48" in command


@pytest.mark.skipif(not supports_forecast_source(), reason="the engine has no forecast_source yet")
def test_the_perfect_information_twin_differs_only_in_its_forecast_source() -> None:
    base = spec()
    twin = perfect_information_spec(base)
    assert twin.forecast_source == "actual" and base.forecast_source == "model"
    assert twin.run_id != base.run_id
    assert twin.strategy.parameter_map == {**base.strategy.parameter_map, "forecast_source": "actual"}


def test_finding_runs(tmp_path: Path) -> None:
    for run_id, finished in (("SA1-20210115T0400-24-aaaaaaaaaa", "2021-02-02"),
                             ("SA1-20210115T0400-24-aabbbbbbbb", "2021-02-01")):
        (tmp_path / run_id).mkdir()
        write_json(tmp_path / run_id / "summary.json", {"run_id": run_id, "value": float("nan")})
        write_json(tmp_path / run_id / "timing.json", {"finished_at_utc": finished})
    (tmp_path / "not-a-run").mkdir()
    assert [r.run_id[-2:] for r in list_runs(tmp_path)] == ["bb", "aa"]
    assert find_run(tmp_path, "aab").run_id.endswith("bbbbbbbb")
    assert find_run(tmp_path, "SA1-20210115T0400-24-aaaa").run_id.endswith("aaaaaaaaaa")
    assert find_run(tmp_path, str(tmp_path / "SA1-20210115T0400-24-aaaaaaaaaa")).summary["value"] is None
    with pytest.raises(RunError, match="ambiguous"):
        find_run(tmp_path, "SA1-")
    with pytest.raises(RunError, match="no run 'zzz'"):
        find_run(tmp_path, "zzz")
    with pytest.raises(RunError, match="no run 'not-a-run'"):
        find_run(tmp_path, "not-a-run")
    assert json.loads((tmp_path / "SA1-20210115T0400-24-aaaaaaaaaa" / "summary.json").read_text())["value"] is None
    assert list_runs(tmp_path / "missing") == []


def test_code_version_falls_back_to_the_package_version(tmp_path: Path) -> None:
    assert code_version(tmp_path).startswith("openvpp ")
    assert code_version().startswith(("git ", "openvpp "))


def test_inputs_from_several_files_of_one_table(tmp_path: Path) -> None:
    import pandas as pd

    from backtest.runs import file_sha256, load_inputs
    from tests.backtest_fixtures import DISPATCH_NAME, PREDISPATCH_NAME, write_tiny_market

    folder = write_tiny_market(tmp_path / "mms", start=datetime(2021, 1, 14, 4), end=datetime(2021, 1, 15, 4))
    frame = pd.read_parquet(folder / DISPATCH_NAME)
    half = len(frame) // 2
    first, second = tmp_path / "a_DISPATCHPRICE_1.parquet", tmp_path / "b_DISPATCHPRICE_2.parquet"
    frame.iloc[:half].to_parquet(first, index=False)
    frame.iloc[half:].to_parquet(second, index=False)
    inputs = load_inputs([first, second, folder / PREDISPATCH_NAME])
    assert len(inputs.dispatch.intervals) == len(frame) == 288
    assert [(f.path.name, f.table) for f in inputs.files] == [
        (first.name, "DISPATCHPRICE"), (second.name, "DISPATCHPRICE"), (PREDISPATCH_NAME, "PREDISPATCHPRICE")]
    assert inputs.files[0].sha256 == file_sha256(first)
    whole = load_inputs([folder])
    assert np.array_equal(whole.dispatch.price, inputs.dispatch.price, equal_nan=True)


def test_price_limits_come_from_the_data_where_given_and_an_uncovered_year_stops_the_start(tmp_path: Path) -> None:
    import shutil
    from dataclasses import replace

    from backtest.runs import load_inputs, require_price_limits, with_data_price_limits
    from settings import PriceLimitsUnknownError
    from tests.aemo_fixtures import archive_zip
    from tests.backtest_fixtures import write_tiny_market

    folder = write_tiny_market(tmp_path / "mms", start=datetime(2021, 1, 14, 4), end=datetime(2021, 1, 15, 4))
    settings = load_settings(environ={})
    plain = load_inputs([folder])
    assert plain.price_thresholds is None
    assert with_data_price_limits(settings, plain).market == settings.market
    period = resolve_period(plain.dispatch, "SA1")
    require_price_limits(settings, period)  # FY2020-21 is configured
    only_2025 = replace(settings, market=replace(settings.market, price_caps=settings.market.price_caps[-1:]))
    with pytest.raises(PriceLimitsUnknownError, match=r"trading day 2021-01-14 \(FY2020-21\)"):
        require_price_limits(only_2025, period)
    shutil.copy(archive_zip("2021_05", "MARKET_PRICE_THRESHOLDS"), folder)
    with_aemo = load_inputs([folder])
    assert with_aemo.price_thresholds is not None
    assert [f.table for f in with_aemo.files][-1] == "MARKET_PRICE_THRESHOLDS"  # hashed: part of the run id
    covered = with_data_price_limits(only_2025, with_aemo)
    require_price_limits(covered, period)  # AEMO's 2020-07-01 row covers FY2020-21
    assert covered.market.price_cap_for(period.first_interval.date()).source == "MARKET_PRICE_THRESHOLDS"


def test_settings_with_an_infinite_price_threshold_hash_and_stay_standard_json() -> None:
    """AEMO's price thresholds of before 2002 have no cumulative price threshold (an infinite one); the
    settings snapshot still hashes and is standard JSON, and an infinite threshold hashes apart from a finite."""
    settings = load_settings()
    first = settings.market.price_caps[0]
    unlimited = dataclasses.replace(first, cumulative_price_threshold=math.inf)
    with_inf = dataclasses.replace(settings, market=dataclasses.replace(
        settings.market, price_caps=(unlimited, *settings.market.price_caps[1:])))
    snapshot = settings_snapshot(with_inf)
    text = canonical_json(snapshot)  # raised ValueError on the non-finite float before
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert snapshot["market"]["price_caps"][0]["cumulative_price_threshold"] == "inf"
    assert text != canonical_json(settings_snapshot(settings))


@pytest.mark.parametrize("change", [{"plan_with_expected_depth": False}, {"planning_cap_factor": 1.0},
                                    {"fcas_enablement_share": 0.25}])
def test_market_depth_settings_are_part_of_the_snapshot(change: dict[str, object]) -> None:
    """``[market_depth]`` decides a backtest's plans and its depth-limited figures, so a run made with other
    market-depth settings has another settings hash (and run id) and its summary says which it used."""
    settings = load_settings()
    changed = dataclasses.replace(settings, market_depth=dataclasses.replace(settings.market_depth, **change))
    snapshot = settings_snapshot(changed)
    name, value = next(iter(change.items()))
    assert snapshot["market_depth"][name] == value
    assert canonical_json(snapshot) != canonical_json(settings_snapshot(settings))
