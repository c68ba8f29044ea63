"""AEMO's MARKET_PRICE_THRESHOLDS as the price limits: AEMO's rows where they cover a trading day, the
configured financial years elsewhere, an error where neither does."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aemo.archive_files import read_file
from aemo.errors import AemoDataError
from aemo.price_thresholds import price_caps_from_thresholds, with_price_thresholds
from aemo.tables import normalise, schema_named
from algorithms.market.clearing import administered_energy_prices
from settings import MARKET_PRICE_THRESHOLDS_SOURCE, SETTINGS_SOURCE, PriceLimitsUnknownError, load_settings
from tests.aemo_fixtures import archive_zip

RULES = load_settings(environ={}).market


@pytest.fixture(scope="module")
def thresholds() -> pd.DataFrame:
    schema = schema_named("MARKET_PRICE_THRESHOLDS")
    [report] = read_file(archive_zip("2021_05", "MARKET_PRICE_THRESHOLDS"))
    return normalise(report.tables[0], schema)


def test_rows_become_effective_dated_limits(thresholds: pd.DataFrame) -> None:
    caps = price_caps_from_thresholds(thresholds)
    assert len(caps) == len(thresholds) == 12
    first, hallett_era, last = caps[0], caps[5], caps[-1]
    assert (first.first_day, first.end_day, first.cap) == (date(1997, 11, 4), date(2002, 4, 1), 5000.0)
    assert math.isinf(first.cumulative_price_threshold)  # no threshold before 2002
    assert (hallett_era.first_day, hallett_era.end_day, hallett_era.cap) == (date(2014, 7, 1), date(2015, 7, 1),
                                                                                13500.0)
    assert (last.first_day, last.end_day, last.cap, last.market_price_floor) == (
        date(2020, 7, 1), date(2021, 7, 1), 15000.0, -1000.0)  # the last row: to the end of its year only
    assert last.cumulative_price_threshold == 224600.0 and last.threshold_interval_minutes == 30
    assert {cap.source for cap in caps} == {MARKET_PRICE_THRESHOLDS_SOURCE}


def test_aemos_rows_come_first_the_settings_fill_in(thresholds: pd.DataFrame) -> None:
    rules = with_price_thresholds(RULES, thresholds)
    assert rules.price_cap_for(date(2018, 4, 1)).cap == 14200.0  # FY2017-18 from AEMO; not configured
    assert rules.price_cap_for(date(2018, 4, 1)).source == MARKET_PRICE_THRESHOLDS_SOURCE
    assert rules.price_cap_for(date(2021, 1, 15)).source == MARKET_PRICE_THRESHOLDS_SOURCE
    assert rules.price_cap_for(date(2024, 8, 1)).source == SETTINGS_SOURCE
    assert rules.price_cap_for(date(2024, 8, 1)).cap == 17500.0
    assert rules.price_floor_for(date(2010, 8, 1)) == -1000.0
    with pytest.raises(PriceLimitsUnknownError, match="MARKET_PRICE_THRESHOLDS covers 1997-11-04 to 2021-06-30"):
        rules.price_cap_for(date(2026, 7, 1))
    again = with_price_thresholds(rules, thresholds)  # merging twice keeps one copy of AEMO's rows
    assert len(again.price_caps) == len(rules.price_caps)
    assert with_price_thresholds(rules, None).price_caps == RULES.price_caps


def test_a_newer_version_of_an_effective_date_wins(thresholds: pd.DataFrame) -> None:
    revised = thresholds.iloc[[-1]].assign(VERSIONNO=2, VOLL=15100.0)
    caps = price_caps_from_thresholds(pd.concat([thresholds, revised], ignore_index=True))
    assert caps[-1].cap == 15100.0 and len(caps) == 12


def test_administered_pricing_uses_aemos_threshold_where_given(thresholds: pd.DataFrame) -> None:
    """FY2017-18 has no configured threshold: with AEMO's (212,800 $/MWh over half hours) it clears."""
    intervals = np.datetime64("2018-04-10T04:05:00", "s") + np.arange(288) * np.timedelta64(300, "s")
    prices = np.full(288, 100.0)
    prices[:10] = 130_000.0  # 1.3 M over 5-minute prices > 212,800 x 6 = 1,276,800
    prices[10] = 5_000.0
    with pytest.raises(PriceLimitsUnknownError, match="FY2017-18"):
        administered_energy_prices(prices, intervals, RULES)
    administered = administered_energy_prices(prices, intervals, with_price_thresholds(RULES, thresholds))
    assert administered[10] == 600.0


def test_a_table_without_its_columns_is_refused(thresholds: pd.DataFrame) -> None:
    with pytest.raises(AemoDataError, match="VOLL"):
        price_caps_from_thresholds(thresholds.drop(columns=["VOLL"]))


def test_the_bid_service_takes_the_data_folders_thresholds(tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from services.bid_service import market_rules_of_data

    settings = load_settings(environ={"VPP_DATA_DIR": str(tmp_path)})
    assert market_rules_of_data(settings) == settings.market  # no MARKET_PRICE_THRESHOLDS: the configured limits
    shutil.copy(archive_zip("2021_04", "MARKET_PRICE_THRESHOLDS"), tmp_path)
    rules = market_rules_of_data(settings)
    assert rules.price_cap_for(date(2019, 12, 1)).cap == 14700.0
    # The start-up path: administered pricing over data in a year no source covers stops the service.
    uncovered = dataclasses.replace(rules, price_caps=tuple(c for c in rules.price_caps if c.fy_start != 2019))
    intervals = np.datetime64("2019-12-01T04:05:00", "s") + np.arange(3) * np.timedelta64(300, "s")
    with pytest.raises(PriceLimitsUnknownError, match="FY2019-20"):
        administered_energy_prices(np.full(3, 50.0), intervals, uncovered)
