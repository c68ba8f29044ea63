"""The local SQS endpoint: moto's SQS backend served for the platform's processes (``python -m stack.sqs_endpoint``).

``moto_server`` serves every moto service behind one dispatcher (each request is matched against the services'
URL patterns and host names under a lock), logging a line per request, on werkzeug's development server without
``TCP_NODELAY``. The platform only uses SQS, and a portfolio round makes a few hundred SQS calls (sends,
long-poll receives, deletes), each one on the critical path of a cycle. This serves the same moto SQS backend
(the same API and queue semantics: still a real SQS endpoint for boto3) as moto's SQS application alone, with
no per-request log line and moto's per-message retention check made O(1) (it rebuilt every attribute of the
queue, message counts included, three times per message received), on a threaded werkzeug server that keeps
connections alive (HTTP/1.1; werkzeug itself closes every one: :class:`QuietRequestHandler`) and sends each
response without waiting for the client's ACK of the previous segment (``TCP_NODELAY``). A request that fails
inside moto is still logged, with its traceback.

Measured with 100 rounds of SendMessageBatch (9 × 20 kB) + ReceiveMessage + DeleteMessageBatch against each
endpoint on the loaded 2-core machine: about 10.5 ms of the endpoint's CPU per round instead of 20 ms, and 5–5.5
instead of 8 ms for a single send, receive and delete (README, "The portfolio").
"""

from __future__ import annotations

import argparse
import io
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any, Final

from moto.core.utils import unix_time
from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
from moto.sqs.models import Message, SQSBackend
from werkzeug.serving import BaseWSGIServer, make_server

SERVICE: Final = "sqs"
# moto's own retention check, before sqs_app() replaces it in the endpoint's process (the tests compare them);
# None on a moto release without it, which is then served unpatched (its own check, whatever it is).
MOTO_RETENTION_CHECK: Final = getattr(SQSBackend, "is_message_valid_based_on_retention_period", None)


class QuietRequestHandler(MotoRequestHandler):  # type: ignore[misc]
    """moto's request handler without a log line per request, with Nagle's algorithm off (a response's
    headers and body leave at once instead of the body waiting for the client to acknowledge the headers), and
    keeping the client's connection open for its next request.

    werkzeug's development server answers every request with ``Connection: close`` (http.server cannot tell
    where an unread request body ends), so each SQS call cost a new TCP connection — and a new server thread —
    on both sides. A request whose body has a ``Content-Length`` (every request boto3 sends to SQS) is read
    whole before moto sees it, so the next request starts exactly where this one ends, and its response
    leaves without ``Connection: close``; a request with a chunked body, none announced, or an ``Expect``
    header is answered as before, closing the connection."""

    disable_nagle_algorithm = True
    _body_read: bool = False

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are not logged one by one (errors still are, by ``log_error``)."""

    def run_wsgi(self) -> None:
        """Serve one request, its body read first when its length is known (see the class docstring)."""
        length = self.headers.get("Content-Length")
        self._body_read = (length is not None and length.strip().isdigit() and "Expect" not in self.headers
                           and "Transfer-Encoding" not in self.headers)
        if not self._body_read:
            super().run_wsgi()
            return
        connection = self.rfile
        self.rfile = io.BytesIO(connection.read(int(length or 0)))
        try:
            super().run_wsgi()
        finally:
            self.rfile = connection

    def send_header(self, keyword: str, value: str) -> None:
        """Send a response header, but not werkzeug's ``Connection: close`` after a request read whole."""
        if self._body_read and keyword.lower() == "connection" and value.lower() == "close":
            return
        super().send_header(keyword, value)


def _retained(backend: SQSBackend, queue_name: str, message: Message) -> bool:
    """Whether ``message`` is still within its queue's retention period (s): moto's own check, reading the
    queue's retention period instead of building every attribute of the queue (message counts included) three
    times for each message a receive hands out."""
    queue: Any = backend.get_queue(queue_name)  # its attributes are set from the queue's attribute names
    retention_s = int(queue.message_retention_period)
    return bool(retention_s + int(message.sent_timestamp or 0) / 1000 > unix_time())


def sqs_app() -> Any:
    """moto's WSGI application serving the SQS API only (no per-request service lookup, no debug mode), with
    its retention check per received message made O(1) (:func:`_retained`, same answer)."""
    if MOTO_RETENTION_CHECK is not None:
        SQSBackend.is_message_valid_based_on_retention_period = _retained  # type: ignore[method-assign,assignment]
    return create_backend_app(SERVICE)


def serve(host: str, port: int) -> BaseWSGIServer:
    """A threaded server of :func:`sqs_app` bound to ``host``:``port`` (not yet serving: call
    ``serve_forever``; ``shutdown`` stops it)."""
    return make_server(host, port, sqs_app(), threaded=True, request_handler=QuietRequestHandler)


def main(argv: list[str] | None = None) -> int:
    """Serve SQS on ``-H host -p port`` until SIGINT / SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = serve(args.host, args.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"SQS endpoint (moto {SERVICE}) on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
