"""Replay from the live archive: genuine live cycles, replayed and compared.

Two consecutive production cycles (``AutobidderCycle`` with the real activities, SQS worker pools, result
relay, market-data and bid services; see :mod:`tests.live_stack`) archive their inputs and outputs; the
replay must reproduce them exactly with the recorded algorithms, the backtest must decide the same bids
for the same intervals, and a changed algorithm must show up as a difference.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import Message

from activities.cycle_facts import CycleResult
from aemo.mms import load_market_data
from algorithms.common.content_hash import with_inputs_hash
from algorithms.common.nem_time import from_timestamp
from algorithms.market import forecast as forecaster
from algorithms.market import spike_reserve as optimiser
from algorithms.market.bid_columns import ColumnarBid, bid_of
from algorithms.market.bid_validation import Violation, validate_bid
from algorithms.registry import HandlerRegistry, default_registry
from archive import Archive, LocalArchive
from backtest.archive_replay import (
    ArchiveReplayReport,
    bid_decision,
    compare_bids,
    first_interval_bands,
    load_archived_cycle,
    max_abs_diff,
    replay_archived_cycles,
)
from backtest.engine import BacktestConfig, run_backtest
from settings import Settings, load_settings
from tests.conftest import temporary_database
from tests.live_stack import live_stack
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

# `optimiser` is the configured one ([cycle] optimiser_algorithm of settings/default.toml, at CONFIGURED_VERSION with
# its adapter CONFIGURED_RUN): the live cycles run it. So is `forecaster` at FORECAST_VERSION ([cycle]
# forecast_algorithm_version) with its adapter FORECAST_RUN.
# Decisions 30 s into the intervals ending 17:05 and 17:10 on 15 January 2021: they bid 17:10 and 17:15.
DECISIONS = (datetime(2021, 1, 15, 17, 0, 30), datetime(2021, 1, 15, 17, 5, 30))
# A short horizon and history keep each cycle fast.
HORIZON_INTERVALS = 48
HISTORY_INTERVALS = 576
CONFIGURED_VERSION = "4"
CONFIGURED = common_pb2.AlgorithmRef(name=optimiser.NAME, version=CONFIGURED_VERSION)
CONFIGURED_RUN = optimiser.run_optimisation_v4
FORECAST_VERSION = "6"
FORECAST = common_pb2.AlgorithmRef(name=forecaster.NAME, version=FORECAST_VERSION)
FORECAST_RUN = forecaster.run_forecast_v6
SCALED_ENERGY_VERSION = "test-energy-x1.5"
DEGRADATION_VERSION = "test-degradation-50"


@dataclass(frozen=True)
class LiveCycles:
    """The archive of the live cycles and what each cycle returned, in decision order."""

    settings: Settings
    archive: Archive
    runs: tuple[tuple[str, CycleResult], ...]

    @property
    def cycle_ids(self) -> list[str]:
        return [cycle_id for cycle_id, _ in self.runs]


@pytest.fixture(scope="module")
async def live(server_url: str, sqs_endpoint: str,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveCycles]:
    loaded = load_settings(environ={})
    with temporary_database(server_url) as database_url:
        settings = replace(
            loaded, database_url=database_url,
            stack=replace(loaded.stack, state_dir=tmp_path_factory.mktemp("live-archive")),
            cycle=replace(loaded.cycle, horizon_intervals=HORIZON_INTERVALS, history_intervals=HISTORY_INTERVALS))
        async with live_stack(settings, sqs_endpoint) as stack:
            runs = tuple([await stack.run_cycle(decision) for decision in DECISIONS])
            yield LiveCycles(stack.settings, stack.archive, runs)


def _registry_with_variants() -> HandlerRegistry:
    """The platform's algorithms plus two deliberately changed versions (ENERGY forecast x1.5; degradation
    cost 50 $/MWh)."""
    registry = default_registry()

    def scaled_energy(request: Message) -> Message:
        assert isinstance(request, worker_pb2.ForecastRequest)
        recorded = worker_pb2.ForecastRequest()
        recorded.CopyFrom(request)
        recorded.algorithm.CopyFrom(FORECAST)
        result = FORECAST_RUN(recorded)
        if result.product == "ENERGY":
            result.price[:] = [1.5 * price for price in result.price]
        result.algorithm.CopyFrom(request.algorithm)
        return result

    def costly_cycling(request: Message) -> Message:
        assert isinstance(request, worker_pb2.OptimisationRequest)
        recorded = worker_pb2.OptimisationRequest()
        recorded.CopyFrom(request)
        recorded.algorithm.CopyFrom(CONFIGURED)
        recorded.degradation_cost_per_mwh = 50.0
        result = CONFIGURED_RUN(recorded)
        result.algorithm.CopyFrom(request.algorithm)
        return result

    registry.register("forecast", forecaster.NAME, SCALED_ENERGY_VERSION, scaled_energy)
    registry.register("optimisation", optimiser.NAME, DEGRADATION_VERSION, costly_cycling)
    return registry


# --------------------------------------------------------------------------------------------------
# The live cycles and their archive
# --------------------------------------------------------------------------------------------------


def test_the_live_cycles_bid_consecutive_intervals_and_archive_every_stage(live: LiveCycles) -> None:
    intervals = [datetime.fromisoformat(result.dispatch_interval) for _, result in live.runs]
    assert intervals == [datetime(2021, 1, 15, 17, 10), datetime(2021, 1, 15, 17, 15)]
    for cycle_id, result in live.runs:
        assert result.status == "SUBMITTED", result.facts
        labels = {entry.label for entry in live.archive.list_cycle(cycle_id)}
        assert {"market-snapshot", "forecast-request/ENERGY", "forecast-result/ENERGY", "optimisation-request",
                "optimisation-result/", "bid", "market-outcome"} <= labels
        archived = load_archived_cycle(live.archive, cycle_id)
        assert len(archived.forecast_requests) == len(archived.forecast_results) == 9
        assert archived.bid_key == result.facts[3].archive_keys[0]  # the bid the workflow submitted
        assert archived.dispatch_interval == datetime.fromisoformat(result.dispatch_interval)


# --------------------------------------------------------------------------------------------------
# Replay with the recorded versions: exact reproduction
# --------------------------------------------------------------------------------------------------


def _assert_reproduced(live: LiveCycles, report: ArchiveReplayReport) -> None:
    assert [c.cycle_id for c in report.cycles] == sorted(live.cycle_ids)
    assert report.failed_cycles == 0 and report.reproduced, report.summary()
    assert report.forecasts_identical == report.forecasts_compared == 18
    assert report.plans_identical == report.plans_compared == 2
    assert report.bids_identical == report.bids_first_interval_equal == report.bids_compared == 2
    assert report.forecast_max_abs_diff == 0.0 and report.max_abs_objective_diff_dollars == 0.0
    for replay in report.cycles:
        archived = load_archived_cycle(live.archive, replay.cycle_id)
        # Bit for bit, checked here on the messages themselves rather than through the report.
        for product, result in replay.replayed_forecasts.items():
            recorded = archived.forecast_results[product]
            assert list(result.price) == list(recorded.price) and result.inputs_hash == recorded.inputs_hash
        plan, recorded_plan = replay.replayed_plan, archived.optimisation_result
        assert plan is not None and recorded_plan is not None
        assert plan.objective_dollars == recorded_plan.objective_dollars
        for name in ("gen_mw", "load_mw", "state_of_charge_mwh", "energy_value_per_mwh"):
            assert list(getattr(plan, name)) == list(getattr(recorded_plan, name)), name
        assert list(plan.fcas) == list(recorded_plan.fcas)
        assert replay.replayed_bid is not None and archived.bid is not None
        assert bid_decision(replay.replayed_bid) == bid_decision(archived.bid)
        assert replay.bid is not None and replay.bid.material_changes == ()
        assert replay.plan is not None and replay.plan.first_interval_net_mw_diff == 0.0
        assert replay.bid_source == "plan" and replay.bid_violations == ()


def test_replay_with_the_recorded_versions_reproduces_every_result_exactly(live: LiveCycles) -> None:
    report = replay_archived_cycles(live.archive, live.settings)
    _assert_reproduced(live, report)
    for replay in report.cycles:
        assert replay.forecast_algorithm == f"sarx-quantile v{FORECAST_VERSION}"
        assert replay.optimiser_algorithm == f"{optimiser.NAME} v{CONFIGURED_VERSION}" == "lp-spike-reserve v4"
        assert live.settings.cycle.optimiser_algorithm_version == CONFIGURED_VERSION
        assert live.settings.cycle.forecast_algorithm_version == FORECAST_VERSION
    assert report.forecast_algorithm is None and report.optimiser_algorithm is None


def test_naming_the_recorded_versions_as_overrides_changes_nothing(live: LiveCycles) -> None:
    report = replay_archived_cycles(live.archive, live.settings, forecast_algorithm=FORECAST,
                                    optimiser_algorithm=CONFIGURED)
    _assert_reproduced(live, report)
    assert report.forecast_algorithm == f"sarx-quantile v{FORECAST_VERSION}"


# --------------------------------------------------------------------------------------------------
# The backtest decides what the live cycle decided
# --------------------------------------------------------------------------------------------------


def test_a_backtest_decision_agrees_with_the_live_cycles_archived_bid(
        live: LiveCycles, monkeypatch: pytest.MonkeyPatch) -> None:
    accepted: list[bid_pb2.Bid] = []

    def recording_validate_bid(bid: bid_pb2.Bid | ColumnarBid, *args: Any, **kwargs: Any) -> list[Violation]:
        violations = validate_bid(bid, *args, **kwargs)
        if not violations:
            accepted.append(bid_of(bid))  # a valid bid is the one the backtest's market accepts
        return violations

    monkeypatch.setattr("algorithms.market.bid_decision.validate_bid", recording_validate_bid)
    dispatch, predispatch = load_market_data(live.settings.market_data.data_dir)
    backtest = run_backtest(live.settings, dispatch, predispatch,
                            BacktestConfig(region=live.settings.cycle.region, first_decision=DECISIONS[0],
                                           decisions=len(DECISIONS)))
    assert [r.rebid for r in backtest.records] == [True, True] and len(accepted) == 2
    tolerance = live.settings.bidding.rebid_materiality_mw
    for record, bid, (cycle_id, live_result) in zip(backtest.records, accepted, live.runs, strict=True):
        archived = load_archived_cycle(live.archive, cycle_id)
        assert archived.bid is not None
        assert record.dispatch_interval == datetime.fromisoformat(live_result.dispatch_interval)
        assert from_timestamp(bid.dispatch_interval) == from_timestamp(archived.bid.dispatch_interval)
        comparison = compare_bids(bid, archived.bid, tolerance)
        assert comparison.first_interval_bands_equal, comparison.offer_differences
        assert comparison.first_interval_band_max_abs_diff_mw == 0.0
        assert first_interval_bands(bid) == first_interval_bands(archived.bid)
        assert comparison.material_changes == ()
        # And the simulated market cleared the interval the same way in both.
        outcome = live_result.outcome
        assert outcome is not None and outcome.cleared
        assert (record.gen_mw, record.load_mw) == pytest.approx((outcome.gen_mw, outcome.load_mw), abs=1e-9)
        assert record.state_of_charge_mwh == pytest.approx(outcome.state_of_charge_mwh, abs=1e-9)
        assert record.energy_revenue_dollars == pytest.approx(outcome.energy_revenue_dollars, abs=1e-6)
    assert any(r.gen_mw > 0 or r.load_mw > 0 for r in backtest.records)


# --------------------------------------------------------------------------------------------------
# A changed algorithm is a difference
# --------------------------------------------------------------------------------------------------


def test_a_changed_forecaster_is_reported_with_its_price_and_plan_differences(live: LiveCycles) -> None:
    changed = common_pb2.AlgorithmRef(name=forecaster.NAME, version=SCALED_ENERGY_VERSION)
    report = replay_archived_cycles(live.archive, live.settings, forecast_algorithm=changed,
                                    registry=_registry_with_variants())
    assert report.failed_cycles == 0 and not report.reproduced
    assert report.forecast_algorithm == f"sarx-quantile v{SCALED_ENERGY_VERSION}"
    assert report.forecasts_identical == 0  # another algorithm made every one of them
    assert report.plans_identical == 0 and report.max_abs_objective_diff_dollars > 0
    for replay in report.cycles:
        archived = load_archived_cycle(live.archive, replay.cycle_id)
        by_product = {f.product: f for f in replay.forecasts}
        recorded_energy = np.asarray(archived.forecast_results["ENERGY"].price)
        assert by_product["ENERGY"].max_abs_diff == pytest.approx(0.5 * float(np.max(np.abs(recorded_energy))))
        assert by_product["ENERGY"].max_abs_diff > 0
        assert all(f.max_abs_diff == 0.0 for p, f in by_product.items() if p != "ENERGY")
        # The plan was made from the new forecasts.
        plan = replay.replayed_plan
        assert plan is not None and archived.optimisation_result is not None
        assert plan.inputs_hash != archived.optimisation_result.inputs_hash
        assert replay.plan is not None and not replay.plan.identical


def test_a_changed_optimiser_parameter_is_reported_as_a_plan_difference(live: LiveCycles) -> None:
    changed = common_pb2.AlgorithmRef(name=optimiser.NAME, version=DEGRADATION_VERSION)
    report = replay_archived_cycles(live.archive, live.settings, optimiser_algorithm=changed,
                                    registry=_registry_with_variants())
    assert report.failed_cycles == 0 and not report.reproduced
    assert report.forecasts_identical == report.forecasts_compared == 18  # the forecasts were not changed
    assert report.plans_identical == 0 and report.max_abs_objective_diff_dollars > 0
    assert all(c.optimiser_algorithm == f"{optimiser.NAME} v{DEGRADATION_VERSION}" for c in report.cycles)
    for replay in report.cycles:
        assert replay.plan is not None and replay.bid is not None
        # The bid's first interval follows the plan's first interval (the SoC it starts from is the same).
        plan = replay.plan
        first_interval_changed = plan.first_interval_net_mw_diff != 0 or plan.first_interval_fcas_mw_diff != 0
        assert replay.bid.first_interval_bands_equal == (not first_interval_changed)


def test_an_algorithm_no_worker_serves_fails_each_cycle_with_the_reason(live: LiveCycles) -> None:
    unknown = common_pb2.AlgorithmRef(name=forecaster.NAME, version="999")
    report = replay_archived_cycles(live.archive, live.settings, forecast_algorithm=unknown)
    assert report.failed_cycles == 2 and not report.reproduced
    for replay in report.cycles:
        assert replay.failure is not None and "unknown algorithm sarx-quantile v999" in replay.failure
        assert replay.plan is None and replay.bid is None
    with pytest.raises(ValueError, match="must name an algorithm and a version"):
        replay_archived_cycles(live.archive, live.settings, optimiser_algorithm=common_pb2.AlgorithmRef())


def test_a_retired_forecaster_is_reported_but_the_plan_is_still_replayed_from_the_archive(
        live: LiveCycles) -> None:
    optimiser_only = HandlerRegistry()
    optimiser_only.register("optimisation", optimiser.NAME, CONFIGURED_VERSION, CONFIGURED_RUN)
    report = replay_archived_cycles(live.archive, live.settings, registry=optimiser_only)
    assert report.failed_cycles == 2 and not report.reproduced
    assert report.plans_identical == report.plans_compared == 2
    assert report.bids_identical == 2
    for replay in report.cycles:
        assert replay.failure is not None
        assert f"unknown algorithm sarx-quantile v{FORECAST_VERSION}" in replay.failure
        assert all(f.failure is not None and not f.identical for f in replay.forecasts)


def test_chosen_cycles_are_replayed_in_order_and_an_empty_one_is_reported(live: LiveCycles) -> None:
    chosen = [live.cycle_ids[1], "no-such-cycle"]
    report = replay_archived_cycles(live.archive, live.settings, cycle_ids=chosen)
    assert [c.cycle_id for c in report.cycles] == chosen
    assert report.cycles[0].reproduced
    assert report.cycles[1].failure == "cycle no-such-cycle archived no forecast request"
    assert report.failed_cycles == 1 and not report.reproduced


def test_retried_stages_replay_the_attempt_the_cycle_went_on_with(live: LiveCycles, tmp_path: Path) -> None:
    # The cycle's archive again, with a later stray attempt of the ENERGY forecast and of the plan after
    # the ones the cycle used (as a retried activity's first answer arriving late would leave it).
    copy = LocalArchive(tmp_path / "retried")
    source = live.cycle_ids[0]
    for entry in live.archive.list_cycle(source):
        message = live.archive.get(entry.key)
        copy.put(message, cycle_id="retried", label=entry.label)
        if isinstance(message, worker_pb2.ForecastRequest) and message.product == "ENERGY":
            stray_request = worker_pb2.ForecastRequest()
            stray_request.CopyFrom(message)
            stray_request.decision_time.seconds += 7
            stray_request = with_inputs_hash(stray_request)
            stray_result = FORECAST_RUN(stray_request)
            stray_result.price[:] = [2 * price for price in stray_result.price]
        if isinstance(message, worker_pb2.ForecastResult) and message.product == "ENERGY":
            copy.put(stray_request, cycle_id="retried", label="forecast-request/ENERGY")
            copy.put(stray_result, cycle_id="retried", label=entry.label)
        if isinstance(message, worker_pb2.OptimisationResult):
            stray_plan = worker_pb2.OptimisationResult()
            stray_plan.CopyFrom(message)
            stray_plan.objective_dollars += 100.0
            copy.put(stray_plan, cycle_id="retried", label=entry.label)
    original, retried = load_archived_cycle(live.archive, source), load_archived_cycle(copy, "retried")
    assert retried.forecast_requests == original.forecast_requests
    assert retried.forecast_results == original.forecast_results
    assert retried.optimisation_result == original.optimisation_result
    report = replay_archived_cycles(copy, live.settings)
    assert [c.cycle_id for c in report.cycles] == ["retried"] and report.reproduced, report.summary()


# --------------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------------


def test_a_moved_band_in_the_first_interval_is_a_difference(live: LiveCycles) -> None:
    archived = load_archived_cycle(live.archive, live.cycle_ids[0]).bid
    assert archived is not None
    changed = bid_pb2.Bid()
    changed.CopyFrom(archived)
    gen = next(o for o in changed.offers if o.product == "ENERGY" and o.direction == common_pb2.DIRECTION_GEN)
    gen.periods[0].band_avail_mw[9] += 2.5
    comparison = compare_bids(changed, archived, tolerance_mw=1.0)
    assert not comparison.first_interval_bands_equal and not comparison.identical
    assert comparison.first_interval_band_max_abs_diff_mw == pytest.approx(2.5)
    assert [d.split(":")[0] for d in comparison.offer_differences] == ["ENERGY/GEN"]
    assert len(comparison.material_changes) == 1 and "ENERGY/GEN" in comparison.material_changes[0]
    # A later interval only: the first interval still agrees, the bid does not.
    later = bid_pb2.Bid()
    later.CopyFrom(archived)
    next(o for o in later.offers if o.product == "ENERGY").periods[1].band_avail_mw[0] += 0.5
    comparison = compare_bids(later, archived, tolerance_mw=1.0)
    assert comparison.first_interval_bands_equal and not comparison.identical
    assert comparison.material_changes == ()


def test_max_abs_diff_handles_shapes_and_missing_values() -> None:
    assert max_abs_diff([1.0, 2.0], [1.0, 2.5]) == 0.5
    assert max_abs_diff([], []) == 0.0
    assert max_abs_diff([1.0], [1.0, 2.0]) == math.inf
    assert max_abs_diff([math.nan, 1.0], [math.nan, 1.25]) == 0.25
    assert max_abs_diff([math.nan], [1.0]) == math.inf


def test_an_archive_without_cycles_replays_nothing(tmp_path: Path) -> None:
    report = replay_archived_cycles(LocalArchive(tmp_path / "empty"), load_settings(environ={}))
    assert report.cycles == () and not report.reproduced and report.failed_cycles == 0
    assert report.summary().startswith("0 cycles (0 failed)")



def test_the_cli_replays_the_live_archive(live: LiveCycles, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("VPP_STATE_DIR", str(live.settings.stack.state_dir))
    result = CliRunner().invoke(app, ["backtest", "archive"])
    assert result.exit_code == 0, result.output
    assert result.output.count("reproduced") == len(live.cycle_ids)
    unknown = CliRunner().invoke(app, ["backtest", "archive", "--forecaster", "no-such-model@1"])
    assert unknown.exit_code == 1 and "no-such-model" in unknown.output
    monkeypatch.setenv("VPP_STATE_DIR", str(tmp_path))
    empty = CliRunner().invoke(app, ["backtest", "archive"])
    assert empty.exit_code == 1 and "no replayable cycles" in empty.output
