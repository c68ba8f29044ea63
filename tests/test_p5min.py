"""P5MIN as a table of the platform: loaders (AEMO's files, the store, the reduced extracts), the as-of
look-up, the snapshot and the forecast request carrying the run known at decision time."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from aemo.errors import MmsFormatError
from aemo.mms import load_market_data
from aemo.p5min import load_p5min_files, load_p5min_store, p5min_prices
from aemo.store import MarketStore
from algorithms.common.nem_time import from_timestamp, to_timestamp
from algorithms.market.as_of import PublicationModel, build_snapshot
from algorithms.market.cycle_requests import forecast_request
from algorithms.market.prices import P5minPrices, PredispatchPrices
from tests.p5min_extracts import EXTRACTS, load_extracts
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2

REPO = Path(__file__).resolve().parent.parent
REPORT = (REPO / "data" / "nemweb" / "Reports" / "Current" / "P5_Reports"
          / "PUBLIC_P5MIN_202610091150_20261009114620.zip")
RUN_0400 = datetime(2026, 10, 9, 4, 0)
FIVE = timedelta(minutes=5)


@cache
def extracts() -> P5minPrices:
    return load_extracts()


@cache
def report() -> P5minPrices:
    return load_p5min_files([REPORT])


def test_extracts_are_twenty_runs_of_twelve_intervals_known_at_their_publication() -> None:
    table = extracts()
    assert table.regions == ("QLD1",) and table.products == ("ENERGY",)
    assert len(table.run_time) == 20
    assert bool(np.all(table.row_stop - table.row_start == 12))
    # Known at the publication stamp of the file name, 4-5 minutes before the run's first interval ends.
    assert table.known_at[0] == np.datetime64("2026-10-09T03:55:46")
    lead = (table.run_time - table.known_at).astype(np.int64)
    assert bool(np.all((lead > 180) & (lead < 300)))


def test_latest_run_is_known_only_from_its_publication() -> None:
    table = extracts()
    assert table.latest_run("QLD1", datetime(2026, 10, 9, 3, 55, 45)) is None
    run = table.latest_run("QLD1", datetime(2026, 10, 9, 3, 55, 46))
    assert run is not None and run.run_time == RUN_0400
    # 04:00:30: run 04:05 was published at 04:00:52, so run 04:00 is still the newest known.
    run = table.latest_run("QLD1", datetime(2026, 10, 9, 4, 0, 30))
    assert run is not None and run.run_time == RUN_0400
    assert run.intervals[0] == np.datetime64(RUN_0400) and len(run.intervals) == 12
    assert run.price[0, 0] == pytest.approx(256.83164)
    run = table.latest_run("QLD1", datetime(2026, 10, 9, 4, 0, 52))
    assert run is not None and run.run_time == RUN_0400 + FIVE
    with pytest.raises(KeyError, match="unknown region 'SA1'"):
        table.latest_run("SA1", RUN_0400)


def test_aemo_report_gives_every_region_and_fcas_product_known_at_lastchanged() -> None:
    table = report()
    assert table.regions == ("NSW1", "QLD1", "SA1", "TAS1", "VIC1")
    assert table.products[0] == "ENERGY"
    assert {"RAISE6SEC", "LOWERREG", "RAISE1SEC", "LOWER1SEC"} <= set(table.products)
    assert table.known_at.tolist() == [np.datetime64("2026-10-09T11:46:18")]
    run = table.latest_run("QLD1", datetime(2026, 10, 9, 11, 47))
    assert run is not None and run.price.shape == (12, len(table.products))
    assert run.price[0, 0] == pytest.approx(-5.44)
    assert bool(np.isfinite(run.price).all())


def test_store_gives_the_same_table_as_the_file(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    store.ingest_path(REPORT)
    from_store = load_p5min_store(store, regions=["SA1", "QLD1"])
    from_file = report()
    assert from_store.regions == ("QLD1", "SA1")
    assert set(from_store.products) == set(from_file.products)
    for region in from_store.regions:
        stored = from_store.latest_run(region, datetime(2026, 10, 9, 12, 0))
        filed = from_file.latest_run(region, datetime(2026, 10, 9, 12, 0))
        assert stored is not None and filed is not None
        assert stored.known_at == filed.known_at
        np.testing.assert_array_equal(stored.intervals, filed.intervals)
        for product in from_store.products:
            np.testing.assert_array_equal(stored.price[:, from_store.products.index(product)],
                                          filed.price[:, from_file.products.index(product)])
    with pytest.raises(MmsFormatError, match="holds no P5MIN_REGIONSOLUTION rows"):
        load_p5min_store(MarketStore(tmp_path / "empty"))


def test_bad_rows_are_clear_errors() -> None:
    rows = pd.DataFrame({"RUN_DATETIME": [RUN_0400] * 2, "INTERVAL_DATETIME": [RUN_0400] * 2,
                         "REGIONID": ["QLD1"] * 2, "RRP": [1.0, 2.0], "_published": [RUN_0400 - FIVE] * 2})
    with pytest.raises(MmsFormatError, match="duplicate rows for one run, region and period"):
        p5min_prices(rows, "rows")
    with pytest.raises(MmsFormatError, match=r"lack the column.*RRP"):
        p5min_prices(rows.drop(columns="RRP"), "rows")
    with pytest.raises(MmsFormatError, match="cannot tell when the run became known"):
        p5min_prices(rows.drop(columns="_published").iloc[:1], "rows")
    # The reduced extracts are not AEMO's file format: AEMO's reader refuses them.
    with pytest.raises(MmsFormatError):
        load_p5min_files([sorted(EXTRACTS.glob("*.CSV"))[0]])


def test_intervention_rows_are_not_the_pricing_run() -> None:
    rows = pd.DataFrame({"RUN_DATETIME": [RUN_0400] * 2, "INTERVAL_DATETIME": [RUN_0400] * 2,
                         "REGIONID": ["QLD1"] * 2, "RRP": [1.0, 2.0], "INTERVENTION": [1, 0],
                         "LASTCHANGED": [RUN_0400 - FIVE] * 2})
    run = p5min_prices(rows, "rows").latest_run("QLD1", RUN_0400)
    assert run is not None and run.price[:, 0].tolist() == [2.0]


def test_first_interval_prices_stand_in_for_dispatch_prices() -> None:
    series = extracts().first_interval_prices()
    assert len(series.intervals) == 20
    assert series.prices_at("QLD1", RUN_0400)["ENERGY"] == pytest.approx(256.83164)


@cache
def _january() -> tuple[object, PredispatchPrices]:
    return load_market_data(REPO / "data" / "nem")


def _snapshot(table: P5minPrices | None, as_of: datetime) -> market_data_pb2.MarketSnapshot:
    history = table.first_interval_prices() if table is not None else extracts().first_interval_prices()
    return build_snapshot(history, PredispatchPrices.empty(history.products), region="QLD1",
                          dispatch_interval=datetime(2026, 10, 9, 4, 35), as_of=as_of, history_intervals=12,
                          publication=PublicationModel(dispatch_price_delay_s=20.0), p5min=table)


def test_snapshot_carries_the_newest_run_known_at_as_of_and_the_request_forwards_it() -> None:
    as_of = datetime(2026, 10, 9, 4, 25, 30)
    snapshot = _snapshot(extracts(), as_of)
    assert [forecast.product for forecast in snapshot.p5min] == ["ENERGY"]
    energy = snapshot.p5min[0]
    assert from_timestamp(energy.run_time) == datetime(2026, 10, 9, 4, 25)
    assert len(energy.interval) == len(energy.price) == 12
    assert from_timestamp(energy.interval[0]) == datetime(2026, 10, 9, 4, 25)
    assert snapshot.p5min[0].known_at_unix_ms <= int(to_timestamp(as_of).ToMilliseconds())
    request = forecast_request(snapshot, "ENERGY", request_id="r", decision_time=as_of,
                               first_interval=datetime(2026, 10, 9, 4, 35), horizon_intervals=12,
                               quantiles=[0.1, 0.5, 0.9],
                               algorithm=common_pb2.AlgorithmRef(name="sarx-quantile", version="3"))
    assert request.p5min == energy
    # Without a P5MIN table the snapshot carries none and the request's hash is what it was before.
    without = _snapshot(None, as_of)
    assert len(without.p5min) == 0
    plain = forecast_request(without, "ENERGY", request_id="r", decision_time=as_of,
                             first_interval=datetime(2026, 10, 9, 4, 35), horizon_intervals=12,
                             quantiles=[0.1, 0.5, 0.9],
                             algorithm=common_pb2.AlgorithmRef(name="sarx-quantile", version="3"))
    assert not plain.HasField("p5min")


def test_snapshot_notes_a_table_without_a_run_known_yet() -> None:
    snapshot = _snapshot(extracts(), datetime(2026, 10, 9, 3, 50))
    assert len(snapshot.p5min) == 0
    assert any("no P5MIN run for QLD1 known at as_of" in note for note in snapshot.quality_notes)


def test_messages_archived_before_p5min_still_parse() -> None:
    """Field numbers were only added: a snapshot and a request serialised without P5MIN parse unchanged, and
    the new fields are empty."""
    dispatch, predispatch = _january()
    snapshot = build_snapshot(dispatch, predispatch, region="SA1",  # type: ignore[arg-type]
                              dispatch_interval=datetime(2021, 1, 15, 17, 5), as_of=datetime(2021, 1, 15, 16, 55, 30),
                              history_intervals=288, publication=PublicationModel(dispatch_price_delay_s=20.0))
    archived = snapshot.SerializeToString(deterministic=True)
    parsed = market_data_pb2.MarketSnapshot.FromString(archived)
    assert parsed == snapshot and len(parsed.p5min) == 0
    request = worker_pb2.ForecastRequest(product="ENERGY", history=snapshot.history[0])
    assert not worker_pb2.ForecastRequest.FromString(request.SerializeToString()).HasField("p5min")


@hyp_settings(max_examples=40, deadline=None)
@given(seconds=st.integers(0, 2 * 3600))
def test_no_run_published_after_as_of_reaches_the_snapshot(seconds: int) -> None:
    """The as-of contract for P5MIN: the run carried is the newest by run time among those published by as_of;
    tampering with every run published later changes nothing."""
    table = extracts()
    as_of = datetime(2026, 10, 9, 3, 50) + timedelta(seconds=seconds)
    moment = np.datetime64(as_of, "s")
    future = np.zeros(len(table.row_interval), dtype=bool)
    for run in np.flatnonzero(table.known_at > moment):
        future[table.row_start[0, run]:table.row_stop[0, run]] = True
    tampered_price = np.array(table.row_price, copy=True)
    tampered_price[future] = tampered_price[future] * -3 + 5000
    tampered = P5minPrices(regions=table.regions, products=table.products, run_time=table.run_time,
                           known_at=table.known_at, row_interval=table.row_interval, row_price=tampered_price,
                           row_start=table.row_start, row_stop=table.row_stop,
                           latest_run_position=table.latest_run_position)
    history = table.first_interval_prices()
    nothing = PredispatchPrices.empty(history.products)
    arguments = {"region": "QLD1", "dispatch_interval": datetime(2026, 10, 9, 4, 0), "as_of": as_of,
                 "history_intervals": 12, "publication": PublicationModel(dispatch_price_delay_s=20.0)}
    honest = build_snapshot(history, nothing, p5min=table, **arguments)  # type: ignore[arg-type]
    blind = build_snapshot(history, nothing, p5min=tampered, **arguments)  # type: ignore[arg-type]
    assert [forecast.SerializeToString() for forecast in honest.p5min] == [
        forecast.SerializeToString() for forecast in blind.p5min]
    known = table.run_time[table.known_at <= moment]
    if known.size:
        assert from_timestamp(honest.p5min[0].run_time) == known.max().astype(datetime)
        assert honest.p5min[0].known_at_unix_ms <= int(to_timestamp(as_of).ToMilliseconds())
    else:
        assert len(honest.p5min) == 0
