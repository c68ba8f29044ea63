"""Retry-until-acknowledged bookkeeping of dispatch commands (algorithms/fleet/commands.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.fleet.commands import NO_COMMAND, CommandBook, CommandPolicy, plan_commands, record_acks
from algorithms.fleet.fleet_types import NEVER

POLICY = CommandPolicy(resend_after_ms=2_000, command_validity_ms=30_000, setpoint_deadband_kw=0.05)
T0 = 1_700_000_000_000
END = T0 + 600_000


def _first_plan(setpoints: list[float]) -> tuple[CommandBook, int]:
    plan = plan_commands(CommandBook.empty(len(setpoints)), np.array(setpoints), now_ms=T0, event_end_ms=END,
                         next_command_id=100, policy=POLICY)
    return plan.book, plan.next_command_id


def test_first_step_sends_a_new_command_to_every_site() -> None:
    plan = plan_commands(CommandBook.empty(3), np.array([1.0, 2.0, 0.0]), now_ms=T0, event_end_ms=END,
                         next_command_id=100, policy=POLICY)
    assert plan.new_rows.tolist() == [0, 1, 2]
    assert plan.resend_rows.tolist() == []
    assert plan.book.command_id.tolist() == [100, 101, 102]
    assert plan.next_command_id == 103
    assert plan.book.valid_until_ms.tolist() == [T0 + 30_000] * 3
    assert plan.book.send_count.tolist() == [1, 1, 1]


def test_unacknowledged_commands_are_resent_after_the_resend_time_with_the_same_id() -> None:
    book, next_id = _first_plan([1.0, 2.0, 3.0])
    book = record_acks(book, np.array([1]), np.array([101]), np.array([T0 + 300]), np.array([True]))
    too_soon = plan_commands(book, np.array([1.0, 2.0, 3.0]), now_ms=T0 + 1_000, event_end_ms=END,
                             next_command_id=next_id, policy=POLICY)
    assert too_soon.send_rows.tolist() == []
    later = plan_commands(book, np.array([1.0, 2.0, 3.0]), now_ms=T0 + 2_000, event_end_ms=END,
                          next_command_id=next_id, policy=POLICY)
    assert later.resend_rows.tolist() == [0, 2]
    assert later.new_rows.tolist() == []
    assert later.book.command_id.tolist() == [100, 101, 102]
    assert later.book.send_count.tolist() == [2, 1, 2]


def test_a_setpoint_beyond_the_deadband_gets_a_new_command_that_needs_a_new_ack() -> None:
    book, next_id = _first_plan([1.0, 2.0])
    book = record_acks(book, np.array([0, 1]), np.array([100, 101]), np.array([T0 + 10, T0 + 20]),
                       np.array([True, True]))
    plan = plan_commands(book, np.array([1.04, 2.5]), now_ms=T0 + 2_000, event_end_ms=END,
                         next_command_id=next_id, policy=POLICY)
    assert plan.new_rows.tolist() == [1]
    assert plan.book.command_id.tolist() == [100, next_id]
    assert plan.book.acknowledged.tolist() == [True, False]
    assert plan.book.setpoint_kw.tolist() == [1.0, 2.5]
    assert plan.book.first_acknowledged_at_ms.tolist() == [T0 + 10, T0 + 20]


def test_a_late_ack_of_a_superseded_command_does_not_acknowledge_the_new_one() -> None:
    book, next_id = _first_plan([1.0])
    plan = plan_commands(book, np.array([3.0]), now_ms=T0 + 1_000, event_end_ms=END, next_command_id=next_id,
                         policy=POLICY)
    acked = record_acks(plan.book, np.array([0]), np.array([100]), np.array([T0 + 1_500]), np.array([True]))
    assert not acked.acknowledged[0]
    assert acked.first_acknowledged_at_ms[0] == NEVER


def test_commands_are_renewed_before_they_expire_and_never_outlive_the_window() -> None:
    book, next_id = _first_plan([1.0])
    book = record_acks(book, np.array([0]), np.array([100]), np.array([T0 + 10]), np.array([True]))
    quiet = plan_commands(book, np.array([1.0]), now_ms=T0 + 10_000, event_end_ms=END, next_command_id=next_id,
                          policy=POLICY)
    assert quiet.send_rows.tolist() == []
    renewal = plan_commands(book, np.array([1.0]), now_ms=T0 + 16_000, event_end_ms=END, next_command_id=next_id,
                            policy=POLICY)
    assert renewal.new_rows.tolist() == [0]
    assert renewal.book.valid_until_ms[0] == T0 + 46_000
    near_end = plan_commands(book, np.array([1.0]), now_ms=END - 5_000, event_end_ms=END,
                             next_command_id=next_id, policy=POLICY)
    assert near_end.book.valid_until_ms[0] == END
    after_end = plan_commands(book, np.array([9.0]), now_ms=END, event_end_ms=END, next_command_id=next_id,
                              policy=POLICY)
    assert after_end.new_rows.tolist() == []


def test_refusals_are_acknowledgements_marked_refused_and_acks_from_other_sites_are_ignored() -> None:
    book, _ = _first_plan([1.0, 1.0])
    book = record_acks(book, np.array([-1, 0, 1]), np.array([100, 100, 101]),
                       np.array([T0 + 5, T0 + 7, T0 + 9]), np.array([True, True, False]))
    assert book.acknowledged.tolist() == [True, True]
    assert book.refused.tolist() == [False, True]
    assert book.first_acknowledged_at_ms.tolist() == [T0 + 7, T0 + 9]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-10, 10), st.booleans()), min_size=1, max_size=20),
       st.integers(1, 40))
def test_every_site_with_a_command_in_force_is_either_acknowledged_or_resent_within_the_resend_time(
        rows: list[tuple[float, bool]], steps: int) -> None:
    """Property: after any sequence of steps, no unacknowledged command waits longer than resend_after_ms."""
    setpoints = np.array([row[0] for row in rows])
    acks_arrive = np.array([row[1] for row in rows])
    book = CommandBook.empty(len(rows))
    next_id = 1
    for step in range(steps):
        now = T0 + step * 1_000
        plan = plan_commands(book, setpoints, now_ms=now, event_end_ms=END, next_command_id=next_id, policy=POLICY)
        book, next_id = plan.book, plan.next_command_id
        sent = plan.send_rows
        arriving = sent[acks_arrive[sent]]
        book = record_acks(book, arriving, book.command_id[arriving], np.full(len(arriving), now),
                           np.ones(len(arriving), dtype=bool))
        waiting = (book.command_id != NO_COMMAND) & ~book.acknowledged
        assert np.all(now - book.sent_at_ms[waiting] < POLICY.resend_after_ms)
        assert np.all(book.acknowledged[acks_arrive])
