"""AEMO's dispatch checked against the bid in force (algorithms/market/dispatch_check.py) on real AEMO rows:
DISPATCHLOAD, DISPATCHPRICE and the units' own published bids (BIDDAYOFFER_D / BIDPEROFFER_D) of data/nemweb —
AGLHAL (a fast-start gas generator) and HDWF2 (a wind farm), before and after the June 2024 bid format — and
through the live market data path: the real Next_Day_Dispatch and Daily_Reports followed from a NEMWEB
stand-in (a real HTTP server) into the market store, read by the record stage of the cycle."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, time, timedelta
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.cycle import CycleActivities
from activities.cycle_facts import RecordInput
from aemo.bids import published_bids
from aemo.dispatch_results import dispatch_from_store, region_prices, unit_dispatches
from aemo.live import FollowerConfig, LiveFollower
from aemo.nemweb import HttpSource
from aemo.store import MarketStore
from aemo.table_files import read_tables
from algorithms.common import nem_time
from algorithms.common.battery import battery_spec_from_settings
from algorithms.market.bid_builder import build_safe_bid
from algorithms.market.console import CycleOutcomeView, outcome_sentence
from algorithms.market.dispatch_check import UnitDispatch, check_dispatch
from archive.store import LocalArchive
from models import bids as bid_store
from models.db import connect, migrate
from services.bid_service import bid_key, bid_record
from settings import load_settings
from tests.aemo_fixtures import NEMWEB_ROOT, archive_zip
from tests.conftest import temporary_database
from tests.nemweb_standin import NemwebStandIn
from vpp.v1 import bid_pb2, common_pb2

SETTINGS = load_settings(environ={})
TABLES = ("DISPATCHLOAD", "DISPATCHPRICE", "BIDDAYOFFER_D", "BIDPEROFFER_D")
UNITS = ("AGLHAL", "HDWF2")  # both in SA1
GEN = common_pb2.DIRECTION_GEN
LOAD = common_pb2.DIRECTION_LOAD


class RealMonth:
    """One month of data/nemweb: the units' dispatch, SA1's prices and the bid in force per unit and interval."""

    def __init__(self, month: str) -> None:
        frames = read_tables([archive_zip(month, table) for table in TABLES], TABLES).frames
        self.loads = frames["DISPATCHLOAD"]
        self.prices = frames["DISPATCHPRICE"]
        bids = published_bids(frames["BIDDAYOFFER_D"], frames["BIDPEROFFER_D"], time(12, 30)).bids
        # AEMO publishes one bid per offer, each with the periods it was in force: the bid in force for an
        # interval is every product offer covering it.
        self._in_force: dict[tuple[str, int], bid_pb2.Bid] = {}
        for published in bids:
            for offer in published.bid.offers:
                for period in offer.periods:
                    key = (published.unit_id, period.dispatch_interval.seconds)
                    merged = self._in_force.setdefault(key, bid_pb2.Bid(unit_id=published.unit_id))
                    merged.offers.add().CopyFrom(bid_pb2.ProductOffer(
                        product=offer.product, direction=offer.direction, band_price=offer.band_price,
                        periods=[period], fast_start_profile=offer.fast_start_profile)
                        if offer.HasField("fast_start_profile") else bid_pb2.ProductOffer(
                            product=offer.product, direction=offer.direction, band_price=offer.band_price,
                            periods=[period]))

    def bid_in_force(self, unit_id: str, dispatch_interval: datetime) -> bid_pb2.Bid | None:
        return self._in_force.get((unit_id, nem_time.to_timestamp(dispatch_interval).seconds))


@pytest.fixture(scope="module", params=["2018_04", "2024_08", "2026_03"])
def real_month(request: pytest.FixtureRequest) -> RealMonth:
    return RealMonth(request.param)


def test_every_real_dispatch_with_a_bid_in_force_is_explained_and_settled(real_month: RealMonth) -> None:
    checked = dispatched = 0
    for unit in UNITS:
        for dispatch in unit_dispatches(real_month.loads, unit):
            bid = real_month.bid_in_force(unit, dispatch.dispatch_interval)
            if bid is None:
                continue  # the archive keeps bids of only some days
            prices = region_prices(real_month.prices, "SA1", dispatch.dispatch_interval)
            check = check_dispatch(bid, dispatch, prices)
            assert check.flags == (), (unit, dispatch, check.flags)
            assert check.energy_revenue_dollars == pytest.approx(prices["ENERGY"] * dispatch.target_mw * 5 / 60)
            checked += 1
            dispatched += dispatch.target_mw > 0.1
    assert checked > 2000 and dispatched > 1000


def _busy_interval(month: RealMonth) -> tuple[UnitDispatch, bid_pb2.Bid, dict[str, float]]:
    """The first interval of AGLHAL (else HDWF2) dispatched above 20 MW, steady within 1 MW, with its bid in
    force and SA1's prices."""
    for unit in UNITS:
        for dispatch in unit_dispatches(month.loads, unit):
            bid = month.bid_in_force(unit, dispatch.dispatch_interval)
            if bid is not None and dispatch.target_mw > 20 and abs(dispatch.target_mw - dispatch.initial_mw) < 1:
                return dispatch, bid, region_prices(month.prices, "SA1", dispatch.dispatch_interval)
    raise AssertionError("no steady dispatch above 20 MW with a bid in force")


def test_a_real_target_the_bid_cannot_explain_is_flagged(real_month: RealMonth) -> None:
    dispatch, bid, prices = _busy_interval(real_month)
    assert check_dispatch(bid, dispatch, prices).explained
    energy = next(o for o in bid.offers if o.product == "ENERGY")
    max_avail = energy.periods[0].max_avail_mw
    # Dispatched above the offered availability.
    above = check_dispatch(bid, replace(dispatch, target_mw=max_avail + 5, initial_mw=max_avail + 5), prices)
    assert len(above.flags) == 1 and "above the offered availability" in above.flags[0]
    assert f"MAXAVAIL {max_avail:.1f} MW" in above.flags[0]
    # The same target at a price below every band with MW: in bands priced above the cleared price.
    cheapest = min(p for p, mw in zip(energy.band_price, energy.periods[0].band_avail_mw, strict=True) if mw > 0)
    low = dict(prices, ENERGY=cheapest - 50.0)
    below = check_dispatch(bid, replace(dispatch, initial_mw=0.0), low)
    assert len(below.flags) == 1 and "bands priced beyond the cleared price" in below.flags[0], below.flags
    # Coming down from a higher output at its ramp rate explains it (AEMO ramps a unit down, not off).
    ramp = energy.periods[0].ramp_down_rate_mw_per_min
    ramping = replace(dispatch, initial_mw=dispatch.target_mw + ramp * 5)
    assert check_dispatch(bid, ramping, low).explained == (ramp > 0)
    assert not check_dispatch(bid, replace(ramping, initial_mw=dispatch.target_mw + ramp * 5 - 1), low).explained
    # Enablement of a service it offered nothing in; and any dispatch without a bid.
    fcas = check_dispatch(bid, replace(dispatch, enablement_mw={"RAISE1SEC": 10.0}), prices)
    assert fcas.flags == ("RAISE1SEC enabled 10.0 MW with no RAISE1SEC offer in force",)
    assert fcas.fcas_revenue_dollars == pytest.approx(10.0 * prices.get("RAISE1SEC", math.nan) * 5 / 60) \
        if math.isfinite(prices.get("RAISE1SEC", math.nan)) else fcas.fcas_revenue_dollars == 0.0
    orphan = check_dispatch(None, dispatch, prices)
    assert orphan.flags == (f"ENERGY GEN dispatched {dispatch.target_mw:.1f} MW with no GEN offer in force",)


def test_a_bidirectional_units_charging_and_regulation_are_checked_per_side() -> None:
    battery = battery_spec_from_settings(SETTINGS.battery)
    interval = datetime(2024, 8, 1, 12, 0)
    bid = build_safe_bid(battery, SETTINGS.bidding, SETTINGS.market, dispatch_interval=interval,
                         offer_time=interval - timedelta(minutes=10), version=1,
                         fcas_products=("RAISEREG", "LOWERREG"), initial_state_of_charge_mwh=97.0, reason="test")
    load = next(o for o in bid.offers if o.product == "ENERGY" and o.direction == LOAD)
    offered = load.periods[0].max_avail_mw
    assert offered > 100  # the safe bid offers SoC-deliverable charge at the negative-price LOAD bands
    charging = UnitDispatch("HPR1", interval, initial_mw=-offered, target_mw=-offered)
    # Charging in full at the floor (-$1,000/MWh): every LOAD band is priced at or above it, explained; the
    # unit is paid for the energy it takes.
    settled = check_dispatch(bid, charging, {"ENERGY": -1000.0, "RAISEREG": 10.0, "LOWERREG": 12.0})
    assert settled.explained and settled.load_mw == offered and settled.gen_mw == 0
    assert settled.energy_revenue_dollars == pytest.approx(-1000.0 * -offered * 5 / 60)
    # At -$500/MWh the -$1,000 LOAD band is not consumed: charging in full is not explained by prices.
    partly = check_dispatch(bid, replace(charging, initial_mw=0.0), {"ENERGY": -500.0})
    assert len(partly.flags) == 1 and "ENERGY LOAD dispatched" in partly.flags[0]
    # Charging at $80/MWh: above every LOAD band with MW, not explained; more than offered, not explained.
    assert "ENERGY LOAD dispatched" in check_dispatch(bid, replace(charging, initial_mw=0.0),
                                                       {"ENERGY": 80.0}).flags[0]
    over = check_dispatch(bid, replace(charging, target_mw=-(offered + 10)), {"ENERGY": -1000.0})
    assert "above the offered availability" in over.flags[0]
    # The safe bid offers 0 MW of regulation: any enablement is above its availability.
    enabled = check_dispatch(bid, replace(charging, enablement_mw={"LOWERREG": 5.0}), {"ENERGY": -1000.0,
                                                                                        "LOWERREG": 12.0})
    assert enabled.flags == ("LOWERREG enabled 5.0 MW above the offered availability (MAXAVAIL 0.0 MW)",)
    assert enabled.fcas_revenue_dollars == pytest.approx(5.0 * 12.0 * 5 / 60)
    with pytest.raises(ValueError, match="non-finite"):
        check_dispatch(bid, replace(charging, target_mw=math.nan), {"ENERGY": 1.0})


def test_the_console_says_when_aemos_dispatch_is_unexplained() -> None:
    view = CycleOutcomeView(gen_mw=120.0, load_mw=0.0, price=95.0, energy_revenue_dollars=950.0,
                            fcas_revenue_dollars=0.0, state_of_charge_mwh=80.0,
                            dispatch_flags=("ENERGY GEN dispatched 120.0 MW above the offered availability",))
    assert outcome_sentence(view).endswith(
        "UNEXPLAINED by the bid in force: ENERGY GEN dispatched 120.0 MW above the offered availability.")
    assert "UNEXPLAINED" not in outcome_sentence(replace(view, dispatch_flags=()))


# --------------------------------------------------------------------------------------------------
# Through the live market data path
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_store(tmp_path_factory: pytest.TempPathFactory) -> MarketStore:
    """The real Next_Day_Dispatch (DISPATCHLOAD) and Daily_Reports (DISPATCHPRICE) of 14-15 May 2026, followed
    from the NEMWEB stand-in into a market store as the live market-data service does."""
    store = MarketStore(tmp_path_factory.mktemp("market"))
    with NemwebStandIn(NEMWEB_ROOT) as standin:
        follower = LiveFollower(store, HttpSource(standin.url, attempts=1),
                                FollowerConfig(folders=("Next_Day_Dispatch", "Daily_Reports"), poll_s=0.1))
        follower.open()
        try:
            follower.step()
            follower.drain()
        finally:
            follower.close()
    return store


LIVE_INTERVAL = datetime(2026, 5, 14, 18, 0)


def _generator_bid(unit_id: str, first: datetime, max_avail_mw: list[float]) -> bid_pb2.Bid:
    """A REBID of a generator: one ENERGY offer, every MW in its first band at -$1,000/MWh."""
    bid = bid_pb2.Bid(unit_id=unit_id, trading_day=nem_time.trading_day(first).isoformat(), version=1,
                      dispatch_interval=nem_time.to_timestamp(first), entry_type=bid_pb2.ENTRY_TYPE_REBID,
                      offer_time=nem_time.to_timestamp(first - timedelta(minutes=10)),
                      event_time=nem_time.to_timestamp(first - timedelta(minutes=10)), rebid_explanation="test")
    offer = bid.offers.add(product="ENERGY", direction=GEN,
                           band_price=[-1000.0, 0, 50, 100, 200, 300, 500, 1000, 5000, 14000])
    for index, mw in enumerate(max_avail_mw):
        offer.periods.add(dispatch_interval=nem_time.to_timestamp(first + index * timedelta(minutes=5)),
                          max_avail_mw=mw, band_avail_mw=[mw] + [0.0] * 9, ramp_up_rate_mw_per_min=0.0,
                          ramp_down_rate_mw_per_min=0.0, pasa_avail_mw=mw)
    return bid


def test_the_live_store_gives_aemos_dispatch_and_prices(live_store: MarketStore) -> None:
    found = dispatch_from_store(live_store, "HDWF2", "SA1", LIVE_INTERVAL)
    assert found is not None
    dispatch, prices = found
    assert dispatch.unit_id == "HDWF2" and dispatch.dispatch_interval == LIVE_INTERVAL
    assert math.isfinite(dispatch.target_mw) and set(prices) >= {"ENERGY", "RAISE6SEC", "LOWERREG"}
    assert dispatch_from_store(live_store, "HDWF2", "SA1", datetime(2026, 5, 20, 18, 0)) is None
    generous = _generator_bid("HDWF2", LIVE_INTERVAL, [dispatch.target_mw + 20])
    assert check_dispatch(generous, dispatch, prices).explained
    if dispatch.target_mw > 1:
        short = _generator_bid("HDWF2", LIVE_INTERVAL, [dispatch.target_mw / 2])
        assert "above the offered availability" in check_dispatch(short, dispatch, prices).flags[0]


@pytest.fixture
def database(server_url: str) -> Iterator[str]:
    with temporary_database(server_url) as url:
        migrate(url)
        yield url


def _follow(store: MarketStore) -> None:
    """Follow the real Next_Day_Dispatch and Daily_Reports from the NEMWEB stand-in into ``store``."""
    with NemwebStandIn(NEMWEB_ROOT) as standin:
        follower = LiveFollower(store, HttpSource(standin.url, attempts=1),
                                FollowerConfig(folders=("Next_Day_Dispatch", "Daily_Reports"), poll_s=0.1))
        follower.open()
        try:
            follower.step()
            follower.drain()
        finally:
            follower.close()


def _live_activities(store: MarketStore, database: str, tmp_path: Path) -> CycleActivities:
    """The cycle's activities in live mode for the wind farm HDWF2 (SA1), reading ``store``."""
    settings = replace(SETTINGS, database_url=database,
                       market_data=replace(SETTINGS.market_data, source="live"),
                       market_store=replace(SETTINGS.market_store, folder=str(store.root)),
                       battery=replace(SETTINGS.battery, unit_id="HDWF2", region="SA1"),
                       cycle=replace(SETTINGS.cycle, unit_id="HDWF2", region="SA1"))  # the portfolio's one battery
    return CycleActivities(settings, archive=LocalArchive(tmp_path / "archive"), sqs=None,
                           queues=None)  # type: ignore[arg-type]


def _record_input(interval: datetime, cycle_id: str, bid_id: str) -> RecordInput:
    return RecordInput(cycle_id=cycle_id, unit_id="HDWF2", region="SA1", dispatch_interval=interval.isoformat(),
                       status="SUBMITTED", bid_id=bid_id, failure=None, started_at="2026-05-14T07:50:00+00:00",
                       facts=(), manual_rebid_reason=None, plan_key=None)


async def test_a_later_cycle_settles_an_interval_aemo_published_since(database: str, tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")  # nothing published yet
    bid = _generator_bid("HDWF2", LIVE_INTERVAL, [0.0, 500.0, 500.0])
    async with await connect(database) as conn:
        await bid_store.insert_bid(conn, bid_record(bid, bid_key(bid), ()))
        await conn.commit()
    activities = _live_activities(store, database, tmp_path)
    early = await ActivityEnvironment().run(activities.record_outcome,
                                            _record_input(LIVE_INTERVAL, "live-1800", bid_key(bid).bid_id))
    assert not early.cleared and early.settled_earlier == ()
    _follow(store)  # AEMO publishes the day's dispatch
    later = await ActivityEnvironment().run(
        activities.record_outcome, _record_input(LIVE_INTERVAL + timedelta(minutes=5), "live-1805",
                                                 bid_key(bid).bid_id))
    assert later.cleared and later.dispatch_flags == ()
    dispatch, prices = dispatch_from_store(store, "HDWF2", "SA1", LIVE_INTERVAL) or pytest.fail("no row")
    assert len(later.settled_earlier) == 1
    line = later.settled_earlier[0]
    assert line.startswith("2026-05-14 18:00 (live-1800)") and "UNEXPLAINED" in line  # the bid offered 0 MW then
    async with await connect(database) as conn:
        cur = await conn.execute("SELECT gen_mw, energy_revenue, revenue_counted, facts->-1->>'stage'"
                                 " FROM cycles WHERE cycle_id = 'live-1800'")
        row = await cur.fetchone()
    assert row is not None and row[0] == pytest.approx(dispatch.target_mw) and row[2] and row[3] == "settled"
    assert row[1] == pytest.approx(prices["ENERGY"] * dispatch.target_mw * 5 / 60)
    # Settled once: the next cycle finds nothing left to settle.
    again = await ActivityEnvironment().run(
        activities.record_outcome, _record_input(LIVE_INTERVAL + timedelta(minutes=10), "live-1810",
                                                 bid_key(bid).bid_id))
    assert again.settled_earlier == ()


async def test_the_live_record_stage_settles_aemos_dispatch_and_flags_what_the_bid_cannot_explain(
        live_store: MarketStore, database: str, tmp_path: Path) -> None:
    # The unit is the wind farm HDWF2 in SA1; its bid in force offers half of what AEMO dispatched at 18:00.
    dispatch, prices = dispatch_from_store(live_store, "HDWF2", "SA1", LIVE_INTERVAL) or pytest.fail("no row")
    assert dispatch.target_mw > 1, "HDWF2 was not generating at 18:00 on 14 May 2026"
    bid = _generator_bid("HDWF2", LIVE_INTERVAL, [dispatch.target_mw / 2, dispatch.target_mw + 20])
    async with await connect(database) as conn:
        await bid_store.insert_bid(conn, bid_record(bid, bid_key(bid), ()))
        await conn.commit()
    settings = replace(SETTINGS, database_url=database,
                       market_data=replace(SETTINGS.market_data, source="live"),
                       market_store=replace(SETTINGS.market_store, folder=str(live_store.root)),
                       battery=replace(SETTINGS.battery, unit_id="HDWF2", region="SA1"),
                       cycle=replace(SETTINGS.cycle, unit_id="HDWF2", region="SA1"))  # the portfolio's one battery
    activities = CycleActivities(settings, archive=LocalArchive(tmp_path / "archive"), sqs=None,
                                 queues=None)  # type: ignore[arg-type]

    def record(interval: datetime, cycle_id: str) -> RecordInput:
        return RecordInput(cycle_id=cycle_id, unit_id="HDWF2", region="SA1", dispatch_interval=interval.isoformat(),
                           status="SUBMITTED", bid_id=bid_key(bid).bid_id, failure=None,
                           started_at="2026-05-14T07:50:00+00:00", facts=(), manual_rebid_reason=None, plan_key=None)

    flagged = await ActivityEnvironment().run(activities.record_outcome, record(LIVE_INTERVAL, "live-1800"))
    assert flagged.cleared and flagged.dispatch_source == "AEMO"
    assert flagged.gen_mw == pytest.approx(dispatch.target_mw) and flagged.price == pytest.approx(prices["ENERGY"])
    assert flagged.energy_revenue_dollars == pytest.approx(prices["ENERGY"] * dispatch.target_mw * 5 / 60)
    assert len(flagged.dispatch_flags) == 1 and "above the offered availability" in flagged.dispatch_flags[0]
    following = LIVE_INTERVAL + timedelta(minutes=5)
    explained = await ActivityEnvironment().run(activities.record_outcome, record(following, "live-1805"))
    assert explained.cleared and explained.dispatch_flags == ()
    # The interval's dispatch and revenue are recorded in PostgreSQL with the cycle.
    async with await connect(database) as conn:
        cur = await conn.execute("SELECT gen_mw, energy_revenue FROM cycles WHERE cycle_id = 'live-1800'")
        row = await cur.fetchone()
    assert row is not None and row[0] == pytest.approx(dispatch.target_mw)
    assert row[1] == pytest.approx(flagged.energy_revenue_dollars)
    # Not published yet: recorded as not cleared.
    unpublished = await ActivityEnvironment().run(activities.record_outcome,
                                                  record(datetime(2026, 5, 20, 18, 0), "live-later"))
    assert not unpublished.cleared
