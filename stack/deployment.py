"""The deployment contract: what the code expects from the cloud it runs in, as one value.

:func:`deployment_contract` derives from the :class:`settings.Settings` everything infra/terraform must
create to match the code: the SQS queue names (:func:`pools.sqs.queue_names`) with their redrive and
visibility settings, the region, the S3 archive prefix, and every deployed process (``vpp up``'s children
less the local simulator) with its command, port, the environment variable names it reads and the AWS
access it needs. ``python -m stack.deployment --config FILE`` prints it as JSON; each Terraform
environment reads that file (``contract.json``) with ``jsondecode(file(...))``, and
tests/test_terraform.py fails when the committed file and the code drift apart.

Container paths replace the machine's folders (``state_dir``, ``data_dir``) so the contract is the same
on every machine; the running containers get them through ``VPP_STATE_DIR`` / ``VPP_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pools.sqs import AWS_ENDPOINT, DEAD_LETTER_RETENTION_S, queue_policy, settings_queue_names
from settings import ENV_OVERRIDES, Settings, load_settings
from stack.supervisor import settings_to_toml

# Folders inside the container image (the state folder is a writable scratch volume).
CONTAINER_STATE_DIR = "/var/lib/vpp"
CONTAINER_DATA_DIR = "/app/data/nem"
CONTAINER_CONFIG_PATH = "/var/lib/vpp/openvpp.toml"
CONTRACT_VERSION = 1
# Variable holding the configuration (TOML) that the container's entry command writes to $VPP_CONFIG
# before it runs the CLI; read by that command, not by the platform.
CONFIG_TOML_VARIABLE = "VPP_CONFIG_TOML"
# Request and result messages are kept for SQS's default retention (s); dead letters for the longest.
MESSAGE_RETENTION_S = 4 * 24 * 3600

# Environment variables the platform reads directly (not through settings.ENV_OVERRIDES).
# Variables the deployment passes for the Temporal Cloud mTLS client certificate (read by
# services/temporal_client.py; only present when the environment's `temporal_mtls` is on).
TEMPORAL_TLS_ENVIRONMENT = ("VPP_TEMPORAL_TLS_CERT", "VPP_TEMPORAL_TLS_KEY")
DIRECT_ENVIRONMENT = ("VPP_CONFIG", "DATABASE_URL", "VPP_SQS_ENDPOINT", "VPP_S3_ENDPOINT", "VPP_BIND_HOST",
                      *TEMPORAL_TLS_ENVIRONMENT, "VPP_TEMPORAL_TLS_CA")
# gRPC servers listen on every interface of their task (security groups decide who reaches them);
# clients dial the services by their Service Connect names.
BIND_ALL = "0.0.0.0"
# Variables whose values are secrets (Secrets Manager), never plain task-definition environment.
SECRET_ENVIRONMENT = ("DATABASE_URL", "VPP_TEMPORAL_ADDRESS", *TEMPORAL_TLS_ENVIRONMENT)

_BASE_ENVIRONMENT = ("VPP_CONFIG", "VPP_STATE_DIR")
_SQS_ENVIRONMENT = ("VPP_SQS_ENDPOINT",)
_TEMPORAL_ENVIRONMENT = ("VPP_TEMPORAL_ADDRESS", *TEMPORAL_TLS_ENVIRONMENT)
_ARCHIVE_ENVIRONMENT = ("VPP_ARCHIVE_BACKEND", "VPP_ARCHIVE_S3_BUCKET")


@dataclass(frozen=True)
class QueueSpec:
    """One SQS queue: ``key`` is its :class:`pools.sqs.QueueUrls` field, times in seconds.

    ``max_receive_count`` is None for queues without a redrive policy (results, dead letters).
    """

    key: str
    name: str
    visibility_timeout_s: int
    message_retention_s: int
    max_receive_count: int | None


@dataclass(frozen=True)
class ServiceSpec:
    """One deployed process: an ECS service with its own task role.

    ``command`` is the ``vpp`` CLI argv; ``port`` the gRPC port it serves (None for workers);
    ``environment`` the variable names it reads; ``sqs_consume`` / ``sqs_send`` the queue keys it
    receives-and-deletes from / sends to; ``archive`` "read_write" or "none"; ``database`` and
    ``temporal`` whether it connects to PostgreSQL / Temporal; ``scale_on_queue`` the request queue key
    whose depth scales it (None: a fixed count of tasks); ``desired_count`` its starting task count;
    ``grpc_calls`` the services it calls over gRPC; ``public`` whether clients outside the VPC reach it.
    """

    name: str
    command: tuple[str, ...]
    port: int | None
    environment: tuple[str, ...]
    sqs_consume: tuple[str, ...]
    sqs_send: tuple[str, ...]
    archive: str
    database: bool
    temporal: bool
    scale_on_queue: str | None
    desired_count: int
    grpc_calls: tuple[str, ...] = ()
    public: bool = False


@dataclass(frozen=True)
class DeploymentContract:
    """Everything the infrastructure must match (seconds, counts, names)."""

    version: int
    region: str
    queue_prefix: str
    queues: tuple[QueueSpec, ...]
    max_message_age_s: int
    archive_prefix: str
    services: tuple[ServiceSpec, ...]
    environment_constants: dict[str, str]
    secret_environment: tuple[str, ...]
    # Read when present: the Temporal mTLS client certificate (only with a Temporal that requires it).
    optional_secret_environment: tuple[str, ...]
    container_state_dir: str
    container_data_dir: str
    container_config_path: str
    config_toml_variable: str
    config_toml: str


def _queues(settings: Settings) -> tuple[QueueSpec, ...]:
    stack = settings.stack
    names = settings_queue_names(settings)
    visibility = stack.visibility_timeout_s
    backtest = queue_policy(settings, "backtest")
    return (
        QueueSpec("dead_letters", names["dead_letters"], visibility, DEAD_LETTER_RETENTION_S, None),
        QueueSpec("forecast_requests", names["forecast_requests"], visibility, MESSAGE_RETENTION_S,
                  stack.max_receive_count),
        QueueSpec("optimisation_requests", names["optimisation_requests"], visibility, MESSAGE_RETENTION_S,
                  stack.max_receive_count),
        QueueSpec("results", names["results"], visibility, MESSAGE_RETENTION_S, None),
        QueueSpec("backtest_requests", names["backtest_requests"], backtest.visibility_timeout_s,
                  MESSAGE_RETENTION_S, backtest.max_receive_count),
    )


def _pool(kind: str, workers: int) -> ServiceSpec:
    return ServiceSpec(
        name=f"{kind}-pool", command=("worker", "pool", kind), port=None,
        environment=(*_BASE_ENVIRONMENT, *_SQS_ENVIRONMENT),
        sqs_consume=(f"{kind}_requests",), sqs_send=("results", "dead_letters"),
        archive="none", database=False, temporal=False, scale_on_queue=f"{kind}_requests",
        desired_count=workers)


def _services(settings: Settings) -> tuple[ServiceSpec, ...]:
    stack = settings.stack
    return (
        ServiceSpec("market-data", ("serve", "market-data"), stack.market_data_port,
                    (*_BASE_ENVIRONMENT, "VPP_DATA_DIR", "VPP_BIND_HOST"), (), (), "none", False, False, None, 1),
        ServiceSpec("bids", ("serve", "bids"), stack.bid_service_port,
                    (*_BASE_ENVIRONMENT, "VPP_DATA_DIR", "DATABASE_URL", "VPP_BIND_HOST"), (), (), "none", True,
                    False, None, 1),
        _pool("forecast", stack.forecast_workers),
        _pool("optimisation", stack.optimiser_workers),
        ServiceSpec("temporal-worker", ("worker", "temporal"), None,
                    (*_BASE_ENVIRONMENT, *_SQS_ENVIRONMENT, *_TEMPORAL_ENVIRONMENT, *_ARCHIVE_ENVIRONMENT),
                    ("results",), ("forecast_requests", "optimisation_requests", "dead_letters"),
                    "read_write", False, True, None, 1, grpc_calls=("market-data", "bids")),
        ServiceSpec("fleet-gateway", ("fleet", "gateway"), settings.fleet.gateway_port,
                    (*_BASE_ENVIRONMENT, "DATABASE_URL", "VPP_BIND_HOST"), (), (), "none", True, False, None, 1,
                    public=True),
        ServiceSpec("vpp-worker", ("worker", "vpp"), None,
                    (*_BASE_ENVIRONMENT, "DATABASE_URL", *_TEMPORAL_ENVIRONMENT), (), (), "none", True, True,
                    None, 1, grpc_calls=("fleet-gateway",)),
        # Backtest runs of the sweeps: data by reference (sha256-checked), run folders into the archive.
        ServiceSpec("backtest-pool", ("worker", "pool", "backtest"), None,
                    (*_BASE_ENVIRONMENT, *_SQS_ENVIRONMENT, *_ARCHIVE_ENVIRONMENT), ("backtest_requests",),
                    ("results", "dead_letters"), "read_write", False, False, "backtest_requests",
                    settings.pools.backtest_processes),
        ServiceSpec("sweep-worker", ("worker", "sweep"), None,
                    (*_BASE_ENVIRONMENT, *_SQS_ENVIRONMENT, *_TEMPORAL_ENVIRONMENT, *_ARCHIVE_ENVIRONMENT), (),
                    ("backtest_requests",), "read_write", False, True, None, 1),
    )


def deployment_contract(settings: Settings) -> DeploymentContract:
    """The deployment contract of ``settings`` (pure: same settings, same contract).

    Raises ValueError (from :func:`pools.sqs.queue_names`) for an empty queue prefix.
    """
    portable = replace(
        settings,
        database_url=None,
        stack=replace(settings.stack, state_dir=Path(CONTAINER_STATE_DIR), market_data_host="market-data",
                      bid_service_host="bids"),
        fleet=replace(settings.fleet, gateway_host="fleet-gateway"),
        market_data=replace(settings.market_data, data_dir=Path(CONTAINER_DATA_DIR)),
        archive=replace(settings.archive, backend="s3", s3_bucket=""),
    )
    return DeploymentContract(
        version=CONTRACT_VERSION,
        region=settings.stack.sqs_region,
        queue_prefix=settings.stack.queue_prefix,
        queues=_queues(settings),
        # A request older than the activity's answer timeout has been given up on by its cycle.
        max_message_age_s=settings.cycle.worker_answer_timeout_s,
        archive_prefix=settings.archive.s3_prefix,
        services=_services(settings),
        environment_constants={"VPP_SQS_ENDPOINT": AWS_ENDPOINT, "VPP_ARCHIVE_BACKEND": "s3",
                               "VPP_CONFIG": CONTAINER_CONFIG_PATH, "VPP_STATE_DIR": CONTAINER_STATE_DIR,
                               "VPP_DATA_DIR": CONTAINER_DATA_DIR, "VPP_BIND_HOST": BIND_ALL},
        secret_environment=SECRET_ENVIRONMENT,
        optional_secret_environment=TEMPORAL_TLS_ENVIRONMENT,
        container_state_dir=CONTAINER_STATE_DIR,
        container_data_dir=CONTAINER_DATA_DIR,
        container_config_path=CONTAINER_CONFIG_PATH,
        config_toml_variable=CONFIG_TOML_VARIABLE,
        config_toml=settings_to_toml(portable),
    )


def known_environment() -> frozenset[str]:
    """Every environment variable name the platform reads (overrides and direct reads)."""
    return frozenset(ENV_OVERRIDES) | frozenset(DIRECT_ENVIRONMENT)


def contract_json(contract: DeploymentContract) -> str:
    """The contract as stable, indented JSON (sorted keys, trailing newline) for Terraform."""
    return json.dumps(asdict(contract), indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m stack.deployment [--config FILE]``: print the contract of FILE merged over the defaults.

    Environment overrides are not applied: the contract is a function of the files alone.
    """
    parser = argparse.ArgumentParser(prog="python -m stack.deployment", description=main.__doc__)
    parser.add_argument("--config", type=Path, default=None,
                        help="settings file merged over settings/default.toml (an environment's openvpp.toml)")
    arguments = parser.parse_args(argv)
    settings = load_settings(arguments.config, environ={})
    sys.stdout.write(contract_json(deployment_contract(settings)))


if __name__ == "__main__":
    main()
