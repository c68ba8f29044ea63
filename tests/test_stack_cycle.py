"""Real cycles on the real local stack: Temporal dev server, SQS endpoint (moto server), PostgreSQL,
the market-data and bid gRPC services, the forecast and optimisation worker pools and the Temporal
worker, each a separate process started by :class:`stack.supervisor.LocalStack` — and the 15-minute
price-forecast distribution to 2,000 simulated homes that plan on the device and send their plans back.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from activities.distribution_facts import DistributionResult
from archive import open_archive
from models.bids import band_prices_of, count_accepted_submissions, daily_entry_band_prices
from models.db import connect
from pools.sqs import queue_urls, sqs_client
from settings import Settings, load_settings
from stack.cycles import run_cycle_at
from stack.schedule import (
    DISTRIBUTION_SCHEDULE_ID,
    distribution_input,
    ensure_distribution_schedule,
    ensure_schedule,
    schedule_id,
)
from stack.supervisor import LocalStack
from tests.conftest import free_port, temporary_database
from vpp.v1 import bid_pb2
from workflows import search_attributes as sa
from workflows.autobidder import AutobidderCycle
from workflows.distribution import PriceForecastDistribution

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

REGION = "SA1"
SIMULATED_SITES = 2_000
# Decisions 30 s into the intervals ending 16:05, 16:10, ... on 15 January 2021.
FIRST_DECISION = datetime(2021, 1, 15, 16, 0, 30)


@pytest.fixture(scope="module")
def stack(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The whole local stack on free ports, with a fresh database, for this module."""
    loaded = load_settings(environ={})
    with temporary_database(server_url) as url:
        settings = replace(
            loaded,
            database_url=url,
            stack=replace(loaded.stack, state_dir=tmp_path_factory.mktemp("stack"),
                          temporal_address=f"127.0.0.1:{free_port()}", temporal_ui_port=free_port(),
                          sqs_port=free_port(), market_data_port=free_port(), bid_service_port=free_port(),
                          forecast_workers=2, optimiser_workers=1,
                          # Messages held by a killed process come back sooner (workers extend it while busy).
                          visibility_timeout_s=8),
            fleet=replace(loaded.fleet, simulated_sites=SIMULATED_SITES, gateway_port=free_port()),
            coopt=replace(loaded.coopt, vpp_node="network-nem", plan_collection_s=20.0),
        )
        with LocalStack(settings, ui=True) as running:
            yield running


@pytest.fixture(scope="module")
async def client(stack: LocalStack) -> AsyncIterator[Client]:
    yield await Client.connect(stack.temporal_address)


def dispatch_prices() -> pd.DataFrame:
    path = load_settings(environ={}).market_data.data_dir / "PUBLIC_DVD_DISPATCHPRICE_202101010000.parquet"
    frame = pd.read_parquet(path)
    return frame[(frame.REGIONID == REGION) & (frame.INTERVENTION == 0)].set_index("SETTLEMENTDATE")


def rrp_at(frame: pd.DataFrame, dispatch_interval: datetime) -> float:
    return float(frame.loc[dispatch_interval.strftime("%Y/%m/%d %H:%M:%S"), "RRP"])


async def accepted_submissions(settings: Settings, unit_id: str, dispatch_interval: datetime) -> int:
    assert settings.database_url is not None
    async with await connect(settings.database_url) as conn:
        return await count_accepted_submissions(conn, unit_id, dispatch_interval)


async def test_consecutive_cycles_bid_clear_settle_and_archive(stack: LocalStack, client: Client) -> None:
    settings = stack.settings
    prices = dispatch_prices()
    runs = [await run_cycle_at(client, settings, FIRST_DECISION + timedelta(minutes=5 * i)) for i in range(3)]
    assert [r.failure for r in runs] == [None, None, None]
    results = [r.result for r in runs if r.result is not None]
    intervals = [datetime.fromisoformat(r.dispatch_interval) for r in results]
    assert intervals == [datetime(2021, 1, 15, 16, 10) + timedelta(minutes=5 * i) for i in range(3)]

    archive = open_archive(settings)
    previous_soc = None
    for run, result, interval in zip(runs, results, intervals, strict=True):
        assert result.status == "SUBMITTED" and result.bid_id
        assert [f.stage for f in result.facts] == ["fetch", "forecast", "optimise", "bid", "submit", "record"]
        # Settlement: energy revenue is RRP x MLF x net MW x 5/60 at the historical price.
        outcome = result.outcome
        assert outcome is not None and outcome.cleared
        rrp = rrp_at(prices, interval)
        assert outcome.price == pytest.approx(rrp)
        assert outcome.energy_revenue_dollars == pytest.approx(rrp * (outcome.gen_mw - outcome.load_mw) * 5 / 60)
        # State of charge follows the cleared MW with the reference efficiencies.
        if previous_soc is not None:
            expected = previous_soc + 0.92 * outcome.load_mw * 5 / 60 - outcome.gen_mw * 5 / 60 / 0.92
            assert outcome.state_of_charge_mwh == pytest.approx(expected, abs=1e-6)
        previous_soc = outcome.state_of_charge_mwh
        # Every request and result of the cycle is archived, immutable and decodable.
        labels = {entry.label for entry in archive.list_cycle(run.workflow_id)}
        assert {"market-snapshot", "forecast-request/ENERGY", "forecast-result/ENERGY", "optimisation-request",
                "optimisation-result/", "bid", "bid-acknowledgement", "market-outcome"} <= labels
        assert len([label for label in labels if label.startswith("forecast-result/")]) == 9
        bid = archive.get(result.facts[3].archive_keys[0])
        assert isinstance(bid, bid_pb2.Bid) and bid.unit_id == settings.cycle.unit_id
        assert await accepted_submissions(settings, settings.cycle.unit_id, interval) == 1

    # The cycle record is in PostgreSQL with its facts.
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT cycle_id, status, bid_id, jsonb_array_length(facts) FROM cycles "
                            "WHERE cycle_id = ANY(%s)", ([r.workflow_id for r in runs],)).fetchall()
    assert sorted((r[1], r[3] >= 6) for r in rows) == [("SUBMITTED", True)] * 3

    # The Web UI sees the stage, bid and outcome as search attributes and memo.
    description = await client.get_workflow_handle(runs[0].workflow_id).describe()
    typed = description.typed_search_attributes
    assert typed.get(sa.UNIT) == settings.cycle.unit_id and typed.get(sa.REGION) == REGION
    assert typed.get(sa.STAGE) == "record" and typed.get(sa.OUTCOME) == "SUBMITTED"
    assert typed.get(sa.BID_ID) == results[0].bid_id
    memo = await description.memo()
    assert memo["bid"]["bid_id"] == results[0].bid_id


async def test_killed_worker_mid_cycle_still_submits_exactly_once(stack: LocalStack, client: Client) -> None:
    settings = stack.settings
    decision = FIRST_DECISION + timedelta(hours=1)
    cycle_task = asyncio.create_task(run_cycle_at(client, settings, decision, workflow_id="fault-kill-worker"))
    # Mid-cycle: the snapshot is archived (the stages run as local activities: nothing is in the history yet).
    await _wait_for_archived(settings, "fault-kill-worker", "market-snapshot")
    stack.kill_part("temporal-worker")
    stack.kill_part("optimisation")
    await asyncio.sleep(2)
    await asyncio.to_thread(stack.restart_part, "optimisation")
    await asyncio.to_thread(stack.restart_part, "temporal-worker")
    run = await asyncio.wait_for(cycle_task, timeout=240)
    assert run.failure is None and run.result is not None and run.result.status == "SUBMITTED"
    interval = datetime.fromisoformat(run.result.dispatch_interval)
    assert await accepted_submissions(settings, settings.cycle.unit_id, interval) == 1
    # A second cycle for the same interval (e.g. a duplicate trigger) either finds the bid in force
    # still fits or is acknowledged as a duplicate: never a second submission.
    again = await run_cycle_at(client, settings, decision)
    assert again.result is not None
    assert any("already submitted" in f.summary or "no material change" in f.summary for f in again.result.facts)
    assert await accepted_submissions(settings, settings.cycle.unit_id, interval) == 1


async def test_restarted_temporal_server_does_not_lose_the_cycle(stack: LocalStack, client: Client) -> None:
    settings = stack.settings
    decision = FIRST_DECISION + timedelta(hours=2)
    handle = await client.start_workflow(
        AutobidderCycle.run, _cycle_input(settings, decision), id="fault-restart-temporal",
        task_queue=settings.stack.task_queue)
    await _wait_for_archived(settings, handle.id, "market-snapshot")
    await asyncio.to_thread(stack.restart_part, "temporal")
    fresh = await Client.connect(stack.temporal_address)
    result = await asyncio.wait_for(
        fresh.get_workflow_handle_for(AutobidderCycle.run, "fault-restart-temporal").result(), timeout=240)
    assert result.status == "SUBMITTED"
    interval = datetime.fromisoformat(result.dispatch_interval)
    assert await accepted_submissions(settings, settings.cycle.unit_id, interval) == 1


async def test_poison_message_lands_in_the_dead_letter_queue_with_its_reason(stack: LocalStack) -> None:
    settings = stack.settings
    sqs = sqs_client(settings)
    urls = queue_urls(sqs, settings)
    body = base64.b64encode(b"\x08\x96\x01 definitely not a WorkerTask").decode()
    sqs.send_message(QueueUrl=urls.forecast_requests, MessageBody=body)
    deadline = time.monotonic() + 60
    dead: list[dict[str, object]] = []
    while time.monotonic() < deadline and not dead:
        answer = sqs.receive_message(QueueUrl=urls.dead_letters, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     MessageAttributeNames=["All"])
        dead = [m for m in answer.get("Messages", []) if m["Body"] == body]
    assert dead, "the poison message never reached the dead-letter queue"
    attributes = dead[0]["MessageAttributes"]
    assert isinstance(attributes, dict)
    assert attributes["ErrorCode"]["StringValue"] == "invalid_message"
    assert attributes["ErrorMessage"]["StringValue"]


async def test_schedule_fires_every_five_minutes_aligned_with_skip_overlap(stack: LocalStack,
                                                                          client: Client) -> None:
    settings = stack.settings
    await ensure_schedule(settings, client)
    await ensure_schedule(settings, client)  # idempotent: updates in place
    handle = client.get_schedule_handle(schedule_id(settings))
    description = await handle.describe()
    spec = description.schedule.spec.intervals[0]
    assert spec.every == timedelta(minutes=5) and spec.offset == timedelta(seconds=settings.cycle.schedule_offset_s)
    assert description.schedule.policy.catchup_window == timedelta(minutes=5)
    assert description.schedule.policy.overlap.name == "SKIP"
    await handle.trigger()
    deadline = time.monotonic() + 120
    status = None
    while time.monotonic() < deadline:
        recent = (await handle.describe()).info.recent_actions
        if recent:
            run = client.get_workflow_handle(recent[-1].action.workflow_id)
            status = (await run.describe()).status
            if status != WorkflowExecutionStatus.RUNNING:
                break
        await asyncio.sleep(1)
    await handle.delete()
    failure = ""
    if status != WorkflowExecutionStatus.COMPLETED and recent:
        try:
            await client.get_workflow_handle(recent[-1].action.workflow_id).result()
        except Exception as error:  # the failure is the message
            failure = f"{error}: {getattr(error, 'cause', '')}"
    assert status == WorkflowExecutionStatus.COMPLETED, failure


def _cycle_input(settings: Settings, decision: datetime) -> object:
    from activities.cycle_facts import CycleInput
    from stack.schedule import cycle_config

    return CycleInput(unit_id=settings.cycle.unit_id, region=REGION, config=cycle_config(settings.cycle),
                      decision_time=decision.isoformat())


async def _wait_for_archived(settings: Settings, cycle_id: str, label: str, timeout_s: float = 60) -> None:
    """Wait until the cycle ``cycle_id`` has archived an object labelled ``label``."""
    archive = open_archive(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(entry.label == label for entry in await asyncio.to_thread(archive.list_cycle, cycle_id)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"cycle {cycle_id} archived no {label} within {timeout_s} s")



async def test_price_forecasts_reach_the_sites_whose_plans_are_bid_as_one_unit(stack: LocalStack,
                                                                               client: Client) -> None:
    from cli.fleet import _gateway_call
    from vpp.v1 import fleet_pb2

    settings = stack.settings
    await ensure_distribution_schedule(settings, client)
    described = await client.get_schedule_handle(DISTRIBUTION_SCHEDULE_ID).describe()
    assert described.schedule.spec.intervals[0].every == timedelta(minutes=15)
    await client.get_schedule_handle(DISTRIBUTION_SCHEDULE_ID).delete()
    result: DistributionResult = await client.execute_workflow(
        PriceForecastDistribution.run, replace(distribution_input(settings), dispatch_intervals=1),
        id=f"distribution-e2e-{time.time_ns()}",
        task_queue=settings.stack.task_queue, execution_timeout=timedelta(minutes=5))
    published = result.published
    assert published.published and published.version == result.version
    # Every simulated site is served by an authenticated stream: the new version is pushed to all of them.
    assert published.sites_pushed == SIMULATED_SITES and published.streams_pushed >= 1
    fleet_bid = result.fleet_bid
    assert fleet_bid.expected_sites == SIMULATED_SITES
    # The sites planned on the device within the collection window, on the version just published.
    assert fleet_bid.current_version_sites >= 0.95 * SIMULATED_SITES, fleet_bid.aggregate
    assert fleet_bid.valid, fleet_bid.violations
    assert fleet_bid.bid_key and f"v{result.version}" in fleet_bid.aggregate
    plans = await asyncio.to_thread(_gateway_call, "GetPlans", fleet_pb2.GetPlansRequest(), settings)
    assert plans.latest_version == result.version
    assert sum(1 for v in plans.held_version if v == result.version) == SIMULATED_SITES
    assert plans.plans_accepted >= fleet_bid.current_version_sites and not plans.plans_quarantined
    bid = open_archive(settings).get(fleet_bid.bid_key)
    assert isinstance(bid, bid_pb2.Bid) and bid.unit_id == settings.coopt.fleet_unit_id
    # The market (the simulated NEM, with the fleet registered as a unit) accepted it, and its instruction
    # for the first interval went down the VPP's control loop as a dispatch event at the node.
    submitted = result.submitted
    assert submitted is not None and submitted.status == "ACCEPTED", submitted
    assert submitted.dispatch_mw is not None and math.isfinite(submitted.dispatch_mw)
    assert abs(submitted.dispatch_mw) <= fleet_bid.registered_power_mw + 1e-9
    # The first interval starts at least ~90 s after the decision (minimum lead): it is not over yet.
    [event_id] = result.dispatch_event_ids
    assert event_id
    event = client.get_workflow_handle(event_id)
    progress = await event.query("progress")
    assert progress["target_mw"] == pytest.approx(submitted.dispatch_mw)
    assert progress["node_id"] == settings.coopt.vpp_node
    await event.execute_update("cancel", "test over: release the homes")


SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


async def test_a_cycle_before_the_daily_close_submits_the_next_days_daily_bid(stack: LocalStack,
                                                                              client: Client) -> None:
    """12:00:30 on 20 January, inside the hour before the 12:30 close of the 21st: the cycle submits its rebid
    and the DAILY bid of the 21st; the next cycle submits no second one; the first cycle of the 21st rebids
    from the DAILY bid keeping its band prices."""
    settings = stack.settings
    unit = settings.cycle.unit_id
    runs = [await run_cycle_at(client, settings, datetime(2021, 1, 20, 12, 0, 30) + timedelta(minutes=5 * i))
            for i in range(2)]
    assert [r.failure for r in runs] == [None, None]
    first, second = (r.result for r in runs)
    assert first is not None and second is not None
    assert [f.stage for f in first.facts] == ["fetch", "forecast", "optimise", "bid", "submit", "daily", "record"]
    assert "daily" not in [f.stage for f in second.facts]
    daily_fact = first.facts[5]
    assert "DAILY bid for trading day 2021-01-21" in daily_fact.summary
    assert f"{unit}/2021-01-21/001/v0 ACCEPTED" in daily_fact.summary
    archive = open_archive(settings)
    daily = archive.get(daily_fact.archive_keys[0])
    assert isinstance(daily, bid_pb2.Bid) and daily.entry_type == bid_pb2.ENTRY_TYPE_DAILY
    assert "bid-daily" in {entry.label for entry in archive.list_cycle(runs[0].workflow_id)}
    assert settings.database_url is not None
    async with await connect(settings.database_url) as conn:
        assert await daily_entry_band_prices(conn, unit, date(2021, 1, 21)) == band_prices_of(daily)
    # 04:00:30 on the 21st bids the interval ending 04:10 as a REBID of the DAILY bid, with its prices.
    morning = await run_cycle_at(client, settings, datetime(2021, 1, 21, 4, 0, 30))
    assert morning.failure is None and morning.result is not None
    assert morning.result.status == "SUBMITTED" and "daily" not in [f.stage for f in morning.result.facts]
    rebid = archive.get(morning.result.facts[3].archive_keys[0])
    assert isinstance(rebid, bid_pb2.Bid) and rebid.entry_type == bid_pb2.ENTRY_TYPE_REBID
    assert rebid.trading_day == "2021-01-21" and band_prices_of(rebid) == band_prices_of(daily)


async def test_operator_screenshots_of_the_temporal_ui(stack: LocalStack, client: Client,
                                                       tmp_path: Path) -> None:
    """The README's operator screenshots, taken in headless Chromium against this stack: the schedule, a
    cycle's page (unit, interval in AEST, intent, bid table, outcome), the unit's operator page (today's P&L,
    the bid in force, the controls) and a paused unit's cycle (why nothing was submitted). A re-triggered
    cycle of an interval already recorded does not count its revenue again. ``VPP_UPDATE_SCREENSHOTS=1``
    copies the screenshots into docs/screenshots/."""
    from activities.operator_facts import ControlsView, operator_workflow_id
    from stack.schedule import ensure_operator
    from stack.screenshots import chromium_path, png_size, rendered_text, screenshot

    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    settings = stack.settings
    assert stack.ui_url is not None
    namespace_url = f"{stack.ui_url}/namespaces/{settings.stack.temporal_namespace}"
    unit = settings.cycle.unit_id
    await ensure_schedule(settings, client)
    await ensure_operator(settings, client)
    operator = client.get_workflow_handle(operator_workflow_id(unit))
    # Late in the month: after every interval the module's other tests (and the live schedule) bid.
    screenshot_decision = datetime(2021, 1, 31, 16, 0, 30)
    cycle = await run_cycle_at(client, settings, screenshot_decision)
    assert cycle.result is not None and cycle.result.status == "SUBMITTED"
    first = cycle.result.outcome
    assert first is not None and first.cleared and first.revenue_counted and first.bid_bands
    assert cycle.result.dispatch_interval_aest == "2021-01-31T16:10:00+10:00"
    # The same interval again (a re-triggered cycle): the outcome is read again but not counted twice.
    again = await run_cycle_at(client, settings, screenshot_decision)
    assert again.result is not None and again.result.outcome is not None and again.result.outcome.cleared
    assert not again.result.outcome.revenue_counted and again.result.outcome.counted_by_cycle == cycle.workflow_id
    memo = await (await client.get_workflow_handle(cycle.workflow_id).describe()).memo()
    console = memo["console"]
    assert console["dispatch_interval"] == "2021-01-31 16:05–16:10 AEST" and console["bid"]
    assert console["outcome"]["revenue_counted"] and console["line"].startswith(f"cycle {unit} 2021-01-31 16:05")
    # The operator page counts the interval once, whatever the number of cycles.
    for _ in range(100):
        shown = await operator.query("console")
        if shown and shown["latest_interval"] == "2021-01-31T16:10:00":
            break
        await asyncio.sleep(0.2)
    assert shown["trading_day"] == "2021-01-31"
    assert settings.database_url is not None
    async with await connect(settings.database_url) as conn:
        cur = await conn.execute("SELECT sum(energy_revenue + fcas_revenue), count(*) FROM cycles WHERE unit_id = %s"
                                 " AND revenue_counted AND dispatch_interval BETWEEN '2021-01-31 04:05' AND "
                                 "'2021-02-01 04:00'", (unit,))
        counted_total, counted_intervals = await cur.fetchone()  # type: ignore[misc]
    assert shown["intervals"] == counted_intervals
    assert shown["energy_revenue_dollars"] + shown["fcas_revenue_dollars"] == pytest.approx(counted_total)
    await operator.execute_update("pause", args=["storm watch over the interconnector", "ops-on-call"],
                                  result_type=ControlsView)
    try:
        paused = await run_cycle_at(client, settings, screenshot_decision + timedelta(minutes=5))
        assert paused.result is not None and paused.result.status == "PAUSED"

        async def run_id(workflow_id: str) -> str:
            return (await client.get_workflow_handle(workflow_id).describe()).run_id or ""

        def page(workflow_id: str, run: str, tab: str) -> str:
            return f"{namespace_url}/workflows/{workflow_id}/{run}/{tab}"

        cycle_run, operator_run = await run_id(cycle.workflow_id), await run_id(operator.id)
        pages = {
            "schedule": (f"{namespace_url}/schedules/{schedule_id(settings)}", [schedule_id(settings)]),
            "cycle-stages": (page(cycle.workflow_id, cycle_run, "history"),
                             ["AutobidderCycle", "submit the bid to the market", "2021-01-31 16:05–16:10 AEST",
                              "record SUBMITTED and read the market's outcome"]),
            "cycle": (page(cycle.workflow_id, cycle_run, "user-metadata"),
                      ["Current Details", "**HPR1** (SA1) · interval 2021-01-31 16:05–16:10 AEST", "The plan is to",
                       "| ENERGY GEN", "**Outcome:** Dispatched", "revenue"]),
            "operator": (page(operator.id, operator_run, "user-metadata"),
                         ["Operator controls and P&L of HPR1", "**P&L today**", "Trading day 2021-01-31",
                          "| energy", "**Bid in force**", "| ENERGY", "Bidding: **PAUSED**", "`hold_soc`"]),
            "paused-unit": (page(paused.workflow_id, await run_id(paused.workflow_id), "user-metadata"),
                            ["**Not submitted:** bidding paused by the operator (storm watch over the "
                             "interconnector)", "**Bid in force**"]),
        }
        for name, (url, expected) in pages.items():
            text = await asyncio.to_thread(rendered_text, url)
            (tmp_path / f"{name}.txt").write_text(text)
            missing = [phrase for phrase in expected if phrase not in text]
            assert not missing, f"{name}: {missing} not shown at {url}: {text[:2000]}"
            window = (1400, 1500) if name in ("cycle-stages", "cycle", "operator") else (1400, 900)  # tall enough
            shot = await asyncio.to_thread(screenshot, url, tmp_path / f"{name}.png", window=window)
            assert png_size(shot) == window and shot.stat().st_size > 20_000  # a rendered page, not blank
            if os.environ.get("VPP_UPDATE_SCREENSHOTS") == "1":
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, SCREENSHOTS / f"{name}.png")
    finally:
        await operator.execute_update("resume", args=["screenshots taken", "ops-on-call"], result_type=ControlsView)
