"""Sites planning their own batteries: plan following in the simulator, the edge planner, and the
concentrators receiving forecasts (push and poll) and sending plans over the real gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest

from algorithms.fleet.fleet_types import SetpointBatch
from algorithms.fleet.site_plan_types import NO_VERSION
from services.fleet_gateway import FleetGateway, serve_gateway, wall_clock_ms
from services.health import wait_healthy
from services.security import EdgeSecurity
from settings import FleetSettings
from simulator.concentrators import ConcentratorStats, run_concentrators
from simulator.edge_planner import (
    EdgePlannerConfig,
    HeldForecasts,
    InvalidEdgePlannerConfigError,
    plan_for_sites,
    plan_prices_per_mwh,
    plan_start_ms,
    site_plan_inputs,
)
from simulator.homes import FleetSimulator, InvalidPlanError, SimulatorConfig
from simulator.population import make_site_parameters
from stack.ports import free_tcp_port
from vpp.v1 import fleet_pb2

QUIET = SimulatorConfig(offline_fraction=0.0, telemetry_late_probability=0.0, telemetry_duplicate_probability=0.0,
                        telemetry_reorder_probability=0.0, command_loss_probability=0.0, ack_late_probability=0.0)
MIDDAY = int(pd.Timestamp("2021-01-15 12:10", tz="Australia/Adelaide").value // 1_000_000)
HALF_HOUR_MS = 1_800_000
FIVE_MINUTES_MS = 300_000
SHORT_PLANS = EdgePlannerConfig(plan_horizon_intervals=4)
"""Two hours of half-hour intervals: enough to test, quick to plan."""


def forecast(version: int, start_ms: int, median: list[float], interval_minutes: int = 5) -> fleet_pb2.PriceForecast:
    """A forecast whose P50 is ``median`` (P10 and P90 are far from it, so using them would show)."""
    prices = [*(p - 1000.0 for p in median), *median, *(p + 1000.0 for p in median)]
    return fleet_pb2.PriceForecast(version=version, region="SA1", published_at_ms=start_ms, start_ms=start_ms,
                                   interval_minutes=interval_minutes, horizon_intervals=len(median),
                                   quantile=[0.1, 0.5, 0.9], price_per_mwh=prices)


def simulator(site_count: int = 8, start_ms: int = MIDDAY) -> FleetSimulator:
    return FleetSimulator(make_site_parameters(site_count, 5), QUIET, start_ms)


def setpoint(sim: FleetSimulator, row: int, kw: float, valid_for_ms: int, command_id: int) -> SetpointBatch:
    return SetpointBatch(site_ids=sim.parameters.site_ids[[row]], command_id=np.array([command_id]),
                         setpoint_kw=np.array([kw]), valid_until_ms=np.array([sim.now_ms + valid_for_ms]))


# -- the simulator follows plans ------------------------------------------------------------------


def test_sites_follow_their_plan_a_setpoint_overrides_it_and_after_the_plan_they_self_consume() -> None:
    planned, twin = simulator(), simulator()
    rows = np.array([0, 2, 4, 6])
    start = planned.now_ms
    planned.set_plans(rows, start, 60_000, np.tile([[1.0, -1.0]], (4, 1)))
    for sim in (planned, twin):
        sim.advance(start + 10_000)
    np.testing.assert_allclose(planned.true_battery_power_kw[rows], 1.0)
    np.testing.assert_allclose(planned.planned_power_kw[rows], 1.0)
    assert np.isnan(planned.planned_power_kw[[1, 3, 5, 7]]).all()
    np.testing.assert_allclose(planned.true_battery_power_kw[[1, 3, 5, 7]], twin.true_battery_power_kw[[1, 3, 5, 7]])

    for sim in (planned, twin):
        sim.deliver_setpoints(setpoint(sim, 0, 0.0, 20_000, command_id=1), start + 10_000)
        sim.advance(start + 15_000)
    assert planned.true_battery_power_kw[0] == 0.0  # the VPP setpoint wins over the plan
    np.testing.assert_allclose(planned.true_battery_power_kw[[2, 4, 6]], 1.0)

    for sim in (planned, twin):
        sim.advance(start + 65_000)  # setpoint expired, second plan interval
    np.testing.assert_allclose(planned.true_battery_power_kw[rows], -1.0)

    for sim in (planned, twin):
        sim.advance(start + 130_000)  # the plan has ended: self-consumption, as the twin that never planned
    assert np.isnan(planned.planned_power_kw).all()
    parameters = planned.parameters
    inside = np.ones(parameters.site_count, dtype=bool)
    for sim in (planned, twin):
        soc = sim.true_state_of_charge_kwh
        inside &= (soc > parameters.capacity_kwh * parameters.backup_reserve_fraction + 0.5) & (
            soc < parameters.capacity_kwh - 0.5)
    assert inside.sum() >= 4
    np.testing.assert_allclose(planned.true_battery_power_kw[inside], twin.true_battery_power_kw[inside])


def test_a_new_plan_replaces_the_old_one_and_unusable_plans_are_refused() -> None:
    sim = simulator()
    sim.set_plans(np.array([1]), sim.now_ms, 60_000, np.array([[0.5, 0.5, 0.5]]))
    sim.set_plans(np.array([1]), sim.now_ms, 60_000, np.array([[0.25]]))
    sim.advance(sim.now_ms + 70_000)
    assert np.isnan(sim.planned_power_kw[1])  # the shorter new plan ended; nothing of the old one is left
    sim.set_plans(np.array([2, 3]), np.array([sim.now_ms, sim.now_ms]), 60_000, np.array([[0.5], [-0.5]]))
    sim.clear_plans(np.array([2]))
    assert np.isnan(sim.planned_power_kw[2]) and sim.planned_power_kw[3] == -0.5
    with pytest.raises(InvalidPlanError, match="NaN"):
        sim.set_plans(np.array([0]), sim.now_ms, 60_000, np.array([[np.nan]]))
    with pytest.raises(InvalidPlanError, match="unique"):
        sim.set_plans(np.array([0, 0]), sim.now_ms, 60_000, np.zeros((2, 1)))
    with pytest.raises(InvalidPlanError, match="shape"):
        sim.set_plans(np.array([0, 1]), sim.now_ms, 60_000, np.zeros((3, 1)))
    with pytest.raises(InvalidPlanError, match="start_ms"):
        sim.set_plans(np.array([0, 1]), np.array([sim.now_ms] * 3), 60_000, np.zeros((2, 1)))
    with pytest.raises(InvalidPlanError, match="positive"):
        sim.set_plans(np.array([0]), sim.now_ms, 0, np.zeros((1, 1)))


def test_expected_pv_is_the_pv_model_and_expected_load_is_the_mean_of_the_realised_load() -> None:
    sim = FleetSimulator(make_site_parameters(4_000, 9), QUIET, MIDDAY)
    rows = np.arange(0, 4_000, 2)
    start = plan_start_ms(MIDDAY, 30)
    load_kw, pv_kw = sim.expected_load_and_pv_kw(rows, start, 3, 30)
    assert load_kw.shape == pv_kw.shape == (len(rows), 3)
    middle = start + HALF_HOUR_MS + HALF_HOUR_MS // 2  # middle of the second interval
    sim.advance(middle - 500)
    sim.advance(middle + 500)  # one physics step whose middle is the interval's middle
    np.testing.assert_allclose(pv_kw[:, 1], sim.true_pv_power_kw[rows], rtol=1e-12)
    assert pv_kw[:, 1].max() > 1.0  # midday in January: real output
    ratio = sim.true_load_power_kw[rows] / load_kw[:, 1]  # exp(noise − σ²/2), mean 1
    assert abs(float(ratio.mean()) - 1.0) < 0.03
    night_load, night_pv = sim.expected_load_and_pv_kw(rows[:5], start + 24 * HALF_HOUR_MS, 1, 30)  # 00:00 local
    assert (night_pv == 0).all() and (night_load > 0).all()


# -- the edge planner -----------------------------------------------------------------------------


def test_plan_prices_are_the_p50_averaged_over_plan_intervals_holding_its_ends() -> None:
    start = plan_start_ms(MIDDAY, 30)
    median = [10.0 * k for k in range(12)]  # one hour of 5-minute prices
    np.testing.assert_allclose(plan_prices_per_mwh(forecast(1, start, median), start, 3, 30), [25.0, 85.0, 110.0])
    late = forecast(1, start + 2 * FIVE_MINUTES_MS, median)  # starts 10 minutes into the plan
    np.testing.assert_allclose(plan_prices_per_mwh(late, start, 3, 30), [10.0, 65.0, 650.0 / 6])
    half_hourly = forecast(1, start, [100.0, 200.0], interval_minutes=30)
    np.testing.assert_allclose(plan_prices_per_mwh(half_hourly, start, 3, 30), [100.0, 200.0, 200.0])
    np.testing.assert_array_equal(plan_prices_per_mwh(None, start, 3, 30), [0.0, 0.0, 0.0])


def test_edge_planning_applies_the_plan_to_the_simulator() -> None:
    sim = simulator()
    rows = np.array([1, 3, 5])
    now = sim.now_ms
    plans = plan_for_sites(sim, rows, forecast(4, now, [300.0] * 24), now, SHORT_PLANS)
    assert plans.start_ms.tolist() == [plan_start_ms(now, 30)] * 3 and plans.start_ms[0] <= now
    assert plans.forecast_version.tolist() == [4] * 3
    assert plans.site_ids.tolist() == sim.parameters.site_ids[rows].tolist()
    interval = (now - int(plans.start_ms[0])) // HALF_HOUR_MS
    np.testing.assert_array_equal(sim.planned_power_kw[rows], plans.battery_power_kw[:, interval])
    assert np.isnan(sim.planned_power_kw[[0, 2, 4, 6, 7]]).all()
    sim.advance(now + 5_000)
    np.testing.assert_allclose(sim.true_battery_power_kw[rows], plans.battery_power_kw[:, interval], atol=1e-9)


def test_a_site_without_a_forecast_plans_its_bill_on_version_0_with_market_price_0() -> None:
    sim = simulator()
    rows = np.arange(8)
    inputs = site_plan_inputs(sim, rows, None, sim.now_ms, SHORT_PLANS)
    assert inputs.forecast_version == NO_VERSION
    np.testing.assert_array_equal(inputs.market_price_per_mwh, np.zeros(4))
    plans = plan_for_sites(sim, rows, None, sim.now_ms, SHORT_PLANS)
    assert (plans.forecast_version == NO_VERSION).all()
    bill_only = plan_for_sites(sim, rows, forecast(1, sim.now_ms, [5_000.0] * 24), sim.now_ms,
                               replace(SHORT_PLANS, market_share=0.0))
    np.testing.assert_allclose(plans.battery_power_kw, bill_only.battery_power_kw)


def test_a_site_that_missed_version_2_plans_on_version_1_and_says_so() -> None:
    sim = simulator()
    held = HeldForecasts()
    now = sim.now_ms
    first, second = forecast(1, now, [50.0] * 24), forecast(2, now, [900.0] * 24)
    assert held.hold(0, first) and held.hold(1, first) and held.hold(1, second)  # concentrator 0 misses v2
    assert not held.hold(1, first)  # an older version is not taken back
    plans = plan_for_sites(sim, np.array([0, 1]), held.forecast(0), now, SHORT_PLANS)
    assert plans.forecast_version.tolist() == [1, 1]
    inputs = site_plan_inputs(sim, np.array([0, 1]), held.forecast(0), now, SHORT_PLANS)
    np.testing.assert_allclose(inputs.market_price_per_mwh, 50.0)  # v1's P50, not v2's
    assert held.version(1) == 2 and held.version(7) == NO_VERSION


def test_storm_warnings_raise_the_reserve_of_the_warned_sites_only() -> None:
    sim = simulator()
    rows = np.arange(8)
    warned = np.array([True, False] * 4)
    plans = plan_for_sites(sim, rows, forecast(1, sim.now_ms, [20_000.0] * 24), sim.now_ms, SHORT_PLANS, warned)
    capacity = sim.parameters.capacity_kwh
    floor = np.minimum(sim.true_state_of_charge_kwh, 0.8 * capacity)  # never forced to discharge to it
    assert (plans.state_of_charge_kwh[warned] >= floor[warned, None] - 1e-6).all()
    assert (plans.state_of_charge_kwh[~warned, -1] < 0.8 * capacity[~warned]).any()  # 20,000 $/MWh: sell


def test_the_config_refuses_what_the_planner_cannot_use() -> None:
    with pytest.raises(InvalidEdgePlannerConfigError, match="multiple of 5"):
        EdgePlannerConfig(plan_interval_minutes=7)
    with pytest.raises(InvalidEdgePlannerConfigError, match="poll_interval_s"):
        EdgePlannerConfig(poll_interval_s=0.0)
    with pytest.raises(InvalidEdgePlannerConfigError, match="market_share"):
        EdgePlannerConfig(market_share=1.5)


# -- over the real gateway ------------------------------------------------------------------------

SITES = 50
CONCENTRATORS = 2


@dataclass
class Fleet:
    gateway: FleetGateway
    simulator: FleetSimulator
    stats: ConcentratorStats
    held: HeldForecasts
    address: str


@contextlib.asynccontextmanager
async def served_gateway(push: bool) -> AsyncIterator[Fleet]:
    parameters = make_site_parameters(SITES, 11)
    settings = FleetSettings(plan_interval_minutes=30, plan_horizon_intervals=SHORT_PLANS.plan_horizon_intervals)
    gateway = FleetGateway(parameters, settings)
    gateway.distribution.set_push(parameters.site_ids, push)
    port = free_tcp_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_gateway(gateway, port, stop, EdgeSecurity()))
    address = f"127.0.0.1:{port}"
    await wait_healthy(address, 20.0, EdgeSecurity())
    try:
        yield Fleet(gateway, FleetSimulator(parameters, QUIET, wall_clock_ms()), ConcentratorStats(), HeldForecasts(),
                    address)
    finally:
        stop.set()
        await server


@contextlib.asynccontextmanager
async def concentrators(fleet: Fleet, edge: EdgePlannerConfig, *, poll: bool = False) -> AsyncIterator[None]:
    stop = asyncio.Event()
    running = asyncio.create_task(run_concentrators(
        fleet.simulator, fleet.address, stop, concentrator_count=CONCENTRATORS, tick_s=0.2, stats=fleet.stats,
        security=EdgeSecurity(), edge=edge, poll=poll, held=fleet.held))
    try:
        await until(lambda: len(fleet.gateway.streams) == CONCENTRATORS)
        yield
    finally:
        stop.set()
        await running
        await until(lambda: not fleet.gateway.streams)


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def publish(fleet: Fleet, version: int) -> fleet_pb2.PublishForecastResponse:
    now = wall_clock_ms()
    return fleet.gateway.publish_forecast(forecast(version, now - now % FIVE_MINUTES_MS, [80.0 + version] * 24))


def stored_versions(fleet: Fleet) -> list[int]:
    stored: list[int] = fleet.gateway.distribution.plans.forecast_version.tolist()
    return stored


async def test_a_pushed_version_reaches_every_site_and_their_plans_come_back_stored_with_it() -> None:
    async with served_gateway(push=True) as fleet, concentrators(fleet, SHORT_PLANS):
        response = publish(fleet, 1)
        assert (response.streams_pushed, response.sites_pushed) == (CONCENTRATORS, SITES)
        await until(lambda: stored_versions(fleet) == [1] * SITES)
        assert fleet.gateway.distribution.held_version.tolist() == [1] * SITES
        assert set(fleet.stats.version_held_at_ms[1]) == {0, 1}
        stats = fleet.stats
        assert stats.forecasts_received == CONCENTRATORS and stats.polls_sent == 0
        assert stats.forecast_bytes_received == response.bytes_pushed
        await until(lambda: fleet.stats.plans_accepted == SITES)
        assert stats.plans_sent == SITES and stats.plans_quarantined == 0
        # The batteries follow the very plans the gateway stored.
        store = fleet.gateway.distribution.plans
        interval = (fleet.simulator.now_ms - int(store.start_ms[0])) // HALF_HOUR_MS
        np.testing.assert_array_equal(fleet.simulator.planned_power_kw, store.battery_power_kw[:, interval])


async def test_a_poll_mode_concentrator_gets_the_version_on_its_poll() -> None:
    async with served_gateway(push=False) as fleet:
        assert publish(fleet, 3).streams_pushed == 0  # before anybody connects
        async with concentrators(fleet, replace(SHORT_PLANS, poll_interval_s=0.3), poll=True):
            await until(lambda: stored_versions(fleet) == [3] * SITES)  # the poll right after connecting
            assert fleet.held.version(0) == fleet.held.version(1) == 3
            publish(fleet, 4)  # nothing is pushed: the next polls fetch it
            await until(lambda: stored_versions(fleet) == [4] * SITES)
            polls_then = fleet.stats.polls_sent
            await until(lambda: fleet.stats.polls_sent >= polls_then + 2)
        counters = fleet.gateway.distribution.counters
        assert counters.forecasts_pushed == 0 and counters.polls_answered == 2 * CONCENTRATORS
        assert fleet.stats.forecasts_received == 2 * CONCENTRATORS  # no answer to a poll with nothing new


async def test_a_concentrator_that_reconnects_gets_the_version_it_missed() -> None:
    async with served_gateway(push=True) as fleet:
        async with concentrators(fleet, SHORT_PLANS):
            publish(fleet, 1)
            await until(lambda: stored_versions(fleet) == [1] * SITES)
        assert publish(fleet, 2).streams_pushed == 0  # everybody is away
        assert fleet.held.version(0) == 1
        async with concentrators(fleet, SHORT_PLANS):  # the same devices come back
            await until(lambda: stored_versions(fleet) == [2] * SITES)
        assert set(fleet.stats.version_held_at_ms[2]) == {0, 1}
        assert fleet.stats.forecasts_received == 2 * CONCENTRATORS


async def test_sites_that_missed_a_version_keep_planning_on_the_one_they_hold() -> None:
    async with served_gateway(push=False) as fleet:
        publish(fleet, 1)
        edge = replace(SHORT_PLANS, poll_interval_s=600.0, replan_interval_s=0.2)  # one poll, frequent re-plans
        async with concentrators(fleet, edge, poll=True):
            await until(lambda: stored_versions(fleet) == [1] * SITES)
            publish(fleet, 2)  # nobody polls again in time
            runs = fleet.stats.plan_runs
            await until(lambda: fleet.stats.plan_runs >= runs + 2 * CONCENTRATORS)
            await until(lambda: fleet.stats.plans_accepted >= fleet.stats.plans_sent)
        assert fleet.gateway.distribution.latest_version == 2
        assert stored_versions(fleet) == [1] * SITES  # their plans say which version they were built on
        assert fleet.gateway.distribution.held_version.tolist() == [1] * SITES


async def test_a_storm_warning_in_the_forecast_raises_every_sites_reserve_in_its_plan() -> None:
    async with served_gateway(push=True) as fleet, concentrators(fleet, SHORT_PLANS):
        now = wall_clock_ms()
        stormy = forecast(1, now - now % FIVE_MINUTES_MS, [20_000.0] * 24)  # prices that pay to empty
        stormy.storm_warning = True
        fleet.gateway.publish_forecast(stormy)
        await until(lambda: stored_versions(fleet) == [1] * SITES)
        store = fleet.gateway.distribution.plans
        capacity = fleet.simulator.parameters.capacity_kwh
        # Since planning, the batteries followed the plans for a moment at most: their stored energy now is
        # at most what they planned from. Whatever the 20,000 $/MWh signal, no site plans to go below its
        # storm reserve (0.8 of capacity) or, if it is below that already, below where it is.
        floor = np.minimum(fleet.simulator.true_state_of_charge_kwh, 0.8 * capacity) - 1e-6
        assert (store.state_of_charge_kwh.min(axis=1) >= floor).all()
        assert (fleet.simulator.true_state_of_charge_kwh > fleet.simulator.parameters.backup_reserve_fraction
                * capacity + 0.5).any()  # some sites could have sold down to their own reserve
