"""Serve pure functions ``Request -> Result`` on an SQS request queue.

:func:`process_message` is the decision logic, free of I/O: decode the :class:`WorkerTask`, resolve
the handler its request names, run it (timed: :func:`pools.timing.call_timed` writes how long it took
into the result's ``compute_ms`` / ``solve_ms``, since the handlers read no clock), and say what to do
with the message (a :class:`Disposition`):

* success: reply with the result (and remember the reply, see :class:`IdempotencyCache`);
* a body that cannot be decoded: dead-letter at once (``invalid_message``); no reply is possible;
* a task without task id or request: dead-letter at once (``invalid_message``), error reply if it
  says where to;
* :class:`~algorithms.common.errors.InvalidRequestError` (including an unknown algorithm): dead-letter at
  once and send an error reply (``invalid_request`` / ``unknown_algorithm``) so the waiting workflow
  fails fast instead of timing out;
* any other exception: leave the message; SQS delivers it again after the visibility timeout. On the
  ``max_receive_count``-th receive it is dead-lettered with an error reply (``handler_failed``).

:func:`run_pool` is the thin I/O loop around it. A pool process handles one message at a time (the
handlers are CPU-bound; scale by running more processes), receiving one message per call by default
so that messages do not wait, invisible, behind a slow one while their visibility timeout runs down.
While a handler runs, the message's visibility is extended every half timeout, so a long solve is not
delivered to a second worker.

Identical inputs: the forecast handlers are pure, so a forecast request whose inputs (the request less its
``request_id`` and ``inputs_hash``: :func:`algorithms.common.content_hash.inputs_hash`, recomputed here, never
read from the message) were answered before by this process is answered from :class:`ResultCache` with that
result, its ``request_id`` set to the new request's. A portfolio's units in one region deciding at the same
moment ask for the same forecasts; the forecaster runs once for them. Inputs that differ in any field
(region, history, decision time, quantiles, algorithm version...) hash differently and never share an answer.

Idempotency: a task whose reply was already produced by this process is answered with the same reply
without running the handler again (an in-memory LRU of recent task ids). That is an optimisation; the
durable guarantee is downstream: completing a Temporal activity that is already completed is a no-op
(the result relay treats "not found" as done), so a task answered twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from google.protobuf.message import Message

from algorithms.common.content_hash import inputs_hash
from algorithms.common.errors import InvalidRequestError
from algorithms.registry import HandlerRegistry, UnknownAlgorithmError, default_registry
from pools.sqs import (
    REQUEST_KINDS,
    SQS_MAX_MESSAGE_BYTES,
    MalformedMessageError,
    QueuePolicy,
    QueueUrls,
    decode_task,
    encode_message,
    queue_policy,
    queue_urls,
    sqs_client,
)
from pools.timing import call_timed
from settings import Settings
from vpp.v1 import worker_pb2

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

logger = logging.getLogger(__name__)

# Result message class each request kind must produce.
RESULT_TYPES: dict[str, type[Message]] = {
    "forecast": worker_pb2.ForecastResult,
    "optimisation": worker_pb2.OptimisationResult,
    "backtest": worker_pb2.BacktestRunResult,
}
# Longest error text carried in a dead letter's attribute or an error reply (characters).
MAX_ERROR_MESSAGE_CHARS = 2000
DEFAULT_CACHE_CAPACITY = 1024
# Results of identical inputs kept per pool process (a forecast result of 288 intervals x 9 quantiles is ~21 kB).
DEFAULT_RESULT_CACHE_CAPACITY = 256
# Request kinds whose answers ResultCache reuses: the forecasters are pure and deterministic. Optimisation is
# not among them: a solve cut short by its time limit depends on the machine's speed, not only on its inputs.
RESULT_CACHE_KINDS = frozenset({"forecast"})
RECEIVE_WAIT_S = 1
# Pause after a failed receive (the endpoint is down or throttling), seconds.
RECEIVE_ERROR_BACKOFF_S = 1.0


class Outcome(StrEnum):
    """What became of one request message."""

    SUCCEEDED = "succeeded"
    DUPLICATE = "duplicate"
    INVALID_MESSAGE = "invalid_message"
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_ALGORITHM = "unknown_algorithm"
    RESULT_TOO_LARGE = "result_too_large"
    RETRY = "retry"
    HANDLER_FAILED = "handler_failed"


@dataclass(frozen=True)
class DeadLetter:
    """A message for the dead-letter queue: the original body and why it could not be processed."""

    body: str
    error_code: str
    error_message: str
    receive_count: int
    source_queue: str

    def message_attributes(self) -> dict[str, MessageAttributeValueTypeDef]:
        """SQS message attributes ErrorCode, ErrorMessage, ReceiveCount, SourceQueue (never empty)."""
        values = {
            "ErrorCode": self.error_code or "unknown",
            "ErrorMessage": self.error_message or "(no message)",
            "ReceiveCount": str(self.receive_count),
            "SourceQueue": self.source_queue or "unknown",
        }
        return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


@dataclass(frozen=True)
class Disposition:
    """What the pool must do with one received message.

    ``reply`` goes to the results queue, ``dead_letter`` to the dead-letter queue, and the message is
    deleted from its request queue if ``delete`` (after the reply and dead letter are sent).
    ``error`` is the exception the handler raised, if any (for the log).
    """

    outcome: Outcome
    task_id: str
    kind: str
    receive_count: int
    reply: worker_pb2.WorkerReply | None = None
    dead_letter: DeadLetter | None = None
    delete: bool = True
    detail: str = ""
    error: Exception | None = None

    @property
    def reply_body(self) -> str | None:
        """The SQS body of the reply, if there is one."""
        return None if self.reply is None else encode_message(self.reply)


class ResultCache:
    """Results of recently answered requests by the hash of their inputs (kind and
    :func:`~algorithms.common.content_hash.inputs_hash` -> serialised result), least recent evicted.

    In memory, per process. A hit is the result computed for identical inputs, bit for bit, with the
    asking request's ``request_id`` (:meth:`answer`); its timing field is the computation's that produced it.
    """

    def __init__(self, capacity: int = DEFAULT_RESULT_CACHE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"result cache capacity must be at least 1 (got {capacity})")
        self.capacity = capacity
        self.hits = 0
        self._results: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    @staticmethod
    def key(kind: str, request: Message) -> tuple[str, str] | None:
        """The cache key of ``request`` (``kind`` and the hash of its inputs), None for a kind not cached."""
        return (kind, inputs_hash(request)) if kind in RESULT_CACHE_KINDS else None

    def answer(self, key: tuple[str, str], request: Message) -> Message | None:
        """The result remembered under ``key``, re-addressed to ``request`` (its request_id), or None."""
        stored = self._results.get(key)
        if stored is None:
            return None
        self._results.move_to_end(key)
        self.hits += 1
        result = RESULT_TYPES[key[0]].FromString(stored)
        setattr(result, "request_id", getattr(request, "request_id"))  # noqa: B009, B010
        return result

    def put(self, key: tuple[str, str], result: Message) -> None:
        """Remember ``result`` under ``key``, evicting the least recently used beyond capacity."""
        self._results[key] = result.SerializeToString(deterministic=True)
        self._results.move_to_end(key)
        while len(self._results) > self.capacity:
            self._results.popitem(last=False)

    def __len__(self) -> int:
        return len(self._results)


class IdempotencyCache:
    """The replies of recently completed tasks (task id -> serialised WorkerReply), least recent evicted.

    In memory, per process: it spares re-running a handler for a task delivered twice to the same
    process. It is not the durable guarantee (see the module docstring).
    """

    def __init__(self, capacity: int = DEFAULT_CACHE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1 (got {capacity})")
        self.capacity = capacity
        self._replies: OrderedDict[str, bytes] = OrderedDict()

    def get(self, task_id: str) -> bytes | None:
        """The serialised reply of ``task_id`` if it is remembered."""
        reply = self._replies.get(task_id)
        if reply is not None:
            self._replies.move_to_end(task_id)
        return reply

    def put(self, task_id: str, reply: bytes) -> None:
        """Remember the serialised reply of ``task_id``, evicting the least recently used beyond capacity."""
        self._replies[task_id] = reply
        self._replies.move_to_end(task_id)
        while len(self._replies) > self.capacity:
            self._replies.popitem(last=False)

    def __len__(self) -> int:
        return len(self._replies)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._replies


def receive_count_of(message: Mapping[str, Any]) -> int:
    """The ApproximateReceiveCount of an SQS message (1 when the attribute is absent)."""
    attributes = message.get("Attributes") or {}
    text = attributes.get("ApproximateReceiveCount")
    try:
        return max(1, int(text)) if text is not None else 1
    except (TypeError, ValueError):
        return 1


def _truncate(text: str) -> str:
    if len(text) <= MAX_ERROR_MESSAGE_CHARS:
        return text
    return text[: MAX_ERROR_MESSAGE_CHARS - 30] + f"... [{len(text)} characters in all]"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _has_reply_to(task: worker_pb2.WorkerTask) -> bool:
    return bool(task.HasField("reply_to") and task.reply_to.activity_id)


def error_reply(task: worker_pb2.WorkerTask, code: str, message: str,
                receive_count: int) -> worker_pb2.WorkerReply:
    """The error reply to ``task``: its task id and reply_to, with a :class:`WorkerError`."""
    reply = worker_pb2.WorkerReply(task_id=task.task_id)
    reply.reply_to.CopyFrom(task.reply_to)
    reply.error.code = code
    reply.error.message = _truncate(message)
    reply.error.receive_count = receive_count
    return reply


def result_reply(task: worker_pb2.WorkerTask, kind: str, result: Message) -> worker_pb2.WorkerReply:
    """The success reply to ``task``: its task id and reply_to, with ``result`` in the ``kind`` field.

    TypeError if ``result`` is not the result message of ``kind``.
    """
    expected = RESULT_TYPES[kind]
    if not isinstance(result, expected):
        raise TypeError(f"the {kind} handler returned {type(result).__name__}, expected {expected.__name__}")
    reply = worker_pb2.WorkerReply(task_id=task.task_id)
    reply.reply_to.CopyFrom(task.reply_to)
    getattr(reply, kind).CopyFrom(result)
    return reply


def process_message(message: Mapping[str, Any], *, registry: HandlerRegistry, max_receive_count: int,
                    completed: IdempotencyCache, source_queue: str = "",
                    results: ResultCache | None = None) -> Disposition:
    """Decide what to do with one SQS request message (``Body``, ``ReceiptHandle``, ``Attributes``).

    Runs the handler the request names; no I/O besides what the handler does. ``completed`` is
    consulted and, on success, updated. ``results`` (optional) answers a request whose inputs were answered
    before without running the handler, and remembers each new result. ``source_queue`` only labels dead
    letters.
    """
    receive_count = receive_count_of(message)
    body = message.get("Body", "")

    def dead(outcome: Outcome, task_id: str, kind: str, reason: str,
             reply: worker_pb2.WorkerReply | None = None, error: Exception | None = None) -> Disposition:
        letter = DeadLetter(body=body, error_code=outcome.value, error_message=_truncate(reason),
                            receive_count=receive_count, source_queue=source_queue)
        return Disposition(outcome, task_id, kind, receive_count, reply=reply, dead_letter=letter,
                           delete=True, detail=reason, error=error)

    try:
        task = decode_task(body)
    except MalformedMessageError as exc:
        return dead(Outcome.INVALID_MESSAGE, "", "", f"invalid_message: {exc}")

    kind = task.WhichOneof("request") or ""
    if not task.task_id or not kind:
        missing = "task_id" if not task.task_id else "request (forecast, optimisation or backtest)"
        reason = f"invalid_message: task has no {missing}"
        reply = error_reply(task, Outcome.INVALID_MESSAGE.value, reason, receive_count) \
            if _has_reply_to(task) else None
        return dead(Outcome.INVALID_MESSAGE, task.task_id, kind, reason, reply)

    cached = completed.get(task.task_id)
    if cached is not None:
        return Disposition(Outcome.DUPLICATE, task.task_id, kind, receive_count,
                           reply=worker_pb2.WorkerReply.FromString(cached), delete=True,
                           detail="answered from the replies of completed tasks")

    request = getattr(task, kind)
    cache_key = ResultCache.key(kind, request) if results is not None else None
    known = results.answer(cache_key, request) if results is not None and cache_key is not None else None
    try:
        handler = registry.resolve(kind, request.algorithm.name, request.algorithm.version)
        result = known if known is not None else call_timed(handler, request)
        reply = result_reply(task, kind, result)
    except InvalidRequestError as exc:
        unknown = isinstance(exc, UnknownAlgorithmError)
        outcome = Outcome.UNKNOWN_ALGORITHM if unknown else Outcome.INVALID_REQUEST
        reason = str(exc) or type(exc).__name__
        return dead(outcome, task.task_id, kind, reason,
                    error_reply(task, outcome.value, reason, receive_count), exc)
    except Exception as exc:
        reason = _describe(exc)
        if receive_count < max_receive_count:
            return Disposition(Outcome.RETRY, task.task_id, kind, receive_count, delete=False,
                               detail=f"{reason} (receive {receive_count} of {max_receive_count})", error=exc)
        reason = f"{reason} (failed on each of {receive_count} receives)"
        return dead(Outcome.HANDLER_FAILED, task.task_id, kind, reason,
                    error_reply(task, Outcome.HANDLER_FAILED.value, reason, receive_count), exc)

    reply_bytes = reply.SerializeToString(deterministic=True)
    body_size = len(encode_message(reply))
    if body_size > SQS_MAX_MESSAGE_BYTES:
        reason = f"the {kind} result is {body_size} bytes once encoded; SQS allows {SQS_MAX_MESSAGE_BYTES}"
        return dead(Outcome.RESULT_TOO_LARGE, task.task_id, kind, reason,
                    error_reply(task, Outcome.RESULT_TOO_LARGE.value, reason, receive_count))
    completed.put(task.task_id, reply_bytes)
    if results is not None and cache_key is not None and known is None:
        results.put(cache_key, result)
    detail = f"answered from the result of identical inputs ({cache_key[1][:12]})" \
        if known is not None and cache_key is not None else ""
    return Disposition(Outcome.SUCCEEDED, task.task_id, kind, receive_count, reply=reply, delete=True,
                       detail=detail)


# ---------------------------------------------------------------------------------------------------
# I/O: the pool loop


def receive_messages(client: SQSClient, queue_url: str, max_messages: int) -> list[dict[str, Any]]:
    """Long-poll (1 s) up to ``max_messages`` (1..10) messages with their receive counts and attributes."""
    response = client.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=RECEIVE_WAIT_S,
        AttributeNames=["ApproximateReceiveCount"], MessageAttributeNames=["All"])
    return [dict(m) for m in response.get("Messages", [])]


def settle(client: SQSClient, urls: QueueUrls, queue_url: str, message: Mapping[str, Any],
           disposition: Disposition, deletes: DeferredDeletes | None = None) -> None:
    """Carry out ``disposition``: send the reply, then the dead letter, then delete the message — at once, or
    handed to ``deletes`` (deleted with others within its deadline) once the reply and dead letter are sent."""
    reply_body = disposition.reply_body
    if reply_body is not None:
        client.send_message(QueueUrl=urls.results, MessageBody=reply_body)
    if disposition.dead_letter is not None:
        client.send_message(QueueUrl=urls.dead_letters, MessageBody=disposition.dead_letter.body,
                            MessageAttributes=disposition.dead_letter.message_attributes())
    if disposition.delete:
        if deletes is not None:
            deletes.add(message["ReceiptHandle"])
        else:
            client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


# SQS limits of one SendMessageBatch: 10 entries and 256 KiB in all (kept below it).
SEND_BATCH_ENTRIES = 10
SEND_BATCH_BYTES = 240 * 1024


def _send_chunks(bodies: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """``bodies`` (position, message body) in chunks SendMessageBatch accepts (entries and bytes)."""
    chunks: list[list[tuple[int, str]]] = []
    size = 0
    for position, body in bodies:
        length = len(body.encode())
        if not chunks or len(chunks[-1]) >= SEND_BATCH_ENTRIES or size + length > SEND_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append((position, body))
        size += length
    return chunks


def settle_batch(client: SQSClient, urls: QueueUrls, queue_url: str,
                 settled: Sequence[tuple[Mapping[str, Any], Disposition]],
                 deletes: DeferredDeletes | None = None) -> set[int]:
    """Carry out the dispositions of one receive with SQS's batch calls: the replies (SendMessageBatch),
    then the dead letters, then the deletes (DeleteMessageBatch, or handed to ``deletes``) — a message whose
    reply was not sent is not deleted, so it is delivered again (and answered from the cache). Returns the
    positions not settled (a deferred delete that fails is logged by ``deletes``; that message is delivered
    again and answered from the cache)."""
    replies = [(position, body) for position, (_, disposition) in enumerate(settled)
               if (body := disposition.reply_body) is not None]
    unsent: set[int] = set()
    for chunk in _send_chunks(replies):
        answer = client.send_message_batch(QueueUrl=urls.results, Entries=[
            {"Id": str(position), "MessageBody": body} for position, body in chunk])
        unsent |= {int(failed["Id"]) for failed in answer.get("Failed", [])}
    for position, (_, disposition) in enumerate(settled):
        if disposition.dead_letter is not None and position not in unsent:
            client.send_message(QueueUrl=urls.dead_letters, MessageBody=disposition.dead_letter.body,
                                MessageAttributes=disposition.dead_letter.message_attributes())
    to_delete = [(position, message) for position, (message, disposition) in enumerate(settled)
                 if disposition.delete and position not in unsent]
    if deletes is not None:
        for _, message in to_delete:
            deletes.add(message["ReceiptHandle"])
        return unsent
    for start in range(0, len(to_delete), SEND_BATCH_ENTRIES):
        deleted = client.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(position), "ReceiptHandle": message["ReceiptHandle"]}
            for position, message in to_delete[start:start + SEND_BATCH_ENTRIES]])
        unsent |= {int(failed["Id"]) for failed in deleted.get("Failed", [])}
    return unsent


# A settled message's delete waits at most this long (s), and never more than a quarter of the queue's
# visibility timeout, for others to go with it.
DEFERRED_DELETE_MAX_S = 1.0


def deferred_delete_wait_s(visibility_timeout_s: float) -> float:
    """How long (s) a settled message's delete may wait for company: DEFERRED_DELETE_MAX_S, at most a quarter of
    the queue's visibility timeout (s), so that no message is delivered again while its delete waits."""
    return min(DEFERRED_DELETE_MAX_S, visibility_timeout_s / 4)


class DeferredDeletes:
    """Deletes of settled messages of one queue, sent together (DeleteMessageBatch, up to ten at once) instead of
    one call each on the pool's loop.

    A message is added once its reply (and dead letter) is sent, so it is answered whatever becomes of its
    delete; until deleted it stays invisible (the visibility timeout of its last receive or extension). The
    handles go out when ten are waiting, when the oldest has waited ``max_wait_s`` (at most a quarter of the
    visibility timeout, so none is delivered again meanwhile), and on :meth:`flush` (the pool's stop). A
    delete that fails is logged: that message is delivered again and answered from the idempotency cache, as
    when a process stops between a reply and its delete. Used from one event loop; the calls run in a thread.
    """

    def __init__(self, client: SQSClient, queue_url: str, *, max_wait_s: float) -> None:
        self._client = client
        self._queue_url = queue_url
        self._max_wait_s = max(0.0, max_wait_s)
        self._handles: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the deletes are sent from (the pool's); :meth:`add` may then be called from its
        worker threads."""
        self._loop = loop

    def add(self, receipt_handle: str) -> None:
        """Delete the message of ``receipt_handle`` within ``max_wait_s`` (sooner once ten wait). Safe to call
        from a worker thread of the bound loop."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("DeferredDeletes.add before bind(loop)")
        loop.call_soon_threadsafe(self._add, receipt_handle)

    def _add(self, receipt_handle: str) -> None:
        self._handles.append(receipt_handle)
        if len(self._handles) >= SEND_BATCH_ENTRIES:
            self._send_now()
        elif self._timer is None:
            assert self._loop is not None
            self._timer = self._loop.call_later(self._max_wait_s, self._send_now)

    def _send_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._handles:
            chunk, self._handles = self._handles[:SEND_BATCH_ENTRIES], self._handles[SEND_BATCH_ENTRIES:]
            task = asyncio.ensure_future(asyncio.to_thread(self._delete, chunk))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def _delete(self, handles: list[str]) -> None:
        self.calls += 1
        try:
            answer = self._client.delete_message_batch(QueueUrl=self._queue_url, Entries=[
                {"Id": str(position), "ReceiptHandle": handle} for position, handle in enumerate(handles)])
        except (BotoCoreError, ClientError) as exc:
            logger.error("could not delete %d settled messages on %s (they will be delivered again and answered "
                         "from the cache): %s", len(handles), self._queue_url, exc)
            return
        for failed in answer.get("Failed", []):
            logger.error("could not delete a settled message (it will be delivered again): %s", failed)

    def waiting(self) -> int:
        """Handles not yet sent."""
        return len(self._handles)

    async def flush(self) -> None:
        """Send every waiting delete and wait for every delete sent."""
        await asyncio.sleep(0)  # handles added from threads just before
        self._send_now()
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


async def _keep_invisible(client: SQSClient, queue_url: str, receipt_handle: str, timeout_s: int) -> None:
    """Extend the message's visibility by ``timeout_s`` every half timeout while its handler runs."""
    while True:
        await asyncio.sleep(max(timeout_s / 2, 0.5))
        try:
            await asyncio.to_thread(client.change_message_visibility, QueueUrl=queue_url,
                                    ReceiptHandle=receipt_handle, VisibilityTimeout=timeout_s)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("could not extend the visibility of a message on %s: %s", queue_url, exc)


async def _release(client: SQSClient, queue_url: str, messages: list[dict[str, Any]]) -> None:
    """Make received but unprocessed messages visible again at once (on stop)."""
    for message in messages:
        with contextlib.suppress(BotoCoreError, ClientError):
            await asyncio.to_thread(client.change_message_visibility, QueueUrl=queue_url,
                                    ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def handle_message(client: SQSClient, urls: QueueUrls, queue_url: str, message: dict[str, Any], *,
                         registry: HandlerRegistry, completed: IdempotencyCache, max_receive_count: int,
                         visibility_timeout_s: int, kind: str, results: ResultCache | None = None,
                         deletes: DeferredDeletes | None = None) -> Disposition:
    """Process one message (handler in a thread, visibility kept), settle it (its delete handed to ``deletes``
    when given), and log one line."""
    started = time.perf_counter()
    keeper = asyncio.create_task(
        _keep_invisible(client, queue_url, message["ReceiptHandle"], visibility_timeout_s))
    try:
        disposition = await asyncio.to_thread(
            process_message, message, registry=registry, max_receive_count=max_receive_count,
            completed=completed, source_queue=queue_url, results=results)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    settled = True
    try:
        await asyncio.to_thread(settle, client, urls, queue_url, message, disposition, deletes)
    except (BotoCoreError, ClientError) as exc:
        settled = False
        logger.error("task %s: could not send its reply / dead letter or delete it (%s); "
                     "it will be delivered again", disposition.task_id or "?", exc)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    logger.info("task=%s kind=%s outcome=%s ms=%.1f receive=%d%s%s", disposition.task_id or "?",
                disposition.kind or kind, disposition.outcome.value, elapsed_ms, disposition.receive_count,
                "" if settled else " settle=failed",
                f" detail={disposition.detail!r}" if disposition.detail else "",
                exc_info=disposition.error if disposition.outcome is Outcome.HANDLER_FAILED else None)
    return disposition


async def handle_batch(client: SQSClient, urls: QueueUrls, queue_url: str, messages: list[dict[str, Any]], *,
                       registry: HandlerRegistry, completed: IdempotencyCache, max_receive_count: int,
                       visibility_timeout_s: int, kind: str, results: ResultCache | None = None,
                       deletes: DeferredDeletes | None = None) -> list[Disposition]:
    """Process the messages of one receive one after the other (in a worker thread, each message's visibility
    kept until it is processed) and settle them as they become ready: while one group of replies is being sent
    (:func:`settle_batch`: one SendMessageBatch and one DeleteMessageBatch), the messages processed meanwhile
    wait and go out together in the next group. A reply thus leaves as soon as the endpoint is free, not when
    the whole receive is done (ten plans of a portfolio's units solved one after the other no longer all wait
    for the tenth), and a fast batch still costs a few requests to the endpoint. One log line per message, with
    the ms from the receive's start to its settlement. With ``deletes`` the groups' deletes are handed to it.
    """
    started = time.perf_counter()
    keepers = [asyncio.create_task(_keep_invisible(client, queue_url, message["ReceiptHandle"], visibility_timeout_s))
               for message in messages]
    ready: list[tuple[int, Disposition]] = []
    dispositions: list[Disposition] = []
    unsettled: set[int] = set()
    settled_ms: dict[int, float] = {}

    async def settle_ready() -> None:
        """Settle every ready disposition, group after group, until none is waiting."""
        while ready:
            group = list(ready)
            ready.clear()
            try:
                failed = await asyncio.to_thread(settle_batch, client, urls, queue_url,
                                                 [(messages[position], disposition) for position, disposition in group],
                                                 deletes)
                unsettled.update(group[index][0] for index in failed)
            except (BotoCoreError, ClientError) as exc:
                unsettled.update(position for position, _ in group)
                logger.error("%d of a batch of %d tasks: could not send the replies / dead letters or delete them "
                             "(%s); they will be delivered again", len(group), len(messages), exc)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            settled_ms.update((position, elapsed_ms) for position, _ in group)

    settling: asyncio.Task[None] | None = None
    try:
        for position, message in enumerate(messages):
            disposition = await asyncio.to_thread(
                process_message, message, registry=registry, max_receive_count=max_receive_count,
                completed=completed, source_queue=queue_url, results=results)
            keepers[position].cancel()
            dispositions.append(disposition)
            ready.append((position, disposition))
            if settling is None or settling.done():
                settling = asyncio.create_task(settle_ready())
        if settling is not None:
            await settling
    finally:
        for keeper in keepers:
            keeper.cancel()
        for keeper in keepers:
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if settling is not None and not settling.done():
            settling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settling
    for position, disposition in enumerate(dispositions):
        logger.info("task=%s kind=%s outcome=%s ms=%.1f receive=%d batch=%d%s%s", disposition.task_id or "?",
                    disposition.kind or kind, disposition.outcome.value, settled_ms.get(position, 0.0),
                    disposition.receive_count, len(messages), " settle=failed" if position in unsettled else "",
                    f" detail={disposition.detail!r}" if disposition.detail else "",
                    exc_info=disposition.error if disposition.outcome is Outcome.HANDLER_FAILED else None)
    return dispositions


async def run_pool(settings: Settings, kind: str, stop: asyncio.Event, *,
                   registry: HandlerRegistry | None = None, client: SQSClient | None = None,
                   max_messages: int = 1, completed: IdempotencyCache | None = None,
                   results: ResultCache | None = None) -> None:
    """Serve the ``kind`` request queue ("forecast", "optimisation" or "backtest") until ``stop`` is set.

    ``max_messages`` (1..10) are received per long poll (1 s): one alone is handled and settled on its own;
    several (e.g. the nine forecasts of a cycle, or the cycles of a portfolio's units deciding at once) are
    handled one after the other and settled with SQS's batch calls as their replies become ready
    (:func:`handle_batch`), a few requests to the endpoint instead of three per message. A settled message's
    delete leaves the loop (:class:`DeferredDeletes`): the next receive starts once the reply is sent, and
    the deletes of messages settled within DEFERRED_DELETE_MAX_S go out in one DeleteMessageBatch. The loop notices
    ``stop`` within about a second plus the messages in hand. Messages received but not yet processed when
    ``stop`` is set are made visible again at once. Queues must exist
    (:func:`pools.sqs.ensure_queues`). Without ``registry`` the platform's algorithms are served (backtest
    runs need a registry with the backtest kind: :func:`backtest.pool_task.backtest_registry`). The
    visibility timeout and receive count are the queue's (:func:`pools.sqs.queue_policy`).
    """
    if kind not in REQUEST_KINDS:
        raise ValueError(f"unknown request kind {kind!r}: expected one of {', '.join(REQUEST_KINDS)}")
    if not 1 <= max_messages <= 10:
        raise ValueError(f"max_messages must be within 1..10 (got {max_messages})")
    registry = registry if registry is not None else default_registry()
    client = client if client is not None else sqs_client(settings)
    completed = completed if completed is not None else IdempotencyCache()
    results = results if results is not None else ResultCache()
    urls = await asyncio.to_thread(queue_urls, client, settings)
    queue_url = urls.request_queue(kind)
    policy = queue_policy(settings, kind)
    deletes = DeferredDeletes(client, queue_url,
                              max_wait_s=deferred_delete_wait_s(policy.visibility_timeout_s))
    deletes.bind(asyncio.get_running_loop())
    logger.info("%s pool serving %s (algorithms: %s)", kind, queue_url, ", ".join(registry.known(kind)))
    try:
        await _serve(client, urls, queue_url, stop, registry=registry, completed=completed, results=results,
                     policy=policy, kind=kind, max_messages=max_messages, deletes=deletes)
    finally:
        await deletes.flush()
    logger.info("%s pool stopped", kind)


async def _serve(client: SQSClient, urls: QueueUrls, queue_url: str, stop: asyncio.Event, *,
                 registry: HandlerRegistry, completed: IdempotencyCache, results: ResultCache,
                 policy: QueuePolicy, kind: str, max_messages: int, deletes: DeferredDeletes) -> None:
    """The pool's loop (:func:`run_pool`): receive, handle, settle, until ``stop`` is set."""
    while not stop.is_set():
        try:
            messages = await asyncio.to_thread(receive_messages, client, queue_url, max_messages)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("receive from %s failed: %s", queue_url, exc)
            await _wait(stop, RECEIVE_ERROR_BACKOFF_S)
            continue
        if len(messages) > 1 and not stop.is_set():
            await handle_batch(client, urls, queue_url, messages, registry=registry, completed=completed,
                               results=results, max_receive_count=policy.max_receive_count,
                               visibility_timeout_s=policy.visibility_timeout_s, kind=kind, deletes=deletes)
            continue
        for position, message in enumerate(messages):
            if stop.is_set():
                await _release(client, queue_url, messages[position:])
                break
            await handle_message(client, urls, queue_url, message, registry=registry, completed=completed,
                                 results=results, max_receive_count=policy.max_receive_count,
                                 visibility_timeout_s=policy.visibility_timeout_s, kind=kind, deletes=deletes)
