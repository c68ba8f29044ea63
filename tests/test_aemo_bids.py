"""The real-bid oracle: every bid AEMO accepted (data/nemweb, 2018–2026) is read into the bid model and passes
the validator; the reader keeps AEMO's fields; registrations, not special cases, decide the BDU rules."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aemo.bid_check import CheckReport, check_published_bids, tradable_products
from aemo.bids import BidTables, PublishedBids, published_bids, read_bid_tables
from aemo.errors import AemoDataError
from aemo.price_thresholds import with_price_thresholds
from aemo.registrations import UnitRegistry, registry_from_dudetailsummary
from algorithms.common import nem_time
from algorithms.market.bid_validation import validate_bid
from algorithms.market.registration import UnitKind
from settings import load_settings
from tests.aemo_fixtures import NEMWEB_ROOT, archive_zip
from vpp.v1 import bid_pb2, common_pb2

RULES = load_settings(environ={}).market
BDU_RULES_START = date(2024, 6, 3)


@pytest.fixture(scope="module")
def tables() -> BidTables:
    return read_bid_tables([NEMWEB_ROOT])


@pytest.fixture(scope="module")
def read(tables: BidTables) -> PublishedBids:
    assert tables.day_offers is not None and tables.period_offers is not None
    return published_bids(tables.day_offers, tables.period_offers, RULES.daily_bid_close)


@pytest.fixture(scope="module")
def report(tables: BidTables) -> CheckReport:
    return check_published_bids(tables, RULES)


def _expected_offers(tables: BidTables) -> int:
    """Distinct (unit, trading day, offer time) of the period rows whose day offer is in the data."""
    assert tables.day_offers is not None and tables.period_offers is not None
    key = ["DUID", "SETTLEMENTDATE", "BIDTYPE", "DIRECTION"]
    days = tables.day_offers[key].fillna({"DIRECTION": ""}).drop_duplicates()
    periods = tables.period_offers.fillna({"DIRECTION": ""})
    matched = periods.merge(days, on=key, how="inner")
    return int(matched.groupby(["DUID", "SETTLEMENTDATE", "OFFERDATE"]).ngroups)


def test_every_real_bid_aemo_accepted_passes(tables: BidTables, report: CheckReport) -> None:
    failures = [f"{day.unit_id} {day.trading_day} offer {failure.offer_time}: {failure.violation}"
                for day in report.days for failure in day.failures]
    assert failures == []
    assert report.unchecked_bids == 0
    expected = _expected_offers(tables)
    assert report.bids == report.passed_bids == expected
    assert expected > 600  # every offer in force of the two units on the five days of each of eight months


def test_the_oracle_spans_both_formats_both_units_energy_and_fcas(read: PublishedBids) -> None:
    bids = [published.bid for published in read.bids]
    assert {bid.unit_id for bid in bids} == {"AGLHAL", "HDWF2"}
    assert {date.fromisoformat(bid.trading_day).year for bid in bids} == {2018, 2019, 2020, 2024, 2025, 2026}
    products = {offer.product for bid in bids for offer in bid.offers}
    assert products == {"ENERGY", "RAISE60SEC", "LOWER60SEC", "RAISE5MIN", "LOWER5MIN", "RAISEREG", "LOWERREG"}
    before = {offer.direction for bid in bids if date.fromisoformat(bid.trading_day) < BDU_RULES_START
              for offer in bid.offers}
    after = {offer.direction for bid in bids if date.fromisoformat(bid.trading_day) >= BDU_RULES_START
             for offer in bid.offers}
    assert before == {common_pb2.DIRECTION_UNSPECIFIED} and after == {common_pb2.DIRECTION_GEN}
    entry_types = {bid.entry_type for bid in bids}
    assert entry_types == {bid_pb2.ENTRY_TYPE_DAILY, bid_pb2.ENTRY_TYPE_REBID}


def test_rebids_during_the_day_are_bids_of_their_own(tables: BidTables, read: PublishedBids) -> None:
    """AGLHAL on 1 August 2024: the day offer (a REBID the evening before) and the rebids of the day."""
    day = [published for published in read.bids
           if published.unit_id == "AGLHAL" and published.trading_day == date(2024, 8, 1)]
    assert tables.period_offers is not None
    rows = tables.period_offers[(tables.period_offers["DUID"] == "AGLHAL")
                                & (tables.period_offers["SETTLEMENTDATE"] == pd.Timestamp(2024, 8, 1))]
    assert len(day) == rows["OFFERDATE"].nunique() > 1
    first = day[0]
    assert nem_time.from_timestamp(first.bid.offer_time) == datetime(2024, 7, 31, 21, 21, 58)
    assert first.bid.entry_type == bid_pb2.ENTRY_TYPE_REBID
    assert first.bid.rebid_explanation == "Adj avail due to ambient conditions"
    assert "rebid_explanation" not in first.withheld and "event_time" in first.withheld
    assert first.bid.participant_id == "HALLETT"
    for later in day[1:]:
        assert later.bid.entry_type == bid_pb2.ENTRY_TYPE_REBID and later.bid.rebid_explanation == ""
        assert "rebid_explanation" in later.withheld
        assert list(later.bid.offers[0].band_price) == list(first.bid.offers[0].band_price)
    by_offer = rows.groupby("OFFERDATE").size()
    for published in day:
        offered = pd.Timestamp(nem_time.from_timestamp(published.bid.offer_time))
        assert len(published.bid.offers[0].periods) == by_offer[offered]
    # every interval of the day comes from exactly one offer
    intervals = [p.dispatch_interval.seconds for published in day for p in published.bid.offers[0].periods]
    assert len(intervals) == len(set(intervals)) == len(rows)


def test_day_fields_and_half_hour_period_ids(read: PublishedBids) -> None:
    """2018: PERIODID counts half hours (1..48); the bid's periods are the 5-minute INTERVAL_DATETIMEs."""
    bid = next(published.bid for published in read.bids
               if published.unit_id == "AGLHAL" and published.trading_day == date(2018, 4, 1))
    energy = bid.offers[0]
    assert energy.product == "ENERGY" and energy.direction == common_pb2.DIRECTION_UNSPECIFIED
    assert list(energy.band_price)[:3] == [-982.0, 0.0, 273.79]
    assert energy.daily_energy_constraint_mwh == 4140
    assert (energy.fast_start_profile.minimum_load_mw, energy.fast_start_profile.t1_minutes,
            energy.fast_start_profile.t4_minutes) == (2, 10, 2)
    first = energy.periods[0]
    assert nem_time.from_timestamp(first.dispatch_interval) == datetime(2018, 4, 1, 4, 5)
    assert (first.max_avail_mw, first.ramp_up_rate_mw_per_min, first.pasa_avail_mw) == (205, 12, 205)
    assert list(first.band_avail_mw) == [0, 0, 0, 0, 0, 0, 60, 0, 0, 160]
    seconds = np.array([p.dispatch_interval.seconds for p in energy.periods])
    assert np.all(np.diff(seconds) == 300)
    hdwf2 = next(published.bid for published in read.bids
                 if published.unit_id == "HDWF2" and published.trading_day == date(2018, 4, 1)
                 and published.bid.offers[0].product == "RAISE5MIN")
    assert hdwf2.submitted_for_trading_day == "2018-02-02"  # a standing offer in force two months on
    trapezium = hdwf2.offers[0].periods[0]
    assert (trapezium.enablement_min_mw, trapezium.low_breakpoint_mw, trapezium.high_breakpoint_mw,
            trapezium.enablement_max_mw) == (20, 20, 21, 102)


def test_period_rows_without_their_day_offer_are_not_guessed(read: PublishedBids) -> None:
    days = {(rows.unit_id, rows.trading_day) for rows in read.incomplete}
    assert ("HDWF2", date(2018, 4, 28)) in days  # the pruned data keeps one more day of period rows
    assert all("no band prices" in rows.reason for rows in read.incomplete)
    assert not days & {(published.unit_id, published.trading_day) for published in read.bids}


def test_the_unit_registration_decides_the_bdu_rules(tables: BidTables, read: PublishedBids) -> None:
    """The same real bids of the wind farm, were it registered as a bidirectional unit, break the BDU rules."""
    registry = registry_from_dudetailsummary(tables.registrations)
    limits = with_price_thresholds(RULES, tables.price_thresholds)
    assert tables.day_offers is not None
    products = tradable_products(tables.day_offers)
    for trading_day, fragment in ((date(2018, 4, 1), "needs a GEN/LOAD direction"),
                                  (date(2024, 8, 1), "lacks the LOAD side")):
        published = next(p for p in read.bids if p.unit_id == "HDWF2" and p.trading_day == trading_day
                         and p.bid.offers[0].product == "ENERGY")
        generator = registry.on("HDWF2", trading_day)
        assert generator is not None and generator.kind is UnitKind.GENERATOR
        assert validate_bid(published.bid, generator, limits, products=products, withheld=published.withheld) == []
        as_bdu = dataclasses.replace(generator, kind=UnitKind.BIDIRECTIONAL)
        violations = validate_bid(published.bid, as_bdu, limits, products=products, withheld=published.withheld)
        assert any(fragment in v.message for v in violations), violations
    contingency = next(p for p in read.bids if p.unit_id == "HDWF2" and p.trading_day == date(2024, 8, 1))
    as_bdu = dataclasses.replace(registry.on("HDWF2", date(2024, 8, 1)), kind=UnitKind.BIDIRECTIONAL)  # type: ignore[arg-type]
    violations = validate_bid(contingency.bid, as_bdu, limits, products=products, withheld=contingency.withheld)
    assert any(v.rule == "V0" and "'RAISE60SEC' GEN" in v.message and "contingency" in v.message
               for v in violations)


def test_damaged_real_bids_fail_with_rule_and_field(tables: BidTables, read: PublishedBids) -> None:
    registry = registry_from_dudetailsummary(tables.registrations)
    limits = with_price_thresholds(RULES, tables.price_thresholds)
    assert tables.day_offers is not None
    products = tradable_products(tables.day_offers)
    published = next(p for p in read.bids if p.unit_id == "AGLHAL" and p.trading_day == date(2025, 1, 1))
    registration = registry.on("AGLHAL", date(2025, 1, 1))
    assert registration is not None
    above_cap = bid_pb2.Bid()
    above_cap.CopyFrom(published.bid)
    # FY2024-25 cap 17,500 $/MWh x the loss factor of AGLHAL's registration
    above_cap.offers[0].band_price[9] = round(17_500 * registration.mlf_gen, 2) + 0.01
    violations = validate_bid(above_cap, registration, limits, products=products, withheld=published.withheld)
    assert [(v.rule, v.field) for v in violations] == [("V2", "band_price")]
    small = dataclasses.replace(registration, max_capacity_mw=150.0)
    violations = validate_bid(published.bid, small, limits, products=products, withheld=published.withheld)
    assert {(v.rule, v.field) for v in violations} == {("V3", "max_avail_mw")}


def test_registrations_from_dudetailsummary(tables: BidTables) -> None:
    registry = registry_from_dudetailsummary(tables.registrations)
    assert registry.units == ("AGLHAL", "HDWF2")
    hallett = registry.on("AGLHAL", date(2019, 12, 1))
    assert hallett is not None and hallett.kind is UnitKind.GENERATOR and hallett.region == "SA1"
    assert hallett.mlf_gen == pytest.approx(0.9748) and hallett.min_ramp_up_mw_per_min == 12
    assert registry.on("AGLHAL", date(2020, 1, 30)).min_ramp_up_mw_per_min == 13  # type: ignore[union-attr]
    assert registry.on("HDWF2", date(2017, 1, 1)) is None  # before its registration
    assert registry.on("NOSUCH", date(2020, 1, 1)) is None
    assert UnitRegistry({}).units == ()


def test_unknown_direction_is_an_error(tables: BidTables) -> None:
    assert tables.day_offers is not None and tables.period_offers is not None
    days = tables.day_offers.copy()
    days.loc[days.index[-1], "DIRECTION"] = "SIDEWAYS"
    with pytest.raises(AemoDataError, match="DIRECTION SIDEWAYS"):
        published_bids(days, tables.period_offers, time(12, 30))


def test_folders_and_single_files_read_alike(tables: BidTables) -> None:
    one_month = read_bid_tables([archive_zip("2024_08", "BIDDAYOFFER_D"), archive_zip("2024_08", "BIDPEROFFER_D")])
    assert one_month.day_offers is not None and tables.day_offers is not None
    assert len(one_month.day_offers) == (tables.day_offers["SETTLEMENTDATE"].dt.strftime("%Y-%m") == "2024-08").sum()
    assert one_month.price_thresholds is None and one_month.registrations is None
    with pytest.raises(AemoDataError, match="no such file or folder"):
        read_bid_tables([Path("/no/such/folder")])
