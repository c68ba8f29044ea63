"""The dispatch solver's faster plumbing decides exactly what the plain one decides.

Two changes make a rolling plan cheaper without changing it: the model goes to HiGHS through highspy's
pointer ``passModel`` instead of a ``HighsLp`` filled attribute by attribute
(``algorithms/market/lp_matrix.py``), and the direction LPs of a plan's first interval (solved when the LP
relaxation charges and discharges at once there) run concurrently, one thread each
(``algorithms/market/optimise.py``). On real decisions (SA1, 15 January 2021, `lp-energy-fcas@1`)
both give the plans, bit for bit, of the way they were solved before, also with market-depth caps on
FCAS enablement (``enablement_cap_mw``).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest

from aemo.mms import load_market_data
from algorithms.common.battery import battery_from_spec
from algorithms.market import lp_matrix, optimise
from algorithms.market.lp_matrix import DispatchSpec, LpSolution, MatrixLp, build_dispatch_lp, highspy_available
from algorithms.market.optimise import NEM_INTERVAL_HOURS, DispatchPlan, dispatch_spec, solve_dispatch
from algorithms.registry import default_registry
from backtest import engine
from backtest.engine import BacktestConfig, run_backtest
from bench import lp_warm_start
from pools.timing import call_timed
from settings import load_settings
from vpp.v1 import worker_pb2

pytestmark = pytest.mark.skipif(not highspy_available(), reason="the fast plumbing is highspy's")

DAY_START = datetime(2021, 1, 15, 0, 0, 30)  # decisions bidding the intervals ending 00:05 .. 08:00
DECISIONS = 96


@pytest.fixture(scope="module")
def requests() -> list[worker_pb2.OptimisationRequest]:
    """The optimisation requests of the first 96 decisions of the day, as the backtest made them with
    ``lp-energy-fcas@1``: its plans charge and discharge at once in the first interval often enough to need the
    direction LPs (``lp-uncertainty-spread@1`` prices charging above discharging and needs none on these
    decisions)."""
    configured = load_settings(environ={})
    settings = replace(configured, cycle=replace(configured.cycle, optimiser_algorithm="lp-energy-fcas",
                                                 optimiser_algorithm_version="1"))
    tables = load_market_data(settings.market_data.data_dir)
    made: list[worker_pb2.OptimisationRequest] = []

    def recording(handler: Any, request: Any) -> Any:
        if isinstance(request, worker_pb2.OptimisationRequest):
            copy = worker_pb2.OptimisationRequest()
            copy.CopyFrom(request)
            made.append(copy)
        return call_timed(handler, request)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "call_timed", recording)
        run_backtest(settings, *tables, BacktestConfig(region="SA1", first_decision=DAY_START, decisions=DECISIONS),
                     workers=1)
    assert len(made) == DECISIONS
    return made


def _plans(requests: Sequence[worker_pb2.OptimisationRequest]) -> list[bytes]:
    """Each request's result from the handler the worker pools serve for its algorithm (the configured one)."""
    registry = default_registry()
    return [registry.resolve("optimisation", request.algorithm.name, request.algorithm.version)(request)
            .SerializeToString(deterministic=True) for request in requests]


def _best_over_directions_one_after_the_other(spec: DispatchSpec, lp: MatrixLp, intervals: tuple[int, ...],
                                              time_limit_s: float, use_matrix: bool) -> DispatchPlan:
    """The branching on LPs as it was written before: one direction LP after the other, in
    :func:`itertools.product` order, the best kept."""
    best: DispatchPlan | None = None
    last: DispatchPlan | None = None
    for directions in itertools.product((False, True), repeat=len(intervals)):
        col_upper = lp.col_upper.copy()
        for interval, discharging in zip(intervals, directions, strict=True):
            col_upper[(lp.layout.load if discharging else lp.layout.gen).start + interval] = 0.0
        solution, solver = optimise._run_backend(replace(lp, col_upper=col_upper), time_limit_s, use_matrix)
        last = optimise._plan_of(spec, lp, solution, solver, time_limit_s)
        if last.status == "OPTIMAL" and (best is None or optimise._maximised(spec, last)
                                         > optimise._maximised(spec, best)):
            best = last
    if best is None:
        assert last is not None
        return last
    return replace(best, exclusive_intervals=len(intervals), objective_bound_dollars=best.objective_dollars)


def test_concurrent_direction_lps_give_the_plans_of_solving_them_one_after_the_other(
        requests: list[worker_pb2.OptimisationRequest], monkeypatch: pytest.MonkeyPatch) -> None:
    branched: list[int] = []
    solve_all = optimise._solve_all

    def counting(lps: Sequence[MatrixLp], time_limit_s: float, use_matrix: bool) -> list[tuple[LpSolution, str]]:
        branched.append(len(lps))
        return solve_all(lps, time_limit_s, use_matrix)

    monkeypatch.setattr(optimise, "_solve_all", counting)
    concurrent = _plans(requests)
    assert len(branched) >= 5, "too few decisions needed a direction to compare anything"
    assert all(count >= 2 for count in branched)
    monkeypatch.setattr(optimise, "_best_over_directions", _best_over_directions_one_after_the_other)
    sequential = _plans(requests)
    assert concurrent == sequential


def _capped_plans(requests: Sequence[worker_pb2.OptimisationRequest]) -> list[DispatchPlan]:
    """Each request's plan with every FCAS product's enablement capped by market depth (MW per interval:
    30 MW, 5 MW in every fourth interval)."""
    plans = []
    for request in requests:
        prices = optimise.planning_prices(request)
        horizon = len(prices["ENERGY"])
        caps = np.where(np.arange(horizon) % 4 == 0, 5.0, 30.0)
        plans.append(solve_dispatch(
            prices, battery_from_spec(request.battery), request.initial_state_of_charge_mwh,
            request.terminal_state_of_charge_mwh, degradation_cost_per_mwh=request.degradation_cost_per_mwh,
            initial_net_mw=request.initial_net_mw, terminal_value_per_mwh=request.terminal_value_per_mwh,
            enablement_cap_mw={product: caps for product in prices if product != "ENERGY"}))
    return plans


def _plan_arrays(plan: DispatchPlan) -> list[np.ndarray]:
    return [plan.gen_mw, plan.load_mw, plan.state_of_charge_mwh, *plan.fcas.values(), plan.energy_value_per_mwh,
            plan.raise_capacity_value_per_mw, plan.lower_capacity_value_per_mw]


def test_with_market_depth_caps_the_concurrent_direction_lps_give_the_same_plans(
        requests: list[worker_pb2.OptimisationRequest], monkeypatch: pytest.MonkeyPatch) -> None:
    branching = requests[40:56]
    concurrent = _capped_plans(branching)
    assert any(plan.exclusive_intervals for plan in concurrent), "no capped plan needed a direction"
    assert all(np.all(enablement <= 30.0 + 1e-9) for plan in concurrent for enablement in plan.fcas.values())
    monkeypatch.setattr(optimise, "_best_over_directions", _best_over_directions_one_after_the_other)
    sequential = _capped_plans(branching)
    for fast, plain in zip(concurrent, sequential, strict=True):
        assert (fast.status, fast.objective_dollars, fast.exclusive_intervals) == (
            plain.status, plain.objective_dollars, plain.exclusive_intervals)
        assert all(np.array_equal(a, b) for a, b in zip(_plan_arrays(fast), _plan_arrays(plain), strict=True))


def _highs_lp_attribute_by_attribute(lp: MatrixLp) -> Any:
    """The model as it was handed to HiGHS before: a HighsLp filled attribute by attribute."""
    highspy = lp_matrix.highspy
    matrix = lp.matrix
    model = highspy.HighsLp()
    model.num_row_, model.num_col_ = matrix.num_rows, matrix.num_columns
    model.sense_ = highspy.ObjSense.kMinimize
    model.col_cost_ = -lp.cost
    model.col_lower_ = lp.col_lower
    model.col_upper_ = lp.col_upper
    model.row_lower_ = lp.row_lower
    model.row_upper_ = lp.row_upper
    model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    model.a_matrix_.num_row_, model.a_matrix_.num_col_ = matrix.num_rows, matrix.num_columns
    model.a_matrix_.start_ = matrix.indptr
    model.a_matrix_.index_ = matrix.indices
    model.a_matrix_.value_ = matrix.data
    integer = lp.integer_columns()
    if integer.any():
        model.integrality_ = [highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous
                              for flag in integer.tolist()]
    return model


def _solved(lp: MatrixLp, pointer: bool) -> tuple[np.ndarray, np.ndarray, float]:
    highspy = lp_matrix.highspy
    solver = highspy.Highs()
    mip = bool(lp.integer_columns().any())
    lp_matrix._configure(solver, 60.0, False, mip)
    if pointer:
        lp_matrix._pass_model(solver, lp)
    else:
        solver.passModel(_highs_lp_attribute_by_attribute(lp))
    solver.run()
    assert solver.getModelStatus() == highspy.HighsModelStatus.kOptimal
    solution = solver.getSolution()
    duals = np.asarray(solution.row_dual, dtype=np.float64) if not mip else np.zeros(0)
    return np.asarray(solution.col_value, dtype=np.float64), duals, float(solver.getInfo().objective_function_value)


@pytest.mark.parametrize("exclusive", [(), (0, 1, 2, 5)], ids=["LP", "MILP"])
def test_the_pointer_model_is_solved_exactly_as_the_attribute_by_attribute_model(
        requests: list[worker_pb2.OptimisationRequest], exclusive: tuple[int, ...]) -> None:
    for request in requests[::12]:
        prices = optimise.planning_prices(request)
        spec = dispatch_spec(prices, battery_from_spec(request.battery), request.initial_state_of_charge_mwh,
                             request.terminal_state_of_charge_mwh, interval_hours=NEM_INTERVAL_HOURS,
                             degradation_cost_per_mwh=request.degradation_cost_per_mwh,
                             initial_net_mw=request.initial_net_mw,
                             terminal_value_per_mwh=request.terminal_value_per_mwh)
        lp = build_dispatch_lp(replace(spec, exclusive_intervals=exclusive))
        values, duals, objective = _solved(lp, pointer=True)
        reference_values, reference_duals, reference_objective = _solved(lp, pointer=False)
        assert np.array_equal(values, reference_values)
        assert np.array_equal(duals, reference_duals)
        assert objective == reference_objective


def test_a_warm_started_lp_reaches_the_cold_optimum_value_on_real_decisions() -> None:
    """``python -m bench.lp_warm_start`` replays decisions and solves each LP relaxation cold and warm: the
    warm model (matrix kept, costs and bounds replaced, previous basis) must reach the same optimum value,
    with fewer simplex iterations than a cold solve needs (2,000 and more at 288 intervals x 8 FCAS); its
    plan and duals may be another optimal vertex, which is why the platform solves cold (README)."""
    figures = lp_warm_start.measure(load_settings(environ={}), "SA1", DAY_START + timedelta(hours=3), 24)
    assert len(figures.cold_ms) == 24
    assert len(figures.warm_ms) == 24
    assert figures.largest_objective_difference_dollars < 1e-6
    assert 0 <= figures.different_plans <= 24 and 0 <= figures.different_duals <= 24
    assert statistics.median(figures.warm_iterations) < 1000
