"""Shared fixtures: settings in a temporary state folder, a real PostgreSQL database, a real SQS endpoint.

PostgreSQL: ``DATABASE_URL`` if set; else the server on 127.0.0.1:5432 (trust auth) if one answers;
else an embedded server (pgserver) in a temporary folder. Each test session works in a fresh
database of its own, dropped at the end.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from models.db import EmbeddedPostgres, scratch_database
from settings import Settings, load_settings
from stack.ports import free_tcp_port

free_port = free_tcp_port
"""A TCP port on 127.0.0.1 that nothing listens on right now."""


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PostgreSQL server (maintenance database) the tests may create databases on."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
    elif _port_open("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/test"
    else:
        with EmbeddedPostgres(tmp_path_factory.mktemp("pgdata")) as server:
            yield server.url


temporary_database = scratch_database
"""Create an empty database on a server URL, yield its URL, drop it afterwards."""


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test session (URL), dropped afterwards."""
    with temporary_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """URL of a real SQS endpoint (moto server) on a free localhost port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _aws_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials so boto3 never looks for real ones (the endpoint is local)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-2")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default settings with the state folder (logs, archive, databases) in a temporary folder."""
    loaded = load_settings(environ={})
    return replace(loaded, stack=replace(loaded.stack, state_dir=tmp_path / "state"))
