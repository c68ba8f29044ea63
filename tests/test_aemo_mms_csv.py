"""AEMO's MMS CSV layout, read from the real files of data/nemweb as AEMO (and the pruned copies) publish them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from aemo.archive_files import read_file
from aemo.errors import MissingColumnError, MmsFormatError, TruncatedReportError
from aemo.mms_csv import parse_mms_csv
from aemo.store import MarketStore
from aemo.tables import normalise, price_products, schema_named
from tests.aemo_fixtures import (
    ARCHIVE_ROOT,
    CURRENT_ROOT,
    DISPATCHPRICE_ROWS,
    archive_zip,
    edit_rows,
    fixture_zips,
    member,
    zipped,
)


@pytest.mark.parametrize("path", fixture_zips(), ids=lambda p: p.name)
def test_every_fixture_file_parses(path: Path) -> None:
    reports = read_file(path)
    assert len(reports) == 1
    report = reports[0]
    assert report.header.created is not None
    assert report.tables, f"{path.name} has no table"
    for table in report.tables:
        assert list(table.frame.columns) == list(table.columns)
        assert table.version >= 1


@pytest.mark.parametrize("month", sorted(DISPATCHPRICE_ROWS))
def test_dispatchprice_rows_per_month_match_the_readme(month: str) -> None:
    table = read_file(archive_zip(month, "DISPATCHPRICE"))[0].table("DISPATCH", "PRICE")
    assert table.rows == DISPATCHPRICE_ROWS[month]
    times = table.frame["SETTLEMENTDATE"]
    assert str(times.dtype) == "datetime64[s]"
    year, number = int(month[:4]), int(month[5:])
    assert times.min() == pd.Timestamp(year, number, 1, 0, 5)


def test_versions_come_from_the_i_rows_and_the_products_from_the_columns() -> None:
    july = read_file(archive_zip("2024_07", "DISPATCHPRICE"))[0].table("DISPATCH", "PRICE")
    august = read_file(archive_zip("2024_08", "DISPATCHPRICE"))[0].table("DISPATCH", "PRICE")
    assert (july.version, august.version) == (4, 5)
    assert "RAISE1SECRRP" not in july.columns and "LOWER1SECRRP" not in july.columns
    assert "RAISE1SECRRP" in august.columns and "LOWER1SECRRP" in august.columns
    assert len(price_products(july.columns)) == 1 + 8
    assert price_products(august.columns)[-2:] == ("RAISE1SEC", "LOWER1SEC")
    assert len(price_products(august.columns)) == 1 + 10


@pytest.mark.parametrize(("month", "direction"), [("2018_04", False), ("2018_05", False), ("2019_12", False),
                                                  ("2020_01", False), ("2024_08", True), ("2024_09", True),
                                                  ("2025_01", True), ("2026_03", True)])
def test_bids_carry_direction_since_the_bidirectional_unit_rules(month: str, direction: bool) -> None:
    for table_name in ("BIDDAYOFFER_D", "BIDPEROFFER_D"):
        table = read_file(archive_zip(month, table_name))[0].table("BID", table_name)
        assert ("DIRECTION" in table.columns) is direction
        frame = normalise(table, schema_named(table_name))
        assert len(frame) == table.rows
        if direction:
            assert set(frame["DIRECTION"].unique()) <= {"GEN", "LOAD", "RAISE", "LOWER"}


def test_market_price_thresholds_effective_dates() -> None:
    table = read_file(archive_zip("2021_04", "MARKET_PRICE_THRESHOLDS"))[0].table("MARKET_CONFIG",
                                                                                 "MARKET_PRICE_THRESHOLDS")
    frame = normalise(table, schema_named("MARKET_PRICE_THRESHOLDS"))
    assert len(frame) == 12
    assert frame["EFFECTIVEDATE"].min() == pd.Timestamp(1997, 11, 4)
    assert frame["EFFECTIVEDATE"].max() == pd.Timestamp(2020, 7, 1)
    assert frame.loc[frame["EFFECTIVEDATE"] == pd.Timestamp(2020, 7, 1), "VOLL"].item() == 15000.0


def test_p5min_region_solution_with_quoted_datetimes() -> None:
    path = CURRENT_ROOT / "P5_Reports" / "PUBLIC_P5MIN_202610091150_20261009114620.zip"
    report = read_file(path)[0]
    assert report.header.created == datetime(2026, 10, 9, 11, 46, 20)
    table = report.table("P5MIN", "REGIONSOLUTION")
    assert (table.version, table.rows, len(table.columns)) == (10, 60, 118)
    assert {"RAISE1SECRRP", "LOWER1SECRRP"} <= set(table.columns)
    frame = normalise(table, schema_named("P5MIN_REGIONSOLUTION"))
    assert sorted(frame["REGIONID"].unique()) == ["NSW1", "QLD1", "SA1", "TAS1", "VIC1"]
    assert set(frame["RUN_DATETIME"]) == {pd.Timestamp(2026, 10, 9, 11, 50)}
    assert frame["INTERVAL_DATETIME"].min() == pd.Timestamp(2026, 10, 9, 11, 50)
    assert frame["INTERVAL_DATETIME"].max() == pd.Timestamp(2026, 10, 9, 12, 45)


def test_quoted_and_unquoted_datetimes_read_alike() -> None:
    name, data = member(CURRENT_ROOT / "P5_Reports" / "PUBLIC_P5MIN_202610091150_20261009114620.zip")
    quoted = parse_mms_csv(data, name).tables[0].frame
    unquoted = parse_mms_csv(data.replace(b'"', b""), name).tables[0].frame
    pd.testing.assert_frame_equal(quoted, unquoted)
    assert str(quoted["LASTCHANGED"].dtype) == "datetime64[s]"


def test_daily_report_dregion_quirk() -> None:
    report = read_file(CURRENT_ROOT / "Daily_Reports" / "PUBLIC_DAILY_202605140000_20260515040504.zip")[0]
    dregion = report.find("DREGION", "")
    assert [(t.version, t.rows) for t in dregion] == [(2, 576), (3, 0)]
    assert sorted(dregion[0].frame["REGIONID"].unique()) == ["NSW1", "SA1"]
    prices = normalise(dregion[0], schema_named("DISPATCHPRICE"))
    region_sum = normalise(dregion[0], schema_named("DISPATCHREGIONSUM"))
    assert len(prices) == len(region_sum) == 576
    assert "TOTALDEMAND" not in prices.columns and "RRP" in prices.columns
    assert "RRP" not in region_sum.columns and "TOTALDEMAND" in region_sum.columns
    assert prices["SETTLEMENTDATE"].min() == pd.Timestamp(2026, 5, 14, 4, 5)
    assert prices["SETTLEMENTDATE"].max() == pd.Timestamp(2026, 5, 15, 4, 0)


def test_several_tables_in_one_file() -> None:
    report = read_file(CURRENT_ROOT / "Next_Day_Dispatch" / "PUBLIC_NEXT_DAY_DISPATCH_20260514_0000000517721207.zip")[0]
    assert [(t.name, t.version, t.rows) for t in report.tables] == [
        ("DISPATCH.UNIT_SOLUTION", 6, 576), ("DISPATCH.LOCAL_PRICE", 1, 0), ("DISPATCH.OFFERTRK", 1, 0),
        ("DISPATCH.CONSTRAINT", 5, 0), ("DISPATCH.MNSPBIDTRK", 1, 0)]


def test_a_file_cut_before_end_of_report_is_refused() -> None:
    name, data = member(archive_zip("2024_08", "DISPATCHPRICE"))
    without_trailer = data[:data.rindex(b'C,"END OF REPORT"')]
    with pytest.raises(TruncatedReportError, match=rf"{name}: cut off before its END OF REPORT line"):
        parse_mms_csv(without_trailer, name)
    cut_mid_row = data[:len(data) // 2]
    with pytest.raises(TruncatedReportError, match="refused, nothing loaded"):
        parse_mms_csv(cut_mid_row, name)


def test_a_truncated_file_is_never_half_loaded_into_the_store(tmp_path: Path) -> None:
    name, data = member(archive_zip("2024_08", "DISPATCHPRICE"))
    store = MarketStore(tmp_path / "market")
    with pytest.raises(TruncatedReportError):
        store.ingest_bytes(zipped(name, data[:len(data) * 2 // 3]), name.replace(".CSV", ".zip"))
    assert store.records() == [] and store.tables() == []


def test_a_missing_required_column_is_one_clear_error(tmp_path: Path) -> None:
    name, data = member(archive_zip("2024_08", "DISPATCHPRICE"))

    def drop_rrp(i_row: list[str], d_rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
        index = i_row.index("RRP")
        return i_row[:index] + i_row[index + 1:], [row[:index] + row[index + 1:] for row in d_rows]

    bad = edit_rows(data, drop_rrp)
    table = parse_mms_csv(bad, name).table("DISPATCH", "PRICE")
    with pytest.raises(MissingColumnError) as caught:
        normalise(table, schema_named("DISPATCHPRICE"))
    message = str(caught.value)
    assert message == f"{name}: table DISPATCH.PRICE version 5 lacks the required column RRP"
    store = MarketStore(tmp_path / "market")
    zip_name = "PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip"
    with pytest.raises(MissingColumnError, match="lacks the required column RRP"):
        store.ingest_bytes(zipped(name, bad), zip_name)
    assert store.tables() == []


def test_extra_columns_are_tolerated() -> None:
    name, data = member(archive_zip("2024_08", "DISPATCHPRICE"))

    def add_column(i_row: list[str], d_rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
        return [*i_row, "FUTURE_COLUMN"], [[*row, "7"] for row in d_rows]

    frame = normalise(parse_mms_csv(edit_rows(data, add_column), name).tables[0], schema_named("DISPATCHPRICE"))
    assert (frame["FUTURE_COLUMN"] == 7).all()
    assert len(frame) == 2880


def test_rows_that_belong_to_another_table_are_refused() -> None:
    name, data = member(archive_zip("2024_08", "DISPATCHPRICE"))

    def mislabel(i_row: list[str], d_rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
        d_rows[5][2] = "REGIONSUM"
        return i_row, d_rows

    with pytest.raises(MmsFormatError, match=r"row D,DISPATCH,REGIONSUM,5 does not belong to it"):
        parse_mms_csv(edit_rows(data, mislabel), name)


def test_a_file_that_is_not_mms_is_refused() -> None:
    path = CURRENT_ROOT / "Causer_Pays_Elements" / "Elements_FCAS_202504151310.csv"
    with pytest.raises(MmsFormatError, match="not an AEMO MMS file"):
        read_file(path)


def test_only_wanted_tables_are_parsed() -> None:
    report = read_file(CURRENT_ROOT / "Daily_Reports" / "PUBLIC_DAILY_202605140000_20260515040504.zip",
                       wanted=lambda report_type, sub_type: report_type == "DREGION")[0]
    assert {t.report_type for t in report.tables} == {"DREGION"}


def test_the_archive_root_holds_twelve_months() -> None:
    months = sorted(p.name for p in ARCHIVE_ROOT.glob("*/MMSDM_*"))
    assert [m.removeprefix("MMSDM_") for m in months] == sorted(DISPATCHPRICE_ROWS)
