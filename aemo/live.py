"""Follow AEMO's live reports: poll the ``Reports/Current`` folders, ingest each new file once, tell listeners.

AEMO publishes a DispatchIS report every 5 minutes, a PredispatchIS report every 30 minutes, a P5MIN
report every 5 minutes and the Next_Day_Dispatch report daily, each as a new file in its
``Reports/Current/<folder>/`` listing. :class:`LiveFollower` polls those listings every ``poll_s`` seconds
(one thread; listings fetched at once) and, for every report file it has not ingested, downloads it in a
bounded thread pool and commits it to the market store (:mod:`aemo.nemweb` does the download and staging,
:mod:`aemo.store` the commit: the same code as ``vpp data sync``). Listeners are told, on the follower's
thread, what became known: the file, its tables and rows, and its publication time (the report header's
creation time, else the publication stamp of its name; market time).

Rules:

- **Once.** A file whose name the store holds is never downloaded again (names of current reports are
  immutable: a re-publication is a new name). A file listed with several publications of one report is
  fetched in its newest only; an older publication listed after a newer one is held is skipped.
- **Re-published.** A newer publication of a report held (same report, newer stamp or sequence number)
  replaces the older one's rows (the store's rule), and listeners are told again.
- **Not yet downloadable.** A listed file that answers 404, fails after its retries, or cannot be read
  is tried again at a later poll: the next one after its first failure, then waiting twice as long after
  each further failure up to ``retry_max_s``; other files are never held up by it (downloads run in the
  pool and are committed as they finish, whatever the poll is doing).
- **Restart.** The store is the follower's memory: a restarted follower lists the folders, finds every
  file it had ingested in the store's manifest and downloads only the new ones.

While running, the follower holds the store's writer lock (``vpp data sync`` on the same store is refused
with a clear error until it stops).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aemo.nemweb import (
    CURRENT_FOLDER_TABLES,
    FetchError,
    FetchOutcome,
    FileFailure,
    ListedFile,
    NotFoundError,
    Source,
    commit_fetched,
    fetch_and_stage,
    newest_publications,
    report_files,
)
from aemo.store import IngestStatus, MarketStore
from aemo.tables import TABLE_NAMES

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class FollowerConfig:
    """What to follow and how: the ``Reports/Current`` folders under ``current_path``, polled every
    ``poll_s`` seconds; ``workers`` downloads at once; a failed file waits at most ``retry_max_s`` seconds
    before it is tried again."""

    folders: tuple[str, ...]
    current_path: str = "Reports/Current"
    poll_s: float = 5.0
    workers: int = 4
    retry_max_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.folders:
            raise ValueError("follow at least one Reports/Current folder")
        if not self.poll_s > 0:
            raise ValueError(f"poll_s must be > 0 seconds, got {self.poll_s}")

    def folder_path(self, folder: str) -> str:
        """The listing path of ``folder`` (relative to the source root, ending in ``/``)."""
        return f"{self.current_path.strip('/')}/{folder.strip('/')}/"

    def tables(self, folder: str) -> tuple[str, ...]:
        """The store tables taken from ``folder``'s reports (every table the store knows for other folders)."""
        return tuple(sorted(CURRENT_FOLDER_TABLES.get(folder, frozenset(TABLE_NAMES))))


@dataclass(frozen=True)
class IngestedFile:
    """A report the follower committed: its name, folder, report identity, publication time (naive AEST
    market time, None if neither header nor name carries one), INGESTED or REPLACED (a re-publication), the
    rows it gave each table, when the follower first saw it listed and committed it (the follower's clock,
    seconds), and the numbers of the poll that first listed it and of the last poll begun when it was
    committed (equal: it was served within the poll that found it)."""

    name: str
    folder: str
    identity: str
    published: datetime | None
    status: IngestStatus
    rows_by_table: tuple[tuple[str, int], ...]
    listed_at: float
    committed_at: float
    listed_poll: int
    committed_poll: int

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables that received rows."""
        return tuple(table for table, rows in self.rows_by_table if rows)


Listener = Callable[[Sequence[IngestedFile]], None]


@dataclass(frozen=True)
class FollowerStats:
    """Counters since the follower started: polls, files listed in the last poll, files ingested, files
    skipped (older publications), failed attempts, files waiting to be tried again, listing failures."""

    polls: int
    listed: int
    ingested: int
    skipped: int
    failed_attempts: int
    retrying: tuple[FileFailure, ...]
    listing_failures: int


@dataclass
class _Retry:
    failures: int
    not_before: float
    reason: str


@dataclass
class _Pending:
    file: ListedFile
    folder: str
    listed_at: float
    listed_poll: int


@dataclass
class _State:
    done: set[str] = field(default_factory=set)
    first_listed: dict[str, tuple[float, int]] = field(default_factory=dict)
    retries: dict[str, _Retry] = field(default_factory=dict)
    polls: int = 0
    listed: int = 0
    ingested: int = 0
    skipped: int = 0
    failed_attempts: int = 0
    listing_failures: int = 0


class LiveFollower:
    """Follows the ``Reports/Current`` folders of ``source`` into ``store`` (see the module docstring).

    ``start()`` runs it in a daemon thread until ``stop()``; ``step()`` runs one poll and settles what
    finished, on the calling thread (tests, benchmarks). ``clock`` (seconds, monotonic) times polls and
    retries.
    """

    def __init__(self, store: MarketStore, source: Source, config: FollowerConfig, *,
                 listeners: Sequence[Listener] = (), clock: Clock = time.monotonic) -> None:
        self.store = store
        self.source = source
        self.config = config
        self._listeners: list[Listener] = list(listeners)
        self._clock = clock
        self._state = _State()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wakeup: Future[None] = Future()
        self._pool: ThreadPoolExecutor | None = None
        self._lister: ThreadPoolExecutor | None = None
        self._in_flight: dict[Future[FetchOutcome], _Pending] = {}
        self._thread: threading.Thread | None = None
        self._held_lock = contextlib.ExitStack()
        self._incoming: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every batch of files committed from now on."""
        with self._lock:
            self._listeners.append(listener)

    def open(self) -> None:
        """Take the store's writer lock, remove left-overs of an interrupted ingest, start the pools.
        Raises :class:`aemo.store.StoreError` when another sync holds the store."""
        self._held_lock.enter_context(self.store.lock())
        removed = self.store.collect_garbage()
        if removed:
            log.info("removed %d left-over files of an interrupted ingest", removed)
        self._incoming = self.store.incoming_dir()
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.config.workers), thread_name_prefix="live-fetch")
        self._lister = ThreadPoolExecutor(max_workers=len(self.config.folders), thread_name_prefix="live-list")

    def close(self) -> None:
        """Stop downloads in flight (at their next chunk), shut the pools and release the store."""
        self._stopping.set()
        for pool in (self._pool, self._lister):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._lister = None
        self._in_flight.clear()
        with contextlib.suppress(Exception):
            self.store.collect_garbage()
        self._held_lock.close()

    def start(self) -> None:
        """:meth:`open`, then poll every ``poll_s`` seconds in a daemon thread until :meth:`stop`."""
        self.open()
        self._thread = threading.Thread(target=self._run, name="live-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (waiting up to ``timeout_s``) and :meth:`close`. Idempotent."""
        self._stopping.set()
        if not self._wakeup.done():
            self._wakeup.set_result(None)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._pool is not None:
            self.close()

    def __enter__(self) -> LiveFollower:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        next_poll = self._clock()
        while not self._stopping.is_set():
            if self._clock() >= next_poll:
                try:
                    self.poll()
                except Exception:  # a poll's unforeseen failure must not end following; the next poll retries
                    log.exception("live poll failed")
                next_poll = self._clock() + self.config.poll_s
            self.settle(max(0.0, next_poll - self._clock()))

    # -- one step -------------------------------------------------------------------------------------

    def step(self, wait_s: float = 0.0) -> list[IngestedFile]:
        """One poll, then commit what finishes within ``wait_s`` seconds (None: until the first finishes);
        returns the files committed."""
        self.poll()
        return self.settle(wait_s)

    def drain(self, timeout_s: float = 30.0) -> list[IngestedFile]:
        """Commit every download in flight (waiting up to ``timeout_s``); returns the files committed."""
        deadline = self._clock() + timeout_s
        committed: list[IngestedFile] = []
        while self._in_flight and self._clock() < deadline:
            committed.extend(self.settle(deadline - self._clock()))
        return committed

    def poll(self) -> None:
        """List every folder and start downloading each report not yet held, not in flight and not waiting
        to be tried again."""
        if self._pool is None or self._lister is None:
            raise RuntimeError("open the follower first")
        now = self._clock()
        folders = self.config.folders
        listings = list(self._lister.map(self._list, folders))
        state = self._state
        state.polls += 1
        poll = state.polls
        state.listed = sum(len(files) for files in listings)
        self._forget_unlisted({listed.name for files in listings for listed in files})
        in_flight = {pending.file.name for pending in self._in_flight.values()}
        fresh: list[tuple[str, ListedFile]] = []
        for folder, files in zip(folders, listings, strict=True):
            for listed in files:
                state.first_listed.setdefault(listed.name, (now, poll))
                retry = state.retries.get(listed.name)
                if listed.name in state.done or listed.name in in_flight or (retry and retry.not_before > now):
                    continue
                fresh.append((folder, listed))
        held = self.store.held([listed.name for _, listed in fresh])
        state.done.update(held)
        wanted = {listed.name for listed in newest_publications([f for _, f in fresh if f.name not in held])}
        assert self._incoming is not None
        for folder, listed in fresh:
            if listed.name not in wanted:
                continue
            future = self._pool.submit(fetch_and_stage, self.store, self.source, listed, self.config.tables(folder),
                                       self._incoming, self._stopping.is_set)
            listed_at, listed_poll = state.first_listed[listed.name]
            self._in_flight[future] = _Pending(file=listed, folder=folder, listed_at=listed_at, listed_poll=listed_poll)

    def _forget_unlisted(self, listed: set[str]) -> None:
        """Keep memory bounded: names no longer listed (AEMO rolls reports off) are forgotten (the store's
        manifest still says they are held, should they be listed again)."""
        state = self._state
        state.done.intersection_update(listed)
        for table in (state.first_listed, state.retries):
            for name in [name for name in table if name not in listed]:
                del table[name]

    def _list(self, folder: str) -> list[ListedFile]:
        try:
            return report_files(self.source.list(self.config.folder_path(folder)))
        except NotFoundError:
            return []  # a folder with nothing published yet
        except FetchError as exc:
            self._state.listing_failures += 1
            log.warning("listing %s failed: %s", folder, exc)
            return []

    def settle(self, wait_s: float | None) -> list[IngestedFile]:
        """Commit the downloads that finish within ``wait_s`` seconds (returns early on :meth:`stop`), tell
        the listeners, and schedule failed files for a later poll. Returns the files committed."""
        if not self._in_flight:
            if wait_s:
                self._stopping.wait(wait_s)
            return []
        waiting: list[Future[object]] = [*self._in_flight, self._wakeup]  # type: ignore[list-item]
        wait(waiting, timeout=wait_s, return_when=FIRST_COMPLETED)
        finished = [future for future in self._in_flight if future.done()]
        committed: list[IngestedFile] = []
        for future in sorted(finished, key=lambda f: self._in_flight[f].file.path):
            pending = self._in_flight.pop(future)
            ingested = self._commit(future, pending)
            if ingested is not None:
                committed.append(ingested)
        if committed:
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    listener(committed)
                except Exception:  # one listener's failure must not stop following
                    log.exception("live listener %r failed", listener)
        return committed

    def _commit(self, future: Future[FetchOutcome], pending: _Pending) -> IngestedFile | None:
        state = self._state
        name = pending.file.name
        event = commit_fetched(self.store, future, pending.file, 0, 0)
        if event.kind == "failed":
            if self._stopping.is_set():
                return None
            retry = state.retries.get(name)
            failures = 1 if retry is None else retry.failures + 1
            wait_s = 0.0 if failures == 1 else min(self.config.poll_s * 2 ** (failures - 1), self.config.retry_max_s)
            state.retries[name] = _Retry(failures=failures, not_before=self._clock() + wait_s,
                                         reason=event.reason or "failed")
            state.failed_attempts += 1
            log.info("%s not ingested (attempt %d): %s; trying again later", name, failures, event.reason)
            return None
        state.retries.pop(name, None)
        state.done.add(name)
        if event.kind == "skipped":
            state.skipped += 1
            return None
        record = self.store.record(name)
        state.ingested += 1
        rows = dict(self.store.rows_by_table(name))
        ingested = IngestedFile(
            name=name, folder=pending.folder, identity=pending.file.parsed.identity,
            published=record.published if record is not None else pending.file.parsed.published,
            status=event.status or IngestStatus.INGESTED, rows_by_table=tuple(sorted(rows.items())),
            listed_at=pending.listed_at, committed_at=self._clock(), listed_poll=pending.listed_poll,
            committed_poll=state.polls)
        log.info("live: %s %s (%s rows, published %s)", ingested.status.value, name,
                 ", ".join(f"{table} {count}" for table, count in ingested.rows_by_table) or "no",
                 ingested.published)
        return ingested

    # -- state ----------------------------------------------------------------------------------------

    def stats(self) -> FollowerStats:
        """The follower's counters (see :class:`FollowerStats`)."""
        state = self._state
        retrying = tuple(FileFailure(name=name, reason=retry.reason)
                         for name, retry in sorted(state.retries.items()))
        return FollowerStats(polls=state.polls, listed=state.listed, ingested=state.ingested, skipped=state.skipped,
                             failed_attempts=state.failed_attempts, retrying=retrying,
                             listing_failures=state.listing_failures)


__all__ = ["FollowerConfig", "FollowerStats", "IngestedFile", "Listener", "LiveFollower"]
