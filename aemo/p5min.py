"""AEMO's 5-minute pre-dispatch (P5MIN REGIONSOLUTION) as the platform's :class:`P5minPrices` table.

AEMO runs P5MIN every 5 minutes. A run's RUN_DATETIME is the end of the first interval it covers (the
dispatch interval in progress when it is published, about 4-5 minutes before that time: see the file names
``PUBLIC_P5MIN_<run>_<published>``); it covers 12 five-minute intervals (INTERVAL_DATETIME, interval-ending
AEST) with the regional energy price (RRP, $/MWh) and every FCAS price (``RAISE6SECRRP`` …, $/MW/h; the
1-second markets since 9 October 2023). Rows with INTERVENTION != 0 are not the pricing run and are dropped.

When a run became known: the latest LASTCHANGED of its rows where the rows carry one (AEMO stamps every
row, in the current reports and in the monthly archive alike); otherwise the publication time of the file
that carried it (its ``C`` header, else the publication stamp of its name). A run is never known earlier.

Sources: AEMO's files as published (:func:`load_p5min_files`, parsed by :mod:`aemo.mms_csv` and typed by
:mod:`aemo.tables`) and the local market store (:func:`load_p5min_store`). Both end in
:func:`p5min_prices`, which also serves any frame with AEMO's column names.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from aemo.archive_files import parse_file_name, read_file
from aemo.errors import FileNameError, MmsFormatError
from aemo.mms_csv import DATETIME_DTYPE
from aemo.store import PUBLISHED_COLUMN, MarketStore
from aemo.tables import ENERGY_PRICE_COLUMN, FCAS_PRICE_COLUMN, normalise, price_products, schema_named
from algorithms.market.prices import P5minPrices, RunRowsError, index_runs

P5MIN_TABLE = "P5MIN_REGIONSOLUTION"
REQUIRED_COLUMNS = ("RUN_DATETIME", "INTERVAL_DATETIME", "REGIONID", ENERGY_PRICE_COLUMN)


def _price_columns(columns: Sequence[str]) -> list[str]:
    return [ENERGY_PRICE_COLUMN, *(column for column in columns if FCAS_PRICE_COLUMN.match(column))]


def _known_at(frame: pd.DataFrame, source: str) -> np.ndarray:
    """Per row: LASTCHANGED where given, else the publication time of its file (datetime64[s] AEST)."""
    known = pd.Series(pd.NaT, index=frame.index, dtype=DATETIME_DTYPE)
    if "LASTCHANGED" in frame.columns:
        known = pd.to_datetime(frame["LASTCHANGED"]).astype(DATETIME_DTYPE)
    if PUBLISHED_COLUMN in frame.columns:
        known = known.fillna(pd.to_datetime(frame[PUBLISHED_COLUMN]).astype(DATETIME_DTYPE))
    unknown = known.isna()
    if bool(unknown.any()):
        example = frame.loc[unknown].iloc[0]
        raise MmsFormatError(f"{source}: {int(unknown.sum())} P5MIN row(s) without LASTCHANGED or a publication "
                             f"time, e.g. run {example['RUN_DATETIME']} {example['REGIONID']}: cannot tell when "
                             "the run became known")
    return known.to_numpy(dtype="datetime64[s]")


def p5min_prices(frame: pd.DataFrame, source: str) -> P5minPrices:
    """The P5MIN table of a frame of REGIONSOLUTION rows with AEMO's column names (vectorised).

    Needs RUN_DATETIME, INTERVAL_DATETIME (datetimes, AEST), REGIONID and RRP; takes every ``…RRP`` FCAS
    column as a product (ENERGY first, then FCAS in column order; NaN where a row has no value); drops
    INTERVENTION != 0 rows when the column is there; a run is known at its latest LASTCHANGED, or (rows
    without one) at ``_published``, the publication time of its file. Raises MmsFormatError naming
    ``source`` for a missing column, a run whose publication time is unknown, or a duplicate
    (run, region, interval).
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise MmsFormatError(f"{source}: P5MIN rows lack the column(s) {', '.join(missing)}; "
                             f"found {', '.join(map(str, frame.columns))}")
    if "INTERVENTION" in frame.columns:
        frame = frame.loc[(pd.to_numeric(frame["INTERVENTION"]) == 0).to_numpy()]
    columns = _price_columns([str(column) for column in frame.columns])
    products = price_products(columns)
    try:
        values = frame[columns].apply(pd.to_numeric).to_numpy(dtype=np.float64)
        run_time = pd.to_datetime(frame["RUN_DATETIME"]).to_numpy(dtype="datetime64[s]")
        interval = pd.to_datetime(frame["INTERVAL_DATETIME"]).to_numpy(dtype="datetime64[s]")
    except (ValueError, TypeError) as exc:
        raise MmsFormatError(f"{source}: P5MIN rows with a value of the wrong kind: {exc}") from None
    regions = frame["REGIONID"].astype(str).str.strip().to_numpy()
    try:
        index = index_runs(run_time, _known_at(frame, source), regions, interval, values)
    except RunRowsError as exc:
        raise MmsFormatError(f"{source}: P5MIN {exc} (INTERVENTION = 0)") from None
    return P5minPrices.from_index(index, products)


def _file_published(path: Path) -> datetime | None:
    try:
        return parse_file_name(path.name).published
    except FileNameError:
        return None


def load_p5min_files(paths: Sequence[Path]) -> P5minPrices:
    """The P5MIN table of AEMO P5MIN report files as published (CSV or zip, ``PUBLIC_P5MIN_<run>_<published>``).

    Every REGIONSOLUTION table of every file is read (:mod:`aemo.mms_csv`, typed by
    :mod:`aemo.tables`); where two files carry the same run, region and interval the later publication wins.
    Raises the :mod:`aemo.errors` of a file that cannot be used (truncated, corrupt, missing columns) and
    MmsFormatError when the files hold no P5MIN REGIONSOLUTION row at all.
    """
    schema = schema_named(P5MIN_TABLE)
    frames: list[pd.DataFrame] = []
    for path in paths:
        for report in read_file(Path(path), wanted=schema.carries):
            published = report.header.created or _file_published(Path(path))
            for table in report.tables:
                if schema.carries(table.report_type, table.sub_type):
                    rows = normalise(table, schema)
                    frames.append(rows.assign(**{PUBLISHED_COLUMN: pd.Series(
                        pd.Timestamp(published) if published else pd.NaT, index=rows.index, dtype=DATETIME_DTYPE)}))
    if not frames:
        raise MmsFormatError(f"{', '.join(str(path) for path in paths) or 'no files'}: "
                             "no P5MIN REGIONSOLUTION rows")
    combined = pd.concat(frames, ignore_index=True).sort_values(PUBLISHED_COLUMN, kind="stable")
    combined = combined.drop_duplicates(list(schema.key_columns), keep="last")
    label = str(paths[0]) if len(paths) == 1 else f"{len(paths)} P5MIN files"
    return p5min_prices(combined, label)


def load_p5min_store(store: MarketStore, start: datetime | None = None, end: datetime | None = None, *,
                     regions: Collection[str] | None = None) -> P5minPrices:
    """The P5MIN table of the runs the market store holds with RUN_DATETIME in [start, end] (AEST; None:
    unbounded), optionally of some regions. Raises MmsFormatError when the store holds no such run."""
    frame = store.load(P5MIN_TABLE, start, end, regions=regions, provenance=True)
    if frame.empty:
        raise MmsFormatError(f"{store.root}: the market store holds no {P5MIN_TABLE} rows"
                             + (f" for runs {start} .. {end}" if start or end else ""))
    return p5min_prices(frame, f"{store.root}/{P5MIN_TABLE}")
