"""A stand-in for NEMWEB: a real HTTP server (stdlib, in a thread, on an ephemeral port) serving a folder
exactly as https://nemweb.com.au/ serves its files.

- Every folder answers with an HTML listing like NEMWEB's (IIS): a ``<pre>`` of lines
  ``<date> <size or &lt;dir&gt;> <A HREF="/path/to/file">file</A><br>``, ``#`` written ``%23`` in hrefs.
  ``index.html`` files of the folder are listing copies and are not served or listed.
- Files are served with Content-Length, Last-Modified and an ETag; ``%23`` in a path is decoded to ``#``.
- Faults can be injected per path (:meth:`NemwebStandIn.inject`): an HTTP status a number of times (500
  twice then OK; 404 for ever), a delay longer than the client's timeout, a body cut short.
- Publication can be simulated: with ``visible`` given, only those files (and the folders leading to them)
  exist; :meth:`NemwebStandIn.publish` adds one, so a listing grows as AEMO publishes.

Usage::

    with NemwebStandIn(Path("data/nemweb")) as nemweb:
        sync(store, HttpSource(nemweb.url), request)
"""

from __future__ import annotations

import email.utils
import html
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

HIDDEN_NAMES = frozenset({"index.html", "index.htm"})


@dataclass
class Fault:
    """What a request for one path gets instead of the file, ``times`` times (None: every time).

    ``status``: answer this HTTP status; ``delay_s``: wait this long before answering (a timeout for a
    client with a shorter one); ``truncate_to``: send the full Content-Length but only this many bytes.
    """

    status: int | None = None
    delay_s: float = 0.0
    truncate_to: int | None = None
    times: int | None = 1
    methods: frozenset[str] = frozenset({"GET", "HEAD"})


@dataclass
class Request:
    """A request the stand-in received (logged on arrival): method, decoded path (``#`` as ``#``), the status
    answered (None until answered: a delayed answer may come after the client gave up), the fault applied."""

    method: str
    path: str
    status: int | None = None
    fault: Fault | None = None


class NemwebStandIn:
    """Serves ``root`` like NEMWEB on ``http://127.0.0.1:<port>/`` while started (a context manager)."""

    def __init__(self, root: Path, *, visible: Iterable[str] | None = None) -> None:
        self.root = root.resolve()
        self._visible: set[str] | None = None if visible is None else {p.strip("/") for p in visible}
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> NemwebStandIn:
        """Listen on an ephemeral port of 127.0.0.1 and serve in a daemon thread."""
        standin = self

        class Handler(_Handler):
            owner = standin

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="nemweb-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> NemwebStandIn:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base address, ending in ``/``."""
        assert self._server is not None, "start the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    # -- faults and publication ----------------------------------------------------------------------

    def inject(self, path: str, fault: Fault) -> None:
        """Queue ``fault`` for requests of ``path`` (relative to the root, ``#`` unencoded)."""
        with self._lock:
            self._faults.setdefault(path.strip("/"), []).append(fault)

    def clear_faults(self) -> None:
        """Forget every queued fault."""
        with self._lock:
            self._faults.clear()

    def publish(self, path: str) -> None:
        """Make a file visible (when the stand-in was created with ``visible``)."""
        with self._lock:
            if self._visible is not None:
                self._visible.add(path.strip("/"))

    def hide(self, path: str) -> None:
        """Make a file invisible again (it answers 404 and leaves its listing)."""
        with self._lock:
            if self._visible is None:
                self._visible = {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()}
            self._visible.discard(path.strip("/"))

    def requests_for(self, path: str, method: str | None = None) -> list[Request]:
        """The requests received for ``path`` (optionally of one method)."""
        path = path.strip("/")
        with self._lock:
            return [r for r in self.requests if r.path.strip("/") == path and (method is None or r.method == method)]

    # -- used by the handler -------------------------------------------------------------------------

    def _take_fault(self, path: str, method: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            if not queue:
                return None
            fault = queue[0]
            if method not in fault.methods:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    queue.pop(0)
            return fault

    def _arrived(self, method: str, path: str) -> Request:
        request = Request(method=method, path=path)
        with self._lock:
            self.requests.append(request)
        return request

    def _is_visible_file(self, relative: str) -> bool:
        with self._lock:
            return self._visible is None or relative in self._visible

    def _is_visible_folder(self, relative: str) -> bool:
        with self._lock:
            if self._visible is None:
                return True
            prefix = relative.strip("/") + "/" if relative.strip("/") else ""
            return any(path.startswith(prefix) for path in self._visible)

    def _listing(self, folder: Path, relative: str) -> bytes:
        """NEMWEB's listing page of a folder: a line per visible entry, folders first, then files by name."""
        url_path = "/" + (relative.strip("/") + "/" if relative.strip("/") else "")
        lines: list[str] = []
        if url_path != "/":
            parent = url_path.rstrip("/").rsplit("/", 1)[0] + "/"
            lines.append(f'<A HREF="{_href(parent)}">[To Parent Directory]</A><br><br>')
        entries = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name))
        for entry in entries:
            if entry.name in HIDDEN_NAMES or entry.name.startswith("."):
                continue
            child = (relative.strip("/") + "/" + entry.name).strip("/")
            stamp = _listing_date(entry.stat().st_mtime)
            if entry.is_dir():
                if not self._is_visible_folder(child):
                    continue
                href = _href("/" + child + "/")
                lines.append(f'{stamp}        &lt;dir&gt; <A HREF="{href}">{html.escape(entry.name)}</A><br>')
            else:
                if not self._is_visible_file(child):
                    continue
                lines.append(f'{stamp} {entry.stat().st_size:>12} <A HREF="{_href("/" + child)}">'
                             f"{html.escape(entry.name)}</A><br>")
        title = f"127.0.0.1 - {url_path}"
        page = (f"<html><head><title>{title}</title></head><body><H1>{title}</H1><hr>\n\n<pre>"
                + "".join(lines) + "</pre><hr></body></html>")
        return page.encode("utf-8")


def _href(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


def _listing_date(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds)
    return moment.strftime("%A, %B ") + f"{moment.day}, {moment.year} " + moment.strftime("%I:%M %p").lstrip("0")


class _Handler(BaseHTTPRequestHandler):
    owner: NemwebStandIn
    request_record: Request
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: requests are kept in ``owner.requests`` instead."""

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, *, send_body: bool) -> None:
        raw_path = urllib.parse.urlsplit(self.path).path
        relative = urllib.parse.unquote(raw_path).lstrip("/")
        method = "GET" if send_body else "HEAD"
        self.request_record = self.owner._arrived(method, relative)
        fault = self.owner._take_fault(relative.rstrip("/"), method)
        self.request_record.fault = fault
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault is not None and fault.status is not None:
            self._status_only(fault.status, relative, method)
            return
        target = (self.owner.root / relative).resolve()
        if not target.is_relative_to(self.owner.root) or not target.exists() or target.name in HIDDEN_NAMES:
            self._status_only(HTTPStatus.NOT_FOUND, relative, method)
            return
        if target.is_dir():
            if not self.owner._is_visible_folder(relative):
                self._status_only(HTTPStatus.NOT_FOUND, relative, method)
                return
            body = self.owner._listing(target, relative)
            self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", None, relative, method, send_body)
            return
        if not self.owner._is_visible_file(relative.strip("/")):
            self._status_only(HTTPStatus.NOT_FOUND, relative, method)
            return
        body = target.read_bytes()
        content_type = "application/x-zip-compressed" if target.suffix.lower() == ".zip" else "text/csv"
        info = target.stat()
        headers = {"Last-Modified": email.utils.formatdate(info.st_mtime, usegmt=True),
                   "ETag": f'"{info.st_mtime_ns:x}:{info.st_size:x}"'}
        truncate_to = fault.truncate_to if fault is not None else None
        self._send(HTTPStatus.OK, body, content_type, headers, relative, method, send_body, truncate_to)

    def _status_only(self, status: int, relative: str, method: str) -> None:
        body = f"<html><body><h1>{int(status)}</h1></body></html>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method == "GET":
            self.wfile.write(body)
        self.request_record.status = int(status)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None, relative: str,
              method: str, send_body: bool, truncate_to: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if truncate_to is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if send_body:
            try:
                self.wfile.write(body if truncate_to is None else body[:truncate_to])
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
        if truncate_to is not None:
            self.close_connection = True
        self.request_record.status = int(status)


def folder_files(root: Path) -> list[str]:
    """Every servable file under ``root`` (relative paths), as the stand-in lists them."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.name not in HIDDEN_NAMES and not p.name.startswith("."))


__all__ = ["Fault", "NemwebStandIn", "Request", "folder_files"]
