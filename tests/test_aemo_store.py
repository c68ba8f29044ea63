"""The local market store: ingest, idempotence, re-publication, newest publication wins, readers, gaps."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from aemo.archive_files import read_file
from aemo.store import IngestStatus, MarketStore, interval_gaps, summarise
from aemo.tables import normalise, schema_named
from tests.aemo_fixtures import CURRENT_ROOT, archive_zip, fixture_zips, member, set_value, zipped

P5_NAME = "PUBLIC_P5MIN_202610091150_20261009114620.zip"


@pytest.fixture(scope="module")
def full_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MarketStore]:
    """Every fixture file ingested once (read-only for the tests that use it)."""
    store = MarketStore(tmp_path_factory.mktemp("full") / "market")
    for path in fixture_zips():
        assert store.ingest_path(path).status is IngestStatus.INGESTED, path.name
    yield store


def test_every_fixture_file_is_ingested_with_its_rows(full_store: MarketStore) -> None:
    records = full_store.records()
    assert len(records) == len(fixture_zips()) == 97
    assert all(r.rows > 0 and len(r.sha256) == 64 and r.size > 0 for r in records)
    daily = full_store.record("PUBLIC_DAILY_202605140000_20260515040504.zip")
    assert daily is not None
    assert daily.tables_ingested == {"DISPATCHPRICE", "DISPATCHREGIONSUM", "DISPATCHLOAD"}  # DUNIT: no rows
    assert daily.published == datetime(2026, 5, 15, 4, 5, 4)
    assert daily.rows == 576 * 2
    summary = summarise(full_store)
    assert summary.sources == 97 and summary.rows == sum(r.rows for r in records)


def test_a_file_already_held_is_skipped(full_store: MarketStore) -> None:
    parts_before = summarise(full_store).parts
    for path in fixture_zips():
        assert full_store.ingest_path(path).status is IngestStatus.UNCHANGED
    assert summarise(full_store).parts == parts_before


def test_loading_a_region_month(full_store: MarketStore) -> None:
    started = time.perf_counter()
    frame = full_store.load_month("DISPATCHPRICE", date(2024, 8, 1), regions=["SA1"])
    elapsed = time.perf_counter() - started
    assert len(frame) == 1440 and set(frame["REGIONID"]) == {"SA1"}
    assert frame["SETTLEMENTDATE"].is_monotonic_increasing
    assert frame["SETTLEMENTDATE"].iloc[0] == pd.Timestamp(2024, 8, 1, 0, 5)
    assert frame["SETTLEMENTDATE"].iloc[-1] == pd.Timestamp(2024, 9, 1, 0, 0)
    assert {"RAISE1SECRRP", "LOWER1SECRRP"} <= set(frame.columns)
    assert "_source" not in frame.columns
    print(f"region-month of DISPATCHPRICE from the store: {elapsed * 1000:.1f} ms")


def test_loading_a_period_across_months_and_columns(full_store: MarketStore) -> None:
    frame = full_store.load("DISPATCHPRICE", datetime(2024, 8, 31, 23, 0), datetime(2024, 9, 1, 1, 0),
                            regions=["NSW1"], columns=["RRP"])
    assert len(frame) == 25
    assert list(frame.columns) == ["SETTLEMENTDATE", "REGIONID", "RRP"]
    everything = full_store.load("DISPATCHPRICE")
    assert len(everything) == 12 * 2880 + 2 * 576
    assert not everything.duplicated(["SETTLEMENTDATE", "REGIONID"]).any()
    units = full_store.load("DISPATCHLOAD", units=["HDWF2"], start=datetime(2026, 5, 14, 4, 5),
                           end=datetime(2026, 5, 15, 4, 0))
    assert len(units) == 288 and set(units["DUID"]) == {"HDWF2"}


def test_the_store_lists_table_month_region_rows(full_store: MarketStore) -> None:
    holdings = {(h.table, h.month, h.region): h for h in full_store.holdings()}
    holding = holdings[("DISPATCHPRICE", "2018-04", "SA1")]
    assert holding.rows == 1440
    assert (holding.first, holding.last) == (datetime(2018, 4, 1, 0, 5), datetime(2018, 5, 1, 0, 0))
    assert {h.rows for k, h in holdings.items() if k[:2] == ("DISPATCHREGIONSUM", "2018-04")} == {2671}
    assert holdings[("DISPATCHPRICE", "2026-05", "NSW1")].rows == 576
    assert holdings[("P5MIN_REGIONSOLUTION", "2026-10", "QLD1")].rows == 12
    assert holdings[("MARKET_PRICE_THRESHOLDS", "all", None)].rows == 12
    assert holdings[("BIDPEROFFER_D", "2024-08", None)].rows == 11520
    only = full_store.holdings(["TRADINGPRICE"], [date(2018, 4, 1)])
    assert {(h.table, h.month) for h in only} == {("TRADINGPRICE", "2018-04")}
    assert sum(h.rows for h in only) == 480


def test_gaps_are_reported_as_ranges(full_store: MarketStore) -> None:
    gaps = full_store.gaps(["DISPATCHPRICE"], [date(2024, 8, 1)], ["SA1"])
    assert [(g.first_missing, g.last_missing, g.intervals) for g in gaps] == [
        (datetime(2024, 8, 4, 0, 0), datetime(2024, 8, 29, 23, 55), 7488)]
    half_hourly = full_store.gaps(["TRADINGPRICE"], [date(2018, 4, 1)], ["NSW1"])
    assert [(g.first_missing, g.last_missing, g.intervals, g.interval_minutes) for g in half_hourly] == [
        (datetime(2018, 4, 4, 0, 0), datetime(2018, 4, 28, 23, 30), 1200, 30)]
    absent = full_store.gaps(["DISPATCHPRICE"], [date(2023, 2, 1)])
    assert {(g.region, g.first_missing, g.last_missing, g.intervals) for g in absent} == {
        (region, datetime(2023, 2, 1, 0, 5), datetime(2023, 3, 1, 0, 0), 28 * 288) for region in ("NSW1", "SA1")}
    assert full_store.gaps(["MARKET_PRICE_THRESHOLDS", "BIDDAYOFFER_D"]) == []


def test_interval_gaps_of_a_complete_month_are_empty() -> None:
    month = pd.date_range("2024-02-01 00:05", "2024-03-01 00:00", freq="5min").to_numpy()
    assert interval_gaps(month, date(2024, 2, 1), 5) == []
    assert interval_gaps(month[1:-1], date(2024, 2, 1), 5) == [
        (datetime(2024, 2, 1, 0, 5), datetime(2024, 2, 1, 0, 5), 1), (datetime(2024, 3, 1), datetime(2024, 3, 1), 1)]


def test_a_republished_file_replaces_its_rows(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    path = archive_zip("2024_08", "DISPATCHPRICE")
    assert store.ingest_path(path).status is IngestStatus.INGESTED
    before = store.load_month("DISPATCHPRICE", "2024-08")
    old_parts = sorted(p.name for p in (store.root / "DISPATCHPRICE").rglob("*.parquet"))
    name, data = member(path)
    republished = zipped(name, set_value(data, "RRP", 0, "12345.6"))
    result = store.ingest_bytes(republished, path.name)
    assert (result.status, result.rows) == (IngestStatus.REPLACED, 2880)
    after = store.load_month("DISPATCHPRICE", "2024-08")
    assert len(after) == len(before) == 2880
    assert after["RRP"].iloc[0] == 12345.6 and before["RRP"].iloc[0] != 12345.6
    pd.testing.assert_frame_equal(after.iloc[1:], before.iloc[1:])
    new_parts = sorted(p.name for p in (store.root / "DISPATCHPRICE").rglob("*.parquet"))
    assert len(new_parts) == 1 and new_parts != old_parts
    assert store.ingest_bytes(republished, path.name).status is IngestStatus.UNCHANGED


def test_a_newer_publication_of_a_report_replaces_the_older_one(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    path = CURRENT_ROOT / "P5_Reports" / P5_NAME
    store.ingest_path(path)
    _, data = member(path)
    later_name = "PUBLIC_P5MIN_202610091150_20261009114905.zip"
    later = zipped(later_name.replace(".zip", ".CSV"), data.replace(
        b'D,P5MIN,REGIONSOLUTION,10,"2026/10/09 11:50:00",0,"2026/10/09 11:50:00",NSW1,46.72,',
        b'D,P5MIN,REGIONSOLUTION,10,"2026/10/09 11:50:00",0,"2026/10/09 11:50:00",NSW1,99.5,'))
    assert store.ingest_bytes(later, later_name).status is IngestStatus.REPLACED
    frame = store.load("P5MIN_REGIONSOLUTION", provenance=True)
    assert len(frame) == 60 and set(frame["_source"]) == {later_name}
    assert frame.loc[(frame["REGIONID"] == "NSW1"), "RRP"].iloc[0] == 99.5
    older = store.record(P5_NAME)
    assert older is not None and older.superseded_by == later_name
    assert store.ingest_path(path).status is IngestStatus.SUPERSEDED
    assert len(store.load("P5MIN_REGIONSOLUTION")) == 60
    assert len(list((store.root / "P5MIN_REGIONSOLUTION").rglob("*.parquet"))) == 1


def _archive_for_may_2026(rrp: str) -> bytes:
    """A monthly DISPATCHPRICE archive for May 2026 holding two intervals of the Daily report's day."""
    lines = [
        "C,SETP.WORLD,DVD_DISPATCHPRICE,AEMO,PUBLIC,2026/06/07,10:00:00,0000000000000001,MONTHLY_ARCHIVE,1",
        "I,DISPATCH,PRICE,5,SETTLEMENTDATE,RUNNO,REGIONID,DISPATCHINTERVAL,INTERVENTION,RRP,LASTCHANGED",
        f'D,DISPATCH,PRICE,5,"2026/05/14 04:05:00",1,SA1,20260514001,0,{rrp},"2026/05/14 04:00:04"',
        f'D,DISPATCH,PRICE,5,"2026/05/14 04:10:00",1,SA1,20260514002,0,{rrp},"2026/05/14 04:05:04"',
        'C,"END OF REPORT",5']
    return zipped("PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202605010000.CSV", ("\r\n".join(lines) + "\r\n").encode())


def test_overlapping_sources_newest_publication_wins_and_nothing_counts_twice(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    store.ingest_path(CURRENT_ROOT / "Daily_Reports" / "PUBLIC_DAILY_202605140000_20260515040504.zip")
    daily = store.load("DISPATCHPRICE", regions=["SA1"])
    store.ingest_bytes(_archive_for_may_2026("-42.5"), "PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202605010000.zip")
    merged = store.load("DISPATCHPRICE", regions=["SA1"], provenance=True)
    assert len(merged) == len(daily) == 288
    first_two = merged.iloc[:2]
    assert (first_two["RRP"] == -42.5).all()
    assert set(first_two["_source"]) == {"PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202605010000.zip"}
    assert merged.iloc[2:]["RRP"].tolist() == daily.iloc[2:]["RRP"].tolist()
    holdings = {(h.table, h.region): h.rows for h in store.holdings(["DISPATCHPRICE"])}
    assert holdings[("DISPATCHPRICE", "SA1")] == 288


def test_staged_parts_are_invisible_until_committed_and_collected_if_never(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    path = archive_zip("2025_01", "DISPATCHPRICE")
    staged = store.stage(path.read_bytes(), path.name)
    assert staged.rows == 2880 and (store.root / staged.parts[0].path).exists()
    assert store.load("DISPATCHPRICE").empty and store.records() == []
    assert store.collect_garbage() == 1
    assert not (store.root / staged.parts[0].path).exists()
    staged = store.stage(path.read_bytes(), path.name)
    assert store.commit(staged).status is IngestStatus.INGESTED
    assert store.collect_garbage() == 0
    assert len(store.load("DISPATCHPRICE")) == 2880


def test_a_table_asked_later_is_taken_from_a_file_already_held(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    path = CURRENT_ROOT / "Daily_Reports" / "PUBLIC_DAILY_202605140000_20260515040504.zip"
    assert store.ingest_path(path, tables=["DISPATCHPRICE"]).status is IngestStatus.INGESTED
    assert store.tables() == ["DISPATCHPRICE"]
    assert store.ingest_path(path, tables=["DISPATCHPRICE"]).status is IngestStatus.UNCHANGED
    assert store.ingest_path(path).status is IngestStatus.REPLACED
    assert store.tables() == ["DISPATCHPRICE", "DISPATCHREGIONSUM"]
    assert len(store.load("DISPATCHPRICE")) == 576


def test_store_rows_match_the_parsed_files(full_store: MarketStore) -> None:
    schema = schema_named("DISPATCHREGIONSUM")
    expected = 0
    for path in sorted(archive_zip("2018_04", "DISPATCHREGIONSUM").parent.parent.parent.parent.parent.rglob(
            "*DISPATCHREGIONSUM*.zip")):
        for report in read_file(path):
            for table in report.tables:
                expected += len(normalise(table, schema))
    archive_rows = sum(h.rows for h in full_store.holdings(["DISPATCHREGIONSUM"]) if h.month != "2026-05")
    assert archive_rows == expected


def test_a_copied_store_reads_the_same(full_store: MarketStore, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(full_store.root, copy)
    pd.testing.assert_frame_equal(MarketStore(copy).load("TRADINGPRICE"), full_store.load("TRADINGPRICE"))


def test_an_older_publication_staged_late_leaves_the_newer_one_intact(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    path = CURRENT_ROOT / "P5_Reports" / P5_NAME
    _, data = member(path)
    later_name = "PUBLIC_P5MIN_202610091150_20261009114905.zip"
    same_content = zipped(P5_NAME.replace(".zip", ".CSV"), data)
    older = store.stage(same_content, P5_NAME)
    assert store.ingest_bytes(same_content, later_name).status is IngestStatus.INGESTED
    assert store.commit(older).status is IngestStatus.SUPERSEDED
    assert [r.name for r in store.records()] == [later_name]
    assert len(store.load("P5MIN_REGIONSOLUTION")) == 60
    assert store.collect_garbage() == 0
