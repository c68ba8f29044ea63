"""Helpers of the AEMO tests: the repository's NEMWEB tree and ways to derive bad or re-published files from it."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from aemo.store import MarketStore
from aemo.tables import TABLE_NAMES
from settings import REPO_ROOT

NEMWEB_ROOT = REPO_ROOT / "data" / "nemweb"
ARCHIVE_ROOT = NEMWEB_ROOT / "Data_Archive" / "Wholesale_Electricity" / "MMSDM"
CURRENT_ROOT = NEMWEB_ROOT / "Reports" / "Current"
FIXTURE_FOLDERS = ("P5_Reports", "Next_Day_Dispatch", "Daily_Reports", "Next_Day_Intermittent_Gen_Scada")

# README of data/nemweb: DP rows (its D rows) per month.
DISPATCHPRICE_ROWS = {"2018_04": 5342, "2018_05": 4606, "2019_12": 4608, "2020_01": 3024, "2021_04": 2880,
                      "2021_05": 2880, "2022_01": 2880, "2024_07": 2880, "2024_08": 2880, "2024_09": 2880,
                      "2025_01": 2880, "2026_03": 2880}


def fixture_zips() -> list[Path]:
    """Every zip of the tree (monthly archives and current reports)."""
    return sorted(NEMWEB_ROOT.rglob("*.zip"))


def archive_zip(month: str, table: str) -> Path:
    """The archive zip of ``table`` for ``month`` (``YYYY_MM``), either naming scheme."""
    folder = ARCHIVE_ROOT / month[:4] / f"MMSDM_{month}" / "MMSDM_Historical_Data_SQLLoader" / "DATA"
    matches = [p for p in folder.glob("*.zip")
               if p.name in (f"PUBLIC_DVD_{table}_{month.replace('_', '')}010000.zip",
                             f"PUBLIC_ARCHIVE#{table}#FILE01#{month.replace('_', '')}010000.zip")]
    assert len(matches) == 1, (month, table, matches)
    return matches[0]


def member(path: Path) -> tuple[str, bytes]:
    """The single CSV of a zip: its name and bytes."""
    with zipfile.ZipFile(path) as archive:
        name = archive.namelist()[0]
        return name, archive.read(name)


def zipped(name: str, data: bytes) -> bytes:
    """A zip holding one member ``name`` with ``data``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def edit_rows(data: bytes, edit: Callable[[list[str], list[list[str]]], tuple[list[str], list[list[str]]]]) -> bytes:
    """Rewrite the one table of an MMS CSV: ``edit(i_row_fields, d_rows_fields)`` returns the new ones.
    (Plain comma splitting: only for tables whose values hold no quoted commas, e.g. DISPATCHPRICE.)"""
    lines = data.decode().splitlines()
    head = [line for line in lines if line.startswith("C,") and "END OF REPORT" not in line]
    tail = [line for line in lines if line.startswith('C,"END OF REPORT"')]
    i_row = next(line for line in lines if line.startswith("I,")).split(",")
    d_rows = [line.split(",") for line in lines if line.startswith("D,")]
    i_row, d_rows = edit(i_row, d_rows)
    body = [",".join(i_row), *(",".join(row) for row in d_rows)]
    return ("\r\n".join([*head, *body, *tail]) + "\r\n").encode()


def set_value(data: bytes, column: str, row: int, value: str) -> bytes:
    """An MMS CSV with ``column`` of D row number ``row`` (0-based) set to ``value``."""

    def edit(i_row: list[str], d_rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
        index = i_row.index(column)
        d_rows[row][index] = value
        return i_row, d_rows

    return edit_rows(data, edit)


def store_contents(store: MarketStore) -> dict[str, pd.DataFrame]:
    """Every table of a store, loaded (one row per key, provenance dropped): what readers see."""
    return {table: store.load(table) for table in TABLE_NAMES if table in store.tables()}


def assert_same_store(left: MarketStore, right: MarketStore) -> None:
    """Both stores hold the same source files (name and content) and give readers the same rows."""
    def current(store: MarketStore) -> dict[str, str]:
        return {r.name: r.sha256 for r in store.records() if r.superseded_by is None}

    assert current(left) == current(right)
    left_tables, right_tables = store_contents(left), store_contents(right)
    assert left_tables.keys() == right_tables.keys()
    for table, frame in left_tables.items():
        other = right_tables[table]
        pd.testing.assert_frame_equal(frame[sorted(frame.columns)], other[sorted(other.columns)], check_like=False,
                                      obj=table)
