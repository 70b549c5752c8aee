"""Fixtures of the fault tests: throwaway servers that a test may stop, kill or freeze."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import NatsServer, PostgresServer


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
