"""A second backend for the ONE dispatch formulation of :mod:`algorithms.market.lp_matrix`: PuLP.

:func:`solve_matrix_lp_pulp` loads any :class:`~algorithms.market.lp_matrix.MatrixLp` — its columns and
bounds, its cost vector, its CSC rows with their lower / upper bounds and its integer columns — into a
``pulp.LpProblem`` generically (no knowledge of what a row means: the constraints are written once, in
:mod:`algorithms.market.lp_matrix`) and solves it with HiGHS through PuLP when available, else CBC. It is
the fallback where highspy is not installed and the independent solver path the tests hold HiGHS to.

Row kinds: ``lower == upper`` is one equality, a one-sided row one inequality, a ranged row two
inequalities whose duals are added. Row duals are returned for the maximisation ($ per unit of
right-hand side), as :func:`algorithms.market.lp_matrix.solve_matrix_lp` returns them; a MILP reports
none. Building the PuLP objects is per-row Python: this backend is a reference, not the hot path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pulp

from algorithms.market.lp_matrix import MIP_REL_GAP, FloatArray, LpSolution, MatrixLp

CBC = "CBC"
HIGHS_THROUGH_PULP = "HiGHS"


def pulp_solver(time_limit_s: float, interior_point: bool,
                mip_rel_gap: float = MIP_REL_GAP) -> tuple[Any, str]:
    """PuLP's HiGHS (interior point when ``interior_point``) if available, else CBC; (solver, its name).

    ``time_limit_s`` (s) bounds the solve; a MILP stops within ``mip_rel_gap`` (relative) of its proven bound,
    as the highspy backend's (default :data:`MIP_REL_GAP`)."""
    options: dict[str, Any] = {"threads": 1}  # as the highspy backend: fork-safe and reproducible
    if interior_point:
        options["solver"] = "ipm"
    highs = pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=mip_rel_gap, **options)
    if highs.available():
        return highs, HIGHS_THROUGH_PULP
    return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=mip_rel_gap), CBC


def _variable(problem: pulp.LpProblem, name: str, low: float, high: float, integer: bool) -> pulp.LpVariable:
    """A variable owned by ``problem`` (PuLP >= 3.3 API, plain LpVariable before it); infinite bounds free."""
    low_bound = None if math.isinf(low) else low
    high_bound = None if math.isinf(high) else high
    category = pulp.LpInteger if integer else pulp.LpContinuous
    if hasattr(problem, "add_variable"):
        return problem.add_variable(name, low_bound, high_bound, category)
    return pulp.LpVariable(name, low_bound, high_bound, category)


def pulp_problem(lp: MatrixLp) -> tuple[pulp.LpProblem, list[pulp.LpVariable], list[list[pulp.LpConstraint]]]:
    """``lp`` as a maximising PuLP problem: (problem, one variable per column, the PuLP rows of each row)."""
    problem = pulp.LpProblem("dispatch", pulp.LpMaximize)
    integrality = lp.integer_columns()
    variables = [
        _variable(problem, f"x{j}", low, high, bool(integer))
        for j, (low, high, integer) in enumerate(
            zip(lp.col_lower.tolist(), lp.col_upper.tolist(), integrality.tolist(), strict=True))
    ]
    problem.setObjective(pulp.LpAffineExpression(
        [(variables[j], c) for j, c in enumerate(lp.cost.tolist()) if c != 0.0]))
    matrix = lp.matrix
    columns = matrix.column_of_entries()
    order = np.lexsort((columns, matrix.indices))
    row_starts = np.searchsorted(matrix.indices[order], np.arange(matrix.num_rows + 1))
    entry_columns = columns[order].tolist()
    entry_values = matrix.data[order].tolist()
    rows: list[list[pulp.LpConstraint]] = []
    for i, (low, high) in enumerate(zip(lp.row_lower.tolist(), lp.row_upper.tolist(), strict=True)):
        start, stop = int(row_starts[i]), int(row_starts[i + 1])
        terms = [(variables[entry_columns[k]], entry_values[k]) for k in range(start, stop)]
        constraints: list[pulp.LpConstraint] = []
        if low == high:
            constraints.append(pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintEQ, f"r{i}", low))
        else:
            if not math.isinf(low):
                constraints.append(pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintGE,
                                                     f"r{i}_lo", low))
            if not math.isinf(high):
                constraints.append(pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintLE,
                                                     f"r{i}_up", high))
        for constraint in constraints:
            problem.addConstraint(constraint)
        rows.append(constraints)
    return problem, variables, rows


def _row_duals(rows: list[list[pulp.LpConstraint]], solver_name: str) -> FloatArray:
    """Duals of the maximisation ($ per unit of right-hand side) per row; empty without solver duals.

    PuLP hands the maximisation to HiGHS as a minimisation of the negated objective, so a HiGHS row dual
    is the derivative of minus the revenue and its sign is flipped back here; CBC's duals already refer to
    the maximisation.
    """
    if any(constraint.pi is None for constraints in rows for constraint in constraints):
        return np.zeros(0)
    sign = -1.0 if solver_name == HIGHS_THROUGH_PULP else 1.0
    return sign * np.array([sum(float(c.pi) for c in constraints) for constraints in rows], dtype=np.float64)


def solve_matrix_lp_pulp(lp: MatrixLp, *, time_limit_s: float, interior_point: bool,
                         mip_rel_gap: float = MIP_REL_GAP) -> tuple[LpSolution, str]:
    """Solve ``lp`` (integer columns included) through PuLP: (solution, solver name "HiGHS" or "CBC"); a MILP
    to ``mip_rel_gap`` (relative) of its proven bound.

    Statuses as :func:`algorithms.market.lp_matrix.solve_matrix_lp`: OPTIMAL, INFEASIBLE, TIME_LIMIT (the
    solver used up 99 % of ``time_limit_s`` seconds — PuLP's own ``solutionTime`` — or stopped with an
    integer-feasible point only; no plan is read back then), ERROR. A MILP's bound and gap are not reported
    through PuLP: when OPTIMAL its ``objective_bound`` is the objective and ``mip_gap`` 0.
    """
    problem, variables, rows = pulp_problem(lp)
    solver, solver_name = pulp_solver(time_limit_s, interior_point and not lp.integer_columns().any(),
                                      mip_rel_gap)
    empty = np.zeros(0)
    try:
        problem.solve(solver)
    except pulp.PulpSolverError as error:
        return LpSolution("ERROR", f"{solver_name} failed: {error}", empty, empty), solver_name
    if problem.status == pulp.LpStatusInfeasible:
        return LpSolution("INFEASIBLE", "infeasible", empty, empty), solver_name
    if problem.status != pulp.LpStatusOptimal or problem.sol_status != pulp.LpSolutionOptimal:
        used_up = float(problem.solutionTime or 0.0) >= time_limit_s * 0.99
        if used_up or problem.sol_status == pulp.LpSolutionIntegerFeasible:
            return LpSolution("TIME_LIMIT", "time limit", empty, empty), solver_name
        text = f"{solver_name} ended with status {pulp.LpStatus[problem.status]}"
        return LpSolution("ERROR", text, empty, empty), solver_name
    values = np.array([v.varValue if v.varValue is not None else np.nan for v in variables], dtype=np.float64)
    duals = empty if lp.integer_columns().any() else _row_duals(rows, solver_name)
    objective = float(lp.cost @ np.nan_to_num(values))
    return LpSolution("OPTIMAL", "optimal", values, duals, objective_bound=objective, mip_gap=0.0), solver_name
