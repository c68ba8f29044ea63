"""Two-stage plans on price scenarios: the scenario LP (algorithms/market/lp_matrix.py ``build_scenario_lp``),
``solve_dispatch(scenarios=...)`` and ``lp-spike-reserve`` v4 (algorithms/market/spike_reserve.py)."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.common.errors import InvalidRequestError
from algorithms.market import optimise, price_scenarios, spike_reserve
from algorithms.market.lp_matrix import build_dispatch_lp, build_scenario_lp, highspy_available, solve_matrix_lp
from algorithms.market.optimise import PriceScenario, dispatch_spec, solve_dispatch
from algorithms.registry import default_registry
from settings import Settings
from tests.test_lp_matrix import random_prices, reference_battery
from tests.test_optimise import small_battery
from tests.test_spike_reserve import deep_negative_forecast, request_v3, spiky_forecast
from vpp.v1 import common_pb2, worker_pb2

pytestmark = pytest.mark.skipif(not highspy_available(), reason="the scenario LP is solved by highspy")

H = 5 / 60
TAIL = 0.185


def three_scenarios(seed: int) -> list[tuple[float, dict[str, np.ndarray]]]:
    """Three random price paths (ENERGY and the eight FCAS products, 48 intervals) with probabilities."""
    return [(weight, random_prices(48, seed + offset)) for offset, weight in enumerate((1 - 2 * TAIL, TAIL, TAIL))]


def test_one_scenario_is_the_dispatch_lp_array_for_array() -> None:
    spec = dispatch_spec(random_prices(48, 1), reference_battery(), 100.0, 97.0, initial_net_mw=0.0)
    alone, as_scenario = build_dispatch_lp(spec), build_scenario_lp([(1.0, spec)])
    for name in ("cost", "col_lower", "col_upper", "row_lower", "row_upper"):
        np.testing.assert_array_equal(getattr(as_scenario, name), getattr(alone, name))
    np.testing.assert_array_equal(as_scenario.matrix.data, alone.matrix.data)
    np.testing.assert_array_equal(as_scenario.matrix.indices, alone.matrix.indices)
    assert as_scenario.scenario_blocks == ()


def test_scenarios_share_the_first_interval_and_their_values_are_expected_values() -> None:
    battery = reference_battery()
    scenarios = three_scenarios(7)
    specs = [(weight, dispatch_spec(prices, battery, 100.0, 97.0, initial_net_mw=0.0)) for weight, prices in scenarios]
    lp = build_scenario_lp(specs)
    solution = solve_matrix_lp(lp, time_limit_s=30.0, interior_point=False)
    assert solution.status == "OPTIMAL"
    columns = len(build_dispatch_lp(specs[0][1]).cost)
    assert len(lp.cost) == 3 * columns and len(lp.scenario_blocks) == 2
    layout = lp.layout
    first_interval = [layout.gen.start, layout.load.start, *(layout.fcas(p).start for p in layout.fcas_products)]
    values = solution.column_values
    for block in lp.scenario_blocks:
        np.testing.assert_allclose(values[np.array(first_interval) + block.column_offset], values[first_interval],
                                   atol=1e-7)
    # The later intervals follow each scenario's own prices: the copies' plans differ.
    assert not np.allclose(values[columns:2 * columns][layout.gen], values[:columns][layout.gen], atol=1e-3)
    # Energy value: the sum of every copy's balance duals, each already weighted by its probability.
    duals = solution.row_duals
    expected = sum(duals[slice(lp.balance_rows.start + offset, lp.balance_rows.stop + offset)]
                   for offset in (0, *(block.row_offset for block in lp.scenario_blocks)))
    np.testing.assert_allclose(lp.energy_values(duals), expected)


def test_the_two_stage_optimum_is_never_below_the_blended_paths() -> None:
    """The blended path's plan, copied into every scenario, is feasible for the scenario LP and earns the same
    expected objective (revenue is linear in prices): the two-stage optimum can only be higher."""
    battery = reference_battery()
    scenarios = three_scenarios(11)
    blended: dict[str, np.ndarray] = {
        product: np.sum([weight * prices[product] for weight, prices in scenarios], axis=0)
        for product in scenarios[0][1]}
    blended_lp = build_dispatch_lp(dispatch_spec(blended, battery, 100.0, 97.0, initial_net_mw=0.0,
                                                 terminal_value_per_mwh=40.0))
    scenario_lp = build_scenario_lp([(weight, dispatch_spec(prices, battery, 100.0, 97.0, initial_net_mw=0.0,
                                                            terminal_value_per_mwh=40.0))
                                     for weight, prices in scenarios])
    one = solve_matrix_lp(blended_lp, time_limit_s=30.0, interior_point=False)
    two = solve_matrix_lp(scenario_lp, time_limit_s=30.0, interior_point=False)
    assert one.status == two.status == "OPTIMAL"
    copied = np.tile(one.column_values, 3)
    activity = scenario_lp.matrix.multiply(copied)
    assert np.all(activity >= scenario_lp.row_lower - 1e-6) and np.all(activity <= scenario_lp.row_upper + 1e-6)
    assert float(scenario_lp.cost @ copied) == pytest.approx(one.objective_bound, rel=1e-9)
    assert two.objective_bound >= one.objective_bound - 1e-6
    assert two.objective_bound > one.objective_bound + 1.0  # these paths peak at different times


def test_energy_is_held_for_the_peak_each_scenario_puts_elsewhere() -> None:
    """Energy for one interval at full power, $140/MWh now. The blend of the later intervals ($131.1 and $121.05)
    is below $140, so the blended plan sells now; but each scenario's best later price (low $50, central $120,
    high $400) averages $158.85 — the two-stage plan holds the energy."""
    battery = small_battery()
    energy_mwh = 10.0 * H / battery.discharge_efficiency
    low, central, high = (np.array([140.0, 0.0, 50.0]), np.array([140.0, 120.0, 60.0]),
                          np.array([140.0, 300.0, 400.0]))
    blended = TAIL * low + (1 - 2 * TAIL) * central + TAIL * high
    assert blended[0] > blended[1:].max()
    sells_now = solve_dispatch({"ENERGY": blended}, battery, energy_mwh, 0.0)
    holds = solve_dispatch({"ENERGY": central}, battery, energy_mwh, 0.0,
                           scenarios=[PriceScenario(TAIL, {"ENERGY": low}), PriceScenario(TAIL, {"ENERGY": high})])
    assert sells_now.status == holds.status == "OPTIMAL"
    assert sells_now.gen_mw[0] == pytest.approx(10.0) and holds.gen_mw[0] == pytest.approx(0.0, abs=1e-6)
    # The central scenario's own plan sells at its peak, interval 1.
    assert holds.state_of_charge_mwh[0] == pytest.approx(energy_mwh) and holds.gen_mw[1] == pytest.approx(10.0)


def test_the_shared_first_interval_is_physical() -> None:
    """A full battery and -$200/MWh now in every scenario: the relaxation burns energy by charging and discharging
    at once; the plan does not (the direction fixed on the first copy holds in every copy through the links)."""
    battery = small_battery()
    prices = [np.array([-200.0, 50.0, 80.0, 30.0]) + shift for shift in (0.0, -20.0, 60.0)]
    plan = solve_dispatch({"ENERGY": prices[0]}, battery, battery.soc_max_mwh, battery.soc_max_mwh * 0.5,
                          scenarios=[PriceScenario(0.25, {"ENERGY": prices[1]}),
                                     PriceScenario(0.25, {"ENERGY": prices[2]})])
    assert plan.status == "OPTIMAL"
    assert plan.relaxation_simultaneous_intervals >= 1
    assert plan.gen_mw[0] * plan.load_mw[0] == 0.0


def test_bad_scenarios_are_refused_with_the_reason() -> None:
    battery = small_battery()
    energy = np.array([10.0, 20.0, 30.0])
    with pytest.raises(InvalidRequestError, match="sum to less than 1"):
        solve_dispatch({"ENERGY": energy}, battery, 5.0, 0.0, scenarios=[PriceScenario(0.6, {"ENERGY": energy}),
                                                                         PriceScenario(0.4, {"ENERGY": energy})])
    with pytest.raises(InvalidRequestError, match="products"):
        solve_dispatch({"ENERGY": energy}, battery, 5.0, 0.0,
                       scenarios=[PriceScenario(0.2, {"ENERGY": energy, "RAISEREG": energy})])
    with pytest.raises(InvalidRequestError, match="intervals"):
        solve_dispatch({"ENERGY": energy}, battery, 5.0, 0.0, scenarios=[PriceScenario(0.2, {"ENERGY": energy[:2]})])
    with pytest.raises(InvalidRequestError, match="charge_energy_price"):
        solve_dispatch({"ENERGY": energy}, battery, 5.0, 0.0, charge_energy_price=energy + 1,
                       scenarios=[PriceScenario(0.2, {"ENERGY": energy})])
    with pytest.raises(ValueError, match="sum to 1"):
        build_scenario_lp([(0.5, dispatch_spec({"ENERGY": energy}, battery, 5.0, 0.0))])


def request_v4(settings: Settings, forecast: worker_pb2.ForecastResult) -> worker_pb2.OptimisationRequest:
    request = request_v3(settings, forecast)
    request.algorithm.CopyFrom(common_pb2.AlgorithmRef(name=spike_reserve.NAME, version="4"))
    return request


def test_scenario_prices_average_to_the_planning_prices(settings: Settings) -> None:
    request = request_v4(settings, spiky_forecast())
    central, tails = price_scenarios.quantile_scenarios(request)
    blended = optimise.planning_prices(request)
    assert [scenario.probability for scenario in tails] == [TAIL, TAIL]
    expected = (1 - 2 * TAIL) * central["ENERGY"] + sum(s.probability * s.prices["ENERGY"] for s in tails)
    np.testing.assert_allclose(expected, blended["ENERGY"], rtol=1e-12, atol=1e-9)
    assert np.all(tails[0].prices["ENERGY"] <= central["ENERGY"])
    assert np.all(tails[1].prices["ENERGY"] >= central["ENERGY"])


def test_v4_with_one_scenario_is_v3_bit_for_bit(settings: Settings) -> None:
    for forecast in (spiky_forecast(), deep_negative_forecast()):
        v3, v4 = request_v3(settings, forecast), request_v4(settings, forecast)
        v3.price_tail_weight = v4.price_tail_weight = 0.0
        three, four = spike_reserve.run_optimisation_v3(v3), spike_reserve.run_optimisation_v4(v4)
        four.algorithm.CopyFrom(three.algorithm)
        assert four.SerializeToString(deterministic=True) == three.SerializeToString(deterministic=True)


def test_v4_plans_on_scenarios_under_v3s_floor_and_room(settings: Settings) -> None:
    for forecast in (spiky_forecast(), deep_negative_forecast()):
        three = spike_reserve.run_optimisation_v3(request_v3(settings, forecast))
        four = spike_reserve.run_optimisation_v4(request_v4(settings, forecast))
        assert three.status == four.status == worker_pb2.RESULT_STATUS_OPTIMAL
        assert (four.algorithm.name, four.algorithm.version) == (spike_reserve.NAME, "4")
        assert four.gen_mw[0] * four.load_mw[0] == 0.0
        # The same floor and room bound the central scenario's plan: v3's SoC range holds.
        battery = request_v3(settings, forecast).battery
        soc = np.array(four.state_of_charge_mwh)
        assert soc.min() >= battery.soc_min_fraction * battery.energy_mwh - 1e-6
        assert soc.max() <= max(np.array(three.state_of_charge_mwh).max(), soc[0]) + 1e-6
        assert list(four.state_of_charge_mwh) != list(three.state_of_charge_mwh)


def test_v4_is_served_and_refuses_another_versions_request(settings: Settings) -> None:
    registry = default_registry()
    assert f"{spike_reserve.NAME} v4" in registry.known("optimisation")
    with pytest.raises(InvalidRequestError, match="is not lp-spike-reserve v4"):
        spike_reserve.run_optimisation_v4(request_v3(settings, spiky_forecast()))


def test_shifted_path_moves_everything_after_the_first_interval() -> None:
    path = np.array([5.0, 10.0, 20.0, 30.0, 40.0])
    np.testing.assert_array_equal(price_scenarios.shifted_path(path, 2), [5.0, 10.0, 10.0, 10.0, 20.0])
    np.testing.assert_array_equal(price_scenarios.shifted_path(path, -2), [5.0, 30.0, 40.0, 40.0, 40.0])
    np.testing.assert_array_equal(price_scenarios.shifted_path(path, 0), path)


def test_timing_scenarios_are_the_planning_path_later_and_earlier(settings: Settings) -> None:
    request = request_v4(settings, spiky_forecast())
    planned, shifted = price_scenarios.timing_scenarios(request)
    blended = optimise.planning_prices(request)
    np.testing.assert_array_equal(planned["ENERGY"], blended["ENERGY"])
    assert [s.probability for s in shifted] == [0.25, 0.25]
    later, earlier = shifted[0].prices["ENERGY"], shifted[1].prices["ENERGY"]
    np.testing.assert_array_equal(later[13:], blended["ENERGY"][1:-12])
    np.testing.assert_array_equal(earlier[1:-12], blended["ENERGY"][13:])
    assert later[0] == earlier[0] == blended["ENERGY"][0]
    with pytest.raises(InvalidRequestError, match="shift_probability"):
        price_scenarios.timing_scenarios(request, shift_probability=0.5)


def test_v5_plans_on_timing_scenarios_under_v3s_floor_and_room(settings: Settings) -> None:
    forecast = spiky_forecast()
    request = request_v4(settings, forecast)
    request.algorithm.version = "5"
    five = spike_reserve.run_optimisation_v5(request)
    assert five.status == worker_pb2.RESULT_STATUS_OPTIMAL
    assert (five.algorithm.name, five.algorithm.version) == (spike_reserve.NAME, "5")
    assert five.gen_mw[0] * five.load_mw[0] == 0.0
    three = spike_reserve.run_optimisation_v3(request_v3(settings, forecast))
    assert list(five.state_of_charge_mwh) != list(three.state_of_charge_mwh)
    assert f"{spike_reserve.NAME} v5" in default_registry().known("optimisation")
