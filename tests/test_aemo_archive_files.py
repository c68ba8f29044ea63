"""AEMO's file names and zips: monthly archives (both naming schemes), current reports, nested and damaged zips."""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime

import pytest

from aemo.archive_files import FileKind, csv_members, parse_file_name, read_reports
from aemo.errors import CorruptArchiveError, FileNameError
from aemo.tables import schema_for_archive
from tests.aemo_fixtures import CURRENT_ROOT, archive_zip, fixture_zips


def test_archive_names_before_and_after_august_2024() -> None:
    before = parse_file_name("PUBLIC_DVD_DISPATCHPRICE_202407010000.zip")
    after = parse_file_name("PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip")
    assert (before.kind, before.subject, before.month, before.part) == (FileKind.ARCHIVE, "DISPATCHPRICE",
                                                                        date(2024, 7, 1), 1)
    assert (after.kind, after.subject, after.month, after.part) == (FileKind.ARCHIVE, "DISPATCHPRICE",
                                                                    date(2024, 8, 1), 1)
    assert parse_file_name("PUBLIC_DVD_BIDPEROFFER_D_201804010000.zip").subject == "BIDPEROFFER_D"
    assert parse_file_name("PUBLIC_DVD_DISPATCH_UNIT_SCADA_201804010000.zip").subject == "DISPATCH_UNIT_SCADA"
    assert parse_file_name("PUBLIC_ARCHIVE#BIDPEROFFER_D#FILE03#202501010000.zip").part == 3
    assert after.identity == "PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000"


def test_current_report_names() -> None:
    p5 = parse_file_name("PUBLIC_P5MIN_202610091150_20261009114620.zip")
    assert (p5.kind, p5.subject, p5.run, p5.published, p5.sequence) == (
        FileKind.REPORT, "P5MIN", datetime(2026, 10, 9, 11, 50), datetime(2026, 10, 9, 11, 46, 20), None)
    assert p5.identity == "PUBLIC_P5MIN_202610091150"
    next_day = parse_file_name("PUBLIC_NEXT_DAY_DISPATCH_20260514_0000000517721207.zip")
    assert (next_day.subject, next_day.run, next_day.sequence) == ("NEXT_DAY_DISPATCH", datetime(2026, 5, 14),
                                                                   517721207)
    assert next_day.identity == "PUBLIC_NEXT_DAY_DISPATCH_20260514"
    daily = parse_file_name("PUBLIC_DAILY_202605140000_20260515040504.zip")
    assert (daily.subject, daily.run, daily.published) == ("DAILY", datetime(2026, 5, 14),
                                                           datetime(2026, 5, 15, 4, 5, 4))
    scada = parse_file_name("PUBLIC_NEXT_DAY_INTERMITTENT_GEN_SCADA_20260515_0000000517880952.zip")
    assert scada.subject == "NEXT_DAY_INTERMITTENT_GEN_SCADA"
    later = parse_file_name("PUBLIC_P5MIN_202610091150_20261009114905.zip")
    assert later.identity == p5.identity and later.publication_order > p5.publication_order


@pytest.mark.parametrize("name", ["Elements_FCAS_202504151310.csv", "index.html", "PUBLIC_DVD_X_2024.zip",
                                  "PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202413010000.zip"])
def test_other_names_are_refused(name: str) -> None:
    with pytest.raises(FileNameError, match=name.split("#")[0]):
        parse_file_name(name)


def test_every_fixture_name_parses_and_archives_name_a_stored_table() -> None:
    for path in fixture_zips():
        parsed = parse_file_name(path.name)
        if parsed.kind is FileKind.ARCHIVE:
            assert schema_for_archive(parsed.subject) is not None, path.name


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_nested_zips_are_opened() -> None:
    p5 = (CURRENT_ROOT / "P5_Reports" / "PUBLIC_P5MIN_202610091150_20261009114620.zip").read_bytes()
    daily = (CURRENT_ROOT / "Daily_Reports" / "PUBLIC_DAILY_202605140000_20260515040504.zip").read_bytes()
    bundle = _zip({"PUBLIC_P5MIN_202610091150_20261009114620.zip": p5,
                   "PUBLIC_DAILY_202605140000_20260515040504.zip": daily, "readme.txt": b"not a report"})
    outer = _zip({"bundle.zip": bundle})
    members = csv_members(outer, "PUBLIC_REPORTS_20261009.zip")
    assert [m.source for m in members] == [
        "PUBLIC_REPORTS_20261009.zip/bundle.zip/PUBLIC_P5MIN_202610091150_20261009114620.zip/"
        "PUBLIC_P5MIN_202610091150_20261009114620.CSV",
        "PUBLIC_REPORTS_20261009.zip/bundle.zip/PUBLIC_DAILY_202605140000_20260515040504.zip/"
        "PUBLIC_DAILY_202605140000_20260515040504.CSV"]
    reports = read_reports(outer, "PUBLIC_REPORTS_20261009.zip")
    assert reports[0].table("P5MIN", "REGIONSOLUTION").rows == 60
    assert reports[1].find("DREGION", "")[0].rows == 576


def test_a_truncated_zip_is_refused() -> None:
    data = archive_zip("2024_08", "DISPATCHPRICE").read_bytes()
    with pytest.raises(CorruptArchiveError, match=r"not a readable zip .*; refused"):
        csv_members(data[:len(data) // 2], "PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip")


def test_a_corrupt_zip_is_refused() -> None:
    data = bytearray(archive_zip("2024_08", "DISPATCHPRICE").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    with pytest.raises(CorruptArchiveError, match=r"member PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.CSV "
                                                  r"cannot be read"):
        csv_members(bytes(data), "PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip")


def test_an_empty_zip_is_refused() -> None:
    with pytest.raises(CorruptArchiveError, match="empty zip"):
        csv_members(_zip({}), "PUBLIC_DVD_DISPATCHPRICE_202407010000.zip")


def test_a_plain_csv_is_its_own_member() -> None:
    members = csv_members(b'C,x\nC,"END OF REPORT",1\n', "PUBLIC_P5MIN_202610091150_20261009114620.CSV")
    assert [m.source for m in members] == ["PUBLIC_P5MIN_202610091150_20261009114620.CSV"]
