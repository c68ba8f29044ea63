"""The backtest engine: the real bidding path replayed in-process over January 2021 (SA1)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from aemo.mms import load_market_data
from algorithms.common.nem_time import from_timestamp
from algorithms.common.replay_clock import cycle_timeline
from algorithms.market.operator_controls import ControlTimeline, ManualRebid, OperatorRequestError, Pause, SocHold
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from backtest import engine
from backtest.engine import (
    FORECAST_SKILL_LEADS,
    BacktestConfig,
    BacktestError,
    BacktestResult,
    DecisionRecord,
    market_prices,
    perfect_foresight_revenue,
    run_backtest,
    run_backtests,
    workers_per_region,
)
from settings import Settings, load_settings
from vpp.v1 import market_data_pb2

FIRST_DECISION = datetime(2021, 1, 15, 17, 0, 30)
DECISIONS = 6
STEP = timedelta(minutes=5)
# A short horizon and history keep each decision fast.
HORIZON_INTERVALS = 48
HISTORY_INTERVALS = 576

Tables = tuple[DispatchPrices, PredispatchPrices]


@pytest.fixture(scope="module")
def bench_settings() -> Settings:
    return load_settings(environ={})


@pytest.fixture(scope="module")
def tables(bench_settings: Settings) -> tuple[DispatchPrices, PredispatchPrices]:
    return load_market_data(bench_settings.market_data.data_dir)


@pytest.fixture(scope="module")
def config() -> BacktestConfig:
    return _small("SA1", FIRST_DECISION, DECISIONS)


@pytest.fixture(scope="module")
def seen() -> list[tuple[datetime, market_data_pb2.MarketSnapshot]]:
    return []


@pytest.fixture(scope="module")
def result(bench_settings: Settings, tables: Tables, config: BacktestConfig,
           seen: list[tuple[datetime, market_data_pb2.MarketSnapshot]]) -> BacktestResult:
    progress: list[tuple[int, int]] = []
    outcome = run_backtest(bench_settings, *tables, config,
                           progress=lambda done, total: progress.append((done, total)),
                           inspect=lambda as_of, snapshot: seen.append((as_of, snapshot)))
    assert progress == [(k, DECISIONS) for k in range(1, DECISIONS + 1)]
    return outcome


def _small(region: str, first_decision: datetime, decisions: int) -> BacktestConfig:
    return BacktestConfig(region=region, first_decision=first_decision, decisions=decisions,
                          horizon_intervals=HORIZON_INTERVALS, history_intervals=HISTORY_INTERVALS)


def _max_known_at(snapshot: market_data_pb2.MarketSnapshot) -> datetime:
    latest_ms = max([max(h.known_at_unix_ms) for h in snapshot.history if len(h.known_at_unix_ms)]
                    + [p.known_at_unix_ms for p in snapshot.predispatch])
    return datetime(1970, 1, 1) + timedelta(hours=10, milliseconds=latest_ms)


def test_decisions_bid_consecutive_intervals(result: BacktestResult, bench_settings: Settings) -> None:
    cycle = bench_settings.cycle
    first = cycle_timeline(FIRST_DECISION, market_data_cutoff_s=cycle.market_data_cutoff_s,
                           gate_closure_margin_s=cycle.gate_closure_margin_s).dispatch_interval
    assert first == datetime(2021, 1, 15, 17, 10)
    assert [r.decision_time for r in result.records] == [FIRST_DECISION + STEP * k for k in range(DECISIONS)]
    assert [r.dispatch_interval for r in result.records] == [first + STEP * k for k in range(DECISIONS)]
    assert all(r.failure is None and r.plan_status == "OPTIMAL" and r.bid_in_force for r in result.records)
    assert all(r.forecast_energy_p50 is not None and math.isfinite(r.forecast_energy_p50)
               for r in result.records)


def test_state_of_charge_stays_within_limits_and_follows_the_clearing(
        result: BacktestResult, bench_settings: Settings, tables: Tables) -> None:
    battery = bench_settings.battery
    hours = 5 / 60
    market = market_prices(bench_settings, tables[0])
    soc = result.initial_state_of_charge_mwh
    assert soc == pytest.approx(battery.energy_mwh * battery.initial_soc_fraction)
    for record in result.records:
        expected = soc + battery.charge_efficiency * record.load_mw * hours - record.gen_mw * hours / (
            battery.discharge_efficiency)
        assert record.state_of_charge_mwh == pytest.approx(expected, abs=1e-9)
        assert battery.energy_mwh * battery.soc_min_fraction - 1e-9 <= record.state_of_charge_mwh
        assert record.state_of_charge_mwh <= battery.energy_mwh * battery.soc_max_fraction + 1e-9
        assert 0 <= record.gen_mw <= battery.power_mw and 0 <= record.load_mw <= battery.power_mw
        assert record.gen_mw == 0 or record.load_mw == 0
        prices = market.prices_at("SA1", record.dispatch_interval)
        assert record.rrp == prices["ENERGY"]
        assert record.energy_revenue_dollars == pytest.approx(record.rrp * record.net_mw * hours, abs=1e-9)
        for product, enabled in record.fcas_enabled_by_product_mw.items():
            assert record.fcas_revenue_by_product_dollars[product] == pytest.approx(
                enabled * prices[product] * hours, abs=1e-9)
        soc = record.state_of_charge_mwh
    assert result.final_state_of_charge_mwh == soc
    assert any(r.gen_mw > 0 or r.load_mw > 0 or r.fcas_enabled_mw > 0 for r in result.records)


def test_totals_are_the_sums_of_the_records(result: BacktestResult, bench_settings: Settings) -> None:
    records = result.records
    assert result.energy_revenue_dollars == pytest.approx(sum(r.energy_revenue_dollars for r in records))
    assert result.fcas_revenue_dollars == pytest.approx(sum(r.fcas_revenue_dollars for r in records))
    assert result.total_revenue_dollars == pytest.approx(sum(r.total_revenue_dollars for r in records))
    assert set(result.fcas_revenue_by_product_dollars) == set(result.fcas_products)
    assert "ENERGY" not in result.fcas_products and len(result.fcas_products) == 8
    for product, dollars in result.fcas_revenue_by_product_dollars.items():
        assert dollars == pytest.approx(sum(r.fcas_revenue_by_product_dollars[product] for r in records))
    assert result.throughput_mwh == pytest.approx(sum((r.gen_mw + r.load_mw) * 5 / 60 for r in records))
    discharged_mwh = sum(r.gen_mw * 5 / 60 for r in records)
    assert result.cycles == pytest.approx(discharged_mwh / bench_settings.battery.energy_mwh)
    assert result.safe_fallbacks == sum(r.safe_fallback for r in records)
    assert result.rebids == sum(r.rebid for r in records)
    assert result.validation_rejections == 0 and result.failed_decisions == 0
    assert result.wall_time_s > 0


def test_same_inputs_give_identical_results(result: BacktestResult, bench_settings: Settings,
                                            tables: Tables,
                                            config: BacktestConfig) -> None:
    again = run_backtest(bench_settings, *tables, config)
    assert again == result
    assert [r.state_of_charge_mwh for r in again.records] == [r.state_of_charge_mwh for r in result.records]


def test_no_decision_sees_data_published_after_its_decision_time(
        result: BacktestResult, seen: list[tuple[datetime, market_data_pb2.MarketSnapshot]]) -> None:
    assert len(seen) == DECISIONS
    for record, (as_of, snapshot) in zip(result.records, seen, strict=True):
        assert as_of == record.as_of == record.decision_time
        assert from_timestamp(snapshot.as_of) == as_of
        assert record.data_known_at == _max_known_at(snapshot)
        assert record.data_known_at is not None and record.data_known_at <= as_of
        assert record.latest_quality == "ON_TIME"


def test_a_missing_latest_interval_is_waited_for_then_estimated(
        bench_settings: Settings, tables: Tables) -> None:
    gap = datetime(2021, 1, 15, 17, 0)  # the latest interval at the first decision, 17:00:30
    gapped = replace(bench_settings,
                     market_data=replace(bench_settings.market_data, missing_intervals=(gap,)))
    seen: list[tuple[datetime, market_data_pb2.MarketSnapshot]] = []
    config = _small("SA1", FIRST_DECISION, 2)
    outcome = run_backtest(gapped, *tables, config,
                           inspect=lambda as_of, snapshot: seen.append((as_of, snapshot)))
    first, second = outcome.records
    cutoff = FIRST_DECISION + timedelta(seconds=bench_settings.cycle.market_data_cutoff_s)
    assert first.as_of == cutoff and first.latest_quality == "ESTIMATED"
    assert second.as_of == second.decision_time and second.latest_quality == "ON_TIME"
    for as_of, snapshot in seen:
        assert _max_known_at(snapshot) <= as_of
    assert first.bid_in_force and first.failure is None


def test_perfect_foresight_bounds_the_realised_revenue(
        result: BacktestResult, bench_settings: Settings, tables: Tables) -> None:
    market = market_prices(bench_settings, tables[0])
    args = (bench_settings, market, "SA1", result.first_interval, len(result.records))
    # Same start and end energy as the realised run: the realised dispatch is feasible for the benchmark.
    energy, fcas = perfect_foresight_revenue(*args, include_fcas=True,
                                             terminal_state_of_charge_mwh=result.final_state_of_charge_mwh)
    assert energy + fcas >= result.total_revenue_dollars - 1e-6
    energy_only, no_fcas = perfect_foresight_revenue(
        *args, include_fcas=False, terminal_state_of_charge_mwh=result.final_state_of_charge_mwh)
    assert no_fcas == 0.0
    assert energy_only <= energy + fcas + 1e-6
    standard = perfect_foresight_revenue(*args, include_fcas=True)
    assert all(math.isfinite(value) for value in standard)


def test_bids_failing_validation_leave_the_unit_idle(
        bench_settings: Settings, tables: Tables) -> None:
    # A market that takes no rebid explanation: every bid of the day is a REBID, truncated to nothing (V5).
    broken = replace(bench_settings, market=replace(bench_settings.market, rebid_explanation_max_chars=0))
    config = _small("SA1", FIRST_DECISION, 2)
    outcome = run_backtest(broken, *tables, config)
    assert outcome.validation_rejections == 4  # plan and safe bid, both decisions
    for record in outcome.records:
        assert not record.rebid and not record.bid_in_force and record.safe_fallback
        assert any(v.startswith("plan bid V5") for v in record.violations)
        assert any(v.startswith("safe bid V5") for v in record.violations)
        assert record.gen_mw == record.load_mw == record.fcas_enabled_mw == 0.0
        assert record.state_of_charge_mwh == outcome.initial_state_of_charge_mwh
    assert outcome.total_revenue_dollars == 0.0


def test_bad_configuration_is_refused_with_a_reason(
        bench_settings: Settings, tables: Tables) -> None:
    with pytest.raises(BacktestError, match=r"unknown region 'XX1'.*SA1"):
        run_backtest(bench_settings, *tables, BacktestConfig(region="XX1", first_decision=FIRST_DECISION,
                                                             decisions=1))
    after = datetime(2021, 2, 1, 0, 0, 30)  # bids 2021-02-01 00:10, 00:15: past the data
    with pytest.raises(BacktestError, match="none of the 2 dispatch intervals from 2021-02-01 00:10 is in the "
                                            "dispatch data"):
        run_backtest(bench_settings, *tables, _small("SA1", after, 2))
    with pytest.raises(BacktestError, match="decisions must be at least 1"):
        BacktestConfig(region="SA1", first_decision=FIRST_DECISION, decisions=0)
    with pytest.raises(BacktestError, match="naive AEST"):
        BacktestConfig(region="SA1", first_decision=datetime(2021, 1, 15, tzinfo=UTC), decisions=1)


def test_regions_in_parallel_match_regions_one_by_one(
        bench_settings: Settings, tables: Tables) -> None:
    configs = [_small(region, FIRST_DECISION, 2) for region in ("SA1", "VIC1")]
    finished: list[str] = []
    parallel = run_backtests(bench_settings, *tables, configs, workers=2,
                             on_result=lambda outcome: finished.append(outcome.region))
    assert sorted(finished) == ["SA1", "VIC1"]
    assert [r.region for r in parallel] == ["SA1", "VIC1"]
    for config, outcome in zip(configs, parallel, strict=True):
        assert outcome == run_backtest(bench_settings, *tables, config)
    assert not np.isclose(parallel[0].records[0].rrp, parallel[1].records[0].rrp)


def test_worker_processes_give_identical_results(bench_settings: Settings, tables: Tables) -> None:
    config = _small("SA1", FIRST_DECISION, 8)
    progress: list[tuple[int, int]] = []
    in_process = run_backtest(bench_settings, *tables, config, workers=1)
    pooled = run_backtest(bench_settings, *tables, config, workers=2,
                          progress=lambda done, total: progress.append((done, total)))
    assert (in_process.workers, pooled.workers) == (1, 2)
    assert pooled == in_process
    assert [r.energy_forecast_by_lead for r in pooled.records] == [r.energy_forecast_by_lead
                                                                   for r in in_process.records]
    assert progress == [(k, 8) for k in range(1, 9)]
    assert all(r.wait_ms == 0.0 for r in in_process.records) and pooled.records[0].wait_ms > 0
    assert set(pooled.stage_seconds()) >= {"wait for workers", "snapshot", "forecast", "optimise", "bid"}


def test_energy_forecast_is_kept_at_every_lead_the_horizon_covers(result: BacktestResult) -> None:
    assert result.forecast_leads == tuple(lead for lead in FORECAST_SKILL_LEADS if lead <= HORIZON_INTERVALS)
    assert result.forecast_leads[0] == 1 and result.forecast_leads[-1] == HORIZON_INTERVALS
    levels = result.forecast_quantiles
    assert levels == load_settings(environ={}).cycle.forecast_quantiles and 0.5 in levels
    for record in result.records:
        by_lead = np.array(record.energy_forecast_by_lead)
        assert by_lead.shape == (len(result.forecast_leads), len(levels))
        assert np.isfinite(by_lead).all()
        assert (np.diff(by_lead, axis=1) >= 0).all()  # non-decreasing along the levels
        assert by_lead[0, levels.index(0.5)] == record.forecast_energy_p50
        assert len(set(by_lead[:, 1])) > 1  # the leads are different intervals


def test_perfect_information_forecasts_the_prices_the_market_clears(
        bench_settings: Settings, tables: Tables) -> None:
    dispatch = tables[0]
    market = market_prices(bench_settings, dispatch)
    # The horizon of the last decision runs 3 intervals past the end of the data (2021-02-01 00:00).
    late = datetime(2021, 1, 31, 23, 45, 30)  # bids 23:55 and 00:00
    config = replace(_small("SA1", late, 2), horizon_intervals=6, forecast_source="actual")
    outcome = run_backtest(bench_settings, dispatch, tables[1], config, market=market, workers=1)
    assert outcome.forecast_leads == (1, 3, 6) and outcome.failed_decisions == 0
    last_price = market.prices_at("SA1", datetime(2021, 2, 1))["ENERGY"]
    for record in outcome.records:
        assert record.forecast_energy_p50 == record.rrp
        for lead, prices in zip(outcome.forecast_leads, record.energy_forecast_by_lead, strict=True):
            target = record.dispatch_interval + STEP * (lead - 1)
            actual = market.prices_at("SA1", target)["ENERGY"] if target <= datetime(2021, 2, 1) else last_price
            assert prices == (actual,) * len(outcome.forecast_quantiles)


def test_perfect_information_carries_the_last_price_over_a_gap(
        bench_settings: Settings, tables: Tables) -> None:
    dispatch = tables[0]
    market = market_prices(bench_settings, dispatch)
    config = replace(_small("SA1", FIRST_DECISION, 1), forecast_source="actual")
    first_interval = datetime(2021, 1, 15, 17, 10)
    gap = market.interval_index(first_interval + STEP * 2)  # lead 3
    assert gap is not None
    price = np.array(market.price)
    price[market.region_index("SA1"), gap, market.product_index("ENERGY")] = np.nan
    gapped = DispatchPrices(intervals=market.intervals, regions=market.regions,
                            products=market.products, price=price)
    (record,) = run_backtest(bench_settings, dispatch, tables[1], config, market=gapped, workers=1).records
    leads = dict(zip(FORECAST_SKILL_LEADS, record.energy_forecast_by_lead, strict=False))
    before_gap = market.prices_at("SA1", first_interval + STEP)["ENERGY"]
    assert leads[3] == (before_gap,) * len(record.energy_forecast_by_lead[0])
    assert leads[6][0] == market.prices_at("SA1", first_interval + STEP * 5)["ENERGY"]


def test_perfect_information_goes_through_the_same_bidding_path(
        result: BacktestResult, bench_settings: Settings, tables: Tables, config: BacktestConfig) -> None:
    perfect = run_backtest(bench_settings, *tables, replace(config, forecast_source="actual"), workers=2)
    assert perfect.failed_decisions == 0 and all(r.bid_in_force for r in perfect.records)
    assert [r.dispatch_interval for r in perfect.records] == [r.dispatch_interval for r in result.records]
    assert [r.rrp for r in perfect.records] == [r.rrp for r in result.records]
    assert perfect != result  # other forecasts, other plans
    with pytest.raises(BacktestError, match="forecast_source must be one of model, actual"):
        BacktestConfig(region="SA1", first_decision=FIRST_DECISION, decisions=1,
                       forecast_source="oracle")  # type: ignore[arg-type]


def test_records_built_without_the_newer_fields_still_work() -> None:
    record = DecisionRecord(
        decision_time=FIRST_DECISION, dispatch_interval=datetime(2021, 1, 15, 17, 10), as_of=FIRST_DECISION,
        latest_quality="ON_TIME", data_known_at=None, plan_status="NONE", safe_fallback=False, rebid=False,
        bid_in_force=False, violations=(), failure=None, forecast_energy_p50=None, rrp=50.0, gen_mw=0.0,
        load_mw=0.0, fcas_enabled_mw=0.0, fcas_enabled_by_product_mw={}, energy_revenue_dollars=0.0,
        fcas_revenue_dollars=0.0, fcas_revenue_by_product_dollars={}, state_of_charge_mwh=1.0)
    assert record.energy_forecast_by_lead == () and record.wait_ms == 0.0
    assert BacktestConfig(region="SA1", first_decision=FIRST_DECISION, decisions=1).forecast_source == "model"


def test_workers_are_split_between_regions() -> None:
    assert workers_per_region(1, 5) == (1, 1)
    assert workers_per_region(8, 1) == (1, 8)
    assert workers_per_region(2, 5) == (2, 1)
    assert workers_per_region(8, 2) == (2, 4)
    assert workers_per_region(0, 3) == (1, 1)


def test_blas_runs_on_one_thread_during_a_backtest_and_is_restored_after() -> None:
    libraries = engine._loaded_openblas()
    before = [getter() for getter, _ in libraries]
    with engine._blas_on_one_thread():
        assert all(getter() == 1 for getter, _ in libraries)
    assert [getter() for getter, _ in libraries] == before


def test_operator_controls_are_honoured_decision_by_decision(bench_settings: Settings, tables: Tables) -> None:
    at = [FIRST_DECISION + STEP * k for k in range(DECISIONS)]
    timeline = ControlTimeline(
        soc_holds=(SocHold(at[0], at[-1] + STEP, 0.6),),  # 97 MWh is below 60 %: nothing may discharge
        pauses=(Pause(at[2], at[4], "transformer maintenance"),),
        manual_rebids=(ManualRebid(at[2] + timedelta(seconds=10), "storm front moved north"),))
    config = replace(_small("SA1", FIRST_DECISION, DECISIONS), operator_controls=timeline)
    outcome = run_backtest(bench_settings, *tables, config, workers=1)
    records = outcome.records
    assert [r.paused for r in records] == [False, False, True, True, False, False]
    for paused in records[2:4]:
        # Nothing optimised or submitted; the bid in force stands and is cleared.
        assert paused.plan_status == "NONE" and not paused.rebid and paused.bid_in_force
        assert not paused.safe_fallback and paused.violations == () and paused.failure is None
    # The rebid asked during the pause is pending until the first decision that can submit it.
    assert [r.manual_rebid_reason for r in records] == [None, None, None, "storm front moved north",
                                                         "storm front moved north", None]
    assert records[4].rebid
    assert all(r.soc_floor_fraction == 0.6 for r in records)
    assert all(r.gen_mw == 0.0 for r in records)
    assert all(r.state_of_charge_mwh >= outcome.initial_state_of_charge_mwh for r in records)
    # Without controls the same period is a different run.
    assert run_backtest(bench_settings, *tables, _small("SA1", FIRST_DECISION, DECISIONS), workers=1) != outcome


def test_a_control_timeline_that_makes_no_sense_is_refused() -> None:
    with pytest.raises(OperatorRequestError, match="ends before it starts"):
        ControlTimeline(pauses=(Pause(FIRST_DECISION, FIRST_DECISION, "maintenance"),))
    with pytest.raises(OperatorRequestError, match="not a fraction of capacity"):
        ControlTimeline(soc_holds=(SocHold(FIRST_DECISION, FIRST_DECISION + STEP, 1.5),))
    with pytest.raises(OperatorRequestError, match="manual rebid needs a reason"):
        ControlTimeline(manual_rebids=(ManualRebid(FIRST_DECISION, "  "),))
