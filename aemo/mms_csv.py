"""AEMO's MMS CSV layout, read as AEMO publishes it.

A file is a sequence of rows, each a CSV line whose first field says what it is:

- ``C`` — a comment. The first line is the report header
  (``C,<system>,<report>,AEMO,PUBLIC,<YYYY/MM/DD>,<HH:MM:SS>,<id>,<name>,<id>``), the last line the trailer
  ``C,"END OF REPORT",<n>``.
- ``I,<report type>,<sub-type>,<version>,<column>,…`` — starts a table: its identity, its version and its
  column names. A file may hold several tables (and several versions of one table).
- ``D,<report type>,<sub-type>,<version>,<value>,…`` — a row of the table started by the last ``I`` row.

Parsing is vectorised: the text is split into one block per table at the positions of its ``C`` and ``I``
lines (a regular expression over the bytes, no loop over rows), and each block is read by one
``pandas.read_csv``. Columns whose values are AEMO datetimes (``YYYY/MM/DD HH:MM:SS``, quoted as AEMO
publishes them or unquoted as in pruned copies) become ``datetime64[s]`` (naive market time, AEST).
Other columns keep pandas' types (numbers as int64 / float64, text as strings); :mod:`aemo.tables`
applies each table's schema.

Completeness: a file whose last line is not the ``END OF REPORT`` trailer was cut off and is refused
(:class:`~aemo.errors.TruncatedReportError`), never half-loaded. The row count the trailer carries is NOT
checked: AEMO's count is of the file's lines, and copies pruned of rows (the repository's test data, as
NEMOSIS prunes them) keep the unpruned file's count, so the count cannot tell a pruned file from a
damaged one. A file cut inside a row is caught by the missing trailer instead.

Quirk: AEMO's Daily report writes its first DREGION table as ``I,DREGION,Unnamed: 2,2`` with rows
``D,DREGION,,2`` (a blank sub-type once read by a tool that named blank headers ``Unnamed: <n>``); a
sub-type of the form ``Unnamed: <n>`` is read as the blank sub-type, so both DREGION tables of that report
are ``DREGION`` with sub-type ``""``.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import pandas as pd

from aemo.errors import MmsFormatError, TruncatedReportError

MMS_DATETIME_FORMAT = "%Y/%m/%d %H:%M:%S"
DATETIME_DTYPE: Final = "datetime64[s]"
PREFIX_COLUMNS = ("_row", "_report_type", "_sub_type", "_version")
_ROW_START = re.compile(rb"^[CI],", re.MULTILINE)
_TRAILER = re.compile(rb'^C,"?END OF REPORT"?(?:,|\s*$)')
_DATETIME_VALUE = re.compile(r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}$")
_UNNAMED_SUB_TYPE = re.compile(r"^Unnamed: \d+$")

TableFilter = Callable[[str, str], bool]
"""Decides from (report type, sub-type) whether a table is read at all (others are skipped unparsed)."""


@dataclass(frozen=True)
class ReportHeader:
    """The first ``C`` row of a file: who wrote it and when (``created``: market time, AEST)."""

    system: str
    report: str
    created: datetime | None
    fields: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class MmsTable:
    """One table of a file: its identity and version from its ``I`` row, its columns, its ``D`` rows.

    ``frame`` holds the data columns only (not the four ``D,<type>,<sub-type>,<version>`` fields), in the
    ``I`` row's order. ``source`` names the file (and the zip member) for error messages.
    """

    source: str
    report_type: str
    sub_type: str
    version: int
    columns: tuple[str, ...]
    frame: pd.DataFrame

    @property
    def name(self) -> str:
        """``<report type>.<sub-type>`` as AEMO writes it (``DISPATCH.PRICE``), or the type alone."""
        return f"{self.report_type}.{self.sub_type}" if self.sub_type else self.report_type

    @property
    def rows(self) -> int:
        """Number of ``D`` rows."""
        return len(self.frame)


@dataclass(frozen=True, eq=False)
class MmsReport:
    """A whole MMS CSV file: its header and its tables, in file order."""

    source: str
    header: ReportHeader
    tables: tuple[MmsTable, ...]

    def find(self, report_type: str, sub_type: str) -> tuple[MmsTable, ...]:
        """Every table (every version) with this identity, in file order."""
        return tuple(t for t in self.tables if t.report_type == report_type and t.sub_type == sub_type)

    def table(self, report_type: str, sub_type: str) -> MmsTable:
        """The one table with this identity; ``KeyError`` naming the file if absent or ambiguous."""
        found = self.find(report_type, sub_type)
        if len(found) != 1:
            held = ", ".join(f"{t.name} v{t.version}" for t in self.tables) or "no table"
            raise KeyError(f"{self.source}: {len(found)} tables {report_type}.{sub_type} (file holds {held})")
        return found[0]


def _split_line(line: bytes, source: str) -> list[str]:
    """One CSV line (a ``C`` or ``I`` row) as its fields."""
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        text = line.decode("latin-1").rstrip("\r\n")
    try:
        return next(csv.reader([text]))
    except (csv.Error, StopIteration) as exc:
        raise MmsFormatError(f"{source}: unreadable row {text[:80]!r}: {exc}") from None


def _parse_created(fields: list[str]) -> datetime | None:
    if len(fields) < 7:
        return None
    try:
        return datetime.strptime(f"{fields[5]} {fields[6]}", MMS_DATETIME_FORMAT)
    except ValueError:
        return None


def parse_header(first_line: bytes, source: str) -> ReportHeader:
    """The report header (the file's first ``C`` row); :class:`MmsFormatError` if the file has none."""
    fields = _split_line(first_line, source)
    if not fields or fields[0] != "C":
        raise MmsFormatError(f"{source}: not an AEMO MMS file (first line {first_line[:60]!r} is not a C row)")
    return ReportHeader(system=fields[1] if len(fields) > 1 else "", report=fields[2] if len(fields) > 2 else "",
                        created=_parse_created(fields), fields=tuple(fields))


def normalise_sub_type(sub_type: str) -> str:
    """AEMO's sub-type, with the Daily report's ``Unnamed: <n>`` read as blank (see the module docstring)."""
    sub_type = sub_type.strip()
    return "" if _UNNAMED_SUB_TYPE.match(sub_type) else sub_type


def _line_end(data: bytes, start: int, stop: int) -> int:
    newline = data.find(b"\n", start, stop)
    return stop if newline < 0 else newline + 1


def _convert_datetimes(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns whose first value is an AEMO datetime become datetime64[s] (if every value parses)."""
    converted: dict[str, pd.Series] = {}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            continue
        first = values.first_valid_index()
        if first is None or not _DATETIME_VALUE.match(str(values[first])):
            continue
        parsed = pd.to_datetime(values, format=MMS_DATETIME_FORMAT, errors="coerce")
        if int(parsed.isna().sum()) == int(values.isna().sum()):
            converted[str(column)] = parsed.astype(DATETIME_DTYPE)
    if not converted:
        return frame
    return frame.assign(**converted)


def _field_text(value: object) -> str:
    """A prefix field of a D row as written (blank for a missing value, ``2`` for a version read as 2.0)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_block(body: bytes, columns: tuple[str, ...], source: str, report_type: str, sub_type: str,
                version: int) -> pd.DataFrame:
    """The ``D`` rows of one table (``body``: the bytes after its ``I`` row) as a DataFrame."""
    names = (*PREFIX_COLUMNS, *columns)
    label = f"{report_type}.{sub_type}" if sub_type else report_type
    if not body.strip():
        return pd.DataFrame({column: pd.Series(dtype=object) for column in columns})
    try:
        frame = pd.read_csv(io.BytesIO(body), header=None, names=list(names), index_col=False, low_memory=False,
                            skipinitialspace=False, on_bad_lines="error")
    except (pd.errors.ParserError, ValueError) as exc:
        raise MmsFormatError(f"{source}: table {label} version {version}: unreadable rows ({exc})") from None
    wrong_kind = frame["_row"].astype(str) != "D"
    if wrong_kind.any():
        first = frame.loc[wrong_kind, "_row"].iloc[0]
        raise MmsFormatError(f"{source}: table {label} version {version}: a row of kind {first!r} among its D rows")
    identities = frame[["_report_type", "_sub_type", "_version"]].drop_duplicates()
    for row_type, row_sub_type, row_version in identities.itertuples(index=False):
        row_type, row_sub_type, row_version = (_field_text(row_type), _field_text(row_sub_type),
                                               _field_text(row_version))
        if (row_type, normalise_sub_type(row_sub_type), row_version) != (report_type, sub_type, str(version)):
            raise MmsFormatError(f"{source}: table {label} version {version}: a row D,{row_type},{row_sub_type},"
                                 f"{row_version} does not belong to it")
    return _convert_datetimes(frame.drop(columns=list(PREFIX_COLUMNS)))


def _check_trailer(data: bytes, source: str) -> int:
    """Position of the ``END OF REPORT`` line; :class:`TruncatedReportError` if the file lacks it."""
    stripped = data.rstrip()
    last_start = stripped.rfind(b"\n") + 1
    last_line = stripped[last_start:]
    if not _TRAILER.match(last_line):
        shown = last_line[:60].decode("utf-8", errors="replace")
        raise TruncatedReportError(f"{source}: cut off before its END OF REPORT line (it ends with {shown!r}); "
                                   "refused, nothing loaded")
    return last_start


def parse_mms_csv(data: bytes, source: str, *, wanted: TableFilter | None = None) -> MmsReport:
    """Parse one MMS CSV file (its bytes); ``source`` names it in errors.

    ``wanted(report_type, sub_type)`` selects the tables to read (default: all); the others are skipped
    without being parsed. Raises :class:`MmsFormatError` (not an MMS file, unreadable rows, a row of
    another table) or :class:`TruncatedReportError` (no ``END OF REPORT`` line).
    """
    if not data.strip():
        raise MmsFormatError(f"{source}: empty file")
    header = parse_header(data[:_line_end(data, 0, len(data))], source)
    trailer = _check_trailer(data, source)
    starts = [match.start() for match in _ROW_START.finditer(data, 0, trailer)] + [trailer]
    tables: list[MmsTable] = []
    for position, following in itertools.pairwise(starts):
        if data[position:position + 1] != b"I":
            continue
        body_start = _line_end(data, position, following)
        fields = _split_line(data[position:body_start], source)
        if len(fields) < 5:
            raise MmsFormatError(f"{source}: I row {fields} names no columns")
        report_type, sub_type = fields[1].strip(), normalise_sub_type(fields[2])
        try:
            version = int(fields[3])
        except ValueError:
            raise MmsFormatError(f"{source}: I row of {report_type}.{sub_type} has version {fields[3]!r}, "
                                 "not a number") from None
        if wanted is not None and not wanted(report_type, sub_type):
            continue
        columns = tuple(name.strip() for name in fields[4:])
        frame = _read_block(data[body_start:following], columns, source, report_type, sub_type, version)
        tables.append(MmsTable(source=source, report_type=report_type, sub_type=sub_type, version=version,
                               columns=columns, frame=frame))
    return MmsReport(source=source, header=header, tables=tuple(tables))


def read_mms_csv(path: Path, *, wanted: TableFilter | None = None) -> MmsReport:
    """Parse an MMS CSV file on disk (not zipped; see :mod:`aemo.archive_files` for zips)."""
    return parse_mms_csv(path.read_bytes(), path.name, wanted=wanted)
