"""The stand-in of AEMO's NEM Dispatch Bidding API: a local HTTP server that checks what AEMO checks.

Endpoints (under ``/NEMWholesale/bidding/v1``, JSON):

- ``POST /submitBids``: a ``submitBids`` payload. Authentication first (``X-initiatingParticipantID`` and HTTP
  Basic credentials, else 401), then the reference id (a reference already received: 409 DUPLICATE, with the
  original's transaction id and status), then the checks of :mod:`aemo_sandbox.rules`. The answer::

      {"transactionId": "...", "data": {"referenceId": ..., "transactionId": ..., "status": "ACCEPTED" |
       "REJECTED" | "DUPLICATE" | "RECEIVED", "offerTimestamp": ..., "entryType": "DAILY" | "REBID"},
       "errors": [{"code", "title", "detail", "source"}], "warnings": []}

  HTTP 200 when accepted or received, 400 when rejected, 409 for a duplicate reference.
- ``GET /getSubmission?referenceId=...``: the submission's record in the same shape (404 when unknown).

Every submission is decided when it arrives; with ``acknowledge_after_polls`` > 0 its answer says RECEIVED
until it has been asked for that many times (AEMO acknowledges asynchronously). Faults for tests
(:meth:`SandboxState.add_fault`): answer late (a client time-out), or answer with a body that is not AEMO's.

Imports nothing of the platform (import-linter contract): an independent check.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import threading
import time as time_module
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aemo_sandbox.rules import (
    SandboxError,
    UnitDefaults,
    check_band_prices,
    check_gate_closure,
    check_owned,
    is_daily,
    read_submission,
)

log = logging.getLogger(__name__)

API_PREFIX = "/NEMWholesale/bidding/v1"
SUBMIT_PATH = f"{API_PREFIX}/submitBids"
STATUS_PATH = f"{API_PREFIX}/getSubmission"
HEALTH_PATH = "/health"
PARTICIPANT_HEADER = "X-initiatingParticipantID"
MARKET_OFFSET = timedelta(hours=10)
MAX_BODY_BYTES = 8 * 1024 * 1024

ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"
DUPLICATE = "DUPLICATE"
RECEIVED = "RECEIVED"

# Faults a test can ask for (the next submitBids answers).
FAULT_LATE = "late"
FAULT_MALFORMED = "malformed"


@dataclass(frozen=True)
class SandboxClock:
    """Market time (naive AEST) of the stand-in: AEST now, shifted by ``offset`` (a replayed period)."""

    offset: timedelta = timedelta(0)

    @classmethod
    def at(cls, market_time: datetime, now_utc: datetime | None = None) -> SandboxClock:
        """A clock that reads ``market_time`` (naive AEST) now and runs on from there."""
        return cls(market_time - _aest_now(now_utc))

    def now(self) -> datetime:
        """Market time now (naive AEST)."""
        return _aest_now(None) + self.offset


def _aest_now(now_utc: datetime | None) -> datetime:
    moment = now_utc or datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment + MARKET_OFFSET


@dataclass(frozen=True)
class SandboxConfig:
    """The participant the stand-in serves: its id, credentials, units with default bids, market rules."""

    participant_id: str
    username: str
    password: str = field(repr=False)
    units: dict[str, UnitDefaults]
    daily_bid_close: time = time(12, 30)
    gate_closure_lead_s: float = 0.0
    acknowledge_after_polls: int = 0

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> SandboxConfig:
        """Read the stand-in's configuration file (``python -m aemo_sandbox --config``); KeyError/ValueError."""
        units = {str(u["duid"]): UnitDefaults(
            duid=str(u["duid"]), energy_gen_prices=tuple(float(p) for p in u["energy_gen_prices"]),
            energy_load_prices=tuple(float(p) for p in u["energy_load_prices"]),
            fcas_prices=tuple(float(p) for p in u["fcas_prices"])) for u in payload["units"]}
        hours, minutes = str(payload.get("daily_bid_close", "12:30")).split(":")
        return cls(participant_id=str(payload["participant_id"]), username=str(payload["username"]),
                   password=str(payload["password"]), units=units, daily_bid_close=time(int(hours), int(minutes)),
                   gate_closure_lead_s=float(payload.get("gate_closure_lead_s", 0.0)),
                   acknowledge_after_polls=int(payload.get("acknowledge_after_polls", 0)))


@dataclass
class Submission:
    """A submission as the stand-in recorded it."""

    reference_id: str
    transaction_id: str
    status: str
    entry_type: str
    received: datetime
    errors: list[SandboxError]
    polls: int = 0

    def data(self, acknowledge_after_polls: int) -> dict[str, Any]:
        """The ``data`` object of an answer about this submission."""
        status = RECEIVED if self.polls < acknowledge_after_polls else self.status
        return {"referenceId": self.reference_id, "transactionId": self.transaction_id, "status": status,
                "offerTimestamp": self.received.isoformat(timespec="seconds") + "+10:00",
                "entryType": self.entry_type}


class SandboxState:
    """What the stand-in has received (thread-safe): submissions by reference id, DAILY band prices, faults."""

    def __init__(self, config: SandboxConfig, clock: SandboxClock) -> None:
        self.config = config
        self.clock = clock
        self._lock = threading.Lock()
        self._submissions: dict[str, Submission] = {}
        self._daily_prices: dict[tuple[str, date, str, str | None], tuple[float, ...]] = {}
        self._faults: list[tuple[str, float]] = []
        self.received = Counter[str]()  # submitBids calls per reference id (duplicates included)

    def add_fault(self, kind: str, delay_s: float = 0.0) -> None:
        """The next submitBids is answered late by ``delay_s`` (FAULT_LATE, still recorded) or with a body that
        is not AEMO's (FAULT_MALFORMED, still recorded). Faults queue in order."""
        if kind not in (FAULT_LATE, FAULT_MALFORMED):
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._faults.append((kind, delay_s))

    def set_clock(self, clock: SandboxClock) -> None:
        """Move the stand-in's market clock."""
        with self._lock:
            self.clock = clock

    def submission(self, reference_id: str) -> Submission | None:
        """The recorded submission ``reference_id``, or None."""
        with self._lock:
            return self._submissions.get(reference_id)

    def submit(self, payload: object) -> tuple[int, dict[str, Any], tuple[str, float] | None]:
        """Decide a submission: (HTTP status, answer, the fault to apply to the answer or None)."""
        received = self.clock.now()
        reference_id, heads, errors = read_submission(payload)
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
            if reference_id is not None:
                self.received[reference_id] += 1
                earlier = self._submissions.get(reference_id)
                if earlier is not None:
                    data = earlier.data(self.config.acknowledge_after_polls) | {"status": DUPLICATE,
                                                                                "originalStatus": earlier.status}
                    duplicate = SandboxError("DUPLICATE_REFERENCE", "Duplicate referenceId",
                                             f"referenceId {reference_id} was received at "
                                             f"{earlier.received:%Y-%m-%d %H:%M:%S} as transaction "
                                             f"{earlier.transaction_id}", ".referenceId")
                    return HTTPStatus.CONFLICT, _answer(data, [duplicate]), fault
            if not errors:
                errors = check_owned(heads, self.config.units)
            if not errors:
                rebids = [h for h in heads if not is_daily(h, received, self.config.daily_bid_close)]
                errors = (check_gate_closure(rebids, received, self.config.gate_closure_lead_s)
                          + check_band_prices(heads, received, self.config.daily_bid_close, self._daily_prices,
                                              self.config.units))
            entry_type = "DAILY" if heads and all(is_daily(h, received, self.config.daily_bid_close)
                                                  for h in heads) else "REBID"
            transaction_id = uuid.uuid4().hex
            if reference_id is None:
                data = {"referenceId": None, "transactionId": transaction_id, "status": REJECTED}
                return HTTPStatus.BAD_REQUEST, _answer(data, errors), fault
            submission = Submission(reference_id, transaction_id, REJECTED if errors else ACCEPTED, entry_type,
                                    received, errors)
            self._submissions[reference_id] = submission
            if not errors:
                for head in heads:
                    if is_daily(head, received, self.config.daily_bid_close):
                        self._daily_prices[head.price_key] = head.prices
            log.info("submission %s %s (%s)%s", reference_id, submission.status, entry_type,
                     "".join(f"; {e.code}: {e.detail}" for e in errors))
            status = HTTPStatus.BAD_REQUEST if errors else HTTPStatus.OK
            return status, _answer(submission.data(self.config.acknowledge_after_polls), errors), fault

    def status_of(self, reference_id: str) -> tuple[int, dict[str, Any]]:
        """The getSubmission answer for ``reference_id`` (each call counts as one poll)."""
        with self._lock:
            submission = self._submissions.get(reference_id)
            if submission is None:
                missing = SandboxError("NOT_FOUND", "Submission not found",
                                       f"no submission with referenceId {reference_id}", "referenceId")
                return HTTPStatus.NOT_FOUND, _answer({"referenceId": reference_id, "status": "NOT_FOUND"}, [missing])
            data = submission.data(self.config.acknowledge_after_polls)
            submission.polls += 1
            return HTTPStatus.OK, _answer(data, submission.errors if data["status"] == REJECTED else [])


def _answer(data: dict[str, Any], errors: list[SandboxError]) -> dict[str, Any]:
    return {"transactionId": uuid.uuid4().hex, "data": data, "errors": [e.to_json() for e in errors],
            "warnings": []}


def _authorised(headers: Any, config: SandboxConfig) -> bool:
    participant = headers.get(PARTICIPANT_HEADER, "")
    authorization = headers.get("Authorization", "")
    if not authorization.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return (hmac.compare_digest(participant.encode(), config.participant_id.encode())
            and hmac.compare_digest(user.encode(), config.username.encode())
            and hmac.compare_digest(password.encode(), config.password.encode()))


def _handler(state: SandboxState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a late answer)
                log.info("the client closed the connection before the answer")

        def _send_json(self, status: int, answer: dict[str, Any]) -> None:
            self._send(status, json.dumps(answer).encode())

        def _refuse(self) -> None:
            error = SandboxError("UNAUTHORISED", "Authentication failed",
                                 f"credentials or {PARTICIPANT_HEADER} not accepted")
            self._send_json(HTTPStatus.UNAUTHORIZED, _answer({}, [error]))

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == HEALTH_PATH:
                self._send_json(HTTPStatus.OK, {"status": "UP"})
                return
            if url.path != STATUS_PATH:
                self._send_json(HTTPStatus.NOT_FOUND, _answer({}, [SandboxError("NOT_FOUND", "No such API", url.path)]))
                return
            if not _authorised(self.headers, state.config):
                self._refuse()
                return
            reference = parse_qs(url.query).get("referenceId", [""])[0]
            status, answer = state.status_of(reference)
            self._send_json(status, answer)

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, MAX_BODY_BYTES)) if length else b""
            if url.path != SUBMIT_PATH:
                self._send_json(HTTPStatus.NOT_FOUND, _answer({}, [SandboxError("NOT_FOUND", "No such API", url.path)]))
                return
            if not _authorised(self.headers, state.config):
                self._refuse()
                return
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                error = SandboxError("SCHEMA", "Invalid submission", f"the body is not JSON: {exc}")
                self._send_json(HTTPStatus.BAD_REQUEST, _answer({"status": REJECTED}, [error]))
                return
            status, answer, fault = state.submit(payload)
            if fault is not None and fault[0] == FAULT_LATE:
                time_module.sleep(fault[1])
            if fault is not None and fault[0] == FAULT_MALFORMED:
                self._send(HTTPStatus.OK, b"<html><body>502 Bad Gateway</body></html>")
                return
            self._send_json(status, answer)

    return Handler


class SandboxServer:
    """The stand-in on ``host:port`` (port 0: a free one), served from a background thread."""

    def __init__(self, config: SandboxConfig, clock: SandboxClock | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.state = SandboxState(config, clock or SandboxClock())
        self._server = ThreadingHTTPServer((host, port), _handler(self.state))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base address of the API, e.g. ``http://127.0.0.1:8765/NEMWholesale/bidding/v1``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{API_PREFIX}"

    def start(self) -> SandboxServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="aemo-sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (from another thread) or an interrupt."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
