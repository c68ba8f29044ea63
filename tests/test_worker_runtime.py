"""Worker runtime, queues and result relay against a real SQS endpoint (moto server).

Stand-in pure handlers replace the real algorithms, so these tests pin the runtime's behaviour:
replies, dead letters, retries by visibility timeout, idempotency, and relaying to Temporal.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from algorithms.common.errors import InvalidRequestError
from algorithms.registry import HandlerRegistry, UnknownAlgorithmError
from archive import LocalArchive
from pools.replies import WORKER_FAILED_ERROR_TYPE, WorkerAnswer
from pools.result_relay import answer_for_reply, archive_label, failure_for_reply, run_result_relay
from pools.runtime import DeferredDeletes, IdempotencyCache, Outcome, ResultCache, process_message, run_pool
from pools.sqs import (
    MAX_TASK_BODY_BYTES,
    MalformedMessageError,
    MessageTooLargeError,
    QueueMissingError,
    QueueUrls,
    decode_reply,
    decode_task,
    encode_message,
    ensure_queues,
    queue_names,
    queue_urls,
    send_task,
    sqs_client,
)
from pools.timing import call_timed
from settings import Settings
from tests.temporal_env import dev_server_path
from vpp.v1 import worker_pb2

ALGORITHM = ("echo", "1")
# Upper bound on waiting for a message in these tests (s); not an assertion on speed.
PATIENCE_S = 20.0


def _forecast_task(task_id: str = "t-1", product: str = "ENERGY", algorithm: tuple[str, str] = ALGORITHM,
                   workflow_id: str = "cycle-1") -> worker_pb2.WorkerTask:
    task = worker_pb2.WorkerTask(task_id=task_id)
    task.reply_to.workflow_id = workflow_id
    task.reply_to.run_id = "run-1"
    task.reply_to.activity_id = f"forecast-{product}"
    task.forecast.request_id = f"req-{task_id}"
    task.forecast.product = product
    task.forecast.horizon_intervals = 2
    task.forecast.quantiles.extend([0.1, 0.9])
    task.forecast.algorithm.name, task.forecast.algorithm.version = algorithm
    return task


def echo_forecast(request: Message) -> Message:
    """Stand-in pure forecast: flat 50 $/MWh for every interval and quantile."""
    assert isinstance(request, worker_pb2.ForecastRequest)
    return worker_pb2.ForecastResult(
        request_id=request.request_id, algorithm=request.algorithm, product=request.product,
        horizon_intervals=request.horizon_intervals, quantiles=request.quantiles,
        price=[50.0] * (request.horizon_intervals * len(request.quantiles)),
        status=worker_pb2.RESULT_STATUS_OK, compute_ms=1.25)


@dataclass
class CountingHandler:
    """A handler that fails its first ``failures`` calls (a negative count: always), then echoes."""

    failures: int = 0
    error: Callable[[], Exception] = lambda: RuntimeError("solver crashed")
    calls: int = 0

    def __call__(self, request: Message) -> Message:
        self.calls += 1
        if self.failures < 0 or self.calls <= self.failures:
            raise self.error()
        return echo_forecast(request)


def _registry(handler: Callable[[Message], Message]) -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register("forecast", *ALGORITHM, handler)
    return registry


# ---------------------------------------------------------------------------------------------------
# Pure parts


def _message(task: worker_pb2.WorkerTask | str, receive_count: int = 1) -> dict[str, Any]:
    body = task if isinstance(task, str) else encode_message(task)
    return {"Body": body, "ReceiptHandle": "rh",
            "Attributes": {"ApproximateReceiveCount": str(receive_count)}}


def test_the_runner_writes_how_long_the_pure_handler_took_into_its_result() -> None:
    ticks = iter([10.0, 10.0125, 20.0, 20.25])
    request = _forecast_task().forecast
    forecast = call_timed(echo_forecast, request, clock=lambda: next(ticks))
    assert isinstance(forecast, worker_pb2.ForecastResult) and forecast.compute_ms == pytest.approx(12.5)
    plan = call_timed(lambda _: worker_pb2.OptimisationResult(status=worker_pb2.RESULT_STATUS_OPTIMAL), request,
                      clock=lambda: next(ticks))
    assert isinstance(plan, worker_pb2.OptimisationResult) and plan.solve_ms == pytest.approx(250.0)
    # The pool runtime times every handler it runs: the stand-in's own 1.25 ms is replaced by the measure.
    served = process_message(_message(_forecast_task()), registry=_registry(echo_forecast), max_receive_count=3,
                             completed=IdempotencyCache())
    assert served.reply is not None and served.reply.forecast.compute_ms != 1.25
    assert served.reply.forecast.price == [50.0] * 4


def test_process_message_success_and_duplicate_is_answered_from_cache() -> None:
    handler = CountingHandler()
    cache = IdempotencyCache()
    first = process_message(_message(_forecast_task()), registry=_registry(handler), max_receive_count=3,
                            completed=cache)
    again = process_message(_message(_forecast_task()), registry=_registry(handler), max_receive_count=3,
                            completed=cache)
    assert first.outcome is Outcome.SUCCEEDED and again.outcome is Outcome.DUPLICATE
    assert first.reply == again.reply
    assert first.reply is not None and first.reply.forecast.price == [50.0] * 4
    assert handler.calls == 1
    assert first.delete and first.dead_letter is None


def test_process_message_malformed_body_is_dead_lettered_without_reply() -> None:
    disposition = process_message(_message("%%% not base64 %%%"), registry=_registry(echo_forecast),
                                  max_receive_count=3, completed=IdempotencyCache(), source_queue="q")
    assert disposition.outcome is Outcome.INVALID_MESSAGE
    assert disposition.reply is None and disposition.delete
    assert disposition.dead_letter is not None
    assert disposition.dead_letter.error_message.startswith("invalid_message: ")
    assert disposition.dead_letter.body == "%%% not base64 %%%"


def test_process_message_task_without_request_gets_error_reply() -> None:
    task = worker_pb2.WorkerTask(task_id="t-empty")
    task.reply_to.workflow_id, task.reply_to.activity_id = "w", "a"
    disposition = process_message(_message(task), registry=_registry(echo_forecast), max_receive_count=3,
                                  completed=IdempotencyCache())
    assert disposition.outcome is Outcome.INVALID_MESSAGE
    assert disposition.reply is not None and disposition.reply.error.code == "invalid_message"


def test_process_message_transient_failure_is_left_then_dead_lettered_at_max() -> None:
    handler = CountingHandler(failures=-1)
    early = process_message(_message(_forecast_task(), receive_count=1), registry=_registry(handler),
                            max_receive_count=2, completed=IdempotencyCache())
    assert early.outcome is Outcome.RETRY and not early.delete and early.reply is None
    assert early.dead_letter is None
    last = process_message(_message(_forecast_task(), receive_count=2), registry=_registry(handler),
                           max_receive_count=2, completed=IdempotencyCache())
    assert last.outcome is Outcome.HANDLER_FAILED and last.delete
    assert last.reply is not None and last.reply.error.code == "handler_failed"
    assert "solver crashed" in last.reply.error.message and last.reply.error.receive_count == 2


def test_process_message_wrong_result_type_counts_as_handler_failure() -> None:
    disposition = process_message(_message(_forecast_task(), receive_count=3),
                                  registry=_registry(lambda r: worker_pb2.OptimisationResult()),
                                  max_receive_count=3, completed=IdempotencyCache())
    assert disposition.outcome is Outcome.HANDLER_FAILED
    assert disposition.reply is not None and "expected ForecastResult" in disposition.reply.error.message


def test_identical_forecast_inputs_are_computed_once_and_answered_to_each_request() -> None:
    handler = CountingHandler()
    results = ResultCache()
    first = process_message(_message(_forecast_task("unit-a")), registry=_registry(handler), max_receive_count=3,
                            completed=IdempotencyCache(), results=results)
    second = process_message(_message(_forecast_task("unit-b", workflow_id="cycle-2")), registry=_registry(handler),
                             max_receive_count=3, completed=IdempotencyCache(), results=results)
    assert handler.calls == 1 and results.hits == 1
    assert first.outcome is Outcome.SUCCEEDED and second.outcome is Outcome.SUCCEEDED
    assert first.reply is not None and second.reply is not None
    # Each request gets the answer addressed to it: its own task, activity, workflow and request id.
    assert second.reply.task_id == "unit-b" and second.reply.reply_to.workflow_id == "cycle-2"
    assert first.reply.forecast.request_id == "req-unit-a" and second.reply.forecast.request_id == "req-unit-b"
    assert second.reply.forecast.price == first.reply.forecast.price
    assert second.reply.forecast.compute_ms == first.reply.forecast.compute_ms
    assert "identical inputs" in second.detail and first.detail == ""


def _variant(task_id: str, change: Callable[[worker_pb2.ForecastRequest], None]) -> worker_pb2.WorkerTask:
    task = _forecast_task(task_id)
    change(task.forecast)
    return task


def test_forecasts_of_different_inputs_never_share_an_answer() -> None:
    handler = CountingHandler()
    results = ResultCache()

    def region(request: worker_pb2.ForecastRequest) -> None:
        request.region = "VIC1"

    def history(request: worker_pb2.ForecastRequest) -> None:
        request.history.price.append(123.0)

    def decision(request: worker_pb2.ForecastRequest) -> None:
        request.decision_time.seconds = 1_611_111_111

    def forged_hash(request: worker_pb2.ForecastRequest) -> None:
        # Another request's inputs_hash written into the message must not make its answer this one's.
        request.quantiles.append(0.5)
        request.inputs_hash = ResultCache.key("forecast", _forecast_task().forecast)[1]  # type: ignore[index]

    tasks = [_forecast_task("base"), _variant("region", region), _variant("history", history),
             _variant("decision", decision), _variant("forged", forged_hash)]
    for task in tasks:
        served = process_message(_message(task), registry=_registry(handler), max_receive_count=3,
                                 completed=IdempotencyCache(), results=results)
        assert served.outcome is Outcome.SUCCEEDED and served.detail == ""
    assert handler.calls == len(tasks) and results.hits == 0 and len(results) == len(tasks)
    # The forged request got the answer of its own inputs (three quantiles), not the base request's (two).
    forged = process_message(_message(_variant("forged-again", forged_hash)), registry=_registry(handler),
                             max_receive_count=3, completed=IdempotencyCache(), results=results)
    assert forged.reply is not None and list(forged.reply.forecast.quantiles) == [0.1, 0.9, 0.5]
    assert results.hits == 1


def test_a_failing_forecast_is_not_remembered_and_optimisations_are_not_cached() -> None:
    handler = CountingHandler(failures=1)
    results = ResultCache()
    failed = process_message(_message(_forecast_task("t-1")), registry=_registry(handler), max_receive_count=3,
                             completed=IdempotencyCache(), results=results)
    assert failed.outcome is Outcome.RETRY and len(results) == 0
    retried = process_message(_message(_forecast_task("t-1"), receive_count=2), registry=_registry(handler),
                              max_receive_count=3, completed=IdempotencyCache(), results=results)
    assert retried.outcome is Outcome.SUCCEEDED and handler.calls == 2 and len(results) == 1
    assert ResultCache.key("optimisation", worker_pb2.OptimisationRequest(request_id="o")) is None
    with pytest.raises(ValueError, match="at least 1"):
        ResultCache(capacity=0)


def test_result_cache_evicts_least_recently_used() -> None:
    results = ResultCache(capacity=2)
    keys = [ResultCache.key("forecast", _forecast_task(product=product).forecast) for product in ("A", "B", "C")]
    assert all(key is not None for key in keys)
    for key in keys:
        assert key is not None
        results.put(key, worker_pb2.ForecastResult(product=key[1][:4]))
    assert len(results) == 2
    assert keys[0] is not None and results.answer(keys[0], _forecast_task().forecast) is None
    assert keys[2] is not None and results.answer(keys[2], _forecast_task().forecast) is not None


def test_idempotency_cache_evicts_least_recently_used() -> None:
    cache = IdempotencyCache(capacity=2)
    cache.put("a", b"1")
    cache.put("b", b"2")
    assert cache.get("a") == b"1"  # a is now the most recent
    cache.put("c", b"3")
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2


def test_registry_resolves_and_names_known_algorithms() -> None:
    registry = _registry(echo_forecast)
    assert registry.resolve("forecast", *ALGORITHM) is echo_forecast
    with pytest.raises(UnknownAlgorithmError,
                       match=r"unknown algorithm lp-x v9 for optimisation; known: none"):
        registry.resolve("optimisation", "lp-x", "9")
    with pytest.raises(InvalidRequestError, match=r"known: echo v1"):
        registry.resolve("forecast", "echo", "2")
    with pytest.raises(ValueError, match="registered already"):
        registry.register("forecast", *ALGORITHM, echo_forecast)
    with pytest.raises(ValueError, match="unknown request kind"):
        registry.register("bidding", "x", "1", echo_forecast)


def test_messages_round_trip_and_garbage_is_refused() -> None:
    task = _forecast_task()
    assert decode_task(encode_message(task)) == task
    reply = worker_pb2.WorkerReply(task_id="x")
    reply.error.code = "handler_failed"
    assert decode_reply(encode_message(reply)) == reply
    for garbage in ["not base64!", "////", encode_message(task)[:-3] + "@@@"]:
        with pytest.raises(MalformedMessageError):
            decode_task(garbage)
    with pytest.raises(MalformedMessageError, match="not a serialised"):
        decode_reply("/w==")  # a single 0xff byte: not a protobuf message


def test_queue_names_follow_the_prefix() -> None:
    assert queue_names("openvpp") == {
        "forecast_requests": "openvpp-forecast-requests",
        "optimisation_requests": "openvpp-optimisation-requests",
        "results": "openvpp-results",
        "dead_letters": "openvpp-dead-letters",
        "backtest_requests": "openvpp-backtest-requests",
    }
    assert queue_names("openvpp", "sweeps")["backtest_requests"] == "openvpp-sweeps"
    urls = QueueUrls("f", "o", "r", "d", "b")
    assert [urls.request_queue(k) for k in ("forecast", "optimisation", "backtest")] == ["f", "o", "b"]
    with pytest.raises(ValueError, match="unknown request kind"):
        urls.request_queue("bid")
    with pytest.raises(ValueError, match="unknown request kind"):
        QueueUrls("f", "o", "r", "d").request_queue("backtest")  # a deployment without the backtest queue


def _result_reply(kind: str) -> worker_pb2.WorkerReply:
    reply = worker_pb2.WorkerReply(task_id="t-9")
    reply.reply_to.workflow_id, reply.reply_to.activity_id = "cycle-9", "act"
    if kind == "forecast":
        reply.forecast.product = "RAISE6SEC"
        reply.forecast.status = worker_pb2.RESULT_STATUS_OK
        reply.forecast.status_reason = "fine"
        reply.forecast.compute_ms = 12.5
    else:
        reply.optimisation.status = worker_pb2.RESULT_STATUS_INFEASIBLE
        reply.optimisation.status_reason = "no feasible plan"
        reply.optimisation.solve_ms = 80.0
    return reply


def test_answer_for_reply() -> None:
    assert answer_for_reply(_result_reply("forecast"), "sha256:k") == WorkerAnswer(
        task_id="t-9", kind="forecast", archive_key="sha256:k", status="OK", status_reason="fine",
        compute_ms=12.5)
    assert answer_for_reply(_result_reply("optimisation"), "sha256:p") == WorkerAnswer(
        task_id="t-9", kind="optimisation", archive_key="sha256:p", status="INFEASIBLE",
        status_reason="no feasible plan", compute_ms=80.0)
    assert archive_label(_result_reply("forecast")) == "forecast-result/RAISE6SEC"
    assert archive_label(_result_reply("optimisation")) == "optimisation-result/"
    error = worker_pb2.WorkerReply(task_id="t-9")
    error.error.code, error.error.message, error.error.receive_count = "invalid_request", "bad horizon", 1
    with pytest.raises(ValueError, match="error"):
        answer_for_reply(error, "sha256:k")
    failure = failure_for_reply(error)
    assert failure.type == WORKER_FAILED_ERROR_TYPE and failure.non_retryable
    assert "invalid_request: bad horizon" in failure.message
    with pytest.raises(ValueError, match="neither"):
        answer_for_reply(worker_pb2.WorkerReply(task_id="empty"), "sha256:k")


# ---------------------------------------------------------------------------------------------------
# Against the moto SQS endpoint


@dataclass
class Stack:
    settings: Settings
    sqs: Any
    urls: QueueUrls
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_pool(self, handler: Callable[[Message], Message], max_messages: int = 1) -> None:
        self.tasks.append(asyncio.create_task(run_pool(
            self.settings, "forecast", self.stop, registry=_registry(handler), client=self.sqs,
            max_messages=max_messages)))

    async def receive(self, queue_url: str, count: int) -> list[dict[str, Any]]:
        """Receive (and delete) ``count`` messages, waiting up to PATIENCE_S."""
        found: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + PATIENCE_S
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            response = await asyncio.to_thread(
                self.sqs.receive_message, QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                MessageAttributeNames=["All"], AttributeNames=["All"])
            for message in response.get("Messages", []):
                found.append(message)
                await asyncio.to_thread(self.sqs.delete_message, QueueUrl=queue_url,
                                        ReceiptHandle=message["ReceiptHandle"])
        assert len(found) == count, f"expected {count} messages on {queue_url}, got {len(found)}"
        return found

    async def drained(self, queue_url: str) -> int:
        """The depth of ``queue_url`` once it is 0, or after PATIENCE_S: a settled message's delete may follow
        its reply by up to DEFERRED_DELETE_MAX_S (pools.runtime.DeferredDeletes)."""
        deadline = asyncio.get_running_loop().time() + PATIENCE_S
        while self.depth(queue_url) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return self.depth(queue_url)

    def depth(self, queue_url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages",
                                                "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"])

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


@pytest.fixture
async def stack(settings: Settings, sqs_endpoint: str,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """Fresh queues (own prefix) on the moto server; visibility timeout 1 s, 2 receives before DLQ."""
    monkeypatch.setenv("VPP_SQS_ENDPOINT", sqs_endpoint)
    test_settings = replace(settings, stack=replace(settings.stack, queue_prefix=f"t{uuid.uuid4().hex[:10]}",
                                                    visibility_timeout_s=1, max_receive_count=2))
    client = sqs_client(test_settings)
    urls = ensure_queues(client, test_settings)
    running = Stack(test_settings, client, urls)
    try:
        yield running
    finally:
        await running.close()


async def test_request_in_reply_out(stack: Stack) -> None:
    stack.start_pool(echo_forecast)
    send_task(stack.sqs, stack.urls, _forecast_task("t-ok", "LOWERREG"))
    [message] = await stack.receive(stack.urls.results, 1)
    reply = decode_reply(message["Body"])
    assert reply.task_id == "t-ok"
    assert (reply.reply_to.workflow_id, reply.reply_to.run_id, reply.reply_to.activity_id) == (
        "cycle-1", "run-1", "forecast-LOWERREG")
    assert reply.WhichOneof("result") == "forecast"
    assert reply.forecast.product == "LOWERREG" and reply.forecast.request_id == "req-t-ok"
    assert await stack.drained(stack.urls.forecast_requests) == 0


async def test_poison_message_is_dead_lettered(stack: Stack) -> None:
    stack.start_pool(echo_forecast)
    stack.sqs.send_message(QueueUrl=stack.urls.forecast_requests, MessageBody="garbage, not a task")
    [letter] = await stack.receive(stack.urls.dead_letters, 1)
    assert letter["Body"] == "garbage, not a task"
    attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
    assert attributes["ErrorCode"] == "invalid_message"
    assert attributes["ErrorMessage"].startswith("invalid_message: ")
    assert attributes["SourceQueue"] == stack.urls.forecast_requests
    assert attributes["ReceiveCount"] == "1"
    assert await stack.drained(stack.urls.forecast_requests) == 0
    assert stack.depth(stack.urls.results) == 0


async def test_invalid_request_is_dead_lettered_with_error_reply(stack: Stack) -> None:
    handler = CountingHandler(failures=-1, error=lambda: InvalidRequestError("horizon_intervals must be > 0"))
    stack.start_pool(handler)
    send_task(stack.sqs, stack.urls, _forecast_task("t-bad"))
    [message] = await stack.receive(stack.urls.results, 1)
    reply = decode_reply(message["Body"])
    assert reply.task_id == "t-bad" and reply.error.code == "invalid_request"
    assert "horizon_intervals must be > 0" in reply.error.message
    [letter] = await stack.receive(stack.urls.dead_letters, 1)
    assert letter["MessageAttributes"]["ErrorCode"]["StringValue"] == "invalid_request"
    assert decode_task(letter["Body"]).task_id == "t-bad"
    assert handler.calls == 1
    assert await stack.drained(stack.urls.forecast_requests) == 0


async def test_unknown_algorithm_fails_fast(stack: Stack) -> None:
    stack.start_pool(echo_forecast)
    send_task(stack.sqs, stack.urls, _forecast_task("t-unknown", algorithm=("lp-x", "9")))
    [message] = await stack.receive(stack.urls.results, 1)
    reply = decode_reply(message["Body"])
    assert reply.error.code == "unknown_algorithm"
    assert "unknown algorithm lp-x v9 for forecast; known: echo v1" in reply.error.message
    await stack.receive(stack.urls.dead_letters, 1)


async def test_transient_failure_is_retried_by_visibility_timeout(stack: Stack) -> None:
    handler = CountingHandler(failures=1)
    stack.start_pool(handler)
    send_task(stack.sqs, stack.urls, _forecast_task("t-flaky"))
    [message] = await stack.receive(stack.urls.results, 1)
    reply = decode_reply(message["Body"])
    assert reply.WhichOneof("result") == "forecast" and reply.task_id == "t-flaky"
    assert handler.calls == 2
    assert stack.depth(stack.urls.dead_letters) == 0
    assert await stack.drained(stack.urls.forecast_requests) == 0


async def test_persistent_failure_is_dead_lettered_after_max_receives(stack: Stack) -> None:
    handler = CountingHandler(failures=-1)
    stack.start_pool(handler)
    send_task(stack.sqs, stack.urls, _forecast_task("t-broken"))
    [message] = await stack.receive(stack.urls.results, 1)
    reply = decode_reply(message["Body"])
    assert reply.error.code == "handler_failed" and reply.error.receive_count == 2
    assert "RuntimeError: solver crashed" in reply.error.message
    [letter] = await stack.receive(stack.urls.dead_letters, 1)
    attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
    assert attributes["ErrorCode"] == "handler_failed" and attributes["ReceiveCount"] == "2"
    assert handler.calls == stack.settings.stack.max_receive_count == 2
    assert await stack.drained(stack.urls.forecast_requests) == 0


async def test_duplicate_task_runs_the_handler_once(stack: Stack) -> None:
    handler = CountingHandler()
    send_task(stack.sqs, stack.urls, _forecast_task("t-twice"))
    send_task(stack.sqs, stack.urls, _forecast_task("t-twice"))
    stack.start_pool(handler, max_messages=10)
    messages = await stack.receive(stack.urls.results, 2)
    first, second = (decode_reply(m["Body"]) for m in messages)
    assert first == second and first.task_id == "t-twice"
    assert handler.calls == 1


async def test_ensure_queues_is_idempotent_and_sets_redrive(stack: Stack) -> None:
    again = ensure_queues(stack.sqs, stack.settings)
    assert again == stack.urls == queue_urls(stack.sqs, stack.settings)
    attributes = stack.sqs.get_queue_attributes(QueueUrl=stack.urls.optimisation_requests,
                                                AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "1"
    assert '"maxReceiveCount": 2' in attributes["RedrivePolicy"]
    assert stack.urls.dead_letters.rsplit("/", 1)[-1] in attributes["RedrivePolicy"]
    changed = replace(stack.settings, stack=replace(stack.settings.stack, visibility_timeout_s=7))
    ensure_queues(stack.sqs, changed)
    attributes = stack.sqs.get_queue_attributes(QueueUrl=stack.urls.forecast_requests,
                                                AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "7"


async def test_queue_urls_names_a_missing_queue(stack: Stack) -> None:
    absent = replace(stack.settings, stack=replace(stack.settings.stack, queue_prefix="never-created"))
    with pytest.raises(QueueMissingError, match="never-created-forecast-requests"):
        queue_urls(stack.sqs, absent)


async def test_send_task_routes_by_kind_and_refuses_oversized(stack: Stack) -> None:
    task = worker_pb2.WorkerTask(task_id="t-opt")
    task.optimisation.request_id = "plan-1"
    send_task(stack.sqs, stack.urls, task)
    [message] = await stack.receive(stack.urls.optimisation_requests, 1)
    assert decode_task(message["Body"]) == task
    huge = _forecast_task("t-huge")
    huge.forecast.quantiles.extend([0.5] * (MAX_TASK_BODY_BYTES // 8))
    with pytest.raises(MessageTooLargeError, match="limit"):
        send_task(stack.sqs, stack.urls, huge)
    with pytest.raises(ValueError, match="no request"):
        send_task(stack.sqs, stack.urls, worker_pb2.WorkerTask(task_id="empty"))


# ---------------------------------------------------------------------------------------------------
# Result relay with a stand-in Temporal client


@dataclass
class FakeHandle:
    calls: list[tuple[str, tuple[str, str | None, str], Any]]
    ids: tuple[str, str | None, str]
    closed: bool

    async def complete(self, result: Any = None) -> None:
        self.calls.append(("complete", self.ids, result))
        if self.closed:
            raise RPCError("workflow execution already completed", RPCStatusCode.NOT_FOUND, b"")

    async def fail(self, error: Exception, *, last_heartbeat_details: Any = ()) -> None:
        self.calls.append(("fail", self.ids, error))
        if self.closed:
            raise RPCError("not found", RPCStatusCode.NOT_FOUND, b"")


@dataclass
class FakeTemporal:
    closed_workflows: set[str] = field(default_factory=set)
    calls: list[tuple[str, tuple[str, str | None, str], Any]] = field(default_factory=list)

    def get_async_activity_handle(self, *, workflow_id: str, run_id: str | None,
                                  activity_id: str) -> FakeHandle:
        return FakeHandle(self.calls, (workflow_id, run_id, activity_id),
                          workflow_id in self.closed_workflows)


async def test_relay_archives_results_and_completes_or_fails_activities(stack: Stack, tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    temporal = FakeTemporal(closed_workflows={"cycle-gone"})
    stack.tasks.append(asyncio.create_task(
        run_result_relay(stack.settings, temporal, archive, stack.stop, sqs=stack.sqs)))  # type: ignore[arg-type]
    ok = _result_reply("forecast")
    error = worker_pb2.WorkerReply(task_id="t-err")
    error.reply_to.workflow_id, error.reply_to.activity_id = "cycle-9", "opt"
    error.error.code, error.error.message = "handler_failed", "boom"
    gone = _result_reply("optimisation")
    gone.reply_to.workflow_id = "cycle-gone"
    for reply in (ok, error, gone):
        stack.sqs.send_message(QueueUrl=stack.urls.results, MessageBody=encode_message(reply))
    stack.sqs.send_message(QueueUrl=stack.urls.results, MessageBody="not a reply")

    [letter] = await stack.receive(stack.urls.dead_letters, 1)
    assert letter["MessageAttributes"]["ErrorCode"]["StringValue"] == "invalid_message"
    for _ in range(int(PATIENCE_S * 10)):
        if len(temporal.calls) == 3 and stack.depth(stack.urls.results) == 0:
            break
        await asyncio.sleep(0.1)
    by_workflow = {call[1][0] + "/" + call[1][2]: call for call in temporal.calls}
    assert set(by_workflow) == {"cycle-9/act", "cycle-9/opt", "cycle-gone/act"}

    kind, ids, answer = by_workflow["cycle-9/act"]
    entries = archive.list_cycle("cycle-9")
    assert kind == "complete" and ids == ("cycle-9", None, "act")
    assert [e.label for e in entries] == ["forecast-result/RAISE6SEC"]
    assert answer == answer_for_reply(ok, entries[0].key)
    assert archive.get(entries[0].key) == ok.forecast

    kind, _, failure = by_workflow["cycle-9/opt"]
    assert kind == "fail" and isinstance(failure, ApplicationError)
    assert failure.type == WORKER_FAILED_ERROR_TYPE and failure.non_retryable and "boom" in failure.message

    assert by_workflow["cycle-gone/act"][0] == "complete"  # NOT_FOUND: logged, deleted, not retried
    assert [e.label for e in archive.list_cycle("cycle-gone")] == ["optimisation-result/"]
    assert stack.depth(stack.urls.results) == 0


# ---------------------------------------------------------------------------------------------------
# The whole round trip on a Temporal dev server: activity -> SQS -> pool -> results -> relay -> activity


@dataclass
class RoundTrip:
    """What the stand-in activity needs to send its task (set by the test)."""

    sqs: Any = None
    urls: QueueUrls | None = None


ROUND_TRIP = RoundTrip()


@activity.defn(name="request_stand_in_forecast")
async def request_stand_in_forecast(task_id: str) -> WorkerAnswer:
    """Send a forecast task naming this activity as its reply_to, then wait for the relay to complete it."""
    info = activity.info()
    task = _forecast_task(task_id, workflow_id=info.workflow_id or "",
                          algorithm=ALGORITHM if task_id.startswith("ok") else ("nope", "1"))
    task.reply_to.run_id = info.workflow_run_id or ""
    task.reply_to.activity_id = info.activity_id
    assert ROUND_TRIP.urls is not None
    await asyncio.to_thread(send_task, ROUND_TRIP.sqs, ROUND_TRIP.urls, task)
    activity.raise_complete_async()


@workflow.defn(name="StandInForecast")
class StandInForecast:
    @workflow.run
    async def run(self, task_id: str) -> WorkerAnswer:
        return await workflow.execute_activity(
            request_stand_in_forecast, task_id, start_to_close_timeout=timedelta(seconds=30))


async def test_round_trip_through_temporal(stack: Stack, tmp_path: Path) -> None:
    ROUND_TRIP.sqs, ROUND_TRIP.urls = stack.sqs, stack.urls
    archive = LocalArchive(tmp_path / "archive")
    stack.start_pool(echo_forecast)
    async with await WorkflowEnvironment.start_local(dev_server_existing_path=dev_server_path()) as env:
        relay = asyncio.create_task(run_result_relay(stack.settings, env.client, archive, stack.stop,
                                                     sqs=stack.sqs))
        try:
            async with Worker(env.client, task_queue="worker-runtime-test", workflows=[StandInForecast],
                              activities=[request_stand_in_forecast],
                              workflow_runner=UnsandboxedWorkflowRunner()):
                answer = await env.client.execute_workflow(StandInForecast.run, "ok-1", id="wf-ok",
                                                           task_queue="worker-runtime-test")
                assert isinstance(answer, WorkerAnswer)
                assert (answer.task_id, answer.kind, answer.status) == ("ok-1", "forecast", "OK")
                assert [e.key for e in archive.list_cycle("wf-ok")] == [answer.archive_key]
                archived = archive.get(answer.archive_key)
                assert isinstance(archived, worker_pb2.ForecastResult)
                assert archived.compute_ms == answer.compute_ms  # the pool timed the pure handler
                timed = echo_forecast(_forecast_task("ok-1").forecast)
                assert isinstance(timed, worker_pb2.ForecastResult)
                timed.compute_ms = answer.compute_ms
                assert archived == timed

                with pytest.raises(WorkflowFailureError) as caught:
                    await env.client.execute_workflow(StandInForecast.run, "bad-1", id="wf-bad",
                                                      task_queue="worker-runtime-test")
                activity_error = caught.value.cause
                assert isinstance(activity_error, ActivityError)
                failure = activity_error.cause
                assert isinstance(failure, ApplicationError)
                assert failure.type == WORKER_FAILED_ERROR_TYPE and failure.non_retryable
                assert "unknown algorithm nope v1" in failure.message
        finally:
            stack.stop.set()
            await relay


def test_the_registry_serves_each_algorithm_under_the_name_and_version_its_module_declares() -> None:
    from algorithms.market import forecast, optimise, spike_reserve, uncertainty_spread
    from algorithms.registry import RETAINED_VERSIONS, algorithm_of, default_registry
    from settings import load_settings

    registry = default_registry()
    retained = [f"{forecast.NAME} v{version}" for kind, _, version, _ in RETAINED_VERSIONS if kind == "forecast"]
    assert registry.known("forecast") == sorted([*retained, f"{forecast.NAME} v{forecast.VERSION}"])
    assert f"{forecast.NAME} v1" in retained
    assert registry.known("optimisation") == sorted([f"{optimise.NAME} v{optimise.VERSION}",
                                                      f"{spike_reserve.NAME} v{spike_reserve.VERSION}",
                                                      f"{spike_reserve.NAME} v2",
                                                      f"{spike_reserve.NAME} v3",
                                                      f"{spike_reserve.NAME} v4",
                                                      f"{spike_reserve.NAME} v5",
                                                      f"{spike_reserve.NAME} v6",
                                                      f"{spike_reserve.NAME} v7",
                                                      f"{spike_reserve.NAME} v8",
                                                      f"{uncertainty_spread.NAME} v{uncertainty_spread.VERSION}",
                                                      f"{uncertainty_spread.NAME} v2"])
    assert registry.resolve("forecast", forecast.NAME, forecast.VERSION) is forecast.run_forecast
    # The settings choose among the registered algorithms; they do not define them.
    cycle = load_settings(environ={}).cycle
    assert registry.resolve("forecast", cycle.forecast_algorithm, cycle.forecast_algorithm_version)
    assert registry.resolve("optimisation", cycle.optimiser_algorithm, cycle.optimiser_algorithm_version)
    with pytest.raises(ValueError, match="declares no NAME and VERSION"):
        algorithm_of(Settings)


async def test_a_batch_of_tasks_is_answered_and_settled_with_batch_calls(stack: Stack) -> None:
    """Ten messages in one receive (a portfolio's forecasts): every reply sent, the poison one dead-lettered,
    every message deleted, the handler run once per distinct inputs (five tasks ask for the same ENERGY
    forecast, four for other products)."""
    handler = CountingHandler()
    task_ids = [f"t-batch-{index}" for index in range(9)]
    for index, task_id in enumerate(task_ids):
        send_task(stack.sqs, stack.urls, _forecast_task(task_id, product="ENERGY" if index < 5 else f"P{index}"))
    stack.sqs.send_message(QueueUrl=stack.urls.forecast_requests, MessageBody="garbage in a batch")
    stack.start_pool(handler, max_messages=10)
    replies = await stack.receive(stack.urls.results, len(task_ids))
    assert sorted(decode_reply(message["Body"]).task_id for message in replies) == sorted(task_ids)
    assert all(reply.forecast.request_id == f"req-{reply.task_id}"
               for reply in (decode_reply(message["Body"]) for message in replies))
    [letter] = await stack.receive(stack.urls.dead_letters, 1)
    assert letter["Body"] == "garbage in a batch"
    assert handler.calls == 5
    assert await stack.drained(stack.urls.forecast_requests) == 0


async def test_a_batchs_replies_leave_as_they_are_ready(stack: Stack) -> None:
    """The replies of one receive are sent as their tasks are handled, not when the whole receive is: with the
    third task of a batch still being handled (a portfolio's tenth plan still solving), the first two replies
    are already on the results queue; the third follows, and every task is deleted."""
    release = threading.Event()
    handler = CountingHandler()

    def last_one_waits(request: Message) -> Message:
        answer = handler(request)
        if handler.calls == 3:
            assert release.wait(PATIENCE_S), "the test never released the third task"
        return answer

    task_ids = ["t-first", "t-second", "t-third"]
    for index, task_id in enumerate(task_ids):
        send_task(stack.sqs, stack.urls, _forecast_task(task_id, product=f"P{index}"))
    stack.start_pool(last_one_waits, max_messages=10)
    try:
        early = await stack.receive(stack.urls.results, 2)
        assert handler.calls == 3 and not release.is_set()  # the third is still being handled
    finally:
        release.set()
    [late] = await stack.receive(stack.urls.results, 1)
    replies = [decode_reply(message["Body"]).task_id for message in (*early, late)]
    assert sorted(replies) == sorted(task_ids)
    assert await stack.drained(stack.urls.forecast_requests) == 0


def _count_deletes(client: Any, queue_url: str) -> dict[str, int]:
    """Count ``client``'s DeleteMessage and DeleteMessageBatch calls on ``queue_url`` (botocore's own event hook,
    the calls still go to the endpoint)."""
    counts = {"DeleteMessage": 0, "DeleteMessageBatch": 0}

    def counted(params: dict[str, Any], model: Any, **_: Any) -> None:
        if params.get("QueueUrl") == queue_url and model.name in counts:
            counts[model.name] += 1

    client.meta.events.register("provide-client-params.sqs.*", counted)
    return counts


async def test_lone_messages_are_deleted_together_off_the_loop(stack: Stack) -> None:
    """Messages received one at a time (a portfolio's plans arriving as their forecasts do) are each answered,
    then deleted with DeleteMessageBatch calls (DeferredDeletes), never one DeleteMessage per message."""
    counts = _count_deletes(stack.sqs, stack.urls.forecast_requests)
    task_ids = [f"t-lone-{index}" for index in range(4)]
    for index, task_id in enumerate(task_ids):
        send_task(stack.sqs, stack.urls, _forecast_task(task_id, product=f"P{index}"))
    stack.start_pool(echo_forecast, max_messages=1)
    replies = await stack.receive(stack.urls.results, len(task_ids))
    assert sorted(decode_reply(message["Body"]).task_id for message in replies) == sorted(task_ids)
    assert await stack.drained(stack.urls.forecast_requests) == 0
    assert counts["DeleteMessage"] == 0
    assert 1 <= counts["DeleteMessageBatch"] <= len(task_ids)


async def test_deferred_deletes_wait_for_company_then_go_in_one_call(stack: Stack) -> None:
    """Handles wait (invisible messages stay on the queue) until ten are waiting or the wait is over or they are
    flushed; then they go out ten to a call, and the messages are gone."""
    queue = stack.urls.forecast_requests
    counts = _count_deletes(stack.sqs, queue)
    for index in range(13):
        send_task(stack.sqs, stack.urls, _forecast_task(f"t-deferred-{index}"))
    received: list[dict[str, Any]] = []
    while len(received) < 13:
        response = await asyncio.to_thread(stack.sqs.receive_message, QueueUrl=queue, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1, VisibilityTimeout=60)
        received += response.get("Messages", [])
    deletes = DeferredDeletes(stack.sqs, queue, max_wait_s=60.0)
    deletes.bind(asyncio.get_running_loop())
    for message in received[:3]:
        deletes.add(message["ReceiptHandle"])
    await asyncio.sleep(0.3)
    assert deletes.waiting() == 3 and counts["DeleteMessageBatch"] == 0
    assert stack.depth(queue) == 13  # received, not deleted: still on the queue, invisible
    for message in received[3:]:
        deletes.add(message["ReceiptHandle"])
    await asyncio.sleep(0.05)
    assert deletes.waiting() == 3  # ten went out at once, without waiting
    await deletes.flush()
    assert deletes.waiting() == 0 and counts == {"DeleteMessage": 0, "DeleteMessageBatch": 2}
    assert stack.depth(queue) == 0


async def test_deferred_deletes_go_when_the_oldest_has_waited(stack: Stack) -> None:
    queue = stack.urls.forecast_requests
    send_task(stack.sqs, stack.urls, _forecast_task("t-deferred-alone"))
    response = await asyncio.to_thread(stack.sqs.receive_message, QueueUrl=queue, WaitTimeSeconds=1,
                                       VisibilityTimeout=60)
    deletes = DeferredDeletes(stack.sqs, queue, max_wait_s=0.2)
    deletes.bind(asyncio.get_running_loop())
    deletes.add(response["Messages"][0]["ReceiptHandle"])
    assert await stack.drained(queue) == 0
    assert deletes.waiting() == 0


def test_batch_sends_are_chunked_by_entries_and_bytes() -> None:
    from pools.runtime import SEND_BATCH_BYTES, _send_chunks

    small = [(index, "x" * 10) for index in range(23)]
    assert [len(chunk) for chunk in _send_chunks(small)] == [10, 10, 3]
    large = [(index, "y" * (SEND_BATCH_BYTES // 3 + 1)) for index in range(5)]
    chunks = _send_chunks(large)
    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    assert [position for chunk in chunks for position, _ in chunk] == list(range(5))
