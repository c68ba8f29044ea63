"""The NEMWEB sync client against a real local HTTP stand-in of NEMWEB serving data/nemweb.

Covers: listings (``#`` as ``%23``), a full sync of the tree, a second sync that fetches nothing, a
re-published file, retries after 5xx / timeouts / short downloads, a 404, an interrupted sync (Ctrl-C from
the progress callback, and a killed process) that resumes to the same store, a listing that grows.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from aemo.errors import AemoDataError
from aemo.nemweb import (
    FolderSource,
    HttpSource,
    SourceError,
    SyncEvent,
    SyncReport,
    SyncRequest,
    month_folder,
    open_source,
    parse_listing,
    sync,
)
from aemo.store import IngestStatus, MarketStore, StoreError
from settings import REPO_ROOT
from tests.aemo_fixtures import (
    CURRENT_ROOT,
    FIXTURE_FOLDERS,
    NEMWEB_ROOT,
    archive_zip,
    assert_same_store,
    fixture_zips,
    member,
    set_value,
    zipped,
)
from tests.nemweb_standin import Fault, NemwebStandIn

FULL = SyncRequest(current_folders=FIXTURE_FOLDERS)
DP_AUGUST = "Data_Archive/Wholesale_Electricity/MMSDM/2024/MMSDM_2024_08/MMSDM_Historical_Data_SQLLoader/DATA/" \
            "PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip"
ONE_MONTH = SyncRequest(tables=("DISPATCHPRICE", "TRADINGPRICE"), months=(date(2024, 8, 1),), current=False)


def _source(url: str, *, attempts: int = 3, timeout_s: float = 5.0) -> HttpSource:
    return HttpSource(url, timeout_s=timeout_s, attempts=attempts, backoff_s=0.01)


@dataclass
class Synced:
    """The full tree synced once from the stand-in: the store, the stand-in and the first report."""

    store: MarketStore
    standin: NemwebStandIn
    report: SyncReport


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    with NemwebStandIn(NEMWEB_ROOT) as standin:
        store = MarketStore(tmp_path_factory.mktemp("synced") / "market")
        report = sync(store, _source(standin.url), FULL, workers=4)
        yield Synced(store=store, standin=standin, report=report)


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    """A copy of one month (DISPATCHPRICE, TRADINGPRICE of August 2024) laid out like NEMWEB."""
    root = tmp_path / "nemweb"
    for table in ("DISPATCHPRICE", "TRADINGPRICE"):
        source = archive_zip("2024_08", table)
        target = root / source.relative_to(NEMWEB_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return root


def test_listing_pages_are_parsed_like_nemweb_serves_them() -> None:
    html = (CURRENT_ROOT / "P5_Reports" / "index.html").read_text()
    entries = parse_listing(html, "https://nemweb.com.au/Reports/Current/P5_Reports/", "https://nemweb.com.au/")
    assert [(e.name, e.path, e.is_folder) for e in entries] == [
        ("PUBLIC_P5MIN_202610091150_20261009114620.zip",
         "Reports/Current/P5_Reports/PUBLIC_P5MIN_202610091150_20261009114620.zip", False)]
    iis = ('<pre><A HREF="/Data/">[To Parent Directory]</A><br><br> Monday, May 4, 2026  9:00 AM  &lt;dir&gt; '
           '<A HREF="/Data/DATA/2024/">2024</A><br> Monday, May 4, 2026  9:00 AM  1241 '
           '<A HREF="/Data/DATA/PUBLIC_ARCHIVE%23BIDDAYOFFER_D%23FILE01%23202408010000.zip">x</A><br>'
           '<a href="PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip">y</a><a href="https://other.site/x.zip">z'
           "</a></pre>")
    entries = parse_listing(iis, "http://host/Data/DATA/", "http://host/")
    assert [(e.name, e.path, e.is_folder) for e in entries] == [
        ("2024", "Data/DATA/2024/", True),
        ("PUBLIC_ARCHIVE#BIDDAYOFFER_D#FILE01#202408010000.zip",
         "Data/DATA/PUBLIC_ARCHIVE#BIDDAYOFFER_D#FILE01#202408010000.zip", False),
        ("PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip",
         "Data/DATA/PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip", False)]


def test_the_standin_lists_folders_and_serves_hash_names_as_percent_23(synced: Synced) -> None:
    source = _source(synced.standin.url)
    folder = month_folder("Data_Archive/Wholesale_Electricity/MMSDM", date(2024, 8, 1))
    names = [entry.name for entry in source.list(folder)]
    assert "PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip" in names and len(names) == 8
    assert [e.name for e in source.list("Data_Archive/Wholesale_Electricity/MMSDM/")] == [
        "2018", "2019", "2020", "2021", "2022", "2024", "2025", "2026"]
    assert "index.html" not in [e.name for e in source.list("Reports/Current/P5_Reports/")]
    assert source.url(DP_AUGUST).endswith("PUBLIC_ARCHIVE%23DISPATCHPRICE%23FILE01%23202408010000.zip")
    stat = source.stat(DP_AUGUST)
    assert stat.size == archive_zip("2024_08", "DISPATCHPRICE").stat().st_size
    assert stat.etag and stat.last_modified


def test_a_full_sync_of_the_tree(synced: Synced) -> None:
    report = synced.report
    assert report.failed == ()
    assert (report.files, report.skipped, report.planned) == (97, 0, 97)
    assert report.rows == sum(r.rows for r in synced.store.records())
    assert report.bytes == sum(p.stat().st_size for p in fixture_zips())
    for path in fixture_zips():
        relative = path.relative_to(NEMWEB_ROOT).as_posix()
        assert len(synced.standin.requests_for(relative, "GET")) == 1, relative
    holdings = {(h.table, h.month, h.region): h.rows for h in synced.store.holdings(["DISPATCHPRICE"])}
    assert holdings[("DISPATCHPRICE", "2018-04", "SA1")] == 1440
    assert holdings[("DISPATCHPRICE", "2026-05", "NSW1")] == 576
    line = report.summary()
    assert line.startswith("synced 97 files (") and "skipped 0; failed 0" in line


def test_a_second_sync_finds_nothing_new(synced: Synced) -> None:
    gets_before = sum(1 for r in synced.standin.requests if r.method == "GET" and r.path.endswith(".zip"))
    parts_before = sorted(p.name for p in synced.store.root.rglob("*.parquet"))
    second = sync(synced.store, _source(synced.standin.url), FULL)
    assert (second.files, second.rows, second.skipped, second.failed) == (0, 0, 97, ())
    gets_after = sum(1 for r in synced.standin.requests if r.method == "GET" and r.path.endswith(".zip"))
    assert gets_after == gets_before
    assert sorted(p.name for p in synced.store.root.rglob("*.parquet")) == parts_before
    print(f"second sync: {second.summary()}")


def test_a_republished_file_replaces_its_rows(small_tree: Path, tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    with NemwebStandIn(small_tree) as standin:
        first = sync(store, _source(standin.url), ONE_MONTH)
        assert (first.files, first.failed) == (2, ())
        before = store.load("DISPATCHPRICE")
        path = small_tree / DP_AUGUST
        name, data = member(path)
        path.write_bytes(zipped(name, set_value(data, "RRP", 3, "199.98")))
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 60))
        second = sync(store, _source(standin.url), ONE_MONTH)
    assert (second.files, second.skipped, second.failed) == (1, 1, ())
    assert store.record(path.name) is not None
    after = store.load("DISPATCHPRICE")
    assert len(after) == len(before) == 2880
    assert not after.duplicated(["SETTLEMENTDATE", "REGIONID"]).any()
    changed_rows = after.compare(before)
    assert len(changed_rows) == 1


def test_retries_after_server_errors_timeouts_and_short_downloads(small_tree: Path, tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    tp_august = DP_AUGUST.replace("DISPATCHPRICE", "TRADINGPRICE")
    with NemwebStandIn(small_tree) as standin:
        standin.inject(DP_AUGUST, Fault(status=500, times=2, methods=frozenset({"GET"})))
        standin.inject(tp_august, Fault(delay_s=1.5, times=1, methods=frozenset({"GET"})))
        standin.inject(tp_august, Fault(truncate_to=200, times=1, methods=frozenset({"GET"})))
        report = sync(store, _source(standin.url, attempts=4, timeout_s=0.5), ONE_MONTH)
        assert [r.status for r in standin.requests_for(DP_AUGUST, "GET")] == [500, 500, 200]
        answers = standin.requests_for(tp_august, "GET")
        assert [r.fault.delay_s if r.fault else None for r in answers] == [1.5, 0.0, None]
        assert [r.fault.truncate_to if r.fault else None for r in answers] == [None, 200, None]
        assert answers[-1].status == 200
    assert (report.files, report.failed) == (2, ())
    assert len(store.load("DISPATCHPRICE")) == len(store.load("TRADINGPRICE")) == 2880


def test_a_404_is_a_clear_failure_of_that_file_only(small_tree: Path, tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    with NemwebStandIn(small_tree) as standin:
        standin.inject(DP_AUGUST, Fault(status=404, times=None))
        report = sync(store, _source(standin.url), ONE_MONTH)
        assert len(standin.requests_for(DP_AUGUST, "GET")) == 1
    assert report.files == 1
    assert [(f.name, f.reason) for f in report.failed] == [
        ("PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip", f"{DP_AUGUST}: not found (HTTP 404)")]
    assert "failed 1 (PUBLIC_ARCHIVE#DISPATCHPRICE#FILE01#202408010000.zip: " in report.summary()
    assert store.tables() == ["TRADINGPRICE"]


def test_a_server_that_keeps_failing_is_given_up(small_tree: Path, tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    with NemwebStandIn(small_tree) as standin:
        standin.inject(DP_AUGUST, Fault(status=503, times=None, methods=frozenset({"GET"})))
        report = sync(store, _source(standin.url, attempts=3), ONE_MONTH)
        assert len(standin.requests_for(DP_AUGUST, "GET")) == 3
    assert [f.reason for f in report.failed] == [f"{DP_AUGUST}: gave up after 3 attempts (HTTP 503)"]


def test_a_corrupt_file_is_refused_with_its_reason(small_tree: Path, tmp_path: Path) -> None:
    path = small_tree / DP_AUGUST
    path.write_bytes(path.read_bytes()[:1000])
    store = MarketStore(tmp_path / "market")
    report = sync(store, FolderSource(small_tree), ONE_MONTH)
    assert [f.name for f in report.failed] == [path.name]
    assert "not a readable zip" in report.failed[0].reason
    assert store.record(path.name) is None


def test_an_interrupted_sync_resumes_to_the_same_store(synced: Synced, tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    done: list[str] = []

    def stop_after_twenty(event: SyncEvent) -> None:
        if event.kind == "done":
            done.append(event.name)
            if len(done) == 20:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(store, _source(synced.standin.url), FULL, workers=4, progress=stop_after_twenty)
    assert len(store.records()) == 20
    assert store.collect_garbage() == 0
    assert not (store.root / ".incoming").exists() or not any((store.root / ".incoming").iterdir())
    resumed = sync(store, _source(synced.standin.url), FULL, workers=4)
    assert (resumed.files, resumed.skipped, resumed.failed) == (77, 20, ())
    assert_same_store(synced.store, store)


_KILLED_SYNC = textwrap.dedent("""
    import sys
    from pathlib import Path
    from aemo.nemweb import HttpSource, SyncRequest, sync
    from aemo.store import MarketStore

    def progress(event):
        if event.kind == "done":
            print("committed", event.name, flush=True)

    request = SyncRequest(tables=("DISPATCHPRICE", "DISPATCHREGIONSUM", "DISPATCHLOAD"), current=False)
    sync(MarketStore(Path(sys.argv[1])), HttpSource(sys.argv[2], backoff_s=0.01), request, workers=2,
         progress=progress)
    print("finished", flush=True)
""")


def test_a_killed_sync_resumes_to_the_same_store(synced: Synced, tmp_path: Path) -> None:
    request = SyncRequest(tables=("DISPATCHPRICE", "DISPATCHREGIONSUM", "DISPATCHLOAD"), current=False)
    killed = MarketStore(tmp_path / "killed")
    process = subprocess.Popen([sys.executable, "-c", _KILLED_SYNC, str(killed.root), synced.standin.url],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    committed = 0
    for line in process.stdout:
        if line.startswith("committed"):
            committed += 1
            if committed == 5:
                process.send_signal(signal.SIGKILL)
                break
    process.wait(timeout=60)
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    held = len(killed.records())
    assert 5 <= held < 36
    resumed = sync(killed, _source(synced.standin.url), request)
    assert resumed.failed == () and resumed.files + resumed.skipped == 36 and resumed.skipped == held
    uninterrupted = MarketStore(tmp_path / "uninterrupted")
    assert sync(uninterrupted, _source(synced.standin.url), request).files == 36
    assert_same_store(uninterrupted, killed)


def test_a_listing_that_grows_as_aemo_publishes(tmp_path: Path) -> None:
    folder = "Reports/Current/Next_Day_Dispatch/"
    first, second = (f"{folder}PUBLIC_NEXT_DAY_DISPATCH_20260514_0000000517721207.zip",
                     f"{folder}PUBLIC_NEXT_DAY_DISPATCH_20260515_0000000517880947.zip")
    request = SyncRequest(archives=False, current_folders=("Next_Day_Dispatch",))
    store = MarketStore(tmp_path / "market")
    with NemwebStandIn(NEMWEB_ROOT, visible={first}) as standin:
        assert sync(store, _source(standin.url), request).files == 1
        standin.publish(second)
        report = sync(store, _source(standin.url), request)
    assert (report.files, report.skipped) == (1, 1)
    assert len(store.load("DISPATCHLOAD")) == 2 * 576


def test_only_the_newest_publication_of_a_report_is_fetched(tmp_path: Path) -> None:
    root = tmp_path / "nemweb"
    folder = root / "Reports" / "Current" / "P5_Reports"
    folder.mkdir(parents=True)
    older = CURRENT_ROOT / "P5_Reports" / "PUBLIC_P5MIN_202610091150_20261009114620.zip"
    shutil.copy2(older, folder / older.name)
    _, data = member(older)
    newer_name = "PUBLIC_P5MIN_202610091150_20261009114905.zip"
    (folder / newer_name).write_bytes(zipped(newer_name.replace(".zip", ".CSV"), data))
    store = MarketStore(tmp_path / "market")
    with NemwebStandIn(root) as standin:
        report = sync(store, _source(standin.url), SyncRequest(archives=False, current_folders=("P5_Reports",)))
        assert standin.requests_for(f"Reports/Current/P5_Reports/{older.name}") == []
    assert report.files == 1 and [r.name for r in store.records()] == [newer_name]


def test_a_local_folder_is_a_source_too(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    request = SyncRequest(tables=("DISPATCHPRICE",), first_month=date(2024, 7, 1), last_month=date(2024, 9, 1),
                          current=False)
    first = sync(store, open_source(str(NEMWEB_ROOT)), request)
    assert (first.files, first.failed) == (3, ())
    second = sync(store, open_source(str(NEMWEB_ROOT)), request)
    assert (second.files, second.skipped) == (0, 3)
    assert store.record("PUBLIC_DVD_DISPATCHPRICE_202407010000.zip") is not None
    open_ended = sync(store, open_source(str(NEMWEB_ROOT)), SyncRequest(
        tables=("DISPATCHPRICE",), first_month=date(2025, 1, 1), current=False))
    assert open_ended.files == 2  # 2025-01 and 2026-03: the months the folder lists from January 2025


def test_a_month_not_published_is_reported(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    report = sync(store, FolderSource(NEMWEB_ROOT), SyncRequest(months=(date(2030, 1, 1),), current=False))
    assert [f.name for f in report.failed] == [
        "Data_Archive/Wholesale_Electricity/MMSDM/2030/MMSDM_2030_01/MMSDM_Historical_Data_SQLLoader/DATA/"]
    assert "no monthly archive folder" in report.failed[0].reason


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_or_missing_source_is_one_error(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    with pytest.raises(SourceError, match=r"cannot reach http://127.0.0.1:\d+/ .*gave up after 2 attempts"):
        sync(store, _source(f"http://127.0.0.1:{_closed_port()}/", attempts=5), FULL)
    with pytest.raises(SourceError, match="no such folder"):
        open_source(str(tmp_path / "absent"))
    with pytest.raises(SourceError, match="not an http"):
        HttpSource("ftp://nemweb.com.au/")
    with pytest.raises(AemoDataError, match="unknown table"):
        SyncRequest(tables=("NOPE",))


def test_one_sync_at_a_time(tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    with store.lock(), pytest.raises(StoreError, match="another sync is writing to this store"):
        sync(store, FolderSource(NEMWEB_ROOT), ONE_MONTH)


def test_skipped_statuses_are_reported_to_the_progress_callback(synced: Synced) -> None:
    events: list[SyncEvent] = []
    sync(synced.store, _source(synced.standin.url), SyncRequest(tables=("MARKET_PRICE_THRESHOLDS",), current=False),
         progress=events.append)
    assert events[0].kind == "planned" and events[0].total == 2
    assert [(e.kind, e.status) for e in events[1:]] == [("skipped", IngestStatus.UNCHANGED)] * 2
    assert [e.completed for e in events[1:]] == [1, 2]


def test_without_head_validators_a_held_file_is_compared_by_content(small_tree: Path, tmp_path: Path) -> None:
    store = MarketStore(tmp_path / "market")
    with NemwebStandIn(small_tree) as standin:
        assert sync(store, _source(standin.url), ONE_MONTH).files == 2
        standin.inject(DP_AUGUST, Fault(status=405, times=None, methods=frozenset({"HEAD"})))
        report = sync(store, _source(standin.url), ONE_MONTH)
        assert [r.status for r in standin.requests_for(DP_AUGUST)][-2:] == [405, 200]
    assert (report.files, report.skipped, report.failed) == (0, 2, ())
