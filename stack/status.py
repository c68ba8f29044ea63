"""``vpp status``: every part of the stack and its state, asked the way the stack is configured.

Each probe speaks to its part as a client of the running stack would: Temporal with the configured
namespace (and mTLS when the environment says), the gRPC services over TLS with the operator's token
when ``vpp up`` turned edge security on (:func:`services.security.operator_security`), so a probe never
leaves a handshake error in a service's log. Processes without an endpoint (worker pools, Temporal
workers, the simulated homes) are read from the parts file ``vpp up`` keeps in the state folder
(``parts.json``: name, pid, address, log), and the Temporal workers also from their task queues' pollers.
PostgreSQL is ``DATABASE_URL`` or the embedded server of the state folder, probed without starting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from settings import Settings
from stack.processes import http_answers, run_coroutine, split_address, tcp_answers

PARTS_FILE = "parts.json"
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class PartState:
    """One part: its name, where it is, whether it is up, and a few words on what was seen."""

    part: str
    address: str
    up: bool
    detail: str = ""


@dataclass(frozen=True)
class RunningPart:
    """A process of the running stack as ``vpp up`` recorded it."""

    name: str
    pid: int
    address: str
    log_path: str


def parts_file(settings: Settings) -> Path:
    """Where ``vpp up`` records the processes it runs."""
    return settings.stack.state_dir / PARTS_FILE


def write_parts_file(settings: Settings, parts: list[RunningPart], *, ui: bool = True) -> None:
    """Record the stack's processes and whether it serves the Temporal UI (replacing the file atomically)."""
    path = parts_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps({"written_at": datetime.now(UTC).isoformat(), "ui": ui,
                                  "parts": [asdict(part) for part in parts]}, indent=2))
    staged.replace(path)


def ui_disabled(settings: Settings) -> bool:
    """Whether the running ``vpp up`` was started without the Temporal UI (``--headless``)."""
    try:
        return json.loads(parts_file(settings).read_text()).get("ui") is False
    except (OSError, ValueError, AttributeError):
        return False


def read_parts_file(settings: Settings) -> list[RunningPart] | None:
    """The processes ``vpp up`` recorded, or None when it is not running (no file, or unreadable)."""
    try:
        listed = json.loads(parts_file(settings).read_text())["parts"]
        return [RunningPart(**part) for part in listed]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def short_error(exc: BaseException) -> str:
    """A connection error in a few words (``connection refused``, else its first line)."""
    text = str(exc).strip()
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    return text.splitlines()[0] if text else type(exc).__name__


def _grpc_probe(address: str, security: Any) -> tuple[bool, str]:
    from services.health import wait_healthy

    host, port = split_address(address)
    if not tcp_answers(host, port):
        return False, "nothing listens"
    try:
        run_coroutine(lambda: wait_healthy(address, PROBE_TIMEOUT_S, security))
    except Exception as exc:  # unhealthy, refused or timed out
        return False, str(exc).splitlines()[0]
    return True, "SERVING" + (" (TLS)" if security.tls_dir else "")


@dataclass(frozen=True)
class UnitState:
    """One unit of the portfolio as ``vpp status`` shows it: kind, region, and what it did on the trading day of
    its latest recorded interval (``pnl``: one line, each interval counted once; or why it is unknown)."""

    unit_id: str
    kind: str
    region: str
    pnl: str


def probe_units(settings: Settings) -> list[UnitState]:
    """Every configured unit with its latest trading day's P&L read from PostgreSQL (``cycles``); the P&L
    says why it is missing when the database cannot be read."""
    from activities.operator import latest_day_pnl
    from algorithms.market.console import pnl_line
    from models.db import EMBEDDED_DATABASE, connect

    label, conninfo, detail = _postgres_conninfo(settings)
    if conninfo is not None and not settings.database_url:  # the platform's database in the embedded server
        import psycopg

        conninfo = psycopg.conninfo.make_conninfo(conninfo, dbname=EMBEDDED_DATABASE)
    lines: dict[str, str] = {}
    if conninfo is not None:
        async def read(target: str) -> None:
            async with await connect(target) as conn:
                for unit in settings.portfolio:
                    recorded = await latest_day_pnl(conn, unit.unit_id)
                    lines[unit.unit_id] = (pnl_line(recorded[1]) if recorded is not None
                                           else f"{unit.unit_id}: no interval recorded yet")

        try:
            run_coroutine(lambda: asyncio.wait_for(read(conninfo), PROBE_TIMEOUT_S * 2))
        except Exception as exc:  # no database, no tables yet, timed out
            detail = short_error(exc)
    return [UnitState(unit.unit_id, unit.kind, unit.region,
                      lines.get(unit.unit_id, f"unknown: PostgreSQL {label}: {detail}")) for unit in settings.portfolio]


def _postgres_conninfo(settings: Settings) -> tuple[str, str | None, str]:
    """(label, connection string or None, why not) of the stack's PostgreSQL, without starting it."""
    import psycopg

    if settings.database_url:
        url = settings.database_url
        return str(psycopg.conninfo.conninfo_to_dict(url).get("host") or "DATABASE_URL"), url, ""
    pid_file = settings.stack.state_dir / "pgdata" / "postmaster.pid"
    label = f"embedded ({settings.stack.state_dir / 'pgdata'})"
    try:
        lines = pid_file.read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), lines[3].strip(), lines[4].strip()
    except (OSError, ValueError, IndexError):
        return label, None, "not running"
    if not pid_alive(pid):
        return label, None, f"not running (stale pid {pid})"
    return label, psycopg.conninfo.make_conninfo(host=socket_dir or "127.0.0.1", port=port, dbname="postgres",
                                                 user="postgres"), ""


def _postgres_probe(settings: Settings) -> tuple[str, bool, str]:
    import psycopg

    label, conninfo, why_not = _postgres_conninfo(settings)
    if conninfo is None:
        return label, False, why_not
    try:
        with psycopg.connect(conninfo, connect_timeout=int(PROBE_TIMEOUT_S)) as conn:
            version = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        return label, False, str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
    return label, True, f"PostgreSQL {version[0] if version else '?'}"


async def _temporal_parts(settings: Settings) -> list[PartState]:
    """Temporal itself, the workers polling its task queues, and the schedules."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    from services.temporal_client import connect_temporal, schedule_id
    from stack.schedule import DISTRIBUTION_SCHEDULE_ID, NODE_LOAD_SCHEDULE_ID

    stack = settings.stack
    try:
        client = await asyncio.wait_for(connect_temporal(settings), PROBE_TIMEOUT_S * 2)
        await asyncio.wait_for(client.service_client.check_health(), PROBE_TIMEOUT_S)
    except Exception as exc:  # refused, TLS, timed out
        return [PartState("Temporal", stack.temporal_address, False, short_error(exc))]
    states = [PartState("Temporal", stack.temporal_address, True, f"namespace {stack.temporal_namespace}")]
    for label, queue in (("AutoBidder worker (Temporal)", stack.task_queue),
                         ("VPP worker (Temporal)", settings.fleet.task_queue)):
        try:
            answer = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace=stack.temporal_namespace, task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))
            pollers = len(answer.pollers)
        except Exception as exc:  # an old server or a permission problem: say so
            states.append(PartState(label, f"task queue {queue}", False, str(exc).splitlines()[0]))
            continue
        states.append(PartState(label, f"task queue {queue}", pollers > 0,
                                f"{pollers} poller(s) seen recently" if pollers else "no worker polls this queue"))
    vpp = settings.vpp_unit
    schedules = [(schedule_id(settings, unit.unit_id), f"unit {unit.unit_id} ({unit.region}) cycles")
                 for unit in settings.battery_units]
    schedules += [(NODE_LOAD_SCHEDULE_ID, "Temporal schedule"),
                  (DISTRIBUTION_SCHEDULE_ID, f"unit {vpp.unit_id} ({vpp.region}, the VPP) bids")]
    for identifier, what in schedules:
        try:
            described = await client.get_schedule_handle(identifier).describe()
        except Exception:  # not created
            states.append(PartState(f"schedule {identifier}", what, False, "does not exist"))
            continue
        paused = described.schedule.state.paused
        upcoming = described.info.next_action_times
        detail = ("PAUSED" if paused else
                  f"next run {upcoming[0].astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC (wall clock)" if upcoming
                  else "no upcoming run")
        states.append(PartState(f"schedule {identifier}", what, not paused and bool(upcoming), detail))
    return states


def probe_stack(settings: Settings) -> list[PartState]:
    """Every part of the stack with its state (see the module docstring)."""
    from services.security import operator_security

    stack = settings.stack
    security = operator_security(stack.state_dir)
    states = run_coroutine(lambda: _temporal_parts(settings))
    ui_url = f"http://127.0.0.1:{stack.temporal_ui_port}"
    if ui_disabled(settings):  # not a part of this stack: not down either
        states.insert(1, PartState("Temporal UI", ui_url, True, "disabled (vpp up --headless)"))
    else:
        states.insert(1, PartState("Temporal UI", ui_url, http_answers(ui_url), ""))
    sqs_up = http_answers(stack.sqs_endpoint_url + "/")
    states.append(PartState("SQS", stack.sqs_endpoint_url, sqs_up, "" if sqs_up else "no answer"))
    label, pg_up, pg_detail = _postgres_probe(settings)
    states.append(PartState("PostgreSQL", label, pg_up, pg_detail))
    grpc_parts: list[tuple[str, str]] = [("market-data service", stack.market_data_address),
                                         ("bid service", stack.bid_service_address),
                                         ("fleet gateway", settings.fleet.gateway_address)]
    for name, address in grpc_parts:
        up, detail = _grpc_probe(address, security)
        states.append(PartState(name, address, up, detail))
    states += _sandbox_part(settings)
    states += _process_parts(settings)
    return states


def _sandbox_part(settings: Settings) -> list[PartState]:
    """The AEMO bidding API stand-in when this stack runs it (``vpp up --market aemo-sandbox``): its health."""
    recorded = [part for part in read_parts_file(settings) or () if part.name == "aemo-sandbox"]
    if not recorded:
        return []
    url = recorded[0].address
    up = http_answers(url.split("/NEMWholesale")[0] + "/health")
    return [PartState("AEMO bidding API stand-in", url, up, "" if up else "no answer")]


# Processes without an endpoint of their own, by the prefix of their part name in the parts file.
_PROCESS_PARTS: tuple[tuple[str, str], ...] = (("forecast", "forecast pool"), ("optimisation", "optimisation pool"),
                                               ("temporal-worker", "AutoBidder worker process"),
                                               ("vpp-worker", "VPP worker process"),
                                               ("fleet-simulator", "simulated homes"))


def _process_parts(settings: Settings, alive: Callable[[int], bool] = pid_alive) -> list[PartState]:
    recorded = read_parts_file(settings)
    if recorded is None:
        return [PartState(label, "process", False, f"not recorded: `vpp up` is not running here "
                                                   f"({parts_file(settings)} absent)")
                for _, label in _PROCESS_PARTS]
    states: list[PartState] = []
    for prefix, label in _PROCESS_PARTS:
        chosen = [p for p in recorded if p.name == prefix or p.name.rpartition("-")[0] == prefix]
        if not chosen:
            states.append(PartState(label, "process", False, "not part of this stack"))
            continue
        running = [p for p in chosen if alive(p.pid)]
        states.append(PartState(label, ", ".join(str(p.pid) for p in chosen), len(running) == len(chosen),
                                f"{len(running)} of {len(chosen)} running (pid {', '.join(str(p.pid) for p in chosen)}"
                                f"; log {Path(chosen[0].log_path).parent})"))
    return states
