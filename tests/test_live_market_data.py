"""Live mode: AEMO's current reports followed as they are published (aemo/live.py, aemo/live_market.py,
services/market_live.py) and the as-of contract on observed publication times (algorithms/market/as_of.py).

The NEMWEB stand-in (a real HTTP server) "publishes" DispatchIS and PredispatchIS reports made from real
AEMO rows (tests/live_reports.py) one by one: its listings grow as files appear. The follower downloads
over HTTP into a real market store; the service answers over real gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest

from activities.cycle_facts import CycleInput
from aemo.live import FollowerConfig, IngestedFile, LiveFollower
from aemo.live_market import LiveMarketTables
from aemo.mms import predispatch_prices_from_frame
from aemo.nemweb import HttpSource
from aemo.store import IngestStatus, MarketStore
from algorithms.common.nem_time import from_timestamp, interval_ending_at_or_before, market_to_unix_ms, trading_day
from algorithms.common.replay_clock import live_market_time
from algorithms.market.as_of import (
    MarketTables,
    ObservedPublication,
    SnapshotNotFoundError,
    build_snapshot,
)
from algorithms.market.optimise import request_enablement_caps
from algorithms.market.prices import DispatchPrices
from services.health import wait_healthy
from services.market_data import fetch_snapshot, serve
from services.security import operator_security
from settings import MarketRules, Settings
from stack.schedule import cycle_config
from stack.supervisor import LocalStack, with_market_data
from tests.conftest import free_port, temporary_database
from tests.live_reports import (
    DISPATCH_FOLDER,
    FIRST_SEQUENCE,
    NEMWEB_ROOT,
    PREDISPATCH_FOLDER,
    FastClock,
    Report,
    archive_dispatch_rows,
    archive_region_sum_rows,
    dispatch_intervals,
    dispatchis,
    predispatch_run,
    predispatchis,
    write_report,
)
from tests.live_stack import live_stack
from tests.nemweb_standin import Fault, NemwebStandIn
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2
from workflows.autobidder import AutobidderCycle

ON_TIME, LATE = common_pb2.DATA_QUALITY_ON_TIME, common_pb2.DATA_QUALITY_LATE
MISSING = common_pb2.DATA_QUALITY_MISSING
FIVE = timedelta(minutes=5)
DELAY_S = 20.0
FIRST = datetime(2024, 8, 1, 0, 5)


# --------------------------------------------------------------------------------------------------
# The as-of contract on observed publication times (pure)
# --------------------------------------------------------------------------------------------------


def _observed_market() -> MarketTables:
    """SA1 prices of four intervals: 00:05 on time, 00:10 late, 00:15 never published, 00:20 on time."""
    intervals = np.array([FIRST + FIVE * k for k in (0, 1, 3)], dtype="datetime64[s]")
    price = np.array([[[31.0], [32.0], [34.0]]])
    dispatch = DispatchPrices(intervals=intervals, regions=("SA1",), products=("ENERGY",), price=price)
    published = np.array([FIRST + timedelta(seconds=10), FIRST + FIVE + timedelta(seconds=90),
                          FIRST + 3 * FIVE + timedelta(seconds=5)], dtype="datetime64[s]")
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in ("PREDISPATCHSEQNO", "REGIONID", "DATETIME", "RRP",
                                                                "LASTCHANGED")})
    return MarketTables(dispatch=dispatch, predispatch=predispatch_prices_from_frame(empty, "none"),
                        publication=ObservedPublication(dispatch_price_delay_s=DELAY_S, intervals=intervals,
                                                        published=published))


def _snap(tables: MarketTables, as_of: datetime, history: int = 4,
          dispatch_interval: datetime | None = None) -> market_data_pb2.MarketSnapshot:
    return build_snapshot(tables.dispatch, tables.predispatch, region="SA1",
                          dispatch_interval=dispatch_interval or FIRST + 5 * FIVE, as_of=as_of,
                          history_intervals=history, publication=tables.publication)


def test_observed_publication_times_follow_the_as_of_contract() -> None:
    tables = _observed_market()
    after_all = _snap(tables, FIRST + 3 * FIVE + timedelta(seconds=30))
    history = after_all.history[0]
    assert list(history.quality) == [ON_TIME, LATE, MISSING, ON_TIME]
    assert history.price[0] == 31.0 and history.price[1] == 32.0 and np.isnan(history.price[2])
    assert list(history.known_at_unix_ms) == [
        market_to_unix_ms(FIRST + timedelta(seconds=10)), market_to_unix_ms(FIRST + FIVE + timedelta(seconds=90)),
        0, market_to_unix_ms(FIRST + 3 * FIVE + timedelta(seconds=5))]

    # 00:10 was published at 00:11:30: not known a second before, LATE from then on.
    before = _snap(tables, FIRST + FIVE + timedelta(seconds=89), history=2)
    assert np.isnan(before.history[0].price[-1]) and before.latest_quality == LATE
    assert any("not yet published" in note for note in before.quality_notes)
    at = _snap(tables, FIRST + FIVE + timedelta(seconds=90), history=2)
    assert at.history[0].price[-1] == 32.0 and at.latest_quality == LATE

    # 00:15 has no file: awaited (LATE) until its expected time 00:15:20, a gap (MISSING) after it.
    assert _snap(tables, FIRST + 2 * FIVE + timedelta(seconds=19), history=3).latest_quality == LATE
    overdue = _snap(tables, FIRST + 2 * FIVE + timedelta(seconds=21), history=3)
    assert overdue.latest_quality == MISSING
    assert any("no publication" in note for note in overdue.quality_notes)


def test_live_data_is_open_ended_and_empty_data_is_not_found() -> None:
    tables = _observed_market()
    later = _snap(tables, FIRST + 3 * FIVE + timedelta(seconds=30), dispatch_interval=FIRST + 40 * FIVE)
    assert from_timestamp(later.dispatch_interval) == FIRST + 40 * FIVE
    with pytest.raises(SnapshotNotFoundError):
        _snap(tables, FIRST + timedelta(seconds=30), dispatch_interval=FIRST - FIVE)
    empty = DispatchPrices(intervals=np.array([], dtype="datetime64[s]"), regions=(), products=("ENERGY",),
                           price=np.empty((0, 0, 1)))
    nothing = ObservedPublication(dispatch_price_delay_s=DELAY_S, intervals=np.array([], dtype="datetime64[s]"),
                                  published=np.array([], dtype="datetime64[s]"))
    with pytest.raises(SnapshotNotFoundError, match="no dispatch prices have been published yet"):
        build_snapshot(empty, tables.predispatch, region="SA1", dispatch_interval=FIRST, as_of=FIRST,
                       history_intervals=4, publication=nothing)
    with pytest.raises(ValueError, match="sorted and unique"):
        ObservedPublication(dispatch_price_delay_s=DELAY_S, intervals=tables.dispatch.intervals[::-1],
                            published=tables.dispatch.intervals)


# --------------------------------------------------------------------------------------------------
# The follower and the live tables, poll by poll
# --------------------------------------------------------------------------------------------------


@dataclass
class Tree:
    """A NEMWEB tree of DispatchIS reports (one per interval, published 15 s after it ends)."""

    root: Path
    reports: list[Report]
    rows: pd.DataFrame


def _dispatch_tree(root: Path, count: int, publication_s: dict[int, float] | None = None) -> Tree:
    rows = archive_dispatch_rows()
    reports = []
    for index, interval in enumerate(dispatch_intervals(rows, FIRST, count)):
        published = interval + timedelta(seconds=(publication_s or {}).get(index, 15.0))
        name, data = dispatchis(rows, interval, published, FIRST_SEQUENCE + index)
        reports.append(Report(path=write_report(root, DISPATCH_FOLDER, name, data), name=name, interval=interval,
                              published=published))
    return Tree(root=root, reports=reports, rows=rows)


def _rrp(rows: pd.DataFrame, interval: datetime, region: str = "SA1") -> float:
    chosen = rows[(pd.to_datetime(rows["SETTLEMENTDATE"]) == pd.Timestamp(interval)) & (rows["REGIONID"] == region)]
    return float(chosen["RRP"].iloc[0])


def _zip_gets(standin: NemwebStandIn, path: str) -> int:
    return len(standin.requests_for(path, "GET"))


def _latest_value(tables: LiveMarketTables, interval: datetime) -> tuple[float, datetime | None]:
    current = tables.current()
    price = current.dispatch.prices_at("SA1", interval)["ENERGY"]
    assert isinstance(current.publication, ObservedPublication)
    return price, current.publication.known_at(interval)


def test_each_file_once_a_404_then_downloadable_a_republication_and_a_restart(tmp_path: Path) -> None:
    tree = _dispatch_tree(tmp_path / "nemweb", 3)
    first, second, third = tree.reports
    store = MarketStore(tmp_path / "market")
    config = FollowerConfig(folders=(DISPATCH_FOLDER,), poll_s=0.1)
    with NemwebStandIn(tree.root, visible=()) as standin:
        source = HttpSource(standin.url, attempts=1, timeout_s=5.0, backoff_s=0.01)
        tables = LiveMarketTables(store, dispatch_price_delay_s=DELAY_S)
        ingested: list[IngestedFile] = []
        follower = LiveFollower(store, source, config, listeners=[tables.on_ingested, ingested.extend])
        follower.open()
        try:
            assert follower.step() == [] and len(tables.current().dispatch.intervals) == 0  # nothing published yet

            standin.publish(first.path)
            standin.inject(second.path, Fault(status=404, times=1, methods=frozenset({"GET"})))
            standin.publish(second.path)  # listed, but not downloadable yet
            follower.step()
            follower.drain()
            assert [f.name for f in ingested] == [first.name]
            assert _latest_value(tables, first.interval) == (_rrp(tree.rows, first.interval), first.published)
            assert [r.name for r in follower.stats().retrying] == [second.name]

            follower.step()
            follower.drain()  # the next poll tries it again: now it is there
            assert [f.name for f in ingested] == [first.name, second.name]
            assert [r.status for r in standin.requests_for(second.path, "GET")] == [404, 200]
            assert follower.stats().retrying == ()

            standin.publish(third.path)
            for _ in range(3):
                follower.step()
                follower.drain()
            assert [f.name for f in ingested] == [first.name, second.name, third.name]
            assert {r.path: _zip_gets(standin, r.path) for r in (first, third)} == {first.path: 1, third.path: 1}
            assert _zip_gets(standin, second.path) == 2  # the 404, then the file: never again

            # AEMO re-publishes the second interval (a newer publication of the same report): it replaces its rows.
            republished_at = second.published + timedelta(seconds=70)
            name, data = dispatchis(tree.rows, second.interval, republished_at, FIRST_SEQUENCE + 10, rrp_offset=100.0)
            standin.publish(write_report(tree.root, DISPATCH_FOLDER, name, data))
            follower.step()
            follower.drain()
            assert (ingested[-1].name, ingested[-1].status) == (name, IngestStatus.REPLACED)
            assert _latest_value(tables, second.interval) == (_rrp(tree.rows, second.interval) + 100.0, republished_at)
            record = store.record(second.name)
            assert record is not None and record.superseded_by == name
            assert _zip_gets(standin, second.path) == 2
            before_restart = tables.current()
        finally:
            follower.close()

        # A restart resumes from the store: the same tables at once, and nothing downloaded again.
        gets = sum(1 for r in standin.requests if r.method == "GET" and r.path.endswith(".zip"))
        restarted = LiveMarketTables(store, dispatch_price_delay_s=DELAY_S)
        assert restarted.load() == 3
        again = restarted.current()
        np.testing.assert_array_equal(again.dispatch.price, before_restart.dispatch.price)
        np.testing.assert_array_equal(again.dispatch.intervals, before_restart.dispatch.intervals)
        assert isinstance(again.publication, ObservedPublication)
        assert isinstance(before_restart.publication, ObservedPublication)
        np.testing.assert_array_equal(again.publication.published, before_restart.publication.published)
        follower = LiveFollower(store, source, config, listeners=[restarted.on_ingested])
        follower.open()
        try:
            assert follower.step() == [] and follower.drain() == []
        finally:
            follower.close()
        assert sum(1 for r in standin.requests if r.method == "GET" and r.path.endswith(".zip")) == gets


def test_a_slow_download_does_not_hold_up_the_others(tmp_path: Path) -> None:
    tree = _dispatch_tree(tmp_path / "nemweb", 2)
    slow, quick = tree.reports
    store = MarketStore(tmp_path / "market")
    with NemwebStandIn(tree.root) as standin:
        standin.inject(slow.path, Fault(delay_s=1.5, times=1, methods=frozenset({"GET"})))
        follower = LiveFollower(store, HttpSource(standin.url, attempts=1, timeout_s=10.0),
                                FollowerConfig(folders=(DISPATCH_FOLDER,), poll_s=0.1, workers=2))
        follower.open()
        try:
            follower.poll()
            assert [f.name for f in follower.settle(1.0)] == [quick.name]  # committed while the slow one downloads
            assert [f.name for f in follower.drain()] == [slow.name]
        finally:
            follower.close()


def test_p5min_and_next_day_dispatch_reports_go_into_the_store(tmp_path: Path) -> None:
    """The real P5MIN and Next_Day_Dispatch reports of data/nemweb, followed like live ones: into the store
    for the forecaster and settlement, not into the snapshot's tables."""
    store = MarketStore(tmp_path / "market")
    tables = LiveMarketTables(store, dispatch_price_delay_s=DELAY_S)
    with NemwebStandIn(NEMWEB_ROOT) as standin:
        follower = LiveFollower(store, HttpSource(standin.url, attempts=1),
                                FollowerConfig(folders=("P5_Reports", "Next_Day_Dispatch"), poll_s=0.1),
                                listeners=[tables.on_ingested])
        follower.open()
        try:
            follower.step()
            ingested = follower.drain()
        finally:
            follower.close()
    assert {(f.folder, f.tables) for f in ingested} == {("P5_Reports", ("P5MIN_REGIONSOLUTION",)),
                                                        ("Next_Day_Dispatch", ("DISPATCHLOAD",))}
    p5min = next(f for f in ingested if f.folder == "P5_Reports")
    published = datetime(2026, 10, 9, 11, 46, 20)  # its header's creation time
    assert p5min.published == published
    assert len(store.load("P5MIN_REGIONSOLUTION")) == 60 and len(store.load("DISPATCHLOAD")) == 2 * 576  # 2 days
    # The P5MIN run reaches the snapshot's tables, known at its file's publication (not its rows' LASTCHANGED).
    current = tables.current()
    assert current.p5min is not None and len(current.dispatch.intervals) == 0
    run = current.p5min.latest_run("SA1", published)
    assert run is not None and run.run_time == datetime(2026, 10, 9, 11, 50) and run.known_at == published
    assert current.p5min.latest_run("SA1", published - timedelta(seconds=1)) is None
    assert len(run.intervals) == 12


def test_the_follower_thread_serves_each_file_within_the_poll_that_found_it(tmp_path: Path) -> None:
    """Reports published one by one on a fast clock (an interval a second): each is committed, and in the
    live tables, before the follower's next poll begins; never twice; and never earlier than its publication
    on the market clock."""
    tree = _dispatch_tree(tmp_path / "nemweb", 8)
    store = MarketStore(tmp_path / "market")
    clock = FastClock(FIRST, speed=300.0)
    seen: dict[str, tuple[IngestedFile, datetime]] = {}
    tables = LiveMarketTables(store, dispatch_price_delay_s=DELAY_S)

    def record(files: Sequence[IngestedFile]) -> None:
        for ingested in files:
            assert ingested.name not in seen, f"{ingested.name} ingested twice"
            seen[ingested.name] = (ingested, clock.now())

    with NemwebStandIn(tree.root, visible=()) as standin:
        follower = LiveFollower(store, HttpSource(standin.url, attempts=1, timeout_s=5.0),
                                FollowerConfig(folders=(DISPATCH_FOLDER,), poll_s=0.5),
                                listeners=[tables.on_ingested, record])
        with follower:
            for report in tree.reports:
                clock.sleep_until(report.published)
                standin.publish(report.path)
            deadline = time.monotonic() + 10.0
            while len(seen) < len(tree.reports) and time.monotonic() < deadline:
                time.sleep(0.05)
    assert sorted(seen) == sorted(r.name for r in tree.reports)
    for report in tree.reports:
        ingested, market_time = seen[report.name]
        assert ingested.committed_poll == ingested.listed_poll, report.name
        assert ingested.published == report.published and market_time >= report.published
        assert _latest_value(tables, report.interval) == (_rrp(tree.rows, report.interval), report.published)
        assert len(standin.requests_for(report.path, "GET")) == 1


# --------------------------------------------------------------------------------------------------
# The market-data service in live mode, over gRPC
# --------------------------------------------------------------------------------------------------


def _live_settings(settings: Settings, url: str, state: Path, poll_s: float) -> Settings:
    return replace(
        settings,
        stack=replace(settings.stack, market_data_port=free_port(), state_dir=state),
        market_data=replace(settings.market_data, source="live", live_poll_s=poll_s, live_attempts=1,
                            live_folders=(DISPATCH_FOLDER, PREDISPATCH_FOLDER)),
        market_store=replace(settings.market_store, source=url))


@pytest.fixture
def live_tree(tmp_path: Path) -> Iterator[tuple[Tree, Report]]:
    """Twelve DispatchIS reports (00:05 … 01:00): 00:30 never published, 00:40 published late (00:42:30);
    and the pre-dispatch run of 00:00, published 00:00:40."""
    tree = _dispatch_tree(tmp_path / "nemweb", 12, publication_s={7: 150.0})
    tree.reports.pop(5)
    run_time = datetime(2024, 8, 1, 0, 0)
    name, data = predispatchis(predispatch_run(run_time), run_time, run_time + timedelta(seconds=40), FIRST_SEQUENCE)
    yield tree, Report(path=write_report(tree.root, PREDISPATCH_FOLDER, name, data), name=name, interval=run_time,
                       published=run_time + timedelta(seconds=40))


async def test_the_service_follows_reports_published_one_by_one(settings: Settings, tmp_path: Path,
                                                                 live_tree: tuple[Tree, Report]) -> None:
    tree, predispatch = live_tree
    published = sorted([*tree.reports, predispatch], key=lambda r: r.published)
    gap, late = FIRST + 5 * FIVE, tree.reports[6]
    assert late.interval == FIRST + 7 * FIVE
    with NemwebStandIn(tree.root, visible=()) as standin:
        configured = _live_settings(settings, standin.url, tmp_path / "state", poll_s=0.3)
        address = f"127.0.0.1:{configured.stack.market_data_port}"
        stop = asyncio.Event()
        task = asyncio.create_task(serve(configured, stop))
        await wait_healthy(address, timeout_s=30.0)
        clock = FastClock(FIRST - timedelta(seconds=30), speed=300.0)
        visible: dict[datetime, datetime] = {}  # interval -> its publication time, once the stand-in lists it
        first_served: dict[datetime, datetime] = {}

        def publish_all() -> None:
            for report in published:
                clock.sleep_until(report.published)
                if report is not predispatch:
                    visible[report.interval] = report.published
                standin.publish(report.path)

        publisher = threading.Thread(target=publish_all, daemon=True)
        publisher.start()
        try:
            while publisher.is_alive() or len(first_served) < len(tree.reports):
                as_of = clock.now()
                assert as_of < FIRST + 30 * FIVE, f"not every report was served: {sorted(first_served)}"
                try:
                    snap = await fetch_snapshot(address, "SA1", interval_ending_at_or_before(as_of) + 2 * FIVE, as_of,
                                                history_intervals=14)
                except grpc.aio.AioRpcError as exc:  # nothing published yet
                    assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
                    await asyncio.sleep(0.05)
                    continue
                history = snap.history[0]
                start = from_timestamp(history.first_interval)
                for index, price in enumerate(history.price):
                    if np.isnan(price):
                        continue
                    interval = start + index * FIVE
                    # Never before its publication: the file is listed and as_of is at or after its publication.
                    assert interval in visible and visible[interval] <= as_of, (interval, as_of)
                    assert history.known_at_unix_ms[index] == market_to_unix_ms(visible[interval])
                    first_served.setdefault(interval, as_of)
                await asyncio.sleep(0.05)

            final_as_of = FIRST + 11 * FIVE + timedelta(seconds=30)
            final = await fetch_snapshot(address, "SA1", FIRST + 12 * FIVE, final_as_of, history_intervals=12)
            by_interval = dict(zip([FIRST + k * FIVE for k in range(12)], final.history[0].quality, strict=True))
            assert by_interval[gap] == MISSING and by_interval[late.interval] == LATE
            assert [q for t, q in by_interval.items() if t not in (gap, late.interval)] == [ON_TIME] * 10
            prices = dict(zip([FIRST + k * FIVE for k in range(12)], final.history[0].price, strict=True))
            assert prices[FIRST] == _rrp(tree.rows, FIRST)
            # The gap and the late interval as a cycle sees them when they are the latest interval.
            at_gap = await fetch_snapshot(address, "SA1", gap + 2 * FIVE, gap + timedelta(seconds=10), 3)
            assert at_gap.latest_quality == LATE  # awaited until 00:30:20
            after_gap = await fetch_snapshot(address, "SA1", gap + 2 * FIVE, gap + timedelta(seconds=30), 3)
            assert after_gap.latest_quality == MISSING
            before_late = await fetch_snapshot(address, "SA1", late.interval + 2 * FIVE,
                                               late.interval + timedelta(seconds=60), 3)
            assert before_late.latest_quality == LATE and np.isnan(before_late.history[0].price[-1])
            (run,) = {p.run_time.seconds for p in final.predispatch}
            assert run == market_to_unix_ms(datetime(2024, 8, 1, 0, 0)) // 1000
            assert {p.known_at_unix_ms for p in final.predispatch} == {market_to_unix_ms(predispatch.published)}
            no_run_yet = await fetch_snapshot(address, "SA1", FIRST + FIVE, FIRST - timedelta(seconds=290),
                                              history_intervals=1)
            assert len(no_run_yet.predispatch) == 0
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)
            publisher.join(timeout=30)
        for report in published:
            assert len(standin.requests_for(report.path, "GET")) == 1, report.name

        # Restarted, the service serves the same snapshot from its store without downloading anything again.
        gets = len(standin.requests)
        stop = asyncio.Event()
        task = asyncio.create_task(serve(configured, stop))
        try:
            await wait_healthy(address, timeout_s=30.0)
            again = await fetch_snapshot(address, "SA1", FIRST + 12 * FIVE, final_as_of, history_intervals=12)
            assert again == final
            await asyncio.sleep(1.0)  # a few polls
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)
        assert all(not r.path.endswith(".zip") for r in standin.requests[gets:])


@pytest.mark.stack
async def test_up_on_live_market_data_serves_what_the_source_publishes(settings: Settings, tmp_path: Path) -> None:
    """`vpp up --market-data live --source URL`: the settings reach the market-data child through the effective
    configuration; it follows the stand-in and serves the reports as they appear (over TLS with a token)."""
    tree = _dispatch_tree(tmp_path / "nemweb", 3)
    state = tmp_path / "state"
    with NemwebStandIn(tree.root, visible=()) as standin:
        configured = with_market_data(replace(settings, stack=replace(settings.stack, state_dir=state,
                                                                      market_data_port=free_port())),
                                      "live", standin.url)
        configured = replace(configured, market_data=replace(configured.market_data, live_poll_s=0.3,
                                                             live_folders=(DISPATCH_FOLDER,)))
        with LocalStack(configured, parts={"market-data"}, ui=False) as stack:
            security = operator_security(state, environ={})
            address = stack.market_data_address
            for report in tree.reports:
                standin.publish(report.path)
            last = tree.reports[-1]
            deadline = time.monotonic() + 60.0
            while True:
                try:
                    snap = await fetch_snapshot(address, "SA1", last.interval + FIVE, last.published,
                                                history_intervals=3, security=security)
                    # Downloads run in parallel: a later report may be committed before an earlier one.
                    if not np.isnan(np.asarray(snap.history[0].price)).any():
                        break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
                assert time.monotonic() < deadline, "the live reports were not served"
                await asyncio.sleep(0.2)
        assert list(snap.history[0].price) == [_rrp(tree.rows, r.interval) for r in tree.reports]
        assert list(snap.history[0].known_at_unix_ms) == [market_to_unix_ms(r.published) for r in tree.reports]
    held = MarketStore.from_settings(configured).current_reports(["DISPATCHIS"])
    assert sorted(record.name for record in held) == sorted(r.name for r in tree.reports)


LIVE_HISTORY_INTERVALS = 144
LIVE_HORIZON_INTERVALS = 48


def _with_price_limits_of_today(rules: MarketRules) -> MarketRules:
    """``rules`` with price limits for the financial year of today's trading day when no configured year
    covers it. The product never guesses a year (a day no source covers is an error: tests/test_settings.py);
    this test is about the live clock, so it configures today's year itself, with the last configured values."""
    today = trading_day(live_market_time(datetime.now(UTC)) + timedelta(minutes=5))
    fy_start = today.year if today.month >= 7 else today.year - 1
    if any(cap.fy_start == fy_start for cap in rules.price_caps):
        return rules
    last = max(rules.price_caps, key=lambda cap: cap.fy_start)
    return replace(rules, price_caps=(*rules.price_caps, replace(last, fy_start=fy_start)))


# Seconds of an interval the live-clock scenario needs before its cycle starts (a loaded 2-core machine takes
# about a minute to start the stack and ingest the reports).
CROSSING_MARGIN_S = 180.0


@pytest.mark.stack
async def test_a_cycle_on_the_market_clock_decides_on_live_data(settings: Settings, tmp_path: Path, server_url: str,
                                                                sqs_endpoint: str) -> None:
    """`[cycle] clock = "live"`: a cycle started without a decision time decides at AEST now, on the live
    reports published up to now (real prices relabelled to the last twelve hours, each published as AEMO
    does, 4 min 20 s before its interval ends), through the production workflow, workers and services, up to
    a validated bid. (What the simulated NEM does with it is not asserted: it clears against its January 2021
    data, which has no price for today's intervals.) The reports carry the regions' FCAS local dispatch
    (DISPATCH.REGIONSUM) too: the cycle's plan expects that depth (its archived optimisation request carries
    the caps of every FCAS product it forecast)."""
    # The reports are written up to the interval in force now: the scenario (stack start, ingestion, the cycle's
    # start) must not cross the next 5-minute boundary, or the cycle would decide after an interval the reports do
    # not hold. With less than CROSSING_MARGIN_S left in this interval, start just after the next boundary.
    left_s = (interval_ending_at_or_before(live_market_time(datetime.now(UTC))) + FIVE
              - live_market_time(datetime.now(UTC))).total_seconds()
    if left_s < CROSSING_MARGIN_S:
        await asyncio.sleep(left_s + 1.0)
    now = live_market_time(datetime.now(UTC))
    latest = interval_ending_at_or_before(now)
    rows = archive_dispatch_rows()
    region_sums = archive_region_sum_rows()
    real = dispatch_intervals(rows, FIRST, LIVE_HISTORY_INTERVALS)
    root = tmp_path / "nemweb"
    for index, interval in enumerate(real):
        relabelled = latest - (LIVE_HISTORY_INTERVALS - 1 - index) * FIVE
        name, data = dispatchis(rows, interval, relabelled - timedelta(seconds=260), FIRST_SEQUENCE + index,
                                as_interval=relabelled, region_sums=region_sums)
        write_report(root, DISPATCH_FOLDER, name, data)
    with NemwebStandIn(root) as standin, temporary_database(server_url) as database_url:
        live = with_market_data(replace(settings, database_url=database_url), "live", standin.url)
        live = replace(live,
                       market=_with_price_limits_of_today(live.market),
                       market_data=replace(live.market_data, live_poll_s=0.5, live_folders=(DISPATCH_FOLDER,)),
                       cycle=replace(live.cycle, history_intervals=LIVE_HISTORY_INTERVALS,
                                     horizon_intervals=LIVE_HORIZON_INTERVALS))
        async with live_stack(live, sqs_endpoint) as stack:
            address = f"127.0.0.1:{stack.settings.stack.market_data_port}"
            deadline = time.monotonic() + 120.0
            while True:  # the follower backfills what the folder lists
                with contextlib.suppress(grpc.aio.AioRpcError):
                    snap = await fetch_snapshot(address, "SA1", latest + FIVE, now, history_intervals=1)
                    if snap.latest_quality == ON_TIME:
                        break
                assert time.monotonic() < deadline, "the live reports were not ingested"
                await asyncio.sleep(0.5)
            config = replace(cycle_config(stack.settings.cycle), search_attributes=False)
            assert config.clock == "live"
            before = live_market_time(datetime.now(UTC))
            handle = await stack.client.start_workflow(
                AutobidderCycle.run, CycleInput(unit_id=live.cycle.unit_id, region="SA1", config=config),
                id=f"live-clock-{uuid.uuid4().hex[:8]}", task_queue=stack.settings.stack.task_queue,
                execution_timeout=timedelta(minutes=5))
            deadline = time.monotonic() + 120.0
            while True:
                state = await handle.query(AutobidderCycle.state)
                if any(fact.stage == "bid" for fact in state.facts):
                    break
                assert time.monotonic() < deadline, f"the cycle did not build a bid: {state}"
                await asyncio.sleep(0.5)
            after = live_market_time(datetime.now(UTC))
            with contextlib.suppress(Exception):
                await handle.terminate("test over: the bid was built")
            requests = [entry.key for entry in stack.archive.list_cycle(state.cycle_id)
                        if entry.label == "optimisation-request"]
            assert requests, "the cycle archived no optimisation request"
            request = stack.archive.get(requests[-1])
            assert isinstance(request, worker_pb2.OptimisationRequest)
    # The plan expected the FCAS depth of the live reports: a cap for every FCAS product it forecast.
    caps = request_enablement_caps(request)
    forecast_fcas = {forecast.product for forecast in request.forecasts if forecast.product != "ENERGY"}
    assert forecast_fcas and set(caps) == forecast_fcas
    assert all(cap.shape == (LIVE_HORIZON_INTERVALS,) and bool(np.all(cap >= 0.0)) for cap in caps.values())
    facts = {fact.stage: fact.summary for fact in state.facts}
    # The cycle decided at AEST now: its latest interval is the one ending before its start, on the market clock.
    latest_seen = next(moment for moment in {interval_ending_at_or_before(before), interval_ending_at_or_before(after)}
                       if f"latest {moment.isoformat()} ON_TIME" in facts["fetch"])
    dispatch_interval = datetime.fromisoformat(state.dispatch_interval or "")
    assert dispatch_interval - latest_seen in (2 * FIVE, 3 * FIVE), (dispatch_interval, latest_seen)
    assert "no bid passed validation" not in facts["bid"], facts["bid"]
