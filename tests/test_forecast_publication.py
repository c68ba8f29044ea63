"""The forecaster's result as the versioned forecast sites receive."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.fleet.forecast_publication import (
    ForecastPublicationError,
    forecast_version_at,
    price_forecast_for_sites,
)
from services.fleet_codec import forecast_prices, median_price_per_mwh
from vpp.v1 import common_pb2, worker_pb2

PUBLISHED_MS = 1_750_000_123_456


def _result(**overrides: object) -> worker_pb2.ForecastResult:
    # Two intervals × three quantiles, row-major interval × quantile.
    values: dict[str, object] = dict(request_id="r", product="ENERGY", horizon_intervals=2, quantiles=[0.1, 0.5, 0.9],
                                     price=[10.0, 20.0, 30.0, 40.0, 50.0, 60.0], status=worker_pb2.RESULT_STATUS_OK,
                                     algorithm=common_pb2.AlgorithmRef(name="sarx-quantile", version="2"))
    values.update(overrides)
    return worker_pb2.ForecastResult(**values)  # type: ignore[arg-type]


def test_prices_are_transposed_to_quantile_rows_and_versioned_by_the_minute() -> None:
    forecast = price_forecast_for_sites(_result(), region="SA1", published_at_ms=PUBLISHED_MS, start_ms=42)
    np.testing.assert_array_equal(forecast_prices(forecast), [[10, 40], [20, 50], [30, 60]])
    np.testing.assert_array_equal(median_price_per_mwh(forecast), [20, 50])
    assert forecast.version == PUBLISHED_MS // 60_000 == forecast_version_at(PUBLISHED_MS)
    assert (forecast.start_ms, forecast.interval_minutes, forecast.algorithm) == (42, 5, "sarx-quantile@2")
    later = price_forecast_for_sites(_result(), region="SA1", published_at_ms=PUBLISHED_MS + 60_000, start_ms=42,
                                     storm_warning=True)
    assert later.version == forecast.version + 1
    assert later.storm_warning and not forecast.storm_warning


@pytest.mark.parametrize(("overrides", "message"), [
    ({"status": worker_pb2.RESULT_STATUS_ERROR, "status_reason": "no history"}, "not usable: no history"),
    ({"quantiles": []}, "no quantiles"),
    ({"price": [1.0, 2.0]}, "2 prices for 2 intervals × 3 quantiles"),
    ({"price": [1.0, 2.0, 3.0, 4.0, float("nan"), 6.0]}, "non-finite"),
])
def test_an_unusable_result_is_refused_with_the_reason(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ForecastPublicationError, match=message):
        price_forecast_for_sites(_result(**overrides), region="SA1", published_at_ms=PUBLISHED_MS, start_ms=0)
