"""The VPP dispatch event: hold a MW target at a node of the asset graph with closed-loop control.

resolve the node's sites (as of the event start) -> hand them to the fleet gateway -> every
``control_interval_s``: observe, allocate / correct setpoints, send, resend unacknowledged ones ->
at the window's end (or on cancel): release the sites and record the per-site impact log.

Operators steer it with updates — ``set_target`` (validated: finite, within ``max_abs_target_mw``)
and ``cancel`` (with a reason) — and read it with the ``progress`` query. All control maths runs in
pure functions at the gateway (algorithms/fleet/allocation.py, fleet_commands.py); the workflow
only keeps time and state.

A control step that fails (gateway briefly unreachable) is retried by Temporal; if the gateway lost
the event (restarted), the workflow starts the event there again and carries on.
"""

from __future__ import annotations

import contextlib
import math
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.dispatch_facts import (
        DISPATCH_WORKFLOW,
        EVENT_LOST,
        ControlInput,
        ControlStep,
        DispatchEventInput,
        DispatchProgress,
        EventStarted,
        EventSummary,
        FinishInput,
        StartEventInput,
    )

CONTROL_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), backoff_coefficient=2.0,
                            maximum_interval=timedelta(seconds=5), maximum_attempts=5,
                            non_retryable_error_types=[EVENT_LOST])
SETUP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                          maximum_attempts=10, non_retryable_error_types=["InvalidDispatchEvent"])


@workflow.defn(name=DISPATCH_WORKFLOW)
class VppDispatchEvent:
    """One dispatch event (workflow id = event id)."""

    def __init__(self) -> None:
        self._event: DispatchEventInput | None = None
        self._stage = "scheduled"
        self._target_mw = 0.0
        self._site_count = 0
        self._steps = 0
        self._latest: ControlStep | None = None
        self._target_changes: list[str] = []
        self._cancel_reason: str | None = None
        self._summary: EventSummary | None = None
        self._wake = False

    @workflow.query
    def progress(self) -> DispatchProgress:
        """Stage, target in force, the latest control step, every target change, the summary when done."""
        event = self._event
        return DispatchProgress(
            event_id=event.event_id if event else "", node_id=event.node_id if event else "",
            stage=self._stage, target_mw=self._target_mw, site_count=self._site_count, steps=self._steps,
            latest=self._latest, target_changes=tuple(self._target_changes), summary=self._summary,
            start_ms=event.start_ms if event else 0, end_ms=event.end_ms if event else 0,
            hierarchy=event.hierarchy if event else None)

    @workflow.update
    async def set_target(self, target_mw: float) -> float:
        """Change the target (MW) from the next control step; returns the previous target."""
        previous = self._target_mw
        self._target_mw = target_mw
        self._target_changes.append(f"{workflow.now().isoformat()} {previous:g} -> {target_mw:g} MW")
        self._wake = True
        return previous

    @set_target.validator
    def _validate_target(self, target_mw: float) -> None:
        limit = self._event.max_abs_target_mw if self._event else math.inf
        if not math.isfinite(target_mw):
            raise ValueError(f"target must be a finite number of MW, got {target_mw}")
        if abs(target_mw) > limit:
            raise ValueError(f"target {target_mw} MW is beyond this event's limit of ±{limit} MW")
        if self._stage in ("finishing", "completed", "cancelled"):
            raise ValueError(f"the event is {self._stage}; its target can no longer change")

    @workflow.update
    async def cancel(self, reason: str) -> str:
        """Stop the event now (sites released, impact log recorded); returns the stage it was in."""
        self._cancel_reason = reason
        self._wake = True
        return self._stage

    @cancel.validator
    def _validate_cancel(self, reason: str) -> None:
        if not reason.strip():
            raise ValueError("a cancel needs a reason (it goes into the impact log)")
        if self._stage in ("finishing", "completed", "cancelled"):
            raise ValueError(f"the event is already {self._stage}")

    @workflow.run
    async def run(self, event: DispatchEventInput) -> EventSummary:
        self._event = event
        self._target_mw = event.target_mw
        if event.end_ms <= event.start_ms:
            raise ApplicationError(f"event {event.event_id}: its window ends before it starts",
                                   type="InvalidDispatchEvent", non_retryable=True)
        await self._wait_until(event.start_ms)
        if self._cancel_reason is None and self._now_ms() < event.end_ms:
            await self._start(event)
            self._stage = "controlling"
            while self._cancel_reason is None and self._now_ms() < event.end_ms:
                await self._control(event)
                await self._wait_until(min(self._now_ms() + int(event.control_interval_s * 1000), event.end_ms))
        status = "CANCELLED" if self._cancel_reason is not None else "COMPLETED"
        self._stage = "finishing"
        summary: EventSummary = await workflow.execute_activity(
            "finish_dispatch_event",
            FinishInput(event_id=event.event_id, node_id=event.node_id, target_mw=self._target_mw,
                        start_ms=event.start_ms, end_ms=event.end_ms, status=status,
                        reason=self._cancel_reason or ""),
            result_type=EventSummary, start_to_close_timeout=timedelta(seconds=60), retry_policy=SETUP_RETRY)
        self._summary = summary
        self._stage = status.lower()
        return summary

    async def _start(self, event: DispatchEventInput) -> None:
        self._stage = "resolving"
        started: EventStarted = await workflow.execute_activity(
            "start_dispatch_event",
            StartEventInput(event_id=event.event_id, node_id=event.node_id, hierarchy=event.hierarchy,
                            target_mw=self._target_mw, start_ms=event.start_ms, end_ms=event.end_ms),
            result_type=EventStarted, start_to_close_timeout=timedelta(seconds=60), retry_policy=SETUP_RETRY)
        self._site_count = started.site_count

    async def _control(self, event: DispatchEventInput) -> None:
        try:
            step: ControlStep = await workflow.execute_activity(
                "control_dispatch_event", ControlInput(event_id=event.event_id, target_mw=self._target_mw),
                result_type=ControlStep, start_to_close_timeout=timedelta(seconds=10),
                retry_policy=CONTROL_RETRY)
        except ActivityError as failure:
            cause = failure.cause
            if isinstance(cause, ApplicationError) and cause.type == EVENT_LOST:
                workflow.logger.warning("the fleet gateway lost event %s; starting it again", event.event_id)
                await self._start(event)
                self._stage = "controlling"
                return
            raise
        self._steps += 1
        self._latest = step

    async def _wait_until(self, moment_ms: int) -> None:
        """Sleep until ``moment_ms`` (epoch ms UTC), waking early for updates."""
        remaining_s = (moment_ms - self._now_ms()) / 1000.0
        if remaining_s <= 0:
            return
        self._wake = False
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._wake, timeout=timedelta(seconds=remaining_s))

    @staticmethod
    def _now_ms() -> int:
        return int(workflow.now().timestamp() * 1000)
