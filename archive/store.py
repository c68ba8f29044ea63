"""Immutable, content-addressed archive of every worker request and result (protobuf).

Every archived item is a ``google.protobuf.Any`` packing the message; its key is ``"sha256:<hex>"`` of
the Any's deterministic serialisation, so the same message always has the same key and an object,
once written, is never rewritten. A cycle index (one JSON-lines file per cycle) records which objects
a cycle produced, in order, under a label such as ``"forecast-request/ENERGY"``.

Layout (identical on disk and in S3, below the archive root / prefix)::

    objects/sha256/ab/cdef...      the Any's bytes (first two hex digits, then the rest)
    cycles/<quoted cycle id>.jsonl one JSON object per line: sequence, recorded_at, label, key, type_name

Pure helpers (:func:`pack`, :func:`archive_key`, :func:`unpack`, :func:`object_path`, ...) carry the
logic; :class:`LocalArchive` and :class:`S3Archive` are thin storage adapters.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote

from botocore.exceptions import ClientError
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from algorithms.common.content_hash import sha256_hex
from settings import Settings

# Imported for their side effect: the vpp.v1 message types are registered in the default descriptor
# pool, so archived objects can be decoded to their generated classes.
from vpp.v1 import bid_pb2, common_pb2, market_data_pb2, worker_pb2  # noqa: F401

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

KEY_PREFIX = "sha256:"
_KEY_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
INDEX_SUFFIX = ".jsonl"
# File and S3 key segments are limited to 255 bytes; the quoted cycle id plus ".jsonl" must fit.
MAX_INDEX_NAME_BYTES = 255
# Optimistic-concurrency attempts when appending to an S3 cycle index another process also writes.
S3_INDEX_WRITE_ATTEMPTS = 20


class ArchiveError(Exception):
    """Base class of archive failures."""


class ArchiveNotFoundError(ArchiveError, KeyError):
    """No object is archived under the key."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "archive object not found"


class ArchiveCorruptError(ArchiveError):
    """An archived object's bytes do not hash to its key, or cannot be decoded."""


class InvalidArchiveKeyError(ArchiveError, ValueError):
    """A key that is not of the form ``"sha256:<64 lower-case hex digits>"``."""


@dataclass(frozen=True)
class ArchiveEntry:
    """One index record of a cycle: ``key`` (of type ``type_name``) was archived as ``label``.

    ``recorded_at`` is the UTC time the entry was recorded (timezone-aware).
    """

    cycle_id: str
    label: str
    key: str
    type_name: str
    recorded_at: datetime


class Archive(Protocol):
    """An immutable, content-addressed store of protobuf messages with a per-cycle index."""

    def put(self, message: Message, *, cycle_id: str | None = None, label: str = "") -> str:
        """Archive ``message`` (once) and, if ``cycle_id`` is given, index it; returns its key."""
        ...

    def put_all(self, messages: Sequence[tuple[Message, str]], *, cycle_id: str) -> list[str]:
        """Archive each ``(message, label)`` (once) and index them under ``cycle_id`` in order with one index
        write; their keys."""
        ...

    def get(self, key: str) -> Message:
        """The message archived under ``key``, decoded to its generated class and hash-checked."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The hash-checked serialised ``Any`` archived under ``key``."""
        ...

    def list_cycle(self, cycle_id: str) -> list[ArchiveEntry]:
        """The index entries of ``cycle_id`` in the order they were recorded (empty if none)."""
        ...

    def list_cycles(self) -> list[str]:
        """Every cycle id with at least one index entry, sorted."""
        ...


# ---------------------------------------------------------------------------------------------------
# Pure helpers


def pack(message: Message) -> any_pb2.Any:
    """``message`` packed deterministically into an ``Any`` (type URL ``type.googleapis.com/<name>``)."""
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def packed_bytes(message: Message) -> bytes:
    """The deterministic serialisation of ``message`` packed in an ``Any``: the archived bytes."""
    return pack(message).SerializeToString(deterministic=True)


def key_for_bytes(archived: bytes) -> str:
    """The archive key (``"sha256:<hex>"``) of archived bytes."""
    return KEY_PREFIX + sha256_hex(archived)


def archive_key(message: Message) -> str:
    """The archive key ``message`` is (or would be) stored under."""
    return key_for_bytes(packed_bytes(message))


def validate_key(key: str) -> str:
    """The hex digest of ``key``; :class:`InvalidArchiveKeyError` if it is not ``"sha256:<64 hex>"``."""
    if not isinstance(key, str) or not _KEY_PATTERN.match(key):
        raise InvalidArchiveKeyError(
            f"invalid archive key {key!r}: expected 'sha256:' and 64 lower-case hex digits")
    return key[len(KEY_PREFIX):]


def object_path(key: str) -> str:
    """Relative path of the object with ``key``: ``objects/sha256/ab/cdef...``."""
    digest = validate_key(key)
    return f"objects/sha256/{digest[:2]}/{digest[2:]}"


def index_name(cycle_id: str) -> str:
    """File name of the index of ``cycle_id`` (percent-quoted so any id is one safe path segment)."""
    if not cycle_id:
        raise ValueError("cycle_id must not be empty")
    name = quote(cycle_id, safe="") + INDEX_SUFFIX
    if len(name.encode()) > MAX_INDEX_NAME_BYTES:
        raise ValueError(f"cycle_id {cycle_id[:40]!r}... is too long for an index name "
                         f"({len(name.encode())} > {MAX_INDEX_NAME_BYTES} bytes once quoted)")
    return name


def index_path(cycle_id: str) -> str:
    """Relative path of the index of ``cycle_id``: ``cycles/<quoted id>.jsonl``."""
    return f"cycles/{index_name(cycle_id)}"


def cycle_id_from_index_name(name: str) -> str | None:
    """The cycle id an index file name stands for, or ``None`` if ``name`` is not an index file."""
    if not name.endswith(INDEX_SUFFIX) or len(name) == len(INDEX_SUFFIX):
        return None
    return unquote(name[: -len(INDEX_SUFFIX)])


def unpack(archived: bytes, key: str) -> Message:
    """Decode archived bytes to the generated class of the packed message, checking them against ``key``.

    Raises :class:`ArchiveCorruptError` when the bytes do not hash to ``key``, are not an ``Any``, or
    pack a type this process does not know.
    """
    check_bytes(archived, key)
    try:
        packed = any_pb2.Any.FromString(archived)
    except DecodeError as exc:
        raise ArchiveCorruptError(f"archive object {key} is not a serialised Any: {exc}") from exc
    type_name = packed.TypeName()
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError as exc:
        raise ArchiveCorruptError(f"archive object {key} packs unknown message type {type_name!r}") from exc
    message = message_factory.GetMessageClass(descriptor)()
    if not packed.Unpack(message):
        raise ArchiveCorruptError(f"archive object {key} could not be unpacked as {type_name}")
    return message


def check_bytes(archived: bytes, key: str) -> None:
    """Raise :class:`ArchiveCorruptError` unless ``archived`` hashes to ``key``."""
    validate_key(key)
    actual = key_for_bytes(archived)
    if actual != key:
        raise ArchiveCorruptError(f"archive object {key} is corrupt: its bytes hash to {actual}")


def index_line(sequence: int, entry: ArchiveEntry) -> str:
    """One JSON-lines record (with trailing newline) of ``entry`` at position ``sequence`` of its cycle."""
    record = {
        "sequence": sequence,
        "recorded_at": entry.recorded_at.isoformat(),
        "cycle_id": entry.cycle_id,
        "label": entry.label,
        "key": entry.key,
        "type_name": entry.type_name,
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"


def parse_index(cycle_id: str, text: str) -> list[ArchiveEntry]:
    """The entries of a cycle index file, in order; :class:`ArchiveCorruptError` on a malformed line."""
    entries: list[ArchiveEntry] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record: dict[str, Any] = json.loads(line)
            entries.append(ArchiveEntry(
                cycle_id=str(record.get("cycle_id", cycle_id)),
                label=str(record["label"]),
                key=str(record["key"]),
                type_name=str(record["type_name"]),
                recorded_at=datetime.fromisoformat(str(record["recorded_at"])),
            ))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveCorruptError(f"index of cycle {cycle_id!r}, line {line_number}: {exc!r}") from exc
    return entries


def append_entry(existing_text: str, entry: ArchiveEntry) -> str | None:
    """The index text with ``entry`` appended, or ``None`` if the cycle already lists this label and key.

    Recording the same (label, key) twice is a no-op, so a retried step does not duplicate entries.
    """
    return append_entries(existing_text, [entry])


def append_entries(existing_text: str, new_entries: Sequence[ArchiveEntry]) -> str | None:
    """The index text with ``new_entries`` appended in order (those whose label and key the cycle already
    lists, or an earlier one of ``new_entries`` does, left out), or ``None`` if there is nothing to append."""
    if not new_entries:
        return None
    entries = parse_index(new_entries[0].cycle_id, existing_text)
    listed = {(e.label, e.key) for e in entries}
    lines: list[str] = []
    for entry in new_entries:
        if (entry.label, entry.key) in listed:
            continue
        listed.add((entry.label, entry.key))
        lines.append(index_line(len(entries) + len(lines), entry))
    if not lines:
        return None
    prefix = existing_text if not existing_text or existing_text.endswith("\n") else existing_text + "\n"
    return prefix + "".join(lines)


def utc_now() -> datetime:
    """The current UTC time (timezone-aware)."""
    return datetime.now(UTC)


class _ContentAddressedArchive:
    """What both backends share: objects keyed by the hash of their packed bytes, written once
    (:meth:`_write_object`), and a per-cycle index appended with a batch of entries (:meth:`_record`)."""

    _clock: Callable[[], datetime]

    def _write_object(self, key: str, archived: bytes) -> None:
        raise NotImplementedError

    def _record(self, entries: Sequence[ArchiveEntry]) -> None:
        raise NotImplementedError

    def _write_objects(self, objects: Sequence[tuple[str, bytes]]) -> None:
        """Write each ``(key, archived bytes)`` (once); every one is durable when this returns."""
        for key, archived in objects:
            self._write_object(key, archived)

    def put(self, message: Message, *, cycle_id: str | None = None, label: str = "") -> str:
        """Archive ``message`` (once) and, if ``cycle_id`` is given, index it under ``label``; its key."""
        if cycle_id is not None:
            return self.put_all([(message, label)], cycle_id=cycle_id)[0]
        archived = packed_bytes(message)
        key = key_for_bytes(archived)
        self._write_object(key, archived)
        return key

    def put_all(self, messages: Sequence[tuple[Message, str]], *, cycle_id: str) -> list[str]:
        """Archive each ``(message, label)`` (once) and index them under ``cycle_id`` in order with one index
        write; their keys."""
        entries: list[ArchiveEntry] = []
        objects: list[tuple[str, bytes]] = []
        for message, label in messages:
            archived = packed_bytes(message)
            key = key_for_bytes(archived)
            objects.append((key, archived))
            entries.append(ArchiveEntry(cycle_id, label, key, message.DESCRIPTOR.full_name, self._clock()))
        self._write_objects(objects)  # every object durable before the index names it
        self._record(entries)
        return [entry.key for entry in entries]


# ---------------------------------------------------------------------------------------------------
# Local folder backend


class LocalArchive(_ContentAddressedArchive):
    """An archive in a local folder ``root`` (created on first write).

    Objects are written through a temporary file and ``os.replace``; the cycle index is rewritten the
    same way under an exclusive ``flock`` on a lock file beside it, so concurrent processes on one host
    never lose an entry.
    """

    def __init__(self, root: Path, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.root = Path(root)
        self._clock = clock

    def _write_object(self, key: str, archived: bytes) -> None:
        target = self.root / object_path(key)
        if not target.exists():
            _atomic_write(target, archived)

    def _write_objects(self, objects: Sequence[tuple[str, bytes]]) -> None:
        """Write the objects not yet written, each through its own fsync'd temporary file as :meth:`put` does,
        several at once (LOCAL_WRITE_THREADS): the disk commits concurrent fsyncs together, so a batch (a
        cycle's nine forecast requests) waits for about one commit instead of one per object. Every object is
        durable when this returns; once every write has ended, the first failure is raised."""
        missing = {key: archived for key, archived in objects if not (self.root / object_path(key)).exists()}
        if len(missing) <= 1:
            for key, archived in missing.items():
                _atomic_write(self.root / object_path(key), archived)
            return
        writer = _local_writer()
        writes = [writer.submit(_atomic_write, self.root / object_path(key), archived)
                  for key, archived in missing.items()]
        concurrent.futures.wait(writes)  # every write finished (or failed) before anything is raised
        for write in writes:
            write.result()

    def get_bytes(self, key: str) -> bytes:
        """The hash-checked serialised ``Any`` under ``key`` (:class:`ArchiveNotFoundError` if absent)."""
        target = self.root / object_path(key)
        try:
            archived = target.read_bytes()
        except FileNotFoundError as exc:
            raise ArchiveNotFoundError(f"no archive object {key} in {self.root}") from exc
        check_bytes(archived, key)
        return archived

    def get(self, key: str) -> Message:
        """The message archived under ``key``, decoded to its generated class."""
        return unpack(self.get_bytes(key), key)

    def list_cycle(self, cycle_id: str) -> list[ArchiveEntry]:
        """The index entries of ``cycle_id`` in recording order (empty if the cycle has none)."""
        path = self.root / index_path(cycle_id)
        try:
            return parse_index(cycle_id, path.read_text())
        except FileNotFoundError:
            return []

    def list_cycles(self) -> list[str]:
        """Every cycle id with an index, sorted."""
        folder = self.root / "cycles"
        if not folder.is_dir():
            return []
        ids = (cycle_id_from_index_name(p.name) for p in folder.iterdir() if p.is_file())
        return sorted(i for i in ids if i is not None)

    def _record(self, entries: Sequence[ArchiveEntry]) -> None:
        if not entries:
            return
        path = self.root / index_path(entries[0].cycle_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_name(path.name + ".lock")):
            existing = path.read_text() if path.exists() else ""
            updated = append_entries(existing, entries)
            if updated is not None:
                _atomic_write(path, updated.encode())


# Objects of one put_all written (and fsync'd) at once by a LocalArchive, per process.
LOCAL_WRITE_THREADS = 8
_writer: ThreadPoolExecutor | None = None
_writer_lock = threading.Lock()


def _local_writer() -> ThreadPoolExecutor:
    """The process's pool of LOCAL_WRITE_THREADS threads writing a batch's objects."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(max_workers=LOCAL_WRITE_THREADS, thread_name_prefix="archive-write")
        return _writer


def _atomic_write(target: Path, content: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------------
# S3 backend


class S3Archive(_ContentAddressedArchive):
    """An archive in an S3 bucket below ``prefix`` (same layout as :class:`LocalArchive`).

    Objects are written with ``If-None-Match: *`` (never overwritten). The cycle index is appended by
    read-modify-write guarded with ``If-Match`` on the ETag (``If-None-Match`` when creating it), retried
    on a conflict, so concurrent writers never lose an entry.
    """

    def __init__(self, client: S3Client, bucket: str, prefix: str = "", *,
                 clock: Callable[[], datetime] = utc_now) -> None:
        if not bucket:
            raise ValueError("S3Archive needs a bucket name")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._clock = clock

    def _object_key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _write_object(self, key: str, archived: bytes) -> None:
        s3_key = self._object_key(object_path(key))
        try:
            self.client.put_object(Bucket=self.bucket, Key=s3_key, Body=archived, IfNoneMatch="*",
                                   ContentType="application/x-protobuf")
        except ClientError as exc:
            if _error_code(exc) not in {"PreconditionFailed", "ConditionalRequestConflict"}:
                raise

    def get_bytes(self, key: str) -> bytes:
        """The hash-checked serialised ``Any`` under ``key`` (:class:`ArchiveNotFoundError` if absent)."""
        s3_key = self._object_key(object_path(key))
        found = self._read(s3_key)
        if found is None:
            raise ArchiveNotFoundError(f"no archive object {key} in s3://{self.bucket}/{s3_key}")
        archived, _ = found
        check_bytes(archived, key)
        return archived

    def get(self, key: str) -> Message:
        """The message archived under ``key``, decoded to its generated class."""
        return unpack(self.get_bytes(key), key)

    def list_cycle(self, cycle_id: str) -> list[ArchiveEntry]:
        """The index entries of ``cycle_id`` in recording order (empty if the cycle has none)."""
        found = self._read(self._object_key(index_path(cycle_id)))
        return [] if found is None else parse_index(cycle_id, found[0].decode())

    def list_cycles(self) -> list[str]:
        """Every cycle id with an index, sorted."""
        folder = self._object_key("cycles/")
        paginator = self.client.get_paginator("list_objects_v2")
        ids: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
            for item in page.get("Contents", []):
                name = item["Key"][len(folder):]
                cycle_id = None if "/" in name else cycle_id_from_index_name(name)
                if cycle_id is not None:
                    ids.append(cycle_id)
        return sorted(ids)

    def _read(self, s3_key: str) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=s3_key)
        except self.client.exceptions.NoSuchKey:
            return None
        return response["Body"].read(), response["ETag"]

    def _record(self, entries: Sequence[ArchiveEntry]) -> None:
        if not entries:
            return
        s3_key = self._object_key(index_path(entries[0].cycle_id))
        for _ in range(S3_INDEX_WRITE_ATTEMPTS):
            found = self._read(s3_key)
            existing, etag = (found[0].decode(), found[1]) if found is not None else ("", None)
            updated = append_entries(existing, entries)
            if updated is None:
                return
            try:
                if etag is None:
                    self.client.put_object(Bucket=self.bucket, Key=s3_key, Body=updated.encode(),
                                           IfNoneMatch="*", ContentType="application/x-ndjson")
                else:
                    self.client.put_object(Bucket=self.bucket, Key=s3_key, Body=updated.encode(),
                                           IfMatch=etag, ContentType="application/x-ndjson")
                return
            except ClientError as exc:
                if _error_code(exc) not in {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}:
                    raise
        raise ArchiveError(f"could not append to the index s3://{self.bucket}/{s3_key}: "
                           f"{S3_INDEX_WRITE_ATTEMPTS} concurrent-write conflicts in a row")


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


# ---------------------------------------------------------------------------------------------------
# Factory


def open_archive(settings: Settings) -> Archive:
    """The archive the settings name: ``"local"`` (``<state_dir>/archive``) or ``"s3"`` (bucket, prefix).

    For S3 the endpoint is ``$VPP_S3_ENDPOINT`` when set (a local S3 such as moto), else AWS; the region
    is ``settings.stack.sqs_region``.
    """
    backend = settings.archive.backend
    if backend == "local":
        return LocalArchive(settings.stack.state_dir / "archive")
    if backend == "s3":
        if not settings.archive.s3_bucket:
            raise ValueError("archive backend 's3' needs archive.s3_bucket (or VPP_ARCHIVE_S3_BUCKET)")
        import boto3

        endpoint = os.environ.get("VPP_S3_ENDPOINT") or None
        client = boto3.client("s3", endpoint_url=endpoint, region_name=settings.stack.sqs_region)
        return S3Archive(client, settings.archive.s3_bucket, settings.archive.s3_prefix)
    raise ValueError(f"unknown archive backend {backend!r}: expected 'local' or 's3'")
