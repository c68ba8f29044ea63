"""Immutable, content-addressed archive of every worker request and result (protobuf).

See :mod:`archive.store` for the layout; :func:`open_archive` picks the backend from the settings.
"""

from archive.store import (
    Archive,
    ArchiveCorruptError,
    ArchiveEntry,
    ArchiveError,
    ArchiveNotFoundError,
    InvalidArchiveKeyError,
    LocalArchive,
    S3Archive,
    archive_key,
    open_archive,
    pack,
    unpack,
)

__all__ = [
    "Archive",
    "ArchiveCorruptError",
    "ArchiveEntry",
    "ArchiveError",
    "ArchiveNotFoundError",
    "InvalidArchiveKeyError",
    "LocalArchive",
    "S3Archive",
    "archive_key",
    "open_archive",
    "pack",
    "unpack",
]
