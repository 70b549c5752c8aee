"""Fixtures of the fault tests: throwaway servers that a test may stop, kill or freeze."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import MariaDBServer, NatsServer, PostgresServer


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A NATS server with JetStream of this test's own, on a free port."""
    with NatsServer() as server:
        yield server


@pytest.fixture
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own, on a free port."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def mariadb_server() -> Iterator[MariaDBServer]:
    """A MariaDB server of this test's own, on a free port, database `test` created."""
    with MariaDBServer() as server:
        server.create_database("test")
        yield server
