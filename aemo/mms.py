"""AEMO's price tables (DISPATCHPRICE, PREDISPATCHPRICE) as the platform's compact numpy structures.

Files may be parquet, plain CSV (one header row) or raw MMS CSV as AEMO publishes it (``C`` / ``I`` / ``D``
rows), optionally zipped. Raw MMS CSV is read by the one MMS reader, :mod:`aemo.mms_csv` through
:mod:`aemo.archive_files`, and normalised by the table schemas of :mod:`aemo.tables`, exactly as the market
store ingests it. Column names are AEMO's. All times are naive market times (AEST, UTC+10), interval-ending.
Prices are $/MWh for ENERGY (column RRP) and $/MW/h for FCAS (columns ``RAISE...RRP`` / ``LOWER...RRP``,
product name without the RRP suffix). Rows with INTERVENTION != 0 (intervention pricing runs) are excluded.

The conversions from rows to structures are pure (:func:`dispatch_prices_from_frame`,
:func:`predispatch_prices_from_frame`) and shared by the files read here and the market store
(:mod:`aemo.store_prices`). The product list always comes from the data, in column order: ENERGY first,
then each FCAS price column holding at least one price (8 FCAS markets before 9 October 2023, 10 after).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aemo.archive_files import csv_members, read_reports
from aemo.errors import AemoDataError, MmsFormatError
from aemo.tables import TableSchema, normalise, schema_named
from algorithms.common.products import ENERGY, LOWER_PREFIX, RAISE_PREFIX
from algorithms.market.depth import local_dispatch_column
from algorithms.market.prices import DispatchPrices, PredispatchPrices, RunRowsError, index_runs

ENERGY_COLUMN = "RRP"
FCAS_COLUMN_PATTERN = re.compile(rf"^({RAISE_PREFIX}|{LOWER_PREFIX})\w+RRP$")
MMS_TIME_FORMAT = "%Y/%m/%d %H:%M:%S"
DISPATCH_REQUIRED = ("SETTLEMENTDATE", "REGIONID", "RRP")
PREDISPATCH_REQUIRED = ("DATETIME", "REGIONID", "RRP", "LASTCHANGED")
DISPATCH_TABLE = "DISPATCHPRICE"
PREDISPATCH_TABLE = "PREDISPATCHPRICE"
# Market depth: the regional solution, whose <service>LOCALDISPATCH columns say what each region enabled.
REGION_SUM_TABLE = "DISPATCHREGIONSUM"
REGION_SUM_REQUIRED = ("SETTLEMENTDATE", "REGIONID")
_REQUIRED = {DISPATCH_TABLE: DISPATCH_REQUIRED, PREDISPATCH_TABLE: PREDISPATCH_REQUIRED,
             REGION_SUM_TABLE: REGION_SUM_REQUIRED}
_SUFFIX_PREFERENCE = (".parquet", ".csv", ".zip")


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------


def _is_raw_mms(data: bytes) -> bool:
    """Whether CSV bytes are in AEMO's raw MMS layout (a leading ``C,`` or ``I,`` row)."""
    first_line = next((line for line in data.lstrip(b"\xef\xbb\xbf").splitlines() if line.strip()), b"")
    return first_line.startswith((b"C,", b"I,"))


def _raw_mms_frame(data: bytes, source: str, schema: TableSchema) -> pd.DataFrame:
    """The rows of ``schema`` in a raw MMS file (CSV or zip bytes), read by :mod:`aemo.mms_csv` and
    :mod:`aemo.archive_files` and normalised by :func:`aemo.tables.normalise`, exactly as the store reads
    them (every table of the file that carries ``schema``, every version, concatenated)."""
    seen: list[str] = []

    def wanted(report_type: str, sub_type: str) -> bool:
        seen.append(f"{report_type}.{sub_type}" if sub_type else report_type)
        return schema.carries(report_type, sub_type)

    frames = [normalise(table, schema) for report in read_reports(data, source, wanted=wanted)
              for table in report.tables]
    if not frames:
        carriers = " or ".join(f"{t}.{s}" if s else t for t, s in schema.sources)
        held = ", ".join(dict.fromkeys(seen)) or "none"
        raise MmsFormatError(f"{source}: no {schema.name} table ({carriers}) in the file (tables: {held})")
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _plain_csv_frame(data: bytes, source: str) -> pd.DataFrame:
    """A plain CSV (one header row, AEMO's column names)."""
    frame = pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    if frame.columns.size == 0:
        raise MmsFormatError(f"{source}: empty CSV")
    return frame


def read_mms_table(path: Path, table: str) -> pd.DataFrame:
    """Read store table ``table`` (``DISPATCHPRICE`` or ``PREDISPATCHPRICE``) from a parquet, plain CSV, raw
    MMS CSV or zipped file (AEMO's column names).

    Raw MMS CSV (leading ``C,`` / ``I,`` rows, as AEMO publishes it, zipped or not) is read by the one MMS
    reader, :mod:`aemo.mms_csv` via :func:`aemo.archive_files.read_reports`, and normalised by the table's
    schema (:mod:`aemo.tables`: typed columns, the pricing run only). Raises MmsFormatError naming the file
    when it cannot be read or lacks a required column.
    """
    path = Path(path)
    schema = schema_named(table)
    required = _REQUIRED[schema.name]
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in {".csv", ".zip"}:
            members = csv_members(path.read_bytes(), path.name)
            if len(members) != 1 and not all(_is_raw_mms(member.data) for member in members):
                raise MmsFormatError(f"{path}: expected exactly one CSV inside the zip, found "
                                     f"{[member.source for member in members]}")
            if all(_is_raw_mms(member.data) for member in members):
                parts = [_raw_mms_frame(member.data, member.source, schema) for member in members]
                frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
            else:
                frame = _plain_csv_frame(members[0].data, str(path))
        else:
            raise MmsFormatError(f"{path}: unsupported file type {suffix!r} "
                                 "(expected .parquet, .csv or .zip)")
    except AemoDataError:
        raise
    except (OSError, ValueError) as exc:
        raise MmsFormatError(f"{path}: cannot be read: {exc}") from exc
    frame.columns = [str(column).strip().upper() for column in frame.columns]
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise MmsFormatError(f"{path}: missing required column(s) {', '.join(missing)}; "
                             f"found {', '.join(frame.columns)}")
    return frame


def _market_times(column: pd.Series, source: str, name: str) -> np.ndarray:
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
                raise MmsFormatError(f"{source}: column {name} has values that are not times: {exc}") from exc
    if bool(parsed.isna().any()):
        raise MmsFormatError(f"{source}: column {name} has {int(parsed.isna().sum())} empty value(s)")
    return parsed.to_numpy(dtype="datetime64[s]")


def _numbers(frame: pd.DataFrame, columns: Sequence[str], source: str) -> np.ndarray:
    """float64 array (n_rows, n_columns) of numeric columns; empty cells become NaN."""
    try:
        return np.column_stack([pd.to_numeric(frame[column]).to_numpy(dtype=np.float64)
                                for column in columns]) if columns else np.empty((len(frame), 0))
    except (ValueError, TypeError) as exc:
        raise MmsFormatError(f"{source}: non-numeric value in price columns: {exc}") from exc


def _without_intervention(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if "INTERVENTION" not in frame.columns:
        return frame
    try:
        intervention = pd.to_numeric(frame["INTERVENTION"])
    except (ValueError, TypeError) as exc:
        raise MmsFormatError(f"{source}: column INTERVENTION is not numeric: {exc}") from exc
    return frame.loc[(intervention == 0).to_numpy()]


def price_columns(columns: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(product names, source columns): ENERGY for RRP, then each RAISE*/LOWER* ...RRP column in order."""
    fcas = [column for column in columns if FCAS_COLUMN_PATTERN.match(column)]
    return (ENERGY, *(column[: -len("RRP")] for column in fcas)), (ENERGY_COLUMN, *fcas)


def _priced_products(frame: pd.DataFrame, source: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(products, values): ENERGY and every FCAS product with at least one price in ``frame`` (a column
    that is empty throughout, e.g. RAISE1SEC before its market started, is no product of the data), and
    their prices (n_rows, n_products; NaN where empty)."""
    products, columns = price_columns(list(frame.columns))
    values = _numbers(frame, columns, source)
    keep = np.ones(len(products), dtype=bool)
    keep[1:] = np.isfinite(values[:, 1:]).any(axis=0)
    return tuple(p for p, kept in zip(products, keep, strict=True) if kept), values[:, keep]


def _regions(frame: pd.DataFrame, source: str) -> np.ndarray:
    regions = frame["REGIONID"].astype(str).str.strip().to_numpy(dtype=object)
    if len(regions) and bool((regions == "").any()):
        raise MmsFormatError(f"{source}: column REGIONID has empty values")
    return regions


# --------------------------------------------------------------------------------------------------
# File discovery
# --------------------------------------------------------------------------------------------------


def _is_dispatch_name(name: str) -> bool:
    upper = name.upper()
    return DISPATCH_TABLE in upper and "PREDISPATCH" not in upper


def _is_predispatch_name(name: str) -> bool:
    return PREDISPATCH_TABLE in name.upper()


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


def _read_all(files: list[Path], table: str) -> tuple[pd.DataFrame, str]:
    frames = [read_mms_table(file, table) for file in files]
    label = str(files[0]) if len(files) == 1 else f"{files[0].parent}/{{{', '.join(f.name for f in files)}}}"
    if len(frames) == 1:
        return frames[0], label
    common = [column for column in frames[0].columns if all(column in frame.columns for frame in frames)]
    return pd.concat([frame[common] for frame in frames], ignore_index=True), label


# --------------------------------------------------------------------------------------------------
# DISPATCHPRICE
# --------------------------------------------------------------------------------------------------


def dispatch_prices_from_frame(frame: pd.DataFrame, source: str) -> DispatchPrices:
    """The :class:`DispatchPrices` of DISPATCHPRICE rows (AEMO's columns; SETTLEMENTDATE as text or
    datetime, interval-ending AEST). Pure. Rows with INTERVENTION != 0 are dropped; the products are ENERGY
    and every FCAS price column holding a price ($/MWh, $/MW/h). ``source`` names the data in errors.

    Raises MmsFormatError when a value cannot be parsed or a (region, interval) appears twice.
    """
    frame = _without_intervention(frame, source)
    products, values = _priced_products(frame, source)
    times = _market_times(frame["SETTLEMENTDATE"], source, "SETTLEMENTDATE")
    row_regions = _regions(frame, source)
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


def with_region_enablement(dispatch: DispatchPrices, frame: pd.DataFrame, source: str) -> DispatchPrices:
    """``dispatch`` with the market depth of DISPATCHREGIONSUM rows ``frame`` attached
    (:attr:`DispatchPrices.region_enabled_mw`): for each region, interval (SETTLEMENTDATE, interval-ending
    AEST) and FCAS product of ``dispatch``, the MW the region enabled (``<product>LOCALDISPATCH``,
    :func:`algorithms.market.depth.local_dispatch_column`, 1-second markets included). The physical run
    counts: the ``INTERVENTION = 1`` row where an interval has one, else the ``INTERVENTION = 0`` row. Rows of
    other regions or intervals are ignored; a product whose column the rows lack stays NaN (no cap known).
    Pure, vectorised. Without rows, ``dispatch`` unchanged. MmsFormatError for unparseable values."""
    if frame.empty or len(dispatch.intervals) == 0:
        return dispatch
    fcas = [product for product in dispatch.products if product != ENERGY]
    columns = {product: local_dispatch_column(product) for product in fcas}
    present = [product for product in fcas if columns[product] in frame.columns]
    times = _market_times(frame["SETTLEMENTDATE"], source, "SETTLEMENTDATE")
    regions = _regions(frame, source).astype(str)
    intervention = (pd.to_numeric(frame["INTERVENTION"]).to_numpy(dtype=np.float64)
                    if "INTERVENTION" in frame.columns else np.zeros(len(frame)))
    values = _numbers(frame, [columns[product] for product in present], source)
    known_regions = np.array(dispatch.regions, dtype=str)
    region_pos = np.array([dispatch.regions.index(r) if r in dispatch.regions else -1 for r in regions.tolist()]
                          if len(known_regions) else [-1] * len(regions), dtype=np.int64)
    interval_pos = np.searchsorted(dispatch.intervals, times)
    clipped = np.minimum(interval_pos, len(dispatch.intervals) - 1)
    kept = (region_pos >= 0) & (interval_pos < len(dispatch.intervals)) & (dispatch.intervals[clipped] == times)
    # One row per (region, interval): the physical run's where there is one (sorted last, kept).
    candidates = np.flatnonzero(kept)
    key = region_pos[candidates] * len(dispatch.intervals) + interval_pos[candidates]
    order = np.lexsort(((intervention[candidates] != 0).astype(np.int64), key))
    ordered_keys = key[order]
    last_of_key = np.append(ordered_keys[1:] != ordered_keys[:-1], True)
    rows = candidates[order][last_of_key]
    enabled = np.full(dispatch.price.shape, np.nan)
    product_pos = [dispatch.products.index(product) for product in present]
    for column_index, position in enumerate(product_pos):
        enabled[region_pos[rows], interval_pos[rows], position] = values[rows, column_index]
    return DispatchPrices(intervals=dispatch.intervals, regions=dispatch.regions, products=dispatch.products,
                          price=dispatch.price, region_enabled_mw=enabled)


def load_region_enablement(dispatch: DispatchPrices, files: Sequence[Path]) -> DispatchPrices:
    """``dispatch`` with the market depth of DISPATCHREGIONSUM ``files`` (parquet, CSV, raw MMS or zip, in
    order) attached (:func:`with_region_enablement`); unchanged without files. MmsFormatError naming the file
    when one cannot be read."""
    if not files:
        return dispatch
    frame, label = _read_all(list(files), REGION_SUM_TABLE)
    return with_region_enablement(dispatch, frame, label)


def load_dispatch_prices(path: Path) -> DispatchPrices:
    """Load DISPATCHPRICE from a parquet/CSV/raw MMS/zip file, or from a folder (every file named
    *DISPATCHPRICE*, not PREDISPATCH, of the preferred format). Prices $/MWh (ENERGY) and $/MW/h (FCAS).

    Raises MmsFormatError naming the file when SETTLEMENTDATE/REGIONID/RRP are missing, a value cannot
    be parsed, or a (region, interval) appears twice after the INTERVENTION == 0 filter.
    """
    frame, label = _read_all(_table_files(Path(path), _is_dispatch_name, DISPATCH_TABLE), DISPATCH_TABLE)
    return dispatch_prices_from_frame(frame, label)


# --------------------------------------------------------------------------------------------------
# PREDISPATCHPRICE
# --------------------------------------------------------------------------------------------------


def _run_times(frame: pd.DataFrame, source: str) -> np.ndarray:
    """PREDISPATCH_RUN_DATETIME, or (older tables) derived from PREDISPATCHSEQNO = YYYYMMDDPP: trading day
    and half-hour period PP, the run time being 04:00 of that day + PP x 30 min."""
    if "PREDISPATCH_RUN_DATETIME" in frame.columns and not bool(frame["PREDISPATCH_RUN_DATETIME"].isna().any()):
        return _market_times(frame["PREDISPATCH_RUN_DATETIME"], source, "PREDISPATCH_RUN_DATETIME")
    if "PREDISPATCHSEQNO" not in frame.columns:
        raise MmsFormatError(f"{source}: missing required column(s) PREDISPATCH_RUN_DATETIME "
                             "(or PREDISPATCHSEQNO to derive it from)")
    seqno = frame["PREDISPATCHSEQNO"].astype(str).str.strip()
    if not bool(seqno.str.fullmatch(r"\d{10}").all()):
        raise MmsFormatError(f"{source}: PREDISPATCHSEQNO values must have the form YYYYMMDDPP")
    days = pd.to_datetime(seqno.str[:8], format="%Y%m%d").to_numpy(dtype="datetime64[s]")
    periods = seqno.str[8:].astype(int).to_numpy()
    half_hour = np.timedelta64(1800, "s")
    run_times: np.ndarray = days + np.timedelta64(4 * 3600, "s") + periods * half_hour
    return run_times


def predispatch_prices_from_frame(frame: pd.DataFrame, source: str,
                                  known_at_column: str = "LASTCHANGED") -> PredispatchPrices:
    """The :class:`PredispatchPrices` of PREDISPATCHPRICE rows (AEMO's columns). Pure.

    A run is identified by PREDISPATCH_RUN_DATETIME (or PREDISPATCHSEQNO); it becomes known at the latest
    ``known_at_column`` of its rows: LASTCHANGED in AEMO's tables, the publication time of the file that
    carried the run for live reports. Periods are half-hour period-ending AEST times (DATETIME). Prices $/MWh
    (ENERGY), $/MW/h (FCAS). Raises MmsFormatError for unparseable values or duplicate rows.
    """
    frame = _without_intervention(frame, source)
    products, values = _priced_products(frame, source)
    run_times = _run_times(frame, source)
    periods = _market_times(frame["DATETIME"], source, "DATETIME")
    changed = _market_times(frame[known_at_column], source, known_at_column)
    row_regions = _regions(frame, source).astype(str)

    try:
        index = index_runs(run_times, changed, row_regions, periods, values)
    except RunRowsError as exc:
        raise MmsFormatError(f"{source}: {exc} (INTERVENTION = 0)") from None
    return PredispatchPrices.from_index(index, products)


def load_predispatch_prices(path: Path) -> PredispatchPrices:
    """Load PREDISPATCHPRICE from a parquet/CSV/raw MMS/zip file or a folder (files named *PREDISPATCHPRICE*).

    See :func:`predispatch_prices_from_frame`. Raises MmsFormatError naming the file for missing columns,
    unparseable values or duplicate rows.
    """
    frame, label = _read_all(_table_files(Path(path), _is_predispatch_name, PREDISPATCH_TABLE),
                             PREDISPATCH_TABLE)
    return predispatch_prices_from_frame(frame, label)


# --------------------------------------------------------------------------------------------------
# Both tables from a folder
# --------------------------------------------------------------------------------------------------


def has_predispatch_file(path: Path) -> bool:
    """Whether ``path`` (a folder, or a file) holds a PREDISPATCHPRICE file of a readable type."""
    path = Path(path)
    if path.is_file():
        return _is_predispatch_name(path.name)
    return path.is_dir() and any(child.is_file() and _is_predispatch_name(child.name)
                                 and child.suffix.lower() in _SUFFIX_PREFERENCE for child in path.iterdir())


def load_market_data(data_dir: Path) -> tuple[DispatchPrices, PredispatchPrices]:
    """Load DISPATCHPRICE and PREDISPATCHPRICE from ``data_dir`` (parquet preferred, CSV and zip accepted).
    Without a PREDISPATCHPRICE file the pre-dispatch table is empty (:meth:`PredispatchPrices.empty`).

    Raises MmsFormatError naming the folder when it does not exist or holds no DISPATCHPRICE file.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise MmsFormatError(f"{folder}: market data folder does not exist")
    dispatch = load_dispatch_prices(folder)
    if not has_predispatch_file(folder):
        return dispatch, PredispatchPrices.empty()
    return dispatch, load_predispatch_prices(folder)
