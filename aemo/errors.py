"""Errors of the AEMO adapter: each names the file (and where it applies the table, version and column).

Every error is a :class:`AemoDataError` (a ``ValueError``), so a caller can refuse a file with its reason
without catching unrelated failures.
"""

from __future__ import annotations


class AemoDataError(ValueError):
    """An AEMO file or request that cannot be used; the message says which and why."""


class MmsFormatError(AemoDataError):
    """A file that does not follow AEMO's MMS CSV layout (``C`` / ``I`` / ``D`` rows)."""


class TruncatedReportError(MmsFormatError):
    """An MMS CSV file cut off before its ``C,"END OF REPORT",<n>`` line: refused, never half-loaded."""


class MissingColumnError(MmsFormatError):
    """A table lacks a column its schema needs; names the file, table, version and column(s)."""

    def __init__(self, source: str, table: str, version: int, columns: tuple[str, ...]) -> None:
        self.source = source
        self.table = table
        self.version = version
        self.columns = columns
        plural = "s" if len(columns) > 1 else ""
        super().__init__(f"{source}: table {table} version {version} lacks the required column{plural} "
                         f"{', '.join(columns)}")


class CorruptArchiveError(AemoDataError):
    """A zip that cannot be read in full (truncated, corrupt, bad CRC): refused with the reason."""


class FileNameError(AemoDataError):
    """A file name that is none of AEMO's known forms (monthly archive or current report)."""


class UnknownTableError(AemoDataError):
    """A table name the store has no schema for."""
