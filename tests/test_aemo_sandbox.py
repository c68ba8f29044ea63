"""The AEMO stand-in over real HTTP: authentication, schema, units owned, gate closure and the 12:30 rule, and
its answers in AEMO's format (read by the platform's client, aemo/bidding_api.py)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aemo.bid_json import bid_to_submission
from aemo.bidding_api import BiddingApiClient, BiddingApiConfig, BiddingApiRefusedError, SubmissionAnswer
from aemo_sandbox.__main__ import replay_clock
from aemo_sandbox.rules import UnitDefaults
from aemo_sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from tests.test_bid_service import GEN_PRICES, LOAD_PRICES, T, make_bid

PARTICIPANT = "OPENVPP1"
USER = "bidder"
PASSWORD = "pa55-7c1e"
UNIT = "HPR1"
DAY = T.date()  # trading day 2021-01-10 (T ends 18:30)
DEFAULT_FCAS = (0.0, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 1000.0, 10000.0)
DAILY_GEN = [p + 2.0 for p in GEN_PRICES]


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(participant_id=PARTICIPANT, username=USER, password=PASSWORD,
                           units={UNIT: UnitDefaults(UNIT, tuple(GEN_PRICES), tuple(LOAD_PRICES), DEFAULT_FCAS)})
    with SandboxServer(config, SandboxClock.at(T - timedelta(minutes=10))) as server:
        yield server


def client(sandbox: SandboxServer, password: str = PASSWORD) -> BiddingApiClient:
    return BiddingApiClient(BiddingApiConfig(sandbox.url, PARTICIPANT, USER, password, timeout_s=5.0))


async def submit(sandbox: SandboxServer, payload: dict[str, Any]) -> SubmissionAnswer:
    return await client(sandbox).submit(payload)


def payload_of(first: datetime = T, *, gen_prices: list[float] | None = None, version: int = 1,
               unit: str = UNIT) -> dict[str, Any]:
    return bid_to_submission(make_bid(unit, first, gen_prices=gen_prices, version=version, count=2))


async def test_a_bid_for_an_open_interval_with_the_default_prices_is_accepted_as_a_rebid(
        sandbox: SandboxServer) -> None:
    answer = await submit(sandbox, payload_of())
    assert answer.status == "ACCEPTED" and answer.transaction_id and not answer.reasons
    assert answer.entry_type == "REBID"
    assert answer.offer_timestamp.startswith("2021-01-10T18:2") and answer.offer_timestamp.endswith("+10:00")
    status = await client(sandbox).submission_status(answer.reference_id)
    assert status.status == "ACCEPTED" and status.transaction_id == answer.transaction_id


async def test_the_daily_bid_fixes_the_band_prices_after_12_30_the_day_before(sandbox: SandboxServer) -> None:
    sandbox.state.set_clock(SandboxClock.at(datetime(2021, 1, 9, 12, 29)))
    daily = await submit(sandbox, payload_of(gen_prices=DAILY_GEN, version=1))
    assert daily.status == "ACCEPTED" and daily.entry_type == "DAILY"

    sandbox.state.set_clock(SandboxClock.at(datetime(2021, 1, 9, 12, 31)))
    same = await submit(sandbox, payload_of(gen_prices=DAILY_GEN, version=2))
    assert same.status == "ACCEPTED" and same.entry_type == "REBID"
    default = await submit(sandbox, payload_of(version=3))  # the default bid's prices no longer hold
    assert default.status == "REJECTED"
    assert [reason.code for reason in default.reasons] == ["PRICE_BANDS_FIXED"]
    assert "differ from the DAILY bid" in default.reasons[0].detail
    assert default.reasons[0].source == "energyBids[0].prices"


async def test_without_a_daily_bid_the_default_bid_fixes_the_prices(sandbox: SandboxServer) -> None:
    changed = await submit(sandbox, payload_of(gen_prices=DAILY_GEN))
    assert changed.status == "REJECTED" and "differ from the default bid" in changed.reasons[0].detail


async def test_a_period_whose_gate_has_closed_is_rejected(sandbox: SandboxServer) -> None:
    sandbox.state.set_clock(SandboxClock.at(T - timedelta(minutes=5)))  # the interval ending T starts now
    answer = await submit(sandbox, payload_of())
    assert [reason.code for reason in answer.reasons] == ["GATE_CLOSED", "GATE_CLOSED"]  # GEN and LOAD
    assert "first period 174" in answer.reasons[0].detail


async def test_a_unit_the_participant_does_not_own_is_rejected(sandbox: SandboxServer) -> None:
    answer = await submit(sandbox, payload_of(unit="OTHER1"))
    assert answer.status == "REJECTED"
    assert {(r.code, r.source) for r in answer.reasons} == {("UNIT_NOT_OWNED", "energyBids[0].duid"),
                                                            ("UNIT_NOT_OWNED", "energyBids[1].duid")}


async def test_schema_errors_name_the_field(sandbox: SandboxServer) -> None:
    payload = payload_of()
    payload["energyBids"][0]["energyPeriods"][1]["bandAvail"] = [1.0] * 9
    payload["energyBids"][1]["prices"] = list(reversed(LOAD_PRICES))
    payload["energyBids"][1]["direction"] = "SIDEWAYS"
    answer = await submit(sandbox, payload)
    assert answer.status == "REJECTED" and answer.http_status == 400
    assert {(r.code, r.source) for r in answer.reasons} == {
        ("SCHEMA", "energyBids[0].energyPeriods[1].bandAvail"), ("SCHEMA", "energyBids[1].prices"),
        ("SCHEMA", "energyBids[1].direction")}
    assert sandbox.state.submission(payload["referenceId"]) is not None  # recorded: its reference is used up


async def test_a_repeated_reference_is_a_duplicate_with_the_original_transaction(sandbox: SandboxServer) -> None:
    first = await submit(sandbox, payload_of())
    second = await submit(sandbox, payload_of(gen_prices=DAILY_GEN))  # same reference id, other content
    assert second.status == "DUPLICATE" and second.http_status == 409
    assert second.transaction_id == first.transaction_id and second.original_status == "ACCEPTED"
    assert [reason.code for reason in second.reasons] == ["DUPLICATE_REFERENCE"]
    assert sandbox.state.received[first.reference_id] == 2


async def test_wrong_credentials_or_participant_are_refused(sandbox: SandboxServer) -> None:
    with pytest.raises(BiddingApiRefusedError):
        await client(sandbox, password="wrong").submit(payload_of())
    request = urllib.request.Request(
        sandbox.url + "/submitBids", data=json.dumps(payload_of()).encode(), method="POST",
        headers={"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
                 "X-initiatingParticipantID": "SOMEONEELSE", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=5)
    assert raised.value.code == 401
    assert json.loads(raised.value.read())["errors"][0]["code"] == "UNAUTHORISED"
    assert sandbox.state.received == {}


async def test_unknown_reference_status_is_not_found(sandbox: SandboxServer) -> None:
    status = await client(sandbox).submission_status("never-sent")
    assert status.status == "NOT_FOUND" and status.http_status == 404


def test_replay_clock_keeps_the_time_of_day_in_the_replay_period() -> None:
    now = datetime(2026, 12, 6, 7, 30)  # UTC: 17:30 AEST
    clock = replay_clock(datetime(2021, 1, 5).date(), 14, now_utc=now.replace(tzinfo=UTC))
    days = (datetime(2026, 12, 6).date() - datetime(2021, 1, 5).date()).days % 14
    expected = datetime(2021, 1, 5, 17, 30) + timedelta(days=days)
    assert abs((now + timedelta(hours=10) + clock.offset) - expected) < timedelta(seconds=1)


def fcas_bid(service: str, prices: tuple[float, ...] = DEFAULT_FCAS) -> dict[str, Any]:
    return {"tradingDate": DAY.isoformat(), "duid": UNIT, "service": service, "prices": list(prices),
            "fcasPeriods": [{"periodId": 174, "maxAvail": 10.0, "bandAvail": [10.0] + [0.0] * 9,
                             "enablementMin": 0.0, "lowBreakPoint": 10.0, "highBreakPoint": 140.0,
                             "enablementMax": 150.0}]}


async def test_fcas_bids_are_checked_for_their_service_and_fixed_prices(sandbox: SandboxServer) -> None:
    payload = payload_of()
    payload["fcasBids"] = [fcas_bid("RAISE6SEC")]
    assert (await submit(sandbox, payload)).status == "ACCEPTED"
    payload = payload_of(version=2)
    payload["fcasBids"] = [fcas_bid("RAISE7SEC"), fcas_bid("LOWERREG", tuple(p + 1 for p in DEFAULT_FCAS))]
    answer = await submit(sandbox, payload)
    assert [(r.code, r.source) for r in answer.reasons] == [("SCHEMA", "fcasBids[0].service")]
    payload["fcasBids"] = [fcas_bid("LOWERREG", tuple(p + 1 for p in DEFAULT_FCAS))]
    payload["referenceId"] += "-b"
    answer = await submit(sandbox, payload)
    assert [(r.code, r.source) for r in answer.reasons] == [("PRICE_BANDS_FIXED", "fcasBids[0].prices")]
