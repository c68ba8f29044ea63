"""AEMO's file names and zips: monthly MMSDM archives, current reports, nested zips.

File names (as published on NEMWEB; ``#`` is part of the name, requested as ``%23``):

- monthly archive up to July 2024: ``PUBLIC_DVD_<TABLE>_YYYYMM010000.zip``
  (large tables may carry ``_FILE<nn>`` before the date);
- monthly archive from August 2024: ``PUBLIC_ARCHIVE#<TABLE>#FILE<nn>#YYYYMM010000.zip``;
- current report: ``PUBLIC_<REPORT>_<run>[_<publication>].zip`` where ``<run>`` is the run time
  ``YYYYMMDDHHMM`` (P5MIN, DAILY, DISPATCHIS …) or the trading day ``YYYYMMDD`` (NEXT_DAY_DISPATCH …), and
  ``<publication>`` is either the publication time ``YYYYMMDDHHMMSS`` (P5MIN, DAILY) or AEMO's 16-digit
  publication sequence number (NEXT_DAY_*, DISPATCHIS …), which grows with each publication.

A report's *identity* is its name without the publication part and the extension: two files with the
same identity are two publications of the same report, and the later one replaces the earlier one.

Zips: a zip holds one or more CSV files, or zips (AEMO's daily archive bundles of 5-minute reports),
nested to any depth. A zip that is truncated or corrupt (no central directory, bad CRC, cut-off data)
is refused with :class:`~aemo.errors.CorruptArchiveError`; nothing of it is read.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path

from aemo.errors import CorruptArchiveError, FileNameError
from aemo.mms_csv import MmsReport, TableFilter, parse_mms_csv

_EXTENSION = r"\.(?P<extension>zip|csv|ZIP|CSV)"
_DVD_NAME = re.compile(r"^PUBLIC_DVD_(?P<table>[A-Z0-9_]+?)(?:_FILE(?P<part>\d+))?_(?P<month>\d{6})010000"
                       + _EXTENSION + "$")
_ARCHIVE_NAME = re.compile(r"^PUBLIC_ARCHIVE#(?P<table>[A-Z0-9_]+)#FILE(?P<part>\d+)#(?P<month>\d{6})010000"
                           + _EXTENSION + "$")
_REPORT_NAME = re.compile(r"^PUBLIC_(?P<report>[A-Z][A-Z0-9_]*?)_(?P<run>\d{12}|\d{8})"
                          r"(?:_(?P<publication>\d{14}|\d{16}))?" + _EXTENSION + "$")
MAX_NESTING = 4


class FileKind(StrEnum):
    """What a file is: one table's monthly archive, or a current report (possibly several tables)."""

    ARCHIVE = "archive"
    REPORT = "report"


@dataclass(frozen=True)
class AemoFileName:
    """An AEMO file name, parsed.

    ``subject``: the table (archives, e.g. ``DISPATCHPRICE``) or the report (e.g. ``P5MIN``,
    ``NEXT_DAY_DISPATCH``, ``DAILY``). ``month``: the first day of an archive's month. ``run``: a report's
    run time (or trading day at 00:00), market time. ``published``: the publication time where the name
    carries one; ``sequence``: AEMO's publication sequence number where it carries that instead.
    ``part``: the archive's ``FILE<nn>`` number (1 when absent).
    """

    name: str
    kind: FileKind
    subject: str
    month: date | None = None
    run: datetime | None = None
    published: datetime | None = None
    sequence: int | None = None
    part: int = 1

    @property
    def identity(self) -> str:
        """The name without its publication part and extension: the same for every publication."""
        stem = self.name.rsplit(".", 1)[0]
        if self.kind is FileKind.REPORT and (self.published is not None or self.sequence is not None):
            return stem.rsplit("_", 1)[0]
        return stem

    @property
    def publication_order(self) -> int:
        """Orders publications of one identity: the publication stamp or sequence (0 when the name has none)."""
        if self.published is not None:
            return int(self.published.strftime("%Y%m%d%H%M%S"))
        return self.sequence or 0


def _month(text: str, name: str) -> date:
    try:
        return date(int(text[:4]), int(text[4:6]), 1)
    except ValueError:
        raise FileNameError(f"{name}: month {text!r} is not a month") from None


def _timestamp(text: str, pattern: str, name: str) -> datetime:
    try:
        return datetime.strptime(text, pattern)
    except ValueError:
        raise FileNameError(f"{name}: {text!r} is not a time ({pattern})") from None


def parse_file_name(name: str) -> AemoFileName:
    """Parse an AEMO file name (the last path segment, ``#`` unencoded); :class:`FileNameError` if unknown."""
    for pattern in (_ARCHIVE_NAME, _DVD_NAME):
        match = pattern.match(name)
        if match:
            return AemoFileName(name=name, kind=FileKind.ARCHIVE, subject=match["table"],
                                month=_month(match["month"], name), part=int(match["part"] or 1))
    match = _REPORT_NAME.match(name)
    if match is None:
        raise FileNameError(f"{name}: not an AEMO archive or report file name")
    run_text = match["run"]
    run = _timestamp(run_text, "%Y%m%d%H%M" if len(run_text) == 12 else "%Y%m%d", name)
    publication = match["publication"]
    published = _timestamp(publication, "%Y%m%d%H%M%S", name) if publication and len(publication) == 14 else None
    sequence = int(publication) if publication and len(publication) == 16 else None
    return AemoFileName(name=name, kind=FileKind.REPORT, subject=match["report"], run=run, published=published,
                        sequence=sequence)


def is_aemo_file_name(name: str) -> bool:
    """Whether ``name`` is one of AEMO's archive or report names."""
    try:
        parse_file_name(name)
    except FileNameError:
        return False
    return True


@dataclass(frozen=True)
class CsvMember:
    """One CSV file found in a file or zip: ``source`` names the path through nested zips."""

    source: str
    data: bytes


def _zip_members(data: bytes, source: str, depth: int) -> Iterator[CsvMember]:
    if depth > MAX_NESTING:
        raise CorruptArchiveError(f"{source}: zips nested deeper than {MAX_NESTING}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise CorruptArchiveError(f"{source}: not a readable zip ({exc}); refused") from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if not members:
            raise CorruptArchiveError(f"{source}: empty zip; refused")
        contents: list[tuple[str, bytes]] = []
        for info in members:
            try:
                contents.append((info.filename, archive.read(info)))
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
                raise CorruptArchiveError(f"{source}: member {info.filename} cannot be read ({exc}); "
                                          "refused") from None
    for member_name, content in contents:
        member_source = f"{source}/{member_name}"
        lowered = member_name.lower()
        if lowered.endswith(".zip"):
            yield from _zip_members(content, member_source, depth + 1)
        elif lowered.endswith(".csv"):
            yield CsvMember(source=member_source, data=content)


def csv_members(data: bytes, source: str) -> list[CsvMember]:
    """Every CSV of a file: itself if it is a CSV, else the CSVs of the zip (nested zips opened).

    The whole zip is read and checked (CRC) before anything is returned, so a corrupt zip yields nothing.
    """
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06" or source.lower().endswith(".zip"):
        return list(_zip_members(data, source, 0))
    return [CsvMember(source=source, data=data)]


def read_reports(data: bytes, source: str, *, wanted: TableFilter | None = None) -> list[MmsReport]:
    """Parse every MMS CSV of a file (a CSV, or a zip of CSVs or zips) into reports, in member order."""
    return [parse_mms_csv(member.data, member.source, wanted=wanted) for member in csv_members(data, source)]


def read_file(path: Path, *, wanted: TableFilter | None = None) -> list[MmsReport]:
    """Parse an AEMO file on disk (CSV or zip): its reports, in member order."""
    return read_reports(path.read_bytes(), path.name, wanted=wanted)
