"""The FCAS depth the live cycle plans with: the market snapshot carries the region's local dispatch
(DISPATCHREGIONSUM; algorithms/market/as_of.py, from the market store and from AEMO's live DispatchIS
reports, aemo/live_market.py), known as of the snapshot only, and the live cycle's optimisation activity
and the backtest expect the same caps from it through one function
(algorithms/market/depth_plan.snapshot_enablement_caps_mw). Without DISPATCHREGIONSUM (the embedded
January 2021) the snapshot carries none and the plan is a price-taker's, as before."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from activities.cycle import CycleActivities
from activities.cycle_facts import CycleConfig, OptimisationTaskInput
from aemo.archive_files import read_file
from aemo.live_market import LiveMarketTables
from aemo.mms import load_market_data
from aemo.store import MarketStore
from aemo.store_prices import load_store_prices
from algorithms.common.nem_time import from_timestamp, market_to_unix_ms
from algorithms.common.products import ENERGY, is_fcas
from algorithms.common.replay_clock import cycle_timeline
from algorithms.market.as_of import build_snapshot, publication_model
from algorithms.market.depth_plan import (
    DepthEstimatePolicy,
    depth_policy,
    plan_enablement_caps_mw,
    snapshot_enablement_caps_mw,
    snapshot_local_dispatch,
)
from algorithms.market.optimise import request_enablement_caps
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from archive import LocalArchive
from backtest.engine import expected_caps
from settings import Settings, load_settings
from stack.schedule import cycle_config
from tests.aemo_fixtures import archive_zip
from tests.live_reports import mms_csv, zipped
from tests.test_optimise import forecast_result
from vpp.v1 import market_data_pb2

REGION = "SA1"
# A decision at 12:00:30 bids for the interval ending 12:10; the latest interval (ending 12:00) was published
# at 12:00:20 (the configured 20 s delay), so it is known.
AS_OF = datetime(2024, 8, 3, 12, 0, 30)
LATEST = datetime(2024, 8, 3, 12, 0)
HISTORY = 2016


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(environ={})


@pytest.fixture(scope="module")
def august(tmp_path_factory: pytest.TempPathFactory) -> tuple[DispatchPrices, PredispatchPrices]:
    """(dispatch, pre-dispatch) of SA1, 1–3 August 2024, with the region's FCAS local dispatch."""
    store = MarketStore(tmp_path_factory.mktemp("live-depth") / "market")
    for table in ("DISPATCHPRICE", "DISPATCHREGIONSUM"):
        store.ingest_path(archive_zip("2024_08", table), tables=[table])
    loaded = load_store_prices(store, regions=[REGION], start=datetime(2024, 8, 1, 0, 5), end=datetime(2024, 8, 4))
    assert loaded.dispatch.region_enabled_mw is not None
    return loaded.dispatch, loaded.predispatch


def _dispatch_interval(settings: Settings, as_of: datetime) -> datetime:
    cycle = settings.cycle
    return cycle_timeline(as_of, market_data_cutoff_s=cycle.market_data_cutoff_s,
                          gate_closure_margin_s=cycle.gate_closure_margin_s).dispatch_interval


def _snapshot(settings: Settings, dispatch: DispatchPrices, predispatch: PredispatchPrices,
              as_of: datetime = AS_OF, history: int = HISTORY) -> market_data_pb2.MarketSnapshot:
    return build_snapshot(dispatch, predispatch, region=REGION, dispatch_interval=_dispatch_interval(settings, as_of),
                          as_of=as_of, history_intervals=history, publication=publication_model(settings.market_data))


def _values(snapshot: market_data_pb2.MarketSnapshot) -> dict[str, np.ndarray]:
    return {history.product: np.asarray(history.enabled_mw) for history in snapshot.local_dispatch}


# --------------------------------------------------------------------------------------------------
# The snapshot carries the local dispatch, as of its as-of
# --------------------------------------------------------------------------------------------------


def test_the_snapshot_carries_the_local_dispatch_the_data_has(
        settings: Settings, august: tuple[DispatchPrices, PredispatchPrices]) -> None:
    dispatch, predispatch = august
    snapshot = _snapshot(settings, dispatch, predispatch)
    fcas = [product for product in dispatch.products if is_fcas(product)]
    assert [history.product for history in snapshot.local_dispatch] == fcas
    price_history = snapshot.history[0]
    enabled_at_latest = dispatch.enabled_at(REGION, LATEST)
    assert enabled_at_latest is not None
    for history in snapshot.local_dispatch:
        assert history.first_interval == price_history.first_interval and len(history.enabled_mw) == HISTORY
        assert history.enabled_mw[-1] == enabled_at_latest[history.product]
        # Known with the interval's dispatch prices: the same publication time.
        assert history.known_at_unix_ms[-1] == price_history.known_at_unix_ms[-1] == market_to_unix_ms(
            LATEST + timedelta(seconds=settings.market_data.dispatch_price_delay_s))
    # Before the data starts (1 August 00:05) nothing is known.
    first = from_timestamp(price_history.first_interval)
    before_data = int((datetime(2024, 8, 1, 0, 5) - first) / timedelta(minutes=5))
    raise_reg = snapshot.local_dispatch[fcas.index("RAISEREG")]
    assert np.all(np.isnan(raise_reg.enabled_mw[:before_data])) and not any(raise_reg.known_at_unix_ms[:before_data])
    assert np.all(np.isfinite(raise_reg.enabled_mw[before_data:]))

    # Without DISPATCHREGIONSUM: no local dispatch, and the rest of the snapshot is unchanged.
    plain = _snapshot(settings, replace(dispatch, region_enabled_mw=None), predispatch)
    assert not plain.local_dispatch and snapshot_local_dispatch(plain) is None
    del snapshot.local_dispatch[:]
    assert plain == snapshot


def test_the_embedded_january_2021_carries_no_local_dispatch(settings: Settings) -> None:
    dispatch, predispatch = load_market_data(settings.market_data.data_dir)
    assert dispatch.region_enabled_mw is None
    snapshot = _snapshot(settings, dispatch, predispatch, as_of=datetime(2021, 1, 15, 17, 30, 30))
    assert not snapshot.local_dispatch
    assert expected_caps(settings, snapshot, datetime(2021, 1, 15, 17, 40), 288) is None


def test_the_local_dispatch_is_what_was_known_at_as_of(
        settings: Settings, august: tuple[DispatchPrices, PredispatchPrices]) -> None:
    dispatch, predispatch = august
    snapshot = _snapshot(settings, dispatch, predispatch)
    # Later local dispatch changes nothing.
    assert dispatch.region_enabled_mw is not None
    tampered = dispatch.region_enabled_mw.copy()
    tampered[:, dispatch.intervals > np.datetime64(LATEST, "s"), :] = 9999.0
    assert _snapshot(settings, replace(dispatch, region_enabled_mw=tampered), predispatch) == snapshot
    # 10 s before the latest interval's publication, its local dispatch is not known yet; the one before is.
    early = _snapshot(settings, dispatch, predispatch, as_of=LATEST + timedelta(seconds=10))
    for history in early.local_dispatch:
        assert np.isnan(history.enabled_mw[-1]) and history.known_at_unix_ms[-1] == 0
        assert np.isfinite(history.enabled_mw[-2]) and history.known_at_unix_ms[-2] > 0
    # A malformed snapshot is refused with the reason.
    broken = market_data_pb2.MarketSnapshot()
    broken.CopyFrom(snapshot)
    broken.local_dispatch[1].enabled_mw.append(1.0)
    with pytest.raises(ValueError, match="does not cover the intervals"):
        snapshot_local_dispatch(broken)


# --------------------------------------------------------------------------------------------------
# One function: the backtest and the live cycle's optimisation activity
# --------------------------------------------------------------------------------------------------


def _activities(settings: Settings, archive: LocalArchive) -> CycleActivities:
    # The optimisation request is built from the archive alone: no database, SQS or market-data service.
    return CycleActivities(replace(settings, database_url="postgresql://unused"), archive=archive, sqs=None,
                           queues=None)  # type: ignore[arg-type]


def _task(settings: Settings, archive: LocalArchive, snapshot: market_data_pb2.MarketSnapshot,
          first_interval: datetime, config: CycleConfig) -> OptimisationTaskInput:
    """The optimisation task of a cycle deciding from ``snapshot``: flat forecasts of every product."""
    horizon = config.horizon_intervals
    keys = []
    for product in snapshot.products:
        price = np.full(horizon, 80.0 if product == ENERGY else 12.0)
        keys.append(archive.put(forecast_result(product, first_interval, price, price, price),
                                cycle_id="c", label=f"forecast-result/{product}"))
    snapshot_key = archive.put(snapshot, cycle_id="c", label="market-snapshot")
    return OptimisationTaskInput(cycle_id="c", unit_id=settings.battery_units[0].unit_id, forecast_keys=tuple(keys),
                                 first_interval=first_interval.isoformat(), state_of_charge_mwh=97.0, net_mw=0.0,
                                 config=config, snapshot_key=snapshot_key)


async def test_the_live_request_and_the_backtest_expect_the_same_caps(
        settings: Settings, august: tuple[DispatchPrices, PredispatchPrices], tmp_path: Path) -> None:
    dispatch, predispatch = august
    snapshot = _snapshot(settings, dispatch, predispatch)
    first = _dispatch_interval(settings, AS_OF)
    config = cycle_config(settings.cycle, market_depth=settings.market_depth)
    assert config.plan_with_expected_depth and config.planning_cap_factor == settings.market_depth.planning_cap_factor
    archive = LocalArchive(tmp_path / "archive")
    activities = _activities(settings, archive)
    task = _task(settings, archive, snapshot, first, config)

    live = request_enablement_caps(await activities._optimisation_request(task))
    backtest = expected_caps(settings, snapshot, first, config.horizon_intervals)
    assert backtest is not None
    fcas = {product for product in snapshot.products if is_fcas(product)}
    assert set(live) == set(backtest) == fcas
    for product in fcas:
        np.testing.assert_array_equal(live[product], backtest[product])
        assert live[product].shape == (config.horizon_intervals,) and bool(np.all(live[product] >= 0.0))
    # The same as the estimate from the market data itself, the whole week known by as-of.
    policy = DepthEstimatePolicy(cap_factor=settings.market_depth.planning_cap_factor)
    reference = plan_enablement_caps_mw(dispatch, REGION, AS_OF, first, config.horizon_intervals,
                                        settings.market_depth.fcas_enablement_share, policy)
    assert reference is not None and set(reference) == fcas
    for product in fcas:
        np.testing.assert_array_equal(reference[product], backtest[product])

    # Not asked for, a task naming no snapshot (recorded before) or a cycle started before the setting
    # existed: a price-taker's request, bit for bit.
    price_taker = await activities._optimisation_request(replace(task, snapshot_key=""))
    assert not price_taker.enablement_caps
    off = replace(config, plan_with_expected_depth=False)
    old_fields = {name: getattr(config, name) for name in CycleConfig.__dataclass_fields__
                  if name not in ("plan_with_expected_depth", "fcas_enablement_share", "planning_cap_factor")}
    for other in (off, CycleConfig(**old_fields)):
        request = await activities._optimisation_request(replace(task, config=other))
        assert request.SerializeToString(deterministic=True) == price_taker.SerializeToString(deterministic=True)


async def test_on_the_embedded_market_the_live_request_carries_no_caps(settings: Settings, tmp_path: Path) -> None:
    dispatch, predispatch = load_market_data(settings.market_data.data_dir)
    as_of = datetime(2021, 1, 15, 17, 30, 30)
    snapshot = _snapshot(settings, dispatch, predispatch, as_of=as_of)
    archive = LocalArchive(tmp_path / "archive")
    activities = _activities(settings, archive)
    config = cycle_config(settings.cycle, market_depth=settings.market_depth)
    task = _task(settings, archive, snapshot, _dispatch_interval(settings, as_of), config)
    request = await activities._optimisation_request(task)
    assert not request.enablement_caps
    unasked = await activities._optimisation_request(replace(task, snapshot_key=""))
    assert request.SerializeToString(deterministic=True) == unasked.SerializeToString(deterministic=True)


def test_a_week_of_history_is_the_estimate_s_whole_look_back(settings: Settings) -> None:
    """Ten days of data: the snapshot's 2016 intervals are exactly the 7-day look-back of the estimate on the
    market data itself, so the caps are equal bit for bit; a shorter history shortens the look-back."""
    times = np.datetime64(datetime(2024, 8, 1, 0, 5), "s") + np.timedelta64(300, "s") * np.arange(10 * 288)
    products = ("ENERGY", "RAISEREG", "LOWER6SEC")
    rng = np.random.default_rng(15)
    day = (times.astype("datetime64[D]") - times[0].astype("datetime64[D]")).astype(np.int64)
    # Each day its own level, so a look-back one interval too long or short shows.
    enabled = np.stack([np.full(times.size, np.nan), 20.0 + 10.0 * day + rng.uniform(0, 5, times.size),
                        60.0 + rng.uniform(0, 5, times.size)], axis=1)
    dispatch = DispatchPrices(intervals=times, regions=(REGION,), products=products,
                              price=np.full((1, times.size, 3), 50.0), region_enabled_mw=enabled[None, :, :])
    predispatch = PredispatchPrices.empty(products)
    policy = DepthEstimatePolicy(cap_factor=1.5)
    for as_of in (datetime(2024, 8, 9, 12, 0, 30), datetime(2024, 8, 9, 23, 55, 20), datetime(2024, 8, 10, 0, 4, 59)):
        first = _dispatch_interval(settings, as_of)
        snapshot = _snapshot(settings, dispatch, predispatch, as_of=as_of)
        from_snapshot = snapshot_enablement_caps_mw(snapshot, first, 288, 0.5, policy)
        from_market = plan_enablement_caps_mw(dispatch, REGION, as_of, first, 288, 0.5, policy)
        assert from_snapshot is not None and from_market is not None and set(from_snapshot) == {"RAISEREG", "LOWER6SEC"}
        for product, caps in from_market.items():
            np.testing.assert_array_equal(from_snapshot[product], caps)
    short_history = _snapshot(settings, dispatch, predispatch, as_of=as_of, history=288)
    short = snapshot_enablement_caps_mw(short_history, first, 288, 0.5, policy)
    assert short is not None and not np.array_equal(short["RAISEREG"], from_market["RAISEREG"])


def test_the_caps_follow_the_share_and_the_factor(
        settings: Settings, august: tuple[DispatchPrices, PredispatchPrices]) -> None:
    dispatch, predispatch = august
    snapshot = _snapshot(settings, dispatch, predispatch)
    first = _dispatch_interval(settings, AS_OF)
    base = snapshot_enablement_caps_mw(snapshot, first, 48, 0.5, depth_policy(True, 1.0))
    doubled = snapshot_enablement_caps_mw(snapshot, first, 48, 0.5, depth_policy(True, 2.0))
    assert base is not None and doubled is not None
    np.testing.assert_allclose(doubled["RAISEREG"], 2.0 * base["RAISEREG"], rtol=1e-12)
    assert snapshot_enablement_caps_mw(snapshot, first, 48, 0.5, depth_policy(False, 1.0)) is None
    with pytest.raises(ValueError, match="share"):
        snapshot_enablement_caps_mw(snapshot, first, 48, 1.5, depth_policy(True, 1.0))


# --------------------------------------------------------------------------------------------------
# Live: AEMO's DispatchIS reports carry DISPATCHREGIONSUM
# --------------------------------------------------------------------------------------------------


def _archive_rows(table: str, sub_type: str) -> tuple[int, pd.DataFrame]:
    (report,) = read_file(archive_zip("2024_08", table))
    mms = report.table("DISPATCH", sub_type)
    return mms.version, mms.frame


def test_live_dispatchis_reports_give_the_snapshot_its_local_dispatch(settings: Settings, tmp_path: Path) -> None:
    price_version, prices = _archive_rows("DISPATCHPRICE", "PRICE")
    sum_version, region_sums = _archive_rows("DISPATCHREGIONSUM", "REGIONSUM")
    store = MarketStore(tmp_path / "market")
    intervals = [datetime(2024, 8, 1, 0, 5) + timedelta(minutes=5 * k) for k in range(4)]
    published_at = {}
    for sequence, interval in enumerate(intervals):
        published = interval + timedelta(seconds=15 + sequence)  # on time (the delay is 20 s)
        published_at[interval] = published
        rows = [frame[pd.to_datetime(frame["SETTLEMENTDATE"]) == pd.Timestamp(interval)].copy()
                for frame in (prices, region_sums)]
        stem = f"PUBLIC_DISPATCHIS_{interval:%Y%m%d%H%M}_{425_000_000 + sequence:016d}"
        data = mms_csv("DISPATCHIS", published, 425_000_000 + sequence,
                       [("DISPATCH", "PRICE", price_version, rows[0]),
                        ("DISPATCH", "REGIONSUM", sum_version, rows[1])])
        store.ingest_bytes(zipped(stem + ".CSV", data), stem + ".zip")
    tables = LiveMarketTables(store, dispatch_price_delay_s=settings.market_data.dispatch_price_delay_s)
    assert tables.load() == len(intervals)
    live = tables.current()
    assert live.dispatch.region_enabled_mw is not None
    last = intervals[-1]
    expected = region_sums[(pd.to_datetime(region_sums["SETTLEMENTDATE"]) == pd.Timestamp(last))
                           & (region_sums["REGIONID"] == REGION)]
    snapshot = build_snapshot(live.dispatch, live.predispatch, region=REGION,
                              dispatch_interval=last + timedelta(minutes=10), as_of=last + timedelta(seconds=30),
                              history_intervals=len(intervals), publication=live.publication)
    values = _values(snapshot)
    assert set(values) == {product for product in live.dispatch.products if is_fcas(product)}
    assert values["RAISEREG"][-1] == float(expected["RAISEREGLOCALDISPATCH"].iloc[0])
    assert all(bool(np.all(np.isfinite(series))) for series in values.values())
    raise_reg = next(history for history in snapshot.local_dispatch if history.product == "RAISEREG")
    assert list(raise_reg.known_at_unix_ms) == [market_to_unix_ms(published_at[moment]) for moment in intervals]
    # The file-backed store gives the same local dispatch.
    stored = load_store_prices(store, regions=[REGION], start=intervals[0], end=last).dispatch
    assert stored.region_enabled_mw is not None
    np.testing.assert_array_equal(live.dispatch.region_enabled_mw[live.dispatch.region_index(REGION)],
                                  stored.region_enabled_mw[stored.region_index(REGION)])
