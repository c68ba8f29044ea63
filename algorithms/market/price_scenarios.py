"""Price scenarios for a two-stage plan (:func:`algorithms.market.optimise.solve_request` with ``scenarios``).

A rolling plan on one price path bets its first interval on that path: on when the peak comes and how high. A
two-stage plan shares the first interval (what the bid offers now) between several price scenarios and plans the
rest per scenario (:func:`algorithms.market.lp_matrix.build_scenario_lp`), so the energy it holds now is worth the
expected best use over the scenarios rather than the best use of their average. Each function here turns an
optimisation request's forecasts into (the first scenario's price path per product, the further scenarios with
their probabilities), the shape :data:`algorithms.market.optimise.ScenarioPrices` names; prices are $/MWh for
ENERGY and $/MW/h for FCAS, one value per interval of the request's horizon.

* :func:`quantile_scenarios` — how high: the central quantile path and the lowest and highest quantile paths, with
  the Pearson–Tukey weights of :func:`~algorithms.market.optimise.planning_price` as probabilities.
* :func:`timing_scenarios` — when: the planning path itself, and the same path a little later and a little earlier.

With :func:`quantile_scenarios` every interval's expected price is the one-path plan's planning price; with
:func:`timing_scenarios` it is that path smoothed over the shift (a peak's expected price spread over the hours
around it), which is what an uncertain timing means.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from algorithms.common.errors import InvalidRequestError
from algorithms.market.forecast import quantile_at
from algorithms.market.optimise import (
    PriceScenario,
    check_tail_weight,
    planning_points,
    planning_prices,
    request_forecasts,
)
from vpp.v1 import worker_pb2

FloatArray = npt.NDArray[np.float64]

# timing_scenarios: how far (intervals) the later and the earlier scenario move the planning path, and the
# probability of each.
TIMING_SHIFT_INTERVALS = 12
TIMING_SHIFT_PROBABILITY = 0.25


def quantile_scenarios(request: worker_pb2.OptimisationRequest) -> tuple[dict[str, FloatArray], list[PriceScenario]]:
    """How high: the central path (every product at quantile ``request.price_quantile``) and, unless
    ``request.price_tail_weight`` is 0, the lowest and the highest quantile path of every product, each with that
    weight as its probability (the central path has the rest) — :func:`~algorithms.market.optimise.planning_price`'s
    three points as scenarios. The quantile paths move together across products (a high energy scenario is a high
    FCAS one). Raises InvalidRequestError as :func:`~algorithms.market.optimise.planning_prices` does."""
    forecasts = request_forecasts(request)
    tail_weight = request.price_tail_weight
    check_tail_weight(tail_weight)
    if tail_weight == 0:
        return {product: quantile_at(forecast, request.price_quantile)
                for product, forecast in forecasts.items()}, []
    points = {product: planning_points(forecast, request.price_quantile) for product, forecast in forecasts.items()}
    central = {product: middle for product, (_, middle, _) in points.items()}
    low = PriceScenario(tail_weight, {product: lowest for product, (lowest, _, _) in points.items()})
    high = PriceScenario(tail_weight, {product: highest for product, (_, _, highest) in points.items()})
    return central, [low, high]


def shifted_path(path: FloatArray, shift_intervals: int) -> FloatArray:
    """``path`` ($/MWh or $/MW/h per interval) with everything after its first interval moved ``shift_intervals``
    later (negative: earlier): interval ``t >= 1`` takes the price of interval ``t - shift_intervals``, clipped to
    ``[1, len(path) - 1]`` (the ends repeat the nearest price); the first interval keeps its own price."""
    horizon = len(path)
    if horizon <= 1 or shift_intervals == 0:
        return np.array(path, dtype=np.float64)
    source = np.clip(np.arange(horizon) - shift_intervals, 1, horizon - 1)
    source[0] = 0
    return np.asarray(path, dtype=np.float64)[source]


def timing_scenarios(request: worker_pb2.OptimisationRequest,
                     shift_intervals: int = TIMING_SHIFT_INTERVALS,
                     shift_probability: float = TIMING_SHIFT_PROBABILITY,
                     ) -> tuple[dict[str, FloatArray], list[PriceScenario]]:
    """When: the planning path of every product (:func:`~algorithms.market.optimise.planning_prices`) with
    probability ``1 - 2 * shift_probability``, and the same paths ``shift_intervals`` later and earlier
    (:func:`shifted_path`), each with ``shift_probability``. A peak the forecast places at 19:00 is then also
    planned for at 18:00 and 20:00, so the first interval is not bet on one timing. Raises InvalidRequestError as
    :func:`~algorithms.market.optimise.planning_prices` does, and for a shift that is not positive or a
    probability outside (0, 0.5)."""
    if shift_intervals <= 0:
        raise InvalidRequestError(f"shift_intervals must be positive, got {shift_intervals}")
    if not 0 < shift_probability < 0.5:
        raise InvalidRequestError(f"shift_probability must be in (0, 0.5), got {shift_probability}")
    planned = planning_prices(request)
    return planned, [PriceScenario(shift_probability, {product: shifted_path(path, shift)
                                                       for product, path in planned.items()})
                     for shift in (shift_intervals, -shift_intervals)]
