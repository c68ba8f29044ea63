"""How CLI commands talk to the running stack: one ``error:`` line for every way it can go wrong.

:func:`with_temporal` runs a command's coroutine with a Temporal client and turns an unreachable server,
an unknown workflow, a rejected update and a failed query into one clear line and exit code 1.
:class:`CommandError` is what a command raises for its own refusals (an unknown event, a target beyond
the node's capability, ...). :func:`dispatch_event` finds a dispatch event or refuses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, is_dataclass
from typing import Any, TypeVar

import typer

T = TypeVar("T")

DISPATCH_WORKFLOW_TYPE = "VppDispatchEvent"


class CommandError(Exception):
    """A command's refusal or failure, said in one line."""


def with_temporal(settings: Any, main: Callable[[Any], Awaitable[T]]) -> T:
    """``main(client)`` with a client of the configured Temporal; every failure is one error line, exit 1."""
    from temporalio.client import WorkflowFailureError, WorkflowQueryFailedError, WorkflowUpdateFailedError
    from temporalio.service import RPCError, RPCStatusCode

    from cli.main import fail
    from services.temporal_client import TemporalTlsConfigError, connect_temporal

    address = settings.stack.temporal_address

    async def run() -> T:
        try:
            client = await asyncio.wait_for(connect_temporal(settings), 15.0)
        except TemporalTlsConfigError:
            raise
        except (RuntimeError, OSError, TimeoutError) as exc:
            raise CommandError(f"cannot reach Temporal at {address} ({_first_line(exc)}): is the stack running "
                               "(`vpp up`)?") from None
        return await main(client)

    try:
        return asyncio.run(run())
    except CommandError as exc:
        raise fail(str(exc)) from None
    except TemporalTlsConfigError as exc:
        raise fail(str(exc)) from None
    except WorkflowUpdateFailedError as exc:
        raise fail(f"rejected: {_first_line(exc.cause or exc)}") from None
    except WorkflowQueryFailedError as exc:
        raise fail(f"query failed: {_first_line(exc)}") from None
    except WorkflowFailureError as exc:
        raise fail(f"the workflow failed: {_first_line(exc.cause or exc)}") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise fail(f"not found: {_first_line(exc)}") from None
        raise fail(f"temporal: {exc.status.name if exc.status else 'error'}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    from stack.status import short_error

    return short_error(exc)


async def dispatch_event(client: Any, event_id: str) -> Any:
    """The handle of dispatch event ``event_id``; CommandError if there is no such event."""
    from temporalio.service import RPCError, RPCStatusCode

    handle = client.get_workflow_handle(event_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no dispatch event {event_id!r} (see the Temporal UI, workflow type "
                               f"{DISPATCH_WORKFLOW_TYPE})") from None
        raise
    if description.workflow_type != DISPATCH_WORKFLOW_TYPE:
        raise CommandError(f"{event_id!r} is a {description.workflow_type} workflow, not a dispatch event")
    return handle


def plain(value: Any) -> Any:
    """A dataclass (or dict/list of them) as plain JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Print ``value`` (dataclasses included) as indented JSON on stdout."""
    typer.echo(json.dumps(plain(value), indent=2, sort_keys=True, default=str))


JsonOpt = typer.Option("--json", help="Print JSON instead of a table (for scripts).")
