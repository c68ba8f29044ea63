"""The price-taker market model: hand-computed clearing, limits, FCAS, settlement and administered pricing."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pytest

from algorithms.common import nem_time
from algorithms.common.battery import battery_spec_from_settings
from algorithms.market.bid_builder import build_bid
from algorithms.market.clearing import (
    IntervalClearing,
    administered_energy_prices,
    apply_administered_pricing,
    apply_joint_capacity,
    clear_interval,
    to_market_outcome,
    trapezium_limit_mw,
)
from settings import PriceLimitsUnknownError, load_settings
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

CONFIG = load_settings(environ={})
BATTERY = battery_spec_from_settings(CONFIG.battery)  # 150 MW / 194 MWh, 0.92 / 0.92, 5 %–95 %
GEN_PRICES = (0.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 5000.0, 10000.0, 14900.0)
LOAD_PRICES = (-1000.0, -500.0, -300.0, -100.0, -50.0, -20.0, -10.0, -1.0, 100.0, 299.0)
FCAS_PRICES = (0.0, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 1000.0, 10000.0)
INTERVAL = datetime(2021, 1, 5, 17, 35)
SOC_HALF = 97.0


def make_bid(gen_bands: list[float] | None = None, load_bands: list[float] | None = None, *,
             gen_max: float | None = None, load_max: float | None = None, ramp: float = 150.0,
             fcas: dict[str, tuple[list[float], tuple[float, float, float, float]]] | None = None,
             interval: datetime = INTERVAL) -> bid_pb2.Bid:
    """A one-interval bid; ``fcas`` maps a product to its bands and trapezium."""
    stamp = nem_time.to_timestamp(interval)
    bid = bid_pb2.Bid(unit_id="HPR1", trading_day="2021-01-05", dispatch_interval=stamp)
    sides = ((common_pb2.DIRECTION_GEN, GEN_PRICES, gen_bands, gen_max),
             (common_pb2.DIRECTION_LOAD, LOAD_PRICES, load_bands, load_max))
    for direction, prices, bands, max_avail in sides:
        band_mw = bands or [0.0] * 10
        offer = bid.offers.add(product="ENERGY", direction=direction, band_price=prices)
        offer.periods.add(dispatch_interval=stamp, band_avail_mw=band_mw,
                          max_avail_mw=sum(band_mw) if max_avail is None else max_avail,
                          ramp_up_rate_mw_per_min=ramp, ramp_down_rate_mw_per_min=ramp)
    for product, (bands, (e_min, low, high, e_max)) in (fcas or {}).items():
        offer = bid.offers.add(product=product, band_price=FCAS_PRICES)
        offer.periods.add(dispatch_interval=stamp, band_avail_mw=bands, max_avail_mw=sum(bands),
                          enablement_min_mw=e_min, low_breakpoint_mw=low, high_breakpoint_mw=high,
                          enablement_max_mw=e_max)
    return bid


def clear(bid: bid_pb2.Bid, rrp: float, *, soc: float = SOC_HALF, previous: float = 0.0,
          battery: common_pb2.BatterySpec = BATTERY, **fcas_prices: float) -> IntervalClearing:
    return clear_interval(bid, INTERVAL, {"ENERGY": rrp, **fcas_prices}, state_of_charge_mwh=soc,
                          previous_net_mw=previous, battery=battery)


TEN_EACH = [10.0] * 10


@pytest.mark.parametrize("rrp, gen_mw", [(99.99, 20.0), (100.0, 30.0), (100.01, 30.0), (-5.0, 0.0),
                                         (0.0, 10.0), (20_000.0, 100.0)])
def test_gen_band_dispatched_below_and_at_price_not_above(rrp: float, gen_mw: float) -> None:
    result = clear(make_bid(gen_bands=TEN_EACH), rrp)
    assert result.gen_mw == gen_mw and result.load_mw == 0.0


@pytest.mark.parametrize("rrp, load_mw", [(-50.0, 50.0), (-50.01, 60.0), (-49.99, 50.0), (299.0, 0.0),
                                          (298.0, 10.0), (-1000.0, 90.0)])
def test_load_band_consumed_strictly_above_price(rrp: float, load_mw: float) -> None:
    # LOAD bands at -1000 -500 -300 -100 -50 -20 -10 -1 100 299, 10 MW each
    result = clear(make_bid(load_bands=TEN_EACH), rrp)
    assert result.load_mw == load_mw and result.gen_mw == 0.0


def test_maxavail_caps_the_cleared_bands() -> None:
    assert clear(make_bid(gen_bands=TEN_EACH, gen_max=35.0), 1000.0).gen_mw == 35.0
    assert clear(make_bid(load_bands=TEN_EACH, load_max=12.5), -2000.0).load_mw == 12.5


def test_mlf_scales_band_prices_and_settlement() -> None:
    battery = common_pb2.BatterySpec()
    battery.CopyFrom(BATTERY)
    battery.mlf_gen = 0.8  # band $100 / 0.8 = $125: above an RRP of $120
    bid = make_bid(gen_bands=TEN_EACH)
    result = clear(bid, 120.0, battery=battery)
    assert result.gen_mw == 20.0
    assert result.energy_revenue_dollars == pytest.approx(120.0 * 0.8 * 20.0 / 12)  # $160.00
    battery.mlf_gen = 0.84  # $100 / 0.84 = $119.05 <= $120
    assert clear(bid, 120.0, battery=battery).gen_mw == 30.0
    battery.mlf_load = 1.25  # LOAD band $100 / 1.25 = $80 > $79: consumed; and pays RRP x MLF
    result = clear(make_bid(load_bands=[0.0] * 8 + [10.0, 0.0]), 79.0, battery=battery)
    assert result.load_mw == 10.0
    assert round(result.energy_revenue_dollars, 2) == round(-79.0 * 1.25 * 10.0 / 12, 2) == -82.29


def test_ramp_limit_over_five_minutes() -> None:
    bid = make_bid(gen_bands=[150.0] + [0.0] * 9, ramp=10.0)
    result = clear(bid, 80.0, previous=0.0)
    assert result.gen_mw == 50.0 and any(n.startswith("ramp") for n in result.notes)
    falling = clear(make_bid(ramp=10.0), 80.0, previous=120.0)  # nothing offered, but only 50 MW down
    assert falling.gen_mw == 70.0
    crossing = clear(make_bid(load_bands=[0.0] * 9 + [150.0], ramp=10.0), 80.0, previous=30.0)
    assert crossing.gen_mw == 0.0 and crossing.load_mw == 20.0


def test_state_of_charge_trims_discharge_and_charge() -> None:
    low = 9.7 + 5.0  # 5 MWh above the 5 % floor: 5 x 0.92 x 12 = 55.2 MW
    result = clear(make_bid(gen_bands=TEN_EACH), 20_000.0, soc=low)
    assert result.gen_mw == pytest.approx(55.2)
    assert result.state_of_charge_mwh == pytest.approx(9.7)
    assert any(n.startswith("SoC: discharge") for n in result.notes)
    high = 184.3 - 2.3  # 2.3 MWh below the 95 % ceiling: 2.3 / (0.92 / 12) = 30 MW
    result = clear(make_bid(load_bands=TEN_EACH), -2000.0, soc=high)
    assert result.load_mw == pytest.approx(30.0)
    assert result.state_of_charge_mwh == pytest.approx(184.3)


def test_soc_follows_the_efficiencies() -> None:
    result = clear(make_bid(gen_bands=[60.0] + [0.0] * 9), 50.0)
    assert result.state_of_charge_mwh == pytest.approx(97.0 - 60.0 / 12 / 0.92)
    result = clear(make_bid(load_bands=[0.0] * 9 + [60.0]), 50.0)
    assert result.state_of_charge_mwh == pytest.approx(97.0 + 0.92 * 60.0 / 12)


RAISE_TRAPEZIUM = (-150.0, -150.0, 100.0, 150.0)
LOWER_TRAPEZIUM = (-150.0, -100.0, 150.0, 150.0)


def test_fcas_band_enabled_when_price_at_or_above_band() -> None:
    bid = make_bid(fcas={"RAISE6SEC": ([10.0, 10.0, 10.0, 10.0, 10.0] + [0.0] * 5, RAISE_TRAPEZIUM)})
    assert clear(bid, 50.0, RAISE6SEC=5.0).fcas_enabled_mw["RAISE6SEC"] == 30.0
    assert clear(bid, 50.0, RAISE6SEC=4.99).fcas_enabled_mw["RAISE6SEC"] == 20.0
    missing = clear(bid, 50.0)
    assert missing.fcas_enabled_mw["RAISE6SEC"] == 0.0
    assert any("no finite price for RAISE6SEC" in n for n in missing.notes)


def test_fcas_trapezium_at_the_energy_target() -> None:
    raise_bid = make_bid(gen_bands=[125.0] + [0.0] * 9,
                         fcas={"RAISE6SEC": ([50.0] + [0.0] * 9, RAISE_TRAPEZIUM)})
    result = clear(raise_bid, 40.0, RAISE6SEC=2.0)
    assert result.gen_mw == 125.0
    assert result.fcas_enabled_mw["RAISE6SEC"] == pytest.approx(25.0)  # 50 x (150 - 125) / (150 - 100)
    lower_bid = make_bid(load_bands=[0.0] * 9 + [125.0],
                         fcas={"LOWER6SEC": ([50.0] + [0.0] * 9, LOWER_TRAPEZIUM)})
    assert clear(lower_bid, 40.0, LOWER6SEC=2.0).fcas_enabled_mw["LOWER6SEC"] == pytest.approx(25.0)
    period = lower_bid.offers[2].periods[0]
    assert trapezium_limit_mw(-160.0, period) == 0.0 and trapezium_limit_mw(0.0, period) == 50.0


def test_joint_capacity_trims_contingency_first_and_stacks() -> None:
    full = (-150.0, -150.0, 150.0, 150.0)
    bid = make_bid(gen_bands=[100.0] + [0.0] * 9,
                   fcas={"RAISE6SEC": ([40.0] + [0.0] * 9, full), "RAISE60SEC": ([45.0] + [0.0] * 9, full),
                         "RAISEREG": ([30.0] + [0.0] * 9, full), "LOWER6SEC": ([40.0] + [0.0] * 9, full)})
    result = clear(bid, 60.0, RAISE6SEC=1.0, RAISE60SEC=1.0, RAISEREG=1.0, LOWER6SEC=1.0)
    assert result.gen_mw == 100.0
    # raise headroom 150 - 100 = 50: regulation keeps 30, each contingency service gets the 20 left
    assert result.fcas_enabled_mw == {"RAISE6SEC": 20.0, "RAISE60SEC": 20.0, "RAISEREG": 30.0,
                                      "LOWER6SEC": 40.0}
    assert sum("joint capacity" in n for n in result.notes) == 2
    limited, notes = apply_joint_capacity({"LOWERREG": 80.0, "LOWER5MIN": 50.0}, -100.0, 150.0)
    assert limited == {"LOWERREG": 50.0, "LOWER5MIN": 0.0} and len(notes) == 2


def test_settlement_to_the_cent() -> None:
    bid = make_bid(gen_bands=[87.0] + [0.0] * 9, fcas={"RAISEREG": ([20.0] + [0.0] * 9, RAISE_TRAPEZIUM)})
    result = clear(bid, 87.53, RAISEREG=12.34)
    assert round(result.energy_revenue_dollars, 2) == 634.59  # 87.53 x 87 x 5/60 = 634.5925
    assert round(result.fcas_revenue_dollars, 2) == 20.57  # 20 x 12.34 x 5/60 = 20.5667
    assert result.prices == {"ENERGY": 87.53, "RAISEREG": 12.34}
    charging = clear(make_bid(load_bands=[0.0] * 7 + [33.0, 0.0, 0.0]), -41.27)
    assert round(charging.energy_revenue_dollars, 2) == 113.49  # -41.27 x -33 x 5/60 = 113.4925


def test_no_period_means_no_dispatch() -> None:
    bid = make_bid(gen_bands=TEN_EACH, fcas={"RAISE6SEC": ([40.0] + [0.0] * 9, RAISE_TRAPEZIUM)})
    later = INTERVAL + timedelta(minutes=5)
    result = clear_interval(bid, later, {"ENERGY": 10_000.0, "RAISE6SEC": 50.0}, state_of_charge_mwh=97.0,
                            previous_net_mw=100.0, battery=BATTERY)
    assert (result.gen_mw, result.load_mw, result.energy_revenue_dollars) == (0.0, 0.0, 0.0)
    assert result.fcas_enabled_mw == {"RAISE6SEC": 0.0} and result.state_of_charge_mwh == 97.0
    assert "not dispatched" in result.notes[0]


def test_bad_inputs_are_named() -> None:
    bid = make_bid(gen_bands=TEN_EACH)
    with pytest.raises(ValueError, match="no ENERGY price"):
        clear_interval(bid, INTERVAL, {"RAISE6SEC": 1.0}, state_of_charge_mwh=97.0, previous_net_mw=0.0,
                       battery=BATTERY)
    with pytest.raises(ValueError, match="must be finite"):
        clear(bid, float("nan"))
    bid.unit_id = "OTHER1"
    with pytest.raises(ValueError, match="OTHER1"):
        clear(bid, 50.0)


def test_market_outcome_carries_every_product() -> None:
    bid = make_bid(gen_bands=[87.0] + [0.0] * 9, fcas={"RAISEREG": ([20.0] + [0.0] * 9, RAISE_TRAPEZIUM)})
    outcome = to_market_outcome(clear(bid, 87.53, RAISEREG=12.34))
    assert nem_time.from_timestamp(outcome.dispatch_interval) == INTERVAL
    assert outcome.gen_mw == 87.0 and outcome.load_mw == 0.0
    assert [(p.product, p.cleared_mw, p.price) for p in outcome.products] == [
        ("ENERGY", 87.0, 87.53), ("RAISEREG", 20.0, 12.34)]
    assert outcome.products[1].revenue_dollars == pytest.approx(20.0 * 12.34 / 12)
    assert outcome.fcas_revenue_dollars == pytest.approx(20.0 * 12.34 / 12)
    assert outcome.state_of_charge_mwh == pytest.approx(97.0 - 87.0 / 12 / 0.92)


def test_built_bid_earns_planned_dispatch_and_unforecast_spikes() -> None:
    plan = worker_pb2.OptimisationResult(
        status=worker_pb2.RESULT_STATUS_OPTIMAL, first_interval=nem_time.to_timestamp(INTERVAL),
        horizon_intervals=2, gen_mw=[100.0, 0.0], load_mw=[0.0, 0.0], state_of_charge_mwh=[88.0, 88.0])
    fixed = replace(CONFIG.bidding, headroom_pricing="fixed", planned_pricing="price_taking",
                    gen_band_prices=(0.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 5000.0, 10000.0, 14900.0),
                    load_band_prices=(-1000.0, -500.0, -300.0, -100.0, -50.0, -20.0, -10.0, -1.0, 100.0, 299.0))
    bid = build_bid(plan, BATTERY, fixed, CONFIG.market, dispatch_interval=INTERVAL,
                    offer_time=INTERVAL - timedelta(minutes=4), version=1, fcas_products=[],
                    initial_state_of_charge_mwh=SOC_HALF, plan_hash="h")
    assert clear(bid, 60.0).gen_mw == 100.0  # planned discharge at any positive price
    assert clear(bid, 350.0).gen_mw == pytest.approx(100.0 + 50.0 / 6, abs=0.01)  # + one spike band
    assert clear(bid, 15_000.0).gen_mw == pytest.approx(150.0, abs=0.01)
    assert clear(bid, -0.5).gen_mw == 0.0 and clear(bid, -0.5).load_mw == 0.0
    assert clear(bid, -5.0).load_mw == pytest.approx(150.0 / 8, abs=0.01)  # the $-1 band charges
    assert clear(bid, -1500.0).load_mw == pytest.approx(150.0, abs=0.01)  # every negative band


def test_administered_pricing_clamps_the_rest_of_the_trading_day() -> None:
    days = np.repeat(np.arange(3), 6)
    rrp = np.array([100.0] * 6
                   + [100.0, 100.0, 1000.0, 900.0, -900.0, 9000.0]
                   + [0.0, 1000.0, 9000.0, 800.0, 50.0, 700.0])
    out = apply_administered_pricing(rrp, days, threshold=1500.0, floor=-600.0, cap=600.0, lookback=2)
    # day 0: sums of 2 = 200: untouched
    assert out[:6].tolist() == [100.0] * 6
    # day 1: 1000 + 900 = 1900 > 1500 at the 900: the rest of day 1 is clamped to [-600, 600]
    assert out[6:12].tolist() == [100.0, 100.0, 1000.0, 900.0, -600.0, 600.0]
    # day 2 sums use the administered 600 (not the raw 9000): 600 + 0, 0 + 1000, then 1000 + 9000 > 1500
    # at the 9000, so only the intervals after it are clamped
    assert out[12:].tolist() == [0.0, 1000.0, 9000.0, 600.0, 50.0, 600.0]
    assert rrp[15] == 800.0  # the input is not modified


def test_administered_pricing_input_checks() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        apply_administered_pricing(np.zeros(4), np.array([0, 1, 0, 1]), 1.0, -600.0, 600.0, 2)
    with pytest.raises(ValueError, match="non-finite"):
        apply_administered_pricing(np.array([1.0, np.nan]), np.array([0, 0]), 1.0, -600.0, 600.0, 2)
    assert apply_administered_pricing(np.zeros(0), np.zeros(0, dtype=np.int64), 1.0, -1.0, 1.0, 2).size == 0


def _five_minute_intervals(first: str, count: int) -> np.ndarray:
    return np.datetime64(first, "s") + np.arange(count) * np.timedelta64(300, "s")


def test_administered_energy_prices_scale_a_half_hour_threshold_and_keep_gaps() -> None:
    rules = load_settings(environ={}).market
    intervals = _five_minute_intervals("2021-01-10T04:05:00", 288)
    # FY 2020-21: 224,600 $/MWh over half-hour prices = 1,347,600 over 5-minute prices.
    prices = np.full(288, 100.0)
    prices[10:20] = 134_760.0  # ten intervals of 134,760: the running sum passes 1,347,600 at index 19
    prices[5] = np.nan
    administered = administered_energy_prices(prices, intervals, rules)
    assert np.isnan(administered[5])
    assert administered[19] == 134_760.0  # the breaching interval itself is not clamped
    assert np.all(administered[20:] == 100.0)  # below the 600 cap: unchanged
    prices[30] = 14_000.0
    assert administered_energy_prices(prices, intervals, rules)[30] == 600.0
    # Without the breach nothing changes.
    calm = np.full(288, 300.0)
    assert np.array_equal(administered_energy_prices(calm, intervals, rules), calm)


def test_administered_energy_prices_use_the_financial_year_threshold() -> None:
    rules = load_settings(environ={}).market
    intervals = _five_minute_intervals("2022-01-10T04:05:00", 288)
    prices = np.full(288, 100.0)
    prices[:4] = 350_000.0  # 1.4 M > FY 2021-22 threshold 1,359,100 over 5-minute prices
    prices[4] = 5_000.0
    assert administered_energy_prices(prices, intervals, rules)[4] == 600.0
    prices[:4] = 330_000.0  # 1.32 M: below the threshold
    assert administered_energy_prices(prices, intervals, rules)[4] == 5_000.0


def test_default_strategy_bid_follows_the_value_of_stored_energy() -> None:
    """Planned discharge while stored energy is worth 46 $/MWh is carried out at 60 $/MWh but not at
    20 $/MWh; the rest of the deliverable discharge is earned at a spike; charge headroom at negative prices."""
    plan = worker_pb2.OptimisationResult(
        status=worker_pb2.RESULT_STATUS_OPTIMAL, first_interval=nem_time.to_timestamp(INTERVAL),
        horizon_intervals=2, gen_mw=[100.0, 0.0], load_mw=[0.0, 0.0], state_of_charge_mwh=[88.0, 88.0],
        energy_value_per_mwh=[46.0, 46.0], raise_capacity_value_per_mw=[0.0, 0.0],
        lower_capacity_value_per_mw=[0.0, 0.0])
    bid = build_bid(plan, BATTERY, CONFIG.bidding, CONFIG.market, dispatch_interval=INTERVAL,
                    offer_time=INTERVAL - timedelta(minutes=4), version=1, fcas_products=[],
                    initial_state_of_charge_mwh=SOC_HALF, plan_hash="h")
    assert clear(bid, 60.0).gen_mw == pytest.approx(100.0)  # 46 / 0.92 = 50: the $50 band
    assert clear(bid, 20.0).gen_mw == 0.0
    assert clear(bid, 350.0).gen_mw == pytest.approx(150.0, abs=0.01)  # all headroom in the $300 band
    assert clear(bid, -60.0).load_mw == pytest.approx(150.0, abs=0.01)  # the -$50 band is below $50


def test_regulation_offered_on_each_side_enables_like_the_one_trapezium() -> None:
    """A bidirectional unit's regulation: a GEN and a LOAD offer (LOAD corners mirrored); the side the
    energy target is on enables the service, as the single trapezium on net output did."""
    combined = (-150.0, -150.0, 110.0, 150.0)  # RAISEREG of 40 MW on net output
    gen_side = (0.0, 0.0, 110.0, 150.0)
    load_side = (0.0, 0.0, -150.0, -150.0)  # mirrored: full availability while charging
    for gen_bands, load_bands, expected in (([130.0] + [0.0] * 9, None, 20.0), (None, [0.0] * 9 + [100.0], 40.0),
                                            (None, None, 40.0)):
        one = make_bid(gen_bands=gen_bands, load_bands=load_bands,
                       fcas={"RAISEREG": ([40.0] + [0.0] * 9, combined)})
        two = make_bid(gen_bands=gen_bands, load_bands=load_bands)
        stamp = nem_time.to_timestamp(INTERVAL)
        for side, corners in ((common_pb2.DIRECTION_GEN, gen_side), (common_pb2.DIRECTION_LOAD, load_side)):
            offer = two.offers.add(product="RAISEREG", direction=side, band_price=FCAS_PRICES)
            offer.periods.add(dispatch_interval=stamp, band_avail_mw=[40.0] + [0.0] * 9, max_avail_mw=40.0,
                              enablement_min_mw=corners[0], low_breakpoint_mw=corners[1],
                              high_breakpoint_mw=corners[2], enablement_max_mw=corners[3])
        single, directed = clear(one, 40.0, RAISEREG=5.0), clear(two, 40.0, RAISEREG=5.0)
        assert directed.fcas_enabled_mw["RAISEREG"] == pytest.approx(single.fcas_enabled_mw["RAISEREG"])
        assert directed.fcas_enabled_mw["RAISEREG"] == pytest.approx(expected)
        assert directed.fcas_revenue_dollars == pytest.approx(single.fcas_revenue_dollars)
    load_period = two.offers[-1].periods[0]
    assert trapezium_limit_mw(-60.0, load_period, common_pb2.DIRECTION_LOAD) == 40.0
    assert trapezium_limit_mw(10.0, load_period, common_pb2.DIRECTION_LOAD) == 0.0


def test_administered_pricing_refuses_a_financial_year_without_a_threshold() -> None:
    rules = load_settings(environ={}).market
    with pytest.raises(PriceLimitsUnknownError, match=r"2026-07-01 \(FY2026-27\)"):
        administered_energy_prices(np.full(12, 50.0), _five_minute_intervals("2026-07-01T04:05:00", 12), rules)
