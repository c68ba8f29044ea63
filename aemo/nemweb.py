"""Mirror AEMO's files from NEMWEB (or a local folder laid out like it) into the market store.

Sources: an ``http(s)://`` address of a NEMWEB-style site, whose folders answer with HTML directory
listings (``<a href="…">`` links, as ``https://nemweb.com.au/`` serves them), or a local folder with the
same layout. File names keep AEMO's ``#``; over HTTP they are requested as ``%23``.

What is synced (:class:`SyncRequest`):

- monthly archives: ``<archive_path>/YYYY/MMSDM_YYYY_MM/MMSDM_Historical_Data_SQLLoader/DATA/`` for each
  requested month (default: every month the source lists), the files of the requested tables only;
- current reports: ``<current_path>/<folder>/`` for each requested folder, every report whose tables are
  requested (only the newest publication of each report).

How (:func:`sync`): files are fetched by a bounded thread pool; HTTP 5xx, 429 and timeouts are retried with
exponential backoff (``Retry-After`` honoured), a 404 is a per-file failure at once; a download shorter than
its Content-Length is retried and never ingested. A file already held with the same name and content
(size and ETag / Last-Modified, else its sha256) is skipped without downloading it; an older publication
of a report held in a newer one is skipped too. Each file's rows and manifest entry are committed
together (:meth:`aemo.store.MarketStore.commit`), so a sync interrupted at any point (Ctrl-C, kill)
resumes where it stopped and ends with the same store as an uninterrupted one.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import os
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol, TypeVar

from aemo.archive_files import AemoFileName, FileKind, parse_file_name
from aemo.errors import AemoDataError, FileNameError
from aemo.store import IngestStatus, MarketStore, SourceStat, StagedFile
from aemo.tables import TABLE_NAMES, month_label, month_range, schema_for_archive, schema_named

DEFAULT_SOURCE = "https://nemweb.com.au/"
DEFAULT_ARCHIVE_PATH = "Data_Archive/Wholesale_Electricity/MMSDM"
DEFAULT_CURRENT_PATH = "Reports/Current"
MONTH_DATA_FOLDER = "{year:04d}/MMSDM_{year:04d}_{month:02d}/MMSDM_Historical_Data_SQLLoader/DATA/"
LISTING_IGNORED = frozenset({"index.html", "index.htm"})
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
PROBE_ATTEMPTS = 2
CHUNK_BYTES = 1 << 20
USER_AGENT = "openvpp-market-store/1"
_T = TypeVar("_T")
_HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_YEAR_FOLDER = re.compile(r"^\d{4}$")
_MONTH_FOLDER = re.compile(r"^MMSDM_(\d{4})_(\d{2})$")

CURRENT_FOLDER_TABLES: dict[str, frozenset[str]] = {
    "P5_Reports": frozenset({"P5MIN_REGIONSOLUTION"}),
    "Next_Day_Dispatch": frozenset({"DISPATCHLOAD"}),
    "Daily_Reports": frozenset({"DISPATCHPRICE", "DISPATCHREGIONSUM", "DISPATCHLOAD"}),
    "Next_Day_Intermittent_Gen_Scada": frozenset({"INTERMITTENT_GEN_SCADA"}),
    "DispatchIS_Reports": frozenset({"DISPATCHPRICE", "DISPATCHREGIONSUM"}),
    "PredispatchIS_Reports": frozenset({"PREDISPATCHPRICE"}),
    "TradingIS_Reports": frozenset({"TRADINGPRICE"}),
    "Bidmove_Complete": frozenset({"BIDDAYOFFER_D", "BIDPEROFFER_D"}),
}
"""The store tables each known ``Reports/Current`` folder carries (other folders: parsed for any table)."""


class SourceError(AemoDataError):
    """The source as a whole cannot be used (unreachable address, missing folder, not a URL or folder)."""


class FetchError(AemoDataError):
    """One file or listing could not be fetched (after the retries it deserved); the message says why."""


class NotFoundError(FetchError):
    """The source answered 404 (or the local file is absent): not retried."""


class FetchCancelledError(FetchError):
    """A download stopped because the sync is being interrupted."""


Cancelled = Callable[[], bool]
"""Tells a download in flight whether the sync is being interrupted (checked between chunks and attempts)."""


class _RetryableError(Exception):
    """A failure worth another attempt (5xx, 429, timeout, connection reset, short download)."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class ListingEntry:
    """One link of a folder listing: ``path`` relative to the source root (``/`` ends a folder)."""

    name: str
    path: str
    is_folder: bool


@dataclass(frozen=True)
class FetchedFile:
    """A complete download (or a local file): where it is, and its size, hash and validators."""

    path: Path
    stat: SourceStat
    temporary: bool


class Source(Protocol):
    """Where AEMO's files come from: lists folders, states and fetches files (paths relative to the root)."""

    @property
    def description(self) -> str:
        """The address or folder, for messages."""
        ...

    def probe(self) -> None:
        """Raise :class:`SourceError` if the source cannot be reached at all."""
        ...

    def list(self, folder: str) -> list[ListingEntry]:
        """The entries of ``folder`` (ending in ``/``); :class:`NotFoundError` if it does not exist."""
        ...

    def stat(self, path: str) -> SourceStat:
        """Size and validators of a file without fetching it."""
        ...

    def fetch(self, path: str, incoming: Path, cancelled: Cancelled | None = None) -> FetchedFile:
        """The whole file, checked complete; downloads go to a new file in ``incoming``."""
        ...


def parse_listing(html: str, listing_url: str, root_url: str) -> list[ListingEntry]:
    """The children of a folder from its HTML listing (NEMWEB's or any page of ``<a href>`` links).

    ``listing_url``: the folder's address; ``root_url``: the source root (ends in ``/``). Links outside
    the folder (its parent, other sites) are dropped; ``#`` in hrefs is taken as part of the name.
    """
    folder = urllib.parse.urlsplit(listing_url)
    root_path = urllib.parse.unquote(urllib.parse.urlsplit(root_url).path)
    folder_path = urllib.parse.unquote(folder.path)
    entries: dict[str, ListingEntry] = {}
    for href in _HREF.findall(html):
        absolute = urllib.parse.urlsplit(urllib.parse.urljoin(listing_url, href.replace("#", "%23")))
        if (absolute.scheme, absolute.netloc) != (folder.scheme, folder.netloc):
            continue
        path = urllib.parse.unquote(absolute.path)
        if not path.startswith(folder_path) or path == folder_path:
            continue
        child = path[len(folder_path):]
        is_folder = child.endswith("/")
        name = child.rstrip("/")
        if not name or "/" in name or name in LISTING_IGNORED:
            continue
        entries[name] = ListingEntry(name=name, path=path[len(root_path):], is_folder=is_folder)
    return list(entries.values())


def _http_date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None


class HttpSource:
    """A NEMWEB-style site over HTTP(S): listings are HTML pages, files are served with Content-Length."""

    def __init__(self, base_url: str, *, timeout_s: float = 60.0, attempts: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SourceError(f"{base_url!r} is not an http(s) address")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._sleep = sleep

    @property
    def description(self) -> str:
        """The site's address."""
        return self.base_url

    def url(self, path: str) -> str:
        """The address of ``path`` (relative to the root), ``#`` and other reserved characters quoted."""
        return self.base_url + urllib.parse.quote(path, safe="/")

    def _attempt(self, what: str, action: Callable[[], _T], cancelled: Cancelled | None = None) -> _T:
        """``action()`` with retries on :class:`_RetryableError` failures, backoff doubling from ``backoff_s``."""
        last = ""
        for attempt in range(self.attempts):
            if cancelled is not None and cancelled():
                raise FetchCancelledError(f"{what}: interrupted")
            try:
                return action()
            except _RetryableError as exc:
                last = str(exc)
                if attempt + 1 < self.attempts:
                    delay = self.backoff_s * (2 ** attempt)
                    if exc.retry_after_s is not None:
                        delay = max(delay, exc.retry_after_s)
                    self._sleep(delay)
        raise FetchError(f"{what}: gave up after {self.attempts} attempts ({last})")

    def _open(self, method: str, path: str) -> http.client.HTTPResponse:
        request = urllib.request.Request(self.url(path), method=method, headers={"User-Agent": USER_AGENT})
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in (404, 410):
                raise NotFoundError(f"{path}: not found (HTTP {exc.code})") from None
            if exc.code in RETRIED_STATUSES or 500 <= exc.code < 600:
                raise _RetryableError(f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After"))) from None
            raise FetchError(f"{path}: HTTP {exc.code} {exc.reason}") from None
        except TimeoutError as exc:
            raise _RetryableError(f"timed out after {self.timeout_s:g} s ({exc})") from None
        except urllib.error.URLError as exc:
            raise _RetryableError(f"cannot connect ({exc.reason})") from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise _RetryableError(f"connection failed ({exc!r})") from None
        assert isinstance(response, http.client.HTTPResponse)
        return response

    def _read_text(self, path: str) -> str:
        with self._open("GET", path) as response:
            try:
                body = response.read()
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                raise _RetryableError(f"reading failed ({exc!r})") from None
            charset = response.headers.get_content_charset() or "utf-8"
        return body.decode(charset, errors="replace")

    def probe(self) -> None:
        """Reach the site's root (two attempts); :class:`SourceError` if it cannot be reached."""
        attempts, self.attempts = self.attempts, min(self.attempts, PROBE_ATTEMPTS)
        try:
            self._attempt("the site's root", lambda: self._read_text(""))
        except NotFoundError:
            return
        except FetchError as exc:
            raise SourceError(f"cannot reach {self.base_url} ({exc})") from None
        finally:
            self.attempts = attempts

    def list(self, folder: str) -> list[ListingEntry]:
        """The folder's listing page, parsed (:func:`parse_listing`)."""
        folder = folder if folder.endswith("/") else folder + "/"
        html = self._attempt(folder, lambda: self._read_text(folder))
        return parse_listing(html, self.url(folder), self.base_url)

    def stat(self, path: str) -> SourceStat:
        """HEAD: Content-Length, ETag and Last-Modified."""

        def head() -> SourceStat:
            with self._open("HEAD", path) as response:
                return SourceStat(size=int(response.headers.get("Content-Length") or -1),
                                  etag=response.headers.get("ETag"),
                                  last_modified=response.headers.get("Last-Modified"))

        return self._attempt(path, head)

    def fetch(self, path: str, incoming: Path, cancelled: Cancelled | None = None) -> FetchedFile:
        """GET into a new file of ``incoming``, hashing as it goes; a short download is retried. ``cancelled``
        stops it between chunks (the partial file is removed)."""

        def download() -> FetchedFile:
            target = incoming / f"{secrets.token_hex(8)}.part"
            digest = hashlib.sha256()
            size = 0
            try:
                with self._open("GET", path) as response, open(target, "wb") as output:
                    expected = response.headers.get("Content-Length")
                    while True:
                        try:
                            chunk = response.read(CHUNK_BYTES)
                        except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                            raise _RetryableError(f"download interrupted after {size} bytes ({exc!r})") from None
                        if not chunk:
                            break
                        if cancelled is not None and cancelled():
                            raise FetchCancelledError(f"{path}: interrupted after {size} bytes")
                        digest.update(chunk)
                        output.write(chunk)
                        size += len(chunk)
                    if expected is not None and int(expected) != size:
                        raise _RetryableError(f"download incomplete: {size} of {expected} bytes")
                    stat = SourceStat(size=size, sha256=digest.hexdigest(), etag=response.headers.get("ETag"),
                                      last_modified=response.headers.get("Last-Modified"))
            except BaseException:
                target.unlink(missing_ok=True)
                raise
            return FetchedFile(path=target, stat=stat, temporary=True)

        return self._attempt(path, download, cancelled)


class FolderSource:
    """A local folder laid out like NEMWEB (e.g. the repository's ``data/nemweb``)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SourceError(f"{root}: no such folder")
        self.root = root

    @property
    def description(self) -> str:
        """The folder."""
        return str(self.root)

    def probe(self) -> None:
        """Nothing to reach: the folder exists (checked when created)."""

    def list(self, folder: str) -> list[ListingEntry]:
        """The folder's entries (``index.html`` listing pages left out)."""
        folder = folder if folder.endswith("/") else folder + "/"
        directory = self.root / folder
        if not directory.is_dir():
            raise NotFoundError(f"{folder}: no such folder in {self.root}")
        entries: list[ListingEntry] = []
        with os.scandir(directory) as scan:
            for entry in scan:
                if entry.name in LISTING_IGNORED or entry.name.startswith("."):
                    continue
                is_folder = entry.is_dir()
                entries.append(ListingEntry(name=entry.name, path=folder + entry.name + ("/" if is_folder else ""),
                                            is_folder=is_folder))
        return sorted(entries, key=lambda e: e.name)

    def stat(self, path: str) -> SourceStat:
        """Size and modification time of the file."""
        try:
            info = (self.root / path).stat()
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no such file in {self.root}") from None
        return SourceStat(size=info.st_size, last_modified=_http_date(info.st_mtime))

    def fetch(self, path: str, incoming: Path, cancelled: Cancelled | None = None) -> FetchedFile:
        """The file itself (no copy)."""
        stat = self.stat(path)
        return FetchedFile(path=self.root / path, stat=stat, temporary=False)


def open_source(text: str, *, timeout_s: float = 60.0, attempts: int = 5, backoff_s: float = 1.0) -> Source:
    """An :class:`HttpSource` for an ``http(s)://`` address, else a :class:`FolderSource` for a folder."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        return HttpSource(text, timeout_s=timeout_s, attempts=attempts, backoff_s=backoff_s)
    return FolderSource(Path(text).expanduser())


# -------------------------------------------------------------------------------------------------
# Sync


@dataclass(frozen=True)
class SyncRequest:
    """What to mirror: store ``tables``; archive ``months`` (first days; None: every month the source lists,
    within ``first_month`` … ``last_month`` where given); whether to take ``archives`` and ``current``
    reports, and from which current folders."""

    tables: tuple[str, ...] = TABLE_NAMES
    months: tuple[date, ...] | None = None
    first_month: date | None = None
    last_month: date | None = None
    archives: bool = True
    current: bool = True
    current_folders: tuple[str, ...] = ("P5_Reports", "Next_Day_Dispatch", "Daily_Reports",
                                        "Next_Day_Intermittent_Gen_Scada")
    archive_path: str = DEFAULT_ARCHIVE_PATH
    current_path: str = DEFAULT_CURRENT_PATH

    def __post_init__(self) -> None:
        for table in self.tables:
            schema_named(table)


@dataclass(frozen=True)
class FileFailure:
    """A file (or listing) that could not be synced, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class SyncEvent:
    """Progress of a sync: ``kind`` is ``planned`` (``total`` known), ``done``, ``skipped`` or ``failed``."""

    kind: str
    name: str
    completed: int
    total: int
    rows: int = 0
    bytes: int = 0
    status: IngestStatus | None = None
    reason: str | None = None


ProgressCallback = Callable[[SyncEvent], None]


@dataclass(frozen=True)
class SyncReport:
    """The outcome of a sync: files ingested (new or replaced), their rows and bytes, wall time (s), files
    skipped (unchanged or superseded), failures with reasons, and garbage removed at the start."""

    files: int
    rows: int
    bytes: int
    seconds: float
    skipped: int
    failed: tuple[FileFailure, ...] = ()
    planned: int = 0
    garbage_removed: int = 0
    ingested: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        """One line: files, rows, bytes, seconds; skipped; failed with reasons."""
        line = (f"synced {self.files} files ({self.rows:,} rows, {self.bytes / 1e6:.1f} MB) in {self.seconds:.1f} s; "
                f"skipped {self.skipped}; failed {len(self.failed)}")
        if self.failed:
            shown = "; ".join(f"{failure.name}: {failure.reason}" for failure in self.failed[:5])
            more = f"; … {len(self.failed) - 5} more" if len(self.failed) > 5 else ""
            line += f" ({shown}{more})"
        return line


@dataclass(frozen=True)
class ListedFile:
    """A file of a listing whose name is one of AEMO's: its name, path (relative to the source root) and
    parsed name."""

    name: str
    path: str
    parsed: AemoFileName


@dataclass(frozen=True)
class FetchOutcome:
    """What :func:`fetch_and_stage` did with one file: staged it (to be committed), or skipped it (why), and
    the bytes it downloaded."""

    candidate: ListedFile
    staged: StagedFile | None = None
    skipped: IngestStatus | None = None
    bytes: int = 0


def month_folder(archive_path: str, month: date) -> str:
    """The archive folder of one month's files (relative to the source root, ending in ``/``)."""
    return f"{archive_path.rstrip('/')}/" + MONTH_DATA_FOLDER.format(year=month.year, month=month.month)


def _listed_months(source: Source, archive_path: str) -> list[date]:
    """Every month the source's archive lists (year folders, then their MMSDM_YYYY_MM folders)."""
    months: list[date] = []
    root = archive_path.rstrip("/") + "/"
    for year in source.list(root):
        if not (year.is_folder and _YEAR_FOLDER.match(year.name)):
            continue
        for entry in source.list(year.path):
            match = _MONTH_FOLDER.match(entry.name)
            if entry.is_folder and match:
                months.append(date(int(match[1]), int(match[2]), 1))
    return sorted(months)


def _archive_candidates(entries: Sequence[ListingEntry], tables: frozenset[str]) -> list[ListedFile]:
    candidates: list[ListedFile] = []
    for entry in entries:
        if entry.is_folder:
            continue
        try:
            parsed = parse_file_name(entry.name)
        except FileNameError:
            continue
        schema = schema_for_archive(parsed.subject) if parsed.kind is FileKind.ARCHIVE else None
        if schema is not None and schema.name in tables:
            candidates.append(ListedFile(name=entry.name, path=entry.path, parsed=parsed))
    return candidates


def report_files(entries: Sequence[ListingEntry]) -> list[ListedFile]:
    """The current reports of a folder listing (files named like AEMO's reports; others left out)."""
    candidates: list[ListedFile] = []
    for entry in entries:
        if entry.is_folder:
            continue
        try:
            parsed = parse_file_name(entry.name)
        except FileNameError:
            continue
        if parsed.kind is FileKind.REPORT:
            candidates.append(ListedFile(name=entry.name, path=entry.path, parsed=parsed))
    return candidates


def newest_publications(candidates: Sequence[ListedFile]) -> list[ListedFile]:
    """One candidate per report identity: its newest publication (names sorted for a stable order)."""
    newest: dict[str, ListedFile] = {}
    for candidate in candidates:
        held = newest.get(candidate.parsed.identity)
        if held is None or candidate.parsed.publication_order > held.parsed.publication_order:
            newest[candidate.parsed.identity] = candidate
    return sorted(newest.values(), key=lambda c: c.path)


def _plan_sync(source: Source, request: SyncRequest, pool: ThreadPoolExecutor) -> tuple[list[ListedFile],
                                                                                        list[FileFailure]]:
    """The files to consider (newest publication per report) and the listings that failed."""
    tables = frozenset(schema_named(t).name for t in request.tables)
    failures: list[FileFailure] = []
    folders: list[tuple[str, str]] = []
    if request.archives:
        months = request.months
        if months is None and request.first_month is not None and request.last_month is not None:
            months = month_range(request.first_month, request.last_month)
        if months is None:
            try:
                months = tuple(month for month in _listed_months(source, request.archive_path)
                               if (request.first_month is None or month >= request.first_month)
                               and (request.last_month is None or month <= request.last_month))
            except FetchError as exc:
                failures.append(FileFailure(name=request.archive_path, reason=str(exc)))
                months = ()
        folders.extend(("archive", month_folder(request.archive_path, month)) for month in months)
    if request.current:
        for folder in request.current_folders:
            carried = CURRENT_FOLDER_TABLES.get(folder)
            if carried is None or carried & tables:
                folders.append(("current", f"{request.current_path.rstrip('/')}/{folder}/"))

    def listing(kind_and_folder: tuple[str, str]) -> tuple[str, str, list[ListingEntry] | FetchError]:
        kind, folder = kind_and_folder
        try:
            return kind, folder, source.list(folder)
        except FetchError as exc:
            return kind, folder, exc

    candidates: list[ListedFile] = []
    for kind, folder, result in pool.map(listing, folders):
        if isinstance(result, FetchError):
            reason = str(result)
            if kind == "archive" and isinstance(result, NotFoundError):
                reason = f"no monthly archive folder (not published?): {result}"
            failures.append(FileFailure(name=folder, reason=reason))
        elif kind == "archive":
            candidates.extend(_archive_candidates(result, tables))
        else:
            candidates.extend(report_files(result))
    return newest_publications(candidates), failures


def fetch_and_stage(store: MarketStore, source: Source, candidate: ListedFile, tables: tuple[str, ...],
                    incoming: Path, cancelled: Cancelled) -> FetchOutcome:
    """Fetch and stage one file unless it can be skipped (runs in a worker thread): skipped when a newer
    publication of its report is held, or when it is held with the same content. Raises the
    :mod:`aemo.errors` of a file that cannot be fetched or used (:class:`NotFoundError` for a 404)."""
    if cancelled():
        raise FetchCancelledError(f"{candidate.path}: interrupted")
    decided = store.decide(candidate.name, None, tables)
    if decided is IngestStatus.SUPERSEDED:
        return FetchOutcome(candidate=candidate, skipped=decided)
    if store.record(candidate.name) is not None:
        try:
            stat: SourceStat | None = source.stat(candidate.path)
        except NotFoundError:
            raise
        except FetchError:
            stat = None  # validators unavailable (HEAD refused or failing): decide on the content instead
        decided = store.decide(candidate.name, stat, tables)
        if decided is not None:
            return FetchOutcome(candidate=candidate, skipped=decided)
    fetched = source.fetch(candidate.path, incoming, cancelled)
    try:
        data = fetched.path.read_bytes()
    finally:
        if fetched.temporary:
            fetched.path.unlink(missing_ok=True)
    sha256 = fetched.stat.sha256 or hashlib.sha256(data).hexdigest()
    stat = SourceStat(size=len(data), sha256=sha256, etag=fetched.stat.etag, last_modified=fetched.stat.last_modified)
    if store.decide(candidate.name, stat, tables) is IngestStatus.UNCHANGED:
        store.touch(candidate.name, stat)
        return FetchOutcome(candidate=candidate, skipped=IngestStatus.UNCHANGED, bytes=len(data))
    return FetchOutcome(candidate=candidate, staged=store.stage(data, candidate.name, stat, tables=tables),
                    bytes=len(data))


def sync(store: MarketStore, source: Source, request: SyncRequest, *, workers: int = 4,
         progress: ProgressCallback | None = None) -> SyncReport:
    """Mirror ``request`` from ``source`` into ``store``; returns what was done (see the module docstring).

    ``progress`` is called on the calling thread for every event; an exception it raises (or Ctrl-C) stops
    the sync: downloads in flight stop at their next chunk, nothing more is committed, and the parts written
    for files not committed are removed. What was committed stays, so the next sync resumes from there.
    Raises :class:`SourceError` if the source cannot be reached at all, :class:`~aemo.store.StoreError`
    if another sync holds the store.
    """
    started = time.perf_counter()
    tables = tuple(schema_named(t).name for t in request.tables)
    with store.lock():
        garbage = store.collect_garbage()
        source.probe()
        incoming = store.incoming_dir()
        files = rows = size = skipped = completed = 0
        failures: list[FileFailure] = []
        ingested: list[str] = []
        interrupted = threading.Event()
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="nemweb")
        try:
            candidates, listing_failures = _plan_sync(source, request, pool)
            failures.extend(listing_failures)
            total = len(candidates)
            if progress is not None:
                progress(SyncEvent(kind="planned", name="", completed=0, total=total))
            pending: set[Future[FetchOutcome]] = set()
            futures: dict[Future[FetchOutcome], ListedFile] = {}
            for candidate in candidates:
                future = pool.submit(fetch_and_stage, store, source, candidate, tables, incoming, interrupted.is_set)
                futures[future] = candidate
                pending.add(future)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: futures[f].path):
                    candidate = futures[future]
                    completed += 1
                    event = commit_fetched(store, future, candidate, completed, total)
                    if event.kind == "done":
                        files += 1
                        rows += event.rows
                        size += event.bytes
                        ingested.append(candidate.name)
                    elif event.kind == "skipped":
                        skipped += 1
                    else:
                        failures.append(FileFailure(name=candidate.name, reason=event.reason or "failed"))
                    if progress is not None:
                        progress(event)
        except BaseException:
            interrupted.set()
            pool.shutdown(wait=True, cancel_futures=True)
            store.collect_garbage()
            raise
        pool.shutdown(wait=True)
    return SyncReport(files=files, rows=rows, bytes=size, seconds=time.perf_counter() - started, skipped=skipped,
                      failed=tuple(failures), planned=total, garbage_removed=garbage, ingested=tuple(ingested))


def commit_fetched(store: MarketStore, future: Future[FetchOutcome], candidate: ListedFile, completed: int,
                   total: int) -> SyncEvent:
    """Commit a finished :func:`fetch_and_stage` (on the calling thread) and describe what happened: ``done``,
    ``skipped`` or ``failed`` with the reason (a failure of one file never raises)."""
    try:
        outcome = future.result()
    except (AemoDataError, OSError) as exc:
        return SyncEvent(kind="failed", name=candidate.name, completed=completed, total=total, reason=str(exc))
    except Exception as exc:  # one file's unforeseen failure must not stop the others; its reason is reported
        return SyncEvent(kind="failed", name=candidate.name, completed=completed, total=total,
                         reason=f"unexpected {type(exc).__name__}: {exc}")
    if outcome.staged is None:
        return SyncEvent(kind="skipped", name=candidate.name, completed=completed, total=total,
                         status=outcome.skipped, bytes=outcome.bytes)
    result = store.commit(outcome.staged)
    if result.status is IngestStatus.SUPERSEDED:
        return SyncEvent(kind="skipped", name=candidate.name, completed=completed, total=total, status=result.status)
    return SyncEvent(kind="done", name=candidate.name, completed=completed, total=total, rows=result.rows,
                     bytes=outcome.bytes, status=result.status)


def describe_months(months: Collection[date] | None) -> str:
    """``YYYY-MM … YYYY-MM`` of a month selection (or ``every month listed``)."""
    if months is None:
        return "every month listed"
    ordered = sorted(months)
    if not ordered:
        return "no month"
    return month_label(ordered[0]) if len(ordered) == 1 else f"{month_label(ordered[0])} … {month_label(ordered[-1])}"
