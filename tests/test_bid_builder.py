"""Bid builder: plans become valid, convex, SoC-deliverable, price-contingent bids; bad plans, safe bids."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from algorithms.common import nem_time
from algorithms.common.battery import battery_from_spec, battery_spec_from_settings
from algorithms.market.bid_builder import (
    build_bid,
    build_safe_bid,
    deliverable_mw,
    fcas_reserved_mw,
    headroom_opportunity_cost,
)
from algorithms.market.bid_validation import validate_bid
from settings import load_settings
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

CONFIG = load_settings(environ={})
RULES = CONFIG.market
# The "fixed" strategy on its original ladders (GEN band 1 at $0); the default strategy is tested below.
BIDDING = replace(CONFIG.bidding, headroom_pricing="fixed", planned_pricing="price_taking",
                  gen_band_prices=(0.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 5000.0, 10000.0, 14900.0),
                  load_band_prices=(-1000.0, -500.0, -300.0, -100.0, -50.0, -20.0, -10.0, -1.0, 100.0, 299.0),
                  fcas_displacement_load_ceiling=-100.0, energy_value_floor_per_mwh=-1000.0,
                  fcas_displacement_scope="all", fcas_offer="planned", charge_headroom="negative")
BATTERY = battery_spec_from_settings(CONFIG.battery)
PARAMS = battery_from_spec(BATTERY)
FCAS = ("RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG",
        "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG")
PRODUCTS = ("ENERGY", *FCAS)
FIRST = datetime(2021, 1, 5, 17, 35)
AFTER_CLOSE = datetime(2021, 1, 5, 17, 31)
BEFORE_CLOSE = datetime(2021, 1, 4, 12, 0)
HOURS = 5 / 60
DAILY_PRICES: dict[tuple[str, int], tuple[float, ...]] = {
    ("ENERGY", common_pb2.DIRECTION_GEN): BIDDING.gen_band_prices,
    ("ENERGY", common_pb2.DIRECTION_LOAD): BIDDING.load_band_prices,
    **{(p, common_pb2.DIRECTION_UNSPECIFIED): BIDDING.fcas_band_prices for p in FCAS if not p.endswith("REG")},
    # A bidirectional unit's regulation FCAS is offered in each direction.
    **{(p, side): BIDDING.fcas_band_prices for p in ("RAISEREG", "LOWERREG")
       for side in (common_pb2.DIRECTION_GEN, common_pb2.DIRECTION_LOAD)},
}


def make_plan(gen: list[float], load: list[float], initial_soc: float = 97.0, first: datetime = FIRST,
              fcas: dict[str, list[float]] | None = None,
              status: worker_pb2.ResultStatus.ValueType = worker_pb2.RESULT_STATUS_OPTIMAL,
              ) -> worker_pb2.OptimisationResult:
    """A plan whose SoC follows the battery model from ``initial_soc`` (MWh)."""
    soc = initial_soc + np.cumsum(0.92 * np.asarray(load) * HOURS - np.asarray(gen) * HOURS / 0.92)
    return worker_pb2.OptimisationResult(
        status=status, first_interval=nem_time.to_timestamp(first), horizon_intervals=len(gen),
        gen_mw=gen, load_mw=load, state_of_charge_mwh=soc.tolist(),
        algorithm=common_pb2.AlgorithmRef(name="lp-energy-fcas", version="1"),
        fcas=[worker_pb2.ProductSchedule(product=p, enablement_mw=mw) for p, mw in (fcas or {}).items()])


def build(plan: worker_pb2.OptimisationResult, *, initial_soc: float = 97.0, first: datetime = FIRST,
          offer_time: datetime = AFTER_CLOSE, bidding: object = BIDDING) -> bid_pb2.Bid:
    return build_bid(plan, BATTERY, bidding, RULES, dispatch_interval=first,  # type: ignore[arg-type]
                     offer_time=offer_time, version=3, fcas_products=FCAS, initial_state_of_charge_mwh=initial_soc,
                     plan_hash="3f2a9c1b77e0")


def offer(bid: bid_pb2.Bid, product: str, direction: int = 0) -> bid_pb2.ProductOffer:
    return next(o for o in bid.offers if o.product == product and o.direction == direction)


def bands(bid: bid_pb2.Bid, direction: int) -> np.ndarray:
    return np.array([list(p.band_avail_mw) for p in offer(bid, "ENERGY", direction).periods])


def assert_valid(bid: bid_pb2.Bid) -> None:
    assert validate_bid(bid, BATTERY, RULES, products=PRODUCTS, daily_band_prices=DAILY_PRICES) == []


def test_plan_becomes_a_valid_rebid_with_planned_mw_in_the_right_bands() -> None:
    plan = make_plan(gen=[120.0, 0.0, 0.0, 30.0], load=[0.0, 80.0, 0.0, 10.0],
                     fcas={"RAISE6SEC": [20.0, 0.0, 5.0, 0.0], "LOWERREG": [0.0, 15.0, 0.0, 0.0]})
    bid = build(plan)
    assert_valid(bid)
    assert bid.entry_type == bid_pb2.ENTRY_TYPE_REBID
    assert bid.unit_id == "HPR1" and bid.trading_day == "2021-01-05" and bid.version == 3
    assert bid.plan_hash == "3f2a9c1b77e0"
    assert nem_time.from_timestamp(bid.event_time) == AFTER_CLOSE
    assert "3f2a9c1b" in bid.rebid_explanation and "discharge 120.0 MW" in bid.rebid_explanation
    assert "SoC 97.0 MWh at 17:30" in bid.rebid_explanation
    gen, load = bands(bid, common_pb2.DIRECTION_GEN), bands(bid, common_pb2.DIRECTION_LOAD)
    spike = np.asarray(BIDDING.gen_band_prices) >= 300
    negative = np.asarray(BIDDING.load_band_prices) < 0
    # interval 1: 120 MW discharge in GEN band 1, the rest of the 150 MW in the spike bands
    assert gen[0, 0] == 120.0 and gen[0, spike].sum() == pytest.approx(30.0, abs=0.01)
    assert gen[0, ~spike][1:].sum() == 0 and load[0, ~negative].sum() == 0
    # interval 2: 80 MW charge in the top LOAD band; GEN only at >= $300
    assert load[1, -1] == 80.0 and gen[1, 0] == 0 and gen[1, ~spike].sum() == 0
    assert load[1, negative].sum() == pytest.approx(70.0, abs=0.01)
    # interval 3: idle: headroom only
    assert gen[2, ~spike].sum() == 0 and load[2, ~negative].sum() == 0
    # interval 4: 30 discharge and 10 charge are netted to 20 MW discharge
    assert gen[3, 0] == 20.0 and load[3, -1] == 0.0
    raise6 = offer(bid, "RAISE6SEC").periods[0]
    assert raise6.max_avail_mw == 20.0 and raise6.band_avail_mw[0] == 20.0 and sum(raise6.band_avail_mw) == 20
    assert (raise6.enablement_min_mw, raise6.low_breakpoint_mw, raise6.high_breakpoint_mw,
            raise6.enablement_max_mw) == (-150, -150, 130, 150)
    # Regulation is offered on each side, each trapezium on its own side (LOAD's corners mirrored).
    lower_gen = offer(bid, "LOWERREG", common_pb2.DIRECTION_GEN).periods[1]
    lower_load = offer(bid, "LOWERREG", common_pb2.DIRECTION_LOAD).periods[1]
    assert lower_gen.max_avail_mw == lower_load.max_avail_mw == 15.0
    assert (lower_gen.enablement_min_mw, lower_gen.low_breakpoint_mw, lower_gen.high_breakpoint_mw,
            lower_gen.enablement_max_mw) == (0, 0, 150, 150)
    assert (lower_load.enablement_min_mw, lower_load.low_breakpoint_mw, lower_load.high_breakpoint_mw,
            lower_load.enablement_max_mw) == (0, 0, -135, -150)
    assert not any(o.product.endswith("REG") and o.direction == common_pb2.DIRECTION_UNSPECIFIED
                   for o in bid.offers)
    assert offer(bid, "RAISE5MIN").periods[0].max_avail_mw == 0  # every product is offered
    energy_period = offer(bid, "ENERGY", common_pb2.DIRECTION_GEN).periods[0]
    assert energy_period.max_avail_mw == pytest.approx(gen[0].sum())
    assert energy_period.ramp_up_rate_mw_per_min == 150 and energy_period.pasa_avail_mw == 150
    assert energy_period.energy_limit_mwh == 0


def test_offer_before_the_daily_close_is_a_daily_bid() -> None:
    bid = build(make_plan([50.0] * 3, [0.0] * 3), offer_time=BEFORE_CLOSE)
    assert bid.entry_type == bid_pb2.ENTRY_TYPE_DAILY and not bid.HasField("event_time")
    assert_valid(bid)


def test_availability_is_limited_by_state_of_charge() -> None:
    low = PARAMS.soc_min_mwh + 2.0  # 2 MWh above the floor: 2 * 0.92 * 12 = 22.08 MW deliverable
    plan = make_plan(gen=[100.0], load=[0.0], initial_soc=low)
    bid = build(plan, initial_soc=low)
    gen = bands(bid, common_pb2.DIRECTION_GEN)
    assert gen[0, 0] == pytest.approx(22.08, abs=0.001) and gen[0].sum() <= 22.08 + 1e-9
    full = PARAMS.soc_max_mwh - 1.0  # 1 / (0.92 / 12) = 13.043 MW of charge
    bid = build(make_plan(gen=[0.0], load=[100.0], initial_soc=full), initial_soc=full)
    load = bands(bid, common_pb2.DIRECTION_LOAD)
    assert load[0, -1] == pytest.approx(13.043, abs=0.001) and load[0].sum() <= 13.0435
    assert_valid(bid)


@hyp_settings(max_examples=60, deadline=None)
@given(count=st.integers(1, 30),
       initial_soc=st.floats(0.0, 194.0),
       data=st.data())
def test_random_plans_give_valid_bids_that_soc_can_deliver(count: int, initial_soc: float,
                                                           data: st.DataObject) -> None:
    mw = st.floats(0.0, 200.0) | st.just(0.0)
    gen = data.draw(st.lists(mw, min_size=count, max_size=count))
    load = data.draw(st.lists(mw, min_size=count, max_size=count))
    soc = data.draw(st.lists(st.floats(-20.0, 250.0), min_size=count, max_size=count))
    fcas = {p: data.draw(st.lists(st.floats(0.0, 400.0), min_size=count, max_size=count))
            for p in data.draw(st.sets(st.sampled_from(FCAS)))}
    plan = make_plan(gen, load, initial_soc, fcas=fcas)
    del plan.state_of_charge_mwh[:]
    plan.state_of_charge_mwh.extend(soc)  # SoC that need not follow the plan: the bid must still be safe
    bid = build(plan, initial_soc=initial_soc)
    assert_valid(bid)
    soc_start = np.concatenate([[initial_soc], soc])[:count]
    can_discharge, can_charge = deliverable_mw(soc_start, PARAMS, HOURS)
    gen_bands, load_bands = bands(bid, common_pb2.DIRECTION_GEN), bands(bid, common_pb2.DIRECTION_LOAD)
    assert np.all(gen_bands.sum(axis=1) <= can_discharge + 1e-6)
    assert np.all(load_bands.sum(axis=1) <= can_charge + 1e-6)
    maxavail = np.array([p.max_avail_mw for p in offer(bid, "ENERGY", common_pb2.DIRECTION_GEN).periods])
    assert np.all(maxavail <= can_discharge + 1e-6)
    net = np.asarray(gen) - np.asarray(load)
    assert np.all(gen_bands[:, 0] <= np.maximum(net, 0) + 1e-9)


@pytest.mark.parametrize("status", [worker_pb2.RESULT_STATUS_INFEASIBLE, worker_pb2.RESULT_STATUS_ERROR])
def test_unusable_plan_yields_the_safe_bid(status: worker_pb2.ResultStatus.ValueType) -> None:
    plan = make_plan([100.0] * 6, [0.0] * 6, fcas={"RAISE6SEC": [30.0] * 6}, status=status)
    plan.status_reason = "terminal SoC unreachable"
    bid = build(plan)
    assert_valid(bid)
    name = worker_pb2.ResultStatus.Name(status)
    assert bid.rebid_explanation.startswith("Safe fallback bid from 17:35")
    assert name in bid.rebid_explanation and "terminal SoC unreachable" in bid.rebid_explanation
    gen, load = bands(bid, common_pb2.DIRECTION_GEN), bands(bid, common_pb2.DIRECTION_LOAD)
    assert len(gen) == 126  # to the end of the trading day, whatever the plan covered
    assert np.all(gen[:, 0] == 0) and np.all(load[:, -1] == 0)
    assert gen[0].sum() == pytest.approx(150.0) and load[0].sum() == pytest.approx(150.0)
    assert all(p.max_avail_mw == 0 for o in bid.offers if o.product in FCAS for p in o.periods)


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: p.ClearField("gen_mw"), "shorter"),
    (lambda p: setattr(p, "horizon_intervals", 0), "empty"),
    (lambda p: p.load_mw.__setitem__(1, float("nan")), "non-finite"),
    (lambda p: p.fcas.add(product="RAISE1SEC", enablement_mw=[1.0] * 4), "RAISE1SEC"),
    (lambda p: p.first_interval.CopyFrom(nem_time.to_timestamp(FIRST + timedelta(minutes=5))),
     "not the dispatch"),
])
def test_damaged_plans_fall_back_to_safe_bids(damage: object, fragment: str) -> None:
    plan = make_plan([10.0] * 4, [0.0] * 4)
    damage(plan)  # type: ignore[operator]
    bid = build(plan)
    assert_valid(bid)
    assert "Safe fallback" in bid.rebid_explanation and fragment in bid.rebid_explanation


def test_build_safe_bid_directly() -> None:
    bid = build_safe_bid(BATTERY, BIDDING, RULES, dispatch_interval=FIRST, offer_time=AFTER_CLOSE, version=1,
                         fcas_products=FCAS, initial_state_of_charge_mwh=PARAMS.soc_min_mwh,
                         reason="optimiser timed out")
    assert_valid(bid)
    assert bands(bid, common_pb2.DIRECTION_GEN).sum() == 0  # empty battery: nothing to discharge
    assert "optimiser timed out" in bid.rebid_explanation


def test_bid_is_truncated_at_the_end_of_the_trading_day() -> None:
    late = datetime(2021, 1, 5, 23, 0)
    bid = build(make_plan([0.0] * 288, [0.0] * 288, first=late), first=late)
    periods = offer(bid, "ENERGY", common_pb2.DIRECTION_GEN).periods
    assert len(periods) == 61
    assert nem_time.from_timestamp(periods[-1].dispatch_interval) == datetime(2021, 1, 6, 4, 0)
    assert bid.trading_day == "2021-01-05"
    assert_valid(bid)


def test_bid_horizon_and_plan_offset() -> None:
    short = replace(BIDDING, bid_horizon_intervals=5)
    gen = common_pb2.DIRECTION_GEN
    assert len(offer(build(make_plan([1.0] * 20, [0.0] * 20), bidding=short), "RAISEREG", gen).periods) == 5
    assert len(offer(build(make_plan([1.0] * 7, [0.0] * 7)), "RAISEREG", gen).periods) == 7
    plan = make_plan([0.0, 0.0, 90.0, 0.0], [0.0, 150.0, 0.0, 0.0], first=FIRST - timedelta(minutes=10))
    bid = build(plan)
    gen = bands(bid, common_pb2.DIRECTION_GEN)
    assert len(gen) == 2 and gen[0, 0] == 90.0
    assert f"SoC {plan.state_of_charge_mwh[1]:.1f} MWh at 17:30" in bid.rebid_explanation


def test_inputs_no_bid_can_be_made_from_are_errors() -> None:
    plan = make_plan([1.0], [0.0])
    with pytest.raises(ValueError, match="gen_band_prices"):
        build(plan, bidding=replace(BIDDING, gen_band_prices=BIDDING.gen_band_prices[:9]))
    with pytest.raises(ValueError, match="strictly increasing"):
        build(plan, bidding=replace(BIDDING, load_band_prices=tuple(reversed(BIDDING.load_band_prices))))
    with pytest.raises(ValueError, match="grid"):
        build(plan, first=FIRST + timedelta(minutes=1))
    with pytest.raises(ValueError, match="neither a RAISE nor a LOWER"):
        build_bid(plan, BATTERY, BIDDING, RULES, dispatch_interval=FIRST, offer_time=AFTER_CLOSE, version=1,
                  fcas_products=["REGULATION"], initial_state_of_charge_mwh=97.0, plan_hash="x")


def test_custom_ladders_keep_convexity() -> None:
    """Ladders where LOAD bands reach above GEN band 1: headroom moves to bands that stay convex."""
    ladders = replace(BIDDING, gen_band_prices=(20.0, 40.0, 60.0, 80.0, 150.0, 400.0, 900.0, 3000.0, 9000.0,
                                                14000.0),
                      load_band_prices=(-900.0, -400.0, -100.0, -10.0, 0.0, 10.0, 19.0, 30.0, 100.0, 200.0))
    plan = make_plan([0.0, 100.0, 0.0], [100.0, 0.0, 0.0])
    bid = build(plan, bidding=ladders)
    assert validate_bid(bid, BATTERY, RULES, products=PRODUCTS) == []
    gen, load = bands(bid, common_pb2.DIRECTION_GEN), bands(bid, common_pb2.DIRECTION_LOAD)
    assert np.all(gen[:, 1:5] == 0) and gen[0, 5:].sum() > 0  # headroom only above $200
    assert np.all(load[:, 7:9] == 0) and load[1, :7].sum() > 0  # headroom only below $20


# --------------------------------------------------------------------------------------------------
# Opportunity-cost headroom
# --------------------------------------------------------------------------------------------------

OPPORTUNITY = replace(BIDDING, headroom_pricing="opportunity_cost")


def with_duals(plan: worker_pb2.OptimisationResult, energy_value: list[float], raise_value: list[float],
               lower_value: list[float]) -> worker_pb2.OptimisationResult:
    plan.energy_value_per_mwh[:] = energy_value
    plan.raise_capacity_value_per_mw[:] = raise_value
    plan.lower_capacity_value_per_mw[:] = lower_value
    return plan


def band_mw(bid: bid_pb2.Bid, direction: int, interval: int = 0) -> list[float]:
    return list(offer(bid, "ENERGY", direction).periods[interval].band_avail_mw)


def test_headroom_opportunity_cost_follows_the_duals() -> None:
    gen_floor, load_ceiling = headroom_opportunity_cost(np.array([46.0, -10.0]), np.array([20.0, 0.0]),
                                                        np.array([5.0, 0.0]), PARAMS)
    np.testing.assert_allclose(gen_floor, [46.0 / 0.92 + 20.0, -10.0 / 0.92])
    np.testing.assert_allclose(load_ceiling, [46.0 * 0.92 - 5.0, -10.0 * 0.92])


def test_free_headroom_goes_to_the_cheapest_spike_band_above_its_opportunity_cost() -> None:
    # Nothing planned, no FCAS: all of SoC's discharge headroom in one GEN band, all charge in one LOAD band.
    plan = with_duals(make_plan([0.0, 0.0], [0.0, 0.0]), [460.0, 46.0], [0.0, 0.0], [0.0, 0.0])
    bid = build(plan, bidding=OPPORTUNITY)
    gen_prices = np.asarray(BIDDING.gen_band_prices)
    load_prices = np.asarray(BIDDING.load_band_prices)
    first, second = band_mw(bid, common_pb2.DIRECTION_GEN, 0), band_mw(bid, common_pb2.DIRECTION_GEN, 1)
    # 460 / 0.92 = 500 $/MWh: the 500 band; 46 / 0.92 = 50 $/MWh: below every spike band, so the cheapest.
    assert [gen_prices[i] for i, mw in enumerate(first) if mw > 0] == [500.0]
    assert [gen_prices[i] for i, mw in enumerate(second) if mw > 0] == [300.0]
    assert sum(first) == pytest.approx(150.0)
    load = band_mw(bid, common_pb2.DIRECTION_LOAD, 0)
    # 460 * 0.92 is above every negative LOAD band: the dearest negative band takes all the charge headroom.
    assert [load_prices[i] for i, mw in enumerate(load) if mw > 0] == [-1.0]
    assert validate_bid(bid, BATTERY, RULES, products=PRODUCTS, daily_band_prices=DAILY_PRICES) == []


def test_energy_value_charge_headroom_recharges_below_the_value_of_stored_energy() -> None:
    """Nothing planned, no FCAS. Stored energy worth $300, $46 and -$10/MWh: with ``charge_headroom = "energy_value"``
    the charge headroom goes in the dearest LOAD band at most value x 0.92 ($276 -> the $100 band, $42.3 -> -$1,
    -$9.2 -> -$10); with "negative" only a negative band takes it. The discharge headroom is the same either way."""
    plan = with_duals(make_plan([0.0] * 3, [0.0] * 3), [300.0, 46.0, -10.0], [0.0] * 3, [0.0] * 3)
    load_prices = BIDDING.load_band_prices
    by_value = build(plan, bidding=replace(OPPORTUNITY, charge_headroom="energy_value"))
    negative_only = build(plan, bidding=OPPORTUNITY)
    chosen = [[load_prices[i] for i, mw in enumerate(band_mw(bid, common_pb2.DIRECTION_LOAD, interval)) if mw > 0]
              for bid in (by_value, negative_only) for interval in range(3)]
    assert chosen == [[100.0], [-1.0], [-10.0], [-1.0], [-1.0], [-10.0]]
    assert sum(band_mw(by_value, common_pb2.DIRECTION_LOAD, 0)) == pytest.approx(150.0)
    for interval in range(3):
        assert (band_mw(by_value, common_pb2.DIRECTION_GEN, interval)
                == band_mw(negative_only, common_pb2.DIRECTION_GEN, interval))
    assert validate_bid(by_value, BATTERY, RULES, products=PRODUCTS, daily_band_prices=DAILY_PRICES) == []


def test_energy_value_charge_headroom_stays_below_the_planned_discharge_band() -> None:
    """Stored energy worth $250/MWh, 50 MW of discharge planned: planned GEN in the dearest band at most 250 / 0.92
    ($200). The LOAD ceiling (250 x 0.92 = $230) would allow a $220 LOAD band, but a bid may not buy at a price it
    also sells at (convexity, V6): the charge headroom goes in the $100 band below it."""
    ladders = replace(OPPORTUNITY, planned_pricing="energy_value", charge_headroom="energy_value",
                      load_band_prices=(-1000.0, -500.0, -300.0, -100.0, -50.0, -20.0, -10.0, -1.0, 100.0, 220.0))
    plan = with_duals(make_plan([50.0], [0.0]), [250.0], [0.0], [0.0])
    bid = build(plan, bidding=ladders)
    gen = band_mw(bid, common_pb2.DIRECTION_GEN)
    load = band_mw(bid, common_pb2.DIRECTION_LOAD)
    assert gen[ladders.gen_band_prices.index(200.0)] == pytest.approx(50.0)
    assert [ladders.load_band_prices[i] for i, mw in enumerate(load) if mw > 0] == [100.0]
    prices = {**DAILY_PRICES, ("ENERGY", common_pb2.DIRECTION_LOAD): ladders.load_band_prices}
    assert validate_bid(bid, BATTERY, RULES, products=PRODUCTS, daily_band_prices=prices) == []


# A LOAD ladder with one trough band ($500, at or above TROUGH_LOAD_PRICE_PER_MWH) over the default GEN ladder.
TROUGH_LOAD_PRICES = (-1000.0, -500.0, -100.0, -50.0, -20.0, 0.0, 50.0, 100.0, 299.0, 500.0)
TROUGHS = replace(CONFIG.bidding, load_band_prices=TROUGH_LOAD_PRICES)


def trough_prices() -> dict[tuple[str, int], tuple[float, ...]]:
    return {**DAILY_PRICES, ("ENERGY", common_pb2.DIRECTION_GEN): TROUGHS.gen_band_prices,
            ("ENERGY", common_pb2.DIRECTION_LOAD): TROUGHS.load_band_prices}


def used_prices(bid: bid_pb2.Bid, direction: int, ladder: tuple[float, ...], interval: int = 0) -> list[float]:
    return [ladder[i] for i, mw in enumerate(band_mw(bid, direction, interval)) if mw > 0]


def test_free_charge_headroom_recharges_in_a_trough_band_and_discharge_headroom_moves_above_it() -> None:
    """Nothing planned, no FCAS. Stored energy worth $700/MWh (LOAD ceiling 644, GEN floor 761): the charge
    headroom goes in the $500 trough band, and the discharge headroom in that interval only in spike bands above
    it ($1,000). Worth $400 (ceiling 368, floor 435): the $299 band, and the discharge headroom in $1,000 too (the
    cheapest spike band at least 435). Worth $200 (ceiling 184, floor 217): $100 and the $300 spike band, as
    without trough bands."""
    plan = with_duals(make_plan([0.0] * 3, [0.0] * 3), [700.0, 400.0, 200.0], [0.0] * 3, [0.0] * 3)
    bid = build(plan, bidding=TROUGHS)
    assert validate_bid(bid, BATTERY, RULES, products=PRODUCTS, daily_band_prices=trough_prices()) == []
    load_chosen = [used_prices(bid, common_pb2.DIRECTION_LOAD, TROUGH_LOAD_PRICES, i) for i in range(3)]
    gen_chosen = [used_prices(bid, common_pb2.DIRECTION_GEN, TROUGHS.gen_band_prices, i) for i in range(3)]
    assert load_chosen == [[500.0], [299.0], [100.0]]
    assert gen_chosen == [[1000.0], [1000.0], [300.0]]
    assert sum(band_mw(bid, common_pb2.DIRECTION_LOAD, 0)) == pytest.approx(150.0)


def test_planned_charge_and_negative_only_headroom_never_use_a_trough_band() -> None:
    """Planned charge of 60 MW with energy worth $700/MWh goes in the dearest band below the troughs ($299),
    not at $500, and the free rest of the charge headroom (90 MW) in the $500 trough band; with
    ``charge_headroom = "negative"`` the rest goes in a negative band and the discharge headroom keeps the $300
    spike band."""
    plan = with_duals(make_plan([0.0], [60.0]), [700.0], [0.0], [0.0])
    by_value = build(plan, bidding=TROUGHS)
    load = band_mw(by_value, common_pb2.DIRECTION_LOAD)
    assert load[TROUGH_LOAD_PRICES.index(299.0)] == pytest.approx(60.0)
    assert load[TROUGH_LOAD_PRICES.index(500.0)] == pytest.approx(90.0)
    negative_only = build(plan, bidding=replace(TROUGHS, charge_headroom="negative"))
    assert used_prices(negative_only, common_pb2.DIRECTION_LOAD, TROUGH_LOAD_PRICES) == [-20.0, 299.0]
    assert used_prices(negative_only, common_pb2.DIRECTION_GEN, TROUGHS.gen_band_prices) == [1000.0]
    for bid in (by_value, negative_only):
        assert validate_bid(bid, BATTERY, RULES, products=PRODUCTS, daily_band_prices=trough_prices()) == []


def test_the_fixed_strategy_never_uses_a_trough_band() -> None:
    """Fixed headroom on the trough ladder: planned charge in the $299 band, charge headroom in the negative
    bands, discharge headroom in the spike bands above $299 — the $500 band stays empty."""
    fixed = replace(TROUGHS, headroom_pricing="fixed", planned_pricing="price_taking")
    bid = build(make_plan([0.0, 100.0], [80.0, 0.0]), bidding=fixed)
    load, gen = bands(bid, common_pb2.DIRECTION_LOAD), bands(bid, common_pb2.DIRECTION_GEN)
    assert np.all(load[:, TROUGH_LOAD_PRICES.index(500.0)] == 0)
    assert load[0, TROUGH_LOAD_PRICES.index(299.0)] == pytest.approx(80.0)
    assert gen[0, list(TROUGHS.gen_band_prices).index(300.0)] > 0
    assert validate_bid(bid, BATTERY, RULES, products=PRODUCTS, daily_band_prices=trough_prices()) == []


def test_a_load_ladder_of_trough_bands_only_is_an_error() -> None:
    ladder = replace(TROUGHS, load_band_prices=tuple(300.0 + 10.0 * band for band in range(10)))
    with pytest.raises(ValueError, match=r"load_band_prices needs a band below \$300"):
        build(with_duals(make_plan([0.0], [0.0]), [46.0], [0.0], [0.0]), bidding=ladder)


def test_an_unknown_charge_headroom_is_an_error() -> None:
    plan = with_duals(make_plan([0.0], [0.0]), [46.0], [0.0], [0.0])
    with pytest.raises(ValueError, match="charge_headroom"):
        build(plan, bidding=replace(OPPORTUNITY, charge_headroom="always"))


def test_headroom_displacing_planned_fcas_needs_the_displacement_price() -> None:
    # 100 MW of raise regulation planned: 50 MW of discharge headroom is free, 100 MW would displace it.
    fcas = {"RAISEREG": [100.0], "LOWERREG": [0.0]}
    plan = with_duals(make_plan([0.0], [0.0], fcas=fcas), [46.0], [20.0], [0.0])
    bid = build(plan, bidding=OPPORTUNITY)
    gen = band_mw(bid, common_pb2.DIRECTION_GEN)
    prices = list(BIDDING.gen_band_prices)
    assert gen[prices.index(300.0)] == pytest.approx(50.0)
    assert gen[prices.index(OPPORTUNITY.fcas_displacement_gen_floor)] == pytest.approx(100.0)
    assert sum(gen) == pytest.approx(150.0)
    assert validate_bid(bid, BATTERY, RULES, products=PRODUCTS, daily_band_prices=DAILY_PRICES) == []


def test_plan_without_duals_keeps_fixed_headroom() -> None:
    plan = make_plan([0.0], [0.0])
    assert build(plan, bidding=OPPORTUNITY) == build(plan, bidding=BIDDING)


def test_unknown_headroom_pricing_is_an_error() -> None:
    plan = with_duals(make_plan([0.0], [0.0]), [46.0], [0.0], [0.0])
    with pytest.raises(ValueError, match="headroom_pricing"):
        build(plan, bidding=replace(BIDDING, headroom_pricing="guess"))


def test_fcas_reserved_mw_follows_joint_capacity() -> None:
    raise_mw, lower_mw = fcas_reserved_mw({"RAISE6SEC": np.array([30.0]), "RAISE60SEC": np.array([50.0]),
                                           "RAISEREG": np.array([20.0]), "LOWERREG": np.array([10.0])}, 1)
    np.testing.assert_allclose(raise_mw, [70.0])
    np.testing.assert_allclose(lower_mw, [10.0])


ENERGY_VALUE = replace(CONFIG.bidding, energy_value_floor_per_mwh=-1000.0)


def test_the_default_strategy_is_energy_value_pricing() -> None:
    assert (CONFIG.bidding.headroom_pricing, CONFIG.bidding.planned_pricing) == ("opportunity_cost",
                                                                                 "energy_value")
    assert min(CONFIG.bidding.gen_band_prices) < 0 < max(CONFIG.bidding.load_band_prices)


@hyp_settings(max_examples=80, deadline=None)
@given(count=st.integers(1, 30), initial_soc=st.floats(0.0, 194.0), data=st.data())
@pytest.mark.parametrize("load_band_prices", [CONFIG.bidding.load_band_prices, TROUGH_LOAD_PRICES],
                         ids=["default-ladder", "trough-ladder"])
def test_energy_value_bids_are_valid_convex_and_deliverable(load_band_prices: tuple[float, ...], count: int,
                                                           initial_soc: float, data: st.DataObject) -> None:
    mw = st.floats(0.0, 200.0) | st.just(0.0)
    value = st.floats(-1500.0, 20000.0) | st.just(0.0)
    gen = data.draw(st.lists(mw, min_size=count, max_size=count))
    load = data.draw(st.lists(mw, min_size=count, max_size=count))
    fcas = {p: data.draw(st.lists(st.floats(0.0, 200.0), min_size=count, max_size=count))
            for p in data.draw(st.sets(st.sampled_from(FCAS)))}
    plan = with_duals(make_plan(gen, load, initial_soc, fcas=fcas),
                      data.draw(st.lists(value, min_size=count, max_size=count)),
                      data.draw(st.lists(st.floats(0.0, 5000.0), min_size=count, max_size=count)),
                      data.draw(st.lists(st.floats(0.0, 5000.0), min_size=count, max_size=count)))
    ladders = replace(ENERGY_VALUE, load_band_prices=load_band_prices)
    bid = build(plan, initial_soc=initial_soc, bidding=ladders)
    prices = {**DAILY_PRICES, ("ENERGY", common_pb2.DIRECTION_GEN): ladders.gen_band_prices,
              ("ENERGY", common_pb2.DIRECTION_LOAD): ladders.load_band_prices}
    assert validate_bid(bid, BATTERY, RULES, products=PRODUCTS, daily_band_prices=prices) == []
    soc_start = np.concatenate([[initial_soc], np.asarray(plan.state_of_charge_mwh)])[:count]
    can_discharge, can_charge = deliverable_mw(soc_start, PARAMS, HOURS)
    gen_bands, load_bands = bands(bid, common_pb2.DIRECTION_GEN), bands(bid, common_pb2.DIRECTION_LOAD)
    assert np.all(gen_bands.sum(axis=1) <= can_discharge + 1e-6)
    assert np.all(load_bands.sum(axis=1) <= can_charge + 1e-6)


def test_energy_value_prices_planned_discharge_at_the_value_of_stored_energy() -> None:
    # Planned discharge while stored energy is worth -46 $/MWh (deeper negative prices ahead): offered at
    # the dearest GEN band at most -46 / 0.92 = -50 $/MWh, so the unit discharges even at -50 $/MWh.
    plan = with_duals(make_plan([150.0, 0.0], [0.0, 150.0]), [-46.0, 40.0], [0.0, 0.0], [0.0, 0.0])
    bid = build(plan, bidding=ENERGY_VALUE)
    gen_prices, load_prices = ENERGY_VALUE.gen_band_prices, ENERGY_VALUE.load_band_prices
    first_gen = band_mw(bid, common_pb2.DIRECTION_GEN, 0)
    assert first_gen[gen_prices.index(-50.0)] == pytest.approx(150.0)
    # Charge headroom in that interval must stay below the -50 GEN band (convexity).
    first_load = band_mw(bid, common_pb2.DIRECTION_LOAD, 0)
    assert all(load_prices[i] < -50.0 for i, mw in enumerate(first_load) if mw > 0)
    # Planned charge where energy is worth 40 $/MWh: the cheapest LOAD band at least 40 * 0.92 = 36.8.
    second_load = band_mw(bid, common_pb2.DIRECTION_LOAD, 1)
    assert second_load[load_prices.index(50.0)] == pytest.approx(150.0)


def test_the_energy_value_floor_limits_how_negative_planned_prices_go() -> None:
    plan = with_duals(make_plan([150.0], [0.0]), [-200.0], [0.0], [0.0])
    prices = CONFIG.bidding.gen_band_prices
    floored = band_mw(build(plan, bidding=CONFIG.bidding), common_pb2.DIRECTION_GEN)
    unfloored = band_mw(build(plan, bidding=ENERGY_VALUE), common_pb2.DIRECTION_GEN)
    # -50 / 0.92 = -54.3 $/MWh: the -100 band; -200 / 0.92 = -217 $/MWh: the -1000 band.
    assert floored[prices.index(-100.0)] == pytest.approx(150.0)
    assert unfloored[prices.index(-1000.0)] == pytest.approx(150.0)


def test_displacement_scope_regulation_lets_energy_displace_contingency_fcas() -> None:
    fcas = {"RAISE6SEC": [100.0], "RAISEREG": [20.0]}
    plan = with_duals(make_plan([0.0], [0.0], fcas=fcas), [46.0], [0.0], [0.0])
    prices = list(BIDDING.gen_band_prices)
    protected = band_mw(build(plan, bidding=OPPORTUNITY), common_pb2.DIRECTION_GEN)
    assert protected[prices.index(300.0)] == pytest.approx(30.0)
    assert protected[prices.index(1000.0)] == pytest.approx(120.0)
    scoped = band_mw(build(plan, bidding=replace(OPPORTUNITY, fcas_displacement_scope="regulation")),
                     common_pb2.DIRECTION_GEN)
    assert scoped[prices.index(300.0)] == pytest.approx(130.0)
    assert scoped[prices.index(1000.0)] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="fcas_displacement_scope"):
        build(plan, bidding=replace(OPPORTUNITY, fcas_displacement_scope="some"))


def test_ladders_are_pulled_within_the_trading_days_price_limits() -> None:
    """A year whose cap is below the configured spike band (FY2017-18: $14,200) bids its top bands just under
    the cap; a year whose limits hold the ladder bids it unchanged (band order kept either way)."""
    from datetime import date

    from algorithms.market.bid_builder import bidding_for_trading_day
    from settings import PriceCap

    settings = load_settings(environ={})
    rules = replace(settings.market, price_caps=(
        PriceCap(fy_start=2017, cap=14200.0, cumulative_price_threshold=212800.0, threshold_interval_minutes=30),
        *settings.market.price_caps))
    battery = battery_from_spec(battery_spec_from_settings(settings.battery))
    old = bidding_for_trading_day(settings.bidding, rules, battery, date(2018, 4, 2))
    assert max(old.gen_band_prices) <= 14200.0 and max(old.fcas_band_prices) <= 14200.0
    assert all(b > a for a, b in zip(old.gen_band_prices, old.gen_band_prices[1:], strict=False))
    assert old.gen_band_prices[:-1] == settings.bidding.gen_band_prices[:-1]
    assert old.load_band_prices == settings.bidding.load_band_prices
    recent = bidding_for_trading_day(settings.bidding, rules, battery, date(2025, 1, 2))
    assert recent.gen_band_prices == settings.bidding.gen_band_prices


HEADROOM_OFFER = replace(BIDDING, fcas_offer="headroom")


def test_the_default_offer_is_the_headroom() -> None:
    assert CONFIG.bidding.fcas_offer == "headroom"


def test_headroom_offer_offers_fcas_beyond_the_plan_without_touching_energy() -> None:
    # Interval 1: 100 MW discharge with 30 MW RAISE6SEC and 10 MW RAISEREG planned; interval 2: 60 MW charge.
    fcas = {"RAISE6SEC": [30.0, 0.0], "RAISEREG": [10.0, 0.0], "LOWERREG": [0.0, 5.0], "LOWER60SEC": [0.0, 0.0]}
    plan = make_plan(gen=[100.0, 0.0], load=[0.0, 60.0], fcas=fcas)
    planned, headroom = build(plan), build(plan, bidding=HEADROOM_OFFER)
    assert_valid(headroom)
    for direction in (common_pb2.DIRECTION_GEN, common_pb2.DIRECTION_LOAD):  # energy exactly as planned
        assert np.array_equal(bands(planned, direction), bands(headroom, direction))
    assert offer(planned, "RAISE6SEC").periods[0].max_avail_mw == 30.0
    # Contingency: the registered power in every interval, band 1.
    raise6 = offer(headroom, "RAISE6SEC")
    assert [p.max_avail_mw for p in raise6.periods] == [150.0, 150.0]
    assert raise6.periods[0].band_avail_mw[0] == 150.0 and raise6.periods[0].high_breakpoint_mw == 0.0
    assert [p.max_avail_mw for p in offer(headroom, "LOWER60SEC").periods] == [150.0, 150.0]
    # Regulation: planned + what the planned dispatch and planned FCAS leave free on its side:
    # raise 10 + (150 − 100 − (30 + 10)) = 20 MW; at −60 MW net 150 + 60 − 0 = 210 free → capped at 150.
    assert [p.max_avail_mw for p in offer(headroom, "RAISEREG", common_pb2.DIRECTION_GEN).periods] == [20.0, 150.0]
    # lower: 150 + 100 − 0 → 150; at −60 MW net: 5 + (150 − 60 − 5) = 90 MW.
    assert [p.max_avail_mw for p in offer(headroom, "LOWERREG", common_pb2.DIRECTION_LOAD).periods] == [150.0, 90.0]


def test_headroom_offer_is_enabled_up_to_the_depth_the_plan_did_not_expect() -> None:
    from algorithms.market.clearing import clear_interval

    fcas = {"RAISE6SEC": [5.0], "RAISEREG": [4.0], "LOWERREG": [4.0], "LOWER6SEC": [0.0]}
    plan = make_plan(gen=[0.0], load=[0.0], fcas=fcas)
    prices = {"ENERGY": 50.0, "RAISE6SEC": 2.0, "RAISEREG": 20.0, "LOWERREG": 15.0, "LOWER6SEC": 1.0}
    caps = {"RAISE6SEC": 25.0, "RAISEREG": 12.0, "LOWERREG": 9.0, "LOWER6SEC": 30.0}  # the region's depth

    def enabled(bidding: object) -> dict[str, float]:  # the services priced in the interval
        return clear_interval(build(plan, bidding=bidding), FIRST, prices, state_of_charge_mwh=97.0,
                              previous_net_mw=0.0, battery=BATTERY, enablement_cap_mw=caps).fcas_enabled_mw

    def priced(mw: dict[str, float]) -> dict[str, float]:
        return {product: mw[product] for product in caps}

    assert priced(enabled(BIDDING)) == {"RAISE6SEC": 5.0, "RAISEREG": 4.0, "LOWERREG": 4.0, "LOWER6SEC": 0.0}
    assert priced(enabled(HEADROOM_OFFER)) == {"RAISE6SEC": 25.0, "RAISEREG": 12.0, "LOWERREG": 9.0, "LOWER6SEC": 30.0}


def test_an_unknown_fcas_offer_is_an_error() -> None:
    from algorithms.market.bid_builder import fcas_offer_mw

    with pytest.raises(ValueError, match="fcas_offer"):
        fcas_offer_mw({}, np.zeros(1), 150.0, "everything")
    with pytest.raises(ValueError, match="fcas_offer"):
        build(make_plan([0.0], [0.0]), bidding=replace(BIDDING, fcas_offer="everything"))


def test_headroom_offer_never_exceeds_what_the_stored_energy_can_deliver() -> None:
    """Beyond the plan, raise is limited by the energy above the floor (plus planned charge it can drop), lower
    by the room below the ceiling (plus planned discharge it can drop); the planned MW is always offered."""
    from algorithms.market.bid_builder import fcas_offer_mw

    planned = {"RAISE6SEC": np.array([0.0, 0.0, 0.0]), "RAISEREG": np.array([0.0, 3.0, 0.0]),
               "LOWER6SEC": np.array([0.0, 0.0, 0.0]), "LOWERREG": np.array([0.0, 0.0, 0.0])}
    net = np.array([0.0, 0.0, -20.0])  # idle, idle, charging 20 MW
    can_discharge, can_charge = np.array([0.0, 0.0, 0.0]), np.array([150.0, 40.0, 0.0])
    unlimited = fcas_offer_mw(planned, net, 150.0, "headroom")
    limited = fcas_offer_mw(planned, net, 150.0, "headroom", (can_discharge, can_charge))
    assert list(unlimited["RAISE6SEC"]) == [150.0, 150.0, 150.0]
    assert list(limited["RAISE6SEC"]) == [0.0, 0.0, 20.0]  # empty: only the charge it can drop
    assert list(limited["RAISEREG"]) == [0.0, 3.0, 20.0]  # the planned 3 MW stays
    assert list(limited["LOWER6SEC"]) == [150.0, 40.0, 0.0]
    assert list(limited["LOWERREG"]) == [150.0, 40.0, 0.0]
    for product, mw in planned.items():
        assert np.all(limited[product] >= mw) and np.all(limited[product] <= unlimited[product])
    # The plan's own offer is never limited: the plan is energy-feasible.
    assert fcas_offer_mw(planned, net, 150.0, "planned", (can_discharge, can_charge)) == planned
