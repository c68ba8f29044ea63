"""What ``vpp up`` prints while it runs: a line per finished cycle and per finished VPP dispatch event.

:class:`WorkflowFollower` asks Temporal's visibility API every few seconds for the AutobidderCycle and
VppDispatchEvent runs that closed since it last looked, and prints one line for each: a cycle's line is
the ``console.line`` of its memo (unit, interval in AEST, bid, dispatched MW, price, revenue, rendered by
algorithms/market/console.py when the cycle recorded its outcome); an event's line is its summary (node,
target, status, energy asked and delivered). Nothing else is printed, so the terminal stays quiet enough
to leave running. A Temporal that does not answer is retried quietly.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from settings import Settings

log = logging.getLogger(__name__)

CYCLE_WORKFLOW = "AutobidderCycle"
EVENT_WORKFLOW = "VppDispatchEvent"
FOLLOW_PERIOD_S = 5.0
# Look back this far when starting, so the first cycle (triggered at start-up) is printed.
LOOK_BACK = timedelta(minutes=2)
# Closed runs are asked for with this much overlap (visibility is eventually consistent); ids already
# printed are not printed again.
OVERLAP = timedelta(minutes=1)


def cycle_line(workflow_id: str, status: str, memo: dict[str, Any]) -> str:
    """The line of a closed cycle: its memo's console line, else its id and how it ended."""
    console = memo.get("console")
    if isinstance(console, dict) and console.get("line"):
        return str(console["line"])
    return f"cycle {workflow_id} {status.lower()} before recording an outcome"


def event_line(workflow_id: str, status: str, result: dict[str, Any] | None, progress: dict[str, Any] | None) -> str:
    """The line of a closed dispatch event: node, target, status, energy asked and delivered."""
    where = ""
    if progress:
        where = f" at {progress.get('node_id', '?')} {float(progress.get('target_mw', 0.0)):+g} MW"
    if not result:
        return f"VPP event {workflow_id}{where}: {status.lower()}"
    return (f"VPP event {workflow_id}{where}: {result.get('status', status)}, {int(result.get('site_count', 0)):,} "
            f"sites, asked {float(result.get('asked_mwh', 0.0)):.3f} MWh, delivered "
            f"{float(result.get('delivered_mwh', 0.0)):.3f} MWh")


async def closed_since(client: Any, workflow_type: str, since: datetime) -> list[Any]:
    """Runs of ``workflow_type`` that closed after ``since`` (aware), oldest first."""
    query = f"WorkflowType = '{workflow_type}' AND CloseTime > '{since.astimezone(UTC).isoformat()}'"
    executions = [execution async for execution in client.list_workflows(query)]
    return sorted(executions, key=lambda e: e.close_time or since)


async def follow_once(client: Any, since: datetime, printed: set[str], emit: Callable[[str], None]) -> None:
    """Emit a line for each cycle and dispatch event closed after ``since`` not yet in ``printed``."""
    for execution in await closed_since(client, CYCLE_WORKFLOW, since):
        key = f"{execution.id}/{execution.run_id}"
        if key in printed:
            continue
        printed.add(key)
        emit(cycle_line(execution.id, execution.status.name if execution.status else "CLOSED", await execution.memo()))
    for execution in await closed_since(client, EVENT_WORKFLOW, since):
        key = f"{execution.id}/{execution.run_id}"
        if key in printed:
            continue
        printed.add(key)
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        result: dict[str, Any] | None = None
        progress: dict[str, Any] | None = None
        status = execution.status.name if execution.status else "CLOSED"
        try:
            result = await handle.result()
        except Exception:  # failed or terminated: its status says so
            result = None
        try:
            progress = await handle.query("progress")
        except Exception:  # the VPP worker is gone: the line has no node
            progress = None
        emit(event_line(execution.id, status, result, progress))


class WorkflowFollower:
    """A thread that prints a line per finished cycle and dispatch event until stopped."""

    def __init__(self, settings: Settings, emit: Callable[[str], None], period_s: float = FOLLOW_PERIOD_S) -> None:
        self._settings = settings
        self._emit = emit
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="workflow-follower", daemon=True)

    def start(self) -> None:
        """Start following."""
        self._thread.start()

    def stop(self) -> None:
        """Stop following (waits for the thread)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._period_s + 5.0)

    def _main(self) -> None:
        asyncio.run(self._follow())

    async def _follow(self) -> None:
        from services.temporal_client import connect_temporal

        client: Any = None
        printed: set[str] = set()
        last_look = datetime.now(UTC) - LOOK_BACK
        while not self._stop.is_set():
            try:
                if client is None:
                    client = await connect_temporal(self._settings)
                now = datetime.now(UTC)
                await follow_once(client, last_look - OVERLAP, printed, self._emit)
                last_look = now
            except Exception as exc:  # Temporal restarting: try again next time
                log.debug("following workflows failed: %s", exc)
                client = None
            await asyncio.get_running_loop().run_in_executor(None, self._stop.wait, self._period_s)
