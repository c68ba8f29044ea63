"""Perfect foresight (energy only) agrees to the dollar with an independent LP, and physically (no charging
and discharging at once) with an independent MILP.

The independent formulation is written here from NEM.md alone, as sparse matrices solved by SciPy's
``linprog`` / ``milp`` (HiGHS), sharing no code with algorithms/market/lp_matrix.py: same reference battery,
start at 50 %, end with at least the start energy, SoC within 5–95 %, efficiencies 0.92 each.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from algorithms.common.battery import battery_from_spec, battery_spec_from_settings
from algorithms.market.optimise import perfect_foresight
from settings import load_settings

H = 5 / 60


def independent_energy_only_revenue(rrp: np.ndarray, power_mw: float, energy_mwh: float, eta_c: float,
                                    eta_d: float, soc_min: float, soc_max: float, soc_start: float) -> float:
    """Maximum energy revenue ($) of a battery against known prices: variables [gen, load, soc]."""
    n = len(rrp)
    identity = sp.identity(n, format="csr")
    # soc_t - soc_{t-1} - eta_c*h*load_t + h/eta_d*gen_t = 0 (soc_{-1} = soc_start)
    previous = sp.diags([np.ones(n - 1)], [-1], shape=(n, n), format="csr")
    a_eq = sp.hstack([identity * (H / eta_d), identity * (-eta_c * H), identity - previous], format="csr")
    b_eq = np.zeros(n)
    b_eq[0] = soc_start
    cost = np.concatenate([-rrp * H, rrp * H, np.zeros(n)])  # minimise -revenue
    bounds = [(0, power_mw)] * (2 * n) + [(soc_min * energy_mwh, soc_max * energy_mwh)] * (n - 1) + [
        (soc_start, soc_max * energy_mwh)]
    answer = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs-ipm")
    assert answer.status == 0, answer.message
    return float(-answer.fun)


@pytest.mark.parametrize("region", ["SA1", "NSW1"])
def test_perfect_foresight_energy_only_matches_an_independent_lp_to_the_dollar(region: str) -> None:
    settings = load_settings(environ={})
    frame = pd.read_parquet(settings.market_data.data_dir / "PUBLIC_DVD_DISPATCHPRICE_202101010000.parquet")
    frame = frame[(frame.REGIONID == region) & (frame.INTERVENTION == 0)].sort_values("SETTLEMENTDATE")
    rrp = frame.RRP.to_numpy(np.float64)
    b = settings.battery
    independent = independent_energy_only_revenue(rrp, b.power_mw, b.energy_mwh, b.charge_efficiency,
                                                  b.discharge_efficiency, b.soc_min_fraction, b.soc_max_fraction,
                                                  b.energy_mwh * b.initial_soc_fraction)
    plan = perfect_foresight({"ENERGY": rrp}, battery_from_spec(battery_spec_from_settings(b)), include_fcas=False,
                             physical=False)
    assert plan.status == "OPTIMAL"
    assert plan.objective_dollars == pytest.approx(independent, abs=1.0)
    # And the revenue recomputed from the plan's own MW agrees with its objective.
    recomputed = float(np.sum(rrp * (plan.gen_mw - plan.load_mw)) * H)
    assert recomputed == pytest.approx(plan.objective_dollars, abs=1.0)


def independent_physical_revenue(rrp: np.ndarray, power_mw: float, energy_mwh: float, eta_c: float, eta_d: float,
                                 soc_min: float, soc_max: float, soc_start: float) -> tuple[float, float]:
    """(best revenue $, proven bound $) without charging and discharging at once: variables [gen, load, soc, u],
    gen <= P u, load <= P (1 - u), u binary, every interval."""
    n = len(rrp)
    identity = sp.identity(n, format="csr")
    zero = sp.csr_matrix((n, n))
    previous = sp.diags([np.ones(n - 1)], [-1], shape=(n, n), format="csr")
    balance = sp.hstack([identity * (H / eta_d), identity * (-eta_c * H), identity - previous, zero], format="csr")
    rhs = np.zeros(n)
    rhs[0] = soc_start
    discharge_only = sp.hstack([identity, zero, zero, identity * -power_mw], format="csr")
    charge_only = sp.hstack([zero, identity, zero, identity * power_mw], format="csr")
    lower = np.concatenate([np.zeros(2 * n), np.full(n, soc_min * energy_mwh), np.zeros(n)])
    upper = np.concatenate([np.full(2 * n, power_mw), np.full(n, soc_max * energy_mwh), np.ones(n)])
    lower[3 * n - 1] = soc_start
    answer = milp(np.concatenate([-rrp * H, rrp * H, np.zeros(2 * n)]),
                  constraints=[LinearConstraint(balance, rhs, rhs),
                               LinearConstraint(discharge_only, -np.inf, 0.0),
                               LinearConstraint(charge_only, -np.inf, power_mw)],
                  integrality=np.concatenate([np.zeros(3 * n), np.ones(n)]), bounds=Bounds(lower, upper),
                  options={"mip_rel_gap": 1e-4, "time_limit": 300.0})
    assert answer.status == 0, answer.message
    return float(-answer.fun), float(-answer.mip_dual_bound)


def test_physical_perfect_foresight_matches_an_independent_milp() -> None:
    """SA1, 15 January 2021, the 144 intervals ending 08:05 .. 20:00 AEST: hours of negative prices, in which
    the LP relaxation charges and discharges at once."""
    settings = load_settings(environ={})
    frame = pd.read_parquet(settings.market_data.data_dir / "PUBLIC_DVD_DISPATCHPRICE_202101010000.parquet")
    frame = frame[(frame.REGIONID == "SA1") & (frame.INTERVENTION == 0)].sort_values("SETTLEMENTDATE")
    stamps = pd.to_datetime(frame.SETTLEMENTDATE, format="%Y/%m/%d %H:%M:%S")
    window = frame[(stamps > "2021-01-15 08:00") & (stamps <= "2021-01-15 20:00")]
    rrp = window.RRP.to_numpy(np.float64)
    assert len(rrp) == 144
    b = settings.battery
    best, bound = independent_physical_revenue(rrp, b.power_mw, b.energy_mwh, b.charge_efficiency,
                                               b.discharge_efficiency, b.soc_min_fraction, b.soc_max_fraction,
                                               b.energy_mwh * b.initial_soc_fraction)
    battery = battery_from_spec(battery_spec_from_settings(b))
    relaxed = perfect_foresight({"ENERGY": rrp}, battery, include_fcas=False, physical=False)
    plan = perfect_foresight({"ENERGY": rrp}, battery, include_fcas=False)
    assert plan.status == "OPTIMAL"
    assert plan.relaxation_simultaneous_intervals > 0
    assert int(np.sum((plan.gen_mw > 1e-6) & (plan.load_mw > 1e-6))) == 0
    # Both are within their 0.01 % gaps of the same optimum, below the relaxation.
    assert plan.objective_dollars <= bound + 1e-6
    assert best <= plan.objective_bound_dollars + 1e-6
    assert plan.objective_dollars == pytest.approx(best, rel=2e-4)
    assert plan.objective_dollars < relaxed.objective_dollars
