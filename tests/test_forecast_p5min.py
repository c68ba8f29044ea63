"""sarx-quantile v3: P5MIN for the first hour, pre-dispatch beyond, and every data situation (P5MIN and
pre-dispatch, either, neither; a week of history, one day, one day with gaps) gives finite, ordered quantiles.

Histories and pre-dispatch runs are January 2021 SA1 (data/nem) as of a real decision; P5MIN runs are the
twenty real QLD1 runs of 9 October 2026 (data/p5min-extracts) or, for January 2021 (which predates P5MIN in
the data), a run holding the prices that were then dispatched, which is what P5MIN's first intervals come
close to.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache

import numpy as np
import pytest

from aemo.mms import load_market_data
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import to_timestamp
from algorithms.market.as_of import PublicationModel, build_snapshot
from algorithms.market.cycle_requests import forecast_request
from algorithms.market.forecast import (
    ENERGY_P5MIN_BLEND,
    FCAS_P5MIN_BLEND,
    forecast_from_result,
    run_forecast,
    run_forecast_v3,
)
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from bench.forecast_skill import P5MIN_CASES, run_p5min_cases, with_forecaster
from settings import load_settings
from tests.p5min_extracts import load_extracts
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2

V3 = common_pb2.AlgorithmRef(name="sarx-quantile", version="3")
V2 = common_pb2.AlgorithmRef(name="sarx-quantile", version="2")
DECISION = datetime(2021, 1, 15, 16, 55, 30)
FIRST_INTERVAL = datetime(2021, 1, 15, 17, 5)
QUANTILES = (0.05, 0.1, 0.5, 0.9, 0.95)
FIVE = timedelta(minutes=5)
HISTORIES = {"week": 2016, "one day": 288, "one day with gaps": 288}


@cache
def _january() -> tuple[DispatchPrices, PredispatchPrices]:
    return load_market_data(load_settings(environ={}).market_data.data_dir)


def _p5min_of_dispatched(dispatch: DispatchPrices, product: str) -> market_data_pb2.P5minForecast:
    """A P5MIN run published before DECISION (run time 17:00, 12 intervals) at the prices then dispatched."""
    run_time = datetime(2021, 1, 15, 17, 0)
    intervals = [run_time + FIVE * index for index in range(12)]
    prices = [dispatch.prices_at("SA1", moment)[product] for moment in intervals]
    return market_data_pb2.P5minForecast(product=product, run_time=to_timestamp(run_time),
                                         known_at_unix_ms=int(to_timestamp(DECISION).ToMilliseconds()) - 60_000,
                                         interval=[to_timestamp(moment) for moment in intervals], price=prices)


def _request(product: str, *, predispatch: bool, p5min: bool, history: str,
             algorithm: common_pb2.AlgorithmRef = V3) -> worker_pb2.ForecastRequest:
    dispatch, predispatch_prices = _january()
    missing: frozenset[datetime] = frozenset()
    if history == "one day with gaps":
        rng = np.random.default_rng(7)
        slots = [DECISION.replace(second=0) - FIVE * (1 + int(k)) for k in rng.choice(287, 40, replace=False)]
        missing = frozenset(moment.replace(minute=moment.minute - moment.minute % 5) for moment in slots)
    snapshot = build_snapshot(dispatch, predispatch_prices, region="SA1", dispatch_interval=FIRST_INTERVAL,
                              as_of=DECISION, history_intervals=HISTORIES[history],
                              publication=PublicationModel(dispatch_price_delay_s=20.0, missing_intervals=missing))
    if not predispatch:
        snapshot.ClearField("predispatch")
    if p5min:
        snapshot.p5min.append(_p5min_of_dispatched(dispatch, product))
    return forecast_request(snapshot, product, request_id=f"{product}-{history}", decision_time=DECISION,
                            first_interval=FIRST_INTERVAL, horizon_intervals=288, quantiles=QUANTILES,
                            algorithm=algorithm)


@pytest.mark.parametrize("history", list(HISTORIES))
@pytest.mark.parametrize(("predispatch", "p5min"), [(True, True), (True, False), (False, True), (False, False)],
                         ids=["p5min+predispatch", "predispatch only", "p5min only", "neither"])
@pytest.mark.parametrize("product", ["ENERGY", "RAISEREG"])
def test_every_data_situation_gives_finite_ordered_quantiles(product: str, predispatch: bool, p5min: bool,
                                                            history: str) -> None:
    request = _request(product, predispatch=predispatch, p5min=p5min, history=history)
    if history == "one day with gaps":
        assert np.isnan([p if q != common_pb2.DATA_QUALITY_MISSING else np.nan
                         for p, q in zip(request.history.price, request.history.quality, strict=True)]).sum() >= 30
    forecast = forecast_from_result(run_forecast_v3(request))
    assert forecast.price.shape == (288, len(QUANTILES))
    assert bool(np.isfinite(forecast.price).all())
    assert bool(np.all(np.diff(forecast.price, axis=1) >= 0))
    seen = np.concatenate([np.asarray(request.history.price), request.predispatch.price, request.p5min.price])
    # Never beyond the prices seen in the inputs.
    assert np.nanmin(seen) - 1e-6 <= forecast.price.min() and forecast.price.max() <= np.nanmax(seen) + 1e-6


@pytest.mark.parametrize("product", ["ENERGY", "RAISEREG"])
def test_p5min_pulls_the_first_hour_towards_it(product: str) -> None:
    with_p5min = forecast_from_result(run_forecast_v3(
        _request(product, predispatch=True, p5min=True, history="week"))).price
    without = forecast_from_result(run_forecast_v3(
        _request(product, predispatch=True, p5min=False, history="week"))).price
    p5min = np.asarray(_request(product, predispatch=True, p5min=True, history="week").p5min.price)
    covered = slice(0, 11)  # the run's intervals 17:05 .. 17:55 are the horizon's first eleven
    median = QUANTILES.index(0.5)
    closer = np.abs(with_p5min[covered, median] - p5min[1:])
    assert closer.mean() < np.abs(without[covered, median] - p5min[1:]).mean()
    # Beyond the run, v3 forecasts as before.
    np.testing.assert_allclose(with_p5min[11:], without[11:], rtol=1e-12)


@pytest.mark.parametrize("history", list(HISTORIES))
def test_without_p5min_version_3_is_version_2(history: str) -> None:
    v3 = forecast_from_result(run_forecast_v3(_request("ENERGY", predispatch=True, p5min=False, history=history)))
    request = _request("ENERGY", predispatch=True, p5min=True, history=history, algorithm=V2)
    v2 = forecast_from_result(run_forecast(request))  # v2 ignores the P5MIN run it is given
    np.testing.assert_array_equal(v3.price, v2.price)


def test_blend_priors_start_high_and_fall_over_the_hour() -> None:
    position = np.arange(12)
    for blend in (ENERGY_P5MIN_BLEND, FCAS_P5MIN_BLEND):
        weight = blend.weight(position)
        assert weight[0] == pytest.approx(blend.near)
        assert bool(np.all(np.diff(weight) < 0)) and weight[-1] > blend.far
    assert ENERGY_P5MIN_BLEND.near > FCAS_P5MIN_BLEND.near


@pytest.mark.parametrize(("change", "message"), [
    (lambda p5: p5.price.append(1.0), "p5min has 12 intervals but 13 prices"),
    (lambda p5: setattr(p5, "product", "RAISEREG"), "p5min is for 'RAISEREG'"),
    (lambda p5: p5.price.__setitem__(0, float("inf")), "p5min prices must be finite"),
    (lambda p5: p5.ClearField("run_time"), "no run_time"),
    (lambda p5: p5.interval[3].CopyFrom(p5.interval[2]), "strictly increasing"),
    (lambda p5: setattr(p5.interval[0], "seconds", p5.interval[0].seconds + 60), "not on the 5-minute"),
])
def test_malformed_p5min_is_a_clear_error(change: object, message: str) -> None:
    request = _request("ENERGY", predispatch=True, p5min=True, history="week")
    change(request.p5min)  # type: ignore[operator]
    with pytest.raises(InvalidRequestError, match=message):
        run_forecast_v3(request)


def test_p5min_extracts_first_hour_with_and_without_p5min() -> None:
    """On the twenty real QLD1 runs: each cycle decision (boundary + 30 s) forecasts the next hour with the
    newest run published by then ("P5MIN only": the data has no pre-dispatch) and without it ("neither"),
    scored against each later run's first interval (the data has no DISPATCHPRICE of that morning). The
    forecast with P5MIN lies closer to AEMO's P5MIN prices than the one without; MAE and pinball against
    the actual prices are printed for the README (run with -s)."""
    settings = with_forecaster(load_settings(environ={}), "sarx-quantile@3")
    results = {result.case.name: result.table for result in run_p5min_cases(settings, load_extracts(), region="QLD1")}
    assert set(results) == {case.name for case in P5MIN_CASES}
    for name, table in results.items():
        for method, mae, pinball in zip(table.methods, table.mae[0], table.pinball[0], strict=True):
            print(f"{name:22} {method:18} MAE {np.round(mae, 1).tolist()} pinball {np.round(pinball, 1).tolist()}")
    with_p5min, without = results["P5MIN only"], results["neither"]
    assert with_p5min.decisions == without.decisions >= 15
    assert with_p5min.n[0, 0].sum() == without.n[0, 0].sum() > 100
    # The data has no pre-dispatch: with and without it, the forecasts are the same.
    np.testing.assert_array_equal(results["P5MIN + pre-dispatch"].mae, with_p5min.mae)
    np.testing.assert_array_equal(results["pre-dispatch only"].mae, without.mae)
    # The P5MIN cases differ from the others: P5MIN reached the forecaster.
    assert not np.allclose(with_p5min.mae[0, 0], without.mae[0, 0])


def test_p5min_extracts_forecast_lies_closer_to_p5min() -> None:
    """At every cycle decision over the twenty runs, the median forecast of the intervals the newest known run
    covers is closer to that run's prices with it than without it."""
    extracts = load_extracts()
    history = extracts.first_interval_prices()
    nothing = PredispatchPrices.empty(history.products)
    closer = 0
    decisions = 0
    for minutes in range(5, 90, 5):
        decision = datetime(2026, 10, 9, 4, 0, 30) + timedelta(minutes=minutes)
        first = decision.replace(second=0) + 2 * FIVE
        run = extracts.latest_run("QLD1", decision)
        assert run is not None
        medians = {}
        for label, table in (("with", extracts), ("without", None)):
            snapshot = build_snapshot(history, nothing, region="QLD1", dispatch_interval=first, as_of=decision,
                                      history_intervals=288, publication=PublicationModel(dispatch_price_delay_s=20.0),
                                      p5min=table)
            request = forecast_request(snapshot, "ENERGY", request_id=label, decision_time=decision,
                                       first_interval=first, horizon_intervals=12, quantiles=QUANTILES, algorithm=V3)
            medians[label] = forecast_from_result(run_forecast_v3(request)).price[:, QUANTILES.index(0.5)]
        offsets = ((run.intervals - np.datetime64(first, "s")) // np.timedelta64(300, "s")).astype(int)
        inside = (offsets >= 0) & (offsets < 12)
        target = run.price[inside, 0]
        distance = {label: np.abs(median[offsets[inside]] - target).mean() for label, median in medians.items()}
        decisions += 1
        closer += distance["with"] < distance["without"]
        assert distance["with"] <= distance["without"] + 1e-9
    assert decisions == 17 and closer >= 15
