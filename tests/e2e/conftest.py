"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdcsync import registry

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "plugin"


@pytest.fixture
def memory_plugin() -> Iterator[None]:
    """The third-party `memory` destination (tests/fixtures/plugin) installed for one test."""
    sys.path.insert(0, str(PLUGIN_DIR))
    registry._cache.clear()
    try:
        yield
    finally:
        sys.path.remove(str(PLUGIN_DIR))
        registry._cache.clear()
        sys.modules.pop("memory_sink", None)
