"""CPU time used by the local stack's parts, read from Linux's ``/proc``.

A part's CPU is its process's user + system time, with the finished children it waited for (``cutime`` and
``cstime``) and its live descendants (PostgreSQL's backends, a part's helpers). Parsing and summing are pure
functions over the ``/proc/<pid>/stat`` texts; :func:`read_process_table` is the only I/O. On a system
without ``/proc`` every figure is zero.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessTimes:
    """One process's line of ``/proc/<pid>/stat``: its parent and CPU times, in clock ticks."""

    pid: int
    parent_pid: int
    user_ticks: int
    system_ticks: int
    waited_children_user_ticks: int
    waited_children_system_ticks: int

    @property
    def ticks(self) -> int:
        """User + system ticks of the process and of its children it has waited for."""
        return (self.user_ticks + self.system_ticks + self.waited_children_user_ticks
                + self.waited_children_system_ticks)


def parse_process_stat(text: str) -> ProcessTimes:
    """The times in one ``/proc/<pid>/stat`` text (``pid (comm) state ppid …``; the command name may hold
    spaces and parentheses, so the fields are read after its last ``)``)."""
    pid_text, _, rest = text.partition(" (")
    fields = rest[rest.rindex(")") + 2:].split()
    # After the command: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    return ProcessTimes(pid=int(pid_text), parent_pid=int(fields[1]), user_ticks=int(fields[11]),
                        system_ticks=int(fields[12]), waited_children_user_ticks=int(fields[13]),
                        waited_children_system_ticks=int(fields[14]))


def tree_cpu_seconds(root_pid: int, table: Mapping[int, ProcessTimes], ticks_per_second: int) -> float:
    """CPU seconds (user + system) of ``root_pid`` and every live descendant in ``table``, each with the
    children it has waited for; 0 when ``root_pid`` is not in the table (it has exited)."""
    if root_pid not in table:
        return 0.0
    children: dict[int, list[int]] = {}
    for times in table.values():
        children.setdefault(times.parent_pid, []).append(times.pid)
    ticks, pending = 0, [root_pid]
    while pending:
        pid = pending.pop()
        ticks += table[pid].ticks
        pending += children.get(pid, ())
    return ticks / ticks_per_second


def cpu_seconds_by_part(parts: Mapping[str, int], table: Mapping[int, ProcessTimes],
                        ticks_per_second: int) -> dict[str, float]:
    """CPU seconds of each part (name → its process id) with its descendants, from one process table."""
    return {name: tree_cpu_seconds(pid, table, ticks_per_second) for name, pid in parts.items()}


def cpu_seconds_used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each part used between two readings (a part missing from ``before`` counts from 0),
    largest first."""
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    return dict(sorted(used.items(), key=lambda item: -item[1]))


def read_process_table(proc: Path = PROC) -> dict[int, ProcessTimes]:
    """Every live process's times from ``proc`` (empty without ``/proc``); processes that exit while it is
    read are left out."""
    table: dict[int, ProcessTimes] = {}
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            times = parse_process_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        table[times.pid] = times
    return table


def clock_ticks_per_second() -> int:
    """The kernel's clock ticks per second (``SC_CLK_TCK``, 100 on Linux), the unit of ``/proc`` times."""
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


def read_cpu_seconds(parts: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds each part (name → process id) has used so far, with its descendants."""
    return cpu_seconds_by_part(parts, read_process_table(), clock_ticks_per_second())
