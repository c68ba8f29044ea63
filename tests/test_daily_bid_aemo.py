"""The DAILY bid through the AEMO stand-in: a production cycle on the real local stack (Temporal dev server, SQS
pools, gRPC services, PostgreSQL) deciding at 12:00:30, inside the hour before the daily bid close of the next
trading day, submits its rebid and the next day's DAILY bid through the aemo bid backend; the stand-in, with its
own checks, accepts the DAILY bid as a DAILY entry. The stack and stand-in fixtures are the aemo backend's
(tests/test_aemo_stack_cycle.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from aemo_sandbox.server import SandboxClock
from models.db import connect
from tests.test_aemo_stack_cycle import AemoStack, aemo_stack, sandbox, submissions

pytestmark = pytest.mark.stack
__all__ = ["aemo_stack", "sandbox"]  # the fixtures this module uses

BEFORE_CLOSE = datetime(2021, 1, 19, 12, 0, 30)  # a day the aemo backend's own cycles do not bid


async def test_a_cycle_before_the_close_submits_the_daily_bid_through_the_stand_in(aemo_stack: AemoStack) -> None:
    sandbox_server, settings = aemo_stack.sandbox, aemo_stack.stack.settings
    sandbox_server.state.set_clock(SandboxClock.at(BEFORE_CLOSE))
    _, result = await aemo_stack.stack.run_cycle(BEFORE_CLOSE)
    assert result.status == "SUBMITTED"
    daily_fact = next(fact.summary for fact in result.facts if fact.stage == "daily")
    daily_id = f"{settings.battery.unit_id}/2021-01-20/001/v0"
    assert f"bid {daily_id} ACCEPTED" in daily_fact, daily_fact
    stored = await submissions(settings, daily_id)
    at_aemo = sandbox_server.state.submission(stored.reference_id)
    assert at_aemo is not None and at_aemo.status == "ACCEPTED" and at_aemo.entry_type == "DAILY"
    assert sandbox_server.state.received[stored.reference_id] == 1
    assert settings.database_url is not None
    async with await connect(settings.database_url) as conn:
        cursor = await conn.execute("SELECT entry_type, status FROM bids WHERE bid_id = %s", (daily_id,))
        assert await cursor.fetchone() == ("DAILY", "ACCEPTED")
