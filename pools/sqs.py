"""SQS queues of the worker pools: names, client, creation, and the message encoding.

Five standard queues per deployment (``queue_prefix`` from the settings):

* ``<prefix>-forecast-requests`` and ``<prefix>-optimisation-requests``: :class:`WorkerTask` messages;
  a redrive policy moves a message to the dead-letter queue after ``max_receive_count`` receives (the
  backstop for workers that crash; the runtime dead-letters failures itself before that);
* ``<prefix>-<[pools] backtest_queue>``: backtest runs of the sweeps, with their own visibility timeout and
  receive count (``[pools]``), so that long runs never delay the cycle's forecasts;
* ``<prefix>-results``: :class:`WorkerReply` messages for the result relay;
* ``<prefix>-dead-letters``: messages no worker could process, with the reason as attributes.

Message bodies are the base64 of the protobuf serialisation (SQS bodies must be text).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from google.protobuf.message import DecodeError, Message

from settings import Settings
from vpp.v1 import worker_pb2

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# SQS's limit on one message (body plus message attributes), bytes.
SQS_MAX_MESSAGE_BYTES = 256 * 1024
# Room kept free in every task so that, dead-lettered with its error attributes, it still fits.
DEAD_LETTER_ATTRIBUTE_RESERVE_BYTES = 4 * 1024
MAX_TASK_BODY_BYTES = SQS_MAX_MESSAGE_BYTES - DEAD_LETTER_ATTRIBUTE_RESERVE_BYTES
# Dead letters are kept for the longest retention SQS allows (seconds).
DEAD_LETTER_RETENTION_S = 14 * 24 * 3600

REQUEST_KINDS = ("forecast", "optimisation", "backtest")
DEFAULT_BACKTEST_QUEUE = "backtest-requests"
# Value of VPP_SQS_ENDPOINT that selects real AWS (default credential chain) over the local endpoint.
AWS_ENDPOINT = "aws"


class MalformedMessageError(ValueError):
    """An SQS message body that is not the base64 of a serialised protobuf message of the expected type."""


class MessageTooLargeError(ValueError):
    """A message that would exceed SQS's size limit."""


class SendFailedError(RuntimeError):
    """SQS did not accept some tasks of a SendMessageBatch."""


class QueueMissingError(LookupError):
    """A queue the settings name does not exist at the endpoint."""


@dataclass(frozen=True)
class QueueUrls:
    """URLs of the five queues of one deployment."""

    forecast_requests: str
    optimisation_requests: str
    results: str
    dead_letters: str
    backtest_requests: str = ""

    def request_queue(self, kind: str) -> str:
        """URL of the request queue of ``kind`` ("forecast", "optimisation" or "backtest")."""
        if kind == "forecast":
            return self.forecast_requests
        if kind == "optimisation":
            return self.optimisation_requests
        if kind == "backtest" and self.backtest_requests:
            return self.backtest_requests
        raise ValueError(f"unknown request kind {kind!r}: expected one of {', '.join(REQUEST_KINDS)}")


def queue_names(prefix: str, backtest_queue: str = DEFAULT_BACKTEST_QUEUE) -> dict[str, str]:
    """Queue names keyed by :class:`QueueUrls` field name, for the queue ``prefix`` (and the backtest queue's
    name after it, ``[pools] backtest_queue``)."""
    if not prefix:
        raise ValueError("queue prefix must not be empty")
    if not backtest_queue:
        raise ValueError("backtest queue name must not be empty")
    return {
        "forecast_requests": f"{prefix}-forecast-requests",
        "optimisation_requests": f"{prefix}-optimisation-requests",
        "results": f"{prefix}-results",
        "dead_letters": f"{prefix}-dead-letters",
        "backtest_requests": f"{prefix}-{backtest_queue}",
    }


def settings_queue_names(settings: Settings) -> dict[str, str]:
    """:func:`queue_names` of the settings' queue prefix and backtest queue."""
    return queue_names(settings.stack.queue_prefix, settings.pools.backtest_queue)


@dataclass(frozen=True)
class QueuePolicy:
    """How a request queue treats its messages: visibility timeout (s) and receives before dead-lettering."""

    visibility_timeout_s: int
    max_receive_count: int


def queue_policy(settings: Settings, kind: str) -> QueuePolicy:
    """The visibility timeout and receive count of the request queue of ``kind``: ``[pools]`` for backtest
    runs, ``[stack]`` for the cycle's forecasts and optimisations."""
    if kind == "backtest":
        return QueuePolicy(settings.pools.backtest_visibility_timeout_s, settings.pools.backtest_max_receive_count)
    if kind in REQUEST_KINDS:
        return QueuePolicy(settings.stack.visibility_timeout_s, settings.stack.max_receive_count)
    raise ValueError(f"unknown request kind {kind!r}: expected one of {', '.join(REQUEST_KINDS)}")


# Keep-alive connections a client keeps to the endpoint. botocore's default of 10 is fewer than the calls a
# worker makes at once (a portfolio round's forecast and plan requests, the relay's receives and deletes from
# up to 64 I/O threads): a connection beyond the tenth was opened for one call and closed after it.
SQS_CONNECTIONS = 64


def sqs_client(settings: Settings, endpoint_url: str | None = None) -> SQSClient:
    """A boto3 SQS client for the configured endpoint and region.

    The endpoint is ``endpoint_url`` if given, else ``settings.stack.sqs_endpoint_url`` (the local moto
    server unless ``VPP_SQS_ENDPOINT`` overrides it). With ``VPP_SQS_ENDPOINT=aws`` the client talks to
    AWS with the default credential chain. A local endpoint gets dummy credentials when the environment
    has none.
    """
    import boto3
    from botocore.config import Config

    region = settings.stack.sqs_region
    endpoint = endpoint_url or settings.stack.sqs_endpoint_url
    config = Config(max_pool_connections=SQS_CONNECTIONS)
    if endpoint == AWS_ENDPOINT:
        return boto3.client("sqs", region_name=region, config=config)
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return boto3.client("sqs", endpoint_url=endpoint, region_name=region, config=config)
    return boto3.client("sqs", endpoint_url=endpoint, region_name=region, config=config,
                        aws_access_key_id="local", aws_secret_access_key="local")


def _create_queue(client: SQSClient, name: str, attributes: dict[str, str]) -> str:
    try:
        return client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]  # type: ignore[arg-type]
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if "QueueAlreadyExists" not in code and "QueueNameExists" not in code:
            raise
    # The queue exists with other attributes (e.g. a changed visibility timeout): bring them up to date.
    url = client.get_queue_url(QueueName=name)["QueueUrl"]
    client.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]
    return url


def ensure_queues(client: SQSClient, settings: Settings) -> QueueUrls:
    """Create the five queues if absent (idempotent; attributes are brought up to date) and return URLs.

    Request queues get the visibility timeout (s) of :func:`queue_policy` and a redrive policy to the
    dead-letter queue after its receive count.
    """
    names = settings_queue_names(settings)
    dead_letters = _create_queue(client, names["dead_letters"],
                                 {"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_S)})
    dead_letter_arn = client.get_queue_attributes(
        QueueUrl=dead_letters, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def request_attributes(kind: str) -> dict[str, str]:
        policy = queue_policy(settings, kind)
        return {"VisibilityTimeout": str(policy.visibility_timeout_s),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_letter_arn,
                                             "maxReceiveCount": policy.max_receive_count})}

    return QueueUrls(
        forecast_requests=_create_queue(client, names["forecast_requests"], request_attributes("forecast")),
        optimisation_requests=_create_queue(client, names["optimisation_requests"],
                                            request_attributes("optimisation")),
        results=_create_queue(client, names["results"],
                              {"VisibilityTimeout": str(settings.stack.visibility_timeout_s)}),
        dead_letters=dead_letters,
        backtest_requests=_create_queue(client, names["backtest_requests"], request_attributes("backtest")),
    )


def queue_urls(client: SQSClient, settings: Settings) -> QueueUrls:
    """URLs of the existing queues; :class:`QueueMissingError` naming the first queue that is absent."""
    urls: dict[str, str] = {}
    for field_name, name in settings_queue_names(settings).items():
        try:
            urls[field_name] = client.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
                raise QueueMissingError(
                    f"SQS queue {name!r} does not exist at {client.meta.endpoint_url}; "
                    "create the queues first (ensure_queues / the stack / Terraform)") from exc
            raise
    return QueueUrls(**urls)


def encode_message(msg: Message) -> str:
    """SQS body of a protobuf message: base64 of its deterministic serialisation."""
    return base64.b64encode(msg.SerializeToString(deterministic=True)).decode("ascii")


def _decode(body: str, message: Any, what: str) -> None:
    if not isinstance(body, str):
        raise MalformedMessageError(f"{what} body is {type(body).__name__}, expected base64 text")
    try:
        payload = base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise MalformedMessageError(f"{what} body is not base64: {exc}") from exc
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise MalformedMessageError(f"{what} body is not a serialised {what}: {exc}") from exc


def decode_task(body: str) -> worker_pb2.WorkerTask:
    """The :class:`WorkerTask` in an SQS body; :class:`MalformedMessageError` if it cannot be decoded."""
    task = worker_pb2.WorkerTask()
    _decode(body, task, "WorkerTask")
    return task


def decode_reply(body: str) -> worker_pb2.WorkerReply:
    """The :class:`WorkerReply` in an SQS body; :class:`MalformedMessageError` if it cannot be decoded."""
    reply = worker_pb2.WorkerReply()
    _decode(body, reply, "WorkerReply")
    return reply


def check_size(body: str, limit_bytes: int, what: str) -> None:
    """Raise :class:`MessageTooLargeError` if ``body`` (UTF-8) exceeds ``limit_bytes``."""
    size = len(body.encode())
    if size > limit_bytes:
        raise MessageTooLargeError(f"{what} is {size} bytes once encoded; the limit is {limit_bytes} bytes "
                                   f"(SQS allows {SQS_MAX_MESSAGE_BYTES} bytes per message)")


def task_kind(task: worker_pb2.WorkerTask) -> str:
    """The request kind of ``task`` ("forecast", "optimisation" or "backtest"); ValueError if it carries none."""
    kind = task.WhichOneof("request")
    if kind is None:
        raise ValueError(f"task {task.task_id!r} carries no request (forecast, optimisation or backtest)")
    return kind


def send_task(client: SQSClient, urls: QueueUrls, task: worker_pb2.WorkerTask) -> str:
    """Send ``task`` to the request queue of its kind; returns the SQS message id.

    Refuses (:class:`MessageTooLargeError`) a task whose body exceeds :data:`MAX_TASK_BODY_BYTES`
    (SQS's 256 KiB less room for the attributes of a dead letter).
    """
    kind = task_kind(task)
    body = encode_message(task)
    check_size(body, MAX_TASK_BODY_BYTES, f"{kind} task {task.task_id!r}")
    return client.send_message(QueueUrl=urls.request_queue(kind), MessageBody=body)["MessageId"]


# SQS's limits on one SendMessageBatch: entries, and the bodies' total size (bytes).
SQS_MAX_BATCH_ENTRIES = 10
SQS_MAX_BATCH_BYTES = 256 * 1024


def task_batches(bodies: Sequence[str]) -> list[list[int]]:
    """Positions of ``bodies`` grouped, in order, into SendMessageBatch calls: at most SQS_MAX_BATCH_ENTRIES
    bodies and SQS_MAX_BATCH_BYTES (UTF-8 bytes) in each."""
    batches: list[list[int]] = []
    size = 0
    for position, body in enumerate(bodies):
        body_bytes = len(body.encode())
        if not batches or len(batches[-1]) == SQS_MAX_BATCH_ENTRIES or size + body_bytes > SQS_MAX_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(position)
        size += body_bytes
    return batches


def send_tasks(client: SQSClient, urls: QueueUrls, tasks: Sequence[worker_pb2.WorkerTask]) -> None:
    """Send ``tasks`` to the request queues of their kinds with as few SendMessageBatch calls as SQS's limits
    allow (:func:`task_batches`). Refuses a task over :data:`MAX_TASK_BODY_BYTES` before sending any; raises
    :class:`SendFailedError` naming the tasks SQS did not accept (the others are queued)."""
    by_kind: dict[str, list[worker_pb2.WorkerTask]] = {}
    for task in tasks:
        by_kind.setdefault(task_kind(task), []).append(task)
    encoded = {kind: [encode_message(task) for task in kind_tasks] for kind, kind_tasks in by_kind.items()}
    for kind, bodies in encoded.items():
        for task, body in zip(by_kind[kind], bodies, strict=True):
            check_size(body, MAX_TASK_BODY_BYTES, f"{kind} task {task.task_id!r}")
    refused: list[str] = []
    for kind, bodies in encoded.items():
        for batch in task_batches(bodies):
            answer = client.send_message_batch(QueueUrl=urls.request_queue(kind), Entries=[
                {"Id": str(position), "MessageBody": bodies[position]} for position in batch])
            refused += [f"{by_kind[kind][int(failed['Id'])].task_id} ({failed.get('Code', '?')})"
                        for failed in answer.get("Failed", [])]
    if refused:
        raise SendFailedError(f"SQS did not accept {len(refused)} task(s): {', '.join(refused)}")
