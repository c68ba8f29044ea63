"""Test-only reader of data/p5min-extracts: twenty consecutive QLD1 P5MIN runs of 9 October 2026, reduced.

The extracts are NOT AEMO's file format (no ``C`` header, no ``END OF REPORT`` trailer, five columns), so
:mod:`aemo.p5min` refuses them. This reader takes their ``I``/``D`` rows with pandas, stamps each row with
the publication time of its file name (``PUBLIC_P5MIN_<run>_<published>.CSV``) and hands the frame to
:func:`aemo.p5min.p5min_prices`, the same step AEMO's files and the market store go through.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from aemo.p5min import p5min_prices
from aemo.store import PUBLISHED_COLUMN
from algorithms.market.prices import P5minPrices

EXTRACTS = Path(__file__).resolve().parent.parent / "data" / "p5min-extracts"
_NAME = re.compile(r"^PUBLIC_P5MIN_(?P<run>\d{12})_(?P<published>\d{14})\.CSV$")


def read_extract(path: Path) -> pd.DataFrame:
    """The rows of one reduced extract, typed, with ``_published`` from its file name."""
    match = _NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path.name}: not a PUBLIC_P5MIN_<run>_<published>.CSV name")
    lines = path.read_text().splitlines()
    header = lines[0].split(",")[4:]
    rows = [line.split(",")[4:] for line in lines[1:] if line.startswith("D,")]
    frame = pd.DataFrame(rows, columns=header)
    for column in ("RUN_DATETIME", "INTERVAL_DATETIME"):
        frame[column] = pd.to_datetime(frame[column], format="%Y/%m/%d %H:%M:%S")
    frame["RRP"] = pd.to_numeric(frame["RRP"])
    frame["INTERVENTION"] = pd.to_numeric(frame["INTERVENTION"])
    frame[PUBLISHED_COLUMN] = pd.to_datetime(match["published"], format="%Y%m%d%H%M%S")
    return frame


def load_extracts(folder: Path = EXTRACTS) -> P5minPrices:
    """Every extract of ``folder`` as one :class:`P5minPrices` table (QLD1, ENERGY only)."""
    files = sorted(folder.glob("PUBLIC_P5MIN_*.CSV"))
    frame = pd.concat([read_extract(path) for path in files], ignore_index=True)
    return p5min_prices(frame, str(folder))
