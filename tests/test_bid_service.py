"""The simulated NEM's BidService: a real gRPC server over a real PostgreSQL database and the real
January 2021 DISPATCHPRICE data."""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import grpc
import pandas as pd
import pytest

from aemo.mms import load_dispatch_prices
from algorithms.common import nem_time
from algorithms.market.prices import DispatchPrices
from models import bids as bid_store
from models.db import connect, migrate
from services import bid_service
from services.health import PortInUseError, wait_healthy
from settings import Settings, load_settings
from tests.conftest import free_port
from vpp.v1 import bid_pb2, bid_pb2_grpc, common_pb2

FIVE = timedelta(minutes=5)
T = datetime(2021, 1, 10, 18, 30)  # interval-ending AEST, trading day 2021-01-10
GEN_PRICES = [-500.0, 0.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 5000.0, 14000.0]
LOAD_PRICES = [-1000.0, -900.0, -800.0, -700.0, -600.0, -550.0, -540.0, -530.0, -520.0, -510.0]


def historical_rrp(region: str, dispatch_interval: datetime) -> float:
    """RRP ($/MWh) read straight from the parquet file, independently of aemo.mms."""
    data_dir = load_settings(environ={}).market_data.data_dir
    frame = _dispatch_table(str(data_dir))
    text = dispatch_interval.strftime("%Y/%m/%d %H:%M:%S")
    rows = frame[(frame["REGIONID"] == region) & (frame["INTERVENTION"].astype(int) == 0)
                 & (frame["SETTLEMENTDATE"].astype(str) == text)]
    assert len(rows) == 1, f"expected one DISPATCHPRICE row for {region} {text}"
    return float(rows["RRP"].iloc[0])


@functools.cache
def _dispatch_table(data_dir: str) -> pd.DataFrame:
    files = sorted(Path(data_dir).glob("*_DISPATCHPRICE_*.parquet"))
    return pd.concat([pd.read_parquet(file) for file in files], ignore_index=True)


def make_bid(unit_id: str, first: datetime, *, count: int = 1, gen_mw: float = 50.0, version: int = 1,
             gen_prices: list[float] | None = None) -> bid_pb2.Bid:
    """A DAILY bid offering ``gen_mw`` MW of GEN in band 1 (priced -500 $/MWh) for ``count`` intervals."""
    day = nem_time.trading_day(first)

    def periods(max_avail_mw: float) -> list[bid_pb2.PeriodOffer]:
        return [bid_pb2.PeriodOffer(
            dispatch_interval=nem_time.to_timestamp(first + FIVE * i), max_avail_mw=max_avail_mw,
            band_avail_mw=[max_avail_mw] + [0.0] * 9, ramp_up_rate_mw_per_min=150.0,
            ramp_down_rate_mw_per_min=150.0, pasa_avail_mw=150.0) for i in range(count)]

    return bid_pb2.Bid(
        unit_id=unit_id,
        trading_day=day.isoformat(),
        dispatch_interval=nem_time.to_timestamp(first),
        version=version,
        entry_type=bid_pb2.ENTRY_TYPE_DAILY,
        offer_time=nem_time.to_timestamp(datetime.combine(day - timedelta(days=1), datetime.min.time())),
        offers=[
            bid_pb2.ProductOffer(product="ENERGY", direction=common_pb2.DIRECTION_GEN,
                                 band_price=gen_prices or GEN_PRICES, periods=periods(gen_mw)),
            bid_pb2.ProductOffer(product="ENERGY", direction=common_pb2.DIRECTION_LOAD,
                                 band_price=LOAD_PRICES, periods=periods(0.0)),
        ],
    )


@dataclass(frozen=True)
class Market:
    """A running BidService for one freshly registered unit."""

    address: str
    settings: Settings
    database_url: str

    @property
    def unit_id(self) -> str:
        return self.settings.battery.unit_id


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> str:
    migrate(database_url)
    return database_url


@functools.cache
def _cached_dispatch_prices(data_dir: Path) -> DispatchPrices:
    return load_dispatch_prices(data_dir)


def _configured_dispatch_prices(settings: Settings) -> DispatchPrices:
    assert settings.market_data.source == "files"
    return _cached_dispatch_prices(settings.market_data.data_dir)


@pytest.fixture
async def market(
    settings: Settings, migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Market]:
    # Each test gets its own server and unit; the price data is read once for all of them.
    monkeypatch.setattr(bid_service, "configured_dispatch_prices", _configured_dispatch_prices)
    unit_id = f"T{uuid.uuid4().hex[:8]}"
    port = free_port()
    configured = replace(
        settings,
        database_url=migrated_database,
        battery=replace(settings.battery, unit_id=unit_id),
        stack=replace(settings.stack, bid_service_port=port),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(bid_service.serve(configured, stop))
    address = f"127.0.0.1:{port}"
    try:
        await wait_healthy(address, timeout_s=20)
        yield Market(address=address, settings=configured, database_url=migrated_database)
    finally:
        stop.set()
        await task


async def ledger(market: Market) -> list[bid_store.ClearingRecord]:
    async with await connect(market.database_url) as conn:
        return await bid_store.list_clearings(conn, market.unit_id, datetime(2000, 1, 1),
                                              datetime(2100, 1, 1))


async def bid_rows(market: Market) -> int:
    async with await connect(market.database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM bids WHERE unit_id = %s", (market.unit_id,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_valid_bid_is_accepted_and_cleared_at_the_historical_price(market: Market) -> None:
    bid = make_bid(market.unit_id, T, gen_mw=50.0)
    answer = await bid_service.submit_bid(market.address, bid)
    assert answer.status == bid_pb2.BID_STATUS_ACCEPTED, list(answer.reasons)
    assert not answer.duplicate
    assert answer.bid_id == bid_service.bid_id_for(market.unit_id, date(2021, 1, 10), T, 1)
    assert answer.HasField("received_at")

    rrp = historical_rrp("SA1", T)
    assert rrp > GEN_PRICES[0]
    battery = market.settings.battery
    stored = await bid_service.get_bid(market.address, answer.bid_id)
    assert stored.cleared and stored.status == bid_pb2.BID_STATUS_ACCEPTED
    assert stored.bid == bid
    assert nem_time.from_timestamp(stored.outcome.dispatch_interval) == T
    assert stored.outcome.gen_mw == pytest.approx(50.0)
    assert stored.outcome.load_mw == pytest.approx(0.0)
    assert stored.outcome.energy_revenue_dollars == pytest.approx(rrp * battery.mlf_gen * 50.0 * 5 / 60)
    expected_soc = battery.initial_state_of_charge_mwh - 50.0 * (5 / 60) / battery.discharge_efficiency
    assert stored.outcome.state_of_charge_mwh == pytest.approx(expected_soc)

    status = await bid_service.get_unit_status(market.address, market.unit_id)
    assert status.state_of_charge_mwh == pytest.approx(expected_soc)
    assert nem_time.from_timestamp(status.last_cleared_interval) == T
    assert status.net_mw == pytest.approx(50.0)


async def test_resubmitting_a_bid_is_a_duplicate_and_never_clears_again(market: Market) -> None:
    bid = make_bid(market.unit_id, T)
    first = await bid_service.submit_bid(market.address, bid)
    status_before = await bid_service.get_unit_status(market.address, market.unit_id)
    again = await bid_service.submit_bid(market.address, bid)
    assert again.duplicate
    assert (again.bid_id, again.status, again.received_at) == (first.bid_id, first.status, first.received_at)
    assert await bid_service.get_unit_status(market.address, market.unit_id) == status_before
    assert await bid_rows(market) == 1
    assert len(await ledger(market)) == 1
    async with await connect(market.database_url) as conn:
        assert await bid_store.count_accepted_submissions(conn, market.unit_id, T) == 1


async def test_invalid_bid_is_rejected_recorded_and_never_cleared(market: Market) -> None:
    not_increasing = [0.0, 50.0, 40.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 5000.0, 14000.0]
    bid = make_bid(market.unit_id, T, gen_prices=not_increasing)
    answer = await bid_service.submit_bid(market.address, bid)
    assert answer.status == bid_pb2.BID_STATUS_REJECTED
    assert any(reason.startswith("V1:") for reason in answer.reasons), list(answer.reasons)

    stored = await bid_service.get_bid(market.address, answer.bid_id)
    assert stored.status == bid_pb2.BID_STATUS_REJECTED
    assert list(stored.reasons) == list(answer.reasons)
    assert not stored.cleared
    status = await bid_service.get_unit_status(market.address, market.unit_id)
    assert status.state_of_charge_mwh == pytest.approx(market.settings.battery.initial_state_of_charge_mwh)
    assert not status.HasField("last_cleared_interval")
    assert await ledger(market) == []
    async with await connect(market.database_url) as conn:
        assert await bid_store.count_accepted_submissions(conn, market.unit_id, T) == 0
    repeat = await bid_service.submit_bid(market.address, bid)
    assert repeat.duplicate and repeat.status == bid_pb2.BID_STATUS_REJECTED


async def test_concurrent_submissions_of_one_bid_store_and_clear_once(market: Market) -> None:
    bid = make_bid(market.unit_id, T, gen_mw=30.0)
    answers = await asyncio.gather(*(bid_service.submit_bid(market.address, bid) for _ in range(4)))
    assert sorted(answer.duplicate for answer in answers) == [False, True, True, True]
    assert {answer.bid_id for answer in answers} == {answers[0].bid_id}
    assert await bid_rows(market) == 1
    cleared = await ledger(market)
    assert [c.dispatch_interval for c in cleared] == [T]
    battery = market.settings.battery
    status = await bid_service.get_unit_status(market.address, market.unit_id)
    assert status.state_of_charge_mwh == pytest.approx(
        battery.initial_state_of_charge_mwh - 30.0 * (5 / 60) / battery.discharge_efficiency)


async def test_concurrent_different_bids_of_a_unit_clear_each_interval_once(market: Market) -> None:
    first = await bid_service.submit_bid(market.address, make_bid(market.unit_id, T, count=4, gen_mw=10.0))
    assert first.status == bid_pb2.BID_STATUS_ACCEPTED
    bids = [make_bid(market.unit_id, T, version=2), make_bid(market.unit_id, T + FIVE, gen_mw=5.0),
            make_bid(market.unit_id, T + 2 * FIVE, gen_mw=7.0), make_bid(market.unit_id, T + 3 * FIVE)]
    answers = await asyncio.gather(*(bid_service.submit_bid(market.address, bid) for bid in bids))
    assert [answer.status for answer in answers] == [bid_pb2.BID_STATUS_ACCEPTED] * 4
    assert not any(answer.duplicate for answer in answers)
    # Whatever the order the submissions were served in, every interval is cleared exactly once and
    # each clearing starts from the state the previous one left.
    cleared = await ledger(market)
    assert [c.dispatch_interval for c in cleared] == [T + FIVE * i for i in range(4)]
    battery = market.settings.battery
    for before, after in itertools.pairwise(cleared):
        assert after.state_of_charge_mwh == pytest.approx(
            before.state_of_charge_mwh - after.gen_mw * (5 / 60) / battery.discharge_efficiency)
    status = await bid_service.get_unit_status(market.address, market.unit_id)
    assert status.state_of_charge_mwh == pytest.approx(cleared[-1].state_of_charge_mwh)
    assert nem_time.from_timestamp(status.last_cleared_interval) == T + 3 * FIVE


async def test_catch_up_clears_each_interval_once_from_the_bid_in_force(market: Market) -> None:
    daily = await bid_service.submit_bid(market.address, make_bid(market.unit_id, T, count=3, gen_mw=10.0))
    later = make_bid(market.unit_id, T + 4 * FIVE, count=1, gen_mw=20.0)
    rebid = await bid_service.submit_bid(market.address, later)
    assert rebid.status == bid_pb2.BID_STATUS_ACCEPTED, list(rebid.reasons)

    cleared = await ledger(market)
    assert [c.dispatch_interval for c in cleared] == [T + FIVE * i for i in range(5)]
    assert [c.bid_id for c in cleared] == [daily.bid_id] * 3 + [None, rebid.bid_id]
    assert [c.gen_mw for c in cleared] == pytest.approx([10.0, 10.0, 10.0, 0.0, 20.0])
    expected_revenue = [historical_rrp("SA1", c.dispatch_interval) * c.gen_mw * 5 / 60 for c in cleared]
    assert [c.energy_revenue for c in cleared] == pytest.approx(expected_revenue)
    assert "no accepted bid" in cleared[3].market_outcome().notes[0]
    soc = [c.state_of_charge_mwh for c in cleared]
    assert soc[2] == soc[3] > soc[4]

    # A bid whose interval is already cleared is stored but clears nothing.
    late = await bid_service.submit_bid(market.address, make_bid(market.unit_id, T + FIVE, version=2))
    assert late.status == bid_pb2.BID_STATUS_ACCEPTED and not late.duplicate
    assert len(await ledger(market)) == 5
    assert not (await bid_service.get_bid(market.address, late.bid_id)).cleared


async def test_a_gap_longer_than_a_trading_day_starts_the_unit_afresh(market: Market) -> None:
    await bid_service.submit_bid(market.address, make_bid(market.unit_id, T, gen_mw=100.0))
    next_week = T + timedelta(days=7)
    answer = await bid_service.submit_bid(market.address, make_bid(market.unit_id, next_week, gen_mw=0.0))
    assert answer.status == bid_pb2.BID_STATUS_ACCEPTED, list(answer.reasons)
    assert [c.dispatch_interval for c in await ledger(market)] == [T, next_week]
    status = await bid_service.get_unit_status(market.address, market.unit_id)
    assert status.state_of_charge_mwh == pytest.approx(market.settings.battery.initial_state_of_charge_mwh)


async def test_bad_requests_get_clear_status_codes(market: Market) -> None:
    async def code_of(call: asyncio.Future[object] | object) -> grpc.StatusCode:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call  # type: ignore[misc]
        return caught.value.code()

    assert await code_of(bid_service.get_bid(market.address, "nobody/2021-01-10/001/v1")) == (
        grpc.StatusCode.NOT_FOUND)
    assert await code_of(bid_service.submit_bid(market.address, make_bid("NOT_REGISTERED", T))) == (
        grpc.StatusCode.NOT_FOUND)
    assert await code_of(bid_service.get_unit_status(market.address, "NOT_REGISTERED")) == (
        grpc.StatusCode.NOT_FOUND)
    no_interval = make_bid(market.unit_id, T)
    no_interval.ClearField("dispatch_interval")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(bid_service.submit_bid(market.address, no_interval)) == invalid
    no_unit = make_bid("", T)
    assert await code_of(bid_service.submit_bid(market.address, no_unit)) == invalid
    async with grpc.aio.insecure_channel(market.address) as channel:
        stub = bid_pb2_grpc.BidServiceStub(channel)
        assert await code_of(stub.SubmitBid(bid_pb2.SubmitBidRequest())) == invalid
    outside_data = make_bid(market.unit_id, datetime(2021, 3, 1, 12, 0))
    assert await code_of(bid_service.submit_bid(market.address, outside_data)) == (
        grpc.StatusCode.FAILED_PRECONDITION)
    status = await bid_service.get_unit_status(market.address, market.unit_id)
    assert not status.HasField("last_cleared_interval")


async def test_serve_needs_a_database_url_and_a_free_port(market: Market) -> None:
    with pytest.raises(ValueError, match="database_url"):
        await bid_service.serve(replace(market.settings, database_url=None), asyncio.Event())
    with pytest.raises(PortInUseError, match=str(market.settings.stack.bid_service_port)):
        await bid_service.serve(market.settings, asyncio.Event())


def test_bid_id_names_unit_trading_day_period_and_version() -> None:
    assert bid_service.bid_id_for("HPR1", date(2021, 1, 10), datetime(2021, 1, 10, 4, 5), 1) == (
        "HPR1/2021-01-10/001/v1")
    assert bid_service.bid_id_for("HPR1", date(2021, 1, 10), datetime(2021, 1, 11, 4, 0), 12) == (
        "HPR1/2021-01-10/288/v12")


def test_catch_up_plan_covers_the_gap_or_starts_afresh() -> None:
    def plan(state: bid_store.UnitState, target: datetime) -> bid_service.CatchUpPlan:
        return bid_service.catch_up_plan(state, target, initial_state_of_charge_mwh=97.0,
                                         max_gap_intervals=288)

    state = bid_store.UnitState("U", 80.0, T, 25.0)
    assert plan(state, T + 3 * FIVE) == bid_service.CatchUpPlan(
        (T + FIVE, T + 2 * FIVE, T + 3 * FIVE), 80.0, 25.0, restarted=False)
    assert plan(state, T).intervals == ()
    assert plan(state, T - FIVE).intervals == ()
    assert len(plan(state, T + 288 * FIVE).intervals) == 288
    far = T + 289 * FIVE
    assert plan(state, far) == bid_service.CatchUpPlan((far,), 97.0, 0.0, restarted=True)
    fresh = bid_store.UnitState("U", 97.0, None, 0.0)
    assert plan(fresh, T) == bid_service.CatchUpPlan((T,), 97.0, 0.0, restarted=True)


def test_bid_key_rejects_missing_or_unreadable_fields() -> None:
    bid = make_bid("U", T)
    assert bid_service.bid_key(bid) == bid_service.BidKey("U", date(2021, 1, 10), T, 1)
    bad_day = make_bid("U", T)
    bad_day.trading_day = "10/01/2021"
    with pytest.raises(bid_service.BidRequestError, match="YYYY-MM-DD"):
        bid_service.bid_key(bad_day)
    off_grid = make_bid("U", T)
    off_grid.dispatch_interval.CopyFrom(nem_time.to_timestamp(T + timedelta(minutes=2)))
    with pytest.raises(bid_service.BidRequestError, match="grid"):
        bid_service.bid_key(off_grid)


async def test_dispatch_outcome_clears_on_demand_from_the_bid_in_force(market: Market) -> None:
    daily = await bid_service.submit_bid(market.address, make_bid(market.unit_id, T, count=4, gen_mw=10.0))
    assert len(await ledger(market)) == 1  # a submission clears only its first interval
    # Asking for a later interval dispatches the pending ones from the standing bid, once.
    answer = await bid_service.get_dispatch_outcome(market.address, market.unit_id, T + 2 * FIVE)
    assert answer.bid_id == daily.bid_id
    assert answer.outcome.gen_mw == pytest.approx(10.0)
    rrp = historical_rrp("SA1", T + 2 * FIVE)
    assert answer.outcome.energy_revenue_dollars == pytest.approx(rrp * 10.0 * 5 / 60)
    assert [c.dispatch_interval for c in await ledger(market)] == [T, T + FIVE, T + 2 * FIVE]
    again = await bid_service.get_dispatch_outcome(market.address, market.unit_id, T + 2 * FIVE)
    assert again == answer
    assert len(await ledger(market)) == 3
    # Past the bid's last interval the unit is not dispatched; before its first bid it never was.
    idle = await bid_service.get_dispatch_outcome(market.address, market.unit_id, T + 5 * FIVE)
    assert idle.bid_id == "" and idle.outcome.gen_mw == 0.0
    with pytest.raises(grpc.aio.AioRpcError) as before:
        await bid_service.get_dispatch_outcome(market.address, market.unit_id, T - FIVE)
    assert before.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await bid_service.get_dispatch_outcome(market.address, "NOPE1", T)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_further_unit_is_validated_and_cleared_against_its_own_registration(
        settings: Settings, migrated_database: str) -> None:
    fleet_id = f"F{uuid.uuid4().hex[:8]}"
    fleet_spec = common_pb2.BatterySpec(
        unit_id=fleet_id, region="SA1", power_mw=2.0, energy_mwh=4.0, charge_efficiency=0.95,
        discharge_efficiency=0.95, soc_min_fraction=0.2, soc_max_fraction=1.0, mlf_gen=1.0, mlf_load=1.0,
        ramp_rate_mw_per_min=2.0, min_ramp_rate_mw_per_min=0.06)
    market = bid_service.SimulatedMarket(
        migrated_database, _cached_dispatch_prices(settings.market_data.data_dir),
        replace(settings.battery, unit_id=f"T{uuid.uuid4().hex[:8]}"), settings.market,
        [bid_service.RegisteredUnit(spec=fleet_spec, initial_state_of_charge_mwh=2.0)])
    fits = make_bid(fleet_id, T, gen_mw=1.5)
    for offer in fits.offers:
        for period in offer.periods:
            period.ramp_up_rate_mw_per_min = period.ramp_down_rate_mw_per_min = 2.0
            period.pasa_avail_mw = 2.0
    answer = await market.submit(bid_pb2.SubmitBidRequest(bid=fits))
    assert answer.status == bid_pb2.BID_STATUS_ACCEPTED, list(answer.reasons)
    outcome = await market.dispatch_outcome(bid_pb2.GetDispatchOutcomeRequest(
        unit_id=fleet_id, dispatch_interval=nem_time.to_timestamp(T)))
    assert outcome.outcome.gen_mw == pytest.approx(1.5)
    assert outcome.outcome.state_of_charge_mwh == pytest.approx(2.0 - 1.5 * (5 / 60) / 0.95)
    too_big = make_bid(fleet_id, T + FIVE, gen_mw=50.0, version=2)
    rejected = await market.submit(bid_pb2.SubmitBidRequest(bid=too_big))
    assert rejected.status == bid_pb2.BID_STATUS_REJECTED and rejected.reasons
    with pytest.raises(bid_service.BidRequestError, match=f"registered: .*'{fleet_id}'"):
        await market.unit_status("NOBODY")
