"""Bid validation V0–V8: a valid reference bid passes, each rule is caught by name, nothing crashes."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from algorithms.common import nem_time
from algorithms.common.battery import battery_spec_from_settings
from algorithms.market.bid_validation import Violation, validate_bid
from algorithms.market.registration import UnitKind, UnitRegistration, registration_of_battery
from settings import load_settings
from vpp.v1 import bid_pb2, common_pb2

CONFIG = load_settings(environ={})
RULES = CONFIG.market
# The reference bid below is laid out on these ladders (GEN band 1 at $0, negative LOAD bands below it).
BIDDING = replace(CONFIG.bidding,
                  gen_band_prices=(0.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 5000.0, 10000.0, 14900.0),
                  load_band_prices=(-1000.0, -500.0, -300.0, -100.0, -50.0, -20.0, -10.0, -1.0, 100.0, 299.0))
BATTERY = battery_spec_from_settings(CONFIG.battery)
FCAS = ("RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG",
        "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG")
PRODUCTS = ("ENERGY", *FCAS)
FIRST_INTERVAL = datetime(2021, 1, 5, 17, 35)  # trading day 2021-01-05
PERIODS = 12
# A bidirectional unit offers regulation FCAS in each direction, contingency FCAS as one offer.
FCAS_OFFERS: tuple[tuple[str, int], ...] = tuple(
    (product, side) for product in FCAS
    for side in ((common_pb2.DIRECTION_GEN, common_pb2.DIRECTION_LOAD) if product.endswith("REG")
                 else (common_pb2.DIRECTION_UNSPECIFIED,)))
DAILY_PRICES: dict[tuple[str, int], tuple[float, ...]] = {
    ("ENERGY", common_pb2.DIRECTION_GEN): BIDDING.gen_band_prices,
    ("ENERGY", common_pb2.DIRECTION_LOAD): BIDDING.load_band_prices,
    **{key: BIDDING.fcas_band_prices for key in FCAS_OFFERS},
}
RULE_PATTERN = re.compile(r"^V[0-8]$")
GEN, LOAD = 0, 1  # offer index in the reference bid
FIRST_FCAS = 2
OFFER = {f"{product}/{side}": FIRST_FCAS + i for i, (product, side) in enumerate(FCAS_OFFERS)}
RAISEREG_GEN = OFFER[f"RAISEREG/{common_pb2.DIRECTION_GEN}"]
RAISEREG_LOAD = OFFER[f"RAISEREG/{common_pb2.DIRECTION_LOAD}"]
LOWER6SEC = OFFER[f"LOWER6SEC/{common_pb2.DIRECTION_UNSPECIFIED}"]
# Trapezium corners (ENABLEMENTMIN, LOWBREAKPOINT, HIGHBREAKPOINT, ENABLEMENTMAX) by side: contingency on
# net output, regulation GEN at >= 0 MW, regulation LOAD mirrored at <= 0 MW.
CORNERS = {common_pb2.DIRECTION_UNSPECIFIED: (-150.0, -150.0, 130.0, 150.0),
           common_pb2.DIRECTION_GEN: (0.0, 0.0, 130.0, 150.0),
           common_pb2.DIRECTION_LOAD: (0.0, 0.0, -150.0, -150.0)}


def reference_bid(periods: int = PERIODS) -> bid_pb2.Bid:
    """A valid DAILY bid: 100 MW planned discharge at $0, spike headroom, negative-price charging, FCAS."""
    bid = bid_pb2.Bid(unit_id="HPR1", trading_day="2021-01-05",
                      dispatch_interval=nem_time.to_timestamp(FIRST_INTERVAL), version=1,
                      entry_type=bid_pb2.ENTRY_TYPE_DAILY,
                      offer_time=nem_time.to_timestamp(datetime(2021, 1, 4, 11, 0)), plan_hash="abc")
    stamps = [nem_time.to_timestamp(FIRST_INTERVAL + timedelta(minutes=5 * i)) for i in range(periods)]
    gen = bid.offers.add(product="ENERGY", direction=common_pb2.DIRECTION_GEN,
                         band_price=BIDDING.gen_band_prices)
    load = bid.offers.add(product="ENERGY", direction=common_pb2.DIRECTION_LOAD,
                          band_price=BIDDING.load_band_prices)
    for stamp in stamps:
        gen.periods.add(dispatch_interval=stamp, max_avail_mw=150.0,
                        band_avail_mw=[100.0, 0, 0, 0, 10, 10, 10, 10, 10, 0],
                        ramp_up_rate_mw_per_min=150, ramp_down_rate_mw_per_min=150, pasa_avail_mw=150)
        load.periods.add(dispatch_interval=stamp, max_avail_mw=80.0,
                         band_avail_mw=[10.0, 10, 10, 10, 10, 10, 10, 10, 0, 0],
                         ramp_up_rate_mw_per_min=150, ramp_down_rate_mw_per_min=150, pasa_avail_mw=150,
                         energy_limit_mwh=190)
    for product, side in FCAS_OFFERS:
        offer = bid.offers.add(product=product, direction=side,  # type: ignore[arg-type]
                               band_price=BIDDING.fcas_band_prices)
        e_min, low, high, e_max = CORNERS[side]
        for stamp in stamps:
            offer.periods.add(dispatch_interval=stamp, max_avail_mw=20.0, band_avail_mw=[20.0] + [0.0] * 9,
                              enablement_min_mw=e_min, low_breakpoint_mw=low, high_breakpoint_mw=high,
                              enablement_max_mw=e_max)
    return bid


def make_rebid(bid: bid_pb2.Bid, offer_time: datetime = datetime(2021, 1, 5, 17, 31)) -> bid_pb2.Bid:
    """``bid`` as a valid REBID offered at ``offer_time`` (after the daily close by default)."""
    bid.entry_type = bid_pb2.ENTRY_TYPE_REBID
    bid.offer_time.CopyFrom(nem_time.to_timestamp(offer_time))
    bid.event_time.CopyFrom(nem_time.to_timestamp(offer_time - timedelta(minutes=1)))
    bid.rebid_explanation = ("Availability rebid from 17:35: plan abc sets discharge 100 MW; "
                             "SoC 97 MWh at 17:30")
    return bid


def check(bid: bid_pb2.Bid, *, battery: common_pb2.BatterySpec = BATTERY,
          daily: dict[tuple[str, int], tuple[float, ...]] | None = DAILY_PRICES) -> list[Violation]:
    return validate_bid(bid, battery, RULES, products=PRODUCTS, daily_band_prices=daily)


def rules_of(violations: list[Violation]) -> set[str]:
    return {v.rule for v in violations}


def test_reference_bid_and_its_rebid_are_valid() -> None:
    assert check(reference_bid()) == []
    assert check(make_rebid(reference_bid())) == []
    assert check(reference_bid(288 - 162)) == []  # to the end of the trading day


def test_violation_prints_its_rule() -> None:
    assert str(Violation("V2", "price too high")) == "V2: price too high"


# --- V0 structure -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, fragment", [
    (lambda b: setattr(b, "unit_id", ""), "no unit id"),
    (lambda b: setattr(b, "unit_id", "OTHER1"), "not the registered unit"),
    (lambda b: setattr(b, "trading_day", "2021-13-40"), "not a YYYY-MM-DD"),
    (lambda b: setattr(b, "trading_day", "2021-01-06"), "not in trading day"),
    (lambda b: b.ClearField("dispatch_interval"), "no (readable) dispatch interval"),
    (lambda b: b.ClearField("offer_time"), "no (readable) offer time"),
    (lambda b: setattr(b, "entry_type", bid_pb2.ENTRY_TYPE_UNSPECIFIED), "neither DAILY nor REBID"),
    (lambda b: b.ClearField("offers"), "no product offers"),
    (lambda b: b.offers.add().CopyFrom(b.offers[FIRST_FCAS]), "offered more than once"),
    (lambda b: setattr(b.offers[FIRST_FCAS], "product", "RAISE1SEC"), "not tradable"),
    (lambda b: setattr(b.offers[FIRST_FCAS], "direction", common_pb2.DIRECTION_GEN), "carries no GEN/LOAD"),
    (lambda b: setattr(b.offers[RAISEREG_GEN], "direction", common_pb2.DIRECTION_UNSPECIFIED),
     "regulation FCAS offer needs a GEN/LOAD direction"),
    (lambda b: setattr(b, "reference_id", "r" * 101), "more than AEMO's 100"),
    (lambda b: b.offers[FIRST_FCAS].ClearField("periods"), "no period offers"),
    (lambda b: b.offers[GEN].periods[3].ClearField("dispatch_interval"), "without a dispatch interval"),
    (lambda b: setattr(b.offers[GEN].periods[3].dispatch_interval, "seconds",
                       b.offers[GEN].periods[3].dispatch_interval.seconds + 60), "5-minute grid"),
    (lambda b: setattr(b.offers[GEN].periods[3].dispatch_interval, "seconds",
                       b.offers[GEN].periods[3].dispatch_interval.seconds + 86400), "outside trading day"),
    (lambda b: b.offers[GEN].periods[3].dispatch_interval.CopyFrom(
        b.offers[GEN].periods[2].dispatch_interval), "more than once"),
])
def test_structure_violations_are_v0(mutate: Callable[[bid_pb2.Bid], object], fragment: str) -> None:
    bid = reference_bid()
    mutate(bid)
    violations = check(bid)
    assert any(v.rule == "V0" and fragment in v.message for v in violations), violations


def test_periods_out_of_order_are_each_offered_once_and_a_repeat_anywhere_is_found() -> None:
    bid = reference_bid()
    periods = bid.offers[GEN].periods
    first, last = bid_pb2.PeriodOffer(), bid_pb2.PeriodOffer()
    first.CopyFrom(periods[0])
    last.CopyFrom(periods[-1])
    periods[0].CopyFrom(last)  # swapped: no longer increasing, still every interval once
    periods[-1].CopyFrom(first)
    assert not any("more than once" in v.message for v in check(bid))
    periods[-1].dispatch_interval.CopyFrom(periods[3].dispatch_interval)  # a repeat, not next to its twin
    assert any(v.rule == "V0" and "more than once" in v.message for v in check(bid))


def test_energy_offer_without_direction_is_v0() -> None:
    bid = reference_bid()
    bid.offers[LOAD].direction = common_pb2.DIRECTION_UNSPECIFIED
    violations = check(bid)
    assert any(v.rule == "V0" and "GEN/LOAD direction" in v.message and v.field == "direction"
               for v in violations)
    assert any(v.rule == "V6" and "LOAD" in v.message for v in violations)


# --- V1 bands -----------------------------------------------------------------------------------------

def test_v1_band_price_count() -> None:
    bid = reference_bid()
    del bid.offers[GEN].band_price[-1]
    violations = check(bid, daily=None)
    assert rules_of(violations) == {"V1"}
    assert "'ENERGY' GEN has 9 band prices" in str(violations[0])


def test_v1_prices_strictly_increasing() -> None:
    bid = reference_bid()
    bid.offers[FIRST_FCAS].band_price[3] = bid.offers[FIRST_FCAS].band_price[2]
    assert rules_of(check(bid, daily=None)) == {"V1"}


def test_v1_band_availability_count_names_the_interval() -> None:
    bid = reference_bid()
    bid.offers[LOAD].periods[4].band_avail_mw.append(0.0)
    violations = check(bid)
    assert rules_of(violations) == {"V1"}
    assert "LOAD" in violations[0].message and "2021-01-05 17:55" in violations[0].message


# --- V2 price limits ----------------------------------------------------------------------------------

def test_v2_cap_depends_on_the_financial_year() -> None:
    bid = reference_bid()
    bid.offers[GEN].band_price[-1] = 15_050.0  # above the 2020-21 cap of 15,000
    assert rules_of(check(bid, daily=None)) == {"V2"}
    july = reference_bid()
    july.trading_day = "2021-07-05"
    shift = int((datetime(2021, 7, 5) - datetime(2021, 1, 5)).total_seconds())
    july.dispatch_interval.seconds += shift
    for offer in july.offers:
        for period in offer.periods:
            period.dispatch_interval.seconds += shift
    july.offer_time.seconds += shift
    july.offers[GEN].band_price[-1] = 15_050.0  # below the 2021-22 cap of 15,100
    assert check(july, daily=None) == []


@pytest.mark.parametrize("offer, band, price", [
    (LOAD, 0, -1000.01), (GEN, 9, math.nan), (GEN, 9, math.inf), (FIRST_FCAS, 0, -0.5)])
def test_v2_floor_and_non_finite(offer: int, band: int, price: float) -> None:
    bid = reference_bid()
    bid.offers[offer].band_price[band] = price
    violations = check(bid, daily=None)
    assert "V2" in rules_of(violations)
    assert rules_of(violations) <= {"V1", "V2", "V6"}  # NaN also breaks ordering


# --- V3 availabilities --------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, fragment", [
    ("max_avail_mw", 150.5, "registered capacity"),
    ("max_avail_mw", -1.0, "MAXAVAIL negative"),
    ("max_avail_mw", math.nan, "MAXAVAIL negative or not finite"),
    ("pasa_avail_mw", -5.0, "PASA"),
])
def test_v3_maxavail_and_pasa(field: str, value: float, fragment: str) -> None:
    bid = reference_bid()
    setattr(bid.offers[GEN].periods[7], field, value)
    violations = check(bid)
    assert rules_of(violations) == {"V3"}
    assert fragment in violations[0].message and "18:10" in violations[0].message


def test_v3_negative_band_availability() -> None:
    bid = reference_bid()
    bid.offers[RAISEREG_LOAD].periods[0].band_avail_mw[5] = -0.001
    violations = check(bid)
    assert rules_of(violations) == {"V3"}
    assert "RAISEREG" in violations[0].message


# --- V4 prices fixed after the daily close ------------------------------------------------------------

def test_v4_rebid_after_close_cannot_change_prices() -> None:
    bid = make_rebid(reference_bid())
    bid.offers[GEN].band_price[4] = 310.0
    violations = check(bid)
    assert rules_of(violations) == {"V4"}
    assert "'ENERGY' GEN" in violations[0].message
    assert check(bid, daily=None) == []  # nothing to compare with


def test_v4_prices_may_change_before_the_close() -> None:
    bid = make_rebid(reference_bid(), offer_time=datetime(2021, 1, 4, 12, 30))
    bid.offers[GEN].band_price[4] = 310.0
    assert check(bid) == []


def test_v4_daily_entry_after_close_and_unknown_daily_prices() -> None:
    late_daily = reference_bid()
    late_daily.offer_time.CopyFrom(nem_time.to_timestamp(datetime(2021, 1, 4, 12, 31)))
    assert rules_of(check(late_daily)) == {"V4"}
    rebid = make_rebid(reference_bid())
    partial = {k: v for k, v in DAILY_PRICES.items() if k[0] != "LOWERREG"}
    violations = check(rebid, daily=partial)
    assert rules_of(violations) == {"V4"} and "LOWERREG" in violations[0].message
    assert {v.field for v in violations} == {"band_price"} and len(violations) == 2  # GEN and LOAD


# --- V5 rebid explanation -----------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, fragment", [
    (lambda b: setattr(b, "rebid_explanation", "  "), "without an explanation"),
    (lambda b: setattr(b, "rebid_explanation", "x" * 501), "501 characters"),
    (lambda b: b.ClearField("event_time"), "without a (readable) event time"),
    (lambda b: b.event_time.CopyFrom(nem_time.to_timestamp(datetime(2021, 1, 5, 17, 40))), "after its offer"),
])
def test_v5_rebid_reason(mutate: Callable[[bid_pb2.Bid], object], fragment: str) -> None:
    bid = make_rebid(reference_bid())
    mutate(bid)
    violations = check(bid)
    assert rules_of(violations) == {"V5"}
    assert fragment in violations[0].message


def test_v5_does_not_apply_to_daily_bids() -> None:
    bid = reference_bid()
    bid.rebid_explanation = ""
    assert check(bid) == []


# --- V6 battery ---------------------------------------------------------------------------------------

def test_v6_both_directions_required() -> None:
    bid = reference_bid()
    del bid.offers[LOAD]
    violations = check(bid)
    assert rules_of(violations) == {"V6"} and "LOAD" in violations[0].message


def test_v6_convexity_names_the_interval() -> None:
    bid = reference_bid()
    bid.offers[LOAD].periods[2].band_avail_mw[8] = 5.0  # charge at $100 while discharging at $0
    bid.offers[LOAD].periods[2].max_avail_mw = 85.0
    violations = check(bid)
    assert rules_of(violations) == {"V6"}
    assert "17:45" in violations[0].message and "not convex" in violations[0].message


def test_v6_bands_beyond_maxavail_are_not_effective() -> None:
    bid = reference_bid()
    period = bid.offers[LOAD].periods[2]
    period.band_avail_mw[8] = 5.0
    period.max_avail_mw = 80.0  # the eight cheaper bands already hold 80 MW: band 9 is not effective
    assert check(bid) == []
    period.max_avail_mw = 80.5
    assert rules_of(check(bid)) == {"V6"}


def test_v6_convexity_uses_loss_factors() -> None:
    bid = reference_bid()
    for period in bid.offers[GEN].periods:
        period.band_avail_mw[0] = 0.0  # lowest effective GEN band: $300
    for period in bid.offers[LOAD].periods:
        period.band_avail_mw[9] = 5.0  # highest effective LOAD band: $299
        period.max_avail_mw = 85.0
    assert check(bid) == []
    low_gen_mlf = common_pb2.BatterySpec()
    low_gen_mlf.CopyFrom(BATTERY)
    low_gen_mlf.mlf_gen = 1.1  # 300 / 1.1 < 299 / 1.0
    violations = check(bid, battery=low_gen_mlf)
    assert rules_of(violations) == {"V6"} and "in 12 interval(s)" in violations[0].message


@pytest.mark.parametrize("limit, fragment", [(195.0, "not within [0, 194]"), (-1.0, "not within"),
                                             (10.5, "whole number of MWh"), (math.nan, "not within")])
def test_v6_energy_limit(limit: float, fragment: str) -> None:
    bid = reference_bid()
    bid.offers[LOAD].periods[0].energy_limit_mwh = limit
    violations = check(bid)
    assert rules_of(violations) == {"V6"} and fragment in violations[0].message


# --- V7 trapezium -------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("low_breakpoint_mw", -151.0), ("high_breakpoint_mw", -150.5),
                                          ("high_breakpoint_mw", 151.0), ("enablement_max_mw", math.inf)])
def test_v7_trapezium_order(field: str, value: float) -> None:
    bid = reference_bid()
    setattr(bid.offers[LOWER6SEC].periods[5], field, value)
    violations = check(bid)
    assert rules_of(violations) == {"V7"}
    assert "LOWER6SEC" in violations[0].message and "18:00" in violations[0].message


# --- V8 ramp rates ------------------------------------------------------------------------------------

def test_v8_ramp_below_minimum_needs_a_reason() -> None:
    bid = reference_bid()
    bid.offers[GEN].periods[1].ramp_down_rate_mw_per_min = 2.0
    violations = check(bid)
    assert rules_of(violations) == {"V8"} and "ramp down" in violations[0].message
    bid.ramp_rate_reason = "inverter fault on 2 of 4 units since 16:50"
    assert check(bid) == []


@pytest.mark.parametrize("rate", [3.5, -3.0, math.nan])
def test_v8_ramp_rates_whole_and_finite(rate: float) -> None:
    bid = reference_bid()
    bid.offers[LOAD].periods[1].ramp_up_rate_mw_per_min = rate
    bid.ramp_rate_reason = "a reason does not excuse fractions"
    assert rules_of(check(bid)) == {"V8"}


# --- properties ---------------------------------------------------------------------------------------

_ANY_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([0.0, -0.0, -1.0, 1e308, -1e308, 150.0, 14_900.0, 5e-324]))
_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
_SECONDS = st.one_of(
    st.integers(min_value=0, max_value=300).map(
        lambda i: nem_time.to_timestamp(FIRST_INTERVAL).seconds + 60 * i),
    st.integers(min_value=-(2**40), max_value=2**40))


@st.composite
def _timestamps(draw: st.DrawFn) -> tuple[int, int] | None:
    if draw(st.booleans()):
        return None
    return draw(_SECONDS), draw(st.sampled_from([0, 1, 999_999_999]))


def _set_time(message: object, name: str, stamp: tuple[int, int] | None) -> None:
    if stamp is not None:
        target = getattr(message, name)
        target.seconds, target.nanos = stamp


@st.composite
def hostile_bids(draw: st.DrawFn) -> bid_pb2.Bid:
    """Bids with random structure and random, often absurd, values."""
    bid = bid_pb2.Bid(
        unit_id=draw(st.sampled_from(["HPR1", ""]) | _TEXT),
        trading_day=draw(st.sampled_from(["2021-01-05", "2021-07-05", "", "2021-02-30", "0001-01-01",
                                          "9999-12-31"]) | _TEXT),
        version=draw(st.integers(min_value=0, max_value=2**32 - 1)),
        entry_type=draw(st.sampled_from([0, 1, 2, 7])),  # type: ignore[arg-type]
        rebid_explanation=draw(_TEXT | st.just("x" * 600)),
        ramp_rate_reason=draw(_TEXT),
    )
    for name in ("dispatch_interval", "offer_time", "event_time"):
        _set_time(bid, name, draw(_timestamps()))
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        offer = bid.offers.add(product=draw(st.sampled_from([*PRODUCTS, ""]) | _TEXT),
                               direction=draw(st.sampled_from([0, 1, 2, 9])),  # type: ignore[arg-type]
                               band_price=draw(st.lists(_ANY_FLOAT, max_size=12)))
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            period = offer.periods.add(band_avail_mw=draw(st.lists(_ANY_FLOAT, max_size=12)))
            for field in ("max_avail_mw", "ramp_up_rate_mw_per_min", "ramp_down_rate_mw_per_min",
                          "pasa_avail_mw", "enablement_min_mw", "low_breakpoint_mw", "high_breakpoint_mw",
                          "enablement_max_mw", "energy_limit_mwh"):
                setattr(period, field, draw(_ANY_FLOAT))
            _set_time(period, "dispatch_interval", draw(_timestamps()))
    return bid


@hyp_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bid=hostile_bids(), daily=st.booleans(), mlf=_ANY_FLOAT)
def test_hostile_bids_never_crash_and_name_rules(bid: bid_pb2.Bid, daily: bool, mlf: float) -> None:
    battery = common_pb2.BatterySpec()
    battery.CopyFrom(BATTERY)
    battery.mlf_load = mlf
    violations = check(bid, battery=battery, daily=DAILY_PRICES if daily else None)
    assert all(RULE_PATTERN.match(v.rule) for v in violations)
    assert not any("could not be checked" in v.message for v in violations), violations


@hyp_settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_damaging_a_valid_bid_breaks_values_into_their_rule(data: st.DataObject) -> None:
    """Replace one number of the reference bid by a hostile value: it is caught, never crashes."""
    bid = reference_bid()
    offer = bid.offers[data.draw(st.integers(0, len(bid.offers) - 1))]
    period = offer.periods[data.draw(st.integers(0, PERIODS - 1))]
    value = data.draw(st.sampled_from([math.nan, math.inf, -math.inf, -1e6, 1e300]))
    field = data.draw(st.sampled_from(["band_price", "band_avail_mw", "max_avail_mw"]))
    expected: str | None
    if field == "band_price":
        offer.band_price[data.draw(st.integers(0, 9))] = value
        expected = "V2"
    elif field == "band_avail_mw":
        period.band_avail_mw[data.draw(st.integers(0, 9))] = value
        expected = "V3" if value != 1e300 else None  # huge MW in a band is allowed (MAXAVAIL caps it)
    else:
        period.max_avail_mw = value
        expected = "V3"
    violations = check(bid, daily=None)
    if expected is not None:
        assert expected in rules_of(violations), (field, value, violations)
    assert all(RULE_PATTERN.match(v.rule) for v in violations)


def _mutate_v0(bid: bid_pb2.Bid, data: st.DataObject) -> None:
    bid.offers[data.draw(st.integers(0, len(bid.offers) - 1))].product = data.draw(
        _TEXT.filter(lambda t: t not in PRODUCTS))


def _mutate_v1(bid: bid_pb2.Bid, data: st.DataObject) -> None:
    offer = bid.offers[data.draw(st.integers(0, len(bid.offers) - 1))]
    if data.draw(st.booleans()):
        offer.band_price.append(offer.band_price[-1] + data.draw(st.floats(0.01, 10)))
    else:
        i = data.draw(st.integers(1, 9))
        offer.band_price[i] = offer.band_price[i - 1] - data.draw(st.floats(0, 1))


def _mutate_v2(bid: bid_pb2.Bid, data: st.DataObject) -> None:
    bid.offers[data.draw(st.integers(0, len(bid.offers) - 1))].band_price[-1] = data.draw(
        st.floats(15_000.01, 1e12))


def _mutate_v3(bid: bid_pb2.Bid, data: st.DataObject) -> None:
    period = bid.offers[data.draw(st.integers(0, len(bid.offers) - 1))].periods[data.draw(st.integers(0, 11))]
    if data.draw(st.booleans()):
        period.max_avail_mw = data.draw(st.floats(150.001, 1e9))
    else:
        period.band_avail_mw[data.draw(st.integers(0, 9))] = -data.draw(st.floats(1e-6, 1e9))


def _mutate_v4(bid: bid_pb2.Bid, data: st.DataObject) -> None:
    after_close = datetime(2021, 1, 4, 12, 30) + timedelta(minutes=data.draw(st.integers(1, 1700)))
    make_rebid(bid, offer_time=after_close)
    offer = bid.offers[data.draw(st.integers(0, len(bid.offers) - 1))]
    offer.band_price[-1] += data.draw(st.floats(0.01, 100))


def _mutate_v5(bid: bid_pb2.Bid, data: st.DataObject) -> None:
    make_rebid(bid)
    if data.draw(st.booleans()):
        bid.rebid_explanation = data.draw(st.sampled_from(["", " ", "x" * 501]))
    else:
        bid.ClearField("event_time")


def _mutate_v6(bid: bid_pb2.Bid, data: st.DataObject) -> None:
    choice = data.draw(st.integers(0, 2))
    if choice == 0:
        del bid.offers[data.draw(st.sampled_from([GEN, LOAD]))]
    elif choice == 1:
        period = bid.offers[LOAD].periods[data.draw(st.integers(0, 11))]
        period.band_avail_mw[8] = data.draw(st.floats(0.5, 70))
        period.max_avail_mw = 150.0
    else:
        bid.offers[LOAD].periods[data.draw(st.integers(0, 11))].energy_limit_mwh = data.draw(
            st.floats(194.001, 1e6))


def _mutate_v7(bid: bid_pb2.Bid, data: st.DataObject) -> None:
    period = bid.offers[data.draw(st.integers(FIRST_FCAS, len(bid.offers) - 1))].periods[
        data.draw(st.integers(0, 11))]
    period.low_breakpoint_mw, period.high_breakpoint_mw = 140.0, data.draw(st.floats(-1e6, 139.9))


def _mutate_v8(bid: bid_pb2.Bid, data: st.DataObject) -> None:
    period = bid.offers[data.draw(st.sampled_from([GEN, LOAD]))].periods[data.draw(st.integers(0, 11))]
    period.ramp_up_rate_mw_per_min = float(data.draw(st.integers(0, 2)))


MUTATIONS: dict[str, Callable[[bid_pb2.Bid, st.DataObject], None]] = {
    "V0": _mutate_v0, "V1": _mutate_v1, "V2": _mutate_v2, "V3": _mutate_v3, "V4": _mutate_v4,
    "V5": _mutate_v5, "V6": _mutate_v6, "V7": _mutate_v7, "V8": _mutate_v8,
}


@hyp_settings(max_examples=120, deadline=None)
@given(rule=st.sampled_from(sorted(MUTATIONS)), data=st.data())
def test_rule_specific_mutation_is_caught_by_its_rule(rule: str, data: st.DataObject) -> None:
    bid = reference_bid()
    MUTATIONS[rule](bid, data)
    violations = check(bid)
    assert rule in rules_of(violations), (rule, violations)


def test_tradable_products_come_from_the_caller() -> None:
    bid = reference_bid()
    bid.offers[FIRST_FCAS].product = "RAISE1SEC"
    assert rules_of(check(bid)) == {"V0"}
    assert validate_bid(bid, BATTERY, RULES, products=(*PRODUCTS, "RAISE1SEC")) == []


# --- today's rules: registrations, bidirectional units, AEMO's limits -----------------------------------

def _shifted(bid: bid_pb2.Bid, days: int) -> bid_pb2.Bid:
    """``bid`` moved ``days`` trading days on (every time field)."""
    shift = days * 86400
    bid.trading_day = (datetime.fromisoformat(bid.trading_day) + timedelta(days=days)).date().isoformat()
    for stamp in (bid.dispatch_interval, bid.offer_time, *(p.dispatch_interval for o in bid.offers for p in o.periods)):
        stamp.seconds += shift
    if bid.HasField("event_time"):
        bid.event_time.seconds += shift
    return bid


def test_a_trading_day_no_source_covers_fails_v2() -> None:
    july_2026 = _shifted(reference_bid(), (datetime(2026, 7, 5) - datetime(2021, 1, 5)).days)  # FY2026-27
    violations = check(july_2026, daily=None)
    assert [(v.rule, v.field) for v in violations] == [("V2", "band_price")]
    assert "no market price cap for trading day 2026-07-05 (FY2026-27)" in violations[0].message
    june_2026 = _shifted(reference_bid(), (datetime(2026, 6, 30) - datetime(2021, 1, 5)).days)  # FY2025-26
    assert check(june_2026, daily=None) == []


def test_v2_energy_limits_are_at_the_connection_point() -> None:
    """AEMO's MINIMUM_ENERGY_PRICE / MAXIMUM_ENERGY_PRICE: floor and cap times the side's loss factor."""
    lossy = replace(registration_of_battery(BATTERY), mlf_gen=0.95, mlf_load=0.9)
    bid = reference_bid()
    bid.offers[LOAD].band_price[0] = -900.0  # = -1,000 x 0.9
    bid.offers[GEN].band_price[-1] = 14_250.0  # = 15,000 x 0.95
    assert validate_bid(bid, lossy, RULES, products=PRODUCTS) == []
    bid.offers[GEN].band_price[-1] = 14_250.01
    violations = validate_bid(bid, lossy, RULES, products=PRODUCTS)
    assert [(v.rule, v.field) for v in violations] == [("V2", "band_price")]
    assert "[-950, 14250]" in violations[0].message and "loss factor 0.95" in violations[0].message
    bid = reference_bid()  # LOAD band 1 at -1,000 is below -1,000 x 0.9
    bid.offers[GEN].band_price[-1] = 14_000.0
    violations = validate_bid(bid, lossy, RULES, products=PRODUCTS)
    assert [(v.rule, v.field) for v in violations] == [("V2", "band_price")]
    assert "'ENERGY' LOAD" in violations[0].message and "[-1000.0]" in violations[0].message
    bid.offers[FIRST_FCAS].band_price[-1] = 15_000.0  # FCAS prices are not at a connection point
    bid.offers[LOAD].band_price[0] = -900.0
    assert validate_bid(bid, lossy, RULES, products=PRODUCTS) == []


def test_v4_the_daily_close_is_1230_on_the_day_before() -> None:
    at_close = reference_bid()
    at_close.offer_time.CopyFrom(nem_time.to_timestamp(datetime(2021, 1, 4, 12, 30)))
    assert check(at_close) == []
    after = reference_bid()
    after.offer_time.CopyFrom(nem_time.to_timestamp(datetime(2021, 1, 4, 12, 30, 1)))
    assert [(v.rule, v.field) for v in check(after)] == [("V4", "entry_type")]
    same_prices = make_rebid(reference_bid(), offer_time=datetime(2021, 1, 4, 12, 30, 1))
    assert check(same_prices) == []


@pytest.mark.parametrize("aware, decision, category, fragment", [
    (datetime(2021, 1, 5, 17, 30, 30), datetime(2021, 1, 5, 17, 30, 10), "", "aware time"),
    (datetime(2021, 1, 5, 17, 30, 30), datetime(2021, 1, 5, 17, 32), "", "decision time"),
    (datetime(2021, 1, 5, 17, 20), None, "", "event time"),
    (None, None, "PA", "not one letter"),
])
def test_v5_rebid_times_in_order_and_a_one_letter_category(aware: datetime | None, decision: datetime | None,
                                                            category: str, fragment: str) -> None:
    bid = make_rebid(reference_bid())  # event 17:30, offer 17:31
    bid.aware_time.CopyFrom(nem_time.to_timestamp(datetime(2021, 1, 5, 17, 30, 20)))
    bid.decision_time.CopyFrom(nem_time.to_timestamp(datetime(2021, 1, 5, 17, 30, 40)))
    bid.rebid_category = "P"
    assert check(bid) == []
    if aware is not None:
        bid.aware_time.CopyFrom(nem_time.to_timestamp(aware))
    if decision is not None:
        bid.decision_time.CopyFrom(nem_time.to_timestamp(decision))
    bid.rebid_category = category
    violations = check(bid)
    assert rules_of(violations) == {"V5"} and fragment in violations[0].message, violations


def test_withheld_fields_are_not_judged() -> None:
    """AEMO's public tables withhold rebid times and the explanation of later rebids: nothing to check."""
    bid = make_rebid(reference_bid())
    bid.ClearField("event_time")
    bid.rebid_explanation = ""
    assert rules_of(check(bid)) == {"V5"}
    assert validate_bid(bid, BATTERY, RULES, products=PRODUCTS, daily_band_prices=DAILY_PRICES,
                        withheld={"event_time", "rebid_explanation"}) == []
    assert rules_of(validate_bid(bid, BATTERY, RULES, products=PRODUCTS, daily_band_prices=DAILY_PRICES,
                                 withheld={"event_time"})) == {"V5"}


def test_v8_the_explanation_carries_the_ramp_rate_reason() -> None:
    bid = reference_bid()
    bid.offers[GEN].periods[1].ramp_up_rate_mw_per_min = 2.0
    assert [(v.rule, v.field) for v in check(bid)] == [("V8", "ramp_up_rate_mw_per_min")]
    bid.rebid_explanation = "1310~P~2 of 4 inverters out, ramp 2 MW/min~"
    assert check(bid) == []


def test_v6_energy_limit_means_minimum_on_gen_and_maximum_on_load() -> None:
    bid = reference_bid()  # LOAD limit 190 MWh: at most 190 MWh in storage
    bid.offers[GEN].periods[3].energy_limit_mwh = 20.0  # at least 20 MWh in storage: fine
    assert check(bid) == []
    bid.offers[GEN].periods[3].energy_limit_mwh = 190.0
    violations = check(bid)
    assert [(v.rule, v.field) for v in violations] == [("V6", "energy_limit_mwh")]
    assert "GEN side" in violations[0].message and "17:50" in violations[0].message


def test_v7_a_load_offer_trapezium_is_mirrored_on_its_side() -> None:
    bid = reference_bid()
    period = bid.offers[RAISEREG_LOAD].periods[4]
    period.enablement_min_mw, period.low_breakpoint_mw = -10.0, -5.0  # not mirrored: out of order
    violations = check(bid)
    assert rules_of(violations) == {"V7"} and "0 >= ENABLEMENTMIN >= LOWBREAKPOINT" in violations[0].message
    bid = reference_bid()
    bid.offers[RAISEREG_GEN].periods[4].enablement_min_mw = -10.0  # a GEN offer on the charging side
    violations = check(bid)
    assert rules_of(violations) == {"V7"} and "GEN offer's trapezium" in violations[0].message


GENERATOR = UnitRegistration("GEN1", UnitKind.GENERATOR, max_capacity_mw=200.0, mlf_gen=1.0,
                             min_ramp_up_mw_per_min=3.0, min_ramp_down_mw_per_min=3.0)


def generator_bid() -> bid_pb2.Bid:
    """A generator's DAILY bid as before June 2024: ENERGY and regulation FCAS without direction."""
    bid = reference_bid()
    bid.unit_id = "GEN1"
    del bid.offers[LOAD]
    bid.offers[GEN].direction = common_pb2.DIRECTION_UNSPECIFIED
    for offer in list(bid.offers)[1:]:
        if offer.direction == common_pb2.DIRECTION_LOAD:
            bid.offers.remove(offer)
    for offer in bid.offers[1:]:
        offer.direction = common_pb2.DIRECTION_UNSPECIFIED
        for period in offer.periods:
            period.enablement_min_mw, period.low_breakpoint_mw = 20.0, 40.0
            period.high_breakpoint_mw, period.enablement_max_mw = 150.0, 180.0
    return bid


def test_a_generator_needs_no_load_side_and_no_direction() -> None:
    bid = generator_bid()
    assert validate_bid(bid, GENERATOR, RULES, products=PRODUCTS) == []
    for offer in bid.offers:
        offer.direction = common_pb2.DIRECTION_GEN  # the form since June 2024
    assert validate_bid(bid, GENERATOR, RULES, products=PRODUCTS) == []


@pytest.mark.parametrize("mutate, rule, fragment", [
    (lambda b: setattr(b.offers[0], "direction", common_pb2.DIRECTION_LOAD), "V0", "a generator offers GEN only"),
    (lambda b: setattr(b.offers[1], "direction", common_pb2.DIRECTION_BIDIRECTIONAL), "V0", "GEN only"),
    (lambda b: setattr(b.offers[0].periods[0], "energy_limit_mwh", 10.0), "V6", "bidirectional units only"),
    (lambda b: setattr(b.offers[1].periods[0], "enablement_min_mw", -5.0), "V7", "may reach below 0 MW"),
    (lambda b: setattr(b.offers[0].periods[0], "max_avail_mw", 201.0), "V3", "registered capacity 200 MW"),
    (lambda b: setattr(b.offers[0].periods[0], "fixed_load_mw", -1.0), "V3", "FIXEDLOAD"),
    (lambda b: setattr(b.offers[0], "daily_energy_constraint_mwh", math.nan), "V3", "daily energy constraint"),
    (lambda b: b.offers.add().CopyFrom(b.offers[0]) or setattr(b.offers[-1], "direction", common_pb2.DIRECTION_GEN),
     "V0", "offered more than once"),
])
def test_generator_rules(mutate: Callable[[bid_pb2.Bid], object], rule: str, fragment: str) -> None:
    bid = generator_bid()
    mutate(bid)
    violations = validate_bid(bid, GENERATOR, RULES, products=PRODUCTS)
    assert any(v.rule == rule and fragment in v.message for v in violations), violations


def test_unknown_registered_limits_are_not_checked() -> None:
    unknown = replace(GENERATOR, max_capacity_mw=None, min_ramp_up_mw_per_min=None, min_ramp_down_mw_per_min=None)
    bid = generator_bid()
    bid.offers[0].periods[0].max_avail_mw = 5_000.0
    bid.offers[0].periods[0].ramp_up_rate_mw_per_min = 1.0
    assert rules_of(validate_bid(bid, GENERATOR, RULES, products=PRODUCTS)) == {"V3", "V8"}
    assert validate_bid(bid, unknown, RULES, products=PRODUCTS) == []
