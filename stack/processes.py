"""Child processes of the local stack: start with a log file, wait until healthy, stop the whole group.

Every part runs in its own process group (its own session), with stdout and stderr appended to
``<log_dir>/<name>.log``. Stopping sends SIGTERM to the group, then SIGKILL after a grace period, so a
part's own children never outlive it. Health checks are small callables polled during start-up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from stack.ports import StackError

log = logging.getLogger(__name__)

HealthCheck = Callable[[], bool]
"""Answers True once the part serves requests; called repeatedly during start-up, must return quickly."""

TAIL_LINES = 20
_POLL_S = 0.2
_TAIL_BYTES = 64 * 1024

T = TypeVar("T")


class PartFailedError(StackError):
    """A part exited during start-up or did not become healthy in time.

    The message names the part, its exit code (if it exited) and the last lines of its log.
    """

    def __init__(self, part: str, reason: str, exit_code: int | None, log_path: Path, log_tail: str) -> None:
        self.part = part
        self.exit_code = exit_code
        self.log_path = log_path
        self.log_tail = log_tail
        tail = log_tail if log_tail.strip() else "(the log is empty)"
        super().__init__(f"{part} {reason}; last {TAIL_LINES} lines of {log_path}:\n{tail}")


def run_coroutine(coroutine_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, also when an event loop is already running
    in this thread (then it runs in a helper thread with a loop of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine_factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_factory())).result()


def tcp_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if a TCP connection to ``host:port`` is accepted within ``timeout_s`` seconds."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


def find_binary(name: str) -> str | None:
    """A console script or binary installed beside this interpreter (a wheel's), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; a clear :class:`StackError` for anything else."""
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit():
        raise StackError(f"address {address!r} is not host:port")
    return host.strip("[]"), int(port_text)


def http_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True if an HTTP GET of ``url`` gets any HTTP response (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def temporal_answers(address: str, timeout_s: float = 2.0) -> bool:
    """True if a Temporal frontend at ``address`` (host:port) accepts a client connection."""
    host, port = split_address(address)
    if not tcp_answers(host, port):
        return False

    async def connect() -> bool:
        from temporalio.client import Client

        client = await asyncio.wait_for(Client.connect(address), timeout_s)
        return bool(await asyncio.wait_for(client.service_client.check_health(), timeout_s))

    try:
        return run_coroutine(connect)
    except Exception:  # any failure means "not answering yet"
        return False


def grpc_answers(address: str, timeout_s: float = 1.0) -> bool:
    """True if the gRPC server at ``address`` reports SERVING on the standard health service."""
    host, port = split_address(address)
    if not tcp_answers(host, port):
        return False

    async def check() -> bool:
        from services.health import wait_healthy

        await wait_healthy(address, timeout_s)
        return True

    try:
        return run_coroutine(check)
    except Exception:  # unhealthy, unreachable or timed out
        return False


class ManagedProcess:
    """One part of the stack run as a child process with its own process group and log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        health: HealthCheck | None = None,
        startup_timeout_s: float = 30.0,
        settle_s: float = 0.0,
        address: str = "",
        cwd: Path | None = None,
    ) -> None:
        """``health`` decides readiness; without it the part is ready once alive for ``settle_s`` seconds."""
        if not argv:
            raise ValueError(f"{name}: empty command line")
        self.name = name
        self.argv = tuple(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.health = health
        self.startup_timeout_s = startup_timeout_s
        self.settle_s = settle_s
        self.address = address
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        """Process id of the running (or last) child; None before the first start."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit code of the child once it has exited (negative: killed by that signal); else None."""
        return self._process.poll() if self._process is not None else None

    def alive(self) -> bool:
        """True while the child process runs."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the child (stdout+stderr appended to the log file, own process group); does not wait."""
        if self.alive():
            raise StackError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            log_file.write(f"--- {datetime.now().isoformat(timespec='seconds')} starting "
                           f"{self.name}: {' '.join(self.argv)}\n".encode())
            log_file.flush()
            self._log_offset = log_file.tell()
            try:
                self._process = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    env=self.env, cwd=self.cwd, start_new_session=True,
                )
            except OSError as exc:
                raise PartFailedError(self.name, f"could not be started ({exc})", None, self.log_path,
                                      self.tail()) from exc
        self._started_at = time.monotonic()
        log.info("started %s (pid %s), log %s", self.name, self._process.pid, self.log_path)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the part is healthy; :class:`PartFailedError` if it exits or times out first."""
        timeout = self.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        while True:
            if self._process is None:
                raise StackError(f"{self.name} was never started")
            code = self._process.poll()
            if code is not None:
                raise PartFailedError(self.name, f"exited with code {code} during start-up", code,
                                      self.log_path, self.tail())
            if self.health is not None:
                if self.health():
                    return
            elif time.monotonic() - self._started_at >= self.settle_s:
                return
            if time.monotonic() >= deadline:
                raise PartFailedError(self.name, f"did not become healthy within {timeout:g} s", None,
                                      self.log_path, self.tail())
            time.sleep(_POLL_S)

    def _signal_group(self, signum: int) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def terminate(self) -> None:
        """Send SIGTERM to the whole process group without waiting (see :meth:`stop`)."""
        if self._process is not None and self._process.poll() is None:
            self._signal_group(signal.SIGTERM)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the whole process group, SIGKILL it after ``timeout_s`` seconds; idempotent."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %g s; killing it", self.name, timeout_s)
        # Whatever is left of the group (the leader if it ignored SIGTERM, or its own children) goes now.
        self._signal_group(signal.SIGKILL)
        self._process.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group at once (simulates a crash) and reap the child."""
        if self._process is None:
            return
        self._signal_group(signal.SIGKILL)
        self._process.wait()

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines the child wrote to its log since its latest start."""
        try:
            with self.log_path.open("rb") as log_file:
                size = log_file.seek(0, os.SEEK_END)
                log_file.seek(max(self._log_offset, size - _TAIL_BYTES))
                text = log_file.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
