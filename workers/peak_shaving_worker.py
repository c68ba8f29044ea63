"""What the VPP worker must serve for peak shaving: the :class:`PeakShaving` workflow and its activities.

The peak-shaving workflow starts ``VppDispatchEvent`` children on its own task queue, so it belongs on
the VPP worker's task queue (``settings.fleet.task_queue``) next to the dispatch event. Wiring in
``workers/vpp.py``::

    from activities.peak_shaving import PeakShavingActivities
    from workers.peak_shaving_worker import peak_shaving_activities, peak_shaving_workflows

    Worker(client, task_queue=task_queue,
           workflows=[VppDispatchEvent, *peak_shaving_workflows()],
           activities=[..., *peak_shaving_activities(peak_activities)], ...)

with ``peak_activities = PeakShavingActivities(gateway_address, database_url)`` created beside
``DispatchActivities`` and closed with it (``await peak_activities.close()``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from activities.peak_shaving import PeakShavingActivities, plan_peak_shaves
from workflows.peak_shaving import PeakShaving


def peak_shaving_workflows() -> list[type]:
    """The workflow classes to add to the VPP worker."""
    return [PeakShaving]


def peak_shaving_activities(activities: PeakShavingActivities) -> Sequence[Callable[..., Any]]:
    """The activity callables to add to the VPP worker: forecast and capacity bound to ``activities``, and
    the planning (pure, unbound)."""
    return [activities.forecast_node_load, activities.node_fleet_capacity, plan_peak_shaves]
