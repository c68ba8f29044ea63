"""Energy held back for price spikes the plan cannot see: ``lp-spike-reserve`` v1 (:func:`run_optimisation`).

A rolling plan maximises revenue on one price path (the Pearson–Tukey blend of the forecast's quantiles,
:func:`algorithms.market.optimise.planning_price`). A path is an average: it cannot say *when* a spike will
come, only that spikes are likely, so the plan sells its energy at the best prices it can see and arrives
empty at the spike it could not see. The bid offers every MWh the plan does not use at the spike GEN band
(``[bidding]``, $300/MWh and up): energy left in the battery earns spikes whether or not they were forecast.

This optimiser keeps a *spike reserve*: the plan may not draw the battery below a floor (MWh) that grows with
how spiky the forecast says the horizon is. The share of horizon intervals whose highest forecast quantile
(P95 by default) reaches ``spike_price_per_mwh`` measures it: the forecaster's band is fitted on the recent
history (its residuals), so a region in a volatile regime — or AEMO's pre-dispatch pointing at a tight
evening — gives a wide upper tail, and a quiet one none (:func:`spike_reserve_mwh`). The floor is never
above the energy the battery holds now (a plan never has to charge into it at once: charging up to it is
left to the terminal target and to prices), nor above the horizon's terminal target. The energy below the
floor and above the battery's own minimum stays in the bid as spike headroom: the bid builder reads the
unit's real battery, not the plan's.

Everything else — prices, the LP, duals, statuses — is :func:`algorithms.market.optimise.run_optimisation`
on the same request with the raised floor (one home for the LP). With no spike in the forecast's upper
tail the plan is that of ``lp-energy-fcas`` v1, bit for bit.

Version 2 (:func:`run_optimisation_v2`, served next to v1) holds the same reserve (:data:`POLICY_V1`, the same
floor) under the plan of ``lp-uncertainty-spread`` v1 instead of ``lp-energy-fcas`` v1: energy valued by
direction off the planning price by κ × half the forecast band
(:func:`algorithms.market.uncertainty_spread.run_optimisation`, κ the request's ``energy_uncertainty_weight``,
unset its ``KAPPA_V1``). The versions differ in the plan under the floor only
(:data:`BASE_PLAN_BY_VERSION`); with no spike in the upper tail v2's plan is ``lp-uncertainty-spread`` v1's,
bit for bit.

Version 3 (:func:`run_optimisation_v3`, served next to v1) is v1 (the same reserve under ``lp-energy-fcas`` v1's
plan) plus its mirror for prices far below zero: a *room* the plan must have empty when they may come. A plan on one
price path cannot time the floor-price intervals of a midday with too much solar (SA1 falls to −$500/MWh and below)
any more than it can time a price spike, so it fills the battery at the first cheap prices it sees and is full when
the deep negative prices come. The bid offers the charge the plan does not use as LOAD headroom at negative prices
(:mod:`algorithms.market.bid_builder`, from the unit's real battery): room left empty earns those intervals whether
or not they were forecast. The room grows with the share of horizon intervals whose *lowest* forecast quantile (P05
by default) is at or below ``price_per_mwh`` of :data:`ROOM_POLICY_V3` (−$100/MWh), full (30 % of the storage) once
a tenth of the horizon is (:func:`spike_room_mwh`). It is a per-interval SoC maximum (:func:`room_ceiling_mwh`): at
the end of every such interval and of the interval before it, the stored energy may be at most the battery's own
maximum less the room. Unlike v1's floor it does not stop at the energy held now: the plan makes room ahead of the
deep negative prices, at the best prices it sees before them. The ceiling is never below what the battery can reach
by then discharging as fast as it can from now (ramp included), nor below the terminal target, so with the floor
(never above either) it never makes a feasible plan infeasible. With no deep negative price in the lower tail v3's
plan is v1's, bit for bit.

Version 4 (:func:`run_optimisation_v4`, served next to v1) is v3 — the same floor and room — planned on price
*scenarios* instead of one blended path: the central quantile path and the lowest and highest quantile paths, with
the Pearson–Tukey weights of the blend as their probabilities
(:func:`algorithms.market.price_scenarios.quantile_scenarios`), in one two-stage LP whose first interval (the one
the bid offers now) is the same in every scenario and whose later intervals are planned per scenario
(:func:`algorithms.market.lp_matrix.build_scenario_lp`). Each interval's expected price is v3's planning price; what
differs is the value of keeping energy (or room) for later: the blend averages the paths before the plan chooses
when to sell, so a peak that the high path puts at 18:00 and the central path at 19:30 is diluted in both intervals,
while the scenarios each sell at their own peak, and the energy held now is worth the expected best price — never
less than the best blended one. The plan read back is the central scenario's (first interval shared), its energy and
capacity values the expected ones over the scenarios. With a tail weight of 0 (one scenario) v4's plan is v3's, bit
for bit. The LP is three times as large: the solve costs about three times as much.

Version 5 (:func:`run_optimisation_v5`) is v4 with scenarios of *when* instead of how high
(:func:`algorithms.market.price_scenarios.timing_scenarios`): v3's planning path (probability ½) and the same path
an hour later and an hour earlier (¼ each), the first interval's price the same in all three.

Version 6 (:func:`run_optimisation_v6`) is v4 — the same floor, room and quantile scenarios — planned on a horizon
in periods (:mod:`algorithms.market.horizon_periods`): the first two hours interval by interval, the rest of the day
in half-hour periods at one constant output (:data:`HORIZON_RESOLUTION_BY_VERSION`), 68 LP periods instead of 288.
The bid's interval and the near future are planned exactly as v4 plans them; the evening is planned by the half
hour, on the forecast's half-hourly means. The plan comes back per interval, as v4's does. The LP is about a
quarter of v4's size and solves several times faster; what it costs in revenue is measured in the README.

Version 7 (:func:`run_optimisation_v7`) is v6 with every interval whose forecast tail reaches the spike price of
:data:`POLICY_V1` (highest quantile) or the deeply negative price of :data:`ROOM_POLICY_V3` (lowest quantile) kept
at 5 minutes, wherever it lies in the horizon (:func:`request_period_intervals`): a half-hour period averages a
spike's intervals with its neighbours', so the energy kept for it is valued at the half hour's mean rather than at
the spike; where the forecast sees no tail the evening is planned by the half hour as in v6.

Version 8 (:func:`run_optimisation_v8`) is v7 with four hours of 5-minute intervals before the half-hour periods
instead of two: the first form of v6 measured with four fine hours kept more of v4's revenue than two, and v7's
tails at 5 minutes kept more again; v8 has both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from algorithms.common.errors import InvalidRequestError
from algorithms.common.products import ENERGY
from algorithms.market import horizon_periods, optimise, price_scenarios, uncertainty_spread
from algorithms.market.forecast import PriceForecast, forecast_from_result, quantile_at
from vpp.v1 import common_pb2, worker_pb2

NAME = "lp-spike-reserve"
VERSION = "1"
ALGORITHM = common_pb2.AlgorithmRef(name=NAME, version=VERSION)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SpikeReservePolicy:
    """How large the spike reserve is.

    ``spike_price_per_mwh`` ($/MWh): an interval is *spiky* when the forecast's highest quantile reaches it.
    ``full_reserve_share`` (0..1]: the share of spiky horizon intervals at which the reserve is full.
    ``max_reserve_fraction`` (0..1): the full reserve as a fraction of the registered storage (MWh / MWh).
    """

    spike_price_per_mwh: float
    full_reserve_share: float
    max_reserve_fraction: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.spike_price_per_mwh):
            raise InvalidRequestError(f"spike_price_per_mwh must be finite, got {self.spike_price_per_mwh}")
        if not 0 < self.full_reserve_share <= 1:
            raise InvalidRequestError(f"full_reserve_share must be in (0, 1], got {self.full_reserve_share}")
        if not 0 <= self.max_reserve_fraction < 1:
            raise InvalidRequestError(f"max_reserve_fraction must be in [0, 1), got {self.max_reserve_fraction}")


@dataclass(frozen=True)
class SpikeRoomPolicy:
    """How large the room kept for prices far below zero is (``lp-spike-reserve`` v3).

    ``price_per_mwh`` ($/MWh): an interval is *deeply negative* when the forecast's lowest quantile is at or
    below it. ``full_room_share`` (0..1]: the share of such horizon intervals at which the room is full.
    ``max_room_fraction`` (0..1): the full room as a fraction of the registered storage (MWh / MWh).
    """

    price_per_mwh: float
    full_room_share: float
    max_room_fraction: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.price_per_mwh):
            raise InvalidRequestError(f"price_per_mwh must be finite, got {self.price_per_mwh}")
        if not 0 < self.full_room_share <= 1:
            raise InvalidRequestError(f"full_room_share must be in (0, 1], got {self.full_room_share}")
        if not 0 <= self.max_room_fraction < 1:
            raise InvalidRequestError(f"max_room_fraction must be in [0, 1), got {self.max_room_fraction}")


# v1: spiky = P95 at or above the first spike GEN band ($300/MWh); a full reserve of 30 % of the storage
# (58 MWh of the reference battery: 150 MW for about 23 minutes) once a tenth of the horizon is spiky.
POLICY_V1 = SpikeReservePolicy(spike_price_per_mwh=300.0, full_reserve_share=0.1, max_reserve_fraction=0.3)


# v3: deeply negative = P05 at or below the −$100/MWh LOAD band; a full room of 30 % of the storage (the mirror of
# POLICY_V1) once a tenth of the horizon is.
ROOM_POLICY_V3 = SpikeRoomPolicy(price_per_mwh=-100.0, full_room_share=0.1, max_room_fraction=0.3)


def spiky_intervals(energy_forecast: PriceForecast, spike_price_per_mwh: float) -> BoolArray:
    """True for every interval of the forecast whose highest quantile ($/MWh) is at least ``spike_price_per_mwh``."""
    if energy_forecast.horizon_intervals == 0:
        return np.zeros(0, dtype=np.bool_)
    highest = quantile_at(energy_forecast, float(energy_forecast.quantiles[-1]))
    spiky: BoolArray = highest >= spike_price_per_mwh
    return spiky


def spiky_share(energy_forecast: PriceForecast, spike_price_per_mwh: float) -> float:
    """The share (0..1) of the forecast's intervals whose highest quantile ($/MWh) is at least
    ``spike_price_per_mwh``; 0 for an empty forecast."""
    if energy_forecast.horizon_intervals == 0:
        return 0.0
    return float(np.mean(spiky_intervals(energy_forecast, spike_price_per_mwh)))


def spike_reserve_mwh(energy_forecast: PriceForecast, policy: SpikeReservePolicy, energy_mwh: float) -> float:
    """The stored energy (MWh) to keep for unforecast spikes: ``max_reserve_fraction × energy_mwh`` (the
    registered storage, MWh) scaled by the forecast's spiky share over ``full_reserve_share`` (capped at 1).
    0 when no interval's highest quantile reaches the spike price."""
    if not energy_mwh >= 0:
        raise InvalidRequestError(f"energy_mwh must be non-negative, got {energy_mwh}")
    share = spiky_share(energy_forecast, policy.spike_price_per_mwh)
    return float(policy.max_reserve_fraction * energy_mwh * min(1.0, share / policy.full_reserve_share))


def deeply_negative_intervals(energy_forecast: PriceForecast, price_per_mwh: float) -> BoolArray:
    """True for every interval of the forecast whose lowest quantile ($/MWh) is at most ``price_per_mwh``."""
    if energy_forecast.horizon_intervals == 0:
        return np.zeros(0, dtype=np.bool_)
    lowest = quantile_at(energy_forecast, float(energy_forecast.quantiles[0]))
    negative: BoolArray = lowest <= price_per_mwh
    return negative


def deeply_negative_share(energy_forecast: PriceForecast, price_per_mwh: float) -> float:
    """The share (0..1) of the forecast's intervals whose lowest quantile ($/MWh) is at most ``price_per_mwh``;
    0 for an empty forecast."""
    if energy_forecast.horizon_intervals == 0:
        return 0.0
    return float(np.mean(deeply_negative_intervals(energy_forecast, price_per_mwh)))


def spike_room_mwh(energy_forecast: PriceForecast, policy: SpikeRoomPolicy, energy_mwh: float) -> float:
    """The storage (MWh) to keep empty for deeply negative prices the plan cannot time: ``max_room_fraction ×
    energy_mwh`` (the registered storage, MWh) scaled by the forecast's deeply negative share over
    ``full_room_share`` (capped at 1). 0 when no interval's lowest quantile reaches ``price_per_mwh``."""
    if not energy_mwh >= 0:
        raise InvalidRequestError(f"energy_mwh must be non-negative, got {energy_mwh}")
    share = deeply_negative_share(energy_forecast, policy.price_per_mwh)
    return float(policy.max_room_fraction * energy_mwh * min(1.0, share / policy.full_room_share))


def fastest_discharge_soc_mwh(battery: common_pb2.BatterySpec, initial_soc_mwh: float, initial_net_mw: float,
                              horizon_intervals: int, interval_hours: float) -> FloatArray:
    """The least stored energy (MWh) the battery can hold at the end of each of ``horizon_intervals`` intervals
    (``interval_hours`` long) from ``initial_soc_mwh``: discharging as fast as its power and ramp rate allow from
    the net output ``initial_net_mw`` (MW, negative = charging) of the interval before, never below its own
    minimum."""
    if battery.energy_mwh <= 0:
        raise InvalidRequestError(f"battery energy_mwh must be positive, got {battery.energy_mwh}")
    own_min = battery.energy_mwh * battery.soc_min_fraction
    step_mw = battery.ramp_rate_mw_per_min * interval_hours * 60.0 if battery.ramp_rate_mw_per_min > 0 else np.inf
    net = np.minimum(battery.power_mw, max(-battery.power_mw, initial_net_mw)
                     + step_mw * np.arange(1, horizon_intervals + 1))
    eta_c = battery.charge_efficiency or 1.0
    eta_d = battery.discharge_efficiency or 1.0
    change = np.where(net >= 0, -net * interval_hours / eta_d, -net * interval_hours * eta_c)
    soc: FloatArray = np.maximum(own_min, initial_soc_mwh + np.cumsum(change))
    return soc


def room_ceiling_mwh(energy_forecast: PriceForecast, policy: SpikeRoomPolicy, battery: common_pb2.BatterySpec,
                     initial_soc_mwh: float, initial_net_mw: float, terminal_soc_mwh: float,
                     interval_hours: float) -> FloatArray | None:
    """The plan's SoC maximum (MWh at the end of each interval of the forecast's horizon), or None when the
    forecast's lower tail never reaches the policy's price (no room: the battery's own maximum throughout).

    At the end of every interval whose lowest quantile is at most ``policy.price_per_mwh`` ($/MWh), and of the
    interval before it, the maximum is the battery's own less the room (:func:`spike_room_mwh`); elsewhere the
    battery's own. Never below what the battery can reach by then (:func:`fastest_discharge_soc_mwh`), the
    terminal target (``terminal_soc_mwh``, MWh) or the battery's own minimum; never above its own maximum."""
    room = spike_room_mwh(energy_forecast, policy, battery.energy_mwh)
    if room <= 0:
        return None
    own_min = battery.energy_mwh * battery.soc_min_fraction
    own_max = battery.energy_mwh * battery.soc_max_fraction
    deep = quantile_at(energy_forecast, float(energy_forecast.quantiles[0])) <= policy.price_per_mwh
    before_deep = np.zeros_like(deep)
    before_deep[:-1] = deep[1:]
    ceiling = np.where(deep | before_deep, own_max - room, own_max)
    reachable = fastest_discharge_soc_mwh(battery, initial_soc_mwh, initial_net_mw, len(deep), interval_hours)
    bounded: FloatArray = np.minimum(own_max, np.maximum.reduce(
        [ceiling, reachable, np.full(len(deep), terminal_soc_mwh), np.full(len(deep), own_min)]))
    return bounded


def reserve_floor_fraction(reserve_mwh: float, battery: common_pb2.BatterySpec, initial_soc_mwh: float,
                           terminal_soc_mwh: float) -> float:
    """The plan's minimum SoC as a fraction of storage: the battery's own minimum raised to the reserve
    (MWh) above it, but never above the energy held now (``initial_soc_mwh``) nor the terminal target
    (``terminal_soc_mwh``, MWh), so the raised floor never makes a feasible plan infeasible."""
    if battery.energy_mwh <= 0:
        raise InvalidRequestError(f"battery energy_mwh must be positive, got {battery.energy_mwh}")
    own_min = battery.energy_mwh * battery.soc_min_fraction
    floor = min(own_min + reserve_mwh, initial_soc_mwh, terminal_soc_mwh)
    return max(battery.soc_min_fraction, floor / battery.energy_mwh)


@dataclass(frozen=True)
class BasePlan:
    """The optimiser a version plans with under the reserve floor: its AlgorithmRef (which the inner request
    names) and its worker function (OptimisationRequest in, OptimisationResult out; MW, MWh, $)."""

    algorithm: common_pb2.AlgorithmRef
    solve: Callable[[worker_pb2.OptimisationRequest], worker_pb2.OptimisationResult]


# The plan under the floor. v1 and v3: lp-energy-fcas v1; v2: lp-uncertainty-spread v1 (the energy haircut of
# κ × half the band).
BASE_PLAN_BY_VERSION: dict[str, BasePlan] = {
    "1": BasePlan(optimise.ALGORITHM, optimise.run_optimisation),
    "2": BasePlan(uncertainty_spread.ALGORITHM, uncertainty_spread.run_optimisation),
    "3": BasePlan(optimise.ALGORITHM, optimise.run_optimisation),
    "4": BasePlan(optimise.ALGORITHM, optimise.run_optimisation),
    "5": BasePlan(optimise.ALGORITHM, optimise.run_optimisation),
    "6": BasePlan(optimise.ALGORITHM, optimise.run_optimisation),
    "7": BasePlan(optimise.ALGORITHM, optimise.run_optimisation),
    "8": BasePlan(optimise.ALGORITHM, optimise.run_optimisation),
}
# Versions that plan on price scenarios rather than the one blended path: v4, v6, v7 and v8 on how high prices go, v5 on
# when.
SCENARIOS_BY_VERSION: dict[str, optimise.ScenarioPrices] = {
    "4": price_scenarios.quantile_scenarios,
    "5": price_scenarios.timing_scenarios,
    "6": price_scenarios.quantile_scenarios,
    "7": price_scenarios.quantile_scenarios,
    "8": price_scenarios.quantile_scenarios,
}


@dataclass(frozen=True)
class HorizonResolution:
    """How a version plans its horizon in periods (:mod:`algorithms.market.horizon_periods`): the first
    ``fine_intervals`` intervals one by one, the rest in periods of ``block_intervals`` intervals — except, when
    ``fine_at_tails``, every interval whose forecast tail reaches the spike price (highest quantile) or the deeply
    negative price (lowest quantile) of the version's policies, which stays its own period."""

    fine_intervals: int
    block_intervals: int
    fine_at_tails: bool = False


# Versions that plan the horizon in periods. v6: two hours of 5-minute intervals, then half hours. v7: the same, with
# every interval whose forecast tail reaches a spike or a deeply negative price kept at 5 minutes. v8: v7 with four
# hours of 5-minute intervals before the half hours.
HORIZON_RESOLUTION_BY_VERSION: dict[str, HorizonResolution] = {
    "6": HorizonResolution(fine_intervals=24, block_intervals=6),
    "7": HorizonResolution(fine_intervals=24, block_intervals=6, fine_at_tails=True),
    "8": HorizonResolution(fine_intervals=48, block_intervals=6, fine_at_tails=True),
}


def reserve_request(request: worker_pb2.OptimisationRequest, policy: SpikeReservePolicy,
                    base: common_pb2.AlgorithmRef) -> worker_pb2.OptimisationRequest:
    """A copy of ``request`` naming the ``base`` optimiser, its battery's minimum SoC (fraction of storage)
    raised to the spike reserve (:func:`spike_reserve_mwh`, :func:`reserve_floor_fraction`) when the one OK
    ENERGY forecast's upper tail reaches the spike price ($/MWh); otherwise the request unchanged but for
    the algorithm. The request is not modified. InvalidRequestError when it has no battery."""
    if not request.HasField("battery"):
        raise InvalidRequestError("battery is not set")
    energy = [f for f in request.forecasts if f.product == ENERGY]
    inner = worker_pb2.OptimisationRequest()
    inner.CopyFrom(request)
    inner.algorithm.CopyFrom(base)
    if len(energy) == 1 and energy[0].status == worker_pb2.RESULT_STATUS_OK and energy[0].horizon_intervals > 0:
        reserve = spike_reserve_mwh(forecast_from_result(energy[0]), policy, request.battery.energy_mwh)
        if reserve > 0:
            inner.battery.soc_min_fraction = reserve_floor_fraction(
                reserve, request.battery, request.initial_state_of_charge_mwh,
                request.terminal_state_of_charge_mwh)
    return inner


def request_room_ceiling_mwh(request: worker_pb2.OptimisationRequest,
                             room_policy: SpikeRoomPolicy) -> FloatArray | None:
    """The SoC maximum (MWh per interval of the horizon) of :func:`room_ceiling_mwh` for ``request`` (its battery,
    SoC, net output, terminal target and one OK ENERGY forecast covering its horizon), or None: no room, or no
    such forecast (the LP's adapter then refuses what is malformed). InvalidRequestError without a battery."""
    if not request.HasField("battery"):
        raise InvalidRequestError("battery is not set")
    forecast = _covering_energy_forecast(request)
    if forecast is None:
        return None
    return room_ceiling_mwh(forecast, room_policy, request.battery,
                            request.initial_state_of_charge_mwh, request.initial_net_mw,
                            request.terminal_state_of_charge_mwh, optimise.NEM_INTERVAL_HOURS)


def _covering_energy_forecast(request: worker_pb2.OptimisationRequest) -> PriceForecast | None:
    """The request's one OK ENERGY forecast ($/MWh) when it covers the request's (non-empty) horizon; otherwise
    None, and the LP's adapter refuses whatever is malformed."""
    energy = [f for f in request.forecasts if f.product == ENERGY]
    if not (len(energy) == 1 and energy[0].status == worker_pb2.RESULT_STATUS_OK
            and energy[0].horizon_intervals == request.horizon_intervals > 0):
        return None
    return forecast_from_result(energy[0])


def request_period_intervals(request: worker_pb2.OptimisationRequest, resolution: HorizonResolution,
                             policy: SpikeReservePolicy, room_policy: SpikeRoomPolicy | None) -> IntArray | None:
    """The dispatch intervals each LP period of ``request``'s horizon covers under ``resolution`` (see
    :class:`HorizonResolution`; the tails read from its one OK ENERGY forecast covering the horizon, with
    ``policy``'s spike price and, when given, ``room_policy``'s deeply negative price, $/MWh), or None for an empty
    horizon (the LP's adapter refuses it). Without such a forecast only the first intervals are fine (the adapter
    then refuses what is malformed)."""
    horizon = request.horizon_intervals
    if horizon <= 0:
        return None
    fine = np.arange(horizon) < resolution.fine_intervals
    forecast = _covering_energy_forecast(request) if resolution.fine_at_tails else None
    if forecast is not None:
        fine |= spiky_intervals(forecast, policy.spike_price_per_mwh)
        if room_policy is not None:
            fine |= deeply_negative_intervals(forecast, room_policy.price_per_mwh)
    return horizon_periods.periods_around(fine, resolution.block_intervals)


def run_optimisation(request: worker_pb2.OptimisationRequest,
                     policy: SpikeReservePolicy = POLICY_V1) -> worker_pb2.OptimisationResult:
    """Adapter of the current version (v1): an OptimisationRequest in, ``lp-energy-fcas`` v1's plan with a
    spike reserve out (MW, MWh, $; see the module docstring). Raises InvalidRequestError for malformed
    requests, as ``lp-energy-fcas`` does."""
    return _run_version(request, VERSION, policy)


def run_optimisation_v2(request: worker_pb2.OptimisationRequest,
                        policy: SpikeReservePolicy = POLICY_V1) -> worker_pb2.OptimisationResult:
    """Adapter of v2: as :func:`run_optimisation` with ``lp-uncertainty-spread`` v1's plan under the floor
    (energy valued by direction off the planning price by κ × half the band, $/MWh). Raises
    InvalidRequestError for malformed requests (κ outside [0, 1) included)."""
    return _run_version(request, "2", policy)


def run_optimisation_v3(request: worker_pb2.OptimisationRequest,
                        policy: SpikeReservePolicy = POLICY_V1,
                        room_policy: SpikeRoomPolicy = ROOM_POLICY_V3) -> worker_pb2.OptimisationResult:
    """Adapter of v3: as :func:`run_optimisation` (v1's reserve under ``lp-energy-fcas`` v1's plan) with the room
    for deeply negative prices (``room_policy``, MWh kept empty below the battery's maximum; see the module
    docstring). Raises InvalidRequestError for malformed requests."""
    return _run_version(request, "3", policy, room_policy)


def run_optimisation_v4(request: worker_pb2.OptimisationRequest,
                        policy: SpikeReservePolicy = POLICY_V1,
                        room_policy: SpikeRoomPolicy = ROOM_POLICY_V3) -> worker_pb2.OptimisationResult:
    """Adapter of v4: v3's floor and room (MWh) under a two-stage plan on the forecast's low, central and high
    price scenarios instead of one blended path (see the module docstring; MW, MWh, $). Raises
    InvalidRequestError for malformed requests."""
    return _run_version(request, "4", policy, room_policy)


def run_optimisation_v5(request: worker_pb2.OptimisationRequest,
                        policy: SpikeReservePolicy = POLICY_V1,
                        room_policy: SpikeRoomPolicy = ROOM_POLICY_V3) -> worker_pb2.OptimisationResult:
    """Adapter of v5: v3's floor and room (MWh) under a two-stage plan on the planning path and the same path an
    hour later and an hour earlier (:func:`algorithms.market.price_scenarios.timing_scenarios`; MW, MWh, $).
    Raises InvalidRequestError for malformed requests."""
    return _run_version(request, "5", policy, room_policy)


def run_optimisation_v6(request: worker_pb2.OptimisationRequest,
                        policy: SpikeReservePolicy = POLICY_V1,
                        room_policy: SpikeRoomPolicy = ROOM_POLICY_V3) -> worker_pb2.OptimisationResult:
    """Adapter of v6: v4 (v3's floor and room, MWh, under a two-stage plan on the low, central and high price
    scenarios) on a horizon of 5-minute intervals for two hours, then half-hour periods (see the module docstring;
    MW, MWh, $, one value per interval). Raises InvalidRequestError for malformed requests."""
    return _run_version(request, "6", policy, room_policy)


def run_optimisation_v7(request: worker_pb2.OptimisationRequest,
                        policy: SpikeReservePolicy = POLICY_V1,
                        room_policy: SpikeRoomPolicy = ROOM_POLICY_V3) -> worker_pb2.OptimisationResult:
    """Adapter of v7: v6 (v4 on two hours of 5-minute intervals, then half-hour periods) with every interval whose
    forecast tail reaches ``policy``'s spike price or ``room_policy``'s deeply negative price ($/MWh) kept at
    5 minutes (see the module docstring; MW, MWh, $, one value per interval). Raises InvalidRequestError for
    malformed requests."""
    return _run_version(request, "7", policy, room_policy)


def run_optimisation_v8(request: worker_pb2.OptimisationRequest,
                        policy: SpikeReservePolicy = POLICY_V1,
                        room_policy: SpikeRoomPolicy = ROOM_POLICY_V3) -> worker_pb2.OptimisationResult:
    """Adapter of v8: v7 (forecast tails kept at 5 minutes, half-hour periods elsewhere) with four hours of 5-minute
    intervals before the periods instead of two (see the module docstring; MW, MWh, $, one value per interval).
    Raises InvalidRequestError for malformed requests."""
    return _run_version(request, "8", policy, room_policy)


def _run_version(request: worker_pb2.OptimisationRequest, version: str,
                 policy: SpikeReservePolicy,
                 room_policy: SpikeRoomPolicy | None = None) -> worker_pb2.OptimisationResult:
    if request.algorithm.name and (request.algorithm.name, request.algorithm.version) != (NAME, version):
        raise InvalidRequestError(
            f"algorithm {request.algorithm.name} v{request.algorithm.version} is not {NAME} v{version}")
    base = BASE_PLAN_BY_VERSION[version]
    inner = reserve_request(request, policy, base.algorithm)
    ceiling = None if room_policy is None else request_room_ceiling_mwh(inner, room_policy)
    # Anything malformed (no ENERGY forecast, two of them, wrong lengths) is refused by the base's adapter.
    scenarios = SCENARIOS_BY_VERSION.get(version)
    resolution = HORIZON_RESOLUTION_BY_VERSION.get(version)
    counts = None if resolution is None else request_period_intervals(inner, resolution, policy, room_policy)
    result = (base.solve(inner) if ceiling is None and scenarios is None and counts is None
              else optimise.solve_request(inner, soc_max_mwh_by_interval=ceiling, scenarios=scenarios,
                                          period_intervals=counts))
    result.algorithm.CopyFrom(request.algorithm if request.algorithm.name
                              else common_pb2.AlgorithmRef(name=NAME, version=version))
    return result
