"""Rebid materiality: only a material change leaves the platform, and it says what changed."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.common import nem_time
from algorithms.market.rebid import material_changes, with_rebid_reason
from vpp.v1 import bid_pb2, common_pb2

T = datetime(2021, 1, 15, 17, 40)
FIVE = timedelta(minutes=5)
PRICES = [float(p) for p in range(10)]


def bid(gen_mw: list[float], *, first: datetime = T, entry: bid_pb2.EntryType.ValueType = bid_pb2.ENTRY_TYPE_REBID,
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


def offer(product: str, direction: common_pb2.Direction.ValueType, first: datetime, avail: list[list[float]], *,
          prices: list[float] | None = None, ramp: float = 0.0) -> bid_pb2.ProductOffer:
    """An offer whose period k (from ``first``) has bands ``avail[k]`` and MAXAVAIL their total (MW)."""
    periods = [bid_pb2.PeriodOffer(dispatch_interval=nem_time.to_timestamp(first + FIVE * k),
                                   max_avail_mw=sum(bands), band_avail_mw=bands,
                                   ramp_up_rate_mw_per_min=ramp)
               for k, bands in enumerate(avail)]
    return bid_pb2.ProductOffer(product=product, direction=direction, band_price=prices or PRICES,
                                periods=periods)


def bands(*leading: float) -> list[float]:
    return [*leading] + [0.0] * (10 - len(leading))


GEN, LOAD, NONE = common_pb2.DIRECTION_GEN, common_pb2.DIRECTION_LOAD, common_pb2.DIRECTION_UNSPECIFIED


def test_every_kind_of_change_is_named_per_offer_in_bid_order() -> None:
    standing = bid_pb2.Bid(offers=[
        offer("ENERGY", GEN, T, [bands(100.0)] * 3),
        offer("RAISE6SEC", NONE, T, [bands(50.0)] * 3),
        offer("LOWERREG", NONE, T, [bands(20.0)] * 3),
    ])
    new = bid_pb2.Bid(offers=[
        offer("LOWERREG", NONE, T, [bands(20.0)] * 3, ramp=3.0),  # not an availability: not material
        offer("ENERGY", GEN, T + FIVE, [bands(100.0), bands(140.0), bands(90.0), bands(90.0)],
              prices=[p + 1 for p in PRICES]),
        offer("ENERGY", LOAD, T, [bands(100.0)]),
        offer("RAISE6SEC", NONE, T, [bands(50.0), bands(30.0, 20.0), bands(50.0)]),  # same MAXAVAIL
    ])
    assert material_changes(new, standing, 1.0) == [
        "ENERGY/GEN band prices changed",
        "ENERGY/GEN adds 2 intervals from 17:55",
        "ENERGY/GEN availability changes in 1 intervals, first 17:50 MAXAVAIL 100->140 MW",
        "ENERGY/LOAD not offered in the bid in force",
        "RAISE6SEC availability changes in 1 intervals, first 17:45 MAXAVAIL 50->50 MW",
    ]


def test_moves_up_to_the_tolerance_are_not_material_and_band_counts_must_match() -> None:
    standing = bid_pb2.Bid(offers=[offer("ENERGY", GEN, T, [bands(100.0, 20.0)] * 2)])
    within = bid_pb2.Bid(offers=[offer("ENERGY", GEN, T, [bands(101.0, 19.0), bands(99.0, 21.0)])])
    assert material_changes(within, standing, 1.0) == []
    assert material_changes(within, standing, 0.0) == [
        "ENERGY/GEN availability changes in 2 intervals, first 17:40 MAXAVAIL 120->120 MW"]
    fewer_bands = bid_pb2.Bid(offers=[offer("ENERGY", GEN, T, [[100.0, 20.0], bands(100.0, 20.0)])])
    assert material_changes(fewer_bands, standing, 1.0) == [
        "ENERGY/GEN availability changes in 1 intervals, first 17:40 MAXAVAIL 120->120 MW"]


def test_periods_are_matched_by_interval_not_position() -> None:
    standing = bid_pb2.Bid(offers=[offer("ENERGY", GEN, T, [bands(10.0), bands(20.0), bands(30.0)])])
    shuffled = bid_pb2.Bid(offers=[offer("ENERGY", GEN, T, [bands(10.0), bands(20.0), bands(30.0)])])
    periods = list(shuffled.offers[0].periods)
    del shuffled.offers[0].periods[:]
    shuffled.offers[0].periods.extend(reversed(periods))
    assert material_changes(shuffled, standing, 1.0) == []
    shuffled.offers[0].periods[0].band_avail_mw[0] = 35.0  # the 17:50 period
    assert material_changes(shuffled, standing, 1.0) == [
        "ENERGY/GEN availability changes in 1 intervals, first 17:50 MAXAVAIL 30->30 MW"]


def _reference_changes(new: bid_pb2.Bid, standing: bid_pb2.Bid, tolerance_mw: float) -> list[str]:
    """The rule of material_changes written period by period, without arrays."""
    changes: list[str] = []
    standing_offers = {(o.product, o.direction): o for o in standing.offers}
    for new_offer in new.offers:
        side = {GEN: "GEN", LOAD: "LOAD"}.get(new_offer.direction)
        label = f"{new_offer.product}/{side}" if side else new_offer.product
        old_offer = standing_offers.get((new_offer.product, new_offer.direction))
        if old_offer is None:
            changes.append(f"{label} not offered in the bid in force")
            continue
        if list(new_offer.band_price) != list(old_offer.band_price):
            changes.append(f"{label} band prices changed")
        old = {p.dispatch_interval.seconds: p for p in old_offer.periods}
        uncovered = [p for p in new_offer.periods if p.dispatch_interval.seconds not in old]
        if uncovered:
            first = min(uncovered, key=lambda p: p.dispatch_interval.seconds)
            changes.append(f"{label} adds {len(uncovered)} intervals from "
                           f"{nem_time.from_timestamp(first.dispatch_interval):%H:%M}")
        moved = []
        for p in new_offer.periods:
            o = old.get(p.dispatch_interval.seconds)
            if o is None:
                continue
            band_moved = len(p.band_avail_mw) != len(o.band_avail_mw) or any(
                abs(a - b) > tolerance_mw for a, b in zip(p.band_avail_mw, o.band_avail_mw, strict=True))
            if abs(p.max_avail_mw - o.max_avail_mw) > tolerance_mw or band_moved:
                moved.append((p, o))
        if moved:
            p, o = moved[0]
            changes.append(f"{label} availability changes in {len(moved)} intervals, first "
                           f"{nem_time.from_timestamp(p.dispatch_interval):%H:%M} "
                           f"MAXAVAIL {o.max_avail_mw:.0f}->{p.max_avail_mw:.0f} MW")
    return changes


_avail = st.lists(st.sampled_from([0.0, 0.5, 10.0, 60.0]), min_size=10, max_size=10)
_offer_periods = st.lists(st.tuples(st.integers(0, 12), _avail), max_size=10,
                          unique_by=lambda period: period[0])


@st.composite
def _offers(draw: st.DrawFn) -> bid_pb2.Bid:
    offers = []
    for product, direction in draw(st.lists(st.sampled_from([("ENERGY", GEN), ("ENERGY", LOAD),
                                                             ("RAISE6SEC", NONE), ("LOWERREG", NONE)]),
                                            unique=True)):
        periods = [bid_pb2.PeriodOffer(dispatch_interval=nem_time.to_timestamp(T + FIVE * k),
                                       max_avail_mw=max(avail), band_avail_mw=avail)
                   for k, avail in draw(_offer_periods)]
        prices = draw(st.sampled_from([PRICES, [p + 1 for p in PRICES]]))
        offers.append(bid_pb2.ProductOffer(product=product, direction=direction, band_price=prices,
                                           periods=periods))
    return bid_pb2.Bid(offers=offers)


@settings(max_examples=200, deadline=None)
@given(new=_offers(), standing=_offers(), tolerance_mw=st.sampled_from([0.0, 1.0, 20.0]))
def test_changes_follow_the_period_by_period_rule(new: bid_pb2.Bid, standing: bid_pb2.Bid,
                                                  tolerance_mw: float) -> None:
    assert material_changes(new, standing, tolerance_mw) == _reference_changes(new, standing, tolerance_mw)
