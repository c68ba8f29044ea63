"""Equivalence of the fast sarx-quantile path with its reference (algorithms/market/forecast.py).

* The batched least-squares solver gives the coefficients of statsmodels OLS (the reference estimator,
  with its Huber step) on the forecaster's own designs from real January 2021 prices; degenerate designs
  (flat histories) are handed to the reference itself. The batched median and quantiles are numpy's.
* ``run_forecast`` reproduces golden forecasts ($/MWh, $/MW/h) captured from the statsmodels-per-lead
  implementation (tests/data/forecast_golden.npz) for real SA1 decisions of every product, other
  regions, holes in the history, short and flat histories, long horizons and other quantile levels.
* The same request gives bit-identical forecasts run to run.

The golden file was written by :func:`write_golden_forecasts` with the per-lead statsmodels
implementation (the module as it was before the batched solver); regenerate it only for an intended
change of the forecaster's output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import from_timestamp, to_timestamp
from algorithms.market import forecast
from algorithms.market.forecast import (
    ALGORITHM,
    INTERVALS_PER_DAY,
    LeadProblems,
    forecast_from_result,
    huber_fit,
    huber_fit_reference,
    lead_problems,
    market_times_of,
    masked_median,
    masked_quantiles,
    ols_batched,
    run_forecast_v1,
)
from settings import REPO_ROOT
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2

DATA_DIR = REPO_ROOT / "data" / "nem"
GOLDEN_PATH = Path(__file__).parent / "data" / "forecast_golden.npz"
FIVE_MIN = timedelta(minutes=5)
QUANTILES = (0.1, 0.5, 0.9)
HISTORY = 2016
COLUMNS = {"ENERGY": "RRP", "RAISE6SEC": "RAISE6SECRRP", "RAISE60SEC": "RAISE60SECRRP",
           "RAISE5MIN": "RAISE5MINRRP", "RAISEREG": "RAISEREGRRP", "LOWER6SEC": "LOWER6SECRRP",
           "LOWER60SEC": "LOWER60SECRRP", "LOWER5MIN": "LOWER5MINRRP", "LOWERREG": "LOWERREGRRP"}
# Golden tolerance: prices in $/MWh or $/MW/h.
RTOL = 1e-7
ATOL = 1e-6


@dataclass(frozen=True)
class GoldenCase:
    """One forecast request of the golden set: ``origin`` is the index (in the region's dispatch series)
    of the first interval not yet known; the history is the ``history`` intervals before it."""

    name: str
    region: str
    product: str
    origin: int
    history: int = HISTORY
    horizon: int = 288
    quantiles: tuple[float, ...] = QUANTILES
    missing_share: float = 0.0
    leading_gap: int = 0
    flat: bool = False


def golden_cases() -> list[GoldenCase]:
    """The golden set: real decisions (every SA1 product at three times, other regions), then
    degenerate or unusual inputs (holes, short and flat histories, long horizons, five levels)."""
    cases: list[GoldenCase] = []
    for day, interval in ((7, 50), (15, 150), (24, 230)):
        origin = day * 288 + interval
        cases += [GoldenCase(f"SA1-{product}-d{day}", "SA1", product, origin) for product in COLUMNS]
    cases += [GoldenCase(f"{region}-ENERGY", region, "ENERGY", 19 * 288 + 100) for region in ("NSW1", "QLD1",
                                                                                               "VIC1", "TAS1")]
    cases += [
        GoldenCase("TAS1-RAISEREG", "TAS1", "RAISEREG", 11 * 288 + 7),
        GoldenCase("SA1-ENERGY-holes", "SA1", "ENERGY", 20 * 288 + 60, missing_share=0.1),
        GoldenCase("SA1-LOWERREG-holes", "SA1", "LOWERREG", 20 * 288 + 60, missing_share=0.3),
        GoldenCase("SA1-ENERGY-h900", "SA1", "ENERGY", 12 * 288 + 10, history=900),
        GoldenCase("SA1-ENERGY-h400", "SA1", "ENERGY", 12 * 288 + 10, history=400),
        GoldenCase("SA1-ENERGY-h200", "SA1", "ENERGY", 12 * 288 + 10, history=200),
        GoldenCase("SA1-ENERGY-h40", "SA1", "ENERGY", 12 * 288 + 10, history=40),
        GoldenCase("SA1-ENERGY-h20", "SA1", "ENERGY", 12 * 288 + 10, history=20),
        GoldenCase("SA1-RAISE6SEC-h300-holes", "SA1", "RAISE6SEC", 9 * 288, history=300, missing_share=0.2),
        GoldenCase("SA1-ENERGY-flat", "SA1", "ENERGY", 12 * 288 + 10, history=700, flat=True),
        GoldenCase("SA1-ENERGY-flat-holes", "SA1", "ENERGY", 12 * 288 + 10, history=700, flat=True,
                   missing_share=0.2),
        GoldenCase("SA1-ENERGY-leading-gap", "SA1", "ENERGY", 21 * 288 + 100, leading_gap=400),
        GoldenCase("SA1-RAISEREG-leading-gap-holes", "SA1", "RAISEREG", 21 * 288 + 100, leading_gap=700,
                   missing_share=0.1),
        GoldenCase("SA1-ENERGY-h600-leading-gap", "SA1", "ENERGY", 6 * 288 + 3, history=600, leading_gap=250),
        GoldenCase("SA1-ENERGY-H48", "SA1", "ENERGY", 16 * 288 + 200, horizon=48),
        GoldenCase("SA1-ENERGY-H2016", "SA1", "ENERGY", 16 * 288 + 200, horizon=2016),
        GoldenCase("SA1-LOWER5MIN-H1000", "SA1", "LOWER5MIN", 16 * 288 + 200, horizon=1000),
        GoldenCase("SA1-ENERGY-q5", "SA1", "ENERGY", 26 * 288 + 33, quantiles=(0.05, 0.25, 0.5, 0.75, 0.95)),
    ]
    return cases


@cache
def _market() -> tuple[pd.DataFrame, pd.DataFrame]:
    dispatch = pd.read_parquet(DATA_DIR / "PUBLIC_DVD_DISPATCHPRICE_202101010000.parquet")
    dispatch = dispatch[dispatch.INTERVENTION == 0].copy()
    dispatch["interval"] = pd.to_datetime(dispatch.SETTLEMENTDATE, format="%Y/%m/%d %H:%M:%S")
    predispatch = pd.read_parquet(DATA_DIR / "PUBLIC_DVD_PREDISPATCHPRICE_202101010000.parquet")
    return dispatch.sort_values("interval"), predispatch[predispatch.INTERVENTION == 0]


# The golden forecasts are v1's (no persistence); v2 differs only at the first leads (tests/test_forecast.py).
GOLDEN_ALGORITHM = common_pb2.AlgorithmRef(name=ALGORITHM.name, version="1")

def golden_request(case: GoldenCase) -> worker_pb2.ForecastRequest:
    """The ForecastRequest of ``case``: the cycle's shape (history with quality flags, the latest
    pre-dispatch run published before the decision), built straight from the MMS parquet files."""
    dispatch, predispatch = _market()
    series = dispatch[dispatch.REGIONID == case.region]
    intervals = list(series.interval.dt.to_pydatetime())
    history = series[COLUMNS[case.product]].to_numpy(np.float64)[case.origin - case.history:case.origin].copy()
    if case.flat:
        history[:] = 42.0
    missing = np.random.default_rng(case.origin).random(history.size) < case.missing_share
    missing[:case.leading_gap] = True
    decision_time = intervals[case.origin - 1] + timedelta(seconds=30)
    first_interval = intervals[case.origin] + FIVE_MIN
    published = predispatch[(predispatch.REGIONID == case.region) & (predispatch.LASTCHANGED <= decision_time)]
    run = published[published.PREDISPATCH_RUN_DATETIME == published.PREDISPATCH_RUN_DATETIME.max()]
    run = run.sort_values("DATETIME")
    quality = np.where(missing, common_pb2.DATA_QUALITY_MISSING, common_pb2.DATA_QUALITY_ON_TIME)
    return worker_pb2.ForecastRequest(
        request_id=case.name, algorithm=GOLDEN_ALGORITHM, region=case.region, product=case.product,
        decision_time=to_timestamp(decision_time), first_interval=to_timestamp(first_interval),
        horizon_intervals=case.horizon, quantiles=list(case.quantiles),
        history=market_data_pb2.ProductPriceHistory(
            product=case.product, first_interval=to_timestamp(intervals[case.origin - case.history]),
            price=np.where(missing, 0.0, history).tolist(), quality=quality.tolist()),
        predispatch=market_data_pb2.PredispatchForecast(
            product=case.product, period=[to_timestamp(p) for p in run.DATETIME.dt.to_pydatetime()],
            price=run[COLUMNS[case.product]].to_numpy(np.float64).tolist()),
    )


Forecaster = Callable[[worker_pb2.ForecastRequest], worker_pb2.ForecastResult]


def write_golden_forecasts(path: Path = GOLDEN_PATH, forecaster: Forecaster = run_forecast_v1) -> None:
    """Write ``forecaster``'s output of every golden case to ``path`` (prices $/MWh, $/MW/h)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prices = {case.name: forecast_from_result(forecaster(golden_request(case))).price for case in golden_cases()}
    np.savez_compressed(path, **prices)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN_PATH) as stored:
        return {name: stored[name] for name in stored.files}


def test_the_golden_file_covers_every_case(golden: dict[str, np.ndarray]) -> None:
    assert sorted(golden) == sorted(case.name for case in golden_cases())


@pytest.mark.parametrize("case", golden_cases(), ids=lambda case: case.name)
def test_forecasts_equal_the_reference_implementation(case: GoldenCase, golden: dict[str, np.ndarray]) -> None:
    price = forecast_from_result(run_forecast_v1(golden_request(case))).price
    expected = golden[case.name]
    assert price.shape == expected.shape
    np.testing.assert_allclose(price, expected, rtol=RTOL, atol=ATOL)


def test_the_same_request_gives_bit_identical_forecasts() -> None:
    for case in golden_cases()[::4]:
        request = golden_request(case)
        first, second = run_forecast_v1(request), run_forecast_v1(request)
        assert list(first.price) == list(second.price), case.name


# --------------------------------------------------------------------------------------------------
# The batched solver against statsmodels
# --------------------------------------------------------------------------------------------------


def problems_of(history: np.ndarray, history_first: datetime, max_lead: int = 289) -> LeadProblems:
    """The forecaster's stacked lead problems for a price history ($/MWh or $/MW/h; NaN = missing)."""
    scale = max(float(np.nanmedian(np.abs(history))), 1.0)
    z_history = np.arcsinh(history / scale)
    start = history_first.hour * 60 + history_first.minute
    minutes = (start + 5 * np.arange(history.size, dtype=np.int64)) % 1440
    valid_count = int(np.count_nonzero(np.isfinite(history)))
    problems = lead_problems(z_history, minutes, max_lead,
                             use_harmonics=history.size >= INTERVALS_PER_DAY and valid_count >= 144,
                             use_seasonal=history.size >= 2 * INTERVALS_PER_DAY)
    assert problems is not None
    return problems


def real_history(case: GoldenCase) -> tuple[np.ndarray, datetime]:
    request = golden_request(case)
    prices = np.array(request.history.price, dtype=np.float64)
    prices[np.array(request.history.quality) == common_pb2.DATA_QUALITY_MISSING] = np.nan
    return prices, from_timestamp(request.history.first_interval)


SOLVER_CASES = [case for case in golden_cases() if case.name in {
    "SA1-ENERGY-d7", "SA1-RAISEREG-d15", "SA1-LOWER6SEC-d24", "TAS1-ENERGY", "SA1-ENERGY-holes",
    "SA1-RAISEREG-leading-gap-holes", "SA1-ENERGY-h400", "SA1-ENERGY-h200", "SA1-ENERGY-h40"}]


@pytest.mark.parametrize("case", SOLVER_CASES, ids=lambda case: case.name)
def test_the_batched_solver_gives_statsmodels_coefficients(case: GoldenCase) -> None:
    problems = problems_of(*real_history(case))
    coefficients, solvable = ols_batched(problems, problems.response)
    assert solvable.all()  # real designs take the fast path, so this compares it with statsmodels
    huber = huber_fit(problems)
    for index in range(problems.leads.size):
        response, design = problems.lead_rows(index)
        np.testing.assert_allclose(coefficients[index], sm.OLS(response, design).fit().params, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(huber[index], huber_fit_reference(response, design), rtol=1e-8, atol=1e-9)


def test_every_lead_sees_only_its_own_rows() -> None:
    history, first = real_history(golden_cases()[0])
    problems = problems_of(history, first, max_lead=2016)
    assert problems.leads.tolist() == [1, 2, 3, 6, 12, 24, 48, 96, 192, 286, 574, 1150]
    for index, lead in enumerate(problems.leads.tolist()):
        response, design = problems.lead_rows(index)
        reach = max(lead, 288 * -(-lead // 288))
        assert response.size == history.size - reach
        np.testing.assert_array_equal(design[:, -1], np.arcsinh(history / np.median(np.abs(history)))[
            reach - lead:history.size - lead])
        assert not problems.regressors[index][:, ~problems.valid[index]].any()


def flat_then_moving(length: int) -> np.ndarray:
    history = np.full(length, 12.5)
    history[-3:] = [14.0, 15.0, 16.0]
    return history


@pytest.mark.parametrize("history", [np.full(700, 12.5), flat_then_moving(700), np.zeros(700)],
                         ids=["flat", "flat-then-moving", "zeros"])
def test_degenerate_designs_are_solved_by_the_reference(history: np.ndarray) -> None:
    problems = problems_of(history, datetime(2021, 1, 1, 0, 5))
    _, solvable = ols_batched(problems, problems.response)
    assert not solvable.any()
    huber = huber_fit(problems)
    for index in range(problems.leads.size):
        np.testing.assert_array_equal(huber[index], huber_fit_reference(*problems.lead_rows(index)))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(min_value=2, max_value=60), leads=st.integers(min_value=1, max_value=5),
       ties=st.booleans(), seed=st.integers(min_value=0, max_value=10_000))
def test_masked_median_and_quantiles_are_numpys(rows: int, leads: int, ties: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 3, (leads, rows))
    if ties:
        values = np.round(values)
    first_row = rng.integers(0, rows - 1, leads)
    valid = np.arange(rows) >= first_row[:, None]
    levels = np.array([0.05, 0.1, 0.5, 0.9, 0.5])
    medians = masked_median(values, valid)
    quantiles = masked_quantiles(values, valid, levels)
    for index, first in enumerate(first_row.tolist()):
        assert medians[index] == np.median(values[index, first:])
        np.testing.assert_array_equal(quantiles[index], np.quantile(values[index, first:], levels))


def test_version_2_holds_the_last_price_at_the_first_leads_and_equals_version_1_beyond() -> None:
    """v2 = v1 + persistence exp(−lead/τ) towards the last known price (asinh space), per product family."""
    from algorithms.common.errors import InvalidRequestError
    from algorithms.market.forecast import PERSISTENCE_BY_VERSION, run_forecast

    pulled = 0
    for case in golden_cases():
        request = golden_request(case)
        v1 = forecast_from_result(run_forecast_v1(request)).price
        request.algorithm.version = "2"
        v2 = forecast_from_result(run_forecast(request)).price
        last = float(np.array(request.history.price)[-1])
        tau = PERSISTENCE_BY_VERSION["2"].scale_for(case.product)
        middle = len(case.quantiles) // 2
        far = int(12 * tau) + 1
        np.testing.assert_allclose(v2[far:], v1[far:], rtol=1e-3, atol=1e-2)
        # At the first lead the median moves from v1's towards the last price, never past it.
        low, high = sorted((v1[0, middle], last))
        assert low - 1e-9 <= v2[0, middle] <= high + 1e-9, (case.name, v1[0, middle], v2[0, middle], last)
        pulled += abs(v2[0, middle] - v1[0, middle]) > 1e-6
        with pytest.raises(InvalidRequestError, match="is not sarx-quantile v1"):
            run_forecast_v1(request)
    assert pulled >= len(golden_cases()) // 2


@settings(max_examples=60, deadline=None)
@given(seconds=st.lists(st.integers(min_value=1_500_000_000, max_value=1_900_000_000), min_size=1, max_size=20),
       nanos=st.integers(min_value=0, max_value=999_999_999), shift_s=st.integers(min_value=-10**6, max_value=10**6))
def test_predispatch_offsets_from_timestamps_are_those_of_their_datetimes(seconds: list[int], nanos: int,
                                                                          shift_s: int) -> None:
    stamps = [Timestamp(seconds=value, nanos=nanos) for value in seconds]
    first_interval = from_timestamp(Timestamp(seconds=seconds[0] + shift_s))
    as_datetimes = [from_timestamp(stamp) for stamp in stamps]
    read = market_times_of(stamps)
    assert read.astype(object).tolist() == as_datetimes
    np.testing.assert_array_equal(forecast._interval_offsets(read, first_interval),
                                  forecast._interval_offsets(as_datetimes, first_interval))


def test_quantile_levels_are_checked_once_and_shared_read_only() -> None:
    levels = forecast._check_quantile_levels([0.1, 0.5, 0.9])
    assert forecast._check_quantile_levels((0.1, 0.5, 0.9)) is levels
    assert not levels.flags.writeable and levels.tolist() == [0.1, 0.5, 0.9]
    for bad, message in (([0.5, 0.1], "strictly increasing"), ([0.0, 0.5], "strictly between"),
                         ([[0.1, 0.5]], "non-empty list"), ([], "non-empty list")):
        with pytest.raises(InvalidRequestError, match=message):
            forecast._check_quantile_levels(bad)
