"""Plan aggregation: alignment, classification, a slow per-node reference, and bounds that hold the truth."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest
import scipy.sparse as sp

from algorithms.common import nem_time
from algorithms.fleet.plan_aggregate import PLAN_FIGURES, PlanAggregate, PlanAggregateError, PlanFigure, aggregate_plans
from algorithms.fleet.site_plan_types import NO_VERSION, SitePlans

INTERVAL_MIN = 30
INTERVAL_MS = INTERVAL_MIN * 60_000
START = nem_time.market_to_unix_ms(datetime(2026, 11, 22, 17, 30))
VERSION = 42
NODE_FIGURES = {
    "net_export_kw": "net_export_mw",
    "battery_power_kw": "battery_power_mw",
    "discharge_flexibility_kw": "discharge_flexibility_mw",
    "charge_flexibility_kw": "charge_flexibility_mw",
    "state_of_charge_kwh": "state_of_charge_mwh",
}
PHYSICAL = {"net_export_kw": (-math.inf, math.inf), "battery_power_kw": (-math.inf, math.inf),
            "discharge_flexibility_kw": (0.0, math.inf), "charge_flexibility_kw": (0.0, math.inf),
            "state_of_charge_kwh": (0.0, 1.0)}


def site_ids(count: int) -> np.ndarray:
    return np.array([f"site-{index:05d}" for index in range(count)])


def make_plans(ids: np.ndarray, values: dict[str, np.ndarray], *, versions: np.ndarray | None = None,
               starts: np.ndarray | None = None) -> SitePlans:
    count = len(ids)
    return SitePlans(
        site_ids=ids,
        forecast_version=(np.full(count, VERSION) if versions is None else versions).astype(np.int64),
        start_ms=(np.full(count, START) if starts is None else starts).astype(np.int64),
        plan_interval_minutes=INTERVAL_MIN,
        **{name: values[name] for name in PLAN_FIGURES},
    )


def random_values(capacity: np.ndarray, horizon: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Plausible plans: power scales with capacity, flexibility ≥ 0, SoC within capacity (kW, kWh)."""
    count = len(capacity)
    profile = rng.normal(0.0, 0.15, horizon)
    battery = capacity[:, None] * (profile[None, :] + rng.normal(0.0, 0.05, (count, horizon)))
    return {
        "battery_power_kw": battery,
        "net_export_kw": battery + rng.normal(-0.5, 0.4, (count, horizon)),
        "discharge_flexibility_kw": np.clip(5.0 - battery + rng.normal(0, 0.3, (count, horizon)), 0.0, None),
        "charge_flexibility_kw": np.clip(5.0 + battery + rng.normal(0, 0.3, (count, horizon)), 0.0, None),
        "state_of_charge_kwh": capacity[:, None] * np.clip(rng.normal(0.5, 0.1, (count, horizon)), 0.0, 1.0),
    }


def aggregate(membership: sp.csr_matrix, ids: np.ndarray, plans: SitePlans, capacity: np.ndarray, horizon: int,
              *, start_ms: int = START, z: float = 1.96) -> PlanAggregate:
    return aggregate_plans(membership, ids, plans, start_ms=start_ms, horizon_intervals=horizon,
                           plan_interval_minutes=INTERVAL_MIN, current_version=VERSION, site_capacity_kwh=capacity,
                           confidence_z=z)


# ---------------------------------------------------------------- slow reference (scalar maths, loops)

def reference_site_values(plans: SitePlans, fleet: list[str], start_ms: int, horizon: int,
                          ) -> dict[tuple[int, int], tuple[bool, dict[str, float]]]:
    """{(fleet row, interval): (current version?, {figure: value})} for every usable plan value."""
    usable: dict[tuple[int, int], tuple[bool, dict[str, float]]] = {}
    for row in range(plans.site_count):
        site = str(plans.site_ids[row])
        if site not in fleet:
            continue
        shift = start_ms - int(plans.start_ms[row])
        if shift % INTERVAL_MS:
            continue
        for k in range(horizon):
            j = k + shift // INTERVAL_MS
            if not 0 <= j < plans.horizon_intervals:
                continue
            values = {name: float(getattr(plans, name)[row, j]) for name in PLAN_FIGURES}
            if all(math.isfinite(v) for v in values.values()):
                usable[(fleet.index(site), k)] = (int(plans.forecast_version[row]) >= VERSION, values)
    return usable


def reference_stats(members: list[int], k: int, name: str, capacity: np.ndarray,
                    usable: dict[tuple[int, int], tuple[bool, dict[str, float]]]) -> tuple[int, float, float, float]:
    """(n, ratio, variance per kWh, planned capacity) of the planned sites among ``members``."""
    planned = [(usable[(s, k)][1][name], float(capacity[s])) for s in members if (s, k) in usable]
    n = len(planned)
    total_c = sum(c for _, c in planned)
    if n == 0:
        return 0, math.nan, math.nan, 0.0
    ratio = sum(x for x, _ in planned) / total_c
    variance = sum((x - ratio * c) ** 2 / c for x, c in planned) / (n - 1) if n > 1 else math.nan
    return n, ratio, variance, total_c


def reference(membership: np.ndarray, fleet: list[str], plans: SitePlans, capacity: np.ndarray, horizon: int,
              z: float) -> dict[str, dict[str, np.ndarray]]:
    usable = reference_site_values(plans, fleet, START, horizon)
    nodes = membership.shape[0]
    out: dict[str, dict[str, np.ndarray]] = {
        name: {part: np.zeros((nodes, horizon)) for part in ("estimate", "lower", "upper", "planned")}
        for name in PLAN_FIGURES}
    counts = {part: np.zeros((nodes, horizon), dtype=int) for part in ("current", "stale", "estimated")}
    everyone = list(range(len(fleet)))
    for node in range(nodes):
        members = [s for s in everyone if membership[node, s]]
        for k in range(horizon):
            planned = [s for s in members if (s, k) in usable]
            missing = [s for s in members if (s, k) not in usable]
            counts["current"][node, k] = sum(1 for s in planned if usable[(s, k)][0])
            counts["stale"][node, k] = len(planned) - counts["current"][node, k]
            counts["estimated"][node, k] = len(missing)
            missing_c = sum(float(capacity[s]) for s in missing)
            for name in PLAN_FIGURES:
                total = sum(usable[(s, k)][1][name] for s in planned)
                n, ratio, variance, planned_c = reference_stats(members, k, name, capacity, usable)
                if n < 2:
                    n, ratio, variance, planned_c = reference_stats(everyone, k, name, capacity, usable)
                low_limit, high_limit = (bound * missing_c if missing else 0.0 for bound in PHYSICAL[name])
                if not missing:
                    est = low = high = 0.0
                elif n < 2:
                    est, low, high = math.nan, low_limit, high_limit
                else:
                    spread = z * math.sqrt(variance * (missing_c + missing_c ** 2 / planned_c))
                    est = min(max(ratio * missing_c, low_limit), high_limit)
                    low = min(max(est - spread, low_limit), high_limit)
                    high = min(max(est + spread, low_limit), high_limit)
                figure = out[name]
                figure["planned"][node, k] = total / 1000
                figure["estimate"][node, k] = (total + est) / 1000
                figure["lower"][node, k] = (total + low) / 1000
                figure["upper"][node, k] = (total + high) / 1000
    out["counts"] = {part: values.astype(float) for part, values in counts.items()}
    return out


def random_membership(node_count: int, site_count: int, rng: np.random.Generator) -> np.ndarray:
    dense = rng.random((node_count, site_count)) < rng.uniform(0.05, 0.7, (node_count, 1))
    dense[0] = True  # the root
    dense[1] = False  # an empty node
    dense[2] = False
    dense[2, rng.integers(site_count)] = True  # a node of one site
    return dense


@pytest.mark.parametrize("seed", range(6))
def test_aggregation_equals_the_slow_per_node_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count, horizon, plan_horizon = 40, 5, 7
    ids = site_ids(count)
    capacity = rng.uniform(5.0, 15.0, count)
    planning = np.sort(rng.choice(count, int(rng.integers(2, count)), replace=False))
    values = random_values(capacity[planning], plan_horizon, rng)
    values["net_export_kw"][rng.random(values["net_export_kw"].shape) < 0.05] = np.nan  # holes
    versions = rng.choice([VERSION, VERSION + 1, VERSION - 1, NO_VERSION], len(planning), p=[0.6, 0.1, 0.2, 0.1])
    shifts = rng.choice([-2, -1, 0, 0, 0, 1, 2], len(planning))
    starts = START + shifts * INTERVAL_MS + np.where(rng.random(len(planning)) < 0.05, 60_000, 0)  # off-grid
    plans = make_plans(ids[planning], values, versions=versions, starts=starts)
    dense = random_membership(9, count, rng)
    result = aggregate(sp.csr_matrix(dense.astype(float)), ids, plans, capacity, horizon)
    expected = reference(dense, list(ids), plans, capacity, horizon, 1.96)
    for name, attribute in NODE_FIGURES.items():
        figure: PlanFigure = getattr(result, attribute)
        for part in ("estimate", "lower", "upper", "planned"):
            np.testing.assert_allclose(getattr(figure, part), expected[name][part], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{name} {part}")
    np.testing.assert_array_equal(result.current_version_sites, expected["counts"]["current"])
    np.testing.assert_array_equal(result.stale_version_sites, expected["counts"]["stale"])
    np.testing.assert_array_equal(result.estimated_sites, expected["counts"]["estimated"])
    np.testing.assert_array_equal(result.expected_sites, dense.sum(axis=1))
    np.testing.assert_allclose(result.capacity_mwh, dense @ capacity / 1000)
    assert result.unaligned_plan_sites == int(((starts - START) % INTERVAL_MS != 0).sum())


def test_plans_are_shifted_onto_the_window() -> None:
    ids = site_ids(3)
    horizon = 4
    # site 0 started two intervals before the window, site 1 on it, site 2 one interval after it
    plan_values = 100.0 * np.arange(3)[:, None] + np.arange(6)[None, :]
    values = {name: plan_values.copy() for name in PLAN_FIGURES}
    starts = np.array([START - 2 * INTERVAL_MS, START, START + INTERVAL_MS])
    plans = make_plans(ids, values, starts=starts)
    membership = sp.csr_matrix(np.eye(3))
    result = aggregate(membership, ids, plans, np.full(3, 10.0), horizon)
    planned = result.battery_power_mw.planned * 1000
    np.testing.assert_allclose(planned[0], [2.0, 3.0, 4.0, 5.0])  # interval k = plan interval k + 2
    np.testing.assert_allclose(planned[1], [100.0, 101.0, 102.0, 103.0])
    np.testing.assert_allclose(planned[2], [0.0, 200.0, 201.0, 202.0])  # not covered before its start
    np.testing.assert_array_equal(result.estimated_sites, [[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])


def test_a_plan_shorter_than_the_window_leaves_its_tail_estimated() -> None:
    ids = site_ids(3)
    values = {name: np.full((3, 2), 4.0) for name in PLAN_FIGURES}
    plans = make_plans(ids, values, starts=np.array([START, START, START - INTERVAL_MS]))
    result = aggregate(sp.csr_matrix(np.ones((1, 3))), ids, plans, np.full(3, 10.0), 3)
    np.testing.assert_array_equal(result.estimated_sites, [[0, 1, 3]])
    # interval 1: two planned sites at 4 kW each (identical: no spread); the third is estimated exactly
    assert result.battery_power_mw.estimate[0, 1] == pytest.approx(0.012)
    assert result.battery_power_mw.lower[0, 1] == pytest.approx(0.012)
    # interval 2: nobody planned it; the fleet has too few plans there to estimate from
    assert math.isnan(result.battery_power_mw.estimate[0, 2])
    assert result.battery_power_mw.lower[0, 2] == -math.inf and result.battery_power_mw.upper[0, 2] == math.inf
    assert result.discharge_flexibility_mw.lower[0, 2] == 0.0  # flexibility is never negative
    assert result.state_of_charge_mwh.upper[0, 2] == pytest.approx(0.030)  # at most full
    assert "unknown" in result.description(0, 2)


def test_sites_are_classified_by_forecast_version_per_interval() -> None:
    ids = site_ids(6)
    values = {name: np.ones((5, 3)) for name in PLAN_FIGURES}
    values["battery_power_kw"][4, 1] = np.inf  # a hole: site 4 is estimated in interval 1 only
    versions = np.array([VERSION, VERSION, VERSION - 3, NO_VERSION, VERSION + 1])
    plans = make_plans(ids[:5], values, versions=versions)  # site 5 sent no plan
    membership = sp.csr_matrix(np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0], [1, 0, 0, 0, 1, 1]], dtype=float))
    result = aggregate(membership, ids, plans, np.full(6, 10.0), 3)
    np.testing.assert_array_equal(result.expected_sites, [6, 2, 3])
    np.testing.assert_array_equal(result.current_version_sites, [[3, 2, 3], [0, 0, 0], [2, 1, 2]])
    np.testing.assert_array_equal(result.stale_version_sites, [[2, 2, 2], [2, 2, 2], [0, 0, 0]])
    np.testing.assert_array_equal(result.estimated_sites, [[1, 2, 1], [0, 0, 0], [1, 2, 1]])
    total = result.current_version_sites + result.stale_version_sites + result.estimated_sites
    np.testing.assert_array_equal(total, np.repeat(result.expected_sites[:, None], 3, axis=1))


def test_unknown_and_off_grid_plans_are_counted_and_not_used() -> None:
    ids = site_ids(3)
    values = {name: np.full((3, 2), 2.0) for name in PLAN_FIGURES}
    plans = make_plans(np.array(["site-00000", "site-00001", "zz-stranger"]), values,
                       starts=np.array([START, START + 7_000, START]))
    result = aggregate(sp.csr_matrix(np.ones((1, 3))), ids, plans, np.full(3, 10.0), 2)
    assert result.unknown_plan_sites == 1 and result.unaligned_plan_sites == 1
    np.testing.assert_array_equal(result.estimated_sites, [[2, 2]])
    assert result.battery_power_mw.planned[0, 0] == pytest.approx(0.002)


def test_bounds_are_exact_when_every_site_has_planned() -> None:
    rng = np.random.default_rng(3)
    ids = site_ids(30)
    capacity = rng.uniform(5.0, 15.0, 30)
    plans = make_plans(ids, random_values(capacity, 4, rng))
    result = aggregate(sp.csr_matrix(random_membership(5, 30, rng).astype(float)), ids, plans, capacity, 4)
    for attribute in NODE_FIGURES.values():
        figure: PlanFigure = getattr(result, attribute)
        np.testing.assert_array_equal(figure.lower, figure.estimate)
        np.testing.assert_array_equal(figure.upper, figure.estimate)
        np.testing.assert_array_equal(figure.planned, figure.estimate)


def test_estimates_scale_with_capacity() -> None:
    """Planned sites at 0.2 kW per kWh: a silent 20 kWh battery is estimated at 4 kW, exactly."""
    ids = site_ids(4)
    capacity = np.array([5.0, 10.0, 15.0, 20.0])
    values = {name: (0.2 * capacity[:3])[:, None] * np.ones((3, 1)) for name in PLAN_FIGURES}
    result = aggregate(sp.csr_matrix(np.ones((1, 4))), ids, make_plans(ids[:3], values), capacity, 1)
    assert result.discharge_flexibility_mw.estimate[0, 0] == pytest.approx((1 + 2 + 3 + 4) / 1000)
    assert result.discharge_flexibility_mw.upper[0, 0] == pytest.approx(0.010)  # no spread among planned sites


def test_bounds_contain_the_truth_of_hidden_sites_at_about_the_nominal_rate() -> None:
    """Hide random sites whose plans we know: the 95 % bounds hold the true node sums ~95 % of the time."""
    rng = np.random.default_rng(11)
    count, horizon = 600, 4
    ids = site_ids(count)
    capacity = rng.uniform(8.0, 16.0, count)
    truth = random_values(capacity, horizon, rng)
    full = make_plans(ids, truth)
    groups = [np.sort(rng.choice(count, int(rng.integers(30, 200)), replace=False)) for _ in range(40)]
    dense = np.zeros((len(groups), count))
    for node, members in enumerate(groups):
        dense[node, members] = 1.0
    membership = sp.csr_matrix(dense)
    exact = aggregate(membership, ids, full, capacity, horizon)
    inside = total = 0
    widths = []
    for _ in range(25):
        kept = np.sort(np.flatnonzero(rng.random(count) >= rng.uniform(0.1, 0.5)))
        partial = make_plans(ids[kept], {name: values[kept] for name, values in truth.items()})
        result = aggregate(membership, ids, partial, capacity, horizon)
        for attribute in NODE_FIGURES.values():
            true_value: np.ndarray = getattr(exact, attribute).estimate
            figure: PlanFigure = getattr(result, attribute)
            estimated = result.estimated_sites > 0
            tolerance = 1e-9
            hit = (figure.lower - tolerance <= true_value) & (true_value <= figure.upper + tolerance)
            inside += int(hit[estimated].sum())
            total += int(estimated.sum())
            widths.append(float(np.mean((figure.upper - figure.lower)[estimated])))
    coverage = inside / total
    assert total > 10_000
    assert 0.85 <= coverage <= 0.995, coverage
    assert min(widths) > 0


def test_description_names_the_interval_the_counts_and_the_bounds() -> None:
    ids = site_ids(10)
    capacity = np.full(10, 10.0)
    values = {name: np.full((9, 2), 1.5) for name in PLAN_FIGURES}
    values["net_export_kw"] = np.array([[1000.0 + 10 * i, -2000.0] for i in range(9)])
    versions = np.array([VERSION] * 7 + [VERSION - 1] * 2)
    result = aggregate(sp.csr_matrix(np.ones((1, 10))), ids, make_plans(ids[:9], values, versions=versions),
                       capacity, 2)
    # 9 sites average 1,040 kW, the 10th is estimated at that mean: 10.4 MW in all
    line = result.description(0)
    assert line.startswith("10.4")
    assert " MW planned export at 17:30 (±" in line
    assert line.endswith("7 of 10 sites on forecast v42, 2 on older versions, 1 estimated")
    assert result.description(0, 1) == ("20.0 MW planned import at 18:00 (±0.0 MW), 7 of 10 sites on forecast v42, "
                                        "2 on older versions, 1 estimated")
    with pytest.raises(PlanAggregateError):
        result.description(1)
    with pytest.raises(PlanAggregateError):
        result.description(0, 2)


def test_inputs_that_do_not_fit_are_refused() -> None:
    ids = site_ids(3)
    plans = make_plans(ids, {name: np.ones((3, 2)) for name in PLAN_FIGURES})
    capacity = np.full(3, 10.0)
    ones = sp.csr_matrix(np.ones((1, 3)))
    with pytest.raises(PlanAggregateError, match="sorted"):
        aggregate(ones, ids[::-1], plans, capacity, 2)
    with pytest.raises(PlanAggregateError, match="site columns"):
        aggregate(sp.csr_matrix(np.ones((1, 4))), ids, plans, capacity, 2)
    with pytest.raises(PlanAggregateError, match=r"1\.0"):
        aggregate(sp.csr_matrix(np.full((1, 3), 2.0)), ids, plans, capacity, 2)
    with pytest.raises(PlanAggregateError, match=r"scipy\.sparse"):
        aggregate(np.ones((1, 3)), ids, plans, capacity, 2)  # type: ignore[arg-type]
    with pytest.raises(PlanAggregateError, match="> 0"):
        aggregate(ones, ids, plans, np.array([10.0, 0.0, 10.0]), 2)
    with pytest.raises(PlanAggregateError, match="confidence_z"):
        aggregate(ones, ids, plans, capacity, 2, z=-1.0)
    with pytest.raises(PlanAggregateError, match="minute"):
        aggregate_plans(ones, ids, plans, start_ms=START, horizon_intervals=2, plan_interval_minutes=15,
                        current_version=VERSION, site_capacity_kwh=capacity)
    with pytest.raises(PlanAggregateError, match="horizon_intervals"):
        aggregate(ones, ids, plans, capacity, 0)
    assert issubclass(PlanAggregateError, ValueError)
