"""A bid's period columns read from its encoding (algorithms/market/bid_columns.wire_period_columns) are the
columns read field by field, for every offer it answers for; the offers it leaves alone are read field by field."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from algorithms.common.battery import battery_spec_from_settings
from algorithms.market.bid_builder import build_safe_bid_columns
from algorithms.market.bid_columns import (
    ColumnarBid,
    PeriodColumns,
    fieldwise_period_columns,
    period_columns,
    wire_period_columns,
)
from algorithms.market.bid_validation import validate_bid
from settings import Settings, load_settings
from vpp.v1 import bid_pb2

START = 1_610_700_000  # 2021-01-15, UTC epoch seconds


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(environ={})


def _equal(left: PeriodColumns, right: PeriodColumns) -> bool:
    """Every column equal, dtype and shape included (same_as, plus the band matrix's presence)."""
    names = list(left.__dataclass_fields__)
    return left.same_as(right) and all(
        (getattr(left, name) is None) == (getattr(right, name) is None)
        and (getattr(left, name) is None or getattr(left, name).dtype == getattr(right, name).dtype)
        for name in names)


def _mixed_offer() -> bid_pb2.ProductOffer:
    """An FCAS offer whose period offers are encoded in several layouts: fields zero (absent) in some periods
    only, -0.0, NaN, infinities, huge values, negative availability, a recall period, nanoseconds, one period
    without a time and one with an empty time."""
    offer = bid_pb2.ProductOffer(product="RAISEREG", direction=1, band_price=[float(k) for k in range(10)])
    values = [0.0, -0.0, 12.5, float("nan"), 1e300, -3.0, float("inf"), 7.0]
    for k in range(40):
        period = offer.periods.add(
            max_avail_mw=values[k % len(values)],
            band_avail_mw=[float(k), 0.0, -0.0, 2.5, 0.0, 0.0, float("nan") if k == 9 else 0.0, 0.0, -1.0 * (k == 11),
                           7.0],
            ramp_up_rate_mw_per_min=float(k % 2), ramp_down_rate_mw_per_min=float(k % 3),
            pasa_avail_mw=float(k % 5), enablement_min_mw=float(k % 4), low_breakpoint_mw=float(k % 6),
            high_breakpoint_mw=float(k % 7), enablement_max_mw=-0.0 if k == 2 else 150.0 * (k % 2),
            energy_limit_mwh=float(k % 8 == 0), fixed_load_mw=float(k % 9 == 0), pasa_recall_period=float(k % 10 == 0))
        if k == 5:
            continue  # no dispatch_interval at all
        period.dispatch_interval.seconds = 0 if k == 6 else START + 300 * k
        if k == 7:
            period.dispatch_interval.nanos = 5
        if k == 6:
            period.dispatch_interval.SetInParent()  # present, but empty (the epoch)
    return offer


def test_a_builder_bid_is_read_from_its_encoding_as_field_by_field(settings: Settings) -> None:
    """Every offer of a bid the builder makes is read from its encoding (the fast path is the common case), to
    the same columns as field by field and as the builder wrote them."""
    first = datetime(2021, 1, 15, 16, 5)
    columnar = build_safe_bid_columns(
        battery_spec_from_settings(settings.battery), settings.bidding, settings.market, dispatch_interval=first,
        offer_time=datetime(2021, 1, 15, 8, 0), version=1, fcas_products=("RAISEREG", "LOWERREG", "RAISE6SEC"),
        initial_state_of_charge_mwh=80.0, reason="test")
    band_count = settings.market.band_count
    for offer, built in zip(columnar.bid.offers, columnar.offer_periods, strict=True):
        wire = wire_period_columns(offer, band_count)
        assert wire is not None, offer.product
        assert _equal(wire, fieldwise_period_columns(offer, band_count))
        assert wire.same_as(built)


def test_period_offers_in_several_layouts_are_read_as_field_by_field() -> None:
    offer = _mixed_offer()
    wire = wire_period_columns(offer, 10)
    assert wire is not None
    fieldwise = fieldwise_period_columns(offer, 10)
    assert _equal(wire, fieldwise)
    assert not wire.has_time[5] and wire.has_time[6] and wire.seconds[6] == 0 and wire.nanos[7] == 5
    assert wire.band_avail_invalid[9] and wire.band_avail_invalid[11] and not wire.band_avail_invalid[10]
    # Another band count expected: no band matrix, the same invalid flags.
    other = wire_period_columns(offer, 12)
    assert other is not None and other.band_avail_mw is None and _equal(other, fieldwise_period_columns(offer, 12))


def test_period_offers_of_one_two_and_three_length_bytes_are_all_found() -> None:
    """Period offers whose encoded length takes one byte (under 128 bytes), two (under 16 KiB) and three (a
    period of 2,100 bands), among the offer's other fields, are each read as field by field."""
    for band_count in (3, 10, 2100):
        offer = bid_pb2.ProductOffer(product="ENERGY", direction=1, band_price=[float(k) for k in range(band_count)])
        for k in range(6):
            offer.periods.add(max_avail_mw=float(k), band_avail_mw=[float(k + b) for b in range(band_count)],
                              ramp_up_rate_mw_per_min=3.0 * (k % 2)).dispatch_interval.seconds = START + 300 * k
        offer.daily_energy_constraint_mwh = 12.5  # a field of the offer after its period offers
        wire = wire_period_columns(offer, band_count)
        assert wire is not None, band_count
        assert _equal(wire, fieldwise_period_columns(offer, band_count))
        assert wire.periods == 6 and wire.seconds[5] == START + 1500


@pytest.mark.parametrize("defect", ["ragged bands", "no bands in one period", "negative time", "no periods"])
def test_what_the_encoding_reader_leaves_alone_is_read_field_by_field(defect: str) -> None:
    offer = _mixed_offer()
    if defect == "ragged bands":
        del offer.periods[4].band_avail_mw[-1]
    elif defect == "no bands in one period":
        del offer.periods[4].band_avail_mw[:]
    elif defect == "negative time":
        offer.periods[3].dispatch_interval.seconds = -300
    else:
        del offer.periods[:]
    assert wire_period_columns(offer, 10) is None
    assert _equal(period_columns(offer, 10), fieldwise_period_columns(offer, 10))


def test_validation_finds_the_same_defects_on_columns_read_from_the_encoding(settings: Settings) -> None:
    """A broken bid validated with its columns read from the encoding (the bid service's path) and read field by
    field gives the same violations."""
    first = datetime(2021, 1, 15, 16, 5)
    columnar = build_safe_bid_columns(
        battery_spec_from_settings(settings.battery), settings.bidding, settings.market, dispatch_interval=first,
        offer_time=datetime(2021, 1, 15, 8, 0), version=1, fcas_products=("RAISEREG", "LOWERREG"),
        initial_state_of_charge_mwh=80.0, reason="test")
    broken = bid_pb2.Bid()
    broken.CopyFrom(columnar.bid)
    broken.offers[0].periods[3].band_avail_mw[2] = float("nan")
    broken.offers[0].periods[5].max_avail_mw = -1.0
    broken.offers[1].periods[8].dispatch_interval.seconds += 7
    broken.offers[2].periods[2].enablement_min_mw = 500.0
    band_count = settings.market.band_count
    fieldwise = ColumnarBid(broken, tuple(fieldwise_period_columns(o, band_count) for o in broken.offers))
    battery = battery_spec_from_settings(settings.battery)
    products = ("ENERGY", "RAISEREG", "LOWERREG")
    expected = validate_bid(fieldwise, battery, settings.market, products=products)
    assert expected
    assert validate_bid(broken, battery, settings.market, products=products) == expected
    assert validate_bid(ColumnarBid.of(broken, band_count), battery, settings.market, products=products) == expected
    assert np.isnan(ColumnarBid.of(broken, band_count).offer_periods[0].band_avail_mw[3, 2])  # type: ignore[index]


def test_the_covered_intervals_read_from_columns_are_those_read_from_the_protobuf(settings: Settings) -> None:
    """The bid service stores the intervals a bid covers from the columns it validated: the same times as
    read period by period, for a builder bid and for odd times (none, the epoch, nanoseconds, one too large
    to be a date)."""
    from services.bid_service import covered_intervals

    first = datetime(2021, 1, 15, 16, 5)
    built = build_safe_bid_columns(
        battery_spec_from_settings(settings.battery), settings.bidding, settings.market, dispatch_interval=first,
        offer_time=datetime(2021, 1, 15, 8, 0), version=1, fcas_products=("RAISEREG",),
        initial_state_of_charge_mwh=80.0, reason="test")
    odd = bid_pb2.Bid()
    odd.offers.append(_mixed_offer())
    odd.offers.append(_mixed_offer())
    odd.offers[1].periods[0].dispatch_interval.seconds = 10**15  # not a date: left out, as field by field
    for bid in (built.bid, odd):
        from_columns = covered_intervals(ColumnarBid.of(bid, settings.market.band_count))
        assert from_columns == covered_intervals(bid)
        assert list(from_columns) == sorted(set(from_columns))
    assert len(covered_intervals(built.bid)) == built.offer_periods[0].periods
