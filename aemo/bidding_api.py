"""The HTTP client of AEMO's NEM Dispatch Bidding API: submit a bid, ask a submission's status by reference id.

Answers are parsed into :class:`SubmissionAnswer` (AEMO's status, transaction id and reasons); what cannot be
read, or does not come in time, is one typed error: :class:`BiddingApiTimeoutError` (no answer within the time-out:
AEMO may or may not have the submission), :class:`BiddingApiUnreadableError` (an answer that is not AEMO's format),
:class:`BiddingApiRefusedError` (authentication refused), :class:`BiddingApiUnavailableError` (nothing reached AEMO:
connection refused, or a 5xx without AEMO's answer).

Address, participant id and credentials come from the environment (:meth:`BiddingApiConfig.from_environment`:
``VPP_AEMO_API_URL``, ``VPP_AEMO_PARTICIPANT_ID``, ``VPP_AEMO_API_USER``, ``VPP_AEMO_API_PASSWORD``). The
credentials are never logged, never part of an error message or a ``repr``, never stored.

Requests: ``POST {url}/submitBids`` with the ``submitBids`` JSON (:mod:`aemo.bid_json`) and ``GET
{url}/getSubmission?referenceId=...``; headers ``X-initiatingParticipantID`` and HTTP Basic authentication.
Answer: ``{"transactionId", "data": {"referenceId", "transactionId", "status", "offerTimestamp",
"entryType"}, "errors": [{"code", "title", "detail", "source"}], "warnings": [...]}`` (README, "Assumptions").
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aemo.errors import AemoDataError

ENV_URL = "VPP_AEMO_API_URL"
ENV_PARTICIPANT = "VPP_AEMO_PARTICIPANT_ID"
ENV_USER = "VPP_AEMO_API_USER"
ENV_PASSWORD = "VPP_AEMO_API_PASSWORD"
PARTICIPANT_HEADER = "X-initiatingParticipantID"

ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"
DUPLICATE = "DUPLICATE"
RECEIVED = "RECEIVED"
NOT_FOUND = "NOT_FOUND"
ANSWER_STATUSES = (ACCEPTED, REJECTED, DUPLICATE, RECEIVED, NOT_FOUND)
# An answer body kept for the record is cut to this many characters.
MAX_RECORDED_ANSWER_CHARS = 20_000


class BiddingApiError(AemoDataError):
    """A request to AEMO's bidding API that did not give a usable answer; the message says why."""


class BiddingApiConfigError(BiddingApiError):
    """The environment does not configure the bidding API; names the missing variables (never values)."""


class BiddingApiTimeoutError(BiddingApiError):
    """No answer within the time-out: AEMO may or may not have received the submission."""


class BiddingApiUnavailableError(BiddingApiError):
    """AEMO could not be reached (nothing was received), or answered a server error without its format."""


class BiddingApiRefusedError(BiddingApiError):
    """AEMO refused the participant's credentials (HTTP 401/403)."""


class BiddingApiUnreadableError(BiddingApiError):
    """An answer that is not AEMO's format; ``answer`` holds its text (cut) for the record."""

    def __init__(self, message: str, answer: str) -> None:
        super().__init__(message)
        self.answer = answer


@dataclass(frozen=True)
class BiddingApiConfig:
    """Where AEMO's bidding API is and who the participant is; the password never shows in a ``repr``."""

    base_url: str
    participant_id: str
    username: str
    password: str = field(repr=False)
    timeout_s: float = 10.0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], timeout_s: float = 10.0) -> BiddingApiConfig:
        """The configuration from ``environ``; BiddingApiConfigError naming every missing variable."""
        names = (ENV_URL, ENV_PARTICIPANT, ENV_USER, ENV_PASSWORD)
        missing = [name for name in names if not environ.get(name)]
        if missing:
            raise BiddingApiConfigError(f"the aemo bid backend needs {', '.join(missing)} in the environment")
        url = environ[ENV_URL].rstrip("/")
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise BiddingApiConfigError(f"{ENV_URL} must be an http(s) address")
        return cls(base_url=url, participant_id=environ[ENV_PARTICIPANT], username=environ[ENV_USER],
                   password=environ[ENV_PASSWORD], timeout_s=timeout_s)


@dataclass(frozen=True)
class AemoReason:
    """One of AEMO's reasons (``errors`` entry): code, title, detail and the field it concerns."""

    code: str
    title: str
    detail: str
    source: str = ""

    def __str__(self) -> str:
        where = f" [{self.source}]" if self.source else ""
        return f"AEMO {self.code}: {self.detail or self.title}{where}"


@dataclass(frozen=True)
class SubmissionAnswer:
    """AEMO's answer about one submission.

    ``status``: ACCEPTED, REJECTED (``reasons`` say why), DUPLICATE (the reference id was received before;
    ``original_status`` is what became of it), RECEIVED (not yet acknowledged) or NOT_FOUND (status asked
    of a reference AEMO does not know). ``answer`` is the body as received (cut), for the record.
    """

    status: str
    reference_id: str
    transaction_id: str
    reasons: tuple[AemoReason, ...]
    http_status: int
    answer: str
    offer_timestamp: str = ""
    entry_type: str = ""
    original_status: str = ""


def parse_answer(http_status: int, body: str, reference_id: str) -> SubmissionAnswer:
    """Read AEMO's answer to a submitBids or getSubmission about ``reference_id``.

    Raises :class:`BiddingApiUnreadableError` for a body that is not AEMO's JSON answer, names another reference,
    or has a status that is not one of :data:`ANSWER_STATUSES`; :class:`BiddingApiRefusedError` for 401/403;
    :class:`BiddingApiUnavailableError` for a 5xx without AEMO's answer.
    """
    kept = body[:MAX_RECORDED_ANSWER_CHARS]
    if http_status in (401, 403):
        raise BiddingApiRefusedError(f"AEMO refused the participant's credentials (HTTP {http_status})")
    try:
        payload = json.loads(body)
    except ValueError:
        if http_status >= 500:
            raise BiddingApiUnavailableError(f"AEMO answered HTTP {http_status} without an answer") from None
        raise BiddingApiUnreadableError(f"AEMO's answer (HTTP {http_status}) is not JSON: {body[:120]!r}",
                                        kept) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise BiddingApiUnreadableError(f"AEMO's answer (HTTP {http_status}) has no 'data' object", kept)
    data = payload["data"]
    status = data.get("status")
    if status not in ANSWER_STATUSES:
        raise BiddingApiUnreadableError(f"AEMO's answer (HTTP {http_status}) has status {status!r}, not one of "
                                   f"{', '.join(ANSWER_STATUSES)}", kept)
    answered_reference = data.get("referenceId")
    if answered_reference not in (None, reference_id):
        raise BiddingApiUnreadableError(
            f"AEMO's answer is about reference {answered_reference!r}, not {reference_id!r}", kept)
    errors = payload.get("errors", [])
    if not isinstance(errors, list) or not all(isinstance(e, dict) for e in errors):
        raise BiddingApiUnreadableError(
            f"AEMO's answer (HTTP {http_status}) has 'errors' that are not a list of objects", kept)
    reasons = tuple(AemoReason(code=str(e.get("code", "")), title=str(e.get("title", "")),
                               detail=str(e.get("detail", "")), source=str(e.get("source", ""))) for e in errors)
    transaction_id = data.get("transactionId") or ""
    if status in (ACCEPTED, DUPLICATE) and not transaction_id:
        raise BiddingApiUnreadableError(f"AEMO's {status} answer carries no transactionId", kept)
    if status == REJECTED and not reasons:
        raise BiddingApiUnreadableError("AEMO's REJECTED answer gives no reasons", kept)
    return SubmissionAnswer(status=str(status), reference_id=reference_id, transaction_id=str(transaction_id),
                            reasons=reasons, http_status=http_status, answer=kept,
                            offer_timestamp=str(data.get("offerTimestamp") or ""),
                            entry_type=str(data.get("entryType") or ""),
                            original_status=str(data.get("originalStatus") or ""))


class BiddingApiClient:
    """Submits and follows submissions at AEMO's bidding API (blocking HTTP run in a thread)."""

    def __init__(self, config: BiddingApiConfig) -> None:
        self._config = config
        token = base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", PARTICIPANT_HEADER: config.participant_id,
                         "Accept": "application/json"}

    @property
    def base_url(self) -> str:
        """The API's base address (no credentials in it)."""
        return self._config.base_url

    async def submit(self, payload: Mapping[str, Any]) -> SubmissionAnswer:
        """POST ``payload`` (a submitBids JSON with its ``referenceId``) and read AEMO's answer."""
        reference_id = str(payload.get("referenceId", ""))
        body = json.dumps(payload).encode()
        status, text = await asyncio.to_thread(self._request, "POST", "/submitBids", body)
        return parse_answer(status, text, reference_id)

    async def submission_status(self, reference_id: str) -> SubmissionAnswer:
        """AEMO's record of the submission ``reference_id`` (status NOT_FOUND when it has none)."""
        query = urllib.parse.urlencode({"referenceId": reference_id})
        status, text = await asyncio.to_thread(self._request, "GET", f"/getSubmission?{query}", None)
        return parse_answer(status, text, reference_id)

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, str]:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self._config.base_url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self._config.timeout_s) as response:
                return int(response.status), response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode("utf-8", errors="replace")
        except TimeoutError as exc:
            raise BiddingApiTimeoutError(f"AEMO did not answer {method} {path.split('?')[0]} within "
                                    f"{self._config.timeout_s:g} s") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError | socket.timeout):
                raise BiddingApiTimeoutError(f"AEMO did not answer {method} {path.split('?')[0]} within "
                                        f"{self._config.timeout_s:g} s") from exc
            raise BiddingApiUnavailableError(f"AEMO's bidding API cannot be reached ({type(exc.reason).__name__}): "
                                             "nothing was received") from exc
        except (ConnectionError, OSError) as exc:
            raise BiddingApiTimeoutError(f"the connection to AEMO broke during {method} {path.split('?')[0]}: "
                                    f"{type(exc).__name__}") from exc
