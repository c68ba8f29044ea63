"""Tables read from AEMO's files as a user points at them: zips, CSVs, or folders holding them.

:func:`read_tables` reads the named store tables (:mod:`aemo.tables`) from any mix of files and folders:
folders are searched at any depth for files with AEMO's names (zip or CSV); a monthly archive of a table not
asked for is skipped unread, a current report is read to find out which tables it holds. Each table comes
back normalised (typed columns, one row per key; where files repeat a key the last file's row holds).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aemo.archive_files import FileKind, is_aemo_file_name, parse_file_name, read_file
from aemo.errors import AemoDataError
from aemo.tables import normalise, schema_named, schemas_for

_SUFFIXES = {".zip", ".csv"}


@dataclass(frozen=True)
class TableFrames:
    """The tables asked for (None for a table no file held) and the files that were read."""

    frames: dict[str, pd.DataFrame | None]
    files: tuple[str, ...]


def files_under(path: Path) -> list[Path]:
    """``path`` itself, or the AEMO files (zip or CSV with AEMO's names) anywhere under a folder;
    :class:`AemoDataError` when it does not exist."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise AemoDataError(f"{path}: no such file or folder")
    return sorted(child for child in path.rglob("*") if child.is_file() and child.suffix.lower() in _SUFFIXES
                  and is_aemo_file_name(child.name))


def _may_hold(path: Path, tables: Collection[str]) -> bool:
    """Whether a file may hold one of ``tables``: a monthly archive of another table does not."""
    try:
        name = parse_file_name(path.name)
    except AemoDataError:
        return True
    return name.kind is not FileKind.ARCHIVE or name.subject in tables


def read_tables(paths: Sequence[Path], tables: Collection[str]) -> TableFrames:
    """The store tables ``tables`` (names of :mod:`aemo.tables`) from the files and folders ``paths``.

    Raises :class:`AemoDataError` naming a path that does not exist or a file that is not AEMO's.
    """
    wanted_tables = {schema_named(table).name for table in tables}

    def wanted(report_type: str, sub_type: str) -> bool:
        return any(schema.name in wanted_tables for schema in schemas_for(report_type, sub_type))

    collected: dict[str, list[pd.DataFrame]] = {table: [] for table in wanted_tables}
    files: list[str] = []
    for path in paths:
        for file in files_under(Path(path)):
            if not _may_hold(file, wanted_tables):
                continue
            try:
                reports = read_file(file, wanted=wanted)
            except OSError as exc:
                raise AemoDataError(f"{file}: cannot be read ({exc})") from None
            files.append(str(file))
            for report in reports:
                for table in report.tables:
                    for schema in schemas_for(table.report_type, table.sub_type):
                        if schema.name in collected:
                            collected[schema.name].append(normalise(table, schema))
    return TableFrames(frames={table: _combined(frames, table) for table, frames in collected.items()},
                       files=tuple(files))


def _combined(frames: list[pd.DataFrame], table: str) -> pd.DataFrame | None:
    if not frames:
        return None
    combined = pd.concat(frames, ignore_index=True)
    keys = list(schema_named(table).keys_in(combined.columns))
    return combined.drop_duplicates(keys, keep="last").reset_index(drop=True)
