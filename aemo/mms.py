"""Loading AEMO MMS price tables (DISPATCHPRICE, PREDISPATCHPRICE) into compact numpy structures.

Files may be parquet, plain CSV (one header row) or raw MMS CSV as published on nemweb (a leading
``C,...`` comment line, ``I,...`` header rows and ``D,...`` data rows), optionally zipped. Column names
are AEMO's. All times are naive market times (AEST, UTC+10), interval-ending. Prices are $/MWh for
ENERGY (column RRP) and $/MW/h for FCAS (columns ``RAISE...RRP`` / ``LOWER...RRP``, product name without
the RRP suffix). Rows with INTERVENTION != 0 (intervention pricing runs) are excluded.

The product list always comes from the data, in column order: ENERGY first, then each FCAS column.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aemo.errors import MmsFormatError
from algorithms.common.products import ENERGY, LOWER_PREFIX, RAISE_PREFIX
from algorithms.market.prices import DispatchPrices, PredispatchPrices, RunRowsError, index_runs

ENERGY_COLUMN = "RRP"
FCAS_COLUMN_PATTERN = re.compile(rf"^({RAISE_PREFIX}|{LOWER_PREFIX})\w+RRP$")
MMS_TIME_FORMAT = "%Y/%m/%d %H:%M:%S"
DISPATCH_REQUIRED = ("SETTLEMENTDATE", "REGIONID", "RRP")
PREDISPATCH_REQUIRED = ("DATETIME", "REGIONID", "RRP", "LASTCHANGED")
_SUFFIX_PREFERENCE = (".parquet", ".csv", ".zip")
_SECOND = np.timedelta64(1, "s")


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if name.lower().endswith(".csv")]
            if len(members) != 1:
                raise MmsFormatError(f"{path}: expected exactly one CSV inside the zip, found {members}")
            return archive.read(members[0]).decode("utf-8-sig")
    return path.read_text(encoding="utf-8-sig")


_MMS_HEADER_ROW = re.compile(r"^I,[^\r\n]*", re.MULTILINE)
_MMS_BLOCK_END = re.compile(r"^[IC],", re.MULTILINE)


def _read_mms_csv(path: Path, text: str, required: Sequence[str]) -> pd.DataFrame:
    """Parse the raw MMS layout: pick the first table whose header holds every required column.

    The table's block runs from its ``I,`` row to the next ``I,`` or ``C,`` row and must hold only
    ``D,`` rows.
    """
    tables = [(match.end(), next(csv.reader([match.group(0)]))) for match in _MMS_HEADER_ROW.finditer(text)]
    if not tables:
        raise MmsFormatError(f"{path}: raw MMS CSV without any 'I,' header row")
    chosen = next((t for t in tables if all(column in t[1][4:] for column in required)), None)
    if chosen is None:
        headers = "; ".join(",".join(t[1][1:3]) for t in tables)
        raise MmsFormatError(f"{path}: no table has the columns {', '.join(required)} (tables: {headers})")
    header_end, header = chosen
    block_end = _MMS_BLOCK_END.search(text, header_end)
    body = text[header_end: block_end.start() if block_end else len(text)].strip("\r\n")
    names = ["_row_type", "_report", "_table", "_version", *header[4:]]
    frame = pd.read_csv(io.StringIO(body), header=None, names=names, keep_default_na=False, na_values=[""])
    unexpected = frame["_row_type"].astype(str) != "D"
    if bool(unexpected.any()):
        raise MmsFormatError(f"{path}: table {','.join(header[1:3])} has {int(unexpected.sum())} row(s) "
                             "that are not 'D,' data rows")
    return frame.drop(columns=names[:4])


def read_mms_table(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """Read one MMS table from a parquet, plain CSV, raw MMS CSV or zipped CSV file (AEMO's column names).

    Raises MmsFormatError naming the file when it cannot be read or lacks a ``required`` column.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in {".csv", ".zip"}:
            text = _read_text(path)
            first_line = next((line for line in text.splitlines() if line.strip()), "")
            if first_line.startswith(("C,", "I,")):
                frame = _read_mms_csv(path, text, required)
            else:
                frame = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
        else:
            raise MmsFormatError(f"{path}: unsupported file type {suffix!r} "
                                 "(expected .parquet, .csv or .zip)")
    except MmsFormatError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise MmsFormatError(f"{path}: cannot be read: {exc}") from exc
    frame.columns = [str(column).strip().upper() for column in frame.columns]
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise MmsFormatError(f"{path}: missing required column(s) {', '.join(missing)}; "
                             f"found {', '.join(frame.columns)}")
    return frame


def _market_times(column: pd.Series, path: Path, name: str) -> np.ndarray:
    """datetime64[s] AEST of a text ("YYYY/MM/DD HH:MM:SS" or ISO 8601) or datetime column."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert("Etc/GMT-10").dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        parsed = column
    else:
        text = column.astype(str).str.strip().str.strip('"')
        try:
            parsed = pd.to_datetime(text, format=MMS_TIME_FORMAT)
        except ValueError:
            try:
                parsed = pd.to_datetime(text, format="ISO8601")
            except ValueError as exc:
                raise MmsFormatError(f"{path}: column {name} has values that are not times: {exc}") from exc
    if bool(parsed.isna().any()):
        raise MmsFormatError(f"{path}: column {name} has {int(parsed.isna().sum())} empty value(s)")
    return parsed.to_numpy(dtype="datetime64[s]")


def _numbers(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """float64 array (n_rows, n_columns) of numeric columns; empty cells become NaN."""
    try:
        return np.column_stack([pd.to_numeric(frame[column]).to_numpy(dtype=np.float64)
                                for column in columns]) if columns else np.empty((len(frame), 0))
    except (ValueError, TypeError) as exc:
        raise MmsFormatError(f"{path}: non-numeric value in price columns: {exc}") from exc


def _without_intervention(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if "INTERVENTION" not in frame.columns:
        return frame
    try:
        intervention = pd.to_numeric(frame["INTERVENTION"])
    except (ValueError, TypeError) as exc:
        raise MmsFormatError(f"{path}: column INTERVENTION is not numeric: {exc}") from exc
    return frame.loc[(intervention == 0).to_numpy()]


def price_columns(columns: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(product names, source columns): ENERGY for RRP, then each RAISE*/LOWER* ...RRP column in order."""
    fcas = [column for column in columns if FCAS_COLUMN_PATTERN.match(column)]
    return (ENERGY, *(column[: -len("RRP")] for column in fcas)), (ENERGY_COLUMN, *fcas)


def _regions(frame: pd.DataFrame, path: Path) -> np.ndarray:
    regions = frame["REGIONID"].astype(str).str.strip().to_numpy(dtype=object)
    if len(regions) and bool((regions == "").any()):
        raise MmsFormatError(f"{path}: column REGIONID has empty values")
    return regions


# --------------------------------------------------------------------------------------------------
# File discovery
# --------------------------------------------------------------------------------------------------


def _is_dispatch_name(name: str) -> bool:
    upper = name.upper()
    return "DISPATCHPRICE" in upper and "PREDISPATCH" not in upper


def _is_predispatch_name(name: str) -> bool:
    return "PREDISPATCHPRICE" in name.upper()


def _table_files(path: Path, matches: Callable[[str], bool], table: str) -> list[Path]:
    """The files of ``table`` at ``path``: the file itself, or in a folder every matching file of the
    preferred format (parquet, then CSV, then zip), sorted by name (one per month, concatenated)."""
    if not path.exists():
        raise MmsFormatError(f"{path}: no such file or folder ({table})")
    if path.is_file():
        return [path]
    candidates = [child for child in path.iterdir() if child.is_file() and matches(child.name)]
    for suffix in _SUFFIX_PREFERENCE:
        chosen = sorted(child for child in candidates if child.suffix.lower() == suffix)
        if chosen:
            return chosen
    raise MmsFormatError(f"{path}: no {table} file (.parquet, .csv or .zip with {table} in its name)")


def _read_all(files: list[Path], required: Sequence[str]) -> tuple[pd.DataFrame, str]:
    frames = [read_mms_table(file, required) for file in files]
    label = str(files[0]) if len(files) == 1 else f"{files[0].parent}/{{{', '.join(f.name for f in files)}}}"
    if len(frames) == 1:
        return frames[0], label
    common = [column for column in frames[0].columns if all(column in frame.columns for frame in frames)]
    return pd.concat([frame[common] for frame in frames], ignore_index=True), label


# --------------------------------------------------------------------------------------------------
# DISPATCHPRICE
# --------------------------------------------------------------------------------------------------


def load_dispatch_prices(path: Path) -> DispatchPrices:
    """Load DISPATCHPRICE from a parquet/CSV file, or from a folder (every file named *DISPATCHPRICE*,
    not PREDISPATCH, of the preferred format). Prices $/MWh (ENERGY) and $/MW/h (FCAS).

    Raises MmsFormatError naming the file when SETTLEMENTDATE/REGIONID/RRP are missing, a value cannot
    be parsed, or a (region, interval) appears twice after the INTERVENTION == 0 filter.
    """
    frame, label = _read_all(_table_files(Path(path), _is_dispatch_name, "DISPATCHPRICE"), DISPATCH_REQUIRED)
    return dispatch_prices_from_frame(frame, label)


def dispatch_prices_from_frame(frame: pd.DataFrame, label: str) -> DispatchPrices:
    """DISPATCHPRICE rows (AEMO's columns: SETTLEMENTDATE, REGIONID, RRP, FCAS ``…RRP``; INTERVENTION
    optional) as :class:`DispatchPrices`; ``label`` names their source in errors. Same rules and errors as
    :func:`load_dispatch_prices`."""
    source = Path(label)
    frame = _without_intervention(frame, source)
    products, columns = price_columns(list(frame.columns))
    times = _market_times(frame["SETTLEMENTDATE"], source, "SETTLEMENTDATE")
    row_regions = _regions(frame, source)
    values = _numbers(frame, columns, source)
    intervals = np.unique(times)
    regions = np.unique(row_regions.astype(str)) if len(row_regions) else np.array([], dtype=str)
    region_pos = np.searchsorted(regions, row_regions.astype(str))
    interval_pos = np.searchsorted(intervals, times)
    flat = region_pos.astype(np.int64) * len(intervals) + interval_pos
    unique_flat, counts = np.unique(flat, return_counts=True)
    if bool((counts > 1).any()):
        duplicate = int(unique_flat[np.argmax(counts > 1)])
        region, interval = regions[duplicate // len(intervals)], intervals[duplicate % len(intervals)]
        raise MmsFormatError(f"{source}: {int((counts > 1).sum())} duplicate (REGIONID, SETTLEMENTDATE) "
                             f"rows with INTERVENTION = 0, e.g. {region} {interval}")
    price = np.full((len(regions), len(intervals), len(products)), np.nan)
    price[region_pos, interval_pos, :] = values
    return DispatchPrices(intervals=intervals.astype("datetime64[s]"), regions=tuple(str(r) for r in regions),
                          products=products, price=price)


# --------------------------------------------------------------------------------------------------
# PREDISPATCHPRICE
# --------------------------------------------------------------------------------------------------


def _run_times(frame: pd.DataFrame, path: Path) -> np.ndarray:
    """PREDISPATCH_RUN_DATETIME, or (older tables) derived from PREDISPATCHSEQNO = YYYYMMDDPP: trading day
    and half-hour period PP, the run time being 04:00 of that day + PP x 30 min."""
    if "PREDISPATCH_RUN_DATETIME" in frame.columns:
        return _market_times(frame["PREDISPATCH_RUN_DATETIME"], path, "PREDISPATCH_RUN_DATETIME")
    if "PREDISPATCHSEQNO" not in frame.columns:
        raise MmsFormatError(f"{path}: missing required column(s) PREDISPATCH_RUN_DATETIME "
                             "(or PREDISPATCHSEQNO to derive it from)")
    seqno = frame["PREDISPATCHSEQNO"].astype(str).str.strip()
    if not bool(seqno.str.fullmatch(r"\d{10}").all()):
        raise MmsFormatError(f"{path}: PREDISPATCHSEQNO values must have the form YYYYMMDDPP")
    days = pd.to_datetime(seqno.str[:8], format="%Y%m%d").to_numpy(dtype="datetime64[s]")
    periods = seqno.str[8:].astype(int).to_numpy()
    half_hour = np.timedelta64(1800, "s")
    run_times: np.ndarray = days + np.timedelta64(4 * 3600, "s") + periods * half_hour
    return run_times


def load_predispatch_prices(path: Path) -> PredispatchPrices:
    """Load PREDISPATCHPRICE from a parquet/CSV file or a folder (files named *PREDISPATCHPRICE*).

    A run is identified by PREDISPATCH_RUN_DATETIME; it becomes known at the latest LASTCHANGED of its
    rows. Periods are half-hour period-ending AEST times (DATETIME). Prices $/MWh (ENERGY), $/MW/h (FCAS).
    Raises MmsFormatError naming the file for missing columns, unparseable values or duplicate rows.
    """
    frame, label = _read_all(_table_files(Path(path), _is_predispatch_name, "PREDISPATCHPRICE"),
                             PREDISPATCH_REQUIRED)
    return predispatch_prices_from_frame(frame, label)


def predispatch_prices_from_frame(frame: pd.DataFrame, label: str,
                                  known_at_column: str = "LASTCHANGED") -> PredispatchPrices:
    """PREDISPATCHPRICE rows (AEMO's columns) as :class:`PredispatchPrices`; ``label`` names their source.

    A run becomes known at the latest ``known_at_column`` of its rows: LASTCHANGED in AEMO's tables, the
    publication time of the file that carried the run for live reports. Otherwise as
    :func:`load_predispatch_prices`.
    """
    source = Path(label)
    frame = _without_intervention(frame, source)
    products, columns = price_columns(list(frame.columns))
    run_times = _run_times(frame, source)
    periods = _market_times(frame["DATETIME"], source, "DATETIME")
    changed = _market_times(frame[known_at_column], source, known_at_column)
    row_regions = _regions(frame, source).astype(str)
    values = _numbers(frame, columns, source)

    try:
        index = index_runs(run_times, changed, row_regions, periods, values)
    except RunRowsError as exc:
        raise MmsFormatError(f"{source}: {exc} (INTERVENTION = 0)") from None
    return PredispatchPrices.from_index(index, products)


# --------------------------------------------------------------------------------------------------
# Both tables from a folder
# --------------------------------------------------------------------------------------------------


def load_market_data(data_dir: Path) -> tuple[DispatchPrices, PredispatchPrices]:
    """Load DISPATCHPRICE and PREDISPATCHPRICE from ``data_dir`` (parquet preferred, CSV accepted).

    Raises MmsFormatError naming the folder and the missing table when either is absent.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise MmsFormatError(f"{folder}: market data folder does not exist")
    return load_dispatch_prices(folder), load_predispatch_prices(folder)
