"""The FCAS gap analysis (backtest/fcas_gap.py): every missing MW attributed to one cause, dollars adding up, and
what the bid in force offered read from the bid (algorithms/market/clearing.fcas_offers)."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from aemo.store import MarketStore
from backtest.fcas_gap import ServiceIntervals, gap_markdown, month_gap, service_gap
from settings import Settings, load_settings
from tests.aemo_fixtures import archive_zip
from tests.test_clearing import INTERVAL, make_bid

HOURS = 5 / 60


def _intervals(**arrays: list[float]) -> ServiceIntervals:
    return ServiceIntervals(**{name: np.asarray(values, dtype=np.float64) for name, values in arrays.items()})


def test_each_missing_mw_goes_to_the_first_cause_that_explains_it() -> None:
    # $12/MW/h for 5 minutes: $1 a MW an interval.
    intervals = _intervals(
        price=[12.0] * 6,
        perfect_mw=[10.0, 10.0, 10.0, 10.0, 2.0, 10.0],
        realised_mw=[0.0, 0.0, 3.0, 4.0, 5.0, 10.0],
        offered_mw=[0.0, 10.0, 10.0, 10.0, 5.0, 10.0],
        offered_at_price_mw=[0.0, 0.0, 10.0, 10.0, 5.0, 10.0],
        depth_cap_mw=[math.inf, math.inf, math.inf, 4.0, math.inf, 10.0],
        expected_cap_mw=[4.0, math.inf, 20.0, 20.0, 20.0, 20.0])
    gap = service_gap("RAISE6SEC", intervals, HOURS)
    assert gap.perfect_dollars == pytest.approx(52.0)
    assert gap.realised_dollars == pytest.approx(22.0)
    assert gap.not_offered_expected_depth_dollars == pytest.approx(6.0)  # the plan expected 4 MW of 10
    assert gap.not_offered_plan_dollars == pytest.approx(4.0)  # and offered none of those 4
    assert gap.above_price_dollars == pytest.approx(10.0)
    assert gap.capped_by_depth_dollars == pytest.approx(6.0)
    assert gap.headroom_dollars == pytest.approx(7.0)
    assert gap.surplus_dollars == pytest.approx(3.0)
    causes = (gap.not_offered_expected_depth_dollars + gap.not_offered_plan_dollars + gap.above_price_dollars
              + gap.capped_by_depth_dollars + gap.headroom_dollars)
    assert gap.realised_dollars - gap.perfect_dollars == pytest.approx(gap.surplus_dollars - causes)


def test_gaps_of_one_service_add_and_other_services_do_not() -> None:
    one = _intervals(price=[12.0], perfect_mw=[10.0], realised_mw=[0.0], offered_mw=[0.0],
                     offered_at_price_mw=[0.0], depth_cap_mw=[10.0], expected_cap_mw=[math.inf])
    raise6 = service_gap("RAISE6SEC", one, HOURS)
    twice = raise6 + raise6
    assert twice.not_offered_plan_dollars == pytest.approx(20.0) and twice.gap_dollars == pytest.approx(20.0)
    with pytest.raises(ValueError, match="cannot add"):
        raise6 + service_gap("LOWER6SEC", one, HOURS)


def test_the_offer_is_read_from_the_bid_by_price() -> None:
    from algorithms.market.clearing import fcas_offers

    trapezium = (-150.0, -150.0, 150.0, 150.0)
    bid = make_bid(fcas={"RAISE6SEC": ([20.0, 0.0, 30.0] + [0.0] * 7, trapezium),
                         "LOWER6SEC": ([0.0] * 10, trapezium)})
    offers = fcas_offers(bid, INTERVAL, {"ENERGY": 50.0, "RAISE6SEC": 3.0, "LOWER6SEC": 1.0}, power_mw=150.0)
    assert offers["RAISE6SEC"].max_avail_mw == pytest.approx(50.0)
    # FCAS_PRICES of the clearing tests: the third band is above $3/MW/h.
    from tests.test_clearing import FCAS_PRICES
    assert FCAS_PRICES[2] > 3.0 >= FCAS_PRICES[0]
    assert offers["RAISE6SEC"].at_price_mw == pytest.approx(20.0)
    assert offers["LOWER6SEC"].max_avail_mw == 0.0
    unpriced = fcas_offers(bid, INTERVAL, {"ENERGY": 50.0}, power_mw=150.0)
    assert unpriced["RAISE6SEC"].at_price_mw == 0.0 and unpriced["RAISE6SEC"].max_avail_mw == pytest.approx(50.0)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(environ={})


@pytest.fixture(scope="module")
def depth_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("gap-state")
    store = MarketStore(state / "market")
    store.ingest_path(archive_zip("2025_01", "DISPATCHPRICE"), tables=["DISPATCHPRICE"])
    store.ingest_path(archive_zip("2025_01", "DISPATCHREGIONSUM"), tables=["DISPATCHREGIONSUM"])
    return state


def test_a_real_backtest_decomposes_to_its_own_figures(settings: Settings, depth_state: Path) -> None:
    from aemo.store_prices import load_store_prices
    from backtest.engine import (
        BacktestConfig,
        end_of_run_adjustment,
        market_prices,
        perfect_foresight_revenue,
        run_backtest,
    )

    store = MarketStore(depth_state / "market")
    loaded = load_store_prices(store, regions=["SA1"], start=datetime(2025, 1, 1, 0, 5), end=datetime(2025, 1, 4))
    config = BacktestConfig(region="SA1", first_decision=datetime(2025, 1, 2, 12, 0, 30), decisions=36,
                            horizon_intervals=24, history_intervals=288)
    market = market_prices(settings, loaded.dispatch)
    result = run_backtest(settings, loaded.dispatch, loaded.predispatch, config, workers=1, market=market)
    assert all(r.expected_cap_by_product_mw is not None and r.fcas_offered_by_product_mw is not None
               for r in result.records if r.plan_status == "OPTIMAL")
    end_of_run = end_of_run_adjustment(settings, result)
    gap = month_gap(settings, market, "2025-01", "SA1", [result], end_of_run)
    energy, fcas = perfect_foresight_revenue(settings, market, "SA1", result.first_interval, len(result.records),
                                             include_fcas=True, depth_limited=True)
    assert result.depth_total_revenue_dollars is not None
    assert gap.perfect_dollars == pytest.approx(energy + fcas, rel=1e-9)
    assert gap.realised_dollars == pytest.approx(result.depth_total_revenue_dollars + end_of_run, rel=1e-9)
    for service in gap.services:
        causes = (service.not_offered_expected_depth_dollars + service.not_offered_plan_dollars
                  + service.above_price_dollars + service.capped_by_depth_dollars + service.headroom_dollars)
        assert service.realised_dollars - service.perfect_dollars == pytest.approx(service.surplus_dollars - causes,
                                                                                   abs=1e-6)
        assert service.capped_by_depth_dollars == pytest.approx(0.0, abs=1e-6)  # the same caps on both sides
    assert "| 2025-01 | SA1 | RAISEREG |" in gap_markdown([gap])


def test_the_command_without_data_is_one_error(tmp_path: Path) -> None:
    from tests.test_backtest_store import invoke

    code, _, stderr = invoke(["backtest", "fcas-gap", "--month", "2018-05", "--out", str(tmp_path / "gap")],
                             tmp_path / "empty")
    assert code == 1 and stderr.startswith("error: no month of SA1 has enough data")
    assert not (tmp_path / "gap").exists()
