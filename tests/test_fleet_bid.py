"""The fleet bid: one bidirectional unit from aggregated plans, valid, and never more than the fleet delivers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from algorithms.common import nem_time
from algorithms.fleet.fleet_bid import (
    FleetBidError,
    build_fleet_bid,
    deliverable_caps_mw,
    fleet_initial_state_of_charge_mwh,
    fleet_plan_result,
    fleet_unit_spec,
)
from algorithms.fleet.plan_aggregate import PLAN_FIGURES, PlanAggregate, PlanFigure, aggregate_plans
from algorithms.fleet.site_plan_types import SitePlans
from algorithms.market.bid_validation import validate_bid
from settings import BiddingSettings, load_settings
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

CONFIG = load_settings(environ={})
RULES = CONFIG.market
BIDDING = CONFIG.bidding
FIXED = replace(CONFIG.bidding, headroom_pricing="fixed", planned_pricing="price_taking")
WINDOW_START = datetime(2021, 1, 5, 17, 30)  # market time (AEST); first dispatch interval ends 17:35
FIRST = WINDOW_START + timedelta(minutes=5)
AFTER_CLOSE = datetime(2021, 1, 5, 17, 31)
BEFORE_CLOSE = datetime(2021, 1, 4, 12, 0)
GEN, LOAD = common_pb2.DIRECTION_GEN, common_pb2.DIRECTION_LOAD


def unit(sites: int = 200, *, kw: float = 5.0) -> common_pb2.BatterySpec:
    """``sites`` homes of 13.5 kWh / ``kw`` kW, 20 % reserve, 95 % efficient each way."""
    return fleet_unit_spec("VPP1", "SA1", np.full(sites, 13.5), np.full(sites, kw), np.full(sites, kw),
                           np.full(sites, 0.95), np.full(sites, 0.95), np.full(sites, 0.2))


def figure(values: Sequence[float] | np.ndarray, lower: Sequence[float] | np.ndarray | None = None) -> PlanFigure:
    estimate = np.asarray(values, dtype=np.float64)[None, :]
    low = estimate if lower is None else np.asarray(lower, dtype=np.float64)[None, :]
    return PlanFigure(estimate=estimate, lower=low, upper=estimate + (estimate - low), planned=estimate)


def node_aggregate(battery_mw: list[float], discharge_low_mw: list[float], charge_low_mw: list[float],
                   soc_mwh: list[float], *, plan_minutes: int = 30, start: datetime = WINDOW_START,
                   sites: int = 200) -> PlanAggregate:
    """A one-node aggregate with the given per-plan-interval figures (MW, MWh)."""
    count = len(battery_mw)
    zeros = np.zeros((1, count), dtype=np.int64)
    return PlanAggregate(
        start_ms=nem_time.market_to_unix_ms(start),
        plan_interval_minutes=plan_minutes,
        current_version=42,
        confidence_z=1.96,
        expected_sites=np.array([sites]),
        capacity_mwh=np.array([sites * 0.0135]),
        current_version_sites=zeros + sites - 10,
        stale_version_sites=zeros + 6,
        estimated_sites=zeros + 4,
        net_export_mw=figure(np.asarray(battery_mw) - 0.1),
        battery_power_mw=figure(battery_mw),
        discharge_flexibility_mw=figure(np.asarray(discharge_low_mw) + 0.05, discharge_low_mw),
        charge_flexibility_mw=figure(np.asarray(charge_low_mw) + 0.05, charge_low_mw),
        state_of_charge_mwh=figure(soc_mwh),
    )


def bands(bid: bid_pb2.Bid, direction: int) -> np.ndarray:
    offer = next(o for o in bid.offers if o.product == "ENERGY" and o.direction == direction)
    return np.array([list(p.band_avail_mw) for p in offer.periods])


def max_avail(bid: bid_pb2.Bid, direction: int) -> np.ndarray:
    offer = next(o for o in bid.offers if o.product == "ENERGY" and o.direction == direction)
    return np.array([p.max_avail_mw for p in offer.periods])


def bid_for(aggregate: PlanAggregate, spec: common_pb2.BatterySpec | None = None, *,
            bidding: BiddingSettings = BIDDING, first: datetime = FIRST, offer_time: datetime = AFTER_CLOSE,
            ) -> bid_pb2.Bid:
    result = build_fleet_bid(aggregate, 0, spec or unit(), bidding, RULES, dispatch_interval=first,
                             offer_time=offer_time, version=7, plan_hash="9c1b77e03f2a")
    assert result.violations == () and result.is_valid, result.summary
    assert result.bid is not None
    return result.bid


def test_unit_spec_sums_the_member_sites() -> None:
    spec = fleet_unit_spec("VPP-SA1", "SA1", capacity_kwh=np.array([10.0, 13.5, 5.0]),
                           max_discharge_kw=np.array([5.0, 5.0, 3.0]), max_charge_kw=np.array([4.0, 5.0, 3.0]),
                           charge_efficiency=np.array([0.9, 0.95, 1.0]),
                           discharge_efficiency=np.array([0.8, 0.9, 1.0]),
                           reserve_fraction=np.array([0.1, 0.2, 0.3]))
    assert spec.unit_id == "VPP-SA1" and spec.region == "SA1"
    assert spec.power_mw == pytest.approx(0.012)  # min(13 kW discharge, 12 kW charge)
    assert spec.energy_mwh == pytest.approx(0.0285)
    assert spec.charge_efficiency == pytest.approx((9.0 + 12.825 + 5.0) / 28.5)
    assert spec.discharge_efficiency == pytest.approx((8.0 + 12.15 + 5.0) / 28.5)
    assert spec.soc_min_fraction == pytest.approx((1.0 + 2.7 + 1.5) / 28.5)  # reserve kWh / capacity
    assert spec.soc_max_fraction == 1.0
    assert spec.mlf_gen == 1.0 and spec.mlf_load == 1.0
    assert spec.ramp_rate_mw_per_min == 1.0  # full power within a minute, but at least 1 MW/min
    assert spec.min_ramp_rate_mw_per_min == pytest.approx(0.03 * 0.012)


def test_minimum_ramp_rate_is_the_lesser_of_3_mw_and_3_percent_per_minute() -> None:
    assert unit(10_000).min_ramp_rate_mw_per_min == pytest.approx(1.5)  # 50 MW: 3 % is 1.5 MW/min
    assert unit(10_000).ramp_rate_mw_per_min == pytest.approx(50.0)
    assert unit(40_000).min_ramp_rate_mw_per_min == pytest.approx(3.0)  # 200 MW: capped at 3 MW/min
    custom = fleet_unit_spec("U", "SA1", np.ones(2), np.ones(2), np.ones(2), np.ones(2), np.ones(2), np.zeros(2),
                             min_ramp_rate_mw_per_min=0.5)
    assert custom.min_ramp_rate_mw_per_min == 0.5


@pytest.mark.parametrize("change", [
    {"capacity_kwh": np.array([10.0, 0.0])},
    {"capacity_kwh": np.array([10.0])},
    {"max_charge_kw": np.array([5.0, -1.0])},
    {"charge_efficiency": np.array([0.9, 1.2])},
    {"discharge_efficiency": np.array([0.9, np.nan])},
    {"reserve_fraction": np.array([0.1, 1.5])},
])
def test_unit_spec_refuses_impossible_sites(change: dict[str, np.ndarray]) -> None:
    arguments = {"capacity_kwh": np.full(2, 10.0), "max_discharge_kw": np.full(2, 5.0),
                 "max_charge_kw": np.full(2, 5.0), "charge_efficiency": np.full(2, 0.9),
                 "discharge_efficiency": np.full(2, 0.9), "reserve_fraction": np.full(2, 0.1)}
    with pytest.raises(FleetBidError):
        fleet_unit_spec("U", "SA1", **{**arguments, **change})  # type: ignore[arg-type]
    with pytest.raises(FleetBidError, match="at least one site"):
        fleet_unit_spec("U", "SA1", *(np.zeros(0) for _ in range(6)))


def test_plan_result_repeats_each_plan_interval_on_the_5_minute_grid() -> None:
    aggregate = node_aggregate([0.6, -0.3], [0.0, 0.0], [0.0, 0.0], [1.0, 1.2], plan_minutes=15)
    spec = fleet_unit_spec("U", "SA1", np.full(2, 1000.0), np.full(2, 1000.0), np.full(2, 1000.0),
                           np.full(2, 0.9), np.full(2, 0.9), np.zeros(2))
    plan = fleet_plan_result(aggregate, 0, spec)
    assert plan.status == worker_pb2.RESULT_STATUS_OPTIMAL and plan.horizon_intervals == 6
    assert nem_time.from_timestamp(plan.first_interval) == FIRST
    assert list(plan.gen_mw) == pytest.approx([0.6, 0.6, 0.6, 0.0, 0.0, 0.0])
    assert list(plan.load_mw) == pytest.approx([0.0, 0.0, 0.0, 0.3, 0.3, 0.3])
    start = 1.0 + 0.6 * 0.25 / 0.9  # the first interval's discharge undone: 1.1667 MWh at 17:30
    assert fleet_initial_state_of_charge_mwh(aggregate, 0, spec) == pytest.approx(start)
    expected_soc = [start + (1.0 - start) / 3, start + 2 * (1.0 - start) / 3, 1.0, 1.0 + 0.2 / 3, 1.0 + 0.4 / 3, 1.2]
    assert list(plan.state_of_charge_mwh) == pytest.approx(expected_soc)
    assert len(plan.fcas) == 0 and plan.algorithm.name == "fleet-plan-aggregate"
    charging = node_aggregate([-0.3], [0.0], [0.0], [1.0], plan_minutes=15)
    assert fleet_initial_state_of_charge_mwh(charging, 0, spec) == pytest.approx(1.0 - 0.3 * 0.25 * 0.9)


def test_caps_count_a_planned_charge_against_the_discharge_flexibility() -> None:
    aggregate = node_aggregate([0.4, -0.3, 0.0], [0.2, 0.5, 0.1], [0.6, 0.1, 0.0], [1.5, 1.5, 1.5])
    gen_cap, load_cap = deliverable_caps_mw(aggregate, 0)
    np.testing.assert_allclose(gen_cap, [0.6, 0.2, 0.1])
    np.testing.assert_allclose(load_cap, [0.2, 0.4, 0.0])


def test_gen_keeps_the_plan_and_loses_its_dearest_headroom_first() -> None:
    # 0.3 MW planned discharge, only 0.1 MW more deliverable: the bid builder offers up to 1 MW
    bid = bid_for(node_aggregate([0.3], [0.1], [0.5], [1.8]))
    gen = bands(bid, GEN)
    prices = np.asarray(BIDDING.gen_band_prices)
    planned_band = int(np.flatnonzero(prices >= 0)[0])
    assert np.all(gen[:, planned_band] == 0.3)
    np.testing.assert_allclose(gen.sum(axis=1), 0.4)
    highest_used = np.max(np.where(gen > 0, np.arange(10), -1), axis=1)
    assert np.all(prices[highest_used] <= 300.0)  # the $1,000 and $14,900 bands were trimmed first
    np.testing.assert_allclose(max_avail(bid, GEN), gen.sum(axis=1))
    # charge flexibility is counted from the plan: 0.3 MW of it goes to stopping the discharge
    np.testing.assert_allclose(bands(bid, LOAD).sum(axis=1), 0.2)


def test_load_keeps_the_plan_and_loses_its_cheapest_headroom_first() -> None:
    bid = bid_for(node_aggregate([-0.3], [0.0], [0.1], [1.0]), bidding=FIXED)
    load = bands(bid, LOAD)
    assert np.all(load[:, -1] == 0.3)  # planned charge in the dearest LOAD band
    np.testing.assert_allclose(load.sum(axis=1), 0.4)
    assert np.all(load[:, 0] == 0.0)  # the -$1,000 headroom went first
    assert np.all(bands(bid, GEN) == 0.0)  # no discharge flexibility beyond stopping the charge: 0.3 - 0.3


def test_zero_flexibility_offers_the_plan_and_nothing_more() -> None:
    planned = [0.25, -0.4, 0.0, 0.123456, -0.0017]
    bid = bid_for(node_aggregate(planned, [0.0] * 5, [0.0] * 5, [1.6] * 5), bidding=FIXED)
    gen, load = bands(bid, GEN).sum(axis=1), bands(bid, LOAD).sum(axis=1)
    expected_gen = np.repeat(np.floor(np.maximum(planned, 0) * 1000) / 1000, 6)
    expected_load = np.repeat(np.floor(np.maximum(np.negative(planned), 0) * 1000) / 1000, 6)
    np.testing.assert_allclose(gen, expected_gen[:len(gen)], atol=1e-12)
    np.testing.assert_allclose(load, expected_load[:len(load)], atol=1e-12)
    assert np.all((bands(bid, GEN) > 0).sum(axis=1) <= 1) and np.all((bands(bid, LOAD) > 0).sum(axis=1) <= 1)


def test_rebid_explains_the_fleet_and_a_daily_bid_is_made_before_the_close() -> None:
    bid = bid_for(node_aggregate([0.3], [0.1], [0.8], [1.8]))
    assert bid.entry_type == bid_pb2.ENTRY_TYPE_REBID and bid.unit_id == "VPP1" and bid.plan_hash == "9c1b77e03f2a"
    assert "9c1b77e0" in bid.rebid_explanation and "200 home batteries" in bid.rebid_explanation
    assert "190 on forecast v42, 6 older, 4 estimated" in bid.rebid_explanation
    assert "0.400 MW GEN / 0.500 MW LOAD" in bid.rebid_explanation
    assert len(bid.rebid_explanation) <= RULES.rebid_explanation_max_chars
    assert [o.product for o in bid.offers] == ["ENERGY", "ENERGY"]  # energy only, no FCAS
    daily = bid_for(node_aggregate([0.3], [0.1], [0.2], [1.8]), offer_time=BEFORE_CLOSE)
    assert daily.entry_type == bid_pb2.ENTRY_TYPE_DAILY and daily.rebid_explanation == ""


def test_a_bid_that_fails_validation_never_leaves() -> None:
    wrong_prices: dict[tuple[str, int], list[float]] = {("ENERGY", GEN): [p + 1 for p in BIDDING.gen_band_prices],
                    ("ENERGY", LOAD): list(BIDDING.load_band_prices)}
    result = build_fleet_bid(node_aggregate([0.3], [0.1], [0.2], [1.8]), 0, unit(), BIDDING, RULES,
                             dispatch_interval=FIRST, offer_time=AFTER_CLOSE, version=7, plan_hash="h",
                             daily_band_prices=wrong_prices)
    assert result.bid is None and not result.is_valid
    assert [v.rule for v in result.violations] == ["V4"]
    assert "INVALID, not submitted" in result.summary and "V4" in result.summary


def test_a_bid_from_later_in_the_window_starts_there() -> None:
    aggregate = node_aggregate([0.1, 0.5, -0.2], [0.0, 0.2, 0.0], [0.0, 0.0, 0.3], [1.5, 1.4, 1.5])
    first = WINDOW_START + timedelta(minutes=35)  # the second plan interval's first dispatch interval
    bid = bid_for(aggregate, first=first)
    assert nem_time.from_timestamp(bid.dispatch_interval) == first
    gen, load = bands(bid, GEN).sum(axis=1), bands(bid, LOAD).sum(axis=1)
    assert len(gen) == 12  # what is left of the window
    assert np.all(gen[:6] <= 0.7 + 1e-12) and np.all(gen[6:] == 0.0)
    assert np.all(load[:6] <= 0.0) and np.all(load[6:] <= 0.5 + 1e-12)


def test_bids_the_window_cannot_cover_are_refused() -> None:
    aggregate = node_aggregate([0.1], [0.0], [0.0], [1.5])
    for first in (WINDOW_START, WINDOW_START + timedelta(minutes=35), FIRST + timedelta(minutes=2)):
        with pytest.raises(FleetBidError, match="window"):
            build_fleet_bid(aggregate, 0, unit(), BIDDING, RULES, dispatch_interval=first, offer_time=AFTER_CLOSE,
                            version=1, plan_hash="h")
    with pytest.raises(FleetBidError, match="node_index"):
        fleet_plan_result(aggregate, 1, unit())
    with pytest.raises(FleetBidError, match="not finite"):
        fleet_plan_result(node_aggregate([math.nan], [0.0], [0.0], [1.5]), 0, unit())
    with pytest.raises(FleetBidError, match="whole number"):
        fleet_plan_result(node_aggregate([0.1], [0.0], [0.0], [1.5], plan_minutes=7), 0, unit())
    with pytest.raises(FleetBidError, match="grid"):
        fleet_plan_result(node_aggregate([0.1], [0.0], [0.0], [1.5], start=WINDOW_START + timedelta(minutes=1)),
                          0, unit())


@hyp_settings(max_examples=60, deadline=None)
@given(
    intervals=st.integers(1, 6),
    data=st.data(),
    sites=st.sampled_from([60, 200, 2_000]),
    bidding=st.sampled_from([BIDDING, FIXED]),
    offer_time=st.sampled_from([AFTER_CLOSE, BEFORE_CLOSE]),
)
def test_random_aggregates_give_valid_bids_within_the_deliverable_bounds(
        intervals: int, data: st.DataObject, sites: int, bidding: BiddingSettings, offer_time: datetime) -> None:
    spec = unit(sites)
    power, energy = spec.power_mw, spec.energy_mwh

    def series(low: float, high: float) -> list[float]:
        return data.draw(st.lists(st.floats(low, high), min_size=intervals, max_size=intervals))

    aggregate = node_aggregate(series(-1.3 * power, 1.3 * power), series(0.0, 2.0 * power),
                               series(0.0, 2.0 * power), series(0.0, energy), sites=sites)
    bid = bid_for(aggregate, spec, bidding=bidding, offer_time=offer_time)
    assert validate_bid(bid, spec, RULES, products=["ENERGY"]) == []
    gen_cap, load_cap = (np.repeat(cap, 6) for cap in deliverable_caps_mw(aggregate, 0))
    gen, load = bands(bid, GEN), bands(bid, LOAD)
    count = len(gen)
    assert np.all(gen.sum(axis=1) <= gen_cap[:count] + 1e-9)
    assert np.all(load.sum(axis=1) <= load_cap[:count] + 1e-9)
    np.testing.assert_allclose(max_avail(bid, GEN), gen.sum(axis=1), atol=1e-9)
    np.testing.assert_allclose(max_avail(bid, LOAD), load.sum(axis=1), atol=1e-9)
    assert np.all(np.round(gen * 1000, 6) == np.round(gen * 1000))  # whole kW
    period = next(o for o in bid.offers if o.direction == GEN).periods[0]
    assert period.ramp_up_rate_mw_per_min >= 1 and period.ramp_down_rate_mw_per_min >= 1  # never frozen
    assert bid.ramp_rate_reason == ""


def test_site_plans_to_a_valid_fleet_bid() -> None:
    rng = np.random.default_rng(5)
    count, horizon = 300, 4
    ids = np.array([f"site-{i:04d}" for i in range(count)])
    capacity = np.full(count, 13.5)
    battery = np.clip(rng.normal(1.5, 1.0, (count, horizon)), -5.0, 5.0)
    values = {
        "battery_power_kw": battery, "net_export_kw": battery - 0.8,
        "discharge_flexibility_kw": 5.0 - battery, "charge_flexibility_kw": 5.0 + battery,
        "state_of_charge_kwh": np.clip(8.0 - np.cumsum(battery, axis=1) * 0.5, 2.7, 13.5),
    }
    planning = np.sort(rng.choice(count, 270, replace=False))
    start_ms = nem_time.market_to_unix_ms(WINDOW_START)
    plans = SitePlans(site_ids=ids[planning], forecast_version=np.full(270, 42, dtype=np.int64),
                      start_ms=np.full(270, start_ms, dtype=np.int64), plan_interval_minutes=30,
                      **{name: values[name][planning] for name in PLAN_FIGURES})
    membership = sp.csr_matrix(np.vstack([np.ones(count), np.arange(count) < 150]).astype(float))
    aggregate = aggregate_plans(membership, ids, plans, start_ms=start_ms, horizon_intervals=horizon,
                                plan_interval_minutes=30, current_version=42, site_capacity_kwh=capacity)
    spec = fleet_unit_spec("VPP1", "SA1", capacity, np.full(count, 5.0), np.full(count, 5.0), np.full(count, 0.95),
                           np.full(count, 0.95), np.full(count, 0.2))
    result = build_fleet_bid(aggregate, 0, spec, BIDDING, RULES, dispatch_interval=FIRST, offer_time=AFTER_CLOSE,
                             version=1, plan_hash="abc")
    assert result.is_valid and result.bid is not None, result.summary
    gen = bands(result.bid, GEN).sum(axis=1)
    assert gen[0] >= float(aggregate.battery_power_mw.estimate[0, 0]) - 0.001  # the plan is offered
    assert gen[0] <= float(aggregate.battery_power_mw.estimate[0, 0]
                           + aggregate.discharge_flexibility_mw.lower[0, 0]) + 1e-9
    assert "300 home batteries (270 on forecast v42, 0 older, 30 estimated)" in result.bid.rebid_explanation
    assert result.summary.startswith("VPP1 REBID v1 from 2021-01-05 17:35, 24 intervals")
    assert result.plan.horizon_intervals == 24 and result.plan.status == worker_pb2.RESULT_STATUS_OPTIMAL
