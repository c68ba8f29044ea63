"""What an SQS worker's answer looks like to the Temporal activity that waited for it.

The result relay archives the worker's result message and completes the waiting activity with a
:class:`WorkerAnswer`; the workflow keeps only this small fact, the payload stays in the archive.

Real annotations, not postponed strings, as in activities/cycle_facts.py: Temporal's data converter resolves a
WorkerAnswer's type hints for each one it converts (nine forecasts and a plan per cycle).
"""

from dataclasses import dataclass

# The ``type`` of the ApplicationError an activity fails with when the worker answered with an error
# (or dead-lettered the request). Non-retryable: the same inputs would fail again.
WORKER_FAILED_ERROR_TYPE = "WorkerFailed"


@dataclass(frozen=True)
class WorkerAnswer:
    """A worker's result, archived. ``kind`` is "forecast", "optimisation" or "backtest"."""

    task_id: str
    kind: str
    archive_key: str
    # ResultStatus name without its prefix, e.g. "OK", "OPTIMAL", "INFEASIBLE".
    status: str
    status_reason: str
    compute_ms: float
