"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mysqlkit import Db, database


@pytest.fixture
def mysql_db(mysql_url: str, unique: str) -> Iterator[Db]:
    """A database of this test's own on the shared MariaDB (see tests/mysqlkit.py)."""
    with database(mysql_url, unique) as db:
        yield db
