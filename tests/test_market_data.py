"""The as-of market snapshot (pure) and the MarketDataService gRPC server (real server, real channel)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from aemo.mms import load_market_data
from algorithms.common.nem_time import from_timestamp, market_to_unix_ms, market_to_utc, to_timestamp
from algorithms.market.as_of import (
    DEFAULT_HISTORY_INTERVALS,
    PublicationModel,
    SnapshotNotFoundError,
    SnapshotRequestError,
    build_snapshot,
    estimate_missing,
    history_window_start,
    latest_known,
    publication_model,
)
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from services.health import PortInUseError, wait_healthy
from services.market_data import fetch_snapshot, serve
from settings import Settings
from tests.conftest import free_port
from vpp.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "nem"
ON_TIME, LATE = common_pb2.DATA_QUALITY_ON_TIME, common_pb2.DATA_QUALITY_LATE
MISSING, ESTIMATED = common_pb2.DATA_QUALITY_MISSING, common_pb2.DATA_QUALITY_ESTIMATED
DISPATCH_INTERVAL = datetime(2021, 1, 15, 17, 40)
FIVE = timedelta(minutes=5)

_MARKET: tuple[DispatchPrices, PredispatchPrices] | None = None


def market() -> tuple[DispatchPrices, PredispatchPrices]:
    """The January 2021 tables, loaded once for this module (hypothesis tests cannot take fixtures)."""
    global _MARKET
    if _MARKET is None:
        _MARKET = load_market_data(DATA_DIR)
    return _MARKET


def snapshot(as_of: datetime, history_intervals: int = 6, publication: PublicationModel | None = None,
             region: str = "SA1") -> market_data_pb2.MarketSnapshot:
    dispatch, predispatch = market()
    return build_snapshot(dispatch, predispatch, region=region, dispatch_interval=DISPATCH_INTERVAL,
                          as_of=as_of, history_intervals=history_intervals,
                          publication=publication or PublicationModel(dispatch_price_delay_s=20.0))


def slot_times(snap: market_data_pb2.MarketSnapshot) -> list[datetime]:
    first = from_timestamp(snap.history[0].first_interval)
    return [first + FIVE * i for i in range(len(snap.history[0].price))]


# --------------------------------------------------------------------------------------------------
# Values and flags
# --------------------------------------------------------------------------------------------------


def test_on_time_history_equals_the_source() -> None:
    dispatch, _ = market()
    snap = snapshot(datetime(2021, 1, 15, 17, 30, 25))
    assert list(snap.products) == list(dispatch.products)
    assert from_timestamp(snap.latest_interval) == datetime(2021, 1, 15, 17, 30)
    assert from_timestamp(snap.dispatch_interval) == DISPATCH_INTERVAL
    assert slot_times(snap) == [datetime(2021, 1, 15, 17, 5) + FIVE * i for i in range(6)]
    assert snap.latest_quality == ON_TIME
    assert list(snap.quality_notes) == []
    for history in snap.history:
        for moment, price, known_ms, quality in zip(slot_times(snap), history.price, history.known_at_unix_ms,
                                                    history.quality, strict=True):
            assert price == dispatch.prices_at("SA1", moment)[history.product]
            assert known_ms == market_to_unix_ms(moment + timedelta(seconds=20))
            assert quality == ON_TIME


def test_latest_not_yet_published_is_late_and_has_no_value() -> None:
    snap = snapshot(datetime(2021, 1, 15, 17, 30, 10))  # published at 17:30:20
    assert from_timestamp(snap.latest_interval) == datetime(2021, 1, 15, 17, 30)
    assert snap.latest_quality == LATE
    for history in snap.history:
        assert math.isnan(history.price[-1]) and history.quality[-1] == MISSING
        assert history.known_at_unix_ms[-1] == 0
        assert history.quality[-2] == ON_TIME
    assert not latest_known(snap)
    assert any("not yet published" in note for note in snap.quality_notes)


def test_late_interval_is_late_before_and_after_it_arrives() -> None:
    late_slot = datetime(2021, 1, 15, 17, 30)
    publication = PublicationModel(dispatch_price_delay_s=20.0, late_intervals={late_slot: 40.0})
    pending = snapshot(datetime(2021, 1, 15, 17, 30, 59), publication=publication)
    assert pending.latest_quality == LATE and math.isnan(pending.history[0].price[-1])
    arrived = snapshot(datetime(2021, 1, 15, 17, 31, 0), publication=publication)
    assert arrived.latest_quality == LATE and latest_known(arrived)
    assert arrived.history[0].quality[-1] == LATE
    assert arrived.history[0].known_at_unix_ms[-1] == market_to_unix_ms(datetime(2021, 1, 15, 17, 31))
    # Once the next interval is the latest, the late one stays LATE in the history.
    later = snapshot(datetime(2021, 1, 15, 17, 36), publication=publication)
    assert later.latest_quality == ON_TIME
    assert later.history[0].quality[-2] == LATE and later.history[0].quality[-1] == ON_TIME


def test_missing_interval_is_missing_forever() -> None:
    gap = datetime(2021, 1, 15, 17, 30)
    publication = PublicationModel(dispatch_price_delay_s=20.0, missing_intervals=frozenset({gap}))
    snap = snapshot(datetime(2021, 1, 15, 17, 31), publication=publication)
    assert snap.latest_quality == MISSING
    assert any("no publication" in note for note in snap.quality_notes)
    much_later = snapshot(datetime(2021, 1, 15, 18, 0, 30), history_intervals=12, publication=publication)
    index = slot_times(much_later).index(gap)
    assert all(h.quality[index] == MISSING and math.isnan(h.price[index]) for h in much_later.history)
    assert much_later.latest_quality == ON_TIME


def test_estimate_missing_carries_the_last_known_value_forward() -> None:
    dispatch, _ = market()
    gap = datetime(2021, 1, 15, 17, 25)
    publication = PublicationModel(dispatch_price_delay_s=20.0, missing_intervals=frozenset({gap}))
    snap = snapshot(datetime(2021, 1, 15, 17, 30, 10), publication=publication)  # 17:25 gap, 17:30 pending
    estimated = estimate_missing(snap)
    assert estimated.latest_quality == ESTIMATED and latest_known(estimated)
    previous = dispatch.prices_at("SA1", datetime(2021, 1, 15, 17, 20))
    for history in estimated.history:
        assert list(history.quality[-3:]) == [ON_TIME, ESTIMATED, ESTIMATED]
        assert list(history.price[-2:]) == [previous[history.product]] * 2
        assert list(history.known_at_unix_ms[-2:]) == [0, 0]
    assert any("ESTIMATED" in note for note in estimated.quality_notes)
    assert snap.latest_quality == LATE  # the input is not modified
    assert estimate_missing(estimated).history == estimated.history


def test_estimate_missing_leaves_known_latest_and_leading_gaps() -> None:
    dispatch, predispatch = market()
    start = dispatch.intervals[0].astype(datetime)
    early = build_snapshot(dispatch, predispatch, region="SA1", dispatch_interval=DISPATCH_INTERVAL,
                           as_of=start + timedelta(minutes=5, seconds=30), history_intervals=4,
                           publication=PublicationModel(dispatch_price_delay_s=20.0))
    assert list(early.history[0].quality) == [MISSING, MISSING, ON_TIME, ON_TIME]  # before the data starts
    estimated = estimate_missing(early)
    assert estimated.history == early.history
    assert estimated.latest_quality == ON_TIME


def test_default_history_length_and_predispatch() -> None:
    _, predispatch = market()
    as_of = datetime(2021, 1, 15, 17, 30, 25)
    snap = snapshot(as_of, history_intervals=0)
    assert all(len(h.price) == DEFAULT_HISTORY_INTERVALS == 2016 for h in snap.history)
    run = predispatch.latest_run("SA1", as_of)
    assert run is not None
    assert [f.product for f in snap.predispatch] == list(predispatch.products)
    energy = snap.predispatch[0]
    assert from_timestamp(energy.run_time) == run.run_time
    assert energy.known_at_unix_ms == market_to_unix_ms(run.known_at)
    assert [from_timestamp(p) for p in energy.period] == list(run.periods.astype(datetime))
    assert list(energy.price) == run.price[:, 0].tolist()


# --------------------------------------------------------------------------------------------------
# The history reach: a window short of known prices starts earlier
# --------------------------------------------------------------------------------------------------


def test_history_window_start_keeps_a_full_window() -> None:
    known = np.ones(20, dtype=bool)
    assert history_window_start(known, 6) == 14


def test_history_window_start_reaches_back_to_the_wanted_count_of_known_prices() -> None:
    known = np.zeros(20, dtype=bool)
    known[[2, 5, 6, 17, 18, 19]] = True  # three known in the last six slots, three more earlier
    assert history_window_start(known, 6) == 2
    assert history_window_start(known, 4) == 6  # the fourth newest known slot
    assert history_window_start(known, 10) == 2  # fewer than wanted: the oldest known one


def test_history_window_start_never_starts_later_than_without_the_reach() -> None:
    known = np.zeros(20, dtype=bool)
    known[[17, 18, 19]] = True  # the data begins inside the window
    assert history_window_start(known, 6) == 14
    assert history_window_start(np.zeros(20, dtype=bool), 6) == 14
    assert history_window_start(np.ones(4, dtype=bool), 6) == 0


GAP_DAYS = [datetime(2021, 1, 10) + FIVE * k for k in range(1, 4 * 288 + 1)]  # 10 Jan 00:05 .. 14 Jan 00:00


def test_reach_fills_a_window_with_a_gap_of_days_from_earlier_data() -> None:
    dispatch, predispatch = market()
    publication = PublicationModel(dispatch_price_delay_s=20.0, missing_intervals=frozenset(GAP_DAYS))
    as_of = datetime(2021, 1, 15, 17, 30, 25)

    def built(reach: int) -> market_data_pb2.MarketSnapshot:
        return build_snapshot(dispatch, predispatch, region="SA1", dispatch_interval=DISPATCH_INTERVAL,
                              as_of=as_of, history_intervals=2016, publication=publication,
                              history_reach_intervals=reach)

    week = built(0)
    assert len(slot_times(week)) == 2016
    assert sum(math.isfinite(price) for price in week.history[0].price) == 2016 - len(GAP_DAYS)
    reached = built(10080)
    slots = slot_times(reached)
    energy = reached.history[0]
    known = [math.isfinite(price) for price in energy.price]
    assert sum(known) == 2016 and known[0]  # starts at the 2,016th newest known price
    assert slots[-1] == datetime(2021, 1, 15, 17, 30) and len(slots) == 2016 + len(GAP_DAYS)
    assert slots[0] == datetime(2021, 1, 15, 17, 30) - FIVE * (len(slots) - 1)
    for moment, price in zip(slots, energy.price, strict=True):
        if moment not in GAP_DAYS:
            assert price == dispatch.prices_at("SA1", moment)[energy.product]
    assert all(len(h.price) == len(slots) for h in reached.history)
    assert all(len(h.enabled_mw) == len(slots) for h in reached.local_dispatch)
    assert f"{len(GAP_DAYS)} of {len(slots)} history intervals have no price known at as_of" in reached.quality_notes


def test_reach_changes_nothing_when_the_window_is_full_or_the_data_begins_inside_it() -> None:
    dispatch, predispatch = market()
    publication = PublicationModel(dispatch_price_delay_s=20.0)
    for as_of in (datetime(2021, 1, 15, 17, 30, 25), datetime(2021, 1, 3, 12, 0, 25)):
        without, with_reach = (build_snapshot(dispatch, predispatch, region="SA1", dispatch_interval=DISPATCH_INTERVAL,
                                              as_of=as_of, history_intervals=2016, publication=publication,
                                              history_reach_intervals=reach) for reach in (0, 10080))
        assert with_reach == without


def test_reach_outside_its_range_is_a_clear_error() -> None:
    dispatch, predispatch = market()
    with pytest.raises(SnapshotRequestError, match="history_reach_intervals"):
        build_snapshot(dispatch, predispatch, region="SA1", dispatch_interval=DISPATCH_INTERVAL,
                       as_of=datetime(2021, 1, 15, 17, 31), history_intervals=6,
                       publication=PublicationModel(dispatch_price_delay_s=20.0), history_reach_intervals=-1)


def test_no_predispatch_before_the_first_run() -> None:
    snap = snapshot(datetime(2021, 1, 1, 3, 0))
    assert len(snap.predispatch) == 0
    assert any("no pre-dispatch run" in note for note in snap.quality_notes)


def test_invalid_requests_are_clear_errors() -> None:
    dispatch, predispatch = market()
    publication = PublicationModel(dispatch_price_delay_s=20.0)

    def build(**overrides: object) -> None:
        arguments: dict[str, object] = {"region": "SA1", "dispatch_interval": DISPATCH_INTERVAL,
                                        "as_of": datetime(2021, 1, 15, 17, 31), "history_intervals": 6}
        arguments.update(overrides)
        build_snapshot(dispatch, predispatch, publication=publication, **arguments)  # type: ignore[arg-type]

    with pytest.raises(SnapshotRequestError, match="NSW1, QLD1, SA1, TAS1, VIC1"):
        build(region="WA1")
    with pytest.raises(SnapshotRequestError, match="5-minute grid"):
        build(dispatch_interval=datetime(2021, 1, 15, 17, 42))
    with pytest.raises(SnapshotRequestError, match="history_intervals"):
        build(history_intervals=-1)
    with pytest.raises(SnapshotNotFoundError, match="outside the data"):
        build(dispatch_interval=datetime(2021, 3, 1, 0, 5))
    with pytest.raises(ValueError, match="5-minute"):
        PublicationModel(dispatch_price_delay_s=20.0,
                         missing_intervals=frozenset({datetime(2021, 1, 1, 0, 3)}))
    with pytest.raises(ValueError, match=">= 0"):
        PublicationModel(dispatch_price_delay_s=-1.0)


def test_publication_model_from_settings(settings: Settings) -> None:
    gap = datetime(2021, 1, 2, 10, 0)
    model = publication_model(replace(settings.market_data, missing_intervals=(gap,)),
                              late_intervals={datetime(2021, 1, 2, 10, 5): 30.0})
    assert model.known_at(gap) is None
    assert model.known_at(datetime(2021, 1, 2, 10, 5)) == datetime(2021, 1, 2, 10, 5, 50)
    assert model.known_at(datetime(2021, 1, 2, 10, 10)) == datetime(2021, 1, 2, 10, 10, 20)


# --------------------------------------------------------------------------------------------------
# The as-of contract, as a property
# --------------------------------------------------------------------------------------------------

MONTH_START = datetime(2021, 1, 1, 0, 0)
MONTH_SECONDS = 31 * 86400
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@st.composite
def publications(draw: st.DrawFn, as_of: datetime) -> PublicationModel:
    """Random delay, and random gaps and late intervals among the hour before ``as_of``."""
    latest = as_of.replace(second=0, microsecond=0) - timedelta(minutes=as_of.minute % 5)
    near = st.integers(min_value=0, max_value=12).map(lambda k: latest - FIVE * k)
    return PublicationModel(
        dispatch_price_delay_s=draw(st.floats(min_value=0.0, max_value=600.0)),
        missing_intervals=frozenset(draw(st.lists(near, max_size=4))),
        late_intervals=draw(st.dictionaries(near, st.floats(min_value=0.0, max_value=900.0), max_size=4)),
    )


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), offset_ms=st.integers(min_value=0, max_value=MONTH_SECONDS * 1000),
       history_intervals=st.integers(min_value=1, max_value=3000),
       region=st.sampled_from(["NSW1", "QLD1", "SA1", "TAS1", "VIC1"]))
def test_nothing_published_after_as_of_is_returned(data: st.DataObject, offset_ms: int,
                                                  history_intervals: int, region: str) -> None:
    dispatch, predispatch = market()
    as_of = MONTH_START + timedelta(milliseconds=offset_ms)
    publication = data.draw(publications(as_of))
    snap = build_snapshot(dispatch, predispatch, region=region, dispatch_interval=DISPATCH_INTERVAL,
                          as_of=as_of, history_intervals=history_intervals, publication=publication)
    as_of_ms = market_to_unix_ms(as_of)
    latest = from_timestamp(snap.latest_interval)
    assert latest <= as_of < latest + FIVE
    slots = slot_times(snap)
    assert slots[-1] == latest and len(slots) == history_intervals
    # Per slot: when it is published (None = never) and its source prices (NaN outside the data).
    published = [publication.known_at(moment) for moment in slots]
    source = np.full((len(slots), len(dispatch.products)), np.nan)
    for index, moment in enumerate(slots):
        position = dispatch.interval_index(moment)
        if position is not None:
            source[index] = dispatch.price[dispatch.region_index(region), position]
    visible = np.array([moment is not None and moment <= as_of for moment in published])
    late = np.array([moment is not None and moment > publication.expected_at(slot)
                     for moment, slot in zip(published, slots, strict=True)])
    expected_known_ms = np.array([0 if moment is None else
                                  math.ceil((market_to_utc(moment) - EPOCH) / timedelta(milliseconds=1))
                                  for moment in published])
    for product_index, history in enumerate(snap.history):
        prices = np.array(history.price)
        known = np.array(history.known_at_unix_ms)
        quality = np.array(history.quality)
        has_value = quality != MISSING
        assert bool(np.all(known <= as_of_ms))
        assert bool(np.all(np.isnan(prices[~has_value]))) and bool(np.all(known[~has_value] == 0))
        # Exactly the slots published by as_of (and present in the data) carry a value: nothing later,
        # and nothing known is withheld.
        np.testing.assert_array_equal(has_value, visible & np.isfinite(source[:, product_index]))
        np.testing.assert_array_equal(prices[has_value], source[has_value, product_index])
        # known_at is reported in whole milliseconds, rounded up (never earlier than the truth).
        np.testing.assert_array_equal(known[has_value], expected_known_ms[has_value])
        np.testing.assert_array_equal(quality[has_value], np.where(late, LATE, ON_TIME)[has_value])
    for forecast in snap.predispatch:
        assert forecast.known_at_unix_ms <= as_of_ms
    run = predispatch.latest_run(region, as_of)
    assert (run is None) == (len(snap.predispatch) == 0)


# --------------------------------------------------------------------------------------------------
# The gRPC server, for real
# --------------------------------------------------------------------------------------------------


async def _start(settings: Settings) -> tuple[str, asyncio.Event, asyncio.Task[None]]:
    port = free_port()
    configured = replace(settings, stack=replace(settings.stack, market_data_port=port))
    stop = asyncio.Event()
    task = asyncio.create_task(serve(configured, stop))
    address = f"127.0.0.1:{port}"
    await wait_healthy(address, timeout_s=30.0)
    return address, stop, task


async def test_grpc_get_snapshot_and_invalid_requests(settings: Settings) -> None:
    address, stop, task = await _start(settings)
    try:
        as_of = datetime(2021, 1, 15, 17, 30, 25)
        snap = await fetch_snapshot(address, "SA1", DISPATCH_INTERVAL, as_of, history_intervals=12)
        assert snap == snapshot(as_of, history_intervals=12)
        default = await fetch_snapshot(address, "SA1", DISPATCH_INTERVAL, as_of)
        assert len(default.history[0].price) == settings.cycle.history_intervals

        with pytest.raises(grpc.aio.AioRpcError) as unknown_region:
            await fetch_snapshot(address, "WA1", DISPATCH_INTERVAL, as_of)
        assert unknown_region.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "SA1" in (unknown_region.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as off_grid:
            await fetch_snapshot(address, "SA1", DISPATCH_INTERVAL + timedelta(seconds=30), as_of)
        assert off_grid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as outside:
            await fetch_snapshot(address, "SA1", datetime(2022, 1, 1, 0, 5), as_of)
        assert outside.value.code() == grpc.StatusCode.NOT_FOUND

        async with grpc.aio.insecure_channel(address) as channel:
            stub = market_data_pb2_grpc.MarketDataServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as no_as_of:
                await stub.GetSnapshot(market_data_pb2.GetSnapshotRequest(
                    region="SA1", dispatch_interval=to_timestamp(DISPATCH_INTERVAL)), timeout=10)
            assert no_as_of.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "as_of" in (no_as_of.value.details() or "")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_port_in_use_is_a_clear_error(settings: Settings) -> None:
    address, stop, task = await _start(settings)
    port = int(address.rsplit(":", 1)[1])
    try:
        second = replace(settings, stack=replace(settings.stack, market_data_port=port))
        with pytest.raises(PortInUseError, match=f"port {port} \\(market-data service\\) is already in use"):
            await serve(second, asyncio.Event())
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_wait_healthy_times_out_naming_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(TimeoutError, match=address):
        await wait_healthy(address, timeout_s=0.3)
