"""Market depth on real data: FCAS enablement capped at the region's enabled MW (DISPATCHREGIONSUM of
data/nemweb) × the configured share, in the clearing, the backtest, perfect foresight and the regimes table;
the end-of-run SoC charge; data without DISPATCHREGIONSUM reads "price-taker only"."""

from __future__ import annotations

import csv
import io
import math
import zipfile
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aemo.mms import load_dispatch_prices, load_region_enablement
from aemo.store import MarketStore
from aemo.store_prices import load_store_prices
from algorithms.common.products import ENERGY
from algorithms.market.depth import (
    capped_enablement_mw,
    caps_by_product,
    caps_cover,
    enablement_caps_mw,
    end_of_run_adjustment_dollars,
    interval_caps_mw,
    local_dispatch_column,
)
from algorithms.market.prices import DispatchPrices
from backtest.compare import PRICE_TAKER_ONLY
from backtest.engine import (
    BacktestConfig,
    BacktestError,
    depth_caps_window,
    end_of_run_adjustment,
    market_prices,
    perfect_foresight_revenue,
    run_backtest,
)
from backtest.months import month_periods, run_months, write_months
from backtest.runs import load_inputs
from settings import MarketDepthSettings, Settings, load_settings
from tests.aemo_fixtures import archive_zip
from tests.test_clearing import BATTERY, INTERVAL, make_bid

REGION_SUM = "DISPATCHREGIONSUM"
SHARE = 0.5


def _raw_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The I row and D rows of the one MMS CSV in an AEMO zip, split on commas (no quoted commas there)."""
    with zipfile.ZipFile(path) as archive:
        text = archive.read(archive.namelist()[0]).decode()
    rows = list(csv.reader(io.StringIO(text)))
    header = next(row for row in rows if row and row[0] == "I")
    return header, [row for row in rows if row and row[0] == "D"]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(environ={})


@pytest.fixture(scope="module")
def depth_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder whose market store holds DISPATCHPRICE and DISPATCHREGIONSUM of January 2025 (AEMO's zips)."""
    state = tmp_path_factory.mktemp("depth-state")
    store = MarketStore(state / "market")
    store.ingest_path(archive_zip("2025_01", "DISPATCHPRICE"), tables=["DISPATCHPRICE"])
    store.ingest_path(archive_zip("2025_01", REGION_SUM), tables=[REGION_SUM])
    return state


# --------------------------------------------------------------------------------------------------
# The caps, pure
# --------------------------------------------------------------------------------------------------


def test_caps_are_the_share_of_the_enabled_mw_keeping_unknowns_unknown() -> None:
    enabled = np.array([[36.0, np.nan], [0.0, -1.0]])
    caps = enablement_caps_mw(enabled, 0.5)
    assert caps[0, 0] == 18.0 and math.isnan(caps[0, 1]) and caps[1, 0] == 0.0 and caps[1, 1] == 0.0
    by_product = caps_by_product(("ENERGY", "RAISEREG"), np.array([[np.nan, 40.0], [np.nan, 10.0]]), 0.25)
    assert list(by_product) == ["RAISEREG"] and by_product["RAISEREG"].tolist() == [10.0, 2.5]
    assert caps_cover(by_product, ("ENERGY", "RAISEREG")) and not caps_cover(by_product, ("ENERGY", "LOWERREG"))
    assert capped_enablement_mw([50.0, 50.0], [20.0, np.nan]).tolist() == [20.0, 50.0]
    assert interval_caps_mw(None, 0.5) is None
    for share in (0.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="share must be in"):
            enablement_caps_mw(enabled, share)
    with pytest.raises(ValueError, match="not an FCAS product"):
        local_dispatch_column(ENERGY)


def test_the_share_is_configured_and_checked(tmp_path: Path) -> None:
    assert load_settings(environ={}).market_depth == MarketDepthSettings(fcas_enablement_share=0.5)
    config = tmp_path / "depth.toml"
    config.write_text("[market_depth]\nfcas_enablement_share = 0.2\n")
    assert load_settings(config, environ={}).market_depth.fcas_enablement_share == 0.2
    config.write_text("[market_depth]\nfcas_enablement_share = 1.5\n")
    with pytest.raises(ValueError, match=r"fcas_enablement_share must be in \(0, 1\]"):
        load_settings(config, environ={})


def test_end_of_run_charges_a_shortfall_and_never_credits() -> None:
    # 20 MWh short, refilled through 0.92 at $80/MWh mean.
    assert end_of_run_adjustment_dollars(97.0, 77.0, 80.0, 0.92) == pytest.approx(-20.0 / 0.92 * 80.0)
    assert end_of_run_adjustment_dollars(97.0, 120.0, 80.0, 0.92) == 0.0
    assert end_of_run_adjustment_dollars(97.0, 77.0, -30.0, 0.92) == 0.0
    with pytest.raises(ValueError, match="finite"):
        end_of_run_adjustment_dollars(97.0, math.nan, 80.0, 0.92)
    with pytest.raises(ValueError, match="charge efficiency"):
        end_of_run_adjustment_dollars(97.0, 77.0, 80.0, 0.0)


# --------------------------------------------------------------------------------------------------
# Caps from real DISPATCHREGIONSUM rows
# --------------------------------------------------------------------------------------------------


def test_region_enablement_is_read_from_real_dispatchregionsum_rows() -> None:
    dispatch = load_region_enablement(load_dispatch_prices(archive_zip("2025_01", "DISPATCHPRICE")),
                                      [archive_zip("2025_01", REGION_SUM)])
    assert dispatch.region_enabled_mw is not None
    assert {"RAISE1SEC", "LOWER1SEC", "RAISEREG"} <= set(dispatch.products)
    header, rows = _raw_rows(archive_zip("2025_01", REGION_SUM))
    column = {name: index for index, name in enumerate(header)}
    checked = 0
    for row in rows[::97]:
        moment = datetime.strptime(row[column["SETTLEMENTDATE"]].strip('"'), "%Y/%m/%d %H:%M:%S")
        enabled = dispatch.enabled_at(row[column["REGIONID"]], moment)
        assert enabled is not None and ENERGY not in enabled
        for product in ("RAISEREG", "LOWERREG", "RAISE6SEC", "RAISE1SEC", "LOWER1SEC"):
            assert enabled[product] == pytest.approx(float(row[column[local_dispatch_column(product)]]))
            checked += 1
    assert checked >= 100
    # The figure: SA1 enabled tens of MW of regulation raise, far below a 150 MW battery.
    sa1 = dispatch.region_enabled_mw[dispatch.region_index("SA1"), :, dispatch.product_index("RAISEREG")]
    assert 10.0 < float(np.nanmean(sa1)) < 100.0


def test_the_store_attaches_market_depth_and_names_its_source(depth_store: Path) -> None:
    store = MarketStore(depth_store / "market")
    loaded = load_store_prices(store, regions=["SA1"], start=datetime(2025, 1, 1, 0, 5), end=datetime(2025, 2, 1))
    direct = load_region_enablement(load_dispatch_prices(archive_zip("2025_01", "DISPATCHPRICE")),
                                    [archive_zip("2025_01", REGION_SUM)])
    assert loaded.dispatch.region_enabled_mw is not None and direct.region_enabled_mw is not None
    ours = loaded.dispatch.region_enabled_mw[0]
    theirs = direct.region_enabled_mw[direct.region_index("SA1")]
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours[:, 1:], theirs[:, 1:])
    assert np.isnan(ours[:, 0]).all()  # ENERGY: price-taking, no cap
    assert REGION_SUM in {source.table for source in loaded.sources}


def test_data_without_dispatchregionsum_has_no_depth(settings: Settings) -> None:
    inputs = load_inputs([settings.market_data.data_dir])  # the embedded January 2021 month
    assert inputs.dispatch.region_enabled_mw is None
    market = market_prices(settings, inputs.dispatch)
    assert depth_caps_window(settings, market, "SA1", datetime(2021, 1, 15, 4, 5), 12) is None
    with pytest.raises(BacktestError, match="no market depth"):
        perfect_foresight_revenue(settings, market, "SA1", datetime(2021, 1, 15, 4, 5), 12, include_fcas=True,
                                  depth_limited=True)


# --------------------------------------------------------------------------------------------------
# Clearing never enables more than the cap
# --------------------------------------------------------------------------------------------------


def test_clearing_caps_each_service_at_the_depth_before_joint_capacity() -> None:
    trapezium = (-150.0, -150.0, 150.0, 150.0)
    bid = make_bid(gen_bands=[0.0] * 10, fcas={"RAISEREG": ([30.0] + [0.0] * 9, trapezium),
                                                "RAISE6SEC": ([100.0] + [0.0] * 9, trapezium),
                                                "LOWERREG": ([30.0] + [0.0] * 9, trapezium)})
    prices = {"ENERGY": 50.0, "RAISEREG": 20.0, "RAISE6SEC": 1.0, "LOWERREG": 10.0}
    from algorithms.market.clearing import clear_interval

    free = clear_interval(bid, INTERVAL, prices, state_of_charge_mwh=97.0, previous_net_mw=0.0, battery=BATTERY)
    capped = clear_interval(bid, INTERVAL, prices, state_of_charge_mwh=97.0, previous_net_mw=0.0, battery=BATTERY,
                            enablement_cap_mw={"RAISEREG": 12.5, "RAISE6SEC": math.nan, "LOWERREG": 40.0})
    assert free.fcas_enabled_mw == {"RAISEREG": 30.0, "RAISE6SEC": 100.0, "LOWERREG": 30.0}
    assert capped.fcas_enabled_mw == {"RAISEREG": 12.5, "RAISE6SEC": 100.0, "LOWERREG": 30.0}
    assert capped.fcas_revenue_by_product_dollars["RAISEREG"] == pytest.approx(12.5 * 20.0 / 12)
    assert (capped.gen_mw, capped.load_mw, capped.state_of_charge_mwh) == (free.gen_mw, free.load_mw,
                                                                          free.state_of_charge_mwh)
    assert any(note.startswith("market depth: RAISEREG") for note in capped.notes)


def test_a_backtest_on_real_depth_never_enables_more_than_the_cap(settings: Settings, depth_store: Path) -> None:
    store = MarketStore(depth_store / "market")
    loaded = load_store_prices(store, regions=["SA1"], start=datetime(2025, 1, 1, 0, 5), end=datetime(2025, 1, 4))
    config = BacktestConfig(region="SA1", first_decision=datetime(2025, 1, 2, 12, 0, 30), decisions=36,
                            horizon_intervals=24, history_intervals=288)
    market = market_prices(settings, loaded.dispatch)
    result = run_backtest(settings, loaded.dispatch, loaded.predispatch, config, workers=1, market=market)
    assert result.depth_fcas_revenue_dollars is not None and result.failed_decisions == 0
    assert result.depth_total_revenue_dollars is not None
    capped_somewhere = False
    for record in result.records:
        enabled = market.enabled_at("SA1", record.dispatch_interval)
        assert enabled is not None and record.depth_fcas_enabled_by_product_mw is not None
        for product, mw in record.depth_fcas_enabled_by_product_mw.items():
            assert mw <= SHARE * max(enabled[product], 0.0) + 1e-9
            # (A capped regulation service can leave a contingency service more joint-capacity headroom, so a
            # service may be enabled for more than under price-taking; never above its cap.)
            capped_somewhere |= mw < record.fcas_enabled_by_product_mw[product] - 1e-6
    assert capped_somewhere  # a 150 MW battery offers more than half of what SA1 enables
    assert result.depth_fcas_revenue_dollars < result.fcas_revenue_dollars


# --------------------------------------------------------------------------------------------------
# Perfect foresight: the same caps
# --------------------------------------------------------------------------------------------------


def test_depth_limited_perfect_foresight_earns_no_more_than_the_price_taker(settings: Settings,
                                                                           depth_store: Path) -> None:
    store = MarketStore(depth_store / "market")
    loaded = load_store_prices(store, regions=["SA1"], start=datetime(2025, 1, 1, 0, 5), end=datetime(2025, 1, 4))
    market = market_prices(settings, loaded.dispatch)
    first, count = datetime(2025, 1, 2, 4, 5), 288
    caps = depth_caps_window(settings, market, "SA1", first, count)
    assert caps is not None and set(caps) == set(market.products) - {ENERGY}
    energy, fcas = perfect_foresight_revenue(settings, market, "SA1", first, count, include_fcas=True)
    depth_energy, depth_fcas = perfect_foresight_revenue(settings, market, "SA1", first, count, include_fcas=True,
                                                         depth_limited=True)
    assert depth_energy + depth_fcas <= energy + fcas + 1e-6
    assert depth_fcas < fcas  # the caps bind on real SA1 depth
    # A smaller share can only earn less.
    narrow = replace(settings, market_depth=MarketDepthSettings(fcas_enablement_share=0.1))
    narrow_energy, narrow_fcas = perfect_foresight_revenue(narrow, market, "SA1", first, count, include_fcas=True,
                                                           depth_limited=True)
    assert narrow_energy + narrow_fcas <= depth_energy + depth_fcas + 1e-6


# --------------------------------------------------------------------------------------------------
# The regimes table: both columns, the end-of-run charge and the SoC at the end
# --------------------------------------------------------------------------------------------------


def test_the_regimes_table_shows_price_taker_and_depth_limited_side_by_side(settings: Settings, depth_store: Path,
                                                                          tmp_path: Path) -> None:
    fast = replace(settings, cycle=replace(settings.cycle, horizon_intervals=12, history_intervals=288),
                   stack=replace(settings.stack, state_dir=depth_store))
    rows = run_months(fast, regions=["SA1"], months=[date(2025, 1, 1)], include_embedded=False, workers=1)
    assert len(rows) == 1
    row = rows[0]
    assert row.market_depth and row.fcas_markets == 10 and not row.aemo_forecasts
    assert row.depth_total_revenue_dollars is not None and row.perfect_foresight_depth_dollars is not None
    assert row.depth_total_revenue_dollars < row.total_revenue_dollars
    assert row.perfect_foresight_depth_dollars <= row.perfect_foresight_dollars + 1e-6
    assert row.capture is not None and row.capture_depth is not None
    assert row.end_of_run_adjustment_dollars <= 0.0
    assert len(row.final_states_of_charge_mwh) == row.stretches == 2
    expected = (row.total_revenue_dollars + row.end_of_run_adjustment_dollars) / row.perfect_foresight_dollars
    assert row.capture == pytest.approx(expected)
    csv_path, markdown_path = write_months(tmp_path, rows)
    table = pd.read_csv(csv_path)
    assert {"capture", "capture_depth", "market_depth", "end_of_run_adjustment_dollars",
            "final_states_of_charge_mwh"} <= set(table.columns)
    markdown = markdown_path.read_text()
    assert "capture price-taker | capture depth-limited" in markdown
    assert f"{row.capture_depth:.1%}" in markdown and PRICE_TAKER_ONLY not in markdown


def test_a_month_without_dispatchregionsum_reads_price_taker_only(settings: Settings, tmp_path: Path) -> None:
    from backtest.months import MonthRow

    row = MonthRow(month="2021-01", region="SA1", source="files", aemo_forecasts=True, fcas_markets=8, stretches=1,
                   decisions=10, intervals_without_data=0, energy_revenue_dollars=100.0, fcas_revenue_dollars=50.0,
                   total_revenue_dollars=150.0, one_second_revenue_dollars=0.0, perfect_foresight_dollars=300.0,
                   capture=0.5, energy_share=2 / 3, failed_decisions=0, validation_rejections=0,
                   initial_state_of_charge_mwh=97.0, final_states_of_charge_mwh=(80.0,))
    _, markdown = write_months(tmp_path, [row])
    text = markdown.read_text()
    assert f"| $150 | {PRICE_TAKER_ONLY} |" in text and f"| 50.0% | {PRICE_TAKER_ONLY} |" in text
    assert "| 97 → 80 |" in text


def test_the_end_of_run_charge_of_a_real_backtest(settings: Settings) -> None:
    inputs = load_inputs([settings.market_data.data_dir])
    config = BacktestConfig(region="SA1", first_decision=datetime(2021, 1, 15, 4, 0, 30), decisions=24,
                            horizon_intervals=24, history_intervals=288)
    result = run_backtest(settings, inputs.dispatch, inputs.predispatch, config, workers=1)
    assert result.depth_fcas_revenue_dollars is None  # no DISPATCHREGIONSUM in the embedded month
    charge = end_of_run_adjustment(settings, result)
    expected = end_of_run_adjustment_dollars(result.initial_state_of_charge_mwh, result.final_state_of_charge_mwh,
                                             float(np.mean([r.rrp for r in result.records])),
                                             settings.battery.charge_efficiency, settings.battery.mlf_load)
    assert charge == pytest.approx(expected) and charge <= 0.0
    assert month_periods(inputs.dispatch, "SA1", date(2021, 1, 1), 288)  # the embedded month is in the table


def test_the_simulated_market_clears_fcas_within_the_depth_of_its_data(settings: Settings, depth_store: Path) -> None:
    from algorithms.common.battery import battery_spec_from_settings
    from models.bids import BidRow
    from services.bid_service import RegisteredUnit, SimulatedMarket

    store = MarketStore(depth_store / "market")
    loaded = load_store_prices(store, regions=["SA1"], start=datetime(2025, 1, 1, 0, 5), end=datetime(2025, 1, 4))
    interval = datetime(2025, 1, 2, 17, 35)
    trapezium = (-150.0, -150.0, 150.0, 150.0)
    bid = make_bid(gen_bands=[0.0] * 10, interval=interval,
                   fcas={"RAISEREG": ([100.0] + [0.0] * 9, trapezium), "LOWERREG": ([100.0] + [0.0] * 9, trapezium)})
    row = BidRow(bid_id="b", unit_id="HPR1", trading_day=date(2025, 1, 2), dispatch_interval=interval, version=1,
                 entry_type="DAILY", status="ACCEPTED", reasons=[], payload=bid.SerializeToString(), content_hash="",
                 first_interval=interval, last_interval=interval, received_at=datetime(2025, 1, 1))
    unit = RegisteredUnit(battery_spec_from_settings(settings.battery), 97.0)
    enabled = loaded.dispatch.enabled_at("SA1", interval)
    assert enabled is not None and enabled["RAISEREG"] * SHARE < 100.0

    def cleared(share: float | None) -> dict[str, float]:
        market = SimulatedMarket("postgresql://unused", loaded.dispatch, settings.battery, settings.market,
                                 fcas_enablement_share=share)
        outcome = market._clear_one(unit, row, interval, 97.0, 0.0)
        return {p.product: p.cleared_mw for p in outcome.products if p.product != ENERGY}

    assert cleared(None) == {"RAISEREG": 100.0, "LOWERREG": 100.0}
    depth = cleared(SHARE)
    assert depth == {"RAISEREG": pytest.approx(SHARE * enabled["RAISEREG"]),
                     "LOWERREG": pytest.approx(min(100.0, SHARE * enabled["LOWERREG"]))}


def test_a_market_not_yet_open_needs_no_depth_cap(settings: Settings, tmp_path: Path) -> None:
    # The regimes table loads every month of the store into one market: April 2021 then carries the 1-second
    # products (from October 2023) without a price or an enablement. Those markets clear nothing, so the month
    # is still depth-limited, with exactly the figures of April 2021 loaded alone.
    store = MarketStore(tmp_path / "market")
    store.ingest_path(archive_zip("2021_04", "DISPATCHPRICE"), tables=["DISPATCHPRICE"])
    store.ingest_path(archive_zip("2021_04", REGION_SUM), tables=[REGION_SUM])
    loaded = load_store_prices(store, regions=["SA1"], start=datetime(2021, 4, 1, 0, 5), end=datetime(2021, 4, 4))
    alone = loaded.dispatch
    assert "RAISE1SEC" not in alone.products and alone.region_enabled_mw is not None
    later = ("RAISE1SEC", "LOWER1SEC")
    unopened = np.full((*alone.price.shape[:2], len(later)), np.nan)
    spanning = DispatchPrices(intervals=alone.intervals, regions=alone.regions, products=(*alone.products, *later),
                              price=np.concatenate([alone.price, unopened], axis=2),
                              region_enabled_mw=np.concatenate([alone.region_enabled_mw, unopened], axis=2))
    config = BacktestConfig(region="SA1", first_decision=datetime(2021, 4, 2, 12, 0, 30), decisions=24,
                            horizon_intervals=24, history_intervals=288)
    results = [run_backtest(settings, market, loaded.predispatch, config, workers=1,
                            market=market_prices(settings, market)) for market in (alone, spanning)]
    assert all(result.failed_decisions == 0 for result in results)
    depth = [result.depth_fcas_revenue_dollars for result in results]
    assert depth[0] is not None and depth[1] is not None
    assert depth[1] == pytest.approx(depth[0]) and results[1].total_revenue_dollars == pytest.approx(
        results[0].total_revenue_dollars)
