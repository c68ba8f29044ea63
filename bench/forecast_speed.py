"""Speed of the price forecaster: ``run_forecast`` per product, end to end, on realistic requests.

Requests are built exactly as the backtest builds them: the cycle's as-of market snapshot
(:func:`bench.forecast_skill.cycle_snapshot`, i.e. :func:`services.market_data.build_snapshot` with the
configured publication model and history length) and :func:`algorithms.market.cycle_requests.forecast_request`
for every product of the data, at decision times spread over the month. The timing covers
:func:`algorithms.market.forecast.run_forecast` only (protobuf in, protobuf out), on the calling thread.

Run ``python -m bench.forecast_speed [decisions] [repeats]``; it prints milliseconds per product.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aemo.mms import load_market_data
from algorithms.common.nem_time import INTERVAL
from algorithms.market.cycle_requests import forecast_request
from algorithms.market.forecast import run_forecast
from algorithms.market.forecast_skill import spread_decision_times
from bench.forecast_skill import WARMUP_DAYS, cycle_snapshot
from settings import Settings, load_settings
from vpp.v1 import common_pb2, worker_pb2


@dataclass(frozen=True)
class SpeedFigures:
    """Wall time of ``run_forecast`` per request (milliseconds), over ``requests`` requests x ``repeats``,
    and the process CPU time per request (less sensitive to other processes on a shared machine)."""

    requests: int
    repeats: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    cpu_mean_ms: float


def speed_requests(settings: Settings, *, region: str | None = None, decisions: int = 8,
                   horizon_intervals: int = 288, seed: int = 0) -> list[worker_pb2.ForecastRequest]:
    """The backtest's forecast requests (every product of the data) at ``decisions`` decision times (AEST)
    spread over the data after WARMUP_DAYS days; prices $/MWh (ENERGY) or $/MW/h (FCAS)."""
    cycle = settings.cycle
    dispatch, predispatch = load_market_data(settings.market_data.data_dir)
    region = region or cycle.region
    first_end: datetime = dispatch.intervals[0].astype(datetime)
    last_end: datetime = dispatch.intervals[-1].astype(datetime)
    times = spread_decision_times(first_end - INTERVAL + timedelta(days=WARMUP_DAYS), last_end - INTERVAL,
                                  decisions, schedule_offset_s=cycle.schedule_offset_s, seed=seed)
    algorithm = common_pb2.AlgorithmRef(name=cycle.forecast_algorithm, version=cycle.forecast_algorithm_version)
    requests: list[worker_pb2.ForecastRequest] = []
    for decision_time in times:
        first_interval, snapshot = cycle_snapshot(dispatch, predispatch, settings, region, decision_time)
        for product in snapshot.products:
            requests.append(forecast_request(
                snapshot, product, request_id=f"speed/{decision_time:%Y%m%dT%H%M%S}/{product}",
                decision_time=decision_time, first_interval=first_interval, horizon_intervals=horizon_intervals,
                quantiles=cycle.forecast_quantiles, algorithm=algorithm))
    return requests


def time_forecasts(requests: Sequence[worker_pb2.ForecastRequest], repeats: int = 3) -> SpeedFigures:
    """Time ``run_forecast`` on every request ``repeats`` times (after one warm-up pass); milliseconds."""
    for request in requests:
        run_forecast(request)
    samples: list[float] = []
    cpu_started = time.process_time()
    for _ in range(repeats):
        for request in requests:
            started = time.perf_counter()
            run_forecast(request)
            samples.append((time.perf_counter() - started) * 1000)
    cpu_ms = (time.process_time() - cpu_started) * 1000
    ordered = sorted(samples)
    return SpeedFigures(requests=len(requests), repeats=repeats, mean_ms=statistics.fmean(samples),
                        median_ms=statistics.median(samples), p90_ms=ordered[int(0.9 * (len(ordered) - 1))],
                        cpu_mean_ms=cpu_ms / len(samples))


def main(argv: Sequence[str]) -> int:
    """Print the per-product timing of ``run_forecast`` (arguments: decisions, repeats)."""
    decisions = int(argv[0]) if argv else 8
    repeats = int(argv[1]) if len(argv) > 1 else 3
    requests = speed_requests(load_settings(), decisions=decisions)
    figures = time_forecasts(requests, repeats)
    print(f"run_forecast: {figures.requests} requests x {figures.repeats} repeats; per product "
          f"mean {figures.mean_ms:.2f} ms, median {figures.median_ms:.2f} ms, p90 {figures.p90_ms:.2f} ms; "
          f"CPU {figures.cpu_mean_ms:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
