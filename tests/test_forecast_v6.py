"""sarx-quantile v6: v4 for a history that reached back past a gap of days.

A history of 35 days (the market-data snapshot's reach) whose last week holds one day of known prices (a day with an
evening spike to $5,000/MWh) and whose earlier days hold three calm days a month before (the store's months: the
month's first days, then its last ones). v4 fits all of it as one history; v6 forecasts the mixture of the recent
week's model and the whole history's, the whole history weighted half at one day of known prices in the week and
none at three. A history no longer than the week is forecast exactly as v4.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from algorithms.common.nem_time import to_timestamp
from algorithms.market.forecast import (
    PERSISTENCE_BY_VERSION,
    REACH_BLEND_BY_VERSION,
    REACH_BLEND_V6,
    SHORT_HISTORY_GUARD_BY_VERSION,
    USES_P5MIN_BY_VERSION,
    _model_path,
    _reach_blended_model_path,
    forecast_from_result,
    quantile_price_forecast,
    run_forecast_v4,
    run_forecast_v6,
)
from algorithms.registry import default_registry
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2

FIVE = timedelta(minutes=5)
QUANTILES = (0.05, 0.1, 0.5, 0.9, 0.95)
LEVELS = np.asarray(QUANTILES)
WEEK = 2016
REACH = 10080
HISTORY_START = datetime(2022, 1, 1, 0, 5)  # interval-ending AEST


def _reached_history(recent_known_days: float = 1.0, spike: float = 5000.0) -> np.ndarray:
    """REACH intervals from HISTORY_START: three calm days ($60 by day, $30 by night), unknown until the last
    ``recent_known_days`` days, which repeat the calm day with an evening spike (17:00-18:00) to ``spike``."""
    rng = np.random.default_rng(11)
    minutes = (np.arange(REACH) * 5 + 5) % 1440
    calm = np.where((minutes >= 7 * 60) & (minutes < 22 * 60), 60.0, 30.0) + rng.normal(0.0, 3.0, REACH)
    history = np.full(REACH, np.nan)
    history[:3 * 288] = calm[:3 * 288]
    recent = int(recent_known_days * 288)
    history[REACH - recent:] = calm[REACH - recent:]
    evening = (minutes >= 17 * 60) & (minutes < 18 * 60)
    history[REACH - recent:] = np.where(evening[REACH - recent:], spike, history[REACH - recent:])
    return history


def _request(history: np.ndarray, version: str) -> worker_pb2.ForecastRequest:
    first_interval = HISTORY_START + FIVE * history.size
    request = worker_pb2.ForecastRequest(
        request_id="r", product="ENERGY", horizon_intervals=288, quantiles=list(QUANTILES),
        first_interval=to_timestamp(first_interval),
        algorithm=common_pb2.AlgorithmRef(name="sarx-quantile", version=version),
        history=market_data_pb2.ProductPriceHistory(product="ENERGY", first_interval=to_timestamp(HISTORY_START),
                                                    price=history.tolist()))
    return request


def test_the_reach_blend_weighs_the_whole_history_by_the_recent_known_days() -> None:
    assert REACH_BLEND_V6.recent_intervals == WEEK
    assert REACH_BLEND_V6.weight(288) == 0.5 and REACH_BLEND_V6.weight(100) == 0.5
    assert abs(REACH_BLEND_V6.weight(2 * 288) - 0.25) < 1e-12
    assert REACH_BLEND_V6.weight(3 * 288) == 0.0 and REACH_BLEND_V6.weight(WEEK) == 0.0
    assert REACH_BLEND_BY_VERSION["6"] is REACH_BLEND_V6
    assert all(REACH_BLEND_BY_VERSION[version] is None for version in ("1", "2", "3", "4", "5"))
    assert PERSISTENCE_BY_VERSION["6"] == PERSISTENCE_BY_VERSION["4"]
    assert USES_P5MIN_BY_VERSION["6"] is False and SHORT_HISTORY_GUARD_BY_VERSION["6"] is None


def test_a_history_no_longer_than_the_week_is_forecast_as_v4() -> None:
    week = _reached_history()[-WEEK:]
    start = HISTORY_START + FIVE * (REACH - WEEK)
    request_v4, request_v6 = _request(week, "4"), _request(week, "6")
    for request in (request_v4, request_v6):
        request.history.first_interval.CopyFrom(to_timestamp(start))
        request.first_interval.CopyFrom(to_timestamp(start + FIVE * WEEK))
    v4, v6 = run_forecast_v4(request_v4), run_forecast_v6(request_v6)
    assert list(v6.price) == list(v4.price)
    assert v6.algorithm.version == "6"


def test_a_reached_history_mixes_the_recent_week_with_the_whole_history() -> None:
    history = _reached_history()
    scale = float(np.median(np.abs(history[np.isfinite(history)])))
    lead = 1 + np.arange(288, dtype=np.int64)
    recent_central, _ = _model_path(history[-WEEK:], HISTORY_START + FIVE * (REACH - WEEK), lead, LEVELS, scale)
    whole_central, _ = _model_path(history, HISTORY_START, lead, LEVELS, scale)
    central, offsets = _reach_blended_model_path(history, HISTORY_START, lead, LEVELS, scale, REACH_BLEND_V6)
    low, high = np.minimum(recent_central, whole_central), np.maximum(recent_central, whole_central)
    assert np.all(central >= low - 1e-9) and np.all(central <= high + 1e-9)
    assert np.any(np.abs(recent_central - whole_central) > 0.1)  # the two models differ: the mixture is a choice
    assert np.all(np.diff(offsets, axis=1) >= -1e-12)
    # Tomorrow's spike hour: the recent week's model expects the spike again; the band keeps it within reach.
    forecast = quantile_price_forecast(history, HISTORY_START, [], np.array([]), HISTORY_START + FIVE * REACH, 288,
                                       QUANTILES, reach_blend=REACH_BLEND_V6)
    whole = quantile_price_forecast(history, HISTORY_START, [], np.array([]), HISTORY_START + FIVE * REACH, 288,
                                    QUANTILES)
    evening = slice(17 * 12 - 1, 18 * 12 - 1)  # intervals ending 17:05-18:00 of the next day
    assert forecast[evening, -1].mean() > whole[evening, -1].mean()


def test_three_known_days_in_the_week_leave_the_recent_model_alone() -> None:
    history = _reached_history(recent_known_days=3.0)
    scale = float(np.median(np.abs(history[np.isfinite(history)])))
    lead = 1 + np.arange(288, dtype=np.int64)
    recent = _model_path(history[-WEEK:], HISTORY_START + FIVE * (REACH - WEEK), lead, LEVELS, scale)
    blended = _reach_blended_model_path(history, HISTORY_START, lead, LEVELS, scale, REACH_BLEND_V6)
    np.testing.assert_array_equal(blended[0], recent[0])
    np.testing.assert_array_equal(blended[1], recent[1])


def test_a_week_without_a_known_price_forecasts_from_the_whole_history() -> None:
    history = _reached_history()
    history[-WEEK:] = np.nan
    history[-WEEK - 1] = 55.0
    scale = float(np.median(np.abs(history[np.isfinite(history)])))
    lead = 1 + np.arange(288, dtype=np.int64)
    whole = _model_path(history, HISTORY_START, lead, LEVELS, scale)
    blended = _reach_blended_model_path(history, HISTORY_START, lead, LEVELS, scale, REACH_BLEND_V6)
    np.testing.assert_array_equal(blended[0], whole[0])


def test_the_registry_serves_v6() -> None:
    registry = default_registry()
    assert "sarx-quantile v6" in set(registry.known("forecast"))
    result = registry.resolve("forecast", "sarx-quantile", "6")(_request(_reached_history(), "6"))
    assert isinstance(result, worker_pb2.ForecastResult)
    forecast = forecast_from_result(result)
    assert forecast.price.shape == (288, len(QUANTILES))
    assert np.all(np.diff(forecast.price, axis=1) >= 0)
