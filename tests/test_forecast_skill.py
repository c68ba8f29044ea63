"""Tests of forecast skill scoring (algorithms/market/forecast_skill.py) and its benchmark (bench/)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rich.console import Console

from aemo.mms import load_dispatch_prices
from algorithms.market.forecast import pinball_loss
from algorithms.market.forecast_skill import (
    BucketScores,
    SkillTable,
    evaluate_skill,
    horizon_buckets,
    lead_label,
    predispatch_forecast_on_grid,
    seasonal_naive_forecast,
    spread_decision_times,
)
from bench.forecast_skill import PREDISPATCH, SEASONAL_NAIVE, actual_prices, print_skill, run_forecast_skill
from settings import Settings

LEVELS = [0.1, 0.5, 0.9]
FIVE_MIN = timedelta(minutes=5)


# --------------------------------------------------------------------------------------------------
# evaluate_skill
# --------------------------------------------------------------------------------------------------


def test_mae_and_pinball_hand_computed() -> None:
    actuals = np.array([[10.0, 20.0]])
    quantile_forecast = np.array([[[5.0, 8.0, 12.0], [15.0, 25.0, 30.0]]])
    point_forecast = np.array([[[9.0], [23.0]]])
    buckets = [("first", 1, 1), ("second", 2, 2), ("both", 1, 2)]

    scores = evaluate_skill(actuals, {"model": quantile_forecast, "point": point_forecast}, LEVELS, buckets)

    # Step 1: errors 5, 2, -2 -> losses 0.5, 1.0, 0.2; step 2: errors 5, -5, -10 -> 0.5, 2.5, 1.0.
    assert scores.methods == ("model", "point")
    np.testing.assert_allclose(scores.mae[0], [2.0, 5.0, 3.5])
    np.testing.assert_allclose(scores.pinball[0], [1.7 / 3, 4.0 / 3, (1.7 + 4.0) / 6])
    # A point forecast is a degenerate distribution: pinball over symmetric levels = MAE / 2.
    np.testing.assert_allclose(scores.mae[1], [1.0, 3.0, 2.0])
    np.testing.assert_allclose(scores.pinball[1], [0.5, 1.5, 1.0])
    np.testing.assert_array_equal(scores.n, [[1, 1, 2], [1, 1, 2]])


def test_mae_uses_the_point_level_interpolated_between_quantiles() -> None:
    actuals = np.array([[0.0]])
    forecast = np.array([[[10.0, 20.0, 40.0]]])
    scores = evaluate_skill(actuals, {"m": forecast}, LEVELS, [("all", 1, 1)], point_level=0.7)
    assert scores.mae[0, 0] == pytest.approx(30.0)
    with pytest.raises(ValueError, match=r"point_level 0\.95 is outside"):
        evaluate_skill(actuals, {"m": forecast}, LEVELS, [("all", 1, 1)], point_level=0.95)


@hypothesis_settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=12), st.integers(0, 10_000))
def test_pinball_matches_the_forecasters_pinball_loss(decisions: int, horizon: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    actuals = rng.normal(50, 40, (decisions, horizon))
    forecast = np.sort(rng.normal(50, 40, (decisions, horizon, 3)), axis=-1)
    scores = evaluate_skill(actuals, {"m": forecast}, LEVELS, [("all", 1, horizon)])
    expected = pinball_loss(actuals.ravel(), forecast.reshape(-1, 3), LEVELS)
    assert scores.pinball[0, 0] == pytest.approx(expected)
    assert scores.mae[0, 0] == pytest.approx(np.abs(actuals - forecast[..., 1]).mean())


def test_missing_actuals_are_excluded_per_bucket() -> None:
    actuals = np.array([[10.0, np.nan, np.nan], [20.0, 30.0, np.nan]])
    forecast = np.full((2, 3, 1), np.nan)
    forecast[0, 0], forecast[1, 0], forecast[1, 1] = 12.0, 10.0, 33.0
    buckets = [("step 1", 1, 1), ("step 2", 2, 2), ("step 3", 3, 3), ("all", 1, 3)]

    scores = evaluate_skill(actuals, {"point": forecast}, LEVELS, buckets)

    np.testing.assert_array_equal(scores.n[0], [2, 1, 0, 3])
    np.testing.assert_allclose(scores.mae[0, :2], [(2.0 + 10.0) / 2, 3.0])
    assert np.isnan(scores.mae[0, 2]) and np.isnan(scores.pinball[0, 2])
    assert scores.mae[0, 3] == pytest.approx((2.0 + 10.0 + 3.0) / 3)


def test_non_finite_forecast_at_a_known_actual_is_an_error() -> None:
    actuals = np.array([[10.0, 20.0]])
    forecast = np.array([[[10.0], [np.nan]]])
    message = r"'gappy' is not finite at 1 known actuals \(first: decision 0, step 2\)"
    with pytest.raises(ValueError, match=message):
        evaluate_skill(actuals, {"gappy": forecast}, LEVELS, [("all", 1, 2)])


@pytest.mark.parametrize(
    ("forecast_shape", "buckets", "message"),
    [
        ((1, 2, 2), [("all", 1, 2)], "expected"),
        ((1, 2, 3), [("all", 1, 3)], "last_step <= 2"),
        ((1, 2, 3), [("a", 0, 1)], "1 <= first_step"),
        ((1, 2, 3), [("a", 1, 1), ("a", 2, 2)], "unique"),
        ((1, 2, 3), [], "at least one"),
    ],
)
def test_bad_inputs_raise(forecast_shape: tuple[int, int, int], buckets: list[tuple[str, int, int]],
                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_skill(np.zeros((1, 2)), {"m": np.zeros(forecast_shape)}, LEVELS, buckets)


# --------------------------------------------------------------------------------------------------
# Buckets and decision times
# --------------------------------------------------------------------------------------------------


def test_default_buckets_cover_a_day_by_lead_range() -> None:
    buckets = horizon_buckets(288)
    assert buckets == (("0-5 min", 1, 1), ("5-30 min", 2, 6), ("30 min-1 h", 7, 12), ("1-2 h", 13, 24),
                       ("2-4 h", 25, 48), ("4-8 h", 49, 96), ("8-24 h", 97, 288))
    assert horizon_buckets(36) == (("0-5 min", 1, 1), ("5-30 min", 2, 6), ("30 min-1 h", 7, 12),
                                   ("1-2 h", 13, 24), ("2-3 h", 25, 36))
    assert lead_label(1, 3) == "0-15 min"
    with pytest.raises(ValueError, match="strictly increasing"):
        horizon_buckets(10, (3, 3))


def test_decision_times_are_spread_on_the_schedule() -> None:
    start, end = datetime(2021, 1, 3), datetime(2021, 2, 1)
    times = spread_decision_times(start, end, 60, schedule_offset_s=30, seed=0)
    assert len(times) == 60
    assert all(start <= t < end and t.minute % 5 == 0 and t.second == 30 for t in times)
    gaps = np.diff(np.array(times, dtype="datetime64[s]")).astype(np.int64)
    slot_s = (end - start).total_seconds() / 60
    assert np.all(np.abs(gaps - slot_s) <= 300)
    assert times == spread_decision_times(start, end, 60, schedule_offset_s=30, seed=0)
    assert times != spread_decision_times(start, end, 60, schedule_offset_s=30, seed=1)
    with pytest.raises(ValueError, match="do not fit"):
        spread_decision_times(start, start + timedelta(minutes=10), 3, schedule_offset_s=30)


# --------------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------------


def daily_pattern(days: int) -> np.ndarray:
    """A price that depends only on the time of day ($/MWh)."""
    return np.tile(50 + 40 * np.sin(2 * np.pi * np.arange(288) / 288), days)


@pytest.mark.parametrize("first_lead", [1, 2, 7])
def test_seasonal_naive_is_exact_on_a_daily_pattern(first_lead: int) -> None:
    path = daily_pattern(6)
    history = path[: 288 * 3]
    forecast = seasonal_naive_forecast(history, 600, first_lead=first_lead)
    start = history.size - 1 + first_lead
    np.testing.assert_array_equal(forecast, path[start:start + 600])


def test_seasonal_naive_falls_back_to_the_last_known_price() -> None:
    history = np.array([1.0, 2.0, np.nan, 4.0, 5.0, np.nan])
    # Season 3: lead 1 -> slot 3 (4.0); lead 2 -> slot 4 (5.0); lead 3 -> slot 5 (NaN -> last known 5.0);
    # lead 4 -> slot 3 again (4.0).
    np.testing.assert_array_equal(seasonal_naive_forecast(history, 4, 3), [4.0, 5.0, 5.0, 4.0])
    # A history shorter than a season: every slot is before its start.
    np.testing.assert_array_equal(seasonal_naive_forecast(np.array([7.0, 8.0]), 3, 288), [8.0, 8.0, 8.0])
    with pytest.raises(ValueError, match="no known"):
        seasonal_naive_forecast(np.array([np.nan]), 3)


def test_predispatch_is_held_on_the_five_minute_grid() -> None:
    periods = [datetime(2021, 1, 5, 10, 30), datetime(2021, 1, 5, 11, 0), datetime(2021, 1, 5, 11, 30)]
    prices = np.array([100.0, 200.0, 300.0])
    first = datetime(2021, 1, 5, 9, 55)  # intervals ending 09:55, 10:00, 10:05, ..., 11:50
    raw = predispatch_forecast_on_grid(periods, prices, first, 24, hold=False)
    held = predispatch_forecast_on_grid(periods, prices, first, 24)
    ends = [first + FIVE_MIN * i for i in range(24)]
    expected_raw = [100.0 if datetime(2021, 1, 5, 10, 0) < t <= periods[0]
                    else 200.0 if periods[0] < t <= periods[1]
                    else 300.0 if periods[1] < t <= periods[2] else np.nan for t in ends]
    np.testing.assert_array_equal(raw, expected_raw)
    assert ends[2] == datetime(2021, 1, 5, 10, 5) and raw[2] == 100.0 and np.isnan(raw[1])
    assert ends[19] == periods[2] and raw[19] == 300.0 and np.isnan(raw[20])
    # Held: before the run the first price, beyond it the last one.
    np.testing.assert_array_equal(held, np.where(np.isnan(raw), [100.0] * 2 + [300.0] * 22, raw))


def test_predispatch_gap_is_held_from_the_period_before() -> None:
    periods = np.array(["2021-01-05T10:30", "2021-01-05T11:30"], dtype="datetime64[s]")
    first = datetime(2021, 1, 5, 10, 25)
    held = predispatch_forecast_on_grid(periods, np.array([1.0, 3.0]), first, 14)
    np.testing.assert_array_equal(held, [1.0] * 8 + [3.0] * 6)
    raw = predispatch_forecast_on_grid(periods, np.array([1.0, 3.0]), first, 14, hold=False)
    assert np.isnan(raw[2:8]).all() and np.all(raw[8:] == 3.0)
    assert np.isnan(predispatch_forecast_on_grid([], np.array([]), first, 3)).all()
    with pytest.raises(ValueError, match="strictly increasing"):
        predispatch_forecast_on_grid(periods[::-1], np.array([1.0, 3.0]), first, 3)
    with pytest.raises(ValueError, match="not on the 5-minute grid"):
        predispatch_forecast_on_grid(periods, np.array([1.0, 3.0]), first + timedelta(minutes=1), 3)


# --------------------------------------------------------------------------------------------------
# The table and the benchmark on real data
# --------------------------------------------------------------------------------------------------


def test_skill_table_frame_has_one_row_per_product_method_bucket() -> None:
    buckets = (("a", 1, 1), ("b", 2, 3))
    scores = {product: BucketScores(("m1", "m2"), buckets, np.full((2, 2), i + 1.0), np.ones((2, 2)),
                                    np.full((2, 2), 5, dtype=np.int64))
              for i, product in enumerate(("ENERGY", "RAISEREG"))}
    table = SkillTable.from_scores(scores, LEVELS, region="SA1")
    frame = table.to_frame()
    assert list(frame.columns) == ["product", "method", "bucket", "first_step", "last_step", "mae", "pinball",
                                   "n"]
    assert len(frame) == 8
    row = frame[(frame["product"] == "RAISEREG") & (frame["method"] == "m2") & (frame["bucket"] == "b")]
    assert row[["first_step", "last_step", "mae", "n"]].to_numpy().tolist() == [[2, 3, 2.0, 5]]
    mismatched = {**scores, "LOWERREG": BucketScores(("m1",), buckets, np.ones((1, 2)), np.ones((1, 2)),
                                                     np.ones((1, 2), dtype=np.int64))}
    with pytest.raises(ValueError, match="LOWERREG"):
        SkillTable.from_scores(mismatched, LEVELS)


def test_actual_prices_align_with_dispatch_and_end_with_the_data(settings: Settings) -> None:
    dispatch = load_dispatch_prices(settings.market_data.data_dir)
    last = dispatch.intervals[-1].astype(datetime)
    firsts = [datetime(2021, 1, 10, 12, 10), last - FIVE_MIN]
    actuals = actual_prices(dispatch, "SA1", ["ENERGY", "LOWERREG"], firsts, 3)
    assert actuals.shape == (2, 2, 3)
    expected = dispatch.prices_at("SA1", datetime(2021, 1, 10, 12, 20))
    assert actuals[0, 0, 2] == expected["ENERGY"] and actuals[1, 0, 2] == expected["LOWERREG"]
    assert np.isfinite(actuals[:, 1, :2]).all() and np.isnan(actuals[:, 1, 2]).all()


def test_small_real_run_gives_finite_scores(settings: Settings) -> None:
    table = run_forecast_skill(settings, region="SA1", products=["ENERGY"], decisions=3, horizon_intervals=36,
                               workers=1)
    assert table.products == ("ENERGY",)
    assert table.methods[1:] == (SEASONAL_NAIVE, PREDISPATCH)
    assert table.buckets == horizon_buckets(36)
    assert table.decisions == 3
    assert np.all(table.n > 0) and np.all(table.n[..., -1] <= 3 * 12)
    assert np.isfinite(table.mae).all() and np.isfinite(table.pinball).all()
    assert np.all(table.mae >= 0)
    output = io.StringIO()
    print_skill(Console(file=output, width=160), table)
    text = output.getvalue()
    assert "ENERGY ($/MWh)" in text and "2-3 h" in text and "aemo-predispatch" in text


def test_unknown_product_is_rejected(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown product"):
        run_forecast_skill(settings, products=["RAISE1SEC"], decisions=1, horizon_intervals=12, workers=1)


def test_worker_processes_give_the_in_process_scores(settings: Settings) -> None:
    in_process, pooled = (run_forecast_skill(settings, region="SA1", products=["RAISEREG"], decisions=2,
                                             horizon_intervals=12, seed=3, workers=workers)
                          for workers in (1, 2))
    np.testing.assert_array_equal(pooled.n, in_process.n)
    np.testing.assert_allclose(pooled.mae, in_process.mae, rtol=1e-9)
    np.testing.assert_allclose(pooled.pinball, in_process.pinball, rtol=1e-9)
