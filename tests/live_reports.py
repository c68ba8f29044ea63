"""AEMO's live reports made from real rows, for the live-mode tests and ``vpp bench live``.

DispatchIS reports are built from the real DISPATCHPRICE rows of ``data/nemweb`` (August 2024, NSW1 and
SA1, the ``DISPATCH,PRICE,5`` table with every column): one report per dispatch interval, written in AEMO's
MMS CSV layout (``C`` header with the publication time, ``I`` row, ``D`` rows with quoted datetimes,
``C,"END OF REPORT",n``) and zipped alone, named as AEMO names them
(``PUBLIC_DISPATCHIS_<interval>_<16-digit sequence>.zip``: the publication time is in the header only).
PredispatchIS reports are built from a real pre-dispatch run of ``data/nem`` (January 2021, every region,
``PREDISPATCH,REGION_PRICES,1``), moved to the date asked, named
``PUBLIC_PREDISPATCHIS_<run>_<publication stamp>.zip``.

:class:`FastClock` runs market time faster than the wall clock, so a test can "publish" reports at their
publication times without waiting five minutes per interval.
"""

from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from aemo.archive_files import read_file
from settings import REPO_ROOT

NEMWEB_ROOT = REPO_ROOT / "data" / "nemweb"
DISPATCH_ARCHIVE = (NEMWEB_ROOT / "Data_Archive" / "Wholesale_Electricity" / "MMSDM" / "2024" / "MMSDM_2024_08"
                    / "MMSDM_Historical_Data_SQLLoader" / "DATA"
                    / "PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip")
REGION_SUM_ARCHIVE = DISPATCH_ARCHIVE.with_name("PUBLIC_ARCHIVE#DISPATCHREGIONSUM#FILE01#202408010000.zip")
PREDISPATCH_PARQUET = REPO_ROOT / "data" / "nem" / "PUBLIC_DVD_PREDISPATCHPRICE_202101010000.parquet"
DISPATCH_FOLDER = "DispatchIS_Reports"
PREDISPATCH_FOLDER = "PredispatchIS_Reports"
CURRENT = "Reports/Current"
MMS_TIME = "%Y/%m/%d %H:%M:%S"
FIRST_SEQUENCE = 425_000_000


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return ""
    if isinstance(value, pd.Timestamp | datetime):
        return f'"{value:{MMS_TIME}}"'
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    return str(value)


def mms_csv(report: str, published: datetime, sequence: int,
            tables: list[tuple[str, str, int, pd.DataFrame]]) -> bytes:
    """An MMS CSV file in AEMO's layout: header (created at ``published``), each table's ``I`` and ``D``
    rows, the trailer."""
    lines = [f"C,NEMP.WORLD,{report},AEMO,PUBLIC,{published:%Y/%m/%d},{published:%H:%M:%S},"
             f"{sequence:016d},{report},{sequence:016d}"]
    for report_type, sub_type, version, frame in tables:
        lines.append(",".join(["I", report_type, sub_type, str(version), *frame.columns]))
        prefix = f"D,{report_type},{sub_type},{version},"
        lines.extend(prefix + ",".join(_text(value) for value in row) for row in frame.itertuples(index=False))
    lines.append(f'C,"END OF REPORT",{len(lines) + 1}')
    return ("\r\n".join(lines) + "\r\n").encode()


def zipped(name: str, data: bytes) -> bytes:
    """A zip holding ``data`` as ``name`` (AEMO zips each report alone, the CSV named like the zip)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def archive_dispatch_rows() -> pd.DataFrame:
    """The real DISPATCH.PRICE v5 rows of August 2024 (NSW1, SA1), every column as AEMO publishes it."""
    (report,) = read_file(DISPATCH_ARCHIVE)
    frame: pd.DataFrame = report.table("DISPATCH", "PRICE").frame
    return frame


def archive_region_sum_rows() -> tuple[int, pd.DataFrame]:
    """(version, rows) of the real DISPATCH.REGIONSUM table of August 2024 (NSW1, SA1): the regions' FCAS
    local dispatch a DispatchIS report carries next to the prices."""
    (report,) = read_file(REGION_SUM_ARCHIVE)
    table = report.table("DISPATCH", "REGIONSUM")
    return table.version, table.frame


def dispatch_intervals(rows: pd.DataFrame, first: datetime, count: int) -> list[datetime]:
    """``count`` consecutive intervals ending from ``first`` that the rows hold."""
    wanted = [first + timedelta(minutes=5 * k) for k in range(count)]
    held = set(pd.to_datetime(rows["SETTLEMENTDATE"]).dt.to_pydatetime())
    missing = [moment for moment in wanted if moment not in held]
    assert not missing, f"no DISPATCHPRICE rows for {missing}"
    return wanted


@dataclass(frozen=True)
class Report:
    """A report written to the tree: its path relative to the root, name, interval or run, publication."""

    path: str
    name: str
    interval: datetime
    published: datetime


def dispatchis(rows: pd.DataFrame, interval: datetime, published: datetime, sequence: int,
               rrp_offset: float = 0.0, as_interval: datetime | None = None,
               region_sums: tuple[int, pd.DataFrame] | None = None) -> tuple[str, bytes]:
    """The DispatchIS report of the interval ending ``interval`` (name, zip bytes); ``rrp_offset`` ($/MWh)
    is added to every RRP (a corrected re-publication); ``as_interval`` relabels the rows as that interval's
    (real prices at another time, e.g. the last hours before now); ``region_sums`` (version, rows of
    :func:`archive_region_sum_rows`) adds the interval's DISPATCH.REGIONSUM rows, as AEMO's reports carry."""
    interval_rows = rows[pd.to_datetime(rows["SETTLEMENTDATE"]) == pd.Timestamp(interval)].copy()
    interval_rows["RRP"] = interval_rows["RRP"] + rrp_offset
    interval_rows["LASTCHANGED"] = pd.Timestamp(published) - pd.Timedelta(seconds=2)
    tables = [("DISPATCH", "PRICE", 5, interval_rows)]
    if region_sums is not None:
        version, sums = region_sums
        tables.append(("DISPATCH", "REGIONSUM", version,
                       sums[pd.to_datetime(sums["SETTLEMENTDATE"]) == pd.Timestamp(interval)].copy()))
    if as_interval is not None:
        for _, _, _, frame in tables:
            frame["SETTLEMENTDATE"] = pd.Timestamp(as_interval)
        interval = as_interval
    stem = f"PUBLIC_DISPATCHIS_{interval:%Y%m%d%H%M}_{sequence:016d}"
    data = mms_csv("DISPATCHIS", published, sequence, tables)
    return stem + ".zip", zipped(stem + ".CSV", data)


def predispatch_run(run_time: datetime) -> pd.DataFrame:
    """A real pre-dispatch run (January 2021, the run at the same time of day on the 15th), moved to
    ``run_time``: PREDISPATCH.REGION_PRICES columns, every region and period."""
    frame = pd.read_parquet(PREDISPATCH_PARQUET)
    source_run = datetime(2021, 1, 15, run_time.hour, run_time.minute)
    run = frame[frame["PREDISPATCH_RUN_DATETIME"] == pd.Timestamp(source_run)].copy()
    assert len(run), f"no pre-dispatch run at {source_run}"
    shift = pd.Timestamp(run_time) - pd.Timestamp(source_run)
    for column in ("DATETIME", "LASTCHANGED", "PREDISPATCH_RUN_DATETIME"):
        run[column] = run[column] + shift
    seqno = str(run["PREDISPATCHSEQNO"].iloc[0])
    day = (datetime.strptime(seqno[:8], "%Y%m%d") + (run_time.date() - source_run.date())).strftime("%Y%m%d")
    run["PREDISPATCHSEQNO"] = day + seqno[8:]
    columns = ["PREDISPATCHSEQNO", "RUNNO", "REGIONID", "PERIODID", "INTERVENTION", "RRP", "EEP",
               *[c for c in run.columns if c.endswith("RRP") and c.startswith(("RAISE", "LOWER"))],
               "LASTCHANGED", "DATETIME", "PREDISPATCH_RUN_DATETIME"]
    return run[columns].astype({"REGIONID": str, "RRP": float}).reset_index(drop=True)


def predispatchis(run: pd.DataFrame, run_time: datetime, published: datetime, sequence: int) -> tuple[str, bytes]:
    """The PredispatchIS report of a run (name with its publication stamp, zip bytes)."""
    stem = f"PUBLIC_PREDISPATCHIS_{run_time:%Y%m%d%H%M}_{published:%Y%m%d%H%M%S}"
    data = mms_csv("PREDISPATCHIS", published, sequence, [("PREDISPATCH", "REGION_PRICES", 1, run)])
    return stem + ".zip", zipped(stem + ".CSV", data)


def write_report(root: Path, folder: str, name: str, data: bytes) -> str:
    """Write a report under ``root/Reports/Current/<folder>/``; its path relative to ``root``."""
    relative = f"{CURRENT}/{folder}/{name}"
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return relative


class FastClock:
    """Market time running ``speed`` times faster than the wall clock, from ``start`` (naive AEST) now."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start = start
        self.speed = speed
        self._wall_start = time.monotonic()

    def now(self) -> datetime:
        """Market time now."""
        return self.start + timedelta(seconds=(time.monotonic() - self._wall_start) * self.speed)

    def wall_until(self, moment: datetime) -> float:
        """Wall-clock seconds until market time ``moment`` (negative when past)."""
        return (moment - self.now()).total_seconds() / self.speed

    def sleep_until(self, moment: datetime) -> None:
        """Sleep until market time ``moment``."""
        time.sleep(max(0.0, self.wall_until(moment)))
