"""Aggregation at every node: equals a slow per-node reference, and its bounds contain the truth."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from algorithms.fleet.aggregate import FIGURES, BoundedFigure, NodeAggregates, aggregate_fleet, describe
from algorithms.fleet.fleet_types import NEVER, FleetState, SiteParameters
from algorithms.fleet.telemetry import FleetInputError

NOW = 1_700_000_000_000
STALE_MS = 30_000
HORIZON_H = 1.0
ATTRIBUTES = {
    "battery_power": "battery_power_mw",
    "discharge_energy": "discharge_energy_available_mwh",
    "charge_energy": "charge_energy_available_mwh",
    "discharge_power": "discharge_power_available_mw",
    "charge_power": "charge_power_available_mw",
}


def random_fleet(count: int, rng: np.random.Generator) -> SiteParameters:
    return SiteParameters(
        site_ids=np.array([f"s{index:05d}" for index in range(count)]),
        capacity_kwh=rng.uniform(5.0, 15.0, count),
        max_charge_kw=rng.uniform(2.0, 6.0, count),
        max_discharge_kw=rng.uniform(3.0, 7.0, count),
        charge_efficiency=rng.uniform(0.85, 1.0, count),
        discharge_efficiency=rng.uniform(0.85, 1.0, count),
        backup_reserve_fraction=rng.uniform(0.0, 0.4, count),
        pv_capacity_kw=np.zeros(count),
    )


def random_state(count: int, rng: np.random.Generator, *, never_share: float = 0.2,
                 stale_share: float = 0.2) -> FleetState:
    draw = rng.random(count)
    measured_at = np.where(draw < never_share, NEVER,
                           np.where(draw < never_share + stale_share, NOW - rng.integers(STALE_MS + 1, 900_000, count),
                                    NOW - rng.integers(0, STALE_MS, count)))
    never = measured_at == NEVER
    return FleetState(
        measured_at_ms=measured_at.astype(np.int64),
        sequence=np.where(never, -1, 1).astype(np.int64),
        battery_power_kw=np.where(never, np.nan, rng.uniform(-3.0, 3.0, count)),
        state_of_charge_pct=np.where(never, np.nan, rng.uniform(0.0, 100.0, count)),
        pv_power_kw=np.where(never, np.nan, 0.0),
        load_power_kw=np.where(never, np.nan, 0.0),
    )


def random_membership(node_count: int, site_count: int, rng: np.random.Generator) -> sp.csr_matrix:
    dense = rng.random((node_count, site_count)) < rng.uniform(0.05, 0.6, (node_count, 1))
    dense[0] = True  # a root
    dense[-1] = False  # an empty node
    return sp.csr_matrix(dense.astype(np.float64))


def reference_site(p: SiteParameters, s: FleetState, i: int) -> tuple[str, dict[str, tuple[float, ...]]]:
    """(status, {figure: (point, low, high, physical_min, physical_max)}) of site ``i``, scalar maths."""
    capacity = float(p.capacity_kwh[i])
    reserve = float(p.backup_reserve_fraction[i]) * capacity
    eff_d, eff_c = float(p.discharge_efficiency[i]), float(p.charge_efficiency[i])
    max_d, max_c = float(p.max_discharge_kw[i]), float(p.max_charge_kw[i])

    def discharge_energy(e: float) -> float:
        return max(e - reserve, 0.0) * eff_d

    def charge_energy(e: float) -> float:
        return max(capacity - e, 0.0) / eff_c

    def discharge_power(e: float) -> float:
        return min(max_d, discharge_energy(e) / HORIZON_H)

    def charge_power(e: float) -> float:
        return min(max_c, charge_energy(e) / HORIZON_H)

    physical = {
        "battery_power": (-max_c, max_d), "discharge_energy": (0.0, discharge_energy(capacity)),
        "charge_energy": (0.0, charge_energy(0.0)), "discharge_power": (0.0, discharge_power(capacity)),
        "charge_power": (0.0, charge_power(0.0)),
    }
    if int(s.measured_at_ms[i]) == NEVER:
        return "never", {name: (0.0, 0.0, 0.0, *physical[name]) for name in FIGURES}
    age_h = max(NOW - int(s.measured_at_ms[i]), 0) / 3_600_000
    fresh = NOW - int(s.measured_at_ms[i]) <= STALE_MS
    energy = float(s.state_of_charge_pct[i]) / 100 * capacity
    low = min(max(energy - max_d * age_h / eff_d, 0.0), capacity)
    high = min(max(energy + max_c * age_h * eff_c, 0.0), capacity)
    power = float(s.battery_power_kw[i])
    values = {
        "battery_power": (power, power, power) if fresh else (power, min(-max_c, power), max(max_d, power)),
        "discharge_energy": (discharge_energy(energy), discharge_energy(low), discharge_energy(high)),
        "charge_energy": (charge_energy(energy), charge_energy(high), charge_energy(low)),
        "discharge_power": (discharge_power(energy), discharge_power(low), discharge_power(high)),
        "charge_power": (charge_power(energy), charge_power(high), charge_power(low)),
    }
    return ("fresh" if fresh else "stale"), {name: (*values[name], *physical[name]) for name in FIGURES}


def reference_node(p: SiteParameters, s: FleetState, members: list[int], z: float) -> dict[str, Any]:
    sites = [reference_site(p, s, i) for i in members]
    fresh = [figures for status, figures in sites if status == "fresh"]
    never = [figures for status, figures in sites if status == "never"]
    out: dict[str, Any] = {
        "expected": len(members), "fresh": len(fresh), "never": len(never),
        "stale": sum(status == "stale" for status, _ in sites),
    }
    n, m = len(fresh), len(never)
    for name in FIGURES:
        reported = sum(f[name][0] for status, f in sites if status != "never")
        low = sum(f[name][1] for status, f in sites if status != "never")
        high = sum(f[name][2] for status, f in sites if status != "never")
        phys_min = sum(f[name][3] for f in never)
        phys_max = sum(f[name][4] for f in never)
        if m == 0:
            missing, missing_low, missing_high = 0.0, 0.0, 0.0
        elif n == 0:
            missing, missing_low, missing_high = (phys_min + phys_max) / 2, phys_min, phys_max
        else:
            mean = statistics.fmean(f[name][0] for f in fresh)
            missing = min(max(mean * m, phys_min), phys_max)
            if n >= 2:
                spread = z * statistics.stdev(f[name][0] for f in fresh) * math.sqrt(m + m * m / n)
                missing_low = min(max(missing - spread, phys_min), phys_max)
                missing_high = min(max(missing + spread, phys_min), phys_max)
            else:
                missing_low, missing_high = phys_min, phys_max
        out[name] = ((reported + missing) / 1000, (low + missing_low) / 1000, (high + missing_high) / 1000,
                     reported / 1000)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_aggregation_equals_a_slow_per_node_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    site_count, node_count = int(rng.integers(1, 60)), int(rng.integers(2, 12))
    p = random_fleet(site_count, rng)
    s = random_state(site_count, rng, never_share=float(rng.uniform(0, 0.5)), stale_share=float(rng.uniform(0, 0.4)))
    membership = random_membership(node_count, site_count, rng)
    aggregates = aggregate_fleet(p, s, membership, NOW, STALE_MS, confidence_z=1.7, power_horizon_h=HORIZON_H)
    dense = membership.toarray() > 0
    for node in range(node_count):
        expected = reference_node(p, s, list(np.flatnonzero(dense[node])), 1.7)
        assert aggregates.expected_sites[node] == expected["expected"]
        assert aggregates.reporting_sites[node] == expected["fresh"]
        assert aggregates.stale_sites[node] == expected["stale"]
        assert aggregates.never_reported_sites[node] == expected["never"]
        for name in FIGURES:
            figure = getattr(aggregates, ATTRIBUTES[name])
            got = (figure.estimate[node], figure.lower[node], figure.upper[node], figure.reported[node])
            np.testing.assert_allclose(got, expected[name], rtol=1e-9, atol=1e-9, err_msg=f"node {node} {name}")
            assert figure.lower[node] <= figure.estimate[node] + 1e-12 <= figure.upper[node] + 2e-12


def test_counts_fractions_and_ages_of_a_small_hierarchy() -> None:
    rng = np.random.default_rng(1)
    p = random_fleet(4, rng)
    s = FleetState(
        measured_at_ms=np.array([NOW - 1_000, NOW - 60_000, NEVER, NOW - 10_000], dtype=np.int64),
        sequence=np.array([1, 1, -1, 1], dtype=np.int64),
        battery_power_kw=np.array([1.0, 2.0, np.nan, -1.5]),
        state_of_charge_pct=np.array([50.0, 60.0, np.nan, 100.0]),
        pv_power_kw=np.zeros(4), load_power_kw=np.zeros(4))
    membership = sp.csr_matrix(np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=float))
    aggregates = aggregate_fleet(p, s, membership, NOW)
    assert aggregates.expected_sites.tolist() == [4, 2, 2, 0]
    assert aggregates.reporting_sites.tolist() == [2, 1, 1, 0]
    assert aggregates.stale_sites.tolist() == [1, 1, 0, 0]
    assert aggregates.never_reported_sites.tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(aggregates.reporting_fraction[:3], [0.5, 0.5, 0.5])
    assert np.isnan(aggregates.reporting_fraction[3])
    np.testing.assert_allclose(aggregates.oldest_reading_age_s[:3], [60.0, 60.0, 10.0])
    np.testing.assert_allclose(aggregates.mean_reading_age_s[:3], [71 / 3, 30.5, 10.0])
    assert np.isnan(aggregates.oldest_reading_age_s[3])
    np.testing.assert_allclose(aggregates.battery_power_mw.reported[:3], [1.5e-3, 3e-3, -1.5e-3])
    full = p.capacity_kwh[3]
    np.testing.assert_allclose(aggregates.charge_energy_available_mwh.reported[2], 0.0, atol=1e-12)
    assert aggregates.discharge_energy_available_mwh.reported[2] == pytest.approx(
        full * (1 - p.backup_reserve_fraction[3]) * p.discharge_efficiency[3] / 1000)


def test_node_where_no_site_reports_spans_zero_to_the_physical_maximum() -> None:
    rng = np.random.default_rng(2)
    p = random_fleet(5, rng)
    aggregates = aggregate_fleet(p, FleetState.empty(5), sp.csr_matrix(np.ones((1, 5))), NOW)
    energy = aggregates.discharge_energy_available_mwh
    maximum = float((p.capacity_kwh * (1 - p.backup_reserve_fraction) * p.discharge_efficiency).sum()) / 1000
    assert energy.lower[0] == 0.0 and energy.upper[0] == pytest.approx(maximum)
    assert energy.estimate[0] == pytest.approx(maximum / 2) and energy.reported[0] == 0.0
    power = aggregates.battery_power_mw
    assert power.lower[0] == pytest.approx(-p.max_charge_kw.sum() / 1000)
    assert power.upper[0] == pytest.approx(p.max_discharge_kw.sum() / 1000)


def truth_discharge_energy_mwh(p: SiteParameters, soc_pct: np.ndarray, members: np.ndarray) -> np.ndarray:
    energy = soc_pct / 100 * p.capacity_kwh
    per_site = np.maximum(energy - p.backup_reserve_fraction * p.capacity_kwh, 0) * p.discharge_efficiency
    return np.asarray(members @ per_site) / 1000


def test_bounds_cover_the_truth_near_the_nominal_level_when_sites_are_silent() -> None:
    rng = np.random.default_rng(3)
    site_count, node_count = 6_000, 60
    hits, trials, widths = 0, 0, []
    for _ in range(8):
        p = random_fleet(site_count, rng)
        true_soc = rng.uniform(0.0, 100.0, site_count)
        node_of_site = rng.integers(0, node_count, site_count)
        members = sp.csr_matrix((np.ones(site_count), (node_of_site, np.arange(site_count))),
                                shape=(node_count, site_count))
        silent = rng.random(site_count) < rng.uniform(0.05, 0.5)
        state = FleetState(
            measured_at_ms=np.where(silent, NEVER, NOW - 1_000).astype(np.int64),
            sequence=np.zeros(site_count, dtype=np.int64),
            battery_power_kw=np.where(silent, np.nan, 0.0),
            state_of_charge_pct=np.where(silent, np.nan, true_soc),
            pv_power_kw=np.zeros(site_count), load_power_kw=np.zeros(site_count))
        aggregates = aggregate_fleet(p, state, members, NOW)
        truth = truth_discharge_energy_mwh(p, true_soc, members)
        energy = aggregates.discharge_energy_available_mwh
        hits += int(((energy.lower <= truth) & (truth <= energy.upper)).sum())
        trials += node_count
        widths.append(np.median((energy.upper - energy.lower) / truth))
    coverage = hits / trials
    print(f"coverage {coverage:.3f}")
    assert 0.90 <= coverage <= 0.99, coverage
    assert np.median(widths) < 0.6  # informative, not just the physical range


def test_stale_bounds_contain_any_drift_within_the_sites_power_limits() -> None:
    rng = np.random.default_rng(5)
    count = 2_000
    p = random_fleet(count, rng)
    age_ms = rng.integers(STALE_MS + 1, 3_600_000, count)
    soc_then = rng.uniform(0.0, 100.0, count)
    # The truth: each site ran at some power within its limits since its last reading.
    power_kw = rng.uniform(-p.max_charge_kw, p.max_discharge_kw)
    stored_change = np.where(power_kw > 0, -power_kw / p.discharge_efficiency, -power_kw * p.charge_efficiency)
    energy_now = np.clip(soc_then / 100 * p.capacity_kwh + stored_change * age_ms / 3_600_000, 0, p.capacity_kwh)
    state = FleetState(measured_at_ms=(NOW - age_ms).astype(np.int64), sequence=np.zeros(count, dtype=np.int64),
                       battery_power_kw=np.zeros(count), state_of_charge_pct=soc_then, pv_power_kw=np.zeros(count),
                       load_power_kw=np.zeros(count))
    per_site = sp.csr_matrix(sp.identity(count))
    aggregates = aggregate_fleet(p, state, per_site, NOW)
    assert aggregates.stale_sites.sum() == count
    truth = truth_discharge_energy_mwh(p, energy_now / p.capacity_kwh * 100, per_site)
    energy = aggregates.discharge_energy_available_mwh
    assert np.all(energy.lower <= truth + 1e-12) and np.all(truth <= energy.upper + 1e-12)
    assert np.all(energy.upper >= energy.lower) and np.mean(energy.upper - energy.lower > 0) > 0.9


def test_describe_reads_like_the_operator_sentence() -> None:
    aggregates = NodeAggregates(
        expected_sites=np.array([1_000]), reporting_sites=np.array([950]), stale_sites=np.array([12]),
        never_reported_sites=np.array([38]), reporting_fraction=np.array([0.95]),
        mean_reading_age_s=np.array([5.0]), oldest_reading_age_s=np.array([90.0]),
        battery_power_mw=_figure(1.0, 0.9, 1.1),
        discharge_energy_available_mwh=_figure(10.0, 9.6, 10.4),
        charge_energy_available_mwh=_figure(3.0, 2.0, 3.5),
        discharge_power_available_mw=_figure(4.0, 3.9, 4.1), charge_power_available_mw=_figure(4.0, 3.9, 4.1),
        now_ms=NOW, stale_after_ms=STALE_MS, power_horizon_h=1.0, confidence_z=1.96)
    assert describe(aggregates, 0) == (
        "10.0 MWh available to discharge (±0.4 MWh), 95 % of 1,000 expected sites reporting, 12 stale, "
        "38 never reported")
    assert describe(aggregates, 0, "charge_energy").startswith("3.0 MWh available to charge (−1.0/+0.5 MWh)")
    with pytest.raises(FleetInputError, match="node_index"):
        describe(aggregates, 1)


def _figure(estimate: float, lower: float, upper: float) -> BoundedFigure:
    return BoundedFigure(np.array([estimate]), np.array([lower]), np.array([upper]), np.array([estimate]))


def test_membership_matrix_must_fit_the_fleet() -> None:
    rng = np.random.default_rng(6)
    p = random_fleet(3, rng)
    with pytest.raises(FleetInputError, match="3 sites"):
        aggregate_fleet(p, FleetState.empty(3), sp.csr_matrix(np.ones((2, 4))), NOW)
    with pytest.raises(FleetInputError, match=r"entries must be 1\.0"):
        aggregate_fleet(p, FleetState.empty(3), sp.csr_matrix(np.full((2, 3), 2.0)), NOW)
    with pytest.raises(FleetInputError, match=r"scipy\.sparse"):
        aggregate_fleet(p, FleetState.empty(3), np.ones((2, 3)), NOW)  # type: ignore[arg-type]
    with pytest.raises(FleetInputError, match="stale_after_ms"):
        aggregate_fleet(p, FleetState.empty(3), sp.csr_matrix(np.ones((1, 3))), NOW, stale_after_ms=0)
