"""A process's PostgreSQL connections (models/connections.py): the same transactions pooled or not."""

from __future__ import annotations

import pytest

from models.connections import Connections


async def _backend_pid(connections: Connections) -> int:
    async with connections.connection() as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    assert row is not None
    return int(row[0])


async def _count(connections: Connections, table: str) -> int:
    async with connections.connection() as conn:
        row = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("pooled", [False, True])
async def test_a_block_commits_when_it_ends_and_rolls_back_when_it_raises(database_url: str, pooled: bool) -> None:
    table = f"connections_{'pooled' if pooled else 'new'}"
    connections = Connections(database_url)
    if pooled:
        await connections.open_pool()
    try:
        async with connections.connection() as conn:
            await conn.execute(f"CREATE TABLE {table} (n integer)")
        async with connections.connection() as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(RuntimeError):
            async with connections.connection() as conn:
                await conn.execute(f"INSERT INTO {table} VALUES (2)")
                raise RuntimeError("the block fails")
        assert await _count(connections, table) == 1
        async with connections.connection() as conn:  # a transaction-scoped lock ends with its block
            await conn.execute("SELECT pg_advisory_xact_lock(42)")
        async with connections.connection() as conn:
            row = await (await conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")).fetchone()
            assert row is not None and row[0] == 0
    finally:
        await connections.close()


async def test_a_pool_reuses_its_connections_and_closing_it_opens_new_ones_again(database_url: str) -> None:
    connections = Connections(database_url, autocommit=True, max_size=1)
    first, second = await _backend_pid(connections), await _backend_pid(connections)
    assert first != second and not connections.pooled  # a new connection (a new server backend) per use
    await connections.open_pool()
    await connections.open_pool()  # idempotent
    assert connections.pooled
    pooled = {await _backend_pid(connections) for _ in range(3)}
    assert len(pooled) == 1  # one backend serves every use
    async with connections.connection() as conn:
        assert conn.autocommit
    await connections.close()
    assert not connections.pooled and await _backend_pid(connections) not in pooled
