"""The stack's CPU by process (stack/process_cpu.py) and the bench's CPU table."""

from __future__ import annotations

import os
from pathlib import Path

from bench.cycle import cpu_table
from stack.process_cpu import (
    ProcessTimes,
    cpu_seconds_by_part,
    cpu_seconds_used,
    parse_process_stat,
    read_process_table,
    tree_cpu_seconds,
)

# A real /proc/<pid>/stat line whose command name holds a space and a parenthesis.
STAT = ("4242 (python3 (x) y) S 17 4242 4242 0 -1 4194304 5000 0 0 0 "
        "250 40 7 3 20 0 9 0 1234 1000000 2000 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0")


def _times(pid: int, parent: int, user: int, system: int = 0, waited: int = 0) -> ProcessTimes:
    return ProcessTimes(pid, parent, user, system, waited, 0)


def test_a_stat_line_is_read_after_the_command_name() -> None:
    times = parse_process_stat(STAT)
    assert times == ProcessTimes(pid=4242, parent_pid=17, user_ticks=250, system_ticks=40,
                                 waited_children_user_ticks=7, waited_children_system_ticks=3)
    assert times.ticks == 300


def test_a_part_counts_its_live_descendants_and_not_its_siblings() -> None:
    table = {pid: t for pid, t in ((10, _times(10, 1, 100)), (11, _times(11, 10, 50, 10)),
                                   (12, _times(12, 11, 20, waited=5)), (20, _times(20, 1, 999)))}
    assert tree_cpu_seconds(10, table, 100) == (100 + 60 + 25) / 100
    assert tree_cpu_seconds(20, table, 100) == 9.99
    assert tree_cpu_seconds(30, table, 100) == 0.0  # exited
    assert cpu_seconds_by_part({"worker": 10, "sqs": 20}, table, 100) == {"worker": 1.85, "sqs": 9.99}


def test_cpu_used_is_the_difference_largest_first() -> None:
    used = cpu_seconds_used({"worker": 2.0, "sqs": 1.0}, {"worker": 5.5, "sqs": 1.5, "bids": 0.7})
    assert list(used) == ["worker", "bids", "sqs"]
    assert used == {"worker": 3.5, "bids": 0.7, "sqs": 0.5}


def test_this_process_is_in_the_live_table() -> None:
    if not Path("/proc/self/stat").exists():
        return
    table = read_process_table()
    assert table[os.getpid()].parent_pid == os.getppid()


def test_the_cpu_table_totals_per_cycle() -> None:
    table = cpu_table({"worker": 3.0, "sqs": 1.0}, cycles=8)
    rows = list(zip(*(column.cells for column in table.columns), strict=True))
    assert rows[0] == ("worker", "3.00", "75%")
    assert rows[-2] == ("all", "4.00", "100%")
    assert rows[-1] == ("all, per cycle", "0.500", "")
