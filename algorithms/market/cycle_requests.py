"""Pure builders of the cycle's worker requests from its archived inputs.

The same functions serve the live cycle (through activities) and the backtester, so a replay
builds byte-identical requests from the same snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt

from algorithms.common.content_hash import inputs_hash, stamp_inputs_hash
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import from_timestamp, to_timestamp
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2


def forecastable_products(snapshot: market_data_pb2.MarketSnapshot) -> tuple[str, ...]:
    """The products of ``snapshot`` a forecast can be made for: those with a price known (or estimated) in
    their history or a pre-dispatch forecast, in the snapshot's order.

    A product the data names but whose market had no price yet as of the snapshot (RAISE1SEC before
    9 October 2023, or in a month of DISPATCHPRICE v4 next to one of v5) has nothing to forecast from: it
    is not forecast and not planned, and its bid offers nothing.
    """
    missing = common_pb2.DATA_QUALITY_MISSING
    known = {history.product for history in snapshot.history if set(history.quality) - {missing}}
    known |= {forecast.product for forecast in snapshot.predispatch if len(forecast.price)}
    return tuple(product for product in snapshot.products if product in known)


def forecast_request(
    snapshot: market_data_pb2.MarketSnapshot,
    product: str,
    *,
    request_id: str,
    decision_time: datetime,
    first_interval: datetime,
    horizon_intervals: int,
    quantiles: Sequence[float],
    algorithm: common_pb2.AlgorithmRef,
) -> worker_pb2.ForecastRequest:
    """The forecast request for one product (prices $/MWh or $/MW/h; times interval-ending AEST): its
    history, and AEMO's pre-dispatch and P5MIN forecasts of it when the snapshot carries them.

    Raises InvalidRequestError when the snapshot has no history for ``product``.
    """
    history = next((h for h in snapshot.history if h.product == product), None)
    if history is None:
        raise InvalidRequestError(f"snapshot has no price history for product {product!r}")
    predispatch = next((p for p in snapshot.predispatch if p.product == product), None)
    p5min = next((p for p in snapshot.p5min if p.product == product), None)
    request = worker_pb2.ForecastRequest(
        request_id=request_id,
        algorithm=algorithm,
        region=snapshot.region,
        product=product,
        decision_time=to_timestamp(decision_time),
        first_interval=to_timestamp(first_interval),
        horizon_intervals=horizon_intervals,
        quantiles=list(quantiles),
        history=history,
    )
    if predispatch is not None:
        request.predispatch.CopyFrom(predispatch)
    if p5min is not None:
        request.p5min.CopyFrom(p5min)
    return stamp_inputs_hash(request)


def optimisation_request(
    forecasts: Sequence[worker_pb2.ForecastResult],
    battery: common_pb2.BatterySpec,
    *,
    request_id: str,
    first_interval: datetime,
    horizon_intervals: int,
    state_of_charge_mwh: float,
    terminal_state_of_charge_mwh: float,
    price_quantile: float,
    degradation_cost_per_mwh: float,
    time_limit_s: float,
    initial_net_mw: float,
    algorithm: common_pb2.AlgorithmRef,
    terminal_value_per_mwh: float = 0.0,
    price_tail_weight: float = 0.0,
    enablement_cap_mw: Mapping[str, npt.ArrayLike] | None = None,
    uncertainty_weight: float | None = None,
) -> worker_pb2.OptimisationRequest:
    """The optimisation request over every product's forecast (MW, MWh, $/MWh of throughput).

    ``uncertainty_weight`` (κ in [0, 1), ``lp-uncertainty-spread``'s ``energy_uncertainty_weight``) is set on
    the request only when given: None leaves it unset (the algorithm version's own κ) and the request, and
    its hash, exactly as before the field existed.

    The terminal energy target is capped to what the battery can hold; forecasts are ordered by
    product name so the request (and its hash) does not depend on the order they arrived in.
    ``enablement_cap_mw`` (market depth the plan expects, :mod:`algorithms.market.depth_plan`): FCAS product →
    the most MW it may be enabled for in each of the ``horizon_intervals`` intervals; only products with a
    forecast are kept (a product not forecast is not planned), in product order. None or empty: the request
    is exactly a price-taker's. Raises InvalidRequestError for a cap of the wrong length, negative or NaN.
    """
    if not forecasts:
        raise InvalidRequestError("an optimisation needs at least one forecast")
    forecast_products = {forecast.product for forecast in forecasts}
    caps: list[worker_pb2.EnablementCap] = []
    for product in sorted(enablement_cap_mw or {}):
        if product not in forecast_products:
            continue
        cap_mw = np.asarray((enablement_cap_mw or {})[product], dtype=np.float64)
        if cap_mw.shape != (horizon_intervals,) or bool(np.any(np.isnan(cap_mw))) or bool(np.any(cap_mw < 0)):
            raise InvalidRequestError(f"the enablement cap of {product!r} must be {horizon_intervals} MW values "
                                      f">= 0 (inf = no cap), got shape {cap_mw.shape}")
        caps.append(worker_pb2.EnablementCap(product=product, cap_mw=cap_mw.tolist()))
    soc_max = battery.energy_mwh * battery.soc_max_fraction
    soc_min = battery.energy_mwh * battery.soc_min_fraction
    request = worker_pb2.OptimisationRequest(
        request_id=request_id,
        algorithm=algorithm,
        battery=battery,
        initial_state_of_charge_mwh=min(max(state_of_charge_mwh, soc_min), soc_max),
        terminal_state_of_charge_mwh=min(max(terminal_state_of_charge_mwh, soc_min), soc_max),
        first_interval=to_timestamp(first_interval),
        horizon_intervals=horizon_intervals,
        forecasts=sorted(forecasts, key=lambda f: f.product),
        price_quantile=price_quantile,
        degradation_cost_per_mwh=degradation_cost_per_mwh,
        time_limit_s=time_limit_s,
        initial_net_mw=initial_net_mw,
        terminal_value_per_mwh=terminal_value_per_mwh,
        price_tail_weight=price_tail_weight,
        enablement_caps=caps,
    )
    if uncertainty_weight is not None:
        request.energy_uncertainty_weight = uncertainty_weight
    return stamp_inputs_hash(request)


def shared_forecast_id(request: worker_pb2.ForecastRequest) -> str:
    """The id of a forecast request by what it forecasts, not by who asked for it:
    ``forecast/<region>/<first interval, AEST>/<product>/<algorithm>@<version>/<inputs hash, 16 hex digits>``.

    Requests with identical inputs (region, market data as of the same moment, decision time, first interval
    (interval-ending AEST), horizon, quantiles, algorithm) have the same id, so the units of one region deciding
    in the same round ask for, and are answered with, one forecast per product.
    """
    first = from_timestamp(request.first_interval)
    algorithm = request.algorithm
    return (f"forecast/{request.region}/{first:%Y%m%dT%H%M}/{request.product}/"
            f"{algorithm.name}@{algorithm.version}/{(request.inputs_hash or inputs_hash(request))[:16]}")


def region_forecast_requests(
    snapshot: market_data_pb2.MarketSnapshot,
    products: Sequence[str],
    *,
    first_interval: datetime,
    horizon_intervals: int,
    quantiles: Sequence[float],
    algorithm: common_pb2.AlgorithmRef,
) -> tuple[worker_pb2.ForecastRequest, ...]:
    """The forecast requests of one decision, one per product, as of the snapshot's market-data as-of
    (naive interval-ending AEST; the decision time the forecaster sees): :func:`forecast_request` with
    :func:`shared_forecast_id` as request id. Prices $/MWh or $/MW/h.

    Every unit of a region deciding from the same snapshot builds byte-identical requests: the forecasts
    belong to the region and the round, not to a unit. The backtest's decisions forecast as of the same
    as-of (backtest/engine.py). Raises InvalidRequestError when the snapshot has no history for a product.
    """
    decision_time = from_timestamp(snapshot.as_of)
    requests: list[worker_pb2.ForecastRequest] = []
    for product in products:
        request = forecast_request(snapshot, product, request_id="", decision_time=decision_time,
                                   first_interval=first_interval, horizon_intervals=horizon_intervals,
                                   quantiles=quantiles, algorithm=algorithm)
        request.request_id = shared_forecast_id(request)
        requests.append(request)
    return tuple(requests)
