"""stack/status.py and stack/follow.py: what `vpp status` reads of the processes `vpp up` runs, and the
lines `vpp up` prints per finished cycle and dispatch event."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from settings import load_settings
from stack.follow import cycle_line, event_line
from stack.status import RunningPart, _process_parts, pid_alive, read_parts_file, short_error, write_parts_file


def test_the_parts_file_round_trips_and_dead_processes_are_down(tmp_path: Path) -> None:
    loaded = load_settings(environ={})
    settings = replace(loaded, stack=replace(loaded.stack, state_dir=tmp_path))
    assert read_parts_file(settings) is None
    down = _process_parts(settings)
    assert all(not state.up and "not recorded" in state.detail for state in down)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                              check=True)
    dead_pid = int(finished.stdout)
    parts = [RunningPart("forecast-1", os.getpid(), "http://127.0.0.1:1", str(tmp_path / "logs/forecast-1.log")),
             RunningPart("forecast-2", dead_pid, "http://127.0.0.1:1", str(tmp_path / "logs/forecast-2.log")),
             RunningPart("optimisation-1", os.getpid(), "http://127.0.0.1:1", str(tmp_path / "logs/o.log")),
             RunningPart("temporal-worker", os.getpid(), "127.0.0.1:7233", str(tmp_path / "logs/t.log"))]
    write_parts_file(settings, parts)
    assert read_parts_file(settings) == parts
    states = {state.part: state for state in _process_parts(settings)}
    assert not states["forecast pool"].up and "1 of 2 running" in states["forecast pool"].detail
    assert states["optimisation pool"].up and states["AutoBidder worker process"].up
    assert not states["VPP worker process"].up and states["VPP worker process"].detail == "not part of this stack"
    assert pid_alive(os.getpid()) and not pid_alive(dead_pid)


def test_connection_errors_are_said_in_a_few_words() -> None:
    refused = RuntimeError("Failed client connect: Server connection error: tonic::transport::Error(Transport, "
                           "ConnectError(\"tcp connect error\", 127.0.0.1:7233, Os { code: 111, kind: "
                           "ConnectionRefused, message: \"Connection refused\" }))")
    assert short_error(refused) == "connection refused"
    assert short_error(TimeoutError()) == "TimeoutError"
    assert short_error(ValueError("first line\nsecond")) == "first line"


def test_the_terminal_lines_of_finished_cycles_and_events() -> None:
    memo = {"console": {"line": "cycle HPR1 2021-01-15 16:05–16:10 AEST SUBMITTED; dispatched +40.0 MW"}}
    assert cycle_line("autobidder-HPR1-x", "COMPLETED", memo) == memo["console"]["line"]
    assert cycle_line("autobidder-HPR1-y", "FAILED", {}) == ("cycle autobidder-HPR1-y failed before recording an "
                                                             "outcome")
    result = {"status": "CANCELLED", "site_count": 1200, "asked_mwh": 0.0123, "delivered_mwh": 0.011}
    progress = {"node_id": "region-SA1", "target_mw": 0.2}
    assert event_line("ev-1", "COMPLETED", result, progress) == (
        "VPP event ev-1 at region-SA1 +0.2 MW: CANCELLED, 1,200 sites, asked 0.012 MWh, delivered 0.011 MWh")
    assert event_line("ev-2", "FAILED", None, None) == "VPP event ev-2: failed"
