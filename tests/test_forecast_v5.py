"""sarx-quantile v5: v4 with the short-history guard.

A week of history of which only the last 1.3 days are known (the market store's months: a few days of data, the
snapshot's week padded with unknown intervals) of a day with deep negative prices at midday and an evening peak:
v4's long-lead models, fitted on a design that counts the unknown week as history, run to the highest price seen
and stay there through the midday; v5 fits the model on the history from its first known price and, below three
days of it, forecasts the mixture of the model's distribution and yesterday-same-time's, whose median follows the
day's shape. The mixture's quantiles are checked against a brute-force mixture. From three days of usable history
on, v5 is v4 on the history from its first known price, bit for bit.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import to_timestamp
from algorithms.market.forecast import (
    PERSISTENCE_BY_VERSION,
    SHORT_HISTORY_GUARD_BY_VERSION,
    SHORT_HISTORY_GUARD_V5,
    USES_P5MIN_BY_VERSION,
    ShortHistoryGuard,
    forecast_from_result,
    mixture_quantiles,
    run_forecast_v4,
    run_forecast_v5,
    seasonal_naive_path,
)
from algorithms.registry import default_registry
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2

FIVE = timedelta(minutes=5)
QUANTILES = (0.05, 0.1, 0.5, 0.9, 0.95)
MEDIAN = QUANTILES.index(0.5)
WEEK = 2016
HISTORY_START = datetime(2026, 3, 24, 8, 5)  # interval-ending AEST: the snapshot's week


def _daily_shape(minute_of_day: np.ndarray) -> np.ndarray:
    """$/MWh: $40, −$50 from 10:00 to 16:00 (solar), $150 from 18:00 to 21:00 (the evening peak)."""
    hours = minute_of_day / 60.0
    price = np.full(minute_of_day.shape, 40.0)
    price[(hours >= 10) & (hours < 16)] = -50.0
    price[(hours >= 18) & (hours < 21)] = 150.0
    return price


def _minutes(first: datetime, count: int) -> np.ndarray:
    return (first.hour * 60 + first.minute + 5 * np.arange(count)) % 1440


def _history(known_days: float, product: str = "ENERGY", total: int = WEEK) -> np.ndarray:
    """``total`` intervals from HISTORY_START of the daily shape (a little noise), unknown (NaN) before the last
    ``known_days`` days; FCAS prices are the shape's absolute value / 10."""
    rng = np.random.default_rng(5)
    prices = _daily_shape(_minutes(HISTORY_START, total)) + rng.normal(0.0, 5.0, total)
    prices[: total - int(known_days * 288)] = np.nan
    return prices if product == "ENERGY" else np.abs(prices) / 10.0


def _request(history: np.ndarray, version: str, product: str = "ENERGY",
             history_start: datetime = HISTORY_START) -> worker_pb2.ForecastRequest:
    first_interval = history_start + FIVE * (history.size + 1)
    known = np.isfinite(history)
    return worker_pb2.ForecastRequest(
        request_id=f"{product}-v{version}", algorithm=common_pb2.AlgorithmRef(name="sarx-quantile", version=version),
        region="SA1", product=product, decision_time=to_timestamp(first_interval - FIVE * 2 + timedelta(seconds=30)),
        first_interval=to_timestamp(first_interval), horizon_intervals=288, quantiles=list(QUANTILES),
        history=market_data_pb2.ProductPriceHistory(
            product=product, first_interval=to_timestamp(history_start), price=np.nan_to_num(history).tolist(),
            quality=[common_pb2.DATA_QUALITY_ON_TIME if k else common_pb2.DATA_QUALITY_MISSING for k in known]))


def _forecast(history: np.ndarray, version: str, product: str = "ENERGY",
              history_start: datetime = HISTORY_START) -> np.ndarray:
    run = run_forecast_v5 if version == "5" else run_forecast_v4
    return forecast_from_result(run(_request(history, version, product, history_start))).price


def test_guard_weight_falls_from_one_day_to_three() -> None:
    guard = SHORT_HISTORY_GUARD_V5
    assert (guard.first_day_days, guard.full_days) == (1.0, 3.0)
    assert [guard.weight(intervals) for intervals in (0, 144, 288, 432, 576, 720, 864, 2016)] == [
        1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert ShortHistoryGuard(first_day_days=2.0, full_days=4.0).weight(864) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="first_day_days < full_days"):
        ShortHistoryGuard(first_day_days=3.0, full_days=3.0)


LEVELS = np.array(QUANTILES)


def _reference_mixture(first: np.ndarray, second: np.ndarray, weight: float, level: float) -> float:
    """The mixture's quantile by brute force: each CDF on a fine grid (np.interp between the quantiles, the tail
    masses on the end quantiles), the first grid value where the mixture reaches ``level``."""
    grid = np.linspace(min(first[0], second[0]) - 1.0, max(first[-1], second[-1]) + 1.0, 400_001)

    def cdf(points: np.ndarray) -> np.ndarray:
        return np.where(grid < points[0], 0.0, np.where(grid >= points[-1], 1.0, np.interp(grid, points, LEVELS)))

    mixed = (1 - weight) * cdf(first) + weight * cdf(second)
    return float(grid[np.argmax(mixed >= level)])


@pytest.mark.parametrize("weight", [0.0, 0.17, 0.5, 0.83, 1.0])
def test_mixture_quantiles_match_a_brute_force_mixture(weight: float) -> None:
    first = np.array([[-1.0, -0.5, 0.2, 0.9, 1.4], [2.0, 2.1, 2.5, 3.0, 3.2], [0.0, 0.0, 0.3, 0.3, 0.8]])
    second = np.array([[-0.8, -0.2, 0.0, 0.5, 0.6], [-2.0, -1.5, -1.0, -0.6, -0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    mixed = mixture_quantiles(first, second, LEVELS, weight, LEVELS)
    assert np.all(np.diff(mixed, axis=1) >= 0.0)
    for row in range(first.shape[0]):
        for column, level in enumerate(LEVELS):
            assert mixed[row, column] == pytest.approx(
                _reference_mixture(first[row], second[row], weight, float(level)), abs=2e-4)
    if weight in (0.0, 1.0):  # one component: its own quantiles
        np.testing.assert_allclose(mixed, first if weight == 0.0 else second, atol=1e-12)


def test_mixture_keeps_the_tail_of_a_component_that_disagrees() -> None:
    """Most weight on the lower distribution, the rest far above it: the median is the lower one's, the highest
    quantile lies in the upper one (a model that expects a spike keeps the spike in the band)."""
    low, high = np.array([[0.0, 0.1, 0.5, 0.9, 1.0]]), np.array([[5.0, 5.1, 5.5, 5.9, 6.0]])
    mixed = mixture_quantiles(high, low, LEVELS, 0.83, LEVELS)[0]
    assert 0.0 < mixed[MEDIAN] < 1.0
    assert 5.0 <= mixed[-1] <= 6.0


def test_seasonal_naive_path_is_yesterday_same_time_carried_over_gaps() -> None:
    history = np.arange(600, dtype=np.float64)
    history[590] = np.nan  # a gap: its value is the one before it
    lead = np.array([1, 2, 279, 288, 302])
    # The target of lead k is index 599 + k; yesterday-same-time is 288 x ceil(k / 288) back (lead 279 lands on
    # the gap at 590, lead 288 on the last known interval).
    np.testing.assert_array_equal(seasonal_naive_path(history, lead), [312.0, 313.0, 589.0, 599.0, 325.0])
    assert seasonal_naive_path(history, np.array([1]))[0] == 312.0
    short = np.array([np.nan, 7.0, 9.0])  # not a day back: the last known value
    np.testing.assert_array_equal(seasonal_naive_path(short, np.array([1, 5])), [9.0, 9.0])


def test_v5_follows_the_day_where_v4_runs_to_the_highest_price_seen() -> None:
    history = _history(known_days=1.3)
    first_interval = HISTORY_START + FIVE * (history.size + 1)
    truth = _daily_shape(_minutes(first_interval, 288))
    v4, v5 = _forecast(history, "4")[:, MEDIAN], _forecast(history, "5")[:, MEDIAN]
    later = slice(48, 288)  # 4 to 24 hours ahead
    v4_error, v5_error = np.mean(np.abs(v4[later] - truth[later])), np.mean(np.abs(v5[later] - truth[later]))
    assert v4_error > 50.0  # the defect v5 guards against
    assert v5_error < 0.25 * v4_error
    midday = (_minutes(first_interval, 288) >= 11 * 60) & (_minutes(first_interval, 288) < 15 * 60)
    assert np.all(v4[midday] > 100.0)
    assert np.all(v5[midday] < 0.0)  # v5 expects the solar trough the history shows


def test_v5_quantiles_stay_ordered_and_within_the_prices_seen() -> None:
    history = _history(known_days=1.5)
    price = _forecast(history, "5")
    assert np.all(np.diff(price, axis=1) >= 0.0)
    assert price.min() >= np.nanmin(history) - 1e-9 and price.max() <= np.nanmax(history) + 1e-9


@pytest.mark.parametrize("product", ["ENERGY", "RAISEREG"])
def test_v5_with_three_days_of_history_is_v4_on_the_history_from_its_first_known_price(product: str) -> None:
    padded = _history(known_days=3.5, product=product)
    first_known = int(np.flatnonzero(np.isfinite(padded))[0])
    trimmed, trimmed_start = padded[first_known:], HISTORY_START + FIVE * first_known
    np.testing.assert_array_equal(_forecast(padded, "5", product), _forecast(trimmed, "4", product, trimmed_start))
    # With nothing unknown before the history, v5 is v4 on the same request.
    np.testing.assert_array_equal(_forecast(trimmed, "5", product, trimmed_start),
                                  _forecast(trimmed, "4", product, trimmed_start))


def test_v5_keeps_v4s_persistence_and_no_p5min() -> None:
    assert PERSISTENCE_BY_VERSION["5"] == PERSISTENCE_BY_VERSION["4"]
    assert USES_P5MIN_BY_VERSION["5"] is False
    assert SHORT_HISTORY_GUARD_BY_VERSION["5"] == SHORT_HISTORY_GUARD_V5
    assert all(SHORT_HISTORY_GUARD_BY_VERSION[version] is None for version in ("1", "2", "3", "4"))


def test_v5_is_served_next_to_the_others_and_checks_its_name() -> None:
    registry = default_registry()
    assert {"sarx-quantile v4", "sarx-quantile v5"} <= set(registry.known("forecast"))
    request = _request(_history(known_days=1.3), "5")
    served = registry.resolve("forecast", "sarx-quantile", "5")(request)
    assert isinstance(served, worker_pb2.ForecastResult)
    assert list(served.price) == list(run_forecast_v5(request).price)
    with pytest.raises(InvalidRequestError, match="is not sarx-quantile v5"):
        run_forecast_v5(_request(_history(known_days=1.3), "4"))
