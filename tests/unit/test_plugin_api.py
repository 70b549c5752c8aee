"""The built-in components are plugins like any third party's: they import only the public
plugin API (``cdcsync.plugin``) and their own modules, never the engine's internals."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cdcsync import registry
from cdcsync.plugin import Destination, Source

ROOT = Path(__file__).resolve().parents[2] / "cdcsync"
# Each built-in component: its own modules (a package, or a module and its *_options module).
COMPONENTS = {
    "kafka": ["sources/kafka.py", "sources/kafka_client.py", "sources/kafka_options.py"],
    "nats": [
        "sources/nats.py",
        "sources/nats_options.py",
        "sources/nats_streams.py",
        "sources/nats_members.py",
    ],
    "postgres": ["sinks/postgres"],
    "mysql": ["sinks/mysql"],
}
OWN = {
    "kafka": (
        "cdcsync.sources.kafka",
        "cdcsync.sources.kafka_client",
        "cdcsync.sources.kafka_options",
    ),
    "nats": (
        "cdcsync.sources.nats",
        "cdcsync.sources.nats_options",
        "cdcsync.sources.nats_streams",
        "cdcsync.sources.nats_members",
    ),
    "postgres": ("cdcsync.sinks.postgres",),
    "mysql": ("cdcsync.sinks.mysql",),
}


def modules(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        path = ROOT / p
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def cdcsync_imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names if n == "cdcsync" or n.startswith("cdcsync.")]
    return out


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_builtin_components_import_only_the_plugin_api(component: str) -> None:
    """Every `cdcsync` import of a built-in component is `cdcsync.plugin[.x]` or its own."""
    allowed = ("cdcsync.plugin", *OWN[component])
    bad = [
        f"{path.relative_to(ROOT.parent)}:{line}: imports {name}"
        for path in modules(COMPONENTS[component])
        for line, name in cdcsync_imports(path)
        if not any(name == a or name.startswith(a + ".") for a in allowed)
    ]
    assert not bad, "\n".join(bad)


def test_builtin_components_satisfy_the_protocols() -> None:
    """The registered built-ins are instances of the public Source / Destination protocols."""
    src = registry.sources()["nats"]
    options = src.parse(
        {"servers": ["nats://127.0.0.1:4222"], "subject": "a.>", "format": "auto",
         "buffer": 100, "max_message_bytes": 1024}
    )  # fmt: skip
    assert isinstance(src.factory("f", options), Source)
    src = registry.sources()["kafka"]
    options = src.parse(
        {"brokers": ["127.0.0.1:9092"], "topics": ["t"], "group": "g", "start": "earliest",
         "format": "debezium", "session_timeout_ms": 10000, "heartbeat_interval_ms": 3000,
         "max_poll_interval_ms": 300000, "buffer": 100, "max_message_bytes": 1024}
    )  # fmt: skip
    assert isinstance(src.factory("f", options), Source)
    dest = registry.destinations()["postgres"]
    options = dest.parse(
        {"url": "postgresql://u@h/db", "schema": "public", "state_schema": "cdcsync",
         "conflict_resolution": "upsert", "truncate": False, "unmapped_tables": "apply"}
    )  # fmt: skip
    assert isinstance(dest.factory("f", "d", options), Destination)
    dest = registry.destinations()["mysql"]
    options = dest.parse(
        {"url": "mysql://u@h/db", "state_schema": "cdcsync", "conflict_resolution": "upsert",
         "truncate": False, "unmapped_tables": "apply"}
    )  # fmt: skip
    assert isinstance(dest.factory("f", "d", options), Destination)
