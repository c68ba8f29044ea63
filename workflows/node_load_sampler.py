"""Every 5 minutes: record the load of the configured nodes into ``node_load_history`` (what peak
shaving forecasts from). One activity does the I/O; the figures come from the fleet gateway's live state
(:func:`algorithms.peak_shaving.node_load_figures`: household load and PV of the node's sites, fresh
readings scaled to every expected site)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy


@dataclass(frozen=True)
class SampleNodeLoadInput:
    """The nodes to sample (their subtree in ``hierarchy``; None: every hierarchy they head)."""

    node_ids: tuple[str, ...]
    hierarchy: str | None = "electrical"


@dataclass(frozen=True)
class NodeLoadSampled:
    """Rows recorded, and the nodes skipped with why (no sites now, no site reporting)."""

    interval_end_ms: int
    recorded: int
    skipped: tuple[str, ...]


@workflow.defn(name="NodeLoadSampler")
class NodeLoadSampler:
    """One sample of every configured node (started by the ``node-load-sampler`` schedule)."""

    @workflow.run
    async def run(self, request: SampleNodeLoadInput) -> NodeLoadSampled:
        result: NodeLoadSampled = await workflow.execute_activity(
            "sample_node_load", request, result_type=NodeLoadSampled,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=2)))
        return result
