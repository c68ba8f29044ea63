"""Backtest strategies: names checked against the registry, parameters typed and checked, files and flags."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from backtest.strategy import (
    AlgorithmChoice,
    StrategyError,
    available_algorithms,
    check_parameters,
    parameter_flags,
    parse_assignment,
    parse_choice,
    resolve_strategy,
    strategy_from_dict,
    toml_literal,
)
from settings import Settings, load_settings


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(environ={})


def test_the_default_strategy_is_the_configured_one(settings: Settings) -> None:
    strategy = resolve_strategy(settings)
    assert strategy.forecaster == AlgorithmChoice(settings.cycle.forecast_algorithm,
                                                  settings.cycle.forecast_algorithm_version)
    assert strategy.optimiser == AlgorithmChoice(settings.cycle.optimiser_algorithm,
                                                 settings.cycle.optimiser_algorithm_version)
    assert str(strategy.bid_builder) == "schedule@1"
    assert strategy.parameters == ()
    assert strategy.label == "sarx-quantile@6 + lp-spike-reserve@4 + schedule@1"


def test_a_bare_name_takes_its_newest_version_and_unknown_names_list_what_exists() -> None:
    available = ["alpha@1", "beta@1", "beta@10", "beta@2", "gamma@x"]
    assert parse_choice("alpha", "forecast", available) == AlgorithmChoice("alpha", "1")
    assert parse_choice("beta@2", "forecast", available) == AlgorithmChoice("beta", "2")
    assert parse_choice("beta", "forecast", available) == AlgorithmChoice("beta", "10")
    assert parse_choice("gamma", "forecast", available) == AlgorithmChoice("gamma", "x")
    available = ["alpha@1", "beta@1", "beta@2"]
    with pytest.raises(StrategyError, match=r"unknown forecast 'gamma'; available: alpha@1, beta@1, beta@2"):
        parse_choice("gamma", "forecast", available)
    with pytest.raises(StrategyError, match="unknown forecast version alpha@3"):
        parse_choice("alpha@3", "forecast", available)


def test_available_algorithms_come_from_the_registry() -> None:
    available = available_algorithms()
    assert {"sarx-quantile@1", "sarx-quantile@2", "sarx-quantile@4", "sarx-quantile@6"} <= set(available["forecast"])
    assert "lp-energy-fcas@1" in available["optimisation"]
    assert available["bid builder"] == ["schedule@1"]


def test_parameters_are_typed_and_checked(settings: Settings) -> None:
    checked = check_parameters({"horizon_intervals": 48, "forecast_quantiles": [0.1, 0.5, 0.9],
                                "degradation_cost_per_mwh": 2, "settings.bidding.rebid_materiality_mw": 3},
                               settings)
    assert checked == {"horizon_intervals": 48, "forecast_quantiles": (0.1, 0.5, 0.9),
                       "degradation_cost_per_mwh": 2.0, "settings.bidding.rebid_materiality_mw": 3.0}
    assert isinstance(checked["degradation_cost_per_mwh"], float)
    for raw, message in [({"horizon_intervals": 4.5}, "whole number"), ({"horizon_intervals": True}, "whole number"),
                         ({"optimiser_price_quantile": 1.5}, r"in \(0, 1\)"),
                         ({"forecast_quantiles": []}, "non-empty list"),
                         ({"region": "SA1"}, "unknown parameter 'region'"),
                         ({"settings.stack.sqs_port": 1}, "unknown settings table"),
                         ({"settings.cycle.forecast_algorithm": "x"}, "part of the strategy"),
                         ({"settings.cycle.horizon_intervals": 12}, "is a backtest parameter"),
                         ({"settings.battery.power_mw": "big"}, "finite number")]:
        with pytest.raises(StrategyError, match=message):
            check_parameters(raw, settings)


def test_forecast_source_is_a_parameter_when_the_engine_has_it(settings: Settings) -> None:
    from backtest.runs import supports_forecast_source

    if not supports_forecast_source():
        pytest.skip("the engine has no forecast_source yet")
    assert check_parameters({"forecast_source": "actual"}, settings) == {"forecast_source": "actual"}
    with pytest.raises(StrategyError, match="forecast_source must be one of"):
        check_parameters({"forecast_source": "oracle"}, settings)


def test_flags_win_over_the_file_and_the_file_over_the_configuration(settings: Settings, tmp_path: Path) -> None:
    params = tmp_path / "p.toml"
    params.write_text("horizon_intervals = 48\nterminal_value_per_mwh = 20.0\n[strategy]\n"
                      "forecaster = 'sarx-quantile'\n[settings.bidding]\nrebid_materiality_mw = 2.5\n")
    strategy = resolve_strategy(settings, parameter_file=params, assignments=["horizon_intervals=24"])
    assert strategy.parameter_map == {"horizon_intervals": 24, "terminal_value_per_mwh": 20.0,
                                      "settings.bidding.rebid_materiality_mw": 2.5}
    config = strategy.config("SA1", datetime(2021, 1, 15, 17, 0, 30), 3)
    assert (config.horizon_intervals, config.terminal_value_per_mwh, config.history_intervals) == (24, 20.0, None)
    applied = strategy.apply(settings)
    assert applied.bidding.rebid_materiality_mw == 2.5
    assert applied.cycle.forecast_algorithm == "sarx-quantile"
    assert settings.bidding.rebid_materiality_mw != 2.5


def test_parameter_files_that_cannot_be_used(settings: Settings, tmp_path: Path) -> None:
    cases = {"a = [1,\n": "not valid TOML", "[strategy]\nsolver = 'x'\n": r"unknown key 'solver' in \[strategy\]",
             "[other]\nx = 1\n": r"unknown table \[other\]", "settings = 3\n": "must be a table",
             "[strategy]\nforecaster = 3\n": "must be a string"}
    for content, message in cases.items():
        params = tmp_path / "p.toml"
        params.write_text(content)
        with pytest.raises(StrategyError, match=message):
            resolve_strategy(settings, parameter_file=params)
    with pytest.raises(StrategyError, match=r"parameter file .*missing\.toml"):
        resolve_strategy(settings, parameter_file=tmp_path / "missing.toml")


def test_assignments_take_toml_values() -> None:
    assert parse_assignment("forecast_quantiles=[0.1, 0.5]") == ("forecast_quantiles", [0.1, 0.5])
    assert parse_assignment(" horizon_intervals = 48 ") == ("horizon_intervals", 48)
    assert parse_assignment("forecast_source=actual") == ("forecast_source", "actual")
    with pytest.raises(StrategyError, match="not KEY=VALUE"):
        parse_assignment("horizon_intervals")
    with pytest.raises(StrategyError, match="not a TOML value"):
        parse_assignment("forecast_quantiles=[0.1,")


def test_flags_and_dicts_round_trip(settings: Settings) -> None:
    strategy = resolve_strategy(settings, assignments=[
        "forecast_quantiles=[0.05, 0.5, 0.95]", "horizon_intervals=36", "settings.bidding.rebid_materiality_mw=2"])
    assert strategy_from_dict(strategy.to_dict(), settings) == strategy
    flags = parameter_flags(strategy)
    assignments = [flag.removeprefix("--param ").strip("'") for flag in flags if flag.startswith("--param")]
    assert resolve_strategy(settings, assignments=assignments) == strategy
    assert toml_literal(True) == "true"
    assert toml_literal('say "hi"') == '"say \\"hi\\""'
