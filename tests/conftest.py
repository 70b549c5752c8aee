"""Suite-wide fixtures: where the real NATS and PostgreSQL servers are, and unique names.

Servers are shared by the whole session (starting them per test would dominate the
run time); tests stay independent by naming their streams/schemas with `unique`.
"""

from __future__ import annotations

import uuid

import pytest
from servers import ensure_shared_services


@pytest.fixture(scope="session")
def _shared_services() -> tuple[str, str]:
    return ensure_shared_services()


@pytest.fixture(scope="session")
def nats_url(_shared_services: tuple[str, str]) -> str:
    """URL of the session's NATS server (JetStream enabled)."""
    return _shared_services[0]


@pytest.fixture(scope="session")
def pg_url(_shared_services: tuple[str, str]) -> str:
    """URL of the session's PostgreSQL database `test` (superuser, trust auth)."""
    return _shared_services[1]


@pytest.fixture
def unique() -> str:
    """A short lowercase identifier, new per test: `t` + 8 hex chars.

    Valid unquoted as a PostgreSQL schema/table name and as a JetStream stream name,
    so tests sharing one server never see each other's data.
    """
    return f"t{uuid.uuid4().hex[:8]}"
