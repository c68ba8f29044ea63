"""From the market forecaster's result to the versioned price forecast every site receives.

The forecaster (``algorithms/market/forecast.py``, run by the SQS worker pool) answers in market time
(interval-ending AEST, row-major interval × quantile). Sites live in wall-clock time (epoch ms UTC) and
read quantile × interval rows. The local stack replays January 2021 live, so market time and wall-clock
time differ by a fixed offset within one run: the caller passes the wall-clock start of the first
interval.

Versions are the publication minute (``published_at_ms // 60 000``): they increase with every
publication, never repeat for two publications at least a minute apart, and a retried publication within
the same minute is the same version (the gateway ignores it).
"""

from __future__ import annotations

import numpy as np

from vpp.v1 import fleet_pb2, worker_pb2

MS_PER_MINUTE = 60_000


class ForecastPublicationError(ValueError):
    """A forecaster result that cannot be published to sites (failed status, ragged prices, no quantiles)."""


def forecast_version_at(published_at_ms: int) -> int:
    """Version of a forecast published at ``published_at_ms`` (epoch ms UTC): minutes since the epoch."""
    if published_at_ms <= 0:
        raise ForecastPublicationError(f"published_at_ms must be positive, got {published_at_ms}")
    return published_at_ms // MS_PER_MINUTE


def price_forecast_for_sites(result: worker_pb2.ForecastResult, *, region: str, published_at_ms: int,
                             start_ms: int, interval_minutes: int = 5,
                             storm_warning: bool = False) -> fleet_pb2.PriceForecast:
    """The PriceForecast message sites receive for the forecaster's ``result``.

    Args:
        result: the forecaster's answer (prices $/MWh, row-major interval × quantile).
        region: NEM region of the prices (e.g. ``"SA1"``).
        published_at_ms: publication time (epoch ms UTC); gives the version.
        start_ms: wall-clock start of the result's first interval (epoch ms UTC).
        interval_minutes: forecast interval length (minutes).
        storm_warning: a storm warning is in force: sites raise their backup reserve while on this version.

    Raises:
        ForecastPublicationError: the result is not OK, has no quantiles, or its prices are ragged or
            not finite.
    """
    if result.status != worker_pb2.RESULT_STATUS_OK:
        raise ForecastPublicationError(f"forecast {result.request_id} is not usable: {result.status_reason}")
    quantiles = np.asarray(result.quantiles, dtype=np.float64)
    horizon = int(result.horizon_intervals)
    if not len(quantiles) or horizon <= 0:
        raise ForecastPublicationError(f"forecast {result.request_id} has no quantiles or no intervals")
    prices = np.asarray(result.price, dtype=np.float64)
    if prices.size != horizon * len(quantiles):
        raise ForecastPublicationError(f"forecast {result.request_id}: {prices.size} prices for {horizon} intervals "
                                       f"× {len(quantiles)} quantiles")
    if not np.isfinite(prices).all():
        raise ForecastPublicationError(f"forecast {result.request_id} holds non-finite prices")
    by_quantile = prices.reshape(horizon, len(quantiles)).T
    algorithm = f"{result.algorithm.name}@{result.algorithm.version}" if result.algorithm.name else ""
    return fleet_pb2.PriceForecast(
        version=forecast_version_at(published_at_ms), region=region, published_at_ms=published_at_ms,
        start_ms=start_ms, interval_minutes=interval_minutes, horizon_intervals=horizon,
        quantile=quantiles.tolist(), price_per_mwh=by_quantile.ravel().tolist(), algorithm=algorithm,
        storm_warning=storm_warning)
