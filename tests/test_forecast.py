"""Tests of the sarx-quantile price forecast (algorithms/market/forecast.py)."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import to_timestamp
from algorithms.market.forecast import (
    ALGORITHM,
    PriceForecast,
    forecast_from_result,
    forecasts_to_dataset,
    pinball_loss,
    quantile_at,
    quantile_price_forecast,
    run_forecast,
)
from settings import REPO_ROOT
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2

DATA_DIR = REPO_ROOT / "data" / "nem"
FIVE_MIN = timedelta(minutes=5)
QUANTILES = [0.1, 0.5, 0.9]


def synthetic_history(length: int, seed: int = 0) -> np.ndarray:
    """A daily-shaped price path ($/MWh) with noise and an occasional spike."""
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.arange(length) / 288
    prices = 60 + 30 * np.sin(phase) + rng.normal(0, 8, length)
    prices[rng.random(length) < 0.01] = 5000.0
    return prices


HISTORY_FIRST = datetime(2021, 1, 1, 0, 5)


def first_interval_after(history_length: int, gap: int = 2) -> datetime:
    return HISTORY_FIRST + FIVE_MIN * (history_length - 1 + gap)


@pytest.fixture(scope="module")
def sa1_month() -> tuple[list[datetime], np.ndarray, pd.DataFrame]:
    dispatch = pd.read_parquet(DATA_DIR / "PUBLIC_DVD_DISPATCHPRICE_202101010000.parquet")
    dispatch = dispatch[(dispatch.INTERVENTION == 0) & (dispatch.REGIONID == "SA1")].copy()
    dispatch["interval"] = pd.to_datetime(dispatch.SETTLEMENTDATE, format="%Y/%m/%d %H:%M:%S")
    dispatch = dispatch.sort_values("interval")
    predispatch = pd.read_parquet(DATA_DIR / "PUBLIC_DVD_PREDISPATCHPRICE_202101010000.parquet")
    predispatch = predispatch[(predispatch.INTERVENTION == 0) & (predispatch.REGIONID == "SA1")]
    return list(dispatch.interval.dt.to_pydatetime()), dispatch.RRP.to_numpy(np.float64), predispatch


def latest_predispatch(predispatch: pd.DataFrame, decision_time: datetime) -> tuple[list[datetime], np.ndarray]:
    """The pre-dispatch run last published (LASTCHANGED) at or before ``decision_time``."""
    published = predispatch[predispatch.LASTCHANGED <= decision_time]
    run = published[published.PREDISPATCH_RUN_DATETIME == published.PREDISPATCH_RUN_DATETIME.max()]
    run = run.sort_values("DATETIME")
    return list(run.DATETIME.dt.to_pydatetime()), run.RRP.to_numpy(np.float64)


def test_shape_and_monotonic_quantiles() -> None:
    history = synthetic_history(2016)
    forecast = quantile_price_forecast(history, HISTORY_FIRST, [], np.array([]), first_interval_after(2016), 288,
                                       QUANTILES)
    assert forecast.shape == (288, 3)
    assert np.all(np.isfinite(forecast))
    assert np.all(np.diff(forecast, axis=1) >= 0)
    assert np.any(np.diff(forecast, axis=1) > 0)


def test_a_flat_price_history_forecasts_that_price_without_warnings() -> None:
    history = np.full(600, 12.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forecast = quantile_price_forecast(history, HISTORY_FIRST, [], np.array([]), first_interval_after(600), 48,
                                           QUANTILES)
    assert np.allclose(forecast[:, 1], 12.5, atol=0.5)
    assert np.all(np.diff(forecast, axis=1) >= 0)


@settings(max_examples=25, deadline=None)
@given(
    length=st.integers(min_value=0, max_value=700),
    horizon=st.integers(min_value=1, max_value=400),
    levels=st.lists(st.floats(min_value=0.01, max_value=0.99), min_size=1, max_size=5, unique=True),
    missing_share=st.floats(min_value=0.0, max_value=0.5),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_any_history_length_gives_ordered_finite_quantiles(
    length: int, horizon: int, levels: list[float], missing_share: float, seed: int
) -> None:
    history = synthetic_history(length, seed)
    history[np.random.default_rng(seed).random(length) < missing_share] = np.nan
    first = first_interval_after(length)
    periods = [first + timedelta(minutes=30 * i) for i in range(4)]
    quantiles = sorted(levels)
    forecast = quantile_price_forecast(history, HISTORY_FIRST, periods, np.array([50.0, 60.0, 70.0, 80.0]), first,
                                       horizon, quantiles)
    assert forecast.shape == (horizon, len(quantiles))
    assert np.all(np.isfinite(forecast))
    assert np.all(np.diff(forecast, axis=1) >= 0)


def test_band_covers_a_plausible_share_of_sa1_january_actuals(
    sa1_month: tuple[list[datetime], np.ndarray, pd.DataFrame],
) -> None:
    intervals, prices, predispatch = sa1_month
    coverage = []
    for day in (8, 12, 16, 20, 24):
        origin = day * 288 + 48  # decisions a little after 04:00
        decision_time = intervals[origin - 1] + timedelta(seconds=30)
        periods, pd_prices = latest_predispatch(predispatch, decision_time)
        forecast = quantile_price_forecast(prices[origin - 2016:origin], intervals[origin - 2016], periods, pd_prices,
                                           intervals[origin + 1], 288, QUANTILES)
        actual = prices[origin + 1:origin + 289]
        coverage.append(np.mean((actual >= forecast[:, 0]) & (actual <= forecast[:, 2])))
        assert np.all(forecast[:, 1] > -1000) and np.all(forecast[:, 1] < 15000)
    # A nominal 80 % band; SA1 in January 2021 is spiky, so allow a wide plausible range.
    assert 0.55 <= float(np.mean(coverage)) <= 0.95


def test_predispatch_spike_moves_the_forecast() -> None:
    history = synthetic_history(2016)
    first = first_interval_after(2016)
    periods = [first + timedelta(minutes=30 * i) for i in range(8)]
    flat = np.full(8, 60.0)
    spiky = flat.copy()
    spiky[3] = 10000.0
    without = quantile_price_forecast(history, HISTORY_FIRST, [], np.array([]), first, 96, QUANTILES)
    with_flat = quantile_price_forecast(history, HISTORY_FIRST, periods, flat, first, 96, QUANTILES)
    with_spike = quantile_price_forecast(history, HISTORY_FIRST, periods, spiky, first, 96, QUANTILES)
    spike_rows = slice(13, 19)  # the six 5-minute intervals of the half-hour ending periods[3]
    assert np.all(with_spike[spike_rows, 1] > 3 * with_flat[spike_rows, 1])
    # Elsewhere the spike changes only the asinh scale (a median over all inputs): a tiny effect.
    np.testing.assert_allclose(with_spike[:12], with_flat[:12], rtol=1e-3)
    assert not np.allclose(with_flat, without)
    # Past the pre-dispatch coverage the history model alone decides.
    np.testing.assert_allclose(with_spike[48:], without[48:], rtol=1e-3)


def test_empty_history_uses_predispatch() -> None:
    first = datetime(2021, 1, 5, 4, 5)
    periods = [datetime(2021, 1, 5, 4, 30), datetime(2021, 1, 5, 5, 0)]
    forecast = quantile_price_forecast(np.array([]), first, periods, np.array([40.0, 90.0]), first, 24, QUANTILES)
    assert forecast.shape == (24, 3)
    assert np.all(np.diff(forecast, axis=1) >= 0)
    np.testing.assert_allclose(forecast[:6, 1], 40.0)
    np.testing.assert_allclose(forecast[6:, 1], 90.0)  # held flat past the last period


def test_neither_history_nor_predispatch_raises() -> None:
    first = datetime(2021, 1, 5, 4, 5)
    with pytest.raises(InvalidRequestError, match="no price history and no pre-dispatch"):
        quantile_price_forecast(np.full(10, np.nan), first - FIVE_MIN * 12, [], np.array([]), first, 12, QUANTILES)


def test_history_overlapping_horizon_raises() -> None:
    history = synthetic_history(100)
    with pytest.raises(InvalidRequestError, match="not before the first forecast interval"):
        quantile_price_forecast(history, HISTORY_FIRST, [], np.array([]), HISTORY_FIRST + FIVE_MIN * 50, 12,
                                QUANTILES)


def forecast_request(**overrides: object) -> worker_pb2.ForecastRequest:
    history_prices = synthetic_history(600)
    first = first_interval_after(600)
    request = worker_pb2.ForecastRequest(
        request_id="req-1",
        algorithm=ALGORITHM,
        inputs_hash="abc",
        region="SA1",
        product="ENERGY",
        decision_time=to_timestamp(first - FIVE_MIN),
        first_interval=to_timestamp(first),
        horizon_intervals=48,
        quantiles=QUANTILES,
        history=market_data_pb2.ProductPriceHistory(
            product="ENERGY", first_interval=to_timestamp(HISTORY_FIRST), price=history_prices.tolist(),
        ),
        predispatch=market_data_pb2.PredispatchForecast(
            product="ENERGY",
            period=[to_timestamp(first + timedelta(minutes=30 * i)) for i in range(3)],
            price=[55.0, 65.0, 75.0],
        ),
    )
    for field, value in overrides.items():
        if isinstance(value, list):
            getattr(request, field)[:] = value
        elif isinstance(value, common_pb2.AlgorithmRef):
            request.algorithm.CopyFrom(value)
        else:
            setattr(request, field, value)
    return request


def test_run_forecast_round_trip() -> None:
    request = forecast_request()
    result = run_forecast(request)
    assert result.status == worker_pb2.RESULT_STATUS_OK
    assert (result.request_id, result.inputs_hash, result.product) == ("req-1", "abc", "ENERGY")
    assert result.algorithm == ALGORITHM
    assert result.first_interval == request.first_interval
    assert result.horizon_intervals == 48
    assert list(result.quantiles) == QUANTILES
    assert len(result.price) == 48 * 3
    assert result.compute_ms == 0.0  # pure: no clock; whoever runs it times it (pools/timing.py)
    assert run_forecast(request) == result  # the same request, the same result, bit for bit
    forecast = forecast_from_result(result)
    assert forecast.price.shape == (48, 3)
    assert np.all(np.diff(forecast.price, axis=1) >= 0)
    assert forecast.price[0, 0] == result.price[0] and forecast.price[0, 2] == result.price[2]  # row-major


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"quantiles": [0.5, 0.1]}, "strictly increasing"),
        ({"quantiles": [0.0, 0.5]}, "strictly between 0 and 1"),
        ({"quantiles": []}, "non-empty"),
        ({"horizon_intervals": 0}, "horizon_intervals"),
        ({"horizon_intervals": 2017}, "horizon_intervals"),
        ({"product": ""}, "product is empty"),
        ({"product": "RAISE6SEC"}, "history is for 'ENERGY'"),
        ({"algorithm": common_pb2.AlgorithmRef(name="lstm", version="2")}, "is not sarx-quantile"),
    ],
)
def test_bad_requests_raise_naming_the_problem(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        run_forecast(forecast_request(**overrides))


def test_inconsistent_history_arrays_raise() -> None:
    request = forecast_request()
    request.history.known_at_unix_ms[:] = [1, 2, 3]
    with pytest.raises(InvalidRequestError, match="known_at"):
        run_forecast(request)
    request = forecast_request()
    request.predispatch.price.append(80.0)
    with pytest.raises(InvalidRequestError, match="3 periods but 4 prices"):
        run_forecast(request)


def test_missing_quality_is_treated_as_missing() -> None:
    request = forecast_request()
    qualities = [common_pb2.DATA_QUALITY_ON_TIME] * len(request.history.price)
    qualities[-1] = common_pb2.DATA_QUALITY_MISSING
    request.history.price[-1] = 1e6  # must not be used
    request.history.quality[:] = qualities
    result = forecast_from_result(run_forecast(request))
    assert result.price.max() < 1e5


def test_quantile_at_interpolates_between_levels() -> None:
    forecast = PriceForecast(
        product="ENERGY",
        first_interval=datetime(2021, 1, 1, 4, 5),
        quantiles=np.array([0.1, 0.5, 0.9]),
        price=np.array([[10.0, 20.0, 60.0], [0.0, 0.0, 100.0]]),
    )
    np.testing.assert_allclose(quantile_at(forecast, 0.5), [20.0, 0.0])
    np.testing.assert_allclose(quantile_at(forecast, 0.3), [15.0, 0.0])
    np.testing.assert_allclose(quantile_at(forecast, 0.8), [50.0, 75.0])
    np.testing.assert_allclose(quantile_at(forecast, 0.1), [10.0, 0.0])
    with pytest.raises(InvalidRequestError, match="outside"):
        quantile_at(forecast, 0.95)


def test_forecasts_to_dataset() -> None:
    first = datetime(2021, 1, 1, 4, 5)
    levels = np.array([0.1, 0.9])
    energy = PriceForecast("ENERGY", first, levels, np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    raise6 = PriceForecast("RAISE6SEC", first, levels, np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]))
    dataset = forecasts_to_dataset([energy, raise6])
    assert dataset.price.dims == ("interval", "product", "quantile")
    assert dataset.price.shape == (3, 2, 2)
    assert float(dataset.price.sel(product="RAISE6SEC", quantile=0.9).isel(interval=1)) == 0.4
    assert dataset.interval.values[2] == np.datetime64(first + 2 * FIVE_MIN, "ns")
    shifted = PriceForecast("LOWERREG", first + FIVE_MIN, levels, energy.price)
    with pytest.raises(InvalidRequestError, match="covers"):
        forecasts_to_dataset([energy, shifted])


def test_pinball_loss_hand_computed() -> None:
    # Interval 1: actual 10, P10 8 (u=+2 -> 0.1*2=0.2), P90 12 (u=-2 -> 0.1*2=0.2).
    # Interval 2: actual 0, P10 1 (u=-1 -> 0.9*1=0.9), P90 5 (u=-5 -> 0.1*5=0.5). Mean = 1.8 / 4.
    loss = pinball_loss(np.array([10.0, 0.0]), np.array([[8.0, 12.0], [1.0, 5.0]]), [0.1, 0.9])
    assert loss == pytest.approx(0.45)
    with pytest.raises(ValueError, match="shapes"):
        pinball_loss(np.array([1.0]), np.array([[1.0, 2.0, 3.0]]), [0.1, 0.9])
