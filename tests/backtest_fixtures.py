"""Small MMS data for backtest tests: a few days of one region cut from the embedded January 2021 tables."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from settings import load_settings

DISPATCH_NAME = "PUBLIC_DVD_DISPATCHPRICE_TINY.parquet"
PREDISPATCH_NAME = "PUBLIC_DVD_PREDISPATCHPRICE_TINY.parquet"


def write_tiny_market(folder: Path, *, start: datetime, end: datetime, region: str = "SA1") -> Path:
    """Write DISPATCHPRICE (intervals ending in (start, end]) and PREDISPATCHPRICE (runs in [start, end]) of
    ``region`` to ``folder`` as parquet, with the embedded tables' columns; returns the folder."""
    source = load_settings(environ={}).market_data.data_dir
    folder.mkdir(parents=True, exist_ok=True)
    dispatch = pd.read_parquet(next(source.glob("*_DISPATCHPRICE_*.parquet")))
    settlement = pd.to_datetime(dispatch["SETTLEMENTDATE"], format="%Y/%m/%d %H:%M:%S")
    keep = (settlement > start) & (settlement <= end) & (dispatch["REGIONID"] == region)
    dispatch.loc[keep].reset_index(drop=True).to_parquet(folder / DISPATCH_NAME, index=False)
    predispatch = pd.read_parquet(next(source.glob("*_PREDISPATCHPRICE_*.parquet")))
    run = pd.to_datetime(predispatch["PREDISPATCH_RUN_DATETIME"])
    keep = (run >= start) & (run <= end) & (predispatch["REGIONID"].astype(str) == region)
    frame = predispatch.loc[keep].reset_index(drop=True)
    frame["REGIONID"] = frame["REGIONID"].astype(str)
    frame.to_parquet(folder / PREDISPATCH_NAME, index=False)
    return folder
