"""Schemas of the tables a bidder needs: keys, types, intervention runs, partitions, products from the data."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from aemo.archive_files import read_file
from aemo.errors import UnknownTableError
from aemo.mms_csv import MmsTable, parse_mms_csv
from aemo.tables import (
    SCHEMAS,
    TABLE_NAMES,
    month_range,
    normalise,
    parse_month,
    partition_labels,
    price_products,
    schema_named,
    schemas_for,
)
from settings import REPO_ROOT
from tests.aemo_fixtures import CURRENT_ROOT, archive_zip


def _table(month: str, table: str) -> MmsTable:
    report = read_file(archive_zip(month, table))[0]
    assert len(report.tables) == 1
    return report.tables[0]


def test_dispatch_prices_keep_the_pricing_run_only() -> None:
    table = _table("2018_04", "DISPATCHPRICE")
    assert set(table.frame["INTERVENTION"].unique()) == {0, 1}
    frame = normalise(table, schema_named("DISPATCHPRICE"))
    assert len(frame) == 2880 and set(frame["INTERVENTION"]) == {0}
    assert not frame.duplicated(["SETTLEMENTDATE", "REGIONID"]).any()
    assert str(frame["SETTLEMENTDATE"].dtype) == "datetime64[s]"
    assert str(frame["RRP"].dtype) == "float64" and str(frame["RAISEREGRRP"].dtype) == "float64"
    assert frame["RRP"].iloc[0] == pytest.approx(67.58327)
    assert price_products(frame.columns) == ("ENERGY", "RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG",
                                             "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG")


def test_region_and_unit_solutions_keep_both_runs() -> None:
    region_sum = normalise(_table("2018_04", "DISPATCHREGIONSUM"), schema_named("DISPATCHREGIONSUM"))
    assert len(region_sum) == 5342 and set(region_sum["INTERVENTION"]) == {0, 1}
    assert str(region_sum["RAISEREGLOCALDISPATCH"].dtype) == "float64"
    units = normalise(_table("2026_03", "DISPATCHLOAD"), schema_named("DISPATCHLOAD"))
    assert set(units["DUID"]) == {"AGLHAL", "HDWF2"}
    for column in ("TOTALCLEARED", "INITIALMW", "RAISE1SEC", "LOWER1SEC", "RAISEREG", "LOWER6SEC"):
        assert str(units[column].dtype) == "float64", column


def test_region_sum_has_one_second_fcas_after_october_2023() -> None:
    frame = normalise(_table("2024_07", "DISPATCHREGIONSUM"), schema_named("DISPATCHREGIONSUM"))
    assert {"RAISE1SECLOCALDISPATCH", "LOWER1SECLOCALDISPATCH"} <= set(frame.columns)
    assert str(frame["RAISE1SECLOCALDISPATCH"].dtype) == "float64"


def test_a_file_that_repeats_rows_gives_one_row_per_key() -> None:
    table = _table("2022_01", "DISPATCHLOAD")
    assert table.rows == 2916
    frame = normalise(table, schema_named("DISPATCHLOAD"))
    assert len(frame) == 2880


def test_bid_keys_take_direction_when_the_data_has_it() -> None:
    before = normalise(_table("2020_01", "BIDPEROFFER_D"), schema_named("BIDPEROFFER_D"))
    after = normalise(_table("2026_03", "BIDPEROFFER_D"), schema_named("BIDPEROFFER_D"))
    schema = schema_named("BIDPEROFFER_D")
    assert schema.keys_in(before.columns) == ("SETTLEMENTDATE", "DUID", "BIDTYPE", "INTERVAL_DATETIME")
    assert schema.keys_in(after.columns)[-1] == "DIRECTION"
    assert len(after) == 11520
    assert set(after["DIRECTION"]) == {"GEN"}  # AGLHAL and HDWF2 are generators: one direction
    assert str(after["BANDAVAIL1"].dtype) == "float64" and str(after["INTERVAL_DATETIME"].dtype) == "datetime64[s]"


def test_trading_prices_were_half_hourly_before_five_minute_settlement() -> None:
    schema = schema_named("TRADINGPRICE")
    assert len(normalise(_table("2018_04", "TRADINGPRICE"), schema)) == 480
    assert schema.interval_minutes(date(2021, 9, 1)) == 30
    assert schema.interval_minutes(date(2021, 10, 1)) == 5


def test_partitions_are_months_of_the_interval() -> None:
    frame = normalise(_table("2018_04", "DISPATCHPRICE"), schema_named("DISPATCHPRICE"))
    labels = partition_labels(frame, schema_named("DISPATCHPRICE"))
    assert set(labels) == {"2018-04"}
    assert labels[frame["SETTLEMENTDATE"] == pd.Timestamp(2018, 5, 1)].eq("2018-04").all()
    rooftop = normalise(_table("2019_12", "ROOFTOP_PV_ACTUAL"), schema_named("ROOFTOP_PV_ACTUAL"))
    assert set(partition_labels(rooftop, schema_named("ROOFTOP_PV_ACTUAL"))) == {"2019-12", "2020-01"}
    thresholds = normalise(_table("2021_04", "MARKET_PRICE_THRESHOLDS"), schema_named("MARKET_PRICE_THRESHOLDS"))
    assert set(partition_labels(thresholds, schema_named("MARKET_PRICE_THRESHOLDS"))) == {"all"}


def test_the_same_table_from_an_archive_and_a_current_report() -> None:
    archive = _table("2026_03", "DISPATCHLOAD")
    report = read_file(CURRENT_ROOT / "Next_Day_Dispatch" / "PUBLIC_NEXT_DAY_DISPATCH_20260514_0000000517721207.zip")[0]
    current = report.table("DISPATCH", "UNIT_SOLUTION")
    assert (archive.report_type, archive.sub_type) == (current.report_type, current.sub_type)
    schema = schema_named("DISPATCHLOAD")
    from_archive, from_report = normalise(archive, schema), normalise(current, schema)
    assert archive.version == current.version == 6
    assert set(from_archive.columns) == set(from_report.columns)  # the same columns, in another order
    assert from_archive.dtypes[sorted(from_archive.columns)].equals(from_report.dtypes[sorted(from_report.columns)])
    assert [s.name for s in schemas_for("DREGION", "")] == ["DISPATCHPRICE", "DISPATCHREGIONSUM"]


def test_every_schema_is_consistent() -> None:
    assert len(set(TABLE_NAMES)) == len(TABLE_NAMES)
    for schema in SCHEMAS:
        assert set(schema.key_columns) <= set(schema.required_columns), schema.name
        if schema.time_column is not None:
            assert schema.time_column in schema.datetime_columns, schema.name
        assert schema.sources and schema.archive_names, schema.name
    for name in ("DISPATCHPRICE", "DISPATCHREGIONSUM", "DISPATCHLOAD", "PREDISPATCHPRICE", "P5MIN_REGIONSOLUTION",
                 "BIDDAYOFFER_D", "BIDPEROFFER_D", "MARKET_PRICE_THRESHOLDS", "TRADINGPRICE"):
        assert name in TABLE_NAMES


def test_unknown_tables_and_malformed_months_are_refused() -> None:
    with pytest.raises(UnknownTableError, match=r"unknown table 'DISPATCHPRICES'; known tables: DISPATCHPRICE"):
        schema_named("DISPATCHPRICES")
    assert schema_named("dispatchprice").name == "DISPATCHPRICE"
    for text in ("2024-13", "2024-8", "24-08", "2024/08", ""):
        with pytest.raises(ValueError, match="malformed month"):
            parse_month(text)
    assert month_range(date(2024, 11, 1), date(2025, 2, 1)) == (date(2024, 11, 1), date(2024, 12, 1),
                                                                date(2025, 1, 1), date(2025, 2, 1))


def test_predispatch_prices_in_aemo_layout() -> None:
    """Real PREDISPATCHPRICE rows (January 2021, data/nem) written in AEMO's layout, read back by run and period."""
    rows = pd.read_parquet(REPO_ROOT / "data" / "nem" / "PUBLIC_DVD_PREDISPATCHPRICE_202101010000.parquet").head(40)
    body = rows.copy()
    for column in ("LASTCHANGED", "DATETIME", "PREDISPATCH_RUN_DATETIME"):
        body[column] = pd.to_datetime(body[column]).dt.strftime("%Y/%m/%d %H:%M:%S")
    body.insert(0, "version", 5)
    body.insert(0, "sub_type", "REGION_PRICES")
    body.insert(0, "report_type", "PREDISPATCH")
    body.insert(0, "row", "D")
    text = ("C,SETP.WORLD,DVD_PREDISPATCHPRICE,AEMO,PUBLIC,2021/02/08,00:00:00,1,,1\n"
            + "I,PREDISPATCH,REGION_PRICES,5," + ",".join(rows.columns) + "\n"
            + body.to_csv(header=False, index=False) + 'C,"END OF REPORT",43\n')
    table = parse_mms_csv(text.encode(), "PUBLIC_DVD_PREDISPATCHPRICE_202101010000.CSV").table("PREDISPATCH",
                                                                                               "REGION_PRICES")
    frame = normalise(table, schema_named("PREDISPATCHPRICE"))
    assert len(frame) == 40 and not frame.duplicated(["PREDISPATCHSEQNO", "REGIONID", "DATETIME"]).any()
    assert str(frame["DATETIME"].dtype) == "datetime64[s]" and str(frame["RRP"].dtype) == "float64"
    assert frame["RRP"].tolist() == pytest.approx(rows.sort_values(["PREDISPATCHSEQNO", "REGIONID", "DATETIME"])[
        "RRP"].tolist())
    assert price_products(frame.columns)[:2] == ("ENERGY", "RAISE6SEC")
    assert schema_named("PREDISPATCHPRICE").interval_minutes(date(2021, 1, 1)) == 30
