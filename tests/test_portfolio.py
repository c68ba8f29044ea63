"""A portfolio of units on the real cycle parts: two battery units in two regions cycle at once, each bids
with its own battery, ladders and optimiser, is cleared at its own region's prices and honours its own operator
controls; every unit gets its schedule; the effective configuration carries the portfolio to the stack's
processes; the CLI accepts every configured unit and refuses the others."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from archive import open_archive
from cli.main import app
from models import operator_controls as control_store
from models.bids import count_accepted_submissions
from models.db import connect
from services.temporal_client import schedule_ids
from settings import Settings, load_settings
from stack.cycles import run_portfolio_cycles_at
from stack.schedule import ensure_schedules, operator_input
from stack.status import probe_units
from stack.supervisor import settings_to_toml
from tests.conftest import temporary_database
from tests.live_stack import LiveStack, live_stack
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

pytestmark = [pytest.mark.timeout(600)]

PORTFOLIO = '''
[[units]]
unit_id = "HPR1"
region = "SA1"
[[units]]
unit_id = "VIC2"
region = "VIC1"
power_mw = 40.0
energy_mwh = 80.0
soc_min_fraction = 0.1
[units.bidding]
gen_band_prices = [-1000.0, -100.0, -50.0, -20.0, 0.0, 60.0, 120.0, 300.0, 1000.0, 14800.0]
[[units]]
unit_id = "NSW3"
region = "NSW1"
power_mw = 20.0
energy_mwh = 40.0
[units.cycle]
optimiser_algorithm_version = "7"
'''
HORIZON_INTERVALS = 48
HISTORY_INTERVALS = 288
# Decisions 30 s into the intervals ending 16:05 and 16:10 on 15 January 2021: they bid 16:10 and 16:15.
FIRST_DECISION = datetime(2021, 1, 15, 16, 0, 30)


def _portfolio(tmp_path: Path) -> Settings:
    path = tmp_path / "portfolio.toml"
    path.write_text(PORTFOLIO + f"[cycle]\nhorizon_intervals = {HORIZON_INTERVALS}\n"
                                f"history_intervals = {HISTORY_INTERVALS}\n")
    return load_settings(path, environ={})


@pytest.fixture(scope="module")
async def running(server_url: str, sqs_endpoint: str,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveStack]:
    loaded = _portfolio(tmp_path_factory.mktemp("portfolio-config"))
    with temporary_database(server_url) as database_url:
        settings = replace(loaded, database_url=database_url,
                           stack=replace(loaded.stack, state_dir=tmp_path_factory.mktemp("portfolio")))
        async with live_stack(settings, sqs_endpoint) as stack:
            yield stack


def _rrp(settings: Settings, region: str, dispatch_interval: datetime) -> float:
    frame = pd.read_parquet(settings.market_data.data_dir / "PUBLIC_DVD_DISPATCHPRICE_202101010000.parquet")
    row = frame[(frame.REGIONID == region) & (frame.INTERVENTION == 0)
                & (frame.SETTLEMENTDATE == dispatch_interval.strftime("%Y/%m/%d %H:%M:%S"))]
    return float(row.RRP.iloc[0])


async def test_units_cycle_at_once_each_with_its_battery_ladders_and_region(running: LiveStack) -> None:
    settings = running.settings
    runs = await run_portfolio_cycles_at(running.client, settings, FIRST_DECISION, search_attributes=False)
    assert [run.failure for run in runs] == [None, None, None]
    archive = open_archive(settings)
    assert settings.database_url is not None
    for run, unit in zip(runs, settings.battery_units, strict=True):
        result = run.result
        assert result is not None and result.status == "SUBMITTED" and result.bid_id, result
        assert result.bid_id.startswith(f"{unit.unit_id}/")
        interval = datetime.fromisoformat(result.dispatch_interval)
        assert interval == datetime(2021, 1, 15, 16, 10)
        bid = archive.get(result.facts[3].archive_keys[0])
        assert isinstance(bid, bid_pb2.Bid) and bid.unit_id == unit.unit_id
        # Each unit plans with its own optimiser: NSW3 names lp-spike-reserve v7, the others [cycle]'s.
        (optimised,) = [fact for fact in result.facts if fact.stage == "optimise"]
        plan = archive.get(optimised.archive_keys[0])
        assert isinstance(plan, worker_pb2.OptimisationResult)
        assert (plan.algorithm.name, plan.algorithm.version) == (
            unit.cycle.optimiser_algorithm, unit.cycle.optimiser_algorithm_version)
        assert plan.algorithm.version == ("7" if unit.unit_id == "NSW3" else settings.cycle.optimiser_algorithm_version)
        energy = [offer for offer in bid.offers if offer.product == "ENERGY"]
        assert energy
        for offer in energy:
            # Each unit bids its own ladders and never more than its own power.
            gen = offer.direction == common_pb2.DIRECTION_GEN
            ladder = unit.bidding.gen_band_prices if gen else unit.bidding.load_band_prices
            assert list(offer.band_price) == pytest.approx(ladder)
            assert all(period.max_avail_mw <= unit.battery.power_mw + 1e-9 for period in offer.periods)
        # Cleared at its own region's historical price.
        outcome = result.outcome
        assert outcome is not None and outcome.cleared
        assert outcome.price == pytest.approx(_rrp(settings, unit.region, interval))
        async with await connect(settings.database_url) as conn:
            assert await count_accepted_submissions(conn, unit.unit_id, interval) == 1
    # The three regions' prices differ in this interval, so the regions were not mixed up.
    assert len({round(run.result.outcome.price, 4) for run in runs if run.result and run.result.outcome}) == 3


async def test_a_units_operator_controls_hold_for_that_unit_alone(running: LiveStack) -> None:
    settings = running.settings
    assert settings.database_url is not None
    async with await connect(settings.database_url) as conn:
        await control_store.set_paused(conn, "VIC2", True, "VIC1 transformer maintenance")
    try:
        decision = FIRST_DECISION.replace(minute=5)
        runs = await run_portfolio_cycles_at(running.client, settings, decision, search_attributes=False)
    finally:
        async with await connect(settings.database_url) as conn:
            await control_store.set_paused(conn, "VIC2", False, None)
    by_unit = {unit.unit_id: run for unit, run in zip(settings.battery_units, runs, strict=True)}
    assert by_unit["VIC2"].result is not None and by_unit["VIC2"].result.status == "PAUSED"
    for unit_id in ("HPR1", "NSW3"):
        result = by_unit[unit_id].result
        assert result is not None and result.status == "SUBMITTED", result
    # The operator workflow of each unit checks requests against that unit's SoC limits.
    assert operator_input(settings, "VIC2").soc_min_fraction == 0.1
    assert operator_input(settings, "HPR1").soc_min_fraction == 0.05


async def test_status_shows_every_unit_with_its_days_pnl(running: LiveStack) -> None:
    """After the cycles above: each battery unit's P&L of 15 January (intervals counted once), the VPP's none."""
    states = await asyncio.to_thread(probe_units, running.settings)
    assert [(state.unit_id, state.kind, state.region) for state in states] == [
        ("HPR1", "battery", "SA1"), ("VIC2", "battery", "VIC1"), ("NSW3", "battery", "NSW1"), ("VPP1", "vpp", "SA1")]
    by_unit = {state.unit_id: state.pnl for state in states}
    assert by_unit["HPR1"].startswith("HPR1 trading day 2021-01-15: energy ")
    assert by_unit["HPR1"].endswith("(2 intervals)") and by_unit["NSW3"].endswith("(2 intervals)")
    assert by_unit["VIC2"].endswith("(1 intervals)")  # paused in the second round: nothing recorded then
    assert by_unit["VPP1"] == "VPP1: no interval recorded yet"


async def test_every_battery_unit_gets_its_own_schedule(running: LiveStack) -> None:
    settings = running.settings
    identifiers = await ensure_schedules(settings, running.client)
    assert identifiers == schedule_ids(settings) == ("autobidder-HPR1", "autobidder-VIC2", "autobidder-NSW3")
    try:
        for identifier, unit in zip(identifiers, settings.battery_units, strict=True):
            described = await running.client.get_schedule_handle(identifier).describe()
            action = described.schedule.action
            (payload,) = action.args  # type: ignore[attr-defined]
            cycle_input = json.loads(payload.data)  # the default converter's JSON
            assert (cycle_input["unit_id"], cycle_input["region"]) == (unit.unit_id, unit.region)
            assert action.id == f"autobidder-{unit.unit_id}"  # type: ignore[attr-defined]
    finally:
        for identifier in identifiers:
            await running.client.get_schedule_handle(identifier).delete()


def test_the_effective_configuration_carries_the_portfolio(tmp_path: Path) -> None:
    settings = _portfolio(tmp_path)
    path = tmp_path / "effective.toml"
    path.write_text(settings_to_toml(settings))
    reloaded = load_settings(path, environ={})
    assert reloaded.portfolio == settings.portfolio
    assert reloaded == settings


def test_the_cli_accepts_configured_units_and_refuses_others(tmp_path: Path) -> None:
    config = tmp_path / "portfolio.toml"
    config.write_text(PORTFOLIO)
    runner = CliRunner()
    env = {"VPP_TEMPORAL_ADDRESS": "127.0.0.1:1", "VPP_STATE_DIR": str(tmp_path / "state")}

    def vpp(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["--config", str(config), *args], env=env, terminal_width=200)
        assert "Traceback" not in result.output
        return result.exit_code, result.output

    code, output = vpp("ops", "pause", "VIC2", "--reason", "maintenance")
    assert code != 0 and "cannot reach Temporal" in output  # accepted, then Temporal is not there
    code, output = vpp("ops", "pause", "NOPE", "--reason", "maintenance")
    assert code == 1 and "error: unknown unit 'NOPE': the configured units are 'HPR1', 'VIC2', 'NSW3', 'VPP1'" in output
    code, output = vpp("ops", "pause", "VPP1", "--reason", "maintenance")
    assert code == 1 and "the VPP's fleet unit" in output and "takes no operator controls" in output
    # hold-soc checks the floor against the unit's own SoC limits (VIC2: 10 % to 95 %; HPR1: 5 % to 95 %).
    until = (datetime.now(UTC) + timedelta(hours=2)).isoformat(timespec="minutes")
    code, output = vpp("ops", "hold-soc", "VIC2", "--floor", "0.07", "--until", until, "--reason", "storm")
    assert code == 1 and "error: SoC floor 0.07 is outside the battery's limits" in output
    code, output = vpp("ops", "hold-soc", "HPR1", "--floor", "0.07", "--until", until, "--reason", "storm")
    assert code != 0 and "cannot reach Temporal" in output
