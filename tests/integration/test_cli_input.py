"""Hostile input to the command line: what `serve` would refuse, `check` refuses first, each
with `file:line`, the fix and an exit code; bad files and arguments are messages, not
tracebacks; a password never appears; the configuration is found where users look for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cdcsync(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CDCSYNC_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "cdcsync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**environ, **(env or {})},
        check=False,
    )


def config_text(
    nats_url: str = "nats://127.0.0.1:4222",
    pg_url: str = "postgresql://postgres@127.0.0.1:5432/test",
    *,
    subject: str = '"cdc.users.>"',
    stream: str = "CDC",
    durable: str = "cdcsync-users",
    bind: str = '"127.0.0.1:0"',
    schema: str = "public",
    tables: str = "{users: app_users}",
) -> str:
    """A block-style configuration: every value on its own line (numbered in the comment)."""
    return f"""\
api:
  bind: {bind}
flows:
  - name: users
    source:
      type: nats
      servers: ["{nats_url}"]
      subject: {subject}
      jetstream:
        stream: {stream}
        durable: {durable}
    destinations:
      - name: primary
        type: postgres
        url: "{pg_url}"
        schema: {schema}
        tables: {tables}
"""  # lines: 2 bind, 7 servers, 8 subject, 10 stream, 11 durable, 15 url, 16 schema, 17 tables


def test_the_template_passes(tmp_path: Path) -> None:
    """The configuration the cases below break is itself fine."""
    path = tmp_path / "ok.yaml"
    path.write_text(config_text())
    result = cdcsync("check", str(path))
    assert result.returncode == 0, result.stderr


# (id, keyword overrides, line of the value, words of the message)
REFUSED = [
    ("empty-subject", {"subject": '""'}, 8, "an empty subject"),
    ("subject-with-space", {"subject": '"cdc users"'}, 8, "spaces and control characters"),
    ("subject-with-tab", {"subject": '"cdc\\tusers"'}, 8, "spaces and control characters"),
    ("subject-with-control", {"subject": '"cdc\\x01users"'}, 8, "control characters"),
    ("subject-empty-token", {"subject": '"cdc..users"'}, 8, "empty token"),
    ("subject-inner-gt", {"subject": '"cdc.>.users"'}, 8, "must be the last token"),
    ("bind-port-99999", {"bind": '"127.0.0.1:99999"'}, 2, "port 99999"),
    ("bind-no-port", {"bind": '"127.0.0.1"'}, 2, "HOST:PORT"),
    ("bind-space-host", {"bind": '"my host:80"'}, 2, "no spaces"),
    ("stream-slash", {"stream": '"CDC/1"'}, 10, "'/'"),
    ("stream-too-long", {"stream": "S" * 256}, 10, "at most 255"),
    ("durable-space", {"durable": '"cdc users"'}, 11, "no spaces"),
    ("nats-port", {"nats_url": "nats://127.0.0.1:99999"}, 7, "port 99999"),
    ("nats-scheme", {"nats_url": "http://127.0.0.1:4222"}, 7, "nats://host:4222"),
    ("pg-port", {"pg_url": "postgresql://postgres@127.0.0.1:99999/test"}, 15, "port 99999"),
    ("pg-port-text", {"pg_url": "postgresql://postgres@db:fivefour/test"}, 15, "number"),
    ("pg-sslmode", {"pg_url": "postgresql://postgres@db/test?sslmode=on"}, 15, "sslmode 'on'"),
    ("empty-schema", {"schema": '""'}, 16, "an empty name"),
    ("empty-target-table", {"tables": '{users: ""}'}, 17, "an empty name"),
    ("long-target-table", {"tables": "{users: " + "t" * 64 + "}"}, 17, "at most 63 bytes"),
]


@pytest.mark.parametrize(("overrides", "line", "words"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])  # fmt: skip
def test_check_refuses_what_serve_would_refuse(
    tmp_path: Path, overrides: dict[str, str], line: int, words: str
) -> None:
    """Each of these made `serve` fail or restart forever while `check` said ok; now `check`
    exits 1 with one `file:line: message` naming the value's line and what to write."""
    path = tmp_path / "bad.yaml"
    path.write_text(config_text(**overrides))
    result = cdcsync("check", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [e for e in result.stderr.splitlines() if "warning:" not in e]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"{path}:{line}: when expecting "), errors[0]
    assert words in errors[0], errors[0]


def test_check_refuses_two_flows_on_one_durable_consumer(tmp_path: Path) -> None:
    """Two flows naming the same stream and durable took the consumer from each other at
    start: both showed `running` and one never received an event (measured: 0 of 3). `check`
    refuses the second flow's source, naming the first."""
    first = config_text()
    second = config_text(subject='"cdc.orders.>"').split("flows:\n", 1)[1]
    path = tmp_path / "shared.yaml"
    path.write_text(first + second.replace("name: users", "name: orders", 1))
    result = cdcsync("check", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [e for e in result.stderr.splitlines() if "warning:" not in e]
    assert errors == [
        f"{path}:19: flow 'orders' uses the durable consumer 'cdcsync-users' of stream 'CDC', "
        f"as flow 'users' does (line 5): give each flow its own durable (cdcsync deletes and "
        f"recreates it at start)"
    ]


def test_check_refuses_a_malformed_nkey_seed_unseen(tmp_path: Path) -> None:
    """A malformed `nkey_seed` made every connection fail (the flow restarted forever) while
    `check` said ok; now `check` refuses it at its line, without showing it."""
    path = tmp_path / "seed.yaml"
    path.write_text(
        config_text().replace(
            "      jetstream:\n", "      nkey_seed: SUSEKRETNOTASEED\n      jetstream:\n"
        )
    )
    result = cdcsync("check", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}:9: when expecting an nkey seed: no valid nkey seed")
    assert "SEKRET" not in result.stdout + result.stderr


def test_serve_refuses_an_api_port_out_of_range_without_a_traceback(tmp_path: Path) -> None:
    """`serve` with api.bind port 99999 stopped with a traceback (OverflowError); now it
    refuses the file like `check` does."""
    path = tmp_path / "bad.yaml"
    path.write_text(config_text(bind='"127.0.0.1:99999"'))
    result = cdcsync("serve", str(path), "--log-format", "json", timeout=30)
    assert result.returncode == 1
    assert f"{path}:2:" in result.stderr and "Traceback" not in result.stderr


def test_check_connect_refuses_a_missing_schema_and_a_foreign_api_address(
    tmp_path: Path, nats_url: str, pg_url: str, unique: str
) -> None:
    """A destination schema that does not exist and an api.bind host that is no address of
    this machine made `serve` fail at start; `check --connect` now names both, with the fix."""
    path = tmp_path / "connect.yaml"
    path.write_text(
        config_text(
            nats_url,
            pg_url,
            subject=f'"{unique}.>"',
            stream=unique.upper(),
            durable=unique,
            bind='"192.0.2.1:8080"',  # TEST-NET-1: never an address of this machine
            schema=f"{unique}_missing",
            tables="{}",
        )
    )
    result = cdcsync("check", "--connect", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [e for e in result.stderr.splitlines() if "warning:" not in e]
    schema = [e for e in errors if f"schema '{unique}_missing' does not exist" in e]
    assert schema and schema[0].startswith(f"{path}:13:"), errors
    assert f'CREATE SCHEMA "{unique}_missing"' in schema[0]
    api = [e for e in errors if "api.bind host '192.0.2.1'" in e]
    assert api and api[0].startswith(f"{path}:2:") and "cannot listen there" in api[0], errors


def deep_flow_style(depth: int) -> str:
    return "flows: " + "[" * depth + "]" * depth + "\n"


def deep_block_style(depth: int) -> str:
    return "flows:\n" + "".join(" " * i + "- \n" for i in range(1, depth)) + " " * depth + "x\n"


BAD_FILES = [
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", 1, "not UTF-8"),
    ("latin-1", "api:\n  token: caf\xe9\n".encode("latin-1"), 2, "not UTF-8"),
    ("control-character", b"api:\n  token: a\x01b\n", 2, "control character U+0001"),
    ("deep-flow-style", deep_flow_style(5000).encode(), 1, "nested too deeply"),
    ("deep-block-style", deep_block_style(1200).encode(), 1, "nested too deeply"),
    ("huge", b"# " + b"x" * (5 << 20) + b"\n", 0, "larger than 4 MiB"),
]


@pytest.mark.parametrize(("content", "line", "words"), [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])  # fmt: skip
def test_unreadable_configuration_files_are_one_message(
    tmp_path: Path, content: bytes, line: int, words: str
) -> None:
    """A binary or non-UTF-8 file, a control character and very deep nesting were tracebacks
    (strictyaml's own error path raised AttributeError); now one `file:line:` message, exit 1:
    a line from `check`, one JSON log line from `serve --log-format json`."""
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    checked = cdcsync("check", str(path))
    served = cdcsync("serve", str(path), "--log-format", "json", timeout=30)
    for result in (checked, served):
        assert result.returncode == 1, result.stderr[-2000:]
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
    [message] = checked.stderr.strip().splitlines()
    [logged] = [json.loads(line) for line in served.stderr.strip().splitlines()]
    assert logged["event"] == "invalid configuration" and logged["error"] == message
    assert message.startswith(f"{path}:{line}: ") and words in message, message


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["dlq", "list", "--limit", "-5"], "argument --limit: -5 is less than 1"),
        (["dlq", "list", "--limit", "0"], "argument --limit: 0 is less than 1"),
        (["dlq", "list", "--limit", "lots"], "'lots' is not a whole number"),
        (["dlq", "replay", "--id", "-1"], "argument --id: -1 is less than 1"),
        (["publish", "x.y", "hi", "--count", "-3"], "argument --count: -3 is less than 1"),
        (["publish", "x.y", "hi", "--rate", "-1"], "use 0 (as fast as possible) or more"),
        (["publish", "x.y", "hi", "--rate", "nan"], "use 0 (as fast as possible) or more"),
        (["tail", "x.y", "--count", "-1"], "argument --count: -1 is less than 0"),
        (["demo", "--port", "99999"], "argument --port: 99999: a port is 0 to 65535"),
        (["demo", "--events", "-1"], "argument --events: -1 is less than 0"),
    ],
)
def test_out_of_range_arguments_are_usage_errors(
    tmp_path: Path, args: list[str], words: str
) -> None:
    """`dlq list --limit -5` was a traceback from PostgreSQL (LIMIT must not be negative);
    such numbers are now refused before anything runs: exit 2 and the usage line."""
    result = cdcsync(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- passwords

SECRET = "S3cret"
PASSWORDS = {
    "slash": f"{SECRET}/Pr0be",
    "hash": f"{SECRET}#Pr0be",
    "question-mark": f"{SECRET}?Pr0be",
    "at": f"{SECRET}@Pr0be",
}


@pytest.mark.parametrize("password", list(PASSWORDS.values()), ids=list(PASSWORDS))
def test_a_password_that_needs_percent_encoding_is_refused_unseen(
    tmp_path: Path, password: str
) -> None:
    """A PostgreSQL or NATS URL whose password holds an unencoded '/', '#', '?' or '@' is
    refused by `check`, `check --connect` and `serve` with the fix (percent-encode), exit 1;
    `publish --server` refuses it too. None of their output contains any part of it."""
    pg = config_text(pg_url=f"postgresql://postgres:{password}@127.0.0.1:5432/test")
    nats = config_text(nats_url=f"nats://cdc:{password}@127.0.0.1:4222")
    outputs = {}
    for name, text, line in (("pg", pg, 15), ("nats", nats, 7)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        for command in (["check"], ["check", "--connect"], ["serve", "--log-format", "json"]):
            result = cdcsync(*command, str(path), timeout=30)
            label = f"{name}: {' '.join(command)}"
            outputs[label] = result.stdout + result.stderr
            assert result.returncode == 1, (label, outputs[label])
            assert f"{path}:{line}:" in result.stderr, (label, outputs[label])
            assert "percent-encode" in result.stderr and "%40" in result.stderr, label
    published = cdcsync("publish", "--server", f"nats://cdc:{password}@127.0.0.1:1", "x.y", "hi")
    outputs["publish"] = published.stdout + published.stderr
    assert published.returncode == 1 and "percent-encode" in published.stderr
    leaked = {label: text for label, text in outputs.items() if SECRET in text or "Pr0be" in text}
    assert not leaked, leaked


# --------------------------------------------------------------------------- where the config is


def test_validate_and_start_accept_dash_c(tmp_path: Path) -> None:
    """The original design's `validate -c FILE` and `start -c FILE` work (`start` is `serve`):
    exit 0 for a good file, exit 1 with `file:line` for a broken one."""
    good = tmp_path / "good.yaml"
    good.write_text(config_text())
    broken = tmp_path / "broken.yaml"
    broken.write_text(config_text(subject='""'))
    for command in ("validate", "check"):
        result = cdcsync(command, "-c", str(good))
        assert result.returncode == 0, result.stderr
        assert f"{good}: ok" in result.stdout
        result = cdcsync(command, "--config", str(broken))
        assert result.returncode == 1 and f"{broken}:8:" in result.stderr
    for command in ("start", "serve"):
        result = cdcsync(command, "-c", str(broken), "--log-format", "json")
        assert result.returncode == 1 and f"{broken}:8:" in result.stderr
    both = cdcsync("check", str(good), "-c", str(broken))
    assert both.returncode == 2 and "give one" in both.stderr


def test_without_a_path_the_configuration_is_looked_up(tmp_path: Path) -> None:
    """No PATH: $CDCSYNC_CONFIG, else config/default.yaml, else ./cdcsync.yaml; with none of
    them the error names every path tried and how to create one (exit 2)."""
    for command in ("start", "serve", "check", "validate"):
        result = cdcsync(command, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "$CDCSYNC_CONFIG is not set" in result.stderr
        assert str(tmp_path / "config" / "default.yaml") in result.stderr
        assert str(tmp_path / "cdcsync.yaml") in result.stderr
        assert "cdcsync generate-config config/default.yaml" in result.stderr
    result = cdcsync("dlq", "list", cwd=tmp_path)
    assert result.returncode == 2 and "config/default.yaml" in result.stderr

    (tmp_path / "cdcsync.yaml").write_text(config_text())
    assert "cdcsync.yaml: ok" in cdcsync("validate", cwd=tmp_path).stdout

    (tmp_path / "config").mkdir()
    generated = cdcsync("generate-config", "config/default.yaml", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    found = cdcsync("validate", cwd=tmp_path)
    assert found.returncode == 0 and "config/default.yaml: ok" in found.stdout

    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(config_text())
    env = {"CDCSYNC_CONFIG": str(elsewhere)}
    assert f"{elsewhere}: ok" in cdcsync("check", cwd=tmp_path, env=env).stdout
    missing = cdcsync("check", cwd=tmp_path, env={"CDCSYNC_CONFIG": "nope.yaml"})
    assert missing.returncode == 2
    assert "$CDCSYNC_CONFIG names nope.yaml, which does not exist" in missing.stderr


def test_generate_config_without_a_path_prints_the_example(tmp_path: Path) -> None:
    """`generate-config` alone prints a configuration that `check` accepts; it writes nothing."""
    result = cdcsync("generate-config", cwd=tmp_path)
    assert result.returncode == 0 and "flows:" in result.stdout
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "printed.yaml").write_text(result.stdout)
    assert cdcsync("check", "-c", "printed.yaml", cwd=tmp_path).returncode == 0
