"""The local market store: AEMO tables as parquet files by table and month, with a manifest of sources.

Layout (under ``settings.market_store.store_dir(settings.stack.state_dir)``, by default
``<state_dir>/market/``)::

    manifest.sqlite                                   the manifest: ingested source files and their parts
    <TABLE>/<YYYY-MM>/<identity>~<sha256[:12]>.parquet  the rows one source file gave that table and month
    <TABLE>/all/…parquet                              single-partition tables (MARKET_PRICE_THRESHOLDS, …)

Why parquet (pyarrow): a bidder reads a few columns of one region over a period; a columnar, compressed,
typed file per table and month is read in milliseconds with only the columns and the region asked for
(predicate push-down), keeps AEMO's types (datetimes, float64 prices) without re-parsing text, is
readable by any tool (pandas, pyarrow, DuckDB, Spark), and partitions by month match AEMO's monthly
archives and the periods a backtest asks for.

Why one part per source file: a re-published file replaces exactly its own rows (its parts are swapped),
and ingesting one 5-minute report never rewrites a month. Rows of different sources with the same key
(a monthly archive and a Daily report, two publications) are resolved on reading: the newest publication
(the report's creation time, ``_published``) wins, so nothing is counted twice.

Why SQLite for the manifest: ingesting a file is one transaction (its source record and its parts), so an
interrupted sync (Ctrl-C, kill) leaves the store as it was before the file or after it, never between.
Part files are written under new names first; files the manifest does not list are invisible to readers
and removed by :meth:`MarketStore.collect_garbage`.

The manifest records each source file: name, identity (the name without its publication part), size,
sha256, ETag and Last-Modified (when the source gave them), publication time, rows, the tables taken
from it, and when it was ingested. A file whose name and content are already held is skipped; a newer
publication of the same report, or the same name with new content, replaces the older one's rows.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aemo.archive_files import AemoFileName, FileKind, parse_file_name, read_reports
from aemo.errors import AemoDataError, FileNameError
from aemo.mms_csv import DATETIME_DTYPE
from aemo.tables import (
    ALL_MONTHS,
    SCHEMAS,
    Partitioning,
    TableSchema,
    month_label,
    next_month,
    normalise,
    parse_month,
    partition_labels,
    schema_named,
    schemas_for,
)
from settings import Settings

MANIFEST_NAME = "manifest.sqlite"
LOCK_NAME = ".lock"
INCOMING_DIR = ".incoming"
PART_SUFFIX = ".parquet"
SOURCE_COLUMN = "_source"
PUBLISHED_COLUMN = "_published"
PROVENANCE_COLUMNS = (SOURCE_COLUMN, PUBLISHED_COLUMN)
_SECOND = np.timedelta64(1, "s")
_MANIFEST_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    publication_order INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    etag TEXT,
    last_modified TEXT,
    published TEXT,
    rows INTEGER NOT NULL,
    tables_ingested TEXT NOT NULL,
    tables_available TEXT NOT NULL,
    ingested_at TEXT NOT NULL,
    superseded_by TEXT
);
CREATE INDEX IF NOT EXISTS sources_identity ON sources(identity);
CREATE TABLE IF NOT EXISTS parts (
    path TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    source TEXT NOT NULL,
    table_name TEXT NOT NULL,
    month TEXT NOT NULL,
    rows INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS parts_table_month ON parts(table_name, month);
CREATE INDEX IF NOT EXISTS parts_identity ON parts(identity);
"""


class StoreError(AemoDataError):
    """The store cannot do what was asked (locked by another sync, unreadable part); the message says why."""


class IngestStatus(StrEnum):
    """What ingesting a source file did."""

    INGESTED = "ingested"
    REPLACED = "replaced"
    UNCHANGED = "unchanged"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class SourceStat:
    """What is known of a source file: size (bytes) and, where the source gives them, its hash and HTTP
    validators (ETag, Last-Modified as sent)."""

    size: int
    sha256: str | None = None
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class SourceRecord:
    """A source file the manifest holds. ``published``: the report's creation time (market time);
    ``ingested_at``: UTC; ``superseded_by``: the newer publication that replaced its rows, if any."""

    name: str
    identity: str
    publication_order: int
    size: int
    sha256: str
    etag: str | None
    last_modified: str | None
    published: datetime | None
    rows: int
    tables_ingested: frozenset[str]
    tables_available: frozenset[str]
    ingested_at: datetime
    superseded_by: str | None


@dataclass(frozen=True)
class StagedPart:
    """A part file written for one table and month (``path`` relative to the store), not yet committed."""

    table: str
    month: str
    path: str
    rows: int


@dataclass(frozen=True)
class StagedFile:
    """A parsed source file whose parts are written but not committed (see :meth:`MarketStore.commit`)."""

    name: str
    identity: str
    publication_order: int
    stat: SourceStat
    published: datetime | None
    parts: tuple[StagedPart, ...]
    tables_ingested: frozenset[str]
    tables_available: frozenset[str]

    @property
    def rows(self) -> int:
        """Rows written over every table and month."""
        return sum(part.rows for part in self.parts)


@dataclass(frozen=True)
class IngestResult:
    """The outcome of one source file: its status and the rows it gave each table."""

    name: str
    status: IngestStatus
    rows: int = 0
    rows_by_table: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Holding:
    """What the store holds of one table, month and region (None: the table has no region column):
    distinct keys (rows after resolving publications) and the first and last time (market time)."""

    table: str
    month: str
    region: str | None
    rows: int
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True)
class Gap:
    """A run of consecutive missing intervals (interval-ending market time, both ends included)."""

    table: str
    month: str
    region: str | None
    first_missing: datetime
    last_missing: datetime
    intervals: int
    interval_minutes: int


@dataclass(frozen=True)
class _Identity:
    name: str
    identity: str
    publication_order: int
    published: datetime | None


def _file_identity(name: str) -> _Identity:
    """Identity and publication order of a source file name (unknown names: the stem, order 0)."""
    try:
        parsed: AemoFileName | None = parse_file_name(name)
    except FileNameError:
        parsed = None
    if parsed is None:
        return _Identity(name=name, identity=name.rsplit(".", 1)[0], publication_order=0, published=None)
    return _Identity(name=name, identity=parsed.identity, publication_order=parsed.publication_order,
                     published=parsed.published if parsed.kind is FileKind.REPORT else None)


def _dedupe_newest(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per key: the row of the newest publication (``_published``; later rows win ties)."""
    if PUBLISHED_COLUMN in frame.columns:
        frame = frame.sort_values(PUBLISHED_COLUMN, kind="stable", na_position="first")
    return frame.drop_duplicates(list(keys), keep="last")


def _to_frame(table: pa.Table) -> pd.DataFrame:
    """A part read back as pandas, its timestamps in seconds again (parquet keeps them as milliseconds)."""
    fields = [pa.field(f.name, pa.timestamp("s")) if pa.types.is_timestamp(f.type) else f for f in table.schema]
    frame: pd.DataFrame = table.cast(pa.schema(fields)).to_pandas()
    return frame


def _timestamp_or_none(value: object) -> datetime | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    return None if pd.isna(stamp) else stamp.to_pydatetime()


def _missing_runs(present: np.ndarray, first: np.datetime64, last: np.datetime64,
                  step: np.timedelta64) -> list[tuple[np.datetime64, np.datetime64, int]]:
    """Runs of grid points first, first+step, …, last (datetime64[s]) absent from ``present``."""
    grid = np.arange(first, last + step, step)
    missing = grid[~np.isin(grid, present)]
    if missing.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(missing) != step) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks - 1, [missing.size - 1]))
    return [(missing[s], missing[e], int(e - s + 1)) for s, e in zip(starts, ends, strict=True)]


def interval_gaps(times: np.ndarray, month: date, interval_minutes: int) -> list[tuple[datetime, datetime, int]]:
    """Missing intervals of ``month`` among interval-ending ``times``, as (first, last, count) runs.

    The month's intervals end at month start + one interval … next month start (00:00 on the 1st belongs
    to the month before). ``times``: any datetime64 array (market time).
    """
    step = np.timedelta64(interval_minutes, "m").astype("timedelta64[s]")
    first = np.datetime64(month, "s") + step
    last = np.datetime64(next_month(month), "s")
    present = np.unique(np.asarray(times).astype("datetime64[s]"))
    return [(pd.Timestamp(a).to_pydatetime(), pd.Timestamp(b).to_pydatetime(), n)
            for a, b, n in _missing_runs(present, first, last, step)]


def months_for_period(schema: TableSchema, start: datetime | None, end: datetime | None,
                      held: Sequence[str]) -> list[str]:
    """The partitions (``YYYY-MM`` / ``all``) that may hold rows of ``schema`` with time in [start, end]."""
    if schema.partitioning is Partitioning.SINGLE:
        return [ALL_MONTHS]
    shift = timedelta(seconds=1) if schema.partitioning is Partitioning.INTERVAL_MONTH else timedelta(0)
    labels = [label for label in held if label != ALL_MONTHS]
    if start is not None:
        first = month_label(start - shift)
        labels = [label for label in labels if label >= first]
    if end is not None:
        last = month_label(end - shift)
        labels = [label for label in labels if label <= last]
    return labels


class MarketStore:
    """The local market store in folder ``root`` (created on first use). Safe to read from many threads;
    staging (:meth:`stage`) may run in worker threads, commits are serialised by SQLite."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(_MANIFEST_SCHEMA)

    @classmethod
    def from_settings(cls, settings: Settings) -> MarketStore:
        """The store of the configuration: ``market_store.folder`` under ``stack.state_dir``."""
        return cls(settings.market_store.store_dir(settings.stack.state_dir))

    # ---------------------------------------------------------------------------------------------
    # Manifest

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection to the manifest (SQLite connections are not shared between threads; one
        per thread is kept open, which also spares a WAL checkpoint at every close)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.root / MANIFEST_NAME, timeout=60.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.row_factory = sqlite3.Row
            self._local.connection = connection
        return connection

    @staticmethod
    def _record(row: sqlite3.Row) -> SourceRecord:
        return SourceRecord(
            name=row["name"], identity=row["identity"], publication_order=int(row["publication_order"]),
            size=int(row["size"]), sha256=row["sha256"], etag=row["etag"], last_modified=row["last_modified"],
            published=datetime.fromisoformat(row["published"]) if row["published"] else None,
            rows=int(row["rows"]),
            tables_ingested=frozenset(filter(None, row["tables_ingested"].split(","))),
            tables_available=frozenset(filter(None, row["tables_available"].split(","))),
            ingested_at=datetime.fromisoformat(row["ingested_at"]), superseded_by=row["superseded_by"])

    def record(self, name: str) -> SourceRecord | None:
        """The manifest's record of source file ``name``, or None."""
        connection = self._connection()
        row = connection.execute("SELECT * FROM sources WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._record(row)

    def records(self) -> list[SourceRecord]:
        """Every source file the manifest holds (superseded ones included), by name."""
        connection = self._connection()
        rows = connection.execute("SELECT * FROM sources ORDER BY name").fetchall()
        return [self._record(row) for row in rows]

    def current_reports(self, subjects: Collection[str], published_from: datetime | None = None) -> list[SourceRecord]:
        """Current reports (not superseded) whose file names' subject is one of ``subjects`` (``DISPATCHIS``,
        ``PREDISPATCHIS`` …), published at or after ``published_from`` (market time) where given; by
        publication time, then name."""
        wanted = frozenset(subjects)
        connection = self._connection()
        query = "SELECT * FROM sources WHERE superseded_by IS NULL"
        parameters: tuple[str, ...] = ()
        if published_from is not None:
            query += " AND published >= ?"
            parameters = (published_from.isoformat(),)
        records: list[SourceRecord] = []
        for row in connection.execute(query + " ORDER BY published, name", parameters).fetchall():
            try:
                parsed = parse_file_name(row["name"])
            except FileNameError:
                continue
            if parsed.kind is FileKind.REPORT and parsed.subject in wanted:
                records.append(self._record(row))
        return records

    def rows_by_table(self, name: str) -> list[tuple[str, int]]:
        """Rows per table that source file ``name`` gave the store (none once superseded), by table."""
        connection = self._connection()
        rows = connection.execute("SELECT table_name, SUM(rows) AS total FROM parts WHERE source = ? "
                                  "GROUP BY table_name ORDER BY table_name", (name,)).fetchall()
        return [(row["table_name"], int(row["total"])) for row in rows]

    def held(self, names: Collection[str]) -> frozenset[str]:
        """Those of ``names`` the manifest holds (current or superseded): files already ingested once."""
        connection = self._connection()
        found: set[str] = set()
        ordered = list(names)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start:start + 500]
            marks = ",".join("?" for _ in chunk)
            found.update(row["name"] for row in connection.execute(
                f"SELECT name FROM sources WHERE name IN ({marks})", chunk))
        return frozenset(found)

    def _current_of(self, connection: sqlite3.Connection, identity: str) -> SourceRecord | None:
        row = connection.execute("SELECT * FROM sources WHERE identity = ? AND superseded_by IS NULL "
                                 "ORDER BY publication_order DESC LIMIT 1", (identity,)).fetchone()
        return None if row is None else self._record(row)

    def decide(self, name: str, stat: SourceStat | None, tables: Collection[str] | None = None) -> IngestStatus | None:
        """Whether ``name`` can be skipped without fetching it: UNCHANGED (held, same size and validators or
        hash, and every requested table it carries taken), SUPERSEDED (a newer publication of the same
        report is held), or None (fetch it)."""
        identity = _file_identity(name)
        wanted = frozenset(tables) if tables is not None else frozenset(s.name for s in SCHEMAS)
        connection = self._connection()
        row = connection.execute("SELECT * FROM sources WHERE name = ?", (name,)).fetchone()
        current = self._current_of(connection, identity.identity)
        if current is not None and current.name != name and current.publication_order > identity.publication_order:
            return IngestStatus.SUPERSEDED
        if row is None:
            return None
        record = self._record(row)
        if record.superseded_by is not None:
            return IngestStatus.SUPERSEDED
        if not (wanted & record.tables_available) <= record.tables_ingested:
            return None
        if stat is None:
            return None
        if stat.size != record.size:
            return None
        if stat.sha256 is not None:
            return IngestStatus.UNCHANGED if stat.sha256 == record.sha256 else None
        if stat.etag is not None and record.etag is not None:
            return IngestStatus.UNCHANGED if stat.etag == record.etag else None
        if stat.last_modified is not None and record.last_modified is not None:
            return IngestStatus.UNCHANGED if stat.last_modified == record.last_modified else None
        return None

    # ---------------------------------------------------------------------------------------------
    # Ingesting

    def _part_path(self, table: str, month: str, identity: str, sha256: str) -> str:
        return f"{table}/{month}/{identity}~{sha256[:12]}{PART_SUFFIX}"

    def _write_part(self, frame: pd.DataFrame, relative: str) -> None:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f"{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), temporary, compression="zstd")
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def stage(self, data: bytes, name: str, stat: SourceStat | None = None, *,
              tables: Collection[str] | None = None) -> StagedFile:
        """Parse a source file (its bytes; a CSV or a zip) and write its parts, without committing them.

        ``tables``: the store tables to take (default: every table the store knows); tables already taken
        from an earlier ingest of this file are taken again, so a commit never loses them. Raises the
        :mod:`aemo.errors` of a file that cannot be used (corrupt zip, truncated CSV, missing column).
        """
        identity = _file_identity(name)
        sha256 = hashlib.sha256(data).hexdigest()
        stat = SourceStat(size=len(data), sha256=sha256, etag=stat.etag if stat else None,
                          last_modified=stat.last_modified if stat else None)
        requested = set(tables) if tables is not None else {schema.name for schema in SCHEMAS}
        previous = self.record(name)
        if previous is not None and previous.superseded_by is None:
            requested |= previous.tables_ingested
        selected = tuple(schema for schema in SCHEMAS if schema.name in requested)
        seen: set[tuple[str, str]] = set()

        def wanted(report_type: str, sub_type: str) -> bool:
            seen.add((report_type, sub_type))
            return any(schema.carries(report_type, sub_type) for schema in selected)

        reports = read_reports(data, name, wanted=wanted)
        available = frozenset(schema.name for pair in seen for schema in schemas_for(*pair))
        frames: dict[str, list[pd.DataFrame]] = {}
        published_times: list[datetime] = []
        for report in reports:
            published = report.header.created or identity.published
            if published is not None:
                published_times.append(published)
            for table in report.tables:
                for schema in schemas_for(table.report_type, table.sub_type):
                    if schema not in selected:
                        continue
                    frame = normalise(table, schema)
                    frame = frame.assign(**{
                        SOURCE_COLUMN: pd.Series(name, index=frame.index, dtype="str"),
                        PUBLISHED_COLUMN: pd.Series(pd.Timestamp(published) if published else pd.NaT,
                                                    index=frame.index, dtype=DATETIME_DTYPE)})
                    frames.setdefault(schema.name, []).append(frame)
        parts: list[StagedPart] = []
        for table_name, table_frames in frames.items():
            schema = schema_named(table_name)
            combined = table_frames[0] if len(table_frames) == 1 else pd.concat(table_frames, ignore_index=True)
            keys = schema.keys_in(combined.columns)
            combined = _dedupe_newest(combined, keys).sort_values(list(keys), kind="stable")
            if combined.empty:
                continue
            labels = partition_labels(combined, schema)
            for month, month_frame in combined.groupby(labels, sort=True):
                relative = self._part_path(table_name, str(month), identity.identity, sha256)
                self._write_part(month_frame.reset_index(drop=True), relative)
                parts.append(StagedPart(table=table_name, month=str(month), path=relative, rows=len(month_frame)))
        ingested = frozenset(schema.name for schema in selected if schema.name in available)
        return StagedFile(name=name, identity=identity.identity, publication_order=identity.publication_order,
                          stat=stat, published=max(published_times) if published_times else None,
                          parts=tuple(parts), tables_ingested=ingested, tables_available=available)

    def commit(self, staged: StagedFile) -> IngestResult:
        """Make a staged file's rows the store's, in one manifest transaction; then remove the part files of
        the publication it replaces. A staged file older than the publication held is dropped (SUPERSEDED)."""
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        staged_paths = {part.path for part in staged.parts}
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            current = self._current_of(connection, staged.identity)
            if (current is not None and current.name != staged.name
                    and current.publication_order > staged.publication_order):
                connection.execute("ROLLBACK")
                self._remove_unlisted(staged_paths)
                return IngestResult(name=staged.name, status=IngestStatus.SUPERSEDED)
            previous = connection.execute("SELECT * FROM sources WHERE name = ?", (staged.name,)).fetchone()
            old_paths = {row["path"] for row in connection.execute(
                "SELECT path FROM parts WHERE identity = ?", (staged.identity,))}
            connection.execute("DELETE FROM parts WHERE identity = ?", (staged.identity,))
            connection.execute("UPDATE sources SET superseded_by = ? WHERE identity = ? AND name != ? "
                               "AND superseded_by IS NULL", (staged.name, staged.identity, staged.name))
            connection.execute(
                "INSERT OR REPLACE INTO sources (name, identity, publication_order, size, sha256, etag, "
                "last_modified, published, rows, tables_ingested, tables_available, ingested_at, superseded_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (staged.name, staged.identity, staged.publication_order, staged.stat.size,
                 staged.stat.sha256 or "", staged.stat.etag, staged.stat.last_modified,
                 staged.published.isoformat() if staged.published else None, staged.rows,
                 ",".join(sorted(staged.tables_ingested)), ",".join(sorted(staged.tables_available)), now))
            seq = int(connection.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM parts").fetchone()[0])
            connection.executemany(
                "INSERT INTO parts (path, identity, source, table_name, month, rows, seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(part.path, staged.identity, staged.name, part.table, part.month, part.rows, seq)
                 for part in staged.parts])
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        self._remove_files(old_paths - staged_paths)
        status = IngestStatus.INGESTED if previous is None and not old_paths else IngestStatus.REPLACED
        by_table: dict[str, int] = {}
        for part in staged.parts:
            by_table[part.table] = by_table.get(part.table, 0) + part.rows
        return IngestResult(name=staged.name, status=status, rows=staged.rows,
                            rows_by_table=tuple(sorted(by_table.items())))

    def touch(self, name: str, stat: SourceStat) -> None:
        """Record new HTTP validators of a file whose content turned out unchanged (same hash)."""
        with self._connection() as connection:
            connection.execute("UPDATE sources SET etag = ?, last_modified = ? WHERE name = ?",
                               (stat.etag, stat.last_modified, name))

    def ingest_bytes(self, data: bytes, name: str, stat: SourceStat | None = None, *,
                     tables: Collection[str] | None = None) -> IngestResult:
        """Ingest one source file (bytes): skipped if held with the same content, else staged and committed."""
        sha256 = hashlib.sha256(data).hexdigest()
        full = SourceStat(size=len(data), sha256=sha256, etag=stat.etag if stat else None,
                          last_modified=stat.last_modified if stat else None)
        decided = self.decide(name, full, tables)
        if decided is not None:
            return IngestResult(name=name, status=decided)
        return self.commit(self.stage(data, name, full, tables=tables))

    def ingest_path(self, path: Path, *, tables: Collection[str] | None = None) -> IngestResult:
        """Ingest one source file on disk (CSV or zip), named by its file name."""
        return self.ingest_bytes(path.read_bytes(), path.name, tables=tables)

    def _remove_files(self, relative_paths: Collection[str]) -> None:
        for relative in relative_paths:
            (self.root / relative).unlink(missing_ok=True)

    def _remove_unlisted(self, relative_paths: Collection[str]) -> None:
        """Remove those of ``relative_paths`` the manifest does not list (a staged file that was not taken
        may share part names with the publication held when their contents are the same)."""
        connection = self._connection()
        listed = {row["path"] for path in relative_paths
                  for row in connection.execute("SELECT path FROM parts WHERE path = ?", (path,))}
        self._remove_files(set(relative_paths) - listed)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's writer lock (one sync at a time); :class:`StoreError` if another holds it."""
        with open(self.root / LOCK_NAME, "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{self.root}: another sync is writing to this store") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def incoming_dir(self) -> Path:
        """Where downloads are written until they are complete (emptied by :meth:`collect_garbage`)."""
        path = self.root / INCOMING_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    def collect_garbage(self) -> int:
        """Remove part files the manifest does not list (left by an interrupted sync) and partial downloads.
        Returns the number of files removed. Call it while holding :meth:`lock`."""
        connection = self._connection()
        listed = {row["path"] for row in connection.execute("SELECT path FROM parts")}
        removed = 0
        for schema in SCHEMAS:
            table_dir = self.root / schema.name
            if not table_dir.is_dir():
                continue
            for path in table_dir.rglob("*"):
                if path.is_file() and path.relative_to(self.root).as_posix() not in listed:
                    path.unlink(missing_ok=True)
                    removed += 1
        incoming = self.root / INCOMING_DIR
        if incoming.is_dir():
            removed += sum(1 for path in incoming.rglob("*") if path.is_file())
            shutil.rmtree(incoming, ignore_errors=True)
        return removed

    # ---------------------------------------------------------------------------------------------
    # Reading

    def months(self, table: str) -> list[str]:
        """The partitions (``YYYY-MM``, or ``all``) the store holds of ``table``, sorted."""
        schema = schema_named(table)
        connection = self._connection()
        rows = connection.execute("SELECT DISTINCT month FROM parts WHERE table_name = ? ORDER BY month",
                                  (schema.name,)).fetchall()
        return [row["month"] for row in rows]

    def tables(self) -> list[str]:
        """The tables the store holds rows of, sorted."""
        connection = self._connection()
        rows = connection.execute("SELECT DISTINCT table_name FROM parts ORDER BY table_name").fetchall()
        return [row["table_name"] for row in rows]

    def _part_paths(self, table: str, months: Sequence[str]) -> list[str]:
        if not months:
            return []
        marks = ",".join("?" for _ in months)
        connection = self._connection()
        rows = connection.execute(f"SELECT path FROM parts WHERE table_name = ? AND month IN ({marks}) "
                                  "ORDER BY seq, path", (table, *months)).fetchall()
        return [row["path"] for row in rows]

    def _read_parts(self, schema: TableSchema, paths: Sequence[str], columns: Sequence[str] | None,
                    filters: list[tuple[str, str, object]] | None) -> pd.DataFrame:
        frames: list[pd.DataFrame] = []
        for relative in paths:
            path = self.root / relative
            try:
                if columns is not None:
                    available = set(pq.read_schema(path).names)
                    selected: list[str] | None = [c for c in columns if c in available]
                    usable = [f for f in (filters or []) if f[0] in available]
                else:
                    selected, usable = None, list(filters or [])
                table = pq.read_table(path, columns=selected, filters=usable or None)
            except (OSError, pa.ArrowException) as exc:
                raise StoreError(f"{path}: unreadable part of {schema.name} ({exc})") from None
            frames.append(_to_frame(table))
        frames = [frame for frame in frames if not frame.empty]
        if not frames:
            return pd.DataFrame(columns=list(columns) if columns is not None else [])
        combined = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        if len(frames) > 1:
            combined = _dedupe_newest(combined, schema.keys_in(combined.columns))
        return combined

    def load(self, table: str, start: datetime | None = None, end: datetime | None = None, *,
             regions: Collection[str] | None = None, units: Collection[str] | None = None,
             columns: Sequence[str] | None = None, provenance: bool = False) -> pd.DataFrame:
        """Rows of ``table`` whose time column lies in [start, end] (market time; None: unbounded).

        ``regions`` / ``units`` filter on the table's REGIONID / DUID; ``columns`` selects columns (the key
        and time columns are always included). One row per key: where sources overlap, the newest
        publication's row. ``provenance`` keeps ``_source`` (file name) and ``_published``. Sorted by key.
        """
        schema = schema_named(table)
        months = months_for_period(schema, start, end, self.months(schema.name))
        filters: list[tuple[str, str, object]] = []
        if regions is not None and schema.region_column:
            filters.append((schema.region_column, "in", sorted(regions)))
        if units is not None and schema.unit_column:
            filters.append((schema.unit_column, "in", sorted(units)))
        wanted: list[str] | None = None
        if columns is not None:
            wanted = list(dict.fromkeys([*schema.key_columns, *schema.optional_key_columns,
                                         *([schema.time_column] if schema.time_column else []),
                                         *columns, *PROVENANCE_COLUMNS]))
        frame = self._read_parts(schema, self._part_paths(schema.name, months), wanted, filters)
        if frame.empty:
            return frame.drop(columns=[c for c in PROVENANCE_COLUMNS if c in frame.columns and not provenance])
        if schema.time_column and (start is not None or end is not None):
            times = frame[schema.time_column]
            keep = pd.Series(True, index=frame.index)
            if start is not None:
                keep &= times >= pd.Timestamp(start)
            if end is not None:
                keep &= times <= pd.Timestamp(end)
            frame = frame[keep]
        frame = frame.sort_values(list(schema.keys_in(frame.columns)), kind="stable").reset_index(drop=True)
        if not provenance:
            frame = frame.drop(columns=[c for c in PROVENANCE_COLUMNS if c in frame.columns])
        return frame

    def load_sources(self, table: str, names: Collection[str], *,
                     columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows of ``table`` that the source files ``names`` gave (those the store holds and that are not
        superseded), with their provenance (``_source``, ``_published``); one row per key, the newest
        publication's. ``columns`` selects columns (key, time and provenance columns always included)."""
        schema = schema_named(table)
        ordered = sorted(set(names))
        connection = self._connection()
        paths: list[str] = []
        for start in range(0, len(ordered), 500):
            chunk = ordered[start:start + 500]
            marks = ",".join("?" for _ in chunk)
            paths.extend(row["path"] for row in connection.execute(
                f"SELECT path FROM parts WHERE table_name = ? AND source IN ({marks}) ORDER BY seq, path",
                (schema.name, *chunk)))
        wanted: list[str] | None = None
        if columns is not None:
            wanted = list(dict.fromkeys([*schema.key_columns, *schema.optional_key_columns,
                                         *([schema.time_column] if schema.time_column else []),
                                         *columns, *PROVENANCE_COLUMNS]))
        frame = self._read_parts(schema, paths, wanted, None)
        if frame.empty:
            return frame
        return frame.sort_values(list(schema.keys_in(frame.columns)), kind="stable").reset_index(drop=True)

    def load_month(self, table: str, month: date | str, *, regions: Collection[str] | None = None,
                   columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One monthly partition of ``table`` (``month``: a date or ``YYYY-MM``), optionally some regions."""
        schema = schema_named(table)
        label = month if isinstance(month, str) else month_label(month)
        if label != ALL_MONTHS:
            parse_month(label)
        filters: list[tuple[str, str, object]] = []
        if regions is not None and schema.region_column:
            filters.append((schema.region_column, "in", sorted(regions)))
        frame = self._read_parts(schema, self._part_paths(schema.name, [label]), None if columns is None else list(
            dict.fromkeys([*schema.key_columns, *schema.optional_key_columns, *columns, *PROVENANCE_COLUMNS])),
            filters)
        if frame.empty:
            return frame
        frame = frame.sort_values(list(schema.keys_in(frame.columns)), kind="stable").reset_index(drop=True)
        return frame.drop(columns=[c for c in PROVENANCE_COLUMNS if c in frame.columns])

    def _month_frame(self, schema: TableSchema, month: str) -> pd.DataFrame:
        """Key, time and region columns of one partition, one row per key."""
        columns = list(dict.fromkeys([*schema.key_columns, *schema.optional_key_columns,
                                      *([schema.time_column] if schema.time_column else []),
                                      *([schema.region_column] if schema.region_column else []),
                                      *PROVENANCE_COLUMNS]))
        return self._read_parts(schema, self._part_paths(schema.name, [month]), columns, None)

    def _selected(self, tables: Collection[str] | None) -> list[TableSchema]:
        if tables is None:
            return [schema_named(name) for name in self.tables()]
        return [schema_named(name) for name in tables]

    def holdings(self, tables: Collection[str] | None = None,
                 months: Collection[date] | None = None) -> list[Holding]:
        """What the store holds: table × month × region, rows (distinct keys) and first / last time."""
        wanted_months = None if months is None else {month_label(month) for month in months}
        result: list[Holding] = []
        for schema in self._selected(tables):
            for month in self.months(schema.name):
                if wanted_months is not None and month != ALL_MONTHS and month not in wanted_months:
                    continue
                frame = self._month_frame(schema, month)
                if frame.empty:
                    continue
                result.extend(self._holding_rows(schema, month, frame))
        return result

    @staticmethod
    def _holding_rows(schema: TableSchema, month: str, frame: pd.DataFrame) -> list[Holding]:
        time = schema.time_column
        if schema.region_column is None:
            groups: list[tuple[str | None, pd.DataFrame]] = [(None, frame)]
        else:
            groups = [(str(region), group) for region, group in frame.groupby(schema.region_column, sort=True)]
        rows: list[Holding] = []
        for region, group in groups:
            first = _timestamp_or_none(group[time].min()) if time else None
            last = _timestamp_or_none(group[time].max()) if time else None
            rows.append(Holding(table=schema.name, month=month, region=region, rows=len(group), first=first,
                                last=last))
        return rows

    def gaps(self, tables: Collection[str] | None = None, months: Collection[date] | None = None,
             regions: Collection[str] | None = None) -> list[Gap]:
        """Missing intervals per table, month and region, as runs (interval tables only).

        ``months``: the months to check (default: every month the store holds of each table); a month with
        no data at all is one gap over the whole month for each region the table has elsewhere.
        ``regions``: the regions checked (default: those the table holds). Tables without a region column
        are checked for intervals with no row at all (any unit).
        """
        result: list[Gap] = []
        for schema in self._selected(tables):
            if schema.gap_minutes is None or schema.time_column is None:
                continue
            held = [label for label in self.months(schema.name) if label != ALL_MONTHS]
            checked = sorted({month_label(m) for m in months}) if months is not None else held
            frames = {label: self._month_frame(schema, label) for label in checked if label in held}
            table_regions = self._table_regions(schema, frames.values(), regions)
            for label in checked:
                month = parse_month(label)
                minutes = schema.interval_minutes(month)
                assert minutes is not None
                frame = frames.get(label)
                for region in table_regions:
                    if frame is None or frame.empty:
                        times = np.array([], dtype="datetime64[s]")
                    elif region is None or schema.region_column is None:
                        times = frame[schema.time_column].to_numpy()
                    else:
                        times = frame.loc[frame[schema.region_column] == region, schema.time_column].to_numpy()
                    for first, last, count in interval_gaps(times, month, minutes):
                        result.append(Gap(table=schema.name, month=label, region=region, first_missing=first,
                                          last_missing=last, intervals=count, interval_minutes=minutes))
        return result

    def _table_regions(self, schema: TableSchema, frames: Iterator[pd.DataFrame] | Collection[pd.DataFrame],
                       regions: Collection[str] | None) -> list[str | None]:
        if schema.region_column is None:
            return [None]
        if regions is not None:
            return list(sorted(regions))
        found: set[str] = set()
        for frame in frames:
            if not frame.empty:
                found.update(str(region) for region in frame[schema.region_column].dropna().unique())
        if not found:
            for month in self.months(schema.name):
                frame = self._month_frame(schema, month)
                if not frame.empty:
                    found.update(str(region) for region in frame[schema.region_column].dropna().unique())
        return list(sorted(found)) if found else [None]


@dataclass(frozen=True)
class StoreSummary:
    """Totals of a store: source files, parts, rows written (before resolving overlaps), bytes on disk."""

    sources: int
    parts: int
    rows: int
    bytes_on_disk: int
    tables: tuple[str, ...] = field(default_factory=tuple)


def summarise(store: MarketStore) -> StoreSummary:
    """Totals of ``store`` from its manifest and its part files."""
    connection = store._connection()
    sources = int(connection.execute("SELECT COUNT(*) FROM sources WHERE superseded_by IS NULL").fetchone()[0])
    parts = connection.execute("SELECT path, rows FROM parts").fetchall()
    size = sum((store.root / row["path"]).stat().st_size for row in parts if (store.root / row["path"]).exists())
    return StoreSummary(sources=sources, parts=len(parts), rows=sum(int(row["rows"]) for row in parts),
                        bytes_on_disk=size, tables=tuple(store.tables()))


def month_starts(labels: Sequence[str]) -> list[date]:
    """First days of ``YYYY-MM`` labels (``all`` skipped)."""
    return [parse_month(label) for label in labels if label != ALL_MONTHS]


__all__ = [
    "Gap",
    "Holding",
    "IngestResult",
    "IngestStatus",
    "MarketStore",
    "SourceRecord",
    "SourceStat",
    "StagedFile",
    "StagedPart",
    "StoreError",
    "StoreSummary",
    "interval_gaps",
    "month_starts",
    "months_for_period",
    "summarise",
]
