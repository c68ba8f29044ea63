"""Pure builders of the cycle's worker requests from its archived inputs.

The same functions serve the live cycle (through activities) and the backtester, so a replay
builds byte-identical requests from the same snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from algorithms.common.content_hash import with_inputs_hash
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import to_timestamp
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2


def forecastable_products(snapshot: market_data_pb2.MarketSnapshot) -> tuple[str, ...]:
    """The products of ``snapshot`` a forecast can be made for: those with a price known (or estimated) in
    their history or a pre-dispatch forecast, in the snapshot's order.

    A product the data names but whose market had no price yet as of the snapshot (RAISE1SEC before
    9 October 2023, or in a month of DISPATCHPRICE v4 next to one of v5) has nothing to forecast from: it
    is not forecast and not planned, and its bid offers nothing.
    """
    missing = common_pb2.DATA_QUALITY_MISSING
    known = {history.product for history in snapshot.history
             if any(quality != missing for quality in history.quality)}
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
    return with_inputs_hash(request)


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
    uncertainty_weight: float | None = None,
) -> worker_pb2.OptimisationRequest:
    """The optimisation request over every product's forecast (MW, MWh, $/MWh of throughput).

    ``uncertainty_weight`` (κ in [0, 1), ``lp-uncertainty-spread``'s ``energy_uncertainty_weight``) is set on
    the request only when given: None leaves it unset (the algorithm version's own κ) and the request, and
    its hash, exactly as before the field existed.

    The terminal energy target is capped to what the battery can hold; forecasts are ordered by
    product name so the request (and its hash) does not depend on the order they arrived in.
    """
    if not forecasts:
        raise InvalidRequestError("an optimisation needs at least one forecast")
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
    )
    if uncertainty_weight is not None:
        request.energy_uncertainty_weight = uncertainty_weight
    return with_inputs_hash(request)
