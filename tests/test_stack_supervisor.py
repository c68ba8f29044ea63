"""The local stack's plumbing: port checks, child processes, the effective configuration, Temporal + SQS."""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console

from settings import Settings, load_settings
from stack import supervisor
from stack.ports import (
    CHOSEN_PORT_SPAN,
    DEFAULT_EPHEMERAL_PORTS,
    PortTakenError,
    StackError,
    check_ports_free,
    ephemeral_port_range,
    free_tcp_port,
    port_in_use,
)
from stack.processes import ManagedProcess, PartFailedError, http_answers, temporal_answers
from stack.supervisor import (
    LocalStack,
    child_environment,
    describe_market_data,
    run_up,
    settings_to_toml,
    with_market_data,
)
from tests.conftest import free_port


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port with a real listening socket on 127.0.0.1."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def python_child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie waiting for its new parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in {"Z", "X"}


def wait_until(condition: object, attempts: int = 100) -> bool:
    for _ in range(attempts):
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


# -- ports -------------------------------------------------------------------------------------------


def test_port_in_use_detects_a_listening_socket(listening_port: int) -> None:
    assert port_in_use("127.0.0.1", listening_port)
    assert not port_in_use("127.0.0.1", free_port())


def test_taken_ports_are_reported_one_clear_line_each(listening_port: int) -> None:
    with socket.socket() as second:
        second.bind(("127.0.0.1", 0))
        second.listen()
        second_port = int(second.getsockname()[1])
        with pytest.raises(PortTakenError) as caught:
            check_ports_free({"Temporal frontend": listening_port, "SQS endpoint": free_port(),
                              "bid service": second_port},
                             config_keys={"Temporal frontend": "temporal_address"})
    lines = str(caught.value).splitlines()
    assert lines == [
        f"port {listening_port} (Temporal frontend) is already in use — is another `vpp up` running? "
        "stop it or set [stack] temporal_address in a config file",
        f"port {second_port} (bid service) is already in use — is another `vpp up` running? "
        "stop it or set [stack] temporal_address/ports in a config file",
    ]


def test_free_ports_pass() -> None:
    check_ports_free({"SQS endpoint": free_port()})


# -- child processes ---------------------------------------------------------------------------------


def test_child_output_goes_to_its_log_and_stop_ends_it(tmp_path: Path) -> None:
    child = ManagedProcess("talker", python_child("import time\nprint('ready', flush=True)\ntime.sleep(60)"),
                           tmp_path / "logs" / "talker.log", settle_s=0.1)
    child.start()
    try:
        child.wait_ready(timeout_s=10)
        assert child.alive()
        assert wait_until(lambda: child.tail().endswith("ready"))
    finally:
        child.stop(timeout_s=5)
    assert not child.alive()
    assert child.returncode is not None and child.returncode < 0
    assert "starting talker" in (tmp_path / "logs" / "talker.log").read_text()


def test_child_exiting_at_start_up_names_itself_code_and_log_tail(tmp_path: Path) -> None:
    lines = "\n".join(f"print('line {n}')" for n in range(30))
    child = ManagedProcess("crasher", python_child(f"import sys\n{lines}\nsys.exit(3)"),
                           tmp_path / "crasher.log", settle_s=30)
    child.start()
    with pytest.raises(PartFailedError) as caught:
        child.wait_ready(timeout_s=30)
    message = str(caught.value)
    assert message.startswith("crasher exited with code 3 during start-up")
    assert caught.value.exit_code == 3
    assert "line 29" in message and "line 10" in message
    assert "line 9\n" not in message  # only the last 20 lines


def test_health_check_timeout_is_a_part_failure(tmp_path: Path) -> None:
    child = ManagedProcess("mute", python_child("import time; time.sleep(60)"), tmp_path / "mute.log",
                           health=lambda: False)
    child.start()
    try:
        with pytest.raises(PartFailedError, match=r"mute did not become healthy within 0\.3 s"):
            child.wait_ready(timeout_s=0.3)
    finally:
        child.stop(timeout_s=5)


def test_missing_program_is_a_part_failure(tmp_path: Path) -> None:
    child = ManagedProcess("ghost", [str(tmp_path / "no-such-program")], tmp_path / "ghost.log")
    with pytest.raises(PartFailedError, match="ghost could not be started"):
        child.start()


def test_restart_tail_only_shows_the_latest_run(tmp_path: Path) -> None:
    child = ManagedProcess("twice", python_child("print('run')"), tmp_path / "twice.log")
    for _ in range(2):
        child.start()
        assert wait_until(lambda: not child.alive())
        child.stop()
    assert child.tail().splitlines() == ["run"]


@pytest.mark.parametrize("leader_ignores_sigterm", [False, True])
def test_stop_kills_the_whole_process_group(tmp_path: Path, leader_ignores_sigterm: bool) -> None:
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if leader_ignores_sigterm else ""
    code = (
        "import signal, subprocess, sys, time\n"
        f"{ignore}"
        "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('grandchild', grandchild.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = ManagedProcess("family", python_child(code), tmp_path / "family.log")
    child.start()
    try:
        assert wait_until(lambda: "grandchild" in child.tail())
        grandchild_pid = int(child.tail().split()[-1])
        assert not process_gone(grandchild_pid)
    finally:
        child.stop(timeout_s=0.5)
    assert not child.alive()
    assert wait_until(lambda: process_gone(grandchild_pid))


def test_kill_is_immediate(tmp_path: Path) -> None:
    child = ManagedProcess("victim", python_child("import time; time.sleep(60)"), tmp_path / "victim.log")
    child.start()
    child.kill()
    assert child.returncode == -9


# -- effective configuration -------------------------------------------------------------------------


def test_settings_round_trip_through_the_effective_config_file(settings: Settings, tmp_path: Path) -> None:
    changed = replace(
        settings,
        stack=replace(settings.stack, temporal_address="127.0.0.1:17233", sqs_port=19324,
                      market_data_port=15051, forecast_workers=3),
        market_data=replace(settings.market_data, missing_intervals=(datetime(2021, 1, 15, 16, 5),),
                            dispatch_price_delay_s=12.5),
        database_url="postgresql://somewhere/db",
    )
    path = tmp_path / "effective.toml"
    path.write_text(settings_to_toml(changed))
    assert load_settings(path, environ={}) == replace(changed, database_url=None)
    # An optional setting: unset (None) is left out of the file, a value is written.
    assert settings.cycle.optimiser_uncertainty_weight is None
    weighted = replace(changed, cycle=replace(changed.cycle, optimiser_uncertainty_weight=0.25))
    path.write_text(settings_to_toml(weighted))
    assert load_settings(path, environ={}) == replace(weighted, database_url=None)


def test_up_on_live_market_data(settings: Settings, tmp_path: Path) -> None:
    assert with_market_data(settings, "replay") == settings
    assert "replay of" in describe_market_data(settings) and "replay clock" in describe_market_data(settings)
    live = with_market_data(settings, "live", "http://127.0.0.1:8000/")
    assert (live.market_data.source, live.cycle.clock, live.market_store.source) == (
        "live", "live", "http://127.0.0.1:8000/")
    assert with_market_data(settings, "live").market_store.source == settings.market_store.source
    assert describe_market_data(live).startswith("live from http://127.0.0.1:8000/ (DispatchIS_Reports")
    assert "market clock" in describe_market_data(live)
    path = tmp_path / "effective.toml"  # the children read it
    path.write_text(settings_to_toml(live))
    assert load_settings(path, environ={}) == replace(live, database_url=None)
    with pytest.raises(StackError, match="--source is for live market data"):
        with_market_data(settings, "replay", "http://127.0.0.1:8000/")
    with pytest.raises(StackError, match="--market-data must be one of replay, live"):
        with_market_data(settings, "tomorrow")


def test_child_environment_carries_the_supervisor_settings(settings: Settings, tmp_path: Path) -> None:
    with_db = replace(settings, database_url="postgresql://db.example/openvpp")
    env = child_environment(with_db, tmp_path / "effective.toml",
                            {"PATH": "/bin", "VPP_SQS_PORT": "1", "AWS_ACCESS_KEY_ID": "mine"})
    assert env["VPP_CONFIG"] == str(tmp_path / "effective.toml")
    assert env["VPP_STATE_DIR"] == str(settings.stack.state_dir)
    assert env["DATABASE_URL"] == "postgresql://db.example/openvpp"
    assert "VPP_SQS_PORT" not in env  # the config file holds the effective port
    assert env["AWS_ACCESS_KEY_ID"] == "mine"
    assert env["AWS_SECRET_ACCESS_KEY"] and env["PATH"] == "/bin"


def test_children_are_the_project_cli_with_configured_pool_sizes(settings: Settings) -> None:
    sized = replace(settings, stack=replace(settings.stack, forecast_workers=2, optimiser_workers=1))
    stack = LocalStack(sized, parts={"market-data", "bids", "forecast", "optimisation", "temporal-worker"})
    children = stack._child_processes()
    assert [c.name for c in children] == ["market-data", "bids", "forecast-1", "forecast-2", "optimisation-1",
                                          "temporal-worker"]
    assert children[2].argv == (sys.executable, "-m", "cli.main", "worker", "pool", "forecast")
    assert children[0].log_path == sized.stack.log_dir / "market-data.log"
    assert all(c.env is not None and c.env["VPP_CONFIG"] == str(stack.config_file) for c in children)


def test_the_sweep_parts_run_the_configured_backtest_pools_and_the_sweep_worker(settings: Settings) -> None:
    from stack.supervisor import SWEEP_PARTS

    sized = replace(settings, pools=replace(settings.pools, backtest_processes=3))
    children = LocalStack(sized, parts=SWEEP_PARTS)._child_processes()
    assert [c.name for c in children] == ["temporal-worker", "backtest-1", "backtest-2", "backtest-3", "sweep-worker"]
    assert children[1].argv[-3:] == ("worker", "pool", "backtest")
    assert children[-1].argv[-2:] == ("worker", "sweep")


def test_unknown_parts_are_rejected(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown stack parts"):
        LocalStack(settings, parts={"temporal", "kafka"})


# -- the real Temporal dev server and SQS endpoint ---------------------------------------------------


@pytest.fixture
def stack_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with every port of the stack moved to a free one."""
    monkeypatch.delenv("VPP_SQS_ENDPOINT", raising=False)
    return replace(settings, stack=replace(
        settings.stack, temporal_address=f"127.0.0.1:{free_port()}", temporal_ui_port=free_port(),
        sqs_port=free_port(), market_data_port=free_port(), bid_service_port=free_port()))


def test_temporal_and_sqs_start_restart_and_stop(stack_settings: Settings) -> None:
    with LocalStack(stack_settings, parts={"temporal", "sqs"}, ui=False) as stack:
        assert [(s.name, s.alive) for s in stack.status()] == [("temporal", True), ("sqs", True)]
        assert temporal_answers(stack.temporal_address)
        assert http_answers(stack.sqs_endpoint_url)
        assert (stack_settings.stack.state_dir / "temporal.db").exists()

        stack.kill_part("sqs")
        assert [p.name for p in stack.dead_parts()] == ["sqs"]
        stack.restart_part("sqs")
        assert stack.dead_parts() == []
        assert http_answers(stack.sqs_endpoint_url)
        pids = [s.pid for s in stack.status()]
    assert all(pid is not None and process_gone(pid) for pid in pids)
    assert not temporal_answers(stack_settings.stack.temporal_address)


def test_start_up_failure_half_way_stops_what_was_started(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[ManagedProcess] = []
    real_temporal = LocalStack._temporal_process

    def spy_temporal(self: LocalStack) -> ManagedProcess | None:
        part = real_temporal(self)
        assert part is not None
        started.append(part)
        return part

    def broken_sqs(self: LocalStack) -> ManagedProcess:
        return ManagedProcess("sqs", python_child("raise SystemExit('no SQS today')"),
                              self.settings.stack.log_dir / "sqs.log", settle_s=30)

    monkeypatch.setattr(LocalStack, "_temporal_process", spy_temporal)
    monkeypatch.setattr(LocalStack, "_sqs_process", broken_sqs)
    stack = LocalStack(stack_settings, parts={"temporal", "sqs"}, ui=False)
    with pytest.raises(PartFailedError, match="sqs exited with code 1") as caught, stack:
        pass
    assert "no SQS today" in str(caught.value)
    assert stack.processes() == []
    assert started and not started[0].alive()


def test_a_taken_port_stops_the_stack_before_anything_starts(
    stack_settings: Settings, listening_port: int,
) -> None:
    taken = replace(stack_settings, stack=replace(stack_settings.stack, sqs_port=listening_port))
    stack = LocalStack(taken, parts={"temporal", "sqs"}, ui=False)
    with pytest.raises(PortTakenError, match=f"port {listening_port} \\(SQS endpoint\\)"):
        stack.start()
    assert stack.processes() == []
    assert not (taken.stack.log_dir / "temporal.log").exists()


# -- vpp up ------------------------------------------------------------------------------------------


@pytest.fixture
def schedule_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the schedule calls run_up makes instead of making them (the real ones need workers)."""
    import services.temporal_client
    import stack.schedule

    calls: list[str] = []

    async def ensure_schedule(settings: Settings) -> str:
        calls.append(f"ensure {settings.stack.temporal_address}")
        return "autobidder-test"

    async def trigger_now(settings: Settings) -> None:
        calls.append("trigger")

    monkeypatch.setattr(stack.schedule, "ensure_schedule", ensure_schedule)
    monkeypatch.setattr(services.temporal_client, "trigger_now", trigger_now)
    monkeypatch.setattr(services.temporal_client, "schedule_id", lambda settings, unit_id=None: "autobidder-test")
    return calls


def test_run_up_with_a_taken_port_prints_one_line_and_returns_1(
    stack_settings: Settings, listening_port: int, schedule_calls: list[str],
) -> None:
    taken = replace(stack_settings, stack=replace(stack_settings.stack, bid_service_port=listening_port))
    output = io.StringIO()
    code = run_up(taken, ui=False, console=Console(file=output, width=100), parts={"bids"})
    assert code == 1
    assert output.getvalue().splitlines()[1:] == [
        f"error: port {listening_port} (bid service) is already in use — is another `vpp up` running? "
        "stop it or set [stack] bid_service_port in a config file"]
    assert schedule_calls == []


def test_run_up_restarts_a_dead_part_and_stops_cleanly_on_sigterm(
    stack_settings: Settings, schedule_calls: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = io.StringIO()
    running: list[LocalStack] = []
    real_summary = supervisor._print_summary

    def summary(console: Console, stack: LocalStack, *, triggered: bool) -> None:
        real_summary(console, stack, triggered=triggered)
        running.append(stack)

    watching = threading.Event()
    watched = threading.Event()
    real_watch = supervisor._watch

    def watch(stack: LocalStack, stop_requested: threading.Event, console: Console) -> int:
        watching.set()
        try:
            return real_watch(stack, stop_requested, console)
        finally:
            watched.set()

    def operator() -> None:  # kill a part once the stack is up, wait for its restart, then SIGTERM
        try:
            if wait_until(watching.is_set, attempts=600):
                running[0].kill_part("sqs")
                wait_until(lambda: "restarting sqs (1/3)" in output.getvalue(), attempts=600)
                wait_until(lambda: running[0].dead_parts() == [], attempts=600)
        finally:
            if watching.is_set() and not watched.is_set():  # only while run_up handles the signal
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(supervisor, "_print_summary", summary)
    monkeypatch.setattr(supervisor, "_watch", watch)
    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    code = run_up(stack_settings, ui=False, console=Console(file=output, width=200),
                  parts={"temporal", "sqs"})
    thread.join(timeout=30)
    text = output.getvalue()
    assert code == 0, text
    assert schedule_calls == [f"ensure {stack_settings.stack.temporal_address}", "trigger"]
    assert "autobidder-test" in text and str(stack_settings.stack.log_dir) in text
    assert "sqs exited with code -9" in text and "restarting sqs (1/3)" in text
    assert running[0].processes() == []
    assert not temporal_answers(stack_settings.stack.temporal_address)


def test_a_free_port_is_chosen_below_the_kernels_ephemeral_range() -> None:
    first, _ = ephemeral_port_range()
    ports = {free_tcp_port() for _ in range(20)}
    assert all(first - CHOSEN_PORT_SPAN <= port < first for port in ports)
    assert len(ports) > 1  # at random, not one port every time
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free when handed out
    assert ephemeral_port_range("/no/such/file") == DEFAULT_EPHEMERAL_PORTS
