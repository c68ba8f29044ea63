"""DAILY bids and the REBIDs that keep their prices (algorithms/market/daily_bid.py through decide_bid), and the
simulated market taking a DAILY entry: a real gRPC BidService over a real PostgreSQL and the real January 2021
DISPATCHPRICE data.

The sequence across the daily bid close of trading day 2021-01-06 (12:30 on 5 January): a cycle at 12:00 on
the 5th decides the DAILY bid for the 6th alongside its own rebid; the market stores it without clearing;
the first cycle of the 6th rebids from it keeping its prices, even after the configured ladder changed; a
rebid that changes the prices is refused by our validator before it leaves the platform, and by the market.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest

from algorithms.common import nem_time
from algorithms.common.battery import battery_spec_from_settings
from algorithms.market.bid_decision import NO_VALID_BID, SUBMIT, BidDecision, StandingBid, decide_bid
from algorithms.market.bid_validation import validate_bid
from algorithms.market.daily_bid import (
    DAILY_BID_VERSION,
    DailyBidsInForce,
    bidding_in_force,
    daily_bid_due,
)
from algorithms.market.operator_controls import EffectiveControls
from backtest.engine import BidBook, bid_stage
from models import bids as bid_store
from models.db import connect, migrate
from services import bid_service
from services.health import wait_healthy
from settings import ConfigError, Settings, load_settings
from tests.conftest import free_port, temporary_database
from vpp.v1 import bid_pb2, bid_pb2_grpc, common_pb2, worker_pb2

SETTINGS = load_settings(environ={})
RULES = SETTINGS.market
BATTERY = battery_spec_from_settings(SETTINGS.battery)
FCAS = ("RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG", "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG")
PRODUCTS = ("ENERGY", *FCAS)
FIVE = timedelta(minutes=5)
DAY = date(2021, 1, 6)
CLOSE = datetime(2021, 1, 5, 12, 30)  # the daily bid close of DAY
BEFORE = datetime(2021, 1, 5, 12, 10)  # dispatch interval of a cycle before the close (offer 12:00:30)
DAY_START = datetime(2021, 1, 6, 4, 5)  # DAY's first interval
GEN = common_pb2.DIRECTION_GEN
LOAD = common_pb2.DIRECTION_LOAD
# The configured GEN ladder moved by $1 after the DAILY bid went in.
NEW_LADDER = replace(SETTINGS, bidding=replace(SETTINGS.bidding, gen_band_prices=tuple(
    price - 1.0 if price > 0 else price for price in SETTINGS.bidding.gen_band_prices)))


def offer_time(dispatch_interval: datetime) -> datetime:
    """The cycle's decision time for ``dispatch_interval``: 30 s into the interval before the one in progress."""
    return dispatch_interval - 2 * FIVE + timedelta(seconds=30)


def plan_from(first: datetime, count: int, *, discharge: range, charge: range) -> worker_pb2.OptimisationResult:
    """An OPTIMAL plan of ``count`` intervals from ``first``: 100 MW discharge in ``discharge``, 80 MW charge in
    ``charge`` (interval indices), its SoC following the reference battery from 97 MWh, with duals."""
    gen, load = np.zeros(count), np.zeros(count)
    gen[list(discharge)] = 100.0
    load[list(charge)] = 80.0
    soc = 97.0 + np.cumsum(0.92 * load * 5 / 60 - gen * 5 / 60 / 0.92)
    return worker_pb2.OptimisationResult(
        status=worker_pb2.RESULT_STATUS_OPTIMAL, first_interval=nem_time.to_timestamp(first),
        horizon_intervals=count, gen_mw=gen.tolist(), load_mw=load.tolist(), state_of_charge_mwh=soc.tolist(),
        algorithm=common_pb2.AlgorithmRef(name="lp-energy-fcas", version="1"),
        energy_value_per_mwh=[60.0] * count, raise_capacity_value_per_mw=[0.0] * count,
        lower_capacity_value_per_mw=[0.0] * count)


# Made at 12:10 on the 5th for 288 intervals (to 12:05 on the 6th): charge 13:50-15:30 on the 5th, discharge
# 05:00-06:40 on the 6th (indices from 12:10: 200-219).
PLAN_BEFORE = plan_from(BEFORE, 288, discharge=range(200, 220), charge=range(20, 40))
# Made for the first interval of the 6th, 288 intervals.
PLAN_DAY = plan_from(DAY_START, 288, discharge=range(11, 31), charge=range(120, 140))


def decide(plan: worker_pb2.OptimisationResult | None, dispatch_interval: datetime, *,
           standing: StandingBid | None = None, daily: DailyBidsInForce | None = None,
           day_prices: dict[tuple[str, int], tuple[float, ...]] | None = None,
           settings: Settings = SETTINGS) -> BidDecision:
    return decide_bid(plan, standing_bid=standing, controls=EffectiveControls(), battery=BATTERY,
                      bidding=settings.bidding, rules=settings.market, products=PRODUCTS,
                      daily_band_prices=day_prices, dispatch_interval=dispatch_interval,
                      offer_time=offer_time(dispatch_interval), version=1, initial_state_of_charge_mwh=97.0,
                      plan_hash="ab" * 32, daily_bids=daily if daily is not None else DailyBidsInForce())


def energy(bid: bid_pb2.Bid, direction: int) -> bid_pb2.ProductOffer:
    return next(o for o in bid.offers if o.product == "ENERGY" and o.direction == direction)


# --------------------------------------------------------------------------------------------------
# When a DAILY bid is due
# --------------------------------------------------------------------------------------------------


def test_a_daily_bid_is_due_from_the_lead_before_the_close_up_to_the_close() -> None:
    bidding = SETTINGS.bidding  # lead 60 minutes
    assert daily_bid_due(datetime(2021, 1, 5, 11, 29, 59), RULES, bidding) is None
    assert daily_bid_due(datetime(2021, 1, 5, 11, 30), RULES, bidding) == DAY
    assert daily_bid_due(CLOSE, RULES, bidding) == DAY
    assert daily_bid_due(CLOSE + timedelta(seconds=1), RULES, bidding) is None
    assert daily_bid_due(datetime(2021, 1, 5, 12, 0), RULES, bidding, frozenset({DAY})) is None
    assert daily_bid_due(datetime(2021, 1, 5, 12, 0), RULES, replace(bidding, daily_bid_lead_minutes=0)) is None
    assert daily_bid_due(datetime(2021, 1, 5, 9, 0), RULES, replace(bidding, daily_bid_lead_minutes=240)) == DAY
    with pytest.raises(ValueError, match="daily_bid_lead_minutes"):
        daily_bid_due(CLOSE, RULES, replace(bidding, daily_bid_lead_minutes=-5))


def test_the_lead_is_configured_and_a_negative_one_is_refused(tmp_path: Path) -> None:
    assert SETTINGS.bidding.daily_bid_lead_minutes == 60
    user = tmp_path / "user.toml"
    user.write_text("[bidding]\ndaily_bid_lead_minutes = 90\n")
    assert load_settings(user, environ={}).bidding.daily_bid_lead_minutes == 90
    user.write_text("[bidding]\ndaily_bid_lead_minutes = -1\n")
    with pytest.raises(ConfigError, match="daily_bid_lead_minutes must be >= 0"):
        load_settings(user, environ={})


def test_the_daily_bid_covers_the_whole_day_from_the_plan_then_offers_nothing() -> None:
    decision = decide(PLAN_BEFORE, BEFORE)
    assert decision.outcome == SUBMIT and decision.bid is not None
    assert decision.bid.entry_type == bid_pb2.ENTRY_TYPE_REBID  # the 5th's own bid: its close was on the 4th
    daily = decision.daily_bid
    assert daily is not None and decision.daily_trading_day == DAY and decision.daily_rejected == ()
    assert daily.entry_type == bid_pb2.ENTRY_TYPE_DAILY and daily.version == DAILY_BID_VERSION
    assert daily.trading_day == "2021-01-06" and daily.rebid_explanation == ""
    assert nem_time.from_timestamp(daily.dispatch_interval) == DAY_START
    assert {len(o.periods) for o in daily.offers} == {288}
    assert [nem_time.from_timestamp(p.dispatch_interval) for p in energy(daily, GEN).periods][-1] == \
        datetime(2021, 1, 7, 4, 0)
    # The plan reaches 12:05 on the 6th: 96 intervals from 04:05 follow it, the rest offer 0 MW.
    gen_max = np.array([p.max_avail_mw for p in energy(daily, GEN).periods])
    load_max = np.array([p.max_avail_mw for p in energy(daily, LOAD).periods])
    covered = int((datetime(2021, 1, 6, 12, 5) - DAY_START) / FIVE) + 1
    assert covered == 97
    assert np.all(gen_max[covered:] == 0) and np.all(load_max[covered:] == 0)
    assert np.all(gen_max[:covered] + load_max[:covered] > 0)
    # The planned discharge 05:00-06:40 is offered at the planned MW or more.
    assert np.all(gen_max[11:31] >= 100.0 - 1e-6)
    # The day's prices: the configured ladders within the day's limits.
    assert list(energy(daily, GEN).band_price) == list(SETTINGS.bidding.gen_band_prices)
    assert list(energy(daily, LOAD).band_price) == list(SETTINGS.bidding.load_band_prices)
    assert validate_bid(daily, BATTERY, RULES, products=PRODUCTS) == []
    assert "DAILY bid for trading day 2021-01-06: energy offered in 97 of 288 intervals" in decision.daily_summary


def test_without_a_usable_plan_the_daily_bid_is_the_conservative_default() -> None:
    decision = decide(None, BEFORE)
    daily = decision.daily_bid
    assert daily is not None and decision.safe_fallback
    assert all(p.max_avail_mw == 0 and not any(p.band_avail_mw) for o in daily.offers for p in o.periods)
    assert {len(o.periods) for o in daily.offers} == {288}
    assert all(p.pasa_avail_mw == BATTERY.power_mw for p in energy(daily, GEN).periods)
    assert validate_bid(daily, BATTERY, RULES, products=PRODUCTS) == []


def test_no_daily_bid_outside_the_window_when_one_exists_when_paused_or_unknown() -> None:
    assert decide(PLAN_BEFORE, BEFORE + 7 * FIVE).daily_bid is None  # offered 12:35:30, after the close
    assert decide(PLAN_BEFORE, BEFORE - 10 * FIVE).daily_bid is None  # offered 11:10:30, before the lead
    assert decide(PLAN_BEFORE, BEFORE, daily=DailyBidsInForce(days_with_daily_bid=frozenset({DAY}))).daily_bid is None
    paused = decide_bid(PLAN_BEFORE, standing_bid=None, controls=EffectiveControls(paused=True, paused_reason="storm"),
                        battery=BATTERY, bidding=SETTINGS.bidding, rules=RULES, products=PRODUCTS,
                        daily_band_prices=None, dispatch_interval=BEFORE, offer_time=offer_time(BEFORE), version=1,
                        initial_state_of_charge_mwh=97.0, plan_hash="", daily_bids=DailyBidsInForce())
    assert paused.daily_bid is None and paused.daily_summary == ""
    unknown = decide_bid(PLAN_BEFORE, standing_bid=None, controls=EffectiveControls(), battery=BATTERY,
                         bidding=SETTINGS.bidding, rules=RULES, products=PRODUCTS, daily_band_prices=None,
                         dispatch_interval=BEFORE, offer_time=offer_time(BEFORE), version=1,
                         initial_state_of_charge_mwh=97.0, plan_hash="")
    assert unknown.daily_bid is None


# --------------------------------------------------------------------------------------------------
# The sequence across 12:30 D-1
# --------------------------------------------------------------------------------------------------


def test_the_daily_rebid_sequence_keeps_the_daily_prices_and_refuses_a_change() -> None:
    # 12:00 on the 5th: the backtest's market takes the rebid of the 5th and the DAILY bid of the 6th.
    book = BidBook()
    before = bid_stage(book, PLAN_BEFORE, SETTINGS, battery=BATTERY, products=PRODUCTS, controls=EffectiveControls(),
                       dispatch_interval=BEFORE, offer_time=offer_time(BEFORE), version=1,
                       initial_state_of_charge_mwh=97.0)
    daily = before.daily_bid
    assert daily is not None and book.daily_bids[DAY].bid == daily
    assert book.daily_bids[DAY].bid_id == "HPR1/2021-01-06/001/v0"
    # A later cycle inside the window does not make a second DAILY bid.
    again = bid_stage(book, PLAN_BEFORE, SETTINGS, battery=BATTERY, products=PRODUCTS, controls=EffectiveControls(),
                      dispatch_interval=BEFORE + FIVE, offer_time=offer_time(BEFORE + FIVE), version=1,
                      initial_state_of_charge_mwh=97.0)
    assert again.daily_bid is None and again.daily_summary == ""
    # The DAILY bid is in force for the 6th until a rebid covers it; its prices are the day's.
    assert book.covering(DAY_START) == book.daily_bids[DAY]
    assert book.band_prices_in_force(DAY) == bid_store.band_prices_of(daily)
    # 04:00 on the 6th, the configured GEN ladder has moved by $1: the first rebid keeps the DAILY's prices.
    first = bid_stage(book, PLAN_DAY, NEW_LADDER, battery=BATTERY, products=PRODUCTS, controls=EffectiveControls(),
                      dispatch_interval=DAY_START, offer_time=offer_time(DAY_START), version=1,
                      initial_state_of_charge_mwh=97.0)
    rebid = first.bid
    assert first.outcome == SUBMIT and rebid is not None and not first.safe_fallback
    assert rebid.entry_type == bid_pb2.ENTRY_TYPE_REBID and rebid.rebid_explanation
    assert bid_store.band_prices_of(rebid) == bid_store.band_prices_of(daily)
    assert list(energy(rebid, GEN).band_price) != list(NEW_LADDER.bidding.gen_band_prices)
    assert book.covering(DAY_START).bid == rebid  # type: ignore[union-attr]
    # Our validator refuses a rebid that changes the prices after the close (V4), before it leaves.
    changed = bid_pb2.Bid()
    changed.CopyFrom(rebid)
    energy(changed, GEN).band_price[-1] = 14000.0
    violations = [str(v) for v in validate_bid(changed, BATTERY, RULES, products=PRODUCTS,
                                               daily_band_prices=book.band_prices_in_force(DAY))]
    assert any(v.startswith("V4") and "'ENERGY' GEN" in v for v in violations), violations
    # Without a DAILY bid the configured ladder is bid; once it changes, V4 refuses every candidate.
    plain = decide(PLAN_DAY, DAY_START + FIVE, day_prices=bid_store.band_prices_of(rebid), settings=NEW_LADDER)
    assert plain.outcome == NO_VALID_BID
    assert any(v.startswith("plan bid V4") for v in plain.violations)


def test_bidding_in_force_takes_the_daily_ladders() -> None:
    daily = decide(PLAN_BEFORE, BEFORE).daily_bid
    assert daily is not None
    taken = bidding_in_force(NEW_LADDER.bidding, bid_store.band_prices_of(daily))
    assert taken.gen_band_prices == SETTINGS.bidding.gen_band_prices
    assert taken.fcas_band_prices == SETTINGS.bidding.fcas_band_prices
    assert bidding_in_force(NEW_LADDER.bidding, None) == NEW_LADDER.bidding


# --------------------------------------------------------------------------------------------------
# The simulated market takes the DAILY entry and keeps the day's prices
# --------------------------------------------------------------------------------------------------


@pytest.fixture
async def market_address(server_url: str) -> AsyncIterator[tuple[str, str]]:
    """A real BidService (gRPC, ``services.bid_service.serve``) over a fresh PostgreSQL database and the
    January 2021 prices; yields its address and the database URL."""
    with temporary_database(server_url) as url:
        migrate(url)
        port = free_port()
        configured = replace(SETTINGS, database_url=url, stack=replace(SETTINGS.stack, bid_service_port=port))
        stop = asyncio.Event()
        task = asyncio.create_task(bid_service.serve(configured, stop))
        address = f"127.0.0.1:{port}"
        try:
            await wait_healthy(address, timeout_s=20)
            yield address, url
        finally:
            stop.set()
            await task


async def test_the_market_stores_a_daily_bid_uncleared_and_holds_rebids_to_its_prices(
        market_address: tuple[str, str]) -> None:
    address, database_url = market_address
    before = decide(PLAN_BEFORE, BEFORE)
    assert before.bid is not None and before.daily_bid is not None
    async with grpc.aio.insecure_channel(address) as channel:
        stub = bid_pb2_grpc.BidServiceStub(channel)
        rebid_5th = await stub.SubmitBid(bid_pb2.SubmitBidRequest(bid=before.bid))
        daily = await stub.SubmitBid(bid_pb2.SubmitBidRequest(bid=before.daily_bid))
        assert (rebid_5th.status, daily.status) == (bid_pb2.BID_STATUS_ACCEPTED, bid_pb2.BID_STATUS_ACCEPTED)
        assert daily.bid_id == "HPR1/2021-01-06/001/v0"
        async with await connect(database_url) as conn:
            state = await bid_store.get_unit_state(conn, "HPR1")
            assert state is not None and state.last_cleared_interval == BEFORE  # nothing of the 6th cleared
            assert await bid_store.daily_entry_band_prices(conn, "HPR1", DAY) == \
                bid_store.band_prices_of(before.daily_bid)
            assert await bid_store.days_with_daily_bid(conn, "HPR1", date(2021, 1, 5)) == frozenset({DAY})
        # Resubmitting the DAILY bid is a duplicate: one per unit and trading day.
        assert (await stub.SubmitBid(bid_pb2.SubmitBidRequest(bid=before.daily_bid))).duplicate
        # The 6th's first rebid keeps the prices: accepted. A rebid changing them: rejected with V4.
        async with await connect(database_url) as conn:
            in_force = DailyBidsInForce(day_prices=await bid_store.daily_entry_band_prices(conn, "HPR1", DAY),
                                        days_with_daily_bid=await bid_store.days_with_daily_bid(conn, "HPR1", DAY))
            day_prices = await bid_store.daily_band_prices(conn, "HPR1", DAY)
        standing = StandingBid(daily.bid_id, before.daily_bid)
        first = decide(PLAN_DAY, DAY_START, standing=standing, daily=in_force, day_prices=day_prices,
                       settings=NEW_LADDER)
        assert first.outcome == SUBMIT and first.bid is not None
        accepted = await stub.SubmitBid(bid_pb2.SubmitBidRequest(bid=first.bid))
        assert accepted.status == bid_pb2.BID_STATUS_ACCEPTED, accepted.reasons
        changed = bid_pb2.Bid()
        changed.CopyFrom(first.bid)
        changed.dispatch_interval.CopyFrom(nem_time.to_timestamp(DAY_START))
        changed.version = 2
        energy(changed, LOAD).band_price[0] = -999.0
        refused = await stub.SubmitBid(bid_pb2.SubmitBidRequest(bid=changed))
        assert refused.status == bid_pb2.BID_STATUS_REJECTED
        assert any(r.startswith("V4") and "'ENERGY' LOAD" in r for r in refused.reasons), refused.reasons
        # The interval 04:05 on the 6th is dispatched from the rebid, not the DAILY bid.
        outcome = await stub.GetDispatchOutcome(bid_pb2.GetDispatchOutcomeRequest(
            unit_id="HPR1", dispatch_interval=nem_time.to_timestamp(DAY_START)))
        assert outcome.bid_id == accepted.bid_id
