"""The push-versus-poll bench: its arithmetic, and a tiny run over the real gateway."""

from __future__ import annotations

import numpy as np

from bench.distribution import (
    bench_forecast,
    format_table,
    run_distribution_bench_async,
    share_time_s,
    time_to_share_s,
)
from services.fleet_codec import median_price_per_mwh
from services.fleet_gateway import wall_clock_ms
from simulator.edge_planner import EdgePlannerConfig
from vpp.v1 import fleet_pb2


def test_time_to_a_share_of_sites_weighs_concentrators_by_their_sites() -> None:
    sites = np.array([10, 80, 10])
    held_at = {0: 1_000, 1: 3_000, 2: 2_000}
    assert time_to_share_s(held_at, sites, 0, 0.5) == 3.0   # the big one decides
    assert time_to_share_s(held_at, sites, 0, 0.1) == 1.0
    assert time_to_share_s(held_at, sites, 500, 0.2) == 1.5
    assert np.isnan(time_to_share_s({0: 1_000, 2: 2_000}, sites, 0, 0.99))  # concentrator 1 never held it
    assert np.isnan(time_to_share_s({}, sites, 0, 0.5))


def test_time_to_a_share_of_stored_plans() -> None:
    received = np.array([5_000, 1_000, -1, 3_000])
    done = np.array([True, True, False, True])
    assert share_time_s(received, done, 0, 0.5) == 3.0
    assert share_time_s(received, done, 0, 0.75) == 5.0
    assert np.isnan(share_time_s(received, done, 0, 0.99))


def test_the_bench_forecast_is_a_day_of_five_minute_quantiles() -> None:
    now = wall_clock_ms()
    forecast = bench_forecast(3, now)
    assert forecast.start_ms <= now < forecast.start_ms + 300_000 and forecast.start_ms % 300_000 == 0
    assert len(forecast.price_per_mwh) == 3 * 288
    median = median_price_per_mwh(forecast)
    prices = np.asarray(forecast.price_per_mwh).reshape(3, 288)
    assert (prices[0] < median).all() and (median < prices[2]).all()


async def test_a_tiny_run_over_the_real_gateway_measures_both_modes() -> None:
    concentrators = 2
    edge = EdgePlannerConfig(plan_horizon_intervals=4)
    results = await run_distribution_bench_async(sites=40, concentrators=concentrators, poll_interval_s=0.5,
                                                 settle_timeout_s=15.0, edge=edge)
    assert set(results) == {"planning", "push", "push_reconnect", "poll", "poll_reconnect"}
    forecast_bytes = fleet_pb2.ConnectResponse(forecast=bench_forecast(1, wall_clock_ms())).ByteSize()
    for scenario in ("push", "push_reconnect", "poll", "poll_reconnect"):
        figures = results[scenario]
        for key in ("hold_p50_s", "hold_p99_s", "plans_stored_p99_s"):
            assert np.isfinite(figures[key]) and figures[key] >= 0, (scenario, key)
        assert figures["hold_p50_s"] <= figures["hold_p99_s"]
        # One forecast per stream and version, in both modes, after a publication and after a storm alike.
        assert figures["forecast_messages"] == concentrators
        assert figures["forecast_bytes"] == concentrators * forecast_bytes
        assert figures["plan_bytes"] > 0
    assert results["push"]["poll_messages"] == results["push_reconnect"]["poll_messages"] == 0
    assert results["poll"]["poll_messages"] >= concentrators  # at least one interval per concentrator
    assert results["poll_reconnect"]["poll_messages"] >= concentrators  # the poll right after connecting
    assert results["poll"]["polls_per_publication"] == concentrators * 900 / 0.5
    assert results["planning"]["sites"] == 40
    table = format_table(results)
    assert "push_reconnect" in table and "time to 99 % of sites holding it (s)" in table
