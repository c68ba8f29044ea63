"""models/: migrations against a real PostgreSQL, bid idempotency, clearings, unit state, cycles."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest

from models import bids, cycles, db
from settings import Settings
from tests.conftest import temporary_database
from vpp.v1 import bid_pb2, common_pb2

T0 = datetime(2021, 1, 10, 12, 0)
FIVE = timedelta(minutes=5)


@pytest.fixture
def fresh_database(server_url: str) -> Iterator[str]:
    """A brand-new, unmigrated database (URL), dropped afterwards."""
    with temporary_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
def migrated_url(database_url: str) -> str:
    db.migrate(database_url)
    return database_url


def _unit() -> str:
    return f"U{uuid.uuid4().hex[:8]}"


def _table_names(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {str(row[0]) for row in rows}


def test_migrate_applies_once_then_is_a_no_op(fresh_database: str) -> None:
    assert db.applied_migrations(fresh_database) == []
    first = db.migrate(fresh_database)
    assert first[0] == "0001_initial"
    assert {"bids", "cleared_intervals", "unit_state", "cycles", "schema_migrations"} <= _table_names(
        fresh_database
    )
    assert db.migrate(fresh_database) == []
    assert db.applied_migrations(fresh_database) == [name[:4] for name in first]


def test_concurrent_migrations_apply_each_file_exactly_once(fresh_database: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            results.append(db.migrate(fresh_database))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(len(applied) for applied in results) == [0, len(db.discover_migrations())]
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert row is not None and row[0] == len(db.discover_migrations())


def test_failing_migration_is_rolled_back_and_named(fresh_database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (x int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (x int); SELECT no_such_function();")
    with pytest.raises(db.MigrationError, match=r"0002_bad\.sql"):
        db.migrate(fresh_database, tmp_path)
    assert db.applied_migrations(fresh_database) == ["0001"]
    assert "half" not in _table_names(fresh_database)
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (x int);")
    assert db.migrate(fresh_database, tmp_path) == ["0002_bad"]


def test_migration_files_must_be_numbered_and_unique(tmp_path: Path) -> None:
    (tmp_path / "initial.sql").write_text("SELECT 1;")
    with pytest.raises(db.MigrationError, match="NNNN_"):
        db.discover_migrations(tmp_path)
    (tmp_path / "initial.sql").unlink()
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(db.MigrationError, match="0001"):
        db.discover_migrations(tmp_path)


def test_resolve_database_url_prefers_the_configured_url(settings: Settings) -> None:
    url, embedded = db.resolve_database_url(replace(settings, database_url="postgresql://x@h/db"))
    assert (url, embedded) == ("postgresql://x@h/db", None)


def test_resolve_database_url_starts_an_embedded_server_in_the_state_folder(settings: Settings) -> None:
    url, embedded = db.resolve_database_url(settings)
    assert embedded is not None
    try:
        assert (settings.stack.state_dir / "pgdata").is_dir()
        assert db.migrate(url)[0] == "0001_initial"
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None and row[0] == db.EMBEDDED_DATABASE
    finally:
        embedded.stop()


class _FlakyPgserver:
    """A stand-in of ``pgserver.postgres_server`` whose first ``failures`` starts die with ``returncode``.

    Each start makes the folder and its ``PG_VERSION`` first, as ``initdb`` does before it can die.
    """

    class PostgresServer:
        _instances: ClassVar[dict[Path, object]] = {}

        def _cleanup(self) -> None:
            pass

    def __init__(self, failures: int, returncode: int) -> None:
        self.failures, self.returncode, self.calls = failures, returncode, 0
        self.PostgresServer._instances = {}

    def get_server(self, folder: Path, cleanup_mode: str) -> object:
        self.calls += 1
        folder.mkdir(exist_ok=True)
        (folder / "PG_VERSION").write_text("16\n")
        (folder / f"made-by-call-{self.calls}").touch()
        server = self.PostgresServer()
        self.PostgresServer._instances[folder] = server
        if self.calls <= self.failures:
            raise subprocess.CalledProcessError(self.returncode, ["/bin/initdb", "-D", str(folder)])
        return server


def test_start_pgserver_retries_a_new_cluster_whose_initdb_was_killed_by_a_signal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pgserver = _FlakyPgserver(failures=2, returncode=-7)
    server = db.start_pgserver(pgserver, tmp_path / "pgdata", pause_seconds=0)
    assert pgserver.calls == 3
    assert sorted(path.name for path in (tmp_path / "pgdata").iterdir()) == ["PG_VERSION", "made-by-call-3"]
    assert pgserver.PostgresServer._instances == {(tmp_path / "pgdata").resolve(): server}
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 2 and "initdb was killed by signal 7 (try 1 of 3)" in warnings[0]


def test_start_pgserver_gives_up_after_its_attempts(tmp_path: Path) -> None:
    pgserver = _FlakyPgserver(failures=5, returncode=-7)
    with pytest.raises(subprocess.CalledProcessError):
        db.start_pgserver(pgserver, tmp_path / "pgdata", attempts=2, pause_seconds=0)
    assert pgserver.calls == 2


def test_start_pgserver_raises_an_error_exit_at_once(tmp_path: Path) -> None:
    pgserver = _FlakyPgserver(failures=1, returncode=1)
    with pytest.raises(subprocess.CalledProcessError):
        db.start_pgserver(pgserver, tmp_path / "pgdata")
    assert pgserver.calls == 1 and (tmp_path / "pgdata" / "made-by-call-1").exists()


def test_start_pgserver_never_removes_a_folder_that_held_a_cluster(tmp_path: Path) -> None:
    folder = tmp_path / "pgdata"
    folder.mkdir()
    (folder / "PG_VERSION").write_text("16\n")
    (folder / "base").mkdir()
    pgserver = _FlakyPgserver(failures=1, returncode=-7)
    with pytest.raises(subprocess.CalledProcessError):
        db.start_pgserver(pgserver, folder)
    assert pgserver.calls == 1 and (folder / "base").is_dir()


def test_pgserver_keeps_the_handles_start_pgserver_forgets() -> None:
    """The installed pgserver still keeps its server handles where :func:`models.db.start_pgserver` drops a failed
    one (``PostgresServer._instances``, a private name of a dependency that is not pinned), with the ``_cleanup``
    hook it unregisters: a release that renames them fails here, not in a retry on a user's machine."""
    from pgserver import postgres_server

    assert isinstance(postgres_server.PostgresServer._instances, dict)
    assert callable(postgres_server.PostgresServer._cleanup)


def _bid_message(unit_id: str, first: datetime, count: int, gen_prices: list[float]) -> bid_pb2.Bid:
    from algorithms.common.nem_time import to_timestamp, trading_day

    periods = [bid_pb2.PeriodOffer(dispatch_interval=to_timestamp(first + FIVE * i), max_avail_mw=10.0,
                                   band_avail_mw=[10.0] + [0.0] * 9) for i in range(count)]
    return bid_pb2.Bid(
        unit_id=unit_id, trading_day=trading_day(first).isoformat(), dispatch_interval=to_timestamp(first),
        version=1, entry_type=bid_pb2.ENTRY_TYPE_DAILY,
        offers=[bid_pb2.ProductOffer(product="ENERGY", direction=common_pb2.DIRECTION_GEN,
                                     band_price=gen_prices, periods=periods)],
    )


def _record(unit_id: str, first: datetime, *, count: int = 3, version: int = 1, status: str = "ACCEPTED",
            reasons: tuple[str, ...] = (), gen_prices: list[float] | None = None) -> bids.BidRecord:
    message = _bid_message(unit_id, first, count, gen_prices or [float(10 * k) for k in range(10)])
    message.version = version
    payload = message.SerializeToString(deterministic=True)
    return bids.BidRecord(
        bid_id=f"{unit_id}/{first:%Y%m%d%H%M}/v{version}", unit_id=unit_id, trading_day=date(2021, 1, 10),
        dispatch_interval=first, version=version, entry_type="DAILY", status=status, reasons=reasons,
        payload=payload, content_hash=uuid.uuid4().hex,
        covered_intervals=tuple(first + FIVE * i for i in range(count)),
    )


async def test_insert_bid_is_idempotent_on_its_key(migrated_url: str) -> None:
    unit = _unit()
    record = _record(unit, T0)
    async with await db.connect(migrated_url) as conn:
        row, duplicate = await bids.insert_bid(conn, record)
        assert not duplicate
        assert (row.bid_id, row.status, row.first_interval, row.last_interval) == (
            record.bid_id, "ACCEPTED", T0, T0 + 2 * FIVE)
        assert row.bid().unit_id == unit
        # Same key under another id and content: the stored row comes back, nothing is written.
        again, duplicate = await bids.insert_bid(conn, replace(record, bid_id=record.bid_id + "x",
                                                               content_hash="other"))
        assert duplicate
        assert again == row
        assert await bids.get_bid(conn, record.bid_id + "x") is None
        assert await bids.find_bid(conn, unit, date(2021, 1, 10), T0, 1) == row
        assert await bids.count_accepted_submissions(conn, unit, T0) == 1
        await conn.commit()


async def test_concurrent_inserts_of_one_bid_store_one_row(migrated_url: str) -> None:
    import asyncio

    record = _record(_unit(), T0)

    async def insert() -> bool:
        async with await db.connect(migrated_url) as conn:
            _, duplicate = await bids.insert_bid(conn, record)
            await asyncio.sleep(0.05)  # hold the transaction open so the other insert has to wait
            await conn.commit()
            return duplicate

    outcomes = await asyncio.gather(insert(), insert())
    assert sorted(outcomes) == [False, True]
    async with await db.connect(migrated_url) as conn:
        assert await bids.count_accepted_submissions(conn, record.unit_id, T0) == 1


def test_bid_record_rejects_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="status"):
        _record("U", T0, status="MAYBE")
    with pytest.raises(ValueError, match="reason"):
        _record("U", T0, status="REJECTED")
    with pytest.raises(ValueError, match="ascending"):
        replace(_record("U", T0), covered_intervals=(T0 + FIVE, T0))


async def test_latest_accepted_bid_covering_picks_the_newest_bid_in_force(migrated_url: str) -> None:
    unit = _unit()
    daily = _record(unit, T0, count=6)
    rebid_v1 = _record(unit, T0 + 2 * FIVE, count=2)
    rebid_v2 = _record(unit, T0 + 2 * FIVE, count=2, version=2)
    rejected = _record(unit, T0 + 3 * FIVE, count=3, status="REJECTED", reasons=("V1: not increasing",))
    async with await db.connect(migrated_url) as conn:
        for record in (daily, rebid_v1, rebid_v2, rejected):
            await bids.insert_bid(conn, record)

        async def in_force(t: datetime) -> str | None:
            row = await bids.latest_accepted_bid_covering(conn, unit, t)
            return None if row is None else row.bid_id

        assert await in_force(T0 - FIVE) is None
        assert await in_force(T0 + FIVE) == daily.bid_id
        assert await in_force(T0 + 2 * FIVE) == rebid_v2.bid_id
        assert await in_force(T0 + 3 * FIVE) == rebid_v2.bid_id
        assert await in_force(T0 + 4 * FIVE) == daily.bid_id  # the rebid covers only two intervals
        assert await in_force(T0 + 6 * FIVE) is None
        stored = await bids.get_bid(conn, rejected.bid_id)
        assert stored is not None and stored.reasons == ["V1: not increasing"]
        assert await bids.count_accepted_submissions(conn, unit, T0 + 2 * FIVE) == 2
        assert await bids.count_accepted_submissions(conn, unit, T0 + 3 * FIVE) == 0
        await conn.rollback()


async def test_each_interval_of_a_unit_is_cleared_at_most_once(migrated_url: str) -> None:
    unit = _unit()
    record = _record(unit, T0)
    clearing = bids.ClearingRecord(
        unit_id=unit, dispatch_interval=T0, bid_id=record.bid_id, gen_mw=10.0, load_mw=0.0,
        energy_revenue=41.5, fcas_revenue=0.0, state_of_charge_mwh=96.1,
        outcome=bid_pb2.MarketOutcome(gen_mw=10.0).SerializeToString(),
    )
    async with await db.connect(migrated_url) as conn:
        await bids.insert_bid(conn, record)
        await bids.record_clearing(conn, clearing)
        await bids.record_clearing(conn, replace(clearing, dispatch_interval=T0 + FIVE, bid_id=None))
        await conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation):
            await bids.record_clearing(conn, replace(clearing, bid_id=None, energy_revenue=1.0))
        await conn.rollback()
        stored = await bids.get_clearing(conn, unit, T0)
        assert stored == clearing
        assert stored.market_outcome().gen_mw == 10.0
        listed = await bids.list_clearings(conn, unit, T0, T0 + FIVE)
        assert [c.bid_id for c in listed] == [record.bid_id, None]
        cur = await conn.execute("SELECT count(*) FROM bid_outcomes WHERE bid_id = %s", (record.bid_id,))
        assert await cur.fetchone() == (1,)


async def test_unit_state_lock_creates_then_upsert_replaces(migrated_url: str) -> None:
    unit = _unit()
    async with await db.connect(migrated_url) as conn:
        assert await bids.get_unit_state(conn, unit) is None
        state = await bids.lock_unit_state(conn, unit, 97.0)
        assert state == bids.UnitState(unit, 97.0, None, 0.0)
        await bids.upsert_unit_state(conn, bids.UnitState(unit, 95.5, T0, 12.0))
        await conn.commit()
        assert await bids.lock_unit_state(conn, unit, 97.0) == bids.UnitState(unit, 95.5, T0, 12.0)
        await conn.commit()


async def test_daily_band_prices_come_from_the_first_accepted_bid_of_the_day(migrated_url: str) -> None:
    unit = _unit()
    first_prices = [float(k) for k in range(10)]
    async with await db.connect(migrated_url) as conn:
        assert await bids.daily_band_prices(conn, unit, date(2021, 1, 10)) is None
        await bids.insert_bid(conn, _record(unit, T0, status="REJECTED", reasons=("V1: x",),
                                            gen_prices=[5.0] * 10))
        await bids.insert_bid(conn, _record(unit, T0, version=2, gen_prices=first_prices))
        await conn.commit()
        await bids.insert_bid(conn, _record(unit, T0 + FIVE, gen_prices=[float(k + 1) for k in range(10)]))
        await conn.commit()
        prices = await bids.daily_band_prices(conn, unit, date(2021, 1, 10))
        assert prices == {("ENERGY", common_pb2.DIRECTION_GEN): tuple(first_prices)}


async def test_cycles_upsert_on_cycle_id_and_list_newest_first(migrated_url: str) -> None:
    unit = _unit()
    started = datetime(2021, 1, 10, 2, 0, 30, tzinfo=UTC)
    first = cycles.CycleRecord(
        cycle_id=f"cycle-{unit}-1", unit_id=unit, region="SA1", dispatch_interval=T0, status="RUNNING",
        bid_id=None, failure=None, facts=[], started_at=started,
    )
    async with await db.connect(migrated_url) as conn:
        await cycles.record_cycle(conn, first)
        done = replace(first, status="SUBMITTED", bid_id="b1", facts=[{"step": "bid", "mw": 10.5}])
        await cycles.record_cycle(conn, done)
        second = replace(first, cycle_id=f"cycle-{unit}-2", dispatch_interval=T0 + FIVE, status="FAILED",
                         failure="optimiser timed out", started_at=started + FIVE)
        await cycles.record_cycle(conn, second)
        await conn.commit()
        assert await cycles.get_cycle(conn, first.cycle_id) == done
        assert await cycles.list_cycles(conn, unit, 10) == [second, done]
        assert await cycles.list_cycles(conn, unit, 1) == [second]
        with pytest.raises(ValueError, match="limit"):
            await cycles.list_cycles(conn, unit, 0)


async def test_an_intervals_revenue_is_counted_once_whatever_the_number_of_cycles(migrated_url: str) -> None:
    unit = _unit()
    started = datetime(2021, 1, 10, 2, 0, 30, tzinfo=UTC)
    earned = cycles.IntervalOutcome(gen_mw=40.0, load_mw=0.0, price=100.0, energy_revenue=333.0, fcas_revenue=7.0)
    first = cycles.CycleRecord(cycle_id=f"cycle-{unit}-1", unit_id=unit, region="SA1", dispatch_interval=T0,
                               status="SUBMITTED", bid_id="b1", failure=None, facts=[], started_at=started,
                               outcome=earned)
    again = replace(first, cycle_id=f"cycle-{unit}-again", status="NO_REBID", started_at=started + FIVE)
    later = replace(first, cycle_id=f"cycle-{unit}-2", dispatch_interval=T0 + FIVE,
                    outcome=replace(earned, energy_revenue=10.0, fcas_revenue=1.0))
    not_cleared = replace(first, cycle_id=f"cycle-{unit}-failed", dispatch_interval=T0 + 2 * FIVE, status="FAILED",
                          outcome=None)
    async with await db.connect(migrated_url) as conn:
        assert await cycles.record_cycle(conn, first) == cycles.Counted(True, first.cycle_id)
        # A re-triggered cycle of the same interval reads the same outcome: kept, not counted again.
        assert await cycles.record_cycle(conn, again) == cycles.Counted(False, first.cycle_id)
        # A retried record of the counting cycle keeps its count.
        assert await cycles.record_cycle(conn, first) == cycles.Counted(True, first.cycle_id)
        assert await cycles.record_cycle(conn, later) == cycles.Counted(True, later.cycle_id)
        assert await cycles.record_cycle(conn, not_cleared) == cycles.Counted(False, None)
        await conn.commit()
        rows = await cycles.counted_revenue(conn, unit, T0, T0 + 3 * FIVE)
        assert rows == [(T0, 333.0, 7.0), (T0 + FIVE, 10.0, 1.0)]
        assert (await cycles.get_cycle(conn, again.cycle_id)) == again
        assert await cycles.cycles_between(conn, unit, T0, T0 + 3 * FIVE) == 4
        assert await cycles.latest_interval(conn, unit) == T0 + 2 * FIVE
        assert await cycles.unit_exists(conn, unit)
        assert not await cycles.unit_exists(conn, _unit())
        # The database refuses a second counted row for one interval, whoever writes it.
        with pytest.raises(psycopg.errors.UniqueViolation):
            await conn.execute("UPDATE cycles SET revenue_counted = true WHERE cycle_id = %s", (again.cycle_id,))


def test_cycle_record_requires_aware_start_and_naive_interval() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cycles.CycleRecord("c", "U", "SA1", T0, "RUNNING", None, None, [], datetime(2021, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        cycles.CycleRecord("c", "U", "SA1", T0.replace(tzinfo=UTC), "RUNNING", None, None, [],
                           datetime(2021, 1, 1, tzinfo=UTC))
