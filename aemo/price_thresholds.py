"""AEMO's MARKET_PRICE_THRESHOLDS as the platform's price limits (:class:`settings.PriceCap`).

MARKET_PRICE_THRESHOLDS (MMS package MARKET_CONFIG) lists, by effective date, the market price cap (VOLL,
$/MWh), the market price floor ($/MWh) and the cumulative price threshold (ADMINISTERED_PRICE_THRESHOLD,
$/MWh summed over the lookback). :func:`with_price_thresholds` merges its rows into the configured rules,
so :meth:`settings.MarketRules.price_cap_for` — the one place a trading day's limits are looked up — takes
AEMO's values where the data has them and the configured financial year otherwise.

Assumptions where AEMO's table is silent:

- A row is in force from its EFFECTIVEDATE (a trading day) until the next row's; of several versions of one
  effective date the highest VERSIONNO holds.
- The last row is in force to the end of its own financial year only: the AEMC indexes the cap and threshold
  every 1 July, so a later year needs a newer row (or a configured ``[[market.price_caps]]`` entry); a year no
  source covers is an error, never the last known values.
- The threshold of a row effective before five-minute settlement (1 October 2021) sums half-hour prices
  (``threshold_interval_minutes = 30``), later rows five-minute prices.
- A row without a threshold (before 2002) has none: administered pricing never starts (an infinite threshold).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pandas as pd

from aemo.errors import AemoDataError
from aemo.table_files import read_tables
from aemo.tables import FIVE_MINUTE_SETTLEMENT_START
from settings import MARKET_PRICE_THRESHOLDS_SOURCE, SETTINGS_SOURCE, MarketRules, PriceCap

TABLE = "MARKET_PRICE_THRESHOLDS"
_REQUIRED = ("EFFECTIVEDATE", "VERSIONNO", "VOLL", "MARKETPRICEFLOOR", "ADMINISTERED_PRICE_THRESHOLD")


def _financial_year_start(day: date) -> int:
    return day.year if day.month >= 7 else day.year - 1


def price_caps_from_thresholds(thresholds: pd.DataFrame) -> tuple[PriceCap, ...]:
    """The price limits of MARKET_PRICE_THRESHOLDS rows (normalised, :mod:`aemo.tables`), by effective date.

    Raises :class:`AemoDataError` when a column is missing or a cap or floor is not a number.
    """
    missing = [column for column in _REQUIRED if column not in thresholds.columns]
    if missing:
        raise AemoDataError(f"{TABLE} lacks the column(s) {', '.join(missing)}")
    if thresholds.empty:
        return ()
    rows = (thresholds.assign(_day=pd.to_datetime(thresholds["EFFECTIVEDATE"]).dt.normalize())
            .sort_values(["_day", "VERSIONNO"]).drop_duplicates("_day", keep="last"))
    if rows["VOLL"].isna().any() or rows["MARKETPRICEFLOOR"].isna().any():
        raise AemoDataError(f"{TABLE}: a row has no market price cap (VOLL) or floor")
    days = [moment.date() for moment in rows["_day"]]
    caps: list[PriceCap] = []
    for position, (first, cap, floor, threshold) in enumerate(zip(
            days, rows["VOLL"].astype(float), rows["MARKETPRICEFLOOR"].astype(float),
            rows["ADMINISTERED_PRICE_THRESHOLD"].astype(float), strict=True)):
        fy = _financial_year_start(first)
        end = days[position + 1] if position + 1 < len(days) else date(fy + 1, 7, 1)
        caps.append(PriceCap(
            fy_start=fy, cap=float(cap), cumulative_price_threshold=threshold if math.isfinite(threshold) else math.inf,
            threshold_interval_minutes=30 if first < FIVE_MINUTE_SETTLEMENT_START else 5,
            market_price_floor=float(floor), first_trading_day=first, end_trading_day=end,
            source=MARKET_PRICE_THRESHOLDS_SOURCE))
    return tuple(caps)


def with_price_thresholds(rules: MarketRules, thresholds: pd.DataFrame | None) -> MarketRules:
    """``rules`` whose price limits are AEMO's MARKET_PRICE_THRESHOLDS where they cover a trading day and the
    configured financial years elsewhere (``thresholds`` None or empty: the configured ones alone)."""
    configured = tuple(cap for cap in rules.price_caps if cap.source == SETTINGS_SOURCE)
    from_aemo = price_caps_from_thresholds(thresholds) if thresholds is not None else ()
    return dataclasses.replace(rules, price_caps=(*from_aemo, *configured))


def read_price_thresholds(paths: Sequence[Path]) -> pd.DataFrame | None:
    """MARKET_PRICE_THRESHOLDS rows from AEMO's files or folders (:func:`aemo.table_files.read_tables`);
    None when none of them holds the table."""
    return read_tables(paths, (TABLE,)).frames[TABLE]
