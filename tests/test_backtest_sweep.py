"""Backtest sweeps without the stack: the grid and its run ids, a run as a pool task (data by sha256, one
home with ``vpp backtest run``, idempotent by run id), the pool runtime's answer to a refused run, and the
sweep's report in the runs folder."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from activities.sweep_facts import RUN_FAILED, RUN_FINISHED, SweepReportInput, SweepRunOutcome
from archive.store import LocalArchive
from backtest.compare import SweepRow, csv_table, markdown_table, sweep_table
from backtest.pool_task import (
    RESULT_LABEL,
    BacktestRunRefusedError,
    backtest_registry,
    run_backtest_task,
    run_index,
    run_request,
)
from backtest.runs import execute_run, load_inputs, make_spec, resolve_period, with_data_price_limits
from backtest.strategy import resolve_strategy
from backtest.sweep import SweepError, build_grid, expand_grid, month_period, parameter_values, sweep_id
from backtest.sweep_report import restore_run, sweep_folder, write_sweep_report
from pools.runtime import IdempotencyCache, Outcome, process_message
from pools.sqs import encode_message, queue_names, queue_policy
from settings import Settings, load_settings
from vpp.v1 import worker_pb2

START = datetime(2021, 1, 15, 4, 0)
END = datetime(2021, 1, 15, 6, 0)  # 24 decisions
FAST = ["horizon_intervals=24", "history_intervals=576"]


@pytest.fixture(scope="module")
def base_settings() -> Settings:
    return load_settings(environ={})


@pytest.fixture
def data_copy(tmp_path: Path, base_settings: Settings) -> Path:
    """The January 2021 MMS files in a folder of the test's own (so a test may change them)."""
    folder = tmp_path / "data"
    shutil.copytree(base_settings.market_data.data_dir, folder)
    return folder


def small_grid(settings: Settings, data: Path, params: list[str]) -> list:  # type: ignore[type-arg]
    grid = build_grid(regions=["SA1", "VIC1"], start=START, end=END, params=params, data=[data],
                      default_region="SA1", default_data=data)
    inputs = load_inputs([data])
    return expand_grid(grid, with_data_price_limits(settings, inputs), inputs)


# -- the grid ------------------------------------------------------------------------------------------


def test_parameter_values_are_the_items_of_a_toml_array() -> None:
    assert parameter_values("horizon_intervals=48,96") == ("horizon_intervals", ("48", "96"))
    assert parameter_values("forecast_quantiles=[0.1,0.5,0.9],[0.05,0.5,0.95]") == (
        "forecast_quantiles", ("[0.1, 0.5, 0.9]", "[0.05, 0.5, 0.95]"))
    assert parameter_values("forecast_source=model,actual") == ("forecast_source", ('"model"', '"actual"'))
    with pytest.raises(SweepError, match="given twice"):
        parameter_values("horizon_intervals=48,48")
    with pytest.raises(SweepError, match="KEY=V1"):
        parameter_values("horizon_intervals")


def test_a_month_is_the_intervals_ending_in_it() -> None:
    december = month_period("2020-12")
    assert (december.start, december.end) == (datetime(2020, 12, 1), datetime(2021, 1, 1))
    with pytest.raises(SweepError, match="YYYY-MM"):
        month_period("2021-13")


def test_a_grid_needs_one_kind_of_period() -> None:
    kwargs = {"default_region": "SA1", "default_data": Path("data/nem")}
    with pytest.raises(SweepError, match="no period"):
        build_grid(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(SweepError, match="not both"):
        build_grid(months=["2021-01"], start=START, end=END, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(SweepError, match="both --start and --end"):
        build_grid(start=START, **kwargs)  # type: ignore[arg-type]


def test_a_grid_file_gives_the_axes_and_flags_replace_them(tmp_path: Path) -> None:
    from backtest.sweep import read_grid_file

    path = tmp_path / "grid.toml"
    path.write_text('regions = ["SA1", "QLD1"]\nmonths = ["2021-01"]\n[strategy]\nforecaster = "sarx-quantile@1"\n'
                    "[parameters]\nhorizon_intervals = [48, 96]\nforecast_quantiles = [0.1, 0.5, 0.9]\n")
    grid = build_grid(file=read_grid_file(path), default_region="SA1", default_data=Path("data/nem"))
    assert grid.regions == ("SA1", "QLD1") and [p.label for p in grid.periods] == ["2021-01"]
    assert dict(grid.parameters) == {"horizon_intervals": ("48", "96"), "forecast_quantiles": ("[0.1, 0.5, 0.9]",)}
    assert grid.forecaster == "sarx-quantile@1" and grid.size == 4
    flagged = build_grid(file=read_grid_file(path), regions=["VIC1"], params=["horizon_intervals=24"],
                         default_region="SA1", default_data=Path("data/nem"))
    assert flagged.regions == ("VIC1",) and dict(flagged.parameters)["horizon_intervals"] == ("24",)
    path.write_text('region = "SA1"\n')
    with pytest.raises(SweepError, match="unknown key 'region'"):
        read_grid_file(path)


def test_the_grid_expands_into_the_runs_backtest_run_would_make(base_settings: Settings) -> None:
    data = base_settings.market_data.data_dir
    runs = small_grid(base_settings, data, ["horizon_intervals=24,48", "history_intervals=576"])
    assert [(r.region, r.assignments[-1]) for r in runs] == [
        ("SA1", "horizon_intervals=24"), ("VIC1", "horizon_intervals=24"),
        ("SA1", "horizon_intervals=48"), ("VIC1", "horizon_intervals=48")]
    inputs = load_inputs([data])
    settings = with_data_price_limits(base_settings, inputs)
    for run in runs:
        strategy = resolve_strategy(settings, assignments=list(run.assignments))
        alone = make_spec(settings, inputs, run.region, resolve_period(inputs.dispatch, run.region, start=START,
                                                                      end=END), strategy)
        assert run.spec.run_id == alone.run_id
    ids = [r.spec.run_id for r in runs]
    assert len(set(ids)) == 4
    assert sweep_id(ids) == sweep_id(list(reversed(ids))) != sweep_id(ids[:3])


def test_a_grid_refuses_what_cannot_run(base_settings: Settings) -> None:
    from backtest.runs import RunError
    from backtest.strategy import StrategyError

    data = base_settings.market_data.data_dir
    with pytest.raises(StrategyError, match="unknown parameter"):
        small_grid(base_settings, data, ["horizon_minutes=24"])
    grid = build_grid(regions=["XX1"], start=START, end=END, data=[data], default_region="SA1", default_data=data)
    inputs = load_inputs([data])
    with pytest.raises(RunError, match="unknown region"):
        expand_grid(grid, base_settings, inputs)


# -- a run as a pool task ------------------------------------------------------------------------------


def test_a_pool_task_makes_the_run_backtest_run_makes_once(base_settings: Settings, data_copy: Path,
                                                         tmp_path: Path) -> None:
    run = small_grid(base_settings, data_copy, FAST)[0]
    archive = LocalArchive(tmp_path / "archive")
    request = run_request(run.spec, request_id="sweep-x/backtest/" + run.spec.run_id)
    result = run_backtest_task(request, settings=base_settings, archive=archive)

    inputs = load_inputs([data_copy])
    alone = execute_run(with_data_price_limits(base_settings, inputs), inputs, run.spec, workers=1)
    assert result.run_id == run.spec.run_id and result.status == worker_pb2.RESULT_STATUS_OK
    assert result.total_revenue_dollars == alone.summary["results"]["total_revenue_dollars"]
    assert result.decisions == 24 and result.safe_fallbacks == alone.summary["results"]["safe_fallbacks"]
    _, folder = restore_run(archive, archive.list_cycle(run_index(run.spec.run_id))[-1].key, tmp_path / "runs")
    assert json.loads((folder / "summary.json").read_text()) == json.loads(json.dumps(alone.summary))

    # Finished: answered from the archive, not recomputed — even with its data gone.
    shutil.rmtree(data_copy)
    again = run_backtest_task(request, settings=base_settings, archive=archive)
    assert again == result
    assert [e.label for e in archive.list_cycle(run_index(run.spec.run_id))].count(RESULT_LABEL) == 1


def test_a_worker_refuses_data_whose_sha256_differs(base_settings: Settings, data_copy: Path,
                                                   tmp_path: Path) -> None:
    run = small_grid(base_settings, data_copy, FAST)[0]
    request = run_request(run.spec, request_id="r")
    dispatch = next(data_copy.glob("*DISPATCHPRICE*"))
    dispatch.write_bytes(dispatch.read_bytes() + b"\0")
    with pytest.raises(BacktestRunRefusedError, match=r"has sha256 .*the sweep expects"):
        run_backtest_task(request, settings=base_settings, archive=LocalArchive(tmp_path / "archive"))


def test_a_worker_refuses_a_run_its_settings_would_make_under_another_id(base_settings: Settings, data_copy: Path,
                                                                        tmp_path: Path) -> None:
    run = small_grid(base_settings, data_copy, FAST)[0]
    other = replace(base_settings, battery=replace(base_settings.battery, power_mw=100.0))
    with pytest.raises(BacktestRunRefusedError, match="code or settings differ"):
        run_backtest_task(run_request(run.spec, request_id="r"), settings=other,
                          archive=LocalArchive(tmp_path / "archive"))


def test_the_pool_dead_letters_a_refused_run_with_its_reason(base_settings: Settings, data_copy: Path,
                                                            tmp_path: Path) -> None:
    run = small_grid(base_settings, data_copy, FAST)[0]
    task = worker_pb2.WorkerTask(task_id="t1", backtest=run_request(run.spec, request_id="t1"))
    task.reply_to.workflow_id, task.reply_to.activity_id = "sweep-x", "run-1"
    next(data_copy.glob("*PREDISPATCHPRICE*")).write_bytes(b"changed")
    registry = backtest_registry(base_settings, LocalArchive(tmp_path / "archive"))
    disposition = process_message({"Body": encode_message(task), "ReceiptHandle": "h"}, registry=registry,
                                  max_receive_count=3, completed=IdempotencyCache())
    assert disposition.outcome is Outcome.INVALID_REQUEST and disposition.dead_letter is not None
    assert disposition.reply is not None and "the sweep expects" in disposition.reply.error.message


def test_the_backtest_queue_has_its_own_name_and_policy(base_settings: Settings) -> None:
    names = queue_names("openvpp", base_settings.pools.backtest_queue)
    assert names["backtest_requests"] == "openvpp-backtest-requests"
    pools = replace(base_settings.pools, backtest_visibility_timeout_s=900, backtest_max_receive_count=5)
    policy = queue_policy(replace(base_settings, pools=pools), "backtest")
    assert (policy.visibility_timeout_s, policy.max_receive_count) == (900, 5)
    cycle = queue_policy(base_settings, "forecast")
    assert cycle.visibility_timeout_s == base_settings.stack.visibility_timeout_s


# -- the report ----------------------------------------------------------------------------------------


def test_the_sweep_table_keeps_failed_runs_with_their_reason() -> None:
    results = {"total_revenue_dollars": 1234.4, "energy_revenue_dollars": 1000.0, "fcas_revenue_dollars": 234.4,
               "perfect_foresight": {"energy_fcas_dollars": 2000.0}, "capture_total": 0.6172,
               "capture_energy": 0.5, "failed_decisions": 0, "safe_fallbacks": 2}
    table = sweep_table([SweepRow("SA1 a", "SA1-1", RUN_FINISHED, results, 3.21),
                         SweepRow("VIC1 a", "VIC1-1", RUN_FAILED, None, reason="data | changed")])
    assert table.rows[0][3:8] == ("1,234", "1,000", "234", "2,000", "61.7%")
    assert table.rows[1][2] == RUN_FAILED and table.rows[1][-1] == "data | changed"
    assert "data \\| changed" in markdown_table(table)
    assert csv_table(table).splitlines()[2].endswith("data | changed")


def test_the_report_restores_each_run_folder_and_writes_the_comparison(base_settings: Settings, data_copy: Path,
                                                                       tmp_path: Path) -> None:
    runs = small_grid(base_settings, data_copy, ["horizon_intervals=24,48", "history_intervals=576"])
    archive = LocalArchive(tmp_path / "archive")
    outcomes = []
    for run in runs[:2]:
        result = run_backtest_task(run_request(run.spec, request_id=run.spec.run_id), settings=base_settings,
                                   archive=archive)
        key = next(e.key for e in archive.list_cycle(run_index(result.run_id)) if e.label == RESULT_LABEL)
        outcomes.append(SweepRunOutcome(run.spec.run_id, run.label, RUN_FINISHED, result_key=key,
                                        wall_time_s=result.wall_time_s))
    outcomes.append(SweepRunOutcome(runs[2].spec.run_id, runs[2].label, RUN_FAILED, reason="refused: no data"))
    out = tmp_path / "runs"
    report = write_sweep_report(archive, SweepReportInput("sweep-t", str(out), tuple(outcomes),
                                                          "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:00+00:00"))
    folder = sweep_folder(out, "sweep-t")
    assert Path(report.folder) == folder
    assert {p.name for p in folder.iterdir()} == {"table.csv", "table.md", "report.html", "cumulative_revenue.png",
                                                  "sweep.json"}
    for run in runs[:2]:
        assert {"summary.json", "ledger.parquet", "timing.json"} <= {p.name for p in (out / run.spec.run_id).iterdir()}
    record = json.loads((folder / "sweep.json").read_text())
    assert (record["finished"], record["failed"], record["decisions"]) == (2, 1, 48)
    assert record["runs_per_hour"] == pytest.approx(120.0)
    assert "refused: no data" in report.table_markdown and runs[2].spec.run_id in report.table_markdown


def test_the_result_relay_answers_a_backtest_run_with_its_archive_key() -> None:
    from pools.result_relay import answer_for_reply, archive_label

    reply = worker_pb2.WorkerReply(task_id="sweep-x/backtest/SA1-1")
    reply.reply_to.workflow_id, reply.reply_to.activity_id = "sweep-x", "run-SA1-1"
    reply.backtest.run_id, reply.backtest.status, reply.backtest.wall_time_s = "SA1-1", worker_pb2.RESULT_STATUS_OK, 2.5
    assert archive_label(reply) == "backtest-result/SA1-1"
    answer = answer_for_reply(reply, "sha256:" + "0" * 64)
    assert (answer.kind, answer.status, answer.compute_ms) == ("backtest", "OK", 2500.0)
