"""The one dispatch formulation (algorithms/market/lp_matrix.py), solved by highspy and, loaded generically into
PuLP (algorithms/market/lp_pulp.py), by HiGHS through PuLP or CBC: both backends agree on the same matrix."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pulp
import pytest

import algorithms.market.optimise as optimise
from algorithms.common.battery import BatteryParams, battery_from_spec, battery_spec_from_settings
from algorithms.common.errors import InvalidRequestError
from algorithms.market.lp_matrix import (
    DispatchSpec,
    MatrixLp,
    build_dispatch_lp,
    csc_from_triplets,
    highspy_available,
    solve_matrix_lp,
)
from algorithms.market.optimise import DispatchPlan, dispatch_spec, solve_dispatch
from settings import load_settings
from tests.test_optimise import small_battery

pytestmark = pytest.mark.skipif(not highspy_available(), reason="the matrix build is solved by highspy")

FCAS_PRODUCTS = ["RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG", "LOWER6SEC", "LOWER60SEC", "LOWER5MIN",
                 "LOWERREG"]
H = 5 / 60


def reference_battery() -> BatteryParams:
    return battery_from_spec(battery_spec_from_settings(load_settings(environ={}).battery))


def random_prices(horizon: int, seed: int, products: list[str] = FCAS_PRODUCTS,
                  energy_mean: float = 60.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    prices = {"ENERGY": rng.normal(energy_mean, 80, horizon)}
    for product in products:
        prices[product] = rng.exponential(8.0, horizon)
    return prices


def plan_vector(plan: DispatchPlan) -> np.ndarray:
    """The plan as LP columns: gen, load, soc, then every FCAS product in price order."""
    return np.concatenate([plan.gen_mw, plan.load_mw, plan.state_of_charge_mwh, *plan.fcas.values()])


def assert_optimal_for(lp: MatrixLp, plan: DispatchPlan, optimum: float) -> None:
    """``plan`` satisfies every row and bound of ``lp`` and reaches its optimum ($, with terminal value)."""
    x = plan_vector(plan)
    activity = lp.matrix.multiply(x)
    assert np.all(activity >= lp.row_lower - 1e-6) and np.all(activity <= lp.row_upper + 1e-6)
    assert np.all(x >= lp.col_lower - 1e-7) and np.all(x <= lp.col_upper + 1e-7)
    assert float(lp.cost @ x) == pytest.approx(optimum, rel=1e-7, abs=1e-7)


# (prices, battery, initial SoC, terminal SoC, solve_dispatch keywords, plan unique)
def cases() -> dict[str, tuple[dict[str, np.ndarray], BatteryParams, float, float, dict[str, Any], bool]]:
    reference = reference_battery()
    start = reference.energy_mwh * 0.5
    ramp_limited = small_battery(power_mw=150.0, energy_mwh=194.0, ramp_rate_mw_per_min=2.0)
    reserve_prices = random_prices(48, 7)
    reserve_prices["RAISE5MIN"] = np.full(48, 500.0)
    negative = random_prices(96, 4, energy_mean=-150.0)
    return {
        "fcas_no_ramp_rows": (random_prices(288, 11), reference, start, start,
                              {"degradation_cost_per_mwh": 1.0, "initial_net_mw": 0.0,
                               "terminal_value_per_mwh": 40.0}, False),
        "ramp_binding": ({"ENERGY": np.tile([500.0, -100.0], 12), "RAISE6SEC": np.full(24, 5.0),
                          "LOWER6SEC": np.full(24, 3.0)}, ramp_limited, 97.0, 0.0,
                         {"initial_net_mw": 30.0}, False),
        "energy_reserve": (reserve_prices, reference, 20.0, 10.0,
                           {"raise_energy_reserve_hours": {"RAISE6SEC": 0.1, "RAISE60SEC": 0.1, "RAISE5MIN": 0.5}},
                           False),
        "regulation_only": (random_prices(72, 5, ["RAISEREG", "LOWERREG"]), reference, start, 30.0,
                            {"fcas_cap_mw": {"RAISEREG": 40.0}}, False),
        "negative_prices": (negative, reference, reference.soc_max_mwh, reference.soc_min_mwh,
                            {"degradation_cost_per_mwh": 2.0}, False),
        "loss_factors_and_degradation": ({"ENERGY": np.array([10.0, 100.0, 20.0])},
                                         small_battery(mlf_gen=0.95, mlf_load=1.02), 0.0, 0.0,
                                         {"interval_hours": 1.0, "degradation_cost_per_mwh": 2.0}, True),
        "tiny_with_terminal_value": ({"ENERGY": np.array([10.0, 100.0, 30.0])}, small_battery(), 0.0, 0.0,
                                     {"interval_hours": 1.0, "terminal_value_per_mwh": 95.0}, True),
    }


CASES = cases()


@pytest.mark.parametrize("name", list(CASES))
def test_matrix_and_pulp_builds_give_the_same_optimum(name: str) -> None:
    prices, battery, initial, terminal, keywords, unique = CASES[name]
    matrix = solve_dispatch(prices, battery, initial, terminal, backend="highspy", physical_intervals=0, **keywords)
    reference = solve_dispatch(prices, battery, initial, terminal, backend="pulp", physical_intervals=0, **keywords)
    assert matrix.status == reference.status == "OPTIMAL", (matrix.status_reason, reference.status_reason)
    assert matrix.solver == "HiGHS"
    assert matrix.objective_dollars == pytest.approx(reference.objective_dollars, rel=1e-7, abs=1e-7)
    assert list(matrix.fcas) == list(reference.fcas) == [p for p in prices if p != "ENERGY"]
    # The PuLP optimum is feasible and optimal in the matrix LP and vice versa: the two describe one LP.
    spec = dispatch_spec(prices, battery, initial, terminal,
                         **{k: v for k, v in keywords.items() if k != "time_limit_s"})
    lp = build_dispatch_lp(spec)
    optimum = matrix.objective_dollars + spec.terminal_value_per_mwh * matrix.state_of_charge_mwh[-1]
    assert_optimal_for(lp, reference, optimum)
    assert_optimal_for(lp, matrix, optimum)
    if unique:  # row duals may still differ where degenerate (e.g. an empty battery at the end)
        np.testing.assert_allclose(plan_vector(matrix), plan_vector(reference), atol=1e-6)


def test_ramp_case_binds_in_the_matrix_build() -> None:
    prices, battery, initial, terminal, keywords, _ = CASES["ramp_binding"]
    plan = solve_dispatch(prices, battery, initial, terminal, backend="highspy", **keywords)
    steps = np.diff(np.concatenate([[30.0], plan.net_mw]))
    assert np.max(np.abs(steps)) == pytest.approx(10.0)
    assert np.max(np.abs(steps)) <= 10.0 + 1e-6


@pytest.mark.parametrize("backend", ["highspy", "pulp"])
def test_infeasible_terminal_is_the_same_status_and_reason(backend: optimise.Backend) -> None:
    plan = solve_dispatch({"ENERGY": np.array([50.0, 60.0, 70.0]), "RAISE6SEC": np.ones(3)}, reference_battery(),
                          20.0, 150.0, backend=backend)
    assert plan.status == "INFEASIBLE"
    assert "unreachable" in plan.status_reason
    assert plan.gen_mw.size == 0 and plan.fcas == {}


def test_infeasible_initial_ramp_in_the_matrix_build() -> None:
    battery = small_battery(power_mw=150.0, energy_mwh=194.0, ramp_rate_mw_per_min=2.0)
    plan = solve_dispatch({"ENERGY": np.array([50.0, 60.0])}, battery, 97.0, 0.0, initial_net_mw=400.0,
                          backend="highspy")
    assert plan.status == "INFEASIBLE"
    assert "cannot ramp" in plan.status_reason


def test_tiny_problem_matrix_entry_by_entry() -> None:
    # Two one-hour intervals, one raise and one lower contingency product, binding ramp from 3 MW.
    battery = small_battery(ramp_rate_mw_per_min=0.1)  # 6 MW per interval < 2 P
    spec = dispatch_spec({"ENERGY": np.array([10.0, 100.0]), "RAISE6SEC": np.array([2.0, 3.0]),
                          "LOWER6SEC": np.array([4.0, 5.0])}, battery, 5.0, 1.0, interval_hours=1.0,
                         initial_net_mw=3.0, degradation_cost_per_mwh=1.0, terminal_value_per_mwh=7.0,
                         raise_energy_reserve_hours={"RAISE6SEC": 0.9})
    lp = build_dispatch_lp(spec)
    # columns: gen0 gen1 load0 load1 soc0 soc1 r0 r1 l0 l1
    expected = np.array([
        [1 / 0.9, 0, -0.9, 0, 1, 0, 0, 0, 0, 0],     # balance 0
        [0, 1 / 0.9, 0, -0.9, -1, 1, 0, 0, 0, 0],    # balance 1
        [0, 0, 0, 0, 0, 1, 0, 0, 0, 0],              # terminal
        [1, 0, -1, 0, 0, 0, 1, 0, 0, 0],             # joint raise 0
        [0, 1, 0, -1, 0, 0, 0, 1, 0, 0],             # joint raise 1
        [-1, 0, 1, 0, 0, 0, 0, 0, 1, 0],             # joint lower 0
        [0, -1, 0, 1, 0, 0, 0, 0, 0, 1],             # joint lower 1
        [1, 0, -1, 0, 0, 0, 0, 0, 0, 0],             # ramp from the initial net output
        [-1, 1, 1, -1, 0, 0, 0, 0, 0, 0],            # ramp 0 -> 1
        [0, 0, 0, 0, 0, 0, 1.0, 0, 0, 0],            # reserve 0
        [0, 0, 0, 0, -1, 0, 0, 1.0, 0, 0],           # reserve 1
    ])
    np.testing.assert_allclose(lp.matrix.to_dense(), expected, atol=1e-12)
    inf = np.inf
    np.testing.assert_allclose(lp.row_lower, [5, 0, 1, -inf, -inf, -inf, -inf, -3, -6, -inf, -inf])
    np.testing.assert_allclose(lp.row_upper, [5, 0, inf, 10, 10, 10, 10, 9, 6, 5, 0])
    np.testing.assert_allclose(lp.cost, [9, 99, -11, -101, 0, 7, 2, 3, 4, 5])
    np.testing.assert_allclose(lp.col_lower, np.zeros(10))
    np.testing.assert_allclose(lp.col_upper, [10, 10, 10, 10, 20, 20, 10, 10, 10, 10])
    assert lp.balance_rows == slice(0, 2)


def row_count(spec: DispatchSpec) -> int:
    return build_dispatch_lp(spec).matrix.num_rows


def test_ramp_and_reserve_rows_only_when_needed() -> None:
    prices = random_prices(12, 3)
    groups = 6  # three raise and three lower contingency products, each with its regulation
    free = dispatch_spec(prices, reference_battery(), 97.0, 97.0, initial_net_mw=0.0)  # 750 MW per interval
    assert free.ramp_rows() == (False, False)
    assert row_count(free) == 12 + 1 + groups * 12
    limited = replace(reference_battery(), ramp_rate_mw_per_min=10.0)
    assert row_count(dispatch_spec(prices, limited, 97.0, 97.0)) == 12 + 1 + groups * 12 + 11
    assert row_count(dispatch_spec(prices, limited, 97.0, 97.0, initial_net_mw=0.0)) == 12 + 1 + groups * 12 + 12
    reserve = dispatch_spec(prices, reference_battery(), 97.0, 97.0, raise_energy_reserve_hours={"RAISEREG": 0.2})
    assert row_count(reserve) == 12 + 1 + groups * 12 + 12


def test_regulation_alone_is_one_group_per_direction() -> None:
    spec = dispatch_spec(random_prices(4, 1, ["RAISEREG", "LOWERREG"]), reference_battery(), 97.0, 97.0)
    assert [(g.sign, g.members) for g in spec.joint_groups] == [(1.0, ("RAISEREG",)), (-1.0, ("LOWERREG",))]


def test_same_inputs_give_the_same_plan_bit_for_bit() -> None:
    prices = random_prices(288, 21)
    first = solve_dispatch(prices, reference_battery(), 97.0, 97.0, initial_net_mw=0.0)
    second = solve_dispatch({k: v.copy() for k, v in prices.items()}, reference_battery(), 97.0, 97.0,
                            initial_net_mw=0.0)
    assert first.objective_dollars == second.objective_dollars
    for field in ("gen_mw", "load_mw", "state_of_charge_mwh", "energy_value_per_mwh"):
        assert np.array_equal(getattr(first, field), getattr(second, field))
    assert all(np.array_equal(first.fcas[p], second.fcas[p]) for p in FCAS_PRODUCTS)


def test_energy_value_is_the_balance_dual_with_the_maximisation_sign() -> None:
    # Charge at $10, discharge at $100 (one-hour intervals): a stored MWh is worth 0.9 x $100.
    spec = dispatch_spec({"ENERGY": np.array([10.0, 100.0])}, small_battery(), 0.0, 0.0, interval_hours=1.0)
    lp = build_dispatch_lp(spec)
    solution = solve_matrix_lp(lp, time_limit_s=10.0, interior_point=False)
    assert solution.status == "OPTIMAL"
    np.testing.assert_allclose(solution.row_duals[lp.balance_rows], [90.0, 90.0], atol=1e-6)
    assert float(lp.cost @ solution.column_values) == pytest.approx(710.0)


def test_interior_point_gives_the_simplex_optimum() -> None:
    spec = dispatch_spec(random_prices(96, 8), reference_battery(), 97.0, 97.0, initial_net_mw=0.0)
    lp = build_dispatch_lp(spec)
    simplex = solve_matrix_lp(lp, time_limit_s=10.0, interior_point=False)
    interior = solve_matrix_lp(lp, time_limit_s=10.0, interior_point=True)
    assert simplex.status == interior.status == "OPTIMAL"
    assert float(lp.cost @ interior.column_values) == pytest.approx(float(lp.cost @ simplex.column_values),
                                                                    rel=1e-7)
    assert interior.row_duals.size == lp.matrix.num_rows


def test_csc_from_triplets_matches_the_dense_matrix() -> None:
    rows = np.array([2, 0, 1, 0, 2])
    cols = np.array([0, 2, 1, 0, 2])
    values = np.array([1.5, -2.0, 3.0, 4.0, 5.0])
    matrix = csc_from_triplets(rows, cols, values, 3, 4)
    dense = np.zeros((3, 4))
    dense[rows, cols] = values
    np.testing.assert_array_equal(matrix.to_dense(), dense)
    np.testing.assert_array_equal(matrix.indptr, [0, 2, 3, 5, 5])
    np.testing.assert_array_equal(matrix.indices, [0, 2, 1, 0, 2])
    x = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(matrix.multiply(x), dense @ x)


@pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")
def test_without_highspy_the_pulp_build_is_solved_by_cbc(monkeypatch: pytest.MonkeyPatch) -> None:
    prices = {"ENERGY": np.array([10.0, 100.0, 20.0]), "RAISE6SEC": np.array([1.0, 2.0, 3.0])}
    matrix = solve_dispatch(prices, small_battery(), 5.0, 0.0, interval_hours=1.0)
    monkeypatch.setattr(optimise, "highspy_available", lambda: False)
    monkeypatch.setattr(pulp.HiGHS, "available", lambda self: False)
    fallback = solve_dispatch(prices, small_battery(), 5.0, 0.0, interval_hours=1.0)
    assert fallback.solver == "CBC"
    assert fallback.status == "OPTIMAL"
    assert fallback.objective_dollars == pytest.approx(matrix.objective_dollars, rel=1e-7)
    with pytest.raises(InvalidRequestError, match="highspy"):
        solve_dispatch(prices, small_battery(), 5.0, 0.0, backend="highspy")


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="backend"):
        solve_dispatch({"ENERGY": np.ones(2)}, small_battery(), 5.0, 0.0, backend="gurobi")  # type: ignore[arg-type]
