"""Worker requests of the cycles of one Temporal worker process, answered in the process.

A cycle's activity sends its worker requests (forecasts, the optimisation) through the process's
:class:`SharedRequests` and waits there for the answers, so it completes like any activity (and may run as a
local activity) instead of being completed asynchronously by the result relay.

Identical requests are sent once: a forecast belongs to a region and a round, not to a unit, and the units
of one region deciding from the same snapshot build byte-identical forecast requests whose id says what is
forecast (:func:`algorithms.market.cycle_requests.shared_forecast_id`). A request asked for while one with
the same id and inputs (:func:`exchange_task_id`) is outstanding waits for that task's answer, and one
answered among the last ``remembered`` is answered at once. The result is archived once
(content-addressed); each cycle indexes it under its own id. An optimisation request's id names its cycle,
so it is shared only with a retry of the same activity.

Tasks are addressed to the process's exchange (``ReplyTo.workflow_id`` = :attr:`SharedRequests.exchange_id`,
no activity id), and the process's result relay hands their replies here (:meth:`SharedRequests.resolve`,
:meth:`SharedRequests.fail`) instead of completing an activity. A reply addressed to another process's
exchange is left on the results queue for that process's relay (SQS delivers it again after the visibility
timeout; when that process is gone, it is dead-lettered after ``max_receive_count`` receives).

The forecasters are pure and deterministic (the forecast pool's result cache relies on it too), so sharing
changes no answer: each cycle gets exactly the result its own request would have got.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from algorithms.common.content_hash import inputs_hash
from pools.replies import WorkerAnswer
from pools.sqs import QueueUrls, send_tasks
from vpp.v1 import worker_pb2

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# ReplyTo.workflow_id of every exchange: what the result relay recognises an exchange's reply by.
EXCHANGE_PREFIX = "request-exchange/"
# Answers kept per process (a 288-interval, 9-quantile forecast is ~21 kB): a round of a large portfolio asks
# for a few dozen distinct forecasts and one optimisation per unit.
DEFAULT_REMEMBERED = 256


# The worker requests an exchange sends: a forecast or an optimisation.
WorkerRequest = worker_pb2.ForecastRequest | worker_pb2.OptimisationRequest


@dataclass(frozen=True)
class SharedAnswer:
    """One answer as a cycle receives it: the WorkerAnswer naming its archive key, and the result itself
    (a ForecastResult or an OptimisationResult)."""

    answer: WorkerAnswer
    result: Message


@dataclass(frozen=True)
class RequestsAsked:
    """What one ask got: the answers in the order asked, how many tasks it sent to SQS, and how many
    requests were answered by a task another ask had sent (outstanding or answered before)."""

    answers: tuple[SharedAnswer, ...]
    sent: int
    shared: int


@dataclass
class _Outstanding:
    future: asyncio.Future[SharedAnswer]
    sent_at: float


def exchange_task_id(request: WorkerRequest) -> str:
    """The task id of ``request`` at the exchange: its request id and the first 16 hex digits of its inputs
    hash, so that two requests under one id with different inputs (a workflow id run again) never share an
    answer, here or in a pool's idempotency cache."""
    return f"{request.request_id}#{(request.inputs_hash or inputs_hash(request))[:16]}"


def exchange_reply_to(reply: worker_pb2.WorkerReply) -> bool:
    """Whether ``reply`` answers a task of an exchange (of this process or another one)."""
    return reply.reply_to.workflow_id.startswith(EXCHANGE_PREFIX) and not reply.reply_to.activity_id


class SharedRequests:
    """The worker requests of one worker process, each sent once while outstanding (see the module
    docstring). One per process, shared by the cycle activities and the result relay; used from one event
    loop."""

    def __init__(self, sqs: SQSClient | Any, queues: QueueUrls | Any, *, remembered: int = DEFAULT_REMEMBERED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if remembered < 1:
            raise ValueError(f"remembered forecasts must be at least 1 (got {remembered})")
        self._sqs = sqs
        self._queues = queues
        self._remembered = remembered
        self._clock = clock
        self.exchange_id = f"{EXCHANGE_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._outstanding: dict[str, _Outstanding] = {}
        self._answered: OrderedDict[str, SharedAnswer] = OrderedDict()
        self.tasks_sent = 0
        self.requests_shared = 0

    def addressed_here(self, reply: worker_pb2.WorkerReply) -> bool:
        """Whether ``reply`` answers a task this exchange sent."""
        return exchange_reply_to(reply) and reply.reply_to.workflow_id == self.exchange_id

    async def ask(self, requests: Sequence[WorkerRequest], *, resend_after_s: float) -> RequestsAsked:
        """The answers to ``requests``, in order. Requests not outstanding and not answered recently are sent
        with as few SendMessageBatch calls as SQS allows; an outstanding one sent more than ``resend_after_s``
        seconds ago (its answer may be lost) is sent again. Raises the pool's failure (an ApplicationError of
        type WorkerFailed, from the relay) when a request is answered with an error, and SQS errors as they are.
        Cancelling an ask leaves the tasks outstanding for the other asks waiting for them."""
        loop = asyncio.get_running_loop()
        now = self._clock()
        waits: list[asyncio.Future[SharedAnswer]] = []
        to_send: list[worker_pb2.WorkerTask] = []
        shared = 0
        for request in requests:
            task_id = exchange_task_id(request)
            answered = self._answered.get(task_id)
            outstanding = self._outstanding.get(task_id)
            if answered is not None:
                self._answered.move_to_end(task_id)
                ready: asyncio.Future[SharedAnswer] = loop.create_future()
                ready.set_result(answered)
                waits.append(ready)
                shared += 1
            elif outstanding is not None and now - outstanding.sent_at < resend_after_s:
                waits.append(outstanding.future)
                shared += 1
            else:
                future: asyncio.Future[SharedAnswer] = (
                    outstanding.future if outstanding is not None else loop.create_future())
                future.add_done_callback(_retrieve)
                self._outstanding[task_id] = _Outstanding(future, now)
                waits.append(future)
                to_send.append(_task(task_id, worker_pb2.ReplyTo(workflow_id=self.exchange_id), request))
        if to_send:
            try:
                await asyncio.to_thread(send_tasks, self._sqs, self._queues, to_send)
            except BaseException as failure:
                for task in to_send:  # whoever waits for these learns that they were not sent
                    self._settle(task.task_id, failure=failure)
                raise
        self.tasks_sent += len(to_send)
        self.requests_shared += shared
        answers = await asyncio.gather(*(asyncio.shield(wait) for wait in waits))
        return RequestsAsked(answers=tuple(answers), sent=len(to_send), shared=shared)

    def resolve(self, task_id: str, answer: WorkerAnswer, result: Message) -> None:
        """The relay's answer to task ``task_id`` (archived as ``answer.archive_key``): every ask waiting for
        it gets it, and it is remembered for asks to come."""
        shared = SharedAnswer(answer=answer, result=result)
        self._answered[task_id] = shared
        self._answered.move_to_end(task_id)
        while len(self._answered) > self._remembered:
            self._answered.popitem(last=False)
        self._settle(task_id, answer=shared)

    def fail(self, task_id: str, failure: BaseException) -> None:
        """The relay's error reply to task ``task_id``: every ask waiting for it raises ``failure`` (not
        remembered: a later ask sends the request again)."""
        self._settle(task_id, failure=failure)

    def outstanding(self) -> int:
        """Tasks sent and not answered yet."""
        return len(self._outstanding)

    def _settle(self, task_id: str, *, answer: SharedAnswer | None = None,
                failure: BaseException | None = None) -> None:
        outstanding = self._outstanding.pop(task_id, None)
        if outstanding is None or outstanding.future.done():
            return
        if failure is not None:
            outstanding.future.set_exception(failure)
        else:
            outstanding.future.set_result(answer)  # type: ignore[arg-type]


def _task(task_id: str, reply_to: worker_pb2.ReplyTo, request: WorkerRequest) -> worker_pb2.WorkerTask:
    """The SQS task carrying ``request``."""
    if isinstance(request, worker_pb2.ForecastRequest):
        return worker_pb2.WorkerTask(task_id=task_id, reply_to=reply_to, forecast=request)
    return worker_pb2.WorkerTask(task_id=task_id, reply_to=reply_to, optimisation=request)


def _retrieve(future: asyncio.Future[SharedAnswer]) -> None:
    """Mark a failed shared future's exception as seen (the asks that wait for it raise it themselves)."""
    if not future.cancelled():
        future.exception()
