"""Loading AEMO MMS tables: real January 2021 data, plain and raw MMS CSV, folders, clear errors."""

from __future__ import annotations

import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aemo.errors import MmsFormatError
from aemo.mms import load_dispatch_prices, load_market_data, load_predispatch_prices
from algorithms.market.prices import DispatchPrices, PredispatchPrices

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "nem"
DISPATCH_FILE = DATA_DIR / "PUBLIC_DVD_DISPATCHPRICE_202101010000.parquet"
PREDISPATCH_FILE = DATA_DIR / "PUBLIC_DVD_PREDISPATCHPRICE_202101010000.parquet"
FCAS_2021 = ("RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG",
             "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG")


@pytest.fixture(scope="module")
def market() -> tuple[DispatchPrices, PredispatchPrices]:
    return load_market_data(DATA_DIR)


@pytest.fixture(scope="module")
def dispatch_frame() -> pd.DataFrame:
    return pd.read_parquet(DISPATCH_FILE)


@pytest.fixture(scope="module")
def predispatch_frame() -> pd.DataFrame:
    return pd.read_parquet(PREDISPATCH_FILE)


# --------------------------------------------------------------------------------------------------
# DISPATCHPRICE, real data
# --------------------------------------------------------------------------------------------------


def test_real_dispatch_prices_shape_and_products(market: tuple[DispatchPrices, PredispatchPrices]) -> None:
    dispatch, _ = market
    assert dispatch.regions == ("NSW1", "QLD1", "SA1", "TAS1", "VIC1")
    assert dispatch.products == ("ENERGY", *FCAS_2021)
    assert dispatch.intervals.dtype == np.dtype("datetime64[s]")
    assert dispatch.intervals[0] == np.datetime64("2021-01-01T00:05:00")
    assert dispatch.intervals[-1] == np.datetime64("2021-02-01T00:00:00")
    assert bool(np.all(np.diff(dispatch.intervals) == np.timedelta64(300, "s")))
    assert dispatch.price.shape == (5, 31 * 288, 9)
    assert not bool(np.isnan(dispatch.price).any())
    assert not dispatch.price.flags.writeable


def test_real_dispatch_values_equal_source(market: tuple[DispatchPrices, PredispatchPrices],
                                           dispatch_frame: pd.DataFrame) -> None:
    dispatch, _ = market
    rows = dispatch_frame.sample(200, random_state=7)
    for _, row in rows.iterrows():
        moment = datetime.strptime(row["SETTLEMENTDATE"], "%Y/%m/%d %H:%M:%S")
        prices = dispatch.prices_at(row["REGIONID"], moment)
        assert prices["ENERGY"] == row["RRP"]
        for product in FCAS_2021:
            assert prices[product] == row[f"{product}RRP"]
    sa1 = dispatch_frame[dispatch_frame["REGIONID"] == "SA1"].sort_values("SETTLEMENTDATE")
    np.testing.assert_array_equal(dispatch.series("SA1", "LOWERREG"), sa1["LOWERREGRRP"].to_numpy())


def test_dispatch_lookups_and_clear_key_errors(market: tuple[DispatchPrices, PredispatchPrices]) -> None:
    dispatch, _ = market
    assert dispatch.interval_index(datetime(2021, 1, 1, 0, 5)) == 0
    assert dispatch.interval_index(datetime(2021, 1, 1, 0, 7)) is None
    assert dispatch.interval_index(datetime(2020, 12, 31, 23, 55)) is None
    assert dispatch.region_index("SA1") == 2
    with pytest.raises(KeyError, match="NSW1, QLD1, SA1, TAS1, VIC1"):
        dispatch.region_index("WA1")
    with pytest.raises(KeyError, match="not in the dispatch data"):
        dispatch.prices_at("SA1", datetime(2021, 2, 1, 0, 5))
    with pytest.raises(KeyError, match="ENERGY, RAISE6SEC"):
        dispatch.series("SA1", "RAISE1SEC")


# --------------------------------------------------------------------------------------------------
# DISPATCHPRICE, other layouts
# --------------------------------------------------------------------------------------------------

RAW_HEADER = ("I,DISPATCH,PRICE,5,SETTLEMENTDATE,RUNNO,REGIONID,DISPATCHINTERVAL,INTERVENTION,RRP,EEP,"
              "RAISE6SECRRP,LOWERREGRRP,RAISE1SECRRP,LOWER1SECRRP,LASTCHANGED\n")


def _raw_row(moment: str, region: str, intervention: int, rrp: float) -> str:
    return (f'D,DISPATCH,PRICE,5,"{moment}",1,{region},20240101001,{intervention},{rrp},0,'
            f'1.5,2.5,0.1,0.2,"{moment}"\n')


def _raw_dispatch_text() -> str:
    return ("C,NEMP.WORLD,DISPATCHIS,AEMO,PUBLIC,2024/01/01,00:00:14,0000000410000000,DISPATCHIS\n"
            "I,DISPATCH,CASESOLUTION,2,SETTLEMENTDATE,RUNNO,INTERVENTION,CASESUBTYPE,SOLUTIONSTATUS\n"
            'D,DISPATCH,CASESOLUTION,2,"2024/01/01 00:05:00",1,0,,0\n'
            + RAW_HEADER
            + _raw_row("2024/01/01 00:05:00", "SA1", 0, 50.25)
            + _raw_row("2024/01/01 00:05:00", "SA1", 1, 999.0)
            + _raw_row("2024/01/01 00:05:00", "NSW1", 0, 40.0)
            + _raw_row("2024/01/01 00:10:00", "SA1", 0, -12.5)
            + 'C,"END OF REPORT",9\n')


def test_raw_mms_csv_with_several_tables(tmp_path: Path) -> None:
    path = tmp_path / "PUBLIC_DISPATCHIS_202401010005.CSV"
    path.write_text(_raw_dispatch_text())
    dispatch = load_dispatch_prices(path.rename(tmp_path / "PUBLIC_DISPATCHIS_202401010005.csv"))
    assert dispatch.products == ("ENERGY", "RAISE6SEC", "LOWERREG", "RAISE1SEC", "LOWER1SEC")
    assert dispatch.regions == ("NSW1", "SA1")
    assert list(dispatch.intervals) == [np.datetime64("2024-01-01T00:05:00"),
                                        np.datetime64("2024-01-01T00:10:00")]
    # The intervention row (RRP 999) is excluded; NSW1 has no 00:10 row -> NaN.
    assert dispatch.prices_at("SA1", datetime(2024, 1, 1, 0, 5))["ENERGY"] == 50.25
    assert dispatch.prices_at("SA1", datetime(2024, 1, 1, 0, 10)) == {
        "ENERGY": -12.5, "RAISE6SEC": 1.5, "LOWERREG": 2.5, "RAISE1SEC": 0.1, "LOWER1SEC": 0.2}
    assert np.isnan(dispatch.prices_at("NSW1", datetime(2024, 1, 1, 0, 10))["ENERGY"])


def test_zipped_raw_mms_csv(tmp_path: Path) -> None:
    path = tmp_path / "PUBLIC_DVD_DISPATCHPRICE_202401010000.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("PUBLIC_DVD_DISPATCHPRICE_202401010000.CSV", _raw_dispatch_text())
    assert load_dispatch_prices(path).prices_at("SA1", datetime(2024, 1, 1, 0, 5))["ENERGY"] == 50.25


def test_plain_csv_equals_parquet(tmp_path: Path, dispatch_frame: pd.DataFrame,
                                  market: tuple[DispatchPrices, PredispatchPrices]) -> None:
    first_day = dispatch_frame[dispatch_frame["SETTLEMENTDATE"] < "2021/01/02"]
    path = tmp_path / "dispatchprice_jan.csv"
    first_day.to_csv(path, index=False)
    loaded = load_dispatch_prices(path)
    dispatch, _ = market
    assert loaded.products == dispatch.products and loaded.regions == dispatch.regions
    np.testing.assert_array_equal(loaded.price, dispatch.price[:, : len(loaded.intervals)])


def test_datetime_column_and_extra_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "SETTLEMENTDATE": pd.to_datetime(["2021-01-01 00:10", "2021-01-01 00:05"]),
        "REGIONID": ["VIC1", "VIC1"], "RRP": [10.0, 20.0], "SOMETHING_ELSE": ["a", "b"],
    })
    path = tmp_path / "x_DISPATCHPRICE.parquet"
    frame.to_parquet(path)
    dispatch = load_dispatch_prices(path)
    assert dispatch.products == ("ENERGY",)
    np.testing.assert_array_equal(dispatch.series("VIC1", "ENERGY"), [20.0, 10.0])


def test_missing_columns_name_file_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "PUBLIC_DVD_DISPATCHPRICE_bad.csv"
    path.write_text("SETTLEMENTDATE,PRICE\n2021/01/01 00:05:00,1\n")
    with pytest.raises(MmsFormatError, match=r"PUBLIC_DVD_DISPATCHPRICE_bad\.csv.*REGIONID, RRP"):
        load_dispatch_prices(path)


def test_unparseable_times_and_duplicates_are_errors(tmp_path: Path) -> None:
    bad_time = tmp_path / "bad_time.csv"
    bad_time.write_text("SETTLEMENTDATE,REGIONID,RRP\nyesterday,SA1,1\n")
    with pytest.raises(MmsFormatError, match="SETTLEMENTDATE"):
        load_dispatch_prices(bad_time)
    duplicate = tmp_path / "duplicate.csv"
    duplicate.write_text("SETTLEMENTDATE,REGIONID,RRP,INTERVENTION\n2021/01/01 00:05:00,SA1,1,0\n"
                         "2021/01/01 00:05:00,SA1,2,0\n2021/01/01 00:05:00,SA1,3,1\n")
    with pytest.raises(MmsFormatError, match="duplicate"):
        load_dispatch_prices(duplicate)


def test_folder_prefers_parquet_and_skips_predispatch(tmp_path: Path) -> None:
    pd.DataFrame({"SETTLEMENTDATE": ["2021/01/01 00:05:00"], "REGIONID": ["SA1"], "RRP": [1.0]}).to_parquet(
        tmp_path / "PUBLIC_DVD_DISPATCHPRICE_202101.parquet")
    (tmp_path / "PUBLIC_DVD_DISPATCHPRICE_202101.csv").write_text(
        "SETTLEMENTDATE,REGIONID,RRP\n2021/01/01 00:05:00,SA1,2\n")
    (tmp_path / "PUBLIC_DVD_PREDISPATCHPRICE_202101.csv").write_text("garbage\n")
    assert load_dispatch_prices(tmp_path).series("SA1", "ENERGY")[0] == 1.0


def test_folder_with_several_months_is_concatenated(tmp_path: Path) -> None:
    for month, price in (("01", 1.0), ("02", 2.0)):
        pd.DataFrame({"SETTLEMENTDATE": [f"2021/{month}/01 00:05:00"], "REGIONID": ["SA1"], "RRP": [price]}
                     ).to_parquet(tmp_path / f"PUBLIC_DVD_DISPATCHPRICE_2021{month}010000.parquet")
    np.testing.assert_array_equal(load_dispatch_prices(tmp_path).series("SA1", "ENERGY"), [1.0, 2.0])


def test_absent_tables_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MmsFormatError, match="does not exist"):
        load_market_data(tmp_path / "nowhere")
    with pytest.raises(MmsFormatError, match="no DISPATCHPRICE file"):
        load_market_data(tmp_path)
    pd.DataFrame({"SETTLEMENTDATE": ["2021/01/01 00:05:00"], "REGIONID": ["SA1"], "RRP": [1.0]}).to_parquet(
        tmp_path / "PUBLIC_DVD_DISPATCHPRICE_202101.parquet")
    dispatch, predispatch = load_market_data(tmp_path)  # no AEMO forecasts: an empty pre-dispatch table
    assert dispatch.regions == ("SA1",)
    assert predispatch.is_empty and predispatch.regions == ()
    with pytest.raises(MmsFormatError, match="no PREDISPATCHPRICE file"):
        load_predispatch_prices(tmp_path)


def test_an_empty_predispatch_table_gives_snapshots_without_runs() -> None:
    from algorithms.market.as_of import PublicationModel, build_snapshot

    dispatch = load_dispatch_prices(DISPATCH_FILE)
    snapshot = build_snapshot(dispatch, PredispatchPrices.empty(), region="SA1",
                              dispatch_interval=datetime(2021, 1, 2, 0, 10), as_of=datetime(2021, 1, 2, 0, 0, 30),
                              history_intervals=12, publication=PublicationModel(dispatch_price_delay_s=20.0))
    assert not snapshot.predispatch
    assert "no pre-dispatch data for region SA1" in snapshot.quality_notes


# --------------------------------------------------------------------------------------------------
# AEMO's own files (data/nemweb), through the one MMS reader
# --------------------------------------------------------------------------------------------------


def test_aemo_archive_zips_read_as_the_store_reads_them(tmp_path: Path) -> None:
    from aemo.store import MarketStore
    from tests.aemo_fixtures import archive_zip

    for month, fcas in (("2024_07", 8), ("2025_01", 10)):
        path = archive_zip(month, "DISPATCHPRICE")
        dispatch = load_dispatch_prices(path)
        assert dispatch.regions == ("NSW1", "SA1")
        assert len(dispatch.products) == 1 + fcas
        assert ("RAISE1SEC" in dispatch.products) == (fcas == 10)
        store = MarketStore(tmp_path / month)
        store.ingest_path(path, tables=["DISPATCHPRICE"])
        rows = store.load("DISPATCHPRICE", regions=["SA1"])
        np.testing.assert_array_equal(dispatch.series("SA1", "ENERGY"), rows["RRP"].to_numpy())
        np.testing.assert_array_equal(dispatch.intervals, rows["SETTLEMENTDATE"].to_numpy(dtype="datetime64[s]"))


def test_intervention_rows_of_an_aemo_file_are_left_out() -> None:
    from tests.aemo_fixtures import DISPATCHPRICE_ROWS, archive_zip

    dispatch = load_dispatch_prices(archive_zip("2018_04", "DISPATCHPRICE"))
    # 5,342 D rows, INTERVENTION = 1 among them: two regions x the intervals with a price of the pricing run.
    assert int(np.isfinite(dispatch.price[:, :, 0]).sum()) < DISPATCHPRICE_ROWS["2018_04"]
    assert int(np.isfinite(dispatch.price[:, :, 0]).sum()) == 2 * len(dispatch.intervals)
    assert len(dispatch.products) == 9


def test_a_raw_file_without_the_table_names_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "PUBLIC_DISPATCHIS_202401010005.csv"
    path.write_text("C,NEMP.WORLD,DISPATCHIS,AEMO,PUBLIC,2024/01/01,00:00:14,1,DISPATCHIS\n"
                    "I,DISPATCH,CASESOLUTION,2,SETTLEMENTDATE,RUNNO\n"
                    'D,DISPATCH,CASESOLUTION,2,"2024/01/01 00:05:00",1\n'
                    'C,"END OF REPORT",4\n')
    with pytest.raises(MmsFormatError, match=r"no DISPATCHPRICE table \(DISPATCH\.PRICE or DREGION\).*"
                                              r"DISPATCH\.CASESOLUTION"):
        load_dispatch_prices(path)
    cut = tmp_path / "PUBLIC_DVD_DISPATCHPRICE_202401010000.csv"
    cut.write_text(_raw_dispatch_text().rsplit("C,", 1)[0])
    with pytest.raises(MmsFormatError, match="END OF REPORT"):
        load_dispatch_prices(cut)


# --------------------------------------------------------------------------------------------------
# PREDISPATCHPRICE
# --------------------------------------------------------------------------------------------------


def test_real_predispatch_runs(market: tuple[DispatchPrices, PredispatchPrices],
                               predispatch_frame: pd.DataFrame) -> None:
    _, predispatch = market
    assert len(predispatch.run_time) == 1488
    assert predispatch.products == ("ENERGY", *FCAS_2021)
    assert predispatch.row_price.shape == (len(predispatch_frame), 9)
    known = predispatch_frame.groupby("PREDISPATCH_RUN_DATETIME")["LASTCHANGED"].max()
    np.testing.assert_array_equal(predispatch.run_time, known.index.to_numpy(dtype="datetime64[s]"))
    np.testing.assert_array_equal(predispatch.known_at, known.to_numpy(dtype="datetime64[s]"))


def test_latest_run_matches_a_brute_force_reference(market: tuple[DispatchPrices, PredispatchPrices],
                                                    predispatch_frame: pd.DataFrame) -> None:
    _, predispatch = market
    frame = predispatch_frame
    known = frame.groupby("PREDISPATCH_RUN_DATETIME")["LASTCHANGED"].transform("max")
    rng = np.random.default_rng(3)
    start = datetime(2021, 1, 1)
    for _ in range(25):
        as_of = start + timedelta(seconds=int(rng.integers(0, 32 * 86400)))
        region = str(rng.choice(["NSW1", "QLD1", "SA1", "TAS1", "VIC1"]))
        visible = frame[(known <= pd.Timestamp(as_of)) & (frame["REGIONID"] == region)]
        run = predispatch.latest_run(region, as_of)
        if visible.empty:
            assert run is None
            continue
        assert run is not None
        newest = visible["PREDISPATCH_RUN_DATETIME"].max()
        rows = visible[visible["PREDISPATCH_RUN_DATETIME"] == newest].sort_values("DATETIME")
        assert run.run_time == newest.to_pydatetime()
        assert run.known_at <= as_of
        np.testing.assert_array_equal(run.periods, rows["DATETIME"].to_numpy(dtype="datetime64[s]"))
        np.testing.assert_array_equal(run.price[:, 0], rows["RRP"].to_numpy(dtype=np.float64))
        np.testing.assert_array_equal(run.price[:, -1], rows["LOWERREGRRP"].to_numpy(dtype=np.float64))


def test_latest_run_boundaries(market: tuple[DispatchPrices, PredispatchPrices]) -> None:
    _, predispatch = market
    assert predispatch.latest_run("SA1", datetime(2021, 1, 1, 4, 1, 12)) is None
    run = predispatch.latest_run("SA1", datetime(2021, 1, 1, 4, 1, 13))
    assert run is not None and run.run_time == datetime(2021, 1, 1, 4, 30)
    with pytest.raises(KeyError, match="SA1"):
        predispatch.latest_run("XX1", datetime(2021, 1, 5))


def _predispatch_rows(run: str, changed: str, regions: tuple[str, ...],
                      price: float) -> list[dict[str, object]]:
    return [{"PREDISPATCH_RUN_DATETIME": run, "DATETIME": period, "REGIONID": region, "RRP": price,
             "RAISEREGRRP": price / 10, "LASTCHANGED": changed, "INTERVENTION": 0}
            for region in regions for period in ("2021/01/01 05:00:00", "2021/01/01 05:30:00")]


def test_latest_run_is_newest_by_run_time_with_rows_for_the_region(tmp_path: Path) -> None:
    rows = (_predispatch_rows("2021/01/01 04:30:00", "2021/01/01 04:01:00", ("SA1", "VIC1"), 1.0)
            # Run 05:00 is republished late (known 05:40), after run 05:30 (known 05:01): not newest.
            + _predispatch_rows("2021/01/01 05:00:00", "2021/01/01 05:40:00", ("SA1", "VIC1"), 2.0)
            + _predispatch_rows("2021/01/01 05:30:00", "2021/01/01 05:01:00", ("SA1",), 3.0))
    rows.append({**rows[0], "RRP": 99.0, "INTERVENTION": 1})
    path = tmp_path / "PUBLIC_DVD_PREDISPATCHPRICE_x.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    predispatch = load_predispatch_prices(path)
    assert predispatch.products == ("ENERGY", "RAISEREG")

    def run_price(region: str, as_of: datetime) -> float | None:
        run = predispatch.latest_run(region, as_of)
        return None if run is None else float(run.price[0, 0])

    assert run_price("SA1", datetime(2021, 1, 1, 4, 0)) is None
    assert run_price("SA1", datetime(2021, 1, 1, 4, 30)) == 1.0
    assert run_price("SA1", datetime(2021, 1, 1, 5, 10)) == 3.0
    assert run_price("SA1", datetime(2021, 1, 1, 5, 50)) == 3.0  # 05:30 is newer than the late 05:00
    assert run_price("VIC1", datetime(2021, 1, 1, 5, 10)) == 1.0  # 05:30 has no VIC1 rows
    assert run_price("VIC1", datetime(2021, 1, 1, 5, 50)) == 2.0
    run = predispatch.latest_run("VIC1", datetime(2021, 1, 1, 5, 50))
    assert run is not None and run.known_at == datetime(2021, 1, 1, 5, 40)
    np.testing.assert_array_equal(run.price[:, 1], [0.2, 0.2])


def test_predispatch_run_time_from_seqno_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "predispatchprice.csv"
    path.write_text("PREDISPATCHSEQNO,REGIONID,DATETIME,RRP,LASTCHANGED\n"
                    "2021010102,SA1,2021/01/01 05:30:00,5,2021/01/01 04:31:00\n")
    run = load_predispatch_prices(path).latest_run("SA1", datetime(2021, 1, 1, 5))
    assert run is not None and run.run_time == datetime(2021, 1, 1, 5, 0)
    path.write_text("REGIONID,DATETIME,RRP\nSA1,2021/01/01 05:30:00,5\n")
    with pytest.raises(MmsFormatError, match=r"predispatchprice\.csv.*LASTCHANGED"):
        load_predispatch_prices(path)
