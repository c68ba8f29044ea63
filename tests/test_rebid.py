"""Rebid materiality: only a material change leaves the platform, and it says what changed."""

from __future__ import annotations

from datetime import datetime, timedelta

from algorithms import nem_time
from algorithms.rebid import material_changes, with_rebid_reason
from vpp.v1 import bid_pb2, common_pb2

T = datetime(2021, 1, 15, 17, 40)
FIVE = timedelta(minutes=5)
PRICES = [float(p) for p in range(10)]


def bid(gen_mw: list[float], *, first: datetime = T, entry: int = bid_pb2.ENTRY_TYPE_REBID,
        prices: list[float] | None = None) -> bid_pb2.Bid:
    periods = [bid_pb2.PeriodOffer(dispatch_interval=nem_time.to_timestamp(first + FIVE * i), max_avail_mw=mw,
                                   band_avail_mw=[mw] + [0.0] * 9) for i, mw in enumerate(gen_mw)]
    return bid_pb2.Bid(unit_id="HPR1", entry_type=entry, rebid_explanation="Availability rebid from 17:40.",
                       offers=[bid_pb2.ProductOffer(product="ENERGY", direction=common_pb2.DIRECTION_GEN,
                                                    band_price=prices or PRICES, periods=periods)])


def test_no_standing_bid_is_material() -> None:
    assert material_changes(bid([100.0]), None, 1.0) == ["no bid in force for these intervals"]


def test_small_moves_are_not_material_and_large_ones_are_named() -> None:
    standing = bid([100.0, 100.0, 100.0])
    assert material_changes(bid([100.5, 99.5, 100.0]), standing, 1.0) == []
    changes = material_changes(bid([100.0, 120.0, 100.0]), standing, 1.0)
    assert changes == ["ENERGY/GEN availability changes in 1 intervals, first 17:45 MAXAVAIL 100->120 MW"]


def test_new_intervals_and_price_changes_are_material() -> None:
    standing = bid([100.0], first=T)
    assert material_changes(bid([100.0, 100.0], first=T), standing, 1.0) == [
        "ENERGY/GEN adds 1 intervals from 17:45"]
    repriced = bid([100.0], prices=[p + 1 for p in PRICES])
    assert material_changes(repriced, standing, 1.0) == ["ENERGY/GEN band prices changed"]
    other_side = bid_pb2.Bid(offers=[bid_pb2.ProductOffer(product="ENERGY", direction=common_pb2.DIRECTION_LOAD)])
    assert material_changes(other_side, standing, 1.0) == ["ENERGY/LOAD not offered in the bid in force"]


def test_rebid_reason_lists_the_changes_within_the_limit() -> None:
    changed = with_rebid_reason(bid([120.0]), ["ENERGY/GEN availability changes"], 500)
    assert changed.rebid_explanation == "Availability rebid from 17:40. Changes: ENERGY/GEN availability changes"
    long = with_rebid_reason(bid([120.0]), ["x" * 600], 500)
    assert len(long.rebid_explanation) == 500 and long.rebid_explanation.endswith("…")
    daily = bid([120.0], entry=bid_pb2.ENTRY_TYPE_DAILY)
    assert with_rebid_reason(daily, ["anything"], 500) == daily
