"""What a warm-started dispatch LP would save, and what it would change, over a backtest's decisions.

``python -m bench.lp_warm_start [--region SA1] [--start 2021-01-15] [--decisions 288]`` replays the decisions
with :func:`backtest.engine.run_backtest` (in-process, the configured strategy), rebuilds every decision's LP
relaxation (:func:`algorithms.market.lp_matrix.build_dispatch_lp`) from the same forecasts and the unit's
state before it (the previous record's SoC and net output), and solves each twice:

* **cold**, as the platform does (:func:`algorithms.market.lp_matrix.solve_matrix_lp`: a new HiGHS model,
  dual simplex from the slack basis);
* **warm**: one HiGHS model kept for the whole run, whose costs and bounds are replaced decision after
  decision (the matrix never changes) and whose solve starts from the previous decision's optimal basis.

It prints the thread CPU time per solve (median, mean; ms), the warm solves' simplex iterations, the decisions
whose plan (columns, more than 1e-6 MW or MWh apart) or row duals (more than 1e-6 $) differ, and the largest
difference of the maximised objective ($). The LP has many optimal vertices (equal forecast prices, FCAS
enablement that several products can take, SoC at its bounds), so a warm start lands on another optimum of
the same value: see README, "Backtest speed", for why the platform does not warm-start.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from aemo.mms import load_market_data
from algorithms.common.battery import battery_from_spec
from algorithms.market import lp_matrix
from algorithms.market.cycle_requests import optimisation_request
from algorithms.market.lp_matrix import MatrixLp, build_dispatch_lp, solve_matrix_lp
from algorithms.market.operator_controls import battery_with_soc_floor
from algorithms.market.optimise import NEM_INTERVAL_HOURS, dispatch_spec, planning_prices
from backtest.engine import BacktestConfig, _battery_spec, _parameters, _Preparer, market_prices, run_backtest
from settings import Settings, load_settings

# Columns or duals further apart than this count as a different plan.
PLAN_TOLERANCE = 1e-6


@dataclass
class WarmStartFigures:
    """Per-solve thread CPU milliseconds, cold and warm, the warm solves' simplex iterations, and how the
    plans differ."""

    cold_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)
    warm_iterations: list[int] = field(default_factory=list)
    different_plans: int = 0
    different_duals: int = 0
    largest_objective_difference_dollars: float = 0.0


class _WarmModel:
    """One HiGHS model of a fixed matrix whose costs and bounds change from solve to solve (warm basis)."""

    def __init__(self, lp: MatrixLp, time_limit_s: float) -> None:
        self._solver = lp_matrix.highspy.Highs()
        lp_matrix._configure(self._solver, time_limit_s, False, False)
        lp_matrix._pass_model(self._solver, lp)
        self._matrix = lp.matrix.data.tobytes() + lp.matrix.indices.tobytes() + lp.matrix.indptr.tobytes()
        self._columns = np.arange(lp.matrix.num_columns, dtype=np.int32)
        self._rows = np.arange(lp.matrix.num_rows, dtype=np.int32)

    def same_matrix(self, lp: MatrixLp) -> bool:
        """True when ``lp`` has this model's matrix."""
        return self._matrix == lp.matrix.data.tobytes() + lp.matrix.indices.tobytes() + lp.matrix.indptr.tobytes()

    def solve(self, lp: MatrixLp) -> tuple[np.ndarray, np.ndarray, int]:
        """(column values, row duals of the maximisation, simplex iterations) of ``lp`` from the last basis."""
        solver: Any = self._solver
        count = self._columns.size
        solver.changeColsCost(count, self._columns, np.ascontiguousarray(-lp.cost))
        solver.changeColsBounds(count, self._columns, lp.col_lower, lp.col_upper)
        solver.changeRowsBounds(self._rows.size, self._rows, lp.row_lower, lp.row_upper)
        solver.run()
        solution = solver.getSolution()
        return (np.asarray(solution.col_value, dtype=np.float64), -np.asarray(solution.row_dual, dtype=np.float64),
                int(solver.getInfo().simplex_iteration_count))


def _thread_ms(started: float) -> float:
    return (time.thread_time() - started) * 1000.0


def measure(settings: Settings, region: str, first_decision: datetime, decisions: int) -> WarmStartFigures:
    """Solve every decision's LP relaxation cold and warm (see the module docstring)."""
    tables = load_market_data(settings.market_data.data_dir)
    config = BacktestConfig(region=region, first_decision=first_decision, decisions=decisions)
    result = run_backtest(settings, *tables, config, workers=1)
    parameters = _parameters(settings, config)
    battery = _battery_spec(settings, region)
    preparer = _Preparer(settings, *tables, market_prices(settings, tables[0]), config)
    figures = WarmStartFigures()
    warm: _WarmModel | None = None
    state_of_charge_mwh, net_mw = settings.battery.initial_state_of_charge_mwh, 0.0
    for record in result.records:
        prepared = preparer.prepare(record.decision_time, keep_snapshot=False)
        before = state_of_charge_mwh, net_mw
        state_of_charge_mwh, net_mw = record.state_of_charge_mwh, record.net_mw
        if prepared.failure is not None or record.paused or not prepared.forecasts:
            continue
        request = optimisation_request(
            prepared.forecasts, battery_with_soc_floor(battery, record.soc_floor_fraction), request_id="bench",
            first_interval=record.dispatch_interval, horizon_intervals=parameters.horizon_intervals,
            state_of_charge_mwh=before[0], terminal_state_of_charge_mwh=settings.battery.initial_state_of_charge_mwh,
            price_quantile=parameters.optimiser_price_quantile,
            degradation_cost_per_mwh=parameters.degradation_cost_per_mwh,
            time_limit_s=parameters.optimiser_time_limit_s, initial_net_mw=before[1],
            terminal_value_per_mwh=parameters.terminal_value_per_mwh,
            price_tail_weight=parameters.optimiser_price_tail_weight, algorithm=parameters.optimiser_algorithm)
        spec = dispatch_spec(planning_prices(request), battery_from_spec(request.battery),
                             request.initial_state_of_charge_mwh, request.terminal_state_of_charge_mwh,
                             interval_hours=NEM_INTERVAL_HOURS,
                             degradation_cost_per_mwh=request.degradation_cost_per_mwh,
                             initial_net_mw=request.initial_net_mw,
                             terminal_value_per_mwh=request.terminal_value_per_mwh)
        lp = build_dispatch_lp(spec)
        started = time.thread_time()
        cold = solve_matrix_lp(lp, time_limit_s=request.time_limit_s, interior_point=False)
        figures.cold_ms.append(_thread_ms(started))
        if cold.status != "OPTIMAL":
            continue
        if warm is None or not warm.same_matrix(lp):
            warm = _WarmModel(lp, request.time_limit_s)
        started = time.thread_time()
        values, duals, iterations = warm.solve(lp)
        figures.warm_ms.append(_thread_ms(started))
        figures.warm_iterations.append(iterations)
        figures.different_plans += bool(np.max(np.abs(values - cold.column_values)) > PLAN_TOLERANCE)
        figures.different_duals += bool(np.max(np.abs(duals - cold.row_duals)) > PLAN_TOLERANCE)
        figures.largest_objective_difference_dollars = max(
            figures.largest_objective_difference_dollars, abs(float(lp.cost @ values - lp.cost @ cold.column_values)))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Print the figures of :func:`measure` for the decisions asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--region", default="SA1")
    parser.add_argument("--start", default="2021-01-15", help="first trading day (AEST), YYYY-MM-DD")
    parser.add_argument("--decisions", type=int, default=288)
    arguments = parser.parse_args(argv)
    settings = load_settings()
    first = datetime.fromisoformat(arguments.start) + timedelta(seconds=settings.cycle.schedule_offset_s)
    figures = measure(settings, arguments.region, first, arguments.decisions)
    solved = len(figures.warm_ms)
    print(f"{arguments.region}: {len(figures.cold_ms)} decisions from {first:%Y-%m-%d %H:%M:%S} (AEST), "
          f"{solved} LP relaxations solved both ways")
    for label, times, iterations in (("cold", figures.cold_ms, None), ("warm", figures.warm_ms,
                                                                        figures.warm_iterations)):
        line = f"{label}: median {statistics.median(times):.2f} ms, mean {statistics.fmean(times):.2f} ms CPU a solve"
        if iterations:
            line += f", median {statistics.median(iterations):.0f} simplex iterations"
        print(line)
    print(f"plans that differ: {figures.different_plans} of {solved}; row duals that differ: "
          f"{figures.different_duals} of {solved}; largest objective difference "
          f"${figures.largest_objective_difference_dollars:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
