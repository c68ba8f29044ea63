"""Market depth in the dispatch LP: per-interval, per-product caps on FCAS enablement (variable bounds)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from aemo.mms import load_market_data
from algorithms.common.battery import BatteryParams, battery_from_spec, battery_spec_from_settings
from algorithms.common.errors import InvalidRequestError
from algorithms.market.lp_matrix import build_dispatch_lp
from algorithms.market.optimise import dispatch_spec, perfect_foresight, solve_dispatch
from backtest.engine import market_prices, perfect_foresight_revenue
from backtest.ledger import perfect_foresight_ledger
from settings import load_settings

FCAS = ["RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG", "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG"]


def reference_battery() -> BatteryParams:
    return battery_from_spec(battery_spec_from_settings(load_settings(environ={}).battery))


def prices(horizon: int = 96, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    path = {"ENERGY": rng.normal(60.0, 80.0, horizon)}
    for product in FCAS:
        path[product] = rng.exponential(8.0, horizon)
    return path


def test_a_cap_of_zero_removes_that_products_revenue() -> None:
    battery = reference_battery()
    path = prices()
    free = perfect_foresight(path, battery, include_fcas=True)
    capped = perfect_foresight(path, battery, include_fcas=True, enablement_cap_mw={"RAISEREG": np.zeros(96)})
    assert free.status == capped.status == "OPTIMAL"
    assert float(np.sum(free.fcas["RAISEREG"])) > 1.0  # the uncapped plan earns from it
    assert np.all(capped.fcas["RAISEREG"] == 0.0)
    assert capped.objective_dollars < free.objective_dollars


def test_a_cap_above_the_batterys_capability_changes_nothing() -> None:
    battery = reference_battery()
    path = prices()
    free = perfect_foresight(path, battery, include_fcas=True)
    above = {product: np.full(96, 2 * battery.power_mw) for product in FCAS}
    above["LOWER5MIN"] = np.full(96, np.inf)
    capped = perfect_foresight(path, battery, include_fcas=True, enablement_cap_mw=above)
    assert capped.objective_dollars == pytest.approx(free.objective_dollars, rel=1e-9)
    spec = dispatch_spec(path, battery, 97.0, 97.0, enablement_cap_mw=above)
    np.testing.assert_array_equal(build_dispatch_lp(spec).col_upper,
                                  build_dispatch_lp(dispatch_spec(path, battery, 97.0, 97.0)).col_upper)


def test_per_interval_caps_bound_each_interval_and_reach_the_lp_bounds() -> None:
    battery = reference_battery()
    path = prices(48, 9)
    cap = np.where(np.arange(48) % 2 == 0, 5.0, 30.0)
    plan = solve_dispatch(path, battery, 97.0, 97.0, enablement_cap_mw={"RAISE6SEC": cap},
                          fcas_cap_mw={"RAISE6SEC": 20.0})
    assert plan.status == "OPTIMAL"
    assert np.all(plan.fcas["RAISE6SEC"] <= np.minimum(cap, 20.0) + 1e-9)
    assert np.any(plan.fcas["RAISE6SEC"] > 5.0 + 1e-6)  # the odd intervals go above the even cap
    lp = build_dispatch_lp(dispatch_spec(path, battery, 97.0, 97.0, enablement_cap_mw={"RAISE6SEC": cap},
                                         fcas_cap_mw={"RAISE6SEC": 20.0}))
    np.testing.assert_array_equal(lp.col_upper[lp.layout.fcas("RAISE6SEC")], np.minimum(cap, 20.0))


def test_energy_only_perfect_foresight_ignores_fcas_caps() -> None:
    battery = reference_battery()
    path = prices()
    plain = perfect_foresight(path, battery, include_fcas=False)
    capped = perfect_foresight(path, battery, include_fcas=False, enablement_cap_mw={"RAISEREG": np.zeros(96)})
    assert capped.objective_dollars == pytest.approx(plain.objective_dollars, rel=1e-12)


@pytest.mark.parametrize(("caps", "message"), [
    ({"MYSTERY": np.zeros(96)}, "not an FCAS product"),
    ({"RAISEREG": np.zeros(95)}, "one cap per interval"),
    ({"RAISEREG": np.full(96, -1.0)}, ">= 0 MW"),
    ({"RAISEREG": np.full(96, np.nan)}, ">= 0 MW"),
])
def test_malformed_caps_are_rejected(caps: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        solve_dispatch(prices(), reference_battery(), 97.0, 97.0, enablement_cap_mw=caps)


def test_the_backtest_benchmark_takes_the_caps() -> None:
    settings = load_settings(environ={})
    dispatch, _ = load_market_data(settings.market_data.data_dir)
    market = market_prices(settings, dispatch)
    first = datetime(2021, 1, 15, 0, 5)
    free = perfect_foresight_revenue(settings, market, "SA1", first, 48, include_fcas=True)
    caps = {product: np.zeros(48) for product in market.products if product != "ENERGY"}
    energy, fcas = perfect_foresight_revenue(settings, market, "SA1", first, 48, include_fcas=True,
                                             enablement_cap_mw=caps)
    assert free[1] > 0 and fcas == 0.0
    ledger = perfect_foresight_ledger(settings, market, "SA1", first, 48, enablement_cap_mw=caps)
    assert float(ledger["pf_fcas_revenue_dollars"].sum()) == 0.0
    assert float(ledger["pf_energy_revenue_dollars"].sum()) == pytest.approx(energy, rel=1e-9)
