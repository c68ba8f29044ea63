"""Every 5 minutes: record the load of the configured nodes into ``node_load_history`` (what peak
shaving forecasts from). One activity does the I/O; the figures come from the fleet gateway's live state
(:func:`algorithms.fleet.peak_shaving.node_load_figures`: household load and PV of the node's sites, fresh
readings scaled to every expected site)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.node_load_facts import NodeLoadSampled, SampleNodeLoadInput


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
