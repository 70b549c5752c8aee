"""The user guide cannot drift from the code: the configuration reference is the schema's
own output and names every key, and every link between docs pages resolves."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import strictyaml as sy

from cdcsync import config, events, reference, registry
from cdcsync.cli import example_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference" / "configuration.md"
# Pages other people are writing; linked before they exist, checked once they do.
PENDING = {DOCS / "dashboard.md"}


def paths(schema: Any, prefix: str = "") -> set[str]:
    """Every dotted key path a schema accepts, walked independently of cdcsync.reference."""
    found: set[str] = set()
    items = schema.items() if isinstance(schema, dict) else schema._validator_dict.items()
    for key, validator in items:
        name = prefix + str(key.key if isinstance(key, sy.Optional) else key)
        found.add(name)
        if isinstance(validator, sy.Seq) and isinstance(validator._validator, sy.Map):
            found |= paths(validator._validator, name + "[].")
        elif isinstance(validator, sy.Map):
            found |= paths(validator, name + ".")
    return found


def all_specs() -> list[registry.ComponentSpec]:
    return [*registry.builtins("source").values(), *registry.builtins("destination").values()]


def test_reference_is_the_generated_output() -> None:
    """docs/reference/configuration.md is exactly what `python -m cdcsync.reference` prints."""
    assert REFERENCE.read_text(encoding="utf-8") == reference.render(), (
        "docs/reference/configuration.md is out of date: run `just docs`"
    )


def test_every_key_the_schema_accepts_is_in_the_reference() -> None:
    """Each top-level, api, flow, batch, shorthand and component key has its own row."""
    text = REFERENCE.read_text(encoding="utf-8")
    expected = paths(config._SCHEMA)
    for spec in all_specs():
        expected |= {f"{spec.name}:{p}" for p in paths(spec.schema) | {"type"}}
        if spec.kind == "destination":
            expected.add(f"{spec.name}:name")
    missing = set()
    for path in expected:
        component, _, key = path.rpartition(":")
        if component:
            section = text.split(f"### `type: {component}`", 1)[1].split("\n## ", 1)[0]
            if f"| `{key}` |" not in section:
                missing.add(path)
        elif f"| `{path}` |" not in text:
            missing.add(path)
    assert expected >= {"api.bind", "flows[].batch.max_size", "postgres:url", "nats:tls.ca"}
    assert not missing


def test_every_built_in_key_has_a_description_and_an_example() -> None:
    """No key of the shipped schema is documented as '(no description)' or without example."""
    rows = reference.rows(config._SCHEMA) + reference.rows(config._FLOW, "flows[].")
    for spec in all_specs():
        rows += reference.rows(spec.schema, f"{spec.name}:")
    assert len(rows) > 30
    bare = [r.path for r in rows if r.doc == "(no description)" or not r.example]
    assert not bare


def test_the_reference_check_flag_detects_drift(tmp_path: Path, monkeypatch: Any) -> None:
    """`--check` exits 0 on the committed file and 1 on a stale copy (what `just docs` fixes)."""
    monkeypatch.chdir(ROOT)
    assert reference.main(["--check"]) == 0
    stale = tmp_path / "docs" / "reference" / "configuration.md"
    stale.parent.mkdir(parents=True)
    stale.write_text(reference.render().replace("Most events per batch", "Events"))
    monkeypatch.chdir(tmp_path)
    assert reference.main(["--check"]) == 1
    assert reference.main(["--write"]) == 0
    assert reference.main(["--check"]) == 0


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=lambda p: str(p.relative_to(DOCS)))
def test_relative_links_between_pages_resolve(page: Path) -> None:
    """A relative link in a docs page names an existing file (or a page being written)."""
    broken = []
    for link in _links(page):
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue
        target = (page.parent / link.split("#", 1)[0]).resolve()
        if not target.exists() and target not in PENDING:
            broken.append(link)
    assert not broken


def test_the_index_links_every_page() -> None:
    """docs/README.md lists every page of the guide."""
    linked = {(DOCS / link.split("#", 1)[0]).resolve() for link in _links(DOCS / "README.md")}
    pages = {p.resolve() for p in DOCS.rglob("*.md") if p.name != "README.md"}
    assert pages - linked == set()
    assert DOCS / "dashboard.md" in linked


def _yaml_blocks(page: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize(
    "name", ["configuration.md", "operations.md", "event-formats.md", "kafka.md"]
)
def test_complete_configuration_examples_load(name: str, monkeypatch: Any) -> None:
    """Every YAML example in the guide that is a whole file (has `flows:` or `nats:` at the
    top) passes the same validation as `cdcsync check`."""
    monkeypatch.setenv("CDCSYNC_API_TOKEN", "t")
    monkeypatch.setenv("PGPASSWORD", "p")
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:4222")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    whole = [b for b in _yaml_blocks(DOCS / name) if re.search(r"^(flows|nats):", b, re.M)]
    for block in whole:
        config.loads(block, f"docs/{name}")
    if name == "configuration.md":
        assert len(whole) >= 2


def test_getting_started_describes_the_generated_configuration() -> None:
    """What docs/getting-started.md says `generate-config` writes is what it writes, and the
    one edit it asks for (map table users) turns it into a valid file that maps the table."""
    guide = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    generated = example_config()
    for fact in ["name: users", '"cdc.users.>"', "stream: CDC ", "durable: cdcsync-users"]:
        assert fact in generated
    for fact in ["`users`", "`cdc.users.>`", "`CDC`", "`cdcsync-users`", "127.0.0.1:8080"]:
        assert fact in guide
    edit = re.search(r"```yaml\n(\s+tables: \{users: users\})\n```", guide)
    assert edit is not None
    edited = re.sub(r"#\s*tables: \{users: app_users\}.*", edit.group(1).strip(), generated)
    assert edited != generated
    cfg = config.loads(edited)
    assert cfg.flows[0].destinations[0].options.tables == {"users": "users"}


def test_event_format_examples_decode_as_described() -> None:
    """Each JSON example in docs/event-formats.md is a change event that `format: auto`
    decodes, to the table and operation the page names."""
    page = (DOCS / "event-formats.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", page, flags=re.S)
    decoded = [events.decode(b.encode(), "auto") for b in blocks]
    assert [(e.table, e.op.value) for e in decoded if e is not None] == [
        ("users", "insert"),
        ("users", "update"),
        ("users", "delete"),
        ("customers", "insert"),
        ("customers", "update"),
    ]


def message_patterns() -> list[re.Pattern[str]]:
    """Every string and f-string in cdcsync's code as a regex (a placeholder matches anything)."""
    patterns = []
    for path in (ROOT / "cdcsync").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                parts = [
                    re.escape(v.value) if isinstance(v, ast.Constant) else ".*" for v in node.values
                ]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                parts = [re.escape(node.value)]
            else:
                continue
            literal = "".join(p for p in parts if p != ".*")
            if len(literal) >= 8:
                patterns.append(re.compile("".join(parts)))
    return patterns


def test_dead_letter_reasons_in_the_guide_are_cdcsync_messages() -> None:
    """Each `error` text that event-formats.md lists (except PostgreSQL's own, with their
    SQLSTATE) is one that cdcsync's code writes: it matches one of its (f-)strings."""
    page = (DOCS / "event-formats.md").read_text(encoding="utf-8")
    table = page.split("## What goes to the dead letters", 1)[1]
    reasons = re.findall(r"^\| [^|]+ \| `([^`]+)`", table, flags=re.M)[1:]  # not the header
    assert len(reasons) >= 12
    patterns = message_patterns()
    unknown = [
        reason
        for reason in reasons
        if not re.match(r"[0-9A-Z]{5}: ", reason)
        and not any(p.match(reason.replace("…", "").replace("...", "")) for p in patterns)
    ]
    assert not unknown
