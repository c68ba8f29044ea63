"""The cycle's clock: which interval a cycle bids for and how long it has until gate closure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algorithms.common.replay_clock import cycle_market_time, cycle_timeline, replay_market_time
from settings import load_settings
from stack.schedule import cycle_config

BOUNDARY = datetime(2021, 1, 22, 11, 10)


def test_a_scheduled_cycle_bids_the_interval_after_the_one_in_progress() -> None:
    timeline = cycle_timeline(BOUNDARY + timedelta(seconds=30), market_data_cutoff_s=60, gate_closure_margin_s=15,
                              minimum_lead_s=90)
    assert timeline.dispatch_interval == datetime(2021, 1, 22, 11, 20)
    assert timeline.gate_closure == datetime(2021, 1, 22, 11, 14, 45)


def test_a_late_trigger_bids_the_following_interval_instead_of_missing_gate_closure() -> None:
    late = BOUNDARY + timedelta(minutes=4, seconds=10)  # 35 s before gate closure for 11:20
    timeline = cycle_timeline(late, market_data_cutoff_s=60, gate_closure_margin_s=15, minimum_lead_s=90)
    assert timeline.dispatch_interval == datetime(2021, 1, 22, 11, 25)
    assert timeline.gate_closure - late == timedelta(minutes=5, seconds=35)
    unshifted = cycle_timeline(late, market_data_cutoff_s=60, gate_closure_margin_s=15)
    assert unshifted.dispatch_interval == datetime(2021, 1, 22, 11, 20)


@given(seconds_into_interval=st.floats(min_value=0, max_value=299.999),
       minimum_lead_s=st.integers(min_value=0, max_value=240),
       margin_s=st.integers(min_value=0, max_value=60))
def test_every_decision_leaves_at_least_the_minimum_lead(seconds_into_interval: float, minimum_lead_s: int,
                                                         margin_s: int) -> None:
    decision = BOUNDARY + timedelta(seconds=seconds_into_interval)
    timeline = cycle_timeline(decision, market_data_cutoff_s=60, gate_closure_margin_s=margin_s,
                              minimum_lead_s=minimum_lead_s)
    lead = timeline.gate_closure - decision
    assert timedelta(seconds=minimum_lead_s) <= lead <= timedelta(seconds=minimum_lead_s + 300)
    assert timeline.dispatch_interval.minute % 5 == 0 and timeline.dispatch_interval.second == 0
    assert timeline.dispatch_interval - decision > timedelta(minutes=5)


def test_replay_keeps_the_time_of_day_and_wraps_the_days() -> None:
    start = datetime(2021, 1, 1, 4, 5)
    # 2026-11-22 07:00 UTC is 17:00 AEST; the day wraps modulo 30 days from 1 January 2021.
    market = replay_market_time(datetime(2026, 11, 22, 7, 0), start, 30)
    assert market.time() == datetime(2000, 1, 1, 17, 0).time()
    assert datetime(2021, 1, 1) <= market < datetime(2021, 1, 31)


def test_market_and_wall_clock_times_map_both_ways_through_the_run_offset() -> None:
    from datetime import UTC

    from algorithms.common.replay_clock import market_offset_ms, plan_window_start_ms, wall_clock_ms

    started = datetime(2026, 11, 22, 7, 0, 0, tzinfo=UTC)  # 17:00 AEST
    decision = datetime(2021, 1, 22, 17, 0, 0)
    offset = market_offset_ms(decision, started)
    assert wall_clock_ms(decision, offset) == int(started.timestamp() * 1000)
    assert wall_clock_ms(decision + timedelta(minutes=5), offset) - wall_clock_ms(decision, offset) == 300_000
    # The interval ending 17:40 starts at 17:35, inside the half-hour plan interval from 17:30 (market clock).
    window = plan_window_start_ms(datetime(2021, 1, 22, 17, 40), 30)
    assert window == wall_clock_ms(datetime(2021, 1, 22, 17, 30), 0)


def test_the_live_clock_is_the_market_clock_and_replay_stays_the_default() -> None:
    now_utc = datetime(2026, 12, 6, 3, 41, 12, tzinfo=UTC)
    replay_start = datetime(2021, 1, 1, 4, 5)
    assert cycle_market_time(now_utc, "live", replay_start, 30) == datetime(2026, 12, 6, 13, 41, 12)
    assert cycle_market_time(now_utc, "replay", replay_start, 30) == replay_market_time(now_utc, replay_start, 30)
    assert cycle_config(load_settings(environ={}).cycle).clock == "replay"
    with pytest.raises(ValueError, match="unknown cycle clock 'wall'"):
        cycle_market_time(now_utc, "wall", replay_start, 30)
