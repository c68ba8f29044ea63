"""Energy + FCAS co-optimisation of one battery over a price path: a linear programme (HiGHS), made a
mixed-integer one where the LP would charge and discharge at once.

The battery is a price taker. Per dispatch interval ``t`` (``h`` hours long) the LP chooses

* ``gen_t``, ``load_t`` in [0, P] (MW): discharge and charge, net output ``p_t = gen_t - load_t``;
* ``soc_t`` in [SoC_min, SoC_max] (MWh): stored energy at the END of the interval,
  ``soc_t = soc_{t-1} + eta_c * load_t * h - gen_t * h / eta_d`` (``soc_{-1}`` = the initial energy),
  and ``soc_{T-1} >= terminal``;
* ``e_{s,t}`` in [0, cap_s] (MW): enablement of every FCAS product ``s`` present in the prices.

Joint capacity (shared/NEM.md): for each contingency raise service ``s``
``p_t + e_{s,t} + e_{RAISEREG,t} <= P``, for each contingency lower service
``-p_t + e_{s,t} + e_{LOWERREG,t} <= P``; with regulation but no contingency service in a direction,
regulation alone obeys the same rule. Products are told apart by :mod:`algorithms.common.products`
(raise / lower, contingency / regulation); the product list always comes from the prices given.

Ramp: ``|p_t - p_{t-1}| <= ramp_rate * interval minutes`` (``p_{-1}`` = ``initial_net_mw`` when given).
The rows are only built when the ramp can bind (``ramp * minutes < 2 P``).

Optional energy reserve behind raise services: ``soc_{t-1} - SoC_min >= sum_s e_{s,t} * hours_s / eta_d``.

Objective ($, maximised): ``sum_t h * RRP_t * (mlf_gen * gen_t - mlf_load * load_t)
+ sum_{s,t} h * price_{s,t} * e_{s,t} - degradation * h * (gen_t + load_t)
+ terminal_value * soc_{T-1}``; the reported objective leaves the terminal value out.

Charging and discharging in the same interval. As a pure LP nothing forbids it, and it pays when
energy must be destroyed (the battery is full while the price is negative): the LP earns the negative
price on the round-trip losses, which a real unit cannot (the market dispatches one net target). The
physical plan excludes it exactly, with binaries only where they matter: solve the LP relaxation; if it
charges and discharges at once in intervals of the scope (the whole horizon for perfect foresight, the
first :data:`ROLLING_PHYSICAL_INTERVALS` for a rolling plan), add a binary ``u_t`` for those intervals
(``gen_t <= P u_t``, ``load_t <= P (1 - u_t)``, :mod:`algorithms.market.lp_matrix`) — and for every
interval of the scope with a negative energy price, where burning energy pays — and solve that MILP
with HiGHS (branch and bound to ``MIP_REL_GAP``, 0.01 %, for a rolling plan and to
``PERFECT_FORESIGHT_MIP_REL_GAP``, 0.1 %, for the benchmark; under the time limit); repeat with the intervals its
plan still does it in. Each MILP is a relaxation of the MILP with a binary on every interval of the
scope, so the first plan that does it nowhere in the scope is optimal for that MILP too; after
:data:`MAX_EXCLUSIVE_ROUNDS` rounds every interval of the scope gets a binary. With at most
:data:`BRANCH_INTERVALS` such intervals (a rolling plan's first interval) the MILP is solved by branching
on LPs instead: every direction of those intervals, the best plan kept. The row duals of a
physical plan are those of the LP with the MILP's directions fixed. The plan reports the LP
relaxation's value, the proven bound and the gap beside its own value; a MILP stopped by the time limit
returns its best plan as TIME_LIMIT with the gap.

Solver path. :mod:`algorithms.market.lp_matrix` is the ONE formulation: it assembles the problem
directly as a sparse CSC matrix with vectorised NumPy (no per-variable Python object; ramp rows as ranged
rows). With highspy installed (``backend="auto"``, the default) it goes to ``highspy.Highs`` in one
call: dual simplex without presolve for rolling horizons, interior point + crossover from
``IPM_FROM_INTERVALS`` intervals (benchmark horizons), branch and bound for a MILP, all under the time
limit; HiGHS's model status becomes the plan status (OPTIMAL, INFEASIBLE with a reason, TIME_LIMIT,
ERROR). ``backend="pulp"`` (and ``"auto"`` without highspy) loads the same matrix generically into PuLP
(:mod:`algorithms.market.lp_pulp`: rows, bounds and integer columns, no model knowledge) solved by HiGHS
through PuLP when available, else CBC. No warm start: the same inputs give the same plan, bit for bit,
whoever solves them (the live cycle's worker, the backtest, the archive replay). A model kept from one
rolling decision to the next and warm-started from the previous basis solves the 288-interval LP in a
third of the CPU time, but the LP has many optimal vertices (equal forecast prices, FCAS enablement that
several products can take, SoC at its bounds) and a warm start lands on another one: on SA1, 15 January
2021, 57 of 288 plans and 287 of 288 sets of row duals (which price the bid's headroom bands) differ from
the cold solve's (``python -m bench.lp_warm_start``). The direction LPs of a rolling plan's first interval
(see above) are independent cold solves and run concurrently, one thread each
(:func:`_best_over_directions`), which changes no plan.
Row duals: ``energy_value_per_mwh`` is the dual of each SoC balance row, i.e. the value ($/MWh) of one
more MWh stored at the end of that interval.

Timing (288 intervals, 8 FCAS products, real SA1 prices, ``python -m bench.dispatch_lp``, 2 shared
cores): build + solve median 14-15 ms of CPU with the matrix build (the build itself under 1 ms;
wall time the same on an idle machine), against about 60 ms with the PuLP build. The month-long
(8,928 intervals) perfect foresight with FCAS takes 7.6 s instead of 12 s.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from algorithms.common.battery import BatteryParams, battery_from_spec
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import from_timestamp
from algorithms.common.products import ENERGY, FCAS_PRODUCTS, is_fcas, is_lower, is_raise, is_regulation
from algorithms.market import horizon_periods
from algorithms.market.forecast import PriceForecast, forecast_from_result, quantile_at
from algorithms.market.lp_matrix import (
    MIP_REL_GAP,
    DispatchSpec,
    JointCapacityGroup,
    LpSolution,
    MatrixLp,
    build_dispatch_lp,
    build_scenario_lp,
    highspy_available,
    solve_matrix_lp,
)
from algorithms.market.lp_matrix import SOLVER_NAME as LP_MATRIX_SOLVER
from algorithms.market.lp_pulp import solve_matrix_lp_pulp
from vpp.v1 import common_pb2, worker_pb2

NAME = "lp-energy-fcas"
VERSION = "1"
ALGORITHM = common_pb2.AlgorithmRef(name=NAME, version=VERSION)

NEM_INTERVAL_HOURS = 5 / 60
PERFECT_FORESIGHT_TIME_LIMIT_S = 600.0
# The perfect-foresight benchmark's MILP stops within this relative gap of its proven bound (0.1 %), not the rolling
# plan's MIP_REL_GAP (0.01 %): over days of negative prices, proving the last hundredths of a per cent costs HiGHS
# minutes of branch and bound (SA1 29-30 September 2024, energy only: within 0.08 % of the bound in 1 s, still
# 0.04 % away at 90 s, stopped by the 600 s time limit), and a plan stopped by a time limit depends on the machine.
# The plan found is physical and its proven bound is reported beside it; a capture figure against it is at most
# 0.1 % (relative) above the capture against the exact optimum.
PERFECT_FORESIGHT_MIP_REL_GAP = 1e-3
# HiGHS's dual simplex stalls on some month-long, highly degenerate problems (NSW1 January 2021 energy
# only: six minutes instead of one second); from this many intervals the interior-point method with
# crossover is used, which solves every month of the data in seconds and still reports duals.
IPM_FROM_INTERVALS = 2016

PlanStatus = Literal["OPTIMAL", "INFEASIBLE", "TIME_LIMIT", "ERROR"]
Backend = Literal["auto", "highspy", "pulp"]
BACKENDS: tuple[Backend, ...] = ("auto", "highspy", "pulp")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# A plan "charges and discharges at once" in an interval where both gen and load exceed this (MW).
SIMULTANEOUS_TOLERANCE_MW = 1e-6
# Rounds of adding binaries where a MILP's plan still charges and discharges at once before every
# interval gets one (one exact MILP over the horizon).
MAX_EXCLUSIVE_ROUNDS = 4
# A rolling plan is acted on in its first interval (the bid's): that one must be physical.
ROLLING_PHYSICAL_INTERVALS = 1
# Up to this many intervals needing a direction are solved by branching on LPs (2^n of them), not a MILP.
BRANCH_INTERVALS = 2

_STATUS_TO_PROTO: dict[str, int] = {
    "OPTIMAL": worker_pb2.RESULT_STATUS_OPTIMAL,
    "INFEASIBLE": worker_pb2.RESULT_STATUS_INFEASIBLE,
    "TIME_LIMIT": worker_pb2.RESULT_STATUS_TIME_LIMIT,
    "ERROR": worker_pb2.RESULT_STATUS_ERROR,
}


@dataclass(frozen=True, eq=False)
class DispatchPlan:
    """An optimised dispatch: MW per interval, MWh at the END of each interval, $ of the objective.

    ``fcas`` maps every FCAS product of the prices (in their order) to its enablement (MW).
    ``energy_value_per_mwh`` is the marginal value of stored energy per interval ($/MWh), empty when
    the solver reports no duals. ``raise_capacity_value_per_mw`` / ``lower_capacity_value_per_mw``: the
    marginal value of one more MW on the raise / lower side of the joint-capacity rows per interval
    ($/MW/h) — what a MW of energy dispatched in that direction displaces in planned FCAS; empty when
    the solver reports no row duals. Arrays are empty unless ``status`` is ``"OPTIMAL"`` (or
    ``"TIME_LIMIT"`` for a MILP that found a plan).

    Physical plans (``solve_dispatch(physical=True)``): ``relaxation_objective_dollars`` is the LP
    relaxation's revenue ($, charging and discharging at once allowed), ``relaxation_simultaneous_intervals``
    the number of intervals in which it did so, ``exclusive_intervals`` the binaries of the final MILP (0
    when the relaxation was already physical), ``objective_bound_dollars`` the proven upper bound ($,
    revenue, without the terminal value of the plan's end state) and ``mip_gap`` the relative gap.
    """

    status: PlanStatus
    status_reason: str
    objective_dollars: float
    gen_mw: FloatArray
    load_mw: FloatArray
    state_of_charge_mwh: FloatArray
    fcas: dict[str, FloatArray]
    energy_value_per_mwh: FloatArray
    solver: str
    raise_capacity_value_per_mw: FloatArray = field(default_factory=lambda: np.zeros(0))
    lower_capacity_value_per_mw: FloatArray = field(default_factory=lambda: np.zeros(0))
    relaxation_objective_dollars: float = math.nan
    objective_bound_dollars: float = math.nan
    mip_gap: float = 0.0
    relaxation_simultaneous_intervals: int = 0
    exclusive_intervals: int = 0

    @property
    def net_mw(self) -> FloatArray:
        """Net output gen - load per interval (MW; negative = charging)."""
        return self.gen_mw - self.load_mw


@dataclass(frozen=True)
class _FcasProducts:
    """FCAS products of one problem, classified by name."""

    raise_contingency: tuple[str, ...]
    raise_regulation: tuple[str, ...]
    lower_contingency: tuple[str, ...]
    lower_regulation: tuple[str, ...]

    @property
    def raise_all(self) -> tuple[str, ...]:
        return self.raise_contingency + self.raise_regulation


def _classify(fcas_products: Sequence[str]) -> _FcasProducts:
    unknown = [p for p in fcas_products if not is_fcas(p)]
    if unknown:
        raise InvalidRequestError(
            f"products {unknown} are neither the energy product nor FCAS ({', '.join(FCAS_PRODUCTS)})"
        )
    raising = [p for p in fcas_products if is_raise(p)]
    lowering = [p for p in fcas_products if is_lower(p)]
    return _FcasProducts(
        raise_contingency=tuple(p for p in raising if not is_regulation(p)),
        raise_regulation=tuple(p for p in raising if is_regulation(p)),
        lower_contingency=tuple(p for p in lowering if not is_regulation(p)),
        lower_regulation=tuple(p for p in lowering if is_regulation(p)),
    )


def _validate_battery(battery: BatteryParams) -> None:
    if not (battery.power_mw > 0 and math.isfinite(battery.power_mw)):
        raise InvalidRequestError(f"battery power_mw must be positive, got {battery.power_mw}")
    if not (battery.energy_mwh > 0 and math.isfinite(battery.energy_mwh)):
        raise InvalidRequestError(f"battery energy_mwh must be positive, got {battery.energy_mwh}")
    for label, eta in (("charge", battery.charge_efficiency), ("discharge", battery.discharge_efficiency)):
        if not 0 < eta <= 1:
            raise InvalidRequestError(f"battery {label}_efficiency must be in (0, 1], got {eta}")
    if not 0 <= battery.soc_min_fraction <= battery.soc_max_fraction <= 1:
        raise InvalidRequestError(
            "battery SoC limits must satisfy 0 <= soc_min_fraction <= soc_max_fraction <= 1, got "
            f"{battery.soc_min_fraction} and {battery.soc_max_fraction}"
        )
    if not (battery.mlf_gen > 0 and battery.mlf_load > 0):
        raise InvalidRequestError(
            "battery loss factors must be positive, got "
            f"mlf_gen={battery.mlf_gen}, mlf_load={battery.mlf_load}"
        )
    if not battery.ramp_rate_mw_per_min > 0:
        raise InvalidRequestError(
            f"battery ramp_rate_mw_per_min must be positive, got {battery.ramp_rate_mw_per_min}"
        )


def _validate_prices(prices: Mapping[str, np.ndarray]) -> dict[str, FloatArray]:
    if ENERGY not in prices:
        raise InvalidRequestError(f"prices have no {ENERGY!r} series")
    checked: dict[str, FloatArray] = {}
    horizon = len(prices[ENERGY])
    if horizon == 0:
        raise InvalidRequestError("prices cover no interval (length 0)")
    for product, series in prices.items():
        array = np.asarray(series, dtype=np.float64)
        if array.ndim != 1 or len(array) != horizon:
            raise InvalidRequestError(
                f"price series {product!r} has shape {array.shape}; "
                f"expected ({horizon},) like {ENERGY!r}"
            )
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise InvalidRequestError(
                f"price series {product!r} is not finite at intervals {bad[:5].tolist()}"
            )
        checked[product] = array
    return checked


def _fcas_caps(
    fcas_products: Sequence[str], fcas_cap_mw: Mapping[str, float] | None, power_mw: float
) -> dict[str, float]:
    caps = dict.fromkeys(fcas_products, power_mw)
    for product, cap in (fcas_cap_mw or {}).items():
        if product not in caps:
            raise InvalidRequestError(f"fcas_cap_mw names {product!r}, which has no price series")
        if not (cap >= 0 and math.isfinite(cap)):
            raise InvalidRequestError(f"fcas_cap_mw[{product!r}] must be a finite value >= 0, got {cap}")
        caps[product] = float(cap)
    return caps


def _enablement_caps(
    fcas_products: Sequence[str], enablement_cap_mw: Mapping[str, np.ndarray] | None, horizon: int
) -> dict[str, FloatArray]:
    """Market-depth caps (MW per interval) checked against the FCAS products and the horizon."""
    caps: dict[str, FloatArray] = {}
    for product, series in (enablement_cap_mw or {}).items():
        if product not in fcas_products:
            raise InvalidRequestError(
                f"enablement_cap_mw names {product!r}, which is not an FCAS product of the prices"
            )
        array = np.asarray(series, dtype=np.float64)
        if array.ndim != 1 or len(array) != horizon:
            raise InvalidRequestError(
                f"enablement_cap_mw[{product!r}] has shape {array.shape}; expected ({horizon},), one cap per interval"
            )
        bad = np.flatnonzero(np.isnan(array) | (array < 0))
        if bad.size:
            raise InvalidRequestError(
                f"enablement_cap_mw[{product!r}] must be >= 0 MW (inf = no cap); not at intervals {bad[:5].tolist()}"
            )
        caps[product] = array.copy()
    return caps


def _reserve_hours(
    products: _FcasProducts, raise_energy_reserve_hours: Mapping[str, float] | None
) -> dict[str, float]:
    reserve: dict[str, float] = {}
    for product, hours in (raise_energy_reserve_hours or {}).items():
        if product not in products.raise_all:
            raise InvalidRequestError(
                f"raise_energy_reserve_hours names {product!r}, which is not a raise product of the prices"
            )
        if not (hours >= 0 and math.isfinite(hours)):
            raise InvalidRequestError(f"raise_energy_reserve_hours[{product!r}] must be >= 0, got {hours}")
        if hours > 0:
            reserve[product] = float(hours)
    return reserve


def _joint_capacity_groups(classes: _FcasProducts) -> tuple[JointCapacityGroup, ...]:
    """Each contingency service with its direction's regulation; regulation alone when no contingency."""
    groups: list[JointCapacityGroup] = []
    directions = (
        ("raise", 1.0, classes.raise_contingency, classes.raise_regulation),
        ("lower", -1.0, classes.lower_contingency, classes.lower_regulation),
    )
    for label, sign, contingency, regulation in directions:
        if contingency:
            groups += [JointCapacityGroup(f"{label}_{s}", sign, (s, *regulation)) for s in contingency]
        elif regulation:
            groups.append(JointCapacityGroup(f"{label}_regulation", sign, regulation))
    return tuple(groups)


def _validate_scalars(
    initial_soc_mwh: float,
    terminal_soc_mwh: float,
    interval_hours: float,
    degradation_cost_per_mwh: float,
    terminal_value_per_mwh: float,
    initial_net_mw: float | None,
) -> None:
    for label, value in (("initial_soc_mwh", initial_soc_mwh), ("terminal_soc_mwh", terminal_soc_mwh)):
        if not math.isfinite(value):
            raise InvalidRequestError(f"{label} must be finite, got {value}")
    if not (interval_hours > 0 and math.isfinite(interval_hours)):
        raise InvalidRequestError(f"interval_hours must be positive, got {interval_hours}")
    if not (degradation_cost_per_mwh >= 0 and math.isfinite(degradation_cost_per_mwh)):
        raise InvalidRequestError(f"degradation_cost_per_mwh must be >= 0, got {degradation_cost_per_mwh}")
    if not (terminal_value_per_mwh >= 0 and math.isfinite(terminal_value_per_mwh)):
        raise InvalidRequestError(f"terminal_value_per_mwh must be >= 0, got {terminal_value_per_mwh}")
    if initial_net_mw is not None and not math.isfinite(initial_net_mw):
        raise InvalidRequestError(f"initial_net_mw must be finite, got {initial_net_mw}")


def _infeasibility_reason(spec: DispatchSpec) -> str:
    """A specific explanation of why the dispatch problem has no feasible plan (MWh, MW)."""
    battery = spec.battery
    initial_soc_mwh, terminal_soc_mwh, horizon = spec.initial_soc_mwh, spec.terminal_soc_mwh, spec.horizon
    soc_min, soc_max = battery.soc_min_mwh, battery.soc_max_mwh
    hours = spec.period_hours
    intervals = horizon if spec.period_intervals is None else int(spec.period_intervals.sum())
    max_charge_mwh = battery.charge_efficiency * battery.power_mw * float(hours[0])
    max_discharge_mwh = battery.power_mw * float(hours[0]) / battery.discharge_efficiency
    if terminal_soc_mwh > soc_max:
        return f"terminal SoC {terminal_soc_mwh:.3f} MWh is above the maximum SoC {soc_max:.3f} MWh"
    reachable = min(soc_max, initial_soc_mwh + battery.charge_efficiency * battery.power_mw * float(hours.sum()))
    if terminal_soc_mwh > reachable + 1e-9:
        return (
            f"terminal SoC {terminal_soc_mwh:.3f} MWh is unreachable: "
            f"starting from {initial_soc_mwh:.3f} MWh "
            f"at most {reachable:.3f} MWh can be stored after {intervals} intervals"
        )
    if initial_soc_mwh - max_discharge_mwh > soc_max:
        return (
            f"initial SoC {initial_soc_mwh:.3f} MWh is too far above the maximum {soc_max:.3f} MWh to "
            "come back within one interval"
        )
    if initial_soc_mwh + max_charge_mwh < soc_min:
        return (
            f"initial SoC {initial_soc_mwh:.3f} MWh is too far below the minimum {soc_min:.3f} MWh to "
            "come back within one interval"
        )
    initial_net_mw = spec.initial_net_mw
    if initial_net_mw is not None and abs(initial_net_mw) > battery.power_mw + spec.ramp_mw:
        return (
            f"initial net output {initial_net_mw:.3f} MW cannot ramp into [-{battery.power_mw}, "
            f"{battery.power_mw}] MW at {battery.ramp_rate_mw_per_min} MW/min"
        )
    return "the solver reports the dispatch problem infeasible (SoC, ramp and terminal limits conflict)"


def _time_limit_reason(solver_name: str, time_limit_s: float) -> str:
    return f"{solver_name} stopped at the {time_limit_s} s time limit before optimality"


def _empty_plan(status: PlanStatus, reason: str, solver: str) -> DispatchPlan:
    empty = np.zeros(0)
    return DispatchPlan(
        status=status,
        status_reason=reason,
        objective_dollars=0.0,
        gen_mw=empty,
        load_mw=empty,
        state_of_charge_mwh=empty,
        fcas={},
        energy_value_per_mwh=empty,
        solver=solver,
    )


def _optimal_plan(
    spec: DispatchSpec,
    gen: FloatArray,
    load: FloatArray,
    soc: FloatArray,
    enablement: Mapping[str, FloatArray],
    energy_value_per_mwh: FloatArray,
    solver: str,
) -> DispatchPlan:
    """The OPTIMAL plan of solver values (MW, MWh), clipped to the bounds, solver noise on the idle side of an
    interval set to 0; objective = revenue only ($)."""
    power = spec.battery.power_mw
    h = spec.period_hours
    gen_mw = np.clip(gen, 0.0, power)
    load_mw = np.clip(load, 0.0, power)
    # Solver noise: where one side is within SIMULTANEOUS_TOLERANCE_MW of 0 and the other is not, it is 0.
    both = (gen_mw > 0) & (load_mw > 0)
    gen_mw[both & (gen_mw <= SIMULTANEOUS_TOLERANCE_MW) & (load_mw > SIMULTANEOUS_TOLERANCE_MW)] = 0.0
    load_mw[both & (load_mw <= SIMULTANEOUS_TOLERANCE_MW) & (gen_mw > SIMULTANEOUS_TOLERANCE_MW)] = 0.0
    fcas = {product: np.clip(enablement[product], 0.0, spec.fcas_upper_mw(product)) for product in spec.fcas_price}
    objective = float(
        np.sum(spec.gen_revenue_per_mw * gen_mw) + np.sum(spec.load_revenue_per_mw * load_mw)
        + sum(float(np.sum(h * spec.fcas_price[p] * fcas[p])) for p in spec.fcas_price)
    )
    return DispatchPlan(
        status="OPTIMAL",
        status_reason="optimal",
        objective_dollars=objective,
        gen_mw=gen_mw,
        load_mw=load_mw,
        state_of_charge_mwh=np.array(soc, dtype=np.float64),
        fcas=fcas,
        energy_value_per_mwh=energy_value_per_mwh,
        solver=solver,
    )


def dispatch_spec(
    prices: Mapping[str, np.ndarray],
    battery: BatteryParams,
    initial_soc_mwh: float,
    terminal_soc_mwh: float,
    *,
    interval_hours: float = NEM_INTERVAL_HOURS,
    degradation_cost_per_mwh: float = 0.0,
    initial_net_mw: float | None = None,
    raise_energy_reserve_hours: Mapping[str, float] | None = None,
    fcas_cap_mw: Mapping[str, float] | None = None,
    terminal_value_per_mwh: float = 0.0,
    enablement_cap_mw: Mapping[str, np.ndarray] | None = None,
    charge_energy_price: np.ndarray | None = None,
    soc_max_mwh_by_interval: np.ndarray | None = None,
    period_intervals: Sequence[int] | np.ndarray | None = None,
) -> DispatchSpec:
    """The validated dispatch problem of :func:`solve_dispatch`'s arguments (same units), ready to build.

    With ``period_intervals`` (dispatch intervals per LP period, summing to the horizon) the per-interval inputs
    are checked per interval, then brought onto the periods (:mod:`algorithms.market.horizon_periods`): prices
    averaged over each period, enablement caps and the SoC ceiling (held at the period's end) at their smallest in
    it.
    Raises InvalidRequestError for malformed inputs, as :func:`solve_dispatch` does.
    """
    price_paths = _validate_prices(prices)
    _validate_battery(battery)
    _validate_scalars(initial_soc_mwh, terminal_soc_mwh, interval_hours, degradation_cost_per_mwh,
                      terminal_value_per_mwh, initial_net_mw)
    fcas_price = {product: series for product, series in price_paths.items() if product != ENERGY}
    classes = _classify(list(fcas_price))
    horizon = len(price_paths[ENERGY])
    caps = _enablement_caps(list(fcas_price), enablement_cap_mw, horizon)
    charge_price = None if charge_energy_price is None else _validate_prices(
        {ENERGY: price_paths[ENERGY], "charge_energy_price": charge_energy_price})["charge_energy_price"]
    ceiling = None if soc_max_mwh_by_interval is None else _soc_ceiling(soc_max_mwh_by_interval, battery, horizon)
    counts = None
    if period_intervals is not None:
        counts = horizon_periods.checked_period_intervals(period_intervals, horizon)
        fcas_price = {product: horizon_periods.mean_over_periods(series, counts)
                      for product, series in fcas_price.items()}
        price_paths = {ENERGY: horizon_periods.mean_over_periods(price_paths[ENERGY], counts)}
        caps = {product: horizon_periods.min_over_periods(cap, counts) for product, cap in caps.items()}
        charge_price = None if charge_price is None else horizon_periods.mean_over_periods(charge_price, counts)
        ceiling = None if ceiling is None else horizon_periods.min_over_periods(ceiling, counts)
    return DispatchSpec(
        energy_price=price_paths[ENERGY],
        fcas_price=fcas_price,
        battery=battery,
        initial_soc_mwh=float(initial_soc_mwh),
        terminal_soc_mwh=float(terminal_soc_mwh),
        interval_hours=float(interval_hours),
        degradation_cost_per_mwh=float(degradation_cost_per_mwh),
        initial_net_mw=None if initial_net_mw is None else float(initial_net_mw),
        terminal_value_per_mwh=float(terminal_value_per_mwh),
        fcas_cap_mw=_fcas_caps(list(fcas_price), fcas_cap_mw, battery.power_mw),
        reserve_hours=_reserve_hours(classes, raise_energy_reserve_hours),
        joint_groups=_joint_capacity_groups(classes),
        enablement_cap_mw=caps,
        charge_energy_price=charge_price,
        soc_max_mwh_by_interval=ceiling,
        period_intervals=counts,
    )


def _soc_ceiling(soc_max_mwh_by_interval: np.ndarray, battery: BatteryParams, horizon: int) -> FloatArray:
    """A per-interval SoC maximum (MWh) checked: one finite value per interval, between the battery's minimum
    and maximum SoC."""
    ceiling = np.asarray(soc_max_mwh_by_interval, dtype=np.float64)
    if ceiling.shape != (horizon,):
        raise InvalidRequestError(
            f"soc_max_mwh_by_interval has shape {ceiling.shape}; expected ({horizon},), one value per interval")
    bad = np.flatnonzero(~np.isfinite(ceiling) | (ceiling < battery.soc_min_mwh - 1e-9)
                         | (ceiling > battery.soc_max_mwh + 1e-9))
    if bad.size:
        raise InvalidRequestError(
            f"soc_max_mwh_by_interval must lie between the battery's minimum {battery.soc_min_mwh:.3f} MWh and "
            f"maximum {battery.soc_max_mwh:.3f} MWh; not at intervals {bad[:5].tolist()}")
    return ceiling.copy()


def solve_dispatch(
    prices: Mapping[str, np.ndarray],
    battery: BatteryParams,
    initial_soc_mwh: float,
    terminal_soc_mwh: float,
    *,
    interval_hours: float = NEM_INTERVAL_HOURS,
    degradation_cost_per_mwh: float = 0.0,
    initial_net_mw: float | None = None,
    time_limit_s: float = 10.0,
    raise_energy_reserve_hours: Mapping[str, float] | None = None,
    fcas_cap_mw: Mapping[str, float] | None = None,
    terminal_value_per_mwh: float = 0.0,
    backend: Backend = "auto",
    enablement_cap_mw: Mapping[str, np.ndarray] | None = None,
    physical_intervals: int | None = ROLLING_PHYSICAL_INTERVALS,
    charge_energy_price: np.ndarray | None = None,
    soc_max_mwh_by_interval: np.ndarray | None = None,
    scenarios: Sequence[PriceScenario] = (),
    period_intervals: Sequence[int] | np.ndarray | None = None,
    mip_rel_gap: float = MIP_REL_GAP,
) -> DispatchPlan:
    """The revenue-maximising dispatch of ``battery`` against known prices (see the module docstring).

    ``prices["ENERGY"]`` is the energy price path ($/MWh, one value per interval); every other
    key is an FCAS product ($/MW/h) of the same length. ``initial_soc_mwh`` is the stored energy at the
    start (MWh); the plan ends with at least ``terminal_soc_mwh``. ``degradation_cost_per_mwh`` is
    charged on throughput (gen + load, $/MWh). ``initial_net_mw`` (MW) is the net output in the interval
    before the first, for the ramp limit. ``raise_energy_reserve_hours`` (hours per raise product) makes
    raise enablement deliverable from stored energy; ``fcas_cap_mw`` (MW) caps enablements (default P).
    ``terminal_value_per_mwh`` ($/MWh) values the energy left at the end of the horizon, so a rolling
    plan does not empty the battery just because its horizon ends; the reported objective is revenue
    only (without that value). ``time_limit_s`` (s) bounds the solver. ``enablement_cap_mw`` (market
    depth) maps FCAS products to an upper bound on enablement per interval (MW, one value per interval,
    ``inf`` = no cap), applied as variable bounds on top of ``fcas_cap_mw``.

    ``physical_intervals``: in this many leading intervals (``None``: the whole horizon) the plan never
    charges and discharges at once, exactly (binaries where the LP relaxation does it, see the module
    docstring); 0 solves the LP relaxation alone. The default, :data:`ROLLING_PHYSICAL_INTERVALS`, makes
    the interval a rolling plan acts on physical. ``time_limit_s`` bounds each solver run of that
    sequence, and each MILP of it stops within ``mip_rel_gap`` (relative) of its proven bound.

    ``charge_energy_price`` ($/MWh, one value per interval), when given, values charging; discharge is then
    valued at ``prices["ENERGY"]`` alone (:mod:`algorithms.market.uncertainty_spread`). None (default): both
    at ``prices["ENERGY"]``.

    ``soc_max_mwh_by_interval`` (MWh, one value per interval: the SoC at the end of it), when given, caps the
    stored energy interval by interval below the battery's maximum (:mod:`algorithms.market.spike_reserve`
    v3); None (default): the battery's maximum throughout.

    ``scenarios`` (default none): further price scenarios beside ``prices``, each with its probability (the
    probability of ``prices`` is 1 minus their sum) and the same products and lengths. The plan is then a
    two-stage one (:func:`algorithms.market.lp_matrix.build_scenario_lp`): one first interval for every
    scenario, the rest planned per scenario, the expected objective maximised; the plan returned is that of
    ``prices`` (its ``objective_dollars`` that path's revenue), its energy and capacity values the expected
    ones. Not with ``charge_energy_price``.

    ``period_intervals`` (default none: every interval its own period): the dispatch intervals each LP period
    covers, in order, summing to the horizon (:func:`algorithms.market.horizon_periods.period_intervals`). The
    plan then holds one constant output per period — prices averaged over it, limits at their tightest in it —
    and is read back per interval (:mod:`algorithms.market.horizon_periods`): the same arrays, one value per
    interval, the SoC moving linearly within a period. ``physical_intervals`` still counts intervals (every
    period that starts within them is physical).

    ``backend`` picks the solver of the one formulation of :mod:`algorithms.market.lp_matrix`:
    ``"highspy"`` HiGHS through highspy, ``"pulp"`` the same matrix loaded into PuLP (HiGHS through PuLP,
    else CBC), ``"auto"`` (default) highspy when installed, else PuLP with CBC.

    Never raises for infeasible or timed-out problems: the plan carries the status and a reason (a MILP
    stopped by the time limit: TIME_LIMIT with its best plan and ``mip_gap``). Raises
    InvalidRequestError for malformed inputs (missing energy prices, unequal lengths, non-finite prices,
    unknown product names, impossible battery parameters, a non-positive time limit, an unknown backend
    or ``"highspy"`` without highspy installed).
    """
    spec = dispatch_spec(
        prices, battery, initial_soc_mwh, terminal_soc_mwh, interval_hours=interval_hours,
        degradation_cost_per_mwh=degradation_cost_per_mwh, initial_net_mw=initial_net_mw,
        raise_energy_reserve_hours=raise_energy_reserve_hours,
        fcas_cap_mw=fcas_cap_mw, terminal_value_per_mwh=terminal_value_per_mwh,
        enablement_cap_mw=enablement_cap_mw, charge_energy_price=charge_energy_price,
        soc_max_mwh_by_interval=soc_max_mwh_by_interval, period_intervals=period_intervals,
    )
    if not time_limit_s > 0:
        raise InvalidRequestError(f"time_limit_s must be positive, got {time_limit_s}")
    if not 0 <= mip_rel_gap < 1:
        raise InvalidRequestError(f"mip_rel_gap must be in [0, 1), got {mip_rel_gap}")
    use_matrix = _use_matrix(backend)
    if physical_intervals is not None and physical_intervals < 0:
        raise InvalidRequestError(f"physical_intervals must be >= 0 or None, got {physical_intervals}")
    scope = spec.horizon if physical_intervals is None else _periods_within(spec, physical_intervals)
    build = _scenario_builder(spec, scenarios) if scenarios else build_dispatch_lp
    if scope > 0:
        return _on_intervals(spec, _solve_physical(spec, time_limit_s, use_matrix, scope, build, mip_rel_gap))
    lp = build(spec)
    solution, solver = _run_backend(lp, time_limit_s, use_matrix)
    plan = _plan_of(spec, lp, solution, solver, time_limit_s)
    if plan.status != "OPTIMAL":
        return plan
    return _on_intervals(spec, replace(
        plan, relaxation_objective_dollars=plan.objective_dollars,
        relaxation_simultaneous_intervals=int(simultaneous_intervals(plan.gen_mw, plan.load_mw).size)))


def _periods_within(spec: DispatchSpec, intervals: int) -> int:
    """How many leading LP periods of ``spec`` start within its first ``intervals`` dispatch intervals."""
    if spec.period_intervals is None:
        return min(intervals, spec.horizon)
    return int(np.count_nonzero(horizon_periods.period_starts(spec.period_intervals) < intervals))


def _on_intervals(spec: DispatchSpec, plan: DispatchPlan) -> DispatchPlan:
    """``plan`` (one value per LP period of ``spec``) read back per dispatch interval: MW and values repeated over
    each period's intervals, the SoC moving linearly through it (:mod:`algorithms.market.horizon_periods`). A plan
    on intervals, or one without arrays (not solved), is returned as it is."""
    counts = spec.period_intervals
    if counts is None or not plan.gen_mw.size:
        return plan

    def repeated(values: FloatArray) -> FloatArray:
        return horizon_periods.repeat_over_periods(values, counts) if values.size else values

    return replace(
        plan, gen_mw=repeated(plan.gen_mw), load_mw=repeated(plan.load_mw),
        state_of_charge_mwh=horizon_periods.soc_over_intervals(spec.initial_soc_mwh, plan.state_of_charge_mwh,
                                                               counts),
        fcas={product: repeated(enablement) for product, enablement in plan.fcas.items()},
        energy_value_per_mwh=repeated(plan.energy_value_per_mwh),
        raise_capacity_value_per_mw=repeated(plan.raise_capacity_value_per_mw),
        lower_capacity_value_per_mw=repeated(plan.lower_capacity_value_per_mw))


@dataclass(frozen=True)
class PriceScenario:
    """One price scenario of a two-stage plan (:func:`solve_dispatch`): its probability and its price path per
    product ($/MWh for ENERGY, $/MW/h for FCAS, one value per interval)."""

    probability: float
    prices: Mapping[str, np.ndarray]


# Price scenarios of a request (algorithms/market/price_scenarios.py): the first scenario's price path per product
# ($/MWh, $/MW/h) and the further scenarios with their probabilities.
ScenarioPrices = Callable[[worker_pb2.OptimisationRequest], tuple[dict[str, FloatArray], list[PriceScenario]]]


def _scenario_builder(spec: DispatchSpec, scenarios: Sequence[PriceScenario]) -> Callable[[DispatchSpec], MatrixLp]:
    """The LP builder of a two-stage plan: ``spec`` (the first scenario, probability 1 minus the others') with
    ``scenarios``' prices in their own copies (:func:`~algorithms.market.lp_matrix.build_scenario_lp`). Raises
    InvalidRequestError for probabilities that are not positive or leave none to ``spec``, for prices that are
    not ``spec``'s products and length, and with a charge price."""
    if spec.charge_energy_price is not None:
        raise InvalidRequestError("price scenarios cannot be combined with charge_energy_price")
    probabilities = [float(scenario.probability) for scenario in scenarios]
    if not all(math.isfinite(p) and p > 0 for p in probabilities) or sum(probabilities) >= 1:
        raise InvalidRequestError(f"scenario probabilities must be positive and sum to less than 1, got "
                                  f"{probabilities}")
    products = (ENERGY, *spec.fcas_products)
    further: list[tuple[float, DispatchSpec]] = []
    for probability, scenario in zip(probabilities, scenarios, strict=True):
        if set(scenario.prices) != set(products):
            raise InvalidRequestError(f"a price scenario has products {sorted(scenario.prices)}; expected "
                                      f"{sorted(products)}")
        paths = _validate_prices(scenario.prices)
        counts = spec.period_intervals
        intervals = spec.horizon if counts is None else int(counts.sum())
        if len(paths[ENERGY]) != intervals:
            raise InvalidRequestError(f"a price scenario has {len(paths[ENERGY])} intervals; expected {intervals}")
        if counts is not None:
            paths = {product: horizon_periods.mean_over_periods(path, counts) for product, path in paths.items()}
        further.append((probability, replace(spec, energy_price=paths[ENERGY],
                                             fcas_price={product: paths[product] for product in spec.fcas_products})))
    first_probability = 1.0 - sum(probabilities)

    def build(first: DispatchSpec) -> MatrixLp:
        return build_scenario_lp([(first_probability, first), *further])

    return build


def simultaneous_intervals(gen_mw: FloatArray, load_mw: FloatArray,
                           tolerance_mw: float = SIMULTANEOUS_TOLERANCE_MW) -> IntArray:
    """Indices of the intervals in which a plan both discharges and charges (``gen_mw`` and ``load_mw``
    both above ``tolerance_mw``, MW): a plan the market cannot dispatch, since it sets one net target."""
    return np.flatnonzero((np.asarray(gen_mw) > tolerance_mw) & (np.asarray(load_mw) > tolerance_mw))


def _use_matrix(backend: str) -> bool:
    """True for the highspy backend, False for PuLP; raises InvalidRequestError for a bad ``backend``."""
    if backend not in BACKENDS:
        raise InvalidRequestError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "highspy" and not highspy_available():
        raise InvalidRequestError("backend 'highspy' needs the highspy package, which is not installed")
    return backend == "highspy" or (backend == "auto" and highspy_available())


def _run_backend(lp: MatrixLp, time_limit_s: float, use_matrix: bool,
                 mip_rel_gap: float = MIP_REL_GAP) -> tuple[LpSolution, str]:
    """Solve the one formulation ``lp`` with highspy or through PuLP: (solution, solver name); a MILP to
    ``mip_rel_gap`` (relative) of its proven bound."""
    interior_point = lp.layout.horizon >= IPM_FROM_INTERVALS
    if use_matrix:
        return (solve_matrix_lp(lp, time_limit_s=time_limit_s, interior_point=interior_point,
                                mip_rel_gap=mip_rel_gap), LP_MATRIX_SOLVER)
    return solve_matrix_lp_pulp(lp, time_limit_s=time_limit_s, interior_point=interior_point,
                                mip_rel_gap=mip_rel_gap)


def _plan_of(spec: DispatchSpec, lp: MatrixLp, solution: LpSolution, solver: str,
             time_limit_s: float) -> DispatchPlan:
    """The DispatchPlan of one solver run: statuses with reasons, or the plan (MW, MWh, $) read back."""
    if solution.status == "INFEASIBLE":
        return _empty_plan("INFEASIBLE", _infeasibility_reason(spec), solver)
    if solution.status == "TIME_LIMIT" and not solution.column_values.size:
        return _empty_plan("TIME_LIMIT", _time_limit_reason(solver, time_limit_s), solver)
    if solution.status not in ("OPTIMAL", "TIME_LIMIT"):
        return _empty_plan("ERROR", solution.reason, solver)
    values, layout = solution.column_values, lp.layout
    duals = lp.energy_values(solution.row_duals) if solution.row_duals.size else np.zeros(0)
    plan = _optimal_plan(
        spec, values[layout.gen], values[layout.load], values[layout.soc],
        {product: values[layout.fcas(product)] for product in layout.fcas_products},
        duals, solver,
    )
    terminal_value = spec.terminal_value_per_mwh * float(plan.state_of_charge_mwh[-1])
    # A scenario LP's bound is of its expected objective, not of the first scenario's plan: none is reported.
    bound = (solution.objective_bound - terminal_value
             if math.isfinite(solution.objective_bound) and not lp.scenario_blocks else math.nan)
    plan = replace(plan, objective_bound_dollars=bound, mip_gap=solution.mip_gap,
                   exclusive_intervals=len(layout.exclusive_intervals))
    if solution.status == "TIME_LIMIT":
        plan = replace(plan, status="TIME_LIMIT", status_reason=(
            f"{_time_limit_reason(solver, time_limit_s)}; best plan found, {100 * solution.mip_gap:.4f} % "
            "below the proven bound"))
    if not solution.row_duals.size:
        return plan
    raise_value, lower_value = lp.capacity_values(solution.row_duals, spec.period_hours)
    return replace(plan, raise_capacity_value_per_mw=raise_value, lower_capacity_value_per_mw=lower_value)


def _fixed_direction_duals(lp: MatrixLp, milp: MatrixLp, milp_values: FloatArray, spec: DispatchSpec,
                           time_limit_s: float, use_matrix: bool) -> LpSolution:
    """The LP ``lp`` with the MILP's charge / discharge direction fixed in its exclusive intervals (the
    other side's bound set to 0 MW): an LP whose optimum is the MILP's, solved for its row duals."""
    col_upper = lp.col_upper.copy()
    intervals = np.asarray(milp.layout.exclusive_intervals, dtype=np.int64)
    discharging = milp_values[milp.layout.direction] > 0.5
    col_upper[lp.layout.load.start + intervals[discharging]] = 0.0
    col_upper[lp.layout.gen.start + intervals[~discharging]] = 0.0
    solution, _ = _run_backend(replace(lp, col_upper=col_upper), time_limit_s, use_matrix)
    return solution


def _maximised(spec: DispatchSpec, plan: DispatchPlan) -> float:
    """What the solver maximised ($): the plan's revenue plus the terminal value of its end state."""
    return plan.objective_dollars + spec.terminal_value_per_mwh * float(plan.state_of_charge_mwh[-1])


def _score(spec: DispatchSpec, lp: MatrixLp, solution: LpSolution, plan: DispatchPlan) -> float:
    """What the solver maximised ($) for one OPTIMAL run: :func:`_maximised` of the plan, or for a scenario
    LP (whose plan is its first scenario's) the expected objective over its scenarios; -inf otherwise."""
    if plan.status != "OPTIMAL":
        return -math.inf
    return float(lp.cost @ solution.column_values) if lp.scenario_blocks else _maximised(spec, plan)


def _direction_bounds(lp: MatrixLp, intervals: tuple[int, ...]) -> list[FloatArray]:
    """The column upper bounds (MW) of every direction (charge-only or discharge-only) of ``intervals``, in
    :func:`itertools.product` order of (False = charge, True = discharge): the other side's bound set to 0 MW."""
    bounds: list[FloatArray] = []
    for directions in itertools.product((False, True), repeat=len(intervals)):
        col_upper = lp.col_upper.copy()
        for interval, discharging in zip(intervals, directions, strict=True):
            col_upper[(lp.layout.load if discharging else lp.layout.gen).start + interval] = 0.0
        bounds.append(col_upper)
    return bounds


def _solve_all(lps: Sequence[MatrixLp], time_limit_s: float, use_matrix: bool) -> list[tuple[LpSolution, str]]:
    """Solve independent LPs ``lps``, in their order: with highspy concurrently, one thread each (HiGHS
    releases the GIL while it solves, every solver object is separate and single-threaded, so each solution
    is bit for bit the one a solve on its own gives); through PuLP one after the other."""
    if not use_matrix or len(lps) < 2:
        return [_run_backend(lp, time_limit_s, use_matrix) for lp in lps]
    answers: list[tuple[LpSolution, str] | None] = [None] * len(lps)
    failures: list[BaseException] = []

    def solve(index: int) -> None:
        try:
            answers[index] = _run_backend(lps[index], time_limit_s, use_matrix)
        except BaseException as error:  # re-raised in the calling thread below
            failures.append(error)

    threads = [threading.Thread(target=solve, args=(index,), name=f"dispatch-direction-{index}")
               for index in range(1, len(lps))]
    for thread in threads:
        thread.start()
    solve(0)
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [answer for answer in answers if answer is not None]


def _best_over_directions(spec: DispatchSpec, lp: MatrixLp, intervals: tuple[int, ...], time_limit_s: float,
                          use_matrix: bool) -> DispatchPlan:
    """The best plan over every direction (charge-only or discharge-only) of a few ``intervals``: one LP
    per combination, the other side's bound set to 0 MW — the MILP with binaries on those intervals, solved
    by branching on LPs (cheaper than branch and bound for one or two binaries); with the LP's duals.
    The LPs are independent cold solves, run concurrently (:func:`_solve_all`); the best is picked in
    combination order, so the plan is the one solving them one after the other gives."""
    lps = [replace(lp, col_upper=col_upper) for col_upper in _direction_bounds(lp, intervals)]
    best: DispatchPlan | None = None
    last: DispatchPlan | None = None
    best_score = -math.inf
    for solution, solver in _solve_all(lps, time_limit_s, use_matrix):
        last = _plan_of(spec, lp, solution, solver, time_limit_s)
        score = _score(spec, lp, solution, last)  # -inf unless OPTIMAL
        if score > best_score:
            best, best_score = last, score
    if best is None:
        assert last is not None
        return last
    return replace(best, exclusive_intervals=len(intervals), objective_bound_dollars=best.objective_dollars)


def _solve_physical(spec: DispatchSpec, time_limit_s: float, use_matrix: bool, scope: int,
                    build: Callable[[DispatchSpec], MatrixLp] = build_dispatch_lp,
                    mip_rel_gap: float = MIP_REL_GAP) -> DispatchPlan:
    """The best plan that never charges and discharges at once in its first ``scope`` intervals, exactly
    (see the module docstring): the LP relaxation first; binaries only where a relaxation charged and
    discharged at once within the scope, until a MILP's plan does so nowhere there — that plan solves the
    MILP with binaries on the whole scope, whose relaxations these MILPs are. ``build`` makes the LP of a
    spec (a scenario LP's: :func:`_scenario_builder`); each MILP stops within ``mip_rel_gap`` of its bound."""
    lp = build(spec)
    solution, solver = _run_backend(lp, time_limit_s, use_matrix)
    relaxed = _plan_of(spec, lp, solution, solver, time_limit_s)
    if relaxed.status != "OPTIMAL":
        return relaxed
    offending = simultaneous_intervals(relaxed.gen_mw[:scope], relaxed.load_mw[:scope])

    def with_relaxation(plan: DispatchPlan) -> DispatchPlan:
        return replace(plan, relaxation_objective_dollars=relaxed.objective_dollars,
                       relaxation_simultaneous_intervals=int(relaxed_offending))

    relaxed_offending = offending.size
    if not offending.size:
        return with_relaxation(relaxed)
    # Burning energy through the losses pays only where the energy price is negative: those intervals of
    # the scope get a binary from the first MILP on (fewer rounds; exactness does not depend on it).
    exclusive: set[int] = set(np.flatnonzero(spec.energy_price[:scope] < 0).tolist())
    for round_number in range(MAX_EXCLUSIVE_ROUNDS + 1):
        if round_number < MAX_EXCLUSIVE_ROUNDS:
            exclusive.update(offending.tolist())
        else:
            exclusive = set(range(scope))
        intervals = tuple(sorted(exclusive))
        if len(intervals) <= BRANCH_INTERVALS:
            plan = with_relaxation(_best_over_directions(spec, lp, intervals, time_limit_s, use_matrix))
            milp_solution = None
        else:
            milp_spec = replace(spec, exclusive_intervals=intervals)
            milp = build(milp_spec)
            milp_solution, solver = _run_backend(milp, time_limit_s, use_matrix, mip_rel_gap)
            plan = with_relaxation(_plan_of(milp_spec, milp, milp_solution, solver, time_limit_s))
        if not plan.gen_mw.size:
            return plan
        offending = simultaneous_intervals(plan.gen_mw[:scope], plan.load_mw[:scope])
        if not offending.size:
            break
        if plan.status == "TIME_LIMIT":
            return with_relaxation(_empty_plan("TIME_LIMIT", f"{_time_limit_reason(solver, time_limit_s)} with no "
                                               "plan free of simultaneous charge and discharge", solver))
    if milp_solution is None:  # branched on LPs: their duals are the plan's already
        return plan
    fixed = _fixed_direction_duals(lp, milp, milp_solution.column_values, spec, time_limit_s, use_matrix)
    if fixed.status != "OPTIMAL" or not fixed.row_duals.size:
        return plan
    raise_value, lower_value = lp.capacity_values(fixed.row_duals, spec.period_hours)
    return replace(plan, energy_value_per_mwh=lp.energy_values(fixed.row_duals),
                   raise_capacity_value_per_mw=raise_value, lower_capacity_value_per_mw=lower_value)


def perfect_foresight(
    prices: Mapping[str, np.ndarray],
    battery: BatteryParams,
    *,
    include_fcas: bool,
    interval_hours: float = NEM_INTERVAL_HOURS,
    initial_soc_fraction: float = 0.5,
    enablement_cap_mw: Mapping[str, np.ndarray] | None = None,
    physical: bool = True,
    time_limit_s: float = PERFECT_FORESIGHT_TIME_LIMIT_S,
    mip_rel_gap: float = PERFECT_FORESIGHT_MIP_REL_GAP,
) -> DispatchPlan:
    """The perfect-foresight benchmark of shared/NEM.md over the whole price path ($, MW, MWh).

    Starts at ``initial_soc_fraction`` of the registered storage and ends with at least that energy;
    no energy reserve, no degradation cost, the same joint-capacity rule. ``include_fcas`` False uses
    only ``prices["ENERGY"]`` ($/MWh); True co-optimises every FCAS product in ``prices``.
    ``enablement_cap_mw`` (market depth): per FCAS product, the most MW it may be enabled for in each
    interval of the path (``inf`` = no cap); caps of products not optimised are ignored.
    ``physical`` (default): the battery never charges and discharges in the same interval (exact, a
    MILP where needed; the plan carries the LP relaxation's value beside it); False: the LP relaxation.
    ``time_limit_s`` (s) bounds each solver run; a MILP stopped by it returns its best plan as
    TIME_LIMIT with its gap. ``mip_rel_gap``: each MILP stops within this relative gap of its proven bound
    (default :data:`PERFECT_FORESIGHT_MIP_REL_GAP`, 0.1 %; the plan carries the bound).
    """
    if not 0 <= initial_soc_fraction <= 1:
        raise InvalidRequestError(f"initial_soc_fraction must be in [0, 1], got {initial_soc_fraction}")
    if ENERGY not in prices:
        raise InvalidRequestError(f"prices have no {ENERGY!r} series")
    selected = dict(prices) if include_fcas else {ENERGY: prices[ENERGY]}
    start_mwh = battery.energy_mwh * initial_soc_fraction
    caps = {product: cap for product, cap in (enablement_cap_mw or {}).items() if product in selected}
    return solve_dispatch(
        selected,
        battery,
        start_mwh,
        start_mwh,
        interval_hours=interval_hours,
        time_limit_s=time_limit_s,
        enablement_cap_mw=caps,
        physical_intervals=None if physical else 0,
        mip_rel_gap=mip_rel_gap,
    )


def planning_price(forecast: PriceForecast, level: float, tail_weight: float) -> FloatArray:
    """The price path ($/MWh or $/MW/h) the optimiser plans on: ``tail_weight`` × the lowest quantile +
    (1 − 2·``tail_weight``) × quantile ``level`` + ``tail_weight`` × the highest quantile.

    With ``tail_weight`` 0 it is the ``level`` quantile alone. Prices are skewed (rare spikes, negative
    midday prices), so their mean is not their median: the Pearson–Tukey weights (0.185 / 0.63 / 0.185
    over P05 / P50 / P95) or Swanson's (0.3 / 0.4 / 0.3 over P10 / P50 / P90) estimate the mean, which a
    risk-neutral plan should maximise against.
    """
    check_tail_weight(tail_weight)
    if tail_weight == 0:
        return quantile_at(forecast, level)
    low, central, high = planning_points(forecast, level)
    blended: FloatArray = tail_weight * low + (1 - 2 * tail_weight) * central + tail_weight * high
    return blended


def check_tail_weight(tail_weight: float) -> None:
    """InvalidRequestError unless ``tail_weight`` (the probability given to each tail quantile) is in [0, 0.5)."""
    if not 0 <= tail_weight < 0.5:
        raise InvalidRequestError(f"price_tail_weight must be in [0, 0.5), got {tail_weight}")


def planning_points(forecast: PriceForecast, level: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The three price paths :func:`planning_price` weighs ($/MWh or $/MW/h per interval): the lowest quantile,
    quantile ``level`` and the highest quantile of ``forecast``."""
    levels = forecast.quantiles
    return (quantile_at(forecast, float(levels[0])), quantile_at(forecast, level),
            quantile_at(forecast, float(levels[-1])))


def planning_prices(request: worker_pb2.OptimisationRequest) -> dict[str, FloatArray]:
    """Price path per product the optimiser plans on (:func:`planning_price` at ``request.price_quantile``
    and ``request.price_tail_weight``; $/MWh, $/MW/h), validated against the request."""
    return {product: planning_price(forecast, request.price_quantile, request.price_tail_weight)
            for product, forecast in request_forecasts(request).items()}


def request_forecasts(request: worker_pb2.OptimisationRequest) -> dict[str, PriceForecast]:
    """The request's forecast per product, checked against it: one OK forecast per product, each starting at
    the request's first interval and covering its horizon, an ENERGY one among them, and ``price_quantile`` in
    (0, 1). Raises InvalidRequestError naming what is wrong."""
    level = request.price_quantile
    if not 0 < level < 1:
        raise InvalidRequestError(f"price_quantile must be in (0, 1), got {level}")
    prices: dict[str, PriceForecast] = {}
    for result in request.forecasts:
        product = result.product
        if not product:
            raise InvalidRequestError("a forecast has no product name")
        if product in prices:
            raise InvalidRequestError(f"two forecasts for product {product!r}")
        if result.status != worker_pb2.RESULT_STATUS_OK:
            raise InvalidRequestError(
                f"forecast for {product!r} has status {worker_pb2.ResultStatus.Name(result.status)}, not OK"
            )
        if result.first_interval != request.first_interval:
            raise InvalidRequestError(
                f"forecast for {product!r} starts at {from_timestamp(result.first_interval)}, the request at "
                f"{from_timestamp(request.first_interval)}"
            )
        if result.horizon_intervals != request.horizon_intervals:
            raise InvalidRequestError(
                f"forecast for {product!r} covers {result.horizon_intervals} intervals, the request "
                f"{request.horizon_intervals}"
            )
        prices[product] = forecast_from_result(result)
    if ENERGY not in prices:
        raise InvalidRequestError(f"the request has no {ENERGY} forecast")
    return prices


def request_enablement_caps(request: worker_pb2.OptimisationRequest) -> dict[str, FloatArray]:
    """FCAS product → the market-depth caps (MW per interval of the horizon; inf = no cap) the request
    carries (empty: a price-taker's plan). InvalidRequestError for a product given twice; lengths and
    signs are checked by :func:`solve_dispatch`."""
    caps: dict[str, FloatArray] = {}
    for cap in request.enablement_caps:
        if cap.product in caps:
            raise InvalidRequestError(f"two enablement caps for product {cap.product!r}")
        caps[cap.product] = np.asarray(cap.cap_mw, dtype=np.float64)
    return caps


def run_optimisation(request: worker_pb2.OptimisationRequest) -> worker_pb2.OptimisationResult:
    """Adapter: an OptimisationRequest in, its OptimisationResult out (MW, MWh, $).

    Uses quantile ``price_quantile`` of every forecast (interpolated between the levels present).
    Raises InvalidRequestError for malformed requests; an infeasible or timed-out problem is a result
    with that status, not an exception.
    """
    if request.algorithm.name and (request.algorithm.name, request.algorithm.version) != (NAME, VERSION):
        raise InvalidRequestError(
            f"algorithm {request.algorithm.name} v{request.algorithm.version} is not {NAME} v{VERSION}"
        )
    return solve_request(request)


def solve_request(request: worker_pb2.OptimisationRequest,
                  energy_haircut_per_mwh: FloatArray | None = None,
                  soc_max_mwh_by_interval: FloatArray | None = None,
                  scenarios: ScenarioPrices | None = None,
                  period_intervals: IntArray | None = None) -> worker_pb2.OptimisationResult:
    """The plan of a request whatever its algorithm name (MW, MWh, $): :func:`run_optimisation` without the
    name check. ``energy_haircut_per_mwh`` ($/MWh, one value per interval, >= 0), when given, values
    discharge at the planning price minus it and charging at the planning price plus it (the reported
    objective is then at those prices); FCAS prices are unchanged. ``soc_max_mwh_by_interval`` (MWh, one
    value per interval), when given, caps the SoC at the end of each interval (:func:`solve_dispatch`).
    ``scenarios``, when given, makes the plan a two-stage one on the price scenarios it derives from the request
    (:mod:`algorithms.market.price_scenarios`) instead of one on :func:`planning_prices` (not with a haircut);
    the reported plan and objective are then its first scenario's. ``period_intervals`` (dispatch intervals per
    LP period), when given, plans the horizon in those periods (:func:`solve_dispatch`); the result still has one
    value per interval."""
    if request.horizon_intervals <= 0:
        raise InvalidRequestError("horizon_intervals must be positive")
    if not request.HasField("first_interval"):
        raise InvalidRequestError("first_interval is not set")
    if not request.HasField("battery"):
        raise InvalidRequestError("battery is not set")
    if not request.forecasts:
        raise InvalidRequestError("the request has no forecasts")
    further: list[PriceScenario] = []
    if scenarios is not None:
        prices, further = scenarios(request)
    else:
        prices = planning_prices(request)
    charge_price = None
    if energy_haircut_per_mwh is not None:
        charge_price = prices[ENERGY] + energy_haircut_per_mwh
        prices[ENERGY] = prices[ENERGY] - energy_haircut_per_mwh
    plan = solve_dispatch(
        prices,
        battery_from_spec(request.battery),
        request.initial_state_of_charge_mwh,
        request.terminal_state_of_charge_mwh,
        interval_hours=NEM_INTERVAL_HOURS,
        degradation_cost_per_mwh=request.degradation_cost_per_mwh,
        initial_net_mw=request.initial_net_mw,
        time_limit_s=request.time_limit_s,
        terminal_value_per_mwh=request.terminal_value_per_mwh,
        enablement_cap_mw=request_enablement_caps(request),
        charge_energy_price=charge_price,
        soc_max_mwh_by_interval=soc_max_mwh_by_interval,
        scenarios=further,
        period_intervals=period_intervals,
    )
    result = worker_pb2.OptimisationResult(
        request_id=request.request_id,
        algorithm=request.algorithm if request.algorithm.name else ALGORITHM,
        inputs_hash=request.inputs_hash,
        status=_STATUS_TO_PROTO[plan.status],  # type: ignore[arg-type]
        status_reason=plan.status_reason,
        first_interval=request.first_interval,
        horizon_intervals=request.horizon_intervals,
        objective_dollars=plan.objective_dollars,
        gen_mw=plan.gen_mw.tolist(),
        load_mw=plan.load_mw.tolist(),
        state_of_charge_mwh=plan.state_of_charge_mwh.tolist(),
        fcas=[
            worker_pb2.ProductSchedule(product=product, enablement_mw=enablement.tolist())
            for product, enablement in plan.fcas.items()
        ],
        energy_value_per_mwh=plan.energy_value_per_mwh.tolist(),
        solver=plan.solver,
        raise_capacity_value_per_mw=plan.raise_capacity_value_per_mw.tolist(),
        lower_capacity_value_per_mw=plan.lower_capacity_value_per_mw.tolist(),
    )
    return result
