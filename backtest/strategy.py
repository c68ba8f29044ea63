"""A backtest *strategy*: which forecaster, optimiser and bid builder decide, and with which parameters.

A strategy names its three parts by name and version (``NAME@VERSION``; a bare ``NAME`` picks its newest
registered version) and carries a flat mapping of parameters:

* **Backtest overrides** — every field of :class:`backtest.engine.BacktestConfig` except the period and
  region (``history_intervals``, ``horizon_intervals`` in 5-minute intervals, ``forecast_quantiles``
  (levels in (0, 1)), ``optimiser_price_quantile``, ``optimiser_price_tail_weight`` ([0, 0.5)),
  ``degradation_cost_per_mwh`` and
  ``terminal_value_per_mwh`` ($/MWh), ``optimiser_time_limit_s`` (seconds), ``forecast_source``, ...).
  A parameter left out takes the configured value (``settings.cycle``).
* **Settings overrides** — ``settings.<table>.<key>`` for a key of the ``battery``, ``bidding`` or
  ``cycle`` table of the configuration (e.g. ``settings.bidding.rebid_materiality_mw``), applied to the
  settings the run uses.

Parameters come from a TOML file (top-level keys are backtest overrides, ``[settings.<table>]`` tables
settings overrides, an optional ``[strategy]`` table names the parts) and from ``KEY=VALUE`` flags whose
value is a TOML literal (``horizon_intervals=48``, ``forecast_quantiles=[0.1,0.5,0.9]``); flags win over
the file, the file over the configuration. Every name is checked against the worker handler registry
(:func:`algorithms.registry.default_registry`) and :data:`BID_BUILDERS`; every parameter against the
fields it overrides. Anything wrong is a :class:`StrategyError` whose message says what and lists what
exists.
"""

from __future__ import annotations

import math
import shlex
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from algorithms.registry import HandlerRegistry, default_registry
from backtest.engine import BacktestConfig, BacktestError
from settings import Settings

ParamValue = bool | int | float | str | tuple[float, ...]

# The bid builders the engine can run, (name, version) -> what it does. The engine builds every bid with
# algorithms.market.bid_builder.build_bid (safe bid as fallback): the "schedule" strategy.
BID_BUILDERS: dict[tuple[str, str], str] = {
    ("schedule", "1"): "planned MW in the cheapest GEN / dearest LOAD band, SoC-deliverable headroom at spike "
                       "prices (algorithms/market/bid_builder.py)",
}
# Registry kinds of the strategy's parts (bid builders are not worker handlers).
FORECAST_KIND = "forecast"
OPTIMISATION_KIND = "optimisation"
BID_BUILDER_KIND = "bid builder"
# BacktestConfig fields that are not strategy parameters: the run's period and region, and the operator's
# controls over the period (given to the engine by whoever replays them, not a property of a strategy).
_PERIOD_FIELDS = ("region", "first_decision", "decisions", "operator_controls")
SETTINGS_PREFIX = "settings."
# Settings tables a strategy may override, and keys that have a dedicated place instead.
SETTINGS_TABLES = ("battery", "bidding", "cycle")
_CYCLE_KEYS_ELSEWHERE = {
    "forecast_algorithm": "--forecaster / [strategy] forecaster",
    "forecast_algorithm_version": "--forecaster NAME@VERSION / [strategy] forecaster",
    "optimiser_algorithm": "--optimiser / [strategy] optimiser",
    "optimiser_algorithm_version": "--optimiser NAME@VERSION / [strategy] optimiser",
}
STRATEGY_TABLE_KEYS = ("forecaster", "optimiser", "bid_builder")


class StrategyError(ValueError):
    """A strategy or parameter that cannot be used; the message says which and what is available."""


@dataclass(frozen=True, order=True)
class AlgorithmChoice:
    """One part of a strategy: an algorithm by name and version."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Strategy:
    """Forecaster, optimiser and bid builder (each by name and version) and the parameters they run with.

    ``parameters`` are sorted ``(key, value)`` pairs (see the module docstring): backtest overrides and
    ``settings.<table>.<key>`` settings overrides. Build one with :func:`resolve_strategy`, which checks
    every name and parameter.
    """

    forecaster: AlgorithmChoice
    optimiser: AlgorithmChoice
    bid_builder: AlgorithmChoice
    parameters: tuple[tuple[str, ParamValue], ...] = ()

    @property
    def label(self) -> str:
        """``forecaster + optimiser + bid builder``, each as ``NAME@VERSION``."""
        return f"{self.forecaster} + {self.optimiser} + {self.bid_builder}"

    @property
    def parameter_map(self) -> dict[str, ParamValue]:
        """The parameters as a dict (key -> value)."""
        return dict(self.parameters)

    def backtest_overrides(self) -> dict[str, ParamValue]:
        """The parameters that override :class:`BacktestConfig` fields."""
        return {k: v for k, v in self.parameters if not k.startswith(SETTINGS_PREFIX)}

    def settings_overrides(self) -> dict[tuple[str, str], ParamValue]:
        """The parameters that override settings, keyed by (table, key)."""
        overrides: dict[tuple[str, str], ParamValue] = {}
        for key, value in self.parameters:
            if key.startswith(SETTINGS_PREFIX):
                table, _, name = key.removeprefix(SETTINGS_PREFIX).partition(".")
                overrides[(table, name)] = value
        return overrides

    def config(self, region: str, first_decision: datetime, decisions: int) -> BacktestConfig:
        """The engine's configuration of ``decisions`` decisions from ``first_decision`` (naive AEST)."""
        try:
            return BacktestConfig(region=region, first_decision=first_decision, decisions=decisions,
                                  **self.backtest_overrides())  # type: ignore[arg-type]
        except BacktestError as error:
            raise StrategyError(str(error)) from None

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with this strategy's algorithms in ``settings.cycle`` and its settings overrides."""
        by_table: dict[str, dict[str, ParamValue]] = {}
        for (table, key), value in self.settings_overrides().items():
            by_table.setdefault(table, {})[key] = value
        cycle = replace(settings.cycle, **by_table.pop("cycle", {}),  # type: ignore[arg-type]
                        forecast_algorithm=self.forecaster.name,
                        forecast_algorithm_version=self.forecaster.version,
                        optimiser_algorithm=self.optimiser.name,
                        optimiser_algorithm_version=self.optimiser.version)
        battery = replace(settings.battery, **by_table.pop("battery", {}))  # type: ignore[arg-type]
        bidding = replace(settings.bidding, **by_table.pop("bidding", {}))  # type: ignore[arg-type]
        return replace(settings, cycle=cycle, battery=battery, bidding=bidding)

    def with_parameter(self, key: str, value: ParamValue) -> Strategy:
        """This strategy with one parameter set (no check: use for values already validated)."""
        merged = dict(self.parameters)
        merged[key] = value
        return replace(self, parameters=tuple(sorted(merged.items())))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: the parts as ``NAME@VERSION`` and the parameters (tuples as lists)."""
        return {"forecaster": str(self.forecaster), "optimiser": str(self.optimiser),
                "bid_builder": str(self.bid_builder),
                "parameters": {k: list(v) if isinstance(v, tuple) else v for k, v in self.parameters}}


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------


def available_algorithms(registry: HandlerRegistry | None = None) -> dict[str, list[str]]:
    """Every registered algorithm by kind (forecast, optimisation, bid builder) as ``NAME@VERSION``."""
    handlers = registry if registry is not None else default_registry()
    return {
        FORECAST_KIND: [text.replace(" v", "@") for text in handlers.known(FORECAST_KIND)],
        OPTIMISATION_KIND: [text.replace(" v", "@") for text in handlers.known(OPTIMISATION_KIND)],
        BID_BUILDER_KIND: sorted(f"{name}@{version}" for name, version in BID_BUILDERS),
    }


def parse_choice(text: str, kind: str, available: Sequence[str]) -> AlgorithmChoice:
    """The algorithm ``text`` (``NAME@VERSION`` or ``NAME``) of ``kind`` among ``available``
    (``NAME@VERSION`` strings); a bare name takes its newest version (numeric versions compared as
    numbers). StrategyError listing the available ones when it is not there."""
    name, _, version = text.strip().partition("@")
    listing = ", ".join(available) or "none"
    if not name:
        raise StrategyError(f"empty {kind} name; available: {listing}")
    versions = [entry.partition("@")[2] for entry in available if entry.partition("@")[0] == name]
    if not versions:
        raise StrategyError(f"unknown {kind} {text.strip()!r}; available: {listing}")
    if not version:
        version = max(versions, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))
    if version not in versions:
        raise StrategyError(f"unknown {kind} version {name}@{version}; available: {listing}")
    return AlgorithmChoice(name, version)


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


def backtest_parameter_types() -> dict[str, Any]:
    """Every backtest parameter (a :class:`BacktestConfig` field other than the period) and its type."""
    hints = typing.get_type_hints(BacktestConfig)
    return {f.name: hints[f.name] for f in fields(BacktestConfig) if f.name not in _PERIOD_FIELDS}


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _coerce(key: str, value: object, expected: Any) -> ParamValue:
    """``value`` (as TOML gives it) as a value of type ``expected``; StrategyError otherwise."""
    origin = get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in get_args(expected) if arg is not type(None)]
        errors: list[str] = []
        for option in options:
            try:
                return _coerce(key, value, option)
            except StrategyError as error:
                errors.append(str(error))
        raise StrategyError(errors[0] if len(errors) == 1 else f"{key}: {_describe(value)} is not a valid value")
    if origin is Literal:
        allowed = get_args(expected)
        if value not in allowed:
            raise StrategyError(f"{key} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
        return typing.cast(ParamValue, value)
    if expected is bool:
        if not isinstance(value, bool):
            raise StrategyError(f"{key} must be true or false, got {_describe(value)}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise StrategyError(f"{key} must be a whole number, got {_describe(value)}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise StrategyError(f"{key} must be a finite number, got {_describe(value)}")
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise StrategyError(f"{key} must be a string, got {_describe(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or not value:
            raise StrategyError(f"{key} must be a non-empty list of numbers, got {_describe(value)}")
        return tuple(typing.cast(float, _coerce(f"{key} item", item, float)) for item in value)
    raise StrategyError(f"{key} cannot be set from a parameter (type {expected})")


def _check_levels(parameters: Mapping[str, ParamValue]) -> None:
    levels = parameters.get("forecast_quantiles")
    if isinstance(levels, tuple) and (not all(0 < q < 1 for q in levels)
                                      or any(b <= a for a, b in pairwise(levels))):
        raise StrategyError(f"forecast_quantiles must be strictly increasing levels in (0, 1), got "
                            f"{list(levels)}")
    level = parameters.get("optimiser_price_quantile")
    if isinstance(level, float) and not 0 < level < 1:
        raise StrategyError(f"optimiser_price_quantile must be in (0, 1), got {level}")
    tail = parameters.get("optimiser_price_tail_weight")
    if isinstance(tail, float) and not 0 <= tail < 0.5:
        raise StrategyError(f"optimiser_price_tail_weight must be in [0, 0.5), got {tail}")


def _settings_parameter(key: str, value: object, settings: Settings) -> ParamValue:
    """A ``settings.<table>.<key>`` parameter checked against the current value's type."""
    table, _, name = key.removeprefix(SETTINGS_PREFIX).partition(".")
    if table not in SETTINGS_TABLES:
        raise StrategyError(f"unknown settings table in {key!r}; a strategy may override "
                            f"{', '.join(f'settings.{t}.KEY' for t in SETTINGS_TABLES)}")
    section = getattr(settings, table)
    known = [f.name for f in fields(section)]
    if name not in known:
        raise StrategyError(f"unknown parameter {key!r}; settings.{table} has {', '.join(known)}")
    if table == "cycle" and name in _CYCLE_KEYS_ELSEWHERE:
        raise StrategyError(f"{key} is part of the strategy: use {_CYCLE_KEYS_ELSEWHERE[name]}")
    if table == "cycle" and name in backtest_parameter_types():
        raise StrategyError(f"{key} is a backtest parameter: set {name} instead")
    current = getattr(section, name)
    expected: Any = type(current)
    if isinstance(current, tuple):
        expected = tuple[float, ...]
    elif not isinstance(current, bool | int | float | str):
        raise StrategyError(f"{key} cannot be set from a parameter")
    return _coerce(key, value, expected)


def check_parameters(raw: Mapping[str, object], settings: Settings) -> dict[str, ParamValue]:
    """Validated, typed parameters from ``raw`` (key -> TOML value); StrategyError naming the first
    unknown key (listing the known ones) or badly typed value."""
    types_by_key = backtest_parameter_types()
    checked: dict[str, ParamValue] = {}
    for key, value in raw.items():
        if key.startswith(SETTINGS_PREFIX):
            checked[key] = _settings_parameter(key, value, settings)
        elif key in types_by_key:
            checked[key] = _coerce(key, value, types_by_key[key])
        else:
            raise StrategyError(f"unknown parameter {key!r}; known: {', '.join(types_by_key)} and "
                                f"settings.<{'|'.join(SETTINGS_TABLES)}>.KEY")
    _check_levels(checked)
    return checked


def parse_assignment(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with a TOML literal value (a bare word is taken as a string)."""
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise StrategyError(f"parameter {text!r} is not KEY=VALUE")
    try:
        return key, tomllib.loads(f"value = {value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        if value.strip() and all(c.isalnum() or c in "-_." for c in value.strip()):
            return key, value.strip()
        raise StrategyError(f"parameter {key}: {value.strip()!r} is not a TOML value "
                            "(numbers as 1.5, lists as [0.1, 0.5], text in quotes)") from None


def _flatten_settings(table: object, path: str) -> dict[str, object]:
    if not isinstance(table, dict):
        raise StrategyError(f"[{path}] must be a table of settings tables, e.g. [settings.bidding]")
    flat: dict[str, object] = {}
    for name, value in table.items():
        if not isinstance(value, dict):
            raise StrategyError(f"{path}.{name} must be a table, e.g. [settings.{name}]"
                                if path == "settings" else f"{path}.{name}: nested tables are not settings")
        flat.update({f"{path}.{name}.{key}": inner for key, inner in value.items()})
    return flat


@dataclass(frozen=True)
class ParameterFile:
    """What a parameter file holds: part names (``[strategy]``) and raw parameters (flat keys)."""

    parts: dict[str, str]
    parameters: dict[str, object]


def read_parameter_file(path: Path) -> ParameterFile:
    """Read a strategy parameter file (TOML, see the module docstring); StrategyError when it cannot be
    read or parsed, or its ``[strategy]`` table has unknown keys."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise StrategyError(f"parameter file {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise StrategyError(f"parameter file {path} is not valid TOML: {error}") from None
    parts_raw = raw.pop("strategy", {})
    if not isinstance(parts_raw, dict):
        raise StrategyError(f"parameter file {path}: strategy must be a table ([strategy])")
    unknown = [key for key in parts_raw if key not in STRATEGY_TABLE_KEYS]
    if unknown:
        hint = ("; top-level parameters must come before the first [table]"
                if unknown[0] in backtest_parameter_types() else "")
        raise StrategyError(f"parameter file {path}: unknown key {unknown[0]!r} in [strategy]; known: "
                            f"{', '.join(STRATEGY_TABLE_KEYS)}{hint}")
    parts: dict[str, str] = {}
    for key, value in parts_raw.items():
        if not isinstance(value, str):
            raise StrategyError(f"parameter file {path}: [strategy] {key} must be a string NAME@VERSION")
        parts[key] = value
    parameters: dict[str, object] = {}
    for key, value in raw.items():
        if key == "settings":
            parameters.update(_flatten_settings(value, "settings"))
        elif isinstance(value, dict):
            raise StrategyError(f"parameter file {path}: unknown table [{key}]; known: [strategy], "
                                f"[settings.<{'|'.join(SETTINGS_TABLES)}>]")
        else:
            parameters[key] = value
    return ParameterFile(parts=parts, parameters=parameters)


def resolve_strategy(settings: Settings, *, forecaster: str | None = None, optimiser: str | None = None,
                     bid_builder: str | None = None, parameter_file: Path | None = None,
                     assignments: Sequence[str] = (), registry: HandlerRegistry | None = None) -> Strategy:
    """The strategy named by flags, else the parameter file's ``[strategy]``, else the configuration
    (``settings.cycle`` algorithms, bid builder ``schedule``), with the file's parameters overridden by
    ``assignments`` (``KEY=VALUE``). StrategyError for an unknown name, version or parameter, a bad
    value or a malformed file."""
    available = available_algorithms(registry)
    from_file = read_parameter_file(parameter_file) if parameter_file is not None else ParameterFile({}, {})
    cycle = settings.cycle
    defaults = {"forecaster": f"{cycle.forecast_algorithm}@{cycle.forecast_algorithm_version}",
                "optimiser": f"{cycle.optimiser_algorithm}@{cycle.optimiser_algorithm_version}",
                "bid_builder": "schedule"}
    flags = {"forecaster": forecaster, "optimiser": optimiser, "bid_builder": bid_builder}
    chosen = {part: flags[part] or from_file.parts.get(part) or defaults[part] for part in defaults}
    raw = dict(from_file.parameters)
    for assignment in assignments:
        key, value = parse_assignment(assignment)
        raw[key] = value
    parameters = check_parameters(raw, settings)
    return Strategy(
        forecaster=parse_choice(chosen["forecaster"], FORECAST_KIND, available[FORECAST_KIND]),
        optimiser=parse_choice(chosen["optimiser"], OPTIMISATION_KIND, available[OPTIMISATION_KIND]),
        bid_builder=parse_choice(chosen["bid_builder"], BID_BUILDER_KIND, available[BID_BUILDER_KIND]),
        parameters=tuple(sorted(parameters.items())),
    )


def strategy_from_dict(data: Mapping[str, Any], settings: Settings) -> Strategy:
    """The strategy :meth:`Strategy.to_dict` described (names and parameters checked again)."""
    parameters = data.get("parameters", {})
    if not isinstance(parameters, dict):
        raise StrategyError("strategy parameters must be a mapping")
    available = available_algorithms()
    return Strategy(
        forecaster=parse_choice(str(data["forecaster"]), FORECAST_KIND, available[FORECAST_KIND]),
        optimiser=parse_choice(str(data["optimiser"]), OPTIMISATION_KIND, available[OPTIMISATION_KIND]),
        bid_builder=parse_choice(str(data["bid_builder"]), BID_BUILDER_KIND, available[BID_BUILDER_KIND]),
        parameters=tuple(sorted(check_parameters(parameters, settings).items())),
    )


def parameter_flags(strategy: Strategy) -> list[str]:
    """Command-line flags that recreate ``strategy`` (``--forecaster ...`` and one ``--param`` each)."""
    flags = [f"--forecaster {strategy.forecaster}", f"--optimiser {strategy.optimiser}",
             f"--bid-builder {strategy.bid_builder}"]
    for key, value in strategy.parameters:
        flags.append(f"--param {shlex.quote(f'{key}={toml_literal(value)}')}")
    return flags


def toml_literal(value: ParamValue) -> str:
    """``value`` as a TOML literal (round-trips through :func:`parse_assignment`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(repr(float(v)) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
