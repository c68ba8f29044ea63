"""Operator controls of one AutoBidder unit: a long-running workflow (id ``operator-<unit_id>``).

Operators steer the unit's cycles with updates — ``pause`` / ``resume`` bidding, ``hold_soc`` (a
minimum state of charge until a time: a storm watch) / ``release_soc``, and ``manual_rebid`` — from the
Temporal UI or ``vpp ops …``, and read the ``controls`` query. Each update's validator rejects a bad
request with a clear message (the pure checks of algorithms/market/operator_controls.py); an accepted update
runs an activity that writes ``unit_controls`` and appends to the ``operator_actions`` audit trail in
one transaction, and returns the new controls. ``manual_rebid`` then triggers the unit's schedule, so
a cycle runs now instead of at the next 5-minute boundary. The cycle reads the controls from
PostgreSQL when it fetches market data, so the controls hold even while this workflow is not running.

The workflow's page in the Temporal UI (its current details, markdown rendered by
algorithms/market/console.py) shows today's P&L (energy, FCAS, total: the trading day of the unit's latest
recorded interval, each interval counted once whatever the number of cycles), the bid in force and the
controls. It is refreshed when a cycle signals ``cycle_recorded`` (signals arriving while a refresh runs
are coalesced into one more refresh: one activity per refresh, read from PostgreSQL, so the page is
always what the database says and history grows by a few events per cycle) and after every accepted
update.

Updates are applied one at a time in arrival order; the workflow continues as new after
``max_actions_per_run`` actions or ``max_refreshes_per_run`` refreshes (or when Temporal suggests it) with
the controls reloaded from the database. Operator time checks use the workflow clock (wall-clock UTC).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.operator_facts import (
        CYCLE_RECORDED_SIGNAL,
        HOLD_SOC,
        MANUAL_REBID,
        PAUSE,
        RELEASE_SOC,
        RESUME,
        ControlsView,
        OperatorActionInput,
        OperatorInput,
        RebidRequested,
        UnitConsole,
    )
    from algorithms.market.console import operator_details_markdown
    from algorithms.market.operator_controls import (
        OperatorRequestError,
        parse_hold_until,
        validate_manual_rebid,
        validate_pause,
        validate_reason,
        validate_release_soc,
        validate_resume,
        validate_soc_hold,
    )

OPERATOR_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                             maximum_attempts=10, non_retryable_error_types=["InvalidOperatorAction"])
TRIGGER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
REJECTED = "OperatorRequestRejected"
# workflow.patched id of the operator page (the P&L refresh loop), so runs recorded before it still replay.
CONSOLE_PATCH = "operator-console-page"


@workflow.defn(name="UnitOperator")
class UnitOperator:
    """Operator controls of one unit (workflow id ``operator-<unit_id>``)."""

    def __init__(self) -> None:
        self._input: OperatorInput | None = None
        self._controls: ControlsView | None = None
        self._lock = asyncio.Lock()
        self._actions = 0
        self._refreshes = 0
        self._refresh_wanted = True
        self._console: UnitConsole | None = None
        self._last_cycle = ""

    @workflow.signal(name=CYCLE_RECORDED_SIGNAL)
    def cycle_recorded(self, line: str) -> None:
        """A cycle of this unit recorded its interval (``line`` says what it did): refresh the page."""
        self._last_cycle = line
        self._refresh_wanted = True

    @workflow.query
    def console(self) -> UnitConsole | None:
        """Today's P&L and the bid in force as last loaded (None before the first load)."""
        return self._console

    @workflow.query
    def controls(self) -> ControlsView:
        """The unit's controls as last written by this workflow (a pending manual rebid the cycle has since
        submitted may still show: ``vpp ops status`` reads the database)."""
        if self._controls is not None:
            return self._controls
        return ControlsView(unit_id=self._input.unit_id if self._input else "")

    # -- updates --------------------------------------------------------------------------------

    @workflow.update
    async def pause(self, reason: str, operator: str = "") -> ControlsView:
        """Stop bidding: each cycle records PAUSED and submits nothing; the bid in force stands."""
        return await self._apply(PAUSE, reason, operator)

    @pause.validator
    def _validate_pause(self, reason: str, operator: str = "") -> None:
        self._check(PAUSE, reason)

    @workflow.update
    async def resume(self, reason: str, operator: str = "") -> ControlsView:
        """Bid again from the next cycle."""
        return await self._apply(RESUME, reason, operator)

    @resume.validator
    def _validate_resume(self, reason: str, operator: str = "") -> None:
        self._check(RESUME, reason)

    @workflow.update
    async def hold_soc(self, floor_fraction: float, until_iso: str, reason: str, operator: str = "") -> ControlsView:
        """Keep the SoC at least ``floor_fraction`` of capacity until ``until_iso`` (ISO time with offset):
        no plan or bid discharges below it."""
        return await self._apply(HOLD_SOC, reason, operator, floor_fraction, until_iso)

    @hold_soc.validator
    def _validate_hold_soc(self, floor_fraction: float, until_iso: str, reason: str, operator: str = "") -> None:
        self._check(HOLD_SOC, reason, floor_fraction, until_iso)

    @workflow.update
    async def release_soc(self, reason: str, operator: str = "") -> ControlsView:
        """End the SoC hold now."""
        return await self._apply(RELEASE_SOC, reason, operator)

    @release_soc.validator
    def _validate_release_soc(self, reason: str, operator: str = "") -> None:
        self._check(RELEASE_SOC, reason)

    @workflow.update
    async def manual_rebid(self, reason: str, operator: str = "") -> RebidRequested:
        """Rebid now with ``reason`` in the explanation, even if the new bid does not differ materially."""
        controls = await self._apply(MANUAL_REBID, reason, operator)
        try:
            await workflow.execute_activity("trigger_unit_cycle", controls.unit_id,
                                            start_to_close_timeout=timedelta(seconds=15), retry_policy=TRIGGER_RETRY)
        except ActivityError as failure:
            note = f"could not start a cycle now ({failure.cause or failure}); the next scheduled cycle rebids"
            workflow.logger.warning(note)
            return RebidRequested(controls=controls, cycle_triggered=False, note=note)
        return RebidRequested(controls=controls, cycle_triggered=True, note="a cycle was started now")

    @manual_rebid.validator
    def _validate_manual_rebid(self, reason: str, operator: str = "") -> None:
        self._check(MANUAL_REBID, reason)

    # -- run ------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: OperatorInput) -> None:
        self._input = request
        self._controls = request.controls
        self._controls = await workflow.execute_activity(
            "load_unit_controls", request.unit_id, result_type=ControlsView,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=OPERATOR_RETRY)
        self._render()

        def done() -> bool:
            return (self._actions >= request.max_actions_per_run or self._refreshes >= request.max_refreshes_per_run
                    or workflow.info().is_continue_as_new_suggested())

        # Runs started before the page existed only wait for actions (replayed as they were recorded).
        paging = workflow.patched(CONSOLE_PATCH)
        while paging:
            await workflow.wait_condition(lambda: self._refresh_wanted or done())
            if done():
                break
            self._refresh_wanted = False
            self._refreshes += 1
            self._console = await workflow.execute_activity(
                "load_unit_console", request.unit_id, result_type=UnitConsole,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=OPERATOR_RETRY,
                summary="today's P&L and the bid in force")
            self._render()
        if not paging:
            await workflow.wait_condition(done)
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(dataclasses.replace(request, controls=self._controls))

    # -- helpers --------------------------------------------------------------------------------

    def _check(self, action: str, reason: str, floor_fraction: float | None = None,
               until_iso: str | None = None) -> None:
        """Raise OperatorRequestError (a ValueError: the update is rejected) for a bad request. Checks that
        need the stored controls wait until they are loaded (then they run in the handler)."""
        request = self._input
        if request is None:
            validate_reason(reason, action.replace("_", " "))
            return
        controls = self._controls.controls() if self._controls else None
        now = workflow.now()
        if action == HOLD_SOC:
            validate_soc_hold(floor_fraction if floor_fraction is not None else float("nan"),
                              parse_hold_until(until_iso or ""), now, request.soc_min_fraction,
                              request.soc_max_fraction, reason)
        elif action == MANUAL_REBID:
            validate_manual_rebid(reason, request.rebid_reason_max_chars)
        elif controls is None:  # the state checks run in the handler once the controls are loaded
            validate_reason(reason, action.replace("_", " "))
        elif action == PAUSE:
            validate_pause(reason, controls)
        elif action == RESUME:
            validate_resume(reason, controls)
        elif action == RELEASE_SOC:
            validate_release_soc(reason, controls, now)
        else:
            raise OperatorRequestError(f"unknown operator action {action!r}")

    async def _apply(self, action: str, reason: str, operator: str, floor_fraction: float | None = None,
                     until_iso: str | None = None) -> ControlsView:
        await workflow.wait_condition(lambda: self._controls is not None)
        async with self._lock:
            try:
                self._check(action, reason, floor_fraction, until_iso)  # the controls may have changed meanwhile
            except OperatorRequestError as error:
                raise ApplicationError(str(error), type=REJECTED, non_retryable=True) from None
            assert self._input is not None
            view: ControlsView = await workflow.execute_activity(
                "apply_operator_action",
                OperatorActionInput(unit_id=self._input.unit_id, action=action, reason=reason.strip(),
                                    operator=operator, soc_floor_fraction=floor_fraction,
                                    soc_floor_until=(parse_hold_until(until_iso).isoformat() if until_iso else None)),
                result_type=ControlsView, start_to_close_timeout=timedelta(seconds=30),
                retry_policy=OPERATOR_RETRY)
            self._controls = view
            self._actions += 1
            self._render()
            return view

    def _render(self) -> None:
        """Show today's P&L, the bid in force and the controls as the workflow's current details."""
        assert self._input is not None
        unit_id = self._input.unit_id
        shown = self._console or UnitConsole(unit_id=unit_id)
        controls = (self._controls or ControlsView(unit_id=unit_id)).shown()
        details = operator_details_markdown(
            unit_id, shown.pnl(), controls, shown.bid_id, shown.bid_bands,
            shown.pnl().latest_interval)
        if self._last_cycle:
            details += f"\n**Last cycle:** {self._last_cycle}\n"
        workflow.set_current_details(details)


