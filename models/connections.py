"""Where a long-running process gets its PostgreSQL connections: a new one per use, or reused from a pool.

A new connection costs the server a backend process (fork, authentication, catalogue caches) and the client a
handshake: a cycle that opens three and a bid service that opens one per call made PostgreSQL's start-ups a
large share of the portfolio benchmark's CPU. A process that serves many calls (the Temporal worker, the bid
service) opens :class:`Connections` once and hands it to its activities or servicer; everything else (tests,
commands) keeps the default of a new connection per use.

Either way a use is one ``async with connections.connection() as conn:`` block with the same transaction
semantics as ``async with await connect(url) as conn:``: committed when the block ends normally, rolled back
when it raises (psycopg's connection and psycopg_pool's pool both do this; autocommit connections commit
statement by statement). Locks the platform takes are transaction-scoped (``pg_advisory_xact_lock``, row
locks), so nothing a block leaves behind is seen by the next user of a pooled connection.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

# Connections a pool keeps open at most: a round of ten units deciding at once uses one per cycle stage in
# flight (the worker) or per call in flight (the bid service); a use beyond this waits for a free one.
POOL_MAX_CONNECTIONS = 16
# Connections a pool opens at once and keeps even when idle.
POOL_MIN_CONNECTIONS = 2
# Seconds a use waits for a pooled connection before failing (as a failed connect would).
POOL_WAIT_S = 30.0


class Connections:
    """PostgreSQL connections to ``database_url`` (``autocommit`` or not): a new connection per
    :meth:`connection` until :meth:`open_pool`, then reused from a pool of at most ``max_size`` until
    :meth:`close`. Open and close the pool in the event loop that uses it."""

    def __init__(self, database_url: str, *, autocommit: bool = False, max_size: int = POOL_MAX_CONNECTIONS) -> None:
        self.database_url = database_url
        self.autocommit = autocommit
        self._max_size = max_size
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None

    @property
    def pooled(self) -> bool:
        """True while connections are reused from the pool."""
        return self._pool is not None

    async def open_pool(self) -> None:
        """Reuse connections from now on (a pool of ``POOL_MIN_CONNECTIONS`` to ``max_size``); idempotent."""
        if self._pool is not None:
            return
        logging.getLogger("psycopg.pool").setLevel(logging.WARNING)  # it logs every borrow at INFO
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self.database_url, min_size=min(POOL_MIN_CONNECTIONS, self._max_size), max_size=self._max_size,
            kwargs={"autocommit": self.autocommit}, timeout=POOL_WAIT_S, open=False,
            name="openvpp")
        await pool.open(wait=True)
        self._pool = pool

    async def close(self) -> None:
        """Close the pool's connections (uses after this open a new connection each); idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection for one block: committed at its end, rolled back if it raises (see the module
        docstring); new and closed afterwards, or borrowed from the pool and given back."""
        if self._pool is None:
            async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=self.autocommit) as conn:
                yield conn
        else:
            async with self._pool.connection() as conn:
                yield conn
