"""Forecasts belong to the region: requests shared by the cycles of one worker process.

On the real SQS endpoint (moto server), the real forecast pool and the real result relay: identical forecast
requests asked at once are sent as one task and answered with one archived result, exactly the forecaster's
answer to each; an error reply fails every cycle waiting for it and the next ask sends the request again; a
reply to another process's exchange is left on the queue. Then the live cycle (tests/live_stack.py): two
battery units of SA1 and one of VIC1 cycle at once; the SA1 units' cycles share one set of forecasts, and
each cycle replays exactly from the archive (the same forecasts, plan and bid).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from aemo.mms import load_market_data
from algorithms.common.content_hash import inputs_hash
from algorithms.market import forecast as forecaster
from algorithms.market.as_of import PublicationModel, build_snapshot
from algorithms.market.cycle_requests import forecastable_products, region_forecast_requests, shared_forecast_id
from algorithms.registry import default_registry
from archive import LocalArchive
from archive.store import ArchiveEntry, append_entries
from backtest.archive_replay import load_archived_cycle, replay_archived_cycles
from pools.replies import WORKER_FAILED_ERROR_TYPE
from pools.result_relay import ELSEWHERE, _relay_message, message_age_s, relay_reply, run_result_relay
from pools.runtime import receive_count_of, run_pool
from pools.shared_requests import SharedRequests, exchange_task_id
from pools.sqs import (
    SQS_MAX_BATCH_BYTES,
    SQS_MAX_BATCH_ENTRIES,
    encode_message,
    ensure_queues,
    sqs_client,
    task_batches,
)
from settings import Settings, load_settings
from stack.cycles import run_portfolio_cycles_at
from tests.conftest import temporary_database
from tests.live_stack import LiveStack, live_stack, stack_settings
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2

pytestmark = [pytest.mark.timeout(600)]

DECISION = datetime(2021, 1, 15, 16, 0, 30)
FIRST_INTERVAL = datetime(2021, 1, 15, 16, 10)
HORIZON_INTERVALS = 48
HISTORY_INTERVALS = 288
QUANTILES = (0.1, 0.5, 0.9)


# --------------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------------


def test_task_batches_keep_to_sqs_limits_in_order() -> None:
    small = ["x" * 100] * 23
    assert task_batches(small) == [list(range(0, 10)), list(range(10, 20)), list(range(20, 23))]
    large = ["y" * 100_000] * 5  # two fit in 256 KiB, three do not
    batches = task_batches(large)
    assert batches == [[0, 1], [2, 3], [4]]
    for batch in batches:
        assert len(batch) <= SQS_MAX_BATCH_ENTRIES and sum(len(large[i]) for i in batch) <= SQS_MAX_BATCH_BYTES
    assert task_batches([]) == []


@cache
def _snapshot() -> market_data_pb2.MarketSnapshot:
    settings = load_settings(environ={})
    dispatch, predispatch = load_market_data(settings.market_data.data_dir)
    return build_snapshot(dispatch, predispatch, region="SA1", dispatch_interval=FIRST_INTERVAL, as_of=DECISION,
                          history_intervals=HISTORY_INTERVALS,
                          publication=PublicationModel(dispatch_price_delay_s=20.0))


def _requests(products: tuple[str, ...] | None = None) -> tuple[worker_pb2.ForecastRequest, ...]:
    snapshot = _snapshot()
    return region_forecast_requests(snapshot, products or forecastable_products(snapshot),
                                    first_interval=FIRST_INTERVAL, horizon_intervals=HORIZON_INTERVALS,
                                    quantiles=QUANTILES, algorithm=forecaster.ALGORITHM)


def test_a_region_forecast_request_is_named_by_what_it_forecasts_not_who_asks() -> None:
    requests = _requests()
    assert [r.product for r in requests] == list(forecastable_products(_snapshot()))
    again = _requests()
    assert [r.SerializeToString(deterministic=True) for r in requests] == [
        r.SerializeToString(deterministic=True) for r in again]
    energy = requests[0]
    assert energy.request_id.startswith(f"forecast/SA1/20210115T1610/ENERGY/{forecaster.NAME}@{forecaster.VERSION}/")
    assert energy.request_id == shared_forecast_id(energy)
    assert energy.inputs_hash == inputs_hash(energy)
    # As of the snapshot's as-of: the decision time the forecaster sees is the market data's.
    assert energy.decision_time == _snapshot().as_of
    # Other inputs (here the horizon) are another forecast with another id.
    longer = region_forecast_requests(_snapshot(), ("ENERGY",), first_interval=FIRST_INTERVAL,
                                      horizon_intervals=HORIZON_INTERVALS + 12, quantiles=QUANTILES,
                                      algorithm=forecaster.ALGORITHM)[0]
    assert longer.request_id != energy.request_id


def test_a_batch_of_index_entries_appends_once_each_in_order(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path)
    requests = _requests(("ENERGY", "RAISE6SEC"))
    keys = archive.put_all([(r, f"forecast-request/{r.product}") for r in requests], cycle_id="cycle-a")
    assert [archive.get(key) for key in keys] == list(requests)
    # Again with one more: the entries already listed are not repeated.
    more = _requests(("ENERGY", "RAISE6SEC", "LOWERREG"))
    archive.put_all([(r, f"forecast-request/{r.product}") for r in more], cycle_id="cycle-a")
    entries = archive.list_cycle("cycle-a")
    assert [e.label for e in entries] == ["forecast-request/ENERGY", "forecast-request/RAISE6SEC",
                                          "forecast-request/LOWERREG"]
    assert [e.key for e in entries][:2] == keys
    entry = entries[0]
    assert append_entries("", [entry, replace(entry)]) is not None
    assert append_entries("", [entry, replace(entry)]).count("\n") == 1  # type: ignore[union-attr]
    assert append_entries("", cast(list[ArchiveEntry], [])) is None


# --------------------------------------------------------------------------------------------------
# The exchange on the real SQS endpoint, forecast pool and result relay
# --------------------------------------------------------------------------------------------------


class CountingSqs:
    """The real SQS client, counting the forecast tasks sent through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.tasks_sent = 0

    def send_message_batch(self, **kwargs: Any) -> Any:
        self.tasks_sent += len(kwargs["Entries"])
        return self._client.send_message_batch(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass
class Exchange:
    settings: Settings
    shared: SharedRequests
    sqs: CountingSqs
    archive: LocalArchive


@pytest.fixture
async def exchange(sqs_endpoint: str, tmp_path: Path) -> AsyncIterator[Exchange]:
    loaded = load_settings(environ={})
    settings = stack_settings(replace(loaded, stack=replace(loaded.stack, state_dir=tmp_path)), sqs_endpoint)
    client = sqs_client(settings, endpoint_url=sqs_endpoint)
    queues = await asyncio.to_thread(ensure_queues, client, settings)
    counting = CountingSqs(client)
    shared = SharedRequests(counting, queues)
    archive = LocalArchive(tmp_path / "archive")
    stop = asyncio.Event()
    # The relay hands exchange replies to the exchange; it needs no Temporal client for them.
    tasks = [asyncio.create_task(run_pool(settings, "forecast", stop,
                                          client=sqs_client(settings, endpoint_url=sqs_endpoint), max_messages=10)),
             asyncio.create_task(run_result_relay(settings, cast(Client, None), archive, stop,
                                                  sqs=sqs_client(settings, endpoint_url=sqs_endpoint),
                                                  shared=shared))]
    try:
        yield Exchange(settings, shared, counting, archive)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_identical_requests_asked_at_once_share_one_task_and_one_archived_result(exchange: Exchange) -> None:
    requests = _requests(("ENERGY", "RAISE6SEC", "LOWERREG"))
    first, second = await asyncio.wait_for(asyncio.gather(
        exchange.shared.ask(requests, resend_after_s=60.0),
        exchange.shared.ask(requests[:2], resend_after_s=60.0)), timeout=120)
    assert exchange.sqs.tasks_sent == 3  # one task per distinct request, whoever asked
    assert (first.sent, first.shared) == (3, 0) and (second.sent, second.shared) == (0, 2)
    assert [a.answer.archive_key for a in second.answers] == [a.answer.archive_key for a in first.answers[:2]]
    handler = default_registry().resolve("forecast", forecaster.NAME, forecaster.VERSION)
    for request, answered in zip(requests, first.answers, strict=True):
        # Exactly the forecaster's answer to the request, archived once under its content key.
        direct = handler(request)
        assert isinstance(direct, worker_pb2.ForecastResult) and isinstance(answered.result, worker_pb2.ForecastResult)
        assert list(answered.result.price) == list(direct.price)
        assert answered.result.request_id == request.request_id
        task_id = exchange_task_id(request)
        assert answered.answer.task_id == task_id == f"{request.request_id}#{request.inputs_hash[:16]}"
        assert exchange.archive.get(answered.answer.archive_key) == answered.result
    # Asked again later, the answer is remembered: nothing is sent.
    again = await exchange.shared.ask(requests[:1], resend_after_s=60.0)
    assert (again.sent, again.shared, exchange.sqs.tasks_sent) == (0, 1, 3)
    assert exchange.shared.outstanding() == 0


async def test_one_id_with_other_inputs_is_another_task(exchange: Exchange) -> None:
    # A workflow id run again names its optimisation the same: its inputs, not its id, decide what it shares.
    first = _requests(("ENERGY",))[0]
    other = region_forecast_requests(_snapshot(), ("ENERGY",), first_interval=FIRST_INTERVAL,
                                     horizon_intervals=HORIZON_INTERVALS + 12, quantiles=QUANTILES,
                                     algorithm=forecaster.ALGORITHM)[0]
    other.request_id = first.request_id
    answers = await asyncio.wait_for(asyncio.gather(exchange.shared.ask([first], resend_after_s=60.0),
                                                    exchange.shared.ask([other], resend_after_s=60.0)), timeout=120)
    assert exchange.sqs.tasks_sent == 2 and [a.shared for a in answers] == [0, 0]
    lengths = [len(cast(worker_pb2.ForecastResult, a.answers[0].result).price) for a in answers]
    assert lengths == [HORIZON_INTERVALS * len(QUANTILES), (HORIZON_INTERVALS + 12) * len(QUANTILES)]


async def test_an_error_reply_fails_every_ask_waiting_and_the_next_ask_sends_again(exchange: Exchange) -> None:
    broken = worker_pb2.ForecastRequest()
    broken.CopyFrom(_requests(("ENERGY",))[0])
    broken.horizon_intervals = 0  # the forecaster refuses it: an error reply, dead-lettered at once
    broken.request_id = shared_forecast_id(broken)
    outcomes = await asyncio.wait_for(asyncio.gather(
        exchange.shared.ask([broken], resend_after_s=60.0), exchange.shared.ask([broken], resend_after_s=60.0),
        return_exceptions=True), timeout=120)
    assert exchange.sqs.tasks_sent == 1
    for outcome in outcomes:
        assert isinstance(outcome, ApplicationError) and outcome.type == WORKER_FAILED_ERROR_TYPE, outcome
        assert outcome.non_retryable
    with pytest.raises(ApplicationError):
        await asyncio.wait_for(exchange.shared.ask([broken], resend_after_s=60.0), timeout=120)
    assert exchange.sqs.tasks_sent == 2  # not remembered: sent again


async def test_a_reply_to_another_process_is_left_for_its_relay(exchange: Exchange) -> None:
    elsewhere = SharedRequests(exchange.sqs, None)
    reply = worker_pb2.WorkerReply(task_id="forecast/x#0",
                                   reply_to=worker_pb2.ReplyTo(workflow_id=elsewhere.exchange_id),
                                   forecast=worker_pb2.ForecastResult(request_id="forecast/x", product="ENERGY"))
    assert await relay_reply(reply, cast(Client, None), exchange.archive, exchange.shared) == ELSEWHERE
    assert await relay_reply(reply, cast(Client, None), exchange.archive, None) == ELSEWHERE
    assert elsewhere.addressed_here(reply) and not exchange.shared.addressed_here(reply)


def _foreign_reply() -> worker_pb2.WorkerReply:
    """A forecast reply addressed to an exchange of another worker process."""
    elsewhere = SharedRequests(cast(Any, None), None)
    return worker_pb2.WorkerReply(task_id="forecast/y#0",
                                  reply_to=worker_pb2.ReplyTo(workflow_id=elsewhere.exchange_id),
                                  forecast=worker_pb2.ForecastResult(request_id="forecast/y", product="ENERGY"))


async def test_a_reply_to_another_process_is_released_at_once_not_after_the_visibility_timeout(
        exchange: Exchange) -> None:
    # Another worker process's relay must get it within a receive: this process's relay, which receives it
    # first (nobody else reads the queue), makes it visible again at once, so it is received again and again
    # long before the visibility timeout (30 s) would have let SQS deliver it a second time.
    assert exchange.settings.stack.visibility_timeout_s >= 30
    urls = await asyncio.to_thread(ensure_queues, exchange.sqs, exchange.settings)
    await asyncio.to_thread(exchange.sqs.send_message, QueueUrl=urls.results,
                            MessageBody=encode_message(_foreign_reply()))

    async def received_again() -> int:
        while True:
            answer = await asyncio.to_thread(exchange.sqs.receive_message, QueueUrl=urls.results,
                                             MaxNumberOfMessages=1, WaitTimeSeconds=1,
                                             AttributeNames=["ApproximateReceiveCount"])
            for message in answer.get("Messages", []):
                count = receive_count_of(message)
                await asyncio.to_thread(exchange.sqs.change_message_visibility, QueueUrl=urls.results,
                                        ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
                if count >= 3:
                    return count
            await asyncio.sleep(0.2)

    assert await asyncio.wait_for(received_again(), timeout=20) >= 3
    dead = await asyncio.to_thread(exchange.sqs.receive_message, QueueUrl=urls.dead_letters, WaitTimeSeconds=0)
    assert not dead.get("Messages")  # released, not dead-lettered for its receive count


async def test_a_reply_to_another_process_older_than_its_asker_waits_is_dead_lettered_with_the_reason(
        exchange: Exchange) -> None:
    urls = await asyncio.to_thread(ensure_queues, exchange.sqs, exchange.settings)
    body = encode_message(_foreign_reply())
    sent_ms = int((time.time() - 61.0) * 1000)
    now_ms = str(int(time.time() * 1000))
    young = {"Body": body, "Attributes": {"ApproximateReceiveCount": "9", "SentTimestamp": now_ms}}
    old = {"Body": body, "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(sent_ms)}}
    relay = (exchange.sqs, urls)
    assert await _relay_message(*relay, young, cast(Client, None), exchange.archive, 3, exchange.shared,
                                elsewhere_max_age_s=60.0) == "release"
    assert await _relay_message(*relay, old, cast(Client, None), exchange.archive, 3, exchange.shared,
                                elsewhere_max_age_s=60.0) == "settled"
    dead = await asyncio.to_thread(exchange.sqs.receive_message, QueueUrl=urls.dead_letters, WaitTimeSeconds=1,
                                   MessageAttributeNames=["All"])
    [letter] = dead["Messages"]
    assert letter["Body"] == body
    reason = letter["MessageAttributes"]
    assert any("no relay took the reply" in str(value) for value in reason.values()), reason
    assert message_age_s(old, time.time()) > 60.0 and message_age_s({"Attributes": {}}, time.time()) == 0.0


# --------------------------------------------------------------------------------------------------
# The live cycle: two SA1 units and one VIC1 unit cycle at once
# --------------------------------------------------------------------------------------------------

PORTFOLIO = '''
[[units]]
unit_id = "HPR1"
region = "SA1"
[[units]]
unit_id = "SA4"
region = "SA1"
power_mw = 30.0
energy_mwh = 60.0
[[units]]
unit_id = "VIC2"
region = "VIC1"
'''


@pytest.fixture(scope="module")
def portfolio_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    path = tmp_path_factory.mktemp("shared-config") / "portfolio.toml"
    path.write_text(PORTFOLIO + f"[cycle]\nhorizon_intervals = {HORIZON_INTERVALS}\n"
                                f"history_intervals = {HISTORY_INTERVALS}\n")
    yield load_settings(path, environ={})


@pytest.fixture(scope="module")
async def running(server_url: str, sqs_endpoint: str, portfolio_settings: Settings,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveStack]:
    with temporary_database(server_url) as database_url:
        settings = replace(portfolio_settings, database_url=database_url,
                           stack=replace(portfolio_settings.stack, state_dir=tmp_path_factory.mktemp("shared")))
        async with live_stack(settings, sqs_endpoint) as stack:
            yield stack


def _forecast_labels(entries: list[ArchiveEntry]) -> dict[str, str]:
    return {e.label: e.key for e in entries if e.label.startswith("forecast-")}


async def test_units_of_one_region_share_one_set_of_forecasts_and_each_replays_exactly(running: LiveStack) -> None:
    settings = running.settings
    assert running.shared_requests is not None
    sent_before = running.shared_requests.tasks_sent
    runs = await run_portfolio_cycles_at(running.client, settings, DECISION, search_attributes=False)
    by_unit = {unit.unit_id: run for unit, run in zip(settings.battery_units, runs, strict=True)}
    for run in runs:
        assert run.result is not None and run.result.status == "SUBMITTED", run.failure
    hpr1, sa4, vic2 = (by_unit[u].result for u in ("HPR1", "SA4", "VIC2"))
    assert hpr1 is not None and sa4 is not None and vic2 is not None
    forecast_keys = {unit: next(f for f in result.facts if f.stage == "forecast").archive_keys
                     for unit, result in (("HPR1", hpr1), ("SA4", sa4), ("VIC2", vic2))}
    products = len(forecast_keys["HPR1"])
    assert products == 9
    # The SA1 units' cycles decided from one snapshot (fetched as of the decision time) ...
    snapshots = {unit: result.facts[0].archive_keys for unit, result in (("HPR1", hpr1), ("SA4", sa4), ("VIC2", vic2))}
    assert snapshots["HPR1"] == snapshots["SA4"] != snapshots["VIC2"]
    # ... and got the same forecasts; VIC1's are its own.
    assert forecast_keys["HPR1"] == forecast_keys["SA4"]
    assert not set(forecast_keys["VIC2"]) & set(forecast_keys["HPR1"])
    # One task per forecast of each region (9 for SA1, asked once and shared by both units; 9 for VIC1) and one
    # optimisation per unit.
    assert running.shared_requests.tasks_sent - sent_before == 2 * products + 3
    sa1_facts = [next(f for f in r.facts if f.stage == "forecast").summary for r in (hpr1, sa4)]
    assert sorted(s.split("; ")[1] for s in sa1_facts) == sorted(
        [f"{products} asked, 0 shared with other SA1 cycles", f"0 asked, {products} shared with other SA1 cycles"])
    # Each cycle's archive lists the same requests and results under its own id.
    hpr1_index = _forecast_labels(running.archive.list_cycle(by_unit["HPR1"].workflow_id))
    sa4_index = _forecast_labels(running.archive.list_cycle(by_unit["SA4"].workflow_id))
    assert len(hpr1_index) == 2 * products and hpr1_index == sa4_index
    # Different batteries: different plans and bids from the same forecasts.
    assert hpr1.bid_id != sa4.bid_id
    plans = {unit: load_archived_cycle(running.archive, by_unit[unit].workflow_id).optimisation_request
             for unit in ("HPR1", "SA4")}
    assert plans["HPR1"] is not None and plans["SA4"] is not None
    assert plans["HPR1"].battery.power_mw != plans["SA4"].battery.power_mw
    assert list(plans["HPR1"].forecasts) == list(plans["SA4"].forecasts)
    # The archive replay computes every cycle's forecasts through the forecaster again from its own archived
    # requests and reproduces the forecasts, the plan and the bid exactly.
    report = replay_archived_cycles(running.archive, settings, cycle_ids=[r.workflow_id for r in runs])
    assert report.failed_cycles == 0 and report.reproduced, report.summary()
    assert report.forecasts_identical == report.forecasts_compared == 3 * products
    assert report.bids_identical == report.bids_compared == 3


def test_the_forecast_request_of_a_shared_cycle_is_the_regions(running: LiveStack) -> None:
    cycle_ids = running.archive.list_cycles()
    requests = [load_archived_cycle(running.archive, cycle_id).forecast_requests.get("ENERGY")
                for cycle_id in cycle_ids]
    sa1 = [r for r in requests if r is not None and r.region == "SA1"]
    assert len(sa1) >= 2 and len({r.SerializeToString(deterministic=True) for r in sa1}) == 1
    assert sa1[0].request_id.startswith("forecast/SA1/")
    cycle = running.settings.cycle
    assert sa1[0].algorithm == common_pb2.AlgorithmRef(name=cycle.forecast_algorithm,
                                                       version=cycle.forecast_algorithm_version)
    assert (cycle.forecast_algorithm, cycle.forecast_algorithm_version) == (forecaster.NAME, "6")
