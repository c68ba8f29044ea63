"""Registry of the pure functions the worker pools serve, keyed by (kind, algorithm name, version).

A handler is a pure function ``Request -> Result`` (e.g. ``ForecastRequest -> ForecastResult``). A
request names the algorithm it wants (``AlgorithmRef``); the runtime resolves it here, so algorithms
are swapped or run side by side by registering another name or version.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from algorithms.common.errors import InvalidRequestError

Handler = Callable[[Message], Message]

# Request kinds a pool serves. Backtest runs ("backtest") are registered by the process that composes the
# backtest pool (backtest/pool_task.py), since the backtest engine lives above this package.
KINDS = ("forecast", "optimisation", "backtest")


class UnknownAlgorithmError(InvalidRequestError):
    """A request names an algorithm (name, version) no handler is registered for."""


class HandlerRegistry:
    """Handlers keyed by (kind, algorithm name, version)."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str, str], Handler] = {}

    def register(self, kind: str, name: str, version: str, handler: Callable[[Any], Message]) -> None:
        """Serve ``handler`` for requests of ``kind`` naming algorithm ``name`` version ``version``.

        ``handler`` may be typed on its own request class (e.g. ``ForecastRequest -> ForecastResult``).

        ValueError for an unknown kind, an empty name or version, or a key registered already.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown request kind {kind!r}: expected one of {', '.join(KINDS)}")
        if not name or not version:
            raise ValueError(f"algorithm name and version must not be empty (got {name!r}, {version!r})")
        key = (kind, name, version)
        if key in self._handlers:
            raise ValueError(f"a handler for {name} v{version} ({kind}) is registered already")
        self._handlers[key] = handler

    def resolve(self, kind: str, name: str, version: str) -> Handler:
        """The handler for (kind, name, version); :class:`UnknownAlgorithmError` listing the known ones."""
        try:
            return self._handlers[(kind, name, version)]
        except KeyError:
            raise UnknownAlgorithmError(
                f"unknown algorithm {name or '<empty>'} v{version or '<empty>'} for {kind}; "
                f"known: {', '.join(self.known(kind)) or 'none'}") from None

    def known(self, kind: str) -> list[str]:
        """The algorithms registered for ``kind``, as ``"name vVERSION"``, sorted."""
        return sorted(f"{n} v{v}" for (k, n, v) in self._handlers if k == kind)


# The algorithm modules the pools serve: (kind, module, function of its current version). Each module
# declares its algorithm's NAME and VERSION, the one definition of both; the settings only choose which
# registered algorithm the cycle asks for ([cycle] forecast_algorithm, optimiser_algorithm and versions).
SERVED_MODULES: tuple[tuple[str, str, str], ...] = (
    ("forecast", "algorithms.market.forecast", "run_forecast"),
    ("optimisation", "algorithms.market.optimise", "run_optimisation"),
    ("optimisation", "algorithms.market.spike_reserve", "run_optimisation"),
    ("optimisation", "algorithms.market.uncertainty_spread", "run_optimisation"),
)

# Other versions of an algorithm module served next to its current one (older ones for replays, newer ones
# not yet the default): (kind, module, version, function).
RETAINED_VERSIONS: tuple[tuple[str, str, str, str], ...] = (
    ("forecast", "algorithms.market.forecast", "1", "run_forecast_v1"),
    ("forecast", "algorithms.market.forecast", "3", "run_forecast_v3"),
    ("forecast", "algorithms.market.forecast", "4", "run_forecast_v4"),
    ("forecast", "algorithms.market.forecast", "5", "run_forecast_v5"),
    ("forecast", "algorithms.market.forecast", "6", "run_forecast_v6"),
    ("optimisation", "algorithms.market.uncertainty_spread", "2", "run_optimisation_v2"),
    ("optimisation", "algorithms.market.spike_reserve", "2", "run_optimisation_v2"),
    ("optimisation", "algorithms.market.spike_reserve", "3", "run_optimisation_v3"),
    ("optimisation", "algorithms.market.spike_reserve", "4", "run_optimisation_v4"),
    ("optimisation", "algorithms.market.spike_reserve", "5", "run_optimisation_v5"),
    ("optimisation", "algorithms.market.spike_reserve", "6", "run_optimisation_v6"),
    ("optimisation", "algorithms.market.spike_reserve", "7", "run_optimisation_v7"),
    ("optimisation", "algorithms.market.spike_reserve", "8", "run_optimisation_v8"),
)


def default_registry() -> HandlerRegistry:
    """A registry serving the platform's algorithms (forecast ``run_forecast``, optimisation
    ``run_optimisation``) under the NAME and VERSION their modules declare, and the retained versions.

    The algorithm modules are imported here, not at module import, so the runtime can be loaded (and
    tested) without them.
    """
    registry = HandlerRegistry()
    for kind, module_name, function_name in SERVED_MODULES:
        module = importlib.import_module(module_name)
        name, version = algorithm_of(module)
        registry.register(kind, name, version, getattr(module, function_name))
    # Other versions stay servable: archived cycles and backtests replay with earlier ones.
    for kind, module_name, version, function_name in RETAINED_VERSIONS:
        module = importlib.import_module(module_name)
        registry.register(kind, algorithm_of(module)[0], version, getattr(module, function_name))
    return registry


def algorithm_of(module: Any) -> tuple[str, str]:
    """(name, version) an algorithm module declares as ``NAME`` and ``VERSION``; ValueError when it
    declares no non-empty pair."""
    name = getattr(module, "NAME", None)
    version = getattr(module, "VERSION", None)
    if not (isinstance(name, str) and name and isinstance(version, str) and version):
        raise ValueError(f"algorithm module {getattr(module, '__name__', module)!r} declares no NAME and "
                         "VERSION strings")
    return name, version
