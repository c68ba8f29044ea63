"""Database plumbing: schema migrations, the embedded PostgreSQL server, connections.

Migrations are the files ``models/migrations/NNNN_name.sql``, applied in ascending ``NNNN`` order, each
in its own transaction, and recorded in ``schema_migrations(version, name, applied_at)``. Every
transaction first takes a transaction-scoped advisory lock, so two processes migrating the same
database at once apply each migration exactly once (the second waits, then finds it applied).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from settings import Settings
from settings.extras import LOCAL, import_extra

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
EMBEDDED_DATABASE = "openvpp"
# Key of the advisory lock serialising migrations (any constant bigint; "openvpp" in ASCII).
MIGRATION_LOCK_KEY = 0x6F70656E767070

# Tries at creating a new embedded cluster when a PostgreSQL program is killed by a signal (a SIGBUS
# when the host's disk or shared memory runs short for a moment); any other failure is raised at once.
EMBEDDED_START_ATTEMPTS = 3

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The migrations folder is inconsistent, or a migration failed (the message names the file)."""


@dataclass(frozen=True)
class Migration:
    """One schema migration file: ``version`` is its 4-digit prefix, ``name`` the file stem."""

    version: str
    name: str
    path: Path


def discover_migrations(migrations_dir: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``migrations_dir``, ordered by version.

    Raises :class:`MigrationError` for a ``.sql`` file not named ``NNNN_lowercase_name.sql`` or two files
    with the same version.
    """
    found: dict[str, Migration] = {}
    for path in sorted(migrations_dir.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files must be named NNNN_lowercase_name.sql")
        version = match.group(1)
        if version in found:
            raise MigrationError(f"{path}: version {version} is also used by {found[version].path.name}")
        found[version] = Migration(version=version, name=path.stem, path=path)
    return [found[version] for version in sorted(found)]


def migrate(database_url: str, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration to the database at ``database_url``; return the names applied.

    Idempotent (a second call applies nothing and returns ``[]``) and safe when several processes call
    it at once. A failing migration is rolled back whole and raised as :class:`MigrationError`.
    """
    migrations = discover_migrations(migrations_dir)
    applied: list[str] = []
    # One session lock for the whole run: a process that finds another one migrating waits for it to finish
    # and then finds nothing pending, so one run applies the pending migrations, in order. Each migration is
    # still its own transaction (autocommit outside them), so a failure keeps the ones before it.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        for migration in migrations:
            with conn.transaction():
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version text PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                row = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
                ).fetchone()
                if row is not None:
                    continue
                try:
                    conn.execute(migration.path.read_text())  # type: ignore[arg-type]
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration.name)
                log.info("applied migration %s", migration.name)
    return applied


def applied_migrations(database_url: str) -> list[str]:
    """Versions recorded in ``schema_migrations``, ascending (``[]`` before the first migration)."""
    with psycopg.connect(database_url) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if exists is None or not exists[0]:
            return []
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [str(row[0]) for row in rows]


def start_pgserver(
    pgserver: Any, folder: Path, *, attempts: int = EMBEDDED_START_ATTEMPTS, pause_seconds: float = 1.0
) -> Any:
    """Start (or attach to) pgserver's server on ``folder``; returns pgserver's server handle.

    ``pgserver`` is the ``pgserver.postgres_server`` module. When ``folder`` holds no cluster yet (no ``PG_VERSION``)
    and ``initdb`` or ``pg_ctl`` is killed by a signal, the folder with the half-made cluster is removed (it held no
    cluster before) and the start tried again, up to ``attempts`` tries in all. Each retry is logged as a warning
    and waits ``pause_seconds`` times the try's number (s). A folder that already held a cluster is never removed,
    and a program that exits with an error (not a signal) is raised at once: both name a problem a retry cannot fix.
    """
    resolved = folder.expanduser().resolve()
    for attempt in range(1, attempts + 1):
        fresh = not (resolved / "PG_VERSION").exists()
        try:
            return pgserver.get_server(resolved, cleanup_mode="stop")
        except subprocess.CalledProcessError as error:
            killed_by_signal = error.returncode < 0
            if not (fresh and killed_by_signal and attempt < attempts):
                raise
            log.warning("creating the embedded PostgreSQL cluster in %s: %s was killed by signal %d "
                        "(try %d of %d); removing the half-made folder and trying again",
                        resolved, Path(str(error.cmd[0])).name if error.cmd else "a program",
                        -error.returncode, attempt, attempts)
            _forget_failed_server(pgserver, resolved)
            shutil.rmtree(resolved, ignore_errors=True)
            time.sleep(pause_seconds * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _forget_failed_server(pgserver: Any, folder: Path) -> None:
    """Drop pgserver's handle of a server whose start failed, so the next try builds a new one."""
    failed = pgserver.PostgresServer._instances.pop(folder, None)
    if failed is not None:
        atexit.unregister(failed._cleanup)


class EmbeddedPostgres:
    """A PostgreSQL server run by pgserver in ``folder`` (created if absent), as a context manager.

    The server is stopped (its data kept) on :meth:`stop` / leaving the ``with`` block.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._server: Any = None

    def start(self) -> EmbeddedPostgres:
        """Start (or attach to) the server; returns ``self``.

        Raises :class:`settings.extras.MissingExtraError` when pgserver (the ``local`` extra) is not
        installed: a deployment sets ``DATABASE_URL`` instead."""
        if self._server is None:
            pgserver = import_extra("pgserver.postgres_server", LOCAL,
                                    "the embedded PostgreSQL, used when DATABASE_URL is not set")
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            self._server = start_pgserver(pgserver, self.folder)
        return self

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()

    @property
    def url(self) -> str:
        """URL of the server's maintenance database (``postgres``)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """URL of ``database`` on this server."""
        if self._server is None:
            raise RuntimeError(f"embedded PostgreSQL in {self.folder} is not started")
        return str(self._server.get_uri(database=database))

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def ensure_database(server_url: str, database: str) -> str:
    """Create ``database`` on the server of ``server_url`` if absent; return its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists is None:
            # Another process may create it between the check and here: that is fine.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return psycopg.conninfo.make_conninfo(server_url, dbname=database)


def resolve_database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The database to use: ``settings.database_url`` if set, else an embedded server.

    The embedded server keeps its data in ``settings.stack.state_dir / "pgdata"`` and the platform's
    database is ``openvpp`` in it (created if absent). The caller owns the returned server and must
    stop it; it is ``None`` when an external database is configured.
    """
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.stack.state_dir / "pgdata").start()
    try:
        ensure_database(embedded.url, EMBEDDED_DATABASE)
        url = embedded.url_for(EMBEDDED_DATABASE)
    except BaseException:
        embedded.stop()
        raise
    return url, embedded


async def connect(database_url: str, *, autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
    """An async psycopg connection to ``database_url`` (the caller closes it, e.g. ``async with``)."""
    return await psycopg.AsyncConnection.connect(database_url, autocommit=autocommit)


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A fresh, empty database on the server of ``server_url`` (URL) for a test or benchmark, dropped
    (with its connections) afterwards."""
    import uuid

    name = f"openvpp_scratch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
