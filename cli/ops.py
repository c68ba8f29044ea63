"""``vpp ops …``: operator controls of an AutoBidder unit (the UnitOperator workflow's updates).

Each action is checked here first (the same pure checks as the workflow's validators), then sent as an
update to the unit's ``operator-<unit>`` workflow on ``[stack] task_queue`` (started if it is not
running). A rejected request prints one ``error:`` line and exits 1. ``status`` reads the controls and
the audit trail from PostgreSQL (as ``vpp db migrate``: ``DATABASE_URL`` or the embedded server).
"""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

ops_app = typer.Typer(help="Operator controls of an AutoBidder unit: pause, SoC hold, manual rebid, audit trail.",
                      no_args_is_help=True)

UnitArg = Annotated[str, typer.Argument(help="Unit id (e.g. HPR1).")]
ReasonOpt = Annotated[str, typer.Option(help="Why (goes into the audit trail).")]
OperatorOpt = Annotated[str | None, typer.Option(help="Who is acting (default: the login name).")]


def _operator(operator: str | None) -> str:
    if operator:
        return operator
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def require_unit(ctx: typer.Context, unit: str, *, controls: bool = False) -> None:
    """Nothing if ``unit`` is a configured unit of the portfolio (``[[units]]``, or the default unit and the
    VPP's fleet unit) or, unless ``controls`` (an action that changes the unit's controls), one with cycles,
    bids or controls in the database; else one error line and exit 1, before anything is written.

    Controls are for battery units: the VPP's fleet unit is bid by the price-forecast distribution, whose
    rounds take no operator controls, so an action on it is refused (its status and audit trail are shown)."""
    from cli.fleet import database
    from cli.main import fail, load
    from models.cycles import unit_exists
    from models.db import connect
    from settings import VPP_UNIT

    settings = load(ctx)
    configured = ", ".join(repr(unit_id) for unit_id in settings.unit_ids)
    if unit in settings.unit_ids:
        if controls and settings.unit(unit).kind == VPP_UNIT:
            raise fail(f"unit {unit!r} is the VPP's fleet unit: the price-forecast distribution bids it and takes "
                       f"no operator controls (battery units: "
                       f"{', '.join(repr(u.unit_id) for u in settings.battery_units)})")
        return
    if controls:
        raise fail(f"unknown unit {unit!r}: the configured units are {configured}")

    async def known(url: str) -> bool:
        async with await connect(url) as conn:
            return await unit_exists(conn, unit)

    with database(ctx) as url:
        if not asyncio.run(known(url)):
            raise fail(f"unknown unit {unit!r}: the configured units are {configured} "
                       "(and units with recorded cycles or bids)")


def _update(ctx: typer.Context, unit: str, name: str, *args: Any) -> Any:
    """Send update ``name`` to the unit's UnitOperator workflow (started if absent); its result."""
    from temporalio.common import WorkflowIDConflictPolicy

    from activities.operator_facts import ControlsView, RebidRequested, operator_workflow_id
    from cli.calls import with_temporal
    from cli.main import load
    from stack.schedule import operator_input
    from workflows.operator import UnitOperator

    require_unit(ctx, unit, controls=True)
    settings = load(ctx)
    result_type: type[Any] = RebidRequested if name == "manual_rebid" else ControlsView

    async def run(client: Any) -> Any:
        handle = await client.start_workflow(UnitOperator.run, operator_input(settings, unit),
                                             id=operator_workflow_id(unit), task_queue=settings.stack.task_queue,
                                             id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                                             static_summary=f"Operator controls and P&L of {unit}")
        return await handle.execute_update(name, args=list(args), result_type=result_type)

    return with_temporal(settings, run)


def _checked(check: Any, *args: Any) -> Any:
    """``check(*args)``, turning an OperatorRequestError into one error line and exit 1."""
    from algorithms.market.operator_controls import OperatorRequestError
    from cli.main import fail

    try:
        return check(*args)
    except OperatorRequestError as exc:
        raise fail(str(exc)) from None


def _show(controls: Any) -> None:
    from cli.main import console

    out = console()
    bidding = f"PAUSED ({controls.paused_reason or 'no reason'})" if controls.paused else "active"
    out.print(f"unit {controls.unit_id}: bidding {bidding}")
    if controls.soc_floor_fraction is not None:
        out.print(f"SoC hold: floor {controls.soc_floor_fraction:.0%} of capacity until {controls.soc_floor_until}")
    else:
        out.print("SoC hold: none")
    out.print(f"manual rebid pending: {controls.pending_rebid_reason or 'no'}")


@ops_app.command("pause")
def ops_pause(ctx: typer.Context, unit: UnitArg, reason: ReasonOpt, operator: OperatorOpt = None) -> None:
    """Pause bidding: cycles record PAUSED and submit nothing; the bid in force stands."""
    from algorithms.market.operator_controls import validate_reason

    _checked(validate_reason, reason, "pause")
    _show(_update(ctx, unit, "pause", reason, _operator(operator)))


@ops_app.command("resume")
def ops_resume(ctx: typer.Context, unit: UnitArg, reason: ReasonOpt, operator: OperatorOpt = None) -> None:
    """Resume bidding from the next cycle."""
    from algorithms.market.operator_controls import validate_reason

    _checked(validate_reason, reason, "resume")
    _show(_update(ctx, unit, "resume", reason, _operator(operator)))


@ops_app.command("hold-soc")
def ops_hold_soc(
    ctx: typer.Context,
    unit: UnitArg,
    floor: Annotated[float, typer.Option(help="Minimum SoC, fraction of capacity (e.g. 0.6).")],
    until: Annotated[str, typer.Option(help="End of the hold, ISO time with offset (2026-11-22T18:00+10:00).")],
    reason: ReasonOpt,
    operator: OperatorOpt = None,
) -> None:
    """Hold a minimum SoC until a time (storm watch): no plan or bid discharges below it."""
    from algorithms.market.operator_controls import parse_hold_until, validate_soc_hold
    from cli.main import load

    require_unit(ctx, unit, controls=True)
    battery = load(ctx).unit(unit).battery
    moment = _checked(parse_hold_until, until)
    _checked(validate_soc_hold, floor, moment, datetime.now(UTC), battery.soc_min_fraction,
             battery.soc_max_fraction, reason)
    _show(_update(ctx, unit, "hold_soc", floor, moment.isoformat(), reason, _operator(operator)))


@ops_app.command("release-soc")
def ops_release_soc(ctx: typer.Context, unit: UnitArg, reason: ReasonOpt, operator: OperatorOpt = None) -> None:
    """End the SoC hold now."""
    from algorithms.market.operator_controls import validate_reason

    _checked(validate_reason, reason, "SoC release")
    _show(_update(ctx, unit, "release_soc", reason, _operator(operator)))


@ops_app.command("rebid")
def ops_rebid(ctx: typer.Context, unit: UnitArg, reason: ReasonOpt, operator: OperatorOpt = None) -> None:
    """Rebid now with REASON in the explanation, even without material change."""
    from algorithms.market.operator_controls import validate_manual_rebid
    from cli.main import console, load

    _checked(validate_manual_rebid, reason, load(ctx).market.rebid_explanation_max_chars)
    requested = _update(ctx, unit, "manual_rebid", reason, _operator(operator))
    _show(requested.controls)
    console().print(requested.note)


@ops_app.command("status")
def ops_status(ctx: typer.Context, unit: UnitArg,
               limit: Annotated[int, typer.Option(min=1, help="Audit rows to show.")] = 10) -> None:
    """The unit's controls and its latest audit rows (from PostgreSQL)."""
    from activities.operator_facts import ControlsView
    from cli.fleet import database
    from cli.main import console
    from models import operator_controls as store
    from models.db import connect

    async def read(url: str) -> tuple[Any, list[store.OperatorAction]]:
        async with await connect(url) as conn:
            return await store.get_controls(conn, unit), await store.list_actions(conn, unit, limit)

    require_unit(ctx, unit)
    with database(ctx) as url:
        controls, actions = asyncio.run(read(url))
    _show(ControlsView.of(controls))
    table = Table("at", "action", "operator", "reason", "detail", title=f"audit trail of {unit} (latest first)")
    for action in actions:
        detail = {k: v for k, v in (action.detail or {}).items() if k != "request_id"}
        table.add_row(action.at.isoformat(timespec="seconds") if action.at else "", action.action, action.operator,
                      action.reason, ", ".join(f"{k}={v}" for k, v in detail.items()))
    console().print(table)
