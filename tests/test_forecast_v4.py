"""sarx-quantile v4: v2 with the ENERGY path held towards the last known price over the first hours.

On a constructed history whose evening peak comes at 19:00 every day, a decision at 17:00 on a day whose price
has stayed at $100/MWh since 15:00 (no ramp yet): v2's path runs ahead to the peak of the other days, v4's
stays nearer the price of now over the next hours and meets v2's beyond them. FCAS forecasts are v2's bit for
bit, and v1, v2 and v3 keep their own persistence (v1 is also held to golden forecasts in
tests/test_forecast_equivalence.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import to_timestamp
from algorithms.market.forecast import (
    ENERGY_PERSISTENCE_SCALE_V4,
    PERSISTENCE_BY_VERSION,
    USES_P5MIN_BY_VERSION,
    Persistence,
    forecast_from_result,
    run_forecast,
    run_forecast_v4,
)
from algorithms.registry import default_registry
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2

FIVE = timedelta(minutes=5)
QUANTILES = (0.05, 0.1, 0.5, 0.9, 0.95)
MEDIAN = QUANTILES.index(0.5)
HISTORY_START = datetime(2024, 9, 1, 0, 5)  # interval-ending AEST
DAYS = 3
DECISION_INTERVAL = 17 * 12  # the interval ending 17:05 on the last day: the first one forecast
HORIZON = 576  # two days: past the pull at every τ the tests read


def _daily_shape(minute_of_day: np.ndarray) -> np.ndarray:
    """$/MWh: $60 overnight and midday, an evening peak of $300 at 19:00 (two hours either side)."""
    hours = minute_of_day / 60.0
    return 60.0 + 240.0 * np.clip(1.0 - np.abs(hours - 19.0) / 2.0, 0.0, None)


def _history(product: str) -> np.ndarray:
    """Three days of the daily shape (a little noise), then the fourth day up to 17:00, where the price has
    held $100/MWh since 15:00."""
    rng = np.random.default_rng(11)
    count = DAYS * 288 + DECISION_INTERVAL - 1
    minutes = (np.arange(count) * 5 + 5) % 1440
    prices = _daily_shape(minutes) + rng.normal(0.0, 3.0, count)
    today = np.arange(count) >= DAYS * 288
    prices[today & (minutes >= 15 * 60)] = 100.0
    return prices if product == "ENERGY" else prices / 20.0


def _request(product: str, version: str, predispatch_hours: int = 0) -> worker_pb2.ForecastRequest:
    """The decision's request; ``predispatch_hours`` of AEMO pre-dispatch ($120/MWh, or /20 for FCAS) from
    the first interval forecast on."""
    prices = _history(product)
    first_interval = HISTORY_START + FIVE * prices.size
    periods = [first_interval - FIVE + timedelta(minutes=30) * (1 + k) for k in range(2 * predispatch_hours)]
    predispatch = market_data_pb2.PredispatchForecast(
        product=product, period=[to_timestamp(p) for p in periods],
        price=[120.0 if product == "ENERGY" else 6.0] * len(periods))
    return worker_pb2.ForecastRequest(
        request_id=f"{product}-v{version}", algorithm=common_pb2.AlgorithmRef(name="sarx-quantile", version=version),
        region="SA1", product=product, decision_time=to_timestamp(first_interval - FIVE * 2 + timedelta(seconds=30)),
        first_interval=to_timestamp(first_interval), horizon_intervals=HORIZON, quantiles=list(QUANTILES),
        history=market_data_pb2.ProductPriceHistory(product=product, first_interval=to_timestamp(HISTORY_START),
                                                    price=prices.tolist()),
        predispatch=predispatch)


def _median(product: str, version: str) -> np.ndarray:
    return _price(product, version)[:, MEDIAN]


def _price(product: str, version: str, predispatch_hours: int = 0) -> np.ndarray:
    run = run_forecast_v4 if version == "4" else run_forecast
    return forecast_from_result(run(_request(product, version, predispatch_hours))).price


def test_v4_holds_the_price_of_now_where_v2_runs_on_to_the_usual_peak() -> None:
    last = float(_history("ENERGY")[-1])
    v2, v4 = _median("ENERGY", "2"), _median("ENERGY", "4")
    # Half an hour to two hours ahead v2 climbs the other days' ramp away from the price of now; v4 stays
    # nearer it.
    ramp = slice(6, 24)
    assert np.mean(v2[ramp]) > last + 50.0
    assert np.mean(np.abs(v4[ramp] - last)) < 0.85 * np.mean(np.abs(v2[ramp] - last))
    # Lead by lead v4 lies between v2 and the price of now (the pull never overshoots).
    low, high = np.minimum(v2, last), np.maximum(v2, last)
    assert np.all(v4 >= low - 1e-6) and np.all(v4 <= high + 1e-6)
    # Beyond the pull (weight below e^-12) the two versions are the same path.
    far = int(12 * ENERGY_PERSISTENCE_SCALE_V4)
    assert far < HORIZON
    np.testing.assert_allclose(v4[far:], v2[far:], rtol=1e-4, atol=1e-3)


def test_v4_pull_is_longer_than_v2_only_for_energy() -> None:
    assert ENERGY_PERSISTENCE_SCALE_V4 > PERSISTENCE_BY_VERSION["2"].energy_lead_scale_intervals
    v2, v4 = PERSISTENCE_BY_VERSION["2"], PERSISTENCE_BY_VERSION["4"]
    assert (v4.energy_lead_scale_intervals, v4.fcas_lead_scale_intervals) == (v2.energy_lead_scale_intervals,
                                                                              v2.fcas_lead_scale_intervals)
    assert v4.unforecast_scale_for("ENERGY") == ENERGY_PERSISTENCE_SCALE_V4
    assert v4.unforecast_scale_for("RAISE6SEC") is None
    assert USES_P5MIN_BY_VERSION["4"] is False


def test_v4_where_pre_dispatch_covers_the_horizon_is_v2_bit_for_bit() -> None:
    np.testing.assert_array_equal(_price("ENERGY", "4", predispatch_hours=50),
                                  _price("ENERGY", "2", predispatch_hours=50))


def test_v4_holds_longer_only_beyond_the_pre_dispatch() -> None:
    """Pre-dispatch over the first hour: v4 is v2 there and holds the price of now longer after it."""
    v2, v4 = _price("ENERGY", "2", predispatch_hours=1), _price("ENERGY", "4", predispatch_hours=1)
    np.testing.assert_array_equal(v4[:12], v2[:12])
    assert np.any(np.abs(v4[12:36, MEDIAN] - v2[12:36, MEDIAN]) > 1.0)


@pytest.mark.parametrize("product", ["RAISE6SEC", "LOWERREG"])
def test_v4_fcas_is_v2_bit_for_bit(product: str) -> None:
    v2 = run_forecast(_request(product, "2"))
    v4 = run_forecast_v4(_request(product, "4"))
    assert list(v4.price) == list(v2.price)


def test_older_versions_keep_their_persistence() -> None:
    """The replayable versions' settings are those they were served with (v1 none, v2 and v3 3 / 2 intervals)."""
    assert PERSISTENCE_BY_VERSION["1"] == Persistence(0.0, 0.0)
    assert PERSISTENCE_BY_VERSION["2"] == Persistence(3.0, 2.0)
    assert PERSISTENCE_BY_VERSION["3"] == Persistence(3.0, 2.0)
    assert [USES_P5MIN_BY_VERSION[v] for v in ("1", "2", "3")] == [False, False, True]


def test_v4_is_served_next_to_the_others_and_checks_its_name() -> None:
    registry = default_registry()
    assert {"sarx-quantile v1", "sarx-quantile v2", "sarx-quantile v3", "sarx-quantile v4"} <= set(
        registry.known("forecast"))
    served = registry.resolve("forecast", "sarx-quantile", "4")(_request("ENERGY", "4"))
    assert list(served.price) == list(run_forecast_v4(_request("ENERGY", "4")).price)
    with pytest.raises(InvalidRequestError, match="is not sarx-quantile v4"):
        run_forecast_v4(_request("ENERGY", "2"))
