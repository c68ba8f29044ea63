"""`vpp up --market aemo-sandbox`: the supervisor runs the AEMO stand-in as a process of its own and gives only the
bid service (aemo backend) its address and freshly generated credentials."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from algorithms.common.replay_clock import replay_market_time
from services import bid_service
from settings import Settings
from stack.ports import StackError
from stack.status import _sandbox_part
from stack.supervisor import AEMO_SANDBOX, LocalStack, with_market
from tests.conftest import free_port
from tests.test_bid_service import make_bid
from vpp.v1 import bid_pb2

pytestmark = pytest.mark.stack


def sandbox_settings(settings: Settings, database_url: str) -> Settings:
    return replace(with_market(settings, "aemo-sandbox"), database_url=database_url,
                   stack=replace(settings.stack, bid_service_port=free_port(), aemo_sandbox_port=free_port()))


def test_the_stand_in_serves_only_the_aemo_backend(settings: Settings) -> None:
    assert with_market(settings, "simulated") == settings
    with pytest.raises(StackError, match="--market must be one of simulated, aemo-sandbox"):
        with_market(settings, "aemo")
    with pytest.raises(StackError, match="backend = \"aemo\""):
        LocalStack(settings, parts={"bids"}, aemo_sandbox=True)


def test_the_bid_service_alone_gets_the_stand_ins_credentials(settings: Settings, database_url: str) -> None:
    stack = LocalStack(sandbox_settings(settings, database_url), parts={"market-data", "bids"}, aemo_sandbox=True)
    children = {child.name: child for child in stack._child_processes()}
    assert list(children) == ["market-data", AEMO_SANDBOX, "bids"]
    sandbox = children[AEMO_SANDBOX]
    assert sandbox.argv[1:3] == ("-m", "aemo_sandbox") and "--replay-start" in sandbox.argv
    config_path = stack.settings.stack.state_dir / "aemo-sandbox.json"
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    password = json.loads(config_path.read_text())["password"]
    assert password not in " ".join(sandbox.argv)
    bids_env, data_env = children["bids"].env, children["market-data"].env
    assert bids_env is not None and data_env is not None
    assert bids_env["VPP_AEMO_API_PASSWORD"] == password
    assert not any(name.startswith("VPP_AEMO") for name in data_env)


async def test_vpp_up_market_aemo_sandbox_submits_through_the_stand_in_process(settings: Settings,
                                                                               database_url: str) -> None:
    configured = sandbox_settings(settings, database_url)
    with LocalStack(configured, parts={"bids"}, aemo_sandbox=True, ui=False) as stack:
        security = stack._edge.security() if stack._edge is not None else None
        cycle = configured.cycle
        now = replay_market_time(datetime.now(UTC), cycle.replay_start, cycle.replay_days)
        first = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5) + timedelta(minutes=15)
        bid = make_bid(configured.battery.unit_id, first)
        bid.offers[0].band_price[:] = configured.bidding.gen_band_prices
        bid.offers[1].band_price[:] = configured.bidding.load_band_prices
        accepted = await bid_service.submit_bid(stack.bid_service_address, bid, security=security)
        assert accepted.status == bid_pb2.BID_STATUS_ACCEPTED, accepted.reasons

        changed = make_bid(configured.battery.unit_id, first + timedelta(minutes=5))
        rejected = await bid_service.submit_bid(stack.bid_service_address, changed, security=security)
        assert rejected.status == bid_pb2.BID_STATUS_REJECTED
        assert any(reason.startswith("AEMO PRICE_BANDS_FIXED:") for reason in rejected.reasons)
        sandbox_state = _sandbox_part(configured)  # what `vpp status` shows
        assert [(p.part, p.up) for p in sandbox_state] == [("AEMO bidding API stand-in", True)]
        log_text = (configured.stack.log_dir / "bids.log").read_text()
        password = json.loads((configured.stack.state_dir / "aemo-sandbox.json").read_text())["password"]
        assert password not in log_text
