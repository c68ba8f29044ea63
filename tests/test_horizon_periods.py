"""A rolling horizon in periods (algorithms/market/horizon_periods.py), the dispatch LP on periods
(``period_intervals`` of algorithms/market/lp_matrix.py and optimise.py) and ``lp-spike-reserve`` v6."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.common.errors import InvalidRequestError
from algorithms.market import horizon_periods, optimise, spike_reserve
from algorithms.market.lp_matrix import build_dispatch_lp, highspy_available
from algorithms.market.optimise import DispatchPlan, PriceScenario, dispatch_spec, solve_dispatch
from algorithms.registry import default_registry
from settings import Settings
from tests.test_lp_matrix import random_prices, reference_battery
from tests.test_spike_reserve import deep_negative_forecast, request_v3, spiky_forecast
from vpp.v1 import common_pb2, worker_pb2

H = 5 / 60


def test_period_intervals_are_fine_intervals_then_blocks_with_a_shorter_last_one() -> None:
    counts = horizon_periods.period_intervals(288, 24, 6)
    assert counts.tolist() == [1] * 24 + [6] * 44
    assert horizon_periods.period_intervals(30, 4, 12).tolist() == [1, 1, 1, 1, 12, 12, 2]
    # A horizon shorter than the fine part: every interval its own period.
    assert horizon_periods.period_intervals(10, 24, 6).tolist() == [1] * 10
    for bad in ((0, 24, 6), (288, 0, 6), (288, 24, 0)):
        with pytest.raises(InvalidRequestError):
            horizon_periods.period_intervals(*bad)


@pytest.mark.parametrize("counts, message", [
    ([1, 0, 3], "at least one interval"),
    ([1, 2, 2], "cover 5 intervals"),
    ([1.0, 3.0], "whole numbers"),
    ([], "whole numbers"),
])
def test_checked_period_intervals_names_what_is_wrong(counts: list[float], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        horizon_periods.checked_period_intervals(np.asarray(counts), 4)


def test_inputs_go_onto_periods_and_plans_come_back_per_interval() -> None:
    counts = np.array([1, 2, 3], dtype=np.int64)
    series = np.array([10.0, 20.0, 40.0, 1.0, 2.0, 6.0])
    np.testing.assert_allclose(horizon_periods.mean_over_periods(series, counts), [10.0, 30.0, 3.0])
    np.testing.assert_array_equal(horizon_periods.min_over_periods(series, counts), [10.0, 20.0, 1.0])
    np.testing.assert_array_equal(horizon_periods.repeat_over_periods(np.array([5.0, 7.0, 9.0]), counts),
                                  [5.0, 7.0, 7.0, 9.0, 9.0, 9.0])
    # The SoC moves in equal steps within a period, from the previous period's end to its own.
    soc = horizon_periods.soc_over_intervals(100.0, np.array([110.0, 90.0, 120.0]), counts)
    np.testing.assert_allclose(soc, [110.0, 100.0, 90.0, 100.0, 110.0, 120.0])


def test_periods_of_one_interval_build_the_interval_lp_array_for_array() -> None:
    prices = random_prices(48, 3)
    caps = {"RAISE6SEC": np.full(48, 30.0)}
    plain = build_dispatch_lp(dispatch_spec(prices, reference_battery(), 100.0, 97.0, initial_net_mw=0.0,
                                            enablement_cap_mw=caps))
    ones = build_dispatch_lp(dispatch_spec(prices, reference_battery(), 100.0, 97.0, initial_net_mw=0.0,
                                           enablement_cap_mw=caps, period_intervals=np.ones(48, dtype=np.int64)))
    for name in ("cost", "col_lower", "col_upper", "row_lower", "row_upper"):
        np.testing.assert_array_equal(getattr(ones, name), getattr(plain, name))
    np.testing.assert_array_equal(ones.matrix.data, plain.matrix.data)
    np.testing.assert_array_equal(ones.matrix.indices, plain.matrix.indices)


def _revenue(plan: DispatchPlan, prices: dict[str, np.ndarray]) -> float:
    """What ``plan`` (per interval, MW) earns at the interval ``prices`` ($; the reference battery's MLFs are 1)."""
    energy = float(np.sum(H * prices["ENERGY"] * (plan.gen_mw - plan.load_mw)))
    return energy + sum(float(np.sum(H * prices[p] * plan.fcas[p])) for p in plan.fcas)


def _assert_physical_on_intervals(plan: DispatchPlan, initial_soc_mwh: float, counts: np.ndarray) -> None:
    """The plan, read back per interval, keeps the SoC balance in every interval, stays within the battery's
    bounds and holds one output per period."""
    battery = reference_battery()
    before = np.concatenate([[initial_soc_mwh], plan.state_of_charge_mwh[:-1]])
    change = battery.charge_efficiency * H * plan.load_mw - H / battery.discharge_efficiency * plan.gen_mw
    np.testing.assert_allclose(plan.state_of_charge_mwh - before, change, atol=1e-6)
    assert np.all(plan.state_of_charge_mwh >= battery.soc_min_mwh - 1e-6)
    assert np.all(plan.state_of_charge_mwh <= battery.soc_max_mwh + 1e-6)
    starts = horizon_periods.period_starts(counts)
    for series in (plan.gen_mw, plan.load_mw, *plan.fcas.values()):
        np.testing.assert_array_equal(series, np.repeat(series[starts], counts))


@pytest.mark.skipif(not highspy_available(), reason="solved by highspy")
def test_with_prices_constant_within_periods_the_period_plan_earns_the_interval_optimum() -> None:
    """The period LP is the interval LP restricted to one output per period; with prices constant within each
    period nothing is lost: averaging an interval plan over each period is feasible and earns the same."""
    counts = horizon_periods.period_intervals(96, 12, 6)
    rng = np.random.default_rng(5)
    prices = {"ENERGY": np.repeat(rng.normal(60.0, 90.0, len(counts)), counts)}
    battery = reference_battery()
    full = solve_dispatch(prices, battery, 100.0, 97.0, physical_intervals=0)
    periods = solve_dispatch(prices, battery, 100.0, 97.0, physical_intervals=0, period_intervals=counts)
    assert full.status == periods.status == "OPTIMAL"
    assert len(periods.gen_mw) == 96
    assert periods.objective_dollars == pytest.approx(full.objective_dollars, rel=1e-7)
    _assert_physical_on_intervals(periods, 100.0, counts)


@pytest.mark.skipif(not highspy_available(), reason="solved by highspy")
def test_on_any_prices_the_period_plan_is_an_interval_plan_earning_what_it_reports() -> None:
    counts = horizon_periods.period_intervals(96, 12, 6)
    prices = random_prices(96, 9)
    caps = {product: np.where(np.arange(96) % 5 == 0, 4.0, 40.0) for product in prices if product != "ENERGY"}
    battery = reference_battery()
    full = solve_dispatch(prices, battery, 100.0, 97.0, initial_net_mw=0.0, enablement_cap_mw=caps)
    periods = solve_dispatch(prices, battery, 100.0, 97.0, initial_net_mw=0.0, enablement_cap_mw=caps,
                             period_intervals=counts)
    assert full.status == periods.status == "OPTIMAL"
    assert periods.objective_dollars == pytest.approx(_revenue(periods, prices), rel=1e-9)
    assert periods.objective_dollars <= full.objective_dollars + 1e-6
    # Not a trivial restriction: on random prices the constant output within periods gives something up.
    assert periods.objective_dollars < full.objective_dollars - 1.0
    _assert_physical_on_intervals(periods, 100.0, counts)
    for product, cap in caps.items():  # each interval's depth cap holds, not only the period's mean
        assert np.all(periods.fcas[product] <= cap + 1e-9)
    for series in (periods.energy_value_per_mwh, periods.raise_capacity_value_per_mw,
                   periods.lower_capacity_value_per_mw):
        assert len(series) == 96 and np.all(np.isfinite(series))


@pytest.mark.skipif(not highspy_available(), reason="solved by highspy")
def test_a_soc_ceiling_that_follows_the_fastest_discharge_stays_feasible_and_holds_at_period_ends() -> None:
    """The room rule of lp-spike-reserve v3 keeps its ceiling at or above what the battery reaches discharging as fast
    as it can; holding each period's end to its smallest ceiling keeps that plan feasible (holding it at the start of
    the next period too would not: the next period's ceiling is lower)."""
    battery = reference_battery()
    counts = horizon_periods.period_intervals(48, 6, 6)
    start = battery.soc_max_mwh
    step = battery.power_mw * H / battery.discharge_efficiency
    fastest = np.maximum(start - step * np.arange(1, 49), battery.soc_min_mwh)
    ceiling = np.maximum(fastest, 60.0)
    prices = {"ENERGY": np.full(48, -20.0)}  # charging pays: the plan sits on its ceiling
    plan = solve_dispatch(prices, battery, start, battery.soc_min_mwh, soc_max_mwh_by_interval=ceiling,
                          period_intervals=counts)
    assert plan.status == "OPTIMAL"
    ends = np.cumsum(counts) - 1
    np.testing.assert_array_less(plan.state_of_charge_mwh[ends], ceiling[ends] + 1e-6)
    _assert_physical_on_intervals(plan, start, counts)
    # Within the period where the ceiling levels off at 60 MWh the SoC passes above it on its way down (the ceiling
    # holds at the period's end); from the next period on, both ends are at or below 60 MWh, so every interval is.
    level = int(np.argmax(fastest <= 60.0))
    crossing_end = int(ends[np.searchsorted(ends, level)])
    assert plan.state_of_charge_mwh[level] > 60.0 + 1.0
    assert np.all(plan.state_of_charge_mwh[crossing_end:] <= 60.0 + 1e-6)


@pytest.mark.skipif(not highspy_available(), reason="solved by highspy")
def test_scenarios_on_periods_are_averaged_like_the_first_path() -> None:
    counts = horizon_periods.period_intervals(48, 6, 6)
    prices, high = random_prices(48, 1), random_prices(48, 2, energy_mean=150.0)
    plan = solve_dispatch(prices, reference_battery(), 100.0, 97.0, initial_net_mw=0.0,
                          scenarios=[PriceScenario(0.2, high)], period_intervals=counts)
    assert plan.status == "OPTIMAL" and len(plan.gen_mw) == 48
    with pytest.raises(InvalidRequestError, match="47 intervals; expected 48"):
        solve_dispatch(prices, reference_battery(), 100.0, 97.0,
                       scenarios=[PriceScenario(0.2, {p: s[:47] for p, s in high.items()})], period_intervals=counts)


def test_period_intervals_that_do_not_cover_the_horizon_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="cover 47 intervals; the horizon has 48"):
        solve_dispatch(random_prices(48, 1), reference_battery(), 100.0, 97.0, period_intervals=[1] * 47)


def _naming(request: worker_pb2.OptimisationRequest, version: str) -> worker_pb2.OptimisationRequest:
    """A copy of ``request`` naming lp-spike-reserve ``version``."""
    copy = worker_pb2.OptimisationRequest()
    copy.CopyFrom(request)
    copy.algorithm.CopyFrom(common_pb2.AlgorithmRef(name=spike_reserve.NAME, version=version))
    return copy


@pytest.mark.skipif(not highspy_available(), reason="solved by highspy")
def test_v6_is_served_and_plans_v4s_problem_on_periods(settings: Settings) -> None:
    request = request_v3(settings, spiky_forecast())  # 96 intervals with a spiky upper tail
    request.price_tail_weight = 0.185
    handler = default_registry().resolve("optimisation", spike_reserve.NAME, "6")
    v6 = handler(_naming(request, "6"))
    assert isinstance(v6, worker_pb2.OptimisationResult)
    v4 = spike_reserve.run_optimisation_v4(_naming(request, "4"))
    assert v6.status == v4.status == worker_pb2.RESULT_STATUS_OPTIMAL
    assert v6.algorithm.version == "6"
    assert len(v6.gen_mw) == len(v6.state_of_charge_mwh) == request.horizon_intervals
    resolution = spike_reserve.HORIZON_RESOLUTION_BY_VERSION["6"]
    counts = horizon_periods.period_intervals(request.horizon_intervals, resolution.fine_intervals,
                                              resolution.block_intervals)
    starts = horizon_periods.period_starts(counts)
    np.testing.assert_array_equal(np.asarray(v6.gen_mw), np.repeat(np.asarray(v6.gen_mw)[starts], counts))
    # The same floor as v4: the spike reserve holds at the end of every interval.
    assert min(v6.state_of_charge_mwh) == pytest.approx(min(v4.state_of_charge_mwh), abs=1e-6)


@pytest.mark.skipif(not highspy_available(), reason="solved by highspy")
def test_v6_on_a_horizon_within_the_fine_part_is_v4_bit_for_bit(settings: Settings) -> None:
    request = request_v3(settings, spiky_forecast())
    request.price_tail_weight = 0.185
    short = worker_pb2.OptimisationRequest()
    short.CopyFrom(request)
    short.horizon_intervals = 24
    for forecast in short.forecasts:  # row-major [interval x quantile]: keep the first 24 intervals' rows
        del forecast.price[24 * len(forecast.quantiles):]
        forecast.horizon_intervals = 24
    v6 = spike_reserve.run_optimisation_v6(_naming(short, "6"))
    v4 = spike_reserve.run_optimisation_v4(_naming(short, "4"))
    assert v6.status == worker_pb2.RESULT_STATUS_OPTIMAL
    v6.algorithm.version = "4"
    assert v6.SerializeToString(deterministic=True) == v4.SerializeToString(deterministic=True)


def test_optimise_rejects_a_negative_physical_scope() -> None:
    with pytest.raises(InvalidRequestError, match="physical_intervals"):
        optimise.solve_dispatch(random_prices(12, 1), reference_battery(), 100.0, 97.0, physical_intervals=-1)


def test_periods_around_keep_marked_intervals_fine_and_cut_the_runs_between_them() -> None:
    fine = np.zeros(20, dtype=np.bool_)
    fine[:2] = True
    fine[9] = True
    assert horizon_periods.periods_around(fine, 4).tolist() == [1, 1, 4, 3, 1, 4, 4, 2]
    assert horizon_periods.periods_around(np.ones(3, dtype=np.bool_), 6).tolist() == [1, 1, 1]
    with pytest.raises(InvalidRequestError, match="at least one interval"):
        horizon_periods.periods_around(np.zeros(0, dtype=np.bool_), 6)
    with pytest.raises(InvalidRequestError, match="block_intervals"):
        horizon_periods.periods_around(fine, 0)


def test_v7_keeps_the_intervals_of_a_forecast_tail_at_five_minutes(settings: Settings) -> None:
    """spiky_forecast's P95 reaches $1,000/MWh in intervals 40-59 of 96: v7 plans them one by one, v6 by the half
    hour; both plan the first two hours one by one."""
    request = request_v3(settings, spiky_forecast())
    v6 = spike_reserve.request_period_intervals(request, spike_reserve.HORIZON_RESOLUTION_BY_VERSION["6"],
                                                spike_reserve.POLICY_V1, spike_reserve.ROOM_POLICY_V3)
    v7 = spike_reserve.request_period_intervals(request, spike_reserve.HORIZON_RESOLUTION_BY_VERSION["7"],
                                                spike_reserve.POLICY_V1, spike_reserve.ROOM_POLICY_V3)
    assert v6 is not None and v7 is not None
    assert v6.tolist() == [1] * 24 + [6] * 12
    assert v7.tolist() == [1] * 24 + [6, 6, 4] + [1] * 20 + [6] * 6
    handler = default_registry().resolve("optimisation", spike_reserve.NAME, "7")
    result = handler(_naming(request, "7"))
    assert isinstance(result, worker_pb2.OptimisationResult)
    assert result.status == worker_pb2.RESULT_STATUS_OPTIMAL and result.algorithm.version == "7"
    assert len(result.gen_mw) == request.horizon_intervals
    starts = horizon_periods.period_starts(v7)
    np.testing.assert_array_equal(np.asarray(result.gen_mw), np.repeat(np.asarray(result.gen_mw)[starts], v7))


def test_v8_plans_four_hours_one_by_one_then_v7s_periods(settings: Settings) -> None:
    """The same spiky forecast (P95 at $1,000/MWh in intervals 40-59 of 96): v8 plans the first four hours (48
    intervals) one by one, the spike's intervals after them too, and the rest by the half hour."""
    request = request_v3(settings, spiky_forecast())
    v8 = spike_reserve.request_period_intervals(request, spike_reserve.HORIZON_RESOLUTION_BY_VERSION["8"],
                                                spike_reserve.POLICY_V1, spike_reserve.ROOM_POLICY_V3)
    assert v8 is not None and v8.tolist() == [1] * 60 + [6] * 6
    result = default_registry().resolve("optimisation", spike_reserve.NAME, "8")(_naming(request, "8"))
    assert isinstance(result, worker_pb2.OptimisationResult)
    assert result.status == worker_pb2.RESULT_STATUS_OPTIMAL and result.algorithm.version == "8"
    np.testing.assert_array_equal(np.asarray(result.gen_mw)[60:], np.repeat(np.asarray(result.gen_mw)[60::6], 6))
    quiet = request_v3(settings, deep_negative_forecast())
    del quiet.forecasts[:]
    with pytest.raises(InvalidRequestError, match="no forecasts"):
        spike_reserve.run_optimisation_v8(_naming(quiet, "8"))


def test_v7_keeps_deeply_negative_intervals_fine_too(settings: Settings) -> None:
    request = request_v3(settings, deep_negative_forecast())  # P05 at -$600/MWh in intervals 40-59
    v7 = spike_reserve.request_period_intervals(request, spike_reserve.HORIZON_RESOLUTION_BY_VERSION["7"],
                                                spike_reserve.POLICY_V1, spike_reserve.ROOM_POLICY_V3)
    assert v7 is not None and v7.tolist() == [1] * 24 + [6, 6, 4] + [1] * 20 + [6] * 6
    without_room = spike_reserve.request_period_intervals(
        request, spike_reserve.HORIZON_RESOLUTION_BY_VERSION["7"], spike_reserve.POLICY_V1, None)
    assert without_room is not None and without_room.tolist() == [1] * 24 + [6] * 12


def test_v7_refuses_a_request_without_an_energy_forecast_as_v4_does(settings: Settings) -> None:
    request = request_v3(settings, spiky_forecast())
    del request.forecasts[:]
    for version, run in (("6", spike_reserve.run_optimisation_v6), ("7", spike_reserve.run_optimisation_v7)):
        with pytest.raises(InvalidRequestError, match="no forecasts"):
            run(_naming(request, version))


@pytest.mark.skipif(not highspy_available(), reason="solved by highspy")
def test_the_physical_scope_counts_intervals_and_covers_the_periods_that_start_within_it() -> None:
    """At -$200/MWh a relaxation burns energy by charging and discharging at once; the periods that start within
    the physical intervals never do (here the first three intervals: periods of 2 and 2 intervals)."""
    counts = np.array([2, 2, 4, 4], dtype=np.int64)
    prices = {"ENERGY": np.full(12, -200.0)}
    battery = reference_battery()
    plan = solve_dispatch(prices, battery, battery.soc_max_mwh, battery.soc_min_mwh, physical_intervals=3,
                          period_intervals=counts)
    relaxed = solve_dispatch(prices, battery, battery.soc_max_mwh, battery.soc_min_mwh, physical_intervals=0,
                             period_intervals=counts)
    assert plan.status == relaxed.status == "OPTIMAL"
    assert optimise.simultaneous_intervals(relaxed.gen_mw, relaxed.load_mw).size > 0
    assert optimise.simultaneous_intervals(plan.gen_mw[:4], plan.load_mw[:4]).size == 0
