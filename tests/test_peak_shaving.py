"""Peak shaving, pure parts: synthetic history, forecast skill, peak finding, planning limits and the
lockout rule, the sampler; and the node load history's round trip through PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import psycopg
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from algorithms.fleet.fleet_types import NEVER, FleetState
from algorithms.fleet.peak_shaving import (
    INTERVAL_MS,
    InsufficientHistoryError,
    LoadForecast,
    NodeLoadHistory,
    PeakShavingInputError,
    PeakShavingRules,
    find_peaks,
    forecast_node_load,
    node_load_figures,
    plan_node_peak_shaving,
    plan_peak_shaving,
    regular_series,
    seasonal_naive_forecast,
)
from models.db import migrate
from models.node_load import NodeLoadRecordError, latest_interval_end_ms, read_node_load, record_node_load
from simulator.household_load import daily_shape, local_clock
from simulator.load_history import class_outputs_per_kw, shift_class_shapes, synthetic_node_load_history
from simulator.population import make_site_parameters
from simulator.pv import class_output_per_kw
from tests.conftest import temporary_database

START_MS = int(datetime(2023, 12, 31, 13, 30, tzinfo=UTC).timestamp() * 1000)  # 2024-01-01 00:00 Adelaide
DAY = 288
ORIGIN = 28 * DAY + DAY // 2  # 12:00 Adelaide after 28 days
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def feeder_history() -> NodeLoadHistory:
    """35 days of a synthetic feeder of 100 homes."""
    return synthetic_node_load_history("feeder-test", make_site_parameters(100, 7), START_MS, days=36, seed=1)


def _local_hours(epoch_ms: np.ndarray) -> np.ndarray:
    local = pd.to_datetime(epoch_ms, unit="ms", utc=True).tz_convert("Australia/Adelaide")
    return np.asarray(local.hour + local.minute / 60.0)


def _forecast(values: list[float], quantile_spread: float = 0.0, start_ms: int = START_MS) -> LoadForecast:
    central = np.asarray(values, dtype=np.float64)
    ends = start_ms + INTERVAL_MS * np.arange(1, len(central) + 1, dtype=np.int64)
    rows = np.vstack([central - quantile_spread, central, central + quantile_spread])
    return LoadForecast(interval_end_ms=ends, interval_ms=INTERVAL_MS, quantiles=(0.1, 0.5, 0.9), values_mw=rows,
                        method="test")


def _bump(length: int, centre: int, width: float, height: float, base: float = 1.0) -> np.ndarray:
    index = np.arange(length)
    return np.asarray(base + height * np.exp(-0.5 * ((index - centre) / width) ** 2))


# --- synthetic history -------------------------------------------------------------------------------


def test_synthetic_history_uses_the_simulator_models_exactly() -> None:
    times = START_MS + np.array([0, 7 * HOUR_MS + 123_000, 19 * HOUR_MS, 200 * HOUR_MS + 1], dtype=np.int64)
    for moment, row in zip(times.tolist(), class_outputs_per_kw(times), strict=True):
        np.testing.assert_allclose(row, class_output_per_kw(moment), atol=1e-12)
    shapes = shift_class_shapes(times)
    for column, moment in enumerate(times.tolist()):
        hour, weekend = local_clock(moment)
        expected = daily_shape(hour - np.array([-60.0, -30.0, 0.0, 30.0, 60.0]) / 60.0, weekend)
        np.testing.assert_allclose(shapes[:, column], expected, atol=1e-12)


def test_synthetic_history_is_deterministic_and_has_the_evening_peak(feeder_history: NodeLoadHistory) -> None:
    again = synthetic_node_load_history("feeder-test", make_site_parameters(100, 7), START_MS, days=36, seed=1)
    np.testing.assert_array_equal(again.net_load_mw, feeder_history.net_load_mw)
    assert feeder_history.interval_count == 36 * DAY
    assert np.all(np.diff(feeder_history.interval_end_ms) == INTERVAL_MS)
    assert np.all(feeder_history.load_mw > 0) and np.all(feeder_history.sites_reporting == 100)
    # PV lowers the net load at midday (January): net load is below load, negative at noon on most days.
    assert np.all(feeder_history.net_load_mw <= feeder_history.load_mw + 1e-12)
    hours = _local_hours(feeder_history.interval_end_ms)
    daily_peak_hours = hours.reshape(36, DAY)[np.arange(36), feeder_history.net_load_mw.reshape(36, DAY).argmax(1)]
    assert np.all((daily_peak_hours >= 17.0) & (daily_peak_hours <= 22.5))
    # About 14 kWh per home per day.
    mean_daily_kwh_per_home = feeder_history.load_mw.mean() * 24 * 1000 / 100
    assert 10.0 < mean_daily_kwh_per_home < 20.0


# --- forecast ----------------------------------------------------------------------------------------


def test_forecast_beats_seasonal_naive_on_synthetic_history(feeder_history: NodeLoadHistory) -> None:
    values, ends = feeder_history.net_load_mw, feeder_history.interval_end_ms
    model_errors, naive_errors, model_evening, naive_evening, coverage = [], [], [], [], []
    for day in range(7):
        origin = ORIGIN + day * DAY
        forecast = forecast_node_load(values[:origin], ends[:origin], DAY)
        naive = seasonal_naive_forecast(values[:origin], ends[:origin], DAY)
        actual = values[origin:origin + DAY]
        np.testing.assert_array_equal(forecast.interval_end_ms, ends[origin:origin + DAY])
        hours = _local_hours(forecast.interval_end_ms)
        evening = (hours >= 16) & (hours < 22)
        model_error = np.abs(forecast.quantile(0.5) - actual)
        naive_error = np.abs(naive.quantile(0.5) - actual)
        model_errors.append(model_error.mean())
        naive_errors.append(naive_error.mean())
        model_evening.append(model_error[evening].mean())
        naive_evening.append(naive_error[evening].mean())
        coverage.append(np.mean((actual >= forecast.quantile(0.1)) & (actual <= forecast.quantile(0.9))))
    print(f"\nfeeder net load MAE (MW): model {np.mean(model_errors):.4f}, seasonal naive {np.mean(naive_errors):.4f};"
          f" evening {np.mean(model_evening):.4f} vs {np.mean(naive_evening):.4f}; P10-P90 coverage"
          f" {np.mean(coverage):.2f}")
    assert np.mean(model_errors) < 0.8 * np.mean(naive_errors)
    assert np.mean(model_evening) < 0.85 * np.mean(naive_evening)
    assert 0.6 < np.mean(coverage) < 0.95


def test_forecast_quantiles_are_ordered_and_follow_the_grid(feeder_history: NodeLoadHistory) -> None:
    values = feeder_history.net_load_mw[:ORIGIN].copy()
    values[100:400] = np.nan  # a gap in the history is tolerated
    forecast = forecast_node_load(values, feeder_history.interval_end_ms[:ORIGIN], 48, quantiles=(0.9, 0.1, 0.5))
    assert forecast.quantiles == (0.1, 0.5, 0.9)
    assert forecast.values_mw.shape == (3, 48)
    assert np.all(np.diff(forecast.values_mw, axis=0) >= 0)
    assert forecast.interval_end_ms[0] == feeder_history.interval_end_ms[ORIGIN - 1] + INTERVAL_MS


def test_forecast_rejects_bad_history(feeder_history: NodeLoadHistory) -> None:
    values, ends = feeder_history.net_load_mw, feeder_history.interval_end_ms
    with pytest.raises(InsufficientHistoryError, match="days of valid history"):
        forecast_node_load(values[:DAY], ends[:DAY], 12)
    irregular = ends[:ORIGIN].copy()
    irregular[10] += 60_000
    with pytest.raises(PeakShavingInputError, match="regular"):
        forecast_node_load(values[:ORIGIN], irregular, 12)
    with pytest.raises(PeakShavingInputError, match="horizon"):
        forecast_node_load(values[:ORIGIN], ends[:ORIGIN], 0)
    with pytest.raises(PeakShavingInputError, match="quantiles"):
        forecast_node_load(values[:ORIGIN], ends[:ORIGIN], 12, quantiles=(0.5, 1.0))


# --- peaks and planning ------------------------------------------------------------------------------


def test_peaks_are_found_where_the_synthetic_evening_peak_is(feeder_history: NodeLoadHistory) -> None:
    forecast = forecast_node_load(feeder_history.net_load_mw[:ORIGIN], feeder_history.interval_end_ms[:ORIGIN], DAY)
    median = forecast.quantile(0.5)
    threshold = 0.85 * float(median.max())
    peaks = find_peaks(forecast, threshold, PeakShavingRules())
    assert len(peaks) >= 1
    top = peaks[0]
    start_hour, end_hour = _local_hours(np.array([top.start_ms + INTERVAL_MS, top.end_ms]))
    assert 17.0 <= start_hour and end_hour <= 23.5
    shaves = plan_peak_shaving(forecast, threshold, energy_available_mwh=1.0, max_discharge_mw=0.5)
    assert len(shaves) >= 1
    peak_end_ms = int(forecast.interval_end_ms[int(np.argmax(median))])
    assert any(shave.start_ms < peak_end_ms <= shave.end_ms for shave in shaves)
    # Affordable: the whole peak is shaved down to the threshold.
    shave = next(s for s in shaves if s.start_ms < peak_end_ms <= s.end_ms)
    assert shave.ceiling_mw == pytest.approx(threshold)
    assert shave.target_mw == pytest.approx(float(median.max()) - threshold)


def test_a_full_shave_covers_the_run_above_the_threshold_with_the_peak_excess() -> None:
    load = _bump(288, centre=200, width=10, height=1.0)
    forecast = _forecast(load.tolist())
    [shave] = plan_peak_shaving(forecast, 1.5, energy_available_mwh=100.0, max_discharge_mw=10.0)
    above = np.flatnonzero(load > 1.5)
    assert shave.start_ms == START_MS + int(above[0]) * INTERVAL_MS
    assert shave.end_ms == START_MS + int(above[-1] + 1) * INTERVAL_MS
    assert shave.target_mw == pytest.approx(load.max() - 1.5)
    assert shave.ceiling_mw == pytest.approx(1.5)
    assert shave.planned_energy_mwh == pytest.approx(shave.target_mw * (shave.end_ms - shave.start_ms) / HOUR_MS)
    assert shave.energy_above_threshold_mwh == pytest.approx((load[above] - 1.5).sum() / 12)
    assert shave.lockout_start_ms == shave.end_ms and shave.lockout_end_ms == shave.end_ms + 2 * HOUR_MS


def test_a_short_fleet_shaves_the_core_of_the_peak_within_its_energy_and_power() -> None:
    load = _bump(288, centre=200, width=10, height=1.0)
    forecast = _forecast(load.tolist())
    [by_energy] = plan_peak_shaving(forecast, 1.5, energy_available_mwh=0.05, max_discharge_mw=10.0,
                                    rules=PeakShavingRules(energy_use_fraction=1.0))
    # The window shrinks by whole intervals as the ceiling rises, so the block uses most, never more, of it.
    assert 0.8 * 0.05 <= by_energy.planned_energy_mwh <= 0.05 + 1e-12
    assert by_energy.ceiling_mw > 1.5
    window = load[(by_energy.start_ms - START_MS) // INTERVAL_MS:(by_energy.end_ms - START_MS) // INTERVAL_MS]
    assert window.max() - by_energy.target_mw == pytest.approx(by_energy.ceiling_mw)
    assert np.all(window >= by_energy.ceiling_mw - 1e-9)  # the block covers where the load is above the ceiling
    [by_power] = plan_peak_shaving(forecast, 1.5, energy_available_mwh=100.0, max_discharge_mw=0.2,
                                   rules=PeakShavingRules(power_use_fraction=0.5))
    assert by_power.target_mw == pytest.approx(0.1)
    assert by_power.ceiling_mw == pytest.approx(load.max() - 0.1)


def test_nothing_is_planned_below_the_threshold_or_for_short_peaks() -> None:
    load = _bump(288, centre=200, width=10, height=1.0)
    assert plan_peak_shaving(_forecast(load.tolist()), 2.01, 100.0, 10.0) == []
    assert find_peaks(_forecast(load.tolist()), 2.01, PeakShavingRules()) == []
    spike = np.ones(288)
    spike[100:102] = 3.0  # 10 minutes: shorter than the 15-minute minimum
    assert plan_peak_shaving(_forecast(spike.tolist()), 2.0, 100.0, 10.0) == []
    assert len(plan_peak_shaving(_forecast(spike.tolist()), 2.0, 100.0, 10.0,
                                 PeakShavingRules(min_duration_s=600))) == 1
    # The rules' quantile decides: P90 above the threshold, P50 not.
    assert plan_peak_shaving(_forecast(load.tolist(), quantile_spread=0.3), 2.1, 100.0, 10.0) == []
    assert len(plan_peak_shaving(_forecast(load.tolist(), quantile_spread=0.3), 2.1, 100.0, 10.0,
                                 PeakShavingRules(quantile=0.9))) == 1


def test_dips_shorter_than_the_merge_gap_make_one_peak() -> None:
    load = np.ones(288)
    load[100:110] = 2.0
    load[112:120] = 2.5  # 10-minute dip
    [merged] = find_peaks(_forecast(load.tolist()), 1.5, PeakShavingRules())
    assert merged.first_index == 100 and merged.last_index == 119
    assert len(find_peaks(_forecast(load.tolist()), 1.5, PeakShavingRules(merge_gap_s=300, min_duration_s=0))) == 2


def test_a_peak_inside_a_lockout_is_not_shaved_and_the_bigger_peak_wins() -> None:
    load = _bump(288, centre=180, width=6, height=1.0) + _bump(288, centre=200, width=6, height=0.6, base=0.0)
    forecast = _forecast(load.tolist())
    peaks = find_peaks(forecast, 1.4, PeakShavingRules(merge_gap_s=0))
    assert len(peaks) == 2 and peaks[0].first_index < peaks[1].first_index  # the earlier one is bigger
    [shave] = plan_peak_shaving(forecast, 1.4, 100.0, 10.0, PeakShavingRules(merge_gap_s=0))
    assert shave.start_ms == peaks[0].start_ms
    both = plan_peak_shaving(forecast, 1.4, 100.0, 10.0, PeakShavingRules(merge_gap_s=0, lockout_s=0))
    assert len(both) == 2


@st.composite
def _bumpy_loads(draw: st.DrawFn) -> np.ndarray:
    length = draw(st.integers(24, 288))
    load = np.full(length, draw(st.floats(0.0, 2.0)))
    for _ in range(draw(st.integers(0, 5))):
        load += _bump(length, draw(st.integers(0, length - 1)), draw(st.floats(1.0, 30.0)),
                      draw(st.floats(0.0, 3.0)), base=0.0)
    return load


@hypothesis_settings(max_examples=150, deadline=None)
@given(load=_bumpy_loads(), threshold=st.floats(0.5, 4.0), energy=st.floats(0.0, 5.0), power=st.floats(0.0, 3.0),
       lockout_s=st.sampled_from([0.0, 1800.0, 7200.0]), energy_use=st.floats(0.1, 1.0))
def test_plans_respect_energy_power_threshold_and_never_overlap(load: np.ndarray, threshold: float, energy: float,
                                                                 power: float, lockout_s: float,
                                                                 energy_use: float) -> None:
    rules = PeakShavingRules(lockout_s=lockout_s, energy_use_fraction=energy_use, min_duration_s=0, merge_gap_s=0)
    forecast = _forecast(load.tolist())
    shaves = plan_peak_shaving(forecast, threshold, energy, power, rules)
    assert sum(s.planned_energy_mwh for s in shaves) <= energy * energy_use + 1e-9
    horizon_end = int(forecast.interval_end_ms[-1])
    for shave in shaves:
        assert rules.min_target_mw <= shave.target_mw <= power + 1e-9
        assert START_MS <= shave.start_ms < shave.end_ms <= horizon_end
        assert shave.lockout_end_ms == shave.end_ms + round(lockout_s * 1000)
        first, last = (shave.start_ms - START_MS) // INTERVAL_MS, (shave.end_ms - START_MS) // INTERVAL_MS
        window = load[first:last]
        assert window.max() > threshold  # only peaks above the threshold are shaved
        assert shave.ceiling_mw >= threshold - 1e-9
        assert window.max() - shave.target_mw == pytest.approx(shave.ceiling_mw, abs=1e-9)
    for earlier, later in itertools.pairwise(shaves):
        assert earlier.lockout_end_ms <= later.start_ms  # shave + lockout never overlap the next shave
    if float(load.max()) <= threshold:
        assert shaves == []


def test_a_node_plan_shows_its_figures_and_spends_only_the_energy_surely_there() -> None:
    load = _bump(288, centre=180, width=6, height=1.0) + _bump(288, centre=60, width=6, height=0.6, base=0.0)
    forecast = _forecast(load.tolist(), quantile_spread=0.2)
    rules = PeakShavingRules(merge_gap_s=0, energy_use_fraction=0.8)
    planned = plan_node_peak_shaving(forecast, 1.4, 0.5, 2.0, rules)
    assert list(planned.shaves) == plan_peak_shaving(forecast, 1.4, 0.5, 2.0, rules)
    assert planned.peaks_found == len(find_peaks(forecast, 1.4, rules)) == 2
    assert planned.forecast_peak_mw == pytest.approx(float(load.max()))
    assert planned.energy_budget_mwh == pytest.approx(0.4)
    assert planned.forecast_method == "test"
    # The cautious (P90) plan sees a higher peak.
    cautious = plan_node_peak_shaving(forecast, 1.4, 0.5, 2.0, PeakShavingRules(quantile=0.9, merge_gap_s=0))
    assert cautious.forecast_peak_mw == pytest.approx(float(load.max()) + 0.2)
    # A negative lower bound on the energy held (the aggregate's uncertainty) plans nothing.
    empty = plan_node_peak_shaving(forecast, 1.4, -0.1, 2.0, rules)
    assert empty.shaves == () and empty.energy_budget_mwh == 0.0 and empty.peaks_found == 2


def test_the_types_that_cross_the_workflow_boundary_import_no_numpy() -> None:
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, activities.peak_shaving_facts, algorithms.fleet.peak_shaving_types; "
         "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'pandas', 'statsmodels', 'scipy'}))"],
        capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]"


def test_rules_reject_nonsense() -> None:
    with pytest.raises(PeakShavingInputError, match="quantile"):
        PeakShavingRules(quantile=1.0)
    with pytest.raises(PeakShavingInputError, match="lockout_s"):
        PeakShavingRules(lockout_s=-1.0)
    with pytest.raises(PeakShavingInputError, match="energy_use_fraction"):
        PeakShavingRules(energy_use_fraction=0.0)
    with pytest.raises(PeakShavingInputError, match="load_column"):
        PeakShavingRules(load_column="battery_mw")
    with pytest.raises(PeakShavingInputError, match="energy_available_mwh"):
        plan_peak_shaving(_forecast([1.0] * 24), 0.5, float("nan"), 1.0)
    with pytest.raises(PeakShavingInputError, match=r"quantile 0\.7"):
        plan_peak_shaving(_forecast([1.0] * 24), 0.5, 1.0, 1.0, PeakShavingRules(quantile=0.7))


# --- sampler -----------------------------------------------------------------------------------------


def test_node_load_figures_scale_reporting_sites_up_to_the_node() -> None:
    now = 1_700_000_000_000
    state = FleetState(
        measured_at_ms=np.array([now - 1000, now - 2000, now - 600_000, NEVER], dtype=np.int64),
        sequence=np.array([1, 1, 1, -1], dtype=np.int64),
        battery_power_kw=np.array([2.0, -1.0, 5.0, np.nan]),
        state_of_charge_pct=np.array([50.0, 50.0, 50.0, np.nan]),
        pv_power_kw=np.array([1.0, 3.0, 0.0, np.nan]),
        load_power_kw=np.array([2.0, 1.0, 9.0, np.nan]))
    figures = node_load_figures(state, np.array([0, 1, 2, 3]), now, stale_after_ms=30_000)
    assert figures.sites_reporting == 2 and figures.expected_sites == 4
    assert figures.load_mw == pytest.approx(3.0 * 4 / 2 / 1000)
    assert figures.pv_mw == pytest.approx(4.0 * 2 / 1000)
    assert figures.net_load_mw == pytest.approx((3.0 - 4.0) * 2 / 1000)
    assert figures.grid_import_mw == pytest.approx((3.0 - 4.0 - 1.0) * 2 / 1000)
    silent = node_load_figures(state, np.array([3]), now)
    assert silent.sites_reporting == 0 and np.isnan(silent.load_mw)
    with pytest.raises(PeakShavingInputError, match="site_rows"):
        node_load_figures(state, np.array([4]), now)


def test_regular_series_puts_gaps_as_nan() -> None:
    ends = np.array([600_000, 900_000, 1_500_000, 1_560_000], dtype=np.int64)
    grid, values = regular_series(ends, np.array([1.0, 2.0, 3.0, 9.0]), 300_000, 1_500_000)
    np.testing.assert_array_equal(grid, np.arange(300_000, 1_500_001, 300_000))
    np.testing.assert_array_equal(values, [np.nan, 1.0, 2.0, np.nan, 3.0])


# --- PostgreSQL --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def load_database(server_url: str) -> Iterator[str]:
    with temporary_database(server_url) as url:
        migrate(url)
        yield url


def test_node_load_history_round_trips_through_postgresql(load_database: str,
                                                         feeder_history: NodeLoadHistory) -> None:
    two_days = NodeLoadHistory(
        node_id="feeder-SA1-000-f00", interval_end_ms=feeder_history.interval_end_ms[:2 * DAY],
        load_mw=feeder_history.load_mw[:2 * DAY], net_load_mw=feeder_history.net_load_mw[:2 * DAY],
        sites_reporting=feeder_history.sites_reporting[:2 * DAY])
    with psycopg.connect(load_database) as conn:
        assert record_node_load(conn, two_days) == 2 * DAY
        assert record_node_load(conn, two_days) == 2 * DAY  # idempotent: replaced, not duplicated
        everything = read_node_load(conn, two_days.node_id, START_MS, START_MS + 3 * DAY * INTERVAL_MS)
        window = read_node_load(conn, two_days.node_id, START_MS + 10 * INTERVAL_MS, START_MS + 20 * INTERVAL_MS)
        latest = latest_interval_end_ms(conn, two_days.node_id)
        nothing = read_node_load(conn, "feeder-unknown", START_MS, START_MS + DAY * INTERVAL_MS)
    np.testing.assert_array_equal(everything.interval_end_ms, two_days.interval_end_ms)
    np.testing.assert_array_equal(everything.load_mw, two_days.load_mw)  # exact: %.17g round-trips doubles
    np.testing.assert_array_equal(everything.net_load_mw, two_days.net_load_mw)
    np.testing.assert_array_equal(everything.sites_reporting, two_days.sites_reporting)
    np.testing.assert_array_equal(window.interval_end_ms, START_MS + INTERVAL_MS * np.arange(11, 21))
    assert latest == int(two_days.interval_end_ms[-1])
    assert nothing.interval_count == 0 and nothing.net_load_mw.dtype == np.float64


def test_node_load_history_rejects_rows_it_cannot_store(load_database: str) -> None:
    off_grid = NodeLoadHistory("feeder-x", np.array([START_MS + 60_000], dtype=np.int64), np.array([1.0]),
                               np.array([1.0]), np.array([1], dtype=np.int64))
    not_finite = NodeLoadHistory("feeder-x", np.array([START_MS + INTERVAL_MS], dtype=np.int64),
                                 np.array([np.nan]), np.array([1.0]), np.array([1], dtype=np.int64))
    with psycopg.connect(load_database) as conn:
        with pytest.raises(NodeLoadRecordError, match="5-minute grid"):
            record_node_load(conn, off_grid)
        with pytest.raises(NodeLoadRecordError, match="non-finite"):
            record_node_load(conn, not_finite)
    with pytest.raises(PeakShavingInputError, match="strictly increasing"):
        NodeLoadHistory("feeder-x", np.array([2, 1], dtype=np.int64), np.ones(2), np.ones(2),
                        np.ones(2, dtype=np.int64))
