"""Activities of the UnitOperator workflow: read and write a unit's controls and its audit trail, and
start a cycle now (a manual rebid).

A control change and its audit row are written in one transaction. A retried activity does not append
the same action twice: the audit row carries the activity's request id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.operator_facts import (
    CYCLE_RECORDED_SIGNAL,
    HOLD_SOC,
    MANUAL_REBID,
    PAUSE,
    RELEASE_SOC,
    RESUME,
    ControlsView,
    OperatorActionInput,
    UnitConsole,
    operator_workflow_id,
)
from algorithms.common.nem_time import INTERVAL, trading_day, trading_day_last_interval
from algorithms.market.console import UnitPnl, bid_bands, pnl_of
from models import bids as bid_store
from models import cycles as cycle_store
from models import operator_controls as store
from models.db import connect
from services.temporal_client import trigger_now
from settings import Settings

INVALID_ACTION = "InvalidOperatorAction"

# Starts one cycle of a unit now (its id as argument).
TriggerCycle = Callable[[str], Awaitable[None]]


def schedule_trigger(settings: Settings, client: Client) -> TriggerCycle:
    """A TriggerCycle that triggers the unit's AutoBidder schedule (:func:`services.temporal_client.trigger_now`)."""
    async def trigger(unit_id: str) -> None:
        await trigger_now(settings, client, unit_id=unit_id)

    return trigger


def operator_signal(client: Client) -> Callable[[str, str], Awaitable[None]]:
    """Tell a unit's UnitOperator workflow that one of its cycles recorded its interval: the ``cycle_recorded``
    signal with the cycle's line, through ``client`` (raises the server's error when the workflow is not
    running). The record stage of a cycle calls it (activities.cycle.CycleActivities ``tell_operator``)."""
    async def tell(unit_id: str, line: str) -> None:
        await client.get_workflow_handle(operator_workflow_id(unit_id)).signal(CYCLE_RECORDED_SIGNAL, line)

    return tell


async def latest_day_pnl(conn: Any, unit_id: str) -> tuple[datetime, UnitPnl] | None:
    """``unit_id``'s latest recorded interval (interval-ending AEST) and the P&L ($) of its trading day, each
    interval counted once (the ``cycles`` table); None when the unit has recorded no interval. The operator
    page and ``vpp status`` both read it here."""
    latest = await cycle_store.latest_interval(conn, unit_id)
    if latest is None:
        return None
    day = trading_day(latest)
    last = trading_day_last_interval(day)
    first = last - timedelta(days=1) + INTERVAL
    rows = await cycle_store.counted_revenue(conn, unit_id, first, last)
    cycles = await cycle_store.cycles_between(conn, unit_id, first, last)
    return latest, pnl_of(unit_id, rows, day, cycles)


def _request_id() -> str:
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"


class OperatorActivities:
    """The UnitOperator's activities, bound to a database and a way to start a cycle now."""

    def __init__(self, database_url: str, trigger_cycle: TriggerCycle) -> None:
        self._database_url = database_url
        self._trigger_cycle = trigger_cycle

    def all(self) -> list[Any]:
        """Every activity, for ``Worker(activities=...)``."""
        return [self.load_unit_controls, self.apply_operator_action, self.trigger_unit_cycle, self.load_unit_console]

    @activity.defn(name="load_unit_controls")
    async def load_unit_controls(self, unit_id: str) -> ControlsView:
        """The unit's stored controls."""
        async with await connect(self._database_url) as conn:
            return ControlsView.of(await store.get_controls(conn, unit_id))

    @activity.defn(name="load_unit_console")
    async def load_unit_console(self, unit_id: str) -> UnitConsole:
        """The P&L of the trading day of the unit's latest recorded interval (each interval counted once,
        from the ``cycles`` table) and the bid in force for that interval."""
        async with await connect(self._database_url) as conn:
            recorded = await latest_day_pnl(conn, unit_id)
            if recorded is None:
                return UnitConsole(unit_id=unit_id)
            latest, pnl = recorded
            bid = await bid_store.latest_accepted_bid_covering(conn, unit_id, latest)
        day, cycles = trading_day(latest), pnl.cycles
        return UnitConsole(unit_id=unit_id, trading_day=day.isoformat(),
                           energy_revenue_dollars=pnl.energy_revenue_dollars,
                           fcas_revenue_dollars=pnl.fcas_revenue_dollars, intervals=pnl.intervals, cycles=cycles,
                           latest_interval=latest.isoformat(), bid_id=bid.bid_id if bid else None,
                           bid_bands=bid_bands(bid.bid(), latest) if bid else ())

    @activity.defn(name="apply_operator_action")
    async def apply_operator_action(self, request: OperatorActionInput) -> ControlsView:
        """Write the action's control change and append its audit row (one transaction); the new controls."""
        request_id = _request_id()
        detail: dict[str, Any] = {"request_id": request_id}
        async with await connect(self._database_url) as conn:
            done = await conn.execute("SELECT 1 FROM operator_actions WHERE detail->>'request_id' = %s",
                                      (request_id,))
            if await done.fetchone() is not None:  # a retry of an action already written
                return ControlsView.of(await store.get_controls(conn, request.unit_id))
            if request.action == PAUSE:
                controls = await store.set_paused(conn, request.unit_id, True, request.reason)
            elif request.action == RESUME:
                controls = await store.set_paused(conn, request.unit_id, False, None)
            elif request.action == HOLD_SOC:
                if request.soc_floor_fraction is None or request.soc_floor_until is None:
                    raise ApplicationError("a SoC hold needs a floor and an end time", type=INVALID_ACTION,
                                           non_retryable=True)
                until = datetime.fromisoformat(request.soc_floor_until)
                controls = await store.set_soc_hold(conn, request.unit_id, request.soc_floor_fraction, until)
                detail |= {"soc_floor_fraction": request.soc_floor_fraction, "until": until.isoformat()}
            elif request.action == RELEASE_SOC:
                controls = await store.set_soc_hold(conn, request.unit_id, None, None)
            elif request.action == MANUAL_REBID:
                controls = await store.set_pending_rebid(conn, request.unit_id, request.reason)
            else:
                raise ApplicationError(f"unknown operator action {request.action!r}", type=INVALID_ACTION,
                                       non_retryable=True)
            await store.append_action(conn, store.OperatorAction(
                unit_id=request.unit_id, action=request.action, reason=request.reason, operator=request.operator,
                detail=detail))
            await conn.commit()
        return ControlsView.of(controls)

    @activity.defn(name="trigger_unit_cycle")
    async def trigger_unit_cycle(self, unit_id: str) -> None:
        """Start one cycle of ``unit_id`` now (skipped by the schedule if one is already running)."""
        await self._trigger_cycle(unit_id)
