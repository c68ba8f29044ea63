"""A backtest sweep's grid: strategy parameters × periods (months) × regions → runs with deterministic ids.

A grid is given by flags or a TOML file (:func:`read_grid_file`)::

    regions = ["SA1", "VIC1"]
    months = ["2021-01"]                 # or: start = "2021-01-15T04:00" and end = "2021-01-16T04:00"
    data = ["data/nem"]
    [strategy]                           # optional: the parts, NAME@VERSION
    forecaster = "sarx-quantile@2"
    [parameters]                         # each key: one value or a list of values to sweep
    horizon_intervals = [48, 96]
    forecast_quantiles = [[0.1, 0.5, 0.9], [0.05, 0.5, 0.95]]

and on the command line ``--param KEY=V1,V2`` (the values a TOML array's items: ``horizon_intervals=48,96``,
``forecast_quantiles=[0.1,0.5,0.9],[0.05,0.5,0.95]``), ``--month 2021-01`` (repeatable) or ``--start/--end``,
``--region`` (repeatable). :func:`expand_grid` (pure) makes every combination a
:class:`backtest.runs.RunSpec`, whose run id is the run's own (the same as ``vpp backtest run`` of that
spec gives); :func:`sweep_id` names the sweep by its runs.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from backtest.runs import (
    MarketInputs,
    RunSpec,
    make_spec,
    require_price_limits,
    resolve_period,
    sha256_text,
)
from backtest.strategy import resolve_strategy
from settings import Settings

SWEEP_ID_PREFIX = "sweep-"
_SWEEP_HASH_CHARS = 10
GRID_KEYS = ("regions", "months", "start", "end", "data", "strategy", "parameters")
STRATEGY_KEYS = ("forecaster", "optimiser", "bid_builder")


class SweepError(ValueError):
    """A sweep grid that cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class PeriodChoice:
    """One period of the grid: a month (``2021-01``) or a ``start``/``end`` pair, market time AEST."""

    label: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class SweepGrid:
    """What a sweep runs: every combination of ``parameters`` values × ``periods`` × ``regions``.

    ``parameters`` maps a strategy parameter (as ``--param`` names it) to its values, each a TOML literal;
    ``strategy`` the parts (``forecaster``, ``optimiser``, ``bid_builder``: ``NAME@VERSION``) left None for the
    configured ones; ``data`` the ``--data`` paths.
    """

    regions: tuple[str, ...]
    periods: tuple[PeriodChoice, ...]
    parameters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    data: tuple[Path, ...] = ()
    forecaster: str | None = None
    optimiser: str | None = None
    bid_builder: str | None = None

    @property
    def size(self) -> int:
        """Number of runs: the product of the axes' lengths."""
        count = len(self.regions) * len(self.periods)
        for _, values in self.parameters:
            count *= len(values)
        return count


@dataclass(frozen=True, eq=False)
class SweepRun:
    """One run of a sweep: its spec (and id) and the grid point it stands for."""

    spec: RunSpec
    region: str
    period_label: str
    assignments: tuple[str, ...]

    @property
    def label(self) -> str:
        """``<region> <period> <KEY=VALUE …>``: the grid point, for tables."""
        return " ".join((self.region, self.period_label, *self.assignments))


def month_period(text: str) -> PeriodChoice:
    """The month ``YYYY-MM`` as a period: the intervals ending after its first midnight up to the next
    month's (AEST), as ``vpp backtest run --start YYYY-MM-01 --end <next month>-01`` gives."""
    try:
        start = datetime.strptime(text.strip(), "%Y-%m")
    except ValueError:
        raise SweepError(f"month {text!r} is not YYYY-MM") from None
    end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1)
    return PeriodChoice(label=f"{start:%Y-%m}", start=start, end=end)


def span_period(start: datetime, end: datetime) -> PeriodChoice:
    """The period from ``start`` to ``end`` (AEST); SweepError unless it is not empty."""
    if end <= start:
        raise SweepError(f"--end {end:%Y-%m-%d %H:%M} must come after --start {start:%Y-%m-%d %H:%M}")
    return PeriodChoice(label=f"{start:%Y-%m-%dT%H:%M}..{end:%Y-%m-%dT%H:%M}", start=start, end=end)


def parameter_values(text: str) -> tuple[str, tuple[str, ...]]:
    """``KEY=V1,V2,…`` as (KEY, the values as TOML literals): the values are the items of the TOML array
    ``[V1,V2,…]``, so a value may itself be an array (``forecast_quantiles=[0.1,0.5,0.9],[0.05,0.5,0.95]``).
    SweepError for a malformed assignment or a value repeated."""
    key, equals, values = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise SweepError(f"--param {text!r} is not KEY=V1,V2,…")
    try:
        items = tomllib.loads(f"values = [{values.strip()}]")["values"]
    except tomllib.TOMLDecodeError:
        words = [word.strip() for word in values.split(",")]
        if not all(word and all(c.isalnum() or c in "-_." for c in word) for word in words):
            raise SweepError(f"--param {key}: {values.strip()!r} are not TOML values separated by commas "
                             "(numbers as 1.5, lists as [0.1, 0.5], text in quotes)") from None
        items = words
    return key, _literals(key, items)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    raise SweepError(f"a parameter value of type {type(value).__name__} cannot be swept")


def _literals(key: str, items: Sequence[Any]) -> tuple[str, ...]:
    literals = tuple(_literal(item) for item in items)
    if not literals:
        raise SweepError(f"--param {key}: no values")
    if len(set(literals)) != len(literals):
        raise SweepError(f"--param {key}: a value is given twice ({', '.join(literals)})")
    return literals


def read_grid_file(path: Path) -> dict[str, Any]:
    """The grid a TOML file describes (see the module docstring) as raw values; SweepError when it cannot
    be read, is not TOML, or has an unknown key."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise SweepError(f"grid file {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SweepError(f"grid file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(raw) - set(GRID_KEYS))
    if unknown:
        raise SweepError(f"grid file {path}: unknown key {unknown[0]!r}; known: {', '.join(GRID_KEYS)}")
    for table in ("strategy", "parameters"):
        if not isinstance(raw.get(table, {}), dict):
            raise SweepError(f"grid file {path}: {table} must be a table ([{table}])")
    unknown_parts = sorted(set(raw.get("strategy", {})) - set(STRATEGY_KEYS))
    if unknown_parts:
        raise SweepError(f"grid file {path}: unknown key {unknown_parts[0]!r} in [strategy]; known: "
                         f"{', '.join(STRATEGY_KEYS)}")
    return raw


def _strings(raw: Mapping[str, Any], key: str) -> list[str]:
    value = raw.get(key, [])
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise SweepError(f"grid: {key} must be a list of strings")
    return [str(v) for v in values]


def build_grid(*, file: Mapping[str, Any] | None = None, regions: Sequence[str] = (), months: Sequence[str] = (),
               start: datetime | None = None, end: datetime | None = None, params: Sequence[str] = (),
               data: Sequence[Path] = (), forecaster: str | None = None, optimiser: str | None = None,
               bid_builder: str | None = None, default_region: str, default_data: Path) -> SweepGrid:
    """The grid of the flags over the grid file's values (a flag given replaces the file's value of that axis;
    ``--param`` replaces the file's values of its key). SweepError when no period is given, both months and a
    start/end are, or an axis repeats a value."""
    raw = dict(file or {})
    chosen_regions = list(regions) or _strings(raw, "regions") or [default_region]
    if len(set(chosen_regions)) != len(chosen_regions):
        raise SweepError(f"a region is given twice ({', '.join(chosen_regions)})")
    file_start, file_end = raw.get("start"), raw.get("end")
    if start is not None or end is not None or months:
        file_start = file_end = None
    chosen_months = list(months) or ([] if start is not None or end is not None else _strings(raw, "months"))
    span_start = start or (datetime.fromisoformat(str(file_start)) if file_start else None)
    span_end = end or (datetime.fromisoformat(str(file_end)) if file_end else None)
    if chosen_months and (span_start is not None or span_end is not None):
        raise SweepError("give months or --start/--end, not both")
    if (span_start is None) != (span_end is None):
        raise SweepError("give both --start and --end (or months)")
    if not chosen_months and span_start is None:
        raise SweepError("no period: give --month YYYY-MM (repeatable) or --start and --end")
    periods = ([month_period(m) for m in chosen_months] if chosen_months
               else [span_period(span_start, span_end)])  # type: ignore[arg-type]
    if len({p.label for p in periods}) != len(periods):
        raise SweepError(f"a month is given twice ({', '.join(p.label for p in periods)})")
    axes: dict[str, tuple[str, ...]] = {}
    for key, values in dict(raw.get("parameters", {})).items():
        axes[str(key)] = _literals(str(key), values if isinstance(values, list) and not _is_level_list(key, values)
                                   else [values])
    for text in params:
        key, literals = parameter_values(text)
        axes[key] = literals
    parts = dict(raw.get("strategy", {}))
    chosen_data = [Path(p) for p in data] or [Path(p) for p in _strings(raw, "data")] or [default_data]
    return SweepGrid(regions=tuple(chosen_regions), periods=tuple(periods), parameters=tuple(sorted(axes.items())),
                     data=tuple(chosen_data), forecaster=forecaster or parts.get("forecaster"),
                     optimiser=optimiser or parts.get("optimiser"), bid_builder=bid_builder or parts.get("bid_builder"))


def _is_level_list(key: str, values: list[Any]) -> bool:
    """A list of numbers under a key whose one value is itself a list (``forecast_quantiles``)."""
    return key == "forecast_quantiles" and all(isinstance(v, int | float) for v in values)


def expand_grid(grid: SweepGrid, settings: Settings, inputs: MarketInputs, *,
                code_version: str | None = None) -> list[SweepRun]:
    """Every run of ``grid`` (parameters × periods × regions, in that nesting, the last fastest), each a spec
    with its deterministic run id, as ``vpp backtest run`` would make it on ``inputs`` (the grid's data,
    loaded) and ``settings`` (price limits of the data applied). Pure. StrategyError / RunError /
    PriceLimitsUnknownError for a parameter, part, region or period that cannot be run; SweepError for a
    grid whose points give the same run twice."""
    keys = [key for key, _ in grid.parameters]
    runs: list[SweepRun] = []
    for values in itertools.product(*(values for _, values in grid.parameters)):
        assignments = tuple(f"{key}={value}" for key, value in zip(keys, values, strict=True))
        strategy = resolve_strategy(settings, forecaster=grid.forecaster, optimiser=grid.optimiser,
                                    bid_builder=grid.bid_builder, assignments=assignments)
        for choice in grid.periods:
            for region in grid.regions:
                period = resolve_period(inputs.dispatch, region, start=choice.start, end=choice.end)
                require_price_limits(settings, period)
                spec = make_spec(settings, inputs, region, period, strategy, version=code_version)
                runs.append(SweepRun(spec=spec, region=region, period_label=choice.label, assignments=assignments))
    ids = [run.spec.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise SweepError("two points of the grid are the same run (same id): give each value once")
    return runs


def sweep_id(run_ids: Sequence[str]) -> str:
    """``sweep-<sha256 of the sorted run ids, 10 hex>``: the same runs, the same sweep."""
    if not run_ids:
        raise SweepError("a sweep needs at least one run")
    return SWEEP_ID_PREFIX + sha256_text(",".join(sorted(run_ids)))[:_SWEEP_HASH_CHARS]
