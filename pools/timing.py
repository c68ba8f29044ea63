"""How long a pure handler took, measured around the call.

The forecast and optimisation handlers are pure: they read no clock, so the same request always gives
the same result, bit for bit. Whoever runs a handler — the SQS pool runtime, the backtest engine —
measures it here and writes the duration into the result's timing field (``ForecastResult.compute_ms``,
``OptimisationResult.solve_ms``, milliseconds), the one field that is not a function of the request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from google.protobuf.message import Message

from algorithms.registry import Handler
from vpp.v1 import worker_pb2

Clock = Callable[[], float]
"""Seconds from an arbitrary origin (``time.perf_counter`` unless a caller gives another)."""


def with_duration_ms(result: Message, elapsed_ms: float) -> Message:
    """``result`` (changed in place and returned) with ``elapsed_ms`` (ms) in its timing field: a
    ForecastResult's ``compute_ms``, an OptimisationResult's ``solve_ms``; any other message unchanged."""
    if isinstance(result, worker_pb2.ForecastResult):
        result.compute_ms = elapsed_ms
    elif isinstance(result, worker_pb2.OptimisationResult):
        result.solve_ms = elapsed_ms
    return result


def call_timed(handler: Handler, request: Message, clock: Clock = time.perf_counter) -> Message:
    """``handler(request)`` with the time the call took (ms, by ``clock``) written into the result
    (:func:`with_duration_ms`). Whatever the handler raises propagates unchanged."""
    started = clock()
    result = handler(request)
    return with_duration_ms(result, (clock() - started) * 1000.0)
