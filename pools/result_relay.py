"""Relay worker replies from the results queue to the Temporal activities waiting for them.

For a result: archive it (indexed under the cycle = the waiting workflow's id), then complete the
waiting activity with a small :class:`~pools.replies.WorkerAnswer` naming the archive key. For an
error reply: fail the activity with a non-retryable ``ApplicationError`` of type
:data:`~pools.replies.WORKER_FAILED_ERROR_TYPE`. An activity that is already completed, failed, timed
out or unknown ("not found") is logged and the reply deleted: relaying is idempotent.

A reply that cannot be relayed (archive or Temporal unavailable) stays on the queue and is retried
after the visibility timeout; after ``max_receive_count`` attempts it is dead-lettered.

A reply addressed to another Temporal worker process's request exchange (several worker processes share the
results queue: replicas, or the old and the new process of a rolling deployment) is released at once
(visibility 0), so another relay receives it within a receive, not a visibility timeout later; it is not
dead-lettered for its receive count but once it is older (SentTimestamp) than ``elsewhere_max_age_s`` — by
then its asker has sent the request again (the cycle's worker-answer timeout) or is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from google.protobuf.message import Message
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from archive.store import Archive
from pools.replies import WORKER_FAILED_ERROR_TYPE, WorkerAnswer
from pools.runtime import DeadLetter, DeferredDeletes, deferred_delete_wait_s, receive_count_of
from pools.shared_requests import SharedRequests, exchange_reply_to
from pools.sqs import MalformedMessageError, QueueUrls, decode_reply, queue_urls, sqs_client
from settings import Settings
from vpp.v1 import worker_pb2

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

RESULT_KINDS = ("forecast", "optimisation", "backtest")
RELAY_BATCH = 10
# Replies being relayed at once (archived and their activities completed) while the next are received.
RELAY_CONCURRENCY = 32
RECEIVE_WAIT_S = 1
RECEIVE_ERROR_BACKOFF_S = 1.0
RESULT_STATUS_PREFIX = "RESULT_STATUS_"
# relay_reply's outcome for a reply to another process's request exchange: left on the queue for its relay.
ELSEWHERE = "elsewhere"


def reply_kind(reply: worker_pb2.WorkerReply) -> str:
    """"forecast", "optimisation" or "error": what ``reply`` carries; ValueError if it carries nothing."""
    kind = reply.WhichOneof("result")
    if kind is None:
        raise ValueError(f"reply to task {reply.task_id!r} carries neither a result nor an error")
    return kind


def result_of(reply: worker_pb2.WorkerReply) -> Message:
    """The result message of a result reply; ValueError for an error reply or an empty one."""
    kind = reply_kind(reply)
    if kind not in RESULT_KINDS:
        raise ValueError(f"reply to task {reply.task_id!r} is an error, not a result")
    result: Message = getattr(reply, kind)
    return result


def archive_label(reply: worker_pb2.WorkerReply) -> str:
    """Index label of a result: ``"forecast-result/<product>"``, ``"optimisation-result/"`` or
    ``"backtest-result/<run id>"``."""
    kind = reply_kind(reply)
    if kind not in RESULT_KINDS:
        raise ValueError(f"reply to task {reply.task_id!r} is an error, not a result")
    detail = reply.forecast.product if kind == "forecast" else reply.backtest.run_id if kind == "backtest" else ""
    return f"{kind}-result/{detail or ''}"


def answer_for_reply(reply: worker_pb2.WorkerReply, archive_key: str) -> WorkerAnswer:
    """The :class:`WorkerAnswer` completing the activity that waits for a result ``reply``.

    ``archive_key`` is where the result was archived; ``status`` is the ResultStatus name without its
    prefix ("OK", "OPTIMAL", ...); ``compute_ms`` is the forecast's compute_ms, the plan's solve_ms or the
    backtest run's wall time (ms). ValueError for an error reply or an empty one.
    """
    kind = reply_kind(reply)
    if kind == "forecast":
        forecast = reply.forecast
        status, reason, compute_ms = forecast.status, forecast.status_reason, forecast.compute_ms
    elif kind == "optimisation":
        plan = reply.optimisation
        status, reason, compute_ms = plan.status, plan.status_reason, plan.solve_ms
    elif kind == "backtest":
        run = reply.backtest
        status, reason, compute_ms = run.status, run.status_reason, run.wall_time_s * 1000.0
    else:
        raise ValueError(f"reply to task {reply.task_id!r} is an error ({reply.error.code}), not a result")
    status_name = worker_pb2.ResultStatus.Name(status).removeprefix(RESULT_STATUS_PREFIX)
    return WorkerAnswer(task_id=reply.task_id, kind=kind, archive_key=archive_key, status=status_name,
                        status_reason=reason, compute_ms=float(compute_ms))


def failure_message(reply: worker_pb2.WorkerReply) -> str:
    """The failure message of an error ``reply``: ``"<code>: <message> (task ..., receive N)"``."""
    if reply_kind(reply) != "error":
        raise ValueError(f"reply to task {reply.task_id!r} is a result, not an error")
    error = reply.error
    return (f"{error.code or 'worker_error'}: {error.message or '(no message)'} "
            f"(task {reply.task_id or '?'}, receive {error.receive_count})")


def failure_for_reply(reply: worker_pb2.WorkerReply) -> ApplicationError:
    """The non-retryable ``ApplicationError`` (type WORKER_FAILED_ERROR_TYPE) for an error ``reply``.

    Its details are the error code and the receive count.
    """
    return ApplicationError(failure_message(reply), reply.error.code, reply.error.receive_count,
                            type=WORKER_FAILED_ERROR_TYPE, non_retryable=True)


def _waiting_activity(reply: worker_pb2.WorkerReply) -> bool:
    return bool(reply.reply_to.workflow_id and reply.reply_to.activity_id)


async def relay_reply(reply: worker_pb2.WorkerReply, temporal_client: Client, archive: Archive,
                      shared: SharedRequests | None = None) -> str:
    """Archive a result reply and complete (or fail, for an error reply) its waiting activity; a reply to a
    task of the process's request exchange ``shared`` is archived (under no cycle: each cycle that asked
    indexes it) and handed to the exchange instead.

    Returns what happened ("completed", "failed", "already_closed", "no_activity", "shared",
    "shared_failed", or ELSEWHERE for a reply to another process's exchange, which must stay on the queue).
    Raises on an archive or Temporal failure other than "not found".
    """
    kind = reply_kind(reply)
    reply_to = reply.reply_to
    if exchange_reply_to(reply):
        if shared is None or not shared.addressed_here(reply):
            return ELSEWHERE
        if kind in RESULT_KINDS:
            key = await asyncio.to_thread(archive.put, result_of(reply), label=archive_label(reply))
            shared.resolve(reply.task_id, answer_for_reply(reply, key), result_of(reply))
            return "shared"
        shared.fail(reply.task_id, failure_for_reply(reply))
        return "shared_failed"
    answer: WorkerAnswer | None = None
    if kind in RESULT_KINDS:
        key = await asyncio.to_thread(archive.put, result_of(reply),
                                      cycle_id=reply_to.workflow_id or None, label=archive_label(reply))
        answer = answer_for_reply(reply, key)
    if not _waiting_activity(reply):
        return "no_activity"
    handle = temporal_client.get_async_activity_handle(
        workflow_id=reply_to.workflow_id, run_id=reply_to.run_id or None, activity_id=reply_to.activity_id)
    try:
        if answer is not None:
            await handle.complete(answer)
            return "completed"
        await handle.fail(failure_for_reply(reply))
        return "failed"
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return "already_closed"
        raise


# What becomes of a received reply: deleted (relayed or dead-lettered), left for SQS to deliver again after
# the visibility timeout, or released at once for another process's relay.
Settlement = Literal["settled", "retry", "release"]


def message_age_s(message: Mapping[str, Any], now_s: float) -> float:
    """Seconds since SQS received ``message`` (its SentTimestamp attribute, ms since the epoch) at ``now_s``
    (seconds since the epoch); 0 when the attribute is absent or unreadable."""
    text = (message.get("Attributes") or {}).get("SentTimestamp")
    try:
        return max(0.0, now_s - int(text) / 1000.0) if text is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


async def _relay_message(client: SQSClient, urls: QueueUrls, message: Mapping[str, Any],
                         temporal_client: Client, archive: Archive, max_receive_count: int,
                         shared: SharedRequests | None = None,
                         elsewhere_max_age_s: float = 60.0) -> Settlement:
    """Relay one reply (dead-lettering one that cannot be relayed): "settled" if it may be deleted, "retry"
    if it is left for SQS to deliver again, "release" if it is another process's and must be made visible at
    once (until it is older than ``elsewhere_max_age_s``, seconds, then it is dead-lettered)."""
    started = time.perf_counter()
    receive_count = receive_count_of(message)
    body = message.get("Body", "")
    task_id = "?"
    dead_reason = ""
    try:
        reply = decode_reply(body)
        task_id = reply.task_id or "?"
        outcome = await relay_reply(reply, temporal_client, archive, shared)
        if outcome == ELSEWHERE:
            age_s = message_age_s(message, time.time())
            if age_s < elsewhere_max_age_s:
                return "release"  # another process's exchange waits for it: its relay will receive it
            dead_reason = (f"{ELSEWHERE}: no relay took the reply to {reply.reply_to.workflow_id} "
                           f"within {elsewhere_max_age_s:.0f} s (its asker has resent the request or is gone)")
    except (MalformedMessageError, ValueError) as exc:
        outcome, dead_reason = "invalid_message", f"invalid_message: {exc}"
    except Exception as exc:
        if receive_count < max_receive_count:
            logger.warning("reply of task %s not relayed (receive %d of %d), will retry: %s",
                           task_id, receive_count, max_receive_count, exc, exc_info=exc)
            return "retry"
        outcome, dead_reason = "relay_failed", f"relay_failed: {type(exc).__name__}: {exc}"
    if dead_reason:
        letter = DeadLetter(body=body, error_code=outcome, error_message=dead_reason[:2000],
                            receive_count=receive_count, source_queue=urls.results)
        await asyncio.to_thread(client.send_message, QueueUrl=urls.dead_letters, MessageBody=body,
                                MessageAttributes=letter.message_attributes())
    logger.info("reply task=%s outcome=%s ms=%.1f%s", task_id, outcome, (time.perf_counter() - started) * 1e3,
                f" detail={dead_reason!r}" if dead_reason else "")
    return "settled"


def _delete_settled(client: SQSClient, urls: QueueUrls, messages: list[dict[str, Any]]) -> None:
    """Delete settled replies from the results queue with one DeleteMessageBatch (up to RELAY_BATCH); a
    reply that could not be deleted is logged and delivered again (relaying is idempotent)."""
    if not messages:
        return
    answer = client.delete_message_batch(QueueUrl=urls.results, Entries=[
        {"Id": str(position), "ReceiptHandle": message["ReceiptHandle"]} for position, message in enumerate(messages)])
    for failed in answer.get("Failed", []):
        logger.error("could not delete a relayed reply (it will be delivered again): %s", failed)


def _release(client: SQSClient, urls: QueueUrls, messages: list[dict[str, Any]]) -> None:
    """Make replies for another process's relay visible again at once (one ChangeMessageVisibilityBatch); one
    that could not be released is delivered again after the visibility timeout."""
    if not messages:
        return
    answer = client.change_message_visibility_batch(QueueUrl=urls.results, Entries=[
        {"Id": str(position), "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0}
        for position, message in enumerate(messages)])
    for failed in answer.get("Failed", []):
        logger.warning("could not release a reply for another process (delivered after its timeout): %s", failed)


async def _relay_batch(client: SQSClient, urls: QueueUrls, messages: list[dict[str, Any]],
                       temporal_client: Client, archive: Archive, max_receive_count: int,
                       shared: SharedRequests | None = None, elsewhere_max_age_s: float = 60.0,
                       deletes: DeferredDeletes | None = None) -> None:
    """Relay the replies of one receive concurrently, then delete the settled ones together (handed to
    ``deletes``, which sends them with those of other receives, when given) and release the ones for another
    process's relay together; an SQS error settling them is logged (the replies are delivered again)."""
    try:
        settled = await asyncio.gather(*(_relay_message(client, urls, message, temporal_client, archive,
                                                        max_receive_count, shared, elsewhere_max_age_s)
                                         for message in messages))
        done = [message for message, outcome in zip(messages, settled, strict=True) if outcome == "settled"]
        if deletes is not None:
            for message in done:
                deletes.add(message["ReceiptHandle"])
        else:
            await asyncio.to_thread(_delete_settled, client, urls, done)
        await asyncio.to_thread(_release, client, urls, [
            message for message, outcome in zip(messages, settled, strict=True) if outcome == "release"])
    except (BotoCoreError, ClientError) as exc:
        logger.error("could not settle replies on %s (they will be delivered again): %s", urls.results, exc)


async def run_result_relay(settings: Settings, temporal_client: Client, archive: Archive, stop: asyncio.Event,
                           *, sqs: SQSClient | None = None, shared: SharedRequests | None = None) -> None:
    """Relay replies from the results queue until ``stop`` is set (noticed within about a second); replies to
    the request exchange ``shared`` (the process's cycle activities') are handed to it."""
    client = sqs if sqs is not None else sqs_client(settings)
    urls = await asyncio.to_thread(queue_urls, client, settings)
    logger.info("result relay serving %s", urls.results)
    slots = asyncio.Semaphore(max(1, RELAY_CONCURRENCY // RELAY_BATCH))
    # Relayed replies are deleted together, within a second (pools.runtime.DeferredDeletes), not one call per receive.
    deletes = DeferredDeletes(client, urls.results,
                              max_wait_s=deferred_delete_wait_s(settings.stack.visibility_timeout_s))
    deletes.bind(asyncio.get_running_loop())
    in_flight: set[asyncio.Task[None]] = set()

    def finished(task: asyncio.Task[None]) -> None:
        in_flight.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error("relaying a reply failed (it will be delivered again)", exc_info=task.exception())

    while not stop.is_set():
        try:
            response = await asyncio.to_thread(
                client.receive_message, QueueUrl=urls.results, MaxNumberOfMessages=RELAY_BATCH,
                WaitTimeSeconds=RECEIVE_WAIT_S, AttributeNames=["ApproximateReceiveCount", "SentTimestamp"])
        except (BotoCoreError, ClientError) as exc:
            logger.warning("receive from %s failed: %s", urls.results, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=RECEIVE_ERROR_BACKOFF_S)
            continue
        # Replies are independent (each completes its own activity): relay the replies of a receive
        # concurrently, up to RELAY_CONCURRENCY // RELAY_BATCH receives at once, and receive the next ones
        # meanwhile; the settled replies of the receives of about a second are deleted with one call.
        messages = [dict(message) for message in response.get("Messages", [])]
        if not messages:
            continue
        await slots.acquire()
        task = asyncio.create_task(_relay_batch(client, urls, messages, temporal_client, archive,
                                                settings.stack.max_receive_count, shared,
                                                float(settings.cycle.worker_answer_timeout_s), deletes))
        in_flight.add(task)
        task.add_done_callback(finished)
    if in_flight:
        await asyncio.gather(*in_flight, return_exceptions=True)
    await deletes.flush()
    logger.info("result relay stopped")
