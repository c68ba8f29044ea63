"""The backtest's fast path decides exactly what the slow path decides.

The fast path keeps each bid's period offers as columns from the builder through the rebid check,
validation and the bid book (algorithms/market/bid_columns.py); the slow path reads every period offer of
the protobuf, as the live activity and any bid from outside do. On a day of real data (SA1, 15 January
2021, 288 decisions with the configured strategy) both give the same decisions, bids, clearing and
revenue, whatever the number of worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from aemo.mms import load_market_data
from algorithms.common import nem_time
from algorithms.common.battery import battery_spec_from_settings
from algorithms.common.products import ENERGY
from algorithms.market import bid_builder, bid_decision
from algorithms.market.bid_builder import build_safe_bid_columns
from algorithms.market.bid_columns import ColumnarBid, PeriodColumns, bid_of, encode_periods, period_columns
from algorithms.market.bid_validation import validate_bid
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from algorithms.market.rebid import material_changes
from backtest.engine import BacktestConfig, BacktestResult, run_backtest
from settings import Settings, load_settings
from vpp.v1 import bid_pb2

DAY_START = datetime(2021, 1, 15, 0, 0, 30)  # decisions bidding the intervals ending 00:05 .. 24:00
DAY_DECISIONS = 288

Tables = tuple[DispatchPrices, PredispatchPrices]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(environ={})


@pytest.fixture(scope="module")
def tables(settings: Settings) -> Tables:
    return load_market_data(settings.market_data.data_dir)


def _slow_material_changes(new: bid_pb2.Bid | ColumnarBid, standing: bid_pb2.Bid | ColumnarBid | None,
                           tolerance_mw: float) -> list[str]:
    return material_changes(bid_of(new), bid_of(standing) if standing is not None else None, tolerance_mw)


def _slow_validate(bid: bid_pb2.Bid | ColumnarBid, *args: Any, **kwargs: Any) -> list[Any]:
    return list(validate_bid(bid_of(bid), *args, **kwargs))


def _without_plan_hash(bid: bid_pb2.Bid) -> bytes:
    """The bid's bytes but for the plan's hash (and the explanation quoting it): a plan carries its solve
    time, so its hash differs from run to run."""
    copy = bid_pb2.Bid()
    copy.CopyFrom(bid)
    copy.plan_hash = ""
    copy.rebid_explanation = copy.rebid_explanation.replace(bid.plan_hash[:8], "")
    return copy.SerializeToString(deterministic=True)


def _day(settings: Settings, tables: Tables, workers: int) -> BacktestResult:
    config = BacktestConfig(region="SA1", first_decision=DAY_START, decisions=DAY_DECISIONS)
    return run_backtest(settings, *tables, config, workers=workers)


def _same_columns(columns: PeriodColumns, offer: bid_pb2.ProductOffer, band_count: int) -> bool:
    return columns.same_as(period_columns(offer, band_count))


def test_a_day_of_real_data_decides_the_same_on_the_fast_and_the_slow_path(
        settings: Settings, tables: Tables, monkeypatch: pytest.MonkeyPatch) -> None:
    built: dict[str, list[ColumnarBid]] = {"fast": [], "slow": []}
    build = bid_decision.build_bid_columns

    def recording_build(path: str) -> Any:
        def recorded(*args: Any, **kwargs: Any) -> ColumnarBid:
            columnar = build(*args, **kwargs)
            built[path].append(columnar)
            return columnar
        return recorded

    with monkeypatch.context() as patch:
        patch.setattr(bid_decision, "build_bid_columns", recording_build("fast"))
        fast = _day(settings, tables, workers=2)
    with monkeypatch.context() as patch:  # every period offer written and read one by one
        patch.setattr(bid_decision, "build_bid_columns", recording_build("slow"))
        patch.setattr(bid_builder, "encode_periods", lambda columns: None)
        patch.setattr(bid_decision, "material_changes", _slow_material_changes)
        patch.setattr(bid_decision, "validate_bid", _slow_validate)
        slow = _day(settings, tables, workers=1)
    assert len(fast.records) == DAY_DECISIONS and fast.failed_decisions == 0
    assert fast.rebids > 10 and sum(not r.rebid and r.bid_in_force for r in fast.records) >= 5  # both paths taken
    assert fast == slow  # every decision, bid outcome, clearing, SoC and total (timings aside)
    assert fast.total_revenue_dollars == slow.total_revenue_dollars
    assert [r.violations for r in fast.records] == [r.violations for r in slow.records]
    band_count = settings.market.band_count
    assert len(built["fast"]) == len(built["slow"]) >= DAY_DECISIONS - fast.safe_fallbacks
    assert [_without_plan_hash(b.bid) for b in built["fast"]] == [_without_plan_hash(b.bid) for b in built["slow"]]
    assert all(_same_columns(columns, offer, band_count)
               for columnar in built["fast"] for columns, offer in zip(columnar.offer_periods, columnar.bid.offers,
                                                                       strict=True))


def _safe_bid(settings: Settings, first: datetime, soc_mwh: float) -> ColumnarBid:
    return build_safe_bid_columns(
        battery_spec_from_settings(settings.battery), settings.bidding, settings.market, dispatch_interval=first,
        offer_time=first - (first - first.replace(hour=0, minute=0)) / 2, version=1,
        fcas_products=("RAISEREG", "LOWERREG", "RAISE6SEC"), initial_state_of_charge_mwh=soc_mwh, reason="test")


def test_safe_bid_columns_are_what_its_protobuf_holds(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    columnar = _safe_bid(settings, datetime(2021, 1, 15, 16, 5), 80.0)
    with monkeypatch.context() as patch:  # written period by period
        patch.setattr(bid_builder, "encode_periods", lambda columns: None)
        one_by_one = _safe_bid(settings, datetime(2021, 1, 15, 16, 5), 80.0)
    assert columnar.bid == one_by_one.bid
    assert columnar.bid.SerializeToString(deterministic=True) == one_by_one.bid.SerializeToString(deterministic=True)
    assert [o.product for o in columnar.bid.offers][:2] == [ENERGY, ENERGY]
    assert all(_same_columns(columns, offer, settings.market.band_count)
               for columns, offer in zip(columnar.offer_periods, columnar.bid.offers, strict=True))


def _changes_both_ways(new: ColumnarBid, standing: ColumnarBid, tolerance_mw: float) -> tuple[list[str], list[str]]:
    return (material_changes(new, standing, tolerance_mw),
            material_changes(new.bid, standing.bid, tolerance_mw))


def test_rebid_check_on_columns_names_the_same_changes_as_on_the_protobuf(settings: Settings) -> None:
    band_count = settings.market.band_count
    earlier = _safe_bid(settings, datetime(2021, 1, 15, 16, 5), 80.0)
    later = _safe_bid(settings, datetime(2021, 1, 15, 16, 0), 20.0)  # one more interval, other SoC
    for new, standing in ((later, earlier), (earlier, later), (earlier, earlier)):
        for tolerance_mw in (0.0, 1.0, 1e9):
            columnar, protobuf = _changes_both_ways(new, standing, tolerance_mw)
            assert columnar == protobuf
    assert any("adds 1 intervals from 16:00" in change for change in material_changes(later, earlier, 1.0))
    assert material_changes(earlier, earlier, 0.0) == []
    # A standing bid read from the protobuf (e.g. from the database) is compared the same way.
    assert material_changes(later, ColumnarBid.of(earlier.bid, band_count), 1.0) == \
        material_changes(later.bid, earlier.bid, 1.0)


def test_validation_on_columns_finds_what_it_finds_on_the_protobuf(settings: Settings) -> None:
    battery = battery_spec_from_settings(settings.battery)
    products = (ENERGY, "RAISEREG", "LOWERREG", "RAISE6SEC")
    columnar = _safe_bid(settings, datetime(2021, 1, 15, 16, 5), 80.0)
    assert validate_bid(columnar, battery, settings.market, products=products) == []
    # A defect in a period offer is seen the same way on columns read from the broken protobuf.
    broken = bid_pb2.Bid()
    broken.CopyFrom(columnar.bid)
    broken.offers[0].periods[3].band_avail_mw[2] = float("nan")
    broken.offers[0].periods[5].max_avail_mw = -1.0
    del broken.offers[2].periods[7].band_avail_mw[-1]
    read = ColumnarBid.of(broken, settings.market.band_count)
    expected = validate_bid(broken, battery, settings.market, products=products)
    assert expected and validate_bid(read, battery, settings.market, products=products) == expected
    assert {v.rule for v in expected} >= {"V1", "V3"}


def test_columns_that_do_not_match_the_bid_are_refused(settings: Settings) -> None:
    columnar = _safe_bid(settings, datetime(2021, 1, 15, 16, 5), 80.0)
    fewer = bid_pb2.Bid()
    fewer.CopyFrom(columnar.bid)
    del fewer.offers[-1]
    with pytest.raises(ValueError, match="offers' columns for a bid of"):
        columnar.with_bid(fewer)
    other = _safe_bid(settings, datetime(2021, 1, 15, 16, 5), 20.0)
    assert not columnar.offer_periods[0].same_as(other.offer_periods[0])
    assert columnar.offer_periods[0].same_as(columnar.offer_periods[0])


def _interval_seconds(bid: bid_pb2.Bid) -> Sequence[int]:
    return sorted({p.dispatch_interval.seconds for o in bid.offers for p in o.periods})


def test_the_bid_book_covers_the_intervals_of_the_bid(settings: Settings) -> None:
    from backtest.engine import BidBook

    first = datetime(2021, 1, 15, 16, 5)
    columnar = _safe_bid(settings, first, 80.0)
    book = BidBook()
    book.accept(columnar, first, settings.market.band_count)
    assert list(book.newest_seconds) == _interval_seconds(columnar.bid)
    # to the end of the trading day (the interval ending 04:00 the next morning)
    assert book.covering(first) is not None and book.covering(datetime(2021, 1, 16, 4, 0)) is not None
    assert book.covering(datetime(2021, 1, 15, 16, 0)) is None
    assert book.covering(datetime(2021, 1, 16, 4, 5)) is None
    assert nem_time.from_timestamp(columnar.bid.dispatch_interval) == first
    prices: Mapping[tuple[str, int], Sequence[float]] | None = book.band_prices_in_force(first.date())
    assert prices is not None and np.isfinite(np.asarray(next(iter(prices.values())))).all()


def test_encoded_periods_parse_to_the_periods_they_were_read_from() -> None:
    offer = bid_pb2.ProductOffer(product="RAISEREG", direction=1, band_price=[float(k) for k in range(10)])
    start = 1_610_700_000  # 2021-01-15
    for k in range(6):
        offer.periods.add(max_avail_mw=[0.0, -0.0, 12.5, float("nan"), 1e300, -3.0][k],
                          band_avail_mw=[float(k), 0.0, -0.0, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0],
                          ramp_up_rate_mw_per_min=float(k % 2), enablement_max_mw=-0.0 if k == 2 else 150.0,
                          fixed_load_mw=0.0).dispatch_interval.seconds = start + 300 * k
    columns = period_columns(offer, 10)
    encoded = encode_periods(columns)
    assert encoded is not None
    parsed = bid_pb2.ProductOffer(product="RAISEREG", direction=1, band_price=[float(k) for k in range(10)])
    parsed.MergeFromString(encoded)
    assert parsed.SerializeToString(deterministic=True) == offer.SerializeToString(deterministic=True)
    assert period_columns(parsed, 10).same_as(columns)
    # What one fixed layout cannot hold is left to the period-by-period writer.
    offer.periods[1].dispatch_interval.nanos = 5
    assert encode_periods(period_columns(offer, 10)) is None
    offer.periods[1].dispatch_interval.nanos = 0
    del offer.periods[4].band_avail_mw[-1]
    assert encode_periods(period_columns(offer, 10)) is None
    early = bid_pb2.ProductOffer()
    early.periods.add(band_avail_mw=[0.0] * 10).dispatch_interval.seconds = 1000
    assert encode_periods(period_columns(early, 10)) is None
