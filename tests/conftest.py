"""Suite-wide fixtures: where the real NATS and PostgreSQL servers are, a throwaway Kafka
broker, and unique names.

Servers are shared by the whole session (starting them per test would dominate the
run time); tests stay independent by naming their streams/schemas with `unique`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from servers import TansuBroker, ensure_shared_mariadb, ensure_shared_services


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


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """URL of the session's MariaDB database `test` (root, empty password): the machine's
    on 127.0.0.1:3306 when it answers, else a throwaway server (tests/servers.py)."""
    return ensure_shared_mariadb()


@pytest.fixture
def kafka_broker() -> Iterator[TansuBroker]:
    """A Kafka-compatible broker (tansu, memory only) of this test's own, on a free port.

    Function scope: it starts in ~30 ms (median of 20 starts here), and a test may kill or
    restart it. Stopped at teardown, also when the test fails.
    """
    with TansuBroker() as broker:
        yield broker


@pytest.fixture
def unique() -> str:
    """A short lowercase identifier, new per test: `t` + 8 hex chars.

    Valid unquoted as a PostgreSQL schema/table name and as a JetStream stream name,
    so tests sharing one server never see each other's data.
    """
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["postgres", "mysql"])
def target(request: pytest.FixtureRequest) -> str:
    """The destination database a test runs against: a test that takes this fixture runs
    once against PostgreSQL and once against MySQL/MariaDB (`env` follows it)."""
    if request.param == "mysql":
        request.getfixturevalue("mysql_url")  # here, before any event loop runs
    return str(request.param)


@pytest.fixture
def kafka_bootstrap() -> str | None:
    """Where `env` reads from: None for JetStream; a module that runs its tests over Kafka
    too overrides this with a parametrized fixture returning a broker's host:port."""
    return None


@pytest.fixture
async def env(  # type: ignore[no-untyped-def]
    nats_url: str,
    pg_url: str,
    unique: str,
    kafka_bootstrap: str | None,
    request: pytest.FixtureRequest,
):
    """A test's world (see harness.Env) with an asyncio loop bridged onto Trio. Its
    destination is PostgreSQL unless the test takes the `target` fixture; its source is a
    JetStream stream, or a Kafka topic (kafkaenv.KafkaEnv) when `kafka_bootstrap` names a
    broker."""
    from harness import Env
    from kafkaenv import KafkaEnv

    from cdcsync.bridge import open_bridge

    kind = request.getfixturevalue("target") if "target" in request.fixturenames else "postgres"
    mysql_url = request.getfixturevalue("mysql_url") if kind == "mysql" else ""
    async with open_bridge():
        if kafka_bootstrap is None:
            world = Env(nats_url, pg_url, unique, target=kind, mysql_url=mysql_url)
        else:
            world = KafkaEnv(
                nats_url, pg_url, unique, kafka_bootstrap, target=kind, mysql_url=mysql_url
            )
        try:
            yield world
        finally:
            await world.close()
            if kind == "mysql":
                await world.execute(
                    f"DROP DATABASE IF EXISTS {unique}; DROP DATABASE IF EXISTS {unique}_state"
                )
            else:
                await world.execute(
                    f"DROP SCHEMA IF EXISTS {unique} CASCADE; "
                    f"DROP SCHEMA IF EXISTS {unique}_state CASCADE"
                )
